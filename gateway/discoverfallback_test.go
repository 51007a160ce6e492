package gateway

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"testing"
	"time"
)

// Modes of the test binary as a stdio server that knows only 2025-11-25 and
// takes no request before initialize: it ignores such a request, or exits.
const (
	strictIgnoreMode = "strict-ignore"
	strictExitMode   = "strict-exit"
)

func strictUpstream(exitEarly bool) {
	initialized := false
	serveRaw(func(out *bufio.Writer, req childRequest, err error) {
		if err != nil {
			return
		}
		if !initialized && req.Method != "initialize" {
			if exitEarly {
				os.Exit(3)
			}
			return
		}
		switch req.Method {
		case "initialize":
			initialized = true
			replyResult(out, req.ID, `{"protocolVersion":"2025-11-25","capabilities":{"tools":{}},"serverInfo":{"name":"strict","version":"1"}}`)
		case "tools/list":
			replyResult(out, req.ID, `{"tools":[{"name":"hello","inputSchema":{"type":"object"}}]}`)
		case "tools/call":
			replyResult(out, req.ID, `{"content":[{"type":"text","text":"strict ok"}]}`)
		default:
			replyResult(out, req.ID, `{}`)
		}
	})
}

// TestOlderServerComesUp: a stdio server that ignores 2026-07-28's first
// request (server/discover) or exits on it, instead of answering "method
// not found", comes up: the attempt after the failed one asks 2025-11-25,
// and the upstream keeps that version. Found trying the gateway from
// outside: both stayed down for good.
func TestOlderServerComesUp(t *testing.T) {
	t.Parallel()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	for _, mode := range []string{strictIgnoreMode, strictExitMode} {
		t.Run(mode, func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
			defer cancel()
			g := newTestGateway(t, ctx, fmt.Sprintf("upstreams:\n  s: {command: %q, env: {%s: %s}, timeout: 2s}\n", self, rawUpstreamEnv, mode))
			u := g.upstream("s")
			waitFor(t, ctx, func() bool { return u.session.Load() != nil })
			cs := u.session.Load()
			if v := cs.InitializeResult().ProtocolVersion; v != "2025-11-25" {
				t.Errorf("negotiated %s; want 2025-11-25", v)
			}
			if !u.everUp.Load() || !u.askOlder.Load() {
				t.Error("the upstream does not keep the version it came up with")
			}
		})
	}
}
