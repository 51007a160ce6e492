package gateway

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/credgate/credgate/authmap/oauthrs"
	"github.com/modelcontextprotocol/go-sdk/auth"
)

// Wiring of auth.oauth into the Server (issue 9): the resource server, its
// keys, its metadata routes, and its verifier in the agent-auth chain.

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

// oauthVerifier is the OAuth resource server as a link of the agent-auth
// verifier chain (see tokenVerifier), after the API keys.
type oauthVerifier struct {
	o *OAuthResource
	// keys are the API keys' names: a token whose subject is one of them
	// is refused, since sessions and logs know an agent by its name, and
	// it could use (and end) the sessions the key opened (found trying the
	// gateway from outside).
	keys map[string]bool
}

func (v oauthVerifier) Verify(ctx context.Context, tok string, r *http.Request) (*auth.TokenInfo, error) {
	info, err := v.o.TokenVerifier()(ctx, tok, r)
	var te *oauthrs.TokenError
	if errors.As(err, &te) && errors.Is(te, oauthrs.ErrInsufficientScope) {
		return nil, &insufficientScopeError{scopes: te.Scopes}
	}
	if err == nil && info != nil && v.keys[info.UserID] {
		return nil, fmt.Errorf("%w: %w: the token's subject %q is the name of an API key (auth.keys): refused, so that neither can act as the other", auth.ErrInvalidToken, errSubjectIsKeyName, info.UserID)
	}
	return info, err
}
