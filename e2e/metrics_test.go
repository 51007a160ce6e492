package e2e

// Acceptance test of issue 10 (Prometheus metrics) on the built binary: a
// real OAuth 2.0 server, a test upstream that checks each token there, and
// /metrics scraped and parsed as Prometheus parses it.

import (
	"context"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// scrape is one GET /metrics, parsed.
type scrape struct {
	body     string
	families map[string]*dto.MetricFamily
}

func (g *gatewayProc) scrape(t *testing.T, ctx context.Context) scrape {
	t.Helper()
	resp, err := httpGet(ctx, "http://"+g.Addr+"/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /metrics: %s\n%s", resp.Status, body)
	}
	if mt, params, _ := mime.ParseMediaType(resp.Header.Get("Content-Type")); mt != "text/plain" || params["version"] != "0.0.4" {
		t.Errorf("GET /metrics: Content-Type %q, want the Prometheus text format", resp.Header.Get("Content-Type"))
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	families, err := p.TextToMetricFamilies(strings.NewReader(string(body)))
	if err != nil {
		t.Fatalf("GET /metrics does not parse: %v\n%s", err, body)
	}
	return scrape{body: string(body), families: families}
}

// value returns the value of the series of family name with exactly these
// labels (a histogram's count), and whether it exists.
func (s scrape) value(name string, labels map[string]string) (float64, bool) {
	for _, m := range s.families[name].GetMetric() {
		if len(m.GetLabel()) != len(labels) {
			continue
		}
		match := true
		for _, l := range m.GetLabel() {
			if v, ok := labels[l.GetName()]; !ok || v != l.GetValue() {
				match = false
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

func (s scrape) want(t *testing.T, name string, labels map[string]string, want float64) {
	t.Helper()
	got, ok := s.value(name, labels)
	if !ok {
		t.Errorf("%s%v: no such series", name, labels)
		return
	}
	if got != want {
		t.Errorf("%s%v = %v, want %v", name, labels, got, want)
	}
}

// credentialStatus returns the status whose credential_status series is 1.
func (s scrape) credentialStatus(credential string) string {
	for _, m := range s.families["credgate_credential_status"].GetMetric() {
		var cred, status string
		for _, l := range m.GetLabel() {
			switch l.GetName() {
			case "credential":
				cred = l.GetValue()
			case "status":
				status = l.GetValue()
			}
		}
		if cred == credential && m.GetGauge().GetValue() == 1 {
			return status
		}
	}
	return ""
}

// Acceptance (issue 10, metrics): a call that succeeds and one whose
// credential the provider revoked are counted by upstream, tool and outcome;
// the credential's status series shows the revocation on the first scrape
// after the rejected call (the issue asks within 1 s); the whole output
// parses as Prometheus parses it and shows no secret.
func TestMetricsScrape(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	p := startOIDC(t, &oidcOptions{AccessTTL: 120 * time.Second})
	upURL := startUpstreamHTTP(t, p.UpstreamArgs("upstream")...)
	rt, err := p.MintRefreshToken(ctx, "gateway")
	if err != nil {
		t.Fatal(err)
	}
	gw := startGateway(t, fmt.Sprintf(`
credentials:
  api: {source: {oauth2: %s}}
upstreams:
  up: {url: %s, credential: api}
`, p.OAuth2SourceYAML("gateway", rt), upURL))
	cs := connectClient(t, ctx, gw.URL)

	before := gw.scrape(t, ctx)
	if _, ok := before.value("credgate_tool_calls_total", map[string]string{"upstream": "up", "tool": "up__whoami", "type": "ok", "subtype": ""}); ok {
		t.Fatal("a call is counted before any was made")
	}
	before.want(t, "credgate_upstream_up", map[string]string{"upstream": "up"}, 1)
	if st := before.credentialStatus("api"); st != "healthy" {
		t.Fatalf("credential api is %q before the revocation, want healthy", st)
	}
	if ttl, ok := before.value("credgate_credential_ttl_seconds", map[string]string{"credential": "api"}); !ok || ttl <= 0 || ttl > 120 {
		t.Errorf("credential ttl %v (exposed: %v), want the access token's, at most 120 s", ttl, ok)
	}

	if _, err := whoamiHash(ctx, cs, "up__whoami"); err != nil {
		t.Fatal(err)
	}
	ok := gw.scrape(t, ctx)
	ok.want(t, "credgate_tool_calls_total", map[string]string{"upstream": "up", "tool": "up__whoami", "type": "ok", "subtype": ""}, 1)
	ok.want(t, "credgate_tool_call_duration_seconds", map[string]string{"upstream": "up", "tool": "up__whoami"}, 1)

	if _, err := p.RevokeClient(ctx, "gateway", false); err != nil {
		t.Fatal(err)
	}
	res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "up__echo", Arguments: map[string]any{"text": "x"}})
	if err != nil {
		t.Fatal(err)
	}
	answered := time.Now()
	if f := typedFailure(t, "call after the revocation", res); f["subtype"] != "credential_revoked" {
		t.Fatalf("call after the revocation: %v, want credential_revoked", f)
	}
	after := gw.scrape(t, ctx)
	scraped := time.Since(answered)
	t.Logf("revocation on /metrics %s after the rejected call's answer", scraped)
	if st := after.credentialStatus("api"); st != "revoked" {
		t.Errorf("credential api is %q on the first scrape after the rejected call, want revoked", st)
	}
	after.want(t, "credgate_tool_calls_total", map[string]string{"upstream": "up", "tool": "up__echo", "type": "auth_failure", "subtype": "credential_revoked"}, 1)
	after.want(t, "credgate_tool_calls_total", map[string]string{"upstream": "up", "tool": "up__whoami", "type": "ok", "subtype": ""}, 1)
	after.want(t, "credgate_breaker_state", map[string]string{"upstream": "up", "credential": "api", "breaker_state": "open"}, 1)
	after.want(t, "credgate_credential_events_total", map[string]string{"credential": "api", "kind": "revoked"}, 1)

	for name, secret := range map[string]string{"client secret": p.Client(t, "gateway").Secret, "refresh token": rt} {
		if strings.Contains(after.body, secret) {
			t.Errorf("/metrics shows the %s", name)
		}
	}
}
