package authmap

import (
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/knadh/koanf/parsers/yaml"
	"github.com/knadh/koanf/providers/rawbytes"
	"github.com/knadh/koanf/v2"
)

// decodeYAML decodes YAML the way the gateway's loader does (koanf, tag koanf, default decoder).
func decodeYAML(t *testing.T, doc string, out any) {
	t.Helper()
	k := koanf.New(".")
	if err := k.Load(rawbytes.Provider([]byte(doc)), yaml.Parser()); err != nil {
		t.Fatalf("load: %v", err)
	}
	if err := k.UnmarshalWithConf("", out, koanf.UnmarshalConf{Tag: "koanf"}); err != nil {
		t.Fatalf("unmarshal: %v", err)
	}
}

type testConfig struct {
	Credentials map[string]CredentialConfig `koanf:"credentials"`
	Lifecycle   LifecycleConfig             `koanf:"lifecycle"`
}

// Regression test for issue 7 (config): the credentials and lifecycle
// sections of the YAML decode through koanf, a <secret> from either a
// plain string or a source mapping.
func TestConfigDecodesThroughKoanf(t *testing.T) {
	t.Parallel()
	const doc = `
credentials:
  gh-read:
    source: {file: /run/secrets/gh}
    inject: {header: Authorization, prefix: "token "}
    expires_at: 2027-10-12T09:00:00Z
    probe: {http: {url: "https://api.github.com/user", expect: 200}}
  gh-write:
    source:
      vault: {address: "https://vault:8200", mount: secret, path: mcp/github, field: token, token: "hvs.plain-string-token", namespace: ""}
    inject: {env: GITHUB_PERSONAL_ACCESS_TOKEN}
  vault-ref:
    source:
      vault: {address: "https://vault:8200", path: p, token: {file: /var/run/vault-token}}
  cli:
    source:
      exec: {command: [aws, secretsmanager, get-secret-value, --secret-id, x], timeout: 10s, json_field: SecretString}
  sm:
    source: {aws_secrets_manager: {secret_id: prod/mcp, region: eu-west-1, field: ""}}
  idp:
    source:
      oauth2:
        token_url: https://idp/token
        client_id: gw
        client_secret: {env: IDP_SECRET}
        refresh_token: "rt-plain"
        scopes: [read, write]
        grant_type: refresh_token
    probe: {tool: get_me, arguments: {}}
  dev:
    source: {value: "literal"}
lifecycle:
  check_interval: 5m
  expiry_warning: 60m
  refresh_before: 10m
  startup: {fail_on: expiring}
`
	var got testConfig
	decodeYAML(t, doc, &got)
	if err := ValidateCredentials(got.Credentials); err != nil {
		t.Fatalf("ValidateCredentials: %v", err)
	}
	if err := got.Lifecycle.Validate("lifecycle"); err != nil {
		t.Fatalf("lifecycle: %v", err)
	}
	want := testConfig{
		Credentials: map[string]CredentialConfig{
			"gh-read": {
				Source:    SourceConfig{File: "/run/secrets/gh"},
				Inject:    InjectConfig{Header: "Authorization", Prefix: "token "},
				ExpiresAt: time.Date(2027, 10, 12, 9, 0, 0, 0, time.UTC),
				Probe:     ProbeConfig{HTTP: &HTTPProbeConfig{URL: "https://api.github.com/user", Expect: 200}},
			},
			"gh-write": {
				Source: SourceConfig{Vault: &VaultConfig{Address: "https://vault:8200", Mount: "secret", Path: "mcp/github",
					Field: "token", Token: SecretRef{Value: "hvs.plain-string-token"}}},
				Inject: InjectConfig{Env: "GITHUB_PERSONAL_ACCESS_TOKEN"},
			},
			"vault-ref": {Source: SourceConfig{Vault: &VaultConfig{Address: "https://vault:8200", Path: "p",
				Token: SecretRef{File: "/var/run/vault-token"}}}},
			"cli": {Source: SourceConfig{Exec: &ExecConfig{
				Command: []string{"aws", "secretsmanager", "get-secret-value", "--secret-id", "x"}, Timeout: 10 * time.Second, JSONField: "SecretString"}}},
			"sm": {Source: SourceConfig{AWSSecretsManager: &AWSSecretsManagerConfig{SecretID: "prod/mcp", Region: "eu-west-1"}}},
			"idp": {
				Source: SourceConfig{OAuth2: &OAuth2Config{TokenURL: "https://idp/token", ClientID: "gw",
					ClientSecret: SecretRef{Env: "IDP_SECRET"}, RefreshToken: SecretRef{Value: "rt-plain"},
					Scopes: []string{"read", "write"}, GrantType: "refresh_token"}},
				Probe: ProbeConfig{Tool: "get_me", Arguments: map[string]any{}},
			},
			"dev": {Source: SourceConfig{Value: "literal"}},
		},
		Lifecycle: LifecycleConfig{CheckInterval: 5 * time.Minute, ExpiryWarning: time.Hour, RefreshBefore: 10 * time.Minute,
			Startup: StartupConfig{FailOn: FailOnExpiring}},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("decoded config mismatch (-want +got):\n%s", diff)
	}
}

func TestSecretRefHidesItsValue(t *testing.T) {
	t.Parallel()
	ref := SecretRef{Value: "hvs.very-secret-token"}
	cfg := VaultConfig{Token: ref}
	for _, s := range []string{ref.String(), cfg.Token.GoString()} {
		if strings.Contains(s, "very-secret") {
			t.Errorf("SecretRef printed its value: %s", s)
		}
	}
}

func TestLifecycleDefaults(t *testing.T) {
	t.Parallel()
	got := LifecycleConfig{}.WithDefaults()
	want := LifecycleConfig{CheckInterval: 5 * time.Minute, ExpiryWarning: 60 * time.Minute, RefreshBefore: 10 * time.Minute,
		Startup: StartupConfig{FailOn: FailOnExpired}}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("defaults mismatch (-want +got):\n%s", diff)
	}
}

func TestConfigValidateNamesEveryProblem(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		doc  string
		want []string // every line of the error, in order
	}{
		{"no source", `credentials: {gh: {inject: {header: X-Key}}}`,
			[]string{"credentials.gh.source: set exactly one of env, file, exec, vault, aws_secrets_manager, oauth2, value"}},
		{"two sources", `credentials: {gh: {source: {env: A, file: /x}}}`,
			[]string{"credentials.gh.source: set exactly one of env, file, exec, vault, aws_secrets_manager, oauth2, value (got [env file])"}},
		{"bad name and env", `credentials: {GH: {source: {env: "1X"}}}`,
			[]string{`credentials.GH: invalid name "GH": want [a-z0-9][a-z0-9_-]*`, `credentials.GH.source.env: invalid variable name "1X"`}},
		{"exec", `credentials: {c: {source: {exec: {timeout: -1s}}}}`,
			[]string{"credentials.c.source.exec.command: required (the program and its arguments)", "credentials.c.source.exec.timeout: must not be negative"}},
		{"vault", `credentials: {v: {source: {vault: {address: "vault:8200"}}}}`,
			[]string{`credentials.v.source.vault.address: "vault:8200" is not an http(s) URL`, "credentials.v.source.vault.path: required",
				"credentials.v.source.vault.token: required (a plain string or a source such as {env: VAULT_TOKEN})"}},
		{"vault token ref", `credentials: {v: {source: {vault: {address: "http://v", path: p, token: {env: A, file: /b}}}}}`,
			[]string{"credentials.v.source.vault.token: set exactly one of env, file, exec, vault, aws_secrets_manager, oauth2, value (got [env file])"}},
		{"aws", `credentials: {a: {source: {aws_secrets_manager: {region: x}}}}`,
			[]string{"credentials.a.source.aws_secrets_manager.secret_id: required"}},
		{"oauth2 cc", `credentials: {o: {source: {oauth2: {token_url: "ftp://x"}}}}`,
			[]string{`credentials.o.source.oauth2.token_url: "ftp://x" is not an http(s) URL`, "credentials.o.source.oauth2.client_id: required",
				"credentials.o.source.oauth2.client_secret: required for grant_type client_credentials"}},
		{"oauth2 rt", `credentials: {o: {source: {oauth2: {token_url: "https://x/t", client_id: c, grant_type: refresh_token}}}}`,
			[]string{"credentials.o.source.oauth2.refresh_token: required for grant_type refresh_token"}},
		{"oauth2 grant", `credentials: {o: {source: {oauth2: {token_url: "https://x/t", client_id: c, client_secret: s, grant_type: password}}}}`,
			[]string{`credentials.o.source.oauth2.grant_type: "password" is not client_credentials or refresh_token`}},
		{"inject and probe", `credentials: {i: {source: {env: A}, inject: {header: "bad header", env: B}, probe: {http: {url: "x", expect: 42}, tool: t}}}`,
			[]string{"credentials.i.inject: set header (and prefix) or env, not both", `credentials.i.inject.header: invalid header name "bad header"`,
				"credentials.i.probe: set http or tool, not both", `credentials.i.probe.http.url: "x" is not an http(s) URL`,
				"credentials.i.probe.http.expect: 42 is not an HTTP status"}},
		{"probe arguments alone", `credentials: {i: {source: {env: A}, probe: {arguments: {a: 1}}}}`,
			[]string{"credentials.i.probe.arguments: set only with tool"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var cfg testConfig
			decodeYAML(t, tt.doc, &cfg)
			err := ValidateCredentials(cfg.Credentials)
			if err == nil {
				t.Fatal("no error")
			}
			if diff := cmp.Diff(tt.want, strings.Split(err.Error(), "\n")); diff != "" {
				t.Errorf("errors mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

func TestLifecycleValidate(t *testing.T) {
	t.Parallel()
	err := LifecycleConfig{CheckInterval: -1, RefreshBefore: -1, Startup: StartupConfig{FailOn: "sometimes"}}.Validate("lifecycle")
	want := []string{"lifecycle.check_interval: must not be negative", "lifecycle.refresh_before: must not be negative",
		`lifecycle.startup.fail_on: "sometimes" is not expired, expiring or never`}
	if err == nil {
		t.Fatal("no error")
	}
	if diff := cmp.Diff(want, strings.Split(err.Error(), "\n")); diff != "" {
		t.Errorf("errors mismatch (-want +got):\n%s", diff)
	}
}

func TestStartupRefuses(t *testing.T) {
	t.Parallel()
	all := []Status{StatusUnknown, StatusHealthy, StatusExpiring, StatusExpired, StatusRevoked, StatusInvalid, StatusMissing, StatusRateLimited}
	tests := []struct {
		failOn FailOn
		want   []Status
	}{
		{"", []Status{StatusExpired, StatusRevoked, StatusInvalid, StatusMissing}},
		{FailOnExpired, []Status{StatusExpired, StatusRevoked, StatusInvalid, StatusMissing}},
		{FailOnExpiring, []Status{StatusExpiring, StatusExpired, StatusRevoked, StatusInvalid, StatusMissing}},
		{FailOnNever, nil},
	}
	for _, tt := range tests {
		var got []Status
		for _, st := range all {
			if (StartupConfig{FailOn: tt.failOn}).Refuses(st) {
				got = append(got, st)
			}
		}
		if diff := cmp.Diff(tt.want, got); diff != "" {
			t.Errorf("fail_on %q mismatch (-want +got):\n%s", tt.failOn, diff)
		}
	}
}

func TestInjectHeaderName(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in           InjectConfig
		header, pref string
	}{
		{InjectConfig{}, "Authorization", "Bearer "},
		{InjectConfig{Prefix: "token "}, "Authorization", "token "},
		{InjectConfig{Header: "X-Api-Key"}, "X-Api-Key", ""},
		{InjectConfig{Env: "TOKEN"}, "", ""},
	}
	for _, tt := range tests {
		h, p := tt.in.HeaderName()
		if h != tt.header || p != tt.pref {
			t.Errorf("%+v: got (%q, %q), want (%q, %q)", tt.in, h, p, tt.header, tt.pref)
		}
	}
}

// TestURLPortChecked: a URL's port out of range is refused where it is
// configured (url.Parse takes any digits; the oauth2 token_url failed only
// at start-up, a notifier's at its first alert).
func TestURLPortChecked(t *testing.T) {
	t.Parallel()
	for _, s := range []string{"http://127.0.0.1:99999/token", "https://vault:0", "http://[::1]:65536/x"} {
		if err := checkURL(s); err == nil || !strings.Contains(err.Error(), "invalid port") {
			t.Errorf("checkURL(%q) = %v; want an invalid port", s, err)
		}
	}
	for _, s := range []string{"http://127.0.0.1:8200", "https://vault.example.com/v1", "http://h:65535/"} {
		if err := checkURL(s); err != nil {
			t.Errorf("checkURL(%q) = %v; want ok", s, err)
		}
	}
}
