package gateway

import (
	"bytes"
	"context"
	"crypto/hmac"
	crand "crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/credgate/credgate/authmap"
)

// Alerts (issue 10).
//
// The notifier listens on the event bus and keeps, per subject (a
// credential, an upstream, a route) and condition, whether the condition
// holds. A condition that starts to hold is an alert: each notifier whose on
// list names it gets one trigger; when it stops holding, each notifier that
// got the trigger gets one resolve with the same dedup key. Nothing else is
// sent: no reminders, no repeat while it holds.
//
//	bus event ──▶ conditions of the subject ──▶ start: trigger   ──▶ sink queue ──▶ worker: POST, retries
//	                                        └─▶ stop:  resolve                         (per notifier)
//
// What heals itself pages nobody: a credential the gateway renews never
// enters these conditions (a renewal before expiry is a "refreshed" event, a
// rejection it renews away at once leaves its status alone), rate limits and
// quotas are not conditions, and an expiry of a renewable credential counts
// only if it is still expired a minute on. A condition that comes back
// within the notifier's min_interval of its last trigger is triggered again
// only when the interval has passed, and only if it still holds, so a
// flapping credential pages once per interval and an incident is never left
// resolved while its condition holds.
//
// A credential's conditions follow its status: revoked, invalid, missing,
// expired and expiring each have one. While the value stays the same they
// accumulate (expiring, then revoked, keeps both incidents open) and all
// resolve when it is healthy again; a new value (rotated, refreshed,
// loaded) replaces them with those of its own status. Expiring and expired
// are the exception: they are two phases of one clock and never hold
// together. Once credential_expired_unrenewable holds (at once, or after
// the grace of a renewable credential), credential_expiring resolves, and
// a credential that is expiring again, not expired, resolves
// credential_expired_unrenewable. (Expiring stayed open beside expired
// until the credential was healthy again, though its condition no longer
// held: found trying the gateway from outside.)
//
// Delivery never blocks anything else: each notifier has a bounded queue and
// one worker that POSTs with retries and exponential backoff; a full queue,
// or retries exhausted, drop the notification, counted (Sent, Dropped in
// /health's notify; [Server.NotifyDropped] for metrics).

// Bounds and timings of delivery.
const (
	notifyQueue    = 64               // notifications waiting per notifier
	notifyAttempts = 5                // tries of one notification
	notifyTimeout  = 10 * time.Second // one POST
	notifyBackoff  = time.Second      // wait before the second try; doubles, ±20%
	notifyMaxWait  = time.Minute      // the longest wait between tries (Retry-After included)
	// notifyRedeliver: a trigger (or resolve) dropped after its tries is
	// sent again this long after, while what it says still holds.
	notifyRedeliver = 2 * time.Minute
	// renewalGrace is how long past a put-off renewal's time a credential
	// found invalid or revoked may stay so before it pages: the renewal's
	// own time (an exec source runs up to its timeout).
	renewalGrace = 30 * time.Second
	// expiredGrace is how long a renewable credential may stay expired
	// before credential_expired_unrenewable holds: its renewal is under way.
	expiredGrace = time.Minute
	// breakerOpenLong is how long an upstream's breaker stays away from
	// closed, with the upstream down, before breaker_open_long holds.
	breakerOpenLong = 5 * time.Minute
)

// Notification actions.
const (
	actionTrigger = "trigger"
	actionResolve = "resolve"
)

// notifier turns bus events into alerts and delivers them.
type notifier struct {
	g     *Server
	sinks []*sink
	host  string
	// backoff is the wait before a second try (notifyBackoff; tests shorten it).
	backoff time.Duration
	// claimFor is how long a replica's claim to send a notification holds
	// the others off (claimTTL; tests shorten it).
	claimFor time.Duration
	// redeliver is how long after a notification was dropped, its receiver
	// failing every try, it is sent again while what it says still holds
	// (notifyRedeliver; tests shorten it).
	redeliver time.Duration

	mu      sync.Mutex
	alerts  map[alertKey]*alertState
	breaker map[string]*time.Timer // upstream -> breakerOpenLong check, while its breaker is away from closed
	status  map[string]string      // credential -> its status at its last event
	stopped bool
}

// alertKey is one subject and condition: what a dedup key names.
type alertKey struct{ kind, name, cond string }

// dedupKey is the PagerDuty dedup_key (and generic's): stable per subject
// and condition, the same across restarts and replicas.
func (k alertKey) dedupKey() string { return "credgate/" + k.kind + "/" + k.name + "/" + k.cond }

// alertState is whether a condition holds, and what each notifier was told.
type alertState struct {
	active  bool
	pending *time.Timer // activation after a grace (a renewable credential expired)
	info    alertInfo   // what the trigger says
	sinks   map[*sink]*sinkAlert
}

type sinkAlert struct {
	open     bool        // a trigger was sent (queued) and no resolve since
	last     time.Time   // when the last trigger was queued
	deferred *time.Timer // a trigger waiting for min_interval to pass
}

// alertInfo is the payload of an alert.
type alertInfo struct {
	Since      time.Time
	Credential string
	Upstream   string
	Route      string
	Upstreams  []string
	Tools      []string
	Subtype    string
	Status     string
	Recovery   string
	Detail     string
}

// sink is one configured notifier.
type sink struct {
	cfg   NotifyConfig
	on    map[string]bool
	min   time.Duration
	url   string
	queue chan *delivery

	sent, dropped atomic.Uint64
	elsewhere     atomic.Uint64 // left to another replica, which claimed them
	lastErr       atomic.Pointer[string]
}

// delivery is one notification, rendered.
type delivery struct {
	action, key string
	body        []byte
	header      http.Header
	alert       alertKey // what it is about, for redelivery
	again       bool     // a redelivery (again): this replica sent it first
}

// claimTTL is how long one replica's claim to send an action of an alert
// holds the others off: replicas find a condition, or its end, within
// seconds of each other. Short, so that it never holds off the next
// incident's notification (each replica's own min_interval spaces its
// triggers); a replica lagging more than this sends its own as well,
// which a receiver deduplicates by the dedup_key.
const claimTTL = 30 * time.Second

// initOps builds the event bus and the notifier. It starts nothing.
func (g *Server) initOps() {
	g.events = newEventBus(maxEvents, maxEventSubscribers)
	n := &notifier{g: g, backoff: notifyBackoff, redeliver: notifyRedeliver, claimFor: claimTTL, alerts: map[alertKey]*alertState{}, breaker: map[string]*time.Timer{}, status: map[string]string{}}
	n.host, _ = os.Hostname()
	for _, c := range g.config().Notify {
		s := &sink{cfg: c, on: map[string]bool{}, min: c.minInterval(), url: c.url(), queue: make(chan *delivery, notifyQueue)}
		for _, cond := range c.conditions() {
			s.on[cond] = true
		}
		n.sinks = append(n.sinks, s)
	}
	g.notify = n
	if len(n.sinks) > 0 {
		g.events.listen(n.onEvent)
	}
}

// run delivers notifications until ctx ends. Notifications queued before it
// runs (the start-up pre-flight's) are sent once it does; a gateway that
// never runs it (`gateway check`) sends nothing.
func (n *notifier) run(ctx context.Context) {
	defer n.g.recoverLog("notify", "")
	client := &http.Client{Timeout: notifyTimeout, Transport: http.DefaultTransport.(*http.Transport).Clone()}
	var wg sync.WaitGroup
	for _, s := range n.sinks {
		wg.Go(func() {
			defer n.g.recoverLog("notify "+s.cfg.Name, "")
			n.work(ctx, client, s)
		})
	}
	wg.Wait()
	n.mu.Lock()
	n.stopped = true
	for _, t := range n.breaker {
		t.Stop()
	}
	for _, st := range n.alerts {
		if st.pending != nil {
			st.pending.Stop()
		}
		for _, sa := range st.sinks {
			if sa.deferred != nil {
				sa.deferred.Stop()
			}
		}
	}
	n.mu.Unlock()
}

func (n *notifier) work(ctx context.Context, client *http.Client, s *sink) {
	for {
		select {
		case <-ctx.Done():
			// What is left is not delivered: count it.
			for {
				select {
				case <-s.queue:
					s.dropped.Add(1)
				default:
					return
				}
			}
		case d := <-s.queue:
			n.deliver(ctx, client, s, d)
		}
	}
}

// deliver POSTs d, retrying failures that may pass (network errors,
// timeouts, 408, 429, 5xx) with exponential backoff; Retry-After is honoured
// up to a minute.
func (n *notifier) deliver(ctx context.Context, client *http.Client, s *sink, d *delivery) {
	log := n.g.log.With().Str("notifier", s.cfg.Name).Str("action", d.action).Str("dedup_key", d.key).Logger()
	hold := n.claimFor
	if d.action == actionResolve {
		// Shorter: a next incident that begins and ends within it would
		// have its resolve held off, the alert left open for good.
		hold /= 6
	}
	if !d.again && !n.g.shared.claim(ctx, "notify:"+s.cfg.Name+":"+d.action+":"+d.key, hold) {
		// Replicas share one store: each found the condition, one tells
		// the receiver (each sent its own trigger and resolve).
		s.elsewhere.Add(1)
		log.Info().Msg("notification sent by another replica")
		return
	}
	wait := n.backoff
	var why string
	for attempt := 1; attempt <= notifyAttempts; attempt++ {
		retry, after, err := n.post(ctx, client, s, d)
		if err == nil {
			s.sent.Add(1)
			s.lastErr.Store(nil) // delivered: the last failure is behind it
			log.Info().Int(fieldAttempt, attempt).Msg("notification delivered")
			return
		}
		why = n.g.redact(err.Error())
		if !retry || attempt == notifyAttempts || ctx.Err() != nil {
			break
		}
		w := wait/5*4 + time.Duration(rand.Int64N(int64(wait/5*2)+1)) // wait ±20%
		if after > 0 {
			w = after
		}
		w = min(w, notifyMaxWait)
		log.Debug().Int(fieldAttempt, attempt).Dur("retry_in_ms", w).Str(fieldErr, why).Msg("notification not delivered; retrying")
		if !n.g.sleep(ctx, w) {
			break
		}
		wait *= 2
	}
	s.dropped.Add(1)
	s.lastErr.Store(&why)
	if ctx.Err() != nil {
		log.Warn().Str(fieldErr, why).Msg("notification dropped")
		return
	}
	log.Warn().Str(fieldErr, why).Dur("again_in_ms", n.redeliver).Msg("notification dropped; sent again later if it still holds")
	n.again(s, d)
}

// again queues d, dropped after its tries, once more after n.redeliver if
// what it says still holds: the alert still active and open on s for a
// trigger, still ended for a resolve. A page dropped while its receiver was
// down for a minute was never sent (found trying the gateway from outside).
func (n *notifier) again(s *sink, d *delivery) {
	time.AfterFunc(n.redeliver, func() {
		n.mu.Lock()
		defer n.mu.Unlock()
		st := n.alerts[d.alert]
		if n.stopped || st == nil {
			return
		}
		sa := st.sinks[s]
		if sa == nil {
			return
		}
		switch d.action {
		case actionTrigger:
			if !st.active || !sa.open {
				return
			}
		case actionResolve:
			if st.active || sa.open {
				return
			}
		}
		d.again = true
		select {
		case s.queue <- d:
		default:
		}
	})
}

// post sends d once. retry says whether a failure may pass; after is the
// receiver's Retry-After, if any.
func (n *notifier) post(ctx context.Context, client *http.Client, s *sink, d *delivery) (retry bool, after time.Duration, err error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.url, bytes.NewReader(d.body))
	if err != nil {
		return false, 0, fmt.Errorf("notifier %q: %w", s.cfg.Name, err)
	}
	for k, v := range d.header {
		req.Header[k] = v
	}
	resp, err := client.Do(req)
	if err != nil {
		return true, 0, fmt.Errorf("notifier %q: %w", s.cfg.Name, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	if resp.StatusCode/100 == 2 {
		return false, 0, nil
	}
	if secs, err := strconv.Atoi(resp.Header.Get("Retry-After")); err == nil && secs > 0 {
		after = time.Duration(secs) * time.Second
	}
	retry = resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode == http.StatusRequestTimeout || resp.StatusCode >= 500
	return retry, after, fmt.Errorf("notifier %q: the receiver answered HTTP %d: %s", s.cfg.Name, resp.StatusCode, strings.TrimSpace(string(body)))
}

// onEvent is the bus listener (under the bus's lock: it only updates state
// and queues).
func (n *notifier) onEvent(e Event) {
	defer n.g.recoverLog("notify event", "")
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.stopped {
		return
	}
	switch e.Type {
	case EventCredential:
		n.credential(e)
	case EventBreaker:
		if e.Credential != "" {
			return // a credential's breaker: its credential's conditions tell
		}
		if e.Kind == KindBreakerClosed {
			n.breakerClosed(e.Upstream, e)
			return
		}
		if _, tracked := n.breaker[e.Upstream]; !tracked {
			up, since, reason := e.Upstream, e.Time, e.Reason
			n.breaker[up] = time.AfterFunc(breakerOpenLong, func() { n.breakerLong(up, since, reason) })
		}
	case EventUpstream:
		if e.Kind == KindUpstreamUp {
			n.breakerClosed(e.Upstream, e)
		}
	case EventRoute:
		k := alertKey{"route", e.Route, CondRouteNoTarget}
		if e.Kind == KindRouteNoTarget {
			n.activate(k, alertInfo{Since: e.Time, Route: e.Route, Status: "no_target", Detail: e.Reason,
				Recovery: "bring a target of the route back, or add one"})
		} else {
			n.deactivate(k, "target "+e.Target)
		}
	}
}

// credentialConditions maps a credential status to the condition it means.
var credentialConditions = map[string]string{
	authmap.StatusRevoked.String():  CondCredentialRevoked,
	authmap.StatusInvalid.String():  CondCredentialInvalid,
	authmap.StatusMissing.String():  CondCredentialMissing,
	authmap.StatusExpired.String():  CondCredentialExpiredUnrenewable,
	authmap.StatusExpiring.String(): CondCredentialExpiring,
}

func (n *notifier) credential(e Event) {
	if e.Status == authmap.StatusUnknown.String() {
		return
	}
	name := e.Credential
	n.status[name] = e.Status
	var renewable bool
	var last *authmap.Failure
	var kind string
	var renewalAt *time.Time
	if c := n.g.credential(name); c != nil {
		snap := c.Snapshot(false)
		renewable, last, kind, renewalAt = snap.Renewable, snap.LastError, c.SourceKind(), snap.RenewalAt
	}
	want := credentialConditions[e.Status]
	newValue := e.Kind == string(authmap.EventLoaded) || e.Kind == string(authmap.EventRotated) || e.Kind == string(authmap.EventRefreshed)
	recovered := e.Status == authmap.StatusHealthy.String() || e.Status == authmap.StatusRateLimited.String()
	for _, cond := range defaultConditions {
		k := alertKey{"credential", name, cond}
		st := n.alerts[k]
		holding := st != nil && (st.active || st.pending != nil)
		// Expiring again (a value found expired by a call, then restored
		// inside its warning) is no longer expired.
		notExpired := cond == CondCredentialExpiredUnrenewable && want == CondCredentialExpiring
		if cond == want || !holding || !(recovered || newValue || notExpired) {
			continue
		}
		n.deactivate(k, e.Kind+", now "+e.Status)
	}
	if want == "" {
		return
	}
	info := alertInfo{Since: e.Time, Credential: name, Upstreams: e.Upstreams, Tools: e.Tools, Status: e.Status,
		Detail: e.Detail, Subtype: credentialSubtype(want), Recovery: credentialRecovery(want, renewable, kind)}
	if last != nil {
		if info.Detail == "" {
			info.Detail = n.g.redact(last.Detail)
		}
		if string(last.Subtype) == info.Subtype && last.Recovery != "" {
			info.Recovery = string(last.Recovery)
		}
	}
	k := alertKey{"credential", name, want}
	if want == CondCredentialExpiredUnrenewable && renewable {
		// The gateway renews it: page only if it is still expired after a
		// grace.
		st := n.state(k)
		if st.active || st.pending != nil {
			return
		}
		st.pending = time.AfterFunc(expiredGrace, func() {
			n.mu.Lock()
			defer n.mu.Unlock()
			if st.pending == nil || n.stopped {
				return
			}
			st.pending = nil
			if n.status[name] == authmap.StatusExpired.String() {
				n.activate(k, info)
				n.expiredTakesOver(name)
			}
		})
		return
	}
	if wait, ok := credentialGrace(want, e, renewalAt, last); ok {
		// Likely to heal by itself: page only if it has not after wait. A
		// second revocation within the minute paged critical for what
		// healed a minute later (found trying the gateway).
		st := n.state(k)
		if st.active || st.pending != nil {
			return
		}
		st.pending = time.AfterFunc(wait, func() {
			n.mu.Lock()
			defer n.mu.Unlock()
			if st.pending == nil || n.stopped {
				return
			}
			st.pending = nil
			if credentialConditions[n.status[name]] == want {
				n.activate(k, info)
			}
		})
		return
	}
	n.activate(k, info)
	if want == CondCredentialExpiredUnrenewable {
		n.expiredTakesOver(name)
	}
}

// credentialGrace says whether condition want, which event e starts, waits
// before it pages, and how long: what is likely to heal by itself.
//   - invalid or revoked while the credential's renewal is put off
//     (renewalAt): until a little past it;
//   - invalid or revoked as a peer replica found it: as long, since this
//     replica does not know of the finder's put-off renewal (it paged at
//     once for what the finder held back);
//   - missing because its source did not answer (a token endpoint or a
//     store unreachable): a minute (the start-up pre-flight's first
//     failed attempt paged though its retry succeeded).
func credentialGrace(want string, e Event, renewalAt *time.Time, last *authmap.Failure) (time.Duration, bool) {
	switch {
	case (want == CondCredentialInvalid || want == CondCredentialRevoked) && renewalAt != nil:
		return time.Until(*renewalAt) + renewalGrace, true
	case (want == CondCredentialInvalid || want == CondCredentialRevoked) && e.Trigger == string(authmap.TriggerPeer):
		return time.Minute + renewalGrace, true
	case want == CondCredentialMissing && last != nil && last.Type == authmap.TypeUpstreamUnavailable:
		return expiredGrace, true
	}
	return 0, false
}

// expiredTakesOver resolves credential_expiring of a credential whose
// credential_expired_unrenewable now holds: an expired credential is no
// longer within its warning. A renewable one keeps its expiring alert
// through the grace, so that one of the two is open all along.
func (n *notifier) expiredTakesOver(name string) {
	n.deactivate(alertKey{"credential", name, CondCredentialExpiring}, "expired; "+CondCredentialExpiredUnrenewable+" holds")
}

func credentialSubtype(cond string) string {
	switch cond {
	case CondCredentialRevoked:
		return string(authmap.SubtypeCredentialRevoked)
	case CondCredentialInvalid:
		return string(authmap.SubtypeCredentialInvalid)
	case CondCredentialMissing:
		return string(authmap.SubtypeCredentialMissing)
	case CondCredentialExpiredUnrenewable:
		return string(authmap.SubtypeCredentialExpired)
	}
	return ""
}

func credentialRecovery(cond string, renewable bool, kind string) string {
	switch {
	case cond == CondCredentialRevoked && renewable:
		return string(authmap.RecoveryReauthorize)
	case cond == CondCredentialExpiring && renewable:
		// Where the renewals come from: an exec source has no token
		// endpoint (found trying the gateway from outside).
		switch kind {
		case authmap.KindOAuth2:
			return "check the token endpoint: renewals are failing"
		case authmap.KindExec:
			return "check the exec command: re-running it is failing"
		case authmap.KindVault:
			return "check Vault: re-reading the secret is failing"
		case authmap.KindAWSSecretsManager:
			return "check AWS Secrets Manager: re-reading the secret is failing"
		}
		return "check the credential's source: re-reading it is failing"
	}
	return string(authmap.RecoveryRotate)
}

// breakerLong runs breakerOpenLong after an upstream's breaker left closed.
func (n *notifier) breakerLong(up string, since time.Time, reason string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if _, tracked := n.breaker[up]; !tracked || n.stopped {
		return
	}
	delete(n.breaker, up)
	u := n.g.upstream(up)
	if u == nil {
		return
	}
	u.mu.Lock()
	status, lastErr := u.status, u.lastErr
	u.mu.Unlock()
	if status == StatusUp {
		return // back, though no call has closed the breaker yet
	}
	var tools []string
	if p := u.cfg.prefix(up); p != "" {
		tools = []string{p + n.g.config().ToolSeparator + "*"}
	}
	detail := "circuit breaker open since " + since.UTC().Format(time.RFC3339)
	if reason != "" {
		detail += " (" + reason + ")"
	}
	if lastErr != "" {
		detail += ": " + lastErr
	}
	n.activate(alertKey{"upstream", up, CondBreakerOpenLong}, alertInfo{Since: since, Upstream: up, Upstreams: []string{up},
		Tools: tools, Status: status, Detail: truncate(detail, maxEventDetail), Recovery: "bring the upstream back"})
}

func (n *notifier) breakerClosed(up string, e Event) {
	if t, ok := n.breaker[up]; ok {
		t.Stop()
		delete(n.breaker, up)
	}
	n.deactivate(alertKey{"upstream", up, CondBreakerOpenLong}, "upstream "+e.Kind)
}

// forgetRemoved ends the alerts whose subject a reload took out of the
// config (a credential, an upstream, a route): nothing would ever end
// them, and a receiver's incident stayed open for good (found trying the
// gateway from outside).
func (n *notifier) forgetRemoved(cfg *Config) {
	if n == nil {
		return
	}
	routes := map[string]bool{}
	for _, r := range cfg.Routes {
		routes[r.Tool] = true
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	for k := range n.alerts {
		var gone bool
		switch k.kind {
		case "credential":
			_, ok := cfg.Credentials[k.name]
			gone = !ok
		case "upstream":
			_, ok := cfg.Upstreams[k.name]
			gone = !ok
		case "route":
			gone = !routes[k.name]
		}
		if !gone {
			continue
		}
		if st := n.alerts[k]; st.active || st.pending != nil {
			n.deactivate(k, k.kind+" removed from the config")
		} else {
			delete(n.alerts, k) // ended at an earlier reload (its resolve redelivered meanwhile, if dropped)
		}
	}
	for up, t := range n.breaker {
		if _, ok := cfg.Upstreams[up]; !ok {
			t.Stop()
			delete(n.breaker, up)
		}
	}
	for name := range n.status {
		if _, ok := cfg.Credentials[name]; !ok {
			delete(n.status, name)
		}
	}
}

func (n *notifier) state(k alertKey) *alertState {
	st := n.alerts[k]
	if st == nil {
		st = &alertState{sinks: map[*sink]*sinkAlert{}}
		n.alerts[k] = st
	}
	return st
}

// activate starts condition k: each notifier that watches it gets a trigger,
// now or once its min_interval since the last trigger has passed.
func (n *notifier) activate(k alertKey, info alertInfo) {
	st := n.state(k)
	if st.active {
		return
	}
	st.active, st.info = true, info
	now := time.Now()
	for _, s := range n.sinks {
		if !s.on[k.cond] {
			continue
		}
		sa := st.sinks[s]
		if sa == nil {
			sa = &sinkAlert{}
			st.sinks[s] = sa
		}
		if sa.open || sa.deferred != nil {
			continue
		}
		if wait := sa.last.Add(s.min).Sub(now); !sa.last.IsZero() && wait > 0 {
			sa.deferred = time.AfterFunc(wait, func() {
				n.mu.Lock()
				defer n.mu.Unlock()
				sa.deferred = nil
				if st.active && !sa.open && !n.stopped {
					n.trigger(s, sa, k, st.info)
				}
			})
			continue
		}
		n.trigger(s, sa, k, info)
	}
}

func (n *notifier) trigger(s *sink, sa *sinkAlert, k alertKey, info alertInfo) {
	sa.open, sa.last = true, time.Now()
	n.enqueue(s, k, actionTrigger, info, "")
}

// deactivate ends condition k: each notifier that got its trigger gets a
// resolve; a trigger still waiting is cancelled. why says what ended it.
func (n *notifier) deactivate(k alertKey, why string) {
	st := n.alerts[k]
	if st == nil {
		return
	}
	if st.pending != nil {
		st.pending.Stop()
		st.pending = nil
	}
	if !st.active {
		return
	}
	st.active = false
	for s, sa := range st.sinks {
		if sa.deferred != nil {
			sa.deferred.Stop()
			sa.deferred = nil
		}
		if sa.open {
			sa.open = false
			n.enqueue(s, k, actionResolve, st.info, why)
		}
	}
}

// enqueue renders and queues a notification without waiting: a full queue
// drops it, counted.
func (n *notifier) enqueue(s *sink, k alertKey, action string, info alertInfo, why string) {
	d := n.render(s, k, action, info, why)
	select {
	case s.queue <- d:
		n.g.log.Info().Str("notifier", s.cfg.Name).Str("action", action).Str("condition", k.cond).
			Str(k.kind, k.name).Msg("notification queued")
	default:
		s.dropped.Add(1)
		msg := "queue full"
		s.lastErr.Store(&msg)
		n.g.log.Warn().Str("notifier", s.cfg.Name).Str("action", action).Str("condition", k.cond).
			Str(k.kind, k.name).Msg("notification dropped: the notifier's queue is full")
	}
}

// severity of a condition, PagerDuty's scale.
func severity(cond string) string {
	switch cond {
	case CondCredentialExpiring:
		return "warning"
	case CondBreakerOpenLong:
		return "error"
	}
	return "critical"
}

// summary is the one line a person reads first.
func (k alertKey) summary(action string, info alertInfo, why string) string {
	var subject string
	switch k.kind {
	case "credential":
		subject = fmt.Sprintf("credential %q", k.name)
	case "upstream":
		subject = fmt.Sprintf("upstream %q", k.name)
	default:
		subject = fmt.Sprintf("%s %q", k.kind, k.name)
	}
	if action == actionResolve {
		// Not "recovered": a condition also ends when another takes over
		// (expiring, then expired); why says which.
		s := fmt.Sprintf("credgate: %s: %s resolved", subject, k.cond)
		if why != "" {
			s += ": " + why
		}
		return s
	}
	var s string
	switch k.cond {
	case CondCredentialExpiring:
		s = fmt.Sprintf("credgate: %s is expiring", subject)
	case CondCredentialExpiredUnrenewable:
		s = fmt.Sprintf("credgate: %s expired and cannot be renewed", subject)
	case CondBreakerOpenLong:
		s = fmt.Sprintf("credgate: %s is down, circuit breaker open for %s", subject, breakerOpenLong)
	case CondRouteNoTarget:
		s = fmt.Sprintf("credgate: %s has no healthy target", subject)
	default:
		s = fmt.Sprintf("credgate: %s is %s", subject, info.Status)
	}
	if len(info.Upstreams) > 0 && k.kind == "credential" {
		s += " on " + strings.Join(info.Upstreams, ", ")
	}
	if len(info.Tools) > 0 {
		s += "; tools affected: " + strings.Join(info.Tools, ", ")
	}
	if info.Recovery != "" {
		s += "; recovery: " + info.Recovery
	}
	return s
}

// routeServing is the status a route_no_target resolve carries: a target
// serves the route again.
const routeServing = "serving"

// genericPayload is the body of a generic notification (and PagerDuty's
// custom_details).
type genericPayload struct {
	Version   int       `json:"version"`
	ID        string    `json:"id"`
	Action    string    `json:"action"`
	DedupKey  string    `json:"dedup_key"`
	Condition string    `json:"condition"`
	Severity  string    `json:"severity"`
	Summary   string    `json:"summary"`
	Gateway   string    `json:"gateway,omitempty"`
	Time      time.Time `json:"time"`
	Since     time.Time `json:"since"`

	Credential string   `json:"credential,omitempty"`
	Upstream   string   `json:"upstream,omitempty"`
	Route      string   `json:"route,omitempty"`
	Upstreams  []string `json:"upstreams,omitempty"`
	Tools      []string `json:"tools,omitempty"`
	Subtype    string   `json:"subtype,omitempty"`
	Status     string   `json:"status,omitempty"`
	Recovery   string   `json:"recovery,omitempty"`
	Detail     string   `json:"detail,omitempty"`
	// Resolution says what ended the condition (resolve only).
	Resolution string `json:"resolution,omitempty"`
}

// render builds the notification in the sink's format.
func (n *notifier) render(s *sink, k alertKey, action string, info alertInfo, why string) *delivery {
	now := time.Now().UTC()
	p := genericPayload{
		Version: 1, ID: randomID(), Action: action, DedupKey: k.dedupKey(), Condition: k.cond, Severity: severity(k.cond),
		Summary: n.g.redact(k.summary(action, info, why)), Gateway: n.host, Time: now, Since: info.Since.UTC(),
		Credential: info.Credential, Upstream: info.Upstream, Route: info.Route, Upstreams: info.Upstreams, Tools: info.Tools,
		Subtype: info.Subtype, Status: info.Status, Recovery: info.Recovery, Detail: n.g.redact(info.Detail),
	}
	if action == actionResolve {
		p.Resolution = n.g.redact(why)
		// The credential's status now, not the trigger's (a resolve said
		// "now healthy" beside "status": "invalid").
		if st := n.status[info.Credential]; info.Credential != "" && st != "" {
			p.Status = st
		}
		if k.kind == "route" {
			p.Status = routeServing // a target serves again (Resolution names it)
		}
	}
	h := http.Header{"Content-Type": {"application/json"}, "User-Agent": {"credgate/" + n.g.opts.Version}}
	var body any
	switch s.cfg.Format {
	case FormatPagerDuty:
		body = pagerDutyBody(s.cfg.RoutingKey, p)
	case FormatSlack:
		body = slackBody(p)
	default:
		body = p
	}
	b, _ := json.Marshal(body)
	if s.cfg.Format == FormatGeneric {
		h.Set("X-Credgate-Event", action)
		h.Set("X-Credgate-Delivery", p.ID)
		if s.cfg.Secret != "" {
			mac := hmac.New(sha256.New, []byte(s.cfg.Secret))
			mac.Write(b)
			h.Set("X-Credgate-Signature", "sha256="+hex.EncodeToString(mac.Sum(nil)))
		}
	}
	return &delivery{action: action, key: p.DedupKey, body: b, header: h, alert: k}
}

// pagerDutyBody is a PagerDuty Events API v2 event: a trigger with the
// payload, or a resolve with only the dedup key.
func pagerDutyBody(routingKey string, p genericPayload) map[string]any {
	ev := map[string]any{"routing_key": routingKey, "event_action": p.Action, "dedup_key": p.DedupKey}
	if p.Action != actionTrigger {
		return ev
	}
	source := "credgate"
	if p.Gateway != "" {
		source = "credgate@" + p.Gateway
	}
	component := strings.Join(p.Upstreams, ",")
	if component == "" {
		component = cmpOr(p.Upstream, p.Route)
	}
	payload := map[string]any{
		"summary":   truncate(p.Summary, 1024),
		"source":    source,
		"severity":  p.Severity,
		"timestamp": p.Since.Format(time.RFC3339),
		"group":     "credgate",
		"class":     p.Condition,
		"custom_details": map[string]any{
			"condition": p.Condition, "credential": p.Credential, "upstream": p.Upstream, "route": p.Route,
			"upstreams": p.Upstreams, "tools": p.Tools, "subtype": p.Subtype, "status": p.Status,
			"since": p.Since, "recovery": p.Recovery, "detail": p.Detail,
		},
	}
	if component != "" {
		payload["component"] = component
	}
	ev["payload"] = payload
	ev["client"] = "credgate"
	return ev
}

// slackBody is a Slack incoming-webhook message: text (the notification and
// fallback) and the same as blocks.
func slackBody(p genericPayload) map[string]any {
	esc := strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;").Replace
	icon := ":rotating_light:"
	if p.Action == actionResolve {
		icon = ":white_check_mark:"
	} else if p.Severity == "warning" {
		icon = ":warning:"
	}
	text := icon + " " + esc(p.Summary)
	var fields []string
	if len(p.Upstreams) > 0 {
		fields = append(fields, "*Upstreams:* "+esc(strings.Join(p.Upstreams, ", ")))
	}
	if len(p.Tools) > 0 {
		fields = append(fields, "*Tools affected:* "+esc(strings.Join(p.Tools, ", ")))
	}
	if p.Subtype != "" {
		fields = append(fields, "*Subtype:* "+esc(p.Subtype))
	}
	fields = append(fields, "*Since:* "+p.Since.Format(time.RFC3339))
	if p.Recovery != "" && p.Action == actionTrigger {
		fields = append(fields, "*Recovery:* "+esc(p.Recovery))
	}
	if p.Detail != "" && p.Action == actionTrigger {
		fields = append(fields, "*Detail:* "+esc(truncate(p.Detail, 500)))
	}
	blocks := []any{
		map[string]any{"type": "section", "text": map[string]any{"type": "mrkdwn", "text": text}},
		map[string]any{"type": "context", "elements": []any{map[string]any{"type": "mrkdwn", "text": strings.Join(fields, "\n")}}},
	}
	return map[string]any{"text": text, "blocks": blocks}
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// randomID names one delivery (X-Credgate-Delivery), the same across its
// retries, so a receiver can drop a duplicate.
func randomID() string {
	b := make([]byte, 12)
	_, _ = crand.Read(b)
	return hex.EncodeToString(b)
}

// NotifyHealth is one notifier's entry in /health.
type NotifyHealth struct {
	Format string `json:"format"`
	// Sent counts notifications delivered; Dropped those given up (queue
	// full, retries exhausted, refused by the receiver, or left at
	// shutdown); Queued those waiting.
	Sent    uint64 `json:"sent"`
	Dropped uint64 `json:"dropped"`
	// Elsewhere counts those another replica sent (replicas sharing a
	// store send each notification once).
	Elsewhere uint64 `json:"elsewhere,omitempty"`
	Queued    int    `json:"queued"`
	LastError string `json:"last_error,omitempty"`
}

// NotifyStats returns each notifier's counters, by name; nil without notifiers.
func (g *Server) NotifyStats() map[string]NotifyHealth {
	if g.notify == nil || len(g.notify.sinks) == 0 {
		return nil
	}
	out := make(map[string]NotifyHealth, len(g.notify.sinks))
	for _, s := range g.notify.sinks {
		nh := NotifyHealth{Format: s.cfg.Format, Sent: s.sent.Load(), Dropped: s.dropped.Load(), Elsewhere: s.elsewhere.Load(), Queued: len(s.queue)}
		if e := s.lastErr.Load(); e != nil {
			nh.LastError = *e
		}
		out[s.cfg.Name] = nh
	}
	return out
}

// NotifyDropped returns how many notifications were dropped, all notifiers
// together (credgate_notify_dropped_total).
func (g *Server) NotifyDropped() uint64 {
	var n uint64
	if g.notify != nil {
		for _, s := range g.notify.sinks {
			n += s.dropped.Load()
		}
	}
	return n
}

// notifyNames lists the notifiers, in config order (for the status page).
func (g *Server) notifyNames() []string {
	var out []string
	for _, s := range g.notify.sinks {
		out = append(out, s.cfg.Name)
	}
	return slices.Clip(out)
}
