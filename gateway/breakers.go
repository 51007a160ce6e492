package gateway

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"sync"
	"time"
	"weak"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/credgate/credgate/authmap"
	"github.com/credgate/credgate/breaker"
)

// Circuit breakers in the call path (issue 8).
//
// The gateway owns one [breaker.Set], keyed by stable names: the upstream's
// name for its own breaker, breaker.Name(upstream, credential) for each
// credential used on it. A call asks both before it is sent (the credential's
// with its generation, so a rotated, refreshed or reloaded credential gets
// through a breaker a rejection opened), and reports its outcome, classified
// once, to both when it ends:
//
//	outcome (classified once)            upstream breaker   credential breaker
//	answered (isError results included)  Success            Success
//	caller cancelled, not sent           Excluded           Excluded
//	timeout, connection lost, 5xx        Failure            Excluded
//	revoked/invalid/missing/expired      Success            Rejected(subtype)
//	rate_limit_reached                   Success            RateLimited(reset)
//	quota_exhausted                      Success            QuotaExhausted(reset)
//
// A transport failure says nothing of the credential (the request may never
// have reached the provider's auth check), so it is excluded there rather
// than counted as a success that would close a credential's half-open
// breaker on no evidence. "Not sent" covers an upstream without a session,
// a per-agent limit, a shutdown and a credential with no value: nothing
// reached the upstream. For an upstream that is down, the connect loop is
// what feeds its breaker: each connect attempt the breaker admits reports
// its outcome, so five failed attempts open it (reason connect_failed), and
// calls are then refused with the outage's cause and retry_after_seconds.
// The loop's backoff stays the mechanism for reconnecting: it connects
// whatever the breaker says, and once it has, calls flow again even though
// the breaker still shows open; the first call after open_timeout probes it
// and closes it.
//
// A call resent after a lost session or a credential renewal is one call:
// its breakers are asked once and told its final outcome.
//
// One lost session is one failure, however many calls it ended. A stdio
// child that exits, or an HTTP upstream that drops our session or its
// connections, fails every call in flight on that session at once; counted
// call by call, one crash with four other calls in flight was five
// consecutive failures, and opened the upstream's breaker for open_timeout
// although the child was back 0.4 s later (found trying the gateway from
// outside). So forward names the session a call lost (sessionLostError),
// and only the first call to report a session's loss counts it; the others
// are excluded. The restarted child's session is another session, whose
// loss counts again. Timeouts stay each call's own: a slow tool proves
// nothing about the calls beside it, and five calls timing out are five
// failures.

// initBreakers builds the breaker set and applies the upstreams' configs.
func (g *Server) initBreakers() {
	g.breakers = breaker.New(&breaker.Options{OnChange: g.breakerChange})
	g.applyBreakers(g.config())
}

// applyBreakers installs cfg's per-upstream breaker configs.
func (g *Server) applyBreakers(cfg *Config) {
	configs := make(map[string]breaker.Config, len(cfg.Upstreams))
	for name, u := range cfg.Upstreams {
		if u != nil {
			configs[name] = u.Breaker
		}
	}
	g.breakers.Apply(configs)
	g.retainBreakers(cfg)
}

// retainBreakers drops the breakers of credentials no upstream of cfg
// binds (renamed or unbound by a reload). An upstream a reload replaced
// serves calls with its old binding until its successor takes over, and
// may make such a breaker again meanwhile: the reload calls this once more
// then, and breakerHealth shows only bound ones.
func (g *Server) retainBreakers(cfg *Config) {
	g.breakers.Retain(func(up, cred string) bool { return bound(cfg, up, cred) })
}

// bound reports whether upstream up of cfg uses credential cred.
func bound(cfg *Config, up, cred string) bool {
	u := cfg.Upstreams[up]
	return u != nil && slices.Contains(u.boundCredentials(cfg.Credentials), cred)
}

// breakerChange logs each breaker state change once and publishes it.
func (g *Server) breakerChange(c breaker.Change) {
	defer g.healthChanged()
	up, cred, _ := strings.Cut(c.Name, "/")
	ev := g.log.Info()
	if c.To == breaker.StateOpen {
		ev = g.log.Warn()
	}
	ev = ev.Str(fieldUpstream, up).Str(fieldBreakerState, c.To.String()).Str("from", c.From.String())
	if cred != "" {
		ev = ev.Str(fieldCredential, cred)
	}
	if c.Reason != "" {
		ev = ev.Str("reason", c.Reason)
	}
	if !c.Until.IsZero() {
		ev = ev.Time("until", c.Until)
	}
	ev.Msg("breaker " + c.To.String())
	g.publishBreaker(c)
	g.routesChanged()
	g.shared.breakerChange(c)
}

// fieldBreakerState is the log field of a breaker's state.
const fieldBreakerState = "breaker_state"

// callBreakers are the breakers one call was admitted by; report tells them
// its outcome (once).
type callBreakers struct {
	up, cred   func(breaker.Outcome)
	g          *Server
	credential string // the credential, when cred is set
	gen        uint64 // its generation, as the call sent it
}

// credCause is an auth failure a call got, and the generation of the
// credential it sent.
type credCause struct {
	f   authmap.Failure
	gen uint64
}

// credentialCause returns the failure of the last call that found
// credential name dead (subtype sub) at generation gen.
func (g *Server) credentialCause(name string, gen uint64, sub authmap.Subtype) (authmap.Failure, bool) {
	if v, ok := g.credCauses.Load(name); ok {
		if c := v.(credCause); c.gen == gen && c.f.Subtype == sub {
			return c.f, true
		}
	}
	return authmap.Failure{}, false
}

func (cb *callBreakers) report(up, cred breaker.Outcome) {
	if cb == nil {
		return
	}
	cb.up(up)
	if cb.cred != nil {
		cb.cred(cred)
	}
}

// done reports the outcome of a call that ended with raw and was answered
// with f (see breakerOutcomes), and keeps an auth failure that opens the
// credential's breaker as the answer of the calls it refuses.
func (cb *callBreakers) done(raw error, f *authmap.Failure) {
	if cb == nil {
		return
	}
	up, cred := breakerOutcomes(raw, f)
	var lost *sessionLostError
	if up.Failed() && errors.As(raw, &lost) && !cb.g.losses.first(lost.cs) {
		up = breaker.Excluded() // another call reported this loss
	}
	if cb.cred != nil && f != nil && f.IsAuth() && opensCredential(f.Subtype) {
		cb.g.credCauses.Store(cb.credential, credCause{f: *f, gen: cb.gen})
	}
	cb.report(up, cred)
}

// lossSet holds the sessions whose loss a call reported to a breaker. It
// holds them weakly: a call can report a session's loss only while it holds
// the session, so once nothing does, its entry is useless and goes (at the
// next loss), and the set holds no more than the lost sessions still in use.
type lossSet struct {
	mu   sync.Mutex
	seen map[weak.Pointer[mcp.ClientSession]]struct{}
}

// first records the loss of cs and reports whether it is the first report
// of it.
func (l *lossSet) first(cs *mcp.ClientSession) bool {
	k := weak.Make(cs)
	l.mu.Lock()
	defer l.mu.Unlock()
	if _, ok := l.seen[k]; ok {
		return false
	}
	for p := range l.seen {
		if p.Value() == nil {
			delete(l.seen, p)
		}
	}
	if l.seen == nil {
		l.seen = map[weak.Pointer[mcp.ClientSession]]struct{}{}
	}
	l.seen[k] = struct{}{}
	return true
}

// opensCredential reports whether an auth failure of subtype s opens the
// credential's breaker (see breakerOutcomes).
func opensCredential(s authmap.Subtype) bool {
	switch s {
	case authmap.SubtypeCredentialRevoked, authmap.SubtypeCredentialInvalid, authmap.SubtypeCredentialMissing,
		authmap.SubtypeCredentialExpired, authmap.SubtypeRateLimitReached, authmap.SubtypeQuotaExhausted:
		return true
	}
	return false
}

// admit asks u's breaker and, when cred is set, the breaker of cred on u,
// whether a call may be sent. Refused, it returns the failure the call is
// answered with.
func (g *Server) admit(u *upstream, cred string) (*callBreakers, *authmap.Failure) {
	up, err := g.breakers.Allow(u.name, 0)
	var oe *breaker.OpenError
	switch {
	case err == nil:
	case errors.As(err, &oe) && oe.Reason == reasonConnect && u.session.Load() != nil:
		// Opened by connect failures, and connected since: the connect
		// loop, not the breaker, decides when an upstream is back.
		up = func(breaker.Outcome) {}
	case errors.As(err, &oe) && oe.Reason == reasonConnect:
		// Still down: the cause of the outage, with the breaker's wait.
		f := g.downFailure(u)
		return nil, &f
	default:
		f := g.openFailure(u, "", err)
		return nil, &f
	}
	cb := &callBreakers{up: up, g: g}
	if c := g.credential(cred); c != nil {
		gen := c.Generation()
		cb.credential, cb.gen = cred, gen
		cb.cred, err = g.breakers.Allow(breaker.Name(u.name, cred), gen)
		if err != nil {
			up(breaker.Excluded())
			f := g.openFailure(u, cred, err)
			return nil, &f
		}
	}
	return cb, nil
}

// retryCredential ends the opens credential name's breakers keep "until the
// credential changes", on every upstream it is bound to, when the
// credential is usable: an operator reloaded it (here, or on a peer
// replica) and says to try it again. A reload that finds a rejected value
// unchanged adopts it anew (a new generation) and needs none of this; this
// is for a breaker left open at the generation in use while the
// credential's status says it works (found trying three replicas: a peer's
// "healthy again" ended the status but not the breaker, and nothing but a
// new value or a restart closed it). A credential still known rejected
// keeps its breakers: its value is not resent without a change.
func (g *Server) retryCredential(name string) {
	c := g.credential(name)
	if c == nil || !c.Status().Usable() {
		return
	}
	cfg := g.config()
	for _, up := range cfg.Order() {
		if bound(cfg, up, name) {
			if g.breakers.Retry(breaker.Name(up, name)) {
				g.log.Info().Str(fieldUpstream, up).Str(fieldCredential, name).Msg("credential breaker closed: the credential was reloaded and is tried again")
			}
		}
	}
}

// seeCredential shows credential name's breakers the generation it holds
// now, as the next call would: a new value, or a value adopted anew (a
// reload that tries it again, here or on a peer replica), ends an open kept
// "until the credential changes" at once, so /health, metrics and routes
// do not show it open until a call happens to ask.
func (g *Server) seeCredential(name string) {
	c := g.credential(name)
	if c == nil {
		return
	}
	gen := c.Generation()
	for _, st := range g.breakers.Snapshot() {
		if _, cred, ok := strings.Cut(st.Name, "/"); ok && cred == name && st.State == breaker.StateOpen && st.Until.IsZero() {
			_ = g.breakers.Check(st.Name, gen)
		}
	}
}

// openFailure is the failure of a call an open breaker refused: the typed
// failure that opened it, with retry_after_seconds when its end is known and
// the breaker named in the detail.
func (g *Server) openFailure(u *upstream, cred string, err error) authmap.Failure {
	var oe *breaker.OpenError
	if !errors.As(err, &oe) {
		return g.attribute(u, authmap.Failure{Type: authmap.TypeUpstreamUnavailable, Retryable: true, Detail: err.Error()})
	}
	now := time.Now() // the breaker's clock
	until := "until the credential changes (rotate it, or reload it)"
	if !oe.RetryAfter.IsZero() {
		until = "until " + oe.RetryAfter.UTC().Format(time.RFC3339)
	}
	var f authmap.Failure
	sub := authmap.Subtype(oe.Reason)
	if isAuthSubtype(sub) && cred != "" {
		f = authmap.Failure{Type: authmap.TypeAuthFailure, Subtype: sub, Recovery: recoveryOf(sub), Credential: cred}
		var renewsAt *time.Time
		renews := false
		if c := g.credential(cred); c != nil {
			snap := c.Snapshot(false)
			if le := snap.LastError; le != nil && le.Subtype == sub {
				f = *le
				f.Credential = cred
			}
			if cause, ok := g.credentialCause(cred, c.Generation(), sub); ok {
				f = cause // the very failure that opened it
				f.Credential = cred
			}
			// A credential the gateway renews by itself (an OAuth token
			// that expired, a renewal put off a minute) changes without
			// anyone: the refusal is retryable, as the call's own
			// failure was (they read "not retryable, rotate it").
			renewsAt = snap.RenewalAt
			renews = oe.RetryAfter.IsZero() && (renewsAt != nil || snap.Renewable && sub == authmap.SubtypeCredentialExpired)
		}
		f.Retryable = !oe.RetryAfter.IsZero() || renews
		if renews {
			until = "until the gateway renews the credential, which it does by itself"
			f.Recovery = authmap.RecoveryWait
		}
		f.Detail = fmt.Sprintf("circuit open %s: credential %q was answered %s; not sent", until, cred, sub)
		if renews && renewsAt != nil {
			secs := max(int(math.Ceil(time.Until(*renewsAt).Seconds())), 1)
			f.RetryAfterSeconds = &secs
			return g.attribute(u, f)
		}
	} else {
		f = authmap.Failure{Type: authmap.TypeUpstreamUnavailable, Retryable: true,
			Detail: fmt.Sprintf("circuit open %s: upstream %q failed repeatedly (%s); not sent", until, u.name, oe.Reason)}
	}
	f.RetryAfterSeconds = nil
	if s := oe.RetryAfterSeconds(now); s > 0 {
		f.RetryAfterSeconds = &s
	}
	return g.attribute(u, f)
}

func isAuthSubtype(s authmap.Subtype) bool {
	for _, t := range authmap.Subtypes() {
		if s == t {
			return true
		}
	}
	return false
}

// recoveryOf is the recovery hint of a refusal for subtype s when the
// credential's own last failure does not give one.
func recoveryOf(s authmap.Subtype) authmap.Recovery {
	switch s {
	case authmap.SubtypeRateLimitReached:
		return authmap.RecoveryWait
	case authmap.SubtypeQuotaExhausted:
		return authmap.RecoveryAddQuota
	default:
		return authmap.RecoveryRotate
	}
}

// breakerOutcomes turns a call's outcome, already classified, into what its
// breakers are told (see the table above). raw is the error forwarding
// returned (nil when the upstream answered, isError results included) and f
// the failure object the call was answered with, if any.
func breakerOutcomes(raw error, f *authmap.Failure) (up, cred breaker.Outcome) {
	if raw != nil && (errors.Is(raw, context.Canceled) || notSent(raw)) {
		return breaker.Excluded(), breaker.Excluded()
	}
	if f != nil && f.IsAuth() {
		var reset time.Time
		if f.RetryAfterSeconds != nil && *f.RetryAfterSeconds > 0 {
			reset = time.Now().Add(time.Duration(*f.RetryAfterSeconds) * time.Second)
		}
		if f.RetryAfterSeconds != nil && *f.RetryAfterSeconds <= 0 &&
			(f.Subtype == authmap.SubtypeRateLimitReached || f.Subtype == authmap.SubtypeQuotaExhausted) {
			// Retry-After: 0, or a date already past: the provider says
			// the next call may go now (the agent was told 0). Opening
			// for open_timeout would hold the credential back 30 s
			// (found trying the gateway from outside).
			return breaker.Success(), breaker.Excluded()
		}
		switch f.Subtype {
		case authmap.SubtypeCredentialRevoked, authmap.SubtypeCredentialInvalid,
			authmap.SubtypeCredentialMissing, authmap.SubtypeCredentialExpired:
			return breaker.Success(), breaker.Rejected(string(f.Subtype))
		case authmap.SubtypeRateLimitReached:
			return breaker.Success(), breaker.RateLimited(reset)
		case authmap.SubtypeQuotaExhausted:
			return breaker.Success(), breaker.QuotaExhausted(reset)
		}
		// insufficient_scope, permission_denied: the credential
		// authenticated; this tool is not for it.
		return breaker.Success(), breaker.Success()
	}
	if raw == nil {
		return breaker.Success(), breaker.Success()
	}
	var httpErr *HTTPError
	switch {
	case f != nil && (f.Type == authmap.TypeTimeout || f.Type == authmap.TypeUpstreamUnavailable):
		return breaker.Failure(string(f.Type)), breaker.Excluded()
	case errors.As(raw, &httpErr) && httpErr.Status >= 500:
		return breaker.Failure(string(authmap.TypeUpstreamUnavailable)), breaker.Excluded()
	}
	// Any other answer (a JSON-RPC error, a 4xx): the upstream is alive.
	return breaker.Success(), breaker.Success()
}

// notSent reports whether err means the request never reached the upstream.
func notSent(err error) bool {
	var unavail *unavailableError
	var agentLimit *agentLimitError
	var missing *credentialMissingError
	var gated *gatedError
	return errors.As(err, &unavail) || errors.As(err, &agentLimit) || errors.As(err, &missing) ||
		errors.As(err, &gated) || errors.Is(err, ErrShuttingDown)
}

// admitConnect asks u's breaker before a connect attempt and returns what
// reports its outcome. An open breaker does not stop the attempt (the
// backoff decides when to reconnect); its outcome is then not reported.
func (u *upstream) admitConnect() func(f *authmap.Failure, cancelled bool) {
	done, err := u.gw.breakers.Allow(u.name, 0)
	if err != nil {
		return func(*authmap.Failure, bool) {}
	}
	return func(f *authmap.Failure, cancelled bool) {
		switch {
		case cancelled:
			done(breaker.Excluded())
		case f == nil || f.IsAuth():
			// Connected, or answered (a credential rejected at connect is
			// the credential's problem, reported as such).
			done(breaker.Success())
		default:
			done(breaker.Failure(reasonConnect))
		}
	}
}

// reasonConnect is the breaker reason of failed connect attempts. A breaker
// they opened refuses calls only while the upstream is still down: once the
// connect loop reconnects, calls flow (and the first one after open_timeout
// closes the breaker).
const reasonConnect = "connect_failed"

// BreakerHealth is a breaker's entry in /health.
type BreakerHealth struct {
	State  string     `json:"state"`            // closed, open, half-open
	Reason string     `json:"reason,omitempty"` // why it is open or half-open
	Until  *time.Time `json:"until,omitempty"`  // when an open breaker lets a probe through; absent if unknown
}

// breakerHealth returns each upstream's breaker and its credential breakers,
// by upstream name. An upstream whose breaker was never used is closed.
func (g *Server) breakerHealth() (map[string]BreakerHealth, map[string]map[string]BreakerHealth) {
	ups := map[string]BreakerHealth{}
	creds := map[string]map[string]BreakerHealth{}
	cfg := g.config()
	for _, s := range g.breakers.Snapshot() {
		bh := BreakerHealth{State: s.State.String(), Reason: s.Reason}
		if !s.Until.IsZero() {
			t := s.Until.UTC()
			bh.Until = &t
		}
		up, cred, ok := strings.Cut(s.Name, "/")
		if !ok {
			ups[up] = bh
			continue
		}
		if !bound(cfg, up, cred) {
			continue // a replaced upstream's, still serving its calls
		}
		if creds[up] == nil {
			creds[up] = map[string]BreakerHealth{}
		}
		creds[up][cred] = bh
	}
	return ups, creds
}

// forwardBreakers runs send, a prompts/get or resources/read forwarded to u,
// through u's breakers (the upstream's, and its default credential's): it is
// refused with the failure that opened one, and its outcome, classified once
// by rpcFailure, is reported. It returns the error the agent gets.
func (g *Server) forwardBreakers(ctx context.Context, u *upstream, method, name string, send func() error) error {
	cb, refused := g.admit(u, u.defaultCred)
	if refused != nil {
		return failureRPC(method, name, *refused)
	}
	raw := send()
	if raw == nil {
		cb.report(breaker.Success(), breaker.Success())
		return nil
	}
	out, f := g.rpcFailure(u, method, name, raw)
	cb.done(raw, f)
	return out
}

// downFailure is the failure of a call to u while it has no session: why it
// is down and, when failed connect attempts opened its breaker, when it is
// tried next by the breaker (retry_after_seconds).
func (g *Server) downFailure(u *upstream) authmap.Failure {
	f, _ := g.classify(u, u.unavailable())
	var oe *breaker.OpenError
	if errors.As(g.breakers.Check(u.name, 0), &oe) && oe.Reason == reasonConnect && !oe.RetryAfter.IsZero() {
		if s := oe.RetryAfterSeconds(time.Now()); s > 0 {
			f.RetryAfterSeconds = &s
		}
		f.Detail = truncate(f.Detail+fmt.Sprintf("; circuit open until %s after repeated connect failures", oe.RetryAfter.UTC().Format(time.RFC3339)), 600)
	}
	return f
}
