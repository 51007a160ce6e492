package gateway

import (
	"context"
	"errors"
	"sort"
	"testing"
	"time"
)

func errorsAs(err error, target any) bool { return err != nil && errors.As(err, target) }

// waitFor polls cond until it holds or ctx ends; it is for state another
// goroutine changes with no signal to wait on.
func waitFor(t *testing.T, ctx context.Context, cond func() bool) {
	t.Helper()
	for !cond() {
		select {
		case <-ctx.Done():
			t.Fatal("condition never held")
		case <-time.After(time.Millisecond):
		}
	}
}

func sortedCopy(s []string) []string {
	out := append([]string(nil), s...)
	sort.Strings(out)
	return out
}

// TestDrainForgetsDroppedNotifications: a notification counted as read but
// never handled holds up one call at most, not every later one.
func TestDrainForgetsDroppedNotifications(t *testing.T) {
	t.Parallel()
	var n noteCounter
	n.read.Add(3)
	n.handled.Add(2) // one was dropped before any handler
	n.drain(t.Context())
	if r, h := n.read.Load(), n.handled.Load(); r != h {
		t.Fatalf("after drain read=%d handled=%d, want them level", r, h)
	}
	// The next call does not wait.
	n.drain(t.Context())
}
