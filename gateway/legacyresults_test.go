package gateway

import (
	"context"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// TestOlderAgentsGetNoCacheHints: an agent of a protocol older than
// 2026-07-28 gets list and read results without ttlMs and cacheScope,
// which its protocol does not have (the SDK wrote them for every agent);
// the results are otherwise the same.
func TestOlderAgentsGetNoCacheHints(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	s := subsServer("demo://x", nil)
	s.AddTool(&mcp.Tool{Name: "echo", InputSchema: map[string]any{"type": "object"}}, func(context.Context, *mcp.CallToolRequest) (*mcp.CallToolResult, error) {
		return &mcp.CallToolResult{}, nil
	})
	g := newTestGateway(t, ctx, "upstreams:\n  a: {url: "+serveMCP(t, s)+"}\n")
	hs := httptest.NewServer(g.Handler())
	t.Cleanup(hs.Close)
	for _, version := range []string{"2025-03-26", "2025-06-18", "2025-11-25"} {
		a := &rawAgent{t: t, g: g, url: hs.URL + "/mcp"}
		resp, b := a.post(ctx, `{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"`+version+`","capabilities":{},"clientInfo":{"name":"raw","version":"1"}}}`)
		if a.session = resp.Header.Get("Mcp-Session-Id"); a.session == "" || !strings.Contains(string(b), version) {
			t.Fatalf("initialize %s: %s", version, b)
		}
		a.post(ctx, `{"jsonrpc":"2.0","method":"notifications/initialized"}`)
		for _, req := range []string{
			`{"jsonrpc":"2.0","id":2,"method":"tools/list"}`,
			`{"jsonrpc":"2.0","id":3,"method":"resources/list"}`,
			`{"jsonrpc":"2.0","id":4,"method":"resources/read","params":{"uri":"demo://x"}}`,
			`{"jsonrpc":"2.0","id":5,"method":"prompts/list"}`,
		} {
			_, b := a.post(ctx, req)
			got := string(sseData(b))
			if strings.Contains(got, "ttlMs") || strings.Contains(got, "cacheScope") || !strings.Contains(got, `"result"`) {
				t.Errorf("%s agent, %s: %s; want a result without ttlMs and cacheScope", version, req, got)
			}
		}
	}
	// A 2026-07-28 agent keeps them (a stateless gateway negotiates it).
	g2 := newTestGateway(t, ctx, "stateless: true\nupstreams:\n  a: {url: "+serveMCP(t, s)+"}\n")
	hs2 := httptest.NewServer(g2.Handler())
	t.Cleanup(hs2.Close)
	cs, err := mcp.NewClient(&mcp.Implementation{Name: "agent", Version: "1"}, nil).Connect(ctx, &mcp.StreamableClientTransport{Endpoint: hs2.URL + "/mcp"}, &mcp.ClientSessionOptions{ProtocolVersion: "2026-07-28"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cs.Close() })
	res, err := cs.ListTools(ctx, nil)
	if v := cs.InitializeResult().ProtocolVersion; v != "2026-07-28" {
		t.Fatalf("negotiated %s, want 2026-07-28", v)
	}
	if err != nil || len(res.Tools) != 1 || res.CacheScope == "" {
		t.Errorf("2026-07-28 agent: tools/list = %+v, %v; want the tool and its cache scope", res, err)
	}
}
