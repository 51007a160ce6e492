package main

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/credgate/credgate/authmap"
	"github.com/credgate/credgate/gateway"
)

// Regression test for issue 10 (`gateway status`): the table of upstreams
// and credentials from a gateway's /health, plain when not on a terminal,
// and the exit code telling ok from not.
func TestStatusCommand(t *testing.T) {
	t.Parallel()
	ttl := int64(3*3600 + 120)
	exp := time.Now().Add(time.Duration(ttl) * time.Second)
	h := gateway.Health{Status: gateway.HealthDegraded, Version: "v-test", Sessions: 1,
		Upstreams: map[string]gateway.UpstreamHealth{
			"github": {Status: gateway.StatusUp, Transport: "streamable-http", Tools: 41, Credential: "gh",
				Breaker: gateway.BreakerHealth{State: "closed"}, Since: time.Now().Add(-time.Minute),
				CredentialBreakers: map[string]gateway.BreakerHealth{"gh": {State: "open"}, "other": {State: "closed"}}},
			"files": {Status: gateway.StatusDown, Transport: "stdio", LastError: "connect: exec: \"x\": not found",
				Credentials: []gateway.ToolCredentialHealth{{Tools: []string{"*"}, Credential: "pat"}}, Breaker: gateway.BreakerHealth{State: "open"}},
			// Why it is down is at the end of a long error: shown whole.
			"weather": {Status: gateway.StatusDown, Transport: "stdio", LastError: `connect: connection closed: calling "initialize": client is closing: EOF (last line on stdout that was not JSON-RPC: "Error: WEATHER_API_KEY is invalid")`,
				Credentials: []gateway.ToolCredentialHealth{{Tools: []string{"*"}, Credential: "pat"}}, Breaker: gateway.BreakerHealth{State: "open"}},
		},
		Credentials: map[string]authmap.Snapshot{
			"gh":  {Status: authmap.StatusHealthy, TTLSeconds: &ttl, ExpiresAt: &exp, Source: "oauth2", Readiness: authmap.Readiness{Score: 80}},
			"pat": {Status: authmap.StatusRevoked, Source: "file", LastError: &authmap.Failure{Detail: "Bad credentials"}},
		},
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/health" {
			http.NotFound(w, r)
			return
		}
		_ = json.NewEncoder(w).Encode(h)
	}))
	defer srv.Close()
	code, out, errOut := cli(t, "", "status", "--url", srv.URL+"/")
	if code != 1 {
		t.Errorf("degraded gateway: exit %d, want 1\n%s", code, errOut)
	}
	for _, want := range []string{
		"credgate v-test at " + srv.URL + ": degraded (3 upstreams, 1 agent session)",
		"UPSTREAM  STATUS  TOOLS  TRANSPORT        BREAKER",
		"files     down    0      stdio            open",
		"github    up      41     streamable-http  closed, gh open  1m0s ago", // a credential's open breaker shows
		"gh          healthy  3h2m",
		"pat         revoked  unknown",
		"Bad credentials",
		"why:\n  weather: connect: connection closed: calling \"initialize\": client is closing: EOF (last line on stdout that was not JSON-RPC: \"Error: WEATHER_API_KEY is invalid\")\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "\x1b[") {
		t.Errorf("colours outside a terminal:\n%q", out)
	}
	h.Status = gateway.HealthOK
	if code, out, _ := cli(t, "", "status", "--url", srv.URL+"/health"); code != 0 || !strings.Contains(out, ": ok ") {
		t.Errorf("ok gateway: exit %d\n%s", code, out)
	}
	srv.Close()
	if code, _, errOut := cli(t, "", "status", "--url", srv.URL); code != 1 || !strings.Contains(errOut, "connection refused") {
		t.Errorf("gateway down: exit %d, stderr %q", code, errOut)
	}
	for _, args := range [][]string{{"status", "--url", "localhost:8080"}, {"check", "--watch"}, {"validate", "--url", "http://x"}} {
		if code, _, _ := cli(t, "", args...); code != 2 {
			t.Errorf("%q: exit %d, want 2", args, code)
		}
	}
}

const statusTestToken = "status-admin-token-0123456789"

// TestStatusCommandTokenFromEnv: without a config, gateway status sends
// admin.token from CREDGATE_ADMIN__TOKEN. Found trying the built gateway:
// `gateway status --url` could not reach a gateway with admin.token set
// without a config that also had to load in full.
func TestStatusCommandTokenFromEnv(t *testing.T) {
	url := statusAdminToken(t)
	t.Setenv("CREDGATE_ADMIN__TOKEN", statusTestToken)
	if code, out, errOut := cli(t, "", "status", "--url", url); code != 0 || !strings.Contains(out, ": ok") {
		t.Errorf("status with the token in CREDGATE_ADMIN__TOKEN: exit %d\n%s%s", code, out, errOut)
	}
}

// Regression test for issue 9: /health is an ops endpoint; `gateway status
// --config` sends the config's admin.token and reads admin.listen when set.
func TestStatusCommandAdminToken(t *testing.T) {
	t.Parallel()
	statusAdminToken(t)
}

// statusAdminToken runs TestStatusCommandAdminToken and returns the URL of
// its gateway, which wants statusTestToken.
func statusAdminToken(t *testing.T) string {
	const token = statusTestToken
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer "+token {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		_ = json.NewEncoder(w).Encode(gateway.Health{Status: gateway.HealthOK, Version: "v-test"})
	}))
	t.Cleanup(srv.Close)
	addr := strings.TrimPrefix(srv.URL, "http://")
	cfg := writeFile(t, "gateway.yaml", "listen: 127.0.0.1:1\nadmin: {token: "+token+", listen: \""+addr+"\"}\n")
	if code, out, errOut := cli(t, "", "status", "--config", cfg); code != 0 || !strings.Contains(out, ": ok") {
		t.Errorf("status with the config's admin token: exit %d\n%s%s", code, out, errOut)
	}
	if code, _, errOut := cli(t, "", "status", "--url", srv.URL); code != 1 || !strings.Contains(errOut, "401") || !strings.Contains(errOut, "CREDGATE_ADMIN__TOKEN") {
		t.Errorf("status without the token: exit %d, stderr %q; want 401 reported, with how to send the token", code, errOut)
	}
	return srv.URL
}

// TestStatusEscapesControlCharacters: an upstream's error text (a child's
// stderr, say) reaches the operator's terminal with its control characters
// written as escapes: raw, it could retitle or clear the terminal, and the
// table's cut left an escape sequence open.
func TestStatusEscapesControlCharacters(t *testing.T) {
	t.Parallel()
	evil := "boom \x1b]0;PWNED-TITLE\x07\x1b[2J\x1b[31mred\u202e"
	h := gateway.Health{Status: gateway.HealthDegraded, Version: "v\x1b[2J",
		Upstreams: map[string]gateway.UpstreamHealth{
			"a": {Status: gateway.StatusDown, Transport: "stdio", LastError: evil + strings.Repeat(" long", 30), Breaker: gateway.BreakerHealth{State: "open"}},
		},
		Credentials: map[string]authmap.Snapshot{"c": {Status: authmap.StatusRevoked, Source: "file", LastError: &authmap.Failure{Detail: evil}}},
	}
	for _, color := range []bool{false, true} {
		var b strings.Builder
		printStatus(&b, "http://x", h, time.Now(), color)
		out := b.String()
		if strings.ContainsAny(out, "\x07\u202e") || strings.Contains(out, "\x1b]") || strings.Contains(out, "\x1b[2J") {
			t.Errorf("color %v: control characters reach the terminal:\n%q", color, out)
		}
		if !strings.Contains(out, `boom \x1b]0;PWNED-TITLE\x07\x1b[2J`) {
			t.Errorf("color %v: the error text is not shown escaped:\n%s", color, out)
		}
	}
}
