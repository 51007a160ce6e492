package gateway

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"golang.org/x/time/rate"
	"io"
	"math"
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	"github.com/modelcontextprotocol/go-sdk/mcp"
	"github.com/rs/zerolog"
)

// Upstream messages are bounded where they enter the gateway
// (upstreams.<name>.max_response_bytes): a JSON response body, one SSE event,
// one stdio line.
//
// The SDK has bounds of its own for SSE events and stdio lines (none for JSON
// bodies, which it reads whole), but a message over them ends the whole
// connection: every agent's calls in flight on a shared session fail with it,
// and a stdio child is restarted. So the gateway reads each message itself
// first, holding it back until it is complete, and hands the SDK either the
// message as it came or, when it grew past the limit, a JSON-RPC error
// response to the call it answered (see [responseLimit.answer]). The rest of
// the oversized message is read and discarded without being kept, so memory
// stays at the limit whatever the upstream sends; only that call fails, and
// the session, the child and every other call carry on.
//
// Which call an oversized message answers is told by its "id". The head of
// the message is kept and parsed as JSON tokens for a top-level id (the Go and
// Python SDKs write {"jsonrpc":"2.0","id":7,"result":...}); the TypeScript SDK
// writes the id last ({"result":...,"jsonrpc":"2.0","id":7}), so the last
// bytes are kept too, and a message ending in `,"id":7}` names its id there:
// the final brace closes the top-level object, so the member before it is a
// top-level member. A message whose head shows a "method" is a request or a
// notification from the upstream, not an answer: it is dropped (and logged),
// and so is a message whose id is found in neither place. A response on an
// HTTP POST answers the request of that POST, so its id stands in when the
// message names none. What a dropped answer costs is a call that waits for
// its upstream timeout and ends as a typed timeout instead of a clear error;
// the trade-off is that guessing (the only call in flight, say) could fail the
// wrong agent's call.

// codeResponseTooLarge is the JSON-RPC error code of the answer that replaces
// an oversized upstream response. It never reaches an agent: classify turns
// it into an upstream_error failure object.
const codeResponseTooLarge = -32012

// responseTooLargeMark is the error data that tells the gateway's own answer
// from an upstream error that happens to use the same code.
const responseTooLargeMark = "max_response_bytes"

// badAnswerMark is the error data of the answer that replaces an upstream
// answer the SDK could not read (see badAnswer).
const badAnswerMark = "bad_answer"

// isGatewayAnswer reports whether e is the gateway's answer in place of an
// upstream response: an oversized one, or one the SDK could not read.
func isGatewayAnswer(e *jsonrpc.Error) bool {
	if e.Code != codeResponseTooLarge {
		return false
	}
	var d struct {
		Credgate string `json:"credgate"`
	}
	return json.Unmarshal(e.Data, &d) == nil && (d.Credgate == responseTooLargeMark || d.Credgate == badAnswerMark)
}

// Sizes of what is kept of an oversized message to find its id.
const (
	oversizedHead = 4 << 10
	oversizedTail = 256
)

// responseLimit is one upstream's bound on its messages.
type responseLimit struct {
	upstream string
	max      int64
	log      zerolog.Logger
	// A stdio child's lines that are not JSON-RPC (stdioConn): stray logs
	// one; redact redacts text, cut for text that is the start of a longer
	// one (see authmap.Redactor.RedactCut). Either may be nil.
	stray  func(*strayLine)
	redact func(s string, cut bool) string
	// warns bounds the warnings about answers the SDK could not read
	// (badAnswer, unreadable): an upstream sending only those must not
	// flood the log.
	warns *rate.Limiter
	// flood counts what is dropped (nil in tests that build a limit alone).
	flood *floodGuard
	// legacySSE is set for an upstream on the legacy SSE transport, whose
	// answers come on its event stream: the SDK never reads a POST's body
	// there (202 Accepted with no content type is the rule).
	legacySSE bool
}

func newResponseLimit(upstream string, max int64, log zerolog.Logger) *responseLimit {
	return &responseLimit{upstream: upstream, max: max, log: log, warns: rate.NewLimiter(keepRate, keepBurst)}
}

// clean redacts s, text an upstream chose, for a log line or an answer.
func (l *responseLimit) clean(s string) string {
	if l.redact == nil {
		return s
	}
	return l.redact(s, false)
}

// message is the error an agent reads, naming the limit and its key.
func (l *responseLimit) message() string {
	return fmt.Sprintf("upstream %q: response exceeded upstreams.%s.max_response_bytes (%d bytes)", l.upstream, l.upstream, l.max)
}

// answer is the JSON-RPC error response that replaces an oversized response
// to the call with the given id.
func (l *responseLimit) answer(id json.RawMessage) []byte {
	return gatewayAnswer(id, l.message(), responseTooLargeMark)
}

// gatewayAnswer is a JSON-RPC error response to the call with the given id,
// marked as the gateway's (isGatewayAnswer).
func gatewayAnswer(id json.RawMessage, message, mark string) []byte {
	type rpcError struct {
		Code    int64           `json:"code"`
		Message string          `json:"message"`
		Data    json.RawMessage `json:"data"`
	}
	b, _ := json.Marshal(struct {
		JSONRPC string          `json:"jsonrpc"`
		ID      json.RawMessage `json:"id"`
		Error   rpcError        `json:"error"`
	}{"2.0", id, rpcError{codeResponseTooLarge, message, json.RawMessage(`{"credgate":"` + mark + `"}`)}})
	return b
}

// backstop is the SDK's own bound on one message (MaxEventSize,
// MaxLineLength), set above ours: the gateway hands the SDK nothing larger
// than the limit plus a few bytes of framing, so the SDK's bound, whose
// failure ends the connection, is never reached.
func (l *responseLimit) backstop() int {
	const slack = 64 << 10
	if l.max >= math.MaxInt-slack {
		return -1 // no SDK bound; ours holds
	}
	return int(l.max) + slack
}

// oversized is what is kept of a message over the limit: its head, its last
// bytes and its size.
type oversized struct {
	head []byte
	tail []byte
	size int64
}

func (o *oversized) add(p []byte) {
	o.size += int64(len(p))
	if n := oversizedHead - len(o.head); n > 0 {
		o.head = append(o.head, p[:min(n, len(p))]...)
	}
	if len(p) >= oversizedTail {
		o.tail = append(o.tail[:0], p[len(p)-oversizedTail:]...)
		return
	}
	o.tail = append(o.tail, p...)
	if extra := len(o.tail) - oversizedTail; extra > 0 {
		o.tail = append(o.tail[:0], o.tail[extra:]...)
	}
}

// msgInfo is what the head and tail of a JSON-RPC message tell about it.
type msgInfo struct {
	id     json.RawMessage // its top-level id, if found
	method bool            // it has a top-level method: a request or a notification
}

// tailID matches a top-level id as the last member of a message. The comma or
// brace before the key keeps an escaped quote inside a string from passing
// for the key's.
var tailID = regexp.MustCompile(`[,{]\s*"id"\s*:\s*(-?[0-9]+(?:\.[0-9]+)?(?:[eE][-+]?[0-9]+)?|"(?:[^"\\]|\\.)*")\s*\}$`)

// inspectMessage finds the id of a message from its head (parsed as JSON
// tokens, top level only) or, failing that, its tail.
func inspectMessage(head, tail []byte) msgInfo {
	var m msgInfo
	dec := json.NewDecoder(bytes.NewReader(head))
	dec.UseNumber()
	if t, err := dec.Token(); err == nil && t == json.Delim('{') {
	members:
		for {
			k, err := dec.Token()
			key, ok := k.(string)
			if err != nil || !ok {
				break
			}
			switch key {
			case "id":
				v, err := dec.Token()
				if err != nil {
					break members
				}
				switch v := v.(type) {
				case json.Number:
					m.id = json.RawMessage(v.String())
				case string:
					m.id, _ = json.Marshal(v)
				}
				continue
			case "method":
				m.method = true
			}
			if !skipValue(dec) {
				break
			}
		}
	}
	if m.id == nil {
		if sm := tailID.FindSubmatch(bytes.TrimSpace(tail)); sm != nil && json.Valid(sm[1]) {
			m.id = json.RawMessage(bytes.Clone(sm[1]))
		}
	}
	return m
}

// skipValue consumes one JSON value from dec.
func skipValue(dec *json.Decoder) bool {
	depth := 0
	for {
		t, err := dec.Token()
		if err != nil {
			return false
		}
		switch t {
		case json.Delim('{'), json.Delim('['):
			depth++
		case json.Delim('}'), json.Delim(']'):
			depth--
		}
		if depth == 0 {
			return true
		}
	}
}

// limitedReader sits between an upstream's byte stream and the SDK's reader
// of it. It reads one message (frame) at a time, up to the limit, and hands
// it on whole, or in its place the answer to the call it was for.
type limitedReader struct {
	src    *bufio.Reader
	pooled bool // src came from eventReaders
	closer io.Closer
	lim    *responseLimit
	next   func(*limitedReader) ([]byte, error) // reads the next frame
	// call returns the id of the request whose response this stream
	// carries (an HTTP POST's), or nil.
	call func() json.RawMessage
	// length is an HTTP body's Content-Length, or -1.
	length int64

	// check replaces SSE events the SDK's client could not read, whose
	// failure would end its session (eventReadable, unreadable); answered
	// is set once one was answered in the call's name.
	check    bool
	answered bool

	out  []byte // what is left of the frame being handed on
	err  error  // the source's error, returned once out is empty
	buf  []byte // the frame being read
	done bool   // a JSON body has been read
}

// Read hands on at most one frame per call, so the SDK's own per-frame
// accounting (stdio's MaxLineLength) sees frames one at a time.
func (r *limitedReader) Read(p []byte) (int, error) {
	for len(r.out) == 0 {
		if r.err != nil {
			return 0, r.err
		}
		r.out, r.err = r.next(r)
		if r.check && len(r.out) > 0 && !eventReadable(r.out) {
			r.out = r.lim.unreadable(r)
		}
		if r.err != nil && r.pooled {
			// The stream is over: its reader is never read again.
			r.src.Reset(nil)
			eventReaders.Put(r.src)
			r.src, r.pooled = nil, false
		}
	}
	n := copy(p, r.out)
	r.out = r.out[n:]
	return n, nil
}

func (r *limitedReader) Close() error { return r.closer.Close() }

// release lets go of a large frame buffer once it has been handed on (or
// given up), so that one large message does not pin its size for the life of
// the connection.
func (r *limitedReader) release() {
	if cap(r.buf) > 64<<10 {
		r.buf = nil
	}
}

// replace returns what stands in for an oversized message: the answer to the
// call it names (or, with preferCall, the call of the HTTP request), framed by
// frame, or nothing.
func (r *limitedReader) replace(o *oversized, preferCall bool, frame func([]byte) []byte) ([]byte, error) {
	var id json.RawMessage
	if preferCall && r.call != nil {
		id = r.call()
	}
	if id == nil {
		info := inspectMessage(o.head, o.tail)
		switch {
		case info.method:
			// An upstream request or notification: nothing to answer.
		case info.id != nil:
			id = info.id
		case r.call != nil:
			id = r.call()
		}
	}
	ev := r.lim.log.Warn().Int64("limit", r.lim.max).Int64("bytes_read", o.size)
	if id == nil || string(id) == "null" {
		ev.Msg("dropped an upstream message over max_response_bytes: no call to answer")
		return nil, nil
	}
	// The id is the upstream's own text: it may carry a secret.
	if shown := r.lim.clean(string(id)); shown == string(id) && len(id) <= 100 {
		ev.RawJSON("id", id)
	} else {
		ev.Str("id", truncate(shown, 100))
	}
	ev.Msg("upstream response over max_response_bytes: the call gets an error")
	return frame(r.lim.answer(id)), nil
}

// newLineLimiter bounds a stdio child's stdout line by line. Close does not
// close stdout: a stdio session ends by closing stdin, as the SDK's does.
func newLineLimiter(stdout io.Reader, lim *responseLimit) *limitedReader {
	return &limitedReader{src: bufio.NewReaderSize(stdout, 64<<10), closer: io.NopCloser(stdout), lim: lim, next: (*limitedReader).nextLine, length: -1}
}

func (r *limitedReader) nextLine() ([]byte, error) {
	r.release()
	r.buf = r.buf[:0]
	for {
		chunk, err := r.src.ReadSlice('\n')
		n := len(r.buf) + len(chunk)
		if err == nil {
			n -= len(chunk) - len(bytes.TrimRight(chunk, "\r\n"))
		}
		if int64(n) > r.lim.max {
			return r.overflowLine(chunk, err)
		}
		r.buf = append(r.buf, chunk...)
		if err != bufio.ErrBufferFull {
			return r.buf, err
		}
	}
}

func (r *limitedReader) overflowLine(chunk []byte, err error) ([]byte, error) {
	var o oversized
	o.add(r.buf)
	o.add(chunk)
	r.release()
	for err == bufio.ErrBufferFull {
		chunk, err = r.src.ReadSlice('\n')
		o.add(chunk)
	}
	if err != nil {
		return nil, err // the stream ended inside the message
	}
	return r.replace(&o, false, func(b []byte) []byte { return append(b, '\n') })
}

// newEventLimiter bounds an SSE stream event by event.
func newEventLimiter(body io.ReadCloser, lim *responseLimit, call func() json.RawMessage) *limitedReader {
	src := eventReaders.Get().(*bufio.Reader)
	src.Reset(body)
	return &limitedReader{src: src, pooled: true, closer: body, lim: lim, next: (*limitedReader).nextEvent, call: call, length: -1}
}

// eventReaders holds the buffered readers of SSE streams: a POST's answer
// stream is read to its end once per call (issue 12: 4 KiB a call).
var eventReaders = sync.Pool{New: func() any { return bufio.NewReader(nil) }}

func (r *limitedReader) nextEvent() ([]byte, error) {
	r.release()
	r.buf = r.buf[:0]
	lineStart := true
	for {
		chunk, err := r.src.ReadSlice('\n')
		if int64(len(r.buf)+len(chunk)) > r.lim.max {
			return r.overflowEvent(chunk, err)
		}
		r.buf = append(r.buf, chunk...)
		switch {
		case err == bufio.ErrBufferFull:
			lineStart = false
		case err != nil:
			return r.buf, err
		case lineStart && (len(chunk) == 1 || string(chunk) == "\r\n"):
			return r.buf, nil // a blank line ends the event
		default:
			lineStart = true
		}
	}
}

func (r *limitedReader) overflowEvent(chunk []byte, err error) ([]byte, error) {
	var o oversized
	s := sseScan{o: &o}
	s.feed(r.buf)
	s.feed(chunk)
	r.release()
	for !s.ended && (err == nil || err == bufio.ErrBufferFull) {
		chunk, err = r.src.ReadSlice('\n')
		s.feed(chunk)
	}
	if !s.ended {
		return nil, err // the stream ended inside the event
	}
	o.size = s.size
	return r.replace(&o, false, func(b []byte) []byte {
		out := append([]byte("data: "), b...)
		return append(out, "\n\n"...)
	})
}

// sseScan follows the lines of an oversized SSE event, keeping what its data
// fields carry (the JSON-RPC message) in an oversized, until the blank line
// that ends it. Input may be cut anywhere, but never past that blank line.
type sseScan struct {
	o       *oversized
	field   []byte // the current line's start, until its field name is known
	known   bool   // the current line's field name is known
	data    bool   // the current line is a data field
	skipSp  bool   // a space may open the data value
	lineLen int
	size    int64 // bytes of the event
	ended   bool
}

func (s *sseScan) feed(p []byte) {
	s.size += int64(len(p))
	for len(p) > 0 && !s.ended {
		i := bytes.IndexByte(p, '\n')
		if i < 0 {
			s.segment(p)
			return
		}
		s.segment(p[:i])
		if s.lineLen == 0 || (s.lineLen == 1 && !s.known && s.field[0] == '\r') {
			s.ended = true
			return
		}
		if s.data {
			s.o.add([]byte{'\n'}) // data fields join with newlines
		}
		s.field, s.known, s.data, s.lineLen = s.field[:0], false, false, 0
		p = p[i+1:]
	}
}

func (s *sseScan) segment(seg []byte) {
	s.lineLen += len(seg)
	if !s.known {
		j := bytes.IndexByte(seg, ':')
		if j < 0 {
			if len(s.field) < 16 {
				s.field = append(s.field, seg[:min(len(seg), 16)]...)
			}
			return
		}
		name := append(s.field, seg[:j]...)
		s.known, s.data, s.skipSp = true, string(name) == "data", true
		seg = seg[j+1:]
	}
	if !s.data || len(seg) == 0 {
		return
	}
	if s.skipSp {
		s.skipSp = false
		if seg[0] == ' ' {
			seg = seg[1:]
		}
	}
	s.o.add(seg)
}

// newBodyLimiter bounds a JSON response body of unknown or excessive length.
func newBodyLimiter(body io.ReadCloser, length int64, lim *responseLimit, call func() json.RawMessage) *limitedReader {
	return &limitedReader{src: bufio.NewReader(body), closer: body, lim: lim, next: (*limitedReader).nextBody, call: call, length: length}
}

func (r *limitedReader) nextBody() ([]byte, error) {
	if r.done {
		return nil, io.EOF
	}
	r.done = true
	var o oversized
	if r.length <= r.lim.max {
		data, err := io.ReadAll(io.LimitReader(r.src, r.lim.max+1))
		if err != nil || int64(len(data)) <= r.lim.max {
			if err == nil {
				err = io.EOF
			}
			return data, err
		}
		o.add(data[:min(len(data), oversizedHead)])
		o.size = int64(len(data))
	} else {
		o.size = r.length
	}
	// Stop reading: closing the body drops the connection rather than
	// draining what may be gigabytes.
	_ = r.closer.Close()
	out, _ := r.replace(&o, true, func(b []byte) []byte { return b })
	return out, io.EOF
}

// bound makes resp's body bounded by l, if it is a body the SDK reads
// messages from. req is the request it answers. An answer to a call that
// the SDK's client could not read is replaced (badAnswer): one with a
// content type it does not read, and, if check is set (the SDK's requests;
// the fast path reads its own answers), a JSON one that is not a message.
func (l *responseLimit) bound(req *http.Request, resp *http.Response, check bool) {
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		// The SDK reads an error body whole, looking for a JSON-RPC error.
		resp.Body = struct {
			io.Reader
			io.Closer
		}{io.LimitReader(resp.Body, maxErrorBody), resp.Body}
		return
	}
	if l.legacySSE && req.Method == http.MethodPost {
		// Every message was counted and logged a bad answer (found trying
		// the gateway from outside): the SDK closes this body unread.
		return
	}
	call := func() json.RawMessage { return requestID(req) }
	mt, _, _ := strings.Cut(resp.Header.Get("Content-Type"), ";")
	mt = strings.ToLower(strings.TrimSpace(mt))
	switch mt {
	case "text/event-stream":
		lr := newEventLimiter(resp.Body, l, call)
		lr.check = check
		resp.Body = lr
	case "application/json":
		if check && (resp.ContentLength < 0 || resp.ContentLength <= min(l.max, checkedAnswer)) && l.checkJSON(resp, call) {
			return
		}
		if resp.ContentLength >= 0 && resp.ContentLength <= l.max {
			return // the HTTP client reads no more than Content-Length
		}
		resp.Body = newBodyLimiter(resp.Body, resp.ContentLength, l, call)
	default:
		// Also a 202 or 204 to a call (no answer, where one is owed: the SDK
		// ended the session on it).
		if id := call(); id != nil {
			l.badAnswer(resp, id, fmt.Sprintf("with content type %q, not application/json or text/event-stream", mt))
		}
	}
}

// eventReadable reports whether the SDK's client reads the SSE event ev
// (its lines, up to the blank line that ends it) without failing: it reads
// it as mcp's scanEvents and handleSSE do, and fails, ending the session,
// on a line without a colon or a message event whose data is not a
// JSON-RPC message.
func eventReadable(ev []byte) bool {
	var name, data []byte
	n := 0
	for len(ev) > 0 {
		line, rest, _ := bytes.Cut(ev, []byte{'\n'})
		ev = rest
		line = bytes.TrimRight(line, "\r")
		if len(line) == 0 {
			continue
		}
		key, val, ok := bytes.Cut(line, []byte{':'})
		if !ok {
			return false
		}
		switch string(key) {
		case "event":
			name = bytes.TrimSpace(val)
		case "data":
			if n++; n == 1 {
				data = bytes.TrimSpace(val)
			} else {
				data = append(append(bytes.Clone(data), '\n'), bytes.TrimSpace(val)...)
			}
		}
	}
	if len(data) == 0 || len(name) > 0 && string(name) != "message" {
		return true
	}
	_, err := jsonrpc.DecodeMessage(data)
	return err == nil
}

// unreadable returns what stands in for r's current event (r.out), which
// the SDK's client could not read: on a call's answer stream (a POST's),
// the first one is answered with the gateway's error answer to that call,
// so that the call fails at once instead of waiting for its timeout (the
// upstream may keep the stream open); any other is dropped. It is counted
// and logged, at most warns' rate.
func (l *responseLimit) unreadable(r *limitedReader) []byte {
	l.flood.count(dropBadAnswer)
	size := len(r.out)
	var out []byte
	if r.call != nil && !r.answered {
		if id := r.call(); id != nil {
			r.answered = true
			out = append(append([]byte("data: "), gatewayAnswer(id, fmt.Sprintf("upstream %q answered with an event that is not a JSON-RPC message", l.upstream), badAnswerMark)...), "\n\n"...)
		}
	}
	if l.warns.Allow() {
		l.log.Warn().Int("bytes", size).Bool("answered", out != nil).Msg("an event of the upstream's stream is not a JSON-RPC message: dropped, the call (if any) gets an error, the session goes on")
	}
	return out
}

// checkedAnswer bounds the JSON answers checkJSON reads whole: larger ones
// stream to the SDK unchecked, as they come.
const checkedAnswer = 1 << 20

// checkJSON reads resp's JSON body, if it has at most checkedAnswer bytes
// (and at most the limit), and, if it is not one JSON-RPC message (the SDK
// reads nothing else from a JSON answer: not a batch), replaces it (see
// badAnswer). It reports whether it read the body whole; if not, the body
// reads as it came, from its start. The SDK reads it whole anyway.
func (l *responseLimit) checkJSON(resp *http.Response, call func() json.RawMessage) bool {
	limit := min(l.max, checkedAnswer)
	body, err := io.ReadAll(io.LimitReader(resp.Body, limit+1))
	if int64(len(body)) > limit {
		// Too large to check: the rest streams on behind what was read.
		resp.Body = struct {
			io.Reader
			io.Closer
		}{io.MultiReader(bytes.NewReader(body), resp.Body), resp.Body}
		return false
	}
	_ = resp.Body.Close()
	resp.Body = io.NopCloser(bytes.NewReader(body))
	resp.ContentLength = int64(len(body))
	if err != nil {
		return true // the SDK reads the bytes there were, and fails as it did
	}
	if _, derr := jsonrpc.DecodeMessage(body); derr == nil {
		return true
	}
	if id := call(); id != nil {
		l.badAnswer(resp, id, "with a body that is not a JSON-RPC message")
	}
	return true
}

// badAnswer replaces resp, a 2xx answer to the call with the given id that
// the SDK's client cannot read, with the gateway's JSON-RPC error answer to
// that call: the client ended its whole session on such an answer (an HTML
// page from a proxy in front of the server, a handler's plain text, a body
// cut short), and with it every call in flight on the upstream. The call
// fails as an upstream_error naming why; the session goes on.
func (l *responseLimit) badAnswer(resp *http.Response, id json.RawMessage, why string) {
	_ = resp.Body.Close() // not drained: the connection is dropped, whatever it holds
	l.flood.count(dropBadAnswer)
	if l.warns.Allow() {
		l.log.Warn().Int("status", resp.StatusCode).Str("content_type", truncate(l.clean(resp.Header.Get("Content-Type")), 100)).Msg("upstream answered a call " + l.clean(why) + ": the call gets an error, the session goes on")
	}
	b := gatewayAnswer(id, fmt.Sprintf("upstream %q answered %s", l.upstream, l.clean(why)), badAnswerMark)
	resp.Body = io.NopCloser(bytes.NewReader(b))
	resp.ContentLength = int64(len(b))
	resp.Header = resp.Header.Clone()
	resp.Header.Set("Content-Type", "application/json")
	resp.Header.Del("Content-Length")
}

// requestID returns the id of the JSON-RPC request an HTTP request carries,
// nil if it carries a notification or a response. The SDK's client writes
// the id and method ahead of the params, so the head suffices.
func requestID(req *http.Request) json.RawMessage {
	if req.GetBody == nil {
		return nil
	}
	body, err := req.GetBody()
	if err != nil {
		return nil
	}
	defer body.Close()
	head, _ := io.ReadAll(io.LimitReader(body, oversizedHead))
	m := inspectMessage(head, nil)
	if !m.method {
		return nil // a response or nothing: no call to answer
	}
	return m.id
}

// limitedCommand is [mcp.CommandTransport] with the child's stdout bounded
// line by line: Connect starts the command as the SDK's does, and closing
// the connection stops it as the SDK's does (stdin closed, then SIGTERM after
// TerminateDuration, then SIGKILL). Its connection is a stdioConn.
type limitedCommand struct {
	*mcp.CommandTransport
	lim *responseLimit
	// opened, if set, is given the connection once the command started.
	opened func(*stdioConn)
}

func (t limitedCommand) Connect(ctx context.Context) (mcp.Connection, error) {
	cmd := t.Command
	// The pipe to the child's stdin is made here, not by cmd.StdinPipe,
	// which hides the file: a write to a child that stopped reading must be
	// able to give up (a deadline, see stdioConn.writeLine). It is made
	// first: a StdoutPipe made before it could not be closed if it failed.
	stdinR, stdin, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		_ = stdinR.Close()
		_ = stdin.Close()
		return nil, err
	}
	cmd.Stdin = stdinR
	err = cmd.Start()
	_ = stdinR.Close() // the child has its own copy
	if err != nil {
		_ = stdin.Close()
		return nil, err
	}
	td := t.TerminateDuration
	if td <= 0 {
		td = 5 * time.Second
	}
	c := newStdioConn(stdout, &childInput{cmd: cmd, stdin: stdin, terminate: td}, t.lim)
	if t.opened != nil {
		t.opened(c)
	}
	return c, nil
}

// childInput is a stdio child's stdin; closing it stops the child.
type childInput struct {
	cmd       *exec.Cmd
	stdin     *os.File
	terminate time.Duration
}

func (c *childInput) Write(p []byte) (int, error) { return c.stdin.Write(p) }

// SetWriteDeadline is the stdin pipe's (stdioConn.writeLine).
func (c *childInput) SetWriteDeadline(t time.Time) error { return c.stdin.SetWriteDeadline(t) }

// SyscallConn is the stdin pipe's (stdioConn.write).
func (c *childInput) SyscallConn() (syscall.RawConn, error) { return c.stdin.SyscallConn() }

// Close closes stdin and waits for the child to exit, sending SIGTERM after
// the terminate duration and SIGKILL after as long again: the shutdown the
// MCP spec asks of a stdio client.
func (c *childInput) Close() error {
	if err := c.stdin.Close(); err != nil {
		return fmt.Errorf("closing stdin: %w", err)
	}
	exited := make(chan error, 1)
	// Ends when the child does, which the SIGKILL below guarantees; the
	// channel is buffered, so it never blocks on a Close that stopped waiting.
	go func() { exited <- c.cmd.Wait() }()
	wait := func() (error, bool) {
		t := time.NewTimer(c.terminate)
		defer t.Stop()
		select {
		case err := <-exited:
			return err, true
		case <-t.C:
			return nil, false
		}
	}
	if err, ok := wait(); ok {
		return err
	}
	if err := c.cmd.Process.Signal(syscall.SIGTERM); err == nil {
		if err, ok := wait(); ok {
			return err
		}
	}
	if err := c.cmd.Process.Kill(); err != nil {
		return err
	}
	if err, ok := wait(); ok {
		return err
	}
	return fmt.Errorf("child process %d did not exit", c.cmd.Process.Pid)
}
