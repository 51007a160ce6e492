package gateway

import (
	"bytes"
	crand "crypto/rand"
	"embed"
	"encoding/base64"
	"fmt"
	"html/template"
	"math"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/credgate/credgate/authmap"
)

// The status page (issue 10): one HTML page rendered on the server from
// [Server.Health] and the event ring, with no build step and no assets
// beyond the page. It reads fine without JavaScript (the static render,
// which a <noscript> refresh keeps current); with it, a small inline script
// listens on /events and, on each event, fetches the page again and swaps
// in its sections, so a revocation or a rotation shows without a reload.

//go:embed web/status.html
var statusFS embed.FS

var statusTemplate = template.Must(template.New("status.html").Funcs(template.FuncMap{
	"join": func(s []string) string { return strings.Join(s, ", ") },
}).ParseFS(statusFS, "web/status.html"))

// statusEvents is how many of the last events the page shows.
const statusEvents = 40

// statusView is what the template renders.
type statusView struct {
	Nonce       string
	Generated   string
	Status      string
	StatusClass string
	Version     string
	Sessions    int
	LastID      uint64
	Upstreams   []upstreamRow
	Credentials []credentialRow
	Breakers    []breakerRow
	Routes      []routeRow
	Notifiers   []notifierRow
	Events      []eventRow
}

type upstreamRow struct {
	Name, Status, Class, Transport, Since, Breaker, BreakerClass, Credential, Error string
	Tools, Prompts, Resources                                                       int
}

type credentialRow struct {
	Name, Status, Class, TTL, Expires, Source, Detail string
	// Bar is the TTL bar's width in percent (a log scale up to 30 days);
	// NoExpiry draws it hatched.
	Bar       int
	NoExpiry  bool
	Readiness int
	Renewable bool
	Bad       bool // not usable: the tools it serves fail
	Upstreams []string
	Tools     []string
}

type breakerRow struct {
	Name, State, Class, Reason, Until string
}

// routeRow is one route: its active target and why (see routeRows).
type routeRow struct {
	Name, Target, Class, Reason string
}

type notifierRow struct {
	Name, Format, Error string
	Sent, Dropped       uint64
	Queued              int
}

type eventRow struct {
	ID                               uint64
	Time, Type, Kind, Subject, Class string
	Detail                           string
}

// serveStatus renders the status page.
func (g *Server) serveStatus(w http.ResponseWriter, r *http.Request) {
	nonce := make([]byte, 16)
	_, _ = crand.Read(nonce)
	v := g.statusView(base64.StdEncoding.EncodeToString(nonce))
	var buf bytes.Buffer
	if err := statusTemplate.Execute(&buf, v); err != nil {
		g.log.Error().Str(fieldErr, g.redact(err.Error())).Msg("status page")
		http.Error(w, "status page: rendering failed", http.StatusInternalServerError)
		return
	}
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("X-Frame-Options", "DENY")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; script-src 'nonce-"+v.Nonce+"'; connect-src 'self'; img-src data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
	_, _ = w.Write(buf.Bytes())
}

// statusView builds the page's data from Health and the ring.
func (g *Server) statusView(nonce string) statusView {
	lastID := g.events.lastID() // before Health: an event after it is replayed, never lost
	h := g.Health()
	now := time.Now()
	v := statusView{Nonce: nonce, Generated: now.UTC().Format(time.RFC3339), Status: h.Status, StatusClass: statusClass(h.Status),
		Version: h.Version, Sessions: h.Sessions, LastID: lastID}
	for _, name := range g.config().Order() {
		uh, ok := h.Upstreams[name]
		if !ok {
			continue
		}
		row := upstreamRow{Name: name, Status: uh.Status, Class: statusClass(uh.Status), Transport: uh.Transport,
			Tools: uh.Tools, Prompts: uh.Prompts, Resources: uh.Resources, Since: ago(now, uh.Since),
			Breaker: uh.Breaker.State, BreakerClass: breakerClass(uh.Breaker.State), Credential: uh.Credential}
		if uh.Status != StatusUp {
			row.Error = uh.LastError
		}
		v.Upstreams = append(v.Upstreams, row)
		v.Breakers = append(v.Breakers, breakerRowOf(name, uh.Breaker))
		for _, cred := range sortedKeys(uh.CredentialBreakers) {
			v.Breakers = append(v.Breakers, breakerRowOf(name+" / "+cred, uh.CredentialBreakers[cred]))
		}
	}
	for _, name := range sortedKeys(h.Credentials) {
		v.Credentials = append(v.Credentials, g.credentialRow(name, h.Credentials[name]))
	}
	v.Routes = routeRows(h)
	stats := g.NotifyStats()
	for _, name := range g.notifyNames() {
		s := stats[name]
		v.Notifiers = append(v.Notifiers, notifierRow{Name: name, Format: s.Format, Sent: s.Sent, Dropped: s.Dropped, Queued: s.Queued, Error: s.LastError})
	}
	evs, _ := g.events.after(0, 0)
	if len(evs) > statusEvents {
		evs = evs[len(evs)-statusEvents:]
	}
	for i := len(evs) - 1; i >= 0; i-- {
		if evs[i].ID <= lastID {
			v.Events = append(v.Events, eventRowOf(evs[i]))
		}
	}
	return v
}

// routeRows lists the routes of h and their active targets, by name: a
// route served by a target other than its primary is a warning, one
// without a target is bad.
func routeRows(h Health) []routeRow {
	names := make([]string, 0, len(h.Routes))
	for n := range h.Routes {
		names = append(names, n)
	}
	slices.Sort(names)
	out := make([]routeRow, 0, len(names))
	for _, n := range names {
		r := h.Routes[n]
		row := routeRow{Name: n, Target: r.Active, Reason: r.Reason, Class: "ok"}
		switch {
		case r.Active == "":
			row.Class = "bad"
		case len(r.Targets) > 0 && r.Active != r.Targets[0].Target:
			row.Class = "warn"
		}
		out = append(out, row)
	}
	return out
}

func (g *Server) credentialRow(name string, s authmap.Snapshot) credentialRow {
	st := s.Status.String()
	row := credentialRow{Name: name, Status: st, Class: credentialClass(s.Status), Source: s.Source,
		Readiness: s.Readiness.Score, Renewable: s.Renewable, Bad: !s.Status.Usable()}
	row.Upstreams, row.Tools = g.credentialScope(name)
	if s.TTLSeconds == nil {
		row.TTL, row.Bar, row.NoExpiry = "no expiry known", 100, true
	} else {
		ttl := time.Duration(*s.TTLSeconds) * time.Second
		row.TTL = humanTTL(ttl)
		row.Expires = s.ExpiresAt.UTC().Format(time.RFC3339)
		row.Bar = ttlBar(ttl)
	}
	// Also for a usable credential: a source that failed its last read
	// (a file removed, its value kept) is news before the next restart.
	if s.LastError != nil {
		row.Detail = s.LastError.Detail
		if s.LastError.Recovery != "" {
			row.Detail += " (recovery: " + string(s.LastError.Recovery) + ")"
		}
	}
	return row
}

// ttlBar maps a TTL onto a bar on a log scale, so minutes and months both
// read: 1 minute is about a third, a day three quarters, 30 days full.
func ttlBar(ttl time.Duration) int {
	if ttl <= 0 {
		return 0
	}
	const full = 30 * 24 * time.Hour
	p := int(math.Round(100 * math.Log1p(ttl.Seconds()) / math.Log1p(full.Seconds())))
	return max(2, min(100, p))
}

// humanTTL prints a TTL in its two largest units.
func humanTTL(d time.Duration) string {
	if d <= 0 {
		return "expired " + humanTTL(-d+time.Second) + " ago"
	}
	days := int(d / (24 * time.Hour))
	d -= time.Duration(days) * 24 * time.Hour
	h, m, s := int(d/time.Hour), int(d%time.Hour/time.Minute), int(d%time.Minute/time.Second)
	switch {
	case days > 0:
		return fmt.Sprintf("%dd %dh", days, h)
	case h > 0:
		return fmt.Sprintf("%dh %dm", h, m)
	case m > 0:
		return fmt.Sprintf("%dm %ds", m, s)
	}
	return fmt.Sprintf("%ds", s)
}

func ago(now, t time.Time) string {
	if t.IsZero() {
		return ""
	}
	d := now.Sub(t).Truncate(time.Second)
	if d < 0 {
		d = 0
	}
	return humanTTL(d+time.Nanosecond) + " ago"
}

func breakerRowOf(name string, b BreakerHealth) breakerRow {
	row := breakerRow{Name: name, State: b.State, Class: breakerClass(b.State), Reason: b.Reason}
	if b.Until != nil {
		row.Until = b.Until.UTC().Format(time.RFC3339)
	}
	return row
}

func eventRowOf(e Event) eventRow {
	row := eventRow{ID: e.ID, Time: e.Time.UTC().Format("15:04:05"), Type: string(e.Type), Kind: e.Kind, Detail: e.Detail}
	switch e.Type {
	case EventCredential:
		row.Subject = e.Credential
		var st authmap.Status
		_ = st.UnmarshalText([]byte(e.Status))
		row.Class = credentialClass(st)
		if e.Kind == string(authmap.EventRotated) || e.Kind == string(authmap.EventRefreshed) || e.Kind == string(authmap.EventRestored) {
			row.Class = "ok"
		}
	case EventBreaker:
		row.Subject = e.Upstream
		if e.Credential != "" {
			row.Subject += " / " + e.Credential
		}
		row.Class = breakerClass(e.Kind)
		if e.Reason != "" && row.Detail == "" {
			row.Detail = e.Reason
		}
	case EventUpstream:
		row.Subject, row.Class = e.Upstream, statusClass(e.Kind)
	case EventRoute:
		row.Subject, row.Class = e.Route, "ok"
		if e.Kind == KindRouteNoTarget {
			row.Class = "bad"
		}
		if row.Detail == "" {
			row.Detail = strings.TrimSpace(e.From + " → " + e.Target + " " + e.Reason)
		}
	case EventConfig:
		row.Class = "ok"
		if e.Kind == KindConfigReloadFailed {
			row.Class = "bad"
		}
	case EventState:
		row.Subject, row.Class = "shared state", "ok"
		if e.Kind != "ok" {
			row.Class = "warn"
		}
	}
	return row
}

// Classes colour a state: ok (green), warn (amber), bad (red), none (grey).
func statusClass(s string) string {
	switch s {
	case HealthOK, StatusUp:
		return "ok"
	case HealthDegraded, StatusConnecting:
		return "warn"
	case HealthDown:
		return "bad"
	}
	return "none"
}

func breakerClass(s string) string {
	switch s {
	case "closed":
		return "ok"
	case "half-open":
		return "warn"
	case "open":
		return "bad"
	}
	return "none"
}

func credentialClass(s authmap.Status) string {
	switch s {
	case authmap.StatusHealthy:
		return "ok"
	case authmap.StatusExpiring, authmap.StatusRateLimited:
		return "warn"
	case authmap.StatusUnknown:
		return "none"
	}
	return "bad"
}
