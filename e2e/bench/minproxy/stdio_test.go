package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// testStdioEnv, set to "1", makes the test binary a go-sdk stdio echo
// server, as the bench binary is one for a stdio variant.
const testStdioEnv = "MINPROXY_TEST_STDIO"

func TestMain(m *testing.M) {
	if os.Getenv(testStdioEnv) == "1" {
		os.Exit(serveTestEcho())
	}
	os.Exit(m.Run())
}

// serveTestEcho serves one tool, echo, on stdin/stdout. A text starting
// with "barrier" is answered only once two such calls are in the server at
// the same time, so a test can see two requests in flight at once.
func serveTestEcho() int {
	var (
		mu      sync.Mutex
		arrived int
		both    = make(chan struct{})
	)
	s := mcp.NewServer(&mcp.Implementation{Name: "test-echo", Version: "1"}, nil)
	type in struct {
		Text string `json:"text"`
	}
	mcp.AddTool(s, &mcp.Tool{Name: "echo"}, func(ctx context.Context, _ *mcp.CallToolRequest, args in) (*mcp.CallToolResult, any, error) {
		if strings.HasPrefix(args.Text, "barrier") {
			mu.Lock()
			if arrived++; arrived == 2 {
				close(both)
			}
			mu.Unlock()
			select {
			case <-both:
			case <-time.After(20 * time.Second):
				return nil, nil, errors.New("barrier: the second call never came")
			}
		}
		return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: args.Text}}}, nil, nil
	})
	if err := s.Run(context.Background(), &mcp.StdioTransport{}); err != nil && !errors.Is(err, io.EOF) {
		fmt.Fprintln(os.Stderr, "test echo:", err)
		return 1
	}
	return 0
}

// startTestStdio starts the proxy in front of this test binary as a stdio
// echo server, serving over httptest.
func startTestStdio(t *testing.T) (*stdioProxy, *httptest.Server) {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	p, err := startStdio(exe, map[string]string{testStdioEnv: "1"}, os.Stderr)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(http.HandlerFunc(p.serve))
	t.Cleanup(func() {
		srv.Close()
		if err := p.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
	})
	return p, srv
}

// TestStdioProxy drives the proxy over raw HTTP against a real child: two
// agent sessions initialize with the same id and get their own session ids
// and the child's one initialize result under that id; then both call
// echo__echo with the same request id while both calls are in the child at
// once (the barrier), and each gets its own text back under its own id.
// GET is 405, DELETE ends a session, and unknown sessions are refused.
func TestStdioProxy(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	_, srv := startTestStdio(t)

	do := func(method, session, body string) (*http.Response, string) {
		t.Helper()
		req, err := http.NewRequestWithContext(ctx, method, srv.URL, strings.NewReader(body))
		if err != nil {
			t.Error(err)
			return nil, ""
		}
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Accept", "application/json, text/event-stream")
		if session != "" {
			req.Header.Set(sessionHdr, session)
		}
		resp, err := srv.Client().Do(req)
		if err != nil {
			t.Error(err)
			return nil, ""
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Error(err)
		}
		return resp, string(b)
	}
	type answer struct {
		ID     json.RawMessage `json:"id"`
		Result struct {
			ProtocolVersion string `json:"protocolVersion"`
			ServerInfo      struct {
				Name string `json:"name"`
			} `json:"serverInfo"`
			Content []struct {
				Text string `json:"text"`
			} `json:"content"`
		} `json:"result"`
		Error json.RawMessage `json:"error"`
	}
	decode := func(body string) answer {
		t.Helper()
		var a answer
		if err := json.Unmarshal([]byte(body), &a); err != nil {
			t.Errorf("answer %q: %v", body, err)
		}
		return a
	}

	var sessions []string
	for range 2 {
		resp, body := do(http.MethodPost, "", `{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}`)
		if resp == nil {
			t.FailNow()
		}
		a := decode(body)
		if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "application/json" ||
			string(a.ID) != "0" || a.Result.ProtocolVersion != childProtocol || a.Result.ServerInfo.Name != "test-echo" {
			t.Errorf("initialize: %s, %q, %s", resp.Status, resp.Header.Get("Content-Type"), body)
		}
		sessions = append(sessions, resp.Header.Get(sessionHdr))
		if resp, _ := do(http.MethodPost, sessions[len(sessions)-1], `{"jsonrpc":"2.0","method":"notifications/initialized"}`); resp == nil || resp.StatusCode != http.StatusAccepted {
			t.Errorf("notifications/initialized: %v, want 202", resp)
		}
	}
	if sessions[0] == "" || sessions[0] == sessions[1] {
		t.Fatalf("session ids %q, want two different ones", sessions)
	}

	type reply struct{ ID, Text, Status string }
	got := make([]reply, 2)
	var wg sync.WaitGroup
	for i, sid := range sessions {
		wg.Go(func() {
			text := fmt.Sprintf("barrier-%d", i)
			resp, body := do(http.MethodPost, sid, `{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"echo__echo","arguments":{"text":"`+text+`"}}}`)
			if resp == nil {
				return
			}
			a := decode(body)
			got[i] = reply{string(a.ID), "", resp.Status}
			if len(a.Result.Content) == 1 {
				got[i].Text = a.Result.Content[0].Text
			} else {
				got[i].Text = body
			}
		})
	}
	wg.Wait()
	want := []reply{{"7", "barrier-0", "200 OK"}, {"7", "barrier-1", "200 OK"}}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("concurrent calls mismatch (-want +got):\n%s", diff)
	}

	if resp, _ := do(http.MethodGet, sessions[0], ""); resp == nil || resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("GET: %v, want 405", resp)
	}
	if resp, _ := do(http.MethodDelete, sessions[0], ""); resp == nil || resp.StatusCode != http.StatusNoContent {
		t.Errorf("DELETE: %v, want 204", resp)
	}
	call := `{"jsonrpc":"2.0","id":8,"method":"tools/call","params":{"name":"echo__echo","arguments":{"text":"x"}}}`
	for _, sid := range []string{sessions[0], "not-a-session", ""} {
		if resp, _ := do(http.MethodPost, sid, call); resp == nil || resp.StatusCode != http.StatusNotFound {
			t.Errorf("session %q: %v, want 404", sid, resp)
		}
	}
	if resp, body := do(http.MethodPost, sessions[1], call); resp == nil || decode(body).Result.Content[0].Text != "x" {
		t.Errorf("the other session after the DELETE: %s", body)
	}
}

// TestStdioProxySDKClients runs two go-sdk client sessions, as the bench's
// load clients connect, calling through the proxy at the same time, each
// checking every echo is its own.
func TestStdioProxySDKClients(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	_, srv := startTestStdio(t)

	const calls = 50
	errs := make([]error, 2)
	var wg sync.WaitGroup
	for i := range errs {
		wg.Go(func() {
			c := mcp.NewClient(&mcp.Implementation{Name: "t", Version: "1"}, nil)
			cs, err := c.Connect(ctx, &mcp.StreamableClientTransport{Endpoint: srv.URL, HTTPClient: srv.Client()},
				&mcp.ClientSessionOptions{ProtocolVersion: childProtocol})
			if err != nil {
				errs[i] = err
				return
			}
			defer cs.Close()
			for n := range calls {
				text := fmt.Sprintf("s%d-c%d", i, n)
				res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "echo__echo", Arguments: map[string]any{"text": text}})
				if err != nil {
					errs[i] = err
					return
				}
				if tc, ok := res.Content[0].(*mcp.TextContent); !ok || tc.Text != text || res.IsError {
					errs[i] = fmt.Errorf("call %d: got %+v, want %q", n, res.Content[0], text)
					return
				}
			}
		})
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("session %d: %v", i, err)
		}
	}
}

// TestWithID rewrites ids on go-sdk's layout (the fast path) and on any
// other (decoded), and answerID tells the child's answers from its own
// requests.
func TestWithID(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ in, id, want string }{
		{`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"id":3}}`, `42`, `{"jsonrpc":"2.0","id":42,"method":"tools/call","params":{"id":3}}`},
		{`{"jsonrpc":"2.0","id":17,"result":{}}` + "\n", `"a"`, `{"jsonrpc":"2.0","id":"a","result":{}}` + "\n"},
		{`{"jsonrpc":"2.0","id":"x","method":"ping"}`, `5`, `{"id":5,"jsonrpc":"2.0","method":"ping"}`},
		{`{"method":"ping","id":9,"jsonrpc":"2.0"}`, `5`, `{"id":5,"jsonrpc":"2.0","method":"ping"}`},
	} {
		got, err := withID([]byte(tc.in), []byte(tc.id))
		if err != nil || string(got) != tc.want {
			t.Errorf("withID(%s, %s) = %s, %v; want %s", tc.in, tc.id, got, err, tc.want)
		}
	}
	for _, tc := range []struct {
		in string
		id int64
		ok bool
	}{
		{`{"jsonrpc":"2.0","id":12,"result":{"content":[]}}` + "\n", 12, true},
		{`{"jsonrpc":"2.0","id":13,"error":{"code":-32601,"message":"x"}}`, 13, true},
		{`{"id":14,"jsonrpc":"2.0","result":{}}`, 14, true},
		{`{"jsonrpc":"2.0","id":1,"method":"ping"}`, 0, false},
		{`{"jsonrpc":"2.0","method":"notifications/message","params":{}}`, 0, false},
		{`not json`, 0, false},
	} {
		if id, ok := answerID([]byte(tc.in)); id != tc.id || ok != tc.ok {
			t.Errorf("answerID(%s) = %d, %t; want %d, %t", tc.in, id, ok, tc.id, tc.ok)
		}
	}
}
