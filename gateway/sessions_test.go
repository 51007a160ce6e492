package gateway

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/credgate/credgate/authmap"
)

const initializeBody = `{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"bare","version":"1"}}}`

// postInitialize sends a bare initialize, as an abandoned client would, and
// returns the answer.
func postInitialize(h http.Handler) *httptest.ResponseRecorder {
	req := httptest.NewRequest(http.MethodPost, "/mcp", strings.NewReader(initializeBody))
	req.Host = "localhost" // httptest's example.com is a foreign host (issue 9)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, text/event-stream")
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec
}

// TestIdleSessionsExpire is the regression test for issue 6 item 7 (idle
// timeout): a session opened by a bare initialize and never used again is
// closed after session_idle_timeout (default 30m), so abandoned sessions do
// not accumulate.
func TestIdleSessionsExpire(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		cfg := &Config{}
		cfg.Normalize()
		g, err := New(cfg, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer g.Close()
		defer func() { // what is left, should the timeout not work
			for ss := range g.mcp.Sessions() {
				_ = ss.Close()
			}
		}()
		h := g.Handler()
		for range 3 {
			if rec := postInitialize(h); rec.Code != http.StatusOK || rec.Header().Get("Mcp-Session-Id") == "" {
				t.Fatalf("initialize = %d %s, want 200 with a session", rec.Code, rec.Body)
			}
		}
		if n := g.sessionCount(); n != 3 {
			t.Fatalf("%d sessions after 3 initializes, want 3", n)
		}
		time.Sleep(DefaultSessionIdleTimeout - time.Second)
		synctest.Wait()
		if n := g.sessionCount(); n != 3 {
			t.Fatalf("%d sessions before the idle timeout, want 3", n)
		}
		time.Sleep(2 * time.Second)
		synctest.Wait()
		if n := g.sessionCount(); n != 0 {
			t.Errorf("%d sessions after the idle timeout (%s), want 0", n, DefaultSessionIdleTimeout)
		}
	})
}

// TestSessionCap is the regression test for issue 6 item 7 (session cap):
// once max_sessions agent sessions are open, a new initialize gets HTTP 503
// with a JSON-RPC error naming the key, open sessions keep working, and a
// session that ends makes room.
func TestSessionCap(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	a := newTestUpstream(t, "a", "echo")
	g, first := startGateway(t, ctx, fmt.Sprintf("max_sessions: 2\nupstreams:\n  a: {url: %s}\n", a.url()))
	second := agent(t, ctx, g, nil)
	h := g.Handler()

	rec := postInitialize(h)
	if rec.Code != http.StatusServiceUnavailable || rec.Header().Get("Content-Type") != "application/json" {
		t.Errorf("third initialize = HTTP %d (%s), want 503 application/json", rec.Code, rec.Header().Get("Content-Type"))
	}
	var body struct {
		ID    json.RawMessage `json:"id"`
		Error struct {
			Code    int    `json:"code"`
			Message string `json:"message"`
		} `json:"error"`
	}
	if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil {
		t.Fatalf("refusal body %q: %v", rec.Body, err)
	}
	if string(body.ID) != "1" || body.Error.Code != codeSessionLimit || !strings.Contains(body.Error.Message, "max_sessions (2 agent sessions)") {
		t.Errorf("refusal = %s, want the request's id and an error naming max_sessions", rec.Body)
	}
	if n := g.sessionCount(); n != 2 {
		t.Errorf("%d sessions, want 2", n)
	}

	for i, cs := range []*mcp.ClientSession{first, second} {
		res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "a__echo", Arguments: map[string]any{"text": "still here"}})
		if err != nil || text(res) != "a:echo:still here" {
			t.Errorf("agent %d at the cap: %v, %v; want its calls to work", i, res, err)
		}
	}

	// An agent that leaves makes room (DELETE closes its session at once).
	if err := second.Close(); err != nil {
		t.Fatal(err)
	}
	if rec := postInitialize(h); rec.Code != http.StatusOK {
		t.Errorf("initialize after an agent left = HTTP %d %s, want 200", rec.Code, rec.Body)
	}
}

// upstreamSessions returns the sessions open on an in-process upstream.
func upstreamSessions(s *mcp.Server) []*mcp.ServerSession { return slices.Collect(s.Sessions()) }

// newSession calls call and returns the one upstream session it opened.
func newSession(t *testing.T, s *mcp.Server, call func()) *mcp.ServerSession {
	t.Helper()
	before := upstreamSessions(s)
	call()
	var opened []*mcp.ServerSession
	for _, ss := range upstreamSessions(s) {
		if !slices.Contains(before, ss) {
			opened = append(opened, ss)
		}
	}
	if len(opened) != 1 {
		t.Fatalf("the call opened %d upstream sessions, want 1", len(opened))
	}
	return opened[0]
}

// waitClosed waits for an upstream session to end.
func waitClosed(t *testing.T, ctx context.Context, ss *mcp.ServerSession, what string) {
	t.Helper()
	done := make(chan struct{})
	go func() {
		_ = ss.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-ctx.Done():
		t.Fatalf("%s: the upstream session is still open", what)
	}
}

// TestPerAgentSessionsEndWhenAgentIdles is the regression test for issue 6
// item 7 (per_agent children): an agent's own upstream session closes when
// the agent's session idles out, not only when the agent says goodbye.
func TestPerAgentSessionsEndWhenAgentIdles(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	a := newTestUpstream(t, "a", "echo")
	// Long enough that the agent's first call comes before it, short enough
	// to wait for.
	g, _ := startGateway(t, ctx, fmt.Sprintf("session_idle_timeout: 1s\nupstreams:\n  a: {url: %s, session: per_agent}\n", a.url()))
	idle := agent(t, ctx, g, nil)
	own := newSession(t, a.srv, func() {
		if res, err := idle.CallTool(ctx, &mcp.CallToolParams{Name: "a__echo", Arguments: map[string]any{"text": "once"}}); err != nil || res.IsError {
			t.Fatalf("call = %v, %v", res, err)
		}
	})
	// The agent never comes back and never says goodbye.
	waitClosed(t, ctx, own, "after the agent idled out")
}

// TestAgentSessionCap is the regression test for issue 6 item 7 (per-agent
// cap): a per_agent upstream opens at most max_agent_sessions sessions; a
// call over the cap gets a typed upstream_unavailable naming the key, and an
// agent leaving makes room.
func TestAgentSessionCap(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	a := newTestUpstream(t, "a", "echo")
	g, first := startGateway(t, ctx, fmt.Sprintf("upstreams:\n  a: {url: %s, session: per_agent, max_agent_sessions: 1}\n", a.url()))
	call := func(cs *mcp.ClientSession) *mcp.CallToolResult {
		t.Helper()
		res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "a__echo", Arguments: map[string]any{"text": "hi"}})
		if err != nil {
			t.Fatalf("call: %v", err)
		}
		return res
	}
	own := newSession(t, a.srv, func() {
		if res := call(first); res.IsError {
			t.Fatalf("first agent's call failed: %s", text(res))
		}
	})
	second := agent(t, ctx, g, nil)
	res := call(second)
	if !res.IsError {
		t.Fatalf("second agent's call over the cap = %q, want a typed failure", text(res))
	}
	want := authmap.Failure{Type: authmap.TypeUpstreamUnavailable, Retryable: true, Upstream: "a",
		Detail: `upstream "a" has reached upstreams.a.max_agent_sessions (1 agent sessions); retry when another agent's session ends`}
	if diff := cmp.Diff(want, failureOf(t, res)); diff != "" {
		t.Errorf("failure mismatch (-want +got):\n%s", diff)
	}
	if res := call(first); res.IsError {
		t.Errorf("first agent at the cap: %s; want its calls to work", text(res))
	}

	if err := first.Close(); err != nil {
		t.Fatal(err)
	}
	waitClosed(t, ctx, own, "after the first agent left")
	if res := call(second); res.IsError || text(res) != "a:echo:hi" {
		t.Errorf("second agent after the first left = %q, want its call to work", text(res))
	}
}

// TestBoundsConfig: the bounds of issue 6 items 6-8 load from YAML and the
// environment, default when zero, and a negative value is an error naming
// its key, all in one pass.
func TestBoundsConfig(t *testing.T) {
	t.Parallel()
	cfg, err := ParseConfig([]byte("session_idle_timeout: 5m\nmax_connections: 64\nupstreams:\n  a: {command: x, max_agent_sessions: 3}\n  b: {command: y}\n"),
		[]string{"CREDGATE_MAX_SESSIONS=7", "CREDGATE_UPSTREAMS__A__MAX_RESPONSE_BYTES=1024"})
	if err != nil {
		t.Fatal(err)
	}
	a, b := cfg.Upstreams["a"], cfg.Upstreams["b"]
	type bounds struct {
		Idle                   time.Duration
		Sessions, Conns        int
		ARespBytes, BRespBytes int64
		AAgents, BAgents       int
	}
	got := bounds{cfg.sessionIdleTimeout(), cfg.maxSessions(), cfg.maxConnections(), a.maxResponseBytes(), b.maxResponseBytes(), a.maxAgentSessions(), b.maxAgentSessions()}
	want := bounds{5 * time.Minute, 7, 64, 1024, 16 << 20, 3, 100}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("bounds mismatch (-want +got):\n%s", diff)
	}
	if d := (&Config{}); d.sessionIdleTimeout() != 30*time.Minute || d.maxSessions() != 10000 || d.maxConnections() != 1024 {
		t.Errorf("defaults = %s, %d, %d", d.sessionIdleTimeout(), d.maxSessions(), d.maxConnections())
	}

	_, err = ParseConfig([]byte("session_idle_timeout: -1s\nmax_sessions: -1\nmax_connections: -1\nupstreams:\n  a: {command: x, max_response_bytes: -1, max_agent_sessions: -1}\n"), nil)
	for _, key := range []string{"session_idle_timeout:", "max_sessions:", "max_connections:", "upstreams.a.max_response_bytes:", "upstreams.a.max_agent_sessions:"} {
		if err == nil || !strings.Contains(err.Error(), key) {
			t.Errorf("error %v does not name %s", err, key)
		}
	}
}
