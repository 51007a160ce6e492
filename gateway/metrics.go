package gateway

import (
	"context"
	"math"
	"net/http"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/modelcontextprotocol/go-sdk/mcp"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/credgate/credgate/authmap"
	"github.com/credgate/credgate/breaker"
	"github.com/credgate/credgate/routing"
)

// Prometheus metrics (issue 10), served at GET /metrics.
//
// Each Server owns its registry, never the global default one, so that
// gateways sharing a process (tests in parallel) do not collide. The series
// are of two kinds:
//
//	event ─────────────────────────▶ counter / histogram (incremented once, where it happens)
//	  tool call ends       logCall          credgate_tool_calls_total, credgate_tool_call_duration_seconds
//	  connect attempt ends run              credgate_upstream_connect_{attempts,failures}_total
//	  credential event     credentialEvent  credgate_credential_{refreshes,rotations,events}_total
//	  config reload        configReload     credgate_config_reloads_total, credgate_config_last_reload_*
//	  reroute              rerouted         credgate_route_reroutes_total
//
//	scrape ────────────────────────▶ state read now, from what /health reads
//	  upstream status, catalog        credgate_upstream_up, credgate_upstream_tools
//	  credential set                  credgate_credential_status, _expiry_timestamp_seconds, _ttl_seconds
//	  breaker set (breakerHealth)     credgate_breaker_state
//	  agent sessions, routes, drops   credgate_agent_sessions, credgate_route_target_*, credgate_notifications_dropped_total
//	  upstream bounds (floodGuard)    credgate_upstream_messages_dropped_total
//
// State is never kept twice: a scrape shows what /health would show at that
// instant, so a credential revoked a millisecond ago is on the next scrape.
//
// Label values are bounded and never carry a secret. Upstream, credential
// and route names come from the config; tool names from the catalog only
// (a name an agent sends that the catalog does not list is counted as
// "_unknown", and past maxToolLabels distinct names new ones are counted as
// "_other"); types, subtypes, statuses, breaker states, event kinds and
// results come from fixed lists. No label holds agent-supplied text or an
// error message.
//
// Enumerations (credential status, breaker state) follow the Prometheus
// convention for states: one series per state, 1 for the current one and 0
// for the others, so `credgate_breaker_state{breaker_state="open"} == 1`
// selects open breakers and no one has to remember what 2 meant.

// Label names that are not log fields (those are: fieldUpstream, fieldTool,
// fieldCredential, fieldSubtype, fieldBreakerState).
const (
	labelType   = "type"
	labelStatus = "status"
	labelResult = "result"
	labelKind   = "kind"
	labelRoute  = "route"
	labelReason = "reason"
	labelTarget = "target"
)

// Label values the gateway substitutes for values it will not expose.
const (
	// toolUnknown is the tool label of a call whose name the catalog does
	// not list (an agent may send any name; see unlisted).
	toolUnknown = "_unknown"
	// labelOther stands for values past a cardinality bound, or outside the
	// fixed list a label takes its values from.
	labelOther = "_other"
)

// Cardinality bounds of labels whose values are not from a fixed list.
const (
	// maxToolLabels bounds the (upstream, tool) pairs counted: each costs a
	// counter per outcome and a histogram. The catalog bounds them already;
	// this holds against an upstream that renames its tools forever.
	maxToolLabels = 5000
	// maxRerouteLabels bounds the (route, reason) pairs counted.
	maxRerouteLabels = 1000
)

// Call outcomes logCall reports besides failure types (see callLabels).
const (
	outcomeOK        = "ok"
	outcomeCancelled = "cancelled"
	outcomeRPCError  = "rpc_error"
	outcomeToolError = "tool_error"
	// outcomeInput: the upstream's result asked the agent for input (a
	// 2026-07-28 input round); the call's end is another line.
	outcomeInput = "input_required"
)

// Results of the counters "by result".
const (
	resultSuccess  = "success"
	resultFailure  = "failure"
	resultRejected = "rejected"
)

// callDurationBuckets are the call histogram's bounds, in seconds: from a
// local stdio tool (a few ms) to a long remote job, up to the 5-minute mark.
var callDurationBuckets = [...]float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 120, 300}

// metrics is a Server's registry and the series it keeps. Its hooks are
// safe on a nil *metrics (they do nothing), so a Server built without one
// still runs.
type metrics struct {
	g       *Server
	reg     *prometheus.Registry
	handler http.Handler

	calls           *prometheus.CounterVec // upstream, tool, type, subtype; failures only (see callSeries)
	okDesc          *prometheus.Desc       // calls' ok series (callCollector)
	durationDesc    *prometheus.Desc       // upstream, tool (callCollector)
	series          sync.Map               // [2]string{upstream, tool label} -> *callSeries
	connects        *prometheus.CounterVec // upstream
	connectFailures *prometheus.CounterVec // upstream
	refreshes       *prometheus.CounterVec // credential, result
	rotations       *prometheus.CounterVec // credential, result
	credEvents      *prometheus.CounterVec // credential, kind
	reloads         *prometheus.CounterVec // result
	reloadOK        prometheus.Gauge
	reloadAt        prometheus.Gauge
	reroutes        *prometheus.CounterVec // route, reason

	types    map[string]bool // call outcome types (the type label's values)
	subtypes map[string]bool

	// tools caches each (upstream, tool) pair's *toolSeries, so that a call
	// costs a lock-free map read and no allocation. A sync.Map rather than
	// a map copied on write: a new pair comes once per tool, but a gateway
	// with thousands of tools made quadratic garbage copying the map for
	// each (issue 12: 24 MB over the first call of 1,000 tools).
	tools      sync.Map // toolKey -> *toolSeries
	toolCount  atomic.Int64
	toolMu     sync.Mutex
	toolLabels map[[2]string]bool // (upstream, tool label) pairs issued; under toolMu

	rerouteMu     sync.Mutex
	rerouteLabels map[[2]string]bool // (route, reason) pairs issued; under rerouteMu

	routes atomic.Pointer[func() []routeTargetState]
	drops  atomic.Pointer[func() uint64]

	// The state read at scrape time (see Collect).
	upDesc, toolsDesc, credStatusDesc, credExpiryDesc, credTTLDesc *prometheus.Desc
	breakerDesc, sessionsDesc, routeAvailDesc, routeActiveDesc     *prometheus.Desc
	stateUpDesc                                                    *prometheus.Desc
	dropsDesc, upDropsDesc                                         *prometheus.Desc
}

type toolKey struct{ upstream, tool string }

// toolSeries is a cached (upstream, tool) pair. prefix and sep are what the
// label was computed with: a reload that changes either recomputes it.
type toolSeries struct {
	prefix, sep string
	label       string
	*callSeries
}

// callSeries is the successful-call counter and the duration histogram of
// one (upstream, tool label) pair, exposed by callCollector. They are kept
// here rather than in a CounterVec and a HistogramVec because a gateway
// keeps one per tool called: client_golang spends ~1.7 KiB on the pair
// (a histogram with two bucket sets, label-pair protos, map entries), this
// ~200 bytes (issue 12: 1,000 tools held 1.7 MiB, a quarter of the live
// heap). Failed calls are rare and stay in the calls CounterVec, under the
// same metric name.
type callSeries struct {
	upstream, label string
	ok              atomic.Uint64
	count           atomic.Uint64
	sumBits         atomic.Uint64 // float64 seconds
	buckets         [len(callDurationBuckets)]atomic.Uint64
}

// observe records one call of d seconds.
func (c *callSeries) observe(d float64) {
	i, _ := slices.BinarySearch(callDurationBuckets[:], d) // first bound >= d
	if i < len(c.buckets) {
		c.buckets[i].Add(1)
	}
	for {
		old := c.sumBits.Load()
		if c.sumBits.CompareAndSwap(old, math.Float64bits(math.Float64frombits(old)+d)) {
			break
		}
	}
	c.count.Add(1)
}

// callCollector exposes every callSeries: the ok series of
// credgate_tool_calls_total and credgate_tool_call_duration_seconds.
type callCollector struct{ m *metrics }

func (c callCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.m.durationDesc }

func (c callCollector) Collect(ch chan<- prometheus.Metric) {
	c.m.series.Range(func(_, v any) bool {
		s := v.(*callSeries)
		// count first: a call observed meanwhile may then show in the
		// buckets and not yet in the count, never the reverse.
		count := s.count.Load()
		buckets := make(map[float64]uint64, len(callDurationBuckets))
		var cum uint64
		for i, b := range callDurationBuckets {
			cum += s.buckets[i].Load()
			buckets[b] = min(cum, count)
		}
		ch <- prometheus.MustNewConstHistogram(c.m.durationDesc, count, math.Float64frombits(s.sumBits.Load()), buckets, s.upstream, s.label)
		ch <- prometheus.MustNewConstMetric(c.m.okDesc, prometheus.CounterValue, float64(s.ok.Load()), s.upstream, s.label, outcomeOK, "")
		return true
	})
}

// routeTargetState is one target of a route, as the routing code reports it
// to the metrics (see setRoutes).
type routeTargetState struct {
	Route  string // the route's exposed tool name
	Target string // the target's exposed name (<upstream>__<tool>)
	// Available: the target could serve a call now (upstream connected,
	// credential usable, breakers closed).
	Available bool
	// Active: the target calls go to now (the first available one).
	Active bool
}

// newMetrics builds g's registry. It reads g.opts and the config only; the
// state collectors read the rest at scrape time.
func newMetrics(g *Server) *metrics {
	m := &metrics{g: g, reg: prometheus.NewRegistry(), toolLabels: map[[2]string]bool{}, rerouteLabels: map[[2]string]bool{},
		types:    map[string]bool{outcomeOK: true, outcomeCancelled: true, outcomeRPCError: true, outcomeToolError: true, outcomeInput: true},
		subtypes: map[string]bool{}}
	for _, t := range authmap.Types() {
		m.types[string(t)] = true
	}
	for _, s := range authmap.Subtypes() {
		m.subtypes[string(s)] = true
	}

	counter := func(name, help string, labels ...string) *prometheus.CounterVec {
		return prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "credgate", Name: name, Help: help}, labels)
	}
	const callsHelp = "Tool calls through the gateway, by upstream, exposed tool name and outcome: type is ok, a failure type (auth_failure, upstream_unavailable, timeout, ...), rpc_error, tool_error or cancelled; subtype is the auth failure subtype, if any."
	m.calls = counter("tool_calls_total", callsHelp, fieldUpstream, fieldTool, labelType, fieldSubtype)
	// The same name, help and labels as m.calls: the registry merges the two
	// into one family, and only callCollector has type="ok" series.
	m.okDesc = prometheus.NewDesc("credgate_tool_calls_total", callsHelp, []string{fieldUpstream, fieldTool, labelType, fieldSubtype}, nil)
	m.durationDesc = prometheus.NewDesc("credgate_tool_call_duration_seconds",
		"Duration of tool calls through the gateway, from the agent's request to the answer, whatever the outcome.", []string{fieldUpstream, fieldTool}, nil)
	m.connects = counter("upstream_connect_attempts_total", "Connection attempts to an upstream (process start or HTTP handshake plus initialize).", fieldUpstream)
	m.connectFailures = counter("upstream_connect_failures_total", "Connection attempts to an upstream that failed.", fieldUpstream)
	m.refreshes = counter("credential_refreshes_total", "Renewals of a renewable credential (OAuth): success, or failure when a refresh failing changed the credential's status (expiring, expired, revoked, invalid, missing).",
		fieldCredential, labelResult)
	m.rotations = counter("credential_rotations_total", "New values a credential's source handed over: success (adopted), or rejected (it failed its check, the source resolved to nothing, or a stdio upstream's child refused it at start; the old value was kept). A value adopted and then refused by its child counts in both.",
		fieldCredential, labelResult)
	m.credEvents = counter("credential_events_total", "Credential lifecycle events, by kind (loaded, validated, refreshed, rotated, expiring, expired, revoked, invalid, missing, rate_limited, restored, rejected_rotation).",
		fieldCredential, labelKind)
	m.reloads = counter("config_reloads_total", "Config reloads, by result (success, or failure when the new config was rejected and the old one kept serving).", labelResult)
	m.reloadOK = prometheus.NewGauge(prometheus.GaugeOpts{Namespace: "credgate", Name: "config_last_reload_successful", Help: "1 if the last config load or reload succeeded, 0 if it was rejected."})
	m.reloadAt = prometheus.NewGauge(prometheus.GaugeOpts{Namespace: "credgate", Name: "config_last_reload_success_timestamp_seconds", Help: "When the config in force was loaded (seconds since the epoch)."})
	m.reroutes = counter("route_reroutes_total", "Calls to a routed tool that went to a backup target, by route and the reason the target before it could not serve (a subtype, breaker_open, upstream_unavailable).",
		labelRoute, labelReason)
	build := prometheus.NewGauge(prometheus.GaugeOpts{Namespace: "credgate", Name: "build_info", Help: "Always 1; the version label is the gateway's.",
		ConstLabels: prometheus.Labels{"version": labelValue(g.opts.Version), "goversion": runtime.Version()}})
	build.Set(1)

	desc := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc("credgate_"+name, help, labels, nil)
	}
	m.upDesc = desc("upstream_up", "1 while the upstream has a live session, 0 while it is connecting or down.", fieldUpstream)
	m.toolsDesc = desc("upstream_tools", "Tools the upstream exposes through the gateway.", fieldUpstream)
	m.credStatusDesc = desc("credential_status", "The credential's status, one series per status, 1 for the current one (healthy, expiring, expired, revoked, invalid, missing, rate_limited, unknown).",
		fieldCredential, labelStatus)
	m.credExpiryDesc = desc("credential_expiry_timestamp_seconds", "When the credential expires (seconds since the epoch); absent while its expiry is unknown.", fieldCredential)
	m.credTTLDesc = desc("credential_ttl_seconds", "Seconds until the credential expires, negative once expired; absent while its expiry is unknown.", fieldCredential)
	m.breakerDesc = desc("breaker_state", "Circuit breaker state, one series per state, 1 for the current one (closed, half-open, open). credential is empty for the upstream's own breaker.",
		fieldUpstream, fieldCredential, fieldBreakerState)
	m.sessionsDesc = desc("agent_sessions", "Agent (downstream MCP) sessions open.")
	m.stateUpDesc = desc("shared_state_up", "1 while the shared state store (state.redis) answers, 0 while the gateway serves on local state; absent without state.redis.")
	m.routeAvailDesc = desc("route_target_available", "1 if the route's target could serve a call now (upstream connected, credential usable, breakers closed).", labelRoute, labelTarget)
	m.routeActiveDesc = desc("route_target_active", "1 for the target a route's calls go to now.", labelRoute, labelTarget)
	m.dropsDesc = desc("notifications_dropped_total", "Alert notifications dropped (their queue was full, or every delivery attempt failed).")
	m.upDropsDesc = desc("upstream_messages_dropped_total", "What the upstream sent that the gateway dropped or skipped, by kind: notification (progress or log over 100 a second), log_line (log lines left out of the gateway's log), stray_line (a stdio child's stdout lines that are not JSON-RPC), bad_answer (answers its session could not read, failed as upstream_error), child_request (a stdio child's requests past 64 held), stderr_line (a stdio child's stderr lines left out of the gateway's log).",
		fieldUpstream, labelKind)

	m.reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		m.calls, callCollector{m}, m.connects, m.connectFailures, m.refreshes, m.rotations, m.credEvents,
		m.reloads, m.reloadOK, m.reloadAt, m.reroutes, build, stateCollector{m},
	)
	m.handler = promhttp.InstrumentMetricHandler(m.reg, promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{
		Registry:      m.reg, // promhttp_metric_handler_errors_total
		ErrorHandling: promhttp.ContinueOnError,
	}))

	// Series known from the config start at zero, so that rate() and
	// increase() see the first event and "absent" means "not configured".
	cfg := g.metricsConfig()
	for _, name := range cfg.Order() {
		m.connects.WithLabelValues(name)
		m.connectFailures.WithLabelValues(name)
	}
	for name := range cfg.Credentials {
		m.refreshes.WithLabelValues(name, resultSuccess)
		m.refreshes.WithLabelValues(name, resultFailure)
		m.rotations.WithLabelValues(name, resultSuccess)
		m.rotations.WithLabelValues(name, resultRejected)
	}
	m.reloads.WithLabelValues(resultSuccess)
	m.reloads.WithLabelValues(resultFailure)
	m.reloadOK.Set(1)
	m.reloadAt.Set(float64(g.now().UnixNano()) / 1e9)
	return m
}

// metricsUpstreams and metricsConfig are this file's only reads of the
// upstreams and the config in force.
func (g *Server) metricsUpstreams() []*upstream { return g.ups() }
func (g *Server) metricsConfig() *Config        { return g.config() }

// metricsHandler serves the registry in the Prometheus text format (or
// protobuf, on request).
func (g *Server) metricsHandler() http.Handler {
	if g.metrics == nil {
		return http.NotFoundHandler()
	}
	return g.metrics.handler
}

// toolCall counts one tool call and observes its duration; logCall calls it
// with the outcome it logged (see callLabels) and the failure object, if any.
func (m *metrics) toolCall(u *upstream, tool, outcome string, f *authmap.Failure, start time.Time) {
	if m == nil {
		return
	}
	s := m.toolSeries(u, tool)
	s.observe(time.Since(start).Seconds())
	if outcome == outcomeOK {
		s.ok.Add(1)
		return
	}
	typ, sub := m.callLabels(outcome, f)
	m.calls.WithLabelValues(u.name, s.label, typ, sub).Inc()
}

// callLabels returns the type and subtype labels of a call's outcome: the
// outcome logCall logged (ok, cancelled, rpc_error, tool_error, or the
// failure's type) and the failure's auth subtype, if any. A value outside
// the fixed lists is counted as "_other".
func (m *metrics) callLabels(outcome string, f *authmap.Failure) (typ, sub string) {
	typ = outcome
	if !m.types[typ] {
		typ = labelOther
	}
	if f != nil && f.Subtype != "" {
		sub = string(f.Subtype)
		if !m.subtypes[sub] {
			sub = labelOther
		}
	}
	return typ, sub
}

// toolSeries returns the cached series of (u, tool), tool being the
// upstream's own name, making them if needed.
func (m *metrics) toolSeries(u *upstream, tool string) *toolSeries {
	prefix, sep := u.cfg.prefix(u.name), m.g.metricsConfig().ToolSeparator
	if v, ok := m.tools.Load(toolKey{u.name, tool}); ok {
		if s := v.(*toolSeries); s.prefix == prefix && s.sep == sep {
			return s
		}
	}
	return m.newToolSeries(u, tool, prefix, sep)
}

// newToolSeries decides the tool label of (u, tool): its exposed name when
// the catalog lists it or the upstream listed it, else "_unknown". Only the
// listed are cached, so an agent sending made-up names costs a lookup, not
// memory.
func (m *metrics) newToolSeries(u *upstream, tool, prefix, sep string) *toolSeries {
	exposed := routing.Expose(prefix, sep, tool)
	label := toolUnknown
	if m.g.catalog.hasTool(exposed) || listsTool(u, tool) {
		label = labelValue(m.g.redact(exposed))
	}
	m.toolMu.Lock()
	defer m.toolMu.Unlock()
	if label != toolUnknown {
		pair := [2]string{u.name, label}
		if !m.toolLabels[pair] {
			if len(m.toolLabels) >= maxToolLabels {
				label = labelOther
			} else {
				m.toolLabels[pair] = true
			}
		}
	}
	key := [2]string{u.name, label}
	cs, ok := m.series.Load(key)
	if !ok {
		cs, _ = m.series.LoadOrStore(key, &callSeries{upstream: u.name, label: label})
	}
	s := &toolSeries{prefix: prefix, sep: sep, label: label, callSeries: cs.(*callSeries)}
	if label == toolUnknown || m.toolCount.Load() >= 2*maxToolLabels {
		return s
	}
	if _, loaded := m.tools.Swap(toolKey{u.name, tool}, s); !loaded {
		m.toolCount.Add(1)
	}
	return s
}

// listsTool reports whether u's last listing has a tool called name.
func listsTool(u *upstream, name string) bool {
	return slices.ContainsFunc(u.catalog().tools, func(t *mcp.Tool) bool { return t != nil && t.Name == name })
}

// connectAttempt counts a connection attempt to upstream and, when err is
// set, its failure. An attempt cut short because ctx ended (the gateway or
// the upstream stopping) is not counted.
func (m *metrics) connectAttempt(ctx context.Context, upstream string, err error) {
	if m == nil || ctx.Err() != nil {
		return
	}
	m.connects.WithLabelValues(upstream).Inc()
	if err != nil {
		m.connectFailures.WithLabelValues(upstream).Inc()
	}
}

// credentialEvent counts a credential lifecycle event, and the refresh or
// rotation result it reports. A refresh that fails and leaves the status as
// it was (a retry after a first failure) is no event, so it is not counted:
// refreshes{result="failure"} counts the failures that changed a status.
func (m *metrics) credentialEvent(e authmap.Event) {
	if m == nil {
		return
	}
	m.credEvents.WithLabelValues(labelValue(e.Credential), labelValue(string(e.Kind))).Inc()
	switch e.Kind {
	case authmap.EventRefreshed:
		m.refreshes.WithLabelValues(labelValue(e.Credential), resultSuccess).Inc()
	case authmap.EventRotated:
		m.rotations.WithLabelValues(labelValue(e.Credential), resultSuccess).Inc()
	case authmap.EventRejectedRotation:
		m.rotations.WithLabelValues(labelValue(e.Credential), resultRejected).Inc()
	case authmap.EventExpiring, authmap.EventExpired, authmap.EventRevoked, authmap.EventInvalid, authmap.EventMissing:
		if e.Trigger == authmap.TriggerRefresh {
			m.refreshes.WithLabelValues(labelValue(e.Credential), resultFailure).Inc()
		}
	}
}

// configReload counts a config reload: ok when the new config was applied,
// false when it was rejected and the old one kept serving. The reload code
// calls it once per reload (file change, SIGHUP).
func (m *metrics) configReload(ok bool) {
	if m == nil {
		return
	}
	if !ok {
		m.reloads.WithLabelValues(resultFailure).Inc()
		m.reloadOK.Set(0)
		return
	}
	m.reloads.WithLabelValues(resultSuccess).Inc()
	m.reloadOK.Set(1)
	// When the config in force was put in force, as /health's loaded_at: a
	// reload that changed nothing keeps it (found trying the gateway from
	// outside: the metric moved, loaded_at did not).
	if s := m.g.snap.Load(); s != nil && !s.loadedAt.IsZero() {
		m.reloadAt.Set(float64(s.loadedAt.UnixNano()) / 1e9)
	}
}

// rerouted counts a call of route that went on to a backup target because
// the one before could not serve it for reason (a subtype, "breaker_open",
// "upstream_unavailable"). The routing code calls it once per switch to a
// backup. Both come from the config and the code, never from an agent;
// past maxRerouteLabels pairs they are counted as "_other".
func (m *metrics) rerouted(route, reason string) {
	if m == nil {
		return
	}
	route, reason = labelValue(route), labelValue(reason)
	pair := [2]string{route, reason}
	m.rerouteMu.Lock()
	if !m.rerouteLabels[pair] {
		if len(m.rerouteLabels) >= maxRerouteLabels {
			route, reason = labelOther, labelOther
		} else {
			m.rerouteLabels[pair] = true
		}
	}
	m.rerouteMu.Unlock()
	m.reroutes.WithLabelValues(route, reason).Inc()
}

// setRoutes installs what reports the routes' targets at scrape time
// (credgate_route_target_available and _active). The routing code calls it
// once; f must be quick and safe for concurrent use. Until then no route
// series are exposed.
func (m *metrics) setRoutes(f func() []routeTargetState) {
	if m != nil {
		m.routes.Store(&f)
	}
}

// setNotificationDrops installs what reads the alert notifier's count of
// dropped notifications (credgate_notifications_dropped_total), a counter
// that only grows. Until then it reads 0.
func (m *metrics) setNotificationDrops(f func() uint64) {
	if m != nil {
		m.drops.Store(&f)
	}
}

// labelValue makes s a valid label value (client_golang refuses invalid
// UTF-8). Every value passed is already bounded.
func labelValue(s string) string {
	if utf8.ValidString(s) {
		return s
	}
	return strings.ToValidUTF8(s, "\uFFFD")
}

// stateCollector exposes the state read at scrape time.
type stateCollector struct{ m *metrics }

func (c stateCollector) Describe(ch chan<- *prometheus.Desc) {
	m := c.m
	for _, d := range []*prometheus.Desc{m.upDesc, m.toolsDesc, m.credStatusDesc, m.credExpiryDesc, m.credTTLDesc,
		m.breakerDesc, m.sessionsDesc, m.routeAvailDesc, m.routeActiveDesc, m.dropsDesc, m.upDropsDesc, m.stateUpDesc} {
		ch <- d
	}
}

// breakerStates are the breaker_state label's values.
var breakerStates = [...]breaker.State{breaker.StateClosed, breaker.StateHalfOpen, breaker.StateOpen}

func (c stateCollector) Collect(ch chan<- prometheus.Metric) {
	m := c.m
	g := m.g
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	ups := g.metricsUpstreams()
	breakers, credBreakers := g.breakerHealth()
	counts := g.catalog.exposedCounts()
	oneHot := func(up, cred, state string) {
		for _, s := range breakerStates {
			gauge(m.breakerDesc, flag(s.String() == state), up, cred, s.String())
		}
	}
	for _, u := range ups {
		u.mu.Lock()
		up := u.status == StatusUp
		u.mu.Unlock()
		gauge(m.upDesc, flag(up), u.name)
		gauge(m.toolsDesc, float64(counts[u.name].tools), u.name)
		state := breakers[u.name].State
		if state == "" { // never used: closed (as in /health)
			state = breaker.StateClosed.String()
		}
		oneHot(u.name, "", state)
		for cred, bh := range credBreakers[u.name] {
			oneHot(u.name, cred, bh.State)
		}
		for k, name := range dropKindNames {
			ch <- prometheus.MustNewConstMetric(m.upDropsDesc, prometheus.CounterValue, float64(u.flood.drops[k].Load()), u.name, name)
		}
	}

	now := g.now()
	set := g.cred.set
	for _, name := range set.Names() {
		cr := set.Get(name)
		if cr == nil {
			continue
		}
		st := cr.Status()
		for _, s := range authmap.Statuses() {
			gauge(m.credStatusDesc, flag(s == st), name, s.String())
		}
		if exp := cr.ExpiresAt(); !exp.IsZero() {
			gauge(m.credExpiryDesc, float64(exp.UnixNano())/1e9, name)
			gauge(m.credTTLDesc, exp.Sub(now).Seconds(), name)
		}
	}

	gauge(m.sessionsDesc, float64(g.sessionCount()))
	if g.shared.enabled() {
		up := 0.0
		if g.shared.health().Status == "ok" {
			up = 1
		}
		gauge(m.stateUpDesc, up)
	}
	if f := m.routes.Load(); f != nil {
		for _, r := range (*f)() {
			route, target := labelValue(r.Route), labelValue(r.Target)
			gauge(m.routeAvailDesc, flag(r.Available), route, target)
			gauge(m.routeActiveDesc, flag(r.Active), route, target)
		}
	}
	var drops uint64
	if f := m.drops.Load(); f != nil {
		drops = (*f)()
	}
	ch <- prometheus.MustNewConstMetric(m.dropsDesc, prometheus.CounterValue, float64(drops))
}

func flag(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
