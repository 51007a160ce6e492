package gateway

// The agent half of the fast path (issue 12): a plain tools/call POST on
// /mcp answered by the gateway's own handler, not the SDK's server.
//
// The SDK's streamable server hands a POST from the HTTP goroutine to the
// session's connection, from its reader to a goroutine of its own per
// request, and the answer back to the HTTP goroutine, which writes it as an
// SSE stream: three hand-offs and a fresh goroutine (whose stack grows on
// every call) per request. Here the HTTP goroutine decodes the request once,
// runs the same receiving middlewares (agent policy and rate limits,
// request counting, log levels, unlisted names) and the same call path, and
// writes the answer. A call's log messages and the upstream's requests
// (sampling, elicitation) travel on the call's own answer, which turns into
// an SSE stream when the first of them comes (fastStream); the agent's
// answers to those requests, and its cancellation of a fast call, are
// picked off the POSTs that carry them.
//
// What it does not take goes to the SDK untouched, before anything is
// written: batches, other methods, progress tokens, agents speaking the
// 2026-07-28 protocol, input responses, traced requests
// (the SDK path carries the spans), a session not yet initialized.

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/modelcontextprotocol/go-sdk/auth"
	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	"github.com/modelcontextprotocol/go-sdk/mcp"
	json "github.com/segmentio/encoding/json"
)

// fastVersions are the protocol versions the fast path serves.
var fastVersions = map[string]bool{"2025-11-25": true, "2025-06-18": true, "2025-03-26": true}

// maxFastBody bounds what the fast path reads of a request; a larger one
// goes to the SDK, which has its own bound.
const maxFastBody = 1 << 20

// fastCalls are the fast calls in flight and the requests they sent to
// their agents, by session and JSON-RPC id.
type fastCalls struct {
	ids     atomic.Int64
	pending atomic.Int64 // len(asks), read without the lock
	running atomic.Int64 // len(calls), read without the lock
	mu      sync.Mutex
	calls   map[fastKey]fastCall
	// sdk are the requests in flight that the front passed to the SDK, so
	// that an id is in flight once per session whichever path serves it
	// (each path refuses a duplicate of its own).
	// Each holds whether its agent cancelled it (sdkAnswerFilter).
	sdk  map[fastKey]*atomic.Bool
	asks map[fastKey]chan *rawMessage
	// bySession are the requests the SDK serves, by agent session id, so
	// that a DELETE of the session ends them as it ends its fast calls
	// (the SDK lets them run to their end).
	bySession map[string]map[int64]sdkRequest
	// ending are the sessions (id and agent, as in fastKey) whose DELETE is
	// under way: a request the SDK serves that comes meanwhile is ended at
	// once, or the SDK's DELETE, which waits for it, could hang on it.
	ending map[[2]string]int
}

// fastCall is a fast call in flight: its end, and a channel closed once it
// has ended.
type fastCall struct {
	cancel context.CancelCauseFunc
	done   chan struct{}
}

// sdkRequest is a request the SDK serves: its end, its agent (as in
// fastKey), and a channel closed once its handler has returned.
type sdkRequest struct {
	cancel context.CancelCauseFunc
	user   string
	done   chan struct{}
}

// fastKey names a fast call, or a request one sent its agent: the session,
// the JSON-RPC id, and the agent (the user of its credentials, "" without
// authentication), so that only the session's own agent can answer or
// cancel, as the SDK checks for any request on a session.
type fastKey struct{ session, id, user string }

// requestUser is the user of r's credentials, "" without authentication.
func requestUser(r *http.Request) string {
	if ti := auth.TokenInfoFromContext(r.Context()); ti != nil {
		return ti.UserID
	}
	return ""
}

// active reports whether a fast call is in flight or waiting on its agent.
func (f *fastCalls) active() bool { return f.running.Load() > 0 || f.pending.Load() > 0 }

func newFastCalls() *fastCalls {
	return &fastCalls{calls: map[fastKey]fastCall{}, sdk: map[fastKey]*atomic.Bool{}, asks: map[fastKey]chan *rawMessage{},
		bySession: map[string]map[int64]sdkRequest{}, ending: map[[2]string]int{}}
}

// endWithSession is the middleware that lets a DELETE of an agent's
// session end the session's requests the SDK serves (a call with a
// progress token, a prompts/get, ...), upstream too, as it ends its fast
// calls (fastDelete).
func (g *Server) endWithSession(next mcp.MethodHandler) mcp.MethodHandler {
	return func(ctx context.Context, method string, req mcp.Request) (mcp.Result, error) {
		sid := ""
		if ss, ok := req.GetSession().(*mcp.ServerSession); ok && ss != nil {
			sid = ss.ID()
		}
		if sid == "" || strings.HasPrefix(method, "notifications/") {
			return next(ctx, method, req)
		}
		ctx, cancel := context.WithCancelCause(ctx)
		defer cancel(nil)
		user := ""
		if ti := req.GetExtra().TokenInfo; ti != nil {
			user = ti.UserID
		}
		f := g.fast
		n := f.ids.Add(1)
		f.mu.Lock()
		calls := f.bySession[sid]
		if calls == nil {
			calls = map[int64]sdkRequest{}
			f.bySession[sid] = calls
		}
		done := make(chan struct{})
		calls[n] = sdkRequest{cancel, user, done}
		ending := f.ending[[2]string{sid, user}] > 0
		f.mu.Unlock()
		if ending {
			cancel(errSessionDeleted)
		}
		defer func() {
			f.mu.Lock()
			delete(calls, n)
			if len(f.bySession[sid]) == 0 {
				delete(f.bySession, sid)
			}
			f.mu.Unlock()
			close(done)
		}()
		return next(ctx, method, req)
	}
}

// bufPool holds request bodies and answers being built.
var bufPool = sync.Pool{New: func() any { return new(bytes.Buffer) }}

// fastFront serves /mcp: plain tools/calls itself, everything else by sdk.
func (g *Server) fastFront(sdk *mcp.StreamableHTTPHandler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodDelete {
			g.fastDelete(w, r, sdk)
			return
		}
		if r.Method != http.MethodPost {
			sdk.ServeHTTP(w, r)
			return
		}
		headersOK := postHeaders(r)
		fast := g.config().fastPath() && g.tracing == nil && headersOK && sessionProtocol(r)
		sid := r.Header.Get("Mcp-Session-Id")
		sessionless := sid == "" && !g.config().Stateless && sessionProtocol(r)
		// The agent's answers to what fast calls asked it, and its
		// cancellations of them, are looked for while any is in flight,
		// whatever the config says now (a reload may have turned the fast
		// path off under them) and whatever the request's version header.
		routed := sid != "" && headersOK && g.fast.active()
		// Every request is read, on either path, for its id (inexactID).
		buf := bufPool.Get().(*bytes.Buffer)
		buf.Reset()
		defer func() {
			if buf.Cap() <= 64<<10 {
				bufPool.Put(buf)
			}
		}()
		n, err := buf.ReadFrom(io.LimitReader(r.Body, maxFastBody+1))
		limit := int64(maxFastBody)
		if err == nil && n > maxFastBody && isBatch(buf.Bytes()) {
			// A batch is read whole, up to the SDK's own bound, so that
			// its size is checked (malformedMessage) whatever its length:
			// one over 1 MiB went to the SDK unchecked.
			var more int64
			more, err = buf.ReadFrom(io.LimitReader(r.Body, maxPeek+1-n))
			n, limit = n+more, maxPeek
		}
		body := buf.Bytes()
		read := err == nil && n <= limit
		if read && sessionless && refuseSessionless(w, body) {
			return
		}
		if read && routed && g.fastRoute(w, sid, requestUser(r), body) {
			return
		}
		if err != nil || n > maxFastBody || !fast || !g.fastServe(w, r, sdk, body) {
			var id json.RawMessage
			var method string
			if read {
				id, method = agentRequestID(body)
				if refuseInexactBatch(w, body) {
					return
				}
			}
			if inexactID(id) != "" {
				writeBadID(w, id)
				return
			}
			if read && headersOK {
				if code, msg := malformedMessage(body, r.Header.Get("Mcp-Protocol-Version")); code != 0 {
					writeMalformed(w, code, msg)
					return
				}
			}
			// A request the SDK serves, with an id a fast call of the
			// session has in flight, or the other way round, is a
			// duplicate the SDK cannot see.
			if key := (fastKey{sid, string(id), requestUser(r)}); sid != "" && validID(id) {
				cancelled := g.fast.registerSDK(key)
				if cancelled == nil {
					writeDuplicate(w, key.id)
					return
				}
				defer g.fast.unregisterSDK(key)
				if method != "initialize" { // which cannot be cancelled (the SDK ignores it)
					w = &sdkAnswerFilter{ResponseWriter: w, id: id, cancelled: cancelled}
				}
			} else if read && sid != "" {
				if reqID := cancelledID(body); reqID != nil {
					// Marked before the SDK ends the request, so that the
					// answer it then writes is held back.
					g.fast.cancelSDK(fastKey{sid, string(reqID), requestUser(r)})
				}
			}
			// Not for the fast path: the SDK reads the body as it came.
			r.Body = struct {
				io.Reader
				io.Closer
			}{io.MultiReader(bytes.NewReader(bytes.Clone(body)), r.Body), r.Body}
			sdk.ServeHTTP(w, r)
		}
	})
}

// isBatch reports whether body starts a JSON array: a JSON-RPC batch.
func isBatch(body []byte) bool {
	return bytes.HasPrefix(bytes.TrimLeft(body, " \t\r\n"), []byte("["))
}

// sessionProtocol reports whether r's protocol has sessions: 2025-11-25 or
// older (a request without the version header is 2025-03-26's, per the
// spec); 2026-07-28 agents need none.
func sessionProtocol(r *http.Request) bool {
	v := r.Header.Get("Mcp-Protocol-Version")
	return v == "" || fastVersions[v]
}

// refuseSessionless answers, on a stateful endpoint, a request other than
// initialize that came without a session id: 400, as the spec says a server
// that requires sessions SHOULD answer (the SDK would start a session for
// it and refuse the request inside it). It reports whether it answered;
// bodies that do not parse are the SDK's to answer.
func refuseSessionless(w http.ResponseWriter, body []byte) bool {
	trimmed := bytes.TrimLeft(body, " \t\r\n")
	if len(trimmed) == 0 {
		return false
	}
	var id json.RawMessage
	switch trimmed[0] {
	case '{':
		var env rawMessage
		if agentJSON(body, &env) != nil || env.Method == "" || env.Method == "initialize" {
			return false
		}
		id = bytes.TrimSpace(env.ID)
	case '[':
		// A batch (before 2025-06-18) the same way, unless it initializes
		// (found trying the gateway from outside: the SDK answered its
		// calls with code 0 and no session check). Its answer has no id.
		var batch []rawMessage
		if agentJSON(body, &batch) != nil || !slices.ContainsFunc(batch, func(m rawMessage) bool { return m.Method != "" }) ||
			slices.ContainsFunc(batch, func(m rawMessage) bool { return m.Method == "initialize" }) {
			return false
		}
	default:
		return false
	}
	if len(id) == 0 {
		id = []byte("null")
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusBadRequest)
	_, _ = fmt.Fprintf(w, `{"jsonrpc":"2.0","id":%s,"error":{"code":%d,"message":"Bad Request: no Mcp-Session-Id header; initialize a session first and send its id with every request"}}`, id, jsonrpc.CodeInvalidRequest)
	return true
}

// errSessionDeleted ends the calls of a session its agent deleted.
var errSessionDeleted = fmt.Errorf("the agent ended its session: %w", context.Canceled)

// fastDelete serves an agent's DELETE of its session (by sdk) and, once the
// session is gone, cancels the session's calls upstream, on either path;
// they end without an answer, which no session is left to take.
func (g *Server) fastDelete(w http.ResponseWriter, r *http.Request, sdk *mcp.StreamableHTTPHandler) {
	sid, user := r.Header.Get("Mcp-Session-Id"), requestUser(r)
	if sid == "" || !g.deletable(sdk, r) {
		sdk.ServeHTTP(w, r) // the SDK refuses it, and nothing ends
		return
	}
	mine := func(k fastKey) bool { return k.session == sid && k.user == user }
	// First the session's calls, and they are waited for (a while): the
	// SDK's DELETE waits for the requests it serves (it hung until a call
	// without an end had one), and it closes the agent's own upstream
	// sessions (session: per_agent), which a fast call's cancellation
	// must still reach (the upstream ran the call to its end). Requests
	// the SDK serves that come meanwhile end at once (endWithSession).
	key := [2]string{sid, user}
	g.fast.mu.Lock()
	g.fast.ending[key]++
	g.fast.mu.Unlock()
	defer func() {
		g.fast.mu.Lock()
		if g.fast.ending[key]--; g.fast.ending[key] <= 0 {
			delete(g.fast.ending, key)
		}
		g.fast.mu.Unlock()
	}()
	ended := g.fast.endSession(sid, user, mine)
	t := time.NewTimer(deleteDrain)
wait:
	for _, done := range ended {
		select {
		case <-done:
		case <-t.C:
			break wait
		}
	}
	t.Stop()
	sw := &statusRecorder{ResponseWriter: w}
	sdk.ServeHTTP(sw, r)
	if sw.status >= 300 {
		return
	}
	// The fast calls that came meanwhile: each registered before it
	// looked the session up (fastServe), so none is missed.
	g.fast.endSession(sid, user, mine)
}

// deletable reports whether the SDK will take r, a DELETE, ending a
// session: it names one of the agent's sessions, with a protocol version
// the SDK knows. The session's calls are ended only then, before the SDK
// looks (a DELETE it refuses ends nothing).
func (g *Server) deletable(sdk *mcp.StreamableHTTPHandler, r *http.Request) bool {
	if v := r.Header.Get("Mcp-Protocol-Version"); v != "" && !slices.Contains(mcp.SupportedProtocolVersions(), v) {
		return false
	}
	ss, release := sdk.AcquireSession(discardResponse{}, r)
	if ss == nil {
		return false
	}
	release()
	return true
}

// discardResponse is an http.ResponseWriter that keeps nothing.
type discardResponse struct{}

func (discardResponse) Header() http.Header         { return http.Header{} }
func (discardResponse) Write(b []byte) (int, error) { return len(b), nil }
func (discardResponse) WriteHeader(int)             {}

// deleteDrain bounds how long a DELETE waits for the session's fast calls
// to end once cancelled.
const deleteDrain = 2 * time.Second

// endSession cancels the requests the SDK serves for the agent user on
// session sid, and the fast calls fast picks; it returns the channels they
// close when they end.
func (f *fastCalls) endSession(sid, user string, fast func(fastKey) bool) []chan struct{} {
	if sid == "" {
		return nil
	}
	var ended []context.CancelCauseFunc
	var done []chan struct{}
	f.mu.Lock()
	for _, c := range f.bySession[sid] {
		if c.user == user {
			// Waited for too: its handler returns once its upstream
			// call has told the upstream it ended, which with session:
			// per_agent must happen before the SDK's DELETE closes the
			// agent's upstream session (a loaded run found the upstream
			// running the call on).
			ended = append(ended, c.cancel)
			done = append(done, c.done)
		}
	}
	for k, c := range f.calls {
		if fast(k) {
			ended = append(ended, c.cancel)
			done = append(done, c.done)
		}
	}
	for k, cancelled := range f.sdk {
		if k.session == sid && k.user == user {
			cancelled.Store(true) // no answer, as for a fast call (sdkAnswerFilter)
		}
	}
	f.mu.Unlock()
	for _, cancel := range ended {
		cancel(errSessionDeleted)
	}
	return done
}

// statusRecorder remembers the status code written through it.
type statusRecorder struct {
	http.ResponseWriter
	status int
}

func (s *statusRecorder) WriteHeader(code int) {
	if s.status == 0 {
		s.status = code
	}
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusRecorder) Write(b []byte) (int, error) {
	if s.status == 0 {
		s.status = http.StatusOK
	}
	return s.ResponseWriter.Write(b)
}

func (s *statusRecorder) Unwrap() http.ResponseWriter { return s.ResponseWriter }

// postHeaders reports whether r's headers pass the SDK's checks of a POST:
// a JSON body, and answers accepted as JSON and as an SSE stream.
func postHeaders(r *http.Request) bool {
	ct, _, _ := strings.Cut(r.Header.Get("Content-Type"), ";")
	if !strings.EqualFold(strings.TrimSpace(ct), "application/json") {
		return false
	}
	jsonOK, streamOK := false, false
	for _, value := range r.Header.Values("Accept") { // as the SDK reads it
		for _, token := range strings.Split(value, ",") {
			base, _, _ := strings.Cut(token, ";")
			switch strings.ToLower(strings.TrimSpace(base)) {
			case "application/json", "application/*":
				jsonOK = true
			case "text/event-stream", "text/*":
				streamOK = true
			case "*/*":
				jsonOK, streamOK = true, true
			}
		}
	}
	return jsonOK && streamOK
}

// fastServe answers body if the fast path takes it, and reports whether it
// did; if not, nothing was written.
func (g *Server) fastServe(w http.ResponseWriter, r *http.Request, sdk *mcp.StreamableHTTPHandler, body []byte) bool {
	trimmed := bytes.TrimLeft(body, " \t\r\n")
	if len(trimmed) == 0 || trimmed[0] != '{' {
		return false // a batch
	}
	stateless := g.config().Stateless
	sid := r.Header.Get("Mcp-Session-Id")
	if !stateless && sid == "" {
		return false
	}
	if !bytes.Contains(body, []byte(`"tools/call"`)) {
		return false
	}
	var env rawMessage
	if agentJSON(body, &env) != nil || env.JSONRPC != "2.0" || env.Method != "tools/call" || !validID(env.ID) {
		return false
	}
	if stateless && g.perAgentUpstreams() {
		// Without a session the SDK gives each request one of its own, and
		// a per_agent upstream a session (and child) for it; the fast path
		// has none to key them on.
		return false
	}
	var params mcp.CallToolParamsRaw
	if len(env.Params) == 0 || agentJSON(env.Params, &params) != nil {
		return false
	}
	if params.InputResponses != nil || params.RequestState != "" || !fastMeta(params.Meta) {
		return false
	}
	if !g.catalog.hasTool(params.Name) && g.snap.Load().routes.Lookup(params.Name) == nil {
		return false // the SDK answers unknown names, or unlisted finds their owner
	}
	// An agent that goes away has not cancelled its call (the spec: a
	// disconnection SHOULD NOT be taken as cancellation), so the call runs
	// on as the SDK's does; only notifications/cancelled and DELETE end it.
	ctx, cancel := context.WithCancelCause(context.WithoutCancel(r.Context()))
	defer cancel(nil)
	key := fastKey{sid, string(bytes.TrimSpace(env.ID)), requestUser(r)}
	var ss *mcp.ServerSession
	if !stateless {
		// Registered before the session is looked up: a DELETE of the
		// session either finds the call (and cancels it) or came first
		// (and the lookup answers 404).
		if !g.fast.register(key, cancel) {
			writeDuplicate(w, key.id)
			return true
		}
		defer g.fast.unregister(key)
		var release func()
		if ss, release = sdk.AcquireSession(w, r); ss == nil {
			return true // answered: no such session, or not the agent's
		}
		defer release()
		ip := ss.InitializeParams()
		if ip == nil || !fastVersions[ip.ProtocolVersion] {
			return false
		}
	}
	g.fastCall(ctx, w, r, ss, key, env.ID, &params)
	return true
}

// writeDuplicate answers a request whose id (its JSON text) is in flight on
// the session, as the SDK answers one.
func writeDuplicate(w http.ResponseWriter, id string) {
	writeInvalid(w, invalidRequest(nil, []byte(id), "duplicate in-flight request ID "+strings.Trim(id, `"`)))
}

// invalidRequest appends to b the answer to the request of id (its JSON
// text): a JSON-RPC invalid request error (-32600) saying msg.
func invalidRequest(b, id []byte, msg string) []byte {
	data, _ := json.Marshal(&jsonrpc.Error{Code: jsonrpc.CodeInvalidRequest, Message: msg})
	b = append(b, `{"jsonrpc":"2.0","id":`...)
	b = append(b, id...)
	b = append(b, `,"error":`...)
	b = append(b, data...)
	return append(b, '}')
}

// writeInvalid sends answer (invalidRequest's, or an array of them) with
// 400, as the SDK answers a request it refuses.
func writeInvalid(w http.ResponseWriter, answer []byte) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusBadRequest)
	_, _ = w.Write(answer)
}

// sdkAnswerFilter is the response of a request the SDK serves: it holds
// back the request's answer once its agent has cancelled it, as JSON-RPC
// asks of the receiver of a cancellation, and as the fast path does. The
// SDK answered -32603 "context canceled", which the TypeScript client
// reports as a response to an unknown id (found trying the gateway from
// outside: a call with a progress token, then cancelled). The stream still
// ends once the SDK has written the answer. The SDK writes each SSE event,
// or a JSON answer, in one Write.
type sdkAnswerFilter struct {
	http.ResponseWriter
	id        json.RawMessage
	cancelled *atomic.Bool
}

func (w *sdkAnswerFilter) Write(b []byte) (int, error) {
	if w.cancelled.Load() && answersID(b, w.id) {
		return len(b), nil
	}
	return w.ResponseWriter.Write(b)
}

func (w *sdkAnswerFilter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// answersID reports whether b, an SSE event or a JSON body, is the answer
// (a result or an error) to the request of id.
func answersID(b []byte, id json.RawMessage) bool {
	data := b
	if i := bytes.Index(b, []byte("data: ")); i >= 0 && !bytes.HasPrefix(bytes.TrimSpace(b), []byte("{")) {
		data = b[i+len("data: "):]
		if j := bytes.IndexByte(data, '\n'); j >= 0 {
			data = data[:j]
		}
	}
	var env struct {
		ID     json.RawMessage `json:"id"`
		Method string          `json:"method"`
		Result json.RawMessage `json:"result"`
		Error  json.RawMessage `json:"error"`
	}
	if agentJSON(bytes.TrimSpace(data), &env) != nil || env.Method != "" || (env.Result == nil && env.Error == nil) {
		return false
	}
	return bytes.Equal(bytes.TrimSpace(env.ID), id)
}

// cancelledID returns the requestId of body's notifications/cancelled as
// its JSON text, or nil if body is not one (a notification: "jsonrpc"
// 2.0, no id). Both paths read cancellations with it: fastRoute for fast
// calls, the front for the requests the SDK serves.
func cancelledID(body []byte) json.RawMessage {
	if !bytes.Contains(body, []byte(`"notifications/cancelled"`)) {
		return nil
	}
	var n struct {
		JSONRPC string          `json:"jsonrpc"`
		ID      json.RawMessage `json:"id"`
		Method  string          `json:"method"`
		Params  struct {
			RequestID json.RawMessage `json:"requestId"`
		} `json:"params"`
	}
	if agentJSON(bytes.TrimSpace(body), &n) != nil || n.JSONRPC != "2.0" || n.Method != "notifications/cancelled" || len(n.ID) != 0 {
		return nil
	}
	id := bytes.TrimSpace(n.Params.RequestID)
	if len(id) == 0 {
		return nil
	}
	return id
}

// malformedMessage reports why body, a POST's, is not one JSON-RPC message
// (or a batch, which the SDK reads): -32700 for JSON that does not parse,
// -32600 for JSON that is no request, notification or response, or for a
// batch at protocol 2025-06-18 or later (version, the request's
// MCP-Protocol-Version). It returns
// 0 for a body the SDK may take (a message, an older batch). The SDK answered these with a text/plain
// 400 ("malformed payload: ..."), and took {"jsonrpc":"2.0","id":2} for an
// answer to nothing (202); the spec lets the 400 carry a JSON-RPC error
// with no id, and agents read that (found trying the gateway from outside).
func malformedMessage(body []byte, version string) (code int64, msg string) {
	trimmed := bytes.TrimSpace(body)
	if !jsonDepthOK(trimmed) {
		return jsonrpc.CodeInvalidRequest, fmt.Sprintf("Invalid Request: JSON nested deeper than %d objects and arrays", maxJSONDepth)
	}
	if !json.Valid(trimmed) {
		return jsonrpc.CodeParseError, "Parse error: the body is not valid JSON"
	}
	if len(trimmed) > 0 && trimmed[0] == '[' {
		if len(bytes.TrimSpace(trimmed[1:len(trimmed)-1])) == 0 {
			return jsonrpc.CodeInvalidRequest, "Invalid Request: an empty batch"
		}
		var members []json.RawMessage
		_ = agentJSON(trimmed, &members) // valid JSON, checked above
		if n := len(members); n > MaxBatch {
			// The SDK runs a batch's requests all at once and holds every
			// answer until the last: one 4 MiB body of 35,000 calls took
			// the gateway to 1.8 GB (found trying the gateway from outside).
			return jsonrpc.CodeInvalidRequest, fmt.Sprintf("Invalid Request: a batch of %d messages; at most %d are served in one", n, MaxBatch)
		}
		if version >= "2025-06-18" {
			// As the SDK refuses it, but as JSON-RPC asks (it answered text/plain).
			return jsonrpc.CodeInvalidRequest, "Invalid Request: JSON-RPC batches are not supported in protocol 2025-06-18 and later (this request's MCP-Protocol-Version: " + version + "); send each message in a POST of its own"
		}
		// Each member is checked as a message alone is (the SDK answered
		// some text/plain and took others for answers to nothing); the
		// batch is refused whole, as one with a bad id is.
		for i, m := range members {
			if m = bytes.TrimSpace(m); len(m) == 0 || m[0] != '{' {
				return jsonrpc.CodeInvalidRequest, fmt.Sprintf("Invalid Request: batch member %d is not a JSON-RPC message (a JSON object)", i)
			}
			if code, msg := malformedMessage(m, version); code != 0 {
				return code, fmt.Sprintf("%s (batch member %d)", msg, i)
			}
		}
		return 0, ""
	}
	var env struct {
		JSONRPC *string         `json:"jsonrpc"`
		Method  *string         `json:"method"`
		ID      json.RawMessage `json:"id"`
		Result  json.RawMessage `json:"result"`
		Error   json.RawMessage `json:"error"`
	}
	if len(trimmed) == 0 || trimmed[0] != '{' || agentJSON(trimmed, &env) != nil {
		return jsonrpc.CodeInvalidRequest, "Invalid Request: the body is not a JSON-RPC message (a JSON object with its members' types)"
	}
	id := bytes.TrimSpace(env.ID)
	switch {
	case env.JSONRPC == nil || *env.JSONRPC != "2.0":
		return jsonrpc.CodeInvalidRequest, `Invalid Request: "jsonrpc" must be "2.0"`
	case len(id) > 0 && (id[0] == '{' || id[0] == '[' || id[0] == 't' || id[0] == 'f'):
		return jsonrpc.CodeInvalidRequest, `Invalid Request: "id" must be a string or an integer`
	case string(id) == "null" && env.Method != nil:
		return jsonrpc.CodeInvalidRequest, `Invalid Request: a request's "id" must not be null (leave it out for a notification)`
	case env.Method != nil:
		if *env.Method == "" {
			return jsonrpc.CodeInvalidRequest, `Invalid Request: "method" is empty`
		}
	case len(env.ID) == 0 || (env.Result == nil && env.Error == nil):
		return jsonrpc.CodeInvalidRequest, `Invalid Request: neither a request ("method") nor a response ("id" with "result" or "error")`
	}
	return 0, ""
}

// MaxBatch bounds the messages of one JSON-RPC batch (agents before
// 2025-06-18 may send them; the SDKs do not).
const MaxBatch = 16

// writeMalformed answers a body malformedMessage refused: 400 with a
// JSON-RPC error whose id is null.
func writeMalformed(w http.ResponseWriter, code int64, msg string) {
	data, _ := json.Marshal(&jsonrpc.Error{Code: code, Message: msg})
	b := append([]byte(`{"jsonrpc":"2.0","id":null,"error":`), data...)
	writeInvalid(w, append(b, '}'))
}

// agentRequestID returns the id of body's request as its JSON text, and
// its method; a nil id if body is not one request (a batch, a
// notification, an answer).
func agentRequestID(body []byte) (json.RawMessage, string) {
	trimmed := bytes.TrimLeft(body, " \t\r\n")
	if len(trimmed) == 0 || trimmed[0] != '{' {
		return nil, ""
	}
	var env struct {
		ID     json.RawMessage `json:"id"`
		Method string          `json:"method"`
	}
	if agentJSON(body, &env) != nil || env.Method == "" {
		return nil, ""
	}
	return bytes.TrimSpace(env.ID), env.Method
}

// maxExactID is the largest integer id the SDK echoes exactly: it reads
// numeric ids as float64 and answers with them as int64, so 1.5 came back
// as 1 and 2^53+1 as 2^53 (and 2^63 as -2^63), which no client can match.
const maxExactID = 1 << 53

// inexactID says why the SDK would answer id with another one (see
// maxExactID), or "" if it would echo it (a string, an integer up to 2^53,
// or one written with an exponent such as 1e3).
func inexactID(id json.RawMessage) string {
	if len(id) == 0 || (id[0] != '-' && (id[0] < '0' || id[0] > '9')) {
		return "" // a string, null, or not an id at all: the SDK's to answer
	}
	if n, err := strconv.ParseInt(string(id), 10, 64); err == nil {
		if n < -maxExactID || n > maxExactID {
			return idBeyond
		}
		return ""
	}
	// A fraction, an exponent, or an integer beyond int64.
	f, err := strconv.ParseFloat(string(id), 64)
	switch {
	case err != nil && !errors.Is(err, strconv.ErrRange):
		return ""
	case f != math.Trunc(f):
		return "is not an integer (MCP request ids are strings or integers)"
	case math.Abs(f) < maxExactID: // 1e3, 1.0
		return ""
	}
	return idBeyond
}

const idBeyond = "is beyond 2^53, which the gateway cannot echo exactly: use a string or a smaller integer"

// refuseInexactBatch answers a batch (before 2025-06-18) holding a request
// whose id the SDK would answer with another (inexactID), and reports
// whether it did: each of its requests gets -32600 with its id as sent,
// the batch being refused whole, as the SDK refuses one it cannot serve.
func refuseInexactBatch(w http.ResponseWriter, body []byte) bool {
	trimmed := bytes.TrimLeft(body, " \t\r\n")
	if len(trimmed) == 0 || trimmed[0] != '[' {
		return false
	}
	var batch []struct {
		ID     json.RawMessage `json:"id"`
		Method string          `json:"method"`
	}
	if agentJSON(body, &batch) != nil {
		return false
	}
	var badID json.RawMessage
	for _, m := range batch {
		if id := bytes.TrimSpace(m.ID); m.Method != "" && inexactID(id) != "" {
			badID = id
			break
		}
	}
	if badID == nil {
		return false
	}
	b := []byte{'['}
	for _, m := range batch {
		id := bytes.TrimSpace(m.ID)
		if m.Method == "" || len(id) == 0 {
			continue // an answer or a notification: nothing to say
		}
		msg := badIDMessage(id)
		if inexactID(id) == "" {
			msg = "not served: the batch also holds a request with the invalid id " + string(badID) + " (it " + inexactID(badID) + ")"
		}
		if len(b) > 1 {
			b = append(b, ',')
		}
		b = invalidRequest(b, id, msg)
	}
	writeInvalid(w, append(b, ']'))
	return true
}

// badIDMessage says why id, which inexactID refuses, is refused.
func badIDMessage(id json.RawMessage) string {
	return "invalid request id " + string(id) + ": it " + inexactID(id)
}

// writeBadID answers a request whose id the gateway could not echo
// (inexactID), with that id as it came.
func writeBadID(w http.ResponseWriter, id json.RawMessage) {
	writeInvalid(w, invalidRequest(nil, id, badIDMessage(id)))
}

// register records the fast call key, ended by cancel, and reports whether
// it did: false if a request of that key is in flight, on either path.
func (f *fastCalls) register(key fastKey, cancel context.CancelCauseFunc) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.inFlight(key) {
		return false
	}
	f.calls[key] = fastCall{cancel, make(chan struct{})}
	f.running.Store(int64(len(f.calls)))
	return true
}

// registerSDK records a request the SDK serves, as register does.
// registerSDK records a request the SDK serves, unless one of key is in
// flight on either path; it returns the flag its agent's cancellation sets,
// nil for a duplicate.
func (f *fastCalls) registerSDK(key fastKey) *atomic.Bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.inFlight(key) {
		return nil
	}
	cancelled := new(atomic.Bool)
	f.sdk[key] = cancelled
	return cancelled
}

// cancelSDK marks the request the SDK serves of key as cancelled by its
// agent, if there is one.
func (f *fastCalls) cancelSDK(key fastKey) {
	f.mu.Lock()
	if c := f.sdk[key]; c != nil {
		c.Store(true)
	}
	f.mu.Unlock()
}

// inFlight reports whether a request of key is in flight on either path;
// f.mu is held.
func (f *fastCalls) inFlight(key fastKey) bool {
	_, fast := f.calls[key]
	_, sdk := f.sdk[key]
	return fast || sdk
}

func (f *fastCalls) unregisterSDK(key fastKey) {
	f.mu.Lock()
	delete(f.sdk, key)
	f.mu.Unlock()
}

func (f *fastCalls) unregister(key fastKey) {
	f.mu.Lock()
	if c, ok := f.calls[key]; ok {
		close(c.done)
		delete(f.calls, key)
	}
	f.running.Store(int64(len(f.calls)))
	f.mu.Unlock()
}

// fastRoute delivers body to the fast call it is for, if it is one: the
// agent's answer to a request the call sent it, or its cancellation of the
// call. It reports whether it did (and answered the POST).
func (g *Server) fastRoute(w http.ResponseWriter, sid, user string, body []byte) bool {
	trimmed := bytes.TrimLeft(body, " \t\r\n")
	if len(trimmed) == 0 || trimmed[0] != '{' {
		return false // a batch
	}
	// An answer is looked for first: its content may hold any string.
	if g.fast.pending.Load() > 0 && bytes.Contains(body, []byte(`"`+rawIDPrefix)) && g.fastAnswer(w, sid, user, body) {
		return true
	}
	id := cancelledID(body)
	return id != nil && g.fastCancel(w, sid, user, id)
}

// perAgentUpstreams reports whether an upstream in force has
// session: per_agent.
func (g *Server) perAgentUpstreams() bool {
	for _, u := range g.ups() {
		if u.cfg.Session == SessionPerAgent {
			return true
		}
	}
	return false
}

// validID reports whether raw is a JSON-RPC request id the fast path
// takes: a string without escapes, or an integer of at most 15 digits
// without a fraction or exponent. Those the SDK echoes byte for byte, and
// their text names them in fastKey; other ids (1.5, 1e2, "\u0041", beyond
// 2^53) go to the SDK, which answers them in its own way.
func validID(raw json.RawMessage) bool {
	raw = bytes.TrimSpace(raw)
	if len(raw) >= 2 && raw[0] == '"' {
		return bytes.IndexByte(raw, '\\') < 0
	}
	digits := raw
	if len(digits) > 0 && digits[0] == '-' {
		digits = digits[1:]
	}
	if len(digits) == 0 || len(digits) > 15 || (digits[0] == '0' && len(raw) > 1) {
		return false
	}
	for _, c := range digits {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

// agentJSON decodes an agent's message as the SDK's server does: object
// keys match struct fields exactly ("Method" is not "method"), and nothing
// nested deeper than the SDK takes (maxJSONDepth).
func agentJSON(data []byte, v any) error {
	if !jsonDepthOK(data) {
		return errJSONTooDeep
	}
	_, err := json.Parse(data, v, json.DontMatchCaseInsensitiveStructFields)
	return err
}

// upstreamJSON decodes an upstream's message (rawcall.go), refusing what
// nests deeper than the SDK's client takes, as it refuses it.
func upstreamJSON(data []byte, v any) error {
	if !jsonDepthOK(data) {
		return errJSONTooDeep
	}
	return inputFree(json.Unmarshal(data, v))
}

// inputFree returns a JSON decoding error without the input it quotes: the
// decoder's errors quote a piece of what it read, cut short, and a secret
// an upstream echoed there (a key in an error string) would no longer be
// found whole by redaction (found trying the gateway from outside: 16
// characters of a token reached an agent's failure detail).
func inputFree(err error) error {
	if err == nil {
		return nil // no allocation on the way of every answer (errors.As's targets escape)
	}
	return inputFreeErr(err)
}

//go:noinline
func inputFreeErr(err error) error {
	var te *json.UnmarshalTypeError
	var se *json.SyntaxError
	switch {
	case errors.As(err, &te):
		where := te.Field
		if where == "" {
			where = te.Type.String()
		}
		return fmt.Errorf("json: a value of the wrong type at %s (offset %d)", where, te.Offset)
	case errors.As(err, &se):
		return fmt.Errorf("json: not valid JSON at offset %d", se.Offset)
	default:
		return errors.New("json: not a valid message")
	}
}

// maxJSONDepth is the deepest nesting of objects and arrays the SDK
// decodes (its internal/json): the decoder recurses once per level, so a
// 1 MiB body of "[" grows a goroutine's stack by about 256 MB, and 2.5
// million levels (a 5 MB answer) overflow its 1 GB limit, which is fatal.
const maxJSONDepth = 1000

var errJSONTooDeep = fmt.Errorf("json: exceeded maximum nesting depth of %d", maxJSONDepth)

// jsonDepthOK reports whether data nests at most maxJSONDepth objects and
// arrays deep, scanning it as the SDK does (strings skipped).
func jsonDepthOK(data []byte) bool {
	depth, inString, escaped := 0, false, false
	for _, b := range data {
		if inString {
			switch {
			case escaped:
				escaped = false
			case b == '\\':
				escaped = true
			case b == '"':
				inString = false
			}
			continue
		}
		switch b {
		case '"':
			inString = true
		case '{', '[':
			if depth++; depth > maxJSONDepth {
				return false
			}
		case '}', ']':
			if depth > 0 {
				depth--
			}
		}
	}
	return true
}

// fastMeta reports whether a call's _meta allows the fast path: no progress
// token (progress goes the SDK's way) and no per-request protocol keys.
func fastMeta(m mcp.Meta) bool {
	for k := range m {
		if k == "progressToken" || strings.HasPrefix(k, reservedMetaPrefix) {
			return false
		}
	}
	return true
}

// fastCall runs one tools/call through the gateway's receiving middlewares
// and call path, and writes its answer.
func (g *Server) fastCall(ctx context.Context, w http.ResponseWriter, r *http.Request, ss *mcp.ServerSession, key fastKey, id json.RawMessage, params *mcp.CallToolParamsRaw) {
	fs := &fastStream{w: w, g: g, session: key.session, ss: ss, user: key.user}
	ctx = context.WithValue(ctx, fastStreamKey{}, fs)
	req := &mcp.CallToolRequest{Session: ss, Params: params, Extra: &mcp.RequestExtra{TokenInfo: auth.TokenInfoFromContext(r.Context()), Header: r.Header}}
	res, err := g.fastChain(ctx, "tools/call", req)
	if cause := context.Cause(ctx); errors.Is(cause, errAgentCancelled) || errors.Is(cause, errSessionDeleted) {
		// No answer: the agent cancelled the call, or the session it
		// would belong to is gone.
		fs.abandon()
	} else {
		fs.finish(id, res, err)
	}
	fs.mu.Lock()
	deferred := fs.deferred
	fs.mu.Unlock()
	if len(deferred) > 0 {
		// Out now: net/http would hold the answer until the handler returns.
		_ = http.NewResponseController(w).Flush()
	}
	for _, f := range deferred {
		f()
	}
}

// fastTool is the end of the fast path's middleware chain: what the SDK's
// server does for tools/call (find the tool, call its handler, never answer
// null content), with the gateway's per-call binding (toolHandler).
func (g *Server) fastTool(ctx context.Context, method string, req mcp.Request) (mcp.Result, error) {
	r := req.(*mcp.CallToolRequest)
	name := r.Params.Name
	if !g.catalog.hasTool(name) && g.snap.Load().routes.Lookup(name) == nil {
		return nil, &jsonrpc.Error{Code: jsonrpc.CodeInvalidParams, Message: fmt.Sprintf("unknown tool %q", name)}
	}
	res, err := g.toolHandler(name)(ctx, r)
	if err == nil && res != nil && res.Content == nil {
		out := *res
		out.Content = []mcp.Content{} // as the SDK: never "null"
		res = &out
	}
	return res, err
}

// fastInputRounds is what the SDK's server does for an agent older than
// 2026-07-28 when a result asks for input (a 2026-07-28 upstream's, passed
// through): it asks the agent for it and calls again with the answers,
// once. The fast path serves only such agents.
func (g *Server) fastInputRounds(next mcp.MethodHandler) mcp.MethodHandler {
	return func(ctx context.Context, method string, req mcp.Request) (mcp.Result, error) {
		res, err := next(ctx, method, req)
		r, ok := res.(*mcp.CallToolResult)
		if err != nil || !ok || r == nil || r.InputRequests == nil {
			return res, err
		}
		call := req.(*mcp.CallToolRequest)
		if call.Session == nil {
			// Stateless: a 2026-07-28 agent gets the request, and answers
			// it in its next call. An older one cannot read it, and there
			// is no session to ask it on: it gets why, typed (as on the
			// SDK's path), not a result it cannot read.
			if v := agentProtocol(nil, call.Extra); v < protocol20260728 {
				return nil, fmt.Errorf("credgate: the upstream asked for input (%s), and a stateless gateway cannot ask a %s agent for it: there is no session to send the request on (agents on protocol 2026-07-28 answer it in their next call)",
					inputMethods(r.InputRequests), cmp.Or(v, "2025-03-26"))
			}
			return res, nil
		}
		if len(r.InputRequests) == 0 {
			return nil, errors.New("the server is busy, retry later")
		}
		if len(r.Content) > 0 {
			return nil, &jsonrpc.Error{Code: jsonrpc.CodeInternalError, Message: "server bug: result has both content and inputRequests"}
		}
		answers, err := call.Session.FulfillInputRequests(ctx, r.InputRequests)
		if err != nil {
			return nil, err
		}
		p := *call.Params
		p.InputResponses, p.RequestState = answers, r.RequestState
		return next(ctx, method, &mcp.CallToolRequest{Session: call.Session, Params: &p, Extra: call.Extra})
	}
}

// inputMethods lists the methods of a result's input requests, sorted.
func inputMethods(reqs mcp.InputRequestMap) string {
	var ms []string
	for _, r := range reqs {
		m := "input"
		switch r.(type) {
		case *mcp.ElicitParams:
			m = "elicitation/create"
		case *mcp.CreateMessageParams, *mcp.CreateMessageWithToolsParams:
			m = "sampling/createMessage"
		case *mcp.ListRootsParams:
			m = "roots/list"
		}
		if !slices.Contains(ms, m) {
			ms = append(ms, m)
		}
	}
	slices.Sort(ms)
	return strings.Join(ms, ", ")
}

// toAgent is the sending middleware of the gateway's MCP server, for the
// requests it sends an agent (elicitation, sampling, roots), whether for an
// upstream's server-to-client request or for the input a 2026-07-28
// upstream's result asks for:
//   - a request for a capability the agent did not declare fails at once,
//     as the SDK's Elicit does for elicitation (its sampling requests go
//     out regardless, and an agent may never answer them);
//   - a request in the context of a fast call goes on the call's own
//     answer stream, as the SDK sends a request related to one it serves;
//     without this it would go to the agent's standalone GET stream, which
//     the agent may not have opened yet.
func (g *Server) toAgent(next mcp.MethodHandler) mcp.MethodHandler {
	return func(ctx context.Context, method string, req mcp.Request) (mcp.Result, error) {
		var res mcp.Result
		switch method {
		case "elicitation/create":
			res = new(mcp.ElicitResult)
		case "sampling/createMessage":
			res = new(mcp.CreateMessageWithToolsResult)
		case "roots/list":
			res = new(mcp.ListRootsResult)
		default: // notifications, pings: as the SDK sends them
			return next(ctx, method, req)
		}
		if ss, ok := req.GetSession().(*mcp.ServerSession); ok {
			if err := agentCan(ss, method, req.GetParams()); err != nil {
				return nil, err
			}
		}
		if err := g.redactRequest(req); err != nil {
			return nil, err
		}
		olderForm(req)
		fs := fastStreamFrom(ctx)
		if fs == nil {
			return next(ctx, method, req)
		}
		if err := fs.ask(ctx, method, req.GetParams(), res); err != nil {
			return nil, err
		}
		return res, nil
	}
}

// olderForm takes the "mode" of a form elicitation out of a request to an
// agent older than 2025-11-25, whose schema has no such member: the SDK's
// Elicit writes "mode":"form" into every form request, where the upstream,
// talked to directly, sends none to such an agent.
func olderForm(req mcp.Request) {
	r, ok := req.(*mcp.ServerRequest[mcp.Params]) // as the SDK's Elicit makes it
	if !ok {
		return
	}
	ep, ok := r.Params.(*mcp.ElicitParams)
	if !ok || ep == nil || ep.Mode != "form" {
		return
	}
	if p := agentProtocol(r.Session, r.Extra); p == "" || p >= "2025-11-25" {
		return
	}
	p := *ep
	p.Mode = ""
	r.Params = &p
}

// agentCan reports, as an error, that the agent of ss did not declare the
// capability a request of method with params p needs (inputNeed).
func agentCan(ss *mcp.ServerSession, method string, p mcp.Params) error {
	if method == "roots/list" {
		return nil // asked only of agents that declared them (roots.go)
	}
	if need := inputNeed(clientCaps(ss), p); need != "" {
		return fmt.Errorf("credgate: the agent does not support %s (it did not declare the %s capability)", method, need)
	}
	return nil
}

// fastStreamKey is the context key of a fast call's answer stream.
type fastStreamKey struct{}

// fastStreamFrom returns the answer stream of the fast call ctx belongs to,
// or nil.
func fastStreamFrom(ctx context.Context) *fastStream {
	fs, _ := ctx.Value(fastStreamKey{}).(*fastStream)
	return fs
}

// fastStream is a fast call's answer: a JSON body, or, once a message has
// to go to the agent before it, an SSE stream.
type fastStream struct {
	g       *Server
	session string
	ss      *mcp.ServerSession // the agent's session; nil when stateless
	user    string             // the agent's (see fastKey)
	mu      sync.Mutex
	w       http.ResponseWriter
	sse     bool // the stream started
	done    bool // the answer was written
	// deferred runs after the answer was written: the end of the upstream's
	// answer stream, read so that its connection is reused (rawcall.go).
	deferred []func()
	// call is the call in flight upstream (forward), whose waits for the
	// agent do not count against the upstream's timeout.
	call atomic.Pointer[inflight]
}

// later runs f once the call's answer was written.
func (fs *fastStream) later(f func()) {
	fs.mu.Lock()
	fs.deferred = append(fs.deferred, f)
	fs.mu.Unlock()
}

// send writes one message to the agent on the stream, starting it if
// needed. It fails once the answer was written.
func (fs *fastStream) send(msg []byte) error {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	if fs.done {
		return errors.New("credgate: the call has been answered")
	}
	fs.start()
	return fs.event(msg)
}

func (fs *fastStream) start() {
	if fs.sse {
		return
	}
	fs.sse = true
	h := fs.w.Header()
	h.Set("Cache-Control", "no-cache, no-transform")
	h.Set("Content-Type", "text/event-stream")
	h.Set("Connection", "keep-alive")
	fs.w.WriteHeader(http.StatusOK)
}

func (fs *fastStream) event(msg []byte) error {
	b := bufPool.Get().(*bytes.Buffer)
	b.Reset()
	b.WriteString("event: message\ndata: ")
	b.Write(msg)
	b.WriteString("\n\n")
	_, err := fs.w.Write(b.Bytes())
	bufPool.Put(b)
	if err == nil {
		err = http.NewResponseController(fs.w).Flush()
	}
	return err
}

// abandon ends the answer of a call its agent cancelled without a JSON-RPC
// message: the receiver of a cancellation SHOULD NOT answer the request
// (it answered -32603 "context canceled", which the TypeScript client
// reports as a response to an unknown id). The stream ends empty.
func (fs *fastStream) abandon() {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	fs.done = true
	fs.start()
}

// errAgentCancelled ends a fast call its agent cancelled
// (notifications/cancelled).
var errAgentCancelled = fmt.Errorf("the agent cancelled the call: %w", context.Canceled)

// finish writes the call's answer.
func (fs *fastStream) finish(id json.RawMessage, res mcp.Result, err error) {
	if r, ok := res.(*mcp.CallToolResult); ok && r == nil {
		res = nil
	}
	b := bufPool.Get().(*bytes.Buffer)
	b.Reset()
	defer bufPool.Put(b)
	b.WriteString(`{"jsonrpc":"2.0","id":`)
	b.Write(bytes.TrimSpace(id))
	var passed []byte
	if r, ok := res.(*mcp.CallToolResult); ok && err == nil && r != nil {
		passed, res, err = passedBytes(r)
	}
	if passed != nil {
		b.WriteString(`,"result":`)
		b.Write(passed)
	} else if err == nil && res != nil {
		data, merr := json.Marshal(res)
		if merr == nil {
			b.WriteString(`,"result":`)
			b.Write(data)
		} else {
			err = merr
		}
	} else if err == nil {
		err = errors.New("credgate: no result")
	}
	if err != nil {
		data, _ := json.Marshal(wireError(err))
		b.WriteString(`,"error":`)
		b.Write(data)
	}
	b.WriteByte('}')
	fs.mu.Lock()
	defer fs.mu.Unlock()
	fs.done = true
	if fs.sse {
		_ = fs.event(b.Bytes())
		return
	}
	h := fs.w.Header()
	h["Cache-Control"] = headerNoCache
	h["Content-Type"] = headerJSON
	h["Content-Length"] = []string{strconv.Itoa(b.Len())}
	fs.w.WriteHeader(http.StatusOK)
	_, _ = fs.w.Write(b.Bytes())
}

// wireError is err as the SDK's JSON-RPC layer puts a handler's error
// (coded by legacyResults) on the wire: a *jsonrpc.Error as it is; any
// other error with its own message and the code of a *jsonrpc.Error it
// wraps, or -32603.
func wireError(err error) *jsonrpc.Error {
	if e, ok := err.(*jsonrpc.Error); ok {
		return withCode(e)
	}
	out := &jsonrpc.Error{Code: jsonrpc.CodeInternalError, Message: err.Error()} // as coded
	var wrapped *jsonrpc.Error
	if errors.As(err, &wrapped) && wrapped.Code != 0 {
		out.Code = wrapped.Code
	}
	return out
}

// notifyLog sends a log message to the agent of a fast call, filtered by
// the level its session asked for as the SDK's ServerSession.Log does.
func (fs *fastStream) notifyLog(ss *mcp.ServerSession, p *mcp.LoggingMessageParams) {
	if !fs.g.wantsLog(ss, p.Level) {
		return
	}
	msg, err := json.Marshal(struct {
		JSONRPC string                    `json:"jsonrpc"`
		Method  string                    `json:"method"`
		Params  *mcp.LoggingMessageParams `json:"params"`
	}{"2.0", "notifications/message", p})
	if err == nil {
		_ = fs.send(msg)
	}
}

// wantsLog reports whether agent session ss (nil: a stateless fast call)
// is sent a log message of level: when the level it set (a stateless
// request's is info, as the SDK sets it; on a session that set none, the
// SDK sends nothing) is met.
func (g *Server) wantsLog(ss *mcp.ServerSession, level mcp.LoggingLevel) bool {
	lvl := mcp.LoggingLevel("info")
	if l, ok := g.logLevels.Load(ss); ok && ss != nil {
		lvl = l.(mcp.LoggingLevel)
	} else if ss != nil && !g.config().Stateless {
		return false
	}
	return logSeverity(level) >= logSeverity(lvl)
}

// logSeverity orders the MCP log levels (RFC 5424, least severe first).
func logSeverity(l mcp.LoggingLevel) int {
	switch l {
	case "debug":
		return 0
	case "info":
		return 1
	case "notice":
		return 2
	case "warning":
		return 3
	case "error":
		return 4
	case "critical":
		return 5
	case "alert":
		return 6
	case "emergency":
		return 7
	}
	return -1
}

// ask sends a request to the agent of a fast call on the call's stream and
// waits for its answer, which arrives on a POST of its own (fastAnswer).
func (fs *fastStream) ask(ctx context.Context, method string, params any, result any) error {
	id := rawIDPrefix + strconv.FormatInt(fs.g.fast.ids.Add(1), 10)
	msg, err := json.Marshal(struct {
		JSONRPC string `json:"jsonrpc"`
		ID      string `json:"id"`
		Method  string `json:"method"`
		Params  any    `json:"params"`
	}{"2.0", id, method, params})
	if err != nil {
		return err
	}
	key := fastKey{fs.session, strconv.Quote(id), fs.user}
	ch := make(chan *rawMessage, 1)
	f := fs.g.fast
	f.mu.Lock()
	f.asks[key] = ch
	f.pending.Store(int64(len(f.asks)))
	f.mu.Unlock()
	defer func() {
		f.mu.Lock()
		delete(f.asks, key)
		f.pending.Store(int64(len(f.asks)))
		f.mu.Unlock()
	}()
	if err := fs.send(msg); err != nil {
		return err
	}
	select {
	case m := <-ch:
		if m.Error != nil {
			return m.Error
		}
		return json.Unmarshal(m.Result, result)
	case <-ctx.Done():
		return ctx.Err()
	}
}

// fastAnswer delivers an agent's answer to a request a fast call sent it,
// and reports whether body was one.
func (g *Server) fastAnswer(w http.ResponseWriter, sid, user string, body []byte) bool {
	var env rawMessage
	if agentJSON(body, &env) != nil || env.Method != "" || len(env.ID) == 0 {
		return false
	}
	key := fastKey{sid, string(bytes.TrimSpace(env.ID)), user}
	g.fast.mu.Lock()
	ch, ok := g.fast.asks[key]
	g.fast.mu.Unlock()
	if !ok {
		return false
	}
	select {
	case ch <- &rawMessage{ID: env.ID, Result: bytes.Clone(env.Result), Error: env.Error}:
	default: // answered twice: the first holds
	}
	w.WriteHeader(http.StatusAccepted)
	return true
}

// fastCancel ends the fast call of request id its agent cancelled, and
// reports whether there was one.
func (g *Server) fastCancel(w http.ResponseWriter, sid, user string, id json.RawMessage) bool {
	g.fast.mu.Lock()
	c, ok := g.fast.calls[fastKey{sid, string(id), user}]
	g.fast.mu.Unlock()
	if !ok {
		return false
	}
	c.cancel(errAgentCancelled)
	w.WriteHeader(http.StatusAccepted)
	return true
}
