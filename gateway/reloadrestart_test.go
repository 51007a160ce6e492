package gateway

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/credgate/credgate/internal/redistest"
)

// Regression test for issue 8 (hot reload, restart_required): a reload
// that changes only settings a restart applies is logged at warn naming
// them, as a reload that also changes something else is. Found trying the
// built gateway: it logged only "config reloaded: nothing changed".
func TestReloadOnlyRestartKeysIsLogged(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	const token = "tok-restart-0123456789"
	up := newBearerUpstream(t, "echo")
	up.accept(token)
	var logs syncBuffer
	cfg := tokConfig("", "source: {value: "+token+"}", up.url())
	g, _, _ := credGateway(t, ctx, cfg, nil, &logs)
	if err := reloadTo(t, g, "listen: 127.0.0.1:1\nmax_sessions: 5\n"+cfg); err != nil {
		t.Fatalf("Reload: %v", err)
	}
	if diff := cmp.Diff([]string{"listen", "max_sessions"}, g.Health().Config.RestartRequired); diff != "" {
		t.Errorf("restart_required mismatch (-want +got):\n%s", diff)
	}
	var warned bool
	for _, line := range strings.Split(logs.String(), "\n") {
		if strings.Contains(line, `"level":"warn"`) && strings.Contains(line, "need a restart") &&
			strings.Contains(line, `"listen"`) && strings.Contains(line, `"max_sessions"`) {
			warned = true
		}
	}
	if !warned {
		t.Errorf("no warning naming the settings that need a restart; logs:\n%s", logs.String())
	}
}

// Regression test for a state change on reload (found trying the gateway
// with replicas): state was missing from restartKeys, so a new
// state.redis.key_prefix was neither kept at its old value, listed in
// restart_required nor warned about. An unchanged state (an unset
// key_prefix and its default spelt out) needs no restart.
func TestReloadStateNeedsRestart(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	const token = "tok-state-0123456789"
	up := newBearerUpstream(t, "echo")
	up.accept(token)
	srv := redistest.Start(t)
	var logs syncBuffer
	cfg := tokConfig("", "source: {value: "+token+"}", up.url())
	state := func(extra string) string {
		return fmt.Sprintf("state:\n  redis: {url: %q%s}\n", srv.URL, extra)
	}
	g, _, _ := credGateway(t, ctx, state("")+cfg, nil, &logs)

	if err := reloadTo(t, g, state(`, key_prefix: "credgate:", timeout: 200ms`)+cfg); err != nil {
		t.Fatalf("Reload with the defaults spelt out: %v", err)
	}
	if got := g.Health().Config.RestartRequired; len(got) != 0 {
		t.Errorf("restart_required = %v after a reload that spells out the defaults, want none", got)
	}

	if err := reloadTo(t, g, state(`, key_prefix: "other:"`)+cfg); err != nil {
		t.Fatalf("Reload: %v", err)
	}
	if diff := cmp.Diff([]string{"state"}, g.Health().Config.RestartRequired); diff != "" {
		t.Errorf("restart_required mismatch (-want +got):\n%s", diff)
	}
	if p := g.config().State.Redis.Prefix(); p != "credgate:" {
		t.Errorf("key_prefix in force = %q, want the old credgate: until a restart", p)
	}
	var warned bool
	for _, line := range strings.Split(logs.String(), "\n") {
		if strings.Contains(line, `"level":"warn"`) && strings.Contains(line, "need a restart") && strings.Contains(line, `"state"`) {
			warned = true
		}
	}
	if !warned {
		t.Errorf("no warning naming state as needing a restart; logs:\n%s", logs.String())
	}
}
