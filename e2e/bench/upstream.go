package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// upstream is an in-process MCP server on its own 127.0.0.1 port. Every tool
// echoes its "text" argument, so the cost measured is the gateway's, not the tool's.
//
// The listener counts accepted TCP connections: during a gateway phase the only
// client of an upstream is the gateway, so the count is the number of upstream
// connections the gateway opened.
type upstream struct {
	url   string
	tools []string
	ln    *countingListener
	srv   *http.Server
}

// echoInputSchema is shared by every tool: {"text": string}.
var echoInputSchema = json.RawMessage(`{"type":"object","properties":{"text":{"type":"string"}}}`)

// newEchoServer returns an MCP server whose tools all echo (echoTool). The
// HTTP upstreams and the stdio one (stdio.go) serve the same server, so the
// two transports differ only in how the bytes travel.
func newEchoServer(name string, tools []string) *mcp.Server {
	s := mcp.NewServer(&mcp.Implementation{Name: name, Version: "bench"}, nil)
	for _, t := range tools {
		s.AddTool(&mcp.Tool{
			Name:        t,
			Description: "Echoes the text argument back unchanged.",
			InputSchema: echoInputSchema,
		}, echoTool)
	}
	return s
}

// startUpstream serves a stateful streamable-HTTP MCP server exposing tools.
func startUpstream(name string, tools []string) (*upstream, error) {
	s := newEchoServer(name, tools)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("upstream %q: listen: %w", name, err)
	}
	u := &upstream{
		url:   "http://" + ln.Addr().String() + "/mcp",
		tools: tools,
		ln:    &countingListener{Listener: ln},
		srv: &http.Server{
			Handler:           mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return s }, nil),
			ReadHeaderTimeout: 10 * time.Second,
		},
	}
	go func() {
		// Serve returns ErrServerClosed after Close; anything else ends the
		// upstream early and shows up as transport errors in the phase using it.
		_ = u.srv.Serve(u.ln)
	}()
	return u, nil
}

// accepted reports how many TCP connections the upstream has accepted so far.
func (u *upstream) accepted() int64 { return u.ln.n.Load() }

// Close stops the server and drops open connections (including long-lived
// SSE streams, which a graceful Shutdown would wait for).
func (u *upstream) Close() error { return u.srv.Close() }

func echoTool(_ context.Context, req *mcp.CallToolRequest) (*mcp.CallToolResult, error) {
	var args struct {
		Text string `json:"text"`
	}
	if err := json.Unmarshal(req.Params.Arguments, &args); err != nil {
		res := &mcp.CallToolResult{}
		res.SetError(fmt.Errorf("bad arguments: %w", err))
		return res, nil
	}
	return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: args.Text}}}, nil
}

// catalogTools returns n tool names t000, t001, ...
func catalogTools(n int) []string {
	names := make([]string, n)
	for i := range names {
		names[i] = fmt.Sprintf("t%03d", i)
	}
	return names
}

// upstreamSet is a group of upstreams named u00, u01, ... for the catalog phases.
type upstreamSet []*upstream

func startUpstreams(n, tools int) (upstreamSet, error) {
	var set upstreamSet
	for i := range n {
		u, err := startUpstream(upstreamName(i), catalogTools(tools))
		if err != nil {
			return nil, errors.Join(err, set.Close())
		}
		set = append(set, u)
	}
	return set, nil
}

func upstreamName(i int) string { return fmt.Sprintf("u%02d", i) }

func (s upstreamSet) Close() error {
	var errs []error
	for _, u := range s {
		errs = append(errs, u.Close())
	}
	return errors.Join(errs...)
}

type countingListener struct {
	net.Listener
	n atomic.Int64
}

func (l *countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.n.Add(1)
	}
	return c, err
}
