package gateway

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"log"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"golang.org/x/time/rate"
)

// The HTTP front (issue 9): what a request passes before its endpoint.
//
//	every endpoint, both listeners   guardHosts: the Host header names this gateway
//	                                 (DNS-rebinding protection)
//	/mcp                             checkOrigin: a browser's Origin is allowed
//	                                 requireAgent: the agent authenticates (agentauth.go)
//	ops endpoints                    opsOnly: admin.token, or the admin.listen address only
//	  /health, /metrics, /events, /status (and /), /admin/*, and any to come:
//	  register them in opsRoutes, each wrapped in opsOnly
//	/healthz, /readyz                open: they say nothing about upstreams
//
// With admin.listen set, the ops endpoints are served on that address only
// (with /healthz and /readyz), never on listen.

// handlers builds the gateway's HTTP handlers: the main one (listen) and,
// when admin.listen is set, the ops one (nil otherwise).
func (g *Server) handlers() (main, ops http.Handler) {
	cfg := g.config()
	mux := http.NewServeMux()
	mux.Handle("/mcp", g.checkOrigin(g.requireAgent(g.mcpHandler())))
	g.probeRoutes(mux)
	g.webhookRoutes(mux)
	g.oauthRoutes(mux) // RFC 9728 metadata: open, outside requireAgent
	opsMux := mux
	if cfg.Admin.Listen != "" {
		opsMux = http.NewServeMux()
		g.probeRoutes(opsMux)
	}
	g.opsRoutes(opsMux)
	hosts := newHostGuard(cfg)
	main = g.guardHosts(hosts, mux)
	if opsMux != mux {
		ops = g.guardHosts(hosts, opsMux)
	}
	return main, ops
}

// opsRoutes registers the ops endpoints, each behind opsOnly. Endpoints that
// show the gateway's insides (upstreams, credentials, events, metrics)
// belong here.
func (g *Server) opsRoutes(mux *http.ServeMux) {
	mux.Handle("GET /health", g.opsGuard("health", http.HandlerFunc(g.healthHTTP)))
	mux.Handle("GET /metrics", g.opsGuard("metrics", g.metricsHandler()))
	for pattern, h := range g.OpsHandlers() { // /events, /status (ops.go)
		mux.Handle(pattern, g.opsOnly(h))
	}
	g.adminRoutes(mux)
	g.pprofRoutes(mux)
}

// opsListenerKey marks the context of requests that arrived on admin.listen.
type opsListenerKey struct{}

// opsOnly guards an ops endpoint. With admin.listen set, it answers only on
// that address (404 elsewhere). With admin.token set, the request must carry
// it as a bearer token (compared in constant time; 401 otherwise). With
// neither, it answers only while the gateway serves unauthenticated agents
// on loopback (auth unset and allow_unauthenticated false: whoever reaches
// the port can use every tool anyway); otherwise 403, naming the keys that
// open it.
func (g *Server) opsOnly(h http.Handler) http.Handler { return g.opsGuard("", h) }

// opsGuard is opsOnly for the ops endpoint admin.open may name (open, a key
// of openOps): when admin.open names it, it needs no admin.token (but still
// answers only on admin.listen when that is set, and without a token set
// the usual rules hold).
func (g *Server) opsGuard(open string, h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		cfg := g.config()
		onOps, _ := r.Context().Value(opsListenerKey{}).(bool)
		switch {
		case cfg.Admin.Listen != "" && !onOps:
			http.NotFound(w, r)
			return
		case !readOnly(r) && (!sameSite(r) || r.Header.Get("Origin") == "null"):
			// What changes state (POST /admin/*) is never a browser's
			// request made for another site's page: without admin.token
			// (admin.listen alone, or loopback), a page could make the
			// browser reload the config or a credential (found trying the
			// gateway from outside). A bearer token never comes that way.
			writeJSON(w, http.StatusForbidden, map[string]string{"error": "cross-site request to " + r.URL.Path + " refused (Origin or Sec-Fetch-Site)"})
			return
		case open != "" && cfg.Admin.opens(open) && g.cred.adminToken != "":
			// Only the token is waived: without one, the rules below
			// stand (a public listen still refuses with 403).
		case g.cred.adminToken != "":
			if !g.adminAuthorized(r) {
				w.Header().Set("WWW-Authenticate", `Bearer realm="credgate-admin"`)
				if readOnly(r) {
					// A browser asks for Basic credentials: the status page
					// and its event stream can then be opened with the token.
					w.Header().Add("WWW-Authenticate", `Basic realm="credgate-admin", charset="UTF-8"`)
				}
				writeJSON(w, http.StatusUnauthorized, map[string]string{"error": "missing or wrong bearer token (admin.token)"})
				return
			}
		case cfg.Admin.Listen == "" && (cfg.Auth.enabled() || cfg.AllowUnauthenticated):
			writeJSON(w, http.StatusForbidden, map[string]string{"error": r.URL.Path + " is an ops endpoint: set admin.token (and send it as Authorization: Bearer) or serve the ops endpoints on admin.listen"})
			return
		}
		h.ServeHTTP(w, r)
	})
}

// adminAuthorized reports whether r carries admin.token: as a bearer token,
// or, for a read-only request, as the password of HTTP Basic credentials
// (any user name), which is what a browser can send. Basic credentials a
// browser keeps are sent with requests other sites make it send too, so
// they authorize only the browser's own same-origin or typed-in requests
// (Sec-Fetch-Site, Origin), never what changes state (POST /admin/*), and
// never the profiler (a GET that starts a CPU profile or a trace).
func (g *Server) adminAuthorized(r *http.Request) bool {
	want := []byte(g.cred.adminToken)
	if token, ok := bearerToken(r.Header.Get("Authorization")); ok {
		return subtle.ConstantTimeCompare([]byte(token), want) == 1
	}
	if _, pass, ok := r.BasicAuth(); ok && readOnly(r) && sameSite(r) && !strings.HasPrefix(r.URL.Path, "/debug/pprof") {
		return subtle.ConstantTimeCompare([]byte(pass), want) == 1
	}
	return false
}

// sameSite reports whether a browser's request is its own: typed in or
// from a page of the same origin (Sec-Fetch-Site none or same-origin; a
// browser that sends no Sec-Fetch-Site sends no Origin on a GET of its
// own). Requests from tools other than browsers send neither.
func sameSite(r *http.Request) bool {
	switch r.Header.Get("Sec-Fetch-Site") {
	case "", "none", "same-origin":
	default:
		return false
	}
	if o := r.Header.Get("Origin"); o != "" && o != "null" {
		return strings.EqualFold(strings.TrimPrefix(strings.TrimPrefix(o, "http://"), "https://"), r.Host)
	}
	return true
}

// readOnly reports whether r only reads (GET, HEAD).
func readOnly(r *http.Request) bool { return r.Method == http.MethodGet || r.Method == http.MethodHead }

// serveOps serves the ops endpoints on admin.listen, when it is set, until
// the returned stop is called. It fails only if the address cannot be bound.
func (g *Server) serveOps(ops http.Handler) (stop func(), err error) {
	addr := g.config().Admin.Listen
	if ops == nil || addr == "" {
		return func() {}, nil
	}
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("admin.listen: %w", err)
	}
	srv := &http.Server{
		Handler:           ops,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       httpReadTimeout,
		IdleTimeout:       httpIdleTimeout,
		ErrorLog:          g.httpErrorLog(),
		BaseContext: func(net.Listener) context.Context {
			return context.WithValue(context.Background(), opsListenerKey{}, true)
		},
	}
	g.opsAddr.Store(l.Addr().String())
	g.log.Info().Str("admin_addr", l.Addr().String()).Msgf("ops endpoints on http://%s/health", l.Addr())
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer g.recoverLog("ops endpoints", "")
		if err := srv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
			g.log.Error().Str(fieldErr, err.Error()).Msg("ops endpoints stopped")
		}
	}()
	return func() {
		g.shutdownHTTP(srv)
		<-done
	}, nil
}

// OpsAddr returns the address the ops endpoints are served on with
// admin.listen (its bound port when the config said :0), or "".
func (g *Server) OpsAddr() string {
	s, _ := g.opsAddr.Load().(string)
	return s
}

// checkExposure refuses to serve on a listener other machines can reach
// without agent authentication (see Config.CheckExposure). A listener that
// is not TCP (a unix socket) is local.
func (g *Server) checkExposure(l net.Listener) error {
	a, ok := l.Addr().(*net.TCPAddr)
	if !ok {
		return nil
	}
	return g.config().CheckExposure(a.String())
}

// healthHTTP serves GET /health.
func (g *Server) healthHTTP(w http.ResponseWriter, _ *http.Request) {
	h := g.Health()
	w.Header().Set("Content-Type", "application/json")
	if h.Status == HealthDown {
		w.WriteHeader(http.StatusServiceUnavailable)
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(h)
}

// hostGuard decides which Host headers the gateway answers. DNS rebinding
// makes a browser send a name the attacker controls that resolves to this
// gateway; an IP address in Host cannot come from rebinding, nor can
// localhost, so those always pass, and names pass only when configured
// (allowed_hosts) or listened on (listen, admin.listen).
type hostGuard struct {
	any      bool
	names    map[string]bool
	suffixes []string // ".example.com" for *.example.com
}

func newHostGuard(cfg *Config) *hostGuard {
	h := &hostGuard{names: map[string]bool{}}
	for _, l := range []string{cfg.Listen, cfg.Admin.Listen} {
		if host, _, err := net.SplitHostPort(l); err == nil && host != "" {
			h.names[strings.ToLower(host)] = true
		}
	}
	for _, a := range cfg.AllowedHosts {
		a = strings.ToLower(strings.Trim(a, "[]"))
		switch {
		case a == "*":
			h.any = true
		case strings.HasPrefix(a, "*."):
			h.suffixes = append(h.suffixes, a[1:])
		default:
			h.names[a] = true
		}
	}
	return h
}

// allowed reports whether the gateway answers to host (a Host header, with
// or without a port).
func (h *hostGuard) allowed(host string) bool {
	if h.any || host == "" { // HTTP/1.0 without Host: no browser sends that
		return true
	}
	name := host
	if n, _, err := net.SplitHostPort(host); err == nil {
		name = n
	}
	name = strings.TrimSuffix(strings.ToLower(strings.Trim(name, "[]")), ".")
	if net.ParseIP(name) != nil || name == "localhost" || strings.HasSuffix(name, ".localhost") || h.names[name] {
		return true
	}
	for _, s := range h.suffixes {
		if strings.HasSuffix(name, s) {
			return true
		}
	}
	return false
}

// guardHosts refuses, on every endpoint, a request whose Host the gateway
// does not answer to: 403 naming allowed_hosts.
func (g *Server) guardHosts(h *hostGuard, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !h.allowed(r.Host) {
			writeJSON(w, http.StatusForbidden, map[string]string{"error": fmt.Sprintf("host %q is not served here: add it to allowed_hosts", truncate(r.Host, 100))})
			return
		}
		next.ServeHTTP(w, r)
	})
}

// CORS answers for allowed browser origins.
const (
	corsMethods = "GET, POST, DELETE, OPTIONS"
	corsHeaders = "Authorization, Content-Type, Accept, Mcp-Session-Id, Mcp-Protocol-Version, Last-Event-ID"
	corsExpose  = "Mcp-Session-Id, WWW-Authenticate"
)

// checkOrigin refuses a browser request to /mcp from an origin that is not
// in allowed_origins (nor the gateway's own): 403. A request without Origin
// (a non-browser client) passes. An allowed origin gets the CORS headers a
// browser needs, and its preflight is answered here, before authentication
// (a browser sends no credentials on a preflight).
func (g *Server) checkOrigin(next http.Handler) http.Handler {
	allowed := map[string]bool{}
	anyOrigin := false
	for _, o := range g.config().AllowedOrigins {
		if n, err := normalizeOrigin(o); err == nil {
			allowed[n] = true
			anyOrigin = anyOrigin || n == "*"
		}
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		origin := r.Header.Get("Origin")
		if origin == "" {
			next.ServeHTTP(w, r)
			return
		}
		listed := anyOrigin || allowed[strings.ToLower(origin)]
		if !listed && !sameOrigin(origin, r.Host) {
			writeJSON(w, http.StatusForbidden, map[string]string{"error": fmt.Sprintf("origin %q may not call this gateway: add it to allowed_origins", truncate(origin, 100))})
			return
		}
		if listed {
			h := w.Header()
			h.Set("Access-Control-Allow-Origin", origin)
			h.Add("Vary", "Origin")
			h.Set("Access-Control-Expose-Headers", corsExpose)
			if r.Method == http.MethodOptions && r.Header.Get("Access-Control-Request-Method") != "" {
				h.Set("Access-Control-Allow-Methods", corsMethods)
				h.Set("Access-Control-Allow-Headers", corsHeaders)
				h.Set("Access-Control-Max-Age", "600")
				w.WriteHeader(http.StatusNoContent)
				return
			}
		}
		next.ServeHTTP(w, r)
	})
}

// sameOrigin reports whether a browser's Origin is the gateway itself (the
// host it was asked for).
func sameOrigin(origin, host string) bool {
	u, err := url.Parse(origin)
	return err == nil && u.Host != "" && strings.EqualFold(u.Host, host)
}

// httpErrorLog is the HTTP servers' error log (failed TLS handshakes, a
// client that sent plain HTTP to the TLS port, a panic net/http caught):
// JSON warn lines of the gateway's log, at most one a second, as refused
// authentications are (they went to stderr as plain text, one per bad
// connection: found trying the gateway from outside).
func (g *Server) httpErrorLog() *log.Logger {
	w := &httpErrorWriter{g: g, limit: rate.NewLimiter(1, 1)}
	return log.New(w, "", 0)
}

type httpErrorWriter struct {
	g     *Server
	limit *rate.Limiter
}

func (w *httpErrorWriter) Write(p []byte) (int, error) {
	if w.limit.Allow() {
		msg := strings.TrimPrefix(strings.TrimSpace(string(p)), "http: ")
		w.g.log.Warn().Str(fieldErr, w.g.redact(truncate(msg, 512))).Msg("http server")
	}
	return len(p), nil
}
