package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"sync"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	"github.com/modelcontextprotocol/go-sdk/mcp"
	"github.com/rs/zerolog"

	"github.com/credgate/credgate/gateway"
)

// agentLines copies the agent's stdin to w line by line, leaving out each
// line that is not a JSON-RPC message (or a batch), and a line longer than
// max, with a warning: the SDK's stdio transport ends the session at the
// first such line, losing the answers to the calls in flight, where a
// server talked to directly skips it (found trying the gateway from
// outside: one "garbage line" stopped `gateway stdio`). The line's text is
// not logged: it may hold a secret. w is closed when r ends.
//
// calls, if not nil, bounds the agent's requests that are read and not yet
// answered: past its bound, request lines are held back, in order, until
// answers go out (at most maxHeldLines or maxHeldBytes; past that no
// further line is read meanwhile). The agent's notifications and answers (a
// cancellation, a sampling answer) still pass, ahead of them, and its
// cancellation of a request held back drops that request, unsent.
func agentLines(r io.Reader, w *io.PipeWriter, max int, calls *callGate, log *zerolog.Logger) {
	br := bufio.NewReaderSize(r, 64<<10)
	var line []byte
	var f lineFilter
	var wmu sync.Mutex // one line at a time on w
	write := func(b []byte) error {
		wmu.Lock()
		defer wmu.Unlock()
		_, err := w.Write(b)
		return err
	}
	held := newHeldQueue(calls, write)
	end := func(err error) {
		held.drain()
		_ = w.CloseWithError(err)
	}
	left := 0 // lines left out, for bounded warnings
	leaveOut := func(why string, n int) {
		if left++; left <= 10 || left%100 == 0 { // a flood of bad lines writes a bounded log
			log.Warn().Int("bytes", n).Int("left_out", left).Msg("agent line " + why + "; left out")
		}
	}
	for {
		chunk, err := br.ReadSlice('\n')
		over := len(line)+len(chunk) > max
		if !over {
			line = append(line, chunk...)
		}
		if errors.Is(err, bufio.ErrBufferFull) {
			if over {
				n := len(line) + len(chunk)
				line = line[:0]
				for errors.Is(err, bufio.ErrBufferFull) { // the rest of the line
					var rest []byte
					rest, err = br.ReadSlice('\n')
					n += len(rest)
				}
				leaveOut("longer than the bound", n)
				if err != nil {
					end(err)
					return
				}
			}
			continue
		}
		if over {
			leaveOut("longer than the bound", len(line)+len(chunk))
			line = line[:0]
		} else if msg := bytes.TrimSpace(line); len(msg) > 0 {
			if why, ids := f.refuse(msg); why == "" {
				switch {
				case held.cancelled(msg):
					// The agent cancelled a request held back: it is
					// never sent, nor its cancellation (the SDK would
					// have run it, the cancellation coming first).
				case len(ids) > 0 && !held.pass(ids):
					held.add(ids, bytes.Clone(line)) // behind the others: requests keep their order
				default:
					if write(line) != nil {
						return
					}
				}
			} else {
				leaveOut(why, len(msg))
			}
		}
		line = line[:0]
		if err != nil {
			end(err) // io.EOF: the agent is gone
			return
		}
	}
}

// Bounds of the requests agentLines holds back past the calls' bound: past
// them, it reads no further line until the oldest goes out. One line is
// always taken, however long.
const (
	maxHeldLines = 64
	maxHeldBytes = 4 << 20
)

// heldQueue is the agent's request lines held back until the calls' bound
// lets them pass, in order, and the goroutine that sends them.
type heldQueue struct {
	calls *callGate
	write func([]byte) error
	mu    sync.Mutex
	lines []*heldLine
	bytes int
	room  chan struct{} // a line went: wakes add, waiting for room
	empty chan struct{} // closed when the queue is empty; replaced when it is not
	run   bool          // the sender runs
}

// heldLine is one request line held back.
type heldLine struct {
	ids     []jsonrpc.ID // the requests it holds
	line    []byte
	stop    chan struct{} // closed when it is dropped
	sent    bool          // it is being written: too late to drop it
	written chan struct{} // closed once it is written
}

func newHeldQueue(calls *callGate, write func([]byte) error) *heldQueue {
	q := &heldQueue{calls: calls, write: write, room: make(chan struct{}, 1), empty: make(chan struct{})}
	close(q.empty)
	return q
}

// pass reports whether a request line holding ids may be written now: no
// line is held back (requests keep their order) and ids fit the bound,
// which it then holds for them.
func (q *heldQueue) pass(ids []jsonrpc.ID) bool {
	q.mu.Lock()
	busy := len(q.lines) > 0
	q.mu.Unlock()
	return !busy && q.calls.tryAcquire(ids)
}

// add holds line back, behind the others, first waiting for room.
func (q *heldQueue) add(ids []jsonrpc.ID, line []byte) {
	q.mu.Lock()
	for len(q.lines) > 0 && (len(q.lines) >= maxHeldLines || q.bytes+len(line) > maxHeldBytes) {
		q.mu.Unlock()
		<-q.room
		q.mu.Lock()
	}
	if len(q.lines) == 0 {
		q.empty = make(chan struct{})
	}
	q.lines = append(q.lines, &heldLine{ids: ids, line: line, stop: make(chan struct{}), written: make(chan struct{})})
	q.bytes += len(line)
	if !q.run {
		q.run = true
		go q.send()
	}
	q.mu.Unlock()
}

// send writes the lines held back as the bound lets them pass, and skips
// those dropped, until the queue is empty.
func (q *heldQueue) send() {
	for {
		q.mu.Lock()
		if len(q.lines) == 0 {
			q.run = false
			close(q.empty)
			q.mu.Unlock()
			return
		}
		h := q.lines[0]
		q.mu.Unlock()
		if q.calls.acquire(h.ids, h.stop) {
			q.mu.Lock()
			dropped := false
			select {
			case <-h.stop:
				dropped = true
			default:
				h.sent = true
			}
			q.mu.Unlock()
			if dropped {
				q.calls.release(h.ids) // dropped as its turn came
			} else {
				_ = q.write(h.line)
				close(h.written)
			}
		}
		q.mu.Lock()
		q.lines = q.lines[1:]
		q.bytes -= len(h.line)
		q.mu.Unlock()
		select {
		case q.room <- struct{}{}:
		default:
		}
	}
}

// drain waits until every line held back is written or dropped.
func (q *heldQueue) drain() {
	q.mu.Lock()
	empty := q.empty
	q.mu.Unlock()
	<-empty
}

// cancelled reports whether msg is the agent's cancellation of a request
// held back, alone on its line, and if so drops that request. One being
// written is not dropped: the cancellation waits for the write, or it
// could reach the SDK first, be ignored as naming no request, and the
// request run (review).
func (q *heldQueue) cancelled(msg []byte) bool {
	if msg[0] != '{' || !bytes.Contains(msg, []byte(`notifications/cancelled`)) {
		return false
	}
	dropped, writing := q.cancel(msg)
	if writing != nil {
		<-writing
	}
	return dropped
}

// cancel drops the request msg cancels, if it is held back and not being
// written; if it is being written, it returns a channel closed once it is.
func (q *heldQueue) cancel(msg []byte) (bool, <-chan struct{}) {
	var n struct {
		Method string `json:"method"`
		ID     any    `json:"id"`
		Params struct {
			RequestID any `json:"requestId"`
		} `json:"params"`
	}
	if json.Unmarshal(msg, &n) != nil || n.Method != "notifications/cancelled" || n.ID != nil || n.Params.RequestID == nil {
		return false, nil
	}
	id, err := jsonrpc.MakeID(n.Params.RequestID)
	if err != nil {
		return false, nil
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	for _, h := range q.lines {
		if len(h.ids) != 1 || h.ids[0] != id {
			continue
		}
		if h.sent {
			return false, h.written
		}
		select {
		case <-h.stop:
			continue // dropped already
		default:
			close(h.stop)
			return true, nil
		}
	}
	return false, nil
}

// lineFilter decides which agent lines the SDK's stdio transport can take.
type lineFilter struct {
	noBatches bool // the agent asked for 2025-06-18 or later, which has no batches
}

// refuse says why the SDK's transport would end the session on msg, or ""
// when it takes it: msg must be one JSON value (nothing after it), a
// message the SDK decodes, or a batch it reads (non-empty, every member a
// message, ids unique) from an agent whose protocol has batches. It also
// returns the ids of the requests msg holds, which the SDK answers.
func (f *lineFilter) refuse(msg []byte) (string, []jsonrpc.ID) {
	if !json.Valid(msg) {
		return "that is not JSON", nil
	}
	if msg[0] != '[' {
		m, err := jsonrpc.DecodeMessage(msg)
		if err != nil {
			return "that is not a JSON-RPC message", nil
		}
		var calls []jsonrpc.ID
		if req, ok := m.(*jsonrpc.Request); ok && req.IsCall() {
			calls = []jsonrpc.ID{req.ID}
			if req.Method == "initialize" {
				var p struct {
					ProtocolVersion string `json:"protocolVersion"`
				}
				if json.Unmarshal(req.Params, &p) == nil && p.ProtocolVersion >= "2025-06-18" {
					f.noBatches = true
				}
			}
		}
		return "", calls
	}
	if f.noBatches {
		return "that is a batch, which the agent's protocol does not have", nil
	}
	var members []json.RawMessage
	if json.Unmarshal(msg, &members) != nil || len(members) == 0 {
		return "that is an empty batch", nil
	}
	if len(members) > gateway.MaxBatch {
		// As on /mcp: the SDK runs every member at once and holds every
		// answer (one line of 35,000 calls took the gateway to 600 MB).
		return fmt.Sprintf("that is a batch of %d messages; at most %d are served in one", len(members), gateway.MaxBatch), nil
	}
	var ids []jsonrpc.ID
	for _, raw := range members {
		m, err := jsonrpc.DecodeMessage(raw)
		if err != nil {
			return "that is a batch holding something that is not a JSON-RPC message", nil
		}
		if req, ok := m.(*jsonrpc.Request); ok && req.IsCall() {
			if slices.Contains(ids, req.ID) {
				return "that is a batch with an id twice", nil
			}
			ids = append(ids, req.ID)
		}
	}
	return "", ids
}

// maxAgentCalls bounds the requests of a `gateway stdio` agent that are
// read and not yet answered. Over HTTP each request holds a connection,
// bounded by max_connections; over stdio nothing did: an agent writing
// requests without reading the answers (or faster than they go out) had
// each one read, run and its answer held, without end (3,000 tools/list
// held 2,700 goroutines and their answers, and counting). Past the bound,
// further requests are held back (heldQueue), and past its bounds the
// agent's next line waits in its pipe until answers go out. An agent
// answers the gateway's own requests (sampling, elicitation) on the same
// stdin: one that keeps this many calls open, each waiting on such an
// answer it sends only after a further request, waits on those calls'
// timeouts.
const maxAgentCalls = 128

// callGate holds the ids of the agent's requests in flight (read, not
// answered). Ids, not a count: the SDK leaves a request unanswered whose id
// is one already in flight, and a count would keep its place for good.
type callGate struct {
	mu    sync.Mutex
	ids   map[jsonrpc.ID]struct{}
	freed chan struct{} // a wake-up for acquire: its only waiter is the held lines' sender (heldQueue)
}

func newCallGate() *callGate {
	return &callGate{ids: map[jsonrpc.ID]struct{}{}, freed: make(chan struct{}, 1)}
}

// acquire waits until ids fit the bound (a batch always fits once nothing
// else is in flight), then holds them, or until stop is closed (false).
// An id already in flight is not held again. A nil gate does nothing.
func (g *callGate) acquire(ids []jsonrpc.ID, stop <-chan struct{}) bool {
	for !g.tryAcquire(ids) {
		select {
		case <-g.freed:
		case <-stop:
			return false
		}
	}
	return true
}

// tryAcquire is acquire without the wait: it reports whether ids fit.
func (g *callGate) tryAcquire(ids []jsonrpc.ID) bool {
	if g == nil || len(ids) == 0 {
		return true
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if len(g.ids) != 0 && len(g.ids)+len(ids) > maxAgentCalls {
		return false
	}
	for _, id := range ids {
		g.ids[id] = struct{}{}
	}
	return true
}

// release lets go of the requests ids answer.
func (g *callGate) release(ids []jsonrpc.ID) {
	if len(ids) == 0 {
		return
	}
	g.mu.Lock()
	for _, id := range ids {
		delete(g.ids, id)
	}
	g.mu.Unlock()
	select {
	case g.freed <- struct{}{}:
	default:
	}
}

// answerWriter is the agent's stdout: each write is one message or batch
// from the SDK; the answers it holds free their requests' places in calls
// once written (or once the write failed).
type answerWriter struct {
	w     io.Writer
	calls *callGate
}

func (a answerWriter) Write(p []byte) (int, error) {
	out := codedAnswer(p)
	n, err := a.w.Write(out)
	if err == nil && n == len(out) {
		n = len(p)
	}
	a.calls.release(answered(p))
	return n, err
}

// codedAnswer is p, one message, with an error of code 0 given code -32603
// (internal error), as the gateway gives every error it answers (see
// gateway's coded): a request the agent cancelled before its handler ran
// is answered by the SDK with its context's error, code 0 (found trying
// the gateway from outside).
func codedAnswer(p []byte) []byte {
	if !bytes.Contains(p, []byte(`"code":0`)) {
		return p
	}
	m, err := jsonrpc.DecodeMessage(bytes.TrimSpace(p))
	if err != nil {
		return p
	}
	resp, ok := m.(*jsonrpc.Response)
	if !ok {
		return p
	}
	we, ok := resp.Error.(*jsonrpc.Error)
	if !ok || we.Code != 0 {
		return p
	}
	fixed := *we
	fixed.Code = jsonrpc.CodeInternalError
	resp.Error = &fixed
	out, err := jsonrpc.EncodeMessage(resp)
	if err != nil {
		return p
	}
	if bytes.HasSuffix(p, []byte("\n")) {
		out = append(out, '\n')
	}
	return out
}

func (answerWriter) Close() error { return nil }

// answered returns the ids of the responses in p, one JSON-RPC message or
// a batch.
func answered(p []byte) []jsonrpc.ID {
	p = bytes.TrimSpace(p)
	if len(p) == 0 {
		return nil
	}
	raws := []json.RawMessage{p}
	if p[0] == '[' && json.Unmarshal(p, &raws) != nil {
		return nil
	}
	var ids []jsonrpc.ID
	for _, raw := range raws {
		if m, err := jsonrpc.DecodeMessage(raw); err == nil {
			if resp, ok := m.(*jsonrpc.Response); ok && resp.ID.IsValid() {
				ids = append(ids, resp.ID)
			}
		}
	}
	return ids
}

// stdioFront is the transport of `gateway stdio`: the SDK's, over the
// agent's lines as agentLines passes them.
func stdioFront(stdin io.Reader, stdout io.Writer, log *zerolog.Logger) mcp.Transport {
	pr, pw := io.Pipe()
	calls := newCallGate()
	go agentLines(stdin, pw, mcp.DefaultMaxLineLength, calls, log)
	return &mcp.IOTransport{Reader: pr, Writer: answerWriter{stdout, calls}}
}
