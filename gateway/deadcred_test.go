package gateway

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/credgate/credgate/authmap"
)

// Regression test for issue 8 (no retry storm with a dead token): once a
// credential is known revoked, the upstream's own traffic (health probes,
// reconnect attempts, listings) does not send it again either, until it
// changes. Found trying the built gateway: after a revocation the reconnect
// loop sent the dead token with every attempt, every 30 s, for as long as
// nobody rotated it.
func TestDeadCredentialNotSentByReconnects(t *testing.T) {
	t.Parallel()
	// Expired too, as answered by the provider with no renewal to replace
	// it (a value source): found trying the built gateway, an expired
	// token was presented by every reconnect, 50 times in 5 minutes.
	for _, reject := range []string{rejectRevoked, rejectExpired} {
		t.Run(strings.Trim(reject[strings.LastIndex(reject, " ")+1:], `"`), func(t *testing.T) {
			t.Parallel()
			deadNotSentByReconnects(t, reject)
		})
	}
}

func deadNotSentByReconnects(t *testing.T, reject string) {
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	const token = "live-token-0123456789"
	g, cs, _, up := valueTokGateway(t, ctx, "health_interval: 200ms\n", token)
	callOK(t, ctx, cs, "api__echo")
	refusedFrom := len(up.tokens())
	up.refuse(token, reject)
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
		t.Errorf("%d requests carried the dead token after it was refused, want at most 2 (the refused call, a probe already in flight): reconnects and probes must not send it", sent)
	}
	if f := g.Health().Upstreams["api"].LastFailure; f == nil || !f.IsAuth() {
		t.Errorf("upstream last_failure %+v, want the credential's auth failure", f)
	}
}

// Regression test for issue 8 (a credential rejected at connect): the
// provider refusing the upstream's own traffic (initialize) sets the
// credential's status, as a refused call does, and the reconnect loop stops
// presenting the dead value. Found trying the built gateway: a token
// revoked while the gateway was down showed "healthy" in /health (so no
// alert fired) while the upstream was down for credential_invalid, and
// every reconnect sent it again.
func TestCredentialRejectedAtConnect(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, challenge string
		want            authmap.Status
	}{
		{"revoked", rejectRevoked, authmap.StatusRevoked},
		{"invalid", rejectInvalid, authmap.StatusInvalid},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
			defer cancel()
			const token = "dead-token-0123456789"
			path := filepath.Join(t.TempDir(), "token")
			writeFile(t, path, token+"\n")
			up := newBearerUpstream(t, "echo")
			up.refuse(token, tc.challenge)
			g, _, _ := credGateway(t, ctx, tokConfig("", "source: {file: "+path+"}", up.url()), nil, nil)
			waitFor(t, ctx, func() bool { return g.Health().Credentials["tok"].Status == tc.want })
			u := g.snap.Load().byName["api"]
			sent := len(up.tokens())
			before := u.connectFailures.Load()
			waitFor(t, ctx, func() bool { return u.connectFailures.Load() >= before+5 })
			if n := len(up.tokens()) - sent; n > 0 {
				t.Errorf("%d more requests carried the %s token while the reconnect loop retried", n, tc.want)
			}

			// A new value brings the upstream back.
			up.accept("good-token-0123456789")
			writeFile(t, path, "good-token-0123456789\n")
			waitFor(t, ctx, func() bool { return g.Health().Upstreams["api"].Status == StatusUp })
			if st := g.Health().Credentials["tok"].Status; st != authmap.StatusHealthy {
				t.Errorf("credential status after rotation %s, want healthy", st)
			}
		})
	}
}
