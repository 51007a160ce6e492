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
// reads the upstream from FILE (the first "url:", or with "transport:
// stdio" the first "command:" and "env:"), logs
// {"message":"listening","addr":...}, and serves /mcp (proxied), /readyz,
// /health and /metrics (go_memstats_alloc_bytes_total only).
//
// An HTTP upstream is proxied request by request (proxy, below). A stdio
// upstream is one child process that every agent session shares
// (stdioProxy, stdio.go): the proxy initializes it once, rewrites each
// request's JSON-RPC id to one of its own on the way in and back on the
// way out, and answers each agent's initialize from the child's one answer.
package main

import (
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
	"strconv"
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
	up, err := readConfig(*config)
	if err != nil {
		return err
	}
	var serve http.HandlerFunc
	if up.transport == "stdio" {
		sp, err := startStdio(up.command, up.env, os.Stderr)
		if err != nil {
			return err
		}
		defer sp.Close()
		serve = sp.serve
	} else {
		p := &proxy{
			target:   up.url,
			sessions: map[string]string{},
			client: &http.Client{Transport: &http.Transport{
				MaxIdleConns:        1024,
				MaxIdleConnsPerHost: 1024,
				IdleConnTimeout:     90 * time.Second,
			}},
		}
		serve = p.serve
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return err
	}
	line, _ := json.Marshal(map[string]string{"level": "info", "message": "listening", "addr": ln.Addr().String()})
	fmt.Fprintf(os.Stderr, "%s\n", line)
	mux := http.NewServeMux()
	mux.HandleFunc("/mcp", serve)
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

// upstream is the part of a config file minproxy reads: the first value of
// each key it knows, wherever it is. That is enough for the configs the
// bench writes (writeEchoConfig), which have one upstream.
type upstream struct {
	transport string            // "stdio", or anything else for HTTP
	url       string            // HTTP: the upstream's endpoint
	command   string            // stdio: the executable, run without arguments
	env       map[string]string // stdio: added to the child's environment
}

// readConfig reads the upstream of the config file at path. Values may be
// double-quoted; env must be a flow map ({KEY: "1"}), as the bench writes it.
func readConfig(path string) (upstream, error) {
	var up upstream
	data, err := os.ReadFile(path)
	if err != nil {
		return up, err
	}
	seen := map[string]bool{}
	for line := range strings.Lines(string(data)) {
		key, val, ok := strings.Cut(strings.TrimSpace(line), ":")
		if !ok || seen[key] {
			continue
		}
		val = strings.TrimSpace(val)
		switch key {
		case "transport", "url", "command":
			if val, err = unquote(val); err != nil {
				return up, fmt.Errorf("%s: %s: %w", path, key, err)
			}
		case "env":
			if up.env, err = flowMap(val); err != nil {
				return up, fmt.Errorf("%s: env: %w", path, err)
			}
		default:
			continue
		}
		seen[key] = true
		switch key {
		case "transport":
			up.transport = val
		case "url":
			up.url = val
		case "command":
			up.command = val
		}
	}
	if up.transport == "stdio" && up.command == "" {
		return up, fmt.Errorf("%s: a stdio upstream needs a command: line", path)
	}
	if up.transport != "stdio" && up.url == "" {
		return up, fmt.Errorf("%s: no url: line (and no transport: stdio)", path)
	}
	return up, nil
}

// unquote strips a value's double quotes, if it has them.
func unquote(s string) (string, error) {
	if !strings.HasPrefix(s, `"`) {
		return s, nil
	}
	return strconv.Unquote(s)
}

// flowMap parses {K: V, K2: "V2"}, the one form of env the bench writes.
func flowMap(s string) (map[string]string, error) {
	inner, ok1 := strings.CutPrefix(s, "{")
	inner, ok2 := strings.CutSuffix(inner, "}")
	if !ok1 || !ok2 {
		return nil, fmt.Errorf("%q is not a flow map {KEY: \"value\"}", s)
	}
	m := map[string]string{}
	for kv := range strings.SplitSeq(inner, ",") {
		if strings.TrimSpace(kv) == "" {
			continue
		}
		k, v, ok := strings.Cut(kv, ":")
		if !ok {
			return nil, fmt.Errorf("%q: no colon", kv)
		}
		v, err := unquote(strings.TrimSpace(v))
		if err != nil {
			return nil, fmt.Errorf("%q: %w", kv, err)
		}
		m[strings.TrimSpace(k)] = v
	}
	return m, nil
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

// readRenamed reads r's body (bounded) with the name rewrite done:
// <upstream>__<tool> becomes <tool>. A body that cannot be read is answered
// 400, and ok is false.
func readRenamed(w http.ResponseWriter, r *http.Request) (b []byte, ok bool) {
	b, err := io.ReadAll(io.LimitReader(r.Body, 4<<20))
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return nil, false
	}
	if i := bytes.Index(b, prefix); i >= 0 {
		b = append(b[:i+len(`"name":"`)], b[i+len(prefix):]...)
	}
	return b, true
}

func (p *proxy) serve(w http.ResponseWriter, r *http.Request) {
	var body io.Reader
	if r.Method == http.MethodPost {
		b, ok := readRenamed(w, r)
		if !ok {
			return
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
