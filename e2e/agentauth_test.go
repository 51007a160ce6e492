package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// Issue 9 acceptance: agent authentication, per-agent policy and limits,
// protected ops endpoints, Host and Origin checks, on the built binary.

// Agents' keys in these tests.
const (
	e2eKeyReader = "e2e-reader-key-0123456789abcdef"
	e2eKeyWriter = "e2e-writer-key-0123456789abcdef"
	e2eKeyLimit  = "e2e-limited-key-0123456789abcdef"
	e2eAdmin     = "e2e-admin-token-0123456789abcdef"
	e2eUpToken   = "e2e-upstream-token-0123456789abcdef"
)

// connectWithKey connects a go-sdk client that authenticates with key.
func connectWithKey(ctx context.Context, url, key string) (*mcp.ClientSession, error) {
	tr := &mcp.StreamableClientTransport{Endpoint: url, HTTPClient: bearerClient(func() string { return key }), MaxRetries: -1}
	return mcp.NewClient(&mcp.Implementation{Name: "credgate-e2e", Version: "1.0.0"}, nil).Connect(ctx, tr, nil)
}

func mustConnectWithKey(t *testing.T, ctx context.Context, url, key string) *mcp.ClientSession {
	t.Helper()
	cs, err := connectWithKey(ctx, url, key)
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	t.Cleanup(func() { _ = cs.Close() })
	return cs
}

// agentConfig fronts one HTTP test upstream (which records every header it
// gets) with three keys: reader (echo and add), writer (everything but
// crash and slow, by policy) and limited (2 calls a minute).
func agentConfig(upURL string) string {
	return fmt.Sprintf(`
upstreams:
  up:
    url: %s
    headers: {Authorization: "Bearer %s"}
auth:
  keys:
    - {name: reader, key: %s, tools: {allow: [up__echo, up__add]}}
    - {name: writer, key: %s}
    - {name: limited, key: %s, rate: "2/m"}
policies:
  - agents: [writer, limited]
    tools: {deny: [up__crash, up__slow]}
admin: {token: %s}
`, upURL, e2eUpToken, e2eKeyReader, e2eKeyWriter, e2eKeyLimit, e2eAdmin)
}

func listTools(t *testing.T, ctx context.Context, cs *mcp.ClientSession) []string {
	t.Helper()
	var names []string
	for tool, err := range cs.Tools(ctx, nil) {
		if err != nil {
			t.Fatalf("tools/list: %v", err)
		}
		names = append(names, tool.Name)
	}
	sort.Strings(names)
	return names
}

// callFailureMap returns the failure object of a failed call.
func callFailureMap(t *testing.T, res *mcp.CallToolResult) map[string]any {
	t.Helper()
	m, _ := res.Meta["dev.credgate/error"].(map[string]any)
	if !res.IsError || m == nil {
		t.Fatalf("result %s: want a failed call with a failure object", toolText(res))
	}
	return m
}

// Acceptance: keys with different policies see different tool lists and
// are refused outside them with a typed forbidden failure; a wrong key gets
// 401; a rate-limited key gets the typed failure with retry_after_seconds.
func TestAgentKeysAndPolicies(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	upURL := startUpstreamHTTP(t, "--record-headers")
	gw := startGateway(t, agentConfig(upURL))
	gw.AdminToken = e2eAdmin

	reader := mustConnectWithKey(t, ctx, gw.URL, e2eKeyReader)
	writer := mustConnectWithKey(t, ctx, gw.URL, e2eKeyWriter)
	readerTools, writerTools := listTools(t, ctx, reader), listTools(t, ctx, writer)
	if want := []string{"up__add", "up__echo"}; !slices.Equal(readerTools, want) {
		t.Errorf("reader sees %v, want %v", readerTools, want)
	}
	if !slices.Contains(writerTools, "up__whoami") || slices.Contains(writerTools, "up__crash") || slices.Contains(writerTools, "up__slow") || len(writerTools) <= len(readerTools) {
		t.Errorf("writer sees %v; want everything but up__crash and up__slow", writerTools)
	}

	// Outside the grants: typed forbidden, never auth_failure.
	for _, c := range []struct {
		cs   *mcp.ClientSession
		tool string
	}{{reader, "up__whoami"}, {writer, "up__crash"}, {reader, "up__nonexistent"}} {
		res, err := c.cs.CallTool(ctx, &mcp.CallToolParams{Name: c.tool})
		if err != nil {
			t.Fatalf("%s: %v", c.tool, err)
		}
		f := callFailureMap(t, res)
		if f["type"] != "forbidden" || f["retryable"] != false || f["recovery"] != "grant_permission" || f["provider"] != "credgate" {
			t.Errorf("%s = %v; want a forbidden failure", c.tool, f)
		}
	}
	if res, err := reader.CallTool(ctx, &mcp.CallToolParams{Name: "up__echo", Arguments: map[string]any{"text": "hi"}}); err != nil || res.IsError || toolText(res) != "hi" {
		t.Errorf("reader's echo = %v, %v", res, err)
	}
	// The upstream survived: writer's forbidden crash never reached it.
	if res, err := writer.CallTool(ctx, &mcp.CallToolParams{Name: "up__whoami"}); err != nil || res.IsError {
		t.Errorf("writer's whoami = %v, %v", res, err)
	}

	// A wrong key, and no key: 401 with a Bearer challenge, no session.
	if _, err := connectWithKey(ctx, gw.URL, "e2e-wrong-key-0123456789abcdef"); err == nil {
		t.Error("a wrong key connected")
	}
	for _, auth := range []string{"", "Bearer e2e-wrong-key-0123456789abcdef"} {
		code, hdr, _ := rawRequest(t, ctx, http.MethodPost, gw.URL, "", map[string]string{"Authorization": auth}, initializeJSON)
		if code != http.StatusUnauthorized || !strings.HasPrefix(hdr.Get("WWW-Authenticate"), "Bearer") || hdr.Get("Mcp-Session-Id") != "" {
			t.Errorf("Authorization %q: %d, WWW-Authenticate %q; want 401 with a Bearer challenge", auth, code, hdr.Get("WWW-Authenticate"))
		}
	}

	// Over the rate: auth_failure/rate_limit_reached from credgate.
	limited := mustConnectWithKey(t, ctx, gw.URL, e2eKeyLimit)
	for i := range 2 {
		if res, err := limited.CallTool(ctx, &mcp.CallToolParams{Name: "up__echo", Arguments: map[string]any{"text": "x"}}); err != nil || res.IsError {
			t.Fatalf("limited call %d: %v, %v", i, res, err)
		}
	}
	res, err := limited.CallTool(ctx, &mcp.CallToolParams{Name: "up__echo", Arguments: map[string]any{"text": "x"}})
	if err != nil {
		t.Fatal(err)
	}
	f := callFailureMap(t, res)
	if ra, _ := f["retry_after_seconds"].(float64); f["type"] != "auth_failure" || f["subtype"] != "rate_limit_reached" || f["provider"] != "credgate" || f["retryable"] != true || ra < 1 {
		t.Errorf("over the rate: %v; want rate_limit_reached from credgate with retry_after_seconds", f)
	}

	// The audit trail: one info line per call, naming the agent.
	for _, want := range []*regexp.Regexp{
		regexp.MustCompile(`"level":"info".*"agent":"reader".*"upstream":"up".*"tool":"echo".*"credential":"upstreams.up.headers.Authorization".*"outcome":"ok".*"message":"call"`),
		regexp.MustCompile(`"level":"info".*"agent":"writer".*"tool":"crash".*"outcome":"forbidden".*"message":"call"`),
		regexp.MustCompile(`"agent":"limited".*"subtype":"rate_limit_reached".*"outcome":"auth_failure".*"message":"call"`),
	} {
		// The log is read from the gateway's stderr as it comes.
		if _, err := gw.waitLine(ctx, want); err != nil {
			t.Errorf("no log line matches %s: %v", want, err)
		}
	}

	// No token reaches the upstream but the gateway's own, and no agent key
	// or token is logged or shown in health.
	headers := recordedHeaders(t, ctx, upURL)
	all, _ := json.Marshal(headers)
	for _, key := range []string{e2eKeyReader, e2eKeyWriter, e2eKeyLimit, e2eAdmin} {
		if strings.Contains(string(all), key) {
			t.Errorf("the upstream received an agent's key (%s...)", key[:12])
		}
		if strings.Contains(gw.Logs(), key) {
			t.Errorf("the gateway logged a key (%s...)", key[:12])
		}
	}
	if auths := headers["Authorization"]; !slices.Equal(auths, []string{"Bearer " + e2eUpToken}) {
		t.Errorf("the upstream's Authorization values = %d values; want only the gateway's own credential", len(auths))
	}
	h := gw.Health(t)
	if _, ok := h["upstreams"]; !ok {
		t.Errorf("/health with the admin token = %v", h)
	}
	// Refused calls are counted by their type, like forwarded ones.
	m := gw.scrape(t, ctx)
	m.want(t, "credgate_tool_calls_total", map[string]string{"upstream": "up", "tool": "up__crash", "type": "forbidden", "subtype": ""}, 1)
	m.want(t, "credgate_tool_calls_total", map[string]string{"upstream": "up", "tool": "up__echo", "type": "auth_failure", "subtype": "rate_limit_reached"}, 1)
}

// recordedHeaders reads what testupstream --record-headers saw.
func recordedHeaders(t *testing.T, ctx context.Context, upURL string) map[string][]string {
	t.Helper()
	base := strings.TrimSuffix(upURL, "/mcp")
	resp, err := httpGet(ctx, base+"/debug/headers")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var doc struct {
		Requests int                 `json:"requests"`
		Headers  map[string][]string `json:"headers"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&doc); err != nil {
		t.Fatal(err)
	}
	if doc.Requests == 0 {
		t.Fatal("the upstream recorded no request")
	}
	return doc.Headers
}

const initializeJSON = `{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"raw","version":"1"}}}`

// rawRequest sends one HTTP request with the given Host (if non-empty) and
// headers (empty values are not sent).
func rawRequest(t *testing.T, ctx context.Context, method, url, host string, hdr map[string]string, body string) (int, http.Header, string) {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if host != "" {
		req.Host = host
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, text/event-stream")
	for k, v := range hdr {
		if v != "" {
			req.Header.Set(k, v)
		}
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<16))
	return resp.StatusCode, resp.Header, string(b)
}

// Acceptance: a cross-origin browser request is refused; a foreign Host is
// refused on every endpoint; ops endpoints need the admin token; /healthz
// and /readyz stay open.
func TestOriginHostAndOpsEndpoints(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	upURL := startUpstreamHTTP(t)
	gw := startGateway(t, agentConfig(upURL)+"allowed_origins: [https://app.example.com]\n")
	base := "http://" + gw.Addr
	auth := map[string]string{"Authorization": "Bearer " + e2eKeyWriter}

	withOrigin := func(o string) map[string]string {
		return map[string]string{"Authorization": auth["Authorization"], "Origin": o}
	}
	if code, _, body := rawRequest(t, ctx, http.MethodPost, gw.URL, "", withOrigin("https://evil.example"), initializeJSON); code != http.StatusForbidden || !strings.Contains(body, "allowed_origins") {
		t.Errorf("cross-origin initialize: %d %s, want 403 naming allowed_origins", code, body)
	}
	if code, hdr, body := rawRequest(t, ctx, http.MethodPost, gw.URL, "", withOrigin("https://app.example.com"), initializeJSON); code != http.StatusOK || hdr.Get("Access-Control-Allow-Origin") != "https://app.example.com" {
		t.Errorf("allowed origin: %d %s %v", code, body, hdr)
	}
	if code, _, body := rawRequest(t, ctx, http.MethodPost, gw.URL, "", auth, initializeJSON); code != http.StatusOK {
		t.Errorf("no Origin: %d %s", code, body)
	}

	for _, p := range []struct{ method, path string }{
		{"POST", "/mcp"}, {"GET", "/health"}, {"GET", "/healthz"}, {"GET", "/readyz"}, {"GET", "/admin/events"}, {"GET", "/nothing"},
	} {
		code, _, body := rawRequest(t, ctx, p.method, base+p.path, "rebind.evil.example:"+strings.Split(gw.Addr, ":")[1], map[string]string{"Authorization": "Bearer " + e2eAdmin}, initializeJSON)
		if code != http.StatusForbidden || !strings.Contains(body, "allowed_hosts") {
			t.Errorf("%s %s with a foreign Host: %d %s, want 403", p.method, p.path, code, body)
		}
	}

	for path, want := range map[string]int{"/health": 401, "/admin/events": 401, "/healthz": 200, "/readyz": 200} {
		code, _, body := rawRequest(t, ctx, http.MethodGet, base+path, "", nil, "")
		if code != want {
			t.Errorf("GET %s without token: %d, want %d", path, code, want)
		}
		if want == 200 && strings.Contains(body, "up") && body != "ok\n" && body != "ready\n" {
			t.Errorf("GET %s says more than it should: %q", path, body)
		}
	}
	if code, _, _ := rawRequest(t, ctx, http.MethodGet, base+"/health", "", map[string]string{"Authorization": "Bearer " + e2eKeyWriter}, ""); code != 401 {
		t.Errorf("/health with an agent's key: %d, want 401", code)
	}
	if code, _, body := rawRequest(t, ctx, http.MethodGet, base+"/health", "", map[string]string{"Authorization": "Bearer " + e2eAdmin}, ""); code != 200 || !strings.Contains(body, `"upstreams"`) {
		t.Errorf("/health with the admin token: %d %s", code, body)
	}
}

// Acceptance: the gateway refuses to start on 0.0.0.0 without auth and
// without allow_unauthenticated, naming the keys; with
// allow_unauthenticated it starts.
func TestRefusesUnauthenticatedExposure(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	upURL := startUpstreamHTTP(t)
	cfg := fmt.Sprintf("upstreams:\n  up: {url: %s}\n", upURL)
	code, _, stderr := runGatewayCmd(t, ctx, "serve", "--config", writeConfig(t, cfg), "--listen", "0.0.0.0:0")
	if code != 1 || !strings.Contains(stderr, "auth.keys") || !strings.Contains(stderr, "allow_unauthenticated") {
		t.Errorf("serve on 0.0.0.0 without auth: exit %d\n%s\nwant exit 1 naming auth.keys and allow_unauthenticated", code, stderr)
	}
	if strings.Contains(stderr, "listening") {
		t.Error("the gateway listened before refusing")
	}
	p := startProcess(t, ctx, "gateway", "serve", "--config", writeConfig(t, cfg+"allow_unauthenticated: true\n"), "--listen", "0.0.0.0:0")
	if _, err := p.waitFunc(ctx, listenAddr); err != nil {
		t.Fatalf("with allow_unauthenticated: %v\n%s", err, p.Output())
	}
}

// The Docker image's default config (configs/docker.yaml, which listens on
// 0.0.0.0) starts with AGENT_KEY set, and agents need that key.
func TestDockerConfigAuthenticates(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	const key = "e2e-docker-agent-key-0123456789abcdef"
	cmd := exec.Command(requireBin(t, "gateway"), "serve", "--config", filepath.Join(repoRoot(), "configs", "docker.yaml"), "--listen", "0.0.0.0:0")
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + t.TempDir(), "AGENT_KEY=" + key}
	p := startCmd(t, ctx, "gateway", cmd)
	m, err := p.waitFunc(ctx, listenAddr)
	if err != nil {
		t.Fatalf("the Docker config did not start: %v\n%s", err, p.Output())
	}
	_, port, _ := net.SplitHostPort(m[1])
	url := "http://127.0.0.1:" + port + "/mcp"
	if code, _, _ := rawRequest(t, ctx, http.MethodPost, url, "", nil, initializeJSON); code != http.StatusUnauthorized {
		t.Errorf("no key: %d, want 401", code)
	}
	cs := mustConnectWithKey(t, ctx, url, key)
	if err := cs.Ping(ctx, nil); err != nil {
		t.Errorf("ping with the key: %v", err)
	}
}
