package gateway

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// heldHeaders is a ResponseWriter that sends nothing, headers included,
// until the handler writes a message: a reverse proxy that passes an
// answer on with its first bytes (a Node proxy that pipes without
// flushHeaders, a buffering gateway), in front of a server that writes
// nothing on its GET stream until it has a message (as the TypeScript
// SDK's does; the Go SDK's writes a priming event, dropped here).
type heldHeaders struct {
	http.ResponseWriter
	status int
	sent   bool
}

func (h *heldHeaders) WriteHeader(code int) { h.status = code }

func (h *heldHeaders) Write(p []byte) (int, error) {
	if !h.sent {
		if !bytes.Contains(p, []byte(`"jsonrpc"`)) {
			return len(p), nil
		}
		h.ResponseWriter.WriteHeader(h.status)
		h.sent = true
	}
	return h.ResponseWriter.Write(p)
}

func (h *heldHeaders) Flush() {
	if h.sent {
		h.ResponseWriter.(http.Flusher).Flush()
	}
}

// TestHeldStandaloneStreamHeaders: an upstream behind a proxy that holds an
// answer's headers until its first bytes connects at once, although its
// standalone GET stream (2025-11-25) sends nothing until an event, and that
// stream then carries the server's notifications. The SDK's client waited
// for the GET's headers inside connect: the upstream came up only with the
// server's first keep-alive, or never within its timeout (found trying the
// gateway from outside; the TypeScript client does not wait).
func TestHeldStandaloneStreamHeaders(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	s := mcp.NewServer(&mcp.Implementation{Name: "held", Version: "1"}, nil)
	s.AddTool(&mcp.Tool{Name: "echo", InputSchema: json.RawMessage(`{"type":"object"}`)}, func(context.Context, *mcp.CallToolRequest) (*mcp.CallToolResult, error) {
		return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: "ok"}}}, nil
	})
	sdk := mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return s }, nil)
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet {
			w = &heldHeaders{ResponseWriter: w}
		}
		sdk.ServeHTTP(w, r)
	}))
	t.Cleanup(hs.Close)
	start := time.Now()
	g := newTestGateway(t, ctx, "upstreams:\n  a: {url: "+hs.URL+", timeout: 20s}\n")
	if h := g.Health().Upstreams["a"]; h.Status != StatusUp {
		t.Fatalf("upstream = %+v, want up", h)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("connect took %v, want it not held by the GET stream's headers", d)
	}
	cs := agent(t, ctx, g, nil)
	if res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "a__echo", Arguments: map[string]any{}}); err != nil || res.IsError {
		t.Fatalf("call: %v, %v", res, err)
	}
	// A tool added upstream is announced on the GET stream (list_changed).
	s.AddTool(&mcp.Tool{Name: "later", InputSchema: json.RawMessage(`{"type":"object"}`)}, func(context.Context, *mcp.CallToolRequest) (*mcp.CallToolResult, error) {
		return &mcp.CallToolResult{}, nil
	})
	waitFor(t, ctx, func() bool { return g.catalog.hasTool("a__later") })
}
