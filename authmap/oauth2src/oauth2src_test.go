package oauth2src

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/credgate/credgate/authmap"
	"github.com/credgate/credgate/authmap/internal/fetchtest"
	"github.com/google/go-cmp/cmp"
)

// tokenServer is an RFC 6749 token endpoint: client_credentials and
// refresh_token grants, client authentication by HTTP Basic or form
// parameters, rotating single-use refresh tokens, errors as
// {"error": "...", "error_description": "..."}.
type tokenServer struct {
	mu        sync.Mutex
	secret    string
	valid     map[string]bool // refresh tokens that may be used (once)
	revoked   bool            // the grant is revoked: every refresh is invalid_grant
	status    int             // if set, answer this with server_error
	n         int
	usedRTs   []string
	gotScopes []string
}

func (s *tokenServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	fail := func(status int, code, desc string) {
		w.WriteHeader(status)
		_ = json.NewEncoder(w).Encode(map[string]string{"error": code, "error_description": desc})
	}
	if s.status != 0 {
		fail(s.status, "server_error", "try later")
		return
	}
	if err := r.ParseForm(); err != nil || r.Method != http.MethodPost {
		fail(http.StatusBadRequest, "invalid_request", "POST a form")
		return
	}
	id, secret, ok := r.BasicAuth()
	if !ok {
		id, secret = r.PostForm.Get("client_id"), r.PostForm.Get("client_secret")
	}
	if id != "gw" || (s.secret != "" && secret != s.secret) {
		fail(http.StatusUnauthorized, "invalid_client", "client authentication failed")
		return
	}
	s.gotScopes = append(s.gotScopes, r.PostForm.Get("scope"))
	s.n++
	resp := map[string]any{"access_token": fmt.Sprintf("at-%d", s.n), "token_type": "Bearer", "expires_in": 300}
	switch r.PostForm.Get("grant_type") {
	case "client_credentials":
		resp["scope"] = r.PostForm.Get("scope")
	case "refresh_token":
		rt := r.PostForm.Get("refresh_token")
		s.usedRTs = append(s.usedRTs, rt)
		if s.revoked || !s.valid[rt] {
			fail(http.StatusBadRequest, "invalid_grant", "grant request is invalid")
			return
		}
		delete(s.valid, rt)
		next := fmt.Sprintf("rt-%d", s.n)
		s.valid[next] = true
		resp["refresh_token"] = next
	default:
		fail(http.StatusBadRequest, "unsupported_grant_type", "")
		return
	}
	_ = json.NewEncoder(w).Encode(resp)
}

func newServer(t *testing.T, secret string, refreshTokens ...string) (*tokenServer, *httptest.Server) {
	ts := &tokenServer{secret: secret, valid: map[string]bool{}}
	for _, rt := range refreshTokens {
		ts.valid[rt] = true
	}
	srv := httptest.NewServer(ts)
	t.Cleanup(srv.Close)
	return ts, srv
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// Regression test for issue 7 (OAuth source): client credentials, with the
// expiry from expires_in and the scopes granted.
func TestClientCredentials(t *testing.T) {
	t.Parallel()
	ts, srv := newServer(t, "client-secret-value")
	src, err := New("k", authmap.OAuth2Config{TokenURL: srv.URL, ClientID: "gw",
		ClientSecret: authmap.SecretRef{Value: "client-secret-value"}, Scopes: []string{"read", "write"}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	before := time.Now()
	tok, err := src.Fetch(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	if tok.Value != "at-1" || !tok.Renewable {
		t.Errorf("token %q renewable %v, want at-1, true", tok.Value, tok.Renewable)
	}
	if d := tok.ExpiresAt.Sub(before); d < 299*time.Second || d > 301*time.Second+time.Since(before) {
		t.Errorf("expiry %v after the request, want about 300s", d)
	}
	if diff := cmp.Diff([]string{"read", "write"}, tok.Scopes); diff != "" {
		t.Errorf("scopes mismatch (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"client-secret-value"}, src.Secrets()); diff != "" {
		t.Errorf("Secrets mismatch (-want +got):\n%s", diff)
	}
	ts.mu.Lock()
	defer ts.mu.Unlock()
	if diff := cmp.Diff([]string{"read write"}, ts.gotScopes); diff != "" {
		t.Errorf("scope parameter mismatch (-want +got):\n%s", diff)
	}
}

// Regression test for issue 7 (OAuth source): a provider that rotates
// refresh tokens gets the newest one each time; the old ones are never
// replayed (the provider would see reuse and revoke the grant).
func TestRefreshTokenRotation(t *testing.T) {
	t.Parallel()
	ts, srv := newServer(t, "", "rt-0")
	src, err := New("k", authmap.OAuth2Config{TokenURL: srv.URL, ClientID: "gw", RefreshToken: authmap.SecretRef{Value: "rt-0"}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for range 3 {
		tok, err := src.Fetch(ctxT(t))
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, tok.Value)
	}
	if diff := cmp.Diff([]string{"at-1", "at-2", "at-3"}, got); diff != "" {
		t.Errorf("access tokens mismatch (-want +got):\n%s", diff)
	}
	ts.mu.Lock()
	used := ts.usedRTs
	ts.mu.Unlock()
	if diff := cmp.Diff([]string{"rt-0", "rt-1", "rt-2"}, used); diff != "" {
		t.Errorf("refresh tokens sent mismatch (-want +got):\n%s", diff)
	}
	if src.RefreshToken() != "rt-3" {
		t.Errorf("RefreshToken = %q, want rt-3", src.RefreshToken())
	}
	if diff := cmp.Diff([]string{"rt-0", "rt-1", "rt-2", "rt-3"}, src.Secrets()); diff != "" {
		t.Errorf("Secrets mismatch (-want +got):\n%s", diff)
	}
}

// Regression test for issue 7 (OAuth source): a refresh answered
// invalid_grant is "refresh rejected", and a new refresh token put at its
// source by a person is picked up.
func TestRefreshRejectedThenReplaced(t *testing.T) {
	t.Parallel()
	ts, srv := newServer(t, "", "rt-0")
	path := filepath.Join(t.TempDir(), "refresh-token")
	if err := os.WriteFile(path, []byte("rt-0\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	src, err := New("k", authmap.OAuth2Config{TokenURL: srv.URL, ClientID: "gw", RefreshToken: authmap.SecretRef{File: path}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := src.Fetch(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	ts.mu.Lock()
	ts.revoked = true
	ts.mu.Unlock()
	_, err = src.Fetch(ctxT(t))
	if !errors.Is(err, authmap.ErrRefreshRejected) {
		t.Fatalf("Fetch after revocation: %v, want ErrRefreshRejected", err)
	}
	if want := "the token endpoint answered 400 invalid_grant: grant request is invalid"; !strings.Contains(err.Error(), want) {
		t.Errorf("error %q does not contain %q", err, want)
	}
	if src.GrantChanged(ctxT(t)) {
		t.Error("GrantChanged before the refresh token changed")
	}
	// A person issues a new grant and writes its refresh token: seen
	// without asking the provider (GrantChanged), then used.
	ts.mu.Lock()
	ts.revoked = false
	ts.valid["rt-human"] = true
	ts.mu.Unlock()
	if err := os.WriteFile(path, []byte("rt-human\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if !src.GrantChanged(ctxT(t)) {
		t.Error("GrantChanged missed the new refresh token")
	}
	if _, err := src.Fetch(ctxT(t)); err != nil {
		t.Fatalf("Fetch with the new refresh token: %v", err)
	}
}

func TestTokenEndpointErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		cfg     authmap.OAuth2Config
		status  int
		wantErr error
		errText string
	}{
		{name: "bad client secret", cfg: authmap.OAuth2Config{ClientID: "gw", ClientSecret: authmap.SecretRef{Value: "wrong-secret"}},
			wantErr: authmap.ErrClientRejected, errText: "401 invalid_client: client authentication failed"},
		{name: "unknown client", cfg: authmap.OAuth2Config{ClientID: "other", ClientSecret: authmap.SecretRef{Value: "s3cret-value"}},
			wantErr: authmap.ErrClientRejected},
		{name: "server error is transient", cfg: authmap.OAuth2Config{ClientID: "gw", ClientSecret: authmap.SecretRef{Value: "s3cret-value"}},
			status: 503, errText: "503 server_error: try later"},
		{name: "missing client secret", cfg: authmap.OAuth2Config{ClientID: "gw", ClientSecret: authmap.SecretRef{Env: "NOPE"}},
			wantErr: authmap.ErrMissing, errText: "reading the client secret: environment variable NOPE is not set"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			ts, srv := newServer(t, "s3cret-value")
			ts.status = tt.status
			tt.cfg.TokenURL = srv.URL
			src, err := New("k", tt.cfg, &authmap.SourceOptions{LookupEnv: func(string) (string, bool) { return "", false }})
			if err != nil {
				t.Fatal(err)
			}
			_, err = src.Fetch(ctxT(t))
			fetchtest.CheckErr(t, err, tt.wantErr, tt.errText, "secret-value") // no client secret
			if tt.wantErr == nil {
				for _, e := range []error{authmap.ErrClientRejected, authmap.ErrRefreshRejected, authmap.ErrMissing, authmap.ErrDenied} {
					if errors.Is(err, e) {
						t.Errorf("error %q is %v, want transient", err, e)
					}
				}
			}
		})
	}
}

// Regression test for issue 7 (refresh rejected -> revoked): a credential whose
// refresh is answered invalid_grant becomes revoked, tells the classifier
// (Knowledge.RefreshRejected), is not renewed again automatically nor after a
// live rejection, and raises the revoked event once.
func TestCredentialRevokedByRejectedRefresh(t *testing.T) {
	t.Parallel()
	ts, srv := newServer(t, "", "rt-0")
	var mu sync.Mutex
	var events []authmap.EventKind
	cfg := authmap.CredentialConfig{Source: authmap.SourceConfig{OAuth2: &authmap.OAuth2Config{
		TokenURL: srv.URL, ClientID: "gw", RefreshToken: authmap.SecretRef{Value: "rt-0"}}}}
	set := authmap.NewSet(&authmap.SetOptions{
		Sources: &authmap.SourceOptions{Openers: map[string]authmap.OpenFunc{authmap.KindOAuth2: Open}},
		OnEvent: func(e authmap.Event) {
			mu.Lock()
			events = append(events, e.Kind)
			mu.Unlock()
		},
	})
	if err := set.Apply(authmap.LifecycleConfig{}, map[string]authmap.CredentialConfig{"idp": cfg}); err != nil {
		t.Fatal(err)
	}
	if err := set.Load(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	c := set.Get("idp")
	if c.Value() != "at-1" || c.Status() != authmap.StatusHealthy || !c.Knowledge().Renewable {
		t.Fatalf("after load: value %q status %v renewable %v", c.Value(), c.Status(), c.Knowledge().Renewable)
	}
	ts.mu.Lock()
	ts.revoked = true
	ts.mu.Unlock()
	if changed := c.RenewAfterRejection(ctxT(t), "at-1"); changed {
		t.Fatal("RenewAfterRejection reported a change after invalid_grant")
	}
	if c.Status() != authmap.StatusRevoked || !c.Knowledge().RefreshRejected {
		t.Errorf("status %v, RefreshRejected %v; want revoked, true", c.Status(), c.Knowledge().RefreshRejected)
	}
	snap := c.Snapshot(false)
	if snap.LastError == nil || snap.LastError.Subtype != authmap.SubtypeCredentialRevoked || snap.LastError.Recovery != authmap.RecoveryReauthorize {
		t.Errorf("last error %+v, want credential_revoked / reauthorize", snap.LastError)
	}
	// No loop: neither the refresh path nor another rejection asks the endpoint again.
	if _, err := c.Renew(ctxT(t), authmap.TriggerRefresh); err == nil {
		t.Error("automatic Renew after invalid_grant succeeded")
	}
	c.RenewAfterRejection(ctxT(t), "at-1")
	ts.mu.Lock()
	requests := len(ts.usedRTs)
	ts.mu.Unlock()
	if requests != 2 {
		t.Errorf("token endpoint got %d refreshes, want 2 (load, one rejected)", requests)
	}
	mu.Lock()
	defer mu.Unlock()
	if diff := cmp.Diff([]authmap.EventKind{authmap.EventLoaded, authmap.EventRevoked}, events); diff != "" {
		t.Errorf("events mismatch (-want +got):\n%s", diff)
	}
}
