package gateway

import (
	"context"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/credgate/credgate/authmap"
)

// Sessions of stdio upstreams whose children read a credential from their
// environment (issue 7).
//
// A child reads its environment once, so each credential in use gets its own
// child: the upstream's default credential the shared session's, and any
// other per-tool credential a session of its own, opened on its first call
// (like a per-agent session). When a credential rotates, its child is
// replaced gracefully: a new child is started with the new value and takes
// new calls at once, while the old one finishes its calls in flight and then
// stops (retire). Calls are counted per session for that (acquire, release),
// and a session being retired takes no new call.

// maxRetired bounds the retired sessions remembered, so that a call that
// picked one just before it was retired goes to its successor instead.
const maxRetired = 64

// credSessions is an upstream's credential-bound session state.
type credSessions struct {
	// rotate wakes serve to look at the default credential's generation.
	rotate chan struct{}
	// sharedGen is the default credential's generation the shared child
	// holds, and sharedVal its value.
	sharedGen atomic.Uint64
	sharedVal atomic.Pointer[string]
	// trying is the default credential's generation the shared child's
	// last start was given, and tried the same once that start's outcome
	// (up, or down and why) is recorded.
	trying, tried atomic.Uint64
	// counted is set for a stdio upstream with credentials: only then are
	// sessions counted and replaced.
	counted bool

	mu      sync.Mutex
	conns   map[string]*credConn // sessions of credentials other than the default, by name
	uses    map[*mcp.ClientSession]int
	idle    map[*mcp.ClientSession]chan struct{}
	retired []*mcp.ClientSession
}

// credConn is the session of one per-tool credential's child.
type credConn struct {
	opening
	gen uint64 // the credential's generation when it was opened
	end context.CancelFunc
}

// stale reports whether a new session is needed: the last one failed to
// open, or the credential changed since. A session still opening is not.
func (c *credConn) stale(gen uint64) bool {
	select {
	case <-c.ready:
		return c.err != nil || c.gen != gen
	default:
		return false
	}
}

// handoff is a session that replaces the shared one.
type handoff struct {
	ctx context.Context
	end context.CancelFunc
	cs  *mcp.ClientSession
}

func (u *upstream) initCredSessions(creds map[string]authmap.CredentialConfig) {
	u.defaultCred = u.cfg.defaultCredential(creds)
	u.creds.rotate = make(chan struct{}, 1)
	u.creds.counted = u.cfg.Transport == TransportStdio && len(u.cfg.boundCredentials(creds)) > 0
	u.creds.conns = map[string]*credConn{}
	u.creds.uses = map[*mcp.ClientSession]int{}
	u.creds.idle = map[*mcp.ClientSession]chan struct{}{}
}

// kickRotation asks serve to check whether the shared child's credential rotated.
func (u *upstream) kickRotation() {
	select {
	case u.creds.rotate <- struct{}{}:
	default:
	}
}

// childCredential returns the environment a new child gets for its
// credential: the call's (ctx carries it for a per-tool session or a probe),
// else the upstream's default; nil without one. A credential without a value
// is an error: the child is not started without it.
func (u *upstream) childCredential(ctx context.Context) (env map[string]string, gen uint64, err error) {
	name, override := u.defaultCred, ""
	if cc := callCredFrom(ctx); cc != nil {
		name, override = cc.name, cc.override
	}
	c := u.gw.credential(name)
	if c == nil {
		return nil, 0, nil
	}
	key := c.Config().Inject.Env
	if key == "" {
		return nil, 0, nil
	}
	gen = c.Generation()
	v := override
	if v == "" {
		v = c.Value()
	}
	if v == "" {
		return nil, 0, &credentialMissingError{credential: name, why: u.gw.missingFailure(name).Detail}
	}
	if override == "" {
		// A value known dead starts no child, as it is not sent over HTTP
		// (injectCredential): a child that exits on it at start was
		// restarted with it, and presented it to the provider, every few
		// seconds until it changed (found trying the gateway from outside).
		if f, dead := u.gw.deadCredential(u, name, c); dead {
			return nil, 0, &gatedError{f: f}
		}
	}
	u.gw.noteSecrets(name, c)
	if callCredFrom(ctx) == nil {
		u.noteOwnSent(v) // the shared child's: its rejection at start is the credential's (ownTrafficRejected)
	}
	return map[string]string{key: v}, gen, nil
}

// connected records what a new session holds: the default credential's
// generation of the shared child.
func (u *upstream) connected(client *mcp.Client, gen uint64, value string) {
	if client == u.client {
		u.creds.sharedGen.Store(gen)
		u.creds.sharedVal.Store(&value)
	}
}

// rotated starts the shared session's successor when the default
// credential's value changed since the shared child started; nil when it has
// not, or when the new child cannot start (the old one keeps serving).
func (u *upstream) rotated(ctx context.Context) *handoff {
	c := u.gw.credential(u.defaultCred)
	if c == nil || !u.creds.counted || c.Value() == "" || c.Generation() == u.creds.sharedGen.Load() {
		return nil
	}
	v, gen := c.Value(), c.Generation()
	sessCtx, end := context.WithCancel(ctx)
	cs, err := u.connect(sessCtx, u.client, false)
	if err != nil {
		end()
		u.log.Warn().Str(fieldCredential, u.defaultCred).Str(fieldErr, u.gw.redact(err.Error())).
			Msg("the credential rotated but a child with the new value did not start; the old child keeps serving")
		// A child that exited on the provider's rejection of the new
		// value: the rotation is rejected, as a source's check rejects
		// one, and the value the old child holds is the credential's
		// again. Health read healthy meanwhile, with no event; and once
		// the old value was revoked too, every call was refused with no
		// event or page, the calls' reports being of a value no longer
		// held (found trying the gateway from outside).
		if f, _ := u.gw.classify(u, err); f.IsAuth() && opensCredential(f.Subtype) && !limited(f) && c.Generation() == gen {
			f.Detail, f.ProviderCode = u.gw.redact(f.Detail), u.gw.redact(f.ProviderCode)
			if kept := u.creds.sharedVal.Load(); kept != nil {
				if gen, ok := c.RejectRotation(v, *kept, f, "a child started with the new value"); ok {
					u.creds.sharedGen.Store(gen) // the old child holds it
				}
			}
		}
		return nil
	}
	return &handoff{ctx: sessCtx, end: end, cs: cs}
}

// handOver makes next the shared session at once and retires old: it
// finishes its calls in flight, then closes.
func (u *upstream) handOver(old *mcp.ClientSession, next *handoff, endOld context.CancelFunc, child *childStderr) {
	u.current.Store(next.cs)
	u.session.Store(next.cs)
	u.log.Info().Str(fieldCredential, u.defaultCred).Msg("credential rotated: a new child serves new calls; the old one stops after its calls in flight")
	u.closing.Go(func() {
		defer u.gw.recoverLog("retiring a session", u.name)
		u.retire(old)
		endOld()
	})
}

// retire waits until no call is in flight on cs (at most the upstream's
// timeout and a grace), then closes it. No new call is started on it.
func (u *upstream) retire(cs *mcp.ClientSession) {
	u.creds.mu.Lock()
	u.creds.retired = append(u.creds.retired, cs)
	if len(u.creds.retired) > maxRetired {
		u.creds.retired = slices.Clone(u.creds.retired[len(u.creds.retired)-maxRetired:])
	}
	var idle chan struct{}
	if u.creds.uses[cs] > 0 {
		idle = make(chan struct{})
		u.creds.idle[cs] = idle
	}
	u.creds.mu.Unlock()
	if idle != nil {
		t := time.NewTimer(u.cfg.timeout() + answerGrace)
		select {
		case <-idle:
		case <-t.C:
		}
		t.Stop()
	}
	_ = cs.Close()
}

// acquire counts a call on cs; false if cs is retired.
func (u *upstream) acquire(cs *mcp.ClientSession) bool {
	u.creds.mu.Lock()
	defer u.creds.mu.Unlock()
	if slices.Contains(u.creds.retired, cs) {
		return false
	}
	u.creds.uses[cs]++
	return true
}

func (u *upstream) release(cs *mcp.ClientSession) {
	u.creds.mu.Lock()
	defer u.creds.mu.Unlock()
	if u.creds.uses[cs]--; u.creds.uses[cs] > 0 {
		return
	}
	delete(u.creds.uses, cs)
	if idle := u.creds.idle[cs]; idle != nil {
		close(idle)
		delete(u.creds.idle, cs)
	}
}

// sessionForCall is sessionFor for a call that may carry its own credential
// (a stdio upstream's per-tool credential gets a child of its own). The
// returned release ends the call's use of the session.
func (u *upstream) sessionForCall(ctx context.Context, ss *mcp.ServerSession) (*mcp.ClientSession, func(), error) {
	if !u.creds.counted {
		cs, err := u.sessionFor(ctx, ss)
		return cs, func() {}, err
	}
	for try := 0; ; try++ {
		var cs *mcp.ClientSession
		var err error
		if cc := callCredFrom(ctx); cc != nil && cc.name != "" && cc.name != u.defaultCred {
			if u.session.Load() == nil {
				return nil, nil, u.unavailable()
			}
			cs, err = u.credSession(ctx, cc.name)
		} else {
			cs, err = u.sessionFor(ctx, ss)
		}
		if err != nil {
			return nil, nil, err
		}
		if u.acquire(cs) {
			if cc := callCredFrom(ctx); cc != nil && cc.override == "" {
				cc.setUsed(u.sessionValue(cs, cc.name))
			}
			return cs, func() { u.release(cs) }, nil
		}
		if try >= 3 {
			return cs, func() {}, nil // retired under our feet repeatedly: let the call try
		}
	}
}

// credSession returns the session of credential name's own child, opening it
// on first use and replacing it (gracefully) once the credential changed.
func (u *upstream) credSession(ctx context.Context, name string) (*mcp.ClientSession, error) {
	c := u.gw.credential(name)
	if c == nil {
		return u.sessionFor(ctx, nil)
	}
	gen := c.Generation()
	u.creds.mu.Lock()
	conn := u.creds.conns[name]
	var old *credConn
	start := false
	if conn == nil || conn.stale(gen) {
		old, start = conn, true
		conn = &credConn{opening: newOpening(), gen: gen}
		u.creds.conns[name] = conn
	}
	u.creds.mu.Unlock()
	if start {
		u.mu.Lock()
		runCtx := u.ctx
		u.mu.Unlock()
		if runCtx == nil {
			runCtx = context.Background()
		}
		go u.openCred(runCtx, name, conn)
		if old != nil && old.err == nil && old.cs != nil {
			go func() {
				defer u.gw.recoverLog("retiring a session", u.name)
				u.retire(old.cs)
				old.end()
			}()
		}
	}
	return conn.wait(ctx)
}

// openCred opens credential name's own session and closes it when it ends,
// is replaced, or the upstream stops.
func (u *upstream) openCred(ctx context.Context, name string, conn *credConn) {
	defer u.gw.recoverLog("credential session", u.name)
	sessCtx, end := context.WithCancel(withCallCred(ctx, &callCred{name: name}))
	conn.end = end
	conn.cs, conn.err = u.connect(sessCtx, u.newClient(nil), false)
	if conn.err != nil {
		end()
		close(conn.ready)
		return
	}
	u.setLogLevel(ctx, conn.cs)
	close(conn.ready)
	gone := make(chan struct{})
	go func() {
		_ = conn.cs.Wait()
		close(gone)
	}()
	select {
	case <-gone:
	case <-ctx.Done():
	}
	u.creds.mu.Lock()
	if u.creds.conns[name] == conn {
		delete(u.creds.conns, name)
	}
	u.creds.mu.Unlock()
	_ = conn.cs.Close()
	end()
}

// sessionValue is the value of credential name that session cs's child
// holds, when it is the current one; "" when unknown.
func (u *upstream) sessionValue(cs *mcp.ClientSession, name string) string {
	c := u.gw.credential(name)
	if c == nil {
		return ""
	}
	gen := c.Generation()
	if name == u.defaultCred {
		if cs == u.current.Load() && u.creds.sharedGen.Load() == gen {
			return c.Value()
		}
		return ""
	}
	u.creds.mu.Lock()
	defer u.creds.mu.Unlock()
	if conn := u.creds.conns[name]; conn != nil && conn.cs == cs && conn.gen == gen {
		return c.Value()
	}
	return ""
}

// awaitAttempt waits until the shared child's start with the default
// credential's generation gen (or a later one) has an outcome: down, or up
// with its catalog listed (not merely connected: its tools were unknown
// for a moment). At most the connect timeout.
func (u *upstream) awaitAttempt(ctx context.Context, gen uint64) {
	u.waitChild(ctx, func() bool { return u.creds.tried.Load() >= gen })
}

// waitChild waits until done holds, for a child the connect loop starts in
// the background (a rotation's, a reload's, a downgrade's): at most the
// connect timeout. It reports whether done held.
func (u *upstream) waitChild(ctx context.Context, done func() bool) bool {
	ctx, cancel := context.WithTimeout(ctx, min(u.cfg.timeout(), u.gw.opts.ConnectTimeout))
	defer cancel()
	t := time.NewTicker(10 * time.Millisecond)
	defer t.Stop()
	for !done() {
		select {
		case <-ctx.Done():
			return false
		case <-t.C:
		}
	}
	return true
}

// awaitCredential waits, before a resend, until the child that will carry
// it holds credential name's current value (a stdio upstream's shared child
// is replaced in the background); at most the connect timeout. HTTP
// upstreams send the current value with the next request anyway.
func (u *upstream) awaitCredential(ctx context.Context, name string) {
	c := u.gw.credential(name)
	if c == nil || !u.creds.counted || name != u.defaultCred {
		return
	}
	u.kickRotation()
	u.waitChild(ctx, func() bool {
		return u.creds.sharedGen.Load() == c.Generation() && u.current.Load() == u.session.Load()
	})
}
