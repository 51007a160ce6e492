package gateway

import (
	"encoding/json"
	"net/http"
	"slices"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/credgate/credgate/authmap"
)

// Handler returns the gateway's HTTP handler:
//
//	/mcp      the MCP endpoint (streamable HTTP)
//	/healthz  liveness: 200 while the process serves HTTP
//	/readyz   readiness: 200 once every upstream had its first connection attempt
//	/health   JSON status of the gateway and each upstream
func (g *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/mcp", g.refuseNewWhileDraining(mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return g.mcp }, &mcp.StreamableHTTPOptions{
		Stateless: g.cfg.Stateless,
		Logger:    g.sdkLog,
	})))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		_, _ = w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		if !g.serving.Load() {
			w.WriteHeader(http.StatusServiceUnavailable)
			_, _ = w.Write([]byte("starting\n"))
			return
		}
		_, _ = w.Write([]byte("ready\n"))
	})
	mux.HandleFunc("GET /health", func(w http.ResponseWriter, r *http.Request) {
		h := g.Health()
		w.Header().Set("Content-Type", "application/json")
		if h.Status == HealthDown {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		_ = enc.Encode(h)
	})
	g.credentialRoutes(mux)
	return mux
}

// refuseNewWhileDraining answers 503 to requests that would start something
// new while the gateway shuts down: a new session, or any stateless request.
// Requests on existing sessions pass, so that an agent's new call gets the
// typed failure it can act on (see forward) and its calls in flight their
// answers.
func (g *Server) refuseNewWhileDraining(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if g.draining.Load() && (g.cfg.Stateless || r.Header.Get("Mcp-Session-Id") == "") {
			w.Header().Set("Connection", "close")
			http.Error(w, ErrShuttingDown.Error(), http.StatusServiceUnavailable)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// Overall health states.
const (
	HealthOK       = "ok"       // every upstream is up
	HealthDegraded = "degraded" // some upstreams are down
	HealthDown     = "down"     // no upstream is up (and at least one is configured)
)

// Health is the /health document.
type Health struct {
	Status    string                    `json:"status"`
	Version   string                    `json:"version"`
	Upstreams map[string]UpstreamHealth `json:"upstreams"`
	// Credentials are the configured credentials' states (issue 7); the
	// overall status is degraded while any is not healthy.
	Credentials map[string]authmap.Snapshot `json:"credentials,omitempty"`
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
}

// ToolCredentialHealth is one per-tool credential entry of an upstream.
type ToolCredentialHealth struct {
	Tools      []string `json:"tools"`
	Credential string   `json:"credential"`
}

// Health reports the gateway's state. Secrets never appear in it: errors are
// redacted when recorded.
func (g *Server) Health() Health {
	h := Health{Status: HealthOK, Version: g.opts.Version, Upstreams: make(map[string]UpstreamHealth, len(g.upstreams))}
	up := 0
	for _, u := range g.upstreams {
		u.mu.Lock()
		uh := UpstreamHealth{
			Status:      u.status,
			Connected:   u.session.Load() != nil,
			Transport:   u.cfg.Transport,
			Prompts:     len(u.cat.prompts),
			Resources:   len(u.cat.resources),
			LastError:   u.lastErr,
			LastFailure: u.lastFailure,
			Since:       u.since,
			Attempts:    u.attempts,
		}
		if u.status != StatusUp {
			uh.StderrTail = slices.Clone(u.stderrTail)
		}
		u.mu.Unlock()
		uh.Tools = g.catalog.toolCount(u.name)
		uh.Problems = g.catalog.problemsOf(u.name)
		uh.Credential, uh.Credentials = u.credentialHealth()
		if uh.Connected {
			up++
		}
		h.Upstreams[u.name] = uh
	}
	switch {
	case len(g.upstreams) > 0 && up == 0:
		h.Status = HealthDown
	case up < len(g.upstreams):
		h.Status = HealthDegraded
	}
	creds, healthy := g.credentialHealth()
	h.Credentials = creds
	if !healthy && h.Status == HealthOK {
		h.Status = HealthDegraded
	}
	return h
}
