package gateway

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"net/url"
	"reflect"
	"slices"
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
	// routed marks a routed tool (routes.go): orig is its first listed
	// target's definition, and calls are resolved by the route.
	routed bool
}

type templateMatcher struct {
	re       *uritemplate.Template
	upstream string
}

// Problem is something an upstream offered that the gateway could not expose
// as is; it is logged and shown in health.
type Problem struct {
	Kind    string `json:"kind"` // tool, prompt, resource, resource_template, capability
	Name    string `json:"name"`
	Exposed string `json:"exposed,omitempty"`
	Reason  string `json:"reason"`
}

func newCatalog(g *Server) *catalog {
	return &catalog{g: g, tools: map[string]entry[*mcp.Tool]{}, prompts: map[string]entry[*mcp.Prompt]{},
		resources: map[string]entry[*mcp.Resource]{}, templates: map[string]entry[*mcp.ResourceTemplate]{},
		problems: map[string][]Problem{}}
}

// touch has the downstream server tell every agent its tools and resources
// lists changed, when what an agent may see changed while the catalog did
// not (a reload of policies): the SDK notifies only when a list is
// changed, so one exposed tool and one resource are added again, as they
// are. (A policy reload sent no notification: found trying the gateway
// from outside.)
func (c *catalog) touch() {
	c.mu.Lock()
	defer c.mu.Unlock()
	defer c.g.lists.reset()
	if len(c.tools) > 0 {
		name := slices.Min(slices.Collect(maps.Keys(c.tools)))
		_ = c.addTool(name, c.tools[name])
	}
	if len(c.resources) > 0 {
		uri := slices.Min(slices.Collect(maps.Keys(c.resources)))
		r := *c.resources[uri].orig
		r.URI = uri
		_ = safely(func() { c.g.mcp.AddResource(&r, c.g.resourceHandler()) })
	}
}

// rebuild recomputes the exposed catalog and applies the difference to the
// downstream server.
func (c *catalog) rebuild() {
	c.mu.Lock()
	defer c.mu.Unlock()
	defer c.g.lists.reset() // the encoded pages hold the tools it replaces
	g := c.g
	// One snapshot throughout: a reload may swap it meanwhile, and then
	// rebuilds again.
	snap := g.snap.Load()
	ups, sep := snap.upstreams, snap.cfg.ToolSeparator
	cats := make(map[string]upstreamCatalog, len(ups))
	var toolSrc, promptSrc []routing.Source
	problems := map[string][]Problem{}
	report := func(up string, p Problem) {
		// Names and URIs come from the upstream, and a URI may carry a
		// credential; problems go to the log and /health.
		p.Name, p.Exposed, p.Reason = g.redact(p.Name), g.redact(p.Exposed), g.redact(p.Reason)
		problems[up] = append(problems[up], p)
	}
	for _, u := range ups {
		cat := g.withoutSecretNames(u.name, u.catalog(), report)
		cats[u.name] = cat
		prefix := u.cfg.prefix(u.name)
		toolSrc = append(toolSrc, routing.Source{Upstream: u.name, Prefix: prefix, Names: names(cat.tools, func(t *mcp.Tool) string { return t.Name })})
		promptSrc = append(promptSrc, routing.Source{Upstream: u.name, Prefix: prefix, Names: names(cat.prompts, func(p *mcp.Prompt) string { return p.Name })})
	}

	// Tools and prompts: exposed names decided by routing.
	// By name, per upstream: one lookup per exposed name, not a scan of
	// the upstream's list (quadratic: 100,000 tools took 38 s).
	toolsBy, promptsBy := map[string]map[string]*mcp.Tool{}, map[string]map[string]*mcp.Prompt{}
	for up, cat := range cats {
		toolsBy[up], promptsBy[up] = byName(cat.tools, func(t *mcp.Tool) string { return t.Name }), byName(cat.prompts, func(p *mcp.Prompt) string { return p.Name })
	}
	wantT := exposeByName(sep, toolSrc, "tool", report, func(up, name string) *mcp.Tool { return toolsBy[up][name] })
	c.routeTools(wantT, cats)
	reconcile(c.tools, wantT, "tool", report, g.mcp.RemoveTools, c.addTool, func(t *mcp.Tool) string { return t.Name })
	wantP := exposeByName(sep, promptSrc, "prompt", report, func(up, name string) *mcp.Prompt { return promptsBy[up][name] })
	reconcile(c.prompts, wantP, "prompt", report, g.mcp.RemovePrompts, func(name string, w entry[*mcp.Prompt]) error {
		p := *w.orig
		p.Name = name
		return safely(func() { g.mcp.AddPrompt(&p, g.promptHandler(name)) })
	}, func(p *mcp.Prompt) string { return p.Name })

	// Resources keep their URIs; a URI offered twice is served by the first
	// upstream in config order and exposed under a gateway URI for the others.
	wantR := map[string]entry[*mcp.Resource]{}
	for _, u := range ups {
		for _, r := range cats[u.name].resources {
			uri := r.URI
			if uri == HealthURI {
				alt := aliasURI(u.name, r.URI)
				report(u.name, Problem{Kind: "resource", Name: r.URI, Exposed: alt,
					Reason: fmt.Sprintf("URI is the gateway's own health resource; exposed as %s", alt)})
				uri = alt
			} else if prev, ok := wantR[uri]; ok {
				alt := aliasURI(u.name, r.URI)
				report(u.name, Problem{Kind: "resource", Name: r.URI, Exposed: alt,
					Reason: fmt.Sprintf("URI is also offered by upstream %q; exposed as %s", prev.upstream, alt)})
				uri = alt
			}
			wantR[uri] = entry[*mcp.Resource]{upstream: u.name, orig: r}
		}
	}
	reconcile(c.resources, wantR, "resource", report, g.mcp.RemoveResources, func(uri string, w entry[*mcp.Resource]) error {
		r := *w.orig
		r.URI = uri
		return safely(func() { g.mcp.AddResource(&r, g.resourceHandler()) })
	}, func(r *mcp.Resource) string { return r.URI })

	// Resource templates: first in config order wins.
	wantRT := map[string]entry[*mcp.ResourceTemplate]{}
	for _, u := range ups {
		for _, t := range cats[u.name].templates {
			if prev, ok := wantRT[t.URITemplate]; ok {
				report(u.name, Problem{Kind: "resource_template", Name: t.URITemplate,
					Reason: fmt.Sprintf("template is also offered by upstream %q, which serves it", prev.upstream)})
				continue
			}
			wantRT[t.URITemplate] = entry[*mcp.ResourceTemplate]{upstream: u.name, orig: t}
		}
	}
	reconcile(c.templates, wantRT, "resource_template", report, g.mcp.RemoveResourceTemplates, func(_ string, w entry[*mcp.ResourceTemplate]) error {
		if _, err := uritemplate.New(w.orig.URITemplate); err != nil {
			return fmt.Errorf("invalid URI template: %v", err)
		}
		t := *w.orig
		return safely(func() { g.mcp.AddResourceTemplate(&t, g.resourceHandler()) })
	}, func(t *mcp.ResourceTemplate) string { return t.URITemplate })
	c.matchers = c.matchers[:0]
	for _, u := range ups { // config order decides which template matches first
		for tpl, e := range c.templates {
			if e.upstream == u.name {
				re, _ := uritemplate.New(tpl)
				c.matchers = append(c.matchers, templateMatcher{re: re, upstream: u.name})
			}
		}
	}

	// Tasks: what the gateway cannot forward is reported, not hidden.
	for _, u := range ups {
		if !u.wire.declaresTasks() {
			continue
		}
		exposed := map[string]string{} // exposed -> own name
		for name, e := range c.tools {
			if e.upstream == u.name && !e.routed {
				exposed[name] = e.orig.Name
			}
		}
		taskProblems(u, exposed, report)
	}

	for up, ps := range problems {
		if !reflect.DeepEqual(c.problems[up], ps) {
			// Bounded: a hostile upstream listing one name 10,000 times
			// wrote 10,000 lines at every listing.
			for i, p := range ps {
				if i == maxProblemLines {
					g.log.Warn().Str(fieldUpstream, up).Int("more", len(ps)-i).Msg("cannot expose as offered: more problems, not logged (see /health)")
					break
				}
				g.log.Warn().Str(fieldUpstream, up).Str("kind", p.Kind).Str("name", p.Name).Str("reason", p.Reason).Msg("cannot expose as offered")
			}
		}
	}
	c.problems = problems
	g.healthChanged()
}

// withoutSecretNames returns cat without the tools and prompts whose names,
// and the resources and templates whose URIs, hold a value the gateway
// knows as a secret (as written, or percent-encoded in a URI), each
// reported. Redaction keeps names and URIs, which calls use, so without
// this an upstream could hand its credential to every agent that lists
// (found trying the gateway: a tool named after the child's token, a
// resource URI with ?access_token=). cat's slices are not changed.
func (g *Server) withoutSecretNames(up string, cat upstreamCatalog, report func(string, Problem)) upstreamCatalog {
	if !g.hasSecrets() {
		return cat
	}
	secret := func(s string) bool {
		if g.redactor.RedactKnown(s) != s {
			return true
		}
		u, err := url.PathUnescape(s)
		return err == nil && u != s && g.redactor.RedactKnown(u) != u
	}
	cat.tools = leaveOut(cat.tools, func(t *mcp.Tool) string { return t.Name }, secret, up, "tool", report)
	cat.prompts = leaveOut(cat.prompts, func(p *mcp.Prompt) string { return p.Name }, secret, up, "prompt", report)
	cat.resources = leaveOut(cat.resources, func(r *mcp.Resource) string { return r.URI }, secret, up, "resource", report)
	cat.templates = leaveOut(cat.templates, func(t *mcp.ResourceTemplate) string { return t.URITemplate }, secret, up, "resource_template", report)
	return cat
}

// leaveOut returns items without those whose id is secret, reporting each;
// items itself when none is.
func leaveOut[T any](items []T, id func(T) string, secret func(string) bool, up, kind string, report func(string, Problem)) []T {
	var kept []T
	for i, it := range items {
		if !secret(id(it)) {
			if kept != nil {
				kept = append(kept, it)
			}
			continue
		}
		if kept == nil {
			kept = append(make([]T, 0, len(items)-1), items[:i]...)
		}
		report(up, Problem{Kind: kind, Name: id(it), Reason: "holds the value of a credential: left out, as it would reach every agent that lists"})
	}
	if kept == nil {
		return items
	}
	return kept
}

// maxProblemLines bounds the lines logged for one upstream's catalog
// problems at a listing.
const maxProblemLines = 20

// exposeByName resolves exposed names with routing and looks up each target's
// definition.
func exposeByName[T any](sep string, src []routing.Source, kind string, report func(string, Problem), lookup func(up, name string) T) map[string]entry[T] {
	table := routing.Build(sep, src)
	for _, p := range table.Problems {
		report(p.Upstream, Problem{Kind: kind, Name: p.Name, Exposed: p.Exposed, Reason: p.Reason})
	}
	want := make(map[string]entry[T], len(table.Targets))
	for exposed, t := range table.Targets {
		want[exposed] = entry[T]{upstream: t.Upstream, orig: lookup(t.Upstream, t.Name)}
	}
	return want
}

// reconcile makes have (what is registered) match want: it removes what is
// gone or moved to another upstream, and adds what is new or changed. An item
// the server refuses is reported and left out; the rest are unaffected.
func reconcile[T any](have, want map[string]entry[T], kind string, report func(string, Problem),
	remove func(...string), add func(string, entry[T]) error, origName func(T) string) {
	var gone []string
	for key, h := range have {
		if w, ok := want[key]; !ok || w.upstream != h.upstream {
			gone = append(gone, key)
			delete(have, key)
		}
	}
	if len(gone) > 0 {
		remove(gone...)
	}
	for key, w := range want {
		if h, ok := have[key]; ok && h.routed == w.routed && reflect.DeepEqual(h.orig, w.orig) {
			continue
		}
		if err := add(key, w); err != nil {
			report(w.upstream, Problem{Kind: kind, Name: origName(w.orig), Exposed: key, Reason: err.Error()})
			if _, ok := have[key]; ok {
				remove(key)
				delete(have, key)
			}
			continue
		}
		have[key] = w
	}
}

func names[T any](items []T, name func(T) string) []string {
	out := make([]string, len(items))
	for i, it := range items {
		out[i] = name(it)
	}
	return out
}

// byName indexes items by name; of items sharing a name, the first wins
// (as a scan in order would find it).
func byName[T any](items []T, name func(T) string) map[string]T {
	m := make(map[string]T, len(items))
	for _, it := range items {
		if _, ok := m[name(it)]; !ok {
			m[name(it)] = it
		}
	}
	return m
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
	return safely(func() { c.g.mcp.AddTool(&t, c.g.toolHandler(name)) })
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

// executions returns the execution field each upstream listed for those of
// tools (exposed) that have one.
func (c *catalog) executions(tools []*mcp.Tool) map[string]json.RawMessage {
	if !slices.ContainsFunc(c.g.ups(), func(u *upstream) bool { return u.wire.declaresTasks() }) {
		return nil // the common case: nothing to look up
	}
	c.mu.RLock()
	defer c.mu.RUnlock()
	var out map[string]json.RawMessage
	for _, t := range tools {
		e, ok := c.tools[t.Name]
		if !ok {
			continue
		}
		u := c.g.upstream(e.upstream)
		if u == nil {
			continue
		}
		if raw := u.wire.execution(e.orig.Name); raw != nil {
			if out == nil {
				out = map[string]json.RawMessage{}
			}
			out[t.Name] = raw
		}
	}
	return out
}

// toolTarget returns the upstream in force and the original name of an
// exposed tool.
func (c *catalog) toolTarget(exposed string) (*upstream, string, bool) {
	c.mu.RLock()
	e, ok := c.tools[exposed]
	c.mu.RUnlock()
	if !ok {
		return nil, "", false
	}
	u := c.g.upstream(e.upstream)
	return u, e.orig.Name, u != nil
}

// promptTarget returns the upstream and original name of an exposed prompt.
func (c *catalog) promptTarget(exposed string) (*upstream, string, bool) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	e, ok := c.prompts[exposed]
	if !ok {
		return nil, "", false
	}
	u := c.g.upstream(e.upstream)
	return u, e.orig.Name, u != nil
}

// resourceTarget returns the upstream and original URI for an exposed
// resource URI or a URI matching a template.
func (c *catalog) resourceTarget(uri string) (*upstream, string, bool) {
	u, orig, _, ok := c.resourceTargetListed(uri)
	return u, orig, ok
}

// resourceTargetListed is resourceTarget, also reporting whether uri is a
// listed resource (as opposed to a template or a template's match).
func (c *catalog) resourceTargetListed(uri string) (u *upstream, orig string, listed, ok bool) {
	c.mu.RLock()
	up := ""
	switch e, found := c.resources[uri]; {
	case found:
		up, orig, listed = e.upstream, e.orig.URI, true
	default:
		if e, found := c.templates[uri]; found { // completion refers to templates by their template string
			up, orig = e.upstream, uri
			break
		}
		for _, m := range c.matchers {
			if m.re.Regexp().MatchString(uri) {
				up, orig = m.upstream, uri
				break
			}
		}
	}
	c.mu.RUnlock()
	if up == "" {
		return nil, "", false, false
	}
	u = c.g.upstream(up)
	return u, orig, listed, u != nil
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

// exposed is how many of an upstream's tools (routes' names left out),
// prompts and resources agents see.
type exposed struct{ tools, prompts, resources int }

// exposedCounts counts, by upstream, what it exposes: not what it offered
// and the gateway left out (a secret in the name, a clash, a filter).
func (c *catalog) exposedCounts() map[string]exposed {
	c.mu.RLock()
	defer c.mu.RUnlock()
	n := map[string]exposed{}
	for _, e := range c.tools {
		if !e.routed {
			x := n[e.upstream]
			x.tools++
			n[e.upstream] = x
		}
	}
	for _, e := range c.prompts {
		x := n[e.upstream]
		x.prompts++
		n[e.upstream] = x
	}
	for _, e := range c.resources {
		x := n[e.upstream]
		x.resources++
		n[e.upstream] = x
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

// find returns the first of items that match accepts, or the zero value.
func find[T any](items []T, match func(T) bool) T {
	for _, it := range items {
		if match(it) {
			return it
		}
	}
	var zero T
	return zero
}
