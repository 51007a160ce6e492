package gateway

import (
	"context"
	"fmt"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// rootsUpstream is a go-sdk upstream whose tool "roots" returns the roots
// its client declares, asked with ListRoots from inside the call. Each
// notifications/roots/list_changed it receives is sent on changed.
func rootsUpstream(t *testing.T, changed chan<- struct{}) string {
	t.Helper()
	s := mcp.NewServer(&mcp.Implementation{Name: "roots", Version: "1"}, &mcp.ServerOptions{
		RootsListChangedHandler: func(context.Context, *mcp.RootsListChangedRequest) {
			select {
			case changed <- struct{}{}:
			default:
			}
		},
	})
	s.AddTool(&mcp.Tool{Name: "roots", InputSchema: map[string]any{"type": "object"}}, func(ctx context.Context, req *mcp.CallToolRequest) (*mcp.CallToolResult, error) {
		res, err := req.Session.ListRoots(ctx, nil)
		if err != nil {
			return &mcp.CallToolResult{IsError: true, Content: []mcp.Content{&mcp.TextContent{Text: "roots/list failed: " + err.Error()}}}, nil
		}
		var uris []string
		for _, r := range res.Roots {
			uris = append(uris, r.URI)
		}
		return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: strings.Join(uris, " ")}}}, nil
	})
	return serveMCP(t, s)
}

// TestPerAgentRoots is the regression test for issue 6 item 19 (roots): with
// session: per_agent, an upstream that asks for roots during a call gets the
// calling agent's own roots, and the agent's roots/list_changed reaches it;
// a shared session declares no roots, so no agent's roots leak to it.
func TestPerAgentRoots(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	changed := make(chan struct{}, 1)
	g, _ := startGateway(t, ctx, fmt.Sprintf(`
upstreams:
  mine: {url: %s, session: per_agent}
  shared: {url: %s}
`, rootsUpstream(t, changed), rootsUpstream(t, make(chan struct{}, 1))))

	call := func(cs *mcp.ClientSession, tool string) *mcp.CallToolResult {
		t.Helper()
		res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: tool})
		if err != nil {
			t.Fatalf("call %s: %v", tool, err)
		}
		return res
	}
	// The SDK client declares roots with listChanged by default.
	adaClient := mcp.NewClient(&mcp.Implementation{Name: "ada", Version: "1"}, nil)
	adaClient.AddRoots(&mcp.Root{URI: "file:///work/ada"})
	hs := httptest.NewServer(g.Handler())
	t.Cleanup(hs.Close)
	ada, err := adaClient.Connect(ctx, &mcp.StreamableClientTransport{Endpoint: hs.URL + "/mcp"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ada.Close() })
	bobClient := mcp.NewClient(&mcp.Implementation{Name: "bob", Version: "1"}, nil)
	bobClient.AddRoots(&mcp.Root{URI: "file:///work/bob"})
	bob, err := bobClient.Connect(ctx, &mcp.StreamableClientTransport{Endpoint: hs.URL + "/mcp"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = bob.Close() })

	if got := text(call(ada, "mine__roots")); got != "file:///work/ada" {
		t.Errorf("ada's per-agent upstream saw roots %q, want file:///work/ada", got)
	}
	if got := text(call(bob, "mine__roots")); got != "file:///work/bob" {
		t.Errorf("bob's per-agent upstream saw roots %q, want file:///work/bob", got)
	}

	adaClient.AddRoots(&mcp.Root{URI: "file:///work/ada2"})
	select {
	case <-changed:
	case <-ctx.Done():
		t.Fatal("the agent's roots/list_changed never reached its upstream session")
	}
	if got := text(call(ada, "mine__roots")); got != "file:///work/ada file:///work/ada2" {
		t.Errorf("after the change ada's upstream saw roots %q, want both of ada's", got)
	}

	// The shared session has no roots to give: nobody's leak.
	if got := text(call(ada, "shared__roots")); strings.Contains(got, "file://") {
		t.Errorf("a shared upstream saw roots %q, want none", got)
	}
	// An agent without roots gets a per-agent session without them.
	plain := agent(t, ctx, g, &mcp.ClientOptions{Capabilities: &mcp.ClientCapabilities{}})
	if got := text(call(plain, "mine__roots")); strings.Contains(got, "file://") {
		t.Errorf("an agent without roots gave its upstream roots %q", got)
	}
}
