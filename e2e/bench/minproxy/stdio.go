package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// stdioProxy is the proxy for a stdio upstream: many agent sessions over
// streamable HTTP, one child process on stdin/stdout.
//
//	agent sessions ──POST──► serve ──id n──► stdin  (one writer at a time)
//	               ◄─JSON──        ◄──────── read   (one goroutine, answers by id)
//
// A go-sdk stdio server takes one initialize, so the proxy initializes the
// child itself at start and answers every agent's initialize with the
// child's stored result under the agent's id. Agents' request ids collide
// (every go-sdk client counts from 1), so each request goes to the child
// under a proxy-unique id, and its answer comes back under the agent's.
// There is no standalone stream (GET is 405, which the go-sdk client
// accepts), and messages the child sends on its own (requests,
// notifications) are dropped: the bench's echo server sends none.
type stdioProxy struct {
	cmd *exec.Cmd

	wmu   sync.Mutex // one message at a time on stdin
	stdin io.WriteCloser

	next    atomic.Int64 // the last proxy id used
	pmu     sync.Mutex
	pending map[int64]chan []byte // proxy id -> the waiting request's answer

	smu      sync.Mutex
	sessions map[string]struct{} // the agents' session ids

	init []byte        // the child's initialize result, replayed to every agent
	dead chan struct{} // closed when the child's stdout ends
}

// childProtocol is the protocol version the proxy initializes the child
// with: the bench's load clients' (loadProtocolVersion), so the result it
// replays is what they would have negotiated.
const childProtocol = "2025-11-25"

// initTimeout bounds the child's answer to the proxy's initialize.
const initTimeout = 30 * time.Second

var errChildGone = errors.New("stdio upstream: the child's stdout closed")

// startStdio starts command with env added to this process's environment,
// initializes it, and returns the proxy in front of it. The child's stderr
// goes to stderr.
func startStdio(command string, env map[string]string, stderr io.Writer) (*stdioProxy, error) {
	cmd := exec.Command(command)
	cmd.Env = os.Environ()
	for _, k := range slices.Sorted(maps.Keys(env)) {
		cmd.Env = append(cmd.Env, k+"="+env[k])
	}
	cmd.Stderr = stderr
	// The child dies with the proxy, even when the proxy is killed.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("stdio upstream: %w", err)
	}
	p := &stdioProxy{
		cmd:      cmd,
		stdin:    stdin,
		pending:  map[int64]chan []byte{},
		sessions: map[string]struct{}{},
		dead:     make(chan struct{}),
	}
	go p.read(stdout, stderr)
	if err := p.initialize(); err != nil {
		return nil, errors.Join(err, p.Close())
	}
	return p, nil
}

// initialize makes the child's one handshake and keeps its result.
func (p *stdioProxy) initialize() error {
	ctx, cancel := context.WithTimeout(context.Background(), initTimeout)
	defer cancel()
	req := `{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"` + childProtocol +
		`","capabilities":{},"clientInfo":{"name":"minproxy","version":"bench"}}}`
	ans, err := p.call(ctx, []byte(req))
	if err != nil {
		return fmt.Errorf("stdio upstream: initialize: %w", err)
	}
	var res struct {
		Result json.RawMessage `json:"result"`
		Error  json.RawMessage `json:"error"`
	}
	if err := json.Unmarshal(ans, &res); err != nil {
		return fmt.Errorf("stdio upstream: initialize: %w", err)
	}
	if len(res.Result) == 0 {
		return fmt.Errorf("stdio upstream: initialize: %s", res.Error)
	}
	p.init = res.Result
	return p.write([]byte(`{"jsonrpc":"2.0","method":"notifications/initialized","params":{}}`))
}

// Close stops the child and reaps it, once the reader has seen its stdout
// end (Wait closes the pipe, which the reader would report as an error).
func (p *stdioProxy) Close() error {
	_ = p.stdin.Close()
	_ = p.cmd.Process.Kill()
	select {
	case <-p.dead:
	case <-time.After(5 * time.Second): // a grandchild holds stdout open
	}
	err := p.cmd.Wait()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return nil // killed, as asked
	}
	return err
}

// write sends one message to the child, newline-delimited.
func (p *stdioProxy) write(msg []byte) error {
	p.wmu.Lock()
	defer p.wmu.Unlock()
	_, err := p.stdin.Write(append(msg, '\n'))
	return err
}

// call sends req to the child under a new proxy id and waits for the
// answer, which keeps the proxy's id.
func (p *stdioProxy) call(ctx context.Context, req []byte) ([]byte, error) {
	id := p.next.Add(1)
	out, err := withID(req, strconv.AppendInt(nil, id, 10))
	if err != nil {
		return nil, err
	}
	ch := make(chan []byte, 1)
	p.pmu.Lock()
	p.pending[id] = ch
	p.pmu.Unlock()
	if err := p.write(out); err != nil {
		p.forget(id)
		return nil, err
	}
	select {
	case ans := <-ch:
		return ans, nil
	case <-ctx.Done():
		p.forget(id)
		return nil, ctx.Err()
	case <-p.dead:
		return nil, errChildGone
	}
}

func (p *stdioProxy) forget(id int64) {
	p.pmu.Lock()
	delete(p.pending, id)
	p.pmu.Unlock()
}

// read hands each answer on the child's stdout to the request waiting for
// it, until stdout ends.
func (p *stdioProxy) read(stdout io.Reader, stderr io.Writer) {
	defer close(p.dead)
	defer func() {
		if r := recover(); r != nil {
			fmt.Fprintln(stderr, "minproxy: stdio reader panicked:", r)
		}
	}()
	br := bufio.NewReaderSize(stdout, 64<<10)
	for {
		line, err := br.ReadBytes('\n')
		if id, ok := answerID(line); ok {
			p.pmu.Lock()
			ch := p.pending[id]
			delete(p.pending, id)
			p.pmu.Unlock()
			if ch != nil {
				ch <- line
			}
		}
		if err != nil {
			if !errors.Is(err, io.EOF) {
				fmt.Fprintln(stderr, "minproxy: stdio upstream:", err)
			}
			return
		}
	}
}

// serve is the agents' /mcp.
func (p *stdioProxy) serve(w http.ResponseWriter, r *http.Request) {
	switch r.Method {
	case http.MethodPost:
	case http.MethodDelete:
		id := r.Header.Get(sessionHdr)
		p.smu.Lock()
		_, ok := p.sessions[id]
		delete(p.sessions, id)
		p.smu.Unlock()
		if !ok {
			http.Error(w, "unknown session", http.StatusNotFound)
			return
		}
		w.WriteHeader(http.StatusNoContent)
		return
	default:
		// GET would open the standalone stream, which the proxy does not offer.
		w.Header().Set("Allow", "POST, DELETE")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	b, ok := readRenamed(w, r)
	if !ok {
		return
	}
	var msg struct {
		ID     json.RawMessage `json:"id"`
		Method string          `json:"method"`
	}
	if err := json.Unmarshal(b, &msg); err != nil {
		http.Error(w, "not a JSON-RPC message: "+err.Error(), http.StatusBadRequest)
		return
	}
	if msg.Method == "initialize" {
		var raw [16]byte
		rand.Read(raw[:])
		id := hex.EncodeToString(raw[:])
		p.smu.Lock()
		p.sessions[id] = struct{}{}
		p.smu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set(sessionHdr, id)
		out := make([]byte, 0, len(idPrefix)+len(msg.ID)+len(p.init)+12)
		out = append(append(append(append(append(out, idPrefix...), msg.ID...), `,"result":`...), p.init...), '}')
		w.Write(out)
		return
	}
	sid := r.Header.Get(sessionHdr)
	p.smu.Lock()
	_, ok = p.sessions[sid]
	p.smu.Unlock()
	if !ok {
		http.Error(w, "unknown session", http.StatusNotFound)
		return
	}
	if len(msg.ID) == 0 || msg.Method == "" {
		// A notification (or an answer, to no request of the child's).
		// The child had its notifications/initialized from the proxy; a
		// second one would be an error to it.
		if msg.Method != "" && msg.Method != "notifications/initialized" {
			if err := p.write(b); err != nil {
				http.Error(w, err.Error(), http.StatusBadGateway)
				return
			}
		}
		w.WriteHeader(http.StatusAccepted)
		return
	}
	ans, err := p.call(r.Context(), b)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	out, err := withID(ans, msg.ID)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Write(out)
}

// idPrefix is how go-sdk starts every message that has an id: the fast
// path of withID and answerID, which fall back to decoding otherwise.
var idPrefix = []byte(`{"jsonrpc":"2.0","id":`)

// numericID returns the length of msg's numeric id after idPrefix and what
// follows it, or 0 if msg does not start that way.
func numericID(msg []byte) (n int, rest []byte) {
	after, ok := bytes.CutPrefix(msg, idPrefix)
	if !ok {
		return 0, nil
	}
	for n < len(after) && (after[n] >= '0' && after[n] <= '9' || after[n] == '-') {
		n++
	}
	if n == 0 || n == len(after) || (after[n] != ',' && after[n] != '}') {
		return 0, nil
	}
	return n, after[n:]
}

// withID returns a copy of msg with its top-level id replaced by id (raw
// JSON), with room for one more byte (write's newline).
func withID(msg, id []byte) ([]byte, error) {
	if n, rest := numericID(msg); n > 0 {
		out := make([]byte, 0, len(idPrefix)+len(id)+len(rest)+1)
		return append(append(append(out, idPrefix...), id...), rest...), nil
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(msg, &m); err != nil {
		return nil, err
	}
	m["id"] = id
	return json.Marshal(m)
}

// answerID returns the id of an answer (a result or an error) from the
// child; ok is false for anything else, including the child's own
// requests, whose ids are from another space than the proxy's.
func answerID(line []byte) (id int64, ok bool) {
	if n, rest := numericID(line); n > 0 {
		if bytes.HasPrefix(rest, []byte(`,"result":`)) || bytes.HasPrefix(rest, []byte(`,"error":`)) {
			id, err := strconv.ParseInt(string(line[len(idPrefix):len(idPrefix)+n]), 10, 64)
			return id, err == nil
		}
	}
	var msg struct {
		ID     json.RawMessage `json:"id"`
		Method string          `json:"method"`
	}
	if json.Unmarshal(line, &msg) != nil || msg.Method != "" || len(msg.ID) == 0 {
		return 0, false
	}
	id, err := strconv.ParseInt(string(msg.ID), 10, 64)
	return id, err == nil
}
