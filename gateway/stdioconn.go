// The connection to a stdio child: newline-delimited JSON-RPC on its stdin
// and stdout.

package gateway

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// stdioConn is the [mcp.Connection] of a stdio upstream, in place of the
// SDK's (mcp.IOTransport's ioConn). The SDK's reads the child's stdout in a
// goroutine of its own, which scans each message with a streaming decoder and
// hands it over a channel to the SDK's reading goroutine, which decodes it
// again (first as a batch, then as a message): two wake-ups and three passes
// over the bytes per message. Here the SDK's reading goroutine reads the
// line itself and decodes it once. Close unblocks a Read waiting for input
// (the pipe's read deadline), as the SDK's does with its channel.
//
// It also carries credgate's own calls (call): requests with ids the SDK
// never uses (strings "cg-<n>"; the SDK's are numbers), whose responses it
// takes out of the stream before the SDK sees them. Every other message
// passes to and from the SDK unchanged.
//
// Unlike the SDK's, it answers a batch of requests from the child one
// response at a time, not as one batch (JSON-RPC batches left MCP in
// 2025-06-18; no server sends its client a batch of requests).
type stdioConn struct {
	r        *limitedReader // the child's stdout, line by line, bounded
	stdout   *os.File       // nil if stdout is no file: then Close cannot interrupt a Read
	w        io.WriteCloser // the child's stdin; closing it stops the child
	backstop int            // bound of a message spanning lines; <= 0 for none

	// Only the reading goroutine (the SDK's) touches these.
	queue []jsonrpc.Message // the rest of a batch
	rerr  error             // the stream's end, returned once its last line is decoded

	// Writing. wsem is held by the one write under way: a message never
	// interleaves with another. A write given up part way is finished by a
	// goroutine of its own, which holds wsem until it is (writeLine).
	wsem     chan struct{}
	wbuf     []byte
	deadline writeDeadliner // w's deadline, if it has one; nil otherwise
	dlMu     sync.Mutex
	dlGen    uint64 // the write under way, for its ctx's AfterFunc
	dlSet    bool   // a deadline is set on w
	// raw, if w is a file, makes one write attempt that never waits (tryWrite
	// on tryB, the count in tryN): most lines fit the pipe, and need no
	// AfterFunc.
	raw   syscall.RawConn
	tryFn func(uintptr) bool
	tryB  []byte
	tryN  int

	closeOnce sync.Once
	closed    chan struct{}
	closeErr  error

	// credgate's own calls.
	next     atomic.Int64
	mu       sync.Mutex
	pending  map[int64]chan *jsonrpc.Response
	readDone chan struct{} // closed when Read has failed for good
	readErr  error         // why, set before readDone closes
	ended    bool          // closed or read failed: onEnd ran or runs now
	onEnd    func()

	// Requests from the child the SDK has not answered yet: past
	// maxChildRequests, more are dropped (see Read).
	childCalls   atomic.Int64
	childDropped atomic.Int64

	// Lines on stdout that were not JSON-RPC, skipped (skip): how many,
	// the last unless a message followed it, and the hooks that log one and
	// redact one (from the responseLimit; nil for none).
	strays    atomic.Int64
	lastStray atomic.Pointer[strayLine]
	stray     func(*strayLine)
	redact    func(s string, cut bool) string
	flood     *floodGuard // counts what is dropped; may be nil
	upstream  string      // the upstream's name, for the error answer to a call whose answer was unreadable

	metaOnce sync.Once
	meta     map[string]json.RawMessage // see requestMeta
	metaJSON []byte                     // meta as a member of an object: `"_meta":{...},`, or nothing
}

func newStdioConn(stdout io.Reader, w io.WriteCloser, lim *responseLimit) *stdioConn {
	c := &stdioConn{
		r:        newLineLimiter(stdout, lim),
		w:        w,
		wsem:     make(chan struct{}, 1),
		backstop: lim.backstop(),
		closed:   make(chan struct{}),
		readDone: make(chan struct{}),
		pending:  make(map[int64]chan *jsonrpc.Response),
		stray:    lim.stray,
		redact:   lim.redact,
		flood:    lim.flood,
		upstream: lim.upstream,
	}
	c.stdout, _ = stdout.(*os.File)
	c.deadline, _ = w.(writeDeadliner)
	if sc, ok := w.(syscall.Conn); ok && c.deadline != nil {
		if raw, err := sc.SyscallConn(); err == nil {
			c.raw, c.tryFn = raw, c.tryWrite
		}
	}
	return c
}

// tryWrite writes what it can of tryB on fd without waiting.
func (c *stdioConn) tryWrite(fd uintptr) bool {
	for {
		n, err := syscall.Write(int(fd), c.tryB)
		if err == syscall.EINTR {
			continue
		}
		if n > 0 {
			c.tryN = n
		}
		return true // EAGAIN, or any error: write reports it
	}
}

// writeDeadliner is a writer whose writes can be made to give up.
type writeDeadliner interface {
	SetWriteDeadline(time.Time) error
}

func (c *stdioConn) SessionID() string { return "" }

// Read returns the next message for the SDK.
func (c *stdioConn) Read(ctx context.Context) (jsonrpc.Message, error) {
	for {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		var msg jsonrpc.Message
		if len(c.queue) > 0 {
			msg, c.queue = c.queue[0], c.queue[1:]
		} else {
			msgs, err := c.readMessages()
			if err != nil {
				select {
				case <-c.closed:
				default:
					err = c.withStray(err)
				}
				c.end(err) // credgate's calls waiting for an answer get err
				return nil, err
			}
			if len(msgs) == 0 {
				continue
			}
			msg, c.queue = msgs[0], msgs[1:]
		}
		if resp, ok := msg.(*jsonrpc.Response); ok && c.deliver(resp) {
			continue
		}
		if req, ok := msg.(*jsonrpc.Request); ok && req.IsCall() {
			if c.childCalls.Add(1) > maxChildRequests {
				c.childCalls.Add(-1)
				c.childDropped.Add(1)
				c.flood.count(dropChildRequest)
				continue
			}
		}
		return msg, nil
	}
}

// maxChildRequests bounds the requests from a child (sampling, elicitation,
// roots, ping) the SDK holds unanswered: a child sending them without end
// would otherwise grow the gateway's memory with each one read (found
// feeding the built gateway hostile upstreams: 1,000,000 sampling requests,
// 1 GB). Past it, a request is dropped unanswered: no server waits on 64 of
// its own requests at once but a broken or hostile one (agents get at most
// asksMax at once anyway).
const maxChildRequests = 64

// readMessages reads and decodes the next message, or batch of messages.
func (c *stdioConn) readMessages() ([]jsonrpc.Message, error) {
	line, err := c.frame()
	if err != nil {
		return nil, err
	}
	line = bytes.TrimSpace(line)
	if len(line) == 0 {
		return nil, nil // a blank line, or an oversized message dropped
	}
	if n, result, ok := ownAnswer(line); ok && jsonDepthOK(result) {
		// The answer to one of credgate's own calls: handed over without
		// decoding the message (ownAnswer). One nested deeper than the
		// SDK's decoder takes goes to it, to be refused as before: the
		// result's decoder (segmentio's) has no bound, and a deep enough
		// one would exhaust the stack.
		if c.lastStray.Load() != nil {
			c.lastStray.Store(nil)
		}
		c.handOver(n, func() *jsonrpc.Response { return ownResponse(result) })
		return nil, nil
	}
	msgs, err := decodeFrame(line)
	if err == nil {
		if c.lastStray.Load() != nil {
			c.lastStray.Store(nil) // only the last lines before an end tell why it ended
		}
		return msgs, nil
	}
	// The rare message that spans lines (pretty-printed): the SDK's reader
	// took JSON values wherever lines broke, so this one does too.
	var acc []byte
	for isIncomplete(line) {
		if acc == nil {
			acc = append([]byte(nil), line...)
		}
		next, ferr := c.frame()
		if ferr != nil {
			if errors.Is(ferr, io.EOF) {
				ferr = io.ErrUnexpectedEOF
			}
			return nil, ferr
		}
		next = bytes.TrimSpace(next)
		if len(next) > 0 && (next[0] == '{' || next[0] == '[') {
			// A whole message on the next line: what came before it was a
			// line cut short ("{", a logger's line cut), not its start.
			if msgs, err := decodeFrame(next); err == nil {
				c.skip(acc)
				c.lastStray.Store(nil) // a message came after it
				return msgs, nil
			}
		}
		acc = append(append(acc, '\n'), next...)
		if c.backstop > 0 && len(acc) > c.backstop {
			return nil, fmt.Errorf("a message spanning lines exceeded %d bytes", c.backstop)
		}
		line = acc
		if msgs, err = decodeFrame(line); err == nil {
			c.lastStray.Store(nil)
			return msgs, nil
		}
	}
	c.skip(line)
	if id := answerID(line); id != nil {
		// An answer to a call that the message decoder refused (an error
		// whose code is a string, say): the call gets the gateway's error
		// answer now, as over HTTP, rather than wait out its timeout.
		if msgs, err := decodeFrame(gatewayAnswer(id, fmt.Sprintf("upstream %q answered with a message that is not valid JSON-RPC", c.upstream), badAnswerMark)); err == nil {
			c.flood.count(dropBadAnswer)
			return msgs, nil
		}
	}
	return nil, nil
}

// answerID returns the id of line if it is an answer the message decoder
// refused: a JSON object (its values not checked: a string may hold a raw
// control character) with a string or number id, a result or an error, and
// no other member but "jsonrpc", whatever that says (found trying the gateway: an
// answer without "jsonrpc":"2.0" was skipped, and its call waited out its
// timeout). Anything else (a logger's JSON line, say) returns nil.
func answerID(line []byte) json.RawMessage {
	var answer bool
	var id []byte
	whole := members(line, func(key, value, _ []byte) bool {
		switch string(key) {
		case "id":
			id = value
		case "result", "error":
			answer = true
		case "jsonrpc":
		default:
			// An answer has no other member; a logger's JSON line that
			// names a request's id ("level", "msg") is not one.
			return false
		}
		return true
	})
	if !whole || !answer || len(id) == 0 {
		return nil
	}
	if c := id[0]; c == '"' {
		if !json.Valid(id) {
			return nil
		}
	} else if c != '-' && (c < '0' || c > '9') {
		return nil
	}
	return json.RawMessage(bytes.Clone(id))
}

// skip skips line, which is not JSON-RPC: a banner, a print left in, a
// logger writing to stdout. It is skipped as the TypeScript SDK's client
// (Claude Desktop's) skips it, not taken for the end of the session (the
// Go SDK's reader ended it, and with it every call in flight on the
// upstream). Its first strayKeep bytes are kept, raw: redacting costs, and
// only the few lines shown (stray's rate) and the last (withStray) are.
func (c *stdioConn) skip(line []byte) {
	c.strays.Add(1)
	st := &strayLine{text: strings.ToValidUTF8(string(line[:min(len(line), strayKeep)]), "?"), cut: len(line) > strayKeep}
	c.lastStray.Store(st)
	if c.stray != nil {
		c.stray(st)
	}
}

// strayLine is what is kept of a line that was not JSON-RPC: its first
// strayKeep bytes, and whether that is all of it.
type strayLine struct {
	text string
	cut  bool
}

// strayKeep bounds what is kept of a line that is not JSON-RPC, and
// strayMax what is shown of it once redacted (cut after redaction, so that
// no cut leaves part of a secret to be shown).
const (
	strayKeep = 4 << 10
	strayMax  = 256
)

// shown is the line as logs and errors show it: redacted (a value the
// keeping cut split included, see responseLimit.redact), then cut.
func (st *strayLine) shown(redact func(s string, cut bool) string) string {
	s := st.text
	if redact != nil {
		s = redact(s, st.cut)
	}
	return strings.ToValidUTF8(truncate(s, strayMax), "")
}

// withStray adds to err, which ends the session, the last line the child
// wrote on stdout that was not JSON-RPC, if no message came after it: a
// child that printed only that and exited says so.
func (c *stdioConn) withStray(err error) error {
	st := c.lastStray.Load()
	if st == nil {
		return err
	}
	return fmt.Errorf("%w (last line on stdout that was not JSON-RPC: %q)", err, st.shown(c.redact))
}

// frame returns the next line of the child's output. A last line without a
// newline is returned before the stream's end.
func (c *stdioConn) frame() ([]byte, error) {
	if c.rerr != nil {
		return nil, c.rerr
	}
	b, err := c.r.next(c.r)
	if err != nil {
		select {
		case <-c.closed:
			err = io.EOF // we closed it: the stream ended, as the SDK reports it
		default:
		}
		c.rerr = err
		if len(bytes.TrimSpace(b)) > 0 {
			return b, nil
		}
		return nil, err
	}
	return b, nil
}

// decodeFrame decodes one line: a message, or a batch of them.
func decodeFrame(line []byte) ([]jsonrpc.Message, error) {
	if line[0] != '[' {
		if !completeValue(line) {
			return nil, errors.New("invalid trailing data after a message")
		}
		msg, err := jsonrpc.DecodeMessage(line)
		if err != nil {
			return nil, err
		}
		return []jsonrpc.Message{msg}, nil
	}
	var raws []json.RawMessage
	if err := json.Unmarshal(line, &raws); err != nil {
		return nil, err
	}
	if len(raws) == 0 {
		return nil, errors.New("empty batch")
	}
	msgs := make([]jsonrpc.Message, 0, len(raws))
	for _, raw := range raws {
		msg, err := jsonrpc.DecodeMessage(raw)
		if err != nil {
			return nil, err
		}
		msgs = append(msgs, msg)
	}
	return msgs, nil
}

// completeValue reports whether the JSON object line starts with ends where
// the line ends. The SDK's reader refused data after a message on its line,
// and the decoder (which stops after the first value) would drop it
// silently: a second message on the same line is an error, as it was. It
// does not validate: the decoder does.
func completeValue(line []byte) bool {
	depth := 0
	for i := 0; i < len(line); i++ {
		switch line[i] {
		case '"':
			// Skip the string: to the next quote not escaped, that is
			// not preceded by an odd run of backslashes.
			for {
				j := bytes.IndexByte(line[i+1:], '"')
				if j < 0 {
					return true // unterminated: the decoder reports it
				}
				i += 1 + j
				k := i - 1
				for k >= 0 && line[k] == '\\' {
					k--
				}
				if (i-1-k)%2 == 0 {
					break
				}
			}
		case '{', '[':
			depth++
		case '}', ']':
			if depth--; depth == 0 {
				return i == len(line)-1 // line is trimmed: nothing may follow
			}
		}
	}
	return true // unbalanced: the decoder reports it
}

// isIncomplete reports whether b is the start of a JSON value that more
// input would complete.
func isIncomplete(b []byte) bool {
	dec := json.NewDecoder(bytes.NewReader(b))
	var v json.RawMessage
	return errors.Is(dec.Decode(&v), io.ErrUnexpectedEOF)
}

// Write sends msg as one line.
func (c *stdioConn) Write(ctx context.Context, msg jsonrpc.Message) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if _, ok := msg.(*jsonrpc.Response); ok {
		defer c.childCalls.Add(-1) // answered (or given up)
	}
	data, err := jsonrpc.EncodeMessage(msg)
	if err != nil {
		return fmt.Errorf("marshaling message: %v", err)
	}
	var id jsonrpc.ID
	if req, ok := msg.(*jsonrpc.Request); ok && req.IsCall() {
		id = req.ID
	}
	return c.writeLine(ctx, data, id, 0)
}

// writeLine writes data and a newline in one write, and returns nil once
// they are written, or ctx's error if it ends first.
//
// A child that stops reading its stdin fills the pipe, and the write waits
// for it to read again; so do the writes after it. The caller's wait ends
// with ctx (its call's timeout, or the agent's cancellation), so that no
// call runs past its timeout behind a child's stall. What was written stays
// valid: a write given up before its first byte sends nothing, and one given
// up part way is finished by a goroutine of its own, since whatever came
// next would be read as the rest of its line. It holds the writing turn
// until the child has read it all, or the connection closes (the goroutine
// is bounded: one per connection at a time). If data is a request (id is
// valid, or own > 0 for credgate's own call own), the child is then told it
// is no longer awaited, as the SDK's client does when a call it sent ends
// first: the caller has gone. (own is passed apart so that the common write,
// finished at once, builds no id.)
func (c *stdioConn) writeLine(ctx context.Context, data []byte, id jsonrpc.ID, own int64) error {
	select {
	case c.wsem <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	}
	if err := ctx.Err(); err != nil {
		<-c.wsem
		return err
	}
	c.wbuf = append(append(c.wbuf[:0], data...), '\n')
	n, err := c.write(ctx, c.wbuf)
	if err == nil || ctx.Err() == nil || n == 0 || n == len(c.wbuf) {
		if cap(c.wbuf) > 64<<10 {
			c.wbuf = nil // one large message does not pin its size
		}
		<-c.wsem
		if err != nil && ctx.Err() != nil {
			return ctx.Err()
		}
		return err
	}
	rest := c.wbuf[n:]
	c.wbuf = nil // the goroutine's now
	go func() {
		_, err := c.w.Write(rest)
		<-c.wsem
		if own > 0 {
			id = rawID(own)
		}
		if err == nil && id.IsValid() {
			c.notifyCancelled(id, context.Cause(ctx))
		}
	}()
	return ctx.Err()
}

// write writes b on w, giving up when ctx ends if w has a deadline.
func (c *stdioConn) write(ctx context.Context, b []byte) (int, error) {
	if c.deadline == nil || ctx.Done() == nil {
		return c.w.Write(b)
	}
	n := 0
	if c.raw != nil {
		c.tryB, c.tryN = b, 0
		_ = c.raw.Write(c.tryFn) // an error (closed): the Write below reports it
		n, c.tryB = c.tryN, nil
		if n == len(b) {
			return n, nil
		}
	}
	// The AfterFunc may run after the write returns, even after the next
	// write began: the generation keeps it from cutting that one short.
	gen := c.dlGen // only the writer changes it
	stop := context.AfterFunc(ctx, func() {
		c.dlMu.Lock()
		defer c.dlMu.Unlock()
		if c.dlGen == gen {
			c.dlSet = true
			_ = c.deadline.SetWriteDeadline(time.Now())
		}
	})
	m, err := c.w.Write(b[n:])
	n += m
	if !stop() {
		c.dlMu.Lock()
		c.dlGen++
		if c.dlSet {
			c.dlSet = false
			_ = c.deadline.SetWriteDeadline(time.Time{})
		}
		c.dlMu.Unlock()
	}
	return n, err
}

// Close stops the child (stdin closed, then signals: see childInput) and
// ends a Read waiting for its output.
func (c *stdioConn) Close() error {
	c.closeOnce.Do(func() {
		close(c.closed)
		c.closeErr = c.w.Close()
		if c.stdout != nil {
			// The child has exited and exec has closed stdout, unless
			// something the child started holds it open: then this
			// ends the read.
			_ = c.stdout.SetReadDeadline(time.Now())
		}
		c.end(mcp.ErrConnectionClosed)
	})
	return c.closeErr
}

// end records that the connection ended (closed, or its reading failed) and
// why: credgate's calls waiting for an answer, and later ones, get err.
func (c *stdioConn) end(err error) {
	c.mu.Lock()
	if c.ended {
		c.mu.Unlock()
		return
	}
	c.ended = true
	c.readErr = err
	close(c.readDone)
	f := c.onEnd
	c.mu.Unlock()
	if f != nil {
		f()
	}
}

// onEnded arranges for f to run once the connection has ended (closed or its
// reading failed), at once if it has.
func (c *stdioConn) onEnded(f func()) {
	c.mu.Lock()
	if !c.ended {
		c.onEnd = f
		c.mu.Unlock()
		return
	}
	c.mu.Unlock()
	f()
}

// deliver hands resp to the credgate call it answers, if it answers one,
// and reports whether it did (a late answer to a call given up is dropped).
func (c *stdioConn) deliver(resp *jsonrpc.Response) bool {
	s, ok := resp.ID.Raw().(string)
	if !ok || !strings.HasPrefix(s, rawIDPrefix) {
		return false
	}
	n, err := strconv.ParseInt(s[len(rawIDPrefix):], 10, 64)
	if err != nil {
		return false
	}
	c.handOver(n, func() *jsonrpc.Response { return resp })
	return true
}

// handOver hands call n its answer, made by resp, if the call still waits
// for it (a late answer to a call given up is dropped).
func (c *stdioConn) handOver(n int64, resp func() *jsonrpc.Response) {
	c.mu.Lock()
	ch := c.pending[n]
	delete(c.pending, n)
	c.mu.Unlock()
	if ch != nil {
		ch <- resp() // buffered, and only one answer is delivered
	}
}

// call sends a request of credgate's own (method with params, which must be
// a JSON object or nil) and returns its result's bytes, unparsed. A JSON-RPC
// error answer comes back as *jsonrpc.Error. When ctx ends first, the child
// is told (notifications/cancelled) and ctx's error returned. A connection
// that ended returns an error connectionGone or streamEnded recognizes
// (mcp.ErrConnectionClosed after Close; the read error, io.EOF for a child
// that exited, otherwise).
//
// The responses are read by the SDK's reading goroutine, so call works only
// on a connection the SDK has connected: notifications and requests the child
// sends during the call reach the SDK's handlers as they do for the SDK's
// own calls, in the order they came.
func (c *stdioConn) call(ctx context.Context, method string, params json.RawMessage) (json.RawMessage, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	n := c.next.Add(1)
	ch := make(chan *jsonrpc.Response, 1)
	c.mu.Lock()
	if c.ended {
		err := c.readErr
		c.mu.Unlock()
		return nil, c.endedError(method, err)
	}
	c.pending[n] = ch
	c.mu.Unlock()

	buf := make([]byte, 0, 64+len(method)+len(params))
	buf = append(buf, `{"jsonrpc":"2.0","id":"`+rawIDPrefix...)
	buf = strconv.AppendInt(buf, n, 10)
	buf = append(buf, `","method":`...)
	buf = appendJSONString(buf, method)
	if len(params) > 0 {
		buf = append(buf, `,"params":`...)
		buf = append(buf, params...)
	}
	buf = append(buf, '}')
	if err := c.writeLine(ctx, buf, jsonrpc.ID{}, n); err != nil {
		c.forget(n)
		select {
		case <-c.readDone:
			return nil, c.endedError(method, c.readErr)
		default:
		}
		return nil, fmt.Errorf("calling %q: writing to the child: %w", method, err)
	}
	select {
	case resp := <-ch:
		return rawResult(resp)
	case <-ctx.Done():
		if !c.forget(n) {
			return rawResult(<-ch) // answered meanwhile
		}
		// Off the caller's return path, as the SDK's client sends it (go-sdk
		// issue 1150): a child that stopped reading its stdin, behind another
		// request's write, would hold the call past its timeout. The write
		// ends when the child reads or the connection closes.
		go c.notifyCancelled(rawID(n), context.Cause(ctx))
		return nil, ctx.Err()
	case <-c.readDone:
		select {
		case resp := <-ch: // answered just before the end
			return rawResult(resp)
		default:
		}
		if !c.forget(n) {
			return rawResult(<-ch)
		}
		return nil, c.endedError(method, c.readErr)
	}
}

// forget stops waiting for call n's answer, and reports whether it was still
// awaited (not delivered).
func (c *stdioConn) forget(n int64) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	_, ok := c.pending[n]
	delete(c.pending, n)
	return ok
}

func (c *stdioConn) endedError(method string, err error) error {
	if err == nil {
		err = mcp.ErrConnectionClosed
	}
	return fmt.Errorf("calling %q: %w", method, err)
}

// cancelNoticeWait bounds the wait to tell a child that a call is no longer
// awaited: one that has not read its stdin for that long would not act on it.
const cancelNoticeWait = 5 * time.Second

// notifyCancelled tells the child that call id is no longer awaited, as the
// SDK's client does for its own calls.
func (c *stdioConn) notifyCancelled(id jsonrpc.ID, cause error) {
	reason := "context canceled"
	if cause != nil {
		reason = cause.Error()
	}
	rid, err := json.Marshal(id.Raw())
	if err != nil {
		return
	}
	buf := append([]byte(`{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":`), rid...)
	buf = append(buf, `,"reason":`...)
	buf = appendJSONString(buf, reason)
	buf = append(buf, "}}"...)
	ctx, cancel := context.WithTimeout(context.Background(), cancelNoticeWait)
	defer cancel()
	_ = c.writeLine(ctx, buf, jsonrpc.ID{}, 0)
}

// rawID is the JSON-RPC id of credgate's own call n.
func rawID(n int64) jsonrpc.ID {
	id, _ := jsonrpc.MakeID(rawIDPrefix + strconv.FormatInt(n, 10))
	return id
}

func rawResult(resp *jsonrpc.Response) (json.RawMessage, error) {
	if resp.Error != nil {
		return nil, resp.Error
	}
	return json.RawMessage(resp.Result), nil
}

// appendJSONString appends s as a JSON string.
func appendJSONString(b []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c == '"' || c == '\\' || c >= 0x80 {
			q, _ := json.Marshal(s)
			return append(b, q...)
		}
	}
	b = append(b, '"')
	b = append(b, s...)
	return append(b, '"')
}

// stdioCallTool is rawCallTool for a stdio child: params sent as a
// tools/call on c, cs's connection, by the calling goroutine, the answer
// taken off the stream by the SDK's reading goroutine and decoded once. The
// request is what the SDK would send (the 2026-07-28 per-request _meta, see
// requestMeta); errors are as rawCallTool's: a JSON-RPC error as a
// *jsonrpc.Error, a child that exited as io.EOF (streamEnded), a closed
// connection as mcp.ErrConnectionClosed. Unlike the HTTP fast path it can
// carry a progress token: progress and log messages come on the connection
// the SDK reads, to the client's handlers, as for the SDK's own calls.
func (u *upstream) stdioCallTool(ctx context.Context, c *stdioConn, cs *mcp.ClientSession, params *mcp.CallToolParams) (*mcp.CallToolResult, error) {
	body := c.plainCall(cs, params)
	if body == nil {
		var err error
		if body, err = c.encodeCall(cs, params); err != nil {
			return nil, fmt.Errorf("tools/call: %w", err)
		}
	}
	result, err := c.call(ctx, "tools/call", body)
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err() // as the SDK's client returns it (and rawCallTool)
		}
		return nil, err
	}
	if len(result) == 0 {
		return nil, errors.New("tools/call: the answer has neither a result nor an error")
	}
	if fastStreamFrom(ctx) != nil {
		if res := u.gw.passThrough(u, cs, result); res != nil {
			return res, nil // the fast path's writer sends its bytes
		}
	}
	// The SDK's own decoding, without encoding/json's validating pass
	// first: the bytes are one JSON value, no deeper than the SDK's bound
	// (the message's decoder, or ownAnswer and jsonDepthOK, saw to it); one
	// that is not valid JSON fails the call here.
	var res mcp.CallToolResult
	if err := res.UnmarshalJSON(result); err != nil {
		c.flood.count(dropBadAnswer)
		return nil, fmt.Errorf("tools/call: upstream %q answered with a result that is not valid JSON-RPC (%w)", u.name, inputFree(err))
	}
	if res.InputRequests != nil {
		u.wire.sawInputRequests(result)
	}
	return &res, nil
}

// encodeCall returns the params of a tools/call as the SDK's client would
// send them on cs: the arguments never null, the 2026-07-28 per-request
// _meta added to the call's own (requestMeta).
func (c *stdioConn) encodeCall(cs *mcp.ClientSession, params *mcp.CallToolParams) ([]byte, error) {
	p := *params
	if p.Arguments == nil {
		p.Arguments = map[string]any{} // as the SDK sends it
	}
	if meta := c.requestMeta(cs); len(meta) > 0 {
		m := make(mcp.Meta, len(p.Meta)+len(meta))
		for k, v := range p.Meta {
			m[k] = v
		}
		for k, v := range meta {
			if _, ok := m[k]; !ok {
				m[k] = v
			}
		}
		p.Meta = m
	}
	return json.Marshal(&p)
}

// plainCall is encodeCall for the common call, written without encoding
// the params' types: no _meta of its own, no input responses, and the
// arguments as the agent sent them (JSON, already checked when the
// agent's request was read) or none. It returns nil for any other call.
func (c *stdioConn) plainCall(cs *mcp.ClientSession, params *mcp.CallToolParams) []byte {
	if len(params.Meta) > 0 || params.InputResponses != nil || params.RequestState != "" {
		return nil
	}
	args := []byte("{}")
	switch a := params.Arguments.(type) {
	case nil:
	case json.RawMessage:
		t := bytes.TrimSpace(a)
		if len(t) > 0 && (t[0] != '{' || bytes.ContainsAny(t, "\r\n")) {
			// Not an object, or one spanning lines (which the child's
			// line framing cannot carry): encoded as the SDK would.
			return nil
		}
		if len(t) > 0 {
			args = t
		}
	default:
		return nil
	}
	c.requestMeta(cs)
	b := make([]byte, 0, len(c.metaJSON)+len(params.Name)+len(args)+32)
	b = append(b, '{')
	b = append(b, c.metaJSON...)
	b = append(b, `"name":`...)
	b = appendJSONString(b, params.Name)
	b = append(b, `,"arguments":`...)
	b = append(b, args...)
	return append(b, '}')
}

// requestMeta returns the _meta keys the SDK's client adds to every request
// of cs (2026-07-28, SEP-2575: protocol version, client info and
// capabilities; none before), encoded. They are fixed for the session, so
// they are taken from the SDK (PrepareToolCall) once and kept.
func (c *stdioConn) requestMeta(cs *mcp.ClientSession) map[string]json.RawMessage {
	c.metaOnce.Do(func() {
		defer func() { c.metaJSON = metaMember(c.meta) }()
		p, _ := cs.PrepareToolCall(&mcp.CallToolParams{})
		for _, k := range []string{mcp.MetaKeyProtocolVersion, mcp.MetaKeyClientInfo, mcp.MetaKeyClientCapabilities} {
			if v, ok := p.Meta[k]; ok {
				if b, err := json.Marshal(v); err == nil {
					if c.meta == nil {
						c.meta = map[string]json.RawMessage{}
					}
					c.meta[k] = b
				}
			}
		}
	})
	return c.meta
}

// metaMember returns meta written as the first member of a JSON object
// (`"_meta":{...},`, keys in order), or nil for none.
func metaMember(meta map[string]json.RawMessage) []byte {
	if len(meta) == 0 {
		return nil
	}
	b := []byte(`"_meta":{`)
	for i, k := range slices.Sorted(maps.Keys(meta)) {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendJSONString(b, k)
		b = append(b, ':')
		b = append(b, meta[k]...)
	}
	return append(b, "},"...)
}
