package gateway

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"
)

// FuzzParseConfig (issue 9): the config loader never panics on any file,
// and a config it accepts can be warned about and checked for exposure.
// Run it with go test -run '^$' -fuzz FuzzParseConfig ./gateway/.
func FuzzParseConfig(f *testing.F) {
	paths, _ := filepath.Glob("../configs/*.yaml")
	for _, p := range paths {
		if data, err := os.ReadFile(p); err == nil && filepath.Base(p) != "prometheus-rules.yaml" {
			f.Add(data)
		}
	}
	for _, s := range []string{
		"auth: {keys: [{name: a, key: 0123456789abcdef0123}]}\npolicies: [{agents: [a], tools: {allow: ['x*']}, rate: 1/s}]\n",
		"auth: {keys: [{name: a, key_credential: c}]}\ncredentials: {c: {source: {env: X}}}\n",
		"listen: 0.0.0.0:1\nallow_unauthenticated: true\nallowed_hosts: ['*.x', '[::1]']\nallowed_origins: ['https://a.b:1']\n",
		"admin: {listen: ':0', token: {file: /dev/null}}\n",
		"auth: {oauth: {issuer: https://x}}\npolicies: [{scopes: [a], resources: {deny: ['[']}}]\n",
		`{"mcpServers": {"x": {"command": "y", "env": {"A_TOKEN": "${T:-z}"}}}}`,
		"auth:\n  keys:\n    - {name: k, key: {vault: {address: http://v, path: p}}, rate: 5/10s}\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) > 64<<10 {
			t.Skip()
		}
		cfg, err := ParseConfig(data, []string{"T=tok-0123456789", "CREDGATE_LISTEN=127.0.0.1:9"})
		if err != nil {
			if err.Error() == "" {
				t.Fatal("an empty error")
			}
			return
		}
		_ = cfg.Warnings()
		_ = cfg.CheckExposure(cfg.Listen)
		_ = newPolicySet(cfg, nil)
		_ = newHostGuard(cfg)
	})
}

// Fuzz keys: the front is fuzzed with these, so a request may carry a valid
// one.
const (
	fuzzKey   = "fuzz-agent-key-0123456789abcdef"
	fuzzAdmin = "fuzz-admin-token-0123456789abcdef"
)

// FuzzMCPFront (issue 9): arbitrary methods, paths, headers and bodies
// through the gateway's real HTTP handler (Host and Origin checks, agent
// authentication, the ops endpoints, the SDK behind them) never panic,
// never succeed on /mcp without a valid key nor on an ops endpoint without
// the admin token, and never echo a key. Sessions are bounded by
// max_sessions, so memory is too. Run it with
// go test -run '^$' -fuzz FuzzMCPFront ./gateway/.
func FuzzMCPFront(f *testing.F) {
	ctx, cancel := context.WithCancel(context.Background())
	f.Cleanup(cancel)
	up := newTestUpstream(f, "a", "echo", "secret_tool")
	log := zerolog.Nop()
	cfg, err := ParseConfig(fmt.Appendf(nil, `
upstreams:
  a: {url: %s}
max_sessions: 20
session_idle_timeout: 2s
auth:
  keys:
    - {name: agent, key: %s, tools: {deny: [a__secret_*]}, rate: 1000/s}
allowed_origins: [https://app.example.com]
admin: {token: %s}
`, up.url(), fuzzKey, fuzzAdmin), nil)
	if err != nil {
		f.Fatal(err)
	}
	g, err := New(cfg, &Options{Logger: &log})
	if err != nil {
		f.Fatal(err)
	}
	g.Start(ctx)
	f.Cleanup(func() { _ = g.Close() })
	_ = g.WaitTried(ctx)
	h := g.Handler()

	const init = `{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"f","version":"1"}}}`
	base := "Content-Type: application/json\nAccept: application/json, text/event-stream\n"
	for _, seed := range []struct{ method, path, headers, body string }{
		{"POST", "/mcp", base + "Authorization: Bearer " + fuzzKey, init},
		{"POST", "/mcp", base + "Authorization: Bearer wrong", init},
		{"POST", "/mcp", base, init},
		{"POST", "/mcp", base + "Authorization: bearer " + fuzzKey + "\nMcp-Session-Id: x", `{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"a__secret_tool"}}`},
		{"POST", "/mcp", base + "Authorization: Bearer " + fuzzKey, `[` + init + `,{"jsonrpc":"2.0","method":"notifications/initialized"}]`},
		{"POST", "/mcp", base + "Authorization: Bearer " + fuzzKey + "\nOrigin: https://evil.example", init},
		{"OPTIONS", "/mcp", "Origin: https://app.example.com\nAccess-Control-Request-Method: POST", ""},
		{"GET", "/mcp", "Accept: text/event-stream\nAuthorization: Bearer " + fuzzKey, ""},
		{"DELETE", "/mcp", "Authorization: Bearer " + fuzzKey + "\nMcp-Session-Id: abc", ""},
		{"GET", "/health", "Authorization: Bearer " + fuzzAdmin, ""},
		{"GET", "/health", "Host: evil.example", ""},
		{"POST", "/admin/credentials/x/reload", "Authorization: Bearer " + fuzzKey, ""},
		{"GET", "/readyz", "", ""},
		{"POST", "/mcp", base + "Authorization: Bearer " + fuzzKey, `{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2026-07-28"}}`},
	} {
		f.Add(seed.method, seed.path, seed.headers, []byte(seed.body))
	}
	f.Fuzz(func(t *testing.T, method, path, headers string, body []byte) {
		if len(body) > 1<<20 || len(headers) > 16<<10 {
			t.Skip()
		}
		if !strings.HasPrefix(path, "/") {
			path = "/" + path
		}
		rctx, stop := context.WithTimeout(ctx, time.Second) // a GET stream ends here
		defer stop()
		req, err := http.NewRequestWithContext(rctx, method, "http://127.0.0.1:8080"+path, bytes.NewReader(body))
		if err != nil {
			return
		}
		req.Host = "127.0.0.1:8080"
		sc := bufio.NewScanner(strings.NewReader(headers))
		for sc.Scan() {
			k, v, ok := strings.Cut(sc.Text(), ":")
			if !ok || !validHeaderName(k) || strings.ContainsAny(v, "\r\n") {
				continue
			}
			if strings.EqualFold(k, "Host") {
				req.Host = strings.TrimSpace(v)
				continue
			}
			req.Header.Add(k, strings.TrimSpace(v))
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		auth := req.Header.Values("Authorization")
		validKey := len(auth) == 1 && strings.EqualFold(strings.Join(strings.Fields(auth[0]), " "), "Bearer "+fuzzKey) && strings.HasSuffix(auth[0], fuzzKey)
		validAdmin := len(auth) == 1 && strings.HasSuffix(strings.TrimSpace(auth[0]), " "+fuzzAdmin)
		ok := rec.Code >= 200 && rec.Code < 300
		switch {
		case req.URL.Path == "/mcp" && ok && !validKey && method != http.MethodOptions:
			t.Fatalf("%s /mcp succeeded (%d) without a valid key (Authorization %q)", method, rec.Code, auth)
		case (req.URL.Path == "/health" || strings.HasPrefix(req.URL.Path, "/admin/")) && ok && !validAdmin:
			t.Fatalf("%s %s succeeded (%d) without the admin token", method, req.URL.Path, rec.Code)
		}
		if b := rec.Body.String(); strings.Contains(b, fuzzKey) || strings.Contains(b, fuzzAdmin) {
			t.Fatalf("the answer shows a key: %q", b)
		}
	})
}
