package e2e

// The gateway as an OAuth 2.1 resource server (issue 9), against a real
// authorization server: e2e/oidc/provider.mjs (oidc-provider) issues JWT
// access tokens for the gateway's resource URL, rotates its signing keys on
// demand (POST /test/rotate-keys) and signs tokens it would never issue
// (POST /test/sign: expired, another issuer) with its real key.
//
//	test ── oauthrs.Verifier ──────────────────────────────▶ provider (discovery, JWKS)
//	agent ─▶ front (httptest reverse proxy: the public URL) ─▶ gateway ─▶ testupstream --introspect
//	                                                            │             (records every token it sees)
//	                                                            └─ JWKS ─▶ provider
//
// The front proxy gives the gateway a public URL known before it starts (its
// resource URL), as an ingress does, with no fixed port.

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
	"github.com/modelcontextprotocol/go-sdk/oauthex"

	"github.com/credgate/credgate/authmap/oauthrs"
)

// agentClient is the OAuth client agents use in these tests.
var agentClient = oidcClient{ID: "agent", Grants: []string{"client_credentials"}}

// forgeToken builds a compact JWS from header and the claims of a real
// token, signed by sign (nil: no signature).
func forgeToken(t *testing.T, header map[string]any, realToken string, sign func([]byte) []byte) string {
	t.Helper()
	h, err := json.Marshal(header)
	if err != nil {
		t.Fatal(err)
	}
	input := base64.RawURLEncoding.EncodeToString(h) + "." + strings.Split(realToken, ".")[1]
	if sign == nil {
		return input + "."
	}
	return input + "." + base64.RawURLEncoding.EncodeToString(sign([]byte(input)))
}

// tamper flips one bit of a token's signature.
func tamper(t *testing.T, token string) string {
	t.Helper()
	i := strings.LastIndex(token, ".")
	sig, err := base64.RawURLEncoding.DecodeString(token[i+1:])
	if err != nil {
		t.Fatal(err)
	}
	sig[len(sig)/2] ^= 1
	return token[:i+1] + base64.RawURLEncoding.EncodeToString(sig)
}

// hmacWithJWK signs HS256 with the provider's public key (its JWK JSON) as
// the secret: the algorithm-confusion attack.
func hmacWithJWK(t *testing.T, ctx context.Context, p *oidcProvider) func([]byte) []byte {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, p.JWKSURL, nil)
	if err != nil {
		t.Fatal(err)
	}
	var jwks struct {
		Keys []json.RawMessage `json:"keys"`
	}
	if err := doJSON(req, &jwks); err != nil || len(jwks.Keys) == 0 {
		t.Fatalf("JWKS: %v %v", jwks, err)
	}
	return func(in []byte) []byte {
		m := hmac.New(sha256.New, jwks.Keys[0])
		m.Write(in)
		return m.Sum(nil)
	}
}

// TestOAuthVerifierRealProvider: authmap/oauthrs against oidc-provider. Real
// tokens are accepted, each kind of bad token is refused with its own reason,
// and rotated keys are picked up without a new verifier (issue 9).
func TestOAuthVerifierRealProvider(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	const resource, other = "https://gw.example.test/mcp", "https://other.example.test/mcp"
	opts := &oidcOptions{Clients: []oidcClient{agentClient}, JWTResources: []string{resource, other}, AccessTTL: 300 * time.Second, Scopes: "mcp:tools read"}
	p := startOIDC(t, opts)
	p2 := startOIDC(t, opts) // another authorization server: its tokens have another iss

	var mu sync.Mutex
	var fetches []oauthrs.Fetch
	v, err := oauthrs.New(oauthrs.Config{Issuer: p.Issuer, Audience: resource, RequiredScopes: []string{"mcp:tools"}}, &oauthrs.Options{
		// Every unknown kid may fetch: this test rotates twice in a row.
		RefetchInterval: time.Nanosecond,
		OnFetch:         func(f oauthrs.Fetch) { mu.Lock(); fetches = append(fetches, f); mu.Unlock() },
	})
	if err != nil {
		t.Fatal(err)
	}
	// No jwks_url: the verifier discovers it from the issuer's metadata.
	if err := v.Load(ctx); err != nil {
		t.Fatalf("Load (discovery and JWKS at the real provider): %v", err)
	}

	valid, err := p.ResourceToken(ctx, "agent", resource, "mcp:tools")
	if err != nil {
		t.Fatal(err)
	}
	c, err := v.Verify(ctx, valid)
	if err != nil {
		t.Fatalf("a valid token: %v", err)
	}
	if c.Agent() != "agent" || c.ClientID != "agent" || !slices.Contains(c.Scopes, "mcp:tools") || c.KeyID != "e2e" {
		t.Errorf("claims %+v; want agent, client_id agent, scope mcp:tools, kid e2e", c)
	}

	sign := func(edit func(map[string]any), header map[string]any, foreign bool) string {
		t.Helper()
		now := time.Now()
		claims := map[string]any{"iss": p.Issuer, "sub": "agent", "client_id": "agent", "aud": resource, "scope": "mcp:tools",
			"iat": now.Unix(), "exp": now.Add(5 * time.Minute).Unix(), "jti": randomSecret(t)}
		if edit != nil {
			edit(claims)
		}
		tok, err := p.Sign(ctx, claims, header, foreign)
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	if _, err := v.Verify(ctx, sign(nil, nil, false)); err != nil {
		t.Fatalf("a token /test/sign signed with the provider's key: %v", err)
	}
	otherAud, err := p.ResourceToken(ctx, "agent", other, "mcp:tools")
	if err != nil {
		t.Fatal(err)
	}
	otherIss, err := p2.ResourceToken(ctx, "agent", resource, "mcp:tools")
	if err != nil {
		t.Fatal(err)
	}
	readOnly, err := p.ResourceToken(ctx, "agent", resource, "read")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name   string
		token  string
		reason error
	}{
		{"expired", sign(func(c map[string]any) {
			c["iat"], c["exp"] = time.Now().Add(-time.Hour).Unix(), time.Now().Add(-time.Minute).Unix()
		}, nil, false), oauthrs.ErrExpired},
		{"not yet valid", sign(func(c map[string]any) { c["nbf"] = time.Now().Add(time.Hour).Unix() }, nil, false), oauthrs.ErrNotYetValid},
		{"wrong audience (a real token for another resource)", otherAud, oauthrs.ErrWrongAudience},
		{"wrong issuer (a real token of another server)", otherIss, oauthrs.ErrWrongIssuer},
		{"wrong issuer (signed with this server's key)", sign(func(c map[string]any) { c["iss"] = "https://evil.example.test" }, nil, false), oauthrs.ErrWrongIssuer},
		{"bad signature (tampered)", tamper(t, valid), oauthrs.ErrBadSignature},
		{"bad signature (another key, same kid)", sign(nil, nil, true), oauthrs.ErrBadSignature},
		{"unsigned (alg none)", forgeToken(t, map[string]any{"alg": "none", "typ": "at+jwt"}, valid, nil), oauthrs.ErrUnsigned},
		{"HS256 keyed with the provider's public key", forgeToken(t, map[string]any{"alg": "HS256", "kid": "e2e"}, valid, hmacWithJWK(t, ctx, p)), oauthrs.ErrAlgorithm},
		{"insufficient scope", readOnly, oauthrs.ErrInsufficientScope},
	} {
		if _, err := v.Verify(ctx, tc.token); !errors.Is(err, tc.reason) {
			t.Errorf("%s: %v; want %v", tc.name, err, tc.reason)
		}
	}

	// The real token, once its exp (plus the leeway) has passed, on a
	// verifier whose clock is ahead by that much.
	late, err := oauthrs.New(oauthrs.Config{Issuer: p.Issuer, Audience: resource}, &oauthrs.Options{
		Now: func() time.Time { return time.Now().Add(300*time.Second + oauthrs.DefaultLeeway + time.Second) },
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := late.Verify(ctx, valid); !errors.Is(err, oauthrs.ErrExpired) {
		t.Errorf("the real token after its exp and the leeway: %v; want expired", err)
	}

	// Rotation at the provider: a token of the new key is accepted at once,
	// and the old key's tokens while it is still published.
	kid2, err := p.RotateKeys(ctx, true)
	if err != nil {
		t.Fatal(err)
	}
	rotated, err := p.ResourceToken(ctx, "agent", resource, "mcp:tools")
	if err != nil {
		t.Fatal(err)
	}
	if c, err := v.Verify(ctx, rotated); err != nil || c.KeyID != kid2 {
		t.Fatalf("a token of the rotated key %s: %+v, %v", kid2, c, err)
	}
	if _, err := v.Verify(ctx, valid); err != nil {
		t.Errorf("a token of the old key, still published: %v", err)
	}
	// The old key withdrawn: its tokens are refused once the JWKS is fetched
	// anew (here, for the next key's first token).
	kid3, err := p.RotateKeys(ctx, false)
	if err != nil {
		t.Fatal(err)
	}
	third, err := p.ResourceToken(ctx, "agent", resource, "mcp:tools")
	if err != nil {
		t.Fatal(err)
	}
	if c, err := v.Verify(ctx, third); err != nil || c.KeyID != kid3 {
		t.Fatalf("a token of the key %s: %+v, %v", kid3, c, err)
	}
	if _, err := v.Verify(ctx, valid); !errors.Is(err, oauthrs.ErrUnknownKey) {
		t.Errorf("a token of the withdrawn key: %v; want unknown_key", err)
	}
	mu.Lock()
	defer mu.Unlock()
	var got []string
	for _, f := range fetches {
		got = append(got, fmt.Sprintf("%s %v", f.Why, f.KeyIDs))
	}
	want := []string{"load [e2e]", "unknown_kid [" + kid2 + " e2e]", "unknown_kid [" + kid3 + "]"}
	// A last unknown_kid fetch for the withdrawn key's token may follow.
	if len(got) < len(want) || !slices.Equal(got[:len(want)], want) {
		t.Errorf("JWKS fetches %q; want %q first", got, want)
	}
}

// oauthSetup is a gateway guarding /mcp with auth.oauth against a real
// provider, behind a front proxy whose URL is its resource URL, with an
// upstream that records every bearer token it receives.
type oauthSetup struct {
	p, p2    *oidcProvider // p2: another authorization server
	gw       *gatewayProc
	front    string // http://127.0.0.1:PORT (the public URL)
	resource string // front + /mcp
	other    string // another resource p issues JWTs for
	upURL    string
	frontLog *requestLog // every request through the front, for failure reports
}

// requestLog records the requests a handler serves: when each started,
// its answer's status and when that began, and when it ended. A test that
// fails prints it, so a request left waiting shows as one with no answer.
type requestLog struct {
	start time.Time
	mu    sync.Mutex
	reqs  []*loggedRequest
}

type loggedRequest struct {
	desc                 string
	note                 bool   // a log line, not a request
	aborted              string // the panic that ended the handler, if any
	status               int
	began, answered, end time.Duration // since the log's start; answered, end zero until then
}

func newRequestLog() *requestLog { return &requestLog{start: time.Now()} }

// wrap logs every request next serves.
func (l *requestLog) wrap(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		desc := r.Method + " " + r.URL.RequestURI()
		if r.Header.Get("Authorization") != "" {
			desc += " (bearer)"
		}
		if sid := r.Header.Get("Mcp-Session-Id"); sid != "" {
			desc += " session " + sid
		}
		lr := &loggedRequest{desc: desc, began: time.Since(l.start)}
		l.mu.Lock()
		l.reqs = append(l.reqs, lr)
		l.mu.Unlock()
		defer func() {
			// A reverse proxy aborts a response it cannot finish copying
			// by panicking with http.ErrAbortHandler (the server then
			// drops the connection); note it and let it go on.
			p := recover()
			l.mu.Lock()
			lr.end = time.Since(l.start)
			if p != nil {
				lr.aborted = fmt.Sprint(p)
			}
			l.mu.Unlock()
			if p != nil {
				panic(p)
			}
		}()
		next.ServeHTTP(&statusWriter{ResponseWriter: w, l: l, lr: lr}, r)
	})
}

// Write takes a line of the handler's error log (a reverse proxy's
// ErrorLog), kept in arrival order with the requests.
func (l *requestLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.reqs = append(l.reqs, &loggedRequest{desc: "log: " + strings.TrimSpace(string(p)), began: time.Since(l.start), note: true})
	return len(p), nil
}

// String lists the requests in arrival order.
func (l *requestLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var b strings.Builder
	for i, r := range l.reqs {
		if r.note {
			fmt.Fprintf(&b, "   +%dms %s\n", r.began.Milliseconds(), r.desc)
			continue
		}
		fmt.Fprintf(&b, "#%d +%dms %s: ", i+1, r.began.Milliseconds(), r.desc)
		switch {
		case r.aborted != "":
			fmt.Fprintf(&b, "%d at +%dms, ABORTED at +%dms (%s)\n", r.status, r.answered.Milliseconds(), r.end.Milliseconds(), r.aborted)
		case r.status == 0:
			b.WriteString("NO ANSWER YET\n")
		case r.end == 0:
			fmt.Fprintf(&b, "%d at +%dms, still streaming\n", r.status, r.answered.Milliseconds())
		default:
			fmt.Fprintf(&b, "%d at +%dms, ended +%dms\n", r.status, r.answered.Milliseconds(), r.end.Milliseconds())
		}
	}
	return b.String()
}

// statusWriter notes when the answer starts; Unwrap keeps the reverse
// proxy's flushing (SSE) working through it.
type statusWriter struct {
	http.ResponseWriter
	l  *requestLog
	lr *loggedRequest
}

func (w *statusWriter) WriteHeader(code int) {
	w.l.mu.Lock()
	if w.lr.status == 0 {
		w.lr.status, w.lr.answered = code, time.Since(w.l.start)
	}
	w.l.mu.Unlock()
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(p []byte) (int, error) {
	w.l.mu.Lock()
	unanswered := w.lr.status == 0
	w.l.mu.Unlock()
	if unanswered {
		w.WriteHeader(http.StatusOK)
	}
	return w.ResponseWriter.Write(p)
}

func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

func startOAuthSetup(t *testing.T, ctx context.Context) *oauthSetup {
	t.Helper()
	s := &oauthSetup{}
	opts := &oidcOptions{
		Clients:   []oidcClient{{ID: "gateway", Grants: []string{"client_credentials"}}, {ID: "upstream", Grants: []string{}}, agentClient},
		AccessTTL: 300 * time.Second, Scopes: "mcp:tools read",
	}
	s.p, s.p2 = startOIDC(t, opts), startOIDC(t, opts)
	s.upURL = startUpstreamHTTP(t, s.p.UpstreamArgs("upstream")...)

	var target atomic.Pointer[url.URL]
	s.frontLog = newRequestLog()
	front := httptest.NewServer(s.frontLog.wrap(&httputil.ReverseProxy{Rewrite: func(r *httputil.ProxyRequest) {
		r.SetURL(target.Load())
		r.Out.Host = r.In.Host // the gateway sees the public host, as behind an ingress
	}, ErrorLog: log.New(s.frontLog, "", 0),
		// A transport of its own: connections to the gateway are never
		// touched by another test's use of the process-wide default (a
		// suspect in a once-in-66-runs lost answer under load).
		Transport: http.DefaultTransport.(*http.Transport).Clone()}))
	t.Cleanup(front.Close)
	s.front, s.resource, s.other = front.URL, front.URL+"/mcp", "https://other.example.test/mcp"
	for _, p := range []*oidcProvider{s.p, s.p2} {
		for _, r := range []string{s.resource, s.other} {
			if err := p.AddJWTResource(ctx, r); err != nil {
				t.Fatal(err)
			}
		}
	}
	s.gw = startGateway(t, fmt.Sprintf(`
credentials:
  api: {source: {oauth2: %s}}
upstreams:
  up: {url: %s, credential: api}
auth:
  oauth:
    issuer: %s
    resource: %s
    required_scopes: [mcp:tools]
`, s.p.OAuth2SourceYAML("gateway", ""), s.upURL, s.p.Issuer, s.resource))
	u, err := url.Parse("http://" + s.gw.Addr)
	if err != nil {
		t.Fatal(err)
	}
	target.Store(u)
	return s
}

// post sends an initialize to the gateway through the front with authz as
// the Authorization header ("" for none).
func (s *oauthSetup) post(t *testing.T, ctx context.Context, authz string) (status int, challenge, body string) {
	t.Helper()
	const initialize = `{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"x","version":"1"}}}`
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.resource, strings.NewReader(initialize))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, text/event-stream")
	if authz != "" {
		req.Header.Set("Authorization", authz)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<16))
	return resp.StatusCode, resp.Header.Get("WWW-Authenticate"), string(b)
}

// checkBearerChallenge checks a WWW-Authenticate value: one Bearer
// challenge naming the metadata URL, with the error parameter errCode (""
// for none) and, when scope is not empty, that scope parameter.
func checkBearerChallenge(header, errCode, metaURL, scope string) error {
	cs, err := oauthex.ParseWWWAuthenticate([]string{header})
	if err != nil {
		return err
	}
	if len(cs) != 1 || cs[0].Scheme != "bearer" {
		return fmt.Errorf("want one Bearer challenge, got %+v", cs)
	}
	p := cs[0].Params
	switch {
	case p["resource_metadata"] != metaURL:
		return fmt.Errorf("resource_metadata %q; want %q", p["resource_metadata"], metaURL)
	case p["error"] != errCode:
		return fmt.Errorf("error %q; want %q", p["error"], errCode)
	case scope != "" && p["scope"] != scope:
		return fmt.Errorf("scope %q; want %q", p["scope"], scope)
	}
	return nil
}

// TestOAuthGateway: through the gateway binary, behind its public URL: the
// protected-resource metadata, 401 with resource_metadata without a token,
// the tools with a real token (which never reaches the upstream), 401
// invalid_token for expired, wrong-audience, wrong-issuer, unsigned and
// badly signed tokens, 403 for a missing scope, and a key rotated at the
// provider picked up without a restart (issue 9 acceptance).
func TestOAuthGateway(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	s := startOAuthSetup(t, ctx)
	p := s.p
	metaURL := s.front + "/.well-known/oauth-protected-resource/mcp"

	// The metadata, where the challenge says it is.
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, metaURL, nil)
	var meta struct {
		Resource             string   `json:"resource"`
		AuthorizationServers []string `json:"authorization_servers"`
		ScopesSupported      []string `json:"scopes_supported"`
	}
	if err := doJSON(req, &meta); err != nil {
		t.Fatalf("GET %s: %v", metaURL, err)
	}
	if meta.Resource != s.resource || !slices.Equal(meta.AuthorizationServers, []string{p.Issuer}) || !slices.Equal(meta.ScopesSupported, []string{"mcp:tools"}) {
		t.Errorf("metadata %+v; want resource %s, authorization_servers [%s], scopes_supported [mcp:tools]", meta, s.resource, p.Issuer)
	}
	if status, challenge, _ := s.post(t, ctx, ""); status != 401 || checkBearerChallenge(challenge, "", metaURL, "") != nil {
		t.Errorf("no token: %d %s (%v); want 401 with resource_metadata %s", status, challenge, checkBearerChallenge(challenge, "", metaURL, ""), metaURL)
	}

	// A real token reaches the tools.
	valid, err := p.ResourceToken(ctx, "agent", s.resource, "mcp:tools")
	if err != nil {
		t.Fatal(err)
	}
	cs := connectTransport(t, ctx, &mcp.StreamableClientTransport{Endpoint: s.resource, HTTPClient: bearerClient(func() string { return valid })}, nil)
	res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "up__echo", Arguments: map[string]any{"text": "hi"}})
	if err != nil || res.IsError {
		t.Fatalf("call with a valid token: %v, %v", res, err)
	}

	// Bad tokens: 401 invalid_token, each logged with its reason.
	now := time.Now()
	signed := func(edit func(map[string]any), foreign bool) string {
		t.Helper()
		claims := map[string]any{"iss": p.Issuer, "sub": "agent", "client_id": "agent", "aud": s.resource, "scope": "mcp:tools",
			"iat": now.Unix(), "exp": now.Add(5 * time.Minute).Unix(), "jti": randomSecret(t)}
		if edit != nil {
			edit(claims)
		}
		tok, err := p.Sign(ctx, claims, nil, foreign)
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	otherAud, err := p.ResourceToken(ctx, "agent", s.other, "mcp:tools")
	if err != nil {
		t.Fatal(err)
	}
	otherIss, err := s.p2.ResourceToken(ctx, "agent", s.resource, "mcp:tools")
	if err != nil {
		t.Fatal(err)
	}
	readOnly, err := p.ResourceToken(ctx, "agent", s.resource, "read")
	if err != nil {
		t.Fatal(err)
	}
	// (Each one's typed reason is TestOAuthVerifierRealProvider's.)
	bad := []struct{ name, token string }{
		{"expired", signed(func(c map[string]any) { c["iat"], c["exp"] = now.Add(-time.Hour).Unix(), now.Add(-time.Minute).Unix() }, false)},
		{"wrong audience", otherAud},
		{"wrong issuer", otherIss},
		{"unsigned", forgeToken(t, map[string]any{"alg": "none", "typ": "at+jwt"}, valid, nil)},
		{"bad signature", tamper(t, valid)},
		{"signed by another key", signed(nil, true)},
		{"HMAC with the public key", forgeToken(t, map[string]any{"alg": "HS256", "kid": "e2e"}, valid, hmacWithJWK(t, ctx, p))},
	}
	for _, b := range bad {
		status, challenge, body := s.post(t, ctx, "Bearer "+b.token)
		if err := checkBearerChallenge(challenge, "invalid_token", metaURL, ""); status != 401 || err != nil {
			t.Errorf("%s: %d %s %s (%v); want 401 invalid_token with resource_metadata", b.name, status, challenge, body, err)
		}
	}
	if status, challenge, _ := s.post(t, ctx, "Bearer "+readOnly); status != 403 || checkBearerChallenge(challenge, "insufficient_scope", metaURL, "mcp:tools") != nil {
		t.Errorf("missing scope: %d %s; want 403 insufficient_scope naming mcp:tools", status, challenge)
	}

	// The provider rotates its keys: a token of the new key works at once.
	kid, err := p.RotateKeys(ctx, true)
	if err != nil {
		t.Fatal(err)
	}
	rotated, err := p.ResourceToken(ctx, "agent", s.resource, "mcp:tools")
	if err != nil {
		t.Fatal(err)
	}
	cs2 := connectTransport(t, ctx, &mcp.StreamableClientTransport{Endpoint: s.resource, HTTPClient: bearerClient(func() string { return rotated })}, nil)
	if res, err := cs2.CallTool(ctx, &mcp.CallToolParams{Name: "up__echo", Arguments: map[string]any{"text": "rotated"}}); err != nil || res.IsError {
		t.Fatalf("call with a token of the rotated key %s: %v, %v", kid, res, err)
	}
	if !s.gw.logged(`"why":"unknown_kid"`, `"kids":["`+kid+`","e2e"]`) {
		t.Errorf("the gateway did not log the rotation it picked up:\n%s", tail(s.gw.Logs(), 20))
	}

	// No agent token ever reached the upstream, nor a log; the upstream saw
	// the gateway's own credential.
	seen, err := seenTokens(ctx, s.upURL)
	if err != nil {
		t.Fatal(err)
	}
	agentTokens := []string{valid, rotated, otherAud, otherIss, readOnly}
	for _, b := range bad {
		agentTokens = append(agentTokens, b.token)
	}
	accepted := 0
	for _, st := range seen.Tokens {
		accepted += st.Accepted
		for _, tok := range agentTokens {
			if st.SHA256 == tokenHash(tok) {
				t.Errorf("the upstream received an agent's token (%s)", st.SHA256)
			}
		}
	}
	if accepted == 0 {
		t.Errorf("the upstream accepted no token: %+v", seen)
	}
	for _, tok := range agentTokens {
		if sig := tok[strings.LastIndex(tok, ".")+1:]; sig != "" && strings.Contains(s.gw.Logs(), sig) {
			t.Errorf("the gateway's log shows an agent's token")
		}
	}
}

// TestOAuthTypeScriptClient: the official TypeScript SDK client, given only
// the gateway's URL and its OAuth client's credentials, discovers the
// protected-resource metadata and the authorization server, gets a token
// with the client-credentials grant for the gateway's resource, and reaches
// the tools (issue 9 acceptance).
func TestOAuthTypeScriptClient(t *testing.T) {
	t.Parallel()
	requireNode(t)
	// The budget: on 2 CPUs shared with other tests under -race, starting
	// the two providers, the upstream and the gateway took up to 70s, the
	// client's own run up to 13s. The client's requests get what is left of
	// the test's time less reportTime (not the SDK's fixed 60s each, which
	// could outlast the context), so the client, not the context, ends a run
	// that waits too long, and its trace and the reports below say where.
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	s := startOAuthSetup(t, ctx)
	const reportTime = 30 * time.Second // the goroutine dump, the provider's events
	deadline, _ := ctx.Deadline()
	budget := time.Until(deadline) - reportTime
	if budget < 10*time.Second {
		t.Fatalf("starting the providers, the upstream and the gateway left the client %v", budget)
	}

	cmd := exec.CommandContext(ctx, nodeBin(), "oidc/mcp-client-credentials.mjs", s.resource, "up__echo", "mcp:tools")
	cmd.Dir = repoRoot() + "/e2e"
	// The issuer pins where the client's secret may go; the client still
	// finds the authorization server from the gateway's metadata.
	cmd.Env = append(cmd.Environ(), "MCP_CLIENT_ID=agent", "MCP_CLIENT_SECRET="+s.p.Client(t, "agent").Secret, "MCP_EXPECTED_ISSUER="+s.p.Issuer,
		"MCP_REQUEST_TIMEOUT_MS="+strconv.FormatInt(budget.Milliseconds(), 10))
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		// Everything that says where the client waited: its own trace, what
		// reached the front and how it was answered, and where every
		// goroutine of the gateway was at that moment.
		t.Fatalf("TypeScript client: %v\nstdout: %s\nstderr (the client's trace):\n%s\nrequests at the front:\n%s\ngateway:\n%s\ngateway goroutines:\n%s",
			err, stdout.String(), stderr.String(), s.frontLog, tail(s.gw.Logs(), 60), s.gw.stacks(10*time.Second))
	}
	// Shown with -v: where a slow run spent its time.
	t.Logf("the client's trace:\n%s\nrequests at the front:\n%s", stderr.String(), s.frontLog)
	var out struct {
		Tools  []string `json:"tools"`
		Result string   `json:"result"`
	}
	if err := json.Unmarshal(stdout.Bytes(), &out); err != nil {
		t.Fatalf("TypeScript client output %q: %v", stdout.String(), err)
	}
	if !slices.Contains(out.Tools, "up__echo") || !strings.Contains(out.Result, "ts-client") {
		t.Errorf("TypeScript client saw tools %v, result %q; want up__echo echoing ts-client", out.Tools, out.Result)
	}
	// It asked the provider for a token for the gateway's resource: the one
	// the metadata named.
	events, err := s.p.Events(ctx)
	if err != nil {
		t.Fatal(err)
	}
	issued := issuedTo(events, "agent")
	if len(issued) == 0 || issued[len(issued)-1].Resource != s.resource {
		t.Errorf("tokens issued to the agent: %+v; want one for resource %s", issued, s.resource)
	}
}
