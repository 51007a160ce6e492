package e2e

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// everythingUpstream is the YAML of server-everything as a stdio upstream,
// run with a minimal environment (its get-env tool returns it).
func everythingUpstream(prefix string) string {
	return fmt.Sprintf(`
    command: %q
    args: [%q, stdio]
    env: {GZIP_ALLOWED_DOMAINS: 127.0.0.1}
    prefix: %q`, nodeBin(), npmPkg("@modelcontextprotocol/server-everything/dist/index.js"), prefix)
}

func upstreamStatus(h map[string]any, name string) (status string, connected bool) {
	ups, _ := h["upstreams"].(map[string]any)
	u, _ := ups[name].(map[string]any)
	status, _ = u["status"].(string)
	connected, _ = u["connected"].(bool)
	return status, connected
}

func listToolNames(t *testing.T, ctx context.Context, cs *mcp.ClientSession) []string {
	t.Helper()
	var names []string
	for tool, err := range cs.Tools(ctx, nil) {
		if err != nil {
			t.Fatalf("tools/list: %v", err)
		}
		names = append(names, tool.Name)
	}
	return names
}

// TestFederation puts our Go upstream over stdio and over HTTP and the
// third-party server-everything behind one gateway, then kills one upstream
// mid-run: its tools fail fast with a typed error, the others keep working,
// and it comes back by itself.
func TestFederation(t *testing.T) {
	requireNode(t)
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	httpURL, web := startUpstream(t, "--transport", "http", "--name", "web")
	gw := startGateway(t, fmt.Sprintf(`
upstreams:
  local:
    command: %q
    args: [--name, local]
  web:
    url: %s
  everything:%s
`, bin("testupstream"), httpURL, everythingUpstream("ev")))
	cs := connectClient(t, ctx, gw.URL)

	names := listToolNames(t, ctx, cs)
	for _, want := range []string{"local__echo", "web__echo", "ev__echo", "ev__get-sum", "local__test_simple_text"} {
		if !slices.Contains(names, want) {
			t.Errorf("tool %q missing from the federated list (%d tools)", want, len(names))
		}
	}
	call := func(name string, args map[string]any) *mcp.CallToolResult {
		t.Helper()
		res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: name, Arguments: args})
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		return res
	}
	for tool, want := range map[string]string{"local__echo": "hi", "web__echo": "hi"} {
		res := call(tool, map[string]any{"text": "hi"})
		if got := toolText(res); got != want {
			t.Errorf("%s = %q, want %q", tool, got, want)
		}
		// The upstream's hop-local _meta (its server info) stays on its hop.
		for k := range res.Meta {
			if strings.HasPrefix(k, "io.modelcontextprotocol/") {
				t.Errorf("%s result carries the upstream's hop-local _meta key %q", tool, k)
			}
		}
	}
	if got := toolText(call("ev__get-sum", map[string]any{"a": 2, "b": 40})); !strings.Contains(got, "42") {
		t.Errorf("ev__get-sum(2, 40) = %q, want 42", got)
	}

	// Kill the stdio upstream mid-run.
	res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "local__crash"})
	if err == nil && !res.IsError {
		t.Fatalf("local__crash returned success: %v", toolText(res))
	}
	// Until it is back, its tools fail with a typed error (the call may
	// also land after the restart and succeed).
	res = call("local__echo", map[string]any{"text": "x"})
	if res.IsError {
		if m, _ := res.Meta["dev.credgate/error"].(map[string]any); m["type"] == nil || m["type"] == "" {
			t.Errorf("failure without a typed object: %+v", res)
		}
	}
	// The others keep working.
	if got := toolText(call("web__echo", map[string]any{"text": "still"})); got != "still" {
		t.Errorf("web__echo after local died = %q", got)
	}
	if got := toolText(call("ev__echo", map[string]any{"message": "still"})); !strings.Contains(got, "still") {
		t.Errorf("ev__echo after local died = %q", got)
	}
	// It comes back by itself.
	if _, err := gw.waitHealth(ctx, func(h map[string]any) bool {
		s, c := upstreamStatus(h, "local")
		return s == "up" && c
	}); err != nil {
		t.Fatal(err)
	}
	if got := toolText(call("local__echo", map[string]any{"text": "back"})); got != "back" {
		t.Errorf("local__echo after restart = %q, want back", got)
	}
	h := gw.Health(t)
	if h["status"] != "ok" {
		t.Errorf("health status = %v, want ok", h["status"])
	}

	// Kill the HTTP upstream's process: its tools fail with a typed
	// upstream_unavailable, the others keep working.
	web.stop()
	res = call("web__echo", map[string]any{"text": "x"})
	m, _ := res.Meta["dev.credgate/error"].(map[string]any)
	if !res.IsError || m["type"] != "upstream_unavailable" || m["upstream"] != "web" {
		t.Errorf("web__echo with its upstream killed = %s (meta %v), want a typed upstream_unavailable failure", toolText(res), res.Meta)
	}
	if got := toolText(call("local__echo", map[string]any{"text": "alive"})); got != "alive" {
		t.Errorf("local__echo after web died = %q", got)
	}
	// Started again on the same address, it comes back by itself.
	addr := strings.TrimSuffix(strings.TrimPrefix(httpURL, "http://"), "/mcp")
	startUpstream(t, "--transport", "http", "--name", "web", "--listen", addr)
	if _, err := gw.waitHealth(ctx, func(h map[string]any) bool {
		s, c := upstreamStatus(h, "web")
		return s == "up" && c
	}); err != nil {
		t.Fatal(err)
	}
	if got := toolText(call("web__echo", map[string]any{"text": "back"})); got != "back" {
		t.Errorf("web__echo after restart = %q, want back", got)
	}
}

// TestSSEUpstream federates a legacy SSE upstream.
func TestSSEUpstream(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	url, _ := startUpstream(t, "--transport", "sse")
	gw := startGateway(t, fmt.Sprintf("upstreams:\n  old:\n    transport: sse\n    url: %s\n", url))
	cs := connectClient(t, ctx, gw.URL)
	res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "old__add", Arguments: map[string]any{"a": 1, "b": 2}})
	if err != nil || toolText(res) != "3" {
		t.Errorf("old__add over SSE = %v, %v", res, err)
	}
}

// TestConformanceThroughGateway runs the official suite through the gateway
// in front of our fixture upstream, over HTTP (2025-11-25 upstream session)
// and stdio (2026-07-28, multi-round-trip): every scenario must pass.
func TestConformanceThroughGateway(t *testing.T) {
	requireNode(t)
	t.Parallel()
	for name, upstream := range map[string]string{
		"http":           "    url: %s\n",
		"stdio":          "    command: %q\n",
		"http-per-agent": "    url: %s\n    session: per_agent\n",
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
			defer cancel()
			target := bin("testupstream")
			if strings.HasPrefix(name, "http") {
				target = startUpstreamHTTP(t)
			}
			gw := startGateway(t, "upstreams:\n  fixtures:\n"+fmt.Sprintf(upstream, target)+"    prefix: \"\"\n")
			_, failed := runConformance(t, ctx, gw.URL)
			if len(failed) > 0 {
				t.Errorf("scenarios failed through the gateway (%s upstream): %v", name, failed)
			}
		})
	}
}

// freePort returns a loopback port that was free a moment ago, for a server
// that cannot be told to bind port 0.
func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// TestEverythingConformanceParity: no scenario that passes against
// server-everything directly may fail through the gateway.
func TestEverythingConformanceParity(t *testing.T) {
	requireNode(t)
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()

	port := freePort(t)
	cmd := exec.Command(nodeBin(), npmPkg("@modelcontextprotocol/server-everything/dist/index.js"), "streamableHttp")
	cmd.Env = []string{"PORT=" + strconv.Itoa(port), "GZIP_ALLOWED_DOMAINS=127.0.0.1", "PATH=" + os.Getenv("PATH")}
	p := startCmd(t, ctx, "server-everything", cmd)
	if _, err := p.waitLine(ctx, regexp.MustCompile(strconv.Itoa(port))); err != nil {
		t.Fatalf("server-everything did not start: %v\n%s", err, p.Output())
	}
	direct, _ := runConformance(t, ctx, fmt.Sprintf("http://127.0.0.1:%d/mcp", port))

	gw := startGateway(t, "upstreams:\n  everything:"+everythingUpstream("")+"\n")
	through, _ := runConformance(t, ctx, gw.URL)
	for _, s := range direct {
		if !slices.Contains(through, s) {
			t.Errorf("scenario %s passes against server-everything directly but fails through the gateway", s)
		}
	}
	t.Logf("server-everything: %d scenarios pass directly, %d through the gateway", len(direct), len(through))
}

// TestInspectorCLI: a real third-party client lists and calls tools through
// the gateway.
func TestInspectorCLI(t *testing.T) {
	requireNode(t)
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	gw := startGateway(t, fmt.Sprintf("upstreams:\n  up:\n    command: %q\n", bin("testupstream")))
	inspector := func(args ...string) string {
		t.Helper()
		cmd := exec.CommandContext(ctx, nodeBin(), append([]string{npmPkg("@modelcontextprotocol/inspector-cli/build/cli.js"),
			"--cli", gw.URL, "--transport", "http"}, args...)...)
		// It reads its own package.json at a path relative to the working
		// directory's parent: run it one level below e2e/package.json.
		cmd.Dir = filepath.Join(repoRoot(), "e2e", "testupstream")
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("inspector %v: %v\n%s", args, err, out)
		}
		return string(out)
	}
	if out := inspector("--method", "tools/list"); !strings.Contains(out, `"up__add"`) {
		t.Errorf("inspector tools/list does not show up__add:\n%s", tail(out, 30))
	}
	if out := inspector("--method", "tools/call", "--tool-name", "up__add", "--tool-arg", "a=2", "b=40"); !strings.Contains(out, "42") {
		t.Errorf("inspector tools/call up__add = %s, want 42", tail(out, 30))
	}
}

// TestStdioMode serves one agent over stdio, as desktop clients run it.
func TestStdioMode(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cfg := testupstreamConfig(t)
	cmd := exec.Command(bin("gateway"), "stdio", "--config", cfg)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cs := connectTransport(t, ctx, &mcp.CommandTransport{Command: cmd}, nil)
	res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "up__echo", Arguments: map[string]any{"text": "over stdio"}})
	if err != nil || toolText(res) != "over stdio" {
		t.Errorf("up__echo over stdio = %v, %v", res, err)
	}
}

// TestStdioModeHungUpstream: an upstream that hangs in its handshake does
// not keep `gateway stdio` from answering initialize and serving the
// others (it read nothing for 30 s, found trying it as a desktop client).
func TestStdioModeHungUpstream(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cfg := t.TempDir() + "/gw.yaml"
	if err := os.WriteFile(cfg, fmt.Appendf(nil, "upstreams:\n  up:\n    command: %q\n  hang:\n    command: sleep\n    args: [\"300\"]\n    timeout: 50s\n", bin("testupstream")), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin("gateway"), "stdio", "--config", cfg)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	initCtx, initCancel := context.WithTimeout(ctx, 10*time.Second) // the wait was 30 s
	defer initCancel()
	cs := connectTransport(t, initCtx, &mcp.CommandTransport{Command: cmd}, nil)
	// The call waits, at most 30 s from the start, for the upstreams'
	// first connections.
	res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "up__echo", Arguments: map[string]any{"text": "beside a hung upstream"}})
	if err != nil || toolText(res) != "beside a hung upstream" {
		t.Errorf("up__echo over stdio beside a hung upstream: %v, %v", res, err)
	}
}

// TestCLI covers validate, --version and --help.
func TestCLI(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	dir := t.TempDir()
	good, bad := dir+"/good.yaml", dir+"/bad.yaml"
	_ = os.WriteFile(good, []byte("upstreams:\n  a: {command: x}\n"), 0o600)
	_ = os.WriteFile(bad, []byte("upstreams:\n  a: {transport: grpc}\n  b: {transport: stdio}\n  c: {url: http://x, colour: red}\n"), 0o600)
	run := func(args ...string) (string, int) {
		cmd := exec.CommandContext(ctx, bin("gateway"), args...)
		out, _ := cmd.CombinedOutput()
		return string(out), cmd.ProcessState.ExitCode()
	}
	if out, code := run("validate", "--config", good); code != 0 {
		t.Errorf("validate good config: exit %d\n%s", code, out)
	}
	out, code := run("validate", "--config", bad)
	if code == 0 {
		t.Errorf("validate bad config: exit 0")
	}
	for _, want := range []string{`upstreams.a.transport: unknown transport "grpc"`, "upstreams.b.command: missing", "upstreams.c.colour: unknown key"} {
		if !strings.Contains(out, want) {
			t.Errorf("validate output lacks %q:\n%s", want, out)
		}
	}
	cmd := exec.CommandContext(ctx, bin("gateway"), "validate")
	cmd.Env = append(os.Environ(), "CREDGATE_CONFIG="+good)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Errorf("validate with CREDGATE_CONFIG: %v\n%s", err, out)
	}
	if out, code := run("--version"); code != 0 || !strings.HasPrefix(out, "credgate ") {
		t.Errorf("--version = %q (exit %d)", out, code)
	}
	if out, code := run("--help"); code != 0 || !strings.Contains(out, "gateway validate") {
		t.Errorf("--help = %q (exit %d)", out, code)
	}
}

// TestNoOrphanChildren kills the gateway with SIGKILL: its stdio upstreams
// must not outlive it.
func TestNoOrphanChildren(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	marker := fmt.Sprintf("orphan-check-%d", time.Now().UnixNano())
	gw := startGateway(t, fmt.Sprintf("upstreams:\n  up:\n    command: %q\n    args: [--name, %s]\n", bin("testupstream"), marker))
	children := func() []int {
		var pids []int
		entries, _ := os.ReadDir("/proc")
		for _, e := range entries {
			pid, err := strconv.Atoi(e.Name())
			if err != nil {
				continue
			}
			cmdline, _ := os.ReadFile("/proc/" + e.Name() + "/cmdline")
			if strings.Contains(string(cmdline), marker) {
				pids = append(pids, pid)
			}
		}
		return pids
	}
	if len(children()) == 0 {
		t.Fatal("the stdio upstream is not running")
	}
	if err := syscall.Kill(gw.Pid(), syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if err := poll(ctx, func() (bool, error) { return len(children()) == 0, nil }); err != nil {
		t.Fatalf("stdio upstream %v outlived the gateway", children())
	}
}

// TestStdioModeSurvivesBadLines: a line from the agent that is not a
// JSON-RPC message is left out, and `gateway stdio` goes on serving, as a
// server talked to directly does (it exited at the first such line).
func TestStdioModeSurvivesBadLines(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cfg := testupstreamConfig(t)
	cmd := exec.CommandContext(ctx, bin("gateway"), "stdio", "--config", cfg)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = stdin.Close(); _ = cmd.Wait() })
	lines := []string{
		`{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"raw","version":"1"}}}`,
		`{"jsonrpc":"2.0","method":"notifications/initialized"}`,
		`garbage line`,
		`{"jsonrpc":"2.0","id":2,"method":"ping"} trailing`,
		`{"jsonrpc":"2.0","id":true,"method":"ping"}`,
		`{"jsonrpc":"2.0","id":7,"method":"ping"}`,
	}
	if _, err := io.WriteString(stdin, strings.Join(lines, "\n")+"\n"); err != nil {
		t.Fatal(err)
	}
	answers := bufio.NewScanner(stdout)
	answers.Buffer(nil, 1<<20)
	for answers.Scan() {
		if strings.Contains(answers.Text(), `"id":7`) {
			if !strings.Contains(answers.Text(), `"result":{}`) {
				t.Errorf("ping after the bad lines: %s", answers.Text())
			}
			return
		}
	}
	t.Fatalf("no answer to the ping after the bad lines: stdout ended (%v); the gateway stopped", answers.Err())
}

// TestStdioModeStopsWhenAgentStopsReading: SIGTERM ends `gateway stdio`
// within shutdown_timeout and a few seconds even when the agent has stopped
// reading its answers (found trying the gateway: it hung for minutes, its
// session's close waiting on writes to a full pipe).
func TestStdioModeStopsWhenAgentStopsReading(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cfg := t.TempDir() + "/gw.yaml"
	if err := os.WriteFile(cfg, fmt.Appendf(nil, "shutdown_timeout: 1s\nupstreams:\n  up:\n    command: %q\n", bin("testupstream")), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin("gateway"), "stdio", "--config", cfg)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe() // never read
	if err != nil {
		t.Fatal(err)
	}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL); _ = stdout.Close() })
	logs := bufio.NewScanner(stderr)
	for logs.Scan() && !strings.Contains(logs.Text(), "serving one agent on stdio") {
	}
	go func() { _, _ = io.Copy(io.Discard, stderr) }()
	// Far more answers than the pipe to the agent holds.
	written := make(chan struct{})
	go func() {
		_, _ = io.WriteString(stdin, `{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"raw","version":"1"}}}`+"\n"+
			`{"jsonrpc":"2.0","method":"notifications/initialized"}`+"\n")
		for i := 1; i <= 5000; i++ {
			if _, err := fmt.Fprintf(stdin, `{"jsonrpc":"2.0","id":%d,"method":"tools/list"}`+"\n", i); err != nil {
				return
			}
			if i == 500 {
				close(written)
			}
		}
	}()
	select {
	case <-written:
	case <-ctx.Done():
		t.Fatal("the gateway read none of the agent's requests")
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	select {
	case err := <-exited:
		if err != nil {
			t.Errorf("gateway stdio exited with %v after SIGTERM", err)
		}
	case <-ctx.Done():
		t.Fatal("gateway stdio still running long after SIGTERM (shutdown_timeout 1s): it waits for an agent that does not read")
	}
}

// testupstreamConfig writes a config with one stdio upstream "up", the
// testupstream binary, and returns its path.
func testupstreamConfig(t *testing.T) string {
	t.Helper()
	cfg := t.TempDir() + "/gw.yaml"
	if err := os.WriteFile(cfg, fmt.Appendf(nil, "upstreams:\n  up:\n    command: %q\n", bin("testupstream")), 0o600); err != nil {
		t.Fatal(err)
	}
	return cfg
}
