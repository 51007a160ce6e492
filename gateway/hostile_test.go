package gateway

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// hostileUpstream is a real MCP server, except that a tools/call of its
// tool "raw" is answered by the test with raw bytes on the connection: the
// function named by the call's "text" argument writes them.
type hostileUpstream struct {
	url string

	mu    sync.Mutex
	conns []net.Conn // hijacked, closed when the test ends
}

// rawAnswerFunc writes an answer to the tools/call with JSON-RPC id on c.
type rawAnswerFunc func(c net.Conn, br *bufio.Reader, id json.RawMessage)

func newHostileUpstream(t *testing.T, answers map[string]rawAnswerFunc) *hostileUpstream {
	t.Helper()
	s := mcp.NewServer(&mcp.Implementation{Name: "h", Version: "1"}, nil)
	s.AddTool(&mcp.Tool{Name: "raw", InputSchema: json.RawMessage(`{"type":"object"}`)}, func(ctx context.Context, req *mcp.CallToolRequest) (*mcp.CallToolResult, error) {
		return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: "ran"}}}, nil
	})
	s.AddTool(&mcp.Tool{Name: "echo", InputSchema: json.RawMessage(`{"type":"object"}`)}, func(ctx context.Context, req *mcp.CallToolRequest) (*mcp.CallToolResult, error) {
		return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: "echo"}}}, nil
	})
	sdk := mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return s }, nil)
	h := &hostileUpstream{}
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPost && r.URL.RawQuery != "redirected" {
			body, _ := io.ReadAll(r.Body)
			var m struct {
				ID     json.RawMessage
				Method string
				Params struct {
					Name      string
					Arguments struct{ Text string }
				}
			}
			_ = json.Unmarshal(body, &m)
			if f := answers[m.Params.Arguments.Text]; m.Method == "tools/call" && m.Params.Name == "raw" && f != nil {
				c, brw, err := w.(http.Hijacker).Hijack()
				if err != nil {
					t.Error(err)
					return
				}
				h.mu.Lock()
				h.conns = append(h.conns, c)
				h.mu.Unlock()
				f(c, brw.Reader, m.ID)
				return
			}
			r.Body = io.NopCloser(bytes.NewReader(body))
		}
		sdk.ServeHTTP(w, r)
	}))
	t.Cleanup(func() {
		hs.Close()
		h.mu.Lock()
		defer h.mu.Unlock()
		for _, c := range h.conns {
			_ = c.Close()
		}
	})
	h.url = hs.URL + "/mcp"
	return h
}

// hostileAgent is a raw agent of a gateway (fast_path as fast) whose
// upstream "a" is a hostileUpstream answering the call of a__raw with
// "x" by answer; opts are more of the upstream's settings (flow style).
func hostileAgent(t *testing.T, ctx context.Context, fast bool, answer rawAnswerFunc, opts string) *rawAgent {
	t.Helper()
	h := newHostileUpstream(t, map[string]rawAnswerFunc{"x": answer})
	g := newTestGateway(t, ctx, fmt.Sprintf("fast_path: %v\nupstreams:\n  a: {url: %s, timeout: 5s%s}\n", fast, h.url, opts))
	return newRawAgent(t, ctx, g)
}

// callRaw is the call of a__raw that the hostile upstream answers itself.
const callRaw = `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a__raw","arguments":{"text":"x"}}}`

// jsonAnswer is an HTTP/1.1 JSON answer to id with head's extra header lines.
func jsonAnswer(id json.RawMessage, head string) string {
	body := fmt.Sprintf(`{"jsonrpc":"2.0","id":%s,"result":{"content":[{"type":"text","text":"raw answer"}]}}`, id)
	return fmt.Sprintf("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n%sContent-Length: %d\r\n\r\n%s", head, len(body), body)
}

// failureOf returns the failure object of an agent's answer, or its result's text.
func outcomeOf(t *testing.T, resp *http.Response, body []byte) string {
	t.Helper()
	m := answer(t, resp, body)
	if res, ok := m["result"].(map[string]any); ok {
		if meta, ok := res["_meta"].(map[string]any); ok {
			if f, ok := meta[MetaKey]; ok {
				return "failure " + mustJSON(t, f)
			}
		}
		return "result " + mustJSON(t, res["content"])
	}
	return "error " + mustJSON(t, m["error"])
}

// serveHeld answers every further request on a hijacked connection with a
// JSON result "held" to its id, until the connection ends.
func serveHeld(c net.Conn, br *bufio.Reader) {
	for {
		req, err := http.ReadRequest(br)
		if err != nil {
			return
		}
		body, _ := io.ReadAll(req.Body)
		var m struct{ ID json.RawMessage }
		_ = json.Unmarshal(body, &m)
		if req.Method != http.MethodPost || len(m.ID) == 0 {
			_, _ = io.WriteString(c, "HTTP/1.1 202 Accepted\r\nContent-Length: 0\r\n\r\n")
			continue
		}
		b := fmt.Sprintf(`{"jsonrpc":"2.0","id":%s,"result":{"content":[{"type":"text","text":"held %s"}]}}`, m.ID, req.URL.RawQuery)
		if _, err := fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s", len(b), b); err != nil {
			return
		}
	}
}

// hostileCase is an upstream's unusual answer to a tools/call.
type hostileCase struct {
	name   string
	answer rawAnswerFunc
	// fast is the outcome (see outcomeKind) the fast path must give; ""
	// for the SDK path's.
	fast string
	// fresh: the answer's connection must not be reused (the next call
	// must not be answered "held").
	fresh bool
}

// outcomeKind is what an agent acts on in an outcome: a result's content,
// a failure's type, a JSON-RPC error's code.
func outcomeKind(t *testing.T, resp *http.Response, body []byte) string {
	t.Helper()
	m := answer(t, resp, body)
	if res, ok := m["result"].(map[string]any); ok {
		if meta, ok := res["_meta"].(map[string]any); ok {
			if f, ok := meta[MetaKey].(map[string]any); ok {
				return fmt.Sprintf("failure %v", f["type"])
			}
		}
		return "result " + mustJSON(t, res["content"])
	}
	if e, ok := m["error"].(map[string]any); ok {
		return fmt.Sprintf("error %v", e["code"])
	}
	return mustJSON(t, m)
}

// runHostile sends each case's call through a gateway with the fast path and
// one without, each on an upstream of its own, and checks that the fast
// path's outcome is the SDK path's (or the case's own), and that the next
// call on the fast path gets its own answer, never what the upstream sent
// for the case.
func runHostile(t *testing.T, cases []hostileCase) {
	t.Helper()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
			defer cancel()
			var outcome, next [2]string
			for i, fast := range []bool{true, false} {
				a := hostileAgent(t, ctx, fast, tc.answer, ", max_response_bytes: 4096")
				r, b := a.post(ctx, callRaw)
				outcome[i] = outcomeKind(t, r, b)
				r, b = a.post(ctx, `{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"a__echo","arguments":{}}}`)
				next[i] = outcomeOf(t, r, b)
			}
			want := tc.fast
			if want == "" {
				want = outcome[1]
			}
			if outcome[0] != want {
				t.Errorf("fast path: %s; want %s (SDK path: %s)", outcome[0], want, outcome[1])
			}
			if strings.Contains(next[0], "raw answer") || strings.Contains(next[0], "stale") {
				t.Errorf("the next call on the fast path got the upstream's answer to another: %s", next[0])
			}
			if tc.fresh && strings.Contains(next[0], "held") {
				t.Errorf("the next call on the fast path reused the answer's connection: %s", next[0])
			}
		})
	}
}

// TestFastPathInformationalAnswers: an upstream's 1xx answers (100
// Continue, 103 Early Hints) before its answer are skipped, as the
// Transport skips them. The fast path's own HTTP client took the 1xx for
// the answer, failed the call, and put the connection back with the real
// answer still to come: the next call on it could get that answer as its
// own.
func TestFastPathInformationalAnswers(t *testing.T) {
	t.Parallel()
	runHostile(t, []hostileCase{
		{name: "100 Continue", answer: func(c net.Conn, br *bufio.Reader, id json.RawMessage) {
			_, _ = io.WriteString(c, "HTTP/1.1 100 Continue\r\n\r\n"+jsonAnswer(id, ""))
			serveHeld(c, br)
		}},
		{name: "103 Early Hints", answer: func(c net.Conn, br *bufio.Reader, id json.RawMessage) {
			_, _ = io.WriteString(c, "HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n")
			_, _ = io.WriteString(c, "HTTP/1.1 103 Early Hints\r\nLink: </app.js>; rel=preload\r\n\r\n")
			_, _ = io.WriteString(c, jsonAnswer(id, ""))
			serveHeld(c, br)
		}},
	})
}

// staleAnswer is an answer to a request other than the one it comes for.
const staleAnswer = `{"jsonrpc":"2.0","id":"earlier","result":{"content":[{"type":"text","text":"stale answer"}]}}`

// TestFastPathAnswerForAnotherID: a JSON answer whose id is not the call's
// is not the call's answer. The fast path took any JSON answer as its own:
// an upstream that answered a request on a reused connection with an
// answer it owed an earlier one (a late answer, garbage after an answer)
// had it handed to another agent's call. The SDK's path drops it and waits
// for the call's timeout; the fast path fails the call at once.
func TestFastPathAnswerForAnotherID(t *testing.T) {
	t.Parallel()
	runHostile(t, []hostileCase{
		{name: "another id", fast: "failure upstream_error", answer: func(c net.Conn, br *bufio.Reader, id json.RawMessage) {
			_, _ = fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s", len(staleAnswer), staleAnswer)
			serveHeld(c, br)
		}},
		{name: "a stale answer to the next request", answer: func(c net.Conn, br *bufio.Reader, id json.RawMessage) {
			_, _ = io.WriteString(c, jsonAnswer(id, ""))
			// The next request on this connection gets an answer owed
			// to another: the garbage a broken upstream sends after an
			// answer, which comes once the next request was written.
			req, err := http.ReadRequest(br)
			if err != nil {
				return
			}
			_, _ = io.Copy(io.Discard, req.Body)
			_, _ = fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s", len(staleAnswer), staleAnswer)
			serveHeld(c, br)
		}},
	})
}

// TestFastPathRedirectsAndBrokenExchanges: the fast path sends its
// requests as the SDK's client does, through an http.Client: a redirect is
// followed (the fast path failed a 307 the SDK follows), and an exchange
// that breaks (an endless head, an answer that is not HTTP) fails as the
// connection's failure, upstream_unavailable, as on the SDK's path (the
// fast path said upstream_error).
func TestFastPathRedirectsAndBrokenExchanges(t *testing.T) {
	t.Parallel()
	redirect := func(status string) rawAnswerFunc {
		return func(c net.Conn, br *bufio.Reader, id json.RawMessage) {
			_, _ = fmt.Fprintf(c, "HTTP/1.1 %s\r\nLocation: /mcp?redirected\r\nContent-Length: 0\r\n\r\n", status)
			serveHeld(c, br)
		}
	}
	runHostile(t, []hostileCase{
		{name: "307", answer: redirect("307 Temporary Redirect")},
		{name: "308", answer: redirect("308 Permanent Redirect")},
		{name: "endless head", answer: func(c net.Conn, br *bufio.Reader, id json.RawMessage) {
			go func() { _, _ = io.Copy(io.Discard, br) }()
			n, _ := io.WriteString(c, "HTTP/1.1 200 OK\r\nX-Endless: ")
			chunk := strings.Repeat("a", 64<<10)
			for n < 32<<20 {
				m, err := io.WriteString(c, chunk)
				if err != nil {
					return
				}
				n += m
			}
		}},
		{name: "not HTTP", answer: func(c net.Conn, br *bufio.Reader, id json.RawMessage) {
			_, _ = io.WriteString(c, "hello\r\n\r\n")
			serveHeld(c, br)
		}},
	})
}

// TestFastPathGzipUnasked: an upstream that compresses its answer though
// the fast path's client did not ask (a proxy that always does) is read as
// on the SDK's path, whose Transport asks for gzip and decodes it; the fast
// path failed to decode the answer.
func TestFastPathGzipUnasked(t *testing.T) {
	t.Parallel()
	gzipped := func(ct, body string) string {
		var b bytes.Buffer
		zw := gzip.NewWriter(&b)
		_, _ = io.WriteString(zw, body)
		_ = zw.Close()
		return fmt.Sprintf("HTTP/1.1 200 OK\r\nContent-Type: %s\r\nContent-Encoding: gzip\r\nContent-Length: %d\r\n\r\n%s", ct, b.Len(), b.Bytes())
	}
	result := func(id json.RawMessage) string {
		return fmt.Sprintf(`{"jsonrpc":"2.0","id":%s,"result":{"content":[{"type":"text","text":"raw answer"}]}}`, id)
	}
	runHostile(t, []hostileCase{
		{name: "JSON", answer: func(c net.Conn, br *bufio.Reader, id json.RawMessage) {
			_, _ = io.WriteString(c, gzipped("application/json", result(id)))
			serveHeld(c, br)
		}},
		{name: "SSE", answer: func(c net.Conn, br *bufio.Reader, id json.RawMessage) {
			_, _ = io.WriteString(c, gzipped("text/event-stream", "event: message\ndata: "+result(id)+"\n\n"))
			serveHeld(c, br)
		}},
	})
}

// TestFastPathUnusualAnswersAsSDK pins what the fast path already did as
// the SDK's path does, for answers a review of the fast path's HTTP client
// checked: a connection closing after its answer is not reused; failed
// statuses classify alike; trailers, an answer stream for another id, an
// answer stream that never answers (the call's timeout), a 202 or 204.
// A body cut short is the one difference: the fast path says
// upstream_unavailable (the connection closed during the call, as README
// puts it), the SDK's client an upstream_error.
func TestFastPathUnusualAnswersAsSDK(t *testing.T) {
	t.Parallel()
	raw := func(head, ct, body string) rawAnswerFunc {
		return func(c net.Conn, br *bufio.Reader, id json.RawMessage) {
			b := strings.ReplaceAll(body, "ID", string(id))
			_, _ = fmt.Fprintf(c, "%s\r\nContent-Type: %s\r\nContent-Length: %d\r\n\r\n%s", head, ct, len(b), b)
			serveHeld(c, br)
		}
	}
	result := `{"jsonrpc":"2.0","id":ID,"result":{"content":[{"type":"text","text":"raw answer"}]}}`
	runHostile(t, []hostileCase{
		{name: "Connection: close", fresh: true, answer: raw("HTTP/1.1 200 OK\r\nConnection: close", "application/json", result)},
		{name: "HTTP/1.0", fresh: true, answer: raw("HTTP/1.0 200 OK", "application/json", result)},
		{name: "HTTP/1.0 without a length", fresh: true, answer: func(c net.Conn, br *bufio.Reader, id json.RawMessage) {
			_, _ = io.WriteString(c, "HTTP/1.0 200 OK\r\nContent-Type: application/json\r\n\r\n"+strings.ReplaceAll(result, "ID", string(id)))
			_ = c.Close()
		}},
		{name: "body cut short", fast: "failure upstream_unavailable", answer: func(c net.Conn, br *bufio.Reader, id json.RawMessage) {
			_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{\"jsonrpc\"")
			_ = c.Close()
		}},
		{name: "chunked with trailers", answer: func(c net.Conn, br *bufio.Reader, id json.RawMessage) {
			b := "event: message\ndata: " + strings.ReplaceAll(result, "ID", string(id)) + "\n\n"
			_, _ = fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\nTrailer: X-T\r\n\r\n%x\r\n%s\r\n0\r\nX-T: v\r\n\r\n", len(b), b)
			serveHeld(c, br)
		}},
		{name: "401 HTML", answer: raw("HTTP/1.1 401 Unauthorized", "text/html", "<html>Unauthorized</html>")},
		{name: "403 JSON-RPC", answer: raw("HTTP/1.1 403 Forbidden", "application/json", `{"jsonrpc":"2.0","id":ID,"error":{"code":-32001,"message":"forbidden here"}}`)},
		{name: "400 JSON-RPC", answer: raw("HTTP/1.1 400 Bad Request", "application/json", `{"jsonrpc":"2.0","id":ID,"error":{"code":-32600,"message":"bad"}}`)},
		{name: "404 HTML", answer: raw("HTTP/1.1 404 Not Found", "text/html", "<html>gone</html>")},
		{name: "500 HTML", answer: raw("HTTP/1.1 500 Internal Server Error", "text/html", "<html>oops</html>")},
		{name: "503 JSON-RPC", answer: raw("HTTP/1.1 503 Service Unavailable", "application/json", `{"jsonrpc":"2.0","id":ID,"error":{"code":-32603,"message":"down"}}`)},
		{name: "202", answer: func(c net.Conn, br *bufio.Reader, id json.RawMessage) {
			_, _ = io.WriteString(c, "HTTP/1.1 202 Accepted\r\nContent-Length: 0\r\n\r\n")
			serveHeld(c, br)
		}},
		{name: "204", answer: func(c net.Conn, br *bufio.Reader, id json.RawMessage) {
			_, _ = io.WriteString(c, "HTTP/1.1 204 No Content\r\n\r\n")
			serveHeld(c, br)
		}},
		{name: "SSE answer for another id", answer: raw("HTTP/1.1 200 OK", "text/event-stream", "data: "+staleAnswer+"\n\n")},
		{name: "SSE without an answer", answer: func(c net.Conn, br *bufio.Reader, id json.RawMessage) {
			_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n")
			for range 1000 {
				b := ": keep-alive\n\ndata: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/unknown\"}\n\n"
				if _, err := fmt.Fprintf(c, "%x\r\n%s\r\n", len(b), b); err != nil {
					return
				}
			}
			_, _ = io.Copy(io.Discard, br) // open, silent, until the gateway gives up
		}},
		{name: "closed after the request", answer: func(c net.Conn, br *bufio.Reader, id json.RawMessage) {
			_ = c.Close()
		}},
	})
}

// TestBadAnswerKeepsSession: a 2xx answer to a call that the SDK's client
// cannot read (another content type, a JSON body that is not a JSON-RPC
// message, an SSE event that is not one) fails that call as an
// upstream_error, on both paths, and the upstream's session goes on: the
// next call is served. The SDK's client ended the whole session on such an
// answer (an HTML page from a proxy in front of the server, say), and with
// it every call in flight on the upstream.
func TestBadAnswerKeepsSession(t *testing.T) {
	t.Parallel()
	raw := func(ct, body string) rawAnswerFunc {
		return func(c net.Conn, br *bufio.Reader, id json.RawMessage) {
			b := strings.ReplaceAll(body, "ID", string(id))
			_, _ = fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Type: %s\r\nContent-Length: %d\r\n\r\n%s", ct, len(b), b)
			serveHeld(c, br)
		}
	}
	for _, tc := range []struct {
		name   string
		answer rawAnswerFunc
	}{
		{"HTML", raw("text/html", "<html>Sign in</html>")},
		{"no content type", raw("", "ok")},
		{"JSON, not JSON-RPC", raw("application/json", `{"hello":1}`)},
		{"JSON cut short", raw("application/json", `{"jsonrpc":"2.0","id":ID,"result":`)},
		{"empty JSON", raw("application/json", ``)},
		{"SSE event not JSON", raw("text/event-stream", "data: not json\n\n")},
		{"SSE line without a colon", raw("text/event-stream", "garbage\n\n")},
		// From review: the framings of a body the HTTP client reads to
		// its end, and a stream the upstream holds open.
		{"JSON array", raw("application/json", `["not","json-rpc"]`)},
		{"202 to a call", func(c net.Conn, br *bufio.Reader, id json.RawMessage) {
			_, _ = io.WriteString(c, "HTTP/1.1 202 Accepted\r\nContent-Length: 0\r\n\r\n")
			serveHeld(c, br)
		}},
		{"empty chunked JSON", func(c net.Conn, br *bufio.Reader, id json.RawMessage) {
			_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n")
			serveHeld(c, br)
		}},
		{"JSON chunked", func(c net.Conn, br *bufio.Reader, id json.RawMessage) {
			b := `{"hello":1}`
			_, _ = fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n%x\r\n%s\r\n0\r\n\r\n", len(b), b)
			serveHeld(c, br)
		}},
		{"HTML over HTTP/1.0 without a length", func(c net.Conn, br *bufio.Reader, id json.RawMessage) {
			_, _ = io.WriteString(c, "HTTP/1.0 200 OK\r\nContent-Type: application/json\r\n\r\n<html>Sign in</html>")
			_ = c.Close()
		}},
		{"JSON gzipped", func(c net.Conn, br *bufio.Reader, id json.RawMessage) {
			var z bytes.Buffer
			zw := gzip.NewWriter(&z)
			_, _ = zw.Write([]byte(`{"hello":1}`))
			_ = zw.Close()
			_, _ = fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Encoding: gzip\r\nContent-Length: %d\r\n\r\n%s", z.Len(), z.Bytes())
			serveHeld(c, br)
		}},
		{"SSE event not JSON, stream held open", func(c net.Conn, br *bufio.Reader, id json.RawMessage) {
			ev := "data: not json\n\n"
			_, _ = fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n%x\r\n%s\r\n", len(ev), ev)
			_, _ = io.Copy(io.Discard, br) // open until the gateway lets go
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
			defer cancel()
			for _, fast := range []bool{true, false} {
				a := hostileAgent(t, ctx, fast, tc.answer, "")
				r, b := a.post(ctx, callRaw)
				if got := outcomeOf(t, r, b); !strings.Contains(got, `"type":"upstream_error"`) {
					t.Errorf("fast_path %v: the bad answer gave %s; want an upstream_error", fast, got)
				}
				r, b = a.post(ctx, `{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"a__echo","arguments":{}}}`)
				if got := outcomeOf(t, r, b); !strings.HasPrefix(got, "result") {
					t.Errorf("fast_path %v: the next call gave %s; want it served on the same session", fast, got)
				}
				if !fast {
					if v, _ := sample(gather(t, a.g), "credgate_upstream_messages_dropped_total", map[string]string{"upstream": "a", "kind": "bad_answer"}); v != 1 {
						t.Errorf("credgate_upstream_messages_dropped_total{kind=bad_answer} = %v, want 1", v)
					}
				}
			}
		})
	}
}

// TestDecodeErrorQuotesNoSecret: an answer that echoes the upstream's
// credential in a value of the wrong type (an API's own error body) fails
// the call without any piece of the credential in its detail, on both
// paths. JSON decoders quote the value cut to 32 bytes, which redaction no
// longer found whole: 16 characters of a token reached the agent (found
// trying the gateway from outside).
func TestDecodeErrorQuotesNoSecret(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	const secret = "tangerine-Walrus-Secret-42"
	for _, body := range []string{
		`{"error":"bad key Bearer ` + secret + `"}`,
		`{"jsonrpc":"2.0","id":ID,"result":{"content":"bad key Bearer ` + secret + `"}}`,
		`{"jsonrpc":"2.0","id":ID,"result":{"content":[{"type":"text","text":7}],"isError":"key Bearer ` + secret + `"}}`,
	} {
		for _, fast := range []bool{true, false} {
			a := hostileAgent(t, ctx, fast, func(c net.Conn, br *bufio.Reader, id json.RawMessage) {
				b := strings.ReplaceAll(body, "ID", string(id))
				_, _ = fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s", len(b), b)
				serveHeld(c, br)
			}, `, headers: {Authorization: "Bearer `+secret+`"}`)
			r, b := a.post(ctx, callRaw)
			got := outcomeOf(t, r, b)
			for i := 0; i+8 <= len(secret); i++ {
				if strings.Contains(got, secret[i:i+8]) {
					t.Errorf("fast_path %v, %.40s: the answer shows %q of the secret: %s", fast, body, secret[i:i+8], got)
					break
				}
			}
			if !strings.Contains(got, `"type":"upstream_error"`) {
				t.Errorf("fast_path %v, %.40s: answered %s, want an upstream_error", fast, body, got)
			}
		}
	}
}

// TestInputFreeNoAllocs: upstreamJSON is on every fast call's answer;
// inputFree(nil) allocated its two errors.As targets (found in review:
// +2 allocations per call).
func TestInputFreeNoAllocs(t *testing.T) {
	if n := testing.AllocsPerRun(100, func() { _ = inputFree(nil) }); n != 0 {
		t.Errorf("inputFree(nil) allocates %v times per call, want 0", n)
	}
}

// TestElidedRedactionKeepsWords: a tool error's ordinary text ending a
// phrase in "..." keeps its words although a known value begins with one of
// them (found in review: with "Authorization: token ghp_...", "the access
// token... try again" lost "token").
func TestElidedRedactionKeepsWords(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	up := newTestUpstream(t, "a", "echo")
	_, cs := startGateway(t, ctx, "upstreams:\n  a: {url: "+up.url()+", headers: {Authorization: \"token ghp_16C7e42F292c6912E7710c838347Ae178B4a\"}}\n")
	const msg = "Refreshing the access token... try again in a minute"
	res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "a__echo", Arguments: map[string]any{"text": "iserror:" + msg}})
	if err != nil {
		t.Fatal(err)
	}
	if got := text(res); got != msg {
		t.Errorf("tool error text = %q, want %q (it holds no secret)", got, msg)
	}
}
