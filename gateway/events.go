package gateway

import (
	"errors"
	"strings"
	"sync"
	"time"

	"github.com/credgate/credgate/authmap"
	"github.com/credgate/credgate/breaker"
)

// The event bus (issue 10).
//
// Every state change worth showing someone is published once, as an [Event]
// with an id that only grows and a timestamp, into a bounded in-memory ring:
//
//	credentialEvent (authmap) ─┐
//	breakerChange (breaker)  ──┤                 ┌─▶ listeners: notify (alerts), metrics
//	setUp / setDown (upstream)─┼─▶ publish ──▶ ring ──▶ GET /events (SSE), GET /admin/events
//	routes, config reload     ─┘   (id, time)    └─▶ GET /status (the last events)
//
// Listeners are called synchronously, in id order, under the bus's lock: they
// must be quick, never block (the notifier only updates its state and queues
// without waiting) and never publish. Stream subscribers do not get a buffer
// of their own: each keeps a cursor (the last id it sent) into the shared
// ring and is woken by a non-blocking signal, so a slow or stuck client costs
// publishers nothing. A client that falls so far behind that the ring no
// longer holds its next event is told how many it missed (event "missed"),
// and a client that does not read at all is disconnected by a write
// deadline (see sse.go).

// EventType is what an event is about.
type EventType string

// Event types.
const (
	EventCredential EventType = "credential" // a credential lifecycle event (kinds: authmap's EventKind)
	EventBreaker    EventType = "breaker"    // a circuit breaker changed state
	EventUpstream   EventType = "upstream"   // an upstream came up or went down
	EventRoute      EventType = "route"      // a route switched target (published by routing)
	EventConfig     EventType = "config"     // a config reload (published by the reloader)
	EventState      EventType = "state"      // the shared state store became unreachable (degraded) or answered again (ok)
)

// Event kinds of the types other than credential (whose kinds are
// [authmap.EventKind]'s).
const (
	KindBreakerOpen     = "open"
	KindBreakerHalfOpen = "half-open"
	KindBreakerClosed   = "closed"

	KindUpstreamUp   = "up"
	KindUpstreamDown = "down"

	// KindRouteSwitched: a route's active target changed (Target is the
	// new one, From the old one, Reason why).
	KindRouteSwitched = "switched"
	// KindRouteNoTarget: a route has no healthy target left (Target empty).
	KindRouteNoTarget = "no_target"

	KindConfigReloaded     = "reloaded"      // a new config was applied
	KindConfigReloadFailed = "reload_failed" // a new config was refused; the old one stays (Detail says why)
)

// Event is one state change: an entry of the ring, one SSE event of GET
// /events, one entry of GET /admin/events. Fields that do not apply to its
// type are empty. No field ever holds a secret: details are redacted before
// they are published.
type Event struct {
	// ID grows by one with each event published by this process (from 1).
	ID   uint64    `json:"id"`
	Time time.Time `json:"time"`
	Type EventType `json:"type"`
	// Kind is what happened: for credential events an [authmap.EventKind]
	// (loaded, rotated, refreshed, refresh_failed, revoked, ...), for the
	// others one of the Kind constants.
	Kind string `json:"kind"`

	// Credential events (the fields of the former audit log, kept as they were).
	Credential string `json:"credential,omitempty"`
	Trigger    string `json:"trigger,omitempty"`
	// Status is the state after the event: a credential's status, a
	// breaker's state, an upstream's status.
	Status  string `json:"status,omitempty"`
	Version string `json:"version,omitempty"`
	Detail  string `json:"detail,omitempty"`
	// Upstreams use the credential; Tools are the exposed tool globs it serves.
	Upstreams []string `json:"upstreams,omitempty"`
	Tools     []string `json:"tools,omitempty"`

	// Breaker, upstream and route events.
	Upstream string `json:"upstream,omitempty"`
	// From is the state (breaker) or target (route) before.
	From   string     `json:"from,omitempty"`
	Reason string     `json:"reason,omitempty"`
	Until  *time.Time `json:"until,omitempty"`
	// Failure is why an upstream went down, classified.
	Failure *authmap.Failure `json:"failure,omitempty"`
	Route   string           `json:"route,omitempty"`
	Target  string           `json:"target,omitempty"`
}

// Bounds of the bus.
const (
	// maxEvents is how many events the ring keeps (GET /admin/events, the
	// replay of GET /events, the status page).
	maxEvents = 1000
	// maxEventSubscribers bounds the GET /events streams open at once; one
	// more is answered 503.
	maxEventSubscribers = 64
	// maxEventDetail bounds an event's detail, so the ring's size is bounded
	// whatever a provider's error says.
	maxEventDetail = 600
)

// errTooManySubscribers refuses a stream beyond maxEventSubscribers.
var errTooManySubscribers = errors.New("too many event subscribers")

// eventBus is the ring, its listeners and its stream subscribers.
type eventBus struct {
	mu        sync.Mutex
	ring      []Event // capacity max; oldest at start once full
	start     int
	max       int
	last      uint64 // id of the newest event; 0 before the first
	listeners []func(Event)
	subs      map[*eventSub]struct{}
	maxSubs   int
}

// eventSub is one stream subscriber: a signal that new events exist.
type eventSub struct{ wake chan struct{} }

func newEventBus(max, maxSubs int) *eventBus {
	return &eventBus{max: max, maxSubs: maxSubs, subs: map[*eventSub]struct{}{}}
}

// listen adds a listener, called for every event published from now on (see
// the package comment above: quick, non-blocking, never publishing).
func (b *eventBus) listen(fn func(Event)) {
	b.mu.Lock()
	b.listeners = append(b.listeners, fn)
	b.mu.Unlock()
}

// publish stamps e with the next id (and now, when it has no time), keeps
// it in the ring, hands it to the listeners and wakes the subscribers.
func (b *eventBus) publish(e Event, now time.Time) Event {
	if e.Time.IsZero() {
		e.Time = now
	}
	e.Detail = truncate(e.Detail, maxEventDetail)
	b.mu.Lock()
	defer b.mu.Unlock()
	b.last++
	e.ID = b.last
	if len(b.ring) < b.max {
		b.ring = append(b.ring, e)
	} else {
		b.ring[b.start] = e
		b.start = (b.start + 1) % b.max
	}
	for _, l := range b.listeners {
		l(e)
	}
	for s := range b.subs {
		select {
		case s.wake <- struct{}{}:
		default: // already signalled: it will read everything new
		}
	}
	return e
}

// subscribe registers a stream subscriber, unless maxSubs are open.
func (b *eventBus) subscribe() (*eventSub, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.subs) >= b.maxSubs {
		return nil, errTooManySubscribers
	}
	s := &eventSub{wake: make(chan struct{}, 1)}
	b.subs[s] = struct{}{}
	return s, nil
}

func (b *eventBus) unsubscribe(s *eventSub) {
	b.mu.Lock()
	delete(b.subs, s)
	b.mu.Unlock()
}

// all returns the events kept, oldest first.
func (b *eventBus) all() []Event {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.afterLocked(0)
}

func (b *eventBus) afterLocked(after uint64) []Event {
	n := len(b.ring)
	out := make([]Event, 0, n)
	for i := range n {
		e := b.ring[(b.start+i)%n]
		if e.ID > after {
			out = append(out, e)
		}
	}
	return out
}

// eventGap says that a reader asked for events the ring no longer holds.
type eventGap struct {
	// After is the id the reader had seen; Oldest the oldest id kept.
	After  uint64 `json:"after"`
	Oldest uint64 `json:"oldest"`
	// Missed is how many events it will never get; -1 when unknown (its id
	// came from before this process started).
	Missed int64 `json:"missed"`
	// Reason: "overflow" (the ring moved on: the reader was too slow or away
	// too long) or "restarted" (its id is newer than any here: the gateway
	// restarted since).
	Reason string `json:"reason"`
}

// after returns the events newer than id after, oldest first, at most limit
// (0 = no limit), and the gap when some of those newer events are no
// longer kept, or after is from before a restart.
func (b *eventBus) after(after uint64, limit int) ([]Event, *eventGap) {
	b.mu.Lock()
	defer b.mu.Unlock()
	var gap *eventGap
	oldest := b.last + 1
	if len(b.ring) > 0 {
		oldest = b.ring[b.start%len(b.ring)].ID
	}
	switch {
	case after > b.last:
		gap = &eventGap{After: after, Oldest: oldest, Missed: -1, Reason: "restarted"}
		after = 0
	case after+1 < oldest:
		gap = &eventGap{After: after, Oldest: oldest, Missed: int64(oldest - after - 1), Reason: "overflow"}
	}
	out := b.afterLocked(after)
	if limit > 0 && len(out) > limit {
		out = out[:limit]
	}
	return out, gap
}

// lastID returns the newest event's id (0 before the first).
func (b *eventBus) lastID() uint64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.last
}

// publish publishes e on the gateway's bus and returns it with its id and
// time. It is for every state change worth showing: the route table and the
// config reloader publish theirs with it (types EventRoute, EventConfig).
// e's Detail must already be redacted.
func (g *Server) publish(e Event) Event {
	return g.events.publish(e, g.now())
}

// publishRouteSwitch publishes a route's change of active target: to is the
// target now serving (empty when none is healthy: kind no_target), from the
// one before, reason why.
func (g *Server) publishRouteSwitch(route, from, to, reason string) Event {
	kind := KindRouteSwitched
	if to == "" {
		kind = KindRouteNoTarget
	}
	return g.publish(Event{Type: EventRoute, Kind: kind, Route: route, From: from, Target: to, Reason: g.redact(reason)})
}

// publishConfigReload publishes the outcome of a config reload: err nil for
// a config applied (what says what it changed), else why it was refused. (publishRouteSwitch and this
// are for the route table and the config reloader, which call them once
// they exist.)
func (g *Server) publishConfigReload(trigger, what string, err error) Event {
	e := Event{Type: EventConfig, Kind: KindConfigReloaded, Trigger: trigger, Detail: what}
	if err != nil {
		e.Kind, e.Detail = KindConfigReloadFailed, g.redact(err.Error())
	}
	return g.publish(e)
}

// publishCredential publishes a credential lifecycle event with its scope.
func (g *Server) publishCredential(e authmap.Event, ups, tools []string) Event {
	return g.publish(Event{
		Time: e.Time, Type: EventCredential, Kind: string(e.Kind), Credential: e.Credential,
		Trigger: string(e.Trigger), Status: e.Status.String(), Version: e.Version, Detail: g.redact(e.Detail),
		Upstreams: ups, Tools: tools,
	})
}

// publishBreaker publishes a breaker's change of state.
func (g *Server) publishBreaker(c breaker.Change) {
	up, cred, _ := strings.Cut(c.Name, "/")
	e := Event{Type: EventBreaker, Kind: c.To.String(), Status: c.To.String(), From: c.From.String(),
		Upstream: up, Credential: cred, Reason: c.Reason}
	if !c.Until.IsZero() {
		t := c.Until.UTC()
		e.Until = &t
	}
	g.publish(e)
}

// publishUpstream publishes an upstream's change between up and down; f is
// why it went down.
func (g *Server) publishUpstream(name, status string, f *authmap.Failure, detail string) {
	e := Event{Type: EventUpstream, Kind: status, Status: status, Upstream: name, Detail: detail}
	if f != nil {
		cp := *f
		cp.Detail = truncate(cp.Detail, maxEventDetail)
		e.Failure = &cp
	}
	g.publish(e)
}

// EventLog returns the events kept (the last 1,000 of every type), oldest
// first.
func (g *Server) EventLog() []Event { return g.events.all() }

// Events returns the credential lifecycle events kept, oldest first, in the
// shape of the former audit log.
func (g *Server) Events() []AuditEvent {
	var out []AuditEvent
	for _, e := range g.events.all() {
		if e.Type != EventCredential {
			continue
		}
		var st authmap.Status
		_ = st.UnmarshalText([]byte(e.Status))
		out = append(out, AuditEvent{
			Event: authmap.Event{Time: e.Time, Credential: e.Credential, Kind: authmap.EventKind(e.Kind),
				Trigger: authmap.Trigger(e.Trigger), Status: st, Version: e.Version, Detail: e.Detail},
			Upstreams: e.Upstreams, Tools: e.Tools,
		})
	}
	return out
}
