package gateway

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	"github.com/modelcontextprotocol/go-sdk/mcp"
	"github.com/rs/zerolog"

	"github.com/credgate/credgate/authmap"
	"github.com/credgate/credgate/authmap/awssm"
	"github.com/credgate/credgate/authmap/oauth2src"
	"github.com/credgate/credgate/authmap/vault"
)

// Credentials in the call path (issue 7).
//
// The credentials live in an [authmap.Set], keyed by their names, which
// outlive any config. Nothing holds a *authmap.Credential from build time:
// each call resolves the name that serves (upstream, tool) and looks the
// credential up when it needs it, so a rotation, a refresh or a reload
// applies to the very next request.
//
//	tools/call ──► toolHandler: name = credentialFor(tool); gate (revoked,
//	   │           invalid, missing: not sent); callCred{name} in the context
//	   ▼
//	HTTP upstream: httpTransport.RoundTrip sets the header from Value(),
//	   │           records the value sent (used); an empty value is not sent
//	stdio upstream: the child's env holds the value; a credential other than
//	   │           the default gets a child of its own (credSession)
//	   ▼
//	classify with the credential's Knowledge ──► Report(subtype, used);
//	   expired / invalid ──► RenewAfterRejection(used) ──► resend once
//
// The upstream's own traffic (initialize, listings, pings, the GET stream)
// carries no callCred and uses the upstream's default credential.

// callCred travels in a call's context: the credential that serves it and,
// once a request was sent, the value it carried.
type callCred struct {
	name string
	// override, if set, is sent instead of the credential's value: a
	// candidate value under probe.
	override string
	// backup, if set, reports whether a route's backup can take the call,
	// so that it need not wait for a renewal of this credential (routes.go).
	backup func() bool

	mu     sync.Mutex
	used   string
	sentAt time.Time // when used was set: the last request's send
	holds  []*hold   // holds this call placed (see hold)
}

// failsFast reports whether the call has a backup to go to rather than wait
// for this credential's renewal.
func (c *callCred) failsFast() bool { return c != nil && c.backup != nil && c.backup() }

func (c *callCred) setUsed(v string) {
	now := time.Now()
	c.mu.Lock()
	c.used, c.sentAt = v, now
	c.mu.Unlock()
}

// sentWhen returns when the call's last request was given its value.
func (c *callCred) sentWhen() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.sentAt
}

// sent returns the value the call's last request carried ("" if none was sent).
func (c *callCred) sent() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.used
}

type callCredKey struct{}

func withCallCred(ctx context.Context, c *callCred) context.Context {
	return context.WithValue(ctx, callCredKey{}, c)
}

func callCredFrom(ctx context.Context) *callCred {
	c, _ := ctx.Value(callCredKey{}).(*callCred)
	return c
}

// credentialMissingError: the credential has no value, so nothing was sent.
type credentialMissingError struct {
	credential string
	why        string
}

func (e *credentialMissingError) Error() string {
	if e.why == "" {
		return fmt.Sprintf("credential %q has no value; nothing was sent", e.credential)
	}
	return fmt.Sprintf("credential %q has no value (%s); nothing was sent", e.credential, e.why)
}

// AuditEvent is one credential lifecycle event with what it affects, as
// [Server.Events] returns it; the events themselves live on the event bus
// (events.go).
type AuditEvent struct {
	authmap.Event
	// Upstreams use the credential (as their default or for some tools).
	Upstreams []string `json:"upstreams,omitempty"`
	// Tools are the exposed tool globs the credential serves.
	Tools []string `json:"tools,omitempty"`
}

// credState is the gateway's side of the credentials: the set and what the
// call path, redaction and the admin endpoints need around it.
type credState struct {
	set *authmap.Set

	static []string              // secrets that are not the credentials' (upstreams' config, admin, webhook)
	base   []string              // the admin and webhook secrets (static without the upstreams')
	staged []*authmap.Credential // credentials a reload is loading, not in force yet
	// stagedCfg is the config of that reload while it loads them.
	stagedCfg atomic.Pointer[Config]
	// past holds the last maxPastSecrets upstream secrets a reload took out
	// of force (a header value changed): still redacted, as a rotated
	// credential's last values are.
	past []string
	// credPast holds the last maxPastSecrets credential values that left
	// the credentials' own memory (a credential a reload removed, a value
	// rotated out of its last 16), and credLast the credentials' values at
	// the last refresh (refreshRedactor): a replica whose reload dropped a
	// credential passed its values, which its peers still use, in clear
	// (found trying the gateway with replicas).
	credPast, credLast []string

	redactMu sync.Mutex
	gens     sync.Map // credential name -> *atomic.Uint64: the generation last fed to the redactor

	holds sync.Map // credential name -> *hold: a value under reactive renewal

	loaded chan struct{} // closed once the first Load has finished
	loadMu sync.Once

	adminToken    string
	webhookSecret string
}

// initCredentials builds the credential set from the config and reads the
// admin and webhook secrets. It starts nothing.
func (g *Server) initCredentials() error {
	cs := &credState{loaded: make(chan struct{})}
	g.cred = cs
	src := &authmap.SourceOptions{}
	if g.opts.Sources != nil {
		*src = *g.opts.Sources
	}
	openers := map[string]authmap.OpenFunc{
		authmap.KindVault:             vault.Open,
		authmap.KindAWSSecretsManager: awssm.Open,
		authmap.KindOAuth2:            oauth2src.Open,
	}
	for k, f := range src.Openers {
		openers[k] = f
	}
	src.Openers = openers
	setLog := slog.New(redactingHandler{Handler: zerolog.NewSlogHandler(g.log), r: g.redactor})
	cs.set = authmap.NewSet(&authmap.SetOptions{
		Sources:     src,
		ToolProbe:   g.toolProbe,
		Classifier:  g.classifier,
		OnEvent:     g.credentialEvent,
		Logger:      setLog,
		Coordinator: g.shared.coordinator(),
	})
	if err := cs.set.Apply(g.config().Lifecycle, g.config().Credentials); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), authmap.DefaultExecTimeout)
	defer cancel()
	var errs []error
	read := func(key string, ref authmap.SecretRef) string {
		s, err := ref.Open(key, src)
		if err == nil {
			var v string
			if v, err = authmap.FetchSecret(ctx, s); err == nil {
				if h, ok := s.(authmap.SecretHolder); ok {
					cs.static = append(cs.static, h.Secrets()...)
				}
				cs.static = append(cs.static, v)
				return v
			}
		}
		errs = append(errs, fmt.Errorf("%s: %s", key, g.redact(err.Error())))
		return ""
	}
	if !g.config().Admin.Token.IsZero() {
		cs.adminToken = read("admin.token", g.config().Admin.Token)
	}
	if !g.config().Webhooks.Secret.IsZero() {
		cs.webhookSecret = read("webhooks.secret", g.config().Webhooks.Secret)
	}
	cs.base = slices.Clone(cs.static)
	cs.static = append(cs.static, g.redactor.Values()...) // as given: Replace writes their forms
	g.refreshRedactor()
	return errors.Join(errs...)
}

// Credentials returns the gateway's credential set (for the pre-flight and
// `gateway check`).
func (g *Server) Credentials() *authmap.Set { return g.cred.set }

// LoadCredentials runs the pre-flight of every credential not loaded yet:
// each is resolved, its expiry read and its probe run. It returns the load
// errors, each naming its credential; [Server.CredentialProblems] decides
// whether they stop the start.
func (g *Server) LoadCredentials(ctx context.Context) error {
	err := g.cred.set.Load(ctx)
	g.refreshRedactor()
	if ctx.Err() == nil {
		g.cred.loadMu.Do(func() { close(g.cred.loaded) })
	}
	return err
}

// CredentialProblems names every credential whose status keeps the gateway
// from starting under lifecycle.startup.fail_on, with its status and why;
// nil if none.
func (g *Server) CredentialProblems() error {
	return g.cred.set.Problems(g.config().Lifecycle.WithDefaults().Startup)
}

// ReloadCredentials re-reads every credential from its source (SIGHUP). It
// returns the errors, each naming its credential.
func (g *Server) ReloadCredentials(ctx context.Context, trigger authmap.Trigger) error {
	return g.cred.set.ReloadAll(ctx, trigger)
}

// runCredentials loads the credentials (if the pre-flight did not) and runs
// their expiry watch until ctx ends.
func (g *Server) runCredentials(ctx context.Context) {
	defer g.recoverLog("credential watch", "")
	_ = g.LoadCredentials(ctx)
	_ = g.cred.set.Run(ctx)
}

// waitCredentials waits until the credentials had their first load, so that
// an upstream does not connect without the credential it needs.
func (u *upstream) waitCredentials(ctx context.Context) {
	if u.defaultCred == "" {
		return
	}
	select {
	case <-u.gw.cred.loaded:
	case <-ctx.Done():
	}
}

// credential returns the credential named name, or nil.
func (g *Server) credential(name string) *authmap.Credential {
	if name == "" {
		return nil
	}
	// Find: a credential a reload just removed is still sent by the
	// upstream it replaced, until the reload has retired it.
	return g.cred.set.Find(name)
}

// noteSecrets makes sure the redactor knows the credential's current value
// before it is sent anywhere. It costs an atomic load while nothing changed.
func (g *Server) noteSecrets(name string, c *authmap.Credential) {
	gen := c.Generation()
	v, _ := g.cred.gens.LoadOrStore(name, new(atomic.Uint64))
	if v.(*atomic.Uint64).Load() == gen {
		return
	}
	g.refreshRedactor()
}

// refreshRedactor rebuilds the redactor's list: the static secrets and every
// credential's current, previous and source secrets. It is rebuilt rather
// than added to, so that a token renewed every few seconds does not grow it
// without end (each credential keeps its last values; see authmap).
func (g *Server) refreshRedactor() {
	cs := g.cred
	cs.redactMu.Lock()
	defer cs.redactMu.Unlock()
	all := slices.Clone(cs.static)
	for _, name := range cs.set.Names() {
		c := cs.set.Get(name)
		if c == nil {
			continue
		}
		gen := c.Generation()
		all = append(all, c.Knowledge().Secrets...)
		v, _ := cs.gens.LoadOrStore(name, new(atomic.Uint64))
		v.(*atomic.Uint64).Store(gen)
	}
	for _, c := range cs.staged {
		all = append(all, c.Knowledge().Secrets...)
	}
	cur := all[len(cs.static):]
	for _, v := range cs.credLast {
		if !slices.Contains(cur, v) && !slices.Contains(cs.credPast, v) {
			cs.credPast = append(cs.credPast, v)
		}
	}
	if n := len(cs.credPast) - maxPastSecrets; n > 0 {
		cs.credPast = slices.Delete(cs.credPast, 0, n)
	}
	cs.credLast = slices.Clone(cur)
	all = append(all, cs.credPast...)
	g.redactor.Replace(all...)
}

// credentialEvent receives every lifecycle event: it feeds the redactor,
// logs the event once with what it affects, publishes it on the event bus
// (/events, /admin/events, alerts), and restarts the stdio children that
// hold a value no longer current.
func (g *Server) credentialEvent(e authmap.Event) {
	defer g.recoverLog("credential event", "")
	defer g.healthChanged()
	g.refreshRedactor()
	g.metrics.credentialEvent(e)
	e.Detail = g.redact(e.Detail)
	ae := AuditEvent{Event: e}
	ae.Upstreams, ae.Tools = g.credentialScope(e.Credential)
	g.publishCredential(e, ae.Upstreams, ae.Tools)

	var ev *zerolog.Event
	switch e.Kind {
	case authmap.EventExpired, authmap.EventRevoked, authmap.EventInvalid, authmap.EventMissing:
		ev = g.log.Error()
	case authmap.EventExpiring, authmap.EventRejectedRotation, authmap.EventRateLimited, authmap.EventRefreshFailed:
		ev = g.log.Warn()
	default:
		ev = g.log.Info()
	}
	ev = ev.Str(fieldCredential, e.Credential).Str("kind", string(e.Kind)).Str("trigger", string(e.Trigger)).
		Str("status", e.Status.String()).Strs("upstreams", ae.Upstreams).Strs("tools", ae.Tools)
	if e.Version != "" {
		ev = ev.Str("version", e.Version)
	}
	if e.Detail != "" {
		ev = ev.Str("detail", e.Detail)
	}
	ev.Msg("credential " + string(e.Kind))
	g.routesChanged()
	g.shared.credentialEvent(e)

	for _, u := range g.ups() {
		if u.cfg.Transport == TransportStdio && u.defaultCred == e.Credential {
			u.kickRotation()
		}
	}
	switch e.Kind {
	case authmap.EventLoaded, authmap.EventRotated, authmap.EventRefreshed, authmap.EventRestored:
		g.seeCredential(e.Credential)
		for _, u := range g.ups() {
			if u.defaultCred == e.Credential {
				u.wakeForCredential()
			}
		}
	}
}

// wakeForCredential ends the reconnect backoff of an upstream that is down
// because its credential was missing or refused, now that the credential has
// a new value: ops who fixed a secret should not wait up to
// Options.ReconnectMax for the upstream to notice. An upstream down for any
// other reason keeps its backoff.
func (u *upstream) wakeForCredential() {
	u.mu.Lock()
	authDown := u.status == StatusDown && u.lastFailure != nil && u.lastFailure.IsAuth()
	u.mu.Unlock()
	if !authDown {
		return
	}
	select {
	case u.credWake <- struct{}{}:
	default:
	}
}

// backoffSleep waits d before a reconnect attempt, or less when
// wakeForCredential calls; false when ctx is done.
func (u *upstream) backoffSleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-u.credWake:
	case <-ctx.Done():
		return false
	}
	return true
}

// isStaged reports whether credential name is one a reload is loading.
func (cs *credState) isStaged(name string) bool {
	cs.redactMu.Lock()
	defer cs.redactMu.Unlock()
	return slices.ContainsFunc(cs.staged, func(c *authmap.Credential) bool { return c.Name() == name })
}

// credentialScope lists the upstreams using credential name and the exposed
// tool globs it serves.
// While a reload loads the credentials it adds or changes, their scope is
// the config coming into force: a credential added with its upstream had none
// in its first event (found trying the gateway from outside).
func (g *Server) credentialScope(name string) (ups, tools []string) {
	cfg := g.config()
	if staged := g.cred.stagedCfg.Load(); staged != nil && g.cred.isStaged(name) {
		cfg = staged
	}
	for _, up := range cfg.Order() {
		u := cfg.Upstreams[up]
		if u == nil || !slices.Contains(u.boundCredentials(cfg.Credentials), name) {
			continue
		}
		ups = append(ups, up)
		exposed := func(glob string) string {
			if p := u.prefix(up); p != "" {
				return p + cfg.ToolSeparator + glob
			}
			return glob
		}
		for _, tc := range u.Credentials {
			if tc.Credential == name {
				for _, t := range tc.Tools {
					tools = append(tools, exposed(t))
				}
			}
		}
		if u.Credential == name {
			tools = append(tools, exposed("*"))
		}
	}
	return ups, tools
}

// perTool reports whether credential name serves only some tools of an
// upstream (for its readiness score).
func (g *Server) perTool(name string) bool {
	for _, u := range g.config().Upstreams {
		if u == nil {
			continue
		}
		for _, tc := range u.Credentials {
			if tc.Credential == name && !tc.matches("*") {
				return true
			}
		}
	}
	return false
}

// credKnowledge is what the classifier needs for a call served by credential
// name on u: the credential's knowledge plus the upstream's own configured
// secrets.
func (g *Server) credKnowledge(u *upstream, name string) (authmap.Knowledge, bool) {
	c := g.credential(name)
	if c == nil {
		return authmap.Knowledge{}, false
	}
	k := c.Knowledge()
	k.Now = g.now()
	if len(u.secrets) > 0 {
		k.Secrets = append(slices.Clip(k.Secrets), u.secrets...)
	}
	return k, true
}

// credentialGate decides before a call whether credential name may be sent:
// not when it has no value (credential_missing), nor when calls or its
// source found it revoked or invalid. A revocation does not heal itself: the
// value is not sent again until it changes (a rotation, a refresh, a reload),
// so a dead token does not keep hitting the provider.
func (g *Server) credentialGate(ctx context.Context, u *upstream, name string) (authmap.Failure, bool) {
	c := g.credential(name)
	if c == nil {
		return authmap.Failure{}, false
	}
	if cc := callCredFrom(ctx); !g.held(name, c.Value()) || !cc.failsFast() {
		if g.awaitHold(ctx, cc, name, c.Value()) {
			if h := probeHoldFrom(ctx); h != nil {
				h.waited.Store(true)
			}
		}
	}
	if c.Value() == "" {
		return g.attribute(u, g.missingFailure(name)), true
	}
	return g.deadCredential(u, name, c)
}

// deadCredential returns the failure of sending credential name (c) while
// calls or its source found it revoked or invalid, and whether it is. An
// expired value is held back too when this gateway saw the provider answer
// it expired (a call, or the upstream's own traffic, at this generation)
// and its source is one only a reload or a restart changes (env, value):
// any other source is renewed after a rejection, which takes a call to
// start. An expiry known only from a clock (expires_at, a JWT's exp, a peer
// replica's) does not hold it back: the provider decides.
func (g *Server) deadCredential(u *upstream, name string, c *authmap.Credential) (authmap.Failure, bool) {
	st := c.Status()
	f := authmap.Failure{Type: authmap.TypeAuthFailure, Subtype: authmap.SubtypeCredentialRevoked, Recovery: authmap.RecoveryRotate, Credential: name}
	switch st {
	case authmap.StatusRevoked:
	case authmap.StatusInvalid:
		f.Subtype = authmap.SubtypeCredentialInvalid
	case authmap.StatusExpired:
		if !g.expiredHeldBack(name, c) {
			return authmap.Failure{}, false
		}
		f.Subtype = authmap.SubtypeCredentialExpired
	default:
		return authmap.Failure{}, false
	}
	why := ""
	if le := c.Snapshot(false).LastError; le != nil && le.Subtype == f.Subtype {
		rec := f.Recovery
		f, why = *le, le.Detail
		f.Recovery = cmp.Or(f.Recovery, rec) // a status a peer reported says none
	}
	if cause, ok := g.credentialCause(name, c.Generation(), f.Subtype); ok {
		f, why = cause, cause.Detail // the provider's own answer: code, recovery
	}
	f.Credential, f.Retryable, f.RetryAfterSeconds = name, false, nil
	f.Detail = fmt.Sprintf("credential %q is %s and is not sent again until it changes (rotate it, or reload it: SIGHUP, the admin endpoint or a webhook)", name, st)
	if at := c.Snapshot(false).RenewalAt; at != nil {
		// The gateway renews it by itself shortly (a renewal put off by
		// the once-a-minute bound): the agent may retry then, where it
		// read "not retryable, reauthorize" for a minute that healed.
		secs := max(int(math.Ceil(time.Until(*at).Seconds())), 1)
		f.Retryable, f.RetryAfterSeconds, f.Recovery = true, &secs, authmap.RecoveryWait
		f.Detail = fmt.Sprintf("credential %q is %s; the gateway re-reads it from its source in %ds", name, st, secs)
	}
	if why != "" {
		f.Detail += ": " + why
	}
	return g.attribute(u, f), true
}

// expiredHeldBack reports whether the expired value of credential name (c)
// is held back from calls (see deadCredential): the provider answered it
// expired at this generation, and only a reload or a restart changes it.
// An expired value not held back is sent: the provider decides.
func (g *Server) expiredHeldBack(name string, c *authmap.Credential) bool {
	if kind := c.SourceKind(); kind != authmap.KindEnv && kind != authmap.KindValue {
		return false
	}
	_, ok := g.credentialCause(name, c.Generation(), authmap.SubtypeCredentialExpired)
	return ok
}

// missingFailure is the failure of a call whose credential has no value.
func (g *Server) missingFailure(name string) authmap.Failure {
	f := authmap.Failure{Type: authmap.TypeAuthFailure, Subtype: authmap.SubtypeCredentialMissing, Recovery: authmap.RecoveryRotate, Credential: name}
	f.Detail = fmt.Sprintf("credential %q has no value; nothing was sent", name)
	if c := g.credential(name); c != nil {
		le := c.Snapshot(false).LastError
		if le != nil && le.Subtype == authmap.SubtypeCredentialInvalid {
			// Its source holds a value that cannot be sent (a second
			// line), or its OAuth client was rejected: invalid, as
			// /health says, not missing.
			f.Subtype = authmap.SubtypeCredentialInvalid
			f.Detail = fmt.Sprintf("credential %q has no value that can be sent; nothing was sent", name)
		}
		if le != nil && le.Detail != "" {
			f.Detail += ": " + le.Detail
		}
	}
	return f
}

// afterCall feeds a call's outcome back to its credential: the live status,
// and on a rejection as expired or invalid the reactive renewal. It reports
// whether the call may be resent (the credential now holds another value,
// and the rejection proves the call did not run) and, when the renewal
// showed the credential revoked (its refresh was answered invalid_grant),
// the failure the call is answered with instead.
func (g *Server) afterCall(ctx context.Context, cc *callCred, f *authmap.Failure, answered bool) (resend bool, revised *authmap.Failure) {
	c := g.credential(cc.name)
	if c == nil {
		return false, nil
	}
	used := cc.sent()
	if used == "" {
		return false, nil // nothing was sent: nothing to learn
	}
	if f == nil || !f.IsAuth() {
		if answered {
			// A request sent before the value was rejected says nothing
			// of it now (found trying the gateway from outside: a slow
			// call's success marked a revoked token healthy again).
			c.ReportSuccess(used, cc.sentWhen())
		}
		return false, nil
	}
	if renewable(f) {
		// Hold new calls with this value until the renewal is done, so that
		// a dead token is not sent again meanwhile (the transport placed
		// the hold as soon as the rejection arrived; see suspect).
		g.suspect(cc, used)
		renewed := ctx.Err() == nil && c.RenewAfterRejection(ctx, used)
		g.releaseHolds(cc)
		if renewed {
			return true, nil
		}
		if k := c.Knowledge(); k.RefreshRejected {
			// The renewal found the grant revoked: that, not the
			// rejection's wording, is what the agent must act on.
			r := *f
			r.Subtype, r.Recovery, r.Retryable = authmap.SubtypeCredentialRevoked, authmap.RecoveryReauthorize, false
			if le := c.Snapshot(false).LastError; le != nil && le.Detail != "" {
				r.Detail = g.redact(le.Detail)
			}
			c.Report(authmap.SubtypeCredentialRevoked, used)
			return false, &r
		}
	}
	rf := *f
	rf.Detail, rf.ProviderCode = g.redact(rf.Detail), g.redact(rf.ProviderCode)
	c.ReportFailure(rf, used, "a call")
	return false, nil
}

// renewable reports whether f is a rejection that a renewal of the
// credential may cure (expired, invalid), after which the call is resent.
//
// Revoked too: the source may already hold a new value (an exec or file
// source, an OAuth client's next token); the value was re-read only when
// the provider worded its rejection "invalid", and one it called revoked
// stayed refused until an operator's reload (found trying the gateway from
// outside).
func renewable(f *authmap.Failure) bool {
	if f == nil || !f.IsAuth() {
		return false
	}
	switch f.Subtype {
	case authmap.SubtypeCredentialExpired, authmap.SubtypeCredentialInvalid, authmap.SubtypeCredentialRevoked:
		return true
	}
	return false
}

// renewBehind is afterCall for a call whose rejection a route's backup
// answers: the renewal and the status report run in the background, owned
// by the gateway, holding cc's holds until they are done, so the agent does
// not wait for them and no other call sends the rejected value meanwhile.
func (g *Server) renewBehind(ctx context.Context, cc *callCred, f authmap.Failure, answered bool) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), credentialTimeout)
	stop := context.AfterFunc(g.abortCtx, cancel)
	g.suspect(cc, cc.sent()) // held from now on, if the transport did not hold it already
	g.wg.Go(func() {
		defer cancel()
		defer stop()
		defer g.releaseHolds(cc)
		defer g.recoverLog("credential renewal", "")
		g.afterCall(ctx, cc, &f, answered)
	})
}

// hold marks a value a provider just rejected, while the call that got the
// rejection renews the credential: other calls that would send it wait for
// the outcome instead, so a dead token is not sent again meanwhile.
type hold struct {
	used string
	done chan struct{}
	once sync.Once
}

func (h *hold) release() { h.once.Do(func() { close(h.done) }) }

// suspect places a hold on value used of cc's credential, owned by cc,
// unless one is already placed on it.
func (g *Server) suspect(cc *callCred, used string) {
	if cc == nil || cc.override != "" || used == "" {
		return
	}
	h := &hold{used: used, done: make(chan struct{})}
	for {
		prev, loaded := g.cred.holds.LoadOrStore(cc.name, h)
		if !loaded {
			break
		}
		if prev.(*hold).used == used {
			return
		}
		if g.cred.holds.CompareAndSwap(cc.name, prev, h) {
			break
		}
	}
	cc.mu.Lock()
	cc.holds = append(cc.holds, h)
	cc.mu.Unlock()
}

// releaseHolds lifts the holds cc placed.
func (g *Server) releaseHolds(cc *callCred) {
	if cc == nil {
		return
	}
	cc.mu.Lock()
	hs := cc.holds
	cc.holds = nil
	cc.mu.Unlock()
	for _, h := range hs {
		g.cred.holds.CompareAndDelete(cc.name, h)
		h.release()
	}
}

// awaitHold waits while a hold placed by another call is on value v of
// credential name, and reports whether it waited.
func (g *Server) awaitHold(ctx context.Context, cc *callCred, name, v string) bool {
	hv, ok := g.cred.holds.Load(name)
	if !ok {
		return false
	}
	h := hv.(*hold)
	if h.used != v {
		return false
	}
	if cc != nil {
		cc.mu.Lock()
		own := slices.Contains(cc.holds, h)
		cc.mu.Unlock()
		if own {
			return false
		}
	}
	select {
	case <-h.done:
	case <-ctx.Done():
	}
	return true
}

// gatedError: a request was not sent because its credential is known dead.
type gatedError struct{ f authmap.Failure }

func (e *gatedError) Error() string { return e.f.Error() }

// toolProbe runs a credential's probe.tool: the tool is called on the first
// upstream (in config order) the credential serves, over a session of its own
// that sends the candidate value, so that the live sessions are untouched.
func (g *Server) toolProbe(ctx context.Context, name string, probe authmap.ProbeConfig, value string) (authmap.ProbeResult, error) {
	var u *upstream
	for _, cand := range g.ups() {
		if slices.Contains(cand.cfg.boundCredentials(g.config().Credentials), name) {
			u = cand
			break
		}
	}
	if u == nil {
		return authmap.ProbeResult{}, fmt.Errorf("credential %q serves no upstream", name)
	}
	ctx, cancel := context.WithTimeout(ctx, min(u.cfg.timeout(), g.opts.ConnectTimeout))
	defer cancel()
	cc := &callCred{name: name, override: value}
	ctx = withCallCred(ctx, cc)
	sessCtx, endSession := context.WithCancel(ctx)
	defer endSession()
	cs, err := u.connect(sessCtx, u.newClient(nil), false)
	if err == nil {
		defer cs.Close()
		args := probe.Arguments
		if args == nil {
			args = map[string]any{}
		}
		var res *mcp.CallToolResult
		res, err = cs.CallTool(ctx, &mcp.CallToolParams{Name: probe.Tool, Arguments: args})
		if err == nil && res != nil && res.IsError {
			text, _ := resultText(res)
			k, _ := g.credKnowledge(u, name)
			k.Secrets = append(slices.Clip(k.Secrets), value)
			if f, ok := g.classifier.ClassifyText(classifiable(text), u.cfg.Provider, k); ok {
				f = g.attribute(u, f)
				return authmap.ProbeResult{Failure: &f}, nil
			}
			f := g.attribute(u, authmap.Failure{Type: authmap.TypeUpstreamError, Detail: "probe tool " + probe.Tool + ": " + text})
			return authmap.ProbeResult{Failure: &f}, nil
		}
	}
	if err != nil {
		f, _ := g.classifyAs(u, name, err)
		if f.IsAuth() {
			return authmap.ProbeResult{Failure: &f}, nil
		}
		return authmap.ProbeResult{}, fmt.Errorf("probe tool %q on upstream %q: %s", probe.Tool, u.name, g.redact(authmap.Redact(err.Error(), []string{value})))
	}
	return authmap.ProbeResult{}, nil
}

// credentialsHealthy reports whether every credential is healthy, and their
// snapshots for /health.
func (g *Server) credentialHealth() (map[string]authmap.Snapshot, bool) {
	names := g.cred.set.Names()
	if len(names) == 0 {
		return nil, true
	}
	out := make(map[string]authmap.Snapshot, len(names))
	healthy := true
	for _, n := range names {
		c := g.cred.set.Get(n)
		if c == nil {
			continue
		}
		s := c.Snapshot(g.perTool(n))
		if s.LastError != nil {
			le := *s.LastError
			le.Detail = g.redact(le.Detail)
			s.LastError = &le
		}
		if s.Status != authmap.StatusHealthy {
			healthy = false
		}
		out[n] = s
	}
	return out, healthy
}

// credentialTimeout bounds a manual reload (admin, webhook, SIGHUP).
const credentialTimeout = 30 * time.Second

// injectCredential sets the credential header of a request to u: the call's
// credential, or the upstream's default for its own traffic. It records the
// value sent in the call's holder, and refuses to send a request whose
// credential has no value. cloned says req is already a copy it may modify.
func (u *upstream) injectCredential(req *http.Request, cloned bool) (*http.Request, error) {
	name, override := u.defaultCred, ""
	cc := callCredFrom(req.Context())
	if cc != nil {
		name, override = cc.name, cc.override
	}
	// An upstream a reload removed or replaced sends what it was bound to,
	// not what the new config calls by that name (another value, for
	// another host, maybe: review).
	c := u.keptCredential(name)
	if c == nil {
		c = u.gw.credential(name)
	}
	if c == nil {
		return req, nil
	}
	header, prefix := c.Config().Inject.HeaderName()
	if header == "" {
		return req, nil // an env credential: Validate keeps it off HTTP upstreams
	}
	v := override
	own := cc == nil // the upstream's own traffic, on its default credential
	if v == "" && cc == nil {
		// The upstream's own traffic (initialize, listings, pings, its GET
		// stream) does not carry a value known dead either (issue 11: at
		// most 2 requests with a dead token): the upstream shows down with
		// the credential's failure until the value changes.
		if f, blocked := u.gw.credentialGate(req.Context(), u, name); blocked {
			// Unless another of its tools' credentials works: those tools
			// are served on the same session, which went down with the
			// default credential (found trying the gateway from outside).
			// Only the upstream's own upkeep: an agent's own request
			// (resources/read, prompts/get) carries no other tool's
			// credential, which its agent may have no grant on.
			alt := ""
			if upkeep, _ := req.Context().Value(ownTrafficKey{}).(bool); upkeep {
				alt = u.ownFallback()
			}
			if alt == "" {
				return nil, &gatedError{f: f}
			}
			name, c, own = alt, u.gw.credential(alt), false
			header, prefix = c.Config().Inject.HeaderName()
		}
	}
	if v == "" {
		v = c.Value()
		// A call right behind a rejection of this value waits for the
		// renewal, then sends the new value or nothing; one a backup can
		// take is not sent.
		if cc != nil && u.gw.held(name, v) && cc.failsFast() {
			return nil, &gatedError{f: u.gw.heldFailure(u, name)}
		}
		if cc != nil && u.gw.awaitHold(req.Context(), cc, name, v) {
			v = c.Value()
			if f, blocked := u.gw.credentialGate(req.Context(), u, name); blocked {
				return nil, &gatedError{f: f}
			}
		}
	}
	if v == "" {
		return nil, &credentialMissingError{credential: name}
	}
	u.gw.noteSecrets(name, c)
	if !cloned {
		req = req.Clone(req.Context())
	}
	req.Header.Set(header, prefix+v)
	if cc != nil && override == "" {
		cc.setUsed(v)
	}
	if cc == nil {
		// What the upstream's own traffic carried, and on which
		// credential: its rejection is that credential's.
		u.ownVia.Store(&ownSend{credential: name, value: v})
	}
	if own {
		u.noteOwnSent(v)
	}
	return req, nil
}

// ownTrafficKey marks the context of the upstream's own upkeep (its
// connect loop: handshakes, listings, probes, streams).
type ownTrafficKey struct{}

// ownSend is a value the upstream's own traffic carried, and its credential.
type ownSend struct{ credential, value string }

// ownCredentialDead reports whether the upstream's own traffic would not
// be sent now: its default credential is known dead and no other of its
// credentials can carry it (ownFallback). It returns the failure then.
func (u *upstream) ownCredentialDead(ctx context.Context) (authmap.Failure, bool) {
	if u.defaultCred == "" {
		return authmap.Failure{}, false
	}
	f, blocked := u.gw.credentialGate(ctx, u, u.defaultCred)
	if !blocked || u.ownFallback() != "" {
		return authmap.Failure{}, false
	}
	return f, true
}

// ownFallback returns a credential of u's tools, other than its default,
// that the upstream's own traffic may carry while the default's value is
// known dead (revoked, invalid): one sent as a header, with a value not
// known dead; "" for none.
func (u *upstream) ownFallback() string {
	for _, n := range u.cfg.boundCredentials(u.gw.config().Credentials) {
		if n == u.defaultCred {
			continue
		}
		c := u.gw.credential(n)
		if c == nil || c.Value() == "" {
			continue
		}
		if h, _ := c.Config().Inject.HeaderName(); h == "" {
			continue
		}
		if _, blocked := u.gw.deadCredential(u, n, c); !blocked {
			return n
		}
	}
	return ""
}

// noteCredentialExpiry feeds an expiry a provider announced on a response
// (github-authentication-token-expiration) to the credential that was sent.
func (u *upstream) noteCredentialExpiry(req *http.Request, h http.Header) {
	name := u.defaultCred
	if cc := callCredFrom(req.Context()); cc != nil {
		if cc.override != "" {
			return // a candidate's expiry is the probe's to report
		}
		name = cc.name
	}
	if c := u.gw.credential(name); c != nil {
		if at, ok := authmap.ExpiryFromHeader(h); ok {
			c.NoteExpiry(at)
		}
	}
}

// outcomeFailure reads what toolOutcome made of a call: the failure object,
// if any, and whether the upstream answered (so the credential authenticated,
// unless the failure is an auth failure).
func outcomeFailure(res *mcp.CallToolResult, err error) (*authmap.Failure, bool) {
	if err != nil {
		var rpc *jsonrpc.Error
		return nil, errors.As(err, &rpc) // a passed-through upstream error was an answer
	}
	if res == nil || !res.IsError {
		return nil, res != nil
	}
	f, ok := res.Meta[MetaKey].(authmap.Failure)
	if !ok {
		return nil, true
	}
	return &f, f.Type == authmap.TypeUpstreamError
}

// keepCredentials keeps the credentials u is bound to under cfg (the
// config it was made for), as the set has them now: a reload that removes
// or replaces u calls it before the set forgets the credentials it removed,
// so that u's last calls still send theirs (see upstream.kept).
func (u *upstream) keepCredentials(cfg *Config) {
	m := map[string]*authmap.Credential{}
	for _, n := range u.cfg.boundCredentials(cfg.Credentials) {
		if c := u.gw.cred.set.Find(n); c != nil {
			m[n] = c
		}
	}
	u.kept.Store(&m)
}

// keptCredential returns the credential name u kept when a reload removed
// or replaced it, or nil.
func (u *upstream) keptCredential(name string) *authmap.Credential {
	if m := u.kept.Load(); m != nil {
		return (*m)[name]
	}
	return nil
}
