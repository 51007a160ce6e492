package gateway

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// The cache hints of 2026-07-28 (ttlMs, cacheScope) are fields the SDK's
// list and read results always carry, whatever protocol the agent speaks.
// An agent of an older protocol does not know them, and a client that
// checks results against its protocol's schema may refuse the answer
// (found trying the gateway from outside: a 2025-03-26 agent got them on
// tools/list and resources/read, where server-everything, talked to
// directly, sends none). legacyResults takes them out for such agents.

// cachedMethods are the methods whose results carry the cache hints.
var cachedMethods = map[string]bool{
	"tools/list": true, "prompts/list": true, "resources/list": true,
	"resources/templates/list": true, "resources/read": true,
}

// legacyResults is a receiving middleware: the result of a cached method
// goes to an agent older than 2026-07-28 without the cache hints.
func (g *Server) legacyResults(next mcp.MethodHandler) mcp.MethodHandler {
	return func(ctx context.Context, method string, req mcp.Request) (mcp.Result, error) {
		res, err := next(ctx, method, req)
		if err != nil {
			return res, coded(err)
		}
		if res == nil || !cachedMethods[method] {
			return res, err
		}
		if p := requestProtocol(req); p == "" || p >= "2026-07-28" {
			if lr, ok := res.(*mcp.ListToolsResult); ok && len(lr.Meta) == 0 && lr.ResultType == "" {
				return cachedTools{ListToolsResult: lr, cache: g.lists, current: g.impl}, nil
			}
			return res, err
		}
		if lr, ok := res.(*mcp.ListToolsResult); ok && cacheable(lr) {
			return cachedTools{ListToolsResult: lr, cache: g.lists}, nil
		}
		return withoutCacheHints{res}, nil
	}
}

// withoutCacheHints is a result that is encoded without ttlMs and
// cacheScope.
type withoutCacheHints struct{ mcp.Result }

func (r withoutCacheHints) MarshalJSON() ([]byte, error) {
	b, err := marshalAsSDK(r.Result)
	if err != nil {
		return nil, err
	}
	// The members written again without the two, not the whole result
	// decoded and encoded again: a list of 5,000 tools took twice as long.
	out := make([]byte, 1, len(b))
	out[0] = '{'
	whole := members(b, func(key, _, member []byte) bool {
		if k := string(key); k != "ttlMs" && k != "cacheScope" {
			if len(out) > 1 {
				out = append(out, ',')
			}
			out = append(out, member...)
		}
		return true
	})
	if !whole {
		return b, nil // not an object the scan takes: as it is
	}
	return append(out, '}'), nil
}

// requestProtocol is the protocol version req was made in: the one its
// _meta names (2026-07-28 requests carry it), else its session's.
func requestProtocol(req mcp.Request) string {
	if p := req.GetParams(); p != nil {
		if v, ok := p.GetMeta()[mcp.MetaKeyProtocolVersion].(string); ok && v != "" {
			return v
		}
	}
	ss, _ := req.GetSession().(*mcp.ServerSession)
	return agentProtocol(ss, req.GetExtra())
}

// codedErrors is a receiving middleware that gives every error it returns
// a JSON-RPC code (coded).
func codedErrors(next mcp.MethodHandler) mcp.MethodHandler {
	return func(ctx context.Context, method string, req mcp.Request) (mcp.Result, error) {
		res, err := next(ctx, method, req)
		if err != nil {
			err = coded(err)
		}
		return res, err
	}
}

// coded returns err as the agent gets it: with its own JSON-RPC code if it
// carries one, otherwise as an internal error (-32603). The SDK puts an
// error without a code on the wire with code 0, which JSON-RPC does not
// define (found trying the gateway from outside); the message is err's.
//
// A JSON-RPC error of code 0 (an agent's answer to an upstream's request,
// say, that the gateway passes on) gets -32603 too.
func coded(err error) error {
	var rpc *jsonrpc.Error
	if errors.As(err, &rpc) && rpc.Code != 0 {
		return err
	}
	if e, ok := err.(*jsonrpc.Error); ok {
		return withCode(e)
	}
	return &internalError{err: err, rpc: &jsonrpc.Error{Code: jsonrpc.CodeInternalError, Message: err.Error()}}
}

// internalError is an error without a JSON-RPC code, given one: the SDK
// finds the code by errors.As, and errors.Is still finds what err wraps.
type internalError struct {
	err error
	rpc *jsonrpc.Error
}

func (e *internalError) Error() string   { return e.err.Error() }
func (e *internalError) Unwrap() []error { return []error{e.rpc, e.err} }

// withCode returns e, or if its code is 0 a copy of it (its data kept)
// with code -32603: the one rule coded, wireError, relayRequest and
// passThrough apply.
func withCode(e *jsonrpc.Error) *jsonrpc.Error {
	if e.Code != 0 {
		return e
	}
	out := *e
	out.Code = jsonrpc.CodeInternalError
	return &out
}

// cacheScope is the SDK's SetCacheable: results are "private" (only the
// agent's own client may cache them) when they may differ between agents,
// as they do with agent authentication (each agent lists what its grants
// allow) or an upstream whose sessions are per agent. The SDK's default,
// "public", let an intermediary serve one agent's list to another (found
// trying the gateway from outside).
func (g *Server) cacheScope(_ context.Context, _ mcp.Request, c *mcp.Cacheable) {
	cfg := g.config()
	if len(cfg.Auth.Keys) > 0 || cfg.Auth.OAuth != nil || g.perAgentUpstreams() {
		c.CacheScope = "private"
	}
}

// marshalAsSDK encodes v as the SDK's JSON-RPC layer does: encoding/json
// without HTML escaping, so a description's "<" reaches agents as the
// upstream wrote it, not as "\u003c".
func marshalAsSDK(v any) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n")), nil
}
