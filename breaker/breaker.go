package breaker

import (
	"cmp"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/sony/gobreaker/v2"
)

// State is a breaker's state as callers see it: gobreaker's state combined
// with any wait kept beside it (a credential rejection, a provider's reset
// time, a peer's fact).
type State int

// Breaker states.
const (
	StateClosed   State = iota // calls go through
	StateHalfOpen              // a few probe calls go through
	StateOpen                  // calls are refused with an *OpenError
)

var stateNames = [...]string{"closed", "half-open", "open"}

func (s State) String() string {
	if s < 0 || int(s) >= len(stateNames) {
		return fmt.Sprintf("State(%d)", int(s))
	}
	return stateNames[s]
}

// ErrOpen is what every *OpenError unwraps to: errors.Is(err, ErrOpen)
// reports that a breaker refused the call before it was made.
var ErrOpen = errors.New("circuit breaker open")

// OpenError is returned by [Set.Allow] and [Set.Check] when a breaker refuses
// a call. The call was not made, so a caller may send it elsewhere.
type OpenError struct {
	Name  string // the breaker: "upstream" or "upstream/credential"
	State State  // StateOpen, or StateHalfOpen when every probe slot is taken
	// Reason is what opened the breaker: an auth subtype such as
	// "credential_revoked" or "rate_limit_reached", or the failure reason the
	// caller reported ("timeout", "upstream_unavailable", ...).
	Reason string
	// RetryAfter is when the breaker lets a probe through again. It is zero
	// when unknown: a rejected credential stays open until it changes.
	RetryAfter time.Time
}

func (e *OpenError) Error() string {
	msg := fmt.Sprintf("breaker %q is %s (%s)", e.Name, e.State, e.Reason)
	if !e.RetryAfter.IsZero() {
		msg += " until " + e.RetryAfter.UTC().Format(time.RFC3339)
	}
	return msg
}

// Unwrap returns ErrOpen.
func (e *OpenError) Unwrap() error { return ErrOpen }

// RetryAfterSeconds returns the whole seconds from now until RetryAfter,
// rounded up, or 0 when RetryAfter is unknown or past.
func (e *OpenError) RetryAfterSeconds(now time.Time) int {
	if e.RetryAfter.IsZero() || !e.RetryAfter.After(now) {
		return 0
	}
	return int((e.RetryAfter.Sub(now) + time.Second - 1) / time.Second)
}

// kind classifies an Outcome.
type kind uint8

const (
	kindSuccess kind = iota
	kindFailure
	kindExcluded
	kindRejected
	kindRateLimited
	kindQuota
)

// Outcome is how a call ended, classified once by the caller. Build it with
// the functions below; the zero Outcome is Success.
type Outcome struct {
	kind   kind
	reason string
	until  time.Time
}

// Success: the upstream answered, even with an isError tool result (the
// upstream is alive).
func Success() Outcome { return Outcome{kind: kindSuccess} }

// Failure: a transport failure, timeout or 5xx. Enough of them in a row open
// the breaker for its open_timeout; reason ("timeout",
// "upstream_unavailable", "upstream_error") is what an *OpenError reports.
func Failure(reason string) Outcome {
	if reason == "" {
		reason = "failure"
	}
	return Outcome{kind: kindFailure, reason: reason}
}

// Excluded: the caller cancelled, or the outcome says nothing new (another
// call already reported the same failure). It never counts either way.
func Excluded() Outcome { return Outcome{kind: kindExcluded} }

// Failed reports whether o is a Failure.
func (o Outcome) Failed() bool { return o.kind == kindFailure }

// Rejected: the provider rejected the credential (reason is the subtype:
// "credential_revoked", "credential_invalid", "credential_missing" or
// "credential_expired"). It opens the breaker at once and keeps it open
// until Allow is called with another credential generation (rotation,
// refresh, renewal, reload), so a dead token is not sent again.
func Rejected(reason string) Outcome {
	if reason == "" {
		reason = "credential_rejected"
	}
	return Outcome{kind: kindRejected, reason: reason}
}

// RateLimited: the provider answered rate_limit_reached. The breaker opens
// until reset (Retry-After or the provider's reset time), then lets probes
// through; a zero reset means the breaker's open_timeout.
func RateLimited(reset time.Time) Outcome {
	return Outcome{kind: kindRateLimited, reason: "rate_limit_reached", until: reset}
}

// QuotaExhausted: the provider answered quota_exhausted. The breaker opens
// until reset, or for quota_cooldown when reset is zero, then lets probes
// through.
func QuotaExhausted(reset time.Time) Outcome {
	return Outcome{kind: kindQuota, reason: "quota_exhausted", until: reset}
}

// Fact is an open published by a peer replica: "open because Reason until
// Until". See [Set.Honour].
type Fact struct {
	Reason string
	Until  time.Time
}

// Counts are a breaker's counters in its current gobreaker generation (they
// reset when the state changes).
type Counts struct {
	Requests             uint32 `json:"requests"`
	Successes            uint32 `json:"successes"`
	Failures             uint32 `json:"failures"`
	Exclusions           uint32 `json:"exclusions"`
	ConsecutiveSuccesses uint32 `json:"consecutive_successes"`
	ConsecutiveFailures  uint32 `json:"consecutive_failures"`
}

// Status is one breaker in a [Set.Snapshot].
type Status struct {
	Name   string
	State  State
	Reason string    // why it is open or half-open; empty when closed
	Until  time.Time // when an open breaker lets probes through; zero if unknown or closed
	Counts Counts
}

// Change is a state change, given to [Options.OnChange].
type Change struct {
	Name     string
	From, To State
	Reason   string    // why it opened (To is open or half-open)
	Until    time.Time // when it may let probes through; zero if unknown
	// Peer is true when the change came from [Set.Honour], so an observer
	// that publishes opens to peers does not echo their facts back.
	Peer bool
}

// Fact returns the change as a fact peers can honour, and whether it is one:
// only opens with a known end are.
func (c Change) Fact() (Fact, bool) {
	if c.To != StateOpen || c.Until.IsZero() || c.Peer {
		return Fact{}, false
	}
	return Fact{Reason: c.Reason, Until: c.Until}, true
}

// Options configures a Set. A nil *Options means all defaults.
type Options struct {
	// Default is the config of an upstream not named in Apply. Zero fields
	// take the package defaults.
	Default Config
	// OnChange, if set, is called after each state change, outside the
	// breaker's lock but on the caller's goroutine: it must be quick. Changes
	// are noticed when the breaker is next used (Allow, done, Check,
	// Snapshot), so a timed open turns half-open on its next use; changes
	// of calls racing each other may arrive out of order, and Snapshot is
	// the authority. If nil, changes are not reported.
	OnChange func(Change)
}

// Set is the registry of breakers, keyed by stable names: "upstream" for an
// upstream, "upstream/credential" for a credential used on it. Breakers are
// made on first use and survive [Set.Apply], so a reload does not forget that
// a credential was revoked or an upstream is down.
type Set struct {
	def      Config
	onChange func(Change)

	mu       sync.RWMutex
	configs  map[string]Config // by upstream, defaults applied
	breakers map[string]*breaker
}

// New returns an empty Set.
func New(opts *Options) *Set {
	s := &Set{configs: map[string]Config{}, breakers: map[string]*breaker{}}
	if opts != nil {
		s.def = opts.Default
		s.onChange = opts.OnChange
	}
	s.def = s.def.WithDefaults()
	return s
}

// Name returns the breaker name of a credential on an upstream, or the
// upstream's own breaker name when credential is empty.
func Name(upstream, credential string) string {
	if credential == "" {
		return upstream
	}
	return upstream + "/" + credential
}

func upstreamOf(name string) string {
	up, _, _ := strings.Cut(name, "/")
	return up
}

// Apply installs per-upstream configs (zero fields take defaults); call it
// with each config load. A breaker whose upstream's config did not change is
// kept as it is; one whose config changed starts a fresh gobreaker (counters
// at zero; open if the old one was: carryOpen) and keeps any open it holds beside gobreaker (a rejected
// credential, a provider's reset, a peer's fact), which are facts about the
// provider, not about the config; breakers of upstreams no longer named are
// dropped. An upstream never named gets Options.Default.
func (s *Set) Apply(configs map[string]Config) {
	next := make(map[string]Config, len(configs))
	for up, c := range configs {
		next[up] = c.WithDefaults()
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.configs = next
	for name, b := range s.breakers {
		c, ok := next[upstreamOf(name)]
		if !ok {
			delete(s.breakers, name)
			continue
		}
		b.mu.Lock()
		if b.cfg != c {
			// Open, and not yet due a probe under the old settings.
			wasOpen := b.gbState == gobreaker.StateOpen && time.Since(b.openedAt) < b.cfg.OpenTimeout
			reason := b.openReason
			b.cfg = c
			b.cb, b.gbState = b.newGobreaker(), gobreaker.StateClosed
			if wasOpen {
				b.carryOpen(reason)
			}
		}
		b.mu.Unlock()
	}
}

// Retain drops the credential breakers keep refuses, given their upstream
// and credential: call it after Apply with the credentials each upstream
// still uses, so that a credential a reload renamed or unbound does not
// leave its breaker behind in every snapshot. Upstream breakers are Apply's.
func (s *Set) Retain(keep func(upstream, credential string) bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for name := range s.breakers {
		up, cred, ok := strings.Cut(name, "/")
		if ok && !keep(up, cred) {
			delete(s.breakers, name)
		}
	}
}

// get returns the breaker called name, making it if needed.
func (s *Set) get(name string) *breaker {
	s.mu.RLock()
	b := s.breakers[name]
	s.mu.RUnlock()
	if b != nil {
		return b
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if b = s.breakers[name]; b != nil {
		return b
	}
	c, ok := s.configs[upstreamOf(name)]
	if !ok {
		c = s.def
	}
	b = &breaker{name: name, cfg: c}
	b.cb = b.newGobreaker()
	s.breakers[name] = b
	return b
}

// Allow asks whether a call may go through the breaker called name. For a
// credential breaker, generation identifies the credential in use (any value
// that changes when it is rotated, refreshed or reloaded); a new generation
// closes an open kept for a rejected credential. Upstream breakers pass 0.
//
// On success the caller makes the call and reports its classified outcome to
// done exactly once (later calls are ignored). Otherwise err is an
// *OpenError and the call must not be made.
func (s *Set) Allow(name string, generation uint64) (done func(Outcome), err error) {
	b := s.get(name)
	clk := &clock{}
	b.mu.Lock()
	b.seeGeneration(generation)
	probe := false
	switch b.hold {
	case holdGen:
		err = &OpenError{Name: b.name, State: StateOpen, Reason: b.holdReason}
	case holdUntil:
		switch {
		case clk.now().Before(b.holdUntil):
			err = &OpenError{Name: b.name, State: StateOpen, Reason: b.holdReason, RetryAfter: b.holdUntil}
		case b.probes >= b.cfg.HalfOpenRequests:
			err = &OpenError{Name: b.name, State: StateHalfOpen, Reason: b.holdReason}
		default:
			b.probes++
			probe = true
		}
	}
	var gbDone func(error)
	if err == nil {
		var gerr error
		if gbDone, gerr = b.cb.Allow(); gerr != nil {
			if probe {
				b.probes--
			}
			st, reason, until := b.stateLocked(clk)
			err = &OpenError{Name: b.name, State: st, Reason: reason, RetryAfter: until}
		}
	}
	ch := b.changeLocked(clk, false)
	cb := b.cb // the gobreaker gbDone belongs to; Apply may replace b.cb once unlocked
	b.mu.Unlock()
	s.notify(ch)
	if err != nil {
		return nil, err
	}
	t := &ticket{s: s, b: b, cb: cb, gbDone: gbDone, gen: generation, probe: probe}
	return t.done, nil
}

// Check reports whether the breaker called name would refuse a call now,
// without taking a probe slot: nil, or the *OpenError Allow would return.
// It suits health views and route selection; Allow is still the gate.
func (s *Set) Check(name string, generation uint64) error {
	b := s.get(name)
	clk := &clock{}
	b.mu.Lock()
	b.seeGeneration(generation)
	st, reason, until := b.stateLocked(clk)
	ch := b.changeLocked(clk, false)
	b.mu.Unlock()
	s.notify(ch)
	if st == StateOpen {
		return &OpenError{Name: b.name, State: st, Reason: reason, RetryAfter: until}
	}
	return nil
}

// Honour applies a fact published by a peer replica: the breaker called name
// refuses calls until f.Until, then lets probes through as after a rate
// limit. A fact already past, or weaker than an open the breaker holds, is
// ignored.
func (s *Set) Honour(name string, f Fact) {
	clk := &clock{}
	if !f.Until.After(clk.now()) {
		return
	}
	b := s.get(name)
	b.mu.Lock()
	b.holdFor(f.Reason, f.Until, clk, false)
	ch := b.changeLocked(clk, true)
	b.mu.Unlock()
	s.notify(ch)
}

// Retry ends an open the breaker called name keeps for a rejected
// credential ("until the credential changes"), as a new generation would,
// and reports whether it held one. It is an operator's word that the
// unchanged credential is to be tried again (a reload of it); nothing else
// calls it, so a rejected value is never resent by itself. A breaker never
// made is left unmade.
func (s *Set) Retry(name string) bool {
	s.mu.RLock()
	b := s.breakers[name]
	s.mu.RUnlock()
	if b == nil {
		return false
	}
	clk := &clock{}
	b.mu.Lock()
	held := b.hold == holdGen
	if held {
		b.hold, b.holdReason = holdNone, ""
	}
	ch := b.changeLocked(clk, false)
	b.mu.Unlock()
	s.notify(ch)
	return held
}

// State returns the state of the breaker called name and why it is not
// closed; one never made is closed (and is left unmade).
func (s *Set) State(name string) (State, string) {
	s.mu.RLock()
	b := s.breakers[name]
	s.mu.RUnlock()
	if b == nil {
		return StateClosed, ""
	}
	clk := &clock{}
	b.mu.Lock()
	st, reason, _ := b.stateLocked(clk)
	ch := b.changeLocked(clk, false)
	b.mu.Unlock()
	s.notify(ch)
	return st, reason
}

// Snapshot returns every breaker's status, sorted by name.
func (s *Set) Snapshot() []Status {
	s.mu.RLock()
	bs := make([]*breaker, 0, len(s.breakers))
	for _, b := range s.breakers {
		bs = append(bs, b)
	}
	s.mu.RUnlock()
	clk := &clock{}
	out := make([]Status, 0, len(bs))
	var changes []Change
	for _, b := range bs {
		b.mu.Lock()
		st, reason, until := b.stateLocked(clk)
		c := b.cb.Counts()
		if ch := b.changeLocked(clk, false); ch != nil {
			changes = append(changes, *ch)
		}
		b.mu.Unlock()
		out = append(out, Status{Name: b.name, State: st, Reason: reason, Until: until, Counts: Counts{
			Requests: c.Requests, Successes: c.TotalSuccesses, Failures: c.TotalFailures, Exclusions: c.TotalExclusions,
			ConsecutiveSuccesses: c.ConsecutiveSuccesses, ConsecutiveFailures: c.ConsecutiveFailures,
		}})
	}
	for i := range changes {
		s.notify(&changes[i])
	}
	slices.SortFunc(out, func(a, b Status) int { return cmp.Compare(a.Name, b.Name) })
	return out
}

func (s *Set) notify(ch *Change) {
	if ch != nil && s.onChange != nil {
		s.onChange(*ch)
	}
}

// holdKind is the open a breaker keeps beside gobreaker, whose single open
// timeout cannot express "until the credential changes" or "until the
// provider's reset time".
type holdKind uint8

const (
	holdNone  holdKind = iota
	holdGen            // until the credential generation changes
	holdUntil          // until holdUntil, then half-open probes
)

// breaker is one named breaker. Every access to cb happens under mu, so
// gobreaker's OnStateChange (called inside cb) runs with mu held.
type breaker struct {
	name string

	mu         sync.Mutex
	cfg        Config
	cb         *gobreaker.TwoStepCircuitBreaker[struct{}]
	gen        uint64 // the credential generation last passed to Allow
	hold       holdKind
	holdReason string
	holdUntil  time.Time
	probes     int       // probes in flight after holdUntil passed
	failReason string    // reason of the last counted failure
	openReason string    // failReason when gobreaker last opened
	openedAt   time.Time // when gobreaker last opened
	gbState    gobreaker.State
	last       State // last state reported to OnChange
}

var (
	errFailure  = errors.New("failure")
	errExcluded = errors.New("excluded")
)

func (b *breaker) newGobreaker() *gobreaker.TwoStepCircuitBreaker[struct{}] {
	failures := uint32(b.cfg.Failures)
	return gobreaker.NewTwoStepCircuitBreaker[struct{}](gobreaker.Settings{
		Name:        b.name,
		MaxRequests: uint32(b.cfg.HalfOpenRequests),
		Timeout:     b.cfg.OpenTimeout,
		ReadyToTrip: func(c gobreaker.Counts) bool { return c.ConsecutiveFailures >= failures },
		IsExcluded:  func(err error) bool { return err == errExcluded },
		OnStateChange: func(_ string, _, to gobreaker.State) {
			b.gbState = to
			if to == gobreaker.StateOpen {
				b.openedAt = time.Now()
				b.openReason = b.failReason
			}
		},
	})
}

// errCarried is the failure carryOpen feeds a new gobreaker.
var errCarried = errors.New("breaker: open before its settings changed")

// carryOpen opens the new gobreaker of a breaker that was open when its
// settings changed, so that the change does not let calls through to what
// is still failing (README: breakers keep their state and take new
// settings); it waits the new open_timeout from now (what it reports and
// what it enforces agree), and keeps why it opened. The caller holds b.mu.
func (b *breaker) carryOpen(reason string) {
	for range max(b.cfg.Failures, 1) {
		done, err := b.cb.Allow()
		if err != nil {
			break
		}
		done(errCarried)
	}
	if b.gbState == gobreaker.StateOpen {
		b.openReason = reason
	}
}

// seeGeneration records the credential generation in use; a new one ends an
// open kept for a rejected credential.
func (b *breaker) seeGeneration(gen uint64) {
	if gen == b.gen {
		return
	}
	b.gen = gen
	if b.hold == holdGen {
		b.hold, b.holdReason = holdNone, ""
	}
}

// holdFor opens the breaker until until, unless it already holds a stronger
// or longer open. replace forces it (a failed probe re-opens).
func (b *breaker) holdFor(reason string, until time.Time, clk *clock, replace bool) {
	switch {
	case b.hold == holdGen:
		return
	case b.hold == holdUntil && !replace && clk.now().Before(b.holdUntil) && !until.After(b.holdUntil):
		return
	}
	b.hold, b.holdReason, b.holdUntil = holdUntil, reason, until
}

// stateLocked returns the combined state, why, and until when.
func (b *breaker) stateLocked(clk *clock) (State, string, time.Time) {
	switch b.hold {
	case holdGen:
		return StateOpen, b.holdReason, time.Time{}
	case holdUntil:
		if clk.now().Before(b.holdUntil) {
			return StateOpen, b.holdReason, b.holdUntil
		}
		return StateHalfOpen, b.holdReason, time.Time{}
	}
	// gobreaker moves from open to half-open lazily, on its next use; this
	// reads the same from its last reported state without taking its lock.
	switch b.gbState {
	case gobreaker.StateOpen:
		if until := b.openedAt.Add(b.cfg.OpenTimeout); clk.now().Before(until) {
			return StateOpen, b.openReason, until
		}
		return StateHalfOpen, b.openReason, time.Time{}
	case gobreaker.StateHalfOpen:
		return StateHalfOpen, b.openReason, time.Time{}
	}
	return StateClosed, "", time.Time{}
}

// changeLocked returns the change since the last one reported, if any.
func (b *breaker) changeLocked(clk *clock, peer bool) *Change {
	st, reason, until := b.stateLocked(clk)
	if st == b.last {
		return nil
	}
	ch := &Change{Name: b.name, From: b.last, To: st, Reason: reason, Until: until, Peer: peer}
	b.last = st
	return ch
}

// ticket is one allowed call.
type ticket struct {
	s      *Set
	b      *breaker
	cb     *gobreaker.TwoStepCircuitBreaker[struct{}]
	gbDone func(error)
	gen    uint64
	probe  bool
	called bool // under b.mu
}

// done reports the call's outcome; calls after the first are ignored.
func (t *ticket) done(o Outcome) {
	b := t.b
	clk := &clock{}
	b.mu.Lock()
	if t.called {
		b.mu.Unlock()
		return
	}
	t.called = true
	if t.cb != b.cb {
		// Apply replaced gobreaker since: its counters start afresh.
		t.gbDone = func(error) {}
	}
	if t.probe {
		b.probes--
	}
	// A probe after a hold ends it on success and renews it on failure; a
	// hold that was replaced meanwhile (a newer rejection) is left alone.
	probing := t.probe && b.hold == holdUntil && !clk.now().Before(b.holdUntil)
	switch o.kind {
	case kindSuccess:
		t.gbDone(nil)
		if probing {
			b.hold, b.holdReason = holdNone, ""
		}
	case kindFailure:
		b.failReason = o.reason
		t.gbDone(errFailure)
		if probing {
			b.holdFor(o.reason, clk.now().Add(b.cfg.OpenTimeout), clk, true)
		}
	case kindExcluded:
		t.gbDone(errExcluded)
	case kindRejected:
		t.gbDone(errExcluded)
		// A rejection of a credential already replaced says nothing about
		// the new one.
		if t.gen == b.gen {
			b.hold, b.holdReason = holdGen, o.reason
		}
	case kindRateLimited, kindQuota:
		t.gbDone(errExcluded)
		until := o.until
		if until.IsZero() {
			wait := b.cfg.OpenTimeout
			if o.kind == kindQuota {
				wait = b.cfg.QuotaCooldown
			}
			until = clk.now().Add(wait)
		}
		if until.After(clk.now()) {
			b.holdFor(o.reason, until, clk, probing)
		}
	}
	ch := b.changeLocked(clk, false)
	b.mu.Unlock()
	t.s.notify(ch)
}

// clock reads time.Now at most once per operation, and only when a decision
// needs it: most calls meet a closed breaker and never look at the time.
type clock struct {
	t   time.Time
	set bool
}

func (c *clock) now() time.Time {
	if !c.set {
		c.t, c.set = time.Now(), true
	}
	return c.t
}
