package gateway

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"reflect"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/credgate/credgate/authmap"
	"github.com/credgate/credgate/breaker"
)

// Config hot reload (issue 8).
//
// A reload validates the new config in full before it touches anything, then
// puts it in force in one step: a new snapshot (see snapshot.go) swapped in
// atomically. Calls in flight keep the snapshot, and so the *upstream, they
// started with. Only what changed restarts:
//
//	upstream     unchanged   the same *upstream: its session, child and catalog
//	             added       created and started; its tools appear once it listed them
//	             removed     out of the snapshot at once (no new calls); it drains
//	                         (calls in flight finish, up to its timeout) and stops
//	             changed     a new *upstream starts beside the old one, which keeps
//	                         serving until the new one's first connection attempt
//	                         is done (make before break); then the new one takes
//	                         new calls and the old one drains and stops
//	credentials  added, changed: loaded before they are in force (a credential
//	             the startup policy would refuse rejects the reload); removed:
//	             dropped; unchanged: kept with their state (authmap.Set)
//	breakers     re-applied; state is kept (breaker.Set)
//	classify     rules swapped at once
//	catalog      rebuilt: agents get list_changed when their tools change
//
// "Changed" compares everything under upstreams.<name> except breaker (applied
// live), plus which of the config's credentials the upstream binds: a change
// of a credential's own settings is the credential registry's to apply (the
// credential is replaced and its new value reaches the upstream as a
// rotation would), not the upstream's.
//
// A call that reaches a retired upstream after it drained (it resolved the
// upstream just before the swap) is sent to its successor when there is one,
// else answered with a retryable upstream_unavailable failure.
//
// Settings read once at start-up (restartKeys) keep their old values; a
// reload that changes them says so in its log and in /health
// (config.restart_required).

// reloadState is the reload side of the Server.
type reloadState struct {
	// mu serializes reloads with each other and with Start and Close's
	// cancel, so that no upstream is started after Close began waiting.
	mu sync.Mutex
	// what the reload in progress changed (changeSummary), for its event;
	// under mu.
	what string

	statusMu    sync.Mutex
	lastErr     string    // why the last attempt failed ("" once one succeeds)
	lastAttempt time.Time // zero until the first reload attempt
	restart     []string  // keys changed that need a restart to apply

	retireMu sync.Mutex
	retiring map[*upstream]struct{} // drained upstreams not stopped yet
}

// ConfigHealth is the config block of /health.
type ConfigHealth struct {
	// Version counts the configs put in force: 1 for the one the gateway
	// started with, +1 for each reload that changed something.
	Version int64 `json:"version"`
	// LoadedAt is when the config in force was put in force.
	LoadedAt time.Time `json:"loaded_at"`
	// LastAttemptAt is when a reload was last tried, whatever its outcome.
	LastAttemptAt *time.Time `json:"last_attempt_at,omitempty"`
	// LastError is why the last reload was rejected, while the config in
	// force keeps serving; cleared by the next reload that succeeds.
	LastError string `json:"last_error,omitempty"`
	// Path is the config file reloads read.
	Path string `json:"path,omitempty"`
	// RestartRequired lists the settings the file changes that only a
	// restart applies (they keep their old values until then).
	RestartRequired []string `json:"restart_required,omitempty"`
}

// ErrNoConfigFile is returned by [Server.ReloadConfig] when the gateway was
// not given a config file to re-read ([Options.ConfigFile]).
var ErrNoConfigFile = errors.New("no config file to reload (the gateway was started without one)")

// configHealth returns the config block of /health.
func (g *Server) configHealth() *ConfigHealth {
	s := g.snap.Load()
	h := &ConfigHealth{Version: s.version, LoadedAt: s.loadedAt, Path: g.opts.ConfigFile}
	r := &g.reload
	r.statusMu.Lock()
	defer r.statusMu.Unlock()
	if !r.lastAttempt.IsZero() {
		at := r.lastAttempt
		h.LastAttemptAt = &at
	}
	h.LastError = r.lastErr
	h.RestartRequired = slices.Clone(r.restart)
	return h
}

// configReloaded records the outcome of a reload attempt: ok when the config
// was put in force (or was unchanged), else err says why it was rejected.
// Every attempt, whatever triggered it, ends here once, under the reload
// lock (so hooks added here see attempts in order; they must not reload).
func (g *Server) configReloaded(ok bool, err error, trigger string) {
	g.metrics.configReload(ok)
	what := g.reload.what
	g.reload.what = ""
	defer g.publishConfigReload(trigger, what, err)
	defer g.healthChanged()
	r := &g.reload
	r.statusMu.Lock()
	r.lastAttempt = g.now()
	if ok {
		r.lastErr = ""
		// The snapshot in force changed, its upstreams too once their
		// successors took over: report the routes' active targets as they
		// are now, rather than on the next call or state change.
		g.routesChanged()
	} else if err != nil {
		r.lastErr = g.redact(err.Error())
	}
	msg := r.lastErr
	r.statusMu.Unlock()
	if !ok {
		g.log.Error().Str(fieldErr, msg).Int64("version", g.snap.Load().version).
			Msg("config reload rejected; the config in force keeps serving")
	}
}

// ReloadConfig re-reads the config file ([Options.LoadConfig], else
// [LoadConfig] of [Options.ConfigFile]) and puts it in force (see
// [Server.Reload]). trigger says what asked for it, for the log. A file
// that does not load is rejected like an invalid config: the config in
// force keeps serving and /health shows why.
func (g *Server) ReloadConfig(trigger authmap.Trigger) error {
	load := g.opts.LoadConfig
	if load == nil {
		if g.opts.ConfigFile == "" {
			return ErrNoConfigFile
		}
		path := g.opts.ConfigFile
		load = func() (*Config, error) { return LoadConfig(path, os.Environ()) }
	}
	g.log.Info().Str("trigger", string(trigger)).Str("path", g.opts.ConfigFile).Msg("reloading the config")
	cfg, err := load()
	if err != nil {
		g.reload.mu.Lock()
		defer g.reload.mu.Unlock()
		g.configReloaded(false, err, string(trigger))
		return err
	}
	return g.reload1(cfg, string(trigger))
}

// Reload puts cfg in force without a restart. cfg is validated in full
// first (the same checks as at start-up, the credentials it adds or changes
// loaded); if anything is wrong, nothing changes and the error names the
// problem. Otherwise the new config is swapped in atomically and only what
// changed restarts (see the table at the top of reload.go). Reloads are
// serialized; Reload returns once the new config is in force, while removed
// and replaced upstreams drain in the background.
func (g *Server) Reload(cfg *Config) error { return g.reload1(cfg, "api") }

// reload1 is Reload, for trigger (file, signal, admin, api).
func (g *Server) reload1(cfg *Config, trigger string) error {
	g.reload.mu.Lock()
	defer g.reload.mu.Unlock()
	err := g.reloadLocked(cfg)
	g.configReloaded(err == nil, err, trigger)
	return err
}

// restartKeys are the settings read once at start-up.
var restartKeys = []struct {
	key     string
	changed func(a, b *Config) bool
	keep    func(dst, old *Config)
}{
	{"listen", func(a, b *Config) bool { return a.Listen != b.Listen }, func(d, o *Config) { d.Listen = o.Listen }},
	{"stateless", func(a, b *Config) bool { return a.Stateless != b.Stateless }, func(d, o *Config) { d.Stateless = o.Stateless }},
	{"max_connections", func(a, b *Config) bool { return a.maxConnections() != b.maxConnections() }, func(d, o *Config) { d.MaxConnections = o.MaxConnections }},
	{"max_sessions", func(a, b *Config) bool { return a.maxSessions() != b.maxSessions() }, func(d, o *Config) { d.MaxSessions = o.MaxSessions }},
	{"max_sessions_per_agent", func(a, b *Config) bool { return a.MaxSessionsPerAgent != b.MaxSessionsPerAgent }, func(d, o *Config) { d.MaxSessionsPerAgent = o.MaxSessionsPerAgent }},
	{"session_idle_timeout", func(a, b *Config) bool { return a.sessionIdleTimeout() != b.sessionIdleTimeout() }, func(d, o *Config) { d.SessionIdleTimeout = o.SessionIdleTimeout }},
	{"admin", func(a, b *Config) bool { return !reflect.DeepEqual(a.Admin, b.Admin) }, func(d, o *Config) { d.Admin = o.Admin }},
	{"webhooks", func(a, b *Config) bool { return !reflect.DeepEqual(a.Webhooks, b.Webhooks) }, func(d, o *Config) { d.Webhooks = o.Webhooks }},
	{"notify", func(a, b *Config) bool { return !reflect.DeepEqual(a.Notify, b.Notify) }, func(d, o *Config) { d.Notify = o.Notify }},
	{"telemetry", func(a, b *Config) bool { return a.Telemetry != b.Telemetry }, func(d, o *Config) { d.Telemetry = o.Telemetry }},
	// Agent authentication and the HTTP front (issue 9): keys are read once
	// (a key_credential still rotates live), the front is built at Serve.
	{"auth", func(a, b *Config) bool { return !reflect.DeepEqual(a.Auth, b.Auth) }, func(d, o *Config) { d.Auth = o.Auth }},
	{"allow_unauthenticated", func(a, b *Config) bool { return a.AllowUnauthenticated != b.AllowUnauthenticated }, func(d, o *Config) { d.AllowUnauthenticated = o.AllowUnauthenticated }},
	{"allowed_origins", func(a, b *Config) bool { return !slices.Equal(a.AllowedOrigins, b.AllowedOrigins) }, func(d, o *Config) { d.AllowedOrigins = o.AllowedOrigins }},
	{"allowed_hosts", func(a, b *Config) bool { return !slices.Equal(a.AllowedHosts, b.AllowedHosts) }, func(d, o *Config) { d.AllowedHosts = o.AllowedHosts }},
	// The OAuth resource server and the TLS files are built at New (issue
	// 9); the certificate files themselves reload when they change.
	{"tls", func(a, b *Config) bool { return a.TLS != b.TLS }, func(d, o *Config) { d.TLS = o.TLS }},
	// The shared state's client is made at New and its loops run from
	// Start (issue 11): a new URL or key prefix would need both again.
	{"state", stateChanged, func(d, o *Config) { d.State = o.State }},
}

// stateChanged reports whether the state section differs in effect (an
// unset key_prefix or timeout is the same as its default).
func stateChanged(a, b *Config) bool {
	ra, rb := a.State.Redis, b.State.Redis
	if ra == nil || rb == nil {
		return ra != rb
	}
	return ra.URL != rb.URL || ra.Prefix() != rb.Prefix() || ra.Wait() != rb.Wait() ||
		!reflect.DeepEqual(ra.EncryptionKey, rb.EncryptionKey)
}

// effectiveConfig is cfg with the settings only a restart applies kept at
// their values in old, and the keys of those that differ.
func effectiveConfig(old, cfg *Config) (*Config, []string) {
	eff := *cfg
	var keys []string
	for _, k := range restartKeys {
		if k.changed(old, cfg) {
			keys = append(keys, k.key)
			k.keep(&eff, old)
		}
	}
	return &eff, keys
}

// reloadPlan is what a reload does to the upstreams.
type reloadPlan struct {
	kept     []*upstream          // carried over as they are
	added    []*upstream          // new names
	removed  []*upstream          // names no longer configured
	replaced map[string]*upstream // old name -> new *upstream, for changed settings
}

func (p *reloadPlan) changed() bool {
	return len(p.added) > 0 || len(p.removed) > 0 || len(p.replaced) > 0
}

// plan compares the upstreams in force with cfg's.
func (g *Server) plan(old *snapshot, cfg *Config) *reloadPlan {
	p := &reloadPlan{replaced: map[string]*upstream{}}
	for _, name := range cfg.Order() {
		nc := cfg.Upstreams[name]
		u := old.byName[name]
		switch {
		case u == nil:
			p.added = append(p.added, newUpstream(g, name, nc, cfg.Credentials))
		case sameUpstream(u.cfg, old.cfg.Credentials, nc, cfg.Credentials):
			p.kept = append(p.kept, u)
		default:
			p.replaced[name] = newUpstream(g, name, nc, cfg.Credentials)
		}
	}
	for _, u := range old.upstreams {
		if _, ok := cfg.Upstreams[u.name]; !ok {
			p.removed = append(p.removed, u)
		}
	}
	return p
}

// sameUpstream reports whether an upstream configured as b under credentials
// cb is the same as one configured as a under ca: every setting but the
// breaker's, and the same credentials bound.
func sameUpstream(a *UpstreamConfig, ca map[string]authmap.CredentialConfig, b *UpstreamConfig, cb map[string]authmap.CredentialConfig) bool {
	if a == nil || b == nil {
		return a == b
	}
	return reflect.DeepEqual(comparableUpstream(a), comparableUpstream(b)) &&
		a.defaultCredential(ca) == b.defaultCredential(cb) &&
		slices.Equal(a.boundCredentials(ca), b.boundCredentials(cb))
}

// comparableUpstream is u without what Normalize compiled and without its
// breaker settings, with empty lists and maps as nil, so that equal settings
// compare equal.
func comparableUpstream(u *UpstreamConfig) UpstreamConfig {
	c := *u
	c.Breaker = breaker.Config{}
	c.Tools = ToolFilter{Allow: nilIfEmpty(u.Tools.Allow), Deny: nilIfEmpty(u.Tools.Deny)}
	c.Args = nilIfEmpty(u.Args)
	if len(u.Env) == 0 {
		c.Env = nil
	}
	if len(u.Headers) == 0 {
		c.Headers = nil
	}
	c.Credentials = nil
	for _, tc := range u.Credentials {
		c.Credentials = append(c.Credentials, ToolCredential{Tools: nilIfEmpty(tc.Tools), Credential: tc.Credential})
	}
	if !u.CredentialExpiresAt.IsZero() {
		c.CredentialExpiresAt = u.CredentialExpiresAt.UTC()
	}
	return c
}

func nilIfEmpty[T any](s []T) []T {
	if len(s) == 0 {
		return nil
	}
	return s
}

// sameGlobals reports whether a and b agree on everything but their
// upstreams (compared by plan).
func sameGlobals(a, b *Config) bool {
	x, y := *a, *b
	x.Upstreams, y.Upstreams = nil, nil
	x.templates, y.templates = nil, nil
	x.loadWarnings, y.loadWarnings = nil, nil
	x.order, y.order = nil, nil
	if len(x.Credentials) == 0 {
		x.Credentials = nil
	}
	if len(y.Credentials) == 0 {
		y.Credentials = nil
	}
	if len(x.Classify.Rules) == 0 {
		x.Classify.Rules = nil
	}
	if len(y.Classify.Rules) == 0 {
		y.Classify.Rules = nil
	}
	return reflect.DeepEqual(x, y) && slices.Equal(a.Order(), b.Order()) && breakersEqual(a, b)
}

// breakersEqual reports whether a and b configure the same breakers.
func breakersEqual(a, b *Config) bool { return len(changedBreakers(a, b)) == 0 }

// changedBreakers names the upstreams of both a and b whose breaker
// settings differ; a reload keeps such an upstream (and applies them).
func changedBreakers(a, b *Config) []string {
	var out []string
	for name, u := range b.Upstreams {
		if o := a.Upstreams[name]; o != nil && u != nil && o.Breaker != u.Breaker {
			out = append(out, name)
		}
	}
	return out
}

// reloadLocked validates cfg and puts it in force; g.reload.mu is held.
func (g *Server) reloadLocked(cfg *Config) error {
	select {
	case <-g.stopped:
		return ErrShuttingDown
	default:
	}
	if cfg == nil {
		return errors.New("no config")
	}
	// Validation, all of it before anything changes.
	if err := cfg.Validate(); err != nil {
		return err
	}
	if _, err := authmap.New(&authmap.Options{Rules: cfg.Classify.Rules}); err != nil {
		return err
	}
	routes, err := newRoutes(cfg)
	if err != nil {
		return err
	}
	old := g.snap.Load()
	if len(cfg.Upstreams) == 0 && len(old.cfg.Upstreams) > 0 {
		// Most likely a file cut short (a truncated write, a ConfigMap
		// half-updated), not an intent: the gateway would serve nothing.
		return fmt.Errorf("upstreams: the new config has none; keeping the %d in force (a config cut short?). To remove them all, restart with it", len(old.cfg.Upstreams))
	}
	eff, restart := effectiveConfig(old.cfg, cfg)
	for i, k := range eff.Auth.Keys {
		// auth stays as it was until a restart: the credentials it reads
		// agents' keys from must stay too (a rename of both was taken,
		// and locked the agent out until the restart).
		if _, ok := eff.Credentials[k.KeyCredential]; k.KeyCredential != "" && !ok {
			return fmt.Errorf("auth.keys[%d].key_credential: credential %q, which auth in force reads agent %q's key from, is removed or renamed by the new config, but auth changes take a restart: keep it until then, or restart", i, k.KeyCredential, k.Name)
		}
	}
	for _, name := range eff.Order() {
		// An upstream whose credential the old config defined, and the new
		// one names but does not define (a typo): the upstream would go on
		// without one, and its replacement, refused by its provider, took
		// the working instance down (found trying the gateway). At start-up
		// an undefined name is only a label, with a warning.
		u, ou := eff.Upstreams[name], old.cfg.Upstreams[name]
		if u == nil || ou == nil || u.Credential == "" {
			continue
		}
		if _, defined := eff.Credentials[u.Credential]; defined {
			continue
		}
		if _, was := old.cfg.Credentials[ou.Credential]; was && ou.Credential != "" {
			return fmt.Errorf("upstreams.%s.credential: %q is not defined under credentials, and the upstream sends credential %q now: a typo? (define it, or remove the key to send none)", name, u.Credential, ou.Credential)
		}
	}
	staged, err := g.cred.set.Stage(eff.Lifecycle, eff.Credentials)
	if err != nil {
		return err
	}
	if fresh := staged.Fresh(); len(fresh) > 0 {
		// Loaded before they are in force, so that no call meets a new or
		// changed credential without its value; and checked as at start-up.
		g.cred.stage(fresh)
		// Their events, held until Commit, are published with their
		// scope in this config (credentialScope).
		g.cred.stagedCfg.Store(eff)
		defer g.cred.stagedCfg.Store(nil)
		ctx, cancel := g.stopContext(credentialTimeout)
		_ = staged.Load(ctx, authmap.TriggerConfig)
		cancel()
		if err := staged.Problems(eff.Lifecycle.WithDefaults().Startup); err != nil {
			g.cred.stage(nil)
			g.refreshRedactor()
			return fmt.Errorf("%w\n(credentials a reload adds or changes must pass lifecycle.startup.fail_on, as at start-up)", err)
		}
	}
	p := g.plan(old, eff)
	if !p.changed() && len(staged.Fresh()) == 0 && sameGlobals(old.cfg, eff) {
		g.setRestart(restart)
		g.warnRestart(restart)
		g.log.Info().Int64("version", old.version).Msg("config reloaded: nothing changed")
		g.reload.what = "nothing changed"
		return nil
	}

	// In force from here on; nothing below fails.
	if err := staged.Commit(); err != nil {
		return err // only if something other than a reload changed the credentials
	}
	g.cred.stage(nil)
	_ = g.classifier.SetRules(eff.Classify.Rules) // compiled above
	g.applyBreakers(eff)
	g.updateStaticSecrets(old.cfg, eff)
	for _, w := range eff.Warnings() {
		g.log.Warn().Msg(w)
	}
	g.setRestart(restart)
	g.warnRestart(restart)

	started := g.runCtx != nil
	next := &snapshot{cfg: eff, byName: make(map[string]*upstream, len(eff.Upstreams)), version: old.version + 1, loadedAt: g.now(), routes: routes}
	for _, u := range p.kept {
		next.byName[u.name] = u
	}
	for _, u := range p.added {
		next.byName[u.name] = u
	}
	for name, u := range p.replaced {
		if started {
			next.byName[name] = old.byName[name] // until its successor has tried
		} else {
			next.byName[name] = u
		}
	}
	for _, name := range eff.Order() {
		next.upstreams = append(next.upstreams, next.byName[name])
	}
	g.snap.Store(next)
	g.notify.forgetRemoved(eff)
	policies := !reflect.DeepEqual(old.cfg.Policies, eff.Policies)
	if policies {
		// Agents' grants and rates follow at once (issue 9); their
		// buckets go on with what they hold.
		g.policy.Store(newPolicySet(eff, g.policy.Load()))
	}
	g.catalog.rebuild()
	if policies {
		g.catalog.touch() // what agents may see may have changed
	}
	g.logPlan(next.version, p, changedKeys(old.cfg, eff))
	for _, u := range p.removed {
		u.keepCredentials(old.cfg)
	}
	for name := range p.replaced {
		old.byName[name].keepCredentials(old.cfg)
	}
	if !started {
		g.cred.set.ForgetRetired()
		return nil // Start starts the snapshot's upstreams
	}
	for _, u := range p.removed {
		g.retire(u, "removed from the config")
	}
	for _, u := range p.added {
		g.startUpstream(u)
	}
	if len(p.replaced) == 0 {
		g.cred.set.ForgetRetired()
		return nil
	}
	// Make before break: each successor starts now, and takes over once its
	// first connection attempt is done, connected or not.
	var wait time.Duration
	for _, u := range p.replaced {
		g.startUpstream(u)
		wait = max(wait, g.opts.ConnectTimeout+u.cfg.timeout())
	}
	deadline := time.NewTimer(wait)
	defer deadline.Stop()
	for _, u := range p.replaced {
		select {
		case <-u.tried:
		case <-g.stopped:
		case <-deadline.C:
		}
	}
	cur := g.snap.Load()
	swapped := *cur // the same config, version and routes
	swapped.upstreams, swapped.byName = nil, make(map[string]*upstream, len(cur.byName))
	for _, u := range cur.upstreams {
		if r := p.replaced[u.name]; r != nil {
			u = r
		}
		swapped.upstreams = append(swapped.upstreams, u)
		swapped.byName[u.name] = u
	}
	g.snap.Store(&swapped)
	g.catalog.rebuild()
	for name := range p.replaced {
		g.retire(old.byName[name], "its settings changed; replaced")
	}
	g.updateStaticSecrets()
	g.retainBreakers(eff) // what the replaced ones made meanwhile
	g.cred.set.ForgetRetired()
	return nil
}

// logPlan logs what a reload did to the upstreams, and the other settings
// it changed (changedKeys), and keeps a summary for its event.
func (g *Server) logPlan(version int64, p *reloadPlan, changed []string) {
	names := func(us []*upstream) []string {
		out := make([]string, 0, len(us))
		for _, u := range us {
			out = append(out, u.name)
		}
		return out
	}
	replaced := make([]string, 0, len(p.replaced))
	for name := range p.replaced {
		replaced = append(replaced, name)
	}
	slices.Sort(replaced)
	added, removed := names(p.added), names(p.removed)
	g.log.Info().Int64("version", version).Strs("added", added).Strs("removed", removed).
		Strs("replaced", replaced).Strs("unchanged", names(p.kept)).Strs("changed", changed).Msg("config reloaded")
	var what []string
	for _, part := range []struct {
		what  string
		names []string
	}{{"upstreams added", added}, {"upstreams removed", removed}, {"upstreams replaced", replaced}, {"settings changed", changed}} {
		if len(part.names) > 0 {
			what = append(what, part.what+": "+strings.Join(part.names, ", "))
		}
	}
	g.reload.what = cmp.Or(strings.Join(what, "; "), "settings changed")
}

// changedKeys names the settings that differ between a and b, upstreams
// aside (the reload plan names those) but for their breakers: top-level
// keys ("routes", "policies"), each credential by name
// ("credentials.billing-key"), and "upstreams.<name>.breaker".
func changedKeys(a, b *Config) []string {
	var out []string
	va, vb := reflect.ValueOf(a).Elem(), reflect.ValueOf(b).Elem()
	for i := range va.NumField() {
		key, _, _ := strings.Cut(va.Type().Field(i).Tag.Get("koanf"), ",")
		if key == "" || key == "-" || key == "upstreams" || key == "credentials" {
			continue
		}
		if !sameValue(va.Field(i), vb.Field(i)) {
			out = append(out, key)
		}
	}
	// An upstream's breaker changes without replacing it (the plan keeps
	// it).
	for _, name := range changedBreakers(a, b) {
		out = append(out, "upstreams."+name+".breaker")
	}
	for name, c := range b.Credentials {
		if o, ok := a.Credentials[name]; !ok || !reflect.DeepEqual(o, c) {
			out = append(out, "credentials."+name)
		}
	}
	for name := range a.Credentials {
		if _, ok := b.Credentials[name]; !ok {
			out = append(out, "credentials."+name)
		}
	}
	slices.Sort(out)
	return out
}

// sameValue is reflect.DeepEqual, but for which an empty slice or map is
// the same as none (a key written empty, or left out).
func sameValue(x, y reflect.Value) bool {
	empty := func(v reflect.Value) bool {
		return (v.Kind() == reflect.Slice || v.Kind() == reflect.Map) && v.Len() == 0
	}
	if empty(x) && empty(y) {
		return true
	}
	return reflect.DeepEqual(x.Interface(), y.Interface())
}

// setRestart records the keys a reload left at their old values.
func (g *Server) setRestart(keys []string) {
	g.reload.statusMu.Lock()
	g.reload.restart = keys
	g.reload.statusMu.Unlock()
}

// stopContext is a context that ends after d or when the gateway closes.
func (g *Server) stopContext(d time.Duration) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	go func() {
		select {
		case <-g.stopped:
			cancel()
		case <-ctx.Done():
		}
	}()
	return ctx, cancel
}

// retire takes u out of service: it refuses new calls, waits for those in
// flight (at most its timeout and a grace, or until the gateway closes), then
// stops u, which ends its sessions and children.
func (g *Server) retire(u *upstream, why string) {
	r := &g.reload
	r.retireMu.Lock()
	if r.retiring == nil {
		r.retiring = map[*upstream]struct{}{}
	}
	r.retiring[u] = struct{}{}
	r.retireMu.Unlock()
	g.wg.Go(func() {
		defer g.recoverLog("retiring an upstream", u.name)
		defer func() {
			r.retireMu.Lock()
			delete(r.retiring, u)
			r.retireMu.Unlock()
			g.updateStaticSecrets()
		}()
		began := time.Now()
		idle := u.gate.drain()
		t := time.NewTimer(u.cfg.timeout() + answerGrace)
		defer t.Stop()
		forced := false
		select {
		case <-idle:
		case <-t.C:
			forced = true
		case <-g.runCtx.Done():
		}
		ev := u.log.Info()
		if forced {
			ev = u.log.Warn().Int("calls", u.gate.inFlight())
		}
		ev.Str("why", why).Bool("forced", forced).Msg("config reload: stopping the upstream after its calls in flight")
		if u.stop != nil {
			u.stop()
			<-u.stopped
		}
		u.log.Info().Str("why", why).Dur("after_ms", time.Since(began)).Msg("config reload: upstream stopped")
	})
}

// updateStaticSecrets recomputes the secrets redacted besides the
// credentials': the admin and webhook secrets, those configured on the
// upstreams in force and on those still draining, and those of extra
// configs (a reload's old and new config while it switches).
func (g *Server) updateStaticSecrets(extra ...*Config) {
	cs := g.cred
	all := slices.Clone(cs.base)
	for _, u := range g.ups() {
		all = append(all, u.secrets...)
	}
	g.reload.retireMu.Lock()
	for u := range g.reload.retiring {
		all = append(all, u.secrets...)
	}
	g.reload.retireMu.Unlock()
	for _, c := range extra {
		all = append(all, configSecrets(c)...)
	}
	cs.redactMu.Lock()
	// What left the config is still redacted for a while (found trying the
	// gateway from outside: an upstream that echoed a header value changed
	// by a reload showed the old one in clear at once).
	for _, v := range cs.static {
		if !slices.Contains(all, v) && !slices.Contains(cs.past, v) {
			cs.past = append(cs.past, v)
		}
	}
	if n := len(cs.past) - maxPastSecrets; n > 0 {
		cs.past = slices.Delete(cs.past, 0, n)
	}
	all = append(all, cs.past...)
	slices.Sort(all)
	all = slices.Compact(all)
	cs.static = all
	cs.redactMu.Unlock()
	g.refreshRedactor()
}

// maxPastSecrets bounds the upstream secrets kept redacted after a reload
// took them out of force.
const maxPastSecrets = 64

// warnRestart logs the settings a reload changed that only a restart
// applies, if any.
func (g *Server) warnRestart(keys []string) {
	if len(keys) > 0 {
		g.log.Warn().Strs("keys", keys).Msg("config reload: these settings changed but need a restart; they keep their old values until then")
	}
}

// stage makes the redactor know credentials being loaded by a reload
// before they are in force (nil when done).
func (cs *credState) stage(creds []*authmap.Credential) {
	cs.redactMu.Lock()
	cs.staged = creds
	cs.redactMu.Unlock()
}

// callGate counts the calls in flight on an upstream, so that a reload can
// stop it once they are done. A call enters before it uses the upstream and
// leaves when it is answered; once drained (none left after drain began),
// the gate refuses new calls. It is lock-free: every call passes it.
type callGate struct {
	state atomic.Int64  // calls in flight, with gateDraining and gateClosed
	idle  chan struct{} // set by drain (once), closed when the gate closes
	once  sync.Once
}

const (
	gateDraining = 1 << 61
	gateClosed   = 1 << 62
	gateCount    = gateDraining - 1
)

// enter counts a call; false once the gate is closed.
func (c *callGate) enter() bool {
	for {
		v := c.state.Load()
		if v&gateClosed != 0 {
			return false
		}
		if c.state.CompareAndSwap(v, v+1) {
			return true
		}
	}
}

func (c *callGate) leave() {
	if c.state.Add(-1) == gateDraining {
		c.tryClose()
	}
}

// tryClose closes the gate if it is draining with no call in flight.
func (c *callGate) tryClose() {
	if c.state.CompareAndSwap(gateDraining, gateDraining|gateClosed) {
		close(c.idle)
	}
}

// drain returns a channel closed once no call is in flight, after which the
// gate refuses new calls. Calls entering before then (nested in one in
// flight, or that resolved the upstream just before it was retired) are
// let through.
func (c *callGate) drain() <-chan struct{} {
	c.once.Do(func() {
		c.idle = make(chan struct{})
		c.state.Or(gateDraining)
	})
	c.tryClose()
	return c.idle
}

func (c *callGate) inFlight() int { return int(c.state.Load() & gateCount) }

// retiredError is the error of a call that reached an upstream a reload
// removed, after it stopped taking calls.
func retiredError(u *upstream) error {
	return &unavailableError{upstream: u.name, reason: "it was removed or replaced by a config reload; retry"}
}

// reloadRoutes adds POST /admin/reload, behind the admin token: it re-reads
// the config file and answers with the config block of /health, 200 when the
// file was put in force (or was unchanged), 422 with the reason when it was
// rejected, 409 when the gateway has no config file.
func (g *Server) reloadRoutes(mux *http.ServeMux) {
	mux.Handle("POST /admin/reload", g.opsOnly(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		err := g.ReloadConfig(authmap.TriggerAdmin)
		status := http.StatusOK
		out := map[string]any{"config": g.configHealth()}
		switch {
		case errors.Is(err, ErrNoConfigFile):
			status = http.StatusConflict
			out["error"] = err.Error()
		case err != nil:
			status = http.StatusUnprocessableEntity
			out["error"] = g.redact(err.Error())
		}
		writeJSON(w, status, out)
	})))
}
