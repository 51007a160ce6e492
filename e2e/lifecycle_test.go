package e2e

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// typedFailure returns the failure object of a tool result, failing the test
// if the result is not a typed failure.
func typedFailure(t *testing.T, what string, res *mcp.CallToolResult) map[string]any {
	t.Helper()
	m, _ := res.Meta["dev.credgate/error"].(map[string]any)
	if !res.IsError || m == nil {
		t.Fatalf("%s: not a typed failure: isError=%v meta=%v text=%q", what, res.IsError, res.Meta, toolText(res))
	}
	return m
}

// Regression test for issue 6 item 9: SIGTERM with a call in flight on a hung
// upstream. New calls are refused at once (a typed upstream_unavailable on an
// existing session, 503 for a new one), the call in flight gets until
// shutdown_timeout and then a typed upstream_unavailable answer (not a
// dropped connection), and the process exits cleanly. Today a hung upstream
// holds SIGTERM for as long as its calls run.
func TestShutdownDeadline(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	gw := startGateway(t, fmt.Sprintf("shutdown_timeout: 3s\nupstreams:\n  up:\n    command: %q\n    timeout: 10m\n", bin("testupstream")))
	started := make(chan struct{}, 1)
	cs := connectClientWith(t, ctx, gw.URL, &mcp.ClientOptions{
		ProgressNotificationHandler: func(context.Context, *mcp.ProgressNotificationClientRequest) {
			select {
			case started <- struct{}{}:
			default:
			}
		},
	})

	type outcome struct {
		res *mcp.CallToolResult
		err error
	}
	inFlight := make(chan outcome, 1)
	go func() {
		params := &mcp.CallToolParams{Name: "up__slow", Arguments: map[string]any{"ms": 600_000}}
		params.SetProgressToken("hung")
		res, err := cs.CallTool(ctx, params)
		inFlight <- outcome{res, err}
	}()
	select {
	case <-started: // the upstream is running the call
	case <-ctx.Done():
		t.Fatal("the call never started upstream")
	}
	if err := syscall.Kill(gw.Pid(), syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}

	// Draining: not ready, new calls refused.
	if err := poll(ctx, func() (bool, error) {
		resp, err := httpGet(ctx, "http://"+gw.Addr+"/readyz")
		if err != nil {
			return false, err
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusServiceUnavailable, nil
	}); err != nil {
		t.Fatalf("/readyz never turned 503 after SIGTERM: %v", err)
	}
	res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "up__echo", Arguments: map[string]any{"text": "late"}})
	if err != nil {
		t.Fatalf("new call after SIGTERM: %v, want a typed result", err)
	}
	if f := typedFailure(t, "new call after SIGTERM", res); f["type"] != "upstream_unavailable" || f["detail"] != "gateway is shutting down" || f["retryable"] != true {
		t.Errorf("new call after SIGTERM = %v, want a retryable upstream_unavailable: gateway is shutting down", f)
	}
	body := `{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"late","version":"1"}}}`
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, gw.URL, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, text/event-stream")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("new session after SIGTERM: %v, want HTTP 503", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("new session after SIGTERM: HTTP %d, want 503", resp.StatusCode)
	}

	// The call in flight is answered, typed, at the deadline.
	var o outcome
	select {
	case o = <-inFlight:
	case <-ctx.Done():
		t.Fatal("the call in flight got no answer")
	}
	if o.err != nil {
		t.Fatalf("call in flight: %v, want a typed result", o.err)
	}
	if f := typedFailure(t, "call in flight at the deadline", o.res); f["type"] != "upstream_unavailable" || f["detail"] != "gateway is shutting down" {
		t.Errorf("call in flight ended with %v, want upstream_unavailable: gateway is shutting down", f)
	}
	if err := gw.wait(ctx); err != nil {
		t.Errorf("gateway exit: %v, want a clean exit", err)
	}
}

// gone reports whether process pid no longer runs (a zombie counts as gone:
// it is dead, waiting for a parent that may never reap it).
func gone(pid int) bool {
	stat, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return true
	}
	s := string(stat)
	i := strings.LastIndexByte(s, ')')
	return i < 0 || strings.HasPrefix(strings.TrimSpace(s[i+1:]), "Z")
}

// Regression test for issue 6 item 10: a stdio upstream's whole process
// group dies with the gateway, whether it stops (SIGTERM) or is killed
// (SIGKILL, where no gateway code runs). The upstream is a shell that leaves
// a grandchild behind before it execs the server, as `sh -c 'x & y'`, npx
// and docker run do; today that grandchild is orphaned either way.
func TestProcessGroupDiesWithGateway(t *testing.T) {
	t.Parallel()
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGKILL} {
		t.Run(sig.String(), func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			pidFile := filepath.Join(t.TempDir(), "grandchild.pid")
			script := fmt.Sprintf("sleep 600 </dev/null >/dev/null 2>&1 & echo $! > %s; exec %s", pidFile, bin("testupstream"))
			gw := startGateway(t, fmt.Sprintf("upstreams:\n  up:\n    command: /bin/sh\n    args: [-c, %q]\n", script))
			var pid int
			if err := poll(ctx, func() (bool, error) {
				b, err := os.ReadFile(pidFile)
				if err != nil || !strings.HasSuffix(string(b), "\n") {
					return false, nil
				}
				pid, err = strconv.Atoi(strings.TrimSpace(string(b)))
				return err == nil, err
			}); err != nil {
				t.Fatalf("the upstream never wrote its grandchild's pid: %v", err)
			}
			t.Cleanup(func() {
				// Never leave it behind, whatever the outcome.
				if cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid)); strings.HasPrefix(string(cmdline), "sleep") {
					_ = syscall.Kill(pid, syscall.SIGKILL)
				}
			})
			if gone(pid) {
				t.Fatalf("grandchild %d is not running", pid)
			}

			if err := syscall.Kill(gw.Pid(), sig); err != nil {
				t.Fatal(err)
			}
			_ = gw.wait(ctx)
			if err := poll(ctx, func() (bool, error) { return gone(pid), nil }); err != nil {
				t.Errorf("grandchild %d outlived the gateway (%s): %v", pid, sig, err)
			}
		})
	}
}
