package e2e

// Acceptance tests of issue 10 (ops surface) on the built binary: alerts to
// local receivers in PagerDuty, Slack and generic formats after a real
// revocation at the token authority (e2e/oidc), and the /events stream.

import (
	"bufio"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// startGatewayEnv is startGateway with extra environment variables (the
// config's ${NAME} references).
func startGatewayEnv(t *testing.T, configYAML string, env ...string) *gatewayProc {
	t.Helper()
	path := requireBin(t, "gateway")
	cfg := filepath.Join(t.TempDir(), "gateway.yaml")
	if err := os.WriteFile(cfg, []byte(configYAML), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(path, "serve", "--config", cfg, "--listen", "127.0.0.1:0", "--log-level", "debug")
	cmd.Env = append(os.Environ(), env...)
	p := startCmd(t, context.Background(), "gateway", cmd)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	m, err := p.waitFunc(ctx, listenAddr)
	if err != nil {
		t.Fatalf("gateway did not log its listen address: %v\n%s", err, p.Output())
	}
	g := &gatewayProc{proc: p, Addr: m[1], URL: "http://" + m[1] + "/mcp", ConfigPath: cfg}
	if err := g.waitReady(ctx); err != nil {
		t.Fatalf("gateway not ready: %v\n%s", err, p.Output())
	}
	return g
}

// hookReceiver records the notifications POSTed to it, with when each came.
type hookReceiver struct {
	srv    *httptest.Server
	mu     sync.Mutex
	got    []hookRequest
	signal chan struct{}
}

type hookRequest struct {
	at     time.Time
	path   string
	header http.Header
	body   []byte
}

func newHookReceiver(t *testing.T) *hookReceiver {
	r := &hookReceiver{signal: make(chan struct{}, 1)}
	r.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		b, _ := io.ReadAll(req.Body)
		r.mu.Lock()
		r.got = append(r.got, hookRequest{time.Now(), req.URL.Path, req.Header.Clone(), b})
		r.mu.Unlock()
		select {
		case r.signal <- struct{}{}:
		default:
		}
		w.WriteHeader(http.StatusAccepted)
	}))
	t.Cleanup(r.srv.Close)
	return r
}

func (r *hookReceiver) all() []hookRequest {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.got)
}

// waitN waits until n notifications arrived.
func (r *hookReceiver) waitN(t *testing.T, ctx context.Context, n int) []hookRequest {
	t.Helper()
	for {
		if got := r.all(); len(got) >= n {
			return got
		}
		select {
		case <-r.signal:
		case <-ctx.Done():
			t.Fatalf("receiver got %d notifications, want %d: %s", len(r.all()), n, r.dump())
		}
	}
}

func (r *hookReceiver) dump() string {
	var b strings.Builder
	for _, g := range r.all() {
		fmt.Fprintf(&b, "\n  %s %s", g.path, g.body)
	}
	return b.String()
}

func decodeJSON(t *testing.T, b []byte) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("%v: %s", err, b)
	}
	return m
}

// Acceptance (issue 10, alerts): a file credential's token revoked at the
// token authority pages once, within a second of the call that found it,
// in PagerDuty's format (and Slack's and a signed generic hook's); an OAuth
// credential whose tokens were revoked too, and which renewed itself, pages
// nobody; rotating the file back resolves the incident with the same
// dedup_key. A receiver that is down slows nothing and its drops are
// counted; no secret reaches the logs, health or events.
func TestAlertsRevokeAndResolve(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	p := startOIDC(t, &oidcOptions{AccessTTL: 600 * time.Second,
		Clients: []oidcClient{{ID: "gateway"}, {ID: "auto"}, {ID: "upstream", Grants: []string{}}}})
	upURL := startUpstreamHTTP(t, p.UpstreamArgs("upstream")...)
	tok1, err := p.ClientCredentials(ctx, "gateway")
	if err != nil {
		t.Fatal(err)
	}
	tokPath := filepath.Join(t.TempDir(), "token")
	atomicWrite(t, tokPath, tok1.AccessToken)
	pd, slack, hooks := newHookReceiver(t), newHookReceiver(t), newHookReceiver(t)
	down := httptest.NewServer(http.NotFoundHandler())
	down.Close()
	const (
		pdKey     = "e2e-pd-routing-key-0123456789abcd"
		hookKey   = "e2e-hook-secret-0123456789"
		slackPath = "/services/T0E2E/B0E2E/e2eslacktoken0123456789"
	)
	gw := startGatewayEnv(t, fmt.Sprintf(`
health_interval: 1h
admin: {token: %s}
credentials:
  api: {source: {file: %s}}
  auto: {source: {oauth2: %s}}
upstreams:
  up: {url: %s, credential: api}
  self: {url: %s, credential: auto}
notify:
  - {name: oncall, format: pagerduty, url: %q, routing_key: "${E2E_PD_KEY}"}
  - {name: chat, format: slack, url: "${E2E_SLACK_URL}"}
  - {name: hooks, format: generic, url: %q, secret: "${E2E_HOOK_SECRET}"}
  - {name: dead, format: generic, url: %q}
`, e2eAdminToken, tokPath, p.OAuth2SourceYAML("auto", ""), upURL, upURL, pd.srv.URL+"/v2/enqueue", hooks.srv.URL+"/hook", down.URL+"/hook"),
		"E2E_PD_KEY="+pdKey, "E2E_HOOK_SECRET="+hookKey, "E2E_SLACK_URL="+slack.srv.URL+slackPath)
	cs := connectClient(t, ctx, gw.URL)
	for _, tool := range []string{"up__whoami", "self__whoami"} {
		if _, err := whoamiHash(ctx, cs, tool); err != nil {
			t.Fatal(err)
		}
	}

	// The OAuth credential's tokens die at the provider; the gateway renews
	// it on the rejection, and the call goes through.
	before, _ := whoamiHash(ctx, cs, "self__whoami")
	if _, err := p.RevokeClient(ctx, "auto", false); err != nil {
		t.Fatal(err)
	}
	after, err := whoamiHash(ctx, cs, "self__whoami")
	if err != nil || after == before {
		t.Fatalf("the OAuth credential did not renew itself: %v (token %s -> %s)", err, before, after)
	}

	// The file credential's token is revoked at the provider; the next call
	// finds it.
	revoked := time.Now()
	if err := p.Revoke(ctx, "gateway", tok1.AccessToken); err != nil {
		t.Fatal(err)
	}
	res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "up__whoami"})
	if err != nil || !res.IsError {
		t.Fatalf("call with the revoked token: %v %v", err, res)
	}
	f := typedFailure(t, "revoked", res)
	got := pd.waitN(t, ctx, 1)
	if d := got[0].at.Sub(revoked); d > time.Second {
		t.Errorf("the trigger reached PagerDuty %s after the revocation, want within 1s", d)
	} else {
		t.Logf("the trigger reached the PagerDuty receiver %s after the revocation at the provider", d.Round(time.Millisecond))
	}
	trig := decodeJSON(t, got[0].body)
	payload, _ := trig["payload"].(map[string]any)
	details, _ := payload["custom_details"].(map[string]any)
	wantKey := "credgate/credential/api/credential_" + strings.TrimPrefix(fmt.Sprint(f["subtype"]), "credential_")
	if got[0].path != "/v2/enqueue" || trig["event_action"] != "trigger" || trig["routing_key"] != pdKey || trig["dedup_key"] != wantKey ||
		payload["severity"] != "critical" || payload["source"] == nil || payload["timestamp"] == nil ||
		fmt.Sprint(details["tools"]) != "[up__*]" || fmt.Sprint(details["upstreams"]) != "[up]" || details["credential"] != "api" ||
		details["subtype"] != f["subtype"] || details["recovery"] == "" || details["since"] == nil {
		t.Errorf("PagerDuty trigger (want dedup_key %s):\n%s", wantKey, got[0].body)
	}
	s := slack.waitN(t, ctx, 1)
	if sm := decodeJSON(t, s[0].body); !strings.Contains(fmt.Sprint(sm["text"]), `credential "api"`) || sm["blocks"] == nil || s[0].path != slackPath {
		t.Errorf("Slack message: %s", s[0].body)
	}
	h := hooks.waitN(t, ctx, 1)
	mac := hmac.New(sha256.New, []byte(hookKey))
	mac.Write(h[0].body)
	if sig := h[0].header.Get("X-Credgate-Signature"); sig != "sha256="+hex.EncodeToString(mac.Sum(nil)) {
		t.Errorf("generic hook signature %q does not verify", sig)
	}
	if hm := decodeJSON(t, h[0].body); hm["action"] != "trigger" || hm["dedup_key"] != wantKey || hm["credential"] != "api" {
		t.Errorf("generic hook: %s", h[0].body)
	}

	// Calls are not slowed by the receiver that is down (its worker retries
	// on its own).
	var slowest time.Duration
	for range 20 {
		start := time.Now()
		if _, err := whoamiHash(ctx, cs, "self__whoami"); err != nil {
			t.Fatal(err)
		}
		slowest = max(slowest, time.Since(start))
	}
	t.Logf("slowest of 20 calls while a receiver is down: %s", slowest.Round(time.Millisecond))

	// Rotate back: one resolve, same key.
	tok2, err := p.ClientCredentials(ctx, "gateway")
	if err != nil {
		t.Fatal(err)
	}
	atomicWrite(t, tokPath, tok2.AccessToken)
	got = pd.waitN(t, ctx, 2)
	if r := decodeJSON(t, got[1].body); r["event_action"] != "resolve" || r["dedup_key"] != wantKey || r["routing_key"] != pdKey {
		t.Errorf("PagerDuty resolve: %s", got[1].body)
	}
	if _, err := whoamiHash(ctx, cs, "up__whoami"); err != nil {
		t.Errorf("call after the rotation: %v", err)
	}
	slack.waitN(t, ctx, 2)
	hooks.waitN(t, ctx, 2)

	// The receiver that is down: the trigger is dropped after its retries
	// (about 15 s), counted in /health.
	hh, err := gw.waitHealth(ctx, func(h map[string]any) bool {
		n, _ := h["notify"].(map[string]any)
		d, _ := n["dead"].(map[string]any)
		return d["dropped"] == 1.0
	})
	if err != nil {
		t.Fatal(err)
	}
	if got := pd.all(); len(got) != 2 {
		t.Errorf("PagerDuty got %d notifications, want one trigger and one resolve:%s", len(got), pd.dump())
	}
	if strings.Contains(pd.dump()+slack.dump()+hooks.dump(), "auto") {
		t.Errorf("the credential that renewed itself paged someone:%s", pd.dump())
	}
	health, _ := json.Marshal(hh)
	events := adminEvents(t, ctx, gw)
	for name, text := range map[string]string{"logs": gw.Logs(), "health": string(health), "events": events} {
		for _, secret := range []string{pdKey, hookKey, "e2eslacktoken0123456789", tok1.AccessToken, tok2.AccessToken} {
			if strings.Contains(text, secret) {
				t.Errorf("%s show a secret (%.12s...)", name, secret)
			}
		}
	}
}

const e2eAdminToken = "e2e-admin-token-0123456789"

// adminEvents returns GET /admin/events (the whole ring) as text.
func adminEvents(t *testing.T, ctx context.Context, gw *gatewayProc) string {
	t.Helper()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+gw.Addr+"/admin/events", nil)
	req.Header.Set("Authorization", "Bearer "+e2eAdminToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /admin/events: %s %s", resp.Status, b)
	}
	return string(b)
}

type sseMsg struct{ id, event, data string }

// openSSE opens an event stream, sending lastID as Last-Event-ID when set.
func openSSE(t *testing.T, ctx context.Context, url, lastID string) <-chan sseMsg {
	t.Helper()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if lastID != "" {
		req.Header.Set("Last-Event-ID", lastID)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s", url, resp.Status)
	}
	out := make(chan sseMsg, 256)
	go func() {
		defer resp.Body.Close()
		defer close(out)
		r := bufio.NewReader(resp.Body)
		var m sseMsg
		for {
			line, err := r.ReadString('\n')
			if err != nil {
				return
			}
			line = strings.TrimRight(line, "\n")
			switch {
			case line == "":
				if m.data != "" {
					select {
					case out <- m:
					case <-ctx.Done():
						return
					}
				}
				m = sseMsg{}
			case strings.HasPrefix(line, "id: "):
				m.id = line[4:]
			case strings.HasPrefix(line, "event: "):
				m.event = line[7:]
			case strings.HasPrefix(line, "data: "):
				m.data = line[6:]
			}
		}
	}()
	return out
}

// streamEvent is the part of a bus event these tests read.
type streamEvent struct {
	ID         uint64 `json:"id"`
	Type       string `json:"type"`
	Kind       string `json:"kind"`
	Credential string `json:"credential"`
	Status     string `json:"status"`
}

func nextRotation(t *testing.T, ctx context.Context, ch <-chan sseMsg) (sseMsg, streamEvent) {
	t.Helper()
	for {
		select {
		case m, ok := <-ch:
			if !ok {
				t.Fatal("event stream ended")
			}
			var e streamEvent
			if err := json.Unmarshal([]byte(m.data), &e); err != nil {
				t.Fatalf("event %q: %v", m.data, err)
			}
			if m.id != fmt.Sprint(e.ID) {
				t.Errorf("SSE id %q, event id %d", m.id, e.ID)
			}
			if e.Type == "credential" && e.Kind == "rotated" {
				return m, e
			}
		case <-ctx.Done():
			t.Fatal("no rotation event in time")
		}
	}
}

// Acceptance (issue 10, live events): GET /events delivers the rotations of
// a file credential in order, each with its id, and a client that comes back
// with Last-Event-ID gets exactly the events it missed, in order.
func TestEventsStreamInOrderAndResumes(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	upURL := startUpstreamHTTP(t)
	path := filepath.Join(t.TempDir(), "token")
	atomicWrite(t, path, "e2e-events-token-0")
	gw := startGateway(t, fmt.Sprintf("admin: {token: %s}\ncredentials:\n  api: {source: {file: %s}}\nupstreams:\n  up: {url: %s, credential: api}\n", e2eAdminToken, path, upURL))
	events := "http://" + gw.Addr + "/events"
	sctx, stop := context.WithCancel(ctx)
	ch := openSSE(t, sctx, events, "")
	var ids []uint64
	for i := 1; i <= 3; i++ {
		atomicWrite(t, path, fmt.Sprintf("e2e-events-token-%d", i))
		m, e := nextRotation(t, ctx, ch)
		if strings.Contains(m.data, "e2e-events-token") {
			t.Errorf("event shows the token: %s", m.data)
		}
		ids = append(ids, e.ID)
	}
	stop()
	last := ids[len(ids)-1]
	// Two rotations while the client is away; wait for the gateway to hold
	// each before the next (a watch coalesces writes in quick succession).
	var missed []uint64
	for i := 4; i <= 5; i++ {
		atomicWrite(t, path, fmt.Sprintf("e2e-events-token-%d", i))
		if err := poll(ctx, func() (bool, error) {
			return strings.Count(adminEvents(t, ctx, gw), `"kind": "rotated"`) >= i, nil
		}); err != nil {
			t.Fatalf("rotation %d never reached the event log: %v", i, err)
		}
	}
	ch = openSSE(t, ctx, events, fmt.Sprint(last))
	for len(missed) < 2 {
		select {
		case m := <-ch:
			var e streamEvent
			if err := json.Unmarshal([]byte(m.data), &e); err != nil || m.event != "" {
				t.Fatalf("resumed stream: %+v (%v)", m, err)
			}
			if e.ID <= last {
				t.Fatalf("resumed after %d, got event %d again", last, e.ID)
			}
			if e.Kind == "rotated" {
				missed = append(missed, e.ID)
			}
		case <-ctx.Done():
			t.Fatalf("the resumed stream gave %v, want 2 rotations", missed)
		}
	}
	all := append(ids, missed...)
	if !slices.IsSorted(all) || len(slices.Compact(slices.Clone(all))) != 5 {
		t.Errorf("rotation ids %v, want 5 in increasing order", all)
	}
}
