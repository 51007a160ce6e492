package gateway

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"net/http"
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
// The admin endpoints exist only when admin.token is set, the webhook only
// when webhooks.secret is. A webhook's body is ignored once its signature
// holds: a ping means "re-read it from the source", whatever it says.

// maxWebhookBody bounds a webhook's body (it is read only to check its signature).
const maxWebhookBody = 1 << 20

// credentialRoutes adds the admin and webhook endpoints that are configured.
func (g *Server) credentialRoutes(mux *http.ServeMux) {
	if g.cred.adminToken != "" {
		mux.HandleFunc("GET /admin/events", g.admin(func(w http.ResponseWriter, r *http.Request) {
			// Every event kept, credential events with the fields the
			// audit log had (see events.go); type tells them apart.
			writeJSON(w, http.StatusOK, map[string]any{"events": g.EventLog()})
		}))
		mux.HandleFunc("POST /admin/credentials/{name}/reload", g.admin(func(w http.ResponseWriter, r *http.Request) {
			g.reloadHTTP(w, r, authmap.TriggerAdmin)
		}))
	}
	if g.cred.webhookSecret != "" {
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
}

// admin guards an admin handler with the bearer admin.token, compared in
// constant time. The scheme is matched without regard to case (RFC 9110
// section 11.1): some clients send "bearer".
func (g *Server) admin(h http.HandlerFunc) http.HandlerFunc {
	want := []byte(g.cred.adminToken)
	return func(w http.ResponseWriter, r *http.Request) {
		scheme, token, _ := strings.Cut(r.Header.Get("Authorization"), " ")
		if !strings.EqualFold(scheme, "Bearer") || subtle.ConstantTimeCompare([]byte(token), want) != 1 {
			w.Header().Set("WWW-Authenticate", `Bearer realm="credgate-admin"`)
			writeJSON(w, http.StatusUnauthorized, map[string]string{"error": "missing or wrong bearer token (admin.token)"})
			return
		}
		h(w, r)
	}
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
	g.refreshRedactor()
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
