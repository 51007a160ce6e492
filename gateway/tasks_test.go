package gateway

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// tasksTools is what the hand-written tasks upstreams list, in two pages:
// tools declaring task support the way 2025-11-25 servers do, which the
// go-sdk cannot produce (its mcp.Tool has no execution field).
var tasksTools = [][]map[string]any{
	{
		{"name": "bg", "inputSchema": map[string]any{"type": "object"}, "execution": map[string]any{"taskSupport": "optional"}},
		{"name": "plain", "inputSchema": map[string]any{"type": "object"}},
	},
	{
		{"name": "must", "inputSchema": map[string]any{"type": "object"}, "execution": map[string]any{"taskSupport": "required"}},
		{"name": "never", "inputSchema": map[string]any{"type": "object"}, "execution": map[string]any{"taskSupport": "forbidden"}},
	},
}

// tasksReply answers one request of a 2025-11-25 server that declares the
// tasks capability; ok is false for notifications.
func tasksReply(data []byte) (reply map[string]any, ok bool) {
	var req struct {
		ID     json.RawMessage `json:"id"`
		Method string          `json:"method"`
		Params struct {
			Cursor string `json:"cursor"`
			Name   string `json:"name"`
		} `json:"params"`
	}
	if json.Unmarshal(data, &req) != nil || req.ID == nil {
		return nil, false
	}
	reply = map[string]any{"jsonrpc": "2.0", "id": req.ID}
	switch req.Method {
	case "initialize":
		reply["result"] = map[string]any{"protocolVersion": "2025-11-25", "serverInfo": map[string]any{"name": "tasks", "version": "1"},
			"capabilities": map[string]any{"tools": map[string]any{}, "tasks": map[string]any{"requests": map[string]any{"tools": map[string]any{"call": map[string]any{}}}}}}
	case "tools/list":
		if req.Params.Cursor == "" {
			reply["result"] = map[string]any{"tools": tasksTools[0], "nextCursor": "page2"}
		} else {
			reply["result"] = map[string]any{"tools": tasksTools[1]}
		}
	case "tools/call":
		reply["result"] = map[string]any{"content": []any{map[string]any{"type": "text", "text": "ran " + req.Params.Name}}}
	case "ping":
		reply["result"] = map[string]any{}
	default:
		reply["error"] = map[string]any{"code": -32601, "message": "method not found: " + req.Method}
	}
	return reply, true
}

// tasksStdioUpstream serves tasksReply on stdin/stdout (the test binary run
// with CREDGATE_TEST_RAW_UPSTREAM=tasks).
func tasksStdioUpstream() {
	in := bufio.NewScanner(os.Stdin)
	in.Buffer(make([]byte, 1<<20), 1<<20)
	out := json.NewEncoder(os.Stdout)
	for in.Scan() {
		if reply, ok := tasksReply(in.Bytes()); ok {
			_ = out.Encode(reply)
		}
	}
}

// tasksHTTPUpstream serves tasksReply over streamable HTTP, answering each
// request with a JSON body, or with an event stream when sse is set.
func tasksHTTPUpstream(t *testing.T, sse bool) string {
	t.Helper()
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost {
			w.WriteHeader(http.StatusMethodNotAllowed)
			return
		}
		data, _ := io.ReadAll(r.Body)
		reply, ok := tasksReply(data)
		if !ok {
			w.WriteHeader(http.StatusAccepted)
			return
		}
		w.Header().Set("Mcp-Session-Id", "s1")
		body, _ := json.Marshal(reply)
		if sse {
			w.Header().Set("Content-Type", "text/event-stream")
			fmt.Fprintf(w, "event: message\r\ndata: %s\r\n\r\n", body)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(body)
	}))
	t.Cleanup(hs.Close)
	return hs.URL + "/mcp"
}

// tasksSSEUpstream serves tasksReply over the legacy SSE transport: answers
// come on the long-lived GET stream, not on the POSTs.
func tasksSSEUpstream(t *testing.T) string {
	t.Helper()
	replies := make(chan []byte, 16)
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.Method {
		case http.MethodGet:
			w.Header().Set("Content-Type", "text/event-stream")
			fmt.Fprint(w, "event: endpoint\ndata: /message\n\n")
			w.(http.Flusher).Flush()
			for {
				select {
				case body := <-replies:
					fmt.Fprintf(w, "event: message\ndata: %s\n\n", body)
					w.(http.Flusher).Flush()
				case <-r.Context().Done():
					return
				}
			}
		case http.MethodPost:
			data, _ := io.ReadAll(r.Body)
			w.WriteHeader(http.StatusAccepted)
			if reply, ok := tasksReply(data); ok {
				body, _ := json.Marshal(reply)
				replies <- body
			}
		}
	}))
	t.Cleanup(hs.Close)
	return hs.URL + "/sse"
}

// recordBodies keeps every response body an agent reads.
type recordBodies struct {
	base http.RoundTripper
	buf  *syncBuffer
}

func (r recordBodies) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := r.base.RoundTrip(req)
	if err == nil {
		resp.Body = struct {
			io.Reader
			io.Closer
		}{io.TeeReader(resp.Body, r.buf), resp.Body}
	}
	return resp, err
}

// TestTaskSupportKept is the regression test for issue 6 item 19 (tasks):
// tools that declare task support keep their execution field through the
// gateway, over stdio, JSON and event-stream answers, the legacy SSE
// transport, and across pages; what the
// gateway cannot forward of tasks is reported under problems; the tools
// still run, synchronously.
func TestTaskSupportKept(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	g, _ := startGateway(t, ctx, fmt.Sprintf(`
upstreams:
  s:
    command: %q
    env: {%s: tasks}
  j: {url: %s}
  e: {url: %s}
  l: {url: %s, transport: sse}
`, self, rawUpstreamEnv, tasksHTTPUpstream(t, false), tasksHTTPUpstream(t, true), tasksSSEUpstream(t)))

	// An agent that records the gateway's raw answers: the SDK's own client
	// would drop the field on reading it too.
	var raw syncBuffer
	hs := httptest.NewServer(g.Handler())
	t.Cleanup(hs.Close)
	cs, err := mcp.NewClient(&mcp.Implementation{Name: "agent", Version: "1"}, nil).Connect(ctx, &mcp.StreamableClientTransport{
		Endpoint:   hs.URL + "/mcp",
		HTTPClient: &http.Client{Transport: recordBodies{base: http.DefaultTransport, buf: &raw}},
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cs.Close() })
	if got := len(toolNames(t, ctx, cs)); got != 16 {
		t.Fatalf("gateway lists %d tools, want 16", got)
	}

	got := map[string]string{}
	for _, line := range strings.Split(raw.String(), "\n") {
		line = strings.TrimSpace(strings.TrimPrefix(line, "data:"))
		var msg struct {
			Result struct {
				Tools []struct {
					Name      string          `json:"name"`
					Execution json.RawMessage `json:"execution"`
				} `json:"tools"`
			} `json:"result"`
		}
		if json.Unmarshal([]byte(line), &msg) != nil {
			continue
		}
		for _, tool := range msg.Result.Tools {
			var b bytes.Buffer
			_ = json.Compact(&b, tool.Execution)
			got[tool.Name] = b.String()
		}
	}
	want := map[string]string{}
	for _, up := range []string{"s", "j", "e", "l"} {
		want[up+"__bg"] = `{"taskSupport":"optional"}`
		want[up+"__must"] = `{"taskSupport":"required"}`
		want[up+"__never"] = `{"taskSupport":"forbidden"}`
		want[up+"__plain"] = ""
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("execution fields in the gateway's tools/list mismatch (-want +got):\n%s", diff)
	}

	h := g.Health()
	for _, up := range []string{"s", "j", "e", "l"} {
		problems := map[string]string{}
		for _, p := range h.Upstreams[up].Problems {
			problems[p.Kind+":"+p.Name] = p.Reason
		}
		for key, words := range map[string]string{
			"capability:tasks": "tasks capability",
			"tool:bg":          "calls run synchronously",
			"tool:must":        "calls to it fail",
		} {
			if !strings.Contains(problems[key], words) {
				t.Errorf("health[%s] problem %s = %q, want it to say %q", up, key, problems[key], words)
			}
		}
		if len(problems) != 3 {
			t.Errorf("health[%s] problems = %v, want exactly the tasks capability, bg and must", up, problems)
		}
		res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: up + "__bg"})
		if err != nil || text(res) != "ran bg" {
			t.Errorf("call %s__bg = %v, %v; want it run synchronously", up, res, err)
		}
	}
}

// TestWatchSSESplitReads: an answer is read out of an event stream however
// the reads split its lines, after events read while nothing was watched.
func TestWatchSSESplitReads(t *testing.T) {
	t.Parallel()
	before := "event: message\ndata: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/message\"}\n\n: comment\r\n"
	answer := "event: message\r\ndata: {\"jsonrpc\":\"2.0\",\"id\":7,\"result\":{\"tools\":[{\"name\":\"bg\",\"execution\":{\"taskSupport\":\"optional\"}}]}}\r\n\r\n"
	for _, split := range []int{1, 3, 7, 64, 1 << 20} {
		var w wireFields
		// The answer comes after the request was sent; whatever came before
		// may be read whole or in parts.
		r := &watchSSE{ReadCloser: io.NopCloser(io.MultiReader(strings.NewReader(before), strings.NewReader(answer))), w: &w}
		buf := make([]byte, split)
		read := 0
		for {
			if read >= len(before)/2 && w.watching.Load() == 0 {
				w.sawRequest("7", "tools/list", "") // sent while the stream is mid-event
			}
			n, err := r.Read(buf)
			read += n
			if err != nil {
				break
			}
		}
		if got := string(w.execution("bg")); got != `{"taskSupport":"optional"}` {
			t.Errorf("reads of %d bytes: execution = %q, want the answer's", split, got)
		}
	}
}
