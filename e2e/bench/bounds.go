package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// The bounds phases (issue 6) show what hostile traffic costs the gateway:
// one 200 MB application/json result from an upstream, answered under the
// default max_response_bytes (16 MiB), and thousands of sessions opened by a
// bare initialize and abandoned. Both report the gateway's memory; neither is
// timed.

// bigResponseReport is the 200 MB result phase.
type bigResponseReport struct {
	ResponseMiB float64 `json:"response_mib"`
	// Outcome is the failure type the agent got (upstream_error expected).
	Outcome string `json:"outcome"`
	// PeakRSSBeforeMiB and PeakRSSMiB are the gateway's VmHWM before and
	// after the call: the most memory it ever held.
	PeakRSSBeforeMiB float64 `json:"peak_rss_before_mib"`
	PeakRSSMiB       float64 `json:"peak_rss_mib"`
	// ConcurrentCalls were made by another agent on the same upstream
	// while the result streamed; ConcurrentFailed of them failed.
	ConcurrentCalls  int     `json:"concurrent_calls"`
	ConcurrentFailed int     `json:"concurrent_failed"`
	ElapsedMs        float64 `json:"elapsed_ms"`
}

// sessionsReport is the abandoned-sessions phase.
type sessionsReport struct {
	Initializes        int     `json:"initializes"`
	Refused            int     `json:"refused"`
	IdleTimeoutSeconds float64 `json:"idle_timeout_seconds"`
	Before             sample  `json:"before"`
	After              sample  `json:"after"` // right after the last initialize
	// Idle is the gateway sampled while every session is held open and
	// idle, from right after the last initialize (AtMs 0) on: issue 12's
	// "RSS flat under 10,000 idle sessions".
	Idle           []sample `json:"idle"`
	AfterIdle      sample   `json:"after_idle"` // once the idle timeout closed them
	ExpiredAfterMs float64  `json:"expired_after_ms"`
	// Settled is the gateway once the Go runtime has returned the freed
	// memory to the OS, which waits for a GC cycle: with no allocation to
	// trigger one, the runtime forces one every 2 minutes. Not measured
	// with --quick.
	Settled        *sample `json:"settled,omitempty"`
	SettledAfterMs float64 `json:"settled_after_ms,omitempty"`
}

// sample is the gateway's state at one moment.
type sample struct {
	AtMs       float64 `json:"at_ms,omitempty"` // idle samples: since the last initialize
	Sessions   int     `json:"sessions"`
	Goroutines int     `json:"goroutines"`
	RSSMiB     float64 `json:"rss_mib"`
}

// Sizes of the bounds phases.
const (
	bigResponseBytes  = 200 << 20
	abandonedSessions = 10000
	// benchIdleTimeout outlasts the initializes (several seconds for
	// 10,000 on 2 CPUs) and the idle samples, so every session is still
	// open while RSS is sampled, and is short enough that the expiry is
	// seen soon after.
	benchIdleTimeout   = 20 * time.Second
	idleSamples        = 7 // over idleSampleEvery x (idleSamples-1)
	idleSampleEvery    = time.Second
	idleRSSGrowthPct   = 2.0 // "flat": RSS grows at most this much while idle
	initializeWorkers  = 8
	bigConcurrentCalls = 50
)

// runBoundsPhases runs both phases; each records its own failure.
func runBoundsPhases(ctx context.Context, hc *http.Client, bin string, o options, rep *report, logf func(string, ...any)) {
	dir, err := os.MkdirTemp("", "credgate-bench-")
	if err != nil {
		rep.fail("bounds phases", err)
		return
	}
	defer os.RemoveAll(dir)
	logf("one %d MiB application/json result (default max_response_bytes)", bigResponseBytes>>20)
	// A phase that measured something reports it even when it failed: a
	// gateway without the bound shows what the result cost it.
	r, err := measureBigResponse(ctx, hc, bin, dir)
	rep.BigResponse = r
	if err != nil {
		rep.fail("200 MB response", err)
	}
	n := abandonedSessions
	if o.quick {
		n = 1000
	}
	logf("%d abandoned sessions (session_idle_timeout %s)", n, benchIdleTimeout)
	sr, err := measureAbandonedSessions(ctx, hc, bin, dir, n, !o.quick)
	rep.Sessions = sr
	if err != nil {
		rep.fail("abandoned sessions", err)
	}
}

// bigUpstream serves the echo tool, and a "big" tool whose result is one
// application/json body of bigResponseBytes, streamed (no Content-Length), so
// the gateway must read it to learn its size.
func startBigUpstream() (*upstream, error) {
	s := mcp.NewServer(&mcp.Implementation{Name: "big", Version: "bench"}, nil)
	for _, name := range []string{"echo", "big"} {
		s.AddTool(&mcp.Tool{Name: name, InputSchema: echoInputSchema}, echoTool)
	}
	sdk := mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return s }, nil)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("big upstream: listen: %w", err)
	}
	u := &upstream{url: "http://" + ln.Addr().String() + "/mcp", ln: &countingListener{Listener: ln}}
	u.srv = &http.Server{ReadHeaderTimeout: 10 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost {
			sdk.ServeHTTP(w, r)
			return
		}
		body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		var msg struct {
			ID     json.RawMessage `json:"id"`
			Method string          `json:"method"`
			Params struct {
				Name string `json:"name"`
			} `json:"params"`
		}
		if json.Unmarshal(body, &msg) != nil || msg.Method != "tools/call" || msg.Params.Name != "big" {
			r.Body = io.NopCloser(bytes.NewReader(body))
			sdk.ServeHTTP(w, r)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"jsonrpc":"2.0","id":`+string(msg.ID)+`,"result":{"content":[{"type":"text","text":"`)
		chunk := bytes.Repeat([]byte("x"), 1<<20)
		for range bigResponseBytes >> 20 {
			if _, err := w.Write(chunk); err != nil {
				return // the gateway stopped reading, as it should
			}
		}
		_, _ = io.WriteString(w, `"}]}}`)
	})}
	go func() { _ = u.srv.Serve(u.ln) }()
	return u, nil
}

func measureBigResponse(ctx context.Context, hc *http.Client, bin, dir string) (*bigResponseReport, error) {
	up, err := startBigUpstream()
	if err != nil {
		return nil, err
	}
	defer up.Close()
	cfg, err := writeConfig(dir, "big.yaml", map[string]string{"big": up.url})
	if err != nil {
		return nil, err
	}
	g, err := startGateway(ctx, bin, cfg)
	if err != nil {
		return nil, err
	}
	defer g.Close()
	if _, err := g.waitHealthy(ctx, hc, map[string]int{"big": 2}); err != nil {
		return nil, err
	}
	a, err := connect(ctx, hc, g.endpoint())
	if err != nil {
		return nil, err
	}
	defer a.Close()
	b, err := connect(ctx, hc, g.endpoint())
	if err != nil {
		return nil, err
	}
	defer b.Close()
	w := newWorker(b, func(int) string { return "big__echo" }, 1)
	w.run(ctx, 10) // warm up, so the peak before is the gateway at work
	before, err := g.procStatus("VmHWM")
	if err != nil {
		return nil, err
	}

	// Another agent calls the same upstream all along.
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var calls, failed atomic.Int64
	wg.Go(func() {
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			o := w.call(ctx, "big__echo", "c"+strconv.Itoa(i))
			calls.Add(1)
			if o != ok {
				failed.Add(1)
			}
			if i >= bigConcurrentCalls {
				<-stop
				return
			}
		}
	})
	t0 := time.Now()
	callCtx, cancel := context.WithTimeout(ctx, time.Minute)
	res, err := a.CallTool(callCtx, &mcp.CallToolParams{Name: "big__big", Arguments: map[string]any{"text": "x"}})
	cancel()
	elapsed := time.Since(t0)
	close(stop)
	wg.Wait()
	if err != nil {
		return nil, fmt.Errorf("big call: %w", err)
	}
	peak, err := g.procStatus("VmHWM")
	if err != nil {
		return nil, err
	}
	r := &bigResponseReport{
		ResponseMiB:      float64(bigResponseBytes) / (1 << 20),
		Outcome:          failureType(res),
		PeakRSSBeforeMiB: float64(before) / (1 << 20),
		PeakRSSMiB:       float64(peak) / (1 << 20),
		ConcurrentCalls:  int(calls.Load()),
		ConcurrentFailed: int(failed.Load()),
		ElapsedMs:        ms(elapsed),
	}
	if r.Outcome != "upstream_error" {
		return r, fmt.Errorf("big call outcome %q, want the typed upstream_error", r.Outcome)
	}
	if r.ConcurrentFailed > 0 {
		return r, fmt.Errorf("%d of %d concurrent calls failed", r.ConcurrentFailed, r.ConcurrentCalls)
	}
	return r, nil
}

// failureType returns the type of a call's failure object, or "ok".
func failureType(res *mcp.CallToolResult) string {
	if !res.IsError {
		return "ok"
	}
	var f struct {
		Type string `json:"type"`
	}
	raw, _ := json.Marshal(res.Meta["dev.credgate/error"])
	if json.Unmarshal(raw, &f) != nil || f.Type == "" {
		return "untyped error"
	}
	return f.Type
}

// settleTimeout bounds the wait for the freed memory to go back to the OS:
// the runtime's forced GC every 2 minutes, and its scavenger after it.
const settleTimeout = 150 * time.Second

func measureAbandonedSessions(ctx context.Context, hc *http.Client, bin, dir string, n int, settle bool) (*sessionsReport, error) {
	up, err := startUpstream("echo", []string{"echo"})
	if err != nil {
		return nil, err
	}
	defer up.Close()
	// A short idle timeout so the phase sees the sessions go, and room for
	// all of them (the default max_sessions is the phase's count).
	cfg := fmt.Sprintf("listen: 127.0.0.1:0\nsession_idle_timeout: %s\nmax_sessions: %d\nupstreams:\n  echo:\n    transport: streamable-http\n    url: %s\n",
		benchIdleTimeout, 2*n, up.url)
	path := filepath.Join(dir, "sessions.yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		return nil, err
	}
	g, err := startGateway(ctx, bin, path)
	if err != nil {
		return nil, err
	}
	defer g.Close()
	if _, err := g.waitHealthy(ctx, hc, map[string]int{"echo": 1}); err != nil {
		return nil, err
	}
	r := &sessionsReport{Initializes: n, IdleTimeoutSeconds: benchIdleTimeout.Seconds()}
	if r.Before, err = g.sample(ctx, hc); err != nil {
		return nil, err
	}

	var next, refused atomic.Int64
	var firstErr error
	var mu sync.Mutex
	var wg sync.WaitGroup
	for range initializeWorkers {
		wg.Go(func() {
			s := &rawSession{hc: hc, endpoint: g.endpoint()}
			for next.Add(1) <= int64(n) && ctx.Err() == nil {
				_, hdr, err := s.post(ctx, []byte(`{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"`+
					rawProtocolVersion+`","capabilities":{},"clientInfo":{"name":"abandoned","version":"1"}}}`), http.StatusOK)
				if err == nil && hdr.Get("Mcp-Session-Id") == "" {
					err = errors.New("no Mcp-Session-Id")
				}
				if err != nil {
					refused.Add(1)
					mu.Lock()
					if firstErr == nil {
						firstErr = err
					}
					mu.Unlock()
				}
			}
		})
	}
	wg.Wait()
	r.Refused = int(refused.Load())
	if r.Refused > 0 {
		return r, fmt.Errorf("%d of %d initializes failed, first: %w", r.Refused, n, firstErr)
	}
	idleFrom := time.Now()
	if r.After, err = g.sample(ctx, hc); err != nil {
		return nil, err
	}
	// Nothing touches the sessions now; RSS should not move.
	for i := range idleSamples {
		if i > 0 {
			select {
			case <-time.After(idleSampleEvery):
			case <-ctx.Done():
				return r, ctx.Err()
			}
		}
		s, err := g.sample(ctx, hc)
		if err != nil {
			return r, err
		}
		s.AtMs = ms(time.Since(idleFrom))
		r.Idle = append(r.Idle, s)
	}

	deadline := time.NewTimer(benchIdleTimeout + 30*time.Second)
	defer deadline.Stop()
	for {
		if r.AfterIdle, err = g.sample(ctx, hc); err != nil {
			return nil, err
		}
		if r.AfterIdle.Sessions == 0 {
			r.ExpiredAfterMs = ms(time.Since(idleFrom))
			break
		}
		select {
		case <-time.After(250 * time.Millisecond):
		case <-deadline.C:
			return r, fmt.Errorf("%d sessions still open %s after the last initialize (idle timeout %s)", r.AfterIdle.Sessions, time.Since(idleFrom).Round(time.Second), benchIdleTimeout)
		case <-ctx.Done():
			return r, ctx.Err()
		}
	}
	if !settle {
		return r, nil
	}
	settleFrom := time.Now()
	settled := time.NewTimer(settleTimeout)
	defer settled.Stop()
	for {
		s, err := g.sample(ctx, hc)
		if err != nil {
			return r, err
		}
		r.Settled, r.SettledAfterMs = &s, ms(time.Since(settleFrom))
		if s.RSSMiB < r.After.RSSMiB/2 {
			return r, nil
		}
		select {
		case <-time.After(2 * time.Second):
		case <-settled.C:
			return r, nil // reported as it stands
		case <-ctx.Done():
			return r, ctx.Err()
		}
	}
}

// sample reads the gateway's session and goroutine counts from /health and
// its RSS from /proc.
func (g *gatewayProc) sample(ctx context.Context, hc *http.Client) (sample, error) {
	var h struct {
		Sessions   *int `json:"sessions"`
		Goroutines *int `json:"goroutines"`
	}
	if err := g.get(ctx, hc, "/health", &h); err != nil {
		return sample{}, err
	}
	if h.Sessions == nil || h.Goroutines == nil {
		return sample{}, errors.New("/health reports no sessions or goroutines")
	}
	rss, err := g.procStatus("VmRSS")
	if err != nil {
		return sample{}, err
	}
	return sample{Sessions: *h.Sessions, Goroutines: *h.Goroutines, RSSMiB: float64(rss) / (1 << 20)}, nil
}

// procStatus returns a size field (VmRSS, VmHWM) of /proc/pid/status in bytes.
func (g *gatewayProc) procStatus(field string) (int64, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", g.cmd.Process.Pid))
	if err != nil {
		return 0, err
	}
	for line := range strings.Lines(string(data)) {
		if rest, ok := strings.CutPrefix(line, field+":"); ok {
			f := strings.Fields(rest) // "12345 kB"
			kb, err := strconv.ParseInt(f[0], 10, 64)
			if err != nil {
				return 0, fmt.Errorf("%s: %w", field, err)
			}
			return kb * 1024, nil
		}
	}
	return 0, fmt.Errorf("no %s in /proc/pid/status", field)
}
