package gateway

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/modelcontextprotocol/go-sdk/auth"
	"github.com/modelcontextprotocol/go-sdk/oauthex"
	"github.com/rs/zerolog"

	"github.com/credgate/credgate/authmap/oauthrs"
)

// The gateway as an OAuth 2.1 resource server (issue 9, auth.oauth): what
// the MCP authorization spec asks of an MCP server. Agents run their own
// OAuth flow against the authorization server and present the JWT access
// token it issued for the gateway's resource URL:
//
//	agent ── POST /mcp (no token) ──────────────────▶ 401 WWW-Authenticate: Bearer resource_metadata="…/.well-known/oauth-protected-resource/mcp"
//	      ── GET /.well-known/oauth-protected-resource/mcp ─▶ {resource, authorization_servers: [issuer], scopes_supported}
//	      ── (token request at the issuer, resource=<resource URL>)
//	      ── POST /mcp, Authorization: Bearer JWT ──▶ OAuthResource.Verify ──▶ the MCP handler, TokenInfo in the context
//
// The token is checked by authmap/oauthrs (signature from the issuer's JWKS,
// iss, aud, exp/nbf with leeway, scopes) and never leaves the gateway:
// upstreams see only the gateway's own credentials.

// OAuthResource verifies agents' access tokens and serves the gateway's
// protected-resource metadata. Build it with NewOAuthResource.
type OAuthResource struct {
	v    *oauthrs.Verifier
	meta *oauthex.ProtectedResourceMetadata
	log  zerolog.Logger
}

// NewOAuthResource builds the resource server of cfg (auth.oauth, already
// validated). It does no I/O: Load fetches the issuer's keys, or the first
// token does. client fetches the metadata and JWKS (nil: a 10s timeout);
// now is the clock (nil: time.Now).
func NewOAuthResource(cfg *OAuthConfig, log zerolog.Logger, client *http.Client, now func() time.Time) (*OAuthResource, error) {
	if cfg == nil {
		return nil, errors.New("auth.oauth is not configured")
	}
	o := &OAuthResource{log: log.With().Str("component", "oauth").Logger()}
	v, err := oauthrs.New(cfg.verifierConfig(), &oauthrs.Options{HTTPClient: client, Now: now, OnFetch: o.logFetch})
	if err != nil {
		return nil, fmt.Errorf("auth.oauth: %w", err)
	}
	o.v = v
	o.meta = &oauthex.ProtectedResourceMetadata{
		Resource:               v.Audience(),
		AuthorizationServers:   []string{v.Issuer()},
		ScopesSupported:        v.RequiredScopes(),
		BearerMethodsSupported: []string{"header"},
		ResourceName:           "credgate MCP gateway",
	}
	return o, nil
}

// logFetch logs JWKS fetches: the first, every key change (a rotation) and
// every failure.
func (o *OAuthResource) logFetch(f oauthrs.Fetch) {
	switch {
	case f.Err != nil:
		o.log.Warn().Str("why", f.Why).Str(fieldErr, f.Err.Error()).Msg("oauth: could not fetch the issuer's keys")
	case f.Changed:
		o.log.Info().Str("why", f.Why).Str("jwks_url", f.URL).Strs("kids", f.KeyIDs).Msg("oauth: issuer keys loaded")
	}
}

// Load fetches the issuer's keys (discovering its JWKS first when jwks_url
// is unset). A failure is logged, not fatal: tokens then get 503 until a
// later fetch, at most one every 10s, succeeds.
func (o *OAuthResource) Load(ctx context.Context) error {
	return o.v.Load(ctx)
}

// Verify checks an agent's access token; see oauthrs.Verifier.Verify for
// the typed refusals.
func (o *OAuthResource) Verify(ctx context.Context, token string) (*oauthrs.Claims, error) {
	return o.v.Verify(ctx, token)
}

// TokenVerifier adapts the resource server to the MCP SDK's
// auth.TokenVerifier (for auth.RequireBearerToken or the gateway's own
// agent-auth middleware): TokenInfo.UserID is the token's sub, or its
// client_id when it has no sub (a client-credentials token), which the SDK
// also uses to bind an MCP session to the agent that opened it.
//
// A refused token's error wraps both auth.ErrInvalidToken and the oauthrs
// reason, so RequireBearerToken answers 401 and a caller that wants the
// precise answer (403 insufficient_scope, 503 when the issuer's keys are
// unavailable) gets it from Challenge. ErrKeysUnavailable does not wrap
// ErrInvalidToken: the token may be fine.
func (o *OAuthResource) TokenVerifier() auth.TokenVerifier {
	return func(ctx context.Context, token string, _ *http.Request) (*auth.TokenInfo, error) {
		c, err := o.v.Verify(ctx, token)
		if err != nil {
			if errors.Is(err, oauthrs.ErrKeysUnavailable) {
				return nil, err
			}
			return nil, fmt.Errorf("%w: %w", auth.ErrInvalidToken, err)
		}
		return tokenInfo(c), nil
	}
}

// tokenInfo is the SDK's view of verified claims.
func tokenInfo(c *oauthrs.Claims) *auth.TokenInfo {
	extra := map[string]any{"iss": c.Issuer}
	if c.Subject != "" {
		extra["sub"] = c.Subject
	}
	if c.ClientID != "" {
		extra["client_id"] = c.ClientID
	}
	return &auth.TokenInfo{UserID: c.Agent(), Scopes: c.Scopes, Expiration: c.Expiry, Extra: extra}
}

// Challenge writes the answer to a request refused because of err (from
// Verify or TokenVerifier; nil when the request had no bearer token): 401
// with WWW-Authenticate: Bearer resource_metadata="…" (and
// error="invalid_token" for a bad token), 403 with error="insufficient_scope"
// and the scopes needed, 503 when the issuer's keys are unavailable. The
// body names the reason, never the token.
func (o *OAuthResource) Challenge(w http.ResponseWriter, err error) {
	status, header := o.v.Challenge(err)
	if header != "" {
		w.Header().Set("WWW-Authenticate", header)
	}
	msg := "credgate: this endpoint needs an OAuth access token (Authorization: Bearer); see " + o.v.ResourceMetadataURL()
	var te *oauthrs.TokenError
	switch {
	case errors.As(err, &te) && status == http.StatusServiceUnavailable:
		w.Header().Set("Retry-After", "10")
		msg = "credgate: the authorization server's keys are unavailable; retry later"
	case errors.As(err, &te):
		msg = "credgate: access token refused: " + te.Reason.Error()
	case err != nil:
		msg = "credgate: access token refused"
	}
	http.Error(w, msg, status)
}

// ResourceMetadataURL is where the gateway's RFC 9728 metadata is, as
// WWW-Authenticate's resource_metadata names it.
func (o *OAuthResource) ResourceMetadataURL() string { return o.v.ResourceMetadataURL() }

// MetadataPaths are the paths the metadata is served at: RFC 9728's
// well-known path with the resource URL's path appended (what a client
// derives from the resource URL), the same with /mcp, and the bare
// well-known path (what a client that knows only the host tries).
func (o *OAuthResource) MetadataPaths() []string {
	paths := []string{oauthrs.WellKnownPath, oauthrs.WellKnownPath + "/mcp"}
	if u, err := url.Parse(o.v.ResourceMetadataURL()); err == nil && !slices.Contains(paths, u.Path) {
		paths = append(paths, u.Path)
	}
	return paths
}

// MetadataHandler serves the RFC 9728 protected-resource metadata (the MCP
// SDK's handler: GET, with CORS open to any origin, as the metadata is
// public).
func (o *OAuthResource) MetadataHandler() http.Handler {
	return auth.ProtectedResourceMetadataHandler(o.meta)
}

// Routes registers the metadata at every MetadataPaths path on mux.
func (o *OAuthResource) Routes(mux *http.ServeMux) {
	h := o.MetadataHandler()
	for _, p := range o.MetadataPaths() {
		mux.Handle(p, h)
	}
}

// Require lets through only requests with a valid access token, answering
// the others as Challenge does. The verified token's auth.TokenInfo is put
// in the request's context by the SDK's own auth.RequireBearerToken (read
// it with auth.TokenInfoFromContext), so the SDK binds each MCP session to
// the agent that opened it.
func (o *OAuthResource) Require(next http.Handler) http.Handler {
	type verified struct{}
	// The SDK middleware runs after the check and only installs the
	// TokenInfo already verified (its own expiry check is given the leeway).
	install := auth.RequireBearerToken(func(ctx context.Context, _ string, _ *http.Request) (*auth.TokenInfo, error) {
		ti, _ := ctx.Value(verified{}).(*auth.TokenInfo)
		if ti == nil {
			return nil, auth.ErrInvalidToken
		}
		return ti, nil
	}, &auth.RequireBearerTokenOptions{ClockSkew: oauthrs.MaxLeeway})(next)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		token, ok := oauthBearer(r)
		if !ok {
			o.Challenge(w, nil)
			return
		}
		c, err := o.v.Verify(r.Context(), token)
		if err != nil {
			ev := o.log.Info()
			if c != nil {
				ev = ev.Str("agent", c.Agent())
			}
			ev.Str("reason", oauthrs.Reason(err)).Str(fieldErr, err.Error()).Msg("oauth: agent token refused")
			o.Challenge(w, err)
			return
		}
		install.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), verified{}, tokenInfo(c))))
	})
}

// oauthBearer returns the token of an "Authorization: Bearer" header (the
// scheme is case-insensitive, RFC 9110 §11.1).
func oauthBearer(r *http.Request) (string, bool) {
	scheme, token, ok := strings.Cut(r.Header.Get("Authorization"), " ")
	token = strings.TrimSpace(token)
	if !ok || !strings.EqualFold(scheme, "Bearer") || token == "" || strings.Contains(token, " ") {
		return "", false
	}
	return token, true
}
