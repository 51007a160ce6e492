package gateway

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// Regression tests for issue 10 (the event bus and GET /events).

func ids(evs []Event) []uint64 {
	var out []uint64
	for _, e := range evs {
		out = append(out, e.ID)
	}
	return out
}

func TestEventBusRing(t *testing.T) {
	t.Parallel()
	b := newEventBus(3, 2)
	var heard []uint64
	b.listen(func(e Event) { heard = append(heard, e.ID) })
	now := time.Now()
	for i := range 5 {
		b.publish(Event{Type: EventConfig, Kind: KindConfigReloaded, Detail: strings.Repeat("x", i*1000)}, now)
	}
	if diff := cmp.Diff([]uint64{1, 2, 3, 4, 5}, heard); diff != "" {
		t.Errorf("listener mismatch (-want +got):\n%s", diff)
	}
	for _, e := range b.all() {
		if len(e.Detail) > maxEventDetail+len("…") {
			t.Errorf("event %d keeps a %d-byte detail", e.ID, len(e.Detail))
		}
	}
	for _, tc := range []struct {
		after uint64
		want  []uint64
		gap   *eventGap
	}{
		{0, []uint64{3, 4, 5}, &eventGap{After: 0, Oldest: 3, Missed: 2, Reason: "overflow"}},
		{1, []uint64{3, 4, 5}, &eventGap{After: 1, Oldest: 3, Missed: 1, Reason: "overflow"}},
		{2, []uint64{3, 4, 5}, nil},
		{4, []uint64{5}, nil},
		{5, nil, nil},
		{9, []uint64{3, 4, 5}, &eventGap{After: 9, Oldest: 3, Missed: -1, Reason: "restarted"}},
	} {
		evs, gap := b.after(tc.after, 0)
		if diff := cmp.Diff(tc.want, ids(evs)); diff != "" {
			t.Errorf("after(%d) ids mismatch (-want +got):\n%s", tc.after, diff)
		}
		if diff := cmp.Diff(tc.gap, gap); diff != "" {
			t.Errorf("after(%d) gap mismatch (-want +got):\n%s", tc.after, diff)
		}
	}
	s1, err1 := b.subscribe()
	_, err2 := b.subscribe()
	if _, err := b.subscribe(); err != errTooManySubscribers || err1 != nil || err2 != nil {
		t.Errorf("third subscriber: %v, want errTooManySubscribers", err)
	}
	b.unsubscribe(s1)
	if _, err := b.subscribe(); err != nil {
		t.Errorf("subscriber after one left: %v", err)
	}
}

// sseEvent is one event read from a stream.
type sseEvent struct {
	id, name, data string
}

// readSSE reads events from an SSE body and sends them on the returned
// channel until the body ends.
func readSSE(body *bufio.Reader) <-chan sseEvent {
	out := make(chan sseEvent, 1024)
	go func() {
		defer close(out)
		var ev sseEvent
		for {
			line, err := body.ReadString('\n')
			if err != nil {
				return
			}
			line = strings.TrimRight(line, "\r\n")
			switch {
			case line == "":
				if ev.data != "" {
					out <- ev
				}
				ev = sseEvent{}
			case strings.HasPrefix(line, "id: "):
				ev.id = line[4:]
			case strings.HasPrefix(line, "event: "):
				ev.name = line[7:]
			case strings.HasPrefix(line, "data: "):
				ev.data = line[6:]
			}
		}
	}()
	return out
}

func openEvents(t *testing.T, ctx context.Context, url string, header map[string]string) (<-chan sseEvent, *http.Response) {
	t.Helper()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("GET %s: %s %s", url, resp.Status, resp.Header.Get("Content-Type"))
	}
	return readSSE(bufio.NewReader(resp.Body)), resp
}

func nextEvent(t *testing.T, ctx context.Context, ch <-chan sseEvent, match func(Event) bool) (sseEvent, Event) {
	t.Helper()
	for {
		select {
		case ev, ok := <-ch:
			if !ok {
				t.Fatal("stream ended")
			}
			if ev.name != "" {
				return ev, Event{}
			}
			var e Event
			if err := json.Unmarshal([]byte(ev.data), &e); err != nil {
				t.Fatalf("event %q: %v", ev.data, err)
			}
			if fmt.Sprint(e.ID) != ev.id {
				t.Errorf("SSE id %s, event id %d", ev.id, e.ID)
			}
			if match == nil || match(e) {
				return ev, e
			}
		case <-ctx.Done():
			t.Fatal("no event in time")
		}
	}
}

// GET /events streams credential rotations in order, each with its id, and
// a stream resumed with Last-Event-ID gets exactly those it missed; tokens
// never appear in it.
func TestEventsStreamResumes(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	path := tokenFile(t, "token-v0-0123456789\n")
	up := newBearerUpstream(t, "echo")
	up.accept("token-v0-0123456789")
	g, cs, base := tokGateway(t, ctx, "", "source: {file: "+path+"}", up.url(), nil, nil)
	callOK(t, ctx, cs, "api__echo")
	streamCtx, stop := context.WithCancel(ctx)
	ch, _ := openEvents(t, streamCtx, base+"/events", nil)
	rotated := func(e Event) bool { return e.Type == EventCredential && e.Kind == "rotated" }
	var seen []uint64
	for i := 1; i <= 2; i++ {
		rotateFile(t, ctx, g, up, path, fmt.Sprintf("token-v%d-0123456789\n", i))
		raw, e := nextEvent(t, ctx, ch, rotated)
		if e.Credential != "tok" || e.Status != "healthy" || !strings.Contains(strings.Join(e.Upstreams, ","), "api") {
			t.Errorf("rotation %d: %+v", i, e)
		}
		if strings.Contains(raw.data, "0123456789") {
			t.Errorf("event shows a token: %s", raw.data)
		}
		seen = append(seen, e.ID)
	}
	stop()
	// Two rotations while away.
	for i := 3; i <= 4; i++ {
		rotateFile(t, ctx, g, up, path, fmt.Sprintf("token-v%d-0123456789\n", i))
	}
	ch, _ = openEvents(t, ctx, base+"/events", map[string]string{"Last-Event-ID": fmt.Sprint(seen[1])})
	var resumed []uint64
	for len(resumed) < 2 {
		_, e := nextEvent(t, ctx, ch, nil)
		if e.ID <= seen[1] {
			t.Fatalf("resumed stream replays event %d, seen before %d", e.ID, seen[1])
		}
		if rotated(e) {
			resumed = append(resumed, e.ID)
		}
	}
	if !(seen[0] < seen[1] && seen[1] < resumed[0] && resumed[0] < resumed[1]) {
		t.Errorf("ids out of order: %v then %v", seen, resumed)
	}
	// The same ring as JSON on /admin/events is covered by the admin tests;
	// Events keeps the audit shape.
	if kinds := eventKinds(g, "tok"); strings.Count(strings.Join(kinds, " "), "rotated") != 4 {
		t.Errorf("audit events %v, want 4 rotated", kinds)
	}
}

// A client too far behind (its id no longer in the ring) is told how many
// events it missed, then gets the oldest kept; publishing never waits for a
// stream, even one that does not read.
func TestEventsMissedAndSlowClient(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	g, _, base, _ := valueTokGateway(t, ctx, "", "tok-0123456789")
	// A stream that never reads.
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, base+"/events", nil)
	stuck, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer stuck.Body.Close()
	first := g.events.lastID()
	for i := range maxEvents + 500 {
		g.publish(Event{Type: EventConfig, Kind: KindConfigReloaded, Detail: fmt.Sprintf("reload %d %s", i, strings.Repeat("y", 500))})
	}
	ch, _ := openEvents(t, ctx, base+"/events", map[string]string{"Last-Event-ID": fmt.Sprint(first)})
	ev, _ := nextEvent(t, ctx, ch, nil)
	var gap eventGap
	if ev.name != "missed" || json.Unmarshal([]byte(ev.data), &gap) != nil || gap.Missed < 500 || gap.Reason != "overflow" {
		t.Fatalf("first event %+v, want missed with at least 500", ev)
	}
	_, e := nextEvent(t, ctx, ch, nil)
	if e.ID != gap.Oldest {
		t.Errorf("after the gap: event %d, want the oldest kept %d", e.ID, gap.Oldest)
	}
	// An id from before a restart.
	ch, _ = openEvents(t, ctx, base+"/events?since=99999999", nil)
	if ev, _ := nextEvent(t, ctx, ch, nil); ev.name != "missed" || !strings.Contains(ev.data, `"restarted"`) {
		t.Errorf("stale id: first event %+v, want missed (restarted)", ev)
	}
	resp, err := http.Get(base + "/events?since=x")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest {
		t.Errorf("since=x: %s, want 400", resp.Status)
	}
}

// At most maxEventSubscribers streams at once.
func TestEventsSubscriberLimit(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	_, _, base, _ := valueTokGateway(t, ctx, "", "tok-0123456789")
	for range maxEventSubscribers {
		openEvents(t, ctx, base+"/events", nil)
	}
	resp, err := http.Get(base + "/events")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" {
		t.Errorf("stream %d: %s, want 503 with Retry-After", maxEventSubscribers+1, resp.Status)
	}
}

// Breaker and upstream changes are on the bus too.
func TestEventsBreakerAndUpstream(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	g, cs, _, up := valueTokGateway(t, ctx, "", "tok-0123456789")
	up.refuse("tok-0123456789", rejectRevoked)
	callTool(t, ctx, cs, "api__echo")
	var kinds []string
	for _, e := range g.EventLog() {
		kinds = append(kinds, string(e.Type)+":"+e.Kind)
	}
	all := strings.Join(kinds, " ")
	for _, want := range []string{"upstream:up", "credential:loaded", "credential:revoked", "breaker:open"} {
		if !strings.Contains(all, want) {
			t.Errorf("events %v lack %s", kinds, want)
		}
	}
}
