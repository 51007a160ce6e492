package routing

import (
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/knadh/koanf/parsers/yaml"
	"github.com/knadh/koanf/providers/rawbytes"
	"github.com/knadh/koanf/v2"
)

// The routes and routing blocks decode with koanf and validate.
func TestRouteConfigKoanf(t *testing.T) {
	t.Parallel()
	src := `
routes:
  - tool: search
    targets: [github__search_code, gitlab__search]
    on: [credential_expired, credential_revoked, credential_invalid, credential_missing, rate_limit_reached,
         quota_exhausted, breaker_open, upstream_unavailable]
    retry_safe: false
    arguments: {gitlab__search: {rename: {query: search}, set: {scope: blobs}}}
routing: {hide_unavailable: true}
`
	k := koanf.New(".")
	if err := k.Load(rawbytes.Provider([]byte(src)), yaml.Parser()); err != nil {
		t.Fatal(err)
	}
	var got struct {
		Routes  []RouteConfig `koanf:"routes"`
		Routing Config        `koanf:"routing"`
	}
	if err := k.UnmarshalWithConf("", &got, koanf.UnmarshalConf{Tag: "koanf"}); err != nil {
		t.Fatal(err)
	}
	want := []RouteConfig{{
		Tool:    "search",
		Targets: []string{"github__search_code", "gitlab__search"},
		On:      DefaultOn(),
		Arguments: map[string]ArgumentMapping{"gitlab__search": {
			Rename: map[string]string{"query": "search"},
			Set:    map[string]any{"scope": "blobs"},
		}},
	}}
	if diff := cmp.Diff(want, got.Routes); diff != "" {
		t.Errorf("routes mismatch (-want +got):\n%s", diff)
	}
	if !got.Routing.HideUnavailable {
		t.Errorf("routing.hide_unavailable not decoded")
	}
	if err := ValidateRoutes("routes", got.Routes); err != nil {
		t.Error(err)
	}
}
