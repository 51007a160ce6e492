package gateway

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// listedTools returns the tool names and descriptions of a tools/list
// answer (JSON or one SSE event).
func listedTools(t *testing.T, body string) map[string]string {
	t.Helper()
	payload := body
	if i := strings.Index(body, "data: "); i >= 0 {
		payload, _, _ = strings.Cut(body[i+len("data: "):], "\n")
	}
	var msg struct {
		Result struct {
			Tools []struct{ Name, Description string }
		}
	}
	if err := json.Unmarshal([]byte(payload), &msg); err != nil {
		t.Fatalf("tools/list answer %q: %v", body, err)
	}
	out := map[string]string{}
	for _, tool := range msg.Result.Tools {
		out[tool.Name] = tool.Description
	}
	return out
}

// TestToolsListPagesFollowChanges: the encoded tools/list pages the
// gateway keeps (issue 12) are never served stale: a tool whose upstream
// changes it is listed as it is now, to an agent that listed it before.
func TestToolsListPagesFollowChanges(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	srv := mcp.NewServer(&mcp.Implementation{Name: "changing", Version: "1"}, nil)
	handler := func(context.Context, *mcp.CallToolRequest) (*mcp.CallToolResult, error) {
		return &mcp.CallToolResult{}, nil
	}
	schema := json.RawMessage(`{"type":"object"}`)
	srv.AddTool(&mcp.Tool{Name: "t", Description: "first version", InputSchema: schema}, handler)
	srv.AddTool(&mcp.Tool{Name: "u", Description: "stays", InputSchema: schema}, handler)
	g := newTestGateway(t, ctx, fmt.Sprintf("upstreams:\n  a: {url: %s}\n", serveMCP(t, srv)))
	a := newRawAgent(t, ctx, g)
	list := func() map[string]string {
		_, body := a.post(ctx, `{"jsonrpc":"2.0","id":2,"method":"tools/list","params":{}}`)
		return listedTools(t, string(body))
	}
	for range 2 { // the second is served from the kept page
		if got := list(); got["a__t"] != "first version" || got["a__u"] != "stays" {
			t.Fatalf("tools/list = %v; want a__t's first version and a__u", got)
		}
	}
	if n := g.lists.hits.Load(); n != 1 {
		t.Errorf("%d of two listings of the same page served from the cache; want 1", n)
	}
	srv.AddTool(&mcp.Tool{Name: "t", Description: "second version", InputSchema: schema}, handler)
	waitFor(t, ctx, func() bool { return list()["a__t"] == "second version" })
	srv.RemoveTools("u")
	waitFor(t, ctx, func() bool { _, ok := list()["a__u"]; return !ok })
	if got := list(); !maps.Equal(got, map[string]string{"a__t": "second version"}) {
		t.Errorf("tools/list after the changes = %v; want a__t's second version only", got)
	}
}

// TestToolsListPagesPerAgent: agents whose grants differ get their own
// tools/list pages, each time, though pages are kept encoded (issue 12).
func TestToolsListPagesPerAgent(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	up := newTestUpstream(t, "a", "echo", "list_x", "delete_y")
	g := newTestGateway(t, ctx, fmt.Sprintf(`
upstreams:
  a: {url: %s}
auth:
  keys:
    - {name: reader, key: %s, tools: {allow: ["a__echo"]}}
    - {name: lister, key: %s, tools: {allow: ["a__list_*"]}}
    - {name: ops, key: %s}
`, up.url(), keyReader, keyNobody, keyOps))
	hs := httptest.NewServer(g.Handler())
	t.Cleanup(hs.Close)
	url := hs.URL + "/mcp"
	agents := []struct {
		name, key, session string
		want               []string
	}{
		{"reader", keyReader, "", []string{"a__echo"}},
		{"lister", keyNobody, "", []string{"a__list_x"}},
		{"ops", keyOps, "", []string{"a__delete_y", "a__echo", "a__list_x"}},
	}
	for i, a := range agents {
		_, hdr, _ := postMCP(t, ctx, url, "Bearer "+a.key, "", initializeBody)
		agents[i].session = hdr.Get("Mcp-Session-Id")
		postMCP(t, ctx, url, "Bearer "+a.key, agents[i].session, `{"jsonrpc":"2.0","method":"notifications/initialized"}`)
	}
	for round := range 3 { // from the second, the pages are the kept ones
		for _, a := range agents {
			_, _, body := postMCP(t, ctx, url, "Bearer "+a.key, a.session, `{"jsonrpc":"2.0","id":3,"method":"tools/list","params":{}}`)
			if got := slices.Sorted(maps.Keys(listedTools(t, body))); !slices.Equal(got, a.want) {
				t.Errorf("round %d: agent %s lists %v; want %v", round, a.name, got, a.want)
			}
		}
	}
}

// TestListCacheBounded: the kept pages stay within their bounds, however
// many different pages agents list, and a page is served only for the
// very tools it was made from.
func TestListCacheBounded(t *testing.T) {
	t.Parallel()
	c := newListCache()
	encodes := 0
	big := strings.Repeat("x", 300<<10)
	tool := func(i int) *mcp.Tool { return &mcp.Tool{Name: fmt.Sprint("t", i), Description: big} }
	for i := range 500 {
		r := &mcp.ListToolsResult{Tools: []*mcp.Tool{tool(i)}}
		data, err := c.encoding(r, pageForm{}, func() ([]byte, error) { encodes++; return json.Marshal(r) })
		if err != nil || !strings.Contains(string(data), fmt.Sprintf(`"t%d"`, i)) {
			t.Fatalf("page %d: %v %.40s", i, err, data)
		}
		if c.bytes > listCacheBytes || c.pages.len() > listCachePages {
			t.Fatalf("after %d pages the cache holds %d pages, %d bytes; bounds are %d, %d", i+1, c.pages.len(), c.bytes, listCachePages, listCacheBytes)
		}
	}
	if encodes != 500 {
		t.Errorf("%d encodings for 500 different pages", encodes)
	}
	// The same tools again: kept. Equal tools at other addresses: not.
	same := []*mcp.Tool{tool(1000)}
	for _, tools := range [][]*mcp.Tool{same, same, {tool(1000)}} {
		r := &mcp.ListToolsResult{Tools: tools}
		_, _ = c.encoding(r, pageForm{}, func() ([]byte, error) { encodes++; return json.Marshal(r) })
	}
	if encodes != 502 {
		t.Errorf("%d encodings for one page listed twice and an equal one; want 502", encodes)
	}
	// The same tools under another cursor: another page.
	r := &mcp.ListToolsResult{Tools: same, NextCursor: "next"}
	data, _ := c.encoding(r, pageForm{}, func() ([]byte, error) { encodes++; return json.Marshal(r) })
	if encodes != 503 || !strings.Contains(string(data), `"nextCursor":"next"`) {
		t.Errorf("a page with another cursor was served from the cache: %.60s", data)
	}
	var total int
	for _, e := range c.pages.items {
		total += len(e.Value.(*lruEntry[uint64, *listPage]).val.data)
	}
	if total != c.bytes {
		t.Errorf("the cache counts %d bytes and holds %d", c.bytes, total)
	}
}

// TestRelistedCachedToolsRedacted: a tool a 2026-07-28 upstream lets its
// client cache (ttlMs) comes back from a relisting as the very object
// listed before; a value that became a secret since (a rotation) is
// redacted in it all the same. The gateway redacted that object in place,
// so the comparison that finds changed tools compared it with itself, and
// agents kept seeing the secret.
func TestRelistedCachedToolsRedacted(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	const next = "rotated-secret-0123456789"
	srv := mcp.NewServer(&mcp.Implementation{Name: "ttl", Version: "1"}, &mcp.ServerOptions{
		SetCacheable: func(_ context.Context, _ mcp.Request, c *mcp.Cacheable) { c.TTLMs = 600000 },
	})
	handler := func(context.Context, *mcp.CallToolRequest) (*mcp.CallToolResult, error) {
		return &mcp.CallToolResult{}, nil
	}
	srv.AddTool(&mcp.Tool{Name: "t", Description: "key " + next, InputSchema: json.RawMessage(`{"type":"object"}`),
		Annotations: &mcp.ToolAnnotations{Title: "title " + next}}, handler)
	srv.AddPrompt(&mcp.Prompt{Name: "p"}, func(context.Context, *mcp.GetPromptRequest) (*mcp.GetPromptResult, error) {
		return &mcp.GetPromptResult{}, nil
	})
	path := tokenFile(t, "first-secret-0123456789")
	g, cs, _ := credGateway(t, ctx, fmt.Sprintf(`
credentials:
  tok: {source: {file: %s}}
upstreams:
  a: {url: %s, credential: tok, protocol_version: "2026-07-28"}
`, path, serveStateless(t, srv)), nil, nil)
	exposed := func() (string, string) {
		res, err := cs.ListTools(ctx, nil)
		if err != nil || len(res.Tools) != 1 {
			t.Fatalf("tools/list: %v %v", res, err)
		}
		title := ""
		if a := res.Tools[0].Annotations; a != nil {
			title = a.Title
		}
		return res.Tools[0].Description, title
	}
	if d, _ := exposed(); d != "key "+next {
		t.Fatalf("description before the rotation = %q", d)
	}
	writeFile(t, path, next)
	waitFor(t, ctx, func() bool { return g.Credentials().Get("tok").Value() == next })
	if v := g.upstream("a").session.Load().InitializeResult().ProtocolVersion; v != "2026-07-28" {
		t.Fatalf("the upstream speaks %s; the client caches lists from 2026-07-28 on", v)
	}
	// A change of prompts: the gateway lists again, tools from the client's cache.
	srv.AddPrompt(&mcp.Prompt{Name: "q"}, func(context.Context, *mcp.GetPromptRequest) (*mcp.GetPromptResult, error) {
		return &mcp.GetPromptResult{}, nil
	})
	waitFor(t, ctx, func() bool { return g.catalog.hasPrompt("a__q") })
	waitFor(t, ctx, func() bool { d, title := exposed(); return !strings.Contains(d+title, next) })
}

// serveStateless serves s over streamable HTTP without sessions until the
// test ends and returns its endpoint.
func serveStateless(t testing.TB, s *mcp.Server) string {
	t.Helper()
	hs := httptest.NewServer(mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return s }, &mcp.StreamableHTTPOptions{Stateless: true}))
	t.Cleanup(hs.Close)
	return hs.URL + "/mcp"
}

// TestListsPrivateWithAgentAuth: with agent authentication each agent's
// lists are its own, so they are marked cacheScope "private" for
// 2026-07-28 agents; the SDK's default, "public", let an intermediary
// serve one agent's list to another. Without it they stay public.
func TestListsPrivateWithAgentAuth(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	up := newTestUpstream(t, "a", "echo", "list_x")
	for _, tc := range []struct {
		auth, key, want string
	}{
		{"", "", `"cacheScope":"public"`},
		{fmt.Sprintf("auth: {keys: [{name: reader, key: %s, tools: {allow: [a__echo]}}]}\n", keyReader), keyReader, `"cacheScope":"private"`},
	} {
		g := newTestGateway(t, ctx, tc.auth+fmt.Sprintf("stateless: true\nupstreams:\n  a: {url: %s}\n", up.url()))
		hs := httptest.NewServer(g.Handler())
		t.Cleanup(hs.Close)
		code, body := statelessList(t, ctx, hs.URL+"/mcp", "2026-07-28", `"_meta":{`+newRequestMeta+`}`, tc.key)
		if !strings.Contains(string(body), tc.want) {
			t.Errorf("auth %q: tools/list answered %d %.300s; want %s", tc.auth, code, body, tc.want)
		}
	}
}

// TestListsAsTheSDKWrites: tools/list pages, kept or not, older agents' and
// 2026-07-28 agents', carry what the upstream wrote as the SDK writes it:
// "<" and "&" as they are (not "\u003c"), and for 2026-07-28 the SDK's
// annotation and cache hints; the kept page is the same bytes as the first.
func TestListsAsTheSDKWrites(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	srv := mcp.NewServer(&mcp.Implementation{Name: "html", Version: "1"}, nil)
	srv.AddTool(&mcp.Tool{Name: "t", Description: "returns <b>bold</b> & more", InputSchema: json.RawMessage(`{"type":"object"}`)},
		func(context.Context, *mcp.CallToolRequest) (*mcp.CallToolResult, error) {
			return &mcp.CallToolResult{}, nil
		})
	g := newTestGateway(t, ctx, fmt.Sprintf("stateless: true\nupstreams:\n  a: {url: %s}\n", serveMCP(t, srv)))
	hs := httptest.NewServer(g.Handler())
	t.Cleanup(hs.Close)
	list := func(version, meta string) string {
		_, body := statelessList(t, ctx, hs.URL+"/mcp", version, meta, "")
		return body
	}
	for _, tc := range []struct {
		version, meta string
		want, not     []string
	}{
		{"2025-11-25", "", []string{"returns <b>bold</b> & more"}, []string{"ttlMs", "resultType", "serverInfo"}},
		{"2026-07-28", `"_meta":{` + newRequestMeta + `}`, []string{"returns <b>bold</b> & more", `"resultType":"complete"`, `"ttlMs":`, `"cacheScope":"public"`, `"` + mcp.MetaKeyServerInfo + `":{"name":"credgate"`}, nil},
	} {
		hits := g.lists.hits.Load()
		first := list(tc.version, tc.meta)
		second := list(tc.version, tc.meta)
		for _, w := range tc.want {
			if !strings.Contains(first, w) {
				t.Errorf("%s: tools/list %.400s; want %s in it", tc.version, first, w)
			}
		}
		for _, n := range tc.not {
			if strings.Contains(first, n) {
				t.Errorf("%s: tools/list %.400s; want no %s", tc.version, first, n)
			}
		}
		if first != second {
			t.Errorf("%s: the kept page differs from the first:\n%s\n%s", tc.version, first, second)
		}
		if n := g.lists.hits.Load() - hits; n != 1 {
			t.Errorf("%s: %d of two listings served from the cache; want 1", tc.version, n)
		}
	}
}

// statelessList sends a sessionless tools/list of protocol version with
// params members (JSON, without braces) and, if key is set, the agent's
// key; it returns the status and the body.
func statelessList(t *testing.T, ctx context.Context, url, version, params, key string) (int, string) {
	t.Helper()
	h := map[string]string{}
	if key != "" {
		h["Authorization"] = "Bearer " + key
	}
	return statelessPost(t, ctx, url, version, "tools/list", params, h)
}

// statelessPost sends a sessionless request of method and protocol version
// with params members (JSON, without braces) and extra headers; it returns
// the status and the body.
func statelessPost(t *testing.T, ctx context.Context, url, version, method, params string, header map[string]string) (int, string) {
	t.Helper()
	h := map[string]string{"Content-Type": "application/json", "Accept": "application/json, text/event-stream",
		"Mcp-Protocol-Version": version, "Mcp-Method": method}
	maps.Copy(h, header)
	return post(t, url, h, `{"jsonrpc":"2.0","id":2,"method":"`+method+`","params":{`+params+`}}`)
}
