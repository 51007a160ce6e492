// Command bench is the load driver behind `make bench`. It calls the same
// in-process upstream directly and through a real gateway process in one run,
// and reports both sides, their ratios, and the gateway's targets.
//
//	                 ┌──────────── this process ────────────┐
//	load clients ──► │ direct upstream   (echo)             │
//	load clients ──► gateway process ──► gateway upstream (echo, counts TCP accepts)
//	                 │ 50 catalog upstreams (100 tools each)│
//	                 └──────────────────────────────────────┘
//
// Phases: the call scenarios (1 session, then N concurrent sessions; direct
// and gateway interleaved), gateway startup with 50 upstreams, tools/list
// across 50x100 tools (timed twice: raw HTTP, which the target uses, and
// the go-sdk client), gateway RSS with 10 upstreams, and the bounds (the
// gateway's peak RSS over one 200 MB upstream result; RSS and goroutines
// around 10,000 abandoned sessions and after their idle timeout). All traffic stays
// on 127.0.0.1. It is a report, not a test: a missed target still exits 0;
// only a failure to measure (or failed calls) exits non-zero.
//
// Usage:
//
//	go run ./e2e/bench [--quick] [--calls N] [--sessions N] [--gateway PATH] [--json]
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"maps"
	"os"
	"os/signal"
	"slices"
	"syscall"
	"time"
)

type options struct {
	calls      int           // calls in the one-session scenario; concurrent sessions make half each
	sessions   int           // concurrent sessions in the second scenario
	quick      bool          // smaller counts for a smoke run
	json       bool          // machine-readable output
	gateway    string        // prebuilt gateway binary; if empty, build ./cmd/gateway
	directOnly bool          // measure only the direct side (no gateway needed)
	timeout    time.Duration // bound on the whole run
}

func parseFlags(args []string) (options, error) {
	var o options
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.IntVar(&o.calls, "calls", 1000, "calls in the one-session scenario; each concurrent session makes half as many")
	fs.IntVar(&o.sessions, "sessions", 8, "concurrent sessions in the second scenario")
	fs.BoolVar(&o.quick, "quick", false, "smaller counts for a smoke run (--calls 100, fewer repeats) unless --calls is given")
	fs.BoolVar(&o.json, "json", false, "print the report as JSON")
	fs.StringVar(&o.gateway, "gateway", "", "gateway binary to use instead of building ./cmd/gateway")
	fs.BoolVar(&o.directOnly, "direct-only", false, "measure only the direct side")
	fs.DurationVar(&o.timeout, "timeout", 10*time.Minute, "bound on the whole run")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	if o.quick && !set["calls"] {
		o.calls = 100
	}
	if o.calls < 1 || o.sessions < 1 || o.timeout <= 0 {
		return o, errors.New("--calls, --sessions and --timeout must be positive")
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("unexpected arguments: %q", fs.Args())
	}
	return o, nil
}

// plan is the counts a run uses, derived from the options.
type plan struct {
	scenarios        []scenario
	catalogUpstreams int // upstreams for the startup and tools/list phases
	catalogTools     int // tools per catalog upstream
	startupRuns      int
	listRuns         int
	memoryUpstreams  int
	memoryWarmup     int // tools/call before reading RSS
}

func newPlan(o options) plan {
	warmup := min(max(o.calls/10, 5), 100)
	p := plan{
		scenarios: []scenario{
			{name: fmt.Sprintf("1x%d", o.calls), sessions: 1, calls: o.calls, warmup: warmup},
			{name: fmt.Sprintf("%dx%d", o.sessions, max(o.calls/2, 1)), sessions: o.sessions, calls: max(o.calls/2, 1), warmup: max(warmup/2, 1)},
		},
		catalogUpstreams: 50,
		catalogTools:     100,
		startupRuns:      3,
		listRuns:         20,
		memoryUpstreams:  10,
		memoryWarmup:     1000,
	}
	if o.quick {
		p.startupRuns, p.listRuns, p.memoryWarmup = 1, 5, 100
	}
	return p
}

func main() { os.Exit(mainErr(os.Args[1:], os.Stdout, os.Stderr)) }

func mainErr(args []string, stdout, stderr io.Writer) int {
	o, err := parseFlags(args)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		fmt.Fprintln(stderr, "bench:", err)
		return 2
	}
	// Cancelling on SIGINT/SIGTERM lets every phase return and its deferred
	// Close kill the gateway's process group; Pdeathsig covers a hard crash.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, o.timeout)
	defer cancel()

	rep := run(ctx, o, stderr)
	if o.json {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(rep); err != nil {
			fmt.Fprintln(stderr, "bench:", err)
			return 1
		}
	} else {
		rep.writeText(stdout)
	}
	if len(rep.Errors) > 0 {
		return 1
	}
	return 0
}

// run executes every phase it can. A failed phase is recorded in the report
// and the others still run, so one broken feature does not hide the rest.
func run(ctx context.Context, o options, progress io.Writer) *report {
	p := newPlan(o)
	rep := newReport(o)
	defer rep.evaluate() // last, after every phase has cleaned up
	logf := func(format string, args ...any) { fmt.Fprintf(progress, "bench: "+format+"\n", args...) }
	hc := newHTTPClient()
	defer hc.CloseIdleConnections()

	direct, err := startUpstream("echo", []string{"echo"})
	if err != nil {
		rep.fail("direct upstream", err)
		return rep
	}
	defer direct.Close()

	var (
		bin string
		gw  *echoGateway
	)
	if !o.directOnly {
		var cleanup func()
		if bin, cleanup, err = gatewayBinary(ctx, o.gateway, logf); err != nil {
			rep.fail("gateway build", err)
		} else {
			defer cleanup()
			rep.Gateway = bin
			if gw, err = startEchoGateway(ctx, hc, bin); err != nil {
				rep.fail("gateway start (1 upstream)", err)
				gw = nil
			} else {
				defer gw.Close() // idempotent; also covers a panic below
			}
		}
	}

	for _, sc := range p.scenarios {
		logf("scenario %s: direct", sc.name)
		d, err := runLoad(ctx, hc, target{endpoint: direct.url, tool: "echo"}, sc, hooks{})
		if err != nil {
			rep.fail("direct "+sc.name, err)
			continue
		}
		sr := scenarioReport{Name: sc.name, Sessions: sc.sessions, CallsPerSession: sc.calls, Direct: sideOf(d)}
		rep.checkCalls("direct "+sc.name, d)
		if gw != nil {
			logf("scenario %s: gateway", sc.name)
			if g, err := gw.measure(ctx, hc, sc); err != nil {
				rep.fail("gateway "+sc.name, err)
			} else {
				sr.addGateway(g)
				rep.checkCalls("gateway "+sc.name, g.loadResult)
			}
		}
		rep.Scenarios = append(rep.Scenarios, sr)
	}
	if gw != nil {
		// Stop the echo gateway so it does not compete with the next phases.
		if err := gw.Close(); err != nil {
			rep.fail("gateway stop", err)
		}
	}
	if bin != "" {
		runCatalogPhases(ctx, hc, bin, p, rep, logf)
		runBoundsPhases(ctx, hc, bin, o, rep, logf)
	}
	return rep
}

// gatewayBinary returns path if given, else builds ./cmd/gateway into a
// temporary directory that cleanup removes.
func gatewayBinary(ctx context.Context, path string, logf func(string, ...any)) (string, func(), error) {
	if path != "" {
		return path, func() {}, nil
	}
	root, err := moduleRoot(ctx)
	if err != nil {
		return "", nil, err
	}
	dir, err := os.MkdirTemp("", "credgate-bench-")
	if err != nil {
		return "", nil, err
	}
	cleanup := func() { _ = os.RemoveAll(dir) }
	logf("building ./cmd/gateway")
	bin, err := buildGateway(ctx, root, dir)
	if err != nil {
		cleanup()
		return "", nil, err
	}
	return bin, cleanup, nil
}

func sortedKeys[V any](m map[string]V) []string { return slices.Sorted(maps.Keys(m)) }
