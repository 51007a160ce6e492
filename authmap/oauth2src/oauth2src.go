// Package oauth2src is the credential source that obtains access tokens from
// an OAuth 2.0 token endpoint (config key credentials.<name>.source.oauth2)
// through golang.org/x/oauth2: the client_credentials grant
// (golang.org/x/oauth2/clientcredentials) and the refresh_token grant. Every
// fetch gets a new access token; its expiry comes from expires_in.
//
// Providers that rotate refresh tokens hand back a new one with every access
// token and reject the old one: the newest is kept in memory and used next.
// The configured refresh token is re-read at every fetch too, so a new one
// put at its source by a person (after a revocation) replaces the kept one.
//
// Errors wrap authmap's sentinels: invalid_grant is [authmap.ErrRefreshRejected]
// (the credential becomes revoked and is not refreshed again in a loop);
// invalid_client, unauthorized_client and invalid_scope are
// [authmap.ErrClientRejected]; anything else is transient.
package oauth2src

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/credgate/credgate/authmap"
	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"
)

// DefaultTimeout bounds a token request when no HTTP client is given.
const DefaultTimeout = 30 * time.Second

// maxRefreshKept bounds the rotated refresh tokens kept for redaction.
const maxRefreshKept = 8

// Source mints access tokens.
type Source struct {
	cfg          authmap.OAuth2Config
	grant        string
	clientSecret authmap.Source // nil for a public client
	refreshSrc   authmap.Source // nil for client_credentials
	client       *http.Client
	// The configs live as long as the source: each caches the client
	// authentication style it detected, so it is probed once, not per refresh.
	cc *clientcredentials.Config
	oc *oauth2.Config

	fetchMu    sync.Mutex // one token request at a time: a rotated refresh token is single-use
	configured string     // the refresh token last read from its source
	refresh    string     // the refresh token to use next
	adopted    bool       // refresh came from a peer replica (AdoptRefreshToken)
	usedSecret string     // the client secret the last Fetch sent (GrantChanged)
	rotates    bool       // the provider handed back a new refresh token

	secretsMu sync.Mutex // never held during I/O: Secrets is called under the credential's lock
	secrets   []string   // the client secret and refresh tokens seen, newest last
}

// Open is the [authmap.OpenFunc] of oauth2 sources.
func Open(key string, cfg authmap.SourceConfig, opts *authmap.SourceOptions) (authmap.Source, error) {
	if cfg.OAuth2 == nil {
		return nil, fmt.Errorf("%s.oauth2: not set", key)
	}
	return New(key+".oauth2", *cfg.OAuth2, opts)
}

// New returns the source cfg describes; key is its config path for errors.
// opts builds the sources of the client secret and refresh token, and gives
// the HTTP client (nil: one with a 30s timeout). It does no I/O.
func New(key string, cfg authmap.OAuth2Config, opts *authmap.SourceOptions) (*Source, error) {
	s := &Source{cfg: cfg, grant: cfg.Grant()}
	if opts != nil && opts.HTTPClient != nil {
		s.client = opts.HTTPClient
	} else {
		s.client = &http.Client{Timeout: DefaultTimeout}
	}
	var err error
	if s.clientSecret, err = cfg.ClientSecret.Open(key+".client_secret", opts); err != nil {
		return nil, err
	}
	if s.refreshSrc, err = cfg.RefreshToken.Open(key+".refresh_token", opts); err != nil {
		return nil, err
	}
	switch s.grant {
	case authmap.GrantClientCredentials:
		if s.clientSecret == nil {
			return nil, fmt.Errorf("%s.client_secret: required for grant_type client_credentials", key)
		}
	case authmap.GrantRefreshToken:
		if s.refreshSrc == nil {
			return nil, fmt.Errorf("%s.refresh_token: required for grant_type refresh_token", key)
		}
	default:
		return nil, fmt.Errorf("%s.grant_type: %q is not client_credentials or refresh_token", key, s.grant)
	}
	s.cc = &clientcredentials.Config{ClientID: cfg.ClientID, TokenURL: cfg.TokenURL, Scopes: cfg.Scopes}
	s.oc = &oauth2.Config{ClientID: cfg.ClientID, Endpoint: oauth2.Endpoint{TokenURL: cfg.TokenURL}, Scopes: cfg.Scopes}
	return s, nil
}

// Kind returns "oauth2".
func (s *Source) Kind() string { return authmap.KindOAuth2 }

// Secrets returns the client secret and the refresh tokens seen, for redaction.
func (s *Source) Secrets() []string {
	s.secretsMu.Lock()
	defer s.secretsMu.Unlock()
	return append([]string(nil), s.secrets...)
}

func (s *Source) remember(secret string) {
	if secret == "" {
		return
	}
	s.secretsMu.Lock()
	defer s.secretsMu.Unlock()
	for _, v := range s.secrets {
		if v == secret {
			return
		}
	}
	s.secrets = append(s.secrets, secret)
	if len(s.secrets) > maxRefreshKept+1 {
		// Keep the client secret (first seen) and the newest refresh tokens.
		s.secrets = append(s.secrets[:1], s.secrets[len(s.secrets)-maxRefreshKept:]...)
	}
}

// RefreshToken returns the refresh token the next refresh will use ("" for
// client_credentials): what replicas sharing renewals publish.
func (s *Source) RefreshToken() string {
	s.fetchMu.Lock()
	defer s.fetchMu.Unlock()
	return s.refresh
}

// AdoptRefreshToken makes rt, which a peer replica's renewal obtained (issue
// 11), the refresh token the next refresh uses. The configured refresh
// token still wins when it changes at its source.
func (s *Source) AdoptRefreshToken(rt string) {
	if rt == "" || s.grant != authmap.GrantRefreshToken {
		return
	}
	s.fetchMu.Lock()
	defer s.fetchMu.Unlock()
	if rt != s.refresh {
		if s.refresh != "" {
			s.rotates = true
		}
		s.refresh, s.adopted = rt, true
		s.remember(rt)
	}
}

// RotatesRefreshTokens reports whether the provider was seen handing back a
// new refresh token with a renewal.
func (s *Source) RotatesRefreshTokens() bool {
	s.fetchMu.Lock()
	defer s.fetchMu.Unlock()
	return s.rotates
}

// Fetch requests a new access token.
func (s *Source) Fetch(ctx context.Context) (authmap.Token, error) {
	s.fetchMu.Lock()
	defer s.fetchMu.Unlock()
	secret, err := authmap.FetchSecret(ctx, s.clientSecret)
	if err != nil {
		return authmap.Token{}, fmt.Errorf("oauth2 %s: reading the client secret: %w", s.cfg.TokenURL, err)
	}
	s.remember(secret)
	s.usedSecret = secret
	ctx = context.WithValue(ctx, oauth2.HTTPClient, s.client)
	var tok *oauth2.Token
	switch s.grant {
	case authmap.GrantClientCredentials:
		s.cc.ClientSecret = secret
		tok, err = s.cc.Token(ctx)
	default:
		if err := s.readRefreshToken(ctx); err != nil {
			return authmap.Token{}, err
		}
		s.oc.ClientSecret = secret
		// A token with no access token is invalid, so the token source refreshes.
		tok, err = s.oc.TokenSource(ctx, &oauth2.Token{RefreshToken: s.refresh}).Token()
	}
	if err != nil {
		return authmap.Token{}, s.mapError(err, secret)
	}
	if tok.AccessToken == "" {
		return authmap.Token{}, fmt.Errorf("oauth2 %s: the token endpoint returned no access token: %w", s.cfg.TokenURL, authmap.ErrMissing)
	}
	if tok.RefreshToken != "" && tok.RefreshToken != s.refresh && s.grant == authmap.GrantRefreshToken {
		s.refresh, s.rotates = tok.RefreshToken, true
		s.remember(tok.RefreshToken)
	}
	out := authmap.Token{Value: tok.AccessToken, ExpiresAt: tok.Expiry, Renewable: true}
	if sc, ok := tok.Extra("scope").(string); ok && sc != "" {
		out.Scopes = strings.Fields(sc)
	}
	return out, nil
}

// GrantChanged reports whether the configured refresh token or client
// secret changed at its source since the last Fetch (authmap.GrantChanger).
func (s *Source) GrantChanged(ctx context.Context) bool {
	s.fetchMu.Lock()
	configured, used := s.configured, s.usedSecret
	s.fetchMu.Unlock()
	if s.refreshSrc != nil {
		if rt, err := authmap.FetchSecret(ctx, s.refreshSrc); err == nil && rt != configured {
			return true
		}
	}
	if s.clientSecret != nil && used != "" {
		if cs, err := authmap.FetchSecret(ctx, s.clientSecret); err == nil && cs != used {
			return true
		}
	}
	return false
}

// readRefreshToken re-reads the configured refresh token; a value that
// changed at its source replaces the one kept from the last rotation.
func (s *Source) readRefreshToken(ctx context.Context) error {
	rt, err := authmap.FetchSecret(ctx, s.refreshSrc)
	switch {
	case err != nil && s.refresh == "":
		return fmt.Errorf("oauth2 %s: reading the refresh token: %w", s.cfg.TokenURL, err)
	case err != nil:
		return nil // keep using the newest one we hold
	case rt != s.configured && s.configured == "" && s.adopted:
		// The first read after a peer's token set was adopted: the
		// configured token is the one the peers' chain started from, and
		// the adopted one is newer.
		s.configured = rt
		s.remember(rt)
	case rt != s.configured:
		s.configured, s.refresh = rt, rt
		s.remember(rt)
	}
	return nil
}

func (s *Source) mapError(err error, secret string) error {
	known := append([]string{secret}, s.refresh)
	var re *oauth2.RetrieveError
	if !errors.As(err, &re) {
		return fmt.Errorf("oauth2 %s: %s", s.cfg.TokenURL, authmap.Redact(err.Error(), known))
	}
	status := 0
	if re.Response != nil {
		status = re.Response.StatusCode
	}
	desc := authmap.Redact(re.ErrorDescription, known)
	msg := fmt.Sprintf("oauth2 %s: the token endpoint answered %d %s", s.cfg.TokenURL, status, re.ErrorCode)
	if desc != "" {
		msg += ": " + desc
	}
	switch re.ErrorCode {
	case "invalid_grant":
		if s.grant == authmap.GrantRefreshToken {
			return fmt.Errorf("%s: %w", msg, authmap.ErrRefreshRejected)
		}
		return fmt.Errorf("%s: %w", msg, authmap.ErrClientRejected)
	case "invalid_client", "unauthorized_client", "invalid_scope":
		return fmt.Errorf("%s: %w", msg, authmap.ErrClientRejected)
	case "":
		if status == http.StatusUnauthorized {
			return fmt.Errorf("%s: %w", msg, authmap.ErrClientRejected)
		}
	}
	return errors.New(msg)
}
