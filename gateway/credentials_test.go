package gateway

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
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
	"github.com/modelcontextprotocol/go-sdk/mcp"
	"github.com/rs/zerolog"

	"github.com/credgate/credgate/authmap"
)

// bearerUpstream is a real MCP server over streamable HTTP that checks the
// bearer token of every request against the tokens it accepts, and records
// what each request carried.
type bearerUpstream struct {
	*testUpstream
	mu      sync.Mutex
	valid   map[string]string // token -> how a rejection is worded ("" = accepted)
	seen    []seenRequest
	handler http.Handler
}

type seenRequest struct {
	Token  string
	Method string // JSON-RPC method ("" for a GET or DELETE)
	Tool   string // tools/call only
}

// Rejections the bearer upstream answers with (RFC 6750 challenges).
const (
	rejectExpired = `Bearer error="invalid_token", error_description="The access token expired"`
	rejectRevoked = `Bearer error="invalid_token", error_description="The access token has been revoked"`
	rejectInvalid = `Bearer error="invalid_token", error_description="The access token is invalid"`
)

func newBearerUpstream(t *testing.T, tools ...string) *bearerUpstream {
	t.Helper()
	b := &bearerUpstream{testUpstream: newTestUpstream(t, "bearer", tools...), valid: map[string]string{}}
	inner := b.http.Config.Handler
	b.http.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		tok, _ := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		sr := seenRequest{Token: tok}
		if r.Method == http.MethodPost {
			body, _ := io.ReadAll(r.Body)
			r.Body = io.NopCloser(bytes.NewReader(body))
			var msg struct {
				Method string `json:"method"`
				Params struct {
					Name string `json:"name"`
				} `json:"params"`
			}
			_ = json.Unmarshal(body, &msg)
			sr.Method = msg.Method
			if msg.Method == "tools/call" {
				sr.Tool = msg.Params.Name
			}
		}
		b.mu.Lock()
		b.seen = append(b.seen, sr)
		reject, ok := b.valid[tok]
		b.mu.Unlock()
		if !ok || reject != "" {
			if reject == "" {
				reject = rejectInvalid
			}
			w.Header().Set("WWW-Authenticate", reject)
			http.Error(w, "unauthorized", http.StatusUnauthorized)
			return
		}
		inner.ServeHTTP(w, r)
	})
	return b
}

// accept makes the upstream accept tok; reject (non-empty) makes it refuse tok that way.
func (b *bearerUpstream) accept(tok string)            { b.set(tok, "") }
func (b *bearerUpstream) refuse(tok, challenge string) { b.set(tok, challenge) }
func (b *bearerUpstream) set(tok, v string) {
	b.mu.Lock()
	b.valid[tok] = v
	b.mu.Unlock()
}

// calls returns the tools/call requests seen, in order.
func (b *bearerUpstream) calls() []seenRequest {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []seenRequest
	for _, s := range b.seen {
		if s.Method == "tools/call" {
			out = append(out, s)
		}
	}
	return out
}

// lastToken returns the token the last tools/call request carried.
func (b *bearerUpstream) lastToken() string {
	calls := b.calls()
	if len(calls) == 0 {
		return ""
	}
	return calls[len(calls)-1].Token
}

func (b *bearerUpstream) tokens() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []string
	for _, s := range b.seen {
		out = append(out, s.Token)
	}
	return out
}

// credGateway starts a gateway for yaml with env as its sources' environment,
// its logs in logs, and returns an agent session and the gateway's HTTP URL.
func credGateway(t *testing.T, ctx context.Context, yaml string, env map[string]string, logs io.Writer) (*Server, *mcp.ClientSession, string) {
	t.Helper()
	if logs == nil {
		logs = zerolog.NewTestWriter(t)
	}
	log := zerolog.New(logs).Level(zerolog.InfoLevel)
	lookup := func(k string) (string, bool) { v, ok := env[k]; return v, ok }
	g := startCredServer(t, ctx, yaml, &Options{Logger: &log, ReconnectMin: 10 * time.Millisecond, ReconnectMax: 50 * time.Millisecond,
		Sources: &authmap.SourceOptions{LookupEnv: lookup}})
	hs := httptest.NewServer(g.Handler())
	t.Cleanup(hs.Close)
	c := mcp.NewClient(&mcp.Implementation{Name: "agent", Version: "1"}, nil)
	cs, err := c.Connect(ctx, &mcp.StreamableClientTransport{Endpoint: hs.URL + "/mcp"}, nil)
	if err != nil {
		t.Fatalf("connect agent: %v", err)
	}
	t.Cleanup(func() { _ = cs.Close() })
	return g, cs, hs.URL
}

// startCredServer starts a gateway for yaml with opts, its credentials
// loaded first, and waits for its first connection attempts.
func startCredServer(t *testing.T, ctx context.Context, yaml string, opts *Options) *Server {
	t.Helper()
	cfg, err := ParseConfig([]byte(yaml), nil)
	if err != nil {
		t.Fatalf("ParseConfig: %v", err)
	}
	g, err := New(cfg, opts)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	_ = g.LoadCredentials(ctx)
	g.Start(ctx)
	t.Cleanup(func() { _ = g.Close() })
	if err := g.WaitTried(ctx); err != nil {
		t.Fatalf("WaitTried: %v", err)
	}
	return g
}

// tokGateway is credGateway for the common shape: one credential "tok",
// whose YAML mapping holds cred (e.g. "source: {value: x}"), borne by one
// upstream "api" at url; head is YAML put first (admin, webhooks), or "".
func tokGateway(t *testing.T, ctx context.Context, head, cred, url string, env map[string]string, logs io.Writer) (*Server, *mcp.ClientSession, string) {
	t.Helper()
	return credGateway(t, ctx, tokConfig(head, cred, url), env, logs)
}

// valueTokGateway is tokGateway with tok's value, token, set in the config
// and an echo upstream that accepts it.
func valueTokGateway(t *testing.T, ctx context.Context, head, token string) (*Server, *mcp.ClientSession, string, *bearerUpstream) {
	t.Helper()
	up := newBearerUpstream(t, "echo")
	up.accept(token)
	g, cs, base := tokGateway(t, ctx, head, "source: {value: "+token+"}", up.url(), nil, nil)
	return g, cs, base, up
}

// tokConfig is the YAML tokGateway runs.
func tokConfig(head, cred, url string) string {
	return fmt.Sprintf("%scredentials:\n  tok: {%s}\nupstreams:\n  api: {url: %s, credential: tok}\n", head, cred, url)
}

// tokenFile writes content to a file in a new temporary directory and
// returns its path.
func tokenFile(t *testing.T, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "token")
	writeFile(t, path, content)
	return path
}

// rotateFile rotates the file credential tok of g, read from path, to
// content: up accepts the new value before it is written, and rotateFile
// returns once g holds it.
func rotateFile(t *testing.T, ctx context.Context, g *Server, up *bearerUpstream, path, content string) {
	t.Helper()
	value := strings.TrimSpace(content)
	up.accept(value)
	writeFile(t, path, content)
	cred := g.Credentials().Get("tok")
	waitFor(t, ctx, func() bool { return cred.Value() == value })
}

// expiredExecGateway sets the scene for a reactive renewal: a gateway whose
// credential tok an exec source reads from a file, one call that succeeded
// with the first token, then the provider expired that token while the
// source already holds a new one, which nothing has read yet (exec is not
// watched). The next call is rejected as expired, renewed and resent.
func expiredExecGateway(t *testing.T, ctx context.Context) (*Server, *mcp.ClientSession, *bearerUpstream) {
	t.Helper()
	return rejectedExecGateway(t, ctx, rejectExpired)
}

// rejectedExecGateway is expiredExecGateway with the first value rejected
// with challenge.
func rejectedExecGateway(t *testing.T, ctx context.Context, challenge string) (*Server, *mcp.ClientSession, *bearerUpstream) {
	t.Helper()
	path := tokenFile(t, "first-token-0123456789")
	up := newBearerUpstream(t, "echo")
	up.accept("first-token-0123456789")
	g, cs, _ := tokGateway(t, ctx, "", "source: {exec: {command: [cat, "+path+"]}}", up.url(), nil, nil)
	callOK(t, ctx, cs, "api__echo")
	up.refuse("first-token-0123456789", challenge)
	up.accept("second-token-0123456789")
	writeFile(t, path, "second-token-0123456789")
	return g, cs, up
}

func callOK(t *testing.T, ctx context.Context, cs *mcp.ClientSession, tool string) {
	t.Helper()
	res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: tool, Arguments: map[string]any{"text": "hi"}})
	if err != nil {
		t.Fatalf("call %s: %v", tool, err)
	}
	if res.IsError {
		t.Fatalf("call %s failed: %s", tool, text(res))
	}
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// Regression test for issue 7 (call path): each tool's calls carry the
// bearer of the credential its per-tool entry names, the session's own
// traffic the default one.
func TestPerToolCredentials(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	up := newBearerUpstream(t, "get_issue", "create_issue")
	up.accept("read-token-0123456789")
	up.accept("write-token-0123456789")
	_, cs, _ := credGateway(t, ctx, fmt.Sprintf(`
credentials:
  gh-read: {source: {value: read-token-0123456789}}
  gh-write: {source: {env: GH_WRITE}}
upstreams:
  gh:
    url: %s
    credentials:
      - {tools: ["get_*"], credential: gh-read}
      - {tools: ["*"], credential: gh-write}
`, up.url()), map[string]string{"GH_WRITE": "write-token-0123456789"}, nil)
	callOK(t, ctx, cs, "gh__get_issue")
	callOK(t, ctx, cs, "gh__create_issue")
	want := []seenRequest{
		{Token: "read-token-0123456789", Method: "tools/call", Tool: "get_issue"},
		{Token: "write-token-0123456789", Method: "tools/call", Tool: "create_issue"},
	}
	if diff := cmp.Diff(want, up.calls()); diff != "" {
		t.Errorf("tools/call requests mismatch (-want +got):\n%s", diff)
	}
	for _, s := range up.seen {
		if s.Method == "initialize" && s.Token != "write-token-0123456789" {
			t.Errorf("initialize carried %q, want the default credential (gh-write)", s.Token)
		}
	}
}

// Regression test for issue 7 (rotation): a file credential rotated by an
// atomic rename applies to the very next request, without a restart.
func TestFileRotationNextRequest(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	path := tokenFile(t, "old-token-0123456789\n")
	up := newBearerUpstream(t, "echo")
	up.accept("old-token-0123456789")
	g, cs, _ := tokGateway(t, ctx, "", "source: {file: "+path+"}", up.url(), nil, nil)
	callOK(t, ctx, cs, "api__echo")
	rotateFile(t, ctx, g, up, path, "new-token-0123456789\n")
	up.refuse("old-token-0123456789", rejectRevoked)
	callOK(t, ctx, cs, "api__echo")
	if got := up.lastToken(); got != "new-token-0123456789" {
		t.Errorf("the call after the rotation carried %q, want the new token", got)
	}
	// The event follows the new value's publication (it is emitted once the
	// credential's lock is released): wait for it.
	waitFor(t, ctx, func() bool { return slices.Contains(eventKinds(g, "tok"), "rotated") })
}

func eventKinds(g *Server, name string) []string {
	var out []string
	for _, e := range g.Events() {
		if e.Credential == name {
			out = append(out, string(e.Kind))
		}
	}
	return out
}

// Regression test for issue 7 (reactive renewal): a call rejected as expired
// re-reads an exec source whose value changed, and is resent once with the
// new value; the agent sees one successful call.
func TestReactiveRenewalResendsOnce(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	g, cs, up := expiredExecGateway(t, ctx)
	callOK(t, ctx, cs, "api__echo")
	want := []seenRequest{
		{Token: "first-token-0123456789", Method: "tools/call", Tool: "echo"},
		{Token: "first-token-0123456789", Method: "tools/call", Tool: "echo"},
		{Token: "second-token-0123456789", Method: "tools/call", Tool: "echo"},
	}
	if diff := cmp.Diff(want, up.calls()); diff != "" {
		t.Errorf("tools/call requests mismatch (-want +got):\n%s", diff)
	}
	if st := g.Credentials().Get("tok").Status(); st != authmap.StatusHealthy {
		t.Errorf("status %s, want healthy", st)
	}
	// A second rejection within the minute is not renewed again: it is
	// reported, typed, and the call is not resent.
	up.refuse("second-token-0123456789", rejectExpired)
	res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "api__echo", Arguments: map[string]any{}})
	if err != nil {
		t.Fatal(err)
	}
	if f := failureOf(t, res); f.Subtype != authmap.SubtypeCredentialExpired || f.Credential != "tok" {
		t.Errorf("failure %+v, want credential_expired naming tok", f)
	}
	if n := len(up.calls()); n != 4 {
		t.Errorf("%d tools/call requests, want 4 (no second resend)", n)
	}
}

// TestRevokedRenewsFromSource: a call rejected as revoked re-reads a
// source that can change (here exec), and is resent once with the new
// value it already holds; only the "invalid" or "expired" wording was
// renewed, and a revoked one stayed refused until an operator's reload.
func TestRevokedRenewsFromSource(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	g, cs, up := rejectedExecGateway(t, ctx, rejectRevoked)
	callOK(t, ctx, cs, "api__echo")
	calls := up.calls()
	if last := calls[len(calls)-1]; last.Token != "second-token-0123456789" {
		t.Errorf("the last call carried %q, want the new value", last.Token)
	}
	if st := g.Credentials().Get("tok").Status(); st != authmap.StatusHealthy {
		t.Errorf("status %s, want healthy", st)
	}
}

// TestPutOffRenewalIsRetryable: a value revoked again within the minute of
// its last renewal has its renewal put off; meanwhile calls are refused as
// retryable, with when to retry (the gateway renews it by itself), where
// they read "not retryable, reauthorize" for a minute that healed.
func TestPutOffRenewalIsRetryable(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	_, cs, up := rejectedExecGateway(t, ctx, rejectRevoked)
	callOK(t, ctx, cs, "api__echo") // renewed and resent
	up.refuse("second-token-0123456789", rejectRevoked)
	_ = callTool(t, ctx, cs, "api__echo") // revoked again: its renewal put off
	res := callTool(t, ctx, cs, "api__echo")
	f := failureOf(t, res)
	if f.Subtype != authmap.SubtypeCredentialRevoked || !f.Retryable || f.RetryAfterSeconds == nil || *f.RetryAfterSeconds > 60 {
		t.Errorf("failure while the renewal is put off = %+v, want revoked, retryable, with retry_after_seconds", f)
	}
}

// Regression test for issue 7: a credential without a value fails the call
// as credential_missing and sends nothing.
func TestMissingCredentialNotSent(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	up := newBearerUpstream(t, "get_x", "put_x")
	up.accept("write-token-0123456789")
	_, cs, _ := credGateway(t, ctx, fmt.Sprintf(`
lifecycle: {startup: {fail_on: never}}
credentials:
  read: {source: {env: GH_READ}}
  write: {source: {value: write-token-0123456789}}
upstreams:
  gh:
    url: %s
    credential: write
    credentials: [{tools: ["get_*"], credential: read}]
`, up.url()), nil, nil)
	res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "gh__get_x", Arguments: map[string]any{}})
	if err != nil {
		t.Fatal(err)
	}
	f := failureOf(t, res)
	if f.Subtype != authmap.SubtypeCredentialMissing || f.Credential != "read" || f.Upstream != "gh" {
		t.Errorf("failure %+v, want credential_missing naming read and gh", f)
	}
	if n := len(up.calls()); n != 0 {
		t.Errorf("%d tools/call requests reached the upstream, want none", n)
	}
	callOK(t, ctx, cs, "gh__put_x") // the other credential still works
}

// Regression test for issue 7 (live status): a value the provider revoked is
// revoked in health and is not sent again, until it changes.
func TestRevokedStaysRevoked(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	g, cs, _, up := valueTokGateway(t, ctx, "", "live-token-0123456789")
	callOK(t, ctx, cs, "api__echo")
	up.refuse("live-token-0123456789", rejectRevoked)
	for i := range 3 {
		res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "api__echo", Arguments: map[string]any{}})
		if err != nil {
			t.Fatal(err)
		}
		if f := failureOf(t, res); f.Subtype != authmap.SubtypeCredentialRevoked || f.Credential != "tok" || f.Retryable {
			t.Errorf("call %d: failure %+v, want credential_revoked naming tok, not retryable", i, f)
		}
	}
	if n := len(up.calls()); n != 2 {
		t.Errorf("%d tools/call requests, want 2: after the rejection the dead value is not sent", n)
	}
	h := g.Health()
	if got := h.Credentials["tok"].Status; got != authmap.StatusRevoked {
		t.Errorf("health credential status %s, want revoked", got)
	}
	if h.Status != HealthDegraded {
		t.Errorf("health status %s, want degraded", h.Status)
	}
	if n := strings.Count(strings.Join(eventKinds(g, "tok"), " "), "revoked"); n != 1 {
		t.Errorf("%d revoked events, want 1", n)
	}
}

// Regression test for issue 7 (secrets): no credential value, previous or
// current, nor the admin token or webhook secret, appears in logs, health,
// events or results, even when the upstream echoes them.
func TestCredentialSecretsNeverShown(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	path := tokenFile(t, "first-secret-abcdef0123456789")
	up := newBearerUpstream(t, "echo")
	up.accept("first-secret-abcdef0123456789")
	var logs syncBuffer
	g, cs, base := tokGateway(t, ctx, "admin: {token: admin-secret-abcdef0123456789}\nwebhooks: {secret: {env: HOOK}}\n", "source: {file: "+path+"}", up.url(), map[string]string{"HOOK": "hook-secret-abcdef0123456789"}, &logs)
	secrets := []string{"first-secret-abcdef0123456789", "second-secret-abcdef0123456789", "admin-secret-abcdef0123456789", "hook-secret-abcdef0123456789"}
	var results []string
	echo := func(s string) {
		res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "api__echo", Arguments: map[string]any{"text": "text:" + s}})
		if err != nil {
			t.Fatal(err)
		}
		b, _ := json.Marshal(res)
		results = append(results, string(b))
	}
	for _, s := range secrets {
		if !strings.HasPrefix(s, "second") { // not known to anyone yet
			echo(s)
		}
	}
	rotateFile(t, ctx, g, up, path, "second-secret-abcdef0123456789")
	for _, s := range secrets {
		echo(s)
	}
	// A rejection quoting the token.
	up.refuse("second-secret-abcdef0123456789", rejectRevoked)
	echo("x")
	h, _ := json.Marshal(g.Health())
	ev := adminGet(t, base+"/admin/events", "admin-secret-abcdef0123456789")
	surfaces := map[string]string{"logs": logs.String(), "health": string(h), "events": ev, "results": strings.Join(results, "\n")}
	for name, text := range surfaces {
		for _, s := range secrets {
			if strings.Contains(text, s) {
				t.Errorf("%s contain the secret %q", name, s)
			}
		}
	}
	if !strings.Contains(ev, `"rotated"`) {
		t.Errorf("events lack the rotation: %s", ev)
	}
}

func adminGet(t *testing.T, url, token string) string {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %d %s", url, resp.StatusCode, b)
	}
	return string(b)
}

func post(t *testing.T, url string, header map[string]string, body string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, url, strings.NewReader(body))
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// Regression test for issue 7 (rotation without restart): the admin reload
// and the signed webhook re-read an exec credential; a bad or missing
// signature or admin token changes nothing.
func TestAdminAndWebhookReload(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	path := tokenFile(t, "v1-token-0123456789")
	up := newBearerUpstream(t, "echo")
	for _, v := range []string{"v1", "v2", "v3"} {
		up.accept(v + "-token-0123456789")
	}
	g, _, base := tokGateway(t, ctx, "admin: {token: admin-token-0123456789}\nwebhooks: {secret: hook-secret-0123456789}\n", "source: {exec: {command: [cat, "+path+"]}}", up.url(), nil, nil)
	cred := g.Credentials().Get("tok")
	sign := func(key, body string) string {
		m := hmac.New(sha256.New, []byte(key))
		m.Write([]byte(body))
		return "sha256=" + hex.EncodeToString(m.Sum(nil))
	}
	writeFile(t, path, "v2-token-0123456789")
	for _, tc := range []struct {
		name   string
		url    string
		header map[string]string
		want   int
	}{
		{"admin without token", base + "/admin/credentials/tok/reload", nil, 401},
		{"admin with a wrong token", base + "/admin/credentials/tok/reload", map[string]string{"Authorization": "Bearer nope"}, 401},
		{"webhook without signature", base + "/webhooks/rotate/tok", nil, 401},
		{"webhook signed with another key", base + "/webhooks/rotate/tok", map[string]string{"X-Credgate-Signature": sign("other", "{}")}, 401},
		{"admin for an unknown credential", base + "/admin/credentials/nope/reload", map[string]string{"Authorization": "Bearer admin-token-0123456789"}, 404},
	} {
		if code, body := post(t, tc.url, tc.header, "{}"); code != tc.want {
			t.Errorf("%s: %d %s, want %d", tc.name, code, body, tc.want)
		}
		if v := cred.Value(); v != "v1-token-0123456789" {
			t.Fatalf("%s changed the credential", tc.name)
		}
	}
	code, body := post(t, base+"/admin/credentials/tok/reload", map[string]string{"Authorization": "Bearer admin-token-0123456789"}, "")
	if code != 200 || !strings.Contains(body, `"changed": true`) || cred.Value() != "v2-token-0123456789" {
		t.Errorf("admin reload: %d %s, value changed: %t", code, body, cred.Value() == "v2-token-0123456789")
	}
	writeFile(t, path, "v3-token-0123456789")
	code, body = post(t, base+"/webhooks/rotate/tok", map[string]string{"X-Credgate-Signature": sign("hook-secret-0123456789", `{"ping":1}`)}, `{"ping":1}`)
	if code != 200 || cred.Value() != "v3-token-0123456789" {
		t.Errorf("webhook: %d %s, value changed: %t", code, body, cred.Value() == "v3-token-0123456789")
	}
	var triggers []string
	for _, e := range g.Events() {
		if e.Kind == authmap.EventRotated {
			triggers = append(triggers, string(e.Trigger))
		}
	}
	if diff := cmp.Diff([]string{"admin", "webhook"}, triggers); diff != "" {
		t.Errorf("rotation triggers mismatch (-want +got):\n%s", diff)
	}
}

// Regression test for issue 7 (admin endpoints exist only when configured).
func TestAdminEndpointsOnlyWhenConfigured(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	_, _, base, _ := valueTokGateway(t, ctx, "", "tok-0123456789")
	for _, p := range []string{"/admin/credentials/tok/reload", "/webhooks/rotate/tok"} {
		if code, _ := post(t, base+p, nil, ""); code != http.StatusNotFound && code != http.StatusMethodNotAllowed {
			t.Errorf("POST %s: %d, want 404 (not configured)", p, code)
		}
	}
}

// Regression test for issue 7 (health): /health shows each credential and
// each upstream's binding.
func TestCredentialHealth(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	up := newBearerUpstream(t, "echo")
	up.accept("tok-0123456789")
	exp := time.Now().Add(30 * time.Minute).UTC().Truncate(time.Second)
	g, _, _ := credGateway(t, ctx, fmt.Sprintf(`
credentials:
  tok: {source: {value: tok-0123456789}, expires_at: %q}
upstreams:
  api:
    url: %s
    credentials: [{tools: ["*"], credential: tok}]
`, exp.Format(time.RFC3339), up.url()), nil, nil)
	h := g.Health()
	s := h.Credentials["tok"]
	if s.Status != authmap.StatusExpiring || s.Source != "value" || s.ExpiresAt == nil || !s.ExpiresAt.Equal(exp) || s.TTLSeconds == nil {
		t.Errorf("credential health %+v, want expiring, source value, expires_at %s", s, exp)
	}
	if h.Status != HealthDegraded {
		t.Errorf("status %s, want degraded while a credential is expiring", h.Status)
	}
	uh := h.Upstreams["api"]
	if diff := cmp.Diff([]ToolCredentialHealth{{Tools: []string{"*"}, Credential: "tok"}}, uh.Credentials); diff != "" || uh.Credential != "tok" {
		t.Errorf("upstream binding credential=%q, list mismatch (-want +got):\n%s", uh.Credential, diff)
	}
}

// Regression test for issue 7 (config): every binding problem is reported,
// naming its key; a secret takes a string or a source object.
func TestCredentialConfigValidation(t *testing.T) {
	t.Parallel()
	_, err := ParseConfig([]byte(`
admin: {token: {env: ADMIN}}
webhooks: {secret: plain-secret-value}
credentials:
  hdr: {source: {value: x-0123456789}}
  envc: {source: {value: y-0123456789}, inject: {env: TOKEN}}
upstreams:
  web:
    url: http://127.0.0.1:1/mcp
    credential: envc
    credentials:
      - {tools: ["get_*"], credential: nope}
      - {tools: [], credential: hdr}
  local:
    command: /bin/true
    credential: hdr
`), nil)
	if err == nil {
		t.Fatal("config accepted")
	}
	for _, want := range []string{
		`upstreams.web.credential: credential "envc" injects the environment variable TOKEN`,
		`upstreams.web.credentials[0].credential: unknown credential "nope"`,
		`upstreams.web.credentials[1].tools: missing`,
		`upstreams.local.credential: credential "hdr" has no inject.env`,
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q:\n%v", want, err)
		}
	}
	for _, unwanted := range []string{"admin.token", "webhooks.secret"} {
		if strings.Contains(err.Error(), unwanted) {
			t.Errorf("error mentions %s, which is valid:\n%v", unwanted, err)
		}
	}
	cfg, err := ParseConfig([]byte(`
upstreams:
  web: {url: http://127.0.0.1:1/mcp, credential: label-only}
`), nil)
	if err != nil {
		t.Fatal(err)
	}
	if w := strings.Join(cfg.Warnings(), "\n"); !strings.Contains(w, `upstreams.web.credential: "label-only" is not defined under credentials`) {
		t.Errorf("warnings lack the label note: %s", w)
	}
}

// Regression test for issue 7 (a new value is checked before it replaces the
// old one): with probe.tool, a rotated value the upstream rejects is not
// adopted (rejected_rotation) and calls keep the old one; a good one is.
func TestToolProbeGuardsRotation(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	path := tokenFile(t, "good-one-0123456789")
	up := newBearerUpstream(t, "echo", "get_me")
	up.accept("good-one-0123456789")
	up.accept("good-two-0123456789")
	g, cs, _ := tokGateway(t, ctx, "", "source: {file: "+path+"}, probe: {tool: get_me}", up.url(), nil, nil)
	cred := g.Credentials().Get("tok")
	if kinds := eventKinds(g, "tok"); !slices.Contains(kinds, "validated") {
		t.Errorf("events at start %v, want validated (the probe ran)", kinds)
	}
	writeFile(t, path, "bad-value-0123456789")
	waitFor(t, ctx, func() bool { return slices.Contains(eventKinds(g, "tok"), "rejected_rotation") })
	if v := cred.Value(); v != "good-one-0123456789" {
		t.Errorf("a value the probe rejected was adopted")
	}
	callOK(t, ctx, cs, "api__echo")
	writeFile(t, path, "good-two-0123456789")
	waitFor(t, ctx, func() bool { return cred.Value() == "good-two-0123456789" })
	callOK(t, ctx, cs, "api__echo")
	if got := up.lastToken(); got != "good-two-0123456789" {
		t.Errorf("last call carried %q", got)
	}
}

// Regression test for issue 7 (rotation without restart): an HTTP upstream
// that is down because its credential was missing or refused at connect
// reconnects as soon as the credential gets a new value, not at the end of
// its reconnect backoff. Before the fix ops who fixed the secret waited up to
// Options.ReconnectMax (30 s by default, an hour here) for the upstream.
func TestCredentialChangeEndsReconnectBackoff(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name  string
		start string // the file's content at start; "" = no file
	}{
		{"missing at start", ""},
		{"refused at connect", "refused-token-0123456789\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
			defer cancel()
			path := filepath.Join(t.TempDir(), "token")
			if tc.start != "" {
				writeFile(t, path, tc.start)
			}
			up := newBearerUpstream(t, "echo")
			log := zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.InfoLevel)
			g := startCredServer(t, ctx, tokConfig("lifecycle: {startup: {fail_on: never}}\n", "source: {file: "+path+"}", up.url()),
				&Options{Logger: &log, ReconnectMin: time.Hour, ReconnectMax: time.Hour})
			if st := g.Health().Upstreams["api"].Status; st != StatusDown {
				t.Fatalf("upstream %s before the fix of its credential, want down", st)
			}
			up.accept("good-token-0123456789")
			writeFile(t, path, "good-token-0123456789\n")
			waitFor(t, ctx, func() bool { return g.Health().Upstreams["api"].Status == StatusUp })
		})
	}
}

// TestRotationAfterCallRejectionReconnects: a credential a call found
// rejected, after which the health probe (refused: the value is held back)
// took the upstream down, reconnects as soon as the credential is rotated.
// It waited out the reconnect backoff of the lost session instead (6 to 27
// s in a trial from outside, an hour here), calls meanwhile failing with
// "is invalid and is not sent again until it changes".
func TestRotationAfterCallRejectionReconnects(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	path := filepath.Join(t.TempDir(), "token")
	writeFile(t, path, "first-token-0123456789\n")
	up := newBearerUpstream(t, "echo")
	up.accept("first-token-0123456789")
	log := zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.InfoLevel)
	g := startCredServer(t, ctx, tokConfig("health_interval: 50ms\nlifecycle: {startup: {fail_on: never}}\n", "source: {file: "+path+"}", up.url()),
		&Options{Logger: &log, ReconnectMin: time.Hour, ReconnectMax: time.Hour})
	hs := httptest.NewServer(g.Handler())
	t.Cleanup(hs.Close)
	cs := agentAt(t, ctx, hs.URL, nil)
	callOK(t, ctx, cs, "api__echo")

	up.refuse("first-token-0123456789", rejectInvalid)
	if f := failureOf(t, callTool(t, ctx, cs, "api__echo")); f.Subtype != authmap.SubtypeCredentialInvalid {
		t.Fatalf("call after the revocation: %+v; want credential_invalid", f)
	}
	waitFor(t, ctx, func() bool { return g.Health().Upstreams["api"].Status == StatusDown })

	up.accept("second-token-0123456789")
	writeFile(t, path, "second-token-0123456789\n")
	waitFor(t, ctx, func() bool { return g.Health().Upstreams["api"].Status == StatusUp })
	callOK(t, ctx, cs, "api__echo")
}

// Regression test for issue 7 (admin endpoints): the bearer scheme of
// admin.token is matched without regard to case, as HTTP says; a wrong or
// missing token, or another scheme, still gets 401.
func TestAdminBearerSchemeCaseInsensitive(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	_, _, base, _ := valueTokGateway(t, ctx, "admin: {token: admin-token-0123456789}\n", "tok-0123456789")
	for auth, want := range map[string]int{
		"Bearer admin-token-0123456789": http.StatusOK,
		"bearer admin-token-0123456789": http.StatusOK,
		"BEARER admin-token-0123456789": http.StatusOK,
		"Bearer wrong-token":            http.StatusUnauthorized,
		"Basic admin-token-0123456789":  http.StatusUnauthorized,
		"admin-token-0123456789":        http.StatusUnauthorized,
		"Bearer":                        http.StatusUnauthorized,
		"":                              http.StatusUnauthorized,
	} {
		code, body := post(t, base+"/admin/credentials/tok/reload", map[string]string{"Authorization": auth}, "")
		if code != want {
			t.Errorf("Authorization %q: %d %s, want %d", auth, code, body, want)
		}
	}
}

// TestAdminBasicForBrowsers: with admin.token set, a browser opens the
// status page, and its event stream, with the token as the password of the
// HTTP Basic prompt a read-only ops endpoint asks for; the same credentials
// never authorize a POST to /admin/*, which a browser would send on another
// site's behalf. Found trying the built gateway: with admin.token set, no
// browser could open /status.
func TestAdminBasicForBrowsers(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	const token = "admin-token-0123456789"
	_, _, base, _ := valueTokGateway(t, ctx, "admin: {token: "+token+"}\n", "tok-0123456789")
	basic := func(user, pass string) string {
		return "Basic " + base64.StdEncoding.EncodeToString([]byte(user+":"+pass))
	}
	get := func(path, auth string) *http.Response {
		t.Helper()
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, base+path, nil)
		if auth != "" {
			req.Header.Set("Authorization", auth)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp
	}
	resp := get("/status", "")
	if resp.StatusCode != http.StatusUnauthorized || !slices.ContainsFunc(resp.Header.Values("WWW-Authenticate"), func(v string) bool { return strings.HasPrefix(v, "Basic ") }) {
		t.Errorf("GET /status without credentials: %d, WWW-Authenticate %q; want 401 with a Basic challenge", resp.StatusCode, resp.Header.Values("WWW-Authenticate"))
	}
	for _, path := range []string{"/status", "/health"} {
		if code := get(path, basic("ops", token)).StatusCode; code != http.StatusOK {
			t.Errorf("GET %s with the token as the Basic password: %d, want 200", path, code)
		}
		if code := get(path, basic("", token)).StatusCode; code != http.StatusOK {
			t.Errorf("GET %s with the token as the Basic password, no user: %d, want 200", path, code)
		}
		if code := get(path, basic("ops", "wrong")).StatusCode; code != http.StatusUnauthorized {
			t.Errorf("GET %s with a wrong Basic password: %d, want 401", path, code)
		}
	}
	if code, body := post(t, base+"/admin/credentials/tok/reload", map[string]string{"Authorization": basic("ops", token)}, ""); code != http.StatusUnauthorized {
		t.Errorf("POST /admin/... with Basic credentials: %d %s, want 401", code, body)
	}
}

// TestReloadRetriesRejected: an operator's reload of a credential the
// provider rejected (the admin endpoint), its value unchanged, tries the
// value again once the provider accepts it (found trying the gateway from outside: every failure
// says "reload it", but the reload answered changed: false and calls kept
// failing until a new value or a restart). A probe that still rejects it
// keeps it rejected.
func TestReloadRetriesRejected(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	const token = "same-token-0123456789"
	up := newBearerUpstream(t, "echo")
	up.accept(token)
	g, cs, base := tokGateway(t, ctx, "admin: {token: admin-token-0123456789}\n", "source: {value: "+token+"}", up.url(), nil, nil)
	callOK(t, ctx, cs, "api__echo")
	up.refuse(token, rejectInvalid)
	if f := failureOf(t, callTool(t, ctx, cs, "api__echo")); f.Subtype != authmap.SubtypeCredentialInvalid {
		t.Fatalf("failure %+v; want credential_invalid", f)
	}
	up.accept(token) // the provider accepts it again
	sent := len(up.tokens())
	if f := failureOf(t, callTool(t, ctx, cs, "api__echo")); f.Subtype != authmap.SubtypeCredentialInvalid || len(up.tokens()) != sent {
		t.Fatalf("before the reload: %+v, %d requests; want refused without sending", f, len(up.tokens())-sent)
	}
	// A reload of every credential (SIGHUP) does not bring a dead value back.
	if changed, _ := g.Credentials().Get("tok").Renew(ctx, authmap.TriggerSignal); changed || g.Credentials().Get("tok").Status() != authmap.StatusInvalid {
		t.Errorf("SIGHUP's reload: changed %v, status %s; want the value left invalid", changed, g.Credentials().Get("tok").Status())
	}
	admin := map[string]string{"Authorization": "Bearer admin-token-0123456789"}
	code, body := post(t, base+"/admin/credentials/tok/reload", admin, "")
	if code != 200 || !strings.Contains(body, `"changed": true`) {
		t.Errorf("admin reload of the rejected value: %d %s; want changed", code, body)
	}
	callOK(t, ctx, cs, "api__echo")
	if st := g.Credentials().Get("tok").Status(); st != authmap.StatusHealthy {
		t.Errorf("status after the reload and a served call: %s; want healthy", st)
	}
	found := false
	for _, e := range g.Events() {
		found = found || (e.Kind == authmap.EventRestored && e.Trigger == authmap.TriggerAdmin && strings.Contains(e.Detail, "tried again"))
	}
	if !found {
		t.Errorf("no restored event from the admin reload: %+v", g.Events())
	}
}

// TestOwnTrafficFallsBackToAToolsCredential: an upstream whose default
// credential is revoked keeps its session on another credential of its
// tools, so the tools bound to that one keep working; the health probe,
// sending the dead default, took the upstream down and every tool with it.
func TestOwnTrafficFallsBackToAToolsCredential(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	up := newBearerUpstream(t, "search", "write")
	up.accept("search-token-0123456789")
	up.accept("default-token-0123456789")
	g, cs, _ := credGateway(t, ctx, fmt.Sprintf(`
health_interval: 1s
credentials:
  dflt: {source: {value: default-token-0123456789}}
  srch: {source: {value: search-token-0123456789}}
upstreams:
  x:
    url: %s
    credential: dflt
    credentials: [{tools: [search], credential: srch}]
`, up.url()), nil, nil)
	callOK(t, ctx, cs, "x__search")
	up.refuse("default-token-0123456789", rejectRevoked)
	if f := failureOf(t, callTool(t, ctx, cs, "x__write")); f.Subtype != authmap.SubtypeCredentialRevoked {
		t.Fatalf("a call on the revoked default credential: %+v", f)
	}
	// Probes run (every second) with the default known dead: the session
	// stays up, on the search credential.
	ownOnSearch := func() int { // the upstream's own traffic, on the search credential
		up.mu.Lock()
		defer up.mu.Unlock()
		n := 0
		for _, s := range up.seen {
			if s.Method != "tools/call" && s.Token == "search-token-0123456789" {
				n++
			}
		}
		return n
	}
	waitFor(t, ctx, func() bool { return ownOnSearch() >= 2 })
	if st := g.Health().Upstreams["x"].Status; st != StatusUp {
		t.Errorf("upstream %s with its default credential revoked, want up", st)
	}
	callOK(t, ctx, cs, "x__search")
	// An agent's own request (a resource read) carries no other tool's
	// credential: its agent may have no grant on that tool.
	res, err := cs.ListResources(ctx, nil)
	if err != nil || len(res.Resources) == 0 {
		t.Fatalf("resources: %v, %v", res, err)
	}
	_, _ = cs.ReadResource(ctx, &mcp.ReadResourceParams{URI: res.Resources[0].URI})
	up.mu.Lock()
	for _, s := range up.seen {
		if s.Method == "resources/read" && s.Token == "search-token-0123456789" {
			t.Error("an agent's resources/read carried the search tool's credential")
		}
	}
	up.mu.Unlock()
	// The fallback rejected too: it is found dead, and not sent again.
	up.refuse("search-token-0123456789", rejectRevoked)
	srch := g.Credentials().Get("srch")
	waitFor(t, ctx, func() bool { return srch.Status() == authmap.StatusRevoked })
	sent := ownOnSearch()
	waitFor(t, ctx, func() bool { return g.Health().Upstreams["x"].Status != StatusUp })
	if n := ownOnSearch(); n > sent+1 {
		t.Errorf("%d more requests carried the revoked fallback credential, want at most one", n-sent)
	}
}

// Regression test for a trial's finding: a token file with a second line
// left the credential healthy and the upstream down (Go refused the
// header), and calls failed upstream_unavailable, retryable, for good. The
// credential is now invalid, calls fail credential_invalid naming why, and
// a fixed file brings the upstream up.
func TestCredentialValueWithLineBreak(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	const good = "multi-line-token-0123456789"
	up := newBearerUpstream(t, "echo")
	up.accept(good)
	path := tokenFile(t, good+"\nsecond line of output")
	g, cs, _ := credGateway(t, ctx, fmt.Sprintf("credentials:\n  ml: {source: {file: %s}}\nupstreams:\n  p: {url: %s, credential: ml}\n", path, up.url()), nil, nil)
	waitFor(t, ctx, func() bool { return g.Credentials().Get("ml").Status() == authmap.StatusInvalid })

	res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "p__echo", Arguments: map[string]any{}})
	if err != nil {
		t.Fatal(err)
	}
	f := failureOf(t, res)
	if f.Subtype != authmap.SubtypeCredentialInvalid || f.Retryable || !strings.Contains(f.Detail, "line break") || strings.Contains(f.Detail, "second line") {
		t.Errorf("failure %+v; want credential_invalid, not retryable, naming the line break and not the value", f)
	}
	if n := len(up.calls()); n != 0 {
		t.Errorf("the upstream got %d requests", n)
	}
	writeFile(t, path, good+"\n")
	waitFor(t, ctx, func() bool { return g.catalog.hasTool("p__echo") })
	if res := callTool(t, ctx, cs, "p__echo"); res.IsError {
		t.Errorf("after the file was fixed: %s", text(res))
	}
}

// Regression test for a trial's finding: a credential found dead between
// the upstream's initialize and its standalone GET stream (a peer
// replica's finding, applied just after a start) left the upstream
// "connecting" for some 20 s: the gateway refused the GET, and the SDK's
// client retried it five times. The GET now ends at once (no stream), and
// the upstream is down with the credential's failure.
func TestCredentialDeadWhileConnecting(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second) // the retries took some 31 s
	defer cancel()
	const tok = "dies-while-connecting-0123456789"
	up := newBearerUpstream(t, "echo")
	up.accept(tok)
	var onInitialized atomic.Pointer[func()]
	inner := up.http.Config.Handler
	up.http.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPost {
			body, _ := io.ReadAll(r.Body)
			r.Body = io.NopCloser(bytes.NewReader(body))
			if bytes.Contains(body, []byte(`"notifications/initialized"`)) {
				if f := onInitialized.Load(); f != nil {
					(*f)()
				}
			}
		}
		inner.ServeHTTP(w, r)
	})
	cfg, err := ParseConfig([]byte(fmt.Sprintf("credentials:\n  k: {source: {value: %s}}\nupstreams:\n  p: {url: %s, credential: k}\n", tok, up.url())), nil)
	if err != nil {
		t.Fatal(err)
	}
	log := zerolog.New(zerolog.NewTestWriter(t))
	g, err := New(cfg, &Options{Logger: &log, ReconnectMin: time.Second, ReconnectMax: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	once := sync.OnceFunc(func() { g.Credentials().Get("k").Report(authmap.SubtypeCredentialInvalid, tok) })
	onInitialized.Store(&once)
	_ = g.LoadCredentials(ctx)
	g.Start(ctx)
	t.Cleanup(func() { _ = g.Close() })
	waitFor(t, ctx, func() bool {
		uh := g.Health().Upstreams["p"]
		return uh.Status == StatusDown && uh.LastFailure != nil && uh.LastFailure.Subtype == authmap.SubtypeCredentialInvalid
	})
}

// Regression test for a re-check's finding: a GET stream answered 401 (a
// token revoked between initialize and the stream) still held connect
// some 20 s while the SDK retried it. The connect now fails at once, with
// the credential's failure.
func TestStreamRefusedWhileConnecting(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second) // the retries took some 20 s
	defer cancel()
	const tok = "refused-stream-0123456789"
	up := newBearerUpstream(t, "echo")
	up.accept(tok)
	inner := up.http.Config.Handler
	up.http.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet {
			w.Header().Set("WWW-Authenticate", rejectRevoked)
			http.Error(w, "unauthorized", http.StatusUnauthorized)
			return
		}
		inner.ServeHTTP(w, r)
	})
	g, _, _ := credGateway(t, ctx, fmt.Sprintf("credentials:\n  k: {source: {value: %s}}\nupstreams:\n  p: {url: %s, credential: k}\n", tok, up.url()), nil, nil)
	waitFor(t, ctx, func() bool {
		uh := g.Health().Upstreams["p"]
		return uh.Status == StatusDown && uh.LastFailure != nil && uh.LastFailure.Type == authmap.TypeAuthFailure
	})
}
