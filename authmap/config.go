package authmap

import (
	"errors"
	"fmt"
	"net/url"
	"regexp"
	"sort"
	"strconv"
	"time"
)

// Lifecycle defaults (config keys lifecycle.*).
const (
	DefaultCheckInterval = 5 * time.Minute
	DefaultExpiryWarning = 60 * time.Minute
	DefaultRefreshBefore = 10 * time.Minute
	// DefaultExecTimeout bounds an exec source's command (source.exec.timeout).
	DefaultExecTimeout = 10 * time.Second
	// DefaultVaultMount is the KV v2 mount of a vault source (source.vault.mount).
	DefaultVaultMount = "secret"
)

// CredentialConfig is one entry of the config's credentials map (credentials.<name>).
type CredentialConfig struct {
	// Source says where the value comes from: exactly one kind must be set.
	Source SourceConfig `koanf:"source"`
	// Inject says how the value is sent upstream. If zero, an HTTP upstream gets
	// "Authorization: Bearer <value>"; a stdio upstream needs inject.env.
	Inject InjectConfig `koanf:"inject"`
	// ExpiresAt is when the value expires (RFC 3339). It wins over every other
	// source of expiry. If zero, the expiry comes from the source (OAuth
	// expires_in, exec or file JSON, Vault custom metadata), a JWT's exp claim,
	// or a provider header seen on a response; else it stays unknown.
	ExpiresAt time.Time `koanf:"expires_at"`
	// Probe is an optional cheap request that checks a value before it is used
	// (pre-flight) or adopted (rotation). If zero, a value is checked by the
	// first call that uses it.
	Probe ProbeConfig `koanf:"probe"`
}

// SourceConfig says where a credential's value comes from. Exactly one field is set.
type SourceConfig struct {
	// Env names an environment variable holding the value.
	Env string `koanf:"env"`
	// File is a path whose content (trimmed) is the value, or a JSON object
	// {"token": "...", "expires_at": "RFC 3339"}. The file is watched: an
	// in-place write, an atomic rename and a Kubernetes secret volume's
	// ..data symlink swap are all picked up.
	File string `koanf:"file"`
	// Exec runs a command whose stdout is the value.
	Exec *ExecConfig `koanf:"exec"`
	// Vault reads a HashiCorp Vault KV v2 secret.
	Vault *VaultConfig `koanf:"vault"`
	// AWSSecretsManager reads an AWS Secrets Manager secret.
	AWSSecretsManager *AWSSecretsManagerConfig `koanf:"aws_secrets_manager"`
	// OAuth2 obtains access tokens from an OAuth 2.0 token endpoint.
	OAuth2 *OAuth2Config `koanf:"oauth2"`
	// Value is the value itself, for development: `gateway check` scores it low.
	Value string `koanf:"value"`
}

// Source kinds, as returned by [SourceConfig.Kind] and [Source.Kind]. Each is
// the config key that selects it.
const (
	KindEnv               = "env"
	KindFile              = "file"
	KindExec              = "exec"
	KindVault             = "vault"
	KindAWSSecretsManager = "aws_secrets_manager"
	KindOAuth2            = "oauth2"
	KindValue             = "value"
)

// ExecConfig runs a command for the value (source.exec): the adapter for the
// aws, op, doppler, infisical and vault CLIs.
type ExecConfig struct {
	// Command is the program and its arguments (no shell).
	Command []string `koanf:"command"`
	// Timeout bounds one run; the command is killed when it passes. If zero,
	// defaults to 10s.
	Timeout time.Duration `koanf:"timeout"`
	// JSONField, if set, reads stdout as a JSON object and takes this field
	// (dots descend into nested objects: "data.token"). If empty, stdout is the
	// value, or a JSON object {"token": "...", "expires_at": "RFC 3339"}.
	JSONField string `koanf:"json_field"`
}

// VaultConfig reads a KV v2 secret (source.vault).
type VaultConfig struct {
	// Address is the Vault server, for example https://vault:8200.
	Address string `koanf:"address"`
	// Mount is the KV v2 mount path. If empty, defaults to "secret".
	Mount string `koanf:"mount"`
	// Path is the secret's path under the mount (GET /v1/<mount>/data/<path>).
	Path string `koanf:"path"`
	// Field is the key in the secret's data holding the value. If empty, the
	// secret must have exactly one key.
	Field string `koanf:"field"`
	// Token is the Vault token (required): a source object such as
	// {file: /var/run/secrets/vault-token} or a plain string.
	Token SecretRef `koanf:"token"`
	// Namespace is the Vault Enterprise namespace. If empty, none is sent.
	Namespace string `koanf:"namespace"`
}

// AWSSecretsManagerConfig reads a secret with the default AWS credential chain
// (source.aws_secrets_manager).
type AWSSecretsManagerConfig struct {
	// SecretID is the secret's name or ARN.
	SecretID string `koanf:"secret_id"`
	// Region is the secret's region. If empty, the region in an ARN secret_id,
	// else the SDK's default (AWS_REGION, the shared config).
	Region string `koanf:"region"`
	// Field, if set, reads the secret string as a JSON object and takes this
	// field. If empty, the whole secret string is the value.
	Field string `koanf:"field"`
}

// OAuth2 grant types (source.oauth2.grant_type).
const (
	GrantClientCredentials = "client_credentials"
	GrantRefreshToken      = "refresh_token"
)

// OAuth2Config obtains access tokens from a token endpoint (source.oauth2).
type OAuth2Config struct {
	// TokenURL is the authorization server's token endpoint.
	TokenURL string `koanf:"token_url"`
	// ClientID is the client's identifier.
	ClientID string `koanf:"client_id"`
	// ClientSecret is the client's secret (a source object or a plain string).
	// Required for client_credentials; if zero with refresh_token, the client is public.
	ClientSecret SecretRef `koanf:"client_secret"`
	// RefreshToken is the refresh token the refresh_token grant starts from. A
	// provider that rotates refresh tokens hands back a new one with each
	// access token: the newest is kept in memory, and a changed value at the
	// source (a human issued a new one) replaces it.
	RefreshToken SecretRef `koanf:"refresh_token"`
	// Scopes are requested with the token. If empty, none are requested.
	Scopes []string `koanf:"scopes"`
	// GrantType is client_credentials or refresh_token. If empty,
	// refresh_token when refresh_token is set, else client_credentials.
	GrantType string `koanf:"grant_type"`
}

// Grant returns the effective grant type.
func (c *OAuth2Config) Grant() string {
	switch {
	case c.GrantType != "":
		return c.GrantType
	case !c.RefreshToken.IsZero():
		return GrantRefreshToken
	}
	return GrantClientCredentials
}

// InjectConfig says how a value is sent upstream: in a request header (HTTP
// upstreams) or in an environment variable of the child (stdio upstreams).
type InjectConfig struct {
	// Header is the request header. If Header, Prefix and Env are all empty,
	// the value goes in Authorization with prefix "Bearer ".
	Header string `koanf:"header"`
	// Prefix is written before the value in the header ("Bearer ", "token ").
	// If empty, the value goes alone (or "Bearer " when Header is empty too).
	Prefix string `koanf:"prefix"`
	// Env is the child's environment variable (stdio upstreams).
	Env string `koanf:"env"`
}

// HeaderName returns the header and prefix the value is sent with, defaults
// applied. It returns ("", "") for an env injection.
func (c InjectConfig) HeaderName() (header, prefix string) {
	switch {
	case c.Env != "":
		return "", ""
	case c.Header == "" && c.Prefix == "":
		return "Authorization", "Bearer "
	case c.Header == "":
		return "Authorization", c.Prefix
	}
	return c.Header, c.Prefix
}

// ProbeConfig is a cheap check of a value: an HTTP request, or a read-only
// tool of the upstream (run by the gateway). At most one is set.
type ProbeConfig struct {
	// HTTP sends a GET with the value injected (inject.header, or a bearer
	// token for an env injection) and expects a status.
	HTTP *HTTPProbeConfig `koanf:"http"`
	// Tool is a cheap read-only tool of the upstream, called with Arguments.
	Tool string `koanf:"tool"`
	// Arguments are the tool's arguments. If nil, {} is sent.
	Arguments map[string]any `koanf:"arguments"`
}

// IsZero reports whether no probe is configured.
func (p ProbeConfig) IsZero() bool { return p.HTTP == nil && p.Tool == "" && p.Arguments == nil }

// HTTPProbeConfig is probe.http.
type HTTPProbeConfig struct {
	// URL is requested with GET.
	URL string `koanf:"url"`
	// Expect is the status a working value gets. If zero, defaults to 200.
	Expect int `koanf:"expect"`
}

// LifecycleConfig is the config's lifecycle section.
type LifecycleConfig struct {
	// CheckInterval is how often the expiry watch re-reads each credential's
	// remaining lifetime (and polls Vault and AWS sources for a new version).
	// If zero, defaults to 5m.
	CheckInterval time.Duration `koanf:"check_interval"`
	// ExpiryWarning: a credential the gateway cannot renew itself is
	// `expiring` once its remaining lifetime is under this. If zero, defaults
	// to 60m.
	ExpiryWarning time.Duration `koanf:"expiry_warning"`
	// RefreshBefore: a renewable credential (OAuth) is renewed this long
	// before it expires, or half way through its lifetime when that is
	// shorter; it is `expiring` only while that renewal keeps failing. If
	// zero, defaults to 10m.
	RefreshBefore time.Duration `koanf:"refresh_before"`
	// Startup decides whether bad credentials stop the gateway from starting.
	Startup StartupConfig `koanf:"startup"`
}

// WithDefaults returns c with zero fields set to their defaults.
func (c LifecycleConfig) WithDefaults() LifecycleConfig {
	if c.CheckInterval <= 0 {
		c.CheckInterval = DefaultCheckInterval
	}
	if c.ExpiryWarning <= 0 {
		c.ExpiryWarning = DefaultExpiryWarning
	}
	if c.RefreshBefore <= 0 {
		c.RefreshBefore = DefaultRefreshBefore
	}
	if c.Startup.FailOn == "" {
		c.Startup.FailOn = FailOnExpired
	}
	return c
}

// FailOn is lifecycle.startup.fail_on.
type FailOn string

// FailOn values.
const (
	// FailOnExpired refuses to start while any credential is missing,
	// invalid, revoked or expired (the default).
	FailOnExpired FailOn = "expired"
	// FailOnExpiring also refuses while any is expiring.
	FailOnExpiring FailOn = "expiring"
	// FailOnNever always starts, degraded.
	FailOnNever FailOn = "never"
)

func (f FailOn) String() string { return string(f) }

// StartupConfig is lifecycle.startup.
type StartupConfig struct {
	// FailOn is expired, expiring or never. If empty, defaults to expired.
	FailOn FailOn `koanf:"fail_on"`
}

// Refuses reports whether a credential in status st keeps the gateway from starting.
func (c StartupConfig) Refuses(st Status) bool {
	switch c.FailOn {
	case FailOnNever:
		return false
	case FailOnExpiring:
		if st == StatusExpiring {
			return true
		}
	}
	switch st {
	case StatusMissing, StatusInvalid, StatusRevoked, StatusExpired:
		return true
	}
	return false
}

var (
	reCredentialName = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]*$`)
	reEnvName        = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)
	reHeaderName     = regexp.MustCompile("^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
)

// ValidName reports whether name is a valid credential name ([a-z0-9][a-z0-9_-]*).
func ValidName(name string) bool { return reCredentialName.MatchString(name) }

// ValidateCredentials checks a credentials map (config key credentials): every
// name and every entry. It returns every problem at once, each naming its key.
func ValidateCredentials(creds map[string]CredentialConfig) error {
	names := make([]string, 0, len(creds))
	for n := range creds {
		names = append(names, n)
	}
	sort.Strings(names)
	var errs []error
	for _, n := range names {
		key := "credentials." + n
		if !ValidName(n) {
			errs = append(errs, fmt.Errorf("%s: invalid name %q: want [a-z0-9][a-z0-9_-]*", key, n))
		}
		errs = append(errs, creds[n].Validate(key))
	}
	return errors.Join(errs...)
}

// Validate checks c; key is its config path (credentials.<name>).
func (c CredentialConfig) Validate(key string) error {
	return errors.Join(
		c.Source.Validate(key+".source"),
		c.Inject.Validate(key+".inject"),
		c.Probe.Validate(key+".probe"),
	)
}

// Kind returns the kind of source set ("" if none). With several set, the first in
// the order env, file, exec, vault, aws_secrets_manager, oauth2, value.
func (s SourceConfig) Kind() string {
	if k := s.kinds(); len(k) > 0 {
		return k[0]
	}
	return ""
}

func (s SourceConfig) kinds() []string {
	var k []string
	if s.Env != "" {
		k = append(k, KindEnv)
	}
	if s.File != "" {
		k = append(k, KindFile)
	}
	if s.Exec != nil {
		k = append(k, KindExec)
	}
	if s.Vault != nil {
		k = append(k, KindVault)
	}
	if s.AWSSecretsManager != nil {
		k = append(k, KindAWSSecretsManager)
	}
	if s.OAuth2 != nil {
		k = append(k, KindOAuth2)
	}
	if s.Value != "" {
		k = append(k, KindValue)
	}
	return k
}

// Validate checks s; key is its config path (credentials.<name>.source).
func (s SourceConfig) Validate(key string) error {
	kinds := s.kinds()
	if len(kinds) != 1 {
		msg := fmt.Sprintf("%s: set exactly one of env, file, exec, vault, aws_secrets_manager, oauth2, value", key)
		if len(kinds) > 1 {
			msg += fmt.Sprintf(" (got %v)", kinds)
		}
		return errors.New(msg)
	}
	var errs []error
	switch kinds[0] {
	case KindEnv:
		if !reEnvName.MatchString(s.Env) {
			errs = append(errs, fmt.Errorf("%s.env: invalid variable name %q", key, s.Env))
		}
	case KindExec:
		errs = append(errs, s.Exec.validate(key+".exec"))
	case KindVault:
		errs = append(errs, s.Vault.validate(key+".vault"))
	case KindAWSSecretsManager:
		if s.AWSSecretsManager.SecretID == "" {
			errs = append(errs, fmt.Errorf("%s.aws_secrets_manager.secret_id: required", key))
		}
	case KindOAuth2:
		errs = append(errs, s.OAuth2.validate(key+".oauth2"))
	}
	return errors.Join(errs...)
}

func (e *ExecConfig) validate(key string) error {
	var errs []error
	if len(e.Command) == 0 || e.Command[0] == "" {
		errs = append(errs, fmt.Errorf("%s.command: required (the program and its arguments)", key))
	}
	if e.Timeout < 0 {
		errs = append(errs, fmt.Errorf("%s.timeout: must not be negative", key))
	}
	return errors.Join(errs...)
}

func (v *VaultConfig) validate(key string) error {
	var errs []error
	if err := checkURL(v.Address); err != nil {
		errs = append(errs, fmt.Errorf("%s.address: %w", key, err))
	}
	if v.Path == "" {
		errs = append(errs, fmt.Errorf("%s.path: required", key))
	}
	if v.Token.IsZero() {
		errs = append(errs, fmt.Errorf("%s.token: required (a plain string or a source such as {env: VAULT_TOKEN})", key))
	} else {
		errs = append(errs, v.Token.Validate(key+".token"))
	}
	return errors.Join(errs...)
}

func (o *OAuth2Config) validate(key string) error {
	var errs []error
	if err := checkURL(o.TokenURL); err != nil {
		errs = append(errs, fmt.Errorf("%s.token_url: %w", key, err))
	}
	if o.ClientID == "" {
		errs = append(errs, fmt.Errorf("%s.client_id: required", key))
	}
	switch o.Grant() {
	case GrantClientCredentials:
		if o.ClientSecret.IsZero() {
			errs = append(errs, fmt.Errorf("%s.client_secret: required for grant_type client_credentials", key))
		}
	case GrantRefreshToken:
		if o.RefreshToken.IsZero() {
			errs = append(errs, fmt.Errorf("%s.refresh_token: required for grant_type refresh_token", key))
		}
	default:
		errs = append(errs, fmt.Errorf("%s.grant_type: %q is not client_credentials or refresh_token", key, o.GrantType))
	}
	if !o.ClientSecret.IsZero() {
		errs = append(errs, o.ClientSecret.Validate(key+".client_secret"))
	}
	if !o.RefreshToken.IsZero() {
		errs = append(errs, o.RefreshToken.Validate(key+".refresh_token"))
	}
	return errors.Join(errs...)
}

func checkURL(s string) error {
	if s == "" {
		return errors.New("required")
	}
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("%q is not an http(s) URL", s)
	}
	if why := BadPort(u); why != "" {
		return fmt.Errorf("%q: %s", s, why)
	}
	return nil
}

// BadPort says what is wrong with u's port, or "" when it has none or a
// valid one: url.Parse takes any digits, and the request fails only when
// it is sent (at start-up, or at the first alert).
func BadPort(u *url.URL) string {
	p := u.Port()
	if p == "" {
		return ""
	}
	if n, err := strconv.Atoi(p); err != nil || n < 1 || n > 65535 {
		return "invalid port " + p + ": want 1 to 65535"
	}
	return ""
}

// Validate checks c; key is its config path (credentials.<name>.inject).
func (c InjectConfig) Validate(key string) error {
	var errs []error
	if c.Env != "" && (c.Header != "" || c.Prefix != "") {
		errs = append(errs, fmt.Errorf("%s: set header (and prefix) or env, not both", key))
	}
	if c.Env != "" && !reEnvName.MatchString(c.Env) {
		errs = append(errs, fmt.Errorf("%s.env: invalid variable name %q", key, c.Env))
	}
	if c.Header != "" && !reHeaderName.MatchString(c.Header) {
		errs = append(errs, fmt.Errorf("%s.header: invalid header name %q", key, c.Header))
	}
	return errors.Join(errs...)
}

// Validate checks p; key is its config path (credentials.<name>.probe).
func (p ProbeConfig) Validate(key string) error {
	var errs []error
	if p.HTTP != nil && (p.Tool != "" || p.Arguments != nil) {
		errs = append(errs, fmt.Errorf("%s: set http or tool, not both", key))
	}
	if p.Arguments != nil && p.Tool == "" {
		errs = append(errs, fmt.Errorf("%s.arguments: set only with tool", key))
	}
	if p.HTTP != nil {
		if err := checkURL(p.HTTP.URL); err != nil {
			errs = append(errs, fmt.Errorf("%s.http.url: %w", key, err))
		}
		if p.HTTP.Expect != 0 && (p.HTTP.Expect < 100 || p.HTTP.Expect > 599) {
			errs = append(errs, fmt.Errorf("%s.http.expect: %d is not an HTTP status", key, p.HTTP.Expect))
		}
	}
	return errors.Join(errs...)
}

// Validate checks c; key is its config path (lifecycle).
func (c LifecycleConfig) Validate(key string) error {
	var errs []error
	for _, d := range []struct {
		name string
		v    time.Duration
	}{{"check_interval", c.CheckInterval}, {"expiry_warning", c.ExpiryWarning}, {"refresh_before", c.RefreshBefore}} {
		if d.v < 0 {
			errs = append(errs, fmt.Errorf("%s.%s: must not be negative", key, d.name))
		}
	}
	switch c.Startup.FailOn {
	case "", FailOnExpired, FailOnExpiring, FailOnNever:
	default:
		errs = append(errs, fmt.Errorf("%s.startup.fail_on: %q is not expired, expiring or never", key, c.Startup.FailOn))
	}
	return errors.Join(errs...)
}
