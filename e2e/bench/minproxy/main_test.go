package main

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// seen is what the test upstream received for one request.
type seen struct {
	Method, Session, Body string
}

// TestProxy drives the proxy against an httptest upstream that hands out
// its own session id: the agent gets a different id, which the proxy maps
// back on every later request; the tool name loses its "echo__" prefix;
// the reply comes back as the upstream wrote it; an unknown id and a
// deleted one are refused without reaching the upstream.
func TestProxy(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()

	var (
		mu  sync.Mutex
		got []seen
	)
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		mu.Lock()
		got = append(got, seen{r.Method, r.Header.Get(sessionHdr), string(body)})
		mu.Unlock()
		if r.Header.Get(sessionHdr) == "" {
			w.Header().Set(sessionHdr, "upstream-1")
		}
		w.Header().Set("Content-Type", "text/event-stream")
		io.WriteString(w, "event: message\ndata: {\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{}}\n\n")
	}))
	defer up.Close()
	p := &proxy{target: up.URL, sessions: map[string]string{}, client: up.Client()}
	srv := httptest.NewServer(http.HandlerFunc(p.serve))
	defer srv.Close()

	do := func(method, session, body string) (*http.Response, string) {
		t.Helper()
		req, err := http.NewRequestWithContext(ctx, method, srv.URL, strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Content-Type", "application/json")
		if session != "" {
			req.Header.Set(sessionHdr, session)
		}
		resp, err := srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		return resp, string(b)
	}

	resp, _ := do(http.MethodPost, "", `{"jsonrpc":"2.0","id":0,"method":"initialize","params":{}}`)
	id := resp.Header.Get(sessionHdr)
	if id == "" || id == "upstream-1" {
		t.Fatalf("session id to the agent = %q, want one of the proxy's own", id)
	}
	call := `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo__echo","arguments":{"s":"echo__x"}}}`
	resp, body := do(http.MethodPost, id, call)
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "text/event-stream" ||
		body != "event: message\ndata: {\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{}}\n\n" {
		t.Errorf("tools/call reply: %s, %q, %q", resp.Status, resp.Header.Get("Content-Type"), body)
	}
	if resp, _ := do(http.MethodPost, "not-a-session", call); resp.StatusCode != http.StatusNotFound {
		t.Errorf("unknown session: %s, want 404", resp.Status)
	}
	if resp, _ := do(http.MethodDelete, id, ""); resp.StatusCode != http.StatusOK {
		t.Errorf("DELETE: %s", resp.Status)
	}
	if resp, _ := do(http.MethodPost, id, call); resp.StatusCode != http.StatusNotFound {
		t.Errorf("deleted session: %s, want 404", resp.Status)
	}

	want := []seen{
		{http.MethodPost, "", `{"jsonrpc":"2.0","id":0,"method":"initialize","params":{}}`},
		{http.MethodPost, "upstream-1", `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"s":"echo__x"}}}`},
		{http.MethodDelete, "upstream-1", ""},
	}
	mu.Lock()
	defer mu.Unlock()
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("upstream requests mismatch (-want +got):\n%s", diff)
	}
}

// TestReadConfig reads the upstream from configs shaped like the bench's
// (writeEchoConfig): an HTTP one, and a stdio one with a quoted command
// and a flow-map env.
func TestReadConfig(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, cfg string
		want      upstream
		err       bool
	}{
		{
			name: "HTTP",
			cfg:  "listen: 127.0.0.1:0\nadmin:\n  pprof: true\nupstreams:\n  echo:\n    transport: streamable-http\n    url: http://127.0.0.1:9/mcp\n",
			want: upstream{transport: "streamable-http", url: "http://127.0.0.1:9/mcp"},
		},
		{
			name: "stdio",
			cfg:  "listen: 127.0.0.1:0\nupstreams:\n  echo:\n    transport: stdio\n    command: \"/path with space/bench\"\n    env: {CREDGATE_BENCH_STDIO: \"1\", B: x}\n",
			want: upstream{transport: "stdio", command: "/path with space/bench", env: map[string]string{"CREDGATE_BENCH_STDIO": "1", "B": "x"}},
		},
		{name: "stdio without command", cfg: "upstreams:\n  echo:\n    transport: stdio\n", err: true},
		{name: "env not a flow map", cfg: "upstreams:\n  echo:\n    transport: stdio\n    command: x\n    env:\n      A: b\n", err: true},
		{name: "env without its brace", cfg: "upstreams:\n  echo:\n    transport: stdio\n    command: x\n    env: A: b}\n", err: true},
		{name: "nothing", cfg: "listen: 127.0.0.1:0\n", err: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			path := filepath.Join(t.TempDir(), "echo.yaml")
			if err := os.WriteFile(path, []byte(tc.cfg), 0o600); err != nil {
				t.Fatal(err)
			}
			got, err := readConfig(path)
			if tc.err {
				if err == nil {
					t.Errorf("readConfig = %+v, want an error", got)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.want, got, cmp.AllowUnexported(upstream{})); diff != "" {
				t.Errorf("config mismatch (-want +got):\n%s", diff)
			}
		})
	}
}
