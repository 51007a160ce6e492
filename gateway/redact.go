package gateway

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"slices"
	"strings"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/credgate/credgate/authmap"
)

// Secrets and where they are removed.
//
// The configured secrets of every upstream (see secretValues) feed one live
// redactor (an [authmap.Redactor]; the credential lifecycle adds rotated
// values to it). Every surface redacts through it: logs (the gateway's, the
// SDK's, child stderr), failure objects and passed-through JSON-RPC errors,
// isError content, /health, and successful results (tools, prompts,
// resources) and the log messages upstreams send agents. Text bound for logs,
// errors and health loses well-known token shapes as well; data an upstream
// returned as a success loses only the configured values, since a token-shaped
// string may be what the agent asked for.
//
// Classification, by contrast, uses only the upstream's own secrets (a JWT's
// expiry, see upstream.secrets): another upstream's credential says nothing
// about this one's.

// minSecretWarn is the length below which validate warns about a secret:
// short values also occur in ordinary text, where redacting them mangles it.
const minSecretWarn = 8

// minSecretRedact is the length below which a value is not redacted at all
// (authmap's own floor).
const minSecretRedact = 4

// minUnnamedSecret is the length from which a value under a name that does not
// say "credential" is still taken for one when it looks random (letters and
// digits, no spaces or slashes): an API key in a header the gateway does not
// know.
const minUnnamedSecret = 16

// secretValues lists the secrets in an upstream's config: the header and env
// values under a credential's name (Authorization, X-Api-Key, *_TOKEN, ...),
// each with the credential after its scheme ("Bearer x", "token x") as a value
// of its own; any other header or env value that looks like a random token;
// the password and secret query parameters of a URL value
// (DATABASE_URL=postgres://u:pw@host); and the same within a value that is a
// JSON object (OPENAPI_MCP_HEADERS={"Authorization": "Bearer ..."}). Plain
// settings (LOG_LEVEL: info, Content-Type: application/json) are not secrets:
// redacting them would mangle every result that mentions them.
func secretValues(u *UpstreamConfig) []string {
	if u == nil {
		return nil
	}
	var out []string
	for _, k := range sortedKeys(u.Headers) {
		v := u.Headers[k]
		// A header sent to an MCP server is almost always there to
		// authenticate, whatever its name: any value long enough not to be a
		// plain word is taken for a secret, unless the header is a protocol
		// one.
		if !plainHeader(k) && !secretName(k) && len(strings.TrimSpace(v)) >= minSecretWarn {
			out = append(out, credentialParts(v)...)
			continue
		}
		out = append(out, secretsOf(k, v, 0)...)
	}
	for _, k := range sortedKeys(u.Env) {
		out = append(out, secretsOf(k, u.Env[k], 0)...)
	}
	// The url's password and secret query parameters (?api_key=...), which
	// some hosted MCP servers take instead of a header.
	out = append(out, secretsOf("url", u.URL, 0)...)
	return out
}

// plainHeader reports whether a header is a protocol header, never a
// credential.
func plainHeader(name string) bool {
	switch strings.ToLower(name) {
	case "accept", "accept-language", "accept-encoding", "content-type", "user-agent", "cache-control",
		"mcp-protocol-version", "x-request-id", "x-correlation-id":
		return true
	}
	return false
}

// secretsOf returns the secrets in one header or env entry (or a member of a
// JSON value, at depth > 0).
func secretsOf(name, v string, depth int) []string {
	if secretName(name) {
		return credentialParts(v)
	}
	if looksRandom(v) {
		return []string{v}
	}
	t := strings.TrimSpace(v)
	if strings.HasPrefix(t, "{") && depth < 4 {
		var obj map[string]any
		if json.Unmarshal([]byte(t), &obj) == nil {
			var out []string
			for k, e := range obj {
				switch e := e.(type) {
				case string:
					out = append(out, secretsOf(k, e, depth+1)...)
				case map[string]any:
					b, _ := json.Marshal(e)
					out = append(out, secretsOf(k, string(b), depth+1)...)
				}
			}
			return out
		}
	}
	p, err := url.Parse(t)
	if err != nil || p.Scheme == "" {
		return nil
	}
	var out []string
	if pw, ok := p.User.Password(); ok && pw != "" {
		out = append(out, pw)
	}
	for k, vals := range p.Query() {
		if secretName(k) {
			out = append(out, vals...)
		}
	}
	return out
}

// credentialParts returns a credential value and, for "Bearer x", "token x"
// or "Basic x", the credential after the scheme. A first word that is not
// a scheme's (letters only) is the secret's own: "Sx9Kq7Lm2Tz4W8 bYc" was
// split, and its "bYc" warned too short to redact.
func credentialParts(v string) []string {
	var out []string
	if v = strings.TrimSpace(v); v != "" {
		out = append(out, v)
	}
	if scheme, after, ok := strings.Cut(v, " "); ok && authScheme(scheme) {
		if after = strings.TrimSpace(after); after != "" {
			out = append(out, after)
		}
	}
	return out
}

// authScheme reports whether w can be an HTTP authentication scheme
// (Bearer, Basic, token, Bot, SSWS, AWS4-HMAC-SHA256, ...): short, letters,
// and digits only in a name with a hyphen (a token's first word has digits
// and no hyphen).
func authScheme(w string) bool {
	digits := strings.ContainsAny(w, "0123456789")
	return w != "" && len(w) <= 24 && (!digits || strings.Contains(w, "-")) && !strings.ContainsFunc(w, func(r rune) bool {
		return (r < 'a' || r > 'z') && (r < 'A' || r > 'Z') && (r < '0' || r > '9') && r != '-'
	})
}

// secretName reports whether a header or env name says it holds a
// credential: one of its words (split at _ - .) is or ends in auth, token,
// key, secret, password, ..., or is pat, cookie, credential(s), session,
// signature.
func secretName(name string) bool {
	for _, w := range strings.FieldsFunc(strings.ToLower(name), func(r rune) bool { return r == '_' || r == '-' || r == '.' }) {
		switch w {
		case "pat", "pwd", "cookie", "credential", "credentials", "session", "signature", "private", "bearer", "dsn":
			return true
		}
		for _, suffix := range []string{"auth", "authorization", "token", "key", "secret", "password", "passwd", "passphrase"} {
			if strings.HasSuffix(w, suffix) {
				return true
			}
		}
	}
	return false
}

// looksRandom reports whether v looks like a token rather than a setting:
// long, one word, no path, letters and digits.
func looksRandom(v string) bool {
	if len(v) < minUnnamedSecret || strings.ContainsAny(v, " \t/") {
		return false
	}
	return strings.ContainsAny(v, "0123456789") && strings.ContainsFunc(v, func(r rune) bool {
		return (r >= 'a' && r <= 'z') || (r >= 'A' && r <= 'Z')
	})
}

// configSecrets lists the secrets of every upstream in c.
func configSecrets(c *Config) []string {
	var out []string
	for _, name := range c.Order() {
		out = append(out, secretValues(c.Upstreams[name])...)
	}
	return append(out, notifySecrets(c)...)
}

// Warnings returns what is valid but probably not meant: what loading
// skipped or ignored ([Config.LoadWarnings]), then configured secrets so
// short that they also occur in ordinary text (under 8 characters), or too
// short to be redacted at all (under 4). Each names its key, never the
// value. New logs them; validate prints them.
func (c *Config) Warnings() []string {
	out := slices.Clone(c.loadWarnings)
	if len(c.Upstreams) == 0 {
		out = append(out, "upstreams: none configured: the gateway serves no tools, prompts or resources")
	}
	for _, name := range c.Order() {
		u := c.Upstreams[name]
		if u == nil {
			continue
		}
		if c.Stateless && u.Session == SessionPerAgent {
			out = append(out, fmt.Sprintf("upstreams.%s.session: per_agent with stateless: true opens a new upstream session (and, for a command, a new child process) for every request, as each request is its own agent session", name))
		}
		for _, m := range []struct {
			key    string
			values map[string]string
		}{{"headers", u.Headers}, {"env", u.Env}} {
			for _, k := range sortedKeys(m.values) {
				if !secretName(k) {
					continue
				}
				parts := credentialParts(m.values[k])
				if len(parts) == 0 {
					continue
				}
				// The credential itself, after any scheme.
				out = appendShortSecret(out, fmt.Sprintf("upstreams.%s.%s.%s", name, m.key, k), parts[len(parts)-1])
			}
		}
	}
	// Secrets written in the config itself (one read from a source is
	// checked when read).
	out = appendShortSecret(out, "admin.token", c.Admin.Token.Value)
	out = appendShortSecret(out, "webhooks.secret", c.Webhooks.Secret.Value)
	for _, name := range sortedKeys(c.Credentials) {
		out = appendShortSecret(out, "credentials."+name+".source.value", c.Credentials[name].Source.Value)
	}
	out = append(out, c.credentialWarnings()...)
	return append(out, c.authWarnings()...)
}

// appendShortSecret appends to out the warning for secret v at key, if it
// is short enough to occur in ordinary text or too short to be redacted.
// An empty v (none written there) warns of nothing.
func appendShortSecret(out []string, key, v string) []string {
	switch n := len(v); {
	case n == 0:
	case n < minSecretRedact:
		out = append(out, fmt.Sprintf("%s: the secret is shorter than %d characters, too short to be redacted from logs and results", key, minSecretRedact))
	case n < minSecretWarn:
		out = append(out, fmt.Sprintf("%s: the secret is shorter than %d characters; it is redacted wherever it occurs, also in ordinary text", key, minSecretWarn))
	}
	return out
}

// redact removes secrets and token shapes from text bound for logs, failure
// objects or health, and the start of a secret that ends a piece of input
// an error quotes cut short ("...", as JSON decoders do).
func (g *Server) redact(s string) string {
	return g.redactor.RedactElided(s)
}

// redactCut is redact for s, or, if cut is set, for s the start of a longer
// text: what ends it and begins a secret is removed too.
func (g *Server) redactCut(s string, cut bool) string {
	if cut {
		return g.redactor.RedactCut(s)
	}
	return g.redact(s)
}

// redactError returns a passed-through upstream JSON-RPC error without
// secrets in its message or data. It returns rpc itself when there were none.
func (g *Server) redactError(rpc *jsonrpc.Error) *jsonrpc.Error {
	msg := g.redact(rpc.Message)
	data := rpc.Data
	if len(data) > 0 {
		if d := g.redact(string(data)); d != string(data) {
			if !json.Valid([]byte(d)) {
				// A secret outside a JSON string (a bare number): the data
				// travels as the redacted text instead.
				d = g.redactor.RedactKnown(string(data))
				if !json.Valid([]byte(d)) {
					b, _ := json.Marshal(g.redact(string(data)))
					d = string(b)
				}
			}
			data = json.RawMessage(d)
		}
	}
	if msg == rpc.Message && string(data) == string(rpc.Data) {
		return rpc
	}
	out := *rpc
	out.Message, out.Data = msg, data
	return &out
}

// hasSecrets reports whether any secret is configured; without one, results
// are not searched at all.
func (g *Server) hasSecrets() bool { return len(g.redactor.Secrets()) > 0 }

// redactContent removes configured secrets from the text of content an
// upstream sent, in place (the gateway decoded it and holds the only copy).
// full also removes token shapes (for failures).
func (g *Server) redactContent(content []mcp.Content, full bool) {
	red := g.redactor.RedactKnown
	if full {
		red = g.redact
	}
	for _, c := range content {
		switch c := c.(type) {
		case *mcp.TextContent:
			c.Text = red(c.Text)
		case *mcp.EmbeddedResource:
			if c.Resource != nil {
				c.Resource.Text = red(c.Resource.Text)
			}
		}
	}
}

// redactResult removes configured secrets from a successful tool result's
// text and structured content, in place: an upstream echoing a credential
// in its answer must not hand it to the agent. It costs a few substring
// searches per text block when secrets are configured, nothing otherwise;
// toolOutcome then checks the whole result (redactEverywhere).
func (g *Server) redactResult(res *mcp.CallToolResult) {
	if !g.hasSecrets() {
		return
	}
	g.redactContent(res.Content, false)
	if res.StructuredContent != nil {
		res.StructuredContent = g.redactValue(res.StructuredContent)
	}
}

// redactEverywhere removes configured secrets from every part of a tool
// result of any kind: a link's URI, name or description, an embedded
// resource's URI, _meta, an object's keys, input requests. The result is
// checked as it will be sent (one encoding, a substring search per secret
// form); one that still holds a secret is redacted in every string and key
// of its JSON and decoded again. If that fails, the result is withheld
// rather than sent with the secret. A result passed through was checked
// whole already (secretFree).
func (g *Server) redactEverywhere(res *mcp.CallToolResult) {
	if _, ok := res.StructuredContent.(*passRaw); ok {
		return
	}
	clean, ok := redactedJSON(g, res)
	if !ok {
		clean = &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: "credgate: the result held a configured secret and is withheld"}}, IsError: res.IsError}
	}
	if clean == res {
		return
	}
	// The failure object stays typed (breakers, renewal, routes and the
	// audit line read it), with its strings redacted too.
	if f, typed := res.Meta[MetaKey].(authmap.Failure); typed {
		f.Detail = g.redact(f.Detail)
		f.ProviderCode = g.redactor.RedactKnown(f.ProviderCode)
		if clean.Meta == nil {
			clean.Meta = mcp.Meta{}
		}
		clean.Meta[MetaKey] = f
	}
	*res = *clean // decoded whole: requestState, inputRequests and resultType too
}

// redactRequest takes configured secrets out of a request an upstream
// asks of an agent (elicitation, sampling), whose message or prompt may
// quote them; params that cannot lose them are not sent.
func (g *Server) redactRequest(req mcp.Request) error {
	if !g.hasSecrets() {
		return nil
	}
	r, isReq := req.(*mcp.ServerRequest[mcp.Params]) // as ServerSession sends them
	if !isReq {
		return nil
	}
	ok := true
	switch p := r.Params.(type) {
	case *mcp.ElicitParams:
		p, ok = redactedJSON(g, p)
		r.Params = p
	case *mcp.CreateMessageParams:
		p, ok = redactedJSON(g, p)
		r.Params = p
	case *mcp.CreateMessageWithToolsParams:
		p, ok = redactedJSON(g, p)
		r.Params = p
	}
	if !ok {
		return errors.New("credgate: the upstream's request held a configured secret; it was not sent to the agent")
	}
	return nil
}

// redactProgress returns p without configured secrets (its message and
// _meta).
func (g *Server) redactProgress(p *mcp.ProgressNotificationParams) *mcp.ProgressNotificationParams {
	if !g.hasSecrets() {
		return p
	}
	clean, ok := redactedJSON(g, p)
	if !ok {
		return &mcp.ProgressNotificationParams{ProgressToken: p.ProgressToken, Progress: p.Progress, Total: p.Total}
	}
	return clean
}

// redactedJSON returns v if its JSON holds no configured secret, or else
// a copy decoded from its JSON with the secrets taken out of every string
// and key; false if that could not be done.
func redactedJSON[T any](g *Server, v *T) (*T, bool) {
	data, err := json.Marshal(v)
	if err == nil && !g.holdsSecret(data) {
		return v, true
	}
	clean := new(T)
	if err == nil {
		var doc any
		dec := json.NewDecoder(bytes.NewReader(data))
		dec.UseNumber()
		if err = dec.Decode(&doc); err == nil {
			if data, err = json.Marshal(g.redactValue(doc)); err == nil {
				err = json.Unmarshal(data, clean)
			}
		}
	}
	return clean, err == nil && !g.holdsSecret(data)
}

// holdsSecret reports whether JSON text data holds a configured secret in
// any of the forms encoders write it in.
func (g *Server) holdsSecret(data []byte) bool {
	for _, s := range g.redactor.Secrets() {
		if bytes.Contains(data, []byte(s)) {
			return true
		}
	}
	return g.redactor.HoldsEncoded(data)
}

// redactValue removes configured secrets from the strings of a decoded JSON
// value, in place where it can. It allocates only where it replaces.
func (g *Server) redactValue(v any) any {
	if r, ok := g.redactedValue(v); ok {
		return r
	}
	return v
}

// redactedValue returns the redacted form of v and true if v is a string or
// raw JSON that held a secret; maps (their keys too) and slices are
// redacted in place.
func (g *Server) redactedValue(v any) (any, bool) {
	switch x := v.(type) {
	case string:
		if r := g.redactor.RedactKnown(x); r != x {
			return r, true
		}
	case map[string]any:
		var renamed []string
		for k, e := range x {
			if r, ok := g.redactedValue(e); ok {
				x[k] = r
			}
			if g.redactor.RedactKnown(k) != k {
				renamed = append(renamed, k)
			}
		}
		for _, k := range renamed { // a key holding a secret
			to := g.redactor.RedactKnown(k)
			for n := 2; ; n++ { // never onto another key
				if _, taken := x[to]; !taken {
					break
				}
				to = fmt.Sprintf("%s (%d)", g.redactor.RedactKnown(k), n)
			}
			x[to] = x[k]
			delete(x, k)
		}
	case mcp.Meta:
		g.redactedValue(map[string]any(x))
	case []any:
		for i, e := range x {
			if r, ok := g.redactedValue(e); ok {
				x[i] = r
			}
		}
	case json.Number: // a secret of digits: the number becomes a string
		if r := g.redactor.RedactKnown(string(x)); r != string(x) {
			return r, true
		}
	case json.RawMessage:
		if s := g.redactor.RedactKnown(string(x)); s != string(x) && json.Valid([]byte(s)) {
			return json.RawMessage(s), true
		}
	}
	return nil, false
}

// redactPrompt removes configured secrets from a prompt's messages.
func (g *Server) redactPrompt(res *mcp.GetPromptResult) {
	if !g.hasSecrets() {
		return
	}
	res.Description = g.redactor.RedactKnown(res.Description)
	for _, m := range res.Messages {
		if m != nil && m.Content != nil {
			g.redactContent([]mcp.Content{m.Content}, false)
		}
	}
	// Anywhere else (see redactEverywhere).
	if clean, ok := redactedJSON(g, res); !ok {
		*res = mcp.GetPromptResult{Description: "credgate: the prompt held a configured secret and is withheld", Messages: []*mcp.PromptMessage{}}
	} else if clean != res {
		*res = *clean
	}
}

// redactCompletion removes configured secrets from a completion's values
// and _meta.
func (g *Server) redactCompletion(res *mcp.CompleteResult) {
	if !g.hasSecrets() {
		return
	}
	for i, v := range res.Completion.Values {
		res.Completion.Values[i] = g.redactor.RedactKnown(v)
	}
	if clean, ok := redactedJSON(g, res); !ok {
		*res = mcp.CompleteResult{Completion: mcp.CompletionResultDetails{Values: []string{}}}
	} else if clean != res {
		*res = *clean
	}
}

// redactResource removes configured secrets from a resource's text.
func (g *Server) redactResource(res *mcp.ReadResourceResult) {
	if !g.hasSecrets() {
		return
	}
	for _, c := range res.Contents {
		if c != nil {
			c.Text = g.redactor.RedactKnown(c.Text)
		}
	}
	// Anywhere else (see redactEverywhere).
	if clean, ok := redactedJSON(g, res); !ok {
		*res = mcp.ReadResourceResult{Contents: []*mcp.ResourceContents{}}
	} else if clean != res {
		*res = *clean
	}
}

// undeliveredNotice reports whether an SDK log line is a notification that
// found no stream to go on: an agent that did not open its standalone GET
// stream gets no list changes, as it chose. The SDK warns for each, so a
// reload that changed the catalog wrote three lines per such agent session
// (found trying the gateway from outside); they are debug lines.
func undeliveredNotice(msg string) bool {
	return strings.HasPrefix(msg, "calling notifications/") && strings.Contains(msg, "undelivered message")
}

// redactingHandler is a slog handler that redacts every record: the SDK's
// log lines can quote an upstream's answer or a request's headers.
type redactingHandler struct {
	slog.Handler
	r *authmap.Redactor
}

func (h redactingHandler) Handle(ctx context.Context, rec slog.Record) error {
	level := rec.Level
	if undeliveredNotice(rec.Message) {
		level = slog.LevelDebug
	}
	out := slog.NewRecord(rec.Time, level, h.r.Redact(rec.Message), rec.PC)
	rec.Attrs(func(a slog.Attr) bool {
		out.AddAttrs(h.attr(a))
		return true
	})
	return h.Handler.Handle(ctx, out)
}

func (h redactingHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	red := make([]slog.Attr, len(attrs))
	for i, a := range attrs {
		red[i] = h.attr(a)
	}
	return redactingHandler{Handler: h.Handler.WithAttrs(red), r: h.r}
}

func (h redactingHandler) WithGroup(name string) slog.Handler {
	return redactingHandler{Handler: h.Handler.WithGroup(name), r: h.r}
}

func (h redactingHandler) attr(a slog.Attr) slog.Attr {
	v := a.Value.Resolve()
	switch v.Kind() {
	case slog.KindString:
		return slog.String(a.Key, h.r.Redact(v.String()))
	case slog.KindGroup:
		group := v.Group()
		red := make([]any, len(group))
		for i, g := range group {
			red[i] = h.attr(g)
		}
		return slog.Group(a.Key, red...)
	case slog.KindAny:
		s := fmt.Sprint(v.Any())
		if r := h.r.Redact(s); r != s {
			return slog.String(a.Key, r)
		}
	}
	return slog.Attr{Key: a.Key, Value: v}
}

// redactCatalog removes configured secrets from the text of an upstream's
// listings, in place (freshly decoded, the gateway holds the only copy): a
// server that puts its configuration in a tool's description or a schema's
// default ("uses token ...") must not hand a credential to every agent that
// lists tools (issue 6 item 13). Names and URIs are identifiers and are kept:
// changing them would break the calls that use them.
func (g *Server) redactCatalog(cat *upstreamCatalog) {
	if !g.hasSecrets() {
		return
	}
	red := g.redactor.RedactKnown
	cat.instructions = red(cat.instructions)
	for _, t := range cat.tools {
		t.Title, t.Description = red(t.Title), red(t.Description)
		t.InputSchema, t.OutputSchema = g.redactValue(t.InputSchema), g.redactValue(t.OutputSchema)
		if t.Annotations != nil {
			t.Annotations.Title = red(t.Annotations.Title)
		}
	}
	for _, p := range cat.prompts {
		p.Title, p.Description = red(p.Title), red(p.Description)
		for _, a := range p.Arguments {
			if a != nil {
				a.Title, a.Description = red(a.Title), red(a.Description)
			}
		}
	}
	for _, r := range cat.resources {
		r.Title, r.Description = red(r.Title), red(r.Description)
	}
	for _, r := range cat.templates {
		r.Title, r.Description = red(r.Title), red(r.Description)
	}
}
