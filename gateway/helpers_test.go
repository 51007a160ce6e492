package gateway

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"

	"sort"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
	"github.com/rs/zerolog"
)

func errorsAs(err error, target any) bool { return err != nil && errors.As(err, target) }

// waitFor polls cond until it holds or ctx ends; it is for state another
// goroutine changes with no signal to wait on.
func waitFor(t *testing.T, ctx context.Context, cond func() bool) {
	t.Helper()
	for !cond() {
		select {
		case <-ctx.Done():
			t.Fatal("condition never held")
		case <-time.After(time.Millisecond):
		}
	}
}

// recv waits for a value on ch, failing the test if ctx ends first: a
// goroutine that failed before sending (t.Fatal ends only it) would
// otherwise leave the test waiting.
func recv[T any](t *testing.T, ctx context.Context, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-ctx.Done():
		t.Fatalf("gave up waiting for %s: %v", what, ctx.Err())
		panic("unreachable")
	}
}

// newTestGateway starts a gateway for yaml, without an agent, and waits for
// its first connection attempts. Its warnings go to the test log.
func newTestGateway(t *testing.T, ctx context.Context, yaml string) *Server {
	t.Helper()
	return newTestGatewayLogged(t, ctx, yaml, zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.WarnLevel))
}

// newTestGatewayLogged is newTestGateway logging to log.
func newTestGatewayLogged(t *testing.T, ctx context.Context, yaml string, log zerolog.Logger) *Server {
	t.Helper()
	cfg, err := ParseConfig([]byte(yaml), nil)
	if err != nil {
		t.Fatalf("ParseConfig: %v", err)
	}
	// Short reconnect delays, so tests of a restarting upstream run fast.
	g, err := New(cfg, &Options{Logger: &log, ReconnectMin: 10 * time.Millisecond, ReconnectMax: 50 * time.Millisecond})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	g.Start(ctx)
	t.Cleanup(func() { _ = g.Close() })
	if err := g.WaitTried(ctx); err != nil {
		t.Fatalf("WaitTried: %v", err)
	}
	return g
}

// startGateway runs a gateway for yaml and returns a connected agent session.
func startGateway(t *testing.T, ctx context.Context, yaml string) (*Server, *mcp.ClientSession) {
	t.Helper()
	g := newTestGateway(t, ctx, yaml)
	return g, agent(t, ctx, g, nil)
}

// startGatewayLogged is startGateway with the gateway's warnings kept in log.
func startGatewayLogged(t *testing.T, ctx context.Context, yaml string, log io.Writer) (*Server, *mcp.ClientSession) {
	t.Helper()
	g := newTestGatewayLogged(t, ctx, yaml, zerolog.New(log).Level(zerolog.WarnLevel))
	return g, agent(t, ctx, g, nil)
}

// serveMCP serves s over streamable HTTP until the test ends and returns its
// endpoint.
func serveMCP(t testing.TB, s *mcp.Server) string {
	t.Helper()
	hs := httptest.NewServer(mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return s }, nil))
	t.Cleanup(hs.Close)
	return hs.URL + "/mcp"
}

func sortedCopy(s []string) []string {
	out := append([]string(nil), s...)
	sort.Strings(out)
	return out
}

// TestDrainForgetsDroppedNotifications: a notification counted as read but
// never handled holds up one call at most, not every later one.
func TestDrainForgetsDroppedNotifications(t *testing.T) {
	t.Parallel()
	var n noteCounter
	n.read.Add(3)
	n.handled.Add(2) // one was dropped before any handler
	n.drain(t.Context())
	if r, h := n.read.Load(), n.handled.Load(); r != h {
		t.Fatalf("after drain read=%d handled=%d, want them level", r, h)
	}
	// The next call does not wait.
	n.drain(t.Context())
}

// TestDrainKeepsSlowNotifications: a drain that gives up on handlers that
// are behind but moving (a flood) forgets nothing, so the next call's drain
// still waits for its own notifications; and one forgotten that comes after
// all never lets handled pass read. Forgetting the slow ones lost a call's
// last progress in a loaded CI run (TestFloodBudgetIsTheCalls).
func TestDrainKeepsSlowNotifications(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		var n noteCounter
		const flood = 400 // handled every 5 ms: 2 s, past drainMax
		n.read.Add(flood)
		done := make(chan struct{})
		go func() {
			defer close(done)
			for range flood {
				time.Sleep(5 * time.Millisecond)
				n.handle()
			}
		}()
		n.drain(t.Context())
		if r := n.read.Load(); r != flood {
			t.Fatalf("read = %d after a drain past drainMax; want %d (nothing forgotten)", r, flood)
		}
		<-done
		nextDrainWaits(t, &n)

		// Forgotten (the handlers stalled), then handled after all.
		n.read.Add(3)
		n.drain(t.Context())
		for range 3 {
			n.handle()
		}
		if r, h := n.read.Load(), n.handled.Load(); h > r {
			t.Fatalf("handled = %d > read = %d after late notifications", h, r)
		}
	})
}

// TestDrainForgetsOnce: two drains that give up on the same missing
// notification forget it once, so the next call's barrier still waits
// for its own (found in review: each lowered read).
func TestDrainForgetsOnce(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		var n noteCounter
		n.read.Add(1) // dropped before any handler
		var both sync.WaitGroup
		for range 2 {
			both.Go(func() { n.drain(t.Context()) })
		}
		both.Wait()
		nextDrainWaits(t, &n)
	})
}

// nextDrainWaits checks, inside a synctest bubble, that a drain after one
// more notification is read waits until it is handled.
func nextDrainWaits(t *testing.T, n *noteCounter) {
	t.Helper()
	n.read.Add(1) // the next call's notification, not handled yet
	returned := make(chan struct{})
	go func() { n.drain(t.Context()); close(returned) }()
	time.Sleep(drainStall / 2)
	synctest.Wait()
	select {
	case <-returned:
		t.Fatal("the next drain returned before its notification was handled")
	default:
	}
	n.handle()
	<-returned
}
