package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/modelcontextprotocol/go-sdk/mcp"
	"go.yaml.in/yaml/v3"
)

// TestMain lets the test binary be the stdio echo server, as the bench
// binary is for a stdio variant's gateway.
func TestMain(m *testing.M) {
	if os.Getenv(stdioEnv) == "1" {
		os.Exit(serveStdio(os.Stderr))
	}
	os.Exit(m.Run())
}

// TestStdioEcho runs this binary as the stdio upstream the way a gateway
// does (the environment variable, no arguments) and checks it serves the
// HTTP upstream's tool: same name, schema and echo.
func TestStdioEcho(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	self, err := stdioCommand()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(self)
	cmd.Env = append(os.Environ(), stdioEnv+"=1")
	c := mcp.NewClient(&mcp.Implementation{Name: "test", Version: "1"}, nil)
	cs, err := c.Connect(ctx, &mcp.CommandTransport{Command: cmd}, nil)
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	defer cs.Close()
	tools, err := cs.ListTools(ctx, nil)
	if err != nil {
		t.Fatalf("tools/list: %v", err)
	}
	if len(tools.Tools) != 1 || tools.Tools[0].Name != "echo" {
		t.Fatalf("tools = %+v, want one named echo", tools.Tools)
	}
	schema, err := json.Marshal(tools.Tools[0].InputSchema)
	if err != nil {
		t.Fatal(err)
	}
	var got, want any
	if err := json.Unmarshal(schema, &got); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(echoInputSchema, &want); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("input schema mismatch (-want +got):\n%s", diff)
	}
	w := newWorker(cs, func(int) string { return "echo" }, 0)
	w.run(ctx, 5)
	if w.errors.total() != 0 || len(w.latencies) != 5 {
		t.Errorf("5 echo calls: %d made, errors %+v", len(w.latencies), w.errors)
	}
}

// TestWriteEchoConfig checks every variant's config names the transport and
// statelessness the variant names.
func TestWriteEchoConfig(t *testing.T) {
	t.Parallel()
	for _, v := range allVariants() {
		t.Run(v.Name, func(t *testing.T) {
			t.Parallel()
			path, err := writeEchoConfig(t.TempDir(), v, "http://127.0.0.1:1/mcp", "/path with space/bench")
			if err != nil {
				t.Fatal(err)
			}
			data, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			// The bench is a module of its own (go-sdk as released), so it
			// reads its configs as YAML; every run loads them in the gateway.
			var cfg struct {
				Stateless bool `yaml:"stateless"`
				Admin     struct {
					Pprof bool `yaml:"pprof"`
				} `yaml:"admin"`
				Upstreams map[string]struct {
					Transport string            `yaml:"transport"`
					Command   string            `yaml:"command"`
					URL       string            `yaml:"url"`
					Env       map[string]string `yaml:"env"`
				} `yaml:"upstreams"`
			}
			if err := yaml.Unmarshal(data, &cfg); err != nil {
				t.Fatalf("config is not YAML: %v", err)
			}
			u := cfg.Upstreams["echo"]
			type shape struct {
				Stateless, Pprof   bool
				Transport, Command string
				URL, Env           string
			}
			got := shape{cfg.Stateless, cfg.Admin.Pprof, u.Transport, u.Command, u.URL, u.Env[stdioEnv]}
			want := shape{Stateless: v.Stateless, Pprof: true, Transport: v.upstreamTransport()}
			if v.Stdio {
				want.Command, want.Env = "/path with space/bench", "1"
			} else {
				want.URL = "http://127.0.0.1:1/mcp"
			}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("config mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

func TestParseAllocBytes(t *testing.T) {
	t.Parallel()
	body := `# HELP go_memstats_alloc_bytes Number of bytes allocated in heap and currently in use.
# TYPE go_memstats_alloc_bytes gauge
go_memstats_alloc_bytes 1.2e+06
# HELP go_memstats_alloc_bytes_total Total number of bytes allocated in heap until now, even if released already.
# TYPE go_memstats_alloc_bytes_total counter
go_memstats_alloc_bytes_total 3.696216e+06
`
	got, err := parseAllocBytes([]byte(body))
	if err != nil || got != 3696216 {
		t.Errorf("parseAllocBytes = %v, %v; want 3696216", got, err)
	}
	if _, err := parseAllocBytes([]byte("go_memstats_alloc_bytes 5\n")); err == nil {
		t.Error("parseAllocBytes without the counter: no error")
	}
}

func TestPprofTable(t *testing.T) {
	t.Parallel()
	out := `File: gateway
Type: cpu
Time: 2026-12-01 01:00:00 UTC
Duration: 4.02s, Total samples = 1800ms (44.79%)
Showing nodes accounting for 830ms, 46.11% of 1800ms total
Dropped 200 nodes (cum <= 9ms)
Showing top 15 nodes out of 300
      flat  flat%   sum%        cum   cum%
     290ms 16.11% 16.11%      290ms 16.11%  internal/runtime/syscall/linux.Syscall6
`
	want := []string{
		"Duration: 4.02s, Total samples = 1800ms (44.79%)",
		"Showing nodes accounting for 830ms, 46.11% of 1800ms total",
		"      flat  flat%   sum%        cum   cum%",
		"     290ms 16.11% 16.11%      290ms 16.11%  internal/runtime/syscall/linux.Syscall6",
	}
	if diff := cmp.Diff(want, pprofTable(out)); diff != "" {
		t.Errorf("pprofTable mismatch (-want +got):\n%s", diff)
	}
}

func TestMedian(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		in   []float64
		want float64
	}{{nil, 0}, {[]float64{3}, 3}, {[]float64{3, 1, 2}, 2}, {[]float64{4, 1, 3, 2}, 2.5}} {
		if got := median(tc.in); got != tc.want {
			t.Errorf("median(%v) = %v, want %v", tc.in, got, tc.want)
		}
	}
}

// TestNewCallsReport summarises made-up pairs: medians of per-run ratios,
// totals per call, connections only for HTTP, and the goal per transport.
func TestNewCallsReport(t *testing.T) {
	t.Parallel()
	load, gw := fakeLoad, fakeGateway
	scs := []scenario{{name: "1x10", sessions: 1, calls: 10}, {name: "2x5", sessions: 2, calls: 5}}
	d := &callsData{scenarios: scs, variants: []variant{{Name: "HTTP"}, {Name: "stdio", Stdio: true}}}
	// Direct: 10 calls in 10 ms (1000/s), p50 0.1 ms. HTTP gateway runs at
	// 0.5x, 0.8x, 0.9x of it; stdio at 1.2x.
	dThr, dLat := load(10, 10*time.Millisecond, 100*time.Microsecond), load(10, 10*time.Millisecond, 100*time.Microsecond)
	http := [][]pairResult{
		{
			{direct: dLat, gw: gw(load(10, time.Second, 250*time.Microsecond), time.Millisecond, 0, 0)},
			{direct: dLat, gw: gw(load(10, time.Second, 200*time.Microsecond), time.Millisecond, 0, 0)},
			{direct: dLat, gw: gw(load(10, time.Second, 400*time.Microsecond), time.Millisecond, 0, 0)},
		},
		{
			{direct: dThr, gw: gw(load(10, 20*time.Millisecond, 0), time.Millisecond, 0, 10*1024)},
			{direct: dThr, gw: gw(load(10, 12500*time.Microsecond, 0), 2*time.Millisecond, 1, 20*1024)},
			{direct: dThr, gw: gw(load(10, 11111*time.Microsecond, 0), 3*time.Millisecond, 0, 30*1024)},
		},
	}
	stdio := [][]pairResult{
		{{direct: dLat, gw: gw(load(10, time.Second, 150*time.Microsecond), time.Millisecond, 0, 0)}},
		{{direct: dThr, gw: gw(load(12, 10*time.Millisecond, 0), 1200*time.Microsecond, 0, 12*1024)}},
	}
	d.pairs = [][][]pairResult{http, stdio}
	r := newCallsReport(d)

	type row struct {
		Name                   string
		Throughput, AddedP50Ms float64
		CPUPerCallMs           float64
		AllocKiB               float64
		Conns                  *int64
		Calls                  int
	}
	one := int64(1)
	var got []row
	for _, v := range r.Variants {
		got = append(got, row{v.Name, round(v.Throughput), round(v.AddedP50Ms), round(v.CPUPerCallMs), round(v.AllocBytesPerCall / 1024), v.UpstreamConns, v.GatewayCalls})
	}
	want := []row{
		{"HTTP", 0.8, 0.15, 0.2, 2, &one, 60},
		{"stdio", 1.2, 0.05, 0.1, 1, nil, 22},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("variants mismatch (-want +got):\n%s", diff)
	}
	if r.Runs != 3 || r.Direct.Runs != 4 {
		t.Errorf("runs = %d, direct runs = %d; want 3 and 4", r.Runs, r.Direct.Runs)
	}

	var status []string
	for _, v := range r.Variants {
		for _, tg := range v.targets(r) {
			status = append(status, v.Name+": "+tg.Name+" "+tg.Goal+" "+tg.Status)
		}
	}
	wantStatus := []string{
		"HTTP: throughput, 2 sessions >= 0.72x PASS",
		"HTTP: added p50, 1 session <= 0.20 ms PASS",
		"HTTP: gateway CPU per call <= 0.13 ms MISS",
		"HTTP: new upstream conns per 100 calls = 0 MISS",
		"HTTP: allocated per call <= 25 KiB PASS",
		"stdio: throughput, 2 sessions >= 1.15x PASS",
		"stdio: added p50, 1 session <= 0.20 ms PASS",
		"stdio: gateway CPU per call <= 0.13 ms PASS",
		"stdio: new upstream conns per 100 calls - n/a",
		"stdio: allocated per call <= 25 KiB PASS",
	}
	if diff := cmp.Diff(wantStatus, status); diff != "" {
		t.Errorf("targets mismatch (-want +got):\n%s", diff)
	}

	var text bytes.Buffer
	r.writeText(&text)
	for _, s := range []string{"credgate, HTTP", "credgate, stdio", "published in issue 12, not measured here", "TBXark/mcp-proxy", "minimal Go reverse proxy"} {
		if !strings.Contains(text.String(), s) {
			t.Errorf("text lacks %q:\n%s", s, text.String())
		}
	}
	if _, err := json.Marshal(r); err != nil {
		t.Errorf("json: %v", err)
	}
}

// fakeLoad is a load run of calls calls taking elapsed, every one p50 long.
func fakeLoad(calls int, elapsed, p50 time.Duration) loadResult {
	lat := make([]time.Duration, calls)
	for i := range lat {
		lat[i] = p50
	}
	return loadResult{calls: calls, elapsed: elapsed, latencies: newStats(lat)}
}

func fakeGateway(lr loadResult, cpu time.Duration, conns int64, alloc float64) *gatewayResult {
	return &gatewayResult{loadResult: lr, cpu: cpu, conns: conns, allocBytes: alloc}
}

// referenceCalls is made-up pairs for credgate's HTTP variant and the
// reference row; the reference misses every goal. Direct: 10 calls in
// 10 ms, p50 0.1 ms. HTTP: 0.4x, +0.5 ms, 0.3 ms CPU and 60 KiB per call.
// Reference: 0.5x, +0.3 ms, 0.2 ms CPU, 30 KiB and 1 new connection.
func referenceCalls(withRef bool) *callsData {
	scs := []scenario{{name: "1x10", sessions: 1, calls: 10}, {name: "2x5", sessions: 2, calls: 5}}
	direct := fakeLoad(10, 10*time.Millisecond, 100*time.Microsecond)
	pair := func(p50, elapsed, cpu time.Duration, conns int64, allocKiB float64) [][]pairResult {
		return [][]pairResult{
			{{direct: direct, gw: fakeGateway(fakeLoad(10, time.Second, p50), cpu, 0, 0)}},
			{{direct: direct, gw: fakeGateway(fakeLoad(10, elapsed, 0), cpu, conns, allocKiB*1024)}},
		}
	}
	d := &callsData{
		scenarios: scs,
		variants:  []variant{{Name: "HTTP"}},
		pairs:     [][][]pairResult{pair(600*time.Microsecond, 25*time.Millisecond, 3*time.Millisecond, 0, 600)},
	}
	if withRef {
		d.variants = append(d.variants, variant{Name: referenceName, Ref: true})
		d.pairs = append(d.pairs, pair(400*time.Microsecond, 20*time.Millisecond, 2*time.Millisecond, 1, 300))
	}
	return d
}

// TestReferenceRow checks the minimal proxy's row is printed with its
// values, under its own heading between credgate's rows and issue 12's,
// is held to no goal (it misses all of them here, and no target names it),
// and that the comparison line and vs_reference carry credgate's HTTP
// figures against it.
func TestReferenceRow(t *testing.T) {
	t.Parallel()
	rep := &report{Calls: newCallsReport(referenceCalls(true))}
	rep.evaluate()

	for _, tg := range rep.Targets {
		if tg.Variant == referenceName {
			t.Errorf("target %q of the reference row is evaluated: %+v", tg.Name, tg)
		}
	}
	var misses []string
	for _, tg := range rep.Targets {
		if tg.Status == "MISS" {
			misses = append(misses, tg.Variant+": "+tg.Name)
		}
	}
	wantMisses := []string{
		"HTTP: throughput, 2 sessions",
		"HTTP: added p50, 1 session",
		"HTTP: gateway CPU per call",
		"HTTP: allocated per call",
	}
	if diff := cmp.Diff(wantMisses, misses); diff != "" {
		t.Errorf("missed targets mismatch (-want +got):\n%s", diff)
	}

	c := rep.Calls
	if n := len(c.Variants); n != 2 {
		t.Fatalf("%d variants, want 2", n)
	}
	if !c.Variants[1].Reference || c.Variants[0].Reference || c.Variants[1].VsReference != nil {
		t.Errorf("reference flags: HTTP %t, reference %t (vs_reference %+v)", c.Variants[0].Reference, c.Variants[1].Reference, c.Variants[1].VsReference)
	}
	x := c.Variants[0].VsReference
	if x == nil {
		t.Fatal("HTTP has no vs_reference")
	}
	got := referenceComparison{x.Reference, round(x.CPUPerCallRatio), round(x.ThroughputRatio), round(x.AddedP50Ms), round(x.AllocRatio)}
	want := referenceComparison{Reference: referenceName, CPUPerCallRatio: 1.5, ThroughputRatio: 0.8, AddedP50Ms: 0.2, AllocRatio: 2}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("vs_reference mismatch (-want +got):\n%s", diff)
	}

	var buf bytes.Buffer
	c.writeText(&buf)
	text := buf.String()
	var order []string
	for line := range strings.Lines(text) {
		for _, s := range []string{"credgate, HTTP ", "measured here, same run:", referenceName, "published in issue 12"} {
			if strings.HasPrefix(strings.TrimSpace(line), s) {
				order = append(order, s)
			}
		}
		if strings.Contains(line, referenceName) && (strings.Contains(line, "PASS") || strings.Contains(line, "MISS")) {
			t.Errorf("reference line has a status: %q", line)
		}
	}
	// Then the comparison line, and the reference again in the details table.
	wantOrder := []string{"credgate, HTTP ", "measured here, same run:", referenceName, "published in issue 12", "credgate, HTTP ", referenceName}
	if diff := cmp.Diff(wantOrder, order); diff != "" {
		t.Errorf("row order mismatch (-want +got):\n%s\n%s", diff, text)
	}
	var refRow []string
	for line := range strings.Lines(text) {
		if rest, ok := strings.CutPrefix(strings.TrimSpace(line), referenceName); ok && refRow == nil {
			refRow = strings.Fields(rest)
		}
	}
	// One new connection in 20 calls is 5 per 100.
	wantRow := []string{"0.50x", "+0.300", "ms", "0.200", "ms", "5.00", "30.0", "KiB"}
	if diff := cmp.Diff(wantRow, refRow); diff != "" {
		t.Errorf("reference row mismatch (-want +got):\n%s", diff)
	}
	line := "credgate, HTTP vs " + referenceName + ", same run: CPU / call 1.50x, throughput 0.80x, added p50 +0.200 ms, allocated / call 2.00x\n"
	if !strings.Contains(text, line) {
		t.Errorf("text lacks %q:\n%s", line, text)
	}

	data, err := json.Marshal(rep)
	if err != nil {
		t.Fatal(err)
	}
	var js struct {
		Calls struct {
			Variants []struct {
				Name        string          `json:"name"`
				Reference   bool            `json:"reference"`
				VsReference json.RawMessage `json:"vs_reference"`
			} `json:"variants"`
		} `json:"calls"`
	}
	if err := json.Unmarshal(data, &js); err != nil {
		t.Fatal(err)
	}
	type jsRow struct {
		Name          string
		Reference, Vs bool
	}
	var rows []jsRow
	for _, v := range js.Calls.Variants {
		rows = append(rows, jsRow{v.Name, v.Reference, v.VsReference != nil})
	}
	wantRows := []jsRow{{"HTTP", false, true}, {referenceName, true, false}}
	if diff := cmp.Diff(wantRows, rows); diff != "" {
		t.Errorf("json variants mismatch (-want +got):\n%s", diff)
	}
}

// TestNoReference checks --reference=false (and a run without the HTTP or
// the stdio variant) plans no reference row, the default plans each once,
// last, HTTP first, with no @compare copy, and a report without one prints
// neither its heading nor the comparison line.
func TestNoReference(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		args []string
		want []string
	}{
		{nil, []string{"HTTP", "HTTP stateless", "stdio", "stdio stateless", "HTTP, fast_path off", "stdio 2025-11-25", referenceName, stdioReferenceName}},
		{[]string{"--reference=false"}, []string{"HTTP", "HTTP stateless", "stdio", "stdio stateless", "HTTP, fast_path off", "stdio 2025-11-25"}},
		{[]string{"--variants", "HTTP"}, []string{"HTTP", referenceName}},
		{[]string{"--variants", "HTTP", "--reference=false"}, []string{"HTTP"}},
		{[]string{"--variants", "stdio,HTTP stateless"}, []string{"HTTP stateless", "stdio", stdioReferenceName}},
		{[]string{"--variants", "stdio,HTTP"}, []string{"HTTP", "stdio", referenceName, stdioReferenceName}},
		{[]string{"--variants", "stdio stateless,HTTP stateless"}, []string{"HTTP stateless", "stdio stateless"}},
		{[]string{"--variants", "stdio", "--reference=false"}, []string{"stdio"}},
		{[]string{"--variants", "HTTP", "--compare", "/bin/old"}, []string{"HTTP", "HTTP @compare", referenceName}},
	} {
		o, err := parseFlags(tc.args)
		if err != nil {
			t.Errorf("parseFlags(%q): %v", tc.args, err)
			continue
		}
		var got []string
		for _, v := range newPlan(o).variants {
			if v.Ref != (v.Name == referenceName || v.Name == stdioReferenceName) || v.Ref && v.Stdio != (v.Name == stdioReferenceName) {
				t.Errorf("%q: variant %q has Ref %t, Stdio %t", tc.args, v.Name, v.Ref, v.Stdio)
			}
			got = append(got, v.Name)
		}
		if diff := cmp.Diff(tc.want, got); diff != "" {
			t.Errorf("%q: variants mismatch (-want +got):\n%s", tc.args, diff)
		}
	}

	c := newCallsReport(referenceCalls(false))
	if c.Variants[0].VsReference != nil {
		t.Errorf("vs_reference without a reference: %+v", c.Variants[0].VsReference)
	}
	var buf bytes.Buffer
	c.writeText(&buf)
	for _, s := range []string{"measured here, same run", referenceName, "same run:"} {
		if strings.Contains(buf.String(), s) {
			t.Errorf("text without a reference has %q:\n%s", s, buf.String())
		}
	}
}

func round(f float64) float64 { return float64(int64(f*1000+0.5)) / 1000 }

func TestSplitTraces(t *testing.T) {
	t.Parallel()
	out := `File: gw-bench
Type: cpu
Duration: 4s, Total samples = 1.63s (40.75%)
-----------+-------------------------------------------------------
      10ms   runtime.scanobject
             runtime.gcDrain
             runtime.gcBgMarkWorker
-----------+-------------------------------------------------------
      30ms   internal/runtime/syscall/linux.Syscall6
             syscall.Syscall
             net.(*conn).Write
             net/http.(*conn).serve
-----------+-------------------------------------------------------
      20ms   encoding/json.Unmarshal
             github.com/modelcontextprotocol/go-sdk/internal/json.Unmarshal
             github.com/credgate/credgate/gateway.(*Server).callTool
-----------+-------------------------------------------------------
      10ms   github.com/credgate/credgate/gateway.(*Server).callTool
             github.com/modelcontextprotocol/go-sdk/mcp.(*Server).callTool
-----------+-------------------------------------------------------
      20ms   net/textproto.readMIMEHeader
             net/http.readRequest
-----------+-------------------------------------------------------
      10ms   runtime.findRunnable
             runtime.schedule
-----------+-------------------------------------------------------
    1.20ms   strconv.Itoa
             main.main
-----------+-------------------------------------------------------
`
	got, err := splitTraces(out)
	if err != nil {
		t.Fatal(err)
	}
	var shares []string
	for _, s := range got {
		shares = append(shares, fmt.Sprintf("%s %.1f", s.Category, s.Ms))
	}
	want := []string{
		"garbage collection 10.0",
		"syscalls (leaf) 30.0",
		"credgate's own code (leaf) 10.0",
		"under go-sdk frames 20.0",
		"under net/http frames (no go-sdk) 20.0",
		"other runtime (scheduler, malloc) 10.0",
		"other 1.2",
	}
	if diff := cmp.Diff(want, shares); diff != "" {
		t.Errorf("split mismatch (-want +got):\n%s", diff)
	}
	if _, err := splitTraces("File: x\n"); err == nil {
		t.Error("splitTraces without samples: no error")
	}
}

func TestShortenGenerics(t *testing.T) {
	t.Parallel()
	in := `  0.41s 25.15%  github.com/modelcontextprotocol/go-sdk/mcp.newServerMethodInfo[go.shape.*mcp.CallToolParamsRaw,go.shape.struct { Meta "json:\"_meta,omitempty\""; X []byte }].func2`
	want := `  0.41s 25.15%  github.com/modelcontextprotocol/go-sdk/mcp.newServerMethodInfo[...].func2`
	if got := shortenGenerics(in); got != want {
		t.Errorf("shortenGenerics = %q, want %q", got, want)
	}
}

// stdioReferenceCalls is made-up pairs for credgate's HTTP and stdio
// variants and both reference rows, with every process's CPU. Direct: 10
// calls in 10 ms, p50 0.1 ms, driver 0.2 ms CPU per call at 2 sessions.
// Per call at 2 sessions (gateway / child / driver CPU):
//
//	HTTP                 0.4x  0.30 / -    / 0.25  60 KiB
//	stdio                0.4x  0.20 / 0.15 / 0.10  40 KiB
//	reference, HTTP      0.8x  0.10 / -    / 0.25  30 KiB
//	reference, stdio     0.8x  0.05 / 0.15 / 0.10  10 KiB
func stdioReferenceCalls() *callsData {
	scs := []scenario{{name: "1x10", sessions: 1, calls: 10}, {name: "2x5", sessions: 2, calls: 5}}
	direct := fakeLoad(10, 10*time.Millisecond, 100*time.Microsecond)
	direct.driverCPU = 2 * time.Millisecond
	pair := func(p50 time.Duration, elapsed time.Duration, cpu, child, driver time.Duration, allocKiB float64) [][]pairResult {
		thr := fakeGateway(fakeLoad(10, elapsed, 0), cpu, 0, allocKiB*1024)
		thr.childCPU, thr.driverCPU = child, driver
		return [][]pairResult{
			{{direct: direct, gw: fakeGateway(fakeLoad(10, time.Second, p50), time.Millisecond, 0, 0)}},
			{{direct: direct, gw: thr}},
		}
	}
	ms := time.Millisecond
	return &callsData{
		scenarios: scs,
		variants: []variant{
			{Name: "HTTP"}, {Name: "stdio", Stdio: true},
			{Name: referenceName, Ref: true}, {Name: stdioReferenceName, Ref: true, Stdio: true},
		},
		pairs: [][][]pairResult{
			pair(600*time.Microsecond, 25*ms, 3*ms, 0, 2500*time.Microsecond, 600),
			pair(300*time.Microsecond, 25*ms, 2*ms, 1500*time.Microsecond, ms, 400),
			pair(400*time.Microsecond, 12500*time.Microsecond, ms, 0, 2500*time.Microsecond, 300),
			pair(200*time.Microsecond, 12500*time.Microsecond, ms/2, 1500*time.Microsecond, ms, 100),
		},
	}
}

// TestStdioReferenceRow checks the stdio reference row is printed after the
// HTTP one under the one heading, is held to no goal, and is what credgate's
// stdio variant is compared with (its own line after the HTTP one, and
// vs_reference); and that every variant reports its upstream child's (stdio
// only), the driver's and the total CPU per call beside the direct runs'
// driver CPU, in the detail table and in --json.
func TestStdioReferenceRow(t *testing.T) {
	t.Parallel()
	rep := &report{Calls: newCallsReport(stdioReferenceCalls())}
	rep.evaluate()
	for _, tg := range rep.Targets {
		if strings.Contains(tg.Variant, "reference") {
			t.Errorf("target %q of a reference row is evaluated: %+v", tg.Name, tg)
		}
	}
	c := rep.Calls

	type vs struct {
		Reference                          string
		CPU, Throughput, AddedP50Ms, Alloc float64
	}
	var gotVs []vs
	for _, v := range c.Variants {
		if x := v.VsReference; x != nil {
			gotVs = append(gotVs, vs{x.Reference, round(x.CPUPerCallRatio), round(x.ThroughputRatio), round(x.AddedP50Ms), round(x.AllocRatio)})
		}
	}
	wantVs := []vs{{referenceName, 3, 0.5, 0.2, 2}, {stdioReferenceName, 4, 0.5, 0.1, 4}}
	if diff := cmp.Diff(wantVs, gotVs); diff != "" {
		t.Errorf("vs_reference mismatch (-want +got):\n%s", diff)
	}

	var buf bytes.Buffer
	c.writeText(&buf)
	text := buf.String()
	if !strings.Contains(text, "; driver CPU 0.200 ms / call at 2 sessions\n") {
		t.Errorf("direct line lacks the driver's CPU:\n%s", text)
	}
	if n := strings.Count(text, "measured here, same run:"); n != 1 {
		t.Errorf("%d reference headings, want 1:\n%s", n, text)
	}
	lines := "\n" +
		"  credgate, HTTP vs " + referenceName + ", same run: CPU / call 3.00x, throughput 0.50x, added p50 +0.200 ms, allocated / call 2.00x\n" +
		"  credgate, stdio vs " + stdioReferenceName + ", same run: CPU / call 4.00x, throughput 0.50x, added p50 +0.100 ms, allocated / call 4.00x\n"
	if !strings.Contains(text, lines) {
		t.Errorf("text lacks the comparison lines %q:\n%s", lines, text)
	}
	// The rows of both tables, as fields after the name: the targets
	// table's first (values only for the references), then the details'.
	rows := map[string][][]string{}
	for line := range strings.Lines(text) {
		line = strings.TrimSpace(line)
		for _, name := range []string{"credgate, stdio", "HTTP", "stdio", referenceName, stdioReferenceName} {
			if rest, ok := strings.CutPrefix(line, name+" "); ok && !strings.Contains(line, " vs ") {
				rows[name] = append(rows[name], strings.Fields(rest))
			}
		}
	}
	target := func(name string) []string {
		if len(rows[name]) == 0 {
			return nil
		}
		return rows[name][0]
	}
	if diff := cmp.Diff([]string{"0.80x", "+0.100", "ms", "0.050", "ms", "-", "10.0", "KiB"}, target(stdioReferenceName)); diff != "" {
		t.Errorf("stdio reference row mismatch (-want +got):\n%s", diff)
	}
	// The details: upstream child, driver, direct driver and total CPU per
	// call follow the allocation at 1 session.
	cpu := func(name string) []string {
		rs := rows[name]
		if len(rs) == 0 {
			return nil
		}
		f := rs[len(rs)-1]
		i := slices.Index(f, "KiB")
		if i < 0 || i+9 > len(f) {
			return f
		}
		return f[i+1 : i+9]
	}
	for name, want := range map[string][]string{
		"HTTP":             {"-", "0.250", "ms", "0.200", "ms", "0.550", "ms", "0"},
		"stdio":            {"0.150", "ms", "0.100", "ms", "0.200", "ms", "0.450", "ms"},
		referenceName:      {"-", "0.250", "ms", "0.200", "ms", "0.350", "ms", "0"},
		stdioReferenceName: {"0.150", "ms", "0.100", "ms", "0.200", "ms", "0.300", "ms"},
	} {
		if diff := cmp.Diff(want, cpu(name)); diff != "" {
			t.Errorf("%s: details CPU mismatch (-want +got):\n%s", name, diff)
		}
	}

	data, err := json.Marshal(rep)
	if err != nil {
		t.Fatal(err)
	}
	var js struct {
		Calls struct {
			Direct struct {
				Driver float64 `json:"driver_cpu_per_call_ms"`
			} `json:"direct"`
			Variants []struct {
				Name        string   `json:"name"`
				Child       *float64 `json:"upstream_child_cpu_per_call_ms"`
				Driver      float64  `json:"driver_cpu_per_call_ms"`
				Direct      float64  `json:"direct_driver_cpu_per_call_ms"`
				Total       float64  `json:"total_cpu_per_call_ms"`
				VsReference *struct {
					Reference string `json:"reference"`
				} `json:"vs_reference"`
			} `json:"variants"`
		} `json:"calls"`
	}
	if err := json.Unmarshal(data, &js); err != nil {
		t.Fatal(err)
	}
	type jsRow struct {
		Name                  string
		Child                 string
		Driver, Direct, Total float64
		Vs                    string
	}
	var got []jsRow
	for _, v := range js.Calls.Variants {
		r := jsRow{Name: v.Name, Child: "absent", Driver: round(v.Driver), Direct: round(v.Direct), Total: round(v.Total)}
		if v.Child != nil {
			r.Child = fmt.Sprint(round(*v.Child))
		}
		if v.VsReference != nil {
			r.Vs = v.VsReference.Reference
		}
		got = append(got, r)
	}
	want := []jsRow{
		{"HTTP", "absent", 0.25, 0.2, 0.55, referenceName},
		{"stdio", "0.15", 0.1, 0.2, 0.45, stdioReferenceName},
		{referenceName, "absent", 0.25, 0.2, 0.35, ""},
		{stdioReferenceName, "0.15", 0.1, 0.2, 0.3, ""},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("json variants mismatch (-want +got):\n%s", diff)
	}
	if d := round(js.Calls.Direct.Driver); d != 0.2 {
		t.Errorf("direct driver_cpu_per_call_ms = %v, want 0.2", d)
	}
}
