package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"strconv"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
)

type echoArgs struct {
	Text string `json:"text" jsonschema:"text to echo back"`
}

type addArgs struct {
	A float64 `json:"a" jsonschema:"first addend"`
	B float64 `json:"b" jsonschema:"second addend"`
}

type slowArgs struct {
	MS int `json:"ms" jsonschema:"how long to run, in milliseconds"`
}

func text(s string) *mcp.CallToolResult {
	return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: s}}}
}

// addBasicTools adds the plain tools. envToken, if set, names the env var
// whoami reports the token of (a stdio server's credential).
func addBasicTools(server *mcp.Server, envToken string) {
	mcp.AddTool(server, &mcp.Tool{Name: "echo", Description: "Echoes its text argument."},
		func(_ context.Context, _ *mcp.CallToolRequest, a echoArgs) (*mcp.CallToolResult, any, error) {
			return text(a.Text), nil, nil
		})

	mcp.AddTool(server, &mcp.Tool{Name: "add", Description: "Adds two numbers."},
		func(_ context.Context, _ *mcp.CallToolRequest, a addArgs) (*mcp.CallToolResult, any, error) {
			return text(strconv.FormatFloat(a.A+a.B, 'f', -1, 64)), nil, nil
		})

	mcp.AddTool(server, &mcp.Tool{
		Name:        "slow",
		Description: "Runs for ms milliseconds, reporting progress every 20ms; fails if cancelled.",
	}, slow)

	server.AddTool(&mcp.Tool{
		Name:        "provider_error",
		Description: "Fails the way a provider credential failure surfaces in real MCP servers.",
		InputSchema: json.RawMessage(providerErrorSchema),
	}, providerError)

	server.AddTool(&mcp.Tool{
		Name:        "whoami",
		Description: "Reports whether an Authorization header arrived (as a sha256 prefix), the bearer token's sha256 prefix and the X-* headers.",
		InputSchema: json.RawMessage(`{"type":"object"}`),
	}, func(ctx context.Context, req *mcp.CallToolRequest) (*mcp.CallToolResult, error) {
		return whoami(ctx, req, envToken)
	})

	server.AddTool(&mcp.Tool{
		Name:        "pid",
		Description: "Reports the upstream's process id, so a test can tell whether its child was restarted.",
		InputSchema: json.RawMessage(`{"type":"object"}`),
	}, func(context.Context, *mcp.CallToolRequest) (*mcp.CallToolResult, error) {
		return text(strconv.Itoa(os.Getpid())), nil
	})

	server.AddTool(&mcp.Tool{
		Name:        "crash",
		Description: "Exits the upstream process immediately with status 3.",
		InputSchema: json.RawMessage(`{"type":"object"}`),
	}, func(context.Context, *mcp.CallToolRequest) (*mcp.CallToolResult, error) {
		fmt.Fprintln(os.Stderr, "testupstream: crash tool called, exiting with status 3")
		os.Exit(3)
		return nil, nil
	})
}

func slow(ctx context.Context, req *mcp.CallToolRequest, a slowArgs) (*mcp.CallToolResult, any, error) {
	d := time.Duration(a.MS) * time.Millisecond
	token := req.Params.GetProgressToken()
	done := time.NewTimer(d)
	defer done.Stop()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	start := time.Now()
	for {
		select {
		case <-ctx.Done():
			return nil, nil, ctx.Err()
		case <-done.C:
			return text(fmt.Sprintf("slept %dms", a.MS)), nil, nil
		case <-tick.C:
			if token == nil {
				continue
			}
			elapsed := time.Since(start)
			_ = req.Session.NotifyProgress(ctx, &mcp.ProgressNotificationParams{
				ProgressToken: token,
				Progress:      float64(elapsed.Milliseconds()),
				Total:         float64(a.MS),
				Message:       "sleeping",
			})
		}
	}
}

// whoami lets header-injection tests see what reached the upstream without
// ever echoing a credential: Authorization is reported as a sha256 prefix of
// the whole header, and token_sha256 is tokenHash of the bearer token (or, on
// stdio with --env-token, of that env var's token), the hash
// e2e/oidc/provider.mjs and /debug/tokens report: "the next call uses the
// new token" is a change of token_sha256.
func whoami(_ context.Context, req *mcp.CallToolRequest, envToken string) (*mcp.CallToolResult, error) {
	out := map[string]any{"authorization": false}
	if envToken != "" {
		if v := os.Getenv(envToken); v != "" {
			out["token_sha256"] = tokenHash(v)
		}
	}
	if req.Extra != nil && req.Extra.Header != nil {
		h := req.Extra.Header
		if v := h.Get("Authorization"); v != "" {
			sum := sha256.Sum256([]byte(v))
			out["authorization"] = true
			out["authorization_sha256"] = hex.EncodeToString(sum[:])[:16]
		}
		if tok := bearerToken(h); tok != "" {
			out["token_sha256"] = tokenHash(tok)
		}
		xs := map[string]string{}
		for _, k := range sortedKeys(h) {
			xs[k] = h.Get(k)
		}
		out["headers"] = xs
	}
	b, err := json.Marshal(out)
	if err != nil {
		return nil, err
	}
	return text(string(b)), nil
}

// addGeneratedTools adds n echo-like tools for pagination and catalog-size tests.
func addGeneratedTools(server *mcp.Server, n int) {
	schema := json.RawMessage(`{"type":"object","properties":{"text":{"type":"string"}}}`)
	for i := range n {
		name := fmt.Sprintf("gen_%04d", i)
		server.AddTool(&mcp.Tool{
			Name:        name,
			Description: fmt.Sprintf("Generated tool %d: echoes text.", i),
			InputSchema: schema,
		}, func(_ context.Context, req *mcp.CallToolRequest) (*mcp.CallToolResult, error) {
			var a echoArgs
			_ = json.Unmarshal(req.Params.Arguments, &a)
			return text(name + ": " + a.Text), nil
		})
	}
}
