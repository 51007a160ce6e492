package gateway

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/credgate/credgate/authmap"
	"github.com/credgate/credgate/routing"
	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// passSecret is the credential the pass-through tests' upstream is
// configured with, so that results are checked for it.
const passSecret = "ghp_0123456789abcdefSECRET0123"

// passSecretHeader configures passSecret on a hostileAgent's upstream.
const passSecretHeader = `, headers: {Authorization: "Bearer ` + passSecret + `"}`

// resultAnswer answers id on c with an HTTP/1.1 JSON body whose result is
// result, as written (whitespace and key order kept), then serves the
// connection's next requests.
func resultAnswer(result string) rawAnswerFunc {
	return func(c net.Conn, br *bufio.Reader, id json.RawMessage) {
		body := fmt.Sprintf(`{"jsonrpc":"2.0","id":%s,"result":%s}`, id, result)
		_, _ = fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
		serveHeld(c, br)
	}
}

// normalResult is an answer's result as an agent's SDK reads it, encoded
// again: what must be the same on both paths; of a failure, its type.
func normalResult(t *testing.T, resp *http.Response, body []byte) string {
	t.Helper()
	if kind := outcomeKind(t, resp, body); strings.HasPrefix(kind, "failure ") {
		return kind
	}
	m := answer(t, resp, body)
	raw, err := json.Marshal(m["result"])
	if err != nil || m["result"] == nil {
		return "no result: " + mustJSON(t, m)
	}
	var res mcp.CallToolResult
	if err := json.Unmarshal(raw, &res); err != nil {
		return "undecodable result: " + string(raw)
	}
	out, _ := json.Marshal(&res)
	return string(out)
}

// resultBytes is the result of a JSON answer as sent.
func resultBytes(t *testing.T, body []byte) string {
	t.Helper()
	var m struct{ Result json.RawMessage }
	if err := json.Unmarshal(body, &m); err != nil {
		t.Fatalf("answer %q: %v", body, err)
	}
	return string(m.Result)
}

// TestFastPathPassesResultsThrough checks the fast path's pass-through of
// plain results (passthrough.go): the agent reads the same result as on the
// SDK's path for every kind of result, a plain one reaches it byte for byte
// as the upstream wrote it, and a configured secret never does, however
// the upstream spells it.
func TestFastPathPassesResultsThrough(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name, result string
		same         bool // the fast path's result is the upstream's bytes
	}{
		{name: "plain", result: `{"content":[{"type":"text","text":"plain answer"}],"structuredContent":{"k":["v",1]}}`, same: true},
		{name: "key order and spaces kept", result: `{ "structuredContent" : {"b":1,"a":2}, "content" : [ { "text" : "x", "type" : "text" } ] }`, same: true},
		{name: "lines compacted", result: "{\n  \"content\": [\n    {\"type\": \"text\", \"text\": \"pretty\"}\n  ]\n}"},
		{name: "escapes", result: `{"content":[{"type":"text","text":"line\nnext \"quoted\" tab\t"}]}`, same: true},
		{name: "secret", result: `{"content":[{"type":"text","text":"token ` + passSecret + `"}]}`},
		{name: "secret spelled with \\u", result: `{"content":[{"type":"text","text":"token gh\u0070_0123456789abcdefSECRET0123"}]}`},
		{name: "slash escaped", result: `{"content":[{"type":"text","text":"a\/b"}]}`},
		{name: "secret in structured content", result: `{"content":[],"structuredContent":{"token":"` + passSecret + `"}}`},
		{name: "secret in a link", result: `{"content":[{"type":"resource_link","uri":"https://x.test/?key=` + passSecret + `","name":"` + passSecret + `","description":"see ` + passSecret + `"}]}`},
		{name: "secret in _meta", result: `{"_meta":{"tok":"` + passSecret + `"},"content":[{"type":"text","text":"x","_meta":{"t":"` + passSecret + `"}}]}`},
		{name: "secret in an embedded resource's uri", result: `{"content":[{"type":"resource","resource":{"uri":"file:///` + passSecret + `","text":"t"}}]}`},
		{name: "secret in a key", result: `{"content":[],"structuredContent":{"` + passSecret + `":{"nested":{"` + passSecret + `x":1}},"n":12345678901234567890}}`},
		{name: "image", result: `{"content":[{"type":"image","data":"aGVsbG8=","mimeType":"image/png"}]}`},
		{name: "unknown field", result: `{"content":[{"type":"text","text":"x"}],"extra":1}`},
		{name: "unknown content field", result: `{"content":[{"type":"text","text":"x","extra":1}]}`},
		{name: "annotations", result: `{"content":[{"type":"text","text":"x","annotations":{"priority":0.5}}]}`},
		{name: "meta", result: `{"_meta":{"k":"v"},"content":[{"type":"text","text":"x"}]}`},
		{name: "null structured content", result: `{"content":[{"type":"text","text":"x"}],"structuredContent":null}`},
		{name: "no content", result: `{"structuredContent":{"k":1}}`},
		{name: "null content", result: `{"content":null}`},
		{name: "text not a string", result: `{"content":[{"type":"text","text":5}]}`},
		{name: "case of a key", result: `{"Content":[{"type":"text","text":"x"}],"IsError":true}`},
		{name: "tool error", result: `{"content":[{"type":"text","text":"it broke"}],"isError":true}`},
		{name: "explicit isError false", result: `{"content":[{"type":"text","text":"x"}],"isError":false}`, same: true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
			defer cancel()
			var results [2]string
			for i, fast := range []bool{true, false} {
				a := hostileAgent(t, ctx, fast, resultAnswer(tc.result), passSecretHeader)
				r, b := a.post(ctx, callRaw)
				if bytes.Contains(b, []byte(passSecret)) {
					t.Errorf("fast_path %v: the secret reached the agent: %s", fast, b)
				}
				results[i] = normalResult(t, r, b)
				if fast && tc.same {
					if got := resultBytes(t, b); got != tc.result {
						t.Errorf("fast path result %s; want the upstream's bytes %s", got, tc.result)
					}
				}
			}
			if results[0] != results[1] {
				t.Errorf("fast path result %s; SDK path %s", results[0], results[1])
			}
		})
	}
}

// TestPassThroughChangedOnItsWay: a stand-in changed on its way to the
// agent (a route adds its _meta) is answered decoded, with the change.
func TestPassThroughChangedOnItsWay(t *testing.T) {
	t.Parallel()
	g := &Server{}
	g.redactor = authmap.NewRedactor([]string{passSecret})
	raw := []byte(`{"content":[{"type":"text","text":"from the backup"}],"structuredContent":{"k":1}}`)
	u := &upstream{cfg: &UpstreamConfig{}}
	res := g.passThrough(u, nil, raw)
	if res == nil {
		t.Fatal("a plain result was not passed through")
	}
	if b, _, err := passedBytes(res); err != nil || string(b) != string(raw) {
		t.Fatalf("unchanged stand-in: %q, %v; want the upstream's bytes", b, err)
	}
	if _, err := json.Marshal(res); err == nil {
		t.Error("a stand-in encoded as it is did not fail")
	}
	routed := withRouteMeta(res, routing.Meta{ServedBy: "b__echo", Reason: "auth_failure"})
	b, out, err := passedBytes(routed)
	if err != nil || b != nil {
		t.Fatalf("changed stand-in: bytes %q, %v; want it decoded", b, err)
	}
	data, err := json.Marshal(out)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`"text":"from the backup"`, `"structuredContent":{"k":1}`, `"served_by":"b__echo"`} {
		if !strings.Contains(string(data), want) {
			t.Errorf("%s lacks %s", data, want)
		}
	}
}

// TestPassThroughOnAStream: a result passed through on an answer that
// became an SSE stream (a log message came first) is one data line, even
// when the upstream wrote it over several.
func TestPassThroughOnAStream(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	h := newHostileUpstream(t, map[string]rawAnswerFunc{"x": func(c net.Conn, br *bufio.Reader, id json.RawMessage) {
		_, _ = fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\n"+
			"event: message\ndata: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/message\",\"params\":{\"level\":\"info\",\"data\":\"working\"}}\n\n"+
			"event: message\ndata: {\"jsonrpc\":\"2.0\",\"id\":%s,\"result\":{\ndata:   \"content\": [{\"type\": \"text\", \"text\": \"over lines\"}]\ndata: }}\n\n", id)
		_ = c.Close()
	}})
	g := newTestGateway(t, ctx, fmt.Sprintf("upstreams:\n  a: {url: %s, timeout: 5s}\n", h.url))
	a := newRawAgent(t, ctx, g)
	if r, b := a.post(ctx, `{"jsonrpc":"2.0","id":1,"method":"logging/setLevel","params":{"level":"debug"}}`); r.StatusCode != http.StatusOK {
		t.Fatalf("setLevel: %d %s", r.StatusCode, b)
	}
	r, b := a.post(ctx, `{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"a__raw","arguments":{"text":"x"}}}`)
	if !strings.HasPrefix(r.Header.Get("Content-Type"), "text/event-stream") || !bytes.Contains(b, []byte("working")) {
		t.Fatalf("the log message did not come first on a stream: %s %s", r.Header.Get("Content-Type"), b)
	}
	if got := mustJSON(t, answer(t, r, b)["result"]); got != `{"content":[{"text":"over lines","type":"text"}]}` {
		t.Errorf("result %s", got)
	}
}

// canonical decodes a result as a strict generic JSON reader would and
// encodes it again (sorted keys): null vs "" and a missing key show.
func canonical(raw string) string {
	var v any
	if err := json.Unmarshal([]byte(raw), &v); err != nil {
		return "undecodable: " + err.Error()
	}
	out, _ := json.Marshal(v)
	return string(out)
}

// sseData is the data of an SSE answer's last event, or b as it is.
func sseData(b []byte) []byte {
	if i := bytes.LastIndex(b, []byte("data: ")); i >= 0 && bytes.HasPrefix(b, []byte("event:")) {
		return bytes.TrimSpace(b[i+len("data: "):])
	}
	return b
}

// TestFastPathPassThroughWireAsSDK: the agent must get, on the wire, what
// fast_path: false sends, not only something the Go SDK reads the same.
func TestFastPathPassThroughWireAsSDK(t *testing.T) {
	t.Parallel()
	cases := []struct{ name, result string }{
		{"text null", `{"content":[{"type":"text","text":null}]}`},
		{"text missing", `{"content":[{"type":"text"}]}`},
		{"isError null", `{"content":[{"type":"text","text":"x"}],"isError":null}`},
		{"lone surrogate (JS slice of an emoji)", `{"content":[{"type":"text","text":"cut \ud83d"}]}`},
		{"invalid utf8", "{\"content\":[{\"type\":\"text\",\"text\":\"bad \xff byte\"}]}"},
		{"surrogate pair", `{"content":[{"type":"text","text":"smile \uD83D\uDE00"}]}`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
			defer cancel()
			var got, raw [2]string
			var valid [2]bool
			for i, fast := range []bool{true, false} {
				_, b := hostileAgent(t, ctx, fast, resultAnswer(tc.result), "").post(ctx, callRaw)
				valid[i] = utf8.Valid(b)
				raw[i] = resultBytes(t, sseData(b))
				got[i] = canonical(raw[i])
			}
			if valid[0] != valid[1] {
				t.Errorf("valid UTF-8: fast path %v, SDK path %v", valid[0], valid[1])
			}
			if strings.Contains(raw[0], `\ud83d`) != strings.Contains(raw[1], `\ud83d`) {
				t.Errorf("lone surrogate: fast path %s, SDK path %s", raw[0], raw[1])
			}
			if got[0] != got[1] {
				t.Errorf("fast path result %s\n                     SDK path    %s", got[0], got[1])
			}
		})
	}
}

// logAnswer answers a call on an SSE stream: a log message with params,
// then a result.
func logAnswer(params string) rawAnswerFunc {
	return func(c net.Conn, br *bufio.Reader, id json.RawMessage) {
		_, _ = fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\n"+
			"event: message\ndata: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/message\",\"params\":%s}\n\n"+
			"event: message\ndata: {\"jsonrpc\":\"2.0\",\"id\":%s,\"result\":{\"content\":[{\"type\":\"text\",\"text\":\"done\"}]}}\n\n", params, id)
		_ = c.Close()
	}
}

// TestLogMessageSecretsRedacted: an upstream's log message reaches the
// agent without a configured secret in its logger, its data's keys, its
// _meta or a number, on both paths (values were redacted; those were not).
func TestLogMessageSecretsRedacted(t *testing.T) {
	t.Parallel()
	const digits = "98765432101" // an X-Api-Key of digits
	cases := []struct{ secret, params, header string }{
		{passSecret, `{"_meta":{"m":"` + passSecret + `"},"level":"info","logger":"` + passSecret + `","data":{"` + passSecret + `":"v"}}`, passSecretHeader},
		{digits, `{"level":"info","data":{"n":` + digits + `}}`, `, headers: {X-Api-Key: "` + digits + `"}`},
	}
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	for _, tc := range cases {
		for _, fast := range []bool{true, false} {
			a := hostileAgent(t, ctx, fast, logAnswer(tc.params), tc.header)
			if r, b := a.post(ctx, `{"jsonrpc":"2.0","id":1,"method":"logging/setLevel","params":{"level":"debug"}}`); r.StatusCode != http.StatusOK {
				t.Fatalf("setLevel: %d %s", r.StatusCode, b)
			}
			_, b := a.post(ctx, callRaw)
			if !bytes.Contains(b, []byte("notifications/message")) || !bytes.Contains(b, []byte("done")) {
				t.Fatalf("fast_path %v: no log message or result on the answer: %s", fast, b)
			}
			if bytes.Contains(b, []byte(tc.secret)) {
				t.Errorf("fast_path %v: the secret reached the agent in a log message: %s", fast, b)
			}
		}
	}
}

// raw2026Mode makes the test binary a raw 2026-07-28 stdio upstream
// (raw2026Upstream).
const raw2026Mode = "raw2026"

// raw2026Results are the results of raw2026Upstream's tool x, as written,
// by the call's text argument.
var raw2026Results = map[string]string{
	"plain":                 `{"_meta":{"io.modelcontextprotocol/serverInfo":{"name":"r","version":"1"}},"content":[{"text":"plain answer","type":"text"}],"resultType":"complete"}`,
	"structured":            `{"resultType":"complete","structuredContent":{"b":1,"a":[2]},"content":[{"type":"text","text":"s"}]}`,
	"no resultType":         `{"content":[{"type":"text","text":"bare"}]}`,
	"isError false":         `{"content":[{"type":"text","text":"x"}],"isError":false,"resultType":"complete"}`,
	"tool error":            `{"content":[{"type":"text","text":"it broke"}],"isError":true,"resultType":"complete"}`,
	"user _meta":            `{"_meta":{"io.modelcontextprotocol/serverInfo":{"name":"r"},"dev.example/k":"v"},"content":[{"type":"text","text":"m"}],"resultType":"complete"}`,
	"other hop-local _meta": `{"_meta":{"io.modelcontextprotocol/serverInfo":{"name":"r"},"io.modelcontextprotocol/x":1},"content":[{"type":"text","text":"h"}],"resultType":"complete"}`,
	"other resultType":      `{"content":[{"type":"text","text":"x"}],"resultType":"something_else"}`,
	"unknown key":           `{"content":[{"type":"text","text":"x"}],"resultType":"complete","extra":1}`,
	"image":                 `{"content":[{"type":"image","data":"aGVsbG8=","mimeType":"image/png"}],"resultType":"complete"}`,
	"null content":          `{"content":null,"resultType":"complete"}`,
	"null structured":       `{"content":[{"type":"text","text":"x"}],"structuredContent":null,"resultType":"complete"}`,
	"secret":                `{"content":[{"type":"text","text":"token ` + passSecret + `"}],"resultType":"complete"}`,
	"secret in _meta":       `{"_meta":{"io.modelcontextprotocol/serverInfo":{"name":"` + passSecret + `"}},"content":[{"type":"text","text":"x"}],"resultType":"complete"}`,
	"meta not an object":    `{"_meta":5,"content":[{"type":"text","text":"x"}],"resultType":"complete"}`,
}

// raw2026Passed are the results of raw2026Results the fast path passes
// through, as the agent gets them: the upstream's bytes of content and
// structured content (key order kept), without resultType and the
// upstream SDK's own _meta.
var raw2026Passed = map[string]string{
	"plain":         `{"content":[{"text":"plain answer","type":"text"}]}`,
	"structured":    `{"content":[{"type":"text","text":"s"}],"structuredContent":{"b":1,"a":[2]}}`,
	"no resultType": `{"content":[{"type":"text","text":"bare"}]}`,
	"isError false": `{"content":[{"type":"text","text":"x"}],"isError":false}`,
}

// raw2026Upstream serves a 2026-07-28 MCP server over stdio (server/discover,
// no initialize) with one tool, x, answering raw2026Results[text].
func raw2026Upstream() {
	in := bufio.NewScanner(os.Stdin)
	in.Buffer(make([]byte, 1<<20), 1<<20)
	for in.Scan() {
		var req struct {
			ID     json.RawMessage `json:"id"`
			Method string          `json:"method"`
			Params struct {
				Arguments struct{ Text string } `json:"arguments"`
			} `json:"params"`
		}
		if json.Unmarshal(in.Bytes(), &req) != nil || req.ID == nil {
			continue
		}
		var result string
		switch req.Method {
		case "server/discover":
			result = `{"resultType":"complete","supportedVersions":["2026-07-28"],"capabilities":{"tools":{}},"_meta":{"io.modelcontextprotocol/serverInfo":{"name":"raw2026","version":"1"}}}`
		case "tools/list":
			result = `{"resultType":"complete","tools":[{"name":"x","inputSchema":{"type":"object"}}]}`
		case "tools/call":
			result = raw2026Results[req.Params.Arguments.Text]
		}
		if result == "" {
			fmt.Printf(`{"jsonrpc":"2.0","id":%s,"error":{"code":-32601,"message":"no %s"}}`+"\n", req.ID, req.Method)
			continue
		}
		fmt.Printf(`{"jsonrpc":"2.0","id":%s,"result":%s}`+"\n", req.ID, result)
	}
}

// TestPassThrough2026Upstream: a 2026-07-28 upstream's plain result reaches
// an older agent without being decoded (its bytes, less resultType and the
// upstream SDK's own _meta), and every result reads the same as on the
// SDK's path, the configured secret in none.
func TestPassThrough2026Upstream(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	var agents [2]*rawAgent
	for i, fast := range []bool{true, false} {
		g := newTestGateway(t, ctx, fmt.Sprintf("fast_path: %v\nupstreams:\n  a: %s\n", fast, selfUpstream(t, raw2026Mode, "TOKEN", passSecret)))
		if v := g.ups()[0].current.Load().InitializeResult().ProtocolVersion; v != protocol20260728 {
			t.Fatalf("the upstream speaks %s; the test needs %s", v, protocol20260728)
		}
		agents[i] = newRawAgent(t, ctx, g)
	}
	for name := range raw2026Results {
		call := fmt.Sprintf(`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a__x","arguments":{"text":%q}}}`, name)
		var results [2]string
		for i, a := range agents {
			r, b := a.post(ctx, call)
			if bytes.Contains(b, []byte(passSecret)) {
				t.Errorf("%s, fast_path %v: the secret reached the agent: %s", name, i == 0, b)
			}
			if bytes.Contains(b, []byte(`"resultType":`)) || bytes.Contains(b, []byte(`"io.modelcontextprotocol/`)) {
				t.Errorf("%s, fast_path %v: a 2026-07-28 field reached a 2025-11-25 agent: %s", name, i == 0, b)
			}
			results[i] = normalResult(t, r, b)
			if want, ok := raw2026Passed[name]; ok && i == 0 {
				if got := resultBytes(t, b); got != want {
					t.Errorf("%s: fast path result %s; want it passed through as %s", name, got, want)
				}
			}
		}
		if results[0] != results[1] {
			t.Errorf("%s: fast path result %s; SDK path %s", name, results[0], results[1])
		}
	}
}
