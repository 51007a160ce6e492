package gateway

// A fast call's plain result, passed to the agent as the upstream wrote it
// (issue 12). Decoding a result into the SDK's types and encoding it again
// for the agent was about a tenth of the gateway's CPU per call, for a
// result the gateway does not change: a success, text content only, no
// _meta, no secret in it. Such a result is checked without building its
// content (passWire) and travels the call path as a stand-in
// (*mcp.CallToolResult with no content yet and the upstream's bytes in
// StructuredContent, as a *passRaw); the fast path's writer (finish) sends
// the bytes. Anything that changed the stand-in on its way (a route's
// _meta, say) gets the result decoded then, with its changes kept
// (expand). Every other result is decoded as before.

import (
	"bytes"
	"errors"
	"strings"
	"unicode/utf8"
	"unsafe"

	"github.com/modelcontextprotocol/go-sdk/mcp"
	json "github.com/segmentio/encoding/json"
)

// passRaw is the upstream's bytes of a result passed through.
type passRaw struct{ raw []byte }

// MarshalJSON fails: a stand-in must never be encoded as it is (finish
// writes its bytes or expands it first).
func (*passRaw) MarshalJSON() ([]byte, error) {
	return nil, errors.New("credgate: internal error: a pass-through result was encoded")
}

// passMark is the content of every stand-in: empty, never nil (so nothing
// takes it for a missing content), and told apart from any other by where
// it points.
var passMarkArray [1]mcp.Content

func passMark() []mcp.Content { return passMarkArray[:0:0] }

func isPassMark(c []mcp.Content) bool {
	return c != nil && len(c) == 0 && unsafe.SliceData(c) == &passMarkArray[0]
}

// passWire is what a result passed through may hold: anything else (an
// error, other _meta, a 2026-07-28 field but resultType, content of
// another type, an unknown key, a value of the wrong type) has it decoded
// in full. A 2026-07-28 upstream's result may also hold its hop-local _meta
// and resultType "complete", which the agent does not get (withoutHopLocal).
type passWire struct {
	Meta              json.RawMessage `json:"_meta"`
	Content           passContent     `json:"content"`
	StructuredContent json.RawMessage `json:"structuredContent"`
	IsError           json.RawMessage `json:"isError"` // absent or false
	ResultType        json.RawMessage `json:"resultType"`
}

// passContent is a result's content: its bytes, and its blocks (nil for
// a content that is null).
type passContent struct {
	raw    []byte
	blocks []passText
}

func (c *passContent) UnmarshalJSON(b []byte) error {
	c.raw = b
	_, err := json.Parse(b, &c.blocks, passFlags)
	return err
}

// passText is a text content block with its text a string, without _meta
// or annotations (whose shapes the SDK checks when it decodes them).
type passText struct {
	Type string          `json:"type"`
	Text json.RawMessage `json:"text"`
}

const passFlags = json.DisallowUnknownFields | json.DontMatchCaseInsensitiveStructFields | json.ZeroCopy

// passThrough returns the stand-in of raw, the result of a tools/call on
// cs, or nil if it must be decoded: see passWire, and no configured secret
// may be in it, as redactResult would take it out.
func (g *Server) passThrough(u *upstream, cs *mcp.ClientSession, raw []byte) *mcp.CallToolResult {
	if u.cfg.ClassifyResults || !g.secretFree(raw) || !wireClean(raw) {
		return nil
	}
	var w passWire
	if _, err := json.Parse(raw, &w, passFlags); err != nil || w.Content.blocks == nil || (w.IsError != nil && string(w.IsError) != "false") {
		return nil
	}
	for _, c := range w.Content.blocks {
		if c.Type != "text" || len(c.Text) == 0 || c.Text[0] != '"' {
			return nil // another type; a text that is null, missing or not a string
		}
	}
	if len(w.StructuredContent) > 0 && string(w.StructuredContent) == "null" {
		return nil // the SDK drops it; the bytes would keep it
	}
	if w.Meta != nil || w.ResultType != nil {
		if cs == nil || !newProtocol(cs) {
			return nil
		}
		if raw = withoutHopLocal(&w); raw == nil {
			return nil
		}
	}
	if bytes.ContainsAny(raw, "\r\n") {
		// Whitespace between tokens, which an SSE data line cannot hold.
		var b bytes.Buffer
		if json.Compact(&b, raw) != nil {
			return nil
		}
		raw = b.Bytes()
	}
	return &mcp.CallToolResult{Content: passMark(), StructuredContent: &passRaw{raw: raw}}
}

// passMeta2026 is the _meta a passed 2026-07-28 result may have: the
// upstream SDK's server info, which classifyOutcome drops for every agent
// (hopLocalStripped). Any other key, its own io.modelcontextprotocol/ ones
// included, has the result decoded (a struct, not a map: no allocation).
type passMeta2026 struct {
	ServerInfo json.RawMessage `json:"io.modelcontextprotocol/serverInfo"`
}

// withoutHopLocal returns the result w holds, a 2026-07-28 upstream's, as
// an agent gets it (what classifyOutcome and resultForAgent leave of it):
// without resultType, which must say "complete" (an input round is decoded
// in full), and without _meta, which may hold only the upstream SDK's
// server info (passMeta2026). Anything else returns nil: the result is
// decoded.
func withoutHopLocal(w *passWire) []byte {
	if w.ResultType != nil && string(w.ResultType) != `"complete"` {
		return nil
	}
	if w.Meta != nil {
		var m passMeta2026
		if _, err := json.Parse(w.Meta, &m, passFlags); err != nil || m.ServerInfo == nil {
			return nil // null, or other keys
		}
	}
	out := make([]byte, 0, 32+len(w.Content.raw)+len(w.StructuredContent)+len(w.IsError))
	out = append(out, `{"content":`...)
	out = append(out, w.Content.raw...)
	if w.StructuredContent != nil {
		out = append(out, `,"structuredContent":`...)
		out = append(out, w.StructuredContent...)
	}
	if w.IsError != nil {
		out = append(out, `,"isError":`...)
		out = append(out, w.IsError...)
	}
	return append(out, '}')
}

// wireClean reports whether raw is text the SDK's encoder would write as
// it is: valid UTF-8, and no escaped surrogate (\ud800 to \udfff: a lone
// one, from a string cut inside an emoji, the SDK writes as U+FFFD).
func wireClean(raw []byte) bool {
	if !utf8.Valid(raw) {
		return false
	}
	for rest := raw; ; {
		i := bytes.Index(rest, []byte(`\u`))
		if i < 0 {
			return true
		}
		rest = rest[i+2:]
		if len(rest) >= 2 && (rest[0] == 'd' || rest[0] == 'D') && strings.IndexByte("89abAB", rest[1]) >= 0 {
			return false
		}
	}
}

// secretFree reports whether raw, JSON text, can hold none of the
// configured secrets once decoded: none of the forms they are written in
// occurs in it (percent-encoded too), and it has no escapes (\u, \/) that
// could spell one another way.
func (g *Server) secretFree(raw []byte) bool {
	secrets := g.redactor.Secrets()
	if len(secrets) == 0 {
		return true
	}
	if bytes.Contains(raw, []byte(`\u`)) || bytes.Contains(raw, []byte(`\/`)) {
		return false
	}
	for _, s := range secrets {
		if bytes.Contains(raw, []byte(s)) {
			return false
		}
	}
	return !g.redactor.HoldsEncoded(raw)
}

// passedBytes returns the bytes to answer res with, if res is a stand-in
// as passThrough made it. A stand-in that was changed on its way is
// expanded: decoded, with its changes kept.
func passedBytes(res *mcp.CallToolResult) ([]byte, mcp.Result, error) {
	p, ok := res.StructuredContent.(*passRaw)
	if !ok {
		return nil, res, nil
	}
	if res.Meta == nil && !res.IsError && res.InputRequests == nil && res.RequestState == "" && isPassMark(res.Content) {
		return p.raw, nil, nil
	}
	var full mcp.CallToolResult
	if err := json.Unmarshal(p.raw, &full); err != nil {
		return nil, nil, err
	}
	out := *res
	out.StructuredContent = full.StructuredContent
	if isPassMark(res.Content) {
		out.Content = full.Content
	}
	return nil, &out, nil
}
