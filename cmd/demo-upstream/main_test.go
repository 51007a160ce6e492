package main

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// bearer adds an API key to every request.
type bearer struct{ key string }

func (b bearer) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("Authorization", "Bearer "+b.key)
	return http.DefaultTransport.RoundTrip(r)
}

// TestBillingCharge: the demo's payments stand-in charges with the live key
// and answers any other the way Stripe does for an expired one; the demo
// config's backup key is that live key, and its primary key is not.
func TestBillingCharge(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	billing := newBillingServer(slog.New(slog.DiscardHandler))
	srv := httptest.NewServer(mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return billing }, nil))
	defer srv.Close()
	charge := func(key string) *mcp.CallToolResult {
		t.Helper()
		c := mcp.NewClient(&mcp.Implementation{Name: "test", Version: "1"}, nil)
		cs, err := c.Connect(ctx, &mcp.StreamableClientTransport{Endpoint: srv.URL, HTTPClient: &http.Client{Transport: bearer{key}}}, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer cs.Close()
		res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "charge", Arguments: map[string]any{"amount_cents": 500}})
		if err != nil {
			t.Fatal(err)
		}
		return res
	}
	text := func(res *mcp.CallToolResult) string { return res.Content[0].(*mcp.TextContent).Text }
	if res := charge(demoLiveKey); res.IsError || !strings.Contains(text(res), "charged 500 cents") {
		t.Errorf("charge with the live key: %s", text(res))
	}
	res := charge("sk_test_other_key_1234")
	if !res.IsError || !strings.Contains(text(res), `"code":"api_key_expired"`) || !strings.Contains(text(res), "sk_test_****1234") {
		t.Errorf("charge with another key: %v %s", res.IsError, text(res))
	}
	if strings.Contains(text(res), "sk_test_other_key_1234") {
		t.Errorf("the key is echoed whole: %s", text(res))
	}

	demo, err := os.ReadFile("../../configs/demo.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(string(demo), demoLiveKey); n != 1 {
		t.Errorf("configs/demo.yaml holds the live key %d times, want once (billing-backup-key)", n)
	}
}

// TestListenWhenFree: beside stdio, the demo waits for an address its
// predecessor still holds (a gateway's reload starts the new child first)
// instead of exiting, and takes it once it is free.
func TestListenWhenFree(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	held, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := held.Addr().String()
	got := make(chan error, 1)
	go func() {
		ln, err := listenWhenFree(ctx, addr, time.Minute)
		if err == nil {
			ln.Close()
		}
		got <- err
	}()
	held.Close()
	select {
	case err := <-got:
		if err != nil {
			t.Fatalf("listening once the address is free: %v", err)
		}
	case <-ctx.Done():
		t.Fatal("still waiting after the address was freed")
	}

	// Still held past the wait: the bind error.
	held, err = net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	if _, err := listenWhenFree(ctx, held.Addr().String(), 0); !errors.Is(err, syscall.EADDRINUSE) {
		t.Fatalf("address held past the wait: %v, want EADDRINUSE", err)
	}
}
