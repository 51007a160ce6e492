package gateway

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// The ops endpoints (issue 10), registered in one place so that they can be
// put behind the ops-endpoint protection together:
//
//	GET /events   server-sent events: every bus event, resumable with Last-Event-ID
//	GET /status   the status page (HTML; live through /events)
//	GET /         the status page too
//
// GET /admin/events (admin.token) serves the same ring as JSON; see admin.go.

// opsRoutes adds the ops endpoints to mux.
func (g *Server) opsRoutes(mux *http.ServeMux) {
	for pattern, h := range g.OpsHandlers() {
		mux.Handle(pattern, h)
	}
}

// OpsHandlers returns the ops endpoints by ServeMux pattern, each a plain
// handler, so that they can be wrapped (authentication) where they are
// registered.
func (g *Server) OpsHandlers() map[string]http.Handler {
	status := http.HandlerFunc(g.serveStatus)
	return map[string]http.Handler{
		"GET /events": http.HandlerFunc(g.serveEvents),
		"GET /status": status,
		"GET /{$}":    status,
	}
}

// Timings of an event stream.
const (
	// sseKeepAlive is how often an idle stream gets a comment line, so
	// proxies keep it open and a client that is gone is noticed.
	sseKeepAlive = 15 * time.Second
	// sseWriteTimeout bounds one write to a stream: a client that does not
	// read for this long is disconnected.
	sseWriteTimeout = 10 * time.Second
	// sseRetryMs is the reconnect delay the stream asks clients to use.
	sseRetryMs = 2000
)

// serveEvents streams the bus as server-sent events. Each event is
//
//	id: <id>
//	data: <the Event as JSON>
//
// From where it starts: after the id in the Last-Event-ID header (what an
// EventSource sends when it reconnects), else after ?since=<id> (0 replays
// the whole ring), else with the next event. When the ring no longer holds
// every event after that id, or the id is from before a restart, the stream
// first sends an "event: missed" whose data is {after, oldest, missed,
// reason} and goes on with the oldest event it holds. A client that falls
// behind by more than the ring holds gets the same, and one that stops
// reading is disconnected (sseWriteTimeout). At most maxEventSubscribers
// streams are open at once: one more gets 503.
func (g *Server) serveEvents(w http.ResponseWriter, r *http.Request) {
	cursor := g.events.lastID()
	from := r.Header.Get("Last-Event-ID")
	if from == "" {
		from = r.URL.Query().Get("since")
	}
	if from != "" {
		id, err := strconv.ParseUint(strings.TrimSpace(from), 10, 64)
		if err != nil {
			writeJSON(w, http.StatusBadRequest, map[string]string{"error": "Last-Event-ID / since: want an event id (a non-negative integer)"})
			return
		}
		cursor = id
	}
	sub, err := g.events.subscribe()
	if err != nil {
		w.Header().Set("Retry-After", "5")
		writeJSON(w, http.StatusServiceUnavailable, map[string]string{"error": fmt.Sprintf("too many event streams open (%d); retry later", maxEventSubscribers)})
		return
	}
	defer g.events.unsubscribe(sub)
	rc := http.NewResponseController(w)
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Accel-Buffering", "no") // nginx: do not buffer the stream
	w.WriteHeader(http.StatusOK)
	write := func(s string) bool {
		_ = rc.SetWriteDeadline(time.Now().Add(sseWriteTimeout))
		if _, err := w.Write([]byte(s)); err != nil {
			return false
		}
		return rc.Flush() == nil
	}
	if !write(fmt.Sprintf("retry: %d\n\n", sseRetryMs)) {
		return
	}
	keepAlive := time.NewTicker(sseKeepAlive)
	defer keepAlive.Stop()
	for {
		evs, gap := g.events.after(cursor, 0)
		var b strings.Builder
		if gap != nil {
			data, _ := json.Marshal(gap)
			fmt.Fprintf(&b, "event: missed\ndata: %s\n\n", data)
			if gap.Reason == "restarted" {
				cursor = 0
			}
		}
		for _, e := range evs {
			data, _ := json.Marshal(e)
			fmt.Fprintf(&b, "id: %d\ndata: %s\n\n", e.ID, data)
			cursor = e.ID
		}
		if b.Len() > 0 && !write(b.String()) {
			return
		}
		select {
		case <-sub.wake:
		case <-keepAlive.C:
			if !write(": keep-alive\n\n") {
				return
			}
		case <-r.Context().Done():
			return
		case <-g.stopped:
			return
		}
	}
}
