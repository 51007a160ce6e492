package main

import (
	"bytes"
	"io"
	"sync"
	"time"
)

// logSink writes the gateway's JSON log lines in batches (issue 12). A
// gateway logs a line per call (the audit line); written one by one, that
// is a write system call per call on the call's goroutine, and a wake-up of
// whatever reads the log (journald, a pipe) per call. Here info and debug
// lines wait up to logFlushDelay, or until logFlushBytes have gathered, and
// go out together; a warning or worse goes out at once, with everything
// before it. Order is kept and nothing is dropped; past maxPending bytes
// waiting, callers wait for the writer. Close writes what is left (the
// binary closes the sink before it exits); a crash can lose the info lines
// of its last logFlushDelay.
type logSink struct {
	out io.Writer

	mu      sync.Mutex
	drained sync.Cond // signalled when the writer takes the buffer or stops
	buf     []byte
	spare   []byte
	writing bool // a goroutine is writing (see flush)
	armed   bool // a delayed flush is due
}

const (
	logFlushDelay = 50 * time.Millisecond
	logFlushBytes = 64 << 10
	maxPending    = 1 << 20
)

func newLogSink(out io.Writer) *logSink {
	s := &logSink{out: out}
	s.drained.L = &s.mu
	return s
}

// routine reports whether a zerolog JSON line may wait: info and debug.
func routine(p []byte) bool {
	return bytes.HasPrefix(p, []byte(`{"level":"info"`)) || bytes.HasPrefix(p, []byte(`{"level":"debug"`))
}

func (s *logSink) Write(p []byte) (int, error) {
	s.mu.Lock()
	for len(s.buf) >= maxPending {
		s.drained.Wait()
	}
	s.buf = append(s.buf, p...)
	now := !routine(p) || len(s.buf) >= logFlushBytes
	if !now && !s.armed {
		s.armed = true
		time.AfterFunc(logFlushDelay, func() { _ = s.flush() })
	}
	s.mu.Unlock()
	if now {
		if err := s.flush(); err != nil {
			return len(p), err
		}
	}
	return len(p), nil
}

// flush writes what is waiting. One goroutine writes at a time, and keeps
// writing what others append meanwhile; a flush that finds a writer at work
// leaves its lines to it.
func (s *logSink) flush() error {
	s.mu.Lock()
	s.armed = false
	if s.writing {
		s.mu.Unlock()
		return nil
	}
	s.writing = true
	var err error
	for len(s.buf) > 0 {
		b := s.buf
		s.buf, s.spare = s.spare[:0], nil
		s.drained.Broadcast()
		s.mu.Unlock()
		if _, werr := s.out.Write(b); err == nil {
			err = werr
		}
		s.mu.Lock()
		if cap(b) <= maxPending {
			s.spare = b[:0]
		}
	}
	s.writing = false
	s.drained.Broadcast()
	s.mu.Unlock()
	return err
}

// Close writes what is waiting, after any write in progress.
func (s *logSink) Close() error {
	s.mu.Lock()
	for s.writing {
		s.drained.Wait()
	}
	s.mu.Unlock()
	return s.flush()
}
