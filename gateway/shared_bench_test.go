package gateway

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/credgate/credgate/internal/redistest"
)

// BenchmarkCallStateRedis compares calls per second through a gateway
// sharing its state in Redis (issue 11) with one keeping it in memory, in
// one run: rounds of 8 agent sessions x 25 calls alternate between the two,
// so both see the same machine. It reports each side's calls/s and the
// ratio redis/memory (the target is >= 0.9: nothing on the call path waits
// on Redis).
//
//	go test -run '^$' -bench CallStateRedis -benchtime 20x ./gateway/
func BenchmarkCallStateRedis(b *testing.B) {
	srv := redistest.Start(b)
	ctxMem, mem := benchGatewayConfig(b, credBenchConfig)
	ctxRed, red := benchGatewayConfig(b, func(url string) string {
		return stateYAML(srv, redistest.Prefix(b), true) + credBenchConfig(url)
	})
	sessions := func(ctx context.Context, g *Server) []*mcp.ClientSession {
		var out []*mcp.ClientSession
		for range 8 {
			out = append(out, agent(b, ctx, g, nil))
		}
		return out
	}
	memS, redS := sessions(ctxMem, mem), sessions(ctxRed, red)
	round := func(ctx context.Context, ss []*mcp.ClientSession) time.Duration {
		start := time.Now()
		var wg sync.WaitGroup
		for _, cs := range ss {
			wg.Go(func() {
				for range 25 {
					if _, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "a__echo", Arguments: map[string]any{"text": "hello"}}); err != nil {
						b.Error(err)
						return
					}
				}
			})
		}
		wg.Wait()
		return time.Since(start)
	}
	round(ctxMem, memS) // warm both up
	round(ctxRed, redS)
	var dMem, dRed time.Duration
	n := 0
	for b.Loop() {
		if n%2 == 0 {
			dMem += round(ctxMem, memS)
			dRed += round(ctxRed, redS)
		} else {
			dRed += round(ctxRed, redS)
			dMem += round(ctxMem, memS)
		}
		n++
	}
	calls := float64(n * 8 * 25)
	memRate, redRate := calls/dMem.Seconds(), calls/dRed.Seconds()
	b.ReportMetric(memRate, "memory_calls/s")
	b.ReportMetric(redRate, "redis_calls/s")
	b.ReportMetric(redRate/memRate, "redis/memory")
	if h := red.Health().State; h.Backend != "redis" || h.Status != "ok" {
		b.Errorf("the Redis side's state: %+v", h)
	}
}
