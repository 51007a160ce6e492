package gateway

import (
	"context"
	"fmt"
	"sync"

	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// Roots with session: per_agent.
//
// An agent's roots (the directories it works in) are its own: on a shared
// session they would leak to calls from every other agent, so the shared
// session declares no roots. A per-agent session is the agent's alone, so it
// declares the roots capability when the agent did (with listChanged as the
// agent declared it), answers the upstream's roots/list by asking the agent,
// and passes the agent's notifications/roots/list_changed on.
//
//	agent ── roots/list_changed ──▶ gateway ──▶ per-agent session(s) ──▶ upstream
//	agent ◀── roots/list ────────── gateway ◀── per-agent session ◀─── upstream

// agentRootsCaps returns the roots capability a per-agent session declares:
// the agent's own, or nil when the agent declared none (or for the shared
// session, agent nil).
func agentRootsCaps(agent *mcp.ServerSession) *mcp.RootCapabilities {
	if agent == nil {
		return nil
	}
	caps := clientCaps(agent)
	if caps == nil || caps.RootsV2 == nil {
		return nil
	}
	return &mcp.RootCapabilities{ListChanged: caps.RootsV2.ListChanged}
}

// askAgentRoots is a receiving middleware of a per-agent client: it answers
// the upstream's roots/list with the agent's roots. The SDK client would
// otherwise answer from its own (empty) list.
func (u *upstream) askAgentRoots(agent *mcp.ServerSession) mcp.Middleware {
	return func(next mcp.MethodHandler) mcp.MethodHandler {
		return func(ctx context.Context, method string, req mcp.Request) (mcp.Result, error) {
			if method != "roots/list" {
				return next(ctx, method, req)
			}
			ctx, cancel := context.WithTimeout(ctx, u.cfg.timeout())
			defer cancel()
			params := &mcp.ListRootsParams{}
			if p, ok := req.GetParams().(*mcp.ListRootsParams); ok && p != nil {
				params.Meta = forwardMeta(p.Meta)
			}
			res, err := agent.ListRoots(ctx, params)
			if err != nil {
				return nil, fmt.Errorf("credgate: asking the agent for its roots for upstream %q: %w", u.name, err)
			}
			res.Meta = hopLocalStripped(res.Meta)
			return res, nil
		}
	}
}

// rootsRelay remembers, for each agent that declared roots, the per-agent
// client of each upstream, so that the agent's roots/list_changed reaches
// its sessions. One client per agent and upstream (the latest: an agent has
// at most one live session per upstream), forgotten when the agent's session
// ends.
type rootsRelay struct {
	mu      sync.Mutex
	clients map[*mcp.ServerSession]map[string]*mcp.Client // agent -> upstream -> client
}

// rootsChangedURI is the placeholder root whose (re)addition makes a per-agent
// client send notifications/roots/list_changed: the SDK offers no other way to
// send it. The client's own root list is never served; askAgentRoots answers
// roots/list from the agent.
const rootsChangedURI = "credgate:agent-roots"

// registerRoots records c as agent's client for upstream.
func (g *Server) registerRoots(agent *mcp.ServerSession, upstream string, c *mcp.Client) {
	r := &g.roots
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.clients == nil {
		r.clients = map[*mcp.ServerSession]map[string]*mcp.Client{}
	}
	byUpstream, seen := r.clients[agent]
	if !seen {
		byUpstream = map[string]*mcp.Client{}
		r.clients[agent] = byUpstream
		go func() { // forget the agent when its session ends
			defer g.recoverLog("roots relay", upstream)
			_ = agent.Wait()
			r.mu.Lock()
			delete(r.clients, agent)
			r.mu.Unlock()
		}()
	}
	byUpstream[upstream] = c
}

// rootsListChanged passes an agent's notifications/roots/list_changed to its
// per-agent sessions.
func (g *Server) rootsListChanged(_ context.Context, req *mcp.RootsListChangedRequest) {
	r := &g.roots
	r.mu.Lock()
	var clients []*mcp.Client
	for _, c := range r.clients[req.Session] {
		clients = append(clients, c)
	}
	r.mu.Unlock()
	for _, c := range clients {
		c.AddRoots(&mcp.Root{URI: rootsChangedURI})
	}
}
