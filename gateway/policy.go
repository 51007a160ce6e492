package gateway

import (
	"container/list"
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/modelcontextprotocol/go-sdk/auth"
	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	"github.com/modelcontextprotocol/go-sdk/mcp"
	"golang.org/x/time/rate"

	"github.com/credgate/credgate/authmap"
	"github.com/credgate/credgate/routing"
)

// Per-agent policy and rate limits (issue 9): a receiving middleware that
// sees every request an agent sends, with the identity requireAgent
// established (req.Extra.TokenInfo).
//
//	tools/list, prompts/list,           filtered: the agent sees only what it may use
//	resources/list, templates/list
//	tools/call, prompts/get,            refused with a typed forbidden failure outside
//	resources/read, (un)subscribe,      the agent's grants; calls over the agent's rate
//	completion/complete                 get auth_failure/rate_limit_reached (provider
//	                                    credgate) with retry_after_seconds
//
// Requests without an identity (auth unset, gateway stdio) pass untouched.

// providerCredgate is the provider of the failures the gateway itself
// decides (its rate limits and policy), never an upstream's.
const providerCredgate = "credgate"

// maxAgentStates bounds the agents whose state (grants, rate limiter) is kept
// for identities that are not API keys (token subjects): the least recently
// seen is dropped first, and starts with a full bucket if it comes back.
const maxAgentStates = 4096

// policySet is the config's keys and policies, compiled.
type policySet struct {
	configured bool // policies is not empty: an agent no grant covers gets nothing
	keys       map[string]*agentState
	policies   []compiledPolicy

	mu     sync.Mutex
	others *lru[string, *agentState] // token subjects, by name and scopes

	// buckets are the agents' rate limiters, by identity (not by scopes:
	// a token asked with other scopes is the same agent, found trying
	// the gateway from outside), kept across config reloads.
	buckets *bucketSet
}

// bucketSet holds the agents' token buckets, one per identity: API keys'
// by name (never dropped), token subjects' in an LRU, the least recently
// used dropped past its bound (it starts full if it comes back). It lives
// across config reloads. An agent's state looks its bucket up once, when
// the state is made; calls touch only the bucket.
type bucketSet struct {
	mu     sync.Mutex
	keys   map[string]*rate.Limiter
	tokens *lru[string, *rate.Limiter]
}

func newBucketSet() *bucketSet {
	return &bucketSet{keys: map[string]*rate.Limiter{}, tokens: newLRU[string, *rate.Limiter](maxAgentStates)}
}

// bucket returns the bucket of an API key (key true) or token subject, at
// rate r: a bucket kept from a config of another rate goes on at r, with
// what it holds.
func (b *bucketSet) bucket(name string, key bool, r Rate) *rate.Limiter {
	b.mu.Lock()
	var l *rate.Limiter
	if key {
		if l = b.keys[name]; l == nil {
			l = rate.NewLimiter(r.limit(), r.N)
			b.keys[name] = l
		}
	} else if got, ok := b.tokens.get(name); ok {
		l = got
	} else {
		l = rate.NewLimiter(r.limit(), r.N)
		b.tokens.add(name, l)
	}
	b.mu.Unlock()
	if l.Limit() != r.limit() || l.Burst() != r.N {
		now := time.Now()
		l.SetLimitAt(now, r.limit())
		l.SetBurstAt(now, r.N)
	}
	return l
}

type compiledPolicy struct {
	agents []*routing.Glob
	scopes []string
	grant  grantConfig
}

// grantConfig is what one key or policy allows.
type grantConfig struct {
	tools, resources ToolFilter
	rate             Rate
}

func (gc grantConfig) empty() bool {
	return len(gc.tools.Allow)+len(gc.tools.Deny)+len(gc.resources.Allow)+len(gc.resources.Deny) == 0 && gc.rate.IsZero()
}

// applies reports whether the policy covers an agent with this name and
// these scopes.
func (p *compiledPolicy) applies(name string, scopes []string) bool {
	if len(p.agents) > 0 && !slices.ContainsFunc(p.agents, func(g *routing.Glob) bool { return g.Match(name) }) {
		return false
	}
	for _, s := range p.scopes {
		if !slices.Contains(scopes, s) {
			return false
		}
	}
	return true
}

// newPolicySet compiles the policies and each key's state. The config was
// validated: its globs compile. The agents' token buckets are prev's (a
// reload, of any policy, does not refill every agent's bucket), or new.
func newPolicySet(cfg *Config, prev *policySet) *policySet {
	ps := &policySet{configured: len(cfg.Policies) > 0, keys: map[string]*agentState{}, others: newLRU[string, *agentState](maxAgentStates)}
	if prev != nil && prev.buckets != nil {
		ps.buckets = prev.buckets
	} else {
		ps.buckets = newBucketSet()
	}
	for _, p := range cfg.Policies {
		cp := compiledPolicy{scopes: p.Scopes, grant: grantConfig{tools: p.Tools, resources: p.Resources, rate: p.Rate}}
		for _, a := range p.Agents {
			if g, err := routing.CompileGlob(a); err == nil {
				cp.agents = append(cp.agents, g)
			}
		}
		ps.policies = append(ps.policies, cp)
	}
	for _, k := range cfg.Auth.Keys {
		st := ps.build(k.Name, nil, &grantConfig{tools: k.Tools, resources: k.Resources, rate: k.Rate})
		if !st.rate.IsZero() {
			st.limiter = ps.buckets.bucket(k.Name, true, st.rate)
		}
		ps.keys[k.Name] = st
	}
	return ps
}

// state returns the agent's grants and limiter.
func (ps *policySet) state(info *auth.TokenInfo) *agentState {
	if info.Extra[agentKindKey] == agentKindAPIKey {
		if st := ps.keys[info.UserID]; st != nil {
			return st
		}
	}
	// A token's identity: its policies depend on its name and scopes.
	key := info.UserID
	if len(info.Scopes) > 0 {
		s := slices.Clone(info.Scopes)
		slices.Sort(s)
		key += "\x00" + strings.Join(s, " ")
	}
	ps.mu.Lock()
	defer ps.mu.Unlock()
	if st, ok := ps.others.get(key); ok {
		return st
	}
	st := ps.build(info.UserID, info.Scopes, nil)
	if !st.rate.IsZero() {
		// One bucket per subject, whatever the scopes (a state per
		// scope set: its grants depend on them).
		st.limiter = ps.buckets.bucket(info.UserID, false, st.rate)
	}
	ps.others.add(key, st)
	return st
}

// agentState is what one agent may do: its grants merged, and its limiter.
type agentState struct {
	name string
	// all: no grant and no policy restricts the agent (checks are skipped).
	all bool
	// tools holds every grant's allow and deny globs: denied if any deny
	// matches; allowed if some allow matches or no grant has an allow list.
	// nil when nothing is allowed (policies configured, no grant covers the
	// agent).
	tools     *routing.Filter
	resources *routing.Filter // likewise; nil when no resource is allowed
	// ops holds the resources.allow globs alone: the gateway's own
	// resources (credgate://health) are ops data, read only by an agent a
	// grant lists them for, however open its grants are otherwise. nil
	// when no grant has a resources.allow.
	ops     *routing.Filter
	rate    Rate          // zero: no limit
	limiter *rate.Limiter // the identity's bucket (bucketSet); nil: no limit
}

// build merges the grants that apply to an agent: its key's (if any) and
// those of the policies that cover it.
func (ps *policySet) build(name string, scopes []string, key *grantConfig) *agentState {
	var grants []grantConfig
	if key != nil && !key.empty() {
		grants = append(grants, *key)
	}
	for i := range ps.policies {
		if ps.policies[i].applies(name, scopes) {
			grants = append(grants, ps.policies[i].grant)
		}
	}
	st := &agentState{name: name}
	var toolAllow, toolDeny, resAllow, resDeny []string
	covered := false
	for _, gr := range grants {
		toolAllow = append(toolAllow, gr.tools.Allow...)
		toolDeny = append(toolDeny, gr.tools.Deny...)
		resAllow = append(resAllow, gr.resources.Allow...)
		resDeny = append(resDeny, gr.resources.Deny...)
		if !gr.rate.IsZero() && (st.rate.IsZero() || gr.rate.limit() < st.rate.limit()) {
			st.rate = gr.rate
		}
		// A grant with only a rate covers the agent as much as one with
		// globs: it says the agent may call, at that pace.
		covered = true
	}
	if len(resAllow) > 0 {
		st.ops, _ = routing.NewFilter(resAllow, resDeny)
	}
	switch {
	case !covered && ps.configured:
		return st // nothing allowed
	case len(toolAllow)+len(toolDeny)+len(resAllow)+len(resDeny) == 0:
		st.all = true
		return st
	}
	st.tools, _ = routing.NewFilter(toolAllow, toolDeny)
	// An agent on an allow list of tools reads no resource that no
	// resources.allow lists: its upstreams' data is not a side door.
	if len(resAllow) > 0 || len(toolAllow) == 0 {
		st.resources, _ = routing.NewFilter(resAllow, resDeny)
	}
	return st
}

// agentGrants returns the grants of the agent calling in ctx, or nil when
// nothing restricts it (no agent identity, or grants that allow all).
func (g *Server) agentGrants(ctx context.Context) *agentState {
	info := agentOf(ctx)
	if info == nil {
		return nil
	}
	if st := g.policy.Load().state(info); !st.all {
		return st
	}
	return nil
}

// mayCall reports whether the agent may call (or see) the exposed tool
// name: its grants allow the name and, for a routed tool, deny not every
// one of the route's targets (a route never reaches a tool the agent's
// grants deny: see grantedHealth).
func (g *Server) mayCall(st *agentState, name string) bool {
	if !st.tool(name) {
		return false
	}
	if st.all {
		return true
	}
	s := g.snap.Load()
	if s == nil || s.routes == nil {
		return true
	}
	r := s.routes.Lookup(name)
	return r == nil || slices.ContainsFunc(r.Targets(), func(t string) bool { return !st.deniesTool(t) })
}

// deniesTool reports whether a grant of the agent's denies the exposed
// tool name: a `deny` glob matches it, or the agent may use nothing. A
// tool only left out of an allow list is not denied: a route exposed
// alone (allow: [search]) still reaches its targets.
func (st *agentState) deniesTool(name string) bool {
	if st.all {
		return false
	}
	return st.tools == nil || st.tools.Denied(name)
}

// tool reports whether the agent may call (or see) the exposed tool or
// prompt name.
func (st *agentState) tool(name string) bool {
	return st.all || (st.tools != nil && st.tools.Allowed(name))
}

// resource reports whether the agent may read (or see) the resource URI or
// URI template.
func (st *agentState) resource(uri string) bool {
	if uri == HealthURI {
		return st.ops != nil && st.ops.Allowed(uri)
	}
	return st.all || (st.resources != nil && st.resources.Allowed(uri))
}

// admit takes a token from the agent's bucket; when it is empty, it returns
// how long until one is there.
func (st *agentState) admit(now time.Time) (time.Duration, bool) {
	if st.limiter == nil {
		return 0, true
	}
	r := st.limiter.ReserveN(now, 1)
	if !r.OK() {
		return st.rate.Per, false
	}
	if d := r.DelayFrom(now); d > 0 {
		r.CancelAt(now) // a refused call takes no token
		return d, false
	}
	return 0, true
}

// agentPolicy is the receiving middleware of per-agent policy and rate
// limits; it also puts the agent's identity in the context of every
// request (agentOf), for the call path and the audit line.
func (g *Server) agentPolicy(next mcp.MethodHandler) mcp.MethodHandler {
	return func(ctx context.Context, method string, req mcp.Request) (mcp.Result, error) {
		info := requestAgent(req)
		if info == nil {
			if g.agentAuth != nil && g.agentAuth.enabled && viaHTTP(req) && method != "initialize" && !strings.HasPrefix(method, "notifications/") {
				// requireAgent lets no HTTP request through without an
				// identity; this holds the line should a route bypass it.
				return nil, failureRPC(method, "", g.forbidden("", "anything", "", "the request carries no agent identity"))
			}
			return next(ctx, method, req)
		}
		ctx = withAgent(ctx, info)
		st := g.policy.Load().state(info)
		start := time.Now()
		switch r := req.(type) {
		case *mcp.CallToolRequest:
			if r.Params == nil {
				break
			}
			if f, refused := g.gate(st, "tool", r.Params.Name, g.mayCall(st, r.Params.Name), start); refused {
				g.logRefusal(ctx, method, r.Params.Name, start, f)
				return g.failureResult(f, nil), nil
			}
		case *mcp.GetPromptRequest:
			if r.Params == nil {
				break
			}
			if f, refused := g.gate(st, "prompt", r.Params.Name, st.tool(r.Params.Name), start); refused {
				g.logRefusal(ctx, method, r.Params.Name, start, f)
				return nil, failureRPC(method, r.Params.Name, f)
			}
		case *mcp.ReadResourceRequest:
			if r.Params == nil {
				break
			}
			if f, refused := g.gate(st, "resource", r.Params.URI, st.resource(r.Params.URI), start); refused {
				g.logRefusal(ctx, method, r.Params.URI, start, f)
				return nil, failureRPC(method, r.Params.URI, f)
			}
		case *mcp.SubscribeRequest:
			if r.Params != nil && !st.resource(r.Params.URI) {
				f := g.forbidden(st.name, "resource", r.Params.URI, "")
				g.logRefusal(ctx, method, r.Params.URI, start, f)
				return nil, failureRPC(method, r.Params.URI, f)
			}
		case *mcp.UnsubscribeRequest:
			if r.Params != nil && !st.resource(r.Params.URI) {
				f := g.forbidden(st.name, "resource", r.Params.URI, "")
				return nil, failureRPC(method, r.Params.URI, f)
			}
		case *mcp.CompleteRequest:
			if r.Params == nil || r.Params.Ref == nil {
				break
			}
			kind, name, ok := "prompt", r.Params.Ref.Name, st.tool(r.Params.Ref.Name)
			if r.Params.Ref.Type == "ref/resource" {
				kind, name, ok = "resource", r.Params.Ref.URI, st.resource(r.Params.Ref.URI)
			}
			if f, refused := g.gate(st, kind, name, ok, start); refused {
				g.logRefusal(ctx, method, name, start, f)
				return nil, failureRPC(method, name, f)
			}
		case *mcp.ListToolsRequest, *mcp.ListPromptsRequest, *mcp.ListResourcesRequest, *mcp.ListResourceTemplatesRequest:
			res, err := next(ctx, method, req)
			if err != nil || st.all {
				return res, err
			}
			if out, ok := filterList(st, res, func(name string) bool { return g.mayCall(st, name) }); ok {
				return out, nil
			}
			// A result shape this filter does not know is not passed on
			// unfiltered.
			return nil, &jsonrpc.Error{Code: jsonrpc.CodeInternalError, Message: "credgate: cannot apply the agent's policy to this " + method + " result"}
		}
		return next(ctx, method, req)
	}
}

// viaHTTP reports whether a request came over HTTP (stdio and in-memory
// transports carry no header).
func viaHTTP(req mcp.Request) bool {
	e := req.GetExtra()
	return e != nil && e.Header != nil
}

// gate checks one use of something the agent names: its grants (allowed),
// then its rate. It returns the failure that refuses it.
func (g *Server) gate(st *agentState, kind, name string, allowed bool, now time.Time) (authmap.Failure, bool) {
	if !allowed {
		return g.forbidden(st.name, kind, name, ""), true
	}
	if wait, ok := st.admit(now); !ok {
		n := retryAfterSeconds(wait)
		return authmap.Failure{Type: authmap.TypeAuthFailure, Subtype: authmap.SubtypeRateLimitReached, Retryable: true,
			RetryAfterSeconds: &n, Recovery: authmap.RecoveryWait, Provider: providerCredgate,
			Detail: fmt.Sprintf("agent %q is over its rate limit of %s at the gateway", truncate(st.name, 64), st.rate)}, true
	}
	return authmap.Failure{}, false
}

// forbidden is the failure of a use the agent's grants do not allow. It
// says which agent and what, never what the policy holds.
func (g *Server) forbidden(agent, kind, name, why string) authmap.Failure {
	detail := why
	if detail == "" {
		detail = fmt.Sprintf("agent %q may not use %s %q: its grants in auth.keys and policies do not allow it (none allows it, or a deny matches)", truncate(agent, 64), kind, truncate(name, 128))
	}
	return authmap.Failure{Type: authmap.TypeForbidden, Recovery: authmap.RecoveryGrantPermission, Provider: providerCredgate, Detail: detail}
}

// filterList returns a copy of a list result with only what the agent may
// use. A page may come out shorter (even empty) than the SDK cut it; its
// cursor is kept, so the agent pages on as usual.
func filterList(st *agentState, res mcp.Result, mayCall func(string) bool) (mcp.Result, bool) {
	switch r := res.(type) {
	case *mcp.ListToolsResult:
		out := *r
		out.Tools = slices.DeleteFunc(slices.Clone(r.Tools), func(t *mcp.Tool) bool { return !mayCall(t.Name) })
		return &out, true
	case *toolsWithExecution:
		lr, _ := filterList(st, r.ListToolsResult, mayCall)
		out := *r
		out.ListToolsResult = lr.(*mcp.ListToolsResult)
		return &out, true
	case *mcp.ListPromptsResult:
		out := *r
		out.Prompts = slices.DeleteFunc(slices.Clone(r.Prompts), func(p *mcp.Prompt) bool { return !st.tool(p.Name) })
		return &out, true
	case *mcp.ListResourcesResult:
		out := *r
		out.Resources = slices.DeleteFunc(slices.Clone(r.Resources), func(x *mcp.Resource) bool { return !st.resource(x.URI) })
		return &out, true
	case *mcp.ListResourceTemplatesResult:
		out := *r
		out.ResourceTemplates = slices.DeleteFunc(slices.Clone(r.ResourceTemplates), func(x *mcp.ResourceTemplate) bool { return !st.resource(x.URITemplate) })
		return &out, true
	}
	return nil, false
}

// logRefusal writes the audit line of a use the gateway refused itself
// (policy, rate limit), like logCall's for calls it forwarded.
func (g *Server) logRefusal(ctx context.Context, method, name string, start time.Time, f authmap.Failure) {
	ev := strIf(g.log.Info(), fieldAgent, agentName(ctx)).Str("method", method)
	if method == "tools/call" {
		if u, own, ok := g.catalog.toolTarget(name); ok {
			ev = strIf(ev.Str(fieldUpstream, u.name).Str(fieldTool, g.redactor.RedactKnown(own)), fieldCredential, g.callCredential(u, own))
			defer g.metrics.toolCall(u, own, string(f.Type), &f, start) // counted like a forwarded call's outcome
		} else {
			ev = ev.Str(fieldTool, g.redactor.RedactKnown(truncate(name, 128)))
		}
	} else {
		ev = ev.Str("name", truncate(name, 128))
	}
	if f.Subtype != "" {
		ev = ev.Str(fieldSubtype, string(f.Subtype))
	}
	ev.Str("provider", f.Provider).Dur("duration_ms", time.Since(start)).Str(fieldOutcome, string(f.Type)).Msg("call")
}

// lru is a map bounded to n entries that drops the least recently used.
// It is not safe for concurrent use.
type lru[K comparable, V any] struct {
	n     int
	order *list.List // front: most recent; values are *lruEntry
	items map[K]*list.Element
}

type lruEntry[K comparable, V any] struct {
	key K
	val V
}

func newLRU[K comparable, V any](n int) *lru[K, V] {
	return &lru[K, V]{n: n, order: list.New(), items: map[K]*list.Element{}}
}

func (l *lru[K, V]) get(k K) (V, bool) {
	if e, ok := l.items[k]; ok {
		l.order.MoveToFront(e)
		return e.Value.(*lruEntry[K, V]).val, true
	}
	var zero V
	return zero, false
}

// add keeps v under k and returns what it dropped to stay within n: the
// value k held before, or the least recently used.
func (l *lru[K, V]) add(k K, v V) (dropped []V) {
	if e, ok := l.items[k]; ok {
		ent := e.Value.(*lruEntry[K, V])
		dropped = append(dropped, ent.val)
		ent.val = v
		l.order.MoveToFront(e)
		return dropped
	}
	l.items[k] = l.order.PushFront(&lruEntry[K, V]{key: k, val: v})
	for l.order.Len() > l.n {
		if v, ok := l.removeOldest(); ok {
			dropped = append(dropped, v)
		}
	}
	return dropped
}

// removeOldest drops the least recently used entry and returns its value.
func (l *lru[K, V]) removeOldest() (V, bool) {
	last := l.order.Back()
	if last == nil {
		var zero V
		return zero, false
	}
	l.order.Remove(last)
	ent := last.Value.(*lruEntry[K, V])
	delete(l.items, ent.key)
	return ent.val, true
}

func (l *lru[K, V]) len() int { return l.order.Len() }

// callCredential names the credential a call of tool on u uses (for the
// audit line): its configured credential, else where the upstream's config
// holds one (a header or env entry), else "".
func (g *Server) callCredential(u *upstream, tool string) string {
	if cn := u.cfg.credentialFor(tool, g.config().Credentials); cn != "" {
		return cn
	}
	return u.credentialName()
}
