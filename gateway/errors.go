package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"time"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	"github.com/modelcontextprotocol/go-sdk/mcp"
	"github.com/rs/zerolog"

	"github.com/credgate/credgate/authmap"
)

// MetaKey is the _meta key of a CallToolResult that carries the gateway's
// failure object.
const MetaKey = "dev.credgate/error"

// Gateway-defined JSON-RPC error codes (-32000..-32019 are implementation
// defined). Upstream codes pass through unchanged.
const (
	codeUpstreamFailure = -32010
	codeInvalidParams   = -32602
)

// unavailableError is returned when an upstream has no live session.
type unavailableError struct {
	upstream string
	reason   string
	cause    *authmap.Failure // why it is down, when known
}

func (e *unavailableError) Error() string {
	if e.reason == "" {
		return fmt.Sprintf("upstream %q is not connected", e.upstream)
	}
	return fmt.Sprintf("upstream %q is not connected: %s", e.upstream, e.reason)
}

// unavailable describes why u has no session.
func (u *upstream) unavailable() *unavailableError {
	u.mu.Lock()
	defer u.mu.Unlock()
	return &unavailableError{upstream: u.name, reason: u.lastErr, cause: u.lastFailure}
}

func invalidParams(msg string) error {
	return &jsonrpc.Error{Code: codeInvalidParams, Message: msg}
}

// isDeadSession reports whether err shows the upstream session is gone, so it
// must be reconnected.
func isDeadSession(err error) bool {
	return errors.Is(err, mcp.ErrConnectionClosed) || errors.Is(err, mcp.ErrSessionMissing)
}

// classify turns any error from forwarding a request to u into the failure
// object. It is the only place that decides what a failure is; toolOutcome and
// rpcError only choose how it travels. upstreamRPC is set for an upstream
// JSON-RPC error that is not about credentials: it passes through as is, with
// f describing it.
func (g *Server) classify(u *upstream, err error) (f authmap.Failure, upstreamRPC *jsonrpc.Error) {
	k := g.knowledge(u)
	var httpErr *HTTPError
	var rpcErr *jsonrpc.Error
	var unavail *unavailableError
	var agentLimit *agentLimitError
	switch {
	case errors.As(err, &rpcErr) && isResponseTooLarge(rpcErr):
		// The gateway's own answer in place of an oversized response.
		f = authmap.Failure{Type: authmap.TypeUpstreamError, Detail: rpcErr.Message}
	case errors.As(err, &agentLimit):
		f = authmap.Failure{Type: authmap.TypeUpstreamUnavailable, Retryable: true, Detail: agentLimit.Error()}
	case errors.As(err, &httpErr):
		var ok bool
		f, ok = g.classifier.Classify(authmap.Response{Status: httpErr.Status, Header: httpErr.Header, Body: httpErr.Body, Provider: u.cfg.Provider}, k)
		if !ok {
			f = authmap.Failure{Type: authmap.TypeUpstreamError, Detail: httpErr.Error()}
		}
	case errors.As(err, &unavail) && unavail.cause != nil && unavail.cause.IsAuth():
		// The upstream is down because its credential was rejected: that,
		// not the outage, is what the agent must act on.
		f = *unavail.cause
	case errors.As(err, &unavail):
		f = authmap.Failure{Type: authmap.TypeUpstreamUnavailable, Retryable: true, Detail: unavail.Error()}
	case errors.Is(err, context.DeadlineExceeded):
		f = authmap.Failure{Type: authmap.TypeTimeout, Retryable: true,
			Detail: fmt.Sprintf("upstream %q did not answer within %s", u.name, u.cfg.timeout())}
	case isDeadSession(err) || isNetError(err):
		f = authmap.Failure{Type: authmap.TypeUpstreamUnavailable, Retryable: true,
			Detail: fmt.Sprintf("upstream %q connection lost: %v", u.name, err)}
	case errors.As(err, &rpcErr) && rpcErr.Code != jsonrpcRejected:
		text := rpcErr.Message
		if len(rpcErr.Data) > 0 {
			text += "\n" + string(rpcErr.Data)
		}
		af, ok := g.classifier.ClassifyText(classifiable(text), u.cfg.Provider, k)
		switch {
		case ok && af.IsAuth():
			f = af
		case ok:
			f, upstreamRPC = af, rpcErr
		default:
			f, upstreamRPC = authmap.Failure{Type: authmap.TypeUpstreamError, Detail: rpcErr.Message}, rpcErr
		}
	default:
		f = authmap.Failure{Type: authmap.TypeUpstreamError, Detail: err.Error()}
	}
	return g.attribute(u, f), upstreamRPC
}

// attribute completes a failure object for the wire: it names the upstream
// and, for a credential failure, the credential, and redacts and bounds the
// provider's message.
func (g *Server) attribute(u *upstream, f authmap.Failure) authmap.Failure {
	f.Upstream = u.name
	if f.IsAuth() && f.Credential == "" {
		f.Credential = u.credentialName()
	}
	f.Detail = truncate(g.redact(f.Detail), 500)
	return f
}

// jsonrpcRejected is the SDK's code for transport-level rejections (-32005).
const jsonrpcRejected = -32005

func isNetError(err error) bool {
	var ne net.Error
	var oe *net.OpError
	return errors.As(err, &oe) || (errors.As(err, &ne) && !ne.Timeout())
}

// knowledge is what the gateway knows about u's credential.
func (g *Server) knowledge(u *upstream) authmap.Knowledge {
	expires := u.http.knownExpiry()
	if expires.IsZero() {
		expires = u.cfg.CredentialExpiresAt
	}
	return authmap.Knowledge{Credential: u.credentialName(), ExpiresAt: expires, Secrets: g.secretList, Now: g.now()}
}

// credentialName names where u's credential is configured, never its value:
// the first header or env entry that looks like one.
func (u *upstream) credentialName() string {
	if u.cfg.Credential != "" {
		return u.cfg.Credential
	}
	for _, k := range sortedKeys(u.cfg.Headers) {
		lk := strings.ToLower(k)
		if lk == "authorization" || strings.Contains(lk, "key") || strings.Contains(lk, "token") || strings.Contains(lk, "auth") {
			return "upstreams." + u.name + ".headers." + k
		}
	}
	for _, k := range sortedKeys(u.cfg.Env) {
		uk := strings.ToUpper(k)
		if strings.Contains(uk, "TOKEN") || strings.Contains(uk, "KEY") || strings.Contains(uk, "SECRET") || strings.Contains(uk, "PASSWORD") || strings.Contains(uk, "PAT") {
			return "upstreams." + u.name + ".env." + k
		}
	}
	return ""
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// toolOutcome maps the upstream's answer to a tools/call onto what the agent
// gets. Results pass through untouched, except that a result reporting a
// credential failure in its text becomes the typed failure (its content kept
// after ours), and any other isError result gains the failure object in _meta.
// Caller cancellation is returned as is.
func (g *Server) toolOutcome(u *upstream, tool string, res *mcp.CallToolResult, err error) (*mcp.CallToolResult, error) {
	if err != nil {
		if errors.Is(err, context.Canceled) {
			return nil, err
		}
		f, rpc := g.classify(u, err)
		if rpc != nil {
			return nil, passThrough(rpc, f)
		}
		return g.failureResult(f, nil), nil
	}
	if res == nil {
		return res, nil
	}
	res.Meta = hopLocalStripped(res.Meta)
	if res.NeedsInput() {
		return res, nil
	}
	text, single := resultText(res)
	if res.IsError || (single && len(text) < 1024 && mayReportFailure(text)) {
		if f, ok := g.classifier.ClassifyText(classifiable(text), u.cfg.Provider, g.knowledge(u)); ok && f.IsAuth() {
			return g.failureResult(g.attribute(u, f), res.Content), nil
		}
	}
	if res.IsError {
		f := g.attribute(u, authmap.Failure{Type: authmap.TypeUpstreamError, Detail: text})
		meta := make(mcp.Meta, len(res.Meta)+1)
		for k, v := range res.Meta {
			meta[k] = v
		}
		meta[MetaKey] = f
		out := *res
		out.Meta = meta
		return &out, nil
	}
	return res, nil
}

// rpcError maps a failure of prompts/get, resources/read, completion or
// subscribe onto a JSON-RPC error whose data is the failure object. A plain
// upstream JSON-RPC error passes through with its code, message and data.
func (g *Server) rpcError(u *upstream, method, name string, err error) error {
	if errors.Is(err, context.Canceled) {
		return err
	}
	f, rpc := g.classify(u, err)
	if rpc != nil {
		return passThrough(rpc, f)
	}
	data, _ := json.Marshal(f)
	return &jsonrpc.Error{Code: codeUpstreamFailure, Message: fmt.Sprintf("%s %q: %s", method, name, f.Error()), Data: data}
}

// passThrough returns the upstream's JSON-RPC error unwrapped (the SDK drops
// Data from wrapped errors). When the upstream sent no data, the failure
// object fills it, so that every failed call carries a typed error.
func passThrough(rpc *jsonrpc.Error, f authmap.Failure) error {
	if len(rpc.Data) > 0 {
		return rpc
	}
	out := *rpc
	out.Data, _ = json.Marshal(f)
	return &out
}

// failureResult is the CallToolResult of a failed call: a short human line and
// the failure's JSON as the first text block, the object in _meta, and the
// upstream's own content, if any, after it.
func (g *Server) failureResult(f authmap.Failure, upstreamContent []mcp.Content) *mcp.CallToolResult {
	js, _ := json.Marshal(f)
	content := make([]mcp.Content, 0, 1+len(upstreamContent))
	content = append(content, &mcp.TextContent{Text: f.Error() + "\n" + string(js)})
	for _, c := range upstreamContent {
		// The upstream's own account of a failure may quote the credential.
		if t, ok := c.(*mcp.TextContent); ok {
			r := *t
			r.Text = g.redact(t.Text)
			c = &r
		}
		content = append(content, c)
	}
	return &mcp.CallToolResult{IsError: true, Content: content, Meta: mcp.Meta{MetaKey: f}}
}

// resultText joins the text blocks of a result; single reports whether the
// result is one text block.
func resultText(res *mcp.CallToolResult) (text string, single bool) {
	var b strings.Builder
	n := 0
	for _, c := range res.Content {
		if t, ok := c.(*mcp.TextContent); ok {
			if n > 0 {
				b.WriteByte('\n')
			}
			b.WriteString(t.Text)
			n++
		}
	}
	return b.String(), n == 1 && len(res.Content) == 1 && res.StructuredContent == nil
}

// secretParts returns the secret-looking parts of a configured value: the
// value itself and, for "Bearer x" or "token x", the credential after the
// scheme. Short values are skipped: they are not secrets and redacting them
// would mangle ordinary text.
func secretParts(v string) []string {
	var out []string
	if len(v) >= 8 {
		out = append(out, v)
	}
	if _, after, ok := strings.Cut(v, " "); ok && len(after) >= 8 {
		out = append(out, after)
	}
	return out
}

// logCall writes the one debug line per call, and a warning for credential
// failures, which ops must see.
func (g *Server) logCall(u *upstream, tool string, start time.Time, res *mcp.CallToolResult, err error) {
	outcome, f := "ok", (*authmap.Failure)(nil)
	switch {
	case err != nil && errors.Is(err, context.Canceled):
		outcome = "cancelled"
	case err != nil:
		outcome = "rpc_error"
	case res != nil && res.IsError:
		outcome = "tool_error"
		if v, ok := res.Meta[MetaKey].(authmap.Failure); ok {
			f = &v
			outcome = string(v.Type)
		}
	}
	var ev *zerolog.Event
	if f != nil && f.IsAuth() {
		ev = g.log.Warn().Str(fieldSubtype, string(f.Subtype)).Str("credential", f.Credential).Str("provider", f.Provider).Str("provider_code", f.ProviderCode)
	} else {
		ev = g.log.Debug()
	}
	ev.Str(fieldUpstream, u.name).Str(fieldTool, tool).Dur("duration", time.Since(start)).Str(fieldOutcome, outcome).Msg("call")
}

// failureHints are substrings without which a successful-looking result is not
// checked for a failure report. Some servers (github-mcp-server) send provider
// errors with isError false, so short results are checked too; the hints keep
// that check off the hot path of ordinary results.
var failureHints = []string{"401", "403", "429", "nauthori", "NAUTHORI", "orbidden", "redential", "xpired", "evoked",
	"ate limit", "ate Limit", "uota", "invalid_token", "nvalid token", "ad credentials", "ermission"}

func mayReportFailure(text string) bool {
	for _, h := range failureHints {
		if strings.Contains(text, h) {
			return true
		}
	}
	return false
}

// classifyWindow bounds the text of a failure that is classified: its head,
// where servers put the provider's status and message, and its tail, where a
// stack trace ends with the exception. Classifying a whole 64 KiB log costs
// around a hundred milliseconds; the window keeps it to a few.
const classifyWindow = 2 << 10

func classifiable(text string) string {
	if len(text) <= 2*classifyWindow {
		return text
	}
	return text[:classifyWindow] + "\n…\n" + text[len(text)-classifyWindow:]
}
