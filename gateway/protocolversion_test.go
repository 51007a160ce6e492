package gateway

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// TestUpstreamProtocolVersion: upstreams.<name>.protocol_version is the
// version the gateway asks the upstream for (the newest without it); an
// unknown one is refused, naming the key and the versions there are.
func TestUpstreamProtocolVersion(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	s := mcp.NewServer(&mcp.Implementation{Name: "up", Version: "1"}, nil)
	s.AddTool(&mcp.Tool{Name: "echo", InputSchema: map[string]any{"type": "object"}}, func(context.Context, *mcp.CallToolRequest) (*mcp.CallToolResult, error) {
		return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: "ok"}}}, nil
	})
	hs := httptest.NewServer(mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return s }, &mcp.StreamableHTTPOptions{Stateless: true}))
	t.Cleanup(hs.Close)
	g, cs := startGateway(t, ctx, "upstreams:\n  old: {url: "+hs.URL+", protocol_version: 2025-11-25}\n  new: {url: "+hs.URL+"}\n")
	for name, want := range map[string]string{"old": "2025-11-25", "new": "2026-07-28"} {
		if got := g.upstream(name).session.Load().InitializeResult().ProtocolVersion; got != want {
			t.Errorf("upstream %s negotiated %s; want %s", name, got, want)
		}
		res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: name + "__echo", Arguments: map[string]any{}})
		if err != nil || res.IsError || text(res) != "ok" {
			t.Errorf("%s__echo = %+v, %v", name, res, err)
		}
	}
	_, err := ParseConfig([]byte("upstreams:\n  a: {url: http://x/mcp, protocol_version: 2024-01-01}\n"), nil)
	if err == nil || !strings.Contains(err.Error(), "upstreams.a.protocol_version") || !strings.Contains(err.Error(), "2025-11-25") {
		t.Errorf("an unknown protocol_version: %v; want an error naming the key and the versions", err)
	}
	// A date unquoted is the text written; a time of day still asks for quotes.
	_, err = ParseConfig([]byte("upstreams:\n  a: {url: http://x/mcp, provider: 2025-11-25T10:00:00Z}\n"), nil)
	if err == nil || !strings.Contains(err.Error(), "quote it") {
		t.Errorf("a timestamp for a string key: %v; want it refused, asking for quotes", err)
	}
}
