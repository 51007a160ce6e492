package gateway

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"
	"testing"

	"github.com/credgate/credgate/gateway/state"
)

// rawUpstreamEnv makes the test binary act as a hand-written stdio MCP
// server, for upstream behaviour no SDK server produces (invalid schemas,
// garbage on stdout).
const rawUpstreamEnv = "CREDGATE_TEST_RAW_UPSTREAM"

func TestMain(m *testing.M) {
	switch os.Getenv(rawUpstreamEnv) {
	case "":
		state.QuietLibraryLogs(func(string) {}) // go-redis's reconnect notices, in the outage tests
		os.Exit(m.Run())
	case "bounds":
		boundsUpstream()
		os.Exit(0)
	case "garbage":
		fmt.Println("this is not JSON-RPC")
		fmt.Println(`{"jsonrpc": "2.0", "id": "nope"`)
		os.Exit(0)
	case "tasks":
		tasksStdioUpstream()
		os.Exit(0)
	case "envtoken":
		envTokenUpstream()
		os.Exit(0)
	case echoUpstreamMode:
		echoStdioUpstream()
		os.Exit(0)
	case reloadUpstreamMode:
		reloadUpstream()
		os.Exit(0)
	case raw2026Mode:
		raw2026Upstream()
		os.Exit(0)
	case stallUpstreamMode:
		stallUpstream()
		os.Exit(0)
	case crashUpstreamMode:
		crashUpstream()
		os.Exit(0)
	case chattyMode:
		chattyUpstream()
		os.Exit(0)
	case floodMode:
		floodUpstream()
		os.Exit(0)
	case linkerMode:
		linkerUpstream()
		os.Exit(0)
	case endlessListMode:
		endlessListUpstream(1000, false)
		os.Exit(0)
	case emptyPagesMode:
		endlessListUpstream(0, false)
		os.Exit(0)
	case loopCursorMode:
		endlessListUpstream(1, true)
		os.Exit(0)
	case levelFloodMode:
		levelFloodUpstream()
		os.Exit(0)
	case stormMode:
		stormUpstream()
		os.Exit(0)
	case badAnswerMode:
		badAnswerUpstream()
		os.Exit(0)
	case strictIgnoreMode, strictExitMode:
		strictUpstream(os.Getenv(rawUpstreamEnv) == strictExitMode)
		os.Exit(0)
	default:
		rawUpstream()
		os.Exit(0)
	}
}

// rawUpstream serves a 2025-11-25 MCP server whose tools include ones the
// gateway cannot expose.
func rawUpstream() {
	in := bufio.NewScanner(os.Stdin)
	in.Buffer(make([]byte, 1<<20), 1<<20)
	out := json.NewEncoder(os.Stdout)
	for in.Scan() {
		var req struct {
			ID     json.RawMessage `json:"id"`
			Method string          `json:"method"`
		}
		if json.Unmarshal(in.Bytes(), &req) != nil || req.ID == nil {
			continue
		}
		reply := map[string]any{"jsonrpc": "2.0", "id": req.ID}
		switch req.Method {
		case "initialize":
			reply["result"] = map[string]any{"protocolVersion": "2025-11-25", "capabilities": map[string]any{"tools": map[string]any{}},
				"serverInfo": map[string]any{"name": "raw", "version": "1"}}
		case "tools/list":
			reply["result"] = map[string]any{"tools": []any{
				map[string]any{"name": "good", "inputSchema": map[string]any{"type": "object", "$schema": "http://json-schema.org/draft-07/schema#",
					"definitions": map[string]any{"x": map[string]any{"type": "string"}}, "properties": map[string]any{"a": map[string]any{"$ref": "#/definitions/x"}}},
					"annotations": map[string]any{"readOnlyHint": true}, "_meta": map[string]any{"dev.example/k": "v"}, "title": "Good"},
				map[string]any{"name": "string_schema", "inputSchema": map[string]any{"type": "string"}},
				map[string]any{"name": "bad name!", "inputSchema": map[string]any{"type": "object"}},
				map[string]any{"name": strings.Repeat("x", 70), "inputSchema": map[string]any{"type": "object"}},
			}}
		case "tools/call":
			reply["result"] = map[string]any{"content": []any{map[string]any{"type": "text", "text": "raw ok"}}}
		case "ping":
			reply["result"] = map[string]any{}
		default:
			reply["error"] = map[string]any{"code": -32601, "message": "method not found: " + req.Method}
		}
		_ = out.Encode(reply)
	}
}

// childRequest is the head of a JSON-RPC message serveRaw reads.
type childRequest struct {
	ID     json.RawMessage `json:"id"`
	Method string          `json:"method"`
	Params json.RawMessage `json:"params"`
}

// serveRaw reads newline-delimited JSON-RPC on stdin until it closes and
// hands each request (a message with an id) to answer, with out flushed
// after each; a line that is not JSON goes to answer with its error.
// Notifications are dropped.
func serveRaw(answer func(out *bufio.Writer, req childRequest, err error)) {
	in := bufio.NewReaderSize(os.Stdin, 1<<20)
	out := bufio.NewWriterSize(os.Stdout, 1<<20)
	for {
		line, err := in.ReadBytes('\n')
		if err != nil {
			return
		}
		var req childRequest
		if err := json.Unmarshal(line, &req); err != nil {
			answer(out, req, err)
		} else if req.ID != nil {
			answer(out, req, nil)
		}
		_ = out.Flush()
	}
}

// replyResult writes the answer to request id with result (JSON).
func replyResult(out io.Writer, id json.RawMessage, result string) {
	fmt.Fprintf(out, `{"jsonrpc":"2.0","id":%s,"result":%s}`+"\n", id, result)
}

// replyNoMethod writes the "method not found" answer to a request.
func replyNoMethod(out io.Writer, req childRequest) {
	fmt.Fprintf(out, `{"jsonrpc":"2.0","id":%s,"error":{"code":-32601,"message":"no %s"}}`+"\n", req.ID, req.Method)
}
