package gateway

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// badAnswerMode makes the test binary a stdio server whose tool "bad" is
// answered with a message the JSON-RPC decoder refuses (an error code that
// is a string), "ctl" with a result holding a raw control character,
// "nover" with an answer without "jsonrpc", and whose tool "good" answers.
const badAnswerMode = "bad-answer"

func badAnswerUpstream() {
	serveRaw(func(out *bufio.Writer, req childRequest, err error) {
		if err != nil {
			return
		}
		switch req.Method {
		case "initialize":
			replyResult(out, req.ID, `{"protocolVersion":"2025-11-25","capabilities":{"tools":{}},"serverInfo":{"name":"bad","version":"1"}}`)
		case "tools/list":
			replyResult(out, req.ID, `{"tools":[{"name":"bad","inputSchema":{"type":"object"}},{"name":"good","inputSchema":{"type":"object"}},{"name":"ctl","inputSchema":{"type":"object"}},{"name":"nover","inputSchema":{"type":"object"}}]}`)
		case "tools/call":
			if strings.Contains(string(req.Params), `"bad"`) {
				fmt.Fprintf(out, `{"jsonrpc":"2.0","id":%s,"error":{"code":"E1","message":"broken"}}`+"\n", req.ID)
				return
			}
			if strings.Contains(string(req.Params), `"nover"`) {
				fmt.Fprintf(out, `{"id":%s,"result":{"content":[{"type":"text","text":"no version"}]}}`+"\n", req.ID)
				return
			}
			if strings.Contains(string(req.Params), `"ctl"`) {
				fmt.Fprintf(out, `{"jsonrpc":"2.0","id":%s,"result":{"content":[{"type":"text","text":"a`+"\x01"+`b"}]}}`+"\n", req.ID)
				return
			}
			replyResult(out, req.ID, `{"content":[{"type":"text","text":"good"}]}`)
		default:
			fmt.Fprintf(out, `{"jsonrpc":"2.0","id":%s,"error":{"code":-32601,"message":"no"}}`+"\n", req.ID)
		}
	})
}

// TestStdioUnreadableAnswerFailsItsCall: a stdio child's answer that the
// JSON-RPC decoder refuses fails its call at once, as an upstream_error,
// on both paths (the gateway's own call, and the SDK's for a call with a
// progress token); it waited out the call's timeout. The session goes on.
func TestStdioUnreadableAnswerFailsItsCall(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	_, cs := startGateway(t, ctx, fmt.Sprintf("upstreams:\n  s: {command: %q, env: {%s: %s}, timeout: 30s}\n", self, rawUpstreamEnv, badAnswerMode))
	for _, tc := range []struct {
		tool  string
		token any
	}{{"s__bad", nil}, {"s__bad", "p1"}, {"s__ctl", nil}, {"s__ctl", "p2"}, {"s__nover", nil}, {"s__nover", "p3"}} {
		token := tc.token
		params := &mcp.CallToolParams{Name: tc.tool, Arguments: map[string]any{}}
		if token != nil {
			params.SetProgressToken(token)
		}
		start := time.Now()
		res, err := cs.CallTool(ctx, params)
		if took := time.Since(start); took > 10*time.Second {
			t.Errorf("%s, progress token %v: the call took %s; want it failed at once", tc.tool, token, took)
		}
		if err != nil || !res.IsError || !strings.Contains(text(res), "upstream_error") || !strings.Contains(text(res), "not valid JSON-RPC") {
			t.Errorf("%s, progress token %v: %+v, %v; want an upstream_error naming the answer", tc.tool, token, res, err)
		}
		res, err = cs.CallTool(ctx, &mcp.CallToolParams{Name: "s__good", Arguments: map[string]any{}})
		if err != nil || res.IsError || text(res) != "good" {
			t.Errorf("after it, s__good = %+v, %v; want the session to go on", res, err)
		}
	}
}

// TestAnswerIDSkipsLogLines: a line is taken for an answer only if it has
// no member an answer lacks: a child's JSON log line naming a request's id
// and an error must not fail that call (found in review).
func TestAnswerIDSkipsLogLines(t *testing.T) {
	t.Parallel()
	for line, want := range map[string]string{
		`{"level":"error","id":3,"error":"db down","msg":"request failed"}`: "",
		`{"id":3,"result":"ok","time":"now"}`:                               "",
		`{"id":3,"method":"x","error":{}}`:                                  "",
		`{"id":3,"result":{"content":[]}}`:                                  "3",
		`{"jsonrpc":"2.0","id":"a","error":{"code":"E1","message":"m"}}`:    `"a"`,
		`{"jsonrpc":"1.0","id":7,"result":1}`:                               "7",
	} {
		if got := string(answerID([]byte(line))); got != want {
			t.Errorf("answerID(%s) = %q, want %q", line, got, want)
		}
	}
}
