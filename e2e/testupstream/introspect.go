package main

// Bearer-token checking by RFC 7662 introspection, so that a token revoked or
// expired at a real authorization server (e2e/oidc/provider.mjs) is rejected
// here at once:
//
//	--introspect URL --introspect-client ID --introspect-secret S
//	  http/sse: every request's "Authorization: Bearer <token>" is introspected;
//	            inactive → 401, WWW-Authenticate: Bearer error="invalid_token", ...
//	  stdio:    with --env-token VAR, every tools/call introspects $VAR; inactive →
//	            an isError result carrying the same 401 (a stdio server whose
//	            API token comes from its environment)
//
// Nothing is cached: each request costs one introspection call, so a
// revocation is seen by the very next request. Every check is recorded per
// token (as a 16-hex-digit SHA-256 prefix, never the token) and served at GET
// /debug/tokens (http/sse, not itself checked) and by the seen_tokens tool
// (stdio: exempt from the check, so it answers after a revocation).

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// Outcomes of one token check.
const (
	outcomeAccepted = "accepted" // introspection said active
	outcomeRejected = "rejected" // introspection said inactive: 401 invalid_token
	outcomeMissing  = "missing"  // no bearer token: 401 without an error code (RFC 6750 §3.1)
	outcomeError    = "error"    // introspection itself failed: 503
)

// maxTokenEvents bounds the per-request log; the per-token counts are kept
// for every token (a test sees a few dozen).
const maxTokenEvents = 10000

// tokenHash is the only form in which a token is ever reported or logged:
// the first 16 hex digits of its SHA-256, as e2e/oidc/provider.mjs reports.
func tokenHash(token string) string {
	sum := sha256.Sum256([]byte(token))
	return hex.EncodeToString(sum[:])[:16]
}

// introspector checks tokens against an RFC 7662 endpoint and records what it saw.
type introspector struct {
	endpoint, clientID, secret string
	client                     *http.Client

	mu     sync.Mutex
	tokens map[string]*tokenStats // by hash
	order  []string               // hashes in first-seen order
	events []tokenEvent
}

// tokenStats is what GET /debug/tokens reports for one token.
type tokenStats struct {
	SHA256        string     `json:"sha256"`
	Accepted      int        `json:"accepted"`
	Rejected      int        `json:"rejected"`
	Errors        int        `json:"errors"`
	FirstSeen     time.Time  `json:"first_seen"`
	LastSeen      time.Time  `json:"last_seen"`
	FirstRejected *time.Time `json:"first_rejected,omitempty"`
}

// tokenEvent is one checked request, in arrival order.
type tokenEvent struct {
	Time    time.Time `json:"time"`
	SHA256  string    `json:"sha256,omitempty"` // empty when no token came
	Outcome string    `json:"outcome"`
	Request string    `json:"request"` // "POST /mcp", or on stdio "tools/call echo"
}

// seenTokens is the document of GET /debug/tokens and the seen_tokens tool.
type seenTokens struct {
	Tokens   []tokenStats `json:"tokens"`   // in first-seen order
	Requests []tokenEvent `json:"requests"` // the last maxTokenEvents checks
	Missing  int          `json:"missing"`  // checks that carried no token
}

func newIntrospector(endpoint, clientID, secret string) *introspector {
	return &introspector{
		endpoint: endpoint, clientID: clientID, secret: secret,
		client: &http.Client{Timeout: 10 * time.Second},
		tokens: map[string]*tokenStats{},
	}
}

// authError is a refusal of a token, as the HTTP answer it stands for.
type authError struct {
	status          int
	wwwAuthenticate string
	body            string
}

func (e *authError) Error() string {
	return fmt.Sprintf("HTTP %d %s\n%s", e.status, http.StatusText(e.status), e.body)
}

func rfc6750(code, description string) *authError {
	if code == "" {
		return &authError{http.StatusUnauthorized, `Bearer realm="testupstream"`,
			`{"error":"unauthorized","error_description":"` + description + `"}`}
	}
	return &authError{http.StatusUnauthorized,
		fmt.Sprintf(`Bearer realm="testupstream", error=%q, error_description=%q`, code, description),
		fmt.Sprintf(`{"error":%q,"error_description":%q}`, code, description)}
}

// check introspects token and records the outcome. It returns nil when the
// token is active.
func (in *introspector) check(ctx context.Context, what, token string) *authError {
	arrived := time.Now().UTC() // a request's time is its arrival; FirstRejected is when it was answered
	if token == "" {
		in.record(arrived, what, "", outcomeMissing)
		return rfc6750("", "no bearer token")
	}
	active, err := in.introspect(ctx, token)
	switch {
	case err != nil:
		in.record(arrived, what, tokenHash(token), outcomeError)
		return &authError{status: http.StatusServiceUnavailable,
			body: fmt.Sprintf(`{"error":"temporarily_unavailable","error_description":%q}`, "token introspection failed: "+err.Error())}
	case !active:
		in.record(arrived, what, tokenHash(token), outcomeRejected)
		// An inactive token's introspection answer is only {"active": false}
		// (RFC 7662 §2.2): expired and revoked look the same from here.
		return rfc6750("invalid_token", "token is not active")
	}
	in.record(arrived, what, tokenHash(token), outcomeAccepted)
	return nil
}

func (in *introspector) introspect(ctx context.Context, token string) (bool, error) {
	form := url.Values{"token": {token}, "token_type_hint": {"access_token"}}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, in.endpoint, strings.NewReader(form.Encode()))
	if err != nil {
		return false, err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Accept", "application/json")
	// client_secret_basic: RFC 6749 §2.3.1 form-encodes both parts first.
	req.SetBasicAuth(url.QueryEscape(in.clientID), url.QueryEscape(in.secret))
	resp, err := in.client.Do(req)
	if err != nil {
		return false, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return false, err
	}
	if resp.StatusCode != http.StatusOK {
		return false, fmt.Errorf("introspection endpoint answered %s: %.200s", resp.Status, body)
	}
	var doc struct {
		Active *bool `json:"active"`
	}
	if err := json.Unmarshal(body, &doc); err != nil || doc.Active == nil {
		return false, fmt.Errorf("introspection answer has no active member: %.200s", body)
	}
	return *doc.Active, nil
}

func (in *introspector) record(arrived time.Time, what, hash, outcome string) {
	now := time.Now().UTC()
	in.mu.Lock()
	defer in.mu.Unlock()
	in.events = append(in.events, tokenEvent{Time: arrived, SHA256: hash, Outcome: outcome, Request: what})
	if len(in.events) > maxTokenEvents {
		in.events = append(in.events[:0:0], in.events[len(in.events)-maxTokenEvents:]...)
	}
	if hash == "" {
		return
	}
	s := in.tokens[hash]
	if s == nil {
		s = &tokenStats{SHA256: hash, FirstSeen: now}
		in.tokens[hash] = s
		in.order = append(in.order, hash)
	}
	s.LastSeen = now
	switch outcome {
	case outcomeAccepted:
		s.Accepted++
	case outcomeRejected:
		s.Rejected++
		if s.FirstRejected == nil {
			s.FirstRejected = &now
		}
	case outcomeError:
		s.Errors++
	}
}

func (in *introspector) seen() seenTokens {
	in.mu.Lock()
	defer in.mu.Unlock()
	out := seenTokens{Tokens: []tokenStats{}, Requests: append([]tokenEvent{}, in.events...)}
	for _, h := range in.order {
		out.Tokens = append(out.Tokens, *in.tokens[h])
	}
	for _, e := range in.events {
		if e.Outcome == outcomeMissing {
			out.Missing++
		}
	}
	return out
}

// bearerToken returns the token of an "Authorization: Bearer <token>" header, or "".
func bearerToken(h http.Header) string {
	scheme, token, ok := strings.Cut(h.Get("Authorization"), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return ""
	}
	return strings.TrimSpace(token)
}

// debugTokensPath serves the record, outside the token check.
const debugTokensPath = "/debug/tokens"

// middleware checks every request's bearer token before next sees it.
func (in *introspector) middleware(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == debugTokensPath {
			w.Header().Set("Content-Type", "application/json")
			_ = json.NewEncoder(w).Encode(in.seen())
			return
		}
		if e := in.check(r.Context(), r.Method+" "+r.URL.Path, bearerToken(r.Header)); e != nil {
			if e.wwwAuthenticate != "" {
				w.Header().Set("WWW-Authenticate", e.wwwAuthenticate)
			}
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(e.status)
			_, _ = io.WriteString(w, e.body)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// envTokenCheck makes every tools/call but seen_tokens introspect the token
// in env var name first, answering an inactive one the way a stdio MCP server
// reports its API's 401: an isError result with the status, the body and (in
// _meta, as provider_error's iserror_http mode does) the WWW-Authenticate header.
func (in *introspector) envTokenCheck(name string) mcp.Middleware {
	return func(next mcp.MethodHandler) mcp.MethodHandler {
		return func(ctx context.Context, method string, req mcp.Request) (mcp.Result, error) {
			if method != "tools/call" {
				return next(ctx, method, req)
			}
			tool := ""
			if p, ok := req.GetParams().(*mcp.CallToolParamsRaw); ok {
				tool = p.Name
			}
			if tool == "seen_tokens" {
				return next(ctx, method, req)
			}
			e := in.check(ctx, "tools/call "+tool, os.Getenv(name))
			if e == nil {
				return next(ctx, method, req)
			}
			res := errorResult(e.Error())
			if e.wwwAuthenticate != "" {
				res.Meta = mcp.Meta{"headers": map[string]string{"WWW-Authenticate": e.wwwAuthenticate}}
			}
			return res, nil
		}
	}
}

// addSeenTokensTool serves the record as a tool (for stdio, which has no
// HTTP endpoint).
func addSeenTokensTool(server *mcp.Server, in *introspector) {
	server.AddTool(&mcp.Tool{
		Name:        "seen_tokens",
		Description: "Reports every bearer token checked by introspection (as sha256 prefixes) with counts per outcome.",
		InputSchema: json.RawMessage(`{"type":"object"}`),
	}, func(context.Context, *mcp.CallToolRequest) (*mcp.CallToolResult, error) {
		b, err := json.Marshal(in.seen())
		if err != nil {
			return nil, err
		}
		return text(string(b)), nil
	})
}

// validateIntrospection checks the introspection flags against the transport.
func validateIntrospection(o options) error {
	var errs []error
	set := o.introspect != ""
	if set && (o.introspectClient == "" || o.introspectSecret == "") {
		errs = append(errs, errors.New("--introspect needs --introspect-client and --introspect-secret"))
	}
	if !set && (o.introspectClient != "" || o.introspectSecret != "" || o.envToken != "") {
		errs = append(errs, errors.New("--introspect-client, --introspect-secret and --env-token need --introspect"))
	}
	if o.envToken != "" && o.transport != "stdio" {
		errs = append(errs, errors.New("--env-token is for --transport stdio (HTTP checks the Authorization header)"))
	}
	if set && o.transport == "stdio" && o.envToken == "" {
		errs = append(errs, errors.New("--introspect on stdio needs --env-token VAR"))
	}
	return errors.Join(errs...)
}
