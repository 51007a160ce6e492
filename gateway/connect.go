// The upstream's connect loop: connect, serve, reconnect with backoff.

package gateway

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"strings"
	"time"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/credgate/credgate/authmap"
)

// run connects, keeps the session alive and reconnects with exponential
// backoff and jitter until ctx is done.
func (u *upstream) run(ctx context.Context) {
	defer u.gw.recoverLog("upstream run", u.name)
	ctx = context.WithValue(ctx, ownTrafficKey{}, true) // its handshakes, listings, probes, streams
	u.mu.Lock()
	u.ctx = ctx
	u.mu.Unlock()
	defer u.closeAgents()
	defer u.closing.Wait()
	u.waitCredentials(ctx)
	var next *handoff // a session that replaces the last one (a rotated credential)
	for attempt := 0; ctx.Err() == nil; attempt++ {
		var sessCtx context.Context
		var endSession context.CancelFunc
		var cs *mcp.ClientSession
		var err error
		connected := func(*authmap.Failure, bool) {} // the breaker's report (issue 8)
		if next != nil {
			sessCtx, endSession, cs = next.ctx, next.end, next.cs
			next = nil
		} else {
			sessCtx, endSession = context.WithCancel(ctx)
			connected = u.admitConnect()
			phase := &connectPhase{}
			phase.active.Store(true)
			cs, err = u.connect(context.WithValue(sessCtx, connectingKey{}, phase), u.client, true)
			// The session's later GET streams fail as before.
			if refused := phase.end(); err == nil && refused != nil {
				// Its GET stream was refused for its credential: the
				// session is not used, and the upstream is down with
				// that failure.
				_ = cs.Close()
				cs, err = nil, refused
			}
			if err == nil && u.cfg.URL != "" {
				if f, dead := u.ownCredentialDead(ctx); dead {
					// Found dead while connecting (a peer replica's
					// finding after initialize went out): the session
					// is not used, and the upstream is down with the
					// credential's failure, as if initialize had been
					// refused.
					_ = cs.Close()
					cs, err = nil, &gatedError{f: f}
				}
			}
			u.gw.metrics.connectAttempt(ctx, u.name, err)
		}
		if err != nil {
			u.connectFailures.Add(1)
			endSession()
			if ctx.Err() != nil {
				connected(nil, true)
				return
			}
			f := u.setDown(err)
			connected(&f, false)
			u.useCachedCatalog(ctx) // issue 11: a replica's last listing, while it has none
			u.ownTrafficRejected(ctx, err, f)
			u.creds.tried.Store(u.creds.trying.Load())
			u.markTried()
			wait := u.gw.backoff(attempt)
			if limited(f) && f.RetryAfterSeconds != nil {
				// Not before the limit resets: an attempt sooner would
				// send the limited credential again.
				// Bounded: a reset hours away (a quota) is not waited
				// out whole; a changed credential wakes the loop anyway.
				wait = max(wait, min(time.Duration(*f.RetryAfterSeconds)*time.Second, maxLimitWait))
			}
			if !u.backoffSleep(ctx, wait) {
				return
			}
			continue
		}
		connected(nil, false)
		child := u.childOutput()
		u.setLogLevel(ctx, cs)
		u.current.Store(cs)
		u.session.Store(cs)
		listErr := u.list(ctx, cs)
		if listErr != nil {
			u.log.Warn().Str(fieldErr, u.gw.redact(listErr.Error())).Msg("listing the upstream's catalog failed")
		}
		u.setUp(listErr)
		u.creds.tried.Store(u.creds.trying.Load())
		u.markTried()
		go u.resubscribe(ctx, cs)
		began := time.Now()
		probeCtx, stopProbe := context.WithCancel(sessCtx)
		probeDone := u.watch(probeCtx, cs)
		next = u.serve(ctx, cs)
		stopProbe()
		<-probeDone
		if next != nil {
			// The credential rotated: the new session takes new calls at
			// once, the old one finishes its calls in flight, then closes.
			u.handOver(cs, next, endSession, child)
			u.creds.tried.Store(u.creds.sharedGen.Load())
			attempt = -1
			continue
		}
		lost := !u.session.CompareAndSwap(cs, nil)
		u.current.Store(nil)
		if lost {
			// A call or a probe proved the session dead and marked the
			// upstream down: reconnect now, and let the old session's
			// other calls end on their own (a hung upstream holds them
			// until their timeout).
			u.closing.Go(func() {
				defer u.gw.recoverLog("closing a lost session", u.name)
				_ = cs.Close()
				endSession()
				u.explainDown(child)
			})
		} else {
			_ = cs.Close()
			endSession()
		}
		if ctx.Err() != nil {
			return
		}
		if !lost {
			u.setDown(u.withStderr(fmt.Errorf("session ended: %w", mcp.ErrConnectionClosed), child))
		}
		// A session that ends soon after it began counts as a failed
		// attempt, so an upstream that accepts and then drops connections
		// is retried with backoff, not in a tight loop. A credential that
		// changes ends the wait, as after a failed connect: a probe held
		// back by a rejected value takes the session down this way, and
		// the rotation that fixes it waited out the backoff.
		if time.Since(began) >= u.gw.opts.ReconnectMax {
			attempt = -1
			continue
		}
		if !u.backoffSleep(ctx, u.gw.backoff(attempt)) {
			return
		}
	}
}

// maxLimitWait bounds how long the connect loop waits for a rate limit's or
// quota's reset before it tries again.
const maxLimitWait = 15 * time.Minute

// serve waits for the session to end or be lost, refreshing the catalog on
// request. When the credential in a stdio child's environment rotates, it
// returns the session started with the new value, which replaces cs.
func (u *upstream) serve(ctx context.Context, cs *mcp.ClientSession) *handoff {
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = cs.Wait()
	}()
	// Relisting is spaced by relistGap: an upstream sending list_changed
	// without end (a storm) costs a bounded share of a CPU, however long its
	// lists, and is never ignored: the last change is always listed.
	var next time.Time          // when the catalog may be listed again
	var relist <-chan time.Time // the deferred listing, while one waits
	list := func() {
		began := time.Now()
		if err := u.list(ctx, cs); err != nil && ctx.Err() == nil {
			u.log.Warn().Str(fieldErr, u.gw.redact(err.Error())).Msg("refreshing the upstream's catalog failed")
			u.setErr(err)
		}
		next = time.Now().Add(relistGap(time.Since(began)))
	}
	for {
		select {
		case <-ctx.Done():
			_ = cs.Close()
			<-done
			return nil
		case <-done:
			return nil
		case <-u.lostSig:
			if u.session.Load() != cs {
				return nil // the signal may be a previous session's
			}
		case <-u.creds.rotate:
			if h := u.rotated(ctx); h != nil {
				return h
			}
			if h := u.downgraded(ctx); h != nil {
				return h
			}
		case <-u.refresh:
			if relist != nil {
				continue // already due
			}
			if wait := time.Until(next); wait > 0 {
				relist = time.After(wait)
				continue
			}
			list()
		case <-relist:
			relist = nil
			list()
		}
	}
}

// relistGap is the pause after a catalog listing that took took before the
// next: four times as long (a storm of list_changed costs at most a fifth of
// a CPU), and at least 100 ms.
func relistGap(took time.Duration) time.Duration {
	return max(100*time.Millisecond, 4*took)
}

// lost ends the shared session cs, which err proved dead (a call whose
// connection is gone, a failed probe): the upstream shows as down at once
// with err as the reason, and run reconnects. It reports whether cs is a
// shared session (a former one is already being closed by run); a per-agent
// session is left to the caller.
func (u *upstream) lost(cs *mcp.ClientSession, err error) bool {
	if cs == nil || u.current.Load() != cs {
		return u.cfg.Session != SessionPerAgent
	}
	if u.session.CompareAndSwap(cs, nil) {
		u.setDown(err)
		select {
		case u.lostSig <- struct{}{}:
		default:
		}
	}
	return true
}

// begin and end bracket a call on cs; shared reports whether cs is the
// shared session, whose liveness the calls prove (see watch).
func (u *upstream) begin(cs *mcp.ClientSession) (shared bool) {
	if cs != u.current.Load() {
		return false
	}
	u.busy.Add(1)
	return true
}

func (u *upstream) end(shared bool, err error) {
	if !shared {
		return
	}
	if err == nil || answered(err) {
		u.lastAnswer.Store(time.Now().UnixNano())
	}
	u.busy.Add(-1)
}

func (u *upstream) requestRefresh() {
	select {
	case u.refresh <- struct{}{}:
	default:
	}
}

// connect starts a session on ctx, which must live as long as the session:
// the SSE transport holds its event stream on it. The connect timeout ends
// only the handshake.
//
// loop is the connect loop's own session (the shared one), whose attempts
// decide the version a stdio child is asked for (see upstream.probeOlder).
func (u *upstream) connect(ctx context.Context, client *mcp.Client, loop bool) (*mcp.ClientSession, error) {
	handshake, cancel := context.WithCancelCause(ctx)
	bound := min(u.cfg.timeout(), u.gw.opts.ConnectTimeout)
	probing := loop && u.cfg.ProtocolVersion == "" && u.cfg.Transport == TransportStdio
	if took := time.Duration(u.olderTook.Load()); probing && took > 0 && !u.probeOlder.Load() {
		bound = min(bound, max(5*time.Second, 4*took))
	}
	start := time.Now()
	timer := time.AfterFunc(bound, func() { cancel(errTimeout) })
	defer func() {
		if !timer.Stop() {
			cancel(errTimeout) // the handshake timed out; its context is done anyway
		}
	}()
	ctx = handshake
	var t mcp.Transport
	var child *childStderr
	var credGen uint64
	var credVal string
	var conn *stdioConn // a stdio child's, once started
	closeStderr := func() {}
	switch u.cfg.Transport {
	case TransportStdio:
		// The credential the child reads from its environment (issue 7):
		// the call's (a session of its own), else the upstream's default.
		extra, gen, err := u.childCredential(ctx)
		credGen = gen
		if client == u.client {
			if c := u.gw.credential(u.defaultCred); gen == 0 && c != nil {
				gen = c.Generation() // no child started: this attempt's outcome is the value's all the same
			}
			u.creds.trying.Store(gen)
		}
		for _, v := range extra {
			credVal = v // its one entry
		}
		if err != nil {
			return nil, &connectError{err}
		}
		// HTTP transports count notifications in the response body (see
		// httpTransport); wrapping their connection would hide the SDK's
		// own interfaces on it.
		var cmd mcp.Transport
		cmd, child, closeStderr = u.command(client == u.client, extra, func(c *stdioConn) { conn = c })
		t = countingTransport{Transport: cmd, n: &u.notes}
	case TransportSSE:
		t = &mcp.SSEClientTransport{Endpoint: u.cfg.URL, HTTPClient: u.http.client(), MaxEventSize: u.limit.backstop()}
	default:
		t = &mcp.StreamableClientTransport{Endpoint: u.cfg.URL, HTTPClient: u.http.client(), MaxEventSize: u.limit.backstop()}
	}
	t = u.watchListings(t, client)
	// A fresh counter per session: a dead session's unhandled notifications
	// must not hold up the next one's calls.
	u.notes.read.Store(u.notes.handled.Load())
	var opts *mcp.ClientSessionOptions
	version := u.cfg.ProtocolVersion
	if version == "" && (u.inputOlder.Load() || (probing && u.probeOlder.Load()) || (!probing && u.workOlder.Load())) {
		version = olderProtocol
	}
	if version != "" {
		opts = &mcp.ClientSessionOptions{ProtocolVersion: version}
	}
	cs, err := client.Connect(ctx, t, opts)
	closeStderr() // the child, if started, has its own copy
	if err != nil {
		hung := errors.Is(context.Cause(handshake), errTimeout)
		ended := conn != nil && (errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, mcp.ErrConnectionClosed))
		err = u.withStderr(err, child)
		if hung {
			err = &timeoutError{after: bound, err: err} // a hang, not a refusal
		}
		if _, rejected := u.gw.stderrRejection(u, err, u.gw.knowledgeAs(u, u.defaultCred)); probing && (hung || ended) && !rejected {
			// (Not one that exited saying its credential was rejected:
			// another protocol version would not help it.)
			// A child that does not know 2026-07-28 may ignore its first
			// request (server/discover) or exit on it, rather than answer
			// "method not found", which the SDK would fall back from at
			// once (found trying the gateway from outside): the next
			// attempt asks the other version.
			asked, next := protocol20260728, olderProtocol
			if version != "" {
				asked, next = next, asked
			}
			u.probeOlder.Store(version == "")
			if version == "" {
				why := err.Error()
				if child != nil && child.useful() != "" {
					why = child.useful()
				}
				why = u.gw.redact(why)
				u.newestFailed.Store(&why)
			}
			err = fmt.Errorf("%w (asked for MCP %s; the next attempt asks for %s; upstreams.%s.protocol_version chooses one)", err, asked, next, u.name)
		}
		return nil, &connectError{err}
	}
	if probing {
		// The upstream's other sessions ask what this one came up with;
		// its next reconnect tries the newest first again.
		u.workOlder.Store(version != "")
		u.probeOlder.Store(false)
		if version != "" {
			u.olderTook.Store(int64(time.Since(start)))
		} else {
			u.olderTook.Store(0)
		}
		if version != "" && !u.inputOlder.Load() { // asked the older version on purpose: toOlder said why
			ev := u.log.Warn().Str("protocol_version", olderProtocol)
			if why := u.newestFailed.Load(); why != nil {
				ev = ev.Str("newest_failed", *why)
			}
			ev.Msg("the child came up when asked for the older MCP version, after the newest got no answer or ended it (newest_failed). " +
				"If that was the version, set protocol_version: 2025-11-25 to skip the attempt; if it was not (a port still in use, a slow start), " +
				"nothing is needed: its next reconnect asks for the newest first (protocol_version: 2026-07-28 never asks for the older)")
		}
	}
	if conn != nil {
		u.stdio.Store(cs, conn)
		conn.onEnded(func() { u.stdio.Delete(cs) })
	}
	u.connected(client, credGen, credVal)
	return cs, nil
}

// connectError is a handshake's failure: a session that never came up,
// where a failure of the same kind later is a lost connection.
type connectError struct{ err error }

func (e *connectError) Error() string { return "connect: " + e.err.Error() }
func (e *connectError) Unwrap() error { return e.err }

// olderProtocol is the version asked of an upstream whose handshake at
// the newest failed (see upstream.askOlder).
const olderProtocol = "2025-11-25"

// stdioConn returns the connection of cs, a session of u, if it is one to a
// stdio child still open: credgate's own calls can go on it (see
// stdioConn.call). It returns nil for other transports and ended sessions.
func (u *upstream) stdioConn(cs *mcp.ClientSession) *stdioConn {
	if c, ok := u.stdio.Load(cs); ok {
		return c.(*stdioConn)
	}
	return nil
}

// backoff returns the wait before reconnect attempt n (0-based): exponential
// from Options.ReconnectMin to Options.ReconnectMax, with full jitter in the
// upper half so that upstreams failing together do not retry together.
func (g *Server) backoff(n int) time.Duration {
	d := g.opts.ReconnectMin
	for i := 0; i < n && d < g.opts.ReconnectMax; i++ {
		d *= 2
	}
	d = min(d, g.opts.ReconnectMax)
	return d/2 + rand.N(d/2+1)
}

// setLogLevel asks a 2025-11-25 upstream for all its log messages: the SDK
// sends none until a level is set, and each agent's own level filters them on
// the way out. 2026-07-28 sessions carry the level per request instead.
func (u *upstream) setLogLevel(ctx context.Context, cs *mcp.ClientSession) {
	res := cs.InitializeResult()
	if res == nil || res.Capabilities == nil || res.Capabilities.Logging == nil || newProtocol(cs) {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, u.cfg.timeout())
	defer cancel()
	if err := cs.SetLoggingLevel(ctx, &mcp.SetLoggingLevelParams{Level: "debug"}); err != nil {
		u.log.Debug().Str(fieldErr, u.gw.redact(err.Error())).Msg("setting the upstream's log level failed")
	}
}

// awaitSession waits, for at most the connect timeout, for a session other
// than old, and returns it (nil if none came).
func (u *upstream) awaitSession(ctx context.Context, ss *mcp.ServerSession, old *mcp.ClientSession) *mcp.ClientSession {
	ctx, cancel := context.WithTimeout(ctx, min(u.cfg.timeout(), u.gw.opts.ConnectTimeout))
	defer cancel()
	if u.cfg.Session == SessionPerAgent && ss != nil {
		if cs, err := u.sessionFor(ctx, ss); err == nil && cs != old {
			return cs
		}
		return nil
	}
	failures := u.connectFailures.Load()
	t := time.NewTicker(10 * time.Millisecond)
	defer t.Stop()
	for {
		if cs := u.session.Load(); cs != nil && cs != old {
			return cs
		}
		if u.connectFailures.Load() != failures {
			return nil // the upstream is down, not restarting
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// olderInputMarker is how a server refuses, on a 2026-07-28 session, to
// send an agent a request mid-call (go-sdk v1.8.0's ServerSession: "...
// cannot be sent while serving a request on protocol version 2026-07-28:
// return an InputRequests map instead").
const olderInputMarker = "cannot be sent while serving a request on protocol version"

// olderInput reports whether a call on cs failed because the stdio child
// asked for input the pre-2026-07-28 way on a 2026-07-28 session, which
// the gateway chose for it (no protocol_version): a go-sdk server whose
// tools call Session.Elicit or CreateMessage works with agents of every
// version directly, and failed every such call through the gateway (found
// trying the gateway from outside).
func (u *upstream) olderInput(cs *mcp.ClientSession, res *mcp.CallToolResult, err error) bool {
	if u.cfg.Transport != TransportStdio || u.cfg.ProtocolVersion != "" || cs == nil {
		return false
	}
	if ir := cs.InitializeResult(); ir == nil || ir.ProtocolVersion < protocol20260728 {
		return false
	}
	if err != nil {
		var rpc *jsonrpc.Error
		return errors.As(err, &rpc) && strings.Contains(rpc.Message, olderInputMarker)
	}
	// A tool error that is the refusal alone, not a result that merely
	// quotes it (a search through the SDK's source, a nested gateway's
	// failure detail).
	if res != nil && res.IsError && len(res.Content) == 1 {
		t, ok := res.Content[0].(*mcp.TextContent)
		return ok && len(t.Text) < 512 && strings.Contains(t.Text, olderInputMarker)
	}
	return false
}

// toOlder has the upstream ask 2025-11-25 from now on, its shared child
// replaced by one at that version (as a rotated credential's is: calls in
// flight finish on the old one), and waits for the replacement, at most
// the connect timeout. It reports whether the call that found out may be
// sent again: on the new shared child.
func (u *upstream) toOlder(ctx context.Context, ss *mcp.ServerSession, cs *mcp.ClientSession) bool {
	if !u.inputOlder.Swap(true) {
		u.log.Warn().Str("protocol_version", olderProtocol).
			Msg("the upstream asked an agent for input mid-call the way MCP versions before 2026-07-28 do, which it refuses on a 2026-07-28 session: its sessions ask " + olderProtocol + " from now on (upstreams." + u.name + ".protocol_version chooses one)")
	}
	if cs != u.current.Load() {
		u.mu.Lock()
		a := u.agents[ss]
		own := ss != nil && a != nil && a.cs == cs
		u.mu.Unlock()
		if !own {
			// A credential's own child (per-tool credentials): replaced
			// as a rotation replaces it, calls in flight finishing on it.
			own = u.retireCredSession(cs)
		}
		if !own {
			u.kickRotation() // the shared child, if a rotation swapped it meanwhile
			return false
		}
		// The agent's own child (session: per_agent): dropped, so that the
		// call sent again opens one at the older version; the shared one
		// is replaced in the background.
		if a != nil && a.cs == cs {
			u.drop(ss, cs)
		}
		u.kickRotation()
		return true
	}
	failed := u.downgradeFailed.Load()
	u.kickRotation()
	// Replaced, or the child at the older version did not start.
	u.waitChild(ctx, func() bool {
		cur := u.current.Load()
		return cur != nil && cur != cs || u.downgradeFailed.Load() != failed
	})
	cur := u.current.Load()
	if cur == nil || cur == cs {
		return false
	}
	ir := cur.InitializeResult()
	return ir != nil && ir.ProtocolVersion < protocol20260728
}

// downgraded starts the shared session's successor at 2025-11-25 once the
// upstream must ask that version (inputOlder) and its session asked the
// newest; nil otherwise, or when the new child cannot start (the old one
// keeps serving).
func (u *upstream) downgraded(ctx context.Context) *handoff {
	cs := u.current.Load()
	if !u.inputOlder.Load() || cs == nil {
		return nil
	}
	if ir := cs.InitializeResult(); ir == nil || ir.ProtocolVersion < protocol20260728 {
		return nil
	}
	sessCtx, end := context.WithCancel(ctx)
	next, err := u.connect(sessCtx, u.client, false)
	if err != nil {
		end()
		u.downgradeFailed.Add(1)
		u.log.Warn().Str(fieldErr, u.gw.redact(err.Error())).Msg("a child at " + olderProtocol + " did not start; the old one keeps serving")
		return nil
	}
	return &handoff{ctx: sessCtx, end: end, cs: next}
}

// retireCredSession takes cs, if it is a credential's own child, out of the
// pool, so that the credential's next call opens a new one, and retires it
// in the background (calls in flight finish on it). It reports whether cs
// was one.
func (u *upstream) retireCredSession(cs *mcp.ClientSession) bool {
	u.creds.mu.Lock()
	var found *credConn
	for name, conn := range u.creds.conns {
		if conn.cs == cs {
			found = conn
			delete(u.creds.conns, name)
			break
		}
	}
	u.creds.mu.Unlock()
	if found == nil {
		return false
	}
	u.closing.Go(func() {
		defer u.gw.recoverLog("retiring a session", u.name)
		u.retire(cs)
		if found.end != nil {
			found.end()
		}
	})
	return true
}
