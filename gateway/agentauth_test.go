package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	"github.com/modelcontextprotocol/go-sdk/mcp"
	"github.com/rs/zerolog"

	"github.com/credgate/credgate/authmap"
	"github.com/credgate/credgate/routing"
)

// Keys of the tests in this file: long enough to be accepted.
const (
	keyReader = "reader-key-0123456789abcdef"
	keyOps    = "ops-key-0123456789abcdef0000"
	keyNobody = "nobody-key-0123456789abcdef00"
	keySlow   = "slow-key-0123456789abcdef0000"
)

// bearer adds an Authorization header to every request.
type bearer struct {
	key  string
	base http.RoundTripper
}

func (b bearer) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("Authorization", "Bearer "+b.key)
	return b.base.RoundTrip(r)
}

// serveGateway serves g's handler over HTTP until the test ends and returns
// its /mcp URL.
func serveGateway(t testing.TB, g *Server) string {
	t.Helper()
	hs := httptest.NewServer(g.Handler())
	t.Cleanup(hs.Close)
	return hs.URL + "/mcp"
}

// keyConnect connects an agent that sends key as its bearer token.
func keyConnect(ctx context.Context, url, key string, opts *mcp.ClientOptions) (*mcp.ClientSession, error) {
	hc := &http.Client{Transport: bearer{key: key, base: http.DefaultTransport}}
	return mcp.NewClient(&mcp.Implementation{Name: "agent", Version: "1"}, opts).Connect(ctx, &mcp.StreamableClientTransport{Endpoint: url, HTTPClient: hc, MaxRetries: -1}, nil)
}

func keyAgent(t testing.TB, ctx context.Context, url, key string, opts *mcp.ClientOptions) *mcp.ClientSession {
	t.Helper()
	cs, err := keyConnect(ctx, url, key, opts)
	if err != nil {
		t.Fatalf("connect with key: %v", err)
	}
	t.Cleanup(func() { _ = cs.Close() })
	return cs
}

// policyConfig is the config of the policy tests: upstream a with tools
// echo, list_x and delete_y, its prompt greet and its resource mem://shared.
func policyConfig(url string) string {
	return fmt.Sprintf(`
upstreams:
  a: {url: %s}
auth:
  keys:
    - {name: reader, key: %s, tools: {allow: ["a__echo", "a__list_*"]}}
    - {name: ops, key: %s}
    - {name: nobody, key: %s}
    - {name: slow, key: %s, rate: "2/m", tools: {allow: ["a__echo"]}}
policies:
  - agents: [ops]
    tools: {deny: ["a__delete_*"]}
`, url, keyReader, keyOps, keyNobody, keySlow)
}

// Regression test for issue 9 (per-agent policy): agents with different
// grants see different tool, prompt and resource lists, and anything
// outside their grants is refused with a typed forbidden failure, never
// forwarded.
func TestAgentPolicy(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	up := newTestUpstream(t, "a", "echo", "list_x", "delete_y")
	g := newTestGateway(t, ctx, policyConfig(up.url()))
	url := serveGateway(t, g)

	for _, tt := range []struct {
		key                        string
		tools, prompts, resources  []string
		forbiddenTool, allowedTool string
	}{
		{key: keyReader, tools: []string{"a__echo", "a__list_x"}, forbiddenTool: "a__delete_y", allowedTool: "a__echo"},
		{key: keyOps, tools: []string{"a__echo", "a__list_x"}, prompts: []string{"a__greet"}, resources: []string{"mem://shared"}, forbiddenTool: "a__delete_y", allowedTool: "a__list_x"},
		{key: keyNobody, forbiddenTool: "a__echo"},
	} {
		t.Run(tt.key[:strings.Index(tt.key, "-")], func(t *testing.T) {
			cs := keyAgent(t, ctx, url, tt.key, nil)
			if diff := cmp.Diff(tt.tools, toolNames(t, ctx, cs), cmpEmpty); diff != "" {
				t.Errorf("tools mismatch (-want +got):\n%s", diff)
			}
			var prompts, resources []string
			for p, err := range cs.Prompts(ctx, nil) {
				if err != nil {
					t.Fatal(err)
				}
				prompts = append(prompts, p.Name)
			}
			for r, err := range cs.Resources(ctx, nil) {
				if err != nil {
					t.Fatal(err)
				}
				resources = append(resources, r.URI)
			}
			if diff := cmp.Diff(tt.prompts, prompts, cmpEmpty); diff != "" {
				t.Errorf("prompts mismatch (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tt.resources, resources, cmpEmpty); diff != "" {
				t.Errorf("resources mismatch (-want +got):\n%s", diff)
			}

			before := up.calls.Load()
			res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: tt.forbiddenTool, Arguments: map[string]any{"text": "x"}})
			if err != nil {
				t.Fatalf("%s: %v", tt.forbiddenTool, err)
			}
			f := failureOf(t, res)
			if !res.IsError || f.Type != authmap.TypeForbidden || f.Retryable || f.Recovery != authmap.RecoveryGrantPermission || f.Provider != providerCredgate {
				t.Errorf("%s = %+v, want a forbidden failure from credgate", tt.forbiddenTool, f)
			}
			if up.calls.Load() != before {
				t.Errorf("a forbidden call reached the upstream")
			}
			// A name that exists nowhere is refused the same way: the
			// answer says nothing about what exists.
			res, err = cs.CallTool(ctx, &mcp.CallToolParams{Name: "zz__nothing"})
			if tt.key == keyReader && (err != nil || failureOf(t, res).Type != authmap.TypeForbidden) {
				t.Errorf("unknown tool outside the grants = %v, %v; want forbidden", res, err)
			}
			if tt.allowedTool != "" {
				res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: tt.allowedTool, Arguments: map[string]any{"text": "hi"}})
				if err != nil || res.IsError {
					t.Errorf("%s = %v, %v; want success", tt.allowedTool, res, err)
				}
			}
			if len(tt.prompts) == 0 {
				_, err := cs.GetPrompt(ctx, &mcp.GetPromptParams{Name: "a__greet"})
				if typ := rpcFailureType(err); typ != authmap.TypeForbidden {
					t.Errorf("prompts/get outside the grants = %v; want a -32010 error with a forbidden failure", err)
				}
			}
			if len(tt.resources) == 0 {
				_, err := cs.ReadResource(ctx, &mcp.ReadResourceParams{URI: "mem://shared"})
				if typ := rpcFailureType(err); typ != authmap.TypeForbidden {
					t.Errorf("resources/read outside the grants = %v; want a forbidden failure", err)
				}
			}
		})
	}
}

var cmpEmpty = cmp.Comparer(func(a, b []string) bool { return slices.Equal(a, b) })

// rpcFailureType returns the failure type in a -32010 JSON-RPC error's data.
func rpcFailureType(err error) authmap.Type {
	var rpc *jsonrpc.Error
	if !errors.As(err, &rpc) || rpc.Code != codeUpstreamFailure {
		return ""
	}
	var f authmap.Failure
	_ = json.Unmarshal(rpc.Data, &f)
	return f.Type
}

// Regression test for issue 9 (authentication): a missing or wrong key gets
// 401 with WWW-Authenticate: Bearer, and no session; a session opened with
// one key refuses requests with another.
func TestAgentAuthentication(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	up := newTestUpstream(t, "a", "echo")
	g := newTestGateway(t, ctx, policyConfig(up.url()))
	url := serveGateway(t, g)

	for _, auth := range []string{"", "Bearer wrong-key-0123456789abcdef", "Basic " + keyReader, keyReader, "Bearer " + keyReader + " x", "Bearer " + keyReader[:len(keyReader)-1]} {
		code, hdr, body := postMCP(t, ctx, url, auth, "", initializeBody)
		if code != http.StatusUnauthorized || !strings.HasPrefix(hdr.Get("WWW-Authenticate"), "Bearer") {
			t.Errorf("Authorization %q: %d %q (WWW-Authenticate %q); want 401 with a Bearer challenge", auth, code, body, hdr.Get("WWW-Authenticate"))
		}
		if auth != "" && !strings.Contains(hdr.Get("WWW-Authenticate"), `error="invalid_`) {
			t.Errorf("Authorization %q: challenge %q lacks an error code", auth, hdr.Get("WWW-Authenticate"))
		}
		if hdr.Get("Mcp-Session-Id") != "" {
			t.Errorf("Authorization %q opened a session", auth)
		}
	}
	// The scheme is matched without regard to case.
	if code, _, body := postMCP(t, ctx, url, "bearer "+keyReader, "", initializeBody); code != http.StatusOK {
		t.Errorf("lower-case bearer: %d %s", code, body)
	}
	// A session belongs to the agent that opened it.
	code, hdr, body := postMCP(t, ctx, url, "Bearer "+keyReader, "", initializeBody)
	sid := hdr.Get("Mcp-Session-Id")
	if code != http.StatusOK || sid == "" {
		t.Fatalf("initialize: %d %s", code, body)
	}
	list := `{"jsonrpc":"2.0","id":2,"method":"tools/list"}`
	if code, _, body := postMCP(t, ctx, url, "Bearer "+keyOps, sid, list); code != http.StatusForbidden {
		t.Errorf("another agent's key on reader's session: %d %s, want 403", code, body)
	}
}

// postMCP posts body to the gateway's /mcp with an Authorization header and
// a session id (each if non-empty).
func postMCP(t *testing.T, ctx context.Context, url, auth, sid, body string) (int, http.Header, string) {
	t.Helper()
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, url, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, text/event-stream")
	req.Header.Set("Mcp-Protocol-Version", "2025-11-25")
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	if sid != "" {
		req.Header.Set("Mcp-Session-Id", sid)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<16))
	return resp.StatusCode, resp.Header, string(b)
}

// Regression test for issue 9 (rate limits): an agent over its rate gets
// auth_failure/rate_limit_reached from provider credgate with
// retry_after_seconds, and the call is not forwarded; another agent is not
// affected.
func TestAgentRateLimit(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	up := newTestUpstream(t, "a", "echo")
	g := newTestGateway(t, ctx, policyConfig(up.url()))
	url := serveGateway(t, g)
	slow := keyAgent(t, ctx, url, keySlow, nil)
	for i := range 2 {
		if res, err := slow.CallTool(ctx, &mcp.CallToolParams{Name: "a__echo", Arguments: map[string]any{"text": "x"}}); err != nil || res.IsError {
			t.Fatalf("call %d within the rate: %v, %v", i, res, err)
		}
	}
	before := up.calls.Load()
	res, err := slow.CallTool(ctx, &mcp.CallToolParams{Name: "a__echo", Arguments: map[string]any{"text": "x"}})
	if err != nil {
		t.Fatal(err)
	}
	f := failureOf(t, res)
	if f.Type != authmap.TypeAuthFailure || f.Subtype != authmap.SubtypeRateLimitReached || !f.Retryable || f.Provider != providerCredgate ||
		f.RetryAfterSeconds == nil || *f.RetryAfterSeconds < 1 || *f.RetryAfterSeconds > 30 || f.Credential != "" {
		t.Errorf("over the rate: %+v; want rate_limit_reached from credgate with retry_after_seconds in (0, 30]", f)
	}
	if up.calls.Load() != before {
		t.Error("a call over the rate reached the upstream")
	}
	// Refused calls take no token and other agents have buckets of their own.
	reader := keyAgent(t, ctx, url, keyReader, nil)
	for i := range 5 {
		if res, err := reader.CallTool(ctx, &mcp.CallToolParams{Name: "a__echo", Arguments: map[string]any{"text": "x"}}); err != nil || res.IsError {
			t.Fatalf("reader call %d: %v, %v", i, res, err)
		}
	}
}

// The bucket itself, in a synctest bubble: N calls at once, then one per
// N-th of the period; a refused call takes no token.
func TestAgentRateBucket(t *testing.T) {
	t.Parallel()
	st := newPolicySet(&Config{Auth: AuthConfig{Keys: []APIKeyConfig{{Name: "k", Rate: Rate{N: 3, Per: time.Second}}}}}, nil).keys["k"]
	now := time.Unix(1_000_000, 0)
	for i := range 3 {
		if _, ok := st.admit(now); !ok {
			t.Fatalf("call %d of the burst refused", i)
		}
	}
	wait, ok := st.admit(now)
	if ok || wait <= 0 || wait > time.Second/3+time.Millisecond {
		t.Fatalf("4th call = %v, %v; want refused with a wait of about 1/3 s", wait, ok)
	}
	if _, ok := st.admit(now); ok {
		t.Fatal("a refused call gave its token back twice")
	}
	if _, ok := st.admit(now.Add(time.Second / 3)); !ok {
		t.Fatal("no token after a third of a second")
	}
	if n := retryAfterSeconds(wait); n != 1 {
		t.Errorf("retryAfterSeconds(%v) = %d, want 1", wait, n)
	}
}

// Regression test for issue 9 (audit): every call is one info line naming
// the agent, upstream, tool, credential, outcome and duration; calls the
// policy refuses too.
func TestAgentAuditLine(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	up := newTestUpstream(t, "a", "echo", "delete_y")
	var logs syncBuffer
	g := newTestGatewayLogged(t, ctx, fmt.Sprintf(`
upstreams:
  a: {url: %s, headers: {Authorization: "Bearer up-secret-0123456789"}}
auth:
  keys: [{name: ops, key: %s, tools: {deny: [a__delete_*]}}]
`, up.url(), keyOps), zerolog.New(&logs).Level(zerolog.InfoLevel))
	url := serveGateway(t, g)
	cs := keyAgent(t, ctx, url, keyOps, nil)
	if _, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "a__echo", Arguments: map[string]any{"text": "x"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "a__delete_y"}); err != nil {
		t.Fatal(err)
	}
	var lines []map[string]any
	for _, l := range strings.Split(logs.String(), "\n") {
		var m map[string]any
		if json.Unmarshal([]byte(l), &m) == nil && m["message"] == "call" {
			delete(m, "duration_ms")
			delete(m, "time")
			lines = append(lines, m)
		}
	}
	want := []map[string]any{
		{"level": "info", "message": "call", "agent": "ops", "upstream": "a", "tool": "echo", "credential": "upstreams.a.headers.Authorization", "outcome": "ok"},
		{"level": "info", "message": "call", "agent": "ops", "upstream": "a", "tool": "delete_y", "credential": "upstreams.a.headers.Authorization", "method": "tools/call", "provider": "credgate", "outcome": "forbidden"},
	}
	if diff := cmp.Diff(want, lines); diff != "" {
		t.Errorf("audit lines mismatch (-want +got):\n%s\n%s", diff, logs.String())
	}
	if !strings.Contains(logs.String(), `"duration_ms":`) {
		t.Error("audit lines carry no duration")
	}
	if strings.Contains(logs.String(), keyOps) || strings.Contains(logs.String(), "up-secret") {
		t.Error("a key is in the log")
	}
}

// Regression test for issue 9 (keys are credentials): a key held by a
// credential (key_credential) rotates with it: once the file changes, the
// new key works and the old one gets 401, without a restart. A key read
// from a source is redacted like any secret.
func TestAgentKeyCredentialRotates(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	up := newTestUpstream(t, "a", "echo")
	dir := t.TempDir()
	path := filepath.Join(dir, "agent-key")
	const oldKey, newKey = "file-key-old-0123456789abcdef", "file-key-new-0123456789abcdef"
	if err := os.WriteFile(path, []byte(oldKey), 0o600); err != nil {
		t.Fatal(err)
	}
	static := filepath.Join(dir, "static-key")
	if err := os.WriteFile(static, []byte("src-key-0123456789abcdef000\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	g := newTestGateway(t, ctx, fmt.Sprintf(`
upstreams:
  a: {url: %s}
credentials:
  agent-key: {source: {file: %s}}
auth:
  keys:
    - {name: rotating, key_credential: agent-key}
    - {name: fromfile, key: {file: %s}}
`, up.url(), path, static))
	if err := g.LoadCredentials(ctx); err != nil {
		t.Fatal(err)
	}
	url := serveGateway(t, g)
	keyAgent(t, ctx, url, oldKey, nil)
	keyAgent(t, ctx, url, "src-key-0123456789abcdef000", nil)
	if got := g.redact("k=src-key-0123456789abcdef000 f=" + oldKey); strings.Contains(got, "src-key") || strings.Contains(got, oldKey) {
		t.Errorf("keys not redacted: %q", got)
	}
	if err := os.WriteFile(path, []byte(newKey), 0o600); err != nil {
		t.Fatal(err)
	}
	waitFor(t, ctx, func() bool {
		cs, err := keyConnect(ctx, url, newKey, nil)
		if err != nil {
			return false
		}
		_ = cs.Close()
		return true
	})
	if code, _, _ := postMCP(t, ctx, url, "Bearer "+oldKey, "", initializeBody); code != http.StatusUnauthorized {
		t.Errorf("old key after rotation: %d, want 401", code)
	}
}

// Regression test for issue 9 (isolation between agents): a log message an
// upstream sends on its shared session goes to the calling agent when one
// agent has calls in flight (to each of its sessions), and to nobody when
// several agents do.
func TestLogIsolation(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	h := newHoldUpstream(t)
	g := newTestGateway(t, ctx, fmt.Sprintf(`
upstreams:
  h: {url: %s}
auth:
  keys:
    - {name: alice, key: %s}
    - {name: bob, key: %s}
`, h.url, keyReader, keyOps))
	url := serveGateway(t, g)
	type agentLog struct {
		mu   sync.Mutex
		msgs []string
	}
	connect := func(key string) (*mcp.ClientSession, *agentLog) {
		l := &agentLog{}
		cs := keyAgent(t, ctx, url, key, &mcp.ClientOptions{LoggingMessageHandler: func(_ context.Context, r *mcp.LoggingMessageRequest) {
			l.mu.Lock()
			defer l.mu.Unlock()
			l.msgs = append(l.msgs, fmt.Sprint(r.Params.Data))
		}})
		if err := cs.SetLoggingLevel(ctx, &mcp.SetLoggingLevelParams{Level: "debug"}); err != nil {
			t.Fatal(err)
		}
		return cs, l
	}
	has := func(l *agentLog, msg string) func() bool {
		return func() bool {
			l.mu.Lock()
			defer l.mu.Unlock()
			return slices.Contains(l.msgs, msg)
		}
	}
	alice, aliceLog := connect(keyReader)
	alice2, alice2Log := connect(keyReader)
	bob, bobLog := connect(keyOps)

	// Alice and Bob both in flight: Alice's call's log reaches nobody.
	a1, b1 := h.call(t, ctx, alice, "a1"), h.call(t, ctx, bob, "b1")
	h.release("a1", "ambiguous")
	a1.wait(t)
	// Bob alone: his call's log reaches him.
	h.release("b1", "bob-alone")
	b1.wait(t)
	waitFor(t, ctx, has(bobLog, "bob-alone"))
	// Alice in two sessions, nobody else: both of her sessions get it.
	a2, a3 := h.call(t, ctx, alice, "a2"), h.call(t, ctx, alice2, "a3")
	h.release("a2", "alice-alone")
	a2.wait(t)
	waitFor(t, ctx, has(aliceLog, "alice-alone"))
	waitFor(t, ctx, has(alice2Log, "alice-alone"))
	h.release("a3", "")
	a3.wait(t)
	for name, l := range map[string]*agentLog{"alice": aliceLog, "alice2": alice2Log, "bob": bobLog} {
		if has(l, "ambiguous")() {
			t.Errorf("%s received a log message sent while two agents had calls in flight", name)
		}
	}
	if has(bobLog, "alice-alone")() || has(aliceLog, "bob-alone")() {
		t.Error("one agent's log message reached the other")
	}
}

// holdUpstream has a tool hold{id} that waits until the test releases it,
// then sends a log message (if any) and returns.
type holdUpstream struct {
	url     string
	mu      sync.Mutex
	started map[string]chan struct{}
	waiting map[string]chan string
}

func newHoldUpstream(t *testing.T) *holdUpstream {
	h := &holdUpstream{started: map[string]chan struct{}{}, waiting: map[string]chan string{}}
	s := mcp.NewServer(&mcp.Implementation{Name: "hold", Version: "1"}, nil)
	s.AddTool(&mcp.Tool{Name: "hold", InputSchema: json.RawMessage(`{"type":"object"}`)}, func(ctx context.Context, req *mcp.CallToolRequest) (*mcp.CallToolResult, error) {
		var args struct{ ID string }
		_ = json.Unmarshal(req.Params.Arguments, &args)
		started, release := h.chans(args.ID)
		close(started)
		select {
		case msg := <-release:
			if msg != "" {
				_ = req.Session.Log(ctx, &mcp.LoggingMessageParams{Level: "info", Data: msg})
			}
			return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: "released"}}}, nil
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	})
	h.url = serveMCP(t, s)
	return h
}

func (h *holdUpstream) chans(id string) (chan struct{}, chan string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.started[id] == nil {
		h.started[id], h.waiting[id] = make(chan struct{}), make(chan string, 1)
	}
	return h.started[id], h.waiting[id]
}

func (h *holdUpstream) release(id, msg string) {
	_, release := h.chans(id)
	release <- msg
}

type heldCall struct{ done chan error }

func (c heldCall) wait(t *testing.T) {
	t.Helper()
	if err := <-c.done; err != nil {
		t.Fatal(err)
	}
}

// call starts hold{id} from cs and returns once the upstream runs it.
func (h *holdUpstream) call(t *testing.T, ctx context.Context, cs *mcp.ClientSession, id string) heldCall {
	t.Helper()
	c := heldCall{done: make(chan error, 1)}
	go func() {
		res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "h__hold", Arguments: map[string]any{"id": id}})
		if err == nil && res.IsError {
			err = fmt.Errorf("hold %s: %s", id, text(res))
		}
		c.done <- err
	}()
	started, _ := h.chans(id)
	select {
	case <-started:
	case <-ctx.Done():
		t.Fatalf("hold %s never reached the upstream", id)
	}
	return c
}

// Regression test for issue 9 (ops endpoints): /health and /admin/* need
// admin.token, or are served on admin.listen only; /healthz and /readyz
// stay open and say nothing about upstreams.
func TestOpsEndpoints(t *testing.T) {
	t.Parallel()
	up := newTestUpstream(t, "a", "echo")
	keys := fmt.Sprintf("auth: {keys: [{name: ops, key: %s}]}\n", keyOps)
	for _, tt := range []struct {
		name, extra        string
		health, withToken  int
		adminListen        bool
		healthOnOps        int
		adminEventsWithout int
	}{
		{name: "loopback without auth: open", health: 200, withToken: 200, adminEventsWithout: 404},
		{name: "auth without admin.token: closed", extra: keys, health: 403, withToken: 403, adminEventsWithout: 404},
		{name: "admin.token", extra: keys + "admin: {token: admin-token-0123456789abcdef}\n", health: 401, withToken: 200, adminEventsWithout: 401},
		{name: "admin.token without auth", extra: "admin: {token: admin-token-0123456789abcdef}\n", health: 401, withToken: 200, adminEventsWithout: 401},
		{name: "admin.listen", extra: keys + "admin: {listen: 127.0.0.1:0}\n", health: 404, withToken: 404, adminListen: true, healthOnOps: 200, adminEventsWithout: 404},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
			defer cancel()
			g := newTestGateway(t, ctx, fmt.Sprintf("upstreams:\n  a: {url: %s}\n%s", up.url(), tt.extra))
			l, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			serveCtx, stop := context.WithCancel(ctx)
			served := make(chan error, 1)
			go func() { served <- g.Serve(serveCtx, l) }()
			t.Cleanup(func() { stop(); <-served })
			base := "http://" + l.Addr().String()
			get := func(base, path, auth string) (int, string) {
				t.Helper()
				var code int
				var body string
				waitFor(t, ctx, func() bool { // the server starts in the background
					req, _ := http.NewRequestWithContext(ctx, http.MethodGet, base+path, nil)
					if auth != "" {
						req.Header.Set("Authorization", auth)
					}
					resp, err := http.DefaultClient.Do(req)
					if err != nil {
						return false
					}
					defer resp.Body.Close()
					b, _ := io.ReadAll(resp.Body)
					code, body = resp.StatusCode, string(b)
					return true
				})
				return code, body
			}
			if code, body := get(base, "/health", ""); code != tt.health {
				t.Errorf("/health: %d %s, want %d", code, body, tt.health)
			}
			if code, body := get(base, "/health", "Bearer admin-token-0123456789abcdef"); code != tt.withToken {
				t.Errorf("/health with the admin token: %d %s, want %d", code, body, tt.withToken)
			}
			if code, _ := get(base, "/admin/events", ""); code != tt.adminEventsWithout {
				t.Errorf("/admin/events without token: %d, want %d", code, tt.adminEventsWithout)
			}
			for _, p := range []string{"/healthz", "/readyz"} {
				waitFor(t, ctx, func() bool { code, _ := get(base, p, ""); return code == 200 })
				if _, body := get(base, p, ""); strings.Contains(body, "a") && p == "/healthz" && body != "ok\n" {
					t.Errorf("%s says more than ok: %q", p, body)
				}
			}
			if tt.adminListen {
				var ops string
				waitFor(t, ctx, func() bool { ops = g.OpsAddr(); return ops != "" })
				if code, body := get("http://"+ops, "/health", ""); code != tt.healthOnOps || !strings.Contains(body, `"upstreams"`) {
					t.Errorf("/health on admin.listen: %d %s, want %d with the upstreams", code, body, tt.healthOnOps)
				}
				if code, _ := get("http://"+ops, "/admin/events", ""); code != 200 {
					t.Errorf("/admin/events on admin.listen: %d, want 200", code)
				}
				if code, _ := get("http://"+ops, "/mcp", ""); code != 404 {
					t.Errorf("/mcp on admin.listen: %d, want 404", code)
				}
				if code, _ := get("http://"+ops, "/healthz", ""); code != 200 {
					t.Errorf("/healthz on admin.listen: %d, want 200", code)
				}
				// What changes state is not a browser's request for another
				// site's page (a trial's finding: 200 without admin.token).
				postFrom := func(hdr map[string]string) int {
					req, _ := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+ops+"/admin/reload", strings.NewReader("x"))
					req.Header.Set("Content-Type", "text/plain")
					for k, v := range hdr {
						req.Header.Set(k, v)
					}
					resp, err := http.DefaultClient.Do(req)
					if err != nil {
						t.Fatal(err)
					}
					resp.Body.Close()
					return resp.StatusCode
				}
				for _, hdr := range []map[string]string{{"Origin": "https://evil.example"}, {"Sec-Fetch-Site": "cross-site"}, {"Origin": "null"}} {
					if code := postFrom(hdr); code != http.StatusForbidden {
						t.Errorf("cross-site POST /admin/reload %v: %d, want 403", hdr, code)
					}
				}
				if code := postFrom(nil); code == http.StatusForbidden || code == http.StatusNotFound {
					t.Errorf("POST /admin/reload from a tool: %d, want it served", code)
				}
			}
		})
	}
}

// Regression test for issue 9 (DNS rebinding, cross-origin): a foreign Host
// is refused on every endpoint; IP addresses, localhost and allowed_hosts
// pass. A browser Origin not allowed gets 403 on /mcp, an allowed one gets
// CORS headers, and a request without Origin passes.
func TestHostAndOriginChecks(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	up := newTestUpstream(t, "a", "echo")
	g := newTestGateway(t, ctx, fmt.Sprintf(`
upstreams:
  a: {url: %s}
allowed_hosts: [gateway.example.com, "*.corp.example"]
allowed_origins: [https://app.example.com]
admin: {token: admin-token-0123456789abcdef}
webhooks: {secret: hook-secret-0123456789abcdef}
`, up.url()))
	h := g.Handler()
	do := func(method, path, host string, hdr map[string]string) *httptest.ResponseRecorder {
		body := ""
		if method == http.MethodPost && path == "/mcp" {
			body = initializeBody
		}
		req := httptest.NewRequest(method, path, strings.NewReader(body))
		req.Host = host
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Accept", "application/json, text/event-stream")
		for k, v := range hdr {
			req.Header.Set(k, v)
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		return rec
	}
	endpoints := []struct{ method, path string }{
		{"POST", "/mcp"}, {"GET", "/mcp"}, {"GET", "/health"}, {"GET", "/healthz"}, {"GET", "/readyz"},
		{"GET", "/admin/events"}, {"POST", "/admin/credentials/x/reload"}, {"POST", "/webhooks/rotate/x"}, {"GET", "/nothing"},
	}
	for _, e := range endpoints {
		for _, host := range []string{"evil.example", "evil.example:8080", "gateway.example.com.evil.example", "corp.example"} {
			if rec := do(e.method, e.path, host, nil); rec.Code != http.StatusForbidden || !strings.Contains(rec.Body.String(), "allowed_hosts") {
				t.Errorf("%s %s with Host %s: %d %s, want 403 naming allowed_hosts", e.method, e.path, host, rec.Code, rec.Body)
			}
		}
		for _, host := range []string{"127.0.0.1:8080", "localhost", "[::1]:80", "10.1.2.3", "gateway.example.com", "GATEWAY.example.com:443", "a.corp.example"} {
			if rec := do(e.method, e.path, host, nil); rec.Code == http.StatusForbidden && strings.Contains(rec.Body.String(), "allowed_hosts") {
				t.Errorf("%s %s with Host %s refused", e.method, e.path, host)
			}
		}
	}
	for origin, want := range map[string]int{
		"https://evil.example":      http.StatusForbidden,
		"null":                      http.StatusForbidden,
		"http://app.example.com":    http.StatusForbidden, // scheme differs
		"https://app.example.com":   http.StatusOK,
		"https://APP.example.com":   http.StatusOK,
		"http://localhost:8080":     http.StatusOK, // the gateway's own origin
		"https://app.example.com.x": http.StatusForbidden,
	} {
		rec := do("POST", "/mcp", "localhost:8080", map[string]string{"Origin": origin})
		if rec.Code != want {
			t.Errorf("Origin %s: %d %s, want %d", origin, rec.Code, rec.Body, want)
		}
		if want == http.StatusOK && strings.EqualFold(origin, "https://app.example.com") && rec.Header().Get("Access-Control-Allow-Origin") != origin {
			t.Errorf("Origin %s: no CORS header: %v", origin, rec.Header())
		}
	}
	rec := do("OPTIONS", "/mcp", "localhost", map[string]string{"Origin": "https://app.example.com", "Access-Control-Request-Method": "POST"})
	if rec.Code != http.StatusNoContent || !strings.Contains(rec.Header().Get("Access-Control-Allow-Headers"), "Authorization") {
		t.Errorf("preflight: %d %v", rec.Code, rec.Header())
	}
	if rec := do("POST", "/mcp", "localhost", nil); rec.Code != http.StatusOK {
		t.Errorf("no Origin: %d %s", rec.Code, rec.Body)
	}
}

// Regression test for issue 9: without auth, the gateway refuses to serve
// on an address other machines reach, unless allow_unauthenticated.
func TestExposureRefused(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		extra, listen string
		ok            bool
	}{
		{listen: "127.0.0.1:0", ok: true},
		{listen: "[::1]:0", ok: true},
		{listen: "localhost:8080", ok: true},
		{listen: "0.0.0.0:8080"},
		{listen: ":8080"},
		{listen: "10.0.0.1:8080"},
		{listen: "gateway.example.com:8080"},
		{listen: "0.0.0.0:8080", extra: "allow_unauthenticated: true\n", ok: true},
		{listen: "0.0.0.0:8080", extra: fmt.Sprintf("auth: {keys: [{name: a, key: %s}]}\n", keyOps), ok: true},
	} {
		cfg, err := ParseConfig([]byte("listen: \""+tt.listen+"\"\n"+tt.extra), nil)
		if err != nil {
			t.Fatal(err)
		}
		err = cfg.CheckExposure(cfg.Listen)
		if (err == nil) != tt.ok {
			t.Errorf("listen %s %q: %v, want ok=%t", tt.listen, tt.extra, err, tt.ok)
		}
		if err != nil && (!strings.Contains(err.Error(), "auth.keys") || !strings.Contains(err.Error(), "allow_unauthenticated")) {
			t.Errorf("the refusal does not name the keys: %v", err)
		}
	}
	// Serve checks the bound address.
	cfg, _ := ParseConfig([]byte("listen: 127.0.0.1:0\n"), nil)
	g, err := New(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	l, err := net.Listen("tcp", "0.0.0.0:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if err := g.Serve(t.Context(), l); err == nil || !strings.Contains(err.Error(), "allow_unauthenticated") {
		t.Errorf("Serve on 0.0.0.0 without auth = %v; want a refusal", err)
	}
}

// Regression test for issue 9 (config): every problem in auth, policies,
// allowed_hosts, allowed_origins and admin.listen is reported, naming its
// key, and no key's value is shown.
func TestAuthConfigValidation(t *testing.T) {
	t.Parallel()
	_, err := ParseConfig([]byte(`
credentials:
  agentkey: {source: {value: x-0123456789abcdefghij}}
auth:
  keys:
    - {name: ci, key: short-secret}
    - {name: ci, key: long-enough-key-0123456789}
    - {key: another-long-key-0123456789}
    - {name: "bad name", key: third-long-key-0123456789}
    - {name: both, key: fourth-long-key-0123456789, key_credential: agentkey}
    - {name: neither}
    - {name: cred, key_credential: agentkye}
    - {name: globs, key: fifth-long-key-0123456789, tools: {allow: ["[a-"]}, rate: "ten/s"}
    - {name: dup, key: long-enough-key-0123456789}
  oauth: {issuer: https://issuer.example, resource: https://gw.example/mcp}
policies:
  - {tools: {allow: [x]}}
  - {agents: ["[z"], scopes: ["a b"], resources: {deny: ["[q"]}, rate: 5/fortnight}
allowed_hosts: ["https://gateway.example.com", "host:8080", "ok.example.com", "*.ok.example"]
allowed_origins: [https://app.example.com/path, "app.example.com", "https://fine.example"]
admin: {listen: "9090"}
`), nil)
	if err == nil {
		t.Fatal("config accepted")
	}
	for _, want := range []string{
		"auth.keys[0].key: too short (12 characters)",
		`auth.keys[1].name: "ci" is also the name of auth.keys[0]`,
		"auth.keys[2].name: missing",
		`auth.keys[3].name: invalid name "bad name"`,
		"auth.keys[4]: both key and key_credential are set",
		"auth.keys[5].key: missing",
		`auth.keys[6].key_credential: unknown credential "agentkye": define it under credentials (did you mean agentkey?)`,
		"auth.keys[7].tools.allow[0]:",
		`auth.keys[7].rate: invalid value: "ten/s"`,
		"auth.keys[8].key: the same key as auth.keys[1]",
		"policies[0]: applies to nobody",
		"policies[1].agents[0]:",
		`policies[1].scopes[0]: invalid scope "a b"`,
		"policies[1].resources.deny[0]:",
		`policies[1].rate: invalid value: "5/fortnight"`,
		`allowed_hosts[0]: invalid host "https://gateway.example.com"`,
		`allowed_hosts[1]: invalid host "host:8080"`,
		`allowed_origins[0]: invalid origin "https://app.example.com/path"`,
		`allowed_origins[1]: invalid origin "app.example.com"`,
		"admin.listen: invalid address",
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q", want)
		}
	}
	for _, unwanted := range []string{"short-secret", "long-enough-key", "ok.example.com", "fine.example", "auth.oauth", "allowed_hosts[3]"} {
		if strings.Contains(err.Error(), unwanted) {
			t.Errorf("error mentions %q:\n%v", unwanted, err)
		}
	}
	if t.Failed() {
		t.Log(err)
	}

	// Policies need authenticated agents.
	if _, err := ParseConfig([]byte("policies: [{agents: [x], tools: {allow: [y]}}]\n"), nil); err == nil || !strings.Contains(err.Error(), "policies: set, but agents are not authenticated") {
		t.Errorf("policies without auth: %v", err)
	}
	// A good config loads, with warnings for what applies to nobody.
	cfg, err := ParseConfig([]byte(fmt.Sprintf(`
auth:
  keys:
    - {name: ci, key: %s, rate: 10/s}
    - {name: idle, key: %s}
policies:
  - {agents: [ci, ghost], tools: {allow: ["*"]}, rate: 600/m}
allow_unauthenticated: true
`, keyOps, keyReader)), nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := cfg.Auth.Keys[0].Rate; got != (Rate{N: 10, Per: time.Second}) || got.String() != "10/s" {
		t.Errorf("rate = %+v (%s)", got, got)
	}
	warnings := strings.Join(cfg.Warnings(), "\n")
	for _, want := range []string{`policies[0].agents[1]: "ghost" matches no key`, `auth.keys[1]: "idle" sets no tools and no policy applies to it`, "allow_unauthenticated: has no effect"} {
		if !strings.Contains(warnings, want) {
			t.Errorf("warnings lack %q:\n%s", want, warnings)
		}
	}
}

// Regression test for issue 9 with config reload (issue 8): a reload that
// changes policies applies to the next request; one that changes auth keeps
// the keys in force and says a restart is needed.
func TestAgentPolicyReload(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	up := newTestUpstream(t, "a", "echo", "list_x")
	base := fmt.Sprintf("upstreams:\n  a: {url: %s}\nauth: {keys: [{name: ops, key: %s}]}\n", up.url(), keyOps)
	g := newTestGateway(t, ctx, base+"policies: [{agents: [ops], tools: {allow: [a__echo]}}]\n")
	url := serveGateway(t, g)
	cs := keyAgent(t, ctx, url, keyOps, nil)
	if got := toolNames(t, ctx, cs); !slices.Equal(got, []string{"a__echo"}) {
		t.Fatalf("before the reload: %v", got)
	}
	cfg, err := ParseConfig([]byte(base+"policies: [{agents: [ops], tools: {allow: [a__list_*]}}]\n"), nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := g.Reload(cfg); err != nil {
		t.Fatal(err)
	}
	if got := toolNames(t, ctx, cs); !slices.Equal(got, []string{"a__list_x"}) {
		t.Errorf("after the reload: %v, want the new policy's [a__list_x]", got)
	}
	// A new key needs a restart: the old one keeps working, the new one does not yet.
	cfg, err = ParseConfig([]byte(fmt.Sprintf("upstreams:\n  a: {url: %s}\nauth: {keys: [{name: ops, key: %s}]}\n", up.url(), keyReader)), nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := g.Reload(cfg); err != nil {
		t.Fatal(err)
	}
	if h := g.configHealth(); !slices.Contains(h.RestartRequired, "auth") {
		t.Errorf("restart_required = %v, want auth", h.RestartRequired)
	}
	if cs, err := keyConnect(ctx, url, keyOps, nil); err != nil {
		t.Errorf("the key in force stopped working after a reload that needs a restart: %v", err)
	} else {
		_ = cs.Close()
	}
}

// admin.open serves the read-only ops endpoints it names without
// admin.token (a Prometheus scrape by annotation cannot send one); every
// other ops endpoint still needs the token, and a name it does not know is
// a config error naming the key.
func TestOpsOpenEndpoints(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	up := newTestUpstream(t, "a", "echo")
	const token = "admin-token-0123456789abcdef"
	for _, tt := range []struct {
		open string
		want map[string]int // path -> status without the token
	}{
		{open: "[]", want: map[string]int{"/metrics": 401, "/health": 401, "/events": 401, "/status": 401, "/admin/events": 401}},
		{open: "[metrics]", want: map[string]int{"/metrics": 200, "/health": 401, "/events": 401, "/status": 401, "/admin/events": 401}},
		{open: "[metrics, health]", want: map[string]int{"/metrics": 200, "/health": 200, "/events": 401, "/status": 401, "/admin/events": 401}},
	} {
		g := newTestGateway(t, ctx, fmt.Sprintf("upstreams:\n  a: {url: %s}\nauth: {keys: [{name: ops, key: %s}]}\nadmin: {token: %s, open: %s}\n", up.url(), keyOps, token, tt.open))
		h := g.Handler()
		for path, without := range tt.want {
			for _, auth := range []string{"", "Bearer " + token} {
				req := httptest.NewRequest(http.MethodGet, path, nil)
				req.Host = "127.0.0.1"
				want := without
				if auth != "" {
					req.Header.Set("Authorization", auth)
					want = 200
				}
				rec := httptest.NewRecorder()
				if path == "/events" { // a stream: ask only for its headers
					rctx, rcancel := context.WithCancel(ctx)
					rcancel()
					req = req.WithContext(rctx)
				}
				h.ServeHTTP(rec, req)
				if rec.Code != want {
					t.Errorf("admin.open %s: GET %s (token %v): %d %s, want %d", tt.open, path, auth != "", rec.Code, rec.Body, want)
				}
				if strings.Contains(rec.Body.String(), token) {
					t.Errorf("admin.open %s: GET %s shows the admin token", tt.open, path)
				}
			}
		}
	}
	_, err := ParseConfig([]byte(fmt.Sprintf("upstreams:\n  a: {url: %s}\nadmin: {token: %s, open: [metrics, events]}\n", up.url(), token)), nil)
	if err == nil || !strings.Contains(err.Error(), `admin.open[1]: unknown ops endpoint "events"`) {
		t.Errorf("admin.open naming /events: %v, want an error naming admin.open[1]", err)
	}
	for _, admin := range []string{"{listen: 127.0.0.1:0, open: [health]}", "{open: [health, metrics]}"} {
		cfg, err := ParseConfig([]byte(fmt.Sprintf("upstreams:\n  a: {url: %s}\nauth: {keys: [{name: ops, key: %s}]}\nadmin: %s\n", up.url(), keyOps, admin)), nil)
		if err != nil {
			t.Fatal(err)
		}
		if w := strings.Join(cfg.Warnings(), "\n"); !strings.Contains(w, "admin.open: has no effect") {
			t.Errorf("admin %s: warnings %q, want one naming admin.open", admin, w)
		}
	}
	// Without admin.token, admin.open opens nothing: agents authenticate on
	// listen, so the ops endpoints there stay refused (it served /health
	// and /metrics to anyone).
	g := newTestGateway(t, ctx, fmt.Sprintf("upstreams:\n  a: {url: %s}\nauth: {keys: [{name: ops, key: %s}]}\nadmin: {open: [health, metrics]}\n", up.url(), keyOps))
	for _, path := range []string{"/health", "/metrics"} {
		req := httptest.NewRequest(http.MethodGet, path, nil)
		req.Host = "127.0.0.1"
		rec := httptest.NewRecorder()
		g.Handler().ServeHTTP(rec, req)
		if rec.Code != http.StatusForbidden {
			t.Errorf("admin.open without admin.token, GET %s: %d; want 403", path, rec.Code)
		}
	}
}

// TestReloadKeepsAuthCredentials: auth takes a restart, so a reload that
// renames the credential an agent's key is read from (key_credential, and
// the credential with it) is refused, naming the key; it was taken, the
// auth in force still read the old name, and the agent was locked out
// until the restart. The agent's key keeps working.
func TestReloadKeepsAuthCredentials(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	up := newTestUpstream(t, "a", "echo")
	const key = "alice-key-0123456789abcdef"
	conf := func(name string) string {
		return fmt.Sprintf("upstreams:\n  a: {url: %s}\ncredentials:\n  %s: {source: {value: %s}}\nauth:\n  keys:\n    - {name: alice, key_credential: %s}\n", up.url(), name, key, name)
	}
	g := newTestGateway(t, ctx, conf("alice-key"))
	if err := g.LoadCredentials(ctx); err != nil {
		t.Fatal(err)
	}
	url := serveGateway(t, g)
	keyAgent(t, ctx, url, key, nil)
	err := reloadTo(t, g, conf("alice-key2"))
	if err == nil || !strings.Contains(err.Error(), "auth.keys[0].key_credential") || !strings.Contains(err.Error(), `"alice-key"`) {
		t.Errorf("reload renaming the key's credential: %v; want it refused naming auth.keys[0].key_credential", err)
	}
	keyAgent(t, ctx, url, key, nil)
}

// Regression test for a trial's finding: a route ran, for an agent, a
// target its grants denied (calling the target itself was refused). A
// route now passes over targets the agent may not call, without naming
// them; one with no target the agent may call is neither listed to it nor
// callable.
func TestRouteRespectsAgentGrants(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	a := newTestUpstream(t, "a", "echo", "delete_y")
	b := newTestUpstream(t, "b", "echo")
	g := newTestGateway(t, ctx, fmt.Sprintf(`
upstreams:
  a: {url: %s}
  b: {url: %s}
routes:
  - {tool: search, targets: [a__echo, b__echo]}
  - {tool: wipe, targets: [a__delete_y]}
auth:
  keys:
    - {name: ci, key: %s, tools: {allow: ["*"], deny: ["a__echo", "a__delete_y"]}}
    - {name: ops, key: %s}
    - {name: slow, key: %s, tools: {allow: [search]}}
`, a.url(), b.url(), keyReader, keyOps, keySlow))
	url := serveGateway(t, g)
	waitFor(t, ctx, func() bool {
		return g.catalog.hasTool("search") && g.catalog.hasTool("wipe") && g.catalog.hasTool("b__echo")
	})
	ci := keyAgent(t, ctx, url, keyReader, nil)

	if names := toolNames(t, ctx, ci); slices.Contains(names, "wipe") || !slices.Contains(names, "search") {
		t.Errorf("ci lists %v; want search, not wipe (its only target is denied)", names)
	}
	beforeA, beforeB := a.calls.Load(), b.calls.Load()
	res, err := ci.CallTool(ctx, &mcp.CallToolParams{Name: "search", Arguments: map[string]any{"text": "x"}})
	if err != nil || res.IsError {
		t.Fatalf("search: %v %v", err, res)
	}
	if a.calls.Load() != beforeA || b.calls.Load() != beforeB+1 {
		t.Errorf("search reached a %d times, b %d times; want b once, never a", a.calls.Load()-beforeA, b.calls.Load()-beforeB)
	}
	if raw, _ := json.Marshal(res.Meta); strings.Contains(string(raw), "a__echo") {
		t.Errorf("the result names the denied target: %s", raw)
	}
	res, err = ci.CallTool(ctx, &mcp.CallToolParams{Name: "wipe", Arguments: map[string]any{}})
	if err != nil {
		t.Fatal(err)
	}
	if f := failureOf(t, res); f.Type != authmap.TypeForbidden || a.calls.Load() != beforeA {
		t.Errorf("wipe: %+v, a called %d times; want forbidden, nothing sent", f, a.calls.Load()-beforeA)
	}
	// An agent the targets are granted to is served by the primary.
	ops := keyAgent(t, ctx, url, keyOps, nil)
	if res := callTool(t, ctx, ops, "search"); res.IsError || a.calls.Load() != beforeA+1 {
		t.Errorf("ops' search: %s, a called %d times; want the primary", text(res), a.calls.Load()-beforeA)
	}
	// A route exposed alone (its targets only left off the allow list)
	// reaches its primary.
	only := keyAgent(t, ctx, url, keySlow, nil)
	if names := toolNames(t, ctx, only); !slices.Equal(names, []string{"search"}) {
		t.Errorf("allow [search] lists %v; want [search]", names)
	}
	if res := callTool(t, ctx, only, "search"); res.IsError || a.calls.Load() != beforeA+2 || res.Meta[routing.MetaKey] != nil {
		t.Errorf("allow [search]'s search: %s, a called %d times, meta %v; want the primary", text(res), a.calls.Load()-beforeA, res.Meta)
	}
}

// Regression test for a re-check's finding: an agent key read from a
// credential (key_credential) with the value of admin.token opened a
// session on /mcp; the static form was refused at start only.
func TestAgentKeyCredentialIsNotAdminToken(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	up := newTestUpstream(t, "a", "echo")
	const admin = "ops-token-0123456789abcdef00"
	g := newTestGateway(t, ctx, fmt.Sprintf(`
upstreams:
  a: {url: %s}
admin: {token: %s}
credentials:
  agent-key: {source: {value: %s}}
auth:
  keys:
    - {name: sneaky, key_credential: agent-key}
`, up.url(), admin, admin))
	if err := g.LoadCredentials(ctx); err != nil {
		t.Fatal(err)
	}
	url := serveGateway(t, g)
	if code, _, _ := postMCP(t, ctx, url, "Bearer "+admin, "", initializeBody); code != http.StatusUnauthorized {
		t.Errorf("initialize with the ops token as an agent key: %d, want 401", code)
	}
}

// Regression test for a trial's finding: one agent could open every one of
// max_sessions, and the others' initialize got 503. An agent holds at most
// max_sessions_per_agent; a session it closes frees its place.
func TestMaxSessionsPerAgent(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	up := newTestUpstream(t, "a", "echo")
	g := newTestGateway(t, ctx, fmt.Sprintf(`
upstreams:
  a: {url: %s}
max_sessions: 10
max_sessions_per_agent: 2
auth:
  keys:
    - {name: greedy, key: %s}
    - {name: other, key: %s}
`, up.url(), keyReader, keyOps))
	url := serveGateway(t, g)
	first := keyAgent(t, ctx, url, keyReader, nil)
	keyAgent(t, ctx, url, keyReader, nil)
	if code, _, body := postMCP(t, ctx, url, "Bearer "+keyReader, "", initializeBody); code != http.StatusServiceUnavailable || !strings.Contains(body, "max_sessions_per_agent") {
		t.Fatalf("a third session of greedy: %d %s; want 503 naming max_sessions_per_agent", code, body)
	}
	keyAgent(t, ctx, url, keyOps, nil) // the others still get theirs
	if err := first.Close(); err != nil {
		t.Fatal(err)
	}
	keyAgent(t, ctx, url, keyReader, nil)

	// A burst of initializes at once is counted as it comes (a review
	// saw 36 sessions open under a cap of 2): other holds one, so at most
	// one more.
	var opened atomic.Int64
	var burst sync.WaitGroup
	for range 12 {
		burst.Go(func() {
			if code, _, _ := postMCP(t, ctx, url, "Bearer "+keyOps, "", initializeBody); code == http.StatusOK {
				opened.Add(1)
			}
		})
	}
	burst.Wait()
	if n := opened.Load(); n > 1 {
		t.Errorf("a burst of 12 initializes opened %d sessions for an agent holding 1 of 2", n)
	}
}
