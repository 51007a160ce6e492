package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/url"
	"os/exec"
	"regexp"
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

// connectionGone reports whether err proves the connection to the upstream
// gone: the session is dead, the connection was refused or reset, or it
// closed before the answer. A timeout proves nothing (the tool may be slow),
// nor does any answer, an HTTP error status included.
func connectionGone(err error) bool {
	if isDeadSession(err) {
		return true
	}
	var httpErr *HTTPError
	if errors.As(err, &httpErr) || errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
		return false
	}
	var oe *net.OpError
	var ue *url.Error
	return (errors.As(err, &oe) && !oe.Timeout()) ||
		(errors.As(err, &ue) && (errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF)))
}

// sessionLostError is the error of a request whose session err proved
// gone (see forward): it names the session, so that the breaker counts the
// loss once however many calls it ended (see losses). Its text is err's.
type sessionLostError struct {
	cs  *mcp.ClientSession
	err error
}

func (e *sessionLostError) Error() string { return e.err.Error() }
func (e *sessionLostError) Unwrap() error { return e.err }

// streamEnded reports whether err is the upstream's message stream ending
// under a request: a stdio child exited (crashed, was killed), or an SSE
// upstream's event stream closed, while the request was in flight. The SDK
// reports that as a bare io.EOF, which, unlike a failed HTTP request's, is no
// url.Error, but it proves the connection gone as much. (A streamable HTTP
// request whose stream breaks is retried by the SDK, which reports the end
// of its retries otherwise.)
func (u *upstream) streamEnded(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF)
}

// classify turns any error from forwarding a request to u into the failure
// object. It is the only place that decides what a failure is; toolOutcome and
// rpcError only choose how it travels. upstreamRPC is set for an upstream
// JSON-RPC error that is not about credentials: it passes through as is, with
// f describing it.
func (g *Server) classify(u *upstream, err error) (f authmap.Failure, upstreamRPC *jsonrpc.Error) {
	return g.classifyAs(u, u.defaultCred, err)
}

// classifyAs is classify for a request that credential cred served ("" for
// none of the config's credentials).
func (g *Server) classifyAs(u *upstream, cred string, err error) (f authmap.Failure, upstreamRPC *jsonrpc.Error) {
	k := g.knowledgeAs(u, cred)
	var httpErr *HTTPError
	var rpcErr *jsonrpc.Error
	var unavail *unavailableError
	var agentLimit *agentLimitError
	var missing *credentialMissingError
	var gated *gatedError
	var input *inputError
	switch {
	case errors.As(err, &missing):
		f = g.missingFailure(missing.credential)
	case errors.As(err, &gated):
		f = gated.f
	case errors.As(err, &input) && errors.Is(err, context.DeadlineExceeded):
		f = authmap.Failure{Type: authmap.TypeTimeout, Retryable: true, Detail: input.Error()}
	case errors.As(err, &input):
		// The agent's answer (or its lack of one) is what failed, not
		// the upstream: whatever the agent's own error says, the call is
		// invalid as asked.
		f = authmap.Failure{Type: authmap.TypeInvalidRequest, Detail: input.Error()}
	case errors.Is(err, ErrShuttingDown):
		f = authmap.Failure{Type: authmap.TypeUpstreamUnavailable, Retryable: true, Detail: ErrShuttingDown.Error()}
	case errors.As(err, &rpcErr) && isGatewayAnswer(rpcErr):
		// The gateway's own answer in place of an oversized response, or
		// of one the SDK could not read.
		f = authmap.Failure{Type: authmap.TypeUpstreamError, Detail: rpcErr.Message}
	case errors.As(err, &agentLimit):
		f = authmap.Failure{Type: authmap.TypeUpstreamUnavailable, Retryable: true, Detail: agentLimit.Error()}
	case errors.As(err, &httpErr):
		var ok bool
		f, ok = g.classifier.Classify(authmap.Response{Status: httpErr.Status, Header: httpErr.Header, Body: httpErr.Body, Provider: u.cfg.Provider}, k)
		if !ok {
			f = authmap.Failure{Type: authmap.TypeUpstreamError, Detail: httpErr.Error()}
		}
	case errors.As(err, &unavail) && unavail.cause != nil && (unavail.cause.IsAuth() || unavail.cause.Type == authmap.TypeTimeout):
		// The upstream is down because its credential was rejected, or
		// because it does not answer: that, not the outage, is what the
		// agent must act on.
		f = *unavail.cause
	case errors.As(err, &unavail):
		f = authmap.Failure{Type: authmap.TypeUpstreamUnavailable, Retryable: true, Detail: unavail.Error()}
	case errors.Is(err, context.DeadlineExceeded):
		after := u.cfg.timeout()
		var te *timeoutError
		if errors.As(err, &te) {
			after = te.after
		}
		f = authmap.Failure{Type: authmap.TypeTimeout, Retryable: true,
			Detail: fmt.Sprintf("upstream %q did not answer within %s", u.name, after)}
	case isStartFailure(err):
		// Whether the command is missing from PATH or at an absolute path,
		// the upstream is not there; the gateway keeps trying to start it.
		f = authmap.Failure{Type: authmap.TypeUpstreamUnavailable, Retryable: true,
			Detail: fmt.Sprintf("upstream %q: command %q cannot be started: %v", u.name, u.cfg.Command, err)}
	case isDeadSession(err) || isNetError(err) || u.streamEnded(err):
		if af, ok := g.childRejected(u, err, k); ok {
			f = af
			break
		}
		what := "connection lost"
		if _, connecting := errors.AsType[*connectError](err); connecting {
			what = "cannot be reached" // it never came up: nothing was lost
		}
		f = authmap.Failure{Type: authmap.TypeUpstreamUnavailable, Retryable: true,
			Detail: fmt.Sprintf("upstream %q %s: %v", u.name, what, err)}
	case errors.As(err, &rpcErr) && rpcErr.Code != jsonrpcRejected:
		rpcErr = withoutCodePrefix(rpcErr)
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

// childRejected reads the failure of a stdio child that exited at start
// (a handshake that never came up) saying the provider rejected its
// credential ("401 Bad credentials" on its stderr), as servers that check
// it at start do: that, not the outage it caused, is what the agent and
// ops must act on. Only for an upstream with a credential to blame, and
// not a package manager's or a registry's line (npx's "npm error code
// E401" is about the registry, not the upstream's provider), nor a child
// that died after it came up (its stderr's last words say why it died).
func (g *Server) childRejected(u *upstream, err error, k authmap.Knowledge) (authmap.Failure, bool) {
	if _, connecting := errors.AsType[*connectError](err); !connecting {
		return authmap.Failure{}, false
	}
	return g.stderrRejection(u, err, k)
}

// stderrRejection is childRejected for a child's failure at start, before
// it is wrapped as the handshake's.
func (g *Server) stderrRejection(u *upstream, err error, k authmap.Knowledge) (authmap.Failure, bool) {
	se, ok := errors.AsType[*stderrError](err)
	if !ok || u.defaultCred == "" || registryLine.MatchString(se.line) {
		return authmap.Failure{}, false
	}
	af, ok := g.classifier.ClassifyText(classifiable(se.line), u.cfg.Provider, k)
	return af, ok && af.IsAuth()
}

// registryLine matches a package manager's or a package registry's error
// line, which a command run through npx, uvx or pip may print at start.
var registryLine = regexp.MustCompile(`(?i)\bnpm (err!?|error)\b|\bE40[13]\b|registry\.|\bpip\b|\buv\b.*\b(index|registry)\b|\byarn\b|\bpnpm\b`)

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

// withoutCodePrefix drops the "MCP error <code>: " that a TypeScript SDK
// server puts before its error messages (its McpError's message carries the
// prefix, and the server sends that message). The TypeScript client adds the
// prefix again when it reads an error, so passed through as is, an agent
// would read "MCP error -32602: MCP error -32602: Invalid arguments ...". Only
// a prefix naming the error's own code is dropped.
func withoutCodePrefix(e *jsonrpc.Error) *jsonrpc.Error {
	prefix := fmt.Sprintf("MCP error %d: ", e.Code)
	if !strings.HasPrefix(e.Message, prefix) {
		return e
	}
	out := *e
	for strings.HasPrefix(out.Message, prefix) {
		out.Message = strings.TrimPrefix(out.Message, prefix)
	}
	return &out
}

// jsonrpcRejected is the SDK's code for transport-level rejections (-32005).
const jsonrpcRejected = -32005

// timeoutError is a request (or a connection's handshake) the upstream did
// not answer within its bound. It is a context.DeadlineExceeded, and
// deliberately not the context.Canceled the SDK returns when the gateway
// ends the request: that would read as the caller cancelling.
type timeoutError struct {
	after time.Duration
	err   error // what the SDK returned, for the message only
}

func (e *timeoutError) Error() string {
	return fmt.Sprintf("no answer within %s: %v", e.after, e.err)
}

func (e *timeoutError) Is(target error) bool { return target == context.DeadlineExceeded }

// isStartFailure reports whether err is a stdio command that could not be
// started: not found in PATH, or not found, not executable or without its
// working directory at start.
func isStartFailure(err error) bool {
	var ee *exec.Error
	var pe *fs.PathError
	return errors.As(err, &ee) || (errors.As(err, &pe) && (pe.Op == "fork/exec" || pe.Op == "chdir"))
}

func isNetError(err error) bool {
	var ne net.Error
	var oe *net.OpError
	return errors.As(err, &oe) || (errors.As(err, &ne) && !ne.Timeout())
}

// knowledge is what the gateway knows about u's credential.
func (g *Server) knowledge(u *upstream) authmap.Knowledge {
	return g.knowledgeAs(u, u.defaultCred)
}

// knowledgeAs is knowledge for a request that credential cred served: the
// credential's own (issue 7), or else what u's config says.
func (g *Server) knowledgeAs(u *upstream, cred string) authmap.Knowledge {
	if k, ok := g.credKnowledge(u, cred); ok {
		return k
	}
	expires := u.http.knownExpiry()
	if expires.IsZero() {
		expires = u.cfg.CredentialExpiresAt
	}
	return authmap.Knowledge{Credential: u.credentialName(), ExpiresAt: expires, Secrets: u.secrets, Now: g.now()}
}

// credentialName names where u's credential is configured, never its value:
// the first header or env entry that looks like one.
func (u *upstream) credentialName() string { return u.credName }

// findCredentialName computes credentialName once, from u's config.
func (u *upstream) findCredentialName() string {
	if u.cfg.Credential != "" {
		return u.cfg.Credential
	}
	// The names the redaction takes for secrets (secretName): a substring
	// test named NODE_PATH and PATH the credential ("PAT"), and told ops
	// to rotate them (found trying the gateway from outside).
	for _, k := range sortedKeys(u.cfg.Headers) {
		if secretName(k) {
			return "upstreams." + u.name + ".headers." + k
		}
	}
	for _, k := range sortedKeys(u.cfg.Env) {
		if secretName(k) {
			return "upstreams." + u.name + ".env." + k
		}
	}
	return ""
}

// sortedKeys returns m's keys in order.
func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// toolOutcome maps the upstream's answer to a tools/call onto what the agent
// gets. A result the upstream marked successful passes through untouched
// (secrets aside), unless upstreams.<name>.classify_results is on and its text
// is a provider's structured error report. An isError result reporting a
// credential failure becomes the typed failure (its content kept after ours);
// any other isError result gains the failure object in _meta. Caller
// cancellation is returned as is.
func (g *Server) toolOutcome(u *upstream, tool string, res *mcp.CallToolResult, err error) (*mcp.CallToolResult, error) {
	res, err = g.classifyOutcome(u, tool, res, err)
	if res != nil && g.hasSecrets() {
		// Whatever the result is (a success, input asked for, a tool
		// error, a failure keeping the upstream's content), no configured
		// secret leaves in it.
		g.redactEverywhere(res)
	}
	return res, err
}

// classifyOutcome is toolOutcome before the last redaction.
func (g *Server) classifyOutcome(u *upstream, tool string, res *mcp.CallToolResult, err error) (*mcp.CallToolResult, error) {
	cred := u.cfg.credentialFor(tool, g.config().Credentials)
	if err != nil {
		if errors.Is(err, context.Canceled) {
			return nil, err
		}
		f, rpc := g.classifyAs(u, cred, err)
		if rpc != nil {
			return nil, passThrough(g.redactError(rpc), f)
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
	if !res.IsError {
		if u.cfg.ClassifyResults {
			if f, ok := g.reportedFailure(u, cred, res); ok {
				return g.failureResult(g.attribute(u, f), res.Content), nil
			}
		}
		g.redactResult(res)
		return res, nil
	}
	text, _ := resultText(res)
	f, ok := g.classifier.ClassifyText(classifiable(text), u.cfg.Provider, g.knowledgeAs(u, cred))
	if ok && f.IsAuth() {
		return g.failureResult(g.attribute(u, f), res.Content), nil
	}
	if !ok {
		f = authmap.Failure{Type: authmap.TypeUpstreamError, Detail: text}
	}
	// Not about credentials: the upstream's content stays, the object (with
	// the classifier's finer type: an outage, a timeout) goes in _meta.
	f = g.attribute(u, f)
	meta := make(mcp.Meta, len(res.Meta)+1)
	for k, v := range res.Meta {
		meta[k] = v
	}
	meta[MetaKey] = f
	out := *res
	out.Meta = meta
	g.redactContent(out.Content, true)
	return &out, nil
}

// reportedFailure reads a successful result of an upstream known to report
// provider errors as normal text (classify_results): a single short text
// block holding a provider's error body with a status or an error code. A
// phrase alone ("Title: HTTP 403 Forbidden on S3 upload") is data, never a
// failure; only credential failures are reported.
func (g *Server) reportedFailure(u *upstream, cred string, res *mcp.CallToolResult) (authmap.Failure, bool) {
	text, single := resultText(res)
	if !single || len(text) >= 1024 || !strings.ContainsAny(text, "{<") {
		return authmap.Failure{}, false // no error body in it
	}
	f, ok := g.classifier.ClassifyStructured(text, u.cfg.Provider, g.knowledgeAs(u, cred))
	return f, ok && f.IsAuth()
}

// rpcError maps a failure of prompts/get, resources/read, completion or
// subscribe onto a JSON-RPC error whose data is the failure object. A plain
// upstream JSON-RPC error passes through with its code, message and data.
func (g *Server) rpcError(u *upstream, method, name string, err error) error {
	out, _ := g.rpcFailure(u, method, name, err)
	return out
}

// rpcFailure is rpcError that also returns the failure object it classified
// err as (nil for a caller's cancellation), for the breakers.
func (g *Server) rpcFailure(u *upstream, method, name string, err error) (error, *authmap.Failure) {
	if errors.Is(err, context.Canceled) {
		return err, nil
	}
	f, rpc := g.classify(u, err)
	if rpc != nil {
		return passThrough(g.redactError(rpc), f), &f
	}
	return failureRPC(method, name, f), &f
}

// failureRPC is the JSON-RPC error carrying failure f of method on name.
func failureRPC(method, name string, f authmap.Failure) error {
	data, _ := json.Marshal(f)
	return &jsonrpc.Error{Code: codeUpstreamFailure, Message: fmt.Sprintf("%s %q: %s", method, name, f.Error()), Data: data}
}

// passThrough returns the upstream's JSON-RPC error unwrapped (the SDK drops
// Data from wrapped errors). When the upstream sent no data, the failure
// object fills it, so that every failed call carries a typed error.
//
// An upstream error without a code (0, which JSON-RPC does not define)
// goes on as -32603, as the gateway's own do (coded).
func passThrough(rpc *jsonrpc.Error, f authmap.Failure) error {
	rpc = withCode(rpc)
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

// logCall writes the audit line of a call (issue 9): one info line with the
// agent, upstream, tool, credential, outcome (the failure's type) and
// duration; a warning for credential failures, which ops must see.
func (g *Server) logCall(ctx context.Context, u *upstream, tool string, start time.Time, res *mcp.CallToolResult, err error) {
	outcome, f := "ok", (*authmap.Failure)(nil)
	switch {
	case err != nil && errors.Is(err, context.Canceled):
		outcome = "cancelled"
	case err != nil:
		outcome = "rpc_error"
	case res != nil && (res.NeedsInput() || len(res.InputRequests) > 0 && len(res.Content) == 0):
		outcome = outcomeInput
	case res != nil && res.IsError:
		outcome = "tool_error"
		if v, ok := res.Meta[MetaKey].(authmap.Failure); ok {
			f = &v
			outcome = string(v.Type)
		}
	}
	cred := g.callCredential(u, tool)
	var ev *zerolog.Event
	if f != nil && f.IsAuth() {
		if f.Credential != "" {
			cred = f.Credential
		}
		ev = g.log.Warn().Str(fieldSubtype, string(f.Subtype)).Str("provider", f.Provider).Str("provider_code", f.ProviderCode)
	} else {
		ev = g.log.Info()
	}
	// The tool's name is the upstream's: it could carry a value the gateway
	// knows as a secret (a search of the known values, not the shapes).
	if f != nil && f.Detail != "" {
		ev = ev.Str("detail", f.Detail) // redacted and bounded (attribute)
	}
	// Bounded: an unlisted name an agent sent (a call to an upstream that
	// never listed its tools) is logged too.
	ev = strIf(strIf(ev, fieldAgent, agentName(ctx)).Str(fieldUpstream, u.name).Str(fieldTool, truncate(g.redactor.RedactKnown(tool), 128)), fieldCredential, cred)
	ev.Dur("duration_ms", time.Since(start)).Str(fieldOutcome, outcome).Msg("call")
	g.metrics.toolCall(u, tool, outcome, f, start)
}

// strIf adds the field key to ev unless v is empty: an audit line leaves
// out what a call did not have (an agent without authentication, an
// upstream without a credential).
func strIf(ev *zerolog.Event, key, v string) *zerolog.Event {
	if v == "" {
		return ev
	}
	return ev.Str(key, v)
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
