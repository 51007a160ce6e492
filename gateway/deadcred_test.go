package gateway

import (
	"context"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// Regression test for issue 8 (no retry storm with a dead token): once a
// credential is known revoked, the upstream's own traffic (health probes,
// reconnect attempts, listings) does not send it again either, until it
// changes. Found trying the built gateway: after a revocation the reconnect
// loop sent the dead token with every attempt, every 30 s, for as long as
// nobody rotated it.
func TestDeadCredentialNotSentByReconnects(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	const token = "live-token-0123456789"
	g, cs, _, up := valueTokGateway(t, ctx, "health_interval: 20ms\n", token)
	callOK(t, ctx, cs, "api__echo")
	refusedFrom := len(up.tokens())
	up.refuse(token, rejectRevoked)
	res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "api__echo", Arguments: map[string]any{}})
	if err != nil {
		t.Fatal(err)
	}
	if !res.IsError {
		t.Fatal("call with the revoked token succeeded")
	}
	// The probe finds the session unusable, the upstream goes down, and the
	// reconnect loop tries several times (every 10-50 ms in this test).
	u := g.snap.Load().byName["api"]
	waitFor(t, ctx, func() bool { return g.Health().Upstreams["api"].Status == StatusDown })
	before := u.connectFailures.Load()
	waitFor(t, ctx, func() bool { return u.connectFailures.Load() >= before+5 })

	sent := 0
	for _, tok := range up.tokens()[refusedFrom:] {
		if tok == token {
			sent++
		}
	}
	if sent > 2 {
		t.Errorf("%d requests carried the revoked token after it was refused, want at most 2 (the refused call, a probe already in flight): reconnects and probes must not send it", sent)
	}
	if f := g.Health().Upstreams["api"].LastFailure; f == nil || !f.IsAuth() {
		t.Errorf("upstream last_failure %+v, want the credential's auth failure", f)
	}
}
