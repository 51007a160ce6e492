package gateway

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// benchAuthConfig has 10 API keys (the benchmarks use the last, so every
// key is compared), 10 policies of which 2 apply to the agent, and 22 tool
// globs in those 2, so that the cost measured is that of a realistic setup.
func benchAuthConfig(url string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "upstreams:\n  a: {url: %s}\nauth:\n  keys:\n", url)
	for i := range 10 {
		fmt.Fprintf(&b, "    - {name: agent-%d, key: bench-key-%02d-0123456789abcdef, rate: 1000000/s}\n", i, i)
	}
	b.WriteString("policies:\n")
	for i := range 10 {
		fmt.Fprintf(&b, "  - agents: [agent-%d, \"team-%d-*\"]\n    tools:\n      allow: [", i%5+5, i)
		for j := range 10 {
			fmt.Fprintf(&b, "\"x%d_tool_%d*\", ", i, j)
		}
		b.WriteString("\"a__echo\"]\n      deny: [\"*delete*\"]\n")
	}
	return b.String()
}

const benchKey = "bench-key-09-0123456789abcdef"

// BenchmarkAgentAuthPolicy measures what authentication and policy add to
// one call (issue 9; target < 20 µs): the key compared with every key, the
// agent's state looked up, the tool checked against its grants, a token
// taken from its bucket.
func BenchmarkAgentAuthPolicy(b *testing.B) {
	g := benchServer(b, benchAuthConfig("http://127.0.0.1:1/mcp"))
	defer g.Close()
	r := httptest.NewRequest(http.MethodPost, "/mcp", nil)
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		info, err := g.agentAuth.verifiers.Verify(ctx, benchKey, r)
		if err != nil {
			b.Fatal(err)
		}
		st := g.policy.Load().state(info)
		if !st.tool("a__echo") || st.tool("a__delete_all") {
			b.Fatal("policy")
		}
		if _, ok := st.admit(time.Now()); !ok {
			b.Fatal("rate")
		}
	}
}

// BenchmarkAgentFront measures the HTTP front of /mcp (Host check, Origin
// check, authentication, the SDK's TokenInfo middleware) in front of a
// handler that does nothing.
func BenchmarkAgentFront(b *testing.B) {
	g := benchServer(b, benchAuthConfig("http://127.0.0.1:1/mcp"))
	defer g.Close()
	h := g.guardHosts(newHostGuard(g.config()), g.checkOrigin(g.requireAgent(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))))
	r := httptest.NewRequest(http.MethodPost, "/mcp", nil)
	r.Host = "localhost:8080"
	r.Header.Set("Authorization", "Bearer "+benchKey)
	w := httptest.NewRecorder()
	b.ReportAllocs()
	for b.Loop() {
		h.ServeHTTP(w, r)
		if w.Code != http.StatusOK {
			b.Fatal(w.Code)
		}
	}
}

// BenchmarkCallAuth is BenchmarkCall with agent authentication and the
// policies of benchAuthConfig: the difference is the whole added cost per
// call, measured end to end.
func BenchmarkCallAuth(b *testing.B) {
	ctx, g := benchGatewayConfig(b, benchAuthConfig)
	hs := httptest.NewServer(g.Handler())
	b.Cleanup(hs.Close)
	hc := &http.Client{Transport: bearer{key: benchKey, base: http.DefaultTransport}}
	cs, err := mcp.NewClient(&mcp.Implementation{Name: "agent", Version: "1"}, nil).Connect(ctx, &mcp.StreamableClientTransport{Endpoint: hs.URL + "/mcp", HTTPClient: hc}, nil)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = cs.Close() })
	benchEcho(b, ctx, cs)
}
