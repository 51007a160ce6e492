package gateway

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
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
// and the upstream's other sessions (an agent's own, with session:
// per_agent) ask that version too. Found trying the gateway from outside:
// both stayed down for good.
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
			if !u.workOlder.Load() || u.probeOlder.Load() {
				t.Errorf("after coming up: the upstream's other sessions ask the older version %v (want true); the next reconnect asks it first %v (want false)", u.workOlder.Load(), u.probeOlder.Load())
			}
		})
	}
	t.Run("per_agent", func(t *testing.T) {
		t.Parallel()
		ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
		defer cancel()
		g, cs := startGateway(t, ctx, fmt.Sprintf("upstreams:\n  s: {command: %q, env: {%s: %s}, timeout: 5s, session: per_agent}\n", self, rawUpstreamEnv, strictExitMode))
		waitFor(t, ctx, func() bool { return g.upstream("s").session.Load() != nil })
		res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "s__hello", Arguments: map[string]any{}})
		if err != nil || res.IsError || text(res) != "strict ok" {
			t.Errorf("an agent's own session: %+v, %v; want it asked the version the upstream came up with", res, err)
		}
	})
}
