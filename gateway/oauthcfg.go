package gateway

import (
	"fmt"
	"time"

	"github.com/credgate/credgate/authmap/oauthrs"
)

// OAuthConfig is auth.oauth: the gateway as an OAuth 2.1 resource server
// (issue 9). Agents present JWT access tokens from the authorization server
// named by Issuer, issued for the gateway's resource URL.
type OAuthConfig struct {
	// Issuer is the authorization server's issuer identifier: every token's
	// iss, and where its metadata (RFC 8414, or OpenID Connect discovery) is
	// found. Required; https, or http on a loopback host.
	Issuer string `koanf:"issuer"`
	// Resource is the gateway's resource URL (RFC 9728): the public URL of
	// its /mcp endpoint as agents reach it, e.g. https://gw.example.com/mcp.
	// Agents ask their authorization server for tokens for it (RFC 8707),
	// and the protected-resource metadata is served at its well-known URL.
	// If empty, defaults to Audience; one of the two is required.
	Resource string `koanf:"resource"`
	// Audience is what every token's aud must name. If empty, defaults to
	// Resource; when both are set they must be equal, since the MCP
	// authorization spec binds a token to the resource it was issued for.
	Audience string `koanf:"audience"`
	// JWKSURL is where the issuer's signing keys are. If empty, the
	// jwks_uri of the issuer's metadata.
	JWKSURL string `koanf:"jwks_url"`
	// RequiredScopes must all be in every token; a valid token without one
	// gets 403 insufficient_scope. If empty, any scope will do.
	RequiredScopes []string `koanf:"required_scopes"`
	// Leeway is the clock skew tolerated on exp, nbf and iat. If zero,
	// defaults to 30s; at most 5m.
	Leeway time.Duration `koanf:"leeway"`
}

// resource is the resource URL: Resource, else Audience.
func (o *OAuthConfig) resource() string {
	if o.Resource != "" {
		return o.Resource
	}
	return o.Audience
}

// verifierConfig is the oauthrs.Config of o (defaults applied).
func (o *OAuthConfig) verifierConfig() oauthrs.Config {
	return oauthrs.Config{
		Issuer:         o.Issuer,
		Audience:       o.resource(),
		JWKSURL:        o.JWKSURL,
		RequiredScopes: o.RequiredScopes,
		Leeway:         o.Leeway,
	}
}

// validateOAuth checks auth.oauth, one error per problem, each naming its
// key; URLs are shown redacted, as the file had them before ${NAME}
// expansion. A nil section is off and fine.
func (c *Config) validateOAuth() []error {
	const key = "auth.oauth"
	o := c.Auth.OAuth
	if o == nil {
		return nil
	}
	var errs []error
	bad := func(k, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s.%s: %s", key, k, fmt.Sprintf(format, args...)))
	}
	badURL := func(k, v string, err error) {
		bad(k, "%s: %v", c.shownURL(key+"."+k, v), err)
	}
	if o.Issuer == "" {
		bad("issuer", "missing: the authorization server's issuer URL (the iss of its tokens)")
	} else if err := oauthrs.CheckURL(o.Issuer); err != nil {
		badURL("issuer", o.Issuer, err)
	}
	switch {
	case o.Resource == "" && o.Audience == "":
		bad("resource", "missing: the gateway's public URL of /mcp (e.g. https://gw.example.com/mcp), which tokens must carry as aud; set resource or audience")
	case o.Resource != "" && o.Audience != "" && o.Resource != o.Audience:
		bad("audience", "%s differs from %s.resource %s: tokens must be issued for the gateway's resource URL; set one of them",
			c.shownURL(key+".audience", o.Audience), key, c.shownURL(key+".resource", o.Resource))
	default:
		k := "resource"
		if o.Resource == "" {
			k = "audience"
		}
		if err := oauthrs.CheckURL(o.resource()); err != nil {
			badURL(k, o.resource(), err)
		}
	}
	if o.JWKSURL != "" {
		if err := oauthrs.CheckURL(o.JWKSURL); err != nil {
			badURL("jwks_url", o.JWKSURL, err)
		}
	}
	for i, s := range o.RequiredScopes {
		if err := oauthrs.CheckScope(s); err != nil {
			errs = append(errs, fmt.Errorf("%s.required_scopes[%d]: %w", key, i, err))
		}
	}
	if o.Leeway < 0 || o.Leeway > oauthrs.MaxLeeway {
		bad("leeway", "%s is out of range; want up to %s (0 or unset: %s)", o.Leeway, oauthrs.MaxLeeway, oauthrs.DefaultLeeway)
	}
	return errs
}
