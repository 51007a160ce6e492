package gateway

import (
	"encoding/json"
	"fmt"
	"github.com/rs/zerolog"
	"sync"
	"sync/atomic"

	"github.com/modelcontextprotocol/go-sdk/mcp"
	"golang.org/x/time/rate"
)

// Bounds on what an upstream sends unasked, or asks of agents, so that no
// upstream can make the gateway's memory, its log or an agent's stream grow
// without bound (found feeding the built gateway hostile upstreams: progress
// and log floods to an agent that did not read its stream grew the gateway
// to 8.9 GB; 300,000 sampling requests in one call, to 4 GB; an unsolicited
// stream of error-level log messages wrote 285 MB of gateway log in 10 s).
//
//   - Progress and log notifications: at most notifyRate a second per call
//     (notifyBurst at once) reach its agent; the rest are dropped. Progress
//     says only where a call is (the next one says it again), and a log
//     flood is noise. What an agent's stream holds is then bounded by the
//     rate and the call's timeout. The budget is the call's own, so that no
//     call, however chatty, silences another agent's progress (it was the
//     upstream's, found trying the gateway from outside: one call's 3,000
//     progress steps left 20 other agents' calls with none).
//   - A log message's data over notifyDataMax encoded bytes is replaced by a
//     note of its size.
//   - Requests to agents (sampling, elicitation): at most asksMax in flight
//     per upstream and agent session; another is refused at once, as an
//     agent would refuse it.
//   - Log messages count against the rate only when an agent's log level
//     admits them: chatter no agent asked for spends nothing.
//   - Log messages kept in the gateway's own log (sent to no agent): at most
//     keepRate a second per upstream, the number dropped said on the next.
//   - A stdio child's stderr lines written to the gateway's log: at most
//     stderrRate a second per upstream (stderrBurst at once), the number
//     dropped said on the next; the tail health shows keeps every line.
const (
	notifyRate    = 100
	notifyBurst   = 200
	notifyDataMax = 16 << 10
	asksMax       = 8
	keepRate      = 5
	keepBurst     = 20
	stderrRate    = 50
	stderrBurst   = 500
)

// floodGuard holds an upstream's bounds (see above).
type floodGuard struct {
	keep    lineBudget   // log messages and stdout lines kept in the gateway's log
	stderr  lineBudget   // a child's stderr lines logged
	dropped atomic.Int64 // notifications dropped
	mu      sync.Mutex
	asking  map[any]int // requests in flight, by agent session (inflight.agent)
	// drops counts, for ops (credgate_upstream_messages_dropped_total),
	// what the upstream sent that went nowhere, by kind; the counts only
	// grow.
	drops [dropKinds]atomic.Int64
}

// What an upstream sent that the gateway dropped or skipped, by kind (the
// kind label of credgate_upstream_messages_dropped_total).
type dropKind int

const (
	dropNotification dropKind = iota // progress or log notification over the flood rate
	dropLogLine                      // log line not written to the gateway's log (keepRate)
	dropStrayLine                    // a stdio child's stdout line that is not JSON-RPC
	dropBadAnswer                    // an answer the SDK could not read, replaced by an error (or an SSE event dropped)
	dropChildRequest                 // a stdio child's request past maxChildRequests held
	dropStderrLine                   // a stdio child's stderr line not written to the gateway's log
	dropKinds
)

var dropKindNames = [dropKinds]string{"notification", "log_line", "stray_line", "bad_answer", "child_request", "stderr_line"}

// count adds one of kind k.
func (f *floodGuard) count(k dropKind) {
	if f != nil {
		f.drops[k].Add(1)
	}
}

func newFloodGuard() *floodGuard {
	return &floodGuard{
		keep:   lineBudget{lim: rate.NewLimiter(keepRate, keepBurst)},
		stderr: lineBudget{lim: rate.NewLimiter(stderrRate, stderrBurst)},
		asking: map[any]int{},
	}
}

// newNotifyBudget is a call's budget of progress and log notifications.
func newNotifyBudget() *rate.Limiter { return rate.NewLimiter(notifyRate, notifyBurst) }

// droppedNotify counts a progress or log notification a call's budget did
// not allow.
func (f *floodGuard) droppedNotify() {
	f.dropped.Add(1)
	f.count(dropNotification)
}

// ask takes a slot for a request to agent (an agent session); release gives
// it back. It fails when asksMax are in flight to that agent.
func (f *floodGuard) ask(upstream string, agent any) (release func(), err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.asking[agent] >= asksMax {
		return nil, fmt.Errorf("credgate: upstream %q already has %d requests to this agent in flight; refused", upstream, asksMax)
	}
	f.asking[agent]++
	return func() {
		f.mu.Lock()
		defer f.mu.Unlock()
		if f.asking[agent]--; f.asking[agent] <= 0 {
			delete(f.asking, agent)
		}
	}, nil
}

// boundedLog returns p, or a copy whose data is a note of its size when it
// encodes to more than notifyDataMax bytes.
func boundedLog(p *mcp.LoggingMessageParams) *mcp.LoggingMessageParams {
	n := 0
	switch d := p.Data.(type) {
	case string:
		n = len(d)
	case json.RawMessage:
		n = len(d)
	default:
		b, err := json.Marshal(d)
		if err != nil {
			return p
		}
		n = len(b)
	}
	if n <= notifyDataMax {
		return p
	}
	q := *p
	q.Data = fmt.Sprintf("[credgate: log data of %d bytes left out; at most %d are passed on]", n, notifyDataMax)
	return &q
}

// lineBudget bounds the lines of one kind an upstream has written to the
// gateway's log, and counts those it refused since the last it allowed.
type lineBudget struct {
	lim     *rate.Limiter
	dropped atomic.Int64
}

// take reports whether one more line may be logged, adding to ev how many
// were refused before it; it counts a line it refuses.
func (b *lineBudget) take(ev *zerolog.Event) (*zerolog.Event, bool) {
	if !b.lim.Allow() {
		b.dropped.Add(1)
		return nil, false
	}
	if n := b.dropped.Swap(0); n > 0 {
		ev = ev.Int64("dropped_before", n)
	}
	return ev, true
}
