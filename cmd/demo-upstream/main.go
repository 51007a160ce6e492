// Command demo-upstream is a small, friendly MCP server used by
// configs/demo.yaml: the gateway's first-run demo federates it, so it needs
// nothing outside this repository.
//
// It offers the tools echo, add, now and roll_dice, a prompt greet {name}
// (with completion of the name), a resource demo://readme and a resource
// template demo://notes/{id}. Over HTTP it also serves, at /billing/mcp, a
// stand-in for a payments API's MCP server: its tool charge answers the way
// Stripe does for the API key the request carries (Authorization: Bearer):
// demoLiveKey is accepted, any other key is rejected as expired. The demo
// config shows a credential failing and a route serving the call elsewhere.
//
//	demo-upstream                     serve MCP on stdin/stdout
//	demo-upstream --http 127.0.0.1:8081       stdio, and the same server at http://127.0.0.1:8081/mcp
//	demo-upstream --http-only 127.0.0.1:8081  only streamable HTTP
//
// Logs go to stderr: on stdio, stdout is the protocol.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	"github.com/modelcontextprotocol/go-sdk/mcp"
)

func main() {
	httpAddr := flag.String("http", "", "also serve streamable HTTP at http://ADDR/mcp (stdio keeps working)")
	httpOnly := flag.String("http-only", "", "serve only streamable HTTP at http://ADDR/mcp")
	flag.Parse()

	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	if err := run(*httpAddr, *httpOnly, logger); err != nil {
		logger.Error("demo-upstream failed", "err", err)
		os.Exit(1)
	}
}

func run(httpAddr, httpOnly string, logger *slog.Logger) error {
	if httpAddr != "" && httpOnly != "" {
		return errors.New("--http and --http-only are exclusive")
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	// The SDK logs every session's lifecycle at Info: keep it to warnings.
	server := newServer(slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})))
	addr := httpAddr
	if httpOnly != "" {
		addr = httpOnly
	}
	errc := make(chan error, 2)
	var srv *http.Server
	if addr != "" {
		ln, err := net.Listen("tcp", addr)
		wait := err != nil && httpOnly == "" && errors.Is(err, syscall.EADDRINUSE)
		if err != nil && !wait {
			return err
		}
		mux := http.NewServeMux()
		mux.Handle("/mcp", mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return server }, nil))
		billing := newBillingServer(slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})))
		mux.Handle("/billing/mcp", mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return billing }, nil))
		srv = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
		serve := func(ln net.Listener) {
			logger.Info("serving streamable HTTP", "url", fmt.Sprintf("http://%s/mcp", ln.Addr()))
			errc <- srv.Serve(ln)
		}
		if wait {
			// Beside stdio, the address is most likely still held by the
			// instance this one replaces (a gateway's config reload starts
			// the new child before it stops the old): stdio serves at once,
			// HTTP once the address is free.
			logger.Warn("address in use; serving stdio now, and HTTP once the address is free", "addr", addr)
			go func() {
				ln, err := listenWhenFree(ctx, addr, time.Minute)
				if err != nil {
					errc <- err
					return
				}
				serve(ln)
			}()
		} else {
			go serve(ln)
		}
	}
	if httpOnly == "" {
		go func() {
			err := server.Run(ctx, &mcp.StdioTransport{})
			if err == nil {
				err = errStdinClosed
			}
			errc <- err
		}()
	}

	var err error
	select {
	case err = <-errc:
	case <-ctx.Done():
	}
	if srv != nil {
		shutdownCtx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		if srv.Shutdown(shutdownCtx) != nil {
			srv.Close()
		}
	}
	if errors.Is(err, errStdinClosed) || errors.Is(err, context.Canceled) || errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

// listenWhenFree retries listening on addr while it is in use, for up to
// wait, and gives up at once if ctx ends.
func listenWhenFree(ctx context.Context, addr string, wait time.Duration) (net.Listener, error) {
	deadline := time.Now().Add(wait)
	for delay := 50 * time.Millisecond; ; delay = min(2*delay, time.Second) {
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, ctx.Err()
		case <-t.C:
		}
		ln, err := net.Listen("tcp", addr)
		if err == nil || !errors.Is(err, syscall.EADDRINUSE) || time.Now().After(deadline) {
			return ln, err
		}
	}
}

// errStdinClosed ends the process when the stdio client goes away, which is
// how a stdio MCP server is told to stop.
var errStdinClosed = errors.New("stdio session ended")

func newServer(logger *slog.Logger) *mcp.Server {
	server := mcp.NewServer(&mcp.Implementation{Name: "demo-upstream", Title: "credgate demo upstream", Version: "1.0.0"}, &mcp.ServerOptions{
		Instructions:      "A demo server: echo text, add numbers, tell the time, roll dice, greet people, read notes.",
		Logger:            logger,
		CompletionHandler: complete,
	})

	type echoArgs struct {
		Text string `json:"text" jsonschema:"the text to echo back"`
	}
	mcp.AddTool(server, &mcp.Tool{Name: "echo", Description: "Echoes the given text back."},
		func(_ context.Context, _ *mcp.CallToolRequest, a echoArgs) (*mcp.CallToolResult, any, error) {
			return textResult(a.Text), nil, nil
		})

	type addArgs struct {
		A float64 `json:"a" jsonschema:"the first number"`
		B float64 `json:"b" jsonschema:"the second number"`
	}
	mcp.AddTool(server, &mcp.Tool{Name: "add", Description: "Adds two numbers."},
		func(_ context.Context, _ *mcp.CallToolRequest, a addArgs) (*mcp.CallToolResult, any, error) {
			return textResult(strconv.FormatFloat(a.A+a.B, 'f', -1, 64)), nil, nil
		})

	type nowArgs struct {
		Timezone string `json:"timezone,omitempty" jsonschema:"IANA time zone such as Europe/Paris; UTC if empty"`
	}
	mcp.AddTool(server, &mcp.Tool{Name: "now", Description: "Tells the current time (RFC 3339)."},
		func(_ context.Context, _ *mcp.CallToolRequest, a nowArgs) (*mcp.CallToolResult, any, error) {
			loc := time.UTC
			if a.Timezone != "" {
				l, err := time.LoadLocation(a.Timezone)
				if err != nil {
					return nil, nil, fmt.Errorf("unknown time zone %q", a.Timezone)
				}
				loc = l
			}
			return textResult(time.Now().In(loc).Format(time.RFC3339)), nil, nil
		})

	type diceArgs struct {
		Sides int `json:"sides,omitempty" jsonschema:"sides per die (default 6)"`
		Count int `json:"count,omitempty" jsonschema:"number of dice (default 1, at most 100)"`
	}
	mcp.AddTool(server, &mcp.Tool{Name: "roll_dice", Description: "Rolls dice and reports each roll and the total."},
		func(_ context.Context, _ *mcp.CallToolRequest, a diceArgs) (*mcp.CallToolResult, any, error) {
			if a.Sides == 0 {
				a.Sides = 6
			}
			if a.Count == 0 {
				a.Count = 1
			}
			if a.Sides < 2 || a.Count < 1 || a.Count > 100 {
				return nil, nil, errors.New("sides must be >= 2 and count between 1 and 100")
			}
			rolls := make([]string, a.Count)
			total := 0
			for i := range rolls {
				r := rand.IntN(a.Sides) + 1
				total += r
				rolls[i] = strconv.Itoa(r)
			}
			return textResult(fmt.Sprintf("rolled %s (total %d)", strings.Join(rolls, ", "), total)), nil, nil
		})

	server.AddPrompt(&mcp.Prompt{
		Name:        "greet",
		Description: "Writes a friendly greeting for someone.",
		Arguments:   []*mcp.PromptArgument{{Name: "name", Description: "who to greet", Required: true}},
	}, func(_ context.Context, req *mcp.GetPromptRequest) (*mcp.GetPromptResult, error) {
		name := req.Params.Arguments["name"]
		return &mcp.GetPromptResult{
			Description: "A greeting for " + name,
			Messages: []*mcp.PromptMessage{{
				Role:    "user",
				Content: &mcp.TextContent{Text: fmt.Sprintf("Write a short, warm greeting for %s.", name)},
			}},
		}, nil
	})

	server.AddResource(&mcp.Resource{
		URI: "demo://readme", Name: "readme", Title: "About this demo", MIMEType: "text/markdown",
		Description: "What the demo upstream offers.",
	}, func(_ context.Context, req *mcp.ReadResourceRequest) (*mcp.ReadResourceResult, error) {
		return &mcp.ReadResourceResult{Contents: []*mcp.ResourceContents{{URI: req.Params.URI, MIMEType: "text/markdown", Text: readme}}}, nil
	})

	server.AddResourceTemplate(&mcp.ResourceTemplate{
		URITemplate: "demo://notes/{id}", Name: "note", MIMEType: "text/plain",
		Description: "Demo notes; ids 1 to 3 exist.",
	}, func(_ context.Context, req *mcp.ReadResourceRequest) (*mcp.ReadResourceResult, error) {
		id := strings.TrimPrefix(req.Params.URI, "demo://notes/")
		note, ok := notes[id]
		if !ok {
			return nil, &jsonrpc.Error{Code: jsonrpc.CodeInvalidParams, Message: fmt.Sprintf("note %q not found", id)}
		}
		return &mcp.ReadResourceResult{Contents: []*mcp.ResourceContents{{URI: req.Params.URI, MIMEType: "text/plain", Text: note}}}, nil
	})
	return server
}

// demoLiveKey is the one API key the billing server accepts. It is a demo
// value, not a secret: configs/demo.yaml holds it.
const demoLiveKey = "sk_test_demo_live_4242424242"

// newBillingServer is the stand-in for a payments API's MCP server.
func newBillingServer(logger *slog.Logger) *mcp.Server {
	server := mcp.NewServer(&mcp.Implementation{Name: "demo-billing", Version: "1.0.0"}, &mcp.ServerOptions{Logger: logger})
	type chargeArgs struct {
		AmountCents int    `json:"amount_cents" jsonschema:"the amount to charge, in cents"`
		Customer    string `json:"customer,omitempty" jsonschema:"the customer id (default cus_demo)"`
	}
	mcp.AddTool(server, &mcp.Tool{Name: "charge", Description: "Charges a customer (a demo: nothing is charged)."},
		func(_ context.Context, req *mcp.CallToolRequest, a chargeArgs) (*mcp.CallToolResult, any, error) {
			key := ""
			if req.Extra != nil {
				key, _ = strings.CutPrefix(req.Extra.Header.Get("Authorization"), "Bearer ")
			}
			if key != demoLiveKey {
				// What Stripe answers for an expired key, as a server
				// wrapping its API reports it.
				last4 := key
				if len(last4) > 4 {
					last4 = last4[len(last4)-4:]
				}
				return &mcp.CallToolResult{IsError: true, Content: []mcp.Content{&mcp.TextContent{Text: `Stripe API error: 401 Unauthorized {"error":{"code":"api_key_expired","doc_url":"https://stripe.com/docs/error-codes/api-key-expired","message":"Expired API Key provided: sk_test_****` + last4 + `","type":"invalid_request_error"}}`}}}, nil, nil
			}
			if a.Customer == "" {
				a.Customer = "cus_demo"
			}
			return textResult(fmt.Sprintf("charged %d cents to %s (demo: nothing was charged)", a.AmountCents, a.Customer)), nil, nil
		})
	return server
}

const readme = `# demo-upstream

A tiny MCP server behind credgate.

- tools: echo, add, now, roll_dice
- prompt: greet {name}
- resources: demo://readme, demo://notes/{id} (1, 2, 3)
`

var notes = map[string]string{
	"1": "Buy milk.",
	"2": "Federate all the MCP servers.",
	"3": "Rotate the credentials.",
}

var names = []string{"Ada", "Alan", "Barbara", "Grace", "Ken", "Linus", "Margaret", "Radia"}

// complete suggests names for greet's argument and ids for demo://notes/{id}.
func complete(_ context.Context, req *mcp.CompleteRequest) (*mcp.CompleteResult, error) {
	var candidates []string
	switch {
	case req.Params.Ref != nil && req.Params.Ref.Type == "ref/prompt" && req.Params.Argument.Name == "name":
		candidates = names
	case req.Params.Ref != nil && req.Params.Ref.Type == "ref/resource" && req.Params.Argument.Name == "id":
		candidates = []string{"1", "2", "3"}
	}
	values := []string{}
	for _, c := range candidates {
		if strings.HasPrefix(strings.ToLower(c), strings.ToLower(req.Params.Argument.Value)) {
			values = append(values, c)
		}
	}
	return &mcp.CompleteResult{Completion: mcp.CompletionResultDetails{Values: values, Total: len(values)}}, nil
}

func textResult(s string) *mcp.CallToolResult {
	return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: s}}}
}
