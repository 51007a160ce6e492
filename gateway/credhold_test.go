package gateway

import (
	"context"
	"encoding/base64"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/credgate/credgate/authmap"
	"github.com/credgate/credgate/internal/redistest"

	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// Review (a03d248): deadCredential holds back an expired value only when
// "the provider answered it expired": "An expiry known only from the clock
// does not count: the provider decides". With replicas sharing state, a
// replica whose clock finds a credential expired publishes an "expired"
// fact; its peers apply it with ReportPeer(credential_expired), which sets
// LastError.Subtype = credential_expired, and deadCredential then refuses
// every call on them, although no provider ever answered expired (here the
// provider accepts the value). A single replica sends the same calls.
func TestReviewSharedClockExpiryIsNotAProviderAnswer(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	srv := redistest.Start(t)
	const token = "clock-expired-0123456789"
	up := newBearerUpstream(t, "echo")
	up.accept(token) // the provider still accepts it: only the clock says expired
	yaml := fmt.Sprintf("lifecycle: {startup: {fail_on: never}}\ncredentials:\n  tok: {source: {value: %s}, expires_at: \"2020-01-01T00:00:00Z\"}\nupstreams:\n  api: {url: %s, credential: tok}\n", token, up.url())

	// One gateway alone: the clock-only expiry does not hold the value back.
	_, cs1, _ := credGateway(t, ctx, yaml, nil, nil)
	if res := callTool(t, ctx, cs1, "api__echo"); res.IsError {
		t.Fatalf("single gateway: a clock-only expiry refused the call: %s", text(res))
	}

	gs, css, _ := replicas(t, ctx, 2, srv, yaml, nil)
	// A clock's expiry is not published at all now: each replica's own
	// clock reads the expiry of the value it holds (a peer whose config
	// gave a later expiry took it, and stuck expired: found trying
	// replicas from outside).
	b := gs[1].Credentials().Get("tok")
	for i, g := range gs {
		g.shared.mu.Lock()
		f, ok := g.shared.facts["tok"]
		g.shared.mu.Unlock()
		if ok {
			t.Errorf("replica %d keeps a fact %+v about a clock-only expiry", i, f.f)
		}
	}
	sent := len(up.calls())
	res := callTool(t, ctx, css[1], "api__echo")
	if res.IsError {
		f := failureOf(t, res)
		t.Errorf("B refused the call on a peer's clock-only expiry (provider never answered expired): %s: %s", f.Subtype, f.Detail)
	}
	if len(up.calls()) == sent {
		t.Errorf("B's call never reached the provider, which accepts the value")
	}
	if f := b.Snapshot(false).LastError; f != nil && f.Subtype == authmap.SubtypeCredentialExpired {
		t.Logf("B's last_error claims the provider answered expired: %+v", f)
	}
}

// Review (a03d248, README 919a70c): "those calls fail fast with the typed
// failure the provider gave (its provider, provider_code and recovery)".
// When the rejection came from the upstream's own traffic (a health probe)
// rather than a call, no cause is kept (only callBreakers.done keeps one),
// and deadCredential copies the LastError Report wrote, which has neither
// provider nor recovery: the agent is told credential_expired with no
// recovery at all.
func TestReviewOwnTrafficExpiryRefusalKeepsRecovery(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	const token = "own-traffic-0123456789"
	g, cs, _, up := valueTokGateway(t, ctx, "health_interval: 100ms\n", token)
	callOK(t, ctx, cs, "api__echo")
	up.refuse(token, rejectExpired)
	c := g.Credentials().Get("tok")
	waitFor(t, ctx, func() bool { return c.Status() == authmap.StatusExpired })
	f := failureOf(t, callTool(t, ctx, cs, "api__echo"))
	if f.Subtype != authmap.SubtypeCredentialExpired {
		t.Fatalf("refused call: %+v, want credential_expired", f)
	}
	if f.Recovery == "" || f.Provider == "" {
		t.Errorf("a call refused as expired has recovery %q, provider %q: want the provider's failure (README: provider, provider_code and recovery): %+v", f.Recovery, f.Provider, f)
	}
}

// Review (breakers): a credential breaker is keyed upstream/credential and
// outlives the credential, while a credential that is removed and later
// declared again under the same name starts its generation afresh (1
// after its first load, inheritSecrets only continues it for a credential
// replaced in one reload). The hold a rejection of the old value left at
// generation 1 then refuses the new value, which was never sent, "until the
// credential changes": for a value source, never.
func TestReviewRedeclaredCredentialNotHeldByOldBreaker(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	const old, fresh = "old-value-0123456789", "fresh-value-9876543210"
	g, cs, _, up := valueTokGateway(t, ctx, "", old)
	up.refuse(old, rejectRevoked)
	if f := failureOf(t, callTool(t, ctx, cs, "api__echo")); f.Subtype != authmap.SubtypeCredentialRevoked {
		t.Fatalf("rejection: %+v", f)
	}
	// The credential removed (the upstream stays), then declared again
	// with a new value the provider accepts.
	if err := reloadTo(t, g, fmt.Sprintf("upstreams:\n  api: {url: %s}\n", up.url())); err != nil {
		t.Fatal(err)
	}
	up.accept(fresh)
	if err := reloadTo(t, g, tokConfig("", "source: {value: "+fresh+"}", up.url())); err != nil {
		t.Fatal(err)
	}
	waitFor(t, ctx, func() bool { u := g.upstream("api"); return u.defaultCred == "tok" && u.session.Load() != nil })
	sent := len(up.calls())
	res := callTool(t, ctx, cs, "api__echo")
	if res.IsError {
		f := failureOf(t, res)
		t.Errorf("the new value was refused without being sent: %s: %s (generation %d)", f.Subtype, f.Detail, g.Credentials().Get("tok").Generation())
	}
	if len(up.calls()) == sent {
		t.Errorf("the new value never reached the provider")
	}
}

// Review (795df0d): Basic credentials a browser caches are sent with
// requests any other site makes it send (an <img> or <iframe> pointing at
// the ops address): "Basic credentials ... never authorize what changes
// state" holds for POST, but some GET ops endpoints act: with admin.pprof,
// GET /debug/pprof/profile and /trace start CPU profiling or tracing (one
// at a time: an operator's own profile then fails), and each GET /events
// takes one of 64 stream slots. A cross-site request (Sec-Fetch-Site:
// cross-site, which browsers send) carrying the cached Basic credentials
// is served.
func TestReviewBasicNotHonouredCrossSite(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	const token = "admin-token-0123456789"
	_, _, base, _ := valueTokGateway(t, ctx, "admin: {token: "+token+", pprof: true}\n", "tok-0123456789")
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, base+"/debug/pprof/profile?seconds=1", nil)
	req.Header.Set("Authorization", "Basic "+base64.StdEncoding.EncodeToString([]byte("ops:"+token)))
	req.Header.Set("Sec-Fetch-Site", "cross-site")
	req.Header.Set("Sec-Fetch-Mode", "no-cors")
	req.Header.Set("Sec-Fetch-Dest", "image")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode == http.StatusOK {
		t.Errorf("a cross-site <img> GET /debug/pprof/profile with the browser's cached Basic credentials ran a CPU profile (%d): Basic should not be honoured for cross-site requests", resp.StatusCode)
	}
}

// Review (60791f7): "Every key can be overridden from the environment";
// a deployment that gives every setting in CREDGATE_* variables and an
// empty file (a container's mounted placeholder) was a complete config.
// LoadConfig now refuses the file for being empty before the environment
// is applied, although the config it yields has upstreams (the reload
// check for "no upstreams" already covers a file cut short).
func TestReviewEmptyFileWithEnvironmentConfig(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "credgate.yaml")
	if err := os.WriteFile(path, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := LoadConfig(path, []string{"CREDGATE_UPSTREAMS__API__URL=http://127.0.0.1:1/mcp"})
	if err != nil {
		t.Fatalf("an empty file with the config in the environment: %v", err)
	}
	if cfg.Upstreams["api"] == nil {
		t.Errorf("upstreams = %v, want api from the environment", cfg.Upstreams)
	}
}

// Review (a03d248): afterCall skips the reactive renewal when the call's
// context is already done (the agent cancelled right as the provider's
// expired answer arrived) but still Reports credential_expired. Before,
// the next call was sent, rejected and renewed; now deadCredential holds
// every call back, so nothing ever asks the source again: here an exec
// source already holding a good token (nothing polls exec) is never
// re-read, and the credential stays blocked until someone reloads it.
// The race is emulated by calling afterCall with a cancelled context.
func TestReviewCancelledRejectionDoesNotBlockRenewable(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	g, cs, _ := expiredExecGateway(t, ctx) // the provider expired the first token; exec would print the second
	cc := &callCred{name: "tok"}
	cc.setUsed("first-token-0123456789")
	cctx, ccancel := context.WithCancel(ctx)
	ccancel()
	f := authmap.Failure{Type: authmap.TypeAuthFailure, Subtype: authmap.SubtypeCredentialExpired, Credential: "tok"}
	g.afterCall(cctx, cc, &f, true)
	res := callTool(t, ctx, cs, "api__echo")
	if res.IsError {
		ff := failureOf(t, res)
		t.Errorf("after a cancelled call's expired answer, the next call is refused without any renewal (value %q): %s: %s",
			g.Credentials().Get("tok").Value(), ff.Subtype, ff.Detail)
	}
}

// TestProbeNotFailedBehindRenewal: while a call renews its credential
// after a rejection, the health probe (which sends the credential too, and
// waits for the renewal) is skipped, not failed: a slow source (Vault, an
// exec command) made it a "timeout" that took the upstream down, and the
// call, whose renewal found a new value, failed as a timeout instead of
// being resent (found trying the gateway from outside).
func TestProbeNotFailedBehindRenewal(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	dir := t.TempDir()
	token, gate, started, fifo := filepath.Join(dir, "token"), filepath.Join(dir, "gate"), filepath.Join(dir, "started"), filepath.Join(dir, "fifo")
	writeFile(t, token, "first-token-0123456789")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Skipf("mkfifo: %v", err)
	}
	// Once the gate exists, the source blocks reading the fifo until the
	// test writes the new value into it.
	script := fmt.Sprintf("if [ -e %s ]; then touch %s; cat %s; else cat %s; fi", gate, started, fifo, token)
	up := newBearerUpstream(t, "echo")
	up.accept("first-token-0123456789")
	g, cs, _ := tokGateway(t, ctx, "health_interval: 50ms\n", fmt.Sprintf("source: {exec: {command: [sh, -c, %q]}}", script), up.url(), nil, nil)
	callOK(t, ctx, cs, "api__echo")
	u := g.upstream("api")
	before := u.session.Load()
	up.refuse("first-token-0123456789", rejectExpired)
	up.accept("second-token-0123456789")
	writeFile(t, gate, "")

	done := make(chan error, 1)
	go func() {
		res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "api__echo", Arguments: map[string]any{"text": "hi"}})
		if err == nil && res.IsError {
			err = fmt.Errorf("the call failed: %s", text(res))
		}
		done <- err
	}()
	waitFor(t, ctx, func() bool { _, err := os.Stat(started); return err == nil })
	// Several probe turns, each of which waited 50 ms behind the renewal
	// and failed before.
	turns := u.probeTurns.Load()
	waitFor(t, ctx, func() bool { return u.probeTurns.Load() >= turns+4 })
	w, err := os.OpenFile(fifo, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = w.WriteString("second-token-0123456789")
	_ = w.Close()
	if err := <-done; err != nil {
		t.Errorf("the call behind the renewal: %v; want it resent with the new value", err)
	}
	if after := u.session.Load(); after != before {
		t.Errorf("the upstream's session was replaced during the renewal (health: %+v); want the probe to wait its turn", g.Health().Upstreams["api"])
	}
	if got := up.lastToken(); got != "second-token-0123456789" {
		t.Errorf("the resent call carried %q; want the new token", got)
	}
}

// TestProbeRejectionRenews: when the health probe, not a call, is the first
// to find the credential rejected (revoked while the upstream was idle, a
// new value already at the source), the renewal runs to its end and the
// upstream comes back with the new value. The session's end cancelled the
// renewal at once (an exec source "signal: killed"), and the credential
// was reported invalid, every call refused until someone reloaded it
// (found trying the gateway from outside).
func TestProbeRejectionRenews(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	path := tokenFile(t, "first-token-0123456789")
	up := newBearerUpstream(t, "echo")
	up.accept("first-token-0123456789")
	g, cs, _ := tokGateway(t, ctx, "health_interval: 50ms\n", "source: {exec: {command: [cat, "+path+"]}}", up.url(), nil, nil)
	callOK(t, ctx, cs, "api__echo")
	up.accept("second-token-0123456789")
	writeFile(t, path, "second-token-0123456789")
	up.refuse("first-token-0123456789", rejectInvalid)
	cred := g.Credentials().Get("tok")
	waitFor(t, ctx, func() bool { return cred.Value() == "second-token-0123456789" })
	waitFor(t, ctx, func() bool { return g.Health().Upstreams["api"].Status == StatusUp })
	callOK(t, ctx, cs, "api__echo")
	if got := up.lastToken(); got != "second-token-0123456789" {
		t.Errorf("the call after the renewal carried %q; want the new token", got)
	}
	if st := cred.Status(); !st.Usable() {
		t.Errorf("credential %v after the renewal; want it usable", st)
	}
}

// TestPeerClockExpiryNotApplied: a peer's "expired" fact that no provider
// answered (its clock's, from a config that gave the value an earlier
// expiry) is not applied; one a provider answered is.
func TestPeerClockExpiryNotApplied(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	srv := redistest.Start(t)
	const token = "skewed-expiry-0123456789"
	up := newBearerUpstream(t, "echo")
	up.accept(token)
	gs, _, _ := replicas(t, ctx, 1, srv, tokConfig("", "source: {value: "+token+"}", up.url()), nil)
	g := gs[0]
	c := g.Credentials().Get("tok")
	fp := g.shared.sealer.Fingerprint(token)
	g.shared.applyCredFact("tok", credFact{Origin: "peer", Status: "expired", Value: fp, At: time.Now().UTC()})
	if st := c.Status(); st != authmap.StatusHealthy {
		t.Errorf("after a peer's clock-only expiry: %s; want healthy (this replica's clock decides)", st)
	}
	g.shared.applyCredFact("tok", credFact{Origin: "peer", Status: "expired", Value: fp, At: time.Now().UTC().Add(time.Second),
		LastError: &authmap.Failure{Type: authmap.TypeAuthFailure, Subtype: authmap.SubtypeCredentialExpired, Detail: "the provider answered expired"}})
	if st := c.Status(); st != authmap.StatusExpired {
		t.Errorf("after a peer's provider-answered expiry: %s; want expired", st)
	}
}
