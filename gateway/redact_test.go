package gateway

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/credgate/credgate/authmap"
	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	"github.com/modelcontextprotocol/go-sdk/mcp"
	"github.com/rs/zerolog"
)

// Secrets configured in TestSecretsNeverLeak; each must never leave the
// gateway.
const (
	secretHeader = "tok_0123456789abcdefHEADERSECRET"
	secretShort  = "k3y9z" // shorter than 8 characters: still redacted
	secretEnv    = "env-secret-0123456789"
)

// echoUpstream serves tools, a prompt and a resource that repeat what they
// are given (and the secret they know) in every way a server answers.
func echoUpstream(t *testing.T) string {
	t.Helper()
	s := mcp.NewServer(&mcp.Implementation{Name: "echo", Version: "1"}, nil)
	schema := json.RawMessage(`{"type":"object","properties":{"text":{"type":"string"}}}`)
	arg := func(req *mcp.CallToolRequest) string {
		var a struct{ Text string }
		_ = json.Unmarshal(req.Params.Arguments, &a)
		return a.Text
	}
	s.AddTool(&mcp.Tool{Name: "echo", InputSchema: schema}, func(ctx context.Context, req *mcp.CallToolRequest) (*mcp.CallToolResult, error) {
		a := arg(req)
		_ = req.Session.Log(ctx, &mcp.LoggingMessageParams{Level: "info", Data: map[string]any{"echo": a}})
		return &mcp.CallToolResult{
			Content: []mcp.Content{
				&mcp.TextContent{Text: "echo: " + a},
				&mcp.EmbeddedResource{Resource: &mcp.ResourceContents{URI: "mem://e", MIMEType: "text/plain", Text: a}},
			},
			StructuredContent: map[string]any{"echo": a, "list": []any{a}},
		}, nil
	})
	s.AddTool(&mcp.Tool{Name: "rpc", InputSchema: schema}, func(ctx context.Context, req *mcp.CallToolRequest) (*mcp.CallToolResult, error) {
		a := arg(req)
		data, _ := json.Marshal(map[string]string{"sent": a})
		return nil, &jsonrpc.Error{Code: -32011, Message: "rejected " + a, Data: data}
	})
	s.AddTool(&mcp.Tool{Name: "fail", InputSchema: schema}, func(ctx context.Context, req *mcp.CallToolRequest) (*mcp.CallToolResult, error) {
		return &mcp.CallToolResult{IsError: true, Content: []mcp.Content{&mcp.TextContent{Text: "could not store " + arg(req)}}}, nil
	})
	s.AddPrompt(&mcp.Prompt{Name: "p", Arguments: []*mcp.PromptArgument{{Name: "who"}}}, func(ctx context.Context, req *mcp.GetPromptRequest) (*mcp.GetPromptResult, error) {
		return &mcp.GetPromptResult{Messages: []*mcp.PromptMessage{{Role: "user", Content: &mcp.TextContent{Text: "hello " + req.Params.Arguments["who"]}}}}, nil
	})
	s.AddResource(&mcp.Resource{URI: "mem://config", Name: "config"}, func(ctx context.Context, req *mcp.ReadResourceRequest) (*mcp.ReadResourceResult, error) {
		return &mcp.ReadResourceResult{Contents: []*mcp.ResourceContents{{URI: req.Params.URI, Text: "Authorization: Bearer " + secretHeader}}}, nil
	})
	return serveMCP(t, s)
}

// TestSecretsNeverLeak is the regression test for issue 6 item 13: every
// configured secret (headers and env of every upstream, short ones from 4
// characters) is redacted from successful results, isError content,
// passed-through JSON-RPC errors, prompts, resources, log messages to agents,
// the gateway's logs (child stderr, the SDK's own), and /health.
func TestSecretsNeverLeak(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	var logs syncBuffer
	g := newTestGatewayLogged(t, ctx, fmt.Sprintf(`
upstreams:
  e:
    url: %s
    headers: {Authorization: "Bearer %s", X-Api-Key: %s, Accept-Language: en}
  child:
    command: /bin/sh
    args: ["-c", "echo \"starting with token $API_TOKEN\" >&2; exit 3"]
    env: {API_TOKEN: %s}
`, echoUpstream(t), secretHeader, secretShort, secretEnv), zerolog.New(&logs).Level(zerolog.DebugLevel))
	var mu sync.Mutex
	var agentLogs []string
	cs := agent(t, ctx, g, &mcp.ClientOptions{LoggingMessageHandler: func(_ context.Context, r *mcp.LoggingMessageRequest) {
		b, _ := json.Marshal(r.Params.Data)
		mu.Lock()
		defer mu.Unlock()
		agentLogs = append(agentLogs, string(b))
	}})
	if err := cs.SetLoggingLevel(ctx, &mcp.SetLoggingLevelParams{Level: "debug"}); err != nil {
		t.Fatal(err)
	}

	leaked := "header " + secretHeader + ", key " + secretShort + ", env " + secretEnv
	seen := map[string]string{} // surface -> what the agent or operator saw
	for _, tool := range []string{"e__echo", "e__rpc", "e__fail"} {
		res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: tool, Arguments: map[string]any{"text": leaked}})
		raw, _ := json.Marshal(res)
		seen[tool] = fmt.Sprintf("%s %v", raw, err)
		if err == nil && !strings.Contains(string(raw), "[REDACTED]") {
			t.Errorf("%s: %s; want the upstream's answer with the secrets redacted", tool, raw)
		}
	}
	var rpc *jsonrpc.Error
	if _, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "e__rpc", Arguments: map[string]any{"text": leaked}}); !errorsAs(err, &rpc) || rpc.Code != -32011 || !strings.HasPrefix(rpc.Message, "rejected ") {
		t.Errorf("e__rpc = %v; want the upstream's JSON-RPC error passed through, redacted", err)
	} else {
		seen["e__rpc data"] = string(rpc.Data)
		if !json.Valid(rpc.Data) || !strings.Contains(string(rpc.Data), "[REDACTED]") {
			t.Errorf("e__rpc data = %s; want the upstream's JSON, redacted", rpc.Data)
		}
	}
	pr, err := cs.GetPrompt(ctx, &mcp.GetPromptParams{Name: "e__p", Arguments: map[string]string{"who": leaked}})
	pj, _ := json.Marshal(pr)
	seen["prompts/get"] = fmt.Sprintf("%s %v", pj, err)
	rr, err := cs.ReadResource(ctx, &mcp.ReadResourceParams{URI: "mem://config"})
	rj, _ := json.Marshal(rr)
	seen["resources/read"] = fmt.Sprintf("%s %v", rj, err)
	waitFor(t, ctx, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(agentLogs) > 0
	})
	mu.Lock()
	seen["log messages to the agent"] = strings.Join(agentLogs, "\n")
	mu.Unlock()
	// The child's stderr reaches the log (and health) once it has died.
	waitFor(t, ctx, func() bool { return strings.Contains(logs.String(), "starting with token") })
	g.sdkLog.Warn("an SDK warning quoting a request", "header", "Bearer "+secretHeader, "err", fmt.Errorf("sent %s", secretShort))
	hj, _ := json.Marshal(g.Health())
	seen["health"] = string(hj)
	seen["logs"] = logs.String()

	for surface, out := range seen {
		for _, s := range []string{secretHeader, secretShort, secretEnv} {
			if strings.Contains(out, s) {
				t.Errorf("%s carries the secret %q:\n%s", surface, s, out)
			}
		}
	}
	// Plain settings are not secrets: "en" stays readable.
	res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "e__echo", Arguments: map[string]any{"text": "lang en"}})
	if err != nil || text(res) != "echo: lang en" {
		t.Errorf("echo of a plain setting = %q, %v; want it untouched", text(res), err)
	}
}

// TestProblemsRedacted is a regression test for issue 6 item 13 (/health):
// what an upstream offers reaches /health problems and the log through the
// redactor too. Two upstreams offer a resource whose URI carries a
// configured secret; the second one's problem names it.
func TestProblemsRedacted(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	const secret = "s3cr3t-0123456789abcdef"
	uri := "mem://db?access=" + secret
	serve := func() string {
		s := mcp.NewServer(&mcp.Implementation{Name: "r", Version: "1"}, nil)
		s.AddResource(&mcp.Resource{URI: uri, Name: "db"}, func(context.Context, *mcp.ReadResourceRequest) (*mcp.ReadResourceResult, error) {
			return &mcp.ReadResourceResult{}, nil
		})
		return serveMCP(t, s)
	}
	var logs syncBuffer
	g := newTestGatewayLogged(t, ctx, fmt.Sprintf("upstreams:\n  a: {url: %s, headers: {X-Api-Key: %q}}\n  b: {url: %s}\n", serve(), secret, serve()),
		zerolog.New(&logs).Level(zerolog.WarnLevel))
	waitFor(t, ctx, func() bool { return len(g.Health().Upstreams["b"].Problems) > 0 })
	raw, err := json.Marshal(g.Health())
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(raw), secret) {
		t.Errorf("/health carries the secret: %s", raw)
	}
	if strings.Contains(logs.String(), secret) {
		t.Errorf("the log carries the secret:\n%s", logs.String())
	}
}

// TestURLSecretsRedacted is the regression test for issue 6 item 13 (found
// by trying the binary): a hosted MCP server that takes its key in the url
// (?api_key=..., or https://user:password@host) had that key echoed back in
// results unredacted: the url's secrets were not among the configured ones.
func TestURLSecretsRedacted(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	const key, pw = "qk-0123456789urlkey", "pw-urlpassword-42"
	u := strings.Replace(echoUpstream(t), "http://", "http://bob:"+pw+"@", 1) + "?api_key=" + key + "&region=eu"
	_, cs := startGateway(t, ctx, fmt.Sprintf("upstreams:\n  a: {url: %q}\n", u))
	res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "a__echo", Arguments: map[string]any{"text": key + " " + pw + " eu"}})
	if err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(res)
	if strings.Contains(string(b), key) || strings.Contains(string(b), pw) || !strings.Contains(string(b), "[REDACTED] [REDACTED] eu") {
		t.Errorf("result = %s, want the url's key and password redacted and the rest intact", b)
	}
}

// TestListingsRedacted is the regression test for issue 6 item 13 (found by
// trying the binary): an upstream that put its configured token in a tool's
// description or a schema default handed it to every agent listing tools.
// Listings lose configured secrets like results do; names stay.
func TestListingsRedacted(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	const secret = "lst-0123456789abcdef"
	s := mcp.NewServer(&mcp.Implementation{Name: "l", Version: "1"}, nil)
	s.AddTool(&mcp.Tool{Name: "q", Description: "queries with token " + secret,
		InputSchema: json.RawMessage(`{"type":"object","properties":{"k":{"type":"string","default":"` + secret + `"}}}`)},
		func(context.Context, *mcp.CallToolRequest) (*mcp.CallToolResult, error) {
			return &mcp.CallToolResult{}, nil
		})
	s.AddPrompt(&mcp.Prompt{Name: "p", Description: "key " + secret}, func(context.Context, *mcp.GetPromptRequest) (*mcp.GetPromptResult, error) {
		return &mcp.GetPromptResult{}, nil
	})
	// Names and URIs that hold the secret cannot be redacted (calls use
	// them): those items are left out, and reported (found trying the
	// gateway: a child named a tool after its token).
	noop := func(context.Context, *mcp.CallToolRequest) (*mcp.CallToolResult, error) {
		return &mcp.CallToolResult{}, nil
	}
	s.AddTool(&mcp.Tool{Name: "t_" + secret, InputSchema: json.RawMessage(`{"type":"object"}`)}, noop)
	s.AddPrompt(&mcp.Prompt{Name: "p_" + secret}, func(context.Context, *mcp.GetPromptRequest) (*mcp.GetPromptResult, error) {
		return &mcp.GetPromptResult{}, nil
	})
	read := func(context.Context, *mcp.ReadResourceRequest) (*mcp.ReadResourceResult, error) {
		return &mcp.ReadResourceResult{}, nil
	}
	s.AddResource(&mcp.Resource{Name: "kept", URI: "file:///kept"}, read)
	s.AddResource(&mcp.Resource{Name: "r1", URI: "https://x.example/?access_token=" + secret}, read)
	s.AddResource(&mcp.Resource{Name: "r2", URI: "file:///tok/" + strings.ReplaceAll(secret, "-", "%2D")}, read)
	s.AddResourceTemplate(&mcp.ResourceTemplate{Name: "rt", URITemplate: "file:///" + secret + "/{x}"}, read)
	g, cs := startGateway(t, ctx, fmt.Sprintf("upstreams:\n  a: {url: %s, headers: {X-Api-Key: %q}}\n", serveMCP(t, s), secret))
	tools, err := cs.ListTools(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	prompts, err := cs.ListPrompts(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	resources, err := cs.ListResources(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	templates, err := cs.ListResourceTemplates(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal([]any{tools, prompts, resources, templates})
	if strings.Contains(string(b), secret) || strings.Contains(string(b), "%2D") || !strings.Contains(string(b), `"a__q"`) || !strings.Contains(string(b), `"a__p"`) ||
		!strings.Contains(string(b), "file:///kept") || !strings.Contains(string(b), "queries with token [REDACTED]") {
		t.Errorf("listings = %s, want the secret redacted, the items named after it left out, and the others kept", b)
	}
	h, _ := json.Marshal(g.Health())
	if strings.Contains(string(h), secret) || strings.Count(string(h), "holds the value of a credential") != 5 {
		t.Errorf("health = %s; want the 5 items left out reported, without the secret", h)
	}
	// Its counts are what agents see.
	if uh := g.Health().Upstreams["a"]; uh.Tools != 1 || uh.Prompts != 1 || uh.Resources != 1 {
		t.Errorf("health counts tools %d, prompts %d, resources %d; want 1 of each (what agents see)", uh.Tools, uh.Prompts, uh.Resources)
	}
}

// TestUndeliveredNoticesAreDebug: the SDK's warning for a notification that
// found no agent stream (an agent without a GET stream, at every catalog
// change) is a debug line; its other warnings stay warnings.
func TestUndeliveredNoticesAreDebug(t *testing.T) {
	t.Parallel()
	var buf syncBuffer
	log := zerolog.New(&buf).Level(zerolog.WarnLevel)
	sdk := slog.New(redactingHandler{Handler: zerolog.NewSlogHandler(log), r: authmap.NewRedactor(nil)})
	sdk.Warn("calling notifications/tools/list_changed: rejected by transport: undelivered message: stream not connected or already closed")
	sdk.Warn("calling tools/list: connection reset")
	got := buf.String()
	if strings.Contains(got, "list_changed") || !strings.Contains(got, "connection reset") {
		t.Errorf("logged %q; want only the other warning", got)
	}
}
