package gateway

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
	"github.com/rs/zerolog"
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
				fmt.Fprintln(os.Stderr, "Error: request before initialize")
				os.Exit(3)
			}
			return
		}
		switch req.Method {
		case "initialize":
			initialized = true
			replyResult(out, req.ID, `{"protocolVersion":"2025-11-25","capabilities":{"tools":{}},"serverInfo":{"name":"strict","version":"1"}}`)
		case "tools/list":
			replyResult(out, req.ID, `{"tools":[{"name":"hello","inputSchema":{"type":"object"}},{"name":"die","inputSchema":{"type":"object"}}]}`)
		case "tools/call":
			if strings.Contains(string(req.Params), `"die"`) {
				os.Exit(4)
			}
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
			var logs syncBuffer
			g := newTestGatewayLogged(t, ctx, fmt.Sprintf("upstreams:\n  s: {command: %q, env: {%s: %s}, timeout: 2s}\n", self, rawUpstreamEnv, mode),
				zerolog.New(io.MultiWriter(&logs, zerolog.NewTestWriter(t))).Level(zerolog.WarnLevel))
			u := g.upstream("s")
			waitFor(t, ctx, func() bool { return u.session.Load() != nil })
			cs := u.session.Load()
			if v := cs.InitializeResult().ProtocolVersion; v != "2025-11-25" {
				t.Errorf("negotiated %s; want 2025-11-25", v)
			}
			// The warning quotes how the attempt at the newest failed: the
			// child's own error line when it wrote one (a port in use would
			// not be the version's fault).
			want := `"newest_failed":"`
			if mode == strictExitMode {
				want += "Error: request before initialize"
			}
			if !strings.Contains(logs.String(), want) {
				t.Errorf("the warning does not quote the first failure (%s):\n%s", want, logs.String())
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
		waitFor(t, ctx, func() bool { return g.upstream("s").session.Load() != nil && g.catalog.hasTool("s__hello") })
		res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "s__hello", Arguments: map[string]any{}})
		if err != nil || res.IsError || text(res) != "strict ok" {
			t.Errorf("an agent's own session: %+v, %v; want it asked the version the upstream came up with", res, err)
		}
	})
}

// TestOlderServerRestartsQuickly: once a child that ignores server/discover
// came up at 2025-11-25, its restart's attempt at the newest waits a few
// seconds (4 times what the older handshake took, at least 5 s), not the
// whole handshake bound, before the older one brings it back.
func TestOlderServerRestartsQuickly(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	var log syncBuffer
	g := newTestGatewayLogged(t, ctx, fmt.Sprintf("upstreams:\n  s: {command: %q, env: {%s: %s}, timeout: 8s}\n", self, rawUpstreamEnv, strictIgnoreMode),
		zerolog.New(&log).Level(zerolog.DebugLevel)) // a restart's failed attempts are logged at debug
	cs := agent(t, ctx, g, nil)
	u := g.upstream("s")
	waitFor(t, ctx, func() bool { return u.session.Load() != nil && g.catalog.hasTool("s__die") })
	first := u.session.Load()
	if res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "s__die", Arguments: map[string]any{}}); err != nil || !res.IsError {
		t.Fatalf("s__die = %+v, %v; want the child gone (upstream_unavailable)", res, err)
	}
	for s := u.session.Load(); s == nil || s == first; s = u.session.Load() {
		select {
		case <-ctx.Done():
			t.Fatalf("the child never came back; the log:\n%s", log.String())
		case <-time.After(time.Millisecond):
		}
	}
	// The restart waits max(5s, 4 times the last good handshake), under
	// the timeout: more than 5s on a loaded machine (5.14s failed CI).
	got := log.String()
	var waits []time.Duration
	for _, m := range regexp.MustCompile(`"err":"connect: no answer within ([0-9.]+m?s)`).FindAllStringSubmatch(got, -1) {
		d, _ := time.ParseDuration(m[1])
		waits = append(waits, d)
	}
	if len(waits) < 2 || waits[0] != 8*time.Second || waits[1] < 5*time.Second || waits[1] >= 8*time.Second {
		t.Errorf("waits %v; want the first attempt to wait 8s and the restart's at least 5s, under the timeout; the log:\n%s", waits, got)
	}
}
