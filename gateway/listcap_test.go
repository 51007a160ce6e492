package gateway

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// endlessListMode makes the test binary a raw 2025-11-25 stdio upstream
// (endlessListUpstream) whose tools/list pages never end.
const endlessListMode = "endless-list"

// emptyPagesMode and loopCursorMode make it an upstream whose tools/list
// pages are empty, each pointing to a new next page, or hold one tool
// each and always point to the same next page.
const (
	emptyPagesMode = "empty-pages"
	loopCursorMode = "loop-cursor"
)

// endlessListUpstream answers tools/list with pages of perPage new tools,
// each pointing to a next page (a new one each time, or always "loop"),
// without end; tools/call of any tool with "ok".
func endlessListUpstream(perPage int, loop bool) {
	page := 0
	serveRaw(func(out *bufio.Writer, req childRequest, err error) {
		switch {
		case err != nil:
		case req.Method == "initialize":
			replyResult(out, req.ID, `{"protocolVersion":"2025-11-25","capabilities":{"tools":{"listChanged":true}},"serverInfo":{"name":"endless","version":"1"}}`)
		case req.Method == "tools/list":
			var b strings.Builder
			b.WriteString(`{"tools":[`)
			for i := range perPage {
				if i > 0 {
					b.WriteByte(',')
				}
				fmt.Fprintf(&b, `{"name":"t%d_%d","inputSchema":{"type":"object"}}`, page, i)
			}
			page++
			if loop {
				b.WriteString(`],"nextCursor":"loop"}`)
			} else {
				fmt.Fprintf(&b, `],"nextCursor":"p%d"}`, page)
			}
			replyResult(out, req.ID, b.String())
		case req.Method == "tools/call":
			replyResult(out, req.ID, `{"content":[{"type":"text","text":"ok"}]}`)
		case req.Method == "ping":
			replyResult(out, req.ID, `{}`)
		default:
			replyNoMethod(out, req)
		}
	})
}

// TestListCapped: an upstream whose tools/list pages never end (or lists
// more than maxListed tools) has its first maxListed exposed, says why in
// /health, and the gateway, its other upstreams included, goes on serving.
// Found feeding the built gateway hostile upstreams: endless pages grew it
// to 1.7 GB and stopped /health, and 100,000 tools took 38 s of catalog work
// (a linear search per tool) while every other upstream's calls waited.
func TestListCapped(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	g := newTestGateway(t, ctx, fmt.Sprintf("upstreams:\n  endless: %s\n  good: %s\n", selfUpstream(t, endlessListMode), selfUpstream(t, echoUpstreamMode)))
	h := g.Health().Upstreams["endless"]
	if h.Tools != maxListed || !strings.Contains(h.LastError, fmt.Sprintf("more than %d", maxListed)) {
		t.Errorf("endless upstream: %d tools, last_error %q; want %d and the cut reported", h.Tools, h.LastError, maxListed)
	}
	if _, _, ok := g.catalog.toolTarget("endless__t9_999"); !ok {
		t.Error("the last tool within the bound is not exposed")
	}
	if _, _, ok := g.catalog.toolTarget("endless__t10_0"); ok {
		t.Error("a tool past the bound is exposed")
	}
	a := newRawAgent(t, ctx, g)
	for _, tool := range []string{"endless__t0_0", "good__echo"} {
		r, body := a.post(ctx, fmt.Sprintf(`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":%q,"arguments":{"text":"hi"}}}`, tool))
		if r.StatusCode != 200 || strings.Contains(string(body), `"isError":true`) {
			t.Errorf("%s: %d %s", tool, r.StatusCode, body)
		}
	}
}

// TestListPagesBounded: an upstream whose tools/list pages are empty but
// never end, or that sends a cursor again, has its list ended there, says
// why in /health, and the gateway is ready (found trying the gateway from
// outside: empty pages never reached the item bound, the listing spun at
// 70% CPU, and /readyz stayed 503 for the whole gateway).
func TestListPagesBounded(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	g := newTestGateway(t, ctx, fmt.Sprintf("upstreams:\n  empty: %s\n  loop: %s\n  good: %s\n",
		selfUpstream(t, emptyPagesMode), selfUpstream(t, loopCursorMode), selfUpstream(t, echoUpstreamMode)))
	hs := g.Health().Upstreams
	if h := hs["empty"]; h.Status != StatusUp || h.Tools != 0 || !strings.Contains(h.LastError, fmt.Sprintf("more than %d pages", maxListPages)) {
		t.Errorf("empty pages: %+v; want up, no tools, the page bound reported", h)
	}
	if h := hs["loop"]; h.Status != StatusUp || h.Tools != 2 || !strings.Contains(h.LastError, "cursor it had sent before") {
		t.Errorf("looping cursor: %+v; want up, the two pages' tools, the repeated cursor reported", h)
	}
	if h := hs["good"]; h.Status != StatusUp || h.Tools == 0 {
		t.Errorf("good upstream: %+v", h)
	}
}

// TestNoTemplatesMethodIsNoError: an upstream that declares resources but
// does not serve resources/templates/list (it has no templates; the
// capability does not say) is up without an error. Found trying the
// gateway: /health kept "Method not found" as its last_error for good.
func TestNoTemplatesMethodIsNoError(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var m struct {
			ID     json.RawMessage `json:"id"`
			Method string          `json:"method"`
		}
		if json.NewDecoder(r.Body).Decode(&m) != nil || r.Method != http.MethodPost {
			http.Error(w, "no", http.StatusMethodNotAllowed)
			return
		}
		if len(m.ID) == 0 {
			w.WriteHeader(http.StatusAccepted)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		switch m.Method {
		case "initialize":
			fmt.Fprintf(w, `{"jsonrpc":"2.0","id":%s,"result":{"protocolVersion":"2025-11-25","capabilities":{"resources":{}},"serverInfo":{"name":"r","version":"1"}}}`, m.ID)
		case "resources/list":
			fmt.Fprintf(w, `{"jsonrpc":"2.0","id":%s,"result":{"resources":[{"uri":"file:///a","name":"a"}]}}`, m.ID)
		case "ping":
			fmt.Fprintf(w, `{"jsonrpc":"2.0","id":%s,"result":{}}`, m.ID)
		default:
			fmt.Fprintf(w, `{"jsonrpc":"2.0","id":%s,"error":{"code":-32601,"message":"Method not found"}}`, m.ID)
		}
	}))
	defer hs.Close()
	g := newTestGateway(t, ctx, fmt.Sprintf("upstreams:\n  r: {url: %s, protocol_version: 2025-11-25}\n", hs.URL))
	waitFor(t, ctx, func() bool { return g.Health().Upstreams["r"].Resources == 1 })
	if uh := g.Health().Upstreams["r"]; uh.Status != StatusUp || uh.LastError != "" {
		t.Errorf("health = %s, %q; want up without an error", uh.Status, uh.LastError)
	}
}
