package e2e

// Tests of the issue 7 test infrastructure itself: the OAuth server
// (e2e/oidc/provider.mjs) and testupstream's introspection mode, through
// plain clients, without the gateway.

import (
	"context"
	"crypto"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"math/big"
	"net/http"
	"net/url"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/credgate/credgate/authmap"
	"github.com/credgate/credgate/authmap/oauth2src"
	"github.com/google/go-cmp/cmp"
	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// TestOIDCClientCredentials: the provider issues an opaque client-credentials
// token living 5s, introspection sees it, the issuance is in the event log
// under the token's hash, and a bad secret is refused with invalid_client.
func TestOIDCClientCredentials(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	p := startOIDC(t, nil)

	tok, err := p.ClientCredentials(ctx, "gateway")
	if err != nil {
		t.Fatal(err)
	}
	if tok.ExpiresIn != 5 || tok.TokenType != "Bearer" || tok.RefreshToken != "" || strings.Count(tok.AccessToken, ".") != 0 {
		t.Errorf("token = {type %q, expires_in %d, refresh %t, %d dots}; want an opaque Bearer token, expires_in 5, no refresh token",
			tok.TokenType, tok.ExpiresIn, tok.RefreshToken != "", strings.Count(tok.AccessToken, "."))
	}
	if active, err := p.Introspect(ctx, "upstream", tok.AccessToken); err != nil || !active {
		t.Errorf("introspect = %t, %v; want active", active, err)
	}

	bad := &oidcProvider{Issuer: p.Issuer, TokenURL: p.TokenURL, clients: map[string]oidcClient{"gateway": {ID: "gateway", Secret: "wrong"}}}
	_, err = bad.ClientCredentials(ctx, "gateway")
	var oerr *oidcError
	if !errors.As(err, &oerr) || oerr.Status != http.StatusUnauthorized || oerr.Code != "invalid_client" {
		t.Errorf("token with a wrong secret: %v; want 401 invalid_client", err)
	}

	events, err := p.Events(ctx)
	if err != nil {
		t.Fatal(err)
	}
	type ev struct{ Type, ClientID, GrantType, TokenSHA256, Error, ErrorDetail string }
	var got []ev
	for _, e := range events {
		got = append(got, ev{e.Type, e.ClientID, e.GrantType, e.TokenSHA256, e.Error, e.ErrorDetail})
	}
	want := []ev{
		{"issued", "gateway", "client_credentials", tokenHash(tok.AccessToken), "", ""},
		{"grant_error", "gateway", "client_credentials", "", "invalid_client", "invalid secret provided"},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("events mismatch (-want +got):\n%s", diff)
	}
	if e := events[0]; e.ExpiresIn != 5 || !e.ExpiresAt.After(e.Time) {
		t.Errorf("issued event: expires_in %d, time %v, expires_at %v; want 5s after issuance", e.ExpiresIn, e.Time, e.ExpiresAt)
	}
	if strings.Contains(p.Output(), tok.AccessToken) {
		t.Errorf("the provider logged a full access token")
	}
}

// TestOIDCUpstreamIntrospection: an introspecting testupstream accepts a live
// token, sees the next request's new token at once, rejects a token revoked at
// the provider with 401 invalid_token (RFC 6750), and counts every request per
// token; a go-sdk client with a bearer header stands in for the gateway.
func TestOIDCUpstreamIntrospection(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	p := startOIDC(t, nil)
	upURL := startUpstreamHTTP(t, p.UpstreamArgs("upstream")...)

	tok1, err := p.ClientCredentials(ctx, "gateway")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	current := tok1.AccessToken
	token := func() string { mu.Lock(); defer mu.Unlock(); return current }
	cs := connectTransport(t, ctx, &mcp.StreamableClientTransport{
		Endpoint: upURL, HTTPClient: bearerClient(token), MaxRetries: -1, DisableStandaloneSSE: true,
	}, nil)

	whoami := func() (string, error) {
		res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "whoami"})
		if err != nil {
			return "", err
		}
		var out struct {
			TokenSHA256 string `json:"token_sha256"`
		}
		if err := json.Unmarshal([]byte(toolText(res)), &out); err != nil {
			return "", err
		}
		return out.TokenSHA256, nil
	}
	if h, err := whoami(); err != nil || h != tokenHash(tok1.AccessToken) {
		t.Fatalf("whoami with token 1 = %q, %v; want %q", h, err, tokenHash(tok1.AccessToken))
	}

	tok2, err := p.ClientCredentials(ctx, "gateway")
	if err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	current = tok2.AccessToken
	mu.Unlock()
	if h, err := whoami(); err != nil || h != tokenHash(tok2.AccessToken) {
		t.Fatalf("whoami with token 2 = %q, %v; want %q", h, err, tokenHash(tok2.AccessToken))
	}

	if err := p.Revoke(ctx, "gateway", tok2.AccessToken); err != nil {
		t.Fatal(err)
	}
	if _, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "echo", Arguments: map[string]any{"text": "x"}}); err == nil {
		t.Fatal("a call with a revoked token succeeded")
	}

	// The wire answer, as an HTTP upstream's client sees it.
	for _, tc := range []struct {
		name, token, wantAuth string
	}{
		{"revoked", tok2.AccessToken, `Bearer realm="testupstream", error="invalid_token", error_description="token is not active"`},
		{"missing", "", `Bearer realm="testupstream"`},
	} {
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, upURL, strings.NewReader(`{"jsonrpc":"2.0","id":1,"method":"ping"}`))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Accept", "application/json, text/event-stream")
		if tc.token != "" {
			req.Header.Set("Authorization", "Bearer "+tc.token)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusUnauthorized || resp.Header.Get("WWW-Authenticate") != tc.wantAuth {
			t.Errorf("%s token: %s, WWW-Authenticate %q; want 401, %q", tc.name, resp.Status, resp.Header.Get("WWW-Authenticate"), tc.wantAuth)
		}
	}

	seen, err := seenTokens(ctx, upURL)
	if err != nil {
		t.Fatal(err)
	}
	s1, s2 := seen.Token(tokenHash(tok1.AccessToken)), seen.Token(tokenHash(tok2.AccessToken))
	// Token 1 carried initialize, notifications/initialized and one call.
	if s1.Accepted < 3 || s1.Rejected != 0 {
		t.Errorf("token 1 seen: %+v; want >= 3 accepted, none rejected", s1)
	}
	// Token 2: one call accepted; then the failed call's POST and the raw POST
	// rejected, and the go-sdk client's DELETE, as it closes the session its
	// failed POST broke, rejected too (it may not have arrived yet).
	if s2.Accepted != 1 || s2.FirstRejected == nil {
		t.Errorf("token 2 seen: %+v; want 1 accepted, then rejections", s2)
	}
	rejected := map[string]int{}
	for _, r := range seen.Requests {
		if r.SHA256 == s2.SHA256 && r.Outcome == "rejected" {
			rejected[r.Request]++
		}
	}
	if rejected["POST /mcp"] != 2 || rejected["DELETE /mcp"] > 1 || len(rejected) > 2 {
		t.Errorf("token 2 rejected requests = %v; want 2 POSTs and at most one DELETE\n%+v", rejected, seen.Requests)
	}
	if seen.Missing != 1 {
		t.Errorf("requests without a token = %d; want 1", seen.Missing)
	}
}

// TestOIDCUpstreamRejectsExpiredToken: once a 1s token expires at the
// provider, the introspecting upstream rejects it, with no cache to outlive it.
func TestOIDCUpstreamRejectsExpiredToken(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	p := startOIDC(t, &oidcOptions{AccessTTL: time.Second})
	upURL := startUpstreamHTTP(t, p.UpstreamArgs("upstream")...)

	tok, err := p.ClientCredentials(ctx, "gateway")
	if err != nil {
		t.Fatal(err)
	}
	if tok.ExpiresIn != 1 {
		t.Errorf("expires_in = %d; want 1", tok.ExpiresIn)
	}
	// Waits on the provider's clock, polling the upstream (external state).
	err = poll(ctx, func() (bool, error) {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, upURL, nil)
		if err != nil {
			return false, err
		}
		req.Header.Set("Authorization", "Bearer "+tok.AccessToken)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return false, err
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusUnauthorized &&
			strings.Contains(resp.Header.Get("WWW-Authenticate"), `error="invalid_token"`), nil
	})
	if err != nil {
		t.Fatalf("the upstream never rejected the expired token: %v", err)
	}
	if active, err := p.Introspect(ctx, "upstream", tok.AccessToken); err != nil || active {
		t.Errorf("introspect after expiry = %t, %v; want inactive", active, err)
	}
}

// TestOIDCRefreshTokenRotation: a minted refresh token redeems for an access
// token and a new refresh token; the old one is then refused with
// invalid_grant, and (RFC 9700 replay detection) the replay revokes the whole
// grant, so the newest refresh token and its access token die too.
func TestOIDCRefreshTokenRotation(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	p := startOIDC(t, &oidcOptions{Clients: []oidcClient{
		{ID: "agent", Grants: []string{"refresh_token"}},
		{ID: "upstream", Grants: []string{}},
	}})

	rt0, err := p.MintRefreshToken(ctx, "agent")
	if err != nil {
		t.Fatal(err)
	}
	t1, err := p.Refresh(ctx, "agent", rt0)
	if err != nil {
		t.Fatal(err)
	}
	if t1.AccessToken == "" || t1.ExpiresIn != 5 || t1.RefreshToken == "" || t1.RefreshToken == rt0 {
		t.Fatalf("refresh 1: expires_in %d, new refresh token %t; want an access token for 5s and a new refresh token",
			t1.ExpiresIn, t1.RefreshToken != "" && t1.RefreshToken != rt0)
	}
	t2, err := p.Refresh(ctx, "agent", t1.RefreshToken)
	if err != nil {
		t.Fatal(err)
	}
	if active, err := p.Introspect(ctx, "upstream", t2.AccessToken); err != nil || !active {
		t.Fatalf("introspect refreshed token = %t, %v; want active", active, err)
	}

	_, err = p.Refresh(ctx, "agent", rt0)
	var oerr *oidcError
	if !errors.As(err, &oerr) || oerr.Code != "invalid_grant" {
		t.Fatalf("refresh with the rotated-out token: %v; want invalid_grant", err)
	}
	if _, err := p.Refresh(ctx, "agent", t2.RefreshToken); !errors.As(err, &oerr) || oerr.Code != "invalid_grant" {
		t.Errorf("refresh after a replay: %v; want invalid_grant (the grant is revoked)", err)
	}
	if active, err := p.Introspect(ctx, "upstream", t2.AccessToken); err != nil || active {
		t.Errorf("introspect after a replay = %t, %v; want inactive", active, err)
	}

	events, err := p.Events(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range events {
		if e.Type == "issued" || e.Type == "grant_error" || e.Type == "minted" {
			got = append(got, e.Type+" "+e.GrantType+" "+e.ErrorDetail)
		}
	}
	want := []string{
		"minted  ",
		"issued refresh_token ",
		"issued refresh_token ",
		"grant_error refresh_token refresh token already used",
		"grant_error refresh_token refresh token not found",
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("events mismatch (-want +got):\n%s", diff)
	}
	if e := events[1]; e.RefreshTokenSHA256 != tokenHash(t1.RefreshToken) || e.TokenSHA256 != tokenHash(t1.AccessToken) {
		t.Errorf("first issued event = %+v; want the hashes of refresh 1's tokens", e)
	}
}

// TestOIDCRevokeClient: the test-only revocation destroys a client's tokens
// and, with disable, refuses the client at the token endpoint until enabled.
func TestOIDCRevokeClient(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	p := startOIDC(t, nil)

	tok, err := p.ClientCredentials(ctx, "gateway")
	if err != nil {
		t.Fatal(err)
	}
	if n, err := p.RevokeClient(ctx, "gateway", true); err != nil || n != 1 {
		t.Fatalf("RevokeClient = %d, %v; want 1 token revoked", n, err)
	}
	if active, err := p.Introspect(ctx, "upstream", tok.AccessToken); err != nil || active {
		t.Errorf("introspect after RevokeClient = %t, %v; want inactive", active, err)
	}
	_, err = p.ClientCredentials(ctx, "gateway")
	var oerr *oidcError
	if !errors.As(err, &oerr) || oerr.Status != http.StatusUnauthorized || oerr.Code != "invalid_client" {
		t.Errorf("token for a disabled client: %v; want 401 invalid_client", err)
	}
	if err := p.EnableClient(ctx, "gateway"); err != nil {
		t.Fatal(err)
	}
	if _, err := p.ClientCredentials(ctx, "gateway"); err != nil {
		t.Errorf("token after EnableClient: %v", err)
	}
}

// TestOIDCStdioEnvToken: a stdio testupstream with --env-token checks its
// env token by introspection on every tool call, answering a revoked one with
// an isError 401 invalid_token result, and reports its checks by seen_tokens.
func TestOIDCStdioEnvToken(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	p := startOIDC(t, nil)
	tok, err := p.ClientCredentials(ctx, "gateway")
	if err != nil {
		t.Fatal(err)
	}
	args := append([]string{"--transport", "stdio", "--env-token", "API_TOKEN"}, p.UpstreamArgs("upstream")...)
	cmd := exec.Command(requireBin(t, "testupstream"), args...)
	cmd.Env = []string{"API_TOKEN=" + tok.AccessToken}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	cmd.Stderr = testWriter{t}
	cs := connectTransport(t, ctx, &mcp.CommandTransport{Command: cmd}, nil)

	res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "whoami"})
	if err != nil || res.IsError || !strings.Contains(toolText(res), `"token_sha256":"`+tokenHash(tok.AccessToken)+`"`) {
		t.Fatalf("whoami = %v, %v; want token_sha256 %s", res, err, tokenHash(tok.AccessToken))
	}
	if err := p.Revoke(ctx, "gateway", tok.AccessToken); err != nil {
		t.Fatal(err)
	}
	res, err = cs.CallTool(ctx, &mcp.CallToolParams{Name: "echo", Arguments: map[string]any{"text": "x"}})
	if err != nil {
		t.Fatal(err)
	}
	wantText := "HTTP 401 Unauthorized\n" + `{"error":"invalid_token","error_description":"token is not active"}`
	if !res.IsError || toolText(res) != wantText {
		t.Errorf("echo with a revoked env token = isError %t %q; want isError %q", res.IsError, toolText(res), wantText)
	}
	if h, _ := res.Meta["headers"].(map[string]any); h["WWW-Authenticate"] != `Bearer realm="testupstream", error="invalid_token", error_description="token is not active"` {
		t.Errorf("_meta.headers = %v; want the WWW-Authenticate of the 401", res.Meta["headers"])
	}

	res, err = cs.CallTool(ctx, &mcp.CallToolParams{Name: "seen_tokens"})
	if err != nil || res.IsError {
		t.Fatalf("seen_tokens = %v, %v", res, err)
	}
	var seen seenTokensDoc
	if err := json.Unmarshal([]byte(toolText(res)), &seen); err != nil {
		t.Fatal(err)
	}
	if s := seen.Token(tokenHash(tok.AccessToken)); s.Accepted != 1 || s.Rejected != 1 {
		t.Errorf("seen_tokens for the env token: %+v; want 1 accepted, 1 rejected", s)
	}
}

// TestOIDCJWTResource: a token asked for a configured resource indicator is
// an RS256 JWT for that audience, verifiable with the provider's JWKS.
func TestOIDCJWTResource(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	const resource = "https://mcp.example.test/"
	p := startOIDC(t, &oidcOptions{JWTResources: []string{resource}})

	tok, err := p.Token(ctx, "gateway", url.Values{"grant_type": {"client_credentials"}, "resource": {resource}, "scope": {"read"}})
	if err != nil {
		t.Fatal(err)
	}
	parts := strings.Split(tok.AccessToken, ".")
	if len(parts) != 3 {
		t.Fatalf("access token has %d parts; want a JWT", len(parts))
	}
	var header struct{ Alg, Kid, Typ string }
	var claims struct {
		Aud      string `json:"aud"`
		ClientID string `json:"client_id"`
		Scope    string `json:"scope"`
		Iat, Exp int64
	}
	for i, v := range []any{&header, &claims} {
		b, err := base64.RawURLEncoding.DecodeString(parts[i])
		if err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(b, v); err != nil {
			t.Fatal(err)
		}
	}
	if header.Alg != "RS256" || header.Typ != "at+jwt" || claims.Aud != resource || claims.ClientID != "gateway" ||
		claims.Scope != "read" || claims.Exp-claims.Iat != 5 {
		t.Errorf("JWT header %+v claims %+v; want RS256 at+jwt for %s, client gateway, scope read, 5s", header, claims, resource)
	}

	// Verify the signature with the JWKS key of that kid.
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, p.JWKSURL, nil)
	if err != nil {
		t.Fatal(err)
	}
	var jwks struct {
		Keys []struct{ Kid, Kty, N, E string }
	}
	if err := doJSON(req, &jwks); err != nil {
		t.Fatal(err)
	}
	var pub *rsa.PublicKey
	for _, k := range jwks.Keys {
		if k.Kid == header.Kid && k.Kty == "RSA" {
			n, err1 := base64.RawURLEncoding.DecodeString(k.N)
			e, err2 := base64.RawURLEncoding.DecodeString(k.E)
			if err := errors.Join(err1, err2); err != nil {
				t.Fatal(err)
			}
			pub = &rsa.PublicKey{N: new(big.Int).SetBytes(n), E: int(new(big.Int).SetBytes(e).Int64())}
		}
	}
	if pub == nil {
		t.Fatalf("JWKS has no RSA key %q: %+v", header.Kid, jwks)
	}
	sig, err := base64.RawURLEncoding.DecodeString(parts[2])
	if err != nil {
		t.Fatal(err)
	}
	digest := sha256.Sum256([]byte(parts[0] + "." + parts[1]))
	if err := rsa.VerifyPKCS1v15(pub, crypto.SHA256, digest[:], sig); err != nil {
		t.Errorf("JWT signature does not verify with the JWKS key: %v", err)
	}

	// Without a resource the token stays opaque.
	if tok, err := p.ClientCredentials(ctx, "gateway"); err != nil || strings.Contains(tok.AccessToken, ".") {
		t.Errorf("token without a resource = %v, %v; want opaque", tok, err)
	}
}

// TestCheckRenewedBeforeExpiry checks the helper that acceptance tests use to
// show a credential was renewed before its token expired.
func TestCheckRenewedBeforeExpiry(t *testing.T) {
	t.Parallel()
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	ev := func(at, ttl time.Duration) oidcEvent {
		return oidcEvent{Type: "issued", ClientID: "gateway", Time: t0.Add(at), ExpiresAt: t0.Add(at + ttl)}
	}
	onTime := []oidcEvent{ev(0, 5*time.Second), ev(4*time.Second, 5*time.Second), ev(8*time.Second, 5*time.Second)}
	if err := checkRenewedBeforeExpiry(onTime); err != nil {
		t.Errorf("renewed on time: %v", err)
	}
	late := []oidcEvent{ev(0, 5*time.Second), ev(4*time.Second, 5*time.Second), ev(9*time.Second, 5*time.Second)}
	if err := checkRenewedBeforeExpiry(late); err == nil {
		t.Error("a token issued when the previous one expired passed")
	}
	events := append([]oidcEvent{{Type: "issued", ClientID: "other"}, {Type: "grant_error", ClientID: "gateway"}}, onTime...)
	if got := issuedTo(events, "gateway"); len(got) != 3 {
		t.Errorf("issuedTo = %d events; want 3", len(got))
	}
}

// TestOIDCOAuth2Source drives the gateway's oauth2 credential source
// (authmap/oauth2src, golang.org/x/oauth2) against the real provider: the
// client-credentials grant gets a 5s token; the refresh-token grant keeps the
// newest rotated refresh token across fetches; a revocation at the provider
// is ErrRefreshRejected after exactly one refused request (x/oauth2 has
// cached the client authentication style by then: before a first success it
// sends a refused request twice, header then body); a disabled client is
// ErrClientRejected.
func TestOIDCOAuth2Source(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	p := startOIDC(t, &oidcOptions{Clients: []oidcClient{
		{ID: "gateway", Grants: []string{"client_credentials"}},
		{ID: "agent", Grants: []string{"refresh_token"}},
		{ID: "upstream", Grants: []string{}},
	}})
	source := func(id, refreshToken string) *oauth2src.Source {
		cfg := authmap.OAuth2Config{TokenURL: p.TokenURL, ClientID: id, ClientSecret: authmap.SecretRef{Value: p.Client(t, id).Secret}}
		if refreshToken != "" {
			cfg.RefreshToken = authmap.SecretRef{Value: refreshToken}
		}
		s, err := oauth2src.New("credentials.test.source.oauth2", cfg, nil)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}

	cc := source("gateway", "")
	before := time.Now()
	tok, err := cc.Fetch(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !tok.Renewable || tok.ExpiresAt.Before(before.Add(4*time.Second)) || tok.ExpiresAt.After(time.Now().Add(6*time.Second)) {
		t.Errorf("client-credentials token: renewable %t, expires at %v (fetched at %v); want renewable, 5s", tok.Renewable, tok.ExpiresAt, before)
	}

	rt, err := p.MintRefreshToken(ctx, "agent")
	if err != nil {
		t.Fatal(err)
	}
	rs := source("agent", rt)
	var last string
	for i := range 3 {
		tok, err := rs.Fetch(ctx)
		if err != nil {
			t.Fatalf("refresh %d: %v", i, err)
		}
		last = tok.Value
	}
	if active, err := p.Introspect(ctx, "upstream", last); err != nil || !active {
		t.Errorf("introspect the last refreshed token = %t, %v; want active", active, err)
	}

	if _, err := p.RevokeClient(ctx, "agent", false); err != nil {
		t.Fatal(err)
	}
	if _, err := rs.Fetch(ctx); !errors.Is(err, authmap.ErrRefreshRejected) {
		t.Errorf("refresh after revocation: %v; want ErrRefreshRejected", err)
	}
	if _, err := p.RevokeClient(ctx, "gateway", true); err != nil {
		t.Fatal(err)
	}
	if _, err := cc.Fetch(ctx); !errors.Is(err, authmap.ErrClientRejected) {
		t.Errorf("client credentials for a disabled client: %v; want ErrClientRejected", err)
	}

	events, err := p.Events(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if issued := issuedTo(events, "agent"); len(issued) != 3 {
		t.Errorf("agent issuances = %d; want 3", len(issued))
	}
	var refused []string
	for _, e := range events {
		if e.Type == "grant_error" {
			refused = append(refused, e.ClientID+" "+e.Error)
		}
	}
	if diff := cmp.Diff([]string{"agent invalid_grant", "gateway invalid_client"}, refused); diff != "" {
		t.Errorf("refused token requests mismatch (-want +got):\n%s", diff)
	}
}

// tokenFile has p issue n client-credentials tokens to the "gateway" client
// and writes the first to a file, the source of a credential the tests then
// rotate by writing the next.
func tokenFile(t *testing.T, ctx context.Context, p *oidcProvider, n int) (toks []string, path string) {
	t.Helper()
	for range n {
		tok, err := p.ClientCredentials(ctx, "gateway")
		if err != nil {
			t.Fatal(err)
		}
		toks = append(toks, tok.AccessToken)
	}
	path = filepath.Join(t.TempDir(), "token")
	atomicWrite(t, path, toks[0])
	return toks, path
}
