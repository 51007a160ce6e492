package gateway

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// TestDenyHoldsForUnlistedNames is the regression test for issue 6 item 4:
// with deny ["*_delete"], a tool the catalog never listed ("repo/drop_delete"
// cannot be exposed: '/' is not allowed in exposed names) must not run
// upstream when an agent calls it by name, prefixed or not. path.Match let
// '*' stop at '/', so the call went through.
func TestDenyHoldsForUnlistedNames(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	a := newTestUpstream(t, "a", "repo/drop_delete", "echo")
	b := newTestUpstream(t, "b", "repo/drop_delete", "echo")
	_, cs := startGateway(t, ctx, fmt.Sprintf(`
upstreams:
  a:
    url: %s
    tools: {deny: ["*_delete"]}
  b:
    url: %s
    prefix: ""
    tools: {allow: ["e*"]}
`, a.url(), b.url()))

	for _, name := range []string{"a__repo/drop_delete", "repo/drop_delete"} {
		res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: name, Arguments: map[string]any{"text": "x"}})
		if err == nil && !res.IsError {
			t.Errorf("call %s = %q, want it refused as an unknown tool", name, text(res))
		}
	}
	if n := a.calls.Load() + b.calls.Load(); n != 0 {
		t.Errorf("upstreams ran %d calls to denied tools, want 0", n)
	}
	// What the filter allows still goes through, listed or not.
	for name, want := range map[string]string{"a__echo": "a:echo:x", "echo": "b:echo:x"} {
		res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: name, Arguments: map[string]any{"text": "x"}})
		if err != nil || text(res) != want {
			t.Errorf("call %s = %v, %v; want %q", name, res, err, want)
		}
	}
}

// TestNoShadowingByUnprefixedUpstream is the regression test for issue 6
// item 5: an unprefixed upstream listed first that offers "h__echo" must not
// capture calls meant for upstream h's "echo", whether h is up (listed name)
// or down (unlisted name); the refused name shows in /health problems and in
// a warning.
func TestNoShadowingByUnprefixedUpstream(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	plain := newTestUpstream(t, "plain", "h__echo", "g__echo", "own")
	h := newTestUpstream(t, "h", "echo")
	var log syncBuffer
	g, cs := startGatewayLogged(t, ctx, fmt.Sprintf(`
upstreams:
  plain:
    url: %s
    prefix: ""
  h:
    url: %s
  g:
    url: "http://127.0.0.1:1/mcp"
`, plain.url(), h.url()), &log)

	got := toolNames(t, ctx, cs)
	if strings.Join(got, ",") != "h__echo,own" {
		t.Errorf("tools = %v, want [h__echo own]: plain's h__echo and g__echo refused", got)
	}
	res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "h__echo", Arguments: map[string]any{"text": "x"}})
	if err != nil || text(res) != "h:echo:x" {
		t.Errorf("call h__echo = %v, %v; want upstream h's echo", res, err)
	}
	// g is down and never listed: its name reports g unavailable, and never
	// reaches the unprefixed upstream that offers the same name.
	res, err = cs.CallTool(ctx, &mcp.CallToolParams{Name: "g__echo", Arguments: map[string]any{"text": "x"}})
	if err != nil || !res.IsError {
		t.Errorf("call g__echo = %v, %v; want g's unavailable failure", res, err)
	} else if m, _ := res.Meta[MetaKey].(map[string]any); m["upstream"] != "g" {
		t.Errorf("call g__echo failure _meta = %v, want it to name upstream g", res.Meta)
	}
	if n := plain.calls.Load(); n != 0 {
		t.Errorf("the unprefixed upstream ran %d calls meant for others, want 0", n)
	}

	reported := map[string]string{}
	for _, p := range g.Health().Upstreams["plain"].Problems {
		reported[p.Name] = p.Reason
	}
	for _, name := range []string{"h__echo", "g__echo"} {
		if !strings.Contains(reported[name], "carries the prefix") {
			t.Errorf("health problems of plain = %v, want %s refused for carrying another upstream's prefix", reported, name)
		}
	}
	if l := log.String(); !strings.Contains(l, `"level":"warn"`) || !strings.Contains(l, `"name":"h__echo"`) {
		t.Errorf("no warning about the refused name; log:\n%s", l)
	}
}

// TestGlobErrorsNameTheKey: every invalid glob is reported at load, in one
// pass, naming its key (issue 6 item 4: globs are compiled at load).
func TestGlobErrorsNameTheKey(t *testing.T) {
	t.Parallel()
	_, err := ParseConfig([]byte("upstreams:\n  x:\n    command: c\n    tools: {allow: [ok, '[z-a]'], deny: ['*', 'a\\']}\n"), nil)
	if err == nil {
		t.Fatal("ParseConfig accepted invalid globs")
	}
	for _, want := range []string{`upstreams.x.tools.allow[1]: invalid glob "[z-a]"`, `upstreams.x.tools.deny[1]: invalid glob "a\\"`} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not contain %q", err, want)
		}
	}
	if strings.Contains(err.Error(), "allow[0]") || strings.Contains(err.Error(), "deny[0]") {
		t.Errorf("error %q reports a valid glob", err)
	}
}

// TestCredentialNameFromConfig: without credential, the place a failure
// names as the upstream's credential is the first header or env entry
// whose name says it holds one, by the redaction's rule: NODE_PATH and
// PATH were named (a substring "PAT"), and ops told to rotate them.
func TestCredentialNameFromConfig(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		env, headers map[string]string
		want         string
	}{
		{env: map[string]string{"NODE_PATH": "/x", "PATH": "/bin", "PYTHONPATH": "/y", "GOPATH": "/z"}, want: ""},
		{env: map[string]string{"NODE_PATH": "/x", "GITHUB_PAT": "p"}, want: "upstreams.a.env.GITHUB_PAT"},
		{env: map[string]string{"API_KEY": "k", "HOME": "/h"}, want: "upstreams.a.env.API_KEY"},
		{headers: map[string]string{"X-Author": "me", "X-Api-Key": "k"}, want: "upstreams.a.headers.X-Api-Key"},
		{headers: map[string]string{"Authorization": "Bearer x"}, want: "upstreams.a.headers.Authorization"},
	} {
		u := &upstream{name: "a", cfg: &UpstreamConfig{Env: tt.env, Headers: tt.headers}}
		if got := u.findCredentialName(); got != tt.want {
			t.Errorf("env %v, headers %v: %q; want %q", tt.env, tt.headers, got, tt.want)
		}
	}
}
