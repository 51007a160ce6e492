package gateway

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/credgate/credgate/authmap"
	"github.com/credgate/credgate/internal/redistest"
)

// Tests of credential facts between replicas across restores and Redis
// outages (found trying three replicas on one Redis).

const restoreAdmin = "admin: {token: admin-token-0123456789}\n"

func adminReload(t *testing.T, base, name string) (int, string) {
	t.Helper()
	return post(t, base+"/admin/credentials/"+name+"/reload", map[string]string{"Authorization": "Bearer admin-token-0123456789"}, "")
}

// sharedSettled waits until every replica has caught up with the store
// (it read the store's current version), sent everything it queued, and
// applied or passed over the last put of key: after it, no fact in flight
// can change what a replica knows.
func sharedSettled(t *testing.T, ctx context.Context, gs []*Server, key string) {
	t.Helper()
	store := gs[0].shared.store
	waitFor(t, ctx, func() bool {
		v, err := store.Version(ctx)
		if err != nil {
			return false
		}
		entries, err := store.Get(ctx, key)
		if err != nil {
			return false
		}
		var kv int64
		if len(entries) > 0 {
			kv = entries[0].Version
		}
		for _, g := range gs {
			s := g.shared
			s.mu.Lock()
			done := s.ok && s.last == v && len(s.pending) == 0 && s.seen[key] >= kv
			s.mu.Unlock()
			if !done {
				return false
			}
		}
		return true
	})
}

// Regression test (three replicas, bug 1): the token revoked, one call on
// B opens B's credential breaker "until the credential changes"; the token
// re-authorised and reloaded on A (answered changed: true, healthy). B took
// A's "healthy again" fact for its status only: its health said healthy
// while its breaker stayed open, refusing every call for good (its own
// admin reload and SIGHUP did nothing). Every replica now serves again.
func TestSharedRestoreClosesPeerBreaker(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), 45*time.Second)
	defer cancel()
	srv := redistest.Start(t)
	const tok = "restored-token-0123456789"
	up := newBearerUpstream(t, "echo")
	up.accept(tok)
	gs, css, urls := replicas(t, ctx, 3, srv, tokConfig(restoreAdmin, "source: {value: "+tok+"}", up.url()), nil)
	callOK(t, ctx, css[1], "api__echo")

	up.refuse(tok, rejectInvalid)
	if f := failureOf(t, callTool(t, ctx, css[1], "api__echo")); f.Subtype != authmap.SubtypeCredentialInvalid {
		t.Fatalf("B's call: %+v, want credential_invalid", f)
	}
	if st := breakerState(gs[1], "api", "tok").State; st != "open" {
		t.Fatalf("B's credential breaker is %s, want open", st)
	}
	for _, g := range []*Server{gs[0], gs[2]} {
		waitFor(t, ctx, func() bool { return g.Credentials().Get("tok").Status() == authmap.StatusInvalid })
	}

	up.accept(tok) // re-authorised at the provider
	code, body := adminReload(t, urls[0], "tok")
	var ans struct {
		Changed bool   `json:"changed"`
		Status  string `json:"status"`
	}
	if err := json.Unmarshal([]byte(body), &ans); err != nil || code != http.StatusOK || !ans.Changed || ans.Status != "healthy" {
		t.Fatalf("admin reload on A: %d %s, want 200, changed, healthy", code, body)
	}
	wctx, wcancel := context.WithTimeout(ctx, 15*time.Second)
	defer wcancel()
	for i, g := range gs {
		ok := func() bool {
			st := breakerState(g, "api", "tok").State // "": never used, closed
			return g.Credentials().Get("tok").Status() == authmap.StatusHealthy && (st == "" || st == "closed")
		}
		for !ok() && wctx.Err() == nil {
			select {
			case <-wctx.Done():
			case <-time.After(10 * time.Millisecond):
			}
		}
		if !ok() {
			c := g.Credentials().Get("tok")
			t.Fatalf("replica %d: credential %s (last_error %+v), breaker %+v; want healthy, closed", i, c.Status(), c.Snapshot(false).LastError, breakerState(g, "api", "tok"))
		}
		t.Logf("replica %d: healthy, breaker closed", i)
	}
	for _, cs := range css {
		callOK(t, ctx, cs, "api__echo")
	}
}

// Regression test (three replicas, bug 1): a replica whose credential is
// usable while its breaker still holds the value "until the credential
// changes" (the state a peer's "healthy again" left it in) is tried again
// by an admin reload on itself. The reload found the value unchanged and
// not rejected (changed: false) and left the breaker as it was.
func TestAdminReloadClosesHeldBreaker(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	const tok = "held-token-0123456789"
	g, cs, base, up := valueTokGateway(t, ctx, restoreAdmin, tok)
	up.refuse(tok, rejectInvalid)
	if f := failureOf(t, callTool(t, ctx, cs, "api__echo")); f.Subtype != authmap.SubtypeCredentialInvalid {
		t.Fatalf("call: %+v, want credential_invalid", f)
	}
	c := g.Credentials().Get("tok")
	c.ReportPeer("", tok, "") // the status ends, the breaker is left open
	if st := c.Status(); st != authmap.StatusHealthy {
		t.Fatalf("status %s, want healthy", st)
	}
	if st := breakerState(g, "api", "tok").State; st != "open" {
		t.Fatalf("breaker %s, want open", st)
	}
	up.accept(tok)
	if code, body := adminReload(t, base, "tok"); code != http.StatusOK {
		t.Fatalf("admin reload: %d %s", code, body)
	}
	if st := breakerState(g, "api", "tok").State; st != "closed" {
		t.Errorf("after the admin reload the breaker is %s, want closed", st)
	}
	callOK(t, ctx, cs, "api__echo")
}

// Regression test (three replicas, bug 2): with Redis down, C's call finds
// the token invalid; Redis comes back empty. Every replica republished the
// status of every credential, "healthy" for those that had found nothing,
// stamped with the time of the republish: in 4 runs of 7 such a default
// landed before C's fact and overrode it everywhere (C logged restored,
// trigger peer), and the dead token was sent again. Which replica catches
// up first is up to the replicas' once-a-second tickers: the replica
// started first ticks first after most instants, so the finding is C's,
// the last started, and the scene is played three times.
func TestSharedOutageKeepsRevocation(t *testing.T) {
	t.Parallel()
	for round := range 3 {
		t.Run(fmt.Sprint(round), func(t *testing.T) {
			ctx, cancel := context.WithTimeout(t.Context(), 45*time.Second)
			defer cancel()
			srv := redistest.Start(t)
			tok := fmt.Sprintf("outage-token-%d-0123456789", round)
			up := newBearerUpstream(t, "echo")
			up.accept(tok)
			gs, css, _ := replicas(t, ctx, 3, srv, tokConfig("", "source: {value: "+tok+"}", up.url()), nil)
			for _, cs := range css {
				callOK(t, ctx, cs, "api__echo")
			}
			srv.Stop()
			for _, g := range gs {
				waitFor(t, ctx, func() bool { return g.Health().State.Status == "degraded" })
			}
			up.refuse(tok, rejectInvalid)
			if f := failureOf(t, callTool(t, ctx, css[2], "api__echo")); f.Subtype != authmap.SubtypeCredentialInvalid {
				t.Fatalf("C's call: %+v, want credential_invalid", f)
			}
			sent := len(up.calls())
			srv.Restart() // empty
			sharedSettled(t, ctx, gs, "cred:tok")
			for i, g := range gs {
				if st := g.Credentials().Get("tok").Status(); st != authmap.StatusInvalid {
					t.Errorf("replica %d: %s after Redis came back, want invalid", i, st)
				}
			}
			for _, e := range gs[2].Events() {
				if e.Credential == "tok" && e.Kind == authmap.EventRestored {
					t.Errorf("C: event %s (trigger %s): a peer's default overrode C's finding", e.Kind, e.Trigger)
				}
			}
			for i, cs := range css {
				if res := callTool(t, ctx, cs, "api__echo"); !res.IsError {
					t.Errorf("replica %d served a call with the invalid token", i)
				}
			}
			if n := len(up.calls()) - sent; n != 0 {
				t.Errorf("the invalid token was sent %d more times after C found it, want 0", n)
			}
		})
	}
}

// Regression test (three replicas): after each Redis outage, each replica
// republished the status it held as its own fact, a peer's included, and
// the peers prefixed its detail once more: "a peer replica found it
// invalid: a peer replica found it invalid: ..." until it was cut at 301
// characters and the provider's words were lost. A replica's own finding
// keeps its own words, and a peer's carries the prefix once.
func TestSharedPeerDetailNotRepeated(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	srv := redistest.Start(t)
	const tok = "detail-token-0123456789"
	up := newBearerUpstream(t, "echo")
	up.accept(tok)
	gs, css, _ := replicas(t, ctx, 3, srv, tokConfig("", "source: {value: "+tok+"}", up.url()), nil)
	up.refuse(tok, rejectInvalid)
	if f := failureOf(t, callTool(t, ctx, css[0], "api__echo")); f.Subtype != authmap.SubtypeCredentialInvalid {
		t.Fatalf("A's call: %+v, want credential_invalid", f)
	}
	for _, g := range gs[1:] {
		waitFor(t, ctx, func() bool { return g.Credentials().Get("tok").Status() == authmap.StatusInvalid })
	}
	for range 2 {
		srv.Stop()
		for _, g := range gs {
			waitFor(t, ctx, func() bool { return g.Health().State.Status == "degraded" })
		}
		srv.Restart()
		sharedSettled(t, ctx, gs, "cred:tok")
	}
	for i, g := range gs {
		le := g.Credentials().Get("tok").Snapshot(false).LastError
		if le == nil {
			t.Errorf("replica %d: no last_error", i)
			continue
		}
		want := 1
		if i == 0 {
			want = 0 // its own finding
		}
		if n := strings.Count(le.Detail, "a peer replica found it"); n != want {
			t.Errorf("replica %d: last_error.detail names a peer %d times, want %d: %q", i, n, want, le.Detail)
		}
		if !strings.Contains(le.Detail, "invalid") {
			t.Errorf("replica %d: last_error.detail lost the provider's words: %q", i, le.Detail)
		}
	}
}
