package state

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"slices"
	"sync"
	"time"
)

// Memory is the in-process Store: the default, for a gateway that runs
// alone. Several gateways in one process (tests) can share one.
type Memory struct {
	now func() time.Time

	mu       sync.Mutex
	version  int64
	entries  map[string]memEntry
	locks    map[string]memLock
	watchers map[*memWatcher]struct{}
	closed   bool
}

type memEntry struct {
	e       Entry
	expires time.Time // zero: never
}

type memLock struct {
	token   string
	expires time.Time
}

type memWatcher struct {
	ch chan Entry
}

// watchBuffer bounds the notices queued for one Watch; beyond it notices
// are dropped (a watcher catches up with Version and Get).
const watchBuffer = 256

// NewMemory returns an empty in-memory store.
func NewMemory() *Memory {
	return &Memory{now: time.Now, entries: map[string]memEntry{}, locks: map[string]memLock{}, watchers: map[*memWatcher]struct{}{}}
}

// Backend returns BackendMemory.
func (m *Memory) Backend() string { return BackendMemory }

// Put implements Store.
func (m *Memory) Put(ctx context.Context, key string, value []byte, ttl time.Duration) (int64, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.sweepLocked()
	m.version++
	e := Entry{Key: key, Version: m.version, Value: slices.Clone(value)}
	me := memEntry{e: e}
	if ttl > 0 {
		me.expires = m.now().Add(ttl)
	}
	m.entries[key] = me
	for w := range m.watchers {
		select {
		case w.ch <- e:
		default: // dropped: the watcher catches up
		}
	}
	return m.version, nil
}

// sweepLocked drops expired entries and locks, so that the map holds only
// live keys.
func (m *Memory) sweepLocked() {
	now := m.now()
	for k, e := range m.entries {
		if !e.expires.IsZero() && !now.Before(e.expires) {
			delete(m.entries, k)
		}
	}
	for k, l := range m.locks {
		if !now.Before(l.expires) {
			delete(m.locks, k)
		}
	}
}

// Get implements Store.
func (m *Memory) Get(ctx context.Context, keys ...string) ([]Entry, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	now := m.now()
	var out []Entry
	for _, k := range keys {
		e, ok := m.entries[k]
		if !ok || (!e.expires.IsZero() && !now.Before(e.expires)) {
			continue
		}
		e.e.Value = slices.Clone(e.e.Value)
		out = append(out, e.e)
	}
	return out, nil
}

// Version implements Store.
func (m *Memory) Version(ctx context.Context) (int64, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.version, nil
}

// Watch implements Store.
func (m *Memory) Watch(ctx context.Context, fn func(Entry)) error {
	w := &memWatcher{ch: make(chan Entry, watchBuffer)}
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return nil
	}
	m.watchers[w] = struct{}{}
	m.mu.Unlock()
	defer func() {
		m.mu.Lock()
		delete(m.watchers, w)
		m.mu.Unlock()
	}()
	for {
		select {
		case <-ctx.Done():
			return nil
		case e := <-w.ch:
			fn(e)
		}
	}
}

// Lock implements Store.
func (m *Memory) Lock(ctx context.Context, key string, ttl time.Duration) (string, error) {
	if err := ctx.Err(); err != nil {
		return "", err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	now := m.now()
	if l, ok := m.locks[key]; ok && now.Before(l.expires) {
		return "", ErrLocked
	}
	token := newToken()
	m.locks[key] = memLock{token: token, expires: now.Add(ttl)}
	return token, nil
}

// Unlock implements Store.
func (m *Memory) Unlock(ctx context.Context, key, token string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	l, ok := m.locks[key]
	if !ok || l.token != token || !m.now().Before(l.expires) {
		return ErrNotOwner
	}
	delete(m.locks, key)
	return nil
}

// Close implements Store.
func (m *Memory) Close() error {
	m.mu.Lock()
	m.closed = true
	m.mu.Unlock()
	return nil
}

// newToken returns a random lock owner token.
func newToken() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
