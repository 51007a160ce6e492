package gateway

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/credgate/credgate/authmap"
	"github.com/credgate/credgate/breaker"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// Liveness of upstreams (issue 6 item 11).
//
// A dead upstream must show as down within seconds. Two things mark it down
// at once and make run reconnect (upstream.lost):
//
//   - a forwarded request whose error proves the connection gone (the
//     session closed or missing, the connection refused or reset): see
//     forward. Without this, a killed HTTP upstream stayed "up" for as long
//     as the SDK kept retrying its event stream (17-55 s).
//   - a failed probe: every health_interval, each connected upstream is
//     probed, one probe at a time per upstream (the loop below runs them in
//     sequence, so they are single-flight by construction). One failure is
//     enough: the probe waits min(timeout, health_interval) for an answer,
//     which is already a long time for a request that costs the upstream
//     nothing, and a wrong verdict costs only a reconnect.
//
// The probe is skipped while the upstream shows it is alive anyway: while
// calls are in flight on its shared session, or when one was answered
// within the interval; and while a call renews the upstream's credential
// after a rejection, which the probe would wait for (see renewing). A
// server that handles one request at a time (many stdio servers do) would
// not answer a ping during a long call, and taking it down for that would
// kill the call; a hung upstream's calls are bounded by their own timeout,
// and the first probe after them finds it.
//
// What counts as an answer: any response, even a JSON-RPC error ("method
// not found" from a server that does not implement ping is still a live
// server), and a rate limit or an exhausted quota of the upstream's
// credential (429: the provider answered), which opens the credential's
// breaker on the upstream until the limit's reset, as a call's would. The
// probe is skipped while that breaker is open for a limit: it would only
// send the limited credential again (found trying the gateway from
// outside: a 429 on a probe took the upstream down, and the reconnects sent
// the limited token 15 times within its Retry-After). A timeout, a dead or
// missing session, a network error or another HTTP failure (401 included:
// a rejected credential then shows in health as the auth_failure it is)
// fail the probe.
//
// The probe is MCP ping, except on 2026-07-28 sessions, where ping no longer
// exists (go-sdk v1.8.0 servers answer it with "method not found" and log an
// error, and reject it over stateless HTTP for lack of the per-request
// _meta): there it is the first page of tools/list (or prompts/list,
// resources/list for servers without tools). A list result the upstream lets
// the client cache (ttlMs) is served from the cache within its TTL; liveness
// is then checked once per TTL.

// watch probes cs every health interval until ctx ends; the first failure
// ends the session (lost). The returned channel is closed when it stops.
func (u *upstream) watch(ctx context.Context, cs *mcp.ClientSession) <-chan struct{} {
	done := make(chan struct{})
	// Read at every turn: a reload may change the top-level health_interval.
	interval := func() time.Duration { return u.gw.config().healthInterval(u.cfg) }
	go func() {
		defer close(done)
		defer u.gw.recoverLog("health probe", u.name)
		busy := func() bool {
			u.probeTurns.Add(1)
			last := time.Unix(0, u.lastAnswer.Load())
			return u.busy.Load() > 0 || time.Since(last) < interval() || u.ownCredLimited() || u.renewing()
		}
		probe := func(ctx context.Context) error {
			err := u.probe(ctx, cs, min(u.cfg.timeout(), interval()))
			if err == nil {
				u.probeAnswered()
			}
			if err == nil || ctx.Err() != nil {
				return err
			}
			if errors.Is(err, errProbeHeld) {
				// The probe waited behind a renewal of the upstream's
				// credential (a call found it rejected) until its time
				// was up: the upstream was not asked, and a slow source
				// (Vault, an exec command) made it a "timeout" that took
				// the upstream down and failed the very call the renewal
				// was for (found trying the gateway from outside). The
				// next turn asks again.
				return nil
			}
			if f, _ := u.gw.classify(u, err); limited(f) {
				// The provider answered: the upstream is alive, its
				// credential limited. Its breaker holds the probes (and
				// the calls) back until the limit's reset. The credential
				// is marked first: an open breaker shows a limited one.
				u.ownTrafficRejected(ctx, err, f)
				u.ownTrafficLimited(f)
				return nil
			}
			return err
		}
		probeLoop(ctx, interval, busy, probe, func(err error) {
			u.log.Debug().Str(fieldErr, u.gw.redact(err.Error())).Msg("health probe failed")
			u.lost(cs, err)
			f, _ := u.gw.classify(u, err)
			// Not with ctx: the session's end, which lost starts, ends it,
			// and with it the renewal a rejected credential needs (it was
			// killed at once, and the credential reported invalid: found
			// trying the gateway from outside). The renewal runs on its
			// own; the reconnect waits in its backoff, which a new value
			// ends.
			rctx, gen := context.WithoutCancel(ctx), u.ownGeneration()
			u.gw.wg.Go(func() {
				defer u.gw.recoverLog("credential renewal after a probe", u.name)
				u.ownTrafficRejectedAt(rctx, err, f, gen)
			})
		})
	}()
	return done
}

// renewing reports whether a call is renewing the credential value the
// upstream's own HTTP traffic sends, after a rejection: that traffic, the
// probe included, waits for the outcome (see suspect and credentialGate).
// A stdio child's credential is in its environment: its probe never waits.
func (u *upstream) renewing() bool {
	if u.defaultCred == "" || u.cfg.Transport == TransportStdio {
		return false
	}
	c := u.gw.credential(u.defaultCred)
	return c != nil && u.gw.held(u.defaultCred, c.Value())
}

// errProbeHeld is a probe whose time ran out while it waited for a renewal
// of the upstream's credential (see probeHold): it asked nothing.
var errProbeHeld = errors.New("health probe: held behind a renewal of the upstream's credential")

// probeHold marks a probe's context; credentialGate sets it when the probe
// waited behind a renewal.
type probeHold struct{ waited atomic.Bool }

type probeHoldKey struct{}

func probeHoldFrom(ctx context.Context) *probeHold {
	h, _ := ctx.Value(probeHoldKey{}).(*probeHold)
	return h
}

// probeAnswered counts a health probe's answer as a success of the
// upstream's breaker when it is half-open after failed connects: the
// reconnect that ended them came while it was open, and was not counted,
// so an idle upstream that came back stayed half-open, shown as such in
// /health and the metrics, until a call came (found trying the gateway
// from outside). A breaker that calls opened (timeouts, 5xx answers) is
// left to calls: an upstream may answer pings and fail its calls.
//
// So does the upstream's credential's breaker, half-open after a rate limit
// or quota's reset, when the probe sent that credential (over HTTP): on an
// upstream no call then used, it stayed half-open for good, and a breaker
// that does not close for 15 minutes files a ticket (found trying the
// gateway from outside).
func (u *upstream) probeAnswered() {
	if st, reason := u.gw.breakers.State(u.name); st == breaker.StateHalfOpen && reason == reasonConnect {
		if done, err := u.gw.breakers.Allow(u.name, 0); err == nil {
			done(breaker.Success())
		}
	}
	if u.defaultCred == "" || u.cfg.Transport == TransportStdio {
		return
	}
	name := breaker.Name(u.name, u.defaultCred)
	st, reason := u.gw.breakers.State(name)
	if st != breaker.StateHalfOpen || !limitReason(reason) {
		return
	}
	if c := u.gw.credential(u.defaultCred); c != nil {
		if done, err := u.gw.breakers.Allow(name, c.Generation()); err == nil {
			done(breaker.Success())
		}
	}
}

// probeLoop calls probe an interval after the previous one ended, until ctx
// ends, skipping a turn when busy reports true. The first failure is handed
// to fail and ends the loop. Probes never overlap, nor follow each other
// back to back after a slow one. interval is read at every turn.
func probeLoop(ctx context.Context, interval func() time.Duration, busy func() bool, probe func(context.Context) error, fail func(error)) {
	t := time.NewTimer(interval())
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if !busy() {
			if err := probe(ctx); err != nil && ctx.Err() == nil {
				fail(err)
				return
			}
		}
		t.Reset(interval())
	}
}

// probe asks the upstream for a sign of life on cs, waiting at most d.
func (u *upstream) probe(ctx context.Context, cs *mcp.ClientSession, d time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	hold := new(probeHold)
	ctx = context.WithValue(ctx, probeHoldKey{}, hold)
	var err error
	var caps *mcp.ServerCapabilities
	if res := cs.InitializeResult(); res != nil {
		caps = res.Capabilities
	}
	switch {
	case !newProtocol(cs) || caps == nil:
		err = cs.Ping(ctx, nil)
	case caps.Tools != nil:
		_, err = cs.ListTools(ctx, nil)
	case caps.Prompts != nil:
		_, err = cs.ListPrompts(ctx, nil)
	case caps.Resources != nil:
		_, err = cs.ListResources(ctx, nil)
	default:
		err = cs.Ping(ctx, nil)
	}
	if err == nil || answered(err) {
		return nil
	}
	if errors.Is(ctx.Err(), context.DeadlineExceeded) && hold.waited.Load() {
		return errProbeHeld
	}
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		// A timeoutError, so that the failure in health names the probe's
		// wait, not the upstream's call timeout.
		return fmt.Errorf("health probe: %w", &timeoutError{after: d, err: err})
	}
	return fmt.Errorf("health probe: %w", err)
}

// answered reports whether err is the upstream's own answer (a JSON-RPC
// error), which shows it alive.
//
// The SDK reports some local failures as JSON-RPC errors too: a request the
// streamable HTTP transport could not deliver (connection refused or reset,
// an HTTP failure) wraps "rejected by transport" (-32005), and a call on a
// closing session gets "client is closing" (-32003) or "server is closing"
// (-32004). None of them came from the upstream, so none shows it alive:
// taking them for answers kept a killed HTTP upstream "up" until the SDK gave
// up on its event stream (issue 6 item 11).
func answered(err error) bool {
	var rpc *jsonrpc.Error
	if !errors.As(err, &rpc) {
		return false
	}
	switch {
	case rpc.Code == -32005 && rpc.Message == "rejected by transport",
		rpc.Code == -32003 && rpc.Message == "client is closing",
		rpc.Code == -32004 && rpc.Message == "server is closing":
		return false
	}
	return true
}

// limited reports whether f is a rate limit or an exhausted quota: the
// provider answered, and will again once the limit resets.
func limited(f authmap.Failure) bool {
	return f.IsAuth() && (f.Subtype == authmap.SubtypeRateLimitReached || f.Subtype == authmap.SubtypeQuotaExhausted)
}

// ownCredLimited reports whether the breaker of the upstream's own
// credential on it is open for a rate limit or an exhausted quota.
func (u *upstream) ownCredLimited() bool {
	c := u.gw.credential(u.defaultCred)
	if c == nil {
		return false
	}
	var oe *breaker.OpenError
	err := u.gw.breakers.Check(breaker.Name(u.name, u.defaultCred), c.Generation())
	return errors.As(err, &oe) && limitReason(oe.Reason)
}

// limitReason reports whether a breaker's reason is a rate limit or an
// exhausted quota (limited, for a breaker's reason).
func limitReason(reason string) bool {
	return reason == string(authmap.SubtypeRateLimitReached) || reason == string(authmap.SubtypeQuotaExhausted)
}

// ownTrafficLimited opens the breaker of the upstream's own credential on
// it for f, a limit its own request met, as a call meeting it would.
func (u *upstream) ownTrafficLimited(f authmap.Failure) {
	c := u.gw.credential(u.defaultCred)
	if c == nil || f.Credential != u.defaultCred {
		return
	}
	done, err := u.gw.breakers.Allow(breaker.Name(u.name, u.defaultCred), c.Generation())
	if err != nil {
		return // already open
	}
	_, out := breakerOutcomes(nil, &f)
	u.gw.credCauses.Store(u.defaultCred, credCause{f: f, gen: c.Generation()})
	done(out)
}
