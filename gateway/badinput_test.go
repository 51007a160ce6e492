package gateway

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/modelcontextprotocol/go-sdk/mcp"
)

func TestBadUpstreams(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	b := newTestUpstream(t, "b", "echo")
	g, cs := startGateway(t, ctx, fmt.Sprintf(`
upstreams:
  raw:
    command: %q
    env: {%s: "1"}
  garbage:
    command: %q
    env: {%s: garbage}
  b: {url: %s}
`, self, rawUpstreamEnv, self, rawUpstreamEnv, b.url()))

	// Only the tools that can be exposed are; the rest are reported.
	if diff := cmp.Diff([]string{"b__echo", "raw__good"}, toolNames(t, ctx, cs)); diff != "" {
		t.Errorf("tools mismatch (-want +got):\n%s", diff)
	}
	var reported []string
	for _, p := range g.Health().Upstreams["raw"].Problems {
		reported = append(reported, p.Name)
	}
	if diff := cmp.Diff([]string{"bad name!", "string_schema", strings.Repeat("x", 70)}, sortedCopy(reported)); diff != "" {
		t.Errorf("reported problems mismatch (-want +got):\n%s", diff)
	}

	// A draft-07 schema, annotations, title and _meta pass through verbatim.
	res, err := cs.ListTools(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, tool := range res.Tools {
		if tool.Name != "raw__good" {
			continue
		}
		js, _ := json.Marshal(tool)
		for _, want := range []string{`"$schema":"http://json-schema.org/draft-07/schema#"`, `"$ref":"#/definitions/x"`, `"readOnlyHint":true`, `"dev.example/k":"v"`, `"title":"Good"`} {
			if !strings.Contains(string(js), want) {
				t.Errorf("raw__good lost %s: %s", want, js)
			}
		}
	}
	if r, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "raw__good"}); err != nil || text(r) != "raw ok" {
		t.Errorf("raw__good = %v, %v", r, err)
	}

	// An upstream speaking garbage is down with a clear error; others work.
	h := g.Health().Upstreams["garbage"]
	if h.Connected || h.LastError == "" {
		t.Errorf("garbage upstream health = %+v, want down with an error", h)
	}
	if r, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "b__echo", Arguments: map[string]any{"text": "ok"}}); err != nil || r.IsError {
		t.Errorf("healthy upstream after garbage = %v, %v", r, err)
	}
}

func TestMalformedAgentRequests(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	b := newTestUpstream(t, "b", "echo")
	g, cs := startGateway(t, ctx, fmt.Sprintf("upstreams:\n  b: {url: %s}\n", b.url()))
	hs := httptest.NewServer(g.Handler())
	defer hs.Close()
	for _, body := range []string{`{not json`, `{"jsonrpc":"2.0","id":1,"method":42}`, `[]`, ``} {
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, hs.URL+"/mcp", strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Accept", "application/json, text/event-stream")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		msg, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode < 400 || resp.StatusCode >= 500 {
			t.Errorf("POST %q = %d %s, want a 4xx naming the problem", body, resp.StatusCode, msg)
		}
	}
	// The gateway, and an agent already connected, are unaffected.
	if r, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "b__echo", Arguments: map[string]any{"text": "ok"}}); err != nil || r.IsError {
		t.Errorf("call after malformed requests = %v, %v", r, err)
	}
}
