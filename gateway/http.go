package gateway

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"runtime"
	"slices"
	"sync"
	"time"

	"github.com/modelcontextprotocol/go-sdk/auth"
	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/credgate/credgate/authmap"
	"github.com/credgate/credgate/breaker"
)

// Handler returns the gateway's HTTP handler (see front.go for what guards
// each endpoint):
//
//	/mcp      the MCP endpoint (streamable HTTP)
//	/healthz  liveness: 200 while the process serves HTTP
//	/readyz   readiness: 200 once every upstream had its first connection
//	          attempt, while at least one upstream can serve
//	/health   JSON status of the gateway and each upstream
//	/metrics  Prometheus metrics (see metrics.go)
//	/events   server-sent events of every state change (ops.go)
//	/status   the status page, also at / (ops.go)
//
// /health, /metrics, /events, /status and /admin/* are ops endpoints (see
// opsOnly); with admin.listen, they are served there instead.
func (g *Server) Handler() http.Handler {
	main, _ := g.handlers()
	return main
}

// mcpHandler is the SDK's streamable HTTP handler of /mcp with the
// gateway's bounds, behind the fast path for plain tools/calls
// (fastpath.go).
func (g *Server) mcpHandler() http.Handler {
	return g.refuseNewWhileDraining(g.limitSessions(g.fastFront(mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return g.mcp }, &mcp.StreamableHTTPOptions{
		Stateless: g.config().Stateless,
		Logger:    g.sdkLog,
		// The SDK closes a session that has had no request in flight for
		// this long; a call in progress keeps its session open.
		SessionTimeout: g.config().sessionIdleTimeout(),
		// The SDK's own check refuses any name but localhost on a loopback
		// listener; guardHosts checks every endpoint instead, and also
		// knows allowed_hosts (issue 9).
		DisableLocalhostProtection: true,
	}))))
}

// probeRoutes adds /healthz and /readyz, which stay open: they say nothing
// about the upstreams.
func (g *Server) probeRoutes(mux *http.ServeMux) {
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		_, _ = w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		// draining as well: Serve's readiness goroutine may set serving
		// just after drain cleared it.
		switch {
		case g.draining.Load():
			w.WriteHeader(http.StatusServiceUnavailable)
			_, _ = w.Write([]byte("draining\n"))
		case !g.serving.Load():
			w.WriteHeader(http.StatusServiceUnavailable)
			_, _ = w.Write([]byte("starting\n"))
		case !g.canServe():
			// Say nothing of which: /readyz is open to anyone.
			w.WriteHeader(http.StatusServiceUnavailable)
			_, _ = w.Write([]byte("no upstream can serve\n"))
		default:
			_, _ = w.Write([]byte("ready\n"))
		}
	})
}

// refuseNewWhileDraining answers 503 to requests that would start something
// new while the gateway shuts down: a new session, or any stateless request.
// Requests on existing sessions pass, so that an agent's new call gets the
// typed failure it can act on (see forward) and its calls in flight their
// answers.
func (g *Server) refuseNewWhileDraining(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if g.draining.Load() && (g.config().Stateless || r.Header.Get("Mcp-Session-Id") == "") {
			w.Header().Set("Connection", "close")
			http.Error(w, ErrShuttingDown.Error(), http.StatusServiceUnavailable)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// codeSessionLimit is the JSON-RPC error code of an initialize refused
// because the gateway has max_sessions agent sessions open.
const codeSessionLimit = -32011

// limitSessions refuses an initialize that would open an agent session once
// max_sessions are open: HTTP 503 with a JSON-RPC error naming the key, so an
// agent or its operator sees why. Requests on open sessions pass, so those
// keep working, and so do requests that open no lasting session (a
// server/discover probe: the SDK serves it on a session of its own that it
// closes after the request). A stateless gateway keeps no sessions and is
// not limited.
//
// The count is the initialized agent sessions plus the initializes in
// flight, each of which may add one. An initialize stops counting as in
// flight when its answer starts, by which time its session counts as
// initialized; in between it counts twice, so under a burst the cap may
// refuse a little early, but it never lets more than max_sessions through.
func (g *Server) limitSessions(next http.Handler) http.Handler {
	if g.config().Stateless {
		return next
	}
	limit := g.config().maxSessions()
	perAgent := g.config().maxSessionsPerAgent()
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// The SDK opens a session for a POST without a session id.
		if r.Method != http.MethodPost || r.Header.Get("Mcp-Session-Id") != "" || !isInitialize(r) {
			next.ServeHTTP(w, r)
			return
		}
		opening := g.opening.Add(1)
		var once sync.Once
		opened := func() { once.Do(func() { g.opening.Add(-1) }) }
		defer opened()
		if g.sessionCount()+int(opening)-1 >= limit {
			g.refuseSession(w, r, limit)
			return
		}
		who := sessionOwner(agentOf(r.Context()))
		if who != "" && !g.sessionOwners.reserve(g, who, perAgent) {
			g.refuseAgentSession(w, r, perAgent)
			return
		}
		g.atSessionCap.Store(false)
		var settle sync.Once
		settled := func() {
			// At the latest when the answer starts, before the agent can
			// read it and ask again: its session id is in the headers by
			// then (none: no session was opened).
			settle.Do(func() {
				if who != "" {
					g.sessionOwners.settle(who, w.Header().Get("Mcp-Session-Id"))
				}
			})
		}
		defer settled()
		next.ServeHTTP(&answerWatch{ResponseWriter: w, answered: func() {
			settled()
			opened()
		}}, r)
	})
}

// sessionOwner is the key of an agent identity in sessionOwners: an API
// key and a token subject of the same name apart; "" without one.
func sessionOwner(info *auth.TokenInfo) string {
	if info == nil || info.UserID == "" {
		return ""
	}
	if info.Extra[agentKindKey] == agentKindAPIKey {
		return "key\x00" + info.UserID
	}
	return "token\x00" + info.UserID
}

// sessionOwners counts each authenticated agent's sessions against
// max_sessions_per_agent: those open (by session id) and the initializes
// in flight, so that a burst of initializes from one agent is counted as
// it comes (review: 36 sessions under a cap of 2). All under one lock.
type sessionOwners struct {
	mu      sync.Mutex
	owner   map[string]string // session id -> agent (sessionOwner)
	pending map[string]int    // agent -> initializes in flight
}

// reserve counts an initialize of agent who in flight and reports whether
// the agent holds fewer than limit sessions with it. Owners of sessions
// that have ended are forgotten here (the map holds at most the open
// sessions and those that ended since the last initialize).
func (o *sessionOwners) reserve(g *Server, who string, limit int) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.owner == nil {
		o.owner, o.pending = map[string]string{}, map[string]int{}
	}
	live := map[string]bool{}
	for ss := range g.mcp.Sessions() {
		if ss.InitializeParams() != nil {
			live[ss.ID()] = true
		}
	}
	n := o.pending[who]
	for id, a := range o.owner {
		switch {
		case !live[id]:
			delete(o.owner, id)
		case a == who:
			n++
		}
	}
	if n >= limit {
		return false
	}
	o.pending[who]++
	return true
}

// settle ends an initialize of agent who that reserve counted: id is the
// session it opened, or "" for none.
func (o *sessionOwners) settle(who, id string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.pending[who]--; o.pending[who] <= 0 {
		delete(o.pending, who)
	}
	if id != "" {
		o.owner[id] = who
	}
}

// refuseAgentSession answers an initialize of an agent that holds
// max_sessions_per_agent sessions already, as refuseSession does.
func (g *Server) refuseAgentSession(w http.ResponseWriter, r *http.Request, limit int) {
	if g.agentCapLog.Allow() {
		g.log.Warn().Str(fieldAgent, agentName(r.Context())).Int("max_sessions_per_agent", limit).Msg("an agent reached max_sessions_per_agent: refusing its new sessions")
	}
	refuseInitialize(w, r, fmt.Sprintf("credgate: agent %q holds max_sessions_per_agent (%d) sessions; close one, or retry once idle ones have expired (session_idle_timeout %s)",
		agentName(r.Context()), limit, g.config().sessionIdleTimeout()))
}

// maxPeek bounds how much of a request body isInitialize reads; the SDK
// refuses larger bodies itself (StreamableHTTPOptions.MaxRequestBodyBytes).
const maxPeek = mcp.DefaultMaxRequestBodyBytes

// isInitialize reports whether r's body is an initialize request (alone or
// in a batch). It leaves the body for the next reader as it was.
func isInitialize(r *http.Request) bool {
	head, err := io.ReadAll(io.LimitReader(r.Body, maxPeek))
	r.Body = struct {
		io.Reader
		io.Closer
	}{io.MultiReader(bytes.NewReader(head), r.Body), r.Body}
	if err != nil || !bytes.Contains(head, []byte(`"initialize"`)) {
		return false
	}
	type request struct {
		Method string `json:"method"`
	}
	var one request
	if json.Unmarshal(head, &one) == nil {
		return one.Method == "initialize"
	}
	var batch []request
	if json.Unmarshal(head, &batch) == nil {
		for _, m := range batch {
			if m.Method == "initialize" {
				return true
			}
		}
	}
	return false
}

// answerWatch calls answered when the answer to a request starts.
type answerWatch struct {
	http.ResponseWriter
	answered func()
}

func (a *answerWatch) WriteHeader(code int) {
	a.answered()
	a.ResponseWriter.WriteHeader(code)
}

func (a *answerWatch) Write(p []byte) (int, error) {
	a.answered()
	return a.ResponseWriter.Write(p)
}

// Flush and Unwrap keep the SDK's streaming working through the wrapper.
func (a *answerWatch) Flush() {
	if f, ok := a.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

func (a *answerWatch) Unwrap() http.ResponseWriter { return a.ResponseWriter }

// sessionCount returns the number of agent sessions open. A session that
// was never initialized (a probe such as server/discover, which the SDK
// serves on a session of its own and closes after the request) is not
// counted.
func (g *Server) sessionCount() int {
	n := 0
	for ss := range g.mcp.Sessions() {
		if ss.InitializeParams() != nil {
			n++
		}
	}
	return n
}

func (g *Server) refuseSession(w http.ResponseWriter, r *http.Request, limit int) {
	if g.atSessionCap.CompareAndSwap(false, true) { // logged once per time the cap is reached
		g.log.Warn().Int("max_sessions", limit).Msg("max_sessions reached: refusing new agent sessions")
	}
	refuseInitialize(w, r, fmt.Sprintf("credgate: the gateway has reached max_sessions (%d agent sessions); retry later, when idle sessions have expired (session_idle_timeout %s)",
		limit, g.config().sessionIdleTimeout()))
}

// refuseInitialize answers an initialize with HTTP 503 and a JSON-RPC error
// of code codeSessionLimit saying msg, with the request's id when it has
// one, so that a client matches the error to its initialize.
func refuseInitialize(w http.ResponseWriter, r *http.Request, msg string) {
	head, _ := io.ReadAll(io.LimitReader(r.Body, oversizedHead))
	id := inspectMessage(head, nil).id
	if id == nil {
		id = json.RawMessage("null")
	}
	body, _ := json.Marshal(map[string]any{
		"jsonrpc": "2.0",
		"id":      id,
		"error":   map[string]any{"code": codeSessionLimit, "message": msg},
	})
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusServiceUnavailable)
	_, _ = w.Write(body)
}

// Overall health states.
const (
	HealthOK       = "ok"       // every upstream is up
	HealthDegraded = "degraded" // some upstreams are down, or refused by their breaker
	HealthDown     = "down"     // no upstream is up (and at least one is configured)
)

// Health is the /health document.
type Health struct {
	Status    string                    `json:"status"`
	Version   string                    `json:"version"`
	Upstreams map[string]UpstreamHealth `json:"upstreams"`

	// Sessions is the number of agent sessions open (see max_sessions).
	Sessions int `json:"sessions"`
	// Goroutines is the process's goroutine count: a number that only grows
	// is a leak.
	Goroutines int `json:"goroutines"`

	// Credentials are the configured credentials' states (issue 7); the
	// overall status is degraded while any is not healthy.
	Credentials map[string]authmap.Snapshot `json:"credentials,omitempty"`

	// Notify is each alert notifier's delivery counters (issue 10), by name.
	Notify map[string]NotifyHealth `json:"notify,omitempty"`
	// Config is the config in force and the last reload's outcome (issue 8).
	Config *ConfigHealth `json:"config"`
	// Routes are the routes' states by exposed tool name (issue 8): the
	// target calls go to and why not the primary.
	Routes map[string]RouteHealth `json:"routes,omitempty"`
	// State is where the state replicas share lives (issue 11); the overall
	// status is degraded while it is unreachable.
	State *StateHealth `json:"state,omitempty"`
}

// UpstreamHealth is one upstream's entry in /health.
type UpstreamHealth struct {
	Status    string `json:"status"` // connecting, up, down
	Connected bool   `json:"connected"`
	Transport string `json:"transport"`
	Tools     int    `json:"tools"`
	Prompts   int    `json:"prompts"`
	Resources int    `json:"resources"`
	LastError string `json:"last_error,omitempty"`
	// LastFailure is LastError classified: an auth_failure when the
	// upstream's credential was rejected, upstream_unavailable otherwise.
	LastFailure *authmap.Failure `json:"last_failure,omitempty"`
	Since       time.Time        `json:"since"`
	Attempts    int              `json:"failed_attempts,omitempty"`
	Problems    []Problem        `json:"problems,omitempty"`
	// StderrTail is what a stdio upstream's child wrote last on stderr before
	// it exited (at most 20 lines, 4 KiB, secrets redacted), while the
	// upstream is not up: a crash's whole report, where last_error has one
	// line of it.
	StderrTail []string `json:"stderr_tail,omitempty"`
	// Credential is the credential of the upstream's own traffic and of the
	// tools no per-tool entry covers (issue 7), or the name failure reports
	// give it.
	Credential string `json:"credential,omitempty"`
	// Credentials is the per-tool list (upstreams.<name>.credentials).
	Credentials []ToolCredentialHealth `json:"credentials,omitempty"`
	// Breaker is the upstream's circuit breaker (issue 8).
	Breaker BreakerHealth `json:"breaker"`
	// CredentialBreakers are the breakers of the credentials used on the
	// upstream, by credential name; a credential not used yet has none.
	CredentialBreakers map[string]BreakerHealth `json:"credential_breakers,omitempty"`
}

// ToolCredentialHealth is one per-tool credential entry of an upstream.
type ToolCredentialHealth struct {
	Tools      []string `json:"tools"`
	Credential string   `json:"credential"`
}

// Health reports the gateway's state. Secrets never appear in it: errors are
// redacted when recorded.
func (g *Server) Health() Health {
	ups := g.ups()
	h := Health{Status: HealthOK, Version: g.opts.Version, Upstreams: make(map[string]UpstreamHealth, len(ups))}
	h.Sessions, h.Goroutines = g.sessionCount(), runtime.NumGoroutine()
	h.Config = g.configHealth()
	up, refusing := 0, false
	breakers, credBreakers := g.breakerHealth()
	counts := g.catalog.exposedCounts()
	for _, u := range ups {
		u.mu.Lock()
		uh := UpstreamHealth{
			Status:      u.status,
			Connected:   u.session.Load() != nil,
			Transport:   u.cfg.Transport,
			LastError:   u.lastErr,
			LastFailure: u.lastFailure,
			Since:       u.since,
			Attempts:    u.attempts,
		}
		if u.status != StatusUp {
			uh.StderrTail = slices.Clone(u.stderrTail)
		}
		u.mu.Unlock()
		x := counts[u.name]
		uh.Tools, uh.Prompts, uh.Resources = x.tools, x.prompts, x.resources
		uh.Problems = g.catalog.problemsOf(u.name)
		uh.Credential, uh.Credentials = u.credentialHealth()
		uh.Breaker, uh.CredentialBreakers = breakers[u.name], credBreakers[u.name]
		if uh.Breaker.State == "" {
			uh.Breaker.State = breaker.StateClosed.String()
		}
		if uh.Connected {
			up++
			// Up, but its breaker refuses every call (see breakerOpen).
			refusing = refusing || g.breakerOpen(u.name)
		}
		h.Upstreams[u.name] = uh
	}
	switch {
	case len(ups) > 0 && up == 0:
		h.Status = HealthDown
	case up < len(ups), refusing:
		h.Status = HealthDegraded
	}
	creds, healthy := g.credentialHealth()
	h.Credentials = creds
	h.Notify = g.NotifyStats()
	h.Routes = g.routesHealth()
	if !healthy && h.Status == HealthOK {
		h.Status = HealthDegraded
	}
	if h.State = g.shared.health(); h.State.Status != "ok" && h.Status == HealthOK {
		h.Status = HealthDegraded
	}
	return h
}
