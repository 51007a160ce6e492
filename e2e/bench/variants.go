package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
)

// variant is one gateway configuration measured against direct HTTP.
type variant struct {
	Name      string // as printed: "HTTP", "HTTP stateless", "stdio", "stdio stateless"
	Stdio     bool   // the echo upstream is this binary on stdio, not an HTTP server
	Stateless bool   // the gateway's top-level stateless: true
	NoFast    bool   // the gateway's fast_path: false (a reference: every call through the SDK)
	// Protocol is the upstream's protocol_version ("" for the default, the
	// newest): a reference row, what an older version costs the upstream.
	Protocol string
	// Ref marks the reference row: not credgate but the minimal Go reverse
	// proxy (./minproxy), measured like a variant and held to no goal.
	Ref bool
	Bin string // the binary, if not the gateway under test (--compare, or minproxy for Ref)
}

// upstreamTransport is the gateway config's transport for the variant.
func (v variant) upstreamTransport() string {
	if v.Stdio {
		return "stdio"
	}
	return "streamable-http"
}

// allVariants is every gateway configuration issue 12 measures, in the
// order of its table: HTTP upstream first (default, then stateless), then a
// stdio upstream.
func allVariants() []variant {
	return []variant{
		{Name: "HTTP"},
		{Name: "HTTP stateless", Stateless: true},
		{Name: "stdio", Stdio: true},
		{Name: "stdio stateless", Stdio: true, Stateless: true},
		// A reference row, measured in the same run: the fast path's effect.
		{Name: "HTTP, fast_path off", NoFast: true},
		// A reference row: the stdio upstream asked for 2025-11-25, which
		// costs the go-sdk child less per call than 2026-07-28.
		{Name: "stdio 2025-11-25", Stdio: true, Protocol: "2025-11-25"},
	}
}

// pickVariants returns the variants named in list (comma-separated, in
// allVariants' order), or all of them for "".
func pickVariants(list string) ([]variant, error) {
	all := allVariants()
	if strings.TrimSpace(list) == "" {
		return all, nil
	}
	want := map[string]bool{}
	for _, n := range strings.Split(list, ",") {
		want[strings.TrimSpace(n)] = true
	}
	var out []variant
	for _, v := range all {
		if want[v.Name] {
			out = append(out, v)
			delete(want, v.Name)
		}
	}
	if len(want) > 0 {
		names := make([]string, 0, len(all))
		for _, v := range all {
			names = append(names, strconv.Quote(v.Name))
		}
		return nil, fmt.Errorf("--variants: unknown %q; the variants are %s", slices.Sorted(maps.Keys(want)), strings.Join(names, ", "))
	}
	return out, nil
}

// withCompare adds, after each variant, the same one run by the gateway
// binary bin ("" adds none), named "<name> @compare".
func withCompare(vs []variant, bin string) []variant {
	if bin == "" {
		return vs
	}
	out := make([]variant, 0, 2*len(vs))
	for _, v := range vs {
		c := v
		c.Name, c.Bin = v.Name+" @compare", bin
		out = append(out, v, c)
	}
	return out
}

// referenceName and stdioReferenceName are the reference rows' names
// (--reference).
const (
	referenceName      = "minimal Go proxy (reference)"
	stdioReferenceName = "minimal Go proxy, stdio (reference)"
)

// withReference adds, last, the reference rows: issue 12's "minimal Go
// reverse proxy" (./minproxy), measured in the same run. Issue 12's goals
// were set on a faster machine than most that run the bench; the proxy
// measured here says what the cheapest possible hop costs on this one, so
// credgate can be read as a ratio to it. The HTTP row is added only when
// the HTTP variant is measured, and the stdio row (minproxy in front of the
// same stdio echo child) only when the stdio variant is: each row's
// comparison line is against that variant. Neither gets an @compare copy.
// Their Bin is set once the driver has built minproxy.
func withReference(vs []variant, on bool) []variant {
	if !on {
		return vs
	}
	has := func(name string) bool { return slices.ContainsFunc(vs, func(v variant) bool { return v.Name == name }) }
	withHTTP, withStdio := has("HTTP"), has("stdio")
	if withHTTP {
		vs = append(vs, variant{Name: referenceName, Ref: true})
	}
	if withStdio {
		vs = append(vs, variant{Name: stdioReferenceName, Ref: true, Stdio: true})
	}
	return vs
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

// Issue 12's goals for the call measurements, against direct HTTP.
const (
	goalThroughputHTTP  = 0.72 // x direct, 8 sessions, HTTP upstream (the minimal Go proxy's level)
	goalThroughputStdio = 1.15 // x direct HTTP, 8 sessions, stdio upstream
	goalAddedP50Ms      = 0.20 // ms over direct, 1 session
	goalCPUPerCallMs    = 0.13 // gateway CPU ms per call, 8 sessions
	goalAllocKiB        = 25   // KiB allocated by the gateway per call, 8 sessions
	goalNewConnsPer100  = 0    // new upstream TCP connections per 100 calls
)

func (v variant) throughputGoal() float64 {
	if v.Stdio {
		return goalThroughputStdio
	}
	return goalThroughputHTTP
}

// writeEchoConfig writes the config of a variant's gateway: one upstream
// named echo, either the HTTP server at url or this executable on stdio.
func writeEchoConfig(dir string, v variant, url, self string) (string, error) {
	var b strings.Builder
	b.WriteString("listen: 127.0.0.1:0\n")
	if v.Stateless {
		b.WriteString("stateless: true\n")
	}
	if v.NoFast {
		b.WriteString("fast_path: false\n")
	}
	b.WriteString("admin:\n  pprof: true\nupstreams:\n  echo:\n")
	if v.Stdio {
		fmt.Fprintf(&b, "    transport: stdio\n    command: %s\n    env: {%s: \"1\"}\n", strconv.Quote(self), stdioEnv)
	} else {
		fmt.Fprintf(&b, "    transport: streamable-http\n    url: %s\n", url)
	}
	if v.Protocol != "" {
		fmt.Fprintf(&b, "    protocol_version: %q\n", v.Protocol)
	}
	path := filepath.Join(dir, "echo.yaml")
	if err := os.WriteFile(path, []byte(b.String()), 0o600); err != nil {
		return "", fmt.Errorf("write config: %w", err)
	}
	return path, nil
}

// pairResult is one gateway measurement and the direct one made just before
// it, with the same load shape: their ratio is the run's figure.
type pairResult struct {
	direct loadResult
	gw     *gatewayResult // nil when only the direct side is measured
}

// callsData is every call measurement of a run, before summarising.
type callsData struct {
	scenarios []scenario
	variants  []variant
	// pairs[v][s] is variant v's pairs in scenario s, one per run; with no
	// gateway, pairs[0] holds the direct-only runs.
	pairs [][][]pairResult
}

// runCalls measures every variant against direct: per run and scenario,
// each variant's gateway run right after a direct run, so slow drift of a
// shared machine lands on both sides of a ratio.
func runCalls(ctx context.Context, hc *http.Client, bin string, p plan, rep *report, logf func(string, ...any)) *callsData {
	direct, err := startUpstream("echo", []string{"echo"})
	if err != nil {
		rep.fail("direct upstream", err)
		return nil
	}
	defer direct.Close()

	data := &callsData{scenarios: p.scenarios}
	var gws []*echoGateway
	defer func() {
		for _, g := range gws {
			if err := g.Close(); err != nil {
				rep.fail("gateway stop", err)
			}
		}
	}()
	if bin != "" {
		self, err := stdioCommand()
		for _, v := range p.variants {
			if v.Stdio && err != nil {
				rep.fail("gateway start ("+v.Name+")", err)
				continue
			}
			b := bin
			if v.Bin != "" {
				b = v.Bin
			}
			g, err := startEchoGateway(ctx, hc, b, v, self)
			if err != nil {
				rep.fail("gateway start ("+v.Name+")", err)
				continue
			}
			gws = append(gws, g)
			data.variants = append(data.variants, v)
		}
	}
	slots := max(len(gws), 1)
	data.pairs = make([][][]pairResult, slots)
	for i := range data.pairs {
		data.pairs[i] = make([][]pairResult, len(p.scenarios))
	}
	for run := range p.runs {
		for si, sc := range p.scenarios {
			for slot := range slots {
				var g *echoGateway
				name := "direct"
				if slot < len(gws) {
					g = gws[slot]
					name = g.variant.Name
				}
				logf("run %d/%d, %s: direct, then %s", run+1, p.runs, sc.name, name)
				d, err := runLoad(ctx, hc, target{endpoint: direct.url, tool: "echo"}, sc, hooks{})
				if err != nil {
					rep.fail("direct "+sc.name, err)
					continue
				}
				rep.checkCalls("direct "+sc.name, d)
				pr := pairResult{direct: d}
				if g != nil {
					gr, err := g.measure(ctx, hc, sc)
					if err != nil {
						rep.fail("gateway "+g.variant.Name+" "+sc.name, err)
						continue
					}
					rep.checkCalls("gateway "+g.variant.Name+" "+sc.name, gr.loadResult)
					pr.gw = &gr
				}
				data.pairs[slot][si] = append(data.pairs[slot][si], pr)
			}
		}
	}
	return data
}

// scrapeAlloc reads go_memstats_alloc_bytes_total, the bytes the gateway
// has allocated since it started, from its /metrics.
func (g *gatewayProc) scrapeAlloc(ctx context.Context, hc *http.Client) (float64, error) {
	body, err := g.fetch(ctx, hc, "/metrics", 5*time.Second)
	if err != nil {
		return 0, err
	}
	return parseAllocBytes(body)
}

// allocMetric is the Go collector's counter of bytes allocated on the heap.
const allocMetric = "go_memstats_alloc_bytes_total"

// parseAllocBytes finds allocMetric in a Prometheus text exposition.
func parseAllocBytes(body []byte) (float64, error) {
	sc := bufio.NewScanner(strings.NewReader(string(body)))
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		rest, ok := strings.CutPrefix(sc.Text(), allocMetric)
		if !ok || !strings.HasPrefix(rest, " ") {
			continue // a comment, another series, or a longer name
		}
		f := strings.Fields(rest)
		v, err := strconv.ParseFloat(f[0], 64)
		if err != nil {
			return 0, fmt.Errorf("/metrics: %s: %w", allocMetric, err)
		}
		return v, nil
	}
	return 0, fmt.Errorf("/metrics has no %s (is the Go collector registered?)", allocMetric)
}

// fetch GETs path from the gateway and returns a 200 body.
func (g *gatewayProc) fetch(ctx context.Context, hc *http.Client, path string, timeout time.Duration) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+g.addr+path, nil)
	if err != nil {
		return nil, err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return nil, fmt.Errorf("GET %s: %w", path, err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s: %.200s", path, resp.Status, body)
	}
	return body, nil
}

// allocWindow measures the gateway's allocation over a window. Each scrape
// of /metrics allocates too, and the window holds about one scrape's worth
// (the end of the first, the start of the last), so start scrapes twice in
// a row and takes their difference as that cost.
type allocWindow struct {
	start, scrape float64
	err           error
}

func (w *allocWindow) begin(ctx context.Context, hc *http.Client, g *gatewayProc) {
	a, err1 := g.scrapeAlloc(ctx, hc)
	b, err2 := g.scrapeAlloc(ctx, hc)
	w.start, w.scrape, w.err = b, b-a, errors.Join(err1, err2)
}

// end returns the bytes allocated since begin, less one scrape.
func (w *allocWindow) end(ctx context.Context, hc *http.Client, g *gatewayProc) (float64, error) {
	c, err := g.scrapeAlloc(ctx, hc)
	if err := errors.Join(w.err, err); err != nil {
		return 0, err
	}
	return max(c-w.start-w.scrape, 0), nil
}

func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	if n := len(s); n%2 == 0 {
		return (s[n/2-1] + s[n/2]) / 2
	}
	return s[len(s)/2]
}
