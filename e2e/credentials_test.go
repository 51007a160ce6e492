package e2e

// Acceptance tests of issue 7 (credential lifecycle) on the built binary,
// with a real OAuth 2.0 server (e2e/oidc) and test upstreams that check each
// bearer token by introspection there, so a revocation at the provider is a
// real one.

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// whoamiHash calls the upstream's whoami tool through the gateway and
// returns the token_sha256 it reports.
func whoamiHash(ctx context.Context, cs *mcp.ClientSession, tool string) (string, error) {
	res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: tool})
	if err != nil {
		return "", err
	}
	if res.IsError {
		return "", fmt.Errorf("%s failed: %s", tool, toolText(res))
	}
	var out struct {
		TokenSHA256 string `json:"token_sha256"`
	}
	if err := json.Unmarshal([]byte(toolText(res)), &out); err != nil {
		return "", fmt.Errorf("%s: %w: %s", tool, err, toolText(res))
	}
	return out.TokenSHA256, nil
}

// load runs agents calling tool until stop is closed (each at most every
// pace), and returns the calls made and the failures seen.
type loadResult struct {
	calls    atomic.Int64
	mu       sync.Mutex
	failures []string
}

func (l *loadResult) fail(s string) {
	l.mu.Lock()
	l.failures = append(l.failures, s)
	l.mu.Unlock()
}

func runLoad(ctx context.Context, sessions []*mcp.ClientSession, tool string, pace time.Duration, stop <-chan struct{}) (*loadResult, *sync.WaitGroup) {
	res := &loadResult{}
	var wg sync.WaitGroup
	for i, cs := range sessions {
		wg.Go(func() {
			tick := time.NewTicker(pace)
			defer tick.Stop()
			for n := 0; ; n++ {
				select {
				case <-stop:
					return
				case <-ctx.Done():
					return
				default:
				}
				r, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: tool, Arguments: map[string]any{"text": fmt.Sprintf("a%d-%d", i, n)}})
				res.calls.Add(1)
				switch {
				case err != nil:
					res.fail(err.Error())
				case r.IsError:
					res.fail(toolText(r))
				}
				select {
				case <-stop:
					return
				case <-ctx.Done():
					return
				case <-tick.C:
				}
			}
		})
	}
	return res, &wg
}

func agents(t *testing.T, ctx context.Context, url string, n int) []*mcp.ClientSession {
	t.Helper()
	out := make([]*mcp.ClientSession, n)
	for i := range out {
		out[i] = connectClient(t, ctx, url)
	}
	return out
}

func atomicWrite(t *testing.T, path, content string) {
	t.Helper()
	tmp := path + ".new"
	if err := os.WriteFile(tmp, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

func credHealth(h map[string]any, name string) map[string]any {
	creds, _ := h["credentials"].(map[string]any)
	c, _ := creds[name].(map[string]any)
	return c
}

// runGatewayCmd runs the gateway binary to completion.
func runGatewayCmd(t *testing.T, ctx context.Context, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	cmd := exec.CommandContext(ctx, requireBin(t, "gateway"), args...)
	var out, errOut strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	if ee, ok := err.(*exec.ExitError); ok {
		return ee.ExitCode(), out.String(), errOut.String()
	}
	if err != nil {
		t.Fatalf("gateway %v: %v", args, err)
	}
	return 0, out.String(), errOut.String()
}

func writeConfig(t *testing.T, yaml string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "gateway.yaml")
	if err := os.WriteFile(p, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// Acceptance 1 and the `check` exit codes: a token expiring inside the
// warning window fails `gateway check` (named, with its readiness), a good
// one passes, and /health says expiring.
func TestCredentialCheckAndExpiring(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	soon := time.Now().Add(20 * time.Minute).UTC().Format(time.RFC3339)
	later := time.Now().Add(240 * time.Hour).UTC().Format(time.RFC3339)
	upURL := startUpstreamHTTP(t)
	cfg := fmt.Sprintf(`
credentials:
  soon: {source: {value: soon-secret-0123456789}, expires_at: %q}
  later: {source: {value: later-secret-0123456789}, expires_at: %q}
upstreams:
  up:
    url: %s
    credentials: [{tools: [echo], credential: soon}, {tools: ["*"], credential: later}]
`, soon, later, upURL)
	path := writeConfig(t, cfg)
	code, out, errOut := runGatewayCmd(t, ctx, "check", "--config", path)
	if code == 0 || !strings.Contains(out, "soon") || !strings.Contains(out, "expiring") || !strings.Contains(out, "readiness") {
		t.Errorf("check: exit %d, want non-zero naming soon as expiring with its readiness\n%s%s", code, out, errOut)
	}
	code, out, _ = runGatewayCmd(t, ctx, "check", "--config", path, "--json")
	var rep struct {
		OK          bool `json:"ok"`
		Credentials []struct {
			Name      string         `json:"name"`
			Status    string         `json:"status"`
			Readiness map[string]any `json:"readiness"`
		} `json:"credentials"`
	}
	if err := json.Unmarshal([]byte(out), &rep); err != nil || rep.OK || code == 0 {
		t.Errorf("check --json: exit %d ok %t err %v\n%s", code, rep.OK, err, out)
	}
	goodCfg := strings.Replace(cfg, fmt.Sprintf("  soon: {source: {value: soon-secret-0123456789}, expires_at: %q}\n", soon), "", 1)
	goodCfg = strings.Replace(goodCfg, "{tools: [echo], credential: soon}, ", "", 1)
	if code, out, errOut := runGatewayCmd(t, ctx, "check", "--config", writeConfig(t, goodCfg)); code != 0 {
		t.Errorf("check of good credentials: exit %d\n%s%s", code, out, errOut)
	}
	gw := startGateway(t, cfg)
	h := gw.Health(t)
	if c := credHealth(h, "soon"); c["status"] != "expiring" || h["status"] != "degraded" {
		t.Errorf("health: soon=%v status=%v, want expiring and degraded", c, h["status"])
	}
}

// Acceptance 2: a file credential rotated by an atomic rename, then by a
// Kubernetes-style ..data symlink swap: the next call uses the new token, no
// call fails, no restart.
func TestCredentialFileRotation(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	p := startOIDC(t, &oidcOptions{AccessTTL: 600 * time.Second})
	upURL := startUpstreamHTTP(t, p.UpstreamArgs("upstream")...)
	mint := func() string {
		tok, err := p.ClientCredentials(ctx, "gateway")
		if err != nil {
			t.Fatal(err)
		}
		return tok.AccessToken
	}
	// The secret volume: dir/token -> ..data/token, ..data -> ..v1.
	dir := t.TempDir()
	tok1, tok2, tok3 := mint(), mint(), mint()
	if err := os.Mkdir(filepath.Join(dir, "..v1"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "..v1", "token"), []byte(tok1), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("..v1", filepath.Join(dir, "..data")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("..data/token", filepath.Join(dir, "token")); err != nil {
		t.Fatal(err)
	}
	gw := startGateway(t, fmt.Sprintf(`
credentials:
  api: {source: {file: %s}}
upstreams:
  up: {url: %s, credential: api}
`, filepath.Join(dir, "token"), upURL))
	cs := agents(t, ctx, gw.URL, 2)
	stop := make(chan struct{})
	res, wg := runLoad(ctx, cs, "up__echo", 20*time.Millisecond, stop)
	waitToken := func(tok string) {
		t.Helper()
		if err := poll(ctx, func() (bool, error) {
			h, err := whoamiHash(ctx, cs[0], "up__whoami")
			return h == tokenHash(tok), err
		}); err != nil {
			t.Fatalf("the gateway never sent the new token: %v\n%s", err, tail(gw.Logs(), 20))
		}
	}
	waitToken(tok1)

	// Kubernetes: a new ..v2 directory, ..data swapped to it atomically.
	if err := os.Mkdir(filepath.Join(dir, "..v2"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "..v2", "token"), []byte(tok2), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("..v2", filepath.Join(dir, "..data_tmp")); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(filepath.Join(dir, "..data_tmp"), filepath.Join(dir, "..data")); err != nil {
		t.Fatal(err)
	}
	waitToken(tok2)

	// An atomic rename over the file itself.
	atomicWrite(t, filepath.Join(dir, "token"), tok3)
	waitToken(tok3)
	close(stop)
	wg.Wait()
	if len(res.failures) > 0 || res.calls.Load() == 0 {
		t.Errorf("%d calls, %d failed: %v", res.calls.Load(), len(res.failures), res.failures[:min(3, len(res.failures))])
	}
	for _, tok := range []string{tok1, tok2, tok3} {
		if strings.Contains(gw.Logs(), tok) {
			t.Error("the logs show a token")
		}
	}
}

// Acceptance 3: OAuth access tokens living 5 s: 200 calls over 30 s from 4
// agents, zero failures, and every token renewed before it expired, not
// after a rejection.
func TestCredentialOAuthShortTokens(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	p := startOIDC(t, &oidcOptions{AccessTTL: 5 * time.Second})
	upURL := startUpstreamHTTP(t, p.UpstreamArgs("upstream")...)
	gw := startGateway(t, fmt.Sprintf(`
credentials:
  api: {source: {oauth2: %s}}
upstreams:
  up: {url: %s, credential: api}
`, p.OAuth2SourceYAML("gateway", ""), upURL))
	cs := agents(t, ctx, gw.URL, 4)
	stop := make(chan struct{})
	res, wg := runLoad(ctx, cs, "up__echo", 600*time.Millisecond, stop)
	// 4 agents x 50 calls, one every 600 ms: 30 s.
	if err := poll(ctx, func() (bool, error) { return res.calls.Load() >= 200, nil }); err != nil {
		t.Fatal(err)
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
	issued := issuedTo(events, "gateway")
	if len(issued) < 6 {
		t.Errorf("%d tokens issued over 30 s of 5 s tokens, want renewals", len(issued))
	}
	if err := checkRenewedBeforeExpiry(issued); err != nil {
		t.Errorf("renewed after expiry: %v", err)
	}
	seen, err := seenTokens(ctx, upURL)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range seen.Tokens {
		if s.Rejected > 0 {
			t.Errorf("token %s was rejected %d times", s.SHA256, s.Rejected)
		}
	}
}

// Acceptance 4: the grant revoked at the provider mid-run: the credential
// becomes revoked, calls get credential_revoked, health says so, the event
// is logged once, and at most 2 requests carry the dead token after the
// first rejection.
func TestCredentialOAuthRevoked(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	p := startOIDC(t, &oidcOptions{AccessTTL: 120 * time.Second})
	upURL := startUpstreamHTTP(t, p.UpstreamArgs("upstream")...)
	gw := startGateway(t, p.refreshCredentialYAML(t, ctx)+fmt.Sprintf(`
upstreams:
  up: {url: %s, credential: api}
`, upURL))
	cs := agents(t, ctx, gw.URL, 4)
	for _, s := range cs {
		if _, err := whoamiHash(ctx, s, "up__whoami"); err != nil {
			t.Fatal(err)
		}
	}
	stop := make(chan struct{})
	var mu sync.Mutex
	subtypes := map[string]int{}
	var wg sync.WaitGroup
	for _, s := range cs {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				r, err := s.CallTool(ctx, &mcp.CallToolParams{Name: "up__echo", Arguments: map[string]any{"text": "x"}})
				if err != nil {
					return
				}
				sub := "ok"
				if r.IsError {
					f, _ := r.Meta["dev.credgate/error"].(map[string]any)
					sub, _ = f["subtype"].(string)
				}
				mu.Lock()
				subtypes[sub]++
				mu.Unlock()
			}
		})
	}
	if err := poll(ctx, func() (bool, error) { mu.Lock(); defer mu.Unlock(); return subtypes["ok"] > 20, nil }); err != nil {
		t.Fatal(err)
	}
	if _, err := p.RevokeClient(ctx, "gateway", false); err != nil {
		t.Fatal(err)
	}
	if _, err := gw.waitHealth(ctx, func(h map[string]any) bool { return credHealth(h, "api")["status"] == "revoked" }); err != nil {
		t.Fatal(err)
	}
	if err := poll(ctx, func() (bool, error) {
		mu.Lock()
		defer mu.Unlock()
		return subtypes["credential_revoked"] > 20, nil
	}); err != nil {
		t.Fatalf("calls never got credential_revoked: %v (%v)", err, subtypes)
	}
	close(stop)
	wg.Wait()
	mu.Lock()
	for sub, n := range subtypes {
		if sub != "ok" && sub != "credential_revoked" {
			t.Errorf("%d calls got %s, want only ok then credential_revoked", n, sub)
		}
	}
	mu.Unlock()
	// The dead token after its first rejection.
	seen, err := seenTokens(ctx, upURL)
	if err != nil {
		t.Fatal(err)
	}
	for _, tok := range seen.Tokens {
		if tok.FirstRejected == nil {
			continue
		}
		after := 0
		for _, r := range seen.Requests {
			if r.SHA256 == tok.SHA256 && r.Time.After(*tok.FirstRejected) {
				after++
			}
		}
		// The other agents' calls already sent when the rejection came
		// may arrive after it, one each at most; none is sent after the
		// gateway has the rejection. (At most 2 failed a loaded run: 3 of
		// the 4 agents had a call on the way.)
		if max := len(cs) - 1; after > max {
			t.Errorf("%d requests carried the dead token %s after its first rejection, want at most %d (one per other agent)", after, tok.SHA256, max)
		}
	}
	if n := strings.Count(gw.Logs(), `"kind":"revoked"`); n != 1 {
		t.Errorf("%d revoked events logged, want 1", n)
	}
}

// Acceptance 5: per-tool credentials: the read credential's client revoked
// and disabled at the provider: read tools fail typed, write tools keep working.
func TestCredentialPerToolRevoked(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	p := startOIDC(t, &oidcOptions{
		AccessTTL: 120 * time.Second,
		Clients:   []oidcClient{{ID: "reader"}, {ID: "writer"}, {ID: "upstream", Grants: []string{}}},
	})
	upURL := startUpstreamHTTP(t, p.UpstreamArgs("upstream")...)
	gw := startGateway(t, fmt.Sprintf(`
lifecycle: {startup: {fail_on: never}}
credentials:
  read: {source: {oauth2: %s}}
  write: {source: {oauth2: %s}}
upstreams:
  up:
    url: %s
    credentials:
      - {tools: [whoami], credential: read}
      - {tools: ["*"], credential: write}
`, p.OAuth2SourceYAML("reader", ""), p.OAuth2SourceYAML("writer", ""), upURL))
	cs := connectClient(t, ctx, gw.URL)
	if _, err := whoamiHash(ctx, cs, "up__whoami"); err != nil {
		t.Fatal(err)
	}
	if _, err := p.RevokeClient(ctx, "reader", true); err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "up__whoami"})
		if err != nil {
			t.Fatal(err)
		}
		f := typedFailure(t, "read tool", res)
		if f["type"] != "auth_failure" || f["credential"] != "read" {
			t.Errorf("read call %d: %v, want an auth_failure naming read", i, f)
		}
		w, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "up__echo", Arguments: map[string]any{"text": "w"}})
		if err != nil || w.IsError {
			t.Errorf("write call %d: %v %v", i, err, w)
		}
	}
	h := gw.Health(t)
	if st := credHealth(h, "read")["status"]; st == "healthy" {
		t.Errorf("read credential healthy after its client was revoked")
	}
	if st := credHealth(h, "write")["status"]; st != "healthy" {
		t.Errorf("write credential %v, want healthy", st)
	}
}

// Acceptance 6: a stdio upstream with env injection rotated under load: its
// child restarts with the new token and no call fails.
func TestCredentialStdioEnvRotation(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	p := startOIDC(t, &oidcOptions{AccessTTL: 600 * time.Second})
	tok1, err := p.ClientCredentials(ctx, "gateway")
	if err != nil {
		t.Fatal(err)
	}
	tok2, err := p.ClientCredentials(ctx, "gateway")
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "token")
	atomicWrite(t, path, tok1.AccessToken)
	args, _ := json.Marshal(append([]string{"--transport", "stdio", "--env-token", "API_TOKEN"}, p.UpstreamArgs("upstream")...))
	gw := startGateway(t, fmt.Sprintf(`
credentials:
  api: {source: {file: %s}, inject: {env: API_TOKEN}}
upstreams:
  up: {command: %q, args: %s, credential: api}
`, path, requireBin(t, "testupstream"), args))
	cs := agents(t, ctx, gw.URL, 4)
	if h, err := whoamiHash(ctx, cs[0], "up__whoami"); err != nil || h != tokenHash(tok1.AccessToken) {
		t.Fatalf("whoami = %q, %v; want the first token", h, err)
	}
	stop := make(chan struct{})
	res, wg := runLoad(ctx, cs, "up__echo", 10*time.Millisecond, stop)
	if err := poll(ctx, func() (bool, error) { return res.calls.Load() > 40, nil }); err != nil {
		t.Fatal(err)
	}
	atomicWrite(t, path, tok2.AccessToken)
	if err := poll(ctx, func() (bool, error) {
		h, err := whoamiHash(ctx, cs[0], "up__whoami")
		return h == tokenHash(tok2.AccessToken), err
	}); err != nil {
		t.Fatalf("the child never got the new token: %v", err)
	}
	before := res.calls.Load()
	if err := poll(ctx, func() (bool, error) { return res.calls.Load() > before+40, nil }); err != nil {
		t.Fatal(err)
	}
	close(stop)
	wg.Wait()
	if len(res.failures) > 0 {
		t.Errorf("%d of %d calls failed during the rotation: %v", len(res.failures), res.calls.Load(), res.failures[:min(3, len(res.failures))])
	}
	if h := gw.Health(t)["upstreams"].(map[string]any)["up"].(map[string]any); h["status"] != "up" {
		t.Errorf("upstream %v after the rotation", h["status"])
	}
}

// Acceptance 7: start-up with one missing and one expired credential under
// fail_on: expired: exit non-zero naming both.
func TestCredentialStartupRefuses(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	upURL := startUpstreamHTTP(t)
	path := writeConfig(t, fmt.Sprintf(`
lifecycle: {startup: {fail_on: expired}}
credentials:
  gone: {source: {env: CREDGATE_E2E_SURELY_UNSET}}
  old: {source: {value: old-secret-0123456789}, expires_at: "2020-01-01T00:00:00Z"}
upstreams:
  up:
    url: %s
    credentials: [{tools: [echo], credential: gone}, {tools: ["*"], credential: old}]
`, upURL))
	code, _, errOut := runGatewayCmd(t, ctx, "serve", "--config", path, "--listen", "127.0.0.1:0")
	if code == 0 {
		t.Fatalf("the gateway started with a missing and an expired credential\n%s", errOut)
	}
	for _, want := range []string{`credential \"gone\": missing`, `credential \"old\": expired`} {
		if !strings.Contains(errOut, want) {
			t.Errorf("stderr lacks %s:\n%s", want, errOut)
		}
	}
	if strings.Contains(errOut, "old-secret") {
		t.Error("stderr shows a secret")
	}
}

func sign(key, body string) string {
	m := hmac.New(sha256.New, []byte(key))
	m.Write([]byte(body))
	return "sha256=" + hex.EncodeToString(m.Sum(nil))
}

func postTo(ctx context.Context, url string, header map[string]string, body string) (int, string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, strings.NewReader(body))
	if err != nil {
		return 0, "", err
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), nil
}

// Acceptance 8, with the admin endpoint and SIGHUP: a webhook with a bad
// signature changes nothing, a good one rotates; the admin reload and
// SIGHUP re-read the source too.
func TestCredentialWebhookAdminSignal(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	p := startOIDC(t, &oidcOptions{AccessTTL: 600 * time.Second})
	upURL := startUpstreamHTTP(t, p.UpstreamArgs("upstream")...)
	toks, path := tokenFile(t, ctx, p, 4)
	gw := startGateway(t, fmt.Sprintf(`
admin: {token: e2e-admin-token-0123456789}
webhooks: {secret: e2e-hook-secret-0123456789}
credentials:
  api: {source: {exec: {command: [cat, %s]}}}
upstreams:
  up: {url: %s, credential: api}
`, path, upURL))
	cs := connectClient(t, ctx, gw.URL)
	current := func() string {
		h, err := whoamiHash(ctx, cs, "up__whoami")
		if err != nil {
			t.Fatal(err)
		}
		return h
	}
	if current() != tokenHash(toks[0]) {
		t.Fatal("not the first token")
	}
	base := "http://" + gw.Addr
	atomicWrite(t, path, toks[1])
	body := `{"event":"rotated"}`
	for _, sig := range []string{"", "sha256=00", sign("wrong-key", body)} {
		code, _, err := postTo(ctx, base+"/webhooks/rotate/api", map[string]string{"X-Credgate-Signature": sig}, body)
		if err != nil || code != http.StatusUnauthorized {
			t.Errorf("webhook with signature %q: %d %v, want 401", sig, code, err)
		}
	}
	if current() != tokenHash(toks[0]) {
		t.Error("a bad webhook changed the credential")
	}
	code, _, err := postTo(ctx, base+"/webhooks/rotate/api", map[string]string{"X-Credgate-Signature": sign("e2e-hook-secret-0123456789", body)}, body)
	if err != nil || code != http.StatusOK || current() != tokenHash(toks[1]) {
		t.Errorf("signed webhook: %d %v; the next call does not use the new token", code, err)
	}
	if code, _, _ := postTo(ctx, base+"/webhooks/rotate/nope", map[string]string{"X-Credgate-Signature": sign("e2e-hook-secret-0123456789", "")}, ""); code != http.StatusNotFound {
		t.Errorf("webhook for an unknown credential: %d, want 404", code)
	}

	atomicWrite(t, path, toks[2])
	if code, _, _ := postTo(ctx, base+"/admin/credentials/api/reload", map[string]string{"Authorization": "Bearer wrong"}, ""); code != http.StatusUnauthorized {
		t.Errorf("admin reload with a wrong token: %d, want 401", code)
	}
	code, _, err = postTo(ctx, base+"/admin/credentials/api/reload", map[string]string{"Authorization": "Bearer e2e-admin-token-0123456789"}, "")
	if err != nil || code != http.StatusOK || current() != tokenHash(toks[2]) {
		t.Errorf("admin reload: %d %v; the next call does not use the new token", code, err)
	}

	atomicWrite(t, path, toks[3])
	if err := syscall.Kill(gw.Pid(), syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	if err := poll(ctx, func() (bool, error) { return current() == tokenHash(toks[3]), nil }); err != nil {
		t.Errorf("SIGHUP did not re-read the credential: %v", err)
	}
	if !gw.logged("SIGHUP: reloading the config and re-reading every credential") {
		t.Error("SIGHUP does not say it reloads")
	}
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, base+"/admin/events", nil)
	req.Header.Set("Authorization", "Bearer e2e-admin-token-0123456789")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var ev struct {
		Events []struct {
			Kind, Trigger, Credential string
			Upstreams                 []string
		} `json:"events"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&ev); err != nil {
		t.Fatal(err)
	}
	var triggers []string
	for _, e := range ev.Events {
		if e.Kind == "rotated" {
			triggers = append(triggers, e.Trigger)
		}
	}
	if fmt.Sprint(triggers) != "[webhook admin signal]" {
		t.Errorf("rotations by %v, want [webhook admin signal]", triggers)
	}
}

// Acceptance 9: known secret values (tokens, a client secret, the admin
// token and the webhook secret) never appear in logs, health, events,
// `check` output or results, even when the upstream echoes them.
func TestCredentialSecretsOnNoSurface(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	p := startOIDC(t, &oidcOptions{AccessTTL: 5 * time.Second})
	upURL := startUpstreamHTTP(t, p.UpstreamArgs("upstream")...)
	tok, err := p.ClientCredentials(ctx, "gateway")
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "token")
	atomicWrite(t, path, tok.AccessToken)
	cfg := fmt.Sprintf(`
admin: {token: e2e-admin-token-0123456789}
webhooks: {secret: e2e-hook-secret-0123456789}
credentials:
  file: {source: {file: %s}}
  oauth: {source: {oauth2: %s}}
upstreams:
  up:
    url: %s
    credentials: [{tools: [whoami], credential: file}, {tools: ["*"], credential: oauth}]
`, path, p.OAuth2SourceYAML("gateway", ""), upURL)
	secrets := []string{tok.AccessToken, p.Client(t, "gateway").Secret, "e2e-admin-token-0123456789", "e2e-hook-secret-0123456789"}
	gw := startGateway(t, cfg)
	gw.AdminToken = "e2e-admin-token-0123456789" // /health is an ops endpoint (issue 9)
	cs := connectClient(t, ctx, gw.URL)
	var results []string
	for _, s := range append(secrets, "x") {
		for _, tool := range []string{"up__echo", "up__whoami"} {
			r, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: tool, Arguments: map[string]any{"text": s}})
			if err != nil {
				t.Fatal(err)
			}
			b, _ := json.Marshal(r)
			results = append(results, string(b))
		}
	}
	// A rejection quoting the token: revoke it.
	if err := p.Revoke(ctx, "gateway", tok.AccessToken); err != nil {
		t.Fatal(err)
	}
	r, _ := cs.CallTool(ctx, &mcp.CallToolParams{Name: "up__whoami"})
	b, _ := json.Marshal(r)
	results = append(results, string(b))
	h, _ := json.Marshal(gw.Health(t))
	if !strings.Contains(string(h), `"upstreams"`) {
		t.Fatalf("/health = %s; want the health document", h)
	}
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+gw.Addr+"/admin/events", nil)
	req.Header.Set("Authorization", "Bearer e2e-admin-token-0123456789")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	events, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	_, checkOut, checkErr := runGatewayCmd(t, ctx, "check", "--config", writeConfig(t, cfg))
	surfaces := map[string]string{"logs": gw.Logs(), "health": string(h), "events": string(events), "check": checkOut + checkErr, "results": strings.Join(results, "\n")}
	for name, text := range surfaces {
		for i, s := range secrets {
			if strings.Contains(text, s) {
				t.Errorf("%s show secret %d", name, i)
			}
		}
	}
}
