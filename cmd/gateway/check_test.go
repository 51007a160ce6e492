package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/credgate/credgate/gateway"
)

// credConfig is a config whose credentials are good, expiring (inside the
// default 60m warning), expired and missing, as asked.
func credConfig(failOn string, kinds ...string) string {
	var b strings.Builder
	if failOn != "" {
		fmt.Fprintf(&b, "lifecycle: {startup: {fail_on: %s}}\n", failOn)
	}
	b.WriteString("credentials:\n")
	for _, k := range kinds {
		switch k {
		case "good":
			fmt.Fprintf(&b, "  good: {source: {value: good-secret-0123456789}, expires_at: %q}\n", time.Now().Add(240*time.Hour).UTC().Format(time.RFC3339))
		case "expiring":
			fmt.Fprintf(&b, "  soon: {source: {value: soon-secret-0123456789}, expires_at: %q}\n", time.Now().Add(10*time.Minute).UTC().Format(time.RFC3339))
		case "expired":
			fmt.Fprintf(&b, "  old: {source: {value: old-secret-0123456789}, expires_at: %q}\n", time.Now().Add(-time.Hour).UTC().Format(time.RFC3339))
		case "missing":
			b.WriteString("  gone: {source: {env: CREDGATE_TEST_SURELY_UNSET_0123}}\n")
		}
	}
	b.WriteString("upstreams:\n  api:\n    url: http://127.0.0.1:1/mcp\n    credentials:\n")
	for _, k := range kinds {
		name := map[string]string{"good": "good", "expiring": "soon", "expired": "old", "missing": "gone"}[k]
		fmt.Fprintf(&b, "      - {tools: [%s_*], credential: %s}\n", name, name)
	}
	return b.String()
}

// Regression test for issue 7 (`gateway check`): exit 0 when every
// credential is usable; 1 naming each one missing, expired or expiring,
// with its status, source and readiness; JSON with --json; no secret shown.
func TestCheckCommand(t *testing.T) {
	t.Parallel()
	good := writeFile(t, "good.yaml", credConfig("", "good"))
	code, out, errOut := cli(t, "", "check", "--config", good)
	// No probe is configured: the value is there, but nothing asked the
	// provider, and check says so rather than "usable".
	if code != 0 || !strings.Contains(out, "good") || !strings.Contains(out, "healthy (unverified)") || !strings.Contains(out, "not checked with its provider") || !strings.Contains(out, "9d23h") {
		t.Errorf("check of a good config: exit %d\n%s%s", code, out, errOut)
	}
	bad := writeFile(t, "bad.yaml", credConfig("", "good", "expiring", "expired", "missing"))
	code, out, errOut = cli(t, "", "check", bad)
	if code != 1 {
		t.Errorf("check exit %d, want 1\n%s%s", code, out, errOut)
	}
	for _, want := range []string{"soon", "expiring", "old", "expired", "gone", "missing", "value", "env", "readiness", "FAILS", "secrets_store:", " ago  "} {
		if !strings.Contains(out, want) {
			t.Errorf("check output lacks %q:\n%s", want, out)
		}
	}
	code, out, _ = cli(t, "", "check", bad, "--json")
	var rep struct {
		OK          bool `json:"ok"`
		Credentials []struct {
			Name      string `json:"name"`
			Status    string `json:"status"`
			Source    string `json:"source"`
			Fails     string `json:"fails"`
			Readiness struct {
				Score int `json:"score"`
				Parts []struct {
					Name string `json:"name"`
					OK   bool   `json:"ok"`
					Fix  string `json:"fix"`
				} `json:"parts"`
			} `json:"readiness"`
		} `json:"credentials"`
	}
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("check --json: %v\n%s", err, out)
	}
	got := map[string]string{}
	for _, c := range rep.Credentials {
		got[c.Name] = c.Status
		if len(c.Readiness.Parts) != 5 {
			t.Errorf("%s: %d readiness parts, want 5", c.Name, len(c.Readiness.Parts))
		}
	}
	want := map[string]string{"good": "healthy", "soon": "expiring", "old": "expired", "gone": "missing"}
	if fmt.Sprint(got) != fmt.Sprint(want) || rep.OK || code != 1 {
		t.Errorf("check --json: exit %d ok %t statuses %v, want 1 false %v", code, rep.OK, got, want)
	}
	for _, s := range []string{"good-secret", "soon-secret", "old-secret"} {
		if strings.Contains(out, s) {
			t.Errorf("check output shows the secret %s", s)
		}
	}
}

// Regression test for issue 7 (start-up pre-flight): under fail_on expired
// (the default) a missing and an expired credential keep the gateway from
// starting, each named with its status; fail_on expiring also refuses an
// expiring one.
func TestStartupFailOn(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, failOn string
		kinds        []string
		want         []string
	}{
		{"default refuses missing and expired", "", []string{"good", "missing", "expired"}, []string{`credential \"gone\": missing`, `credential \"old\": expired`}},
		{"expired refuses missing and expired", "expired", []string{"expiring", "missing", "expired"}, []string{`credential \"gone\": missing`, `credential \"old\": expired`}},
		{"expiring refuses expiring", "expiring", []string{"good", "expiring"}, []string{`credential \"soon\": expiring`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			path := writeFile(t, "c.yaml", "listen: 127.0.0.1:0\n"+credConfig(tc.failOn, tc.kinds...))
			code, _, errOut := cli(t, "", "serve", path)
			if code != 1 {
				t.Fatalf("serve exit %d, want 1\n%s", code, errOut)
			}
			for _, w := range append(tc.want, "refusing to start") {
				if !strings.Contains(errOut, w) {
					t.Errorf("stderr lacks %q:\n%s", w, errOut)
				}
			}
			if strings.Contains(errOut, `credential \"good\"`) {
				t.Errorf("stderr names the good credential:\n%s", errOut)
			}
		})
	}
}

// Regression test for issue 7 (`gateway check`): a probe that cannot run
// (its URL refuses connections) is inconclusive, so the credential passes,
// but the check says so, in the table and in --json's last_error. Before the
// fix the check printed "ok" with no word of the probe, whose warning went
// to a discarded log.
func TestCheckReportsProbeThatCouldNotRun(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(http.NotFoundHandler())
	url := srv.URL + "/user"
	srv.Close() // now refuses connections
	path := writeFile(t, "probe.yaml", fmt.Sprintf(`credentials:
  tok: {source: {value: probe-secret-0123456789}, probe: {http: {url: %q}}}
upstreams:
  api: {url: "http://127.0.0.1:1/mcp", credential: tok}
`, url))
	code, out, errOut := cli(t, "", "check", path)
	if code != 0 || !strings.Contains(out, "NOTE: the probe could not run") {
		t.Errorf("check: exit %d, want 0 with a note that the probe could not run\n%s%s", code, out, errOut)
	}
	code, out, _ = cli(t, "", "check", path, "--json")
	var rep struct {
		Credentials []struct {
			LastError *struct {
				Type   string `json:"type"`
				Detail string `json:"detail"`
			} `json:"last_error"`
		} `json:"credentials"`
	}
	if err := json.Unmarshal([]byte(out), &rep); err != nil || len(rep.Credentials) != 1 {
		t.Fatalf("check --json (exit %d): %v\n%s", code, err, out)
	}
	if le := rep.Credentials[0].LastError; le == nil || le.Type != "upstream_unavailable" || !strings.Contains(le.Detail, "probe could not run") {
		t.Errorf("last_error %+v, want upstream_unavailable saying the probe could not run", le)
	}
	if strings.Contains(out, "probe-secret-0123456789") {
		t.Error("the secret appears in the output")
	}
}

// TestPreflightAsksAgain: a credential source that failed as an
// unreachable service does (a token endpoint dropping the connection) is
// asked again within the pre-flight's bound; one dropped connection
// refused the start.
func TestPreflightAsksAgain(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	var n atomic.Int32
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if n.Add(1) <= 3 { // a proxy dropping connections for a moment
			conn, _, err := w.(http.Hijacker).Hijack()
			if err == nil {
				_ = conn.Close()
			}
			return
		}
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprint(w, `{"access_token":"oauth-access-0123456789","token_type":"Bearer","expires_in":3600}`)
	}))
	defer ts.Close()
	cfg, err := gateway.ParseConfig(fmt.Appendf(nil, `
credentials:
  tok: {source: {oauth2: {token_url: %q, client_id: gw, client_secret: client-secret-0123456789}}}
upstreams:
  api: {url: "http://127.0.0.1:1/mcp", credential: tok}
`, ts.URL), nil)
	if err != nil {
		t.Fatal(err)
	}
	var logs lockedBuffer
	log := zerolog.New(&logs)
	g, err := gateway.New(cfg, &gateway.Options{Logger: &log})
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	if !preflight(ctx, g, cfg, &log) {
		t.Fatalf("the pre-flight refused the start after dropped connections:\n%s", logs.String())
	}
	if got := n.Load(); got < 4 {
		t.Errorf("the token endpoint was asked %d times, want again after the dropped connection", got)
	}
}
