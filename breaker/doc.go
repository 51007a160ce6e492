// Package breaker holds the gateway's circuit breakers, one per upstream and
// one per credential used on an upstream, on github.com/sony/gobreaker/v2's
// two-step breaker. It knows nothing of MCP: the caller asks before a call,
// classifies the outcome once, and reports it.
//
//	            Set (registry by stable name; survives Apply on reload)
//	             |
//	  "github" --+-- breaker: gobreaker (consecutive failures -> open_timeout)
//	             |            + hold beside it:
//	             |              until the credential generation changes (revoked, invalid, missing, expired)
//	"github/pat" +              until a provider's reset (rate_limit_reached, quota_exhausted)
//	                            until a peer's fact ends (Honour)
//
//	done, err := set.Allow("github/pat", generation) // err: *OpenError{Name, Reason, RetryAfter}
//	... make the call, classify it ...
//	done(breaker.Success())   // or Failure("timeout"), Excluded(), Rejected("credential_revoked"),
//	                          //    RateLimited(reset), QuotaExhausted(reset)
//
// gobreaker has one open timeout per breaker, which suits failures whose end
// nobody knows. Auth outcomes do know more: a revoked credential will not come
// back by waiting, so its breaker stays open until the caller passes a new
// credential generation, and a provider that said "retry after 2s" or "quota
// resets at 14:00" is taken at its word. Those waits are kept beside
// gobreaker, not folded into its timeout; when a timed wait ends the breaker
// lets half_open_requests probes through, and a probe's success closes it.
//
// The caller reports auth outcomes to the credential's breaker and transport
// failures to the upstream's; an isError tool result is a Success (the
// upstream is alive) and caller cancellation is Excluded (it never counts).
//
// Replicas share opens as facts: an observer (Options.OnChange) sees each
// state change and [Change.Fact] says whether it is a timed open worth
// publishing; a peer applies it with [Set.Honour]. Changes caused by Honour
// are marked Peer so they are not echoed back.
package breaker
