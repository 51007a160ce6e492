package gateway

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
	"github.com/rs/zerolog"

	"github.com/credgate/credgate/authmap"
)

// Upstream states reported in health.
const (
	StatusConnecting = "connecting"
	StatusUp         = "up"
	StatusDown       = "down"
)

// upstream owns one upstream MCP server: its session, its reconnect loop and
// the last catalog it listed.
//
// By default one session per upstream is shared by every agent. Calls are
// independent JSON-RPC requests, so sharing is safe and keeps upstream cost
// flat (one child process, one HTTP session) however many agents connect. The
// price is that a request the upstream sends back on its own (sampling,
// elicitation on 2025-11-25 sessions) carries nothing linking it to the call
// that caused it; see [upstream.caller] for how it is routed. With session:
// per_agent, each agent's calls go on a session of its own (opened on its
// first call, closed when it leaves), and the shared session only lists the
// catalog and watches the upstream's health.
type upstream struct {
	name string
	cfg  *UpstreamConfig
	gw   *Server
	log  zerolog.Logger

	client  *mcp.Client
	session atomic.Pointer[mcp.ClientSession]
	http    *httpTransport // nil for stdio
	limit   *responseLimit // upstreams.<name>.max_response_bytes
	refresh chan struct{}  // coalesced catalog refresh requests
	notes   noteCounter    // call notifications read and handled
	wire    wireFields     // what the shared session's answers say that the SDK drops (tasks.go)
	// connectFailures counts failed connection attempts, so a caller waiting
	// for a new session can stop at the first failure.
	connectFailures atomic.Int64

	// Liveness (issue 6 item 11). current is the shared session run serves,
	// kept after a call or a probe drops it from session; lostSig wakes run
	// when that happens. busy counts calls in flight on it and lastAnswer is
	// when it last answered one (unix ns): either is proof of life, so the
	// probe is skipped (see health.go).
	current    atomic.Pointer[mcp.ClientSession]
	lostSig    chan struct{}
	busy       atomic.Int64
	lastAnswer atomic.Int64
	closing    sync.WaitGroup // closes of lost sessions, which run does not wait for

	mu      sync.Mutex
	status  string
	lastErr string
	// lastFailure is why the upstream is down, classified; nil while up.
	lastFailure *authmap.Failure
	since       time.Time
	attempts    int
	// child is the stderr of the shared session's child process (stdio);
	// stderrTail is what the last one to exit wrote last, redacted.
	child      *childStderr
	stderrTail []string
	cat        upstreamCatalog
	calls      map[*inflight]struct{}
	ctx        context.Context                   // run's, which per-agent sessions live on
	agents     map[*mcp.ServerSession]*agentConn // per-agent sessions
	tried      chan struct{}                     // closed after the first connection attempt
	triedSet   bool

	// secrets are this upstream's own configured secret values: only they
	// inform its classification (a JWT's expiry); see redact.go.
	secrets []string

	// Credentials (issue 7): see credsession.go.
	defaultCred string // the credential of the upstream's own traffic; "" = none
	creds       credSessions
	// credWake cuts a reconnect backoff short: the credential the upstream
	// was refused for got a new value (see wakeForCredential).
	credWake chan struct{}
}

// upstreamCatalog is what the upstream offered at its last listing.
type upstreamCatalog struct {
	tools     []*mcp.Tool
	prompts   []*mcp.Prompt
	resources []*mcp.Resource
	templates []*mcp.ResourceTemplate
	caps      *mcp.ServerCapabilities
}

// inflight is one call forwarded to the upstream, so that what the upstream
// sends during it (logs, sampling, elicitation) reaches the calling agent.
type inflight struct {
	ctx     context.Context
	session *mcp.ServerSession
}

func newUpstream(gw *Server, name string, cfg *UpstreamConfig) *upstream {
	u := &upstream{
		name:     name,
		cfg:      cfg,
		gw:       gw,
		log:      gw.log.With().Str(fieldUpstream, name).Logger(),
		refresh:  make(chan struct{}, 1),
		lostSig:  make(chan struct{}, 1),
		credWake: make(chan struct{}, 1),
		status:   StatusConnecting,
		since:    gw.now(),
		calls:    map[*inflight]struct{}{},
		agents:   map[*mcp.ServerSession]*agentConn{},
		tried:    make(chan struct{}),
		secrets:  secretValues(cfg),
	}
	u.limit = newResponseLimit(name, cfg.maxResponseBytes(), u.log)
	if cfg.Transport != TransportStdio {
		u.http = newHTTPTransport(gw.pool, cfg.Headers, &u.notes)
		u.http.limit = u.limit
	}
	u.initCredSessions()
	if u.http != nil && len(u.cfg.boundCredentials(gw.cfg.Credentials)) > 0 {
		u.http.creds = u
	}
	u.client = u.newClient(nil)
	return u
}

// newClient builds the MCP client of a session to the upstream. agent is nil
// for the shared session; a per-agent session (upstreams.<name>.session:
// per_agent) sends the upstream's requests to its own agent only.
func (u *upstream) newClient(agent *mcp.ServerSession) *mcp.Client {
	refresh := func() { u.requestRefresh() }
	if agent != nil {
		refresh = func() {} // the catalog comes from the shared session
	}
	// The shared session declares no roots: the gateway has none of its own,
	// and one agent's roots must not leak to calls from another. A per-agent
	// session declares the agent's (see roots.go).
	roots := agentRootsCaps(agent)
	c := mcp.NewClient(&mcp.Implementation{Name: "credgate", Version: u.gw.opts.Version}, &mcp.ClientOptions{
		Logger:       u.gw.sdkLog,
		Capabilities: &mcp.ClientCapabilities{RootsV2: roots},
		CreateMessageHandler: func(ctx context.Context, req *mcp.CreateMessageRequest) (*mcp.CreateMessageResult, error) {
			return u.createMessage(agent, req)
		},
		ElicitationHandler: func(ctx context.Context, req *mcp.ElicitRequest) (*mcp.ElicitResult, error) {
			return u.elicit(agent, req)
		},
		ToolListChangedHandler:     func(context.Context, *mcp.ToolListChangedRequest) { refresh() },
		PromptListChangedHandler:   func(context.Context, *mcp.PromptListChangedRequest) { refresh() },
		ResourceListChangedHandler: func(context.Context, *mcp.ResourceListChangedRequest) { refresh() },
		ResourceUpdatedHandler:     u.resourceUpdated,
		LoggingMessageHandler: func(ctx context.Context, req *mcp.LoggingMessageRequest) {
			u.logMessage(agent, req)
		},
		ProgressNotificationHandler: func(ctx context.Context, r *mcp.ProgressNotificationClientRequest) {
			p := r.Params
			if m := u.gw.redactor.RedactKnown(p.Message); m != p.Message {
				q := *p
				q.Message = m
				p = &q
			}
			u.gw.progress.forward(ctx, p)
		},
		// Input requests of 2026-07-28 upstreams pass through to the agent, who
		// answers them; the gateway never answers on an agent's behalf.
		MultiRoundTrip: &mcp.MultiRoundTripOptions{Disabled: true},
	})
	c.AddReceivingMiddleware(u.notes.countHandled)
	if roots != nil {
		c.AddReceivingMiddleware(u.askAgentRoots(agent))
		u.gw.registerRoots(agent, u.name, c)
	}
	return c
}

// run connects, keeps the session alive and reconnects with exponential
// backoff and jitter until ctx is done.
func (u *upstream) run(ctx context.Context) {
	defer u.gw.recoverLog("upstream run", u.name)
	u.mu.Lock()
	u.ctx = ctx
	u.mu.Unlock()
	defer u.closeAgents()
	defer u.closing.Wait()
	u.waitCredentials(ctx)
	var next *handoff // a session that replaces the last one (a rotated credential)
	for attempt := 0; ctx.Err() == nil; attempt++ {
		var sessCtx context.Context
		var endSession context.CancelFunc
		var cs *mcp.ClientSession
		var err error
		connected := func(*authmap.Failure, bool) {} // the breaker's report (issue 8)
		if next != nil {
			sessCtx, endSession, cs = next.ctx, next.end, next.cs
			next = nil
		} else {
			sessCtx, endSession = context.WithCancel(ctx)
			connected = u.admitConnect()
			cs, err = u.connect(sessCtx, u.client)
		}
		if err != nil {
			u.connectFailures.Add(1)
			endSession()
			if ctx.Err() != nil {
				connected(nil, true)
				return
			}
			f := u.setDown(err)
			connected(&f, false)
			u.markTried()
			if !u.backoffSleep(ctx, u.gw.backoff(attempt)) {
				return
			}
			continue
		}
		connected(nil, false)
		child := u.childOutput()
		u.setLogLevel(ctx, cs)
		u.current.Store(cs)
		u.session.Store(cs)
		listErr := u.list(ctx, cs)
		if listErr != nil {
			u.log.Warn().Str(fieldErr, u.gw.redact(listErr.Error())).Msg("listing the upstream's catalog failed")
		}
		u.setUp(listErr)
		u.markTried()
		began := time.Now()
		probeCtx, stopProbe := context.WithCancel(sessCtx)
		probeDone := u.watch(probeCtx, cs)
		next = u.serve(ctx, cs)
		stopProbe()
		<-probeDone
		if next != nil {
			// The credential rotated: the new session takes new calls at
			// once, the old one finishes its calls in flight, then closes.
			u.handOver(cs, next, endSession, child)
			attempt = -1
			continue
		}
		lost := !u.session.CompareAndSwap(cs, nil)
		u.current.Store(nil)
		if lost {
			// A call or a probe proved the session dead and marked the
			// upstream down: reconnect now, and let the old session's
			// other calls end on their own (a hung upstream holds them
			// until their timeout).
			u.closing.Go(func() {
				defer u.gw.recoverLog("closing a lost session", u.name)
				_ = cs.Close()
				endSession()
				u.explainDown(child)
			})
		} else {
			_ = cs.Close()
			endSession()
		}
		if ctx.Err() != nil {
			return
		}
		if !lost {
			u.setDown(u.withStderr(fmt.Errorf("session ended: %w", mcp.ErrConnectionClosed), child))
		}
		// A session that ends soon after it began counts as a failed
		// attempt, so an upstream that accepts and then drops connections
		// is retried with backoff, not in a tight loop.
		if time.Since(began) >= u.gw.opts.ReconnectMax {
			attempt = -1
			continue
		}
		if !u.gw.sleep(ctx, u.gw.backoff(attempt)) {
			return
		}
	}
}

// serve waits for the session to end or be lost, refreshing the catalog on
// request. When the credential in a stdio child's environment rotates, it
// returns the session started with the new value, which replaces cs.
func (u *upstream) serve(ctx context.Context, cs *mcp.ClientSession) *handoff {
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = cs.Wait()
	}()
	for {
		select {
		case <-ctx.Done():
			_ = cs.Close()
			<-done
			return nil
		case <-done:
			return nil
		case <-u.lostSig:
			if u.session.Load() != cs {
				return nil // the signal may be a previous session's
			}
		case <-u.creds.rotate:
			if h := u.rotated(ctx); h != nil {
				return h
			}
		case <-u.refresh:
			if err := u.list(ctx, cs); err != nil && ctx.Err() == nil {
				u.log.Warn().Str(fieldErr, u.gw.redact(err.Error())).Msg("refreshing the upstream's catalog failed")
				u.setErr(err)
			}
		}
	}
}

// lost ends the shared session cs, which err proved dead (a call whose
// connection is gone, a failed probe): the upstream shows as down at once
// with err as the reason, and run reconnects. It reports whether cs is a
// shared session (a former one is already being closed by run); a per-agent
// session is left to the caller.
func (u *upstream) lost(cs *mcp.ClientSession, err error) bool {
	if cs == nil || u.current.Load() != cs {
		return u.cfg.Session != SessionPerAgent
	}
	if u.session.CompareAndSwap(cs, nil) {
		u.setDown(err)
		select {
		case u.lostSig <- struct{}{}:
		default:
		}
	}
	return true
}

// begin and end bracket a call on cs; shared reports whether cs is the
// shared session, whose liveness the calls prove (see watch).
func (u *upstream) begin(cs *mcp.ClientSession) (shared bool) {
	if cs != u.current.Load() {
		return false
	}
	u.busy.Add(1)
	return true
}

func (u *upstream) end(shared bool, err error) {
	if !shared {
		return
	}
	if err == nil || answered(err) {
		u.lastAnswer.Store(time.Now().UnixNano())
	}
	u.busy.Add(-1)
}

func (u *upstream) requestRefresh() {
	select {
	case u.refresh <- struct{}{}:
	default:
	}
}

// connect starts a session on ctx, which must live as long as the session:
// the SSE transport holds its event stream on it. The connect timeout ends
// only the handshake.
func (u *upstream) connect(ctx context.Context, client *mcp.Client) (*mcp.ClientSession, error) {
	handshake, cancel := context.WithCancelCause(ctx)
	bound := min(u.cfg.timeout(), u.gw.opts.ConnectTimeout)
	timer := time.AfterFunc(bound, func() { cancel(errTimeout) })
	defer func() {
		if !timer.Stop() {
			cancel(errTimeout) // the handshake timed out; its context is done anyway
		}
	}()
	ctx = handshake
	var t mcp.Transport
	var child *childStderr
	var credGen uint64
	closeStderr := func() {}
	switch u.cfg.Transport {
	case TransportStdio:
		// The credential the child reads from its environment (issue 7):
		// the call's (a session of its own), else the upstream's default.
		extra, gen, err := u.childCredential(ctx)
		credGen = gen
		if err != nil {
			return nil, fmt.Errorf("connect: %w", err)
		}
		// HTTP transports count notifications in the response body (see
		// httpTransport); wrapping their connection would hide the SDK's
		// own interfaces on it.
		var cmd mcp.Transport
		cmd, child, closeStderr = u.command(client == u.client, extra)
		t = countingTransport{Transport: cmd, n: &u.notes}
	case TransportSSE:
		t = &mcp.SSEClientTransport{Endpoint: u.cfg.URL, HTTPClient: u.http.client(), MaxEventSize: u.limit.backstop()}
	default:
		t = &mcp.StreamableClientTransport{Endpoint: u.cfg.URL, HTTPClient: u.http.client(), MaxEventSize: u.limit.backstop()}
	}
	t = u.watchListings(t, client)
	// A fresh counter per session: a dead session's unhandled notifications
	// must not hold up the next one's calls.
	u.notes.read.Store(u.notes.handled.Load())
	cs, err := client.Connect(ctx, t, nil)
	closeStderr() // the child, if started, has its own copy
	if err != nil {
		err = u.withStderr(err, child)
		if errors.Is(context.Cause(handshake), errTimeout) {
			err = &timeoutError{after: bound, err: err} // a hang, not a refusal
		}
		return nil, fmt.Errorf("connect: %w", err)
	}
	u.connected(client, credGen)
	return cs, nil
}

// command builds the child process of a stdio upstream. The child gets a
// minimal environment plus the upstream's env, its stderr goes to our log with
// the upstream's name, and it runs under a supervisor (see supervise.go) that
// ends its whole process group when it exits or the gateway dies, however
// the gateway dies. shared is set for the shared session's child, whose
// stderr health reports. started is called once the child has started.
func (u *upstream) command(shared bool, credEnv map[string]string) (t mcp.Transport, child *childStderr, started func()) {
	cmd := exec.Command(u.cfg.Command, u.cfg.Args...)
	cmd.Dir = u.cfg.Cwd
	env := u.cfg.Env
	if len(credEnv) > 0 {
		env = make(map[string]string, len(u.cfg.Env)+len(credEnv))
		for k, v := range u.cfg.Env {
			env[k] = v
		}
		for k, v := range credEnv {
			env[k] = v
		}
	}
	cmd.Env = childEnv(os.Environ(), env)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
	// The child's stdout is bounded line by line (max_response_bytes).
	t = limitedCommand{CommandTransport: &mcp.CommandTransport{Command: cmd, TerminateDuration: childTerminate}, lim: u.limit}
	if cmd.Err == nil { // a command not found fails at Start, as exec reports it
		if st, err := supervised(cmd, childTerminate/2, u.limit); err == nil {
			t = st
		} else {
			u.log.Warn().Str(fieldErr, err.Error()).Msg("running the child without a supervisor: its process group may outlive the gateway")
		}
	}
	child = &childStderr{done: make(chan struct{})}
	if shared {
		u.mu.Lock()
		u.child = child
		u.mu.Unlock()
	}
	// The child writes stderr straight into a pipe we own (no copying
	// goroutine of exec's, which Wait would cut off before the last lines of a
	// child dying at start are read); captureStderr ends at EOF, once the
	// child and everything it started have exited.
	pr, pw, err := os.Pipe()
	if err != nil {
		close(child.done)
		return t, child, func() {}
	}
	cmd.Stderr = pw
	go func() {
		defer close(child.done)
		u.captureStderr(pr, child, shared)
	}()
	return t, child, func() { _ = pw.Close() }
}

// childTerminate is how long a stdio child gets to exit after its stdin is
// closed, and then after SIGTERM, before it is killed.
const childTerminate = 2 * time.Second

// Bounds of what is kept of a child's stderr (issue 6 item 12): each line is
// logged up to stderrLogMax bytes; health keeps the last stderrTailLines
// lines, each up to stderrLineMax bytes and stderrTailBytes in all.
const (
	stderrLogMax    = 16 << 10
	stderrLineMax   = 512
	stderrTailLines = 20
	stderrTailBytes = 4 << 10
)

// childStderr is what one child process wrote to stderr: its last lines,
// redacted and bounded.
type childStderr struct {
	done chan struct{} // closed at EOF: the child and all it started are gone

	mu    sync.Mutex
	lines []string
	size  int
	// errLine is the last line that named an error (errorLineRE), kept
	// after it leaves lines: a Go panic or a Java exception names its
	// error first, then prints a stack trace longer than the tail. n counts
	// the lines added, errAt is n when errLine was added.
	errLine  string
	n, errAt int
}

// stderrErrLineAge is how many lines after it an error line still explains a
// child's exit: enough for a long stack trace, not an error logged long before.
const stderrErrLineAge = 500

func (c *childStderr) add(line string) {
	line = truncate(line, stderrLineMax)
	c.mu.Lock()
	defer c.mu.Unlock()
	c.n++
	if errorLineRE.MatchString(line) {
		c.errLine, c.errAt = strings.TrimSpace(line), c.n
	}
	c.lines = append(c.lines, line)
	c.size += len(line)
	for len(c.lines) > stderrTailLines || (c.size > stderrTailBytes && len(c.lines) > 1) {
		c.size -= len(c.lines[0])
		c.lines = c.lines[1:]
	}
}

func (c *childStderr) tail() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.lines)
}

// useful returns the line that best says why the child failed: usefulLine of
// its tail, unless an error line scrolled out of the tail shortly before (a
// stack trace followed it) and the tail names none.
func (c *childStderr) useful() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, l := range c.lines {
		if errorLineRE.MatchString(l) {
			return usefulLine(c.lines)
		}
	}
	if c.errLine != "" && c.n-c.errAt < stderrErrLineAge {
		return c.errLine
	}
	return usefulLine(c.lines)
}

// wait waits for the child's stderr to end, for at most d: a child that died
// said why there, and its last lines may still be in the pipe.
func (c *childStderr) wait(d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-c.done:
	case <-t.C:
	}
}

func (u *upstream) captureStderr(r io.ReadCloser, c *childStderr, shared bool) {
	defer u.gw.recoverLog("stderr capture", u.name)
	defer r.Close()
	readLines(r, stderrLogMax, func(line string) {
		if strings.TrimSpace(line) == "" {
			return
		}
		line = u.gw.redact(line)
		c.add(line)
		u.log.Info().Str(fieldStream, "stderr").Msg(line)
	})
	if shared {
		// The child is gone: what it wrote last is what health shows while
		// the upstream is down.
		u.mu.Lock()
		u.stderrTail = c.tail()
		u.mu.Unlock()
	}
}

// readLines calls fn with each line of r, cut to max bytes (the rest of a
// longer line is dropped), so that no line, however long, stops the reading
// or holds more memory than max.
func readLines(r io.Reader, max int, fn func(string)) {
	br := bufio.NewReaderSize(r, 4096)
	var line []byte
	n := 0 // the line's length, of which line holds at most max bytes
	for {
		chunk, err := br.ReadSlice('\n')
		if err == nil {
			chunk = bytes.TrimSuffix(chunk[:len(chunk)-1], []byte("\r"))
		}
		n += len(chunk)
		if room := max - len(line); room > 0 {
			line = append(line, chunk[:min(len(chunk), room)]...)
		}
		if errors.Is(err, bufio.ErrBufferFull) {
			continue
		}
		if n > 0 {
			s := string(line)
			if n > max {
				s += "…"
			}
			fn(s)
		}
		line, n = line[:0], 0
		if err != nil {
			return
		}
	}
}

// childOutput returns the stderr of the shared session's current child (nil
// for HTTP upstreams).
func (u *upstream) childOutput() *childStderr {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.child
}

// withStderr adds to err the line of the child's stderr that best says why
// it failed (waiting a moment for it to be read), if there is one.
func (u *upstream) withStderr(err error, child *childStderr) error {
	if child == nil {
		return err
	}
	child.wait(time.Second)
	if line := child.useful(); line != "" {
		return fmt.Errorf("%w (stderr: %s)", err, line)
	}
	return err
}

// explainDown adds the child's last words to last_error after a lost session
// closed, unless the upstream has moved on since.
func (u *upstream) explainDown(child *childStderr) {
	if child == nil {
		return
	}
	child.wait(time.Second)
	line := child.useful()
	if line == "" {
		return
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.status == StatusDown && u.session.Load() == nil && !strings.Contains(u.lastErr, line) {
		u.lastErr += " (stderr: " + line + ")"
	}
}

// errorLineRE matches the line of a crash report that names the error:
// "Error: Cannot find module ...", "TypeError: ...", "panic: ...",
// "fatal error: ...", "ModuleNotFoundError: ...", "Exception in thread ...:",
// "thread 'main' panicked at ...". A line like "panic({0x1, 0x2})" in a Go
// trace does not match.
var errorLineRE = regexp.MustCompile(`(?i)^\s*(?:uncaught\s+)?(?:(?:[\w.$]*(?:error|exception)|panic|fatal(?: error)?)\b[^(]*?:|thread '[^']*' panicked at)`)

// usefulLine picks the line of a child's last stderr lines that best says
// why it failed: the last one naming an error, else the last non-blank one.
// A Node crash ends with its version ("Node.js v20.20.2") and a Python one
// with the exception, so the last line alone is not always the answer.
func usefulLine(lines []string) string {
	for i := len(lines) - 1; i >= 0; i-- {
		if errorLineRE.MatchString(lines[i]) {
			return strings.TrimSpace(lines[i])
		}
	}
	for i := len(lines) - 1; i >= 0; i-- {
		if l := strings.TrimSpace(lines[i]); l != "" {
			return l
		}
	}
	return ""
}

// childEnv keeps only the basics of the gateway's environment.
func childEnv(parent []string, extra map[string]string) []string {
	keep := map[string]bool{"PATH": true, "HOME": true, "USER": true, "LOGNAME": true, "LANG": true, "LC_ALL": true,
		"TZ": true, "TMPDIR": true, "SHELL": true, "TERM": true, "GOCACHE": true, "GOPATH": true, "GOMODCACHE": true,
		"GOFLAGS": true, "GOPROXY": true, "NODE_PATH": true, "SYSTEMROOT": true}
	var env []string
	for _, kv := range parent {
		k, _, _ := strings.Cut(kv, "=")
		if keep[k] {
			if _, override := extra[k]; !override {
				env = append(env, kv)
			}
		}
	}
	for k, v := range extra {
		env = append(env, k+"="+v)
	}
	return env
}

// list fetches the upstream's whole catalog and hands it to the gateway.
func (u *upstream) list(ctx context.Context, cs *mcp.ClientSession) error {
	ctx, cancel := context.WithTimeout(ctx, u.cfg.timeout())
	defer cancel()
	var cat upstreamCatalog
	var errs []error
	caps := cs.InitializeResult().Capabilities
	cat.caps = caps
	if caps != nil && caps.Tools != nil {
		for t, err := range cs.Tools(ctx, nil) {
			if err != nil {
				errs = append(errs, fmt.Errorf("tools/list: %w", err))
				break
			}
			if u.cfg.Tools.Allowed(t.Name) {
				cat.tools = append(cat.tools, t)
			}
		}
	}
	if caps != nil && caps.Prompts != nil {
		for p, err := range cs.Prompts(ctx, nil) {
			if err != nil {
				errs = append(errs, fmt.Errorf("prompts/list: %w", err))
				break
			}
			cat.prompts = append(cat.prompts, p)
		}
	}
	if caps != nil && caps.Resources != nil {
		for r, err := range cs.Resources(ctx, nil) {
			if err != nil {
				errs = append(errs, fmt.Errorf("resources/list: %w", err))
				break
			}
			cat.resources = append(cat.resources, r)
		}
		for r, err := range cs.ResourceTemplates(ctx, nil) {
			if err != nil {
				errs = append(errs, fmt.Errorf("resources/templates/list: %w", err))
				break
			}
			cat.templates = append(cat.templates, r)
		}
	}
	u.gw.redactCatalog(&cat)
	u.mu.Lock()
	u.cat = cat
	u.mu.Unlock()
	u.gw.catalog.rebuild()
	return errors.Join(errs...)
}

func (u *upstream) catalog() upstreamCatalog {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.cat
}

// setUp records a live session; listErr is a failure to list its catalog,
// which leaves the upstream up (its calls may work) but is reported.
func (u *upstream) setUp(listErr error) {
	u.mu.Lock()
	prev := u.status
	u.status, u.since, u.attempts, u.lastFailure, u.lastErr = StatusUp, u.gw.now(), 0, nil, ""
	if listErr != nil {
		u.lastErr = u.gw.redact(listErr.Error())
	}
	n := len(u.cat.tools)
	u.mu.Unlock()
	if prev != StatusUp {
		u.log.Info().Int("tools", n).Msg("upstream up")
		u.gw.publishUpstream(u.name, StatusUp, nil, "")
	}
}

// setDown records why the upstream is down. The cause is classified like a
// call's failure, so a credential rejected at connect time shows in health and
// in every call to the upstream as the auth_failure it is, not as an outage.
func (u *upstream) setDown(err error) authmap.Failure {
	msg := u.gw.redact(err.Error())
	f, _ := u.gw.classify(u, err)
	u.mu.Lock()
	prev := u.status
	if prev != StatusDown {
		u.since = u.gw.now()
	}
	u.status, u.lastErr, u.lastFailure = StatusDown, msg, &f
	u.attempts++
	attempts := u.attempts
	u.mu.Unlock()
	ev := u.log.Debug()
	if prev != StatusDown {
		ev = u.log.Warn()
	}
	ev = ev.Str(fieldErr, msg).Int(fieldAttempt, attempts).Str("type", string(f.Type))
	if f.IsAuth() {
		ev = ev.Str(fieldSubtype, string(f.Subtype)).Str("credential", f.Credential)
	}
	ev.Msg("upstream down")
	if prev != StatusDown {
		u.gw.publishUpstream(u.name, StatusDown, &f, msg)
	}
	return f
}

func (u *upstream) setErr(err error) {
	u.mu.Lock()
	u.lastErr = u.gw.redact(err.Error())
	u.mu.Unlock()
}

func (u *upstream) markTried() {
	u.mu.Lock()
	defer u.mu.Unlock()
	if !u.triedSet {
		u.triedSet = true
		close(u.tried)
	}
}

// track registers a call in flight; the returned func ends it.
func (u *upstream) track(ctx context.Context, ss *mcp.ServerSession) func() {
	c := &inflight{ctx: ctx, session: ss}
	u.mu.Lock()
	u.calls[c] = struct{}{}
	u.mu.Unlock()
	return func() {
		u.mu.Lock()
		delete(u.calls, c)
		u.mu.Unlock()
	}
}

// caller returns the call that a server-to-client request from the upstream
// belongs to. A 2025-11-25 upstream sends such requests with no link to the
// call that caused them. On a per-agent session (agent non-nil) they belong
// to that agent's call. On the shared session the gateway can only route them
// when every call in flight on this upstream comes from one agent session;
// otherwise it refuses rather than risk asking the wrong agent.
func (u *upstream) caller(agent *mcp.ServerSession) (*inflight, error) {
	u.mu.Lock()
	defer u.mu.Unlock()
	var found *inflight
	for c := range u.calls {
		if agent != nil && c.session != agent {
			continue
		}
		if found != nil && found.session != c.session {
			return nil, fmt.Errorf("credgate: upstream %q sent a request while calls from several agents were in flight on its shared session; it cannot be routed to one of them (set upstreams.%s.session: per_agent)", u.name, u.name)
		}
		found = c
	}
	if found == nil {
		return nil, fmt.Errorf("credgate: upstream %q sent a request outside any call; there is no agent to ask", u.name)
	}
	return found, nil
}

// callers returns the calls in flight (of agent, if non-nil), for
// notifications that go to all of them.
func (u *upstream) callers(agent *mcp.ServerSession) []*inflight {
	u.mu.Lock()
	defer u.mu.Unlock()
	out := make([]*inflight, 0, len(u.calls))
	for c := range u.calls {
		if agent == nil || c.session == agent {
			out = append(out, c)
		}
	}
	return out
}

func (u *upstream) elicit(agent *mcp.ServerSession, req *mcp.ElicitRequest) (*mcp.ElicitResult, error) {
	c, err := u.caller(agent)
	if err != nil {
		return nil, err
	}
	if caps := clientCaps(c.session); caps == nil || caps.Elicitation == nil {
		return nil, fmt.Errorf("credgate: the agent calling upstream %q does not support elicitation", u.name)
	}
	return c.session.Elicit(c.ctx, req.Params)
}

func (u *upstream) createMessage(agent *mcp.ServerSession, req *mcp.CreateMessageRequest) (*mcp.CreateMessageResult, error) {
	c, err := u.caller(agent)
	if err != nil {
		return nil, err
	}
	if caps := clientCaps(c.session); caps == nil || caps.Sampling == nil {
		return nil, fmt.Errorf("credgate: the agent calling upstream %q does not support sampling", u.name)
	}
	return c.session.CreateMessage(c.ctx, req.Params)
}

func clientCaps(ss *mcp.ServerSession) *mcp.ClientCapabilities {
	if p := ss.InitializeParams(); p != nil {
		return p.Capabilities
	}
	return nil
}

// logMessage passes a log message sent during calls to the agents making them.
func (u *upstream) logMessage(agent *mcp.ServerSession, req *mcp.LoggingMessageRequest) {
	if u.gw.hasSecrets() {
		p := *req.Params
		p.Data = u.gw.redactValue(p.Data)
		req = &mcp.LoggingMessageRequest{Session: req.Session, Params: &p}
	}
	for _, c := range u.callers(agent) {
		_ = c.session.Log(c.ctx, req.Params)
	}
}

func (u *upstream) resourceUpdated(ctx context.Context, req *mcp.ResourceUpdatedNotificationRequest) {
	u.gw.catalog.resourceUpdated(ctx, u.name, req.Params)
}

// backoff returns the wait before reconnect attempt n (0-based): exponential
// from Options.ReconnectMin to Options.ReconnectMax, with full jitter in the
// upper half so that upstreams failing together do not retry together.
func (g *Server) backoff(n int) time.Duration {
	d := g.opts.ReconnectMin
	for i := 0; i < n && d < g.opts.ReconnectMax; i++ {
		d *= 2
	}
	d = min(d, g.opts.ReconnectMax)
	return d/2 + rand.N(d/2+1)
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

// setLogLevel asks a 2025-11-25 upstream for all its log messages: the SDK
// sends none until a level is set, and each agent's own level filters them on
// the way out. 2026-07-28 sessions carry the level per request instead.
func (u *upstream) setLogLevel(ctx context.Context, cs *mcp.ClientSession) {
	res := cs.InitializeResult()
	if res == nil || res.Capabilities == nil || res.Capabilities.Logging == nil || newProtocol(cs) {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, u.cfg.timeout())
	defer cancel()
	if err := cs.SetLoggingLevel(ctx, &mcp.SetLoggingLevelParams{Level: "debug"}); err != nil {
		u.log.Debug().Str(fieldErr, u.gw.redact(err.Error())).Msg("setting the upstream's log level failed")
	}
}

// awaitSession waits, for at most the connect timeout, for a session other
// than old, and returns it (nil if none came).
func (u *upstream) awaitSession(ctx context.Context, ss *mcp.ServerSession, old *mcp.ClientSession) *mcp.ClientSession {
	ctx, cancel := context.WithTimeout(ctx, min(u.cfg.timeout(), u.gw.opts.ConnectTimeout))
	defer cancel()
	if u.cfg.Session == SessionPerAgent && ss != nil {
		if cs, err := u.sessionFor(ctx, ss); err == nil && cs != old {
			return cs
		}
		return nil
	}
	failures := u.connectFailures.Load()
	t := time.NewTicker(10 * time.Millisecond)
	defer t.Stop()
	for {
		if cs := u.session.Load(); cs != nil && cs != old {
			return cs
		}
		if u.connectFailures.Load() != failures {
			return nil // the upstream is down, not restarting
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// agentConn is one agent's own session to the upstream (session: per_agent).
type agentConn struct {
	ready chan struct{} // closed once cs or err is set
	cs    *mcp.ClientSession
	err   error
}

// agentLimitError is returned for a call that would open one more agent
// session on a per_agent upstream that has max_agent_sessions open.
type agentLimitError struct {
	upstream string
	max      int
}

func (e *agentLimitError) Error() string {
	return fmt.Sprintf("upstream %q has reached upstreams.%s.max_agent_sessions (%d agent sessions); retry when another agent's session ends", e.upstream, e.upstream, e.max)
}

// sessionFor returns the session that carries agent ss's requests: the shared
// one, or with session: per_agent the agent's own, opened on first use. An
// upstream that is down fails fast either way.
func (u *upstream) sessionFor(ctx context.Context, ss *mcp.ServerSession) (*mcp.ClientSession, error) {
	shared := u.session.Load()
	if shared == nil {
		return nil, u.unavailable()
	}
	if u.cfg.Session != SessionPerAgent || ss == nil {
		return shared, nil
	}
	u.mu.Lock()
	a, ok := u.agents[ss]
	runCtx := u.ctx
	if !ok {
		if limit := u.cfg.maxAgentSessions(); len(u.agents) >= limit {
			u.mu.Unlock()
			return nil, &agentLimitError{upstream: u.name, max: limit}
		}
		a = &agentConn{ready: make(chan struct{})}
		u.agents[ss] = a
	}
	u.mu.Unlock()
	if !ok {
		go u.openAgent(runCtx, ss, a)
	}
	select {
	case <-a.ready:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	if a.err != nil {
		return nil, a.err
	}
	return a.cs, nil
}

// openAgent connects an agent's own session and closes it when either side
// ends. The agent's side ends when it leaves (DELETE), when its connection
// breaks, and when it has been idle for session_idle_timeout (the SDK closes
// the session then), so an abandoned agent does not keep a child process.
func (u *upstream) openAgent(ctx context.Context, ss *mcp.ServerSession, a *agentConn) {
	defer u.gw.recoverLog("per-agent session", u.name)
	a.cs, a.err = u.connect(ctx, u.newClient(ss))
	if a.err != nil {
		u.forgetAgent(ss, a)
		close(a.ready)
		return
	}
	u.setLogLevel(ctx, a.cs)
	close(a.ready)
	agentGone := make(chan struct{})
	go func() {
		_ = ss.Wait()
		close(agentGone)
	}()
	sessionGone := make(chan struct{})
	go func() {
		_ = a.cs.Wait()
		close(sessionGone)
	}()
	select {
	case <-agentGone:
	case <-sessionGone:
	case <-ctx.Done():
	}
	u.forgetAgent(ss, a)
	_ = a.cs.Close()
}

// forgetAgent removes a's session from the pool, if it is still there, so
// that the agent's next call opens a new one.
func (u *upstream) forgetAgent(ss *mcp.ServerSession, a *agentConn) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.agents[ss] == a {
		delete(u.agents, ss)
	}
}

// drop ends an agent's own session that proved dead, so that the agent's
// next call opens a new one. A shared session is not dropped but lost (see
// lost), which also marks the upstream down and makes run reconnect.
func (u *upstream) drop(ss *mcp.ServerSession, cs *mcp.ClientSession) {
	u.mu.Lock()
	a := u.agents[ss]
	if a != nil && a.cs == cs {
		delete(u.agents, ss)
	}
	u.mu.Unlock()
	_ = cs.Close()
}

// closeAgents ends every per-agent session (at shutdown).
func (u *upstream) closeAgents() {
	u.mu.Lock()
	agents := u.agents
	u.agents = map[*mcp.ServerSession]*agentConn{}
	u.mu.Unlock()
	for _, a := range agents {
		<-a.ready
		if a.cs != nil {
			_ = a.cs.Close()
		}
	}
}
