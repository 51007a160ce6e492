package gateway

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/credgate/credgate/authmap"
)

// TestSlowSuccessDoesNotRestoreRejected: a call sent before the credential
// was rejected, answered after, does not make the rejected value healthy
// again: /health, metrics and alerts kept saying healthy while every call
// was refused by the credential's open breaker (found trying the gateway
// from outside).
func TestSlowSuccessDoesNotRestoreRejected(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	up := newBearerUpstream(t, "echo")
	started, release := make(chan struct{}), make(chan struct{})
	up.srv.AddTool(&mcp.Tool{Name: "slow", InputSchema: json.RawMessage(`{"type":"object"}`)}, func(context.Context, *mcp.CallToolRequest) (*mcp.CallToolResult, error) {
		close(started)
		<-release
		return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: "slept"}}}, nil
	})
	const token = "tok-slowsuccess-0123456789abcdef"
	up.accept(token)
	g, cs, _ := tokGateway(t, ctx, "", "source: {file: "+tokenFile(t, token)+"}", up.url(), nil, nil)
	slow := make(chan *mcp.CallToolResult, 1)
	go func() {
		res, _ := cs.CallTool(ctx, &mcp.CallToolParams{Name: "api__slow", Arguments: map[string]any{}})
		slow <- res
	}()
	recv(t, ctx, started, "the slow call to start")
	up.refuse(token, rejectRevoked)
	if res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "api__echo", Arguments: map[string]any{"text": "x"}}); err != nil || !res.IsError {
		t.Fatalf("the call after the revocation answered %v, %v; want its auth failure", res, err)
	}
	if st := g.credential("tok").Status(); st != authmap.StatusRevoked {
		t.Fatalf("after the rejection the credential is %s, want revoked", st)
	}
	close(release)
	if res := <-slow; res == nil || res.IsError {
		t.Fatalf("the slow call answered %v", res)
	}
	if st := g.credential("tok").Status(); st != authmap.StatusRevoked {
		t.Errorf("after the slow call sent before the rejection succeeded, the credential is %s, want still revoked", st)
	}
}

// TestReloadTimestampOnlyWhenApplied: credgate_config_last_reload_success_
// timestamp_seconds is when the config in force was put in force, as
// /health's loaded_at: a reload that changes nothing keeps it (found trying
// the gateway from outside).
func TestReloadTimestampOnlyWhenApplied(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	yaml := "upstreams:\n  a: {url: " + newTestUpstream(t, "a", "echo").url() + "}\n"
	g := newTestGateway(t, ctx, yaml)
	at := func() float64 {
		v, _ := sample(gather(t, g), "credgate_config_last_reload_success_timestamp_seconds", nil)
		return v
	}
	cfg, err := ParseConfig([]byte(yaml), nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := g.Reload(cfg); err != nil {
		t.Fatal(err)
	}
	before, loaded := at(), g.Health().Config.LoadedAt
	if err := g.Reload(cfg); err != nil {
		t.Fatal(err)
	}
	if after := at(); after != before || !g.Health().Config.LoadedAt.Equal(loaded) {
		t.Errorf("a reload that changed nothing moved the timestamp from %v to %v (loaded_at %v to %v)", before, after, loaded, g.Health().Config.LoadedAt)
	}
	if float64(loaded.UnixNano())/1e9 != before {
		t.Errorf("timestamp %v, loaded_at %v: want the same instant", before, loaded)
	}
}

// TestReloadedHeaderSecretStillRedacted: a header value a reload changed is
// still redacted (an upstream echoing it showed the old value in clear at
// once, while a rotated credential's last values stay redacted: found
// trying the gateway from outside).
func TestReloadedHeaderSecretStillRedacted(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	const old, next = "eta-secret-9f8e7d6c5b4a3210", "eta-secret2-0a1b2c3d4e5f6789"
	up := newTestUpstream(t, "a", "echo")
	yaml := func(v string) string {
		return "upstreams:\n  a: {url: " + up.url() + ", headers: {X-Api-Key: " + v + "}}\n"
	}
	g, cs := startGateway(t, ctx, yaml(old))
	cfg, err := ParseConfig([]byte(yaml(next)), nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := g.Reload(cfg); err != nil {
		t.Fatal(err)
	}
	res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "a__echo", Arguments: map[string]any{"text": "old " + old + " new " + next}})
	if err != nil {
		t.Fatal(err)
	}
	if got := text(res); strings.Contains(got, old) || strings.Contains(got, next) {
		t.Errorf("after the reload the echo shows %q: want both values redacted", got)
	}
}

// TestRemovedCredentialStillRedacted: the value of a credential a reload
// removed is still redacted (found trying the gateway with replicas: one
// whose reload dropped a credential passed the value its peers still use
// in clear through tool results).
func TestRemovedCredentialStillRedacted(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	const secret = "theta-cred-0a1b2c3d4e5f6789"
	up := newTestUpstream(t, "a", "echo")
	with := "credentials:\n  tok: {source: {value: " + secret + "}}\nupstreams:\n  a: {url: " + up.url() + ", credential: tok}\n"
	without := "upstreams:\n  a: {url: " + up.url() + "}\n"
	g, cs := startGateway(t, ctx, with)
	cfg, err := ParseConfig([]byte(without), nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := g.Reload(cfg); err != nil {
		t.Fatal(err)
	}
	waitFor(t, ctx, func() bool { return g.credential("tok") == nil })
	res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "a__echo", Arguments: map[string]any{"text": "old " + secret}})
	if err != nil {
		t.Fatal(err)
	}
	if got := text(res); strings.Contains(got, secret) {
		t.Errorf("after the reload removed the credential the echo shows %q: want its value redacted", got)
	}
}
