package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// startGatewayAt runs `gateway serve --config path` (a file the test owns
// and rewrites) like startGateway, and returns once it is ready.
func startGatewayAt(t *testing.T, path string) *gatewayProc {
	t.Helper()
	requireBin(t, "gateway")
	p := startProcess(t, context.Background(), "gateway", "serve", "--config", path, "--listen", "127.0.0.1:0", "--log-level", "debug")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	m, err := p.waitFunc(ctx, listenAddr)
	if err != nil {
		t.Fatalf("gateway did not log its listen address: %v\n%s", err, p.Output())
	}
	g := &gatewayProc{proc: p, Addr: m[1], URL: "http://" + m[1] + "/mcp", ConfigPath: path}
	if err := g.waitReady(ctx); err != nil {
		t.Fatalf("gateway not ready: %v\n%s", err, p.Output())
	}
	return g
}

// stdioUpstreams is a config of testupstream children over stdio, one per
// name, each named after itself.
func stdioUpstreams(names ...string) string {
	var b strings.Builder
	b.WriteString("upstreams:\n")
	for _, n := range names {
		fmt.Fprintf(&b, "  %s:\n    command: %q\n    args: [--name, %s]\n", n, bin("testupstream"), n)
	}
	return b.String()
}

// configBlock returns /health's config block.
func configBlock(h map[string]any) map[string]any {
	c, _ := h["config"].(map[string]any)
	return c
}

// childPID calls up__pid through the agent.
func childPID(t *testing.T, ctx context.Context, cs *mcp.ClientSession, up string) int {
	t.Helper()
	res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: up + "__pid"})
	if err != nil || res.IsError {
		t.Fatalf("%s__pid: %v %v", up, res, err)
	}
	pid, err := strconv.Atoi(toolText(res))
	if err != nil {
		t.Fatalf("%s__pid: %v", up, err)
	}
	return pid
}

// agentTools lists the agent's tools, sorted.
func agentTools(t *testing.T, ctx context.Context, cs *mcp.ClientSession) []string {
	t.Helper()
	names := listToolNames(t, ctx, cs)
	slices.Sort(names)
	return names
}

// Acceptance 4 (issue 8): a broken config written to disk: the old config
// keeps serving and /health shows the error; the fixed file is applied,
// untouched upstreams keep their sessions (same child PID), agents get
// list_changed.
func TestReloadBrokenThenFixed(t *testing.T) {
	requireBin(t, "gateway")
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	path := filepath.Join(t.TempDir(), "gateway.yaml")
	if err := os.WriteFile(path, []byte(stdioUpstreams("keep", "gone")), 0o600); err != nil {
		t.Fatal(err)
	}
	gw := startGatewayAt(t, path)
	changed := make(chan struct{}, 64)
	cs := connectClientWith(t, ctx, gw.URL, &mcp.ClientOptions{ToolListChangedHandler: func(context.Context, *mcp.ToolListChangedRequest) {
		select {
		case changed <- struct{}{}:
		default:
		}
	}})
	keepPID := childPID(t, ctx, cs, "keep")
	if c := configBlock(gw.Health(t)); c["version"] != 1.0 || c["path"] != path || c["loaded_at"] == nil {
		t.Errorf("config block at start: %v", c)
	}

	// A broken file, written in place (as an editor saves).
	const secret = "sk-e2e-reload-secret-0123456789"
	broken := stdioUpstreams("keep") + "  bad:\n    transport: carrier-pigeon\n    url: http://127.0.0.1:1/mcp\n    headers: {Authorization: Bearer " + secret + "}\n"
	if err := os.WriteFile(path, []byte(broken), 0o600); err != nil {
		t.Fatal(err)
	}
	h, err := gw.waitHealth(ctx, func(h map[string]any) bool {
		e, _ := configBlock(h)["last_error"].(string)
		return strings.Contains(e, "upstreams.bad.transport")
	})
	if err != nil {
		t.Fatalf("/health never showed the broken config: %v", err)
	}
	if c := configBlock(h); c["version"] != 1.0 || c["last_attempt_at"] == nil {
		t.Errorf("config block after the broken file: %v", c)
	}
	if upstreamHealth(h, "gone") == nil || upstreamHealth(h, "bad") != nil {
		t.Errorf("the broken config changed the upstreams: %v", h["upstreams"])
	}
	if got := childPID(t, ctx, cs, "keep"); got != keepPID {
		t.Errorf("the old config stopped serving: keep's child is %d, was %d", got, keepPID)
	}
	if _, err := gw.waitLine(ctx, regexp.MustCompile(`"level":"error".*upstreams.bad.transport.*config reload rejected`)); err != nil {
		t.Errorf("the rejection was not logged at error: %v", err)
	}
	// From here a list_changed is the reload's: the SDK sends one 10ms
	// after a catalog change, and the last one before (the start-up
	// catalog's) is long past: the rejected file alone took the watch's
	// 200ms debounce.
	for len(changed) > 0 {
		<-changed
	}

	// The fixed file: keep untouched, gone removed, added new.
	if err := os.WriteFile(path, []byte(stdioUpstreams("keep", "added")), 0o600); err != nil {
		t.Fatal(err)
	}
	h, err = gw.waitHealth(ctx, func(h map[string]any) bool {
		c := configBlock(h)
		u := upstreamHealth(h, "added")
		return c["version"] == 2.0 && c["last_error"] == nil && u != nil && u["connected"] == true
	})
	if err != nil {
		t.Fatalf("the fixed config was not applied: %v", err)
	}
	if upstreamHealth(h, "gone") != nil {
		t.Error("the removed upstream is still in /health")
	}
	select {
	case <-changed:
	case <-ctx.Done():
		t.Fatal("the agent got no tools/list_changed")
	}
	var tools []string
	if err := poll(ctx, func() (bool, error) {
		tools = agentTools(t, ctx, cs)
		return slices.Contains(tools, "added__pid") && !slices.Contains(tools, "gone__pid"), nil
	}); err != nil {
		t.Errorf("tools after the reload: %v", tools)
	}
	if got := childPID(t, ctx, cs, "keep"); got != keepPID {
		t.Errorf("the untouched upstream was restarted: child %d, was %d", got, keepPID)
	}
	if strings.Contains(gw.Logs(), secret) {
		t.Error("the broken file's secret reached the logs")
	}
}

// Issue 8: a config file behind symlinks, updated the way Kubernetes
// updates a ConfigMap volume (a new directory, then an atomic rename of the
// ..data symlink), is picked up.
func TestReloadSymlinkSwap(t *testing.T) {
	requireBin(t, "gateway")
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	dir := t.TempDir()
	version := func(name, content string) {
		t.Helper()
		d := filepath.Join(dir, name)
		if err := os.Mkdir(d, 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(d, "gateway.yaml"), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		tmp := filepath.Join(dir, "..data_tmp")
		if err := os.Symlink(name, tmp); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, filepath.Join(dir, "..data")); err != nil {
			t.Fatal(err)
		}
	}
	version("..v1", stdioUpstreams("one"))
	path := filepath.Join(dir, "gateway.yaml")
	if err := os.Symlink(filepath.Join("..data", "gateway.yaml"), path); err != nil {
		t.Fatal(err)
	}
	gw := startGatewayAt(t, path)
	cs := connectClient(t, ctx, gw.URL)
	onePID := childPID(t, ctx, cs, "one")

	version("..v2", stdioUpstreams("one", "two"))
	if err := os.RemoveAll(filepath.Join(dir, "..v1")); err != nil {
		t.Fatal(err)
	}
	if _, err := gw.waitHealth(ctx, func(h map[string]any) bool {
		u := upstreamHealth(h, "two")
		return configBlock(h)["version"] == 2.0 && u != nil && u["connected"] == true
	}); err != nil {
		t.Fatalf("the swapped config was not applied: %v", err)
	}
	if got := childPID(t, ctx, cs, "one"); got != onePID {
		t.Errorf("the untouched upstream was restarted: child %d, was %d", got, onePID)
	}

	// And again: the watch follows the new target.
	version("..v3", stdioUpstreams("two"))
	if _, err := gw.waitHealth(ctx, func(h map[string]any) bool {
		return configBlock(h)["version"] == 3.0 && upstreamHealth(h, "one") == nil
	}); err != nil {
		t.Fatalf("the second swap was not applied: %v", err)
	}
}
