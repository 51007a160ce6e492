package gateway

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// countingServer is an httptest server counting the connections it accepts.
func countingServer(t *testing.T, h http.Handler) (*httptest.Server, *atomic.Int64) {
	t.Helper()
	var conns atomic.Int64
	s := httptest.NewUnstartedServer(h)
	s.Config.ConnState = func(_ net.Conn, st http.ConnState) {
		if st == http.StateNew {
			conns.Add(1)
		}
	}
	s.Start()
	t.Cleanup(s.Close)
	return s, &conns
}

func syncPost(t *testing.T, ctx context.Context, p *syncPool, url, body string) (*http.Response, error) {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	return p.RoundTrip(req)
}

// TestSyncPoolReusesConnections checks that answers read to their end (a
// JSON body with a length, a chunked SSE stream) leave their connection to
// the next call: 50 calls, one connection (issue 12: 0 new upstream
// connections per 100 calls).
func TestSyncPoolReusesConnections(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	s, conns := countingServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		if bytes.Contains(b, []byte("sse")) {
			w.Header().Set("Content-Type", "text/event-stream")
			fmt.Fprintf(w, "event: message\ndata: %s\n\n", b)
			w.(http.Flusher).Flush()
			fmt.Fprintf(w, "event: message\ndata: end\n\n")
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(b)
	}))
	p := newSyncPool(http.DefaultTransport)
	defer p.closeIdle()
	for i := range 50 {
		body := fmt.Sprintf(`{"n":%d,"kind":%q}`, i, []string{"json", "sse"}[i%2])
		resp, err := syncPost(t, ctx, p, s.URL, body)
		if err != nil {
			t.Fatalf("call %d: %v", i, err)
		}
		got, err := io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		if err != nil || !bytes.Contains(got, []byte(body)) {
			t.Fatalf("call %d: %q, %v", i, got, err)
		}
	}
	if n := conns.Load(); n != 1 {
		t.Errorf("%d connections for 50 calls; want 1", n)
	}
}

// TestSyncPoolResendsOnStaleConnection checks that a pooled connection the
// upstream closed while it sat idle costs the call nothing: the pool sees
// it closed and sends the call on a new connection, and the upstream runs
// each call once.
func TestSyncPoolResendsOnStaleConnection(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	ln := localListener(t)
	var requests atomic.Int64
	closed := make(chan struct{}, 10)
	serveEach(ln, func(c net.Conn) {
		// One answer per connection, kept alive by its headers,
		// then the connection is dropped: the next use is stale.
		defer func() {
			_ = c.Close()
			closed <- struct{}{}
		}()
		req, err := http.ReadRequest(bufio.NewReader(c))
		if err != nil {
			return
		}
		_, _ = io.Copy(io.Discard, req.Body)
		n := requests.Add(1)
		fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 1\r\n\r\n%d", n%10)
	})
	p := newSyncPool(http.DefaultTransport)
	defer p.closeIdle()
	url := "http://" + ln.Addr().String() + "/mcp"
	for i := range 3 {
		resp, err := syncPost(t, ctx, p, url, `{}`)
		if err != nil {
			t.Fatalf("call %d: %v", i, err)
		}
		_, _ = io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		<-closed // the upstream has dropped the connection the pool holds
	}
	if n := requests.Load(); n != 3 {
		t.Errorf("the upstream ran %d requests for 3 calls; want 3", n)
	}
}

// TestSyncPoolCancel checks that a call's context ends a read that waits on
// the upstream, and that its connection is not reused.
func TestSyncPoolCancel(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	release := make(chan struct{})
	s, conns := countingServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		w.WriteHeader(http.StatusOK)
		w.(http.Flusher).Flush()
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	defer close(release)
	p := newSyncPool(http.DefaultTransport)
	defer p.closeIdle()
	cctx, ccancel := context.WithCancel(ctx)
	resp, err := syncPost(t, cctx, p, s.URL, `{}`)
	if err != nil {
		t.Fatal(err)
	}
	read := make(chan error, 1)
	go func() {
		_, err := io.ReadAll(resp.Body)
		read <- err
	}()
	ccancel()
	select {
	case err := <-read:
		if err == nil {
			t.Error("the read ended without an error")
		}
	case <-ctx.Done():
		t.Fatal("cancelling the call did not end its read")
	}
	_ = resp.Body.Close()
	resp, err = syncPost(t, ctx, p, s.URL+"?second", `{}`)
	if err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close()
	if n := conns.Load(); n != 2 {
		t.Errorf("%d connections; want 2 (the cancelled call's is not reused)", n)
	}
}

// TestSyncPoolFallsBack checks that what it does not handle goes to the
// fallback transport.
func TestSyncPoolFallsBack(t *testing.T) {
	t.Parallel()
	var used atomic.Bool
	p := newSyncPool(roundTripperFunc(func(*http.Request) (*http.Response, error) {
		used.Store(true)
		return nil, errors.New("fallback")
	}))
	req, _ := http.NewRequest(http.MethodPost, "https://127.0.0.1:1/mcp", strings.NewReader("{}"))
	if _, err := p.RoundTrip(req); err == nil || !used.Load() {
		t.Errorf("https: err %v, fallback used %v; want the fallback's", err, used.Load())
	}
}

// TestSyncPoolNoResendAfterReceipt: an upstream that read a request on a
// reused connection and then dropped the connection without answering
// (it crashed, or a proxy's timeout cut a long call) may have run it: the
// tools/call must not be sent again, as net/http's Transport does not send
// a POST again once written.
func TestSyncPoolNoResendAfterReceipt(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	ln := localListener(t)
	var requests atomic.Int64
	serveEach(ln, func(c net.Conn) {
		// The first request is answered; the second is read, then
		// the connection dropped without an answer.
		defer c.Close()
		br := bufio.NewReader(c)
		for i := 0; ; i++ {
			req, err := http.ReadRequest(br)
			if err != nil {
				return
			}
			_, _ = io.Copy(io.Discard, req.Body)
			requests.Add(1)
			if i == 1 {
				return
			}
			fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 1\r\n\r\n1")
		}
	})
	for _, tc := range []struct {
		name string
		rt   http.RoundTripper
	}{{"net/http", &http.Transport{}}, {"syncPool", newSyncPool(http.DefaultTransport)}} {
		requests.Store(0)
		url := "http://" + ln.Addr().String() + "/mcp"
		for i := range 2 {
			req, _ := http.NewRequestWithContext(ctx, http.MethodPost, url, strings.NewReader(`{}`))
			resp, err := tc.rt.RoundTrip(req)
			if err == nil {
				_, _ = io.ReadAll(resp.Body)
				_ = resp.Body.Close()
			}
			if i == 1 && err == nil {
				t.Errorf("%s: the second call succeeded", tc.name)
			}
		}
		if n := requests.Load(); n != 2 {
			t.Errorf("%s: the upstream received %d requests for 2 calls; want 2", tc.name, n)
		}
	}
}

// TestSyncPoolBoundsResponseHead: an upstream that sends an endless header
// line fails the call once the head passes the Transport's bound
// (MaxResponseHeaderBytes' default, 10 MiB); ReadResponse alone kept the
// line in memory, growing, until the call's timeout.
func TestSyncPoolBoundsResponseHead(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	ln := localListener(t)
	const most = 32 << 20 // what the upstream sends at most
	written := make(chan int, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		go func() { _, _ = io.Copy(io.Discard, c) }()
		n, _ := io.WriteString(c, "HTTP/1.1 200 OK\r\nX-Endless: ")
		chunk := strings.Repeat("a", 64<<10)
		for n < most {
			m, err := io.WriteString(c, chunk)
			n += m
			if err != nil {
				break
			}
		}
		written <- n
		<-ctx.Done() // the whole line sent, the upstream waits
	}()
	p := newSyncPool(http.DefaultTransport)
	defer p.closeIdle()
	_, err := syncPost(t, ctx, p, "http://"+ln.Addr().String()+"/mcp", `{}`)
	if err == nil || !strings.Contains(err.Error(), "headers exceeded") {
		t.Errorf("err = %v; want the head's bound exceeded", err)
	}
	if n := recv(t, ctx, written, "the upstream's write"); n >= most {
		t.Errorf("the upstream wrote its whole %d-byte header line: it was read", n)
	}
}

// TestSyncPoolNoReuseAfterSwitchingProtocols: after a 101 the connection
// speaks another protocol; it is not put back for the next request.
func TestSyncPoolNoReuseAfterSwitchingProtocols(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	ln := localListener(t)
	var conns atomic.Int64
	serveEach(ln, func(c net.Conn) {
		conns.Add(1)
		defer c.Close()
		br := bufio.NewReader(c)
		for i := 0; ; i++ {
			req, err := http.ReadRequest(br)
			if err != nil {
				return
			}
			_, _ = io.Copy(io.Discard, req.Body)
			if i == 0 {
				_, _ = io.WriteString(c, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: other\r\nConnection: Upgrade\r\n\r\n")
				continue
			}
			_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
		}
	})
	p := newSyncPool(http.DefaultTransport)
	defer p.closeIdle()
	for i := range 2 {
		resp, err := syncPost(t, ctx, p, "http://"+ln.Addr().String()+"/mcp", `{}`)
		if err != nil {
			t.Fatalf("call %d: %v", i, err)
		}
		_, _ = io.ReadAll(resp.Body)
		_ = resp.Body.Close()
	}
	if n := conns.Load(); n != 2 {
		t.Errorf("%d connections for a 101 and the next call; want 2", n)
	}
}

// localListener listens on a free loopback port until the test ends.
func localListener(t *testing.T) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	return ln
}

// serveEach serves every connection ln accepts with serve, each on a
// goroutine of its own, until ln is closed.
func serveEach(ln net.Listener, serve func(net.Conn)) {
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go serve(c)
		}
	}()
}
