package main

import (
	"io"
	"sync"
	"time"

	"github.com/rs/zerolog"
)

// logSink writes the gateway's log lines in batches (issue 12). A gateway
// logs a line per call (the audit line); written one by one, that is a
// write system call per call on the call's own goroutine, before its
// answer goes out, and a wake-up of whatever reads the pipe. Here an info
// or debug line is appended to a buffer that goes out logFlushDelay after
// the first line in it (or at once past logFlushBytes): under load, many
// lines per system call, none on a call's way. A warning or an error is
// written at once, with what waits before it, on its caller's goroutine, so
// that what matters is never held. Order is kept and nothing is dropped;
// past maxPending bytes waiting, callers wait for the writer; Close writes
// what is left.
type logSink struct {
	out io.Writer

	mu      sync.Mutex
	drained sync.Cond // signalled when the writer takes the buffer
	buf     []byte
	spare   []byte
	writing bool
	due     *time.Timer // set while a flush of buf is scheduled
	closed  bool
}

const (
	// maxPending bounds the bytes waiting for the writer.
	maxPending = 1 << 20
	// logFlushDelay is how long an info line may wait for others.
	logFlushDelay = 5 * time.Millisecond
	// logFlushBytes is how much may wait before it is written at once.
	logFlushBytes = 64 << 10
)

func newLogSink(out io.Writer) *logSink {
	s := &logSink{out: out}
	s.drained.L = &s.mu
	return s
}

// Write appends p as an info line.
func (s *logSink) Write(p []byte) (int, error) { return s.WriteLevel(zerolog.InfoLevel, p) }

// WriteLevel implements zerolog.LevelWriter.
func (s *logSink) WriteLevel(level zerolog.Level, p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for s.writing && len(s.buf) >= maxPending {
		s.drained.Wait()
	}
	s.buf = append(s.buf, p...)
	if s.closed || level >= zerolog.WarnLevel || len(s.buf) >= logFlushBytes {
		return len(p), s.flush()
	}
	if s.due == nil && !s.writing {
		s.due = time.AfterFunc(logFlushDelay, s.flushDue)
	}
	return len(p), nil
}

func (s *logSink) flushDue() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.due = nil
	_ = s.flush()
}

// flush writes buf until nothing is left, unless a write is in progress,
// whose writer will take what was appended. s.mu is held, and released
// while writing.
func (s *logSink) flush() error {
	if s.writing {
		return nil
	}
	if s.due != nil {
		s.due.Stop()
		s.due = nil
	}
	s.writing = true
	var err error
	for len(s.buf) > 0 {
		b := s.buf
		s.buf, s.spare = s.spare[:0], nil
		s.drained.Broadcast()
		s.mu.Unlock()
		_, werr := s.out.Write(b)
		if err == nil {
			err = werr
		}
		s.mu.Lock()
		if cap(b) <= maxPending {
			s.spare = b[:0]
		}
	}
	s.writing = false
	s.drained.Broadcast()
	return err
}

// Close writes what waits, after a write in progress; later lines are
// written at once.
func (s *logSink) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	for s.writing {
		s.drained.Wait()
	}
	return s.flush()
}
