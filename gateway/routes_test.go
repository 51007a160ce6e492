package gateway

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/credgate/credgate/authmap"
	"github.com/credgate/credgate/breaker"
	"github.com/credgate/credgate/routing"
)

// routeMeta returns the route _meta of a result, or nil.
func routeMeta(t *testing.T, res *mcp.CallToolResult) *routing.Meta {
	t.Helper()
	v, ok := res.Meta[routing.MetaKey]
	if !ok {
		return nil
	}
	raw, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	var m routing.Meta
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatalf("_meta[%s] = %s: %v", routing.MetaKey, raw, err)
	}
	return &m
}

// callArgs calls tool with args and fails the test on a protocol error.
func callArgs(t *testing.T, ctx context.Context, cs *mcp.ClientSession, tool string, args map[string]any) *mcp.CallToolResult {
	t.Helper()
	res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: tool, Arguments: args})
	if err != nil {
		t.Fatalf("call %s: %v", tool, err)
	}
	return res
}

// servedBy calls tool and returns its text and route _meta, failing the
// test if the call failed.
func servedBy(t *testing.T, ctx context.Context, cs *mcp.ClientSession, tool string) (string, *routing.Meta) {
	t.Helper()
	res := callTool(t, ctx, cs, tool)
	if res.IsError {
		t.Fatalf("call %s failed: %s", tool, text(res))
	}
	return text(res), routeMeta(t, res)
}

// routeScene is a gateway with routed tools over a primary upstream p, a
// bearer upstream checking credential ptok (read from a file), and a backup
// b, a plain test upstream: tool "search" routes to [p__echo, b__echo].
type routeScene struct {
	g    *Server
	cs   *mcp.ClientSession
	p    *bearerUpstream
	b    *testUpstream
	path string // ptok's file
	logs *syncBuffer
}

const (
	routeTok1 = "route-token-one-0123456789"
	routeTok2 = "route-token-two-0123456789"
)

// newRouteScene starts a route scene; head is YAML put before the
// upstreams (credentials.ptok's source may be replaced by giving it here),
// tail YAML after them (routes, routing).
func newRouteScene(t *testing.T, ctx context.Context, cred, tail string, opts *mcp.ClientOptions) *routeScene {
	t.Helper()
	s := &routeScene{p: newBearerUpstream(t, "echo"), b: newTestUpstream(t, "b", "echo"), logs: &syncBuffer{}}
	s.p.accept(routeTok1)
	s.path = tokenFile(t, routeTok1)
	if cred == "" {
		cred = "source: {file: " + s.path + "}"
	}
	if tail == "" {
		tail = "routes:\n  - {tool: search, targets: [p__echo, b__echo]}\n"
	}
	yaml := fmt.Sprintf("credentials:\n  ptok: {%s}\nupstreams:\n  p: {url: %s, credential: ptok}\n  b: {url: %s}\n%s", cred, s.p.url(), s.b.url(), tail)
	var url string
	s.g, s.cs, url = credGateway(t, ctx, yaml, nil, s.logs)
	if opts != nil {
		s.cs = agentAt(t, ctx, url, opts)
	}
	waitFor(t, ctx, func() bool { return s.g.catalog.hasTool("search") })
	return s
}

// agentAt connects an agent to the gateway at base.
func agentAt(t *testing.T, ctx context.Context, base string, opts *mcp.ClientOptions) *mcp.ClientSession {
	t.Helper()
	cs, err := mcp.NewClient(&mcp.Implementation{Name: "agent", Version: "1"}, opts).Connect(ctx, &mcp.StreamableClientTransport{Endpoint: base + "/mcp"}, nil)
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	t.Cleanup(func() { _ = cs.Close() })
	return cs
}

// primaryCalls counts the tools/call requests that reached p.
func (s *routeScene) primaryCalls() int { return len(s.p.calls()) }

// rotate writes tok to ptok's file, p accepting it, and waits for the
// gateway to hold it.
func (s *routeScene) rotate(t *testing.T, ctx context.Context, tok string) {
	t.Helper()
	s.p.accept(tok)
	writeFile(t, s.path, tok)
	waitFor(t, ctx, func() bool { return s.g.Credentials().Get("ptok").Value() == tok })
}

// Regression test for issue 8 (routing config): routes and routing are
// validated with the rest, every problem naming its key.
func TestRouteConfigValidation(t *testing.T) {
	t.Parallel()
	const ups = "upstreams:\n  gh: {url: http://127.0.0.1:1/mcp, tools: {deny: [secret]}}\n  gl: {url: http://127.0.0.1:2/mcp, prefix: lab}\n"
	for _, tc := range []struct {
		name, yaml string
		want       []string
	}{
		{"valid", ups + `routes:
  - tool: search
    targets: [gh__search_code, lab__search]
    on: [credential_revoked, breaker_open]
    retry_safe: true
    arguments: {lab__search: {rename: {query: search}, set: {scope: blobs, n: 2}}}
  - {tool: gh__x, targets: [gh__x, lab__x]}
routing: {hide_unavailable: true}
`, nil},
		{"unknown upstream", ups + "routes:\n  - {tool: s, targets: [gh__a, gitlab__search, lab__]}\n", []string{
			`routes[0].targets[1]: "gitlab__search" names no configured upstream: a target is <prefix>__<tool>, where prefix is an upstream's (gh, lab)`,
			`routes[0].targets[2]: "lab__" names no tool after the prefix of upstream "gl"`,
		}},
		{"filtered tool", ups + "routes:\n  - {tool: s, targets: [gh__secret]}\n", []string{
			`routes[0].targets[0]: tool "secret" is filtered out by upstreams.gh.tools`,
		}},
		{"syntax", ups + "routes:\n  - {tool: s, targets: [gh__a, gh__a], on: [timeout]}\n  - {tool: s, targets: []}\n", []string{
			`routes[0].targets[1]: "gh__a" is already targets[0]`,
			`routes[0].on[0]: unknown reason "timeout"`,
			`routes[1].targets: empty`,
			`routes[1].tool: "s" is already routed by routes[0]`,
		}},
		{"keys", ups + "routes:\n  - {tool: s, tragets: [gh__a]}\nrouting: {hide_unavailble: true}\n", []string{
			`routes[0].tragets: unknown key (did you mean targets?)`,
			`routing.hide_unavailble: unknown key (did you mean hide_unavailable?)`,
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			cfg, err := ParseConfig([]byte(tc.yaml), nil)
			if len(tc.want) == 0 {
				if err != nil {
					t.Fatalf("ParseConfig: %v", err)
				}
				rs, err := newRoutes(cfg)
				if err != nil || rs.Lookup("search") == nil || !rs.Lookup("search").RetrySafe() || !cfg.Routing.HideUnavailable {
					t.Errorf("newRoutes = %v, %v; want the routes as configured", rs, err)
				}
				return
			}
			if err == nil {
				t.Fatalf("ParseConfig accepted it; want %q", tc.want)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error does not say %q:\n%v", w, err)
				}
			}
		})
	}
}

// Regression test for issue 8 (routing catalog): a routed tool under a new
// name takes its first listed target's definition (the next listed one while
// the first is not listed); an existing name that gains backups keeps its
// own; both are resolved per call.
func TestRouteCatalog(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	a, b := newTestUpstream(t, "a", "echo"), newTestUpstream(t, "b", "echo")
	dead := httptest.NewServer(http.NotFoundHandler())
	dead.Close()
	_, cs := startGateway(t, ctx, fmt.Sprintf(`upstreams:
  a: {url: %s}
  b: {url: %s}
  d: {url: %s/mcp}
routes:
  - {tool: search, targets: [a__echo, b__echo]}
  - {tool: b__echo, targets: [b__echo, a__echo]}
  - {tool: later, targets: [d__echo, b__echo]}
  - {tool: never, targets: [d__echo]}
`, a.url(), b.url(), dead.URL))
	res, err := cs.ListTools(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	desc := map[string]string{}
	for _, tool := range res.Tools {
		desc[tool.Name] = tool.Description
	}
	want := map[string]string{"a__echo": "a echo", "b__echo": "b echo", "search": "a echo", "later": "b echo"}
	if diff := cmp.Diff(want, desc); diff != "" {
		t.Errorf("tools/list mismatch (-want +got):\n%s", diff)
	}
	for tool, want := range map[string]string{"search": "a:echo:hi", "b__echo": "b:echo:hi", "later": "b:echo:hi"} {
		if got, _ := servedBy(t, ctx, cs, tool); got != want {
			t.Errorf("%s answered %q, want %q", tool, got, want)
		}
	}
}

// Regression test for issue 8 (failover on a rejected credential): the
// primary's token revoked at the provider: the call that meets the
// rejection is served by the backup with the route _meta, the credential is
// not sent again (later calls go to the backup without reaching the
// primary), /health shows the route's active target and why, a switch is
// logged each way, and a rotated token brings the calls back to the
// primary. No token shows on any surface.
func TestRouteFailoverRevoked(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	s := newRouteScene(t, ctx, "", "", nil)
	if got, m := servedBy(t, ctx, s.cs, "search"); got != "bearer:echo:hi" || m != nil {
		t.Fatalf("first call: %q, meta %+v; want the primary's answer without route meta", got, m)
	}
	s.p.refuse(routeTok1, rejectRevoked)
	want := &routing.Meta{ServedBy: "b__echo", Reason: "credential_revoked", Attempts: []routing.Attempt{{Target: "p__echo", Reason: "credential_revoked"}}}
	got, m := servedBy(t, ctx, s.cs, "search")
	if diff := cmp.Diff(want, m); got != "b:echo:hi" || diff != "" {
		t.Fatalf("call meeting the revocation: %q, meta mismatch (-want +got):\n%s", got, diff)
	}
	reached := s.primaryCalls()
	for range 3 {
		if got, m := servedBy(t, ctx, s.cs, "search"); got != "b:echo:hi" || cmp.Diff(want, m) != "" {
			t.Errorf("call after the revocation: %q, meta %+v; want the backup with %+v", got, m, want)
		}
	}
	if n := s.primaryCalls() - reached; n != 0 {
		t.Errorf("%d calls reached the primary after its credential was revoked, want 0", n)
	}
	wantHealth := RouteHealth{Active: "b__echo", Reason: "credential_revoked", Targets: []RouteTargetHealth{
		{Target: "p__echo", Reason: "credential_revoked"}, {Target: "b__echo", Usable: true}}}
	if diff := cmp.Diff(wantHealth, s.g.Health().Routes["search"]); diff != "" {
		t.Errorf("health routes.search mismatch (-want +got):\n%s", diff)
	}

	s.rotate(t, ctx, routeTok2)
	if got, m := servedBy(t, ctx, s.cs, "search"); got != "bearer:echo:hi" || m != nil {
		t.Errorf("after the rotation: %q, meta %+v; want the primary again", got, m)
	}
	if got := s.p.lastToken(); got != routeTok2 {
		t.Errorf("the primary got %q, want the rotated token", got)
	}
	if diff := cmp.Diff(RouteHealth{Active: "p__echo", Targets: []RouteTargetHealth{{Target: "p__echo", Usable: true}, {Target: "b__echo", Usable: true}}},
		s.g.Health().Routes["search"]); diff != "" {
		t.Errorf("health routes.search after the rotation mismatch (-want +got):\n%s", diff)
	}
	logs := s.logs.String()
	for _, w := range []string{`"route":"search","from":"p__echo","to":"b__echo","reason":"credential_revoked","message":"route switched"`,
		`"route":"search","from":"b__echo","to":"p__echo","reason":"recovered","message":"route switched"`} {
		if !strings.Contains(logs, w) {
			t.Errorf("logs lack %s", w)
		}
	}
	js, _ := json.Marshal(s.g.Health())
	for _, tok := range []string{routeTok1, routeTok2} {
		if strings.Contains(logs, tok) || strings.Contains(string(js), tok) {
			t.Errorf("a token shows in the logs or /health")
		}
	}
}

// Regression test for issue 8 (failing over wins over waiting): when the
// provider rejects a token as invalid while a backup can serve, the call
// moves to the backup at once, without waiting for the credential's
// renewal (here an exec source that blocks until the test lets it go);
// calls meanwhile go to the backup without touching the primary, and once
// the renewal brings a new token, calls return to the primary.
func TestRouteFailoverBeforeRenewal(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	dir := t.TempDir()
	tok, block, release := filepath.Join(dir, "tok"), filepath.Join(dir, "block"), filepath.Join(dir, "go")
	writeFile(t, tok, routeTok1)
	script := fmt.Sprintf("if [ -e %s ]; then while [ ! -e %s ]; do sleep 0.01; done; fi; cat %s", block, release, tok)
	s := newRouteScene(t, ctx, fmt.Sprintf("source: {exec: {command: [sh, -c, %q], timeout: 60s}}", script), "", nil)
	if got, _ := servedBy(t, ctx, s.cs, "search"); got != "bearer:echo:hi" {
		t.Fatalf("first call: %q, want the primary", got)
	}
	writeFile(t, block, "")
	s.p.refuse(routeTok1, rejectInvalid)
	writeFile(t, tok, routeTok2)
	s.p.accept(routeTok2)

	// Without failing over first, this call would wait for the renewal,
	// which waits for the test: its context ends first.
	callCtx, stop := context.WithTimeout(ctx, 5*time.Second)
	defer stop()
	res, err := s.cs.CallTool(callCtx, &mcp.CallToolParams{Name: "search", Arguments: map[string]any{"text": "hi"}})
	if err != nil {
		t.Fatalf("the call waited for the renewal: %v", err)
	}
	if m := routeMeta(t, res); text(res) != "b:echo:hi" || m == nil || m.Reason != "credential_invalid" {
		t.Fatalf("call meeting the rejection: %q, meta %+v; want the backup, credential_invalid", text(res), m)
	}
	reached := s.primaryCalls()
	if got, m := servedBy(t, ctx, s.cs, "search"); got != "b:echo:hi" || m == nil {
		t.Errorf("call during the renewal: %q, meta %+v; want the backup", got, m)
	}
	if n := s.primaryCalls() - reached; n != 0 {
		t.Errorf("%d calls reached the primary with the rejected token during its renewal, want 0", n)
	}
	writeFile(t, release, "")
	waitFor(t, ctx, func() bool { return s.g.Health().Routes["search"].Active == "p__echo" })
	if got, m := servedBy(t, ctx, s.cs, "search"); got != "bearer:echo:hi" || m != nil || s.p.lastToken() != routeTok2 {
		t.Errorf("after the renewal: %q, meta %+v, token %q; want the primary with the new token", got, m, s.p.lastToken())
	}
	sent := 0
	for _, c := range s.p.calls() {
		if c.Token == routeTok1 {
			sent++
		}
	}
	if sent != 2 {
		t.Errorf("the first token was sent in %d calls, want 2: the one it served and the one it was rejected on", sent)
	}
}

// Regression test for issue 8 (renewal kept): a route that does not fail
// over on expired credentials leaves a rejected call to the credential's
// reactive renewal, resent once with the new token, as without a route.
func TestRouteRenewalWithoutFailover(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	path := tokenFile(t, routeTok1)
	s := newRouteScene(t, ctx, "source: {exec: {command: [cat, "+path+"]}}",
		"routes:\n  - {tool: search, targets: [p__echo, b__echo], on: [breaker_open, upstream_unavailable]}\n", nil)
	callOK(t, ctx, s.cs, "search")
	s.p.refuse(routeTok1, rejectExpired)
	s.p.accept(routeTok2)
	writeFile(t, path, routeTok2)
	if got, m := servedBy(t, ctx, s.cs, "search"); got != "bearer:echo:hi" || m != nil || s.p.lastToken() != routeTok2 {
		t.Errorf("rejected as expired: %q, meta %+v, last token %q; want the primary, resent with the renewed token", got, m, s.p.lastToken())
	}
}

// Regression test for issue 8 (what fails over): a call that may have run
// upstream (a 502 from the primary) is not repeated on the backup, unless
// the route is retry_safe or the tool is annotated read-only; a call the
// tool answered with isError is the tool's answer; a connection refused
// did not run and moves on.
func TestRouteExecutedFailures(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	p := newFaultUpstream(t)
	p.srv.AddTool(&mcp.Tool{Name: "read", Annotations: &mcp.ToolAnnotations{ReadOnlyHint: true}, InputSchema: json.RawMessage(`{"type":"object"}`)},
		func(context.Context, *mcp.CallToolRequest) (*mcp.CallToolResult, error) {
			return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: "p:read"}}}, nil
		})
	b := newTestUpstream(t, "b", "echo", "read")
	g, cs := startGateway(t, ctx, fmt.Sprintf(`upstreams:
  p: {url: %s}
  b: {url: %s}
routes:
  - {tool: plain, targets: [p__echo, b__echo]}
  - {tool: safe, targets: [p__echo, b__echo], retry_safe: true}
  - {tool: annotated, targets: [p__read, b__read]}
`, p.url(), b.url()))
	callOK(t, ctx, cs, "plain")

	res := callArgs(t, ctx, cs, "plain", map[string]any{"text": "iserror:no such file"})
	if !res.IsError || routeMeta(t, res) != nil || b.calls.Load() != 0 {
		t.Errorf("an isError answer: %q, meta %+v, backup calls %d; want the tool's answer as is", text(res), routeMeta(t, res), b.calls.Load())
	}

	p.fault.Store(&httpFailure{status: http.StatusBadGateway, body: "bad gateway"})
	res = callTool(t, ctx, cs, "plain")
	if f := failureOf(t, res); f.Type != authmap.TypeUpstreamUnavailable || routeMeta(t, res) != nil || b.calls.Load() != 0 {
		t.Errorf("a 502 on a plain route: %+v, meta %+v, backup calls %d; want the primary's failure, not repeated", f, routeMeta(t, res), b.calls.Load())
	}
	for _, tool := range []string{"safe", "annotated"} {
		res = callTool(t, ctx, cs, tool)
		m := routeMeta(t, res)
		if res.IsError || m == nil || m.Reason != "upstream_unavailable" || !strings.HasPrefix(m.ServedBy, "b__") {
			t.Errorf("a 502 on %s: %q, meta %+v; want the backup, reason upstream_unavailable", tool, text(res), m)
		}
	}
	p.fault.Store(nil)

	refuseConnections(g, p.testUpstream)
	if got, m := servedBy(t, ctx, cs, "plain"); got != "b:echo:hi" || m == nil || m.Reason != "upstream_unavailable" {
		t.Errorf("primary gone: %q, meta %+v; want the backup, reason upstream_unavailable", got, m)
	}
}

// Regression test for issue 8 (no target can serve): the agent gets the
// last target's typed failure with every attempt in the route _meta, and
// the tool stays listed (routing.hide_unavailable is off).
func TestRouteNoTargetServes(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	p := newTestUpstream(t, "p", "echo")
	b := newBearerUpstream(t, "echo")
	g, cs, _ := credGateway(t, ctx, fmt.Sprintf(`credentials:
  btok: {source: {env: MISSING_TOKEN}}
upstreams:
  p: {url: %s}
  b: {url: %s, credential: btok}
routes:
  - {tool: search, targets: [p__echo, b__echo]}
`, p.url(), b.url()), nil, nil)
	waitFor(t, ctx, func() bool { return g.catalog.hasTool("search") })
	refuseConnections(g, p)

	res := callTool(t, ctx, cs, "search")
	f := failureOf(t, res)
	want := &routing.Meta{Reason: "upstream_unavailable", Attempts: []routing.Attempt{
		{Target: "p__echo", Reason: "upstream_unavailable"}, {Target: "b__echo", Reason: "credential_missing"}}}
	if diff := cmp.Diff(want, routeMeta(t, res)); f.Subtype != authmap.SubtypeCredentialMissing || f.Credential != "btok" || diff != "" {
		t.Errorf("failure %+v; meta mismatch (-want +got):\n%s", f, diff)
	}
	if len(b.calls()) != 0 {
		t.Errorf("the backup was sent %d calls without a credential", len(b.calls()))
	}
	if rh := g.Health().Routes["search"]; rh.Active != "" || rh.Reason != "credential_missing" {
		t.Errorf("health routes.search %+v; want no active target, credential_missing", rh)
	}
	tools, err := cs.ListTools(ctx, nil)
	if err != nil || !slices.ContainsFunc(tools.Tools, func(t *mcp.Tool) bool { return t.Name == "search" }) {
		t.Errorf("tools/list lost search (%v): a routed tool stays listed by default", err)
	}
}

// Regression test for issue 8 (argument mapping): each target gets the
// call's arguments as its mapping says: renamed, then set; the primary gets
// them unchanged.
func TestRouteArgumentMapping(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	p, b := newTestUpstream(t, "p", "echo"), newTestUpstream(t, "b", "echo")
	dead := httptest.NewServer(http.NotFoundHandler())
	dead.Close()
	_, cs := startGateway(t, ctx, fmt.Sprintf(`upstreams:
  p: {url: %s}
  b: {url: %s}
  d: {url: %s/mcp}
routes:
  - {tool: say, targets: [p__echo, b__echo], arguments: {b__echo: {rename: {text: x}}}}
  - {tool: say_b, targets: [d__echo, b__echo], arguments: {b__echo: {rename: {query: text}}}}
  - {tool: fixed, targets: [d__echo, b__echo], arguments: {b__echo: {set: {text: fixed}}}}
`, p.url(), b.url(), dead.URL))
	for _, tc := range []struct {
		tool string
		args map[string]any
		want string
	}{
		{"say", map[string]any{"text": "y"}, "p:echo:y"},
		{"say_b", map[string]any{"query": "x"}, "b:echo:x"},
		{"fixed", map[string]any{"text": "ignored"}, "b:echo:fixed"},
	} {
		res := callArgs(t, ctx, cs, tc.tool, tc.args)
		if text(res) != tc.want {
			t.Errorf("%s(%v) = %q, want %q", tc.tool, tc.args, text(res), tc.want)
		}
	}
}

// refuseConnections stops u's listener and drops its connections, and g's
// pooled ones: from then on, a request to u dials, and is refused. (A
// request on a pooled connection the server just closed fails with EOF,
// which may come after the server read it.)
func refuseConnections(g *Server, u *testUpstream) {
	_ = u.http.Listener.Close()
	u.http.CloseClientConnections()
	g.pool.CloseIdleConnections()
}

// listChanges connects an agent to base that counts tools/list_changed.
func routeAgentWithChanges(t *testing.T, ctx context.Context, base string) (*mcp.ClientSession, chan struct{}) {
	t.Helper()
	changed := make(chan struct{}, 100)
	cs := agentAt(t, ctx, base, &mcp.ClientOptions{ToolListChangedHandler: func(context.Context, *mcp.ToolListChangedRequest) {
		changed <- struct{}{}
	}})
	return cs, changed
}

// waitListed waits for a list_changed after which tools/list has tool (or
// has it no longer).
func waitListed(t *testing.T, ctx context.Context, cs *mcp.ClientSession, changed <-chan struct{}, tool string, want bool) {
	t.Helper()
	for {
		select {
		case <-changed:
		case <-ctx.Done():
			t.Fatalf("no list_changed left %s listed = %v", tool, want)
		}
		res, err := cs.ListTools(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		if slices.ContainsFunc(res.Tools, func(x *mcp.Tool) bool { return x.Name == tool }) == want {
			return
		}
	}
}

// Regression test for issue 8 (routing.hide_unavailable): a routed tool
// whose every target is unusable leaves tools/list, with list_changed, and
// comes back when one is usable again: when its credential is rotated, and
// by itself when a breaker's wait (a rate limit's Retry-After) ends.
func TestRouteHideUnavailable(t *testing.T) {
	t.Parallel()
	t.Run("credential", func(t *testing.T) {
		t.Parallel()
		ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
		defer cancel()
		p := newBearerUpstream(t, "echo")
		p.accept(routeTok1)
		path := tokenFile(t, routeTok1)
		g, _, base := credGateway(t, ctx, fmt.Sprintf(`credentials:
  ptok: {source: {file: %s}}
upstreams:
  p: {url: %s, credential: ptok}
routes:
  - {tool: search, targets: [p__echo]}
routing: {hide_unavailable: true}
`, path, p.url()), nil, nil)
		waitFor(t, ctx, func() bool { return g.catalog.hasTool("search") })
		cs, changed := routeAgentWithChanges(t, ctx, base)
		callOK(t, ctx, cs, "search")
		p.refuse(routeTok1, rejectRevoked)
		if f := failureOf(t, callTool(t, ctx, cs, "search")); f.Subtype != authmap.SubtypeCredentialRevoked {
			t.Fatalf("failure %+v, want credential_revoked", f)
		}
		waitListed(t, ctx, cs, changed, "search", false)
		// Hidden, it is still answered, typed.
		if f := failureOf(t, callTool(t, ctx, cs, "search")); f.Subtype != authmap.SubtypeCredentialRevoked {
			t.Errorf("hidden tool called: failure %+v, want credential_revoked", f)
		}
		p.accept(routeTok2)
		writeFile(t, path, routeTok2)
		waitListed(t, ctx, cs, changed, "search", true)
		callOK(t, ctx, cs, "search")
	})
	t.Run("retry-after", func(t *testing.T) {
		t.Parallel()
		ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
		defer cancel()
		up := newFaultUpstream(t)
		g, _, base := credGateway(t, ctx, fmt.Sprintf(`credentials:
  tok: {source: {value: live-token-0123456789}}
upstreams:
  api: {url: %s, credential: tok}
routes:
  - {tool: search, targets: [api__echo]}
routing: {hide_unavailable: true}
`, up.url()), nil, nil)
		waitFor(t, ctx, func() bool { return g.catalog.hasTool("search") })
		cs, changed := routeAgentWithChanges(t, ctx, base)
		callOK(t, ctx, cs, "search")
		up.fault.Store(&httpFailure{status: http.StatusTooManyRequests, header: map[string]string{"Retry-After": "1"}, body: `{"message":"API rate limit exceeded"}`})
		if f := failureOf(t, callTool(t, ctx, cs, "search")); f.Subtype != authmap.SubtypeRateLimitReached {
			t.Fatalf("failure %+v, want rate_limit_reached", f)
		}
		up.fault.Store(nil)
		waitListed(t, ctx, cs, changed, "search", false)
		reached := up.reached.Load()
		// No call is made: the breaker's wait ending brings it back.
		waitListed(t, ctx, cs, changed, "search", true)
		if n := up.reached.Load(); n != reached {
			t.Errorf("%d calls reached the upstream while the tool was hidden", n-reached)
		}
		callOK(t, ctx, cs, "search")
	})
}

// BenchmarkRouteDecision is the gateway's routing and breaker decision of
// one routed call, as callRoute makes it, without the call itself: look the
// route up, walk its candidates with the gateway's health adapter (upstream
// connected, credential usable, breakers checked) up to the first usable
// one, take the chosen target's upstream and
// credential breakers (admit) and report the outcome to both. In
// "failover", the primary's credential was rejected (its breaker is open),
// so every call passes it over for the backup. "unrouted" is the breaker
// part alone, which every call pays, routed or not. Target: under 2µs per
// call (compare cpu-ns/op on a busy machine).
func BenchmarkRouteDecision(b *testing.B) {
	for _, tc := range []struct {
		name             string
		revoked, unroute bool
		want             string
	}{{"unrouted", false, true, "p__echo"}, {"primary", false, false, "p__echo"}, {"failover", true, false, "b__echo"}} {
		b.Run(tc.name, func(b *testing.B) {
			ctx, g := benchGatewayConfig(b, func(url string) string {
				return fmt.Sprintf(`credentials:
  ptok: {source: {value: p-token-0123456789}}
  btok: {source: {value: b-token-0123456789}}
upstreams:
  p: {url: %[1]s, credential: ptok}
  b: {url: %[1]s, credential: btok}
routes:
  - {tool: search, targets: [p__echo, b__echo]}
`, url)
			})
			if err := g.LoadCredentials(ctx); err != nil {
				b.Fatal(err)
			}
			for _, u := range g.ups() {
				for u.session.Load() == nil {
					select {
					case <-ctx.Done():
						b.Fatal("upstreams never connected")
					case <-time.After(time.Millisecond):
					}
				}
			}
			if tc.revoked {
				done, err := g.breakers.Allow(breaker.Name("p", "ptok"), g.credential("ptok").Generation())
				if err != nil {
					b.Fatal(err)
				}
				done(breaker.Rejected("credential_revoked"))
			}
			b.ReportAllocs()
			reportThreadCPU(b)
			if tc.unroute {
				p := g.upstream("p")
				for b.Loop() {
					cb, refused := g.admit(p, "ptok")
					if refused != nil {
						b.Fatal(refused)
					}
					cb.report(breaker.Success(), breaker.Success())
				}
				return
			}
			for b.Loop() {
				s := g.snap.Load()
				r := s.routes.Lookup("search")
				h := g.routeHealth(s)
				served := ""
				for c := range routing.Candidates(r, h) {
					if !c.Usable {
						continue
					}
					rt := h.resolve(c.Target)
					cb, refused := g.admit(rt.up, rt.cred)
					if refused != nil {
						continue
					}
					cb.report(breaker.Success(), breaker.Success())
					served = c.Target
					break
				}
				if served != tc.want {
					b.Fatalf("served by %q, want %q", served, tc.want)
				}
			}
		})
	}
}

// TestRouteNoTargetReported: a route that loses its last usable target is
// reported as soon as /health shows it, without waiting for a call that a
// target serves (found trying the gateway from outside: the no_target event
// and the route_no_target alert never came, as only a served call reported
// a switch); its recovery, when the breaker's wait ends, is reported the
// same way, and resolves the alert.
func TestRouteNoTargetReported(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	up := newFaultUpstream(t)
	hook := newReceiver(t)
	g, cs, _ := credGateway(t, ctx, fmt.Sprintf(`credentials:
  tok: {source: {value: live-token-0123456789}}
upstreams:
  api: {url: %s, credential: tok}
routes:
  - {tool: search, targets: [api__echo]}
notify:
  - {name: hook, format: generic, url: %q, on: [route_no_target]}
`, up.url(), hook.srv.URL), nil, nil)
	waitFor(t, ctx, func() bool { return g.catalog.hasTool("search") })
	callOK(t, ctx, cs, "search")
	up.fault.Store(&httpFailure{status: http.StatusTooManyRequests, header: map[string]string{"Retry-After": "1"}, body: `{"message":"API rate limit exceeded"}`})
	if f := failureOf(t, callTool(t, ctx, cs, "search")); f.Subtype != authmap.SubtypeRateLimitReached {
		t.Fatalf("failure %+v, want rate_limit_reached", f)
	}
	up.fault.Store(nil)
	routeEvent := func(kind, target string) Event {
		var found Event
		waitFor(t, ctx, func() bool {
			for _, e := range g.events.all() {
				if e.Type == EventRoute && e.Route == "search" && e.Kind == kind && e.Target == target {
					found = e
					return true
				}
			}
			return false
		})
		return found
	}
	if e := routeEvent(KindRouteNoTarget, ""); e.Reason != "rate_limit_reached" || e.From != "api__echo" {
		t.Errorf("no_target event %+v; want from api__echo for rate_limit_reached", e)
	}
	got := hook.wait(t, ctx, 1)
	if b := string(got[0].body); !strings.Contains(b, "route_no_target") || !strings.Contains(b, "trigger") {
		t.Errorf("first alert %s; want the route_no_target trigger", b)
	}
	// No call: the breaker's wait ending brings the target back.
	if e := routeEvent(KindRouteSwitched, "api__echo"); e.Reason != "recovered" || e.From != "" {
		t.Errorf("recovery event %+v; want to api__echo, recovered", e)
	}
	got = hook.wait(t, ctx, 2)
	if b := string(got[1].body); !strings.Contains(b, "route_no_target") || !strings.Contains(b, "resolve") ||
		!strings.Contains(b, `"status":"serving"`) || !strings.Contains(b, `"resolution":"target api__echo"`) {
		t.Errorf("second alert %s; want the route_no_target resolve, status serving, by target api__echo", b)
	}
	callOK(t, ctx, cs, "search")
	n := 0
	for _, e := range g.events.all() {
		if e.Type == EventRoute {
			n++
		}
	}
	if n != 2 {
		t.Errorf("%d route events; want 2 (no target, recovered): %+v", n, g.events.all())
	}
}

// routeSwitch is a route event, as the tests compare them.
type routeSwitch struct{ Kind, From, To, Reason string }

// routeSwitches returns the route events g published for route, in order.
func routeSwitches(g *Server, route string) []routeSwitch {
	var out []routeSwitch
	for _, e := range g.events.all() {
		if e.Type == EventRoute && e.Route == route {
			out = append(out, routeSwitch{e.Kind, e.From, e.Target, e.Reason})
		}
	}
	return out
}

// waitRouteSwitches waits until g has published as many route events for
// route as want has, and compares them with want.
func waitRouteSwitches(t *testing.T, ctx context.Context, g *Server, route string, want []routeSwitch) {
	t.Helper()
	waitFor(t, ctx, func() bool { return len(routeSwitches(g, route)) >= len(want) })
	if diff := cmp.Diff(want, routeSwitches(g, route)); diff != "" {
		t.Fatalf("route events mismatch (-want +got):\n%s", diff)
	}
}

// TestRouteSwitchesFollowHealth: every change of a route's active target,
// as /health shows it, is logged and published once, whoever notices it
// first (found trying the gateway from outside: the primary came up 3 ms
// after calls had gone to the backup, and /health and the metric showed it
// active again while no "recovered" switch was logged or published; the
// state behind the log still said "backup", so the credential_expired that
// later sent calls to the backup was not reported at all).
func TestRouteSwitchesFollowHealth(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	p, b := newBearerUpstream(t, "echo"), newTestUpstream(t, "b", "echo")
	p.accept(routeTok1)
	p.fail.Store(&httpFailure{status: http.StatusServiceUnavailable, body: "starting"})
	path := tokenFile(t, routeTok1)
	logs := &syncBuffer{}
	g, cs, _ := credGateway(t, ctx, fmt.Sprintf(`credentials:
  ptok: {source: {file: %s}}
upstreams:
  p: {url: %s, credential: ptok}
  b: {url: %s}
routes:
  - {tool: search, targets: [p__echo, b__echo]}
`, path, p.url(), b.url()), nil, logs)
	active := func() string { return g.Health().Routes["search"].Active }

	// The primary is down at start: no call needed to report the backup.
	want := []routeSwitch{{KindRouteSwitched, "p__echo", "b__echo", "upstream_unavailable"}}
	waitRouteSwitches(t, ctx, g, "search", want)
	if got := active(); got != "b__echo" {
		t.Errorf("health active %q, want b__echo", got)
	}

	// It comes up: the return is reported by itself too.
	p.fail.Store(nil)
	want = append(want, routeSwitch{KindRouteSwitched, "b__echo", "p__echo", "recovered"})
	waitRouteSwitches(t, ctx, g, "search", want)
	if got, m := servedBy(t, ctx, cs, "search"); got != "bearer:echo:hi" || m != nil {
		t.Fatalf("after the primary came up: %q, meta %+v; want the primary", got, m)
	}

	// Its token expires: the call that meets it reports the switch.
	p.refuse(routeTok1, rejectExpired)
	if got, _ := servedBy(t, ctx, cs, "search"); got != "b:echo:hi" {
		t.Fatalf("call meeting the expiry: %q, want the backup's answer", got)
	}
	want = append(want, routeSwitch{KindRouteSwitched, "p__echo", "b__echo", "credential_expired"})
	if diff := cmp.Diff(want, routeSwitches(g, "search")); diff != "" {
		t.Fatalf("route events after the call met the expiry mismatch (-want +got):\n%s", diff)
	}
	if got := active(); got != "b__echo" {
		t.Errorf("health active %q, want b__echo", got)
	}

	// A new token: the return is reported without a call.
	p.accept(routeTok2)
	writeFile(t, path, routeTok2)
	want = append(want, routeSwitch{KindRouteSwitched, "b__echo", "p__echo", "recovered"})
	waitRouteSwitches(t, ctx, g, "search", want)
	if got := active(); got != "p__echo" {
		t.Errorf("health active %q, want p__echo", got)
	}
	if n := strings.Count(logs.String(), `"message":"route switched"`); n != len(want) {
		t.Errorf("%d route switched log lines, want %d:\n%s", n, len(want), logs)
	}
}

// TestRouteSwitchAfterReload: a reload that fixes the primary (here its
// token, in its headers, so the upstream is replaced) reports the return
// to it as soon as the new upstream takes over, not on the next call
// (found trying the gateway from outside: it came with the next call, 8 s
// later).
func TestRouteSwitchAfterReload(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	p, b := newBearerUpstream(t, "echo"), newTestUpstream(t, "b", "echo")
	p.accept(routeTok2)
	yaml := func(tok string) string {
		return fmt.Sprintf(`upstreams:
  p: {url: %s, headers: {Authorization: "Bearer %s"}}
  b: {url: %s}
routes:
  - {tool: search, targets: [p__echo, b__echo]}
`, p.url(), tok, b.url())
	}
	g, _, _ := credGateway(t, ctx, yaml(routeTok1), nil, nil)
	want := []routeSwitch{{KindRouteSwitched, "p__echo", "b__echo", "credential_invalid"}}
	waitRouteSwitches(t, ctx, g, "search", want)
	if err := reloadTo(t, g, yaml(routeTok2)); err != nil {
		t.Fatal(err)
	}
	want = append(want, routeSwitch{KindRouteSwitched, "b__echo", "p__echo", "recovered"})
	waitRouteSwitches(t, ctx, g, "search", want)
	if got := g.Health().Routes["search"].Active; got != "p__echo" {
		t.Errorf("health active %q, want p__echo", got)
	}
}

// TestRouteClockExpiredLastResort: a target whose credential is past its
// expires_at is still called (the provider decides), so it is usable as a
// last resort, and /health, the route metrics and the route events say so
// (found trying the gateway from outside: with both credentials past their
// expires_at, /health showed no active target and route_no_target fired,
// while calls were served, and each served call resolved the alert that
// the next look at the routes triggered again).
func TestRouteClockExpiredLastResort(t *testing.T) {
	t.Parallel()
	const past = `expires_at: "2020-01-01T00:00:00Z"`
	for _, tc := range []struct {
		name, backupCred string
		on               string // the route's on, "" for the default
		wantActive       string
		wantTargets      []RouteTargetHealth
	}{
		{"every target expired", past, "", "p__echo", []RouteTargetHealth{
			{Target: "p__echo", Usable: true, Reason: "credential_expired"},
			{Target: "b__echo", Usable: true, Reason: "credential_expired"}}},
		{"primary expired", "", "", "b__echo", []RouteTargetHealth{
			{Target: "p__echo", Usable: true, Reason: "credential_expired"},
			{Target: "b__echo", Usable: true}}},
		{"primary expired, not failing over on it", "", "on: [credential_revoked], ", "p__echo", []RouteTargetHealth{
			{Target: "p__echo", Usable: true, Reason: "credential_expired"},
			{Target: "b__echo", Usable: true}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
			defer cancel()
			p, b := newBearerUpstream(t, "echo"), newBearerUpstream(t, "echo")
			p.accept(routeTok1)
			b.accept(routeTok2)
			g, cs, _ := credGateway(t, ctx, fmt.Sprintf(`credentials:
  ptok: {source: {value: %s}, %s}
  btok: {source: {value: %s}, %s}
upstreams:
  p: {url: %s, credential: ptok}
  b: {url: %s, credential: btok}
routes:
  - {tool: search, %stargets: [p__echo, b__echo]}
`, routeTok1, past, routeTok2, tc.backupCred, p.url(), b.url(), tc.on), nil, nil)
			// Both up: while one makes its first connection, no switch is reported.
			waitFor(t, ctx, func() bool {
				return g.catalog.hasTool("search") && g.upstream("p").session.Load() != nil && g.upstream("b").session.Load() != nil
			})
			rh := g.Health().Routes["search"]
			if diff := cmp.Diff(tc.wantTargets, rh.Targets); rh.Active != tc.wantActive || diff != "" {
				t.Errorf("health active %q, want %q; targets mismatch (-want +got):\n%s", rh.Active, tc.wantActive, diff)
			}
			for _, st := range g.routeTargetStates() {
				if st.Active != (st.Target == tc.wantActive) {
					t.Errorf("metrics: %+v, want %s active", st, tc.wantActive)
				}
			}
			reached := func() map[string]int { return map[string]int{"p__echo": len(p.calls()), "b__echo": len(b.calls())} }
			if got, _ := servedBy(t, ctx, cs, "search"); got != "bearer:echo:hi" {
				t.Fatalf("call: %q, want served", got)
			}
			wantReached := map[string]int{"p__echo": 0, "b__echo": 0}
			wantReached[tc.wantActive]++
			if diff := cmp.Diff(wantReached, reached()); diff != "" {
				t.Errorf("calls reaching each target mismatch (-want +got):\n%s", diff)
			}
			g.checkRoutes() // what watchRoutes does on any change
			var want []routeSwitch
			if tc.wantActive != "p__echo" {
				want = []routeSwitch{{KindRouteSwitched, "p__echo", tc.wantActive, "credential_expired"}}
			}
			if diff := cmp.Diff(want, routeSwitches(g, "search")); diff != "" {
				t.Errorf("route events mismatch (-want +got):\n%s", diff)
			}
			if tc.wantActive == "b__echo" {
				// The backup fails: calls go back to the primary, which
				// is only a last resort, and the switch says why; nothing
				// "recovered" (found trying the gateway from outside).
				_ = b.http.Listener.Close()
				b.http.CloseClientConnections()
				if got, _ := servedBy(t, ctx, cs, "search"); got != "bearer:echo:hi" {
					t.Fatalf("call with the backup down: %q, want the primary's answer", got)
				}
				evs := routeSwitches(g, "search")
				if last := evs[len(evs)-1]; last.From != "b__echo" || last.To != "p__echo" || last.Reason == "recovered" || last.Reason == "" {
					t.Errorf("route events %+v; want the return to the primary with the backup's failure as reason", evs)
				}
			}
			if tc.wantActive != "p__echo" || tc.on != "" {
				return
			}
			// The provider answers the primary's value expired: the call
			// moves on to the other last resort, and so does /health.
			p.refuse(routeTok1, rejectExpired)
			_, m := servedBy(t, ctx, cs, "search")
			wantMeta := &routing.Meta{ServedBy: "b__echo", Reason: "credential_expired", Attempts: []routing.Attempt{{Target: "p__echo", Reason: "credential_expired"}}}
			if diff := cmp.Diff(wantMeta, m); diff != "" {
				t.Errorf("call meeting the rejection: meta mismatch (-want +got):\n%s", diff)
			}
			want = append(want, routeSwitch{KindRouteSwitched, "p__echo", "b__echo", "credential_expired"})
			if diff := cmp.Diff(want, routeSwitches(g, "search")); diff != "" {
				t.Errorf("route events after the rejection mismatch (-want +got):\n%s", diff)
			}
			if rh := g.Health().Routes["search"]; rh.Active != "b__echo" || rh.Reason != "credential_expired" {
				t.Errorf("health %+v; want b__echo active, credential_expired", rh)
			}
			servedBy(t, ctx, cs, "search")
			if diff := cmp.Diff(map[string]int{"p__echo": 2, "b__echo": 2}, reached()); diff != "" {
				t.Errorf("calls reaching each target mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

// TestRouteRenewalBeforeLastResort: a backup kept only as a last resort (its
// credential past its expires_at) does not make a call the provider
// rejected skip the primary's renewal: the call waits for it and is resent
// on the primary, as without a backup.
func TestRouteRenewalBeforeLastResort(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	p, b := newBearerUpstream(t, "echo"), newBearerUpstream(t, "echo")
	p.accept(routeTok1)
	b.accept(routeTok2)
	path := tokenFile(t, routeTok1)
	g, cs, _ := credGateway(t, ctx, fmt.Sprintf(`credentials:
  ptok: {source: {exec: {command: [cat, %s]}}}
  btok: {source: {value: %s}, expires_at: "2020-01-01T00:00:00Z"}
upstreams:
  p: {url: %s, credential: ptok}
  b: {url: %s, credential: btok}
routes:
  - {tool: search, targets: [p__echo, b__echo]}
`, path, routeTok2, p.url(), b.url()), nil, nil)
	waitFor(t, ctx, func() bool { return g.catalog.hasTool("search") })
	callOK(t, ctx, cs, "search")
	p.refuse(routeTok1, rejectExpired)
	p.accept(routeTok2)
	writeFile(t, path, routeTok2)
	if got, m := servedBy(t, ctx, cs, "search"); m != nil || p.lastToken() != routeTok2 || len(b.calls()) != 0 {
		t.Errorf("rejected as expired: %q, meta %+v, last token %q, %d calls to the backup; want the primary, resent with the renewed token",
			got, m, p.lastToken(), len(b.calls()))
	}
}

// TestRouteReorderInFlight: a reload that reorders a route's targets while
// a call to the old primary is in flight reports one switch, the one
// /health shows; the call's end, which spoke for the old order, reported a
// switch back (and the next call a third), none of which /health showed.
func TestRouteReorderInFlight(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	held, release := make(chan struct{}), make(chan struct{})
	server := func(name string, hold bool) string {
		s := mcp.NewServer(&mcp.Implementation{Name: name, Version: "1"}, nil)
		s.AddTool(&mcp.Tool{Name: "search", InputSchema: json.RawMessage(`{"type":"object"}`)}, func(ctx context.Context, _ *mcp.CallToolRequest) (*mcp.CallToolResult, error) {
			if hold {
				close(held)
				hold = false
				select {
				case <-release:
				case <-ctx.Done():
				}
			}
			return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: name}}}, nil
		})
		return serveMCP(t, s)
	}
	pURL, bURL := server("p", true), server("b", false)
	conf := func(targets string) string {
		return fmt.Sprintf("upstreams:\n  p: {url: %s}\n  b: {url: %s}\nroutes:\n  - {tool: search, targets: [%s]}\n", pURL, bURL, targets)
	}
	g, cs := startGateway(t, ctx, conf("p__search, b__search"))
	// As after an earlier switch back to p (a recovery): p is the last
	// target reported.
	g.routing.reported.Store("search", "p__search")
	done := make(chan string, 1)
	go func() {
		res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "search", Arguments: map[string]any{}})
		if err != nil || res.IsError {
			done <- fmt.Sprint("error: ", err, res)
			return
		}
		done <- text(res)
	}()
	<-held
	if err := reloadTo(t, g, conf("b__search, p__search")); err != nil {
		t.Fatal(err)
	}
	// The reload's own report first, as /health shows it.
	waitFor(t, ctx, func() bool {
		return slices.ContainsFunc(g.EventLog(), func(e Event) bool { return e.Type == EventRoute && e.Target == "b__search" })
	})
	close(release)
	if got := <-done; got != "p" {
		t.Errorf("the call in flight: %q; want p's answer", got)
	}
	if got := text(callTool(t, ctx, cs, "search")); got != "b" {
		t.Errorf("the next call: %q; want b, the new primary", got)
	}
	var switches []string
	for _, e := range g.EventLog() {
		if e.Type == EventRoute {
			switches = append(switches, e.Kind+" "+e.From+"→"+e.Target)
		}
	}
	if len(switches) > 1 {
		t.Errorf("route events %v; want at most the one switch to b__search", switches)
	}
	if a := g.Health().Routes["search"].Active; a != "b__search" {
		t.Errorf("/health active target %q; want b__search", a)
	}
}

// Regression test for a trial's finding: a target its upstream does not
// list (a mistyped name) was reported active and usable, and every call was
// sent to it and failed there, the working backup never tried. Once the
// upstream has listed its tools, such a target is passed over, whatever
// `on` says, and /health says why.
func TestRouteTargetNotListed(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	s := newRouteScene(t, ctx, "", "routes:\n  - {tool: search, targets: [p__ehco, b__echo], on: [credential_revoked]}\n", nil)
	p := s.g.snap.Load().byName["p"]
	waitFor(t, ctx, func() bool { p.mu.Lock(); defer p.mu.Unlock(); return p.catComplete })

	out, meta := servedBy(t, ctx, s.cs, "search")
	want := &routing.Meta{ServedBy: "b__echo", Reason: routing.ReasonNotListed,
		Attempts: []routing.Attempt{{Target: "p__ehco", Reason: routing.ReasonNotListed}}}
	if diff := cmp.Diff(want, meta); out == "" || diff != "" {
		t.Errorf("search = %q; route meta mismatch (-want +got):\n%s", out, diff)
	}
	if n := s.primaryCalls(); n != 0 {
		t.Errorf("the primary was sent %d calls of a tool it does not list", n)
	}
	rh := s.g.Health().Routes["search"]
	if rh.Active != "b__echo" || rh.Reason != routing.ReasonNotListed || len(rh.Targets) != 2 ||
		rh.Targets[0].Usable || rh.Targets[0].Reason != routing.ReasonNotListed {
		t.Errorf("health routes.search = %+v; want b__echo active, p__ehco unusable as tool_not_listed", rh)
	}
}

// Regression test for a review's finding: a target skipped as not listed
// hid the failure of the unusable target before it; the call answered
// not_found. It answers that target's failure.
func TestRouteSkippedKeepsFailure(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	s := newRouteScene(t, ctx, "", "routes:\n  - {tool: search, targets: [p__echo, b__ehco], on: [credential_revoked]}\n", nil)
	b := s.g.snap.Load().byName["b"]
	waitFor(t, ctx, func() bool { b.mu.Lock(); defer b.mu.Unlock(); return b.catComplete })
	s.p.refuse(routeTok1, rejectRevoked)
	if f := failureOf(t, callTool(t, ctx, s.cs, "p__echo")); f.Subtype != authmap.SubtypeCredentialRevoked {
		t.Fatalf("p__echo: %+v, want credential_revoked", f)
	}
	res := callTool(t, ctx, s.cs, "search")
	if f := failureOf(t, res); f.Subtype != authmap.SubtypeCredentialRevoked {
		t.Errorf("search: %+v; want p's credential_revoked", f)
	}
	want := &routing.Meta{Reason: "credential_revoked", Attempts: []routing.Attempt{
		{Target: "p__echo", Reason: "credential_revoked"}, {Target: "b__ehco", Reason: routing.ReasonNotListed}}}
	if diff := cmp.Diff(want, routeMeta(t, res)); diff != "" {
		t.Errorf("route meta mismatch (-want +got):\n%s", diff) // a re-check found p twice, b left out
	}
	if rh := s.g.Health().Routes["search"]; rh.Reason != "credential_revoked" {
		t.Errorf("health routes.search %+v; want reason credential_revoked", rh)
	}
}
