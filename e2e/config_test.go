package e2e

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// TestSIGHUPKeepsServing is the regression test for issue 6 item 17: SIGHUP
// (a closed terminal, or an operator's reload) never stops the gateway. It
// used to exit. Since issue 8 it reloads the config: an unchanged file
// changes nothing, but /health shows the attempt.
func TestSIGHUPKeepsServing(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	gw := startGateway(t, fmt.Sprintf("upstreams:\n  up:\n    command: %q\n", bin("testupstream")))
	for range 2 {
		if err := syscall.Kill(gw.Pid(), syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := gw.waitLine(ctx, regexp.MustCompile(`"level":"info".*SIGHUP: reloading the config`)); err != nil {
		t.Fatalf("no reload after SIGHUP: %v", err)
	}
	h, err := gw.waitHealth(ctx, func(h map[string]any) bool {
		c, _ := h["config"].(map[string]any)
		return c["last_attempt_at"] != nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if c := h["config"].(map[string]any); c["version"] != 1.0 || c["last_error"] != nil {
		t.Errorf("config after SIGHUP with an unchanged file: %v", c)
	}
	cs := connectClient(t, ctx, gw.URL)
	res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "up__echo", Arguments: map[string]any{"text": "still here"}})
	if err != nil || toolText(res) != "still here" {
		t.Errorf("call after SIGHUP = %v, %v", res, err)
	}
	resp, err := httpGet(ctx, "http://"+gw.Addr+"/healthz")
	if err != nil {
		t.Fatalf("/healthz after SIGHUP: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("/healthz after SIGHUP: %s", resp.Status)
	}
}

// TestDesktopConfigServed is the regression test for issue 6 items 16 and
// 17 with the real binary: a desktop client's JSON, given as a positional
// path after the flags, is served as it is, ${NAME} read from the
// gateway's environment.
func TestDesktopConfigServed(t *testing.T) {
	requireBin(t, "gateway")
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	file := filepath.Join(t.TempDir(), "claude_desktop_config.json")
	desktop := fmt.Sprintf(`{"mcpServers": {"Local Test": {"command": %q, "args": ["--name", "${UPSTREAM_NAME}"], "autoApprove": ["echo"]}}}`, bin("testupstream"))
	if err := os.WriteFile(file, []byte(desktop), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := startCmdEnv(t, []string{"UPSTREAM_NAME=from-env"}, "--listen", "127.0.0.1:0", file)
	m, err := cmd.waitFunc(ctx, listenAddr)
	if err != nil {
		t.Fatalf("gateway did not start: %v\n%s", err, cmd.Output())
	}
	gw := &gatewayProc{proc: cmd, Addr: m[1], URL: "http://" + m[1] + "/mcp"}
	if err := gw.waitReady(ctx); err != nil {
		t.Fatalf("not ready: %v\n%s", err, cmd.Output())
	}
	if !strings.Contains(cmd.Output(), "mcpServers.Local Test.autoApprove: ignored") {
		t.Errorf("no warning about autoApprove:\n%s", cmd.Output())
	}
	cs := connectClient(t, ctx, gw.URL)
	res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "local-test__echo", Arguments: map[string]any{"text": "desktop"}})
	if err != nil || toolText(res) != "desktop" {
		t.Errorf("local-test__echo = %v, %v", res, err)
	}
}

// startCmdEnv starts the gateway binary with args and extra environment.
func startCmdEnv(t *testing.T, env []string, args ...string) *proc {
	t.Helper()
	p := requireBin(t, "gateway")
	cmd := exec.Command(p, args...)
	cmd.Env = append(os.Environ(), env...)
	return startCmd(t, context.Background(), "gateway", cmd)
}

// TestPromptErrorPrefixOnce is the regression test for issue 6 item 18 with
// the upstream that showed it: server-everything (TypeScript SDK) sends
// "MCP error -32602: Invalid arguments ..." as its message, and a TypeScript
// agent adds the prefix again. Through the gateway the message carries no
// prefix, so agents read it once.
func TestPromptErrorPrefixOnce(t *testing.T) {
	requireNode(t)
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	gw := startGateway(t, "upstreams:\n  everything:"+everythingUpstream("ev")+"\n")
	cs := connectClient(t, ctx, gw.URL)
	_, err := cs.GetPrompt(ctx, &mcp.GetPromptParams{Name: "ev__args-prompt", Arguments: map[string]string{}})
	var je *jsonrpc.Error
	if !errors.As(err, &je) {
		t.Fatalf("prompts/get without its required argument = %v, want a JSON-RPC error", err)
	}
	if je.Code != -32602 || strings.HasPrefix(je.Message, "MCP error") || !strings.Contains(je.Message, "Invalid arguments for prompt args-prompt") {
		t.Errorf("prompts/get error = %d %q; want -32602 and the upstream's message without its \"MCP error -32602: \" prefix", je.Code, je.Message)
	}
}
