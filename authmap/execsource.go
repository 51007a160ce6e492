package authmap

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"
)

// maxStderr bounds the stderr kept from an exec source's command.
const maxStderr = 4 << 10

// maxStderrInError bounds how much of that stderr goes into an error.
const maxStderrInError = 300

// ExecSource runs a command for the value (source.exec). It is re-run on every
// fetch: at a refresh, a reload and after a live rejection.
type ExecSource struct {
	cfg ExecConfig
}

// NewExecSource returns the source of source.exec.
func NewExecSource(cfg ExecConfig) *ExecSource {
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultExecTimeout
	}
	return &ExecSource{cfg: cfg}
}

// Kind returns "exec".
func (s *ExecSource) Kind() string { return KindExec }

// Fetch runs the command. A token with an expiry (JSON expires_at) is
// Renewable: the watch re-runs the command refresh_before it expires. The
// command gets the gateway's environment and runs in a
// process group of its own, so that on timeout the command and everything it
// started are killed. stdout is the value (bounded to 1 MiB), or JSON read as
// json_field says; stderr (bounded, redacted) goes into errors. Only the
// program's name appears in errors: arguments may carry secrets.
func (s *ExecSource) Fetch(ctx context.Context) (Token, error) {
	name := s.cfg.Command[0]
	ctx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, s.cfg.Command[1:]...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	cmd.Cancel = func() error {
		// Negative pid: the whole group (Setpgid made the command its leader).
		return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	}
	// Should something outside the group still hold the pipes, Wait gives up.
	cmd.WaitDelay = time.Second
	stdout := &boundedBuffer{limit: maxSecretFile}
	stderr := &boundedBuffer{limit: maxStderr}
	cmd.Stdout, cmd.Stderr = stdout, stderr
	err := cmd.Run()
	if errors.Is(err, exec.ErrWaitDelay) {
		// The command exited 0 and printed its value, but left something
		// in its group holding the pipes (a helper started with &): that
		// is not a failure, and what it left goes with it. The group
		// still exists (it holds the pipes), so its id is not reused yet.
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		err = nil
	}
	out := stdout.bytes()
	if err != nil {
		var what string
		switch {
		case ctx.Err() == context.DeadlineExceeded:
			what = fmt.Sprintf("timed out after %s", s.cfg.Timeout)
		case errors.Is(err, exec.ErrNotFound):
			return Token{}, fmt.Errorf("exec %s: %w", name, err)
		default:
			what = err.Error()
		}
		msg := fmt.Sprintf("exec %s: %s", name, what)
		if e := s.stderrText(stderr.bytes(), out); e != "" {
			msg += " (stderr: " + e + ")"
		}
		return Token{}, errors.New(msg)
	}
	if stdout.overflow {
		return Token{}, fmt.Errorf("exec %s: stdout larger than %d bytes", name, maxSecretFile)
	}
	tok, err := parseTokenText(out, s.cfg.JSONField, "exec "+name+" stdout")
	if err != nil {
		return Token{}, err
	}
	// A command that reports an expiry mints tokens (gcloud auth
	// print-access-token, az account get-access-token, a vault or sts CLI):
	// re-running it before the expiry renews the credential.
	tok.Renewable = !tok.ExpiresAt.IsZero()
	return tok, nil
}

// stderrText is stderr fit for an error: redacted (whatever stdout printed
// counts as a secret), on one line, bounded.
func (s *ExecSource) stderrText(stderr, stdout []byte) string {
	var known []string
	if v := strings.TrimSpace(string(stdout)); v != "" {
		known = append(known, v)
	}
	t := Redact(strings.ToValidUTF8(string(stderr), ""), known)
	t = strings.Join(strings.Fields(t), " ")
	if len(t) > maxStderrInError {
		t = t[:maxStderrInError] + "…"
	}
	return t
}

// boundedBuffer keeps the first limit bytes written and drops the rest, never
// failing a write (a failed write would make the command see EPIPE).
type boundedBuffer struct {
	mu       sync.Mutex
	buf      []byte
	limit    int
	overflow bool
}

func (b *boundedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	room := b.limit - len(b.buf)
	if len(p) > room {
		b.overflow = true
		if room > 0 {
			b.buf = append(b.buf, p[:room]...)
		}
		return len(p), nil
	}
	b.buf = append(b.buf, p...)
	return len(p), nil
}

func (b *boundedBuffer) bytes() []byte {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf
}
