package gateway

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// TestCompletionIsTheGateways: a completion answered by a 2026-07-28
// upstream reaches a 2025-11-25 agent as that protocol's result, without
// the upstream's server info or a resultType (found trying the gateway from
// outside: both passed through, the serverInfo naming the upstream, not the
// gateway the agent talks to), with its total and hasMore, and with a
// configured secret in a value redacted.
func TestCompletionIsTheGateways(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	const secret = "cmpl-secret-5e4d3c2b1a09f8e7"
	s := mcp.NewServer(&mcp.Implementation{Name: "upstream-impl", Version: "9"}, &mcp.ServerOptions{
		CompletionHandler: func(context.Context, *mcp.CompleteRequest) (*mcp.CompleteResult, error) {
			return &mcp.CompleteResult{
				Meta:       mcp.Meta{"vendor/hint": "kept"},
				Completion: mcp.CompletionResultDetails{Values: []string{"alpha", "key " + secret}, Total: 7, HasMore: true},
			}, nil
		},
	})
	s.AddPrompt(&mcp.Prompt{Name: "greet", Arguments: []*mcp.PromptArgument{{Name: "name"}}}, func(context.Context, *mcp.GetPromptRequest) (*mcp.GetPromptResult, error) {
		return &mcp.GetPromptResult{}, nil
	})
	up := httptest.NewServer(mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return s }, &mcp.StreamableHTTPOptions{Stateless: true}))
	t.Cleanup(up.Close)
	g := newTestGateway(t, ctx, "upstreams:\n  a: {url: "+up.URL+", headers: {X-Api-Key: "+secret+"}}\n")
	a := rawInitialized(t, ctx, g)
	_, b := a.post(ctx, `{"jsonrpc":"2.0","id":2,"method":"completion/complete","params":{"ref":{"type":"ref/prompt","name":"a__greet"},"argument":{"name":"name","value":"a"}}}`)
	got := string(sseData(b))
	for _, bad := range []string{"resultType", "upstream-impl", "serverInfo", secret} {
		if strings.Contains(got, bad) {
			t.Errorf("completion answer holds %q: %s", bad, got)
		}
	}
	for _, want := range []string{`"alpha"`, `"total":7`, `"hasMore":true`, `"vendor/hint":"kept"`, "[REDACTED]"} {
		if !strings.Contains(got, want) {
			t.Errorf("completion answer lacks %s: %s", want, got)
		}
	}
}

// TestErrorsCarryACode: an error without a JSON-RPC code of its own (the
// SDK's answer to a second initialize on a session, say) reaches the agent
// as -32603 with its message; the SDK wrote code 0, which JSON-RPC does not
// define.
func TestErrorsCarryACode(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	g := newTestGateway(t, ctx, "upstreams:\n  a: {url: "+newTestUpstream(t, "a", "echo").url()+"}\n")
	a := rawInitialized(t, ctx, g)
	_, b := a.post(ctx, strings.Replace(rawInitialize, `"id":1`, `"id":2`, 1))
	got := string(sseData(b))
	if !strings.Contains(got, `"code":-32603`) || !strings.Contains(got, "initialize") {
		t.Errorf("a second initialize was answered %s; want an error with code -32603 and the SDK's message", got)
	}
}

// TestUpstreamErrorsGetACode: an upstream's JSON-RPC error without a code
// reaches the agent as -32603, with its message (it passed on as 0).
func TestUpstreamErrorsGetACode(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	s := mcp.NewServer(&mcp.Implementation{Name: "up", Version: "1"}, nil)
	s.AddPrompt(&mcp.Prompt{Name: "broken"}, func(context.Context, *mcp.GetPromptRequest) (*mcp.GetPromptResult, error) {
		return nil, errors.New("no code here") // the upstream's SDK sends it with code 0
	})
	_, cs := startGateway(t, ctx, "upstreams:\n  a: {url: "+serveMCP(t, s)+"}\n")
	_, err := cs.GetPrompt(ctx, &mcp.GetPromptParams{Name: "a__broken"})
	var rpc *jsonrpc.Error
	if !errors.As(err, &rpc) || rpc.Code != jsonrpc.CodeInternalError || !strings.Contains(rpc.Message, "no code here") {
		t.Errorf("prompts/get of an upstream error without a code: %v; want -32603 with its message", err)
	}
}

// TestCompletionUnknownRef: with several upstreams that complete, a
// reference none of them has is an unknown name (-32602), as for
// prompts/get; it was an empty success.
func TestCompletionUnknownRef(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	serve := func() string {
		s := mcp.NewServer(&mcp.Implementation{Name: "up", Version: "1"}, &mcp.ServerOptions{
			CompletionHandler: func(context.Context, *mcp.CompleteRequest) (*mcp.CompleteResult, error) {
				return &mcp.CompleteResult{Completion: mcp.CompletionResultDetails{Values: []string{"x"}}}, nil
			},
		})
		s.AddPrompt(&mcp.Prompt{Name: "greet"}, func(context.Context, *mcp.GetPromptRequest) (*mcp.GetPromptResult, error) {
			return &mcp.GetPromptResult{}, nil
		})
		return serveMCP(t, s)
	}
	_, cs := startGateway(t, ctx, "upstreams:\n  a: {url: "+serve()+"}\n  b: {url: "+serve()+"}\n")
	for _, ref := range []*mcp.CompleteReference{{Type: "ref/prompt", Name: "nope"}, {Type: "ref/resource", URI: "nope://x"}} {
		_, err := cs.Complete(ctx, &mcp.CompleteParams{Ref: ref, Argument: mcp.CompleteParamsArgument{Name: "a", Value: "b"}})
		var rpc *jsonrpc.Error
		if !errors.As(err, &rpc) || rpc.Code != jsonrpc.CodeInvalidParams {
			t.Errorf("completion of unknown %+v: %v; want -32602", ref, err)
		}
	}
	res, err := cs.Complete(ctx, &mcp.CompleteParams{Ref: &mcp.CompleteReference{Type: "ref/prompt", Name: "a__greet"}, Argument: mcp.CompleteParamsArgument{Name: "a", Value: "b"}})
	if err != nil || len(res.Completion.Values) != 1 {
		t.Errorf("completion of a__greet = %+v, %v", res, err)
	}
}

// TestUnknownMethodIsJSONRPCError: a call of a method the gateway does not
// serve gets JSON-RPC's -32601, as a server answers it, not the SDK's
// plain-text HTTP 400, which clients report as a transport failure.
func TestUnknownMethodIsJSONRPCError(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	g := newTestGateway(t, ctx, "upstreams:\n  a: {url: "+newTestUpstream(t, "a", "echo").url()+"}\n")
	a := rawInitialized(t, ctx, g)
	for _, method := range []string{"foo/bar", "tasks/list"} {
		resp, b := a.post(ctx, `{"jsonrpc":"2.0","id":7,"method":"`+method+`"}`)
		got := string(sseData(b))
		if resp.StatusCode != http.StatusOK || !strings.Contains(got, `"code":-32601`) || !strings.Contains(got, `"id":7`) {
			t.Errorf("%s: HTTP %d %s; want 200 with a -32601 error for id 7", method, resp.StatusCode, got)
		}
	}
	// A notification of an unknown method: accepted and ignored (202), as
	// JSON-RPC has it (it was a plain-text 400).
	for _, method := range []string{"notifications/tasks/status", "notifications/custom.vendor/thing"} {
		if resp, b := a.post(ctx, `{"jsonrpc":"2.0","method":"`+method+`","params":{}}`); resp.StatusCode != http.StatusAccepted {
			t.Errorf("notification %s: HTTP %d %s; want 202", method, resp.StatusCode, b)
		}
	}
	if resp, b := a.post(ctx, `{"jsonrpc":"2.0","id":9,"method":"ping"}`); resp.StatusCode != http.StatusOK || !strings.Contains(string(b), `"id":9`) {
		t.Errorf("ping after the notifications: HTTP %d %s", resp.StatusCode, b)
	}
	// A call without the params its method requires: a JSON-RPC error as
	// for "params":null (it was a plain-text 400).
	for _, method := range []string{"tools/call", "prompts/get", "resources/read"} {
		resp, b := a.post(ctx, `{"jsonrpc":"2.0","id":8,"method":"`+method+`"}`)
		got := string(sseData(b))
		if resp.StatusCode != http.StatusOK || !strings.Contains(got, `"code":-32600`) || !strings.Contains(got, `"id":8`) || !strings.Contains(got, "params") {
			t.Errorf("%s without params: HTTP %d %s; want 200 with a -32600 error for id 8 naming params", method, resp.StatusCode, got)
		}
	}
}

// rawInitialized serves g over HTTP and returns a raw agent whose session
// is initialized at 2025-11-25.
func rawInitialized(t *testing.T, ctx context.Context, g *Server) *rawAgent {
	t.Helper()
	hs := httptest.NewServer(g.Handler())
	t.Cleanup(hs.Close)
	a := &rawAgent{t: t, g: g, url: hs.URL + "/mcp"}
	resp, b := a.post(ctx, rawInitialize)
	if a.session = resp.Header.Get("Mcp-Session-Id"); a.session == "" {
		t.Fatalf("initialize: %s", b)
	}
	a.post(ctx, `{"jsonrpc":"2.0","method":"notifications/initialized"}`)
	return a
}

// rawInitialize is a 2025-11-25 agent's initialize request, id 1.
const rawInitialize = `{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"raw","version":"1"}}}`

// TestAgentErrorWithoutCodeToUpstream: an agent's answer to an upstream's
// sampling request that is an error of code 0 reaches the upstream as
// -32603, with its message (it went on as 0).
func TestAgentErrorWithoutCodeToUpstream(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	got := make(chan error, 1)
	s := mcp.NewServer(&mcp.Implementation{Name: "up", Version: "1"}, nil)
	s.AddTool(&mcp.Tool{Name: "ask", InputSchema: map[string]any{"type": "object"}}, func(ctx context.Context, req *mcp.CallToolRequest) (*mcp.CallToolResult, error) {
		_, err := req.Session.CreateMessage(ctx, &mcp.CreateMessageParams{MaxTokens: 10, Messages: []*mcp.SamplingMessage{{Role: "user", Content: &mcp.TextContent{Text: "hi"}}}})
		got <- err
		return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: "done"}}}, nil
	})
	g := newTestGateway(t, ctx, "upstreams:\n  a: {url: "+serveMCP(t, s)+", protocol_version: 2025-11-25}\n")
	cs := agent(t, ctx, g, &mcp.ClientOptions{CreateMessageHandler: func(context.Context, *mcp.CreateMessageRequest) (*mcp.CreateMessageResult, error) {
		return nil, &jsonrpc.Error{Code: 0, Message: "declined without a code"}
	}})
	if _, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "a__ask", Arguments: map[string]any{}}); err != nil {
		t.Fatal(err)
	}
	err := recv(t, ctx, got, "the upstream's sampling answer")
	var rpc *jsonrpc.Error
	if !errors.As(err, &rpc) || rpc.Code != jsonrpc.CodeInternalError || !strings.Contains(err.Error(), "declined without a code") {
		t.Errorf("the upstream's sampling request got %v; want -32603 with the agent's message", err)
	}
}

// TestSessionlessBatchRefused: a batch of calls without a session id is
// refused as one call is (400, -32600); the SDK answered its calls with
// code 0 and no session check.
func TestSessionlessBatchRefused(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	g := newTestGateway(t, ctx, "upstreams:\n  a: {url: "+newTestUpstream(t, "a", "echo").url()+"}\n")
	hs := httptest.NewServer(g.Handler())
	t.Cleanup(hs.Close)
	a := &rawAgent{t: t, g: g, url: hs.URL + "/mcp"}
	resp, b := a.post(ctx, `[{"jsonrpc":"2.0","id":8,"method":"tools/call","params":{"name":"a__echo","arguments":{}}}]`)
	if resp.StatusCode != http.StatusBadRequest || !strings.Contains(string(b), `"code":-32600`) {
		t.Errorf("a sessionless batch: HTTP %d %s; want 400 with -32600", resp.StatusCode, b)
	}
}
