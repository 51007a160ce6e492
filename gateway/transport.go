package gateway

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// maxErrorBody bounds how much of a failed upstream response is kept for
// classification.
const maxErrorBody = 64 << 10

// HTTPError is an upstream HTTP response that failed at the HTTP level (401,
// 403, 429, 5xx). The SDK alone reports only the status text; the gateway keeps
// status, headers and body so the failure can be classified.
type HTTPError struct {
	Status int
	Header http.Header
	Body   []byte
}

func (e *HTTPError) Error() string {
	return fmt.Sprintf("upstream answered HTTP %d %s", e.Status, http.StatusText(e.Status))
}

// httpTransport is the RoundTripper of an HTTP upstream: it adds the
// configured headers to every request, turns failed responses into *HTTPError
// and remembers what successful responses say about the credential.
type httpTransport struct {
	base    http.RoundTripper
	sync    http.RoundTripper // the fast path's (syncpool.go); nil: base
	headers http.Header
	notes   *noteCounter
	limit   *responseLimit // bounds response bodies; nil: unbounded
	raw     http.Client    // the fast path's client (rawDo), over rawRoundTrip

	mu        sync.Mutex
	expiresAt time.Time // from github-authentication-token-expiration

	// creds sets the credential of each request (issue 7); nil: none.
	creds *upstream
	// trace carries the call's trace context in headers when tracing is on.
	trace *Server
	// host is the upstream url's host name, lower case: where the headers
	// and the credential go (trusted); "" sends them everywhere.
	host string
}

// newPool returns the connection pool shared by a gateway's HTTP upstreams.
// Enough idle connections are kept per host that concurrent agents reuse
// connections instead of opening one per call.
func newPool() *http.Transport {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.MaxIdleConns = 1024
	t.MaxIdleConnsPerHost = 256
	t.IdleConnTimeout = 90 * time.Second
	return t
}

func newHTTPTransport(base http.RoundTripper, headers map[string]string, notes *noteCounter) *httpTransport {
	h := make(http.Header, len(headers))
	for k, v := range headers {
		h.Set(k, v)
	}
	t := &httpTransport{base: base, headers: h, notes: notes}
	t.raw.Transport = roundTripperFunc(t.rawRoundTrip)
	return t
}

func (t *httpTransport) client() *http.Client { return &http.Client{Transport: t} }

// trusted reports whether a request to u may carry the upstream's
// configured headers and credential: u's host is the upstream url's or a
// subdomain of it, whatever the port. That is the rule by which
// http.Client keeps Authorization and cookies on a redirect; this
// transport adds its headers on every hop the client follows, so it keeps
// them off a redirect elsewhere itself (as curl does without
// --location-trusted). Such a hop is sent without them.
func (t *httpTransport) trusted(u *url.URL) bool {
	if t.host == "" {
		return true
	}
	h := strings.ToLower(u.Hostname())
	if h == t.host {
		return true
	}
	// An IPv6 address (or zone) is never a subdomain.
	return !strings.ContainsAny(h, ":%") && strings.HasSuffix(h, "."+t.host)
}

// RoundTrip implements http.RoundTripper.
func (t *httpTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.Method == http.MethodGet && req.Header.Get("Last-Event-ID") == "" {
		return t.standaloneStream(req)
	}
	return t.roundTrip(req, t.base, true)
}

// streamHeadersGrace is how long the SDK's client waits for the headers of
// its standalone GET stream before it is told the stream is open.
const streamHeadersGrace = 2 * time.Second

// standaloneStream sends the SDK client's standalone GET stream (2025-11-25
// and before: server-to-client messages outside calls). The client waits
// for its headers inside connect, and a proxy that holds an answer's headers
// until its first bytes, in front of a server that writes nothing until it
// has a message (the TypeScript SDK's), held connect until the server's
// first keep-alive, or past the upstream's timeout for good. Headers that
// have not come within streamHeadersGrace are taken for an open stream, as
// the TypeScript client takes it: the client gets a 200 event stream at
// once, which carries the real one's events when they come, and ends if
// the real answer turns out to be no stream (a server's 405 is immediate).
func (t *httpTransport) standaloneStream(req *http.Request) (*http.Response, error) {
	ctx, cancel := context.WithCancel(req.Context())
	type answer struct {
		resp *http.Response
		err  error
	}
	done := make(chan answer, 1)
	go func() {
		resp, err := t.roundTrip(req.WithContext(ctx), t.base, true)
		done <- answer{resp, err}
	}()
	timer := time.NewTimer(streamHeadersGrace)
	defer timer.Stop()
	select {
	case a := <-done:
		if a.err != nil {
			cancel()
			if p := connectingPhase(req.Context()); p != nil && (notSent(a.err) || authRefused(a.err)) {
				// Not sent (its credential is known dead: a peer
				// replica's finding can come between initialize and
				// this stream; or it has no value), or refused for its
				// credential (a token revoked between the two). The
				// SDK's client retries a failed GET five times, holding
				// connect for some 20 s; it takes a 405 for "no stream"
				// at once, and the connect fails with this error
				// (connect.go), typed.
				p.refuse(a.err)
				return noStream(req), nil
			}
			return nil, a.err
		}
		a.resp.Body = &cancelBody{ReadCloser: a.resp.Body, cancel: cancel}
		return a.resp, nil
	case <-timer.C:
	}
	pr, pw := io.Pipe()
	go func() {
		a := <-done
		if a.err != nil {
			pw.CloseWithError(a.err)
			return
		}
		defer a.resp.Body.Close()
		mt, _, _ := strings.Cut(a.resp.Header.Get("Content-Type"), ";")
		if a.resp.StatusCode != http.StatusOK || !strings.EqualFold(strings.TrimSpace(mt), "text/event-stream") {
			pw.Close() // no stream after all: the client's ends
			return
		}
		_, err := io.Copy(pw, a.resp.Body)
		pw.CloseWithError(err)
	}()
	return &http.Response{
		Status: "200 OK", StatusCode: http.StatusOK, Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
		Header:        http.Header{"Content-Type": {"text/event-stream"}},
		Body:          &cancelBody{ReadCloser: pr, cancel: cancel},
		ContentLength: -1,
		Request:       req,
	}, nil
}

// connectingKey marks the context of an upstream's connect (connect.go):
// its value is a *connectPhase, active until the connect returns (the
// session's later requests carry the context too).
type connectingKey struct{}

// connectPhase is one connect of an upstream's session: whether it is
// still in progress, and why its standalone GET stream was refused.
type connectPhase struct {
	active  atomic.Bool
	mu      sync.Mutex
	refused error
}

func (p *connectPhase) refuse(err error) {
	p.mu.Lock()
	if p.refused == nil {
		p.refused = err
	}
	p.mu.Unlock()
}

// end ends the phase and returns why the GET stream was refused, if it was.
func (p *connectPhase) end() error {
	p.active.Store(false)
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.refused
}

// connectingPhase returns the connect ctx belongs to while it is in
// progress, or nil.
func connectingPhase(ctx context.Context) *connectPhase {
	p, _ := ctx.Value(connectingKey{}).(*connectPhase)
	if p == nil || !p.active.Load() {
		return nil
	}
	return p
}

// authRefused reports whether err is an HTTP 401 or 403 answer.
func authRefused(err error) bool {
	var he *HTTPError
	return errors.As(err, &he) && (he.Status == http.StatusUnauthorized || he.Status == http.StatusForbidden)
}

// noStream is a 405 answer to the standalone GET stream req: no stream.
func noStream(req *http.Request) *http.Response {
	return &http.Response{
		Status: "405 Method Not Allowed", StatusCode: http.StatusMethodNotAllowed, Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
		Header: http.Header{}, Body: http.NoBody, Request: req,
	}
}

// cancelBody is a response body whose Close also cancels its request.
type cancelBody struct {
	io.ReadCloser
	cancel context.CancelFunc
}

func (b *cancelBody) Close() error {
	b.cancel()
	return b.ReadCloser.Close()
}

// rawDo sends one of the fast path's own requests (rawcall.go) with the
// outcome the SDK's client gets from its http.Client: redirects followed,
// a failed exchange reported as a *url.Error (which classify reads as the
// connection's failure, as it reads the SDK's).
//
// The client's work per request (a copy of the headers, kept for
// redirects) is skipped in the usual case: the request goes straight to
// the RoundTripper, its failure wrapped as the client wraps it. A url
// with user info (Basic auth, which the client adds) goes through the
// client. A redirect answer is handed to a client as the answer to its
// first hop, so that it follows it as it would have (303 as a GET, at
// most 10 hops, its headers' rules) without the request being sent again:
// the upstream may have run it (303 See Other).
func (t *httpTransport) rawDo(req *http.Request) (*http.Response, error) {
	if req.URL.User != nil {
		return t.raw.Do(req)
	}
	resp, err := t.rawRoundTrip(req)
	if err != nil {
		if req.Body != nil {
			_ = req.Body.Close()
		}
		return nil, &url.Error{Op: urlErrorOp(req.Method), URL: req.URL.String(), Err: err}
	}
	if !followable(resp) {
		return resp, nil
	}
	first := resp
	c := http.Client{Transport: roundTripperFunc(func(r *http.Request) (*http.Response, error) {
		if resp := first; resp != nil {
			first = nil
			return resp, nil // the answer to req, already read
		}
		return t.rawRoundTrip(r)
	})}
	return c.Do(req)
}

// followable reports whether http.Client would follow resp (a redirect
// with somewhere to go).
func followable(resp *http.Response) bool {
	switch resp.StatusCode {
	case http.StatusMovedPermanently, http.StatusFound, http.StatusSeeOther,
		http.StatusTemporaryRedirect, http.StatusPermanentRedirect:
		return resp.Header.Get("Location") != ""
	}
	return false
}

// urlErrorOp is http.Client's Op of a *url.Error: "Post" for POST.
func urlErrorOp(method string) string {
	if method == "" {
		return "Get"
	}
	return method[:1] + strings.ToLower(method[1:])
}

// roundTripperFunc is a function as an http.RoundTripper.
type roundTripperFunc func(*http.Request) (*http.Response, error)

func (f roundTripperFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// rawRoundTrip is RoundTrip for the fast path's own requests (rawcall.go),
// sent on the calling goroutine when the upstream allows (syncpool.go).
func (t *httpTransport) rawRoundTrip(req *http.Request) (*http.Response, error) {
	if t.sync != nil {
		return t.roundTrip(req, t.sync, false)
	}
	return t.roundTrip(req, t.base, false)
}

// roundTrip sends req on base. sdk is set for the SDK client's requests,
// whose JSON answers are checked before it reads them (responseLimit.bound).
func (t *httpTransport) roundTrip(req *http.Request, base http.RoundTripper, sdk bool) (*http.Response, error) {
	trusted := t.trusted(req.URL)
	cloned := len(t.headers) > 0 && trusted
	if cloned {
		req = req.Clone(req.Context())
		for k, v := range t.headers {
			req.Header[k] = v
		}
	}
	if t.trace != nil && t.trace.tracing != nil {
		if !cloned {
			req = req.Clone(req.Context())
			cloned = true
		}
		t.trace.injectTrace(req.Context(), req.Header)
	}
	if t.creds != nil && trusted {
		var err error
		if req, err = t.creds.injectCredential(req, cloned); err != nil {
			return nil, err // nothing was sent
		}
	}
	resp, err := base.RoundTrip(req)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode == http.StatusUnauthorized && t.creds != nil && trusted {
		// Hold other calls with this value at once, until this call's
		// renewal is done (issue 7; see hold).
		if cc := callCredFrom(req.Context()); cc != nil {
			t.creds.gw.suspect(cc, cc.sent())
		}
	}
	if v := resp.Header.Get("github-authentication-token-expiration"); v != "" {
		t.noteExpiry(v)
		if t.creds != nil {
			t.creds.noteCredentialExpiry(req, resp.Header)
		}
	}
	// A failed response is kept whole for classification, unless it is the
	// MCP server's own answer: a JSON-RPC error body (the SDK reads it, e.g.
	// to renegotiate the protocol version), 404 for a lost session, 405 for
	// an unsupported GET stream.
	if resp.StatusCode >= 400 && resp.StatusCode != http.StatusNotFound && resp.StatusCode != http.StatusMethodNotAllowed {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
		_ = resp.Body.Close()
		if resp.StatusCode < 500 && isJSONRPC(body) {
			resp.Body = io.NopCloser(bytes.NewReader(body))
			if resp.StatusCode == http.StatusBadRequest && req.Header.Get("Mcp-Session-Id") != "" && sessionRefusal(body) {
				// The TypeScript SDK's example servers, and the many
				// built from them, answer a session they do not know
				// (after a restart) with 400 "No valid session ID
				// provided", where the spec says 404: read as the 404 it
				// means, the session is opened anew and the call resent,
				// as for any server that restarted (found trying the
				// gateway with server-everything: the first call after a
				// restart failed, typed upstream_error, not retryable).
				resp.StatusCode, resp.Status = http.StatusNotFound, "404 Not Found"
			}
			return resp, nil
		}
		return nil, &HTTPError{Status: resp.StatusCode, Header: resp.Header, Body: body}
	}
	if t.limit != nil {
		t.limit.bound(req, resp, sdk)
	}
	if t.notes != nil && strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
		resp.Body = &sseCounter{ReadCloser: resp.Body, n: t.notes}
	}
	return resp, nil
}

// sseCounter counts the call notifications (see noteCounter) in an SSE body
// as the SDK reads it, which is before the SDK dispatches them.
type sseCounter struct {
	io.ReadCloser
	n    *noteCounter
	line []byte // the current line, until its end is read
}

func (s *sseCounter) Read(p []byte) (int, error) {
	n, err := s.ReadCloser.Read(p)
	b := p[:n]
	for len(b) > 0 {
		i := bytes.IndexByte(b, '\n')
		if i < 0 {
			s.line = append(s.line, b...)
			break
		}
		if len(s.line) > 0 {
			s.line = append(s.line, b[:i]...)
			s.count(s.line)
			s.line = s.line[:0]
		} else {
			s.count(b[:i])
		}
		b = b[i+1:]
	}
	return n, err
}

func (s *sseCounter) count(line []byte) {
	data, ok := bytes.CutPrefix(line, []byte("data:"))
	if !ok || !bytes.Contains(data, []byte(`"notifications/`)) {
		return
	}
	var msg struct {
		ID     json.RawMessage `json:"id"`
		Method string          `json:"method"`
	}
	if json.Unmarshal(data, &msg) == nil && msg.ID == nil && isCallNote(msg.Method) {
		s.n.read.Add(1)
	}
}

func (t *httpTransport) noteExpiry(v string) {
	for _, layout := range []string{"2006-01-02 15:04:05 MST", "2006-01-02 15:04:05 -0700", time.RFC3339} {
		if at, err := time.Parse(layout, v); err == nil {
			t.mu.Lock()
			t.expiresAt = at
			t.mu.Unlock()
			return
		}
	}
}

// knownExpiry returns the credential expiry the upstream reported, if any.
func (t *httpTransport) knownExpiry() time.Time {
	if t == nil {
		return time.Time{}
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.expiresAt
}

// isJSONRPC reports whether body is a JSON-RPC message (an MCP server's
// error answer) rather than a provider's or a proxy's page.
// sessionRefusal reports whether body, a JSON-RPC error answering a
// request on a session, says the session is not one the server knows.
func sessionRefusal(body []byte) bool {
	var msg struct {
		Error *struct {
			Message string `json:"message"`
		} `json:"error"`
	}
	if json.Unmarshal(bytes.TrimSpace(body), &msg) != nil || msg.Error == nil {
		return false
	}
	return sessionRefusalText.MatchString(msg.Error.Message)
}

// sessionRefusalText matches what servers answer for a session they do not
// know: the TypeScript SDK's example servers' "No valid session ID
// provided" and "Server not initialized", "Invalid or missing session ID",
// "Session not found". Not any message naming a session (a tool's
// "session_name is required").
var sessionRefusalText = regexp.MustCompile(`(?i)\b(no valid|invalid|unknown|missing|expired)\b[^.]{0,20}\bsession[ _-]?id\b|\bsession\b[^.]{0,20}\b(not found|expired|unknown|does not exist)\b|\bserver not initiali[sz]ed\b`)

func isJSONRPC(body []byte) bool {
	var msg struct {
		Version string `json:"jsonrpc"`
	}
	return json.Unmarshal(bytes.TrimSpace(body), &msg) == nil && msg.Version == "2.0"
}
