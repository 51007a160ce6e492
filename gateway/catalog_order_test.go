package gateway

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// TestListedSchemasKeepTheirOrder: a tool's schemas reach agents as the
// upstream wrote them, keys in its order (the SDK decodes them into maps,
// and they came back sorted: a form built from them showed its fields out
// of order). One holding a configured secret is redacted instead.
func TestListedSchemasKeepTheirOrder(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	const in = `{"type":"object","properties":{"zeta":{"type":"string","description":"first"},"alpha":{"type":"number"}},"required":["zeta"]}`
	const out = `{"type":"object","properties":{"total":{"type":"number"},"count":{"type":"integer"}}}`
	const secret = "schema-secret-0123456789"
	srv := mcp.NewServer(&mcp.Implementation{Name: "ordered", Version: "1"}, nil)
	handler := func(context.Context, *mcp.CallToolRequest) (*mcp.CallToolResult, error) {
		return &mcp.CallToolResult{StructuredContent: map[string]any{"total": 1, "count": 1}}, nil
	}
	srv.AddTool(&mcp.Tool{Name: "form", InputSchema: json.RawMessage(in), OutputSchema: json.RawMessage(out)}, handler)
	srv.AddTool(&mcp.Tool{Name: "leaky", InputSchema: json.RawMessage(`{"type":"object","properties":{"z":{"type":"string","default":"` + secret + `"}}}`)}, handler)
	url := serveMCP(t, srv)
	g, cs := startGateway(t, ctx, fmt.Sprintf("upstreams:\n  a: {url: %s, headers: {Authorization: \"Bearer %s\"}}\n", url, secret))
	got := map[string]*mcp.Tool{}
	for _, tool := range g.upstream("a").catalog().tools {
		got[tool.Name] = tool
	}
	text := func(v any) string {
		if raw, ok := v.(json.RawMessage); ok {
			return string(raw)
		}
		return fmt.Sprintf("%T", v)
	}
	if s := text(got["form"].InputSchema); s != in {
		t.Errorf("inputSchema held as\n%s\nwant the upstream's\n%s", s, in)
	}
	if s := text(got["form"].OutputSchema); s != out {
		t.Errorf("outputSchema held as\n%s\nwant the upstream's\n%s", s, out)
	}
	if s := text(got["leaky"].InputSchema); strings.Contains(s, secret) || !strings.Contains(s, "[REDACTED]") {
		t.Errorf("a schema holding a secret is held as %s; want it redacted", s)
	}
	// The agent lists it as the upstream did.
	res, err := cs.ListTools(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, tool := range res.Tools {
		if tool.Name == "a__form" {
			b, _ := json.Marshal(tool.InputSchema)
			var want any
			_ = json.Unmarshal([]byte(in), &want)
			w, _ := json.Marshal(want)
			if string(b) != string(w) {
				t.Errorf("the agent's a__form inputSchema = %s, want %s", b, w)
			}
		}
	}
}

// TestElicitationFormKeepsItsOrder: an upstream's elicitation reaches the
// agent with its requested schema as written, fields in the upstream's
// order (the SDK's decoding sorted them: a form showed its fields out of
// order).
func TestElicitationFormKeepsItsOrder(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	const form = `{"type":"object","properties":{"zeta":{"type":"string","title":"Z first"},"alpha":{"type":"string","title":"A second"}},"required":["zeta"]}`
	srv := mcp.NewServer(&mcp.Implementation{Name: "asker", Version: "1"}, nil)
	srv.AddTool(&mcp.Tool{Name: "ask", InputSchema: json.RawMessage(`{"type":"object"}`)}, func(ctx context.Context, req *mcp.CallToolRequest) (*mcp.CallToolResult, error) {
		res, err := req.Session.Elicit(ctx, &mcp.ElicitParams{Message: "who?", RequestedSchema: json.RawMessage(form)})
		if err != nil {
			return nil, err
		}
		return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: res.Action}}}, nil
	})
	g, _ := startGateway(t, ctx, fmt.Sprintf("upstreams:\n  a: {url: %s}\n", serveMCP(t, srv)))
	hs := httptest.NewServer(g.Handler())
	t.Cleanup(hs.Close)
	cs, seen := teeAgent(t, ctx, hs.URL+"/mcp", func(context.Context, *mcp.ElicitRequest) (*mcp.ElicitResult, error) {
		return &mcp.ElicitResult{Action: "decline"}, nil
	})
	if _, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "a__ask"}); err != nil {
		t.Fatal(err)
	}
	got := seen.String()
	if !strings.Contains(got, `"requestedSchema":`+form) {
		t.Errorf("the agent's elicitation request does not carry the form as written:\n%s\nwant %s", got, form)
	}
}

// teeAgent connects an agent answering elicitations with elicit to url and
// returns it with what it read off the wire.
func teeAgent(t *testing.T, ctx context.Context, url string, elicit func(context.Context, *mcp.ElicitRequest) (*mcp.ElicitResult, error)) (*mcp.ClientSession, *syncBuffer) {
	t.Helper()
	seen := &syncBuffer{}
	hc := &http.Client{Transport: roundTripperFunc(func(r *http.Request) (*http.Response, error) {
		resp, err := http.DefaultTransport.RoundTrip(r)
		if err == nil {
			resp.Body = readCloser{io.TeeReader(resp.Body, seen), resp.Body}
		}
		return resp, err
	})}
	client := mcp.NewClient(&mcp.Implementation{Name: "agent", Version: "1"}, &mcp.ClientOptions{ElicitationHandler: elicit})
	cs, err := client.Connect(ctx, &mcp.StreamableClientTransport{Endpoint: url, HTTPClient: hc}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cs.Close() })
	return cs, seen
}

// readCloser reads from Reader and closes Closer.
type readCloser struct {
	io.Reader
	io.Closer
}
