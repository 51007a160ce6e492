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
	"fmt"
	"regexp"
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
	var b strings.Builder
	for _, u := range snap.upstreams {
		text := u.catalog().instructions
		if text == "" || !visible[u.name] {
			continue
		}
		if b.Len() == 0 {
			b.WriteString("This server is credgate, a gateway to several MCP servers. The instructions of each follow, " +
				"between <instructions> tags naming the server and how its tools and prompts are named here: " +
				"read the names its instructions use with that prefix.\n")
		}
		names := "<name>" // prefix "": the upstream's own names
		if p := u.cfg.prefix(u.name); p != "" {
			names = p + snap.cfg.ToolSeparator + "<name>"
		}
		fmt.Fprintf(&b, "\n<instructions upstream=%q names=%q>\n%s\n</instructions>\n", u.name, names, fenced(text))
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

// tagLike matches what could open or close an <instructions> tag.
var tagLike = regexp.MustCompile(`(?i)<(/?\s*instructions)`)

// fenced returns an upstream's instructions with anything that could pass
// for the gateway's own <instructions> tags spelled harmless (&lt;): an
// upstream cannot close its section and open one in another's name.
func fenced(text string) string {
	return tagLike.ReplaceAllString(text, "&lt;$1")
}
