package vault

import (
	"context"
	"encoding/json"
	"errors"
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

const goodToken = "hvs.CAESIGoodVaultToken0123456789"

// fakeVault speaks Vault's KV v2 read API: GET /v1/<mount>/data/<path>,
// X-Vault-Token, X-Vault-Namespace, {"data": {"data": ..., "metadata": ...}},
// 403 {"errors": ["permission denied"]} on a bad token, 404 {"errors": []}.
type fakeVault struct {
	mu        sync.Mutex
	secrets   map[string]map[string]any // "<namespace>|<mount>/data/<path>" -> the response's data object
	status    int                       // if set, answer this with {"errors": ["boom"]}
	gotTokens []string
}

func (f *fakeVault) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	f.gotTokens = append(f.gotTokens, r.Header.Get("X-Vault-Token"))
	if r.Method != http.MethodGet || !strings.HasPrefix(r.URL.Path, "/v1/") {
		w.WriteHeader(http.StatusMethodNotAllowed)
		_, _ = w.Write([]byte(`{"errors":["unsupported"]}`))
		return
	}
	if f.status != 0 {
		w.WriteHeader(f.status)
		_, _ = w.Write([]byte(`{"errors":["boom"]}`))
		return
	}
	if r.Header.Get("X-Vault-Token") != goodToken {
		w.WriteHeader(http.StatusForbidden)
		_, _ = w.Write([]byte(`{"errors":["permission denied"]}`))
		return
	}
	key := r.Header.Get("X-Vault-Namespace") + "|" + strings.TrimPrefix(r.URL.Path, "/v1/")
	data, ok := f.secrets[key]
	if !ok {
		w.WriteHeader(http.StatusNotFound)
		_, _ = w.Write([]byte(`{"errors":[]}`))
		return
	}
	if md, _ := data["metadata"].(map[string]any); data["data"] == nil && md != nil && md["deletion_time"] != "" {
		w.WriteHeader(http.StatusNotFound) // Vault answers a deleted version 404 with its metadata
	}
	_ = json.NewEncoder(w).Encode(map[string]any{
		"request_id": "7f0b3b8e-0000-4000-8000-000000000000", "lease_id": "", "renewable": false, "lease_duration": 0,
		"data": data, "wrap_info": nil, "warnings": nil, "auth": nil,
	})
}

func kv(data map[string]any, version int, custom map[string]any) map[string]any {
	return map[string]any{
		"data": data,
		"metadata": map[string]any{
			"created_time": "2026-01-02T03:04:05.000000Z", "custom_metadata": custom,
			"deletion_time": "", "destroyed": false, "version": version,
		},
	}
}

func newFake(t *testing.T) (*fakeVault, *httptest.Server) {
	f := &fakeVault{secrets: map[string]map[string]any{
		"|secret/data/mcp/github": kv(map[string]any{"token": "ghp_FromVault0123456789abcdefghij"}, 2,
			map[string]any{"expires_at": "2027-01-01T00:00:00Z"}),
		"team-a|kv/data/svc/one":   kv(map[string]any{"api_key": "one-key-value"}, 7, nil),
		"|secret/data/multi":       kv(map[string]any{"a": "1", "b": "2"}, 1, nil),
		"|secret/data/empty-field": kv(map[string]any{"token": "  "}, 1, nil),
		"|secret/data/deleted": {"data": nil, "metadata": map[string]any{
			"created_time": "2026-01-02T03:04:05Z", "deletion_time": "2026-02-02T00:00:00Z", "destroyed": false, "version": 3}},
	}}
	srv := httptest.NewServer(f)
	t.Cleanup(srv.Close)
	return f, srv
}

// Regression test for issue 7 (Vault source): KV v2 through hashicorp/vault/api
// against a server speaking Vault's documented API.
func TestVaultSource(t *testing.T) {
	t.Parallel()
	_, srv := newFake(t)
	tests := []struct {
		name    string
		cfg     authmap.VaultConfig
		want    authmap.Token
		wantErr error  // errors.Is target
		errText string // a substring of the error
	}{
		{name: "field, version and custom expiry",
			cfg:  authmap.VaultConfig{Path: "mcp/github", Field: "token", Token: authmap.SecretRef{Value: goodToken}},
			want: authmap.Token{Value: "ghp_FromVault0123456789abcdefghij", Version: "2", ExpiresAt: time.Date(2027, 1, 1, 0, 0, 0, 0, time.UTC)}},
		{name: "namespace and mount, the only key",
			cfg:  authmap.VaultConfig{Mount: "/kv/", Path: "svc/one", Namespace: "team-a", Token: authmap.SecretRef{Value: goodToken}},
			want: authmap.Token{Value: "one-key-value", Version: "7"}},
		{name: "bad token is a TokenError",
			cfg:     authmap.VaultConfig{Path: "mcp/github", Field: "token", Token: authmap.SecretRef{Value: "hvs.WrongToken0123456789abcdef"}},
			wantErr: authmap.ErrDenied, errText: "vault refused the token reading secret/data/mcp/github (403 permission denied)"},
		{name: "no such secret",
			cfg:     authmap.VaultConfig{Path: "nope", Token: authmap.SecretRef{Value: goodToken}},
			wantErr: authmap.ErrMissing, errText: "secret/data/nope"},
		{name: "namespace matters",
			cfg:     authmap.VaultConfig{Mount: "kv", Path: "svc/one", Token: authmap.SecretRef{Value: goodToken}},
			wantErr: authmap.ErrMissing},
		{name: "deleted version",
			cfg:     authmap.VaultConfig{Path: "deleted", Field: "token", Token: authmap.SecretRef{Value: goodToken}},
			wantErr: authmap.ErrMissing, errText: "version 3 was deleted"},
		{name: "no such field",
			cfg:     authmap.VaultConfig{Path: "mcp/github", Field: "password", Token: authmap.SecretRef{Value: goodToken}},
			wantErr: authmap.ErrMissing, errText: `no field "password"`},
		{name: "empty field",
			cfg:     authmap.VaultConfig{Path: "empty-field", Field: "token", Token: authmap.SecretRef{Value: goodToken}},
			wantErr: authmap.ErrMissing},
		{name: "several keys need a field",
			cfg:     authmap.VaultConfig{Path: "multi", Token: authmap.SecretRef{Value: goodToken}},
			errText: "set field: the secret has 2 keys [a b]"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
			defer cancel()
			tt.cfg.Address = srv.URL
			src, err := New("credentials.v.source.vault", tt.cfg, &Options{MaxRetries: -1})
			if err != nil {
				t.Fatal(err)
			}
			got, err := src.Fetch(ctx)
			fetchtest.Check(t, got, err, tt.want, tt.wantErr, tt.errText, "hvs.") // no Vault token
		})
	}
}

func TestVaultTokenErrorIsTyped(t *testing.T) {
	t.Parallel()
	_, srv := newFake(t)
	src, err := New("k", authmap.VaultConfig{Address: srv.URL, Path: "mcp/github", Token: authmap.SecretRef{Value: "hvs.Bad"}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	_, err = src.Fetch(t.Context())
	var te *TokenError
	if !errors.As(err, &te) {
		t.Fatalf("error %v (%T) is not a *TokenError", err, err)
	}
	if diff := cmp.Diff(&TokenError{Status: 403, Path: "secret/data/mcp/github", Messages: []string{"permission denied"}}, te); diff != "" {
		t.Errorf("TokenError mismatch (-want +got):\n%s", diff)
	}
}

// The Vault token comes from its own source and is re-read at every fetch: a
// rotated token file is used at once, and both are redactable.
func TestVaultTokenFromFileIsReread(t *testing.T) {
	t.Parallel()
	f, srv := newFake(t)
	path := filepath.Join(t.TempDir(), "vault-token")
	if err := os.WriteFile(path, []byte("hvs.OldTokenNoLongerValid\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	src, err := New("k", authmap.VaultConfig{Address: srv.URL, Path: "mcp/github", Field: "token", Token: authmap.SecretRef{File: path}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := src.Fetch(t.Context()); !errors.Is(err, authmap.ErrDenied) {
		t.Fatalf("Fetch with the old token: %v, want ErrDenied", err)
	}
	if err := os.WriteFile(path, []byte(goodToken+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tok, err := src.Fetch(t.Context())
	if err != nil {
		t.Fatalf("Fetch with the new token: %v", err)
	}
	if tok.Version != "2" {
		t.Errorf("version %q, want 2", tok.Version)
	}
	if diff := cmp.Diff([]string{goodToken}, src.Secrets()); diff != "" {
		t.Errorf("Secrets mismatch (-want +got):\n%s", diff)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if diff := cmp.Diff([]string{"hvs.OldTokenNoLongerValid", goodToken}, f.gotTokens); diff != "" {
		t.Errorf("X-Vault-Token sent mismatch (-want +got):\n%s", diff)
	}
}

func TestVaultServerErrorIsTransient(t *testing.T) {
	t.Parallel()
	f, srv := newFake(t)
	f.status = http.StatusInternalServerError
	src, err := New("k", authmap.VaultConfig{Address: srv.URL, Path: "mcp/github", Token: authmap.SecretRef{Value: goodToken}}, &Options{MaxRetries: -1})
	if err != nil {
		t.Fatal(err)
	}
	_, err = src.Fetch(t.Context())
	if err == nil || errors.Is(err, authmap.ErrDenied) || errors.Is(err, authmap.ErrMissing) {
		t.Fatalf("Fetch: %v, want a transient error", err)
	}
	if !strings.Contains(err.Error(), "500 boom") {
		t.Errorf("error %q does not say 500 boom", err)
	}
}

// Open is what the gateway registers: it builds the vault source from a SourceConfig.
func TestVaultOpen(t *testing.T) {
	t.Parallel()
	_, srv := newFake(t)
	src, err := authmap.NewSource("credentials.v.source", authmap.SourceConfig{Vault: &authmap.VaultConfig{
		Address: srv.URL, Path: "mcp/github", Field: "token", Token: authmap.SecretRef{Env: "VT"}}},
		&authmap.SourceOptions{
			LookupEnv: func(k string) (string, bool) { return map[string]string{"VT": goodToken}[k], k == "VT" },
			Openers:   map[string]authmap.OpenFunc{authmap.KindVault: Open},
		})
	if err != nil {
		t.Fatal(err)
	}
	tok, err := src.Fetch(t.Context())
	if err != nil || tok.Value != "ghp_FromVault0123456789abcdefghij" {
		t.Fatalf("Fetch = %q, %v", tok.Value, err)
	}
}
