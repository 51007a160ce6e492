// Command minproxy is the reference row of `make bench`: the "minimal Go
// reverse proxy" of issue 12 (own session ids, the tool name rewritten,
// the reply streamed back), measured on the same machine and in the same
// run as credgate, so the gateway is compared with what a bare proxy costs
// here rather than with a figure from another machine.
//
// It is not a gateway: one upstream, no failure classification, no
// credentials, no catalog rewrite. It speaks just enough of credgate's
// command line and HTTP surface for the bench to drive it like one:
//
//	minproxy serve --config FILE --listen ADDR [--log-level L]
//
// reads the first "url:" of FILE, logs {"message":"listening","addr":...},
// and serves /mcp (proxied), /readyz, /health and /metrics
// (go_memstats_alloc_bytes_total only).
package main

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"runtime"
	"strings"
	"sync"
	"time"
)

const (
	upstreamName = "echo"
	sessionHdr   = "Mcp-Session-Id"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "minproxy:", err)
		os.Exit(2)
	}
}

func run(args []string) error {
	if len(args) == 0 || args[0] != "serve" {
		return errors.New("usage: minproxy serve --config FILE --listen ADDR")
	}
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	config := fs.String("config", "", "config file (its first url: is the upstream)")
	listen := fs.String("listen", "127.0.0.1:0", "listen address")
	fs.String("log-level", "info", "ignored")
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	target, err := upstreamURL(*config)
	if err != nil {
		return err
	}
	p := &proxy{
		target:   target,
		sessions: map[string]string{},
		client: &http.Client{Transport: &http.Transport{
			MaxIdleConns:        1024,
			MaxIdleConnsPerHost: 1024,
			IdleConnTimeout:     90 * time.Second,
		}},
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return err
	}
	line, _ := json.Marshal(map[string]string{"level": "info", "message": "listening", "addr": ln.Addr().String()})
	fmt.Fprintf(os.Stderr, "%s\n", line)
	mux := http.NewServeMux()
	mux.HandleFunc("/mcp", p.serve)
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "ok\n") })
	mux.HandleFunc("/health", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintf(w, `{"status":"healthy","upstreams":{%q:{"status":"healthy","connected":true,"tools":1}}}`, upstreamName)
	})
	mux.HandleFunc("/metrics", func(w http.ResponseWriter, _ *http.Request) {
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		fmt.Fprintf(w, "go_memstats_alloc_bytes_total %d\n", ms.TotalAlloc)
	})
	return http.Serve(ln, mux)
}

// upstreamURL is the first "url:" value of the config file.
func upstreamURL(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(strings.TrimSpace(sc.Text()), "url:"); ok {
			return strings.TrimSpace(v), nil
		}
	}
	return "", fmt.Errorf("%s: no url: line (minproxy proxies HTTP upstreams only)", path)
}

type proxy struct {
	target string
	client *http.Client

	mu       sync.Mutex
	sessions map[string]string // our session id -> the upstream's
}

var bufs = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

// prefix is what the agent's tool names carry and the upstream's do not.
var prefix = []byte(`"name":"` + upstreamName + `__`)

func (p *proxy) serve(w http.ResponseWriter, r *http.Request) {
	var body io.Reader
	if r.Method == http.MethodPost {
		b, err := io.ReadAll(io.LimitReader(r.Body, 4<<20))
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		// The name rewrite: <upstream>__<tool> becomes <tool>.
		if i := bytes.Index(b, prefix); i >= 0 {
			b = append(b[:i+len(`"name":"`)], b[i+len(prefix):]...)
		}
		body = bytes.NewReader(b)
	}
	out, err := http.NewRequestWithContext(r.Context(), r.Method, p.target, body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	for _, h := range []string{"Content-Type", "Accept", "Mcp-Protocol-Version", "Last-Event-Id"} {
		if v := r.Header.Get(h); v != "" {
			out.Header.Set(h, v)
		}
	}
	if id := r.Header.Get(sessionHdr); id != "" {
		p.mu.Lock()
		up, ok := p.sessions[id]
		if ok && r.Method == http.MethodDelete {
			delete(p.sessions, id)
		}
		p.mu.Unlock()
		if !ok {
			http.Error(w, "unknown session", http.StatusNotFound)
			return
		}
		out.Header.Set(sessionHdr, up)
	}
	resp, err := p.client.Do(out)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	defer resp.Body.Close()
	for _, h := range []string{"Content-Type", "Cache-Control"} {
		if v := resp.Header.Get(h); v != "" {
			w.Header().Set(h, v)
		}
	}
	if up := resp.Header.Get(sessionHdr); up != "" && r.Header.Get(sessionHdr) == "" {
		var raw [16]byte
		rand.Read(raw[:])
		id := hex.EncodeToString(raw[:])
		p.mu.Lock()
		p.sessions[id] = up
		p.mu.Unlock()
		w.Header().Set(sessionHdr, id)
	}
	w.WriteHeader(resp.StatusCode)
	// The streamed reply: each read is written and flushed at once.
	rc := http.NewResponseController(w)
	buf := bufs.Get().(*[]byte)
	defer bufs.Put(buf)
	for {
		n, err := resp.Body.Read(*buf)
		if n > 0 {
			if _, werr := w.Write((*buf)[:n]); werr != nil {
				return
			}
			_ = rc.Flush()
		}
		if err != nil {
			return
		}
	}
}
