package gateway

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/modelcontextprotocol/go-sdk/mcp"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/rs/zerolog"

	"github.com/credgate/credgate/authmap"
)

// gather returns g's metric families by name.
func gather(t testing.TB, g *Server) map[string]*dto.MetricFamily {
	t.Helper()
	mfs, err := g.metrics.reg.Gather()
	if err != nil {
		t.Fatalf("gather: %v", err)
	}
	out := make(map[string]*dto.MetricFamily, len(mfs))
	for _, mf := range mfs {
		out[mf.GetName()] = mf
	}
	return out
}

// sample returns the value of the series of family name whose labels
// include want (a counter, gauge, or a histogram's count), and whether there
// is one.
func sample(mfs map[string]*dto.MetricFamily, name string, want map[string]string) (float64, bool) {
	mf := mfs[name]
	if mf == nil {
		return 0, false
	}
	for _, m := range mf.GetMetric() {
		have := map[string]string{}
		for _, l := range m.GetLabel() {
			have[l.GetName()] = l.GetValue()
		}
		match := true
		for k, v := range want {
			if have[k] != v {
				match = false
				break
			}
		}
		if !match {
			continue
		}
		switch {
		case m.Counter != nil:
			return m.Counter.GetValue(), true
		case m.Gauge != nil:
			return m.Gauge.GetValue(), true
		case m.Histogram != nil:
			return float64(m.Histogram.GetSampleCount()), true
		}
	}
	return 0, false
}

// labelValues returns every value label takes in family name.
func labelValues(mfs map[string]*dto.MetricFamily, name, label string) []string {
	var out []string
	for _, m := range mfs[name].GetMetric() {
		for _, l := range m.GetLabel() {
			if l.GetName() == label && !slices.Contains(out, l.GetValue()) {
				out = append(out, l.GetValue())
			}
		}
	}
	slices.Sort(out)
	return out
}

// wantSample fails unless the series of name with labels has value want.
func wantSample(t *testing.T, mfs map[string]*dto.MetricFamily, name string, labels map[string]string, want float64) {
	t.Helper()
	got, ok := sample(mfs, name, labels)
	if !ok {
		t.Errorf("%s%v: no such series", name, labels)
		return
	}
	if got != want {
		t.Errorf("%s%v = %v, want %v", name, labels, got, want)
	}
}

// metricsGateway runs a gateway whose credential tok (value token) an
// upstream "api" with tool echo accepts, and returns it with an agent
// session and the upstream.
func metricsGateway(t *testing.T, ctx context.Context, token string) (*Server, *mcp.ClientSession, *bearerUpstream) {
	t.Helper()
	g, cs, _, up := valueTokGateway(t, ctx, "", token)
	return g, cs, up
}

// Regression test for issue 10 (metrics): every series is exposed and
// passes client_golang's lint (Prometheus naming: units, _total counters,
// base units).
func TestMetricsLint(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	g, cs, up := metricsGateway(t, ctx, "lint-token-0123456789")
	callOK(t, ctx, cs, "api__echo")
	up.refuse("lint-token-0123456789", rejectRevoked)
	if res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "api__echo", Arguments: map[string]any{"text": "x"}}); err != nil || !res.IsError {
		t.Fatalf("call with a revoked token: %v %v, want a failure", err, res)
	}
	driveHooks(g)

	problems, err := testutil.GatherAndLint(g.metrics.reg)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("lint: %s: %s", p.Metric, p.Text)
	}
	mfs := gather(t, g)
	for _, name := range credgateSeries {
		if mfs[name] == nil {
			t.Errorf("%s is not exposed", name)
		}
	}
	for name := range mfs {
		if !slices.Contains(credgateSeries, name) && !strings.HasPrefix(name, "go_") && !strings.HasPrefix(name, "process_") && !strings.HasPrefix(name, "promhttp_") {
			t.Errorf("%s is exposed but not listed in credgateSeries (the README's list)", name)
		}
	}
}

// credgateSeries is every credgate_ family, as the README lists them.
var credgateSeries = []string{
	"credgate_build_info",
	"credgate_tool_calls_total",
	"credgate_tool_call_duration_seconds",
	"credgate_upstream_up",
	"credgate_upstream_tools",
	"credgate_upstream_connect_attempts_total",
	"credgate_upstream_connect_failures_total",
	"credgate_credential_status",
	"credgate_credential_expiry_timestamp_seconds",
	"credgate_credential_ttl_seconds",
	"credgate_credential_refreshes_total",
	"credgate_credential_rotations_total",
	"credgate_credential_events_total",
	"credgate_breaker_state",
	"credgate_agent_sessions",
	"credgate_config_reloads_total",
	"credgate_config_last_reload_successful",
	"credgate_config_last_reload_success_timestamp_seconds",
	"credgate_route_reroutes_total",
	"credgate_route_target_available",
	"credgate_route_target_active",
	"credgate_notifications_dropped_total",
	"credgate_upstream_messages_dropped_total",
}

// driveHooks calls the hooks the routing, reload and notification code
// call, once each, and gives the credential an expiry, so that every
// series exists.
func driveHooks(g *Server) {
	g.metrics.configReload(true)
	g.metrics.configReload(false)
	g.metrics.rerouted("search", string(authmap.SubtypeCredentialRevoked))
	g.metrics.setRoutes(func() []routeTargetState {
		return []routeTargetState{
			{Route: "search", Target: "api__echo", Available: false},
			{Route: "search", Target: "backup__echo", Available: true, Active: true},
		}
	})
	g.metrics.setNotificationDrops(func() uint64 { return 3 })
	for _, name := range g.Credentials().Names() {
		g.Credentials().Get(name).NoteExpiry(time.Now().Add(time.Hour))
	}
}

// Regression test for issue 10 (metrics): calls are counted by upstream,
// exposed tool and outcome, a name the catalog does not list is counted as
// _unknown, and the credential's status and breaker show a revocation on the
// next scrape.
func TestMetricsCallsAndCredentialStatus(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	g, cs, up := metricsGateway(t, ctx, "calls-token-0123456789")
	for range 2 {
		callOK(t, ctx, cs, "api__echo")
	}
	// An upstream error, and a name only the agent knows (forwarded to the
	// one upstream it can belong to; see unlisted).
	if res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "api__echo", Arguments: map[string]any{"text": "iserror:boom"}}); err != nil || !res.IsError {
		t.Fatalf("iserror call: %v %v", err, res)
	}
	_, _ = cs.CallTool(ctx, &mcp.CallToolParams{Name: "api__no-such-tool-from-the-agent"})
	mfs := gather(t, g)
	wantSample(t, mfs, "credgate_tool_calls_total", map[string]string{"upstream": "api", "tool": "api__echo", "type": "ok", "subtype": ""}, 2)
	wantSample(t, mfs, "credgate_tool_calls_total", map[string]string{"upstream": "api", "tool": "api__echo", "type": "upstream_error", "subtype": ""}, 1)
	wantSample(t, mfs, "credgate_tool_call_duration_seconds", map[string]string{"upstream": "api", "tool": "api__echo"}, 3)
	if tools := labelValues(mfs, "credgate_tool_calls_total", "tool"); !cmp.Equal(tools, []string{"_unknown", "api__echo"}) {
		t.Errorf("tool labels %v, want [_unknown api__echo]: a name only the agent sent must not become a label", tools)
	}
	wantSample(t, mfs, "credgate_credential_status", map[string]string{"credential": "tok", "status": "healthy"}, 1)
	wantSample(t, mfs, "credgate_breaker_state", map[string]string{"upstream": "api", "credential": "", "breaker_state": "closed"}, 1)
	wantSample(t, mfs, "credgate_upstream_up", map[string]string{"upstream": "api"}, 1)
	wantSample(t, mfs, "credgate_upstream_tools", map[string]string{"upstream": "api"}, 1)
	wantSample(t, mfs, "credgate_agent_sessions", nil, 1)
	if n, _ := sample(mfs, "credgate_upstream_connect_attempts_total", map[string]string{"upstream": "api"}); n < 1 {
		t.Errorf("connect attempts %v, want at least 1", n)
	}
	wantSample(t, mfs, "credgate_upstream_connect_failures_total", map[string]string{"upstream": "api"}, 0)

	up.refuse("calls-token-0123456789", rejectRevoked)
	res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "api__echo", Arguments: map[string]any{"text": "x"}})
	if err != nil {
		t.Fatal(err)
	}
	if f := failureOf(t, res); f.Subtype != authmap.SubtypeCredentialRevoked {
		t.Fatalf("call with a revoked token: %v, want credential_revoked", f)
	}
	// No waiting: the status is read at scrape time.
	mfs = gather(t, g)
	wantSample(t, mfs, "credgate_tool_calls_total", map[string]string{"upstream": "api", "tool": "api__echo", "type": "auth_failure", "subtype": "credential_revoked"}, 1)
	for _, st := range authmap.Statuses() {
		want := 0.0
		if st == authmap.StatusRevoked {
			want = 1
		}
		wantSample(t, mfs, "credgate_credential_status", map[string]string{"credential": "tok", "status": st.String()}, want)
	}
	wantSample(t, mfs, "credgate_breaker_state", map[string]string{"upstream": "api", "credential": "tok", "breaker_state": "open"}, 1)
	wantSample(t, mfs, "credgate_credential_events_total", map[string]string{"credential": "tok", "kind": "revoked"}, 1)
}

// Regression test for issue 10 (metrics): a credential rotated by its file
// source counts one successful rotation; its expiry shows as a timestamp and
// a TTL.
func TestMetricsRotationAndExpiry(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	path := tokenFile(t, "old-token-0123456789\n")
	up := newBearerUpstream(t, "echo")
	up.accept("old-token-0123456789")
	g, _, _ := tokGateway(t, ctx, "", "source: {file: "+path+"}", up.url(), nil, nil)
	mfs := gather(t, g)
	wantSample(t, mfs, "credgate_credential_rotations_total", map[string]string{"credential": "tok", "result": "success"}, 0)
	if _, ok := sample(mfs, "credgate_credential_expiry_timestamp_seconds", map[string]string{"credential": "tok"}); ok {
		t.Error("an expiry is exposed for a credential whose expiry is unknown")
	}
	rotateFile(t, ctx, g, up, path, "new-token-0123456789\n")
	waitFor(t, ctx, func() bool {
		n, _ := sample(gather(t, g), "credgate_credential_rotations_total", map[string]string{"credential": "tok", "result": "success"})
		return n == 1
	})
	exp := time.Now().Add(time.Hour).Truncate(time.Second)
	g.Credentials().Get("tok").NoteExpiry(exp)
	mfs = gather(t, g)
	wantSample(t, mfs, "credgate_credential_expiry_timestamp_seconds", map[string]string{"credential": "tok"}, float64(exp.Unix()))
	if ttl, _ := sample(mfs, "credgate_credential_ttl_seconds", map[string]string{"credential": "tok"}); ttl < 3500 || ttl > 3600 {
		t.Errorf("ttl %v s, want about an hour", ttl)
	}
}

// Regression test for issue 10 (metrics): an upstream that cannot be reached
// counts failed connect attempts and shows down.
func TestMetricsUpstreamDown(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	url := deadURL(t)
	g := newTestGateway(t, ctx, fmt.Sprintf("upstreams:\n  gone: {url: %s}\n", url))
	mfs := gather(t, g)
	wantSample(t, mfs, "credgate_upstream_up", map[string]string{"upstream": "gone"}, 0)
	if n, _ := sample(mfs, "credgate_upstream_connect_failures_total", map[string]string{"upstream": "gone"}); n < 1 {
		t.Errorf("connect failures %v, want at least 1", n)
	}
}

// TestMetricsCredentialEventResults: which events count as refresh and
// rotation results.
func TestMetricsCredentialEventResults(t *testing.T) {
	t.Parallel()
	tests := []struct {
		kind    authmap.EventKind
		trigger authmap.Trigger
		counter string // "", or the family that counts it
		result  string
	}{
		{authmap.EventRefreshed, authmap.TriggerRefresh, "credgate_credential_refreshes_total", "success"},
		{authmap.EventRefreshed, authmap.TriggerLiveError, "credgate_credential_refreshes_total", "success"},
		{authmap.EventRevoked, authmap.TriggerRefresh, "credgate_credential_refreshes_total", "failure"},
		{authmap.EventExpiring, authmap.TriggerRefresh, "credgate_credential_refreshes_total", "failure"},
		{authmap.EventRevoked, authmap.TriggerLiveError, "", ""}, // a call's rejection, not a refresh
		{authmap.EventExpiring, authmap.TriggerWatch, "", ""},    // the warning window, not a refresh
		{authmap.EventRotated, authmap.TriggerFile, "credgate_credential_rotations_total", "success"},
		{authmap.EventRejectedRotation, authmap.TriggerWebhook, "credgate_credential_rotations_total", "rejected"},
		{authmap.EventLoaded, authmap.TriggerStartup, "", ""},
	}
	for _, tt := range tests {
		t.Run(string(tt.kind)+"/"+string(tt.trigger), func(t *testing.T) {
			t.Parallel()
			g := buildServer(t, "credentials:\n  c: {source: {value: v-0123456789}}\nupstreams:\n  a: {url: http://127.0.0.1:1/mcp, credential: c}\n")
			g.metrics.credentialEvent(authmap.Event{Credential: "c", Kind: tt.kind, Trigger: tt.trigger})
			mfs := gather(t, g)
			for _, family := range []string{"credgate_credential_refreshes_total", "credgate_credential_rotations_total"} {
				for _, result := range []string{"success", "failure", "rejected"} {
					got, _ := sample(mfs, family, map[string]string{"credential": "c", "result": result})
					want := 0.0
					if family == tt.counter && result == tt.result {
						want = 1
					}
					if got != want {
						t.Errorf("%s{result=%q} = %v, want %v", family, result, got, want)
					}
				}
			}
			wantSample(t, mfs, "credgate_credential_events_total", map[string]string{"credential": "c", "kind": string(tt.kind)}, 1)
		})
	}
}

// Regression test for issue 10 (metrics): label values stay bounded: past
// the bound, new tool names and (route, reason) pairs are counted as _other.
func TestMetricsLabelBounds(t *testing.T) {
	t.Parallel()
	g := buildServer(t, "upstreams:\n  a: {url: http://127.0.0.1:1/mcp}\n")
	u := g.upstream("a")
	// Fill the tool bound, as a catalog that kept renaming its tools would.
	g.metrics.toolMu.Lock()
	for i := range maxToolLabels {
		g.metrics.toolLabels[[2]string{"a", fmt.Sprint("t", i)}] = true
	}
	g.metrics.toolMu.Unlock()
	u.mu.Lock()
	u.cat.tools = []*mcp.Tool{{Name: "listed"}}
	u.mu.Unlock()
	g.metrics.toolCall(u, "listed", outcomeOK, nil, time.Now())
	g.metrics.toolCall(u, "not-listed", outcomeOK, nil, time.Now())
	for i := range maxRerouteLabels + 10 {
		g.metrics.rerouted("r", fmt.Sprint("reason", i))
	}
	mfs := gather(t, g)
	if tools := labelValues(mfs, "credgate_tool_calls_total", "tool"); !cmp.Equal(tools, []string{"_other", "_unknown"}) {
		t.Errorf("tool labels %v, want [_other _unknown]", tools)
	}
	if n := len(mfs["credgate_route_reroutes_total"].GetMetric()); n != maxRerouteLabels+1 {
		t.Errorf("%d reroute series, want %d (the bound, plus _other)", n, maxRerouteLabels+1)
	}
	wantSample(t, mfs, "credgate_route_reroutes_total", map[string]string{"route": "_other", "reason": "_other"}, 10)
	// An outcome outside the fixed lists.
	typ, sub := g.metrics.callLabels("something_new", &authmap.Failure{Subtype: "made_up"})
	if typ != labelOther || sub != labelOther {
		t.Errorf("callLabels of unknown values = %q, %q, want _other twice", typ, sub)
	}
}

// Regression test for issue 10 (metrics): secrets never appear in /metrics.
// Every kind of configured secret is set, and calls carry them and fail
// quoting them; then the whole scrape is searched.
func TestMetricsNoSecrets(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	const (
		token   = "metrics-cred-secret-0123456789"
		admin   = "metrics-admin-secret-0123456789"
		hook    = "metrics-hook-secret-0123456789"
		header  = "metrics-header-secret-0123456789"
		envCred = "metrics-env-secret-0123456789"
	)
	up := newBearerUpstream(t, "echo", token, "tok_"+envCred)
	up.accept(token)
	g, cs, base := credGateway(t, ctx, fmt.Sprintf(`
admin: {token: %s}
webhooks: {secret: %s}
credentials:
  tok: {source: {value: %s}}
  other: {source: {env: OTHER}}
upstreams:
  api: {url: %s, credential: tok, headers: {X-Extra: %s}}
`, admin, hook, token, up.url(), header), map[string]string{"OTHER": envCred}, nil)
	secrets := []string{token, admin, hook, header, envCred}
	for _, s := range secrets {
		_, _ = cs.CallTool(ctx, &mcp.CallToolParams{Name: "api__echo", Arguments: map[string]any{"text": "iserror:" + s}})
		_, _ = cs.CallTool(ctx, &mcp.CallToolParams{Name: "api__" + s})
	}
	up.refuse(token, rejectRevoked)
	_, _ = cs.CallTool(ctx, &mcp.CallToolParams{Name: "api__echo", Arguments: map[string]any{"text": token}})
	driveHooks(g)

	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, base+"/metrics", nil)
	req.Header.Set("Authorization", "Bearer "+admin) // an ops endpoint (issue 9)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /metrics: %s", resp.Status)
	}
	for i, s := range secrets {
		if strings.Contains(string(body), s) {
			t.Errorf("/metrics shows secret %d", i)
		}
	}
	// A tool named after a secret is listed, and redacted in its label.
	if !strings.Contains(string(body), `tool="api__[REDACTED]"`) {
		t.Errorf("no call of the tool named after a secret, redacted, in:\n%s", grepLines(string(body), "credgate_tool_calls_total"))
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	if _, err := p.TextToMetricFamilies(strings.NewReader(string(body))); err != nil {
		t.Errorf("the scrape does not parse: %v", err)
	}
}

func grepLines(s, substr string) string {
	var out []string
	for l := range strings.Lines(s) {
		if strings.Contains(l, substr) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "")
}

// buildServer builds, without starting it, a gateway for yaml.
func buildServer(t testing.TB, yaml string) *Server {
	t.Helper()
	cfg, err := ParseConfig([]byte(yaml), nil)
	if err != nil {
		t.Fatal(err)
	}
	g, err := New(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	return g
}

// Two gateways in one process each have their own registry.
func TestMetricsRegistryPerServer(t *testing.T) {
	t.Parallel()
	a := buildServer(t, "upstreams:\n  a: {url: http://127.0.0.1:1/mcp}\n")
	b := buildServer(t, "upstreams:\n  b: {url: http://127.0.0.1:1/mcp}\n")
	a.metrics.configReload(true)
	if got := testutil.ToFloat64(b.metrics.reloads.WithLabelValues(resultSuccess)); got != 0 {
		t.Errorf("a reload of one gateway counted in the other's registry: %v", got)
	}
	if _, ok := sample(gather(t, b), "credgate_upstream_connect_attempts_total", map[string]string{"upstream": "a"}); ok {
		t.Error("gateway b exposes gateway a's upstream")
	}
}

// BenchmarkMetricsToolCall measures the hook logCall calls per tool call:
// a success (the common case) and an auth failure.
func BenchmarkMetricsToolCall(b *testing.B) {
	_, g := benchGateway(b)
	u := g.upstream("a")
	if !g.catalog.hasTool("a__echo") { // listed before WaitTried returns
		b.Fatal("the upstream's tools are not listed")
	}
	f := &authmap.Failure{Type: authmap.TypeAuthFailure, Subtype: authmap.SubtypeCredentialRevoked}
	b.Run("ok", func(b *testing.B) {
		start := time.Now()
		b.ReportAllocs()
		for b.Loop() {
			g.metrics.toolCall(u, "echo", outcomeOK, nil, start)
		}
	})
	b.Run("auth_failure", func(b *testing.B) {
		start := time.Now()
		b.ReportAllocs()
		for b.Loop() {
			g.metrics.toolCall(u, "echo", string(authmap.TypeAuthFailure), f, start)
		}
	})
	b.Run("parallel", func(b *testing.B) {
		start := time.Now()
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				g.metrics.toolCall(u, "echo", outcomeOK, nil, start)
			}
		})
	})
}

// BenchmarkCallMetricsOff is BenchmarkCall with the metrics switched off (a
// nil *metrics: every hook returns at once). Compare it with BenchmarkCall
// for what the metrics cost a call end to end.
func BenchmarkCallMetricsOff(b *testing.B) {
	ctx, cancel := context.WithTimeout(b.Context(), 5*time.Minute)
	b.Cleanup(cancel)
	up := newTestUpstream(b, "a", "echo")
	g := buildServer(b, fmt.Sprintf("upstreams:\n  a: {url: %s}\n", up.url()))
	g.metrics = nil
	g.Start(ctx)
	b.Cleanup(func() { _ = g.Close() })
	_ = g.WaitTried(ctx)
	cs := agent(b, ctx, g, nil)
	benchEcho(b, ctx, cs)
}

// deadURL returns the /mcp URL of a server that has closed: nothing listens.
func deadURL(t *testing.T) string {
	t.Helper()
	dead := httptest.NewServer(http.NotFoundHandler())
	defer dead.Close()
	return dead.URL + "/mcp"
}

// TestDownUpstreamCallAudited: a call to a tool of an upstream that never
// connected (so never listed its tools) is answered with why, and audited
// and counted as any call. It was neither: calls failed by a credential
// rejected at connect left no trace in the log or the metrics (found trying
// the gateway from outside).
func TestDownUpstreamCallAudited(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	url := deadURL(t)
	var log syncBuffer
	g := newTestGatewayLogged(t, ctx, fmt.Sprintf("upstreams:\n  gone: {url: %s}\n", url), zerolog.New(&log).Level(zerolog.InfoLevel))
	cs := agent(t, ctx, g, nil)
	res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "gone__anything", Arguments: map[string]any{}})
	if err != nil {
		t.Fatal(err)
	}
	if f := failureOf(t, res); f.Type != authmap.TypeUpstreamUnavailable {
		t.Fatalf("failure %+v; want upstream_unavailable", f)
	}
	var line map[string]any
	for l := range strings.Lines(log.String()) {
		var m map[string]any
		if json.Unmarshal([]byte(l), &m) == nil && m["message"] == "call" {
			line = m
		}
	}
	if line == nil || line["upstream"] != "gone" || line["tool"] != "anything" || line["outcome"] != "upstream_unavailable" {
		t.Errorf("audit line %v; want a call line for gone/anything, outcome upstream_unavailable", line)
	}
	wantSample(t, gather(t, g), "credgate_tool_calls_total",
		map[string]string{"upstream": "gone", "tool": toolUnknown, "type": "upstream_unavailable"}, 1)
}
