// Per-agent upstream sessions (upstreams.<name>.session: per_agent).

package gateway

import (
	"context"
	"fmt"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// opening is a session being opened on another goroutine, which sets cs or
// err and then closes ready.
type opening struct {
	ready chan struct{}
	cs    *mcp.ClientSession
	err   error
}

func newOpening() opening { return opening{ready: make(chan struct{})} }

// wait returns the session once it is open, or why it could not be, or
// ctx's error if ctx ends first.
func (o *opening) wait(ctx context.Context) (*mcp.ClientSession, error) {
	select {
	case <-o.ready:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	if o.err != nil {
		return nil, o.err
	}
	return o.cs, nil
}

// agentConn is one agent's own session to the upstream (session: per_agent).
type agentConn struct {
	opening
}

// agentLimitError is returned for a call that would open one more agent
// session on a per_agent upstream that has max_agent_sessions open.
type agentLimitError struct {
	upstream string
	max      int
}

func (e *agentLimitError) Error() string {
	return fmt.Sprintf("upstream %q has reached upstreams.%s.max_agent_sessions (%d agent sessions); retry when another agent's session ends", e.upstream, e.upstream, e.max)
}

// sessionFor returns the session that carries agent ss's requests: the shared
// one, or with session: per_agent the agent's own, opened on first use. An
// upstream that is down fails fast either way.
func (u *upstream) sessionFor(ctx context.Context, ss *mcp.ServerSession) (*mcp.ClientSession, error) {
	shared := u.session.Load()
	if shared == nil {
		return nil, u.unavailable()
	}
	if u.cfg.Session != SessionPerAgent || ss == nil {
		return shared, nil
	}
	u.mu.Lock()
	a, ok := u.agents[ss]
	runCtx := u.ctx
	if !ok {
		if limit := u.cfg.maxAgentSessions(); len(u.agents) >= limit {
			u.mu.Unlock()
			return nil, &agentLimitError{upstream: u.name, max: limit}
		}
		a = &agentConn{opening: newOpening()}
		u.agents[ss] = a
	}
	u.mu.Unlock()
	if !ok {
		go u.openAgent(runCtx, ss, a)
	}
	return a.wait(ctx)
}

// openAgent connects an agent's own session and closes it when either side
// ends. The agent's side ends when it leaves (DELETE), when its connection
// breaks, and when it has been idle for session_idle_timeout (the SDK closes
// the session then), so an abandoned agent does not keep a child process.
func (u *upstream) openAgent(ctx context.Context, ss *mcp.ServerSession, a *agentConn) {
	defer u.gw.recoverLog("per-agent session", u.name)
	a.cs, a.err = u.connect(ctx, u.newClient(ss), false)
	if a.err != nil {
		u.forgetAgent(ss, a)
		close(a.ready)
		return
	}
	u.setLogLevel(ctx, a.cs)
	close(a.ready)
	agentGone := make(chan struct{})
	go func() {
		_ = ss.Wait()
		close(agentGone)
	}()
	sessionGone := make(chan struct{})
	go func() {
		_ = a.cs.Wait()
		close(sessionGone)
	}()
	select {
	case <-agentGone:
		u.forgetAgent(ss, a)
		// The calls the agent's DELETE ended have returned, but the SDK's
		// client tells the upstream a call ended off the call's return
		// path: closing the session at once could beat that notice, and
		// the upstream, whose session is gone, ran the call on (a loaded
		// run). The session lingers a moment for it.
		t := time.NewTimer(agentLinger)
		select {
		case <-t.C:
		case <-sessionGone:
		case <-ctx.Done():
		}
		t.Stop()
	case <-sessionGone:
	case <-ctx.Done():
	}
	u.forgetAgent(ss, a)
	_ = a.cs.Close()
}

// agentLinger is how long an agent's own upstream session outlives the
// agent's session, for the notices of the calls that ended with it.
const agentLinger = 250 * time.Millisecond

// forgetAgent removes a's session from the pool, if it is still there, so
// that the agent's next call opens a new one.
func (u *upstream) forgetAgent(ss *mcp.ServerSession, a *agentConn) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.agents[ss] == a {
		delete(u.agents, ss)
	}
}

// drop ends an agent's own session that proved dead, so that the agent's
// next call opens a new one. A shared session is not dropped but lost (see
// lost), which also marks the upstream down and makes run reconnect.
func (u *upstream) drop(ss *mcp.ServerSession, cs *mcp.ClientSession) {
	u.mu.Lock()
	a := u.agents[ss]
	if a != nil && a.cs == cs {
		delete(u.agents, ss)
	}
	u.mu.Unlock()
	_ = cs.Close()
}

// closeAgents ends every per-agent session (at shutdown).
func (u *upstream) closeAgents() {
	u.mu.Lock()
	agents := u.agents
	u.agents = map[*mcp.ServerSession]*agentConn{}
	u.mu.Unlock()
	for _, a := range agents {
		<-a.ready
		if a.cs != nil {
			_ = a.cs.Close()
		}
	}
}
