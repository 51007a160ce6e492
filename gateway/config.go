package gateway

import (
	"bytes"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/url"
	"os"
	"reflect"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/knadh/koanf/parsers/yaml"
	"github.com/knadh/koanf/providers/env/v2"
	"github.com/knadh/koanf/v2"
	"github.com/modelcontextprotocol/go-sdk/mcp"
	yamlv3 "go.yaml.in/yaml/v3"

	"github.com/credgate/credgate/authmap"
	"github.com/credgate/credgate/breaker"
	"github.com/credgate/credgate/gateway/state"
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

// DefaultShutdownTimeout is how long calls in flight may run on after a
// shutdown begins, when the config sets no shutdown_timeout: inside the 30s
// grace period Kubernetes gives a pod by default, leaving time to answer the
// calls it ends and to stop the upstreams.
const DefaultShutdownTimeout = 25 * time.Second

// DefaultHealthInterval is how often a connected upstream is probed when the
// config sets no health_interval.
const DefaultHealthInterval = 15 * time.Second

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
	// FastPath lets a plain tools/call skip the SDK's machinery (issue 12):
	// answered by the gateway's own front (fastpath.go) and sent to a
	// streamable-HTTP upstream by the gateway itself (rawcall.go), with the
	// same policy, routing, breakers, credentials, classification, metrics
	// and logs. Calls it cannot take go the full way. If unset, defaults to
	// true; false sends every call through the SDK.
	FastPath *bool `koanf:"fast_path"`
	// Upstreams are the MCP servers to federate, by name.
	Upstreams map[string]*UpstreamConfig `koanf:"upstreams"`
	// Classify holds the ops' own failure-classification rules.
	Classify ClassifyConfig `koanf:"classify"`

	// Lifecycle and health (issue 6, items 9 and 11).

	// ShutdownTimeout bounds a graceful shutdown (SIGTERM, SIGINT, Close):
	// new calls are refused at once, calls in flight get until this deadline
	// to finish, and those still running then end with a typed
	// upstream_unavailable failure before the upstreams are stopped. If zero,
	// defaults to 25s.
	ShutdownTimeout time.Duration `koanf:"shutdown_timeout"`
	// HealthInterval is how often each connected upstream is probed (MCP
	// ping) while it is idle; a probe that fails marks the upstream down and
	// reconnects it. Each upstream may override it. If zero, defaults to 15s.
	HealthInterval time.Duration `koanf:"health_interval"`
	// AgentTimeout bounds how long an upstream's elicitation or sampling
	// request waits for the agent's answer. That wait does not count
	// against the upstream's timeout: a person may take minutes over a
	// form. If zero, defaults to 10m.
	AgentTimeout time.Duration `koanf:"agent_timeout"`

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
	// MaxSessionsPerAgent caps the sessions one authenticated agent (an
	// API key, a token subject) holds at once, so that one agent cannot
	// take max_sessions from the others. If zero, defaults to a tenth of
	// max_sessions, at least 10 (or max_sessions when it is lower). Ignored
	// without agent authentication and when Stateless.
	MaxSessionsPerAgent int `koanf:"max_sessions_per_agent"`
	// MaxConnections caps the HTTP connections served at once; further
	// connections wait in the listen backlog until one closes. If zero,
	// defaults to 1024.
	MaxConnections int `koanf:"max_connections"`

	// Credential lifecycle (issue 7): see credconfig.go.

	// Credentials are the named credentials upstreams use (upstreams.<name>.credential
	// and .credentials), by name ([a-z0-9][a-z0-9_-]*). If empty, upstreams
	// send only their static headers and env, as before.
	Credentials map[string]authmap.CredentialConfig `koanf:"credentials"`
	// Lifecycle holds the expiry watch's timings and the start-up policy.
	// Zero fields take their defaults (check_interval 5m, expiry_warning
	// 60m, refresh_before 10m, startup.fail_on expired).
	Lifecycle authmap.LifecycleConfig `koanf:"lifecycle"`
	// Admin configures the ops endpoints (/health, /admin/*): admin.token
	// guards them, admin.listen serves them on an address of their own. If
	// both are zero, the admin endpoints do not exist and /health answers
	// only a gateway that serves unauthenticated agents on loopback.
	Admin AdminConfig `koanf:"admin"`
	// Webhooks configures the rotation webhooks. If webhooks.secret is zero,
	// POST /webhooks/rotate/<name> does not exist.
	Webhooks WebhooksConfig `koanf:"webhooks"`

	// Agent authentication and policy (issue 9): see authconfig.go.

	// Auth is how agents authenticate on /mcp. If zero, they do not, and the
	// gateway serves only on a loopback address unless AllowUnauthenticated.
	Auth AuthConfig `koanf:"auth"`
	// Policies say what each authenticated agent may use. If empty, an
	// agent may use what its key allows (everything if it sets nothing).
	Policies []PolicyConfig `koanf:"policies"`
	// AllowUnauthenticated lets a gateway without auth serve on an address
	// other machines can reach. If false, it refuses to start there.
	AllowUnauthenticated bool `koanf:"allow_unauthenticated"`
	// AllowedOrigins are the browser origins (https://app.example.com) that
	// may call /mcp; a request with another Origin gets 403, one without
	// Origin passes. If empty, only same-origin browser requests pass.
	AllowedOrigins []string `koanf:"allowed_origins"`
	// AllowedHosts are the names the gateway answers to in the Host header,
	// on every endpoint (DNS-rebinding protection); "*.example.com" covers
	// the names under it, "*" any. IP addresses and localhost are always
	// accepted, and so are the names in listen and admin.listen. If empty,
	// only those.
	AllowedHosts []string `koanf:"allowed_hosts"`

	// Telemetry configures OpenTelemetry traces (see trace.go). Off unless
	// an OTLP endpoint is set here or in the environment.
	Telemetry TelemetryConfig `koanf:"telemetry"`
	// Notify lists where alerts go (issue 10): see notifyconfig.go. If
	// empty, nobody is notified.
	Notify []NotifyConfig `koanf:"notify"`
	// Routing (issue 8): see routes.go.

	// Routes send each call of an exposed tool to the first usable of
	// several targets (<upstream>__<tool>), and on to the next when one
	// cannot serve it. If empty, each tool is served by the upstream that
	// lists it.
	Routes []routing.RouteConfig `koanf:"routes"`
	// Routing holds the routing options. If zero, a routed tool with no
	// usable target stays listed and fails fast.
	Routing routing.Config `koanf:"routing"`
	// State is where replicas share state (issue 11): in memory, for one
	// replica (the default), or in Redis with state.redis; see shared.go.
	State state.Config `koanf:"state"`

	// Transport security (issue 9).

	// TLS serves HTTPS (optionally requiring client certificates); see tls.go.
	// If tls.cert_file is empty, the gateway serves plain HTTP.
	TLS TLSConfig `koanf:"tls"`

	// order is the upstreams' order in the config file; names that came only
	// from the environment follow, sorted.
	order []string
	// templates maps the key of each value that held ${NAME} references to
	// its text before expansion, for error messages.
	templates map[string]string
	// loadWarnings are what loading skipped or ignored (see LoadWarnings).
	loadWarnings []string
}

// LoadWarnings lists what loading the config skipped or ignored without
// failing, each naming its key: a desktop client's settings that mean nothing
// to the gateway, and disabled servers. The CLI prints them.
func (c *Config) LoadWarnings() []string { return c.loadWarnings }

// shown quotes a config value for an error message: the text the file had
// before ${NAME} expansion when it had references, so that no message shows
// an expanded value (a secret, often).
func (c *Config) shown(key, v string) string {
	if t, ok := c.templates[key]; ok {
		return fmt.Sprintf("%q (before expansion)", t)
	}
	return quoteShort(v)
}

// maxShownValue is the longest token-like value a config error quotes
// whole.
const maxShownValue = 20

// quoteShort quotes v for a config error: whole, unless it looks like a
// token (longer than maxShownValue, of the characters API keys are made
// of): then its first 4 characters and its length. A value in the wrong key
// (a token pasted into timeout or provider) was quoted whole, in
// validate's output and, on a reload, in /health and the events (found
// trying the gateway from outside); what such keys take is short, or has
// spaces or colons (a time, an address).
func quoteShort(v string) string {
	tokenLike := func(w string) bool {
		return len(w) > maxShownValue && !strings.ContainsFunc(w, func(r rune) bool {
			return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("_-.~+/=", r))
		})
	}
	if !slices.ContainsFunc(strings.Fields(v), tokenLike) { // "Bearer <token>" too
		return fmt.Sprintf("%q", v)
	}
	return fmt.Sprintf("%q… (%d characters, not shown whole: it may be a secret)", v[:min(4, len(v))], len(v))
}

// shownURL is shown for a URL, with its password and the values of its
// secret query parameters (api_key=, token=, ...) replaced by [REDACTED]
// (issue 6 item 13: validate output never shows a secret), whether or not
// the URL parses: a URL that does not is the one an error shows.
func (c *Config) shownURL(key, v string) string {
	if t, ok := c.templates[key]; ok {
		return fmt.Sprintf("%q (before expansion)", redactURLText(t))
	}
	return fmt.Sprintf("%q", redactURLText(v))
}

// validHeaderName reports whether h is an HTTP header name (an RFC 9110
// token).
func validHeaderName(h string) bool {
	return h != "" && !strings.ContainsFunc(h, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("!#$%&'*+-.^_`|~", r))
	})
}

// redactURLText hides the password and the secret query parameter values in
// s, a URL that may not parse.
func redactURLText(s string) string {
	rest, frag, _ := strings.Cut(s, "#")
	base, query, hasQuery := strings.Cut(rest, "?")
	if _, after, ok := strings.Cut(base, "://"); ok {
		authority, _, _ := strings.Cut(after, "/")
		if at := strings.LastIndex(authority, "@"); at >= 0 {
			if user, _, ok := strings.Cut(authority[:at], ":"); ok {
				start := len(base) - len(after)
				base = base[:start] + user + ":" + authmap.Redacted + after[at:]
			}
		}
	}
	out := base
	if hasQuery {
		params := strings.Split(query, "&")
		for i, p := range params {
			if k, _, ok := strings.Cut(p, "="); ok && secretName(k) {
				params[i] = k + "=" + authmap.Redacted
			}
		}
		out += "?" + strings.Join(params, "&")
	}
	if frag != "" || strings.Contains(s, "#") {
		out += "#" + frag
	}
	return out
}

// knownProvider reports whether p is a built-in provider (or an alias of
// one) or one that a classify rule defines.
func (c *Config) knownProvider(p string) bool {
	if authmap.NormalizeProvider(p) != "" {
		return true
	}
	return slices.ContainsFunc(c.Classify.Rules, func(r authmap.Rule) bool { return r.Provider == p })
}

// CheckListen reports whether addr is a listen address: host:port with a
// numeric port; the host may be empty (all interfaces).
func CheckListen(addr string) error {
	const want = "want host:port, e.g. 127.0.0.1:8094"
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		if n, err := strconv.Atoi(addr); err == nil && n >= 0 && n <= 65535 {
			return fmt.Errorf("want host:port, e.g. 127.0.0.1:%d", n)
		}
		return errors.New(want)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
		return fmt.Errorf("invalid port %q: %s", port, want)
	}
	return nil
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
	// ProtocolVersion is the MCP version the gateway asks the upstream
	// for; the upstream may answer with an older one. If empty, the newest
	// the gateway speaks (2026-07-28), with which the upstream's requests
	// (sampling, elicitation) come tied to the call that caused them, so a
	// shared session routes them whatever the agents in flight. An older
	// one costs some servers less per call (the go-sdk's, measured by
	// `make bench`), and the gateway translates to what each agent speaks.
	ProtocolVersion string `koanf:"protocol_version"`
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

	// Issue 6 (no false alarms).

	// ClassifyResults opts in to reading the upstream's successful tool
	// results (isError false) for provider errors, for servers known to
	// report them as normal text. Even then only a structured report counts:
	// a provider's error body with a status or an error code
	// (`401 {"message":"Bad credentials"}`), never a phrase alone. If false
	// (the default), successful results pass through untouched (secrets
	// aside: see redact.go).
	ClassifyResults bool `koanf:"classify_results"`

	// HealthInterval overrides the top-level health_interval for this
	// upstream. If zero, the top-level value applies.
	HealthInterval time.Duration `koanf:"health_interval"`

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

	// Issue 7 (credential lifecycle): Credential above binds to
	// credentials.<name> when that is defined.

	// Credentials choose a credential per tool: the first entry whose tools
	// match the upstream's own tool name wins; a tool no entry matches uses
	// Credential. If empty, every call uses Credential.
	Credentials []ToolCredential `koanf:"credentials"`

	// Issue 8 (circuit breakers).

	// Breaker tunes the upstream's circuit breaker and those of the
	// credentials used on it: breaker: {failures: 5, open_timeout: 30s,
	// half_open_requests: 1, quota_cooldown: 15m}. Zero fields take those
	// defaults (see [breaker.Config]).
	Breaker breaker.Config `koanf:"breaker"`
}

// ToolFilter selects tools by glob patterns on the upstream's own tool names
// ('*' any run of characters, '/' included; '?' one character; "[a-z]" a
// class; see [routing.Glob]). Deny wins over Allow; an empty Allow allows
// all. The filter holds for every name forwarded to the upstream, listed or
// not.
type ToolFilter struct {
	Allow []string `koanf:"allow"`
	Deny  []string `koanf:"deny"`

	// compiled is Allow and Deny compiled once, by Normalize at load; nil
	// until then (or when a pattern is invalid, which Validate reports).
	compiled *routing.Filter
}

// Allowed reports whether the filter lets the tool through. A filter that was
// never normalized is compiled on the spot; one with an invalid pattern lets
// nothing through.
func (f ToolFilter) Allowed(name string) bool {
	c := f.compiled
	if c == nil {
		var err error
		if c, err = routing.NewFilter(f.Allow, f.Deny); err != nil {
			return false
		}
	}
	return c.Allowed(name)
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

// shutdownTimeout returns the effective shutdown deadline.
func (c *Config) shutdownTimeout() time.Duration {
	if c.ShutdownTimeout <= 0 {
		return DefaultShutdownTimeout
	}
	return c.ShutdownTimeout
}

// DefaultAgentTimeout is how long an upstream's request to an agent waits
// for its answer when the config sets no agent_timeout.
const DefaultAgentTimeout = 10 * time.Minute

// agentTimeout returns the effective agent_timeout.
func (c *Config) agentTimeout() time.Duration {
	if c.AgentTimeout <= 0 {
		return DefaultAgentTimeout
	}
	return c.AgentTimeout
}

// healthInterval returns how often upstream u is probed.
func (c *Config) healthInterval(u *UpstreamConfig) time.Duration {
	switch {
	case u != nil && u.HealthInterval > 0:
		return u.HealthInterval
	case c.HealthInterval > 0:
		return c.HealthInterval
	}
	return DefaultHealthInterval
}

// sessionIdleTimeout returns the effective idle timeout of agent sessions.
// fastPath reports whether fast_path is on (the default).
func (c *Config) fastPath() bool { return c.FastPath == nil || *c.FastPath }

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

// maxSessionsPerAgent returns the effective cap on one agent's sessions.
func (c *Config) maxSessionsPerAgent() int {
	if c.MaxSessionsPerAgent > 0 {
		return c.MaxSessionsPerAgent
	}
	n := c.maxSessions()
	return max(n/10, min(n, 10))
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

// LoadConfig reads the YAML file at path, or a desktop client's JSON config
// (mcpServers; see desktop.go), expands ${NAME} references in its values
// from environ (os.Environ() form; see expand.go), applies CREDGATE_*
// overrides from environ, fills defaults and validates. Every problem is
// reported at once, one a line, each naming its key (and the variable, for
// an override). What was skipped or ignored is in [Config.LoadWarnings].
func LoadConfig(path string, environ []string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	cfg, err := ParseConfig(data, environ)
	if err == nil && len(bytes.TrimSpace(data)) == 0 && len(cfg.Upstreams) == 0 {
		// An editor or a redirect caught mid-write, or a mount gone empty,
		// and nothing in the environment: never a config to run, and on a
		// reload it would remove every upstream.
		return nil, fmt.Errorf("config: %s is empty", path)
	}
	return cfg, err
}

// ParseConfig is [LoadConfig] for YAML already in memory. environ supplies
// the CREDGATE_* overrides and the values of ${NAME} references.
func ParseConfig(data []byte, environ []string) (*Config, error) {
	return parseConfig(data, loadOptions{environ: environ})
}

// loadOptions are parseConfig's inputs besides the file.
type loadOptions struct {
	environ []string // os.Environ() form: CREDGATE_* overrides and ${NAME} values
	// lookup, if set, resolves ${NAME} references instead of environ.
	lookup func(name string) (string, bool)
}

// parseConfig loads a config in one pass that reports every problem: the
// file's raw values are expanded (${NAME}) and, for a desktop client's file,
// translated into upstreams; then the file and the environment are each
// checked against the Config type (unknown keys, values of the wrong type)
// before decoding, so that a bad value is reported with the key it is at,
// and with the variable that set it, instead of stopping the decoder; last
// comes Validate.
func parseConfig(data []byte, o loadOptions) (*Config, error) {
	raw, listed, err := parseRaw(data)
	if err != nil {
		return nil, err
	}
	var errs []error
	var d *desktop
	if isDesktop(raw) {
		d = &desktop{}
		d.dropForeignKeys(raw)
	}
	exp := newExpander(o.environ)
	if o.lookup != nil {
		exp.lookup = o.lookup
	}
	exp.tree(raw, "")
	errs = append(errs, exp.errs...)
	order := listed["upstreams"]
	if d != nil {
		d.translate(raw, listed)
		errs = append(errs, d.errs...)
		order = append(order, d.order...)
	}
	// Messages show a value's text before expansion, looked up by the key
	// the value went to.
	templates := exp.templates
	if d != nil {
		templates = map[string]string{}
		for k, v := range exp.templates {
			if uk, ok := d.upstreamKey(k); ok {
				k = uk
			}
			templates[k] = v
		}
	}
	fileCheck := &typeCheck{templates: templates}
	fileCheck.fields(raw, reflect.TypeFor[Config](), "")
	errs = append(errs, fileCheck.errs...)

	envVars := map[string]string{}
	fromEnv, err := env.Provider(".", env.Opt{
		Prefix: EnvPrefix,
		TransformFunc: func(name, value string) (string, any) {
			key, v := envKey(name, value)
			key = envUpstreamKey(raw, key)
			if key != "" {
				envVars[key] = name
			}
			return key, v
		},
		EnvironFunc: func() []string { return o.environ },
	}).Read()
	if err != nil {
		return nil, fmt.Errorf("config: environment: %w", err)
	}
	envCheck := &typeCheck{envVars: envVars}
	envCheck.fields(fromEnv, reflect.TypeFor[Config](), "")
	errs = append(errs, envCheck.errs...)

	k := koanf.New(".")
	if err := k.Load(rawMap(raw), nil); err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	if err := k.Load(rawMap(fromEnv), nil); err != nil {
		return nil, fmt.Errorf("config: environment: %w", err)
	}
	var cfg Config
	if err := k.UnmarshalWithConf("", &cfg, koanf.UnmarshalConf{Tag: "koanf"}); err != nil {
		// The checks above should leave the decoder nothing to refuse.
		errs = append(errs, fmt.Errorf("config: %w", err))
	}
	cfg.order = upstreamOrder(order, cfg.Upstreams)
	cfg.templates = templates
	for key := range envVars {
		delete(cfg.templates, key) // the environment's value replaced the file's
	}
	if d != nil {
		cfg.loadWarnings = d.warnings
	}
	cfg.Normalize()
	// A value reported above was dropped (or left unexpanded); what Validate
	// says about its key, or about the upstream missing it, is a consequence.
	// Keys are compared as the file has them (mcpServers.<name>.url rather
	// than upstreams.<name>.url for a desktop client's file).
	rename := func(s string) string { return s }
	if d != nil {
		rename = d.renameKey
	}
	var reported []string
	for _, k := range slices.Concat(fileCheck.dropped, envCheck.dropped, slices.Collect(maps.Keys(exp.failed))) {
		reported = append(reported, rename(k))
	}
	if d != nil {
		reported = append(reported, d.reported...)
	}
	for _, e := range flatten(cfg.Validate()) {
		if consequence(rename(e.Error()), reported) {
			continue
		}
		// A bad value the environment set: name the variable.
		if key, msg, ok := strings.Cut(e.Error(), ": "); ok && envVars[key] != "" {
			e = &keyError{key: key, env: envVars[key], msg: msg}
		}
		errs = append(errs, e)
	}
	if len(errs) > 0 {
		return nil, joinLines(errs, rename)
	}
	return &cfg, nil
}

// parseRaw parses the file, and lists the entries of its upstreams and
// desktop-client server mappings in file order.
func parseRaw(data []byte) (raw map[string]any, listed map[string][]string, err error) {
	raw = map[string]any{}
	listed = map[string][]string{}
	if len(bytes.TrimSpace(data)) == 0 {
		return raw, listed, nil
	}
	raw, err = yaml.Parser().Unmarshal(data)
	if err != nil {
		// VS Code's mcp.json (and other clients' settings) is JSONC:
		// comments and trailing commas. Tried only when the file does not
		// parse as it is, so no YAML file is ever read differently.
		clean, ok := stripJSONC(data)
		if !ok {
			return nil, nil, fmt.Errorf("config: %w", yamlLine(err))
		}
		if raw, err = yaml.Parser().Unmarshal(clean); err != nil {
			return nil, nil, fmt.Errorf("config: %w", yamlLine(err))
		}
		data = clean
	}
	if raw == nil {
		raw = map[string]any{} // a file of comments only
	}
	var doc yamlv3.Node
	if yamlv3.Unmarshal(data, &doc) == nil && len(doc.Content) > 0 {
		root := doc.Content[0]
		for i := 0; i+1 < len(root.Content); i += 2 {
			key := root.Content[i].Value
			if key != "upstreams" && !slices.Contains(desktopKeys, key) {
				continue
			}
			m := root.Content[i+1]
			for j := 0; j+1 < len(m.Content); j += 2 {
				listed[key] = append(listed[key], m.Content[j].Value)
			}
		}
	}
	return raw, listed, nil
}

// reParserLine matches the YAML library's parser errors, whose line it
// counts from 0 ("line 1" for an unclosed "[" on the file's second line);
// its scanner's, which it counts from 1, include other "did not find
// expected ..." messages (a comment or line break, an alphabetic or numeric
// character, whitespace or line break, a tag URI, ...).
var reParserLine = regexp.MustCompile(`^yaml: line (\d+): (did not find expected (?:key|node content|<document start>|',' or '\]'|',' or '\}'|'-' indicator))$`)

// yamlLine returns err, a YAML syntax error, with the line of a parser
// error counted from 1 as an editor counts it, as the library's scanner
// errors already are (the line was the one before the problem's: found
// trying the gateway from outside).
//
// Unmarshal errors ("yaml: unmarshal errors:" and one indented line each,
// such as a key defined twice) become one line each, "yaml: line N: ...":
// the header and its lines showed as separate problems.
func yamlLine(err error) error {
	if rest, ok := strings.CutPrefix(err.Error(), "yaml: unmarshal errors:\n"); ok {
		var errs []string
		for l := range strings.Lines(rest) {
			if l = strings.TrimSpace(l); l != "" {
				errs = append(errs, "yaml: "+l)
			}
		}
		return errors.New(strings.Join(errs, "; "))
	}
	m := reParserLine.FindStringSubmatch(err.Error())
	if m == nil {
		return err
	}
	n, _ := strconv.Atoi(m[1])
	if strings.HasSuffix(m[2], " key") || strings.HasSuffix(m[2], "'-' indicator") {
		// The library names the line where the enclosing block starts
		// (unless that is the file's first line): the problem is there
		// or further down (an indented "- x" on line 5 under a mapping
		// from line 3 said "line 3").
		return fmt.Errorf("yaml: at or after line %d: %s", n+1, m[2])
	}
	return fmt.Errorf("yaml: line %d: %s", n+1, m[2])
}

// rawMap is a koanf provider of a map already read.
type rawMap map[string]any

func (m rawMap) ReadBytes() ([]byte, error)    { return nil, errors.New("rawMap: no bytes") }
func (m rawMap) Read() (map[string]any, error) { return m, nil }

// flatten lists the errors joined in err.
func flatten(err error) []error {
	if err == nil {
		return nil
	}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		var out []error
		for _, e := range j.Unwrap() {
			out = append(out, flatten(e)...)
		}
		return out
	}
	return []error{err}
}

// consequence reports whether a Validate error is about a key already
// reported (dropped or left unexpanded), one under it, or the upstream or
// section holding it.
func consequence(msg string, reported []string) bool {
	key, _, ok := strings.Cut(msg, ": ")
	if !ok {
		return false
	}
	for _, r := range reported {
		if key == r || strings.HasPrefix(key, r+".") || strings.HasPrefix(key, r+"[") ||
			(strings.Contains(key, ".") && strings.HasPrefix(r, key+".")) {
			return true
		}
	}
	return false
}

// joinLines joins errors one problem a line, without empty lines, each line
// passed through rename.
func joinLines(errs []error, rename func(string) string) error {
	var lines []string
	for _, e := range errs {
		for _, f := range flatten(e) {
			for _, l := range strings.Split(f.Error(), "\n") {
				if strings.TrimSpace(l) != "" {
					lines = append(lines, rename(l))
				}
			}
		}
	}
	if len(lines) == 0 {
		return nil
	}
	return errors.New(strings.Join(lines, "\n"))
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

// envUpstreamKey maps upstreams.demo_http.x to upstreams.demo-http.x when
// the file has an upstream demo-http and none named demo_http: a shell
// cannot export a variable with '-' in its name, so CREDGATE_UPSTREAMS__
// DEMO_HTTP__URL is the only way to reach that upstream from the
// environment (before, it added an empty upstream demo_http instead). The
// same holds for credentials (CREDGATE_CREDENTIALS__GH_PAT__... reaches
// gh-pat; it added a credential gh_pat: found trying the gateway from
// outside).
func envUpstreamKey(raw map[string]any, key string) string {
	for _, section := range []string{"upstreams", "credentials"} {
		rest, ok := strings.CutPrefix(key, section+".")
		if !ok {
			continue
		}
		name, tail, hasTail := strings.Cut(rest, ".")
		named, _ := raw[section].(map[string]any)
		if _, exists := named[name]; exists || !strings.Contains(name, "_") {
			return key
		}
		var match string
		for n := range named {
			if strings.ReplaceAll(n, "-", "_") == name {
				if match != "" {
					return key // ambiguous (a-b_c and a_b-c): leave it to Validate
				}
				match = n
			}
		}
		if match == "" {
			return key
		}
		if !hasTail {
			return section + "." + match
		}
		return section + "." + match + "." + tail
	}
	return key
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

// upstreamOrder returns the upstream names in the order the file lists
// them, then any that only the environment added, sorted.
func upstreamOrder(listed []string, ups map[string]*UpstreamConfig) []string {
	var order []string
	for _, n := range listed {
		if _, ok := ups[n]; ok && !slices.Contains(order, n) {
			order = append(order, n)
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
		u.Tools.compiled, _ = routing.NewFilter(u.Tools.Allow, u.Tools.Deny) // an invalid glob is Validate's to report
		u.compileToolCredentials()
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
	if err := CheckListen(c.Listen); c.Listen != "" && err != nil {
		bad("listen", "invalid address %s: %v", c.shown("listen", c.Listen), err)
	}
	if err := routing.CheckSeparator(c.ToolSeparator); err != nil {
		bad("tool_separator", "%v", err)
	}
	if c.ShutdownTimeout < 0 {
		bad("shutdown_timeout", "negative duration %s", c.ShutdownTimeout)
	}
	if c.AgentTimeout < 0 {
		bad("agent_timeout", "negative duration %s", c.AgentTimeout)
	}
	if err := c.Telemetry.validate(); err != nil {
		errs = append(errs, err)
	}
	if c.HealthInterval < 0 {
		bad("health_interval", "negative duration %s", c.HealthInterval)
	}
	if c.SessionIdleTimeout < 0 {
		bad("session_idle_timeout", "negative duration %s", c.SessionIdleTimeout)
	}
	if c.MaxSessions < 0 {
		bad("max_sessions", "negative value %d; want a positive number of sessions (0 = default %d)", c.MaxSessions, DefaultMaxSessions)
	}
	if c.MaxSessionsPerAgent < 0 {
		bad("max_sessions_per_agent", "negative value %d; want a positive number of sessions (0 = default: a tenth of max_sessions, at least 10)", c.MaxSessionsPerAgent)
	}
	if c.MaxConnections < 0 {
		bad("max_connections", "negative value %d; want a positive number of connections (0 = default %d)", c.MaxConnections, DefaultMaxConnections)
	}
	errs = append(errs, c.validateOAuth()...)
	errs = append(errs, c.validateTLS()...)
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
				bad(key+".url", "invalid url %s: want http(s)://host/path", c.shownURL(key+".url", u.URL))
			} else if why := authmap.BadPort(p); why != "" {
				bad(key+".url", "%s in url %s", why, c.shownURL(key+".url", u.URL))
			}
			for _, h := range sortedKeys(u.Headers) {
				// Checked here, or every request fails with net/http's
				// "invalid header field" and the upstream is retried forever.
				// The value is never shown: it is usually a secret.
				if !validHeaderName(h) {
					bad(key+".headers."+h, "invalid header name: want letters, digits and !#$%%&'*+-.^_`|~, no spaces")
				}
				if strings.ContainsFunc(u.Headers[h], func(r rune) bool { return (r < ' ' && r != '\t') || r == 0x7f }) {
					bad(key+".headers."+h, "the value contains a line break or another control character, which HTTP headers cannot carry")
				}
			}
			if u.Command != "" || len(u.Args) > 0 || len(u.Env) > 0 || u.Cwd != "" {
				bad(key, "command, args, env and cwd apply to stdio upstreams only (transport is %s)", u.Transport)
			}
		case "":
			bad(key, "no transport: set command (stdio) or url (streamable-http, sse)")
		default:
			bad(key+".transport", "unknown transport %s: want stdio, streamable-http or sse", c.shown(key+".transport", u.Transport))
		}
		if u.Session != "" && u.Session != SessionShared && u.Session != SessionPerAgent {
			bad(key+".session", "unknown session mode %s: want shared or per_agent", c.shown(key+".session", u.Session))
		}
		if v := u.ProtocolVersion; v != "" && !slices.Contains(mcp.SupportedProtocolVersions(), v) {
			bad(key+".protocol_version", "unknown MCP version %s: want one of %s", c.shown(key+".protocol_version", v), strings.Join(mcp.SupportedProtocolVersions(), ", "))
		}
		if u.Provider != "" && !c.knownProvider(u.Provider) {
			msg := fmt.Sprintf("unknown provider %s", c.shown(key+".provider", u.Provider))
			if s := suggest(u.Provider, authmap.Providers()); s != "" {
				msg += fmt.Sprintf(" (did you mean %s?)", s)
			}
			bad(key+".provider", "%s: want one of %s, or a provider a classify rule names", msg, strings.Join(authmap.Providers(), ", "))
		}
		if u.Timeout < 0 {
			bad(key+".timeout", "negative timeout %s", u.Timeout)
		}
		if u.HealthInterval < 0 {
			bad(key+".health_interval", "negative duration %s", u.HealthInterval)
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
			if _, err := routing.CompileGlob(p); err != nil {
				k := fmt.Sprintf("%s.tools.%s[%d]", key, list, j)
				bad(k, "%v", err)
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
	errs = append(errs, c.validateCredentials(), c.validateRoutes())
	errs = append(errs, c.validateAuth())
	errs = append(errs, c.validateNotify())
	errs = append(errs, c.State.Validate("state", func(u string) string { return c.shownURL("state.redis.url", u) }))
	for _, name := range slices.Sorted(maps.Keys(c.Upstreams)) {
		if u := c.Upstreams[name]; u != nil {
			if err := u.Breaker.Validate("upstreams." + name + ".breaker"); err != nil {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}
