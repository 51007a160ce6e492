// Command testupstream is a real MCP server, built on the Go SDK, that the
// end-to-end tests put behind the gateway. It is an upstream the tests
// control:
//
//	test ──▶ gateway ──▶ testupstream (stdio | streamable HTTP | SSE)
//	                         │
//	                         ├─ plain tools: echo, add, slow, whoami, pid, gen_NNNN
//	                         ├─ fault tools: provider_error, crash
//	                         ├─ conformance fixtures (test_*, test://…, prompts, completion)
//	                         ├─ --fail-file: HTTP-level faults injected by writing a file
//	                         └─ --introspect: bearer tokens checked at an OAuth server (introspect.go)
//
// Faults are driven by the test, never by timers: a test writes the
// --fail-file to make every following HTTP request fail with the status,
// headers and body it names, and removes it to heal the upstream.
//
// On HTTP transports the process prints exactly one line to stdout once it
// is bound, "LISTENING http://127.0.0.1:PORT/mcp" (or /sse), so a test can
// wait for it instead of sleeping. Logs go to stderr; on stdio, stdout is the
// protocol.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
)

type options struct {
	transport      string
	listen         string
	name           string
	stateless      bool
	jsonResponse   bool
	tools          int
	failFile       string
	exitAfterCalls int

	// Token introspection (introspect.go).
	introspect       string
	introspectClient string
	introspectSecret string
	envToken         string
}

func main() {
	var o options
	flag.StringVar(&o.transport, "transport", "stdio", "transport to serve: stdio, http (streamable HTTP at /mcp) or sse (at /sse)")
	flag.StringVar(&o.listen, "listen", "127.0.0.1:0", "address to listen on for http and sse")
	flag.StringVar(&o.name, "name", "testupstream", "server implementation name")
	flag.BoolVar(&o.stateless, "stateless", false, "http: serve streamable HTTP statelessly (enables protocol 2026-07-28)")
	flag.BoolVar(&o.jsonResponse, "json", false, "http: answer POSTs with application/json instead of SSE")
	flag.IntVar(&o.tools, "tools", 0, "number of extra generated tools gen_0000.. (for pagination tests)")
	flag.StringVar(&o.failFile, "fail-file", "", "http/sse: while this file exists, answer every request with the status, headers and body it holds as JSON")
	flag.IntVar(&o.exitAfterCalls, "exit-after-calls", 0, "if > 0, exit(1) on receiving tools/call number N+1 (N calls succeed, then the upstream dies)")
	flag.StringVar(&o.introspect, "introspect", "", "RFC 7662 introspection endpoint: http/sse check every request's bearer token there (401 invalid_token when inactive); stdio checks --env-token's")
	flag.StringVar(&o.introspectClient, "introspect-client", "", "client id for --introspect (client_secret_basic)")
	flag.StringVar(&o.introspectSecret, "introspect-secret", "", "client secret for --introspect")
	flag.StringVar(&o.envToken, "env-token", "", "stdio with --introspect: every tools/call checks this env var's token, answering an isError 401 when inactive")
	flag.Parse()

	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	if err := run(o, logger); err != nil {
		fmt.Fprintf(os.Stderr, "testupstream: %v\n", err)
		os.Exit(1)
	}
}

func run(o options, logger *slog.Logger) error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	if err := validateIntrospection(o); err != nil {
		return err
	}
	var in *introspector
	if o.introspect != "" {
		in = newIntrospector(o.introspect, o.introspectClient, o.introspectSecret)
	}
	server := newServer(o, logger, in)

	switch o.transport {
	case "stdio":
		err := server.Run(ctx, &mcp.StdioTransport{})
		if errors.Is(err, context.Canceled) {
			return nil
		}
		return err
	case "http", "sse":
	default:
		return fmt.Errorf("unknown --transport %q (want stdio, http or sse)", o.transport)
	}

	mux := http.NewServeMux()
	path := "/mcp"
	if o.transport == "http" {
		opts := &mcp.StreamableHTTPOptions{
			Stateless:    o.stateless,
			JSONResponse: o.jsonResponse,
			Logger:       logger,
		}
		if !o.stateless {
			// Resumption (Last-Event-ID) for the SEP-1699 test_reconnection fixture.
			opts.EventStore = mcp.NewMemoryEventStore(nil)
		}
		mux.Handle(path, mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return server }, opts))
	} else {
		path = "/sse"
		mux.Handle(path, mcp.NewSSEHandler(func(*http.Request) *mcp.Server { return server }, nil))
	}
	var handler http.Handler = mux
	if in != nil {
		handler = in.middleware(handler)
	}
	if o.failFile != "" {
		handler = failFileMiddleware(o.failFile, handler)
	}

	ln, err := net.Listen("tcp", o.listen)
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: handler, ReadHeaderTimeout: 10 * time.Second}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	fmt.Fprintf(os.Stdout, "LISTENING http://%s%s\n", ln.Addr(), path)

	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := srv.Shutdown(shutdownCtx); err != nil {
		srv.Close()
	}
	return nil
}

func newServer(o options, logger *slog.Logger, in *introspector) *mcp.Server {
	server := mcp.NewServer(&mcp.Implementation{Name: o.name, Version: "1.0.0"}, &mcp.ServerOptions{
		Logger:             logger,
		CompletionHandler:  complete,
		SubscribeHandler:   func(context.Context, *mcp.SubscribeRequest) error { return nil },
		UnsubscribeHandler: func(context.Context, *mcp.UnsubscribeRequest) error { return nil },
	})
	if o.exitAfterCalls > 0 {
		server.AddReceivingMiddleware(exitAfterCalls(o.exitAfterCalls))
	}
	addBasicTools(server, o.envToken)
	if in != nil {
		addSeenTokensTool(server, in)
		if o.envToken != "" {
			server.AddReceivingMiddleware(in.envTokenCheck(o.envToken))
		}
	}
	addGeneratedTools(server, o.tools)
	addConformanceFixtures(server)
	return server
}

// exitAfterCalls lets n tools/call requests through and kills the process on
// the next one, before it is answered: the caller sees the upstream die
// mid-call, as with a crash.
func exitAfterCalls(n int) mcp.Middleware {
	var calls atomic.Int64
	return func(next mcp.MethodHandler) mcp.MethodHandler {
		return func(ctx context.Context, method string, req mcp.Request) (mcp.Result, error) {
			if method == "tools/call" && calls.Add(1) > int64(n) {
				fmt.Fprintf(os.Stderr, "testupstream: exiting after %d tool calls\n", n)
				os.Exit(1)
			}
			return next(ctx, method, req)
		}
	}
}
