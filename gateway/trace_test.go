package gateway

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/protobuf/proto"
)

// otlpReceiver is an OTLP/HTTP trace receiver: it decodes every export
// request the gateway sends.
type otlpReceiver struct {
	mu    sync.Mutex
	spans []*tracepb.Span
	got   chan struct{}
}

func newOTLPReceiver(t *testing.T) (*otlpReceiver, string) {
	t.Helper()
	r := &otlpReceiver{got: make(chan struct{}, 100)}
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if req.URL.Path != "/v1/traces" || req.Header.Get("Content-Type") != "application/x-protobuf" {
			http.Error(w, "unexpected export "+req.URL.Path, http.StatusBadRequest)
			return
		}
		body, _ := io.ReadAll(req.Body)
		var ex coltracepb.ExportTraceServiceRequest
		if err := proto.Unmarshal(body, &ex); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		r.mu.Lock()
		for _, rs := range ex.ResourceSpans {
			for _, ss := range rs.ScopeSpans {
				r.spans = append(r.spans, ss.Spans...)
			}
		}
		r.mu.Unlock()
		r.got <- struct{}{}
		w.Header().Set("Content-Type", "application/x-protobuf")
		out, _ := proto.Marshal(&coltracepb.ExportTraceServiceResponse{})
		_, _ = w.Write(out)
	}))
	t.Cleanup(hs.Close)
	return r, hs.URL
}

func (r *otlpReceiver) find(name string) *tracepb.Span {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, s := range r.spans {
		if s.Name == name {
			return s
		}
	}
	return nil
}

func spanAttr(s *tracepb.Span, key string) string {
	for _, kv := range s.Attributes {
		if kv.Key == key {
			if v := kv.Value.GetStringValue(); v != "" {
				return v
			}
			return fmt.Sprint(kv.Value.GetIntValue())
		}
	}
	return ""
}

// Regression test for issue 10 (traces): one server span per MCP request,
// continuing the agent's traceparent from _meta, and a client span per
// upstream attempt whose context reaches the upstream in _meta and in the
// HTTP headers; the failure type is on the span of a call that failed.
func TestTracesContinueTheAgentsTrace(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	recv, endpoint := newOTLPReceiver(t)

	up := newTestUpstream(t, "up", "echo")
	var mu sync.Mutex
	var metaTP, headerTP []string
	inner := up.http.Config.Handler
	up.http.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPost {
			body, _ := io.ReadAll(r.Body)
			r.Body = io.NopCloser(strings.NewReader(string(body)))
			var msg struct {
				Method string
				Params struct {
					Meta map[string]any `json:"_meta"`
				}
			}
			_ = json.Unmarshal(body, &msg)
			if msg.Method == "tools/call" {
				mu.Lock()
				tp, _ := msg.Params.Meta["traceparent"].(string)
				metaTP = append(metaTP, tp)
				headerTP = append(headerTP, r.Header.Get("traceparent"))
				mu.Unlock()
			}
		}
		inner.ServeHTTP(w, r)
	})
	g, cs := startGateway(t, ctx, fmt.Sprintf("telemetry: {otlp_endpoint: %s}\nupstreams:\n  up: {url: %s}\n", endpoint, up.url()))

	const traceID, agentSpan = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
	_, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "up__echo", Arguments: map[string]any{"text": "hi"},
		Meta: mcp.Meta{"traceparent": "00-" + traceID + "-" + agentSpan + "-01"}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "up__echo", Arguments: map[string]any{"text": "rpc-error"}}); err == nil {
		t.Fatal("rpc-error call succeeded")
	}
	if err := g.tracing.provider.ForceFlush(ctx); err != nil {
		t.Fatal(err)
	}

	var server, client *tracepb.Span
	waitFor(t, ctx, func() bool {
		recv.mu.Lock()
		defer recv.mu.Unlock()
		server, client = nil, nil
		for _, s := range recv.spans {
			if hex.EncodeToString(s.TraceId) != traceID {
				continue
			}
			switch s.Kind {
			case tracepb.Span_SPAN_KIND_SERVER:
				server = s
			case tracepb.Span_SPAN_KIND_CLIENT:
				client = s
			}
		}
		return server != nil && client != nil
	})
	if server.Name != "tools/call up__echo" || hex.EncodeToString(server.ParentSpanId) != agentSpan {
		t.Errorf("server span %q parent %x, want tools/call up__echo under the agent's span %s", server.Name, server.ParentSpanId, agentSpan)
	}
	if spanAttr(server, "mcp.method.name") != "tools/call" || spanAttr(server, "gen_ai.tool.name") != "up__echo" || spanAttr(server, "mcp.session.id") == "" {
		t.Errorf("server span attributes %v", server.Attributes)
	}
	if string(client.ParentSpanId) != string(server.SpanId) || client.Name != "tools/call echo" || spanAttr(client, "credgate.upstream") != "up" {
		t.Errorf("client span %q parent %x attrs %v, want tools/call echo under the server span %x on upstream up", client.Name, client.ParentSpanId, client.Attributes, server.SpanId)
	}
	want := "00-" + traceID + "-" + hex.EncodeToString(client.SpanId) + "-01"
	mu.Lock()
	defer mu.Unlock()
	if len(metaTP) < 1 || metaTP[0] != want || headerTP[0] != want {
		t.Errorf("upstream got traceparent _meta %q header %q, want %q in both", metaTP, headerTP, want)
	}
	if s := recv.find("tools/call up__echo"); s == nil {
		t.Fatal("no span for the second call")
	}
	recv.mu.Lock()
	var failed *tracepb.Span
	for _, s := range recv.spans {
		if s.Kind == tracepb.Span_SPAN_KIND_SERVER && hex.EncodeToString(s.TraceId) != traceID {
			failed = s
		}
	}
	recv.mu.Unlock()
	if failed == nil || failed.Status.GetCode() != tracepb.Status_STATUS_CODE_ERROR || spanAttr(failed, "error.type") == "" {
		t.Errorf("the failed call's span = %v, want status error with error.type", failed)
	}
}

// With no endpoint configured, tracing is off: no provider, and a call's
// _meta traceparent passes to the upstream untouched.
func TestTracingOffByDefault(t *testing.T) {
	t.Parallel()
	cfg, err := ParseConfig([]byte("upstreams:\n  a: {command: x}\n"), nil)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Telemetry.enabled() {
		t.Skip("OTEL_EXPORTER_OTLP_ENDPOINT is set in this environment")
	}
	g, err := New(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	if g.tracing != nil {
		t.Fatal("tracing on without an endpoint")
	}
	_, err = ParseConfig([]byte("telemetry: {otlp_endpoint: 'not a url', sample_ratio: 2}\nupstreams:\n  a: {command: x}\n"), nil)
	for _, want := range []string{"telemetry.otlp_endpoint", "telemetry.sample_ratio"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("bad telemetry config: error %v, want it to name %s", err, want)
		}
	}
}

// BenchmarkCallTraced is BenchmarkCall with tracing on, exporting to an
// OTLP/HTTP receiver that discards: the cost of enabled tracing per call.
func BenchmarkCallTraced(b *testing.B) {
	sink := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/x-protobuf")
	}))
	b.Cleanup(sink.Close)
	ctx, g := benchGatewayConfig(b, func(url string) string {
		return fmt.Sprintf("telemetry: {otlp_endpoint: %s}\nupstreams:\n  a: {url: %s}\n", sink.URL, url)
	})
	cs := agent(b, ctx, g, nil)
	benchEcho(b, ctx, cs)
}
