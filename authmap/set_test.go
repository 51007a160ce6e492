package authmap

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/google/go-cmp/cmp"
)

func envOptions(env map[string]string) *SetOptions {
	return &SetOptions{Sources: &SourceOptions{LookupEnv: func(k string) (string, bool) {
		v, ok := env[k]
		return v, ok
	}}}
}

// Regression test for issue 7 (reloads keep state): Apply keeps the
// Credential of an unchanged config (value, status, history and all),
// replaces a changed one, drops a removed one, and changes nothing when any
// source cannot be built.
func TestSetApplyKeepsUnchanged(t *testing.T) {
	t.Parallel()
	env := map[string]string{"A": "value-a", "B": "value-b", "C": "value-c"}
	s := NewSet(envOptions(env))
	cfgs := map[string]CredentialConfig{
		"a": {Source: SourceConfig{Env: "A"}},
		"b": {Source: SourceConfig{Env: "B"}},
	}
	if err := s.Apply(LifecycleConfig{}, cfgs); err != nil {
		t.Fatal(err)
	}
	if err := s.Load(t.Context()); err != nil {
		t.Fatal(err)
	}
	a, b := s.Get("a"), s.Get("b")
	a.Report(SubtypeCredentialRevoked, "value-a")

	next := map[string]CredentialConfig{
		"a": {Source: SourceConfig{Env: "A"}},
		"b": {Source: SourceConfig{Env: "B"}, Inject: InjectConfig{Header: "X-Key"}},
		"c": {Source: SourceConfig{Env: "C"}},
	}
	if err := s.Apply(LifecycleConfig{CheckInterval: time.Minute}, next); err != nil {
		t.Fatal(err)
	}
	if s.Get("a") != a || s.Get("a").Status() != StatusRevoked {
		t.Error("the unchanged credential was replaced or lost its status")
	}
	if s.Get("b") == b || s.Get("b").Loaded() {
		t.Error("the changed credential was kept")
	}
	if diff := cmp.Diff([]string{"value-b"}, s.Get("b").Knowledge().Secrets); diff != "" {
		t.Errorf("the replacement does not redact what the old one held (-want +got):\n%s", diff)
	}
	if a.lifecycle().CheckInterval != time.Minute {
		t.Error("the kept credential did not get the new lifecycle")
	}
	if err := s.Load(t.Context()); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"a", "b", "c"}, s.Names()); diff != "" {
		t.Errorf("names mismatch (-want +got):\n%s", diff)
	}
	// A config one source of which cannot be built changes nothing.
	bad := map[string]CredentialConfig{
		"a": {Source: SourceConfig{Env: "A"}},
		"v": {Source: SourceConfig{Vault: &VaultConfig{Address: "http://v", Path: "p", Token: SecretRef{Value: "t"}}}},
	}
	err := s.Apply(LifecycleConfig{}, bad)
	if err == nil || err.Error() != "credentials.v.source.vault: this build cannot open vault sources" {
		t.Errorf("Apply with an unbuildable source: %v", err)
	}
	if diff := cmp.Diff([]string{"a", "b", "c"}, s.Names()); diff != "" {
		t.Errorf("a failed Apply changed the set (-want +got):\n%s", diff)
	}
	if err := s.Apply(LifecycleConfig{}, map[string]CredentialConfig{"c": next["c"]}); err != nil {
		t.Fatal(err)
	}
	if s.Get("a") != nil || s.Get("c") == nil {
		t.Errorf("after dropping a and b: %v", s.Names())
	}
	if _, err := s.Reload(t.Context(), "a", TriggerAdmin); !errors.Is(err, ErrUnknownCredential) {
		t.Errorf("Reload of a dropped credential: %v", err)
	}
	// Find still has it, for the upstreams that bound it, until the
	// reload forgets it.
	if s.Find("a") == nil || s.Find("c") == nil {
		t.Error("Find lost a credential the last change dropped")
	}
	s.ForgetRetired()
	if s.Find("a") != nil || s.Find("c") == nil {
		t.Error("after ForgetRetired, Find still has a dropped credential")
	}
}

// Regression test for issue 7 (pre-flight, acceptance 7 at the leaf): with one
// credential missing and one expired, fail_on expired refuses, naming both
// with their status and why; fail_on never starts degraded.
func TestSetProblems(t *testing.T) {
	t.Parallel()
	s := NewSet(envOptions(map[string]string{"OK": "fine-value"}))
	err := s.Apply(LifecycleConfig{}, map[string]CredentialConfig{
		"good":    {Source: SourceConfig{Env: "OK"}},
		"gone":    {Source: SourceConfig{Env: "NOT_SET"}},
		"old":     {Source: SourceConfig{Value: "an-old-value"}, ExpiresAt: time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC)},
		"soonish": {Source: SourceConfig{Value: "a-new-value"}, ExpiresAt: time.Now().Add(10 * time.Minute)},
	})
	if err != nil {
		t.Fatal(err)
	}
	loadErr := s.Load(t.Context())
	if loadErr == nil || !strings.Contains(loadErr.Error(), `credential "gone"`) {
		t.Errorf("Load: %v", loadErr)
	}
	tests := []struct {
		failOn FailOn
		want   []string
	}{
		{FailOnExpired, []string{
			`credential "gone": missing: environment variable NOT_SET is not set: credential missing`,
			`credential "old": expired: expired at 2020-01-01T00:00:00Z`}},
		{FailOnExpiring, []string{
			`credential "gone": missing: environment variable NOT_SET is not set: credential missing`,
			`credential "old": expired: expired at 2020-01-01T00:00:00Z`,
			`credential "soonish": expiring`}},
		{FailOnNever, nil},
	}
	for _, tt := range tests {
		err := s.Problems(StartupConfig{FailOn: tt.failOn})
		var got []string
		if err != nil {
			got = strings.Split(err.Error(), "\n")
		}
		if diff := cmp.Diff(tt.want, got); diff != "" {
			t.Errorf("fail_on %s mismatch (-want +got):\n%s", tt.failOn, diff)
		}
	}
}

// watchSource is a Watcher that reports whether its watch runs.
type watchSource struct {
	fakeSource
	mu      sync.Mutex
	running int
	started int
}

func (w *watchSource) Watch(ctx context.Context, onChange func()) error {
	w.mu.Lock()
	w.running++
	w.started++
	w.mu.Unlock()
	<-ctx.Done()
	w.mu.Lock()
	w.running--
	w.mu.Unlock()
	return nil
}

func (w *watchSource) state() (running, started int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.running, w.started
}

// Run starts each credential's watch, loads those not loaded, starts and stops
// watches as Apply adds and drops credentials, and stops them all when done.
func TestSetRunFollowsApply(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		var mu sync.Mutex
		srcs := map[string]*watchSource{}
		get := func(n string) *watchSource {
			mu.Lock()
			defer mu.Unlock()
			return srcs[n]
		}
		s := NewSet(&SetOptions{Sources: &SourceOptions{Openers: map[string]OpenFunc{
			KindFile: func(_ string, cfg SourceConfig, _ *SourceOptions) (Source, error) {
				n := strings.TrimPrefix(cfg.File, "/run/")
				ws := &watchSource{fakeSource: fakeSource{kind: KindFile, next: func(int) (Token, error) { return Token{Value: "v-" + n}, nil }}}
				mu.Lock()
				srcs[n] = ws
				mu.Unlock()
				return ws, nil
			},
		}}})
		apply := func(names ...string) {
			t.Helper()
			m := map[string]CredentialConfig{}
			for _, n := range names {
				m[n] = CredentialConfig{Source: SourceConfig{File: "/run/" + n}}
			}
			if err := s.Apply(LifecycleConfig{}, m); err != nil {
				t.Fatal(err)
			}
		}
		apply("a", "b")
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan struct{})
		go func() {
			defer close(done)
			_ = s.Run(ctx)
		}()
		synctest.Wait()
		for _, n := range []string{"a", "b"} {
			if r, _ := get(n).state(); r != 1 {
				t.Errorf("%s: %d watches running, want 1", n, r)
			}
			if v := s.Get(n).Value(); v != "v-"+n {
				t.Errorf("%s not loaded by Run: %q", n, v)
			}
		}
		apply("b", "c")
		synctest.Wait()
		for n, want := range map[string]int{"a": 0, "b": 1, "c": 1} {
			if r, _ := get(n).state(); r != want {
				t.Errorf("after Apply: %s has %d watches running, want %d", n, r, want)
			}
		}
		if _, started := srcs["b"].state(); started != 1 {
			t.Errorf("the kept credential's watch was restarted (%d starts)", started)
		}
		cancel()
		<-done
		for n, ws := range srcs {
			if r, _ := ws.state(); r != 0 {
				t.Errorf("after Run: %s has %d watches running", n, r)
			}
		}
	})
}

// A tool probe is the gateway's: the set calls it with the credential's name and probe config.
func TestSetToolProbe(t *testing.T) {
	t.Parallel()
	var got []string
	opts := envOptions(map[string]string{"T": "tool-probed-value"})
	opts.ToolProbe = func(_ context.Context, name string, p ProbeConfig, value string) (ProbeResult, error) {
		got = append(got, name+" "+p.Tool+" "+value)
		return ProbeResult{Failure: &Failure{Type: TypeAuthFailure, Subtype: SubtypeCredentialInvalid}}, nil
	}
	s := NewSet(opts)
	if err := s.Apply(LifecycleConfig{}, map[string]CredentialConfig{"t": {Source: SourceConfig{Env: "T"}, Probe: ProbeConfig{Tool: "get_me"}}}); err != nil {
		t.Fatal(err)
	}
	_ = s.Load(t.Context())
	if diff := cmp.Diff([]string{"t get_me tool-probed-value"}, got); diff != "" {
		t.Errorf("probe calls mismatch (-want +got):\n%s", diff)
	}
	if st := s.Get("t").Status(); st != StatusInvalid {
		t.Errorf("status %v, want invalid", st)
	}
}

// Issue 8 (hot reload): a staged change is loaded before it is in force. The
// set keeps serving the old credential while the new one loads; the new one
// carries the old one's generation forward, so its first value is a change;
// a staged credential the startup policy refuses is reported; Commit after
// another change is refused.
func TestSetStageLoadCommit(t *testing.T) {
	t.Parallel()
	env := map[string]string{"A": "value-a", "B": "value-b2"}
	opts := envOptions(env)
	log := &eventLog{}
	opts.OnEvent = log.add
	s := NewSet(opts)
	if err := s.Apply(LifecycleConfig{}, map[string]CredentialConfig{"a": {Source: SourceConfig{Env: "A"}}}); err != nil {
		t.Fatal(err)
	}
	if err := s.Load(t.Context()); err != nil {
		t.Fatal(err)
	}
	// A staged change's events wait for its Commit: a change never
	// committed (a rejected reload) publishes, counts and pages nothing
	// about credentials that were never in force.
	credentials := func() []string {
		var names []string
		for _, e := range log.all() {
			names = append(names, e.Credential+" "+string(e.Kind))
		}
		return names
	}
	if got := credentials(); len(got) == 0 {
		t.Fatal("the set in force published no event")
	}
	before := len(credentials())
	rejected, err := s.Stage(LifecycleConfig{}, map[string]CredentialConfig{"a": {Source: SourceConfig{Env: "A"}}, "m": {Source: SourceConfig{Env: "MISSING"}}})
	if err != nil {
		t.Fatal(err)
	}
	_ = rejected.Load(t.Context(), TriggerConfig)
	if got := credentials(); len(got) != before {
		t.Errorf("a change staged and never committed published %q", got[before:])
	}
	old := s.Get("a")
	oldGen := old.Generation()

	st, err := s.Stage(LifecycleConfig{}, map[string]CredentialConfig{
		"a": {Source: SourceConfig{Env: "B"}},       // changed
		"m": {Source: SourceConfig{Env: "MISSING"}}, // new, without a value
	})
	if err != nil {
		t.Fatal(err)
	}
	if s.Get("a") != old || s.Get("m") != nil {
		t.Fatal("Stage changed the set")
	}
	var names []string
	for _, c := range st.Fresh() {
		names = append(names, c.Name())
	}
	if diff := cmp.Diff([]string{"a", "m"}, names); diff != "" {
		t.Errorf("fresh mismatch (-want +got):\n%s", diff)
	}
	err = st.Load(t.Context(), TriggerConfig)
	if err == nil || !strings.Contains(err.Error(), `credential "m"`) {
		t.Errorf("staged load error = %v, want it to name m", err)
	}
	if p := st.Problems(StartupConfig{}); p == nil || !strings.Contains(p.Error(), `credential "m"`) || strings.Contains(p.Error(), `"a"`) {
		t.Errorf("staged problems = %v, want m only", p)
	}
	if s.Get("a").Value() != "value-a" {
		t.Error("a staged load reached the set in force")
	}
	if got := credentials(); len(got) != before {
		t.Errorf("a change staged, not yet committed, published %q", got[before:])
	}
	if err := st.Commit(); err != nil {
		t.Fatal(err)
	}
	got := credentials()[before:]
	if !slices.ContainsFunc(got, func(s string) bool { return strings.HasPrefix(s, "m ") }) || !slices.ContainsFunc(got, func(s string) bool { return strings.HasPrefix(s, "a ") }) {
		t.Errorf("after Commit the staged credentials' events = %q, want those of a and m", got)
	}
	a := s.Get("a")
	if a == old || a.Value() != "value-b2" {
		t.Fatalf("after Commit a = %q (same object %v)", a.Value(), a == old)
	}
	if a.Generation() <= oldGen {
		t.Errorf("the replacement's generation %d does not follow the old one's %d", a.Generation(), oldGen)
	}

	// A change staged before another one went in force is refused.
	st2, err := s.Stage(LifecycleConfig{}, map[string]CredentialConfig{})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Apply(LifecycleConfig{}, map[string]CredentialConfig{"a": {Source: SourceConfig{Env: "A"}}}); err != nil {
		t.Fatal(err)
	}
	if err := st2.Commit(); !errors.Is(err, ErrStaleStage) {
		t.Errorf("stale Commit = %v, want ErrStaleStage", err)
	}
	if s.Get("a") == nil {
		t.Error("a stale Commit changed the set")
	}
}

// Regression test for a trial's finding: SIGHUP asked the token endpoint
// for a new token for every OAuth credential; a client whose secret the
// provider had just changed was rejected (invalid_client), and the
// credential held back while its token still worked. A reload of every
// credential now keeps a good token, unless its grant changed at its
// source; the admin reload of the one credential still asks.
func TestReloadAllKeepsGoodToken(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		var rejecting atomic.Bool
		src := &grantSource{fakeSource: &fakeSource{kind: KindOAuth2, next: func(n int) (Token, error) {
			if rejecting.Load() {
				return Token{}, fmt.Errorf("token endpoint: invalid_client: %w", ErrClientRejected)
			}
			return Token{Value: fmt.Sprintf("oauth-token-%d-0123456789", n), ExpiresAt: time.Now().Add(time.Hour), Renewable: true}, nil
		}}}
		s := NewSet(&SetOptions{Sources: &SourceOptions{Openers: map[string]OpenFunc{
			KindOAuth2: func(string, SourceConfig, *SourceOptions) (Source, error) { return src, nil },
		}}})
		cfg := CredentialConfig{Source: SourceConfig{OAuth2: &OAuth2Config{TokenURL: "https://idp.example/token", ClientID: "gw", ClientSecret: SecretRef{Value: "client-secret-0123456789"}}}}
		if err := s.Apply(LifecycleConfig{}, map[string]CredentialConfig{"oc": cfg}); err != nil {
			t.Fatal(err)
		}
		ctx := t.Context()
		if err := s.Load(ctx); err != nil {
			t.Fatal(err)
		}
		c := s.Get("oc")
		rejecting.Store(true) // the provider changed the client's secret
		if err := s.ReloadAll(ctx, TriggerSignal); err != nil {
			t.Errorf("SIGHUP: %v, want the good token kept", err)
		}
		if n, st := len(src.times()), c.Status(); n != 1 || st != StatusHealthy || c.Value() != "oauth-token-1-0123456789" {
			t.Errorf("after SIGHUP: %d token requests, %v; want 1, healthy, the first token kept", n, st)
		}
		// A grant changed at its source is taken by SIGHUP.
		rejecting.Store(false)
		src.changed.Store(true)
		if err := s.ReloadAll(ctx, TriggerSignal); err != nil || len(src.times()) != 2 || c.Value() != "oauth-token-2-0123456789" {
			t.Errorf("SIGHUP after a grant change: %v, %d token requests; want a new token", err, len(src.times()))
		}
		src.changed.Store(false)
		// The admin endpoint's reload of the one credential asks.
		if _, err := s.Reload(ctx, "oc", TriggerAdmin); err != nil || len(src.times()) != 3 {
			t.Errorf("admin reload: %v, %d token requests; want a third", err, len(src.times()))
		}
	})
}
