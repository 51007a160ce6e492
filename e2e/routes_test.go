package e2e

// Acceptance tests of issue 8 (routing to backup tools) on the built binary:
// a routed tool over a primary and a backup testupstream, the primary's
// token checked by a token authority the test controls (the OAuth server in
// e2e/oidc, by introspection), or its answers faulted with a --fail-file.

import (
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// routedCall is one call of a routed tool as an agent saw it.
type routedCall struct {
	start, end time.Time
	servedBy   string // the route meta's served_by, or "primary" when it had none
	reason     string // the route meta's reason
	failure    string // set when the call failed
}

// callRouted calls tool and reads who served it.
func callRouted(ctx context.Context, cs *mcp.ClientSession, tool string, args map[string]any) routedCall {
	c := routedCall{start: time.Now(), servedBy: "primary"}
	res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: tool, Arguments: args})
	c.end = time.Now()
	switch {
	case err != nil:
		c.failure = err.Error()
		return c
	case res.IsError:
		c.failure = toolText(res)
	}
	if m, ok := res.Meta["dev.credgate/route"].(map[string]any); ok {
		c.servedBy, _ = m["served_by"].(string)
		c.reason, _ = m["reason"].(string)
	}
	return c
}

// routedLoad runs agents calling tool in a loop, as fast as they are
// answered, until stop is closed, and records every call.
type routedLoad struct {
	mu    sync.Mutex
	calls []routedCall
	wg    sync.WaitGroup
	stop  chan struct{}
}

func startRoutedLoad(ctx context.Context, sessions []*mcp.ClientSession, tool string) *routedLoad {
	l := &routedLoad{stop: make(chan struct{})}
	for i, cs := range sessions {
		l.wg.Go(func() {
			for n := 0; ; n++ {
				select {
				case <-l.stop:
					return
				case <-ctx.Done():
					return
				default:
				}
				c := callRouted(ctx, cs, tool, map[string]any{"text": fmt.Sprintf("a%d-%d", i, n)})
				if ctx.Err() != nil {
					return
				}
				l.mu.Lock()
				l.calls = append(l.calls, c)
				l.mu.Unlock()
			}
		})
	}
	return l
}

// end stops the agents and returns every call made.
func (l *routedLoad) end() []routedCall {
	close(l.stop)
	l.wg.Wait()
	return l.snapshot()
}

func (l *routedLoad) snapshot() []routedCall {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]routedCall(nil), l.calls...)
}

// waitCalls waits until cond holds for the calls made so far.
func (l *routedLoad) waitCalls(ctx context.Context, cond func([]routedCall) bool) error {
	return poll(ctx, func() (bool, error) { return cond(l.snapshot()), nil })
}

// count counts the calls started after since (if set) that match.
func count(calls []routedCall, since time.Time, match func(routedCall) bool) int {
	n := 0
	for _, c := range calls {
		if !c.start.Before(since) && match(c) {
			n++
		}
	}
	return n
}

func failures(calls []routedCall) []string {
	var out []string
	for _, c := range calls {
		if c.failure != "" {
			out = append(out, c.failure)
		}
	}
	return out
}

func routeHealthOf(h map[string]any, tool string) map[string]any {
	routes, _ := h["routes"].(map[string]any)
	r, _ := routes[tool].(map[string]any)
	return r
}

// Acceptance 1: eight agents call a routed tool in a loop; the primary's
// grant is revoked at the authority: no failed call reaches an agent, every
// call started after the revocation is served by the backup with the route
// _meta, at most 2 requests carry the dead token to the primary after its
// first rejection, and /health shows the credential revoked within 1 s.
func TestRouteRevokedPrimaryBackupServes(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	p := startOIDC(t, &oidcOptions{AccessTTL: 120 * time.Second})
	primaryURL := startUpstreamHTTP(t, p.UpstreamArgs("upstream")...)
	backupURL := startUpstreamHTTP(t)
	gw := startGateway(t, p.refreshCredentialYAML(t, ctx)+fmt.Sprintf(`
upstreams:
  primary: {url: %s, credential: api}
  backup: {url: %s}
routes:
  - {tool: search, targets: [primary__echo, backup__echo]}
`, primaryURL, backupURL))
	load := startRoutedLoad(ctx, agents(t, ctx, gw.URL, 8), "search")
	defer func() {
		if load != nil {
			load.end()
		}
	}()
	if err := load.waitCalls(ctx, func(calls []routedCall) bool {
		return count(calls, time.Time{}, func(c routedCall) bool { return c.servedBy == "primary" && c.failure == "" }) >= 40
	}); err != nil {
		t.Fatal(err)
	}

	if _, err := p.RevokeClient(ctx, "gateway", false); err != nil {
		t.Fatal(err)
	}
	revoked := time.Now()
	hctx, hcancel := context.WithDeadline(ctx, revoked.Add(time.Second))
	_, herr := gw.waitHealth(hctx, func(h map[string]any) bool { return credHealth(h, "api")["status"] == "revoked" })
	hcancel()
	if herr != nil {
		t.Errorf("/health did not show the credential revoked within 1 s of the revocation: %v", herr)
	} else {
		t.Logf("/health showed the credential revoked %s after the revocation", time.Since(revoked).Round(time.Millisecond))
	}
	if err := load.waitCalls(ctx, func(calls []routedCall) bool {
		return count(calls, revoked, func(c routedCall) bool { return true }) >= 80
	}); err != nil {
		t.Fatal(err)
	}
	calls := load.end()
	load = nil

	if f := failures(calls); len(f) > 0 {
		t.Errorf("%d of %d calls failed, want 0: %v", len(f), len(calls), f[:min(3, len(f))])
	}
	after := count(calls, revoked, func(routedCall) bool { return true })
	byBackup := count(calls, revoked, func(c routedCall) bool { return c.servedBy == "backup__echo" && c.reason != "" })
	if byBackup != after {
		t.Errorf("%d of the %d calls started after the revocation were served by the backup with the route _meta, want all", byBackup, after)
	}
	seen, err := seenTokens(ctx, primaryURL)
	if err != nil {
		t.Fatal(err)
	}
	rejectedTokens := 0
	for _, tok := range seen.Tokens {
		if tok.FirstRejected == nil {
			continue
		}
		rejectedTokens++
		late := 0
		for _, r := range seen.Requests {
			if r.SHA256 == tok.SHA256 && r.Time.After(*tok.FirstRejected) {
				late++
			}
		}
		t.Logf("dead token %s: %d requests after its first rejection", tok.SHA256, late)
		if late > 2 {
			t.Errorf("%d requests carried the dead token %s to the primary after its first rejection, want at most 2", late, tok.SHA256)
		}
	}
	if rejectedTokens == 0 {
		t.Errorf("the primary never rejected a token: the revocation was not exercised")
	}
	h := gw.Health(t)
	rh := routeHealthOf(h, "search")
	if rh["active"] != "backup__echo" || rh["reason"] != "credential_revoked" {
		t.Errorf("health routes.search = %v, want active backup__echo for credential_revoked", rh)
	}
	t.Logf("%d calls, %d after the revocation, all served by the backup", len(calls), after)
}

// Acceptance 2: the primary answers a rate limit with Retry-After: 2 for 2
// s: its credential's breaker opens, calls go to the backup without
// hammering the primary, and the primary serves again about 2 s after.
// Acceptance 6 shares the scene: per-target argument mapping delivers the
// mapped arguments to the backup.
func TestRouteRateLimitedPrimary(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	s := startFaultRouteScene(t)
	load := startRoutedLoad(ctx, agents(t, ctx, s.gw.URL, 4), "search")
	defer func() {
		if load != nil {
			load.end()
		}
	}()
	if err := load.waitCalls(ctx, func(calls []routedCall) bool {
		return count(calls, time.Time{}, func(c routedCall) bool { return c.servedBy == "primary" && c.failure == "" }) >= 20
	}); err != nil {
		t.Fatal(err)
	}
	limited := time.Now()
	s.fault(t, fmt.Sprintf(`{"status": 429, "headers": {"Retry-After": "2"}, "body": "{\"message\":\"API rate limit exceeded\"}", "until": %q}`,
		limited.Add(2*time.Second).UTC().Format(time.RFC3339Nano)))
	var firstBackup, back time.Time
	if err := load.waitCalls(ctx, func(calls []routedCall) bool {
		for _, c := range calls {
			if c.start.Before(limited) {
				continue
			}
			if firstBackup.IsZero() && c.servedBy == "backup__echo" {
				firstBackup = c.end
			}
			if !firstBackup.IsZero() && c.start.After(firstBackup) && c.servedBy == "primary" && c.failure == "" {
				back = c.start
				return true
			}
		}
		return false
	}); err != nil {
		t.Fatalf("the primary never served again: %v", err)
	}
	calls := load.end()
	load = nil

	if f := failures(calls); len(f) > 0 {
		t.Errorf("%d of %d calls failed, want 0: %v", len(f), len(calls), f[:min(3, len(f))])
	}
	reasons := map[string]int{}
	for _, c := range calls {
		if c.servedBy == "backup__echo" {
			reasons[c.reason]++
		}
	}
	if reasons["rate_limit_reached"] == 0 || len(reasons) != 1 {
		t.Errorf("backup calls by reason %v, want rate_limit_reached only", reasons)
	}
	wait := back.Sub(firstBackup)
	t.Logf("rate limited: first call served by the backup, the primary serving again %s later; %d calls by the backup", wait, reasons["rate_limit_reached"])
	if wait < 1500*time.Millisecond || wait > 4*time.Second {
		t.Errorf("the primary served again %s after the rate limit, want about 2 s (Retry-After)", wait)
	}
	if n := s.faulted(t, ctx); n > 4 {
		t.Errorf("the rate-limited primary was sent %d requests, want at most one per agent in flight (4)", n)
	} else {
		t.Logf("requests the rate-limited primary answered 429: %d", n)
	}

	// Acceptance 6: argument mapping.
	cs := connectClient(t, ctx, s.gw.URL)
	args := map[string]any{"query": "x", "page": 2}
	echoed := func(want string) map[string]any {
		t.Helper()
		res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "lookup", Arguments: args})
		if err != nil || res.IsError {
			t.Fatalf("lookup: %v %s", err, toolText(res))
		}
		m, _ := res.Meta["dev.credgate/route"].(map[string]any)
		if got, _ := m["served_by"].(string); got != want {
			t.Errorf("lookup served by %q, want %q", got, want)
		}
		var out map[string]any
		if err := json.Unmarshal([]byte(toolText(res)), &out); err != nil {
			t.Fatalf("echo_args answered %q: %v", toolText(res), err)
		}
		return out
	}
	if diff := cmp.Diff(map[string]any{"query": "x", "page": 2.0}, echoed("")); diff != "" {
		t.Errorf("the primary's arguments mismatch (-want +got):\n%s", diff)
	}
	s.fault(t, `{"status": 429, "headers": {"Retry-After": "60"}, "body": "{\"message\":\"API rate limit exceeded\"}"}`)
	if diff := cmp.Diff(map[string]any{"q": "x", "page": 2.0, "scope": "blobs", "limit": 5.0}, echoed("backup__echo_args")); diff != "" {
		t.Errorf("the backup's mapped arguments mismatch (-want +got):\n%s", diff)
	}
}

// faultRouteScene is a gateway with routed tools over a primary testupstream
// whose answers a fail-file faults, bearing a credential (so that a rate
// limit opens the credential's breaker), and a backup:
//
//	search -> [primary__echo, backup__echo]
//	lookup -> [primary__echo_args, backup__echo_args], mapping the backup's arguments
type faultRouteScene struct {
	gw         *gatewayProc
	failFile   string
	primaryURL string
}

func startFaultRouteScene(t *testing.T) *faultRouteScene {
	t.Helper()
	s := &faultRouteScene{failFile: filepath.Join(t.TempDir(), "fail.json")}
	s.primaryURL = startUpstreamHTTP(t, "--fail-file", s.failFile)
	backupURL := startUpstreamHTTP(t)
	s.gw = startGateway(t, fmt.Sprintf(`
credentials:
  key: {source: {value: primary-key-0123456789}}
upstreams:
  primary: {url: %s, credential: key}
  backup: {url: %s}
routes:
  - {tool: search, targets: [primary__echo, backup__echo]}
  - tool: lookup
    targets: [primary__echo_args, backup__echo_args]
    arguments: {backup__echo_args: {rename: {query: q}, set: {scope: blobs, limit: 5}}}
`, s.primaryURL, backupURL))
	return s
}

// fault makes the primary answer every request as the fail-file JSON says.
func (s *faultRouteScene) fault(t *testing.T, js string) {
	t.Helper()
	atomicWrite(t, s.failFile, js)
}

// faulted returns how many requests the primary answered with the fault.
func (s *faultRouteScene) faulted(t *testing.T, ctx context.Context) int {
	t.Helper()
	u, err := url.Parse(s.primaryURL)
	if err != nil {
		t.Fatal(err)
	}
	u.Path = "/debug/faults"
	resp, err := httpGet(ctx, u.String())
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var doc struct{ Faulted int }
	if err := json.NewDecoder(resp.Body).Decode(&doc); err != nil {
		t.Fatal(err)
	}
	return doc.Faulted
}

// Acceptance 3: the primary's token revoked at the authority moves the
// calls to the backup; rotating the token (the credential's file, as a
// secret volume does) brings them back to the primary, with no failed call
// and no restart.
func TestRouteRotationBringsPrimaryBack(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	p := startOIDC(t, &oidcOptions{AccessTTL: 600 * time.Second})
	primaryURL := startUpstreamHTTP(t, p.UpstreamArgs("upstream")...)
	backupURL := startUpstreamHTTP(t)
	mint := func() string {
		tok, err := p.ClientCredentials(ctx, "gateway")
		if err != nil {
			t.Fatal(err)
		}
		return tok.AccessToken
	}
	tok1, tok2 := mint(), mint()
	path := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(path, []byte(tok1), 0o600); err != nil {
		t.Fatal(err)
	}
	gw := startGateway(t, fmt.Sprintf(`
credentials:
  api: {source: {file: %s}}
upstreams:
  primary: {url: %s, credential: api}
  backup: {url: %s}
routes:
  - {tool: search, targets: [primary__echo, backup__echo]}
`, path, primaryURL, backupURL))
	load := startRoutedLoad(ctx, agents(t, ctx, gw.URL, 4), "search")
	defer func() {
		if load != nil {
			load.end()
		}
	}()
	servedSince := func(since time.Time, by string, n int) {
		t.Helper()
		if err := load.waitCalls(ctx, func(calls []routedCall) bool {
			return count(calls, since, func(c routedCall) bool { return c.servedBy == by && c.failure == "" }) >= n
		}); err != nil {
			t.Fatalf("never %d calls served by %s: %v", n, by, err)
		}
	}
	servedSince(time.Time{}, "primary", 20)
	if err := p.Revoke(ctx, "gateway", tok1); err != nil {
		t.Fatal(err)
	}
	revoked := time.Now()
	servedSince(revoked, "backup__echo", 20)
	if h, err := gw.waitHealth(ctx, func(h map[string]any) bool { return routeHealthOf(h, "search")["active"] == "backup__echo" }); err != nil {
		t.Fatalf("health never showed the backup active: %v", err)
	} else {
		t.Logf("after the revocation: routes.search = %v", routeHealthOf(h, "search"))
	}

	atomicWrite(t, path, tok2)
	rotated := time.Now()
	servedSince(rotated, "primary", 20)
	if _, err := gw.waitHealth(ctx, func(h map[string]any) bool {
		r := routeHealthOf(h, "search")
		return r["active"] == "primary__echo" && r["reason"] == nil
	}); err != nil {
		t.Fatalf("health never showed the primary active again: %v", err)
	}
	calls := load.end()
	load = nil
	if f := failures(calls); len(f) > 0 {
		t.Errorf("%d of %d calls failed, want 0: %v", len(f), len(calls), f[:min(3, len(f))])
	}
	seen, err := seenTokens(ctx, primaryURL)
	if err != nil {
		t.Fatal(err)
	}
	if s := seen.Token(tokenHash(tok2)); s.Accepted == 0 || s.Rejected != 0 {
		t.Errorf("the rotated token at the primary: %+v, want accepted, never rejected", s)
	}
	for _, tok := range []string{tok1, tok2} {
		if strings.Contains(gw.Logs(), tok) {
			t.Error("the logs show a token")
		}
	}
}
