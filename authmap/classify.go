package authmap

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync/atomic"
	"time"
	"unicode/utf8"
)

// maxDetail bounds Failure.Detail; provider messages beyond this are noise for an agent.
const maxDetail = 300

// maxBody bounds how much of a body is examined; error bodies are small, and every signal the
// rules look for sits near the start.
const maxBody = 64 << 10

// Response is what the classifier sees. Status 0 means "no HTTP status known" (text only).
type Response struct {
	Status   int
	Header   http.Header
	Body     []byte // raw body; or the text of a JSON-RPC error message / isError text content
	Provider string // optional hint: "github", "stripe", ... ("" = detect)
}

// Knowledge is what the gateway knows about the credential, used where the wire cannot tell expired from revoked.
type Knowledge struct {
	// Credential is the credential's configured name (never its value). If empty, Failure.Credential stays empty.
	Credential string
	// ExpiresAt is when the credential expires. If zero, the expiry is unknown. If it is in the past,
	// a credential_invalid becomes credential_expired.
	ExpiresAt time.Time
	// Renewable says the gateway can renew the credential itself (OAuth refresh, rotating source):
	// a credential_expired is then retryable with recovery refresh. If false, an expired credential needs a human.
	Renewable bool
	// RefreshRejected says a refresh attempt was answered invalid_grant: a credential_invalid or
	// credential_expired becomes credential_revoked.
	RefreshRejected bool
	// Secrets are the known secret values; they are redacted from Detail. A JWT among them whose exp claim
	// is in the past turns a credential_invalid into credential_expired.
	Secrets []string
	// Now is the current time. If zero, time.Now() is used.
	Now time.Time
}

func (k Knowledge) now() time.Time {
	if k.Now.IsZero() {
		return time.Now()
	}
	return k.Now
}

// Options configure a Classifier. A nil *Options is the same as the zero value.
type Options struct {
	// Rules are ops rules (config key classify.rules), tried in order before the built-in rules.
	// If empty, only the built-in rules apply.
	Rules []Rule
}

// Classifier maps upstream failures to Failure values. It is safe for concurrent use; its ops
// rules change only by [Classifier.SetRules], which swaps them at once (a config reload).
type Classifier struct {
	rules atomic.Pointer[[]compiledRule]
}

// New returns a Classifier. It returns an error naming the key path of every invalid ops rule
// (for example classify.rules[2].match.body).
func New(opts *Options) (*Classifier, error) {
	c := &Classifier{}
	if opts == nil {
		return c, nil
	}
	if err := c.SetRules(opts.Rules); err != nil {
		return nil, err
	}
	return c, nil
}

// SetRules replaces the ops rules (a config reload): a classification that
// started keeps the rules it began with, the next one uses rules. On error
// (naming every invalid rule, as New does) the rules in force are kept.
func (c *Classifier) SetRules(rules []Rule) error {
	compiled, err := compileRules(rules)
	if err != nil {
		return err
	}
	c.rules.Store(&compiled)
	return nil
}

// Classify returns the failure and true when the response is a failure at all; (zero, false) for a
// success (2xx without a provider error in the body, such as Slack ok:true). A Response with Status 0 is
// handled as text, like ClassifyText.
func (c *Classifier) Classify(r Response, k Knowledge) (Failure, bool) {
	if len(r.Body) > maxBody {
		r.Body = r.Body[:maxBody]
	}
	in := input{status: r.Status, header: r.Header, body: r.Body, hint: NormalizeProvider(r.Provider)}
	if in.status == 0 {
		return c.classifyText(string(r.Body), in.hint, r.Header, k, 0, false)
	}
	return c.classify(in, k, 0)
}

// ClassifyText handles text from a JSON-RPC error message or an isError tool result, where no HTTP
// status is known. It finds embedded statuses and bodies ("HTTP 401 Unauthorized\n{...}",
// "GET https://api.github.com/...: 401 Bad credentials []", "Authentication Failed: ...", bare JSON
// bodies, JSON-RPC envelopes). It returns false when the text shows no failure it recognises; the
// caller then reports a generic upstream_error.
func (c *Classifier) ClassifyText(text string, provider string, k Knowledge) (Failure, bool) {
	if len(text) > maxBody {
		text = text[:maxBody]
	}
	return c.classifyText(text, NormalizeProvider(provider), nil, k, 0, false)
}

// ClassifyStructured is ClassifyText for text an upstream reported as a success (a tool result
// with isError false), where a phrase must never make a failure: an issue titled "HTTP 403
// Forbidden on S3 upload" is data. It returns true only for structured evidence: a JSON or XML
// error document in the text (a provider's error body) together with an error status, in the
// text or the body, or with a provider error code (Slack ok:false, error.type, __type, ...).
func (c *Classifier) ClassifyStructured(text string, provider string, k Knowledge) (Failure, bool) {
	if len(text) > maxBody {
		text = text[:maxBody]
	}
	return c.classifyText(text, NormalizeProvider(provider), nil, k, 0, true)
}

type input struct {
	status   int
	header   http.Header
	body     []byte
	hint     string // normalized provider hint
	fromText bool   // the body is text from an MCP message; weak patterns need a status
	strict   bool   // only structured evidence counts (see ClassifyStructured)
	ruleText string // what ops rules' body regex sees; if empty, the body
}

// credKind decides between rotate and reauthorize for credentials the gateway cannot renew.
type credKind int

const (
	kindUnknown credKind = iota
	kindKey              // API key, PAT, access key: a human replaces it
	kindOAuth            // OAuth access token: a human authorizes again
	kindRefresh          // refresh token / grant: a human authorizes again, never refreshable
)

// verdict is what one rule concluded. typ == "" means undecided; the other fields may still carry
// provider, code and detail for later steps.
type verdict struct {
	typ        Type
	sub        Subtype
	retryable  *bool
	recovery   Recovery
	provider   string
	code       string
	detail     string
	kind       credKind
	refine     bool // a credential_invalid may be refined by the message text (expired, revoked)
	retryAfter *int
	ops        bool // from an ops rule: the operator's word beats the non-auth status guard
}

func (v verdict) decided() bool { return v.typ != "" }

func auth(sub Subtype) verdict { return verdict{typ: TypeAuthFailure, sub: sub} }

// merge fills empty informational fields of v from o.
func (v verdict) merge(o verdict) verdict {
	if v.provider == "" {
		v.provider = o.provider
	}
	if v.code == "" {
		v.code = o.code
	}
	if v.detail == "" {
		v.detail = o.detail
	}
	if v.kind == kindUnknown {
		v.kind = o.kind
	}
	if v.retryAfter == nil {
		v.retryAfter = o.retryAfter
	}
	return v
}

const maxDepth = 4

func (c *Classifier) classify(in input, k Knowledge, depth int) (Failure, bool) {
	d := parseDoc(in.body)
	if in.fromText && in.status == 0 {
		in.status = inferStatus(d)
	}

	// Ops rules first: operators know their upstreams better than we do.
	if v, ok := c.matchRules(in); ok {
		if in.strict && !structured(in, d, v) {
			return Failure{}, false
		}
		return finalize(in, d, v, k), true
	}

	// A JSON-RPC envelope (or an SSE stream carrying one) inside an HTTP response.
	if env, ok := jsonRPCEnvelope(d); ok && depth < maxDepth {
		if env.text != "" {
			if f, ok := c.classifyText(env.text, in.hint, in.header, k, depth+1, in.strict); ok {
				return f, true
			}
		}
		if in.strict {
			return Failure{}, false // the envelope's own text said nothing structured
		}
		// An HTTP auth status around a JSON-RPC error whose text says nothing (MCP servers answer
		// 401 + WWW-Authenticate with {"error":{"code":-32001,"message":"Unauthorized"}}): the HTTP
		// layer decides.
		if !in.fromText && (in.status == 401 || in.status == 403 || in.status == 407 || in.status == 429) {
			if v := c.builtin(in, d, k); v.decided() {
				return finalize(in, d, v, k), true
			}
		}
		switch {
		case env.isProtocolError:
			return finalize(in, d, rpcVerdict(env.code, env.text), k), true
		case env.isError:
			return finalize(in, d, verdict{typ: TypeUpstreamError, detail: env.text}, k), true
		}
		if in.status >= 200 && in.status < 300 {
			return Failure{}, false
		}
	}

	if in.status >= 200 && in.status < 300 {
		// In-band failures on success statuses: Slack ok:false and GraphQL errors.
		for _, det := range []detector{detectSlack, detectGraphQL} {
			if v := det(in, d); v.decided() && (!in.strict || structured(in, d, v)) {
				return finalize(in, d, v, k), true
			}
		}
		return Failure{}, false
	}

	v := c.builtin(in, d, k)
	if !v.decided() || (in.strict && !structured(in, d, v)) {
		return Failure{}, false
	}
	return finalize(in, d, v, k), true
}

// structured reports whether v rests on a provider's error document rather than on a phrase: the
// body is a JSON or XML error document, and an error status or a provider error code comes with it.
func structured(in input, d *doc, v verdict) bool {
	return errorDoc(d) && (in.status >= 400 || v.code != "")
}

// errorDocKeys are the top-level keys of the error bodies the providers document.
var errorDocKeys = []string{"error", "errors", "message", "error_description", "error_code", "errorCode",
	"errorMessage", "code", "__type", "fault", "detail"}

// errorDoc reports whether d is an error document: a JSON object with an error or message key, or
// an XML <Error>.
func errorDoc(d *doc) bool {
	switch {
	case d.obj != nil:
		for _, k := range errorDocKeys {
			if _, ok := d.obj[k]; ok {
				return true
			}
		}
	case d.xml:
		return strings.Contains(d.raw, "<Error") || strings.Contains(d.raw, "<error")
	}
	return false
}

// builtin applies the built-in rules in order: provider body codes, WWW-Authenticate, rate-limit
// signals, message patterns, status fallback.
func (c *Classifier) builtin(in input, d *doc, k Knowledge) verdict {
	var info verdict
	decide := func(v verdict) verdict {
		v = v.merge(info)
		if v.detail == "" {
			v.detail = textDetail(in, d, info)
		}
		return v
	}
	for _, det := range detectors {
		v := det(in, d)
		if v.decided() {
			return decide(v)
		}
		info = info.merge(v)
	}
	v := fromChallenge(in)
	if v.decided() {
		return decide(v)
	}
	info = info.merge(v)
	if v := rateLimitSignal(in, d, info); v.decided() {
		return decide(v)
	}
	if v := textSignal(in, d, info); v.decided() {
		return decide(v)
	}
	return decide(statusFallback(in, info))
}

// finalize turns a verdict into the wire object: guards, knowledge, defaults, retry-after, detail.
func finalize(in input, d *doc, v verdict, k Knowledge) Failure {
	now := k.now()
	// Guard: a 5xx, 404 or 422 is never a credential problem, whatever the body says; the one
	// documented exception is npm's 404 for an expired or revoked token.
	if v.typ == TypeAuthFailure && !v.ops && nonAuthStatus(in.status) && !npmAuthNotice(in.header, in.body) {
		nv := statusFallback(input{status: in.status}, verdict{})
		v.typ, v.sub, v.retryable, v.recovery = nv.typ, "", nil, ""
	}
	if v.typ != TypeAuthFailure {
		v.sub = ""
	}
	if v.sub == SubtypeCredentialInvalid && v.refine {
		if s := refineMessage(v.detail); s != "" {
			v.sub = s
		}
	}
	provider := v.provider
	if in.hint != "" && in.hint != ProviderMCP && in.hint != ProviderGeneric {
		provider = in.hint
	}
	if provider == "" {
		provider = detectProviderMeta(in, d)
	}
	if provider == "" {
		provider = in.hint
	}
	if provider == "" {
		provider = ProviderGeneric
	}

	// Knowledge: what the wire cannot tell.
	if v.typ == TypeAuthFailure {
		switch {
		case k.RefreshRejected && (v.sub == SubtypeCredentialInvalid || v.sub == SubtypeCredentialExpired):
			v.sub = SubtypeCredentialRevoked
			v.recovery = ""
		case v.sub == SubtypeCredentialInvalid && (pastExpiry(k, now) || headerExpired(in.header, now)):
			v.sub = SubtypeCredentialExpired
			v.recovery = ""
		}
	}

	f := Failure{Type: v.typ, Subtype: v.sub, Credential: k.Credential, Provider: provider, ProviderCode: v.code}
	f.Retryable, f.Recovery = defaults(v, provider, k)
	if v.retryable != nil {
		f.Retryable = *v.retryable
	}
	if v.recovery != "" {
		f.Recovery = v.recovery
	}
	if f.Retryable || f.Subtype == SubtypeRateLimitReached || f.Subtype == SubtypeQuotaExhausted {
		ra := v.retryAfter
		if ra == nil {
			ra = retryAfter(in.header, in.body, now)
		}
		f.RetryAfterSeconds = ra
	}
	if strings.TrimSpace(v.detail) == "" && in.status >= 400 {
		// A body that said nothing (empty, an HTML page without a title):
		// the status is all there is, and it still tells a 502 from a 500.
		v.detail = fmt.Sprintf("HTTP %d %s", in.status, http.StatusText(in.status))
	}
	f.Detail = cleanDetail(v.detail, k.Secrets)
	f.ProviderCode = Redact(f.ProviderCode, k.Secrets)
	return f
}

func defaults(v verdict, provider string, k Knowledge) (bool, Recovery) {
	switch v.typ {
	case TypeAuthFailure:
	case TypeUpstreamUnavailable, TypeTimeout:
		return true, RecoveryWait
	case TypeUpstreamError:
		return false, ""
	default:
		return false, ""
	}
	kind := v.kind
	if kind == kindUnknown {
		kind = providerKind(provider)
	}
	switch v.sub {
	case SubtypeCredentialMissing:
		return false, RecoveryReauthorize
	case SubtypeCredentialInvalid:
		if kind == kindKey {
			return false, RecoveryRotate
		}
		return false, RecoveryReauthorize
	case SubtypeCredentialExpired:
		if k.Renewable && !k.RefreshRejected && kind != kindRefresh {
			return true, RecoveryRefresh
		}
		if kind == kindKey {
			return false, RecoveryRotate
		}
		return false, RecoveryReauthorize
	case SubtypeCredentialRevoked:
		return false, RecoveryReauthorize
	case SubtypeInsufficientScope:
		return false, RecoveryGrantScope
	case SubtypePermissionDenied:
		return false, RecoveryGrantPermission
	case SubtypeRateLimitReached:
		return true, RecoveryWait
	case SubtypeQuotaExhausted:
		return false, RecoveryAddQuota
	}
	return false, ""
}

func providerKind(p string) credKind {
	switch p {
	case ProviderOAuth, ProviderGoogle, ProviderMicrosoft, ProviderSlack, ProviderMCP:
		return kindOAuth
	}
	return kindKey
}

func nonAuthStatus(s int) bool { return s >= 500 || s == 404 || s == 422 }

func pastExpiry(k Knowledge, now time.Time) bool {
	if !k.ExpiresAt.IsZero() && k.ExpiresAt.Before(now) {
		return true
	}
	for _, s := range k.Secrets {
		if exp, ok := jwtExpiry(s); ok && exp.Before(now) {
			return true
		}
	}
	return false
}

// headerExpired reads GitHub's github-authentication-token-expiration ("2027-10-12 09:00:00 UTC").
func headerExpired(h http.Header, now time.Time) bool {
	t, ok := ExpiryFromHeader(h)
	return ok && t.Before(now)
}

// ExpiryFromHeader reads a credential expiry a provider announces on its
// responses: GitHub's github-authentication-token-expiration
// ("2027-10-12 09:00:00 UTC"). Feed it to [Credential.NoteExpiry].
func ExpiryFromHeader(h http.Header) (time.Time, bool) {
	v := h.Get("Github-Authentication-Token-Expiration")
	if v == "" {
		return time.Time{}, false
	}
	for _, layout := range []string{"2006-01-02 15:04:05 MST", "2006-01-02 15:04:05 -0700", time.RFC3339} {
		if t, err := time.Parse(layout, v); err == nil {
			return t, true
		}
	}
	return time.Time{}, false
}

func cleanDetail(s string, secrets []string) string {
	s = strings.TrimSpace(strings.ToValidUTF8(s, ""))
	s = Redact(s, secrets)
	s = strings.Join(strings.Fields(s), " ")
	if utf8.RuneCountInString(s) > maxDetail {
		r := []rune(s)
		s = string(r[:maxDetail]) + "…"
	}
	return s
}

// rpcVerdict maps a JSON-RPC error the text of which matched nothing.
func rpcVerdict(code int, msg string) verdict {
	v := verdict{detail: msg, code: ""}
	switch code {
	case -32700, -32600, -32602:
		v.typ = TypeInvalidRequest
	case -32601:
		v.typ = TypeNotFound
	default:
		v.typ = TypeUpstreamError
	}
	return v
}

type rpcEnvelope struct {
	text            string
	code            int
	isProtocolError bool
	isError         bool
}

// jsonRPCEnvelope recognises a JSON-RPC response (bare or in an SSE "data:" line) and returns the
// text it carries: the error message (and data), or a tool result's text content.
func jsonRPCEnvelope(d *doc) (rpcEnvelope, bool) {
	obj := d.obj
	if obj == nil && d.sse != nil {
		obj = d.sse
	}
	if obj == nil {
		return rpcEnvelope{}, false
	}
	if _, ok := obj["jsonrpc"]; !ok {
		return rpcEnvelope{}, false
	}
	var env rpcEnvelope
	if e, ok := obj["error"].(map[string]any); ok {
		env.isProtocolError = true
		if n, ok := e["code"].(float64); ok {
			env.code = int(n)
		}
		env.text = str(e["message"])
		switch data := e["data"].(type) {
		case string:
			env.text += "\n" + data
		case map[string]any, []any:
			b, _ := json.Marshal(data)
			env.text += "\n" + string(b)
		}
		return env, true
	}
	res, ok := obj["result"].(map[string]any)
	if !ok {
		return rpcEnvelope{}, false
	}
	env.isError, _ = res["isError"].(bool)
	if content, ok := res["content"].([]any); ok {
		var parts []string
		for _, c := range content {
			if m, ok := c.(map[string]any); ok && str(m["type"]) == "text" {
				parts = append(parts, str(m["text"]))
			}
		}
		env.text = strings.Join(parts, "\n")
	}
	return env, true
}

func str(v any) string {
	s, _ := v.(string)
	return s
}

// doc is a parsed body.
type doc struct {
	raw  string
	json bool
	obj  map[string]any // top-level JSON object, if any
	arr  []any          // top-level JSON array, if any
	xml  bool
	html bool
	sse  map[string]any // JSON object from an SSE data line
}

func parseDoc(body []byte) *doc {
	d := &doc{raw: string(body)}
	t := bytes.TrimSpace(body)
	if len(t) == 0 {
		return d
	}
	switch t[0] {
	case '{', '[':
		var v any
		dec := json.NewDecoder(bytes.NewReader(t))
		dec.UseNumber()
		if err := dec.Decode(&v); err == nil {
			d.json = true
			v = denumber(v)
			switch x := v.(type) {
			case map[string]any:
				d.obj = x
			case []any:
				d.arr = x
			}
		}
	case '<':
		lower := strings.ToLower(string(t[:min(len(t), 512)]))
		if strings.Contains(lower, "<html") || strings.Contains(lower, "<!doctype html") || strings.Contains(lower, "<head") || strings.Contains(lower, "<body") {
			d.html = true
		} else {
			d.xml = true
		}
	default:
		if bytes.HasPrefix(t, []byte("event:")) || bytes.HasPrefix(t, []byte("data:")) || bytes.HasPrefix(t, []byte("id:")) {
			for _, line := range strings.Split(string(t), "\n") {
				line = strings.TrimSpace(line)
				if data, ok := strings.CutPrefix(line, "data:"); ok {
					var m map[string]any
					if json.Unmarshal([]byte(strings.TrimSpace(data)), &m) == nil {
						d.sse = m
						break
					}
				}
			}
		}
	}
	return d
}

// denumber turns json.Number into float64 (numbers stay comparable with ==) without losing the
// ability to decode huge values.
func denumber(v any) any {
	switch x := v.(type) {
	case json.Number:
		f, err := x.Float64()
		if err != nil {
			return x.String()
		}
		return f
	case map[string]any:
		for k, e := range x {
			x[k] = denumber(e)
		}
	case []any:
		for i, e := range x {
			x[i] = denumber(e)
		}
	}
	return v
}
