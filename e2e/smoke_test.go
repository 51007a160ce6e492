package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// TestUpstreamDirect checks the test upstream's own tools and fault switches,
// so a gateway test failing later is not a fixture bug.
func TestUpstreamDirect(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	failFile := filepath.Join(t.TempDir(), "fail.json")
	url := startUpstreamHTTP(t, "--fail-file", failFile, "--tools", "3", "--name", "direct")
	cs := connectClient(t, ctx, url)

	if got := cs.InitializeResult().ServerInfo.Name; got != "direct" {
		t.Errorf("server name = %q; want %q", got, "direct")
	}
	var names []string
	for tool, err := range cs.Tools(ctx, nil) {
		if err != nil {
			t.Fatal(err)
		}
		names = append(names, tool.Name)
	}
	for _, want := range []string{"echo", "add", "slow", "provider_error", "whoami", "crash", "gen_0000", "gen_0002", "test_simple_text"} {
		if !slices.Contains(names, want) {
			t.Errorf("tool %q missing from %v", want, names)
		}
	}

	call := func(name string, args map[string]any) (*mcp.CallToolResult, error) {
		return cs.CallTool(ctx, &mcp.CallToolParams{Name: name, Arguments: args})
	}
	res, err := call("add", map[string]any{"a": 2, "b": 40})
	if err != nil || toolText(res) != "42" {
		t.Errorf("add(2, 40) = %v, %v; want 42", res, err)
	}

	// provider_error in each mode.
	_, err = call("provider_error", map[string]any{"mode": "jsonrpc", "message": "Authentication Failed: Bad credentials"})
	var rpcErr *jsonrpc.Error
	if !errors.As(err, &rpcErr) || rpcErr.Code != jsonrpc.CodeInternalError || !strings.Contains(rpcErr.Message, "Bad credentials") {
		t.Errorf("provider_error jsonrpc: err = %v; want JSON-RPC -32603 with the message", err)
	}
	for mode, want := range map[string]string{
		"iserror":        "Authentication Failed: Bad credentials",
		"iserror_github": "failed to list issues: GET https://api.github.com/repos/o/r/issues: 401 ",
		"iserror_http":   "HTTP 403 Forbidden\nnope",
	} {
		args := map[string]any{"mode": mode}
		if mode == "iserror_http" {
			args["status"], args["body"] = 403, "nope"
		}
		res, err := call("provider_error", args)
		if err != nil || !res.IsError || !strings.HasPrefix(toolText(res), want) {
			t.Errorf("provider_error %s = %v, %v; want isError text starting %q", mode, res, err, want)
		}
	}

	// whoami reports the Authorization header only as a hash prefix.
	res, err = call("whoami", nil)
	if err != nil {
		t.Fatal(err)
	}
	var who map[string]any
	if err := json.Unmarshal([]byte(toolText(res)), &who); err != nil || who["authorization"] != false {
		t.Errorf("whoami = %q (%v); want authorization false", toolText(res), err)
	}

	// --fail-file: every request fails while the file exists, mid-session.
	fail := `{"status":401,"headers":{"WWW-Authenticate":"Bearer error=\"invalid_token\""},"body":"denied"}`
	if err := os.WriteFile(failFile, []byte(fail), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := call("echo", map[string]any{"text": "x"}); err == nil || !strings.Contains(err.Error(), "Unauthorized") {
		t.Errorf("call with fail-file present: err = %v; want an HTTP 401 failure", err)
	}
	if err := os.Remove(failFile); err != nil {
		t.Fatal(err)
	}
	cs2 := connectClient(t, ctx, url)
	if res, err := cs2.CallTool(ctx, &mcp.CallToolParams{Name: "echo", Arguments: map[string]any{"text": "back"}}); err != nil || toolText(res) != "back" {
		t.Errorf("echo after removing fail-file = %v, %v; want %q", res, err, "back")
	}
}

// TestUpstreamCrash checks --exit-after-calls and the crash tool.
func TestUpstreamCrash(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	url, p := startUpstream(t, "--transport", "http", "--exit-after-calls", "1")
	cs := connectClientNoRetry(t, ctx, url)
	if _, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "echo", Arguments: map[string]any{"text": "1"}}); err != nil {
		t.Fatalf("first call: %v", err)
	}
	if _, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "echo", Arguments: map[string]any{"text": "2"}}); err == nil {
		t.Errorf("second call succeeded; want the upstream to die")
	}
	if err := p.wait(ctx); err == nil || !strings.Contains(err.Error(), "exit status 1") {
		t.Errorf("exit = %v; want exit status 1", err)
	}

	url, p = startUpstream(t, "--transport", "http")
	cs = connectClientNoRetry(t, ctx, url)
	if _, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "crash"}); err == nil {
		t.Errorf("crash call succeeded")
	}
	if err := p.wait(ctx); err == nil || !strings.Contains(err.Error(), "exit status 3") {
		t.Errorf("exit = %v; want exit status 3", err)
	}
}

// TestGatewaySmoke federates an HTTP and a stdio test upstream and the demo
// upstream, and calls through the gateway: the harness's gateway helpers work.
func TestGatewaySmoke(t *testing.T) {
	requireBin(t, "gateway")
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	url := startUpstreamHTTP(t, "--name", "web")
	cfg := fmt.Sprintf(`
upstreams:
  web:
    transport: streamable-http
    url: %s
  local:
    command: %s
    args: [--transport, stdio, --name, local]
  demo:
    command: %s
`, url, bin("testupstream"), bin("demo-upstream"))
	g := startGateway(t, cfg)

	h, err := g.waitHealth(ctx, func(h map[string]any) bool {
		for _, name := range []string{"web", "local", "demo"} {
			if u := upstreamHealth(h, name); u == nil || u["connected"] != true {
				return false
			}
		}
		return true
	})
	if err != nil {
		t.Fatalf("upstreams did not connect: %v", err)
	}
	t.Logf("health: %v", h)

	cs := connectClient(t, ctx, g.URL)
	var names []string
	for tool, err := range cs.Tools(ctx, nil) {
		if err != nil {
			t.Fatal(err)
		}
		names = append(names, tool.Name)
	}
	for _, want := range []string{"web__echo", "local__add", "demo__roll_dice"} {
		if !slices.Contains(names, want) {
			t.Errorf("tool %q missing from the gateway's catalog %v", want, names)
		}
	}
	res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "local__add", Arguments: map[string]any{"a": 2, "b": 40}})
	if err != nil || toolText(res) != "42" {
		t.Errorf("local__add(2, 40) = %v, %v; want 42", res, err)
	}
	if !regexp.MustCompile(`listening`).MatchString(g.Logs()) {
		t.Errorf("gateway logs lack the listening line")
	}
}

// TestUpstreamEras checks the sampling and elicitation fixtures on both
// protocol eras: a legacy session (server-to-client requests) and a
// 2026-07-28 stateless one (MRTR input requests), and the SSE transport.
func TestUpstreamEras(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	opts := &mcp.ClientOptions{
		ElicitationHandler: func(context.Context, *mcp.ElicitRequest) (*mcp.ElicitResult, error) {
			return &mcp.ElicitResult{Action: "accept", Content: map[string]any{"username": "ada", "email": "ada@example.com"}}, nil
		},
		CreateMessageHandler: func(context.Context, *mcp.CreateMessageRequest) (*mcp.CreateMessageResult, error) {
			return &mcp.CreateMessageResult{Role: "assistant", Model: "m", Content: &mcp.TextContent{Text: "sampled"}}, nil
		},
	}
	stateful := startUpstreamHTTP(t)
	stateless := startUpstreamHTTP(t, "--stateless", "--json")
	sseURL, _ := startUpstream(t, "--transport", "sse")
	for _, tc := range []struct {
		name, wantVersion string
		tr                mcp.Transport
	}{
		{"stateful", "2025-11-25", &mcp.StreamableClientTransport{Endpoint: stateful}},
		{"stateless", "2026-07-28", &mcp.StreamableClientTransport{Endpoint: stateless}},
		{"sse", "2025-11-25", &mcp.SSEClientTransport{Endpoint: sseURL}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cs := connectTransport(t, ctx, tc.tr, opts)
			if got := cs.InitializeResult().ProtocolVersion; got != tc.wantVersion {
				t.Errorf("protocol version = %q; want %q", got, tc.wantVersion)
			}
			res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "test_elicitation", Arguments: map[string]any{"message": "who?"}})
			if err != nil || !strings.Contains(toolText(res), `"username":"ada"`) {
				t.Errorf("test_elicitation = %v, %v; want the elicited content", res, err)
			}
			res, err = cs.CallTool(ctx, &mcp.CallToolParams{Name: "test_sampling", Arguments: map[string]any{"prompt": "hi"}})
			if err != nil || toolText(res) != "LLM response: sampled" {
				t.Errorf("test_sampling = %q, %v; want %q", toolText(res), err, "LLM response: sampled")
			}
		})
	}
}
