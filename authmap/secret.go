package authmap

import (
	"context"
	"fmt"
)

// SecretRef is a secret inside a source's own settings (a Vault token, an OAuth
// client secret or refresh token): in YAML, a source object ({env: VAULT_TOKEN},
// {file: /run/secrets/vault-token}, {exec: ...}, {vault: ...},
// {aws_secrets_manager: ...}, {value: ...}) or a plain string, which is the
// value itself.
//
// It decodes from either form with koanf's default unmarshalling: a mapping
// fills the fields, and a string goes through UnmarshalText (koanf's text
// unmarshaler hook, also in mapstructure's TextUnmarshallerHookFunc). A loader
// that checks keys strictly must accept a string where a SecretRef is wanted.
type SecretRef SourceConfig

// UnmarshalText makes a plain string the secret's value.
func (r *SecretRef) UnmarshalText(text []byte) error {
	*r = SecretRef{Value: string(text)}
	return nil
}

// String hides the secret from fmt's %v and %s: it names only the source's kind.
func (r SecretRef) String() string {
	if k := SourceConfig(r).Kind(); k != "" {
		return "secret(" + k + ")"
	}
	return "secret()"
}

// GoString hides the secret from fmt's %#v.
func (r SecretRef) GoString() string { return r.String() }

// IsZero reports whether no source is set.
func (r SecretRef) IsZero() bool { return len(SourceConfig(r).kinds()) == 0 }

// Validate checks r; key is its config path. An oauth2 source cannot hold a secret.
func (r SecretRef) Validate(key string) error {
	if r.OAuth2 != nil {
		return fmt.Errorf("%s.oauth2: an oauth2 source cannot hold a secret here", key)
	}
	return SourceConfig(r).Validate(key)
}

// Open builds the source the secret is read from; key is its config path.
// It returns nil, nil for a zero SecretRef (no secret configured).
func (r SecretRef) Open(key string, opts *SourceOptions) (Source, error) {
	if r.IsZero() {
		return nil, nil
	}
	return NewSource(key, SourceConfig(r), opts)
}

// FetchSecret reads a secret from src (nil: ""). An empty value is an error
// wrapping [ErrMissing].
func FetchSecret(ctx context.Context, src Source) (string, error) {
	if src == nil {
		return "", nil
	}
	tok, err := src.Fetch(ctx)
	if err != nil {
		return "", err
	}
	if tok.Value == "" {
		return "", fmt.Errorf("%s source resolved to an empty value: %w", src.Kind(), ErrMissing)
	}
	return tok.Value, nil
}
