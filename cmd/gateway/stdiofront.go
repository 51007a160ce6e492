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
// answered: past its bound, a request line is held (one at most) until
// answers go out, and no further request is read meanwhile; the agent's
// notifications and answers (a cancellation, a sampling answer) still pass,
// ahead of it.
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
	var held *heldLine // the request line held back; nil for none
	waitHeld := func() {
		if held != nil {
			<-held.done
			held = nil
		}
	}
	end := func(err error) {
		waitHeld()
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
				if held != nil && held.cancelledBy(msg) {
					// The agent cancelled the request held back: it is
					// never sent, nor its cancellation (the SDK would
					// have run it, the cancellation coming first).
					line = line[:0]
					if err != nil {
						end(err)
						return
					}
					continue
				}
				if len(ids) > 0 {
					waitHeld() // requests keep their order
					if !calls.tryAcquire(ids) {
						h := &heldLine{ids: ids, done: make(chan struct{}), stop: make(chan struct{})}
						hold := bytes.Clone(line)
						held = h
						go func() {
							defer close(h.done)
							if !calls.acquire(ids, h.stop) {
								return // dropped while it waited
							}
							if !h.send() {
								calls.release(ids) // dropped as its turn came
								return
							}
							_ = write(hold)
						}()
						line = line[:0]
						if err != nil {
							end(err)
							return
						}
						continue
					}
				}
				if write(line) != nil {
					return
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

// heldLine is a request line agentLines holds back until the bound lets
// it pass.
type heldLine struct {
	ids  []jsonrpc.ID  // the requests it holds
	done chan struct{} // closed once it is written, or dropped
	stop chan struct{} // closed when it is dropped
	mu   sync.Mutex
	sent bool // it is being written: too late to drop it
}

// send reports whether the line may be written (it was not dropped) and
// marks it sent.
func (h *heldLine) send() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	select {
	case <-h.stop:
		return false
	default:
		h.sent = true
		return true
	}
}

// cancelledBy reports whether msg is the agent's cancellation of the one
// request h holds, and if so drops h unless it is being written.
func (h *heldLine) cancelledBy(msg []byte) bool {
	if len(h.ids) != 1 || msg[0] != '{' {
		return false
	}
	var n struct {
		Method string `json:"method"`
		ID     any    `json:"id"`
		Params struct {
			RequestID any `json:"requestId"`
		} `json:"params"`
	}
	if json.Unmarshal(msg, &n) != nil || n.Method != "notifications/cancelled" || n.ID != nil || n.Params.RequestID == nil {
		return false
	}
	id, err := jsonrpc.MakeID(n.Params.RequestID)
	if err != nil || id != h.ids[0] {
		return false
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.sent {
		return false
	}
	select {
	case <-h.stop:
	default:
		close(h.stop)
	}
	return true
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
// the agent's next line waits in its pipe until answers go out. An agent
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
	freed chan struct{} // a wake-up for acquire: its only waiter is agentLines
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
