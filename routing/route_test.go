package routing

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func mustRoutes(t *testing.T, cfgs ...RouteConfig) *Routes {
	t.Helper()
	rs, err := NewRoutes(cfgs)
	if err != nil {
		t.Fatalf("NewRoutes: %v", err)
	}
	return rs
}

// Regression test for issue 8 (routing config): every problem is reported at
// once, each naming its key; target existence is left to the gateway.
func TestValidateRoutes(t *testing.T) {
	t.Parallel()
	ok := RouteConfig{Tool: "search", Targets: []string{"github__search_code", "gitlab__search"}}
	for _, tc := range []struct {
		name   string
		routes []RouteConfig
		want   []string // substrings, one per expected problem
	}{
		{"valid", []RouteConfig{ok, {Tool: "github__x", Targets: []string{"github__x", "gitlab__x"},
			On: []string{"credential_expiring", "breaker_open"}, RetrySafe: true,
			Arguments: map[string]ArgumentMapping{"gitlab__x": {Rename: map[string]string{"q": "search"}, Set: map[string]any{"scope": "blobs"}}}}}, nil},
		{"empty tool and targets", []RouteConfig{{}}, []string{"routes[0].tool: empty", "routes[0].targets: empty"}},
		{"bad names", []RouteConfig{{Tool: "a b", Targets: []string{"x/y"}}}, []string{"routes[0].tool: name \"a b\"", "routes[0].targets[0]: name \"x/y\""}},
		{"duplicate target", []RouteConfig{{Tool: "t", Targets: []string{"a__x", "a__x"}}}, []string{`routes[0].targets[1]: "a__x" is already targets[0]`}},
		{"unknown reason", []RouteConfig{{Tool: "t", Targets: []string{"a__x"}, On: []string{"breaker_open", "timeout", "expiring"}}},
			[]string{`routes[0].on[1]: unknown reason "timeout"`, `routes[0].on[2]: unknown reason "expiring"`}},
		{"duplicate tool", []RouteConfig{ok, {Tool: "x", Targets: []string{"a__x"}}, ok}, []string{`routes[2].tool: "search" is already routed by routes[0]`}},
		{"arguments", []RouteConfig{{Tool: "t", Targets: []string{"a__x", "b__x"}, Arguments: map[string]ArgumentMapping{
			"c__x": {},
			"b__x": {Rename: map[string]string{"": "q", "p": "", "q": "z", "r": "z"}, Set: map[string]any{"": 1}},
		}}}, []string{
			`routes[0].arguments.c__x: "c__x" is not one of the route's targets`,
			`routes[0].arguments.b__x.rename: an empty argument name is renamed`,
			`routes[0].arguments.b__x.rename.p: renamed to an empty name`,
			`routes[0].arguments.b__x.rename.r: "z" is also what "q" is renamed to`,
			`routes[0].arguments.b__x.set: an empty argument name is set`,
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			err := ValidateRoutes("routes", tc.routes)
			if len(tc.want) == 0 {
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("no error; want %q", tc.want)
			}
			lines := strings.Split(err.Error(), "\n")
			if len(lines) != len(tc.want) {
				t.Errorf("got %d problems, want %d:\n%v", len(lines), len(tc.want), err)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error does not mention %q:\n%v", w, err)
				}
			}
			if _, nerr := NewRoutes(tc.routes); nerr == nil {
				t.Errorf("NewRoutes accepted what ValidateRoutes refused")
			}
		})
	}
}

func TestRoutesTable(t *testing.T) {
	t.Parallel()
	cfg := []RouteConfig{
		{Tool: "search", Targets: []string{"a__s", "b__s"}},
		{Tool: "a__x", Targets: []string{"a__x", "b__x"}, On: []string{"rate_limit_reached"}, RetrySafe: true},
	}
	rs := mustRoutes(t, cfg...)
	cfg[0].Targets[0] = "mutated"
	r := rs.Lookup("search")
	if r == nil || r.Tool() != "search" || r.Primary() != "a__s" {
		t.Fatalf("Lookup(search) = %+v; the table must not share the config", r)
	}
	if diff := cmp.Diff([]string{"a__s", "b__s"}, r.Targets()); diff != "" {
		t.Errorf("targets mismatch (-want +got):\n%s", diff)
	}
	for _, reason := range DefaultOn() {
		if !r.On(reason) {
			t.Errorf("default on lacks %s", reason)
		}
	}
	if r.On(ReasonCredentialExpiring) || r.RetrySafe() {
		t.Errorf("defaults: expiring %v retry_safe %v, want both false", r.On(ReasonCredentialExpiring), r.RetrySafe())
	}
	x := rs.Lookup("a__x")
	if !x.On(ReasonRateLimitReached) || x.On(ReasonBreakerOpen) || !x.RetrySafe() {
		t.Errorf("a__x: on/retry_safe not as configured")
	}
	if rs.Lookup("nope") != nil || (*Routes)(nil).Lookup("x") != nil || len(rs.All()) != 2 {
		t.Errorf("Lookup/All misbehave")
	}
}

// health is a Health from a table: target -> "ok", "ok:<reason>" or "<reason>".
type health map[string]string

func (h health) Usable(target string) (bool, string) {
	v, ok := h[target]
	if !ok || v == "ok" {
		return true, ""
	}
	if r, ok := strings.CutPrefix(v, "ok:"); ok {
		return true, r
	}
	return false, v
}

// Regression test for issue 8 (selection): the first usable target wins,
// unusable ones are listed for the attempts, an opted-in soft reason moves a
// target to the end, and a reason the route does not fail over on stops it.
// countingHealth counts the questions Candidates asks.
type countingHealth struct {
	health
	asked []string
}

func (c *countingHealth) Usable(target string) (bool, string) {
	c.asked = append(c.asked, target)
	return c.health.Usable(target)
}

// Regression test for issue 8 (decision cost): Candidates asks about a
// target only when the iteration reaches it, and yields Select's order.
func TestCandidatesLazy(t *testing.T) {
	t.Parallel()
	r := mustRoutes(t, RouteConfig{Tool: "t", Targets: []string{"p__t", "b1__t", "b2__t"}, On: []string{"credential_expiring", "breaker_open"}}).Lookup("t")
	h := &countingHealth{health: health{"p__t": "ok:credential_expiring", "b1__t": "breaker_open"}}
	var got []Candidate
	for c := range Candidates(r, h) {
		got = append(got, c)
		if c.Usable {
			break
		}
	}
	want := []Candidate{{Target: "b1__t", Reason: "breaker_open"}, {Target: "b2__t", Usable: true}}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("candidates mismatch (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"p__t", "b1__t", "b2__t"}, h.asked); diff != "" {
		t.Errorf("asked mismatch (-want +got):\n%s", diff)
	}
	h.asked = nil
	h.health = health{}
	for c := range Candidates(r, h) {
		if !c.Usable || c.Target != "p__t" {
			t.Errorf("first candidate %+v, want p__t usable", c)
		}
		break
	}
	if len(h.asked) != 1 {
		t.Errorf("asked %v for a call the primary serves, want only p__t", h.asked)
	}
}

func TestSelect(t *testing.T) {
	t.Parallel()
	three := []string{"p__t", "b1__t", "b2__t"}
	def := RouteConfig{Tool: "t", Targets: three}
	expiring := RouteConfig{Tool: "t", Targets: three, On: []string{"credential_expiring", "credential_revoked"}}
	narrow := RouteConfig{Tool: "t", Targets: three, On: []string{"rate_limit_reached"}}
	u := func(t string) Candidate { return Candidate{Target: t, Usable: true} }
	for _, tc := range []struct {
		name  string
		route RouteConfig
		h     health
		want  []Candidate
	}{
		{"all usable", def, health{}, []Candidate{u("p__t"), u("b1__t"), u("b2__t")}},
		{"primary revoked", def, health{"p__t": "credential_revoked"},
			[]Candidate{{Target: "p__t", Reason: "credential_revoked"}, u("b1__t"), u("b2__t")}},
		{"breaker open and down", def, health{"p__t": "breaker_open", "b1__t": "upstream_unavailable"},
			[]Candidate{{Target: "p__t", Reason: "breaker_open"}, {Target: "b1__t", Reason: "upstream_unavailable"}, u("b2__t")}},
		{"none usable", def, health{"p__t": "breaker_open", "b1__t": "quota_exhausted", "b2__t": "credential_missing"},
			[]Candidate{{Target: "p__t", Reason: "breaker_open"}, {Target: "b1__t", Reason: "quota_exhausted"}, {Target: "b2__t", Reason: "credential_missing"}}},
		{"expiring ignored by default", def, health{"p__t": "ok:credential_expiring"}, []Candidate{u("p__t"), u("b1__t"), u("b2__t")}},
		{"expiring opted in", expiring, health{"p__t": "ok:credential_expiring"},
			[]Candidate{u("b1__t"), u("b2__t"), {Target: "p__t", Usable: true, Reason: "credential_expiring"}}},
		{"expiring is the last resort", expiring, health{"p__t": "ok:credential_expiring", "b1__t": "credential_revoked", "b2__t": "credential_revoked"},
			[]Candidate{{Target: "b1__t", Reason: "credential_revoked"}, {Target: "b2__t", Reason: "credential_revoked"}, {Target: "p__t", Usable: true, Reason: "credential_expiring"}}},
		{"reason not in on stops", narrow, health{"p__t": "credential_revoked"}, []Candidate{{Target: "p__t", Reason: "credential_revoked"}}},
		{"reason in narrow on", narrow, health{"p__t": "rate_limit_reached"}, []Candidate{{Target: "p__t", Reason: "rate_limit_reached"}, u("b1__t"), u("b2__t")}},
		{"unknown reason stops", def, health{"p__t": "insufficient_scope"}, []Candidate{{Target: "p__t", Reason: "insufficient_scope"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r := mustRoutes(t, tc.route).Lookup("t")
			if diff := cmp.Diff(tc.want, Select(r, tc.h)); diff != "" {
				t.Errorf("Select mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

// Regression test for issue 8 (failover rules): reasons in `on` fail over
// before the call executed; failures that may have executed fail over only
// for retry_safe routes or tools annotated read-only/idempotent.
func TestShouldFailover(t *testing.T) {
	t.Parallel()
	def := mustRoutes(t, RouteConfig{Tool: "t", Targets: []string{"a__t", "b__t"}}).Lookup("t")
	safe := mustRoutes(t, RouteConfig{Tool: "t", Targets: []string{"a__t", "b__t"}, RetrySafe: true}).Lookup("t")
	narrow := mustRoutes(t, RouteConfig{Tool: "t", Targets: []string{"a__t", "b__t"}, On: []string{"breaker_open"}, RetrySafe: true}).Lookup("t")
	for _, tc := range []struct {
		name              string
		route             *Route
		reason            string
		executed, annotSf bool
		want              bool
	}{
		{"revoked before execution", def, "credential_revoked", false, false, true},
		{"breaker open", def, "breaker_open", false, false, true},
		{"connection refused", def, "upstream_unavailable", false, false, true},
		{"rate limited", def, "rate_limit_reached", false, false, true},
		{"timeout, unsafe", def, "timeout", true, false, false},
		{"timeout, retry_safe", safe, "timeout", true, false, true},
		{"timeout, annotated", def, "timeout", true, true, true},
		{"upstream error, unsafe", def, "upstream_error", true, false, false},
		{"in on but executed, unsafe", def, "upstream_unavailable", true, false, false},
		{"in on but executed, safe", safe, "upstream_unavailable", true, false, true},
		{"unknown reason not executed, unsafe", def, "insufficient_scope", false, false, false},
		{"left out of on", narrow, "credential_revoked", false, true, false},
		{"in narrow on", narrow, "breaker_open", false, false, true},
		{"no failure", safe, "", false, true, false},
	} {
		if got := ShouldFailover(tc.route, tc.reason, tc.executed, tc.annotSf); got != tc.want {
			t.Errorf("%s: ShouldFailover = %v, want %v", tc.name, got, tc.want)
		}
	}
}

// Regression test for issue 8 (argument mapping): rename then set, per
// target, without touching the caller's map.
func TestMapArguments(t *testing.T) {
	t.Parallel()
	cfg := RouteConfig{Tool: "search", Targets: []string{"gh__s", "gl__s"}, Arguments: map[string]ArgumentMapping{
		"gl__s": {Rename: map[string]string{"query": "search", "a": "b", "b": "a"}, Set: map[string]any{"scope": "blobs", "nested": map[string]any{"k": []any{1}}}},
	}}
	r := mustRoutes(t, cfg).Lookup("search")
	cfg.Arguments["gl__s"].Set["scope"] = "mutated"
	if !r.Maps("gl__s") || r.Maps("gh__s") {
		t.Errorf("Maps(gl__s) = %v, Maps(gh__s) = %v; want true, false", r.Maps("gl__s"), r.Maps("gh__s"))
	}
	for _, tc := range []struct {
		name, target string
		in, want     map[string]any
	}{
		{"unmapped target", "gh__s", map[string]any{"query": "x"}, map[string]any{"query": "x"}},
		{"rename and set", "gl__s", map[string]any{"query": "x", "page": 2, "scope": "all"},
			map[string]any{"search": "x", "page": 2, "scope": "blobs", "nested": map[string]any{"k": []any{1}}}},
		{"swap", "gl__s", map[string]any{"a": 1, "b": 2}, map[string]any{"a": 2, "b": 1, "scope": "blobs", "nested": map[string]any{"k": []any{1}}}},
		{"renamed wins", "gl__s", map[string]any{"query": "x", "search": "y"}, map[string]any{"search": "x", "scope": "blobs", "nested": map[string]any{"k": []any{1}}}},
		{"nil args", "gl__s", nil, map[string]any{"scope": "blobs", "nested": map[string]any{"k": []any{1}}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			before := cloneMap(tc.in)
			got := MapArguments(r, tc.target, tc.in)
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("MapArguments mismatch (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(before, tc.in); diff != "" {
				t.Errorf("input modified (-before +after):\n%s", diff)
			}
		})
	}
}

func cloneMap(m map[string]any) map[string]any {
	if m == nil {
		return nil
	}
	out := make(map[string]any, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

func TestActive(t *testing.T) {
	t.Parallel()
	r := mustRoutes(t, RouteConfig{Tool: "t", Targets: []string{"p__t", "b__t"}, On: []string{"credential_expiring", "breaker_open"}}).Lookup("t")
	for _, tc := range []struct {
		h              health
		target, reason string
		ok             bool
	}{
		{health{}, "p__t", "", true},
		{health{"p__t": "breaker_open"}, "b__t", "breaker_open", true},
		{health{"p__t": "ok:credential_expiring"}, "b__t", "credential_expiring", true},
		{health{"p__t": "ok:credential_expiring", "b__t": "breaker_open"}, "p__t", "", true},
		{health{"p__t": "breaker_open", "b__t": "breaker_open"}, "", "breaker_open", false},
		{health{"p__t": "credential_revoked"}, "", "credential_revoked", false},
	} {
		target, reason, ok := Active(r, tc.h)
		if target != tc.target || reason != tc.reason || ok != tc.ok {
			t.Errorf("Active(%v) = %q, %q, %v; want %q, %q, %v", tc.h, target, reason, ok, tc.target, tc.reason, tc.ok)
		}
	}
}
