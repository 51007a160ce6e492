package e2e

// Issue "auth_failure": every failed call through the gateway carries one
// typed failure object, whichever way the upstream reported the failure.
// These tests drive the real gateway binary against testupstream with the
// provider responses of authmap/testdata/corpus.json:
//
//	client ──▶ gateway ──▶ testupstream
//	                          ├─ --fail-file: the sample as the HTTP response (mid-session, at initialize)
//	                          └─ provider_error: the sample as a JSON-RPC error or an isError result
//
// and check the object the client sees (_meta["dev.credgate/error"] or the
// JSON-RPC error's data), that no failure goes untyped, and that the
// configured credential never leaks.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// metaKey is the _meta key of a failed CallToolResult that holds the object.
const metaKey = "dev.credgate/error"

// fakeToken is the secret configured as the upstream's Authorization header.
// It looks like a GitHub PAT so that nothing treats it as ordinary text.
const fakeToken = "ghp_e2eFAKEt0kenN0tRealXq7Lr2Vw9Zb4Kd8Mn3Pj6Hs1Tc5Yf0Ua"

// corpusSample is one entry of authmap/testdata/corpus.json.
type corpusSample struct {
	ID       string            `json:"id"`
	Provider string            `json:"provider"`
	Status   *int              `json:"status"`
	Headers  map[string]string `json:"headers"`
	Body     string            `json:"body"`
	Expected struct {
		Type       string   `json:"type"`
		Subtype    *string  `json:"subtype"`
		AlsoAccept []string `json:"also_accept"`
	} `json:"expected"`
}

// corpusSkip lists samples the classifier deliberately leaves out (see
// authmap's knownGaps): their wire text carries no signal.
var corpusSkip = map[string]string{
	"mcp-github-mcp-server-32603": "captured text truncated before the status; the classifier leaves it out",
}

func (s corpusSample) isAuth() bool { return s.Expected.Type == "auth_failure" }

// subtypes lists the subtypes the sample accepts.
func (s corpusSample) subtypes() []string {
	var out []string
	if s.Expected.Subtype != nil {
		out = append(out, *s.Expected.Subtype)
	}
	return append(out, s.Expected.AlsoAccept...)
}

// loadCorpus returns the corpus samples, minus corpusSkip.
func loadCorpus(t *testing.T) []corpusSample {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(repoRoot(), "authmap", "testdata", "corpus.json"))
	if err != nil {
		t.Fatal(err)
	}
	var all []corpusSample
	if err := json.Unmarshal(data, &all); err != nil {
		t.Fatalf("corpus.json: %v", err)
	}
	var out []corpusSample
	for _, s := range all {
		if _, skip := corpusSkip[s.ID]; !skip {
			out = append(out, s)
		}
	}
	if len(out) < 50 {
		t.Fatalf("corpus.json has only %d usable samples; the file changed shape?", len(out))
	}
	return out
}

// failureObject is the gateway's failure object (authmap/schema/error.schema.json).
type failureObject struct {
	Type              string   `json:"type"`
	Subtype           string   `json:"subtype,omitempty"`
	Retryable         bool     `json:"retryable"`
	RetryAfterSeconds *float64 `json:"retry_after_seconds,omitempty"`
	Recovery          string   `json:"recovery,omitempty"`
	Upstream          string   `json:"upstream,omitempty"`
	Credential        string   `json:"credential,omitempty"`
	Provider          string   `json:"provider,omitempty"`
	ProviderCode      string   `json:"provider_code,omitempty"`
	Detail            string   `json:"detail,omitempty"`
}

func (f failureObject) String() string {
	b, _ := json.Marshal(f)
	return string(b)
}

// callFailure is what a failed tools/call carried, and how.
type callFailure struct {
	obj   failureObject
	via   string // "_meta" or "jsonrpc data"
	wire  string // everything the client saw, for the leak check
	isRPC bool
}

// failureOf extracts the failure object from a tools/call outcome. It fails
// (returns an error) when the call succeeded or failed without a typed
// object: the gateway promises no silent failures.
func failureOf(res *mcp.CallToolResult, err error) (callFailure, error) {
	if err != nil {
		var rpc *jsonrpc.Error
		if !errors.As(err, &rpc) {
			return callFailure{wire: err.Error()}, fmt.Errorf("call failed with an untyped error (no JSON-RPC error): %v", err)
		}
		cf := callFailure{via: "jsonrpc data", isRPC: true, wire: fmt.Sprintf("%d %s %s", rpc.Code, rpc.Message, rpc.Data)}
		if len(rpc.Data) == 0 {
			return cf, fmt.Errorf("JSON-RPC error %d %q has no data: silent failure", rpc.Code, rpc.Message)
		}
		if err := json.Unmarshal(rpc.Data, &cf.obj); err != nil {
			return cf, fmt.Errorf("JSON-RPC error data %s is not a failure object: %v", rpc.Data, err)
		}
		if cf.obj.Type == "" {
			return cf, fmt.Errorf("JSON-RPC error data %s has no type", rpc.Data)
		}
		return cf, nil
	}
	wire, _ := json.Marshal(res)
	cf := callFailure{via: "_meta", wire: string(wire)}
	if !res.IsError {
		return cf, fmt.Errorf("call succeeded (%s); want a failure", wire)
	}
	raw, ok := res.Meta[metaKey]
	if !ok {
		return cf, fmt.Errorf("isError result without _meta[%q]: silent failure: %s", metaKey, wire)
	}
	b, _ := json.Marshal(raw)
	if err := json.Unmarshal(b, &cf.obj); err != nil {
		return cf, fmt.Errorf("_meta[%q] = %s is not a failure object: %v", metaKey, b, err)
	}
	if cf.obj.Type == "" {
		return cf, fmt.Errorf("_meta[%q] = %s has no type", metaKey, b)
	}
	if cf.obj.Type == "auth_failure" {
		// The gateway built this result: content[0] is "<line>\n<JSON>".
		if len(res.Content) == 0 {
			return cf, fmt.Errorf("auth failure result has no content: %s", wire)
		}
		tc, ok := res.Content[0].(*mcp.TextContent)
		if !ok {
			return cf, fmt.Errorf("content[0] is %T; want a text block", res.Content[0])
		}
		line, js, ok := strings.Cut(tc.Text, "\n")
		var inText failureObject
		if !ok || strings.TrimSpace(line) == "" || json.Unmarshal([]byte(js), &inText) != nil {
			return cf, fmt.Errorf("content[0] = %q; want a human line, a newline and the object's JSON", tc.Text)
		}
		if diff := cmp.Diff(cf.obj, inText); diff != "" {
			return cf, fmt.Errorf("content[0]'s object differs from _meta's (-_meta +content):\n%s", diff)
		}
	}
	return cf, nil
}

// checkSample checks the object a sample produced. exact requires a control
// to keep the type the corpus expects (the gateway saw the same response the
// classifier's corpus test sees); otherwise a control only must not be an
// auth failure.
func checkSample(t *testing.T, s corpusSample, cf callFailure, upstream, credential string, exact bool) {
	t.Helper()
	f := cf.obj
	if f.Upstream != upstream {
		t.Errorf("%s: upstream = %q; want %q (object %v)", s.ID, f.Upstream, upstream, f)
	}
	if !s.isAuth() {
		if f.Type == "auth_failure" {
			t.Errorf("%s: non-auth control came back as auth_failure (via %s): %v", s.ID, cf.via, f)
		} else if exact && f.Type != s.Expected.Type {
			t.Errorf("%s: type = %q; want %q (via %s): %v", s.ID, f.Type, s.Expected.Type, cf.via, f)
		}
		return
	}
	if f.Type != "auth_failure" || !slices.Contains(s.subtypes(), f.Subtype) {
		t.Errorf("%s: got type %q subtype %q (via %s); want auth_failure %v\nobject: %v", s.ID, f.Type, f.Subtype, cf.via, s.subtypes(), f)
		return
	}
	if credential != "" && f.Credential != credential {
		t.Errorf("%s: credential = %q; want %q", s.ID, f.Credential, credential)
	}
}

// checkNoSecret fails if the fake token, or its credential part, is in s.
func checkNoSecret(t *testing.T, where, s string) {
	t.Helper()
	if strings.Contains(s, fakeToken) {
		i := strings.Index(s, fakeToken)
		t.Errorf("the secret header value leaked into %s: …%s…", where, s[max(0, i-120):min(len(s), i+len(fakeToken)+40)])
	}
}

// authGateway is a gateway in front of one testupstream named "up".
type authGateway struct {
	g        *gatewayProc
	cs       *mcp.ClientSession
	failFile string // "" for stdio
	name     string
}

// httpAuthConfig is the config of a gateway with one HTTP upstream named
// name, with no provider hint and the fake token as its Authorization header.
func httpAuthConfig(name, url string) string {
	return fmt.Sprintf(`
upstreams:
  %s:
    transport: streamable-http
    url: %s
    timeout: 20s
    headers:
      Authorization: "Bearer %s"
`, name, url, fakeToken)
}

// startAuthHTTP starts testupstream over streamable HTTP with a fail file and
// a gateway in front of it, and waits until its tools are listed.
func startAuthHTTP(t *testing.T, ctx context.Context, name string) *authGateway {
	t.Helper()
	failFile := filepath.Join(t.TempDir(), "fail.json")
	url := startUpstreamHTTP(t, "--fail-file", failFile, "--name", name)
	g := startGateway(t, httpAuthConfig(name, url))
	a := &authGateway{g: g, failFile: failFile, name: name}
	a.waitConnected(t, ctx)
	a.cs = connectClient(t, ctx, g.URL)
	a.requireTools(t, ctx)
	return a
}

// startAuthStdio starts a gateway with testupstream as a stdio child.
func startAuthStdio(t *testing.T, ctx context.Context, name string) *authGateway {
	t.Helper()
	g := startGateway(t, fmt.Sprintf(`
upstreams:
  %s:
    command: %s
    args: [--transport, stdio, --name, %s]
    timeout: 20s
`, name, requireBin(t, "testupstream"), name))
	a := &authGateway{g: g, name: name}
	a.waitConnected(t, ctx)
	a.cs = connectClient(t, ctx, g.URL)
	a.requireTools(t, ctx)
	return a
}

func (a *authGateway) tool(name string) string { return a.name + "__" + name }

func (a *authGateway) credential() string {
	if a.failFile == "" {
		return ""
	}
	return "upstreams." + a.name + ".headers.Authorization"
}

func (a *authGateway) waitConnected(t *testing.T, ctx context.Context) {
	t.Helper()
	if _, err := a.g.waitHealth(ctx, func(h map[string]any) bool {
		u := upstreamHealth(h, a.name)
		return u != nil && u["connected"] == true
	}); err != nil {
		t.Fatalf("upstream %q did not connect: %v", a.name, err)
	}
}

func (a *authGateway) requireTools(t *testing.T, ctx context.Context) {
	t.Helper()
	var names []string
	for tool, err := range a.cs.Tools(ctx, nil) {
		if err != nil {
			t.Fatalf("tools/list: %v", err)
		}
		names = append(names, tool.Name)
	}
	for _, want := range []string{a.tool("echo"), a.tool("provider_error")} {
		if !slices.Contains(names, want) {
			t.Fatalf("tool %q missing from the gateway's catalog %v", want, names)
		}
	}
}

func (a *authGateway) call(ctx context.Context, tool string, args map[string]any) (*mcp.CallToolResult, error) {
	return a.cs.CallTool(ctx, &mcp.CallToolParams{Name: a.tool(tool), Arguments: args})
}

// writeFail makes every HTTP request to the upstream fail as s says.
func (a *authGateway) writeFail(t *testing.T, s corpusSample) {
	t.Helper()
	b, err := json.Marshal(map[string]any{"status": *s.Status, "headers": s.Headers, "body": s.Body})
	if err != nil {
		t.Fatal(err)
	}
	writeFileAtomic(t, a.failFile, b)
}

// writeFileAtomic writes via a rename, so the upstream never reads half a file.
func writeFileAtomic(t *testing.T, path string, data []byte) {
	t.Helper()
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// heal removes the fail file and waits until a call through the gateway works
// again: the upstream session may have broken and be reconnecting.
func (a *authGateway) heal(t *testing.T, ctx context.Context) {
	t.Helper()
	if err := os.Remove(a.failFile); err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Fatal(err)
	}
	a.waitConnected(t, ctx)
	var last string
	err := poll(ctx, func() (bool, error) {
		res, err := a.call(ctx, "echo", map[string]any{"text": "healed"})
		if err == nil && !res.IsError && toolText(res) == "healed" {
			return true, nil
		}
		last = fmt.Sprintf("%v %v", err, res)
		if err == nil {
			last = toolText(res)
		}
		return false, nil
	})
	if err != nil {
		t.Fatalf("upstream did not heal after removing the fail file: %v (last call: %s)", err, last)
	}
}

// checkClean checks the health document and the logs for the secret.
func (a *authGateway) checkClean(t *testing.T) {
	t.Helper()
	h, _ := json.Marshal(a.g.Health(t))
	checkNoSecret(t, "/health", string(h))
	checkNoSecret(t, "the gateway's logs", a.g.Logs())
}

// httpSamples are the samples that are HTTP failures (4xx, 5xx): the
// fail-file answers every request with them. A 404 is left out: on a
// streamable HTTP endpoint it means "session not found" (the MCP spec), which
// the client answers by starting a new session, not a provider failure;
// those samples are covered as tool results (TestAuthFailToolPaths).
func httpSamples(samples []corpusSample) []corpusSample {
	var out []corpusSample
	for _, s := range samples {
		if s.Status != nil && *s.Status >= 400 && *s.Status != 404 {
			out = append(out, s)
		}
	}
	return out
}

// TestAuthFailHTTPMidSession fails the upstream at the HTTP level in the
// middle of a session, once per corpus sample, and checks the object of the
// next call. Samples are split across a few gateways that run in parallel;
// within one, they run in order, healing the upstream in between.
func TestAuthFailHTTPMidSession(t *testing.T) {
	requireBin(t, "gateway")
	t.Parallel()
	samples := httpSamples(loadCorpus(t))
	const groups = 8
	for gi := range groups {
		var group []corpusSample
		for i := gi; i < len(samples); i += groups {
			group = append(group, samples[i])
		}
		t.Run(fmt.Sprintf("group%d", gi), func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			a := startAuthHTTP(t, ctx, "up")
			for _, s := range group {
				t.Run(s.ID, func(t *testing.T) {
					a.writeFail(t, s)
					callCtx, cancelCall := context.WithTimeout(ctx, 30*time.Second)
					res, err := a.call(callCtx, "echo", map[string]any{"text": "x"})
					cancelCall()
					cf, ferr := failureOf(res, err)
					if ferr != nil {
						t.Errorf("%s (HTTP %d): %v", s.ID, *s.Status, ferr)
					} else {
						checkSample(t, s, cf, a.name, a.credential(), true)
					}
					checkNoSecret(t, "the call's result", cf.wire)
					a.heal(t, ctx)
				})
			}
			a.checkClean(t)
		})
	}
}

// TestAuthFailAtInitialize fails the upstream at the HTTP level before the
// gateway first connects: /health shows it down with the failure object, a
// call fails fast with that object, and once the fault is gone the upstream
// comes up by itself.
func TestAuthFailAtInitialize(t *testing.T) {
	requireBin(t, "gateway")
	t.Parallel()
	byID := map[string]corpusSample{}
	for _, s := range loadCorpus(t) {
		byID[s.ID] = s
	}
	for _, id := range []string{"github-401-bad-credentials", "rfc6750-invalid-token-expired", "github-403-primary-rate-limit", "nginx-502-html-nonauth"} {
		s, ok := byID[id]
		if !ok {
			t.Fatalf("sample %q not in corpus.json", id)
		}
		t.Run(id, func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			const name = "gh"
			failFile := filepath.Join(t.TempDir(), "fail.json")
			a := &authGateway{failFile: failFile, name: name}
			a.writeFail(t, s)
			url := startUpstreamHTTP(t, "--fail-file", failFile, "--name", name)
			a.g = startGateway(t, httpAuthConfig(name, url))

			h, err := a.g.waitHealth(ctx, func(h map[string]any) bool {
				u := upstreamHealth(h, name)
				return u != nil && u["connected"] == false && u["last_failure"] != nil
			})
			if err != nil {
				t.Fatalf("/health never showed %q down with a last_failure: %v", name, err)
			}
			raw, _ := json.Marshal(upstreamHealth(h, name)["last_failure"])
			var lf failureObject
			if err := json.Unmarshal(raw, &lf); err != nil || lf.Type == "" {
				t.Fatalf("last_failure = %s (%v); want a failure object", raw, err)
			}
			if s.isAuth() {
				checkSample(t, s, callFailure{obj: lf, via: "/health last_failure"}, name, a.credential(), true)
			} else if lf.Type == "auth_failure" {
				t.Errorf("last_failure of a non-auth control is auth_failure: %v", lf)
			}
			hb, _ := json.Marshal(h)
			checkNoSecret(t, "/health", string(hb))

			// Calls fail fast with the object while the upstream is down.
			a.cs = connectClient(t, ctx, a.g.URL)
			callCtx, cancelCall := context.WithTimeout(ctx, 15*time.Second)
			res, err := a.call(callCtx, "echo", map[string]any{"text": "x"})
			cancelCall()
			cf, ferr := failureOf(res, err)
			switch {
			case ferr != nil:
				// The upstream never listed its tools, so the gateway does not
				// know gh__echo; but it knows why gh is down, and the agent
				// (calling from an older tool list, or another gateway's)
				// should learn it.
				t.Errorf("call of %s while %q is down (never connected): %v", a.tool("echo"), name, ferr)
			case s.isAuth():
				checkSample(t, s, cf, name, a.credential(), true)
			case cf.obj.Type == "auth_failure":
				t.Errorf("call while down (non-auth control): got auth_failure %v", cf.obj)
			}
			checkNoSecret(t, "the call's result", cf.wire)

			// Heal: the upstream comes up by itself and the tool works.
			a.heal(t, ctx)
			h = a.g.Health(t)
			if u := upstreamHealth(h, name); u["last_failure"] != nil {
				t.Errorf("last_failure still set after the upstream came back: %v", u["last_failure"])
			}
			a.checkClean(t)
		})
	}
}

// jsonrpcBodySamples picks corpus samples for the JSON-RPC error path (besides the text
// samples, sent as the message): provider bodies embedded in a message the
// way MCP servers word them.
var jsonrpcBodySamples = []string{
	"github-401-bad-credentials", "stripe-401-invalid-key", "openai-429-insufficient-quota",
	"google-401-access-token-expired", "anthropic-401-invalid-credentials", "aws-query-invalidclienttokenid-xml",
	"slack-200-token-expired", "gitlab-403-insufficient-scope", "openai-500-server-error", "anthropic-529-overloaded",
}

// headerOnly says why a sample cannot be told from a tool result's text: its
// signal is only in headers, which iserror_http reports in the result's
// _meta, not in the text (and an empty body makes testupstream substitute
// GitHub's "Bad credentials" body).
func headerOnly(s corpusSample) string {
	switch {
	case strings.TrimSpace(s.Body) == "":
		return "empty body: the signal is only in headers, which a tool result's text does not carry"
	case s.ID == "npm-404-token-expired-trap":
		return "the signal is only in the npm-notice header, which a tool result's text does not carry"
	}
	return ""
}

// TestAuthFailToolPaths reports corpus failures the two ways an MCP server
// does without failing at the HTTP level — a JSON-RPC error whose message
// carries the provider's error, and an isError result whose text carries the
// provider's status and body — over stdio and streamable HTTP.
func TestAuthFailToolPaths(t *testing.T) {
	requireBin(t, "gateway")
	t.Parallel()
	samples := loadCorpus(t)
	byID := map[string]corpusSample{}
	for _, s := range samples {
		byID[s.ID] = s
	}
	for _, transport := range []string{"stdio", "http"} {
		t.Run(transport, func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			t.Cleanup(cancel) // the parallel subtests outlive this function
			var a *authGateway
			if transport == "stdio" {
				a = startAuthStdio(t, ctx, "up")
			} else {
				a = startAuthHTTP(t, ctx, "up")
			}
			call := func(t *testing.T, args map[string]any) callFailure {
				t.Helper()
				callCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
				defer cancel()
				res, err := a.call(callCtx, "provider_error", args)
				cf, ferr := failureOf(res, err)
				if ferr != nil {
					t.Fatalf("provider_error %v: %v", args, ferr)
				}
				checkNoSecret(t, "the call's result", cf.wire)
				return cf
			}
			wantAuth := func(t *testing.T, cf callFailure, subtype string) {
				t.Helper()
				if cf.obj.Type != "auth_failure" || cf.obj.Subtype != subtype || cf.obj.Upstream != a.name {
					t.Errorf("got %v (via %s); want auth_failure %s from upstream %q", cf.obj, cf.via, subtype, a.name)
				}
				if cf.obj.Credential != a.credential() {
					t.Errorf("credential = %q; want %q", cf.obj.Credential, a.credential())
				}
			}

			// "calls" returns once its parallel subtests are done.
			t.Run("calls", func(t *testing.T) { runToolPathCalls(t, ctx, a, samples, byID, call, wantAuth) })
			a.checkClean(t)
		})
	}
}

func runToolPathCalls(t *testing.T, ctx context.Context, a *authGateway, samples []corpusSample, byID map[string]corpusSample,
	call func(*testing.T, map[string]any) callFailure, wantAuth func(*testing.T, callFailure, string)) {
	t.Run("jsonrpc/bad-credentials", func(t *testing.T) {
		t.Parallel()
		wantAuth(t, call(t, map[string]any{"mode": "jsonrpc", "message": "Authentication Failed: Bad credentials"}), "credential_invalid")
	})
	t.Run("iserror_github/bad-credentials", func(t *testing.T) {
		t.Parallel()
		wantAuth(t, call(t, map[string]any{"mode": "iserror_github", "status": 401,
			"body": `{"message":"Bad credentials","documentation_url":"https://docs.github.com/rest","status":"401"}`}), "credential_invalid")
	})
	t.Run("jsonrpc/not-auth", func(t *testing.T) {
		// A JSON-RPC error that is not about credentials passes
		// through with its code and message, and the object as data.
		t.Parallel()
		callCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		_, err := a.call(callCtx, "provider_error", map[string]any{"mode": "jsonrpc", "message": "database connection reset by peer"})
		var rpc *jsonrpc.Error
		if !errors.As(err, &rpc) || rpc.Code != jsonrpc.CodeInternalError || rpc.Message != "database connection reset by peer" {
			t.Fatalf("err = %v; want the upstream's JSON-RPC error -32603 passed through", err)
		}
		cf, ferr := failureOf(nil, err)
		if ferr != nil {
			t.Fatal(ferr)
		}
		if cf.obj.Type != "upstream_error" || cf.obj.Upstream != a.name {
			t.Errorf("data = %v; want an upstream_error object from %q", cf.obj, a.name)
		}
	})

	// JSON-RPC errors: the text samples as they were captured, and
	// provider bodies inside a message.
	for _, s := range samples {
		if s.Status == nil {
			t.Run("jsonrpc/"+s.ID, func(t *testing.T) {
				t.Parallel()
				checkSample(t, s, call(t, map[string]any{"mode": "jsonrpc", "message": s.Body}), a.name, a.credential(), false)
			})
		}
	}
	for _, id := range jsonrpcBodySamples {
		s, ok := byID[id]
		if !ok {
			t.Fatalf("sample %q not in corpus.json", id)
		}
		t.Run("jsonrpc/"+s.ID, func(t *testing.T) {
			t.Parallel()
			msg := fmt.Sprintf("request failed: HTTP %d: %s", *s.Status, s.Body)
			checkSample(t, s, call(t, map[string]any{"mode": "jsonrpc", "message": msg}), a.name, a.credential(), false)
		})
	}

	// isError results carrying the provider's status and body, for
	// every sample with a status.
	for _, s := range samples {
		if s.Status == nil {
			continue
		}
		if why := headerOnly(s); why != "" {
			t.Run("iserror_http/"+s.ID, func(t *testing.T) { t.Skip(why) })
			continue
		}
		t.Run("iserror_http/"+s.ID, func(t *testing.T) {
			t.Parallel()
			args := map[string]any{"mode": "iserror_http", "status": *s.Status, "body": s.Body, "headers": s.Headers}
			checkSample(t, s, call(t, args), a.name, a.credential(), false)
		})
	}
}

// TestAuthFailSecretNeverLeaks has the upstream echo the configured
// credential back in every way it can report a failure, and checks that the
// value reaches neither the client nor /health nor the gateway's logs.
func TestAuthFailSecretNeverLeaks(t *testing.T) {
	requireBin(t, "gateway")
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	echoed := fmt.Sprintf(`{"message":"Bad credentials: token Bearer %s is not valid","documentation_url":"https://docs.github.com/rest"}`, fakeToken)

	// At initialize: the rejection echoes the token in the body and a header.
	failFile := filepath.Join(t.TempDir(), "fail.json")
	b, _ := json.Marshal(map[string]any{"status": 401, "body": echoed,
		"headers": map[string]string{"Content-Type": "application/json", "WWW-Authenticate": fmt.Sprintf(`Bearer error="invalid_token", error_description="token %s rejected"`, fakeToken)}})
	writeFileAtomic(t, failFile, b)
	url := startUpstreamHTTP(t, "--fail-file", failFile, "--name", "gh")
	a := &authGateway{g: startGateway(t, httpAuthConfig("gh", url)), failFile: failFile, name: "gh"}
	h, err := a.g.waitHealth(ctx, func(h map[string]any) bool {
		u := upstreamHealth(h, "gh")
		return u != nil && u["last_failure"] != nil
	})
	if err != nil {
		t.Fatalf("/health never showed gh's last_failure: %v", err)
	}
	hb, _ := json.Marshal(h)
	checkNoSecret(t, "/health at initialize", string(hb))
	if !strings.Contains(string(hb), "auth_failure") {
		t.Errorf("/health = %s; want gh's last_failure to be an auth_failure", hb)
	}
	a.cs = connectClient(t, ctx, a.g.URL)
	a.heal(t, ctx)

	type tc struct {
		name string
		fail map[string]any // fail-file content, or nil
		args map[string]any // provider_error arguments (nil: call echo)
	}
	for _, c := range []tc{
		{name: "http-mid-session", fail: map[string]any{"status": 401, "body": echoed, "headers": map[string]string{"Content-Type": "application/json"}}},
		{name: "http-429", fail: map[string]any{"status": 429, "body": "rate limited for " + fakeToken, "headers": map[string]string{"Retry-After": "5"}}},
		{name: "jsonrpc", args: map[string]any{"mode": "jsonrpc", "message": "Authentication Failed: Bad credentials for token " + fakeToken}},
		{name: "jsonrpc-bearer", args: map[string]any{"mode": "jsonrpc", "message": "HTTP 401 Unauthorized: Authorization: Bearer " + fakeToken}},
		{name: "iserror", args: map[string]any{"mode": "iserror", "message": "Authentication Failed: Bad credentials (" + fakeToken + ")"}},
		{name: "iserror_github", args: map[string]any{"mode": "iserror_github", "status": 401, "body": echoed}},
		{name: "iserror_http", args: map[string]any{"mode": "iserror_http", "status": 403, "body": echoed}},
	} {
		t.Run(c.name, func(t *testing.T) {
			tool, args := "echo", map[string]any{"text": "x"}
			if c.fail != nil {
				b, _ := json.Marshal(c.fail)
				writeFileAtomic(t, failFile, b)
				defer a.heal(t, ctx)
			} else {
				tool, args = "provider_error", c.args
			}
			callCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
			defer cancel()
			res, err := a.call(callCtx, tool, args)
			cf, ferr := failureOf(res, err)
			if ferr != nil {
				t.Fatalf("%s: %v", c.name, ferr)
			}
			if cf.obj.Type != "auth_failure" {
				t.Errorf("%s: got %v; want an auth_failure", c.name, cf.obj)
			}
			checkNoSecret(t, "the result the client saw", cf.wire)
		})
	}
	a.checkClean(t)
}

// TestGatewayClassifyCLI runs `gateway classify` on a raw HTTP response and
// on plain text.
func TestGatewayClassifyCLI(t *testing.T) {
	gw := requireBin(t, "gateway")
	t.Parallel()
	for _, c := range []struct {
		name, stdin string
		args        []string
		want        failureObject // only the fields set here are compared
	}{
		{"http-expired-token",
			"HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Bearer error=\"invalid_token\", error_description=\"The access token expired\"\r\n\r\n",
			nil, failureObject{Type: "auth_failure", Subtype: "credential_expired"}},
		{"text-github", "Authentication Failed: Bad credentials", []string{"--provider", "github"},
			failureObject{Type: "auth_failure", Subtype: "credential_invalid", Provider: "github"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			cmd := exec.CommandContext(ctx, gw, append([]string{"classify"}, c.args...)...)
			cmd.Stdin = strings.NewReader(c.stdin)
			var stdout, stderr bytes.Buffer
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			if err := cmd.Run(); err != nil {
				t.Fatalf("gateway classify %v: %v\nstderr: %s", c.args, err, stderr.String())
			}
			var got failureObject
			if err := json.Unmarshal(stdout.Bytes(), &got); err != nil {
				t.Fatalf("gateway classify printed %q, not a failure object: %v", stdout.String(), err)
			}
			// Compare only the fields the case names.
			pick := failureObject{Type: got.Type, Subtype: got.Subtype}
			if c.want.Provider != "" {
				pick.Provider = got.Provider
			}
			if diff := cmp.Diff(c.want, pick); diff != "" {
				t.Errorf("gateway classify %v: mismatch (-want +got):\n%s\nfull output: %s", c.args, diff, stdout.String())
			}
		})
	}
}
