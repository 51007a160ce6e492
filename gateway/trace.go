package gateway

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"strings"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	"github.com/modelcontextprotocol/go-sdk/mcp"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.37.0"
	"go.opentelemetry.io/otel/trace"

	"github.com/credgate/credgate/authmap"
)

// TelemetryConfig is the `telemetry` block: OpenTelemetry traces, off unless
// an OTLP endpoint is set here or in the standard environment variables.
type TelemetryConfig struct {
	// OTLPEndpoint is the OTLP/HTTP base URL traces are exported to
	// (http://collector:4318); spans go to <endpoint>/v1/traces. If empty,
	// OTEL_EXPORTER_OTLP_TRACES_ENDPOINT or OTEL_EXPORTER_OTLP_ENDPOINT
	// decide, and with neither set tracing is off.
	OTLPEndpoint string `koanf:"otlp_endpoint"`
	// ServiceName is the service.name resource attribute. If empty,
	// OTEL_SERVICE_NAME, else "credgate".
	ServiceName string `koanf:"service_name"`
	// SampleRatio is the share of new traces recorded (0 < r <= 1); a trace
	// the agent started keeps the agent's sampling decision. If zero,
	// defaults to 1.
	SampleRatio float64 `koanf:"sample_ratio"`
}

// validate reports a bad telemetry block naming its key.
func (c TelemetryConfig) validate() error {
	var errs []error
	if c.OTLPEndpoint != "" {
		u, err := url.Parse(c.OTLPEndpoint)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			errs = append(errs, fmt.Errorf("telemetry.otlp_endpoint: %q is not an http(s) URL", c.OTLPEndpoint))
		}
	}
	if c.SampleRatio < 0 || c.SampleRatio > 1 {
		errs = append(errs, fmt.Errorf("telemetry.sample_ratio: %v is not between 0 and 1", c.SampleRatio))
	}
	return errors.Join(errs...)
}

// enabled reports whether traces are exported.
func (c TelemetryConfig) enabled() bool {
	return c.OTLPEndpoint != "" || os.Getenv("OTEL_EXPORTER_OTLP_ENDPOINT") != "" || os.Getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") != ""
}

// tracing is the gateway's tracer; nil when tracing is off, so that the call
// path pays one nil check and nothing else.
type tracing struct {
	provider *sdktrace.TracerProvider
	tracer   trace.Tracer
	prop     propagation.TextMapPropagator
}

// Span attributes of credgate's own, beside the MCP semantic conventions'.
const (
	attrUpstream    = attribute.Key("credgate.upstream")
	attrCredential  = attribute.Key("credgate.credential")
	attrFailType    = attribute.Key("credgate.failure.type")
	attrFailSubtype = attribute.Key("credgate.failure.subtype")
	attrRoute       = attribute.Key("credgate.route")
	attrAttempt     = attribute.Key("credgate.attempt")
)

// MCP semantic-convention attributes (OpenTelemetry semconv for MCP).
const (
	attrMCPMethod    = attribute.Key("mcp.method.name")
	attrMCPSession   = attribute.Key("mcp.session.id")
	attrMCPProtocol  = attribute.Key("mcp.protocol.version")
	attrToolName     = attribute.Key("gen_ai.tool.name")
	attrPromptName   = attribute.Key("gen_ai.prompt.name")
	attrResourceURI  = attribute.Key("mcp.resource.uri")
	attrRPCErrorCode = attribute.Key("rpc.jsonrpc.error_code")
	attrErrorType    = attribute.Key("error.type")
)

// newTracing builds the exporter and provider when cfg enables tracing.
func newTracing(cfg TelemetryConfig, version string) (*tracing, error) {
	if !cfg.enabled() {
		return nil, nil
	}
	var opts []otlptracehttp.Option
	if cfg.OTLPEndpoint != "" {
		opts = append(opts, otlptracehttp.WithEndpointURL(strings.TrimSuffix(cfg.OTLPEndpoint, "/")+"/v1/traces"))
	}
	exp, err := otlptracehttp.New(context.Background(), opts...)
	if err != nil {
		return nil, fmt.Errorf("telemetry: %w", err)
	}
	name := cfg.ServiceName
	if name == "" {
		name = os.Getenv("OTEL_SERVICE_NAME")
	}
	if name == "" {
		name = "credgate"
	}
	ratio := cfg.SampleRatio
	if ratio == 0 {
		ratio = 1
	}
	res := resource.NewSchemaless(semconv.ServiceName(name), semconv.ServiceVersion(version))
	tp := sdktrace.NewTracerProvider(
		sdktrace.WithBatcher(exp),
		sdktrace.WithResource(res),
		sdktrace.WithSampler(sdktrace.ParentBased(sdktrace.TraceIDRatioBased(ratio))),
	)
	return &tracing{
		provider: tp,
		tracer:   tp.Tracer("github.com/credgate/credgate/gateway"),
		prop:     propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{}),
	}, nil
}

// shutdown flushes the spans still queued.
func (t *tracing) shutdown(ctx context.Context) {
	if t != nil {
		_ = t.provider.Shutdown(ctx)
	}
}

// metaCarrier reads and writes W3C trace context in a request's _meta, where
// MCP clients put it (traceparent, tracestate, baggage).
type metaCarrier map[string]any

func (m metaCarrier) Get(key string) string {
	s, _ := m[key].(string)
	return s
}

func (m metaCarrier) Set(key, value string) { m[key] = value }

func (m metaCarrier) Keys() []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	return out
}

// traceRequests is the receiving middleware that opens one server span per
// MCP request, continuing the agent's trace from the request's _meta.
func (g *Server) traceRequests(next mcp.MethodHandler) mcp.MethodHandler {
	if g.tracing == nil {
		return next
	}
	tr := g.tracing
	return func(ctx context.Context, method string, req mcp.Request) (mcp.Result, error) {
		if strings.HasPrefix(method, "notifications/") {
			return next(ctx, method, req)
		}
		var target string
		attrs := []attribute.KeyValue{attrMCPMethod.String(method)}
		params := req.GetParams()
		if params != nil {
			if meta := params.GetMeta(); len(meta) > 0 {
				ctx = tr.prop.Extract(ctx, metaCarrier(meta))
			}
		}
		switch p := params.(type) {
		case *mcp.CallToolParamsRaw:
			target = p.Name
			attrs = append(attrs, attrToolName.String(p.Name))
		case *mcp.CallToolParams:
			target = p.Name
			attrs = append(attrs, attrToolName.String(p.Name))
		case *mcp.GetPromptParams:
			target = p.Name
			attrs = append(attrs, attrPromptName.String(p.Name))
		case *mcp.ReadResourceParams:
			attrs = append(attrs, attrResourceURI.String(g.redact(p.URI)))
		}
		if ss, ok := req.GetSession().(*mcp.ServerSession); ok && ss != nil {
			if id := ss.ID(); id != "" {
				attrs = append(attrs, attrMCPSession.String(id))
			}
			if ip := ss.InitializeParams(); ip != nil {
				attrs = append(attrs, attrMCPProtocol.String(ip.ProtocolVersion))
			}
		}
		name := method
		if target != "" {
			name += " " + target
		}
		ctx, span := tr.tracer.Start(ctx, name, trace.WithSpanKind(trace.SpanKindServer), trace.WithAttributes(attrs...))
		defer span.End()
		res, err := next(ctx, method, req)
		endSpan(span, res, err)
		return res, err
	}
}

// endSpan records a request's outcome on its span: a JSON-RPC error, or a
// tool result carrying a typed failure.
func endSpan(span trace.Span, res mcp.Result, err error) {
	if err != nil {
		var we *jsonrpc.Error
		if errors.As(err, &we) {
			span.SetAttributes(attrRPCErrorCode.Int64(we.Code))
		}
		span.SetAttributes(attrErrorType.String(errorType(err)))
		span.SetStatus(codes.Error, "")
		return
	}
	if r, ok := res.(*mcp.CallToolResult); ok && r != nil && r.IsError {
		if f, ok := r.Meta[MetaKey].(authmap.Failure); ok {
			span.SetAttributes(attrFailType.String(string(f.Type)), attrErrorType.String(string(f.Type)))
			if f.Subtype != "" {
				span.SetAttributes(attrFailSubtype.String(string(f.Subtype)))
			}
		} else {
			span.SetAttributes(attrErrorType.String("tool_error"))
		}
		span.SetStatus(codes.Error, "")
	}
}

// errorType is the error.type of a JSON-RPC error: its code's name.
func errorType(err error) string {
	var we *jsonrpc.Error
	if errors.As(err, &we) {
		return fmt.Sprintf("jsonrpc.%d", we.Code)
	}
	if errors.Is(err, context.Canceled) {
		return "cancelled"
	}
	return "_OTHER"
}

// attemptSpan opens the client span of one attempt to send a request to
// upstream u, and puts its trace context in params' _meta (replacing the
// agent's, which the request span continues) so the upstream's spans are its
// children. The HTTP transport carries the same context in headers (see
// injectTrace). With tracing off it returns ctx and a no-op end.
func (g *Server) attemptSpan(ctx context.Context, u *upstream, params mcp.Params, attempt int) (context.Context, func(error)) {
	if g.tracing == nil {
		return ctx, func(error) {}
	}
	tr := g.tracing
	method, target := "request", ""
	attrs := []attribute.KeyValue{attrUpstream.String(u.name), attrAttempt.Int(attempt)}
	switch p := params.(type) {
	case *mcp.CallToolParams:
		method, target = "tools/call", g.redactor.RedactKnown(p.Name)
		attrs = append(attrs, attrToolName.String(target))
	case *mcp.GetPromptParams:
		method, target = "prompts/get", p.Name
		attrs = append(attrs, attrPromptName.String(p.Name))
	case *mcp.ReadResourceParams:
		method = "resources/read"
		attrs = append(attrs, attrResourceURI.String(g.redact(p.URI)))
	}
	attrs = append(attrs, attrMCPMethod.String(method))
	if cc := callCredFrom(ctx); cc != nil {
		attrs = append(attrs, attrCredential.String(cc.name))
	}
	if r := routeFrom(ctx); r != "" {
		attrs = append(attrs, attrRoute.String(r))
	}
	name := method
	if target != "" {
		name += " " + target
	}
	ctx, span := tr.tracer.Start(ctx, name, trace.WithSpanKind(trace.SpanKindClient), trace.WithAttributes(attrs...))
	if params != nil && !isNilParams(params) {
		meta := params.GetMeta()
		out := make(map[string]any, len(meta)+2)
		for k, v := range meta {
			if k != "traceparent" && k != "tracestate" {
				out[k] = v
			}
		}
		tr.prop.Inject(ctx, metaCarrier(out))
		params.SetMeta(out)
	}
	return ctx, func(err error) {
		if err != nil {
			span.SetAttributes(attrErrorType.String(errorType(err)))
			span.SetStatus(codes.Error, "")
		}
		span.End()
	}
}

// isNilParams reports whether p is a typed nil pointer.
func isNilParams(p mcp.Params) bool {
	switch v := p.(type) {
	case *mcp.CallToolParams:
		return v == nil
	case *mcp.GetPromptParams:
		return v == nil
	case *mcp.ReadResourceParams:
		return v == nil
	}
	return false
}

// injectTrace puts ctx's trace context in an upstream HTTP request's
// headers.
func (g *Server) injectTrace(ctx context.Context, h interface{ Set(string, string) }) {
	if g.tracing != nil {
		g.tracing.prop.Inject(ctx, headerSetter{h})
	}
}

type headerSetter struct {
	h interface{ Set(string, string) }
}

func (s headerSetter) Get(string) string { return "" }
func (s headerSetter) Set(k, v string)   { s.h.Set(k, v) }
func (s headerSetter) Keys() []string    { return nil }

// routeKey carries the route a call was resolved through, for spans.
type routeKey struct{}

// withRoute records on ctx that the call goes through route.
func withRoute(ctx context.Context, route string) context.Context {
	return context.WithValue(ctx, routeKey{}, route)
}

func routeFrom(ctx context.Context) string {
	s, _ := ctx.Value(routeKey{}).(string)
	return s
}
