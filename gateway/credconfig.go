package gateway

import (
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"

	"github.com/credgate/credgate/authmap"
	"github.com/credgate/credgate/routing"
)

// Config of the credential lifecycle (issue 7). The credentials themselves
// are authmap's ([authmap.CredentialConfig]); this file holds what binds them
// to upstreams and tools, and the admin and webhook secrets.

// AdminConfig is the admin section.
type AdminConfig struct {
	// Token is the bearer token of the admin endpoints (GET /admin/events,
	// POST /admin/credentials/<name>/reload): a plain string or a source
	// object ({env: GATEWAY_ADMIN_TOKEN}, {file: ...}). It is read once, at
	// start-up. It also guards the other ops endpoints (/health; see
	// opsOnly). If zero, the admin endpoints exist only on admin.listen.
	Token authmap.SecretRef `koanf:"token"`
	// Listen, if set, is an address of their own for the ops endpoints
	// (/health, /admin/*; see opsOnly): they are then served there only,
	// never on listen. If empty, they are served on listen, behind
	// admin.token.
	Listen string `koanf:"listen"`
	// Pprof, if true, serves Go's profiler (net/http/pprof) under
	// /debug/pprof/ as an ops endpoint: behind admin.token, or on
	// admin.listen. A profile shows no secret, but it shows the gateway's
	// insides, so it is off unless asked for. If false, /debug/pprof/ does
	// not exist.
	Pprof bool `koanf:"pprof"`
	// Open lists the read-only ops endpoints served without admin.token:
	// "metrics" (/metrics, for a Prometheus scrape by annotation, which
	// cannot send a token) and "health" (/health, for an orchestrator that
	// reads it). They still answer only on admin.listen when it is set.
	// /events, /status, /admin/* and /debug/pprof/ always need the token.
	// If empty, every ops endpoint needs it.
	Open []string `koanf:"open"`
}

// openOps are the ops endpoints admin.open may name, each with its path.
var openOps = map[string]string{"metrics": "/metrics", "health": "/health"}

// opens reports whether admin.open names the ops endpoint name.
func (a AdminConfig) opens(name string) bool { return slices.Contains(a.Open, name) }

// WebhooksConfig is the webhooks section.
type WebhooksConfig struct {
	// Secret is the HMAC-SHA256 key rotation webhooks are signed with
	// (X-Credgate-Signature: sha256=<hex of the body's HMAC>): a plain string
	// or a source object. It is read once, at start-up. If zero, the webhook
	// endpoint does not exist.
	Secret authmap.SecretRef `koanf:"secret"`
}

// ToolCredential is one entry of upstreams.<name>.credentials: the credential
// that serves the tools matching its globs.
type ToolCredential struct {
	// Tools are globs on the upstream's own tool names, as in tools.allow.
	Tools []string `koanf:"tools"`
	// Credential names an entry of the config's credentials.
	Credential string `koanf:"credential"`

	globs []*routing.Glob // compiled by Normalize; nil when a pattern is invalid
}

// matches reports whether the entry covers tool.
func (t *ToolCredential) matches(tool string) bool {
	for _, g := range t.globs {
		if g.Match(tool) {
			return true
		}
	}
	return false
}

// compileToolCredentials compiles the per-tool globs (an invalid one is
// Validate's to report).
func (u *UpstreamConfig) compileToolCredentials() {
	for i := range u.Credentials {
		tc := &u.Credentials[i]
		tc.globs = nil
		for _, p := range tc.Tools {
			g, err := routing.CompileGlob(p)
			if err != nil {
				tc.globs = nil
				break
			}
			tc.globs = append(tc.globs, g)
		}
	}
}

// credentialFor returns the name of the credential that serves tool: the
// first per-tool entry matching it, else the upstream's bound credential;
// "" when none of the config's credentials serves it (the upstream's static
// headers and env are all it sends). creds is the config's credentials map.
func (u *UpstreamConfig) credentialFor(tool string, creds map[string]authmap.CredentialConfig) string {
	for i := range u.Credentials {
		if u.Credentials[i].matches(tool) {
			return u.Credentials[i].Credential
		}
	}
	if _, ok := creds[u.Credential]; ok && u.Credential != "" {
		return u.Credential
	}
	return ""
}

// defaultCredential is the credential of the upstream's own traffic
// (initialize, listings, pings, the GET stream) and of prompts, resources
// and completions: upstreams.<name>.credential when it is bound, else the
// first per-tool entry that covers every tool (its globs match "*").
func (u *UpstreamConfig) defaultCredential(creds map[string]authmap.CredentialConfig) string {
	if _, ok := creds[u.Credential]; ok && u.Credential != "" {
		return u.Credential
	}
	for i := range u.Credentials {
		if u.Credentials[i].matches("*") {
			return u.Credentials[i].Credential
		}
	}
	return ""
}

// boundCredentials lists the credentials the upstream uses, default first.
func (u *UpstreamConfig) boundCredentials(creds map[string]authmap.CredentialConfig) []string {
	var out []string
	if d := u.defaultCredential(creds); d != "" {
		out = append(out, d)
	}
	for _, tc := range u.Credentials {
		if tc.Credential != "" && !slices.Contains(out, tc.Credential) {
			out = append(out, tc.Credential)
		}
	}
	return out
}

// validateCredentials checks the credential lifecycle's config: the
// credentials, lifecycle, admin and webhooks sections, and every upstream's
// binding. It returns every problem, each naming its key.
func (c *Config) validateCredentials() error {
	var errs []error
	bad := func(key, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", key, fmt.Sprintf(format, args...)))
	}
	errs = append(errs, authmap.ValidateCredentials(c.Credentials), c.Lifecycle.Validate("lifecycle"))
	if !c.Admin.Token.IsZero() {
		errs = append(errs, c.Admin.Token.Validate("admin.token"))
	}
	if !c.Webhooks.Secret.IsZero() {
		errs = append(errs, c.Webhooks.Secret.Validate("webhooks.secret"))
	}
	for i, name := range c.Admin.Open {
		if _, ok := openOps[name]; !ok {
			bad(fmt.Sprintf("admin.open[%d]", i), "unknown ops endpoint %q: want metrics or health (/events, /status and /admin/* always need admin.token)", name)
		}
	}
	// inject checks that the credential name can serve the upstream: a
	// header for HTTP, an env variable for stdio.
	inject := func(key, upName string, u *UpstreamConfig, name string) {
		cc, ok := c.Credentials[name]
		if !ok {
			return
		}
		switch {
		case u.Transport == TransportStdio && cc.Inject.Env == "":
			bad(key, "credential %q has no inject.env, and a stdio upstream reads its credential from the environment: set credentials.%s.inject.env (such as GITHUB_PERSONAL_ACCESS_TOKEN)", name, name)
		case u.Transport != TransportStdio && u.Transport != "" && cc.Inject.Env != "":
			bad(key, "credential %q injects the environment variable %s, which an HTTP upstream cannot read: use credentials.%s.inject.header (default Authorization: Bearer)", name, cc.Inject.Env, name)
		}
	}
	used := map[string]bool{}
	for _, name := range c.Order() {
		u := c.Upstreams[name]
		if u == nil {
			continue
		}
		key := "upstreams." + name
		if _, ok := c.Credentials[u.Credential]; ok && u.Credential != "" {
			inject(key+".credential", name, u, u.Credential)
			used[u.Credential] = true
		}
		for i, tc := range u.Credentials {
			k := fmt.Sprintf("%s.credentials[%d]", key, i)
			if len(tc.Tools) == 0 {
				bad(k+".tools", "missing: list the tool globs this credential serves (such as [\"get_*\", \"list_*\"], or [\"*\"])")
			}
			for j, p := range tc.Tools {
				if _, err := routing.CompileGlob(p); err != nil {
					bad(fmt.Sprintf("%s.tools[%d]", k, j), "%v", err)
				}
			}
			switch _, ok := c.Credentials[tc.Credential]; {
			case tc.Credential == "":
				bad(k+".credential", "missing: name one of the credentials")
			case !ok:
				msg := fmt.Sprintf("unknown credential %q: define it under credentials", tc.Credential)
				if s := suggest(tc.Credential, sortedCredentialNames(c.Credentials)); s != "" {
					msg += fmt.Sprintf(" (did you mean %s?)", s)
				}
				bad(k+".credential", "%s", msg)
			default:
				inject(k+".credential", name, u, tc.Credential)
				used[tc.Credential] = true
			}
		}
		if u.Transport == TransportStdio && u.Session == SessionPerAgent {
			if d := u.defaultCredential(c.Credentials); len(u.boundCredentials(c.Credentials)) > 1 || (d == "" && len(u.Credentials) > 0) {
				bad(key+".credentials", "per-tool credentials of a stdio upstream need session: shared (each credential gets its own child there)")
			}
		}
	}
	for _, n := range sortedCredentialNames(c.Credentials) {
		if p := c.Credentials[n].Probe; p.Tool != "" && !used[n] {
			bad("credentials."+n+".probe.tool", "the credential serves no upstream to call the tool %q on", p.Tool)
		}
	}
	return errors.Join(errs...)
}

// credentialWarnings lists what is valid but probably not meant in the
// credential bindings, each naming its key.
func (c *Config) credentialWarnings() []string {
	var out []string
	used := map[string]bool{}
	for _, name := range c.Order() {
		u := c.Upstreams[name]
		if u == nil {
			continue
		}
		for _, n := range u.boundCredentials(c.Credentials) {
			used[n] = true
		}
		if u.Credential != "" {
			if _, ok := c.Credentials[u.Credential]; !ok {
				out = append(out, fmt.Sprintf("upstreams.%s.credential: %q is not defined under credentials; it only names the credential in failure reports", name, u.Credential))
			}
		}
		d := u.defaultCredential(c.Credentials)
		if d == "" {
			continue
		}
		inj := c.Credentials[d].Inject
		if h, _ := inj.HeaderName(); h != "" && u.Transport != TransportStdio {
			for k := range u.Headers {
				if strings.EqualFold(k, h) {
					out = append(out, fmt.Sprintf("upstreams.%s.headers.%s: replaced by credential %q on every request", name, k, d))
				}
			}
		}
		if inj.Env != "" {
			if _, ok := u.Env[inj.Env]; ok {
				out = append(out, fmt.Sprintf("upstreams.%s.env.%s: replaced by credential %q", name, inj.Env, d))
			}
		}
	}
	for _, n := range c.keyCredentials() {
		used[n] = true // an agent's API key (auth.keys[].key_credential)
	}
	for _, n := range sortedCredentialNames(c.Credentials) {
		if !used[n] {
			out = append(out, fmt.Sprintf("credentials.%s: no upstream uses it (set upstreams.<name>.credential or .credentials)", n))
		}
	}
	return out
}

func sortedCredentialNames(m map[string]authmap.CredentialConfig) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
