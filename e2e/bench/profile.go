package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// profileReport is a CPU and allocation profile of the gateway during an
// extra run of the HTTP throughput scenario, summarised by `go tool pprof`.
type profileReport struct {
	Variant   string  `json:"variant"`
	Scenario  string  `json:"scenario"`
	Seconds   float64 `json:"seconds"` // length of the CPU profile
	Dir       string  `json:"dir"`     // raw profiles: cpu.pb.gz, allocs-before.pb.gz, allocs-after.pb.gz
	Calls     int     `json:"calls"`   // calls made while profiling
	ElapsedMs float64 `json:"elapsed_ms"`
	// CPU and allocation per call over the calls (the process's /proc and
	// /metrics, not the profile's samples).
	CPUPerCallMs      float64 `json:"cpu_per_call_ms"`
	AllocBytesPerCall float64 `json:"alloc_bytes_per_call"`
	// CPUSplit divides the CPU profile's samples among categories
	// (profilesplit.go).
	CPUSplit []cpuShare `json:"cpu_split"`
	// `go tool pprof -top` lines: the table's header and its rows.
	TopFlat  []string `json:"top_flat"`
	TopCum   []string `json:"top_cum"`
	TopAlloc []string `json:"top_alloc_space"` // allocs-after minus allocs-before, by bytes
}

// profileTop is how many functions each summary lists.
const profileTop = 15

// runProfile starts a gateway of the variant --profile-variant names (HTTP
// by default) and profiles it
// while the throughput scenario runs long enough to cover the profile.
func runProfile(ctx context.Context, hc *http.Client, bin string, p plan, o options, rep *report, logf func(string, ...any)) *profileReport {
	var v variant
	for _, c := range allVariants() {
		if c.Name == o.profileOf {
			v = c
		}
	}
	if v.Name == "" {
		rep.fail("profile", fmt.Errorf("--profile-variant %q: no such variant", o.profileOf))
		return nil
	}
	dir := o.profileDir
	if dir == "" {
		var err error
		if dir, err = os.MkdirTemp("", "credgate-bench-profile-"); err != nil {
			rep.fail("profile", err)
			return nil
		}
	} else if err := os.MkdirAll(dir, 0o755); err != nil {
		rep.fail("profile", err)
		return nil
	}
	sc := p.scenarios[len(p.scenarios)-1] // the throughput scenario (--sessions 1: one session)
	for _, s := range p.scenarios {
		if s.sessions > 1 {
			sc = s
		}
	}
	// Enough calls per session to outlast the profile: the variant's
	// measured throughput, if any, with a margin for a slower machine.
	rate := 2000.0
	if rep.Calls != nil {
		for _, vr := range rep.Calls.Variants {
			if vr.Name == v.Name && vr.CallsPerSecond > 0 {
				rate = vr.CallsPerSecond
			}
		}
	}
	sc.calls = int(math.Ceil(rate * (o.profileFor.Seconds() + 1) * 1.3 / float64(sc.sessions)))
	sc.name = fmt.Sprintf("%dx%d", sc.sessions, sc.calls)
	logf("profile: %s, %s, CPU profile of %s", v.Name, sc.name, o.profileFor)

	var self string
	if v.Stdio {
		var err error
		if self, err = stdioCommand(); err != nil {
			rep.fail("profile: gateway start", err)
			return nil
		}
	}
	g, err := startEchoGateway(ctx, hc, bin, v, self)
	if err != nil {
		rep.fail("profile: gateway start", err)
		return nil
	}
	defer g.Close()
	pr := &profileReport{Variant: v.Name, Scenario: sc.name, Seconds: o.profileFor.Seconds(), Dir: dir}
	cpuDone := make(chan error, 1)
	var (
		aw                 allocWindow
		alloc              float64
		t0, t1             int64
		errs               []error
		errAlloc, errTicks error
		profiling          bool // the CPU profile was started
	)
	h := hooks{
		before: func() {
			aw.begin(ctx, hc, g.proc)
			errs = append(errs, g.proc.saveProfile(ctx, hc, "/debug/pprof/allocs", filepath.Join(dir, "allocs-before.pb.gz"), 10*time.Second))
			t0, errTicks = g.proc.cpuTicks()
			profiling = true
			go func() {
				path := fmt.Sprintf("/debug/pprof/profile?seconds=%d", int(o.profileFor.Seconds()))
				cpuDone <- g.proc.saveProfile(ctx, hc, path, filepath.Join(dir, "cpu.pb.gz"), o.profileFor+30*time.Second)
			}()
		},
		after: func() {
			var err error
			t1, err = g.proc.cpuTicks()
			errTicks = errors.Join(errTicks, err)
			alloc, errAlloc = aw.end(ctx, hc, g.proc)
			errs = append(errs, g.proc.saveProfile(ctx, hc, "/debug/pprof/allocs", filepath.Join(dir, "allocs-after.pb.gz"), 10*time.Second))
		},
	}
	lr, err := runLoad(ctx, hc, target{endpoint: g.proc.endpoint(), tool: "echo__echo"}, sc, h)
	if profiling {
		errs = append(errs, <-cpuDone)
	}
	if err := errors.Join(append(errs, err, errAlloc, errTicks)...); err != nil {
		rep.fail("profile", err)
		return nil
	}
	rep.checkCalls("profile "+sc.name, lr)
	pr.Calls, pr.ElapsedMs = lr.calls, ms(lr.elapsed)
	pr.CPUPerCallMs = div(ms(ticksDuration(t1-t0)), float64(lr.calls))
	pr.AllocBytesPerCall = div(alloc, float64(lr.calls))

	top := func(args ...string) []string {
		lines, err := pprofTop(ctx, args...)
		if err != nil {
			rep.fail("profile: go tool pprof", err)
		}
		return lines
	}
	cpu := filepath.Join(dir, "cpu.pb.gz")
	if pr.CPUSplit, err = cpuSplit(ctx, cpu); err != nil {
		rep.fail("profile: CPU split", err)
	}
	pr.TopFlat = top(cpu)
	pr.TopCum = top("-cum", cpu)
	pr.TopAlloc = top("-sample_index=alloc_space", "-base", filepath.Join(dir, "allocs-before.pb.gz"), filepath.Join(dir, "allocs-after.pb.gz"))
	return pr
}

// saveProfile fetches a pprof endpoint into file.
func (g *gatewayProc) saveProfile(ctx context.Context, hc *http.Client, path, file string, timeout time.Duration) error {
	body, err := g.fetch(ctx, hc, path, timeout)
	if err != nil {
		return err
	}
	return os.WriteFile(file, body, 0o644)
}

// pprofTop runs `go tool pprof -top` and returns the table: its "flat
// flat% ..." header and the profileTop rows, with the summary line above.
func pprofTop(ctx context.Context, args ...string) ([]string, error) {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "go", append([]string{"tool", "pprof", "-top", fmt.Sprintf("-nodecount=%d", profileTop)}, args...)...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("go tool pprof %s: %w\n%s", strings.Join(args, " "), err, stderr.String())
	}
	return pprofTable(string(out)), nil
}

// pprofTable keeps the lines of `pprof -top` output from "Showing nodes"
// on, dropping the file, type and time header and the "Dropped" notes.
func pprofTable(out string) []string {
	var lines []string
	keep := false
	for line := range strings.Lines(out) {
		line = strings.TrimRight(line, "\n")
		if strings.HasPrefix(line, "Showing nodes") || strings.HasPrefix(line, "Duration:") {
			keep = true
		}
		if !keep || strings.HasPrefix(line, "Dropped ") || strings.HasPrefix(line, "Showing top") {
			continue
		}
		lines = append(lines, shortenGenerics(line))
	}
	return lines
}

func (p *profileReport) writeText(w io.Writer) {
	fmt.Fprintf(w, "CPU profile of the gateway (%s upstream, %s, %.0f s of it profiled): %d calls, %.3f ms CPU and %.1f KiB allocated per call\n",
		p.Variant, p.Scenario, p.Seconds, p.Calls, p.CPUPerCallMs, p.AllocBytesPerCall/1024)
	fmt.Fprintf(w, "raw profiles: %s (go tool pprof -http=: %s)\n", p.Dir, filepath.Join(p.Dir, "cpu.pb.gz"))
	if len(p.CPUSplit) > 0 {
		parts := make([]string, len(p.CPUSplit))
		for i, s := range p.CPUSplit {
			parts[i] = fmt.Sprintf("%s %.0f%%", s.Category, s.Percent)
		}
		fmt.Fprintf(w, "  CPU by where it is spent (each sample counted once, first match): %s\n", strings.Join(parts, "; "))
	}
	for _, b := range []struct {
		title string
		lines []string
	}{
		{fmt.Sprintf("top %d by flat CPU", profileTop), p.TopFlat},
		{fmt.Sprintf("top %d by cumulative CPU", profileTop), p.TopCum},
		{fmt.Sprintf("top %d by bytes allocated during the run", profileTop), p.TopAlloc},
	} {
		fmt.Fprintf(w, "  %s:\n", b.title)
		for _, l := range b.lines {
			fmt.Fprintf(w, "    %s\n", l)
		}
	}
}
