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
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/modelcontextprotocol/go-sdk/mcp"
	"github.com/rs/zerolog"

	"github.com/credgate/credgate/authmap"
	"github.com/credgate/credgate/breaker"
)

// reloadUpstreamMode makes the test binary the stdio upstream of the reload
// tests (see TestMain): pid answers the process id, wait waits until the
// file its argument names exists (creating <file>.started first), and the
// variable TOOL, when set, names one more tool.
const reloadUpstreamMode = "reload"

func reloadUpstream() {
	srv := mcp.NewServer(&mcp.Implementation{Name: "reload", Version: "1"}, nil)
	schema := json.RawMessage(`{"type":"object","properties":{"file":{"type":"string"}}}`)
	reply := func(s string) *mcp.CallToolResult {
		return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: s}}}
	}
	srv.AddTool(&mcp.Tool{Name: "pid", InputSchema: schema}, func(context.Context, *mcp.CallToolRequest) (*mcp.CallToolResult, error) {
		return reply(strconv.Itoa(os.Getpid())), nil
	})
	srv.AddTool(&mcp.Tool{Name: "wait", InputSchema: schema}, func(ctx context.Context, req *mcp.CallToolRequest) (*mcp.CallToolResult, error) {
		var args struct{ File string }
		_ = json.Unmarshal(req.Params.Arguments, &args)
		_ = os.WriteFile(args.File+".started", nil, 0o600)
		for {
			if _, err := os.Stat(args.File); err == nil {
				return reply("waited " + strconv.Itoa(os.Getpid())), nil
			}
			select {
			case <-ctx.Done():
				return nil, ctx.Err()
			case <-time.After(5 * time.Millisecond): // polling the file the test writes
			}
		}
	})
	if tool := os.Getenv("TOOL"); tool != "" {
		srv.AddTool(&mcp.Tool{Name: tool, InputSchema: schema}, func(context.Context, *mcp.CallToolRequest) (*mcp.CallToolResult, error) {
			return reply(tool), nil
		})
	}
	_ = srv.Run(context.Background(), &mcp.StdioTransport{})
}

// reloadYAML is a config of reload upstreams: each entry is "name" or
// "name TOOL" (the upstream's extra tool), in that order.
func reloadYAML(t *testing.T, head string, ups ...string) string {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	b.WriteString(head)
	b.WriteString("upstreams:\n")
	for _, u := range ups {
		name, tool, _ := strings.Cut(u, " ")
		env := fmt.Sprintf("%s: %s", rawUpstreamEnv, reloadUpstreamMode)
		if tool != "" {
			env += ", TOOL: " + tool
		}
		fmt.Fprintf(&b, "  %s:\n    command: %q\n    env: {%s}\n", name, self, env)
	}
	return b.String()
}

// reloadTo puts yaml in force on g.
func reloadTo(t *testing.T, g *Server, yaml string) error {
	t.Helper()
	cfg, err := ParseConfig([]byte(yaml), nil)
	if err != nil {
		t.Fatalf("ParseConfig: %v", err)
	}
	return g.Reload(cfg)
}

// listChanges returns an agent's options that count its tools/list_changed
// notifications on the returned channel.
func listChanges() (*mcp.ClientOptions, chan struct{}) {
	ch := make(chan struct{}, 64)
	return &mcp.ClientOptions{ToolListChangedHandler: func(context.Context, *mcp.ToolListChangedRequest) {
		select {
		case ch <- struct{}{}:
		default:
		}
	}}, ch
}

// settleListChanged makes sure no tools/list_changed from before is still on
// its way to the agent: the SDK sends one, debounced, after each change, and
// the notifications of a session arrive in order, so once the one for a
// change made here has arrived, none is pending; then ch is emptied.
func settleListChanged(t *testing.T, ctx context.Context, g *Server, ch chan struct{}) {
	t.Helper()
	g.mcp.AddTool(&mcp.Tool{Name: "settle", InputSchema: json.RawMessage(`{"type":"object"}`)}, func(context.Context, *mcp.CallToolRequest) (*mcp.CallToolResult, error) {
		return &mcp.CallToolResult{}, nil
	})
	g.mcp.RemoveTools("settle")
	select {
	case <-ch:
	case <-ctx.Done():
		t.Fatal("no tools/list_changed for a change")
	}
	for {
		select {
		case <-ch:
		default:
			return
		}
	}
}

// pidOf calls upstream up's pid tool through the agent.
func pidOf(t *testing.T, ctx context.Context, cs *mcp.ClientSession, up string) int {
	t.Helper()
	pid, err := strconv.Atoi(callText(t, ctx, cs, up+"__pid", nil))
	if err != nil {
		t.Fatalf("%s__pid: %v", up, err)
	}
	return pid
}

// waitStopped waits until u's run has returned (its sessions and children
// closed), then until the process pid is gone.
func waitStopped(t *testing.T, ctx context.Context, u *upstream, pid int) {
	t.Helper()
	select {
	case <-u.stopped:
	case <-ctx.Done():
		t.Fatalf("upstream %q was not stopped", u.name)
	}
	waitFor(t, ctx, func() bool { return syscall.Kill(pid, 0) != nil })
}

// Issue 8 (hot reload): only what changed restarts. An untouched upstream
// keeps its *upstream, session and child (same PID); a removed one stops and
// its child ends; a changed one gets a new child; an added one connects; and
// the agent is told its tools changed.
func TestReloadRestartsOnlyWhatChanged(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	g := newTestGateway(t, ctx, reloadYAML(t, "", "a", "b", "c one"))
	opts, changed := listChanges()
	cs := agent(t, ctx, g, opts)
	if diff := cmp.Diff([]string{"a__pid", "a__wait", "b__pid", "b__wait", "c__one", "c__pid", "c__wait"}, toolNames(t, ctx, cs)); diff != "" {
		t.Fatalf("tools before mismatch (-want +got):\n%s", diff)
	}
	ua, ub, uc := g.upstream("a"), g.upstream("b"), g.upstream("c")
	sessA := ua.session.Load()
	pa, pb, pc := pidOf(t, ctx, cs, "a"), pidOf(t, ctx, cs, "b"), pidOf(t, ctx, cs, "c")
	settleListChanged(t, ctx, g, changed)

	if err := reloadTo(t, g, reloadYAML(t, "", "a", "c two", "d")); err != nil {
		t.Fatalf("Reload: %v", err)
	}
	select {
	case <-changed:
	case <-ctx.Done():
		t.Fatal("the agent got no tools/list_changed")
	}
	want := []string{"a__pid", "a__wait", "c__pid", "c__two", "c__wait", "d__pid", "d__wait"}
	waitFor(t, ctx, func() bool { return slices.Equal(want, toolNames(t, ctx, cs)) })

	if g.upstream("a") != ua || ua.session.Load() != sessA {
		t.Error("the untouched upstream was replaced or reconnected")
	}
	if got := pidOf(t, ctx, cs, "a"); got != pa {
		t.Errorf("the untouched upstream's child changed: pid %d, was %d", got, pa)
	}
	if g.upstream("c") == uc {
		t.Error("the changed upstream was kept")
	}
	if got := pidOf(t, ctx, cs, "c"); got == pc {
		t.Error("the changed upstream kept its child")
	}
	if pidOf(t, ctx, cs, "d") == 0 {
		t.Error("the added upstream does not serve")
	}
	waitStopped(t, ctx, ub, pb)
	waitStopped(t, ctx, uc, pc)
	if g.upstream("b") != nil {
		t.Error("the removed upstream is still in force")
	}
	h := g.Health()
	if h.Config.Version != 2 || h.Config.LastError != "" || h.Config.LastAttemptAt == nil {
		t.Errorf("health config = %+v, want version 2 and no error", *h.Config)
	}
	if _, ok := h.Upstreams["b"]; ok || !h.Upstreams["d"].Connected {
		t.Errorf("health upstreams after reload: %v", h.Upstreams)
	}

	// Removing an upstream takes its tools away at once.
	if err := reloadTo(t, g, reloadYAML(t, "", "a", "c two")); err != nil {
		t.Fatal(err)
	}
	if g.catalog.hasTool("d__pid") {
		t.Error("the removed upstream's tools are still exposed")
	}
	if err := reloadTo(t, g, reloadYAML(t, "", "a", "c two", "d")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, ctx, func() bool { return g.catalog.hasTool("d__pid") })

	// The same config again changes nothing, not even the version.
	if err := reloadTo(t, g, reloadYAML(t, "", "a", "c two", "d")); err != nil {
		t.Fatal(err)
	}
	if v := g.Health().Config.Version; v != 4 {
		t.Errorf("an unchanged config moved the version to %d, want 4", v)
	}
}

// Issue 8 (hot reload): an invalid config, in a file or given in code, is
// rejected with the reason while the old config keeps serving, and /health
// shows why (without the secrets the file holds); the next good one is put
// in force and clears the error. POST /admin/reload does the same behind
// the admin token.
func TestReloadRejectsInvalid(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	const adminHead = "admin: {token: reload-admin-token-123}\n"
	path := filepath.Join(t.TempDir(), "gateway.yaml")
	writeFile(t, path, reloadYAML(t, adminHead, "a"))
	cfg, err := LoadConfig(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	var logs syncBuffer
	log := zerolog.New(zerolog.MultiLevelWriter(zerolog.NewTestWriter(t), &logs)).Level(zerolog.InfoLevel)
	g, err := New(cfg, &Options{Logger: &log, ConfigFile: path, LoadConfig: func() (*Config, error) { return LoadConfig(path, nil) }})
	if err != nil {
		t.Fatal(err)
	}
	g.Start(ctx)
	t.Cleanup(func() { _ = g.Close() })
	if err := g.WaitTried(ctx); err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(g.Handler())
	t.Cleanup(hs.Close)
	cs := agent(t, ctx, g, nil)
	pa := pidOf(t, ctx, cs, "a")

	// A file that does not validate: an unknown transport, and a header
	// whose secret must not show anywhere.
	const secret = "sk-reload-secret-0123456789"
	broken := reloadYAML(t, adminHead, "a") + "  x:\n    transport: carrier-pigeon\n    url: http://127.0.0.1:1/mcp\n    headers: {Authorization: Bearer " + secret + "}\n"
	writeFile(t, path, broken)
	rejected := g.ReloadConfig(authmap.TriggerFile)
	if rejected == nil || !strings.Contains(rejected.Error(), "upstreams.x.transport") {
		t.Fatalf("ReloadConfig(broken) = %v, want it to name upstreams.x.transport", rejected)
	}
	h := g.Health()
	if !strings.Contains(h.Config.LastError, "upstreams.x.transport") || h.Config.Version != 1 || h.Config.LastAttemptAt == nil || h.Config.Path != path {
		t.Errorf("health config after a rejected reload = %+v", *h.Config)
	}
	if got := pidOf(t, ctx, cs, "a"); got != pa {
		t.Errorf("the old config stopped serving: pid %d, was %d", got, pa)
	}
	if _, ok := g.config().Upstreams["x"]; ok {
		t.Error("the rejected config is in force")
	}
	if !strings.Contains(logs.String(), "config reload rejected") {
		t.Error("the rejection was not logged")
	}

	// A file emptied, or cut short of every upstream (an editor or a
	// redirect caught mid-write), is rejected, not applied as "remove all".
	for name, body := range map[string]string{"empty": " \n", "no upstreams": adminHead + "# upstreams: cut off here\n"} {
		writeFile(t, path, body)
		err := g.ReloadConfig(authmap.TriggerFile)
		if err == nil || !strings.Contains(err.Error(), map[string]string{"empty": "is empty", "no upstreams": "upstreams: the new config has none"}[name]) {
			t.Errorf("ReloadConfig(%s) = %v, want it rejected, saying why", name, err)
		}
		if got := pidOf(t, ctx, cs, "a"); got != pa {
			t.Errorf("after the %s file the old config stopped serving: pid %d, was %d", name, got, pa)
		}
	}
	writeFile(t, path, broken)

	// A config built in code is validated too.
	if err := g.Reload(nil); err == nil {
		t.Error("Reload(nil config) worked")
	}
	cfg2, err := ParseConfig([]byte(reloadYAML(t, adminHead, "a")), nil)
	if err != nil {
		t.Fatal(err)
	}
	cfg2.Upstreams["a"].Session = "sometimes"
	if err := g.Reload(cfg2); err == nil || !strings.Contains(err.Error(), "upstreams.a.session") {
		t.Errorf("Reload(invalid) = %v, want it to name upstreams.a.session", err)
	}

	// The admin endpoint: refused without the token; with it, the same
	// rejection, then the fixed file applied.
	post := func(token string) (int, map[string]any) {
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, hs.URL+"/admin/reload", nil)
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var out map[string]any
		_ = json.NewDecoder(resp.Body).Decode(&out)
		return resp.StatusCode, out
	}
	if code, _ := post(""); code != http.StatusUnauthorized {
		t.Errorf("POST /admin/reload without the token: %d", code)
	}
	code, out := post("reload-admin-token-123")
	if code != http.StatusUnprocessableEntity || !strings.Contains(fmt.Sprint(out["error"]), "upstreams.x.transport") {
		t.Errorf("POST /admin/reload of the broken file: %d %v", code, out)
	}
	for _, surface := range []string{fmt.Sprint(out), h.Config.LastError, rejected.Error(), logs.String()} {
		if strings.Contains(surface, secret) {
			t.Errorf("the secret leaked: %s", surface)
		}
	}

	writeFile(t, path, reloadYAML(t, adminHead, "a", "b"))
	code, out = post("reload-admin-token-123")
	if code != http.StatusOK {
		t.Fatalf("POST /admin/reload of the fixed file: %d %v", code, out)
	}
	h = g.Health()
	if h.Config.LastError != "" || h.Config.Version != 2 {
		t.Errorf("health config after the fix = %+v, want version 2 and no error", *h.Config)
	}
	waitFor(t, ctx, func() bool { return g.catalog.hasTool("b__pid") })
	if got := pidOf(t, ctx, cs, "a"); got != pa {
		t.Errorf("the untouched upstream's child changed: pid %d, was %d", got, pa)
	}

	// After Close, nothing is reloaded.
	_ = g.Close()
	if err := g.ReloadConfig(authmap.TriggerAdmin); !errors.Is(err, ErrShuttingDown) {
		t.Errorf("ReloadConfig after Close = %v, want ErrShuttingDown", err)
	}
}

// Issue 8 (hot reload): calls in flight finish on the config they started
// with: on an upstream the reload removes, and on one it replaces, while new
// calls go to the replacement. The old ones stop once their calls are done.
func TestReloadInFlightCallsFinish(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	g := newTestGateway(t, ctx, reloadYAML(t, "", "r", "c one", "z"))
	cs := agent(t, ctx, g, nil)
	ur, uc, uz := g.upstream("r"), g.upstream("c"), g.upstream("z")
	pr, pc, pz := pidOf(t, ctx, cs, "r"), pidOf(t, ctx, cs, "c"), pidOf(t, ctx, cs, "z")
	dir := t.TempDir()

	type result struct {
		text string
		err  error
	}
	start := func(tool, file string) chan result {
		ch := make(chan result, 1)
		go func() {
			res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: tool, Arguments: map[string]any{"file": file}})
			if err == nil && res.IsError {
				err = errors.New(text(res))
			}
			r := result{err: err}
			if err == nil {
				r.text = text(res)
			}
			ch <- r
		}()
		waitFor(t, ctx, func() bool { _, err := os.Stat(file + ".started"); return err == nil })
		return ch
	}
	onR := start("r__wait", filepath.Join(dir, "r"))
	onC := start("c__wait", filepath.Join(dir, "c"))

	if err := reloadTo(t, g, reloadYAML(t, "", "c two")); err != nil {
		t.Fatalf("Reload: %v", err)
	}
	if g.catalog.hasTool("r__wait") {
		t.Error("the removed upstream's tools are still listed")
	}
	if got := pidOf(t, ctx, cs, "c"); got == pc {
		t.Error("a new call went to the replaced upstream")
	}
	select {
	case r := <-onR:
		t.Fatalf("the call on the removed upstream ended early: %+v", r)
	case r := <-onC:
		t.Fatalf("the call on the replaced upstream ended early: %+v", r)
	default:
	}
	// z, removed too but idle, stops at once; r, retired at the same time,
	// keeps its session while its call runs.
	waitStopped(t, ctx, uz, pz)
	ur.mu.Lock()
	runCtx := ur.ctx
	ur.mu.Unlock()
	select {
	case <-ur.stopped:
		t.Fatal("the removed upstream stopped with a call in flight")
	default:
		if runCtx.Err() != nil || ur.session.Load() == nil {
			t.Fatal("the removed upstream is stopping with a call in flight")
		}
	}

	writeFile(t, filepath.Join(dir, "r"), "go")
	writeFile(t, filepath.Join(dir, "c"), "go")
	for name, ch := range map[string]chan result{"r": onR, "c": onC} {
		select {
		case r := <-ch:
			if r.err != nil || !strings.HasPrefix(r.text, "waited ") {
				t.Errorf("the call in flight on %s: %+v", name, r)
			}
		case <-ctx.Done():
			t.Fatalf("the call in flight on %s never ended", name)
		}
	}
	waitStopped(t, ctx, ur, pr)
	waitStopped(t, ctx, uc, pc)
	if _, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "r__pid"}); err == nil {
		t.Error("a call to the removed upstream's tool worked")
	}
}

// Issue 8 (hot reload): reloads concurrent with calls are safe (run under
// the race detector). Calls on an untouched upstream all succeed on the same
// child; calls on an upstream replaced at every reload succeed, or fail with
// a retryable typed failure, never a protocol error.
func TestReloadUnderLoad(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), 90*time.Second)
	defer cancel()
	g := newTestGateway(t, ctx, reloadYAML(t, "", "s", "f x"))
	cs := agent(t, ctx, g, nil)
	ps := pidOf(t, ctx, cs, "s")

	var stop atomic.Bool
	var wg sync.WaitGroup
	var okS, okF, retryF atomic.Int64
	for i := range 4 {
		up := "s"
		if i%2 == 1 {
			up = "f"
		}
		wg.Go(func() {
			for !stop.Load() && ctx.Err() == nil {
				res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: up + "__pid"})
				switch {
				case err != nil:
					t.Errorf("%s__pid: %v", up, err)
					return
				case !res.IsError && up == "s":
					if text(res) != strconv.Itoa(ps) {
						t.Errorf("the untouched upstream's child changed: %s", text(res))
					}
					okS.Add(1)
				case !res.IsError:
					okF.Add(1)
				case up == "f":
					f := failureOf(t, res)
					if f.Type != authmap.TypeUpstreamUnavailable || !f.Retryable {
						t.Errorf("f__pid failed with %+v", f)
					}
					retryF.Add(1)
				default:
					t.Errorf("s__pid failed: %s", text(res))
				}
			}
		})
	}
	for i := range 6 {
		tool := "y"
		if i%2 == 1 {
			tool = "x"
		}
		if err := reloadTo(t, g, reloadYAML(t, "", "s", "f "+tool)); err != nil {
			t.Errorf("reload %d: %v", i, err)
		}
	}
	stop.Store(true)
	wg.Wait()
	if okS.Load() == 0 || okF.Load() == 0 {
		t.Errorf("calls served: s %d, f %d", okS.Load(), okF.Load())
	}
	t.Logf("calls: s ok %d; f ok %d, retryable %d; config version %d", okS.Load(), okF.Load(), retryF.Load(), g.Health().Config.Version)
	if v := g.Health().Config.Version; v != 7 {
		t.Errorf("config version %d after 6 reloads, want 7", v)
	}
}

// Issue 8 (hot reload): a changed credential is loaded before it is in
// force and reaches the untouched upstream at once, the redactor learns
// its value, and settings only a restart applies keep their old values and
// are reported.
func TestReloadCredentialsAndRestartKeys(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	const first, second = "tok-first-0123456789", "tok-second-9876543210"
	g, cs, _, up := valueTokGateway(t, ctx, "", first)
	api := g.upstream("api")
	if r, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "api__echo", Arguments: map[string]any{"text": "one"}}); err != nil || r.IsError {
		t.Fatalf("call before: %v %v", r, err)
	}
	up.accept(second)
	next := "listen: 127.0.0.1:1\nstateless: true\nmax_connections: 7\n" + tokConfig("", "source: {value: "+second+"}", up.url())
	if err := reloadTo(t, g, next); err != nil {
		t.Fatalf("Reload: %v", err)
	}
	if g.upstream("api") != api {
		t.Error("a credential change replaced the upstream")
	}
	if v := g.credential("tok").Value(); v != second {
		t.Fatalf("credential after reload = %q", v)
	}
	if r, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "api__echo", Arguments: map[string]any{"text": "two"}}); err != nil || r.IsError {
		t.Fatalf("call after: %v %v", r, err)
	}
	up.mu.Lock()
	last := up.seen[len(up.seen)-1]
	up.mu.Unlock()
	if last.Token != second {
		t.Errorf("the call after the reload sent %q", last.Token)
	}
	if s := g.redact("x " + second); strings.Contains(s, second) {
		t.Errorf("the redactor does not know the new value: %s", s)
	}
	if g.config().Listen != DefaultListen || g.config().Stateless || g.config().MaxConnections != 0 {
		t.Errorf("restart-only settings changed in force: listen %q stateless %v max_connections %d", g.config().Listen, g.config().Stateless, g.config().MaxConnections)
	}
	if diff := cmp.Diff([]string{"listen", "stateless", "max_connections"}, g.Health().Config.RestartRequired); diff != "" {
		t.Errorf("restart_required mismatch (-want +got):\n%s", diff)
	}
	js, _ := json.Marshal(g.Health())
	if strings.Contains(string(js), second) || strings.Contains(string(js), first) {
		t.Errorf("health shows a credential value: %s", js)
	}

	// A credential the new config adds that cannot be read rejects it.
	bad := fmt.Sprintf("credentials:\n  tok: {source: {value: %s}}\n  missing: {source: {env: CREDGATE_TEST_UNSET}}\n"+
		"upstreams:\n  api: {url: %s, credential: tok}\n  other: {url: %s, credential: missing}\n", second, up.url(), up.url())
	err := reloadTo(t, g, bad)
	if err == nil || !strings.Contains(err.Error(), `credential "missing"`) {
		t.Errorf("Reload with an unreadable new credential = %v", err)
	}
	if g.credential("missing") != nil || g.upstream("other") != nil {
		t.Error("the rejected config's credential or upstream is in force")
	}
}

// TestReloadRenamedCredentialBreaker: a credential a reload renames (or
// unbinds) leaves no breaker behind: /health and the metrics showed the old
// name's breaker beside the new one's until a restart (found trying the
// gateway from outside).
func TestReloadRenamedCredentialBreaker(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	const value = "tok-value-0123456789"
	g, cs, _, up := valueTokGateway(t, ctx, "", value)
	callOK(t, ctx, cs, "api__echo")
	if _, ok := g.Health().Upstreams["api"].CredentialBreakers["tok"]; !ok {
		t.Fatalf("no breaker for tok before the reload: %+v", g.Health().Upstreams["api"].CredentialBreakers)
	}
	renamed := fmt.Sprintf("credentials:\n  renamed: {source: {value: %s}}\nupstreams:\n  api: {url: %s, credential: renamed}\n", value, up.url())
	if err := reloadTo(t, g, renamed); err != nil {
		t.Fatal(err)
	}
	callOK(t, ctx, cs, "api__echo")
	got := g.Health().Upstreams["api"].CredentialBreakers
	if _, old := got["tok"]; old || len(got) != 1 {
		t.Errorf("credential breakers after the rename: %+v; want renamed's only", got)
	}
	for _, s := range g.breakers.Snapshot() {
		if s.Name == breaker.Name("api", "tok") {
			t.Errorf("the breaker set still holds %s", s.Name)
		}
	}

	// Renamed back while calls keep coming: the replaced upstream serves
	// calls with its old binding until its successor takes over, which
	// makes its breaker again; /health shows only the bound one. Those
	// calls still send the credential (they went without one, and failed
	// credential_invalid).
	stop := make(chan struct{})
	var callers sync.WaitGroup
	var failed atomic.Int64
	for range 4 {
		callers.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				if res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "api__echo", Arguments: map[string]any{"text": "x"}}); err != nil || res.IsError {
					failed.Add(1)
				}
			}
		})
	}
	err := reloadTo(t, g, tokConfig("", "source: {value: "+value+"}", up.url()))
	close(stop)
	callers.Wait()
	if err != nil {
		t.Fatal(err)
	}
	if n := failed.Load(); n != 0 {
		t.Errorf("%d calls failed while the reload renamed the credential; want none", n)
	}
	callOK(t, ctx, cs, "api__echo")
	if got := g.Health().Upstreams["api"].CredentialBreakers; len(got) != 1 || got["tok"].State == "" {
		t.Errorf("credential breakers after renaming back under load: %+v; want tok's only", got)
	}
}

// What counts as a change of an upstream: any setting but its breaker's,
// and which credentials it binds; empty and absent lists are the same.
func TestSameUpstream(t *testing.T) {
	t.Parallel()
	parse := func(yaml string) *Config {
		t.Helper()
		cfg, err := ParseConfig([]byte(yaml), nil)
		if err != nil {
			t.Fatal(err)
		}
		return cfg
	}
	base := parse("upstreams:\n  a: {url: http://h/mcp, headers: {X-A: b}}\n")
	for _, tt := range []struct {
		name string
		yaml string
		same bool
	}{
		{"identical", "upstreams:\n  a: {url: http://h/mcp, headers: {X-A: b}}\n", true},
		{"breaker only", "upstreams:\n  a: {url: http://h/mcp, headers: {X-A: b}, breaker: {failures: 9}}\n", true},
		{"empty lists", "upstreams:\n  a: {url: http://h/mcp, headers: {X-A: b}, tools: {allow: [], deny: []}}\n", true},
		{"header", "upstreams:\n  a: {url: http://h/mcp, headers: {X-A: c}}\n", false},
		{"timeout", "upstreams:\n  a: {url: http://h/mcp, headers: {X-A: b}, timeout: 5s}\n", false},
		{"tool filter", "upstreams:\n  a: {url: http://h/mcp, headers: {X-A: b}, tools: {deny: [x]}}\n", false},
		{"credential bound", "credentials:\n  c: {source: {value: v}, inject: {header: X-K}}\nupstreams:\n  a: {url: http://h/mcp, headers: {X-A: b}, credential: c}\n", false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			next := parse(tt.yaml)
			if got := sameUpstream(base.Upstreams["a"], base.Credentials, next.Upstreams["a"], next.Credentials); got != tt.same {
				t.Errorf("sameUpstream = %v, want %v", got, tt.same)
			}
		})
	}
}

// Issue 8 (hot reload): global settings apply without touching upstreams:
// a new tool_separator renames the exposed tools (list_changed sent), new
// classify rules classify the next failure, a breaker setting applies, and
// the upstream keeps its session throughout.
func TestReloadGlobals(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	up := newTestUpstream(t, "a", "echo")
	g := newTestGateway(t, ctx, fmt.Sprintf("upstreams:\n  a: {url: %s}\n", up.url()))
	opts, changed := listChanges()
	cs := agent(t, ctx, g, opts)
	ua := g.upstream("a")
	sess := ua.session.Load()
	settleListChanged(t, ctx, g, changed)

	next := fmt.Sprintf("tool_separator: .\nclassify:\n  rules:\n    - {match: {body: maintenance window}, type: upstream_unavailable}\n"+
		"upstreams:\n  a: {url: %s, breaker: {failures: 9}}\n", up.url())
	if err := reloadTo(t, g, next); err != nil {
		t.Fatalf("Reload: %v", err)
	}
	select {
	case <-changed:
	case <-ctx.Done():
		t.Fatal("no tools/list_changed for the new separator")
	}
	if diff := cmp.Diff([]string{"a.echo"}, toolNames(t, ctx, cs)); diff != "" {
		t.Errorf("tools mismatch (-want +got):\n%s", diff)
	}
	if got := callText(t, ctx, cs, "a.echo", map[string]any{"text": "hi"}); got != "a:echo:hi" {
		t.Errorf("a.echo = %q", got)
	}
	if g.upstream("a") != ua || ua.session.Load() != sess {
		t.Error("a global change replaced or reconnected the upstream")
	}
	if f, ok := g.classifier.ClassifyText("maintenance window", "", authmap.Knowledge{}); !ok || f.Type != authmap.TypeUpstreamUnavailable {
		t.Errorf("the new classify rule is not in force: %+v %v", f, ok)
	}
	if v := g.Health().Config.Version; v != 2 {
		t.Errorf("version %d, want 2", v)
	}
	// A breaker change alone is a change too.
	if err := reloadTo(t, g, strings.Replace(next, "failures: 9", "failures: 3", 1)); err != nil {
		t.Fatal(err)
	}
	if v := g.Health().Config.Version; v != 3 || g.upstream("a") != ua {
		t.Errorf("after a breaker change: version %d, same upstream %v", v, g.upstream("a") == ua)
	}
}

// BenchmarkCallGate is what counting a call for reloads adds to it: a call
// enters and leaves the gate twice (tools/call, then the forwarded request).
func BenchmarkCallGate(b *testing.B) {
	var c callGate
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if c.enter() {
				c.enter()
				c.leave()
				c.leave()
			}
		}
	})
}

// The gate a reload drains an upstream through: calls in flight hold it
// open (calls nested in them still enter), the last to leave closes it, and
// then nothing enters.
func TestCallGate(t *testing.T) {
	t.Parallel()
	var c callGate
	if !c.enter() {
		t.Fatal("a new gate refused a call")
	}
	idle := c.drain()
	select {
	case <-idle:
		t.Fatal("drained with a call in flight")
	default:
	}
	if !c.enter() || c.inFlight() != 2 {
		t.Fatal("a call nested in one in flight was refused")
	}
	c.leave()
	c.leave()
	select {
	case <-idle:
	default:
		t.Fatal("not drained once the calls left")
	}
	if c.enter() {
		t.Error("a drained gate let a call in")
	}
	if c.drain() != idle {
		t.Error("a second drain returned another channel")
	}

	var idleGate callGate
	select {
	case <-idleGate.drain():
	default:
		t.Error("an idle gate did not drain at once")
	}
}

// Issue 8 (hot reload): a replacement that cannot start still takes over
// once its first attempt failed: the old upstream stops, and the upstream
// shows as down with the new cause, its calls failing typed and retryable.
func TestReloadReplacementThatFails(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	g := newTestGateway(t, ctx, reloadYAML(t, "", "c"))
	cs := agent(t, ctx, g, nil)
	uc := g.upstream("c")
	pc := pidOf(t, ctx, cs, "c")
	missing := filepath.Join(t.TempDir(), "no-such-command")
	if err := reloadTo(t, g, fmt.Sprintf("upstreams:\n  c: {command: %q}\n", missing)); err != nil {
		t.Fatalf("Reload: %v", err)
	}
	if g.upstream("c") == uc {
		t.Fatal("the old upstream is still in force")
	}
	waitStopped(t, ctx, uc, pc)
	h := g.Health().Upstreams["c"]
	if h.Connected || !strings.Contains(h.LastError, "no-such-command") {
		t.Errorf("health of the failed replacement: %+v", h)
	}
	res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "c__pid"})
	if err != nil {
		t.Fatal(err)
	}
	if f := failureOf(t, res); f.Type != authmap.TypeUpstreamUnavailable || !f.Retryable {
		t.Errorf("call to the failed replacement: %+v", f)
	}
}

// A config loaded twice from the same text compares equal, whatever
// sections it has, so that a reload of an unchanged file changes nothing.
func TestSameGlobals(t *testing.T) {
	t.Parallel()
	const yaml = `
admin: {token: admin-token-0123456789}
webhooks: {secret: hook-secret-0123456789}
lifecycle: {check_interval: 1m, startup: {fail_on: never}}
classify:
  rules:
    - {match: {status: 500, body: maintenance}, type: upstream_unavailable}
credentials:
  tok: {source: {value: tok-0123456789}, inject: {header: X-Key}, probe: {http: {url: "http://127.0.0.1:1/me"}}}
  ex: {source: {exec: {command: [cat, /dev/null]}}}
upstreams:
  a: {url: "http://127.0.0.1:1/mcp", credential: tok, tools: {deny: ["x*"]}, breaker: {failures: 3}}
`
	a, err := ParseConfig([]byte(yaml), nil)
	if err != nil {
		t.Fatal(err)
	}
	b, err := ParseConfig([]byte(yaml), nil)
	if err != nil {
		t.Fatal(err)
	}
	if !sameGlobals(a, b) || !sameUpstream(a.Upstreams["a"], a.Credentials, b.Upstreams["a"], b.Credentials) {
		t.Error("the same text loaded twice compares as a change")
	}
	c, err := ParseConfig([]byte(strings.Replace(yaml, "check_interval: 1m", "check_interval: 2m", 1)), nil)
	if err != nil {
		t.Fatal(err)
	}
	if sameGlobals(a, c) {
		t.Error("a lifecycle change compares equal")
	}
}

// TestReloadSaysWhatChanged: a reload's event says what it changed, the
// upstreams added, removed or replaced and the other settings, each
// credential by name; found trying the gateway: a reload that changed only
// the routes or a credential published an event that said nothing.
func TestReloadSaysWhatChanged(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	a, b := newTestUpstream(t, "a", "echo"), newTestUpstream(t, "b", "echo")
	base := fmt.Sprintf("credentials:\n  k: {source: {value: secret-value-1}}\nupstreams:\n  a: {url: %s}\n", a.url())
	g := newTestGateway(t, ctx, base)
	last := func() Event {
		t.Helper()
		evs := g.events.all()
		for i := len(evs) - 1; i >= 0; i-- {
			if evs[i].Type == EventConfig {
				return evs[i]
			}
		}
		t.Fatal("no config event")
		return Event{}
	}
	for _, step := range []struct{ yaml, want string }{
		{base + "routes:\n  - {tool: e, targets: [a__echo]}\n", "settings changed: routes"},
		{strings.Replace(base, "secret-value-1", "secret-value-2", 1) + "routes:\n  - {tool: e, targets: [a__echo]}\n", "settings changed: credentials.k"},
		{fmt.Sprintf("upstreams:\n  b: {url: %s}\n", b.url()), "upstreams added: b; upstreams removed: a; settings changed: credentials.k, routes"},
		{fmt.Sprintf("upstreams:\n  b: {url: %s}\n", b.url()), "nothing changed"},
		{fmt.Sprintf("upstreams:\n  b: {url: %s, breaker: {open_timeout: 10s}}\n", b.url()), "settings changed: upstreams.b.breaker"},
	} {
		cfg, err := ParseConfig([]byte(step.yaml), nil)
		if err != nil {
			t.Fatal(err)
		}
		if err := g.Reload(cfg); err != nil {
			t.Fatalf("reload: %v", err)
		}
		if e := last(); e.Kind != KindConfigReloaded || e.Detail != step.want {
			t.Errorf("event %s %q; want reloaded %q", e.Kind, e.Detail, step.want)
		}
		if strings.Contains(last().Detail, "secret-value") {
			t.Errorf("event detail shows a credential's value: %q", last().Detail)
		}
	}
}

// TestReloadAddedCredentialEventScope: a credential a reload adds with the
// upstream that uses it names that upstream and its tools in its first
// event (loaded, trigger config), which it read from the config still in
// force: none.
func TestReloadAddedCredentialEventScope(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	up := newTestUpstream(t, "a", "echo")
	g := newTestGateway(t, ctx, fmt.Sprintf("upstreams:\n  a: {url: %s}\n", up.url()))
	if err := reloadTo(t, g, fmt.Sprintf("credentials:\n  k: {source: {value: key-0123456789abcdef}}\nupstreams:\n  a: {url: %s}\n  b: {url: %s, credential: k}\n", up.url(), up.url())); err != nil {
		t.Fatal(err)
	}
	var found bool
	for _, e := range g.EventLog() {
		if e.Type == EventCredential && e.Credential == "k" && e.Kind == "loaded" {
			found = true
			if !slices.Equal(e.Upstreams, []string{"b"}) || !slices.Equal(e.Tools, []string{"b__*"}) {
				t.Errorf("k's loaded event: upstreams %v, tools %v; want [b], [b__*]", e.Upstreams, e.Tools)
			}
		}
	}
	if !found {
		t.Errorf("no loaded event for k: %+v", g.EventLog())
	}
}

// TestPolicyReloadNotifiesAgents: a reload that changes only policies (what
// an agent may see, not the catalog) sends tools/list_changed, as the
// README promises "when what they can see changes"; it sent none, and
// agents found out by a refused call.
func TestPolicyReloadNotifiesAgents(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	up := newTestUpstream(t, "a", "echo", "other")
	conf := func(deny string) string {
		return fmt.Sprintf("upstreams:\n  a: {url: %s}\nauth:\n  keys:\n    - {name: bob, key: %s}\npolicies:\n  - {agents: [bob], tools: {allow: ['*'], deny: [%s]}}\n", up.url(), keyOps, deny)
	}
	g := newTestGateway(t, ctx, conf(""))
	url := serveGateway(t, g)
	opts, ch := listChanges()
	cs := keyAgent(t, ctx, url, keyOps, opts)
	settleListChanged(t, ctx, g, ch)
	if err := reloadTo(t, g, conf("a__other")); err != nil {
		t.Fatal(err)
	}
	select {
	case <-ch:
	case <-ctx.Done():
		t.Fatal("no tools/list_changed after the policy reload")
	}
	res, err := cs.ListTools(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, tool := range res.Tools {
		if tool.Name == "a__other" {
			t.Errorf("a__other still listed after the policy denied it")
		}
	}
}

// TestReloadRefusesUndefinedCredential: a reload that points an upstream
// sending a defined credential at a name not defined (a typo) is refused,
// naming the key; it was taken with a warning, and the upstream's
// replacement, sending nothing, took the working instance down.
func TestReloadRefusesUndefinedCredential(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	up := newBearerUpstream(t, "echo")
	up.accept("tok-value-0123456789")
	cfg := "credentials:\n  tok: {source: {value: tok-value-0123456789}}\nupstreams:\n  api: {url: " + up.url() + ", credential: %s}\n"
	g, cs, _ := credGateway(t, ctx, fmt.Sprintf(cfg, "tok"), nil, nil)
	err := reloadTo(t, g, fmt.Sprintf(cfg, "tokk"))
	if err == nil || !strings.Contains(err.Error(), `upstreams.api.credential: "tokk" is not defined under credentials`) {
		t.Errorf("reload naming an undefined credential: %v, want refused", err)
	}
	callOK(t, ctx, cs, "api__echo")
}
