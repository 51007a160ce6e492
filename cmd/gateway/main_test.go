package main

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/credgate/credgate/gateway"
)

// cli runs the gateway's command line in-process and returns its exit code,
// stdout and stderr. A command that does not return in time (a server
// started by mistake) fails the test.
func cli(t *testing.T, stdin string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	var out, errOut lockedBuffer // the gateway logs from many goroutines
	done := make(chan int, 1)
	go func() { done <- run(args, strings.NewReader(stdin), &out, &errOut) }()
	select {
	case code = <-done:
		return code, out.String(), errOut.String()
	case <-ctx.Done():
		t.Fatalf("gateway %q did not return (did it start serving?)", args)
		return 0, "", ""
	}
}

// lockedBuffer is a bytes.Buffer safe for concurrent writes.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestArgsAnyOrder is the regression test for issue 6 item 17: commands,
// flags and a positional config path come in any order (`gateway --config
// X validate` started a server, and `gateway validate X` found no config).
func TestArgsAnyOrder(t *testing.T) {
	t.Parallel()
	good := writeFile(t, "good.yaml", "listen: 127.0.0.1:0\nupstreams:\n  a: {command: x}\n")
	for _, args := range [][]string{
		{"--config", good, "validate"},
		{"validate", good},
		{good, "validate"},
		{"validate", "--config", good, "--log-level", "debug"},
		{"--log-level", "warn", "validate", good},
		{"validate", good, "--config", good},
	} {
		code, stdout, stderr := cli(t, "", args...)
		if code != 0 || stdout != good+": ok\n" {
			t.Errorf("gateway %q: exit %d, stdout %q, stderr %q; want 0 and %q", args, code, stdout, stderr, good+": ok\n")
		}
	}
	other := writeFile(t, "other.yaml", "upstreams:\n  b: {command: y}\n")
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"validate", good, other}, "unexpected arguments"},
		{[]string{"validate", "--config", other, good}, "two config files"},
		{[]string{"servee"}, `unknown command "servee"`},
		{[]string{"validate", "--listen", "8094", good}, `--listen "8094": want host:port, e.g. 127.0.0.1:8094`},
	} {
		code, _, stderr := cli(t, "", tc.args...)
		if code != 2 || !strings.Contains(stderr, tc.want) {
			t.Errorf("gateway %q: exit %d, stderr %q; want 2 and %q", tc.args, code, stderr, tc.want)
		}
	}
}

// TestValidateOutput is the regression test for issue 6 item 14 at the
// command line: every problem on its own line, no empty lines.
func TestValidateOutput(t *testing.T) {
	t.Parallel()
	bad := writeFile(t, "bad.yaml", "listen: 8094\nupstreams:\n  a:\n    command: x\n    timeout: 30\n    comand: y\n")
	code, _, stderr := cli(t, "", "validate", bad)
	if code != 1 {
		t.Errorf("exit %d, want 1", code)
	}
	want := bad + ": invalid config:\n" +
		`  - upstreams.a.comand: unknown key (did you mean command?)` + "\n" +
		`  - upstreams.a.timeout: want a duration with a unit, such as "30s", "5m" or "1h30m", got 30` + "\n" +
		`  - listen: invalid address "8094": want host:port, e.g. 127.0.0.1:8094` + "\n"
	if stderr != want {
		t.Errorf("validate output:\n%s\nwant:\n%s", stderr, want)
	}
}

// TestImportCommand is the regression test for issue 6 item 16 at the
// command line: `gateway import FILE` prints YAML that validate accepts, and
// --config takes the desktop file as it is.
func TestImportCommand(t *testing.T) {
	t.Parallel()
	desktop := writeFile(t, "claude_desktop_config.json",
		`{"mcpServers": {"Files": {"command": "/bin/files", "args": ["/data"], "alwaysAllow": ["read"]}, "web": {"url": "https://mcp.example.com/mcp"}}}`)
	code, stdout, stderr := cli(t, "", "import", desktop)
	if code != 0 {
		t.Fatalf("import: exit %d\n%s", code, stderr)
	}
	if !strings.Contains(stderr, "warning: mcpServers.Files.alwaysAllow: ignored") {
		t.Errorf("import did not warn about alwaysAllow:\n%s", stderr)
	}
	imported := writeFile(t, "credgate.yaml", stdout)
	if code, out, stderr := cli(t, "", "validate", imported); code != 0 {
		t.Errorf("validate of the imported YAML: exit %d %s %s\n%s", code, out, stderr, stdout)
	}
	code, stdout, stderr = cli(t, "", "--config", desktop, "validate")
	if code != 0 || !strings.Contains(stderr, "warning: mcpServers.Files.alwaysAllow: ignored") {
		t.Errorf("validate of the desktop file: exit %d\n%s%s", code, stdout, stderr)
	}
	if code, _, stderr := cli(t, "", "import", imported); code != 1 || !strings.Contains(stderr, "no mcpServers or servers object") {
		t.Errorf("import of a credgate config: exit %d\n%s", code, stderr)
	}
}

// TestProviderChecked is the regression test for issue 6 item 17:
// --provider must name a known provider, or one the config's rules define.
func TestProviderChecked(t *testing.T) {
	t.Parallel()
	const resp = "HTTP/1.1 401 Unauthorized\r\n\r\n{\"message\":\"Bad credentials\"}"
	code, _, stderr := cli(t, resp, "classify", "--provider", "githb")
	if code != 2 || !strings.Contains(stderr, `--provider "githb": unknown provider; want one of github, gitlab`) {
		t.Errorf("--provider githb: exit %d, stderr %q", code, stderr)
	}
	if code, stdout, stderr := cli(t, resp, "classify", "--provider", "github"); code != 0 || !strings.Contains(stdout, `"provider": "github"`) {
		t.Errorf("--provider github: exit %d\n%s%s", code, stdout, stderr)
	}
	rules := writeFile(t, "rules.yaml", "classify:\n  rules:\n    - {provider: acme, match: {status: 403}, subtype: credential_revoked}\n")
	if code, stdout, stderr := cli(t, "HTTP/1.1 403 Forbidden\r\n\r\nno", "classify", rules, "--provider", "acme"); code != 0 || !strings.Contains(stdout, `"provider": "acme"`) {
		t.Errorf("--provider acme with a rule defining it: exit %d\n%s%s", code, stdout, stderr)
	}
	if code, _, stderr := cli(t, resp, "classify", rules, "--provider", "acm"); code != 2 || !strings.Contains(stderr, "acme") {
		t.Errorf("--provider acm: exit %d, stderr %q; want the rules' providers listed", code, stderr)
	}
}

// TestConsoleColorsOnlyOnTerminal is the regression test for issue 6 item
// 18: --log-format console writes no colour codes to a file or a pipe.
func TestConsoleColorsOnlyOnTerminal(t *testing.T) {
	t.Parallel()
	var buf bytes.Buffer
	log, err := newLogger(&buf, "info", "console")
	if err != nil {
		t.Fatal(err)
	}
	log.Warn().Str("upstream", "a").Msg("hello")
	if strings.Contains(buf.String(), "\x1b[") || !strings.Contains(buf.String(), "hello") {
		t.Errorf("console log to a buffer = %q, want no escape codes", buf.String())
	}
	// A message carrying a child's words: its control characters escaped
	// (they reached the terminal raw), as field values' are.
	buf.Reset()
	log.Warn().Str("line", "x\x1b]0;T\x07").Msg("child said \x1b]0;PWNED\x07\x1b[2J")
	if strings.ContainsAny(buf.String(), "\x1b\x07") || !strings.Contains(buf.String(), `child said \x1b]0;PWNED\x07\x1b[2J`) {
		t.Errorf("console log = %q, want the message's control characters escaped", buf.String())
	}
}

// TestREADMECommandsValidate keeps the shipped configs valid through the
// command line as well.
func TestREADMECommandsValidate(t *testing.T) {
	t.Parallel()
	matches, _ := filepath.Glob("../../configs/*.yaml")
	for _, m := range matches {
		if filepath.Base(m) == "prometheus-rules.yaml" {
			continue // Prometheus alerting rules, not a gateway config (see TestPrometheusRulesFile)
		}
		if _, err := gateway.LoadConfig(m, nil); err != nil {
			t.Errorf("%s: %v", m, err)
		}
	}
}

// TestLogLevelChecked is the regression test for issue 6 item 17 (flags are
// checked, found by trying the binary): a bad --log-level names the levels
// instead of zerolog's "defaulting to NoLevel", and an empty one is refused
// rather than logging everything.
func TestLogLevelChecked(t *testing.T) {
	t.Parallel()
	good := writeFile(t, "ok.yaml", "upstreams:\n  a: {command: x}\n")
	for _, level := range []string{"verbose", ""} {
		code, _, stderr := cli(t, "", "validate", good, "--log-level", level)
		if code != 2 || !strings.Contains(stderr, "want debug, info, warn or error") || strings.Contains(stderr, "defaulting") {
			t.Errorf("--log-level %q: exit %d, stderr %q", level, code, stderr)
		}
	}
	if code, _, stderr := cli(t, "", "validate", good, "--log-level", "WARN"); code != 0 {
		t.Errorf("--log-level WARN: exit %d, stderr %q", code, stderr)
	}
}

// TestValidateExposure is the regression test for the deploy manifests that
// validate called ok while every pod's serve exited 1 (found trying the
// gateway on Kubernetes): validate runs the exposure check serve refuses
// on, against the config's listen or --listen, and exits 1 naming the key.
func TestValidateExposure(t *testing.T) {
	t.Parallel()
	open := writeFile(t, "open.yaml", "listen: 0.0.0.0:8080\nupstreams:\n  a: {command: x}\n")
	local := writeFile(t, "local.yaml", "listen: 127.0.0.1:8080\nupstreams:\n  a: {command: x}\n")
	accepted := writeFile(t, "accepted.yaml", "listen: 0.0.0.0:8080\nallow_unauthenticated: true\nupstreams:\n  a: {command: x}\n")
	keyed := writeFile(t, "keyed.yaml", "listen: 0.0.0.0:8080\nauth: {keys: [{name: a, key: 0123456789abcdef0123}]}\nupstreams:\n  a: {command: x}\n")
	for _, tt := range []struct {
		args []string
		ok   bool
	}{
		{[]string{"validate", open}, false},
		{[]string{"validate", local, "--listen", ":8080"}, false},
		{[]string{"validate", open, "--listen", "127.0.0.1:0"}, true},
		{[]string{"validate", local}, true},
		{[]string{"validate", accepted}, true},
		{[]string{"validate", keyed}, true},
	} {
		code, stdout, stderr := cli(t, "", tt.args...)
		if tt.ok {
			if code != 0 || !strings.HasSuffix(stdout, ": ok\n") {
				t.Errorf("%q: exit %d\n%s%s\nwant ok", tt.args, code, stdout, stderr)
			}
			continue
		}
		if code != 1 || stdout != "" || !strings.Contains(stderr, "  - listen: ") ||
			!strings.Contains(stderr, "auth.keys") || !strings.Contains(stderr, "allow_unauthenticated") {
			t.Errorf("%q: exit %d\nstdout %q\nstderr %q\nwant exit 1 naming listen, auth.keys and allow_unauthenticated", tt.args, code, stdout, stderr)
		}
		if strings.Contains(stderr, "warning:") {
			t.Errorf("%q: the refusal is also printed as a warning:\n%s", tt.args, stderr)
		}
	}
}

// TestListenFailureIsNotStarted: a gateway that cannot listen never
// started, and says so (it logged "gateway stopped", found trying it).
func TestListenFailureIsNotStarted(t *testing.T) {
	t.Parallel()
	held, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	for _, c := range []struct{ name, yaml string }{
		{"listen", fmt.Sprintf("listen: %s\nupstreams: {}\n", held.Addr())},
		{"admin.listen", fmt.Sprintf("listen: 127.0.0.1:0\nadmin: {listen: %s, token: admintoken_1234567890abcdef}\nupstreams: {}\n", held.Addr())},
	} {
		cfg := writeFile(t, "busy.yaml", c.yaml)
		code, _, stderr := cli(t, "", "serve", cfg)
		if code != 1 || !strings.Contains(stderr, `"message":"gateway not started"`) || !strings.Contains(stderr, "address already in use") ||
			strings.Contains(stderr, "gateway stopped") || strings.Contains(stderr, "listening on") {
			t.Errorf("%s in use: exit %d, stderr:\n%s\nwant 1 and gateway not started, naming the address in use, without a listening line", c.name, code, stderr)
		}
	}
}
