package gateway

import (
	"context"
	"encoding/json"

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
		if err != nil || res == nil || !cachedMethods[method] {
			return res, err
		}
		if p := requestProtocol(req); p == "" || p >= "2026-07-28" {
			return res, err
		}
		return withoutCacheHints{res}, nil
	}
}

// withoutCacheHints is a result that is encoded without ttlMs and
// cacheScope.
type withoutCacheHints struct{ mcp.Result }

func (r withoutCacheHints) MarshalJSON() ([]byte, error) {
	b, err := json.Marshal(r.Result)
	if err != nil {
		return nil, err
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(b, &m); err != nil {
		return b, nil
	}
	if _, ok := m["ttlMs"]; !ok {
		if _, ok := m["cacheScope"]; !ok {
			return b, nil
		}
	}
	delete(m, "ttlMs")
	delete(m, "cacheScope")
	return json.Marshal(m)
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
