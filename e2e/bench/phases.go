package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"time"
)

// echoGateway is a gateway in front of one echo upstream of its own, so the
// upstream's accepted connections are all the gateway's. For a stdio
// variant the upstream is the gateway's child process and up is nil.
type echoGateway struct {
	closed  bool
	variant variant
	up      *upstream
	proc    *gatewayProc
	dir     string
}

// startEchoGateway starts a gateway for v; self is the command of the stdio
// echo upstream (stdioCommand).
func startEchoGateway(ctx context.Context, hc *http.Client, bin string, v variant, self string) (*echoGateway, error) {
	g := &echoGateway{variant: v}
	var err error
	url := ""
	if !v.Stdio {
		if g.up, err = startUpstream("echo", []string{"echo"}); err != nil {
			return nil, err
		}
		url = g.up.url
	}
	if g.dir, err = os.MkdirTemp("", "credgate-bench-"); err != nil {
		return nil, errors.Join(err, g.Close())
	}
	cfg, err := writeEchoConfig(g.dir, v, url, self)
	if err != nil {
		return nil, errors.Join(err, g.Close())
	}
	if g.proc, err = startGateway(ctx, bin, cfg); err != nil {
		return nil, errors.Join(err, g.Close())
	}
	if _, err := g.proc.waitHealthy(ctx, hc, map[string]int{"echo": 1}); err != nil {
		return nil, errors.Join(err, g.Close())
	}
	return g, nil
}

// gatewayResult adds what only the gateway side has to a loadResult.
type gatewayResult struct {
	loadResult
	cpu time.Duration // gateway process CPU time during the measured calls
	// childCPU is the CPU time of the processes below the gateway during
	// them: for stdio, the upstream and the credgate-supervise helper it
	// runs under (minproxy runs it directly); 0 for HTTP.
	childCPU   time.Duration
	conns      int64   // upstream TCP connections accepted during them; 0 for stdio
	allocBytes float64 // bytes the gateway allocated during them (its /metrics)
}

func (g *echoGateway) measure(ctx context.Context, hc *http.Client, sc scenario) (gatewayResult, error) {
	var (
		res                 gatewayResult
		t0, t1              int64
		k0, k1              int64 // the descendants' ticks
		procs               int   // descendants at the end
		c0, c1              int64
		aw                  allocWindow
		alloc               float64
		errBefore, errAfter error
		errAlloc            error
	)
	// The readings nearest the window come last in before and first in
	// after; runLoad reads the driver's own CPU inside both.
	h := hooks{
		before: func() {
			aw.begin(ctx, hc, g.proc)
			c0 = g.accepted()
			var err1, err2 error
			k0, _, err1 = g.proc.childTicks()
			t0, err2 = g.proc.cpuTicks()
			errBefore = errors.Join(err1, err2)
		},
		after: func() {
			var err1, err2 error
			t1, err1 = g.proc.cpuTicks()
			k1, procs, err2 = g.proc.childTicks()
			errAfter = errors.Join(err1, err2)
			c1 = g.accepted()
			alloc, errAlloc = aw.end(ctx, hc, g.proc)
		},
	}
	lr, err := runLoad(ctx, hc, target{endpoint: g.proc.endpoint(), tool: "echo__echo"}, sc, h)
	if err := errors.Join(err, errBefore, errAfter, errAlloc); err != nil {
		return res, err
	}
	if g.variant.Stdio && procs == 0 {
		return res, fmt.Errorf("no process below the gateway (pid %d): where is its stdio upstream?", g.proc.cmd.Process.Pid)
	}
	res.loadResult = lr
	res.cpu = ticksDuration(t1 - t0)
	res.childCPU = ticksDuration(k1 - k0)
	res.conns = c1 - c0
	res.allocBytes = alloc
	return res, nil
}

// accepted is the HTTP upstream's accepted connections; 0 for stdio.
func (g *echoGateway) accepted() int64 {
	if g.up == nil {
		return 0
	}
	return g.up.accepted()
}

func (g *echoGateway) Close() error {
	if g.closed {
		return nil
	}
	g.closed = true
	var errs []error
	if g.proc != nil {
		errs = append(errs, g.proc.Close())
	}
	if g.up != nil {
		errs = append(errs, g.up.Close())
	}
	if g.dir != "" {
		errs = append(errs, os.RemoveAll(g.dir))
	}
	return errors.Join(errs...)
}

// runCatalogPhases measures startup, tools/list and RSS against many
// upstreams with many tools. Each phase records its own failure.
func runCatalogPhases(ctx context.Context, hc *http.Client, bin string, p plan, rep *report, logf func(string, ...any)) {
	if ctx.Err() != nil {
		rep.fail("catalog phases", ctx.Err())
		return
	}
	set, err := startUpstreams(p.catalogUpstreams, p.catalogTools)
	if err != nil {
		rep.fail("catalog upstreams", err)
		return
	}
	defer set.Close()
	dir, err := os.MkdirTemp("", "credgate-bench-")
	if err != nil {
		rep.fail("catalog phases", err)
		return
	}
	defer os.RemoveAll(dir)

	logf("startup with %d upstreams (%d runs) and tools/list (%d runs)", p.catalogUpstreams, p.startupRuns, p.listRuns)
	if err := measureStartupAndList(ctx, hc, bin, dir, set, p, rep); err != nil {
		rep.fail("startup / tools/list", err)
	}
	logf("RSS with %d upstreams", p.memoryUpstreams)
	if err := measureMemory(ctx, hc, bin, dir, set[:p.memoryUpstreams], p, rep); err != nil {
		rep.fail("RSS", err)
	}
}

// catalogGateway starts a gateway over set and waits until /health shows
// every upstream connected with all its tools.
func catalogGateway(ctx context.Context, hc *http.Client, bin, dir string, set upstreamSet) (*gatewayProc, time.Duration, error) {
	urls := map[string]string{}
	want := map[string]int{}
	for i, u := range set {
		urls[upstreamName(i)] = u.url
		want[upstreamName(i)] = len(u.tools)
	}
	cfg, err := writeConfig(dir, fmt.Sprintf("catalog-%d.yaml", len(set)), urls)
	if err != nil {
		return nil, 0, err
	}
	g, err := startGateway(ctx, bin, cfg)
	if err != nil {
		return nil, 0, err
	}
	took, err := g.waitHealthy(ctx, hc, want)
	if err != nil {
		return nil, 0, errors.Join(err, g.Close())
	}
	return g, took, nil
}

func measureStartupAndList(ctx context.Context, hc *http.Client, bin, dir string, set upstreamSet, p plan, rep *report) error {
	var (
		g     *gatewayProc
		times []time.Duration
	)
	for range p.startupRuns {
		if g != nil {
			_ = g.Close()
		}
		var took time.Duration
		var err error
		if g, took, err = catalogGateway(ctx, hc, bin, dir, set); err != nil {
			return err
		}
		times = append(times, took)
	}
	defer g.Close()
	rep.Startup = newStartupReport(len(set), p.catalogTools, times)

	want := len(set) * p.catalogTools
	gwRaw, err := listWalks(ctx, hc, g.endpoint(), p.listRuns, rawListAll)
	if err != nil {
		return fmt.Errorf("raw tools/list: %w", err)
	}
	gwSDK, err := listWalks(ctx, hc, g.endpoint(), p.listRuns, listAll)
	if err != nil {
		return fmt.Errorf("go-sdk tools/list: %w", err)
	}
	dRaw, dSDK, err := directListBaseline(ctx, hc, want, p.listRuns)
	if err != nil {
		return fmt.Errorf("direct tools/list baseline: %w", err)
	}
	rep.ToolsList = newToolsListReport(len(set), p.catalogTools, gwRaw, gwSDK, dRaw, dSDK)
	for _, c := range []struct {
		name  string
		walks []listResult
	}{{"raw gateway", gwRaw}, {"go-sdk gateway", gwSDK}, {"raw direct", dRaw}, {"go-sdk direct", dSDK}} {
		if got := c.walks[len(c.walks)-1].tools; got < want {
			return fmt.Errorf("%s tools/list returned %d tools, want at least %d", c.name, got, want)
		}
	}
	return nil
}

// listWalks makes runs timed walks through tools/list after two unmeasured
// ones that warm the server's and the client's code paths.
func listWalks(ctx context.Context, hc *http.Client, endpoint string, runs int,
	walk func(context.Context, *http.Client, string) (listResult, error),
) ([]listResult, error) {
	var walks []listResult
	for i := range runs + 2 {
		r, err := walk(ctx, hc, endpoint)
		if err != nil {
			return nil, err
		}
		if i >= 2 {
			walks = append(walks, r)
		}
	}
	return walks, nil
}

// directListBaseline is the same walks, raw and through the go-sdk client,
// against one in-process upstream holding all the tools: the floor the
// gateway's numbers are compared with.
func directListBaseline(ctx context.Context, hc *http.Client, tools, runs int) (raw, sdk []listResult, err error) {
	u, err := startUpstream("catalog", catalogTools(tools))
	if err != nil {
		return nil, nil, err
	}
	defer u.Close()
	if raw, err = listWalks(ctx, hc, u.url, runs, rawListAll); err != nil {
		return nil, nil, fmt.Errorf("raw: %w", err)
	}
	if sdk, err = listWalks(ctx, hc, u.url, runs, listAll); err != nil {
		return nil, nil, fmt.Errorf("go-sdk: %w", err)
	}
	return raw, sdk, nil
}

func measureMemory(ctx context.Context, hc *http.Client, bin, dir string, set upstreamSet, p plan, rep *report) error {
	g, _, err := catalogGateway(ctx, hc, bin, dir, set)
	if err != nil {
		return err
	}
	defer g.Close()
	if _, err := listAll(ctx, hc, g.endpoint()); err != nil {
		return err
	}
	cs, err := connect(ctx, hc, g.endpoint())
	if err != nil {
		return err
	}
	defer cs.Close()
	// Spread the warm-up over every upstream and many tools, so each
	// upstream connection and tool route has been used.
	w := newWorker(cs, func(i int) string {
		u := i % len(set)
		return upstreamName(u) + "__" + set[u].tools[(i/len(set))%len(set[u].tools)]
	}, 0)
	w.run(ctx, p.memoryWarmup)
	if w.panic != nil {
		return fmt.Errorf("warm-up worker panicked: %v", w.panic)
	}
	if n := w.errors.total(); n > 0 || len(w.latencies) < p.memoryWarmup {
		return fmt.Errorf("warm-up: %d of %d calls made, %d failed: %+v", len(w.latencies), p.memoryWarmup, n, w.errors)
	}
	rss, err := g.rssBytes()
	if err != nil {
		return err
	}
	rep.Memory = &memoryReport{Upstreams: len(set), WarmupCalls: p.memoryWarmup, RSSMiB: float64(rss) / (1 << 20)}
	return nil
}
