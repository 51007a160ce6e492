package breaker

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/knadh/koanf/parsers/yaml"
	"github.com/knadh/koanf/providers/rawbytes"
	"github.com/knadh/koanf/v2"
)

// The README's breaker block decodes with koanf into Config.
func TestConfigKoanf(t *testing.T) {
	t.Parallel()
	k := koanf.New(".")
	src := "breaker: {failures: 3, open_timeout: 10s, half_open_requests: 2, quota_cooldown: 1h}\n"
	if err := k.Load(rawbytes.Provider([]byte(src)), yaml.Parser()); err != nil {
		t.Fatal(err)
	}
	var got Config
	if err := k.UnmarshalWithConf("breaker", &got, koanf.UnmarshalConf{Tag: "koanf"}); err != nil {
		t.Fatal(err)
	}
	want := Config{Failures: 3, OpenTimeout: 10 * time.Second, HalfOpenRequests: 2, QuotaCooldown: time.Hour}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("decoded config mismatch (-want +got):\n%s", diff)
	}
	if err := got.Validate("upstreams.a.breaker"); err != nil {
		t.Error(err)
	}
}
