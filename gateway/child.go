// A stdio upstream's child process: its command, environment and stderr.

package gateway

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"
	"unicode"

	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// command builds the child process of a stdio upstream. The child gets a
// minimal environment plus the upstream's env, its stderr goes to our log with
// the upstream's name, and it runs under a supervisor (see supervise.go) that
// ends its whole process group when it exits or the gateway dies, however
// the gateway dies. shared is set for the shared session's child, whose
// stderr health reports. started is called once the child has started.
// opened, if set, is given the connection to the child once it started.
func (u *upstream) command(shared bool, credEnv map[string]string, opened func(*stdioConn)) (t mcp.Transport, child *childStderr, started func()) {
	cmd := exec.Command(u.cfg.Command, u.cfg.Args...)
	cmd.Dir = u.cfg.Cwd
	env := u.cfg.Env
	if len(credEnv) > 0 {
		env = make(map[string]string, len(u.cfg.Env)+len(credEnv))
		for k, v := range u.cfg.Env {
			env[k] = v
		}
		for k, v := range credEnv {
			env[k] = v
		}
	}
	cmd.Env = childEnv(os.Environ(), env)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
	// The child's stdout is bounded line by line (max_response_bytes).
	t = limitedCommand{CommandTransport: &mcp.CommandTransport{Command: cmd, TerminateDuration: childTerminate}, lim: u.limit, opened: opened}
	if cmd.Err == nil { // a command not found fails at Start, as exec reports it
		if st, err := supervised(cmd, childTerminate/2, u.limit, opened); err == nil {
			t = st
		} else {
			u.log.Warn().Str(fieldErr, err.Error()).Msg("running the child without a supervisor: its process group may outlive the gateway")
		}
	}
	child = &childStderr{done: make(chan struct{})}
	if shared {
		u.mu.Lock()
		u.child = child
		u.mu.Unlock()
	}
	// The child writes stderr straight into a pipe we own (no copying
	// goroutine of exec's, which Wait would cut off before the last lines of a
	// child dying at start are read); captureStderr ends at EOF, once the
	// child and everything it started have exited.
	pr, pw, err := os.Pipe()
	if err != nil {
		close(child.done)
		return t, child, func() {}
	}
	cmd.Stderr = pw
	go func() {
		defer close(child.done)
		u.captureStderr(pr, child, shared)
	}()
	return t, child, func() { _ = pw.Close() }
}

// childStderr is what one child process wrote to stderr: its last lines,
// redacted and bounded.
type childStderr struct {
	done chan struct{} // closed at EOF: the child and all it started are gone

	mu    sync.Mutex
	lines []string
	size  int
	// errLine is the last line that named an error (errorLineRE), kept
	// after it leaves lines: a Go panic or a Java exception names its
	// error first, then prints a stack trace longer than the tail. n counts
	// the lines added, errAt is n when errLine was added.
	errLine  string
	n, errAt int
}

func (c *childStderr) add(line string) {
	line = truncate(line, stderrLineMax)
	c.mu.Lock()
	defer c.mu.Unlock()
	c.n++
	if errorLineRE.MatchString(line) {
		c.errLine, c.errAt = strings.TrimSpace(line), c.n
	}
	c.lines = append(c.lines, line)
	c.size += len(line)
	for len(c.lines) > stderrTailLines || (c.size > stderrTailBytes && len(c.lines) > 1) {
		c.size -= len(c.lines[0])
		c.lines = c.lines[1:]
	}
}

func (c *childStderr) tail() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.lines)
}

// useful returns the line that best says why the child failed: usefulLine of
// its tail, unless an error line scrolled out of the tail shortly before (a
// stack trace followed it) and the tail names none.
func (c *childStderr) useful() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	lines, end := withoutExitNote(c.lines)
	for _, l := range lines {
		if errorLineRE.MatchString(l) {
			return withExitNote(usefulReport(lines), end)
		}
	}
	if c.errLine != "" && c.n-c.errAt < stderrErrLineAge {
		return withExitNote(c.errLine, end)
	}
	return withExitNote(usefulReport(lines), end)
}

// wait waits for the child's stderr to end, for at most d: a child that died
// said why there, and its last lines may still be in the pipe.
func (c *childStderr) wait(d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-c.done:
	case <-t.C:
	}
}

func (u *upstream) captureStderr(r io.ReadCloser, c *childStderr, shared bool) {
	defer u.gw.recoverLog("stderr capture", u.name)
	defer r.Close()
	readLines(r, stderrLogMax, func(line string) {
		if strings.TrimSpace(line) == "" {
			return
		}
		line = u.gw.redact(line)
		c.add(line)
		ev, ok := u.flood.stderr.take(u.log.Info().Str(fieldStream, "stderr"))
		if !ok {
			u.flood.count(dropStderrLine)
			return
		}
		ev.Msg(line)
	})
	if shared {
		// The child is gone: what it wrote last is what health shows while
		// the upstream is down.
		u.mu.Lock()
		u.stderrTail = c.tail()
		u.mu.Unlock()
	}
}

// readLines calls fn with each line of r, cut to max bytes (the rest of a
// longer line is dropped, and the word the cut split), so that no line,
// however long, stops the reading or holds more memory than max.
func readLines(r io.Reader, max int, fn func(string)) {
	br := bufio.NewReaderSize(r, 4096)
	var line []byte
	n := 0 // the line's length, of which line holds at most max bytes
	for {
		chunk, err := br.ReadSlice('\n')
		if err == nil {
			chunk = bytes.TrimSuffix(chunk[:len(chunk)-1], []byte("\r"))
		}
		n += len(chunk)
		if room := max - len(line); room > 0 {
			line = append(line, chunk[:min(len(chunk), room)]...)
		}
		if errors.Is(err, bufio.ErrBufferFull) {
			continue
		}
		if n > 0 {
			s := string(line)
			if n > max {
				// The cut may split a secret, which redaction would then
				// not find whole (found trying the gateway: a stderr line
				// of 16 KiB leaked a token's first 24 characters): the cut
				// line ends before the word it split, at a space or a
				// delimiter, which secrets (tokens, passwords) rarely hold.
				s = s[:strings.LastIndexFunc(s, wordEnd)+1] + "…"
			}
			fn(s)
		}
		line, n = line[:0], 0
		if err != nil {
			return
		}
	}
}

// childOutput returns the stderr of the shared session's current child (nil
// for HTTP upstreams).
func (u *upstream) childOutput() *childStderr {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.child
}

// withStderr adds to err the line of the child's stderr that best says why
// it failed (waiting a moment for it to be read), if there is one.
func (u *upstream) withStderr(err error, child *childStderr) error {
	if child == nil {
		return err
	}
	child.wait(time.Second)
	if line := child.useful(); line != "" {
		return &stderrError{err: err, line: line}
	}
	return err
}

// stderrError is a child's failure with the line of its stderr that best
// says why (redacted): a server that checks its credential at start exits
// saying the provider rejected it ("401 Bad credentials"), which classify
// reads.
type stderrError struct {
	err  error
	line string
}

func (e *stderrError) Error() string { return fmt.Sprintf("%v (stderr: %s)", e.err, e.line) }
func (e *stderrError) Unwrap() error { return e.err }

// explainDown adds the child's last words to last_error after a lost session
// closed, unless the upstream has moved on since.
func (u *upstream) explainDown(child *childStderr) {
	if child == nil {
		return
	}
	child.wait(time.Second)
	line := child.useful()
	if line == "" {
		return
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.status == StatusDown && u.session.Load() == nil && !strings.Contains(u.lastErr, line) {
		u.lastErr += " (stderr: " + line + ")"
	}
}

// errorLineRE matches the line of a crash report that names the error:
// "Error: Cannot find module ...", "TypeError: ...", "panic: ...",
// "fatal error: ...", "ModuleNotFoundError: ...", "Exception in thread ...:",
// "thread 'main' panicked at ...". A line like "panic({0x1, 0x2})" in a Go
// trace does not match.
// errorLogRE matches a structured log line at error level or worse: slog's
// and logrus' text (level=ERROR), JSON (`"level":"error"`), and lines that
// start with the level (found trying the gateway: a Go child's "level=ERROR
// msg=... err=bind: address already in use" lost to go run's "exit status 1").
var errorLogRE = regexp.MustCompile(`(?i:\blevel=(?:error|fatal|panic|critical|crit)\b|"level"\s*:\s*"(?:error|fatal|panic|critical|crit)")|^\s*(?:[^\s="]+\s+){0,2}(?:ERROR|ERR|FATAL|FTL|CRITICAL)\b`)

var errorLineRE = regexp.MustCompile(`(?i)^\s*(?:uncaught\s+)?(?:(?:[\w.$]*(?:error|exception)|panic|fatal(?: error)?)\b[^(]*?:|thread '[^']*' panicked at)`)

// usefulLine picks the line of a child's last stderr lines that best says
// why it failed: the last one naming an error, else the last non-blank one.
// A Node crash ends with its version ("Node.js v20.20.2") and a Python one
// with the exception, so the last line alone is not always the answer.
func usefulLine(lines []string) string {
	lines, end := withoutExitNote(lines)
	return withExitNote(usefulReport(lines), end)
}

// withoutExitNote returns lines without the supervisor's note of how the
// command ended (exitNote), which comes last, and the note's end ("exited
// with status 3"), "" if there is none.
func withoutExitNote(lines []string) ([]string, string) {
	for i := len(lines) - 1; i >= 0; i-- {
		l := strings.TrimSpace(lines[i])
		if l == "" {
			continue
		}
		if end, ok := strings.CutPrefix(l, exitNotePrefix); ok {
			return lines[:i], end
		}
		break
	}
	return lines, ""
}

// withExitNote adds end, how the command ended, to why, the line that says
// why it failed; either may be "".
func withExitNote(why, end string) string {
	switch {
	case end == "":
		return why
	case why == "":
		return "the command " + end
	}
	return why + " (then " + end + ")"
}

// usefulReport is usefulLine of lines without an exit note.
func usefulReport(lines []string) string {
	for i := len(lines) - 1; i >= 0; i-- {
		if errorLineRE.MatchString(lines[i]) || errorLogRE.MatchString(lines[i]) {
			return strings.TrimSpace(lines[i])
		}
	}
	for i := len(lines) - 1; i >= 0; i-- {
		if l := strings.TrimSpace(lines[i]); l != "" {
			return l
		}
	}
	return ""
}

// childEnv keeps only the basics of the gateway's environment.
func childEnv(parent []string, extra map[string]string) []string {
	keep := map[string]bool{"PATH": true, "HOME": true, "USER": true, "LOGNAME": true, "LANG": true, "LC_ALL": true,
		"TZ": true, "TMPDIR": true, "SHELL": true, "TERM": true, "GOCACHE": true, "GOPATH": true, "GOMODCACHE": true,
		"GOFLAGS": true, "GOPROXY": true, "NODE_PATH": true, "SYSTEMROOT": true}
	var env []string
	for _, kv := range parent {
		k, _, _ := strings.Cut(kv, "=")
		if keep[k] {
			if _, override := extra[k]; !override {
				env = append(env, kv)
			}
		}
	}
	for k, v := range extra {
		env = append(env, k+"="+v)
	}
	return env
}

// wordEnd reports whether r ends a word that could be a secret: a space, a
// quote or a delimiter of JSON and of key=value text.
func wordEnd(r rune) bool {
	return unicode.IsSpace(r) || strings.ContainsRune(`"',;{}[]()<>`, r)
}
