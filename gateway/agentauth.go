package gateway

import (
	"cmp"
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync/atomic"
	"time"

	"github.com/modelcontextprotocol/go-sdk/auth"
	"github.com/modelcontextprotocol/go-sdk/mcp"
	"golang.org/x/time/rate"

	"github.com/credgate/credgate/authmap"
	"github.com/credgate/credgate/authmap/oauthrs"
)

// Agent authentication on /mcp (issue 9).
//
//	request ──► requireAgent: "Authorization: Bearer <token>"
//	              │  verifiers, in order, until one recognises the token:
//	              │    keyVerifier   auth.keys (SHA-256, compared in constant time)
//	              │    OAuth         auth.oauth (JWT access tokens; the OAuth part)
//	              │  none: 401, WWW-Authenticate: Bearer ...
//	              ▼
//	           auth.RequireBearerToken (go-sdk) puts the *auth.TokenInfo where
//	           the SDK reads it: req.Extra.TokenInfo in every handler, and the
//	           session's owner (a session opened by one agent refuses another's
//	           requests)
//	              ▼
//	           agentPolicy (receiving middleware, policy.go): identity into the
//	           call's context (agentOf), list filtering, forbidden, rate limits
//
// The identity is an *auth.TokenInfo: UserID is the agent's name (the key's
// name, or a token's subject or client id), Scopes its scopes (none for an
// API key), Expiration when its token or key expires (zero if unknown).
// The agent's token goes no further than this file: upstream requests are
// built from the gateway's own config and credentials only.

// tokenVerifier checks an agent's bearer token. It returns the agent's
// identity, or an error: errNotMine when it does not recognise the token
// (the next verifier is asked), an error wrapping auth.ErrInvalidToken when
// it recognises and refuses it (401), an *insufficientScopeError when the
// token is good but lacks scopes (403). r is the request the token came
// with (the OAuth verifier needs the resource URL it was sent to).
type tokenVerifier interface {
	Verify(ctx context.Context, token string, r *http.Request) (*auth.TokenInfo, error)
}

// errNotMine is a verifier's answer for a token it does not recognise.
var errNotMine = fmt.Errorf("%w: not recognised", auth.ErrInvalidToken)

// insufficientScopeError is a verifier's answer for a good token that lacks
// the scopes the gateway requires: 403 with error="insufficient_scope".
type insufficientScopeError struct {
	scopes []string // the scopes required
}

func (e *insufficientScopeError) Error() string {
	return "the token lacks a required scope (needs " + strings.Join(e.scopes, " ") + ")"
}

// agentKindKey marks, in TokenInfo.Extra, how the agent authenticated.
const (
	agentKindKey    = "credgate.auth"
	agentKindAPIKey = "api_key"
)

// expirySlack is the clock skew given to go-sdk's RequireBearerToken, which
// re-checks TokenInfo.Expiration: requireAgent has already checked it (a
// JWT's exp with the OAuth verifier's own leeway), and the SDK's check must
// not refuse, without our WWW-Authenticate, a token that expires between
// the two checks.
const expirySlack = 5 * time.Minute

// apiKey is one entry of auth.keys, ready to compare.
type apiKey struct {
	name string
	// static is the SHA-256 of a key read at start-up; hasStatic is false
	// for a key held by a credential (cred).
	static    [sha256.Size]byte
	hasStatic bool
	cred      string
	info      *auth.TokenInfo // shared by every request of a static key; never modified
	cache     atomic.Pointer[keyHash]
}

// keyHash is a credential-held key at one generation of the credential.
type keyHash struct {
	c    *authmap.Credential
	gen  uint64
	sum  [sha256.Size]byte
	ok   bool // the credential holds a usable value
	info *auth.TokenInfo
}

// current returns the key's hash, and its identity, as the key is now.
// A credential-held key is re-hashed only when its credential changed.
func (k *apiKey) current(g *Server) (*[sha256.Size]byte, *auth.TokenInfo, bool) {
	if k.hasStatic {
		return &k.static, k.info, true
	}
	c := g.credential(k.cred)
	if c == nil {
		return nil, nil, false
	}
	// The generation is read before the value: a rotation in between makes
	// the next request hash again, never keeps an old value.
	gen := c.Generation()
	if h := k.cache.Load(); h != nil && h.c == c && h.gen == gen {
		return &h.sum, h.info, h.ok && c.Status().Usable()
	}
	v := c.Value()
	h := &keyHash{c: c, gen: gen, ok: v != ""}
	if h.ok {
		g.noteSecrets(k.cred, c)
		h.sum = sha256.Sum256([]byte(v))
		h.info = &auth.TokenInfo{UserID: k.name, Extra: map[string]any{agentKindKey: agentKindAPIKey}}
		if exp := c.ExpiresAt(); !exp.IsZero() {
			h.info.Expiration = exp
		}
	}
	k.cache.Store(h)
	return &h.sum, h.info, h.ok && c.Status().Usable()
}

// keyVerifier recognises the API keys of auth.keys.
type keyVerifier struct {
	g    *Server
	keys []*apiKey
}

// Verify compares the token with every key, whichever matches, so that the
// time taken says nothing about which key (or how much of one) matched; the
// comparison is between SHA-256 digests, so it says nothing about the
// keys' lengths either.
func (v *keyVerifier) Verify(_ context.Context, token string, _ *http.Request) (*auth.TokenInfo, error) {
	sum := sha256.Sum256([]byte(token))
	var found *auth.TokenInfo
	for _, k := range v.keys {
		h, info, ok := k.current(v.g)
		if h == nil {
			continue
		}
		if subtle.ConstantTimeCompare(sum[:], h[:]) == 1 && ok && found == nil {
			found = info
		}
	}
	if found == nil {
		return nil, errNotMine
	}
	if t := v.g.cred.adminToken; t != "" && subtle.ConstantTimeCompare([]byte(t), []byte(token)) == 1 {
		// A key_credential whose value is the ops token (checked here:
		// it is read and rotated at run time; a static key is refused
		// at start): no agent opens a session with it.
		if v.g.agentCapLog.Allow() {
			v.g.log.Warn().Str(fieldAgent, found.UserID).Msg("an agent key (key_credential) has the value of admin.token: refused")
		}
		return nil, fmt.Errorf("%w: %w: the key of agent %q is the ops token (admin.token); give the agent a key of its own", auth.ErrInvalidToken, errAdminTokenKey, found.UserID)
	}
	if !found.Expiration.IsZero() && found.Expiration.Before(v.g.now()) {
		return nil, fmt.Errorf("%w: the key of agent %q has expired", auth.ErrInvalidToken, found.UserID)
	}
	return found, nil
}

// verifierChain asks each verifier in turn; the first that recognises the
// token decides.
type verifierChain []tokenVerifier

func (c verifierChain) Verify(ctx context.Context, token string, r *http.Request) (*auth.TokenInfo, error) {
	for _, v := range c {
		info, err := v.Verify(ctx, token, r)
		if errors.Is(err, errNotMine) {
			continue
		}
		if err == nil && (info == nil || info.UserID == "") {
			return nil, fmt.Errorf("%w: the token names no agent", auth.ErrInvalidToken)
		}
		return info, err
	}
	return nil, fmt.Errorf("%w: no API key or access token matches", auth.ErrInvalidToken)
}

// agentAuth is the gateway's agent authentication, built from the config at
// New.
type agentAuth struct {
	enabled   bool
	verifiers verifierChain
	// resourceMetadata, if set, returns the RFC 9728 metadata URL that a
	// 401 names (WWW-Authenticate: Bearer resource_metadata="..."); the
	// OAuth part sets it.
	resourceMetadata func(r *http.Request) string
	// failures samples the log of refused tokens: a client retrying a bad
	// key in a loop must not flood the log.
	failures *rate.Limiter
}

// initAgentAuth builds agent authentication and policy from the config:
// reads the keys that come from sources (once, like admin.token) and adds
// them to the redactor. It starts nothing.
func (g *Server) initAgentAuth() error {
	cfg := g.config()
	a := &agentAuth{enabled: cfg.Auth.enabled(), failures: rate.NewLimiter(1, 10)}
	g.agentAuth = a
	src := &authmap.SourceOptions{}
	if g.opts.Sources != nil {
		*src = *g.opts.Sources
	}
	ctx, cancel := context.WithTimeout(context.Background(), authmap.DefaultExecTimeout)
	defer cancel()
	var errs []error
	kv := &keyVerifier{g: g}
	seen := map[[sha256.Size]byte]string{}
	for i, kc := range cfg.Auth.Keys {
		key := fmt.Sprintf("auth.keys[%d].key", i)
		k := &apiKey{name: kc.Name, cred: kc.KeyCredential}
		if kc.KeyCredential == "" {
			s, err := kc.Key.Open(key, src)
			var v string
			if err == nil {
				v, err = authmap.FetchSecret(ctx, s)
			}
			if err == nil {
				err = checkKeyValue(v)
			}
			if err != nil {
				errs = append(errs, fmt.Errorf("%s: %s", key, g.redact(err.Error())))
				continue
			}
			// Redacted everywhere, and kept across config reloads (base).
			secrets := []string{v}
			if h, ok := s.(authmap.SecretHolder); ok {
				secrets = append(secrets, h.Secrets()...)
			}
			g.cred.redactMu.Lock()
			g.cred.base = append(g.cred.base, secrets...)
			g.cred.static = append(g.cred.static, secrets...)
			g.cred.redactMu.Unlock()
			k.static, k.hasStatic = sha256.Sum256([]byte(v)), true
			if t := g.cred.adminToken; t != "" && subtle.ConstantTimeCompare([]byte(t), []byte(v)) == 1 {
				// An agent holding the ops token could reload the config
				// and every credential (a trial's finding).
				errs = append(errs, fmt.Errorf("%s: the same value as admin.token; an agent's key must not open the ops endpoints", key))
				continue
			}
			if other, dup := seen[k.static]; dup {
				errs = append(errs, fmt.Errorf("%s: the same key as agent %q; each agent needs its own key", key, other))
				continue
			}
			seen[k.static] = kc.Name
			k.info = &auth.TokenInfo{UserID: kc.Name, Extra: map[string]any{agentKindKey: agentKindAPIKey}}
		}
		kv.keys = append(kv.keys, k)
	}
	if len(kv.keys) > 0 {
		a.verifiers = append(a.verifiers, kv)
	}
	if g.oauth != nil {
		keys := map[string]bool{}
		for _, k := range cfg.Auth.Keys {
			keys[k.Name] = true
		}
		a.verifiers = append(a.verifiers, oauthVerifier{o: g.oauth, keys: keys})
		a.resourceMetadata = func(*http.Request) string { return g.oauth.ResourceMetadataURL() }
	}
	g.refreshRedactor()
	if err := errors.Join(errs...); err != nil {
		return err
	}
	g.policy.Store(newPolicySet(cfg, nil))
	return nil
}

// verifiedKey carries requireAgent's verdict to the SDK's middleware.
type verifiedKey struct{}

// requireAgent guards /mcp with agent authentication: a request without a
// bearer token that a verifier accepts gets 401 (403 for missing scopes)
// and goes no further. With auth unset it passes every request.
func (g *Server) requireAgent(next http.Handler) http.Handler {
	a := g.agentAuth
	if a == nil || !a.enabled {
		return next
	}
	// The SDK's own middleware stores the identity where the streamable
	// handler reads it (req.Extra.TokenInfo, the session's owner); it is
	// handed the identity verified here.
	sdk := auth.RequireBearerToken(func(_ context.Context, _ string, r *http.Request) (*auth.TokenInfo, error) {
		if info, ok := r.Context().Value(verifiedKey{}).(*auth.TokenInfo); ok {
			return info, nil
		}
		return nil, auth.ErrInvalidToken
	}, &auth.RequireBearerTokenOptions{AllowMissingExpiration: true, ClockSkew: expirySlack})(next)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := r.Header.Get("Authorization")
		token, ok := bearerToken(h)
		switch {
		case !ok && h == "":
			a.refuse(g, w, r, http.StatusUnauthorized, "", "missing bearer token: send Authorization: Bearer <key>")
			return
		case !ok:
			a.refuse(g, w, r, http.StatusUnauthorized, `error="invalid_request"`, "malformed Authorization header: send Authorization: Bearer <key>")
			return
		}
		info, err := a.verifiers.Verify(r.Context(), token, r)
		if err != nil && g.oauth != nil && errors.Is(err, oauthrs.ErrKeysUnavailable) {
			// The token may be fine: the issuer's keys cannot be had.
			g.oauth.Challenge(w, err)
			return
		}
		if err != nil {
			var scope *insufficientScopeError
			if errors.As(err, &scope) {
				a.refuse(g, w, r, http.StatusForbidden, `error="insufficient_scope", scope="`+strings.Join(scope.scopes, " ")+`"`, err.Error())
				return
			}
			// The log says why an OAuth token was refused (expired,
			// wrong_audience, ...; the README promises it); the answer
			// stays general. Neither quotes the token.
			a.refuseCode(g, w, r, http.StatusUnauthorized, `error="invalid_token"`, "invalid bearer token", cmp.Or(oauthrs.Reason(err), refusalCode(err), "unrecognized"))
			return
		}
		sdk.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), verifiedKey{}, info)))
	})
}

// bearerToken returns the token of an Authorization header of the bearer
// scheme (matched without regard to case, as RFC 9110 says), parsed as
// go-sdk's RequireBearerToken parses it.
func bearerToken(h string) (string, bool) {
	f := strings.Fields(h)
	if len(f) != 2 || !strings.EqualFold(f[0], "bearer") {
		return "", false
	}
	return f[1], true
}

// refuse answers a request whose agent is not authenticated. The answer
// and the log say why in general terms only; never the token.
func (a *agentAuth) refuse(g *Server, w http.ResponseWriter, r *http.Request, status int, params, why string) {
	a.refuseCode(g, w, r, status, params, why, "")
}

// refuseCode is refuse with code, the short reason a verifier gave (an
// OAuth token's "expired", "wrong_audience", ...; "unknown_key" for a
// bearer that is no API key, with no OAuth), in the log line only.
func (a *agentAuth) refuseCode(g *Server, w http.ResponseWriter, r *http.Request, status int, params, why, code string) {
	challenge := `Bearer realm="credgate"`
	if params != "" {
		challenge += ", " + params
	}
	if a.resourceMetadata != nil {
		if u := a.resourceMetadata(r); u != "" {
			challenge += `, resource_metadata="` + u + `"`
		}
	}
	w.Header().Set("WWW-Authenticate", challenge)
	if a.failures.Allow() {
		ev := g.log.Warn().Str("remote", r.RemoteAddr).Int("status", status).Str("reason", why)
		if code != "" {
			ev = ev.Str("code", code)
		}
		ev.Msg("agent authentication refused")
	}
	writeJSON(w, status, map[string]string{"error": why})
}

// agentKey carries the calling agent's identity in a request's context.
type agentKey struct{}

// withAgent returns ctx carrying the agent's identity.
func withAgent(ctx context.Context, info *auth.TokenInfo) context.Context {
	return context.WithValue(ctx, agentKey{}, info)
}

// agentOf returns the identity of the agent a request or call comes from:
// nil when agents are not authenticated (auth unset, or gateway stdio).
// It reads the call's context (agentPolicy puts it there for every request
// from an agent) and, on an HTTP request's context, the SDK's.
func agentOf(ctx context.Context) *auth.TokenInfo {
	if info, ok := ctx.Value(agentKey{}).(*auth.TokenInfo); ok {
		return info
	}
	return auth.TokenInfoFromContext(ctx)
}

// agentName returns the calling agent's name, or "" when unknown.
func agentName(ctx context.Context) string {
	if info := agentOf(ctx); info != nil {
		return info.UserID
	}
	return ""
}

// requestAgent returns the identity a request arrived with, or nil.
func requestAgent(req mcp.Request) *auth.TokenInfo {
	if e := req.GetExtra(); e != nil {
		return e.TokenInfo
	}
	return nil
}

// fieldAgent is the log field of the calling agent's name.
const fieldAgent = "agent"

// Refusals of a token the gateway recognised, with the code the log gives
// them (refusalCode).
var (
	errAdminTokenKey    = errors.New("admin_token_key")
	errSubjectIsKeyName = errors.New("subject_is_key_name")
)

// refusalCode is the log's code of a refusal errAdminTokenKey or
// errSubjectIsKeyName explains, or "".
func refusalCode(err error) string {
	for _, e := range []error{errAdminTokenKey, errSubjectIsKeyName} {
		if errors.Is(err, e) {
			return e.Error()
		}
	}
	return ""
}
