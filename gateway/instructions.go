package gateway

// An upstream's instructions (its initialize result's "instructions": how
// to use the server and its tools, which clients add to the model's
// context) reach the agent through the gateway: the gateway's initialize
// (and 2026-07-28 server/discover) result carries those of every upstream
// the agent can see, each under a heading that names it and the prefix its
// tools and prompts carry here. Found trying the gateway from outside: an
// agent that moved behind it lost them.

import (
	"context"
	"crypto/rand"
	"fmt"
	"strings"
	"unicode/utf8"

	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// maxInstructions bounds one upstream's instructions as the agent gets
// them: they go into a model's context with every session, and an upstream
// may send any length.
const maxInstructions = 8 << 10

// boundInstructions returns s cut to maxInstructions bytes, at a rune
// boundary, with a mark saying so.
func boundInstructions(s string) string {
	s = strings.TrimSpace(s)
	if len(s) <= maxInstructions {
		return s
	}
	cut := maxInstructions
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "\n[… cut by credgate at 8 KiB]"
}

// federateInstructions is a receiving middleware: an initialize or
// server/discover result the gateway's SDK made gets the instructions of
// the upstreams the agent can see (instructionsFor).
func (g *Server) federateInstructions(next mcp.MethodHandler) mcp.MethodHandler {
	return func(ctx context.Context, method string, req mcp.Request) (mcp.Result, error) {
		res, err := next(ctx, method, req)
		if err != nil {
			return res, err
		}
		switch r := res.(type) {
		case *mcp.InitializeResult:
			if r.Instructions == "" {
				r.Instructions = g.instructionsFor(req)
			}
		case *mcp.DiscoverResult:
			if r.Instructions == "" {
				r.Instructions = g.instructionsFor(req)
			}
		}
		return res, err
	}
}

// instructionsFor returns the instructions of the upstreams in force that
// req's agent can see something of (a tool, prompt, resource or template
// the gateway exposes and the agent's policy, if any, lets it see), in
// config order, or "" if none has any.
func (g *Server) instructionsFor(req mcp.Request) string {
	snap := g.snap.Load()
	var st *agentState
	if info := requestAgent(req); info != nil {
		st = g.policy.Load().state(info)
	}
	visible := g.catalog.seenBy(st)
	// Each section is tagged with a name made for this answer, which no
	// upstream can know, so none can close its own section and open one in
	// another's name (an upstream's text is the upstream's to write).
	var b strings.Builder
	var tag string
	for _, u := range snap.upstreams {
		text := u.catalog().instructions
		if text == "" || !visible[u.name] {
			continue
		}
		if b.Len() == 0 {
			tag = "instructions-" + rand.Text()[:8]
			fmt.Fprintf(&b, "This server is credgate, a gateway to several MCP servers. The instructions of each follow, "+
				"each between <%s> and </%s>, with the server's name and how its tools and prompts are named here: "+
				"read the names its instructions use with that prefix. Nothing else closes a server's section.\n", tag, tag)
		}
		names := "<name>" // prefix "": the upstream's own names
		if p := u.cfg.prefix(u.name); p != "" {
			names = p + snap.cfg.ToolSeparator + "<name>"
		}
		fmt.Fprintf(&b, "\n<%s upstream=%q names=%q>\n%s\n</%s>\n", tag, u.name, names, text, tag)
	}
	return g.redactor.RedactKnown(b.String())
}

// seenBy returns the upstreams that serve an exposed tool, prompt,
// resource or template the agent of st may see (any, for st nil).
func (c *catalog) seenBy(st *agentState) map[string]bool {
	tool := func(string) bool { return true }
	resource := tool
	if st != nil {
		tool, resource = st.tool, st.resource
	}
	c.mu.RLock()
	defer c.mu.RUnlock()
	out := map[string]bool{}
	for name, e := range c.tools {
		if !out[e.upstream] && tool(name) {
			out[e.upstream] = true
		}
	}
	for name, e := range c.prompts {
		if !out[e.upstream] && tool(name) {
			out[e.upstream] = true
		}
	}
	for uri, e := range c.resources {
		if !out[e.upstream] && resource(uri) {
			out[e.upstream] = true
		}
	}
	for tmpl, e := range c.templates {
		if !out[e.upstream] && resource(tmpl) {
			out[e.upstream] = true
		}
	}
	return out
}
