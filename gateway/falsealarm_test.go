package gateway

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	"github.com/modelcontextprotocol/go-sdk/mcp"
	"github.com/rs/zerolog"

	"github.com/credgate/credgate/authmap"
)

// TestSuccessfulResultsPassUntouched is the regression test for issue 6
// item 1: a result the upstream marked successful is never turned into a
// failure by default, whatever its text says; with classify_results it is,
// but only on a structured provider error, never on a phrase.
func TestSuccessfulResultsPassUntouched(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	plain := newTestUpstream(t, "plain", "get")
	optin := newTestUpstream(t, "optin", "get")
	_, cs := startGateway(t, ctx, fmt.Sprintf(`
upstreams:
  plain: {url: %s}
  optin: {url: %s, classify_results: true}
`, plain.url(), optin.url()))

	providerError := "HTTP 401 Unauthorized\n" + githubBadCredentials
	tests := []struct {
		text     string
		optinErr bool // classify_results makes it a failure
	}{
		{"Title: HTTP 403 Forbidden on S3 upload", false},
		{"Issue #401: Unauthorized error when the token rotates", false},
		{"Rate limit exceeded for the 429 dashboard: see issue #12", false},
		{`{"message":"Bad credentials"}`, false},
		{providerError, true},
		{`{"ok":false,"error":"invalid_auth"}`, true},
	}
	for _, tt := range tests {
		for _, up := range []string{"plain", "optin"} {
			res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: up + "__get", Arguments: map[string]any{"text": "text:" + tt.text}})
			if err != nil {
				t.Fatalf("%s %q: %v", up, tt.text, err)
			}
			if up == "optin" && tt.optinErr {
				if f := failureOf(t, res); f.Type != authmap.TypeAuthFailure {
					t.Errorf("%s %q: failure = %+v, want auth_failure (classify_results, structured evidence)", up, tt.text, f)
				}
				continue
			}
			if res.IsError || res.Meta[MetaKey] != nil || text(res) != tt.text {
				t.Errorf("%s %q: result = isError %v, _meta %v, text %q; want the upstream's success untouched", up, tt.text, res.IsError, res.Meta, text(res))
			}
		}
	}
}

// jwtExpired is a JWT (unsigned) whose exp claim is in 2020.
var jwtExpired = func() string {
	enc := base64.RawURLEncoding.EncodeToString
	return enc([]byte(`{"alg":"RS256","typ":"JWT"}`)) + "." + enc([]byte(`{"sub":"u1","exp":1600000000}`)) + ".c2lnbmF0dXJl"
}()

// TestKnowledgeIsPerUpstream is the regression test for issue 6 item 2:
// only an upstream's own credential informs its classification; an expired
// JWT configured for another upstream does not make this one's "Bad
// credentials" credential_expired.
func TestKnowledgeIsPerUpstream(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	a := newTestUpstream(t, "a", "list")
	b := newTestUpstream(t, "b", "list")
	_, cs := startGateway(t, ctx, fmt.Sprintf(`
upstreams:
  a: {url: %s, headers: {Authorization: "Bearer ghp_0123456789abcdefAAAAAAAAAAAAAAAAAAAA"}}
  b: {url: %s, headers: {Authorization: "Bearer %s"}}
`, a.url(), b.url(), jwtExpired))
	for _, up := range []*testUpstream{a, b} {
		up.fail.Store(&httpFailure{status: 401, header: map[string]string{"Content-Type": "application/json"}, body: githubBadCredentials})
	}
	for tool, want := range map[string]authmap.Subtype{
		"a__list": authmap.SubtypeCredentialInvalid, // nothing known about a's token
		"b__list": authmap.SubtypeCredentialExpired, // b's own JWT has expired
	} {
		res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: tool})
		if err != nil {
			t.Fatal(err)
		}
		if f := failureOf(t, res); f.Subtype != want {
			t.Errorf("%s: subtype = %q, want %q", tool, f.Subtype, want)
		}
	}
}

// slowUpstream serves a tool and a prompt that answer only when their
// request ends.
func slowUpstream(t *testing.T) string {
	t.Helper()
	release := make(chan struct{})
	s := mcp.NewServer(&mcp.Implementation{Name: "slow", Version: "1"}, nil)
	wait := func(ctx context.Context) error {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-release:
			return errors.New("released")
		}
	}
	s.AddTool(&mcp.Tool{Name: "block", InputSchema: json.RawMessage(`{"type":"object"}`)}, func(ctx context.Context, _ *mcp.CallToolRequest) (*mcp.CallToolResult, error) {
		return nil, wait(ctx)
	})
	s.AddPrompt(&mcp.Prompt{Name: "block"}, func(ctx context.Context, _ *mcp.GetPromptRequest) (*mcp.GetPromptResult, error) {
		return nil, wait(ctx)
	})
	hs := httptest.NewServer(mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return s }, nil))
	t.Cleanup(hs.Close)
	t.Cleanup(func() { close(release) })
	return hs.URL + "/mcp"
}

// TestTimeoutIsTyped is the regression test for issue 6 item 3 (calls): a
// call that runs past the upstream's timeout returns the typed, retryable
// timeout object, not the JSON-RPC error "context deadline exceeded:
// context canceled" with code 0.
func TestTimeoutIsTyped(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	_, cs := startGateway(t, ctx, fmt.Sprintf("upstreams:\n  s: {url: %s, timeout: 1s}\n", slowUpstream(t)))

	res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "s__block"})
	if err != nil {
		t.Fatalf("tools/call past the timeout: %v; want a tool result with the timeout object", err)
	}
	if f := failureOf(t, res); f.Type != authmap.TypeTimeout || !f.Retryable || f.Upstream != "s" {
		t.Errorf("tools/call past the timeout: failure = %+v, want a retryable timeout from s", f)
	}

	_, err = cs.GetPrompt(ctx, &mcp.GetPromptParams{Name: "s__block"})
	var rpc *jsonrpc.Error
	if !errors.As(err, &rpc) || rpc.Code != codeUpstreamFailure {
		t.Fatalf("prompts/get past the timeout: %v; want a -32010 error", err)
	}
	var f authmap.Failure
	if err := json.Unmarshal(rpc.Data, &f); err != nil || f.Type != authmap.TypeTimeout || !f.Retryable {
		t.Errorf("prompts/get past the timeout: data = %s (%v), want a retryable timeout", rpc.Data, err)
	}
}

// TestConnectHangIsTimeout is the regression test for issue 6 item 3
// (connect): an upstream that accepts the connection and never answers the
// handshake is reported as timeout, in /health and in the calls that fail
// fast while it is down.
func TestConnectHangIsTimeout(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	release := make(chan struct{})
	hang := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-release:
		}
	}))
	t.Cleanup(hang.Close)
	t.Cleanup(func() { close(release) })
	cfg, err := ParseConfig(fmt.Appendf(nil, "upstreams:\n  hang: {url: %s/mcp}\n", hang.URL), nil)
	if err != nil {
		t.Fatal(err)
	}
	log := zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.WarnLevel)
	g, err := New(cfg, &Options{Logger: &log, ConnectTimeout: 200 * time.Millisecond, ReconnectMin: 10 * time.Millisecond, ReconnectMax: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	g.Start(ctx)
	t.Cleanup(func() { _ = g.Close() })
	if err := g.WaitTried(ctx); err != nil {
		t.Fatal(err)
	}
	if lf := g.Health().Upstreams["hang"].LastFailure; lf == nil || lf.Type != authmap.TypeTimeout || !lf.Retryable {
		t.Errorf("health last_failure = %+v, want a retryable timeout", lf)
	}
	cs := agent(t, ctx, g, nil)
	res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "hang__anything"})
	if err != nil {
		t.Fatal(err)
	}
	if f := failureOf(t, res); f.Type != authmap.TypeTimeout || f.Upstream != "hang" {
		t.Errorf("call while the upstream hangs = %+v, want timeout from hang", f)
	}
}

// TestProviderOutageIsUnavailable is the regression test for issue 6 item 3
// (outages): a server reporting that its provider cannot be reached (DNS,
// refused, reset) in an isError result gets upstream_unavailable,
// retryable, in _meta, its content untouched; not a non-retryable
// upstream_error.
func TestProviderOutageIsUnavailable(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	up := newTestUpstream(t, "gh", "list_issues")
	_, cs := startGateway(t, ctx, fmt.Sprintf("upstreams:\n  gh: {url: %s}\n", up.url()))
	for _, msg := range []string{
		`failed to list issues: Get "https://api.github.com/repos/o/r/issues": dial tcp: lookup api.github.com: no such host`,
		"request to https://api.github.com/user failed, reason: getaddrinfo ENOTFOUND api.github.com",
		"connect ECONNREFUSED 140.82.112.6:443",
		`Get "https://api.github.com/user": read tcp 10.0.0.1:5555->140.82.112.6:443: read: connection reset by peer`,
	} {
		res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "gh__list_issues", Arguments: map[string]any{"text": "iserror:" + msg}})
		if err != nil {
			t.Fatal(err)
		}
		raw, _ := json.Marshal(res.Meta[MetaKey])
		var f authmap.Failure
		_ = json.Unmarshal(raw, &f)
		if !res.IsError || f.Type != authmap.TypeUpstreamUnavailable || !f.Retryable || f.Upstream != "gh" {
			t.Errorf("%q: _meta = %s, want upstream_unavailable, retryable", msg, raw)
		}
		if text(res) != msg {
			t.Errorf("%q: content = %q, want the upstream's own", msg, text(res))
		}
	}
}

// TestStartFailureSameType is the regression test for issue 6 item 3
// (commands): a stdio command that cannot be started fails the same way
// whether its path is absolute or looked up in PATH.
func TestStartFailureSameType(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	g, cs := startGateway(t, ctx, "upstreams:\n  abs: {command: /nonexistent/credgate-x}\n  rel: {command: nonexistent-credgate-x}\n")
	type view struct {
		Type      authmap.Type
		Retryable bool
	}
	h := g.Health()
	got := map[string]view{}
	for _, name := range []string{"abs", "rel"} {
		lf := h.Upstreams[name].LastFailure
		if lf == nil {
			t.Fatalf("health[%s] has no last_failure", name)
		}
		got["health "+name] = view{lf.Type, lf.Retryable}
		res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: name + "__x"})
		if err != nil {
			t.Fatal(err)
		}
		f := failureOf(t, res)
		got["call "+name] = view{f.Type, f.Retryable}
	}
	want := view{authmap.TypeUpstreamUnavailable, true}
	if diff := cmp.Diff(map[string]view{"health abs": want, "health rel": want, "call abs": want, "call rel": want}, got); diff != "" {
		t.Errorf("start failures mismatch (-want +got):\n%s", diff)
	}
}

// TestTypeScriptSDKRefusalsTyped: the TypeScript SDK server answers its own
// refusals of a call (arguments failing the tool's schema, an unknown tool)
// as a tool error result whose text starts with the JSON-RPC code; they
// reach the agent as invalid_request and not_found, as the go-sdk's do,
// not as upstream_error (found trying the gateway from outside with
// server-everything).
func TestTypeScriptSDKRefusalsTyped(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	up := newTestUpstream(t, "ts", "get")
	_, cs := startGateway(t, ctx, fmt.Sprintf("upstreams:\n  ts: {url: %s}\n", up.url()))
	for text, want := range map[string]authmap.Type{
		`MCP error -32602: Input validation error: Invalid arguments for tool get-sum: [{"expected": "number", "code": "invalid_type", "path": ["a"]}]`: authmap.TypeInvalidRequest,
		"MCP error -32602: Tool nope not found": authmap.TypeNotFound,
		"MCP error -32603: something broke":     authmap.TypeUpstreamError,
	} {
		res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "ts__get", Arguments: map[string]any{"text": "iserror:" + text}})
		if err != nil {
			t.Fatal(err)
		}
		if f := failureMeta(t, res); f["type"] != string(want) || f["retryable"] == true {
			t.Errorf("%q: failure %v; want %s, not retryable", text, f, want)
		}
	}
}
