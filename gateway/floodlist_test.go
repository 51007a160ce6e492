package gateway

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
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
// lists. The cap counts only the tools the filter lets through, so with
// tools.allow matching a few of them (or deny matching most) the pages are
// read without end until the upstream's timeout: the listing burns a CPU for
// the whole timeout (60 s by default), fails as a timeout, and takes the
// prompts/resources lists down with it; the cut is never reported.
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

const levelFloodCount = 2000

func levelFloodUpstream() {
	in := bufio.NewScanner(os.Stdin)
	in.Buffer(make([]byte, 1<<20), 1<<20)
	out := bufio.NewWriterSize(os.Stdout, 1<<20)
	for in.Scan() {
		var req struct {
			ID     json.RawMessage `json:"id"`
			Method string          `json:"method"`
		}
		if json.Unmarshal(in.Bytes(), &req) != nil || req.ID == nil {
			continue
		}
		var result string
		switch req.Method {
		case "initialize":
			result = `{"protocolVersion":"2025-11-25","capabilities":{"tools":{},"logging":{}},"serverInfo":{"name":"lf","version":"1"}}`
		case "tools/list":
			result = `{"tools":[{"name":"work","inputSchema":{"type":"object"}}]}`
		case "tools/call":
			for i := range levelFloodCount {
				fmt.Fprintf(out, `{"jsonrpc":"2.0","method":"notifications/message","params":{"level":"debug","logger":"lf","data":"chatter %d"}}`+"\n", i)
			}
			fmt.Fprintf(out, `{"jsonrpc":"2.0","method":"notifications/message","params":{"level":"error","logger":"lf","data":"IMPORTANT"}}`+"\n")
			result = `{"content":[{"type":"text","text":"done"}]}`
		case "ping", "logging/setLevel":
			result = `{}`
		default:
			fmt.Fprintf(out, `{"jsonrpc":"2.0","id":%s,"error":{"code":-32601,"message":"no %s"}}`+"\n", req.ID, req.Method)
			_ = out.Flush()
			continue
		}
		fmt.Fprintf(out, `{"jsonrpc":"2.0","id":%s,"result":%s}`+"\n", req.ID, result)
		_ = out.Flush()
	}
}

// TestFloodLimitAfterLevelFilter: an agent that asked for error-level logs
// only (logging/setLevel error) gets the one error message its call's
// upstream sent, however many debug messages (which it never receives)
// came before. The flood limiter is taken before the agent's level filter
// (ServerSession.Log / fastStream.notifyLog), so debug chatter the agent
// never sees spends the upstream's budget and the error is dropped.
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
// calls each ask their own user (elicitation) at once are each asked. The
// cap on requests in flight is per upstream, shared by every agent, so the
// ninth agent's elicitation is refused at once while eight humans are
// reading their dialogs; TestPerAgentSessions with 9 agents instead of 2.
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
// name holding a known secret, as logCall's now does. logRefusal writes the
// upstream's own tool name as it is.
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
	if _, _, ok := g.catalog.toolTarget("a__leak_" + secret); !ok {
		t.Fatal("the tool is not listed")
	}
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
	in := bufio.NewScanner(os.Stdin)
	in.Buffer(make([]byte, 1<<20), 1<<20)
	out := bufio.NewWriterSize(os.Stdout, 1<<20)
	version := 0
	for in.Scan() {
		var req struct {
			ID     json.RawMessage `json:"id"`
			Method string          `json:"method"`
		}
		if json.Unmarshal(in.Bytes(), &req) != nil || req.ID == nil {
			continue
		}
		var result string
		switch req.Method {
		case "initialize":
			result = `{"protocolVersion":"2025-11-25","capabilities":{"tools":{"listChanged":true}},"serverInfo":{"name":"storm","version":"1"}}`
		case "tools/list":
			result = fmt.Sprintf(`{"tools":[{"name":"bump","inputSchema":{"type":"object"}},{"name":"v%d","inputSchema":{"type":"object"}}]}`, version)
		case "tools/call":
			version++
			for range stormNotes {
				fmt.Fprintln(out, `{"jsonrpc":"2.0","method":"notifications/tools/list_changed"}`)
			}
			result = fmt.Sprintf(`{"content":[{"type":"text","text":"v%d"}]}`, version)
		case "ping":
			result = `{}`
		default:
			fmt.Fprintf(out, `{"jsonrpc":"2.0","id":%s,"error":{"code":-32601,"message":"no %s"}}`+"\n", req.ID, req.Method)
			_ = out.Flush()
			continue
		}
		fmt.Fprintf(out, `{"jsonrpc":"2.0","id":%s,"result":%s}`+"\n", req.ID, result)
		_ = out.Flush()
	}
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
