package authmap

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestParseTokenText(t *testing.T) {
	t.Parallel()
	exp := time.Date(2027, 5, 6, 7, 8, 9, 0, time.UTC)
	tests := []struct {
		name    string
		in      string
		field   string
		want    Token
		wantErr error
		errText string
	}{
		{name: "plain, trimmed", in: "  ghp_abc \n", want: Token{Value: "ghp_abc"}},
		{name: "json token and expiry", in: `{"token": "t1", "expires_at": "2027-05-06T07:08:09Z"}`, want: Token{Value: "t1", ExpiresAt: exp}},
		{name: "json unix expiry", in: `{"token": "t1", "expires_at": ` + strconv.FormatInt(exp.Unix(), 10) + `}`, want: Token{Value: "t1", ExpiresAt: exp.Local()}},
		{name: "json without expiry", in: `{"token":"t1"}`, want: Token{Value: "t1"}},
		{name: "json empty token", in: `{"token":""}`, wantErr: ErrMissing},
		{name: "json bad expiry", in: `{"token":"t1","expires_at":"tomorrow"}`, errText: `expires_at: "tomorrow" is not RFC 3339`},
		{name: "json without token", in: `{"SecretString":"x"}`, errText: `a JSON object without a "token" field (set json_field to pick one)`},
		{name: "json cut short", in: `{"token":"zq-0123456789", "expires_at": "2027-`, errText: `starts as a JSON object but is not valid JSON (cut short, or malformed at byte`},
		{name: "empty", in: " \n", wantErr: ErrMissing},
		{name: "field", in: `{"SecretString":"s3cr3t","Name":"n"}`, field: "SecretString", want: Token{Value: "s3cr3t"}},
		{name: "nested field", in: `{"data":{"token":"deep"}}`, field: "data.token", want: Token{Value: "deep"}},
		{name: "field holding a JSON string", in: `{"SecretString":"{\"token\":\"inner\",\"user\":\"u\"}"}`, field: "SecretString.token", want: Token{Value: "inner"}},
		{name: "field holding token JSON", in: `{"SecretString":"{\"token\":\"inner\",\"expires_at\":\"2027-05-06T07:08:09Z\"}"}`, field: "SecretString",
			want: Token{Value: "inner", ExpiresAt: exp}},
		// An expires_at beside the field, or at the top, is the value's
		// (it was dropped: the lifetime read unknown).
		{name: "expiry beside the field", in: `{"data":{"tok":"deep","expires_at":"2027-05-06T07:08:09Z"},"expires_at":"2030-01-01T00:00:00Z"}`, field: "data.tok",
			want: Token{Value: "deep", ExpiresAt: exp}},
		{name: "expiry at the top", in: `{"data":{"tok":"deep"},"expires_at":"2027-05-06T07:08:09Z"}`, field: "data.tok", want: Token{Value: "deep", ExpiresAt: exp}},
		{name: "expiry beside the field, bad", in: `{"tok":"t","expires_at":"soon"}`, field: "tok", errText: `expires_at next to json_field "tok": "soon" is not RFC 3339`},
		{name: "field missing", in: `{"a":"b"}`, field: "SecretString", wantErr: ErrMissing},
		{name: "field not json", in: `plain`, field: "SecretString", errText: "not a JSON object"},
		{name: "field not a string", in: `{"a":{"b":1}}`, field: "a", errText: "is not a string"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := parseTokenText([]byte(tt.in), tt.field, "test")
			if tt.wantErr == nil && tt.errText == "" {
				if err != nil {
					t.Fatal(err)
				}
				if diff := cmp.Diff(tt.want, got); diff != "" {
					t.Errorf("token mismatch (-want +got):\n%s", diff)
				}
				return
			}
			if err == nil {
				t.Fatalf("got %+v, want an error", got)
			}
			if tt.wantErr != nil && !errors.Is(err, tt.wantErr) {
				t.Errorf("error %q is not %v", err, tt.wantErr)
			}
			if !strings.Contains(err.Error(), tt.errText) {
				t.Errorf("error %q does not contain %q", err, tt.errText)
			}
		})
	}
}

func TestNewSourceKinds(t *testing.T) {
	t.Parallel()
	env := &SourceOptions{LookupEnv: func(k string) (string, bool) { return "from-env", k == "TOKEN" }}
	src, err := NewSource("credentials.a.source", SourceConfig{Env: "TOKEN"}, env)
	if err != nil {
		t.Fatal(err)
	}
	if tok, err := src.Fetch(t.Context()); err != nil || tok.Value != "from-env" {
		t.Errorf("env: %q %v", tok.Value, err)
	}
	if _, err := NewSource("credentials.a.source", SourceConfig{Vault: &VaultConfig{Address: "http://v", Path: "p", Token: SecretRef{Value: "t"}}}, nil); err == nil ||
		err.Error() != "credentials.a.source.vault: this build cannot open vault sources" {
		t.Errorf("vault without an opener: %v", err)
	}
	if _, err := NewSource("credentials.a.source", SourceConfig{}, nil); err == nil || !strings.HasPrefix(err.Error(), "credentials.a.source: set exactly one") {
		t.Errorf("no kind: %v", err)
	}
}

func writeScript(t *testing.T, body string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "cred.sh")
	if err := os.WriteFile(path, []byte("#!/bin/sh\n"+body), 0o700); err != nil {
		t.Fatal(err)
	}
	return path
}

// Regression test for issue 7 (exec source): stdout is the secret or JSON,
// stderr is redacted and bounded in errors, and a command past its timeout is
// killed with everything it started.
func TestExecSource(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		script  string
		field   string
		want    string
		errText string
		notIn   []string
	}{
		{name: "stdout", script: "echo '  tok-from-cli  '", want: "tok-from-cli"},
		{name: "json", script: `echo '{"token":"tok-json","expires_at":"2030-01-01T00:00:00Z"}'`, want: "tok-json"},
		{name: "aws cli shape", script: `echo '{"Name":"x","SecretString":"tok-aws","VersionId":"v1"}'`, field: "SecretString", want: "tok-aws"},
		{name: "failure with stderr", script: "echo 'sk-ant-api03-LeakedKeyInStderr0123456789' >&2; echo 'partial-secret-on-stdout'; echo 'auth: token expired' >&2; exit 3",
			errText: "exit status 3 (stderr: [REDACTED] auth: token expired)", notIn: []string{"LeakedKey", "partial-secret-on-stdout"}},
		{name: "huge stderr is bounded", script: `i=0; while [ $i -lt 2000 ]; do echo "line $i of noise" >&2; i=$((i+1)); done; exit 1`,
			errText: "…)"},
		{name: "empty stdout", script: "true", errText: "exec "},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
			defer cancel()
			src := NewExecSource(ExecConfig{Command: []string{writeScript(t, tt.script)}, JSONField: tt.field})
			tok, err := src.Fetch(ctx)
			if tt.errText == "" {
				if err != nil || tok.Value != tt.want {
					t.Fatalf("Fetch = %q, %v; want %q", tok.Value, err, tt.want)
				}
				return
			}
			if err == nil {
				t.Fatalf("Fetch = %q, want an error", tok.Value)
			}
			if !strings.Contains(err.Error(), tt.errText) {
				t.Errorf("error %q does not contain %q", err, tt.errText)
			}
			if len(err.Error()) > 600 {
				t.Errorf("error is %d bytes long", len(err.Error()))
			}
			for _, s := range tt.notIn {
				if strings.Contains(err.Error(), s) {
					t.Errorf("error %q shows %q", err, s)
				}
			}
		})
	}
}

func TestExecSourceEmptyIsMissing(t *testing.T) {
	t.Parallel()
	src := NewExecSource(ExecConfig{Command: []string{writeScript(t, "echo")}})
	if _, err := src.Fetch(t.Context()); !errors.Is(err, ErrMissing) {
		t.Errorf("empty stdout: %v, want ErrMissing", err)
	}
}

func TestExecSourceTimeoutKillsTheGroup(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	pidFile := filepath.Join(t.TempDir(), "pid")
	// The script starts a grandchild that would hold stdout open for a minute.
	script := writeScript(t, fmt.Sprintf("sleep 60 & echo $! > %s; wait", pidFile))
	src := NewExecSource(ExecConfig{Command: []string{script}, Timeout: 300 * time.Millisecond})
	_, err := src.Fetch(ctx)
	if err == nil || !strings.Contains(err.Error(), "timed out after 300ms") {
		t.Fatalf("Fetch: %v, want a timeout", err)
	}
	data, err := os.ReadFile(pidFile)
	if err != nil {
		t.Fatal(err)
	}
	waitKilled(t, ctx, strings.TrimSpace(string(data)))
}

// waitKilled waits until the process pid is gone or a zombie waiting for a
// reaper, failing the test if ctx ends first. The kill is sent before Fetch
// returns, but a SIGKILLed process on a busy machine may still show as
// running for a moment.
func waitKilled(t *testing.T, ctx context.Context, pid string) {
	t.Helper()
	running := func() bool {
		stat, err := os.ReadFile("/proc/" + pid + "/stat")
		if err != nil {
			return false
		}
		fields := strings.Fields(string(stat))
		return len(fields) > 2 && fields[2] != "Z" && fields[2] != "X"
	}
	for running() {
		select {
		case <-ctx.Done():
			t.Fatalf("process %s still running", pid)
		case <-time.After(time.Millisecond):
		}
	}
}

// Regression test for issue 7 (exec source): a command that prints its
// value and exits 0 but leaves a background helper in its group holding
// stdout open is a success, and the helper is killed. Before the fix the
// value was dropped (exec: WaitDelay expired before I/O complete, so the
// credential was missing) and the helper outlived the gateway's fetch.
func TestExecSourceBackgroundHelper(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	pidFile := filepath.Join(t.TempDir(), "pid")
	script := writeScript(t, fmt.Sprintf("sleep 60 & echo $! > %s; echo helper-left-token-0123", pidFile))
	src := NewExecSource(ExecConfig{Command: []string{script}, Timeout: 10 * time.Second})
	tok, err := src.Fetch(ctx)
	if err != nil || tok.Value != "helper-left-token-0123" {
		t.Fatalf("Fetch: %q, %v; want the value printed", tok.Value, err)
	}
	data, err := os.ReadFile(pidFile)
	if err != nil {
		t.Fatal(err)
	}
	waitKilled(t, ctx, strings.TrimSpace(string(data)))
}

// Regression test for issue 7 (file watch): an in-place write, an atomic
// rename and a Kubernetes secret volume's ..data symlink swap each rotate the
// credential, with no restart, while a running watch follows the file.
func TestFileWatchRotates(t *testing.T) {
	t.Parallel()
	type layout struct {
		path   string
		rotate func(t *testing.T, value string)
	}
	write := func(t *testing.T, path, value string) {
		t.Helper()
		if err := os.WriteFile(path, []byte(value+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	tests := []struct {
		name  string
		setup func(t *testing.T, dir string) layout
	}{
		{"in-place write", func(t *testing.T, dir string) layout {
			p := filepath.Join(dir, "token")
			write(t, p, "value-0")
			return layout{p, func(t *testing.T, v string) { write(t, p, v) }}
		}},
		{"atomic rename", func(t *testing.T, dir string) layout {
			p := filepath.Join(dir, "token")
			write(t, p, "value-0")
			return layout{p, func(t *testing.T, v string) {
				tmp := filepath.Join(dir, ".token.tmp")
				write(t, tmp, v)
				if err := os.Rename(tmp, p); err != nil {
					t.Fatal(err)
				}
			}}
		}},
		{"kubernetes ..data swap", func(t *testing.T, dir string) layout {
			// The kubelet's AtomicWriter: <dir>/token -> ..data/token, ..data -> ..<timestamp>.
			gen := 0
			version := func(v string) string {
				gen++
				d := fmt.Sprintf("..2026_01_02_03_04_05.%d", gen)
				if err := os.Mkdir(filepath.Join(dir, d), 0o755); err != nil {
					t.Fatal(err)
				}
				write(t, filepath.Join(dir, d, "token"), v)
				return d
			}
			first := version("value-0")
			if err := os.Symlink(first, filepath.Join(dir, "..data")); err != nil {
				t.Fatal(err)
			}
			if err := os.Symlink(filepath.Join("..data", "token"), filepath.Join(dir, "token")); err != nil {
				t.Fatal(err)
			}
			current := first
			return layout{filepath.Join(dir, "token"), func(t *testing.T, v string) {
				next := version(v)
				tmp := filepath.Join(dir, "..data_tmp")
				if err := os.Symlink(next, tmp); err != nil {
					t.Fatal(err)
				}
				if err := os.Rename(tmp, filepath.Join(dir, "..data")); err != nil {
					t.Fatal(err)
				}
				if err := os.RemoveAll(filepath.Join(dir, current)); err != nil {
					t.Fatal(err)
				}
				current = next
			}}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
			defer cancel()
			l := tt.setup(t, t.TempDir())
			events := make(chan Event, 64)
			c := NewCredential("gh", CredentialConfig{Source: SourceConfig{File: l.path}}, NewFileSource(l.path),
				&CredentialOptions{OnEvent: func(e Event) { events <- e }})
			if err := c.Load(ctx); err != nil {
				t.Fatal(err)
			}
			if c.Value() != "value-0" {
				t.Fatalf("loaded %q", c.Value())
			}
			<-events // loaded
			defer runWatch(t, c)()
			for i := 1; i <= 3; i++ {
				want := fmt.Sprintf("value-%d", i)
				// A rotation before the watch is in place is caught by the
				// watch's first re-read; after, by the directory's events.
				l.rotate(t, want)
			wait:
				for {
					select {
					case e := <-events:
						// An in-place write truncates the file before it
						// writes it: a watch that reads between the two
						// sees it empty, refuses that (rejected_rotation,
						// the old value kept) and rotates on the write's
						// own event. Only that layout may show it.
						if e.Kind == EventRejectedRotation && tt.name == "in-place write" {
							continue
						}
						if e.Kind != EventRotated || e.Trigger != TriggerFile {
							t.Fatalf("event %s/%s, want rotated/file", e.Kind, e.Trigger)
						}
						break wait
					case <-ctx.Done():
						t.Fatalf("rotation to %s not seen", want)
					}
				}
				if got := c.Value(); got != want {
					t.Fatalf("after rotation %d: %q, want %q", i, got, want)
				}
			}
			// A rewrite with the same content is not a rotation.
			l.rotate(t, "value-3")
			l.rotate(t, "value-4")
		last:
			for {
				select {
				case e := <-events:
					if e.Kind == EventRejectedRotation && tt.name == "in-place write" {
						continue // a read between truncate and write (see above)
					}
					if e.Kind != EventRotated || c.Value() != "value-4" {
						t.Fatalf("event %s with value %q, want rotated to value-4 and nothing for the same content", e.Kind, c.Value())
					}
					break last
				case <-ctx.Done():
					t.Fatal("no event")
				}
			}
		})
	}
}

// Regression test for issue 7 (file source): a file whose directory does not
// exist when the watch starts (a volume mounted later) cannot be watched; it
// is then re-read every check_interval, so rotations after its first value
// are still picked up. Before the fix the watch stopped for good and only
// the first value was ever read.
func TestFileWatchDirectoryMissingAtStart(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	dir := filepath.Join(t.TempDir(), "mounted-later")
	path := filepath.Join(dir, "token")
	events := make(chan Event, 64)
	watchFailed := make(chan struct{})
	var once sync.Once
	logger := slog.New(signalHandler{func(r slog.Record) {
		if r.Level == slog.LevelError && strings.Contains(r.Message, "watch") {
			once.Do(func() { close(watchFailed) })
		}
	}})
	c := NewCredential("gh", CredentialConfig{Source: SourceConfig{File: path}}, NewFileSource(path),
		&CredentialOptions{Lifecycle: LifecycleConfig{CheckInterval: 20 * time.Millisecond}, Logger: logger,
			OnEvent: func(e Event) { events <- e }})
	if err := c.Load(ctx); !errors.Is(err, ErrMissing) {
		t.Fatalf("Load: %v, want missing", err)
	}
	<-events // missing
	defer runWatch(t, c)()
	select {
	case <-watchFailed:
	case <-ctx.Done():
		t.Fatal("the watch of a missing directory did not fail")
	}
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for i, kind := range []EventKind{EventLoaded, EventRotated} {
		want := fmt.Sprintf("value-%d", i+1)
		if err := os.WriteFile(path, []byte(want+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		select {
		case e := <-events:
			if e.Kind != kind || c.Value() != want {
				t.Fatalf("event %s with value %q, want %s with %s", e.Kind, c.Value(), kind, want)
			}
		case <-ctx.Done():
			t.Fatalf("%s not seen", want)
		}
	}
}

// signalHandler is a slog.Handler that hands each record to f.
type signalHandler struct{ f func(slog.Record) }

func (h signalHandler) Enabled(context.Context, slog.Level) bool      { return true }
func (h signalHandler) Handle(_ context.Context, r slog.Record) error { h.f(r); return nil }
func (h signalHandler) WithAttrs([]slog.Attr) slog.Handler            { return h }
func (h signalHandler) WithGroup(string) slog.Handler                 { return h }

// TestFileWatchReportsRemoval: a credential file removed while the watch
// runs is reported as the SIGHUP re-read reports it (rejected_rotation, the
// file named, last_error set), and the last value is kept; the file written
// again rotates as before. Before the fix the watch took the removal for a
// file briefly missing mid-rotation and said nothing: only a SIGHUP told
// (found trying the gateway from outside).
func TestFileWatchReportsRemoval(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	path := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(path, []byte("value-0\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	events := make(chan Event, 64)
	src := fetchSignal{NewFileSource(path), make(chan struct{}, 64)}
	c := NewCredential("gh", CredentialConfig{Source: SourceConfig{File: path}}, src,
		&CredentialOptions{OnEvent: func(e Event) { events <- e }})
	if err := c.Load(ctx); err != nil {
		t.Fatal(err)
	}
	<-events      // loaded
	<-src.fetched // Load's
	defer runWatch(t, c)()
	// The watch re-reads the file once it is in place: a removal before
	// that would be caught by that re-read, not by the watch.
	select {
	case <-src.fetched:
	case <-ctx.Done():
		t.Fatal("the watch did not start")
	}
	next := func(what string) Event {
		t.Helper()
		select {
		case e := <-events:
			return e
		case <-ctx.Done():
			t.Fatalf("%s: no event", what)
			return Event{}
		}
	}

	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	e := next("removed")
	if e.Kind != EventRejectedRotation || e.Trigger != TriggerFile || e.Credential != "gh" ||
		!strings.Contains(e.Detail, path) || !strings.Contains(e.Detail, "does not exist") {
		t.Fatalf("removed: event %s/%s %q, want rejected_rotation/file naming %s", e.Kind, e.Trigger, e.Detail, path)
	}
	if got := c.Value(); got != "value-0" {
		t.Errorf("after removal the value is %q, want value-0 kept", got)
	}
	snap := c.Snapshot(false)
	if snap.Status != StatusHealthy || snap.LastError == nil || !strings.Contains(snap.LastError.Detail, path) {
		t.Errorf("after removal: status %s, last error %+v; want healthy with the removal as last error", snap.Status, snap.LastError)
	}

	if err := os.WriteFile(path, []byte("value-1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for {
		e := next("written again")
		if e.Kind == EventRejectedRotation {
			continue // read between the create and the write (see TestFileWatchRotates)
		}
		if e.Kind != EventRotated || e.Trigger != TriggerFile {
			t.Fatalf("written again: event %s/%s, want rotated/file", e.Kind, e.Trigger)
		}
		break
	}
	if got, snap := c.Value(), c.Snapshot(false); got != "value-1" || snap.LastError != nil {
		t.Errorf("written again: value %q, last error %+v; want value-1 and none", got, snap.LastError)
	}

	// Emptied, and still empty a second later: reported as a removal is
	// (it said nothing until a call's re-read met it).
	if err := os.WriteFile(path, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if e := next("emptied"); e.Kind != EventRejectedRotation || e.Trigger != TriggerFile || !strings.Contains(e.Detail, path) {
		t.Fatalf("emptied: event %s/%s %q, want rejected_rotation/file naming %s", e.Kind, e.Trigger, e.Detail, path)
	}
	if got := c.Value(); got != "value-1" {
		t.Errorf("after emptying the value is %q, want value-1 kept", got)
	}

	// Written back with the same value: said (its last error used to
	// vanish without an event).
	if err := os.WriteFile(path, []byte("value-1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if e := next("written back"); e.Kind != EventLoaded || e.Trigger != TriggerFile || !strings.Contains(e.Detail, "again") {
		t.Fatalf("written back: event %s/%s %q, want loaded/file, the value held again", e.Kind, e.Trigger, e.Detail)
	}
	if got, snap := c.Value(), c.Snapshot(false); got != "value-1" || snap.LastError != nil || snap.Status != StatusHealthy {
		t.Errorf("written back: value %q, status %s, last error %+v; want value-1, healthy, none", got, snap.Status, snap.LastError)
	}
}

// fetchSignal is a FileSource that signals each fetch.
type fetchSignal struct {
	*FileSource
	fetched chan struct{}
}

func (s fetchSignal) Fetch(ctx context.Context) (Token, error) {
	defer func() { s.fetched <- struct{}{} }()
	return s.FileSource.Fetch(ctx)
}
