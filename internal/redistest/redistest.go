// Package redistest starts real Redis servers for tests: Debian's
// redis-server, on a Unix socket in a temporary directory (no TCP port, so
// nothing to collide with), without persistence. The Makefile installs the
// package when it is missing; a test without it skips.
package redistest

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Server is a running redis-server.
type Server struct {
	Socket string // the Unix socket path
	URL    string // unix://<Socket>

	t    testing.TB
	dir  string
	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{}
}

// Start starts a redis-server for t and stops it at cleanup. It skips t
// when redis-server is not installed (`make test` installs it).
func Start(t testing.TB) *Server {
	t.Helper()
	if _, err := exec.LookPath("redis-server"); err != nil {
		t.Skip("redis-server is not installed (apt-get install redis-server; `make test` does it)")
	}
	dir, err := os.MkdirTemp("", "credgate-redis-")
	if err != nil {
		t.Fatal(err)
	}
	s := &Server{t: t, dir: dir, Socket: filepath.Join(dir, "redis.sock")}
	s.URL = "unix://" + s.Socket
	t.Cleanup(func() {
		s.Stop()
		_ = os.RemoveAll(dir)
	})
	s.Restart()
	return s
}

// Restart starts the server again after Stop, on the same socket, empty.
func (s *Server) Restart() {
	s.t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd != nil {
		s.t.Fatal("redistest: Restart while running")
	}
	cmd := exec.Command("redis-server", "--port", "0", "--unixsocket", s.Socket, "--unixsocketperm", "700",
		"--save", "", "--appendonly", "no", "--dir", s.dir, "--loglevel", "notice")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		s.t.Fatal(err)
	}
	cmd.Stderr = cmd.Stdout
	if err := cmd.Start(); err != nil {
		s.t.Fatalf("redistest: start redis-server: %v", err)
	}
	ready := make(chan struct{})
	out := &strings.Builder{}
	var outMu sync.Mutex
	done := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(stdout)
		once := sync.Once{}
		for sc.Scan() {
			outMu.Lock()
			out.WriteString(sc.Text() + "\n")
			outMu.Unlock()
			if strings.Contains(strings.ToLower(sc.Text()), "ready to accept connections") {
				once.Do(func() { close(ready) })
			}
		}
		_ = cmd.Wait()
		close(done)
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	select {
	case <-ready:
	case <-done:
		outMu.Lock()
		defer outMu.Unlock()
		s.t.Fatalf("redistest: redis-server exited:\n%s", out.String())
	case <-ctx.Done():
		_ = cmd.Process.Kill()
		s.t.Fatalf("redistest: redis-server not ready in time")
	}
	s.cmd, s.done = cmd, done
}

// Stop stops the server (SIGTERM, then SIGKILL after 5s) and waits for it.
func (s *Server) Stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil {
		return
	}
	_ = syscall.Kill(-s.cmd.Process.Pid, syscall.SIGTERM)
	select {
	case <-s.done:
	case <-time.After(5 * time.Second):
		_ = syscall.Kill(-s.cmd.Process.Pid, syscall.SIGKILL)
		<-s.done
	}
	s.cmd = nil
	_ = os.Remove(s.Socket)
}

// Prefix returns a key prefix of its own for one test: "t-<name>-<random>:".
func Prefix(t testing.TB) string {
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	name := strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' {
			return r
		}
		return '-'
	}, t.Name())
	return fmt.Sprintf("t-%.40s-%s:", name, hex.EncodeToString(b))
}
