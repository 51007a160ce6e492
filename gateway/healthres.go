package gateway

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/credgate/credgate/breaker"
)

// HealthURI is the MCP resource that holds the /health document, so an
// orchestrator connected over MCP reads the gateway's health without HTTP.
// Agents subscribed to it get notifications/resources/updated when it
// changes.
const HealthURI = "credgate://health"

// healthBackstop is how often the health resource is compared even without
// a change signal: a credential turns expiring by the clock alone.
const healthBackstop = 5 * time.Second

// readHealthResource answers resources/read of HealthURI. The resource is
// not listed: resources/list stays what the upstreams offer (the gateway is
// transparent in front of one server, and agents' models are not shown the
// gateway's topology); orchestrators read it by its documented URI.
func (g *Server) readHealthResource() (*mcp.ReadResourceResult, error) {
	b, err := json.MarshalIndent(g.Health(), "", "  ")
	if err != nil {
		return nil, err
	}
	return &mcp.ReadResourceResult{Contents: []*mcp.ResourceContents{{URI: HealthURI, MIMEType: "application/json", Text: string(b)}}}, nil
}

// healthChanged asks the health watcher to compare the document now. It
// never blocks: signals coalesce.
func (g *Server) healthChanged() {
	select {
	case g.healthSig <- struct{}{}:
	default:
	}
}

// watchHealth sends resources/updated for HealthURI whenever the health
// document changes in substance (what the gauges of the process, sessions
// and goroutines, say is left out: they change all the time).
func (g *Server) watchHealth(ctx context.Context) {
	defer g.recoverLog("health watch", "")
	t := time.NewTicker(healthBackstop)
	defer t.Stop()
	var last []byte
	for {
		select {
		case <-ctx.Done():
			return
		case <-g.healthSig:
		case <-t.C:
		}
		h := g.Health()
		h.Sessions, h.Goroutines = 0, 0
		b, err := json.Marshal(h)
		if err != nil || bytes.Equal(b, last) {
			continue
		}
		first := last == nil
		last = b
		if !first {
			_ = g.mcp.ResourceUpdated(ctx, &mcp.ResourceUpdatedNotificationParams{URI: HealthURI})
		}
	}
}

// canServe reports whether at least one upstream can serve calls now:
// connected, with its breaker not open. With no upstream configured the
// gateway serves (an empty catalog), so it can.
func (g *Server) canServe() bool {
	ups := g.ups()
	if len(ups) == 0 {
		return true
	}
	for _, u := range ups {
		if u.session.Load() != nil && !g.breakerOpen(u.name) {
			return true
		}
	}
	return false
}

// breakerOpen reports whether upstream name's own breaker refuses calls for
// a reason other than connect failures (those the connect loop decides on;
// see admit).
func (g *Server) breakerOpen(name string) bool {
	var oe *breaker.OpenError
	err := g.breakers.Check(name, 0)
	return errors.As(err, &oe) && oe.Reason != reasonConnect
}
