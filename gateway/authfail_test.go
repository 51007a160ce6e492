package gateway

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/modelcontextprotocol/go-sdk/mcp"
	"github.com/rs/zerolog"

	"github.com/credgate/credgate/authmap"
)

// secret is a credential value that must never leave the gateway.
const secret = "ghp_0123456789abcdefSECRETSECRETSECRET0123"

const githubBadCredentials = `{"message": "Bad credentials", "documentation_url": "https://docs.github.com/rest", "status": "401"}`

// failureOf returns the failure object of a tools/call result, checking that
// it travels as the issue says: isError, content[0] with a human line and
// the JSON, and _meta["dev.credgate/error"].
func failureOf(t *testing.T, res *mcp.CallToolResult) authmap.Failure {
	t.Helper()
	if !res.IsError {
		t.Fatalf("result is not an error: %s", text(res))
	}
	raw, err := json.Marshal(res.Meta[MetaKey])
	if err != nil {
		t.Fatal(err)
	}
	var f authmap.Failure
	if err := json.Unmarshal(raw, &f); err != nil || f.Type == "" {
		t.Fatalf("_meta[%s] = %s: not a failure object (%v)", MetaKey, raw, err)
	}
	first, ok := res.Content[0].(*mcp.TextContent)
	if !ok {
		t.Fatalf("content[0] is %T, want text", res.Content[0])
	}
	line, js, ok := strings.Cut(first.Text, "\n")
	if !ok || line == "" {
		t.Fatalf("content[0] = %q, want a human line then the JSON", first.Text)
	}
	var inText authmap.Failure
	if err := json.Unmarshal([]byte(js), &inText); err != nil {
		t.Fatalf("content[0] JSON %q: %v", js, err)
	}
	if diff := cmp.Diff(f, inText); diff != "" {
		t.Errorf("content[0] JSON differs from _meta (-meta +content):\n%s", diff)
	}
	return f
}

// syncBuffer collects logs written from many goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestAuthFailureDelivery(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	up := newTestUpstream(t, "gh", "list_issues")
	var logs syncBuffer
	g := newTestGatewayLogged(t, ctx, fmt.Sprintf(`
upstreams:
  github:
    url: %s
    headers: {Authorization: "Bearer %s"}
    classify_results: true
`, up.url(), secret), zerolog.New(&logs).Level(zerolog.DebugLevel))
	cs := agent(t, ctx, g, nil)
	call := func(arg string) *mcp.CallToolResult {
		t.Helper()
		res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "github__list_issues", Arguments: map[string]any{"text": arg}})
		if err != nil {
			t.Fatalf("call: %v", err)
		}
		return res
	}

	t.Run("JSON-RPC error carrying the provider's error", func(t *testing.T) {
		f := failureOf(t, call("jsonrpc:Authentication Failed: Bad credentials"))
		if f.Type != authmap.TypeAuthFailure || f.Upstream != "github" || f.Credential != "upstreams.github.headers.Authorization" {
			t.Errorf("failure = %+v", f)
		}
	})
	t.Run("isError result with the provider's status and body", func(t *testing.T) {
		f := failureOf(t, call("iserror:failed to list issues: GET https://api.github.com/repos/o/r/issues: 401 Bad credentials []"))
		if f.Type != authmap.TypeAuthFailure || f.Subtype != authmap.SubtypeCredentialInvalid || f.Provider != "github" {
			t.Errorf("failure = %+v", f)
		}
	})
	t.Run("isError false but the text is a provider error (classify_results)", func(t *testing.T) {
		f := failureOf(t, call("text:HTTP 401 Unauthorized\n"+githubBadCredentials))
		if f.Type != authmap.TypeAuthFailure {
			t.Errorf("failure = %+v", f)
		}
	})
	t.Run("ordinary results pass untouched", func(t *testing.T) {
		res := call("hello")
		if res.IsError || text(res) != "gh:list_issues:hello" || res.Meta[MetaKey] != nil {
			t.Errorf("result = %+v", res)
		}
	})
	t.Run("HTTP 401 echoing the token is redacted", func(t *testing.T) {
		up.fail.Store(&httpFailure{status: 401, header: map[string]string{"Content-Type": "application/json", "X-RateLimit-Remaining": "0"},
			body: `{"message": "Bad credentials: token ` + secret + ` is not valid", "documentation_url": "https://docs.github.com/rest"}`})
		defer up.fail.Store(nil)
		res := call("x")
		f := failureOf(t, res)
		if f.Subtype != authmap.SubtypeCredentialInvalid {
			t.Errorf("subtype = %q, want credential_invalid (x-ratelimit-remaining: 0 on a 401 is not a rate limit)", f.Subtype)
		}
		raw, _ := json.Marshal(res)
		if strings.Contains(string(raw), secret) {
			t.Errorf("the secret reached the agent: %s", raw)
		}
	})
	t.Run("credential rejected at reconnect: health and calls say auth_failure", func(t *testing.T) {
		up.fail.Store(&httpFailure{status: 401, header: map[string]string{"Content-Type": "application/json"}, body: githubBadCredentials})
		defer up.fail.Store(nil)
		u := g.upstream("github")
		if cs := u.session.Load(); cs != nil {
			u.lost(cs, mcp.ErrConnectionClosed) // as if a call had found the connection gone
		}
		waitFor(t, ctx, func() bool {
			h := g.Health().Upstreams["github"]
			return h.LastFailure != nil && h.LastFailure.Type == authmap.TypeAuthFailure
		})
		f := failureOf(t, call("x"))
		if f.Type != authmap.TypeAuthFailure {
			t.Errorf("call to an upstream whose credential was rejected = %+v, want auth_failure", f)
		}
	})
	t.Run("secrets never logged or reported", func(t *testing.T) {
		hj, _ := json.Marshal(g.Health())
		for what, s := range map[string]string{"logs": logs.String(), "health": string(hj)} {
			if strings.Contains(s, secret) {
				t.Errorf("%s contain the secret", what)
			}
		}
		if !strings.Contains(logs.String(), `"subtype":"credential_invalid"`) {
			t.Errorf("auth failures were not logged with their subtype:\n%s", logs.String())
		}
	})
	// Last, after the reconnect above: an inline header is no credential
	// of the config's, so the limit holds nothing back (each call is sent
	// and classified on its own).
	t.Run("HTTP 429 mid-session", func(t *testing.T) {
		waitFor(t, ctx, func() bool { return g.Health().Upstreams["github"].Status == StatusUp })
		up.fail.Store(&httpFailure{status: 429, header: map[string]string{"Retry-After": "30", "Content-Type": "application/json"},
			body: `{"message":"You have exceeded a secondary rate limit. Please wait a few minutes before you try again."}`})
		defer up.fail.Store(nil)
		f := failureOf(t, call("x"))
		if f.Subtype != authmap.SubtypeRateLimitReached || !f.Retryable || f.RetryAfterSeconds == nil || *f.RetryAfterSeconds != 30 {
			t.Errorf("failure = %+v", f)
		}
		up.fail.Store(nil)
		if res := call("x"); res.IsError {
			t.Errorf("the call after it: %s; want it sent and served", text(res))
		}
	})
}

// TestKnownExpiry: where the wire cannot tell expired from revoked, what the
// gateway knows decides: a configured expiry in the past, or GitHub's
// token-expiration header seen on an earlier response.
func TestKnownExpiry(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	configured := newTestUpstream(t, "c", "list")
	seen := newTestUpstream(t, "s", "list")
	_, cs := startGateway(t, ctx, fmt.Sprintf(`
upstreams:
  configured: {url: %s, credential_expires_at: "2020-01-01T00:00:00Z"}
  seen: {url: %s}
`, configured.url(), seen.url()))
	// An earlier successful response announced the expiry.
	seen.fail.Store(&httpFailure{header: map[string]string{"github-authentication-token-expiration": "2021-06-01 09:00:00 UTC"}})
	if res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "seen__list"}); err != nil || res.IsError {
		t.Fatalf("call announcing the expiry = %v, %v", res, err)
	}
	for _, up := range []*testUpstream{configured, seen} {
		up.fail.Store(&httpFailure{status: 401, header: map[string]string{"Content-Type": "application/json"}, body: githubBadCredentials})
	}
	for _, tool := range []string{"configured__list", "seen__list"} {
		res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: tool})
		if err != nil {
			t.Fatal(err)
		}
		if f := failureOf(t, res); f.Subtype != authmap.SubtypeCredentialExpired {
			t.Errorf("%s: subtype = %q, want credential_expired (the known expiry has passed)", tool, f.Subtype)
		}
	}
}

// TestOpsRules: rules from the config are tried before the built-in ones.
func TestOpsRules(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	up := newTestUpstream(t, "acme", "get")
	_, cs := startGateway(t, ctx, fmt.Sprintf(`
upstreams:
  acme: {url: %s}
classify:
  rules:
    - provider: generic
      match: {status: 403, header: {X-Acme-Reason: "^key-expired$"}}
      subtype: credential_expired
      recovery: rotate
`, up.url()))
	up.fail.Store(&httpFailure{status: 403, header: map[string]string{"X-Acme-Reason": "key-expired"}, body: `{"error":"nope"}`})
	res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "acme__get"})
	if err != nil {
		t.Fatal(err)
	}
	if f := failureOf(t, res); f.Subtype != authmap.SubtypeCredentialExpired || f.Recovery != authmap.RecoveryRotate {
		t.Errorf("failure = %+v, want the ops rule's credential_expired/rotate (built-in: permission_denied)", f)
	}
}
