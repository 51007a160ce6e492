package e2e

// Acceptance tests of issue 11 (replicas sharing state through Redis) on
// the built binary: several gateways share a real redis-server (started by
// the test on a Unix socket of its own), a real OAuth server (e2e/oidc)
// issues the tokens, and introspecting test upstreams check them, so a
// revocation at the provider is a real one.

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/credgate/credgate/gateway/state"
	"github.com/credgate/credgate/internal/redistest"
)

const e2eStateKey = "e2e-state-encryption-key-0123456789"

// stateConfig is the state section of replicas sharing srv under prefix.
func stateConfig(srv *redistest.Server, prefix string) string {
	return fmt.Sprintf("state:\n  redis: {url: %q, key_prefix: %q, timeout: 500ms, encryption_key: %s}\n", srv.URL, prefix, e2eStateKey)
}

// startReplicas starts n gateways of one config.
func startReplicas(t *testing.T, n int, config string) []*gatewayProc {
	t.Helper()
	var gws []*gatewayProc
	for range n {
		gws = append(gws, startGateway(t, config))
	}
	return gws
}

// subtypeOf returns the subtype of a typed failure ("ok" for a success).
func subtypeOf(t *testing.T, what string, res *mcp.CallToolResult) string {
	t.Helper()
	if !res.IsError {
		return "ok"
	}
	f := typedFailure(t, what, res)
	s, _ := f["subtype"].(string)
	if s == "" {
		s, _ = f["type"].(string)
	}
	return s
}

// requestsWith counts the requests testupstream saw carrying the token with hash.
func requestsWith(t *testing.T, ctx context.Context, upURL, hash string) int {
	t.Helper()
	seen, err := seenTokens(ctx, upURL)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, r := range seen.Requests {
		if r.SHA256 == hash {
			n++
		}
	}
	return n
}

// Acceptance 1 of issue 11: two replicas; the token is revoked at the
// provider; only replica A's call sees the rejection; within 1 s replica B
// reports the credential dead, refuses its unrouted calls typed and routes
// its routed calls to the backup, without sending the dead token.
func TestReplicasShareRevocation(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	srv := redistest.Start(t)
	p := startOIDC(t, &oidcOptions{AccessTTL: 600 * time.Second})
	upURL := startUpstreamHTTP(t, p.UpstreamArgs("upstream")...)
	backupURL := startUpstreamHTTP(t)
	tok, err := p.ClientCredentials(ctx, "gateway")
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "token")
	atomicWrite(t, path, tok.AccessToken)
	gws := startReplicas(t, 2, stateConfig(srv, redistest.Prefix(t))+fmt.Sprintf(`
health_interval: 10m
credentials:
  api: {source: {file: %s}}
upstreams:
  up: {url: %s, credential: api}
  backup: {url: %s}
routes:
  - {tool: search, targets: [up__echo, backup__echo]}
`, path, upURL, backupURL))
	a, b := connectClient(t, ctx, gws[0].URL), connectClient(t, ctx, gws[1].URL)
	for _, cs := range []*mcp.ClientSession{a, b} {
		if _, err := whoamiHash(ctx, cs, "up__whoami"); err != nil {
			t.Fatal(err)
		}
	}
	if err := p.Revoke(ctx, "gateway", tok.AccessToken); err != nil {
		t.Fatal(err)
	}
	res, err := a.CallTool(ctx, &mcp.CallToolParams{Name: "up__echo", Arguments: map[string]any{"text": "x"}})
	if err != nil {
		t.Fatal(err)
	}
	sub := subtypeOf(t, "A's call", res)
	if sub != "credential_revoked" && sub != "credential_invalid" {
		t.Fatalf("A's call: %s, want the token refused", sub)
	}
	seenA := time.Now()
	dead := requestsWith(t, ctx, upURL, tokenHash(tok.AccessToken))
	h, err := gws[1].waitHealth(ctx, func(h map[string]any) bool {
		st := credHealth(h, "api")["status"]
		return st == "revoked" || st == "invalid"
	})
	if err != nil {
		t.Fatal(err)
	}
	took := time.Since(seenA)
	t.Logf("replica B reported the credential %s %s after A's call saw the rejection", credHealth(h, "api")["status"], took.Round(time.Millisecond))
	if took > time.Second {
		t.Errorf("B took %s to learn the credential is dead, want within 1s", took)
	}
	res, err = b.CallTool(ctx, &mcp.CallToolParams{Name: "up__echo", Arguments: map[string]any{"text": "x"}})
	if err != nil {
		t.Fatal(err)
	}
	if got := subtypeOf(t, "B's call", res); got != sub {
		t.Errorf("B's call: %s, want %s like A's", got, sub)
	}
	// Routed, B's call goes to the backup at once: the agent does not notice.
	res, err = b.CallTool(ctx, &mcp.CallToolParams{Name: "search", Arguments: map[string]any{"text": "routed"}})
	if err != nil {
		t.Fatal(err)
	}
	if res.IsError {
		t.Errorf("B's routed call failed: %s", toolText(res))
	}
	if route, _ := res.Meta["dev.credgate/route"].(map[string]any); route["served_by"] != "backup__echo" {
		t.Errorf("B's routed call _meta route = %v, want served_by backup__echo", res.Meta["dev.credgate/route"])
	}
	if n := requestsWith(t, ctx, upURL, tokenHash(tok.AccessToken)) - dead; n != 0 {
		t.Errorf("B sent the dead token %d times, want 0", n)
	}
	if !gws[1].logged(`"trigger":"peer"`) {
		t.Errorf("B's log has no event from the peer's fact")
	}
}

// Acceptance 2 of issue 11: a rotation webhook on A makes B re-read the
// credential: B's next call carries the new token.
func TestReplicasWebhookRotation(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	srv := redistest.Start(t)
	p := startOIDC(t, &oidcOptions{AccessTTL: 600 * time.Second})
	upURL := startUpstreamHTTP(t, p.UpstreamArgs("upstream")...)
	toks, path := tokenFile(t, ctx, p, 2)
	// exec is not watched: only a reload, here or announced by a peer, re-reads it.
	gws := startReplicas(t, 2, stateConfig(srv, redistest.Prefix(t))+fmt.Sprintf(`
webhooks: {secret: e2e-hook-secret-0123456789}
credentials:
  api: {source: {exec: {command: [cat, %s]}}}
upstreams:
  up: {url: %s, credential: api}
`, path, upURL))
	b := connectClient(t, ctx, gws[1].URL)
	if h, err := whoamiHash(ctx, b, "up__whoami"); err != nil || h != tokenHash(toks[0]) {
		t.Fatalf("B's first call: %s, %v", h, err)
	}
	atomicWrite(t, path, toks[1])
	body := `{"event":"rotated"}`
	code, out, err := postTo(ctx, "http://"+gws[0].Addr+"/webhooks/rotate/api", map[string]string{"X-Credgate-Signature": sign("e2e-hook-secret-0123456789", body)}, body)
	if err != nil || code != http.StatusOK {
		t.Fatalf("webhook on A: %d %s %v", code, out, err)
	}
	// The notice is sent before A answers; B re-reads the source when it arrives.
	if _, err := gws[1].waitHealth(ctx, func(h map[string]any) bool {
		return strings.Contains(gws[1].Logs(), `"kind":"rotated","trigger":"peer"`)
	}); err != nil {
		t.Fatalf("B never re-read the credential: %v", err)
	}
	if h, err := whoamiHash(ctx, b, "up__whoami"); err != nil || h != tokenHash(toks[1]) {
		t.Errorf("B's next call carried %s (%v), want the new token %s", h, err, tokenHash(toks[1]))
	}
}

// oauthReplicaRun is how long acceptance 3 runs: 40s in `make test`, the
// full 2 minutes with CHAOS_LONG=1 (`make chaos`).
func oauthReplicaRun() time.Duration {
	if os.Getenv("CHAOS_LONG") != "" {
		return 2 * time.Minute
	}
	return 40 * time.Second
}

// Acceptance 3 of issue 11: three replicas of an OAuth credential whose
// provider rotates refresh tokens and issues 5 s access tokens: zero
// failures, never two refreshes of the credential at once (the provider
// refuses a spent refresh token and would report it), never a false
// credential_revoked.
func TestReplicasOAuthRotatingRefresh(t *testing.T) {
	t.Parallel()
	run := oauthReplicaRun()
	ctx, cancel := context.WithTimeout(context.Background(), run+2*time.Minute)
	defer cancel()
	srv := redistest.Start(t)
	p := startOIDC(t, &oidcOptions{AccessTTL: 5 * time.Second})
	upURL := startUpstreamHTTP(t, p.UpstreamArgs("upstream")...)
	gws := startReplicas(t, 3, stateConfig(srv, redistest.Prefix(t))+p.refreshCredentialYAML(t, ctx)+fmt.Sprintf(`
upstreams:
  up: {url: %s, credential: api}
`, upURL))
	var sessions []*mcp.ClientSession
	for i := range 6 {
		sessions = append(sessions, connectClient(t, ctx, gws[i%3].URL))
	}
	stop := make(chan struct{})
	res, wg := runLoad(ctx, sessions, "up__echo", 250*time.Millisecond, stop)
	select {
	case <-time.After(run): // the test's length, not a synchronisation
	case <-ctx.Done():
	}
	close(stop)
	wg.Wait()
	if len(res.failures) > 0 {
		t.Errorf("%d of %d calls failed: %v", len(res.failures), res.calls.Load(), res.failures[:min(3, len(res.failures))])
	}
	events, err := p.Events(ctx)
	if err != nil {
		t.Fatal(err)
	}
	refreshes := 0
	for _, e := range events {
		switch {
		case e.Type == "grant_error":
			t.Errorf("the provider refused a token request: %s %s (%s): two replicas refreshed with one refresh token", e.Error, e.ErrorDescription, e.ErrorDetail)
		case e.Type == "revoked":
			t.Errorf("the provider revoked a grant (%s)", e.Kind)
		case e.Type == "issued" && e.GrantType == "refresh_token":
			refreshes++
		}
	}
	if err := checkRenewedBeforeExpiry(issuedTo(events, "gateway")); err != nil {
		t.Errorf("renewed after expiry: %v", err)
	}
	for i, gw := range gws {
		if strings.Contains(gw.Logs(), `"kind":"revoked"`) {
			t.Errorf("replica %d logged the credential revoked", i)
		}
	}
	// One replica renews for all: about one refresh per 2.5 s (half of a 5 s
	// life), not three.
	if max := int(run/(2*time.Second)) + 3; refreshes > max {
		t.Errorf("%d refreshes in %s for 3 replicas, want at most %d (one renewal shared, not one per replica)", refreshes, run, max)
	}
	t.Logf("%d calls over %s on 3 replicas, %d refreshes, 0 failures wanted (got %d)", res.calls.Load(), run, refreshes, len(res.failures))
}

// Acceptance 4 of issue 11: Redis stopped under load: no agent call fails;
// a rotation announced on A during the outage reaches B once Redis is back,
// and both report the state healthy again.
func TestReplicasRedisOutage(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	srv := redistest.Start(t)
	p := startOIDC(t, &oidcOptions{AccessTTL: 600 * time.Second})
	upURL := startUpstreamHTTP(t, p.UpstreamArgs("upstream")...)
	toks, path := tokenFile(t, ctx, p, 2)
	gws := startReplicas(t, 2, stateConfig(srv, redistest.Prefix(t))+fmt.Sprintf(`
admin: {token: e2e-admin-token-0123456789}
credentials:
  api: {source: {exec: {command: [cat, %s]}}}
upstreams:
  up: {url: %s, credential: api}
`, path, upURL))
	var sessions []*mcp.ClientSession
	for i := range 4 {
		sessions = append(sessions, connectClient(t, ctx, gws[i%2].URL))
	}
	stop := make(chan struct{})
	res, wg := runLoad(ctx, sessions, "up__echo", 50*time.Millisecond, stop)
	waitCalls := func(n int64) {
		t.Helper()
		if err := poll(ctx, func() (bool, error) { return res.calls.Load() >= n, nil }); err != nil {
			t.Fatal(err)
		}
	}
	waitCalls(40)
	srv.Stop()
	for _, gw := range gws {
		if _, err := gw.waitHealth(ctx, func(h map[string]any) bool {
			st, _ := h["state"].(map[string]any)
			return st["status"] == "degraded"
		}); err != nil {
			t.Fatal(err)
		}
	}
	during := res.calls.Load()
	waitCalls(during + 80)
	// A rotation on A while Redis is down: its notice waits for Redis.
	atomicWrite(t, path, toks[1])
	code, out, err := postTo(ctx, "http://"+gws[0].Addr+"/admin/credentials/api/reload", map[string]string{"Authorization": "Bearer e2e-admin-token-0123456789"}, "")
	if err != nil || code != http.StatusOK {
		t.Fatalf("admin reload on A during the outage: %d %s %v", code, out, err)
	}
	waitCalls(res.calls.Load() + 40)
	srv.Restart()
	for i, gw := range gws {
		if _, err := gw.waitHealth(ctx, func(h map[string]any) bool {
			st, _ := h["state"].(map[string]any)
			return st["status"] == "ok"
		}); err != nil {
			t.Fatalf("replica %d: %v", i, err)
		}
	}
	if err := poll(ctx, func() (bool, error) {
		return strings.Contains(gws[1].Logs(), `"kind":"rotated","trigger":"peer"`), nil
	}); err != nil {
		t.Errorf("B never got the rotation announced during the outage: %v", err)
	}
	waitCalls(res.calls.Load() + 40)
	close(stop)
	wg.Wait()
	if len(res.failures) > 0 {
		t.Errorf("%d of %d calls failed across the outage: %v", len(res.failures), res.calls.Load(), res.failures[:min(3, len(res.failures))])
	}
	t.Logf("%d calls, %d during the outage, 0 failures wanted (got %d)", res.calls.Load(), res.calls.Load()-during, len(res.failures))
}

// Acceptance 5 of issue 11: a replica started while an upstream's
// credential is dead lists that upstream's tools from the catalog cache,
// and fails them typed.
func TestReplicaCatalogCache(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	srv := redistest.Start(t)
	p := startOIDC(t, &oidcOptions{AccessTTL: 600 * time.Second})
	upURL := startUpstreamHTTP(t, p.UpstreamArgs("upstream")...)
	tok, err := p.ClientCredentials(ctx, "gateway")
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "token")
	atomicWrite(t, path, tok.AccessToken)
	prefix := redistest.Prefix(t)
	config := stateConfig(srv, prefix) + fmt.Sprintf(`
lifecycle: {startup: {fail_on: never}}
credentials:
  api: {source: {file: %s}}
upstreams:
  up: {url: %s, credential: api}
`, path, upURL)
	a := startGateway(t, config)
	want := toolNamesOf(t, ctx, connectClient(t, ctx, a.URL))
	if len(want) == 0 {
		t.Fatal("A lists no tools")
	}
	if err := poll(ctx, func() (bool, error) { return inStore(t, ctx, srv, prefix, "catalog:up"), nil }); err != nil {
		t.Fatal(err)
	}
	if err := p.Revoke(ctx, "gateway", tok.AccessToken); err != nil {
		t.Fatal(err)
	}
	b := startGateway(t, config)
	if up := upstreamHealth(b.Health(t), "up"); up["connected"] == true {
		t.Fatalf("B connected with a revoked token: %v", up)
	}
	cs := connectClient(t, ctx, b.URL)
	got := toolNamesOf(t, ctx, cs)
	if strings.Join(got, ",") != strings.Join(want, ",") {
		t.Errorf("B lists %v, want A's %v from the cache", got, want)
	}
	res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "up__echo", Arguments: map[string]any{"text": "x"}})
	if err != nil {
		t.Fatal(err)
	}
	if f := typedFailure(t, "B's call of a cached tool", res); f["type"] != "auth_failure" {
		t.Errorf("B's call: %v, want an auth_failure", f)
	}
}

func toolNamesOf(t *testing.T, ctx context.Context, cs *mcp.ClientSession) []string {
	t.Helper()
	var out []string
	for tool, err := range cs.Tools(ctx, nil) {
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, tool.Name)
	}
	return out
}

// inStore reports whether key is in the shared state under prefix.
func inStore(t *testing.T, ctx context.Context, srv *redistest.Server, prefix, key string) bool {
	t.Helper()
	s, err := state.NewRedis(&state.RedisConfig{URL: srv.URL, KeyPrefix: prefix, Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	es, err := s.Get(ctx, key)
	return err == nil && len(es) == 1
}
