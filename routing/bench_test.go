package routing_test

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/credgate/credgate/breaker"
	"github.com/credgate/credgate/routing"
)

// breakerHealth adapts a breaker.Set to routing.Health the way the gateway
// would: a target "<upstream>__<tool>" is usable while its upstream's and its
// credential's breakers admit calls.
type breakerHealth struct{ set *breaker.Set }

func (h breakerHealth) Usable(target string) (bool, string) {
	up, _, _ := strings.Cut(target, "__")
	if h.set.Check(up, 0) != nil || h.set.Check(breaker.Name(up, "cred"), 1) != nil {
		return false, routing.ReasonBreakerOpen
	}
	return true, ""
}

// BenchmarkDecision is the routing and breaker decision of one call: look up
// the route, select a target (checking its breakers), take the upstream and
// credential breakers, and report success to both. The primary's credential
// is revoked, so every call is passed over to the backup. Target: under 2µs.
func BenchmarkDecision(b *testing.B) {
	rs, err := routing.NewRoutes([]routing.RouteConfig{{Tool: "search", Targets: []string{"p__search", "b__search"}}})
	if err != nil {
		b.Fatal(err)
	}
	set := breaker.New(nil)
	done, err := set.Allow("p/cred", 1)
	if err != nil {
		b.Fatal(err)
	}
	done(breaker.Rejected("credential_revoked"))
	h := breakerHealth{set}
	for b.Loop() {
		r := rs.Lookup("search")
		var served string
		for _, c := range routing.Select(r, h) {
			if !c.Usable {
				continue
			}
			up, _, _ := strings.Cut(c.Target, "__")
			d1, err := set.Allow(up, 0)
			if err != nil {
				continue
			}
			d2, err := set.Allow(breaker.Name(up, "cred"), 1)
			if err != nil {
				d1(breaker.Excluded())
				continue
			}
			d2(breaker.Success())
			d1(breaker.Success())
			served = c.Target
			break
		}
		if served != "b__search" {
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
