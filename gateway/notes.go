package gateway

import (
	"context"
	"runtime"
	"sync/atomic"
	"time"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// noteCounter orders a call's notifications before its result. The SDK hands
// a response to the caller as soon as it is read, but queues the
// notifications read before it (progress, log messages) for a handler
// goroutine; without a barrier, a call's last progress or log messages would
// reach the gateway after its result, when the agent's request stream is
// gone. The transport counts call notifications as they are read, a client
// middleware counts them as they are handled, and drain waits for the second
// to catch up with the first. With no notification in flight it returns at
// once.
type noteCounter struct {
	read, handled atomic.Int64
}

// isCallNote reports whether method is a notification that belongs to calls.
func isCallNote(method string) bool {
	return method == "notifications/progress" || method == "notifications/message"
}

// Bounds of drain. A counted notification the SDK drops before any handler
// sees it (a malformed one, one for a closing session) would otherwise hold
// every later call up: drain stops waiting once the handlers have made no
// progress for drainStall, and forgets the missing ones. drainMax bounds a
// wait in which handlers keep making progress (a flood the agent reads
// slowly), and forgets nothing: the next drain waits for the rest. Both are
// wide enough for a loaded machine, where the handlers' goroutine can wait
// 10 ms and more for a processor: 10 and 200 ms lost a call's last log
// messages to a busy CI run, and a drainStall of 50 ms a call's last
// progress (TestFloodBudgetIsTheCalls, once in a CI run of the whole
// suite). A stall costs a wait of drainStall once, for a notification
// that never arrives.
const (
	drainMax   = time.Second
	drainStall = 250 * time.Millisecond
)

// drain waits until every call notification read so far has been handled.
func (n *noteCounter) drain(ctx context.Context) {
	target := n.read.Load()
	h := n.handled.Load()
	if h >= target {
		return
	}
	start := time.Now()
	last, lastChange := h, start
	for i := 0; ctx.Err() == nil; i++ {
		if i < 100 {
			runtime.Gosched()
		} else {
			time.Sleep(50 * time.Microsecond)
		}
		if h = n.handled.Load(); h >= target {
			return
		}
		now := time.Now()
		if h != last {
			last, lastChange = h, now
		}
		if now.Sub(lastChange) > drainStall {
			n.forget(target)
			return
		}
		if now.Sub(start) > drainMax {
			// The handlers are behind, not stuck (a flood): what is
			// read will be handled, and the next drain waits for it.
			// Forgetting it here left the counters behind for good (a
			// call's last progress lost under a loaded CI run).
			return
		}
	}
}

// forget takes every notification read up to target as handled: what
// never arrived. It raises handled, never lowers read, so that two drains
// forgetting the same ones (concurrent calls) forget them once (found in
// review: each lowered read, and later barriers returned at once).
func (n *noteCounter) forget(target int64) {
	for {
		h := n.handled.Load()
		if h >= target || n.handled.CompareAndSwap(h, target) {
			return
		}
	}
}

// handle counts a call notification handled. One drain forgot (see
// drainStall) and that comes after all is not counted: handled never passes
// read, which would let later drains return before their notifications.
func (n *noteCounter) handle() {
	for {
		h := n.handled.Load()
		if h >= n.read.Load() || n.handled.CompareAndSwap(h, h+1) {
			return
		}
	}
}

// countHandled is a receiving middleware of the upstream client.
func (n *noteCounter) countHandled(next mcp.MethodHandler) mcp.MethodHandler {
	return func(ctx context.Context, method string, req mcp.Request) (mcp.Result, error) {
		res, err := next(ctx, method, req)
		if isCallNote(method) {
			n.handle()
		}
		return res, err
	}
}

// countingTransport counts call notifications as the connection reads them.
type countingTransport struct {
	mcp.Transport
	n *noteCounter
}

func (t countingTransport) Connect(ctx context.Context) (mcp.Connection, error) {
	c, err := t.Transport.Connect(ctx)
	if err != nil {
		return nil, err
	}
	return &countingConn{Connection: c, n: t.n}, nil
}

type countingConn struct {
	mcp.Connection
	n *noteCounter
}

func (c *countingConn) Read(ctx context.Context) (jsonrpc.Message, error) {
	m, err := c.Connection.Read(ctx)
	if r, ok := m.(*jsonrpc.Request); ok && !r.ID.IsValid() && isCallNote(r.Method) {
		c.n.read.Add(1)
	}
	return m, err
}
