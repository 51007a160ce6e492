package gateway

import (
	"context"

	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// Resource subscriptions on an upstream's shared session. The session is
// the upstream's one client for every agent, and a subscription on it is
// one: an agent's unsubscribe, forwarded as it came, ended every other
// agent's subscription to that resource (found trying the gateway from
// outside). The gateway subscribes for the first agent and unsubscribes
// after the last; which agents get an update is the SDK server's
// bookkeeping of each agent session's own subscriptions. A session of one
// agent (session: per_agent) forwards each as it comes.

// holdSubscription records that agent session ss subscribes to uri (sub) or
// unsubscribes from it, and reports whether the request goes to the
// upstream: the first subscription, the last unsubscription. undo takes the
// change back, for a request the upstream refused.
func (u *upstream) holdSubscription(uri string, ss *mcp.ServerSession, sub bool) (send bool, undo func()) {
	if ss == nil || u.cfg.Session == SessionPerAgent {
		return true, func() {}
	}
	u.subsMu.Lock()
	defer u.subsMu.Unlock()
	if u.subs == nil {
		u.subs = map[string]map[*mcp.ServerSession]struct{}{}
	}
	holders := u.subs[uri]
	_, held := holders[ss]
	if sub {
		if held {
			return true, func() {} // again: the upstream's answer is the agent's
		}
		if holders == nil {
			holders = map[*mcp.ServerSession]struct{}{}
			u.subs[uri] = holders
		}
		holders[ss] = struct{}{}
		u.watchSubscriber(ss)
		return len(holders) == 1, func() {
			u.subsMu.Lock()
			defer u.subsMu.Unlock()
			u.dropSubscription(uri, ss)
		}
	}
	if !held {
		return len(holders) == 0, func() {} // not this agent's: forwarded only if no one holds it
	}
	u.dropSubscription(uri, ss)
	last := len(u.subs[uri]) == 0
	return last, func() { u.keepSubscription(uri, ss) }
}

// dropSubscription forgets ss's subscription to uri; subsMu is held.
func (u *upstream) dropSubscription(uri string, ss *mcp.ServerSession) {
	delete(u.subs[uri], ss)
	if len(u.subs[uri]) == 0 {
		delete(u.subs, uri)
	}
}

func (u *upstream) keepSubscription(uri string, ss *mcp.ServerSession) {
	u.subsMu.Lock()
	defer u.subsMu.Unlock()
	if u.subs[uri] == nil {
		u.subs[uri] = map[*mcp.ServerSession]struct{}{}
	}
	u.subs[uri][ss] = struct{}{}
}

// watchSubscriber forgets ss's subscriptions when it ends (an agent that
// went away without unsubscribing), unsubscribing the shared session from
// those no one else holds; subsMu is held.
func (u *upstream) watchSubscriber(ss *mcp.ServerSession) {
	if u.subscribers == nil {
		u.subscribers = map[*mcp.ServerSession]struct{}{}
	}
	if _, ok := u.subscribers[ss]; ok {
		return
	}
	u.subscribers[ss] = struct{}{}
	go func() {
		_ = ss.Wait()
		u.subsOp.Lock()
		defer u.subsOp.Unlock()
		u.subsMu.Lock()
		delete(u.subscribers, ss)
		var gone []string
		for uri, holders := range u.subs {
			if _, ok := holders[ss]; ok {
				u.dropSubscription(uri, ss)
				if len(u.subs[uri]) == 0 {
					gone = append(gone, uri)
				}
			}
		}
		u.subsMu.Unlock()
		cs := u.session.Load()
		if cs == nil {
			return
		}
		for _, uri := range gone {
			ctx, cancel := context.WithTimeout(context.Background(), u.cfg.timeout())
			_ = cs.Unsubscribe(ctx, &mcp.UnsubscribeParams{URI: uri})
			cancel()
		}
	}()
}

// resubscribe subscribes cs, a new shared session (the upstream restarted,
// or the gateway reconnected), to the resources agents hold: the old
// session's subscriptions went with it.
func (u *upstream) resubscribe(ctx context.Context, cs *mcp.ClientSession) {
	if u.cfg.Session == SessionPerAgent {
		return
	}
	u.subsOp.Lock()
	defer u.subsOp.Unlock()
	u.subsMu.Lock()
	uris := make([]string, 0, len(u.subs))
	for uri := range u.subs {
		uris = append(uris, uri)
	}
	u.subsMu.Unlock()
	for _, uri := range uris {
		sctx, cancel := context.WithTimeout(ctx, u.cfg.timeout())
		err := cs.Subscribe(sctx, &mcp.SubscribeParams{URI: uri})
		cancel()
		if err != nil {
			u.log.Warn().Str(fieldErr, u.gw.redact(err.Error())).Msg("subscribing the new session to a resource agents hold failed")
		}
	}
}
