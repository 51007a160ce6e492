package main

import (
	"bytes"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
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

// TestLogSinkBounded checks that callers wait rather than let the backlog
// pass maxPending while a write is slow.
func TestLogSinkBounded(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	entered := make(chan struct{}, 1)
	out := &slowWriter{release: release, entered: entered}
	s := newLogSink(out)
	go func() { _, _ = s.Write([]byte("first\n")) }()
	<-entered // the first write is in progress, held
	big := bytes.Repeat([]byte("y"), maxPending)
	done := make(chan struct{})
	go func() {
		_, _ = s.Write(big)         // appended: the backlog is now maxPending
		_, _ = s.Write([]byte("z")) // must wait for the writer
		close(done)
	}()
	select {
	case <-done:
		t.Fatal("a write past maxPending did not wait for the writer")
	default:
	}
	close(release)
	<-done
	_ = s.Close()
	if got := out.n.Load(); got != int64(len("first\n")+maxPending+1) {
		t.Errorf("%d bytes written; want %d", got, len("first\n")+maxPending+1)
	}
}

// slowWriter holds its writes until release is closed.
type slowWriter struct {
	release chan struct{}
	entered chan struct{}
	n       atomic.Int64
}

func (w *slowWriter) Write(p []byte) (int, error) {
	select {
	case w.entered <- struct{}{}:
	default:
	}
	<-w.release
	w.n.Add(int64(len(p)))
	return len(p), nil
}
