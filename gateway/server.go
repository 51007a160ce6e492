// Package gateway is credgate's MCP-facing core: one MCP endpoint in front of
// many upstream MCP servers.
//
//	agent ──/mcp──▶ Server ──catalog──▶ exposed names ("github__list_issues")
//	                  │
//	                  └─ call path: lookup ─▶ upstream session ─▶ classify ─▶ result
//	                                              │
//	              upstream (one per config entry): connect, list, watch, reconnect
//	                 stdio child │ streamable HTTP │ SSE
//
// A [Server] owns the upstreams and the downstream mcp.Server. Each upstream
// runs its own connect loop (exponential backoff with jitter), lists its
// catalog and refreshes it on list_changed; the catalog merges every
// upstream's offer in config order and registers it on the downstream server.
// Calls are forwarded on the upstream's shared session; failures come back as
// typed objects ([authmap.Failure]) built in one place, errors.go.
//
// The leaves (routing, authmap, breaker) never import this package.
package gateway

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
	"github.com/rs/zerolog"

	"github.com/credgate/credgate/authmap"
)

// Log field names, used everywhere.
const (
	fieldUpstream = "upstream"
	fieldTool     = "tool"
	fieldErr      = "err"
	fieldAttempt  = "attempt"
	fieldStream   = "stream"
	fieldSubtype  = "subtype"
	fieldOutcome  = "outcome"
)

// Options tune a Server. The zero value is right for production.
type Options struct {
	// Version is reported as the gateway's implementation version.
	// If empty, defaults to "dev".
	Version string
	// Logger receives the gateway's logs. If nil, logs are discarded.
	Logger *zerolog.Logger
	// ReconnectMin and ReconnectMax bound the reconnect backoff.
	// If zero, they default to 250ms and 30s.
	ReconnectMin, ReconnectMax time.Duration
	// ConnectTimeout bounds one connection attempt (process start or HTTP
	// handshake plus initialize). If zero, defaults to 30s.
	ConnectTimeout time.Duration
	// Now returns the current time. If nil, defaults to time.Now.
	Now func() time.Time
}

// Bounds of the HTTP server on slow and idle clients.
const (
	httpReadTimeout = 30 * time.Second  // a whole request, headers and body
	httpIdleTimeout = 120 * time.Second // a kept-alive connection between requests
)

// Server is the gateway: a downstream MCP server over many upstreams.
type Server struct {
	cfg    *Config
	opts   Options
	log    zerolog.Logger
	sdkLog *slog.Logger

	mcp        *mcp.Server
	catalog    *catalog
	classifier *authmap.Classifier
	progress   *progressRouter
	pool       *http.Transport

	secretList []string
	logLevels  sync.Map // *mcp.ServerSession -> mcp.LoggingLevel it asked for

	upstreams []*upstream // config order
	byName    map[string]*upstream

	serving atomic.Bool
	cancel  context.CancelFunc
	wg      sync.WaitGroup
	closeMu sync.Mutex
	closed  bool
	httpSrv *http.Server

	// Agent sessions against max_sessions (see limitSessions).
	opening      atomic.Int64 // initializes in flight, not yet answered
	atSessionCap atomic.Bool  // set while new sessions are refused
}

// New builds a gateway for cfg. It starts nothing: call [Server.Run] or
// [Server.Start].
func New(cfg *Config, opts *Options) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	g := &Server{cfg: cfg, byName: map[string]*upstream{}, progress: newProgressRouter(), pool: newPool()}
	if opts != nil {
		g.opts = *opts
	}
	if g.opts.Version == "" {
		g.opts.Version = "dev"
	}
	if g.opts.ReconnectMin <= 0 {
		g.opts.ReconnectMin = 250 * time.Millisecond
	}
	if g.opts.ReconnectMax <= 0 {
		g.opts.ReconnectMax = 30 * time.Second
	}
	if g.opts.ConnectTimeout <= 0 {
		g.opts.ConnectTimeout = 30 * time.Second
	}
	if g.opts.Now == nil {
		g.opts.Now = time.Now
	}
	if g.opts.Logger != nil {
		g.log = *g.opts.Logger
	} else {
		g.log = zerolog.Nop()
	}
	// The SDK logs every session's lifecycle at info; only its warnings matter here.
	g.sdkLog = slog.New(zerolog.NewSlogHandler(g.log.Level(max(zerolog.WarnLevel, g.log.GetLevel()))))

	classifier, err := authmap.New(&authmap.Options{Rules: cfg.Classify.Rules})
	if err != nil {
		return nil, err
	}
	g.classifier = classifier

	g.mcp = mcp.NewServer(&mcp.Implementation{Name: "credgate", Title: "credgate MCP gateway", Version: g.opts.Version}, &mcp.ServerOptions{
		Logger: g.sdkLog,
		// Declared up front: tools and prompts arrive after agents connect.
		Capabilities: &mcp.ServerCapabilities{
			Tools:       &mcp.ToolCapabilities{ListChanged: true},
			Prompts:     &mcp.PromptCapabilities{ListChanged: true},
			Resources:   &mcp.ResourceCapabilities{ListChanged: true, Subscribe: true},
			Completions: &mcp.CompletionCapabilities{},
			Logging:     &mcp.LoggingCapabilities{},
		},
		CompletionHandler:  g.complete,
		SubscribeHandler:   g.subscribe,
		UnsubscribeHandler: g.unsubscribe,
	})
	g.mcp.AddReceivingMiddleware(g.trackLogLevel, g.unlisted)
	g.secretList = g.secrets()
	g.catalog = newCatalog(g)
	for _, name := range cfg.Order() {
		u := newUpstream(g, name, cfg.Upstreams[name])
		g.upstreams = append(g.upstreams, u)
		g.byName[name] = u
	}
	return g, nil
}

// MCPServer returns the downstream MCP server, e.g. to serve it over stdio.
func (g *Server) MCPServer() *mcp.Server { return g.mcp }

// Start connects every upstream in parallel, in the background. It returns at
// once: a failing upstream never blocks or fails the others.
func (g *Server) Start(ctx context.Context) {
	ctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	g.cancel = cancel
	for _, u := range g.upstreams {
		g.wg.Add(1)
		go func() {
			defer g.wg.Done()
			u.run(ctx)
		}()
	}
}

// WaitTried blocks until every upstream has made its first connection
// attempt, successful or not, or ctx is done.
func (g *Server) WaitTried(ctx context.Context) error {
	for _, u := range g.upstreams {
		select {
		case <-u.tried:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

// Serve serves HTTP on l until ctx is done or Close is called.
func (g *Server) Serve(ctx context.Context, l net.Listener) error {
	g.closeMu.Lock()
	g.httpSrv = &http.Server{
		Handler:           g.Handler(),
		ReadHeaderTimeout: 10 * time.Second,
		// A request's body must arrive within ReadTimeout (counted from the
		// start of the request), so a client trickling bytes cannot hold a
		// connection. There is no WriteTimeout: /mcp streams long calls'
		// results over SSE, and the server clears the read deadline once a
		// body has been read.
		ReadTimeout: httpReadTimeout,
		IdleTimeout: httpIdleTimeout,
	}
	srv := g.httpSrv
	g.closeMu.Unlock()
	l = newLimitListener(l, g.cfg.maxConnections())
	go func() {
		// Readiness waits for the first attempt of every upstream, so that an
		// agent connecting right after /readyz sees every reachable tool.
		if g.WaitTried(ctx) == nil {
			g.serving.Store(true)
		}
	}()
	go func() {
		<-ctx.Done()
		shutdownCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(shutdownCtx)
	}()
	err := srv.Serve(l)
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

// Close stops every upstream (ending child processes) and the HTTP server.
// It is safe after a partial start and more than once.
func (g *Server) Close() error {
	g.closeMu.Lock()
	if g.closed {
		g.closeMu.Unlock()
		return nil
	}
	g.closed = true
	srv := g.httpSrv
	g.closeMu.Unlock()
	g.serving.Store(false)
	if srv != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_ = srv.Shutdown(ctx)
		cancel()
	}
	if g.cancel != nil {
		g.cancel()
	}
	g.wg.Wait()
	g.pool.CloseIdleConnections()
	return nil
}

func (g *Server) now() time.Time { return g.opts.Now() }

// sleep waits d or until ctx is done; it reports whether d elapsed.
func (g *Server) sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// recoverLog is deferred by every goroutine the gateway owns.
func (g *Server) recoverLog(what, upstream string) {
	if r := recover(); r != nil {
		g.log.Error().Str(fieldUpstream, upstream).Str(fieldErr, fmt.Sprint(r)).Msgf("panic in %s", what)
	}
}

// redact removes secrets from text bound for logs, health or agents.
func (g *Server) redact(s string) string {
	return authmap.Redact(s, g.secretList)
}

// secrets lists every configured value that may be a secret: header values
// and child environment values.
func (g *Server) secrets() []string {
	var out []string
	for _, u := range g.cfg.Upstreams {
		for _, v := range u.Headers {
			out = append(out, secretParts(v)...)
		}
		for _, v := range u.Env {
			out = append(out, secretParts(v)...)
		}
	}
	return out
}
