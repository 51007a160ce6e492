package gateway

import (
	"context"
	"encoding/json"
	"strings"
	"sync"
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
	s := mcp.NewServer(&mcp.Implementation{Name: "subs", Version: "1"}, &mcp.ServerOptions{
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
	s.AddResource(&mcp.Resource{URI: uri, Name: "counter"}, func(context.Context, *mcp.ReadResourceRequest) (*mcp.ReadResourceResult, error) {
		return &mcp.ReadResourceResult{Contents: []*mcp.ResourceContents{{URI: uri, Text: "1"}}}, nil
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

// TestStatelessOffersNoStreams: without sessions the gateway offers no
// list_changed and no subscriptions, and refuses a subscribe: nothing could
// carry them (it offered both, and took subscriptions that never
// delivered: found trying the gateway from outside).
func TestStatelessOffersNoStreams(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	s := mcp.NewServer(&mcp.Implementation{Name: "subs", Version: "1"}, &mcp.ServerOptions{
		SubscribeHandler:   func(context.Context, *mcp.SubscribeRequest) error { return nil },
		UnsubscribeHandler: func(context.Context, *mcp.UnsubscribeRequest) error { return nil },
	})
	s.AddResource(&mcp.Resource{URI: "demo://x", Name: "x"}, func(context.Context, *mcp.ReadResourceRequest) (*mcp.ReadResourceResult, error) {
		return &mcp.ReadResourceResult{Contents: []*mcp.ResourceContents{{URI: "demo://x", Text: "1"}}}, nil
	})
	g := newTestGateway(t, ctx, "stateless: true\nupstreams:\n  a: {url: "+serveMCP(t, s)+"}\n")
	a := newRawAgent(t, ctx, g) // 2025-11-25, which has subscriptions
	_, b := a.post(ctx, `{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"raw","version":"1"}}}`)
	var init struct {
		Result struct {
			Capabilities mcp.ServerCapabilities `json:"capabilities"`
		} `json:"result"`
	}
	if err := json.Unmarshal(sseData(b), &init); err != nil {
		t.Fatalf("initialize: %v: %s", err, b)
	}
	caps := init.Result.Capabilities
	if caps.Resources == nil || caps.Resources.Subscribe || caps.Resources.ListChanged || caps.Tools == nil || caps.Tools.ListChanged || caps.Prompts == nil || caps.Prompts.ListChanged {
		t.Errorf("stateless capabilities: resources %+v, tools %+v, prompts %+v; want no subscribe and no listChanged", caps.Resources, caps.Tools, caps.Prompts)
	}
	_, b = a.post(ctx, `{"jsonrpc":"2.0","id":2,"method":"resources/subscribe","params":{"uri":"demo://x"}}`)
	if !strings.Contains(string(b), `"error"`) {
		t.Errorf("a stateless gateway took a subscription it cannot deliver: %s", b)
	}
}
