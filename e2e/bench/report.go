package main

import (
	"fmt"
	"io"
	"runtime"
	"strings"
	"text/tabwriter"
	"time"
)

// report is everything a run measured; it is also the --json output.
type report struct {
	Go        string           `json:"go"`
	Platform  string           `json:"platform"`
	CPUs      int              `json:"cpus"`
	Quick     bool             `json:"quick"`
	Gateway   string           `json:"gateway,omitempty"` // binary measured
	Scenarios []scenarioReport `json:"scenarios"`
	Startup   *startupReport   `json:"startup,omitempty"`
	ToolsList *toolsListReport `json:"tools_list,omitempty"`
	Memory    *memoryReport    `json:"memory,omitempty"`
	// BigResponse and Sessions are the bounds phases (bounds.go).
	BigResponse *bigResponseReport `json:"big_response,omitempty"`
	Sessions    *sessionsReport    `json:"abandoned_sessions,omitempty"`
	Targets     []targetReport     `json:"targets"`
	// Errors lists phases that could not be measured and calls that failed.
	// Any entry makes the exit code non-zero.
	Errors []string `json:"errors,omitempty"`
}

type scenarioReport struct {
	Name            string       `json:"name"`
	Sessions        int          `json:"sessions"`
	CallsPerSession int          `json:"calls_per_session"`
	Direct          sideReport   `json:"direct"`
	Gateway         *sideReport  `json:"gateway,omitempty"`
	Ratios          *ratioReport `json:"ratios,omitempty"`
}

type sideReport struct {
	Calls          int        `json:"calls"`
	ElapsedMs      float64    `json:"elapsed_ms"`
	P50Ms          float64    `json:"p50_ms"`
	P99Ms          float64    `json:"p99_ms"`
	CallsPerSecond float64    `json:"calls_per_second"`
	Errors         callErrors `json:"errors"`
	// Gateway side only.
	CPUMs         *float64 `json:"cpu_ms,omitempty"`          // gateway CPU time over the measured calls
	CPUPerCallMs  *float64 `json:"cpu_per_call_ms,omitempty"` // resolution: one clock tick / calls
	UpstreamConns *int64   `json:"upstream_conns,omitempty"`  // new upstream TCP connections
}

type ratioReport struct {
	Throughput float64 `json:"throughput"`   // gateway / direct
	AddedP50Ms float64 `json:"added_p50_ms"` // gateway p50 - direct p50
	P99        float64 `json:"p99"`          // gateway p99 / direct p99
}

type startupReport struct {
	Upstreams        int       `json:"upstreams"`
	ToolsPerUpstream int       `json:"tools_per_upstream"`
	MedianMs         float64   `json:"median_ms"`
	RunsMs           []float64 `json:"runs_ms"`
}

// toolsListReport is the whole tools/list union walked page by page, through
// the gateway and directly against one upstream holding the same tools, by
// two clients.
type toolsListReport struct {
	Upstreams        int `json:"upstreams"`
	ToolsPerUpstream int `json:"tools_per_upstream"`
	ExpectedTools    int `json:"expected_tools"`
	// Raw is plain HTTP requests that read each page whole but search out
	// only its nextCursor while timed: the server's serving time, which the
	// target uses.
	Raw listClientReport `json:"raw_http"`
	// SDK is the go-sdk client's ListTools, which decodes every tool; its
	// decoding dominates the time.
	SDK listClientReport `json:"sdk_client"`
}

type listClientReport struct {
	Runs      int     `json:"runs"`
	Tools     int     `json:"tools"` // as returned by the last gateway walk
	Pages     int     `json:"pages"`
	FirstPage int     `json:"first_page_tools"`
	MedianMs  float64 `json:"median_ms"` // gateway
	P99Ms     float64 `json:"p99_ms"`    // gateway
	// Direct: one in-process upstream with all the tools, same client.
	DirectMedianMs float64 `json:"direct_median_ms"`
	DirectP99Ms    float64 `json:"direct_p99_ms"`
	Ratio          float64 `json:"ratio"` // gateway median / direct median
}

type memoryReport struct {
	Upstreams   int     `json:"upstreams"`
	WarmupCalls int     `json:"warmup_calls"`
	RSSMiB      float64 `json:"rss_mib"`
}

type targetReport struct {
	Name   string `json:"name"`
	Goal   string `json:"goal"`
	Value  string `json:"value"`
	Status string `json:"status"` // PASS, MISS, or n/a when not measured
}

func newReport(o options) *report {
	return &report{
		Go:       runtime.Version(),
		Platform: runtime.GOOS + "/" + runtime.GOARCH,
		CPUs:     runtime.NumCPU(),
		Quick:    o.quick,
	}
}

func (r *report) fail(phase string, err error) {
	r.Errors = append(r.Errors, fmt.Sprintf("%s: %v", phase, err))
}

// checkCalls records failed calls as an error: numbers from a side whose
// calls fail are not comparable.
func (r *report) checkCalls(side string, lr loadResult) {
	if n := lr.errors.total(); n > 0 {
		r.Errors = append(r.Errors, fmt.Sprintf("%s: %d of %d calls failed (%+v)", side, n, lr.calls, lr.errors))
	}
}

func sideOf(lr loadResult) sideReport {
	return sideReport{
		Calls:          lr.calls,
		ElapsedMs:      ms(lr.elapsed),
		P50Ms:          ms(lr.latencies.percentile(50)),
		P99Ms:          ms(lr.latencies.percentile(99)),
		CallsPerSecond: lr.throughput(),
		Errors:         lr.errors,
	}
}

func (s *scenarioReport) addGateway(g gatewayResult) {
	side := sideOf(g.loadResult)
	cpu := ms(g.cpu)
	side.CPUMs = &cpu
	if g.calls > 0 {
		perCall := cpu / float64(g.calls)
		side.CPUPerCallMs = &perCall
	}
	side.UpstreamConns = &g.conns
	s.Gateway = &side
	s.Ratios = &ratioReport{
		Throughput: div(side.CallsPerSecond, s.Direct.CallsPerSecond),
		AddedP50Ms: side.P50Ms - s.Direct.P50Ms,
		P99:        div(side.P99Ms, s.Direct.P99Ms),
	}
}

func newStartupReport(upstreams, tools int, runs []time.Duration) *startupReport {
	r := &startupReport{Upstreams: upstreams, ToolsPerUpstream: tools, MedianMs: ms(newStats(runs).median())}
	for _, d := range runs {
		r.RunsMs = append(r.RunsMs, ms(d))
	}
	return r
}

func newToolsListReport(upstreams, toolsPer int, gwRaw, gwSDK, dRaw, dSDK []listResult) *toolsListReport {
	return &toolsListReport{
		Upstreams:        upstreams,
		ToolsPerUpstream: toolsPer,
		ExpectedTools:    upstreams * toolsPer,
		Raw:              newListClientReport(gwRaw, dRaw),
		SDK:              newListClientReport(gwSDK, dSDK),
	}
}

func newListClientReport(gw, direct []listResult) listClientReport {
	g, d := walkStats(gw), walkStats(direct)
	last := gw[len(gw)-1]
	r := listClientReport{
		Runs:           len(gw),
		Tools:          last.tools,
		Pages:          last.pages,
		FirstPage:      last.firstPage,
		MedianMs:       ms(g.median()),
		P99Ms:          ms(g.percentile(99)),
		DirectMedianMs: ms(d.median()),
		DirectP99Ms:    ms(d.percentile(99)),
	}
	r.Ratio = div(r.MedianMs, r.DirectMedianMs)
	return r
}

func walkStats(walks []listResult) stats {
	durations := make([]time.Duration, len(walks))
	for i, w := range walks {
		durations[i] = w.elapsed
	}
	return newStats(durations)
}

// evaluate compares the measurements with the gateway's targets.
func (r *report) evaluate() {
	var one, many *scenarioReport
	for i := range r.Scenarios {
		s := &r.Scenarios[i]
		if s.Sessions == 1 && one == nil {
			one = s
		} else if s.Sessions > 1 {
			many = s
		}
	}
	var cpuMs, calls, conns float64
	measured := false
	for _, s := range r.Scenarios {
		if g := s.Gateway; g != nil {
			measured = true
			cpuMs += *g.CPUMs
			calls += float64(g.Calls)
			conns += float64(*g.UpstreamConns)
		}
	}

	r.Targets = nil
	add := func(name, goal string, have bool, value string, pass bool) {
		t := targetReport{Name: name, Goal: goal, Value: "-", Status: "n/a"}
		if have {
			t.Value, t.Status = value, "MISS"
			if pass {
				t.Status = "PASS"
			}
		}
		r.Targets = append(r.Targets, t)
	}
	if many != nil && many.Ratios != nil {
		add(fmt.Sprintf("throughput, %d sessions", many.Sessions), ">= 0.85x direct", true,
			fmt.Sprintf("%.2fx", many.Ratios.Throughput), many.Ratios.Throughput >= 0.85)
	} else {
		add("throughput, concurrent sessions", ">= 0.85x direct", false, "", false)
	}
	if one != nil && one.Ratios != nil {
		add("added p50, 1 session", "<= 0.3 ms", true,
			fmt.Sprintf("%.3f ms", one.Ratios.AddedP50Ms), one.Ratios.AddedP50Ms <= 0.3)
	} else {
		add("added p50, 1 session", "<= 0.3 ms", false, "", false)
	}
	cpu := div(cpuMs, calls)
	add("gateway CPU per call", "<= 0.2 ms", measured && calls > 0, fmt.Sprintf("%.3f ms", cpu), cpu <= 0.2)
	per100 := 100 * div(conns, calls)
	add("new upstream connections", "< 1 per 100 calls", measured && calls > 0,
		fmt.Sprintf("%.2f per 100 (%d)", per100, int64(conns)), per100 < 1)
	if t := r.ToolsList; t != nil {
		add(fmt.Sprintf("tools/list, %d tools (raw HTTP)", t.ExpectedTools), "< 20 ms", true,
			fmt.Sprintf("%.2f ms (p99 %.2f)", t.Raw.MedianMs, t.Raw.P99Ms), t.Raw.MedianMs < 20)
	} else {
		add("tools/list, 5000 tools (raw HTTP)", "< 20 ms", false, "", false)
	}
	if s := r.Startup; s != nil {
		add(fmt.Sprintf("startup, %d upstreams", s.Upstreams), "< 2 s", true, fmt.Sprintf("%.0f ms", s.MedianMs), s.MedianMs < 2000)
	} else {
		add("startup, 50 upstreams", "< 2 s", false, "", false)
	}
	if m := r.Memory; m != nil {
		add(fmt.Sprintf("RSS, %d upstreams", m.Upstreams), "< 40 MiB", true, fmt.Sprintf("%.1f MiB", m.RSSMiB), m.RSSMiB < 40)
	} else {
		add("RSS, 10 upstreams", "< 40 MiB", false, "", false)
	}
	if b := r.BigResponse; b != nil {
		add(fmt.Sprintf("peak RSS, one %.0f MiB result", b.ResponseMiB), "< 128 MiB", true,
			fmt.Sprintf("%.1f MiB (%s)", b.PeakRSSMiB, b.Outcome), b.PeakRSSMiB < 128 && b.Outcome == "upstream_error")
	} else {
		add("peak RSS, one 200 MiB result", "< 128 MiB", false, "", false)
	}
	if s := r.Sessions; s != nil {
		grew := s.AfterIdle.Goroutines - s.Before.Goroutines
		add(fmt.Sprintf("%d abandoned sessions, after idle timeout", s.Initializes), "0 left, goroutines +10 at most", true,
			fmt.Sprintf("%d left, goroutines %+d", s.AfterIdle.Sessions, grew), s.AfterIdle.Sessions == 0 && grew <= 10)
	} else {
		add("abandoned sessions, after idle timeout", "0 left, goroutines +10 at most", false, "", false)
	}
}

func (r *report) writeText(w io.Writer) {
	fmt.Fprintf(w, "credgate bench: %s %s, %d CPUs", r.Go, r.Platform, r.CPUs)
	if r.Quick {
		fmt.Fprint(w, " (quick)")
	}
	fmt.Fprintln(w)
	if r.Gateway != "" {
		fmt.Fprintf(w, "gateway: %s\n", r.Gateway)
	}
	fmt.Fprintln(w)

	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "scenario\tside\tcalls\tp50 ms\tp99 ms\tcalls/s\terrors t/r/x/m\tgw CPU/call ms\tupstream conns\t")
	for _, s := range r.Scenarios {
		writeSide(tw, s.Name, "direct", s.Direct)
		if s.Gateway != nil {
			writeSide(tw, "", "gateway", *s.Gateway)
			fmt.Fprintf(tw, "\tgw/direct\t\t%+.3f\t%.2fx\t%.2fx\t\t\t\t\n", s.Ratios.AddedP50Ms, s.Ratios.P99, s.Ratios.Throughput)
		}
	}
	tw.Flush()
	fmt.Fprintln(w, "(errors: tool isError / JSON-RPC / transport / wrong echo; gw/direct row: added p50 ms, p99 ratio, throughput ratio)")
	fmt.Fprintln(w)

	if s := r.Startup; s != nil {
		fmt.Fprintf(w, "startup, %d upstreams x %d tools: median %.0f ms over %d runs %s\n",
			s.Upstreams, s.ToolsPerUpstream, s.MedianMs, len(s.RunsMs), fmtMs(s.RunsMs))
	}
	if t := r.ToolsList; t != nil {
		fmt.Fprintf(w, "tools/list, %d upstreams x %d tools, whole union per walk; direct = 1 upstream holding all %d tools\n",
			t.Upstreams, t.ToolsPerUpstream, t.ExpectedTools)
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintf(tw, "  %-*s\truns\ttools\tpages\tfirst page\tgw p50 ms\tgw p99 ms\tdirect p50 ms\tdirect p99 ms\tgw/direct p50\t\n", listClientWidth, "client")
		writeList(tw, "raw HTTP (reads pages, decodes cursor only)", t.Raw)
		writeList(tw, "go-sdk client ListTools (decodes every tool)", t.SDK)
		tw.Flush()
	}
	if m := r.Memory; m != nil {
		fmt.Fprintf(w, "RSS, %d upstreams after %d calls: %.1f MiB\n", m.Upstreams, m.WarmupCalls, m.RSSMiB)
	}
	if b := r.BigResponse; b != nil {
		fmt.Fprintf(w, "one %.0f MiB application/json result: %s in %.0f ms; gateway peak RSS %.1f MiB (%.1f MiB before, %.2fx the result); another agent's %d calls meanwhile: %d failed\n",
			b.ResponseMiB, b.Outcome, b.ElapsedMs, b.PeakRSSMiB, b.PeakRSSBeforeMiB, div(b.PeakRSSMiB, b.ResponseMiB), b.ConcurrentCalls, b.ConcurrentFailed)
	}
	if s := r.Sessions; s != nil {
		fmt.Fprintf(w, "%d abandoned sessions (bare initialize), session_idle_timeout %.0fs:\n", s.Initializes, s.IdleTimeoutSeconds)
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintln(tw, "  \tsessions\tgoroutines\tRSS MiB\t")
		for _, row := range []struct {
			name string
			s    sample
		}{{"before", s.Before}, {"after the initializes", s.After}, {fmt.Sprintf("all expired (after %.1f s)", s.ExpiredAfterMs/1000), s.AfterIdle}} {
			fmt.Fprintf(tw, "  %s\t%d\t%d\t%.1f\t\n", row.name, row.s.Sessions, row.s.Goroutines, row.s.RSSMiB)
		}
		if st := s.Settled; st != nil {
			fmt.Fprintf(tw, "  memory returned to the OS (%.0f s later)\t%d\t%d\t%.1f\t\n", s.SettledAfterMs/1000, st.Sessions, st.Goroutines, st.RSSMiB)
		}
		tw.Flush()
	}

	fmt.Fprintln(w, "\ntargets")
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	for _, t := range r.Targets {
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\n", t.Name, t.Goal, t.Value, t.Status)
	}
	tw.Flush()

	if len(r.Errors) > 0 {
		fmt.Fprintln(w, "\nerrors")
		for _, e := range r.Errors {
			fmt.Fprintf(w, "  %s\n", strings.ReplaceAll(e, "\n", "\n    "))
		}
	}
}

func writeSide(w io.Writer, name, side string, s sideReport) {
	cpu, conns := "", ""
	if s.CPUPerCallMs != nil {
		cpu = fmt.Sprintf("%.3f", *s.CPUPerCallMs)
	}
	if s.UpstreamConns != nil {
		conns = fmt.Sprint(*s.UpstreamConns)
	}
	e := s.Errors
	fmt.Fprintf(w, "%s\t%s\t%d\t%.3f\t%.3f\t%.0f\t%d/%d/%d/%d\t%s\t%s\t\n",
		name, side, s.Calls, s.P50Ms, s.P99Ms, s.CallsPerSecond, e.Tool, e.RPC, e.Transport, e.Mismatch, cpu, conns)
}

const listClientWidth = 44

func writeList(w io.Writer, client string, c listClientReport) {
	fmt.Fprintf(w, "  %-*s\t%d\t%d\t%d\t%d\t%.2f\t%.2f\t%.2f\t%.2f\t%.2fx\t\n",
		listClientWidth, client, c.Runs, c.Tools, c.Pages, c.FirstPage, c.MedianMs, c.P99Ms, c.DirectMedianMs, c.DirectP99Ms, c.Ratio)
}

func fmtMs(v []float64) string {
	parts := make([]string, len(v))
	for i, x := range v {
		parts[i] = fmt.Sprintf("%.0f", x)
	}
	return "[" + strings.Join(parts, " ") + "]"
}

func div(a, b float64) float64 {
	if b == 0 {
		return 0
	}
	return a / b
}
