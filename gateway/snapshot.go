package gateway

import (
	"context"
	"time"
)

// snapshot is one loaded config and the upstreams serving it. It is
// immutable once published in Server.snap: a config reload builds a new one
// and swaps the pointer, so a call that read the old snapshot finishes on the
// config it started with.
//
// Upstreams are keyed by their stable config name. A reload carries an
// untouched upstream (same name, same settings) over to the new snapshot as
// the same *upstream, with its session and child; breaker and credential
// state live in registries keyed by name (breaker.Set, authmap.Set) and so
// outlive any snapshot.
type snapshot struct {
	cfg       *Config
	upstreams []*upstream          // config order
	byName    map[string]*upstream // by config name
	version   int64                // 1 for the config the gateway started with
	loadedAt  time.Time
}

// config returns the config in force.
func (g *Server) config() *Config { return g.snap.Load().cfg }

// ups returns the upstreams in force, in config order. The slice is shared:
// never modify it.
func (g *Server) ups() []*upstream { return g.snap.Load().upstreams }

// upstream returns the upstream in force named name, or nil.
func (g *Server) upstream(name string) *upstream { return g.snap.Load().byName[name] }

// startUpstream runs u's connect loop on the gateway's run context until the
// gateway closes or u is stopped.
func (g *Server) startUpstream(u *upstream) {
	ctx, cancel := context.WithCancel(g.runCtx)
	u.stop = cancel
	g.wg.Add(1)
	go func() {
		defer g.wg.Done()
		defer close(u.stopped)
		u.run(ctx)
	}()
}
