package gateway

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
	"github.com/rs/zerolog"

	"github.com/credgate/credgate/authmap"
	"github.com/credgate/credgate/internal/redistest"
)

// Tests of issue 11 (replicas sharing state), in process: several gateways
// share a real redis-server of the test's own, each under the test's key
// prefix, as replicas behind a load balancer would.

const testStateKey = "test-encryption-key-0123456789"

// stateYAML is the state section that makes a gateway share state in srv
// under prefix.
func stateYAML(srv *redistest.Server, prefix string, key bool) string {
	s := fmt.Sprintf("state:\n  redis: {url: %q, key_prefix: %q, timeout: 1s", srv.URL, prefix)
	if key {
		s += ", encryption_key: " + testStateKey
	}
	return s + "}\n"
}

// replicas starts n gateways for yaml sharing state in srv under one
// prefix, each with an agent session.
func replicas(t *testing.T, ctx context.Context, n int, srv *redistest.Server, yaml string, env map[string]string) ([]*Server, []*mcp.ClientSession, []string) {
	t.Helper()
	prefix := redistest.Prefix(t)
	var gs []*Server
	var css []*mcp.ClientSession
	var urls []string
	for i := range n {
		w := zerolog.NewTestWriter(t)
		log := zerolog.New(w).Level(zerolog.WarnLevel).With().Int("replica", i).Logger()
		lookup := func(k string) (string, bool) { v, ok := env[k]; return v, ok }
		g := startCredServer(t, ctx, stateYAML(srv, prefix, true)+yaml, &Options{Logger: &log, ReconnectMin: 10 * time.Millisecond,
			ReconnectMax: 50 * time.Millisecond, Sources: &authmap.SourceOptions{LookupEnv: lookup}})
		hs := httptest.NewServer(g.Handler())
		t.Cleanup(hs.Close)
		c := mcp.NewClient(&mcp.Implementation{Name: "agent", Version: "1"}, nil)
		cs, err := c.Connect(ctx, &mcp.StreamableClientTransport{Endpoint: hs.URL + "/mcp"}, nil)
		if err != nil {
			t.Fatalf("connect agent: %v", err)
		}
		t.Cleanup(func() { _ = cs.Close() })
		gs, css, urls = append(gs, g), append(css, cs), append(urls, hs.URL)
	}
	// A notice needs the peers subscribed: wait until each has caught up once.
	for _, g := range gs {
		waitFor(t, ctx, func() bool { return g.Health().State.Status == "ok" })
	}
	return gs, css, urls
}

// Regression test for issue 11, acceptance 1 (in process): only replica A
// sees the rejection; B learns the credential is revoked from A's fact and
// refuses its calls typed without sending the dead token.
func TestSharedRevocation(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	srv := redistest.Start(t)
	up := newBearerUpstream(t, "echo")
	up.accept("shared-token-0123456789")
	gs, css, _ := replicas(t, ctx, 2, srv, tokConfig("", "source: {value: shared-token-0123456789}", up.url()), nil)
	a, b := gs[0], gs[1]
	callOK(t, ctx, css[0], "api__echo")
	callOK(t, ctx, css[1], "api__echo")

	up.refuse("shared-token-0123456789", rejectRevoked)
	if f := failureOf(t, callTool(t, ctx, css[0], "api__echo")); f.Subtype != authmap.SubtypeCredentialRevoked {
		t.Fatalf("A's call: %+v, want credential_revoked", f)
	}
	if st := a.Credentials().Get("tok").Status(); st != authmap.StatusRevoked {
		t.Fatalf("A: status %s, want revoked", st)
	}
	sent := len(up.calls())
	waitFor(t, ctx, func() bool { return b.Credentials().Get("tok").Status() == authmap.StatusRevoked })
	f := failureOf(t, callTool(t, ctx, css[1], "api__echo"))
	if f.Subtype != authmap.SubtypeCredentialRevoked || f.Credential != "tok" {
		t.Errorf("B's call: %+v, want credential_revoked naming tok", f)
	}
	// As A's refusal: the provider, its code and the recovery (peers'
	// refusals lacked them, found trying replicas).
	fa := failureOf(t, callTool(t, ctx, css[0], "api__echo"))
	if f.Recovery == "" || f.Recovery != fa.Recovery || f.Provider != fa.Provider || f.ProviderCode != fa.ProviderCode {
		t.Errorf("B's refusal %+v; want A's provider, code and recovery: %+v", f, fa)
	}
	if n := len(up.calls()) - sent; n != 0 {
		t.Errorf("B sent the dead token %d times after A's fact, want 0", n)
	}
	if h := b.Health().Credentials["tok"]; h.Status != authmap.StatusRevoked {
		t.Errorf("B's health: credential %s, want revoked", h.Status)
	}
}

// Regression test for issue 11: a breaker A opens for a known time (a rate
// limit's Retry-After) is honoured by B, whose calls are refused without
// reaching the upstream.
func TestSharedBreakerFact(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	srv := redistest.Start(t)
	up := newFaultUpstream(t)
	gs, css, _ := replicas(t, ctx, 2, srv, tokConfig("", "source: {value: live-token-0123456789}", up.url()), nil)
	callOK(t, ctx, css[1], "api__echo")
	up.fault.Store(&httpFailure{status: http.StatusTooManyRequests, header: map[string]string{"Retry-After": "60"}, body: `{"message":"API rate limit exceeded"}`})
	fa := failureOf(t, callTool(t, ctx, css[0], "api__echo"))
	if fa.Subtype != authmap.SubtypeRateLimitReached || fa.Provider == "" {
		t.Fatalf("A's call: %+v, want rate_limit_reached naming its provider", fa)
	}
	waitFor(t, ctx, func() bool { return breakerState(gs[1], "api", "tok").State == "open" })
	reached := up.reached.Load()
	f := failureOf(t, callTool(t, ctx, css[1], "api__echo"))
	if f.Subtype != authmap.SubtypeRateLimitReached || f.RetryAfterSeconds == nil || *f.RetryAfterSeconds < 50 ||
		f.Provider != fa.Provider || f.Recovery != authmap.RecoveryWait {
		t.Errorf("B's call: %+v, want rate_limit_reached from %s with about 60s to wait", f, fa.Provider)
	}
	// B shows what A shows: the credential rate limited, so degraded (it
	// said healthy and ok beside the open breaker).
	if st := gs[1].Credentials().Get("tok").Status(); st != authmap.StatusRateLimited || gs[1].Health().Status != HealthDegraded {
		t.Errorf("B: credential %s, health %s; want rate_limited, degraded", st, gs[1].Health().Status)
	}
	if n := up.reached.Load() - reached; n != 0 {
		t.Errorf("B's call reached the upstream %d times, want 0", n)
	}
}

// Regression test for issue 11, acceptance 2 (in process): an admin reload
// on A makes B re-read the credential; B's next call carries the new value.
func TestSharedReloadNotice(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	srv := redistest.Start(t)
	path := tokenFile(t, "first-token-0123456789")
	up := newBearerUpstream(t, "echo")
	up.accept("first-token-0123456789")
	// exec is not watched: only a reload re-reads it.
	gs, css, urls := replicas(t, ctx, 2, srv, tokConfig("admin: {token: admin-token-0123456789}\n",
		"source: {exec: {command: [cat, "+path+"]}}", up.url()), nil)
	callOK(t, ctx, css[1], "api__echo")
	up.accept("second-token-0123456789")
	writeFile(t, path, "second-token-0123456789")
	if code, body := post(t, urls[0]+"/admin/credentials/tok/reload", map[string]string{"Authorization": "Bearer admin-token-0123456789"}, ""); code != http.StatusOK {
		t.Fatalf("reload on A: %d %s", code, body)
	}
	waitFor(t, ctx, func() bool { return gs[1].Credentials().Get("tok").Value() == "second-token-0123456789" })
	callOK(t, ctx, css[1], "api__echo")
	if tok := up.lastToken(); tok != "second-token-0123456789" {
		t.Errorf("B's call carried %q, want the new value", tok)
	}
	if kinds := eventKinds(gs[1], "tok"); !strings.Contains(strings.Join(kinds, ","), "rotated") {
		t.Errorf("B's events %v, want a rotation", kinds)
	}
}

// Regression test for issue 11, acceptance 5 (in process): a replica that
// starts while an upstream refuses its credential lists the upstream's
// tools from the catalog another replica cached, and fails them typed.
// Also after Redis restarted empty (found trying the gateway with replicas):
// republish put back credential and breaker facts but not
// catalog:<upstream>, so such a replica listed none of its tools; the
// replica that holds a complete listing now puts it back.
func TestSharedCatalogCache(t *testing.T) {
	t.Parallel()
	for _, restart := range []bool{false, true} {
		t.Run(fmt.Sprintf("redis restarted %v", restart), func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
			defer cancel()
			srv := redistest.Start(t)
			prefix := redistest.Prefix(t)
			up := newBearerUpstream(t, "echo", "add")
			up.accept("token-0123456789")
			cfg := stateYAML(srv, prefix, false) + tokConfig("", "source: {value: token-0123456789}", up.url())
			a := newTestGateway(t, ctx, cfg)
			cached := func() bool {
				es, err := a.shared.store.Get(ctx, "catalog:api")
				return err == nil && len(es) == 1
			}
			waitFor(t, ctx, cached) // A's listing is cached
			if restart {
				srv.Stop()
				waitFor(t, ctx, func() bool { return a.Health().State.Status == "degraded" })
				srv.Restart()           // empty: a restart without persistence
				waitFor(t, ctx, cached) // A puts its listing back
			}
			up.refuse("token-0123456789", rejectRevoked)
			b, cs := startGateway(t, ctx, cfg)
			if h := b.Health().Upstreams["api"]; h.Connected {
				t.Fatalf("B connected to an upstream that refuses its credential")
			}
			got := toolNames(t, ctx, cs)
			if want := []string{"api__add", "api__echo"}; strings.Join(got, ",") != strings.Join(want, ",") {
				t.Errorf("B lists %v, want %v from the cache", got, want)
			}
			f := failureOf(t, callTool(t, ctx, cs, "api__echo"))
			if f.Type != authmap.TypeAuthFailure || f.Subtype != authmap.SubtypeCredentialRevoked {
				t.Errorf("B's call to a cached tool: %+v, want credential_revoked", f)
			}
		})
	}
}

// rotatingTokenServer is an OAuth token endpoint that rotates refresh
// tokens, as the pinned oidc-provider does: each refresh token works once,
// and it counts refreshes running at once and reuses of a spent token.
type rotatingTokenServer struct {
	*httptest.Server
	ttl time.Duration

	mu         sync.Mutex
	live       string // the one refresh token that works
	n          int
	issued     map[string]bool // access tokens
	inFlight   int
	maxFlight  int
	replays    int
	refreshes  int
	accessSeen atomic.Int64
}

func newRotatingTokenServer(t *testing.T, ttl time.Duration) *rotatingTokenServer {
	s := &rotatingTokenServer{ttl: ttl, live: "rt-0-abcdefghijklmnop", issued: map[string]bool{}}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_ = r.ParseForm()
		s.mu.Lock()
		s.inFlight++
		s.maxFlight = max(s.maxFlight, s.inFlight)
		s.mu.Unlock()
		time.Sleep(20 * time.Millisecond) // a token endpoint's latency, so overlaps show
		s.mu.Lock()
		defer s.mu.Unlock()
		s.inFlight--
		w.Header().Set("Content-Type", "application/json")
		if r.Form.Get("refresh_token") != s.live {
			s.replays++
			w.WriteHeader(http.StatusBadRequest)
			_, _ = w.Write([]byte(`{"error":"invalid_grant","error_description":"grant request is invalid"}`))
			return
		}
		s.n++
		s.refreshes++
		s.live = fmt.Sprintf("rt-%d-abcdefghijklmnop", s.n)
		at := fmt.Sprintf("at-%d-abcdefghijklmnop", s.n)
		s.issued[at] = true
		_ = json.NewEncoder(w).Encode(map[string]any{"access_token": at, "token_type": "Bearer", "expires_in": int(s.ttl / time.Second), "refresh_token": s.live})
	}))
	t.Cleanup(s.Close)
	return s
}

func (s *rotatingTokenServer) valid(tok string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.issued[tok]
}

// Regression test for issue 11, acceptance 3 (in process): three replicas
// of an OAuth credential whose provider rotates refresh tokens and issues
// 2s access tokens: one refresh at a time, never a spent refresh token
// reused, every call served.
func TestSharedRenewalsOneAtATime(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	srv := redistest.Start(t)
	ts := newRotatingTokenServer(t, 2*time.Second)
	up := newBearerUpstream(t, "echo")
	inner := up.http.Config.Handler
	up.http.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer "); ok && ts.valid(tok) {
			up.accept(tok)
		}
		inner.ServeHTTP(w, r)
	})
	cred := fmt.Sprintf("source: {oauth2: {token_url: %q, client_id: gw, client_secret: client-secret-0123456789, refresh_token: rt-0-abcdefghijklmnop}}", ts.URL)
	gs, css, _ := replicas(t, ctx, 3, srv, tokConfig("", cred, up.url()), nil)
	deadline := time.Now().Add(8 * time.Second)
	var wg sync.WaitGroup
	var failures atomic.Int64
	var calls atomic.Int64
	for _, cs := range css {
		wg.Go(func() {
			for time.Now().Before(deadline) && ctx.Err() == nil {
				res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "api__echo", Arguments: map[string]any{"text": "x"}})
				calls.Add(1)
				if err != nil || res.IsError {
					failures.Add(1)
				}
				select {
				case <-time.After(50 * time.Millisecond): // an agent's pace
				case <-ctx.Done():
				}
			}
		})
	}
	wg.Wait()
	ts.mu.Lock()
	defer ts.mu.Unlock()
	if ts.replays > 0 {
		t.Errorf("%d refreshes spent a refresh token already used", ts.replays)
	}
	if ts.maxFlight > 1 {
		t.Errorf("%d refreshes ran at once, want 1", ts.maxFlight)
	}
	if ts.refreshes < 4 {
		t.Errorf("%d refreshes over 8s of 2s tokens, want renewals", ts.refreshes)
	}
	if n := failures.Load(); n > 0 {
		t.Errorf("%d of %d calls failed", n, calls.Load())
	}
	t.Logf("%d calls, %d refreshes for 3 replicas", calls.Load(), ts.refreshes)
	// What the replicas keep in Redis holds no token or secret in the clear.
	entries, err := gs[0].shared.store.Get(ctx, append(gs[0].shared.keys(), "catalog:api")...)
	if err != nil {
		t.Fatal(err)
	}
	found := map[string]bool{}
	for _, e := range entries {
		found[e.Key] = true
		for _, secret := range []string{"abcdefghijklmnop", "client-secret-0123456789"} {
			if strings.Contains(string(e.Value), secret) {
				t.Errorf("%s holds a secret in the clear: %s", e.Key, e.Value)
			}
		}
	}
	if !found["tokens:tok"] {
		t.Errorf("no shared token set in Redis (keys %v)", found)
	}
}

// Regression test for issue 11: with Redis stopped, calls carry on without
// waiting on it, health shows the state degraded (naming no secret), and a
// fact published meanwhile reaches the peer once Redis is back.
func TestSharedOutage(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	srv := redistest.Start(t)
	up := newBearerUpstream(t, "echo")
	up.accept("shared-token-0123456789")
	gs, css, _ := replicas(t, ctx, 2, srv, tokConfig("", "source: {value: shared-token-0123456789}", up.url()), nil)
	srv.Stop()
	for _, g := range gs {
		waitFor(t, ctx, func() bool { return g.Health().State.Status == "degraded" })
	}
	for range 5 {
		start := time.Now()
		callOK(t, ctx, css[0], "api__echo")
		callOK(t, ctx, css[1], "api__echo")
		if d := time.Since(start); d > 5*time.Second {
			t.Errorf("two calls took %s with Redis down", d)
		}
	}
	h := gs[0].Health()
	if h.Status != HealthDegraded || h.State.Backend != "redis" || h.State.LastError == "" || h.State.Since == nil {
		t.Errorf("health while Redis is down: status %s, state %+v; want degraded with last_error", h.Status, h.State)
	}
	js, _ := json.Marshal(h)
	if strings.Contains(string(js), testStateKey) || strings.Contains(string(js), "shared-token-0123456789") {
		t.Errorf("health shows a secret: %s", js)
	}
	// The outage is an event and a metric too (it showed in /health only).
	wantSample(t, gather(t, gs[0]), "credgate_shared_state_up", nil, 0)
	// A stopped store refuses connections; the client dials again until
	// its bound runs out, which read as a bare "context deadline exceeded".
	if le := h.State.LastError; strings.Contains(le, "deadline") && !strings.Contains(le, "state.redis.timeout") {
		t.Errorf("last_error %q; want it to say the store did not answer in time", le)
	}
	stateEvents := func() []string {
		var kinds []string
		for _, e := range gs[0].EventLog() {
			if e.Type == EventState {
				kinds = append(kinds, e.Kind)
			}
		}
		return kinds
	}
	if k := stateEvents(); !slices.Equal(k, []string{"degraded"}) {
		t.Errorf("state events while Redis is down: %v; want [degraded]", k)
	}
	// A learns the credential is revoked while Redis is down.
	up.refuse("shared-token-0123456789", rejectRevoked)
	if f := failureOf(t, callTool(t, ctx, css[0], "api__echo")); f.Subtype != authmap.SubtypeCredentialRevoked {
		t.Fatalf("A's call: %+v, want credential_revoked", f)
	}
	srv.Restart() // empty: a restart without persistence
	for _, g := range gs {
		waitFor(t, ctx, func() bool { return g.Health().State.Status == "ok" })
	}
	if k := stateEvents(); !slices.Equal(k, []string{"degraded", "ok"}) {
		t.Errorf("state events after Redis is back: %v; want [degraded ok]", k)
	}
	wantSample(t, gather(t, gs[0]), "credgate_shared_state_up", nil, 1)
	waitFor(t, ctx, func() bool { return gs[1].Credentials().Get("tok").Status() == authmap.StatusRevoked })
}

// TestStateConfig: the state section's keys are checked, each problem
// naming its key, and a password in the URL is never shown.
func TestStateConfig(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		yaml string
		want []string
	}{
		{"state: {redis: {}}", []string{"state.redis.url: missing"}},
		{"state: {redis: {url: 'http://user:hunter2-secret@x'}}", []string{"state.redis.url: invalid Redis URL"}},
		{"state: {redis: {url: 'redis://x:6379', timeout: 30s}}", []string{"state.redis.timeout: 30s is too long"}},
		{"state: {redis: {url: 'redis://x:6379', timeout: -1s}}", []string{"state.redis.timeout: negative"}},
		{"state: {redis: {url: 'redis://x:6379', key_prefix: 'a b'}}", []string{"state.redis.key_prefix: contains a space"}},
		{"state: {redis: {url: 'redis://x:6379', tiemout: 1s}}", []string{"state.redis.tiemout: unknown key (did you mean timeout?)"}},
		{"state: {memcached: {}}", []string{"state.memcached: unknown key"}},
	} {
		_, err := ParseConfig([]byte(tc.yaml), nil)
		if err == nil {
			t.Errorf("%s: accepted", tc.yaml)
			continue
		}
		for _, w := range tc.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%s: error %q, want %q", tc.yaml, err, w)
			}
		}
		if strings.Contains(err.Error(), "hunter2-secret") {
			t.Errorf("%s: the error shows the password: %v", tc.yaml, err)
		}
	}
	// A key written inline is checked with the config (validate passed a
	// 5-byte one that serve then refused); one read from a source, when
	// the gateway starts.
	if _, err := ParseConfig([]byte("state: {redis: {url: 'redis://:pw-0123456789@127.0.0.1:1/0', encryption_key: short}}\nupstreams: {}\n"), nil); err == nil || !strings.Contains(err.Error(), "state.redis.encryption_key: 5 bytes is too short") {
		t.Errorf("a 5-byte encryption key written inline: %v, want too short", err)
	}
	keyFile := filepath.Join(t.TempDir(), "state.key")
	if err := os.WriteFile(keyFile, []byte("short"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := ParseConfig(fmt.Appendf(nil, "state: {redis: {url: 'redis://:pw-0123456789@127.0.0.1:1/0', encryption_key: {file: %q}}}\nupstreams: {}\n", keyFile), nil)
	if err != nil {
		t.Fatalf("valid state section refused: %v", err)
	}
	if _, err := New(cfg, nil); err == nil || !strings.Contains(err.Error(), "state.redis.encryption_key: 5 bytes is too short") {
		t.Errorf("a 5-byte encryption key from a file: %v, want too short", err)
	}
	_ = url.Parse
}

// TestSharedHealthyFactOnlyAfterRejection: a replica that knows of no
// rejection of its credential's value publishes no "healthy" fact when its
// status turns healthy (a rate limit's end, say): landing after a peer's
// revocation, such a fact re-adopted the revoked value on every replica
// (found in review). A restore after a rejection is still published
// (TestSharedRestoreClosesPeerBreaker).
func TestSharedHealthyFactOnlyAfterRejection(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	srv := redistest.Start(t)
	up := newBearerUpstream(t, "echo")
	up.accept("healthy-token-0123456789")
	gs, css, _ := replicas(t, ctx, 1, srv, tokConfig("", "source: {value: healthy-token-0123456789}", up.url()), nil)
	callOK(t, ctx, css[0], "api__echo")
	s := gs[0].shared
	s.credentialFact("tok", true) // what a restore from a rate limit's end calls
	s.mu.Lock()
	_, known := s.facts["tok"]
	sent := s.sent["cred:tok"]
	s.mu.Unlock()
	if known || sent != "" {
		t.Errorf("a healthy fact was published with no rejection known (known %v, sent %q)", known, sent)
	}
}
