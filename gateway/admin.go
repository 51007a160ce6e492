package gateway

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/pprof"
	"slices"
	"strings"

	"github.com/credgate/credgate/authmap"
)

// Admin and webhook endpoints (issue 7):
//
//	GET  /admin/events                      the last 1,000 events of the bus (bearer admin.token)
//	POST /admin/credentials/<name>/reload   re-read a credential from its source (bearer admin.token)
//	POST /webhooks/rotate/<name>            a provider's rotation ping, signed with webhooks.secret
//
// The admin endpoints exist only when admin.token or admin.listen is set
// (they are ops endpoints: see opsOnly), the webhook only when
// webhooks.secret is. A webhook's body is ignored once its signature
// holds: a ping means "re-read it from the source", whatever it says.

// maxWebhookBody bounds a webhook's body (it is read only to check its signature).
const maxWebhookBody = 1 << 20

// adminRoutes adds the admin endpoints, behind opsOnly, when admin.token
// or admin.listen is set.
func (g *Server) adminRoutes(mux *http.ServeMux) {
	if g.cred.adminToken == "" && g.config().Admin.Listen == "" {
		return
	}
	mux.Handle("GET /admin/events", g.opsOnly(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// Every event kept, credential events with the fields the
		// audit log had (see events.go); type tells them apart.
		writeJSON(w, http.StatusOK, map[string]any{"events": g.EventLog()})
	})))
	mux.Handle("POST /admin/credentials/{name}/reload", g.opsOnly(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		g.reloadHTTP(w, r, authmap.TriggerAdmin)
	})))
	g.reloadRoutes(mux) // POST /admin/reload (reload.go)
}

// pprofRoutes adds Go's profiler under /debug/pprof/ when admin.pprof is
// set, behind opsOnly like every ops endpoint. `make bench` reads the
// gateway's CPU and allocation profiles through it.
func (g *Server) pprofRoutes(mux *http.ServeMux) {
	if !g.config().Admin.Pprof {
		return
	}
	mux.Handle("GET /debug/pprof/", g.opsOnly(http.HandlerFunc(pprof.Index)))
	mux.Handle("GET /debug/pprof/cmdline", g.opsOnly(http.HandlerFunc(pprof.Cmdline)))
	mux.Handle("GET /debug/pprof/profile", g.opsOnly(http.HandlerFunc(pprof.Profile)))
	mux.Handle("GET /debug/pprof/symbol", g.opsOnly(http.HandlerFunc(pprof.Symbol)))
	mux.Handle("GET /debug/pprof/trace", g.opsOnly(http.HandlerFunc(pprof.Trace)))
}

// webhookRoutes adds the rotation webhook when webhooks.secret is set. It is
// served on listen, where providers reach it; its signature guards it.
func (g *Server) webhookRoutes(mux *http.ServeMux) {
	if g.cred.webhookSecret == "" {
		return
	}
	mux.HandleFunc("POST /webhooks/rotate/{name}", func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(io.LimitReader(r.Body, maxWebhookBody+1))
		if err != nil || len(body) > maxWebhookBody {
			writeJSON(w, http.StatusRequestEntityTooLarge, map[string]string{"error": "body too large"})
			return
		}
		if !validSignature(g.cred.webhookSecret, body, r.Header.Get("X-Credgate-Signature")) {
			g.log.Warn().Str(fieldCredential, r.PathValue("name")).Str("remote", r.RemoteAddr).Msg("rotation webhook with a bad or missing signature refused")
			writeJSON(w, http.StatusUnauthorized, map[string]string{"error": "bad or missing X-Credgate-Signature (want sha256=<hex HMAC-SHA256 of the body>)"})
			return
		}
		g.reloadHTTP(w, r, authmap.TriggerWebhook)
	})
}

// validSignature checks X-Credgate-Signature: sha256=<hex HMAC-SHA256 of body>.
func validSignature(secret string, body []byte, header string) bool {
	hexSig, ok := strings.CutPrefix(strings.TrimSpace(header), "sha256=")
	if !ok {
		return false
	}
	got, err := hex.DecodeString(hexSig)
	if err != nil {
		return false
	}
	mac := hmac.New(sha256.New, []byte(secret))
	mac.Write(body)
	return hmac.Equal(got, mac.Sum(nil))
}

// reloadHTTP re-reads the credential named in the path and answers with its
// state: 404 for an unknown name, 200 with changed true or false, or 502
// with the (redacted) reason when the source failed.
func (g *Server) reloadHTTP(w http.ResponseWriter, r *http.Request, trigger authmap.Trigger) {
	name := r.PathValue("name")
	if !slices.Contains(g.cred.set.Names(), name) {
		writeJSON(w, http.StatusNotFound, map[string]string{"error": "unknown credential " + strconvQuote(name)})
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), credentialTimeout)
	defer cancel()
	changed, err := g.cred.set.Reload(ctx, name, trigger)
	if errors.Is(err, authmap.ErrUnknownCredential) {
		writeJSON(w, http.StatusNotFound, map[string]string{"error": "unknown credential " + strconvQuote(name)})
		return
	}
	if err == nil {
		var kept bool
		if kept, err = g.awaitChildren(ctx, name); kept {
			changed = false
		}
	}
	g.refreshRedactor()
	if err == nil && trigger == authmap.TriggerAdmin {
		g.retryCredential(name) // an unchanged value the breakers still hold is tried again
	}
	if err == nil {
		g.shared.announceReload(ctx, name, trigger) // every replica re-reads it (issue 11)
	}
	out := map[string]any{"credential": name, "changed": changed}
	if c := g.credential(name); c != nil {
		out["status"] = c.Status().String()
	}
	status := http.StatusOK
	if err != nil {
		out["error"] = g.redact(err.Error())
		status = http.StatusBadGateway
	}
	writeJSON(w, status, out)
}

// awaitChildren waits, after a reload of credential name, until the stdio
// upstreams whose shared child it serves have started one with its value
// (in the background: a running child is replaced, a down upstream tries
// again), at most each one's connect timeout. It returns the rejection when
// a child exited on the value: kept when the value before it was kept
// (RejectRotation), else the upstream stays down on it. The reload
// answered "changed", healthy, and the rejection came later, as an event
// only; and the first calls after a good value's reload of a down upstream
// failed on the value before it (found trying the gateway from outside).
func (g *Server) awaitChildren(ctx context.Context, name string) (kept bool, err error) {
	c := g.credential(name)
	if c == nil {
		return false, nil
	}
	v, gen := c.Value(), c.Generation()
	for _, u := range g.ups() {
		if !u.creds.counted || u.defaultCred != name {
			continue
		}
		if u.session.Load() != nil {
			u.awaitCredential(ctx, name)
		} else {
			u.awaitAttempt(ctx, gen)
		}
		if c.Value() != v {
			if c.Rejected() != v {
				return false, nil // a newer value came meanwhile
			}
			return true, fmt.Errorf("credential %q: the new value was rejected when upstream %q's child started with it, and the value before it is kept: %s", name, u.name, g.lastErrorOf(c))
		}
		if u.session.Load() == nil && u.creds.tried.Load() == gen && c.Generation() == gen && c.Status() != authmap.StatusHealthy {
			return false, fmt.Errorf("credential %q: upstream %q's child exited on its value: %s", name, u.name, g.lastErrorOf(c))
		}
	}
	return false, nil
}

// lastErrorOf is the credential's last error as text, redacted.
func (g *Server) lastErrorOf(c *authmap.Credential) string {
	if le := c.Snapshot(false).LastError; le != nil {
		return g.redact(le.Error())
	}
	return "it exited"
}

func strconvQuote(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

// credentialHealth is the upstream's credential binding for /health.
func (u *upstream) credentialHealth() (string, []ToolCredentialHealth) {
	name := u.defaultCred
	if name == "" {
		name = u.cfg.Credential
	}
	var list []ToolCredentialHealth
	for _, tc := range u.cfg.Credentials {
		list = append(list, ToolCredentialHealth{Tools: slices.Clone(tc.Tools), Credential: tc.Credential})
	}
	return name, list
}
