package gateway

// The upstream half of the fast path (issue 12): a tools/call to a
// streamable-HTTP upstream sent by the gateway itself, on the shared
// session's id, instead of through the SDK's client.
//
// The SDK's client sends a request from one goroutine, reads its answer in
// another, hands it over a channel to a third (the connection's reader) and
// from there to the caller: four hand-offs, each a thread wake-up, and the
// request and answer encoded and decoded more than once. Here the calling
// goroutine writes the POST, reads the answer off the response body and
// decodes it once. What can arrive on that response besides the answer is
// handled as the SDK's client would, by the same functions (newClient's
// handlers): log messages, progress, list changes and resource updates, and
// the upstream's own requests (sampling, elicitation, ping), which are
// answered with a POST of their own.
//
// Only a plain call takes it: the shared session of a streamable-HTTP
// upstream, no progress token. The request is what the SDK would send
// (mcp.ClientSession.PrepareToolCall, the one seam added to the SDK for it:
// the 2026-07-28 per-request _meta and headers). Anything else (per-agent
// and per-credential sessions, the SSE and stdio transports, progress) goes
// through the SDK as before.

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	"github.com/modelcontextprotocol/go-sdk/mcp"
	json "github.com/segmentio/encoding/json"
)

// rawIDPrefix starts the ids of the gateway's own requests: strings, which
// never collide with the SDK client's numeric ids on the same session.
const rawIDPrefix = "cg-"

// rawEligible reports whether a tools/call with params can go to u on cs
// without the SDK's client.
func (u *upstream) rawEligible(cs *mcp.ClientSession, params *mcp.CallToolParams) bool {
	if u.http == nil || u.cfg.Transport != TransportStreamableHTTP || !u.gw.config().fastPath() {
		return false
	}
	if cs != u.current.Load() || cs.InitializeResult() == nil {
		return false // a per-agent or per-credential session
	}
	return params.GetProgressToken() == nil
}

// rawRequest is one tools/call as sent.
type rawRequest struct {
	JSONRPC string              `json:"jsonrpc"`
	ID      string              `json:"id"`
	Method  string              `json:"method"`
	Params  *mcp.CallToolParams `json:"params"`
}

// rawMessage is any JSON-RPC message, as the fast path reads it off an
// answer stream or an agent's POST.
type rawMessage struct {
	JSONRPC string          `json:"jsonrpc"`
	ID      json.RawMessage `json:"id"`
	Method  string          `json:"method"`
	Params  json.RawMessage `json:"params"`
	Result  json.RawMessage `json:"result"`
	Error   *jsonrpc.Error  `json:"error"`
}

// readerPool holds the buffered readers answer streams are read with.
var readerPool = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, 4<<10) }}

// rawCallTool sends params as a tools/call on cs's session and returns the
// upstream's result, or its error as the SDK would (a JSON-RPC error as a
// *jsonrpc.Error, a lost session as mcp.ErrSessionMissing).
func (u *upstream) rawCallTool(ctx context.Context, cs *mcp.ClientSession, params *mcp.CallToolParams) (*mcp.CallToolResult, error) {
	id := rawIDPrefix + strconv.FormatInt(u.rawIDs.Add(1), 10)
	params, header := cs.PrepareToolCall(params)
	body, err := json.Marshal(rawRequest{JSONRPC: "2.0", ID: id, Method: "tools/call", Params: params})
	if err != nil {
		return nil, fmt.Errorf("tools/call: %w", err)
	}
	// The request's own context, ended once its answer stream was read to
	// the end, or given up on (rawDrainGrace).
	rctx, rcancel := context.WithCancel(ctx)
	guard := &drainGuard{}
	resp, err := u.rawPost(context.WithValue(rctx, drainGuardKey{}, guard), cs, body, header)
	var res *mcp.CallToolResult
	if err == nil {
		res, err = u.rawAnswer(ctx, cs, resp, id)
		end := func() {
			// The rest of the stream (the server ends it after the
			// answer), so that its connection goes back to the pool.
			_, _ = io.CopyN(io.Discard, resp.Body, 64<<10)
			_ = resp.Body.Close()
			rcancel()
		}
		graced := func() {
			var t *time.Timer
			arm := func() { t = time.AfterFunc(rawDrainGrace, rcancel) }
			if !guard.lazy {
				arm()
			} else {
				// Armed only if the read must wait for the upstream:
				// usually the end came with the answer.
				guard.arm = arm
			}
			end()
			if t != nil {
				t.Stop()
			}
		}
		if fs := fastStreamFrom(ctx); fs != nil {
			// The agent gets its answer first; the stream's end is read
			// after (fastCall), no longer than rawDrainGrace.
			fs.later(graced)
		} else {
			// A call from the SDK's front: the answer goes back now, as
			// the SDK's client hands it over before the stream ends; an
			// upstream that keeps the stream open would otherwise hold
			// the call until its timeout.
			go graced()
		}
	} else {
		rcancel()
		if ctx.Err() == nil {
			return nil, fmt.Errorf("sending \"tools/call\": %w", err)
		}
	}
	if err != nil && ctx.Err() != nil {
		// The call was cancelled or timed out while the upstream ran it:
		// tell it, as the SDK's client does. Off the return path, but for
		// a call its agent's DELETE ended: the DELETE then closes the
		// agent's own upstream session (session: per_agent), which the
		// notice must reach first (a loaded run left the upstream running
		// the call).
		if errors.Is(context.Cause(ctx), errSessionDeleted) {
			u.rawCancel(ctx, cs, id, context.Cause(ctx).Error())
		} else {
			go u.rawCancel(ctx, cs, id, context.Cause(ctx).Error())
		}
		return nil, ctx.Err() // as the SDK's client returns it
	}
	return res, err
}

// rawAnswer reads the answer to the call id from resp.
func (u *upstream) rawAnswer(ctx context.Context, cs *mcp.ClientSession, resp *http.Response, id string) (*mcp.CallToolResult, error) {
	var msg *rawMessage
	var err error
	switch mt, _, _ := strings.Cut(resp.Header.Get("Content-Type"), ";"); {
	case resp.StatusCode == http.StatusNotFound && cs.ID() != "":
		return nil, fmt.Errorf("sending \"tools/call\": session %s: %w", cs.ID(), mcp.ErrSessionMissing)
	case resp.StatusCode < 200 || resp.StatusCode > 299:
		// An MCP server's own JSON-RPC error answer (see httpTransport).
		data, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
		var m rawMessage
		if upstreamJSON(data, &m) == nil && m.Error != nil {
			return nil, m.Error
		}
		return nil, fmt.Errorf("sending \"tools/call\": %s", http.StatusText(resp.StatusCode))
	case strings.EqualFold(strings.TrimSpace(mt), "application/json"):
		data, err := io.ReadAll(resp.Body)
		if err != nil {
			return nil, fmt.Errorf("tools/call: reading the answer: %w", err)
		}
		var m rawMessage
		if err := upstreamJSON(data, &m); err != nil {
			return nil, fmt.Errorf("tools/call: decoding the answer: %w", err)
		}
		// Only the answer to this call's id is its answer (or an error
		// without an id: the upstream could not read the request). What
		// else comes, an answer left over on a reused connection say,
		// must not be handed to this call's agent.
		if rid := bytes.TrimSpace(m.ID); string(rid) != `"`+id+`"` && (m.Error == nil || (len(rid) > 0 && string(rid) != "null")) {
			return nil, errors.New("tools/call: the upstream's answer is not for this call (another id)")
		}
		msg = &m
	case strings.EqualFold(strings.TrimSpace(mt), "text/event-stream"):
		var end streamEnd
		msg, err = u.rawStream(ctx, cs, resp.Body, id, &end)
		if err == &end {
			msg, err = u.rawResume(ctx, cs, id, &end)
		}
		if err != nil {
			return nil, err
		}
	default:
		return nil, fmt.Errorf("sending \"tools/call\": unsupported content type %q", mt)
	}
	if msg.Error != nil {
		return nil, msg.Error
	}
	if len(msg.Result) == 0 {
		return nil, errors.New("tools/call: the answer has neither a result nor an error")
	}
	if fastStreamFrom(ctx) != nil {
		if res := u.gw.passThrough(u, cs, msg.Result); res != nil {
			return res, nil // the fast path's writer sends its bytes
		}
	}
	var res mcp.CallToolResult
	if err := json.Unmarshal(msg.Result, &res); err != nil {
		return nil, fmt.Errorf("tools/call: decoding the result: %w", inputFree(err))
	}
	if res.InputRequests != nil {
		u.wire.sawInputRequests(msg.Result)
	}
	return &res, nil
}

// Header values the fast path sets on every request and answer, shared
// (a value slice is replaced, never written, by net/http and by credgate).
var (
	headerJSON      = []string{"application/json"}
	headerAcceptMCP = []string{"application/json, text/event-stream"}
	headerNoCache   = []string{"no-cache, no-transform"}
)

// rawPost POSTs one JSON-RPC message on cs's session through u's transport
// (headers, credential, limits, trace context), as the SDK's client would.
func (u *upstream) rawPost(ctx context.Context, cs *mcp.ClientSession, body []byte, header http.Header) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u.cfg.URL, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	if header != nil {
		req.Header = header
	} else if res := cs.InitializeResult(); res != nil && res.ProtocolVersion != "" {
		req.Header["Mcp-Protocol-Version"] = []string{res.ProtocolVersion}
	}
	req.Header["Content-Type"] = headerJSON
	req.Header["Accept"] = headerAcceptMCP
	if sid := cs.ID(); sid != "" {
		req.Header["Mcp-Session-Id"] = []string{sid}
	}
	return u.http.rawDo(req)
}

// rawStream reads an SSE answer stream until the answer to id, handling
// what comes before it.
func (u *upstream) rawStream(ctx context.Context, cs *mcp.ClientSession, body io.Reader, id string, end *streamEnd) (*rawMessage, error) {
	br := readerPool.Get().(*bufio.Reader)
	br.Reset(body)
	defer func() {
		br.Reset(nil)
		readerPool.Put(br)
	}()
	want := `"` + id + `"`
	var data []byte
	limit := u.limit.backstop()
	for {
		line, err := br.ReadSlice('\n')
		if errors.Is(err, bufio.ErrBufferFull) {
			// A long line: gather it whole.
			full := append([]byte(nil), line...)
			for errors.Is(err, bufio.ErrBufferFull) {
				if limit > 0 && len(full) > limit {
					return nil, fmt.Errorf("tools/call: an event exceeded %d bytes", limit)
				}
				line, err = br.ReadSlice('\n')
				full = append(full, line...)
			}
			line = full
		}
		if err != nil && !errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("tools/call: reading the answer stream: %w", err)
		}
		line = bytes.TrimRight(line, "\r\n")
		if len(line) > 0 {
			field, value, _ := bytes.Cut(line, []byte(":"))
			value = bytes.TrimPrefix(value, []byte(" "))
			switch string(field) {
			case "data":
				if len(data) > 0 {
					data = append(data, '\n')
				}
				data = append(data, value...)
				if limit > 0 && len(data) > limit {
					return nil, fmt.Errorf("tools/call: an event exceeded %d bytes", limit)
				}
			case "id":
				end.lastID = string(value)
			case "retry":
				if ms, err := strconv.Atoi(string(value)); err == nil && ms >= 0 {
					end.retry = time.Duration(ms) * time.Millisecond
				}
			}
			if err == nil {
				continue
			}
		}
		// A blank line (or the end) completes an event.
		if len(data) > 0 {
			var m rawMessage
			if jerr := upstreamJSON(data, &m); jerr == nil {
				if m.Method == "" && string(bytes.TrimSpace(m.ID)) == want {
					// What br holds past the answer is the stream's end,
					// which the caller reads from the body.
					_, _ = br.Discard(br.Buffered())
					return &m, nil
				}
				u.rawHandle(ctx, cs, &m)
				end.progress = true
			} else {
				// The SDK's path fails the call alike (responseLimit.unreadable):
				// the upstream may hold the stream open, and the call would
				// wait for its timeout.
				u.flood.count(dropBadAnswer)
				return nil, fmt.Errorf("upstream %q answered with an event that is not a JSON-RPC message", u.name)
			}
			data = data[:0]
		}
		if err != nil {
			return nil, end // the stream ended before the answer
		}
	}
}

// streamEnd is an answer stream that ended before the answer: with an
// event id, the server can send the rest on a new GET stream (resumption;
// SSE polling, SEP-1699), as the SDK's client asks it to.
type streamEnd struct {
	lastID   string        // the last event id seen, "" if none
	retry    time.Duration // the server's requested delay, 0 if none
	progress bool          // an event came on the last stream
}

func (e *streamEnd) Error() string {
	return "tools/call: the upstream ended the answer stream before the answer"
}

// rawResumeMax bounds the resumptions of one answer stream without an event.
const rawResumeMax = 5

// rawResume reads the rest of an answer stream from a GET with
// Last-Event-ID, until the answer, as the SDK's client does.
func (u *upstream) rawResume(ctx context.Context, cs *mcp.ClientSession, id string, end *streamEnd) (*rawMessage, error) {
	idle := 0
	for end.lastID != "" && idle < rawResumeMax {
		delay := end.retry
		if delay <= 0 {
			delay = time.Second
		}
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, ctx.Err()
		case <-t.C:
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.cfg.URL, nil)
		if err != nil {
			return nil, err
		}
		if res := cs.InitializeResult(); res != nil {
			req.Header.Set("Mcp-Protocol-Version", res.ProtocolVersion)
		}
		if sid := cs.ID(); sid != "" {
			req.Header.Set("Mcp-Session-Id", sid)
		}
		req.Header.Set("Last-Event-ID", end.lastID)
		req.Header.Set("Accept", "text/event-stream")
		resp, err := u.http.rawDo(req)
		if err != nil {
			idle++
			continue
		}
		if resp.StatusCode != http.StatusOK {
			_ = resp.Body.Close()
			return nil, fmt.Errorf("tools/call: resuming the answer stream: HTTP %d", resp.StatusCode)
		}
		end.progress = false
		msg, err := u.rawStream(ctx, cs, resp.Body, id, end)
		if err == nil {
			_, _ = io.CopyN(io.Discard, resp.Body, 64<<10)
		}
		_ = resp.Body.Close()
		if err != end {
			return msg, err
		}
		if !end.progress {
			idle++
		} else {
			idle = 0
		}
	}
	return nil, end
}

// drainGuard bounds the reading of a raw call's stream end: the
// connection it is read from (syncpool.go) calls arm before its first read
// that may wait for the upstream, and sets lazy once it took the exchange;
// without lazy, the bound is armed before the reading starts.
type drainGuard struct {
	lazy bool
	arm  func()
}

// drainGuardKey is the context key of a raw call's drainGuard.
type drainGuardKey struct{}

// rawDrainGrace bounds the reading of an answer stream's end after the
// answer: an upstream that keeps it open loses the connection instead.
const rawDrainGrace = time.Second

// rawHandle handles a message an upstream sent on a call's answer stream
// before the answer, as the SDK's client does with newClient's handlers.
func (u *upstream) rawHandle(ctx context.Context, cs *mcp.ClientSession, m *rawMessage) {
	if m.Method == "" {
		return // an answer to something else: not ours
	}
	if len(m.ID) == 0 || string(m.ID) == "null" {
		u.rawNotification(ctx, m)
		return
	}
	// Asked on a goroutine of its own, so that the call's end (its
	// timeout, its cancellation) ends the wait for the agent's answer, as
	// it does on the SDK's client; the ask ends with the agent's call.
	var result any
	var rpcErr *jsonrpc.Error
	asked := make(chan struct{})
	go func() {
		defer close(asked)
		result, rpcErr = u.rawServerRequest(ctx, m)
	}()
	select {
	case <-asked:
	case <-ctx.Done():
		return
	}
	out := struct {
		JSONRPC string          `json:"jsonrpc"`
		ID      json.RawMessage `json:"id"`
		Result  any             `json:"result,omitempty"`
		Error   *jsonrpc.Error  `json:"error,omitempty"`
	}{"2.0", m.ID, result, rpcErr}
	body, err := json.Marshal(out)
	if err != nil {
		return
	}
	// Answered on a context of its own: the call's may end first.
	actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), u.cfg.timeout())
	defer cancel()
	if resp, err := u.rawPost(actx, cs, body, nil); err == nil {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4<<10))
		_ = resp.Body.Close()
	}
}

// rawNotification dispatches a notification as newClient's handlers do.
func (u *upstream) rawNotification(ctx context.Context, m *rawMessage) {
	switch m.Method {
	case "notifications/message":
		var p mcp.LoggingMessageParams
		if json.Unmarshal(m.Params, &p) == nil {
			u.logMessage(nil, &mcp.LoggingMessageRequest{Params: &p}, nil)
		}
	case "notifications/progress":
		var p mcp.ProgressNotificationParams
		if json.Unmarshal(m.Params, &p) == nil {
			u.forwardProgress(ctx, &p)
		}
	case "notifications/tools/list_changed", "notifications/prompts/list_changed", "notifications/resources/list_changed":
		u.requestRefresh()
	case "notifications/resources/updated":
		var p mcp.ResourceUpdatedNotificationParams
		if json.Unmarshal(m.Params, &p) == nil {
			u.resourceUpdated(ctx, &mcp.ResourceUpdatedNotificationRequest{Params: &p})
		}
	}
	// The transport counted a call notification as read (see sseCounter);
	// it is handled now, so calls waiting on the barrier need not wait.
	if isCallNote(m.Method) {
		u.notes.handle()
	}
}

// rawServerRequest answers a request the upstream sent during a call, as
// the shared session's client does (it declares no roots).
func (u *upstream) rawServerRequest(ctx context.Context, m *rawMessage) (any, *jsonrpc.Error) {
	// The request came on this call's own answer stream, so it is this
	// call's: when the call is a fast one, its agent is known, and is
	// asked even while other calls of the session are in flight. Otherwise
	// the calls in flight on the upstream decide (caller).
	var c *inflight
	if fs := fastStreamFrom(ctx); fs != nil && fs.ss != nil {
		if c = fs.call.Load(); c == nil || c.session != fs.ss {
			c = &inflight{ctx: ctx, session: fs.ss}
		}
	}
	switch m.Method {
	case "ping":
		return struct{}{}, nil
	case "sampling/createMessage":
		return relayRequest(m, func(p *mcp.CreateMessageParams) (*mcp.CreateMessageResult, error) {
			if c != nil {
				return u.createMessageOn(c, &mcp.CreateMessageRequest{Params: p})
			}
			return u.createMessage(nil, &mcp.CreateMessageRequest{Params: p})
		})
	case "elicitation/create":
		u.wire.sawElicit(m.Params)
		return relayRequest(m, func(p *mcp.ElicitParams) (*mcp.ElicitResult, error) {
			if c != nil {
				return u.elicitOn(c, &mcp.ElicitRequest{Params: p})
			}
			return u.elicit(nil, &mcp.ElicitRequest{Params: p})
		})
	}
	return nil, &jsonrpc.Error{Code: jsonrpc.CodeMethodNotFound, Message: fmt.Sprintf("method %q not supported", m.Method)}
}

// relayRequest decodes an upstream request's params, has do answer it, and
// returns the answer or its error as JSON-RPC puts it.
func relayRequest[P, R any](m *rawMessage, do func(*P) (R, error)) (any, *jsonrpc.Error) {
	p := new(P)
	if err := json.Unmarshal(m.Params, p); err != nil {
		return nil, &jsonrpc.Error{Code: jsonrpc.CodeInvalidParams, Message: err.Error()}
	}
	res, err := do(p)
	if err != nil {
		if rpc, ok := errors.AsType[*jsonrpc.Error](err); ok {
			return nil, withCode(rpc) // never 0, as coded
		}
		return nil, &jsonrpc.Error{Code: jsonrpc.CodeInternalError, Message: err.Error()}
	}
	return res, nil
}

// rawCancel tells the upstream a call it is running was cancelled, as the
// SDK's client does when a call's context ends.
func (u *upstream) rawCancel(ctx context.Context, cs *mcp.ClientSession, id string, reason string) {
	body, err := json.Marshal(map[string]any{
		"jsonrpc": "2.0",
		"method":  "notifications/cancelled",
		"params":  map[string]any{"requestId": id, "reason": reason},
	})
	if err != nil {
		return
	}
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if resp, err := u.rawPost(cctx, cs, body, nil); err == nil {
		_ = resp.Body.Close()
	}
}
