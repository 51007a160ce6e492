package main

import (
	"math"
	"slices"
	"time"
)

// stats summarises a sample of durations. The zero value is an empty sample.
type stats struct {
	sorted []time.Duration
}

func newStats(samples []time.Duration) stats {
	s := slices.Clone(samples)
	slices.Sort(s)
	return stats{sorted: s}
}

func (s stats) count() int { return len(s.sorted) }

// percentile returns the nearest-rank p-th percentile (0 < p <= 100),
// or 0 for an empty sample.
func (s stats) percentile(p float64) time.Duration {
	if len(s.sorted) == 0 {
		return 0
	}
	rank := int(math.Ceil(p / 100 * float64(len(s.sorted))))
	return s.sorted[min(max(rank, 1), len(s.sorted))-1]
}

func (s stats) median() time.Duration { return s.percentile(50) }

// ms converts a duration to fractional milliseconds for reports.
func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
