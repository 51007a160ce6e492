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
	Runs           int     `json:"runs"`             // per scenario
	CallsPerSecond float64 `json:"calls_per_second"` // median, throughput scenario
	P50Ms          float64 `json:"p50_ms"`           // median of the runs' p50, latency scenario
	P99Ms          float64 `json:"p99_ms"`           // median of the runs' p99, latency scenario
	// DriverCPUPerCallMs is this process's CPU per call over every direct
	// run of the throughput scenario: the load clients and the upstream.
	DriverCPUPerCallMs float64    `json:"driver_cpu_per_call_ms"`
	Errors             callErrors `json:"errors"`
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

	// CPU per call of the other processes at N sessions, like
	// CPUPerCallMs (proc.go). ChildCPUPerCallMs is the processes below the
	// gateway: the stdio upstream and its credgate-supervise helper (nil for
	// an HTTP upstream, which runs in the driver). DriverCPUPerCallMs is this
	// process during the gateway runs: the load clients, plus the echo
	// upstream for HTTP; DirectDriverCPUPerCallMs is it during the paired
	// direct runs: the same clients and the upstream they call directly.
	// TotalCPUPerCallMs is gateway + child + driver: what a call through
	// the gateway costs the machine, against DirectDriverCPUPerCallMs.
	ChildCPUPerCallMs        *float64 `json:"upstream_child_cpu_per_call_ms,omitempty"`
	DriverCPUPerCallMs       float64  `json:"driver_cpu_per_call_ms"`
	DirectDriverCPUPerCallMs float64  `json:"direct_driver_cpu_per_call_ms"`
	TotalCPUPerCallMs        float64  `json:"total_cpu_per_call_ms"`

	// VsReference is this variant against the reference row of the same
	// run with the same upstream transport (HTTP or stdio); set on
	// credgate's variants when that reference was measured.
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
	var driverMs float64
	var driverCalls int
	for _, slot := range d.pairs {
		for _, pr := range slot[thr] {
			cps = append(cps, pr.direct.throughput())
			r.Direct.Errors.add(pr.direct.errors)
			driverMs += ms(pr.direct.driverCPU)
			driverCalls += pr.direct.calls
		}
		for _, pr := range slot[lat] {
			p50 = append(p50, ms(pr.direct.latencies.percentile(50)))
			p99 = append(p99, ms(pr.direct.latencies.percentile(99)))
			r.Direct.Errors.add(pr.direct.errors)
		}
	}
	r.Direct.Runs = len(cps)
	r.Direct.CallsPerSecond, r.Direct.P50Ms, r.Direct.P99Ms = median(cps), median(p50), median(p99)
	r.Direct.DriverCPUPerCallMs = div(driverMs, float64(driverCalls))
	r.Runs = len(cps)
	if len(d.pairs) > 0 {
		r.Runs = len(d.pairs[0][thr])
	}

	for vi, v := range d.variants {
		vr := variantReport{Name: v.Name, Upstream: v.upstreamTransport(), Stateless: v.Stateless, Reference: v.Ref}
		var gcps, dcps, gp50, dp50, gp99, dp99 []float64
		var conns int64
		var childMs, driverMs, directMs float64 // throughput scenario
		var directCalls int
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
			childMs += ms(pr.gw.childCPU)
			driverMs += ms(pr.gw.driverCPU)
			directMs += ms(pr.direct.driverCPU)
			directCalls += pr.direct.calls
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
		vr.DriverCPUPerCallMs = div(driverMs, float64(calls))
		vr.DirectDriverCPUPerCallMs = div(directMs, float64(directCalls))
		vr.TotalCPUPerCallMs = vr.CPUPerCallMs + vr.DriverCPUPerCallMs
		if v.Stdio {
			child := div(childMs, float64(calls))
			vr.ChildCPUPerCallMs = &child
			vr.TotalCPUPerCallMs += child
		}
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

// compareWithReference sets VsReference on every credgate variant whose
// upstream transport has a measured reference row: the HTTP variants
// against the HTTP row, the stdio ones against the stdio row.
func (c *callsReport) compareWithReference() {
	for i := range c.Variants {
		v := &c.Variants[i]
		ref := c.referenceFor(v.Upstream)
		if v.Reference || ref == nil || ref.GatewayCalls == 0 || v.GatewayCalls == 0 {
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

// referenceFor is the reference row with the given upstream transport, or nil.
func (c *callsReport) referenceFor(upstream string) *variantReport {
	for i := range c.Variants {
		if c.Variants[i].Reference && c.Variants[i].Upstream == upstream {
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
	fmt.Fprintf(w, "direct: %.0f calls/s at %d sessions; p50 %.3f ms, p99 %.3f ms at 1 session (medians of %d runs); driver CPU %.3f ms / call at %d sessions\n\n",
		c.Direct.CallsPerSecond, c.Throughput.Sessions, c.Direct.P50Ms, c.Direct.P99Ms, c.Direct.Runs, c.Direct.DriverCPUPerCallMs, c.Throughput.Sessions)
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
	heading := false
	for _, ref := range c.Variants {
		if !ref.Reference {
			continue
		}
		// Values only: a reference is what credgate is read against, not
		// something held to the goals.
		if !heading {
			fmt.Fprintln(tw, "  measured here, same run:\t\t\t\t\t\t")
			heading = true
		}
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
	nl := "\n"
	for _, v := range c.Variants {
		if (v.Name == "HTTP" || v.Name == "stdio") && v.VsReference != nil {
			writeVsReference(w, nl, v)
			nl = ""
		}
	}

	fmt.Fprintln(w)
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "  variant\tgw calls/s\tdirect calls/s\tgw p50 ms\tdirect p50 ms\tgw p99 ms\tdirect p99 ms\tCPU/call 1 session\talloc/call 1 session\tupstream child CPU/call\tdriver CPU/call\tdirect driver CPU/call\ttotal CPU/call\tnew upstream conns\tthroughput runs\terrors t/r/x/m\t")
	for _, v := range c.Variants {
		e := v.Errors
		conns := "-"
		if v.UpstreamConns != nil {
			conns = fmt.Sprintf("%d in %d calls", *v.UpstreamConns, v.GatewayCalls)
		}
		child := "-"
		if v.ChildCPUPerCallMs != nil {
			child = fmt.Sprintf("%.3f ms", *v.ChildCPUPerCallMs)
		}
		fmt.Fprintf(tw, "  %s\t%.0f\t%.0f\t%.3f\t%.3f\t%.3f\t%.3f\t%.3f ms\t%.1f KiB\t%s\t%.3f ms\t%.3f ms\t%.3f ms\t%s\t%s\t%d/%d/%d/%d\t\n",
			v.Name, v.CallsPerSecond, v.DirectCallsPerSecond, v.P50Ms, v.DirectP50Ms, v.P99Ms, v.DirectP99Ms,
			v.CPUPerCallMs1, v.AllocBytesPerCall1/1024, child, v.DriverCPUPerCallMs, v.DirectDriverCPUPerCallMs, v.TotalCPUPerCallMs,
			conns, fmtRatios(v.ThroughputRuns), e.Tool, e.RPC, e.Transport, e.Mismatch)
	}
	tw.Flush()
	fmt.Fprintln(w, "  (medians; errors: tool isError / JSON-RPC / transport / wrong echo)")
	fmt.Fprintf(w, "  (CPU/call at %d sessions, from /proc: upstream child = the processes below the gateway or proxy (the stdio\n", c.Throughput.Sessions)
	fmt.Fprintln(w, "  upstream and the helper it runs under); driver = this process in the gateway runs (load clients, and the echo")
	fmt.Fprintln(w, "  upstream for HTTP); direct driver = this process in the paired direct runs (load clients and upstream);")
	fmt.Fprintln(w, "  total = gateway (the table above) + upstream child + driver, against direct driver for a direct call)")
}

// writeVsReference prints the line comparing credgate's variant v with the
// reference row of the same run (the figures it is made of are the two
// rows above it).
func writeVsReference(w io.Writer, before string, v variantReport) {
	x := v.VsReference
	fmt.Fprintf(w, "%s  credgate, %s vs %s, same run: CPU / call %.2fx, throughput %.2fx, added p50 %+.3f ms, allocated / call %.2fx\n",
		before, v.Name, x.Reference, x.CPUPerCallRatio, x.ThroughputRatio, x.AddedP50Ms, x.AllocRatio)
}

func fmtRatios(v []float64) string {
	parts := make([]string, len(v))
	for i, x := range v {
		parts[i] = fmt.Sprintf("%.2f", x)
	}
	return strings.Join(parts, " ")
}
