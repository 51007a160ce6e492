package authmap

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"reflect"
	"runtime/debug"
	"sort"
	"sync"
	"sync/atomic"
)

// ErrUnknownCredential is returned by [Set.Reload] for a name the set does not hold.
var ErrUnknownCredential = errors.New("unknown credential")

// SetOptions configure a Set. A nil *SetOptions is the same as the zero value.
type SetOptions struct {
	// Sources builds the credentials' sources: the openers for vault,
	// aws_secrets_manager and oauth2, the environment lookup. If nil, only
	// env, file, exec and value sources can be built, env from os.LookupEnv.
	Sources *SourceOptions
	// ToolProbe runs a probe.tool with a candidate value (the gateway calls
	// the tool on the upstream with the value injected). If nil, credentials
	// with a tool probe are not probed: the next call checks them.
	ToolProbe func(ctx context.Context, credential string, probe ProbeConfig, value string) (ProbeResult, error)
	// HTTPClient sends HTTP probes. If nil, a client with a 15s timeout.
	HTTPClient *http.Client
	// Classifier classifies HTTP probe answers. If nil, the built-in rules.
	Classifier *Classifier
	// OnEvent receives every credential's events (see [CredentialOptions]).
	OnEvent func(Event)
	// Logger: see [CredentialOptions].
	Logger *slog.Logger
	// Coordinator: see [CredentialOptions].
	Coordinator Coordinator
}

// Set holds the credentials by their stable names and keeps them across
// config reloads: [Set.Apply] keeps every Credential whose config did not
// change, with its value, status and history, and replaces only the others.
// Lookups are lock-free.
type Set struct {
	opts  SetOptions
	creds atomic.Pointer[map[string]*Credential]

	mu  sync.Mutex // serializes Apply with Run's bookkeeping
	lc  LifecycleConfig
	run *setRun // while Run runs
	// dropped holds the last generation of each credential a change
	// removed: declared again, it goes on from there, so that what was
	// keyed by its name and generation (a breaker held until the credential
	// changes) sees a change. One entry per name ever removed.
	dropped map[string]uint64
	// retired are the credentials the last change removed, still found
	// by Find until ForgetRetired: an upstream a reload replaced serves
	// calls with its old binding until its successor takes over.
	retired atomic.Pointer[map[string]*Credential]
}

type setRun struct {
	ctx     context.Context
	wg      sync.WaitGroup
	cancels map[*Credential]context.CancelFunc
}

// NewSet returns an empty set.
func NewSet(opts *SetOptions) *Set {
	s := &Set{}
	if opts != nil {
		s.opts = *opts
	}
	if s.opts.Logger == nil {
		s.opts.Logger = slog.New(slog.DiscardHandler)
	}
	empty := map[string]*Credential{}
	s.creds.Store(&empty)
	return s
}

// Apply makes configs the set's credentials and lc their timings. A
// credential whose config is unchanged is kept as it is; a new or changed one
// gets a new Credential (not loaded: see [Set.Load]); one no longer listed is
// dropped (its watch stops; calls holding it finish with it). If any source
// cannot be built, Apply changes nothing and returns every problem. Validate
// configs first ([ValidateCredentials]). It is [Set.Stage] then
// [Staged.Commit].
func (s *Set) Apply(lc LifecycleConfig, configs map[string]CredentialConfig) error {
	st, err := s.Stage(lc, configs)
	if err != nil {
		return err
	}
	return st.Commit()
}

// ErrStaleStage is returned by [Staged.Commit] when the set changed (another
// Apply or Commit) after the Staged was built: nothing is changed then.
var ErrStaleStage = errors.New("authmap: the set changed since this change was staged")

// Staged is what Apply would do, built but not in force: the credentials a
// config adds or changes exist, and can be loaded before any call sees them
// (a config reload loads them first, so that a changed credential is never
// in force without its value). Commit puts it in force.
type Staged struct {
	s     *Set
	lc    LifecycleConfig
	base  *map[string]*Credential // the set's credentials when staged
	next  map[string]*Credential
	fresh []*Credential // new or changed, by name
	// events holds the fresh credentials' events until Commit: a change
	// that is never committed (a reload rejected, for one of these
	// credentials or anything else) must not page, count or publish
	// anything about credentials that were never in force.
	events *heldEvents
}

// heldEvents passes events on to to once released, and holds them until
// then, in order.
type heldEvents struct {
	to   func(Event)
	mu   sync.Mutex
	open bool
	held []Event
}

func (h *heldEvents) on(e Event) {
	h.mu.Lock()
	if !h.open {
		h.held = append(h.held, e)
		h.mu.Unlock()
		return
	}
	h.mu.Unlock()
	if h.to != nil {
		h.to(e)
	}
}

// release passes on the events held, then every later one as it comes.
// Events that come while it does are passed on after those before them.
func (h *heldEvents) release() {
	for {
		h.mu.Lock()
		batch := h.held
		h.held = nil
		if len(batch) == 0 {
			h.open = true
			h.mu.Unlock()
			return
		}
		h.mu.Unlock()
		for _, e := range batch {
			if h.to != nil {
				h.to(e)
			}
		}
	}
}

// Stage builds what Apply(lc, configs) would put in force, without changing
// the set. A credential replacing one of the same name carries over its
// previous values (still redacted) and continues its generation, so a
// breaker that waits for the credential to change sees a change. If any
// source cannot be built, it returns every problem.
func (s *Set) Stage(lc LifecycleConfig, configs map[string]CredentialConfig) (*Staged, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	base := s.creds.Load()
	old := *base
	st := &Staged{s: s, lc: lc, base: base, next: make(map[string]*Credential, len(configs)), events: &heldEvents{to: s.opts.OnEvent}}
	var errs []error
	for _, name := range sortedKeys(configs) {
		cfg := configs[name]
		if c := old[name]; c != nil && reflect.DeepEqual(c.cfg, cfg) {
			st.next[name] = c
			continue
		}
		c, err := s.build(name, cfg, lc, st.events.on)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if prev := old[name]; prev != nil {
			c.inheritSecrets(prev)
		} else if gen, ok := s.dropped[name]; ok {
			c.continueGeneration(gen)
		}
		st.next[name] = c
		st.fresh = append(st.fresh, c)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return st, nil
}

// Fresh returns the credentials the change adds or replaces, by name.
func (st *Staged) Fresh() []*Credential { return st.fresh }

// Load runs the pre-flight of the fresh credentials, concurrently, trigger
// naming why ([TriggerConfig] for a reload). It returns their load errors,
// each naming its credential.
func (st *Staged) Load(ctx context.Context, trigger Trigger) error {
	return st.s.each("load", st.fresh, func(c *Credential) error {
		if _, err := c.Renew(ctx, trigger); err != nil {
			return err
		}
		return c.Problem()
	})
}

// Problems is [Set.Problems] for the fresh credentials only: those whose
// status startup refuses.
func (st *Staged) Problems(startup StartupConfig) error {
	return problems(startup, st.fresh)
}

// Commit puts the staged change in force: the set holds the staged
// credentials, watches start for the fresh ones and stop for those dropped
// or replaced. It fails with ErrStaleStage, changing nothing, when the set
// changed since Stage.
func (st *Staged) Commit() error {
	if err := st.commit(); err != nil {
		return err
	}
	// Outside the set's lock: a handler may read the set.
	st.events.release()
	return nil
}

func (st *Staged) commit() error {
	s := st.s
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.creds.Load() != st.base {
		return ErrStaleStage
	}
	next := st.next
	retired := map[string]*Credential{}
	for name, c := range *st.base {
		if next[name] == nil {
			if s.dropped == nil {
				s.dropped = map[string]uint64{}
			}
			s.dropped[name] = c.Generation()
			retired[name] = c
		}
	}
	s.retired.Store(&retired)
	s.lc = st.lc
	for _, c := range next {
		c.SetLifecycle(st.lc)
	}
	s.creds.Store(&next)
	if r := s.run; r != nil {
		for c, cancel := range r.cancels {
			if next[c.name] != c {
				cancel()
				delete(r.cancels, c)
			}
		}
		for _, c := range next {
			if _, ok := r.cancels[c]; !ok {
				s.startLocked(r, c)
			}
		}
	}
	return nil
}

// build makes the credential name of cfg, its events going to onEvent.
func (s *Set) build(name string, cfg CredentialConfig, lc LifecycleConfig, onEvent func(Event)) (*Credential, error) {
	src, err := NewSource("credentials."+name+".source", cfg.Source, s.opts.Sources)
	if err != nil {
		return nil, err
	}
	var probe ProbeFunc
	switch {
	case cfg.Probe.HTTP != nil:
		probe = HTTPProbe(*cfg.Probe.HTTP, cfg.Inject, s.opts.HTTPClient, s.opts.Classifier)
	case cfg.Probe.Tool != "" && s.opts.ToolProbe != nil:
		tp, pc := s.opts.ToolProbe, cfg.Probe
		probe = func(ctx context.Context, value string) (ProbeResult, error) { return tp(ctx, name, pc, value) }
	}
	return NewCredential(name, cfg, src, &CredentialOptions{
		Lifecycle:   lc,
		Probe:       probe,
		OnEvent:     onEvent,
		Logger:      s.opts.Logger,
		Coordinator: s.opts.Coordinator,
	}), nil
}

// Get returns the credential named name in force, or nil.
func (s *Set) Get(name string) *Credential { return (*s.creds.Load())[name] }

// Find is Get that also finds a credential the last change removed, until
// ForgetRetired (its value as it was; its watch has stopped): for sending
// it, so that an upstream a reload replaced, still serving with its old
// binding until its successor takes over, sends it. Those calls went
// without it, and failed credential_invalid.
func (s *Set) Find(name string) *Credential {
	if c := s.Get(name); c != nil {
		return c
	}
	if r := s.retired.Load(); r != nil {
		return (*r)[name]
	}
	return nil
}

// ForgetRetired stops Find finding the credentials the last change removed:
// call it once nothing uses their old bindings.
func (s *Set) ForgetRetired() { s.retired.Store(nil) }

// Names returns the credentials' names, sorted.
func (s *Set) Names() []string { return sortedKeys(*s.creds.Load()) }

// Load runs the pre-flight of every credential not loaded yet, concurrently
// (one slow or failing source does not hold up the others). It returns the
// load errors, each naming its credential; [Set.Problems] decides whether
// they stop the start.
func (s *Set) Load(ctx context.Context) error {
	var todo []*Credential
	for _, c := range s.sorted() {
		if !c.Loaded() {
			todo = append(todo, c)
		}
	}
	return s.each("load", todo, func(c *Credential) error { return c.Load(ctx) })
}

// Problems returns an error naming every credential whose status keeps the
// gateway from starting under startup, with its status and why; nil if none.
func (s *Set) Problems(startup StartupConfig) error {
	return problems(startup, s.sorted())
}

// problems returns an error naming each of cs whose status startup refuses,
// with its status and why; nil if none.
func problems(startup StartupConfig, cs []*Credential) error {
	var errs []error
	for _, c := range cs {
		if st := c.Status(); startup.Refuses(st) {
			err := c.Problem()
			if err == nil {
				err = fmt.Errorf("credential %q: %s", c.name, st)
			}
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// Reload re-reads one credential from its source now (SIGHUP, the admin
// endpoint, a webhook): see [Credential.Renew].
func (s *Set) Reload(ctx context.Context, name string, trigger Trigger) (changed bool, err error) {
	c := s.Get(name)
	if c == nil {
		return false, fmt.Errorf("%w %q", ErrUnknownCredential, name)
	}
	return c.Renew(ctx, trigger)
}

// ReloadAll re-reads every credential concurrently (SIGHUP) and returns the
// errors, each naming its credential. An OAuth credential whose token is
// good is not renewed unless its grant changed (keepsLiveToken).
func (s *Set) ReloadAll(ctx context.Context, trigger Trigger) error {
	return s.each("reload", s.sorted(), func(c *Credential) error {
		if c.keepsLiveToken(ctx) {
			return nil
		}
		_, err := c.Renew(ctx, trigger)
		return err
	})
}

// sorted returns the credentials in force, by name.
func (s *Set) sorted() []*Credential {
	creds := *s.creds.Load()
	out := make([]*Credential, 0, len(creds))
	for _, name := range sortedKeys(creds) {
		out = append(out, creds[name])
	}
	return out
}

// each runs f on every one of cs concurrently (one slow or failing
// credential does not hold up the others) and returns their errors, sorted
// and joined; what names the step in a panic's log.
func (s *Set) each(what string, cs []*Credential, f func(*Credential) error) error {
	var wg sync.WaitGroup
	var mu sync.Mutex
	var errs []error
	for _, c := range cs {
		wg.Go(func() {
			defer s.recoverLog(what, c.name)
			if err := f(c); err != nil {
				mu.Lock()
				errs = append(errs, err)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	sort.Slice(errs, func(i, j int) bool { return errs[i].Error() < errs[j].Error() })
	return errors.Join(errs...)
}

// Run runs every credential's watch ([Credential.Run]) until ctx is done,
// starting and stopping watches as Apply adds and drops credentials. It
// returns once every watch has stopped.
func (s *Set) Run(ctx context.Context) error {
	s.mu.Lock()
	if s.run != nil {
		s.mu.Unlock()
		return errors.New("authmap: Set.Run called twice")
	}
	r := &setRun{ctx: ctx, cancels: map[*Credential]context.CancelFunc{}}
	s.run = r
	for _, c := range *s.creds.Load() {
		s.startLocked(r, c)
	}
	s.mu.Unlock()
	<-ctx.Done()
	s.mu.Lock()
	for _, cancel := range r.cancels {
		cancel()
	}
	s.run = nil
	s.mu.Unlock()
	r.wg.Wait()
	return nil
}

func (s *Set) startLocked(r *setRun, c *Credential) {
	ctx, cancel := context.WithCancel(r.ctx)
	r.cancels[c] = cancel
	r.wg.Go(func() {
		defer s.recoverLog("watch", c.name)
		_ = c.Run(ctx)
	})
}

func (s *Set) recoverLog(what, name string) {
	if r := recover(); r != nil {
		s.opts.Logger.Error("panic in credential "+what, "credential", name, "panic", fmt.Sprint(r), "stack", string(debug.Stack()))
	}
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
