package gateway

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/credgate/credgate/authmap"
	"github.com/modelcontextprotocol/go-sdk/mcp"
	"github.com/rs/zerolog"
)

// TestListCapWithToolFilter: an upstream whose tools/list pages never end is
// cut at maxListed whether or not a tools filter drops most of what it
// lists. Found in review: the cap counted only the tools the filter let
// through, so with tools.allow matching a few of them the pages were read
// without end until the upstream's timeout, and the cut was never reported.
func TestListCapWithToolFilter(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	up := strings.TrimSuffix(selfUpstream(t, endlessListMode), "}") + `, timeout: 10s, tools: {allow: ["t0_*"]}}`
	began := time.Now()
	g := newTestGateway(t, ctx, fmt.Sprintf("upstreams:\n  endless: %s\n", up))
	h := g.Health().Upstreams["endless"]
	t.Logf("first listing took %v; tools %d; last_error %q", time.Since(began), h.Tools, h.LastError)
	if !strings.Contains(h.LastError, fmt.Sprintf("more than %d", maxListed)) {
		t.Errorf("endless upstream with tools.allow: last_error %q; want the cut reported, not the listing timing out", h.LastError)
	}
}

// levelFloodMode makes the test binary a raw stdio upstream whose one tool
// sends levelFloodCount debug log messages, then one error-level message
// "IMPORTANT", then answers.
const levelFloodMode = "level-flood"

// levelFloodCount is twice what a burst passes (notifyBurst), and few enough
// that the handlers keep up with the barrier before the answer
// (noteCounter.drain) on a loaded machine.
const levelFloodCount = 2 * notifyBurst

func levelFloodUpstream() {
	serveRaw(func(out *bufio.Writer, req childRequest, err error) {
		switch {
		case err != nil:
		case req.Method == "initialize":
			replyResult(out, req.ID, `{"protocolVersion":"2025-11-25","capabilities":{"tools":{},"logging":{}},"serverInfo":{"name":"lf","version":"1"}}`)
		case req.Method == "tools/list":
			replyResult(out, req.ID, `{"tools":[{"name":"work","inputSchema":{"type":"object"}}]}`)
		case req.Method == "tools/call":
			for i := range levelFloodCount {
				fmt.Fprintf(out, `{"jsonrpc":"2.0","method":"notifications/message","params":{"level":"debug","logger":"lf","data":"chatter %d"}}`+"\n", i)
			}
			fmt.Fprintf(out, `{"jsonrpc":"2.0","method":"notifications/message","params":{"level":"error","logger":"lf","data":"IMPORTANT"}}`+"\n")
			replyResult(out, req.ID, `{"content":[{"type":"text","text":"done"}]}`)
		case req.Method == "ping", req.Method == "logging/setLevel":
			replyResult(out, req.ID, `{}`)
		default:
			replyNoMethod(out, req)
		}
	})
}

// TestFloodLimitAfterLevelFilter: an agent that asked for error-level logs
// only (logging/setLevel error) gets the one error message its call's
// upstream sent, however many debug messages (which it never receives)
// came before. Found in review: the flood limiter was taken before the
// agent's level filter, so debug chatter the agent never saw spent the
// upstream's budget and the error was dropped.
func TestFloodLimitAfterLevelFilter(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	for _, fast := range []bool{true, false} {
		g := newTestGateway(t, ctx, fmt.Sprintf("fast_path: %v\nupstreams:\n  f: %s\n", fast, selfUpstream(t, levelFloodMode)))
		var mu sync.Mutex
		var got []string
		cs := agent(t, ctx, g, &mcp.ClientOptions{
			LoggingMessageHandler: func(_ context.Context, r *mcp.LoggingMessageRequest) {
				mu.Lock()
				defer mu.Unlock()
				got = append(got, fmt.Sprintf("%s:%v", r.Params.Level, r.Params.Data))
			},
		})
		if err := cs.SetLoggingLevel(ctx, &mcp.SetLoggingLevelParams{Level: "error"}); err != nil {
			t.Fatal(err)
		}
		res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "f__work", Arguments: map[string]any{}})
		if err != nil || res.IsError {
			t.Fatalf("fast_path %v: call: %v %v", fast, res, err)
		}
		wctx, wcancel := context.WithTimeout(ctx, 5*time.Second)
		arrived := func() bool {
			mu.Lock()
			defer mu.Unlock()
			return len(got) > 0
		}
		for !arrived() && wctx.Err() == nil {
			select {
			case <-wctx.Done():
			case <-time.After(time.Millisecond):
			}
		}
		wcancel()
		mu.Lock()
		if len(got) != 1 || got[0] != "error:IMPORTANT" {
			t.Errorf("fast_path %v: the agent (level error) got %q; want the one error message (dropped: %d)", fast, got, g.upstream("f").flood.dropped.Load())
		}
		mu.Unlock()
	}
}

// TestAsksCapAcrossAgents: with session: per_agent, asksMax+1 agents whose
// calls each ask their own user (elicitation) at once are each asked
// (TestPerAgentSessions with 9 agents instead of 2). Found in review: the
// cap on requests in flight was per upstream, shared by every agent, so the
// ninth agent's elicitation was refused while eight humans read theirs.
func TestAsksCapAcrossAgents(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	url := featureUpstream(t, make(chan struct{}), make(chan struct{}))
	g, _ := startGateway(t, ctx, fmt.Sprintf("upstreams:\n  f: {url: %s, session: per_agent}\n", url))
	const n = asksMax + 1
	var asked atomic.Int32
	allAsked := make(chan struct{})
	release := make(chan struct{}) // closed once all were asked, or one call ended first
	var once sync.Once
	open := func() { once.Do(func() { close(release) }) }
	var sessions []*mcp.ClientSession
	for i := range n {
		name := fmt.Sprint("user", i)
		sessions = append(sessions, agent(t, ctx, g, &mcp.ClientOptions{
			ElicitationHandler: func(ctx context.Context, _ *mcp.ElicitRequest) (*mcp.ElicitResult, error) {
				if asked.Add(1) == n {
					close(allAsked)
				}
				select {
				case <-release:
				case <-ctx.Done():
				}
				return &mcp.ElicitResult{Action: "accept", Content: map[string]any{"name": name}}, nil
			},
		}))
	}
	results := make(chan string, n)
	for _, cs := range sessions {
		go func() {
			res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "f__ask"})
			if err != nil {
				results <- err.Error()
				return
			}
			results <- text(res)
		}()
	}
	var got []string
	select {
	case <-allAsked:
	case r := <-results:
		got = append(got, r)
		t.Errorf("a call ended before all %d agents were asked: %q", n, r)
	case <-ctx.Done():
		t.Fatal("timed out")
	}
	open()
	for len(got) < n {
		select {
		case r := <-results:
			got = append(got, r)
		case <-ctx.Done():
			t.Fatal("calls did not finish")
		}
	}
	for _, r := range got {
		if !strings.HasPrefix(r, "accept user") {
			t.Errorf("result %q; want each agent's own answer", r)
		}
	}
}

// TestRefusalAuditLineToolNameRedacted: the audit line of a call the
// gateway refused itself (logRefusal: policy, rate limit) redacts a tool
// name holding a known secret, as logCall's does. Found in review.
func TestRefusalAuditLineToolNameRedacted(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	const secret = "s3cr3tT0kenAbCdEf0123456789xyz"
	s := mcp.NewServer(&mcp.Implementation{Name: "leaky", Version: "1"}, nil)
	s.AddTool(&mcp.Tool{Name: "leak_" + secret, InputSchema: json.RawMessage(`{"type":"object"}`)}, func(context.Context, *mcp.CallToolRequest) (*mcp.CallToolResult, error) {
		return &mcp.CallToolResult{}, nil
	})
	var logs syncBuffer
	g := newTestGatewayLogged(t, ctx, fmt.Sprintf("upstreams:\n  a: {url: %s, headers: {X-Api-Token: %s}}\n", serveMCP(t, s), secret), zerolog.New(&logs).Level(zerolog.InfoLevel))
	if _, _, ok := g.catalog.toolTarget("a__leak_" + secret); ok {
		t.Error("a tool named after a secret is listed (withoutSecretNames)")
	}
	// An agent may still call the name it knows.
	g.logRefusal(ctx, "tools/call", "a__leak_"+secret, time.Now(), authmap.Failure{Type: authmap.TypeForbidden})
	if strings.Contains(logs.String(), secret) {
		t.Errorf("the audit line of a refused call to a tool named after a secret:\n%s", logs.String())
	}
}

// stormMode makes the test binary a raw stdio upstream whose tools/list
// lists one tool named after its version, v<N>; tools/call of "bump" adds one
// to the version and sends stormNotes tools/list_changed before answering.
const stormMode = "storm"

const stormNotes = 50

func stormUpstream() {
	version := 0
	serveRaw(func(out *bufio.Writer, req childRequest, err error) {
		switch {
		case err != nil:
		case req.Method == "initialize":
			replyResult(out, req.ID, `{"protocolVersion":"2025-11-25","capabilities":{"tools":{"listChanged":true}},"serverInfo":{"name":"storm","version":"1"}}`)
		case req.Method == "tools/list":
			replyResult(out, req.ID, fmt.Sprintf(`{"tools":[{"name":"bump","inputSchema":{"type":"object"}},{"name":"v%d","inputSchema":{"type":"object"}}]}`, version))
		case req.Method == "tools/call":
			version++
			for range stormNotes {
				fmt.Fprintln(out, `{"jsonrpc":"2.0","method":"notifications/tools/list_changed"}`)
			}
			replyResult(out, req.ID, fmt.Sprintf(`{"content":[{"type":"text","text":"v%d"}]}`, version))
		case req.Method == "ping":
			replyResult(out, req.ID, `{}`)
		default:
			replyNoMethod(out, req)
		}
	})
}

// TestRelistAfterStorm: after a storm of list_changed, spaced relisting
// still lists the last change (no wakeup lost in serve's timer logic). It
// passes: kept as a regression test of the spacing.
func TestRelistAfterStorm(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	g, cs := startGateway(t, ctx, fmt.Sprintf("upstreams:\n  s: %s\n", selfUpstream(t, stormMode)))
	const bumps = 5
	for range bumps {
		if res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "s__bump", Arguments: map[string]any{}}); err != nil || res.IsError {
			t.Fatalf("bump: %v %v", res, err)
		}
	}
	waitFor(t, ctx, func() bool {
		_, _, ok := g.catalog.toolTarget(fmt.Sprintf("s__v%d", bumps))
		return ok
	})
	if _, _, ok := g.catalog.toolTarget(fmt.Sprintf("s__v%d", bumps-1)); ok {
		t.Error("an older version is still listed")
	}
}
