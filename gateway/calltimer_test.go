package gateway

import (
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"
)

// TestCallTimerCountsUpstreamTimeOnly: a call's timeout counts the
// upstream's time, not its waits for the agent: 150 ms of work, a 100 ms
// wait, then silence expire the 200 ms timeout at 300 ms (a review found
// 460 ms: the first version put it off by a whole timeout while the agent
// was being asked). A long wait does not wake the timer in a loop, and a
// stopped timer never expires.
func TestCallTimerCountsUpstreamTimeOnly(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		start := time.Now()
		c := &inflight{}
		var at atomic.Int64
		ct := newCallTimer(200*time.Millisecond, c, func() { at.Store(int64(time.Since(start))) })
		time.Sleep(150 * time.Millisecond)
		end := c.askingAgent()
		time.Sleep(100 * time.Millisecond)
		end()
		time.Sleep(time.Second)
		if got := time.Duration(at.Load()); got != 300*time.Millisecond {
			t.Errorf("expired after %s; want 300ms (200ms of the upstream's time and the 100ms wait)", got)
		}
		ct.Stop()

		// The upstream used 190 ms, then waits 10 minutes for the agent.
		start = time.Now()
		at.Store(0)
		c = &inflight{}
		ct = newCallTimer(200*time.Millisecond, c, func() { at.Store(int64(time.Since(start))) })
		time.Sleep(190 * time.Millisecond)
		end = c.askingAgent()
		time.Sleep(10 * time.Minute)
		if got := at.Load(); got != 0 {
			t.Errorf("expired at %s while the agent was asked", time.Duration(got))
		}
		end()
		time.Sleep(time.Second)
		if want := 10*time.Minute + 200*time.Millisecond; time.Duration(at.Load()) != want {
			t.Errorf("expired after %s; want %s", time.Duration(at.Load()), want)
		}

		at.Store(0)
		ct = newCallTimer(200*time.Millisecond, &inflight{}, func() { at.Store(1) })
		ct.Stop()
		time.Sleep(time.Second)
		if at.Load() != 0 {
			t.Error("a stopped timer expired")
		}
	})
}
