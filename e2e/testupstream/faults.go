package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"sort"
	"strings"
	"sync/atomic"
	"time"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// failure is the content of the --fail-file.
type failure struct {
	Status  int               `json:"status"`
	Headers map[string]string `json:"headers"`
	Body    string            `json:"body"`
	// Until, if set, ends the fault at that time even though the file is
	// still there: a provider's rate-limit window, which ends by itself.
	Until time.Time `json:"until"`
}

// debugFaultsPath serves how many requests the fail-file answered, outside
// the fault itself: {"faulted": N}.
const debugFaultsPath = "/debug/faults"

// failFileMiddleware answers every request with the failure described in
// path while that file exists (and its until has not passed). The file is
// read on every request so a test can switch the fault on and off at any
// point of a session (at initialize, mid-session, ...) without timing
// assumptions.
func failFileMiddleware(path string, next http.Handler) http.Handler {
	var faulted atomic.Int64
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == debugFaultsPath {
			w.Header().Set("Content-Type", "application/json")
			_ = json.NewEncoder(w).Encode(map[string]int64{"faulted": faulted.Load()})
			return
		}
		data, err := os.ReadFile(path)
		if err != nil {
			next.ServeHTTP(w, r)
			return
		}
		var f failure
		if err := json.Unmarshal(data, &f); err != nil {
			http.Error(w, fmt.Sprintf("testupstream: bad fail-file %s: %v", path, err), http.StatusInternalServerError)
			return
		}
		if !f.Until.IsZero() && !time.Now().Before(f.Until) {
			next.ServeHTTP(w, r)
			return
		}
		faulted.Add(1)
		if f.Status == 0 {
			f.Status = http.StatusInternalServerError
		}
		for k, v := range f.Headers {
			w.Header().Set(k, v)
		}
		w.WriteHeader(f.Status)
		_, _ = w.Write([]byte(f.Body))
	})
}

type providerErrorArgs struct {
	Mode    string            `json:"mode"`
	Status  int               `json:"status"`
	Headers map[string]string `json:"headers"`
	Body    string            `json:"body"`
	Message string            `json:"message"`
}

const providerErrorSchema = `{
  "type": "object",
  "properties": {
    "mode": {"type": "string", "enum": ["jsonrpc", "iserror", "iserror_github", "iserror_http"],
             "description": "how the failure is reported"},
    "status": {"type": "integer", "description": "provider HTTP status (default 401)"},
    "headers": {"type": "object", "additionalProperties": {"type": "string"},
                "description": "provider response headers (iserror_http: reported in _meta)"},
    "body": {"type": "string", "description": "provider response body"},
    "message": {"type": "string", "description": "error message (jsonrpc, iserror)"}
  },
  "required": ["mode"]
}`

// providerError reports a provider (credential) failure the ways real MCP
// servers do, so the gateway's classifier can be tested against each shape.
// It is a raw handler: a *jsonrpc.Error returned here reaches the client as a
// JSON-RPC error with its code intact.
func providerError(_ context.Context, req *mcp.CallToolRequest) (*mcp.CallToolResult, error) {
	var a providerErrorArgs
	if len(req.Params.Arguments) > 0 {
		if err := json.Unmarshal(req.Params.Arguments, &a); err != nil {
			return nil, &jsonrpc.Error{Code: jsonrpc.CodeInvalidParams, Message: err.Error()}
		}
	}
	if a.Status == 0 {
		a.Status = http.StatusUnauthorized
	}
	if a.Body == "" {
		a.Body = `{"message":"Bad credentials","documentation_url":"https://docs.github.com/rest","status":"401"}`
	}
	if a.Message == "" {
		a.Message = "Authentication Failed: Bad credentials"
	}
	switch a.Mode {
	case "jsonrpc":
		return nil, &jsonrpc.Error{Code: jsonrpc.CodeInternalError, Message: a.Message}
	case "iserror":
		return errorResult(a.Message), nil
	case "iserror_github":
		// The shape of github-mcp-server's errors (go-github's ErrorResponse.Error()).
		return errorResult(fmt.Sprintf("failed to list issues: GET https://api.github.com/repos/o/r/issues: %d %s []", a.Status, a.Body)), nil
	case "iserror_http":
		res := errorResult(fmt.Sprintf("HTTP %d %s\n%s", a.Status, http.StatusText(a.Status), a.Body))
		if len(a.Headers) > 0 {
			res.Meta = mcp.Meta{"headers": a.Headers}
		}
		return res, nil
	default:
		return nil, &jsonrpc.Error{Code: jsonrpc.CodeInvalidParams, Message: fmt.Sprintf("unknown mode %q", a.Mode)}
	}
}

func errorResult(text string) *mcp.CallToolResult {
	return &mcp.CallToolResult{IsError: true, Content: []mcp.Content{&mcp.TextContent{Text: text}}}
}

// sortedKeys is used to make whoami's output deterministic.
func sortedKeys(h http.Header) []string {
	var keys []string
	for k := range h {
		if strings.HasPrefix(strings.ToLower(k), "x-") {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	return keys
}
