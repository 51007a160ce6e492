package gateway

import (
	"context"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// TestLeavesStayLeaves holds the architecture line: routing, breaker and
// authmap never import the core or the MCP SDK.
func TestLeavesStayLeaves(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	for _, leaf := range []string{"routing", "breaker", "authmap"} {
		out, err := exec.CommandContext(ctx, "go", "list", "-deps", "github.com/credgate/credgate/"+leaf).CombinedOutput()
		if err != nil {
			t.Fatalf("go list %s: %v\n%s", leaf, err, out)
		}
		for _, dep := range strings.Fields(string(out)) {
			if dep == "github.com/credgate/credgate/gateway" || strings.HasPrefix(dep, "github.com/modelcontextprotocol/") {
				t.Errorf("leaf %s imports %s", leaf, dep)
			}
		}
	}
}
