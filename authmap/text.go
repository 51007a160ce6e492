package authmap

import (
	"bytes"
	"encoding/json"
	"net/http"
	"regexp"
	"strconv"
	"strings"
)

var (
	// Wrappers MCP clients, SDKs and gateways put around a server's message.
	reWrapper = regexp.MustCompile(`^(?:MCP error -?\d+:\s*|McpError:\s*|Error:\s*|JSON ?RPC (?:internal )?error:\s*|error from server:\s*|Tool execution failed:\s*)`)

	// Embedded statuses, most specific first.
	reStatusPatterns = []*regexp.Regexp{
		regexp.MustCompile(`\bHTTP(?:/\d(?:\.\d)?)?\s*:?\s+([1-5]\d\d)\b`),
		// go-github: "GET https://api.github.com/...: 401 Bad credentials []"
		regexp.MustCompile(`(?:GET|POST|PUT|PATCH|DELETE|HEAD|OPTIONS) https?://\S+:?\s+([1-5]\d\d)\b`),
		// Python requests' raise_for_status ("403 Client Error: Forbidden for url: ...") and
		// urllib ("HTTP Error 401: Unauthorized").
		regexp.MustCompile(`\b([1-5]\d\d) (?:Client|Server) Error\b`),
		regexp.MustCompile(`\bHTTP Error ([1-5]\d\d)\b`),
		// google-api-go-client googleapi.Error: "googleapi: Error 403: <message>, <reason>".
		regexp.MustCompile(`\bgoogleapi: Error ([1-5]\d\d)\b`),
		// Rust reqwest: "HTTP status client error (401 Unauthorized) for url (...)" and its Debug
		// form "reqwest::Error { kind: Status(401), ... }".
		regexp.MustCompile(`\bHTTP status (?:client|server) error \(([1-5]\d\d)\b`),
		regexp.MustCompile(`\bkind: Status\(([1-5]\d\d)\)`),
		regexp.MustCompile(`(?i)\bstatus(?:[ _-]?code)?\s*[:=]?\s*([1-5]\d\d)\b`),
		// openai-python / anthropic-python APIStatusError: "Error code: 429 - {...}"; Vault CLI:
		// "Code: 403. Errors:".
		regexp.MustCompile(`(?i)\b(?:error )?code:\s*([45]\d\d)\b`),
		// A Python exception whose message starts with the status: google-api-core
		// ("google.api_core.exceptions.PermissionDenied: 403 ..."), python-gitlab ("...Error: 401: ...").
		regexp.MustCompile(`(?m)^(?:[A-Za-z_]\w*\.)+[A-Z]\w*:\s+([45]\d\d)\b`),
		regexp.MustCompile(`(?i)\b(?:api|http|request|response|server) error\s*[:=]?\s*\(?([1-5]\d\d)\b`),
		// Node SDKs whose APIError message starts with the status (openai-node, @anthropic-ai/sdk:
		// "401 Incorrect API key provided", "NotFoundError: 404 The model ...", "529 {...}"); go-github's
		// body line "422 Invalid request.".
		regexp.MustCompile("(?m)^(?:[A-Z]\\w*(?:Error|Exception)(?: \\[\\w+\\])?:\\s*)?([45]\\d\\d) [A-Z{`]"),
		regexp.MustCompile(`(?i)\b([1-5]\d\d)\s*[:\-]?\s*(?:Unauthorized|Forbidden|Not Found|Too Many Requests|Bad credentials|Payment Required|Bad Request|Unprocessable Entity|Internal Server Error|Bad Gateway|Service Unavailable|Gateway Time-?out|Request Timeout|Authorization Required|Proxy Authentication Required|Conflict)\b`),
	}

	// modelcontextprotocol/servers github formatGitHubError prefixes and the statuses they stand for.
	// Reason phrases SDKs print without the number (octokit "HttpError: Validation Failed", server-github
	// "GitHub API error: Unprocessable Entity"); only right after an error prefix.
	rePhraseStatus = regexp.MustCompile(`(?:^|(?i:error):\s*)(Validation Failed|Unprocessable Entity)\b`)

	reGitHubPrefix = regexp.MustCompile(`(?m)^(?:Error:\s*)?(Authentication Failed|Permission Denied|Rate Limit Exceeded|Not Found|Validation Error|Conflict|GitHub API Error):\s*`)
)

var githubPrefixStatus = map[string]int{
	"Authentication Failed": 401,
	"Permission Denied":     403,
	"Rate Limit Exceeded":   429,
	"Not Found":             404,
	"Validation Error":      422,
	"Conflict":              409,
}

func (c *Classifier) classifyText(text, hint string, h http.Header, k Knowledge, depth int, strict bool) (Failure, bool) {
	if h == nil {
		h = http.Header{}
	}
	full := strings.TrimSpace(text)
	if full == "" || depth > maxDepth {
		return Failure{}, false
	}
	msg := full
	for {
		m := reWrapper.FindString(msg)
		if m == "" {
			break
		}
		msg = strings.TrimSpace(msg[len(m):])
	}
	in := input{header: h, hint: hint, fromText: true, strict: strict, ruleText: full}

	// A bare JSON document: a JSON-RPC envelope or a provider body.
	if t := strings.TrimSpace(msg); strings.HasPrefix(t, "{") || strings.HasPrefix(t, "[") {
		if json.Valid([]byte(t)) {
			in.body = []byte(t)
			return c.classify(in, k, depth+1)
		}
	}

	if m := reGitHubPrefix.FindStringSubmatch(msg); m != nil {
		in.status = githubPrefixStatus[m[1]]
		if in.hint == "" || in.hint == ProviderMCP {
			in.hint = ProviderGitHub
		}
	}
	for _, re := range reStatusPatterns {
		if in.status != 0 {
			break
		}
		if m := re.FindStringSubmatch(msg); m != nil {
			in.status, _ = strconv.Atoi(m[1])
		}
	}
	if in.status == 0 && rePhraseStatus.MatchString(msg) {
		in.status = 422
	}
	if in.status >= 200 && in.status < 300 {
		in.status = 0 // "HTTP 200" in tool text says nothing about a failure; look at the body.
	}
	in.body = []byte(msg)
	if b := embeddedBody(msg); b != nil {
		in.body = b
	}
	f, ok := c.classify(in, k, depth+1)
	if !ok && len(in.body) != len(msg) {
		// The embedded body said nothing (e.g. a details list): the surrounding text may.
		in.body = []byte(msg)
		f, ok = c.classify(in, k, depth+1)
	}
	if !ok && !strict {
		f, ok = localText(msg)
	}
	if !ok && !strict {
		f, ok = mcpCodeText(full)
	}
	if ok && f.Detail == "" {
		f.Detail = cleanDetail(msg, k.Secrets)
	}
	return f, ok
}

// embeddedBody finds a JSON or XML body inside text ("HTTP 401 Unauthorized\n{...}").
func embeddedBody(s string) []byte {
	tries := 0 // bounded: text full of braces must not cost quadratic time
	for i := 0; i < len(s) && tries < 8; i++ {
		switch s[i] {
		case '{', '[':
			tries++
			dec := json.NewDecoder(strings.NewReader(s[i:]))
			var v any
			if err := dec.Decode(&v); err == nil {
				if _, ok := v.(map[string]any); ok {
					return []byte(s[i : i+int(dec.InputOffset())])
				}
			} else if b, ok := pyLiteralJSON(s[i:]); ok {
				// Python SDKs print the body as a dict repr: {'error': {'type': ..., 'code': None}}.
				return b
			}
		case '<':
			rest := s[i:]
			if strings.HasPrefix(rest, "<?xml") || strings.HasPrefix(rest, "<Error") || strings.HasPrefix(rest, "<html") ||
				strings.HasPrefix(rest, "<!DOCTYPE") || strings.HasPrefix(rest, "<status") {
				return bytes.Clone([]byte(rest))
			}
		}
	}
	return nil
}

var (
	// Errors that never came from an upstream API: a local file missing, a client-side timeout.
	reLocalNotFound = regexp.MustCompile(`\bENOENT\b|(?i)no such file or directory`)
	// SDK messages for a missing object or an invalid request that carry no status (Notion
	// object_not_found "Could not find database with ID", Stripe resource_missing "No such customer",
	// Exchange/Graph "not found in the store"; Notion validation_error "body failed validation", Stripe
	// card_error; the go-sdk server's schema check of a tool's arguments, `validating "arguments": ...`).
	// Used only when nothing else matched; they never make an auth failure.
	reSDKNotFound = regexp.MustCompile(`(?i)\bcould not find \w+ with id\b|(?:^|Error: )No such \w+:|\bwas not found in the store\b`)
	reSDKInvalid  = regexp.MustCompile(`(?i)\bbody failed validation\b|^StripeCardError:|\byour card was declined\b|^validating "arguments": `)
	// The TypeScript SDK server's own errors, which it answers as a tool error result whose text is
	// its McpError's message, the JSON-RPC code first: "MCP error -32602: Input validation error:
	// ...", "MCP error -32602: Tool x not found". Matched on the whole text (the code is in the
	// wrapper the others are matched without), and only when nothing else matched.
	reMCPNotFound  = regexp.MustCompile(`^MCP error -32602: (?:Tool|Prompt|Resource) \S+ not found\b|^MCP error -32601: `)
	reMCPInvalid   = regexp.MustCompile(`^MCP error -(?:32602|32600|32700): `)
	reLocalTimeout = regexp.MustCompile(`(?i)^(?:request )?timed out\b|\brequest timed out\b|\bcontext deadline exceeded\b|\bETIMEDOUT\b|\boperation timed out\b|\bi/o timeout\b|\bTLS handshake timeout\b|\bClient\.Timeout exceeded\b`)
	// Connection failures Node, Go, Python, curl and Rust clients report: refused, reset (as the
	// socket call reports it: "read: connection reset by peer", not a message that merely says
	// so, like "database connection reset by peer"), unreachable, and DNS failures (getaddrinfo,
	// Go's resolver, glibc, urllib3, reqwest).
	reLocalUnavailable = regexp.MustCompile(`\bECONNREFUSED\b|\bECONNRESET\b|\bENOTFOUND\b|\bEAI_AGAIN\b|\bEHOSTUNREACH\b|\bENETUNREACH\b|\bECONNABORTED\b|\bsocket hang up\b|\bfetch failed\b|^APIConnectionError: Connection error\.|` +
		`(?i)\bconnection refused\b|\b(?:read|write|recv failure|send failure): connection reset by peer\b|\bConnectionResetError\b|\bno such host\b|\bno route to host\b|\bnetwork is unreachable\b|` +
		`\blookup \S+ on \S+: server misbehaving\b|\bName or service not known\b|\bnodename nor servname provided\b|\bTemporary failure in name resolution\b|` +
		`\bNameResolutionError\b|\bFailed to establish a new connection\b|\bdns error\b`)
)

// localText types text that matched no upstream rule but names a local condition. It never
// returns auth_failure.
func localText(msg string) (Failure, bool) {
	switch {
	case reLocalTimeout.MatchString(msg):
		return Failure{Type: TypeTimeout, Retryable: true, Recovery: RecoveryWait, Provider: ProviderGeneric}, true
	case reLocalUnavailable.MatchString(msg):
		return Failure{Type: TypeUpstreamUnavailable, Retryable: true, Recovery: RecoveryWait, Provider: ProviderGeneric}, true
	case reSDKNotFound.MatchString(msg):
		return Failure{Type: TypeNotFound, Provider: ProviderGeneric}, true
	case reSDKInvalid.MatchString(msg):
		return Failure{Type: TypeInvalidRequest, Provider: ProviderGeneric}, true
	case reLocalNotFound.MatchString(msg):
		return Failure{Type: TypeNotFound, Provider: ProviderGeneric}, true
	}
	return Failure{}, false
}

// mcpCodeText types text that matched nothing else by the JSON-RPC code an MCP SDK put first
// ("MCP error -32602: ..."): the server's own refusal of the request, which the agent must fix.
func mcpCodeText(full string) (Failure, bool) {
	switch {
	case reMCPNotFound.MatchString(full):
		return Failure{Type: TypeNotFound, Provider: ProviderGeneric}, true
	case reMCPInvalid.MatchString(full):
		return Failure{Type: TypeInvalidRequest, Provider: ProviderGeneric}, true
	}
	return Failure{}, false
}

// pyLiteralJSON converts a Python dict literal at the start of s (as printed by repr: single- or
// double-quoted strings, None, True, False) to JSON. It returns false unless the result is a JSON object.
func pyLiteralJSON(s string) ([]byte, bool) {
	if len(s) == 0 || s[0] != '{' {
		return nil, false
	}
	var out strings.Builder
	depth := 0
	for i := 0; i < len(s); {
		c := s[i]
		switch {
		case c == '\'' || c == '"':
			j := i + 1
			var lit strings.Builder
			for ; j < len(s) && s[j] != c; j++ {
				if s[j] == '\\' && j+1 < len(s) {
					j++
					switch s[j] {
					case 'n':
						lit.WriteByte('\n')
					case 't':
						lit.WriteByte('\t')
					default:
						lit.WriteByte(s[j])
					}
					continue
				}
				lit.WriteByte(s[j])
			}
			if j >= len(s) {
				return nil, false
			}
			b, _ := json.Marshal(lit.String())
			out.Write(b)
			i = j + 1
			continue
		case c == '{' || c == '[':
			depth++
		case c == '}' || c == ']':
			depth--
		case strings.HasPrefix(s[i:], "None"):
			out.WriteString("null")
			i += 4
			continue
		case strings.HasPrefix(s[i:], "True"):
			out.WriteString("true")
			i += 4
			continue
		case strings.HasPrefix(s[i:], "False"):
			out.WriteString("false")
			i += 5
			continue
		}
		out.WriteByte(c)
		i++
		if depth == 0 {
			b := []byte(out.String())
			var m map[string]any
			if json.Unmarshal(b, &m) != nil {
				return nil, false
			}
			return b, true
		}
		if out.Len() > maxBody {
			return nil, false
		}
	}
	return nil, false
}
