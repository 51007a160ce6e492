package e2e

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// TestValidateWarnsShortSecrets is the regression test for issue 6 item 13
// (validate): a configured secret shorter than 8 characters is valid, but
// validate warns on stderr, naming its key and never its value, and exits 0.
func TestValidateWarnsShortSecrets(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	const short = "k3y9z"
	cfg := t.TempDir() + "/short.yaml"
	if err := os.WriteFile(cfg, []byte("upstreams:\n  h:\n    url: https://example.com/mcp\n    headers: {X-Api-Key: "+short+"}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, bin("gateway"), "validate", "--config", cfg)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("validate: %v\n%s%s", err, stdout.String(), stderr.String())
	}
	if !strings.Contains(stderr.String(), "warning: upstreams.h.headers.X-Api-Key: the secret is shorter than 8 characters") {
		t.Errorf("validate stderr = %q; want a warning naming upstreams.h.headers.X-Api-Key", stderr.String())
	}
	if out := stdout.String() + stderr.String(); strings.Contains(out, short) {
		t.Errorf("validate output carries the secret:\n%s", out)
	}
}
