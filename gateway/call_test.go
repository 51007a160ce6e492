package gateway

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/credgate/credgate/authmap"
)

// featureUpstream serves tools that exercise what travels during a call.
func featureUpstream(t *testing.T, started, cancelled chan<- struct{}) string {
	t.Helper()
	s := mcp.NewServer(&mcp.Implementation{Name: "features", Version: "1"}, nil)
	schema := json.RawMessage(`{"type":"object"}`)
	s.AddTool(&mcp.Tool{Name: "progress", InputSchema: schema}, func(ctx context.Context, req *mcp.CallToolRequest) (*mcp.CallToolResult, error) {
		tok := req.Params.GetProgressToken()
		for i := 1; i <= 3; i++ {
			if err := req.Session.NotifyProgress(ctx, &mcp.ProgressNotificationParams{ProgressToken: tok, Progress: float64(i), Total: 3}); err != nil {
				return nil, err
			}
		}
		return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: fmt.Sprint("token seen upstream: ", tok)}}}, nil
	})
	s.AddTool(&mcp.Tool{Name: "block", InputSchema: schema}, func(ctx context.Context, req *mcp.CallToolRequest) (*mcp.CallToolResult, error) {
		close(started)
		select {
		case <-ctx.Done():
			close(cancelled)
			return nil, ctx.Err()
		case <-time.After(20 * time.Second): // a bound, not a synchronization
			return nil, fmt.Errorf("never cancelled")
		}
	})
	s.AddTool(&mcp.Tool{Name: "ask", InputSchema: schema}, func(ctx context.Context, req *mcp.CallToolRequest) (*mcp.CallToolResult, error) {
		res, err := req.Session.Elicit(ctx, &mcp.ElicitParams{Message: "name?", RequestedSchema: map[string]any{"type": "object", "properties": map[string]any{"name": map[string]any{"type": "string"}}}})
		if err != nil {
			return &mcp.CallToolResult{IsError: true, Content: []mcp.Content{&mcp.TextContent{Text: "elicit failed: " + err.Error()}}}, nil
		}
		return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: fmt.Sprintf("%s %v", res.Action, res.Content["name"])}}}, nil
	})
	s.AddTool(&mcp.Tool{Name: "sample", InputSchema: schema}, func(ctx context.Context, req *mcp.CallToolRequest) (*mcp.CallToolResult, error) {
		res, err := req.Session.CreateMessage(ctx, &mcp.CreateMessageParams{MaxTokens: 10, Messages: []*mcp.SamplingMessage{{Role: "user", Content: &mcp.TextContent{Text: "hi"}}}})
		if err != nil {
			return &mcp.CallToolResult{IsError: true, Content: []mcp.Content{&mcp.TextContent{Text: "sampling failed: " + err.Error()}}}, nil
		}
		return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: "model said: " + res.Content.(*mcp.TextContent).Text}}}, nil
	})
	s.AddTool(&mcp.Tool{Name: "log", InputSchema: schema}, func(ctx context.Context, req *mcp.CallToolRequest) (*mcp.CallToolResult, error) {
		_ = req.Session.Log(ctx, &mcp.LoggingMessageParams{Level: "info", Data: "working"})
		return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: "done"}}}, nil
	})
	s.AddTool(&mcp.Tool{Name: "grow", InputSchema: schema}, func(ctx context.Context, req *mcp.CallToolRequest) (*mcp.CallToolResult, error) {
		s.AddTool(&mcp.Tool{Name: "grown", InputSchema: schema}, func(context.Context, *mcp.CallToolRequest) (*mcp.CallToolResult, error) {
			return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: "new"}}}, nil
		})
		return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: "grew"}}}, nil
	})
	return serveMCP(t, s)
}

// agent connects a client with the given options to a gateway over url.
func agent(t testing.TB, ctx context.Context, g *Server, opts *mcp.ClientOptions) *mcp.ClientSession {
	t.Helper()
	hs := httptest.NewServer(g.Handler())
	t.Cleanup(hs.Close)
	cs, err := mcp.NewClient(&mcp.Implementation{Name: "agent", Version: "1"}, opts).Connect(ctx, &mcp.StreamableClientTransport{Endpoint: hs.URL + "/mcp"}, nil)
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	t.Cleanup(func() { _ = cs.Close() })
	return cs
}

func TestCallFeatures(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	started, cancelled := make(chan struct{}), make(chan struct{})
	g, _ := startGateway(t, ctx, fmt.Sprintf("upstreams:\n  f: {url: %s}\n", featureUpstream(t, started, cancelled)))

	var mu sync.Mutex
	var progress []float64
	var tokens []any
	var logs []string
	toolsChanged := make(chan struct{}, 10)
	cs := agent(t, ctx, g, &mcp.ClientOptions{
		ProgressNotificationHandler: func(_ context.Context, r *mcp.ProgressNotificationClientRequest) {
			mu.Lock()
			defer mu.Unlock()
			progress = append(progress, r.Params.Progress)
			tokens = append(tokens, r.Params.ProgressToken)
		},
		ElicitationHandler: func(context.Context, *mcp.ElicitRequest) (*mcp.ElicitResult, error) {
			return &mcp.ElicitResult{Action: "accept", Content: map[string]any{"name": "ada"}}, nil
		},
		CreateMessageHandler: func(context.Context, *mcp.CreateMessageRequest) (*mcp.CreateMessageResult, error) {
			return &mcp.CreateMessageResult{Model: "m", Role: "assistant", Content: &mcp.TextContent{Text: "hello"}}, nil
		},
		LoggingMessageHandler: func(_ context.Context, r *mcp.LoggingMessageRequest) {
			mu.Lock()
			defer mu.Unlock()
			logs = append(logs, fmt.Sprint(r.Params.Data))
		},
		ToolListChangedHandler: func(context.Context, *mcp.ToolListChangedRequest) { toolsChanged <- struct{}{} },
	})
	if err := cs.SetLoggingLevel(ctx, &mcp.SetLoggingLevelParams{Level: "debug"}); err != nil {
		t.Fatal(err)
	}

	t.Run("progress token mapped both ways", func(t *testing.T) {
		params := &mcp.CallToolParams{Name: "f__progress"}
		params.SetProgressToken("agent-token-7")
		res, err := cs.CallTool(ctx, params)
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(text(res), "agent-token-7") {
			t.Errorf("upstream saw the agent's own token (%q); the gateway must map it", text(res))
		}
		waitFor(t, ctx, func() bool {
			mu.Lock()
			defer mu.Unlock()
			return len(progress) == 3 && progress[2] == 3
		})
		mu.Lock()
		defer mu.Unlock()
		for _, tok := range tokens {
			if tok != "agent-token-7" {
				t.Errorf("progress token = %v, want the agent's agent-token-7", tok)
			}
		}
	})
	t.Run("elicitation reaches the calling agent", func(t *testing.T) {
		res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "f__ask"})
		if err != nil || text(res) != "accept ada" {
			t.Errorf("ask = %q, %v; want accept ada", text(res), err)
		}
	})
	t.Run("sampling reaches the calling agent", func(t *testing.T) {
		res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "f__sample"})
		if err != nil || text(res) != "model said: hello" {
			t.Errorf("sample = %q, %v", text(res), err)
		}
	})
	t.Run("agent without elicitation: a typed failure saying why", func(t *testing.T) {
		// The upstream gets a clear error; the call it then fails is
		// invalid_request naming the capability (it was the upstream's
		// own error, typed upstream_error).
		plain := agent(t, ctx, g, nil)
		res, err := plain.CallTool(ctx, &mcp.CallToolParams{Name: "f__ask"})
		if err != nil {
			t.Fatal(err)
		}
		if f := failureOf(t, res); f.Type != authmap.TypeInvalidRequest || !strings.Contains(f.Detail, "declared no elicitation capability") {
			t.Errorf("ask without capability = %+v; want invalid_request naming the capability", f)
		}
	})
	t.Run("log messages during a call", func(t *testing.T) {
		if _, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "f__log"}); err != nil {
			t.Fatal(err)
		}
		// The agent's SDK, too, handles notifications after the response.
		waitFor(t, ctx, func() bool {
			mu.Lock()
			defer mu.Unlock()
			return len(logs) > 0 && logs[0] == "working"
		})
	})
	t.Run("cancellation reaches the upstream", func(t *testing.T) {
		callCtx, stop := context.WithCancel(ctx)
		errc := make(chan error, 1)
		go func() {
			_, err := cs.CallTool(callCtx, &mcp.CallToolParams{Name: "f__block"})
			errc <- err
		}()
		select { // cancel once the upstream is running the call
		case <-started:
		case <-ctx.Done():
			t.Fatal("call never reached the upstream")
		}
		stop()
		select {
		case <-cancelled:
		case <-ctx.Done():
			t.Fatal("upstream never saw the cancellation")
		}
		<-errc
	})
	t.Run("list_changed refreshes the catalog", func(t *testing.T) {
		if _, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "f__grow"}); err != nil {
			t.Fatal(err)
		}
		for {
			select {
			case <-toolsChanged:
			case <-ctx.Done():
				t.Fatal("no tools/list_changed reached the agent")
			}
			if g.catalog.hasTool("f__grown") {
				break
			}
		}
		res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "f__grown"})
		if err != nil || text(res) != "new" {
			t.Errorf("grown = %q, %v", text(res), err)
		}
	})
}

func TestPaginationBothWays(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	names := make([]string, 5000)
	for i := range names {
		names[i] = fmt.Sprintf("t%04d", i)
	}
	big := newTestUpstream(t, "big", names...)
	small := newTestUpstream(t, "small", "echo")
	_, cs := startGateway(t, ctx, fmt.Sprintf("upstreams:\n  big: {url: %s}\n  small: {url: %s}\n", big.url(), small.url()))
	first, err := cs.ListTools(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	if first.NextCursor == "" || len(first.Tools) >= 5001 {
		t.Errorf("first page has %d tools and cursor %q; want a paged answer", len(first.Tools), first.NextCursor)
	}
	if got := len(toolNames(t, ctx, cs)); got != 5001 {
		t.Errorf("paging through the union gave %d tools, want 5001", got)
	}
}

// TestPerAgentSessions: with session: per_agent, two agents calling a
// 2025-11-25 upstream at once are each asked their own elicitation.
func TestPerAgentSessions(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	url := featureUpstream(t, make(chan struct{}), make(chan struct{}))
	g, _ := startGateway(t, ctx, fmt.Sprintf("upstreams:\n  f: {url: %s, session: per_agent}\n", url))

	// Each agent answers only once both have been asked, so both calls are
	// in flight together when the upstream asks.
	var asked sync.WaitGroup
	asked.Add(2)
	agentFor := func(name string) *mcp.ClientSession {
		return agent(t, ctx, g, &mcp.ClientOptions{
			ElicitationHandler: func(ctx context.Context, _ *mcp.ElicitRequest) (*mcp.ElicitResult, error) {
				asked.Done()
				asked.Wait()
				return &mcp.ElicitResult{Action: "accept", Content: map[string]any{"name": name}}, nil
			},
		})
	}
	agents := map[string]*mcp.ClientSession{"ada": agentFor("ada"), "bob": agentFor("bob")}
	results := make(chan string, 2)
	for _, cs := range agents {
		go func() {
			res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "f__ask"})
			if err != nil {
				results <- err.Error()
				return
			}
			results <- text(res)
		}()
	}
	got := map[string]bool{}
	for range 2 {
		select {
		case r := <-results:
			got[r] = true
		case <-ctx.Done():
			t.Fatal("calls did not finish")
		}
	}
	if !got["accept ada"] || !got["accept bob"] {
		t.Errorf("results = %v, want each agent's own answer (accept ada, accept bob)", got)
	}
}

// TestPerAgentLogsBetweenCalls: with session: per_agent, a log message the
// upstream sends between calls goes to the one agent whose session it is
// (at its level), as a server talked to directly sends it; it went to the
// gateway's log only.
func TestPerAgentLogsBetweenCalls(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	release := make(chan struct{})
	srv := mcp.NewServer(&mcp.Implementation{Name: "later", Version: "1"}, nil)
	srv.AddTool(&mcp.Tool{Name: "later", InputSchema: json.RawMessage(`{"type":"object"}`)}, func(_ context.Context, req *mcp.CallToolRequest) (*mcp.CallToolResult, error) {
		go func() {
			<-release // once the call has been answered
			_ = req.Session.Log(context.Background(), &mcp.LoggingMessageParams{Level: "warning", Data: "after the call"})
		}()
		return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: "ok"}}}, nil
	})
	g, _ := startGateway(t, ctx, fmt.Sprintf("upstreams:\n  f: {url: %s, session: per_agent}\n", serveMCP(t, srv)))
	logs := make(chan string, 4)
	cs := agent(t, ctx, g, &mcp.ClientOptions{LoggingMessageHandler: func(_ context.Context, r *mcp.LoggingMessageRequest) {
		logs <- fmt.Sprint(r.Params.Data)
	}})
	if err := cs.SetLoggingLevel(ctx, &mcp.SetLoggingLevelParams{Level: "info"}); err != nil {
		t.Fatal(err)
	}
	if _, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "f__later"}); err != nil {
		t.Fatal(err)
	}
	close(release)
	select {
	case got := <-logs:
		if got != "after the call" {
			t.Errorf("log message %q", got)
		}
	case <-ctx.Done():
		t.Fatal("the upstream's log message between calls did not reach the agent")
	}
}
