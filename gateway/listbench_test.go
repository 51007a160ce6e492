package gateway

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// BenchmarkToolsListOlderAgent measures tools/list over 50 upstreams of
// 100 tools for a 2025-11-25 agent, whose result goes out without the
// 2026-07-28 cache hints (legacyResults).
func BenchmarkToolsListOlderAgent(b *testing.B) {
	ctx, cancel := context.WithTimeout(b.Context(), 5*time.Minute)
	defer cancel()
	var cfg strings.Builder
	cfg.WriteString("upstreams:\n")
	for i := range 50 {
		s := mcp.NewServer(&mcp.Implementation{Name: "up", Version: "1"}, nil)
		for j := range 100 {
			s.AddTool(&mcp.Tool{Name: fmt.Sprintf("tool_%d", j), Description: "A tool that does a thing with its arguments, described at some length.",
				InputSchema: map[string]any{"type": "object", "properties": map[string]any{"text": map[string]any{"type": "string"}}}},
				func(context.Context, *mcp.CallToolRequest) (*mcp.CallToolResult, error) {
					return &mcp.CallToolResult{}, nil
				})
		}
		fmt.Fprintf(&cfg, "  u%d: {url: %s}\n", i, serveMCP(b, s))
	}
	g := benchServer(b, cfg.String())
	g.Start(ctx)
	b.Cleanup(func() { _ = g.Close() })
	if err := g.WaitTried(ctx); err != nil {
		b.Fatal(err)
	}
	cs := agentVersion(b, ctx, g, nil, "2025-11-25")
	count := func() int {
		n := 0
		for _, err := range cs.Tools(ctx, nil) {
			if err != nil {
				b.Fatal(err)
			}
			n++
		}
		return n
	}
	for count() != 5000 {
		select {
		case <-ctx.Done():
			b.Fatal("the catalog never held 5,000 tools")
		case <-time.After(10 * time.Millisecond):
		}
	}
	b.ReportAllocs()
	for b.Loop() {
		if n := count(); n != 5000 {
			b.Fatalf("tools/list: %d tools", n)
		}
	}
}
