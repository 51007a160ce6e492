package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"reflect"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// Acceptance 5 of issue 8: the MCP resource credgate://health is the /health
// document, for an orchestrator connected over MCP.
func TestHealthResourceMatchesHealth(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	upURL := startUpstreamHTTP(t)
	gw := startGateway(t, fmt.Sprintf(`
upstreams:
  up: {url: %s}
  dead: {url: "http://127.0.0.1:1/mcp"}
`, upURL))
	cs := connectClient(t, ctx, gw.URL)
	// Both documents drift by their gauges (sessions, goroutines): compare
	// the rest, read back to back until two reads agree (an upstream may
	// change state between them).
	strip := func(h map[string]any) map[string]any {
		delete(h, "sessions")
		delete(h, "goroutines")
		return h
	}
	var viaMCP, viaHTTP map[string]any
	err := poll(ctx, func() (bool, error) {
		rr, err := cs.ReadResource(ctx, &mcp.ReadResourceParams{URI: "credgate://health"})
		if err != nil {
			return false, err
		}
		if len(rr.Contents) != 1 || rr.Contents[0].MIMEType != "application/json" {
			return false, fmt.Errorf("contents %+v, want one application/json document", rr.Contents)
		}
		viaMCP = nil
		if err := json.Unmarshal([]byte(rr.Contents[0].Text), &viaMCP); err != nil {
			return false, err
		}
		viaHTTP, err = gw.health(ctx)
		if err != nil {
			return false, err
		}
		return reflect.DeepEqual(strip(viaMCP), strip(viaHTTP)), nil
	})
	if err != nil {
		t.Fatalf("credgate://health never matched /health: %v\nMCP:  %v\nHTTP: %v", err, viaMCP, viaHTTP)
	}
	if upstreamHealth(viaMCP, "up")["status"] != "up" || upstreamHealth(viaMCP, "dead")["status"] == "up" {
		t.Fatalf("health resource upstreams = %v", viaMCP["upstreams"])
	}
}
