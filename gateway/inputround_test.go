package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/google/go-cmp/cmp"
	"github.com/rs/zerolog"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/credgate/credgate/authmap"
)

// echoChildConfig is a config, head first, whose upstream u is a stdio
// child of the test binary (the echo server of stdioconn_test.go): a
// 2026-07-28 session.
func echoChildConfig(t *testing.T, head string) string {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("%supstreams:\n  u: {command: %q, env: {%s: %s}}\n", head, self, rawUpstreamEnv, echoUpstreamMode)
}

// TestInputRoundAnswerMismatch: when a 2026-07-28 upstream's result asks
// for input and the agent's answer does not match the requested schema (a
// required property missing), the agent of the call gets a typed
// invalid_request failure, on both fast_path settings. It got an untyped
// -32603 ("multi-round-trip: fulfilling input request ...: elicitation
// result content does not match requested schema"), with no failure object,
// against README "Failure objects". The upstream's tool never sees the
// failure: a retry's inputResponses have no place for an error, so there is
// no second round to send.
func TestInputRoundAnswerMismatch(t *testing.T) {
	t.Parallel()
	for _, fast := range []bool{true, false} {
		t.Run(fmt.Sprintf("fast_path %v", fast), func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
			defer cancel()
			g := newTestGateway(t, ctx, echoChildConfig(t, fmt.Sprintf("fast_path: %v\n", fast)))
			a := newRawAgentWith(t, ctx, g, `{"elicitation":{}}`)

			next := a.stream(ctx, `{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"u__login","arguments":{}}}`)
			ask := next()
			if ask["method"] != "elicitation/create" {
				t.Fatalf("first event on the call's stream = %v; want the elicitation request", ask)
			}
			id, _ := json.Marshal(ask["id"])
			if r, _ := a.post(ctx, fmt.Sprintf(`{"jsonrpc":"2.0","id":%s,"result":{"action":"accept","content":{"name":"Ada"}}}`, id)); r.StatusCode != http.StatusAccepted {
				t.Errorf("the agent's answer got %s; want 202", r.Status)
			}
			answer := next()
			raw, _ := json.Marshal(answer["result"])
			var res mcp.CallToolResult
			if err := json.Unmarshal(raw, &res); err != nil || answer["error"] != nil {
				t.Fatalf("the call's answer = %s; want a result", mustJSON(t, answer))
			}
			f := failureOf(t, &res)
			if f.Type != authmap.TypeInvalidRequest || f.Retryable || f.Upstream != "u" || !strings.Contains(f.Detail, "username") {
				t.Errorf("failure = %+v; want invalid_request, not retryable, upstream u, naming the missing property", f)
			}
			if tail := strings.Join(g.upstream("u").childOutput().tail(), "\n"); strings.Contains(tail, "login: second round") {
				t.Errorf("the upstream was called again after the agent's invalid answer:\n%s", tail)
			}
		})
	}
}

// TestStatelessLegacyAgentInputRound: on a stateless gateway, a 2025-11-25
// agent whose call's 2026-07-28 upstream asks for input gets a typed
// invalid_request saying why, on both fast_path settings (the fast path
// passed it the upstream's input_required result, which it cannot read,
// audited "ok"); a 2026-07-28 agent gets the request, to answer in its next
// call.
func TestStatelessLegacyAgentInputRound(t *testing.T) {
	t.Parallel()
	for _, fast := range []bool{true, false} {
		t.Run(fmt.Sprintf("fast_path %v", fast), func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
			defer cancel()
			var log syncBuffer
			g := newTestGatewayLogged(t, ctx, echoChildConfig(t, fmt.Sprintf("stateless: true\nfast_path: %v\n", fast)),
				zerolog.New(&log).Level(zerolog.InfoLevel))
			a := newRawAgentWith(t, ctx, g, `{"elicitation":{}}`)
			resp, body := a.post(ctx, `{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"u__login","arguments":{}}}`)
			ans := answer(t, resp, body)
			raw, _ := json.Marshal(ans["result"])
			var res mcp.CallToolResult
			if err := json.Unmarshal(raw, &res); err != nil || ans["error"] != nil || res.InputRequests != nil {
				t.Fatalf("the call's answer = %s; want a result, without inputRequests", mustJSON(t, ans))
			}
			if f := failureOf(t, &res); f.Type != authmap.TypeInvalidRequest || f.Upstream != "u" {
				t.Errorf("failure = %+v; want invalid_request from u", f)
			}
			// Audited and counted as the agent got it (it was "ok").
			var outcomes []string
			for l := range strings.Lines(log.String()) {
				var m map[string]any
				if json.Unmarshal([]byte(l), &m) == nil && m["message"] == "call" {
					outcomes = append(outcomes, fmt.Sprint(m["outcome"]))
				}
			}
			if diff := cmp.Diff([]string{"input_required", "invalid_request"}, outcomes); diff != "" {
				t.Errorf("audit outcomes (-want +got):\n%s", diff)
			}
			wantSample(t, gather(t, g), "credgate_tool_calls_total", map[string]string{"upstream": "u", "tool": "u__login", "type": "invalid_request"}, 1)
		})
	}
}

// TestStatelessNewAgentInputCapabilities: a 2026-07-28 agent gets an
// upstream's input requests in the call's result, and answers them in its
// next call; one whose request's _meta declares no capability for what
// they ask (elicitation, sampling) gets a typed invalid_request naming it,
// on both fast_path settings. The upstream saw the gateway's capabilities,
// not the agent's, and the request went through as it was.
func TestStatelessNewAgentInputCapabilities(t *testing.T) {
	t.Parallel()
	for _, fast := range []bool{true, false} {
		t.Run(fmt.Sprintf("fast_path %v", fast), func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
			defer cancel()
			g := newTestGateway(t, ctx, echoChildConfig(t, fmt.Sprintf("stateless: true\nfast_path: %v\n", fast)))
			hs := httptest.NewServer(g.Handler())
			t.Cleanup(hs.Close)
			connect := func(opts *mcp.ClientOptions) *mcp.ClientSession {
				cs, err := mcp.NewClient(&mcp.Implementation{Name: "agent", Version: "1"}, opts).Connect(ctx, &mcp.StreamableClientTransport{Endpoint: hs.URL + "/mcp"}, &mcp.ClientSessionOptions{ProtocolVersion: "2026-07-28"})
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { _ = cs.Close() })
				return cs
			}
			bare := connect(nil)
			for tool, want := range map[string]string{"u__ask": "no elicitation capability", "u__sample": "no sampling capability"} {
				res, err := bare.CallTool(ctx, &mcp.CallToolParams{Name: tool, Arguments: map[string]any{}})
				if err != nil {
					t.Fatalf("%s without capabilities: %v; want a result with a failure", tool, err)
				}
				if f := failureOf(t, res); f.Type != authmap.TypeInvalidRequest || f.Upstream != "u" || !strings.Contains(f.Detail, want) {
					t.Errorf("%s without capabilities: failure %+v; want invalid_request from u saying %q", tool, f, want)
				}
			}
			// prompts/get the same way, as a JSON-RPC error carrying the object.
			if _, err := bare.GetPrompt(ctx, &mcp.GetPromptParams{Name: "u__askp"}); err == nil || !strings.Contains(err.Error(), "no elicitation capability") {
				t.Errorf("prompts/get u__askp without capabilities: %v; want an error naming the capability", err)
			}
			if _, err := bare.ReadResource(ctx, &mcp.ReadResourceParams{URI: "test://askr"}); err == nil || !strings.Contains(err.Error(), "no elicitation capability") {
				t.Errorf("resources/read test://askr without capabilities: %v; want an error naming the capability", err)
			}
			able := connect(&mcp.ClientOptions{ElicitationHandler: func(context.Context, *mcp.ElicitRequest) (*mcp.ElicitResult, error) {
				return &mcp.ElicitResult{Action: "accept", Content: map[string]any{"name": "Ada"}}, nil
			}})
			res, err := able.CallTool(ctx, &mcp.CallToolParams{Name: "u__ask", Arguments: map[string]any{}})
			if err != nil || res.IsError || len(res.Content) != 1 || res.Content[0].(*mcp.TextContent).Text != "accept Ada" {
				t.Errorf("u__ask with the elicitation capability: %s, %v; want \"accept Ada\"", mustJSON(t, res), err)
			}
			if pr, err := able.GetPrompt(ctx, &mcp.GetPromptParams{Name: "u__askp"}); err != nil || len(pr.Messages) != 1 || pr.Messages[0].Content.(*mcp.TextContent).Text != "hello Ada" {
				t.Errorf("prompts/get u__askp with the elicitation capability: %v, %v; want \"hello Ada\"", pr, err)
			}
		})
	}
}

// TestLegacyAgentPromptInputTyped: a prompts/get (or resources/read) whose
// 2026-07-28 upstream asks a 2025-11-25 agent for input it cannot give
// (no elicitation capability) fails with the typed failure object, as a
// tools/call does: it was the SDK's untyped -32603 ("multi-round-trip:
// ... client does not support elicitation").
func TestLegacyAgentPromptInputTyped(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	g := newTestGateway(t, ctx, echoChildConfig(t, ""))
	cs := agent(t, ctx, g, nil) // no elicitation capability
	_, perr := cs.GetPrompt(ctx, &mcp.GetPromptParams{Name: "u__askp"})
	_, rerr := cs.ReadResource(ctx, &mcp.ReadResourceParams{URI: "test://askr"})
	for what, err := range map[string]error{"prompts/get": perr, "resources/read": rerr} {
		var rpc *jsonrpc.Error
		if !errors.As(err, &rpc) || rpc.Code != codeUpstreamFailure || !strings.Contains(string(rpc.Data), `"type":"invalid_request"`) {
			t.Errorf("%s: %v; want %d carrying an invalid_request object", what, err, codeUpstreamFailure)
		}
	}
}
