package main

import (
	"io"
	"sync"
)

// logSink writes the gateway's log lines in batches (issue 12). A gateway
// logs a line per call (the audit line); written one by one, that is a
// write system call per call on the hot path, and a wake-up of whatever
// reads the pipe. Here a call appends its line to a buffer and wakes one
// writer goroutine, which writes everything gathered since its last write
// at once: under load, many lines per system call; idle, each line goes out
// as soon as the writer runs. Order is kept, nothing is dropped, and memory
// is bounded: past maxPending bytes, a caller writes the backlog itself.
//
// Close writes what is left; a line logged during a crash may be lost.
type logSink struct {
	out io.Writer

	mu      sync.Mutex
	buf     []byte
	closed  bool
	writeMu sync.Mutex // held while writing to out, so batches never interleave

	kick chan struct{} // a line is waiting
	done chan struct{} // the writer has returned
}

// maxPending bounds the bytes waiting for the writer.
const maxPending = 1 << 20

func newLogSink(out io.Writer) *logSink {
	s := &logSink{out: out, kick: make(chan struct{}, 1), done: make(chan struct{})}
	go s.run()
	return s
}

func (s *logSink) Write(p []byte) (int, error) {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		s.writeMu.Lock()
		defer s.writeMu.Unlock()
		return s.out.Write(p)
	}
	s.buf = append(s.buf, p...)
	full := len(s.buf) >= maxPending
	if !full {
		select {
		case s.kick <- struct{}{}:
		default: // the writer is already due to run
		}
	}
	s.mu.Unlock()
	if full {
		s.flush()
	}
	return len(p), nil
}

func (s *logSink) run() {
	defer close(s.done)
	for range s.kick {
		s.flush()
	}
}

// flush writes what is waiting.
func (s *logSink) flush() {
	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	s.mu.Lock()
	b := s.buf
	s.buf = nil
	s.mu.Unlock()
	if len(b) > 0 {
		_, _ = s.out.Write(b)
	}
}

// Close writes what is waiting and stops the writer; later lines are
// written directly.
func (s *logSink) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	close(s.kick)
	s.mu.Unlock()
	<-s.done
	s.flush()
	return nil
}
