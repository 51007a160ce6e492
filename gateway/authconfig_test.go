package gateway

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/credgate/credgate/authmap"
)

// Regression test for issue 9: the shipped configs on 0.0.0.0; the Docker image's
// (which listens on 0.0.0.0) authenticates agents, so it may serve there,
// while the demo, moved to 0.0.0.0, may not.
func TestShippedConfigsExposure(t *testing.T) {
	t.Parallel()
	paths, err := filepath.Glob("../configs/*.yaml")
	if err != nil || len(paths) < 3 {
		t.Fatalf("configs: %v %v", paths, err)
	}
	for _, p := range paths {
		if filepath.Base(p) == "prometheus-rules.yaml" {
			continue // Prometheus rules, not a gateway config
		}
		data, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		// The Docker image sets CREDGATE_LISTEN=0.0.0.0:8080.
		cfg, err := ParseConfig(data, []string{"CREDGATE_LISTEN=0.0.0.0:8080"})
		if err != nil {
			t.Errorf("%s: %v", p, err)
			continue
		}
		err = cfg.CheckExposure(cfg.Listen)
		switch filepath.Base(p) {
		case "docker.yaml", "example.yaml":
			if err != nil {
				t.Errorf("%s on 0.0.0.0: %v; want it to authenticate agents", p, err)
			}
		default:
			if err == nil || !strings.Contains(err.Error(), "allow_unauthenticated") {
				t.Errorf("%s on 0.0.0.0 without auth: %v; want a refusal", p, err)
			}
		}
	}
}

// TestAdminListenOwnAddress: admin.listen must not be listen's address,
// but both may be port 0, which gives each a free port of its own (the
// README's 127.0.0.1:0 for both was refused).
func TestAdminListenOwnAddress(t *testing.T) {
	t.Parallel()
	if _, err := ParseConfig([]byte("listen: 127.0.0.1:0\nadmin: {listen: 127.0.0.1:0}\nupstreams:\n  a: {command: x}\n"), nil); err != nil {
		t.Errorf("listen and admin.listen both on port 0: %v", err)
	}
	if _, err := ParseConfig([]byte("listen: 127.0.0.1:8080\nadmin: {listen: 127.0.0.1:8080}\nupstreams:\n  a: {command: x}\n"), nil); err == nil || !strings.Contains(err.Error(), "admin.listen: the same address as listen") {
		t.Errorf("listen and admin.listen on one port: %v, want refused", err)
	}
}

// Regression test for a trial's finding: an agent's key equal to
// admin.token was accepted, and that agent could reload the config and
// every credential.
func TestAgentKeyIsNotAdminToken(t *testing.T) {
	t.Parallel()
	const tok = "shared-token-0123456789abcdef"
	const want = "auth.keys[0].key: the same value as admin.token"
	// Plain values: validate says so.
	_, err := ParseConfig([]byte("upstreams:\n  a: {command: x}\nadmin: {token: "+tok+"}\nauth: {keys: [{name: ci, key: "+tok+"}]}\n"), nil)
	if err == nil || !strings.Contains(err.Error(), want) || strings.Contains(err.Error(), tok) {
		t.Errorf("ParseConfig: %v; want refused, naming the key and not the value", err)
	}
	// From sources: the start says so.
	cfg, err := ParseConfig([]byte("upstreams:\n  a: {command: x}\nadmin: {token: "+tok+"}\nauth: {keys: [{name: ci, key: {env: CREDGATE_TEST_SHARED_TOKEN}}]}\n"), nil)
	if err != nil {
		t.Fatal(err)
	}
	lookup := func(k string) (string, bool) { return tok, k == "CREDGATE_TEST_SHARED_TOKEN" }
	_, err = New(cfg, &Options{Sources: &authmap.SourceOptions{LookupEnv: lookup}})
	if err == nil || !strings.Contains(err.Error(), want) || strings.Contains(err.Error(), tok) {
		t.Errorf("New: %v; want refused, naming the key and not the value", err)
	}
}
