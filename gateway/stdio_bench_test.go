package gateway

import (
	"context"
	"fmt"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
)

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
// child) spent per operation as "proc-cpu-ns/op", and its threads' context
// switches (a thread sleeping, as when no goroutine is left to run) as
// "ctxsw/op": on a machine shared with other work, the second is the steadier
// figure for the goroutine hand-offs of a call.
func reportProcessCPU(b *testing.B) {
	start := processUsage()
	b.Cleanup(func() {
		if b.N > 0 {
			end := processUsage()
			b.ReportMetric(float64(end.cpu-start.cpu)/float64(b.N), "proc-cpu-ns/op")
			b.ReportMetric(float64(end.switches-start.switches)/float64(b.N), "ctxsw/op")
		}
	})
}

type usage struct {
	cpu      time.Duration
	switches int64
}

func processUsage() usage {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return usage{}
	}
	return usage{time.Duration(ru.Utime.Nano() + ru.Stime.Nano()), ru.Nvcsw + ru.Nivcsw}
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
	sessions := benchSessions(b, ctx, g)
	reportProcessCPU(b)
	b.ReportAllocs()
	benchEchoParallel(b, ctx, sessions)
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

// BenchmarkCallStdioLog is BenchmarkCallStdio for a tool that sends a log
// message before it answers: the call waits for the message to be relayed
// to the agent before its result (noteCounter.drain).
func BenchmarkCallStdioLog(b *testing.B) {
	ctx, g := benchStdioGateway(b)
	logs := make(chan struct{}, 1)
	cs := agent(b, ctx, g, &mcp.ClientOptions{LoggingMessageHandler: func(context.Context, *mcp.LoggingMessageRequest) {
		select {
		case logs <- struct{}{}:
		default:
		}
	}})
	if err := cs.SetLoggingLevel(ctx, &mcp.SetLoggingLevelParams{Level: "debug"}); err != nil {
		b.Fatal(err)
	}
	reportProcessCPU(b)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "a__log"}); err != nil {
			b.Fatal(err)
		}
	}
	select {
	case <-logs:
	default:
		b.Fatal("no log message reached the agent")
	}
}

// BenchmarkCallStdioFast is BenchmarkCallStdio with the agent pinned to
// 2025-11-25, as issue 12 measures: the fast path serves it end to end.
func BenchmarkCallStdioFast(b *testing.B) {
	ctx, g := benchStdioGateway(b)
	cs := agentVersion(b, ctx, g, nil, "2025-11-25")
	reportProcessCPU(b)
	benchEcho(b, ctx, cs)
}
