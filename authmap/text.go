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
		regexp.MustCompile(`(?i)\bstatus(?:[ _-]?code)?\s*[:=]?\s*([1-5]\d\d)\b`),
		regexp.MustCompile(`(?i)\b(?:api|http|request|response|server) error\s*[:=]?\s*\(?([1-5]\d\d)\b`),
		regexp.MustCompile(`(?i)\b([1-5]\d\d)\s*[:\-]?\s*(?:Unauthorized|Forbidden|Not Found|Too Many Requests|Bad credentials|Payment Required|Bad Request|Unprocessable Entity|Internal Server Error|Bad Gateway|Service Unavailable|Gateway Time-?out|Request Timeout|Authorization Required|Proxy Authentication Required|Conflict)\b`),
	}

	// modelcontextprotocol/servers github formatGitHubError prefixes and the statuses they stand for.
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

func (c *Classifier) classifyText(text, hint string, h http.Header, k Knowledge, depth int) (Failure, bool) {
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
	in := input{header: h, hint: hint, fromText: true, ruleText: full}

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
	if in.status >= 200 && in.status < 300 {
		in.status = 0 // "HTTP 200" in tool text says nothing about a failure; look at the body.
	}
	in.body = []byte(msg)
	if b := embeddedBody(msg); b != nil {
		in.body = b
	}
	f, ok := c.classify(in, k, depth+1)
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
