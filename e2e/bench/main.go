// Command bench is the load driver behind `make bench`. It calls the same
// in-process upstream directly and through real gateway processes in one run,
// and reports both sides, their ratios, and issue 12's targets.
//
//	                 ┌──────────── this process ────────────┐
//	load clients ──► │ direct upstream   (echo)             │
//	load clients ──► gateway process ──► gateway upstream (echo, counts TCP accepts)
//	load clients ──► gateway process ──► this binary on stdio (echo, CREDGATE_BENCH_STDIO=1)
//	load clients ──► minproxy process ─► its upstream (echo, counts TCP accepts)
//	load clients ──► minproxy process ─► this binary on stdio (echo)
//	                 │ 50 catalog upstreams (100 tools each)│
//	                 └──────────────────────────────────────┘
//
// Phases: the call measurements (variants.go: four gateway configurations,
// HTTP or stdio upstream, stateful or stateless, each against direct HTTP;
// throughput at N sessions and latency at 1 session, every gateway run right
// after a direct run, medians over several runs), a CPU and allocation
// profile of the gateway under load (profile.go), gateway startup with 50
// upstreams, tools/list
// across 50x100 tools (timed twice: raw HTTP, which the target uses, and
// the go-sdk client), gateway RSS with 10 upstreams, and the bounds (the
// gateway's peak RSS over one 200 MB upstream result; RSS and goroutines
// around 10,000 abandoned sessions while they sit idle and after their idle
// timeout). All traffic stays
// on 127.0.0.1. It is a report, not a test: a missed target still exits 0;
// only a failure to measure (or failed calls) exits non-zero.
//
// Beside credgate's variants the call phase measures reference rows, the
// minimal Go reverse proxy of issue 12 (./minproxy, which the driver
// builds), exactly as it measures a variant: in front of an HTTP echo
// upstream whenever the HTTP variant is measured, and in front of the stdio
// echo child whenever the stdio variant is (--reference=false turns both
// off). Issue 12's goals come from a faster machine; a reference says what
// a bare proxy costs on this one, so the report prints it without goals
// and compares credgate's variant of the same upstream with it as ratios.
//
// Each measured window reads the CPU of three processes from /proc (see
// proc.go): the gateway, the processes below it (a stdio upstream), and
// this driver (the load clients, and the echo upstream of a direct run or
// an HTTP variant). The detail table prints them per call.
//
// Usage:
//
//	cd e2e/bench && go run . [--quick] [--runs N] [--calls N] [--sessions N] [--gateway PATH]
//	                   [--variants LIST] [--compare PATH] [--reference=false] [--calls-only]
//	                   [--profile=false] [--profile-dir DIR] [--json]
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
	"path/filepath"
	"slices"
	"syscall"
	"time"
)

type options struct {
	calls       int           // calls in the one-session scenario; concurrent sessions make half each
	sessions    int           // concurrent sessions in the second scenario
	runs        int           // runs of every scenario and variant; figures are medians over them
	quick       bool          // smaller counts for a smoke run
	profile     bool          // profile the gateway under load (profile.go)
	profileDir  string        // where the raw profiles go; if empty, a new temporary directory
	profileFor  time.Duration // length of the CPU profile
	profileOf   string        // the variant profiled (its name)
	json        bool          // machine-readable output
	gateway     string        // prebuilt gateway binary; if empty, build ./cmd/gateway
	directOnly  bool          // measure only the direct side
	callsOnly   bool          // only the call scenarios and the profile (no gateway needed)
	catalogOnly bool          // only the startup, tools/list and RSS phases
	variants    string        // comma-separated variant names to measure; "" is all
	compare     string        // another gateway binary, measured beside each variant in the same run
	reference   bool          // measure the minimal Go proxy (./minproxy) as a reference row
	timeout     time.Duration // bound on the whole run
}

func parseFlags(args []string) (options, error) {
	var o options
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.IntVar(&o.calls, "calls", 1000, "calls in the one-session scenario; each concurrent session makes half as many")
	fs.IntVar(&o.sessions, "sessions", 8, "concurrent sessions in the throughput scenario")
	fs.IntVar(&o.runs, "runs", 6, "runs of each scenario and variant (each gateway run paired with a direct run); figures are medians")
	fs.BoolVar(&o.quick, "quick", false, "smaller counts for a smoke run (--calls 100, --runs 2, no profile, fewer repeats) unless given")
	fs.BoolVar(&o.profile, "profile", true, "profile the gateway's CPU and allocations in an extra run of the HTTP throughput scenario")
	fs.StringVar(&o.profileDir, "profile-dir", "", "directory for the raw profiles (default: a new temporary directory, printed)")
	fs.DurationVar(&o.profileFor, "profile-seconds", 4*time.Second, "length of the CPU profile")
	fs.StringVar(&o.profileOf, "profile-variant", "HTTP", "the variant --profile profiles (HTTP, HTTP stateless, stdio, stdio stateless, \"HTTP, fast_path off\")")
	fs.BoolVar(&o.json, "json", false, "print the report as JSON")
	fs.StringVar(&o.gateway, "gateway", "", "gateway binary to use instead of building ./cmd/gateway")
	fs.BoolVar(&o.directOnly, "direct-only", false, "measure only the direct side")
	fs.BoolVar(&o.callsOnly, "calls-only", false, "run only the call scenarios (and the profile): no startup, tools/list, memory or bounds phases")
	fs.BoolVar(&o.catalogOnly, "catalog-only", false, "run only the startup, tools/list and RSS phases: no call scenarios, profile or bounds phases")
	fs.StringVar(&o.variants, "variants", "", "comma-separated names of the variants to measure (default all), e.g. \"HTTP,stdio\"")
	fs.StringVar(&o.compare, "compare", "", "another gateway binary (an earlier build, say), measured as a variant of its own beside each one, in the same run")
	fs.BoolVar(&o.reference, "reference", true, "build ./minproxy (a minimal Go reverse proxy) and measure it in the same run as a reference row, without goals, in front of an HTTP upstream whenever the HTTP variant is measured and of a stdio one whenever the stdio variant is")
	fs.DurationVar(&o.timeout, "timeout", 15*time.Minute, "bound on the whole run")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	if o.quick && !set["calls"] {
		o.calls = 100
	}
	if o.quick && !set["runs"] {
		o.runs = 2
	}
	if o.quick && !set["profile"] {
		o.profile = false
	}
	if o.calls < 1 || o.sessions < 1 || o.runs < 1 || o.timeout <= 0 || o.profileFor < time.Second {
		return o, errors.New("--calls, --sessions, --runs and --timeout must be positive, --profile-seconds at least 1s")
	}
	if o.callsOnly && o.catalogOnly {
		return o, errors.New("--calls-only and --catalog-only exclude each other")
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("unexpected arguments: %q", fs.Args())
	}
	if _, err := pickVariants(o.variants); err != nil {
		return o, err
	}
	return o, nil
}

// plan is the counts a run uses, derived from the options.
type plan struct {
	scenarios        []scenario // latency (1 session) first, then throughput
	variants         []variant  // gateway configurations measured against direct
	runs             int
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
		variants:         withReference(withCompare(must(pickVariants(o.variants)), o.compare), o.reference),
		runs:             o.runs,
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

func main() {
	if os.Getenv(stdioEnv) == "1" {
		os.Exit(serveStdio(os.Stderr)) // a gateway runs this binary as its stdio upstream
	}
	os.Exit(mainErr(os.Args[1:], os.Stdout, os.Stderr))
}

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

	var bin string
	if !o.directOnly {
		dir, err := os.MkdirTemp("", "credgate-bench-")
		if err != nil {
			rep.fail("gateway build", err)
		} else {
			defer os.RemoveAll(dir)
			if bin, err = gatewayBinary(ctx, o.gateway, dir, logf); err != nil {
				rep.fail("gateway build", err)
			} else {
				rep.Gateway = bin
				p.variants = buildReference(ctx, p.variants, dir, rep, logf)
			}
		}
	}

	// Every call-phase gateway is stopped before the next phases, so it
	// does not compete with them.
	if !o.catalogOnly {
		if data := runCalls(ctx, hc, bin, p, rep, logf); data != nil {
			rep.Calls = newCallsReport(data)
		}
		if bin != "" && o.profile {
			rep.Profile = runProfile(ctx, hc, bin, p, o, rep, logf)
		}
	}
	if bin != "" && !o.callsOnly {
		runCatalogPhases(ctx, hc, bin, p, rep, logf)
		if !o.catalogOnly {
			runBoundsPhases(ctx, hc, bin, o, rep, logf)
		}
	}
	return rep
}

// gatewayBinary returns path if given, else builds ./cmd/gateway into dir.
func gatewayBinary(ctx context.Context, path, dir string, logf func(string, ...any)) (string, error) {
	if path != "" {
		return path, nil
	}
	root, err := moduleRoot(ctx)
	if err != nil {
		return "", err
	}
	logf("building ./cmd/gateway")
	return buildGateway(ctx, root, dir)
}

// buildReference builds ./minproxy into dir and sets it as the reference
// variants' binary, if vs has any. A failed build is recorded and drops
// those rows; credgate's rows are measured all the same.
func buildReference(ctx context.Context, vs []variant, dir string, rep *report, logf func(string, ...any)) []variant {
	isRef := func(v variant) bool { return v.Ref }
	if !slices.ContainsFunc(vs, isRef) {
		return vs
	}
	root, err := moduleRoot(ctx)
	var bin string
	if err == nil {
		logf("building ./minproxy (the reference rows)")
		bin, err = buildMinproxy(ctx, filepath.Join(root, "e2e", "bench"), dir)
	}
	if err != nil {
		rep.fail("reference build", err)
		return slices.DeleteFunc(vs, isRef)
	}
	for i := range vs {
		if vs[i].Ref {
			vs[i].Bin = bin
		}
	}
	return vs
}

func sortedKeys[V any](m map[string]V) []string { return slices.Sorted(maps.Keys(m)) }
