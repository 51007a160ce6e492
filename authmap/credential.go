package authmap

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"math/rand/v2"
	"runtime/debug"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

const (
	// reactiveInterval: a credential is renewed after a live rejection at most
	// once per this. A dead credential is then not hammered at its source, and
	// a rejection storm from many concurrent calls costs one fetch.
	reactiveInterval = time.Minute
	// maxPrevious bounds the previous values kept for redaction. An OAuth
	// credential renewing every few seconds would otherwise grow without end;
	// values older than this are long dead and unlikely to be echoed.
	maxPrevious = 16
	// backoffMin is the first wait after a failed automatic renewal; it
	// doubles per failure up to lifecycle.check_interval.
	backoffMin = 2 * time.Second
)

// CredentialOptions configure a Credential. A nil *CredentialOptions is the
// same as the zero value.
type CredentialOptions struct {
	// Lifecycle holds the watch's timings. Zero fields take their defaults.
	Lifecycle LifecycleConfig
	// Probe checks a value before it is adopted. If nil, values are not
	// probed. ([Set] builds it from the config's probe.)
	Probe ProbeFunc
	// OnEvent receives every lifecycle event, synchronously and outside the
	// credential's lock (it may call the credential's methods). If nil,
	// events are dropped.
	OnEvent func(Event)
	// Logger gets what has no caller to return to: a failed watch, a
	// recovered panic. If nil, nothing is logged.
	Logger *slog.Logger
	// Coordinator shares renewals with peer replicas (see [Coordinator]).
	// If nil, the credential renews on its own.
	Coordinator Coordinator
}

// Credential is one named credential: its source, its current value and what
// is known about it. Its methods are safe for concurrent use.
//
// The call path reads [Credential.Value] (an atomic load) and
// [Credential.Knowledge]; it feeds back [Credential.Report] and, on a
// rejection, [Credential.RenewAfterRejection]. [Credential.Run] is the expiry
// watch and renewal loop.
type Credential struct {
	name    string
	cfg     CredentialConfig
	src     Source
	probe   ProbeFunc
	onEvent func(Event)
	log     *slog.Logger
	coord   Coordinator

	lc   atomic.Pointer[LifecycleConfig]
	snap atomic.Pointer[snapshot] // what the call path reads
	live atomic.Bool              // a live status is set: Report("") must take the lock
	kick chan struct{}            // wakes Run to recompute its timer
	// unwatched: the source's watch failed, so the watch polls it like a
	// secrets store (issue 7).
	unwatched atomic.Bool

	mu         sync.Mutex
	st         state
	flight     *flight // the renewal running, if any
	lastFlight *flight // the last one finished
	flights    uint64  // renewals started
}

// snapshot is published on every change; the call path reads it lock-free.
type snapshot struct {
	value string
	gen   uint64
	know  Knowledge
}

type state struct {
	loaded   bool
	value    string
	gen      uint64
	tok      Token // the metadata of value (tok.Value is not read)
	obtained time.Time
	jwtExp   time.Time
	noted    time.Time // NoteExpiry
	previous []string
	// prevTok and prevObtained are the metadata of the value before the
	// current one, and when it was obtained, for RejectRotation.
	prevTok      Token
	prevObtained time.Time
	// firstValue is the first value adopted: the one the config's
	// expires_at is about (expiryLocked).
	firstValue string
	// rejected is the value RejectRotation took back: read again from the
	// source, it is not adopted again but by an operator's reload.
	rejected   string
	rejectedAt time.Time
	// prevLive is the live status of the value adoptLocked replaced last.
	prevLive Status
	live     Status // a status calls or the source reported; StatusUnknown = none
	liveAt   time.Time
	// limitedUntil is when the provider said a rate limit resets (its
	// Retry-After), for live StatusRateLimited; zero when it did not say.
	limitedUntil time.Time
	refreshRej   bool // a refresh was answered invalid_grant
	// grantChanged: since, the refresh token changed at its source, so it
	// is asked again; lastGrantPoll is when that was last looked at.
	grantChanged  bool
	lastGrantPoll time.Time
	clientRej     bool // the token endpoint rejected the client

	lastChecked  time.Time
	lastErr      *Failure
	fetchErr     bool      // lastErr is the source's failure to give the value (fetchFailed)
	failures     int       // consecutive failed automatic renewals
	retryAt      time.Time // the next automatic attempt after a failure
	lastPoll     time.Time
	lastReactive time.Time
	// reactiveDue: a rejection's renewal was skipped by the once-a-minute
	// limit; the watch runs it when the minute is over (issue 7), so a
	// credential whose every call is now held back is not stranded.
	reactiveDue  bool
	announced    Status // the status events last reported
	lastEventKey string // the last repeatable event, so a source failing the same way is reported once
}

type flight struct {
	seq     uint64 // flights are numbered in the order they start
	done    chan struct{}
	changed bool
	err     error
}

// NewCredential returns a credential reading from src. It does no I/O: call
// [Credential.Load] for the pre-flight.
func NewCredential(name string, cfg CredentialConfig, src Source, opts *CredentialOptions) *Credential {
	if opts == nil {
		opts = &CredentialOptions{}
	}
	c := &Credential{
		name:    name,
		cfg:     cfg,
		src:     src,
		probe:   opts.Probe,
		onEvent: opts.OnEvent,
		log:     opts.Logger,
		coord:   opts.Coordinator,
		kick:    make(chan struct{}, 1),
	}
	if c.log == nil {
		c.log = slog.New(slog.DiscardHandler)
	}
	c.SetLifecycle(opts.Lifecycle)
	c.publishLocked()
	return c
}

// continueGeneration makes c's generations go on from gen, the last of a
// credential of its name that was removed.
func (c *Credential) continueGeneration(gen uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.st.gen = max(c.st.gen, gen)
}

// inheritSecrets makes old's values previous values of c, so that a
// credential replaced by a config change still redacts what it held.
func (c *Credential) inheritSecrets(old *Credential) {
	old.mu.Lock()
	held := append([]string(nil), old.st.previous...)
	if old.st.value != "" {
		held = append(held, old.st.value)
	}
	gen := old.st.gen
	old.mu.Unlock()
	c.mu.Lock()
	defer c.mu.Unlock()
	// The generation goes on from the old one's: its first value is a
	// change to whoever compared generations (a breaker held until the
	// credential changes, the redactor's bookkeeping, a stdio child).
	c.st.gen = max(c.st.gen, gen)
	c.st.previous = append(held, c.st.previous...)
	if len(c.st.previous) > maxPrevious {
		c.st.previous = c.st.previous[len(c.st.previous)-maxPrevious:]
	}
	c.publishLocked()
}

// Name returns the credential's configured name.
func (c *Credential) Name() string { return c.name }

// Config returns the credential's config.
func (c *Credential) Config() CredentialConfig { return c.cfg }

// SourceKind returns the kind of its source (env, file, exec, vault, ...).
func (c *Credential) SourceKind() string { return c.src.Kind() }

// SetLifecycle replaces the watch's timings (a config reload); zero fields
// take their defaults. A running watch picks them up at once.
func (c *Credential) SetLifecycle(lc LifecycleConfig) {
	lc = lc.WithDefaults()
	c.lc.Store(&lc)
	c.wake()
}

func (c *Credential) lifecycle() LifecycleConfig { return *c.lc.Load() }

func (c *Credential) wake() {
	select {
	case c.kick <- struct{}{}:
	default:
	}
}

// Value returns the current value, or "" when there is none (never send an
// empty credential: the call fails as credential_missing). It is one atomic
// load, without locks or allocation.
func (c *Credential) Value() string { return c.snap.Load().value }

// Rejected returns the value RejectRotation last took back, "" if none.
func (c *Credential) Rejected() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.st.rejected
}

// Generation counts the value's changes: it grows each time a new value is
// adopted, so "until the credential changes" is a comparison.
func (c *Credential) Generation() uint64 { return c.snap.Load().gen }

// Knowledge returns what the classifier needs about the credential: its name,
// expiry, whether the gateway can renew it, whether a refresh was rejected,
// and its secrets (the current value, previous values, the source's own
// secrets) for redaction. The Secrets slice is shared: do not modify it.
func (c *Credential) Knowledge() Knowledge { return c.snap.Load().know }

// Status returns the credential's status now.
func (c *Credential) Status() Status {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.statusLocked(time.Now())
}

// ExpiresAt returns the effective expiry (zero: unknown): the config's
// expires_at, else the source's, else a JWT's exp claim, else one a provider
// header announced (NoteExpiry).
func (c *Credential) ExpiresAt() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.expiryLocked()
}

// Load is the pre-flight: it resolves the value, reads its expiry and runs
// the probe if one is configured. It returns the error that left the
// credential without a working value, naming the credential; the status
// tells the rest ([LifecycleConfig].Startup decides whether to start).
func (c *Credential) Load(ctx context.Context) error {
	_, err := c.Renew(ctx, TriggerStartup)
	if err != nil {
		return err
	}
	if st := c.Status(); !st.Usable() {
		return c.Problem()
	}
	return nil
}

// Loaded reports whether Load (or any renewal) has run.
func (c *Credential) Loaded() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.st.loaded
}

// Problem returns nil while the credential is usable, else an error naming
// it, its status and why.
func (c *Credential) Problem() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	st := c.statusLocked(time.Now())
	if st.Usable() && st != StatusUnknown {
		return nil
	}
	why := ""
	switch {
	case c.st.lastErr != nil && c.st.lastErr.Detail != "":
		why = c.st.lastErr.Detail
	case c.st.lastErr != nil:
		why = string(c.st.lastErr.Subtype)
	case st == StatusExpired:
		why = "expired at " + c.expiryLocked().UTC().Format(time.RFC3339)
	case st == StatusUnknown:
		why = "not loaded"
	}
	if why == "" {
		return fmt.Errorf("credential %q: %s", c.name, st)
	}
	return fmt.Errorf("credential %q: %s: %s", c.name, st, why)
}

// keepsLiveToken reports whether a reload of every credential (SIGHUP)
// leaves this one as it is: a renewable token (OAuth) that is good (not
// found dead, before its refresh point), whose grant (client secret,
// refresh token) did not change at its source. Asking the token endpoint
// for a new one is not a re-read: a client whose secret the provider has
// just changed would be rejected, and the credential held back while the
// token it has still works (found trying the gateway from outside). The
// watch renews it at its refresh point as before; the admin endpoint's
// reload of the one credential still asks.
func (c *Credential) keepsLiveToken(ctx context.Context) bool {
	gc, ok := c.src.(GrantChanger)
	if !ok {
		return false
	}
	now := time.Now()
	c.mu.Lock()
	good := c.renewableLocked() && c.st.value != "" && c.flight == nil &&
		c.statusLocked(now) == StatusHealthy && c.st.failures == 0
	if at := c.refreshAtLocked(c.lifecycle()); at.IsZero() || !now.Before(at) {
		good = false
	}
	c.mu.Unlock()
	return good && !gc.GrantChanged(ctx)
}

// Renew re-reads the value from the source now (an OAuth refresh, a file or
// Vault re-read, an exec re-run). Renewals are single-flight: a caller that
// finds one running waits for it and shares its result, except that a
// manual trigger (signal, admin, webhook, file) shares only a fetch that
// began after it arrived, so a rotation it announces is never missed, and a
// burst of them costs at most two fetches.
// A new value is probed (if configured) before it replaces the old one; one
// the provider rejects is not adopted (event rejected_rotation). changed
// reports whether the value changed.
func (c *Credential) Renew(ctx context.Context, trigger Trigger) (changed bool, err error) {
	c.mu.Lock()
	arrival := c.flights
	for {
		f := c.flight
		if f == nil {
			if last := c.lastFlight; trigger.manual() && last != nil && last.seq > arrival {
				c.mu.Unlock()
				return last.changed, last.err
			}
			break
		}
		c.mu.Unlock()
		select {
		case <-f.done:
		case <-ctx.Done():
			return false, ctx.Err()
		}
		if !trigger.manual() || f.seq > arrival {
			return f.changed, f.err
		}
		c.mu.Lock()
	}
	if !trigger.manual() && trigger != TriggerStartup && ((c.st.refreshRej && !c.st.grantChanged) || (c.st.clientRej && trigger != TriggerWatch)) {
		// A rejected client is asked again by the watch only (check).
		c.mu.Unlock()
		return false, fmt.Errorf("credential %q: not renewed automatically after the token endpoint rejected it", c.name)
	}
	c.flights++
	f := &flight{done: make(chan struct{}), seq: c.flights}
	c.flight = f
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		c.flight, c.lastFlight = nil, f
		c.mu.Unlock()
		close(f.done)
		c.wake()
	}()
	f.changed, f.err = c.renew(ctx, trigger)
	return f.changed, f.err
}

func (c *Credential) renew(ctx context.Context, trigger Trigger) (bool, error) {
	tok, err := c.fetch(ctx, trigger)
	if err == nil && tok.Value == "" {
		err = fmt.Errorf("%s source resolved to an empty value: %w", c.src.Kind(), ErrMissing)
	}
	if err == nil {
		err = c.unsendable(tok.Value)
	}
	if err != nil {
		return false, c.fetchFailed(trigger, err)
	}
	c.mu.Lock()
	same := c.st.loaded && tok.Value == c.st.value
	if !same && c.st.rejected != "" && tok.Value == c.st.rejected && trigger != TriggerAdmin && time.Since(c.st.rejectedAt) < rejectedHold {
		// Taken back once already (RejectRotation): the source has not
		// changed since, and nothing more is to be said, but to a webhook,
		// which announced this value as new: it was answered "unchanged",
		// healthy, and took that for a success (found trying the gateway
		// from outside).
		c.st.lastChecked = time.Now()
		ago := time.Since(c.st.rejectedAt).Round(time.Second)
		c.mu.Unlock()
		if trigger == TriggerWebhook {
			return false, fmt.Errorf("credential %q: the source holds the value an upstream's child exited on %s ago; the value before it is kept (an admin reload tries it again)", c.name, ago)
		}
		return false, nil
	}
	c.mu.Unlock()

	// An operator's reload of this credential (the admin endpoint), of a
	// value the provider rejected, tries it again (see retryRejected). Not a
	// SIGHUP or a webhook: those reload every credential, or announce a new
	// value the source may not hold yet, and must not bring a dead one back.
	var retryOf Status
	if same && trigger == TriggerAdmin {
		c.mu.Lock()
		switch st := c.st.live; {
		case st == StatusRevoked, st == StatusInvalid:
			retryOf = st
		case st == StatusExpired:
			if exp := c.expiryLocked(); exp.IsZero() || time.Now().Before(exp) {
				retryOf = st // not past an expiry the gateway knows
			}
		}
		c.mu.Unlock()
	}

	var res ProbeResult
	var perr error
	probed := false
	if (!same || retryOf != StatusUnknown) && c.probe != nil {
		res, perr = c.probe(ctx, tok.Value)
		probed = true
	}

	var evs []Event
	now := time.Now()
	c.mu.Lock()
	defer func() {
		c.mu.Unlock()
		c.emit(evs)
	}()
	c.st.lastChecked = now
	prevFailures := c.st.failures
	c.st.failures, c.st.retryAt = 0, time.Time{}
	fetchErr := c.st.fetchErr
	c.st.fetchErr = false
	if retryOf != StatusUnknown {
		// retryRejected: the provider may accept the value again (a token
		// authorised again, a transient rejection), and the operator who
		// reloads it says so. A probe that still rejects it keeps it
		// rejected; otherwise it is adopted anew (a new generation, so the
		// gate and the breakers let it through once more) and the next
		// request tells. Without this, only a new value or a restart
		// cleared it, though every failure says "reload it".
		if probed && res.Failure != nil && rejectsValue(res.Failure) {
			c.st.lastErr = c.failureWithCredential(res.Failure)
			c.publishLocked()
			return false, fmt.Errorf("credential %q: reloaded, and still rejected by its probe: %s", c.name, c.redactLocked(res.Failure.Error()))
		}
		if probed && (perr != nil || res.Failure != nil) {
			// A probe that could not tell keeps it as it is.
			return false, fmt.Errorf("credential %q: reloaded, but its probe could not tell whether the provider accepts it again; it stays %s", c.name, retryOf)
		}
		c.adoptLocked(tok, now)
		c.publishLocked()
		detail := "reloaded: the value found " + retryOf.String() + " is tried again"
		if probed && perr == nil && res.Failure == nil {
			detail = "reloaded: the value found " + retryOf.String() + " passed its probe"
		}
		evs = c.settleLocked(now, trigger, evs, true)
		evs = append(evs, c.eventLocked(now, EventRestored, trigger, detail))
		return true, nil
	}
	if same {
		// Same value: the source may say more about it (a new expiry, version).
		prevExp := c.expiryLocked()
		c.st.tok = metadataOf(tok)
		// A later expiry for the same value is a renewal (a lease extended,
		// as Vault's are): its new lifetime starts now. Counted as a failed
		// renewal, it turned the credential expiring and paged, and the
		// source was re-run every few seconds as the lifetime left to it
		// shrank (found trying the gateway from outside).
		extended := !tok.ExpiresAt.IsZero() && c.expiryLocked().After(prevExp)
		if extended {
			c.st.obtained = now
		}
		// The source answered: a failure after this is a new one, reported
		// even if it reads as the last (a file removed, written back the
		// same, removed again went unreported the second time).
		c.st.lastEventKey = ""
		failedRenewal := trigger == TriggerRefresh && !extended && !now.Before(c.refreshAtLocked(c.lifecycle()))
		if failedRenewal {
			// The endpoint handed back the token it had (a cached client
			// credentials token): no new lifetime, so a failed renewal.
			c.st.failures = prevFailures + 1
			c.st.retryAt = now.Add(c.backoffLocked())
		}
		// Only the source's own failure is cleared so: a provider's last
		// answer (a rate limit that has ended) is not the source's, and
		// "holds the value again" would be news of nothing (found trying the
		// gateway from outside).
		cleared := fetchErr && c.st.live == StatusUnknown && c.st.lastErr != nil && !failedRenewal
		if c.st.live == StatusUnknown {
			c.st.lastErr = nil
		}
		c.publishLocked()
		n := len(evs)
		evs = c.settleLocked(now, trigger, evs, false)
		if cleared && len(evs) == n {
			// The source holds the value again after failing to (a file
			// removed, then written back the same; a store unreachable,
			// then answering): said, as the failure was, rather than its
			// last_error vanishing without a word (found trying the
			// gateway from outside).
			evs = append(evs, c.eventLocked(now, EventLoaded, trigger, "the source holds the value again (unchanged); its last error is cleared"))
		}
		return false, nil
	}
	rejected := probed && res.Failure != nil && rejectsValue(res.Failure)
	if rejected && c.st.value != "" {
		c.st.lastErr = c.failureWithCredential(res.Failure)
		c.publishLocked()
		evs = append(evs, c.eventLocked(now, EventRejectedRotation, trigger,
			"the new value failed its check and the current one is kept: "+res.Failure.Error()))
		return false, fmt.Errorf("credential %q: new value rejected by its probe: %s", c.name, c.redactLocked(res.Failure.Error()))
	}
	hadValue := c.st.value != ""
	c.adoptLocked(tok, now)
	if probed && !res.ExpiresAt.IsZero() {
		c.st.noted = res.ExpiresAt
	}
	switch {
	case rejected:
		// No value to keep: adopt it, with the status the provider gave it.
		st, _ := StatusOf(res.Failure.Subtype)
		c.setLiveLocked(st, now)
		c.st.lastErr = c.failureWithCredential(res.Failure)
	case probed && res.Failure != nil:
		// The provider answered, but not about the credential (a 5xx, a missing scope on the probe URL).
		c.st.lastErr = c.failureWithCredential(res.Failure)
	case probed && perr != nil:
		// Inconclusive, so the value is adopted; but say so where ops
		// look (health, `gateway check`), not only in a log line.
		detail := "the probe could not run: " + c.redactLocked(perr.Error())
		c.st.lastErr = &Failure{Type: TypeUpstreamUnavailable, Retryable: true, Credential: c.name, Detail: detail}
		c.log.Warn("credential probe could not run", "credential", c.name, "err", c.redactLocked(perr.Error()))
	}
	c.publishLocked()
	kind := EventRotated
	switch {
	case trigger == TriggerStartup || !hadValue:
		kind = EventLoaded
	case tok.Renewable:
		kind = EventRefreshed
	}
	detail := describeToken(tok)
	evs = append(evs, c.eventLocked(now, kind, trigger, detail))
	if probed && perr == nil && res.Failure == nil {
		evs = append(evs, c.eventLocked(now, EventValidated, trigger, "the probe accepted the value"))
	}
	evs = c.settleLocked(now, trigger, evs, !rejected)
	return true, nil
}

func describeToken(tok Token) string {
	var parts []string
	if tok.Version != "" {
		parts = append(parts, "version "+tok.Version)
	}
	if !tok.ExpiresAt.IsZero() {
		parts = append(parts, "expires "+tok.ExpiresAt.UTC().Format(time.RFC3339))
	}
	if !tok.RotationAt.IsZero() {
		parts = append(parts, "next rotation "+tok.RotationAt.UTC().Format(time.RFC3339))
	}
	if tok.RotationPending {
		parts = append(parts, "a rotation is pending")
	}
	s := ""
	for i, p := range parts {
		if i > 0 {
			s += ", "
		}
		s += p
	}
	return s
}

// rejectsValue reports whether a probe's failure says the value itself does not work.
func rejectsValue(f *Failure) bool {
	if !f.IsAuth() {
		return false
	}
	switch f.Subtype {
	case SubtypeCredentialMissing, SubtypeCredentialInvalid, SubtypeCredentialExpired, SubtypeCredentialRevoked:
		return true
	}
	return false
}

func metadataOf(tok Token) Token {
	tok.Value = ""
	return tok
}

func (c *Credential) adoptLocked(tok Token, now time.Time) {
	c.st.rejected, c.st.grantChanged = "", false
	if c.st.firstValue == "" {
		c.st.firstValue = tok.Value
	}
	if c.st.value != "" && c.st.value != tok.Value {
		c.st.prevTok, c.st.prevObtained, c.st.prevLive = c.st.tok, c.st.obtained, c.st.live
		c.st.previous = append(c.st.previous, c.st.value)
		if len(c.st.previous) > maxPrevious {
			c.st.previous = append([]string(nil), c.st.previous[len(c.st.previous)-maxPrevious:]...)
		}
	}
	c.st.loaded = true
	c.st.value = tok.Value
	c.st.gen++
	c.st.tok = metadataOf(tok)
	c.st.obtained = now
	c.st.jwtExp, _ = jwtExpiry(tok.Value)
	c.st.noted = time.Time{}
	c.st.refreshRej, c.st.clientRej = false, false
	c.st.reactiveDue = false
	c.st.lastErr = nil
	c.st.lastEventKey = ""
	c.setLiveLocked(StatusUnknown, now)
}

func (c *Credential) setLiveLocked(st Status, now time.Time) {
	c.st.live, c.st.liveAt = st, now
	c.live.Store(st != StatusUnknown)
}

// limitEndLocked is when a rate_limited status ends by itself: when the
// provider said the limit resets, or a minute on when it did not say (a
// call that authenticates ends it sooner). It ended after a minute even
// when the provider had said two, while the credential's breaker refused
// calls until the reset: the credential read "restored", healthy, and
// calls still failed (found trying the gateway from outside).
//
// A provider's reset sooner than a minute ends it then too: it lasted the
// minute while the breaker let calls through at the reset (found trying
// the gateway from outside).
func (c *Credential) limitEndLocked() time.Time {
	if !c.st.limitedUntil.IsZero() {
		return c.st.limitedUntil
	}
	return c.st.liveAt.Add(reactiveInterval)
}

// fetchFailed records a failed fetch and returns the error for the caller.
func (c *Credential) fetchFailed(trigger Trigger, err error) error {
	now := time.Now()
	var evs []Event
	c.mu.Lock()
	f := c.failureOf(err)
	c.st.lastChecked = now
	c.st.loaded = true
	c.st.lastErr = f
	c.st.fetchErr = true
	if errors.Is(err, ErrRefreshRejected) || errors.Is(err, ErrClientRejected) {
		c.st.grantChanged = false // the new grant is rejected too; a transient failure keeps trying it
	}
	if !trigger.manual() && trigger != TriggerLiveError {
		c.st.failures++
		c.st.retryAt = now.Add(c.backoffLocked())
	}
	switch {
	case errors.Is(err, ErrRefreshRejected):
		c.st.refreshRej = true
		c.setLiveLocked(StatusRevoked, now)
	case errors.Is(err, ErrClientRejected):
		c.st.clientRej = true
		c.setLiveLocked(StatusInvalid, now)
	case errors.Is(err, ErrBadValue) && c.st.value == "":
		c.setLiveLocked(StatusInvalid, now)
	case c.st.value == "":
		c.setLiveLocked(StatusMissing, now)
	case errors.Is(err, ErrMissing), errors.Is(err, ErrBadValue):
		// The source lost the value, or holds one that cannot be sent; the
		// one held still works until something says otherwise.
		what := "resolved to nothing"
		if errors.Is(err, ErrBadValue) {
			what = "holds a value that cannot be sent"
		}
		if !c.sameErrorEvent(EventRejectedRotation, f.Detail) {
			evs = append(evs, c.eventLocked(now, EventRejectedRotation, trigger,
				"the source "+what+" and the current value is kept: "+f.Detail))
		}
	default:
		c.log.Warn("credential source failed", "credential", c.name, "trigger", string(trigger), "err", f.Detail)
		if !c.sameErrorEvent(EventRefreshFailed, f.Detail) {
			evs = append(evs, c.eventLocked(now, EventRefreshFailed, trigger, f.Detail))
		}
	}
	c.publishLocked()
	evs = c.settleLocked(now, trigger, evs, false)
	msg := fmt.Errorf("credential %q: %s", c.name, f.Detail)
	c.mu.Unlock()
	c.emit(evs)
	return &SourceError{Credential: c.name, Failure: *f, err: err, msg: msg.Error()}
}

// sameErrorEvent keeps a source that keeps failing the same way from
// repeating its event at every poll.
func (c *Credential) sameErrorEvent(kind EventKind, detail string) bool {
	key := string(kind) + "\x00" + detail
	if c.st.lastEventKey == key {
		return true
	}
	c.st.lastEventKey = key
	return false
}

// SourceError is what Renew and Load return when the source failed: the
// typed failure (also the credential's last error) and the source's error,
// which wraps ErrMissing, ErrDenied, ErrRefreshRejected or ErrClientRejected
// when it is one of those. Its message is redacted.
type SourceError struct {
	Credential string
	Failure    Failure
	err        error
	msg        string
}

func (e *SourceError) Error() string { return e.msg }

// Unwrap returns the source's error.
func (e *SourceError) Unwrap() error { return e.err }

func (c *Credential) backoffLocked() time.Duration {
	max := c.lifecycle().CheckInterval
	d := backoffMin
	for i := 1; i < c.st.failures && d < max; i++ {
		d *= 2
	}
	d = min(d, max)
	// Equal jitter: half fixed, half random, so replicas and credentials that
	// failed together do not retry together.
	return d/2 + rand.N(d/2+1)
}

func kindProvider(kind string) string {
	switch kind {
	case KindVault:
		return ProviderVault
	case KindAWSSecretsManager:
		return ProviderAWS
	case KindOAuth2:
		return ProviderOAuth
	}
	return ""
}

// failureOf types a fetch error for the credential's last_error.
// unsendable returns an ErrBadValue error when v cannot be sent the way the
// credential is injected: as a header, a line break or another control
// character but a tab (Go's HTTP client refuses the request, which looked
// like an upstream down, the credential healthy: found trying the gateway
// from outside, with a file holding a second line); in a child's
// environment, a NUL byte. The error names the byte's place, never the value.
func (c *Credential) unsendable(v string) error {
	header, _ := c.cfg.Inject.HeaderName()
	for i := 0; i < len(v); i++ {
		b := v[i]
		if header == "" {
			if b == 0 {
				return fmt.Errorf("%s source's value has a NUL byte at byte %d, which an environment variable (inject.env %s) cannot carry: %w", c.src.Kind(), i+1, c.cfg.Inject.Env, ErrBadValue)
			}
			continue
		}
		if b < 0x20 && b != '\t' || b == 0x7f {
			what := "a control character"
			if b == '\n' || b == '\r' {
				what = "a line break (more than one line of output?)"
			}
			return fmt.Errorf("%s source's value has %s at byte %d, which the header %s cannot carry: %w", c.src.Kind(), what, i+1, header, ErrBadValue)
		}
	}
	return nil
}

func (c *Credential) failureOf(err error) *Failure {
	f := &Failure{Type: TypeAuthFailure, Credential: c.name, Provider: kindProvider(c.src.Kind())}
	switch {
	case errors.Is(err, ErrRefreshRejected):
		f.Subtype, f.Recovery = SubtypeCredentialRevoked, RecoveryReauthorize
	case errors.Is(err, ErrClientRejected), errors.Is(err, ErrBadValue):
		f.Subtype, f.Recovery = SubtypeCredentialInvalid, RecoveryRotate
	case errors.Is(err, ErrMissing):
		f.Subtype, f.Recovery = SubtypeCredentialMissing, RecoveryRotate
	case errors.Is(err, ErrDenied):
		f.Subtype, f.Recovery = SubtypeCredentialMissing, RecoveryGrantPermission
	default:
		f.Type, f.Retryable = TypeUpstreamUnavailable, true
	}
	f.Detail = cleanDetail(err.Error(), c.secretsLocked())
	return f
}

func (c *Credential) failureWithCredential(f *Failure) *Failure {
	g := *f
	g.Credential = c.name
	g.Detail = cleanDetail(g.Detail, c.secretsLocked())
	return &g
}

// Report feeds back how a call that sent value used fared: sub is the
// auth failure subtype the call was answered with, or "" for a call that
// authenticated (any answer that is not an auth failure). revoked, invalid,
// expired, missing and rate_limit_reached set the credential's status, so a
// credential every call finds revoked is revoked in health whatever the
// watch thought; a call that authenticates clears that. A report about a
// value the credential no longer holds is ignored (used == "" always counts).
// The success path is lock-free while nothing needs clearing.
func (c *Credential) Report(sub Subtype, used string) {
	c.report(sub, used, TriggerLiveError, "a call was answered "+string(sub), nil)
}

// ReportSuccess reports that a request that carried value used, sent at
// sent, was answered without a rejection: the live status clears, unless
// the value was found rejected after that request left (a slow request's
// success proves nothing of a rejection that came later).
func (c *Credential) ReportSuccess(used string, sent time.Time) {
	if !c.live.Load() {
		return
	}
	c.mu.Lock()
	after := !sent.IsZero() && c.st.liveAt.After(sent)
	c.mu.Unlock()
	if after {
		return
	}
	c.report("", used, TriggerLiveError, "a call was answered", nil)
}

// ReportFailure is [Credential.Report] with what the provider said: f's
// provider, code and detail (which must hold no secret) go into the event
// and the last error, after by ("a call", "the upstream's own request").
func (c *Credential) ReportFailure(f Failure, used, by string) {
	detail := by + " was answered " + string(f.Subtype)
	var why []string
	if f.Provider != "" || f.ProviderCode != "" {
		why = append(why, strings.TrimSpace(f.Provider+" "+f.ProviderCode))
	}
	if f.Detail != "" {
		why = append(why, truncateDetail(f.Detail))
	}
	if len(why) > 0 {
		detail += " (" + strings.Join(why, ": ") + ")"
	}
	c.report(f.Subtype, used, TriggerLiveError, detail, &f)
}

// RejectRotation takes back v, the value adopted last, which the provider
// rejected before it served (a stdio child started with it exited on the
// rejection, while a child with keep, a value held before, still serves),
// and keeps keep, as a rotation its check rejected is: event
// rejected_rotation, f as last_error, a new generation, which it returns.
// by says what met the rejection. It does nothing (ok false) when v is no
// longer the value, keep was never held, or the value v replaced had been
// found dead. The source still holds v: read again within rejectedHold it
// is not adopted again but by an operator's reload; after that it is
// tried again (a key that takes a while to become valid).
func (c *Credential) RejectRotation(v, keep string, f Failure, by string) (gen uint64, ok bool) {
	now := time.Now()
	var evs []Event
	c.mu.Lock()
	defer func() {
		c.mu.Unlock()
		c.emit(evs)
	}()
	i := slices.Index(c.st.previous, keep)
	if v == "" || v != c.st.value || keep == "" || i < 0 || c.st.prevLive.dead() {
		// Nothing to go back to: not a value held before, or the value
		// before it was already found dead (the very reason it rotated).
		return 0, false
	}
	c.st.previous[i] = v // still known, for redaction
	c.st.rejected, c.st.rejectedAt = v, now
	c.st.value = keep
	c.st.gen++
	c.st.tok, c.st.obtained = Token{}, c.st.prevObtained
	if i == len(c.st.previous)-1 {
		c.st.tok = c.st.prevTok // its metadata, if it is the one just replaced
	}
	c.st.jwtExp, _ = jwtExpiry(keep)
	c.st.noted = time.Time{}
	c.st.lastErr = c.failureWithCredential(&f)
	c.st.lastEventKey = ""
	c.setLiveLocked(StatusUnknown, now)
	c.publishLocked()
	detail := by + " was answered " + string(f.Subtype)
	if f.Detail != "" {
		detail += " (" + truncateDetail(c.redactLocked(f.Detail)) + ")"
	}
	evs = append(evs, c.eventLocked(now, EventRejectedRotation, TriggerLiveError, detail+"; the value before it is kept"))
	return c.st.gen, true
}

func truncateDetail(d string) string {
	if len(d) > maxReportDetail {
		return d[:maxReportDetail] + "…"
	}
	return d
}

// maxReportDetail bounds the provider's detail ReportFailure keeps.
const maxReportDetail = 256

// ReportPeer is [Credential.Report] for what a peer replica found (issue
// 11): the same status change, with trigger peer and the peer's detail in
// the event and last error.
func (c *Credential) ReportPeer(sub Subtype, used, detail string) {
	if detail == "" {
		detail = "a peer replica's call was answered " + string(sub)
	}
	c.report(sub, used, TriggerPeer, detail, nil)
}

// ReportPeerLimited is what a peer replica found when a call there was
// answered rate_limit_reached with the credential's current value: the
// credential is rate_limited here too until the limit resets at until,
// with the provider's name and code from from. A limit already past is
// ignored.
func (c *Credential) ReportPeerLimited(until time.Time, from Failure) {
	secs := int(math.Ceil(time.Until(until).Seconds()))
	if secs <= 0 {
		return
	}
	from.RetryAfterSeconds = &secs
	from.Retryable = true // as the call's was: a rate limit ends by itself
	if from.Recovery == "" {
		from.Recovery = RecoveryWait
	}
	c.report(SubtypeRateLimitReached, "", TriggerPeer, "a peer replica's call was answered "+string(SubtypeRateLimitReached), &from)
}

// ReportPeerRestored is what a peer replica found when value used, which it
// had rejected, works again (an operator's reload there tried it again, or a
// call there was answered): the live status of used ends, with trigger peer
// and detail in the event. When that status held the value back until it
// changes (revoked, invalid, expired), the value is adopted anew, as a reload
// here that retries it would: a new generation, so the breakers a rejection
// here held "until the credential changes" let it through once more. Ending
// only the status left such a breaker open for good on the replica that saw
// the rejection, though its health said healthy (found trying three
// replicas). A report about a value the credential no longer holds is
// ignored.
func (c *Credential) ReportPeerRestored(used, detail string) {
	if used == "" || !c.live.Load() {
		return
	}
	now := time.Now()
	var evs []Event
	c.mu.Lock()
	if c.st.value != used || c.st.live == StatusUnknown {
		c.mu.Unlock()
		return
	}
	switch c.st.live {
	case StatusRevoked, StatusInvalid, StatusExpired:
		c.st.gen++
		c.st.lastErr = nil
		c.st.lastEventKey = ""
		c.st.reactiveDue = false
	}
	c.setLiveLocked(StatusUnknown, now)
	c.publishLocked()
	was := c.st.announced
	evs = c.settleLocked(now, TriggerPeer, evs, true)
	if st := c.st.announced; st != was && st.Usable() {
		if detail == "" {
			detail = "a peer replica found it working again"
		}
		evs = append(evs, c.eventLocked(now, EventRestored, TriggerPeer, detail))
	}
	c.mu.Unlock()
	c.emit(evs)
	c.wake()
}

func (c *Credential) report(sub Subtype, used string, trigger Trigger, detail string, from *Failure) {
	snap := c.snap.Load()
	if used != "" && snap.value != used {
		return
	}
	var st Status
	if sub == "" {
		if !c.live.Load() {
			return
		}
	} else {
		var ok bool
		if st, ok = StatusOf(sub); !ok {
			return
		}
	}
	now := time.Now()
	var evs []Event
	c.mu.Lock()
	if used != "" && c.st.value != used {
		c.mu.Unlock()
		return
	}
	if sub == "" {
		if c.st.value == "" || c.st.live == StatusUnknown {
			c.mu.Unlock()
			return
		}
		c.setLiveLocked(StatusUnknown, now)
	} else {
		c.setLiveLocked(st, now)
		c.st.limitedUntil = time.Time{}
		if from != nil && from.RetryAfterSeconds != nil && st == StatusRateLimited {
			c.st.limitedUntil = now.Add(time.Duration(*from.RetryAfterSeconds) * time.Second)
		}
		c.st.lastErr = &Failure{Type: TypeAuthFailure, Subtype: sub, Credential: c.name,
			Detail: cleanDetail(detail, c.secretsLocked())}
		if from != nil {
			// The provider's answer, which peers' refusals carry too.
			c.st.lastErr.Provider, c.st.lastErr.Recovery, c.st.lastErr.Retryable = from.Provider, from.Recovery, from.Retryable
			c.st.lastErr.RetryAfterSeconds = from.RetryAfterSeconds
			c.st.lastErr.ProviderCode = cleanDetail(from.ProviderCode, c.secretsLocked())
		}
	}
	c.publishLocked()
	evs = c.settleLocked(now, trigger, evs, false)
	c.mu.Unlock()
	c.emit(evs)
	c.wake()
}

// RenewAfterRejection is the reactive renewal: call it when a call that sent
// value used was rejected as expired or invalid. When the credential can
// change (a renewable OAuth credential, or a file, exec, Vault or AWS source)
// it is renewed or re-read once, single-flight, at most once a minute per
// credential. It returns true when the credential now holds a value other
// than used, so the call, which did not run, may be resent once. A
// credential whose refresh was rejected is not renewed (a revocation does not
// heal itself), nor one whose source cannot change (env, value).
func (c *Credential) RenewAfterRejection(ctx context.Context, used string) bool {
	changedFrom := func(v string) bool { return v != "" && v != used }
	if used != "" && changedFrom(c.Value()) {
		return true
	}
	now := time.Now()
	c.mu.Lock()
	before := c.st.value
	if used == "" {
		used = before
	}
	if !c.reactiveLocked() {
		c.mu.Unlock()
		return false
	}
	if f := c.flight; f != nil {
		c.mu.Unlock()
		select {
		case <-f.done:
		case <-ctx.Done():
		}
		return changedFrom(c.Value())
	}
	if !c.st.lastReactive.IsZero() && now.Sub(c.st.lastReactive) < reactiveInterval {
		// Deferred, not dropped: once this value is known dead the gate
		// holds every call back, so no later rejection would come to
		// renew it, and a renewable credential would wait for its
		// scheduled refresh (up to its whole lifetime).
		c.st.reactiveDue = true
		c.mu.Unlock()
		c.wake()
		return false
	}
	c.st.lastReactive = now
	c.mu.Unlock()
	_, _ = c.Renew(ctx, TriggerLiveError)
	return changedFrom(c.Value())
}

func (c *Credential) reactiveLocked() bool {
	if !c.st.loaded || c.st.refreshRej || c.st.clientRej {
		return false
	}
	return canChange(c.src.Kind()) || c.st.tok.Renewable
}

// canChange reports whether re-reading a source of this kind may give a new value.
func canChange(kind string) bool {
	switch kind {
	case KindEnv, KindValue:
		return false
	}
	return true
}

// polled reports whether the watch re-reads sources of this kind every
// check_interval: secrets stores, where rotation happens without telling us.
func polled(kind string) bool { return kind == KindVault || kind == KindAWSSecretsManager }

// NoteExpiry records an expiry a provider announced on a response (GitHub's
// github-authentication-token-expiration, see [ExpiryFromHeader]). It is
// used only when nothing better is known (config, source, JWT), and is
// forgotten when the value changes.
func (c *Credential) NoteExpiry(t time.Time) {
	if t.IsZero() {
		return
	}
	var evs []Event
	c.mu.Lock()
	if t.Equal(c.st.noted) || c.st.value == "" {
		c.mu.Unlock()
		return
	}
	c.st.noted = t
	c.publishLocked()
	evs = c.settleLocked(time.Now(), TriggerLiveError, evs, false)
	c.mu.Unlock()
	c.emit(evs)
	c.wake()
}

// Run is the expiry watch. Every check_interval, and at each point where
// something is due (the warning window, the expiry, a renewal, a retry), it
// re-reads the credential's remaining lifetime: under the warning it
// becomes expiring, past expiry expired (an event each). Renewable
// credentials are renewed refresh_before their expiry (or half way through a
// shorter lifetime), retried with exponential backoff and jitter while the
// renewal fails; Vault and AWS sources are re-read every check_interval
// (their rotation tells nobody); a file source is watched. A credential not
// loaded yet is loaded first. Run returns when ctx is done.
func (c *Credential) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	defer wg.Wait()
	if w, ok := c.src.(Watcher); ok {
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer c.recoverLog("file watch")
			err := w.Watch(ctx, func() {
				if _, err := c.Renew(ctx, TriggerFile); err != nil && ctx.Err() == nil {
					c.log.Debug("credential file change not adopted", "credential", c.name, "err", err)
				}
			})
			if err != nil && ctx.Err() == nil {
				// Its directory may not exist yet (a volume mounted
				// later): re-read it every check_interval instead, so a
				// rotation after its first value is not lost.
				c.log.Error("credential file watch stopped; the file is re-read every check_interval instead", "credential", c.name, "err", err)
				c.unwatched.Store(true)
				c.wake()
			}
		}()
	}
	if !c.Loaded() {
		c.safeCheck(func() { _ = c.Load(ctx) })
	}
	timer := time.NewTimer(c.nextCheck(time.Now()))
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-c.kick:
		case <-timer.C:
			c.safeCheck(func() { c.check(ctx) })
		}
		timer.Reset(c.nextCheck(time.Now()))
	}
}

func (c *Credential) safeCheck(f func()) {
	defer c.recoverLog("expiry watch")
	f()
}

func (c *Credential) recoverLog(what string) {
	if r := recover(); r != nil {
		c.log.Error("panic in credential "+what, "credential", c.name, "panic", fmt.Sprint(r), "stack", string(debug.Stack()))
	}
}

// check is one pass of the watch.
func (c *Credential) check(ctx context.Context) {
	now := time.Now()
	lc := c.lifecycle()
	var evs []Event
	var due Trigger
	var grant GrantChanger
	c.mu.Lock()
	c.st.lastChecked = now
	if c.st.live == StatusRateLimited && !now.Before(c.limitEndLocked()) {
		c.setLiveLocked(StatusUnknown, now)
		c.publishLocked()
	}
	retryOK := !now.Before(c.st.retryAt)
	kind := c.src.Kind()
	switch {
	case c.flight != nil:
	case c.st.value == "" && canChange(kind) && !c.st.refreshRej && !c.st.clientRej:
		if retryOK && (c.st.failures > 0 || now.Sub(c.st.lastPoll) >= lc.CheckInterval) {
			due = TriggerWatch
		}
	case c.reactiveDueLocked() && !now.Before(c.st.lastReactive.Add(reactiveInterval)):
		due = TriggerLiveError
		c.st.reactiveDue = false
		c.st.lastReactive = now
	case c.st.clientRej && canChange(kind):
		// The token endpoint rejected the client (invalid_client): one
		// answer of it left the credential invalid for good, though the
		// provider may take the client back (re-enabled, a secret fixed
		// there); it is asked again, with backoff, at most every
		// check_interval (found trying the gateway from outside).
		if retryOK && (c.st.failures > 0 || now.Sub(c.st.lastPoll) >= lc.CheckInterval) {
			due = TriggerWatch
		}
	case c.st.refreshRej && c.st.grantChanged:
		// A new grant, not yet taken (its first fetch failed on the way):
		// asked again, with backoff.
		if retryOK {
			due = TriggerWatch
		}
	case c.st.refreshRej:
		// The refresh token was rejected (invalid_grant): not asked again,
		// but an operator may put a new one at its source (a file), which
		// is looked at, without asking the provider, every grantPoll; it
		// was taken only by a reload.
		if gc, ok := c.src.(GrantChanger); ok && now.Sub(c.st.lastGrantPoll) >= grantPoll {
			c.st.lastGrantPoll = now
			grant = gc
		}
	case c.renewableLocked():
		if at := c.refreshAtLocked(lc); !at.IsZero() && !now.Before(at) && retryOK {
			due = TriggerRefresh
		}
	case polled(kind) || c.unwatched.Load():
		if retryOK && (c.st.failures > 0 || now.Sub(c.st.lastPoll) >= lc.CheckInterval) {
			due = TriggerWatch
		}
	}
	if due != "" {
		c.st.lastPoll = now
	}
	evs = c.settleLocked(now, TriggerWatch, evs, false)
	c.mu.Unlock()
	c.emit(evs)
	if grant != nil && grant.GrantChanged(ctx) {
		c.mu.Lock()
		c.st.grantChanged = true
		c.mu.Unlock()
		due = TriggerWatch
	}
	if due != "" {
		if _, err := c.Renew(ctx, due); err != nil && ctx.Err() == nil {
			c.log.Debug("credential renewal failed", "credential", c.name, "trigger", string(due), "err", err)
		}
	}
}

// nextCheck is how long the watch sleeps: until the next point where
// something is due, at most check_interval.
func (c *Credential) nextCheck(now time.Time) time.Duration {
	lc := c.lifecycle()
	c.mu.Lock()
	defer c.mu.Unlock()
	next := now.Add(lc.CheckInterval)
	if !c.st.lastChecked.IsZero() && c.st.lastChecked.Add(lc.CheckInterval).Before(next) {
		next = c.st.lastChecked.Add(lc.CheckInterval)
	}
	consider := func(t time.Time) {
		if !t.IsZero() && t.After(now) && t.Before(next) {
			next = t
		}
	}
	consider(c.st.retryAt)
	if _, ok := c.src.(GrantChanger); ok && c.st.refreshRej {
		consider(c.st.lastGrantPoll.Add(grantPoll))
	}
	if exp := c.expiryLocked(); !exp.IsZero() {
		consider(exp)
		consider(exp.Add(-lc.ExpiryWarning))
		if c.renewableLocked() {
			at := c.refreshAtLocked(lc)
			consider(at)
		}
	}
	if c.st.live == StatusRateLimited {
		consider(c.limitEndLocked())
	}
	if c.reactiveDueLocked() {
		consider(c.st.lastReactive.Add(reactiveInterval))
	}
	return max(next.Sub(now), 0)
}

// reactiveDueLocked reports whether a rejection's renewal was deferred by the
// once-a-minute limit and is still wanted: the value is still the one calls
// found expired or invalid, and the credential can change.
func (c *Credential) reactiveDueLocked() bool {
	return c.st.reactiveDue && (c.st.live == StatusInvalid || c.st.live == StatusExpired || c.st.live == StatusRevoked) && c.reactiveLocked()
}

func (c *Credential) renewableLocked() bool {
	return c.st.tok.Renewable && !c.st.refreshRej && !c.st.clientRej
}

// refreshAtLocked is when a renewable credential is renewed: refresh_before
// its expiry, or half way through its lifetime when that is shorter (a 5s
// token would otherwise be renewed continuously). Zero when the expiry is unknown.
func (c *Credential) refreshAtLocked(lc LifecycleConfig) time.Time {
	exp := c.expiryLocked()
	if exp.IsZero() {
		return time.Time{}
	}
	lead := lc.RefreshBefore
	if life := exp.Sub(c.st.obtained); life > 0 && lead > life/2 {
		lead = life / 2
	}
	return exp.Add(-lead)
}

func (c *Credential) expiryLocked() time.Time {
	cfgExp := c.cfg.ExpiresAt
	if c.st.firstValue != "" && c.st.value != c.st.firstValue {
		// The config's expires_at is that of the value it was written
		// for, the first this credential read: a value rotated in since
		// (a file rewritten) went expired at the old value's time and
		// paged (found trying the gateway from outside).
		cfgExp = time.Time{}
	}
	for _, t := range []time.Time{cfgExp, c.st.tok.ExpiresAt, c.st.jwtExp, c.st.noted} {
		if !t.IsZero() {
			return t
		}
	}
	return time.Time{}
}

// rejectedHold is how long a value RejectRotation took back is not adopted
// again from its source.
const rejectedHold = time.Minute

// grantPoll is how often a credential whose refresh token was rejected
// looks whether a new one is at its source.
const grantPoll = 15 * time.Second

// expiringFailures is how many renewals of a renewable credential fail in a
// row, past its refresh point, before it is expiring.
const expiringFailures = 3

func (c *Credential) statusLocked(now time.Time) Status {
	if c.st.live != StatusUnknown {
		return c.st.live
	}
	if c.st.value == "" {
		if c.st.loaded {
			return StatusMissing
		}
		return StatusUnknown
	}
	exp := c.expiryLocked()
	if exp.IsZero() {
		return StatusHealthy
	}
	if !now.Before(exp) {
		return StatusExpired
	}
	if c.renewableLocked() {
		// A renewable credential is expiring only while its renewal keeps
		// failing: a third failure in a row (the retries come after 1, 2
		// and 4 s), not a first one a retry a second later cures (it paged
		// on the first).
		if c.st.failures >= expiringFailures && !now.Before(c.refreshAtLocked(c.lifecycle())) {
			return StatusExpiring
		}
		return StatusHealthy
	}
	if !now.Before(exp.Add(-c.lifecycle().ExpiryWarning)) {
		return StatusExpiring
	}
	return StatusHealthy
}

// settleLocked emits the event a status change calls for, unless the event
// just added (covered) already tells it.
func (c *Credential) settleLocked(now time.Time, trigger Trigger, evs []Event, covered bool) []Event {
	st := c.statusLocked(now)
	prev := c.st.announced
	c.st.announced = st
	if st == prev {
		return evs
	}
	var kind EventKind
	detail := ""
	switch st {
	case StatusExpiring:
		kind = EventExpiring
		detail = "expires " + c.expiryLocked().UTC().Format(time.RFC3339)
	case StatusExpired:
		kind = EventExpired
		if exp := c.expiryLocked(); !exp.IsZero() && !now.Before(exp) {
			detail = "expired " + exp.UTC().Format(time.RFC3339)
		}
	case StatusRevoked:
		kind = EventRevoked
	case StatusInvalid:
		kind = EventInvalid
	case StatusMissing:
		kind = EventMissing
	case StatusRateLimited:
		kind = EventRateLimited
	case StatusHealthy:
		if covered || prev == StatusUnknown {
			return evs
		}
		kind = EventRestored
		// Not the last error's text: a recovery read like the failure
		// (found trying the gateway: "a call was answered
		// rate_limit_reached" on the event that said it ended).
		detail = "was " + prev.String() + "; working again"
		if prev == StatusExpiring {
			// Not a recovery: its expiry moved later (a source that
			// reports a new expires_at for the value), as a renewal.
			kind, detail = EventRefreshed, "no longer expiring"
			if exp := c.expiryLocked(); !exp.IsZero() {
				detail = "expires " + exp.UTC().Format(time.RFC3339)
			}
		}
	default:
		return evs
	}
	if detail == "" && c.st.lastErr != nil {
		detail = c.st.lastErr.Detail
	}
	return append(evs, c.eventLocked(now, kind, trigger, detail))
}

func (c *Credential) eventLocked(now time.Time, kind EventKind, trigger Trigger, detail string) Event {
	return Event{
		Time:       now,
		Credential: c.name,
		Kind:       kind,
		Trigger:    trigger,
		Status:     c.statusLocked(now),
		Version:    c.st.tok.Version,
		Detail:     cleanDetail(detail, c.secretsLocked()),
	}
}

func (c *Credential) emit(evs []Event) {
	if c.onEvent == nil {
		return
	}
	for _, e := range evs {
		c.onEvent(e)
	}
}

func (c *Credential) redactLocked(s string) string { return Redact(s, c.secretsLocked()) }

// secretsLocked is every secret the credential knows: its value, previous
// values and the source's own.
func (c *Credential) secretsLocked() []string {
	secrets := make([]string, 0, 1+len(c.st.previous)+2)
	if c.st.value != "" {
		secrets = append(secrets, c.st.value)
	}
	secrets = append(secrets, c.st.previous...)
	if h, ok := c.src.(SecretHolder); ok {
		secrets = append(secrets, h.Secrets()...)
	}
	return secrets
}

func (c *Credential) publishLocked() {
	c.snap.Store(&snapshot{
		value: c.st.value,
		gen:   c.st.gen,
		know: Knowledge{
			Credential:      c.name,
			ExpiresAt:       c.expiryLocked(),
			Renewable:       c.st.tok.Renewable,
			RefreshRejected: c.st.refreshRej,
			Secrets:         c.secretsLocked(),
		},
	})
}
