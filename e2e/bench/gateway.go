package main

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
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

const (
	// readyTimeout bounds waiting for the listen line and for /health.
	readyTimeout = 30 * time.Second
	// healthPoll is short so the startup measurement is not quantised by it.
	healthPoll = 2 * time.Millisecond
	// logTail is how many stderr lines are kept for error messages.
	logTail = 20
)

// buildGateway compiles ./cmd/gateway of the module in dir into outDir.
func buildGateway(ctx context.Context, dir, outDir string) (string, error) {
	return goBuild(ctx, dir, "./cmd/gateway", filepath.Join(outDir, "gateway"))
}

// buildMinproxy compiles ./minproxy of the bench module in dir into outDir.
func buildMinproxy(ctx context.Context, dir, outDir string) (string, error) {
	return goBuild(ctx, dir, "./minproxy", filepath.Join(outDir, "minproxy"))
}

func goBuild(ctx context.Context, dir, pkg, bin string) (string, error) {
	cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, pkg)
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build %s: %w\n%s", pkg, err, out)
	}
	return bin, nil
}

// moduleRoot finds credgate's root (the directory holding cmd/gateway), so
// the driver works from any directory inside the repo. The driver is a
// module of its own (see go.mod), so that is not its go.mod's directory.
func moduleRoot(ctx context.Context) (string, error) {
	out, err := exec.CommandContext(ctx, "go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	gomod := strings.TrimSpace(string(out))
	if gomod == "" || gomod == os.DevNull {
		return "", errors.New("not inside a Go module")
	}
	for dir := filepath.Dir(gomod); ; dir = filepath.Dir(dir) {
		if st, err := os.Stat(filepath.Join(dir, "cmd", "gateway")); err == nil && st.IsDir() {
			return dir, nil
		}
		if filepath.Dir(dir) == dir {
			return "", errors.New("no cmd/gateway above " + gomod)
		}
	}
}

// gatewayProc is a running gateway child process in its own process group.
type gatewayProc struct {
	cmd     *exec.Cmd
	started time.Time
	addr    string
	exited  chan struct{} // closed when the process has been reaped

	mu   sync.Mutex
	tail []string // last stderr lines
}

// writeConfig writes a gateway config naming each upstream's URL.
func writeConfig(dir, name string, upstreams map[string]string) (string, error) {
	var b strings.Builder
	b.WriteString("listen: 127.0.0.1:0\nadmin:\n  pprof: true\nupstreams:\n")
	for _, n := range sortedKeys(upstreams) {
		fmt.Fprintf(&b, "  %s:\n    transport: streamable-http\n    url: %s\n", n, upstreams[n])
	}
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, []byte(b.String()), 0o600); err != nil {
		return "", fmt.Errorf("write config: %w", err)
	}
	return path, nil
}

// startGateway starts the binary and waits for its "listening" log line.
// The caller must Close it, whatever happens next.
func startGateway(ctx context.Context, bin, config string) (*gatewayProc, error) {
	// Info, as a gateway runs: the "listening" line is logged at info, and
	// so is every call's audit line, which this process reads (its cost is
	// part of the measurement, as it is of any deployment's).
	cmd := exec.Command(bin, "serve", "--config", config, "--listen", "127.0.0.1:0", "--log-level", "info")
	cmd.Env = os.Environ()
	// Own process group so Close can kill anything the gateway spawned;
	// Pdeathsig kills it even if this driver dies without running defers.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return nil, err
	}
	g := &gatewayProc{cmd: cmd, exited: make(chan struct{})}
	g.started = time.Now()
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start gateway: %w", err)
	}
	addrc := make(chan string, 1)
	go g.readLog(stderr, addrc)
	go func() {
		_ = cmd.Wait()
		close(g.exited)
	}()

	timer := time.NewTimer(readyTimeout)
	defer timer.Stop()
	select {
	case g.addr = <-addrc:
		return g, nil
	case <-g.exited:
		err = fmt.Errorf("gateway exited before listening: %s", g.cmd.ProcessState)
	case <-timer.C:
		err = fmt.Errorf("gateway: no listening line after %s", readyTimeout)
	case <-ctx.Done():
		err = ctx.Err()
	}
	return nil, errors.Join(err, g.logError(), g.Close())
}

// readLog drains stderr for the life of the process, reporting the first
// listen address and keeping a tail for error messages.
func (g *gatewayProc) readLog(r io.Reader, addrc chan<- string) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	found := false
	for sc.Scan() {
		line := sc.Bytes()
		g.mu.Lock()
		g.tail = append(g.tail, string(line))
		if len(g.tail) > logTail {
			g.tail = g.tail[1:]
		}
		g.mu.Unlock()
		if found {
			continue
		}
		var entry struct {
			Message string `json:"message"`
			Addr    string `json:"addr"`
		}
		if json.Unmarshal(line, &entry) == nil && strings.Contains(entry.Message, "listening") && entry.Addr != "" {
			found = true
			addrc <- entry.Addr
		}
	}
}

// logError returns the stderr tail as an error, or nil if there is none.
func (g *gatewayProc) logError() error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if len(g.tail) == 0 {
		return nil
	}
	return fmt.Errorf("gateway stderr:\n  %s", strings.Join(g.tail, "\n  "))
}

func (g *gatewayProc) endpoint() string { return "http://" + g.addr + "/mcp" }

// health is the part of GET /health the driver reads.
type health struct {
	Status    string `json:"status"`
	Upstreams map[string]struct {
		Status    string `json:"status"`
		Connected bool   `json:"connected"`
		Tools     int    `json:"tools"`
	} `json:"upstreams"`
}

// waitHealthy polls /readyz and /health until every upstream in want is
// connected with at least the given number of tools, and returns how long
// after process start that happened.
func (g *gatewayProc) waitHealthy(ctx context.Context, hc *http.Client, want map[string]int) (time.Duration, error) {
	ctx, cancel := context.WithTimeout(ctx, readyTimeout)
	defer cancel()
	ready := false
	var last health
	for {
		if !ready {
			ready = g.get(ctx, hc, "/readyz", nil) == nil
		}
		if ready && g.get(ctx, hc, "/health", &last) == nil && last.covers(want) {
			return time.Since(g.started), nil
		}
		select {
		case <-time.After(healthPoll):
		case <-g.exited:
			return 0, errors.Join(fmt.Errorf("gateway exited: %s", g.cmd.ProcessState), g.logError())
		case <-ctx.Done():
			return 0, fmt.Errorf("gateway not healthy after %s (ready=%t, last /health: %+v): %w", readyTimeout, ready, last, ctx.Err())
		}
	}
}

func (h health) covers(want map[string]int) bool {
	for name, tools := range want {
		u, ok := h.Upstreams[name]
		if !ok || !u.Connected || u.Tools < tools {
			return false
		}
	}
	return true
}

// get fetches path; a non-200 /readyz is an error, while /health is decoded
// whatever its status (a degraded gateway may answer 503 with a body).
func (g *gatewayProc) get(ctx context.Context, hc *http.Client, path string, into any) error {
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+g.addr+path, nil)
	if err != nil {
		return err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return err
	}
	if into == nil {
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("GET %s: %s", path, resp.Status)
		}
		return nil
	}
	return json.Unmarshal(body, into)
}

// cpuTicks returns utime+stime of the gateway process in clock ticks.
func (g *gatewayProc) cpuTicks() (int64, error) {
	st, err := readStat(fmt.Sprintf("/proc/%d/stat", g.cmd.Process.Pid))
	return st.ticks, err
}

// childTicks returns the CPU ticks of every process below the gateway
// (descendantTicks) and how many there are.
func (g *gatewayProc) childTicks() (ticks int64, procs int, err error) {
	ticks, pids, err := descendantTicks(g.cmd.Process.Pid)
	return ticks, len(pids), err
}

// rssBytes returns VmRSS of the gateway process.
func (g *gatewayProc) rssBytes() (int64, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", g.cmd.Process.Pid))
	if err != nil {
		return 0, err
	}
	for line := range strings.Lines(string(data)) {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			f := strings.Fields(rest) // "12345 kB"
			kb, err := strconv.ParseInt(f[0], 10, 64)
			if err != nil {
				return 0, fmt.Errorf("VmRSS: %w", err)
			}
			return kb * 1024, nil
		}
	}
	return 0, errors.New("no VmRSS in /proc/pid/status")
}

// Close kills the gateway's process group and reaps it. It is safe to call
// more than once.
func (g *gatewayProc) Close() error {
	select {
	case <-g.exited:
		return nil
	default:
	}
	// Negative pid: the whole group (Setpgid made the gateway its leader).
	_ = syscall.Kill(-g.cmd.Process.Pid, syscall.SIGKILL)
	select {
	case <-g.exited:
		return nil
	case <-time.After(5 * time.Second):
		return fmt.Errorf("gateway pid %d did not exit after SIGKILL", g.cmd.Process.Pid)
	}
}
