package authmap

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func mustNew(t testing.TB, opts *Options) *Classifier {
	t.Helper()
	c, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func corpusByID(t testing.TB) map[string]sample {
	m := map[string]sample{}
	for _, s := range loadSamples(t, "testdata/corpus.json") {
		m[s.ID] = s
	}
	return m
}

// TestClassifyTextShapes wraps corpus bodies in the shapes MCP servers and clients produce.
func TestClassifyTextShapes(t *testing.T) {
	t.Parallel()
	c := mustNew(t, nil)
	corpus := corpusByID(t)
	type want struct {
		Type    Type
		Subtype Subtype
	}
	body := func(id string) string { return corpus[id].Body }
	tests := []struct {
		name string
		text string
		want want
	}{
		{"formatGitHubError auth", "Authentication Failed: Bad credentials", want{TypeAuthFailure, SubtypeCredentialInvalid}},
		{"formatGitHubError permission", "Permission Denied: Resource not accessible by integration", want{TypeAuthFailure, SubtypeInsufficientScope}},
		{"formatGitHubError rate", "Rate Limit Exceeded: API rate limit exceeded for user ID 1.\nResets at: 2025-06-01T12:00:00.000Z", want{TypeAuthFailure, SubtypeRateLimitReached}},
		{"formatGitHubError not found", "Not Found: Not Found", want{TypeNotFound, ""}},
		{"formatGitHubError validation", "Validation Error: Validation Failed", want{TypeInvalidRequest, ""}},
		{"go-github 401", "failed to list issues: GET https://api.github.com/repos/o/r/issues: 401 Bad credentials []", want{TypeAuthFailure, SubtypeCredentialInvalid}},
		{"go-github 404", "failed to get file: GET https://api.github.com/repos/o/r/contents/x: 404 Not Found []", want{TypeNotFound, ""}},
		{"MCP error prefix", "MCP error -32603: failed to list issues: GET https://api.github.com/repos/o/r/issues: 401 Bad credentials []", want{TypeAuthFailure, SubtypeCredentialInvalid}},
		{"tool text status", "Error: GitHub API error: 401", want{TypeAuthFailure, SubtypeCredentialInvalid}},
		{"HTTP + google expired body", "HTTP 401 Unauthorized\n" + body("google-401-access-token-expired"), want{TypeAuthFailure, SubtypeCredentialExpired}},
		{"HTTP/1.1 + stripe expired body", "HTTP/1.1 401 Unauthorized\r\n\r\n" + body("stripe-401-api-key-expired"), want{TypeAuthFailure, SubtypeCredentialExpired}},
		{"status + openai quota body", "upstream returned status 429: " + body("openai-429-insufficient-quota"), want{TypeAuthFailure, SubtypeQuotaExhausted}},
		{"bare slack body", body("slack-200-token-expired"), want{TypeAuthFailure, SubtypeCredentialExpired}},
		{"bare entra body", body("entra-400-aadsts50173-revoked"), want{TypeAuthFailure, SubtypeCredentialRevoked}},
		{"bare notion body", body("notion-403-restricted-resource"), want{TypeAuthFailure, SubtypeInsufficientScope}},
		{"bare vault body", body("vault-403-invalid-token"), want{TypeAuthFailure, SubtypeCredentialInvalid}},
		{"bare aws xml", body("aws-iam-query-expiredtoken-xml"), want{TypeAuthFailure, SubtypeCredentialExpired}},
		{"bare anthropic quota", body("anthropic-400-credit-balance-trap"), want{TypeAuthFailure, SubtypeQuotaExhausted}},
		{"bare jira xml", body("jira-dc-401-xml"), want{TypeAuthFailure, SubtypeCredentialInvalid}},
		{"json-rpc error envelope", body("mcp-jsonrpc-error-server-github-ratelimit"), want{TypeAuthFailure, SubtypeRateLimitReached}},
		{"isError envelope", body("mcp-tool-result-iserror-401"), want{TypeAuthFailure, SubtypeCredentialInvalid}},
		{"google invalid_grant text", "refresh failed: oauth2: \"invalid_grant\" \"Token has been expired or revoked.\"", want{TypeAuthFailure, SubtypeCredentialRevoked}},
		{"anthropic x-api-key text", "Error: 401 invalid x-api-key", want{TypeAuthFailure, SubtypeCredentialInvalid}},
		{"SAML text", "GitHub API Error: Resource protected by organization SAML enforcement.", want{TypeAuthFailure, SubtypePermissionDenied}},
		{"secondary rate limit text", "You have exceeded a secondary rate limit. Please wait a few minutes before you try again.", want{TypeAuthFailure, SubtypeRateLimitReached}},
		{"5xx text", "MCP error -32603: HTTP 502 Bad Gateway", want{TypeUpstreamUnavailable, ""}},
		{"go-sdk arguments schema", `validating "arguments": validating root: required: missing properties: ["a" "b"]`, want{TypeInvalidRequest, ""}},
		// The TypeScript SDK server answers its own errors as a tool error result.
		{"ts-sdk arguments schema", `MCP error -32602: Input validation error: Invalid arguments for tool get-sum: [{"code": "invalid_type", "expected": "number"}]`, want{TypeInvalidRequest, ""}},
		{"ts-sdk unknown tool", "MCP error -32602: Tool nope not found", want{TypeNotFound, ""}},
		{"ts-sdk disabled tool", "MCP error -32602: Tool old disabled", want{TypeInvalidRequest, ""}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			f, ok := c.ClassifyText(tt.text, "", Knowledge{Now: testNow})
			if !ok {
				t.Fatalf("ClassifyText(%q) = false, want a failure", tt.text)
			}
			if diff := cmp.Diff(tt.want, want{f.Type, f.Subtype}); diff != "" {
				t.Errorf("mismatch (-want +got):\n%s\nfailure: %+v", diff, f)
			}
		})
	}
}

func TestClassifyTextUnrecognised(t *testing.T) {
	t.Parallel()
	c := mustNew(t, nil)
	for _, text := range []string{
		"",
		"Error: EACCES: permission denied, open '/etc/shadow'",
		"Invalid arguments for tool create_issue: title: Required",
		"file not found: README.md",
		`{"jsonrpc":"2.0","id":1,"result":{"content":[{"type":"text","text":"42 issues found"}]}}`,
	} {
		if f, ok := c.ClassifyText(text, "", Knowledge{}); ok {
			t.Errorf("ClassifyText(%q) = %+v, want not recognised", text, f)
		}
	}
}

// TestPathsAgree: the same provider body seen over HTTP, in a JSON-RPC error message and in an
// isError tool result classifies the same way.
func TestPathsAgree(t *testing.T) {
	t.Parallel()
	c := mustNew(t, nil)
	type view struct {
		Type      Type
		Subtype   Subtype
		Retryable bool
		Recovery  Recovery
	}
	for _, s := range loadSamples(t, "testdata/corpus.json") {
		if s.Status == nil || strings.TrimSpace(s.Body) == "" {
			continue
		}
		t.Run(s.ID, func(t *testing.T) {
			t.Parallel()
			k := Knowledge{Now: testNow}
			// Headers do not survive into message text; compare against the body-only HTTP view.
			base, ok := c.Classify(Response{Status: *s.Status, Body: []byte(s.Body)}, k)
			if !ok {
				t.Skip("success without headers")
			}
			msg := fmt.Sprintf("HTTP %d %s\n%s", *s.Status, http.StatusText(*s.Status), s.Body)
			rpc, _ := json.Marshal(map[string]any{"jsonrpc": "2.0", "id": 1, "error": map[string]any{"code": -32603, "message": msg}})
			tool, _ := json.Marshal(map[string]any{"jsonrpc": "2.0", "id": 1, "result": map[string]any{
				"content": []any{map[string]any{"type": "text", "text": msg}}, "isError": true}})
			want := view{base.Type, base.Subtype, base.Retryable, base.Recovery}
			paths := map[string]func() (Failure, bool){
				"json-rpc message":  func() (Failure, bool) { return c.ClassifyText("MCP error -32603: "+msg, "", k) },
				"json-rpc envelope": func() (Failure, bool) { return c.ClassifyText(string(rpc), "", k) },
				"isError text":      func() (Failure, bool) { return c.ClassifyText(msg, "", k) },
				"isError over HTTP": func() (Failure, bool) { return c.Classify(Response{Status: 200, Body: tool}, k) },
			}
			for name, fn := range paths {
				f, ok := fn()
				if !ok {
					t.Errorf("%s: not classified", name)
					continue
				}
				if diff := cmp.Diff(want, view{f.Type, f.Subtype, f.Retryable, f.Recovery}); diff != "" {
					t.Errorf("%s: mismatch (-want +got):\n%s", name, diff)
				}
			}
		})
	}
}

func TestSuccessIsNotFailure(t *testing.T) {
	t.Parallel()
	c := mustNew(t, nil)
	for _, r := range []Response{
		{Status: 200, Body: []byte(`{"ok":true,"channel":"C1"}`)},
		{Status: 200, Body: []byte(`{"data":{"viewer":{"login":"x"}}}`)},
		{Status: 204},
		{Status: 200, Header: http.Header{"X-Ratelimit-Remaining": {"0"}}, Body: []byte(`[]`)},
		{Status: 200, Body: []byte(`{"jsonrpc":"2.0","id":1,"result":{"content":[{"type":"text","text":"done"}]}}`)},
	} {
		if f, ok := c.Classify(r, Knowledge{}); ok {
			t.Errorf("Classify(%d %s) = %+v, want success", r.Status, r.Body, f)
		}
	}
}

func jwtWithExp(exp time.Time) string {
	enc := base64.RawURLEncoding.EncodeToString
	return enc([]byte(`{"alg":"RS256","typ":"JWT"}`)) + "." +
		enc([]byte(fmt.Sprintf(`{"sub":"u1","exp":%d}`, exp.Unix()))) + ".c2lnbmF0dXJl"
}

func TestKnowledge(t *testing.T) {
	t.Parallel()
	c := mustNew(t, nil)
	bad := Response{Status: 401, Body: []byte(`{"message":"Bad credentials","documentation_url":"https://docs.github.com/rest","status":"401"}`)}
	type view struct {
		Subtype   Subtype
		Retryable bool
		Recovery  Recovery
	}
	tests := []struct {
		name string
		r    Response
		k    Knowledge
		want view
	}{
		{"unknown", bad, Knowledge{Now: testNow}, view{SubtypeCredentialInvalid, false, RecoveryRotate}},
		{"expires_at past", bad, Knowledge{Now: testNow, ExpiresAt: testNow.Add(-time.Hour)}, view{SubtypeCredentialExpired, false, RecoveryRotate}},
		{"expires_at future", bad, Knowledge{Now: testNow, ExpiresAt: testNow.Add(time.Hour)}, view{SubtypeCredentialInvalid, false, RecoveryRotate}},
		{"expired renewable", bad, Knowledge{Now: testNow, ExpiresAt: testNow.Add(-time.Hour), Renewable: true}, view{SubtypeCredentialExpired, true, RecoveryRefresh}},
		{"refresh rejected", bad, Knowledge{Now: testNow, ExpiresAt: testNow.Add(-time.Hour), Renewable: true, RefreshRejected: true}, view{SubtypeCredentialRevoked, false, RecoveryReauthorize}},
		{"jwt exp past", bad, Knowledge{Now: testNow, Secrets: []string{jwtWithExp(testNow.Add(-time.Minute))}}, view{SubtypeCredentialExpired, false, RecoveryRotate}},
		{"jwt exp future", bad, Knowledge{Now: testNow, Secrets: []string{jwtWithExp(testNow.Add(time.Minute))}}, view{SubtypeCredentialInvalid, false, RecoveryRotate}},
		{"github expiration header", Response{Status: 401, Header: http.Header{"Github-Authentication-Token-Expiration": {"2025-05-01 09:00:00 UTC"}}, Body: bad.Body},
			Knowledge{Now: testNow}, view{SubtypeCredentialExpired, false, RecoveryRotate}},
		{"oauth expired renewable", Response{Status: 401, Header: http.Header{"Www-Authenticate": {`Bearer error="invalid_token", error_description="The access token expired"`}}},
			Knowledge{Now: testNow, Renewable: true}, view{SubtypeCredentialExpired, true, RecoveryRefresh}},
		{"oauth expired not renewable", Response{Status: 401, Header: http.Header{"Www-Authenticate": {`Bearer error="invalid_token", error_description="The access token expired"`}}},
			Knowledge{Now: testNow}, view{SubtypeCredentialExpired, false, RecoveryReauthorize}},
		{"refresh token expired is never renewable", Response{Status: 400, Body: []byte(`{"error":"invalid_grant","error_description":"AADSTS700082: The refresh token has expired due to inactivity.","error_codes":[700082]}`)},
			Knowledge{Now: testNow, Renewable: true}, view{SubtypeCredentialExpired, false, RecoveryReauthorize}},
		{"permission unaffected by expiry", Response{Status: 403, Body: []byte(`{"errors":["permission denied"]}`)},
			Knowledge{Now: testNow, ExpiresAt: testNow.Add(-time.Hour)}, view{SubtypePermissionDenied, false, RecoveryGrantPermission}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			f, ok := c.Classify(tt.r, tt.k)
			if !ok {
				t.Fatal("not classified")
			}
			if diff := cmp.Diff(tt.want, view{f.Subtype, f.Retryable, f.Recovery}); diff != "" {
				t.Errorf("mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

func TestRetryAfter(t *testing.T) {
	t.Parallel()
	c := mustNew(t, nil)
	k := Knowledge{Now: testNow}
	tests := []struct {
		name string
		r    Response
		want *int
	}{
		{"seconds", Response{Status: 429, Header: http.Header{"Retry-After": {"42"}}}, ptr(42)},
		{"http-date", Response{Status: 429, Header: http.Header{"Retry-After": {testNow.Add(90 * time.Second).Format(http.TimeFormat)}}}, ptr(90)},
		{"epoch reset", Response{Status: 403, Header: http.Header{"X-Ratelimit-Remaining": {"0"}, "X-Ratelimit-Reset": {fmt.Sprint(testNow.Add(5 * time.Minute).Unix())}}}, ptr(300)},
		{"reset in the past", Response{Status: 403, Header: http.Header{"X-Ratelimit-Remaining": {"0"}, "X-Ratelimit-Reset": {"1377013266"}}}, nil},
		{"openai bucket", Response{Status: 429, Header: http.Header{"X-Ratelimit-Remaining-Tokens": {"0"}, "X-Ratelimit-Reset-Tokens": {"18.642s"}}}, ptr(19)},
		{"openai bucket, remaining counts not sent", Response{Status: 429, Header: http.Header{"X-Ratelimit-Reset-Requests": {"20s"}, "X-Ratelimit-Reset-Tokens": {"6m0s"}}}, ptr(360)},
		{"openai bucket, none exhausted", Response{Status: 429, Header: http.Header{"X-Ratelimit-Remaining-Requests": {"3"}, "X-Ratelimit-Reset-Requests": {"20s"}}}, nil},
		{"anthropic bucket", Response{Status: 429, Header: http.Header{"Anthropic-Ratelimit-Requests-Remaining": {"0"}, "Anthropic-Ratelimit-Requests-Reset": {testNow.Add(30 * time.Second).Format(time.RFC3339)}}}, ptr(30)},
		{"503 retry-after", Response{Status: 503, Header: http.Header{"Retry-After": {"120"}}}, ptr(120)},
		{"no retry-after on 401", Response{Status: 401, Header: http.Header{"Retry-After": {"10"}}}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			f, _ := c.Classify(tt.r, k)
			if diff := cmp.Diff(tt.want, f.RetryAfterSeconds); diff != "" {
				t.Errorf("mismatch (-want +got):\n%s\nfailure: %+v", diff, f)
			}
		})
	}
}

func ptr[T any](v T) *T { return &v }

func TestRedaction(t *testing.T) {
	t.Parallel()
	c := mustNew(t, nil)
	const (
		ghToken  = "ghp_abcdefghijklmnopqrstuvwxyz0123456789"
		stripe   = "sk_live_51HqLyjWDarjtT1zdp7dc"
		ownValue = "my-very-own-secret-value"
	)
	jwt := jwtWithExp(testNow.Add(time.Hour))
	tests := []struct {
		name    string
		r       Response
		secrets []string
		banned  []string
	}{
		{"stripe echoes key", Response{Status: 401, Body: []byte(`{"error":{"message":"Invalid API Key provided: ` + stripe + `","type":"invalid_request_error"}}`)}, nil, []string{stripe}},
		{"openai echoes key", Response{Status: 401, Body: []byte(`{"error":{"message":"Incorrect API key provided: sk-proj-AbCdEfGhIjKlMnOpQrStUv. You can find your API key at https://platform.openai.com/account/api-keys.","type":"invalid_request_error","param":null,"code":"invalid_api_key"}}`)}, nil, []string{"sk-proj-AbCdEfGhIjKlMnOpQrStUv"}},
		{"known secret in body", Response{Status: 401, Body: []byte(`{"message":"token ` + ownValue + ` rejected"}`)}, []string{ownValue}, []string{ownValue}},
		{"github token in text", Response{Status: 401, Body: []byte("Bad credentials for " + ghToken)}, nil, []string{ghToken}},
		{"jwt bearer", Response{Status: 401, Body: []byte("invalid token: Bearer " + jwt)}, nil, []string{jwt}},
		{"aws key id", Response{Status: 403, Body: []byte("<Error><Code>InvalidAccessKeyId</Code><Message>Key AKIAIOSFODNN7EXAMPLE not found</Message></Error>")}, nil, []string{"AKIAIOSFODNN7EXAMPLE"}},
		{"query param", Response{Status: 401, Body: []byte("GET https://api.example.com/v1/x?api_key=abc123def456: unauthorized")}, nil, []string{"abc123def456"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			f, ok := c.Classify(tt.r, Knowledge{Secrets: tt.secrets, Credential: "cred"})
			if !ok {
				t.Fatal("not classified")
			}
			f.Upstream = "up"
			text, _ := c.ClassifyText(string(tt.r.Body), "", Knowledge{Secrets: tt.secrets})
			for _, out := range []string{f.Detail, f.Error(), f.ProviderCode, text.Detail, text.Error()} {
				for _, b := range tt.banned {
					if strings.Contains(out, b) {
						t.Errorf("secret %q leaked in %q", b, out)
					}
				}
			}
		})
	}
}

func TestRedact(t *testing.T) {
	t.Parallel()
	tests := []struct{ in, want string }{
		{"token xoxb-1234567890-abcdefghij here", "token [REDACTED] here"},
		{"Authorization: Bearer abcdef1234567890xyz", "Authorization: [REDACTED]"},
		{"WWW-Authenticate: Bearer resource_metadata=\"x\"", "WWW-Authenticate: Bearer resource_metadata=\"x\""},
		{"Access token validation failure.", "Access token validation failure."},
		{"key glpat-abcdefghij0123456789", "key [REDACTED]"},
		{"vault hvs.CAESIJlWh0v2wZ8hN1r7q1xrS8", "vault [REDACTED]"},
		{"npm npm_abcdefghijklmnopqrstuvwxyz0123456789", "npm [REDACTED]"},
		{"anthropic sk-ant-api03-abcdefghijklmnop", "anthropic [REDACTED]"},
		{"https://user:hunter22@example.com/x", "https://user:[REDACTED]@example.com/x"},
		{`{"access_token":"opaque-value"}`, `{"access_token":"[REDACTED]"}`},
		{"short ab", "short ab"},
		{"x-api-key: abc123secret", "x-api-key: [REDACTED]"},
		{`{"X-Api-Key: abc123secret"}`, `{"X-Api-Key: [REDACTED]"}`},
		{"upstreams.back.headers.X-Api-Key: want a string, got a list", "upstreams.back.headers.X-Api-Key: want a string, got a list"},
		{"headers.Authorization: want a string", "headers.Authorization: want a string"},
		{"x-goog-api-key: abc123secret", "x-goog-api-key: [REDACTED]"},
	}
	for _, tt := range tests {
		if got := Redact(tt.in, []string{"ab"}); got != tt.want {
			t.Errorf("Redact(%q) mismatch (-want +got):\n-%s\n+%s", tt.in, tt.want, got)
		}
	}
}

func TestParseHTTP(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name       string
		in         string
		wantHTTP   bool
		wantStatus int
		wantHeader map[string]string
		wantBody   string
	}{
		{"crlf", "HTTP/1.1 401 Unauthorized\r\nContent-Type: application/json\r\nWWW-Authenticate: Bearer realm=\"x\"\r\n\r\n{\"message\":\"Bad credentials\"}", true, 401,
			map[string]string{"Content-Type": "application/json", "Www-Authenticate": `Bearer realm="x"`}, `{"message":"Bad credentials"}`},
		{"lf", "HTTP/1.1 429 Too Many Requests\nretry-after: 60\n\nslow down\n", true, 429, map[string]string{"Retry-After": "60"}, "slow down\n"},
		{"http2 no reason", "HTTP/2 403\nx-github-sso: required; url=https://x\n\n{}", true, 403, map[string]string{"X-Github-Sso": "required; url=https://x"}, "{}"},
		{"folded header", "HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Bearer realm=\"x\",\r\n  error=\"invalid_token\"\r\n\r\n", true, 401, map[string]string{"Www-Authenticate": `Bearer realm="x", error="invalid_token"`}, ""},
		{"headers only", "HTTP/1.1 503 Service Unavailable\r\nRetry-After: 5", true, 503, map[string]string{"Retry-After": "5"}, ""},
		{"plain text", "Authentication Failed: Bad credentials", false, 0, nil, "Authentication Failed: Bad credentials"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			r, isHTTP, err := ParseHTTP(strings.NewReader(tt.in))
			if err != nil {
				t.Fatal(err)
			}
			got := map[string]string{}
			for k := range r.Header {
				got[k] = r.Header.Get(k)
			}
			if tt.wantHeader == nil {
				tt.wantHeader = map[string]string{}
			}
			type view struct {
				HTTP   bool
				Status int
				Header map[string]string
				Body   string
			}
			if diff := cmp.Diff(view{tt.wantHTTP, tt.wantStatus, tt.wantHeader, tt.wantBody}, view{isHTTP, r.Status, got, string(r.Body)}); diff != "" {
				t.Errorf("mismatch (-want +got):\n%s", diff)
			}
		})
	}
	if _, _, err := ParseHTTP(strings.NewReader("HTTP/1.1 abc\r\n\r\n")); err == nil {
		t.Error("ParseHTTP(bad status) = nil error")
	}
}

func TestOpsRules(t *testing.T) {
	t.Parallel()
	no := false
	c := mustNew(t, &Options{Rules: []Rule{
		{Provider: "github", Match: RuleMatch{Status: 401, Body: `Bad credentials`}, Subtype: SubtypeCredentialRevoked},
		{Match: RuleMatch{Header: map[string]string{"x-upstream-error": `^quota$`}}, Subtype: SubtypeQuotaExhausted},
		{Match: RuleMatch{Status: 500, Body: `session expired`}, Subtype: SubtypeCredentialExpired, Retryable: &no, Recovery: RecoveryReauthorize},
		{Match: RuleMatch{Body: `maintenance window`}, Type: TypeUpstreamUnavailable},
	}})
	type view struct {
		Type     Type
		Subtype  Subtype
		Provider string
		Recovery Recovery
	}
	tests := []struct {
		name string
		r    Response
		want view
	}{
		{"beats built-in", Response{Status: 401, Body: []byte(`{"message":"Bad credentials"}`)}, view{TypeAuthFailure, SubtypeCredentialRevoked, "github", RecoveryReauthorize}},
		{"header rule, case-insensitive name", Response{Status: 403, Header: http.Header{"X-Upstream-Error": {"quota"}}}, view{TypeAuthFailure, SubtypeQuotaExhausted, "generic", RecoveryAddQuota}},
		{"operator may mark a 500 as auth", Response{Status: 500, Body: []byte("session expired")}, view{TypeAuthFailure, SubtypeCredentialExpired, "generic", RecoveryReauthorize}},
		{"non-auth type", Response{Status: 403, Body: []byte("maintenance window")}, view{TypeUpstreamUnavailable, "", "generic", RecoveryWait}},
		{"no match falls through", Response{Status: 401, Body: []byte(`{"message":"Requires authentication","documentation_url":"https://docs.github.com/rest"}`)}, view{TypeAuthFailure, SubtypeCredentialMissing, "github", RecoveryReauthorize}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			f, ok := c.Classify(tt.r, Knowledge{})
			if !ok {
				t.Fatal("not classified")
			}
			if diff := cmp.Diff(tt.want, view{f.Type, f.Subtype, f.Provider, f.Recovery}); diff != "" {
				t.Errorf("mismatch (-want +got):\n%s", diff)
			}
		})
	}
	// Text path: a status found in the text ("Authentication Failed:" is GitHub's 401) counts.
	f, ok := c.ClassifyText("Authentication Failed: Bad credentials", "", Knowledge{})
	if !ok || f.Subtype != SubtypeCredentialRevoked {
		t.Errorf("text with an embedded 401 should match the status rule: got %+v", f)
	}
	// Without a status, a status rule does not apply.
	f, ok = c.ClassifyText("Bad credentials", "", Knowledge{})
	if !ok || f.Subtype != SubtypeCredentialInvalid {
		t.Errorf("text without a status must not match a status rule: got %+v", f)
	}
}

func TestValidateRules(t *testing.T) {
	t.Parallel()
	err := ValidateRules([]Rule{
		{Match: RuleMatch{Status: 401}, Subtype: "foo"},
		{Match: RuleMatch{Body: `(`}, Subtype: SubtypeCredentialInvalid},
		{Match: RuleMatch{Header: map[string]string{"X-A": `[`}}, Subtype: SubtypeCredentialInvalid, Recovery: "pray"},
		{Subtype: SubtypeCredentialInvalid},
		{Match: RuleMatch{Status: 1000}, Type: "bogus", Provider: "My Space"},
		{Match: RuleMatch{Status: 500}, Type: TypeUpstreamError, Subtype: SubtypeCredentialInvalid},
		{Match: RuleMatch{Status: 403}, Type: TypeForbidden}, // the gateway's own policy refusal (issue 9)
	})
	if err == nil {
		t.Fatal("ValidateRules = nil, want errors")
	}
	var got []string
	for _, line := range strings.Split(err.Error(), "\n") {
		key, _, _ := strings.Cut(line, ": ")
		got = append(got, key)
	}
	want := []string{
		"classify.rules[0].subtype",
		"classify.rules[1].match.body",
		"classify.rules[2].recovery",
		"classify.rules[2].match.header.X-A",
		"classify.rules[3].match",
		"classify.rules[4].type",
		"classify.rules[4].provider",
		"classify.rules[4].match.status",
		"classify.rules[5].subtype",
		"classify.rules[6].type",
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("mismatch (-want +got):\n%s\nerr: %v", diff, err)
	}
	if !strings.Contains(err.Error(), `unknown subtype "foo"`) || !strings.Contains(err.Error(), "invalid regex") {
		t.Errorf("error text lacks detail: %v", err)
	}
	if _, err := New(&Options{Rules: []Rule{{Match: RuleMatch{Body: `(`}, Subtype: SubtypeCredentialInvalid}}}); err == nil ||
		!strings.Contains(err.Error(), "classify.rules[0].match.body") {
		t.Errorf("New with a bad rule: err = %v", err)
	}
	if err := ValidateRules(nil); err != nil {
		t.Errorf("ValidateRules(nil) = %v", err)
	}
}

// TestRuleDefinesProvider is the regression test for issue 6 item 18: a
// classify rule may name its own provider (the README's sample names
// "acme"), and the failure it produces reports that provider.
func TestRuleDefinesProvider(t *testing.T) {
	t.Parallel()
	rules := []Rule{{Provider: "acme", Match: RuleMatch{Status: 403, Body: "expired"}, Subtype: SubtypeCredentialExpired}}
	if err := ValidateRules(rules); err != nil {
		t.Fatalf("ValidateRules: %v", err)
	}
	c := mustNew(t, &Options{Rules: rules})
	f, ok := c.Classify(Response{Status: 403, Body: []byte("token expired")}, Knowledge{})
	if !ok || f.Provider != "acme" || f.Subtype != SubtypeCredentialExpired {
		t.Errorf("Classify = %+v, %v; want provider acme, credential_expired", f, ok)
	}
}

// TestSchemaEnums checks every classified corpus and holdout output against the enums of
// schema/error.schema.json, and the enums against the Go constants.
func TestSchemaEnums(t *testing.T) {
	t.Parallel()
	var s struct {
		Required   []string `json:"required"`
		Properties map[string]struct {
			Enum     []string `json:"enum"`
			Examples []string `json:"examples"`
		} `json:"properties"`
	}
	if err := json.Unmarshal(JSONSchema(), &s); err != nil {
		t.Fatal(err)
	}
	strs := func(xs ...[]string) []string { return slices.Concat(xs...) }
	conv := func(f func() []string) []string { return f() }
	if diff := cmp.Diff(s.Properties["type"].Enum, strs(conv(func() []string { return toStrings(Types()) }))); diff != "" {
		t.Errorf("type enum mismatch (-schema +go):\n%s", diff)
	}
	if diff := cmp.Diff(s.Properties["subtype"].Enum, toStrings(Subtypes())); diff != "" {
		t.Errorf("subtype enum mismatch (-schema +go):\n%s", diff)
	}
	if diff := cmp.Diff(s.Properties["recovery"].Enum, toStrings(Recoveries())); diff != "" {
		t.Errorf("recovery enum mismatch (-schema +go):\n%s", diff)
	}
	// Providers are open (a classify rule may name its own): the built-in
	// ones are the schema's examples.
	if diff := cmp.Diff(s.Properties["provider"].Examples, Providers()); diff != "" {
		t.Errorf("provider examples mismatch (-schema +go):\n%s", diff)
	}
	c := mustNew(t, nil)
	for _, file := range []string{"testdata/corpus.json", "testdata/holdout.json", "testdata/holdout2.json", "testdata/holdout3.json"} {
		for _, smp := range loadSamples(t, file) {
			f, ok := classifySample(t, c, smp, "")
			if !ok {
				continue
			}
			var m map[string]any
			b, _ := json.Marshal(&f)
			if err := json.Unmarshal(b, &m); err != nil {
				t.Fatal(err)
			}
			for _, r := range s.Required {
				if _, ok := m[r]; !ok {
					t.Errorf("%s: required field %q missing in %s", smp.ID, r, b)
				}
			}
			for field, p := range s.Properties {
				v, ok := m[field]
				if !ok || len(p.Enum) == 0 {
					continue
				}
				if !slices.Contains(p.Enum, fmt.Sprint(v)) {
					t.Errorf("%s: %s=%v not in schema enum", smp.ID, field, v)
				}
			}
			if (f.Type == TypeAuthFailure) != (f.Subtype != "") {
				t.Errorf("%s: subtype %q with type %q", smp.ID, f.Subtype, f.Type)
			}
		}
	}
	// The accessor returns a copy.
	JSONSchema()[0] = 'x'
	if JSONSchema()[0] != '{' {
		t.Error("JSONSchema returned shared state")
	}
}

func toStrings[T ~string](xs []T) []string {
	out := make([]string, len(xs))
	for i, x := range xs {
		out[i] = string(x)
	}
	return out
}

func TestFailureError(t *testing.T) {
	t.Parallel()
	f := Failure{Type: TypeAuthFailure, Subtype: SubtypeCredentialExpired, Upstream: "github", Provider: "github", Detail: "Bad credentials", Recovery: RecoveryRefresh}
	want := `auth_failure/credential_expired from upstream "github" (github: Bad credentials): refresh the credential`
	if got := f.Error(); got != want {
		t.Errorf("Error() mismatch (-want +got):\n-%s\n+%s", want, got)
	}
	var err error = &f
	var target *Failure
	if !errors.As(err, &target) || !target.IsAuth() {
		t.Error("Failure is not usable as an error")
	}
	if (&Failure{Type: TypeNotFound}).IsAuth() {
		t.Error("not_found IsAuth")
	}
}

func TestNormalizeProvider(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"google-oauth": "google", "microsoft-graph": "microsoft", "microsoft-entra": "microsoft", "rfc6750": "oauth",
		"RFC6749": "oauth", "nginx-proxy": "generic", "cloudflare": "generic", "GitHub": "github", "": "", "myspace": "",
	} {
		if got := NormalizeProvider(in); got != want {
			t.Errorf("NormalizeProvider(%q) = %q, want %q", in, got, want)
		}
	}
}

// Issue 8 (hot reload): SetRules swaps the ops rules at once, and a set of
// rules that does not compile leaves those in force.
func TestSetRules(t *testing.T) {
	t.Parallel()
	c := mustNew(t, nil)
	r := Response{Status: 403, Body: []byte("maintenance window")}
	if f, _ := c.Classify(r, Knowledge{}); f.Type == TypeUpstreamUnavailable {
		t.Fatal("classified as unavailable before the rule exists")
	}
	if err := c.SetRules([]Rule{{Match: RuleMatch{Body: `maintenance window`}, Type: TypeUpstreamUnavailable}}); err != nil {
		t.Fatal(err)
	}
	if f, _ := c.Classify(r, Knowledge{}); f.Type != TypeUpstreamUnavailable {
		t.Errorf("after SetRules: %s, want %s", f.Type, TypeUpstreamUnavailable)
	}
	if err := c.SetRules([]Rule{{Match: RuleMatch{Body: `(`}, Subtype: SubtypeCredentialInvalid}}); err == nil || !strings.Contains(err.Error(), "classify.rules[0]") {
		t.Errorf("SetRules with a bad rule = %v, want it to name classify.rules[0]", err)
	}
	if f, _ := c.Classify(r, Knowledge{}); f.Type != TypeUpstreamUnavailable {
		t.Error("a refused SetRules replaced the rules in force")
	}
}

// TestDetailFromStatus: a failure whose body says nothing (empty, an HTML
// page without a title) still carries the HTTP status as its detail; it
// carried none, and the agent and the audit log could not tell a 502 from a
// 500 (found trying the gateway from outside).
func TestDetailFromStatus(t *testing.T) {
	t.Parallel()
	c := mustNew(t, nil)
	for _, tt := range []struct {
		r    Response
		want string
	}{
		{Response{Status: 502, Header: http.Header{"Content-Type": {"text/html"}}, Body: []byte("<html>bad gateway</html>")}, "HTTP 502 Bad Gateway"},
		{Response{Status: 500}, "HTTP 500 Internal Server Error"},
		{Response{Status: 401}, "HTTP 401 Unauthorized"},
		{Response{Status: 503, Body: []byte(`{"message":"down for maintenance"}`)}, "down for maintenance"},
	} {
		f, ok := c.Classify(tt.r, Knowledge{Now: testNow})
		if !ok || f.Detail != tt.want {
			t.Errorf("HTTP %d %q: detail %q (classified %v), want %q", tt.r.Status, tt.r.Body, f.Detail, ok, tt.want)
		}
	}
}
