// Package state is the state credgate replicas share (issue 11): a small
// versioned key-value store with change notices and renewal locks, in
// memory by default and in Redis when several replicas run behind a load
// balancer.
//
//	replica A ── Put("cred:api", fact, ttl) ──▶ Store ──▶ version++ ──▶ notice ──▶ replica B: Watch fn(Entry)
//	                                              │
//	replica B (missed the notice) ── Version() > last seen? ── Get(keys...) ──▶ catches up
//
//	Lock("lock:api", ttl) -> owner token      one replica renews a credential at a time
//	Unlock("lock:api", token)                 only its owner releases it (compare-and-delete)
//
// Every Put gets the next value of one version counter, stored with the
// value and sent with the notice, so a replica that missed a notice (a
// dropped connection, a restart) sees the counter ahead of what it applied
// and re-reads the keys it cares about. A notice is an optimisation for
// speed; the counter is what makes the state converge.
//
// The gateway never waits on the store in a call's path: what it publishes
// is queued, what peers publish is applied by a goroutine of its own, and
// each operation is bounded by [RedisConfig.Timeout].
package state

import (
	"context"
	"errors"
	"time"
)

// Backends.
const (
	BackendMemory = "memory"
	BackendRedis  = "redis"
)

// Entry is a value in the store with the version its Put was given.
type Entry struct {
	Key     string // without the key prefix
	Version int64
	Value   []byte
}

// ErrLocked is returned by [Store.Lock] when another owner holds the lock.
var ErrLocked = errors.New("state: locked by another owner")

// ErrNotOwner is returned by [Store.Unlock] when the lock is no longer held
// with the token given (it expired, or another owner took it since).
var ErrNotOwner = errors.New("state: lock not held by this owner")

// Store is the shared state. Its methods are safe for concurrent use; each
// returns within the store's timeout.
type Store interface {
	// Backend is BackendMemory or BackendRedis.
	Backend() string
	// Put stores value under key for ttl (zero: no expiry), gives it the next
	// version, and sends a notice of it to every Watch, this replica's
	// included. It returns the version.
	Put(ctx context.Context, key string, value []byte, ttl time.Duration) (int64, error)
	// Get returns the entries of the keys that exist, in the order asked;
	// missing or expired keys are left out.
	Get(ctx context.Context, keys ...string) ([]Entry, error)
	// Version returns the last version Put gave (0 for an empty store; a
	// value lower than one seen before means the store lost its data).
	Version(ctx context.Context) (int64, error)
	// Watch calls fn with every entry Put from now on, until ctx ends or the
	// store is closed; fn runs on Watch's goroutine and must be quick.
	// Notices may be lost (a dropped connection): use Version and Get to
	// catch up. It returns nil when ctx ends.
	Watch(ctx context.Context, fn func(Entry)) error
	// Lock takes the lock key for ttl and returns its owner token, or
	// ErrLocked while another owner holds it.
	Lock(ctx context.Context, key string, ttl time.Duration) (token string, err error)
	// Unlock releases the lock key if token still owns it; otherwise it
	// returns ErrNotOwner and leaves the lock alone.
	Unlock(ctx context.Context, key, token string) error
	// Close releases the store's connections.
	Close() error
}
