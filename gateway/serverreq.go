// Requests and notifications an upstream sends back during calls (sampling,
// elicitation, logs), routed to the agent whose call caused them.

package gateway

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"

	"github.com/credgate/credgate/authmap"
	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	"github.com/modelcontextprotocol/go-sdk/mcp"
	"golang.org/x/time/rate"
)

// track registers a call in flight; the returned func ends it.
func (u *upstream) track(ctx context.Context, ss *mcp.ServerSession) (*inflight, func()) {
	c := &inflight{ctx: ctx, session: ss}
	u.mu.Lock()
	u.calls[c] = struct{}{}
	u.mu.Unlock()
	return c, func() {
		u.mu.Lock()
		delete(u.calls, c)
		u.mu.Unlock()
	}
}

// caller returns the call that a server-to-client request from the upstream
// belongs to, and a func to call once the request is answered. A 2025-11-25
// upstream sends such requests with no link to the call that caused them. On
// a per-agent session (agent non-nil) they belong to that agent's calls. On
// the shared session the gateway can only route them when every call in
// flight on this upstream comes from one agent session; otherwise it refuses
// rather than risk asking the wrong agent. When the agent has several calls
// there, the request may belong to any of them: see anyOf.
func (u *upstream) caller(agent *mcp.ServerSession) (*inflight, func(), error) {
	u.mu.Lock()
	defer u.mu.Unlock()
	var mine []*inflight
	for c := range u.calls {
		if agent != nil && c.session != agent {
			continue
		}
		if len(mine) > 0 && mine[0].agent() != c.agent() {
			return nil, nil, fmt.Errorf("credgate: upstream %q sent a request while calls from several agents were in flight on its shared session; it cannot be routed to one of them (set upstreams.%s.session: per_agent)", u.name, u.name)
		}
		mine = append(mine, c)
	}
	if len(mine) == 0 {
		return nil, nil, fmt.Errorf("credgate: upstream %q sent a request outside any call; there is no agent to ask", u.name)
	}
	if mine[0].session == nil {
		// As through the SDK, whose stateless request session has no
		// capabilities to ask with.
		return nil, nil, fmt.Errorf("credgate: the agent calling upstream %q has no session (stateless: true) to be asked on", u.name)
	}
	if len(mine) == 1 {
		return mine[0], func() {}, nil
	}
	c, done := anyOf(mine)
	return c, done, nil
}

// anyOf returns a call standing for calls, all of one agent, one of which
// a request belongs to, and a func that releases it. It has the first's
// values (a fast call's answer stream, which the request goes on) and ends
// when the last of them ends: ended with the first, the agent's answer was
// refused ("context canceled") whenever the call the request did not belong
// to ended before it came (found trying the gateway: two calls that each
// asked the agent to sample).
func anyOf(calls []*inflight) (*inflight, func()) {
	ctx, cancel := context.WithCancel(context.WithoutCancel(calls[0].ctx))
	var left atomic.Int64
	left.Store(int64(len(calls)))
	stops := make([]func() bool, 0, len(calls))
	for _, c := range calls {
		stops = append(stops, context.AfterFunc(c.ctx, func() {
			if left.Add(-1) == 0 {
				cancel()
			}
		}))
	}
	return &inflight{ctx: ctx, session: calls[0].session}, func() {
		for _, stop := range stops {
			stop()
		}
		cancel()
	}
}

// callers returns the calls in flight (of agent, if non-nil), for
// notifications that go to all of them.
func (u *upstream) callers(agent *mcp.ServerSession) []*inflight {
	u.mu.Lock()
	defer u.mu.Unlock()
	out := make([]*inflight, 0, len(u.calls))
	for c := range u.calls {
		if agent == nil || c.session == agent {
			out = append(out, c)
		}
	}
	return out
}

func (u *upstream) elicit(agent *mcp.ServerSession, req *mcp.ElicitRequest) (*mcp.ElicitResult, error) {
	c, done, err := u.caller(agent)
	if err != nil {
		return nil, err
	}
	defer done()
	return u.elicitOn(c, req)
}

// elicitOn asks the agent of call c.
func (u *upstream) elicitOn(c *inflight, req *mcp.ElicitRequest) (*mcp.ElicitResult, error) {
	if err := u.noMidCallRequests(c, "elicitation/create"); err != nil {
		return nil, err
	}
	if err := u.agentLacks(c, "elicitation/create", req.Params); err != nil {
		return nil, err
	}
	release, err := u.flood.ask(u.name, c.agent())
	if err != nil {
		return nil, err
	}
	defer release()
	defer u.askingAgent(c)()
	ctx, cancel := context.WithTimeout(c.ctx, u.gw.config().agentTimeout())
	defer cancel()
	params := req.Params
	if params != nil && params.RequestedSchema != nil {
		// The form's fields in the upstream's order (the SDK's decoding
		// sorted them), unless it holds a secret redaction must take out.
		if raw := u.wire.elicitSchema(params.RequestedSchema); raw != nil && u.gw.secretFree(raw) {
			p := *params
			p.RequestedSchema = raw
			params = &p
		}
	}
	// A fast call's request goes on its own answer stream (fastSend).
	res, err := c.session.Elicit(ctx, params)
	return res, u.agentWaitErr(ctx, c, err)
}

func (u *upstream) createMessage(agent *mcp.ServerSession, req *mcp.CreateMessageRequest) (*mcp.CreateMessageResult, error) {
	c, done, err := u.caller(agent)
	if err != nil {
		return nil, err
	}
	defer done()
	return u.createMessageOn(c, req)
}

// createMessageOn asks the agent of call c.
func (u *upstream) createMessageOn(c *inflight, req *mcp.CreateMessageRequest) (*mcp.CreateMessageResult, error) {
	if err := u.noMidCallRequests(c, "sampling/createMessage"); err != nil {
		return nil, err
	}
	if err := u.agentLacks(c, "sampling/createMessage", req.Params); err != nil {
		return nil, err
	}
	release, err := u.flood.ask(u.name, c.agent())
	if err != nil {
		return nil, err
	}
	defer release()
	defer u.askingAgent(c)()
	ctx, cancel := context.WithTimeout(c.ctx, u.gw.config().agentTimeout())
	defer cancel()
	res, err := c.session.CreateMessage(ctx, req.Params)
	return res, u.agentWaitErr(ctx, c, err)
}

// askingAgent records that the upstream waits for the agent of call c
// until the returned func is called: for c, and for the agent's other calls
// on the upstream, since a 2025-11-25 upstream's request may belong to any
// of them (caller cannot tell), and the one it belongs to must not time out.
func (u *upstream) askingAgent(c *inflight) func() {
	ends := []func(){c.askingAgent()}
	if c.session != nil {
		for _, o := range u.callers(c.session) {
			if o != c {
				ends = append(ends, o.askingAgent())
			}
		}
	}
	return func() {
		for _, end := range ends {
			end()
		}
	}
}

// agentWaitErr returns err, the end of a request to the agent of call c
// on ctx, saying so when agent_timeout ended it. The agent's own error
// answer goes to the upstream as it came (its code and message): the
// SDK's "calling ..." around it, the upstream's SDK adds again.
func (u *upstream) agentWaitErr(ctx context.Context, c *inflight, err error) error {
	if err != nil && errors.Is(ctx.Err(), context.DeadlineExceeded) && c.ctx.Err() == nil {
		return fmt.Errorf("credgate: the agent did not answer within agent_timeout (%s)", u.gw.config().agentTimeout())
	}
	if je, ok := errors.AsType[*jsonrpc.Error](err); ok {
		return je
	}
	return err
}

// agentLacks refuses an upstream's request (method, with params p) to the
// agent of call c when that agent did not declare the capability it needs
// (inputNeed). The call, should it fail, fails with the reason, typed
// invalid_request (the upstream's tool turned the refusal into its own
// error, typed upstream_error: found trying the gateway from outside).
func (u *upstream) agentLacks(c *inflight, method string, p any) error {
	need := inputNeed(clientCaps(c.session), p)
	if need == "" {
		return nil
	}
	why := fmt.Sprintf("upstream %q sent %s during the call, and the agent declared no %s capability: it cannot be asked", u.name, method, need)
	if r := inputRoundFrom(c.ctx); r != nil {
		r.refused.Store(&why)
	}
	return fmt.Errorf("credgate: the agent calling upstream %q does not support %s (it declared no %s capability)", u.name, method, need)
}

// noMidCallRequests refuses an upstream's request (method) to the agent of
// call c, sent while c runs, when that agent speaks 2026-07-28: that
// protocol has no requests to the client during a call (a 2026-07-28
// upstream asks in its result, inputRequests, which reach the agent), and
// the SDK's refusal spoke to a server's developer ("return an
// InputRequests map instead"). The call, should it fail, fails with the
// reason, typed (see refusedInput).
func (u *upstream) noMidCallRequests(c *inflight, method string) error {
	if c.session == nil {
		return nil
	}
	p := c.session.InitializeParams()
	if p == nil || p.ProtocolVersion < protocol20260728 {
		return nil
	}
	why := fmt.Sprintf("upstream %q sent %s during the call (it speaks %s), and the agent speaks %s, which has no requests to the client during a call: the upstream cannot ask this agent; set upstreams.%s.protocol_version to 2026-07-28 if the server supports it, or call it from an agent on 2025-11-25 through a stateful gateway",
		u.name, method, u.negotiated(), p.ProtocolVersion, u.name)
	if r := inputRoundFrom(c.ctx); r != nil {
		r.refused.Store(&why)
	}
	return &jsonrpc.Error{Code: jsonrpc.CodeInvalidRequest, Message: "credgate: " + why}
}

// negotiated is the protocol version of u's shared session, or "an older
// protocol".
func (u *upstream) negotiated() string {
	if cs := u.session.Load(); cs != nil {
		if res := cs.InitializeResult(); res != nil && res.ProtocolVersion != "" {
			return res.ProtocolVersion
		}
	}
	return "an older protocol"
}

func clientCaps(ss *mcp.ServerSession) *mcp.ClientCapabilities {
	if p := ss.InitializeParams(); p != nil {
		return p.Capabilities
	}
	return nil
}

// logMessage passes a log message sent during calls to the agent making
// them, when there is one (see routeLog).
func (u *upstream) logMessage(agent *mcp.ServerSession, req *mcp.LoggingMessageRequest, idle *rate.Limiter) {
	if p := boundedLog(req.Params); p != req.Params {
		req = &mcp.LoggingMessageRequest{Session: req.Session, Params: p}
	}
	if u.gw.hasSecrets() {
		p, ok := redactedJSON(u.gw, req.Params)
		if !ok {
			// A secret the JSON could not lose (in a number, say): the
			// message goes without its data.
			p = &mcp.LoggingMessageParams{Level: req.Params.Level, Data: authmap.Redacted}
		}
		req = &mcp.LoggingMessageRequest{Session: req.Session, Params: p}
	}
	u.routeLog(agent, req.Params, idle)
}

func (u *upstream) resourceUpdated(ctx context.Context, req *mcp.ResourceUpdatedNotificationRequest) {
	u.gw.catalog.resourceUpdated(ctx, u.name, req.Params)
}
