package gateway

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
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
