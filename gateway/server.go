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
// Each connected upstream is probed every health_interval, and a call whose
// connection is gone marks its upstream down at once (health.go). A stdio
// child runs under a small supervisor that takes its whole process group
// down with it, however the gateway ends (supervise.go). Close drains: new
// calls are refused, calls in flight get until shutdown_timeout and are then
// answered with a typed failure (drain, below).
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
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
	"github.com/rs/zerolog"
	"golang.org/x/time/rate"

	"github.com/credgate/credgate/authmap"
	"github.com/credgate/credgate/breaker"
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
	// fieldCredential names a credential (never its value).
	fieldCredential = "credential"
)

// Options tune a Server. The zero value is right for production.
type Options struct {
	// Version is reported as the gateway's implementation version.
	// If empty, defaults to "dev".
	Version string
	// Listening, if set, is called by Serve once it listens on every
	// address (l's, and admin.listen's), before it serves.
	Listening func(addr net.Addr)
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
	// Sources builds the credentials' sources (issue 7). If nil, env sources
	// read the process environment, and vault, aws_secrets_manager and
	// oauth2 sources use authmap's subpackages; openers given here replace
	// those of the same kind.
	Sources *authmap.SourceOptions
	// ConfigFile is the file the config came from: /health shows it, and
	// [Server.ReloadConfig] re-reads it. If empty, there is nothing to
	// reload (Reload still applies a config given in code).
	ConfigFile string
	// LoadConfig loads the config for [Server.ReloadConfig], the way it was
	// loaded at start-up (the CLI applies its flags). If nil, it is
	// [LoadConfig] of ConfigFile with the process environment.
	LoadConfig func() (*Config, error)
}

// Bounds of the HTTP server on slow and idle clients.
const (
	httpReadTimeout = 30 * time.Second  // a whole request, headers and body
	httpIdleTimeout = 120 * time.Second // a kept-alive connection between requests
)

// Server is the gateway: a downstream MCP server over many upstreams.
type Server struct {
	opts   Options
	log    zerolog.Logger
	sdkLog *slog.Logger

	mcp        *mcp.Server
	catalog    *catalog
	lists      *listCache          // tools/list pages as encoded (listcache.go)
	impl       *mcp.Implementation // the downstream server's, which 2026-07-28 results carry
	classifier *authmap.Classifier
	progress   *progressRouter
	pool       *http.Transport
	syncPool   *syncPool // the fast path's own HTTP/1.1 client (syncpool.go)

	redactor  *authmap.Redactor // every configured secret; live (see redact.go)
	logLevels sync.Map          // *mcp.ServerSession -> mcp.LoggingLevel it asked for
	roots     rootsRelay

	// snap is the config in force and the upstreams built from it; a call
	// reads it once and keeps it to the end (see snapshot.go).
	snap atomic.Pointer[snapshot]

	serving atomic.Bool
	cancel  context.CancelFunc
	runCtx  context.Context // Start's: upstreams added later run on it too
	wg      sync.WaitGroup
	closeMu sync.Mutex
	httpSrv *http.Server

	// Shutdown (issue 6 item 9): see drain.
	draining  atomic.Bool             // refuse new calls
	abortCtx  context.Context         // ends at the shutdown deadline
	abort     context.CancelCauseFunc // ends abortCtx with ErrShuttingDown
	requests  requestTracker          // agent requests being handled
	drainOnce sync.Once               // drain runs once
	closeOnce sync.Once               // Close runs once; later callers wait for it
	stopped   chan struct{}           // closed when Close begins

	// Agent sessions against max_sessions (see limitSessions).
	opening      atomic.Int64 // initializes in flight, not yet answered
	atSessionCap atomic.Bool  // set while new sessions are refused
	// sessionOwners counts agents' sessions for max_sessions_per_agent.
	sessionOwners sessionOwners
	agentCapLog   *rate.Limiter // refusals of max_sessions_per_agent logged, at most one a second

	// Credential lifecycle (issue 7): see credentials.go.
	cred *credState

	// Circuit breakers (issue 8): see breakers.go. Keyed by stable names
	// (upstream, upstream/credential), so they outlive a config.
	breakers *breaker.Set
	// credCauses holds, by credential name, the last auth failure that
	// opens a credential's breaker, with the generation it was sent with (a
	// credCause): the calls an open breaker or a dead credential refuses get
	// that failure (provider, code, recovery), not a bare subtype.
	credCauses sync.Map
	// losses are the sessions whose loss a call has told an upstream's
	// breaker: the other calls the same loss ended are not counted.
	losses lossSet

	// tracing exports OpenTelemetry spans; nil when off (see trace.go).
	tracing *tracing

	// fast and fastChain serve the fast path (fastpath.go).
	fast      *fastCalls
	fastChain mcp.MethodHandler
	// Shared state with peer replicas (issue 11): see shared.go.
	shared *shared

	// healthSig asks the health watcher to compare the health resource
	// (see healthres.go).
	healthSig chan struct{}
	metrics   *metrics // Prometheus metrics (issue 10): see metrics.go
	// Ops surface (issue 10): the event bus (events.go) and the alert
	// notifier (notify.go).
	events *eventBus
	notify *notifier
	// Config hot reload (issue 8): see reload.go.
	reload reloadState
	// Routing (issue 8): see routes.go.
	routing routeState
	links   linkIndex // URIs upstreams' results linked (links.go)

	// Agent authentication and policy (issue 9): see agentauth.go, policy.go.
	agentAuth *agentAuth
	policy    atomic.Pointer[policySet] // rebuilt by a reload that changes policies
	opsAddr   atomic.Value              // string: admin.listen's bound address, once serving

	// oauth is the OAuth resource server of auth.oauth (issue 9), or nil:
	// see oauth.go and oauthwire.go.
	oauth *OAuthResource
	// tls serves HTTPS from the tls section's files, reloaded when they
	// change (issue 9), or is nil: see tls.go.
	tls *CertReloader
}

// New builds a gateway for cfg. It starts nothing: call [Server.Run] or
// [Server.Start].
func New(cfg *Config, opts *Options) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	g := &Server{healthSig: make(chan struct{}, 1), progress: newProgressRouter(), pool: newPool(), stopped: make(chan struct{}),
		agentCapLog: rate.NewLimiter(1, 1)}
	g.syncPool = newSyncPool(g.pool)
	g.abortCtx, g.abort = context.WithCancelCause(context.Background())
	routes, rerr := newRoutes(cfg)
	if rerr != nil {
		return nil, rerr
	}
	snap := &snapshot{cfg: cfg, byName: map[string]*upstream{}, version: 1, routes: routes}
	g.snap.Store(snap)
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
	g.redactor = authmap.NewRedactor(configSecrets(cfg))
	g.metrics = newMetrics(g)
	g.initOps()
	g.metrics.setNotificationDrops(g.NotifyDropped)
	g.metrics.setRoutes(g.routeTargetStates)
	// The SDK logs every session's lifecycle at info; only its warnings matter here.
	g.sdkLog = slog.New(redactingHandler{Handler: zerolog.NewSlogHandler(g.log.Level(max(zerolog.WarnLevel, g.log.GetLevel()))), r: g.redactor})

	classifier, err := authmap.New(&authmap.Options{Rules: cfg.Classify.Rules})
	if err != nil {
		return nil, err
	}
	g.classifier = classifier
	if err := g.initShared(); err != nil {
		return nil, err
	}
	if err := g.initCredentials(); err != nil {
		return nil, err
	}
	g.initBreakers()
	if err := g.initOAuth(); err != nil {
		return nil, err
	}
	if err := g.initTLS(); err != nil {
		return nil, err
	}
	if err := g.initAgentAuth(); err != nil {
		return nil, err
	}
	if g.tracing, err = newTracing(cfg.Telemetry, g.opts.Version); err != nil {
		return nil, err
	}
	g.initRouting()

	g.impl = &mcp.Implementation{Name: "credgate", Title: "credgate MCP gateway", Version: g.opts.Version}
	g.mcp = mcp.NewServer(g.impl, &mcp.ServerOptions{
		Logger: g.sdkLog,
		// Declared up front: tools and prompts arrive after agents connect.
		// Stateless, a 2026-07-28 agent's subscriptions/listen stream
		// carries changes and updates; a legacy agent's subscribe is
		// refused (subscribe), as nothing could carry its updates.
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
		// An agent's roots go to its own upstream sessions (session: per_agent).
		RootsListChangedHandler: g.rootsListChanged,
		SetCacheable:            g.cacheScope,
	})
	g.mcp.AddReceivingMiddleware(g.trackLogLevel, g.unlisted, g.withExecution, g.inputFailures, g.endWithSession)
	g.mcp.AddReceivingMiddleware(g.countRequests)
	// The agent's identity and policy come before the call path (issue 9).
	g.mcp.AddReceivingMiddleware(g.agentPolicy, g.federateInstructions)
	// Outermost, so a request's span covers all the gateway does for it.
	g.mcp.AddReceivingMiddleware(g.traceRequests)
	// Outermost of all: it changes only how a result is encoded, after
	// every middleware has read (and the agent's policy filtered) it.
	g.mcp.AddReceivingMiddleware(g.legacyResults)
	// Requests to agents: their capabilities checked, on a fast call's
	// answer stream during one.
	g.mcp.AddSendingMiddleware(g.toAgent)
	// The fast path runs the same middlewares, in the same order, but the
	// tracing one (it is off while tracing is on) and with the SDK's own
	// innermost one (input rounds) in credgate's terms (fastpath.go).
	g.fast = newFastCalls()
	g.lists = newListCache()
	g.fastChain = g.agentPolicy(g.countFastRequests(g.trackLogLevel(g.unlisted(g.withExecution(g.inputFailures(g.fastInputRounds(g.fastTool)))))))
	g.catalog = newCatalog(g)
	for _, w := range cfg.Warnings() {
		g.log.Warn().Msg(w)
	}
	for _, name := range cfg.Order() {
		u := newUpstream(g, name, cfg.Upstreams[name], cfg.Credentials)
		snap.upstreams = append(snap.upstreams, u)
		snap.byName[name] = u
	}
	snap.loadedAt = g.now()
	return g, nil
}

// MCPServer returns the downstream MCP server, e.g. to serve it over stdio.
func (g *Server) MCPServer() *mcp.Server { return g.mcp }

// Start connects every upstream in parallel, in the background. It returns at
// once: a failing upstream never blocks or fails the others.
func (g *Server) Start(ctx context.Context) {
	g.reload.mu.Lock() // a reload starts upstreams on runCtx
	defer g.reload.mu.Unlock()
	ctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	g.cancel = cancel
	g.runCtx = ctx
	g.wg.Go(func() { g.runCredentials(ctx) })
	g.wg.Go(func() { g.loadOAuth(ctx) })
	g.wg.Go(func() { g.watchTLS(ctx) })
	g.wg.Go(func() { g.watchHealth(ctx) })
	g.wg.Go(func() { g.notify.run(ctx) })
	g.wg.Go(func() { g.watchRoutes(ctx) })
	g.wg.Go(func() { g.shared.run(ctx) })
	for _, u := range g.ups() {
		g.startUpstream(u)
	}
}

// WaitTried blocks until every upstream has made its first connection
// attempt, successful or not, or ctx is done.
func (g *Server) WaitTried(ctx context.Context) error {
	for _, u := range g.ups() {
		select {
		case <-u.tried:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

// Serve serves HTTP on l until ctx is done or Close is called. When ctx is
// done it shuts down gracefully (see [Server.Close]) and returns once the
// HTTP side is done; Close then stops the upstreams.
func (g *Server) Serve(ctx context.Context, l net.Listener) error {
	// Agents must authenticate where others can reach (issue 9).
	if err := g.checkExposure(l); err != nil {
		return &NotStartedError{err}
	}
	main, ops := g.handlers()
	stopOps, err := g.serveOps(ops)
	if err != nil {
		return &NotStartedError{err}
	}
	defer stopOps()
	if g.opts.Listening != nil {
		g.opts.Listening(l.Addr())
	}
	g.closeMu.Lock()
	g.httpSrv = &http.Server{
		Handler:           main,
		ReadHeaderTimeout: 10 * time.Second,
		// A request's body must arrive within ReadTimeout (counted from the
		// start of the request), so a client trickling bytes cannot hold a
		// connection. There is no WriteTimeout: /mcp streams long calls'
		// results over SSE, and the server clears the read deadline once a
		// body has been read.
		ReadTimeout: httpReadTimeout,
		IdleTimeout: httpIdleTimeout,
		ErrorLog:    g.httpErrorLog(),
	}
	srv := g.httpSrv
	g.closeMu.Unlock()
	// TLS outermost: net/http sees the *tls.Conn (the request's TLS state).
	l = g.tlsListener(newLimitListener(l, g.config().maxConnections()))
	go func() {
		// Readiness waits for the first attempt of every upstream, so that an
		// agent connecting right after /readyz sees every reachable tool.
		if g.WaitTried(ctx) == nil && !g.draining.Load() {
			g.serving.Store(true)
		}
	}()
	shutDown := make(chan struct{})
	go func() {
		defer close(shutDown)
		defer g.recoverLog("shutdown", "")
		select {
		case <-ctx.Done():
		case <-g.stopped:
		}
		g.drain()
		g.shutdownHTTP(srv)
	}()
	err = srv.Serve(l)
	if errors.Is(err, http.ErrServerClosed) {
		<-shutDown // the answers to the last calls are written
		return nil
	}
	return err
}

// Close shuts the gateway down gracefully and stops every upstream (ending
// child processes). New calls are refused at once (new HTTP requests get
// 503, new requests on existing sessions a typed upstream_unavailable
// failure); calls in flight get until shutdown_timeout, and those still
// running then are ended with an upstream_unavailable failure, so every
// agent gets an answer; then the downstream sessions and the HTTP server
// close, and last the upstreams. It is safe after a partial start and more
// than once; a second caller waits for the first to finish.
func (g *Server) Close() error {
	g.closeOnce.Do(func() {
		close(g.stopped)
		g.drain()
		g.closeMu.Lock()
		srv := g.httpSrv
		g.closeMu.Unlock()
		if srv != nil {
			g.shutdownHTTP(srv)
		}
		g.reload.mu.Lock() // no reload starts an upstream after this
		if g.cancel != nil {
			g.cancel()
		}
		g.reload.mu.Unlock()
		done := make(chan struct{})
		go func() {
			g.wg.Wait()
			close(done)
		}()
		t := time.NewTimer(upstreamStopGrace)
		defer t.Stop()
		select {
		case <-done:
		case <-t.C:
			// Children still running die with the process (see supervise).
			g.log.Error().Dur("after_ms", upstreamStopGrace).Msg("upstreams did not stop in time; leaving them")
		}
		g.pool.CloseIdleConnections()
		g.syncPool.closeIdle()
		flush, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		g.tracing.shutdown(flush) // exports the spans still queued
		cancel()
		g.abort(ErrShuttingDown) // releases the abort context's resources
	})
	return nil
}

// NotStartedError is a failure before the gateway served anything: an
// address it cannot listen on, an exposure it refuses.
type NotStartedError struct{ Err error }

func (e *NotStartedError) Error() string { return e.Err.Error() }
func (e *NotStartedError) Unwrap() error { return e.Err }

// ErrShuttingDown is the cause of a request refused or ended because the
// gateway is shutting down; agents see it as an upstream_unavailable failure
// (retryable) whose detail says so.
var ErrShuttingDown = errors.New("gateway is shutting down")

// Bounds of the steps of a shutdown after the deadline for calls in flight.
const (
	// answerGrace is how long calls ended at the deadline get to write their
	// answers, and sessions to close.
	answerGrace = 2 * time.Second
	// upstreamStopGrace bounds stopping the upstreams: a stdio child gets 2s
	// after its stdin closes, then SIGTERM and a second to its group.
	upstreamStopGrace = 5 * time.Second
)

// drain refuses new calls, lets those in flight finish until the shutdown
// deadline, ends the rest with ErrShuttingDown, and closes every downstream
// session (which releases their standing HTTP streams). It runs once;
// concurrent callers wait for it.
//
// Requests are counted as the MCP server handles them (countRequests), for
// every transport: a stdio agent is drained like HTTP ones. Closing a
// session waits for the answers of its requests to be written, so nothing
// an agent is owed is cut off.
func (g *Server) drain() {
	g.drainOnce.Do(func() {
		g.draining.Store(true)
		g.serving.Store(false)
		timeout := g.config().shutdownTimeout()
		if n := g.requests.count(); n > 0 {
			g.log.Info().Int("requests", n).Dur("timeout_ms", timeout).Msg("shutting down: waiting for calls in flight")
		}
		deadline := time.NewTimer(timeout)
		defer deadline.Stop()
		if !g.requests.waitIdle(deadline.C) {
			g.log.Warn().Int("requests", g.requests.count()).Msg("shutdown timeout: ending the calls still in flight")
			g.abort(ErrShuttingDown)
			grace := time.NewTimer(answerGrace)
			defer grace.Stop()
			g.requests.waitIdle(grace.C)
		}
		var wg sync.WaitGroup
		for ss := range g.mcp.Sessions() {
			wg.Go(func() {
				defer g.recoverLog("closing an agent session", "")
				_ = ss.Close()
			})
		}
		closed := make(chan struct{})
		go func() {
			wg.Wait()
			close(closed)
		}()
		grace := time.NewTimer(answerGrace)
		defer grace.Stop()
		select {
		case <-closed:
		case <-grace.C:
		}
	})
}

// shutdownHTTP stops srv: after drain, only idle connections remain, so a
// short wait suffices before connections are closed outright.
func (g *Server) shutdownHTTP(srv *http.Server) {
	ctx, cancel := context.WithTimeout(context.Background(), answerGrace)
	defer cancel()
	if srv.Shutdown(ctx) != nil {
		_ = srv.Close()
	}
}

// countRequests is a receiving middleware that counts the agent requests
// being handled, so that a shutdown can wait for them. A request counts until
// its context ends, not until its handler returns: the SDK ends the context
// once the answer is written, and a session closed in between would drop the
// answer (a closing connection refuses writes). A subscriptions/listen stream
// lasts as long as its session and is not waited for.
func (g *Server) countRequests(next mcp.MethodHandler) mcp.MethodHandler {
	return func(ctx context.Context, method string, req mcp.Request) (mcp.Result, error) {
		if strings.HasPrefix(method, "notifications/") || method == "subscriptions/listen" {
			return next(ctx, method, req)
		}
		g.requests.begin()
		context.AfterFunc(ctx, g.requests.end)
		return next(ctx, method, req)
	}
}

// countFastRequests is countRequests for the fast path, whose requests
// end when its handler returns: counted down then, without the goroutine
// an AfterFunc on the request's context starts when it ends.
func (g *Server) countFastRequests(next mcp.MethodHandler) mcp.MethodHandler {
	return func(ctx context.Context, method string, req mcp.Request) (mcp.Result, error) {
		g.requests.begin()
		defer g.requests.end()
		return next(ctx, method, req)
	}
}

// requestTracker counts requests in flight and tells a waiter when none are
// left.
type requestTracker struct {
	mu   sync.Mutex
	n    int
	idle chan struct{} // closed when n drops to zero; nil when nobody waits
}

func (r *requestTracker) begin() {
	r.mu.Lock()
	r.n++
	r.mu.Unlock()
}

func (r *requestTracker) end() {
	r.mu.Lock()
	r.n--
	if r.n == 0 && r.idle != nil {
		close(r.idle)
		r.idle = nil
	}
	r.mu.Unlock()
}

func (r *requestTracker) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.n
}

// waitIdle waits until no request is in flight; it reports false if stop
// fired first.
func (r *requestTracker) waitIdle(stop <-chan time.Time) bool {
	r.mu.Lock()
	if r.n == 0 {
		r.mu.Unlock()
		return true
	}
	if r.idle == nil {
		r.idle = make(chan struct{})
	}
	idle := r.idle
	r.mu.Unlock()
	select {
	case <-idle:
		return true
	case <-stop:
		return false
	}
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
		g.log.Error().Str(fieldUpstream, upstream).Str(fieldErr, g.redact(fmt.Sprint(r))).Msgf("panic in %s", what)
	}
}
