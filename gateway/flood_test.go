package gateway

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// floodMode makes the test binary a raw 2025-11-25 stdio upstream
// (floodUpstream) that floods a call with log messages and progress.
const floodMode = "flood"

// floodCount is how many log messages and progress notifications
// floodUpstream sends during a call, each.
const floodCount = 5000

// floodUpstream answers tools/call after sending floodCount error-level log
// messages and floodCount progress notifications (when the call has a
// progress token), and log messages of 1 MiB of data, then "done".
func floodUpstream() {
	serveRaw(func(out *bufio.Writer, req childRequest, err error) {
		switch {
		case err != nil:
		case req.Method == "initialize":
			replyResult(out, req.ID, `{"protocolVersion":"2025-11-25","capabilities":{"tools":{},"logging":{}},"serverInfo":{"name":"flood","version":"1"}}`)
		case req.Method == "tools/list":
			replyResult(out, req.ID, `{"tools":[{"name":"flood","inputSchema":{"type":"object"}},{"name":"steps","inputSchema":{"type":"object"}}]}`)
		case req.Method == "tools/call":
			var p struct {
				Name string `json:"name"`
				Meta struct {
					ProgressToken json.RawMessage `json:"progressToken"`
				} `json:"_meta"`
			}
			_ = json.Unmarshal(req.Params, &p)
			if p.Name == "steps" { // a call with a few steps of progress
				for i := range 5 {
					fmt.Fprintf(out, `{"jsonrpc":"2.0","method":"notifications/progress","params":{"progressToken":%s,"progress":%d,"total":5}}`+"\n", p.Meta.ProgressToken, i+1)
				}
				replyResult(out, req.ID, `{"content":[{"type":"text","text":"done"}]}`)
				return
			}
			for i := range floodCount {
				fmt.Fprintf(out, `{"jsonrpc":"2.0","method":"notifications/message","params":{"level":"error","logger":"flood","data":"line %d"}}`+"\n", i)
				if p.Meta.ProgressToken != nil {
					fmt.Fprintf(out, `{"jsonrpc":"2.0","method":"notifications/progress","params":{"progressToken":%s,"progress":%d}}`+"\n", p.Meta.ProgressToken, i)
				}
			}
			fmt.Fprintf(out, `{"jsonrpc":"2.0","method":"notifications/message","params":{"level":"error","logger":"flood","data":%q}}`+"\n", strings.Repeat("x", 1<<20-1024))
			replyResult(out, req.ID, `{"content":[{"type":"text","text":"done"}]}`)
		case req.Method == "ping", req.Method == "logging/setLevel":
			replyResult(out, req.ID, `{}`)
		default:
			replyNoMethod(out, req)
		}
	})
}

// TestFloodBounded: an upstream flooding a call with log messages and
// progress reaches the agent with at most a bounded number of them (the
// rest dropped, the answer intact), and a log message's data over
// notifyDataMax is replaced by a note of its size. Found feeding the built
// gateway hostile upstreams: floods to an agent that did not read its
// stream grew the gateway to 8.9 GB.
func TestFloodBounded(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	for _, fast := range []bool{true, false} {
		g := newTestGateway(t, ctx, fmt.Sprintf("fast_path: %v\nupstreams:\n  f: %s\n", fast, selfUpstream(t, floodMode)))
		var mu sync.Mutex
		var logs, progress, big int
		cs := agent(t, ctx, g, &mcp.ClientOptions{
			LoggingMessageHandler: func(_ context.Context, r *mcp.LoggingMessageRequest) {
				mu.Lock()
				defer mu.Unlock()
				logs++
				if s, _ := r.Params.Data.(string); strings.Contains(s, "left out") {
					big++
				}
			},
			ProgressNotificationHandler: func(context.Context, *mcp.ProgressNotificationClientRequest) {
				mu.Lock()
				progress++
				mu.Unlock()
			},
		})
		if err := cs.SetLoggingLevel(ctx, &mcp.SetLoggingLevelParams{Level: "debug"}); err != nil {
			t.Fatal(err)
		}
		params := &mcp.CallToolParams{Name: "f__flood", Arguments: map[string]any{}}
		params.SetProgressToken("p1")
		res, err := cs.CallTool(ctx, params)
		if err != nil || res.IsError || text(res) != "done" {
			t.Fatalf("fast_path %v: the flooded call answered %v %v", fast, res, err)
		}
		mu.Lock()
		// What a burst can pass, and the rate over the few seconds the
		// flood may take on a loaded machine.
		const most = notifyBurst + notifyRate*10
		if logs+progress > most || logs+progress == 0 {
			t.Errorf("fast_path %v: the agent got %d log messages and %d progress notifications of %d each; want some, at most %d in all", fast, logs, progress, floodCount, most)
		}
		mu.Unlock()
		if f := g.upstream("f").flood.dropped.Load(); f == 0 {
			t.Errorf("fast_path %v: no notification counted as dropped", fast)
		}
	}
}

// TestFloodGuardBounds: requests to agents are capped at asksMax in flight,
// and log data over notifyDataMax is replaced by a note.
func TestFloodGuardBounds(t *testing.T) {
	t.Parallel()
	f := newFloodGuard()
	var releases []func()
	for range asksMax {
		r, err := f.ask("u", "agent")
		if err != nil {
			t.Fatal(err)
		}
		releases = append(releases, r)
	}
	if _, err := f.ask("u", "agent"); err == nil || !strings.Contains(err.Error(), `upstream "u"`) {
		t.Errorf("ask past %d in flight = %v, want refused naming the upstream", asksMax, err)
	}
	if r, err := f.ask("u", "another agent"); err != nil {
		t.Errorf("ask of another agent: %v", err)
	} else {
		r()
	}
	releases[0]()
	if _, err := f.ask("u", "agent"); err != nil {
		t.Errorf("ask after a release: %v", err)
	}
	for _, r := range releases[1:] {
		r()
	}
	if n := len(f.asking); n != 1 {
		t.Errorf("%d agents tracked with one request in flight, want 1 (the rest forgotten)", n)
	}
	small := &mcp.LoggingMessageParams{Level: "info", Data: map[string]any{"k": "v"}}
	if boundedLog(small) != small {
		t.Error("a small log message was changed")
	}
	big := &mcp.LoggingMessageParams{Level: "info", Data: map[string]any{"k": strings.Repeat("v", notifyDataMax)}}
	got := boundedLog(big)
	if s, _ := got.Data.(string); !strings.Contains(s, "left out") || big.Data == nil {
		t.Errorf("a large log message's data = %v, want a note of its size (and the original untouched)", got.Data)
	}
}

// TestFloodBudgetIsTheCalls: one call's progress flood does not silence
// another agent's call: the budget is each call's own. It was the
// upstream's, and a call that reported 3,000 steps left other agents'
// calls with no progress at all (found trying the gateway from outside).
func TestFloodBudgetIsTheCalls(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	for _, fast := range []bool{true, false} {
		g := newTestGateway(t, ctx, fmt.Sprintf("fast_path: %v\nupstreams:\n  f: %s\n", fast, selfUpstream(t, floodMode)))
		noisy := agent(t, ctx, g, nil)
		params := &mcp.CallToolParams{Name: "f__flood", Arguments: map[string]any{}}
		params.SetProgressToken("n")
		if _, err := noisy.CallTool(ctx, params); err != nil {
			t.Fatal(err)
		}
		// The flood handled first: on a loaded machine the handlers can
		// be behind by more than a call's barrier waits (drainMax).
		u := g.upstream("f")
		waitFor(t, ctx, func() bool { return u.notes.handled.Load() >= u.notes.read.Load() })
		var mu sync.Mutex
		var got []float64
		victim := agent(t, ctx, g, &mcp.ClientOptions{ProgressNotificationHandler: func(_ context.Context, r *mcp.ProgressNotificationClientRequest) {
			mu.Lock()
			got = append(got, r.Params.Progress)
			mu.Unlock()
		}})
		params = &mcp.CallToolParams{Name: "f__steps", Arguments: map[string]any{}}
		params.SetProgressToken("v")
		if res, err := victim.CallTool(ctx, params); err != nil || text(res) != "done" {
			t.Fatalf("fast_path %v: the second agent's call answered %v, %v", fast, res, err)
		}
		// The client hands notifications to its handler in the background:
		// they may come after the call returns.
		wctx, wcancel := context.WithTimeout(ctx, 5*time.Second)
		for {
			mu.Lock()
			n := len(got)
			mu.Unlock()
			if n >= 5 || wctx.Err() != nil {
				break
			}
			select {
			case <-wctx.Done():
			case <-time.After(time.Millisecond):
			}
		}
		wcancel()
		mu.Lock()
		if fmt.Sprint(got) != "[1 2 3 4 5]" {
			t.Errorf("fast_path %v: after another call's flood, the second agent got progress %v; want all 5 steps", fast, got)
		}
		mu.Unlock()
	}
}

// TestCallBudgetShared: one budget per call for progress and log messages
// together, as documented (found in review: two budgets let twice the
// burst through).
func TestCallBudgetShared(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	g := newTestGateway(t, ctx, "fast_path: false\nupstreams:\n  f: "+selfUpstream(t, floodMode)+"\n")
	var mu sync.Mutex
	var n int
	count := func() { mu.Lock(); n++; mu.Unlock() }
	cs := agent(t, ctx, g, &mcp.ClientOptions{
		LoggingMessageHandler:       func(context.Context, *mcp.LoggingMessageRequest) { count() },
		ProgressNotificationHandler: func(context.Context, *mcp.ProgressNotificationClientRequest) { count() },
	})
	if err := cs.SetLoggingLevel(ctx, &mcp.SetLoggingLevelParams{Level: "debug"}); err != nil {
		t.Fatal(err)
	}
	params := &mcp.CallToolParams{Name: "f__flood", Arguments: map[string]any{}}
	params.SetProgressToken("p1")
	start := time.Now()
	if _, err := cs.CallTool(ctx, params); err != nil {
		t.Fatal(err)
	}
	most := notifyBurst + int(notifyRate*time.Since(start).Seconds()) + 1
	mu.Lock()
	defer mu.Unlock()
	if n > most {
		t.Errorf("one call's agent got %d progress and log notifications, want at most %d (burst %d + %v/s over the call)", n, most, notifyBurst, float64(notifyRate))
	}
}
