package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/credgate/credgate/authmap"
	"github.com/google/jsonschema-go/jsonschema"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// TestAgentAskOutlivesItsOtherCall: an upstream that sends its sampling
// request with no link to the call that caused it (2025-11-25), while the
// agent has two calls in flight on it, gets the agent's answer even when
// the agent's other call ends first. Found trying the gateway from
// outside: the request was tied to whichever of the two calls came first
// in a map, and the end of the other one refused the answer ("context
// canceled").
func TestAgentAskOutlivesItsOtherCall(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	s := mcp.NewServer(&mcp.Implementation{Name: "s", Version: "1"}, nil)
	hold := make(chan chan struct{}, 1)
	held := make(chan struct{}, 1)
	s.AddTool(&mcp.Tool{Name: "hold", InputSchema: json.RawMessage(`{"type":"object"}`)}, func(ctx context.Context, _ *mcp.CallToolRequest) (*mcp.CallToolResult, error) {
		release := <-hold
		held <- struct{}{}
		select {
		case <-release:
		case <-ctx.Done():
		}
		return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: "held"}}}, nil
	})
	s.AddTool(&mcp.Tool{Name: "sample", InputSchema: json.RawMessage(`{"type":"object"}`)}, func(ctx context.Context, req *mcp.CallToolRequest) (*mcp.CallToolResult, error) {
		r, err := req.Session.CreateMessage(ctx, &mcp.CreateMessageParams{MaxTokens: 1, Messages: []*mcp.SamplingMessage{{Role: "user", Content: &mcp.TextContent{Text: "q"}}}})
		if err != nil {
			return nil, err
		}
		return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: "sampled " + r.Content.(*mcp.TextContent).Text}}}, nil
	})
	for _, fast := range []bool{true, false} {
		t.Run(fmt.Sprintf("fast_path %v", fast), func(t *testing.T) {
			g := newTestGateway(t, ctx, fmt.Sprintf("fast_path: %v\nupstreams:\n  s: {url: %s, protocol_version: 2025-11-25}\n", fast, serveMCP(t, s)))
			asked, answer := make(chan struct{}, 1), make(chan struct{})
			cs := agent(t, ctx, g, &mcp.ClientOptions{CreateMessageHandler: func(ctx context.Context, _ *mcp.CreateMessageRequest) (*mcp.CreateMessageResult, error) {
				asked <- struct{}{}
				select {
				case <-answer:
				case <-ctx.Done():
					return nil, ctx.Err()
				}
				return &mcp.CreateMessageResult{Model: "m", Role: "assistant", Content: &mcp.TextContent{Text: "yes"}}, nil
			}})
			// The map's order picks either call: a few rounds see both.
			for round := range 4 {
				release := make(chan struct{})
				hold <- release
				holding := make(chan error, 1)
				go func() {
					_, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "s__hold", Arguments: map[string]any{}})
					holding <- err
				}()
				recv(t, ctx, held, "the hold call to reach the upstream")
				sampled := make(chan *mcp.CallToolResult, 1)
				go func() {
					res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "s__sample", Arguments: map[string]any{}})
					if err != nil {
						res = &mcp.CallToolResult{IsError: true, Content: []mcp.Content{&mcp.TextContent{Text: err.Error()}}}
					}
					sampled <- res
				}()
				recv(t, ctx, asked, "the sampling request to reach the agent")
				close(release)
				if err := recv(t, ctx, holding, "the hold call to end"); err != nil {
					t.Fatalf("round %d: hold: %v", round, err)
				}
				answer <- struct{}{}
				if res := recv(t, ctx, sampled, "the sample call to end"); res.IsError || text(res) != "sampled yes" {
					t.Fatalf("round %d: the call whose sampling was answered after the agent's other call ended: %s", round, text(res))
				}
			}
		})
	}
}

// TestAgentErrorReachesUpstreamAsSent: an agent's error answer to an
// upstream's request reaches the upstream with its code and message, as
// it would directly; through the SDK's path it came wrapped in a second
// `calling "sampling/createMessage":` (found trying the gateway).
func TestAgentErrorReachesUpstreamAsSent(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	s := mcp.NewServer(&mcp.Implementation{Name: "s", Version: "1"}, nil)
	s.AddTool(&mcp.Tool{Name: "sample", InputSchema: json.RawMessage(`{"type":"object"}`)}, func(ctx context.Context, req *mcp.CallToolRequest) (*mcp.CallToolResult, error) {
		_, err := req.Session.CreateMessage(ctx, &mcp.CreateMessageParams{MaxTokens: 1, Messages: []*mcp.SamplingMessage{{Role: "user", Content: &mcp.TextContent{Text: "q"}}}})
		code := 0
		if je, ok := errors.AsType[*jsonrpc.Error](err); ok {
			code = int(je.Code)
		}
		return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: fmt.Sprintf("%d %v", code, err)}}}, nil
	})
	url := serveMCP(t, s)
	for _, fast := range []bool{true, false} {
		t.Run(fmt.Sprintf("fast_path %v", fast), func(t *testing.T) {
			g := newTestGateway(t, ctx, fmt.Sprintf("fast_path: %v\nupstreams:\n  s: {url: %s, protocol_version: 2025-11-25}\n", fast, url))
			cs := agent(t, ctx, g, &mcp.ClientOptions{CreateMessageHandler: func(context.Context, *mcp.CreateMessageRequest) (*mcp.CreateMessageResult, error) {
				return nil, &jsonrpc.Error{Code: -1, Message: "user refused"}
			}})
			res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "s__sample", Arguments: map[string]any{}})
			if err != nil {
				t.Fatal(err)
			}
			if got, want := text(res), `-1 calling "sampling/createMessage": user refused`; got != want {
				t.Errorf("the upstream got %q; want %q", got, want)
			}
		})
	}
}

// TestNewAgentMidCallRequestTyped: a 2026-07-28 agent (a stateless
// gateway) calling a 2025-11-25 upstream that asks for sampling or
// elicitation during the call: 2026-07-28 has no requests to the client
// during a call, so the gateway refuses the upstream's request, and the
// agent gets an invalid_request object saying why and what to do. It got
// the SDK's words to a server developer, as a JSON-RPC error ("return an
// InputRequests map instead").
func TestNewAgentMidCallRequestTyped(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	s := mcp.NewServer(&mcp.Implementation{Name: "s", Version: "1"}, nil)
	s.AddTool(&mcp.Tool{Name: "sample", InputSchema: json.RawMessage(`{"type":"object"}`)}, func(ctx context.Context, req *mcp.CallToolRequest) (*mcp.CallToolResult, error) {
		r, err := req.Session.CreateMessage(ctx, &mcp.CreateMessageParams{MaxTokens: 1, Messages: []*mcp.SamplingMessage{{Role: "user", Content: &mcp.TextContent{Text: "q"}}}})
		if err != nil {
			return nil, err
		}
		return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: "sampled " + r.Content.(*mcp.TextContent).Text}}}, nil
	})
	s.AddTool(&mcp.Tool{Name: "elicit", InputSchema: json.RawMessage(`{"type":"object"}`)}, func(ctx context.Context, req *mcp.CallToolRequest) (*mcp.CallToolResult, error) {
		if _, err := req.Session.Elicit(ctx, &mcp.ElicitParams{Message: "name?", RequestedSchema: &jsonschema.Schema{Type: "object"}}); err != nil {
			return &mcp.CallToolResult{IsError: true, Content: []mcp.Content{&mcp.TextContent{Text: "elicitation failed: " + err.Error()}}}, nil
		}
		return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: "elicited"}}}, nil
	})
	url := serveMCP(t, s)
	for _, fast := range []bool{true, false} {
		t.Run(fmt.Sprintf("fast_path %v", fast), func(t *testing.T) {
			g := newTestGateway(t, ctx, fmt.Sprintf("stateless: true\nfast_path: %v\nupstreams:\n  s: {url: %s, protocol_version: 2025-11-25}\n", fast, url))
			hs := httptest.NewServer(g.Handler())
			t.Cleanup(hs.Close)
			cs, err := mcp.NewClient(&mcp.Implementation{Name: "agent", Version: "1"}, &mcp.ClientOptions{
				CreateMessageHandler: func(context.Context, *mcp.CreateMessageRequest) (*mcp.CreateMessageResult, error) {
					return &mcp.CreateMessageResult{Model: "m", Role: "assistant", Content: &mcp.TextContent{Text: "yes"}}, nil
				},
				ElicitationHandler: func(context.Context, *mcp.ElicitRequest) (*mcp.ElicitResult, error) {
					return &mcp.ElicitResult{Action: "accept"}, nil
				},
			}).Connect(ctx, &mcp.StreamableClientTransport{Endpoint: hs.URL + "/mcp"}, &mcp.ClientSessionOptions{ProtocolVersion: "2026-07-28"})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = cs.Close() })
			for tool, method := range map[string]string{"s__sample": "sampling/createMessage", "s__elicit": "elicitation/create"} {
				res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: tool, Arguments: map[string]any{}})
				if err != nil {
					t.Fatalf("%s: %v; want a result with a failure object", tool, err)
				}
				f := failureOf(t, res)
				if f.Type != authmap.TypeInvalidRequest || f.Upstream != "s" || !strings.Contains(f.Detail, method) || !strings.Contains(f.Detail, "2026-07-28") || strings.Contains(f.Detail, "InputRequests map") {
					t.Errorf("%s: failure %+v; want invalid_request from s naming %s and the agent's protocol", tool, f, method)
				}
			}
		})
	}
}
