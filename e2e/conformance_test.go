package e2e

import (
	"context"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// conformanceSummaryRE matches the suite's per-scenario summary lines,
// "✓ tools-list: 1 passed, 0 failed" or "✗ ping: 0 passed, 1 failed, 1 warnings".
var conformanceSummaryRE = regexp.MustCompile(`^([✓✗]) (\S+): (\d+) passed, (\d+) failed`)

var conformanceTotalRE = regexp.MustCompile(`^Total: (\d+) passed, (\d+) failed`)

// runConformance runs the official MCP conformance suite (all scenarios,
// pending ones included) against url with Node 22 and returns the scenarios
// that passed and failed. It fails the test if the suite cannot be run or its
// summary cannot be read; it does not fail on failing scenarios.
func runConformance(t *testing.T, ctx context.Context, url string) (passed, failed []string) {
	t.Helper()
	requireNode(t)
	cmd := exec.Command(nodeBin(), npmPkg("@modelcontextprotocol/conformance/dist/index.js"),
		"server", "--url", url, "--suite", "all")
	cmd.Dir = t.TempDir() // the suite may write results relative to its cwd
	p := startCmd(t, ctx, "conformance", cmd)
	exitErr := p.wait(ctx)
	if ctx.Err() != nil {
		t.Fatalf("conformance suite did not finish: %v\n%s", ctx.Err(), tail(p.Output(), 100))
	}

	total := ""
	for _, line := range p.Lines() {
		if m := conformanceSummaryRE.FindStringSubmatch(line); m != nil {
			// ✗ also marks scenarios with only warnings (SHOULDs); failed checks decide.
			if m[4] == "0" {
				passed = append(passed, m[2])
			} else {
				failed = append(failed, m[2])
			}
		}
		if m := conformanceTotalRE.FindStringSubmatch(line); m != nil {
			total = line
		}
	}
	if total == "" || len(passed)+len(failed) == 0 {
		t.Fatalf("no summary in conformance output (exit: %v):\n%s", exitErr, tail(p.Output(), 100))
	}
	t.Logf("conformance against %s: %d scenarios passed, %d failed; %s", url, len(passed), len(failed), total)
	if len(failed) > 0 {
		t.Logf("conformance output:\n%s", failedDetails(p.Lines()))
	}
	// The suite exits non-zero exactly when a check failed; a disagreement
	// means the summary format changed under us.
	if (exitErr != nil) != (len(failed) > 0) {
		t.Errorf("conformance exit status (%v) disagrees with its summary (%d failed scenarios)", exitErr, len(failed))
	}
	return passed, failed
}

// failedDetails returns the suite's "Failed Checks" sections.
func failedDetails(lines []string) string {
	var out []string
	in := false
	for _, l := range lines {
		switch {
		case strings.Contains(l, "Failed Checks"):
			in = true
		case strings.HasPrefix(l, "=== Running scenario"), strings.HasPrefix(l, "=== SUMMARY"):
			in = false
			if strings.HasPrefix(l, "=== Running scenario") {
				out = append(out, l)
			}
		}
		if in {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// TestConformanceDirect runs the conformance suite against testupstream
// itself: the fixtures the gateway is later measured with must be complete.
func TestConformanceDirect(t *testing.T) {
	requireNode(t)
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()

	url := startUpstreamHTTP(t)
	passed, failed := runConformance(t, ctx, url)
	if len(failed) > 0 {
		t.Errorf("conformance scenarios failed against testupstream: %v", failed)
	}
	// Scenarios the suite ran in version 0.1.16 (`conformance list --server`);
	// a missing one means the suite skipped it or the parse broke.
	for _, s := range []string{"server-initialize", "tools-call-sampling", "tools-call-elicitation",
		"elicitation-sep1330-enums", "json-schema-2020-12", "resources-templates-read", "dns-rebinding-protection"} {
		if !slices.Contains(passed, s) {
			t.Errorf("scenario %s did not pass (passed: %v)", s, passed)
		}
	}
}

// TestEverythingDirect is a sanity check of the third-party reference server
// the gateway federates in other tests: it starts over stdio with a minimal
// environment and lists its tools.
func TestEverythingDirect(t *testing.T) {
	requireNode(t)
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	cmd := exec.Command(nodeBin(), npmPkg("@modelcontextprotocol/server-everything/dist/index.js"), "stdio")
	// Its get-env tool returns its whole environment: give it nothing secret.
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + t.TempDir(), "GZIP_ALLOWED_DOMAINS=127.0.0.1"}
	cmd.Stderr = testWriter{t}
	client := mcp.NewClient(&mcp.Implementation{Name: "credgate-e2e", Version: "1.0.0"}, nil)
	// It does not exit when stdin closes; don't wait the default 5s before SIGTERM.
	cs, err := client.Connect(ctx, &mcp.CommandTransport{Command: cmd, TerminateDuration: 500 * time.Millisecond}, nil)
	if err != nil {
		t.Fatalf("connect to server-everything: %v", err)
	}
	defer cs.Close()

	var names []string
	for tool, err := range cs.Tools(ctx, nil) {
		if err != nil {
			t.Fatalf("list tools: %v", err)
		}
		names = append(names, tool.Name)
	}
	// 13 tools for a client declaring no capabilities (see shared notes).
	if len(names) < 13 || !slices.Contains(names, "echo") {
		t.Errorf("server-everything tools = %v; want at least 13 including echo", names)
	}
	res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "echo", Arguments: map[string]any{"message": "hi"}})
	if err != nil {
		t.Fatalf("call echo: %v", err)
	}
	if got := toolText(res); !strings.Contains(got, "hi") {
		t.Errorf("echo returned %q; want it to contain %q", got, "hi")
	}
}

// testWriter sends a child's stderr to the test log.
type testWriter struct{ t *testing.T }

func (w testWriter) Write(b []byte) (int, error) {
	w.t.Logf("%s", strings.TrimRight(string(b), "\n"))
	return len(b), nil
}
