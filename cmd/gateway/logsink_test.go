package main

import (
	"bytes"
	"fmt"
	"strings"
	"sync"
	"testing"
)

// sinkBuffer is a bytes.Buffer safe for the sink's writer and the test.
type sinkBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
	n  int // writes
}

func (l *sinkBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.n++
	return l.b.Write(p)
}

// TestLogSinkKeepsEveryLineInOrder checks the batching log writer (issue
// 12): lines from many goroutines all arrive, whole, each goroutine's in
// order, and Close leaves nothing behind; a write after Close goes straight
// through.
func TestLogSinkKeepsEveryLineInOrder(t *testing.T) {
	t.Parallel()
	var out sinkBuffer
	s := newLogSink(&out)
	const writers, lines = 8, 500
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			for i := range lines {
				fmt.Fprintf(s, "w%d %d %s\n", w, i, strings.Repeat("x", i%300))
			}
		})
	}
	wg.Wait()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(s, "after close\n")
	got := strings.Split(strings.TrimSuffix(out.b.String(), "\n"), "\n")
	if len(got) != writers*lines+1 || got[len(got)-1] != "after close" {
		t.Fatalf("%d lines, last %q; want %d, then \"after close\"", len(got), got[len(got)-1], writers*lines+1)
	}
	next := make([]int, writers)
	for _, l := range got[:len(got)-1] {
		var w, i int
		if _, err := fmt.Sscanf(l, "w%d %d", &w, &i); err != nil || i != next[w] || len(l) != len(fmt.Sprintf("w%d %d ", w, i))+i%300 {
			t.Fatalf("line %q out of order or torn (want w%d %d)", l, w, next[w])
		}
		next[w]++
	}
}

// TestLogSinkBounded checks that a backlog past maxPending is written by
// the caller rather than held.
func TestLogSinkBounded(t *testing.T) {
	t.Parallel()
	var out sinkBuffer
	s := newLogSink(&out)
	defer s.Close()
	big := bytes.Repeat([]byte("y"), maxPending)
	if _, err := s.Write(big); err != nil {
		t.Fatal(err)
	}
	s.mu.Lock()
	pending := len(s.buf)
	s.mu.Unlock()
	if pending != 0 {
		t.Errorf("%d bytes still pending after a write of maxPending; want them written", pending)
	}
}
