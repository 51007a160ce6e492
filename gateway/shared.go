package gateway

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/credgate/credgate/authmap"
	"github.com/credgate/credgate/breaker"
	"github.com/credgate/credgate/gateway/state"
)

// Replicas sharing state (issue 11).
//
// A gateway alone keeps its state in memory and none of this runs. With
// state.redis set, replicas behind one load balancer share, through a
// [state.Store]:
//
//	key                       what                                        written when
//	cred:<credential>         {status, value fingerprint, last_error}     a credential is revoked, invalid, expired or restored
//	breaker:<name>            {reason, until}: "open because X until T"   a breaker opens for a known time
//	reload:<credential>       {trigger}                                   an admin or webhook reload
//	tokens:<credential>       an OAuth token set, AES-GCM sealed          a renewal (only with an encryption key)
//	lock:<credential>         the renewal lock's owner token              while one replica renews
//	catalog:<upstream>        the last tools, prompts and resources      an upstream lists a new catalog
//
// Each Put bumps one version counter and sends a notice: peers apply
// notices at once (within milliseconds), and every second each replica
// reads the counter and re-reads its keys when it moved, so a notice missed
// during a dropped connection is caught up. Nothing in a call's path waits
// on the store: facts are queued for a goroutine of this file, and peers'
// facts are applied by another. Puts that fail stay queued (the latest per
// key) and are sent when the store answers again; meanwhile /health shows
// the state degraded and the gateway serves on what it knows locally.
//
// A fact names a credential's value by a keyed fingerprint, never the value:
// a peer applies "revoked" only to the same value, so a replica that already
// holds a rotated value is not stopped by a fact about the old one. Peers'
// facts go in through the same doors as local knowledge (Credential.Report,
// breaker.Set.Honour, Credential.Renew), so the call path needs no change:
// its credential gate and breakers already refuse what is known dead.
//
// OAuth renewals are coordinated (the authmap.Coordinator below): one
// replica renews a credential at a time under a lock with an owner token,
// and publishes the token set sealed with the encryption key; the others
// adopt it instead of refreshing. Without an encryption key nothing secret
// is shared, and each replica renews its own.

// Timings of the shared state.
const (
	// stateResync is how often the version counter is read.
	stateResync = time.Second
	credFactTTL = 24 * time.Hour
	reloadTTL   = time.Hour
	catalogTTL  = 7 * 24 * time.Hour
	tokensTTL   = 30 * 24 * time.Hour
	// renewLockTTL bounds one replica's renewal; its fetch gets
	// renewFetchBound, so the lock outlives it.
	renewLockTTL    = 30 * time.Second
	renewFetchBound = 25 * time.Second
	// peerRenewWait bounds waiting for a peer's renewal: by then its lock
	// has expired, so a replica that died renewing does not block others.
	peerRenewWait = renewLockTTL + 5*time.Second
	// minFresh: a shared token set that expires sooner is not worth adopting.
	minFresh = time.Second
)

// StateHealth is /health's "state": where the shared state lives and
// whether it is reachable.
type StateHealth struct {
	Backend string `json:"backend"` // memory, redis
	Status  string `json:"status"`  // ok, degraded
	// LastError is why the store is unreachable (degraded only).
	LastError string     `json:"last_error,omitempty"`
	Since     *time.Time `json:"since,omitempty"`
	// SharesTokens says renewed OAuth token sets are shared (an
	// encryption key is set).
	SharesTokens bool `json:"shares_tokens,omitempty"`
}

// shared is the gateway's side of the shared state.
type shared struct {
	g      *Server
	store  state.Store // nil: in memory, nothing shared
	sealer *state.Sealer
	origin string // this replica, so that its own notices are skipped

	wake chan struct{}
	bg   sync.WaitGroup

	mu        sync.Mutex
	seen      map[string]int64 // key -> the version applied or put
	last      int64            // the store's version at the last catch-up
	high      int64            // the highest version seen, own puts' too: one below it means the store lost its data
	ok        bool
	lastErr   string
	since     time.Time
	pending   map[string]*pendingPut
	sent      map[string]string // key -> digest of the last value put
	tokenWake map[string]chan struct{}
	// facts holds, per credential, the newest credential fact this replica
	// knows (its own or a peer's; see applyCredFact).
	facts map[string]knownFact
}

// knownFact is a credential fact as it was put, and what it says.
type knownFact struct {
	f   credFact
	raw []byte
}

type pendingPut struct {
	value   []byte
	ttl     time.Duration
	expires time.Time // zero: keep until sent
}

// credFact is cred:<name>.
type credFact struct {
	Origin string `json:"origin"`
	Status string `json:"status"` // revoked, invalid, expired, healthy
	// Value is the fingerprint of the value the status is about.
	Value string `json:"value"`
	// Version is the source's version of the value, when it has one.
	Version   string           `json:"version,omitempty"`
	LastError *authmap.Failure `json:"last_error,omitempty"`
	At        time.Time        `json:"at"`
}

// breakerFact is breaker:<name>.
type breakerFact struct {
	Origin string    `json:"origin"`
	Reason string    `json:"reason"`
	Until  time.Time `json:"until"`
	// Provider and ProviderCode are who answered a credential breaker's
	// rate limit, and how, for the peers' refusals and status.
	Provider     string `json:"provider,omitempty"`
	ProviderCode string `json:"provider_code,omitempty"`
}

// reloadNotice is reload:<name>.
type reloadNotice struct {
	Origin  string          `json:"origin"`
	Trigger authmap.Trigger `json:"trigger"`
	At      time.Time       `json:"at"`
}

// sealedRecord is tokens:<name>: a sealed tokenSet.
type sealedRecord struct {
	Origin string `json:"origin"`
	Sealed []byte `json:"sealed"`
}

// tokenSet is what a renewal hands to the peers.
type tokenSet struct {
	AccessToken  string    `json:"access_token"`
	ExpiresAt    time.Time `json:"expires_at,omitzero"`
	Scopes       []string  `json:"scopes,omitempty"`
	RefreshToken string    `json:"refresh_token,omitempty"`
}

// catalogRecord is catalog:<upstream>.
type catalogRecord struct {
	Origin    string                  `json:"origin"`
	Tools     []*mcp.Tool             `json:"tools,omitempty"`
	Prompts   []*mcp.Prompt           `json:"prompts,omitempty"`
	Resources []*mcp.Resource         `json:"resources,omitempty"`
	Templates []*mcp.ResourceTemplate `json:"templates,omitempty"`
	Caps      *mcp.ServerCapabilities `json:"capabilities,omitempty"`
	// Instructions came with issue 12's trials; a record without them
	// (an older replica's) has none to show.
	Instructions string `json:"instructions,omitempty"`
}

// initShared builds the shared state from the config. It starts nothing.
func (g *Server) initShared() error {
	s := &shared{g: g, wake: make(chan struct{}, 1), seen: map[string]int64{}, ok: true,
		pending: map[string]*pendingPut{}, sent: map[string]string{}, tokenWake: map[string]chan struct{}{},
		facts: map[string]knownFact{}}
	g.shared = s
	rc := g.config().State.Redis
	if rc == nil {
		s.sealer, _ = state.NewSealer("")
		return nil
	}
	if u, err := url.Parse(rc.URL); err == nil && u.User != nil {
		if pw, ok := u.User.Password(); ok {
			g.redactor.Add(pw)
		}
	}
	key := ""
	if !rc.EncryptionKey.IsZero() {
		ctx, cancel := context.WithTimeout(context.Background(), authmap.DefaultExecTimeout)
		defer cancel()
		src, err := rc.EncryptionKey.Open("state.redis.encryption_key", g.opts.Sources)
		if err == nil {
			key, err = authmap.FetchSecret(ctx, src)
		}
		if err != nil {
			return fmt.Errorf("state.redis.encryption_key: %s", g.redact(err.Error()))
		}
		g.redactor.Add(key)
	}
	sealer, err := state.NewSealer(key)
	if err != nil {
		return err
	}
	store, err := state.NewRedis(rc)
	if err != nil {
		return err
	}
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	s.store, s.sealer, s.origin = store, sealer, hex.EncodeToString(b)
	return nil
}

func (s *shared) enabled() bool { return s != nil && s.store != nil }

// claim reports whether this replica is the one to do what key names, for
// ttl: the first replica to claim it is; a store that does not answer
// leaves it to every replica (better twice than never).
func (s *shared) claim(ctx context.Context, key string, ttl time.Duration) bool {
	if !s.enabled() {
		return true
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second) // the store bounds each request too (state.redis.timeout)
	defer cancel()
	_, err := s.store.Lock(ctx, key, ttl)
	return !errors.Is(err, state.ErrLocked)
}

// coordinator is the authmap.Coordinator of the credential set: nil unless
// token sets can be shared.
func (s *shared) coordinator() authmap.Coordinator {
	if !s.enabled() || !s.sealer.CanSeal() {
		return nil
	}
	return s
}

// health is /health's state section.
func (s *shared) health() *StateHealth {
	if !s.enabled() {
		return &StateHealth{Backend: state.BackendMemory, Status: "ok"}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	h := &StateHealth{Backend: s.store.Backend(), Status: "ok", SharesTokens: s.sealer.CanSeal()}
	if !s.ok {
		since := s.since.UTC()
		h.Status, h.LastError, h.Since = "degraded", s.lastErr, &since
	}
	return h
}

// run applies peers' notices and catches up every stateResync until ctx
// ends; it closes the store on its way out.
func (s *shared) run(ctx context.Context) {
	if !s.enabled() {
		return
	}
	defer s.g.recoverLog("shared state", "")
	defer func() {
		s.bg.Wait()
		_ = s.store.Close()
	}()
	s.bg.Go(func() {
		defer s.g.recoverLog("shared state notices", "")
		for ctx.Err() == nil {
			_ = s.store.Watch(ctx, func(e state.Entry) { s.notice(ctx, e) })
			s.g.sleep(ctx, stateResync)
		}
	})
	t := time.NewTicker(stateResync)
	defer t.Stop()
	s.catchUp(ctx)
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			s.catchUp(ctx)
		case <-s.wake:
			s.flush(ctx)
		}
	}
}

// catchUp reads the version counter and, when it moved (or the store just
// came back), re-reads every key this replica cares about; then it sends
// what is queued.
func (s *shared) catchUp(ctx context.Context) {
	// high as it was before the version is read: a put made meanwhile (an
	// admin reload's notice) raises it past a version read before the put,
	// which is no sign of a lost store (found in review).
	s.mu.Lock()
	high := s.high
	s.mu.Unlock()
	v, err := s.store.Version(ctx)
	if err != nil {
		s.degrade(err)
		return
	}
	recovered := s.markOK()
	s.mu.Lock()
	last := s.last
	if v < max(last, high) {
		// The store lost its data (a restart without persistence): apply
		// whatever is there from scratch, and put back what is ours. high,
		// not only last: when this replica's own put was the newest before
		// the restart, last may still be 0 and the loss would go unseen
		// (and republish would skip what it had sent, see publish).
		s.seen = map[string]int64{}
		s.sent = map[string]string{}
		s.high = 0
		recovered = true
	}
	s.high = max(s.high, v)
	s.mu.Unlock()
	if v != last || recovered {
		entries, err := s.store.Get(ctx, s.keys()...)
		if err != nil {
			s.degrade(err)
			return
		}
		for _, e := range entries {
			s.notice(ctx, e)
		}
		s.mu.Lock()
		s.last = v
		s.mu.Unlock()
	}
	if recovered {
		s.republish()
	}
	s.flush(ctx)
}

// keys are the keys this replica applies: those of its credentials and
// breakers.
func (s *shared) keys() []string {
	cfg := s.g.config()
	var keys []string
	for _, n := range sortedCredentialNames(cfg.Credentials) {
		keys = append(keys, "cred:"+n, "reload:"+n)
		if s.sealer.CanSeal() {
			keys = append(keys, "tokens:"+n)
		}
	}
	for _, up := range cfg.Order() {
		keys = append(keys, "breaker:"+up)
		if u := cfg.Upstreams[up]; u != nil {
			for _, c := range u.boundCredentials(cfg.Credentials) {
				keys = append(keys, "breaker:"+breaker.Name(up, c))
			}
		}
	}
	return keys
}

func (s *shared) degrade(err error) {
	msg := s.g.redact(err.Error())
	if errors.Is(err, context.DeadlineExceeded) {
		// The client dials again until the bound runs out, so a store
		// that refuses connections reads as a bare "context deadline
		// exceeded" (found trying replicas from outside).
		msg = "no answer within state.redis.timeout (the store is down, unreachable or overloaded): " + msg
	}
	s.mu.Lock()
	was := s.ok
	s.ok, s.lastErr = false, msg
	if was {
		s.since = time.Now()
	}
	s.mu.Unlock()
	if was {
		s.g.log.Warn().Str(fieldErr, msg).Msg("shared state unreachable: serving on local state until it answers")
		s.g.publish(Event{Type: EventState, Kind: "degraded", Status: "degraded", Detail: truncate(msg, maxEventDetail)})
		s.g.healthChanged()
	}
}

// markOK records that the store answered; it reports whether it had not.
func (s *shared) markOK() bool {
	s.mu.Lock()
	was := s.ok
	s.ok, s.lastErr = true, ""
	s.mu.Unlock()
	if !was {
		s.g.log.Info().Msg("shared state reachable again: catching up")
		s.g.publish(Event{Type: EventState, Kind: "ok", Status: "ok"})
		s.g.healthChanged()
	}
	return !was
}

// notice applies an entry a peer put, once per version.
func (s *shared) notice(ctx context.Context, e state.Entry) {
	s.mu.Lock()
	if e.Version <= s.seen[e.Key] {
		s.mu.Unlock()
		return
	}
	s.seen[e.Key] = e.Version
	s.mu.Unlock()
	var head struct {
		Origin string `json:"origin"`
	}
	if json.Unmarshal(e.Value, &head) != nil || head.Origin == s.origin {
		return
	}
	kind, name, _ := strings.Cut(e.Key, ":")
	switch kind {
	case "cred":
		var f credFact
		if json.Unmarshal(e.Value, &f) == nil {
			s.applyCredFact(name, f)
		}
	case "breaker":
		var f breakerFact
		if json.Unmarshal(e.Value, &f) == nil {
			s.applyBreakerFact(name, f)
		}
	case "reload":
		var n reloadNotice
		if json.Unmarshal(e.Value, &n) == nil {
			s.applyReload(ctx, name, n.Trigger)
		}
	case "tokens":
		s.applyTokens(ctx, name, e.Value)
	}
}

// publish queues value for key; flush sends it. A newer value for the same
// key replaces one not sent yet.
func (s *shared) publish(key string, value []byte, ttl time.Duration, expires time.Time) {
	digest := sha256.Sum256(value)
	d := hex.EncodeToString(digest[:])
	s.mu.Lock()
	if s.sent[key] == d {
		s.mu.Unlock()
		return
	}
	s.sent[key] = d
	s.pending[key] = &pendingPut{value: value, ttl: ttl, expires: expires}
	s.mu.Unlock()
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// flush sends the queued puts; one that fails stays queued, and the store
// is marked unreachable.
func (s *shared) flush(ctx context.Context) {
	s.mu.Lock()
	ok := s.ok
	batch := make(map[string]*pendingPut, len(s.pending))
	for k, p := range s.pending {
		batch[k] = p
	}
	s.mu.Unlock()
	if !ok {
		return // catchUp retries once the store answers
	}
	now := time.Now()
	for k, p := range batch {
		if !p.expires.IsZero() && !now.Before(p.expires) {
			s.dropPending(k, p, 0)
			continue
		}
		ttl := p.ttl
		if !p.expires.IsZero() {
			ttl = p.expires.Sub(now)
		}
		v, err := s.store.Put(ctx, k, p.value, ttl)
		if err != nil {
			s.degrade(err)
			return
		}
		s.dropPending(k, p, v)
	}
}

func (s *shared) dropPending(key string, p *pendingPut, version int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.pending[key] == p {
		delete(s.pending, key)
	}
	s.high = max(s.high, version)
	if version > s.seen[key] {
		s.seen[key] = version
	}
}

// republish puts back, after the store lost its data or came back, the
// facts this replica holds: the bad statuses it found itself, its
// breakers' timed opens, and the catalog of each upstream it holds a
// complete listing of (without it, a replica that starts while an upstream
// is down after a Redis restart would list none of its tools).
//
// A credential fact is put back only when it is still the newest this
// replica knows of the value it holds, it found it itself, and it is bad;
// and it is put back as it was put (its time too). Deriving facts afresh
// from every credential's status here, as this did, published "healthy"
// for each credential a replica had never found anything about, stamped
// now: after any outage, such a default, landing after the revocation a
// peer had found meanwhile, overrode it on every replica, and the dead
// token was sent again (found trying three replicas, 4 runs in 7). It also
// put a peer's fact back as this replica's own, and each outage prefixed
// its detail once more with "a peer replica found it". A healthy fact is
// the news that a rejection ended: it is put when that happens, and has
// nothing to say later (a replica that never heard of a rejection takes
// its credential as healthy anyway).
func (s *shared) republish() {
	for _, n := range s.g.cred.set.Names() {
		c := s.g.credential(n)
		if c == nil || c.Value() == "" {
			continue
		}
		s.mu.Lock()
		k, ok := s.facts[n]
		s.mu.Unlock()
		switch {
		case ok && k.f.Origin == s.origin && k.f.Status != authmap.StatusHealthy.String() &&
			k.f.Value == s.sealer.Fingerprint(c.Value()):
			s.publish("cred:"+n, k.raw, credFactTTL, time.Time{})
		case !ok:
			// A bad status found here before the store was reachable
			// (an expiry the clock found at start-up, say): no fact was
			// put for it yet. Never a healthy one (see above).
			s.credentialFact(n, false)
		}
	}
	for _, st := range s.g.breakers.Snapshot() {
		if st.State == breaker.StateOpen && !st.Until.IsZero() {
			s.breakerChange(breaker.Change{Name: st.Name, To: breaker.StateOpen, Reason: st.Reason, Until: st.Until})
		}
	}
	for _, u := range s.g.ups() {
		u.mu.Lock()
		cat, complete := u.cat, u.catComplete
		u.mu.Unlock()
		if complete {
			s.cacheCatalog(u.name, cat)
		}
	}
}

// Credential facts.

// credentialEvent publishes the credential's status when an event changed
// it to one peers should know.
func (s *shared) credentialEvent(e authmap.Event) {
	if !s.enabled() {
		return
	}
	if e.Trigger == authmap.TriggerPeer {
		// A peer's fact: not echoed back. By the event's trigger, not by
		// "a fact is being applied": an admin reload here that ended
		// while a peer's fact was being applied was taken for its echo,
		// and its restore never reached the peers (a flaky test under
		// load: TestSharedRestoreClosesPeerBreaker).
		return
	}
	switch e.Kind {
	case authmap.EventRevoked, authmap.EventInvalid, authmap.EventExpired, authmap.EventRestored:
		s.credentialFact(e.Credential, e.Kind == authmap.EventRestored)
	}
}

// credentialFact publishes credential name's status: a bad one (revoked,
// invalid, expired), or healthy when healthy is true.
func (s *shared) credentialFact(name string, healthy bool) {
	c := s.g.credential(name)
	if c == nil {
		return
	}
	v := c.Value()
	if v == "" {
		return
	}
	snap := c.Snapshot(false)
	f := credFact{Origin: s.origin, Value: s.sealer.Fingerprint(v), Version: snap.Version, At: time.Now().UTC()}
	switch st := c.Status(); st {
	case authmap.StatusRevoked, authmap.StatusInvalid, authmap.StatusExpired:
		if st == authmap.StatusExpired && !providerExpired(snap.LastError) {
			// Only this replica's clock says so: each replica's own clock
			// reads the expiry of the value it holds. Taken by a peer
			// whose config gave it a later expiry (a ConfigMap reaching
			// pods at different times), it stuck there, expired, until an
			// admin reload (found trying replicas from outside).
			return
		}
		if le := snap.LastError; le != nil && strings.HasPrefix(le.Detail, peerFound) {
			// A peer's finding, which it put itself: put again as this
			// replica's, stamped now, it would override what was found
			// since (a restore on another replica).
			return
		}
		f.Status = st.String()
		if le := snap.LastError; le != nil {
			l := *le
			l.Detail = s.g.redact(l.Detail)
			f.LastError = &l
		}
	case authmap.StatusHealthy:
		if !healthy {
			return
		}
		// News only after a rejection of this value that this replica
		// knows of (its own or a peer's): a restore from anything else (a
		// rate limit cleared) says nothing of a revocation it never heard
		// of, and would override one found meanwhile (found in review).
		s.mu.Lock()
		k, ok := s.facts[name]
		s.mu.Unlock()
		if !ok || k.f.Status == authmap.StatusHealthy.String() || k.f.Value != f.Value {
			return
		}
		f.Status = st.String()
	default:
		return
	}
	b, _ := json.Marshal(f)
	s.mu.Lock()
	s.facts[name] = knownFact{f: f, raw: b}
	s.mu.Unlock()
	s.publish("cred:"+name, b, credFactTTL, time.Time{})
}

// newerThan orders two facts about one value: by the time they were found,
// then by origin, so that every replica orders them alike. Replicas' clocks
// are taken to agree to well under the time between two findings about one
// value (a rejection, then an operator's reload); a replica whose clock is
// off by more may see a peer's newer fact as older (its own admin reload
// still tries the value again).
func (f credFact) newerThan(o credFact) bool {
	if !f.At.Equal(o.At) {
		return f.At.After(o.At)
	}
	return f.Origin > o.Origin
}

// providerExpired reports whether f, a credential's last error, is a
// provider's answer that the value expired, not a clock's reading.
func providerExpired(f *authmap.Failure) bool {
	return f != nil && f.Subtype == authmap.SubtypeCredentialExpired
}

// peerFound starts the detail of a status learned from a peer replica.
const peerFound = "a peer replica found it "

// applyCredFact applies a peer's status to this replica's credential when
// it holds the same value.
func (s *shared) applyCredFact(name string, f credFact) {
	c := s.g.credential(name)
	if c == nil {
		return
	}
	v := c.Value()
	if v == "" || s.sealer.Fingerprint(v) != f.Value {
		return // another value: the fact is not about it
	}
	// Facts about one value are applied in the order they were found, not
	// the order they arrive: after an outage, facts queued on several
	// replicas land in any order, and a catch-up re-reads what was applied.
	raw, _ := json.Marshal(f)
	s.mu.Lock()
	k, known := s.facts[name]
	if known && k.f.Value == f.Value && !f.newerThan(k.f) {
		mine := k.f.Origin == s.origin && f.At.Before(k.f.At)
		if mine {
			// The store holds an older fact than ours (ours was put
			// before it, or the store lost it): put ours back.
			delete(s.sent, "cred:"+name)
		}
		s.mu.Unlock()
		if mine {
			s.publish("cred:"+name, k.raw, credFactTTL, time.Time{})
		}
		return
	}
	s.facts[name] = knownFact{f: f, raw: raw}
	s.mu.Unlock()
	var sub authmap.Subtype
	switch f.Status {
	case authmap.StatusRevoked.String():
		sub = authmap.SubtypeCredentialRevoked
	case authmap.StatusInvalid.String():
		sub = authmap.SubtypeCredentialInvalid
	case authmap.StatusExpired.String():
		if !providerExpired(f.LastError) {
			return // a clock's (from a replica before credentialFact held them back)
		}
		sub = authmap.SubtypeCredentialExpired
	case authmap.StatusHealthy.String():
	default:
		return
	}
	before := c.Status()
	if sub == "" {
		// Healthy again there (an operator's reload, a call answered):
		// the breakers a rejection here opened let the value through too.
		c.ReportPeerRestored(v, peerFound+"working again")
		// And the breakers that hold the value here follow the status
		// (a restore this replica had already taken in, or one whose
		// new generation no call has shown them yet, left them open
		// while the status said healthy; seen once in a loaded run).
		s.g.seeCredential(name)
		s.g.retryCredential(name)
	} else {
		detail := ""
		if f.LastError != nil && f.LastError.Detail != "" {
			detail = f.LastError.Detail
			if !strings.HasPrefix(detail, peerFound) {
				detail = peerFound + f.Status + ": " + detail
			}
		}
		if le := f.LastError; le != nil && le.Subtype == sub && sub != authmap.SubtypeCredentialExpired {
			// The finder's failure (provider, its code, the recovery), so
			// that a call refused here carries what one refused there
			// does (found trying replicas: peers' failures lacked them);
			// before the status, which a call may read at once. Not for
			// an expiry: the finder's may be its clock's, which holds
			// nothing back (deadCredential).
			cause := *le
			cause.Detail = s.g.redact(detail)
			s.g.credCauses.Store(name, credCause{f: cause, gen: c.Generation()})
		}
		c.ReportPeer(sub, v, s.g.redact(detail))
	}
	if after := c.Status(); after != before {
		s.g.log.Info().Str(fieldCredential, name).Str("status", after.String()).Str("origin", f.Origin).Msg("credential status from a peer replica")
	}
}

// Breaker facts.

// breakerChange publishes a breaker's timed open (not one a peer's fact
// caused).
func (s *shared) breakerChange(c breaker.Change) {
	if !s.enabled() {
		return
	}
	f, ok := c.Fact()
	if !ok {
		return
	}
	fact := breakerFact{Origin: s.origin, Reason: f.Reason, Until: f.Until.UTC()}
	if _, cred, ok := strings.Cut(c.Name, "/"); ok && f.Reason == string(authmap.SubtypeRateLimitReached) {
		if cr := s.g.credential(cred); cr != nil {
			if le := cr.Snapshot(false).LastError; le != nil && le.Subtype == authmap.SubtypeRateLimitReached {
				fact.Provider, fact.ProviderCode = le.Provider, s.g.redact(le.ProviderCode)
			}
		}
	}
	b, _ := json.Marshal(fact)
	s.publish("breaker:"+c.Name, b, 0, f.Until)
}

// applyBreakerFact applies a peer's open breaker here. A credential's rate
// limit also makes the credential rate_limited here, until the limit
// resets, as on the replica that met it: the peer showed the credential
// healthy and /health ok beside the open breaker, and its refusals named
// no provider (found trying two replicas from outside).
func (s *shared) applyBreakerFact(name string, f breakerFact) {
	up, cred, isCred := strings.Cut(name, "/")
	if s.g.upstream(up) == nil || (isCred && !bound(s.g.config(), up, cred)) {
		return // not ours: no breaker is made for it
	}
	s.g.breakers.Honour(name, breaker.Fact{Reason: f.Reason, Until: f.Until})
	if isCred && f.Reason == string(authmap.SubtypeRateLimitReached) {
		if c := s.g.credential(cred); c != nil {
			c.ReportPeerLimited(f.Until, authmap.Failure{Provider: f.Provider, ProviderCode: f.ProviderCode})
		}
	}
}

// Rotation and reload notices.

// announceReload tells the peers that credential name was re-read here on
// trigger (an admin or webhook reload), so they re-read it too. It sends
// the notice before returning, so the endpoint's answer means the peers
// were told; a store that does not answer in time gets it once it does.
func (s *shared) announceReload(ctx context.Context, name string, trigger authmap.Trigger) {
	if !s.enabled() {
		return
	}
	key := "reload:" + name
	b, _ := json.Marshal(reloadNotice{Origin: s.origin, Trigger: trigger, At: time.Now().UTC()})
	s.mu.Lock()
	delete(s.sent, key) // every reload is announced, even one like the last
	s.mu.Unlock()
	if v, err := s.store.Put(ctx, key, b, reloadTTL); err == nil {
		s.dropPending(key, nil, v)
		return
	}
	s.publish(key, b, reloadTTL, time.Time{})
}

// applyReload re-reads credential name from its source, in the background.
// A credential whose renewals are shared needs none: the token set the
// announcing replica renewed reaches this one as tokens:<name>. An
// operator's reload (trigger admin) also tries the value again here, as it
// does on the replica that announced it: a breaker still open at the value
// in use while the credential is usable closes (see retryCredential).
func (s *shared) applyReload(ctx context.Context, name string, trigger authmap.Trigger) {
	c := s.g.credential(name)
	if c == nil || (c.SharesRenewals() && s.sealer.CanSeal()) || ctx.Err() != nil {
		return
	}
	s.bg.Go(func() {
		defer s.g.recoverLog("peer reload", "")
		rctx, cancel := context.WithTimeout(ctx, credentialTimeout)
		defer cancel()
		_, err := s.g.cred.set.Reload(rctx, name, authmap.TriggerPeer)
		if err != nil && rctx.Err() == nil {
			s.g.log.Warn().Str(fieldCredential, name).Str(fieldErr, s.g.redact(err.Error())).Msg("re-reading a credential a peer rotated failed")
		}
		if err == nil && trigger == authmap.TriggerAdmin {
			s.g.retryCredential(name)
		}
		s.g.refreshRedactor()
	})
}

// Shared renewals: the authmap.Coordinator.

// Renew implements authmap.Coordinator: it adopts a token set a peer
// renewed when one is newer than what this replica holds, and otherwise
// renews under the credential's lock and shares the result. While a peer
// holds the lock it waits for that peer's token set.
func (s *shared) Renew(ctx context.Context, r authmap.Renewal) (authmap.Token, error) {
	name := r.Credential
	deadline := time.Now().Add(peerRenewWait)
	for {
		set, err := s.readTokens(ctx, name)
		if err == nil && set != nil {
			adoptRefresh(set, r)
			if newer(set, r) {
				s.g.log.Debug().Str(fieldCredential, name).Str("trigger", string(r.Trigger)).Msg("adopting a token set a peer replica renewed")
				return set.token(), nil
			}
		}
		if r.Trigger == authmap.TriggerPeer {
			// A peer's notice with nothing newer in it: keep what we hold.
			return authmap.Token{Value: r.Current, ExpiresAt: r.CurrentExpiry, Renewable: true}, nil
		}
		if err != nil {
			return s.renewAlone(ctx, r, err)
		}
		owner, err := s.store.Lock(ctx, "lock:"+name, renewLockTTL)
		switch {
		case err == nil:
			return s.renewLocked(ctx, r, owner)
		case errors.Is(err, state.ErrLocked):
			if time.Now().After(deadline) {
				return authmap.Token{}, fmt.Errorf("credential %q: a peer replica has held its renewal for over %s", name, peerRenewWait)
			}
			if !s.waitTokens(ctx, name, 250*time.Millisecond) {
				return authmap.Token{}, ctx.Err()
			}
		default:
			return s.renewAlone(ctx, r, err)
		}
	}
}

// renewLocked renews while holding the lock, shares the token set, and
// releases the lock (only if the token set was shared: otherwise a peer
// could take the lock and spend a refresh token already spent here; the
// lock then expires on its own).
func (s *shared) renewLocked(ctx context.Context, r authmap.Renewal, owner string) (authmap.Token, error) {
	name := r.Credential
	release := true
	defer func() {
		if !release {
			return
		}
		uctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
		defer cancel()
		if err := s.store.Unlock(uctx, "lock:"+name, owner); err != nil && !errors.Is(err, state.ErrNotOwner) {
			s.degrade(err)
		}
	}()
	// A peer may have shared a token set just before the lock was ours.
	if set, err := s.readTokens(ctx, name); err == nil && set != nil {
		adoptRefresh(set, r)
		if newer(set, r) {
			return set.token(), nil
		}
	}
	fctx, cancel := context.WithTimeout(ctx, renewFetchBound)
	defer cancel()
	tok, err := r.Fetch(fctx)
	if err != nil {
		return tok, err
	}
	if err := s.putTokens(ctx, name, tok, r.Source); err != nil {
		release = false
		s.degrade(err)
	}
	s.g.log.Debug().Str(fieldCredential, name).Str("trigger", string(r.Trigger)).Msg("renewed under the replicas' lock and shared")
	return tok, nil
}

// renewAlone renews without the store (it did not answer): a credential
// whose provider rotates refresh tokens waits for the store rather than
// risk spending a refresh token a peer holds; any other renews on its own.
func (s *shared) renewAlone(ctx context.Context, r authmap.Renewal, storeErr error) (authmap.Token, error) {
	s.degrade(storeErr)
	if r.Source.RotatesRefreshTokens() {
		return authmap.Token{}, fmt.Errorf("credential %q: not renewed while the shared state is unreachable (%s): its provider rotates refresh tokens, and renewing without the replicas' lock could spend one a peer holds", r.Credential, s.g.redact(storeErr.Error()))
	}
	fctx, cancel := context.WithTimeout(ctx, renewFetchBound)
	defer cancel()
	tok, err := r.Fetch(fctx)
	if err == nil {
		_ = s.putTokens(ctx, r.Credential, tok, r.Source) // queued until the store answers
	}
	return tok, err
}

// adoptRefresh takes the refresh token of a shared token set that is not
// older than the value held: only a renewal under the lock writes the set,
// so its refresh token is the newest of the chain, even when its access
// token is past (a restart). A set older than what this replica holds (its
// own newer one is still queued for the store) keeps the source's own.
func adoptRefresh(set *tokenSet, r authmap.Renewal) {
	if set.AccessToken == r.Current || r.CurrentExpiry.IsZero() || set.ExpiresAt.IsZero() || !set.ExpiresAt.Before(r.CurrentExpiry) {
		r.Source.AdoptRefreshToken(set.RefreshToken)
	}
}

// newer reports whether a shared token set is worth adopting: another value
// than the one held, not about to expire, and not older than it.
func newer(set *tokenSet, r authmap.Renewal) bool {
	if set.AccessToken == "" || set.AccessToken == r.Current {
		return false
	}
	if !set.ExpiresAt.IsZero() && !set.ExpiresAt.After(time.Now().Add(minFresh)) {
		return false
	}
	return r.CurrentExpiry.IsZero() || set.ExpiresAt.IsZero() || set.ExpiresAt.After(r.CurrentExpiry)
}

func (t *tokenSet) token() authmap.Token {
	return authmap.Token{Value: t.AccessToken, ExpiresAt: t.ExpiresAt, Scopes: t.Scopes, Renewable: true}
}

// readTokens returns the shared token set of credential name (nil if none
// or it does not open).
func (s *shared) readTokens(ctx context.Context, name string) (*tokenSet, error) {
	entries, err := s.store.Get(ctx, "tokens:"+name)
	if err != nil || len(entries) == 0 {
		return nil, err
	}
	return s.openTokens(name, entries[0].Value), nil
}

func (s *shared) openTokens(name string, value []byte) *tokenSet {
	var rec sealedRecord
	if json.Unmarshal(value, &rec) != nil {
		return nil
	}
	plain, err := s.sealer.Open("tokens:"+name, rec.Sealed)
	if err != nil {
		s.g.log.Warn().Str(fieldCredential, name).Msg("a shared token set does not open with this replica's encryption key: every replica needs the same state.redis.encryption_key")
		return nil
	}
	var set tokenSet
	if json.Unmarshal(plain, &set) != nil {
		return nil
	}
	return &set
}

// putTokens shares a renewed token set now; if the store does not answer,
// it stays queued.
func (s *shared) putTokens(ctx context.Context, name string, tok authmap.Token, src authmap.SharedRenewal) error {
	plain, _ := json.Marshal(tokenSet{AccessToken: tok.Value, ExpiresAt: tok.ExpiresAt, Scopes: tok.Scopes, RefreshToken: src.RefreshToken()})
	sealed, err := s.sealer.Seal("tokens:"+name, plain)
	if err != nil {
		return err
	}
	b, _ := json.Marshal(sealedRecord{Origin: s.origin, Sealed: sealed})
	key := "tokens:" + name
	v, err := s.store.Put(ctx, key, b, tokensTTL)
	if err != nil {
		s.publish(key, b, tokensTTL, time.Time{})
		return err
	}
	s.mu.Lock()
	if v > s.seen[key] {
		s.seen[key] = v
	}
	s.mu.Unlock()
	return nil
}

// applyTokens adopts a token set a peer shared, when it is newer than the
// value held (through Renew, so the credential's events and probe apply),
// and wakes renewals waiting for it.
func (s *shared) applyTokens(ctx context.Context, name string, value []byte) {
	s.mu.Lock()
	if ch := s.tokenWake[name]; ch != nil {
		close(ch)
		delete(s.tokenWake, name)
	}
	s.mu.Unlock()
	c := s.g.credential(name)
	if c == nil || !c.SharesRenewals() || ctx.Err() != nil {
		return
	}
	set := s.openTokens(name, value)
	if set == nil || !newer(set, authmap.Renewal{Current: c.Value(), CurrentExpiry: c.ExpiresAt()}) {
		return
	}
	s.bg.Go(func() {
		defer s.g.recoverLog("adopting a peer's renewal", "")
		rctx, cancel := context.WithTimeout(ctx, credentialTimeout)
		defer cancel()
		_, _ = c.Renew(rctx, authmap.TriggerPeer)
		s.g.refreshRedactor()
	})
}

// waitTokens waits up to d for a token set of name to be shared; false
// when ctx ended.
func (s *shared) waitTokens(ctx context.Context, name string, d time.Duration) bool {
	s.mu.Lock()
	ch := s.tokenWake[name]
	if ch == nil {
		ch = make(chan struct{})
		s.tokenWake[name] = ch
	}
	s.mu.Unlock()
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ch:
	case <-t.C:
	case <-ctx.Done():
		return false
	}
	return true
}

// The catalog cache.

// cacheCatalog shares an upstream's last listing, so that a replica that
// starts while the upstream cannot be reached still lists its tools.
func (s *shared) cacheCatalog(up string, cat upstreamCatalog) {
	if !s.enabled() {
		return
	}
	b, err := json.Marshal(catalogRecord{Origin: s.origin, Tools: cat.tools, Prompts: cat.prompts,
		Resources: cat.resources, Templates: cat.templates, Caps: cat.caps, Instructions: cat.instructions})
	if err != nil {
		return
	}
	s.publish("catalog:"+up, b, catalogTTL, time.Time{})
}

// useCachedCatalog gives u, which could not connect and has listed nothing
// yet, the last catalog a replica listed for it. It waits on the store at
// most its timeout.
func (u *upstream) useCachedCatalog(ctx context.Context) {
	s := u.gw.shared
	if !s.enabled() {
		return
	}
	u.mu.Lock()
	empty := u.cat.caps == nil && u.cat.tools == nil && u.cat.prompts == nil && u.cat.resources == nil
	u.mu.Unlock()
	if !empty {
		return
	}
	entries, err := s.store.Get(ctx, "catalog:"+u.name)
	if err != nil {
		s.degrade(err)
		return
	}
	if len(entries) == 0 {
		return
	}
	var rec catalogRecord
	if json.Unmarshal(entries[0].Value, &rec) != nil {
		return
	}
	cat := upstreamCatalog{prompts: rec.Prompts, resources: rec.Resources, templates: rec.Templates, caps: rec.Caps,
		instructions: boundInstructions(u.gw.redactor.RedactKnown(rec.Instructions))}
	for _, t := range rec.Tools {
		if t != nil && u.cfg.Tools.Allowed(t.Name) {
			cat.tools = append(cat.tools, t)
		}
	}
	u.gw.redactCatalog(&cat)
	compactSchemas(cat.tools)
	u.mu.Lock()
	if u.session.Load() != nil || u.cat.caps != nil || u.cat.tools != nil {
		u.mu.Unlock()
		return // it connected meanwhile
	}
	u.cat = cat
	u.catComplete = false // a peer's listing: not ours to put back
	u.listedNames.Store(nil)
	u.mu.Unlock()
	u.log.Info().Int("tool_count", len(cat.tools)).Msg("upstream unreachable: listing its catalog from the shared cache")
	u.gw.catalog.rebuild()
}
