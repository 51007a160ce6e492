// Package vault is the credential source that reads a HashiCorp Vault KV v2
// secret (config key credentials.<name>.source.vault) through
// github.com/hashicorp/vault/api. The value is data.data[field]; its version
// (data.metadata.version) is the token's version, and an expires_at in the
// secret's custom metadata (RFC 3339) its expiry.
//
// Errors wrap authmap's sentinels: a 401 or 403 is a [TokenError] (the Vault
// token was refused: [authmap.ErrDenied]); a secret, version or field that
// does not exist is [authmap.ErrMissing]; anything else is transient.
package vault

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/credgate/credgate/authmap"
	vaultapi "github.com/hashicorp/vault/api"
)

// Options configure a Source. A nil *Options is the same as the zero value.
type Options struct {
	// Sources builds the source of the Vault token (vault.token).
	Sources *authmap.SourceOptions
	// HTTPClient talks to Vault. If nil, Vault's default client (which reads
	// VAULT_CACERT and the other TLS variables).
	HTTPClient *http.Client
	// MaxRetries is how often a request answered 5xx or 429, or not
	// answered, is retried. If zero, Vault's default (2); negative: none.
	MaxRetries int
}

// Source reads a KV v2 secret.
type Source struct {
	cfg    authmap.VaultConfig
	token  authmap.Source
	client *vaultapi.Client

	mu       sync.Mutex
	tokenVal string // the last Vault token read, for redaction
}

// Open is the [authmap.OpenFunc] of vault sources.
func Open(key string, cfg authmap.SourceConfig, opts *authmap.SourceOptions) (authmap.Source, error) {
	if cfg.Vault == nil {
		return nil, fmt.Errorf("%s.vault: not set", key)
	}
	var hc *http.Client
	if opts != nil {
		hc = opts.HTTPClient
	}
	return New(key+".vault", *cfg.Vault, &Options{Sources: opts, HTTPClient: hc})
}

// New returns the source cfg describes; key is its config path for errors.
// It does no I/O.
func New(key string, cfg authmap.VaultConfig, opts *Options) (*Source, error) {
	if opts == nil {
		opts = &Options{}
	}
	if cfg.Mount == "" {
		cfg.Mount = authmap.DefaultVaultMount
	}
	cfg.Mount = strings.Trim(cfg.Mount, "/")
	cfg.Path = strings.Trim(cfg.Path, "/")
	token, err := cfg.Token.Open(key+".token", opts.Sources)
	if err != nil {
		return nil, err
	}
	if token == nil {
		return nil, fmt.Errorf("%s.token: required", key)
	}
	vc := vaultapi.DefaultConfig()
	if vc.Error != nil {
		return nil, fmt.Errorf("%s: %w", key, vc.Error)
	}
	vc.Address = cfg.Address
	if opts.HTTPClient != nil {
		vc.HttpClient = opts.HTTPClient
	}
	switch {
	case opts.MaxRetries < 0:
		vc.MaxRetries = 0
	case opts.MaxRetries > 0:
		vc.MaxRetries = opts.MaxRetries
	}
	client, err := vaultapi.NewClient(vc)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", key, err)
	}
	// NewClient picks up VAULT_TOKEN and VAULT_NAMESPACE; only the config counts here.
	client.ClearToken()
	client.ClearNamespace()
	if cfg.Namespace != "" {
		client.SetNamespace(cfg.Namespace)
	}
	return &Source{cfg: cfg, token: token, client: client}, nil
}

// Kind returns "vault".
func (s *Source) Kind() string { return authmap.KindVault }

// Secrets returns the Vault token, for redaction.
func (s *Source) Secrets() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.tokenVal == "" {
		return nil
	}
	return []string{s.tokenVal}
}

// TokenError is Vault refusing the token it was sent (401 or 403, "permission
// denied"): an auth failure of the Vault token, not of the credential read
// with it. It wraps [authmap.ErrDenied].
type TokenError struct {
	// Status is the HTTP status Vault answered.
	Status int
	// Path is the API path read (secret/data/mcp/github).
	Path string
	// Messages are Vault's error messages.
	Messages []string
}

func (e *TokenError) Error() string {
	msg := strings.Join(e.Messages, "; ")
	if msg == "" {
		msg = http.StatusText(e.Status)
	}
	return fmt.Sprintf("vault refused the token reading %s (%d %s)", e.Path, e.Status, msg)
}

// Unwrap returns [authmap.ErrDenied].
func (e *TokenError) Unwrap() error { return authmap.ErrDenied }

// Fetch reads the secret now: GET /v1/<mount>/data/<path> with the token in
// X-Vault-Token (read from its source each time, so a rotated Vault token is
// used at once) and the namespace in X-Vault-Namespace.
func (s *Source) Fetch(ctx context.Context) (authmap.Token, error) {
	where := s.cfg.Mount + "/data/" + s.cfg.Path
	token, err := authmap.FetchSecret(ctx, s.token)
	if err != nil {
		return authmap.Token{}, fmt.Errorf("vault %s: reading the Vault token: %w", where, err)
	}
	s.mu.Lock()
	s.tokenVal = token
	s.mu.Unlock()
	// A credential never overlaps its own fetches, so setting the token on
	// the shared client is safe (and the client locks it anyway).
	s.client.SetToken(token)
	sec, err := s.client.KVv2(s.cfg.Mount).Get(ctx, s.cfg.Path)
	if err != nil {
		return authmap.Token{}, s.mapError(where, err, token)
	}
	if sec.Data == nil {
		detail := "has no data"
		if m := sec.VersionMetadata; m != nil && !m.DeletionTime.IsZero() {
			detail = fmt.Sprintf("version %d was deleted", m.Version)
		}
		return authmap.Token{}, fmt.Errorf("vault %s %s: %w", where, detail, authmap.ErrMissing)
	}
	value, err := s.field(where, sec.Data)
	if err != nil {
		return authmap.Token{}, err
	}
	tok := authmap.Token{Value: value}
	if m := sec.VersionMetadata; m != nil && m.Version > 0 {
		tok.Version = strconv.Itoa(m.Version)
	}
	if v, ok := sec.CustomMetadata["expires_at"].(string); ok && v != "" {
		t, err := time.Parse(time.RFC3339, v)
		if err != nil {
			return authmap.Token{}, fmt.Errorf("vault %s: custom_metadata.expires_at %q is not RFC 3339", where, v)
		}
		tok.ExpiresAt = t
	}
	return tok, nil
}

func (s *Source) field(where string, data map[string]any) (string, error) {
	field := s.cfg.Field
	if field == "" {
		if len(data) != 1 {
			keys := make([]string, 0, len(data))
			for k := range data {
				keys = append(keys, k)
			}
			sort.Strings(keys)
			return "", fmt.Errorf("vault %s: set field: the secret has %d keys %v", where, len(keys), keys)
		}
		for k := range data {
			field = k
		}
	}
	v, ok := data[field]
	if !ok || v == nil {
		return "", fmt.Errorf("vault %s: no field %q: %w", where, field, authmap.ErrMissing)
	}
	str, ok := v.(string)
	if !ok {
		return "", fmt.Errorf("vault %s: field %q is not a string", where, field)
	}
	if strings.TrimSpace(str) == "" {
		return "", fmt.Errorf("vault %s: field %q is empty: %w", where, field, authmap.ErrMissing)
	}
	return strings.TrimSpace(str), nil
}

func (s *Source) mapError(where string, err error, token string) error {
	var re *vaultapi.ResponseError
	if errors.As(err, &re) {
		msgs := make([]string, 0, len(re.Errors))
		for _, m := range re.Errors {
			msgs = append(msgs, authmap.Redact(m, []string{token}))
		}
		switch re.StatusCode {
		case http.StatusUnauthorized, http.StatusForbidden:
			return &TokenError{Status: re.StatusCode, Path: where, Messages: msgs}
		case http.StatusNotFound:
			return fmt.Errorf("vault %s: not found: %w", where, authmap.ErrMissing)
		}
		return fmt.Errorf("vault %s: %d %s", where, re.StatusCode, strings.Join(msgs, "; "))
	}
	if errors.Is(err, vaultapi.ErrSecretNotFound) {
		return fmt.Errorf("vault %s: no such secret: %w", where, authmap.ErrMissing)
	}
	return fmt.Errorf("vault %s: %s", where, authmap.Redact(err.Error(), []string{token}))
}
