package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/credgate/credgate/authmap"
	"github.com/credgate/credgate/breaker"
	"github.com/credgate/credgate/routing"
)

// Routes in the call path (issue 8).
//
// A route sends the calls of one exposed tool to the first usable of its
// targets, and on to the next when a target cannot serve a call:
//
//	tools/call "search" ──► toolHandler: snapshot.routes.Lookup("search")
//	   │
//	   ▼
//	routing.Candidates(route, routeIndex) ── per target, lazily, until one
//	   │              is usable: upstream connected? credential has a value,
//	   │              not revoked, invalid or answered expired, not held
//	   │              for a renewal? breakers admit (Check: no ticket
//	   │              taken)? Past a clock expiry: usable, a last resort.
//	   ▼
//	callToolOn(first usable, mapped arguments) ── the ordinary call path:
//	   │       credential gate, breakers (Allow), forward, classify, report
//	   ▼
//	failed for a reason in `on`, before it ran upstream (credential
//	rejected, rate limited, connection refused, breaker open, not
//	connected)? ──► the next target, the same call. Any other failure
//	moves on only for retry_safe routes or tools annotated readOnlyHint or
//	idempotentHint.
//	   │
//	   ▼
//	served by another target than the primary: _meta["dev.credgate/route"]
//	= {served_by, reason, attempts}; no target served: the last typed
//	failure, with the attempts.
//
// Unusable targets are passed over without a call, except the last one,
// which is called so that the agent gets its typed failure (which is then
// answered without sending anything: the gate, the breaker or the missing
// session refuses it).
//
// /health (routes) and routing.hide_unavailable ask about every target
// (routing.Select, routing.Active). A call whose credential a backup could
// replace does not wait for that credential: it is not held behind another call's renewal, and when the
// provider rejects it as expired or invalid, the renewal goes on in the
// background while the call moves to the backup at once (failing over wins
// over waiting). The rejection still opens the credential's breaker and
// feeds the credential's status, so the dead token is not sent again until
// the credential changes.

// fieldRoute is the log field of a route (its exposed tool name).
const fieldRoute = "route"

// newRoutes builds the routing table of cfg, or nil when it has none. A
// config reload calls it to build its new snapshot; cfg was validated.
func newRoutes(cfg *Config) (*routing.Routes, error) {
	if len(cfg.Routes) == 0 {
		return nil, nil
	}
	return routing.NewRoutes(cfg.Routes)
}

// validateRoutes checks routes and routing: each route's syntax (see
// routing.RouteConfig.Validate) and that each target names a configured
// upstream, by its prefix, whose tool filter lets the tool through. Whether
// the upstream lists the tool is known only once it is connected.
func (c *Config) validateRoutes() error {
	if len(c.Routes) == 0 {
		return nil
	}
	errs := []error{routing.ValidateRoutes("routes", c.Routes)}
	if routing.CheckSeparator(c.ToolSeparator) != nil {
		return errors.Join(errs...) // tool_separator is reported; targets cannot be split
	}
	owners := c.prefixOwners()
	for i, r := range c.Routes {
		for j, t := range r.Targets {
			if routing.CheckName(t) != nil {
				continue // reported by ValidateRoutes
			}
			key := fmt.Sprintf("routes[%d].targets[%d]", i, j)
			ups, tool := owners.resolve(t, c.ToolSeparator)
			switch {
			case len(ups) == 0:
				errs = append(errs, fmt.Errorf("%s: %q names no configured upstream: a target is <prefix>%s<tool>, where prefix is an upstream's (%s)",
					key, t, c.ToolSeparator, strings.Join(owners.prefixes, ", ")))
			case tool == "":
				errs = append(errs, fmt.Errorf("%s: %q names no tool after the prefix of upstream %q", key, t, ups[0]))
			case !slices.ContainsFunc(ups, func(up string) bool { return c.Upstreams[up].Tools.Allowed(tool) }):
				errs = append(errs, fmt.Errorf("%s: tool %q is filtered out by upstreams.%s.tools", key, tool, ups[0]))
			}
		}
	}
	return errors.Join(errs...)
}

// prefixOwners maps the config's prefixes to their upstreams.
type prefixOwners struct {
	byPrefix   map[string]string // prefix -> the upstream with it (the first, in config order)
	prefixes   []string          // in config order, for Owner and messages
	unprefixed []string          // upstreams exposing their tools unprefixed, in config order
}

func (c *Config) prefixOwners() prefixOwners {
	o := prefixOwners{byPrefix: map[string]string{}}
	for _, name := range c.Order() {
		u := c.Upstreams[name]
		if u == nil {
			continue
		}
		p := u.prefix(name)
		if p == "" {
			o.unprefixed = append(o.unprefixed, name)
			continue
		}
		if _, ok := o.byPrefix[p]; !ok {
			o.byPrefix[p] = name
			o.prefixes = append(o.prefixes, p)
		}
	}
	return o
}

// resolve returns the upstreams that may serve exposed name target (one for
// a prefixed name; the unprefixed upstreams, in config order, otherwise) and
// the upstream's own tool name.
func (o prefixOwners) resolve(target, sep string) ([]string, string) {
	if p := routing.Owner(target, sep, o.prefixes); p != "" {
		return []string{o.byPrefix[p]}, strings.TrimPrefix(target, p+sep)
	}
	return o.unprefixed, target
}

// routeState is the gateway's routing state besides the table, which lives
// in the snapshot.
type routeState struct {
	index atomic.Pointer[routeIndex] // of the snapshot in force, built on first use
	// changed asks watchRoutes to re-evaluate which routed tools are
	// listed (routing.hide_unavailable); coalesced.
	changed chan struct{}
	// wake is when a hidden tool's target may become usable by itself (a
	// breaker's wait ends), unix ns; 0 for none. rearm tells watchRoutes
	// it changed.
	wake  atomic.Int64
	rearm chan struct{}
	// reportMu serializes reportRoute, so that each change of a route's
	// active target is reported once and in order, whoever notices it.
	reportMu sync.Mutex
	// reported is the active target each route last reported (route tool
	// -> target, "" for none); a route without an entry has reported
	// nothing, and its calls went to its primary. Written under reportMu,
	// read without it by calls. Keyed by route name, so it survives a
	// reload; it holds one entry per route ever configured.
	reported sync.Map
}

func (g *Server) initRouting() {
	g.routing.changed = make(chan struct{}, 1)
	g.routing.rearm = make(chan struct{}, 1)
}

// routeTarget is what serves one target: the upstream, its own name for the
// tool, the credential serving that tool there and that credential's
// breaker name.
type routeTarget struct {
	up          *upstream // nil when no upstream in force serves the target
	tool        string
	cred        string
	credBreaker string
}

// routeIndex resolves a snapshot's route targets, computed once per
// snapshot (config-derived, so a call does not split names). It is also the
// gateway's routing.Health for that snapshot (see state).
type routeIndex struct {
	g       *Server
	snap    *snapshot
	targets map[string][]routeTarget // several only for an unprefixed name with several unprefixed upstreams
}

// routeIndexOf returns the index of snapshot s.
func (g *Server) routeIndexOf(s *snapshot) *routeIndex {
	if ix := g.routing.index.Load(); ix != nil && ix.snap == s {
		return ix
	}
	ix := &routeIndex{g: g, snap: s, targets: map[string][]routeTarget{}}
	owners := s.cfg.prefixOwners()
	for _, r := range s.routes.All() {
		for _, t := range r.Targets() {
			if _, done := ix.targets[t]; done {
				continue
			}
			ups, tool := owners.resolve(t, s.cfg.ToolSeparator)
			var rts []routeTarget
			for _, name := range ups {
				u := s.byName[name]
				if u == nil || tool == "" || !u.cfg.Tools.Allowed(tool) {
					continue
				}
				rt := routeTarget{up: u, tool: tool, cred: u.cfg.credentialFor(tool, s.cfg.Credentials)}
				if rt.cred != "" {
					rt.credBreaker = breaker.Name(u.name, rt.cred)
				}
				rts = append(rts, rt)
			}
			ix.targets[t] = rts
		}
	}
	g.routing.index.Store(ix)
	return ix
}

// resolve returns what serves target. An unprefixed name offered by several
// unprefixed upstreams goes to the first, in config order, that lists it,
// as the catalog decides for unrouted names.
func (ix *routeIndex) resolve(target string) routeTarget {
	rts := ix.targets[target]
	switch len(rts) {
	case 0:
		return routeTarget{tool: target}
	case 1:
		return rts[0]
	}
	for _, rt := range rts {
		if lists(rt.up, rt.tool) {
			return rt
		}
	}
	return rts[0]
}

// listedWithout reports whether u's last listing was complete and has no
// tool of that name: a route target that can only fail (the tools of an
// upstream still listing, or whose listing failed, are not known).
func (u *upstream) listedWithout(tool string) bool {
	names := u.listedNames.Load()
	if names == nil {
		return false
	}
	_, ok := (*names)[tool]
	return !ok
}

// lists reports whether u's last listing has tool.
func lists(u *upstream, tool string) bool {
	return listed(u, tool) != nil
}

// listed returns u's listing of tool, or nil.
func listed(u *upstream, tool string) *mcp.Tool {
	return find(u.catalog().tools, func(t *mcp.Tool) bool { return t.Name == tool })
}

// routeHealth returns the gateway's routing.Health for snapshot s.
func (g *Server) routeHealth(s *snapshot) *routeIndex { return g.routeIndexOf(s) }

// Usable implements routing.Health.
func (ix *routeIndex) Usable(target string) (bool, string) {
	st := ix.state(target)
	return st.ok, st.reason
}

// targetState is whether a target can take a call now, why not (a routing
// reason), and, when a breaker's wait keeps it out, until when.
type targetState struct {
	ok     bool
	reason string
	until  time.Time
}

// refusedState is the state of a target whose credential's breaker refused
// with err.
func refusedState(err error) targetState {
	st := targetState{reason: routing.ReasonBreakerOpen}
	var oe *breaker.OpenError
	if errors.As(err, &oe) {
		st.until = oe.RetryAfter
		if routing.KnownReason(oe.Reason) {
			st.reason = oe.Reason // credential_revoked, rate_limit_reached, ...: what opened it
		}
	}
	return st
}

// state decides whether target can take a call, in about the order a call
// meets the obstacles: the upstream's session, its breaker, the
// credential's value and status, the credential's breaker, a renewal in
// progress. It asks breakers with Check, which takes no probe slot: a
// target passed over costs nothing, and the call itself still goes through
// Allow.
func (ix *routeIndex) state(target string) targetState {
	g := ix.g
	rt := ix.resolve(target)
	u := rt.up
	if u == nil {
		return targetState{reason: routing.ReasonUpstreamUnavailable}
	}
	if u.session.Load() == nil {
		st := targetState{reason: routing.ReasonUpstreamUnavailable}
		u.mu.Lock()
		if lf := u.lastFailure; lf != nil && lf.IsAuth() && routing.KnownReason(string(lf.Subtype)) {
			st.reason = string(lf.Subtype)
		}
		u.mu.Unlock()
		if err := g.breakers.Check(u.name, 0); err != nil {
			st.until = openUntil(err)
		}
		return st
	}
	if err := g.breakers.Check(u.name, 0); err != nil {
		var oe *breaker.OpenError
		switch {
		case !errors.As(err, &oe):
			return targetState{reason: routing.ReasonBreakerOpen}
		case oe.Reason != reasonConnect:
			// A breaker opened by connect failures does not refuse calls
			// once the upstream is connected again (see admit).
			return targetState{reason: routing.ReasonBreakerOpen, until: oe.RetryAfter}
		}
	}
	if u.listedWithout(rt.tool) {
		return targetState{reason: routing.ReasonNotListed}
	}
	if rt.cred == "" {
		return targetState{ok: true}
	}
	c := g.credential(rt.cred)
	if c == nil {
		return targetState{ok: true}
	}
	v := c.Value()
	if v == "" {
		return targetState{reason: routing.ReasonCredentialMissing}
	}
	status := c.Status()
	switch status {
	case authmap.StatusRevoked:
		return targetState{reason: routing.ReasonCredentialRevoked}
	case authmap.StatusInvalid:
		return targetState{reason: routing.ReasonCredentialInvalid}
	case authmap.StatusExpired:
		if g.expiredHeldBack(rt.cred, c) {
			return targetState{reason: routing.ReasonCredentialExpired}
		}
	}
	// The credential's breaker before the hold: a rejection places the hold
	// as soon as it arrives, and opens the breaker, with the subtype it was
	// classified as, when its call ends; from then on that is the reason.
	if err := g.breakers.Check(rt.credBreaker, c.Generation()); err != nil {
		return refusedState(err)
	}
	if g.held(rt.cred, v) {
		return targetState{reason: routing.ReasonCredentialInvalid}
	}
	switch status {
	case authmap.StatusExpired:
		// Past an expiry known from a clock (expires_at, a JWT's exp, a
		// peer replica's finding): the call gate still sends it, the
		// provider decides (a value this gateway saw rejected is held
		// back, or refused by its breaker, above). So the target can
		// serve, as a last resort: a route that fails over on
		// credential_expired passes it over while another target is
		// usable. /health, the metrics and route_no_target say what calls
		// find: that it serves.
		return targetState{ok: true, reason: routing.ReasonCredentialExpired}
	case authmap.StatusExpiring:
		return targetState{ok: true, reason: routing.ReasonCredentialExpiring}
	}
	return targetState{ok: true}
}

// openUntil is when the breaker that refused with err lets a probe
// through; zero if unknown.
func openUntil(err error) time.Time {
	var oe *breaker.OpenError
	if errors.As(err, &oe) {
		return oe.RetryAfter
	}
	return time.Time{}
}

// held reports whether value v of credential name was just rejected and is
// being renewed (see hold).
func (g *Server) held(name, v string) bool {
	hv, ok := g.cred.holds.Load(name)
	return ok && hv.(*hold).used == v
}

// heldFailure is the failure of a call not sent because its credential's
// value was just rejected and is being renewed, while a backup can serve it.
func (g *Server) heldFailure(u *upstream, name string) authmap.Failure {
	return g.attribute(u, authmap.Failure{Type: authmap.TypeAuthFailure, Subtype: authmap.SubtypeCredentialInvalid,
		Recovery: authmap.RecoveryRotate, Retryable: true, Credential: name,
		Detail: fmt.Sprintf("credential %q was just rejected and is being renewed; not sent", name)})
}

// callRoute serves one call of routed tool r, with the config of snapshot s.
// Candidates are asked about lazily: a call its primary serves costs one
// health question.
func (g *Server) callRoute(ctx context.Context, req *mcp.CallToolRequest, s *snapshot, r *routing.Route) (*mcp.CallToolResult, error) {
	if g.tracing != nil {
		ctx = withRoute(ctx, r.Tool())
	}
	h := g.routeHealth(s)
	var health routing.Health = h
	if st := g.agentGrants(ctx); st != nil {
		health = &grantedHealth{routeIndex: h, st: st}
	}
	var attempts []routing.Attempt
	var args map[string]any // req's arguments decoded, once a target maps them
	decoded := false
	call := func(target string, backup func() bool) (*mcp.CallToolResult, callOutcome, routeTarget, error) {
		rt := h.resolve(target)
		if rt.up == nil {
			f := authmap.Failure{Type: authmap.TypeUpstreamUnavailable, Retryable: true,
				Detail: fmt.Sprintf("route %q: no upstream in force serves target %q", r.Tool(), target)}
			return g.failureResult(f, nil), callOutcome{failure: &f, refused: refusedDown}, rt, nil
		}
		var send any = req.Params.Arguments
		if r.Maps(target) {
			if !decoded {
				args, decoded = decodeArgs(req.Params.Arguments), true
			}
			send = routing.MapArguments(r, target, args)
		}
		res, out, err := g.callToolOn(ctx, req, rt.up, rt.tool, toolCall{args: send, backup: backup})
		return res, out, rt, err
	}
	var pending *routing.Candidate // the last candidate seen, when it was unusable
	pendingAt := 0                 // its attempt's index (skipped targets may follow it)
	var lastRes *mcp.CallToolResult
	var lastErr error
	skipped := ""
	for c := range routing.Candidates(r, health) {
		if !c.Usable && routing.Skipped(c.Reason) {
			// Never called. A target the agent may not use is not named
			// to it either.
			if c.Reason != routing.ReasonForbidden {
				attempts = append(attempts, routing.Attempt{Target: c.Target, Reason: c.Reason})
			}
			if skipped == "" || c.Reason == routing.ReasonNotListed {
				skipped = c.Reason
			}
			continue // an unusable target before it stays pending: its failure is the answer
		}
		if !c.Usable {
			pendingAt = len(attempts)
			attempts = append(attempts, routing.Attempt{Target: c.Target, Reason: c.Reason})
			pending = &c
			continue
		}
		pending = nil
		res, out, rt, err := call(c.Target, g.backupOf(r, health, c.Target, attempts))
		reason, executed := failoverReason(out, err)
		if reason == "" {
			return g.routeServed(r, h, health, c.Target, attempts, res, err)
		}
		attempts = append(attempts, routing.Attempt{Target: c.Target, Reason: reason})
		if !routing.ShouldFailover(r, reason, executed, annotatedSafe(rt)) {
			return g.routeFailed(r, h, health, attempts, res, err)
		}
		lastRes, lastErr = res, err
	}
	if pending != nil {
		// The last target is unusable too: it is called for its typed
		// failure, which the gate, a breaker or the missing session gives
		// without sending anything (or, if it recovered meanwhile, it
		// serves).
		attempts = slices.Delete(attempts, pendingAt, pendingAt+1)
		res, out, _, err := call(pending.Target, nil)
		reason, _ := failoverReason(out, err)
		if reason == "" {
			return g.routeServed(r, h, health, pending.Target, attempts, res, err)
		}
		attempts = slices.Insert(attempts, pendingAt, routing.Attempt{Target: pending.Target, Reason: reason})
		return g.routeFailed(r, h, health, attempts, res, err)
	}
	if lastRes == nil && lastErr == nil {
		// No target was called: each was skipped.
		f := authmap.Failure{Type: authmap.TypeNotFound,
			Detail: fmt.Sprintf("route %q: no target's upstream lists its tool", r.Tool())}
		if skipped == routing.ReasonForbidden {
			f = g.forbidden(agentName(ctx), "tool", r.Tool(), "none of the route's targets is granted")
		}
		lastRes = g.failureResult(f, nil)
		if len(attempts) == 0 {
			return lastRes, nil
		}
	}
	return g.routeFailed(r, h, health, attempts, lastRes, lastErr)
}

// grantedHealth is a route's health as one agent sees it: a target its
// grants do not allow is unusable (routing.ReasonForbidden), so a route
// never reaches, for the agent, a tool it may not call itself (found
// trying the gateway from outside: a route ran a target the agent's deny
// list named).
type grantedHealth struct {
	*routeIndex
	st *agentState
	// forbade is set once a target was found not the agent's: the call's
	// path is then the agent's own, and says nothing of the route's
	// active target for everyone (noteRoute is not told).
	forbade bool
}

func (gh *grantedHealth) Usable(target string) (bool, string) {
	if gh.st.deniesTool(target) {
		gh.forbade = true
		return false, routing.ReasonForbidden
	}
	return gh.routeIndex.Usable(target)
}

// agentView reports whether health is an agent's own view of a route that
// passed over a target not the agent's.
func agentView(health routing.Health) bool {
	gh, ok := health.(*grantedHealth)
	return ok && gh.forbade
}

// backupOf returns what tells a call to target whether another of r's
// targets could take it instead, so that the call need not wait for
// target's credential renewal. It is asked only when that renewal is met (a
// held value, a rejection as expired or invalid), and only routes that fail
// over on both expired and invalid credentials have one.
func (g *Server) backupOf(r *routing.Route, h routing.Health, target string, attempts []routing.Attempt) func() bool {
	if !r.On(routing.ReasonCredentialInvalid) || !r.On(routing.ReasonCredentialExpired) {
		return nil
	}
	return func() bool {
		for _, t := range r.Targets() {
			if t == target || slices.ContainsFunc(attempts, func(a routing.Attempt) bool { return a.Target == t }) {
				continue
			}
			// A target kept as a last resort for a credential past its
			// expiry is no reason not to wait for this one's renewal: it
			// is still tried if the renewal fails.
			if ok, reason := h.Usable(t); ok && reason != routing.ReasonCredentialExpired {
				return true
			}
		}
		return false
	}
}

// decodeArgs decodes a call's arguments for mapping. Arguments that are not
// a JSON object (invalid for any tool) are mapped as if empty.
func decodeArgs(raw json.RawMessage) map[string]any {
	var m map[string]any
	if len(raw) > 0 {
		_ = json.Unmarshal(raw, &m)
	}
	return m
}

// annotatedSafe reports whether rt's upstream annotates the tool read-only
// or idempotent, so that repeating a call that may have run is harmless.
func annotatedSafe(rt routeTarget) bool {
	if rt.up == nil {
		return false
	}
	t := listed(rt.up, rt.tool)
	return t != nil && t.Annotations != nil && (t.Annotations.ReadOnlyHint || t.Annotations.IdempotentHint)
}

// Why a call was not sent (callOutcome.refused).
const (
	refusedGate    = "gate"    // the credential has no value, or is known dead
	refusedBreaker = "breaker" // an open breaker
	refusedDown    = "down"    // the upstream is not connected
)

// failoverReason reads how a call to one target ended: the routing reason
// to move on for ("" when the call was served, or answered by the tool or
// the upstream: nothing a backup would do better, or the caller cancelled),
// and whether the call may have run upstream.
//
// Credential rejections (auth_failure of any subtype) did not run: the
// provider refused the request. Nor did calls the gateway did not send
// (refused by the gate or a breaker, no session, connection refused).
// Timeouts, lost connections and 5xx may have run.
func failoverReason(out callOutcome, err error) (reason string, executed bool) {
	f := out.failure
	if err != nil || f == nil {
		return "", true
	}
	switch out.refused {
	case refusedBreaker:
		if f.IsAuth() && routing.KnownReason(string(f.Subtype)) {
			return string(f.Subtype), false // a credential's breaker, opened by a rejection
		}
		return routing.ReasonBreakerOpen, false
	case refusedGate, refusedDown:
		return failureReason(f), false
	}
	if f.IsAuth() {
		return failureReason(f), false
	}
	if out.raw == nil {
		// An isError result: the tool's own failure is an answer, unless the
		// classifier read an outage or a timeout in it.
		if f.Type == authmap.TypeUpstreamUnavailable || f.Type == authmap.TypeTimeout {
			return string(f.Type), true
		}
		return "", true
	}
	if notSent(out.raw) || dialFailed(out.raw) {
		return failureReason(f), false
	}
	return string(f.Type), true
}

// failureReason is a failure's routing reason: its subtype, else its type.
func failureReason(f *authmap.Failure) string {
	if f.Subtype != "" {
		return string(f.Subtype)
	}
	return string(f.Type)
}

// dialFailed reports whether err is a connection that could not be made
// (refused, no route): nothing was sent.
func dialFailed(err error) bool {
	var oe *net.OpError
	return errors.As(err, &oe) && oe.Op == "dial"
}

// routeServed answers a call target served (or answered), with the route's
// _meta when another target than the primary served it or targets were
// passed over.
func (g *Server) routeServed(r *routing.Route, h *routeIndex, health routing.Health, target string, attempts []routing.Attempt, res *mcp.CallToolResult, err error) (*mcp.CallToolResult, error) {
	if errors.Is(err, context.Canceled) {
		return res, err // the caller is gone: nothing was served
	}
	if len(attempts) == 0 && target != r.Primary() {
		// The primary was usable but passed over (credential_expiring),
		// or is not the agent's to use (not named to it).
		if _, reason := health.Usable(r.Primary()); reason != routing.ReasonForbidden {
			attempts = append(attempts, routing.Attempt{Target: r.Primary(), Reason: reason})
		}
	}
	if !agentView(health) {
		g.noteRoute(r, h, target)
	}
	if len(attempts) == 0 {
		return res, err
	}
	meta := routing.Meta{ServedBy: target, Reason: attempts[0].Reason, Attempts: attempts}
	g.rerouted(r.Tool(), meta.Reason)
	return withRouteMeta(res, meta), err
}

// routeFailed answers a call no target served with the last failure and,
// when more than the primary was tried or passed over, the attempts.
func (g *Server) routeFailed(r *routing.Route, h *routeIndex, health routing.Health, attempts []routing.Attempt, res *mcp.CallToolResult, err error) (*mcp.CallToolResult, error) {
	if !errors.Is(err, context.Canceled) && !agentView(health) {
		g.noteRoute(r, h, "")
	}
	if len(attempts) == 1 && attempts[0].Target == r.Primary() {
		return res, err // the primary's failure, which the route does not fail over on
	}
	meta := routing.Meta{Reason: attempts[0].Reason, Attempts: attempts}
	g.rerouted(r.Tool(), meta.Reason)
	return withRouteMeta(res, meta), err
}

// withRouteMeta returns res with meta under routing.MetaKey. res is not
// modified: a result may be shared.
func withRouteMeta(res *mcp.CallToolResult, meta routing.Meta) *mcp.CallToolResult {
	if res == nil {
		return nil
	}
	out := *res
	out.Meta = make(mcp.Meta, len(res.Meta)+1)
	for k, v := range res.Meta {
		out.Meta[k] = v
	}
	out.Meta[routing.MetaKey] = meta
	return &out
}

// noteRoute is told which target served a call of route r ("" for none).
// A call that met another target than the one last reported has the
// route's state looked at again (reportRoute) before it answers, so that
// the switch it may have seen is reported without waiting for watchRoutes.
// What it reports is what /health shows, not the call's own path: a call
// that one failure sent to a backup while /health still shows the primary
// is a reroute (counted), not a switch.
func (g *Server) noteRoute(r *routing.Route, h *routeIndex, served string) {
	if s := g.snap.Load(); s.routes == nil || s.routes.Lookup(r.Tool()) != r {
		// A call that began before a reload changed the route (or any
		// route) speaks for the old one: reported over the new, a reorder
		// made switches that /health never showed. The reload's own check
		// (checkRoutes) reports the new one.
		return
	}
	prev, loaded := g.routing.reported.Load(r.Tool())
	if loaded && prev.(string) == served || !loaded && served == r.Primary() {
		return
	}
	g.routing.reportMu.Lock()
	defer g.routing.reportMu.Unlock()
	g.reportRoute(r, h)
}

// reportRoute reports a change of route r's active target, as /health
// shows it (routing.Active over h), once: to a backup (reason: why the
// target before stopped serving, else why the primary is passed over),
// back to the primary (reason "recovered"), or to none (reason: the failure
// calls get). The report compares with the last one, not with the last
// call, so the log, the events and the route_no_target alert follow /health
// and the route metrics whoever notices the change first: watchRoutes (an
// upstream, a credential or a breaker changed, a reload, a breaker's wait
// ended) or a call. Nothing is reported while a target's upstream makes its
// first connection (at start, or after a reload replaced it): the route is
// only settling. It returns whether the route has a usable target.
// g.routing.reportMu is held.
func (g *Server) reportRoute(r *routing.Route, h *routeIndex) bool {
	active, reason, ok := routing.Active(r, h)
	if h.connecting(r) {
		return ok
	}
	key := r.Tool()
	from := r.Primary()
	if prev, loaded := g.routing.reported.Load(key); loaded {
		from = prev.(string)
	}
	if active == from {
		return ok
	}
	g.routing.reported.Store(key, active)
	switch {
	case active == r.Primary():
		reason = "recovered"
		if _, last := h.Usable(active); last != "" && from != "" {
			// Back to a primary that is only a last resort (its
			// credential expiring or expired): nothing recovered, the
			// target before it stopped serving.
			if usable, why := h.Usable(from); !usable && why != "" {
				reason = why
			}
		}
	case active != "" && from != "":
		if usable, why := h.Usable(from); !usable && why != "" {
			reason = why
		}
	}
	g.routeSwitched(key, from, active, reason)
	return ok
}

// rerouted is called once per call a route did not serve from its primary
// (served by a backup, or failed after trying), with the reason the primary
// did not serve it. A hook for metrics.
func (g *Server) rerouted(route, reason string) { g.metrics.rerouted(route, reason) }

// routeSwitched is called when a route's calls move from one target to
// another: to a backup (reason: why the previous target stopped serving),
// back to the primary (reason "recovered"), or to none (to empty: no target
// is usable; reason: the failure calls get). It is logged; it is the hook
// for events.
func (g *Server) routeSwitched(route, from, to, reason string) {
	ev := g.log.Info()
	if to == "" {
		ev = g.log.Warn()
	}
	ev = ev.Str(fieldRoute, route)
	if from != "" { // "": from no usable target
		ev = ev.Str("from", from)
	}
	if to == "" {
		ev.Str("reason", reason).Msg("route has no usable target")
	} else {
		ev.Str("to", to).Str("reason", reason).Msg("route switched")
	}
	g.publishRouteSwitch(route, from, to, reason)
}

// routeTargetStates is what the route metrics read at each scrape.
func (g *Server) routeTargetStates() []routeTargetState {
	var out []routeTargetState
	for name, rh := range g.routesHealth() {
		for _, t := range rh.Targets {
			out = append(out, routeTargetState{Route: name, Target: t.Target, Available: t.Usable, Active: t.Target == rh.Active})
		}
	}
	return out
}

// routeTools puts the routed tools in want, the tools the catalog is about
// to expose: each under its route's name, defined by its first target the
// upstreams list (schema, description, annotations), and resolved per call.
// A route none of whose targets is listed yet is not exposed. Under
// routing.hide_unavailable, a route with no usable target is left out too,
// and routing.wake is set to when a breaker's wait may bring one back. The
// catalog's lock is held.
func (c *catalog) routeTools(want map[string]entry[*mcp.Tool], cats map[string]upstreamCatalog) {
	g := c.g
	s := g.snap.Load()
	if s.routes == nil {
		g.routing.setWake(time.Time{})
		return
	}
	h := g.routeHealth(s)
	hide := s.cfg.Routing.HideUnavailable
	var wake time.Time
	for _, r := range s.routes.All() {
		var def *mcp.Tool
		var defUp string
		for _, t := range r.Targets() {
			rt := h.resolve(t)
			if rt.up == nil {
				continue
			}
			if tool := find(cats[rt.up.name].tools, func(x *mcp.Tool) bool { return x.Name == rt.tool }); tool != nil {
				def, defUp = tool, rt.up.name
				break
			}
		}
		if def == nil {
			delete(want, r.Tool())
			continue
		}
		if hide {
			if _, _, ok := routing.Active(r, h); !ok {
				delete(want, r.Tool())
				wake = earliestWake(r, h, wake)
				continue
			}
		}
		want[r.Tool()] = entry[*mcp.Tool]{upstream: defUp, orig: def, routed: true}
	}
	if hide {
		g.routing.setWake(wake) // without hide, checkRoutes keeps it
	}
}

// earliestWake returns the earlier of wake and the first time a breaker's
// wait that keeps one of r's targets out ends (zero: none).
func earliestWake(r *routing.Route, h *routeIndex, wake time.Time) time.Time {
	for _, t := range r.Targets() {
		if u := h.state(t).until; !u.IsZero() && (wake.IsZero() || u.Before(wake)) {
			wake = u
		}
	}
	return wake
}

// connecting reports whether the upstream of one of r's targets is making
// its first connection (at start, or after a reload replaced it): its
// route is not reported without a target before it is up or down.
func (ix *routeIndex) connecting(r *routing.Route) bool {
	for _, t := range r.Targets() {
		if u := ix.resolve(t).up; u != nil {
			u.mu.Lock()
			st := u.status
			u.mu.Unlock()
			if st == StatusConnecting {
				return true
			}
		}
	}
	return false
}

// checkRoutes reports every route's change of active target as /health
// sees it (reportRoute), without waiting for a call: a route with none is
// switched to no target (event no_target, alert route_no_target) with the
// failure its calls get; one whose calls go to another target is switched
// to it ("recovered" when it is the primary). It returns when a breaker's
// wait that keeps a route without a target ends, for watchRoutes to look
// again.
func (g *Server) checkRoutes() time.Time {
	s := g.snap.Load()
	if s.routes == nil {
		return time.Time{}
	}
	h := g.routeHealth(s)
	var wake time.Time
	g.routing.reportMu.Lock()
	defer g.routing.reportMu.Unlock()
	// A route removed forgets its last report: added again, it starts
	// from its primary, not from a switch long past.
	g.routing.reported.Range(func(k, _ any) bool {
		if s.routes.Lookup(k.(string)) == nil {
			g.routing.reported.Delete(k)
		}
		return true
	})
	for _, r := range s.routes.All() {
		if !g.reportRoute(r, h) {
			wake = earliestWake(r, h, wake)
		}
	}
	return wake
}

// setWake records when watchRoutes should look again by itself, and tells it
// when that changed.
func (rs *routeState) setWake(t time.Time) {
	var ns int64
	if t.After(time.Now()) {
		ns = t.UnixNano()
	}
	if rs.wake.Swap(ns) != ns {
		select {
		case rs.rearm <- struct{}{}:
		default:
		}
	}
}

// routesChanged tells watchRoutes that an upstream, a credential or a
// breaker changed state, which may change which routed tools are usable.
func (g *Server) routesChanged() {
	select {
	case g.routing.changed <- struct{}{}:
	default:
	}
}

// watchRoutes looks at the routes again when an upstream, a credential or
// a breaker changes state, and when a breaker's wait that keeps a route
// without a target ends (breakers turn half-open only when asked): it
// reports routes that lost or got back their last usable target
// (checkRoutes) and, under routing.hide_unavailable, rebuilds the catalog so
// that the routed tools' listing is current. It runs until ctx ends.
func (g *Server) watchRoutes(ctx context.Context) {
	defer g.recoverLog("route watch", "")
	t := time.NewTimer(time.Hour)
	t.Stop()
	for {
		if w := g.routing.wake.Load(); w != 0 {
			t.Reset(max(time.Until(time.Unix(0, w)), 0) + time.Millisecond)
		}
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-g.routing.rearm:
			t.Stop()
			continue
		case <-g.routing.changed:
		case <-t.C:
		}
		t.Stop()
		s := g.snap.Load()
		if s.routes != nil && s.cfg.Routing.HideUnavailable {
			g.catalog.rebuild()
		}
		if wake := g.checkRoutes(); s.routes == nil || !s.cfg.Routing.HideUnavailable {
			g.routing.setWake(wake)
		}
	}
}

// RouteHealth is a route's entry in /health.
type RouteHealth struct {
	// Active is the target a call would go to first; empty when none can
	// serve (calls then fail fast, typed).
	Active string `json:"active,omitempty"`
	// Reason is why the primary target is passed over, or, with no active
	// target, the failure calls get.
	Reason string `json:"reason,omitempty"`
	// Targets are the route's targets in order, each usable or not, and why.
	Targets []RouteTargetHealth `json:"targets"`
}

// RouteTargetHealth is one target of a route in /health.
type RouteTargetHealth struct {
	Target string `json:"target"`
	Usable bool   `json:"usable"`
	// Reason is why the target is unusable, or passed over while usable
	// (credential_expiring; credential_expired, past an expiry known only
	// from a clock: a last resort).
	Reason string `json:"reason,omitempty"`
}

// routesHealth returns every route's state, by exposed tool name; nil when
// there are no routes.
func (g *Server) routesHealth() map[string]RouteHealth {
	s := g.snap.Load()
	if s.routes == nil {
		return nil
	}
	h := g.routeHealth(s)
	out := map[string]RouteHealth{}
	for _, r := range s.routes.All() {
		active, reason, _ := routing.Active(r, h)
		rh := RouteHealth{Active: active, Reason: reason}
		for _, t := range r.Targets() {
			st := h.state(t)
			rh.Targets = append(rh.Targets, RouteTargetHealth{Target: t, Usable: st.ok, Reason: st.reason})
		}
		out[r.Tool()] = rh
	}
	return out
}
