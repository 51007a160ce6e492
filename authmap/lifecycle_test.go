package authmap

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/google/go-cmp/cmp"
)

// fakeSource hands out tokens from next (or errors from err), recording each fetch.
type fakeSource struct {
	kind string

	mu      sync.Mutex
	next    func(n int) (Token, error) // n counts fetches from 1
	fetches []time.Time
	gate    chan struct{} // if set, each fetch waits for a send on it (or its close)
}

func (f *fakeSource) Kind() string { return f.kind }

// Fetch reads the source's state when it starts, then waits at the gate (a
// slow source), then returns it.
func (f *fakeSource) Fetch(ctx context.Context) (Token, error) {
	f.mu.Lock()
	f.fetches = append(f.fetches, time.Now())
	tok, err := f.next(len(f.fetches))
	gate := f.gate
	f.mu.Unlock()
	if gate != nil {
		select {
		case <-gate:
		case <-ctx.Done():
			return Token{}, ctx.Err()
		}
	}
	return tok, err
}

func (f *fakeSource) set(next func(n int) (Token, error)) {
	f.mu.Lock()
	f.next = next
	f.mu.Unlock()
}

func (f *fakeSource) times() []time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]time.Time(nil), f.fetches...)
}

// eventLog records events.
type eventLog struct {
	mu  sync.Mutex
	evs []Event
}

func (l *eventLog) add(e Event) {
	l.mu.Lock()
	l.evs = append(l.evs, e)
	l.mu.Unlock()
}

// kinds returns "kind@offset/trigger" for each event, offsets from t0.
func (l *eventLog) kinds(t0 time.Time) []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make([]string, 0, len(l.evs))
	for _, e := range l.evs {
		out = append(out, fmt.Sprintf("%s@%s/%s", e.Kind, e.Time.Sub(t0), e.Trigger))
	}
	return out
}

func (l *eventLog) all() []Event {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]Event(nil), l.evs...)
}

func newTestCredential(cfg CredentialConfig, src Source, lc LifecycleConfig, probe ProbeFunc) (*Credential, *eventLog) {
	log := &eventLog{}
	c := NewCredential("gh", cfg, src, &CredentialOptions{Lifecycle: lc, Probe: probe, OnEvent: log.add})
	return c, log
}

// runWatch starts c.Run in the bubble and returns a stop function that waits for it.
func runWatch(t *testing.T, c *Credential) (stop func()) {
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = c.Run(ctx)
	}()
	return func() {
		cancel()
		<-done
	}
}

func offsets(t0 time.Time, ts []time.Time) []time.Duration {
	out := make([]time.Duration, 0, len(ts))
	for _, t := range ts {
		out = append(out, t.Sub(t0))
	}
	return out
}

// Regression test for issue 7 (expiry watch): a credential the gateway
// cannot renew becomes expiring when its remaining lifetime drops under
// expiry_warning and expired at its expiry, each with one event, at those
// very moments (the watch wakes at the due points, not only every check_interval).
func TestWatchExpiringThenExpired(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		t0 := time.Now()
		src := &fakeSource{kind: KindEnv, next: func(int) (Token, error) { return Token{Value: "static-token-value"}, nil }}
		cfg := CredentialConfig{ExpiresAt: t0.Add(2*time.Hour + 7*time.Minute)}
		c, log := newTestCredential(cfg, src, LifecycleConfig{}, nil)
		if err := c.Load(t.Context()); err != nil {
			t.Fatal(err)
		}
		stop := runWatch(t, c)
		defer stop()

		statusAt := func(d time.Duration) Status {
			time.Sleep(time.Until(t0.Add(d)))
			synctest.Wait()
			return c.Status()
		}
		for _, step := range []struct {
			at   time.Duration
			want Status
		}{
			{time.Hour, StatusHealthy},
			{time.Hour + 7*time.Minute - time.Second, StatusHealthy},
			{time.Hour + 7*time.Minute, StatusExpiring},
			{2*time.Hour + 7*time.Minute - time.Second, StatusExpiring},
			{2*time.Hour + 7*time.Minute, StatusExpired},
			{5 * time.Hour, StatusExpired},
		} {
			if got := statusAt(step.at); got != step.want {
				t.Errorf("at %v: status %v, want %v", step.at, got, step.want)
			}
		}
		want := []string{"loaded@0s/startup", "expiring@1h7m0s/watch", "expired@2h7m0s/watch"}
		if diff := cmp.Diff(want, log.kinds(t0)); diff != "" {
			t.Errorf("events mismatch (-want +got):\n%s", diff)
		}
		if n := len(src.times()); n != 1 {
			t.Errorf("an env source was fetched %d times, want 1 (it cannot change)", n)
		}
	})
}

// Regression test for issue 7 (refresh before expiry): a renewable
// credential is renewed refresh_before its expiry, or half way through a
// lifetime shorter than twice that, and never becomes expiring while the
// renewals succeed.
func TestRefreshBeforeExpiry(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		lifetime time.Duration
		until    time.Duration
		want     []time.Duration // fetch offsets
	}{
		{"1h token, refresh_before 10m", time.Hour, 3 * time.Hour,
			[]time.Duration{0, 50 * time.Minute, 100 * time.Minute, 150 * time.Minute}},
		{"5s token, half its lifetime", 5 * time.Second, 12 * time.Second,
			[]time.Duration{0, 2500 * time.Millisecond, 5 * time.Second, 7500 * time.Millisecond, 10 * time.Second}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			synctest.Test(t, func(t *testing.T) {
				t0 := time.Now()
				src := &fakeSource{kind: KindOAuth2, next: func(n int) (Token, error) {
					return Token{Value: fmt.Sprintf("access-token-%d", n), ExpiresAt: time.Now().Add(tt.lifetime), Renewable: true}, nil
				}}
				c, log := newTestCredential(CredentialConfig{}, src, LifecycleConfig{}, nil)
				stop := runWatch(t, c) // Run loads it first
				defer stop()
				for now := time.Duration(0); now <= tt.until; now += time.Second / 4 {
					time.Sleep(time.Until(t0.Add(now)))
					synctest.Wait()
					if st := c.Status(); st != StatusHealthy {
						t.Fatalf("at %v: status %v, want healthy throughout", now, st)
					}
				}
				if diff := cmp.Diff(tt.want, offsets(t0, src.times())); diff != "" {
					t.Errorf("fetch times mismatch (-want +got):\n%s", diff)
				}
				evs := log.all()
				if len(evs) != len(tt.want) || evs[0].Kind != EventLoaded || evs[1].Kind != EventRefreshed || evs[1].Trigger != TriggerRefresh {
					t.Errorf("events %v, want loaded then refreshed/refresh", log.kinds(t0))
				}
			})
		})
	}
}

// TestLeaseExtendedSameValue: a source that hands back the same value with
// a later expiry (an exec helper or a Vault lease extending the token it
// has) renewed it: the credential stays healthy and is fetched every half
// lifetime, as a new value would be. It was counted as a failed renewal:
// expiring, an alert, and a fetch every few seconds as the lifetime taken
// for it shrank (found trying the gateway from outside).
func TestLeaseExtendedSameValue(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		t0 := time.Now()
		src := &fakeSource{kind: KindExec, next: func(n int) (Token, error) {
			return Token{Value: "the-same-lease-token", ExpiresAt: time.Now().Add(40 * time.Second), Renewable: true}, nil
		}}
		c, _ := newTestCredential(CredentialConfig{}, src, LifecycleConfig{}, nil)
		stop := runWatch(t, c)
		defer stop()
		for now := time.Duration(0); now <= 130*time.Second; now += time.Second / 4 {
			time.Sleep(time.Until(t0.Add(now)))
			synctest.Wait()
			if st := c.Status(); st != StatusHealthy {
				t.Fatalf("at %v: status %v, want healthy throughout", now, st)
			}
		}
		want := []time.Duration{0, 20 * time.Second, 40 * time.Second, 60 * time.Second, 80 * time.Second, 100 * time.Second, 120 * time.Second}
		if diff := cmp.Diff(want, offsets(t0, src.times())); diff != "" {
			t.Errorf("fetch times mismatch (-want +got):\n%s", diff)
		}
	})
}

// Regression test for issue 7 (backoff): a failing renewal is retried with
// exponential backoff and jitter (each wait within [d/2, d] for d = 2s,
// 4s, 8s, ... capped at check_interval); the credential is expiring while it
// keeps failing (from the third failure), expired at its expiry, and healthy again once a renewal succeeds.
func TestRenewalBackoff(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		t0 := time.Now()
		exp := t0.Add(time.Hour)
		var failing sync.Mutex
		fail := true
		src := &fakeSource{kind: KindOAuth2}
		src.set(func(n int) (Token, error) {
			failing.Lock()
			defer failing.Unlock()
			if n == 1 {
				return Token{Value: "first-access-token", ExpiresAt: exp, Renewable: true}, nil
			}
			if fail {
				return Token{}, errors.New("token endpoint unreachable")
			}
			return Token{Value: "second-access-token", ExpiresAt: time.Now().Add(time.Hour), Renewable: true}, nil
		})
		lc := LifecycleConfig{CheckInterval: time.Minute}
		c, log := newTestCredential(CredentialConfig{}, src, lc, nil)
		stop := runWatch(t, c)
		defer stop()

		refreshAt := 50 * time.Minute
		time.Sleep(time.Until(t0.Add(refreshAt)))
		synctest.Wait()
		// One failure a retry may cure is not yet expiring (it paged on
		// the first); the third in a row is.
		if st := c.Status(); st != StatusHealthy {
			t.Errorf("after the first failed renewal: %v, want healthy still", st)
		}
		time.Sleep(time.Until(t0.Add(refreshAt + 10*time.Second)))
		synctest.Wait()
		if st := c.Status(); st != StatusExpiring {
			t.Errorf("after three failed renewals: %v, want expiring", st)
		}
		time.Sleep(time.Until(t0.Add(refreshAt + 9*time.Minute)))
		synctest.Wait()
		got := offsets(t0, src.times())
		if len(got) < 8 || got[1] != refreshAt {
			t.Fatalf("fetches at %v: want the load, a renewal at %v, then retries", got, refreshAt)
		}
		d := backoffMin
		for i := 2; i < len(got); i++ {
			wait := got[i] - got[i-1]
			if wait < d/2 || wait > d {
				t.Errorf("retry %d waited %v, want within [%v, %v]", i-1, wait, d/2, d)
			}
			d = min(2*d, lc.CheckInterval)
		}
		snap := c.Snapshot(false)
		if snap.LastError == nil || snap.LastError.Type != TypeUpstreamUnavailable || !strings.Contains(snap.LastError.Detail, "token endpoint unreachable") {
			t.Errorf("last error %+v, want upstream_unavailable with the cause", snap.LastError)
		}
		time.Sleep(time.Until(exp))
		synctest.Wait()
		if st := c.Status(); st != StatusExpired {
			t.Errorf("at expiry: %v, want expired", st)
		}
		failing.Lock()
		fail = false
		failing.Unlock()
		time.Sleep(lc.CheckInterval)
		synctest.Wait()
		if st, v := c.Status(), c.Value(); st != StatusHealthy || v != "second-access-token" {
			t.Errorf("after recovery: %v %q, want healthy second-access-token", st, v)
		}
		var kinds []EventKind
		for _, e := range log.all() {
			kinds = append(kinds, e.Kind)
		}
		// One refresh_failed for the first failure (issue 10: the ops
		// surface shows refresh results); the retries failing the same way
		// add none.
		if diff := cmp.Diff([]EventKind{EventLoaded, EventRefreshFailed, EventExpiring, EventExpired, EventRefreshed}, kinds); diff != "" {
			t.Errorf("events mismatch (-want +got):\n%s", diff)
		}
	})
}

// Regression test for issue 7 (reactive renewal): after a rejection a
// credential whose source may have changed is re-read once (single-flight,
// however many calls were rejected at once), at most once a minute; the
// result says whether the value changed, so the call is resent only then.
func TestRenewAfterRejection(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		t0 := time.Now()
		value := "old-token-value"
		var mu sync.Mutex
		src := &fakeSource{kind: KindExec, next: func(int) (Token, error) {
			mu.Lock()
			defer mu.Unlock()
			return Token{Value: value}, nil
		}}
		c, log := newTestCredential(CredentialConfig{}, src, LifecycleConfig{}, nil)
		if err := c.Load(t.Context()); err != nil {
			t.Fatal(err)
		}
		// The source has not changed: no resend.
		if c.RenewAfterRejection(t.Context(), "old-token-value") {
			t.Error("changed = true with the same value at the source")
		}
		// Within the minute: no fetch at all, even though the source changed.
		mu.Lock()
		value = "new-token-value"
		mu.Unlock()
		time.Sleep(59 * time.Second)
		if c.RenewAfterRejection(t.Context(), "old-token-value") {
			t.Error("renewed again within a minute")
		}
		// A minute on, many calls rejected at once: one fetch, all told to resend.
		time.Sleep(time.Second)
		src.mu.Lock()
		src.gate = make(chan struct{})
		src.mu.Unlock()
		var wg sync.WaitGroup
		results := make([]bool, 8)
		for i := range results {
			wg.Go(func() { results[i] = c.RenewAfterRejection(t.Context(), "old-token-value") })
		}
		synctest.Wait() // all eight are waiting on the one fetch
		close(src.gate)
		wg.Wait()
		for i, r := range results {
			if !r {
				t.Errorf("caller %d: changed = false, want true", i)
			}
		}
		if diff := cmp.Diff([]time.Duration{0, 0, time.Minute}, offsets(t0, src.times())); diff != "" {
			t.Errorf("fetch times mismatch (-want +got):\n%s", diff)
		}
		// A caller that used the old value learns at once that it changed.
		if !c.RenewAfterRejection(t.Context(), "old-token-value") {
			t.Error("a late caller with the old value was not told to resend")
		}
		if n := len(src.times()); n != 3 {
			t.Errorf("%d fetches, want 3", n)
		}
		if diff := cmp.Diff([]string{"loaded@0s/startup", "rotated@1m0s/live_error"}, log.kinds(t0)); diff != "" {
			t.Errorf("events mismatch (-want +got):\n%s", diff)
		}
	})
}

// Regression test for issue 7 (reactive renewal): a value rejected within a
// minute of the last reactive renewal is not renewed at once (at most once a
// minute), but the renewal is deferred, not dropped. Before the fix an OAuth
// credential revoked twice within a minute stayed invalid, every call held
// back by the gate, until its scheduled refresh: 50 minutes for a 1h token.
func TestRenewAfterRejectionDeferred(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		t0 := time.Now()
		src := &fakeSource{kind: KindOAuth2, next: func(n int) (Token, error) {
			return Token{Value: fmt.Sprintf("access-token-%d", n), ExpiresAt: time.Now().Add(time.Hour), Renewable: true}, nil
		}}
		c, _ := newTestCredential(CredentialConfig{}, src, LifecycleConfig{}, nil)
		stop := runWatch(t, c)
		defer stop()
		synctest.Wait()
		// The provider revokes the first token: renewed at once, resent.
		if !c.RenewAfterRejection(t.Context(), "access-token-1") {
			t.Fatal("first rejection: changed = false, want true")
		}
		// Ten seconds later it revokes the second: within the minute, so
		// not renewed now, and the credential is invalid.
		time.Sleep(10 * time.Second)
		if c.RenewAfterRejection(t.Context(), "access-token-2") {
			t.Error("second rejection within the minute: changed = true")
		}
		c.Report(SubtypeCredentialInvalid, "access-token-2")
		if st := c.Status(); st != StatusInvalid {
			t.Fatalf("after the second rejection: %v, want invalid", st)
		}
		// No call sends the dead value again, so no rejection comes; the
		// watch renews it once the minute is over.
		time.Sleep(time.Until(t0.Add(time.Minute + time.Second)))
		synctest.Wait()
		if st, v := c.Status(), c.Value(); st != StatusHealthy || v != "access-token-3" {
			t.Errorf("a minute on: status %v, value %q; want healthy, access-token-3", st, v)
		}
		if diff := cmp.Diff([]time.Duration{0, 0, time.Minute}, offsets(t0, src.times())); diff != "" {
			t.Errorf("fetch times mismatch (-want +got):\n%s", diff)
		}
	})
}

// liveCredential is a file credential holding live-token-value, its watch
// running until the test ends, settled; for a synctest bubble.
func liveCredential(t *testing.T) (*Credential, *eventLog) {
	t.Helper()
	src := &fakeSource{kind: KindFile, next: func(int) (Token, error) { return Token{Value: "live-token-value"}, nil }}
	c, log := newTestCredential(CredentialConfig{}, src, LifecycleConfig{}, nil)
	t.Cleanup(runWatch(t, c))
	synctest.Wait()
	return c, log
}

// TestRateLimitLastsUntilReset: a rate limit whose provider said when it
// resets (Retry-After, 120 s) keeps the credential rate_limited until then,
// as its breaker refuses calls until then; it ended after a minute, the
// credential reading "restored" while calls still failed (found trying the
// gateway from outside).
func TestRateLimitLastsUntilReset(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		t0 := time.Now()
		c, log := liveCredential(t)
		reset := 120
		c.ReportFailure(Failure{Type: TypeAuthFailure, Subtype: SubtypeRateLimitReached, RetryAfterSeconds: &reset}, "live-token-value", "a call")
		time.Sleep(90 * time.Second)
		synctest.Wait()
		if st := c.Status(); st != StatusRateLimited {
			t.Errorf("90 s into a 120 s limit: %v, want rate_limited", st)
		}
		time.Sleep(31 * time.Second)
		synctest.Wait()
		if st := c.Status(); st != StatusHealthy {
			t.Errorf("after the reset: %v, want healthy", st)
		}
		want := []string{"loaded@0s/startup", "rate_limited@0s/live_error", "restored@2m0s/watch"}
		if diff := cmp.Diff(want, log.kinds(t0)); diff != "" {
			t.Errorf("events mismatch (-want +got):\n%s", diff)
		}
	})
}

// TestRateLimitEndsAtShortReset: a limit whose provider said it resets in
// 20 s ends then, not after the minute a limit without a reset lasts (the
// breaker lets calls through at 20 s, while health read rate_limited and
// degraded for a minute); its last_error is retryable, as the call's
// failure was (it read retryable: false).
func TestRateLimitEndsAtShortReset(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		t0 := time.Now()
		c, log := liveCredential(t)
		reset := 20
		c.ReportFailure(Failure{Type: TypeAuthFailure, Subtype: SubtypeRateLimitReached, Retryable: true, RetryAfterSeconds: &reset}, "live-token-value", "a call")
		if le := c.Snapshot(false).LastError; le == nil || !le.Retryable {
			t.Errorf("last_error %+v; want retryable", le)
		}
		time.Sleep(21 * time.Second)
		synctest.Wait()
		if st := c.Status(); st != StatusHealthy {
			t.Errorf("after the 20 s reset: %v, want healthy", st)
		}
		// A rejection then has the source re-read, which gives the same
		// value: nothing to say of the source, which never failed (it
		// said "holds the value again", the limit's last_error taken for
		// the source's).
		c.RenewAfterRejection(t.Context(), "live-token-value")
		synctest.Wait()
		want := []string{"loaded@0s/startup", "rate_limited@0s/live_error", "restored@20s/watch"}
		if diff := cmp.Diff(want, log.kinds(t0)); diff != "" {
			t.Errorf("events mismatch (-want +got):\n%s", diff)
		}
	})
}

// An env or value credential cannot change by re-reading it: no renewal, no resend.
func TestRenewAfterRejectionStaticSource(t *testing.T) {
	t.Parallel()
	src := &fakeSource{kind: KindEnv, next: func(int) (Token, error) { return Token{Value: "env-token-value"}, nil }}
	c, _ := newTestCredential(CredentialConfig{}, src, LifecycleConfig{}, nil)
	if err := c.Load(t.Context()); err != nil {
		t.Fatal(err)
	}
	if c.RenewAfterRejection(t.Context(), "env-token-value") {
		t.Error("changed = true for an env source")
	}
	if n := len(src.times()); n != 1 {
		t.Errorf("%d fetches, want 1", n)
	}
}

// Regression test for issue 7 (live status): auth failures from calls set
// the status (revoked in health whatever the watch thought), once per change;
// a report about a value no longer held is ignored; a call that authenticates
// restores it; a rate limit clears by itself after a minute.
func TestReportLiveStatus(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		t0 := time.Now()
		c, log := liveCredential(t)

		c.Report(SubtypeCredentialRevoked, "some-older-value")
		if st := c.Status(); st != StatusHealthy {
			t.Errorf("after a report about another value: %v, want healthy", st)
		}
		c.Report(SubtypeCredentialRevoked, "live-token-value")
		c.Report(SubtypeCredentialRevoked, "live-token-value")
		if st := c.Status(); st != StatusRevoked {
			t.Errorf("after revoked reports: %v, want revoked", st)
		}
		c.Report(SubtypeInsufficientScope, "live-token-value")
		if st := c.Status(); st != StatusRevoked {
			t.Errorf("insufficient_scope changed the status to %v", st)
		}
		c.Report("", "live-token-value")
		if st := c.Status(); st != StatusHealthy {
			t.Errorf("after a call authenticated: %v, want healthy", st)
		}
		time.Sleep(time.Second)
		c.Report(SubtypeRateLimitReached, "")
		if st := c.Status(); st != StatusRateLimited {
			t.Errorf("after a rate limit: %v, want rate_limited", st)
		}
		time.Sleep(time.Minute)
		synctest.Wait()
		if st := c.Status(); st != StatusHealthy {
			t.Errorf("a minute after the rate limit: %v, want healthy", st)
		}
		want := []string{"loaded@0s/startup", "revoked@0s/live_error", "restored@0s/live_error",
			"rate_limited@1s/live_error", "restored@1m1s/watch"}
		if diff := cmp.Diff(want, log.kinds(t0)); diff != "" {
			t.Errorf("events mismatch (-want +got):\n%s", diff)
		}
		// A recovery's detail says it ended, not the failure's text again
		// (found trying the gateway: "a call was answered
		// rate_limit_reached" on the event that said the limit ended).
		for _, e := range log.all() {
			if e.Kind == EventRestored && (strings.Contains(e.Detail, "answered") || !strings.Contains(e.Detail, "working again")) {
				t.Errorf("restored event's detail = %q; want it to say the credential works again", e.Detail)
			}
		}
		if k := c.Knowledge(); k.Credential != "gh" || len(k.Secrets) != 1 || k.Secrets[0] != "live-token-value" {
			t.Errorf("Knowledge = %+v", k)
		}
	})
}

// The success report is on every call's path: it must not allocate or lock.
func TestHotPathDoesNotAllocate(t *testing.T) {
	src := &fakeSource{kind: KindValue, next: func(int) (Token, error) { return Token{Value: "hot-path-value"}, nil }}
	c, _ := newTestCredential(CredentialConfig{}, src, LifecycleConfig{}, nil)
	if err := c.Load(t.Context()); err != nil {
		t.Fatal(err)
	}
	var sink string
	allocs := testing.AllocsPerRun(1000, func() {
		sink = c.Value()
		c.Report("", sink)
		_ = c.Knowledge()
	})
	if allocs != 0 {
		t.Errorf("Value+Report+Knowledge allocate %v times per call, want 0", allocs)
	}
}

func BenchmarkCredentialValue(b *testing.B) {
	src := &fakeSource{kind: KindValue, next: func(int) (Token, error) { return Token{Value: "bench-value"}, nil }}
	c, _ := newTestCredential(CredentialConfig{}, src, LifecycleConfig{}, nil)
	if err := c.Load(b.Context()); err != nil {
		b.Fatal(err)
	}
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			v := c.Value()
			c.Report("", v)
		}
	})
}

// Regression test for issue 7 (rotation check): a new value is probed before
// it replaces the old one; one the provider rejects keeps the old value and
// raises rejected_rotation; one it accepts is rotated and validated.
func TestRotationIsProbed(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	value := "good-token-one"
	src := &fakeSource{kind: KindFile, next: func(int) (Token, error) {
		mu.Lock()
		defer mu.Unlock()
		return Token{Value: value}, nil
	}}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.Header.Get("Authorization"), "Bearer good-") {
			w.Header().Set("Github-Authentication-Token-Expiration", "2031-01-02 03:04:05 UTC")
			_, _ = w.Write([]byte(`{"login":"octocat"}`))
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusUnauthorized)
		_, _ = w.Write([]byte(`{"message":"Bad credentials","documentation_url":"https://docs.github.com/rest"}`))
	}))
	defer srv.Close()
	probe := HTTPProbe(HTTPProbeConfig{URL: srv.URL + "/user"}, InjectConfig{}, srv.Client(), nil)
	c, log := newTestCredential(CredentialConfig{}, src, LifecycleConfig{}, probe)
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	if err := c.Load(ctx); err != nil {
		t.Fatal(err)
	}
	if exp := c.ExpiresAt(); !exp.Equal(time.Date(2031, 1, 2, 3, 4, 5, 0, time.UTC)) {
		t.Errorf("expiry from the probe's header: %v", exp)
	}
	mu.Lock()
	value = "bad-token-two"
	mu.Unlock()
	changed, err := c.Renew(ctx, TriggerWebhook)
	if changed || err == nil {
		t.Errorf("Renew with a rejected value: changed %v, err %v", changed, err)
	}
	if v, st := c.Value(), c.Status(); v != "good-token-one" || st != StatusHealthy {
		t.Errorf("after a rejected rotation: %q %v, want the old value, healthy", v, st)
	}
	if err != nil && strings.Contains(err.Error(), "bad-token-two") {
		t.Errorf("error shows the rejected value: %v", err)
	}
	mu.Lock()
	value = "good-token-three"
	mu.Unlock()
	if changed, err := c.Renew(ctx, TriggerAdmin); !changed || err != nil {
		t.Errorf("Renew with a good value: changed %v, err %v", changed, err)
	}
	var got []string
	for _, e := range log.all() {
		got = append(got, string(e.Kind)+"/"+string(e.Trigger))
		for _, v := range []string{"good-token-one", "bad-token-two", "good-token-three"} {
			if strings.Contains(e.Detail, v) {
				t.Errorf("event %s shows a secret: %s", e.Kind, e.Detail)
			}
		}
	}
	want := []string{"loaded/startup", "validated/startup", "rejected_rotation/webhook", "rotated/admin", "validated/admin"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("events mismatch (-want +got):\n%s", diff)
	}
	k := c.Knowledge()
	if diff := cmp.Diff([]string{"good-token-three", "good-token-one"}, k.Secrets); diff != "" {
		t.Errorf("Knowledge.Secrets mismatch (-want +got):\n%s", diff)
	}
}

func jwtExp(exp time.Time) string { return jwtWithExp(exp) }

// Regression test for issue 7 (pre-flight): Load resolves each credential,
// reads its expiry and probes it; the status, the error and fail_on's verdict
// follow.
func TestLoadStatus(t *testing.T) {
	t.Parallel()
	now := time.Now()
	reject := func(context.Context, string) (ProbeResult, error) {
		return ProbeResult{Failure: &Failure{Type: TypeAuthFailure, Subtype: SubtypeCredentialRevoked, Detail: "token was revoked"}}, nil
	}
	tests := []struct {
		name    string
		cfg     CredentialConfig
		src     Source
		probe   ProbeFunc
		want    Status
		errText string // "" = Load succeeds
		refuse  []FailOn
	}{
		{name: "env set", cfg: CredentialConfig{Source: SourceConfig{Env: "GH"}},
			src:  &envSource{name: "GH", lookup: func(string) (string, bool) { return " ghp_value \n", true }},
			want: StatusHealthy},
		{name: "env unset", src: &envSource{name: "GH", lookup: func(string) (string, bool) { return "", false }},
			want: StatusMissing, errText: `credential "gh": environment variable GH is not set: credential missing`,
			refuse: []FailOn{FailOnExpired, FailOnExpiring}},
		{name: "source says empty", src: &fakeSource{kind: KindExec, next: func(int) (Token, error) { return Token{}, nil }},
			want: StatusMissing, errText: "exec source resolved to an empty value", refuse: []FailOn{FailOnExpired, FailOnExpiring}},
		{name: "config expiry passed", cfg: CredentialConfig{ExpiresAt: now.Add(-time.Minute)},
			src:  valueSource("some-token-value"),
			want: StatusExpired, errText: `credential "gh": expired: expired at`, refuse: []FailOn{FailOnExpired, FailOnExpiring}},
		{name: "jwt exp passed", src: valueSource(jwtExp(now.Add(-time.Hour))),
			want: StatusExpired, errText: "expired at", refuse: []FailOn{FailOnExpired, FailOnExpiring}},
		{name: "expiring", src: valueSource(jwtExp(now.Add(30 * time.Minute))),
			want: StatusExpiring, refuse: []FailOn{FailOnExpiring}},
		{name: "probe rejects", src: valueSource("a-token-value"), probe: reject,
			want: StatusRevoked, errText: `credential "gh": revoked: token was revoked`, refuse: []FailOn{FailOnExpired, FailOnExpiring}},
		{name: "source unreachable", src: &fakeSource{kind: KindVault, next: func(int) (Token, error) { return Token{}, errors.New("dial tcp: connection refused") }},
			want: StatusMissing, errText: `credential "gh": dial tcp: connection refused`, refuse: []FailOn{FailOnExpired, FailOnExpiring}},
		{name: "source denies", src: &fakeSource{kind: KindVault, next: func(int) (Token, error) {
			return Token{}, fmt.Errorf("vault refused the token: %w", ErrDenied)
		}}, want: StatusMissing, errText: "vault refused the token", refuse: []FailOn{FailOnExpired, FailOnExpiring}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c, _ := newTestCredential(tt.cfg, tt.src, LifecycleConfig{}, tt.probe)
			err := c.Load(t.Context())
			if st := c.Status(); st != tt.want {
				t.Errorf("status %v, want %v", st, tt.want)
			}
			switch {
			case tt.errText == "" && err != nil:
				t.Errorf("Load: %v", err)
			case tt.errText != "" && (err == nil || !strings.Contains(err.Error(), tt.errText)):
				t.Errorf("Load error %v, want one containing %q", err, tt.errText)
			}
			var refused []FailOn
			for _, f := range []FailOn{FailOnExpired, FailOnExpiring, FailOnNever} {
				if (StartupConfig{FailOn: f}).Refuses(c.Status()) {
					refused = append(refused, f)
				}
			}
			if diff := cmp.Diff(tt.refuse, refused); diff != "" {
				t.Errorf("fail_on verdicts mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

// The expiry comes from, in order: the config, the source, a JWT's exp, a provider header.
func TestExpiryPrecedence(t *testing.T) {
	t.Parallel()
	base := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	cfgExp, srcExp, jwtE, noted := base, base.Add(time.Hour), base.Add(2*time.Hour), base.Add(3*time.Hour)
	tests := []struct {
		name   string
		cfg    time.Time
		tokExp time.Time
		value  string
		noted  time.Time
		want   time.Time
	}{
		{"config wins", cfgExp, srcExp, jwtExp(jwtE), noted, cfgExp},
		{"then the source", time.Time{}, srcExp, jwtExp(jwtE), noted, srcExp},
		{"then the jwt", time.Time{}, time.Time{}, jwtExp(jwtE), noted, jwtE},
		{"then the header", time.Time{}, time.Time{}, "opaque-token-value", noted, noted},
		{"unknown", time.Time{}, time.Time{}, "opaque-token-value", time.Time{}, time.Time{}},
	}
	for _, tt := range tests {
		src := &fakeSource{kind: KindFile, next: func(int) (Token, error) { return Token{Value: tt.value, ExpiresAt: tt.tokExp}, nil }}
		c, _ := newTestCredential(CredentialConfig{ExpiresAt: tt.cfg}, src, LifecycleConfig{}, nil)
		if err := c.Load(t.Context()); err != nil && !strings.Contains(err.Error(), "expired") {
			t.Fatalf("%s: %v", tt.name, err)
		}
		c.NoteExpiry(tt.noted)
		if got := c.ExpiresAt(); !got.Equal(tt.want) {
			t.Errorf("%s: expiry %v, want %v", tt.name, got, tt.want)
		}
		if got := c.Knowledge().ExpiresAt; !got.Equal(tt.want) {
			t.Errorf("%s: Knowledge.ExpiresAt %v, want %v", tt.name, got, tt.want)
		}
	}
}

// Knowledge.Secrets holds the current value, the previous ones (bounded), and
// the source's own secrets; events and errors are redacted with them.
func TestSecretsAreBoundedAndRedacted(t *testing.T) {
	t.Parallel()
	src := &secretSource{fakeSource: fakeSource{kind: KindExec, next: func(n int) (Token, error) {
		return Token{Value: fmt.Sprintf("rotating-value-%02d", n)}, nil
	}}}
	c, _ := newTestCredential(CredentialConfig{}, src, LifecycleConfig{}, nil)
	for range 40 {
		if _, err := c.Renew(t.Context(), TriggerAdmin); err != nil {
			t.Fatal(err)
		}
	}
	k := c.Knowledge()
	if len(k.Secrets) != 1+maxPrevious+1 {
		t.Errorf("%d secrets, want %d", len(k.Secrets), 1+maxPrevious+1)
	}
	if k.Secrets[0] != "rotating-value-40" || k.Secrets[len(k.Secrets)-1] != "source-own-secret" {
		t.Errorf("secrets %v", k.Secrets)
	}
	src.set(func(int) (Token, error) {
		return Token{}, errors.New("cli failed printing rotating-value-40 and rotating-value-39 and source-own-secret")
	})
	_, err := c.Renew(t.Context(), TriggerAdmin)
	if err == nil || strings.Contains(err.Error(), "rotating-value") || strings.Contains(err.Error(), "source-own-secret") {
		t.Errorf("error not redacted: %v", err)
	}
	if le := c.Snapshot(false).LastError; le == nil || strings.Contains(le.Detail, "rotating-value") {
		t.Errorf("last error not redacted: %+v", le)
	}
}

type secretSource struct{ fakeSource }

func (s *secretSource) Secrets() []string { return []string{"source-own-secret"} }

// Regression test for issue 7 (access readiness): the score and its parts.
func TestReadiness(t *testing.T) {
	t.Parallel()
	future := time.Now().Add(24 * time.Hour)
	tests := []struct {
		name    string
		cfg     SourceConfig
		tok     Token
		perTool bool
		want    int
		failing []string
	}{
		{"env", SourceConfig{Env: "GH"}, Token{Value: "v1"}, false, 0,
			[]string{ReadinessExpiryKnown, ReadinessRenewable, ReadinessScoped, ReadinessRotationPath, ReadinessSecretsStore}},
		{"value per tool", SourceConfig{Value: "v1"}, Token{Value: "v1"}, true, 20,
			[]string{ReadinessExpiryKnown, ReadinessRenewable, ReadinessRotationPath, ReadinessSecretsStore}},
		{"file with expiry", SourceConfig{File: "/x"}, Token{Value: "v1", ExpiresAt: future}, false, 60,
			[]string{ReadinessRenewable, ReadinessScoped}},
		{"aws rotating", SourceConfig{AWSSecretsManager: &AWSSecretsManagerConfig{SecretID: "s"}}, Token{Value: "v1", RotationAt: future}, true, 100, nil},
		{"oauth2, scopes, secret in env", SourceConfig{OAuth2: &OAuth2Config{Scopes: []string{"read"}, ClientSecret: SecretRef{Env: "S"}}},
			Token{Value: "v1", ExpiresAt: future, Renewable: true}, false, 80, []string{ReadinessSecretsStore}},
		{"oauth2, secret in a file", SourceConfig{OAuth2: &OAuth2Config{ClientSecret: SecretRef{File: "/s"}}},
			Token{Value: "v1", ExpiresAt: future, Renewable: true, Scopes: []string{"repo"}}, false, 100, nil},
	}
	for _, tt := range tests {
		src := &fakeSource{kind: tt.cfg.Kind(), next: func(int) (Token, error) { return tt.tok, nil }}
		c, _ := newTestCredential(CredentialConfig{Source: tt.cfg}, src, LifecycleConfig{}, nil)
		if err := c.Load(t.Context()); err != nil {
			t.Fatal(err)
		}
		r := c.Readiness(tt.perTool)
		var failing []string
		for _, p := range r.Parts {
			if !p.OK {
				failing = append(failing, p.Name)
				if p.Fix == "" {
					t.Errorf("%s: part %s fails without a fix", tt.name, p.Name)
				}
			}
		}
		if r.Score != tt.want {
			t.Errorf("%s: score %d, want %d", tt.name, r.Score, tt.want)
		}
		if diff := cmp.Diff(tt.failing, failing); diff != "" {
			t.Errorf("%s: failing parts mismatch (-want +got):\n%s", tt.name, diff)
		}
	}
}

// Manual reloads (webhooks, admin, SIGHUP) arriving while a fetch runs are
// not served by that older fetch, which may predate the rotation they
// announce; a burst of them shares one new fetch.
func TestManualReloadsCoalesce(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		var mu sync.Mutex
		value := "before-rotation"
		src := &fakeSource{kind: KindExec, next: func(int) (Token, error) {
			mu.Lock()
			defer mu.Unlock()
			return Token{Value: value}, nil
		}}
		c, _ := newTestCredential(CredentialConfig{}, src, LifecycleConfig{}, nil)
		if err := c.Load(t.Context()); err != nil {
			t.Fatal(err)
		}
		gate := make(chan struct{})
		src.mu.Lock()
		src.gate = gate
		src.mu.Unlock()
		go func() { _, _ = c.Renew(t.Context(), TriggerWatch) }() // an older fetch, in flight
		synctest.Wait()
		mu.Lock()
		value = "after-rotation"
		mu.Unlock()
		var wg sync.WaitGroup
		changed := make([]bool, 5)
		for i := range changed {
			wg.Go(func() { changed[i], _ = c.Renew(t.Context(), TriggerWebhook) })
		}
		synctest.Wait()
		gate <- struct{}{} // the older fetch
		synctest.Wait()
		gate <- struct{}{} // one fetch for the burst
		wg.Wait()
		for i, ch := range changed {
			if !ch {
				t.Errorf("webhook %d: changed = false", i)
			}
		}
		if v, n := c.Value(), len(src.times()); v != "after-rotation" || n != 3 {
			t.Errorf("value %q after %d fetches, want after-rotation after 3 (load, the older one, one for the burst)", v, n)
		}
	})
}

// TestSourceLostAgainReported: a source that loses its value, gets the same
// value back, then loses it again reports each loss (rejected_rotation). The
// second loss went unreported: the event was taken for a repeat of the
// first, though the source had recovered in between (a credential file
// removed, written back, removed again: found trying the gateway from
// outside).
func TestSourceLostAgainReported(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	ok := func(int) (Token, error) { return Token{Value: "value-0"}, nil }
	lost := func(int) (Token, error) { return Token{}, fmt.Errorf("file /s/token does not exist: %w", ErrMissing) }
	src := &fakeSource{kind: KindFile, next: ok}
	c, log := newTestCredential(CredentialConfig{}, src, LifecycleConfig{}, nil)
	if err := c.Load(ctx); err != nil {
		t.Fatal(err)
	}
	for i, step := range []struct {
		next    func(int) (Token, error)
		lastErr bool
	}{{lost, true}, {ok, false}, {lost, true}, {lost, true}} {
		src.set(step.next)
		_, _ = c.Renew(ctx, TriggerSignal)
		if got := c.Snapshot(false).LastError != nil; got != step.lastErr {
			t.Errorf("step %d: last error set %v, want %v", i, got, step.lastErr)
		}
	}
	var kinds []EventKind
	for _, e := range log.all() {
		kinds = append(kinds, e.Kind)
	}
	// The value's return is said (loaded); the last loss repeats the one
	// before it: reported once.
	want := []EventKind{EventLoaded, EventRejectedRotation, EventLoaded, EventRejectedRotation}
	if diff := cmp.Diff(want, kinds); diff != "" {
		t.Errorf("events (-want +got):\n%s", diff)
	}
	if c.Value() != "value-0" {
		t.Errorf("value %q, want value-0 kept", c.Value())
	}
}

// TestLaterExpiryIsRefreshed: a value whose source reports a later expiry
// (a file's expires_at moved) stops expiring as a renewal does, "refreshed",
// not "restored" ("was expiring; working again", found trying the
// gateway: nothing had failed).
func TestLaterExpiryIsRefreshed(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	later := time.Now().Add(30 * 24 * time.Hour).UTC().Truncate(time.Second)
	src := &fakeSource{kind: KindFile, next: func(n int) (Token, error) {
		if n == 1 {
			return Token{Value: "same-value-0123456789", ExpiresAt: time.Now().Add(time.Hour)}, nil
		}
		return Token{Value: "same-value-0123456789", ExpiresAt: later}, nil
	}}
	c, log := newTestCredential(CredentialConfig{Source: SourceConfig{File: "/dev/null"}}, src, LifecycleConfig{}, nil)
	if err := c.Load(ctx); err != nil {
		t.Fatal(err)
	}
	if st := c.Status(); st != StatusExpiring {
		t.Fatalf("loaded with an hour left: %s, want expiring", st)
	}
	if _, err := c.Renew(ctx, TriggerSignal); err != nil {
		t.Fatal(err)
	}
	evs := log.all()
	last := evs[len(evs)-1]
	if c.Status() != StatusHealthy || last.Kind != EventRefreshed || last.Detail != "expires "+later.Format(time.RFC3339) {
		t.Errorf("after the later expiry: %s, last event %s %q; want healthy, refreshed with the new expiry", c.Status(), last.Kind, last.Detail)
	}
}

// TestRejectRotation: a value taken back (a stdio child started with it
// exited on the provider's rejection) gives the credential the value
// before it again, with a rejected_rotation event and the failure as
// last_error; read again from the source it is not adopted again, but a
// new value is, and so is the rejected one on an operator's reload.
func TestRejectRotation(t *testing.T) {
	t.Parallel()
	src, set := settableSource("first-value-0123456789")
	c, log := newTestCredential(CredentialConfig{}, src, LifecycleConfig{}, nil)
	ctx := t.Context()
	if err := c.Load(ctx); err != nil {
		t.Fatal(err)
	}
	set("second-value-0123456789")
	if _, err := c.Renew(ctx, TriggerFile); err != nil {
		t.Fatal(err)
	}
	gen := c.Generation()
	f := Failure{Type: TypeAuthFailure, Subtype: SubtypeCredentialInvalid, Detail: "401 Bad credentials"}
	if _, ok := c.RejectRotation("first-value-0123456789", "second-value-0123456789", f, "a child"); ok {
		t.Error("a value no longer held was taken back")
	}
	if _, ok := c.RejectRotation("second-value-0123456789", "never-held-0123456789", f, "a child"); ok {
		t.Error("taken back for a value never held")
	}
	if _, ok := c.RejectRotation("second-value-0123456789", "first-value-0123456789", f, "a child started with the new value"); !ok {
		t.Fatal("the value adopted last was not taken back")
	}
	if v := c.Value(); v != "first-value-0123456789" || c.Generation() == gen {
		t.Errorf("after the rejection: value %q, generation %d (was %d); want the first value, a new generation", v, c.Generation(), gen)
	}
	if le := c.Snapshot(false).LastError; le == nil || le.Subtype != SubtypeCredentialInvalid {
		t.Errorf("last_error %+v, want the rejection", le)
	}
	evs := log.all()
	if e := evs[len(evs)-1]; e.Kind != EventRejectedRotation || !strings.Contains(e.Detail, "the value before it is kept") {
		t.Errorf("last event %+v, want rejected_rotation", e)
	}
	if c.Rejected() != "second-value-0123456789" {
		t.Error("Rejected does not name the value taken back")
	}
	// The source still holds it: not adopted again. A webhook, which
	// announced it as new, is told so.
	if _, err := c.Renew(ctx, TriggerFile); err != nil {
		t.Fatal(err)
	}
	if changed, err := c.Renew(ctx, TriggerWebhook); changed || err == nil || !strings.Contains(err.Error(), "exited on") || strings.Contains(err.Error(), "second-value") {
		t.Errorf("a webhook for the rejected value: changed %t, %v; want an error saying it was rejected, without the value", changed, err)
	}
	if v := c.Value(); v != "first-value-0123456789" {
		t.Errorf("the rejected value read again was adopted: %q", v)
	}
	// An operator's reload tries it again.
	if _, err := c.Renew(ctx, TriggerAdmin); err != nil {
		t.Fatal(err)
	}
	if v := c.Value(); v != "second-value-0123456789" {
		t.Errorf("an admin reload did not try the rejected value again: %q", v)
	}
	// A new value is adopted as usual.
	set("third-value-0123456789")
	if _, err := c.Renew(ctx, TriggerFile); err != nil {
		t.Fatal(err)
	}
	if v := c.Value(); v != "third-value-0123456789" {
		t.Errorf("a new value was not adopted: %q", v)
	}
}

// TestClientRejectedIsAskedAgain: a token endpoint that rejected the
// client (invalid_client) is asked again, with backoff, and the credential
// heals once it takes the client back; one such answer left it invalid
// for good.
func TestClientRejectedIsAskedAgain(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		var rejecting atomic.Bool
		src := oauthSource(func() error {
			if rejecting.Load() {
				return fmt.Errorf("token endpoint: invalid_client: %w", ErrClientRejected)
			}
			return nil
		})
		c, _ := newTestCredential(CredentialConfig{}, src, LifecycleConfig{}, nil)
		t.Cleanup(runWatch(t, c))
		synctest.Wait()
		rejecting.Store(true)
		time.Sleep(90 * time.Second) // past the refresh point
		synctest.Wait()
		if st := c.Status(); st != StatusInvalid {
			t.Fatalf("after invalid_client: %v, want invalid", st)
		}
		rejecting.Store(false) // the client is back
		time.Sleep(2 * time.Minute)
		synctest.Wait()
		if st := c.Status(); st != StatusHealthy {
			t.Errorf("two minutes after the client was taken back: %v, want healthy; fetches %v", st, len(src.times()))
		}
	})
}

// TestConfigExpiryIsTheFirstValues: the config's expires_at is that of the
// value it was written for; a value rotated in since has its own expiry
// (none known here), where it went expired at the old value's time.
func TestConfigExpiryIsTheFirstValues(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	value := "first-value-0123456789"
	src := &fakeSource{kind: KindFile, next: func(int) (Token, error) {
		mu.Lock()
		defer mu.Unlock()
		return Token{Value: value}, nil
	}}
	exp := time.Now().Add(time.Hour).Truncate(time.Second)
	c, _ := newTestCredential(CredentialConfig{ExpiresAt: exp}, src, LifecycleConfig{}, nil)
	if err := c.Load(t.Context()); err != nil {
		t.Fatal(err)
	}
	if got := c.ExpiresAt(); !got.Equal(exp) {
		t.Errorf("first value's expiry %v, want the config's %v", got, exp)
	}
	mu.Lock()
	value = "second-value-0123456789"
	mu.Unlock()
	if _, err := c.Renew(t.Context(), TriggerFile); err != nil {
		t.Fatal(err)
	}
	if got := c.ExpiresAt(); !got.IsZero() {
		t.Errorf("a rotated value's expiry %v, want none known (the config's is the first value's)", got)
	}
}

// grantSource is a fakeSource whose grant (a refresh token at a source of
// its own) can change.
type grantSource struct {
	*fakeSource
	changed atomic.Bool
}

func (g *grantSource) GrantChanged(context.Context) bool { return g.changed.Load() }

// TestRevokedGrantTakesANewOne: a credential whose refresh token was
// rejected (invalid_grant) is not asked again, but takes a new refresh
// token put at its source without a reload; it stayed revoked until one.
func TestRevokedGrantTakesANewOne(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		var rejecting, unreachable atomic.Bool
		src := &grantSource{fakeSource: oauthSource(func() error {
			if unreachable.Load() {
				return errors.New("token endpoint unreachable")
			}
			if rejecting.Load() {
				return fmt.Errorf("token endpoint: invalid_grant: %w", ErrRefreshRejected)
			}
			return nil
		})}
		c, _ := newTestCredential(CredentialConfig{}, src, LifecycleConfig{}, nil)
		t.Cleanup(runWatch(t, c))
		synctest.Wait()
		rejecting.Store(true)
		time.Sleep(90 * time.Second) // past the refresh point
		synctest.Wait()
		if st := c.Status(); st != StatusRevoked {
			t.Fatalf("after invalid_grant: %v, want revoked", st)
		}
		fetches := len(src.times())
		time.Sleep(time.Minute)
		synctest.Wait()
		if n := len(src.times()); n != fetches {
			t.Errorf("%d more token requests with the rejected grant, want none", n-fetches)
		}
		// A new refresh token at its source, while the token endpoint is
		// unreachable for a moment: tried until it is taken (the first
		// failure left it untried for good).
		rejecting.Store(false)
		unreachable.Store(true)
		src.changed.Store(true)
		time.Sleep(grantPoll + time.Second)
		synctest.Wait()
		src.changed.Store(false) // as the source sees it once read
		unreachable.Store(false)
		time.Sleep(time.Minute)
		synctest.Wait()
		if st := c.Status(); st != StatusHealthy {
			t.Errorf("after a new refresh token: %v, want healthy", st)
		}
	})
}

// TestRejectRotationKeepsWhatServes: the value kept is the one the old
// child holds, however many came between (it went back one value, to one
// no child held); nothing is kept when the value replaced had been found
// dead (the reason it rotated); a rejected value read again after
// rejectedHold is tried again (a key that takes a while to become valid).
func TestRejectRotationKeepsWhatServes(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		src, set := settableSource("a-value-0123456789ab")
		c, _ := newTestCredential(CredentialConfig{}, src, LifecycleConfig{}, nil)
		ctx := t.Context()
		if err := c.Load(ctx); err != nil {
			t.Fatal(err)
		}
		for _, v := range []string{"b-value-0123456789ab", "c-value-0123456789ab"} {
			set(v)
			if _, err := c.Renew(ctx, TriggerFile); err != nil {
				t.Fatal(err)
			}
		}
		f := Failure{Type: TypeAuthFailure, Subtype: SubtypeCredentialInvalid}
		if _, ok := c.RejectRotation("c-value-0123456789ab", "a-value-0123456789ab", f, "a child"); !ok || c.Value() != "a-value-0123456789ab" {
			t.Errorf("after A, B, C with the child on A: kept %q (%v), want A", c.Value(), ok)
		}
		// Read again at once: not adopted; after rejectedHold: tried again.
		if _, err := c.Renew(ctx, TriggerFile); err != nil || c.Value() != "a-value-0123456789ab" {
			t.Errorf("the rejected value read again at once: %q, %v", c.Value(), err)
		}
		time.Sleep(rejectedHold + time.Second)
		if _, err := c.Renew(ctx, TriggerFile); err != nil || c.Value() != "c-value-0123456789ab" {
			t.Errorf("the rejected value read again after %s: %q, %v; want it tried again", rejectedHold, c.Value(), err)
		}
		// The value it replaced found dead first: nothing to go back to.
		c.Report(SubtypeCredentialRevoked, "c-value-0123456789ab")
		set("d-value-0123456789ab")
		if _, err := c.Renew(ctx, TriggerFile); err != nil {
			t.Fatal(err)
		}
		if _, ok := c.RejectRotation("d-value-0123456789ab", "c-value-0123456789ab", f, "a child"); ok {
			t.Error("went back to a value found revoked")
		}
	})
}

// settableSource is a file source holding value until set changes it.
func settableSource(value string) (*fakeSource, func(string)) {
	var mu sync.Mutex
	src := &fakeSource{kind: KindFile, next: func(int) (Token, error) {
		mu.Lock()
		defer mu.Unlock()
		return Token{Value: value}, nil
	}}
	return src, func(v string) {
		mu.Lock()
		value = v
		mu.Unlock()
	}
}

// oauthSource is an OAuth source whose token endpoint answers fail's error,
// or a new token living two minutes when it returns nil.
func oauthSource(fail func() error) *fakeSource {
	return &fakeSource{kind: KindOAuth2, next: func(n int) (Token, error) {
		if err := fail(); err != nil {
			return Token{}, err
		}
		return Token{Value: fmt.Sprintf("oauth-token-%d-0123456789", n), ExpiresAt: time.Now().Add(2 * time.Minute), Renewable: true}, nil
	}}
}

// Regression test for a trial's finding: a file holding a second line
// gave a value Go's HTTP client refuses to put in a header; the upstream
// went down as upstream_unavailable, retryable, and the credential stayed
// healthy. Such a value is now `invalid`, naming why (never the value); a
// good value read before is kept; an env injection carries line breaks.
func TestUnsendableValue(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	const bad = "tok-0123456789abcdef\nsecond line of output"
	src, set := settableSource(bad)
	c, log := newTestCredential(CredentialConfig{}, src, LifecycleConfig{}, nil)
	err := c.Load(ctx)
	if st := c.Status(); err == nil || st != StatusInvalid || c.Value() != "" {
		t.Fatalf("a value with a line break: %v, %v, value %q; want invalid, no value", err, st, c.Value())
	}
	p := c.Problem()
	if p == nil || !strings.Contains(p.Error(), "line break") || !strings.Contains(p.Error(), "Authorization") || strings.Contains(p.Error(), "second line") {
		t.Errorf("problem %v; want the line break and the header named, not the value", p)
	}
	set("good-0123456789abcdef")
	if _, err := c.Renew(ctx, TriggerFile); err != nil || c.Status() != StatusHealthy {
		t.Fatalf("a good value: %v, %v; want healthy", err, c.Status())
	}
	set("good-0123456789abcdef\r\nX-Other: 1")
	if _, err := c.Renew(ctx, TriggerFile); err == nil || c.Value() != "good-0123456789abcdef" || c.Status() != StatusHealthy {
		t.Errorf("a bad rotation: %v, value %q, %v; want an error, the good value kept", err, c.Value(), c.Status())
	}
	if evs := log.all(); len(evs) == 0 || evs[len(evs)-1].Kind != EventRejectedRotation {
		t.Errorf("events %v; want a rejected_rotation last", log.kinds(time.Time{}))
	}

	envSrc, _ := settableSource("-----BEGIN KEY-----\nabc\n-----END KEY-----")
	ce, _ := newTestCredential(CredentialConfig{Inject: InjectConfig{Env: "KEY"}}, envSrc, LifecycleConfig{}, nil)
	if err := ce.Load(ctx); err != nil || ce.Status() != StatusHealthy {
		t.Errorf("a multi-line value for an env injection: %v, %v; want healthy", err, ce.Status())
	}
}

// Regression test for a trial's finding: a peer replica's rate limit
// showed in this replica's health as retryable: false (the call's own was
// true).
func TestPeerLimitRetryable(t *testing.T) {
	t.Parallel()
	src, _ := settableSource("peer-limit-0123456789")
	c, _ := newTestCredential(CredentialConfig{}, src, LifecycleConfig{}, nil)
	if err := c.Load(t.Context()); err != nil {
		t.Fatal(err)
	}
	c.ReportPeerLimited(time.Now().Add(30*time.Second), Failure{Provider: "github"})
	le := c.Snapshot(false).LastError
	if le == nil || !le.Retryable || le.RetryAfterSeconds == nil || le.Subtype != SubtypeRateLimitReached {
		t.Errorf("last error %+v; want rate_limit_reached, retryable, with retry_after_seconds", le)
	}
}
