package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/modelcontextprotocol/go-sdk/mcp"
	"github.com/rs/zerolog"

	"github.com/credgate/credgate/authmap"
)

// failureMeta returns the failure object a tool result carries in _meta.
func failureMeta(t *testing.T, res *mcp.CallToolResult) map[string]any {
	t.Helper()
	m, _ := res.Meta[MetaKey].(map[string]any)
	if !res.IsError || m == nil {
		t.Fatalf("result is not a typed failure: isError=%v meta=%v content=%q", res.IsError, res.Meta, text(res))
	}
	return m
}

// Regression test for issue 6 item 9: a shutdown refuses new calls (503 for a
// new session, a typed upstream_unavailable for a new call on an existing
// one), lets calls in flight run until shutdown_timeout, then ends them with
// a typed upstream_unavailable result (the agent gets an answer, and the
// upstream a cancellation), and Close returns.
func TestShutdownEndsCallsInFlight(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	started, cancelled := make(chan struct{}), make(chan struct{})
	url := featureUpstream(t, started, cancelled)
	g := newTestGateway(t, ctx, fmt.Sprintf("shutdown_timeout: 2s\nupstreams:\n  f: {url: %s, timeout: 10m}\n", url))
	hs := httptest.NewServer(g.Handler())
	t.Cleanup(hs.Close)
	cs, err := mcp.NewClient(&mcp.Implementation{Name: "agent", Version: "1"}, nil).Connect(ctx, &mcp.StreamableClientTransport{Endpoint: hs.URL + "/mcp"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cs.Close() })

	type outcome struct {
		res *mcp.CallToolResult
		err error
	}
	inFlight := make(chan outcome, 1)
	go func() {
		res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "f__block"})
		inFlight <- outcome{res, err}
	}()
	select {
	case <-started:
	case <-ctx.Done():
		t.Fatal("the call never reached the upstream")
	}
	closed := make(chan struct{})
	go func() {
		_ = g.Close()
		close(closed)
	}()
	waitFor(t, ctx, g.draining.Load)

	// A new call on the existing session is refused, typed.
	res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "f__progress"})
	if err != nil {
		t.Fatalf("new call while shutting down: %v", err)
	}
	if m := failureMeta(t, res); m["type"] != string(authmap.TypeUpstreamUnavailable) || m["detail"] != "gateway is shutting down" || m["retryable"] != true {
		t.Errorf("new call while shutting down = %v, want a retryable upstream_unavailable saying the gateway is shutting down", m)
	}
	// A new session is refused.
	body := `{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"late","version":"1"}}}`
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, hs.URL+"/mcp", strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, text/event-stream")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("new session while shutting down: HTTP %d, want 503", resp.StatusCode)
	}

	// The call in flight ends at the deadline, with an answer.
	var o outcome
	select {
	case o = <-inFlight:
	case <-ctx.Done():
		t.Fatal("the call in flight got no answer")
	}
	if o.err != nil {
		t.Fatalf("call in flight: %v, want a typed result", o.err)
	}
	if m := failureMeta(t, o.res); m["type"] != string(authmap.TypeUpstreamUnavailable) || m["detail"] != "gateway is shutting down" {
		t.Errorf("call in flight ended with %v, want upstream_unavailable: gateway is shutting down", m)
	}
	for what, ch := range map[string]chan struct{}{"the upstream saw no cancellation": cancelled, "Close did not return": closed} {
		select {
		case <-ch:
		case <-ctx.Done():
			t.Fatal(what)
		}
	}
}

// Regression test for issue 6 item 11: a call whose connection is refused
// marks its upstream down at once, not when the SDK gives up retrying its
// event stream (17-55 s later).
func TestDeadConnectionMarksUpstreamDown(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	a := newTestUpstream(t, "a", "echo")
	g, cs := startGateway(t, ctx, fmt.Sprintf("health_interval: 1h\nupstreams:\n  a: {url: %s}\n", a.url()))
	if s := g.Health().Upstreams["a"].Status; s != StatusUp {
		t.Fatalf("status = %q before the upstream died, want up", s)
	}
	a.http.CloseClientConnections()
	a.http.Close()

	res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "a__echo", Arguments: map[string]any{"text": "x"}})
	if err != nil {
		t.Fatal(err)
	}
	if m := failureMeta(t, res); m["type"] != string(authmap.TypeUpstreamUnavailable) {
		t.Errorf("call to a dead upstream = %v, want upstream_unavailable", m)
	}
	h := g.Health().Upstreams["a"]
	if h.Status != StatusDown || h.Connected || h.LastFailure == nil || h.LastFailure.Type != authmap.TypeUpstreamUnavailable {
		t.Errorf("health right after the failed call = %+v, want down with an upstream_unavailable last_failure", h)
	}
}

// hangingUpstream is an MCP server over HTTP that stops answering while hang
// is set: requests wait until the client gives up. opts configures its
// handler (nil allowed).
func hangingUpstream(t *testing.T, opts *mcp.StreamableHTTPOptions) (url string, hang *atomic.Bool) {
	t.Helper()
	s := mcp.NewServer(&mcp.Implementation{Name: "hangs", Version: "1"}, nil)
	s.AddTool(&mcp.Tool{Name: "echo", InputSchema: json.RawMessage(`{"type":"object"}`)}, func(context.Context, *mcp.CallToolRequest) (*mcp.CallToolResult, error) {
		return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: "ok"}}}, nil
	})
	h := mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return s }, opts)
	hang = new(atomic.Bool)
	release := make(chan struct{})
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if hang.Load() {
			select {
			case <-r.Context().Done():
			case <-release:
			}
			return
		}
		h.ServeHTTP(w, r)
	}))
	t.Cleanup(hs.Close)
	t.Cleanup(func() { close(release) }) // runs first: no handler holds hs.Close up
	return hs.URL + "/mcp", hang
}

// Regression test for issue 6 item 11: an idle upstream that stops answering
// is found by the health probe and shows as down (timeout), and comes back up
// once it answers again.
func TestHealthProbeFindsHungUpstream(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	url, hang := hangingUpstream(t, nil)
	g := newTestGateway(t, ctx, fmt.Sprintf("health_interval: 1h\nupstreams:\n  h: {url: %s, timeout: 2s, health_interval: 100ms}\n", url))
	if s := g.Health().Upstreams["h"].Status; s != StatusUp {
		t.Fatalf("status = %q, want up", s)
	}
	hang.Store(true)
	waitFor(t, ctx, func() bool { return g.Health().Upstreams["h"].Status == StatusDown })
	if f := g.Health().Upstreams["h"].LastFailure; f == nil || f.Type != authmap.TypeTimeout {
		t.Errorf("last_failure of a hung upstream = %+v, want timeout", f)
	} else if !strings.Contains(f.Detail, "within 100ms") {
		t.Errorf("last_failure detail = %q, want the probe's wait (100ms), not the call timeout", f.Detail)
	}
	hang.Store(false)
	waitFor(t, ctx, func() bool { return g.Health().Upstreams["h"].Status == StatusUp })
}

// Regression test for issue 6 item 11: the probe loop probes every interval,
// one probe at a time (a slow probe delays the next, never overlaps it or
// is followed at once), skips while the upstream is busy, and stops at the
// first failure.
func TestProbeLoop(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		const interval = 10 * time.Second
		start := time.Now()
		var busy, probing atomic.Bool
		var at []time.Duration
		probe := func(ctx context.Context) error {
			if probing.Swap(true) {
				t.Error("two probes at once")
			}
			defer probing.Store(false)
			at = append(at, time.Since(start))
			switch len(at) {
			case 2:
				time.Sleep(25 * time.Second) // a probe slower than the interval
			case 4:
				return errors.New("no answer")
			}
			return nil
		}
		var failed error
		done := make(chan struct{})
		go func() {
			defer close(done)
			probeLoop(t.Context(), func() time.Duration { return interval }, busy.Load, probe, func(err error) { failed = err })
		}()
		time.Sleep(50 * time.Second)
		busy.Store(true) // the turn at 55s (10s after the slow probe) is skipped
		time.Sleep(10 * time.Second)
		busy.Store(false)
		<-done
		want := []time.Duration{10 * time.Second, 20 * time.Second, 65 * time.Second, 75 * time.Second}
		if diff := cmp.Diff(want, at); diff != "" {
			t.Errorf("probe times mismatch (-want +got):\n%s", diff)
		}
		if failed == nil || failed.Error() != "no answer" {
			t.Errorf("fail got %v, want the probe's error", failed)
		}

		// Cancelling ends the loop.
		ctx, cancel := context.WithCancel(t.Context())
		stopped := make(chan struct{})
		go func() {
			defer close(stopped)
			probeLoop(ctx, func() time.Duration { return interval }, func() bool { return false }, func(context.Context) error { return nil }, func(error) { t.Error("failed") })
		}()
		time.Sleep(15 * time.Second)
		cancel()
		<-stopped
	})
}

// nodeCrash is what Node 20 writes to stderr when its entry point is missing.
const nodeCrash = `node:internal/modules/cjs/loader:1228
  throw err;
  ^

Error: Cannot find module '/srv/index.js'
    at Module._resolveFilename (node:internal/modules/cjs/loader:1225:15)
    at Module._load (node:internal/modules/cjs/loader:1051:27)
    at Function.executeUserEntryPoint [as runMain] (node:internal/modules/run_main:174:12)
    at node:internal/main/run_main_module:28:49 {
  code: 'MODULE_NOT_FOUND',
  requireStack: []
}

Node.js v20.20.2`

// Regression test for issue 6 item 12: /health carries the last lines of a
// crashed child's stderr (bounded, secrets redacted), and last_error the line
// that names the error, not the last line (a Node crash ends with its
// version).
func TestHealthCarriesStderrTail(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	const secret = "sk-test-0123456789abcdef"
	script := filepath.Join(t.TempDir(), "crash.sh")
	var b strings.Builder
	for i := range 30 {
		fmt.Fprintf(&b, "echo 'starting worker %d' >&2\n", i)
	}
	fmt.Fprintf(&b, "printf '%%s\\n' \"token is $API_TOKEN\" %q >&2\n", strings.Repeat("x", 2000))
	fmt.Fprintf(&b, "cat >&2 <<'EOF'\n%s\nEOF\nexit 1\n", nodeCrash)
	if err := os.WriteFile(script, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	g := newTestGateway(t, ctx, fmt.Sprintf("upstreams:\n  crash: {command: /bin/sh, args: [%q], env: {API_TOKEN: %q}}\n", script, secret))

	rec := httptest.NewRecorder()
	req := httptest.NewRequest(http.MethodGet, "/health", nil)
	req.Host = "localhost" // httptest's example.com is a foreign host (issue 9)
	g.Handler().ServeHTTP(rec, req)
	var h struct {
		Upstreams map[string]struct {
			Status     string   `json:"status"`
			LastError  string   `json:"last_error"`
			StderrTail []string `json:"stderr_tail"`
		} `json:"upstreams"`
	}
	if err := json.Unmarshal(rec.Body.Bytes(), &h); err != nil {
		t.Fatalf("health: %v\n%s", err, rec.Body)
	}
	u := h.Upstreams["crash"]
	if strings.Contains(rec.Body.String(), secret) {
		t.Errorf("health carries the secret:\n%s", rec.Body)
	}
	if !strings.Contains(u.LastError, "Error: Cannot find module '/srv/index.js'") {
		t.Errorf("last_error = %q, want the line naming the error", u.LastError)
	}
	// The supervisor adds how the command ended.
	if n := len(u.StderrTail); n < 2 || n > stderrTailLines || u.StderrTail[n-2] != "Node.js v20.20.2" || u.StderrTail[n-1] != exitNotePrefix+"exited with status 1" {
		t.Fatalf("stderr_tail = %q, want at most %d lines ending with the crash report", u.StderrTail, stderrTailLines)
	}
	all := strings.Join(u.StderrTail, "\n")
	size := 0
	for _, l := range u.StderrTail {
		size += len(l)
		if len(l) > stderrLineMax+len("…") {
			t.Errorf("stderr_tail line of %d bytes, want at most %d", len(l), stderrLineMax)
		}
	}
	if size > stderrTailBytes {
		t.Errorf("stderr_tail holds %d bytes, want at most %d", size, stderrTailBytes)
	}
	for _, want := range []string{"Error: Cannot find module", "code: 'MODULE_NOT_FOUND',", "token is " + authmap.Redacted} {
		if !strings.Contains(all, want) {
			t.Errorf("stderr_tail lacks %q:\n%s", want, all)
		}
	}
	if strings.Contains(all, "starting worker 0") {
		t.Errorf("stderr_tail kept the oldest lines:\n%s", all)
	}
}

func TestUsefulLine(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ name, stderr, want string }{
		{"node", nodeCrash, "Error: Cannot find module '/srv/index.js'"},
		{"python", "Traceback (most recent call last):\n  File \"/srv/main.py\", line 3, in <module>\n    import mcp\nModuleNotFoundError: No module named 'mcp'", "ModuleNotFoundError: No module named 'mcp'"},
		{"go panic", "panic: boom [recovered]\n\tpanic: boom\n\ngoroutine 1 [running]:\npanic({0x4b6e40?, 0x4f2e28?})\n\t/usr/local/go/src/runtime/panic.go:770 +0x132\nmain.main()\n\t/srv/main.go:3 +0x25\nexit status 2", "panic: boom"},
		{"rust", "thread 'main' panicked at src/main.rs:2:5:\nno config\nnote: run with `RUST_BACKTRACE=1` environment variable to display a backtrace", "thread 'main' panicked at src/main.rs:2:5:"},
		{"java", "Exception in thread \"main\" java.lang.IllegalStateException: no token\n\tat Main.main(Main.java:3)", "Exception in thread \"main\" java.lang.IllegalStateException: no token"},
		{"plain", "listening on stdio\nbad flag --x\n\n", "bad flag --x"},
		{"slog", "time=2026-12-01T05:00:00Z level=INFO msg=starting\ntime=2026-12-01T05:00:00Z level=ERROR msg=\"demo-upstream failed\" err=\"listen tcp 127.0.0.1:8931: bind: address already in use\"\nexit status 1",
			"time=2026-12-01T05:00:00Z level=ERROR msg=\"demo-upstream failed\" err=\"listen tcp 127.0.0.1:8931: bind: address already in use\""},
		{"json log", "{\"level\":\"info\",\"msg\":\"up\"}\n{\"level\":\"error\",\"msg\":\"no token\"}\nbye", "{\"level\":\"error\",\"msg\":\"no token\"}"},
		{"zerolog console", "5:00AM INF starting\n5:00AM ERR cannot bind error=\"in use\"\nexit status 1", "5:00AM ERR cannot bind error=\"in use\""},
		{"info mentions error", "level=INFO msg=\"no error here\"\nlast words", "last words"},
		{"empty", "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := usefulLine(strings.Split(tc.stderr, "\n")); got != tc.want {
				t.Errorf("usefulLine = %q, want %q", got, tc.want)
			}
		})
	}
}

// readLines keeps reading past a line longer than its bound, cutting it.
func TestReadLinesBoundsLines(t *testing.T) {
	t.Parallel()
	in := "short\r\n" + strings.Repeat("y", 100_000) + "\nafter\nno newline at end"
	var got []string
	readLines(strings.NewReader(in), 16, func(l string) { got = append(got, l) })
	want := []string{"short", "…", "after", "no newline at …"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("lines mismatch (-want +got):\n%s", diff)
	}
}

// TestReadLinesCutKeepsNoSecretPart: a line cut in the middle of a secret
// keeps none of it, so redaction (which needs it whole) has nothing to
// miss. Found trying the gateway: a child's stderr line of 16 KiB ending
// in its token logged the token's first 24 characters.
func TestReadLinesCutKeepsNoSecretPart(t *testing.T) {
	t.Parallel()
	const secret = "ghp_TRIAL!SECRET:1234567890ab@cdefghijklmn"
	for _, lead := range []string{"Authorization: token ", "x", "url=https://h/?access_token=", `{"token":"`, "password=ab!c@d#", "user:"} {
		for cut := 1; cut < len(secret); cut += 5 {
			var got []string
			max := len(lead) + cut
			readLines(strings.NewReader(lead+secret+"\n"), max, func(l string) { got = append(got, l) })
			if len(got) != 1 || strings.Contains(got[0], secret[:min(cut, 4)]) && cut >= 4 {
				t.Errorf("cut after %d characters of the secret (after %q): %q", cut, lead, got)
			}
		}
	}
}

// A stdio command that cannot start fails as exec reports it, supervisor or
// not: not found on PATH, not executable.
func TestStdioStartErrors(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	notExec := filepath.Join(t.TempDir(), "server")
	if err := os.WriteFile(notExec, []byte("#!/bin/sh\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	g := newTestGateway(t, ctx, fmt.Sprintf("upstreams:\n  nope: {command: credgate-no-such-command}\n  noexec: {command: %q}\n", notExec))
	h := g.Health()
	for name, want := range map[string]string{
		"nope":   `exec: "credgate-no-such-command": executable file not found in $PATH`,
		"noexec": "fork/exec " + notExec + ": permission denied",
	} {
		if got := h.Upstreams[name].LastError; !strings.Contains(got, want) {
			t.Errorf("%s: last_error = %q, want it to contain %q", name, got, want)
		}
	}
}

// The health probe gets an answer from a healthy upstream of either protocol
// era: ping on 2025-11-25 sessions, tools/list on 2026-07-28 ones (a
// stateless go-sdk server rejects ping there), and times out on one that
// hangs.
func TestProbeEveryProtocol(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		stateless bool
		protocol  string
	}{{false, "2025-11-25"}, {true, "2026-07-28"}} {
		t.Run(tc.protocol, func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
			defer cancel()
			url, hang := hangingUpstream(t, &mcp.StreamableHTTPOptions{Stateless: tc.stateless})
			g := newTestGateway(t, ctx, fmt.Sprintf("health_interval: 1h\nupstreams:\n  p: {url: %s}\n", url))
			u := g.upstream("p")
			cs := u.session.Load()
			if cs == nil {
				t.Fatal("not connected")
			}
			if got := cs.InitializeResult().ProtocolVersion; got != tc.protocol {
				t.Fatalf("protocol = %s, want %s", got, tc.protocol)
			}
			if err := u.probe(ctx, cs, 5*time.Second); err != nil {
				t.Errorf("probe of a healthy upstream: %v", err)
			}
			hang.Store(true)
			if err := u.probe(ctx, cs, 100*time.Millisecond); !errors.Is(err, context.DeadlineExceeded) {
				t.Errorf("probe of a hung upstream: %v, want a timeout", err)
			}
			hang.Store(false) // the gateway's Close says goodbye to it
		})
	}
}

// TestStdioBadCwdNamed is the regression test for issue 6 item 3 (commands,
// found by trying the binary): a stdio upstream whose cwd is missing or not
// a directory is reported as that cwd's failure with the command named, never
// as "fork/exec /proc/self/exe" (the supervisor's path, which the user never
// configured), and is upstream_unavailable like every start failure.
func TestStdioBadCwdNamed(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	notDir := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(notDir, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(t.TempDir(), "missing")
	g := newTestGateway(t, ctx, fmt.Sprintf("upstreams:\n  missing: {command: %q, cwd: %q}\n  notdir: {command: %q, cwd: %q}\n",
		self, missing, self, notDir))
	h := g.Health()
	for name, want := range map[string]string{
		"missing": "starting " + self + ": chdir " + missing + ": no such file or directory",
		"notdir":  "starting " + self + ": chdir " + notDir + ": not a directory",
	} {
		up := h.Upstreams[name]
		if got := up.LastError; !strings.Contains(got, want) || strings.Contains(got, "/proc/self/exe") {
			t.Errorf("%s: last_error = %q, want it to contain %q", name, got, want)
		}
		if lf := up.LastFailure; lf == nil || lf.Type != authmap.TypeUpstreamUnavailable || !lf.Retryable {
			t.Errorf("%s: last_failure = %+v, want retryable upstream_unavailable", name, lf)
		}
	}
}

// TestProbeFindsDeadHTTPUpstream is the regression test for issue 6 item 11
// (found by trying the binary): the SDK reports a request its streamable
// HTTP transport could not deliver as a JSON-RPC error ("rejected by
// transport"), which the gateway took for the upstream's own answer, so the
// probe of a killed HTTP upstream always "succeeded" and the upstream stayed
// up until the SDK gave up on its event stream, 15-20 s later. The probe
// must find it.
func TestProbeFindsDeadHTTPUpstream(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	a := newTestUpstream(t, "a", "echo")
	var logs syncBuffer
	g := newTestGatewayLogged(t, ctx, fmt.Sprintf("health_interval: 1h\nupstreams:\n  a: {url: %s, health_interval: 50ms}\n", a.url()),
		zerolog.New(&logs).Level(zerolog.WarnLevel))
	if s := g.Health().Upstreams["a"].Status; s != StatusUp {
		t.Fatalf("status = %q before the upstream died, want up", s)
	}
	cs := g.upstream("a").session.Load()
	a.http.CloseClientConnections()
	a.http.Close()
	if err := cs.Ping(ctx, nil); err == nil || answered(err) {
		t.Errorf("ping of a closed HTTP upstream: err = %v, answered = %v; want an error that is no answer", err, answered(err))
	}
	waitFor(t, ctx, func() bool { return g.Health().Upstreams["a"].Status == StatusDown })
	// The reconnect attempts that follow overwrite last_error at once, so
	// the cause is read from the one warning logged when it went down
	// (written just after the status changes: wait for it).
	waitFor(t, ctx, func() bool { return strings.Contains(logs.String(), `"message":"upstream down"`) })
	var first struct {
		Err string `json:"err"`
	}
	for line := range strings.Lines(logs.String()) {
		if strings.Contains(line, `"message":"upstream down"`) {
			_ = json.Unmarshal([]byte(line), &first)
			break
		}
	}
	if !strings.Contains(first.Err, "health probe") {
		t.Errorf("the upstream went down with err %q, want the health probe's failure\n%s", first.Err, logs.String())
	}
}

// TestStderrPanicLineOutlivesTail is the regression test for issue 6 item 12
// (found by trying the binary): a Go panic or a Java exception names its
// error first and then prints a stack trace longer than the stderr tail, so
// last_error quoted the trace's last frame ("goroutine 25 ...") instead of
// the panic. The line naming the error is kept after it leaves the tail.
func TestStderrPanicLineOutlivesTail(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	script := `echo 'panic: runtime error: invalid memory address' >&2; echo >&2; i=0; while [ $i -lt 40 ]; do echo "main.frame$i()" >&2; i=$((i+1)); done; exit 2`
	g := newTestGateway(t, ctx, fmt.Sprintf("upstreams:\n  gp: {command: sh, args: [-c, %q]}\n", script))
	waitFor(t, ctx, func() bool { return strings.Contains(g.Health().Upstreams["gp"].LastError, "stderr:") })
	h := g.Health().Upstreams["gp"]
	if !strings.Contains(h.LastError, "(stderr: panic: runtime error: invalid memory address (then exited with status 2))") {
		t.Errorf("last_error = %q, want it to quote the panic line and the exit status", h.LastError)
	}
	if n := len(h.StderrTail); n < 2 || h.StderrTail[n-2] != "main.frame39()" {
		t.Errorf("stderr_tail = %q, want the last lines", h.StderrTail)
	}
	c := &childStderr{}
	c.add("Error: an old failure, long since recovered")
	for i := range stderrErrLineAge {
		c.add(fmt.Sprintf("serving request %d", i))
	}
	if got := c.useful(); got != "serving request 499" {
		t.Errorf("useful() = %q, want the last line: an error line %d lines back explains nothing", got, stderrErrLineAge)
	}
}

// crashMidCall is a stdio MCP server (sh) that exits when it receives
// tools/call, as a server crashing on a request does.
const crashMidCall = `while IFS= read -r line; do
  id=$(printf '%s' "$line" | sed -n 's/.*"id":\([0-9]*\).*/\1/p')
  case "$line" in
    *'"method":"initialize"'*) printf '{"jsonrpc":"2.0","id":%s,"result":{"protocolVersion":"2025-11-25","capabilities":{"tools":{}},"serverInfo":{"name":"c","version":"1"}}}\n' "$id";;
    *'"method":"tools/list"'*) printf '{"jsonrpc":"2.0","id":%s,"result":{"tools":[{"name":"die","inputSchema":{"type":"object"}}]}}\n' "$id";;
    *'"method":"tools/call"'*) echo "dying mid-call" >&2; exit 1;;
    *) [ -n "$id" ] && printf '{"jsonrpc":"2.0","id":%s,"result":{}}\n' "$id";;
  esac
done`

// TestStdioCrashMidCallIsUnavailable is the regression test for issue 6
// item 11 (found by trying the binary): a stdio child that exits during a
// call proves its connection gone, like a reset HTTP connection, so the call
// gets a retryable upstream_unavailable (the gateway restarts the child), not
// a non-retryable upstream_error "calling tools/call: EOF", shared session or
// per_agent.
func TestStdioCrashMidCallIsUnavailable(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	_, cs := startGateway(t, ctx, fmt.Sprintf("upstreams:\n  c: {command: sh, args: [-c, %q]}\n  p: {command: sh, args: [-c, %q], session: per_agent}\n", crashMidCall, crashMidCall))
	for _, name := range []string{"c__die", "p__die"} {
		res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: name})
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if f := failureOf(t, res); f.Type != authmap.TypeUpstreamUnavailable || !f.Retryable {
			t.Errorf("%s: failure = %+v, want a retryable upstream_unavailable", name, f)
		}
	}
}

// TestSSEDropMidCallIsUnavailable is the regression test for issue 6 item 11
// (SSE; found by trying the binary): an SSE upstream whose event stream
// closes during a call ends that call with a bare EOF, which proves the
// connection gone: a retryable upstream_unavailable, not a non-retryable
// upstream_error "calling tools/call: EOF".
func TestSSEDropMidCallIsUnavailable(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	s := mcp.NewServer(&mcp.Implementation{Name: "sse", Version: "1"}, nil)
	started, release := make(chan struct{}, 1), make(chan struct{})
	s.AddTool(&mcp.Tool{Name: "hang", InputSchema: json.RawMessage(`{"type":"object"}`)}, func(ctx context.Context, _ *mcp.CallToolRequest) (*mcp.CallToolResult, error) {
		select {
		case started <- struct{}{}:
		default:
		}
		select {
		case <-ctx.Done():
		case <-release:
		}
		return &mcp.CallToolResult{}, nil
	})
	hs := httptest.NewServer(mcp.NewSSEHandler(func(*http.Request) *mcp.Server { return s }, nil))
	t.Cleanup(hs.Close)
	t.Cleanup(func() { close(release) }) // runs first: no handler holds hs.Close up
	_, cs := startGateway(t, ctx, fmt.Sprintf("health_interval: 1h\nupstreams:\n  a: {url: %s, transport: sse, timeout: 10s}\n", hs.URL))
	go func() {
		select {
		case <-started:
			hs.CloseClientConnections()
		case <-ctx.Done():
		}
	}()
	res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "a__hang"})
	if err != nil {
		t.Fatal(err)
	}
	if f := failureOf(t, res); f.Type != authmap.TypeUpstreamUnavailable || !f.Retryable {
		t.Errorf("failure = %+v, want a retryable upstream_unavailable", f)
	}
}

// TestUpstreamDiesMidCall: an HTTP upstream that dies while a call that
// goes through the SDK's client is in flight (a progress token, or
// fast_path: false) ends it with a retryable upstream_unavailable, as the
// fast path does and as the README promises for a lost connection. The SDK
// formatted the cause with %v (third_party/go-sdk/PATCH.md, change 6), so
// the call got a non-retryable upstream_error: "standalone SSE stream:
// failed to reconnect ...: connection refused" after its reconnect attempts
// (about 19 s) from an upstream that gives its events ids, "request
// terminated without response" at once from one that does not.
func TestUpstreamDiesMidCall(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name     string
		fastPath bool
		token    bool
		resume   bool // the upstream keeps events for resumption: the SDK reconnects
	}{
		{"progress token", true, true, false},
		{"fast_path false", false, false, false},
		{"fast path", true, false, false},
		{"progress token, resumable", true, true, true},
		{"fast_path false, resumable", false, false, true},
		{"fast path, resumable", true, false, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
			defer cancel()
			started, stop := make(chan struct{}, 1), make(chan struct{})
			s := mcp.NewServer(&mcp.Implementation{Name: "dies", Version: "1"}, nil)
			s.AddTool(&mcp.Tool{Name: "block", InputSchema: json.RawMessage(`{"type":"object"}`)}, func(ctx context.Context, req *mcp.CallToolRequest) (*mcp.CallToolResult, error) {
				// The answer stream is under way (its head sent) before
				// the upstream dies: a ping on it.
				if err := req.Session.Ping(ctx, nil); err != nil {
					return nil, err
				}
				started <- struct{}{}
				// Nothing can reach the dead upstream to end the call (a
				// resumable one outlives its connection): stop ends it
				// before hs.Close waits for it (it hung a loaded run).
				select {
				case <-ctx.Done():
				case <-stop:
				}
				return nil, ctx.Err()
			})
			var opts *mcp.StreamableHTTPOptions
			if tc.resume {
				opts = &mcp.StreamableHTTPOptions{EventStore: mcp.NewMemoryEventStore(nil)}
			}
			hs := httptest.NewServer(mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return s }, opts))
			t.Cleanup(hs.Close)
			t.Cleanup(func() { close(stop) }) // before hs.Close
			_, cs := startGateway(t, ctx, fmt.Sprintf("fast_path: %v\nhealth_interval: 1h\nupstreams:\n  d: {url: %s/mcp, timeout: 5m}\n", tc.fastPath, hs.URL))

			type outcome struct {
				res *mcp.CallToolResult
				err error
			}
			done := make(chan outcome, 1)
			go func() {
				params := &mcp.CallToolParams{Name: "d__block", Arguments: map[string]any{}}
				if tc.token {
					params.SetProgressToken("p")
				}
				res, err := cs.CallTool(ctx, params)
				done <- outcome{res, err}
			}()
			recv(t, ctx, started, "the call to reach the upstream")
			// The listener first: a connection the gateway opened between
			// the two (a GET stream) would hold hs.Close forever (it waits
			// for active requests; it hung a loaded run for 8 minutes).
			_ = hs.Listener.Close()
			hs.CloseClientConnections()

			o := recv(t, ctx, done, "the call's answer")
			if o.err != nil {
				t.Fatalf("call: %v, want a typed result", o.err)
			}
			if f := failureOf(t, o.res); f.Type != authmap.TypeUpstreamUnavailable || !f.Retryable {
				t.Errorf("call whose upstream died = %+v, want retryable upstream_unavailable", f)
			}
		})
	}
}
