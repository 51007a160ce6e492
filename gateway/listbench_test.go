package gateway

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// BenchmarkToolsList walks the whole tools/list union of 10 upstreams x 500
// tools with plain HTTP requests, as make bench's tools/list phase does
// (issue 12: under 20 ms for 5,000 tools).
func BenchmarkToolsList(b *testing.B) {
	ctx, cancel := context.WithTimeout(b.Context(), 5*time.Minute)
	defer cancel()
	var cfg strings.Builder
	cfg.WriteString("upstreams:\n")
	for i := range 10 {
		s := mcp.NewServer(&mcp.Implementation{Name: "u", Version: "1"}, nil)
		for j := range 500 {
			s.AddTool(&mcp.Tool{Name: fmt.Sprintf("t%03d", j), Description: "Echoes the text argument back unchanged.",
				InputSchema: map[string]any{"type": "object", "properties": map[string]any{"text": map[string]any{"type": "string"}}, "required": []string{"text"}}},
				func(context.Context, *mcp.CallToolRequest) (*mcp.CallToolResult, error) {
					return &mcp.CallToolResult{}, nil
				})
		}
		fmt.Fprintf(&cfg, "  u%02d: {url: %s}\n", i, serveMCP(b, s))
	}
	g := benchServer(b, cfg.String())
	g.Start(ctx)
	b.Cleanup(func() { _ = g.Close() })
	if err := g.WaitTried(ctx); err != nil {
		b.Fatal(err)
	}
	hs := httptest.NewServer(g.Handler())
	defer hs.Close()
	hc := hs.Client()
	post := func(sid, body string) (string, []byte) {
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, hs.URL+"/mcp", strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Accept", "application/json, text/event-stream")
		if sid != "" {
			req.Header.Set("Mcp-Session-Id", sid)
			req.Header.Set("Mcp-Protocol-Version", "2025-11-25")
		}
		resp, err := hc.Do(req)
		if err != nil {
			b.Fatal(err)
		}
		defer resp.Body.Close()
		data, _ := io.ReadAll(resp.Body)
		return resp.Header.Get("Mcp-Session-Id"), data
	}
	sid, _ := post("", `{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"b","version":"1"}}}`)
	post(sid, `{"jsonrpc":"2.0","method":"notifications/initialized"}`)
	walk := func() int {
		tools, cursor := 0, ""
		for page := 0; ; page++ {
			params := `{}`
			if cursor != "" {
				params = `{"cursor":"` + cursor + `"}`
			}
			_, body := post(sid, `{"jsonrpc":"2.0","id":2,"method":"tools/list","params":`+params+`}`)
			tools += bytes.Count(body, []byte(`"name":"u`))
			i := bytes.LastIndex(body, []byte(`"nextCursor":"`))
			if i < 0 {
				return tools
			}
			rest := body[i+len(`"nextCursor":"`):]
			cursor = string(rest[:bytes.IndexByte(rest, '"')])
		}
	}
	if n := walk(); n != 5000 {
		b.Fatalf("walk listed %d tools, want 5000", n)
	}
	b.ReportAllocs()
	hits := g.lists.hits.Load()
	for b.Loop() {
		walk()
	}
	b.ReportMetric(float64(g.lists.hits.Load()-hits)/float64(b.N), "cached-pages/op")
}
