package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/credgate/credgate/authmap"
	"github.com/credgate/credgate/routing"
)

// reservedMetaPrefix marks _meta keys that belong to one hop of the protocol
// (protocol version, client info); they are never forwarded upstream.
const reservedMetaPrefix = "io.modelcontextprotocol/"

// toolHandler serves tools/call for one exposed tool. The binding is made
// per call: the exposed name is resolved against the routes, the catalog and
// the config in force when the call arrives, so a reload or a catalog change
// never leaves a handler pointing at an upstream that is gone.
func (g *Server) toolHandler(exposed string) mcp.ToolHandler {
	return func(ctx context.Context, req *mcp.CallToolRequest) (*mcp.CallToolResult, error) {
		if r := inputRoundFrom(ctx); r != nil {
			r.asked.Store(nil) // a new round: it has asked for nothing yet
		}
		s := g.snap.Load()
		if r := s.routes.Lookup(exposed); r != nil {
			return g.callRoute(ctx, req, s, r)
		}
		u, name, ok := g.catalog.toolTarget(exposed)
		if !ok {
			return nil, unknownError("tool", exposed)
		}
		return g.callTool(ctx, req, u, name)
	}
}

// inputFailures is a receiving middleware directly around the input
// rounds of tools/call (the SDK's serverMultiRoundTripMiddleware, or the fast
// path's fastInputRounds): when a 2026-07-28 upstream's result asked an agent
// older than that protocol for input and getting it failed (the agent's
// answer does not match the requested schema, the agent answered with an
// error or lacks the capability), the agent gets the typed failure object
// every failed call carries, not the round's untyped -32603. The upstream's
// tool cannot be told instead, as it would be of a failed elicitation it sent
// mid-call: a retry's inputResponses hold results only, so the call ends here.
//
// A failure is the input round's only when the round that ran last asked for
// input (toolHandler clears the mark, callToolOn sets it): an error of the
// handler itself, on the first round or the retry, is classified as before.
func (g *Server) inputFailures(next mcp.MethodHandler) mcp.MethodHandler {
	return func(ctx context.Context, method string, req mcp.Request) (mcp.Result, error) {
		if method != "tools/call" && method != "prompts/get" && method != "resources/read" {
			return next(ctx, method, req)
		}
		r := new(inputRound)
		start := time.Now()
		res, err := next(context.WithValue(ctx, inputRoundKey{}, r), method, req)
		if err == nil {
			err = uncapableAgent(req, res)
		}
		a := r.asked.Load()
		if err == nil || a == nil {
			return res, err
		}
		if a.method != "" {
			// The SDK's round failed untyped (-32603 "multi-round-trip:
			// ..."): typed as tools/call's are (found trying the gateway
			// from outside).
			why := err.Error()
			if a.u.gw.config().Stateless {
				why = "a stateless gateway cannot ask an agent older than 2026-07-28 for input (there is no session to send the request on): " + why
			}
			return nil, failureRPC(a.method, a.tool, a.u.gw.attribute(a.u, authmap.Failure{Type: authmap.TypeInvalidRequest, Detail: a.u.gw.redact("the agent's input: " + why)}))
		}
		out, err := a.u.gw.toolOutcome(a.u, a.tool, nil, &inputError{err: err})
		// The call's end: its round that asked for input was logged
		// input_required, and this is what the agent got (it was
		// counted ok, found trying the gateway from outside).
		a.u.gw.logCall(ctx, a.u, a.tool, start, out, err)
		return out, err
	}
}

// uncapableAgent returns why the 2026-07-28 agent of req cannot answer the
// input res asks it for (its inputRequests reach it as they are), or nil:
// the upstream saw the gateway's capabilities, not the agent's, so a
// request the agent never said it could take is refused here, typed, as
// the SDK's server refuses one to an older agent in its input round.
func uncapableAgent(req mcp.Request, res mcp.Result) error {
	r, ok := res.(*mcp.CallToolResult)
	call, _ := req.(*mcp.CallToolRequest)
	// As toolHandler marks the rounds that asked (inputRound.asked), so that
	// the refusal is typed there (a result with content too is passed on).
	if !ok || r == nil || !(r.NeedsInput() || len(r.InputRequests) > 0 && len(r.Content) == 0) || call == nil || agentProtocol(call.Session, call.Extra) < protocol20260728 {
		return nil
	}
	return missingInputCaps(call.ClientCapabilities(), r.InputRequests)
}

// capsRequest is a request that knows its agent's capabilities.
type capsRequest interface {
	mcp.Request
	ClientCapabilities() *mcp.ClientCapabilities
}

// inputAsked is, for prompts/get and resources/read (method, of name), what
// toolHandler and uncapableAgent do for tools/call when the upstream's
// result asks for input (reqs): a 2026-07-28 agent that declared no
// capability for it gets a typed refusal; for an older agent, whose input
// round the SDK runs after this, a failure of that round is typed by
// inputFailures, which is told here who asked.
func (g *Server) inputAsked(ctx context.Context, req capsRequest, u *upstream, method, name string, reqs mcp.InputRequestMap) error {
	if len(reqs) == 0 {
		return nil
	}
	ss, _ := req.GetSession().(*mcp.ServerSession)
	if agentProtocol(ss, req.GetExtra()) < protocol20260728 {
		if r := inputRoundFrom(ctx); r != nil {
			r.asked.Store(&inputAsker{u: u, tool: name, method: method})
		}
		return nil
	}
	if why := missingInputCaps(req.ClientCapabilities(), reqs); why != nil {
		return failureRPC(method, name, g.attribute(u, authmap.Failure{Type: authmap.TypeInvalidRequest, Detail: why.Error()}))
	}
	return nil
}

// missingInputCaps returns why an agent with caps cannot answer reqs (the
// capabilities it did not declare), or nil.
func missingInputCaps(caps *mcp.ClientCapabilities, reqs mcp.InputRequestMap) error {
	var missing []string
	for _, in := range reqs {
		if need := inputNeed(caps, in); need != "" && !slices.Contains(missing, need) {
			missing = append(missing, need)
		}
	}
	if len(missing) == 0 {
		return nil
	}
	slices.Sort(missing)
	return fmt.Errorf("the upstream asked for input (%s), and the agent declared no %s capability in its request's _meta", inputMethods(reqs), strings.Join(missing, ", "))
}

// inputNeed names the capability an agent declaring caps lacks to answer a
// request for input with params p (an elicitation in its mode, sampling,
// roots), or "" if it lacks none.
func inputNeed(caps *mcp.ClientCapabilities, p any) string {
	if caps == nil {
		caps = &mcp.ClientCapabilities{}
	}
	switch p := p.(type) {
	case *mcp.ElicitParams:
		switch {
		case caps.Elicitation == nil:
			return "elicitation"
		case p.Mode == "url" && caps.Elicitation.URL == nil:
			return "elicitation.url"
		case p.Mode != "url" && caps.Elicitation.Form == nil && caps.Elicitation.URL != nil:
			return "elicitation.form" // elicitation: {} means form
		}
	case *mcp.CreateMessageParams, *mcp.CreateMessageWithToolsParams:
		if caps.Sampling == nil {
			return "sampling"
		}
	case *mcp.ListRootsParams:
		if caps.RootsV2 == nil {
			return "roots"
		}
	}
	return ""
}

// inputRound is what inputFailures learns of a tools/call's rounds: the
// upstream tool whose result asked for input, while the round that ran last
// did.
type inputRound struct {
	asked atomic.Pointer[inputAsker]
	// refused is why the gateway refused an upstream's request to the
	// agent during the call (noMidCallRequests): a failed call fails with
	// it, typed.
	refused atomic.Pointer[string]
}

type inputAsker struct {
	u    *upstream
	tool string // the upstream's own name (a prompt's, a resource's URI)
	// method is the request's, when it is not tools/call (prompts/get,
	// resources/read): its failure is a JSON-RPC error carrying the object.
	method string
}

// inputRoundKey is the context key of a call's *inputRound.
type inputRoundKey struct{}

func inputRoundFrom(ctx context.Context) *inputRound {
	r, _ := ctx.Value(inputRoundKey{}).(*inputRound)
	return r
}

// inputError is the failure to get an agent the input an upstream's result
// asked for (see inputFailures).
type inputError struct{ err error }

func (e *inputError) Error() string { return "the agent's input: " + e.err.Error() }
func (e *inputError) Unwrap() error { return e.err }

// unknownError is the JSON-RPC error of a name that was removed between
// the SDK finding its handler and the handler resolving it.
func unknownError(kind, name string) error {
	return &jsonrpc.Error{Code: jsonrpc.CodeInvalidParams, Message: fmt.Sprintf("unknown %s %q", kind, name)}
}

// callTool forwards one tools/call to tool name of upstream u.
func (g *Server) callTool(ctx context.Context, req *mcp.CallToolRequest, u *upstream, name string) (*mcp.CallToolResult, error) {
	res, _, err := g.callToolOn(ctx, req, u, name, toolCall{args: req.Params.Arguments})
	return res, err
}

// toolCall is how callToolOn sends a call.
type toolCall struct {
	args any // the arguments sent: the agent's, or a route's mapping of them
	// backup, if set, reports whether a route has another target for the
	// call: then it is not held behind another call's renewal of its
	// credential, nor does it wait for its own after a rejection (see
	// routes.go). It is asked only then.
	backup func() bool
}

// callOutcome is how a call ended, for a route deciding whether to move on.
type callOutcome struct {
	failure *authmap.Failure // the failure it was answered with, if any
	raw     error            // what forwarding returned
	refused string           // why it was not sent: refusedGate, refusedBreaker, refusedDown; "" if it was
}

// callToolOn is callTool for a call as tc says, also reporting its outcome.
func (g *Server) callToolOn(ctx context.Context, req *mcp.CallToolRequest, u *upstream, name string, tc toolCall) (*mcp.CallToolResult, callOutcome, error) {
	// Counted from here, resends included, so that a reload retiring u
	// waits for the call (reload.go); retired already, its successor serves.
	if u.gate.enter() {
		defer u.gate.leave()
	} else if next := g.upstream(u.name); next != nil && next != u && next.cfg.Tools.Allowed(name) {
		return g.callToolOn(ctx, req, next, name, tc)
	}
	{
		start := time.Now()
		params := &mcp.CallToolParams{
			Meta:           forwardMeta(req.Params.Meta),
			Name:           name,
			Arguments:      tc.args,
			InputResponses: req.Params.InputResponses,
			RequestState:   req.Params.RequestState,
		}
		if raw, ok := tc.args.(json.RawMessage); ok && len(raw) == 0 {
			params.Arguments = nil
		}
		// The credential serving this tool, bound now (issue 7): see credentials.go.
		var cc *callCred
		cn := u.cfg.credentialFor(name, g.config().Credentials)
		if cn != "" {
			cc = &callCred{name: cn, backup: tc.backup}
			ctx = withCallCred(ctx, cc)
			if f, blocked := g.credentialGate(ctx, u, cn); blocked {
				res := g.failureResult(f, nil)
				g.logCall(ctx, u, name, start, res, nil)
				return res, callOutcome{failure: &f, refused: refusedGate}, nil
			}
		}
		// The breakers (issue 8): asked once for the call, resends included.
		cb, refused := g.admit(u, cn)
		if refused != nil {
			res := g.failureResult(*refused, nil)
			g.logCall(ctx, u, name, start, res, nil)
			why := refusedBreaker
			if u.session.Load() == nil {
				why = refusedDown
			}
			return res, callOutcome{failure: refused, refused: why}, nil
		}
		handedOff := false // the holds cc placed went to a background renewal
		if cc != nil {
			defer func() {
				if !handedOff {
					g.releaseHolds(cc)
				}
			}()
		}
		var res *mcp.CallToolResult
		var err, raw error
		// A call rejected as expired or invalid did not run: once the
		// credential renewed, it is sent again, once.
		for attempt := 0; ; attempt++ {
			var used *mcp.ClientSession
			raw = g.forward(ctx, u, req.Session, req.Params.GetProgressToken(), params, func(ctx context.Context, cs *mcp.ClientSession) (err error) {
				used = cs
				// The fast path's upstream half (issue 12): the request
				// sent by the gateway itself, on an HTTP upstream's shared
				// session (rawcall.go) or on a stdio child's connection
				// (stdioconn.go), whose answers, and whatever the child
				// sends before them, the SDK's reading goroutine reads.
				if u.rawEligible(cs, params) {
					res, err = u.rawCallTool(ctx, cs, params)
				} else if c := u.stdioConn(cs); c != nil && g.config().fastPath() && params.GetProgressToken() == nil {
					res, err = u.stdioCallTool(ctx, c, cs, params)
				} else {
					res, err = cs.CallTool(ctx, params)
				}
				u.keepInputOrder(res)
				res = resultForAgent(cs, agentProtocol(req.Session, req.Extra), res)
				return err
			})
			if attempt == 0 && u.olderInput(used, res, raw) && u.toOlder(ctx, req.Session, used) {
				// The child refused to ask the agent for input on the
				// version the gateway chose; it now speaks one where it
				// may: the call is sent again, once.
				res = nil
				continue
			}
			res, err = g.toolOutcome(u, name, res, raw)
			if r := inputRoundFrom(ctx); r != nil {
				if why := r.refused.Swap(nil); why != nil {
					if f, _ := outcomeFailure(res, err); f != nil || err != nil {
						// What the upstream made of the refusal is its
						// own wording; why it came is the gateway's.
						res, err = g.toolOutcome(u, name, nil, &inputError{err: errors.New(*why)})
					}
				}
			}
			if err == nil && res != nil && (res.NeedsInput() || len(res.InputRequests) > 0 && len(res.Content) == 0) {
				if r := inputRoundFrom(ctx); r != nil {
					r.asked.Store(&inputAsker{u: u, tool: name})
				}
			}
			if cc == nil {
				break
			}
			f, answered := outcomeFailure(res, err)
			if renewable(f) && cc.failsFast() {
				// A backup takes the call now; the renewal goes on.
				handedOff = true
				g.renewBehind(ctx, cc, *f, answered)
				break
			}
			resend, revised := g.afterCall(ctx, cc, f, answered)
			if revised != nil {
				res, err = g.failureResult(g.attribute(u, *revised), nil), nil
			}
			if !resend || attempt > 0 {
				break
			}
			u.awaitCredential(ctx, cc.name)
			res = nil
		}
		f, _ := outcomeFailure(res, err)
		if err == nil && res != nil && f == nil {
			g.noteLinks(u, res)
		}
		cb.done(raw, f)
		g.logCall(ctx, u, name, start, res, err)
		return res, callOutcome{failure: f, raw: raw}, err
	}
}

// promptHandler serves prompts/get for one exposed prompt, resolved per call
// (see toolHandler).
func (g *Server) promptHandler(exposed string) mcp.PromptHandler {
	return func(ctx context.Context, req *mcp.GetPromptRequest) (*mcp.GetPromptResult, error) {
		u, name, ok := g.catalog.promptTarget(exposed)
		if !ok {
			return nil, unknownError("prompt", exposed)
		}
		return g.getPrompt(ctx, req, u, name)
	}
}

// getPrompt forwards one prompts/get to prompt name of upstream u.
func (g *Server) getPrompt(ctx context.Context, req *mcp.GetPromptRequest, u *upstream, name string) (*mcp.GetPromptResult, error) {
	if r := inputRoundFrom(ctx); r != nil {
		r.asked.Store(nil) // a new round: it has asked for nothing yet
	}
	{
		params := *req.Params
		params.Name = name
		params.Meta = forwardMeta(req.Params.Meta)
		var res *mcp.GetPromptResult
		err := g.forwardBreakers(ctx, u, "prompts/get", name, func() error {
			return g.forward(ctx, u, req.Session, req.Params.GetProgressToken(), &params, func(ctx context.Context, cs *mcp.ClientSession) (err error) {
				res, err = cs.GetPrompt(ctx, &params)
				res = promptForAgent(cs, agentProtocol(req.Session, req.Extra), res)
				return err
			})
		})
		if err != nil {
			return nil, err
		}
		if err := g.inputAsked(ctx, req, u, "prompts/get", name, res.InputRequests); err != nil {
			return nil, err
		}
		res.Meta = hopLocalStripped(res.Meta)
		g.redactPrompt(res)
		return res, nil
	}
}

// resourceHandler serves resources/read for a listed resource or a
// template, resolved per call from the URI asked (see toolHandler).
func (g *Server) resourceHandler() mcp.ResourceHandler {
	return func(ctx context.Context, req *mcp.ReadResourceRequest) (*mcp.ReadResourceResult, error) {
		u, uri, listed, ok := g.catalog.resourceTargetListed(req.Params.URI)
		if !ok {
			return nil, mcp.ResourceNotFoundError(req.Params.URI)
		}
		if !listed {
			uri = ""
		}
		return g.readResource(ctx, req, u, uri)
	}
}

// readResource forwards one resources/read to upstream u. uri is the
// upstream's URI of a listed resource, or "" for a template, whose URIs pass
// unchanged.
func (g *Server) readResource(ctx context.Context, req *mcp.ReadResourceRequest, u *upstream, uri string) (*mcp.ReadResourceResult, error) {
	if r := inputRoundFrom(ctx); r != nil {
		r.asked.Store(nil) // a new round: it has asked for nothing yet
	}
	{
		params := *req.Params
		if uri != "" {
			params.URI = uri
		}
		params.Meta = forwardMeta(req.Params.Meta)
		var res *mcp.ReadResourceResult
		err := g.forwardBreakers(ctx, u, "resources/read", params.URI, func() error {
			return g.forward(ctx, u, req.Session, req.Params.GetProgressToken(), &params, func(ctx context.Context, cs *mcp.ClientSession) (err error) {
				res, err = cs.ReadResource(ctx, &params)
				res = resourceForAgent(cs, agentProtocol(req.Session, req.Extra), res)
				return err
			})
		})
		if err != nil {
			return nil, err
		}
		if err := g.inputAsked(ctx, req, u, "resources/read", params.URI, res.InputRequests); err != nil {
			return nil, err
		}
		res.Meta = hopLocalStripped(res.Meta)
		g.redactResource(res)
		if uri != "" && req.Params.URI != uri {
			// The agent knows this resource by an alias: answer in its terms.
			for _, c := range res.Contents {
				if c != nil && c.URI == uri {
					c.URI = req.Params.URI
				}
			}
		}
		return res, nil
	}
}

// complete forwards completion/complete to the upstream behind the prompt or
// resource it refers to.
func (g *Server) complete(ctx context.Context, req *mcp.CompleteRequest) (*mcp.CompleteResult, error) {
	params := *req.Params
	ref := *req.Params.Ref
	params.Ref = &ref
	params.Meta = forwardMeta(req.Params.Meta)
	var u *upstream
	var ok bool
	switch ref.Type {
	case "ref/prompt":
		var name string
		if u, name, ok = g.catalog.promptTarget(ref.Name); ok {
			ref.Name = name
		}
	case "ref/resource":
		var uri string
		if u, uri, ok = g.catalog.resourceTarget(ref.URI); ok {
			ref.URI = uri
		}
	}
	if !ok {
		// A reference the catalog does not know goes to the one upstream
		// that completes, so a gateway in front of one server is transparent;
		// with several (or none), it is unknown, as to prompts/get and
		// resources/read (found trying the gateway from outside: an empty
		// success, where a server answers -32602).
		if u = g.sole(func(c *mcp.ServerCapabilities) bool { return c.Completions != nil }); u == nil {
			if ref.Type == "ref/resource" {
				return nil, invalidParams(fmt.Sprintf("completion/complete: unknown resource or template %q", ref.URI))
			}
			return nil, invalidParams(fmt.Sprintf("completion/complete: unknown prompt %q", ref.Name))
		}
	}
	var res *mcp.CompleteResult
	err := g.forward(ctx, u, req.Session, nil, nil, func(ctx context.Context, cs *mcp.ClientSession) (err error) {
		res, err = cs.Complete(ctx, &params)
		return err
	})
	if err != nil {
		return nil, g.rpcError(u, "completion/complete", ref.Name+ref.URI, err)
	}
	// A result of the gateway's own: the upstream's server info and result
	// type (a 2026-07-28 upstream's, hop-local) stay behind, as they do for
	// prompts and resources; the gateway's SDK sets its own for an agent of
	// that protocol (found trying the gateway from outside: a 2025-11-25
	// agent got the upstream's serverInfo and a resultType its schema lacks).
	out := &mcp.CompleteResult{Meta: hopLocalStripped(res.Meta), Completion: res.Completion}
	g.redactCompletion(out)
	return out, nil
}

func (g *Server) subscribe(ctx context.Context, req *mcp.SubscribeRequest) error {
	if g.config().Stateless && agentProtocol(req.Session, req.Extra) < "2026-07-28" {
		// No session, so no stream to carry its updates (found trying the
		// gateway from outside: it was taken, and never delivered).
		return invalidParams("resources/subscribe: this gateway is stateless (stateless: true), so it has no stream to send a " +
			"2025-11-25 (or older) agent the resource's updates on; read the resource again instead, or use protocol 2026-07-28")
	}
	return g.subscription(ctx, req.Session, "resources/subscribe", req.Params.URI, func(ctx context.Context, cs *mcp.ClientSession, uri string) error {
		return cs.Subscribe(ctx, &mcp.SubscribeParams{URI: uri})
	})
}

func (g *Server) unsubscribe(ctx context.Context, req *mcp.UnsubscribeRequest) error {
	return g.subscription(ctx, req.Session, "resources/unsubscribe", req.Params.URI, func(ctx context.Context, cs *mcp.ClientSession, uri string) error {
		return cs.Unsubscribe(ctx, &mcp.UnsubscribeParams{URI: uri})
	})
}

// subscription forwards a subscribe or unsubscribe to the resource's upstream.
func (g *Server) subscription(ctx context.Context, ss *mcp.ServerSession, method, exposed string, do func(context.Context, *mcp.ClientSession, string) error) error {
	if exposed == HealthURI {
		return nil // the gateway's own: the SDK keeps the subscription
	}
	u, uri, ok := g.resourceOwner(exposed)
	if !ok {
		return invalidParams(fmt.Sprintf("%s: unknown resource %q", method, exposed))
	}
	// One change at a time, so that whether the shared session holds a
	// subscription always matches what was recorded (a second agent's
	// subscribe waits for the first's outcome rather than ride on it).
	u.subsOp.Lock()
	defer u.subsOp.Unlock()
	send, undo := u.holdSubscription(uri, ss, method == "resources/subscribe")
	if !send {
		return nil // other agents hold the shared session's subscription
	}
	err := g.forward(ctx, u, ss, nil, nil, func(ctx context.Context, cs *mcp.ClientSession) error {
		return do(ctx, cs, uri)
	})
	if err != nil {
		undo()
		return g.rpcError(u, method, uri, err)
	}
	return nil
}

// forward runs one request on u's session: it maps the progress token, tracks
// the call so that what the upstream sends during it reaches this agent,
// bounds it by the upstream's timeout, and drops a session that proved dead.
func (g *Server) forward(ctx context.Context, u *upstream, ss *mcp.ServerSession, token any, params mcp.Params, do func(context.Context, *mcp.ClientSession) error) error {
	if g.draining.Load() {
		return fmt.Errorf("upstream %q: %w", u.name, ErrShuttingDown)
	}
	if !u.gate.enter() {
		return retiredError(u)
	}
	defer u.gate.leave()
	cs, release, err := u.sessionForCall(ctx, ss)
	if err != nil {
		return err
	}
	defer release()
	var call *inflight
	if ss != nil || fastStreamFrom(ctx) != nil { // a stateless fast call has no session
		var untrack func()
		call, untrack = u.track(ctx, ss)
		defer untrack()
		if fs := fastStreamFrom(ctx); fs != nil {
			fs.call.Store(call) // for the requests the upstream sends on the call's stream
		}
	}
	if token != nil && params != nil && ss != nil {
		up, done := g.progress.route(ctx, ss, token, call)
		defer done()
		if p, ok := params.(interface{ SetProgressToken(any) }); ok {
			p.SetProgressToken(up)
		}
	}
	// At most two attempts: an HTTP upstream that lost our session (it
	// restarted) rejected the request before running it, so it is safe to
	// send again once the session is re-established, and the agent never
	// sees the restart. Nothing else is resent.
	for attempt := 0; ; attempt++ {
		if params != nil {
			g.passLogLevel(cs, ss, params)
		}
		actx, endSpan := g.attemptSpan(ctx, u, params, attempt)
		err = u.call(actx, cs, call, do)
		endSpan(err)
		u.notes.drain(ctx)
		if err == nil || !(connectionGone(err) || u.streamEnded(err)) {
			return err
		}
		// The upstream shows as down at once and reconnects (issue 6 item
		// 11), rather than when the transport gives up on its own.
		if !u.lost(cs, err) {
			u.drop(ss, cs)
		}
		err = &sessionLostError{cs: cs, err: err} // one loss for the breaker, however many calls it ends
		if !isDeadSession(err) {
			return err
		}
		if attempt > 0 || !errors.Is(err, mcp.ErrSessionMissing) {
			return err
		}
		next := u.awaitSession(ctx, ss, cs)
		if next == nil {
			return err
		}
		cs = next
	}
}

// resultForAgent returns res as the agent of req may get it: a 2026-07-28
// upstream's complete result carries "resultType", which an agent older
// than that protocol does not know, so it gets the result without it.
// (The same holds for prompts/get and resources/read: promptForAgent,
// resourceForAgent.)
func resultForAgent(cs *mcp.ClientSession, agent string, res *mcp.CallToolResult) *mcp.CallToolResult {
	if res == nil || res.InputRequests != nil || !newProtocol(cs) || agent >= protocol20260728 {
		return res
	}
	return &mcp.CallToolResult{Meta: res.Meta, Content: res.Content, StructuredContent: res.StructuredContent, IsError: res.IsError, RequestState: res.RequestState}
}

func promptForAgent(cs *mcp.ClientSession, agent string, res *mcp.GetPromptResult) *mcp.GetPromptResult {
	if res == nil || res.InputRequests != nil || !newProtocol(cs) || agent >= protocol20260728 {
		return res
	}
	return &mcp.GetPromptResult{Meta: res.Meta, Description: res.Description, Messages: res.Messages, RequestState: res.RequestState}
}

func resourceForAgent(cs *mcp.ClientSession, agent string, res *mcp.ReadResourceResult) *mcp.ReadResourceResult {
	if res == nil || res.InputRequests != nil || !newProtocol(cs) || agent >= protocol20260728 {
		return res
	}
	return &mcp.ReadResourceResult{Meta: res.Meta, Cacheable: res.Cacheable, Contents: res.Contents, RequestState: res.RequestState}
}

// protocol20260728 is the first MCP version with per-request metadata and input
// rounds in results (SEP-2575, SEP-2322).
const protocol20260728 = "2026-07-28"

// agentProtocol is the protocol version the agent of a request on ss, with
// extra, speaks.
func agentProtocol(ss *mcp.ServerSession, extra *mcp.RequestExtra) string {
	if ss != nil {
		if p := ss.InitializeParams(); p != nil && p.ProtocolVersion != "" {
			return p.ProtocolVersion
		}
	}
	if extra != nil && extra.Header != nil {
		return extra.Header.Get("Mcp-Protocol-Version")
	}
	return ""
}

// forwardMeta copies the agent's _meta without the hop-local keys and the
// progress token (which forward maps).
func forwardMeta(m mcp.Meta) mcp.Meta {
	if len(m) == 0 {
		return nil
	}
	out := make(mcp.Meta, len(m))
	for k, v := range m {
		if k == "progressToken" || (strings.HasPrefix(k, reservedMetaPrefix) && k != mcp.MetaKeyLogLevel) {
			continue
		}
		out[k] = v
	}
	if len(out) == 0 {
		return nil
	}
	return out
}

// progressRouter maps the gateway's own progress tokens, unique across every
// agent, back to the agent's session, request and token.
type progressRouter struct {
	next   atomic.Int64
	mu     sync.Mutex
	routes map[string]progressRoute
}

type progressRoute struct {
	ctx     context.Context
	session *mcp.ServerSession
	token   any
	call    *inflight // its notification budget (see floodGuard)
}

// What forward did with a progress notification.
type progressOutcome int

const (
	progressSent    progressOutcome = iota
	progressUnknown                 // no call of its token in flight
	progressDropped                 // over its call's budget
)

func newProgressRouter() *progressRouter {
	return &progressRouter{routes: map[string]progressRoute{}}
}

func (p *progressRouter) route(ctx context.Context, ss *mcp.ServerSession, token any, call *inflight) (string, func()) {
	id := "cg-" + strconv.FormatInt(p.next.Add(1), 10)
	p.mu.Lock()
	p.routes[id] = progressRoute{ctx: ctx, session: ss, token: token, call: call}
	p.mu.Unlock()
	return id, func() {
		p.mu.Lock()
		delete(p.routes, id)
		p.mu.Unlock()
	}
}

// forward passes an upstream progress notification to the agent that asked
// for it, on that request's context so that it travels on the request's own
// stream, within the call's budget, through redact.
func (p *progressRouter) forward(_ context.Context, params *mcp.ProgressNotificationParams, redact func(*mcp.ProgressNotificationParams) *mcp.ProgressNotificationParams) progressOutcome {
	id, ok := params.ProgressToken.(string)
	if !ok {
		return progressUnknown
	}
	p.mu.Lock()
	r, ok := p.routes[id]
	p.mu.Unlock()
	if !ok {
		return progressUnknown
	}
	if r.call != nil && !r.call.allowNotify() {
		return progressDropped
	}
	q := *redact(params)
	q.ProgressToken = normalizeToken(r.token)
	_ = r.session.NotifyProgress(r.ctx, &q)
	return progressSent
}

// normalizeToken turns a JSON-decoded numeric token back into an integer.
func normalizeToken(t any) any {
	switch v := t.(type) {
	case float64:
		if v == float64(int64(v)) {
			return int64(v)
		}
	case json.Number:
		if n, err := v.Int64(); err == nil {
			return n
		}
	}
	return t
}

// resourceOwner finds the upstream serving uri: a listed resource, a URI
// matching a template, a URI an upstream's result linked, or else the one
// upstream that offers resources at all (servers may serve URIs they do not
// list).
func (g *Server) resourceOwner(uri string) (*upstream, string, bool) {
	if u, orig, ok := g.catalog.resourceTarget(uri); ok {
		return u, orig, true
	}
	if u := g.upstream(g.links.owner(uri)); u != nil {
		return u, uri, true // linked by its result (links.go)
	}
	if u := g.sole(func(c *mcp.ServerCapabilities) bool { return c.Resources != nil }); u != nil {
		return u, uri, true
	}
	return nil, "", false
}

// sole returns the only upstream whose capabilities satisfy has, or nil if
// there are none or several.
func (g *Server) sole(has func(*mcp.ServerCapabilities) bool) *upstream {
	var found *upstream
	for _, u := range g.ups() {
		caps := u.catalog().caps
		if caps == nil || !has(caps) {
			continue
		}
		if found != nil {
			return nil
		}
		found = u
	}
	return found
}

// trackLogLevel is a receiving middleware that remembers the log level each
// 2025-11-25 agent session asked for, to pass it on to 2026-07-28 upstreams,
// which take it per request.
func (g *Server) trackLogLevel(next mcp.MethodHandler) mcp.MethodHandler {
	return func(ctx context.Context, method string, req mcp.Request) (mcp.Result, error) {
		if method == "logging/setLevel" {
			if p, ok := req.GetParams().(*mcp.SetLoggingLevelParams); ok && p != nil {
				if logSeverity(p.Level) < 0 {
					return nil, &jsonrpc.Error{Code: jsonrpc.CodeInvalidParams, Message: fmt.Sprintf("invalid log level %q: want one of debug, info, notice, warning, error, critical, alert, emergency", p.Level)}
				}
				if ss, ok := req.GetSession().(*mcp.ServerSession); ok {
					if _, seen := g.logLevels.Swap(ss, p.Level); !seen {
						go func() { // forget the session when it ends
							_ = ss.Wait()
							g.logLevels.Delete(ss)
						}()
					}
				}
			}
		}
		return next(ctx, method, req)
	}
}

// passLogLevel sets the log level of a request to the upstream: a 2025-11-25
// upstream was set to debug once (setLogLevel), so the per-request key is
// dropped; a 2026-07-28 upstream gets the agent's level, from the agent's
// request or its session. Each agent's level filters again on the way out.
func (g *Server) passLogLevel(cs *mcp.ClientSession, ss *mcp.ServerSession, params mcp.Params) {
	m := params.GetMeta()
	if !newProtocol(cs) {
		if m != nil {
			delete(m, mcp.MetaKeyLogLevel)
		}
		return
	}
	if _, ok := m[mcp.MetaKeyLogLevel]; ok || ss == nil {
		return
	}
	if lvl, ok := g.logLevels.Load(ss); ok {
		if m == nil {
			m = map[string]any{}
			params.SetMeta(m)
		}
		m[mcp.MetaKeyLogLevel] = lvl
	}
}

// unlisted is a receiving middleware for names and URIs the catalog does not
// list. Servers answer for things they do not list (a resource URI outside
// any template, a tool they hide from tools/list, an unknown tool reported as
// a tool error), so a request for one goes to the single upstream it can
// belong to, and the gateway stays transparent in front of one server. With
// no such upstream, or several, the SDK answers as for any unknown name.
func (g *Server) unlisted(next mcp.MethodHandler) mcp.MethodHandler {
	return func(ctx context.Context, method string, req mcp.Request) (mcp.Result, error) {
		switch r := req.(type) {
		case *mcp.CallToolRequest:
			if r.Params == nil || g.catalog.hasTool(r.Params.Name) {
				break
			}
			// A routed tool not listed (no target listed yet, or hidden
			// by routing.hide_unavailable): the route answers.
			if s := g.snap.Load(); s.routes.Lookup(r.Params.Name) != nil {
				res, err := g.callRoute(ctx, r, s, s.routes.Lookup(r.Params.Name))
				return res, settleResult(ctx, g, req, res, err)
			}
			if u, name := g.ownerByName(r.Params.Name, true); u != nil {
				res, err := g.callTool(ctx, r, u, name)
				return res, settleResult(ctx, g, req, res, err)
			}
			// A tool of an upstream that is down, and never listed its tools:
			// say why it cannot be called instead of "unknown tool", and
			// audit and count it as any call (it was neither: a credential
			// rejected at connect left no trace of the calls it failed).
			if u, name := g.downOwner(r.Params.Name); u != nil {
				start := time.Now()
				res := g.failureResult(g.downFailure(u), nil)
				g.logCall(ctx, u, name, start, res, nil)
				return res, settleResult(ctx, g, req, res, nil)
			}
		case *mcp.GetPromptRequest:
			if r.Params == nil || g.catalog.hasPrompt(r.Params.Name) {
				break
			}
			if u, name := g.ownerByName(r.Params.Name, false); u != nil {
				res, err := g.getPrompt(ctx, r, u, name)
				return res, settleResult(ctx, g, req, res, err)
			}
		case *mcp.ReadResourceRequest:
			if r.Params == nil {
				break
			}
			if r.Params.URI == HealthURI {
				res, err := g.readHealthResource()
				return res, settleResult(ctx, g, req, res, err)
			}
			if _, _, known := g.catalog.resourceTarget(r.Params.URI); known {
				break
			}
			if u, uri, ok := g.resourceOwner(r.Params.URI); ok {
				res, err := g.readResource(ctx, r, u, uri)
				return res, settleResult(ctx, g, req, res, err)
			}
		}
		return next(ctx, method, req)
	}
}

// settleResult gives res, a result unlisted made itself, what the SDK's own
// handlers' results get (SettleResult): the result type for a 2026-07-28
// agent, a read's cache fields. A read of a resource link's URI came back
// with neither (found trying the gateway from outside). It returns err, or
// SettleResult's.
func settleResult[R interface {
	mcp.Result
	comparable
}](ctx context.Context, g *Server, req mcp.Request, res R, err error) error {
	var zero R
	if err != nil || res == zero {
		return err
	}
	return g.mcp.SettleResult(ctx, req, res)
}

// ownerByName returns the one upstream an unlisted exposed name can belong
// to, by prefix, with the upstream's own name for it. The name belongs to the
// upstream whose prefix it carries (the longest, see [routing.Owner]); only a
// name carrying no prefix can go to an unprefixed upstream, so that one never
// receives calls meant for another. A tool name must also pass the upstream's
// tool filter: unlisted is no way around a deny.
func (g *Server) ownerByName(exposed string, tool bool) (*upstream, string) {
	owner := routing.Owner(exposed, g.config().ToolSeparator, g.prefixes())
	var found *upstream
	var orig string
	for _, u := range g.ups() {
		p := u.cfg.prefix(u.name)
		if p != owner {
			continue
		}
		name := strings.TrimPrefix(exposed, p+g.config().ToolSeparator)
		if p == "" {
			name = exposed
		}
		if name == "" || u.session.Load() == nil {
			continue
		}
		caps := u.catalog().caps
		if caps == nil || (tool && (caps.Tools == nil || !u.cfg.Tools.Allowed(name))) || (!tool && caps.Prompts == nil) {
			continue
		}
		if found != nil {
			return nil, ""
		}
		found, orig = u, name
	}
	return found, orig
}

// prefixes returns every upstream's effective prefix, in config order.
func (g *Server) prefixes() []string {
	out := make([]string, len(g.ups()))
	for i, u := range g.ups() {
		out[i] = u.cfg.prefix(u.name)
	}
	return out
}

// newProtocol reports whether cs speaks 2026-07-28 or later.
func newProtocol(cs *mcp.ClientSession) bool {
	res := cs.InitializeResult()
	return res != nil && res.ProtocolVersion >= protocol20260728
}

// errTimeout is the cause of a call context ended by the upstream's timeout.
var errTimeout = errors.New("upstream timeout")

// callTimer is a call's timeout that is put off by the time the upstream
// spends waiting for the call's agent (see upstream.call).
type callTimer struct {
	c       *inflight // nil: nothing puts it off, and the lock is not needed
	d       time.Duration
	start   time.Time
	mu      sync.Mutex
	t       *time.Timer
	stopped bool
}

// newCallTimer runs expire once the upstream has had d for the call, not
// counting its waits for the call's agent (c may be nil: none). While the
// agent is asked, the timer does nothing; the end of the wait sets it again
// (recheck).
func newCallTimer(d time.Duration, c *inflight, expire func()) *callTimer {
	if c == nil {
		return &callTimer{t: time.AfterFunc(d, expire)}
	}
	ct := &callTimer{c: c, d: d, start: time.Now()}
	ct.mu.Lock()
	defer ct.mu.Unlock()
	ct.t = time.AfterFunc(d, func() {
		ct.mu.Lock()
		defer ct.mu.Unlock()
		if ct.stopped {
			return // the call ended meanwhile: its context stays open (see call)
		}
		left, waiting := ct.leftLocked()
		switch {
		case waiting: // the end of the wait sets it again
		case left > 0:
			ct.t.Reset(left)
		default:
			expire()
		}
	})
	c.setTimer(ct)
	return ct
}

// leftLocked returns the upstream's time left, and whether it waits for
// the agent now.
func (ct *callTimer) leftLocked() (time.Duration, bool) {
	waited, waiting := ct.c.agentWaited()
	return ct.d - (time.Since(ct.start) - waited), waiting
}

// recheck sets the timer for the upstream's time left, at the end of a
// wait for the agent.
func (ct *callTimer) recheck() {
	ct.mu.Lock()
	defer ct.mu.Unlock()
	if left, waiting := ct.leftLocked(); !ct.stopped && !waiting {
		ct.t.Reset(max(left, 0))
	}
}

// Stop stops the timer; once it returns, expire is not called.
func (ct *callTimer) Stop() {
	if ct.c == nil {
		ct.t.Stop()
		return
	}
	ct.mu.Lock()
	ct.stopped = true
	ct.t.Stop()
	ct.mu.Unlock()
}

// call runs do on a context that ends when ctx ends or the upstream's timeout
// passes, but not when do returns. The SDK reads the rest of an HTTP
// response stream on that context after handing over the result; ending it
// at return would abort the read and throw the pooled connection away, so
// every call would open a new upstream connection. The context is left to
// the garbage collector instead (its parent has no Done channel, so nothing
// else holds it).
//
// The time the upstream spends waiting for the agent of call c (an
// elicitation or sampling request it sent during the call) does not count
// against its timeout: a person filling in a form, or an agent slow to
// answer, is not the upstream failing to answer (found trying the gateway
// from outside: five agents slow to answer opened the upstream's breaker for
// every agent, as timeouts).
func (u *upstream) call(ctx context.Context, cs *mcp.ClientSession, c *inflight, do func(context.Context, *mcp.ClientSession) error) error {
	callCtx, cancel := context.WithCancelCause(context.WithoutCancel(ctx))
	stop := context.AfterFunc(ctx, func() { cancel(context.Cause(ctx)) })
	// At the shutdown deadline, calls still running end (issue 6 item 9).
	stopAbort := context.AfterFunc(u.gw.abortCtx, func() { cancel(ErrShuttingDown) })
	timer := newCallTimer(u.cfg.timeout(), c, func() { cancel(errTimeout) })
	shared := u.begin(cs)
	err := do(callCtx, cs)
	u.end(shared, err)
	timer.Stop()
	stop()
	stopAbort()
	if err != nil {
		switch cause := context.Cause(callCtx); {
		case errors.Is(cause, errTimeout):
			// Not wrapping err: the SDK reports the ended context as
			// context.Canceled, which would read as the caller cancelling.
			err = &timeoutError{after: u.cfg.timeout(), err: err}
		case errors.Is(cause, ErrShuttingDown):
			err = fmt.Errorf("upstream %q: %w", u.name, ErrShuttingDown)
		}
	}
	return err
}

// downOwner returns the upstream without a session whose prefix an exposed
// name carries (the longest, as in ownerByName), if any.
func (g *Server) downOwner(exposed string) (*upstream, string) {
	owner := routing.Owner(exposed, g.config().ToolSeparator, g.prefixes())
	if owner == "" {
		return nil, ""
	}
	for _, u := range g.ups() {
		if u.cfg.prefix(u.name) != owner || u.session.Load() != nil {
			continue
		}
		if name := strings.TrimPrefix(exposed, owner+g.config().ToolSeparator); name != "" && u.cfg.Tools.Allowed(name) {
			return u, name
		}
	}
	return nil, ""
}

// hopLocalStripped returns m without the io.modelcontextprotocol/ keys the
// upstream's SDK set for its own hop (its server info, protocol version);
// the gateway's SDK sets its own. m is copied only when it has such a key.
func hopLocalStripped(m mcp.Meta) mcp.Meta {
	found := false
	for k := range m {
		if strings.HasPrefix(k, reservedMetaPrefix) {
			found = true
			break
		}
	}
	if !found {
		return m
	}
	out := make(mcp.Meta, len(m))
	for k, v := range m {
		if !strings.HasPrefix(k, reservedMetaPrefix) {
			out[k] = v
		}
	}
	if len(out) == 0 {
		return nil
	}
	return out
}
