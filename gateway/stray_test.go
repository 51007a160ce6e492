package gateway

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
	"github.com/rs/zerolog"
)

// chattyMode makes the test binary a raw stdio upstream (chattyUpstream)
// that writes lines that are not JSON-RPC on its stdout: a banner, and
// during each call strayPerCall lines of log chatter, one holding its
// API_KEY, before the answer.
const chattyMode = "chatty"

const strayPerCall = 2000

func chattyUpstream() {
	fmt.Println("Starting chatty MCP server v1.0 on stdio")
	key := os.Getenv("API_KEY")
	if n, _ := strconv.Atoi(os.Getenv("STDERR_LINES")); n > 0 {
		w := bufio.NewWriter(os.Stderr)
		for i := range n {
			fmt.Fprintf(w, "debug: stderr line %d\n", i)
		}
		fmt.Fprintf(w, "last stderr line, key %s\n", key)
		_ = w.Flush()
	}
	serveRaw(func(out *bufio.Writer, req childRequest, err error) {
		switch {
		case err != nil:
		case req.Method == "initialize":
			replyResult(out, req.ID, `{"protocolVersion":"2025-11-25","capabilities":{"tools":{}},"serverInfo":{"name":"chatty","version":"1"}}`)
		case req.Method == "tools/list":
			fmt.Fprintln(out, `{"level":"info","msg":"listing tools"}`)
			replyResult(out, req.ID, `{"tools":[{"name":"echo","inputSchema":{"type":"object"}}]}`)
		case req.Method == "tools/call":
			fmt.Fprintf(out, "[INFO] calling upstream API with key %s\n", key)
			for i := range strayPerCall {
				fmt.Fprintf(out, "[DEBUG] step %d\n", i)
			}
			replyResult(out, req.ID, fmt.Sprintf(`{"content":[{"type":"text","text":"pong %d"}]}`, os.Getpid()))
		case req.Method == "ping":
			replyResult(out, req.ID, `{}`)
		default:
			replyNoMethod(out, req)
		}
	})
}

// TestStdioStrayLinesSkipped: a stdio upstream that writes a banner and log
// chatter on stdout (lines that are not JSON-RPC) serves its calls on both
// paths, on one child: the lines are skipped, logged redacted at most
// keepRate a second (the rest counted), not the end of the session. The Go
// SDK's reader ended the session at the banner, so the upstream never came
// up (found trying it as a user would; Claude Desktop's TypeScript client
// skips such lines).
func TestStdioStrayLinesSkipped(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	const key = "sk_live_chattyKey0123456789abcdef"
	var logs syncBuffer
	for _, fast := range []bool{true, false} {
		g := newTestGatewayLogged(t, ctx, fmt.Sprintf("fast_path: %v\nupstreams:\n  c: %s\n", fast, selfUpstream(t, chattyMode, "API_KEY", key)), zerolog.New(&logs).Level(zerolog.InfoLevel))
		if h := g.Health().Upstreams["c"]; h.Status != StatusUp {
			t.Fatalf("fast_path %v: upstream = %+v, want up", fast, h)
		}
		cs := agent(t, ctx, g, nil)
		var first string
		for i := range 3 {
			res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "c__echo", Arguments: map[string]any{}})
			if err != nil || res.IsError || !strings.HasPrefix(text(res), "pong ") {
				t.Fatalf("fast_path %v: call %d answered %v, %v", fast, i, res, err)
			}
			if first == "" {
				first = text(res)
			} else if text(res) != first {
				t.Errorf("fast_path %v: call %d served by %q, the first by %q: want one child", fast, i, text(res), first)
			}
		}
		if g.upstream("c").flood.keep.dropped.Load() == 0 {
			t.Errorf("fast_path %v: no stray line counted as not logged", fast)
		}
		// Banner, the listing's line, 3 calls' lines: all counted for ops.
		const want = 2 + 3*(strayPerCall+1)
		if v, ok := sample(gather(t, g), "credgate_upstream_messages_dropped_total", map[string]string{"upstream": "c", "kind": "stray_line"}); !ok || v != want {
			t.Errorf("fast_path %v: credgate_upstream_messages_dropped_total{kind=stray_line} = %v (%v), want %d", fast, v, ok, want)
		}
	}
	out := logs.String()
	if strings.Contains(out, key) {
		t.Errorf("the API key reached the log:\n%s", out)
	}
	for _, want := range []string{`"line":"Starting chatty MCP server v1.0 on stdio"`, `"line":"[INFO] calling upstream API with key [REDACTED]"`} {
		if !strings.Contains(out, want) {
			t.Errorf("log lacks %s", want)
		}
	}
	// Two gateways, 2 x 3 x strayPerCall lines: at most a burst and the
	// rate over the test's time are logged.
	if n := strings.Count(out, "not JSON-RPC"); n > 2*(keepBurst+keepRate*60) {
		t.Errorf("%d stray lines logged; want them bounded", n)
	}
}

// TestStderrFloodBounded: a child that floods its stderr has at most
// stderrBurst lines (plus the rate over the test's time) written to the
// gateway's log, redacted, the rest counted, and it serves its calls. Every
// line was written to the gateway's log before.
func TestStderrFloodBounded(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	const key = "sk_live_stderrKey0123456789abcdef"
	const lines = 20000
	var logs syncBuffer
	g := newTestGatewayLogged(t, ctx, fmt.Sprintf("upstreams:\n  c: %s\n", selfUpstream(t, chattyMode, "API_KEY", key, "STDERR_LINES", strconv.Itoa(lines))), zerolog.New(&logs).Level(zerolog.InfoLevel))
	cs := agent(t, ctx, g, nil)
	if res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "c__echo", Arguments: map[string]any{}}); err != nil || res.IsError {
		t.Fatalf("call answered %v, %v", res, err)
	}
	// Stop the child and wait for its stderr's end: every line was read.
	child := g.upstream("c").childOutput()
	_ = g.Close()
	select {
	case <-child.done:
	case <-ctx.Done():
		t.Fatal("the child's stderr never ended")
	}
	out := logs.String()
	if strings.Contains(out, key) {
		t.Error("the key reached the log")
	}
	logged := strings.Count(out, `"stream":"stderr"`)
	if logged > stderrBurst+stderrRate*60 || logged == 0 {
		t.Errorf("%d of %d stderr lines logged; want some, bounded", logged, lines)
	}
	if v, _ := sample(gather(t, g), "credgate_upstream_messages_dropped_total", map[string]string{"upstream": "c", "kind": "stderr_line"}); int(v)+logged != lines+1 {
		t.Errorf("%v stderr lines counted as not logged and %d logged; want %d in all", v, logged, lines+1)
	}
}
