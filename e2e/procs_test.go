package e2e

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"runtime"
	"testing"
	"time"
)

// TestGatewayProcs checks that the binary's listening line says how many
// processors Go's scheduler has: Go's default (as this test's own, with the
// same environment), or what GOMAXPROCS says.
func TestGatewayProcs(t *testing.T) {
	t.Parallel()
	cfg := filepath.Join(t.TempDir(), "gateway.yaml")
	if err := os.WriteFile(cfg, []byte("upstreams: {}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		env  []string
		want int
	}{
		{nil, runtime.GOMAXPROCS(0)},
		{[]string{"GOMAXPROCS=3"}, 3},
	} {
		p := startCmdEnv(t, tc.env, "serve", "--config", cfg, "--listen", "127.0.0.1:0")
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		m, err := p.waitFunc(ctx, listenAddr)
		cancel()
		if err != nil {
			t.Fatalf("%v: no listening line: %v\n%s", tc.env, err, p.Output())
		}
		var rec struct{ Procs int }
		if err := json.Unmarshal([]byte(m[0]), &rec); err != nil || rec.Procs != tc.want {
			t.Errorf("%v: procs %d (%v) in %s; want %d", tc.env, rec.Procs, err, m[0], tc.want)
		}
		p.stop()
	}
}
