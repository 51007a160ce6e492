package gateway

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// linkerMode makes the test binary a raw stdio upstream that offers
// resources but lists none: its tool "link" answers a resource_link to
// mem://unlisted/<LINKER_NAME>, and it reads any URI as "<LINKER_NAME>:<uri>".
const linkerMode = "linker"

func linkerUpstream() {
	name := os.Getenv("LINKER_NAME")
	serveRaw(func(out *bufio.Writer, req childRequest, err error) {
		switch {
		case err != nil:
		case req.Method == "initialize":
			replyResult(out, req.ID, `{"protocolVersion":"2025-11-25","capabilities":{"tools":{},"resources":{}},"serverInfo":{"name":"linker","version":"1"}}`)
		case req.Method == "tools/list":
			replyResult(out, req.ID, `{"tools":[{"name":"link","inputSchema":{"type":"object"}}]}`)
		case req.Method == "tools/call":
			replyResult(out, req.ID, fmt.Sprintf(`{"content":[{"type":"resource_link","uri":"mem://unlisted/%s","name":"doc"}]}`, name))
		case req.Method == "resources/list":
			replyResult(out, req.ID, `{"resources":[]}`)
		case req.Method == "resources/templates/list":
			replyResult(out, req.ID, `{"resourceTemplates":[]}`)
		case req.Method == "resources/read":
			var p struct{ URI string }
			_ = json.Unmarshal(req.Params, &p)
			text, _ := json.Marshal(name + ":" + p.URI)
			uri, _ := json.Marshal(p.URI)
			replyResult(out, req.ID, fmt.Sprintf(`{"contents":[{"uri":%s,"text":%s}]}`, uri, text))
		case req.Method == "ping":
			replyResult(out, req.ID, `{}`)
		default:
			replyNoMethod(out, req)
		}
	})
}

// TestResourceLinksFollowed: a resource_link in a tool's result to a URI
// its server does not list is read from that server, though several
// upstreams offer resources (it was refused: the gateway could not tell
// whose it was).
func TestResourceLinksFollowed(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	g := newTestGateway(t, ctx, fmt.Sprintf("upstreams:\n  a: %s\n  b: %s\n",
		selfUpstream(t, linkerMode, "LINKER_NAME", "a"), selfUpstream(t, linkerMode, "LINKER_NAME", "b")))
	cs := agent(t, ctx, g, nil)
	for _, up := range []string{"b", "a"} {
		uri := "mem://unlisted/" + up
		if _, err := cs.ReadResource(ctx, &mcp.ReadResourceParams{URI: uri}); err == nil {
			t.Errorf("%s read before any result linked it; want refused (two upstreams offer resources)", uri)
		}
		res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: up + "__link", Arguments: map[string]any{}})
		if err != nil || res.IsError || len(res.Content) != 1 {
			t.Fatalf("%s__link: %v %v", up, mustJSON(t, res), err)
		}
		link, ok := res.Content[0].(*mcp.ResourceLink)
		if !ok || link.URI != uri {
			t.Fatalf("%s__link content %s; want a link to %s", up, mustJSON(t, res.Content), uri)
		}
		read, err := cs.ReadResource(ctx, &mcp.ReadResourceParams{URI: link.URI})
		if err != nil || len(read.Contents) != 1 || read.Contents[0].Text != up+":"+uri {
			t.Errorf("reading the link %s: %s, %v; want it read from %s", uri, mustJSON(t, read), err, up)
		}
	}
	if n := strings.Count(fmt.Sprint(g.links.up), "mem://"); n != 2 {
		t.Errorf("%d links remembered; want 2", n)
	}
}

// TestLinkIndexBounded: the remembered links are bounded, the oldest going
// first, and a URI too long is not remembered.
func TestLinkIndexBounded(t *testing.T) {
	t.Parallel()
	var l linkIndex
	for i := range maxLinks + 10 {
		l.note(fmt.Sprintf("mem://%d", i), "a")
	}
	l.note("mem://"+strings.Repeat("x", maxLinkURI), "a")
	if len(l.up) != maxLinks || l.owner("mem://0") != "" || l.owner(fmt.Sprintf("mem://%d", maxLinks+9)) != "a" {
		t.Errorf("%d links; oldest %q, newest %q", len(l.up), l.owner("mem://0"), l.owner(fmt.Sprintf("mem://%d", maxLinks+9)))
	}
	l.note("mem://10", "b") // remembered again: moves to no new slot
	if l.owner("mem://10") != "b" || len(l.up) != maxLinks {
		t.Errorf("a URI linked again: owner %q, %d links", l.owner("mem://10"), len(l.up))
	}
}

// TestUnlistedReadAnnotated: a 2026-07-28 agent's read of a URI its server
// does not list (a resource link's) carries resultType and a cacheScope, as
// every other read does; it came back with neither (found trying the
// gateway from outside).
func TestUnlistedReadAnnotated(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	g := newTestGateway(t, ctx, fmt.Sprintf("stateless: true\nupstreams:\n  a: %s\n", selfUpstream(t, linkerMode, "LINKER_NAME", "a")))
	hs := httptest.NewServer(g.Handler())
	t.Cleanup(hs.Close)
	code, body := statelessPost(t, ctx, hs.URL+"/mcp", "2026-07-28", "resources/read",
		`"uri":"mem://unlisted/x","_meta":{`+newRequestMeta+`}`, map[string]string{"Mcp-Name": "mem://unlisted/x"})
	for _, want := range []string{`"a:mem://unlisted/x"`, `"resultType":"complete"`, `"cacheScope":"public"`} {
		if !strings.Contains(body, want) {
			t.Errorf("the read answered %d %s; want %s in it", code, body, want)
		}
	}
}
