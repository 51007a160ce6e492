package main

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
)

// callsReport is the call measurements: every variant against direct HTTP.
type callsReport struct {
	Runs       int           `json:"runs"`
	Throughput scenarioShape `json:"throughput_scenario"` // N sessions
	Latency    scenarioShape `json:"latency_scenario"`    // 1 session
	// Direct is every direct run, whichever variant it was paired with.
	Direct   directReport    `json:"direct"`
	Variants []variantReport `json:"variants"`
}

type scenarioShape struct {
	Name            string `json:"name"`
	Sessions        int    `json:"sessions"`
	CallsPerSession int    `json:"calls_per_session"`
}

type directReport struct {
	Runs           int        `json:"runs"`             // per scenario
	CallsPerSecond float64    `json:"calls_per_second"` // median, throughput scenario
	P50Ms          float64    `json:"p50_ms"`           // median of the runs' p50, latency scenario
	P99Ms          float64    `json:"p99_ms"`           // median of the runs' p99, latency scenario
	Errors         callErrors `json:"errors"`
}

// variantReport is one gateway configuration's figures. Ratios and added
// latency are the median over runs of each run's gateway figure against
// the direct run just before it; CPU, allocation and connections are totals
// over every run divided by its calls.
type variantReport struct {
	Name      string `json:"name"`
	Upstream  string `json:"upstream"` // streamable-http or stdio
	Stateless bool   `json:"stateless"`
	// Reference marks the minimal Go proxy's row (--reference): measured
	// the same way, held to no goal, so it has no targets.
	Reference bool `json:"reference"`

	Throughput           float64   `json:"throughput_vs_direct"`
	ThroughputRuns       []float64 `json:"throughput_vs_direct_runs"`
	CallsPerSecond       float64   `json:"calls_per_second"`        // median, gateway
	DirectCallsPerSecond float64   `json:"direct_calls_per_second"` // median of the paired direct runs

	AddedP50Ms     float64   `json:"added_p50_ms"`
	AddedP50MsRuns []float64 `json:"added_p50_ms_runs"`
	P50Ms          float64   `json:"p50_ms"`        // median, gateway, 1 session
	DirectP50Ms    float64   `json:"direct_p50_ms"` // median of the paired direct runs
	P99Ms          float64   `json:"p99_ms"`
	DirectP99Ms    float64   `json:"direct_p99_ms"`

	// CPU per call from /proc/pid/stat (resolution one clock tick over all
	// of a scenario's calls); allocation from the gateway's
	// go_memstats_alloc_bytes_total around each measured window.
	CPUPerCallMs        float64    `json:"cpu_per_call_ms"`           // N sessions
	CPUPerCallMs1       float64    `json:"cpu_per_call_ms_1_session"` // 1 session
	AllocBytesPerCall   float64    `json:"alloc_bytes_per_call"`      // N sessions
	AllocBytesPerCall1  float64    `json:"alloc_bytes_per_call_1_session"`
	UpstreamConns       *int64     `json:"upstream_conns,omitempty"`         // over every measured call; nil for stdio
	UpstreamConnsPer100 *float64   `json:"upstream_conns_per_100,omitempty"` // nil for stdio
	GatewayCalls        int        `json:"gateway_calls"`                    // measured, both scenarios
	Errors              callErrors `json:"errors"`

	// VsReference is this variant against the reference row of the same
	// run; set on credgate's variants with an HTTP upstream when the
	// reference was measured.
	VsReference *referenceComparison `json:"vs_reference,omitempty"`
}

// referenceComparison is a variant against the minimal Go proxy measured in
// the same run. Throughput and added p50 are taken from each side's figures
// against its own paired direct runs (throughput_vs_direct, added_p50_ms),
// so the machine's drift between the two sides' slots cancels as it does in
// those figures; CPU and allocation are per call at N sessions.
type referenceComparison struct {
	Reference       string  `json:"reference"`          // the reference row's name
	CPUPerCallRatio float64 `json:"cpu_per_call_ratio"` // variant CPU / call over the reference's
	// ThroughputRatio is the variant's throughput over the reference's:
	// throughput_vs_direct over the reference's throughput_vs_direct.
	ThroughputRatio float64 `json:"throughput_ratio"`
	// AddedP50Ms is the variant's added p50 less the reference's: the
	// latency credgate adds over a bare proxy, in ms.
	AddedP50Ms float64 `json:"added_p50_ms"`
	AllocRatio float64 `json:"alloc_ratio"` // variant bytes allocated / call over the reference's
}

func newCallsReport(d *callsData) *callsReport {
	shape := func(sc scenario) scenarioShape {
		return scenarioShape{Name: sc.name, Sessions: sc.sessions, CallsPerSession: sc.calls}
	}
	thr, lat := d.throughputIndex(), d.latencyIndex()
	r := &callsReport{Throughput: shape(d.scenarios[thr]), Latency: shape(d.scenarios[lat])}

	var cps, p50, p99 []float64
	for _, slot := range d.pairs {
		for _, pr := range slot[thr] {
			cps = append(cps, pr.direct.throughput())
			r.Direct.Errors.add(pr.direct.errors)
		}
		for _, pr := range slot[lat] {
			p50 = append(p50, ms(pr.direct.latencies.percentile(50)))
			p99 = append(p99, ms(pr.direct.latencies.percentile(99)))
			r.Direct.Errors.add(pr.direct.errors)
		}
	}
	r.Direct.Runs = len(cps)
	r.Direct.CallsPerSecond, r.Direct.P50Ms, r.Direct.P99Ms = median(cps), median(p50), median(p99)
	r.Runs = len(cps)
	if len(d.pairs) > 0 {
		r.Runs = len(d.pairs[0][thr])
	}

	for vi, v := range d.variants {
		vr := variantReport{Name: v.Name, Upstream: v.upstreamTransport(), Stateless: v.Stateless, Reference: v.Ref}
		var gcps, dcps, gp50, dp50, gp99, dp99 []float64
		var conns int64
		sum := func(prs []pairResult) (cpuMs, alloc float64, calls int) {
			for _, pr := range prs {
				if pr.gw == nil {
					continue
				}
				cpuMs += ms(pr.gw.cpu)
				alloc += pr.gw.allocBytes
				calls += pr.gw.calls
				conns += pr.gw.conns
				vr.GatewayCalls += pr.gw.calls
				vr.Errors.add(pr.gw.errors)
			}
			return cpuMs, alloc, calls
		}
		for _, pr := range d.pairs[vi][thr] {
			if pr.gw == nil {
				continue
			}
			g, dd := pr.gw.throughput(), pr.direct.throughput()
			gcps, dcps = append(gcps, g), append(dcps, dd)
			vr.ThroughputRuns = append(vr.ThroughputRuns, div(g, dd))
		}
		for _, pr := range d.pairs[vi][lat] {
			if pr.gw == nil {
				continue
			}
			g, dd := ms(pr.gw.latencies.percentile(50)), ms(pr.direct.latencies.percentile(50))
			gp50, dp50 = append(gp50, g), append(dp50, dd)
			gp99 = append(gp99, ms(pr.gw.latencies.percentile(99)))
			dp99 = append(dp99, ms(pr.direct.latencies.percentile(99)))
			vr.AddedP50MsRuns = append(vr.AddedP50MsRuns, g-dd)
		}
		vr.Throughput, vr.CallsPerSecond, vr.DirectCallsPerSecond = median(vr.ThroughputRuns), median(gcps), median(dcps)
		vr.AddedP50Ms, vr.P50Ms, vr.DirectP50Ms = median(vr.AddedP50MsRuns), median(gp50), median(dp50)
		vr.P99Ms, vr.DirectP99Ms = median(gp99), median(dp99)
		cpu, alloc, calls := sum(d.pairs[vi][thr])
		vr.CPUPerCallMs, vr.AllocBytesPerCall = div(cpu, float64(calls)), div(alloc, float64(calls))
		cpu, alloc, calls = sum(d.pairs[vi][lat])
		vr.CPUPerCallMs1, vr.AllocBytesPerCall1 = div(cpu, float64(calls)), div(alloc, float64(calls))
		if !v.Stdio {
			per100 := 100 * div(float64(conns), float64(vr.GatewayCalls))
			vr.UpstreamConns, vr.UpstreamConnsPer100 = &conns, &per100
		}
		r.Variants = append(r.Variants, vr)
	}
	r.compareWithReference()
	return r
}

// compareWithReference sets VsReference on every credgate variant with an
// HTTP upstream, if the reference row was measured.
func (c *callsReport) compareWithReference() {
	ref := c.reference()
	if ref == nil || ref.GatewayCalls == 0 {
		return
	}
	for i := range c.Variants {
		v := &c.Variants[i]
		if v.Reference || v.Upstream == "stdio" || v.GatewayCalls == 0 {
			continue
		}
		v.VsReference = &referenceComparison{
			Reference:       ref.Name,
			CPUPerCallRatio: div(v.CPUPerCallMs, ref.CPUPerCallMs),
			ThroughputRatio: div(v.Throughput, ref.Throughput),
			AddedP50Ms:      v.AddedP50Ms - ref.AddedP50Ms,
			AllocRatio:      div(v.AllocBytesPerCall, ref.AllocBytesPerCall),
		}
	}
}

// reference is the reference row, or nil.
func (c *callsReport) reference() *variantReport {
	for i := range c.Variants {
		if c.Variants[i].Reference {
			return &c.Variants[i]
		}
	}
	return nil
}

// throughputIndex and latencyIndex find the scenarios by their sessions.
func (d *callsData) throughputIndex() int {
	for i, sc := range d.scenarios {
		if sc.sessions > 1 {
			return i
		}
	}
	return len(d.scenarios) - 1
}

func (d *callsData) latencyIndex() int {
	for i, sc := range d.scenarios {
		if sc.sessions == 1 {
			return i
		}
	}
	return 0
}

// targets are the variant's figures against issue 12's goals, in the
// order of the table. The reference row's are its values only: the report
// neither prints its status nor evaluates it (report.evaluate).
func (v variantReport) targets(c *callsReport) []targetReport {
	have := v.GatewayCalls > 0
	t := func(name, goal, value string, pass bool) targetReport {
		tr := targetReport{Variant: v.Name, Name: name, Goal: goal, Value: "-", Status: "n/a"}
		if have {
			tr.Value, tr.Status = value, status(pass)
		}
		return tr
	}
	goal := goalThroughputHTTP
	if v.Upstream == "stdio" {
		goal = goalThroughputStdio
	}
	ts := []targetReport{
		t(fmt.Sprintf("throughput, %d sessions", c.Throughput.Sessions), fmt.Sprintf(">= %.2fx", goal),
			fmt.Sprintf("%.2fx", v.Throughput), v.Throughput >= goal),
		t("added p50, 1 session", fmt.Sprintf("<= %.2f ms", goalAddedP50Ms),
			fmt.Sprintf("%+.3f ms", v.AddedP50Ms), v.AddedP50Ms <= goalAddedP50Ms),
		t("gateway CPU per call", fmt.Sprintf("<= %.2f ms", goalCPUPerCallMs),
			fmt.Sprintf("%.3f ms", v.CPUPerCallMs), v.CPUPerCallMs <= goalCPUPerCallMs),
	}
	if v.UpstreamConnsPer100 != nil {
		ts = append(ts, t("new upstream conns per 100 calls", fmt.Sprintf("= %d", goalNewConnsPer100),
			fmt.Sprintf("%.2f", *v.UpstreamConnsPer100), *v.UpstreamConns <= goalNewConnsPer100))
	} else {
		ts = append(ts, targetReport{Variant: v.Name, Name: "new upstream conns per 100 calls", Goal: "-", Value: "-", Status: "n/a"})
	}
	ts = append(ts, t("allocated per call", fmt.Sprintf("<= %d KiB", goalAllocKiB),
		fmt.Sprintf("%.1f KiB", v.AllocBytesPerCall/1024), v.AllocBytesPerCall <= goalAllocKiB*1024))
	return ts
}

// peer is a row of issue 12's table of other gateways, measured by the
// issue's author on a 2-vCPU machine with the same method; the bench prints
// it beside credgate's figures as a reference, it does not measure it.
type peer struct {
	name, throughput, addedP50, cpu, conns string
}

func publishedPeers() []peer {
	return []peer{
		{"TBXark/mcp-proxy (mcp-go)", "0.66x", "+0.23 ms", "0.17 ms", "53"},
		{"docker/mcp-gateway (go-sdk 1.4)", "0.50x", "+0.38 ms", "0.35 ms", "8"},
		{"minimal Go reverse proxy", "0.74x", "+0.18 ms", "0.11 ms", "0"},
		{"TBXark, stdio upstream (vs direct HTTP)", "1.18x", "+0.09 ms", "0.08 ms", "-"},
	}
}

func (c *callsReport) writeText(w io.Writer) {
	fmt.Fprintf(w, "calls: go-sdk client against the same in-process go-sdk echo upstream, directly (HTTP) and through the gateway;\n")
	fmt.Fprintf(w, "throughput at %s (%d sessions x %d calls), latency at %s; each gateway run right after a direct run;\n",
		c.Throughput.Name, c.Throughput.Sessions, c.Throughput.CallsPerSession, c.Latency.Name)
	fmt.Fprintf(w, "ratios and added p50 are medians over %d runs of gateway vs its paired direct run; CPU, allocation and\n", c.Runs)
	fmt.Fprintf(w, "connections are totals over the runs per call (CPU and allocation at %d sessions).\n", c.Throughput.Sessions)
	fmt.Fprintf(w, "direct: %.0f calls/s at %d sessions; p50 %.3f ms, p99 %.3f ms at 1 session (medians of %d runs)\n\n",
		c.Direct.CallsPerSecond, c.Throughput.Sessions, c.Direct.P50Ms, c.Direct.P99Ms, c.Direct.Runs)
	if len(c.Variants) == 0 {
		return
	}

	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "  target\tthroughput vs direct\tadded p50\tgateway CPU / call\tnew upstream conns / 100 calls\tallocated / call\t")
	for _, v := range c.Variants {
		if v.Reference {
			continue
		}
		cells := []string{"credgate, " + v.Name}
		for _, t := range v.targets(c) {
			if t.Status == "n/a" {
				cells = append(cells, t.Value)
				continue
			}
			cells = append(cells, fmt.Sprintf("%s (%s) %s", t.Value, t.Goal, t.Status))
		}
		fmt.Fprintf(tw, "  %s\t\n", strings.Join(cells, "\t"))
	}
	if ref := c.reference(); ref != nil {
		// Values only: a reference is what credgate is read against, not
		// something held to the goals.
		fmt.Fprintln(tw, "  measured here, same run:\t\t\t\t\t\t")
		cells := []string{ref.Name}
		for _, t := range ref.targets(c) {
			cells = append(cells, t.Value)
		}
		fmt.Fprintf(tw, "  %s\t\n", strings.Join(cells, "\t"))
	}
	fmt.Fprintln(tw, "  published in issue 12, not measured here:\t\t\t\t\t\t")
	for _, p := range publishedPeers() {
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t%s\t-\t\n", p.name, p.throughput, p.addedP50, p.cpu, p.conns)
	}
	tw.Flush()
	for _, v := range c.Variants {
		if v.Name == "HTTP" && v.VsReference != nil {
			writeVsReference(w, v)
		}
	}

	fmt.Fprintln(w)
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "  variant\tgw calls/s\tdirect calls/s\tgw p50 ms\tdirect p50 ms\tgw p99 ms\tdirect p99 ms\tCPU/call 1 session\talloc/call 1 session\tnew upstream conns\tthroughput runs\terrors t/r/x/m\t")
	for _, v := range c.Variants {
		e := v.Errors
		conns := "-"
		if v.UpstreamConns != nil {
			conns = fmt.Sprintf("%d in %d calls", *v.UpstreamConns, v.GatewayCalls)
		}
		fmt.Fprintf(tw, "  %s\t%.0f\t%.0f\t%.3f\t%.3f\t%.3f\t%.3f\t%.3f ms\t%.1f KiB\t%s\t%s\t%d/%d/%d/%d\t\n",
			v.Name, v.CallsPerSecond, v.DirectCallsPerSecond, v.P50Ms, v.DirectP50Ms, v.P99Ms, v.DirectP99Ms,
			v.CPUPerCallMs1, v.AllocBytesPerCall1/1024, conns, fmtRatios(v.ThroughputRuns), e.Tool, e.RPC, e.Transport, e.Mismatch)
	}
	tw.Flush()
	fmt.Fprintln(w, "  (medians; errors: tool isError / JSON-RPC / transport / wrong echo)")
}

// writeVsReference prints the line comparing credgate's variant v with the
// reference row of the same run (the figures it is made of are the two
// rows above it).
func writeVsReference(w io.Writer, v variantReport) {
	x := v.VsReference
	fmt.Fprintf(w, "\n  credgate, %s vs %s, same run: CPU / call %.2fx, throughput %.2fx, added p50 %+.3f ms, allocated / call %.2fx\n",
		v.Name, x.Reference, x.CPUPerCallRatio, x.ThroughputRatio, x.AddedP50Ms, x.AllocRatio)
}

func fmtRatios(v []float64) string {
	parts := make([]string, len(v))
	for i, x := range v {
		parts[i] = fmt.Sprintf("%.2f", x)
	}
	return strings.Join(parts, " ")
}
