package gateway

import (
	"bufio"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"
)

// syncPool is the fast path's HTTP/1.1 client for plain-HTTP upstreams
// (issue 12). net/http's Transport writes a request from a goroutine of its
// own and reads the answer in another, each handing over to the caller:
// two thread wake-ups per call, which on a small machine cost more than
// the gateway's own work. Here the calling goroutine writes the request
// and reads the answer itself on a pooled keep-alive connection; the
// parsing is net/http's (Request.Write, ReadResponse). Anything it does not
// handle goes to the Transport: https, a proxy from the environment, a
// request without a body to resend.
//
// A pooled connection is checked before reuse (closedByPeer): one the
// upstream closed while it sat idle is dropped, as the Transport's reading
// goroutine drops it. A request that could not be written is sent once more
// on a new connection; one that was written is never sent again (the
// upstream may have run it), as the Transport does for a POST. A connection
// is reused only once its answer was read to the end.
type syncPool struct {
	fallback http.RoundTripper
	dialer   net.Dialer

	mu   sync.Mutex
	idle map[string][]*syncConn // by host:port, most recent last
}

// Bounds of the pool.
const (
	syncMaxIdlePerHost = 256
	syncIdleTimeout    = 60 * time.Second
)

type syncConn struct {
	net.Conn
	addr     string // the pool's key
	br       *bufio.Reader
	bw       *bufio.Writer
	lastUsed time.Time
	headLeft int         // what the head being read may still take; -1: no head is read
	guard    *drainGuard // of the exchange in progress, if its caller set one
}

func newSyncPool(fallback http.RoundTripper) *syncPool {
	return &syncPool{
		fallback: fallback,
		dialer:   net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second},
		idle:     map[string][]*syncConn{},
	}
}

// RoundTrip implements http.RoundTripper.
func (p *syncPool) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.URL.Scheme != "http" || req.GetBody == nil {
		return p.fallback.RoundTrip(req)
	}
	if proxy, err := http.ProxyFromEnvironment(req); err != nil || proxy != nil {
		return p.fallback.RoundTrip(req)
	}
	addr := req.URL.Host
	if req.URL.Port() == "" {
		addr = net.JoinHostPort(req.URL.Hostname(), "80")
	}
	for attempt := 0; ; attempt++ {
		c, reused, err := p.get(req.Context(), addr)
		if err != nil {
			if _, ok := err.(*net.OpError); ok {
				return nil, err // the dialer's own, already saying "dial tcp"
			}
			return nil, &net.OpError{Op: "dial", Net: "tcp", Err: err}
		}
		resp, err, unsent := p.send(c, req)
		if err == nil {
			return resp, nil
		}
		_ = c.Close()
		if !reused || !unsent || attempt > 0 || req.Context().Err() != nil {
			return nil, err
		}
		// The request never left on a connection the upstream had closed:
		// send it on a new one.
		body, gerr := req.GetBody()
		if gerr != nil {
			return nil, err
		}
		r2 := *req
		r2.Body = body
		req = &r2
	}
}

// send writes req on c and reads the answer's head. unsent reports that
// the failure came before the request was written whole: the upstream
// cannot have run it.
func (p *syncPool) send(c *syncConn, req *http.Request) (resp *http.Response, err error, unsent bool) {
	// Cancellation and deadlines end the blocking reads and writes.
	stop := context.AfterFunc(req.Context(), func() { _ = c.SetDeadline(time.Unix(1, 0)) })
	if err := req.Write(c.bw); err != nil {
		stop()
		return nil, p.ctxErr(req, err), true
	}
	if err := c.bw.Flush(); err != nil {
		stop()
		return nil, p.ctxErr(req, err), true
	}
	// The head is bounded, 1xx heads included, as the Transport bounds it
	// (MaxResponseHeaderBytes): ReadResponse alone would keep an endless
	// header line in memory until the call's timeout.
	c.headLeft = syncMaxHeadBytes
	defer func() { c.headLeft = -1 }()
	if _, err := c.br.Peek(1); err != nil {
		stop()
		return nil, p.ctxErr(req, err), false
	}
	for {
		resp, err = http.ReadResponse(c.br, req)
		if err != nil {
			stop()
			if c.headLeft == 0 {
				err = fmt.Errorf("upstream response headers exceeded %d bytes; aborted", syncMaxHeadBytes)
			}
			return nil, p.ctxErr(req, err), false
		}
		// An informational answer (100 Continue, 103 Early Hints) comes
		// before the answer, on the same connection: skipped, as the
		// Transport skips it. 101 is final.
		if resp.StatusCode < 100 || resp.StatusCode > 199 || resp.StatusCode == http.StatusSwitchingProtocols {
			break
		}
	}
	// After 101 the connection speaks another protocol: never reused.
	reuse := !resp.Close && !req.Close && resp.StatusCode >= 200
	resp.Body = &syncBody{ReadCloser: resp.Body, pool: p, conn: c, stop: stop, reuse: reuse}
	if g, ok := req.Context().Value(drainGuardKey{}).(*drainGuard); ok {
		g.lazy, c.guard = true, g
	}
	if req.Header.Get("Accept-Encoding") == "" && strings.EqualFold(resp.Header.Get("Content-Encoding"), "gzip") {
		// The Transport asks for gzip and decodes it; this client does not
		// ask, but an upstream that compresses all the same is read as on
		// the SDK's path.
		resp.Body = &syncGzipBody{body: resp.Body}
		resp.Header.Del("Content-Encoding")
		resp.Header.Del("Content-Length")
		resp.ContentLength = -1
		resp.Uncompressed = true
	}
	return resp, nil, false
}

// syncGzipBody is a gzip answer's body, decompressed as it is read.
type syncGzipBody struct {
	body io.ReadCloser // the connection's (syncBody)
	zr   *gzip.Reader
	err  error
}

func (b *syncGzipBody) Read(p []byte) (int, error) {
	if b.zr == nil {
		if b.err == nil {
			b.zr, b.err = gzip.NewReader(b.body)
		}
		if b.err != nil {
			return 0, b.err
		}
	}
	return b.zr.Read(p)
}

func (b *syncGzipBody) Close() error { return b.body.Close() }

// syncMaxHeadBytes bounds the head of an answer, as the Transport's
// default MaxResponseHeaderBytes does.
const syncMaxHeadBytes = 10 << 20

// Read reads from the connection, at most headLeft bytes while a head is
// read (headLeft >= 0).
func (c *syncConn) Read(p []byte) (int, error) {
	if c.headLeft == 0 {
		return 0, errSyncHeadTooLarge
	}
	if c.headLeft > 0 && len(p) > c.headLeft {
		p = p[:c.headLeft]
	}
	if g := c.guard; g != nil && g.arm != nil {
		// A read of the stream's end that may wait: bounded from now.
		g.arm()
		g.arm = nil
	}
	n, err := c.Conn.Read(p)
	if c.headLeft > 0 {
		c.headLeft -= n
	}
	return n, err
}

var errSyncHeadTooLarge = errors.New("response head too large")

// ctxErr returns the context's error when it ended the exchange.
func (p *syncPool) ctxErr(req *http.Request, err error) error {
	if cerr := req.Context().Err(); cerr != nil {
		return cerr
	}
	return err
}

// get returns an idle connection to addr, or a new one.
func (p *syncPool) get(ctx context.Context, addr string) (*syncConn, bool, error) {
	now := time.Now()
	p.mu.Lock()
	for {
		list := p.idle[addr]
		if len(list) == 0 {
			break
		}
		c := list[len(list)-1]
		p.idle[addr] = list[:len(list)-1]
		if now.Sub(c.lastUsed) < syncIdleTimeout && c.br.Buffered() == 0 && !closedByPeer(c.Conn) {
			p.mu.Unlock()
			return c, true, nil
		}
		_ = c.Close()
	}
	p.mu.Unlock()
	conn, err := p.dialer.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, false, err
	}
	c := &syncConn{Conn: conn, addr: addr, bw: bufio.NewWriterSize(conn, 4<<10), headLeft: -1}
	c.br = bufio.NewReaderSize(c, 4<<10)
	return c, false, nil
}

// put returns c to the pool.
func (p *syncPool) put(c *syncConn) {
	// No deadline is left to clear: the one cancellation sets (send) ends
	// the exchange with the connection closed, never here.
	addr := c.addr
	c.lastUsed = time.Now()
	p.mu.Lock()
	defer p.mu.Unlock()
	list := p.idle[addr]
	if len(list) >= syncMaxIdlePerHost {
		_ = c.Close()
		return
	}
	// The oldest idle connections are closed as the newest come back.
	for len(list) > 0 && c.lastUsed.Sub(list[0].lastUsed) >= syncIdleTimeout {
		_ = list[0].Close()
		list = list[1:]
	}
	p.idle[addr] = append(list, c)
}

// closeIdle closes every idle connection.
func (p *syncPool) closeIdle() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for addr, list := range p.idle {
		for _, c := range list {
			_ = c.Close()
		}
		delete(p.idle, addr)
	}
}

// syncBody is an answer's body: read to its end, its connection goes back
// to the pool; closed before, the connection is closed.
type syncBody struct {
	io.ReadCloser
	pool  *syncPool
	conn  *syncConn
	stop  func() bool
	reuse bool
	done  bool
}

func (b *syncBody) Read(p []byte) (int, error) {
	if b.done {
		return 0, io.EOF
	}
	n, err := b.ReadCloser.Read(p)
	if errors.Is(err, io.EOF) {
		b.finish(true)
	} else if err != nil {
		b.finish(false)
	}
	return n, err
}

func (b *syncBody) Close() error {
	if !b.done {
		b.finish(false)
	}
	return nil
}

func (b *syncBody) finish(complete bool) {
	b.done = true
	b.conn.guard = nil
	canceled := !b.stop()
	if complete && b.reuse && !canceled {
		b.pool.put(b.conn)
		return
	}
	_ = b.conn.Close()
}
