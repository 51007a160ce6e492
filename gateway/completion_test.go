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

// TestCompletionIsTheGateways: a completion answered by a 2026-07-28
// upstream reaches a 2025-11-25 agent as that protocol's result, without
// the upstream's server info or a resultType (found trying the gateway from
// outside: both passed through, the serverInfo naming the upstream, not the
// gateway the agent talks to), with its total and hasMore, and with a
// configured secret in a value redacted.
func TestCompletionIsTheGateways(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	const secret = "cmpl-secret-5e4d3c2b1a09f8e7"
	s := mcp.NewServer(&mcp.Implementation{Name: "upstream-impl", Version: "9"}, &mcp.ServerOptions{
		CompletionHandler: func(context.Context, *mcp.CompleteRequest) (*mcp.CompleteResult, error) {
			return &mcp.CompleteResult{
				Meta:       mcp.Meta{"vendor/hint": "kept"},
				Completion: mcp.CompletionResultDetails{Values: []string{"alpha", "key " + secret}, Total: 7, HasMore: true},
			}, nil
		},
	})
	s.AddPrompt(&mcp.Prompt{Name: "greet", Arguments: []*mcp.PromptArgument{{Name: "name"}}}, func(context.Context, *mcp.GetPromptRequest) (*mcp.GetPromptResult, error) {
		return &mcp.GetPromptResult{}, nil
	})
	up := httptest.NewServer(mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return s }, &mcp.StreamableHTTPOptions{Stateless: true}))
	t.Cleanup(up.Close)
	g := newTestGateway(t, ctx, "upstreams:\n  a: {url: "+up.URL+", headers: {X-Api-Key: "+secret+"}}\n")
	hs := httptest.NewServer(g.Handler())
	t.Cleanup(hs.Close)
	a := &rawAgent{t: t, g: g, url: hs.URL + "/mcp"}
	resp, b := a.post(ctx, `{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"raw","version":"1"}}}`)
	if a.session = resp.Header.Get("Mcp-Session-Id"); a.session == "" {
		t.Fatalf("initialize: %s", b)
	}
	a.post(ctx, `{"jsonrpc":"2.0","method":"notifications/initialized"}`)
	_, b = a.post(ctx, `{"jsonrpc":"2.0","id":2,"method":"completion/complete","params":{"ref":{"type":"ref/prompt","name":"a__greet"},"argument":{"name":"name","value":"a"}}}`)
	got := string(sseData(b))
	for _, bad := range []string{"resultType", "upstream-impl", "serverInfo", secret} {
		if strings.Contains(got, bad) {
			t.Errorf("completion answer holds %q: %s", bad, got)
		}
	}
	for _, want := range []string{`"alpha"`, `"total":7`, `"hasMore":true`, `"vendor/hint":"kept"`, "[REDACTED]"} {
		if !strings.Contains(got, want) {
			t.Errorf("completion answer lacks %s: %s", want, got)
		}
	}
}

// TestErrorsCarryACode: an error without a JSON-RPC code of its own (the
// SDK's answer to a second initialize on a session, say) reaches the agent
// as -32603 with its message; the SDK wrote code 0, which JSON-RPC does not
// define.
func TestErrorsCarryACode(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	g := newTestGateway(t, ctx, "upstreams:\n  a: {url: "+newTestUpstream(t, "a", "echo").url()+"}\n")
	hs := httptest.NewServer(g.Handler())
	t.Cleanup(hs.Close)
	a := &rawAgent{t: t, g: g, url: hs.URL + "/mcp"}
	const initialize = `{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"raw","version":"1"}}}`
	resp, b := a.post(ctx, initialize)
	if a.session = resp.Header.Get("Mcp-Session-Id"); a.session == "" {
		t.Fatalf("initialize: %s", b)
	}
	a.post(ctx, `{"jsonrpc":"2.0","method":"notifications/initialized"}`)
	_, b = a.post(ctx, strings.Replace(initialize, `"id":1`, `"id":2`, 1))
	got := string(sseData(b))
	if !strings.Contains(got, `"code":-32603`) || !strings.Contains(got, "initialize") {
		t.Errorf("a second initialize was answered %s; want an error with code -32603 and the SDK's message", got)
	}
}
