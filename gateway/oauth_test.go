package gateway

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"github.com/google/go-cmp/cmp"
	"github.com/modelcontextprotocol/go-sdk/auth"
	"github.com/modelcontextprotocol/go-sdk/mcp"
	"github.com/modelcontextprotocol/go-sdk/oauthex"
	"github.com/rs/zerolog"
)

var (
	oauthKeyOnce sync.Once
	oauthKey     *rsa.PrivateKey
)

// testIssuer is an authorization server's metadata and JWKS, with a key
// made in the test; Token signs access tokens with it.
type testIssuer struct {
	URL string
	key *rsa.PrivateKey
}

func newTestIssuer(t testing.TB) *testIssuer {
	t.Helper()
	oauthKeyOnce.Do(func() {
		k, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			panic(err)
		}
		oauthKey = k
	})
	is := &testIssuer{key: oauthKey}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /.well-known/oauth-authorization-server", func(w http.ResponseWriter, r *http.Request) {
		_ = json.NewEncoder(w).Encode(map[string]string{"issuer": is.URL, "jwks_uri": is.URL + "/jwks"})
	})
	mux.HandleFunc("GET /jwks", func(w http.ResponseWriter, r *http.Request) {
		_ = json.NewEncoder(w).Encode(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: is.key.Public(), KeyID: "k1", Algorithm: "RS256", Use: "sig"}}})
	})
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	is.URL = srv.URL
	return is
}

// Token signs a token for audience aud with scope, expiring in ttl
// (negative: expired).
func (is *testIssuer) Token(t testing.TB, aud, scope string, ttl time.Duration) string {
	t.Helper()
	s, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.RS256, Key: jose.JSONWebKey{Key: is.key, KeyID: "k1"}}, (&jose.SignerOptions{}).WithType("at+jwt"))
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	tok, err := jwt.Signed(s).Claims(map[string]any{
		"iss": is.URL, "aud": aud, "client_id": "ci-agent", "scope": scope,
		"iat": now.Add(-time.Minute).Unix(), "exp": now.Add(ttl).Unix(),
	}).Serialize()
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func TestOAuthConfig(t *testing.T) {
	t.Parallel()
	const ups = "upstreams:\n  a: {command: x}\n"
	cfg, err := ParseConfig([]byte(ups+`auth:
  oauth:
    issuer: https://as.example.com
    resource: https://gw.example.com/mcp
    required_scopes: [mcp:tools]
    leeway: 10s
`), nil)
	if err != nil {
		t.Fatal(err)
	}
	want := &OAuthConfig{Issuer: "https://as.example.com", Resource: "https://gw.example.com/mcp", RequiredScopes: []string{"mcp:tools"}, Leeway: 10 * time.Second}
	if diff := cmp.Diff(want, cfg.Auth.OAuth, cmp.AllowUnexported(OAuthConfig{})); diff != "" {
		t.Errorf("auth.oauth mismatch (-want +got):\n%s", diff)
	}
	if vc := cfg.Auth.OAuth.verifierConfig(); vc.Audience != "https://gw.example.com/mcp" {
		t.Errorf("audience = %q; want the resource", vc.Audience)
	}

	// From the environment too.
	cfg, err = ParseConfig([]byte(ups), []string{
		"CREDGATE_AUTH__OAUTH__ISSUER=https://as.example.com", "CREDGATE_AUTH__OAUTH__AUDIENCE=https://gw.example.com/mcp",
	})
	if err != nil {
		t.Fatal(err)
	}
	if o := cfg.Auth.OAuth; o == nil || o.resource() != "https://gw.example.com/mcp" {
		t.Errorf("auth.oauth from the environment = %+v; want audience as the resource", o)
	}

	for _, tc := range []struct {
		name, yaml string
		want       []string
	}{
		{"missing issuer and resource", "auth: {oauth: {required_scopes: [a]}}", []string{
			"auth.oauth.issuer: missing: the authorization server's issuer URL (the iss of its tokens)",
			"auth.oauth.resource: missing: the gateway's public URL of /mcp (e.g. https://gw.example.com/mcp), which tokens must carry as aud; set resource or audience",
		}},
		{"audience differs", "auth: {oauth: {issuer: 'https://as.example.com', resource: 'https://gw.example.com/mcp', audience: 'https://gw.example.com/'}}", []string{
			`auth.oauth.audience: "https://gw.example.com/" differs from auth.oauth.resource "https://gw.example.com/mcp": tokens must be issued for the gateway's resource URL; set one of them`,
		}},
		{"plain http", "auth: {oauth: {issuer: 'http://as.example.com', audience: 'gw/mcp', jwks_url: 'https://u:pw@as.example.com/jwks'}}", []string{
			`auth.oauth.issuer: "http://as.example.com": want https (plain http only on a loopback host)`,
			`auth.oauth.audience: "gw/mcp": not an absolute http(s) URL`,
			`auth.oauth.jwks_url: "https://u:[REDACTED]@as.example.com/jwks": has user info`,
		}},
		{"scopes and leeway", "auth: {oauth: {issuer: 'https://as', resource: 'https://gw/mcp', required_scopes: ['a b', '\"'], leeway: 10m}}", []string{
			`auth.oauth.required_scopes[0]: scope "a b": want printable ASCII without spaces, quotes or backslashes`,
			`auth.oauth.required_scopes[1]: scope "\"": want printable ASCII without spaces, quotes or backslashes`,
			"auth.oauth.leeway: 10m0s is out of range; want up to 5m0s (0 or unset: 30s)",
		}},
		{"unknown key", "auth: {oauth: {issuer: 'https://as', resource: 'https://gw/mcp', jwks_uri: 'https://as/jwks'}}", []string{
			"auth.oauth.jwks_uri: unknown key (did you mean jwks_url?)",
		}},
		{"leeway without a unit", "auth: {oauth: {issuer: 'https://as', resource: 'https://gw/mcp', leeway: 30}}", []string{
			"auth.oauth.leeway: want a duration with a unit",
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			msg := parseErr(t, ups+tc.yaml+"\n")
			for _, w := range tc.want {
				if !strings.Contains(msg, w) {
					t.Errorf("error does not contain\n  %s\ngot:\n%s", w, msg)
				}
			}
			if strings.Contains(msg, "pw@") {
				t.Errorf("error shows a URL's password:\n%s", msg)
			}
		})
	}
}

// oauthGateway starts a gateway guarding /mcp with auth.oauth against
// issuer is, and serves it over HTTP.
func oauthGateway(t *testing.T, ctx context.Context, is *testIssuer, extra string) (g *Server, url string, logs *syncBuffer) {
	t.Helper()
	up := newTestUpstream(t, "a", "echo")
	logs = &syncBuffer{}
	g = newTestGatewayLogged(t, ctx, fmt.Sprintf(`upstreams:
  a: {url: %s}
auth:
  oauth:
    issuer: %s
    resource: https://gw.example.com/mcp
%s`, up.url(), is.URL, extra), zerolog.New(logs).Level(zerolog.InfoLevel))
	hs := httptest.NewServer(g.Handler())
	t.Cleanup(hs.Close)
	return g, hs.URL, logs
}

// TestOAuthResourceServer: /mcp asks for a token with the RFC 9728
// challenge, refuses bad ones with the right status and challenge, and lets
// a valid one through to the tools (issue 9).
func TestOAuthResourceServer(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	is := newTestIssuer(t)
	const resource = "https://gw.example.com/mcp"
	_, base, logs := oauthGateway(t, ctx, is, "    required_scopes: [mcp:tools]\n")
	const metaURL = "https://gw.example.com/.well-known/oauth-protected-resource/mcp"

	// The metadata, at each of its paths.
	for _, p := range []string{"/.well-known/oauth-protected-resource/mcp", "/.well-known/oauth-protected-resource"} {
		resp, err := http.Get(base + p)
		if err != nil {
			t.Fatal(err)
		}
		var doc oauthex.ProtectedResourceMetadata
		err = json.NewDecoder(resp.Body).Decode(&doc)
		resp.Body.Close()
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("GET %s: %d %v", p, resp.StatusCode, err)
		}
		want := oauthex.ProtectedResourceMetadata{Resource: resource, AuthorizationServers: []string{is.URL},
			ScopesSupported: []string{"mcp:tools"}, BearerMethodsSupported: []string{"header"}, ResourceName: "credgate MCP gateway"}
		if diff := cmp.Diff(want, doc); diff != "" {
			t.Errorf("GET %s mismatch (-want +got):\n%s", p, diff)
		}
	}

	initialize := `{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"x","version":"1"}}}`
	post := func(authz string) (int, string, string) {
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, base+"/mcp", strings.NewReader(initialize))
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
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, resp.Header.Get("WWW-Authenticate"), string(body)
	}
	expired := is.Token(t, resource, "mcp:tools", -time.Hour)
	for _, tc := range []struct {
		name, authz string
		status      int
		errCode     string // the challenge's error parameter; "" for none
		scope       string // the challenge's scope parameter, checked if set
	}{
		{"no token", "", 401, "", ""},
		{"expired", "Bearer " + expired, 401, "invalid_token", ""},
		{"wrong audience", "Bearer " + is.Token(t, "https://other.example.com/mcp", "mcp:tools", time.Hour), 401, "invalid_token", ""},
		{"garbage", "Bearer abc", 401, "invalid_token", ""},
		{"insufficient scope", "Bearer " + is.Token(t, resource, "read", time.Hour), 403, "insufficient_scope", "mcp:tools"},
	} {
		status, challenge, body := post(tc.authz)
		if err := checkChallenge(challenge, tc.errCode, metaURL, tc.scope); status != tc.status || err != nil {
			t.Errorf("%s: %d %s: %v; want %d", tc.name, status, challenge, err, tc.status)
		}
		if strings.Contains(body, "eyJ") {
			t.Errorf("%s: the body shows a token: %s", tc.name, body)
		}
	}
	if strings.Contains(logs.String(), expired[strings.LastIndex(expired, ".")+1:]) {
		t.Errorf("the logs show a token:\n%s", logs)
	}
	// Each refusal's log line says why, as the README promises (all said
	// "invalid bearer token").
	for _, code := range []string{"expired", "wrong_audience", "malformed"} {
		if !strings.Contains(logs.String(), `"code":"`+code+`"`) {
			t.Errorf("no refusal logged with code %s:\n%s", code, logs)
		}
	}

	// A valid token reaches the tools, over the SDK's client.
	good := is.Token(t, resource, "mcp:tools read", time.Hour)
	hc := &http.Client{Transport: oauthBearerRT{token: good}}
	cs, err := mcp.NewClient(&mcp.Implementation{Name: "agent", Version: "1"}, nil).Connect(ctx, &mcp.StreamableClientTransport{Endpoint: base + "/mcp", HTTPClient: hc}, nil)
	if err != nil {
		t.Fatalf("connect with a valid token: %v", err)
	}
	defer cs.Close()
	res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "a__echo", Arguments: map[string]any{"text": "hi"}})
	if err != nil || res.IsError || text(res) != "a:echo:hi" {
		t.Fatalf("call with a valid token = %v, %v", res, err)
	}
}

// checkChallenge checks a WWW-Authenticate value: one Bearer challenge
// naming the metadata URL, with the error parameter errCode ("" for none)
// and, when scope is not empty, that scope parameter. Other parameters
// (realm, error_description) may come and go.
func checkChallenge(header, errCode, metaURL, scope string) error {
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

// oauthBearerRT sends an Authorization: Bearer header on every request.
type oauthBearerRT struct{ token string }

func (b oauthBearerRT) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("Authorization", "Bearer "+b.token)
	return http.DefaultTransport.RoundTrip(r)
}

// TestOAuthTokenVerifier: the SDK adapter maps claims to TokenInfo (the
// client id names a client-credentials token's agent) and refusals to
// auth.ErrInvalidToken, keeping the reason.
func TestOAuthTokenVerifier(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	is := newTestIssuer(t)
	const resource = "https://gw.example.com/mcp"
	o, err := NewOAuthResource(&OAuthConfig{Issuer: is.URL, Resource: resource, RequiredScopes: []string{"mcp:tools"}}, zerolog.Nop(), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	verify := o.TokenVerifier()
	ti, err := verify(ctx, is.Token(t, resource, "mcp:tools", time.Hour), nil)
	if err != nil {
		t.Fatal(err)
	}
	if ti.UserID != "ci-agent" || !cmp.Equal(ti.Scopes, []string{"mcp:tools"}) || ti.Expiration.IsZero() || ti.Extra["client_id"] != "ci-agent" {
		t.Errorf("TokenInfo = %+v; want user ci-agent, scopes [mcp:tools], an expiration", ti)
	}
	_, err = verify(ctx, is.Token(t, resource, "read", time.Hour), nil)
	if !errors.Is(err, auth.ErrInvalidToken) || !strings.Contains(err.Error(), "insufficient scope") {
		t.Errorf("insufficient scope: %v; want auth.ErrInvalidToken with the reason", err)
	}

	// Through the SDK's own middleware: 401 for any refusal (the SDK knows
	// no 403 from a verifier), 200 for a valid token.
	h := auth.RequireBearerToken(verify, &auth.RequireBearerTokenOptions{ResourceMetadataURL: o.ResourceMetadataURL()})(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, auth.TokenInfoFromContext(r.Context()).UserID)
	}))
	for _, tc := range []struct {
		token  string
		status int
	}{{is.Token(t, resource, "mcp:tools", time.Hour), 200}, {is.Token(t, resource, "mcp:tools", -time.Hour), 401}, {"x.y.z", 401}} {
		rec := httptest.NewRecorder()
		req := httptest.NewRequest(http.MethodGet, "/mcp", nil)
		req.Header.Set("Authorization", "Bearer "+tc.token)
		h.ServeHTTP(rec, req)
		if rec.Code != tc.status {
			t.Errorf("RequireBearerToken: %d %s; want %d", rec.Code, rec.Body, tc.status)
		}
	}
}

// TestOAuthOffByDefault: without auth.oauth nothing changes: /mcp needs no
// token and there is no metadata.
func TestOAuthOffByDefault(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	g, cs := startGateway(t, ctx, fmt.Sprintf("upstreams:\n  a: {url: %s}\n", newTestUpstream(t, "a", "echo").url()))
	if names := toolNames(t, ctx, cs); !cmp.Equal(names, []string{"a__echo"}) {
		t.Errorf("tools = %v", names)
	}
	rec := httptest.NewRecorder()
	req := httptest.NewRequest(http.MethodGet, "/.well-known/oauth-protected-resource", nil)
	req.Host = "localhost" // httptest's example.com is a foreign host (issue 9's Host check)
	g.Handler().ServeHTTP(rec, req)
	if rec.Code != http.StatusNotFound {
		t.Errorf("metadata without auth.oauth: %d; want 404", rec.Code)
	}
}

// BenchmarkOAuthRequire is what auth.oauth adds to each /mcp request with
// the agent's token seen before (the usual case: one token for many calls):
// the Authorization header, the verified-token cache, exp and scopes, and
// the SDK's TokenInfo in the context. A token's first request also checks
// its signature: see oauthrs's BenchmarkVerify (RS256, ES256).
func BenchmarkOAuthRequire(b *testing.B) {
	is := newTestIssuer(b)
	const resource = "https://gw.example.com/mcp"
	o, err := NewOAuthResource(&OAuthConfig{Issuer: is.URL, Resource: resource, RequiredScopes: []string{"mcp:tools"}}, zerolog.Nop(), nil, nil)
	if err != nil {
		b.Fatal(err)
	}
	if err := o.Load(context.Background()); err != nil {
		b.Fatal(err)
	}
	h := o.Require(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	run := func(b *testing.B, token func() string) {
		b.ReportAllocs()
		for b.Loop() {
			req := httptest.NewRequest(http.MethodPost, "/mcp", nil)
			req.Header.Set("Authorization", "Bearer "+token())
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			if rec.Code != 200 {
				b.Fatalf("%d %s", rec.Code, rec.Body)
			}
		}
	}
	b.Run("token_seen", func(b *testing.B) {
		tok := is.Token(b, resource, "mcp:tools", time.Hour)
		run(b, func() string { return tok })
	})
	// The baseline: the same request through a handler with no auth.
	b.Run("no_auth", func(b *testing.B) {
		b.ReportAllocs()
		nop := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {})
		for b.Loop() {
			req := httptest.NewRequest(http.MethodPost, "/mcp", nil)
			req.Header.Set("Authorization", "Bearer x")
			nop.ServeHTTP(httptest.NewRecorder(), req)
		}
	})
}

// TestOAuthReloadNeedsRestart: a reload that changes auth.oauth or tls keeps
// the resource server and certificate the gateway started with, and says a
// restart is needed (the certificate files themselves reload on change).
func TestOAuthReloadNeedsRestart(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	is := newTestIssuer(t)
	g, base, _ := oauthGateway(t, ctx, is, "")
	up := g.config().Upstreams["a"].URL
	next := fmt.Sprintf("upstreams:\n  a: {url: %s}\nauth:\n  oauth: {issuer: %s, resource: 'https://other.example.com/mcp'}\n", up, is.URL)
	if err := reloadTo(t, g, next); err != nil {
		t.Fatalf("Reload: %v", err)
	}
	if diff := cmp.Diff([]string{"auth"}, g.Health().Config.RestartRequired); diff != "" {
		t.Errorf("restart_required mismatch (-want +got):\n%s", diff)
	}
	if r := g.config().Auth.OAuth.resource(); r != "https://gw.example.com/mcp" {
		t.Errorf("resource in force after the reload = %q; want the one started with", r)
	}
	// The metadata still names the resource the tokens are checked for.
	resp, err := http.Get(base + "/.well-known/oauth-protected-resource/mcp")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var doc oauthex.ProtectedResourceMetadata
	if err := json.NewDecoder(resp.Body).Decode(&doc); err != nil || doc.Resource != "https://gw.example.com/mcp" {
		t.Errorf("metadata after the reload: %+v, %v", doc, err)
	}
	if err := reloadTo(t, g, next+"tls: {cert_file: /nonexistent.crt, key_file: /nonexistent.key}\n"); err != nil {
		t.Fatalf("Reload with tls: %v", err)
	}
	if diff := cmp.Diff([]string{"auth", "tls"}, g.Health().Config.RestartRequired); diff != "" {
		t.Errorf("restart_required mismatch (-want +got):\n%s", diff)
	}
}

// Regression test for a trial's finding: a token whose subject was the
// name of an API key counted as that key's agent for the sessions it
// opened (it could use and end them). Such a token is refused.
func TestOAuthSubjectIsNotAKeyName(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	is := newTestIssuer(t)
	const resource = "https://gw.example.com/mcp"
	o, err := NewOAuthResource(&OAuthConfig{Issuer: is.URL, Resource: resource}, zerolog.Nop(), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	tok := is.Token(t, resource, "mcp:tools", time.Hour) // subject ci-agent
	if _, err := (oauthVerifier{o: o, keys: map[string]bool{"other": true}}).Verify(ctx, tok, nil); err != nil {
		t.Fatalf("a subject no key is named: %v", err)
	}
	_, err = (oauthVerifier{o: o, keys: map[string]bool{"ci-agent": true}}).Verify(ctx, tok, nil)
	if !errors.Is(err, auth.ErrInvalidToken) || !strings.Contains(err.Error(), "name of an API key") || refusalCode(err) != "subject_is_key_name" {
		t.Errorf("a subject named like a key: %v; want refused as invalid, saying why", err)
	}
}
