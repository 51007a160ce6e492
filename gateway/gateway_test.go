package gateway

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sort"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// testUpstream is a real MCP server over streamable HTTP.
type testUpstream struct {
	srv     *mcp.Server
	http    *httptest.Server
	calls   atomic.Int64
	status  atomic.Int64 // when non-zero, every HTTP request is answered with it
	fail    atomic.Pointer[httpFailure]
	handler atomic.Pointer[mcp.StreamableHTTPHandler]
}

// restart forgets every session, as a restarted server would: the next
// request on an old session gets 404.
func (u *testUpstream) restart() {
	u.handler.Store(mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return u.srv }, nil))
}

// httpFailure is an HTTP answer the test upstream gives instead of MCP; with
// status 0 it only adds its headers to the MCP answers.
type httpFailure struct {
	status int
	header map[string]string
	body   string
}

func newTestUpstream(t testing.TB, name string, tools ...string) *testUpstream {
	t.Helper()
	u := &testUpstream{srv: mcp.NewServer(&mcp.Implementation{Name: name, Version: "1"}, nil)}
	for _, tool := range tools {
		u.srv.AddTool(&mcp.Tool{Name: tool, Description: name + " " + tool, InputSchema: json.RawMessage(`{"type":"object","properties":{"text":{"type":"string"}}}`)},
			func(ctx context.Context, req *mcp.CallToolRequest) (*mcp.CallToolResult, error) {
				u.calls.Add(1)
				var args struct{ Text string }
				_ = json.Unmarshal(req.Params.Arguments, &args)
				if strings.HasPrefix(args.Text, "jsonrpc:") {
					return nil, &jsonrpc.Error{Code: -32603, Message: strings.TrimPrefix(args.Text, "jsonrpc:")}
				}
				if strings.HasPrefix(args.Text, "iserror:") {
					return &mcp.CallToolResult{IsError: true, Content: []mcp.Content{&mcp.TextContent{Text: strings.TrimPrefix(args.Text, "iserror:")}}}, nil
				}
				if args.Text == "structured" {
					return &mcp.CallToolResult{
						Content:           []mcp.Content{&mcp.TextContent{Text: `{"n":1}`}, &mcp.ImageContent{Data: []byte{0x89, 'P', 'N', 'G'}, MIMEType: "image/png"}},
						StructuredContent: map[string]any{"n": 1.0, "nested": map[string]any{"ok": true}},
						Meta:              mcp.Meta{"dev.example/trace": "abc"},
					}, nil
				}
				if strings.HasPrefix(args.Text, "text:") {
					return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: strings.TrimPrefix(args.Text, "text:")}}}, nil
				}
				switch args.Text {
				case "rpc-error":
					return nil, &jsonrpc.Error{Code: -32011, Message: "upstream says no", Data: json.RawMessage(`{"retryAfterMs":1500}`)}
				case "tool-error":
					return &mcp.CallToolResult{IsError: true, Content: []mcp.Content{&mcp.TextContent{Text: "bad input"}}}, nil
				}
				return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: name + ":" + tool + ":" + args.Text}}}, nil
			})
	}
	u.srv.AddPrompt(&mcp.Prompt{Name: "greet", Arguments: []*mcp.PromptArgument{{Name: "who"}}}, func(ctx context.Context, req *mcp.GetPromptRequest) (*mcp.GetPromptResult, error) {
		return &mcp.GetPromptResult{Messages: []*mcp.PromptMessage{{Role: "user", Content: &mcp.TextContent{Text: name + " hello " + req.Params.Arguments["who"]}}}}, nil
	})
	u.srv.AddResource(&mcp.Resource{URI: "mem://shared", Name: "shared", MIMEType: "text/plain"}, func(ctx context.Context, req *mcp.ReadResourceRequest) (*mcp.ReadResourceResult, error) {
		return &mcp.ReadResourceResult{Contents: []*mcp.ResourceContents{{URI: req.Params.URI, Text: "from " + name}}}, nil
	})
	u.handler.Store(mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return u.srv }, nil))
	u.http = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if f := u.fail.Load(); f != nil {
			for k, v := range f.header {
				w.Header().Set(k, v)
			}
			if f.status == 0 { // headers only: serve MCP as usual
				u.handler.Load().ServeHTTP(w, r)
				return
			}
			w.WriteHeader(f.status)
			_, _ = w.Write([]byte(f.body))
			return
		}
		if s := u.status.Load(); s != 0 {
			w.Header().Set("WWW-Authenticate", `Bearer error="invalid_token", error_description="The access token expired"`)
			http.Error(w, `{"error":"invalid_token"}`, int(s))
			return
		}
		u.handler.Load().ServeHTTP(w, r)
	}))
	t.Cleanup(u.http.Close)
	return u
}

func (u *testUpstream) url() string { return u.http.URL + "/mcp" }

func toolNames(t *testing.T, ctx context.Context, cs *mcp.ClientSession) []string {
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

func text(res *mcp.CallToolResult) string {
	var b strings.Builder
	for _, c := range res.Content {
		if tc, ok := c.(*mcp.TextContent); ok {
			b.WriteString(tc.Text)
		}
	}
	return b.String()
}

func TestFederation(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	a := newTestUpstream(t, "a", "echo", "hidden")
	b := newTestUpstream(t, "b", "echo", "other")
	_, cs := startGateway(t, ctx, fmt.Sprintf(`
upstreams:
  alpha:
    url: %s
    tools: {deny: [hidden]}
  beta:
    url: %s
    prefix: ""
`, a.url(), b.url()))

	if diff := cmp.Diff([]string{"alpha__echo", "echo", "other"}, toolNames(t, ctx, cs)); diff != "" {
		t.Errorf("tools mismatch (-want +got):\n%s", diff)
	}
	for tool, want := range map[string]string{"alpha__echo": "a:echo:hi", "echo": "b:echo:hi"} {
		res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: tool, Arguments: map[string]any{"text": "hi"}})
		if err != nil {
			t.Fatalf("call %s: %v", tool, err)
		}
		if got := text(res); got != want || res.IsError {
			t.Errorf("call %s = %q (isError %v), want %q", tool, got, res.IsError, want)
		}
	}

	// Upstream JSON-RPC errors pass through with code, message and data.
	_, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "echo", Arguments: map[string]any{"text": "rpc-error"}})
	var je *jsonrpc.Error
	if !errorsAs(err, &je) || je.Code != -32011 || string(je.Data) != `{"retryAfterMs":1500}` {
		t.Errorf("rpc error = %v, want code -32011 with data passed through", err)
	}

	// Results pass through untouched: structured content, images, _meta.
	res0, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "echo", Arguments: map[string]any{"text": "structured"}})
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(map[string]any{"n": 1.0, "nested": map[string]any{"ok": true}}, res0.StructuredContent); diff != "" {
		t.Errorf("structuredContent mismatch (-want +got):\n%s", diff)
	}
	if img, ok := res0.Content[1].(*mcp.ImageContent); !ok || string(img.Data) != "\x89PNG" || img.MIMEType != "image/png" {
		t.Errorf("image content = %#v", res0.Content[1])
	}
	if res0.Meta["dev.example/trace"] != "abc" || res0.IsError {
		t.Errorf("_meta = %v, isError %v", res0.Meta, res0.IsError)
	}

	// Tool errors stay results, with a typed object in _meta.
	res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "echo", Arguments: map[string]any{"text": "tool-error"}})
	if err != nil || !res.IsError || text(res) != "bad input" {
		t.Fatalf("tool error = %v, %v; want isError result with the upstream's text", res, err)
	}
	if m, _ := res.Meta[MetaKey].(map[string]any); m["type"] != "upstream_error" {
		t.Errorf("tool error _meta = %v, want type upstream_error", res.Meta)
	}

	// Prompts are prefixed like tools; resources keep their URIs, and the
	// second upstream offering one is served under an alias.
	pr, err := cs.GetPrompt(ctx, &mcp.GetPromptParams{Name: "alpha__greet", Arguments: map[string]string{"who": "bob"}})
	if err != nil {
		t.Fatalf("prompts/get: %v", err)
	}
	if got := pr.Messages[0].Content.(*mcp.TextContent).Text; got != "a hello bob" {
		t.Errorf("prompt text = %q, want %q", got, "a hello bob")
	}
	var uris []string
	for r, err := range cs.Resources(ctx, nil) {
		if err != nil {
			t.Fatal(err)
		}
		uris = append(uris, r.URI)
	}
	sort.Strings(uris)
	if diff := cmp.Diff([]string{"credgate://beta/mem:%2F%2Fshared", "mem://shared"}, uris); diff != "" {
		t.Errorf("resources mismatch (-want +got):\n%s", diff)
	}
	rr, err := cs.ReadResource(ctx, &mcp.ReadResourceParams{URI: "credgate://beta/mem:%2F%2Fshared"})
	if err != nil || rr.Contents[0].Text != "from b" {
		t.Errorf("read alias = %v, %v; want from b", rr, err)
	}
}

func TestUpstreamDownFailsFastAndRecovers(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	a := newTestUpstream(t, "a", "echo")
	b := newTestUpstream(t, "b", "echo")
	g, cs := startGateway(t, ctx, fmt.Sprintf("upstreams:\n  a: {url: %s}\n  b: {url: %s}\n", a.url(), b.url()))

	a.status.Store(http.StatusServiceUnavailable)
	res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "a__echo", Arguments: map[string]any{"text": "x"}})
	if err != nil || !res.IsError {
		t.Fatalf("call to failing upstream = %v, %v; want isError result", res, err)
	}
	m, _ := res.Meta[MetaKey].(map[string]any)
	if m["type"] == "" || m["type"] == nil || m["upstream"] != "a" {
		t.Errorf("failure _meta = %v, want a typed object naming upstream a", res.Meta)
	}
	res, err = cs.CallTool(ctx, &mcp.CallToolParams{Name: "b__echo", Arguments: map[string]any{"text": "x"}})
	if err != nil || res.IsError {
		t.Errorf("other upstream = %v, %v; want success", res, err)
	}
	a.status.Store(0)
	res, err = cs.CallTool(ctx, &mcp.CallToolParams{Name: "a__echo", Arguments: map[string]any{"text": "back"}})
	if err != nil || text(res) != "a:echo:back" {
		t.Errorf("after recovery = %v, %v", res, err)
	}
	if h := g.Health(); h.Upstreams["a"].Tools != 1 || h.Upstreams["b"].Status != StatusUp {
		t.Errorf("health = %+v", h)
	}
}

func TestUnreachableUpstreamDoesNotBlockOthers(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	b := newTestUpstream(t, "b", "echo")
	g, cs := startGateway(t, ctx, fmt.Sprintf(`
upstreams:
  gone: {url: "http://127.0.0.1:1/mcp"}
  crash: {command: /bin/sh, args: ["-c", "echo boom >&2; exit 3"]}
  b: {url: %s}
`, b.url()))
	if diff := cmp.Diff([]string{"b__echo"}, toolNames(t, ctx, cs)); diff != "" {
		t.Errorf("tools mismatch (-want +got):\n%s", diff)
	}
	h := g.Health()
	if h.Status != HealthDegraded {
		t.Errorf("status = %q, want degraded", h.Status)
	}
	for _, name := range []string{"gone", "crash"} {
		if uh := h.Upstreams[name]; uh.Connected || uh.LastError == "" {
			t.Errorf("health[%s] = %+v, want down with last_error", name, uh)
		}
	}
	if !strings.Contains(h.Upstreams["crash"].LastError, "boom") {
		t.Errorf("crash last_error = %q, want the child's stderr", h.Upstreams["crash"].LastError)
	}
	// Never up: nothing was lost.
	if f := h.Upstreams["gone"].LastFailure; f == nil || !strings.Contains(f.Detail, `upstream "gone" cannot be reached`) || strings.Contains(f.Detail, "lost") {
		t.Errorf("gone last_failure = %+v, want it cannot be reached, not a lost connection", f)
	}
}

func TestUpstreamRestartIsInvisible(t *testing.T) {
	t.Parallel()
	// A server that answers a session it does not know with 400 "No valid
	// session ID provided" (the TypeScript SDK's example servers,
	// server-everything) has restarted as one answering 404 has: the call
	// is resent on a new session. With 400, the first call after a
	// restart failed, typed upstream_error, not retryable.
	for _, tsStyle := range []bool{false, true} {
		t.Run(fmt.Sprintf("400 for an unknown session: %v", tsStyle), func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
			defer cancel()
			a := newTestUpstream(t, "a", "echo")
			if tsStyle {
				inner := a.http.Config.Handler
				a.http.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
					inner.ServeHTTP(&tsSessionWriter{ResponseWriter: w}, r)
				})
			}
			_, cs := startGateway(t, ctx, fmt.Sprintf("upstreams:\n  a: {url: %s}\n", a.url()))
			a.restart()
			res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "a__echo", Arguments: map[string]any{"text": "again"}})
			if err != nil || text(res) != "a:echo:again" {
				t.Errorf("call after the upstream lost its sessions = %v, %v; want it resent on a new session", res, err)
			}
			if n := a.calls.Load(); n != 1 {
				t.Errorf("upstream ran the call %d times, want 1", n)
			}
		})
	}
}

// tsSessionWriter answers as the TypeScript SDK's example servers do where
// the Go SDK answers 404 for an unknown session.
type tsSessionWriter struct {
	http.ResponseWriter
	swallow bool
}

func (w *tsSessionWriter) WriteHeader(code int) {
	if code != http.StatusNotFound {
		w.ResponseWriter.WriteHeader(code)
		return
	}
	w.swallow = true
	w.ResponseWriter.Header().Set("Content-Type", "application/json")
	w.ResponseWriter.WriteHeader(http.StatusBadRequest)
	_, _ = w.ResponseWriter.Write([]byte(`{"jsonrpc":"2.0","error":{"code":-32000,"message":"Bad Request: No valid session ID provided"},"id":null}`))
}

func (w *tsSessionWriter) Write(b []byte) (int, error) {
	if w.swallow {
		return len(b), nil
	}
	return w.ResponseWriter.Write(b)
}

func (w *tsSessionWriter) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok && !w.swallow {
		f.Flush()
	}
}

func TestStatelessDownstream(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	a := newTestUpstream(t, "a", "echo")
	_, cs := startGateway(t, ctx, fmt.Sprintf("stateless: true\nupstreams:\n  a: {url: %s}\n", a.url()))
	if cs.ID() != "" {
		t.Errorf("stateless gateway gave session id %q", cs.ID())
	}
	res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "a__echo", Arguments: map[string]any{"text": "any replica"}})
	if err != nil || text(res) != "a:echo:any replica" {
		t.Errorf("call through a stateless gateway = %v, %v", res, err)
	}
}

// TestSessionRefusalText: which 400 answers on a session are read as the
// session's loss (resent on a new one), and which are the server's own.
func TestSessionRefusalText(t *testing.T) {
	t.Parallel()
	for msg, want := range map[string]bool{
		"Bad Request: No valid session ID provided": true,
		"Bad Request: Server not initialized":       true,
		"Invalid or missing session ID":             true,
		"Session not found":                         true,
		"session abc123 has expired":                true,
		"Invalid params: session_name is required":  false,
		"the session's quota is used up":            false,
		"Bad Request: body is not JSON":             false,
	} {
		body := fmt.Sprintf(`{"jsonrpc":"2.0","error":{"code":-32000,"message":%q},"id":null}`, msg)
		if got := sessionRefusal([]byte(body)); got != want {
			t.Errorf("%q: read as a lost session %v, want %v", msg, got, want)
		}
	}
}
