package gateway

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// TestConfigWarnings is the regression test for issue 6 item 13 (validate):
// secrets shorter than 8 characters are warned about, by key and never by
// value; plain settings are not secrets.
func TestConfigWarnings(t *testing.T) {
	t.Parallel()
	cfg, err := ParseConfig([]byte(`
upstreams:
  h:
    url: https://example.com/mcp
    headers: {Authorization: "Bearer abc", X-Api-Key: "abcdef1", Content-Type: application/json, X-Other-Token: "0123456789abcdef", X-Spaced-Key: "Sx9Kq7Lm2Tz4W8 bYc"}
  s:
    command: srv
    env: {LOG_LEVEL: info, GITHUB_PAT: "pat1234", PATH: /bin}
    credential: c
admin: {token: abcdef}
webhooks: {secret: ab}
credentials:
  c: {source: {value: xyzw12}, inject: {env: API_KEY}}
`), nil)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		"upstreams.h.headers.Authorization: the secret is shorter than 4 characters, too short to be redacted from logs and results",
		"upstreams.h.headers.X-Api-Key: the secret is shorter than 8 characters; it is redacted wherever it occurs, also in ordinary text",
		"upstreams.s.env.GITHUB_PAT: the secret is shorter than 8 characters; it is redacted wherever it occurs, also in ordinary text",
		// Secrets written in the config (found trying the gateway: only
		// headers and env were checked).
		"admin.token: the secret is shorter than 8 characters; it is redacted wherever it occurs, also in ordinary text",
		"webhooks.secret: the secret is shorter than 4 characters, too short to be redacted from logs and results",
		"credentials.c.source.value: the secret is shorter than 8 characters; it is redacted wherever it occurs, also in ordinary text",
	}
	if diff := cmp.Diff(want, cfg.Warnings()); diff != "" {
		t.Errorf("warnings mismatch (-want +got):\n%s", diff)
	}
}

// TestRedactorIsLive is the regression test for issue 6 item 13 (rotation):
// a secret added to the running gateway's redactor (a rotated credential) is
// redacted from results from then on.
func TestRedactorIsLive(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	up := newTestUpstream(t, "a", "echo")
	g, cs := startGateway(t, ctx, fmt.Sprintf("upstreams:\n  a: {url: %s}\n", up.url()))
	const rotated = "rotated-credential-0123456789"
	g.redactor.Add(rotated)
	res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "a__echo", Arguments: map[string]any{"text": "now " + rotated}})
	if err != nil || strings.Contains(text(res), rotated) || !strings.Contains(text(res), "[REDACTED]") {
		t.Errorf("echo of a value added after start = %q, %v; want it redacted", text(res), err)
	}
}

// TestSecretValues: which configured values count as secrets (issue 6
// item 13): credentials by their name, any header value of 8 characters or
// more but protocol headers, random-looking values under any name,
// URL passwords and secret query parameters, and the same inside a JSON
// value; never plain settings.
func TestSecretValues(t *testing.T) {
	t.Parallel()
	u := &UpstreamConfig{
		Headers: map[string]string{
			"Authorization":        "Bearer tok-0123456789",
			"X-Honeycomb-Team":     "hcKey0123456789abcdef",
			"Content-Type":         "application/json",
			"MCP-Protocol-Version": "2025-11-25",
			"X-Tenant":             "acme", // too short to be told from a word
			"X-Custom":             "s3cr3t-value",
		},
		Env: map[string]string{
			"GITHUB_PAT":          "pat1234",
			"LOG_LEVEL":           "info",
			"NODE_ENV":            "production",
			"AWS_REGION":          "us-east-1",
			"DATABASE_URL":        "postgres://app:db-pass-99@db:5432/app",
			"WEBHOOK":             "https://hooks.example.com/x?token=hook-tok-77&channel=ops",
			"OPENAPI_MCP_HEADERS": `{"Authorization": "Bearer ntn_secret42", "Notion-Version": "2022-06-28"}`,
		},
	}
	want := []string{"Bearer tok-0123456789", "tok-0123456789", "hcKey0123456789abcdef",
		"db-pass-99", "pat1234", "s3cr3t-value", "Bearer ntn_secret42", "ntn_secret42", "hook-tok-77"}
	if diff := cmp.Diff(sortedCopy(want), sortedCopy(secretValues(u))); diff != "" {
		t.Errorf("secrets mismatch (-want +got):\n%s", diff)
	}
}
