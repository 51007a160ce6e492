package gateway

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/credgate/credgate/authmap"
	"github.com/credgate/credgate/breaker"
)

// faultUpstream is a test upstream whose tools/call requests can be answered
// with an HTTP failure instead of MCP; every tools/call that reaches it is
// counted. It also has a tool "block" that waits for its call to end.
type faultUpstream struct {
	*testUpstream
	reached atomic.Int64
	fault   atomic.Pointer[httpFailure]
	blocked chan struct{} // a value per call of "block" that started
	// everyFault answers every request with the fault, not only
	// tools/call; faulted records when each such answer went.
	everyFault atomic.Bool
	mu         sync.Mutex
	faulted    []time.Time
}

func newFaultUpstream(t *testing.T) *faultUpstream {
	t.Helper()
	f := &faultUpstream{testUpstream: newTestUpstream(t, "fault", "echo"), blocked: make(chan struct{}, 10)}
	f.srv.AddTool(&mcp.Tool{Name: "block", InputSchema: json.RawMessage(`{"type":"object"}`)}, func(ctx context.Context, _ *mcp.CallToolRequest) (*mcp.CallToolResult, error) {
		f.blocked <- struct{}{}
		<-ctx.Done()
		return nil, ctx.Err()
	})
	inner := f.http.Config.Handler
	f.http.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPost {
			body, _ := io.ReadAll(r.Body)
			r.Body = io.NopCloser(bytes.NewReader(body))
			var msg struct{ Method string }
			_ = json.Unmarshal(body, &msg)
			if msg.Method == "tools/call" {
				f.reached.Add(1)
			}
			if msg.Method == "tools/call" || f.everyFault.Load() {
				if fl := f.fault.Load(); fl != nil {
					f.mu.Lock()
					f.faulted = append(f.faulted, time.Now())
					f.mu.Unlock()
					for k, v := range fl.header {
						w.Header().Set(k, v)
					}
					w.WriteHeader(fl.status)
					_, _ = w.Write([]byte(fl.body))
					return
				}
			}
		}
		inner.ServeHTTP(w, r)
	})
	return f
}

// faultGateway starts a gateway in front of a fault upstream "api", with
// extra YAML keys for it (in flow style, each starting with ", "), and
// returns an agent session.
func faultGateway(t *testing.T, ctx context.Context, extra string) (*Server, *mcp.ClientSession, *faultUpstream) {
	t.Helper()
	up := newFaultUpstream(t)
	g, cs := startGateway(t, ctx, fmt.Sprintf("upstreams:\n  api: {url: %s%s}\n", up.url(), extra))
	return g, cs, up
}

func callTool(t *testing.T, ctx context.Context, cs *mcp.ClientSession, tool string) *mcp.CallToolResult {
	t.Helper()
	res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: tool, Arguments: map[string]any{"text": "hi"}})
	if err != nil {
		t.Fatalf("call %s: %v", tool, err)
	}
	return res
}

// breakerState returns the state of the breaker called name in g's health
// view.
func breakerState(g *Server, upstream, credential string) BreakerHealth {
	uh := g.Health().Upstreams[upstream]
	if credential == "" {
		return uh.Breaker
	}
	return uh.CredentialBreakers[credential]
}

// Regression test for issue 8 (breakers): a rate limit answered with
// Retry-After opens the credential's breaker; later calls are refused, typed
// with retry_after_seconds, without reaching the upstream; after the wait the
// breaker lets a probe through and a success closes it.
func TestBreakerRateLimit(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	up := newFaultUpstream(t)
	g, cs, _ := tokGateway(t, ctx, "", "source: {value: live-token-0123456789}", up.url(), nil, nil)
	callOK(t, ctx, cs, "api__echo")
	up.fault.Store(&httpFailure{status: http.StatusTooManyRequests, header: map[string]string{"Retry-After": "1"}, body: `{"message":"API rate limit exceeded"}`})
	f := failureOf(t, callTool(t, ctx, cs, "api__echo"))
	if f.Subtype != authmap.SubtypeRateLimitReached {
		t.Fatalf("first failure %+v, want rate_limit_reached", f)
	}
	reached := up.reached.Load()
	for i := range 3 {
		f := failureOf(t, callTool(t, ctx, cs, "api__echo"))
		if f.Type != authmap.TypeAuthFailure || f.Subtype != authmap.SubtypeRateLimitReached || f.Credential != "tok" ||
			f.RetryAfterSeconds == nil || *f.RetryAfterSeconds < 1 || *f.RetryAfterSeconds > 2 {
			t.Errorf("refused call %d: failure %+v, want rate_limit_reached naming tok with retry_after_seconds 1", i, f)
		}
	}
	if n := up.reached.Load(); n != reached {
		t.Errorf("%d tools/call reached the upstream while the breaker was open, want 0", n-reached)
	}
	if b := breakerState(g, "api", "tok"); b.State != "open" || b.Reason != "rate_limit_reached" || b.Until == nil {
		t.Errorf("health credential breaker %+v, want open for rate_limit_reached with until", b)
	}
	if b := breakerState(g, "api", ""); b.State != "closed" {
		t.Errorf("health upstream breaker %+v, want closed: a rate limit is the credential's", b)
	}
	js, _ := json.Marshal(g.Health().Upstreams["api"])
	if !bytes.Contains(js, []byte(`"breaker":{"state":"closed"}`)) || !bytes.Contains(js, []byte(`"credential_breakers":{"tok":{"state":"open","reason":"rate_limit_reached","until":"`)) {
		t.Errorf("health JSON %s, want breaker and credential_breakers", js)
	}
	up.fault.Store(nil)
	name := breaker.Name("api", "tok")
	gen := g.Credentials().Get("tok").Generation()
	waitFor(t, ctx, func() bool { return g.breakers.Check(name, gen) == nil })
	if b := breakerState(g, "api", "tok"); b.State != "half-open" {
		t.Errorf("after the wait: credential breaker %+v, want half-open", b)
	}
	callOK(t, ctx, cs, "api__echo")
	if b := breakerState(g, "api", "tok"); b.State != "closed" {
		t.Errorf("after a probe's success: credential breaker %+v, want closed", b)
	}
}

// Regression test for issue 8 (breakers): a revoked credential reaches the
// upstream once; later calls are refused, typed, until the credential
// rotates, and then flow again.
func TestBreakerRevokedUntilRotation(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	path := tokenFile(t, "old-token-0123456789\n")
	up := newBearerUpstream(t, "echo")
	up.accept("old-token-0123456789")
	g, cs, _ := tokGateway(t, ctx, "", "source: {file: "+path+"}", up.url(), nil, nil)
	callOK(t, ctx, cs, "api__echo")
	before := len(up.calls())
	up.refuse("old-token-0123456789", rejectRevoked)
	for i := range 4 {
		f := failureOf(t, callTool(t, ctx, cs, "api__echo"))
		if f.Subtype != authmap.SubtypeCredentialRevoked || f.Credential != "tok" || f.Retryable {
			t.Errorf("call %d: failure %+v, want credential_revoked naming tok, not retryable", i, f)
		}
	}
	if n := len(up.calls()) - before; n != 1 {
		t.Errorf("%d tools/call requests carried the revoked token, want 1", n)
	}
	if b := breakerState(g, "api", "tok"); b.State != "open" || b.Reason != "credential_revoked" || b.Until != nil {
		t.Errorf("health credential breaker %+v, want open for credential_revoked without until", b)
	}
	rotateFile(t, ctx, g, up, path, "new-token-0123456789\n")
	callOK(t, ctx, cs, "api__echo")
	if got := up.lastToken(); got != "new-token-0123456789" {
		t.Errorf("the call after the rotation carried %q, want the new token", got)
	}
	if b := breakerState(g, "api", "tok"); b.State != "closed" {
		t.Errorf("after the rotation: credential breaker %+v, want closed", b)
	}
}

// Regression test for issue 8 (breakers): five consecutive 503s open the
// upstream's breaker; the next call is refused as upstream_unavailable with
// retry_after_seconds, without reaching the upstream.
func TestBreakerOpensOnUpstreamFailures(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	g, cs, up := faultGateway(t, ctx, "")
	callOK(t, ctx, cs, "api__echo")
	up.fault.Store(&httpFailure{status: http.StatusServiceUnavailable, body: "down for maintenance"})
	for i := range breaker.DefaultFailures {
		if res := callTool(t, ctx, cs, "api__echo"); !res.IsError {
			t.Fatalf("call %d succeeded during the outage", i)
		}
		if i < breaker.DefaultFailures-1 {
			if b := breakerState(g, "api", ""); b.State != "closed" {
				t.Fatalf("after %d failures: breaker %+v, want closed", i+1, b)
			}
		}
	}
	reached := up.reached.Load()
	f := failureOf(t, callTool(t, ctx, cs, "api__echo"))
	if f.Type != authmap.TypeUpstreamUnavailable || f.Upstream != "api" || f.RetryAfterSeconds == nil || *f.RetryAfterSeconds < 1 || !f.Retryable {
		t.Errorf("refused call: failure %+v, want upstream_unavailable with retry_after_seconds", f)
	}
	if n := up.reached.Load() - reached; n != 0 {
		t.Errorf("%d tools/call reached the upstream with the breaker open, want 0", n)
	}
	if b := breakerState(g, "api", ""); b.State != "open" || b.Reason != "upstream_unavailable" || b.Until == nil {
		t.Errorf("health breaker %+v, want open for upstream_unavailable with until", b)
	}
	if h := g.Health(); h.Status != HealthDegraded || h.Upstreams["api"].Status != StatusUp {
		t.Errorf("health status %q, upstream %q with its breaker open; want degraded, up", h.Status, h.Upstreams["api"].Status)
	}
	_, err := cs.GetPrompt(ctx, &mcp.GetPromptParams{Name: "api__greet", Arguments: map[string]string{"who": "x"}})
	var rpc *jsonrpc.Error
	if !errorsAs(err, &rpc) || !bytes.Contains(rpc.Data, []byte(`"type":"upstream_unavailable"`)) || !bytes.Contains(rpc.Data, []byte(`"retry_after_seconds"`)) {
		t.Errorf("prompts/get with the breaker open: %v, want a JSON-RPC error carrying upstream_unavailable with retry_after_seconds", err)
	}
}

// Regression test for issue 8 (breakers): neither a cancelled call nor an
// isError tool result counts against the upstream, even with failures: 1.
func TestBreakerIgnoresCancelAndToolErrors(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	g, cs, up := faultGateway(t, ctx, ", breaker: {failures: 1}")
	for range 3 {
		res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "api__echo", Arguments: map[string]any{"text": "tool-error"}})
		if err != nil || !res.IsError {
			t.Fatalf("tool-error call: %v %v", res, err)
		}
	}
	callCtx, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() {
		_, _ = cs.CallTool(callCtx, &mcp.CallToolParams{Name: "api__block", Arguments: map[string]any{}})
	})
	select {
	case <-up.blocked:
	case <-ctx.Done():
		t.Fatal("the blocking call never started")
	}
	stop()
	wg.Wait()
	// The gateway sees the cancellation after the agent returns: wait for
	// the call's outcome to be counted before looking.
	waitFor(t, ctx, func() bool {
		for _, s := range g.breakers.Snapshot() {
			if s.Name == "api" && s.Counts.Requests == s.Counts.Successes+s.Counts.Exclusions && s.Counts.Exclusions == 1 {
				return true
			}
		}
		return false
	})
	if b := breakerState(g, "api", ""); b.State != "closed" {
		t.Errorf("breaker %+v, want closed", b)
	}
	callOK(t, ctx, cs, "api__echo")
}

// Regression test for issue 8 (breakers): a breaker setting out of range is
// rejected naming its key.
func TestBreakerConfigValidation(t *testing.T) {
	t.Parallel()
	_, err := ParseConfig([]byte("upstreams:\n  api:\n    url: http://localhost:1/mcp\n    breaker: {failures: -1, open_timeout: 2s}\n"), nil)
	if err == nil || !bytes.Contains([]byte(err.Error()), []byte("upstreams.api.breaker.failures")) {
		t.Errorf("ParseConfig: %v, want an error naming upstreams.api.breaker.failures", err)
	}
	cfg, err := ParseConfig([]byte("upstreams:\n  api:\n    url: http://localhost:1/mcp\n    breaker: {failures: 2, open_timeout: 2s, half_open_requests: 3, quota_cooldown: 1m}\n"), nil)
	if err != nil {
		t.Fatal(err)
	}
	want := breaker.Config{Failures: 2, OpenTimeout: 2 * time.Second, HalfOpenRequests: 3, QuotaCooldown: time.Minute}
	if got := cfg.Upstreams["api"].Breaker; got != want {
		t.Errorf("breaker config %+v, want %+v", got, want)
	}
}

// Regression test for issue 8 (breakers): failed connect attempts open the
// upstream's breaker, shown in health, and calls are refused with the
// outage's cause and retry_after_seconds; once the connect loop reconnects,
// calls flow again at once, whatever the breaker shows.
func TestBreakerConnectFailures(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	up := newTestUpstream(t, "down", "echo")
	up.fail.Store(&httpFailure{status: http.StatusServiceUnavailable, body: "starting"})
	g, cs := startGateway(t, ctx, fmt.Sprintf("upstreams:\n  api: {url: %s, breaker: {failures: 2, open_timeout: 1h}}\n", up.url()))
	waitFor(t, ctx, func() bool { return breakerState(g, "api", "").State == "open" })
	if b := breakerState(g, "api", ""); b.Reason != reasonConnect || b.Until == nil {
		t.Errorf("health breaker %+v, want open for %s with until", b, reasonConnect)
	}
	f := failureOf(t, callTool(t, ctx, cs, "api__echo"))
	if f.Type != authmap.TypeUpstreamUnavailable || f.RetryAfterSeconds == nil || *f.RetryAfterSeconds < 3000 {
		t.Errorf("call while down: failure %+v, want upstream_unavailable with retry_after_seconds about an hour", f)
	}
	up.fail.Store(nil)
	waitFor(t, ctx, func() bool { return g.Health().Upstreams["api"].Tools > 0 })
	callOK(t, ctx, cs, "api__echo")
}

// TestBreakerHalfOpenClosedByProbe: an upstream that came back while its
// breaker was open, and stays idle, has the breaker closed by its health
// probe's answer once it is half-open, not held half-open until a call
// comes (found trying the gateway: /health and the metrics showed it
// half-open for minutes, and the breaker alert would have fired).
func TestBreakerHalfOpenClosedByProbe(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	up := newTestUpstream(t, "down", "echo")
	up.fail.Store(&httpFailure{status: http.StatusServiceUnavailable, body: "starting"})
	g, _ := startGateway(t, ctx, fmt.Sprintf("health_interval: 50ms\nupstreams:\n  api: {url: %s, breaker: {failures: 2, open_timeout: 300ms}}\n", up.url()))
	waitFor(t, ctx, func() bool { return breakerState(g, "api", "").State == "open" })
	up.fail.Store(nil)
	waitFor(t, ctx, func() bool { return g.Health().Upstreams["api"].Tools > 0 })
	waitFor(t, ctx, func() bool { return breakerState(g, "api", "").State == "closed" })
}

// breakerCounts returns the counts of the breaker called name.
func breakerCounts(g *Server, name string) breaker.Counts {
	for _, s := range g.breakers.Snapshot() {
		if s.Name == name {
			return s.Counts
		}
	}
	return breaker.Counts{}
}

// Regression test for issue 8 (breakers): a call resent after a reactive
// renewal, or after the upstream lost its session, is one call to its
// breakers, told its final outcome; an expired credential that did not
// renew opens its breaker until it changes.
func TestBreakerResendIsOneCall(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	g, cs, up := expiredExecGateway(t, ctx)
	callOK(t, ctx, cs, "api__echo") // rejected, renewed, resent
	up.restart()
	callOK(t, ctx, cs, "api__echo") // session lost, resent
	if n := len(up.calls()); n != 5 {
		t.Errorf("%d tools/call requests, want 5 (two of them resends)", n)
	}
	// The upstream's breaker also counts its two connects (the first, and
	// the one after the lost session).
	for name, n := range map[string]uint32{"api": 3 + 2, breaker.Name("api", "tok"): 3} {
		want := breaker.Counts{Requests: n, Successes: n, ConsecutiveSuccesses: n}
		if got := breakerCounts(g, name); got != want {
			t.Errorf("breaker %s counts %+v, want %+v", name, got, want)
		}
	}
	// Expired again within the minute: not renewed, so the breaker opens
	// until the credential changes, and the token is not sent again.
	up.refuse("second-token-0123456789", rejectExpired)
	for i := range 3 {
		if f := failureOf(t, callTool(t, ctx, cs, "api__echo")); f.Subtype != authmap.SubtypeCredentialExpired || f.Credential != "tok" {
			t.Errorf("call %d: failure %+v, want credential_expired naming tok", i, f)
		}
	}
	if n := len(up.calls()); n != 6 {
		t.Errorf("%d tools/call requests, want 6: the expired token is sent once", n)
	}
	if b := breakerState(g, "api", "tok"); b.State != "open" || b.Reason != "credential_expired" {
		t.Errorf("credential breaker %+v, want open for credential_expired", b)
	}
}

// Regression test for issue 8 (breakers): each classified outcome tells the
// upstream's and the credential's breaker what the table in breakers.go says.
func TestBreakerOutcomes(t *testing.T) {
	t.Parallel()
	secs := func(n int) *int { return &n }
	auth := func(s authmap.Subtype, retry *int) *authmap.Failure {
		return &authmap.Failure{Type: authmap.TypeAuthFailure, Subtype: s, RetryAfterSeconds: retry}
	}
	in2s := time.Now().Add(2 * time.Second)
	httpErr := func(status int) error { return &HTTPError{Status: status} }
	tests := []struct {
		name     string
		raw      error
		f        *authmap.Failure
		up, cred breaker.Outcome
	}{
		{"answered", nil, nil, breaker.Success(), breaker.Success()},
		{"isError result", nil, &authmap.Failure{Type: authmap.TypeUpstreamError}, breaker.Success(), breaker.Success()},
		{"cancelled", context.Canceled, nil, breaker.Excluded(), breaker.Excluded()},
		{"not connected", &unavailableError{upstream: "api"}, &authmap.Failure{Type: authmap.TypeUpstreamUnavailable}, breaker.Excluded(), breaker.Excluded()},
		{"shutting down", ErrShuttingDown, &authmap.Failure{Type: authmap.TypeUpstreamUnavailable}, breaker.Excluded(), breaker.Excluded()},
		{"timeout", &timeoutError{after: time.Second}, &authmap.Failure{Type: authmap.TypeTimeout}, breaker.Failure("timeout"), breaker.Excluded()},
		{"503", httpErr(503), &authmap.Failure{Type: authmap.TypeUpstreamError}, breaker.Failure("upstream_unavailable"), breaker.Excluded()},
		{"404", httpErr(404), &authmap.Failure{Type: authmap.TypeUpstreamError}, breaker.Success(), breaker.Success()},
		{"JSON-RPC error", fmt.Errorf("x: %w", errSample), &authmap.Failure{Type: authmap.TypeUpstreamError}, breaker.Success(), breaker.Success()},
		{"revoked", httpErr(401), auth(authmap.SubtypeCredentialRevoked, nil), breaker.Success(), breaker.Rejected("credential_revoked")},
		{"invalid in a result", nil, auth(authmap.SubtypeCredentialInvalid, nil), breaker.Success(), breaker.Rejected("credential_invalid")},
		{"missing", httpErr(401), auth(authmap.SubtypeCredentialMissing, nil), breaker.Success(), breaker.Rejected("credential_missing")},
		{"expired", httpErr(401), auth(authmap.SubtypeCredentialExpired, nil), breaker.Success(), breaker.Rejected("credential_expired")},
		{"rate limited", httpErr(429), auth(authmap.SubtypeRateLimitReached, secs(2)), breaker.Success(), breaker.RateLimited(in2s)},
		{"rate limited, no reset", httpErr(429), auth(authmap.SubtypeRateLimitReached, nil), breaker.Success(), breaker.RateLimited(time.Time{})},
		// Retry-After: 0 (a trial's finding: it held the credential 30 s).
		{"rate limited, Retry-After 0", httpErr(429), auth(authmap.SubtypeRateLimitReached, secs(0)), breaker.Success(), breaker.Excluded()},
		{"quota", httpErr(403), auth(authmap.SubtypeQuotaExhausted, secs(2)), breaker.Success(), breaker.QuotaExhausted(in2s)},
		{"scope", httpErr(403), auth(authmap.SubtypeInsufficientScope, nil), breaker.Success(), breaker.Success()},
	}
	opts := cmp.Options{cmp.AllowUnexported(breaker.Outcome{}), cmpopts.EquateApproxTime(time.Second)}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			up, cred := breakerOutcomes(tt.raw, tt.f)
			if diff := cmp.Diff(tt.up, up, opts); diff != "" {
				t.Errorf("upstream outcome mismatch (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tt.cred, cred, opts); diff != "" {
				t.Errorf("credential outcome mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

var errSample = &jsonrpc.Error{Code: -32603, Message: "boom"}

// TestRefusedCallKeepsOpeningFailure: the calls an open credential breaker
// refuses get the failure that opened it, provider, code and recovery
// included, for a declared credential too.
func TestRefusedCallKeepsOpeningFailure(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	const tok = "declared-tok-0123456789"
	g, cs, _, up := valueTokGateway(t, ctx, "", tok)
	call := func() authmap.Failure {
		t.Helper()
		res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "api__echo", Arguments: map[string]any{"text": "x"}})
		if err != nil {
			t.Fatal(err)
		}
		return failureOf(t, res)
	}
	up.refuse(tok, rejectRevoked)
	opened := call()
	if opened.Subtype != authmap.SubtypeCredentialRevoked || opened.Provider == "" || opened.Recovery == "" {
		t.Fatalf("the rejection = %+v, want credential_revoked with its provider and recovery", opened)
	}
	for range 2 {
		if f := call(); f.Subtype != opened.Subtype || f.Provider != opened.Provider || f.ProviderCode != opened.ProviderCode || f.Recovery != opened.Recovery {
			t.Errorf("a refused call's failure = %+v\nwant that of the rejection: %+v", f, opened)
		}
	}
	// /health, events and alerts say what the provider said, too.
	if le := g.Health().Credentials["tok"].LastError; le == nil || !strings.Contains(le.Detail, "invalid_token") || !strings.Contains(le.Detail, "The access token has been revoked") {
		t.Errorf("the credential's last_error = %+v, want the provider's code and words", le)
	}
}

// TestProbeMeetsRateLimit: a health probe answered 429 finds the upstream
// alive and its credential limited: the upstream stays up, the credential's
// breaker opens until the Retry-After, and neither probes nor reconnects
// send the limited credential before then (found trying the gateway from
// outside: the probe took the upstream down, and reconnects sent the
// limited token 15 times within a 20 s Retry-After). Once the limit
// resets, calls are served again.
func TestProbeMeetsRateLimit(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	up := newFaultUpstream(t)
	g, cs, _ := tokGateway(t, ctx, "health_interval: 100ms\n", "source: {value: live-token-0123456789}", up.url(), nil, nil)
	callOK(t, ctx, cs, "api__echo")
	up.everyFault.Store(true)
	up.fault.Store(&httpFailure{status: http.StatusTooManyRequests, header: map[string]string{"Retry-After": "2"}, body: `{"message":"API rate limit exceeded"}`})
	waitFor(t, ctx, func() bool { return breakerState(g, "api", "tok").State == "open" })
	if st := g.Credentials().Get("tok").Status(); st != authmap.StatusRateLimited {
		t.Errorf("credential status %s after the probe's 429; want rate_limited", st)
	}
	// Calls are refused, typed, without reaching the upstream.
	if f := failureOf(t, callTool(t, ctx, cs, "api__echo")); f.Subtype != authmap.SubtypeRateLimitReached || f.RetryAfterSeconds == nil {
		t.Errorf("a call during the limit: %+v; want rate_limit_reached with retry_after_seconds", f)
	}
	up.fault.Store(nil)
	waitFor(t, ctx, func() bool {
		res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "api__echo", Arguments: map[string]any{"text": "hi"}})
		return err == nil && !res.IsError
	})
	up.mu.Lock()
	faulted := slices.Clone(up.faulted)
	up.mu.Unlock()
	if len(faulted) != 1 {
		t.Errorf("%d requests met the limit (at %v); want 1: nothing more is sent with the limited credential before its reset", len(faulted), faulted)
	}
	for _, e := range g.events.all() {
		if e.Type == EventUpstream && e.Kind == KindUpstreamDown {
			t.Errorf("the upstream went down (%+v); a 429 shows it alive", e)
		}
	}
}

// limitedIdle starts a gateway in front of a fault upstream, probed every
// 100 ms, whose credential's breaker a rate limit (reset in 1 s) opened;
// no call follows.
func limitedIdle(t *testing.T, ctx context.Context) (*Server, *faultUpstream) {
	t.Helper()
	up := newFaultUpstream(t)
	g, cs, _ := tokGateway(t, ctx, "health_interval: 100ms\n", "source: {value: live-token-0123456789}", up.url(), nil, nil)
	callOK(t, ctx, cs, "api__echo")
	up.fault.Store(&httpFailure{status: http.StatusTooManyRequests, header: map[string]string{"Retry-After": "1"}, body: `{"message":"API rate limit exceeded"}`})
	_ = callTool(t, ctx, cs, "api__echo")
	waitFor(t, ctx, func() bool { return breakerState(g, "api", "tok").State == "open" })
	return g, up
}

// TestIdleLimitBreakerClosesOnProbe: once a rate limit's reset has passed,
// the credential's breaker is half-open until something proves the
// credential works; on an upstream no call then used, the health probe,
// which sends that credential, does. It stayed half-open for good, and
// the breaker alert ("not closed for 15 minutes") filed a ticket.
func TestIdleLimitBreakerClosesOnProbe(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	g, up := limitedIdle(t, ctx)
	up.fault.Store(nil)
	// No call: only the probe can close it.
	waitFor(t, ctx, func() bool { return breakerState(g, "api", "tok").State == "closed" })
}

// TestIdleLimitBreakerOpensOnProbeRejection: a credential's breaker
// half-open after a rate limit's reset opens when the health probe, which
// sends that credential, is then refused it (401): revoked, invalid,
// missing and expired open it at once, whoever meets them. It stayed
// half-open until an operator's reload.
func TestIdleLimitBreakerOpensOnProbeRejection(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	g, up := limitedIdle(t, ctx)
	up.everyFault.Store(true) // the probe's requests too
	up.fault.Store(&httpFailure{status: http.StatusUnauthorized, body: `{"message":"Bad credentials"}`})
	// No call: only the probe meets the rejection.
	waitFor(t, ctx, func() bool {
		b := breakerState(g, "api", "tok")
		return b.State == "open" && strings.Contains(b.Reason, "credential_")
	})
}

// TestOpenFailureRetryableWhenRenewedByItself: a call refused by a
// credential's open breaker is retryable when the gateway renews that
// credential by itself (an OAuth token found expired), and not when only a
// person can change it; it read "not retryable, rotate it" for an OAuth
// token the gateway renewed seconds later.
func TestOpenFailureRetryableWhenRenewedByItself(t *testing.T) {
	t.Parallel()
	g := notifyServer(t, notifyBase) // tok: a value; oauth: an OAuth client
	u := g.upstream("api")
	for _, tt := range []struct {
		cred      string
		retryable bool
	}{{"oauth", true}, {"tok", false}} {
		f := g.openFailure(u, tt.cred, &breaker.OpenError{Reason: string(authmap.SubtypeCredentialExpired)})
		if f.Retryable != tt.retryable || tt.retryable && f.Recovery != authmap.RecoveryWait {
			t.Errorf("%s: refusal %+v, want retryable %v", tt.cred, f, tt.retryable)
		}
	}
}

// A tool's own error quoting a third party's 429 holds no breaker of an
// upstream without a credential (a review's worry: one agent's fetch of a
// limited URL would hold the upstream back for every agent).
func TestToolTextRateLimitHoldsNothing(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	up := newTestUpstream(t, "a", "echo")
	g, cs, _ := credGateway(t, ctx, fmt.Sprintf("upstreams:\n  a: {url: %s, provider: github}\n", up.url()), nil, nil)
	waitFor(t, ctx, func() bool { return g.catalog.hasTool("a__echo") })
	res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "a__echo", Arguments: map[string]any{"text": "iserror:GET https://api.github.com/x: 429 API rate limit exceeded; Retry-After: 30"}})
	if err != nil || !res.IsError {
		t.Fatalf("the quoting call: %v %v", res, err)
	}
	if b := breakerState(g, "a", ""); b.State != "closed" {
		t.Errorf("upstream breaker %+v after a tool's text quoted a 429; want closed", b)
	}
	callOK(t, ctx, cs, "a__echo")
}
