package gateway

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/modelcontextprotocol/go-sdk/mcp"
	"github.com/rs/zerolog"

	"github.com/credgate/credgate/authmap"
)

// bigServer is an MCP server whose "big" tool answers with as many bytes of
// text as asked, and whose "slow" tool holds its call open until release is
// closed, closing started once it runs.
func bigServer(started chan<- struct{}, release <-chan struct{}) *mcp.Server {
	s := mcp.NewServer(&mcp.Implementation{Name: "big", Version: "1"}, nil)
	schema := json.RawMessage(`{"type":"object","properties":{"size":{"type":"integer"}}}`)
	s.AddTool(&mcp.Tool{Name: "big", InputSchema: schema}, func(ctx context.Context, req *mcp.CallToolRequest) (*mcp.CallToolResult, error) {
		var args struct{ Size int }
		_ = json.Unmarshal(req.Params.Arguments, &args)
		return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: strings.Repeat("x", args.Size)}}}, nil
	})
	s.AddTool(&mcp.Tool{Name: "slow", InputSchema: schema}, func(ctx context.Context, req *mcp.CallToolRequest) (*mcp.CallToolResult, error) {
		close(started)
		select {
		case <-release:
			return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: "slow done"}}}, nil
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	})
	return s
}

// withContentLength buffers each POST answer and sends it with a
// Content-Length, as many servers do for JSON.
func withContentLength(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost {
			h.ServeHTTP(w, r)
			return
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, r)
		for k, v := range rec.Header() {
			w.Header()[k] = v
		}
		w.Header().Set("Content-Length", strconv.Itoa(rec.Body.Len()))
		w.WriteHeader(rec.Code)
		_, _ = w.Write(rec.Body.Bytes())
	})
}

// boundsUpstream is a stdio MCP server (the test binary, see TestMain) that
// handles calls concurrently: "big" answers with size bytes of text, its id
// first or (order "last") last as the TypeScript SDK writes it; "slow" sends
// a progress notification and waits for a "release" call; "pid" names the
// process, so a test can tell whether the child was restarted.
func boundsUpstream() {
	in := bufio.NewScanner(os.Stdin)
	in.Buffer(make([]byte, 1<<20), 1<<20)
	var mu sync.Mutex
	out := bufio.NewWriter(os.Stdout)
	send := func(line []byte) {
		mu.Lock()
		defer mu.Unlock()
		_, _ = out.Write(append(line, '\n'))
		_ = out.Flush()
	}
	release := make(chan struct{})
	var once sync.Once
	for in.Scan() {
		var req struct {
			ID     json.RawMessage `json:"id"`
			Method string          `json:"method"`
			Params struct {
				Name      string `json:"name"`
				Arguments struct {
					Size  int    `json:"size"`
					Order string `json:"order"`
				} `json:"arguments"`
				Meta struct {
					ProgressToken json.RawMessage `json:"progressToken"`
				} `json:"_meta"`
			} `json:"params"`
		}
		if json.Unmarshal(in.Bytes(), &req) != nil || req.ID == nil {
			continue
		}
		reply := func(result any) {
			b, _ := json.Marshal(map[string]any{"jsonrpc": "2.0", "id": req.ID, "result": result})
			send(b)
		}
		textResult := func(s string) any {
			return map[string]any{"content": []any{map[string]any{"type": "text", "text": s}}}
		}
		switch req.Method {
		case "initialize":
			reply(map[string]any{"protocolVersion": "2025-11-25", "capabilities": map[string]any{"tools": map[string]any{}},
				"serverInfo": map[string]any{"name": "bounds", "version": "1"}})
		case "tools/list":
			var tools []any
			for _, n := range []string{"big", "slow", "release", "pid"} {
				tools = append(tools, map[string]any{"name": n, "inputSchema": map[string]any{"type": "object"}})
			}
			reply(map[string]any{"tools": tools})
		case "tools/call":
			switch req.Params.Name {
			case "big":
				result, _ := json.Marshal(textResult(strings.Repeat("x", req.Params.Arguments.Size)))
				if req.Params.Arguments.Order == "last" {
					send([]byte(`{"result":` + string(result) + `,"jsonrpc":"2.0","id":` + string(req.ID) + `}`))
				} else {
					send([]byte(`{"jsonrpc":"2.0","id":` + string(req.ID) + `,"result":` + string(result) + `}`))
				}
			case "slow":
				id, token := req.ID, req.Params.Meta.ProgressToken
				go func() {
					send([]byte(`{"jsonrpc":"2.0","method":"notifications/progress","params":{"progressToken":` + string(token) + `,"progress":1}}`))
					<-release
					b, _ := json.Marshal(map[string]any{"jsonrpc": "2.0", "id": id, "result": textResult("slow done")})
					send(b)
				}()
			case "release":
				once.Do(func() { close(release) })
				reply(textResult("released"))
			case "pid":
				reply(textResult(strconv.Itoa(os.Getpid())))
			}
		case "ping":
			reply(map[string]any{})
		default:
			b, _ := json.Marshal(map[string]any{"jsonrpc": "2.0", "id": req.ID, "error": map[string]any{"code": -32601, "message": "method not found: " + req.Method}})
			send(b)
		}
	}
}

// TestResponseLimit is the regression test for issue 6 item 6: an upstream
// response over max_response_bytes (a JSON body with or without a
// Content-Length, an SSE event of a streamable-HTTP or a legacy SSE upstream,
// a stdio line with its id first or last) fails that call with a typed
// upstream_error naming the limit, while another agent's call in flight on
// the same shared session succeeds, the session survives, and a stdio child
// is not restarted.
func TestResponseLimit(t *testing.T) {
	t.Parallel()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	type upstreamUnderTest struct {
		config  string          // the upstream's config entry, without the limit
		started <-chan struct{} // closed when the slow call runs; nil: watch progress
		release func(ctx context.Context, cs *mcp.ClientSession)
	}
	httpUpstream := func(t *testing.T, transport string, handler func(*mcp.Server) http.Handler) upstreamUnderTest {
		started, release := make(chan struct{}), make(chan struct{})
		s := bigServer(started, release)
		hs := httptest.NewServer(handler(s))
		t.Cleanup(hs.Close)
		var once sync.Once
		return upstreamUnderTest{
			config:  fmt.Sprintf("transport: %s, url: %s", transport, hs.URL),
			started: started,
			release: func(context.Context, *mcp.ClientSession) { once.Do(func() { close(release) }) },
		}
	}
	stdioUpstream := func(t *testing.T) upstreamUnderTest {
		return upstreamUnderTest{
			config: fmt.Sprintf("command: %q, env: {%s: bounds}", self, rawUpstreamEnv),
			release: func(ctx context.Context, cs *mcp.ClientSession) {
				if _, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "big__release"}); err != nil {
					t.Errorf("release: %v", err)
				}
			},
		}
	}
	streamable := func(opts *mcp.StreamableHTTPOptions) func(*mcp.Server) http.Handler {
		return func(s *mcp.Server) http.Handler {
			return mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return s }, opts)
		}
	}
	for _, tc := range []struct {
		name  string
		up    func(t *testing.T) upstreamUnderTest
		order string // stdio: where the id is in the oversized line
	}{
		{name: "json body", up: func(t *testing.T) upstreamUnderTest {
			return httpUpstream(t, "streamable-http", streamable(&mcp.StreamableHTTPOptions{JSONResponse: true}))
		}},
		{name: "json body with content-length", up: func(t *testing.T) upstreamUnderTest {
			return httpUpstream(t, "streamable-http", func(s *mcp.Server) http.Handler {
				return withContentLength(streamable(&mcp.StreamableHTTPOptions{JSONResponse: true})(s))
			})
		}},
		{name: "sse event", up: func(t *testing.T) upstreamUnderTest {
			return httpUpstream(t, "streamable-http", streamable(nil))
		}},
		{name: "legacy sse event", up: func(t *testing.T) upstreamUnderTest {
			return httpUpstream(t, "sse", func(s *mcp.Server) http.Handler {
				return mcp.NewSSEHandler(func(*http.Request) *mcp.Server { return s }, nil)
			})
		}},
		{name: "stdio line, id first", up: stdioUpstream},
		{name: "stdio line, id last", up: stdioUpstream, order: "last"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
			defer cancel()
			up := tc.up(t)
			g, a := startGateway(t, ctx, fmt.Sprintf("upstreams:\n  big: {%s, max_response_bytes: 4096}\n", up.config))
			u := g.upstream("big")
			shared := u.session.Load()
			if shared == nil {
				t.Fatalf("upstream not connected: %+v", g.Health().Upstreams["big"])
			}
			pid := func() string {
				if up.started != nil {
					return "" // not a child process
				}
				res, err := a.CallTool(ctx, &mcp.CallToolParams{Name: "big__pid"})
				if err != nil || res.IsError {
					t.Fatalf("pid = %v, %v", res, err)
				}
				return text(res)
			}
			pidBefore := pid()

			// Another agent's call is in flight on the shared session.
			progressed := make(chan struct{})
			var progressOnce sync.Once
			b := agent(t, ctx, g, &mcp.ClientOptions{ProgressNotificationHandler: func(context.Context, *mcp.ProgressNotificationClientRequest) {
				progressOnce.Do(func() { close(progressed) })
			}})
			slowDone := make(chan error, 1)
			go func() {
				params := &mcp.CallToolParams{Name: "big__slow"}
				params.SetProgressToken("slow")
				res, err := b.CallTool(ctx, params)
				if err == nil && (res.IsError || text(res) != "slow done") {
					err = fmt.Errorf("result %q (isError %v)", text(res), res.IsError)
				}
				slowDone <- err
			}()
			started := up.started
			if started == nil {
				started = progressed
			}
			defer up.release(ctx, a) // on failure too, so that cleanup does not wait for it
			select {
			case <-started:
			case <-ctx.Done():
				t.Fatal("the slow call never reached the upstream")
			}

			res, err := a.CallTool(ctx, &mcp.CallToolParams{Name: "big__big", Arguments: map[string]any{"size": 100000, "order": tc.order}})
			if err != nil {
				t.Fatalf("oversized call: %v; want a typed failure result", err)
			}
			if !res.IsError {
				t.Fatalf("oversized call succeeded with %d bytes of text; want a typed failure", len(text(res)))
			}
			f := failureOf(t, res)
			want := authmap.Failure{Type: authmap.TypeUpstreamError, Upstream: "big",
				Detail: `upstream "big": response exceeded upstreams.big.max_response_bytes (4096 bytes)`}
			if diff := cmp.Diff(want, f); diff != "" {
				t.Errorf("failure mismatch (-want +got):\n%s", diff)
			}

			// A response under the limit still passes, on the same session.
			res, err = a.CallTool(ctx, &mcp.CallToolParams{Name: "big__big", Arguments: map[string]any{"size": 3000, "order": tc.order}})
			if err != nil || res.IsError || len(text(res)) != 3000 {
				t.Errorf("call under the limit = %v, %v; want 3000 bytes of text", res, err)
			}
			up.release(ctx, a)
			select {
			case err := <-slowDone:
				if err != nil {
					t.Errorf("the other agent's call in flight: %v; want it to succeed", err)
				}
			case <-ctx.Done():
				t.Fatal("the other agent's call never finished")
			}
			if u.session.Load() != shared {
				t.Error("the shared upstream session was replaced; want it to survive an oversized response")
			}
			if after := pid(); after != pidBefore {
				t.Errorf("child pid %s, then %s: the stdio child was restarted", pidBefore, after)
			}
		})
	}
}

// TestInspectMessage: the id of an oversized message is found in its head or
// its tail, never inside a string or a nested object, and requests and
// notifications are told from responses.
func TestInspectMessage(t *testing.T) {
	t.Parallel()
	huge := `"` + strings.Repeat("x", 10000) + `"`
	for _, tc := range []struct {
		name   string
		msg    string
		id     string
		method bool
	}{
		{name: "id first", msg: `{"jsonrpc":"2.0","id":7,"result":{"text":` + huge + `}}`, id: "7"},
		{name: "string id first", msg: `{"jsonrpc":"2.0","id":"a\"b","result":{"text":` + huge + `}}`, id: `"a\"b"`},
		{name: "id last", msg: `{"result":{"text":` + huge + `},"jsonrpc":"2.0","id":12}`, id: "12"},
		{name: "string id last", msg: `{"result":{"text":` + huge + `},"jsonrpc":"2.0","id":"r-1"}` + "\r\n", id: `"r-1"`},
		{name: "id after nested ids", msg: `{"jsonrpc":"2.0","result":{"id":1,"text":` + huge + `,"x":{"id":2}},"id":3}`, id: "3"},
		{name: "nested id last", msg: `{"jsonrpc":"2.0","id":4,"result":{"text":` + huge + `,"item":{"id":99}}}`, id: "4"},
		{name: "only a nested id", msg: `{"jsonrpc":"2.0","result":{"text":` + huge + `,"item":{"id":99}}}`},
		{name: "id in the middle", msg: `{"jsonrpc":"2.0","result":{"text":` + huge + `},"id":5,"x":1}`},
		{name: "quoted id in a string", msg: `{"jsonrpc":"2.0","result":{"text":` + huge[:100] + `\",\"id\":6}"}}`},
		{name: "notification", msg: `{"jsonrpc":"2.0","method":"notifications/message","params":{"data":` + huge + `}}`, method: true},
		{name: "request with its id last", msg: `{"method":"sampling/createMessage","params":{"x":` + huge + `},"jsonrpc":"2.0","id":0}`, id: "0", method: true},
		{name: "not JSON", msg: strings.Repeat("garbage ", 2000)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var o oversized
			for chunk := range slicesChunk([]byte(tc.msg), 1000) {
				o.add(chunk)
			}
			got := inspectMessage(o.head, o.tail)
			if string(got.id) != tc.id || got.method != tc.method {
				t.Errorf("inspect = id %s, method %v; want id %s, method %v", got.id, got.method, tc.id, tc.method)
			}
		})
	}
}

func slicesChunk(b []byte, n int) func(func([]byte) bool) {
	return func(yield func([]byte) bool) {
		for len(b) > 0 {
			k := min(n, len(b))
			if !yield(b[:k]) {
				return
			}
			b = b[k:]
		}
	}
}

// TestEventLimiter: SSE events under the limit pass through unchanged,
// however the stream is cut; an event over it becomes the answer to the call
// it names (or to the POST's call), or is dropped.
func TestEventLimiter(t *testing.T) {
	t.Parallel()
	big := strings.Repeat("y", 10000) // longer than the reader's buffer
	lim := newResponseLimit("up", 100, zerolog.Nop())
	answer := func(id string) string { return "data: " + string(lim.answer(json.RawMessage(id))) + "\n\n" }
	for _, tc := range []struct {
		name string
		in   string
		call string // the POST's request id, if any
		want string
	}{
		{name: "small events", in: "id: 1\ndata: {\"a\":1}\n\n: comment\n\nevent: message\ndata: {\"b\":\n data: 2}\r\n\r\n", want: "id: 1\ndata: {\"a\":1}\n\n: comment\n\nevent: message\ndata: {\"b\":\n data: 2}\r\n\r\n"},
		{name: "oversized response", in: "id: 1\ndata: {\"jsonrpc\":\"2.0\",\"id\":3,\"result\":\"" + big + "\"}\n\ndata: {\"next\":1}\n\n", want: answer("3") + "data: {\"next\":1}\n\n"},
		{name: "oversized, id last, split over data lines", in: "data: {\"result\":\"" + big + "\",\ndata: \"jsonrpc\":\"2.0\",\"id\":8}\r\n\r\n", want: answer("8")},
		{name: "oversized without an id answers the POST's call", in: "data: " + big + "\n\n", call: "5", want: answer("5")},
		{name: "oversized without an id on a GET stream is dropped", in: "data: " + big + "\n\ndata: {}\n\n", want: "data: {}\n\n"},
		{name: "oversized notification is dropped", in: "data: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/message\",\"params\":\"" + big + "\"}\n\n", call: "5", want: ""},
		{name: "stream ends inside an oversized event", in: "data: {\"jsonrpc\":\"2.0\",\"id\":3,\"result\":\"" + big, want: ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var call func() json.RawMessage
			if tc.call != "" {
				call = func() json.RawMessage { return json.RawMessage(tc.call) }
			}
			// A reader returning a few bytes at a time cuts the stream everywhere.
			r := newEventLimiter(io.NopCloser(&trickle{s: tc.in, n: 7}), lim, call)
			got, err := io.ReadAll(r)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.want, string(got)); diff != "" {
				t.Errorf("stream mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

// trickle reads s n bytes at a time.
type trickle struct {
	s string
	n int
}

func (t *trickle) Read(p []byte) (int, error) {
	if t.s == "" {
		return 0, io.EOF
	}
	k := copy(p[:min(len(p), t.n)], t.s)
	t.s = t.s[k:]
	return k, nil
}

// TestOverLimitLogsRedacted: the warnings about an upstream's answer over
// max_response_bytes, or one the SDK cannot read, show what the upstream
// chose (the message's id, the Content-Type) redacted: a hostile upstream
// put its credential there and the JSON log showed it.
func TestOverLimitLogsRedacted(t *testing.T) {
	t.Parallel()
	const secret = "QpR7vXk2Lm9TzW4nHs8bYc3d"
	var log syncBuffer
	lim := newResponseLimit("s", 64, zerolog.New(&log))
	lim.redact = func(s string, _ bool) string { return strings.ReplaceAll(s, secret, "[REDACTED]") }
	line := `{"jsonrpc":"2.0","id":"` + secret + `","result":{"content":[{"type":"text","text":"` + strings.Repeat("x", 200) + `"}]}}` + "\n"
	// The answer keeps the id (the SDK's client matches it to its own
	// requests, whose ids are the gateway's numbers: this one matches none).
	if _, err := io.ReadAll(newLineLimiter(strings.NewReader(line), lim)); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(log.String(), "over max_response_bytes") || !strings.Contains(log.String(), "[REDACTED]") {
		t.Errorf("log %q; want the over-limit warning with the id redacted", log.String())
	}
	resp := &http.Response{StatusCode: 200, Header: http.Header{"Content-Type": {"text/html; token=" + secret}}, Body: io.NopCloser(strings.NewReader("<html>"))}
	lim.badAnswer(resp, json.RawMessage(`7`), "with content type \"text/"+secret+"\"")
	b, _ := io.ReadAll(resp.Body)
	for what, s := range map[string]string{"log": log.String(), "answer to the HTTP call": string(b)} {
		if strings.Contains(s, secret) {
			t.Errorf("%s shows the secret: %s", what, s)
		}
	}
}

// TestLegacySSENoBadAnswers: on the legacy SSE transport, the answer to
// each POST is a 202 with no content type (the answers come on the event
// stream); the gateway counted and logged each one a bad answer.
func TestLegacySSENoBadAnswers(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	s := mcp.NewServer(&mcp.Implementation{Name: "legacy", Version: "1"}, nil)
	s.AddTool(&mcp.Tool{Name: "echo", InputSchema: map[string]any{"type": "object"}}, func(context.Context, *mcp.CallToolRequest) (*mcp.CallToolResult, error) {
		return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: "ok"}}}, nil
	})
	hs := httptest.NewServer(mcp.NewSSEHandler(func(*http.Request) *mcp.Server { return s }, nil))
	t.Cleanup(hs.Close)
	var log syncBuffer
	g, cs := startGatewayLogged(t, ctx, fmt.Sprintf("upstreams:\n  a: {url: %s, transport: sse}\n", hs.URL), &log)
	for range 3 {
		if res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "a__echo", Arguments: map[string]any{}}); err != nil || res.IsError {
			t.Fatalf("call: %v %v", res, err)
		}
	}
	if n, ok := sample(gather(t, g), "credgate_upstream_messages_dropped_total", map[string]string{"upstream": "a", "kind": "bad_answer"}); ok && n > 0 {
		t.Errorf("%v bad answers counted; want none", n)
	}
	if strings.Contains(log.String(), "content type") {
		t.Errorf("log warns of the POSTs' answers:\n%s", log.String())
	}
}
