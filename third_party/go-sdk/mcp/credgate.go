// Copyright 2025 The Go MCP SDK Authors. All rights reserved.
// Use of this source code is governed by an MIT-style
// license that can be found in the LICENSE file.

// This file is credgate's addition to the SDK (see PATCH.md at the root of
// this copy): the one seam its fast path needs that the SDK does not offer.

package mcp

import (
	"context"
	"encoding/json"
	"maps"
	"net/http"
)

// AcquireSession is for a handler in front of h that answers some POSTs on
// an existing session itself. It looks up the session req names in its
// Mcp-Session-Id header, with the checks h makes for any request on it (the
// session exists; its user, if it has one, is the request's), and pauses the
// session's idle timeout (StreamableHTTPOptions.SessionTimeout) until
// release is called, exactly as h does while it serves a POST.
//
// If the session cannot be used, AcquireSession writes the answer h would
// have written (404, 403) and returns nil. It must not be called on a
// stateless handler or for a request without a session id.
func (h *StreamableHTTPHandler) AcquireSession(w http.ResponseWriter, req *http.Request) (ss *ServerSession, release func()) {
	info, ok := h.lookupSession(w, req, req.Header.Get(sessionIDHeader))
	if !ok {
		return nil, nil
	}
	info.startPOST()
	return info.session, info.endPOST
}

// PrepareToolCall is for a caller that sends a tools/call on cs's
// connection itself (credgate's fast path). It returns params as CallTool
// would send them (arguments never null; on a 2026-07-28 session, the
// per-request _meta of SEP-2575), and the HTTP headers the streamable
// client would add to the request (MCP-Protocol-Version and, from
// 2026-07-28, Mcp-Method, Mcp-Name and the tool's Mcp-Param-* headers).
// params is not modified.
func (cs *ClientSession) PrepareToolCall(params *CallToolParams) (*CallToolParams, http.Header) {
	p := *params
	if p.Arguments == nil {
		p.Arguments = map[string]any{}
	}
	h := http.Header{}
	res := cs.state.InitializeResult
	if res == nil {
		return &p, h
	}
	h.Set(protocolVersionHeader, res.ProtocolVersion)
	if !cs.usesNewProtocol() {
		return &p, h
	}
	if p.Meta != nil {
		p.Meta = maps.Clone(p.Meta)
	}
	q := injectRequestMeta(cs, &p)
	h.Set(methodHeader, methodCallTool)
	h.Set(nameHeader, q.Name)
	if tool := cs.lookupTool(q.Name); tool != nil && len(extractParamHeaderAnnotations(tool)) > 0 {
		if raw, err := json.Marshal(q); err == nil {
			for k, v := range generateParamHeaders(tool, raw) {
				h.Set(k, v)
			}
		}
	}
	return q, h
}

// FulfillInputRequests asks the client of ss for the input an
// input-required result (2026-07-28) requests, as the server does for a
// client older than that protocol before it calls the handler again (see
// serverMultiRoundTripMiddleware). It is for a caller that serves some
// requests outside the server's own handler chain (credgate's fast path).
func (ss *ServerSession) FulfillInputRequests(ctx context.Context, requests InputRequestMap) (InputResponseMap, error) {
	return fulfillServerInputRequests(ctx, ss, requests)
}

// SettleResult does to res, a result for req made outside the server's own
// handlers (a middleware that answers a tools/call, prompts/get or
// resources/read itself), what the server does to its handlers' results:
// the result type for a 2026-07-28 client (complete or input_required), and
// for a read its cache fields (ServerOptions.SetCacheable, then the
// protocol's default scope). credgate serves reads of URIs no upstream
// lists, which the server's handlers cannot.
func (s *Server) SettleResult(ctx context.Context, req Request, res Result) error {
	ss, _ := req.GetSession().(*ServerSession)
	var mrt multiRoundTripResponse
	switch r := res.(type) {
	case *CallToolResult:
		mrt = r
	case *GetPromptResult:
		mrt = r
	case *ReadResourceResult:
		s.resolveCacheable(ctx, req, &r.Cacheable)
		mrt = r
	default:
		return nil
	}
	if ss == nil {
		return nil
	}
	return handleMultiRoundTripResult(ss, s.opts.Logger, mrt)
}
