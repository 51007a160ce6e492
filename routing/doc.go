// Package routing makes the gateway's pure naming and routing decisions: how an
// upstream's tool or prompt name is exposed to agents, which names are valid,
// which upstream serves an exposed name when several offer it, and, for routed
// tools, which target serves a call and when a failed call moves to a backup.
//
// Names:
//
//	upstream "github" + separator "__" + tool "list_issues"  ->  "github__list_issues"
//	upstream with prefix ""                                   ->  "list_issues" (unchanged)
//
// Routes (`routes:` in the config, built into [Routes] by [NewRoutes]):
//
//	agent calls "search"
//	      |
//	  Routes.Lookup("search") -> Route{targets: [github__search_code, gitlab__search], on, retry_safe}
//	      |
//	  Select(route, health) -> [github__search_code: unusable, credential_revoked]   (an attempt)
//	      |                    [gitlab__search: usable]
//	      v
//	  MapArguments(route, "gitlab__search", args)  (rename, then set)
//	      |
//	  call fails? ShouldFailover(route, reason, executed, annotatedSafe) -> next candidate, or answer
//	      |
//	  served by a backup: _meta["dev.credgate/route"] = Meta{served_by, reason, attempts}
//
// It knows nothing of MCP, of breakers or of credentials: the gateway adapts
// its state to the small [Health] interface and hands in names and
// arguments, so the rules can be tested exhaustively.
package routing
