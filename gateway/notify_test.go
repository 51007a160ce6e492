package gateway

import (
	"bytes"
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
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/rs/zerolog"

	"github.com/credgate/credgate/authmap"
	"github.com/credgate/credgate/internal/redistest"
)

// Regression tests for issue 10 (alerts).

func TestNotifyConfigErrors(t *testing.T) {
	t.Parallel()
	env := []string{"PD_KEY=pd-routing-key-0123456789abcdef", "SLACK_URL=https://hooks.slack.com/services/T0/B0/slacksecret0123456789"}
	for _, tc := range []struct {
		name, yaml string
		want       []string
	}{
		{"missing name and format", `notify: [{url: "https://x.example/h"}]`,
			[]string{"notify[0].name: missing", "notify[0].format: missing"}},
		{"unknown format with a hint", `notify: [{name: a, format: pagerduti, routing_key: k0123456789}]`,
			[]string{`notify[0].format: unknown format "pagerduti" (did you mean pagerduty?)`}},
		{"pagerduty without routing key", `notify: [{name: a, format: pagerduty}]`,
			[]string{"notify[0].routing_key: missing: a pagerduty notifier needs"}},
		{"slack without url", `notify: [{name: a, format: slack}]`, []string{"notify[0].url: missing: a slack notifier needs a url"}},
		{"bad slack url not shown", `notify: [{name: a, format: slack, url: "ftp://hooks/${SLACK_URL}"}]`,
			[]string{"notify[0].url: invalid url (not shown: a Slack webhook URL is a secret)"}},
		{"keys of other formats", `notify: [{name: a, format: slack, url: "${SLACK_URL}", routing_key: x0123456789, secret: s0123456789}]`,
			[]string{"notify[0].routing_key: applies to format pagerduty only", "notify[0].secret: applies to format generic only"}},
		{"unknown condition with a hint", `notify: [{name: a, format: generic, url: "https://x.example/h", on: [credential_revokd]}]`,
			[]string{`notify[0].on[0]: unknown condition "credential_revokd" (did you mean credential_revoked?)`}},
		{"duplicate names, negative interval", `notify: [{name: a, format: generic, url: "https://x.example/h"}, {name: a, format: generic, url: "https://x.example/h", min_interval: -1s}]`,
			[]string{`notify[1].name: "a" is also the name of notify[0]`, "notify[1].min_interval: negative duration"}},
		{"unknown key", `notify: [{name: a, format: generic, url: "https://x.example/h", routingkey: x}]`,
			[]string{"notify[0].routingkey: unknown key (did you mean routing_key?)"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, err := ParseConfig([]byte(tc.yaml), env)
			if err == nil {
				t.Fatal("no error")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error lacks %q:\n%v", w, err)
				}
			}
			for _, secret := range []string{"slacksecret0123456789", "pd-routing-key-0123456789abcdef"} {
				if strings.Contains(err.Error(), secret) {
					t.Errorf("error shows a secret: %v", err)
				}
			}
		})
	}
	cfg, err := ParseConfig([]byte(`notify: [{name: oncall, format: pagerduty, routing_key: "${PD_KEY}"}, {name: chat, format: slack, url: "${SLACK_URL}", on: [credential_revoked, breaker_open_long], min_interval: 1m}]`), env)
	if err != nil {
		t.Fatal(err)
	}
	if got := cfg.Notify[0].url(); got != DefaultPagerDutyURL {
		t.Errorf("pagerduty url %q, want the default", got)
	}
	if diff := cmp.Diff(defaultConditions, cfg.Notify[0].conditions()); diff != "" {
		t.Errorf("default conditions mismatch (-want +got):\n%s", diff)
	}
	if cfg.Notify[0].minInterval() != DefaultNotifyMinInterval || cfg.Notify[1].minInterval() != time.Minute {
		t.Errorf("min intervals %s %s", cfg.Notify[0].minInterval(), cfg.Notify[1].minInterval())
	}
}

// notifyServer builds (without starting) a gateway for yaml whose notifiers
// are inspected through their queues.
func notifyServer(t *testing.T, yaml string) *Server {
	t.Helper()
	cfg, err := ParseConfig([]byte(yaml), nil)
	if err != nil {
		t.Fatal(err)
	}
	log := zerolog.New(zerolog.NewTestWriter(t))
	g, err := New(cfg, &Options{Logger: &log})
	if err != nil {
		t.Fatal(err)
	}
	return g
}

// drain returns what is queued on the notifier named name: "action key".
func drain(t *testing.T, g *Server, name string) []string {
	t.Helper()
	var out []string
	for _, s := range g.notify.sinks {
		if s.cfg.Name != name {
			continue
		}
		for {
			select {
			case d := <-s.queue:
				out = append(out, d.action+" "+d.key)
				continue
			default:
			}
			break
		}
	}
	return out
}

func credEvent(kind authmap.EventKind, status authmap.Status) Event {
	return Event{Type: EventCredential, Kind: string(kind), Credential: "tok", Status: status.String(),
		Upstreams: []string{"api"}, Tools: []string{"api__*"}}
}

// oauthEvent is credEvent for the renewable credential "oauth".
func oauthEvent(kind authmap.EventKind, status authmap.Status) Event {
	e := credEvent(kind, status)
	e.Credential = "oauth"
	return e
}

const notifyBase = `
credentials:
  tok: {source: {value: tok-0123456789}}
  oauth: {source: {oauth2: {token_url: "http://127.0.0.1:1/token", client_id: c, client_secret: s0123456789}}}
upstreams:
  api: {url: "http://127.0.0.1:1/mcp", credential: tok}
notify:
  - {name: pd, format: pagerduty, url: "http://127.0.0.1:1/pd", routing_key: pd-key-0123456789, on: [credential_revoked, credential_invalid, credential_missing, credential_expired_unrenewable, credential_expiring, breaker_open_long, route_no_target]}
`

// One trigger per condition, a resolve with the same key on recovery;
// min_interval defers a trigger of a condition that comes back too soon.
func TestNotifyTriggerResolveMinInterval(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		g := notifyServer(t, notifyBase)
		key := "credgate/credential/tok/credential_revoked"
		g.publish(credEvent(authmap.EventLoaded, authmap.StatusHealthy))
		g.publish(credEvent(authmap.EventRevoked, authmap.StatusRevoked))
		g.publish(credEvent(authmap.EventRevoked, authmap.StatusRevoked))
		if diff := cmp.Diff([]string{"trigger " + key}, drain(t, g, "pd")); diff != "" {
			t.Errorf("revoked twice (-want +got):\n%s", diff)
		}
		g.publish(credEvent(authmap.EventRotated, authmap.StatusHealthy))
		if diff := cmp.Diff([]string{"resolve " + key}, drain(t, g, "pd")); diff != "" {
			t.Errorf("rotated (-want +got):\n%s", diff)
		}
		time.Sleep(time.Minute)
		g.publish(credEvent(authmap.EventRevoked, authmap.StatusRevoked))
		if got := drain(t, g, "pd"); len(got) != 0 {
			t.Errorf("revoked again 1m after the trigger: %v, want nothing before min_interval", got)
		}
		time.Sleep(DefaultNotifyMinInterval)
		synctest.Wait()
		if diff := cmp.Diff([]string{"trigger " + key}, drain(t, g, "pd")); diff != "" {
			t.Errorf("after min_interval (-want +got):\n%s", diff)
		}
		// Flapping inside the interval: the deferred trigger is cancelled
		// when the condition clears first.
		g.publish(credEvent(authmap.EventRotated, authmap.StatusHealthy))
		g.publish(credEvent(authmap.EventRevoked, authmap.StatusRevoked))
		g.publish(credEvent(authmap.EventRotated, authmap.StatusHealthy))
		time.Sleep(2 * DefaultNotifyMinInterval)
		synctest.Wait()
		if diff := cmp.Diff([]string{"resolve " + key}, drain(t, g, "pd")); diff != "" {
			t.Errorf("flapping (-want +got):\n%s", diff)
		}
	})
}

// Expiring then expired: expired takes over, expiring resolves; expired
// resolves when a new value is healthy. A rate limit pages nobody.
func TestNotifyExpiringExpiredRateLimit(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		g := notifyServer(t, notifyBase)
		g.publish(credEvent(authmap.EventRateLimited, authmap.StatusRateLimited))
		g.publish(credEvent(authmap.EventRestored, authmap.StatusHealthy))
		if got := drain(t, g, "pd"); len(got) != 0 {
			t.Errorf("rate limit: %v, want nothing", got)
		}
		g.publish(credEvent(authmap.EventExpiring, authmap.StatusExpiring))
		g.publish(credEvent(authmap.EventExpired, authmap.StatusExpired))
		want := []string{"trigger credgate/credential/tok/credential_expiring",
			"trigger credgate/credential/tok/credential_expired_unrenewable", "resolve credgate/credential/tok/credential_expiring"}
		if diff := cmp.Diff(want, drain(t, g, "pd")); diff != "" {
			t.Errorf("expiring, expired (-want +got):\n%s", diff)
		}
		g.publish(credEvent(authmap.EventRotated, authmap.StatusHealthy))
		if diff := cmp.Diff([]string{"resolve credgate/credential/tok/credential_expired_unrenewable"}, drain(t, g, "pd")); diff != "" {
			t.Errorf("rotated (-want +got):\n%s", diff)
		}
		// A new value that is itself expiring: revoked resolves, expiring triggers.
		g.publish(credEvent(authmap.EventRevoked, authmap.StatusRevoked))
		drain(t, g, "pd")
		time.Sleep(DefaultNotifyMinInterval)
		g.publish(credEvent(authmap.EventRotated, authmap.StatusExpiring))
		want = []string{"resolve credgate/credential/tok/credential_revoked", "trigger credgate/credential/tok/credential_expiring"}
		if diff := cmp.Diff(want, drain(t, g, "pd")); diff != "" {
			t.Errorf("rotated to an expiring value (-want +got):\n%s", diff)
		}
	})
}

// TestNotifyExpiredResolvesExpiring: credential_expiring holds while the
// credential is within its warning, not once it expired. It stayed open
// beside credential_expired_unrenewable until the credential was healthy
// again (found trying the gateway from outside). Expiring again (a call's
// "expired" cleared inside the warning) resolves expired in turn.
func TestNotifyExpiredResolvesExpiring(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		g := notifyServer(t, notifyBase)
		const expiring, expired = "credgate/credential/tok/credential_expiring", "credgate/credential/tok/credential_expired_unrenewable"
		g.publish(credEvent(authmap.EventLoaded, authmap.StatusHealthy))
		g.publish(credEvent(authmap.EventExpiring, authmap.StatusExpiring))
		g.publish(credEvent(authmap.EventExpired, authmap.StatusExpired))
		if diff := cmp.Diff([]string{"trigger " + expiring, "trigger " + expired, "resolve " + expiring}, drain(t, g, "pd")); diff != "" {
			t.Errorf("expiring, then expired (-want +got):\n%s", diff)
		}
		time.Sleep(DefaultNotifyMinInterval)
		g.publish(credEvent(authmap.EventRestored, authmap.StatusExpiring))
		if diff := cmp.Diff([]string{"resolve " + expired, "trigger " + expiring}, drain(t, g, "pd")); diff != "" {
			t.Errorf("expiring again (-want +got):\n%s", diff)
		}
		// Revoked meanwhile does not end expiring: both hold.
		g.publish(credEvent(authmap.EventRevoked, authmap.StatusRevoked))
		if diff := cmp.Diff([]string{"trigger credgate/credential/tok/credential_revoked"}, drain(t, g, "pd")); diff != "" {
			t.Errorf("revoked while expiring (-want +got):\n%s", diff)
		}
		g.publish(credEvent(authmap.EventRotated, authmap.StatusHealthy))
		got := drain(t, g, "pd")
		slices.Sort(got)
		if diff := cmp.Diff([]string{"resolve " + expiring, "resolve credgate/credential/tok/credential_revoked"}, got); diff != "" {
			t.Errorf("rotated to a fresh value (-want +got):\n%s", diff)
		}
	})
}

// TestNotifyExpiryWatchResolvesExpiring is TestNotifyExpiredResolvesExpiring
// through the expiry watch: a credential with expires_at 20s ahead.
func TestNotifyExpiryWatchResolvesExpiring(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		ctx, cancel := context.WithTimeout(t.Context(), time.Hour)
		defer cancel()
		exp := time.Now().Add(20 * time.Second).UTC().Format(time.RFC3339)
		g := notifyServer(t, `
credentials:
  tok: {source: {value: tok-0123456789}, expires_at: "`+exp+`"}
upstreams:
  api: {url: "http://127.0.0.1:1/mcp", credential: tok}
lifecycle: {check_interval: 5s}
notify:
  - {name: pd, format: pagerduty, url: "http://127.0.0.1:1/pd", routing_key: pd-key-0123456789}
`)
		done := make(chan struct{})
		go func() {
			defer close(done)
			g.runCredentials(ctx)
		}()
		synctest.Wait()
		if diff := cmp.Diff([]string{"trigger credgate/credential/tok/credential_expiring"}, drain(t, g, "pd")); diff != "" {
			t.Errorf("loaded 20s before expiry (-want +got):\n%s", diff)
		}
		time.Sleep(30 * time.Second)
		synctest.Wait()
		want := []string{"trigger credgate/credential/tok/credential_expired_unrenewable", "resolve credgate/credential/tok/credential_expiring"}
		if diff := cmp.Diff(want, drain(t, g, "pd")); diff != "" {
			t.Errorf("past expiry (-want +got):\n%s", diff)
		}
		cancel()
		<-done
	})
}

// A renewable credential's expiring alert stays open through the grace of
// its expiry, and resolves when credential_expired_unrenewable takes over.
func TestNotifyRenewableExpiredTakesOver(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		g := notifyServer(t, notifyBase)
		g.publish(oauthEvent(authmap.EventExpiring, authmap.StatusExpiring))
		g.publish(oauthEvent(authmap.EventExpired, authmap.StatusExpired))
		if diff := cmp.Diff([]string{"trigger credgate/credential/oauth/credential_expiring"}, drain(t, g, "pd")); diff != "" {
			t.Errorf("expiring, expired within the grace (-want +got):\n%s", diff)
		}
		time.Sleep(expiredGrace + time.Second)
		synctest.Wait()
		want := []string{"trigger credgate/credential/oauth/credential_expired_unrenewable", "resolve credgate/credential/oauth/credential_expiring"}
		if diff := cmp.Diff(want, drain(t, g, "pd")); diff != "" {
			t.Errorf("still expired after the grace (-want +got):\n%s", diff)
		}
		g.publish(oauthEvent(authmap.EventRefreshed, authmap.StatusHealthy))
		if diff := cmp.Diff([]string{"resolve credgate/credential/oauth/credential_expired_unrenewable"}, drain(t, g, "pd")); diff != "" {
			t.Errorf("refreshed (-want +got):\n%s", diff)
		}
	})
}

// An OAuth credential (renewable) that expires and is refreshed within the
// grace pages nobody; one still expired after it does.
func TestNotifyRenewableExpiryGrace(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		g := notifyServer(t, notifyBase)
		g.publish(oauthEvent(authmap.EventExpired, authmap.StatusExpired))
		time.Sleep(expiredGrace / 2)
		g.publish(oauthEvent(authmap.EventRefreshed, authmap.StatusHealthy))
		time.Sleep(2 * expiredGrace)
		synctest.Wait()
		if got := drain(t, g, "pd"); len(got) != 0 {
			t.Errorf("expired then refreshed: %v, want nothing", got)
		}
		g.publish(oauthEvent(authmap.EventExpired, authmap.StatusExpired))
		time.Sleep(expiredGrace + time.Second)
		synctest.Wait()
		if diff := cmp.Diff([]string{"trigger credgate/credential/oauth/credential_expired_unrenewable"}, drain(t, g, "pd")); diff != "" {
			t.Errorf("still expired after the grace (-want +got):\n%s", diff)
		}
	})
}

// breaker_open_long: an upstream down whose breaker stays open; route_no_target.
func TestNotifyBreakerAndRoute(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		g := notifyServer(t, notifyBase)
		g.publish(Event{Type: EventBreaker, Kind: KindBreakerOpen, Upstream: "api", Reason: "connect_failed"})
		g.publish(Event{Type: EventBreaker, Kind: KindBreakerHalfOpen, Upstream: "api"})
		g.publish(Event{Type: EventBreaker, Kind: KindBreakerOpen, Upstream: "api", Credential: "tok", Reason: "credential_revoked"})
		time.Sleep(breakerOpenLong - time.Second)
		synctest.Wait()
		if got := drain(t, g, "pd"); len(got) != 0 {
			t.Errorf("before %s: %v", breakerOpenLong, got)
		}
		time.Sleep(2 * time.Second)
		synctest.Wait()
		if diff := cmp.Diff([]string{"trigger credgate/upstream/api/breaker_open_long"}, drain(t, g, "pd")); diff != "" {
			t.Errorf("open long (-want +got):\n%s", diff)
		}
		g.publish(Event{Type: EventUpstream, Kind: KindUpstreamUp, Upstream: "api"})
		if diff := cmp.Diff([]string{"resolve credgate/upstream/api/breaker_open_long"}, drain(t, g, "pd")); diff != "" {
			t.Errorf("up (-want +got):\n%s", diff)
		}
		g.publishRouteSwitch("search", "a", "", "no healthy target")
		g.publishRouteSwitch("search", "", "b", "b is back")
		want := []string{"trigger credgate/route/search/route_no_target", "resolve credgate/route/search/route_no_target"}
		if diff := cmp.Diff(want, drain(t, g, "pd")); diff != "" {
			t.Errorf("route (-want +got):\n%s", diff)
		}
	})
}

// A full queue drops, counted; nothing blocks the publisher.
func TestNotifyQueueFullDrops(t *testing.T) {
	t.Parallel()
	g := notifyServer(t, notifyBase)
	for i := range notifyQueue + 5 {
		g.publishRouteSwitch(fmt.Sprintf("r%d", i), "", "", "down")
	}
	if got := g.NotifyDropped(); got != 5 {
		t.Errorf("dropped %d, want 5", got)
	}
	if h := g.Health().Notify["pd"]; h.Dropped != 5 || h.Queued != notifyQueue || h.LastError != "queue full" {
		t.Errorf("health %+v", h)
	}
}

// receiver records what notifiers POST.
type receiver struct {
	mu     sync.Mutex
	got    []recorded
	status []int // answers to give first, in order; then 202
	srv    *httptest.Server
	signal chan struct{}
}

type recorded struct {
	header http.Header
	body   []byte
}

func newReceiver(t *testing.T, status ...int) *receiver {
	r := &receiver{status: status, signal: make(chan struct{}, 100)}
	r.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		b, _ := io.ReadAll(req.Body)
		r.mu.Lock()
		r.got = append(r.got, recorded{req.Header.Clone(), b})
		code := http.StatusAccepted
		if len(r.status) > 0 {
			code, r.status = r.status[0], r.status[1:]
		}
		r.mu.Unlock()
		w.WriteHeader(code)
		r.signal <- struct{}{}
	}))
	t.Cleanup(r.srv.Close)
	return r
}

func (r *receiver) wait(t *testing.T, ctx context.Context, n int) []recorded {
	t.Helper()
	for {
		r.mu.Lock()
		got := append([]recorded(nil), r.got...)
		r.mu.Unlock()
		if len(got) >= n {
			return got
		}
		select {
		case <-r.signal:
		case <-ctx.Done():
			t.Fatalf("receiver got %d requests, want %d", len(got), n)
		}
	}
}

// Delivery end to end in-process: a revocation a call finds reaches
// PagerDuty (exact Events API v2 shape), Slack and a generic hook (signed)
// once; the rotation resolves it with the same key. A receiver answering
// 5xx is retried; one refusing with 4xx is dropped at once; one that is down
// is dropped after its retries, counted, and no surface shows a secret.
func TestNotifyDelivery(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	pd := newReceiver(t, http.StatusInternalServerError, http.StatusTooManyRequests)
	slack := newReceiver(t)
	hook := newReceiver(t)
	refuse := newReceiver(t, http.StatusBadRequest, http.StatusBadRequest)
	down := httptest.NewServer(http.NotFoundHandler())
	down.Close()
	path := tokenFile(t, "token-v1-0123456789\n")
	up := newBearerUpstream(t, "echo")
	up.accept("token-v1-0123456789")
	const slackPath = "/services/T0/B0/slacktoken0123456789"
	head := fmt.Sprintf(`notify:
  - {name: pd, format: pagerduty, url: %q, routing_key: pd-routing-key-0123456789}
  - {name: chat, format: slack, url: %q}
  - {name: hook, format: generic, url: %q, secret: hook-secret-0123456789}
  - {name: refuse, format: generic, url: %q}
  - {name: down, format: slack, url: %q}
`, pd.srv.URL, slack.srv.URL+slackPath, hook.srv.URL+"/hook", refuse.srv.URL, down.URL+slackPath)
	logs := &syncWriter{w: &bytes.Buffer{}}
	cfg, err := ParseConfig([]byte(tokConfig(head, "source: {file: "+path+"}", up.url())), nil)
	if err != nil {
		t.Fatal(err)
	}
	log := zerolog.New(logs).Level(zerolog.DebugLevel)
	g, err := New(cfg, &Options{Logger: &log, ReconnectMin: 10 * time.Millisecond, ReconnectMax: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	g.notify.backoff = time.Millisecond
	_ = g.LoadCredentials(ctx)
	g.Start(ctx)
	t.Cleanup(func() { _ = g.Close() })
	if err := g.WaitTried(ctx); err != nil {
		t.Fatal(err)
	}
	cs := agent(t, ctx, g, nil)
	callOK(t, ctx, cs, "api__echo")
	up.refuse("token-v1-0123456789", rejectRevoked)
	if f := failureOf(t, callTool(t, ctx, cs, "api__echo")); f.Subtype != authmap.SubtypeCredentialRevoked {
		t.Fatalf("call after the revocation: %+v", f)
	}
	got := pd.wait(t, ctx, 3) // 500, 429, then delivered
	var trig map[string]any
	if err := json.Unmarshal(got[2].body, &trig); err != nil {
		t.Fatal(err)
	}
	payload, _ := trig["payload"].(map[string]any)
	details, _ := payload["custom_details"].(map[string]any)
	if trig["event_action"] != "trigger" || trig["routing_key"] != "pd-routing-key-0123456789" ||
		trig["dedup_key"] != "credgate/credential/tok/credential_revoked" || payload["severity"] != "critical" ||
		!strings.Contains(fmt.Sprint(payload["summary"]), `credential "tok" is revoked`) || fmt.Sprint(details["tools"]) != "[api__*]" ||
		details["subtype"] != "credential_revoked" || details["recovery"] == "" {
		t.Errorf("pagerduty trigger: %s", got[2].body)
	}
	if string(got[0].body) != string(got[2].body) {
		t.Errorf("a retry sent another body")
	}
	s := slack.wait(t, ctx, 1)
	if !strings.Contains(string(s[0].body), `"text":":rotating_light: credgate: credential \"tok\" is revoked`) {
		t.Errorf("slack: %s", s[0].body)
	}
	h := hook.wait(t, ctx, 1)
	mac := hmac.New(sha256.New, []byte("hook-secret-0123456789"))
	mac.Write(h[0].body)
	if h[0].header.Get("X-Credgate-Signature") != "sha256="+hex.EncodeToString(mac.Sum(nil)) || h[0].header.Get("X-Credgate-Event") != "trigger" {
		t.Errorf("generic headers %v", h[0].header)
	}
	var gp genericPayload
	if err := json.Unmarshal(h[0].body, &gp); err != nil || gp.Credential != "tok" || gp.Subtype != "credential_revoked" || gp.Since.IsZero() {
		t.Errorf("generic body %s (%v)", h[0].body, err)
	}

	rotateFile(t, ctx, g, up, path, "token-v2-0123456789\n")
	got = pd.wait(t, ctx, 4)
	var res map[string]any
	_ = json.Unmarshal(got[3].body, &res)
	if diff := cmp.Diff(map[string]any{"routing_key": "pd-routing-key-0123456789", "event_action": "resolve", "dedup_key": trig["dedup_key"]}, res); diff != "" {
		t.Errorf("pagerduty resolve mismatch (-want +got):\n%s", diff)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("stats %+v", g.NotifyStats())
		}
	})
	waitFor(t, ctx, func() bool {
		st := g.NotifyStats()
		return st["down"].Dropped == 2 && st["refuse"].Dropped == 2
	})
	if n := len(refuse.wait(t, ctx, 2)); n != 2 {
		t.Errorf("a refusing receiver got %d requests, want one per notification", n)
	}
	st := g.NotifyStats()
	if st["pd"].Sent != 2 || st["chat"].Sent != 2 || st["hook"].Sent != 2 || g.NotifyDropped() != 4 {
		t.Errorf("stats %+v, dropped %d", st, g.NotifyDropped())
	}
	health, _ := json.Marshal(g.Health())
	surfaces := map[string]string{"logs": logs.String(), "health": string(health), "events": fmt.Sprint(g.EventLog())}
	for name, text := range surfaces {
		for _, secret := range []string{"pd-routing-key-0123456789", "hook-secret-0123456789", "slacktoken0123456789", "token-v1-0123456789"} {
			if strings.Contains(text, secret) {
				t.Errorf("%s show %s", name, secret)
			}
		}
	}
	if !strings.Contains(st["down"].LastError, "[REDACTED]") {
		t.Errorf("down's last error %q: want the URL's secret redacted", st["down"].LastError)
	}
}

// syncWriter serializes writes to w.
type syncWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (s *syncWriter) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return fmt.Sprint(s.w)
}

func (s *syncWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Write(p)
}

// TestNotifyResolveCarriesStatusNow: a generic resolve carries the
// credential's status now, not the trigger's (a resolve read "now healthy"
// beside "status": "revoked": found trying the gateway from outside).
func TestNotifyResolveCarriesStatusNow(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		g := notifyServer(t, notifyBase+`  - {name: hook, format: generic, url: "http://127.0.0.1:1/hook", on: [credential_revoked]}
`)
		g.publish(credEvent(authmap.EventLoaded, authmap.StatusHealthy))
		g.publish(credEvent(authmap.EventRevoked, authmap.StatusRevoked))
		g.publish(credEvent(authmap.EventRotated, authmap.StatusHealthy))
		var bodies []map[string]any
		for _, s := range g.notify.sinks {
			if s.cfg.Name != "hook" {
				continue
			}
			for len(s.queue) > 0 {
				d := <-s.queue
				var m map[string]any
				if err := json.Unmarshal(d.body, &m); err != nil {
					t.Fatal(err)
				}
				bodies = append(bodies, m)
			}
		}
		if len(bodies) != 2 || bodies[0]["status"] != "revoked" || bodies[1]["action"] != "resolve" || bodies[1]["status"] != "healthy" {
			t.Errorf("deliveries %v: want a trigger with status revoked, then a resolve with status healthy", bodies)
		}
	})
}

// TestCredentialRecoveryBySource: an expiring alert's recovery names where
// the failing renewals come from; an exec source was told to "check the
// token endpoint", which it has none of (found trying the gateway).
func TestCredentialRecoveryBySource(t *testing.T) {
	t.Parallel()
	for kind, want := range map[string]string{
		authmap.KindOAuth2: "token endpoint",
		authmap.KindExec:   "exec command",
		authmap.KindVault:  "Vault",
		authmap.KindFile:   "credential's source",
	} {
		if got := credentialRecovery(CondCredentialExpiring, true, kind); !strings.Contains(got, want) {
			t.Errorf("%s: recovery %q; want it to name the %s", kind, got, want)
		}
	}
	if got := credentialRecovery(CondCredentialExpiring, false, authmap.KindExec); got != string(authmap.RecoveryRotate) {
		t.Errorf("not renewable: %q; want rotate", got)
	}
}

// A credential found invalid while its renewal is put off (a second
// rejection within the minute) pages only if that renewal does not heal
// it: it paged at once, for what healed a minute later.
func TestNotifyInvalidWaitsForPutOffRenewal(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "token")
		if err := os.WriteFile(path, []byte("file-token-0123456789"), 0o600); err != nil {
			t.Fatal(err)
		}
		g := notifyServer(t, fmt.Sprintf(`
credentials:
  ftok: {source: {file: %q}}
upstreams:
  api: {url: "http://127.0.0.1:1/mcp", credential: ftok}
notify:
  - {name: pd, format: pagerduty, url: "http://127.0.0.1:1/pd", routing_key: pd-key-0123456789, on: [credential_invalid]}
`, path))
		c := g.credential("ftok")
		if err := c.Load(t.Context()); err != nil {
			t.Fatal(err)
		}
		used := c.Value()
		c.RenewAfterRejection(t.Context(), used) // renews now: the same value
		c.RenewAfterRejection(t.Context(), used) // within the minute: put off
		c.ReportFailure(authmap.Failure{Type: authmap.TypeAuthFailure, Subtype: authmap.SubtypeCredentialInvalid}, used, "a call")
		synctest.Wait()
		if at := c.Snapshot(false).RenewalAt; at == nil {
			t.Fatal("no renewal_at while the renewal is put off")
		}
		if got := drain(t, g, "pd"); len(got) != 0 {
			t.Errorf("invalid with its renewal put off: %v, want nothing yet", got)
		}
		time.Sleep(time.Minute + renewalGrace + time.Second) // no watch runs here: nothing heals it
		synctest.Wait()
		if diff := cmp.Diff([]string{"trigger credgate/credential/ftok/credential_invalid"}, drain(t, g, "pd")); diff != "" {
			t.Errorf("still invalid after the renewal's time (-want +got):\n%s", diff)
		}
	})
}

// A trigger dropped after its tries (the receiver down through all of
// them) is sent again later while its condition holds; it was never sent.
func TestNotifyDroppedTriggerSentAgain(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	down := make([]int, notifyAttempts)
	for i := range down {
		down[i] = http.StatusServiceUnavailable
	}
	pd := newReceiver(t, down...)
	g := notifyServer(t, fmt.Sprintf(`
credentials:
  tok: {source: {value: tok-0123456789}}
upstreams:
  api: {url: "http://127.0.0.1:1/mcp", credential: tok}
notify:
  - {name: pd, format: pagerduty, url: %q, routing_key: pd-key-0123456789, on: [credential_revoked]}
`, pd.srv.URL))
	g.notify.backoff, g.notify.redeliver = time.Millisecond, 10*time.Millisecond
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); g.notify.run(runCtx) }()
	defer func() { stop(); <-done }()
	g.publish(credEvent(authmap.EventRevoked, authmap.StatusRevoked))
	got := pd.wait(t, ctx, notifyAttempts+1)
	var last map[string]any
	if err := json.Unmarshal(got[notifyAttempts].body, &last); err != nil || last["event_action"] != "trigger" {
		t.Errorf("after the receiver came back: %s (%v), want the trigger again", got[notifyAttempts].body, err)
	}
}

// Replicas sharing a store each find a condition; one of them tells the
// receiver (each sent its own trigger and resolve).
func TestNotifyReplicasSendOnce(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	srv := redistest.Start(t)
	pd := newReceiver(t)
	yaml := stateYAML(srv, fmt.Sprintf("notify-%d:", time.Now().UnixNano()), false) + fmt.Sprintf(`
credentials:
  tok: {source: {value: tok-0123456789}}
upstreams:
  api: {url: "http://127.0.0.1:1/mcp", credential: tok}
notify:
  - {name: pd, format: pagerduty, url: %q, routing_key: pd-key-0123456789, on: [credential_revoked], min_interval: 1ms}
`, pd.srv.URL)
	var gs []*Server
	for range 2 {
		g := notifyServer(t, yaml)
		g.notify.claimFor = 200 * time.Millisecond
		runCtx, stop := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() { defer close(done); g.notify.run(runCtx) }()
		t.Cleanup(func() { stop(); <-done; _ = g.Close() })
		gs = append(gs, g)
	}
	for _, g := range gs {
		g.publish(credEvent(authmap.EventRevoked, authmap.StatusRevoked))
	}
	handled := func() uint64 { // sent, or left to the other replica
		var n uint64
		for _, g := range gs {
			n += g.notify.sinks[0].sent.Load() + g.notify.sinks[0].elsewhere.Load()
		}
		return n
	}
	waitFor(t, ctx, func() bool { return handled() == 2 })
	for _, g := range gs {
		g.publish(credEvent(authmap.EventRotated, authmap.StatusHealthy))
	}
	waitFor(t, ctx, func() bool { return handled() == 4 })
	got := pd.wait(t, ctx, 2)
	// A later incident only the second replica finds is its to send:
	// the claims of the first are long gone (they held it off for good).
	time.Sleep(2 * gs[0].notify.claimFor) // claims expire in the store's own time
	gs[1].publish(credEvent(authmap.EventRevoked, authmap.StatusRevoked))
	got = pd.wait(t, ctx, 3)
	var actions []string
	for _, r := range pd.wait(t, ctx, len(got)) {
		var m map[string]any
		_ = json.Unmarshal(r.body, &m)
		actions = append(actions, fmt.Sprint(m["event_action"]))
	}
	if diff := cmp.Diff([]string{"trigger", "resolve", "trigger"}, actions); diff != "" {
		t.Errorf("the receiver got (-want +got):\n%s", diff)
	}
}

// What is likely to heal by itself waits before it pages: a revocation a
// peer replica found (the finder may have put its renewal off), and a
// credential missing because its source did not answer (the start-up
// pre-flight's first attempt paged though its retry succeeded).
func TestNotifyGraceForWhatHealsItself(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		g := notifyServer(t, notifyBase)
		peer := credEvent(authmap.EventRevoked, authmap.StatusRevoked)
		peer.Trigger = string(authmap.TriggerPeer)
		g.publish(peer)
		synctest.Wait()
		if got := drain(t, g, "pd"); len(got) != 0 {
			t.Errorf("a peer's revocation at once: %v, want nothing yet", got)
		}
		time.Sleep(time.Minute + renewalGrace + time.Second)
		synctest.Wait()
		if diff := cmp.Diff([]string{"trigger credgate/credential/tok/credential_revoked"}, drain(t, g, "pd")); diff != "" {
			t.Errorf("a peer's revocation that lasts (-want +got):\n%s", diff)
		}

		// The OAuth credential's token endpoint does not answer: missing,
		// then loaded within the grace; nobody is paged.
		c := g.credential("oauth")
		_ = c.Load(t.Context()) // 127.0.0.1:1 refuses the connection
		if le := c.Snapshot(false).LastError; le == nil || le.Type != authmap.TypeUpstreamUnavailable {
			t.Fatalf("last error %+v, want the source unreachable", le)
		}
		g.publish(oauthEvent(authmap.EventMissing, authmap.StatusMissing))
		time.Sleep(expiredGrace / 2)
		g.publish(oauthEvent(authmap.EventLoaded, authmap.StatusHealthy))
		time.Sleep(2 * expiredGrace)
		synctest.Wait()
		if got := drain(t, g, "pd"); len(got) != 0 {
			t.Errorf("missing while its source did not answer, then loaded: %v, want nothing", got)
		}
	})
}

// TestNotifyResolvesRemoved: an alert whose subject a reload takes out of
// the config (a credential, an upstream with its breaker, a route) is
// resolved; nothing else would ever end it, and the receiver's incident
// stayed open for good (found trying the gateway from outside).
func TestNotifyResolvesRemoved(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		g := notifyServer(t, notifyBase)
		g.publish(credEvent(authmap.EventRevoked, authmap.StatusRevoked))
		g.notify.mu.Lock()
		g.notify.activate(alertKey{"upstream", "api", CondBreakerOpenLong}, alertInfo{Upstream: "api"})
		g.notify.activate(alertKey{"route", "gone__tool", CondRouteNoTarget}, alertInfo{Route: "gone__tool"})
		g.notify.mu.Unlock()
		if got := drain(t, g, "pd"); len(got) != 3 {
			t.Fatalf("triggers %v; want three", got)
		}
		// oauth stays; tok, api and the route go.
		cfg, err := ParseConfig([]byte(`
credentials:
  oauth: {source: {oauth2: {token_url: "http://127.0.0.1:1/token", client_id: c, client_secret: s0123456789}}}
upstreams:
  other: {url: "http://127.0.0.1:1/mcp", credential: oauth}
`), nil)
		if err != nil {
			t.Fatal(err)
		}
		g.notify.forgetRemoved(cfg)
		want := []string{"resolve credgate/credential/tok/credential_revoked", "resolve credgate/route/gone__tool/route_no_target", "resolve credgate/upstream/api/breaker_open_long"}
		got := drain(t, g, "pd")
		slices.Sort(got)
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("after the reload (-want +got):\n%s", diff)
		}
		g.notify.forgetRemoved(cfg) // a later reload: nothing more to say, and the ended states go
		if got := drain(t, g, "pd"); len(got) != 0 {
			t.Errorf("a second reload sent %v", got)
		}
		g.notify.mu.Lock()
		left := len(g.notify.alerts)
		g.notify.mu.Unlock()
		if left != 0 {
			t.Errorf("%d alert states kept for subjects no longer configured", left)
		}
	})
}
