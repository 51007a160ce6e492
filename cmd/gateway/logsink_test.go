package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"testing/synctest"
	"time"

	"github.com/rs/zerolog"
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

// state returns what was written and in how many writes.
func (l *sinkBuffer) state() (string, int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String(), l.n
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

// TestLogSinkHoldsInfoNotWarnings checks when lines go out: info lines
// together, logFlushDelay after the first; a warning at once, with the
// info lines before it, on its caller's goroutine.
func TestLogSinkHoldsInfoNotWarnings(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var out sinkBuffer
		s := newLogSink(&out)
		_, _ = s.WriteLevel(zerolog.InfoLevel, []byte("a\n"))
		_, _ = s.Write([]byte("b\n"))
		if got, _ := out.state(); got != "" {
			t.Fatalf("info lines written at once: %q", got)
		}
		time.Sleep(logFlushDelay)
		synctest.Wait()
		if got, n := out.state(); got != "a\nb\n" || n != 1 {
			t.Fatalf("after %v: %q in %d writes; want \"a\\nb\\n\" in 1", logFlushDelay, got, n)
		}
		_, _ = s.WriteLevel(zerolog.InfoLevel, []byte("c\n"))
		_, _ = s.WriteLevel(zerolog.WarnLevel, []byte("d\n"))
		if got, _ := out.state(); got != "a\nb\nc\nd\n" {
			t.Fatalf("a warning did not go out at once with the line before it: %q", got)
		}
		_, _ = s.WriteLevel(zerolog.DebugLevel, []byte("e\n"))
		err := s.Close()
		if got, _ := out.state(); err != nil || got != "a\nb\nc\nd\ne\n" {
			t.Fatalf("Close left %q (%v)", got, err)
		}
	})
}

// TestSecondSignalWritesHeldLines: a second SIGTERM during a graceful
// shutdown ends the process by that signal, as by default, but writes the
// log lines the sink held first (review of issue 12: they were lost). The
// test runs itself as the process that gets the signal.
func TestSecondSignalWritesHeldLines(t *testing.T) {
	if os.Getenv("CREDGATE_SECOND_SIGNAL") == "1" {
		sink := newLogSink(os.Stderr)
		_, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
		secondSignal(stop, sink, make(chan struct{}))
		log := zerolog.New(sink)
		log.Info().Msg("the last line before the second signal")
		_ = syscall.Kill(os.Getpid(), syscall.SIGTERM)
		select {} // until the signal ends the process
	}
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestSecondSignalWritesHeldLines$")
	cmd.Env = append(os.Environ(), "CREDGATE_SECOND_SIGNAL=1")
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGTERM {
		t.Fatalf("the process ended with %v; want killed by SIGTERM\n%s", err, out)
	}
	if !strings.Contains(string(out), "the last line before the second signal") {
		t.Errorf("the held line was lost:\n%s", out)
	}
}
