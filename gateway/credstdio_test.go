package gateway

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/credgate/credgate/authmap"
)

// fingerprint names a token without showing it (results are redacted).
func fingerprint(tok string) string {
	sum := sha256.Sum256([]byte(tok))
	return "fp:" + hex.EncodeToString(sum[:6])
}

// envTokenUpstream is a stdio MCP server whose tools report the TOKEN its
// environment holds: whoami at once, wait once the file named in its
// arguments exists (creating <file>.started first).
func envTokenUpstream() {
	if f := os.Getenv("STARTS"); f != "" { // counts the children started
		if fh, err := os.OpenFile(f, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o600); err == nil {
			_, _ = fh.WriteString("x")
			_ = fh.Close()
		}
	}
	if strings.HasPrefix(os.Getenv("TOKEN"), "npm-") {
		// npx failing on its registry, not on the server's provider.
		fmt.Fprintln(os.Stderr, "npm error code E401")
		fmt.Fprintln(os.Stderr, "npm error 401 Unauthorized - GET https://registry.npmjs.org/@org%2fprivate-mcp")
		os.Exit(1)
	}
	if strings.HasPrefix(os.Getenv("TOKEN"), "bad-") {
		// As a server checking its token at start does (GitHub's).
		fmt.Fprintln(os.Stderr, "Error: GET https://api.github.com/user: 401 Bad credentials")
		os.Exit(1)
	}
	srv := mcp.NewServer(&mcp.Implementation{Name: "envtoken", Version: "1"}, nil)
	me := func() *mcp.CallToolResult {
		return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: fingerprint(os.Getenv("TOKEN"))}}}
	}
	schema := json.RawMessage(`{"type":"object","properties":{"file":{"type":"string"}}}`)
	for _, name := range []string{"whoami", "read_whoami"} {
		srv.AddTool(&mcp.Tool{Name: name, InputSchema: schema}, func(context.Context, *mcp.CallToolRequest) (*mcp.CallToolResult, error) {
			return me(), nil
		})
	}
	srv.AddTool(&mcp.Tool{Name: "wait", InputSchema: schema}, func(ctx context.Context, req *mcp.CallToolRequest) (*mcp.CallToolResult, error) {
		var args struct{ File string }
		_ = json.Unmarshal(req.Params.Arguments, &args)
		_ = os.WriteFile(args.File+".started", nil, 0o600)
		for {
			if _, err := os.Stat(args.File); err == nil {
				return me(), nil
			}
			select {
			case <-ctx.Done():
				return nil, ctx.Err()
			case <-time.After(5 * time.Millisecond):
			}
		}
	})
	_ = srv.Run(context.Background(), &mcp.StdioTransport{})
}

func callText(t *testing.T, ctx context.Context, cs *mcp.ClientSession, tool string, args map[string]any) string {
	t.Helper()
	res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: tool, Arguments: args})
	if err != nil {
		t.Errorf("call %s: %v", tool, err)
		return ""
	}
	if res.IsError {
		t.Errorf("call %s failed: %s", tool, text(res))
	}
	return text(res)
}

// Regression test for issue 7 (stdio env injection): each credential's
// value reaches a child's environment, a per-tool credential gets a child of
// its own, and a rotated credential replaces its child gracefully: new
// calls go to a new child while a call in flight finishes on the old one.
func TestStdioEnvCredentialRotation(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	path := filepath.Join(dir, "token")
	writeFile(t, path, "env-one-0123456789")
	g, cs, _ := credGateway(t, ctx, fmt.Sprintf(`
credentials:
  tok: {source: {file: %s}, inject: {env: TOKEN}}
  rtok: {source: {value: env-read-0123456789}, inject: {env: TOKEN}}
upstreams:
  local:
    command: %q
    env: {%s: envtoken}
    credential: tok
    credentials: [{tools: ["read_*"], credential: rtok}]
`, path, self, rawUpstreamEnv), nil, nil)
	if got := callText(t, ctx, cs, "local__whoami", nil); got != fingerprint("env-one-0123456789") {
		t.Errorf("whoami = %q, want the default credential's value", got)
	}
	if got := callText(t, ctx, cs, "local__read_whoami", nil); got != fingerprint("env-read-0123456789") {
		t.Errorf("read_whoami = %q, want the per-tool credential's value", got)
	}

	release := filepath.Join(dir, "release")
	var wg sync.WaitGroup
	var inFlight string
	wg.Go(func() { inFlight = callText(t, ctx, cs, "local__wait", map[string]any{"file": release}) })
	waitFor(t, ctx, func() bool { _, err := os.Stat(release + ".started"); return err == nil })

	writeFile(t, path, "env-two-0123456789")
	cred := g.Credentials().Get("tok")
	waitFor(t, ctx, func() bool { return cred.Value() == "env-two-0123456789" })
	waitFor(t, ctx, func() bool { return callText(t, ctx, cs, "local__whoami", nil) == fingerprint("env-two-0123456789") })
	if err := os.WriteFile(release, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	if inFlight != fingerprint("env-one-0123456789") {
		t.Errorf("the call in flight during the rotation answered %q, want the old child's value", inFlight)
	}
	if got := callText(t, ctx, cs, "local__read_whoami", nil); got != fingerprint("env-read-0123456789") {
		t.Errorf("read_whoami after the rotation = %q", got)
	}
	if h := g.Health().Upstreams["local"]; h.Status != StatusUp {
		t.Errorf("upstream %s after the rotation, want up", h.Status)
	}
}

// TestStdioRotationRejectedAtStart: a rotated value whose child exits on
// the provider's rejection at start is a rejected rotation: the old child
// keeps serving, the credential holds the value it has again, with the
// rejection as last_error and a rejected_rotation event (health read
// healthy, with no event, and once the old value was revoked too every
// call was refused with no event or page).
func TestStdioRotationRejectedAtStart(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	g, cs, path := envTokenGateway(t, ctx, "env-one-0123456789")
	if got := callText(t, ctx, cs, "local__whoami", nil); got != fingerprint("env-one-0123456789") {
		t.Fatalf("whoami = %q, want the first value's", got)
	}
	writeFile(t, path, "bad-two-0123456789")
	cred := g.Credentials().Get("tok")
	waitFor(t, ctx, func() bool {
		le := cred.Snapshot(false).LastError
		return cred.Value() == "env-one-0123456789" && le != nil && le.Subtype == "credential_invalid"
	})
	if got := callText(t, ctx, cs, "local__whoami", nil); got != fingerprint("env-one-0123456789") {
		t.Errorf("whoami after the rejected rotation = %q, want the old child's value", got)
	}
	// The event follows the state it tells of (emitted once the
	// credential's lock is let go).
	waitFor(t, ctx, func() bool {
		for _, e := range g.Events() {
			if e.Kind == authmap.EventRejectedRotation && e.Credential == "tok" {
				return true
			}
		}
		return false
	})
}

// TestStdioRejectedAtStart: a child that exits at start saying the
// provider rejected its credential makes the upstream's failure the
// credential's (auth_failure, credential_invalid), and the credential
// invalid in health, not an outage (upstream_unavailable, the credential
// healthy).
func TestStdioRejectedAtStart(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	g, _, path := envTokenGateway(t, ctx, "bad-one-0123456789")
	cred := g.Credentials().Get("tok")
	waitFor(t, ctx, func() bool { return cred.Status() == authmap.StatusInvalid })
	if f := g.Health().Upstreams["local"].LastFailure; f == nil || f.Subtype != authmap.SubtypeCredentialInvalid {
		t.Errorf("the upstream's last failure = %+v, want credential_invalid", f)
	}
	if le := g.Health().Upstreams["local"].LastError; strings.Contains(le, "the next attempt asks") {
		t.Errorf("last_error %q blames the protocol version for a rejected credential", le)
	}
	// The value known dead starts no child again (each presented it to
	// the provider), until it changes.
	starts := childStarts(path)
	u := g.upstream("local")
	tries := u.connectFailures.Load()
	waitFor(t, ctx, func() bool { return u.connectFailures.Load() >= tries+3 }) // reconnects go on, with backoff
	if n := childStarts(path); n > starts+1 {
		t.Errorf("%d children started with the value known invalid, want at most one more", n-starts)
	}
	writeFile(t, path, "env-two-0123456789")
	waitFor(t, ctx, func() bool { return g.Health().Upstreams["local"].Status == StatusUp })
}

// envTokenGateway starts a gateway in front of one stdio envtoken upstream,
// "local" (provider github), whose TOKEN is credential tok, read from a file
// holding value; it returns the file's path too.
func envTokenGateway(t *testing.T, ctx context.Context, value string) (*Server, *mcp.ClientSession, string) {
	t.Helper()
	g, cs, path, _ := envTokenGatewayWith(t, ctx, value, "", "file: %s")
	return g, cs, path
}

// envTokenGatewayWith is envTokenGateway with head before the config and
// tok's source (a format taking the token file's path); it also returns the
// gateway's base URL.
func envTokenGatewayWith(t *testing.T, ctx context.Context, value, head, source string) (*Server, *mcp.ClientSession, string, string) {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	path := filepath.Join(dir, "token")
	writeFile(t, path, value)
	g, cs, base := credGateway(t, ctx, head+fmt.Sprintf(`
credentials:
  tok: {source: {`+source+`}, inject: {env: TOKEN}}
upstreams:
  local:
    command: %q
    env: {%s: envtoken, STARTS: %q}
    credential: tok
    provider: github
`, path, self, rawUpstreamEnv, filepath.Join(dir, "starts")), nil, nil)
	return g, cs, path, base
}

// childStarts returns how many envtoken children the gateway of
// envTokenGateway (its token file at path) started.
func childStarts(path string) int {
	b, _ := os.ReadFile(filepath.Join(filepath.Dir(path), "starts"))
	return len(b)
}

// TestStdioRegistryFailureIsNoRejection: a child whose start fails on a
// package registry's 401 (npx, a private package) is down, unavailable;
// its credential, which the registry never saw, is not found invalid.
func TestStdioRegistryFailureIsNoRejection(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	g, _, _ := envTokenGateway(t, ctx, "npm-one-0123456789")
	waitFor(t, ctx, func() bool { return g.Health().Upstreams["local"].LastFailure != nil })
	if f := g.Health().Upstreams["local"].LastFailure; f.Type != authmap.TypeUpstreamUnavailable {
		t.Errorf("the upstream's last failure = %+v, want upstream_unavailable", f)
	}
	if st := g.Credentials().Get("tok").Status(); st != authmap.StatusHealthy {
		t.Errorf("credential %s, want healthy (the registry's 401 is not about it)", st)
	}
}

// TestAdminReloadReportsRejectedRotation: an admin reload of a value that
// a stdio upstream's child then exits on answers with the rejection (502,
// changed false), not "changed", healthy, with the rejection coming later
// as an event only (found trying the gateway from outside).
func TestAdminReloadReportsRejectedRotation(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	g, cs, path, base := envTokenGatewayWith(t, ctx, "env-one-0123456789", "admin: {token: admin-token-0123456789}\n", "exec: {command: [cat, %s]}")
	if got := callText(t, ctx, cs, "local__whoami", nil); got != fingerprint("env-one-0123456789") {
		t.Fatalf("whoami = %q, want the first value's", got)
	}
	admin := map[string]string{"Authorization": "Bearer admin-token-0123456789"}
	writeFile(t, path, "bad-two-0123456789")
	code, body := post(t, base+"/admin/credentials/tok/reload", admin, "")
	if code != http.StatusBadGateway || !strings.Contains(body, `"changed": false`) || !strings.Contains(body, "was rejected when upstream") {
		t.Errorf("admin reload of a value the child exits on: %d %s; want 502, changed false, the rejection", code, body)
	}
	if strings.Contains(body, "bad-two-0123456789") {
		t.Errorf("the reload's answer holds the rejected value: %s", body)
	}
	if v := g.Credentials().Get("tok").Value(); v != "env-one-0123456789" {
		t.Errorf("after the rejected reload the credential holds %q", v)
	}
	writeFile(t, path, "env-three-0123456789")
	code, body = post(t, base+"/admin/credentials/tok/reload", admin, "")
	if code != http.StatusOK || !strings.Contains(body, `"changed": true`) {
		t.Errorf("admin reload of a good value: %d %s; want 200, changed", code, body)
	}
	if got := callText(t, ctx, cs, "local__whoami", nil); got != fingerprint("env-three-0123456789") {
		t.Errorf("whoami after the good reload = %q, want the new value's (the reload waited for its child)", got)
	}
}

// TestAdminReloadOfDownUpstream: a stdio upstream down on its rejected
// credential is tried again with the reloaded value before the reload
// answers: 502 with the rejection for another bad value, 200 for a good
// one, after which calls work at once. It answered 200, healthy, at once
// for both, and the first calls after the good one failed on the value
// before it (found trying the gateway from outside).
func TestAdminReloadOfDownUpstream(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	g, cs, path, base := envTokenGatewayWith(t, ctx, "bad-one-0123456789", "admin: {token: admin-token-0123456789}\n", "exec: {command: [cat, %s]}")
	if h := g.Health().Upstreams["local"]; h.Status == StatusUp {
		t.Fatalf("the upstream is up on a rejected value")
	}
	admin := map[string]string{"Authorization": "Bearer admin-token-0123456789"}
	writeFile(t, path, "bad-two-0123456789")
	code, body := post(t, base+"/admin/credentials/tok/reload", admin, "")
	if code != http.StatusBadGateway || !strings.Contains(body, "child exited on its value") || !strings.Contains(body, "401 Bad credentials") {
		t.Errorf("admin reload of another rejected value, the upstream down: %d %s; want 502 with the rejection", code, body)
	}
	if strings.Contains(body, "bad-two-0123456789") {
		t.Errorf("the reload's answer holds the value: %s", body)
	}
	writeFile(t, path, "env-three-0123456789")
	code, body = post(t, base+"/admin/credentials/tok/reload", admin, "")
	if code != http.StatusOK || !strings.Contains(body, `"changed": true`) || !strings.Contains(body, `"status": "healthy"`) {
		t.Errorf("admin reload of a good value, the upstream down: %d %s; want 200, changed, healthy", code, body)
	}
	if got := callText(t, ctx, cs, "local__whoami", nil); got != fingerprint("env-three-0123456789") {
		t.Errorf("the call right after the good reload answered %q, want the new value's", got)
	}
}
