package gateway

import (
	"context"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// TestLeavesStayLeaves holds the architecture line: routing, breaker and
// authmap (with its source subpackages) never import the core, the MCP SDK
// or one another; a leaf's only credgate imports are its own packages, and
// the standalone leaves under authmap (the resource server's token
// verifier, issue 9) import no credgate package at all.
func TestLeavesStayLeaves(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	const module = "github.com/credgate/credgate/"
	for _, leaf := range []string{"routing", "breaker", "authmap"} {
		out, err := exec.CommandContext(ctx, "go", "list", "-deps", module+leaf+"/...").CombinedOutput()
		if err != nil {
			t.Fatalf("go list %s: %v\n%s", leaf, err, out)
		}
		for _, dep := range strings.Fields(string(out)) {
			own := dep == module+leaf || strings.HasPrefix(dep, module+leaf+"/")
			if strings.HasPrefix(dep, module) && !own || strings.HasPrefix(dep, "github.com/modelcontextprotocol/") {
				t.Errorf("leaf %s imports %s", leaf, dep)
			}
		}
	}
	for _, leaf := range []string{"authmap/oauthrs"} {
		out, err := exec.CommandContext(ctx, "go", "list", "-deps", module+leaf).CombinedOutput()
		if err != nil {
			t.Fatalf("go list %s: %v\n%s", leaf, err, out)
		}
		for _, dep := range strings.Fields(string(out)) {
			if strings.HasPrefix(dep, module) && dep != module+leaf || strings.HasPrefix(dep, "github.com/modelcontextprotocol/") {
				t.Errorf("standalone leaf %s imports %s", leaf, dep)
			}
		}
	}
}
