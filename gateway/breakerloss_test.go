package gateway

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/credgate/credgate/authmap"
)

// crashUpstreamMode makes the test binary a raw 2025-11-25 stdio upstream
// (crashUpstream) that exits on demand.
const crashUpstreamMode = "crash"

// crashUpstream answers initialize and tools/list, and tools/call of ok with
// "ok"; it never answers hold, and exits with code 1 on exit1.
func crashUpstream() {
	serveRaw(func(out *bufio.Writer, req childRequest, err error) {
		if err != nil {
			return
		}
		switch req.Method {
		case "initialize":
			replyResult(out, req.ID, `{"protocolVersion":"2025-11-25","capabilities":{"tools":{}},"serverInfo":{"name":"crash","version":"1"}}`)
		case "tools/list":
			replyResult(out, req.ID, `{"tools":[{"name":"ok","inputSchema":{"type":"object"}},{"name":"hold","inputSchema":{"type":"object"}},{"name":"exit1","inputSchema":{"type":"object"}}]}`)
		case "tools/call":
			var p struct{ Name string }
			_ = json.Unmarshal(req.Params, &p)
			switch p.Name {
			case "hold": // never answered
			case "exit1":
				_ = out.Flush()
				os.Exit(1)
			default:
				replyResult(out, req.ID, `{"content":[{"type":"text","text":"ok"}]}`)
			}
		case "ping":
			replyResult(out, req.ID, `{}`)
		default:
			replyNoMethod(out, req)
		}
	})
}

// Regression test (found trying the gateway from outside): one lost session
// is one failure for the upstream's breaker, however many calls it ended. A
// stdio child that exited with four other calls in flight counted five
// consecutive failures and opened the breaker for open_timeout, though the
// child was back at once; every call was then refused while /health showed
// the upstream up and the gateway ok. On both paths (stdioCallTool and the
// SDK's); the loss of the restarted child's session counts again.
func TestBreakerCountsOneLossOnce(t *testing.T) {
	t.Parallel()
	for _, fast := range []bool{true, false} {
		t.Run(fmt.Sprintf("fast_path %v", fast), func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
			defer cancel()
			// failures: 2, so that even two counts of one loss open it.
			up := selfUpstream(t, crashUpstreamMode)
			g, cs := startGateway(t, ctx, fmt.Sprintf("fast_path: %v\nupstreams:\n  a: %s, timeout: 30s, health_interval: 1h, breaker: {failures: 2, open_timeout: 1h}}\n",
				fast, up[:len(up)-1]))
			u := g.upstream("a")
			first := u.session.Load()
			if first == nil {
				t.Fatalf("upstream a is down: %+v", g.Health().Upstreams["a"])
			}
			callOK(t, ctx, cs, "a__ok")

			const inFlight = 4
			results := make(chan *mcp.CallToolResult, inFlight)
			var wg sync.WaitGroup
			defer wg.Wait()
			for range inFlight {
				wg.Go(func() {
					res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "a__hold", Arguments: map[string]any{}})
					if err != nil {
						t.Errorf("call a__hold: %v", err)
					}
					results <- res
				})
			}
			waitFor(t, ctx, func() bool { return u.busy.Load() == inFlight })
			before := breakerCounts(g, "a")
			if f := failureOf(t, callTool(t, ctx, cs, "a__exit1")); f.Type != authmap.TypeUpstreamUnavailable {
				t.Errorf("exit1: failure %+v, want upstream_unavailable", f)
			}
			for range inFlight {
				if res := recv(t, ctx, results, "a call in flight to end"); res != nil {
					if f := failureOf(t, res); f.Type != authmap.TypeUpstreamUnavailable {
						t.Errorf("a call in flight: failure %+v, want upstream_unavailable", f)
					}
				}
			}
			// The reconnect's success may be counted meanwhile: only
			// failures and exclusions tell how the calls counted.
			type counted struct{ Failures, Exclusions uint32 }
			after := breakerCounts(g, "a")
			want := counted{Failures: 1, Exclusions: inFlight}
			got := counted{Failures: after.Failures - before.Failures, Exclusions: after.Exclusions - before.Exclusions}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("breaker counts of the calls one child exit ended: mismatch (-want +got):\n%s", diff)
			}
			if b := breakerState(g, "a", ""); b.State != "closed" {
				t.Errorf("breaker %+v after one child exit, want closed", b)
			}
			waitFor(t, ctx, func() bool { s := u.session.Load(); return s != nil && s != first })
			callOK(t, ctx, cs, "a__ok") // not refused by the breaker
			if s := g.Health().Status; s != HealthOK {
				t.Errorf("health status %q once the child is back, want ok", s)
			}

			// The restarted child's exit is another loss.
			failures := breakerCounts(g, "a").Failures
			failureOf(t, callTool(t, ctx, cs, "a__exit1"))
			if n := breakerCounts(g, "a").Failures - failures; n != 1 {
				t.Errorf("the restarted child's exit counted %d failures, want 1", n)
			}
		})
	}
}
