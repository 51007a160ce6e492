package routing_test

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/credgate/credgate/breaker"
	"github.com/credgate/credgate/routing"
)

// breakers are the breaker names of a target, computed once per config as
// the gateway would.
type breakers struct{ upstream, credential string }

func breakersOf(target string) breakers {
	up, _, _ := strings.Cut(target, "__")
	return breakers{up, breaker.Name(up, "cred")}
}

// breakerHealth adapts a breaker.Set to routing.Health the way the gateway
// would: a target "<upstream>__<tool>" is usable while its upstream's and its
// credential's breakers admit calls.
type breakerHealth struct {
	set     *breaker.Set
	targets map[string]breakers
}

func (h breakerHealth) Usable(target string) (bool, string) {
	n := h.targets[target]
	if h.set.Check(n.upstream, 0) != nil || h.set.Check(n.credential, 1) != nil {
		return false, routing.ReasonBreakerOpen
	}
	return true, ""
}

// BenchmarkDecision is the routing and breaker decision of one call: look up
// the route, select a target (checking its breakers), take the upstream and
// credential breakers, and report success to both. In "failover" the
// primary's credential is revoked, so every call is passed over to the
// backup. Target: under 2µs per call.
func BenchmarkDecision(b *testing.B) {
	b.Run("primary", func(b *testing.B) { benchDecision(b, false) })
	b.Run("failover", func(b *testing.B) { benchDecision(b, true) })
}

func benchDecision(b *testing.B, revoked bool) {
	rs, err := routing.NewRoutes([]routing.RouteConfig{{Tool: "search", Targets: []string{"p__search", "b__search"}}})
	if err != nil {
		b.Fatal(err)
	}
	set := breaker.New(nil)
	want := "p__search"
	if revoked {
		done, err := set.Allow("p/cred", 1)
		if err != nil {
			b.Fatal(err)
		}
		done(breaker.Rejected("credential_revoked"))
		want = "b__search"
	}
	h := breakerHealth{set, map[string]breakers{"p__search": breakersOf("p__search"), "b__search": breakersOf("b__search")}}
	for b.Loop() {
		r := rs.Lookup("search")
		var served string
		for _, c := range routing.Select(r, h) {
			if !c.Usable {
				continue
			}
			n := h.targets[c.Target]
			d1, err := set.Allow(n.upstream, 0)
			if err != nil {
				continue
			}
			d2, err := set.Allow(n.credential, 1)
			if err != nil {
				d1(breaker.Excluded())
				continue
			}
			d2(breaker.Success())
			d1(breaker.Success())
			served = c.Target
			break
		}
		if served != want {
			b.Fatalf("served by %q", served)
		}
	}
}

// TestMetaJSON pins the wire shape of _meta["dev.credgate/route"].
func TestMetaJSON(t *testing.T) {
	t.Parallel()
	m := routing.Meta{ServedBy: "gitlab__search", Reason: "credential_revoked",
		Attempts: []routing.Attempt{{Target: "github__search_code", Reason: "credential_revoked"}}}
	got, err := json.Marshal(map[string]any{routing.MetaKey: m})
	if err != nil {
		t.Fatal(err)
	}
	want := `{"dev.credgate/route":{"served_by":"gitlab__search","reason":"credential_revoked","attempts":[{"target":"github__search_code","reason":"credential_revoked"}]}}`
	if string(got) != want {
		t.Errorf("meta JSON:\n got %s\nwant %s", got, want)
	}
}
