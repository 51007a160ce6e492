// Package oauthrs verifies the OAuth 2.1 access tokens agents present to an
// MCP server acting as a resource server, as the MCP authorization spec asks:
// JWT access tokens (RFC 9068) signed by the authorization server's keys,
// issued by the configured issuer for this resource (aud), within their
// lifetime, with the required scopes.
//
//	agent ── Authorization: Bearer JWT ──▶ Verifier.Verify ──▶ Claims{Subject, ClientID, Scopes, Expiry}
//	                                            │   (or a *TokenError: expired, wrong_audience, ...)
//	                                            │ kid
//	                                            ▼
//	                                        key cache ── unknown kid (at most one fetch per
//	                                            ▲        RefetchInterval) or older than MaxKeyAge
//	                                            │                        │
//	                   jwks_uri ◀── issuer metadata (RFC 8414 /.well-known/oauth-authorization-server,
//	                                 or OIDC /.well-known/openid-configuration), when jwks_url is unset
//
// Signatures are checked by go-jose (github.com/go-jose/go-jose/v4), never by
// hand, with the asymmetric algorithms only: alg "none" and the HMACs are
// refused before any key is looked at, so a token "signed" with the issuer's
// public key as an HMAC secret gets nowhere. The key comes from the issuer's
// JWKS only, never from the token's own jwk, jku or x5u headers.
//
// Key rotation: an authorization server that rotates publishes the new key
// in its JWKS before signing with it. A token whose kid is not cached makes
// the verifier fetch the JWKS anew, at most once per RefetchInterval, so
// garbage kids cannot make it hammer the server; the keys are also fetched
// anew when older than MaxKeyAge, so a key the server withdrew stops being
// trusted. A failed fetch keeps the keys already cached.
//
// A token verified once is remembered (by its SHA-256, up to CacheSize
// entries) until it expires or the key set changes, so an agent that sends
// the same token on every call pays the signature check once: a cache hit
// still checks the token's lifetime and scopes.
//
// The package knows nothing of HTTP servers or of MCP: the gateway adapts a
// Verifier to the MCP SDK's auth.TokenVerifier and serves the RFC 9728
// metadata.
package oauthrs

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
)

// Defaults of Config and Options.
const (
	// DefaultLeeway is the clock skew tolerated on exp, nbf and iat. Thirty
	// seconds covers the drift between an authorization server's clock and
	// the gateway's, NTP-synchronised or not quite, while adding little to
	// a token's life: access tokens live minutes to an hour, and exp is all
	// that ends a JWT's validity. (go-jose and Spring default to 60s,
	// golang-jwt to none; RFC 7519 asks for "no more than a few minutes".)
	DefaultLeeway = 30 * time.Second
	// MaxLeeway bounds Leeway: more would keep expired tokens alive.
	MaxLeeway = 5 * time.Minute
	// DefaultRefetchInterval spaces the JWKS fetches an unknown kid triggers.
	DefaultRefetchInterval = 10 * time.Second
	// DefaultMaxKeyAge is how long fetched keys are trusted before the JWKS
	// is fetched anew (on the next Verify).
	DefaultMaxKeyAge = 15 * time.Minute
	// DefaultCacheSize is how many verified tokens are remembered.
	DefaultCacheSize = 4096
	// DefaultTimeout bounds one metadata or JWKS request when no HTTP client
	// is given.
	DefaultTimeout = 10 * time.Second
	// MaxTokenBytes bounds a token: anything longer is refused unread.
	MaxTokenBytes = 16 << 10
)

// Config is what the operator configures (the gateway's auth.oauth).
type Config struct {
	// Issuer is the authorization server's issuer identifier: the iss of
	// every token, and where its metadata is discovered. Required; an https
	// URL, or http on a loopback host.
	Issuer string
	// Audience is the gateway's resource URL (RFC 8707, RFC 9728): every
	// token's aud must name it. Required; an https URL, or http on a
	// loopback host. A trailing slash is not significant in aud.
	Audience string
	// JWKSURL is where the issuer's signing keys are. If empty, it is the
	// jwks_uri of the issuer's metadata.
	JWKSURL string
	// RequiredScopes must all be in every token's scope (or scp) claim. If
	// empty, any scope will do.
	RequiredScopes []string
	// Leeway is the clock skew tolerated on exp, nbf and iat. If zero,
	// defaults to 30s; at most 5m.
	Leeway time.Duration
}

// Options are the verifier's plumbing; nil is valid.
type Options struct {
	// HTTPClient fetches the metadata and the JWKS. If nil, a client with a
	// 10s timeout.
	HTTPClient *http.Client
	// Now is the clock. If nil, time.Now.
	Now func() time.Time
	// RefetchInterval is the least time between two JWKS fetches triggered
	// by unknown kids (the first is immediate). If zero, defaults to 10s.
	RefetchInterval time.Duration
	// MaxKeyAge is how long fetched keys are used before the JWKS is fetched
	// anew. If zero, defaults to 15m.
	MaxKeyAge time.Duration
	// CacheSize bounds the verified tokens remembered. If zero, defaults to
	// 4096; negative turns the cache off.
	CacheSize int
	// OnFetch, if set, is called after every JWKS fetch attempt, from the
	// goroutine that made it: the gateway logs key rotations with it.
	OnFetch func(Fetch)
}

// Fetch reports one JWKS fetch attempt.
type Fetch struct {
	URL    string   // the JWKS URL (after discovery)
	Why    string   // "load", "unknown_kid" or "max_age"
	KeyIDs []string // the kids of the usable signing keys fetched; nil on error
	// Changed reports whether the key set differs from the one cached before.
	Changed bool
	Err     error
}

// Claims are what a verified token says about its bearer.
type Claims struct {
	Issuer   string
	Subject  string // sub: the user, or the client itself for client-credentials tokens
	ClientID string // client_id (RFC 9068), or azp
	Audience []string
	Scopes   []string // scope (space-separated) or scp
	Expiry   time.Time
	IssuedAt time.Time // zero if the token has no iat
	ID       string    // jti
	KeyID    string    // the kid the token was signed with
}

// Agent names the bearer: the subject, or the client id of a token without
// one.
func (c *Claims) Agent() string {
	if c.Subject != "" {
		return c.Subject
	}
	return c.ClientID
}

// allowedAlgs are the asymmetric JWS algorithms; the HMACs and "none" are
// absent on purpose.
var allowedAlgs = []jose.SignatureAlgorithm{
	jose.RS256, jose.RS384, jose.RS512,
	jose.PS256, jose.PS384, jose.PS512,
	jose.ES256, jose.ES384, jose.ES512,
	jose.EdDSA,
}

// Verifier checks access tokens. It is safe for concurrent use.
type Verifier struct {
	cfg         Config
	client      *http.Client
	now         func() time.Time
	refetch     time.Duration
	maxKeyAge   time.Duration
	onFetch     func(Fetch)
	metadataURL string

	keys atomic.Pointer[keySet] // nil until the first successful fetch
	// fetching is held (size-1 channel, so waiting respects ctx) by the one
	// goroutine fetching; the fields after it are its.
	fetching      chan struct{}
	jwksURL       string    // cfg.JWKSURL, or discovered
	lastAttempt   time.Time // of the last fetch, successful or not
	lastTriggered time.Time // of the last fetch a token triggered (unknown kid, no keys)
	triggered     bool      // whether a token ever triggered one

	cache *tokenCache
}

// New returns a verifier for cfg. It checks cfg and does no I/O: call Load
// to fetch the keys up front, or let the first Verify do it.
func New(cfg Config, opts *Options) (*Verifier, error) {
	if opts == nil {
		opts = &Options{}
	}
	if cfg.Leeway == 0 {
		cfg.Leeway = DefaultLeeway
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	v := &Verifier{
		cfg:       cfg,
		client:    opts.HTTPClient,
		now:       opts.Now,
		refetch:   opts.RefetchInterval,
		maxKeyAge: opts.MaxKeyAge,
		onFetch:   opts.OnFetch,
		fetching:  make(chan struct{}, 1),
		jwksURL:   cfg.JWKSURL,
	}
	v.cfg.RequiredScopes = slices.Clone(cfg.RequiredScopes)
	if v.client == nil {
		v.client = &http.Client{Timeout: DefaultTimeout}
	}
	if v.now == nil {
		v.now = time.Now
	}
	if v.refetch <= 0 {
		v.refetch = DefaultRefetchInterval
	}
	if v.maxKeyAge <= 0 {
		v.maxKeyAge = DefaultMaxKeyAge
	}
	switch n := opts.CacheSize; {
	case n == 0:
		v.cache = newTokenCache(DefaultCacheSize)
	case n > 0:
		v.cache = newTokenCache(n)
	}
	v.metadataURL = MetadataURL(cfg.Audience)
	return v, nil
}

// Validate checks the config, naming each bad field.
func (c Config) Validate() error {
	var errs []error
	for _, f := range []struct{ name, v string }{{"issuer", c.Issuer}, {"audience", c.Audience}, {"jwks_url", c.JWKSURL}} {
		if f.v == "" && f.name == "jwks_url" {
			continue
		}
		if err := CheckURL(f.v); err != nil {
			errs = append(errs, fmt.Errorf("%s: %s: %w", f.name, shownURL(f.v), err))
		}
	}
	for i, s := range c.RequiredScopes {
		if err := CheckScope(s); err != nil {
			errs = append(errs, fmt.Errorf("required_scopes[%d]: %w", i, err))
		}
	}
	if c.Leeway < 0 || c.Leeway > MaxLeeway {
		errs = append(errs, fmt.Errorf("leeway: %s is out of range; want 1s to %s (0: default %s)", c.Leeway, MaxLeeway, DefaultLeeway))
	}
	return errors.Join(errs...)
}

// CheckURL accepts an absolute https URL, or http on a loopback host (a
// development setup), without a fragment or user info: what an issuer, an
// audience or a JWKS URL may be. The error does not repeat the URL, which
// the caller shows as it sees fit (redacted).
func CheckURL(s string) error {
	if s == "" {
		return errors.New("missing")
	}
	u, err := url.Parse(s)
	if err != nil {
		return errors.New("does not parse as a URL")
	}
	switch {
	case u.Host == "" || (u.Scheme != "https" && u.Scheme != "http"):
		return errors.New("not an absolute http(s) URL")
	case u.Scheme == "http" && !loopback(u.Hostname()):
		return errors.New("want https (plain http only on a loopback host)")
	case u.Fragment != "" || strings.HasSuffix(s, "#"):
		return errors.New("has a fragment")
	case u.User != nil:
		return errors.New("has user info")
	case strings.ContainsAny(s, "\"\\ "):
		return errors.New("has a quote, backslash or space")
	}
	return nil
}

// shownURL quotes a configured URL for an error, without its user info.
func shownURL(s string) string {
	if u, err := url.Parse(s); err == nil && u.User != nil {
		s = u.Redacted()
	}
	return fmt.Sprintf("%q", s)
}

func loopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// CheckScope accepts a scope token (RFC 6749 §3.3: printable ASCII without
// space, '"' or '\').
func CheckScope(s string) error {
	if s == "" {
		return errors.New("empty scope")
	}
	for _, r := range s {
		if r < 0x21 || r > 0x7e || r == '"' || r == '\\' {
			return fmt.Errorf("scope %q: want printable ASCII without spaces, quotes or backslashes", s)
		}
	}
	return nil
}

// MetadataURL is where the RFC 9728 metadata of resource is served: the
// well-known path inserted between host and path,
// https://gw.example.com/mcp → https://gw.example.com/.well-known/oauth-protected-resource/mcp.
func MetadataURL(resource string) string {
	u, err := url.Parse(resource)
	if err != nil {
		return ""
	}
	u.Path = WellKnownPath + strings.TrimSuffix(u.Path, "/")
	u.RawPath, u.RawQuery = "", ""
	return u.String()
}

// WellKnownPath is RFC 9728's well-known path.
const WellKnownPath = "/.well-known/oauth-protected-resource"

// Audience returns the configured audience (the resource URL).
func (v *Verifier) Audience() string { return v.cfg.Audience }

// Issuer returns the configured issuer.
func (v *Verifier) Issuer() string { return v.cfg.Issuer }

// RequiredScopes returns the configured required scopes.
func (v *Verifier) RequiredScopes() []string { return slices.Clone(v.cfg.RequiredScopes) }

// ResourceMetadataURL is MetadataURL of the audience: the resource_metadata
// of every challenge.
func (v *Verifier) ResourceMetadataURL() string { return v.metadataURL }

// header is a JWS protected header, as far as Verify looks at it first.
type header struct {
	Alg  string   `json:"alg"`
	Kid  string   `json:"kid"`
	Typ  string   `json:"typ"`
	Crit []string `json:"crit"`
}

// claims are the registered and RFC 9068 claims Verify reads.
type claims struct {
	jwt.Claims
	ClientID string          `json:"client_id"`
	AZP      string          `json:"azp"`
	Scope    string          `json:"scope"`
	SCP      json.RawMessage `json:"scp"`
	CNF      json.RawMessage `json:"cnf"`
}

// Verify checks token and returns its claims, or a *TokenError saying why
// it is refused (errors.Is with the Err sentinels). With
// ErrInsufficientScope the claims come back too. ctx bounds a JWKS fetch the
// token may trigger.
func (v *Verifier) Verify(ctx context.Context, token string) (*Claims, error) {
	if len(token) > MaxTokenBytes {
		return nil, refuse(ErrMalformed, "token longer than %d bytes", MaxTokenBytes)
	}
	now := v.now()
	var sum [32]byte
	if v.cache != nil {
		sum = sha256.Sum256([]byte(token))
		if c := v.cache.get(sum, v.keyGen()); c != nil {
			if err := v.checkTimes(c.Expiry, time.Time{}, c.IssuedAt, now, true); err != nil {
				return nil, err
			}
			return v.checkScopes(c)
		}
	}
	c, err := v.verify(ctx, token, now)
	if err != nil {
		return nil, err
	}
	if v.cache != nil {
		v.cache.put(sum, c, v.keyGen(), now)
	}
	return v.checkScopes(c)
}

func (v *Verifier) verify(ctx context.Context, token string, now time.Time) (*Claims, error) {
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return nil, refuse(ErrMalformed, "not a JWS compact serialization (%d parts; want 3)", len(parts))
	}
	raw, err := base64.RawURLEncoding.DecodeString(parts[0])
	if err != nil {
		return nil, refuse(ErrMalformed, "header is not base64url")
	}
	var h header
	if err := json.Unmarshal(raw, &h); err != nil {
		return nil, refuse(ErrMalformed, "header is not a JSON object")
	}
	switch {
	case h.Alg == "" || strings.EqualFold(h.Alg, "none"):
		return nil, refuse(ErrUnsigned, "alg %s", shown(h.Alg))
	case parts[2] == "":
		return nil, refuse(ErrUnsigned, "empty signature")
	case !slices.Contains(allowedAlgs, jose.SignatureAlgorithm(h.Alg)):
		return nil, refuse(ErrAlgorithm, "alg %s; want one of RS*, PS*, ES*, EdDSA", shown(h.Alg))
	case len(h.Crit) > 0:
		return nil, refuse(ErrMalformed, "crit header %q not understood", h.Crit)
	}
	// RFC 9068 §4: an access token's typ is at+jwt; many servers still send
	// JWT or none. Anything else (an ID token's, a logout token's) is a
	// different kind of JWT.
	switch strings.ToLower(strings.TrimPrefix(strings.ToLower(h.Typ), "application/")) {
	case "at+jwt", "jwt", "":
	default:
		return nil, refuse(ErrMalformed, "typ %s is not an access token's (want at+jwt)", shown(h.Typ))
	}
	tok, err := jwt.ParseSigned(token, allowedAlgs)
	if err != nil {
		return nil, refuse(ErrMalformed, "%v", err)
	}
	// The issuer first, unverified: a token from another authorization
	// server is told as such, not as a bad signature from a key it does not
	// have; and it cannot make the verifier fetch this issuer's keys.
	var pre claims
	if err := tok.UnsafeClaimsWithoutVerification(&pre); err != nil {
		return nil, refuse(ErrMalformed, "claims are not a JSON object")
	}
	if pre.Issuer != v.cfg.Issuer {
		return nil, refuse(ErrWrongIssuer, "iss %s; want %q", shown(pre.Issuer), v.cfg.Issuer)
	}
	keys, err := v.keysFor(ctx, h.Kid, h.Alg)
	if err != nil {
		return nil, err
	}
	var cl claims
	verified := false
	for _, k := range keys {
		if tok.Claims(k.Key, &cl) == nil {
			verified = true
			break
		}
	}
	if !verified {
		return nil, refuse(ErrBadSignature, "signature does not verify with key %s", shown(h.Kid))
	}
	if cl.Expiry == nil {
		return nil, refuse(ErrMalformed, "no exp claim")
	}
	var nbf, iat time.Time
	if cl.NotBefore != nil {
		nbf = cl.NotBefore.Time()
	}
	if cl.IssuedAt != nil {
		iat = cl.IssuedAt.Time()
	}
	if err := v.checkTimes(cl.Expiry.Time(), nbf, iat, now, false); err != nil {
		return nil, err
	}
	if !audienceMatches(cl.Audience, v.cfg.Audience) {
		aud := []string(cl.Audience)
		if len(aud) > 4 {
			aud = append(aud[:4:4], "...")
		}
		return nil, refuse(ErrWrongAudience, "aud %s; want %q", shown(strings.Join(aud, " ")), v.cfg.Audience)
	}
	if len(cl.CNF) > 0 && string(cl.CNF) != "null" {
		return nil, refuse(ErrTokenBinding, "the token has a cnf claim (DPoP or mTLS-bound)")
	}
	scopes, err := parseScopes(cl.Scope, cl.SCP)
	if err != nil {
		return nil, err
	}
	out := &Claims{
		Issuer:   cl.Issuer,
		Subject:  cl.Subject,
		ClientID: cl.ClientID,
		Audience: []string(cl.Audience),
		Scopes:   scopes,
		Expiry:   cl.Expiry.Time(),
		IssuedAt: iat,
		ID:       cl.ID,
		KeyID:    h.Kid,
	}
	if out.ClientID == "" {
		out.ClientID = cl.AZP
	}
	return out, nil
}

// checkTimes checks exp, nbf and iat (each if not zero) against now with the
// leeway. cached skips what cannot change for a token verified before.
func (v *Verifier) checkTimes(exp, nbf, iat, now time.Time, cached bool) error {
	l := v.cfg.Leeway
	if !exp.IsZero() && !now.Before(exp.Add(l)) {
		return refuse(ErrExpired, "exp %s is past (now %s, leeway %s)", exp.UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339), l)
	}
	if cached {
		return nil
	}
	if !nbf.IsZero() && now.Add(l).Before(nbf) {
		return refuse(ErrNotYetValid, "nbf %s is in the future (now %s, leeway %s)", nbf.UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339), l)
	}
	if !iat.IsZero() && now.Add(l).Before(iat) {
		return refuse(ErrNotYetValid, "iat %s is in the future (now %s, leeway %s)", iat.UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339), l)
	}
	return nil
}

// checkScopes returns a copy of c (cached claims are shared), with
// ErrInsufficientScope when a required scope is missing.
func (v *Verifier) checkScopes(c *Claims) (*Claims, error) {
	out := *c
	out.Audience = slices.Clone(c.Audience)
	out.Scopes = slices.Clone(c.Scopes)
	var missing []string
	for _, s := range v.cfg.RequiredScopes {
		if !slices.Contains(c.Scopes, s) {
			missing = append(missing, s)
		}
	}
	if len(missing) > 0 {
		return &out, &TokenError{
			Reason: ErrInsufficientScope,
			Detail: fmt.Sprintf("missing %q (required: %q)", missing, v.cfg.RequiredScopes),
			Scopes: slices.Clone(v.cfg.RequiredScopes),
		}
	}
	return &out, nil
}

// audienceMatches reports whether aud names want, a trailing slash aside
// (authorization servers differ on it; scheme, host, port and path must match).
func audienceMatches(aud jwt.Audience, want string) bool {
	want = strings.TrimSuffix(want, "/")
	for _, a := range aud {
		if strings.TrimSuffix(a, "/") == want {
			return true
		}
	}
	return false
}

// parseScopes reads scope (RFC 9068: space-separated) or, without it, scp
// (an array of strings, or one string: Azure AD, Okta).
func parseScopes(scope string, scp json.RawMessage) ([]string, error) {
	if scope != "" || len(scp) == 0 || string(scp) == "null" {
		return strings.Fields(scope), nil
	}
	var list []string
	if json.Unmarshal(scp, &list) == nil {
		return list, nil
	}
	var one string
	if json.Unmarshal(scp, &one) == nil {
		return strings.Fields(one), nil
	}
	return nil, refuse(ErrMalformed, "scp claim is neither a string nor an array of strings")
}

// tokenCache remembers verified tokens by their SHA-256 until they expire or
// the key set changes (gen), up to max entries.
type tokenCache struct {
	mu  sync.Mutex
	max int
	m   map[[32]byte]cached
}

type cached struct {
	claims *Claims
	gen    uint64
}

func newTokenCache(max int) *tokenCache {
	return &tokenCache{max: max, m: make(map[[32]byte]cached)}
}

func (c *tokenCache) get(sum [32]byte, gen uint64) *Claims {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.m[sum]
	if !ok {
		return nil
	}
	if e.gen != gen {
		delete(c.m, sum)
		return nil
	}
	return e.claims
}

func (c *tokenCache) put(sum [32]byte, claims *Claims, gen uint64, now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.m) >= c.max {
		// Expired entries and those of an older key set go first; if the
		// cache is still full, a quarter of it, in map order (random).
		for k, e := range c.m {
			if e.gen != gen || !now.Before(e.claims.Expiry) {
				delete(c.m, k)
			}
		}
		for k := range c.m {
			if len(c.m) < c.max*3/4 {
				break
			}
			delete(c.m, k)
		}
	}
	c.m[sum] = cached{claims: claims, gen: gen}
}

func (c *tokenCache) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.m)
}
