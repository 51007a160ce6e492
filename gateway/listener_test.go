package gateway

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"
)

// pipeListener is an in-memory listener, so an HTTP server can run in a
// synctest bubble. Dialled connections wait in a backlog until accepted.
type pipeListener struct {
	backlog  chan net.Conn
	done     chan struct{}
	once     sync.Once
	accepted atomic.Int64
}

func newPipeListener() *pipeListener {
	return &pipeListener{backlog: make(chan net.Conn, 16), done: make(chan struct{})}
}

func (l *pipeListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.backlog:
		l.accepted.Add(1)
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *pipeListener) Close() error {
	l.once.Do(func() { close(l.done) })
	return nil
}

func (l *pipeListener) Addr() net.Addr { return pipeAddr{} }

// dial returns the client end of a new connection.
func (l *pipeListener) dial() net.Conn {
	client, server := net.Pipe()
	l.backlog <- server
	return client
}

type pipeAddr struct{}

func (pipeAddr) Network() string { return "pipe" }
func (pipeAddr) String() string  { return "pipe" }

// TestSlowClientsAreBounded is the regression test for issue 6 item 8:
// clients sending a request body at one byte a second are cut off by the read
// timeout instead of holding their connections forever, connections beyond
// max_connections wait (in the backlog) instead of being served, and a
// kept-alive connection left idle is closed.
func TestSlowClientsAreBounded(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		cfg := &Config{MaxConnections: 2}
		cfg.Normalize()
		g, err := New(cfg, nil)
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(t.Context())
		l := newPipeListener()
		served := make(chan error, 1)
		go func() { served <- g.Serve(ctx, l) }()

		// Three clients trickle a body the server would accept if it ever
		// arrived. Sleeping is the passing of (fake) time here, one byte a
		// second, not a wait for something.
		start := time.Now()
		cutOff := make([]time.Duration, 3)
		var wg sync.WaitGroup
		for i := range cutOff {
			c := l.dial()
			wg.Go(func() { _, _ = io.Copy(io.Discard, c) }) // the server's answer, if any
			wg.Go(func() {
				defer c.Close()
				_, err := io.WriteString(c, "POST /mcp HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"+
					"Accept: application/json, text/event-stream\r\nContent-Length: 1000\r\n\r\n")
				for n := 0; err == nil && n < 1000; n++ {
					_, err = c.Write([]byte(" "))
					time.Sleep(time.Second)
				}
				cutOff[i] = time.Since(start)
			})
		}

		time.Sleep(10 * time.Second)
		synctest.Wait()
		if n := l.accepted.Load(); n != 2 {
			t.Errorf("%d connections accepted with max_connections 2, want 2 (the third waits)", n)
		}
		wg.Wait()
		// The first two hold the server for the read timeout; the third is
		// served when one of them is cut off, and is cut off in its turn.
		for i, d := range cutOff {
			if limit := time.Duration(i/2+1)*httpReadTimeout + 2*time.Second; d > limit {
				t.Errorf("slow client %d cut off after %s, want within %s", i, d, limit)
			}
		}

		// The server still serves, and closes a kept-alive connection left
		// idle.
		c := l.dial()
		defer c.Close()
		if _, err := io.WriteString(c, "GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n"); err != nil {
			t.Fatal(err)
		}
		br := bufio.NewReader(c)
		resp, err := http.ReadResponse(br, nil)
		if err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("GET /healthz = %v, %v", resp, err)
		}
		if b, _ := io.ReadAll(resp.Body); strings.TrimSpace(string(b)) != "ok" {
			t.Errorf("GET /healthz body %q", b)
		}
		idleSince := time.Now()
		_ = c.SetReadDeadline(idleSince.Add(2 * httpIdleTimeout)) // a bound, should the server never close it
		if _, err := br.ReadByte(); err != io.EOF {
			t.Errorf("idle connection: read %v, want EOF", err)
		}
		if d := time.Since(idleSince); d < httpIdleTimeout || d > httpIdleTimeout+time.Second {
			t.Errorf("idle connection closed after %s, want %s", d, httpIdleTimeout)
		}

		cancel()
		if err := <-served; err != nil {
			t.Errorf("Serve: %v", err)
		}
		_ = g.Close()
	})
}
