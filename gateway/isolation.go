package gateway

import (
	"context"
	"encoding/json"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
	"github.com/rs/zerolog"
	"golang.org/x/time/rate"
)

// Isolation between agents (issue 9).
//
// A log message an upstream sends on its shared session carries nothing that
// ties it to one call. It goes to the calls in flight on that upstream only
// when they all come from one agent (the same authenticated identity, or,
// without authentication, the same agent session); when calls from several
// agents are in flight, or none, it goes to the gateway's own log (debug)
// and to no agent, so that agent B never reads agent A's tool logs. On a
// per-agent session (session: per_agent) every message belongs to that
// session's agent and goes to it. Progress notifications carry the call's
// own token and always reach exactly the calling agent (see progressRouter).

// routeLog delivers an upstream's log message (already redacted) under the
// rule above. agent is the per-agent session it arrived on, nil for the
// shared session.
func (u *upstream) routeLog(agent *mcp.ServerSession, p *mcp.LoggingMessageParams, idle *rate.Limiter) {
	calls := u.callers(agent)
	if agent != nil && len(calls) == 0 {
		// A per-agent session has one agent: what its upstream logs between
		// calls is that agent's too, as a server talked to directly sends
		// it (it went to the gateway's log), within idle's rate, since no
		// call's budget bounds it.
		if !u.gw.wantsLog(agent, p.Level) {
			return
		}
		if idle == nil || !idle.Allow() {
			u.flood.droppedNotify()
			return
		}
		// Off the upstream's reading: an agent slow to take it must not
		// hold up the session's next messages (the rate bounds these).
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), idleLogWait)
			defer cancel()
			_ = agent.Log(ctx, p)
		}()
		return
	}
	if agent == nil {
		var principal any
		for _, c := range calls {
			who := c.agent()
			if name := agentName(c.ctx); name != "" {
				who = name
			}
			if principal != nil && principal != who {
				u.keepLog(p, "upstream log message while calls from several agents were in flight: kept here, sent to no agent")
				return
			}
			principal = who
		}
		if principal == nil {
			u.keepLog(p, "upstream log message outside any call: kept here, sent to no agent")
			return
		}
	}
	sent := map[any]bool{}
	for _, c := range calls {
		if sent[c.agent()] {
			continue // one copy per agent session, however many of its calls are in flight
		}
		sent[c.agent()] = true
		if !u.gw.wantsLog(c.session, p.Level) {
			continue
		}
		if !c.allowNotify() { // what the agent's level admits counts against the call's budget
			u.flood.droppedNotify()
			continue
		}
		if fs := fastStreamFrom(c.ctx); fs != nil {
			fs.notifyLog(c.session, p) // on the fast call's own answer (fastpath.go)
			continue
		}
		_ = c.session.Log(c.ctx, p)
	}
}

// idleLogRate and idleLogBurst bound the log messages a per-agent
// session's upstream sends its agent between calls; idleLogWait bounds the
// wait to hand one over.
const (
	idleLogRate  = rate.Limit(20)
	idleLogBurst = 50
	idleLogWait  = time.Second
)

// keepLog writes an upstream's log message that no agent gets to the
// gateway's log: at info for warnings and worse, at debug otherwise (an
// upstream's debug chatter must not flood the gateway's log). Its data was
// redacted on arrival, and is bounded here.
func (u *upstream) keepLog(p *mcp.LoggingMessageParams, msg string) {
	var ev *zerolog.Event
	switch p.Level {
	case "warning", "error", "critical", "alert", "emergency":
		ev = u.log.Info()
	default:
		ev = u.log.Debug()
	}
	if ev == nil {
		return // not logged at this level: skip the encoding
	}
	ev, ok := u.flood.keep.take(ev)
	if !ok {
		u.flood.count(dropLogLine)
		return
	}
	data, _ := json.Marshal(p.Data)
	ev.Str("upstream_level", string(p.Level)).Str("logger", p.Logger).Str("data", truncate(string(data), 1024)).Msg(msg)
}

// strayLine logs a line a stdio child wrote on stdout that is not JSON-RPC,
// skipped, redacted and cut, at most as often as keepLog logs: the lines
// not logged are not redacted either.
func (u *upstream) strayLine(st *strayLine) {
	u.flood.count(dropStrayLine)
	ev, ok := u.flood.keep.take(u.log.Info())
	if !ok {
		return
	}
	ev.Str(fieldStream, "stdout").Str("line", st.shown(u.gw.redactCut)).Msg("skipped a line on stdout that is not JSON-RPC (an MCP server writes only messages there; logs go to stderr)")
}
