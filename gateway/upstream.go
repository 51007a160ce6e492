package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"golang.org/x/time/rate"
	"hash/maphash"
	"iter"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
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
	// credName is credentialName's answer, fixed with cfg (the audit line
	// of every call reads it).
	credName string
	// Without protocol_version, the version a stdio child is asked for.
	// The connect loop's session asks the newest, unless its last attempt
	// failed the way a child that does not know 2026-07-28's first request
	// (server/discover) fails it (no answer, or it exited): then 2025-11-25
	// (probeOlder), alternating until one comes up, and the newest again
	// at its next reconnect. Every other session of the upstream (per
	// agent, per credential, a rotation's successor) asks what the loop's
	// last session came up with (workOlder). Only the loop writes them.
	probeOlder atomic.Bool
	workOlder  atomic.Bool
	// inputOlder is set once the child asked an agent for input (sampling,
	// elicitation, roots) mid-call the way versions before 2026-07-28 do,
	// which it refuses to do on a 2026-07-28 session (go-sdk v1.8.0's
	// Session.Elicit): from then on its sessions ask 2025-11-25 (see
	// olderInput).
	inputOlder atomic.Bool
	// downgradeFailed counts the children at 2025-11-25 that inputOlder
	// asked for and that did not start.
	downgradeFailed atomic.Int64
	// olderTook is how long the handshake took that came up at the older
	// version after the newest failed (0 if none did): the next attempt at
	// the newest waits at most 4 times that (at least 5 s: a 2026-07-28
	// child whose first start was slow may be slower again), so a child that
	// ignores server/discover costs a restart seconds, not the whole bound.
	olderTook atomic.Int64
	// newestFailed is how the last handshake at the newest version failed
	// before the older was asked for: the child's own error line if it
	// wrote one, else the error. The warning when the older comes up
	// quotes it, as the cause may not be the version at all (a port in
	// use, a missing file).
	newestFailed atomic.Pointer[string]

	client  *mcp.Client
	session atomic.Pointer[mcp.ClientSession]
	http    *httpTransport // nil for stdio
	// stdio maps each open session of a stdio upstream (shared, per-agent,
	// per-credential) to its connection, for credgate's own calls on it
	// (see stdioConn.call); empty for other transports.
	stdio   sync.Map       // *mcp.ClientSession -> *stdioConn
	limit   *responseLimit // upstreams.<name>.max_response_bytes
	refresh chan struct{}  // coalesced catalog refresh requests
	notes   noteCounter    // call notifications read and handled
	// subs holds the agent sessions subscribed to each resource of the
	// shared session (subscriptions.go).
	subsOp      sync.Mutex // held by one subscription change at a time, upstream request included
	subsMu      sync.Mutex
	subs        map[string]map[*mcp.ServerSession]struct{}
	subscribers map[*mcp.ServerSession]struct{} // watched till they end
	wire        wireFields                      // what the shared session's answers say that the SDK drops (tasks.go)
	rawIDs      atomic.Int64                    // ids of the gateway's own requests (rawcall.go)
	flood       *floodGuard                     // bounds on what it sends unasked (flood.go)
	// connectFailures counts failed connection attempts, so a caller waiting
	// for a new session can stop at the first failure.
	connectFailures atomic.Int64

	// Liveness (issue 6 item 11). current is the shared session run serves,
	// kept after a call or a probe drops it from session; lostSig wakes run
	// when that happens. busy counts calls in flight on it and lastAnswer is
	// when it last answered one (unix ns): either is proof of life, so the
	// probe is skipped (see health.go).
	current atomic.Pointer[mcp.ClientSession]
	lostSig chan struct{}
	// ownVia is what the upstream's own traffic carried last (injectCredential).
	ownVia     atomic.Pointer[ownSend]
	busy       atomic.Int64
	lastAnswer atomic.Int64
	// probeTurns counts the turns of the health probe's loop, probed or
	// skipped (tests wait on it).
	probeTurns atomic.Int64
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
	// catComplete is set while cat is a complete listing of the upstream's
	// own (not a cut one, nor the shared cache's): what cacheCatalog shares
	// and republish puts back.
	catComplete bool
	// listedNames holds the names of cat's tools while catComplete, else
	// nil: a route's question "does it list this tool" (listedWithout),
	// asked on every routed call, without u.mu or a scan.
	listedNames atomic.Pointer[map[string]struct{}]
	// kept holds the credentials the upstream is bound to, once a reload
	// has removed or replaced it (keepCredentials): its calls still in
	// flight, or that resolved it just before the swap, send them after
	// the set has forgotten the ones the reload removed (they went without
	// a credential, and the upstream refused them).
	kept     atomic.Pointer[map[string]*authmap.Credential]
	calls    map[*inflight]struct{}
	ctx      context.Context                   // run's, which per-agent sessions live on
	agents   map[*mcp.ServerSession]*agentConn // per-agent sessions
	tried    chan struct{}                     // closed after the first connection attempt
	triedSet bool

	// secrets are this upstream's own configured secret values: only they
	// inform its classification (a JWT's expiry); see redact.go.
	secrets []string

	// Credentials (issue 7): see credsession.go.
	defaultCred string                 // the credential of the upstream's own traffic; "" = none
	ownSent     atomic.Pointer[string] // the value its own traffic last sent (owntraffic.go)
	creds       credSessions
	// stop ends run (a reload removed or replaced the upstream); stopped is
	// closed once run has returned. See snapshot.go.
	stop    context.CancelFunc
	stopped chan struct{}

	// credWake cuts a reconnect backoff short: the credential the upstream
	// was refused for got a new value (see wakeForCredential).
	credWake chan struct{}

	// gate counts the calls using the upstream, so that a config reload
	// that removes or replaces it stops it once they are done (reload.go).
	gate callGate
}

// upstreamCatalog is what the upstream offered at its last listing.
type upstreamCatalog struct {
	tools     []*mcp.Tool
	prompts   []*mcp.Prompt
	resources []*mcp.Resource
	templates []*mcp.ResourceTemplate
	caps      *mcp.ServerCapabilities
	// instructions are the upstream's own (its initialize result's),
	// redacted and bounded (boundInstructions).
	instructions string
}

// inflight is one call forwarded to the upstream, so that what the upstream
// sends during it (logs, sampling, elicitation) reaches the calling agent.
type inflight struct {
	ctx     context.Context
	session *mcp.ServerSession // nil: a stateless fast call (fastpath.go)
	// notify is the call's budget of progress and log messages (see
	// floodGuard), made when the first one comes.
	notify atomic.Pointer[rate.Limiter]

	// The call's waits for its agent (askingAgent), which do not count
	// against the upstream's timeout (upstream.call).
	waitMu   sync.Mutex
	asking   int           // requests to the agent in flight
	askSince time.Time     // when the first of them began
	waited   time.Duration // the waits that ended
	timer    *callTimer    // the call's timeout (of its last attempt), set again when a wait ends
}

// setTimer records the timeout of the call's attempt in flight.
func (c *inflight) setTimer(ct *callTimer) {
	c.waitMu.Lock()
	c.timer = ct
	c.waitMu.Unlock()
}

// askingAgent records that the upstream waits for the call's agent until
// the returned func is called.
func (c *inflight) askingAgent() func() {
	c.waitMu.Lock()
	if c.asking == 0 {
		c.askSince = time.Now()
	}
	c.asking++
	c.waitMu.Unlock()
	return func() {
		c.waitMu.Lock()
		var ct *callTimer
		if c.asking--; c.asking == 0 {
			c.waited += time.Since(c.askSince)
			ct = c.timer
		}
		c.waitMu.Unlock()
		if ct != nil {
			ct.recheck()
		}
	}
}

// agentWaited returns how long the upstream has waited for the call's agent
// so far, and whether it still waits.
func (c *inflight) agentWaited() (time.Duration, bool) {
	c.waitMu.Lock()
	defer c.waitMu.Unlock()
	total := c.waited
	if c.asking > 0 {
		total += time.Since(c.askSince)
	}
	return total, c.asking > 0
}

// allowNotify reports whether the call's budget allows one more progress
// or log message to its agent.
func (c *inflight) allowNotify() bool {
	l := c.notify.Load()
	if l == nil {
		c.notify.CompareAndSwap(nil, newNotifyBudget())
		l = c.notify.Load()
	}
	return l.Allow()
}

// agent names the agent session of c: its ServerSession, or for a
// stateless fast call, which has none, the call's own answer stream (each
// stateless request is an agent session of its own, as in the SDK).
func (c *inflight) agent() any {
	if c.session == nil {
		return fastStreamFrom(c.ctx)
	}
	return c.session
}

// newUpstream builds upstream name for cfg; creds are the config's
// credentials, which decide the ones it binds.
func newUpstream(gw *Server, name string, cfg *UpstreamConfig, creds map[string]authmap.CredentialConfig) *upstream {
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
		stopped:  make(chan struct{}),
		secrets:  secretValues(cfg),
		flood:    newFloodGuard(),
	}
	u.limit = newResponseLimit(name, cfg.maxResponseBytes(), u.log)
	u.limit.stray, u.limit.redact, u.limit.flood = u.strayLine, gw.redactCut, u.flood
	u.limit.legacySSE = cfg.Transport == TransportSSE
	if cfg.Transport != TransportStdio {
		u.http = newHTTPTransport(gw.pool, cfg.Headers, &u.notes)
		u.http.sync = gw.syncPool
		u.http.limit = u.limit
		u.http.trace = gw
		if pu, err := url.Parse(cfg.URL); err == nil {
			u.http.host = strings.ToLower(pu.Hostname())
		}
	}
	u.credName = u.findCredentialName()
	u.initCredSessions(creds)
	if u.http != nil && len(u.cfg.boundCredentials(creds)) > 0 {
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
	// A per-agent session's log messages between calls go to its agent,
	// at a bounded rate (see routeLog).
	var idleLog *rate.Limiter
	if agent != nil {
		idleLog = rate.NewLimiter(idleLogRate, idleLogBurst)
	}
	// Elicitation in both modes, as sampling, whatever one agent can do:
	// the gateway relays a request to the agent that caused it, which
	// refuses a mode it did not declare. Declaring form alone hid the tools
	// of a server that offers URL elicitation only to clients declaring it
	// (found trying the gateway with server-everything).
	elicitation := &mcp.ElicitationCapabilities{Form: &mcp.FormElicitationCapabilities{}, URL: &mcp.URLElicitationCapabilities{}}
	c := mcp.NewClient(&mcp.Implementation{Name: "credgate", Version: u.gw.opts.Version}, &mcp.ClientOptions{
		Logger:       u.gw.sdkLog,
		Capabilities: &mcp.ClientCapabilities{RootsV2: roots, Elicitation: elicitation},
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
			u.logMessage(agent, req, idleLog)
		},
		ProgressNotificationHandler: func(ctx context.Context, r *mcp.ProgressNotificationClientRequest) {
			u.forwardProgress(ctx, r.Params)
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
	// Outermost: the gateway's answers to the upstream's requests
	// (sampling, elicitation, roots) carry a JSON-RPC code, as its answers
	// to agents do: a refusal of its own was sent with code 0.
	c.AddReceivingMiddleware(codedErrors)
	return c
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

// stderrErrLineAge is how many lines after it an error line still explains a
// child's exit: enough for a long stack trace, not an error logged long before.
const stderrErrLineAge = 500

// maxListed bounds each of an upstream's lists (tools, prompts, resources,
// templates): an upstream that lists more, or pages without end, has the
// first maxListed exposed, and the listing reports the rest left out. Real
// servers list tens to hundreds; every item costs memory and catalog work
// while it is listed.
const maxListed = 10_000

// errListTooLong reports a list cut at maxListed.
func errListTooLong(method string) error {
	return fmt.Errorf("%s: more than %d items (or pages without end); the first %d are exposed, the rest left out", method, maxListed, maxListed)
}

// maxListPages bounds the pages of each of an upstream's lists (real
// servers page by tens to thousands of items).
const maxListPages = 1000

// pagesOf is every item of a paginated list, page by page (page fetches the
// one at cursor), as the SDK's iterators walk it, but bounded in pages as
// well as in items: an upstream answering empty pages that point to one
// more (found trying the gateway from outside: its listing never ended,
// kept the gateway unready and burnt CPU on both sides) or a cursor it gave
// before ends its list there, with an error.
func pagesOf[T any](ctx context.Context, page func(ctx context.Context, cursor string) ([]T, string, error)) iter.Seq2[T, error] {
	return func(yield func(T, error) bool) {
		var zero T
		seen := map[uint64]bool{} // hashes: a cursor may be long
		seed := maphash.MakeSeed()
		cursor := ""
		for n := 0; ; n++ {
			if n == maxListPages {
				yield(zero, fmt.Errorf("more than %d pages; the list ends there", maxListPages))
				return
			}
			items, next, err := page(ctx, cursor)
			if err != nil {
				yield(zero, err)
				return
			}
			for _, it := range items {
				if !yield(it, nil) {
					return
				}
			}
			if next == "" {
				return
			}
			if h := maphash.String(seed, next); seen[h] {
				yield(zero, errors.New("the upstream sent a cursor it had sent before; the list ends there"))
				return
			} else {
				seen[h] = true
			}
			cursor = next
		}
	}
}

// list fetches the upstream's whole catalog and hands it to the gateway.
func (u *upstream) list(ctx context.Context, cs *mcp.ClientSession) error {
	ctx, cancel := context.WithTimeout(ctx, u.cfg.timeout())
	defer cancel()
	var cat upstreamCatalog
	var errs []error
	caps := cs.InitializeResult().Capabilities
	cat.caps = caps
	cat.instructions = boundInstructions(u.gw.redactor.RedactKnown(cs.InitializeResult().Instructions)) // redacted before the cut
	if caps != nil && caps.Tools != nil {
		read := 0 // the filter may leave out most: what is read is bounded too
		for t, err := range pagesOf(ctx, func(ctx context.Context, cursor string) ([]*mcp.Tool, string, error) {
			res, err := cs.ListTools(ctx, &mcp.ListToolsParams{Cursor: cursor})
			if err != nil {
				return nil, "", err
			}
			return res.Tools, res.NextCursor, nil
		}) {
			if err != nil {
				errs = append(errs, fmt.Errorf("tools/list: %w", err))
				break
			}
			if read++; read > 4*maxListed {
				errs = append(errs, errListTooLong("tools/list"))
				break
			}
			if u.cfg.Tools.Allowed(t.Name) {
				if len(cat.tools) == maxListed {
					errs = append(errs, errListTooLong("tools/list"))
					break
				}
				cat.tools = append(cat.tools, ownTool(t))
			}
		}
	}
	if caps != nil && caps.Prompts != nil {
		for p, err := range pagesOf(ctx, func(ctx context.Context, cursor string) ([]*mcp.Prompt, string, error) {
			res, err := cs.ListPrompts(ctx, &mcp.ListPromptsParams{Cursor: cursor})
			if err != nil {
				return nil, "", err
			}
			return res.Prompts, res.NextCursor, nil
		}) {
			if err != nil {
				errs = append(errs, fmt.Errorf("prompts/list: %w", err))
				break
			}
			if len(cat.prompts) == maxListed {
				errs = append(errs, errListTooLong("prompts/list"))
				break
			}
			cat.prompts = append(cat.prompts, ownPrompt(p))
		}
	}
	if caps != nil && caps.Resources != nil {
		for r, err := range pagesOf(ctx, func(ctx context.Context, cursor string) ([]*mcp.Resource, string, error) {
			res, err := cs.ListResources(ctx, &mcp.ListResourcesParams{Cursor: cursor})
			if err != nil {
				return nil, "", err
			}
			return res.Resources, res.NextCursor, nil
		}) {
			if err != nil {
				errs = append(errs, fmt.Errorf("resources/list: %w", err))
				break
			}
			if len(cat.resources) == maxListed {
				errs = append(errs, errListTooLong("resources/list"))
				break
			}
			cp := *r
			cat.resources = append(cat.resources, &cp)
		}
		for r, err := range pagesOf(ctx, func(ctx context.Context, cursor string) ([]*mcp.ResourceTemplate, string, error) {
			res, err := cs.ListResourceTemplates(ctx, &mcp.ListResourceTemplatesParams{Cursor: cursor})
			if err != nil {
				return nil, "", err
			}
			return res.ResourceTemplates, res.NextCursor, nil
		}) {
			if je, ok := errors.AsType[*jsonrpc.Error](err); ok && je.Code == jsonrpc.CodeMethodNotFound {
				// The resources capability does not say whether templates
				// are listed; a server without any may not serve the
				// method: it has none, and is not failing.
				break
			}
			if err != nil {
				errs = append(errs, fmt.Errorf("resources/templates/list: %w", err))
				break
			}
			if len(cat.templates) == maxListed {
				errs = append(errs, errListTooLong("resources/templates/list"))
				break
			}
			cp := *r
			cat.templates = append(cat.templates, &cp)
		}
	}
	u.gw.redactCatalog(&cat)
	compactSchemas(cat.tools)
	u.gw.listedSchemas(cat.tools, u.wire.takeSchemas())
	u.mu.Lock()
	u.cat = cat
	u.catComplete = len(errs) == 0
	if u.catComplete {
		names := make(map[string]struct{}, len(cat.tools))
		for _, t := range cat.tools {
			names[t.Name] = struct{}{}
		}
		u.listedNames.Store(&names)
	} else {
		u.listedNames.Store(nil)
	}
	u.mu.Unlock()
	u.gw.catalog.rebuild()
	u.gw.routesChanged() // a route's target may be listed, or no longer
	if len(errs) == 0 {
		u.gw.shared.cacheCatalog(u.name, cat) // issue 11: see shared.go
	}
	return errors.Join(errs...)
}

// ownTool is a copy of t that the gateway may change (redactCatalog,
// compactSchemas) without changing t: the SDK's client keeps the tools it
// listed, for as long as their ttlMs, and a relisting within it returns the
// very same objects, whose redaction in place then raced with their
// encoding to agents and hid a newly known secret from the comparison that
// finds changed tools.
func ownTool(t *mcp.Tool) *mcp.Tool {
	cp := *t
	if t.Annotations != nil {
		a := *t.Annotations
		cp.Annotations = &a
	}
	return &cp
}

// ownPrompt is ownTool for a prompt, with its arguments.
func ownPrompt(p *mcp.Prompt) *mcp.Prompt {
	cp := *p
	cp.Arguments = make([]*mcp.PromptArgument, len(p.Arguments))
	for i, a := range p.Arguments {
		if a != nil {
			ac := *a
			cp.Arguments[i] = &ac
		}
	}
	if p.Arguments == nil {
		cp.Arguments = nil
	}
	return &cp
}

// compactSchemas replaces each tool's decoded schemas (the SDK decodes them
// into map[string]any) with their JSON text. The gateway never looks inside a
// schema after redaction (redactCatalog, which must run first); it only
// hands it on in tools/list, and the SDK writes raw JSON as is. Decoded, a
// three-key schema costs about 1 KiB of maps, held for as long as the
// upstream lists the tool; as text it costs its length (issue 12: 1,000
// tools held 1 MiB of schema maps, a sixth of the gateway's live heap).
func compactSchemas(tools []*mcp.Tool) {
	for _, t := range tools {
		t.InputSchema, t.OutputSchema = schemaText(t.InputSchema), schemaText(t.OutputSchema)
	}
}

// listedSchemas gives each tool the schemas its upstream listed, as it
// wrote them (listed, read off the wire), in place of the SDK's decoding,
// whose maps lose the order of a schema's keys: properties came back
// sorted, and a form built from an elicitation or a tool's schema showed
// its fields out of order (found trying the gateway with
// server-everything). A schema redaction changed (one holding a secret)
// keeps its redacted text.
func (g *Server) listedSchemas(tools []*mcp.Tool, listed map[string]toolSchemas) {
	if len(listed) == 0 {
		return
	}
	for _, t := range tools {
		s, ok := listed[t.Name]
		if !ok {
			continue
		}
		if s.in != nil && t.InputSchema != nil && g.secretFree(s.in) {
			t.InputSchema = s.in
		}
		if s.out != nil && t.OutputSchema != nil && g.secretFree(s.out) {
			t.OutputSchema = s.out
		}
	}
}

// schemaText returns v as JSON text, or v itself when it is nil, already
// text, or cannot be marshalled (AddTool then reports it as it would have).
func schemaText(v any) any {
	switch v.(type) {
	case nil, json.RawMessage:
		return v
	}
	b, err := json.Marshal(v)
	if err != nil {
		return v
	}
	return json.RawMessage(b)
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
	u.gw.healthChanged()
	if prev != StatusUp {
		u.log.Info().Int("tool_count", n).Msg("upstream up")
		u.gw.publishUpstream(u.name, StatusUp, nil, "")
		u.gw.routesChanged()
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
	u.gw.healthChanged()
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
		u.gw.routesChanged()
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

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

// forwardProgress passes an upstream's progress notification on to the call
// it is for, within that call's budget (see floodGuard), redacted.
func (u *upstream) forwardProgress(ctx context.Context, p *mcp.ProgressNotificationParams) {
	if u.gw.progress.forward(ctx, p, u.gw.redactProgress) == progressDropped {
		u.flood.droppedNotify()
	}
}
