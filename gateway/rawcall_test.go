package gateway

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// lingeringUpstream serves MCP with the SDK, except that it answers a
// tools/call itself with answer(id) on an SSE stream that it then keeps
// open until the request ends or release is closed.
func lingeringUpstream(t *testing.T, answer func(id json.RawMessage) string, release <-chan struct{}) string {
	t.Helper()
	sdk := echoHandler("l", "sdk", nil)
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		var m struct {
			ID     json.RawMessage `json:"id"`
			Method string          `json:"method"`
		}
		if r.Method == http.MethodPost && json.Unmarshal(body, &m) == nil && m.Method == "tools/call" {
			w.Header().Set("Content-Type", "text/event-stream")
			w.WriteHeader(http.StatusOK)
			fmt.Fprintf(w, "event: message\ndata: %s\n\n", answer(m.ID))
			w.(http.Flusher).Flush()
			select {
			case <-r.Context().Done():
			case <-release:
			}
			return
		}
		r.Body = io.NopCloser(bytes.NewReader(body))
		sdk.ServeHTTP(w, r)
	}))
	t.Cleanup(hs.Close)
	return hs.URL + "/mcp"
}

// lingeringGateway is a gateway whose upstream l is a lingeringUpstream
// answering answer (a format of the call's id), its streams held until the
// test ends, and a context bounding the test.
func lingeringGateway(t *testing.T, answer string) (context.Context, *Server) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	t.Cleanup(cancel)
	release := make(chan struct{})
	url := lingeringUpstream(t, func(id json.RawMessage) string { return fmt.Sprintf(answer, id) }, release)
	t.Cleanup(func() { close(release) }) // before the upstream closes, which waits for its streams
	return ctx, newTestGateway(t, ctx, fmt.Sprintf("upstreams:\n  l: {url: %s, timeout: 10m}\n", url))
}

// TestRawCallLingeringStream: an upstream that keeps its answer
// stream open after the answer must not hold a call that came through the
// SDK's front (here: an agent speaking 2024-11-05, which the fast path
// does not serve) until the upstream's timeout.
func TestRawCallLingeringStream(t *testing.T) {
	t.Parallel()
	ctx, g := lingeringGateway(t, `{"jsonrpc":"2.0","id":%s,"result":{"content":[{"type":"text","text":"ok"}]}}`)
	cs := agentVersion(t, ctx, g, nil, "2024-11-05")
	cctx, ccancel := context.WithTimeout(ctx, 10*time.Second)
	defer ccancel()
	res, err := cs.CallTool(cctx, &mcp.CallToolParams{Name: "l__echo"})
	if err != nil {
		t.Fatalf("call: %v (held until the upstream ends its stream)", err)
	}
	if text(res) != "ok" {
		t.Fatalf("got %q", text(res))
	}
}

// TestRawCallLingeringStreamError: the same with a JSON-RPC error as the
// answer, on both fronts.
func TestRawCallLingeringStreamError(t *testing.T) {
	t.Parallel()
	ctx, g := lingeringGateway(t, `{"jsonrpc":"2.0","id":%s,"error":{"code":-32011,"message":"no"}}`)
	for _, v := range []string{"2024-11-05", "2025-11-25"} {
		cs := agentVersion(t, ctx, g, nil, v)
		cctx, ccancel := context.WithTimeout(ctx, 10*time.Second)
		_, err := cs.CallTool(cctx, &mcp.CallToolParams{Name: "l__echo"})
		late := cctx.Err()
		ccancel()
		if err == nil || late != nil {
			t.Errorf("%s: call: %v; want the upstream's error at once", v, err)
		}
	}
}

// TestFastPathLingeringStreamBounded: on the fast path, the end of an
// answer stream is read after the agent has its answer, no longer than
// rawDrainGrace, even though the bound is armed only when that read must
// wait: the agent's next request on the same connection is served, and
// the upstream sees its stream given up.
func TestFastPathLingeringStreamBounded(t *testing.T) {
	t.Parallel()
	ctx, g := lingeringGateway(t, `{"jsonrpc":"2.0","id":%s,"result":{"content":[{"type":"text","text":"ok"}]}}`)
	a := newRawAgent(t, ctx, g)
	for i := range 2 {
		cctx, ccancel := context.WithTimeout(ctx, 10*time.Second)
		r, b := a.post(cctx, fmt.Sprintf(`{"jsonrpc":"2.0","id":%d,"method":"tools/call","params":{"name":"l__echo","arguments":{}}}`, i+1))
		late := cctx.Err()
		ccancel()
		if late != nil || !bytes.Contains(b, []byte(`"text":"ok"`)) {
			t.Fatalf("call %d on the agent's connection: %d %s (%v); want ok at once", i+1, r.StatusCode, b, late)
		}
	}
}

// TestRawCallFollowsRedirect: the fast path's upstream request skips
// http.Client (rawDo), yet an upstream that redirects its endpoint is
// followed as the SDK's client follows it, and the tool runs once.
func TestRawCallFollowsRedirect(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	var runs atomic.Int32
	sdk := echoHandler("r", "moved", &runs)
	mux := http.NewServeMux()
	mux.Handle("/mcp", sdk)
	mux.HandleFunc("/old", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "/mcp", http.StatusTemporaryRedirect)
	})
	hs := httptest.NewServer(mux)
	t.Cleanup(hs.Close)
	g := newTestGateway(t, ctx, fmt.Sprintf("upstreams:\n  r: {url: %s/old}\n", hs.URL))
	a := newRawAgent(t, ctx, g)
	resp, body := a.post(ctx, `{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"r__echo","arguments":{}}}`)
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Fatalf("answered as %q; the fast path answers application/json", ct)
	}
	got := mustJSON(t, answer(t, resp, body))
	if !strings.Contains(got, `"moved"`) || strings.Contains(got, `"isError":true`) {
		t.Fatalf("answer %s; want the tool's text", got)
	}
	if n := runs.Load(); n != 1 {
		t.Fatalf("the tool ran %d times; want once", n)
	}
}

// TestRawCallURLUserInfo: an upstream url with user info
// (https://user:password@host/mcp, which some hosted MCP servers take in
// place of a header) authenticates the fast path's requests as it does the
// SDK's, with Basic auth, as http.Client sends it.
func TestRawCallURLUserInfo(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	sdk := echoHandler("b", "in", nil)
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if user, pw, ok := r.BasicAuth(); !ok || user != "agent" || pw != "hunter2-secret" {
			http.Error(w, "who are you", http.StatusUnauthorized)
			return
		}
		sdk.ServeHTTP(w, r)
	}))
	t.Cleanup(hs.Close)
	url := strings.Replace(hs.URL, "http://", "http://agent:hunter2-secret@", 1) + "/mcp"
	g := newTestGateway(t, ctx, fmt.Sprintf("upstreams:\n  b: {url: %q}\n", url))
	if got := callOnce(t, ctx, g, "b__echo"); !strings.Contains(got, `"text":"in"`) {
		t.Fatalf("answer %s; want the tool's text", got)
	}
}

// TestRawCallResumeFollowsRedirect: the GET that resumes an answer stream
// (Last-Event-ID) goes to the upstream's url as the POST does, and is
// redirected as it is.
func TestRawCallResumeFollowsRedirect(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	sdk := echoHandler("r", "sdk", nil)
	var callID atomic.Value // the raw call's id, as JSON
	mux := http.NewServeMux()
	mux.HandleFunc("/mcp", func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		var m struct {
			ID     json.RawMessage `json:"id"`
			Method string          `json:"method"`
		}
		switch {
		case r.Method == http.MethodPost && json.Unmarshal(body, &m) == nil && m.Method == "tools/call":
			// The stream ends before the answer (SSE polling): the rest
			// is for a GET resuming after event 1.
			callID.Store(string(m.ID))
			w.Header().Set("Content-Type", "text/event-stream")
			fmt.Fprint(w, "id: 1\nretry: 1\ndata: \n\n")
		case r.Method == http.MethodGet && r.Header.Get("Last-Event-ID") == "1":
			w.Header().Set("Content-Type", "text/event-stream")
			fmt.Fprintf(w, "id: 2\ndata: {\"jsonrpc\":\"2.0\",\"id\":%s,\"result\":{\"content\":[{\"type\":\"text\",\"text\":\"resumed\"}]}}\n\n", callID.Load())
		default:
			r.Body = io.NopCloser(bytes.NewReader(body))
			sdk.ServeHTTP(w, r)
		}
	})
	mux.HandleFunc("/old", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "/mcp", http.StatusTemporaryRedirect)
	})
	hs := httptest.NewServer(mux)
	t.Cleanup(hs.Close)
	g := newTestGateway(t, ctx, fmt.Sprintf("upstreams:\n  r: {url: %s/old}\n", hs.URL))
	if got := callOnce(t, ctx, g, "r__echo"); !strings.Contains(got, `"text":"resumed"`) {
		t.Fatalf("answer %s; want the resumed stream's", got)
	}
}

// TestRawCallSeeOtherRunsOnce: an upstream that runs a call and answers
// 303 See Other (the result is elsewhere, RFC 9110 15.4.4) gets the POST
// once; the answer is read from where it points, as http.Client does.
func TestRawCallSeeOtherRunsOnce(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	sdk := echoHandler("r", "sdk", nil)
	var runs atomic.Int32
	mux := http.NewServeMux()
	mux.HandleFunc("/mcp", func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		var m struct {
			ID     json.RawMessage `json:"id"`
			Method string          `json:"method"`
		}
		if r.Method == http.MethodPost && json.Unmarshal(body, &m) == nil && m.Method == "tools/call" {
			runs.Add(1)
			var id string
			if json.Unmarshal(m.ID, &id) != nil {
				http.Error(w, "want a string id", http.StatusBadRequest)
				return
			}
			http.Redirect(w, r, "/result/"+id, http.StatusSeeOther)
			return
		}
		r.Body = io.NopCloser(bytes.NewReader(body))
		sdk.ServeHTTP(w, r)
	})
	mux.HandleFunc("GET /result/{id}", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"jsonrpc":"2.0","id":%q,"result":{"content":[{"type":"text","text":"done"}]}}`, r.PathValue("id"))
	})
	hs := httptest.NewServer(mux)
	t.Cleanup(hs.Close)
	g := newTestGateway(t, ctx, fmt.Sprintf("upstreams:\n  r: {url: %s/mcp}\n", hs.URL))
	if got := callOnce(t, ctx, g, "r__echo"); !strings.Contains(got, `"text":"done"`) {
		t.Fatalf("answer %s; want the result the redirect points to", got)
	}
	if n := runs.Load(); n != 1 {
		t.Fatalf("the upstream got the call %d times; want once", n)
	}
}

// TestRedirectElsewhereGetsNoCredential: an upstream that redirects to
// another host does not get the upstream's credential or configured
// headers sent there, on either path (http.Client keeps Authorization on
// a redirect only to the same host or a subdomain; the transport added its
// headers back on every hop). A redirect on the same host keeps them.
func TestRedirectElsewhereGetsNoCredential(t *testing.T) {
	t.Parallel()
	const token, key = "redirect-token-0123456789abcdef", "redirect-key-0123456789abcdef"
	for _, fast := range []bool{true, false} {
		t.Run(fmt.Sprintf("fast_path=%v", fast), func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
			defer cancel()
			sdk := echoHandler("r", "here", nil)
			var mu sync.Mutex
			got := map[string]map[string]bool{} // host -> the Authorization and X-Key pairs that arrived there
			mux := http.NewServeMux()
			mux.HandleFunc("/mcp", func(w http.ResponseWriter, r *http.Request) {
				host, _, _ := net.SplitHostPort(r.Host)
				mu.Lock()
				if got[host] == nil {
					got[host] = map[string]bool{}
				}
				got[host][r.Header.Get("Authorization")+"|"+r.Header.Get("X-Key")] = true
				mu.Unlock()
				sdk.ServeHTTP(w, r)
			})
			var port string
			mux.HandleFunc("/same", func(w http.ResponseWriter, r *http.Request) {
				http.Redirect(w, r, "/mcp", http.StatusTemporaryRedirect)
			})
			mux.HandleFunc("/away", func(w http.ResponseWriter, r *http.Request) {
				http.Redirect(w, r, "http://localhost:"+port+"/mcp", http.StatusTemporaryRedirect)
			})
			hs := httptest.NewServer(mux)
			t.Cleanup(hs.Close)
			_, port, _ = net.SplitHostPort(hs.Listener.Addr().String())
			g := newTestGateway(t, ctx, fmt.Sprintf(`fast_path: %v
credentials:
  tok: {source: {value: %s}}
upstreams:
  same: {url: %s/same, credential: tok, headers: {X-Key: %s}}
  away: {url: %s/away, credential: tok, headers: {X-Key: %s}}
`, fast, token, hs.URL, key, hs.URL, key))
			a := newRawAgent(t, ctx, g)
			for _, name := range []string{"same__echo", "away__echo"} {
				resp, body := a.post(ctx, `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"`+name+`","arguments":{}}}`)
				if got := mustJSON(t, answer(t, resp, body)); !strings.Contains(got, `"here"`) {
					t.Errorf("%s: %s; want the tool's answer", name, got)
				}
			}
			mu.Lock()
			defer mu.Unlock()
			want := "Bearer " + token + "|" + key
			if len(got["127.0.0.1"]) != 1 || !got["127.0.0.1"][want] {
				t.Errorf("the upstream's own host got %v; want every request with the credential and header", got["127.0.0.1"])
			}
			if len(got["localhost"]) != 1 || !got["localhost"]["|"] {
				t.Errorf("the redirect's other host got %v; want neither the credential nor the header", got["localhost"])
			}
		})
	}
}

// echoHandler serves, over streamable HTTP, an MCP server named name whose
// tool echo answers text, counting its runs in runs if not nil.
func echoHandler(name, text string, runs *atomic.Int32) http.Handler {
	s := mcp.NewServer(&mcp.Implementation{Name: name, Version: "1"}, nil)
	s.AddTool(&mcp.Tool{Name: "echo", InputSchema: json.RawMessage(`{"type":"object"}`)}, func(ctx context.Context, req *mcp.CallToolRequest) (*mcp.CallToolResult, error) {
		if runs != nil {
			runs.Add(1)
		}
		return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: text}}}, nil
	})
	return mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return s }, nil)
}

// callOnce calls tool with no arguments through g, as a new raw agent, and
// returns the answer's JSON-RPC message.
func callOnce(t *testing.T, ctx context.Context, g *Server, tool string) string {
	t.Helper()
	resp, body := newRawAgent(t, ctx, g).post(ctx, `{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"`+tool+`","arguments":{}}}`)
	return mustJSON(t, answer(t, resp, body))
}
