package gateway

import (
	"context"
	"fmt"
	"net/url"
	"reflect"
	"strings"
	"sync"

	"github.com/modelcontextprotocol/go-sdk/mcp"
	"github.com/yosida95/uritemplate/v3"

	"github.com/credgate/credgate/routing"
)

// catalog merges every upstream's offer into the downstream server. It
// recomputes the whole mapping from the upstreams' last listings, in config
// order, whenever one changes, and applies only the difference, so the result
// never depends on which upstream connected first.
type catalog struct {
	g *Server

	mu        sync.RWMutex
	tools     map[string]entry[*mcp.Tool]
	prompts   map[string]entry[*mcp.Prompt]
	resources map[string]entry[*mcp.Resource]         // by exposed URI
	templates map[string]entry[*mcp.ResourceTemplate] // by URI template
	matchers  []templateMatcher
	problems  map[string][]Problem // by upstream
}

// entry is an exposed item: the upstream's own definition and who serves it.
type entry[T any] struct {
	upstream string
	orig     T // the upstream's definition, compared to detect changes
}

type templateMatcher struct {
	re       *uritemplate.Template
	upstream string
}

// Problem is something an upstream offered that the gateway could not expose
// as is; it is logged and shown in health.
type Problem struct {
	Kind    string `json:"kind"` // tool, prompt, resource, resource_template
	Name    string `json:"name"`
	Exposed string `json:"exposed,omitempty"`
	Reason  string `json:"reason"`
}

func newCatalog(g *Server) *catalog {
	return &catalog{g: g, tools: map[string]entry[*mcp.Tool]{}, prompts: map[string]entry[*mcp.Prompt]{},
		resources: map[string]entry[*mcp.Resource]{}, templates: map[string]entry[*mcp.ResourceTemplate]{},
		problems: map[string][]Problem{}}
}

// rebuild recomputes the exposed catalog and applies the difference to the
// downstream server.
func (c *catalog) rebuild() {
	c.mu.Lock()
	defer c.mu.Unlock()
	g := c.g
	sep := g.cfg.ToolSeparator
	cats := make(map[string]upstreamCatalog, len(g.upstreams))
	var toolSrc, promptSrc []routing.Source
	for _, u := range g.upstreams {
		cat := u.catalog()
		cats[u.name] = cat
		prefix := u.cfg.prefix(u.name)
		ts := routing.Source{Upstream: u.name, Prefix: prefix}
		for _, t := range cat.tools {
			ts.Names = append(ts.Names, t.Name)
		}
		ps := routing.Source{Upstream: u.name, Prefix: prefix}
		for _, p := range cat.prompts {
			ps.Names = append(ps.Names, p.Name)
		}
		toolSrc, promptSrc = append(toolSrc, ts), append(promptSrc, ps)
	}
	problems := map[string][]Problem{}
	report := func(up string, p Problem) {
		problems[up] = append(problems[up], p)
	}

	// Tools.
	toolTable := routing.Build(sep, toolSrc)
	for _, p := range toolTable.Problems {
		report(p.Upstream, Problem{Kind: "tool", Name: p.Name, Exposed: p.Exposed, Reason: p.Reason})
	}
	want := map[string]entry[*mcp.Tool]{}
	for exposed, t := range toolTable.Targets {
		want[exposed] = entry[*mcp.Tool]{upstream: t.Upstream, orig: findTool(cats[t.Upstream].tools, t.Name)}
	}
	var remove []string
	for name, have := range c.tools {
		if w, ok := want[name]; !ok || w.upstream != have.upstream {
			remove = append(remove, name)
			delete(c.tools, name)
		}
	}
	if len(remove) > 0 {
		g.mcp.RemoveTools(remove...)
	}
	for name, w := range want {
		if have, ok := c.tools[name]; ok && reflect.DeepEqual(have.orig, w.orig) {
			continue
		}
		if err := c.addTool(name, w); err != nil {
			report(w.upstream, Problem{Kind: "tool", Name: w.orig.Name, Exposed: name, Reason: err.Error()})
			if _, ok := c.tools[name]; ok {
				g.mcp.RemoveTools(name)
				delete(c.tools, name)
			}
			continue
		}
		c.tools[name] = w
	}

	// Prompts.
	promptTable := routing.Build(sep, promptSrc)
	for _, p := range promptTable.Problems {
		report(p.Upstream, Problem{Kind: "prompt", Name: p.Name, Exposed: p.Exposed, Reason: p.Reason})
	}
	wantP := map[string]entry[*mcp.Prompt]{}
	for exposed, t := range promptTable.Targets {
		wantP[exposed] = entry[*mcp.Prompt]{upstream: t.Upstream, orig: findPrompt(cats[t.Upstream].prompts, t.Name)}
	}
	remove = remove[:0]
	for name, have := range c.prompts {
		if w, ok := wantP[name]; !ok || w.upstream != have.upstream {
			remove = append(remove, name)
			delete(c.prompts, name)
		}
	}
	if len(remove) > 0 {
		g.mcp.RemovePrompts(remove...)
	}
	for name, w := range wantP {
		if have, ok := c.prompts[name]; ok && reflect.DeepEqual(have.orig, w.orig) {
			continue
		}
		p := *w.orig
		p.Name = name
		g.mcp.AddPrompt(&p, g.promptHandler(g.byName[w.upstream], w.orig.Name))
		c.prompts[name] = w
	}

	// Resources keep their URIs; a URI offered twice is served by the first
	// upstream in config order and exposed under a gateway URI for the others.
	wantR := map[string]entry[*mcp.Resource]{}
	for _, u := range g.upstreams {
		for _, r := range cats[u.name].resources {
			uri := r.URI
			if prev, ok := wantR[uri]; ok {
				alt := aliasURI(u.name, r.URI)
				report(u.name, Problem{Kind: "resource", Name: r.URI, Exposed: alt,
					Reason: fmt.Sprintf("URI is also offered by upstream %q; exposed as %s", prev.upstream, alt)})
				uri = alt
			}
			if _, err := url.Parse(uri); err != nil || !strings.Contains(uri, ":") {
				report(u.name, Problem{Kind: "resource", Name: r.URI, Reason: "not an absolute URI"})
				continue
			}
			wantR[uri] = entry[*mcp.Resource]{upstream: u.name, orig: r}
		}
	}
	remove = remove[:0]
	for uri, have := range c.resources {
		if w, ok := wantR[uri]; !ok || w.upstream != have.upstream {
			remove = append(remove, uri)
			delete(c.resources, uri)
		}
	}
	if len(remove) > 0 {
		g.mcp.RemoveResources(remove...)
	}
	for uri, w := range wantR {
		if have, ok := c.resources[uri]; ok && reflect.DeepEqual(have.orig, w.orig) {
			continue
		}
		r := *w.orig
		r.URI = uri
		if err := safely(func() { g.mcp.AddResource(&r, g.resourceHandler(g.byName[w.upstream], w.orig.URI)) }); err != nil {
			report(w.upstream, Problem{Kind: "resource", Name: w.orig.URI, Reason: err.Error()})
			continue
		}
		c.resources[uri] = w
	}

	// Resource templates: first in config order wins.
	wantT := map[string]entry[*mcp.ResourceTemplate]{}
	var matchers []templateMatcher
	for _, u := range g.upstreams {
		for _, t := range cats[u.name].templates {
			if prev, ok := wantT[t.URITemplate]; ok {
				report(u.name, Problem{Kind: "resource_template", Name: t.URITemplate,
					Reason: fmt.Sprintf("template is also offered by upstream %q, which serves it", prev.upstream)})
				continue
			}
			re, err := uritemplate.New(t.URITemplate)
			if err != nil {
				report(u.name, Problem{Kind: "resource_template", Name: t.URITemplate, Reason: fmt.Sprintf("invalid URI template: %v", err)})
				continue
			}
			wantT[t.URITemplate] = entry[*mcp.ResourceTemplate]{upstream: u.name, orig: t}
			matchers = append(matchers, templateMatcher{re: re, upstream: u.name})
		}
	}
	remove = remove[:0]
	for tpl, have := range c.templates {
		if w, ok := wantT[tpl]; !ok || w.upstream != have.upstream {
			remove = append(remove, tpl)
			delete(c.templates, tpl)
		}
	}
	if len(remove) > 0 {
		g.mcp.RemoveResourceTemplates(remove...)
	}
	for tpl, w := range wantT {
		if have, ok := c.templates[tpl]; ok && reflect.DeepEqual(have.orig, w.orig) {
			continue
		}
		t := *w.orig
		if err := safely(func() { g.mcp.AddResourceTemplate(&t, g.resourceHandler(g.byName[w.upstream], "")) }); err != nil {
			report(w.upstream, Problem{Kind: "resource_template", Name: tpl, Reason: err.Error()})
			delete(wantT, tpl)
			continue
		}
		c.templates[tpl] = w
	}
	c.matchers = matchers

	for up, ps := range problems {
		if !reflect.DeepEqual(c.problems[up], ps) {
			for _, p := range ps {
				g.log.Warn().Str(fieldUpstream, up).Str("kind", p.Kind).Str("name", p.Name).Str("reason", p.Reason).Msg("cannot expose as offered")
			}
		}
	}
	c.problems = problems
}

// addTool registers an upstream tool under its exposed name. The SDK panics on
// schemas it cannot accept (no "type":"object"); such a tool is reported, and
// the rest of the catalog is unaffected.
func (c *catalog) addTool(name string, w entry[*mcp.Tool]) error {
	t := *w.orig
	t.Name = name
	if t.InputSchema == nil {
		return fmt.Errorf("tool %q has no input schema", w.orig.Name)
	}
	return safely(func() { c.g.mcp.AddTool(&t, c.g.toolHandler(c.g.byName[w.upstream], w.orig.Name)) })
}

// safely runs f, turning a panic into an error.
func safely(f func()) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("%v", r)
		}
	}()
	f()
	return nil
}

// aliasURI is the gateway URI of a resource whose URI another upstream already
// serves.
func aliasURI(upstream, uri string) string {
	return "credgate://" + upstream + "/" + url.PathEscape(uri)
}

func findTool(ts []*mcp.Tool, name string) *mcp.Tool {
	for _, t := range ts {
		if t.Name == name {
			return t
		}
	}
	return nil
}

func findPrompt(ps []*mcp.Prompt, name string) *mcp.Prompt {
	for _, p := range ps {
		if p.Name == name {
			return p
		}
	}
	return nil
}

// promptTarget returns the upstream and original name of an exposed prompt.
func (c *catalog) promptTarget(exposed string) (*upstream, string, bool) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	e, ok := c.prompts[exposed]
	if !ok {
		return nil, "", false
	}
	return c.g.byName[e.upstream], e.orig.Name, true
}

// resourceTarget returns the upstream and original URI for an exposed
// resource URI or a URI matching a template.
func (c *catalog) resourceTarget(uri string) (*upstream, string, bool) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	if e, ok := c.resources[uri]; ok {
		return c.g.byName[e.upstream], e.orig.URI, true
	}
	if e, ok := c.templates[uri]; ok { // completion refers to templates by their template string
		return c.g.byName[e.upstream], uri, true
	}
	for _, m := range c.matchers {
		if m.re.Regexp().MatchString(uri) {
			return c.g.byName[m.upstream], uri, true
		}
	}
	return nil, "", false
}

// exposedURI maps an upstream's resource URI to the URI agents know it by.
func (c *catalog) exposedURI(upstream, uri string) string {
	c.mu.RLock()
	defer c.mu.RUnlock()
	if e, ok := c.resources[uri]; ok && e.upstream == upstream {
		return uri
	}
	if alias := aliasURI(upstream, uri); c.resources[alias].upstream == upstream {
		return alias
	}
	return uri
}

func (c *catalog) resourceUpdated(ctx context.Context, upstream string, p *mcp.ResourceUpdatedNotificationParams) {
	q := *p
	q.URI = c.exposedURI(upstream, p.URI)
	_ = c.g.mcp.ResourceUpdated(ctx, &q)
}

// problemsOf returns what upstream offered that could not be exposed.
func (c *catalog) problemsOf(upstream string) []Problem {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.problems[upstream]
}

// toolCount returns how many tools upstream has exposed.
func (c *catalog) toolCount(upstream string) int {
	c.mu.RLock()
	defer c.mu.RUnlock()
	n := 0
	for _, e := range c.tools {
		if e.upstream == upstream {
			n++
		}
	}
	return n
}

func (c *catalog) hasTool(name string) bool {
	c.mu.RLock()
	defer c.mu.RUnlock()
	_, ok := c.tools[name]
	return ok
}

func (c *catalog) hasPrompt(name string) bool {
	c.mu.RLock()
	defer c.mu.RUnlock()
	_, ok := c.prompts[name]
	return ok
}
