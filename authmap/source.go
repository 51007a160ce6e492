package authmap

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"
)

// Token is what a source resolved: the value and what the source knows about it.
type Token struct {
	// Value is the secret. Never empty when Fetch returns no error.
	Value string
	// ExpiresAt is when the value expires, if the source says (OAuth
	// expires_in, exec or file JSON expires_at, Vault custom metadata
	// expires_at). If zero, unknown to the source.
	ExpiresAt time.Time
	// Version identifies the value at the source (Vault's version, AWS's
	// VersionId). If empty, the source has no versions.
	Version string
	// Renewable says the source mints a new value on demand (OAuth): the
	// credential is renewed before it expires and after a rejection.
	Renewable bool
	// RotationAt is when the source will rotate the value itself (AWS
	// NextRotationDate). If zero, no rotation is scheduled.
	RotationAt time.Time
	// RotationPending says a new version is staged but not yet current (AWS
	// AWSPENDING): a rotation is under way.
	RotationPending bool
	// Scopes are the scopes granted with the value, when the provider says
	// (OAuth scope). If nil, unknown.
	Scopes []string
}

// Source produces a credential's value. Fetch may be called concurrently
// with itself only for different credentials; a Credential never overlaps its
// own fetches.
type Source interface {
	// Kind is the source's config key: env, file, exec, vault,
	// aws_secrets_manager, oauth2 or value.
	Kind() string
	// Fetch resolves the value now. Errors wrap [ErrMissing], [ErrDenied],
	// [ErrRefreshRejected] or [ErrClientRejected] when they mean one of those;
	// any other error is transient (the source could not be reached). Errors
	// never contain the value.
	Fetch(ctx context.Context) (Token, error)
}

// GrantChanger is a Source whose own secret (an OAuth source's refresh
// token, its client secret) is read from a source of its own: GrantChanged
// reports whether that secret changed since the last Fetch, without asking
// the provider, so that a grant the provider rejected is tried again once
// an operator put a new one there.
type GrantChanger interface {
	GrantChanged(ctx context.Context) bool
}

// Watcher is a Source that can tell when its value may have changed (the file
// source). Watch blocks until ctx is done, calling onChange (never
// concurrently) after each change; it returns a non-nil error only when it
// cannot watch at all.
type Watcher interface {
	Watch(ctx context.Context, onChange func()) error
}

// SecretHolder is a Source that holds secrets of its own (an OAuth client
// secret and refresh tokens, a Vault token): they are redacted like the value.
type SecretHolder interface {
	Secrets() []string
}

// Errors a source's Fetch wraps.
var (
	// ErrMissing: the source resolved to nothing or to an empty value (an
	// unset variable, an empty file, a secret or field that does not exist).
	// The credential is `missing`; an empty value is never sent.
	ErrMissing = errors.New("credential missing")
	// ErrDenied: the source refused access with its own credential (Vault
	// answered 403 to its token, AWS AccessDeniedException). The credential
	// cannot be read; a value read before is kept.
	ErrDenied = errors.New("source denied access")
	// ErrRefreshRejected: the token endpoint answered a refresh with
	// invalid_grant. The credential is `revoked` and is not renewed again until
	// something changes (a reload, a rotation, an admin or webhook trigger):
	// a revocation does not heal itself.
	ErrRefreshRejected = errors.New("refresh rejected")
	// ErrClientRejected: the token endpoint rejected the OAuth client itself
	// (invalid_client, unauthorized_client, invalid_scope). The credential is
	// `invalid` and, like a rejected refresh, not retried in a loop.
	ErrClientRejected = errors.New("client rejected")
	// ErrBadValue: the source's value cannot be sent the way the credential
	// is injected (a line break or other control character in a value sent
	// as a header, a NUL byte in an environment variable). Without a value
	// before it, the credential is `invalid`; one read before is kept.
	ErrBadValue = errors.New("value cannot be sent")
)

// OpenFunc builds a source of one kind from its config; key is the config
// path of the source (credentials.<name>.source) for errors. The vault,
// awssm and oauth2src packages each export one as Open.
type OpenFunc func(key string, cfg SourceConfig, opts *SourceOptions) (Source, error)

// SourceOptions are what building sources needs from the process. A nil
// *SourceOptions is the same as the zero value.
type SourceOptions struct {
	// LookupEnv reads environment variables for env sources. If nil, os.LookupEnv.
	LookupEnv func(string) (string, bool)
	// Openers build the kinds this package does not implement itself, keyed
	// by kind: KindVault (vault.Open), KindAWSSecretsManager (awssm.Open),
	// KindOAuth2 (oauth2src.Open). If one of those has none, a source of that
	// kind is a configuration error. An opener for a built-in kind (env,
	// file, exec, value) replaces it.
	Openers map[string]OpenFunc
	// HTTPClient is used by sources that speak HTTP (Vault, OAuth). If nil,
	// each uses its own default client with timeouts.
	HTTPClient *http.Client
}

func (o *SourceOptions) lookupEnv() func(string) (string, bool) {
	if o == nil || o.LookupEnv == nil {
		return os.LookupEnv
	}
	return o.LookupEnv
}

// NewSource builds the source cfg describes; key is its config path
// (credentials.<name>.source). It does no I/O: errors are configuration errors.
func NewSource(key string, cfg SourceConfig, opts *SourceOptions) (Source, error) {
	if err := cfg.Validate(key); err != nil {
		return nil, err
	}
	k := cfg.Kind()
	if opts != nil && opts.Openers[k] != nil {
		return opts.Openers[k](key, cfg, opts)
	}
	switch k {
	case KindEnv:
		return &envSource{name: cfg.Env, lookup: opts.lookupEnv()}, nil
	case KindValue:
		return valueSource(cfg.Value), nil
	case KindFile:
		return NewFileSource(cfg.File), nil
	case KindExec:
		return NewExecSource(*cfg.Exec), nil
	}
	return nil, fmt.Errorf("%s.%s: this build cannot open %s sources", key, k, k)
}

type envSource struct {
	name   string
	lookup func(string) (string, bool)
}

func (s *envSource) Kind() string { return KindEnv }

func (s *envSource) Fetch(context.Context) (Token, error) {
	v, ok := s.lookup(s.name)
	if !ok {
		return Token{}, fmt.Errorf("environment variable %s is not set: %w", s.name, ErrMissing)
	}
	if v = strings.TrimSpace(v); v == "" {
		return Token{}, fmt.Errorf("environment variable %s is empty: %w", s.name, ErrMissing)
	}
	return Token{Value: v}, nil
}

type valueSource string

func (valueSource) Kind() string { return KindValue }

func (s valueSource) Fetch(context.Context) (Token, error) {
	if strings.TrimSpace(string(s)) == "" {
		return Token{}, fmt.Errorf("value is empty: %w", ErrMissing)
	}
	return Token{Value: string(s)}, nil
}

// parseTokenText reads what a file or a command produced: a JSON object
// {"token": "...", "expires_at": ...} or, when it is not one, the trimmed
// text. With field set, the text must be a JSON object and field (dots descend)
// is the value. what names the origin in errors.
func parseTokenText(data []byte, field, what string) (Token, error) {
	text := strings.TrimSpace(string(data))
	if field != "" {
		var obj map[string]any
		if err := json.Unmarshal([]byte(text), &obj); err != nil {
			return Token{}, fmt.Errorf("%s: json_field %q: output is not a JSON object", what, field)
		}
		v, err := jsonField(obj, field)
		if err != nil {
			return Token{}, fmt.Errorf("%s: %w", what, err)
		}
		// The field may itself hold {"token", "expires_at"}; any other text is the value.
		if strings.HasPrefix(strings.TrimSpace(v), "{") {
			if tok, err := parseTokenText([]byte(v), "", what); err == nil {
				return tok, nil
			}
		}
		tok := Token{Value: strings.TrimSpace(v)}
		// An expires_at beside the field, or at the top, is the value's
		// ({"data":{"tok":"...","expires_at":...}}): it was dropped, and the
		// credential's lifetime was unknown.
		if raw := siblingExpiry(obj, field); raw != nil {
			t, err := parseExpiresAt(raw)
			if err != nil {
				return Token{}, fmt.Errorf("%s: expires_at next to json_field %q: %w", what, field, err)
			}
			tok.ExpiresAt = t
		}
		return tok, nil
	}
	if text == "" {
		return Token{}, fmt.Errorf("%s is empty: %w", what, ErrMissing)
	}
	if !strings.HasPrefix(text, "{") {
		return Token{Value: text}, nil
	}
	var doc struct {
		Token     *string         `json:"token"`
		ExpiresAt json.RawMessage `json:"expires_at"`
	}
	if err := json.Unmarshal([]byte(text), &doc); err != nil {
		// Not a JSON object after all: most likely one written part way.
		// The parser's message is left out: it may quote the text.
		where := ""
		var se *json.SyntaxError
		if errors.As(err, &se) {
			where = fmt.Sprintf(" at byte %d", se.Offset)
		}
		return Token{}, fmt.Errorf("%s: starts as a JSON object but is not valid JSON (cut short, or malformed%s)", what, where)
	}
	if doc.Token == nil {
		// A JSON object without a token field: the object is not ours to read.
		return Token{}, fmt.Errorf("%s: a JSON object without a \"token\" field (set json_field to pick one)", what)
	}
	tok := Token{Value: strings.TrimSpace(*doc.Token)}
	if tok.Value == "" {
		return Token{}, fmt.Errorf("%s: token is empty: %w", what, ErrMissing)
	}
	if len(doc.ExpiresAt) > 0 && string(doc.ExpiresAt) != "null" {
		t, err := parseExpiresAt(doc.ExpiresAt)
		if err != nil {
			return Token{}, fmt.Errorf("%s: expires_at: %w", what, err)
		}
		tok.ExpiresAt = t
	}
	return tok, nil
}

// parseExpiresAt reads an RFC 3339 string or Unix seconds.
func parseExpiresAt(raw json.RawMessage) (time.Time, error) {
	var s string
	if json.Unmarshal(raw, &s) == nil {
		if s == "" {
			return time.Time{}, nil
		}
		t, err := time.Parse(time.RFC3339, s)
		if err != nil {
			return time.Time{}, fmt.Errorf("%q is not RFC 3339", s)
		}
		return t, nil
	}
	var n float64
	if json.Unmarshal(raw, &n) == nil && n > 0 {
		return time.Unix(int64(n), 0), nil
	}
	return time.Time{}, errors.New("want an RFC 3339 string or Unix seconds")
}

// siblingExpiry returns the expires_at of the object holding field (a
// dotted path in obj), or else of obj itself, encoded; nil if neither has
// one.
func siblingExpiry(obj map[string]any, field string) json.RawMessage {
	var found any
	if i := strings.LastIndexByte(field, '.'); i > 0 {
		if v, err := descend(obj, field[:i]); err == nil {
			if parent, ok := asObject(v); ok {
				found = parent["expires_at"]
			}
		}
	}
	if found == nil {
		found = obj["expires_at"]
	}
	if found == nil {
		return nil
	}
	raw, err := json.Marshal(found)
	if err != nil {
		return nil
	}
	return raw
}

// descend returns what path (dotted) names in obj, reading a string that
// holds a JSON object (the AWS CLI's SecretString) as that object.
func descend(obj map[string]any, path string) (any, error) {
	var cur any = obj
	for _, part := range strings.Split(path, ".") {
		m, ok := asObject(cur)
		if !ok {
			return nil, fmt.Errorf("json_field %q: %w", path, ErrMissing)
		}
		if cur, ok = m[part]; !ok {
			return nil, fmt.Errorf("json_field %q: no such field: %w", path, ErrMissing)
		}
	}
	return cur, nil
}

// asObject returns v as a JSON object, if it is one or a string holding one.
func asObject(v any) (map[string]any, bool) {
	if s, ok := v.(string); ok {
		var inner map[string]any
		if json.Unmarshal([]byte(s), &inner) == nil {
			v = inner
		}
	}
	m, ok := v.(map[string]any)
	return m, ok
}

func jsonField(obj map[string]any, field string) (string, error) {
	cur, err := descend(obj, field)
	if err != nil {
		return "", err
	}
	switch v := cur.(type) {
	case string:
		if strings.TrimSpace(v) == "" {
			return "", fmt.Errorf("json_field %q is empty: %w", field, ErrMissing)
		}
		return v, nil
	case float64:
		return strconv.FormatFloat(v, 'f', -1, 64), nil
	case nil:
		return "", fmt.Errorf("json_field %q is null: %w", field, ErrMissing)
	}
	return "", fmt.Errorf("json_field %q is not a string", field)
}
