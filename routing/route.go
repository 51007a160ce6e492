package routing

import (
	"errors"
	"fmt"
	"iter"
	"maps"
	"slices"
	"strings"
)

// Reasons a route fails over on, as written in a route's `on` list. They are
// the gateway's failure subtypes that mean "this target cannot serve the call
// now", plus breaker_open. ReasonCredentialExpiring is opt-in: a target whose
// credential is about to expire still works, so it is only passed over (and
// kept as a last resort) when a route asks for it.
const (
	ReasonCredentialExpired   = "credential_expired"
	ReasonCredentialRevoked   = "credential_revoked"
	ReasonCredentialInvalid   = "credential_invalid"
	ReasonCredentialMissing   = "credential_missing"
	ReasonRateLimitReached    = "rate_limit_reached"
	ReasonQuotaExhausted      = "quota_exhausted"
	ReasonBreakerOpen         = "breaker_open"
	ReasonUpstreamUnavailable = "upstream_unavailable"
	ReasonCredentialExpiring  = "credential_expiring"
)

// ReasonNotListed is why a target whose upstream has listed its tools, and
// not this one, is unusable: a name mistyped in `targets`, or a tool the
// upstream dropped. It is not a reason `on` lists: a route always moves
// past such a target, since a call to it could only fail.
const ReasonNotListed = "tool_not_listed"

// ReasonForbidden is why a target the calling agent's grants do not allow
// is passed over: a route never reaches, for an agent, a tool that agent
// may not call itself. Like ReasonNotListed, it never ends the list.
const ReasonForbidden = "forbidden"

// Skipped reports whether reason is one a route always moves past, without
// calling the target: ReasonNotListed or ReasonForbidden.
func Skipped(reason string) bool { return reason == ReasonNotListed || reason == ReasonForbidden }

// reasons lists every reason `on` accepts; a reason's bit is its index.
var reasons = [...]string{
	ReasonCredentialExpired, ReasonCredentialRevoked, ReasonCredentialInvalid, ReasonCredentialMissing,
	ReasonRateLimitReached, ReasonQuotaExhausted, ReasonBreakerOpen, ReasonUpstreamUnavailable,
	ReasonCredentialExpiring,
}

// DefaultOn returns the reasons a route fails over on when its `on` is
// empty: all of them but ReasonCredentialExpiring.
func DefaultOn() []string { return slices.Clone(reasons[:len(reasons)-1]) }

// reasonBit returns the bit of a known reason, or 0.
func reasonBit(reason string) reasonSet {
	for i, r := range reasons {
		if r == reason {
			return 1 << i
		}
	}
	return 0
}

type reasonSet uint16

// KnownReason reports whether reason is one a route's `on` can list.
func KnownReason(reason string) bool { return reasonBit(reason) != 0 }

func (s reasonSet) has(reason string) bool { b := reasonBit(reason); return b != 0 && s&b != 0 }

// Config is the `routing` block.
type Config struct {
	// HideUnavailable removes a routed tool from tools/list while none of its
	// targets is usable (agents get list_changed both ways). If false (the
	// default), such a tool stays listed, so agents keep their plans, and
	// fails fast with a typed failure.
	HideUnavailable bool `koanf:"hide_unavailable"`
}

// RouteConfig is one entry of `routes`:
//
//	routes:
//	  - tool: search
//	    targets: [github__search_code, gitlab__search]
//	    on: [credential_revoked, rate_limit_reached, breaker_open]
//	    retry_safe: false
//	    arguments: {gitlab__search: {rename: {query: search}, set: {scope: blobs}}}
type RouteConfig struct {
	// Tool is the exposed name: a new one, or an existing
	// <upstream>__<tool> that gains backups.
	Tool string `koanf:"tool"`
	// Targets are exposed tool names in order of preference; the first
	// usable one serves the call. The exposed tool takes the first target's
	// schema, description and annotations. At least one is required.
	Targets []string `koanf:"targets"`
	// On lists the reasons a call moves to the next target when a target
	// cannot serve it before it executed. If empty, defaults to every reason
	// but credential_expiring (see DefaultOn).
	On []string `koanf:"on"`
	// RetrySafe also retries, on the next target, failures after which the
	// call may have executed (timeouts, upstream errors): set it only for
	// tools that are safe to repeat. If false, only tools their upstream
	// annotates read-only or idempotent are retried that way.
	RetrySafe bool `koanf:"retry_safe"`
	// Arguments maps a call's arguments per target. A target not named gets
	// them unchanged.
	Arguments map[string]ArgumentMapping `koanf:"arguments"`
}

// ArgumentMapping rewrites the arguments sent to one target: renames first,
// then sets.
type ArgumentMapping struct {
	// Rename maps an argument's name to the name the target expects.
	Rename map[string]string `koanf:"rename"`
	// Set adds or overwrites arguments with fixed values.
	Set map[string]any `koanf:"set"`
}

// Validate reports every syntax problem of the route at once, each naming its
// key under key (for example "routes[2]"). Whether the targets exist is for
// the caller to check against its catalog.
func (c RouteConfig) Validate(key string) error {
	var errs []error
	if c.Tool == "" {
		errs = append(errs, fmt.Errorf("%s.tool: empty; name the tool agents call", key))
	} else if err := CheckName(c.Tool); err != nil {
		errs = append(errs, fmt.Errorf("%s.tool: %v", key, err))
	}
	if len(c.Targets) == 0 {
		errs = append(errs, fmt.Errorf("%s.targets: empty; list at least one exposed tool name (<upstream>__<tool>)", key))
	}
	seen := make(map[string]int, len(c.Targets))
	for i, t := range c.Targets {
		if err := CheckName(t); err != nil {
			errs = append(errs, fmt.Errorf("%s.targets[%d]: %v", key, i, err))
		} else if j, dup := seen[t]; dup {
			errs = append(errs, fmt.Errorf("%s.targets[%d]: %q is already targets[%d]", key, i, t, j))
		} else {
			seen[t] = i
		}
	}
	for i, r := range c.On {
		if reasonBit(r) == 0 {
			errs = append(errs, fmt.Errorf("%s.on[%d]: unknown reason %q; known: %s", key, i, r, strings.Join(reasons[:], ", ")))
		}
	}
	for _, target := range slices.Sorted(maps.Keys(c.Arguments)) {
		k := fmt.Sprintf("%s.arguments.%s", key, target)
		if _, ok := seen[target]; !ok {
			errs = append(errs, fmt.Errorf("%s: %q is not one of the route's targets", k, target))
		}
		m := c.Arguments[target]
		dest := make(map[string]string, len(m.Rename))
		for _, from := range slices.Sorted(maps.Keys(m.Rename)) {
			to := m.Rename[from]
			switch {
			case from == "":
				errs = append(errs, fmt.Errorf("%s.rename: an empty argument name is renamed", k))
			case to == "":
				errs = append(errs, fmt.Errorf("%s.rename.%s: renamed to an empty name", k, from))
			case dest[to] != "":
				errs = append(errs, fmt.Errorf("%s.rename.%s: %q is also what %q is renamed to", k, from, to, dest[to]))
			default:
				dest[to] = from
			}
		}
		for name := range m.Set {
			if name == "" {
				errs = append(errs, fmt.Errorf("%s.set: an empty argument name is set", k))
			}
		}
	}
	return errors.Join(errs...)
}

// ValidateRoutes validates every route (keys key[i]) and reports a tool
// routed twice.
func ValidateRoutes(key string, routes []RouteConfig) error {
	var errs []error
	first := make(map[string]int, len(routes))
	for i, r := range routes {
		k := fmt.Sprintf("%s[%d]", key, i)
		if err := r.Validate(k); err != nil {
			errs = append(errs, err)
		}
		if r.Tool == "" {
			continue
		}
		if j, dup := first[r.Tool]; dup {
			errs = append(errs, fmt.Errorf("%s.tool: %q is already routed by %s[%d]", k, r.Tool, key, j))
		} else {
			first[r.Tool] = i
		}
	}
	return errors.Join(errs...)
}

// Route is one validated, immutable route.
type Route struct {
	tool      string
	targets   []string
	on        reasonSet
	retrySafe bool
	args      map[string]ArgumentMapping
}

// Tool returns the exposed name the route serves.
func (r *Route) Tool() string { return r.tool }

// Targets returns the route's targets in order of preference.
func (r *Route) Targets() []string { return slices.Clone(r.targets) }

// Primary returns the first target, whose schema, description and
// annotations the exposed tool takes.
func (r *Route) Primary() string { return r.targets[0] }

// RetrySafe reports whether the route retries failures that may have
// executed.
func (r *Route) RetrySafe() bool { return r.retrySafe }

// On reports whether the route fails over on reason.
func (r *Route) On(reason string) bool { return r.on.has(reason) }

// Maps reports whether the route rewrites the arguments sent to target, so
// that a caller holding them encoded decodes them only then.
func (r *Route) Maps(target string) bool { _, ok := r.args[target]; return ok }

// Routes is the routing table: routes by exposed tool name, immutable.
type Routes struct {
	byTool map[string]*Route
	list   []*Route
}

// NewRoutes validates cfgs (keys "routes[i]") and builds the table. The
// table shares nothing with cfgs.
func NewRoutes(cfgs []RouteConfig) (*Routes, error) {
	if err := ValidateRoutes("routes", cfgs); err != nil {
		return nil, err
	}
	rs := &Routes{byTool: make(map[string]*Route, len(cfgs))}
	for _, c := range cfgs {
		r := &Route{tool: c.Tool, targets: slices.Clone(c.Targets), retrySafe: c.RetrySafe}
		on := c.On
		if len(on) == 0 {
			on = DefaultOn()
		}
		for _, reason := range on {
			r.on |= reasonBit(reason)
		}
		if len(c.Arguments) > 0 {
			r.args = make(map[string]ArgumentMapping, len(c.Arguments))
			for target, m := range c.Arguments {
				set := make(map[string]any, len(m.Set))
				for k, v := range m.Set {
					set[k] = deepCopy(v)
				}
				r.args[target] = ArgumentMapping{Rename: maps.Clone(m.Rename), Set: set}
			}
		}
		rs.byTool[r.tool] = r
		rs.list = append(rs.list, r)
	}
	return rs, nil
}

// Lookup returns the route of an exposed tool name, or nil. A nil *Routes
// has no routes.
func (rs *Routes) Lookup(tool string) *Route {
	if rs == nil {
		return nil
	}
	return rs.byTool[tool]
}

// All returns the routes in config order.
func (rs *Routes) All() []*Route {
	if rs == nil {
		return nil
	}
	return slices.Clone(rs.list)
}

// Health is what Select needs to know about a target; the gateway adapts its
// upstreams, credentials and breakers to it.
type Health interface {
	// Usable reports whether target can take a call now. When it cannot,
	// reason says why (a Reason* constant, or any failure subtype). A usable
	// target may still give a reason, such as ReasonCredentialExpiring, or
	// ReasonCredentialExpired for a credential past an expiry known only
	// from a clock (still sent: the provider decides), which a route that
	// lists it in `on` avoids while it can.
	Usable(target string) (ok bool, reason string)
}

// Candidate is one target in the order Select gives.
type Candidate struct {
	Target string
	// Usable is false for a target that cannot take the call; the caller
	// records it as an attempt with Reason and moves on.
	Usable bool
	// Reason is why the target is unusable or was passed over.
	Reason string
}

// Select returns the route's targets in the order to try them.
//
// Targets keep their config order, except that usable targets whose reason
// is in the route's `on` (credential_expiring, when opted in) move to the end
// as a last resort. An unusable target is included with Usable false and its
// reason, so the caller can list it among the attempts. An unusable target
// whose reason is not in `on` ends the list: the route does not fail over on
// that reason, so the caller answers with it. A target not listed or not
// granted (Skipped) never ends it.
func Select(r *Route, h Health) []Candidate {
	out := make([]Candidate, 0, len(r.targets))
	for c := range Candidates(r, h) {
		out = append(out, c)
	}
	return out
}

// Candidates yields Select's list lazily: h is asked about a target only
// when the iteration reaches it, so a call served by its first target costs
// one question, not one per target.
func Candidates(r *Route, h Health) iter.Seq[Candidate] {
	return func(yield func(Candidate) bool) {
		var deferred []Candidate
	targets:
		for _, t := range r.targets {
			ok, reason := h.Usable(t)
			switch {
			case ok && (reason == "" || !r.on.has(reason)):
				if !yield(Candidate{Target: t, Usable: true}) {
					return
				}
			case ok:
				deferred = append(deferred, Candidate{Target: t, Usable: true, Reason: reason})
			default:
				if !yield(Candidate{Target: t, Reason: reason}) {
					return
				}
				if !r.on.has(reason) && !Skipped(reason) {
					break targets
				}
			}
		}
		for _, c := range deferred {
			if !yield(c) {
				return
			}
		}
	}
}

// Active returns the target a call would go to first, for health views: with
// reason empty when it is the primary, else why the primary was passed over.
// When no target is usable, ok is false, target is empty and reason is the
// reason of the last target considered (the failure a call would get).
func Active(r *Route, h Health) (target, reason string, ok bool) {
	cands := Select(r, h)
	for _, c := range cands {
		if c.Usable {
			if c.Target == r.targets[0] {
				return c.Target, "", true
			}
			if cands[0].Target == r.targets[0] {
				return c.Target, cands[0].Reason, true
			}
			return c.Target, primaryReason(r, h), true
		}
	}
	// The failure a call would get: the last target's that is not skipped
	// (a call is answered with it), else the last one's.
	for i := len(cands) - 1; i >= 0; i-- {
		if !Skipped(cands[i].Reason) {
			return "", cands[i].Reason, false
		}
	}
	return "", cands[len(cands)-1].Reason, false
}

// primaryReason is why Select passed over a usable primary.
func primaryReason(r *Route, h Health) string {
	_, reason := h.Usable(r.targets[0])
	return reason
}

// ShouldFailover reports whether a call that failed on one of the route's
// targets for reason goes to the next target.
//
// A reason in the route's `on`, when the call did not execute upstream
// (credential rejected, connection refused, breaker open), always fails
// over. A failure after which the call may have executed fails over only if
// the route is retry_safe or the upstream annotates the tool read-only or
// idempotent (annotatedSafe). A known reason the route left out of `on`
// never fails over: the operator chose to surface it.
func ShouldFailover(r *Route, reason string, executed, annotatedSafe bool) bool {
	if reason == "" {
		return false
	}
	bit := reasonBit(reason)
	if bit != 0 && r.on&bit == 0 {
		return false
	}
	if !executed && bit != 0 {
		return true
	}
	return r.retrySafe || annotatedSafe
}

// MapArguments returns the arguments to send to target: args with the
// target's renames applied (a renamed argument overwrites one already called
// by the new name), then its fixed values set. It never modifies args; when
// the target has no mapping it returns args itself. Values set come from the
// route and are shared: callers must not modify them.
func MapArguments(r *Route, target string, args map[string]any) map[string]any {
	m, ok := r.args[target]
	if !ok {
		return args
	}
	out := make(map[string]any, len(args)+len(m.Set))
	for k, v := range args {
		if _, renamed := m.Rename[k]; !renamed {
			out[k] = v
		}
	}
	for from, to := range m.Rename {
		if v, ok := args[from]; ok {
			out[to] = v
		}
	}
	for k, v := range m.Set {
		out[k] = v
	}
	return out
}

// deepCopy copies the maps and slices a config value may hold.
func deepCopy(v any) any {
	switch v := v.(type) {
	case map[string]any:
		out := make(map[string]any, len(v))
		for k, x := range v {
			out[k] = deepCopy(x)
		}
		return out
	case []any:
		out := make([]any, len(v))
		for i, x := range v {
			out[i] = deepCopy(x)
		}
		return out
	}
	return v
}

// MetaKey is the `_meta` key of a call served by a backup target, or of the
// failure when no target could serve it.
const MetaKey = "dev.credgate/route"

// Meta is the value under MetaKey.
type Meta struct {
	// ServedBy is the target that served the call; empty when none could.
	ServedBy string `json:"served_by,omitempty"`
	// Reason is why the first target did not serve it: a failure subtype or
	// breaker_open.
	Reason string `json:"reason"`
	// Attempts are the targets tried or passed over before, in order.
	Attempts []Attempt `json:"attempts"`
}

// Attempt is one target that did not serve the call.
type Attempt struct {
	Target string `json:"target"`
	Reason string `json:"reason"`
}
