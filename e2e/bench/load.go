package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	"github.com/modelcontextprotocol/go-sdk/mcp"
)

const (
	// callTimeout bounds one tools/call; a hung gateway costs seconds, not the run.
	callTimeout = 10 * time.Second
	// maxConsecutiveFailures stops a session whose transport is plainly gone,
	// so a dead endpoint does not turn into calls x callTimeout.
	maxConsecutiveFailures = 20
	// maxPages bounds the tools/list cursor walk against a server that never
	// stops returning cursors.
	maxPages = 1000
)

// loadProtocolVersion is the protocol version of the load clients.
const loadProtocolVersion = "2025-11-25"

// scenario is one load shape: sessions run concurrently, each making calls.
type scenario struct {
	name     string
	sessions int
	calls    int // per session
	warmup   int // per session, not measured
}

// callErrors counts failed calls by kind, kept apart as on the wire.
type callErrors struct {
	Tool      int `json:"tool"`      // result with isError
	RPC       int `json:"rpc"`       // JSON-RPC error response
	Transport int `json:"transport"` // HTTP/connection failure, timeout, rejected by transport
	Mismatch  int `json:"mismatch"`  // success, but the echo came back wrong
}

// outcome is how one call ended.
type outcome int

const (
	ok outcome = iota
	toolError
	rpcError
	transportError
	mismatch
)

func (e *callErrors) record(o outcome) {
	switch o {
	case toolError:
		e.Tool++
	case rpcError:
		e.RPC++
	case transportError:
		e.Transport++
	case mismatch:
		e.Mismatch++
	}
}

func (e callErrors) total() int { return e.Tool + e.RPC + e.Transport + e.Mismatch }

func (e *callErrors) add(o callErrors) {
	e.Tool += o.Tool
	e.RPC += o.RPC
	e.Transport += o.Transport
	e.Mismatch += o.Mismatch
}

// loadResult is what one side of one scenario measured.
type loadResult struct {
	calls     int
	elapsed   time.Duration
	latencies stats
	errors    callErrors
	// driverCPU is this process's CPU time over the measured calls: the
	// load clients, and whatever else runs in it (the direct upstream, an
	// HTTP variant's echo upstream, reading the gateway's log).
	driverCPU time.Duration
}

func (r loadResult) throughput() float64 {
	if r.elapsed <= 0 {
		return 0
	}
	return float64(r.calls) / r.elapsed.Seconds()
}

// target is an MCP endpoint and the tool to call on it.
type target struct {
	endpoint string
	tool     string
}

func (t target) toolFunc() func(int) string { return func(int) string { return t.tool } }

// hooks run around the measured window: after every session has connected and
// warmed up, and after the last measured call. The gateway side samples CPU
// time and upstream connections in them.
type hooks struct {
	before, after func()
}

// runLoad connects sc.sessions clients, warms them up, then measures
// sc.calls calls per session, all sessions released at once.
func runLoad(ctx context.Context, hc *http.Client, tg target, sc scenario, h hooks) (loadResult, error) {
	sessions := make([]*mcp.ClientSession, 0, sc.sessions)
	defer func() {
		for _, cs := range sessions {
			_ = cs.Close()
		}
	}()
	for i := range sc.sessions {
		cs, err := connect(ctx, hc, tg.endpoint)
		if err != nil {
			return loadResult{}, fmt.Errorf("%s: session %d: %w", sc.name, i, err)
		}
		sessions = append(sessions, cs)
	}
	// Warm up all sessions at once, as they will be measured: a gateway
	// that grows its upstream connection pool with concurrency does so
	// here, not in the measured window.
	warm := make([]*worker, len(sessions))
	var wwg sync.WaitGroup
	for i, cs := range sessions {
		warm[i] = newWorker(cs, tg.toolFunc(), i)
		wwg.Go(func() { warm[i].run(ctx, sc.warmup) })
	}
	wwg.Wait()
	for i, w := range warm {
		if w.panic != nil {
			return loadResult{}, fmt.Errorf("%s: session %d: warm-up worker panicked: %v", sc.name, i, w.panic)
		}
		if n := w.errors.total(); n > 0 {
			return loadResult{}, fmt.Errorf("%s: session %d: %d of %d warm-up calls failed (%+v)", sc.name, i, n, sc.warmup, w.errors)
		}
	}

	workers := make([]*worker, len(sessions))
	for i, cs := range sessions {
		workers[i] = newWorker(cs, tg.toolFunc(), i)
	}
	if h.before != nil {
		h.before()
	}
	// The driver's own CPU, read inside the hooks so their work (scrapes,
	// /proc scans) is not in it.
	d0, err0 := selfTicks()
	start := make(chan struct{})
	var wg sync.WaitGroup
	for _, w := range workers {
		wg.Go(func() {
			<-start
			w.run(ctx, sc.calls)
		})
	}
	t0 := time.Now()
	close(start)
	wg.Wait()
	elapsed := time.Since(t0)
	d1, err1 := selfTicks()
	if h.after != nil {
		h.after()
	}
	if err := errors.Join(err0, err1); err != nil {
		return loadResult{}, fmt.Errorf("%s: driver CPU: %w", sc.name, err)
	}

	res := loadResult{elapsed: elapsed, driverCPU: ticksDuration(d1 - d0)}
	var all []time.Duration
	for _, w := range workers {
		res.calls += len(w.latencies)
		all = append(all, w.latencies...)
		res.errors.add(w.errors)
		if w.panic != nil {
			return res, fmt.Errorf("%s: worker panicked: %v", sc.name, w.panic)
		}
	}
	res.latencies = newStats(all)
	if err := ctx.Err(); err != nil {
		return res, fmt.Errorf("%s: %w", sc.name, err)
	}
	return res, nil
}

// worker drives one session sequentially, as one agent would.
type worker struct {
	cs        *mcp.ClientSession
	tool      func(call int) string // which tool the i-th call uses
	id        int
	latencies []time.Duration
	errors    callErrors
	panic     any
}

func newWorker(cs *mcp.ClientSession, tool func(int) string, id int) *worker {
	return &worker{cs: cs, tool: tool, id: id}
}

func (w *worker) run(ctx context.Context, calls int) {
	// The per-call deadline cancels the whole worker, not a per-call context:
	// cancelling a call's context after it returns would abort the SDK's
	// drain of the response stream and throw away the keep-alive connection,
	// which would then count as connection churn.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	defer func() {
		// A panic in a worker must not take down the process before the
		// gateway child is killed; runLoad reports it as an error.
		if r := recover(); r != nil {
			w.panic = r
		}
	}()
	w.latencies = make([]time.Duration, 0, calls)
	failures := 0
	for i := 0; i < calls && ctx.Err() == nil; i++ {
		text := fmt.Sprintf("s%d-c%d", w.id, i)
		t0 := time.Now()
		watchdog := time.AfterFunc(callTimeout, cancel)
		o := w.call(ctx, w.tool(i), text)
		watchdog.Stop()
		w.latencies = append(w.latencies, time.Since(t0))
		if o == ok {
			failures = 0
			continue
		}
		w.errors.record(o)
		if failures++; failures >= maxConsecutiveFailures {
			return
		}
	}
}

// call makes one tools/call and classifies how it ended. The caller bounds
// its duration (see run).
func (w *worker) call(ctx context.Context, tool, text string) outcome {
	res, err := w.cs.CallTool(ctx, &mcp.CallToolParams{
		Name:      tool,
		Arguments: map[string]any{"text": text},
	})
	return classify(res, err, text)
}

// rejectedByTransport is the SDK's code for HTTP-level failures (status 5xx,
// 429, connection errors); it arrives as a *jsonrpc.Error but is not a reply
// from the server.
const rejectedByTransport = -32005

func classify(res *mcp.CallToolResult, err error, want string) outcome {
	if err != nil {
		var we *jsonrpc.Error
		if errors.As(err, &we) && we.Code != rejectedByTransport {
			return rpcError
		}
		return transportError
	}
	if res.IsError {
		return toolError
	}
	if len(res.Content) != 1 {
		return mismatch
	}
	if tc, isText := res.Content[0].(*mcp.TextContent); !isText || tc.Text != want {
		return mismatch
	}
	return ok
}

func connect(ctx context.Context, hc *http.Client, endpoint string) (*mcp.ClientSession, error) {
	c := mcp.NewClient(&mcp.Implementation{Name: "credgate-bench", Version: "bench"}, nil)
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	// Pinned to 2025-11-25, as the issue 12 figures were measured: the
	// SDK's default (2026-07-28) would be negotiated by a stateless server.
	cs, err := c.Connect(ctx, &mcp.StreamableClientTransport{Endpoint: endpoint, HTTPClient: hc}, &mcp.ClientSessionOptions{ProtocolVersion: loadProtocolVersion})
	if err != nil {
		return nil, fmt.Errorf("connect %s: %w", endpoint, err)
	}
	return cs, nil
}

// listResult is one walk through every page of tools/list.
type listResult struct {
	elapsed   time.Duration
	pages     int
	tools     int
	firstPage int // tools on the first page: the server's page size
}

// listAll pages through tools/list on a fresh session, timing only the walk.
// A fresh session per walk keeps the SDK's per-session list cache (SEP-2549)
// from answering instead of the server.
func listAll(ctx context.Context, hc *http.Client, endpoint string) (listResult, error) {
	cs, err := connect(ctx, hc, endpoint)
	if err != nil {
		return listResult{}, err
	}
	defer cs.Close()
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()

	var r listResult
	cursor := ""
	t0 := time.Now()
	for r.pages < maxPages {
		page, err := cs.ListTools(ctx, &mcp.ListToolsParams{Cursor: cursor})
		if err != nil {
			return r, fmt.Errorf("tools/list page %d: %w", r.pages+1, err)
		}
		if r.pages == 0 {
			r.firstPage = len(page.Tools)
		}
		r.pages++
		r.tools += len(page.Tools)
		if cursor = page.NextCursor; cursor == "" {
			r.elapsed = time.Since(t0)
			return r, nil
		}
	}
	return r, fmt.Errorf("tools/list: still paging after %d pages", maxPages)
}

// newHTTPClient returns a client for loopback load: enough idle connections
// per host that concurrent sessions reuse them instead of churning, and no
// proxy from the environment.
func newHTTPClient() *http.Client {
	return &http.Client{Transport: &http.Transport{
		Proxy:               nil,
		MaxIdleConns:        256,
		MaxIdleConnsPerHost: 256,
		IdleConnTimeout:     90 * time.Second,
	}}
}
