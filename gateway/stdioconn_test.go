package gateway

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/credgate/credgate/authmap"
	"io"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/google/jsonschema-go/jsonschema"
	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	"github.com/modelcontextprotocol/go-sdk/mcp"
	"github.com/rs/zerolog"
)

// echoUpstreamMode makes the test binary a stdio MCP server (go-sdk) whose
// echo tool answers as newTestUpstream's does, for the stdio benchmarks and
// stdioConn's tests. Its other tools: wait blocks until the call is
// cancelled and says so on stderr; die exits mid-call; log sends a log
// message before it answers; fail answers a JSON-RPC error.
const echoUpstreamMode = "echo"

func echoStdioUpstream() {
	srv := mcp.NewServer(&mcp.Implementation{Name: "a", Version: "1"}, nil)
	schema := json.RawMessage(`{"type":"object","properties":{"text":{"type":"string"}}}`)
	srv.AddTool(&mcp.Tool{Name: "echo", Description: "a echo", InputSchema: schema},
		func(ctx context.Context, req *mcp.CallToolRequest) (*mcp.CallToolResult, error) {
			var args struct{ Text string }
			_ = json.Unmarshal(req.Params.Arguments, &args)
			return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: "a:echo:" + args.Text}}}, nil
		})
	srv.AddTool(&mcp.Tool{Name: "wait", InputSchema: schema}, func(ctx context.Context, req *mcp.CallToolRequest) (*mcp.CallToolResult, error) {
		fmt.Fprintln(os.Stderr, "wait: started")
		<-ctx.Done()
		fmt.Fprintln(os.Stderr, "wait: cancelled")
		return nil, ctx.Err()
	})
	srv.AddTool(&mcp.Tool{Name: "elicit", InputSchema: schema}, func(ctx context.Context, req *mcp.CallToolRequest) (*mcp.CallToolResult, error) {
		// Asks the agent mid-call, as go-sdk servers do before 2026-07-28.
		res, err := req.Session.Elicit(ctx, &mcp.ElicitParams{Message: "name?", RequestedSchema: json.RawMessage(nameAgeForm)})
		if err != nil {
			return nil, err
		}
		return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: fmt.Sprintf("%s:%v", res.Action, res.Content["name"])}}}, nil
	})
	srv.AddTool(&mcp.Tool{Name: "askform", InputSchema: schema}, func(ctx context.Context, req *mcp.CallToolRequest) (*mcp.CallToolResult, error) {
		// Asks the agent the 2026-07-28 way, in the result, for a form
		// whose fields are not in alphabetical order.
		if r, ok := req.Params.InputResponses["q"].(*mcp.ElicitResult); ok {
			return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: fmt.Sprintf("%s:%v", r.Action, r.Content["zeta"])}}}, nil
		}
		return &mcp.CallToolResult{InputRequests: mcp.InputRequestMap{"q": &mcp.ElicitParams{Message: "form",
			RequestedSchema: json.RawMessage(`{"type":"object","properties":{"zeta":{"type":"string"},"alpha":{"type":"string"},"mid":{"type":"string"}}}`)}}}, nil
	})
	srv.AddTool(&mcp.Tool{Name: "die", InputSchema: schema}, func(ctx context.Context, req *mcp.CallToolRequest) (*mcp.CallToolResult, error) {
		os.Exit(3)
		return nil, nil
	})
	srv.AddTool(&mcp.Tool{Name: "log", InputSchema: schema}, func(ctx context.Context, req *mcp.CallToolRequest) (*mcp.CallToolResult, error) {
		_ = req.Session.Log(ctx, &mcp.LoggingMessageParams{Level: "info", Data: "working"})
		return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: "logged"}}}, nil
	})
	srv.AddTool(&mcp.Tool{Name: "fail", InputSchema: schema}, func(ctx context.Context, req *mcp.CallToolRequest) (*mcp.CallToolResult, error) {
		return nil, &jsonrpc.Error{Code: -32011, Message: "upstream says no"}
	})
	// ask needs input (2026-07-28, SEP-2322): a name, then answers with it.
	srv.AddTool(&mcp.Tool{Name: "ask", InputSchema: schema}, func(ctx context.Context, req *mcp.CallToolRequest) (*mcp.CallToolResult, error) {
		if r, ok := req.Params.InputResponses["q"].(*mcp.ElicitResult); ok {
			return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: fmt.Sprintf("%s %v", r.Action, r.Content["name"])}}}, nil
		}
		if v := req.ProtocolVersion(); v < "2026-07-28" {
			return nil, fmt.Errorf("the session is on %s, not 2026-07-28", v)
		}
		p := &mcp.ElicitParams{Message: "name?", RequestedSchema: &jsonschema.Schema{Type: "object", Properties: map[string]*jsonschema.Schema{"name": {Type: "string"}}}}
		return &mcp.CallToolResult{InputRequests: mcp.InputRequestMap{"q": p}}, nil
	})
	// login needs input whose schema requires a property (see
	// TestInputRoundAnswerMismatch).
	srv.AddTool(&mcp.Tool{Name: "login", InputSchema: schema}, func(ctx context.Context, req *mcp.CallToolRequest) (*mcp.CallToolResult, error) {
		if r, ok := req.Params.InputResponses["input"].(*mcp.ElicitResult); ok {
			fmt.Fprintln(os.Stderr, "login: second round")
			return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: fmt.Sprint("hello ", r.Content["username"])}}}, nil
		}
		p := &mcp.ElicitParams{Message: "who?", RequestedSchema: &jsonschema.Schema{Type: "object",
			Properties: map[string]*jsonschema.Schema{"username": {Type: "string"}}, Required: []string{"username"}}}
		return &mcp.CallToolResult{InputRequests: mcp.InputRequestMap{"input": p}}, nil
	})
	// test://askr is a resource that needs input (2026-07-28): a name.
	srv.AddResource(&mcp.Resource{URI: "test://askr", Name: "askr"}, func(_ context.Context, req *mcp.ReadResourceRequest) (*mcp.ReadResourceResult, error) {
		if r, ok := req.Params.InputResponses["q"].(*mcp.ElicitResult); ok {
			return &mcp.ReadResourceResult{Contents: []*mcp.ResourceContents{{URI: "test://askr", Text: fmt.Sprint("hello ", r.Content["name"])}}}, nil
		}
		p := &mcp.ElicitParams{Message: "name?", RequestedSchema: &jsonschema.Schema{Type: "object", Properties: map[string]*jsonschema.Schema{"name": {Type: "string"}}}}
		return &mcp.ReadResourceResult{InputRequests: mcp.InputRequestMap{"q": p}}, nil
	})
	// askp is a prompt that needs input (2026-07-28): a name.
	srv.AddPrompt(&mcp.Prompt{Name: "askp"}, func(_ context.Context, req *mcp.GetPromptRequest) (*mcp.GetPromptResult, error) {
		if r, ok := req.Params.InputResponses["q"].(*mcp.ElicitResult); ok {
			return &mcp.GetPromptResult{Messages: []*mcp.PromptMessage{{Role: "user", Content: &mcp.TextContent{Text: fmt.Sprint("hello ", r.Content["name"])}}}}, nil
		}
		p := &mcp.ElicitParams{Message: "name?", RequestedSchema: &jsonschema.Schema{Type: "object", Properties: map[string]*jsonschema.Schema{"name": {Type: "string"}}}}
		return &mcp.GetPromptResult{InputRequests: mcp.InputRequestMap{"q": p}}, nil
	})
	srv.AddPrompt(&mcp.Prompt{Name: "hello"}, func(context.Context, *mcp.GetPromptRequest) (*mcp.GetPromptResult, error) {
		return &mcp.GetPromptResult{Messages: []*mcp.PromptMessage{{Role: "user", Content: &mcp.TextContent{Text: "hello"}}}}, nil
	})
	srv.AddResource(&mcp.Resource{URI: "test://r", Name: "r"}, func(context.Context, *mcp.ReadResourceRequest) (*mcp.ReadResourceResult, error) {
		return &mcp.ReadResourceResult{Contents: []*mcp.ResourceContents{{URI: "test://r", Text: "r-text"}}}, nil
	})
	// sample needs a sampled message (2026-07-28, SEP-2322).
	srv.AddTool(&mcp.Tool{Name: "sample", InputSchema: schema}, func(ctx context.Context, req *mcp.CallToolRequest) (*mcp.CallToolResult, error) {
		if _, ok := req.Params.InputResponses["s"]; ok {
			return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: "sampled"}}}, nil
		}
		p := &mcp.CreateMessageParams{MaxTokens: 10, Messages: []*mcp.SamplingMessage{{Role: "user", Content: &mcp.TextContent{Text: "hi"}}}}
		return &mcp.CallToolResult{InputRequests: mcp.InputRequestMap{"s": p}}, nil
	})
	_ = srv.Run(context.Background(), &mcp.StdioTransport{})
}

// stdioGateway starts a gateway whose upstream a is the echo child and
// returns it with the connection of a's shared session.
func stdioGateway(t *testing.T, ctx context.Context) (*Server, *upstream, *stdioConn) {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	log := zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.WarnLevel)
	g := newTestGatewayLogged(t, ctx, fmt.Sprintf("upstreams:\n  a: {command: %q, env: {%s: %s}}\n", self, rawUpstreamEnv, echoUpstreamMode), log)
	u := g.upstream("a")
	cs := u.session.Load()
	if cs == nil {
		t.Fatalf("upstream a is down: %+v", g.Health().Upstreams["a"])
	}
	c := u.stdioConn(cs)
	if c == nil {
		t.Fatal("no stdio connection for the shared session")
	}
	return g, u, c
}

// TestStdioRawCall: credgate's own calls on a stdio child's connection get
// the raw result, a JSON-RPC error as *jsonrpc.Error, and the notifications
// the child sent before the answer reach the SDK before call returns; the
// SDK's calls work alongside.
func TestStdioRawCall(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	_, u, c := stdioGateway(t, ctx)

	res, err := c.call(ctx, "tools/call", json.RawMessage(`{"name":"echo","arguments":{"text":"raw"}}`))
	if err != nil {
		t.Fatal(err)
	}
	var got mcp.CallToolResult
	if err := json.Unmarshal(res, &got); err != nil || len(got.Content) != 1 || got.Content[0].(*mcp.TextContent).Text != "a:echo:raw" {
		t.Errorf("raw result %s (%v)", res, err)
	}

	_, err = c.call(ctx, "tools/call", json.RawMessage(`{"name":"fail"}`))
	var rpcErr *jsonrpc.Error
	if !errors.As(err, &rpcErr) || rpcErr.Code != -32011 || rpcErr.Message != "upstream says no" {
		t.Errorf("JSON-RPC error answer = %v, want *jsonrpc.Error -32011", err)
	}
	if _, err := c.call(ctx, "no/such\"method", nil); !errors.As(err, &rpcErr) || rpcErr.Code != jsonrpc.CodeMethodNotFound {
		t.Errorf("unknown method = %v, want method not found", err)
	}

	before := u.notes.read.Load()
	// The level travels in _meta on 2026-07-28 sessions (see passLogLevel).
	if _, err := c.call(ctx, "tools/call", json.RawMessage(`{"name":"log","_meta":{`+newRequestMeta+`,"`+mcp.MetaKeyLogLevel+`":"debug"}}`)); err != nil {
		t.Fatal(err)
	}
	if n := u.notes.read.Load(); n <= before {
		t.Errorf("the log message sent before the answer was not read before call returned (%d, was %d)", n, before)
	}

	// stdioCallTool answers as cs.CallTool does.
	cs := u.session.Load()
	params := func() *mcp.CallToolParams {
		return &mcp.CallToolParams{Name: "echo", Arguments: map[string]any{"text": "same"}, Meta: mcp.Meta{"dev.example/k": "v"}}
	}
	viaSDK, err1 := cs.CallTool(ctx, params())
	p := params()
	viaRaw, err2 := u.stdioCallTool(ctx, c, cs, p)
	if err1 != nil || err2 != nil || fmt.Sprint(viaSDK.Content[0]) != fmt.Sprint(viaRaw.Content[0]) || viaRaw.IsError {
		t.Errorf("stdioCallTool = %v, %v; cs.CallTool = %v, %v", viaRaw, err2, viaSDK, err1)
	}
	if len(p.Meta) != 1 {
		t.Errorf("stdioCallTool changed the caller's _meta: %v", p.Meta)
	}
	if _, err := u.stdioCallTool(ctx, c, cs, &mcp.CallToolParams{Name: "fail"}); !errors.As(err, &rpcErr) || rpcErr.Code != -32011 {
		t.Errorf("stdioCallTool JSON-RPC error = %v", err)
	}

	// The SDK's own calls share the connection.
	r, err := u.session.Load().CallTool(ctx, &mcp.CallToolParams{Name: "echo", Arguments: map[string]any{"text": "sdk"}})
	if err != nil || r.Content[0].(*mcp.TextContent).Text != "a:echo:sdk" {
		t.Errorf("SDK call beside raw ones = %v, %v", r, err)
	}
}

// TestStdioRawCallCancel: a call whose context ends tells the child
// (notifications/cancelled), which stops the tool.
func TestStdioRawCallCancel(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	_, u, c := stdioGateway(t, ctx)
	child := u.childOutput()
	callCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		_, err := c.call(callCtx, "tools/call", json.RawMessage(`{"name":"wait"}`))
		done <- err
	}()
	waitFor(t, ctx, func() bool { return strings.Contains(strings.Join(child.tail(), "\n"), "wait: started") })
	stop()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled call = %v, want context.Canceled", err)
	}
	waitFor(t, ctx, func() bool { return strings.Contains(strings.Join(child.tail(), "\n"), "wait: cancelled") })
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.pending) != 0 {
		t.Errorf("%d calls still pending", len(c.pending))
	}
}

// TestStdioRawCallChildDies: a child that exits mid-call fails the call with
// an error the classifier reads as the connection gone, and the connection
// leaves the upstream's map; a call on it after that fails at once.
func TestStdioRawCallChildDies(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	_, u, c := stdioGateway(t, ctx)
	cs := u.session.Load()
	_, err := c.call(ctx, "tools/call", json.RawMessage(`{"name":"die"}`))
	if err == nil || !(connectionGone(err) || u.streamEnded(err)) {
		t.Fatalf("call on a child that died = %v, want a connection loss", err)
	}
	waitFor(t, ctx, func() bool { return u.stdioConn(cs) == nil })
	if _, err := c.call(ctx, "tools/call", json.RawMessage(`{"name":"echo"}`)); err == nil || !(connectionGone(err) || u.streamEnded(err)) {
		t.Errorf("call on an ended connection = %v, want a connection loss", err)
	}
	// The upstream restarts the child, whose session has a connection.
	waitFor(t, ctx, func() bool { cs2 := u.session.Load(); return cs2 != nil && cs2 != cs && u.stdioConn(cs2) != nil })
}

// TestStdioRawCallAfterClose: a closed connection refuses calls with
// mcp.ErrConnectionClosed.
func TestStdioRawCallAfterClose(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	_, _, c := stdioGateway(t, ctx)
	_ = c.Close()
	if _, err := c.call(ctx, "tools/call", json.RawMessage(`{"name":"echo"}`)); !connectionGone(err) && !errors.Is(err, io.EOF) {
		t.Errorf("call after Close = %v, want a connection loss", err)
	}
}

// TestStdioConnFraming: what the child writes is read as the SDK's reader
// read it (blank lines skipped, a message spanning lines joined, a batch
// split, a last line without a newline kept), except that a line that is not
// JSON-RPC (a banner, a logger writing to stdout, two messages on one line)
// is skipped, as the TypeScript SDK's client skips it, where the Go SDK's
// ended the session. If such a line is the last the child wrote, the end of
// the stream names it.
func TestStdioConnFraming(t *testing.T) {
	t.Parallel()
	read := func(input string) ([]string, int64, error) {
		c := newStdioConn(strings.NewReader(input), nopWriteCloser{}, newResponseLimit("a", 1<<20, zerolog.Nop()))
		var got []string
		for {
			m, err := c.Read(t.Context())
			if err != nil {
				return got, c.strays.Load(), err
			}
			switch m := m.(type) {
			case *jsonrpc.Request:
				got = append(got, m.Method)
			case *jsonrpc.Response:
				got = append(got, fmt.Sprint(m.ID.Raw()))
			}
		}
	}
	for _, tc := range []struct {
		name, input string
		want        []string
		strays      int64
		wantErr     string // "" for a clean end (io.EOF); else in the error
	}{
		{"lines", `{"jsonrpc":"2.0","method":"a"}` + "\n\n" + `{"jsonrpc":"2.0","id":1,"result":{}}` + "\r\n", []string{"a", "1"}, 0, ""},
		{"last line unterminated", `{"jsonrpc":"2.0","method":"a"}` + "\n" + `{"jsonrpc":"2.0","method":"b"}`, []string{"a", "b"}, 0, ""},
		{"pretty", "{\n  \"jsonrpc\": \"2.0\",\n  \"method\": \"a\"\n}\n" + `{"jsonrpc":"2.0","method":"b"}` + "\n", []string{"a", "b"}, 0, ""},
		{"batch", `[{"jsonrpc":"2.0","method":"a"},{"jsonrpc":"2.0","id":"x","result":{}}]` + "\n", []string{"a", "x"}, 0, ""},
		{"braces in strings", `{"jsonrpc":"2.0","method":"a","params":{"s":"}{\"]"}}` + "\n", []string{"a"}, 0, ""},
		{"banner and loggers skipped", "Starting server v1 on stdio\n" + `{"jsonrpc":"2.0","method":"a"}` + "\n[INFO] ready\n" + `{"level":"info","msg":"listening"}` + "\n{oops}\n[]\n" + `{"jsonrpc":"2.0","id":1,"result":{}}` + "\n", []string{"a", "1"}, 5, ""},
		{"trailing data skipped", `{"jsonrpc":"2.0","method":"a"} {"jsonrpc":"2.0","method":"b"}` + "\n" + `{"jsonrpc":"2.0","method":"c"}` + "\n", []string{"c"}, 1, ""},
		{"garbage, then the end", `{"jsonrpc":"2.0","method":"a"}` + "\nError: GITHUB_TOKEN is not set\n", []string{"a"}, 1, `(last line on stdout that was not JSON-RPC: "Error: GITHUB_TOKEN is not set")`},
		{"cut off", `{"jsonrpc":"2.0","method":"a"`, nil, 0, "unexpected EOF"},
	} {
		got, strays, err := read(tc.input)
		if fmt.Sprint(got) != fmt.Sprint(tc.want) || strays != tc.strays {
			t.Errorf("%s: read %v with %d lines skipped; want %v with %d", tc.name, got, strays, tc.want, tc.strays)
		}
		switch {
		case tc.wantErr == "" && err != io.EOF:
			t.Errorf("%s: ended with %v, want io.EOF", tc.name, err)
		case tc.wantErr != "" && (err == io.EOF || !strings.Contains(err.Error(), tc.wantErr)):
			t.Errorf("%s: ended with %v, want an error with %q", tc.name, err, tc.wantErr)
		}
	}
}

// TestStdioStrayLineRedacted: a line that is not JSON-RPC is shown (logged,
// and quoted when the session ends) redacted and cut, a secret split by the
// cut to what is kept included (found in review: a 2.9 KB secret printed
// twice on a line), valid UTF-8; lines are redacted only when shown (found
// in review: every stray line was redacted, ~7 us each on the goroutine
// that reads every answer, before the log's rate dropped it).
func TestStdioStrayLineRedacted(t *testing.T) {
	t.Parallel()
	const secret = "sk_live_strayline0123456789abcdef"
	long := strings.Repeat("correct horse battery staple ", 100)
	red := authmap.NewRedactor([]string{secret, long})
	var shown []string
	lim := newResponseLimit("a", 1<<20, zerolog.Nop())
	lim.redact = func(s string, cut bool) string {
		if cut {
			return red.RedactCut(s)
		}
		return red.Redact(s)
	}
	lim.stray = func(st *strayLine) { shown = append(shown, st.shown(lim.redact)) }
	input := "using key " + secret + "\n" +
		strings.Repeat("x", 250) + secret + strings.Repeat("y", 10000) + "\n" +
		"bad \xff\xfe utf8 " + secret + "\n" +
		"config: " + long + " again: " + long + "\n"
	c := newStdioConn(strings.NewReader(input), nopWriteCloser{}, lim)
	_, err := c.Read(t.Context())
	if err == nil || strings.Contains(err.Error(), long[:20]) || !strings.Contains(err.Error(), "[REDACTED]") {
		t.Errorf("end of stream = %v; want the last line, redacted", err)
	}
	if len(shown) != 4 {
		t.Fatalf("logged %d lines, want 4: %q", len(shown), shown)
	}
	for _, s := range shown {
		if strings.Contains(s, secret[:6]) || strings.Contains(s, long[:20]) || len(s) > strayMax+len("…") || !utf8.ValidString(s) {
			t.Errorf("logged %q: want it redacted, valid UTF-8, at most %d bytes", s, strayMax)
		}
	}

	redactions := 0
	lim = newResponseLimit("a", 1<<20, zerolog.Nop())
	lim.redact = func(s string, _ bool) string { redactions++; return s }
	lim.stray = func(*strayLine) {} // a log whose rate keeps none of them
	c = newStdioConn(strings.NewReader(strings.Repeat("[DEBUG] a logger writing to stdout\n", 1000)+`{"jsonrpc":"2.0","id":1,"result":{}}`+"\n"), nopWriteCloser{}, lim)
	if _, err := c.Read(t.Context()); err != nil || redactions != 0 {
		t.Errorf("read %v with %d redactions of lines not shown; want none", err, redactions)
	}
}

// TestStdioStrayLineBeforeMessage: a line that is not JSON-RPC but begins
// like a JSON value ("{", a logger's line cut short) does not take the whole
// message on the next line with it (found in review: both were skipped as
// one stray, and the call waited for its timeout).
func TestStdioStrayLineBeforeMessage(t *testing.T) {
	t.Parallel()
	for _, stray := range []string{"{", "[", `{"level":"info","msg":"cut`, "{\n  \"partial\": 1,"} {
		c := newStdioConn(strings.NewReader(stray+"\n"+`{"jsonrpc":"2.0","id":1,"result":{}}`+"\n"), nopWriteCloser{}, newResponseLimit("a", 1<<20, zerolog.Nop()))
		var ids []string
		var err error
		for err == nil {
			var m jsonrpc.Message
			if m, err = c.Read(t.Context()); err == nil {
				if r, ok := m.(*jsonrpc.Response); ok {
					ids = append(ids, fmt.Sprint(r.ID.Raw()))
				}
			}
		}
		if fmt.Sprint(ids) != "[1]" || err != io.EOF {
			t.Errorf("after %q: read answers %v, ended %v; want the answer to 1, then io.EOF", stray, ids, err)
		}
	}
}

// newRequestMeta is what the SDK's client puts in every request's _meta on a
// 2026-07-28 session (SEP-2575), which a raw call must carry too.
const newRequestMeta = `"` + mcp.MetaKeyProtocolVersion + `":"2026-07-28","` + mcp.MetaKeyClientInfo + `":{"name":"credgate","version":"1"},"` + mcp.MetaKeyClientCapabilities + `":{}`

type nopWriteCloser struct{}

func (nopWriteCloser) Write(p []byte) (int, error) { return len(p), nil }
func (nopWriteCloser) Close() error                { return nil }

// BenchmarkCallStdioRaw is BenchmarkCallStdioUpstream with the call made by
// stdioCallTool (the gateway writes the request and decodes the answer
// once) in place of cs.CallTool.
func BenchmarkCallStdioRaw(b *testing.B) {
	ctx, g := benchStdioGateway(b)
	u := g.upstream("a")
	cs := u.session.Load()
	c := u.stdioConn(cs)
	args := map[string]any{"text": "hello"}
	reportProcessCPU(b)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := u.stdioCallTool(ctx, c, cs, &mcp.CallToolParams{Name: "echo", Arguments: args}); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkCallStdioRawBytes is BenchmarkCallStdioRaw with params already
// encoded and the result left undecoded: stdioConn.call alone.
func BenchmarkCallStdioRawBytes(b *testing.B) {
	ctx, g := benchStdioGateway(b)
	u := g.upstream("a")
	c := u.stdioConn(u.session.Load())
	params := json.RawMessage(`{"name":"echo","arguments":{"text":"hello"},"_meta":{` + newRequestMeta + `}}`)
	reportProcessCPU(b)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := c.call(ctx, "tools/call", params); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkStdioDecodeLarge measures reading one large message (a 256 KiB
// text result) from a child's output: the framing checks are to cost little
// beside the decoding.
func BenchmarkStdioDecodeLarge(b *testing.B) {
	text := strings.Repeat(`lorem \"ipsum\" dolor {sit} amet, `, 256<<10/32)
	line := []byte(`{"jsonrpc":"2.0","id":7,"result":{"content":[{"type":"text","text":"` + text + `"}]}}` + "\n")
	lim := newResponseLimit("a", 1<<30, zerolog.Nop())
	b.SetBytes(int64(len(line)))
	b.ReportAllocs()
	for b.Loop() {
		c := newStdioConn(bytes.NewReader(line), nopWriteCloser{}, lim)
		if _, err := c.Read(b.Context()); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkStdioCompleteValue(b *testing.B) {
	text := strings.Repeat(`lorem \"ipsum\" dolor {sit} amet, `, 256<<10/32)
	line := []byte(`{"jsonrpc":"2.0","id":7,"result":{"content":[{"type":"text","text":"` + text + `"}]}}`)
	b.SetBytes(int64(len(line)))
	for b.Loop() {
		if !completeValue(line) {
			b.Fatal("incomplete")
		}
	}
}

// TestStdioConnChildRequestsBounded: a child sending requests without end
// has at most maxChildRequests of them held unanswered; the rest are dropped
// as they are read, and each answer lets one more through. Found feeding the
// built gateway hostile upstreams: 1,000,000 sampling requests grew it to
// 1 GB.
func TestStdioConnChildRequestsBounded(t *testing.T) {
	t.Parallel()
	var in strings.Builder
	for i := range 3 * maxChildRequests {
		fmt.Fprintf(&in, `{"jsonrpc":"2.0","id":"s%d","method":"sampling/createMessage","params":{}}`+"\n", i)
	}
	in.WriteString(`{"jsonrpc":"2.0","method":"notifications/message","params":{"level":"info","data":"after"}}` + "\n")
	c := newStdioConn(strings.NewReader(in.String()), nopWriteCloser{}, newResponseLimit("a", 1<<20, zerolog.Nop()))
	var got []string
	for {
		m, err := c.Read(t.Context())
		if err != nil {
			break
		}
		switch m := m.(type) {
		case *jsonrpc.Request:
			got = append(got, fmt.Sprint(m.ID.Raw()))
			if len(got) == maxChildRequests {
				// One answered: one more request may be held.
				id, _ := jsonrpc.MakeID("s0")
				if err := c.Write(t.Context(), &jsonrpc.Response{ID: id, Result: json.RawMessage(`{}`)}); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
	// maxChildRequests, one more after the answer, and the notification.
	if len(got) != maxChildRequests+2 || got[len(got)-1] != "<nil>" {
		t.Errorf("the SDK was handed %d messages (last %q), want %d requests and the notification after them", len(got), got[len(got)-1], maxChildRequests+1)
	}
	if n := c.childDropped.Load(); n != 2*maxChildRequests-1 {
		t.Errorf("%d requests dropped, want %d", n, 2*maxChildRequests-1)
	}
}

// nameAgeForm is the form the echo upstream's elicit tool asks for, its
// fields not in alphabetical order.
const nameAgeForm = `{"type":"object","properties":{"name":{"type":"string"},"age":{"type":"integer"}}}`

// TestOlderStyleElicitation: a go-sdk stdio child whose tool asks the agent
// mid-call (Session.Elicit), which it refuses on the 2026-07-28 session the
// gateway chose for it, is switched to 2025-11-25 and the call sent again:
// the agent answers the elicitation, its form's fields in the child's
// order, and the call succeeds, as it does talking to the child directly.
// Every such call failed (found trying the gateway from outside); with
// session: per_agent the agent's own child went on refusing.
func TestOlderStyleElicitation(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ name, head, keys string }{
		{"shared", "", "session: shared, "},
		{"per_agent", "", "session: per_agent, "},
		// elicit on a per-tool credential's own child
		{"per_credential", "credentials:\n  tok: {source: {value: tok-0123456789}, inject: {env: TOKEN}}\n  etok: {source: {value: etok-0123456789}, inject: {env: TOKEN}}\n",
			"credential: tok, credentials: [{tools: [elicit], credential: etok}], "},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
			defer cancel()
			g := newTestGateway(t, ctx, tc.head+fmt.Sprintf("upstreams:\n  s: %s\n", strings.Replace(selfUpstream(t, echoUpstreamMode), "{", "{"+tc.keys, 1)))
			if v := g.upstream("s").current.Load().InitializeResult().ProtocolVersion; v != protocol20260728 {
				t.Fatalf("the child speaks %s; the gateway asks the newest", v)
			}
			hs := httptest.NewServer(g.Handler())
			t.Cleanup(hs.Close)
			cs, seen := teeAgent(t, ctx, hs.URL+"/mcp", func(context.Context, *mcp.ElicitRequest) (*mcp.ElicitResult, error) {
				return &mcp.ElicitResult{Action: "accept", Content: map[string]any{"name": "ada", "age": 36}}, nil
			})
			for i := range 2 {
				if got := callText(t, ctx, cs, "s__elicit", nil); got != "accept:ada" {
					t.Errorf("call %d: s__elicit answered %q; want the agent's answer", i, got)
				}
			}
			if got := seen.String(); !strings.Contains(got, `"requestedSchema":`+nameAgeForm) {
				t.Errorf("the agent's elicitation request does not carry the form as written:\n%s\nwant %s", got, nameAgeForm)
			}
			waitFor(t, ctx, func() bool {
				return g.upstream("s").current.Load().InitializeResult().ProtocolVersion == olderProtocol
			})
			if got := callText(t, ctx, cs, "s__echo", map[string]any{"text": "hi"}); got != "a:echo:hi" {
				t.Errorf("echo after the switch = %q", got)
			}
		})
	}
}

// TestInputRequestFormKeepsItsOrder: an elicitation a 2026-07-28 upstream
// asks for in its result (inputRequests) reaches the agent with its form's
// fields in the upstream's order, on the fast path and the SDK's; the
// SDK's decoding sorted them (found trying the gateway from outside).
func TestInputRequestFormKeepsItsOrder(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	const form = `{"type":"object","properties":{"zeta":{"type":"string"},"alpha":{"type":"string"},"mid":{"type":"string"}}}`
	g := newTestGateway(t, ctx, fmt.Sprintf("upstreams:\n  s: %s\n", selfUpstream(t, echoUpstreamMode)))
	hs := httptest.NewServer(g.Handler())
	t.Cleanup(hs.Close)
	for _, fast := range []bool{true, false} {
		cs, seen := teeAgent(t, ctx, hs.URL+"/mcp", func(context.Context, *mcp.ElicitRequest) (*mcp.ElicitResult, error) {
			return &mcp.ElicitResult{Action: "accept", Content: map[string]any{"zeta": "z", "alpha": "a", "mid": "m"}}, nil
		})
		params := &mcp.CallToolParams{Name: "s__askform", Arguments: map[string]any{}}
		if !fast {
			params.Meta = mcp.Meta{"progressToken": "p1"} // the SDK's path
		}
		res, err := cs.CallTool(ctx, params)
		if err != nil || len(res.Content) == 0 {
			t.Fatalf("fast %t: s__askform: %v %v", fast, res, err)
		}
		if got := res.Content[0].(*mcp.TextContent).Text; got != "accept:z" {
			t.Errorf("fast %t: s__askform answered %q", fast, got)
		}
		if got := seen.String(); !strings.Contains(got, `"requestedSchema":`+form) {
			t.Errorf("fast %t: the agent's elicitation request does not carry the form as written:\n%s\nwant %s", fast, got, form)
		}
	}
}
