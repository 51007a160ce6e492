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

// TestGatewayProcs checks the scheduler's share of the machine the binary
// takes (issue 12): half the processors by default, as its listening line
// says, and what GOMAXPROCS says when it is set.
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
		{nil, max(1, (runtime.NumCPU()+1)/2)},
		{[]string{"GOMAXPROCS=3"}, 3},
		{[]string{"GOMAXPROCS=abc"}, max(1, (runtime.NumCPU()+1)/2)}, // not a count: ignored, as Go ignores it
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
