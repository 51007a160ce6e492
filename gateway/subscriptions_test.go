package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// TestSubscriptionsSharedByAgents: two agents subscribe to one resource of
// an upstream's shared session; when one unsubscribes, the other still
// gets its updates (the gateway unsubscribed the shared session for both:
// found trying the gateway from outside); when the last one goes away
// without unsubscribing, the upstream is unsubscribed.
func TestSubscriptionsSharedByAgents(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	const uri = "demo://counter"
	var mu sync.Mutex
	upstreamSubs := map[string]int{}
	unsubscribed := make(chan struct{}, 10)
	s := subsServer(uri, &mcp.ServerOptions{
		SubscribeHandler: func(_ context.Context, r *mcp.SubscribeRequest) error {
			mu.Lock()
			defer mu.Unlock()
			upstreamSubs[r.Params.URI]++
			return nil
		},
		UnsubscribeHandler: func(_ context.Context, r *mcp.UnsubscribeRequest) error {
			mu.Lock()
			upstreamSubs[r.Params.URI]--
			mu.Unlock()
			unsubscribed <- struct{}{}
			return nil
		},
	})
	g := newTestGateway(t, ctx, "upstreams:\n  a: {url: "+serveMCP(t, s)+"}\n")
	updates := func() (*mcp.ClientOptions, chan string) {
		ch := make(chan string, 10)
		return &mcp.ClientOptions{ResourceUpdatedHandler: func(_ context.Context, r *mcp.ResourceUpdatedNotificationRequest) { ch <- r.Params.URI }}, ch
	}
	optsA, gotA := updates()
	optsB, gotB := updates()
	a, b := agent(t, ctx, g, optsA), agent(t, ctx, g, optsB)
	for _, cs := range []*mcp.ClientSession{a, b} {
		if err := cs.Subscribe(ctx, &mcp.SubscribeParams{URI: uri}); err != nil {
			t.Fatal(err)
		}
	}
	if err := a.Unsubscribe(ctx, &mcp.UnsubscribeParams{URI: uri}); err != nil {
		t.Fatal(err)
	}
	if err := s.ResourceUpdated(ctx, &mcp.ResourceUpdatedNotificationParams{URI: uri}); err != nil {
		t.Fatal(err)
	}
	select {
	case <-gotB:
	case <-ctx.Done():
		t.Fatal("the agent still subscribed got no update after the other unsubscribed")
	}
	select {
	case got := <-gotA:
		t.Errorf("the agent that unsubscribed got an update of %s", got)
	default:
	}
	mu.Lock()
	if n := upstreamSubs[uri]; n != 1 {
		t.Errorf("upstream holds %d subscriptions of the shared session, want 1", n)
	}
	mu.Unlock()
	// The last subscriber goes away without unsubscribing.
	_ = b.Close()
	select {
	case <-unsubscribed:
	case <-ctx.Done():
		t.Fatal("the upstream was never unsubscribed after the last agent went away")
	}
}

// TestStatelessRefusesLegacySubscribe: without sessions a 2025-11-25 agent's
// subscribe is refused, with why: nothing could carry its updates (it was
// taken, and never delivered: found trying the gateway from outside). A
// 2026-07-28 agent keeps listChanged: its listen stream carries it (found in
// review: a first fix took it from every agent).
func TestStatelessRefusesLegacySubscribe(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	s := subsServer("demo://x", &mcp.ServerOptions{
		SubscribeHandler:   func(context.Context, *mcp.SubscribeRequest) error { return nil },
		UnsubscribeHandler: func(context.Context, *mcp.UnsubscribeRequest) error { return nil },
	})
	tools := newTestUpstream(t, "b", "echo")
	g := newTestGateway(t, ctx, "stateless: true\nupstreams:\n  a: {url: "+serveMCP(t, s)+"}\n  b: {url: "+tools.url()+"}\n")
	a := newRawAgent(t, ctx, g) // 2025-11-25, which has subscriptions
	_, b := a.post(ctx, `{"jsonrpc":"2.0","id":2,"method":"resources/subscribe","params":{"uri":"demo://x"}}`)
	if !strings.Contains(string(b), `"error"`) || !strings.Contains(string(b), "stateless") {
		t.Errorf("a stateless gateway took a subscription it cannot deliver: %s", b)
	}

	hs := httptest.NewServer(g.Handler())
	t.Cleanup(hs.Close)
	changed := make(chan struct{}, 10)
	c := mcp.NewClient(&mcp.Implementation{Name: "agent", Version: "1"}, &mcp.ClientOptions{
		ToolListChangedHandler: func(context.Context, *mcp.ToolListChangedRequest) { changed <- struct{}{} },
	})
	cs, err := c.Connect(ctx, &mcp.StreamableClientTransport{Endpoint: hs.URL + "/mcp"}, &mcp.ClientSessionOptions{ProtocolVersion: "2026-07-28"})
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	t.Cleanup(func() { _ = cs.Close() })
	if caps := cs.InitializeResult().Capabilities; caps == nil || caps.Tools == nil || !caps.Tools.ListChanged {
		t.Fatalf("stateless gateway offers a 2026-07-28 agent tools %+v: want listChanged", caps)
	}
	tools.srv.AddTool(&mcp.Tool{Name: "added", InputSchema: json.RawMessage(`{"type":"object"}`)}, func(context.Context, *mcp.CallToolRequest) (*mcp.CallToolResult, error) {
		return &mcp.CallToolResult{}, nil
	})
	select {
	case <-changed:
	case <-ctx.Done():
		t.Fatal("no tools/list_changed reached the 2026-07-28 agent's listen stream")
	}
}

// TestSubscriptionsSurviveUpstreamRestart: when the shared session is
// replaced (the upstream restarted), the new one is subscribed to what
// agents hold, and their updates keep coming (found in review: the record
// of holders outlived the session, and a new agent's subscribe was taken
// as held and never sent).
func TestSubscriptionsSurviveUpstreamRestart(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	const uri = "demo://counter"
	subscribed := make(chan struct{}, 10)
	s := subsServer(uri, &mcp.ServerOptions{
		SubscribeHandler:   func(context.Context, *mcp.SubscribeRequest) error { subscribed <- struct{}{}; return nil },
		UnsubscribeHandler: func(context.Context, *mcp.UnsubscribeRequest) error { return nil },
	})
	var h atomic.Pointer[mcp.StreamableHTTPHandler]
	h.Store(mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return s }, nil))
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { h.Load().ServeHTTP(w, r) }))
	t.Cleanup(hs.Close)
	g := newTestGateway(t, ctx, "upstreams:\n  a: {url: "+hs.URL+"/mcp}\n")
	updates := make(chan string, 10)
	a := agent(t, ctx, g, &mcp.ClientOptions{ResourceUpdatedHandler: func(_ context.Context, r *mcp.ResourceUpdatedNotificationRequest) { updates <- r.Params.URI }})
	if err := a.Subscribe(ctx, &mcp.SubscribeParams{URI: uri}); err != nil {
		t.Fatal(err)
	}
	<-subscribed
	// The upstream restarts: its sessions, and their subscriptions, are gone.
	h.Store(mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return s }, nil))
	if _, err := a.ReadResource(ctx, &mcp.ReadResourceParams{URI: uri}); err != nil {
		t.Fatal(err) // resent on the new session
	}
	select {
	case <-subscribed:
	case <-ctx.Done():
		t.Fatal("the new session was never subscribed to the resource the agent holds")
	}
	if err := s.ResourceUpdated(ctx, &mcp.ResourceUpdatedNotificationParams{URI: uri}); err != nil {
		t.Fatal(err)
	}
	select {
	case <-updates:
	case <-ctx.Done():
		t.Fatal("no update reached the subscribed agent after the upstream restarted")
	}
}

// TestSubscribeWhileFirstFails: an agent that subscribes while another's
// first subscribe is on its way waits for its outcome: when the upstream
// refuses it, the second is sent (found in review: it was answered at once
// as held, and left with no subscription upstream).
func TestSubscribeWhileFirstFails(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	const uri = "demo://counter"
	var held atomic.Int64
	entered, released := make(chan struct{}), make(chan struct{})
	release := sync.OnceFunc(func() { close(released) })
	defer release() // the upstream's handler ends however the test does
	var first atomic.Bool
	s := subsServer(uri, &mcp.ServerOptions{
		SubscribeHandler: func(context.Context, *mcp.SubscribeRequest) error {
			if first.CompareAndSwap(false, true) {
				close(entered)
				<-released
				return errors.New("quota exceeded")
			}
			held.Add(1)
			return nil
		},
		UnsubscribeHandler: func(context.Context, *mcp.UnsubscribeRequest) error { return nil },
	})
	g := newTestGateway(t, ctx, "upstreams:\n  a: {url: "+serveMCP(t, s)+"}\n")
	a, b := agent(t, ctx, g, nil), agent(t, ctx, g, nil)
	errA := make(chan error, 1)
	go func() { errA <- a.Subscribe(ctx, &mcp.SubscribeParams{URI: uri}) }()
	recv(t, ctx, entered, "the first subscribe to reach the upstream")
	errB := make(chan error, 1)
	go func() { errB <- b.Subscribe(ctx, &mcp.SubscribeParams{URI: uri}) }()
	// B's subscribe is in the gateway (two agent requests in flight)
	// before A's is answered.
	waitFor(t, ctx, func() bool { return g.requests.count() >= 2 })
	release()
	if err := <-errA; err == nil {
		t.Fatal("A's subscribe succeeded; the upstream refused it")
	}
	if err := <-errB; err != nil || held.Load() != 1 {
		t.Errorf("B's subscribe answered %v with %d subscriptions upstream; want it sent and held", err, held.Load())
	}
}

// subsServer is an upstream serving resource uri whose subscriptions opts
// handle.
func subsServer(uri string, opts *mcp.ServerOptions) *mcp.Server {
	s := mcp.NewServer(&mcp.Implementation{Name: "subs", Version: "1"}, opts)
	s.AddResource(&mcp.Resource{URI: uri, Name: "r"}, func(context.Context, *mcp.ReadResourceRequest) (*mcp.ReadResourceResult, error) {
		return &mcp.ReadResourceResult{Contents: []*mcp.ResourceContents{{URI: uri, Text: "1"}}}, nil
	})
	return s
}
