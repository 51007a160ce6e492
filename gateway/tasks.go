package gateway

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// Tasks (MCP 2025-11-25) through the gateway.
//
// A tool may declare task support in its listing ("execution":
// {"taskSupport": "optional"|"required"}), and a server that runs tools as
// tasks declares capabilities.tasks. The MCP Go SDK the gateway is built on
// (v1.8.0) knows neither: its mcp.Tool has no Execution field and it has no
// tasks/* methods, so it drops the field when it decodes an upstream's
// listing and cannot carry a task-augmented call.
//
// What the gateway can do, it does: it reads each tool's execution field off
// the wire as the upstream's tools/list answer passes (wireFields), and puts
// it back on the tool in its own tools/list answers (withExecution), so
// agents see the tool as the upstream declared it. What it cannot do (forward
// tasks) it does not hide: every tool declaring task support, and every
// upstream declaring the tasks capability, is reported in /health problems
// and logged, and the gateway does not advertise tasks itself, so agents call
// these tools synchronously (which taskSupport "optional" allows).

// maxWireCapture bounds what is buffered to read a watched answer; the
// execution fields of a larger listing stay unread.
const maxWireCapture = 16 << 20

// maxRequestPeek is how much of a request body is read to see its method:
// the SDK writes "method" before "params".
const maxRequestPeek = 512

// wireFields keeps what an upstream's answers say that the SDK drops: each
// listed tool's execution object, and the tasks capability.
type wireFields struct {
	watching atomic.Int32 // len(pending), read without the lock

	mu       sync.Mutex
	pending  map[string]string          // request id -> method, of watched requests in flight
	building map[string]json.RawMessage // tool name -> execution, of the listing being read
	exec     map[string]json.RawMessage // of the last complete listing
	tasks    json.RawMessage            // capabilities.tasks of the last handshake
	// Each listed tool's schemas as the upstream wrote them (the SDK decodes
	// them into maps, which lose the order of their keys), of the listing
	// being read and of the last complete one, until taken (takeSchemas).
	buildingSchemas map[string]toolSchemas
	schemas         map[string]toolSchemas
	// elicit holds the requested schemas of the upstream's last
	// elicitation requests as it wrote them, by their canonical text (the
	// SDK's decoding sorts their keys: see elicitSchema); oldest first.
	elicit []elicitSchema
}

// elicitSchema is an elicitation's requested schema, as written and in
// canonical form (keys sorted, as encoding/json writes a decoded value).
type elicitSchema struct {
	canonical string
	raw       json.RawMessage
}

// maxElicitSchemas bounds the requested schemas kept (elicitations in
// flight at once are bounded far lower: asksMax per agent).
const maxElicitSchemas = 16

// sawElicit notes the requested schema of an elicitation request's params.
func (w *wireFields) sawElicit(params json.RawMessage) {
	var p struct {
		RequestedSchema json.RawMessage `json:"requestedSchema"`
	}
	if json.Unmarshal(params, &p) != nil {
		return
	}
	raw := compactObject(p.RequestedSchema)
	canon, ok := canonicalJSON(raw)
	if raw == nil || !ok {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	w.elicit = append(w.elicit, elicitSchema{canonical: canon, raw: raw})
	if len(w.elicit) > maxElicitSchemas {
		w.elicit = slices.Clone(w.elicit[len(w.elicit)-maxElicitSchemas:])
	}
}

// sawInputRequests notes the requested schemas of the elicitations a
// result's inputRequests holds (a 2026-07-28 upstream asks for input so).
func (w *wireFields) sawInputRequests(result []byte) {
	if !bytes.Contains(result, []byte(`"inputRequests"`)) {
		return
	}
	var r struct {
		InputRequests map[string]struct {
			Method string          `json:"method"`
			Params json.RawMessage `json:"params"`
		} `json:"inputRequests"`
	}
	if json.Unmarshal(result, &r) != nil {
		return
	}
	for _, ir := range r.InputRequests {
		if ir.Method == "elicitation/create" {
			w.sawElicit(ir.Params)
		}
	}
}

// keepInputOrder gives the elicitations res asks for (its inputRequests)
// their requested schemas as the upstream wrote them, keys in its order
// (the SDK's decoding sorted them: a form showed its fields out of order,
// found trying the gateway from outside), unless one holds a secret
// redaction must take out.
func (u *upstream) keepInputOrder(res *mcp.CallToolResult) {
	if res == nil {
		return
	}
	for k, ir := range res.InputRequests {
		p, ok := ir.(*mcp.ElicitParams)
		if !ok || p.RequestedSchema == nil {
			continue
		}
		if raw := u.wire.elicitSchema(p.RequestedSchema); raw != nil && u.gw.secretFree(raw) {
			cp := *p
			cp.RequestedSchema = raw
			res.InputRequests[k] = &cp
		}
	}
}

// elicitSchema returns the requested schema v (as the SDK decoded it) as the
// upstream wrote it, keys in its order, or nil if it was not seen.
func (w *wireFields) elicitSchema(v any) json.RawMessage {
	b, err := json.Marshal(v)
	if err != nil {
		return nil
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	for i := len(w.elicit) - 1; i >= 0; i-- {
		if w.elicit[i].canonical == string(b) {
			return w.elicit[i].raw
		}
	}
	return nil
}

// canonicalJSON returns raw as encoding/json writes its decoded value.
func canonicalJSON(raw json.RawMessage) (string, bool) {
	var v any
	if json.Unmarshal(raw, &v) != nil {
		return "", false
	}
	b, err := json.Marshal(v)
	return string(b), err == nil
}

// toolSchemas are a tool's inputSchema and outputSchema as listed.
type toolSchemas struct{ in, out json.RawMessage }

// takeSchemas returns the schemas of the last complete listing, once.
func (w *wireFields) takeSchemas() map[string]toolSchemas {
	w.mu.Lock()
	defer w.mu.Unlock()
	s := w.schemas
	w.schemas = nil
	return s
}

// sawRequest notes a request the gateway sent. cursor is the tools/list
// cursor: a listing without one starts over.
func (w *wireFields) sawRequest(id, method, cursor string) {
	if !watchedMethod(method) {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.pending == nil {
		w.pending = map[string]string{}
	}
	// A handshake starts a new session, whose ids start over: what was
	// pending on the old one will never be answered. The bound is for
	// answers that never came on a live one.
	if method != "tools/list" || len(w.pending) >= 64 {
		clear(w.pending)
	}
	w.pending[id] = method
	w.watching.Store(int32(len(w.pending)))
	if method == "tools/list" && cursor == "" {
		w.building = map[string]json.RawMessage{}
		w.buildingSchemas = map[string]toolSchemas{}
	}
}

// sawResponse notes an answer from the upstream; only answers to the requests
// sawRequest noted are read.
func (w *wireFields) sawResponse(id string, result json.RawMessage) {
	if w.watching.Load() == 0 {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	method, ok := w.pending[id]
	if !ok {
		return
	}
	delete(w.pending, id)
	w.watching.Store(int32(len(w.pending)))
	switch method {
	case "initialize", "server/discover":
		var r struct {
			Capabilities struct {
				Tasks json.RawMessage `json:"tasks"`
			} `json:"capabilities"`
		}
		w.tasks = nil
		if json.Unmarshal(result, &r) == nil && len(r.Capabilities.Tasks) > 0 && !bytes.Equal(r.Capabilities.Tasks, []byte("null")) {
			w.tasks = r.Capabilities.Tasks
		}
	case "tools/list":
		var r struct {
			NextCursor string `json:"nextCursor"`
			Tools      []struct {
				Name         string          `json:"name"`
				Execution    json.RawMessage `json:"execution"`
				InputSchema  json.RawMessage `json:"inputSchema"`
				OutputSchema json.RawMessage `json:"outputSchema"`
			} `json:"tools"`
		}
		if json.Unmarshal(result, &r) != nil || r.Tools == nil {
			return
		}
		if w.building == nil {
			w.building = map[string]json.RawMessage{}
		}
		if w.buildingSchemas == nil {
			w.buildingSchemas = map[string]toolSchemas{}
		}
		for _, t := range r.Tools {
			if len(t.Execution) > 0 && !bytes.Equal(t.Execution, []byte("null")) {
				w.building[t.Name] = t.Execution
			}
			w.buildingSchemas[t.Name] = toolSchemas{in: compactObject(t.InputSchema), out: compactObject(t.OutputSchema)}
		}
		if r.NextCursor == "" {
			w.exec, w.building = w.building, nil
			w.schemas, w.buildingSchemas = w.buildingSchemas, nil
		}
	}
}

// compactObject returns raw, a JSON object, without whitespace between its
// tokens (an SSE data line cannot hold a line break), or nil if it is
// anything else.
func compactObject(raw json.RawMessage) json.RawMessage {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || raw[0] != '{' {
		return nil
	}
	if !bytes.ContainsAny(raw, "\r\n\t") {
		return raw
	}
	var b bytes.Buffer
	if json.Compact(&b, raw) != nil {
		return nil
	}
	return b.Bytes()
}

// watchedMethod reports whether the answers to method are read: a listing of
// tools, and the handshakes (initialize, and 2026-07-28's server/discover)
// that carry the upstream's capabilities.
func watchedMethod(method string) bool {
	return method == "tools/list" || method == "initialize" || method == "server/discover"
}

// execution returns the execution object the upstream listed for its tool
// name, or nil.
func (w *wireFields) execution(name string) json.RawMessage {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.exec[name]
}

// declaresTasks reports whether the upstream declared the tasks capability
// or task support on any tool.
func (w *wireFields) declaresTasks() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.tasks != nil || len(w.exec) > 0
}

// tasksCapability returns the upstream's capabilities.tasks, or nil.
func (w *wireFields) tasksCapability() json.RawMessage {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.tasks
}

// watchListings makes t report the shared session's traffic to u.wire. Per-agent
// sessions never list, so they are left alone. HTTP transports are watched
// in their RoundTripper: wrapping their connection would hide interfaces the
// SDK looks for on it.
func (u *upstream) watchListings(t mcp.Transport, client *mcp.Client) mcp.Transport {
	if client != u.client {
		// Another session (per agent, per credential) lists nothing the
		// catalog takes, but its child asks agents for input too: its
		// forms keep their field order (found trying the gateway from
		// outside with session: per_agent).
		if _, ok := t.(*mcp.StreamableClientTransport); !ok && u.cfg.Transport == TransportStdio {
			return watchTransport{Transport: t, w: &u.wire, inputOnly: true}
		}
		return t
	}
	switch x := t.(type) {
	case *mcp.StreamableClientTransport:
		x.HTTPClient = watchHTTP(x.HTTPClient, &u.wire)
	case *mcp.SSEClientTransport:
		x.HTTPClient = watchHTTP(x.HTTPClient, &u.wire)
	default:
		if u.cfg.Transport == TransportStdio {
			return watchTransport{Transport: t, w: &u.wire}
		}
	}
	return t
}

func watchHTTP(c *http.Client, w *wireFields) *http.Client {
	if c == nil {
		c = http.DefaultClient
	}
	cp := *c
	base := cp.Transport
	if base == nil {
		base = http.DefaultTransport
	}
	cp.Transport = watchRoundTripper{base: base, w: w}
	return &cp
}

// watchTransport watches a stdio connection's messages.
type watchTransport struct {
	mcp.Transport
	w *wireFields
	// inputOnly watches only the requests for input (elicitation forms),
	// not the listings: the session's ids are its own.
	inputOnly bool
}

func (t watchTransport) Connect(ctx context.Context) (mcp.Connection, error) {
	c, err := t.Transport.Connect(ctx)
	if err != nil {
		return nil, err
	}
	return &watchConn{Connection: c, w: t.w, inputOnly: t.inputOnly}, nil
}

type watchConn struct {
	mcp.Connection
	w         *wireFields
	inputOnly bool
}

func (c *watchConn) Write(ctx context.Context, m jsonrpc.Message) error {
	if r, ok := m.(*jsonrpc.Request); ok && !c.inputOnly && r.ID.IsValid() && watchedMethod(r.Method) {
		var p struct {
			Cursor string `json:"cursor"`
		}
		_ = json.Unmarshal(r.Params, &p)
		c.w.sawRequest(fmt.Sprint(r.ID.Raw()), r.Method, p.Cursor)
	}
	return c.Connection.Write(ctx, m)
}

func (c *watchConn) Read(ctx context.Context) (jsonrpc.Message, error) {
	m, err := c.Connection.Read(ctx)
	if r, ok := m.(*jsonrpc.Request); ok && r.Method == "elicitation/create" {
		c.w.sawElicit(r.Params)
	}
	if r, ok := m.(*jsonrpc.Response); ok && r.Error == nil {
		c.w.sawInputRequests(r.Result)
	}
	// watching first: the id's formatting costs every call's answer.
	if r, ok := m.(*jsonrpc.Response); ok && !c.inputOnly && r.Error == nil && c.w.watching.Load() != 0 {
		c.w.sawResponse(fmt.Sprint(r.ID.Raw()), r.Result)
	}
	return m, err
}

// watchRoundTripper watches an HTTP upstream's requests and answers: a JSON
// body answering a watched request, and every event stream (the SSE
// transport answers on its long-lived GET stream).
type watchRoundTripper struct {
	base http.RoundTripper
	w    *wireFields
}

func (t watchRoundTripper) RoundTrip(req *http.Request) (*http.Response, error) {
	watched := false
	if req.Method == http.MethodPost && req.GetBody != nil {
		watched = t.sawRequestBody(req)
	}
	resp, err := t.base.RoundTrip(req)
	if err != nil || resp == nil || resp.Body == nil {
		return resp, err
	}
	switch ct := resp.Header.Get("Content-Type"); {
	case strings.HasPrefix(ct, "text/event-stream"):
		resp.Body = &watchSSE{ReadCloser: resp.Body, w: t.w}
	case watched && strings.HasPrefix(ct, "application/json"):
		resp.Body = &watchJSON{ReadCloser: resp.Body, w: t.w}
	}
	return resp, nil
}

// sawRequestBody reads the method of a request the SDK is sending and
// reports whether its answer is wanted. Only the start of the body is read
// unless it is a watched request (which are small).
func (t watchRoundTripper) sawRequestBody(req *http.Request) bool {
	body, err := req.GetBody()
	if err != nil {
		return false
	}
	defer body.Close()
	head := make([]byte, maxRequestPeek)
	n, _ := io.ReadFull(body, head)
	head = head[:n]
	if !bytes.Contains(head, []byte(`"method":"tools/list"`)) && !bytes.Contains(head, []byte(`"method":"initialize"`)) &&
		!bytes.Contains(head, []byte(`"method":"server/discover"`)) {
		return false // the SDK writes compact JSON
	}
	rest, err := io.ReadAll(io.LimitReader(body, maxWireCapture))
	if err != nil {
		return false
	}
	var msg struct {
		ID     json.RawMessage `json:"id"`
		Method string          `json:"method"`
		Params struct {
			Cursor string `json:"cursor"`
		} `json:"params"`
	}
	if json.Unmarshal(append(head, rest...), &msg) != nil || len(msg.ID) == 0 || !watchedMethod(msg.Method) {
		return false
	}
	t.w.sawRequest(rawIDKey(msg.ID), msg.Method, msg.Params.Cursor)
	return true
}

// rawIDKey formats a JSON-RPC id read off the wire like fmt.Sprint formats
// the SDK's own (3 and "3" are not told apart; the gateway's ids are numbers).
func rawIDKey(raw json.RawMessage) string {
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return s
	}
	return string(bytes.TrimSpace(raw))
}

// sawMessage reads one JSON-RPC message (or batch) read off the wire.
func (w *wireFields) sawMessage(data []byte) {
	data = bytes.TrimSpace(data)
	if len(data) > 0 && data[0] == '[' {
		var batch []json.RawMessage
		if json.Unmarshal(data, &batch) == nil {
			for _, m := range batch {
				w.sawMessage(m)
			}
		}
		return
	}
	var msg struct {
		ID     json.RawMessage `json:"id"`
		Result json.RawMessage `json:"result"`
	}
	if json.Unmarshal(data, &msg) == nil && len(msg.ID) > 0 && len(msg.Result) > 0 {
		w.sawResponse(rawIDKey(msg.ID), msg.Result)
	}
}

// watchJSON reads a JSON answer as the SDK reads it, and hands it over whole
// before the SDK sees its end.
type watchJSON struct {
	io.ReadCloser
	w    *wireFields
	buf  []byte
	over bool
}

func (b *watchJSON) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if !b.over {
		if len(b.buf)+n > maxWireCapture {
			b.over, b.buf = true, nil
		} else {
			b.buf = append(b.buf, p[:n]...)
		}
	}
	if err == io.EOF && !b.over {
		b.w.sawMessage(b.buf)
		b.buf, b.over = nil, true
	}
	return n, err
}

// watchSSE reads the data of each event as the SDK reads it, while a watched
// request is in flight, and hands a complete event over before the SDK sees
// its end.
type watchSSE struct {
	io.ReadCloser
	w    *wireFields
	line []byte // the current line, until its end is read
	seen bool   // the current line has content, kept or not
	data []byte // the current event's data
	over bool   // the current event is too large to keep
}

func (s *watchSSE) Read(p []byte) (int, error) {
	n, err := s.ReadCloser.Read(p)
	if s.w.watching.Load() == 0 && len(s.line) == 0 && len(s.data) == 0 && !s.over {
		// Nothing is watched and nothing is kept: skip the scan, noting only
		// whether a line is left open.
		s.seen = n > 0 && p[n-1] != '\n'
		return n, err
	}
	b := p[:n]
	for len(b) > 0 {
		i := bytes.IndexByte(b, '\n')
		if i < 0 {
			s.addLine(b)
			break
		}
		s.addLine(b[:i])
		s.endLine()
		b = b[i+1:]
	}
	return n, err
}

// addLine adds to the current line, when the line can matter: one of a
// watched answer's event while a watched request is in flight.
func (s *watchSSE) addLine(b []byte) {
	s.seen = s.seen || len(bytes.TrimRight(b, "\r")) > 0
	if s.over || s.w.watching.Load() == 0 {
		return
	}
	if len(s.line)+len(s.data)+len(b) > maxWireCapture {
		s.over, s.line, s.data = true, nil, nil
		return
	}
	s.line = append(s.line, b...)
}

func (s *watchSSE) endLine() {
	line := bytes.TrimSuffix(s.line, []byte("\r"))
	blank := !s.seen
	s.line, s.seen = s.line[:0], false
	if blank { // end of the event
		if len(s.data) > 0 && !s.over {
			s.w.sawMessage(s.data)
		}
		s.data, s.over = s.data[:0], false
		if cap(s.data) > 64<<10 {
			s.data = nil // do not hold a large event's buffer for the stream's life
		}
		return
	}
	if d, ok := bytes.CutPrefix(line, []byte("data:")); ok {
		if len(s.data) > 0 {
			s.data = append(s.data, '\n')
		}
		s.data = append(s.data, bytes.TrimPrefix(d, []byte(" "))...)
	}
}

// withExecution is a receiving middleware of the downstream server: it puts
// each exposed tool's execution field, as its upstream listed it, back into
// tools/list answers.
func (g *Server) withExecution(next mcp.MethodHandler) mcp.MethodHandler {
	return func(ctx context.Context, method string, req mcp.Request) (mcp.Result, error) {
		res, err := next(ctx, method, req)
		if method != "tools/list" || err != nil {
			return res, err
		}
		lr, ok := res.(*mcp.ListToolsResult)
		if !ok {
			return res, nil
		}
		exec := g.catalog.executions(lr.Tools)
		if len(exec) == 0 {
			return res, nil
		}
		return &toolsWithExecution{ListToolsResult: lr, execution: exec}, nil
	}
}

// toolsWithExecution is a tools/list answer whose tools carry the execution
// field mcp.Tool lacks. Embedding the SDK's result keeps it an mcp.Result
// that the SDK still annotates as its own.
type toolsWithExecution struct {
	*mcp.ListToolsResult
	execution map[string]json.RawMessage // by exposed name
}

func (r *toolsWithExecution) MarshalJSON() ([]byte, error) {
	data, err := marshalAsSDK(r.ListToolsResult)
	if err != nil {
		return nil, err
	}
	var doc map[string]json.RawMessage
	if err := json.Unmarshal(data, &doc); err != nil {
		return nil, err
	}
	var tools []map[string]json.RawMessage
	if err := json.Unmarshal(doc["tools"], &tools); err != nil {
		return nil, err
	}
	for _, t := range tools {
		var name string
		if json.Unmarshal(t["name"], &name) == nil {
			if e, ok := r.execution[name]; ok {
				t["execution"] = e
			}
		}
	}
	if doc["tools"], err = marshalAsSDK(tools); err != nil {
		return nil, err
	}
	return marshalAsSDK(doc)
}

// taskProblems reports what of tasks an upstream declares and the gateway
// cannot forward: the tasks capability, and each exposed tool declaring task
// support (execution.taskSupport other than "forbidden").
func taskProblems(u *upstream, exposed map[string]string, report func(string, Problem)) {
	if u.wire.tasksCapability() != nil {
		report(u.name, Problem{Kind: "capability", Name: "tasks",
			Reason: "upstream declares the tasks capability, which credgate cannot forward yet (its MCP SDK has no tasks support): it does not advertise tasks, and calls run synchronously"})
	}
	for _, name := range slices.Sorted(maps.Keys(exposed)) { // a stable order: problems are compared to log changes
		orig := exposed[name]
		raw := u.wire.execution(orig)
		if raw == nil {
			continue
		}
		var e struct {
			TaskSupport string `json:"taskSupport"`
		}
		_ = json.Unmarshal(raw, &e)
		switch e.TaskSupport {
		case "", "forbidden":
		case "required":
			report(u.name, Problem{Kind: "tool", Name: orig, Exposed: name,
				Reason: `tool requires task-augmented calls (execution.taskSupport "required"), which credgate cannot forward yet: calls to it fail`})
		default:
			report(u.name, Problem{Kind: "tool", Name: orig, Exposed: name,
				Reason: fmt.Sprintf("tool declares task support (execution.taskSupport %q), which credgate cannot forward yet: calls run synchronously", e.TaskSupport)})
		}
	}
}
