package breaker

import (
	"errors"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/google/go-cmp/cmp"
)

// call runs one call through the breaker called name and reports o.
func call(t *testing.T, s *Set, name string, gen uint64, o Outcome) {
	t.Helper()
	done, err := s.Allow(name, gen)
	if err != nil {
		t.Fatalf("Allow(%q): %v", name, err)
	}
	done(o)
}

// refused asserts that Allow refuses and returns the *OpenError.
func refused(t *testing.T, s *Set, name string, gen uint64) *OpenError {
	t.Helper()
	done, err := s.Allow(name, gen)
	if err == nil {
		done(Excluded())
		t.Fatalf("Allow(%q) admitted the call; want it refused", name)
	}
	var oe *OpenError
	if !errors.As(err, &oe) || !errors.Is(err, ErrOpen) {
		t.Fatalf("Allow(%q) error %v (%T) is not an *OpenError wrapping ErrOpen", name, err, err)
	}
	return oe
}

// recorder collects OnChange calls.
type recorder struct {
	mu      sync.Mutex
	changes []Change
}

func (r *recorder) record(c Change) { r.mu.Lock(); r.changes = append(r.changes, c); r.mu.Unlock() }

func (r *recorder) take() []Change {
	r.mu.Lock()
	defer r.mu.Unlock()
	c := r.changes
	r.changes = nil
	return c
}

// Regression test for issue 8 (breakers): consecutive failures open an
// upstream's breaker for open_timeout with the reason that tripped it; one
// probe goes through half-open and its success closes the breaker.
func TestFailuresTrip(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		rec := &recorder{}
		s := New(&Options{OnChange: rec.record})
		start := time.Now()
		for range 4 {
			call(t, s, "up", 0, Failure("timeout"))
		}
		call(t, s, "up", 0, Success()) // a success breaks the run
		for range 4 {
			call(t, s, "up", 0, Failure("upstream_error"))
		}
		call(t, s, "up", 0, Failure("timeout"))
		oe := refused(t, s, "up", 0)
		want := &OpenError{Name: "up", State: StateOpen, Reason: "timeout", RetryAfter: start.Add(DefaultOpenTimeout)}
		if diff := cmp.Diff(want, oe); diff != "" {
			t.Errorf("open error mismatch (-want +got):\n%s", diff)
		}
		if got := oe.RetryAfterSeconds(start); got != 30 {
			t.Errorf("RetryAfterSeconds = %d, want 30", got)
		}

		time.Sleep(DefaultOpenTimeout + time.Millisecond)
		done, err := s.Allow("up", 0) // the one probe
		if err != nil {
			t.Fatalf("probe refused: %v", err)
		}
		if oe := refused(t, s, "up", 0); oe.State != StateHalfOpen {
			t.Errorf("second call while probing: state %s, want half-open", oe.State)
		}
		done(Success())
		call(t, s, "up", 0, Success())

		got := rec.take()
		wantChanges := []Change{
			{Name: "up", From: StateClosed, To: StateOpen, Reason: "timeout", Until: start.Add(DefaultOpenTimeout)},
			{Name: "up", From: StateOpen, To: StateHalfOpen, Reason: "timeout"},
			{Name: "up", From: StateHalfOpen, To: StateClosed},
		}
		if diff := cmp.Diff(wantChanges, got); diff != "" {
			t.Errorf("changes mismatch (-want +got):\n%s", diff)
		}
	})
}

// Regression test for issue 8: caller cancellation never trips a breaker.
func TestExcludedNeverCounts(t *testing.T) {
	t.Parallel()
	s := New(nil)
	for range 100 {
		call(t, s, "up", 0, Excluded())
	}
	st := s.Snapshot()
	if len(st) != 1 || st[0].State != StateClosed || st[0].Counts.Exclusions != 100 || st[0].Counts.Failures != 0 {
		t.Errorf("after 100 exclusions: %+v, want closed with 100 exclusions", st)
	}
}

// Regression test for issue 8: a revoked credential opens its breaker at once
// and keeps it open however long it waits, until a new generation of the
// credential is used; a late rejection of the old generation is ignored.
func TestRejectedHoldsUntilNewGeneration(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		s := New(nil)
		name := Name("github", "gh-token")
		if name != "github/gh-token" {
			t.Fatalf("Name = %q", name)
		}
		late, err := s.Allow(name, 1) // in flight while the credential dies
		if err != nil {
			t.Fatal(err)
		}
		call(t, s, name, 1, Rejected("credential_revoked"))
		want := &OpenError{Name: name, State: StateOpen, Reason: "credential_revoked"}
		if diff := cmp.Diff(want, refused(t, s, name, 1)); diff != "" {
			t.Errorf("open error mismatch (-want +got):\n%s", diff)
		}
		time.Sleep(24 * time.Hour)
		refused(t, s, name, 1)
		if err := s.Check(name, 1); !errors.Is(err, ErrOpen) {
			t.Errorf("Check = %v, want open", err)
		}

		call(t, s, name, 2, Success()) // rotated
		late(Rejected("credential_revoked"))
		call(t, s, name, 2, Success())
		if err := s.Check(name, 2); err != nil {
			t.Errorf("Check after rotation = %v, want nil", err)
		}

		// expired: open until a renewal (a new generation) succeeds.
		call(t, s, name, 2, Rejected("credential_expired"))
		if oe := refused(t, s, name, 2); oe.Reason != "credential_expired" {
			t.Errorf("reason %q, want credential_expired", oe.Reason)
		}
		call(t, s, name, 3, Success())
	})
}

// Regression test for issue 8: rate_limit_reached opens until the provider's
// reset (kept beside gobreaker's open timeout), then half-open; a failed
// probe re-opens for open_timeout, a successful one closes.
func TestRateLimitedUntilReset(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		rec := &recorder{}
		s := New(&Options{OnChange: rec.record})
		name := "up/key"
		start := time.Now()
		call(t, s, name, 7, RateLimited(start.Add(2*time.Second)))
		oe := refused(t, s, name, 7)
		if diff := cmp.Diff(&OpenError{Name: name, State: StateOpen, Reason: "rate_limit_reached", RetryAfter: start.Add(2 * time.Second)}, oe); diff != "" {
			t.Errorf("open error mismatch (-want +got):\n%s", diff)
		}
		if n := oe.RetryAfterSeconds(start); n != 2 {
			t.Errorf("RetryAfterSeconds = %d, want 2", n)
		}
		refused(t, s, name, 8) // a new credential does not lift a rate limit
		time.Sleep(2*time.Second + time.Millisecond)
		probe, err := s.Allow(name, 8)
		if err != nil {
			t.Fatalf("probe after reset refused: %v", err)
		}
		if oe := refused(t, s, name, 8); oe.State != StateHalfOpen {
			t.Errorf("second call while probing: %s, want half-open", oe.State)
		}
		probe(Failure("upstream_error"))
		reopened := time.Now()
		if oe := refused(t, s, name, 8); oe.Reason != "upstream_error" || !oe.RetryAfter.Equal(reopened.Add(DefaultOpenTimeout)) {
			t.Errorf("after a failed probe: %+v, want open for open_timeout because upstream_error", oe)
		}
		time.Sleep(DefaultOpenTimeout + time.Millisecond)
		call(t, s, name, 8, Success())
		call(t, s, name, 8, Success())

		// No reset named: open_timeout for a rate limit.
		now := time.Now()
		call(t, s, name, 8, RateLimited(time.Time{}))
		if oe := refused(t, s, name, 8); !oe.RetryAfter.Equal(now.Add(DefaultOpenTimeout)) {
			t.Errorf("rate limit without reset: until %v, want %v", oe.RetryAfter, now.Add(DefaultOpenTimeout))
		}
		var states []string
		for _, c := range rec.take() {
			states = append(states, c.From.String()+">"+c.To.String()+":"+c.Reason)
		}
		want := []string{"closed>open:rate_limit_reached", "open>half-open:rate_limit_reached", "half-open>open:upstream_error",
			"open>half-open:upstream_error", "half-open>closed:", "closed>open:rate_limit_reached"}
		if diff := cmp.Diff(want, states); diff != "" {
			t.Errorf("changes mismatch (-want +got):\n%s", diff)
		}
	})
}

// Regression test for issue 8: quota_exhausted opens until the provider's
// reset, or for quota_cooldown when none is named.
func TestQuotaExhausted(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		s := New(nil)
		s.Apply(map[string]Config{"up": {QuotaCooldown: time.Hour}})
		now := time.Now()
		call(t, s, "up/k", 1, QuotaExhausted(time.Time{}))
		if oe := refused(t, s, "up/k", 1); oe.Reason != "quota_exhausted" || !oe.RetryAfter.Equal(now.Add(time.Hour)) {
			t.Errorf("quota without reset: %+v, want open for 1h", oe)
		}
		call(t, s, "other/k", 1, QuotaExhausted(now.Add(3*time.Minute)))
		if oe := refused(t, s, "other/k", 1); !oe.RetryAfter.Equal(now.Add(3 * time.Minute)) {
			t.Errorf("quota with reset: until %v, want %v", oe.RetryAfter, now.Add(3*time.Minute))
		}
		s2 := New(nil)
		call(t, s2, "up/k", 1, QuotaExhausted(time.Time{}))
		if oe := refused(t, s2, "up/k", 1); !oe.RetryAfter.Equal(now.Add(DefaultQuotaCooldown)) {
			t.Errorf("default quota_cooldown: until %v, want %v", oe.RetryAfter, now.Add(DefaultQuotaCooldown))
		}
	})
}

// Regression test for issue 8 with issue 11's sharing: a fact a peer
// published ("open because X until T") makes Allow refuse until T, and the
// change it causes is marked Peer so it is not published back; a local open
// with a known end is a fact to publish.
func TestHonourPeerFact(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		rec := &recorder{}
		s := New(&Options{OnChange: rec.record})
		now := time.Now()
		s.Honour("up/k", Fact{Reason: "rate_limit_reached", Until: now.Add(5 * time.Second)})
		s.Honour("up/k", Fact{Reason: "stale", Until: now.Add(-time.Second)}) // ignored
		oe := refused(t, s, "up/k", 1)
		if diff := cmp.Diff(&OpenError{Name: "up/k", State: StateOpen, Reason: "rate_limit_reached", RetryAfter: now.Add(5 * time.Second)}, oe); diff != "" {
			t.Errorf("open error mismatch (-want +got):\n%s", diff)
		}
		changes := rec.take()
		if len(changes) != 1 || !changes[0].Peer {
			t.Fatalf("changes %+v, want one peer change", changes)
		}
		if _, ok := changes[0].Fact(); ok {
			t.Errorf("a peer's change is offered as a fact to publish")
		}
		time.Sleep(5*time.Second + time.Millisecond)
		call(t, s, "up/k", 1, Success())

		call(t, s, "up/k", 1, RateLimited(time.Now().Add(time.Minute)))
		changes = rec.take()
		f, ok := changes[len(changes)-1].Fact()
		if !ok || f.Reason != "rate_limit_reached" || !f.Until.Equal(time.Now().Add(time.Minute)) {
			t.Errorf("local open: fact %+v %v, want rate_limit_reached for 1m", f, ok)
		}
		// A revoked credential has no known end: it is not a timed fact.
		call(t, s, "up/j", 1, Rejected("credential_revoked"))
		changes = rec.take()
		if _, ok := changes[len(changes)-1].Fact(); ok {
			t.Errorf("an open without an end is offered as a fact")
		}
	})
}

// Regression test for issue 8 (hot reload): Apply keeps a breaker whose
// config did not change (its counts survive), resets the counters of one
// whose config changed while keeping a rejected credential open, and drops
// breakers of removed upstreams.
func TestApplySurvivesReload(t *testing.T) {
	t.Parallel()
	s := New(nil)
	cfg := map[string]Config{"a": {Failures: 3}, "b": {}}
	s.Apply(cfg)
	call(t, s, "a", 0, Failure("timeout"))
	call(t, s, "a", 0, Failure("timeout"))
	call(t, s, "b/k", 4, Rejected("credential_invalid"))
	call(t, s, "b", 0, Failure("timeout"))

	s.Apply(map[string]Config{"a": {Failures: 3}, "b": {OpenTimeout: time.Minute}})
	call(t, s, "a", 0, Failure("timeout")) // third in a row: trips
	if oe := refused(t, s, "a", 0); oe.Reason != "timeout" {
		t.Errorf("a: reason %q", oe.Reason)
	}
	if oe := refused(t, s, "b/k", 4); oe.Reason != "credential_invalid" {
		t.Errorf("b/k after a config change: reason %q, want credential_invalid", oe.Reason)
	}
	st := s.Snapshot()
	var names []string
	for _, x := range st {
		names = append(names, x.Name+"="+x.State.String())
		if x.Name == "b" && x.Counts.Failures != 0 {
			t.Errorf("b kept its counts across a config change: %+v", x.Counts)
		}
	}
	if diff := cmp.Diff([]string{"a=open", "b=closed", "b/k=open"}, names); diff != "" {
		t.Errorf("snapshot mismatch (-want +got):\n%s", diff)
	}

	s.Apply(map[string]Config{"b": {OpenTimeout: time.Minute}})
	names = nil
	for _, x := range s.Snapshot() {
		names = append(names, x.Name)
	}
	if diff := cmp.Diff([]string{"b", "b/k"}, names); diff != "" {
		t.Errorf("after removing a: snapshot mismatch (-want +got):\n%s", diff)
	}

	// A credential b no longer uses (renamed by a reload): its breaker goes,
	// the upstream's own stays.
	call(t, s, "b/k2", 1, Success())
	s.Retain(func(up, cred string) bool { return up == "b" && cred == "k2" })
	names = nil
	for _, x := range s.Snapshot() {
		names = append(names, x.Name)
	}
	if diff := cmp.Diff([]string{"b", "b/k2"}, names); diff != "" {
		t.Errorf("after Retain: snapshot mismatch (-want +got):\n%s", diff)
	}
}

func TestDoneTwiceCountsOnce(t *testing.T) {
	t.Parallel()
	s := New(&Options{Default: Config{Failures: 2}})
	done, err := s.Allow("up", 0)
	if err != nil {
		t.Fatal(err)
	}
	done(Failure("timeout"))
	done(Failure("timeout"))
	if err := s.Check("up", 0); err != nil {
		t.Errorf("one call reported twice tripped a 2-failure breaker: %v", err)
	}
}

func TestConfigValidate(t *testing.T) {
	t.Parallel()
	if err := (Config{}).Validate("upstreams.a.breaker"); err != nil {
		t.Errorf("zero config: %v", err)
	}
	err := Config{Failures: -1, OpenTimeout: -time.Second, HalfOpenRequests: -2, QuotaCooldown: -time.Minute}.Validate("upstreams.a.breaker")
	for _, key := range []string{"failures", "open_timeout", "half_open_requests", "quota_cooldown"} {
		if err == nil || !strings.Contains(err.Error(), "upstreams.a.breaker."+key+":") {
			t.Errorf("Validate does not name upstreams.a.breaker.%s: %v", key, err)
		}
	}
	want := Config{Failures: 5, OpenTimeout: 30 * time.Second, HalfOpenRequests: 1, QuotaCooldown: 15 * time.Minute}
	if diff := cmp.Diff(want, Config{}.WithDefaults()); diff != "" {
		t.Errorf("defaults mismatch (-want +got):\n%s", diff)
	}
}

func TestStateString(t *testing.T) {
	t.Parallel()
	for s, want := range map[State]string{StateClosed: "closed", StateHalfOpen: "half-open", StateOpen: "open", State(9): "State(9)"} {
		if got := s.String(); got != want {
			t.Errorf("State(%d).String() = %q, want %q", int(s), got, want)
		}
	}
}

// BenchmarkAllowDone is one call through a closed upstream breaker and a
// closed credential breaker. Target: under 2µs per call.
func BenchmarkAllowDone(b *testing.B) {
	s := New(nil)
	for b.Loop() {
		d1, err := s.Allow("up", 0)
		if err != nil {
			b.Fatal(err)
		}
		d2, err := s.Allow("up/cred", 1)
		if err != nil {
			b.Fatal(err)
		}
		d2(Success())
		d1(Success())
	}
}

func BenchmarkAllowDoneParallel(b *testing.B) {
	s := New(nil)
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			d, err := s.Allow("up/cred", 1)
			if err != nil {
				b.Fatal(err)
			}
			d(Success())
		}
	})
}

// TestConcurrentUse runs every entry point at once under the race detector.
func TestConcurrentUse(t *testing.T) {
	t.Parallel()
	var wg sync.WaitGroup
	s := New(&Options{Default: Config{Failures: 2}, OnChange: func(Change) {}})
	outcomes := []Outcome{Success(), Failure("timeout"), Excluded(), Rejected("credential_revoked"),
		RateLimited(time.Now().Add(time.Millisecond)), QuotaExhausted(time.Now().Add(time.Millisecond))}
	for g := range 4 {
		wg.Go(func() {
			for i := range 500 {
				name := Name("up", []string{"", "a", "b"}[i%3])
				if done, err := s.Allow(name, uint64(i/50)); err == nil {
					done(outcomes[(i+g)%len(outcomes)])
				}
				switch i % 50 {
				case 0:
					s.Snapshot()
				case 1:
					s.Apply(map[string]Config{"up": {Failures: 1 + i%3}})
				case 2:
					s.Honour(name, Fact{Reason: "rate_limit_reached", Until: time.Now().Add(time.Millisecond)})
				case 3:
					_ = s.Check(name, uint64(i/50))
				}
			}
		})
	}
	wg.Wait()
}

// A Check does not take the half-open probe slot that Allow would.
func TestCheckTakesNoProbe(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		s := New(nil)
		call(t, s, "up/k", 1, RateLimited(time.Now().Add(time.Second)))
		time.Sleep(time.Second + time.Millisecond)
		for range 3 {
			if err := s.Check("up/k", 1); err != nil {
				t.Fatalf("Check in half-open: %v", err)
			}
		}
		call(t, s, "up/k", 1, Success())
		if st := s.Snapshot(); st[0].State != StateClosed {
			t.Errorf("after the probe succeeded: %s, want closed", st[0].State)
		}
	})
}

// TestApplyKeepsOpen: a breaker that is open when its settings change stays
// open, for the reason it opened, and lets probes through after the new
// open_timeout; the change closed it, letting calls through to what was
// still failing (found trying the gateway from outside).
func TestApplyKeepsOpen(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		s := New(nil)
		s.Apply(map[string]Config{"a": {Failures: 2, OpenTimeout: time.Hour}})
		call(t, s, "a", 0, Failure("timeout"))
		call(t, s, "a", 0, Failure("timeout"))
		refused(t, s, "a", 0)
		s.Apply(map[string]Config{"a": {Failures: 3, OpenTimeout: time.Minute}})
		if oe := refused(t, s, "a", 0); oe.Reason != "timeout" {
			t.Errorf("after a settings change: reason %q, want the one it opened for", oe.Reason)
		}
		time.Sleep(time.Minute + time.Second) // the new open_timeout
		done, err := s.Allow("a", 0)
		if err != nil {
			t.Fatalf("after the new open_timeout: %v; want a probe let through", err)
		}
		done(Success())
		for _, x := range s.Snapshot() {
			if x.Name == "a" && x.State.String() == "open" {
				t.Errorf("a is %s after a successful probe", x.State)
			}
		}
	})
}

// TestApplyOpenReportsWhatItEnforces: after a settings change, an open
// breaker reports the wait it enforces (the new open_timeout from the
// change); it reported the old opening plus the new timeout, which said
// closed while calls were refused. One already due a probe is not opened
// again.
func TestApplyOpenReportsWhatItEnforces(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		s := New(nil)
		s.Apply(map[string]Config{"a": {Failures: 1, OpenTimeout: time.Hour}, "b": {Failures: 1, OpenTimeout: time.Minute}})
		call(t, s, "a", 0, Failure("timeout"))
		call(t, s, "b", 0, Failure("timeout"))
		time.Sleep(10 * time.Minute) // b is due a probe; a is not
		s.Apply(map[string]Config{"a": {Failures: 1, OpenTimeout: time.Minute}, "b": {Failures: 1, OpenTimeout: time.Hour}})
		oe := refused(t, s, "a", 0)
		if want := time.Now().Add(time.Minute); !oe.RetryAfter.IsZero() && oe.RetryAfter.After(want.Add(time.Second)) {
			t.Errorf("a refuses until %v; want about %v", oe.RetryAfter, want)
		}
		for _, x := range s.Snapshot() {
			if x.Name == "a" && x.State.String() != "open" {
				t.Errorf("a reports %s while it refuses calls", x.State)
			}
		}
		done, err := s.Allow("b", 0)
		if err != nil {
			t.Errorf("b, due a probe before the change, refuses: %v", err)
		} else {
			done(Success())
		}
	})
}
