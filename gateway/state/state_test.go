package state_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/credgate/credgate/gateway/state"
	"github.com/credgate/credgate/internal/redistest"
)

// stores runs f against each backend: the in-memory store and a real
// redis-server of the test's own.
func stores(t *testing.T, f func(t *testing.T, newStore func() state.Store)) {
	t.Run("memory", func(t *testing.T) {
		t.Parallel()
		m := state.NewMemory()
		f(t, func() state.Store { return m })
	})
	t.Run("redis", func(t *testing.T) {
		t.Parallel()
		srv := redistest.Start(t)
		prefix := redistest.Prefix(t)
		f(t, func() state.Store {
			s, err := state.NewRedis(&state.RedisConfig{URL: srv.URL, KeyPrefix: prefix, Timeout: time.Second})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = s.Close() })
			return s
		})
	})
}

func TestStorePutGetVersion(t *testing.T) {
	t.Parallel()
	stores(t, func(t *testing.T, newStore func() state.Store) {
		ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
		defer cancel()
		a, b := newStore(), newStore()
		if v, err := a.Version(ctx); err != nil || v != 0 {
			t.Fatalf("Version of an empty store = %d, %v; want 0", v, err)
		}
		v1, err := a.Put(ctx, "cred:api", []byte(`{"status":"revoked"}`), time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		v2, err := b.Put(ctx, "breaker:up", []byte("x y\nz"), 0)
		if err != nil {
			t.Fatal(err)
		}
		if v2 != v1+1 {
			t.Errorf("versions %d then %d; want consecutive", v1, v2)
		}
		got, err := b.Get(ctx, "breaker:up", "missing", "cred:api")
		if err != nil {
			t.Fatal(err)
		}
		want := []state.Entry{{Key: "breaker:up", Version: v2, Value: []byte("x y\nz")}, {Key: "cred:api", Version: v1, Value: []byte(`{"status":"revoked"}`)}}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("Get mismatch (-want +got):\n%s", diff)
		}
		if v, _ := b.Version(ctx); v != v2 {
			t.Errorf("Version = %d, want %d", v, v2)
		}
	})
}

func TestStoreTTL(t *testing.T) {
	t.Parallel()
	stores(t, func(t *testing.T, newStore func() state.Store) {
		ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
		defer cancel()
		s := newStore()
		if _, err := s.Put(ctx, "short", []byte("v"), 50*time.Millisecond); err != nil {
			t.Fatal(err)
		}
		// Expiry is the store's own clock: poll until the key is gone.
		for {
			got, err := s.Get(ctx, "short")
			if err != nil {
				t.Fatal(err)
			}
			if len(got) == 0 {
				return
			}
			select {
			case <-ctx.Done():
				t.Fatal("a key with a 50ms TTL never expired")
			case <-time.After(20 * time.Millisecond): // polling the store's clock
			}
		}
	})
}

func TestStoreWatch(t *testing.T) {
	t.Parallel()
	stores(t, func(t *testing.T, newStore func() state.Store) {
		ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
		defer cancel()
		a, b := newStore(), newStore()
		got := make(chan state.Entry, 10)
		wctx, stop := context.WithCancel(ctx)
		var wg sync.WaitGroup
		wg.Go(func() { _ = b.Watch(wctx, func(e state.Entry) { got <- e }) })
		defer func() { stop(); wg.Wait() }()
		// A subscription starts asynchronously: put until a notice arrives.
		var first state.Entry
		for first.Key == "" {
			if _, err := a.Put(ctx, "probe", []byte("p"), time.Minute); err != nil {
				t.Fatal(err)
			}
			select {
			case first = <-got:
			case <-time.After(50 * time.Millisecond): // polling the subscription
			case <-ctx.Done():
				t.Fatal("no notice")
			}
		}
		v, err := a.Put(ctx, "reload:api", []byte("webhook"), time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		for {
			select {
			case e := <-got:
				if e.Key == "probe" {
					continue
				}
				if diff := cmp.Diff(state.Entry{Key: "reload:api", Version: v, Value: []byte("webhook")}, e); diff != "" {
					t.Errorf("notice mismatch (-want +got):\n%s", diff)
				}
				return
			case <-ctx.Done():
				t.Fatal("no notice of the put")
			}
		}
	})
}

func TestStoreLock(t *testing.T) {
	t.Parallel()
	stores(t, func(t *testing.T, newStore func() state.Store) {
		ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
		defer cancel()
		a, b := newStore(), newStore()
		tokA, err := a.Lock(ctx, "lock:api", time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := b.Lock(ctx, "lock:api", time.Minute); !errors.Is(err, state.ErrLocked) {
			t.Fatalf("second Lock = %v, want ErrLocked", err)
		}
		if err := b.Unlock(ctx, "lock:api", "not-the-owner"); !errors.Is(err, state.ErrNotOwner) {
			t.Fatalf("Unlock by a stranger = %v, want ErrNotOwner", err)
		}
		if err := a.Unlock(ctx, "lock:api", tokA); err != nil {
			t.Fatalf("Unlock by its owner: %v", err)
		}
		tokB, err := b.Lock(ctx, "lock:api", 50*time.Millisecond)
		if err != nil {
			t.Fatalf("Lock after release: %v", err)
		}
		// The lock expires; a new owner takes it, and the old owner's
		// late Unlock must not release the new owner's lock.
		var tokC string
		for {
			tokC, err = a.Lock(ctx, "lock:api", time.Minute)
			if err == nil {
				break
			}
			if !errors.Is(err, state.ErrLocked) {
				t.Fatal(err)
			}
			select {
			case <-ctx.Done():
				t.Fatal("an expired lock was never free again")
			case <-time.After(20 * time.Millisecond): // polling the store's clock
			}
		}
		if err := b.Unlock(ctx, "lock:api", tokB); !errors.Is(err, state.ErrNotOwner) {
			t.Errorf("late Unlock by the expired owner = %v, want ErrNotOwner", err)
		}
		if _, err := b.Lock(ctx, "lock:api", time.Minute); !errors.Is(err, state.ErrLocked) {
			t.Errorf("the new owner's lock was released by the old owner")
		}
		_ = a.Unlock(ctx, "lock:api", tokC)
	})
}

// TestRedisOutageBounded: with the server gone, every operation fails
// within the timeout, and works again once the server is back.
func TestRedisOutageBounded(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	s, err := state.NewRedis(&state.RedisConfig{URL: srv.URL, KeyPrefix: redistest.Prefix(t), Timeout: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	// The first put dials and loads the script within the 200ms timeout,
	// which a loaded machine can use up: retried, as after the restart.
	if err := pollOK(ctx, func() error { _, err := s.Put(ctx, "k", []byte("v"), 0); return err }); err != nil {
		t.Fatal(err)
	}
	srv.Stop()
	for _, op := range []struct {
		name string
		f    func() error
	}{
		{"put", func() error { _, err := s.Put(ctx, "k", []byte("v"), 0); return err }},
		{"get", func() error { _, err := s.Get(ctx, "k"); return err }},
		{"version", func() error { _, err := s.Version(ctx); return err }},
		{"lock", func() error { _, err := s.Lock(ctx, "l", time.Second); return err }},
	} {
		start := time.Now()
		err := op.f()
		if err == nil {
			t.Errorf("%s with the server stopped: no error", op.name)
		}
		// The bound itself, with room for a loaded machine's scheduling.
		if d := time.Since(start); d > 2*time.Second {
			t.Errorf("%s took %s with the server stopped; want about the 200ms timeout", op.name, d)
		}
	}
	srv.Restart()
	if err := pollOK(ctx, func() error { _, err := s.Put(ctx, "k", []byte("v"), 0); return err }); err != nil {
		t.Fatalf("put after the server came back: %v", err)
	}
}

func pollOK(ctx context.Context, f func() error) error {
	for {
		err := f()
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(25 * time.Millisecond): // polling an external process
		}
	}
}

func TestSealer(t *testing.T) {
	t.Parallel()
	s, err := state.NewSealer("0123456789abcdef-key")
	if err != nil {
		t.Fatal(err)
	}
	sealed, err := s.Seal("tokens:api", []byte("refresh-token-secret"))
	if err != nil {
		t.Fatal(err)
	}
	if string(sealed) == "refresh-token-secret" || len(sealed) < 28 {
		t.Fatal("Seal did not encrypt")
	}
	plain, err := s.Open("tokens:api", sealed)
	if err != nil || string(plain) != "refresh-token-secret" {
		t.Fatalf("Open = %q, %v", plain, err)
	}
	if _, err := s.Open("tokens:other", sealed); !errors.Is(err, state.ErrOpen) {
		t.Errorf("Open under another key = %v, want ErrOpen", err)
	}
	other, _ := state.NewSealer("another-key-of-16-bytes")
	if _, err := other.Open("tokens:api", sealed); !errors.Is(err, state.ErrOpen) {
		t.Errorf("Open with another encryption key = %v, want ErrOpen", err)
	}
	if s.Fingerprint("tok") == other.Fingerprint("tok") || s.Fingerprint("tok") != s.Fingerprint("tok") || len(s.Fingerprint("tok")) != 32 {
		t.Errorf("fingerprints: keyed, stable, 32 hex digits")
	}
	if _, err := state.NewSealer("short"); err == nil {
		t.Errorf("a 5-byte key was accepted")
	}
	none, _ := state.NewSealer("")
	if none.CanSeal() {
		t.Errorf("a sealer without a key can seal")
	}
}
