package gateway

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/credgate/credgate/authmap"
	"github.com/modelcontextprotocol/go-sdk/mcp"
	"github.com/rs/zerolog"
)

// redactCall sends one tools/call of a__raw, answered with result, through
// a gateway with the given fast_path, and returns the agent's answer body.
func redactCall(t *testing.T, fast bool, result string) []byte {
	t.Helper()
	return redactCallWith(t, fast, result, `Authorization: "Bearer `+passSecret+`"`)
}

func redactCallWith(t *testing.T, fast bool, result, headers string) []byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	_, b := hostileAgent(t, ctx, fast, resultAnswer(result), ", headers: {"+headers+"}").post(ctx, callRaw)
	return b
}

// TestSecretsOutOfEveryResult: no configured secret reaches the agent in
// any kind of tools/call result (a review found these did).
func TestSecretsOutOfEveryResult(t *testing.T) {
	t.Parallel()
	cases := []struct{ name, result string }{
		// toolOutcome returns a NeedsInput result before redactResult: an
		// upstream (of any protocol) adding resultType skips all redaction.
		{"resultType input_required", `{"resultType":"input_required","content":[{"type":"text","text":"token ` + passSecret + `"}]}`},
		// redactEverywhere copies back only Meta, Content, StructuredContent.
		{"requestState", `{"content":[{"type":"text","text":"x"}],"requestState":"` + passSecret + `"}`},
		// isError results: only text (and embedded resource text) is redacted.
		{"isError _meta", `{"isError":true,"_meta":{"k":"` + passSecret + `"},"content":[{"type":"text","text":"boom"}]}`},
		{"isError structuredContent", `{"isError":true,"content":[{"type":"text","text":"boom"}],"structuredContent":{"t":"` + passSecret + `"}}`},
		{"isError link", `{"isError":true,"content":[{"type":"text","text":"boom"},{"type":"resource_link","uri":"https://x.test/?k=1","name":"` + passSecret + `"}]}`},
		// an auth failure keeps the upstream's content; only TextContent is redacted.
		{"auth failure embedded resource", `{"isError":true,"content":[{"type":"text","text":"401 Unauthorized: invalid token"},{"type":"resource","resource":{"uri":"mem://r","text":"` + passSecret + `"}}]}`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			for _, fast := range []bool{true, false} {
				if b := redactCall(t, fast, tc.result); bytes.Contains(b, []byte(passSecret)) {
					t.Errorf("fast_path %v: the secret reached the agent: %s", fast, b)
				}
			}
		})
	}
}

// TestSecretKeyRenamedNotOntoAnother: a key holding a secret is renamed,
// never onto an existing key, whose value would be lost.
func TestSecretKeyRenamedNotOntoAnother(t *testing.T) {
	t.Parallel()
	b := redactCall(t, false, `{"content":[{"type":"text","text":"x"}],"structuredContent":{"`+passSecret+`":"from the secret key","[REDACTED]":"kept?"}}`)
	if !bytes.Contains(b, []byte("kept?")) {
		t.Errorf("the value of key \"[REDACTED]\" (no secret in it) was lost: %s", b)
	}
}

// redactUpstream is an SDK upstream whose tool sends progress, whose
// prompt and resource answer with what the test sets.
func redactUpstream(t *testing.T) string {
	t.Helper()
	s := mcp.NewServer(&mcp.Implementation{Name: "secrets", Version: "1"}, nil)
	s.AddTool(&mcp.Tool{Name: "slow", InputSchema: json.RawMessage(`{"type":"object"}`)}, func(ctx context.Context, req *mcp.CallToolRequest) (*mcp.CallToolResult, error) {
		if tok := req.Params.GetProgressToken(); tok != nil {
			_ = req.Session.NotifyProgress(ctx, &mcp.ProgressNotificationParams{Meta: mcp.Meta{"k": passSecret}, ProgressToken: tok, Message: "half", Progress: 1, Total: 2})
		}
		time.Sleep(100 * time.Millisecond)
		return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: "done"}}}, nil
	})
	s.AddPrompt(&mcp.Prompt{Name: "p"}, func(ctx context.Context, req *mcp.GetPromptRequest) (*mcp.GetPromptResult, error) {
		return &mcp.GetPromptResult{Meta: mcp.Meta{"k": passSecret}, Messages: []*mcp.PromptMessage{{Role: "user", Content: &mcp.TextContent{Text: "hi"}}}, RequestState: "state-" + passSecret}, nil
	})
	s.AddResource(&mcp.Resource{URI: "mem://r", Name: "r"}, func(ctx context.Context, req *mcp.ReadResourceRequest) (*mcp.ReadResourceResult, error) {
		return &mcp.ReadResourceResult{Meta: mcp.Meta{"k": passSecret}, Contents: []*mcp.ResourceContents{{URI: req.Params.URI, Text: "t"}}, RequestState: "state-" + passSecret}, nil
	})
	return serveMCP(t, s)
}

// TestSecretsOutOfPromptsResourcesProgress: prompts/get and resources/read
// keep a secret in requestState (redactPrompt/redactResource copy back
// only some fields); a progress notification keeps one in its _meta.
func TestSecretsOutOfPromptsResourcesProgress(t *testing.T) {
	t.Parallel()
	for _, fast := range []bool{true, false} {
		ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
		defer cancel()
		g := newTestGateway(t, ctx, fmt.Sprintf("fast_path: %v\nupstreams:\n  a: {url: %s, timeout: 5s, headers: {Authorization: \"Bearer %s\"}}\n", fast, redactUpstream(t), passSecret))
		a := newRawAgent(t, ctx, g)
		for _, req := range []string{
			`{"jsonrpc":"2.0","id":2,"method":"prompts/get","params":{"name":"a__p"}}`,
			`{"jsonrpc":"2.0","id":3,"method":"resources/read","params":{"uri":"mem://r"}}`,
			`{"jsonrpc":"2.0","id":4,"method":"tools/call","params":{"name":"a__slow","arguments":{},"_meta":{"progressToken":"pt"}}}`,
		} {
			_, b := a.post(ctx, req)
			if !bytes.Contains(b, []byte(`"result"`)) {
				t.Errorf("fast_path %v: %s: no result: %s", fast, req, b)
			}
			if bytes.Contains(b, []byte(passSecret)) {
				t.Errorf("fast_path %v: %s: the secret reached the agent: %s", fast, strings.SplitN(req, `"method":`, 2)[1][:16], b)
			}
		}
	}
}

// TestSecretsOutOfInputRequests: the inputRequests of a result (with or
// without resultType input_required) reach the agent as an elicitation
// request holding the secret.
func TestSecretsOutOfInputRequests(t *testing.T) {
	t.Parallel()
	ir := `"inputRequests":{"r1":{"method":"elicitation/create","params":{"message":"paste ` + passSecret + `","requestedSchema":{"type":"object","properties":{}}}}}`
	for _, result := range []string{`{"resultType":"input_required",` + ir + `}`, `{` + ir + `}`} {
		for _, fast := range []bool{true, false} {
			ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
			defer cancel()
			h := newHostileUpstream(t, map[string]rawAnswerFunc{"x": resultAnswer(result)})
			g := newTestGateway(t, ctx, fmt.Sprintf("fast_path: %v\nupstreams:\n  a: {url: %s, timeout: 5s, headers: {Authorization: \"Bearer %s\"}}\n", fast, h.url, passSecret))
			a := newRawAgentWith(t, ctx, g, `{"elicitation":{}}`)
			next := a.stream(ctx, `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a__raw","arguments":{"text":"x"}}}`)
			m := next()
			b, _ := json.Marshal(m)
			if bytes.Contains(b, []byte(passSecret)) {
				t.Errorf("fast_path %v, result %.40s...: the secret reached the agent: %s", fast, result, b)
			}
			if id, ok := m["id"]; ok && m["method"] != nil { // answer the agent's request, so the call ends
				idj, _ := json.Marshal(id)
				a.post(ctx, `{"jsonrpc":"2.0","id":`+string(idj)+`,"result":{"action":"decline"}}`)
			}
		}
	}
}

// TestNumericSecretInPromptMeta: a secret of digits in a number (a
// prompt's _meta) is taken out (the number becomes "[REDACTED]"); the
// prompt was withheld, answered with "messages": null, which the spec's
// schema does not allow.
func TestNumericSecretInPromptMeta(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	s := mcp.NewServer(&mcp.Implementation{Name: "n", Version: "1"}, nil)
	s.AddPrompt(&mcp.Prompt{Name: "p"}, func(ctx context.Context, req *mcp.GetPromptRequest) (*mcp.GetPromptResult, error) {
		return &mcp.GetPromptResult{Meta: mcp.Meta{"n": 98765432101}, Messages: []*mcp.PromptMessage{{Role: "user", Content: &mcp.TextContent{Text: "hi"}}}}, nil
	})
	g := newTestGateway(t, ctx, fmt.Sprintf("upstreams:\n  a: {url: %s, timeout: 5s, headers: {X-Api-Key: \"98765432101\"}}\n", serveMCP(t, s)))
	a := newRawAgent(t, ctx, g)
	_, b := a.post(ctx, `{"jsonrpc":"2.0","id":2,"method":"prompts/get","params":{"name":"a__p"}}`)
	if bytes.Contains(b, []byte(`"messages":null`)) || bytes.Contains(b, []byte("98765432101")) || !bytes.Contains(b, []byte(`"hi"`)) {
		t.Errorf("prompt with a numeric secret in its _meta: %s; want the secret out and the messages kept", b)
	}
}

// TestSecretsInEveryEscapedForm: a secret with characters
// encoders escape (HTML, U+2028, '/', '"') is redacted from every string
// and key however the upstream spells it; the agent's decoded answer is
// searched, not its bytes.
func TestSecretsInEveryEscapedForm(t *testing.T) {
	t.Parallel()
	const sec = "Ab<1>&2\u2028/3\"Zq9x" // the secret as configured
	enc := func(s string) string { b, _ := json.Marshal(s); return string(b[1 : len(b)-1]) }
	spellings := []string{
		enc(sec),                                // \u003c \u003e \u0026 \u2028 \"
		`Ab\u003c1\u003e\u00262\u2028\/3\"Zq9x`, // \/ as well
		"Ab<1>&2\u2028/3\\\"Zq9x",               // raw where JSON allows it
	}
	for _, sp := range spellings {
		result := `{"_meta":{"k":"` + sp + `"},"content":[{"type":"text","text":"t ` + sp + `"},{"type":"resource_link","uri":"https://x.test/` + sp + `","name":"` + sp + `"}],"structuredContent":{"` + sp + `":1}}`
		for _, fast := range []bool{true, false} {
			q, _ := json.Marshal(sec)
			b := redactCallWith(t, fast, result, "X-Api-Key: "+string(q))
			if i := bytes.LastIndex(b, []byte("data: ")); i >= 0 {
				b = bytes.TrimSpace(b[i+6:])
			}
			var m any
			if err := json.Unmarshal(b, &m); err != nil {
				t.Fatalf("%s: %v", b, err)
			}
			dec, _ := json.Marshal(m)
			var flat strings.Builder
			var walk func(any)
			walk = func(v any) {
				switch x := v.(type) {
				case string:
					flat.WriteString(x + "\x00")
				case map[string]any:
					for k, e := range x {
						flat.WriteString(k + "\x00")
						walk(e)
					}
				case []any:
					for _, e := range x {
						walk(e)
					}
				}
			}
			walk(m)
			if strings.Contains(flat.String(), sec) || !strings.Contains(string(dec), "REDACTED") {
				t.Errorf("fast_path %v, spelling %q: %s", fast, sp, dec)
			}
		}
	}
}

// TestSecretsPercentEncodedOut: a secret an upstream echoes percent-encoded
// (in a URL it quotes, by whichever encoder) is redacted from a result's
// strings and keys on both paths, and from a failure's detail (found trying
// the gateway from outside: "tok%2Fen%2BSecret%3D..." passed).
func TestSecretsPercentEncodedOut(t *testing.T) {
	t.Parallel()
	const sec = "tok/en+Secret=ABCdef123456789"
	for _, sp := range []string{
		"tok%2Fen%2BSecret%3DABCdef123456789", // encodeURIComponent
		"tok/en%2BSecret%3DABCdef123456789",   // Python's quote
		"tok%2fen%2bSecret%3dABCdef123456789", // lower-case hex
	} {
		result := `{"content":[{"type":"text","text":"see https://x.test/?k=` + sp + `"}],"structuredContent":{"` + sp + `":1}}`
		for _, fast := range []bool{true, false} {
			b := redactCallWith(t, fast, result, "X-Api-Key: "+sec)
			if bytes.Contains(b, []byte(sp)) || !bytes.Contains(b, []byte("REDACTED")) {
				t.Errorf("fast_path %v, spelling %q: %s", fast, sp, b)
			}
		}
	}
}

// TestSecretsOutOfUpstreamRequests: an upstream's own elicitation request
// during a call, quoting a configured secret, reaches the agent without
// it, on both paths.
func TestSecretsOutOfUpstreamRequests(t *testing.T) {
	t.Parallel()
	s := mcp.NewServer(&mcp.Implementation{Name: "asks", Version: "1"}, nil)
	addAskTool(s, "is "+passSecret+" yours?")
	url := serveMCP(t, s)
	for _, fast := range []bool{true, false} {
		ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
		defer cancel()
		g := newTestGateway(t, ctx, fmt.Sprintf("fast_path: %v\nupstreams:\n  a: {url: %s, timeout: 5s, headers: {Authorization: \"Bearer %s\"}}\n", fast, url, passSecret))
		a := newRawAgentWith(t, ctx, g, `{"elicitation":{}}`)
		next := a.stream(ctx, `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a__ask","arguments":{}}}`)
		m := next()
		b, _ := json.Marshal(m)
		if m["method"] != "elicitation/create" || bytes.Contains(b, []byte(passSecret)) || !bytes.Contains(b, []byte("REDACTED")) {
			t.Errorf("fast_path %v: the agent was asked %s; want the elicitation without the secret", fast, b)
		}
		if id, ok := m["id"]; ok {
			idj, _ := json.Marshal(id)
			a.post(ctx, `{"jsonrpc":"2.0","id":`+string(idj)+`,"result":{"action":"decline"}}`)
		}
	}
}

// TestRedactedFailureStaysTyped: a failure result whose kept upstream
// content held a secret is redacted whole, and its failure object stays an
// authmap.Failure, which breakers, credential renewal, routes and the
// audit line read (decoded from JSON it had become a map, and the call
// read as a plain tool error).
func TestRedactedFailureStaysTyped(t *testing.T) {
	t.Parallel()
	g := &Server{redactor: authmap.NewRedactor([]string{passSecret})}
	f := authmap.Failure{Type: authmap.TypeAuthFailure, Subtype: authmap.SubtypeCredentialRevoked, Upstream: "a", Detail: "401"}
	res := g.failureResult(f, []mcp.Content{&mcp.EmbeddedResource{Resource: &mcp.ResourceContents{URI: "mem://r", Text: passSecret}}})
	g.redactEverywhere(res)
	data, _ := json.Marshal(res)
	if bytes.Contains(data, []byte(passSecret)) {
		t.Fatalf("the secret is still in %s", data)
	}
	got, _ := outcomeFailure(res, nil)
	if got == nil || got.Type != authmap.TypeAuthFailure || got.Subtype != authmap.SubtypeCredentialRevoked {
		t.Errorf("failure after redaction: %+v (meta %T); want the typed auth_failure", got, res.Meta[MetaKey])
	}
}

// TestAuditLineToolNameRedacted: a tool name carrying a value the gateway
// knows as a secret (an upstream offering leak_<its token>) is redacted in
// the call's audit line. Found feeding the built gateway hostile upstreams.
func TestAuditLineToolNameRedacted(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	const secret = "s3cr3tT0kenAbCdEf0123456789xyz"
	var logs syncBuffer
	g := newTestGatewayLogged(t, ctx, fmt.Sprintf("upstreams:\n  a: {url: http://127.0.0.1:1/mcp, headers: {X-Api-Token: %s}}\n", secret), zerolog.New(&logs).Level(zerolog.InfoLevel))
	g.logCall(ctx, g.upstream("a"), "leak_"+secret, time.Now(), &mcp.CallToolResult{}, nil)
	if strings.Contains(logs.String(), secret) || !strings.Contains(logs.String(), `"tool":"leak_[REDACTED]"`) {
		t.Errorf("the audit line of a tool named after a secret:\n%s", logs.String())
	}
}
