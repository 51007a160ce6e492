package gateway

import (
	"context"
	"net/http"
	"time"
)

// Wiring of auth.oauth into the Server (issue 9). initOAuth, loadOAuth and
// oauthRoutes stay when the agent-auth framework lands; requireAgentAuth and
// AuthConfig below are stand-ins for it (see their comments).

// AuthConfig is the auth section.
//
// STAND-IN until the agent-auth framework (issue 9: auth.keys, policies)
// lands: its AuthConfig replaces this one and keeps the OAuth field as is.
type AuthConfig struct {
	// OAuth makes the gateway an OAuth 2.1 resource server. If nil, agents
	// are not asked for OAuth tokens.
	OAuth *OAuthConfig `koanf:"oauth"`
}

// initOAuth builds g.oauth from auth.oauth; nil when it is unset.
func (g *Server) initOAuth() error {
	if g.config().Auth.OAuth == nil {
		return nil
	}
	o, err := NewOAuthResource(g.config().Auth.OAuth, g.log, nil, g.opts.Now)
	if err != nil {
		return err
	}
	g.oauth = o
	return nil
}

// loadOAuth fetches the issuer's keys once at start-up, so the first agent
// does not wait for them; a failure is logged (by the resource's fetch log)
// and the first token tries again.
func (g *Server) loadOAuth(ctx context.Context) {
	if g.oauth == nil {
		return
	}
	defer g.recoverLog("oauth keys", "")
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	_ = g.oauth.Load(ctx)
}

// oauthRoutes serves the protected-resource metadata (RFC 9728) when
// auth.oauth is set.
func (g *Server) oauthRoutes(mux *http.ServeMux) {
	if g.oauth != nil {
		g.oauth.Routes(mux)
	}
}

// requireAgentAuth guards /mcp with the OAuth resource server.
//
// STAND-IN until the agent-auth framework (issue 9) lands: the framework's
// middleware (API keys first, then g.oauth.TokenVerifier(), answering with
// g.oauth.Challenge) replaces this function.
func (g *Server) requireAgentAuth(next http.Handler) http.Handler {
	if g.oauth == nil {
		return next
	}
	return g.oauth.Require(next)
}
