package gateway

import (
	"errors"
	"fmt"
	"math"
	"net"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.org/x/time/rate"

	"github.com/credgate/credgate/authmap"
	"github.com/credgate/credgate/routing"
)

// Config of agent authentication, per-agent policy and the HTTP front
// (issue 9). What the keys decide at run time is in agentauth.go (who is
// calling), policy.go (what they may do) and front.go (Host, Origin, ops
// endpoints).

// AuthConfig is the auth section: how agents authenticate on /mcp. With no
// key and no oauth, agents are not authenticated, and the gateway serves only
// on a loopback address unless allow_unauthenticated is set.
type AuthConfig struct {
	// Keys are the API keys agents send as "Authorization: Bearer <key>".
	// Each names one agent.
	Keys []APIKeyConfig `koanf:"keys"`
	// OAuth makes the gateway an OAuth 2.1 resource server (JWT access
	// tokens from an authorization server; see oauth.go). If nil, agents are
	// not asked for OAuth tokens.
	OAuth *OAuthConfig `koanf:"oauth"`
}

// APIKeyConfig is one entry of auth.keys.
type APIKeyConfig struct {
	// Name is the agent's identity: in logs, policies (policies[].agents)
	// and failure details. It is required and unique.
	Name string `koanf:"name"`
	// Key is the key itself: a plain string (${NAME} references expand) or
	// a source object ({env: VAR}, {file: PATH}, {exec: ...}, {vault: ...},
	// {aws_secrets_manager: ...}), read once at start-up. Exactly one of Key
	// and KeyCredential is set.
	Key authmap.SecretRef `koanf:"key"`
	// KeyCredential names an entry of credentials whose current value is
	// the key, so that it rotates like any credential (file watch, SIGHUP,
	// admin reload, webhook): the old value stops working at once.
	KeyCredential string `koanf:"key_credential"`
	// Tools and Resources are what this key may use, as in policies (see
	// PolicyConfig). If both are empty, only the policies apply.
	Tools     ToolFilter `koanf:"tools"`
	Resources ToolFilter `koanf:"resources"`
	// Rate bounds this agent's calls ("10/s", "600/m"). If zero, only the
	// policies' rates apply.
	Rate Rate `koanf:"rate"`
}

// PolicyConfig is one entry of policies: what the agents it applies to may
// use. A policy applies to an agent named in Agents (globs on the agent's
// name: an API key's name, or a token's subject or client id) that also
// holds every scope in Scopes; at least one of the two is set.
//
// An agent's grants are its key's own tools/resources and every policy that
// applies to it. A tool is allowed when no grant denies it and either some
// grant's allow list matches it or no grant has an allow list. Prompts are
// matched by the same globs (their exposed names carry the same prefix).
// Resources (URIs) and resource templates go by the resources lists the same
// way, except that an agent whose tools are allow-listed sees no resource
// unless a resources.allow lists it. An authenticated agent that no grant
// covers may use everything when no policy is configured, and nothing when
// some are.
type PolicyConfig struct {
	Agents    []string   `koanf:"agents"`
	Scopes    []string   `koanf:"scopes"`
	Tools     ToolFilter `koanf:"tools"`
	Resources ToolFilter `koanf:"resources"`
	// Rate bounds each agent the policy applies to, separately. When
	// several rates apply to an agent (its key's and its policies'), the
	// lowest holds. If zero, the policy sets no rate.
	Rate Rate `koanf:"rate"`
}

// Rate is a token-bucket rate written "N/unit": "10/s", "600/m", "1000/h",
// or "N/<duration>" ("5/10s"). The bucket holds N tokens, so up to N calls
// may come at once after a quiet spell. The zero Rate is no limit.
type Rate struct {
	N   int           `koanf:"-"`
	Per time.Duration `koanf:"-"`
}

// UnmarshalText reads "N/unit".
func (r *Rate) UnmarshalText(b []byte) error {
	s := strings.TrimSpace(string(b))
	const want = `want "N/s", "N/m", "N/h" or "N/<duration>", such as "10/s"`
	n, unit, ok := strings.Cut(s, "/")
	if !ok {
		return fmt.Errorf("%q: %s", s, want)
	}
	count, err := strconv.Atoi(strings.TrimSpace(n))
	if err != nil || count <= 0 {
		return fmt.Errorf("%q: the count must be a whole number > 0; %s", s, want)
	}
	var per time.Duration
	switch strings.ToLower(strings.TrimSpace(unit)) {
	case "s", "sec", "second":
		per = time.Second
	case "m", "min", "minute":
		per = time.Minute
	case "h", "hour":
		per = time.Hour
	default:
		d, err := time.ParseDuration(strings.TrimSpace(unit))
		if err != nil || d <= 0 {
			return fmt.Errorf("%q: unknown unit %q; %s", s, unit, want)
		}
		per = d
	}
	*r = Rate{N: count, Per: per}
	return nil
}

// String writes the rate as it is configured.
func (r Rate) String() string {
	switch r.Per {
	case 0:
		return ""
	case time.Second:
		return fmt.Sprintf("%d/s", r.N)
	case time.Minute:
		return fmt.Sprintf("%d/m", r.N)
	case time.Hour:
		return fmt.Sprintf("%d/h", r.N)
	}
	return fmt.Sprintf("%d/%s", r.N, r.Per)
}

// IsZero reports whether no rate is set.
func (r Rate) IsZero() bool { return r.N <= 0 || r.Per <= 0 }

// limit is the rate in tokens per second.
func (r Rate) limit() rate.Limit {
	if r.IsZero() {
		return rate.Inf
	}
	return rate.Limit(float64(r.N) / r.Per.Seconds())
}

// Bounds of agent authentication.
const (
	// minKeyLength is the shortest API key accepted: a key is a password
	// that nobody types, so there is no reason for it to be guessable.
	minKeyLength = 16
	// maxAgentName bounds an agent's name (it appears in every log line).
	maxAgentName = 128
)

var agentNameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.@:-]*$`)

// enabled reports whether agents authenticate on /mcp.
func (a *AuthConfig) enabled() bool { return len(a.Keys) > 0 || a.OAuth != nil }

// validateAuth checks the auth, policies, allowed_hosts, allowed_origins and
// admin.listen keys; every problem names its key.
func (c *Config) validateAuth() error {
	var errs []error
	bad := func(key, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", key, fmt.Sprintf(format, args...)))
	}
	names := map[string]int{}
	plain := map[string]int{}
	for i, k := range c.Auth.Keys {
		key := fmt.Sprintf("auth.keys[%d]", i)
		switch {
		case k.Name == "":
			bad(key+".name", "missing: name the agent this key is for (such as ci-agent)")
		case len(k.Name) > maxAgentName || !agentNameRE.MatchString(k.Name):
			bad(key+".name", "invalid name %s: want letters, digits and _.@:- (at most %d characters), starting with a letter or digit", c.shown(key+".name", k.Name), maxAgentName)
		default:
			if j, dup := names[k.Name]; dup {
				bad(key+".name", "%q is also the name of auth.keys[%d]; each key names one agent", k.Name, j)
			} else {
				names[k.Name] = i
			}
		}
		switch {
		case k.Key.IsZero() && k.KeyCredential == "":
			bad(key+".key", "missing: set key (a string such as ${CI_AGENT_KEY}, or a source such as {env: CI_AGENT_KEY}) or key_credential (a credential's name)")
		case !k.Key.IsZero() && k.KeyCredential != "":
			bad(key, "both key and key_credential are set; set one")
		case k.KeyCredential != "":
			if _, ok := c.Credentials[k.KeyCredential]; !ok {
				msg := fmt.Sprintf("unknown credential %q: define it under credentials", k.KeyCredential)
				if s := suggest(k.KeyCredential, sortedCredentialNames(c.Credentials)); s != "" {
					msg += fmt.Sprintf(" (did you mean %s?)", s)
				}
				bad(key+".key_credential", "%s", msg)
			}
		default:
			if err := k.Key.Validate(key + ".key"); err != nil {
				errs = append(errs, err)
			}
			// A plain value is checked here; a source's value at start-up.
			if v := k.Key.Value; authmap.SourceConfig(k.Key).Kind() == authmap.KindValue {
				if err := checkKeyValue(v); err != nil {
					bad(key+".key", "%v", err)
				} else if j, dup := plain[v]; dup {
					bad(key+".key", "the same key as auth.keys[%d]; each agent needs its own key", j)
				} else if at := authmap.SourceConfig(c.Admin.Token); at.Kind() == authmap.KindValue && at.Value == v {
					bad(key+".key", "the same value as admin.token; an agent's key must not open the ops endpoints")
				} else {
					plain[v] = i
				}
			}
		}
		errs = append(errs, checkGrant(key, k.Tools, k.Resources))
	}
	authOn := c.Auth.enabled()
	if len(c.Policies) > 0 && !authOn {
		bad("policies", "set, but agents are not authenticated: policies apply to the agents auth.keys (or auth.oauth) identify")
	}
	for i, p := range c.Policies {
		key := fmt.Sprintf("policies[%d]", i)
		if len(p.Agents) == 0 && len(p.Scopes) == 0 {
			bad(key, "applies to nobody: set agents (names or globs; [\"*\"] for every agent) or scopes")
		}
		for j, a := range p.Agents {
			if _, err := routing.CompileGlob(a); err != nil || a == "" {
				if err == nil {
					err = errors.New("empty agent name")
				}
				bad(fmt.Sprintf("%s.agents[%d]", key, j), "%v", err)
			}
		}
		for j, s := range p.Scopes {
			if s == "" || strings.ContainsAny(s, " \t\r\n\"\\") {
				bad(fmt.Sprintf("%s.scopes[%d]", key, j), "invalid scope %q: a scope is one word without spaces or quotes", s)
			}
		}
		errs = append(errs, checkGrant(key, p.Tools, p.Resources))
	}
	for i, h := range c.AllowedHosts {
		if err := checkAllowedHost(h); err != nil {
			bad(fmt.Sprintf("allowed_hosts[%d]", i), "%v", err)
		}
	}
	for i, o := range c.AllowedOrigins {
		if _, err := normalizeOrigin(o); err != nil {
			bad(fmt.Sprintf("allowed_origins[%d]", i), "%v", err)
		}
	}
	if l := c.Admin.Listen; l != "" {
		if err := CheckListen(l); err != nil {
			bad("admin.listen", "invalid address %s: %v", c.shown("admin.listen", l), err)
		} else if _, port, _ := net.SplitHostPort(l); l == c.Listen && port != "0" { // port 0: each its own free port
			bad("admin.listen", "the same address as listen; the ops endpoints need an address of their own (or leave admin.listen unset and set admin.token)")
		}
	}
	return errors.Join(errs...)
}

// checkKeyValue refuses an API key too short to be a secret. The message
// never quotes the key.
func checkKeyValue(v string) error {
	if n := len(v); n < minKeyLength {
		return fmt.Errorf("too short (%d characters): an API key needs at least %d random characters, such as the output of `openssl rand -hex 32`", n, minKeyLength)
	}
	if strings.ContainsFunc(v, func(r rune) bool { return r <= ' ' || r == 0x7f }) {
		return errors.New("contains spaces or control characters, which an Authorization header cannot carry in a bearer token")
	}
	return nil
}

// checkGrant checks the globs of a key's or a policy's tools and resources.
func checkGrant(key string, tools, resources ToolFilter) error {
	var errs []error
	for _, f := range []struct {
		name string
		ToolFilter
	}{{"tools", tools}, {"resources", resources}} {
		for _, l := range []struct {
			name  string
			globs []string
		}{{"allow", f.Allow}, {"deny", f.Deny}} {
			for j, p := range l.globs {
				if _, err := routing.CompileGlob(p); err != nil {
					errs = append(errs, fmt.Errorf("%s.%s.%s[%d]: %v", key, f.name, l.name, j, err))
				}
			}
		}
	}
	return errors.Join(errs...)
}

// checkAllowedHost accepts a host name or IP address without port or
// scheme, "*.example.com" for any name under example.com, or "*".
func checkAllowedHost(h string) error {
	const want = "want a host name such as gateway.example.com (no scheme, port or path), *.example.com, or *"
	if h == "*" {
		return nil
	}
	name := strings.TrimPrefix(h, "*.")
	if strings.HasPrefix(name, "[") && strings.HasSuffix(name, "]") {
		name = name[1 : len(name)-1]
	}
	if net.ParseIP(name) != nil {
		return nil
	}
	if name == "" || strings.ContainsFunc(name, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '.' || r == '_')
	}) {
		return fmt.Errorf("invalid host %q: %s", h, want)
	}
	return nil
}

// normalizeOrigin returns an allowed_origins entry as browsers send it in
// Origin: scheme://host[:port], lower-cased; "*" stays "*".
func normalizeOrigin(o string) (string, error) {
	const want = "want an origin such as https://app.example.com (scheme, host and optional port; no path), or *"
	if o == "*" {
		return o, nil
	}
	u, err := url.Parse(o)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.User != nil ||
		(u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" {
		return "", fmt.Errorf("invalid origin %q: %s", o, want)
	}
	return strings.ToLower(u.Scheme + "://" + u.Host), nil
}

// authWarnings lists what is valid in the auth and policy sections but
// probably not meant, each naming its key.
func (c *Config) authWarnings() []string {
	// The exposure check (CheckExposure) is not a warning: serve refuses to
	// start on it and validate fails on it.
	var out []string
	authOn := c.Auth.enabled()
	if authOn && c.AllowUnauthenticated {
		out = append(out, "allow_unauthenticated: has no effect: agents authenticate (auth is set)")
	}
	for i, p := range c.Policies {
		if c.Auth.OAuth != nil {
			break // a name may be a token's subject
		}
		for j, a := range p.Agents {
			g, err := routing.CompileGlob(a)
			if err != nil {
				continue
			}
			if !slices.ContainsFunc(c.Auth.Keys, func(k APIKeyConfig) bool { return g.Match(k.Name) }) {
				out = append(out, fmt.Sprintf("policies[%d].agents[%d]: %q matches no key in auth.keys, and auth.oauth is unset: it applies to nobody", i, j, a))
			}
		}
		if len(p.Scopes) > 0 {
			out = append(out, fmt.Sprintf("policies[%d].scopes: API keys carry no scopes, and auth.oauth is unset: the policy applies to nobody", i))
		}
	}
	if len(c.Policies) > 0 {
		for i, k := range c.Auth.Keys {
			if len(k.Tools.Allow)+len(k.Tools.Deny)+len(k.Resources.Allow)+len(k.Resources.Deny) > 0 {
				continue
			}
			covered := slices.ContainsFunc(c.Policies, func(p PolicyConfig) bool {
				return len(p.Scopes) == 0 && slices.ContainsFunc(p.Agents, func(a string) bool {
					g, err := routing.CompileGlob(a)
					return err == nil && g.Match(k.Name)
				})
			})
			if !covered {
				out = append(out, fmt.Sprintf("auth.keys[%d]: %q sets no tools and no policy applies to it: with policies configured, it may call nothing", i, k.Name))
			}
		}
	}
	if l := c.Admin.Listen; l != "" && c.Admin.Token.IsZero() && !loopbackListen(l) {
		out = append(out, fmt.Sprintf("admin.listen: %s is not a loopback address and admin.token is unset: whoever reaches it sees /health and can reload credentials", l))
	}
	if len(c.Admin.Open) > 0 && c.Admin.Token.IsZero() {
		out = append(out, "admin.open: has no effect: it waives admin.token, which is unset")
	}
	return out
}

// keyCredentials lists the credentials that hold API keys (key_credential).
func (c *Config) keyCredentials() []string {
	var out []string
	for _, k := range c.Auth.Keys {
		if k.KeyCredential != "" && !slices.Contains(out, k.KeyCredential) {
			out = append(out, k.KeyCredential)
		}
	}
	return out
}

// loopbackListen reports whether a listen address accepts connections from
// this machine only: a loopback IP or "localhost". An empty host (every
// interface) and any other name are not.
func loopbackListen(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// CheckExposure refuses to serve agents on addr (a listen address, or a
// bound listener's address) without authentication when addr is reachable
// from other machines, unless allow_unauthenticated is set: anyone who
// reached the port could use every credential the gateway holds.
func (c *Config) CheckExposure(addr string) error {
	if c.Auth.enabled() || c.AllowUnauthenticated || loopbackListen(addr) {
		return nil
	}
	return fmt.Errorf("listen: %s is not a loopback address and agents are not authenticated: anyone who reaches it could use every credential the gateway holds. Set auth.keys (or auth.oauth), listen on 127.0.0.1, or set allow_unauthenticated: true to accept the risk", addr)
}

// retryAfterSeconds rounds a wait up to whole seconds, at least 1.
func retryAfterSeconds(d time.Duration) int {
	return max(1, int(math.Ceil(d.Seconds())))
}
