package gateway

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// echoUpstreamMode makes the test binary a stdio MCP server (go-sdk) whose
// echo tool answers as newTestUpstream's does, for the stdio benchmarks.
const echoUpstreamMode = "echo"

func echoStdioUpstream() {
	srv := mcp.NewServer(&mcp.Implementation{Name: "a", Version: "1"}, nil)
	srv.AddTool(&mcp.Tool{Name: "echo", Description: "a echo", InputSchema: json.RawMessage(`{"type":"object","properties":{"text":{"type":"string"}}}`)},
		func(ctx context.Context, req *mcp.CallToolRequest) (*mcp.CallToolResult, error) {
			var args struct{ Text string }
			_ = json.Unmarshal(req.Params.Arguments, &args)
			return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: "a:echo:" + args.Text}}}, nil
		})
	_ = srv.Run(context.Background(), &mcp.StdioTransport{})
}

// benchStdioGateway runs a gateway whose upstream a is the test binary as a
// stdio echo server (under the supervisor, as in production).
func benchStdioGateway(b *testing.B) (context.Context, *Server) {
	b.Helper()
	self, err := os.Executable()
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(b.Context(), 5*time.Minute)
	b.Cleanup(cancel)
	g := benchServer(b, fmt.Sprintf("upstreams:\n  a: {command: %q, env: {%s: %s}}\n", self, rawUpstreamEnv, echoUpstreamMode))
	g.Start(ctx)
	b.Cleanup(func() { _ = g.Close() })
	_ = g.WaitTried(ctx)
	if h := g.Health().Upstreams["a"]; h.Status != StatusUp {
		b.Fatalf("upstream a is %s: %s", h.Status, h.LastError)
	}
	return ctx, g
}

// reportProcessCPU reports, when the benchmark ends, the CPU time the whole
// test process (agent, gateway and, for HTTP, the upstream; never a stdio
// child) spent per operation as "proc-cpu-ns/op".
func reportProcessCPU(b *testing.B) {
	start := processCPU()
	b.Cleanup(func() {
		if b.N > 0 {
			b.ReportMetric(float64(processCPU()-start)/float64(b.N), "proc-cpu-ns/op")
		}
	})
}

func processCPU() time.Duration {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkCallStdio is BenchmarkCall with a stdio upstream: the agent and
// the gateway in-process over real HTTP, the upstream a child process.
// Compare with BenchmarkCall and BenchmarkCallDirect; proc-cpu-ns/op leaves
// the child out.
func BenchmarkCallStdio(b *testing.B) {
	ctx, g := benchStdioGateway(b)
	cs := agent(b, ctx, g, nil)
	reportProcessCPU(b)
	benchEcho(b, ctx, cs)
}

// BenchmarkCallStdioParallel is BenchmarkCallStdio with 8 agent sessions.
func BenchmarkCallStdioParallel(b *testing.B) {
	ctx, g := benchStdioGateway(b)
	sessions := make(chan *mcp.ClientSession, 8)
	for range 8 {
		sessions <- agent(b, ctx, g, nil)
	}
	reportProcessCPU(b)
	b.ReportAllocs()
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

// BenchmarkCallStdioUpstream measures the gateway's half alone: one
// tools/call on the stdio upstream's session, as callToolOn makes it,
// without the agent or the gateway's front.
func BenchmarkCallStdioUpstream(b *testing.B) {
	ctx, g := benchStdioGateway(b)
	u := g.upstream("a")
	cs := u.session.Load()
	reportProcessCPU(b)
	args := map[string]any{"text": "hello"}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "echo", Arguments: args}); err != nil {
			b.Fatal(err)
		}
	}
}
