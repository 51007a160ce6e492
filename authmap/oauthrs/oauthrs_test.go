package oauthrs

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/hmac"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"github.com/google/go-cmp/cmp"
)

const resource = "https://gw.example.test/mcp"

// testAS is an authorization server's metadata and JWKS endpoints, with
// signing keys made in the test.
type testAS struct {
	t       testing.TB
	srv     *httptest.Server
	issuer  string
	mu      sync.Mutex
	keys    []signingKey // published; keys[0] signs
	status  int          // JWKS answer status; 0 = 200
	fetches atomic.Int32 // JWKS requests
	meta    atomic.Int32 // metadata requests
	// oidcOnly makes the RFC 8414 endpoint 404, as an OIDC-only server does.
	oidcOnly bool
}

type signingKey struct {
	kid  string
	alg  jose.SignatureAlgorithm
	priv crypto.Signer
}

var (
	rsaOnce sync.Once
	rsaKeys []*rsa.PrivateKey
)

// rsaKey returns one of a few 2048-bit keys generated once per test binary
// (generating is slow).
func rsaKey(t testing.TB, i int) *rsa.PrivateKey {
	t.Helper()
	rsaOnce.Do(func() {
		for range 4 {
			k, err := rsa.GenerateKey(rand.Reader, 2048)
			if err != nil {
				panic(err)
			}
			rsaKeys = append(rsaKeys, k)
		}
	})
	return rsaKeys[i]
}

func newTestAS(t testing.TB, keys ...signingKey) *testAS {
	t.Helper()
	as := &testAS{t: t, keys: keys}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /jwks", func(w http.ResponseWriter, r *http.Request) {
		as.fetches.Add(1)
		as.mu.Lock()
		defer as.mu.Unlock()
		if as.status != 0 {
			w.WriteHeader(as.status)
			return
		}
		var set jose.JSONWebKeySet
		for _, k := range as.keys {
			set.Keys = append(set.Keys, jose.JSONWebKey{Key: k.priv.Public(), KeyID: k.kid, Algorithm: string(k.alg), Use: "sig"})
		}
		// A symmetric key and an encryption key, which must be skipped.
		set.Keys = append(set.Keys, jose.JSONWebKey{Key: []byte("0123456789abcdef0123456789abcdef"), KeyID: "hmac", Algorithm: "HS256"})
		set.Keys = append(set.Keys, jose.JSONWebKey{Key: rsaKey(t, 3).Public(), KeyID: "enc", Use: "enc"})
		_ = json.NewEncoder(w).Encode(set)
	})
	metaDoc := func(w http.ResponseWriter, r *http.Request) {
		as.meta.Add(1)
		if as.oidcOnly && strings.Contains(r.URL.Path, "oauth-authorization-server") {
			http.NotFound(w, r)
			return
		}
		_ = json.NewEncoder(w).Encode(map[string]string{"issuer": as.issuer, "jwks_uri": as.srv.URL + "/jwks"})
	}
	mux.HandleFunc("GET /.well-known/oauth-authorization-server", metaDoc)
	mux.HandleFunc("GET /.well-known/openid-configuration", metaDoc)
	as.srv = httptest.NewServer(mux)
	t.Cleanup(as.srv.Close)
	as.issuer = as.srv.URL
	return as
}

func rsaSigner(t testing.TB, i int, kid string) signingKey {
	return signingKey{kid: kid, alg: jose.RS256, priv: rsaKey(t, i)}
}

func (as *testAS) setKeys(keys ...signingKey) {
	as.mu.Lock()
	defer as.mu.Unlock()
	as.keys = keys
}

func (as *testAS) setStatus(s int) {
	as.mu.Lock()
	defer as.mu.Unlock()
	as.status = s
}

// claims are a valid token's for the test AS, issued at now.
func (as *testAS) claims(now time.Time) map[string]any {
	return map[string]any{
		"iss":       as.issuer,
		"sub":       "agent-1",
		"client_id": "ci",
		"aud":       resource,
		"scope":     "mcp:tools read",
		"iat":       now.Unix(),
		"exp":       now.Add(5 * time.Minute).Unix(),
		"jti":       "j1",
	}
}

// sign signs claims with k (typ at+jwt unless typ is given).
func sign(t testing.TB, k signingKey, claims map[string]any, typ ...string) string {
	t.Helper()
	opts := (&jose.SignerOptions{}).WithType("at+jwt")
	if len(typ) > 0 {
		opts = (&jose.SignerOptions{}).WithType(jose.ContentType(typ[0]))
	}
	s, err := jose.NewSigner(jose.SigningKey{Algorithm: k.alg, Key: jose.JSONWebKey{Key: k.priv, KeyID: k.kid}}, opts)
	if err != nil {
		t.Fatal(err)
	}
	tok, err := jwt.Signed(s).Claims(claims).Serialize()
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// forge builds a compact JWS from a header and claims with the given
// signature function (nil: an empty signature).
func forge(t testing.TB, hdr, claims map[string]any, sig func(input []byte) []byte) string {
	t.Helper()
	enc := func(v any) string {
		b, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		return base64.RawURLEncoding.EncodeToString(b)
	}
	input := enc(hdr) + "." + enc(claims)
	if sig == nil {
		return input + "."
	}
	return input + "." + base64.RawURLEncoding.EncodeToString(sig([]byte(input)))
}

// clock is a settable clock.
type clock struct{ ns atomic.Int64 }

func newClock() *clock {
	c := &clock{}
	c.ns.Store(time.Now().UnixNano())
	return c
}
func (c *clock) now() time.Time              { return time.Unix(0, c.ns.Load()) }
func (c *clock) advance(d time.Duration)     { c.ns.Add(int64(d)) }
func (c *clock) options(o *Options) *Options { o.Now = c.now; return o }

func newVerifier(t *testing.T, as *testAS, clk *clock, cfg Config, opts *Options) *Verifier {
	t.Helper()
	if cfg.Issuer == "" {
		cfg.Issuer = as.issuer
	}
	if cfg.Audience == "" {
		cfg.Audience = resource
	}
	if opts == nil {
		opts = &Options{}
	}
	v, err := New(cfg, clk.options(opts))
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func TestVerifyAccepts(t *testing.T) {
	t.Parallel()
	ecKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	_, edKey, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	rs := rsaSigner(t, 0, "rs")
	ps := signingKey{kid: "ps", alg: jose.PS256, priv: rsaKey(t, 1)}
	es := signingKey{kid: "es", alg: jose.ES256, priv: ecKey}
	ed := signingKey{kid: "ed", alg: jose.EdDSA, priv: edKey}
	as := newTestAS(t, rs, ps, es, ed)
	clk := newClock()
	v := newVerifier(t, as, clk, Config{RequiredScopes: []string{"mcp:tools"}}, nil)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()

	now := clk.now().Truncate(time.Second)
	want := &Claims{
		Issuer: as.issuer, Subject: "agent-1", ClientID: "ci", Audience: []string{resource},
		Scopes: []string{"mcp:tools", "read"}, Expiry: now.Add(5 * time.Minute), IssuedAt: now, ID: "j1",
	}
	for _, k := range []signingKey{rs, ps, es, ed} {
		t.Run(string(k.alg), func(t *testing.T) {
			got, err := v.Verify(ctx, sign(t, k, as.claims(now)))
			if err != nil {
				t.Fatal(err)
			}
			w := *want
			w.KeyID = k.kid
			if diff := cmp.Diff(&w, got); diff != "" {
				t.Errorf("claims mismatch (-want +got):\n%s", diff)
			}
		})
	}

	// Variants a real server sends: scp as an array (Azure AD, Okta), no
	// sub (a client-credentials token names the client), azp, aud as an
	// array with a trailing slash, typ JWT or none.
	c := as.claims(now)
	delete(c, "scope")
	delete(c, "sub")
	delete(c, "client_id")
	c["scp"] = []string{"mcp:tools"}
	c["azp"] = "svc"
	c["aud"] = []string{"https://other.example.test", resource + "/"}
	for _, typ := range []string{"JWT", "application/at+jwt", ""} {
		var tok string
		if typ == "" {
			s, err := jose.NewSigner(jose.SigningKey{Algorithm: rs.alg, Key: jose.JSONWebKey{Key: rs.priv, KeyID: rs.kid}}, nil)
			if err != nil {
				t.Fatal(err)
			}
			if tok, err = jwt.Signed(s).Claims(c).Serialize(); err != nil {
				t.Fatal(err)
			}
		} else {
			tok = sign(t, rs, c, typ)
		}
		got, err := v.Verify(ctx, tok)
		if err != nil {
			t.Fatalf("typ %q: %v", typ, err)
		}
		if got.Agent() != "svc" || got.ClientID != "svc" || !cmp.Equal(got.Scopes, []string{"mcp:tools"}) {
			t.Errorf("typ %q: claims %+v; want agent svc, scopes [mcp:tools]", typ, got)
		}
	}
	// A token without a kid is checked against the keys that fit its alg.
	noKid := signingKey{alg: jose.ES256, priv: ecKey}
	if got, err := v.Verify(ctx, sign(t, noKid, as.claims(now))); err != nil || got.KeyID != "" {
		t.Errorf("token without a kid: %+v, %v", got, err)
	}
	if n := as.fetches.Load(); n != 1 {
		t.Errorf("JWKS fetched %d times; want once", n)
	}
}

// TestVerifyRefuses: each kind of bad token gets its own reason (issue 9).
func TestVerifyRefuses(t *testing.T) {
	t.Parallel()
	good := rsaSigner(t, 0, "k1")
	as := newTestAS(t, good)
	clk := newClock()
	v := newVerifier(t, as, clk, Config{RequiredScopes: []string{"mcp:tools"}, Leeway: 30 * time.Second}, nil)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	now := clk.now()
	with := func(edit func(c map[string]any)) map[string]any {
		c := as.claims(now)
		edit(c)
		return c
	}
	pubDER, err := x509.MarshalPKIXPublicKey(good.priv.Public())
	if err != nil {
		t.Fatal(err)
	}
	pubJWK, err := json.Marshal(jose.JSONWebKey{Key: good.priv.Public(), KeyID: "k1"})
	if err != nil {
		t.Fatal(err)
	}
	hmacWith := func(secret []byte) func([]byte) []byte {
		return func(in []byte) []byte {
			m := hmac.New(sha256.New, secret)
			m.Write(in)
			return m.Sum(nil)
		}
	}
	valid := sign(t, good, as.claims(now))
	parts := strings.Split(valid, ".")
	sigBytes, _ := base64.RawURLEncoding.DecodeString(parts[2])
	sigBytes[10] ^= 1
	tampered := parts[0] + "." + parts[1] + "." + base64.RawURLEncoding.EncodeToString(sigBytes)
	payload, _ := json.Marshal(with(func(c map[string]any) { c["scope"] = "mcp:tools admin" }))
	swapped := parts[0] + "." + base64.RawURLEncoding.EncodeToString(payload) + "." + parts[2]

	cases := []struct {
		name   string
		token  string
		reason error
	}{
		{"expired", sign(t, good, with(func(c map[string]any) { c["exp"] = now.Add(-31 * time.Second).Unix() })), ErrExpired},
		{"not yet valid", sign(t, good, with(func(c map[string]any) { c["nbf"] = now.Add(time.Minute).Unix() })), ErrNotYetValid},
		{"issued in the future", sign(t, good, with(func(c map[string]any) { c["iat"] = now.Add(time.Minute).Unix() })), ErrNotYetValid},
		{"wrong issuer", sign(t, good, with(func(c map[string]any) { c["iss"] = "https://evil.example.test" })), ErrWrongIssuer},
		{"issuer with a trailing slash", sign(t, good, with(func(c map[string]any) { c["iss"] = as.issuer + "/" })), ErrWrongIssuer},
		{"wrong audience", sign(t, good, with(func(c map[string]any) { c["aud"] = "https://gw.example.test/other" })), ErrWrongAudience},
		{"audience of another host", sign(t, good, with(func(c map[string]any) { c["aud"] = "https://gw.example.test.evil/mcp" })), ErrWrongAudience},
		{"no audience", sign(t, good, with(func(c map[string]any) { delete(c, "aud") })), ErrWrongAudience},
		{"no exp", sign(t, good, with(func(c map[string]any) { delete(c, "exp") })), ErrMalformed},
		{"alg none", forge(t, map[string]any{"alg": "none", "typ": "at+jwt"}, as.claims(now), nil), ErrUnsigned},
		{"alg None with a signature", forge(t, map[string]any{"alg": "None", "kid": "k1"}, as.claims(now), hmacWith(nil)), ErrUnsigned},
		{"no alg", forge(t, map[string]any{"kid": "k1"}, as.claims(now), hmacWith(nil)), ErrUnsigned},
		{"RS256 without a signature", forge(t, map[string]any{"alg": "RS256", "kid": "k1"}, as.claims(now), nil), ErrUnsigned},
		{"HS256 keyed with the public key (DER)", forge(t, map[string]any{"alg": "HS256", "kid": "k1"}, as.claims(now), hmacWith(pubDER)), ErrAlgorithm},
		{"HS256 keyed with the public JWK", forge(t, map[string]any{"alg": "HS256", "kid": "k1"}, as.claims(now), hmacWith(pubJWK)), ErrAlgorithm},
		{"HS256 with the JWKS's own HMAC key", forge(t, map[string]any{"alg": "HS256", "kid": "hmac"}, as.claims(now), hmacWith([]byte("0123456789abcdef0123456789abcdef"))), ErrAlgorithm},
		{"tampered signature", tampered, ErrBadSignature},
		{"claims swapped under a valid signature", swapped, ErrBadSignature},
		{"signed by another key with the same kid", sign(t, rsaSigner(t, 1, "k1"), as.claims(now)), ErrBadSignature},
		{"unknown kid", sign(t, rsaSigner(t, 1, "k-unknown"), as.claims(now)), ErrUnknownKey},
		{"the JWKS's encryption key", sign(t, rsaSigner(t, 3, "enc"), as.claims(now)), ErrUnknownKey},
		{"ES256 header on an RSA kid", forge(t, map[string]any{"alg": "ES256", "kid": "k1"}, as.claims(now), hmacWith(nil)), ErrUnknownKey},
		{"an ID token (typ)", sign(t, good, as.claims(now), "id_token+jwt"), ErrMalformed},
		{"crit header", forge(t, map[string]any{"alg": "RS256", "kid": "k1", "crit": []string{"exp"}, "exp": 1}, as.claims(now), hmacWith(nil)), ErrMalformed},
		{"DPoP-bound", sign(t, good, with(func(c map[string]any) { c["cnf"] = map[string]string{"jkt": "abc"} })), ErrTokenBinding},
		{"missing scope", sign(t, good, with(func(c map[string]any) { c["scope"] = "read" })), ErrInsufficientScope},
		{"no scope", sign(t, good, with(func(c map[string]any) { delete(c, "scope") })), ErrInsufficientScope},
		{"scp of the wrong type", sign(t, good, with(func(c map[string]any) { delete(c, "scope"); c["scp"] = 7 })), ErrMalformed},
		{"two parts", parts[0] + "." + parts[1], ErrMalformed},
		{"header not base64", "%%%." + parts[1] + "." + parts[2], ErrMalformed},
		{"header not JSON", base64.RawURLEncoding.EncodeToString([]byte("nope")) + "." + parts[1] + "." + parts[2], ErrMalformed},
		{"too long", valid + strings.Repeat("A", MaxTokenBytes), ErrMalformed},
		{"opaque", "2YotnFZFEjr1zCsicMWpAA", ErrMalformed},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := v.Verify(ctx, tc.token)
			if !errors.Is(err, tc.reason) {
				t.Fatalf("Verify = %v, %v; want %v", got, err, tc.reason)
			}
			var te *TokenError
			if !errors.As(err, &te) || te.Code() != reasons[tc.reason] || Reason(err) != te.Code() {
				t.Errorf("error %v (%T) is not a *TokenError with code %q", err, err, reasons[tc.reason])
			}
			if (got != nil) != (tc.reason == ErrInsufficientScope) {
				t.Errorf("claims %+v returned with %v; want claims with insufficient_scope only", got, err)
			}
			// The token never shows in the error.
			if sig := tc.token[strings.LastIndex(tc.token, ".")+1:]; len(sig) > 8 && strings.Contains(err.Error(), sig) {
				t.Errorf("error %q shows the token's signature", err)
			}
		})
	}
	// Within the leeway an expired token still passes.
	if _, err := v.Verify(ctx, sign(t, good, with(func(c map[string]any) { c["exp"] = now.Add(-20 * time.Second).Unix() }))); err != nil {
		t.Errorf("token expired 20s ago with a 30s leeway: %v", err)
	}
	// The insufficient_scope error names the scopes required.
	_, err = v.Verify(ctx, sign(t, good, with(func(c map[string]any) { c["scope"] = "read" })))
	var te *TokenError
	if !errors.As(err, &te) || !cmp.Equal(te.Scopes, []string{"mcp:tools"}) {
		t.Errorf("insufficient scope error %#v; want Scopes [mcp:tools]", err)
	}
}

// TestVerifyCachedTokenExpires: a token verified once is remembered, but its
// expiry is checked on every call.
func TestVerifyCachedTokenExpires(t *testing.T) {
	t.Parallel()
	k := rsaSigner(t, 0, "k1")
	as := newTestAS(t, k)
	clk := newClock()
	v := newVerifier(t, as, clk, Config{Leeway: time.Second}, nil)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	tok := sign(t, k, as.claims(clk.now()))
	for range 3 {
		if _, err := v.Verify(ctx, tok); err != nil {
			t.Fatal(err)
		}
	}
	if v.cache.len() != 1 {
		t.Errorf("cache holds %d tokens; want 1", v.cache.len())
	}
	clk.advance(5*time.Minute + time.Second)
	if _, err := v.Verify(ctx, tok); !errors.Is(err, ErrExpired) {
		t.Errorf("cached token past its exp: %v; want expired", err)
	}
}

// TestVerifyCacheBounded: the cache of verified tokens never grows past
// CacheSize.
func TestVerifyCacheBounded(t *testing.T) {
	t.Parallel()
	k := rsaSigner(t, 0, "k1")
	as := newTestAS(t, k)
	clk := newClock()
	v := newVerifier(t, as, clk, Config{}, &Options{CacheSize: 8})
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	for i := range 50 {
		c := as.claims(clk.now())
		c["jti"] = fmt.Sprint(i)
		if _, err := v.Verify(ctx, sign(t, k, c)); err != nil {
			t.Fatal(err)
		}
		if n := v.cache.len(); n > 8 {
			t.Fatalf("cache holds %d tokens; want at most 8", n)
		}
	}
}

// TestKeyRotation: a token signed with a key published after the JWKS was
// fetched makes the verifier fetch it anew, at once; more unknown kids are
// held to one fetch per RefetchInterval; a key the server withdrew stops
// being trusted once the keys are older than MaxKeyAge, and so do the tokens
// it signed that were cached.
func TestKeyRotation(t *testing.T) {
	t.Parallel()
	k1, k2 := rsaSigner(t, 0, "k1"), rsaSigner(t, 1, "k2")
	as := newTestAS(t, k1)
	clk := newClock()
	var fetches []Fetch
	var mu sync.Mutex
	v := newVerifier(t, as, clk, Config{}, &Options{
		RefetchInterval: 10 * time.Second, MaxKeyAge: time.Hour,
		OnFetch: func(f Fetch) { mu.Lock(); fetches = append(fetches, f); mu.Unlock() },
	})
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	if err := v.Load(ctx); err != nil {
		t.Fatal(err)
	}
	old := sign(t, k1, as.claims(clk.now()))
	if _, err := v.Verify(ctx, old); err != nil {
		t.Fatal(err)
	}

	// The server rotates: k2 signs, k1 is still published.
	as.setKeys(k2, k1)
	if _, err := v.Verify(ctx, sign(t, k2, as.claims(clk.now()))); err != nil {
		t.Fatalf("token of the rotated key: %v", err)
	}
	if _, err := v.Verify(ctx, old); err != nil {
		t.Fatalf("token of the old key, still published: %v", err)
	}
	if n := as.fetches.Load(); n != 2 {
		t.Errorf("JWKS fetched %d times; want 2 (load, rotation)", n)
	}

	// Garbage kids: no fetch until RefetchInterval has passed.
	k3 := rsaSigner(t, 2, "k3")
	for range 5 {
		if _, err := v.Verify(ctx, sign(t, k3, as.claims(clk.now()))); !errors.Is(err, ErrUnknownKey) {
			t.Fatalf("unknown kid: %v; want unknown_key", err)
		}
	}
	if n := as.fetches.Load(); n != 2 {
		t.Errorf("JWKS fetched %d times after 5 unknown kids within the interval; want 2", n)
	}
	clk.advance(11 * time.Second)
	as.setKeys(k3, k2)
	if _, err := v.Verify(ctx, sign(t, k3, as.claims(clk.now()))); err != nil {
		t.Fatalf("after the interval, a rotated key: %v", err)
	}

	// k1 is withdrawn now; the cached keys still have it until MaxKeyAge.
	if _, err := v.Verify(ctx, old); !errors.Is(err, ErrUnknownKey) {
		// The refetch for k3 dropped k1 already: its cached token too.
		t.Errorf("token of the withdrawn key k1: %v; want unknown_key", err)
	}
	clk.advance(time.Hour)
	as.setKeys(k3)
	if _, err := v.Verify(ctx, sign(t, k3, as.claims(clk.now()))); err != nil {
		t.Fatal(err)
	}
	if ids, _ := v.KeyIDs(); !cmp.Equal(ids, []string{"k3"}) {
		t.Errorf("keys after MaxKeyAge: %v; want [k3]", ids)
	}

	mu.Lock()
	defer mu.Unlock()
	var whys []string
	for _, f := range fetches {
		whys = append(whys, f.Why)
		if f.Err != nil || f.URL != as.srv.URL+"/jwks" {
			t.Errorf("fetch %+v; want no error, URL %s/jwks", f, as.srv.URL)
		}
	}
	if diff := cmp.Diff([]string{"load", "unknown_kid", "unknown_kid", "max_age"}, whys); diff != "" {
		t.Errorf("fetches mismatch (-want +got):\n%s", diff)
	}
}

// TestKeysUnavailable: without keys a token cannot be checked (503, not
// 401); the verifier retries once per interval and recovers.
func TestKeysUnavailable(t *testing.T) {
	t.Parallel()
	k := rsaSigner(t, 0, "k1")
	as := newTestAS(t, k)
	as.setStatus(http.StatusInternalServerError)
	clk := newClock()
	v := newVerifier(t, as, clk, Config{}, &Options{RefetchInterval: 10 * time.Second})
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	if err := v.Load(ctx); err == nil || !strings.Contains(err.Error(), "HTTP 500") {
		t.Errorf("Load = %v; want HTTP 500", err)
	}
	tok := sign(t, k, as.claims(clk.now()))
	for range 3 {
		if _, err := v.Verify(ctx, tok); !errors.Is(err, ErrKeysUnavailable) {
			t.Fatalf("Verify = %v; want keys_unavailable", err)
		}
	}
	if n := as.fetches.Load(); n != 2 {
		t.Errorf("JWKS fetched %d times; want 2 (load, then one retry in the interval)", n)
	}
	if st, h := v.Challenge(ErrKeysUnavailable); st != http.StatusServiceUnavailable || h != "" {
		t.Errorf("Challenge(keys unavailable) = %d %q; want 503 without a challenge", st, h)
	}
	as.setStatus(0)
	clk.advance(10 * time.Second)
	if _, err := v.Verify(ctx, tok); err != nil {
		t.Errorf("after the server recovered: %v", err)
	}

	// A failing refetch keeps the keys cached.
	as.setStatus(http.StatusBadGateway)
	clk.advance(time.Hour)
	if _, err := v.Verify(ctx, sign(t, k, as.claims(clk.now()))); err != nil {
		t.Errorf("stale keys, JWKS down: %v; want the cached keys used", err)
	}
}

// TestConcurrentUnknownKid: many callers with the same new kid make one
// fetch.
func TestConcurrentUnknownKid(t *testing.T) {
	t.Parallel()
	k1, k2 := rsaSigner(t, 0, "k1"), rsaSigner(t, 1, "k2")
	as := newTestAS(t, k1)
	clk := newClock()
	v := newVerifier(t, as, clk, Config{}, nil)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	if err := v.Load(ctx); err != nil {
		t.Fatal(err)
	}
	as.setKeys(k2)
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for i := range 16 {
		c := as.claims(clk.now())
		c["jti"] = fmt.Sprint(i)
		tok := sign(t, k2, c)
		wg.Go(func() {
			_, err := v.Verify(ctx, tok)
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	if n := as.fetches.Load(); n != 2 {
		t.Errorf("JWKS fetched %d times; want 2 (load, one refetch)", n)
	}
}

func TestDiscovery(t *testing.T) {
	t.Parallel()
	k := rsaSigner(t, 0, "k1")
	testCtx := func(t *testing.T) context.Context {
		ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
		t.Cleanup(cancel)
		return ctx
	}

	t.Run("RFC 8414", func(t *testing.T) {
		t.Parallel()
		ctx := testCtx(t)
		as := newTestAS(t, k)
		v := newVerifier(t, as, newClock(), Config{}, nil)
		if err := v.Load(ctx); err != nil {
			t.Fatal(err)
		}
		if as.meta.Load() != 1 {
			t.Errorf("metadata fetched %d times; want 1", as.meta.Load())
		}
	})
	t.Run("OIDC only", func(t *testing.T) {
		t.Parallel()
		ctx := testCtx(t)
		as := newTestAS(t, k)
		as.oidcOnly = true
		v := newVerifier(t, as, newClock(), Config{}, nil)
		if err := v.Load(ctx); err != nil {
			t.Fatal(err)
		}
		if as.meta.Load() != 2 {
			t.Errorf("metadata fetched %d times; want 2 (RFC 8414 404, then OIDC)", as.meta.Load())
		}
	})
	t.Run("jwks_url set", func(t *testing.T) {
		t.Parallel()
		ctx := testCtx(t)
		as := newTestAS(t, k)
		v := newVerifier(t, as, newClock(), Config{JWKSURL: as.srv.URL + "/jwks"}, nil)
		if err := v.Load(ctx); err != nil {
			t.Fatal(err)
		}
		if as.meta.Load() != 0 {
			t.Errorf("metadata fetched %d times; want none", as.meta.Load())
		}
	})
	t.Run("issuer mismatch", func(t *testing.T) {
		t.Parallel()
		ctx := testCtx(t)
		as := newTestAS(t, k)
		v := newVerifier(t, as, newClock(), Config{Issuer: as.issuer + "/"}, nil)
		err := v.Load(ctx)
		if err == nil || !strings.Contains(err.Error(), "want \""+as.issuer+"/\"") {
			t.Errorf("Load = %v; want the metadata's issuer refused", err)
		}
	})
	t.Run("no metadata", func(t *testing.T) {
		t.Parallel()
		ctx := testCtx(t)
		srv := httptest.NewServer(http.NotFoundHandler())
		defer srv.Close()
		v, err := New(Config{Issuer: srv.URL + "/tenant", Audience: resource}, nil)
		if err != nil {
			t.Fatal(err)
		}
		err = v.Load(ctx)
		if err == nil || !strings.Contains(err.Error(), "set jwks_url") || !strings.Contains(err.Error(), "/.well-known/oauth-authorization-server/tenant") {
			t.Errorf("Load = %v; want no metadata found", err)
		}
	})
}

func TestMetadataURLs(t *testing.T) {
	t.Parallel()
	got := metadataURLs("https://as.example.test/tenant/a/")
	want := []string{
		"https://as.example.test/.well-known/oauth-authorization-server/tenant/a",
		"https://as.example.test/.well-known/openid-configuration/tenant/a",
		"https://as.example.test/tenant/a/.well-known/openid-configuration",
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("mismatch (-want +got):\n%s", diff)
	}
	for in, want := range map[string]string{
		"https://gw.example.test/mcp":  "https://gw.example.test/.well-known/oauth-protected-resource/mcp",
		"https://gw.example.test/mcp/": "https://gw.example.test/.well-known/oauth-protected-resource/mcp",
		"https://gw.example.test":      "https://gw.example.test/.well-known/oauth-protected-resource",
		"http://127.0.0.1:8080/a/mcp":  "http://127.0.0.1:8080/.well-known/oauth-protected-resource/a/mcp",
	} {
		if got := MetadataURL(in); got != want {
			t.Errorf("MetadataURL(%q) = %q; want %q", in, got, want)
		}
	}
}

func TestConfigValidate(t *testing.T) {
	t.Parallel()
	err := Config{
		Issuer:         "http://as.example.test",
		Audience:       "gw.example.test/mcp",
		JWKSURL:        "https://u:p@as.example.test/jwks",
		RequiredScopes: []string{"ok", "two words", ""},
		Leeway:         time.Hour,
	}.Validate()
	var lines []string
	for _, l := range strings.Split(fmt.Sprint(err), "\n") {
		lines = append(lines, l)
	}
	want := []string{
		`issuer: "http://as.example.test": want https (plain http only on a loopback host)`,
		`audience: "gw.example.test/mcp": not an absolute http(s) URL`,
		`jwks_url: "https://u:xxxxx@as.example.test/jwks": has user info`,
		`required_scopes[1]: scope "two words": want printable ASCII without spaces, quotes or backslashes`,
		`required_scopes[2]: empty scope`,
		`leeway: 1h0m0s is out of range; want 1s to 5m0s (0: default 30s)`,
	}
	if diff := cmp.Diff(want, lines); diff != "" {
		t.Errorf("mismatch (-want +got):\n%s", diff)
	}
	if err := (Config{Issuer: "http://localhost:9000", Audience: "http://[::1]:8080/mcp"}).Validate(); err != nil {
		t.Errorf("loopback http: %v", err)
	}
}

func TestChallenge(t *testing.T) {
	t.Parallel()
	v, err := New(Config{Issuer: "https://as.example.test", Audience: resource, RequiredScopes: []string{"mcp:tools", "read"}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	meta := `resource_metadata="https://gw.example.test/.well-known/oauth-protected-resource/mcp"`
	for _, tc := range []struct {
		err    error
		status int
		header string
	}{
		{nil, 401, `Bearer ` + meta + `, scope="mcp:tools read"`},
		{refuse(ErrExpired, "exp 2026"), 401, `Bearer error="invalid_token", error_description="the access token is refused: token expired", ` + meta},
		{&TokenError{Reason: ErrInsufficientScope, Scopes: []string{"mcp:tools", "read"}}, 403, `Bearer error="insufficient_scope", scope="mcp:tools read", ` + meta},
		{errors.New("other"), 401, `Bearer error="invalid_token", error_description="the access token is invalid", ` + meta},
	} {
		status, header := v.Challenge(tc.err)
		if status != tc.status || header != tc.header {
			t.Errorf("Challenge(%v) = %d %s\nwant %d %s", tc.err, status, header, tc.status, tc.header)
		}
	}
}
