package gateway

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
)

func readyz(t *testing.T, g *Server) (int, string) {
	t.Helper()
	rec := httptest.NewRecorder()
	g.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/readyz", nil))
	body, _ := io.ReadAll(rec.Body)
	return rec.Code, strings.TrimSpace(string(body))
}

// Regression test for issue 8 (health for orchestrators): /readyz is 200
// while at least one upstream can serve, and 503 once none can (here the
// only upstream's breaker opened on a 5xx), without naming upstreams.
func TestReadyzWhileAnUpstreamCanServe(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	g, cs, up := faultGateway(t, ctx, ", breaker: {failures: 1, open_timeout: 1h}")
	g.serving.Store(true) // what Serve sets once every upstream was tried
	if code, body := readyz(t, g); code != http.StatusOK || body != "ready" {
		t.Fatalf("/readyz = %d %q with the upstream up, want 200 ready", code, body)
	}
	up.fault.Store(&httpFailure{status: http.StatusBadGateway, body: "bad gateway"})
	_, _ = cs.CallTool(ctx, &mcp.CallToolParams{Name: "api__echo", Arguments: map[string]any{"text": "x"}})
	waitFor(t, ctx, func() bool { return breakerState(g, "api", "").State == "open" })
	if code, body := readyz(t, g); code != http.StatusServiceUnavailable || body != "no upstream can serve" {
		t.Fatalf("/readyz = %d %q with the only upstream's breaker open, want 503 no upstream can serve", code, body)
	}
}

// Regression test for issue 8 (health for orchestrators): an agent reads
// the /health document as the MCP resource credgate://health, and one
// subscribed to it is told when it changes.
func TestHealthResource(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	g, _, up := faultGateway(t, ctx, ", breaker: {failures: 1, open_timeout: 1h}")
	updated := make(chan string, 10)
	cs := agent(t, ctx, g, &mcp.ClientOptions{ResourceUpdatedHandler: func(_ context.Context, r *mcp.ResourceUpdatedNotificationRequest) {
		updated <- r.Params.URI
	}})

	res, err := cs.ListResources(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	if containsURI(res.Resources, HealthURI) {
		t.Fatalf("resources/list shows %s: it is read by its URI, not listed", HealthURI)
	}
	got := readHealth(t, ctx, cs)
	want := g.Health()
	if got.Status != want.Status || len(got.Upstreams) != 1 || got.Upstreams["api"].Status != want.Upstreams["api"].Status ||
		got.Upstreams["api"].Breaker.State != "closed" || got.Upstreams["api"].Tools != want.Upstreams["api"].Tools {
		t.Fatalf("health resource = %+v, want the /health document %+v", got, want)
	}

	if err := cs.Subscribe(ctx, &mcp.SubscribeParams{URI: HealthURI}); err != nil {
		t.Fatalf("subscribe: %v", err)
	}
	up.fault.Store(&httpFailure{status: http.StatusBadGateway, body: "bad gateway"})
	_, _ = cs.CallTool(ctx, &mcp.CallToolParams{Name: "api__echo", Arguments: map[string]any{"text": "x"}})
	select {
	case uri := <-updated:
		if uri != HealthURI {
			t.Fatalf("resources/updated for %q, want %q", uri, HealthURI)
		}
	case <-ctx.Done():
		t.Fatal("no resources/updated after the breaker opened")
	}
	if h := readHealth(t, ctx, cs); h.Upstreams["api"].Breaker.State != "open" {
		t.Fatalf("health resource breaker = %+v after the failure, want open", h.Upstreams["api"].Breaker)
	}
}

func containsURI(rs []*mcp.Resource, uri string) bool {
	for _, r := range rs {
		if r.URI == uri {
			return true
		}
	}
	return false
}

func readHealth(t *testing.T, ctx context.Context, cs *mcp.ClientSession) Health {
	t.Helper()
	rr, err := cs.ReadResource(ctx, &mcp.ReadResourceParams{URI: HealthURI})
	if err != nil {
		t.Fatalf("read %s: %v", HealthURI, err)
	}
	if len(rr.Contents) != 1 || rr.Contents[0].MIMEType != "application/json" {
		t.Fatalf("read %s: contents %+v", HealthURI, rr.Contents)
	}
	var h Health
	if err := json.Unmarshal([]byte(rr.Contents[0].Text), &h); err != nil {
		t.Fatalf("health resource is not the health document: %v", err)
	}
	return h
}
