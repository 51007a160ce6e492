package gateway

import (
	"context"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// benchGateway runs a gateway in front of one in-process echo upstream, over
// real HTTP, for the call benchmarks.
func benchGateway(b *testing.B) (context.Context, *Server) {
	return benchGatewayWith(b, "")
}

// benchGatewayWith is benchGateway with extra YAML keys for upstream a (in
// flow style, each ending with ", ").
func benchGatewayWith(b *testing.B, extra string) (context.Context, *Server) {
	b.Helper()
	return benchGatewayConfig(b, func(url string) string {
		return fmt.Sprintf("upstreams:\n  a: {%surl: %s}\n", extra, url)
	})
}

// benchGatewayConfig runs a gateway for the YAML config returns for the URL
// of one in-process echo upstream, over real HTTP.
func benchGatewayConfig(b *testing.B, config func(url string) string) (context.Context, *Server) {
	b.Helper()
	ctx, cancel := context.WithTimeout(b.Context(), 5*time.Minute)
	b.Cleanup(cancel)
	up := newTestUpstream(b, "a", "echo")
	g := benchServer(b, config(up.url()))
	g.Start(ctx)
	b.Cleanup(func() { _ = g.Close() })
	_ = g.WaitTried(ctx)
	return ctx, g
}

// benchServer builds, without starting it, a gateway for yaml.
func benchServer(b *testing.B, yaml string) *Server {
	b.Helper()
	cfg, err := ParseConfig([]byte(yaml), nil)
	if err != nil {
		b.Fatal(err)
	}
	g, err := New(cfg, nil)
	if err != nil {
		b.Fatal(err)
	}
	return g
}

// benchEcho calls a__echo through cs in a benchmark loop.
func benchEcho(b *testing.B, ctx context.Context, cs *mcp.ClientSession) {
	b.Helper()
	args := map[string]any{"text": "hello"}
	reportProcessCPU(b)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "a__echo", Arguments: args}); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkCall measures one tools/call through the gateway, upstream and
// agent in-process over real HTTP. Compare with BenchmarkCallDirect.
func BenchmarkCall(b *testing.B) {
	ctx, g := benchGateway(b)
	cs := agent(b, ctx, g, nil)
	benchEcho(b, ctx, cs)
}

// BenchmarkCallSecrets is BenchmarkCall with secrets configured, so that
// every successful result is checked for them (issue 6 item 13).
func BenchmarkCallSecrets(b *testing.B) {
	ctx, g := benchGatewayWith(b, `headers: {Authorization: "Bearer ghp_0123456789abcdefSECRET0123", X-Api-Key: "k3y-0123456789"}, `)
	cs := agent(b, ctx, g, nil)
	benchEcho(b, ctx, cs)
}

// BenchmarkCallParallel is BenchmarkCall with 8 agent sessions at once.
func BenchmarkCallParallel(b *testing.B) {
	ctx, g := benchGateway(b)
	benchEchoParallel(b, ctx, benchSessions(b, ctx, g))
}

// benchSessions connects 8 agent sessions to g.
func benchSessions(b *testing.B, ctx context.Context, g *Server) chan *mcp.ClientSession {
	sessions := make(chan *mcp.ClientSession, 8)
	for range 8 {
		sessions <- agent(b, ctx, g, nil)
	}
	return sessions
}

// benchEchoParallel calls a__echo from the 8 sessions at once.
func benchEchoParallel(b *testing.B, ctx context.Context, sessions chan *mcp.ClientSession) {
	b.SetParallelism(4) // 4 x GOMAXPROCS(2) = 8 goroutines
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		cs := <-sessions
		args := map[string]any{"text": "hello"}
		for pb.Next() {
			if _, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "a__echo", Arguments: args}); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

func BenchmarkCallDirect(b *testing.B) {
	ctx, cancel := context.WithTimeout(b.Context(), 5*time.Minute)
	defer cancel()
	up := newTestUpstream(b, "a", "echo")
	cs, err := mcp.NewClient(&mcp.Implementation{Name: "agent", Version: "1"}, nil).Connect(ctx, &mcp.StreamableClientTransport{Endpoint: up.url()}, nil)
	if err != nil {
		b.Fatal(err)
	}
	defer cs.Close()
	args := map[string]any{"text": "hello"}
	reportProcessCPU(b)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "echo", Arguments: args}); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkRedactResult measures what redacting a successful result adds to
// a call (issue 6 item 13): the substring searches for the configured
// secrets in a typical small result, which holds none of them, and the
// encoding that checks the whole result (redactEverywhere). A result the
// fast path passes through skips both.
func BenchmarkRedactResult(b *testing.B) {
	g := benchServer(b, `
upstreams:
  a: {url: "http://127.0.0.1:1/mcp", headers: {Authorization: "Bearer ghp_0123456789abcdefSECRET0123", X-Api-Key: "k3y-0123456789"}}
`)
	res := &mcp.CallToolResult{
		Content:           []mcp.Content{&mcp.TextContent{Text: "a:echo:hello, a result of ordinary length with nothing secret in it"}},
		StructuredContent: map[string]any{"n": 1.0, "items": []any{"one", "two", map[string]any{"k": "v"}}},
	}
	b.ReportAllocs()
	for b.Loop() {
		g.redactResult(res)
		g.redactEverywhere(res)
	}
}

// credBenchConfig is a gateway in front of upstream a whose calls carry a
// credential (issue 7).
func credBenchConfig(url string) string {
	return fmt.Sprintf("credentials:\n  tok: {source: {value: bench-token-0123456789abcdef}}\nupstreams:\n  a: {credential: tok, url: %s}\n", url)
}

// BenchmarkCallCredential is BenchmarkCall with the call's credential
// resolved by name and injected by the transport (issue 7): compare with
// BenchmarkCallSecrets, which sends a static header.
func BenchmarkCallCredential(b *testing.B) {
	ctx, g := benchGatewayConfig(b, credBenchConfig)
	cs := agent(b, ctx, g, nil)
	benchEcho(b, ctx, cs)
}

// BenchmarkCredentialInject measures the per-request part alone: the
// credential looked up by name, its header set, the value sent recorded.
func BenchmarkCredentialInject(b *testing.B) {
	g := benchServer(b, credBenchConfig("http://127.0.0.1:1/mcp"))
	if err := g.LoadCredentials(b.Context()); err != nil {
		b.Fatal(err)
	}
	u := g.upstream("a")
	req, _ := http.NewRequestWithContext(withCallCred(b.Context(), &callCred{name: "tok"}), http.MethodPost, "http://127.0.0.1:1/mcp", nil)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := u.injectCredential(req, false); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkBreakerAdmit measures what the breakers add to a call (issue 8):
// asking the upstream's and the credential's breaker before it, and telling
// both its outcome after. Compare with BenchmarkCall's time per call.
func BenchmarkBreakerAdmit(b *testing.B) {
	g := benchServer(b, `
credentials:
  tok: {source: {value: live-token-0123456789}}
upstreams:
  a: {url: "http://127.0.0.1:1/mcp", credential: tok}
`)
	u := g.upstream("a")
	b.ReportAllocs()
	for b.Loop() {
		cb, refused := g.admit(u, "tok")
		if refused != nil {
			b.Fatal(refused)
		}
		cb.report(breakerOutcomes(nil, nil))
	}
}
