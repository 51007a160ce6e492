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
	Calls     *callsReport     `json:"calls,omitempty"`
	Profile   *profileReport   `json:"profile,omitempty"`
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
	// Variant is the gateway configuration of a call target (variants.go);
	// empty for the others.
	Variant string `json:"variant,omitempty"`
	Name    string `json:"name"`
	Goal    string `json:"goal"`
	Value   string `json:"value"`
	Status  string `json:"status"` // PASS, MISS, or n/a when not measured
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
	r.Targets = nil
	add := func(name, goal string, have bool, value string, pass bool) {
		t := targetReport{Name: name, Goal: goal, Value: "-", Status: "n/a"}
		if have {
			t.Value, t.Status = value, status(pass)
		}
		r.Targets = append(r.Targets, t)
	}
	if r.Calls != nil {
		for _, v := range r.Calls.Variants {
			if !v.Reference { // measured to compare with, not held to the goals
				r.Targets = append(r.Targets, v.targets(r.Calls)...)
			}
		}
	}
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
	if s := r.Sessions; s != nil && len(s.Idle) > 1 {
		first, last := s.Idle[0], s.Idle[len(s.Idle)-1]
		grew := last.RSSMiB - first.RSSMiB
		add(fmt.Sprintf("RSS, %d idle sessions over %.0f s", s.Initializes, (last.AtMs-first.AtMs)/1000), fmt.Sprintf("flat (grows <= %.0f%%)", idleRSSGrowthPct), true,
			fmt.Sprintf("%.1f -> %.1f MiB (%+.1f%%), %d -> %d sessions", first.RSSMiB, last.RSSMiB, 100*div(grew, first.RSSMiB), first.Sessions, last.Sessions),
			grew <= first.RSSMiB*idleRSSGrowthPct/100 && last.Sessions == s.Initializes)
	} else {
		add("RSS, 10000 idle sessions", fmt.Sprintf("flat (grows <= %.0f%%)", idleRSSGrowthPct), false, "", false)
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

	if c := r.Calls; c != nil {
		c.writeText(w)
		fmt.Fprintln(w)
	}
	if p := r.Profile; p != nil {
		p.writeText(w)
		fmt.Fprintln(w)
	}

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
		}{{"before", s.Before}, {"after the initializes", s.After}} {
			fmt.Fprintf(tw, "  %s\t%d\t%d\t%.1f\t\n", row.name, row.s.Sessions, row.s.Goroutines, row.s.RSSMiB)
		}
		for _, is := range s.Idle {
			fmt.Fprintf(tw, "  held idle, %.1f s after the last initialize\t%d\t%d\t%.1f\t\n", is.AtMs/1000, is.Sessions, is.Goroutines, is.RSSMiB)
		}
		fmt.Fprintf(tw, "  all expired (after %.1f s)\t%d\t%d\t%.1f\t\n", s.ExpiredAfterMs/1000, s.AfterIdle.Sessions, s.AfterIdle.Goroutines, s.AfterIdle.RSSMiB)
		if st := s.Settled; st != nil {
			fmt.Fprintf(tw, "  memory returned to the OS (%.0f s later)\t%d\t%d\t%.1f\t\n", s.SettledAfterMs/1000, st.Sessions, st.Goroutines, st.RSSMiB)
		}
		tw.Flush()
	}

	fmt.Fprintln(w, "\nother targets (the call targets are in the table above; all are in --json)")
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	for _, t := range r.Targets {
		if t.Variant == "" {
			fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\n", t.Name, t.Goal, t.Value, t.Status)
		}
	}
	tw.Flush()

	if len(r.Errors) > 0 {
		fmt.Fprintln(w, "\nerrors")
		for _, e := range r.Errors {
			fmt.Fprintf(w, "  %s\n", strings.ReplaceAll(e, "\n", "\n    "))
		}
	}
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

func status(pass bool) string {
	if pass {
		return "PASS"
	}
	return "MISS"
}
