package gateway

import (
	"bytes"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path"
	"reflect"
	"regexp"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/knadh/koanf/parsers/yaml"
	"github.com/knadh/koanf/providers/env/v2"
	"github.com/knadh/koanf/providers/rawbytes"
	"github.com/knadh/koanf/v2"
	yamlv3 "go.yaml.in/yaml/v3"

	"github.com/credgate/credgate/authmap"
	"github.com/credgate/credgate/routing"
)

// Session modes of an upstream.
const (
	SessionShared   = "shared"
	SessionPerAgent = "per_agent"
)

// Transports an upstream can speak.
const (
	TransportStdio          = "stdio"
	TransportStreamableHTTP = "streamable-http"
	TransportSSE            = "sse"
)

// EnvPrefix starts every environment variable that overrides the config.
// "__" separates nesting levels: CREDGATE_UPSTREAMS__GITHUB__URL sets
// upstreams.github.url.
const EnvPrefix = "CREDGATE_"

// DefaultListen is the listen address when the config sets none.
const DefaultListen = "127.0.0.1:8080"

// DefaultTimeout bounds one forwarded request when an upstream sets no timeout.
const DefaultTimeout = 60 * time.Second

// Defaults of the bounds (issue 6); see the fields they default.
const (
	DefaultSessionIdleTimeout = 30 * time.Minute
	DefaultMaxSessions        = 10000
	DefaultMaxConnections     = 1024
	DefaultMaxResponseBytes   = 16 << 20
	DefaultMaxAgentSessions   = 100
)

// Config is the whole gateway configuration. Load it with [LoadConfig]; a
// Config built in code should be passed through [Config.Normalize] and
// [Config.Validate] like a loaded one.
type Config struct {
	// Listen is the HTTP listen address. If empty, defaults to 127.0.0.1:8080.
	Listen string `koanf:"listen"`
	// ToolSeparator joins an upstream's prefix and a tool or prompt name.
	// If empty, defaults to "__".
	ToolSeparator string `koanf:"tool_separator"`
	// Stateless serves /mcp without sessions, so any replica can serve any
	// request. If false (the default), sessions are stateful: server-to-client
	// requests (sampling, elicitation) work for every client.
	Stateless bool `koanf:"stateless"`
	// Upstreams are the MCP servers to federate, by name.
	Upstreams map[string]*UpstreamConfig `koanf:"upstreams"`
	// Classify holds the ops' own failure-classification rules.
	Classify ClassifyConfig `koanf:"classify"`

	// Bounds on what agents can make the gateway hold (issue 6).

	// SessionIdleTimeout closes an agent session on /mcp that has had no
	// request in flight for this long; the agent's per_agent upstream
	// sessions close with it. An agent that only listens on its GET stream
	// counts as idle. If zero, defaults to 30m.
	SessionIdleTimeout time.Duration `koanf:"session_idle_timeout"`
	// MaxSessions caps the agent sessions open on /mcp at once. When it is
	// reached, a new initialize is refused with HTTP 503 and a JSON-RPC error
	// naming this key, while open sessions keep working. If zero, defaults
	// to 10000. Ignored when Stateless.
	MaxSessions int `koanf:"max_sessions"`
	// MaxConnections caps the HTTP connections served at once; further
	// connections wait in the listen backlog until one closes. If zero,
	// defaults to 1024.
	MaxConnections int `koanf:"max_connections"`

	// order is the upstreams' order in the config file; names that came only
	// from the environment follow, sorted.
	order []string
}

// ClassifyConfig is the classify section: rules tried before the built-in ones.
type ClassifyConfig struct {
	Rules []authmap.Rule `koanf:"rules"`
}

// UpstreamConfig describes one upstream MCP server.
type UpstreamConfig struct {
	// Transport is stdio, streamable-http or sse. If empty, it is stdio when
	// Command is set and streamable-http when URL is set.
	Transport string `koanf:"transport"`
	// Command and Args start a stdio upstream. Command is looked up in PATH.
	Command string   `koanf:"command"`
	Args    []string `koanf:"args"`
	// Env is added to the child's environment. The child does not inherit the
	// gateway's environment beyond a few basics (PATH, HOME, locale, TMPDIR),
	// so a secret given to the gateway does not leak into every upstream.
	Env map[string]string `koanf:"env"`
	// Cwd is the child's working directory. If empty, the gateway's.
	Cwd string `koanf:"cwd"`
	// URL is the endpoint of a streamable-http or sse upstream.
	URL string `koanf:"url"`
	// Headers are sent with every HTTP request to the upstream.
	Headers map[string]string `koanf:"headers"`
	// Timeout bounds one forwarded request. If zero, defaults to 60s.
	Timeout time.Duration `koanf:"timeout"`
	// Prefix is put before the upstream's tool and prompt names. If nil, the
	// upstream's name is used; "" exposes the names unchanged.
	Prefix *string `koanf:"prefix"`
	// Tools filters which of the upstream's tools are exposed.
	Tools ToolFilter `koanf:"tools"`
	// Session is shared (the default: one session to the upstream carries
	// every agent's calls) or per_agent (each agent gets its own session,
	// opened on its first call: a child process each for stdio). per_agent
	// routes 2025-11-25 sampling and elicitation requests unambiguously when
	// several agents call at once, and suits upstreams that keep per-session
	// state.
	Session string `koanf:"session"`
	// Provider hints which API the upstream fronts (github, stripe, ...), for
	// classifying its failures. If empty, the provider is detected from the
	// failure itself.
	Provider string `koanf:"provider"`
	// Credential names the upstream's credential in failure reports. If
	// empty, the config key holding it (a header or env entry) is named.
	Credential string `koanf:"credential"`
	// CredentialExpiresAt is when the credential expires, if known (RFC
	// 3339). Once it has passed, a rejection the provider does not explain
	// (GitHub's "Bad credentials") is reported as credential_expired rather
	// than credential_invalid. If zero, unknown.
	CredentialExpiresAt time.Time `koanf:"credential_expires_at"`

	// Bounds (issue 6).

	// MaxResponseBytes bounds one message from the upstream: a JSON response
	// body, one SSE event, one stdio line. A message over it fails the call
	// it answers with a typed upstream_error; the session survives. If
	// zero, defaults to 16 MiB.
	MaxResponseBytes int64 `koanf:"max_response_bytes"`
	// MaxAgentSessions caps the agent sessions of a per_agent upstream (for
	// stdio, its child processes). A call that would open one more fails
	// with a typed upstream_unavailable. If zero, defaults to 100.
	MaxAgentSessions int `koanf:"max_agent_sessions"`
}

// ToolFilter selects tools by glob patterns (path.Match syntax) on the
// upstream's own tool names. Deny wins over Allow; an empty Allow allows all.
type ToolFilter struct {
	Allow []string `koanf:"allow"`
	Deny  []string `koanf:"deny"`
}

// Allowed reports whether the filter lets the tool through.
func (f ToolFilter) Allowed(name string) bool {
	for _, p := range f.Deny {
		if ok, _ := path.Match(p, name); ok {
			return false
		}
	}
	if len(f.Allow) == 0 {
		return true
	}
	for _, p := range f.Allow {
		if ok, _ := path.Match(p, name); ok {
			return true
		}
	}
	return false
}

// prefix returns the effective prefix of upstream name.
func (u *UpstreamConfig) prefix(name string) string {
	if u.Prefix == nil {
		return name
	}
	return *u.Prefix
}

// maxResponseBytes returns the effective bound on one upstream message.
func (u *UpstreamConfig) maxResponseBytes() int64 {
	if u.MaxResponseBytes <= 0 {
		return DefaultMaxResponseBytes
	}
	return u.MaxResponseBytes
}

// maxAgentSessions returns the effective cap on per-agent sessions.
func (u *UpstreamConfig) maxAgentSessions() int {
	if u.MaxAgentSessions <= 0 {
		return DefaultMaxAgentSessions
	}
	return u.MaxAgentSessions
}

// timeout returns the effective request timeout.
func (u *UpstreamConfig) timeout() time.Duration {
	if u.Timeout <= 0 {
		return DefaultTimeout
	}
	return u.Timeout
}

// sessionIdleTimeout returns the effective idle timeout of agent sessions.
func (c *Config) sessionIdleTimeout() time.Duration {
	if c.SessionIdleTimeout <= 0 {
		return DefaultSessionIdleTimeout
	}
	return c.SessionIdleTimeout
}

// maxSessions returns the effective cap on agent sessions.
func (c *Config) maxSessions() int {
	if c.MaxSessions <= 0 {
		return DefaultMaxSessions
	}
	return c.MaxSessions
}

// maxConnections returns the effective cap on HTTP connections.
func (c *Config) maxConnections() int {
	if c.MaxConnections <= 0 {
		return DefaultMaxConnections
	}
	return c.MaxConnections
}

// Order returns the upstream names in config order.
func (c *Config) Order() []string {
	if len(c.order) == len(c.Upstreams) {
		return c.order
	}
	// A Config built in code has no file order: use the names sorted.
	names := make([]string, 0, len(c.Upstreams))
	for n := range c.Upstreams {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// LoadConfig reads the YAML file at path, applies CREDGATE_* overrides from
// environ (os.Environ() form), fills defaults and validates. Every problem is
// reported at once, each naming its key.
func LoadConfig(path string, environ []string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	return ParseConfig(data, environ)
}

// ParseConfig is [LoadConfig] for YAML already in memory.
func ParseConfig(data []byte, environ []string) (*Config, error) {
	k := koanf.New(".")
	if len(bytes.TrimSpace(data)) > 0 {
		if err := k.Load(rawbytes.Provider(data), yaml.Parser()); err != nil {
			return nil, fmt.Errorf("config: %w", err)
		}
	}
	// Unknown keys are reported together with every other problem; those
	// from the environment name their variable.
	keysErr := checkKeys(k.Raw(), reflect.TypeFor[Config](), "")
	fromEnv := koanf.New(".")
	if err := fromEnv.Load(env.Provider(".", env.Opt{
		Prefix:        EnvPrefix,
		TransformFunc: envKey,
		EnvironFunc:   func() []string { return environ },
	}), nil); err != nil {
		return nil, fmt.Errorf("config: environment: %w", err)
	}
	if err := checkKeys(fromEnv.Raw(), reflect.TypeFor[Config](), ""); err != nil {
		keysErr = errors.Join(keysErr, fmt.Errorf("environment (%s*): %w", EnvPrefix, err))
	}
	if err := k.Merge(fromEnv); err != nil {
		return nil, fmt.Errorf("config: environment: %w", err)
	}
	var cfg Config
	if err := k.UnmarshalWithConf("", &cfg, koanf.UnmarshalConf{Tag: "koanf"}); err != nil {
		return nil, errors.Join(keysErr, fmt.Errorf("config: %w", err))
	}
	cfg.order = upstreamOrder(data, cfg.Upstreams)
	cfg.Normalize()
	if err := errors.Join(keysErr, cfg.Validate()); err != nil {
		return nil, err
	}
	return &cfg, nil
}

// envKey maps CREDGATE_UPSTREAMS__GH__ENV__GITHUB_TOKEN to
// upstreams.gh.env.GITHUB_TOKEN: keys are lower-cased, except the names under
// env and headers, whose case is the user's.
func envKey(key, value string) (string, any) {
	if key == EnvPrefix+"CONFIG" {
		return "", nil // the config path itself, not a setting
	}
	parts := strings.Split(strings.TrimPrefix(key, EnvPrefix), "__")
	for i, p := range parts {
		if i > 0 && (parts[i-1] == "env" || parts[i-1] == "headers") {
			continue
		}
		parts[i] = strings.ToLower(p)
	}
	return strings.Join(parts, "."), value
}

// checkKeys rejects keys that no field of t takes, naming the full key path.
func checkKeys(raw map[string]any, t reflect.Type, at string) error {
	var errs []error
	keys := make([]string, 0, len(raw))
	for k := range raw {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		field, ok := fieldByTag(t, k)
		p := joinKey(at, k)
		if !ok {
			errs = append(errs, fmt.Errorf("%s: unknown key", p))
			continue
		}
		errs = append(errs, checkValue(raw[k], field, p))
	}
	return errors.Join(errs...)
}

func checkValue(v any, t reflect.Type, at string) error {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch t.Kind() {
	case reflect.Struct:
		if t == reflect.TypeFor[time.Duration]() || t == reflect.TypeFor[time.Time]() {
			return nil
		}
		m, ok := v.(map[string]any)
		if !ok {
			if v == nil {
				return nil
			}
			return fmt.Errorf("%s: want a mapping, got %T", at, v)
		}
		return checkKeys(m, t, at)
	case reflect.Map:
		m, ok := v.(map[string]any)
		if !ok {
			if v == nil {
				return nil
			}
			return fmt.Errorf("%s: want a mapping, got %T", at, v)
		}
		var errs []error
		for k, e := range m {
			errs = append(errs, checkValue(e, t.Elem(), joinKey(at, k)))
		}
		return errors.Join(errs...)
	case reflect.Slice:
		s, ok := v.([]any)
		if !ok {
			return nil // a scalar where a list is wanted is reported by the decoder
		}
		var errs []error
		for i, e := range s {
			errs = append(errs, checkValue(e, t.Elem(), fmt.Sprintf("%s[%d]", at, i)))
		}
		return errors.Join(errs...)
	}
	return nil
}

func fieldByTag(t reflect.Type, key string) (reflect.Type, bool) {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if t.Kind() != reflect.Struct {
		return nil, false
	}
	for i := range t.NumField() {
		f := t.Field(i)
		if tag, _, _ := strings.Cut(f.Tag.Get("koanf"), ","); tag == key && f.IsExported() {
			return f.Type, true
		}
	}
	return nil, false
}

func joinKey(at, k string) string {
	if at == "" {
		return k
	}
	return at + "." + k
}

// upstreamOrder returns the upstream names in the order the YAML lists them,
// then any that only the environment added, sorted.
func upstreamOrder(data []byte, ups map[string]*UpstreamConfig) []string {
	var order []string
	var doc yamlv3.Node
	if yamlv3.Unmarshal(data, &doc) == nil && len(doc.Content) > 0 {
		root := doc.Content[0]
		for i := 0; i+1 < len(root.Content); i += 2 {
			if root.Content[i].Value != "upstreams" {
				continue
			}
			m := root.Content[i+1]
			for j := 0; j+1 < len(m.Content); j += 2 {
				if _, ok := ups[m.Content[j].Value]; ok {
					order = append(order, m.Content[j].Value)
				}
			}
		}
	}
	var rest []string
	for n := range ups {
		if !slices.Contains(order, n) {
			rest = append(rest, n)
		}
	}
	sort.Strings(rest)
	return append(order, rest...)
}

// Normalize fills defaults. It is idempotent.
func (c *Config) Normalize() {
	if c.Listen == "" {
		c.Listen = DefaultListen
	}
	if c.ToolSeparator == "" {
		c.ToolSeparator = routing.DefaultSeparator
	}
	for _, u := range c.Upstreams {
		if u == nil {
			continue
		}
		if u.Transport == "" {
			switch {
			case u.Command != "":
				u.Transport = TransportStdio
			case u.URL != "":
				u.Transport = TransportStreamableHTTP
			}
		}
	}
}

var upstreamNameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]*$`)

// Validate reports every problem at once, each naming its key. It has no side
// effects and starts nothing.
func (c *Config) Validate() error {
	var errs []error
	bad := func(key, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", key, fmt.Sprintf(format, args...)))
	}
	if err := routing.CheckSeparator(c.ToolSeparator); err != nil {
		bad("tool_separator", "%v", err)
	}
	if c.SessionIdleTimeout < 0 {
		bad("session_idle_timeout", "negative duration %s", c.SessionIdleTimeout)
	}
	if c.MaxSessions < 0 {
		bad("max_sessions", "negative value %d; want a positive number of sessions (0 = default %d)", c.MaxSessions, DefaultMaxSessions)
	}
	if c.MaxConnections < 0 {
		bad("max_connections", "negative value %d; want a positive number of connections (0 = default %d)", c.MaxConnections, DefaultMaxConnections)
	}
	prefixes := map[string]string{}
	for _, name := range c.Order() {
		u := c.Upstreams[name]
		key := "upstreams." + name
		if !upstreamNameRE.MatchString(name) {
			bad(key, "invalid upstream name %q: names match [a-z0-9][a-z0-9_-]*", name)
		}
		if u == nil {
			bad(key, "empty upstream: set command (stdio) or url (streamable-http, sse)")
			continue
		}
		switch u.Transport {
		case TransportStdio:
			if u.Command == "" {
				bad(key+".command", "missing: a stdio upstream needs a command")
			}
			if u.URL != "" {
				bad(key+".url", "set for a stdio upstream; use transport streamable-http or sse, or remove it")
			}
			if len(u.Headers) > 0 {
				bad(key+".headers", "set for a stdio upstream; headers apply to HTTP transports only")
			}
		case TransportStreamableHTTP, TransportSSE:
			if u.URL == "" {
				bad(key+".url", "missing: a %s upstream needs a url", u.Transport)
			} else if p, err := url.Parse(u.URL); err != nil || (p.Scheme != "http" && p.Scheme != "https") || p.Host == "" {
				bad(key+".url", "invalid url %q: want http(s)://host/path", u.URL)
			}
			if u.Command != "" || len(u.Args) > 0 || len(u.Env) > 0 || u.Cwd != "" {
				bad(key, "command, args, env and cwd apply to stdio upstreams only (transport is %s)", u.Transport)
			}
		case "":
			bad(key, "no transport: set command (stdio) or url (streamable-http, sse)")
		default:
			bad(key+".transport", "unknown transport %q: want stdio, streamable-http or sse", u.Transport)
		}
		if u.Session != "" && u.Session != SessionShared && u.Session != SessionPerAgent {
			bad(key+".session", "unknown session mode %q: want shared or per_agent", u.Session)
		}
		if u.Timeout < 0 {
			bad(key+".timeout", "negative timeout %s", u.Timeout)
		}
		if u.MaxResponseBytes < 0 {
			bad(key+".max_response_bytes", "negative value %d; want a positive number of bytes (0 = default %d)", u.MaxResponseBytes, DefaultMaxResponseBytes)
		}
		if u.MaxAgentSessions < 0 {
			bad(key+".max_agent_sessions", "negative value %d; want a positive number of sessions (0 = default %d)", u.MaxAgentSessions, DefaultMaxAgentSessions)
		}
		for i, p := range append(slices.Clone(u.Tools.Allow), u.Tools.Deny...) {
			list, j := "allow", i
			if i >= len(u.Tools.Allow) {
				list, j = "deny", i-len(u.Tools.Allow)
			}
			if _, err := path.Match(p, ""); err != nil {
				bad(fmt.Sprintf("%s.tools.%s[%d]", key, list, j), "invalid glob %q: %v", p, err)
			}
		}
		prefix := u.prefix(name)
		if err := routing.CheckPrefix(prefix, c.ToolSeparator); err != nil {
			k := key + ".prefix"
			if u.Prefix == nil {
				k = key // the prefix is the name itself
			}
			bad(k, "%v", err)
		}
		if prefix != "" {
			if other, ok := prefixes[prefix]; ok {
				bad(key, "upstreams %q and %q both expose their tools under the prefix %q; set a distinct prefix on one of them", other, name, prefix)
			} else {
				prefixes[prefix] = name
			}
		}
	}
	if err := authmap.ValidateRules(c.Classify.Rules); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}
