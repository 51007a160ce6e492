package main

import (
	"io"
	"sync"
)

// logSink writes the gateway's log lines in batches (issue 12). A gateway
// logs a line per call (the audit line); written one by one under load,
// that is a write system call per call, and a wake-up of whatever reads the
// pipe. Here the first caller to log while no write is in progress writes
// its line itself, and keeps writing what other callers appended meanwhile
// until nothing is left; the others only append and return. Idle, a line
// goes out at once, on its caller's goroutine (no hand-off); under load,
// many lines go out per system call. Order is kept and nothing is dropped;
// past maxPending bytes waiting, callers wait for the writer.
type logSink struct {
	out io.Writer

	mu      sync.Mutex
	drained sync.Cond // signalled when the writer takes the buffer
	buf     []byte
	spare   []byte
	writing bool
}

// maxPending bounds the bytes waiting for the writer.
const maxPending = 1 << 20

func newLogSink(out io.Writer) *logSink {
	s := &logSink{out: out}
	s.drained.L = &s.mu
	return s
}

func (s *logSink) Write(p []byte) (int, error) {
	s.mu.Lock()
	for s.writing && len(s.buf) >= maxPending {
		s.drained.Wait()
	}
	s.buf = append(s.buf, p...)
	if s.writing {
		s.mu.Unlock()
		return len(p), nil
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
	s.mu.Unlock()
	return len(p), err
}

// Close waits for a write in progress; nothing else is ever held back.
func (s *logSink) Close() error {
	s.mu.Lock()
	for s.writing {
		s.drained.Wait()
	}
	s.mu.Unlock()
	return nil
}
