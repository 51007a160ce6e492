package e2e

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// runInspector runs the MCP Inspector CLI (@modelcontextprotocol/inspector-cli,
// a real third-party client) with args, e.g.
//
//	runInspector(t, ctx, "--cli", url, "--transport", "http", "--method", "tools/list")
//
// and returns its stdout (JSON) and exit error.
//
// Quirk of 1.0.3: it picks its own package.json with fs.existsSync("../package.json")
// relative to the working directory but imports that path relative to its module,
// so it fails unless the cwd's parent holds some package.json. It runs from a
// temporary directory arranged that way.
func runInspector(t *testing.T, ctx context.Context, args ...string) (string, error) {
	t.Helper()
	requireNode(t)
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "package.json"), []byte("{}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cwd := filepath.Join(dir, "cwd")
	if err := os.Mkdir(cwd, 0o700); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(nodeBin(), append([]string{npmPkg("@modelcontextprotocol/inspector-cli/build/cli.js")}, args...)...)
	cmd.Dir = cwd
	p := startCmd(t, ctx, "inspector-cli", cmd)
	err := p.wait(ctx)
	return strings.Join(p.Stdout(), "\n"), err
}

// TestInspectorDirect checks that the Inspector CLI can drive testupstream,
// so tests through the gateway can rely on it.
func TestInspectorDirect(t *testing.T) {
	requireNode(t)
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	url := startUpstreamHTTP(t)
	out, err := runInspector(t, ctx, "--cli", url, "--transport", "http",
		"--method", "tools/call", "--tool-name", "add", "--tool-arg", "a=2", "b=40")
	if err != nil {
		t.Fatalf("inspector-cli: %v\n%s", err, out)
	}
	var res struct {
		Content []struct{ Text string } `json:"content"`
	}
	if err := json.Unmarshal([]byte(out), &res); err != nil || len(res.Content) != 1 || res.Content[0].Text != "42" {
		t.Errorf("inspector add(2, 40) = %s (%v); want one text content 42", out, err)
	}
}
