package main

// --record-headers (http/sse): every request's headers are recorded, values
// verbatim, and served at GET /debug/headers (not itself recorded), so a test
// can prove what never reached the upstream (an agent's token: issue 9). The
// record is bounded: at most maxHeaderRecords distinct (name, value) pairs.

import (
	"encoding/json"
	"net/http"
	"sort"
	"sync"
)

const maxHeaderRecords = 10000

// headerRecorder keeps every distinct header (name, value) seen.
type headerRecorder struct {
	mu       sync.Mutex
	seen     map[string]map[string]bool // canonical name -> values
	n        int
	requests int
}

func newHeaderRecorder() *headerRecorder {
	return &headerRecorder{seen: map[string]map[string]bool{}}
}

// middleware records each request's headers and serves GET /debug/headers.
func (h *headerRecorder) middleware(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet && r.URL.Path == "/debug/headers" {
			h.serve(w)
			return
		}
		h.mu.Lock()
		h.requests++
		for name, values := range r.Header {
			for _, v := range values {
				if h.seen[name] == nil {
					h.seen[name] = map[string]bool{}
				}
				if !h.seen[name][v] && h.n < maxHeaderRecords {
					h.seen[name][v] = true
					h.n++
				}
			}
		}
		h.mu.Unlock()
		next.ServeHTTP(w, r)
	})
}

// serve writes {"requests": N, "headers": {name: [values...]}}.
func (h *headerRecorder) serve(w http.ResponseWriter) {
	h.mu.Lock()
	out := map[string][]string{}
	for name, vals := range h.seen {
		for v := range vals {
			out[name] = append(out[name], v)
		}
		sort.Strings(out[name])
	}
	doc := map[string]any{"requests": h.requests, "headers": out}
	h.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(doc)
}
