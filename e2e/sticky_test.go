package e2e

// Sticky routing on Mcp-Session-Id (issue 11): the HAProxy example in
// deploy/sticky/haproxy.cfg, run for real in front of two stateful
// replicas. Without its stick lines, a session's requests land on a replica
// that never saw it, and fail: the control shows the test can tell.

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// haproxyConfig is deploy/sticky/haproxy.cfg listening on sock, with
// servers in place of its server-template; sticky false drops its stick
// lines.
func haproxyConfig(t *testing.T, sock string, servers []string, sticky bool) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(repoRoot(), "deploy", "sticky", "haproxy.cfg"))
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, line := range strings.Split(string(b), "\n") {
		trim := strings.TrimSpace(line)
		switch {
		case strings.HasPrefix(trim, "bind "):
			line = "    bind unix@" + sock
		case strings.HasPrefix(trim, "server-template "):
			line = ""
			for i, s := range servers {
				line += fmt.Sprintf("    server gw%d %s check inter 1s\n", i, s)
			}
		case !sticky && strings.HasPrefix(trim, "stick"):
			continue
		}
		out = append(out, line)
	}
	return strings.Join(out, "\n")
}

// startHAProxy runs haproxy with config and returns an HTTP client that
// reaches it on its Unix socket, once it answers.
func startHAProxy(t *testing.T, ctx context.Context, dir, config string) *http.Client {
	t.Helper()
	if _, err := exec.LookPath("haproxy"); err != nil {
		t.Skip("haproxy is not installed (apt-get install haproxy; `make test` does it)")
	}
	path := filepath.Join(dir, "haproxy.cfg")
	if err := os.WriteFile(path, []byte(config), 0o600); err != nil {
		t.Fatal(err)
	}
	startProcess(t, context.Background(), "haproxy", "-db", "-f", path)
	sock := filepath.Join(dir, "haproxy.sock")
	client := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", sock)
	}}}
	if err := poll(ctx, func() (bool, error) {
		resp, err := client.Get("http://127.0.0.1/readyz")
		if err != nil {
			return false, nil
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK, nil
	}); err != nil {
		t.Fatalf("haproxy never answered: %v", err)
	}
	return client
}

func TestStickySessionsHAProxy(t *testing.T) {
	t.Parallel()
	upURL := startUpstreamHTTP(t)
	gws := startReplicas(t, 2, fmt.Sprintf("upstreams:\n  up: {url: %s}\n", upURL))
	servers := []string{gws[0].Addr, gws[1].Addr}
	for _, sticky := range []bool{true, false} {
		t.Run(fmt.Sprintf("sticky=%t", sticky), func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			dir, err := os.MkdirTemp("", "credgate-haproxy-") // short: a socket path has a length limit
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { os.RemoveAll(dir) })
			client := startHAProxy(t, ctx, dir, haproxyConfig(t, filepath.Join(dir, "haproxy.sock"), servers, sticky))
			failures, calls := 0, 0
			for range 4 {
				// 127.0.0.1: the replicas listen on loopback, where the SDK's
				// DNS-rebinding protection wants a local Host.
				c := mcp.NewClient(&mcp.Implementation{Name: "agent", Version: "1"}, nil)
				cs, err := c.Connect(ctx, &mcp.StreamableClientTransport{Endpoint: "http://127.0.0.1/mcp", HTTPClient: client, MaxRetries: -1}, nil)
				if err != nil {
					t.Logf("connect: %v", err)
					failures++
					continue
				}
				for i := range 10 {
					calls++
					res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "up__echo", Arguments: map[string]any{"text": fmt.Sprint(i)}})
					if err != nil || res.IsError {
						failures++
					}
				}
				_ = cs.Close()
			}
			if sticky && failures > 0 {
				t.Errorf("%d of %d calls failed behind the sticky HAProxy", failures, calls)
			}
			if !sticky && failures == 0 {
				t.Errorf("without stickiness all %d calls succeeded: the test cannot tell", calls)
			}
			t.Logf("sticky=%t: %d calls, %d failed", sticky, calls, failures)
		})
	}
}
