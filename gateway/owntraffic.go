package gateway

import (
	"context"

	"github.com/credgate/credgate/authmap"
	"github.com/credgate/credgate/breaker"
)

// The upstream's own traffic (initialize, listings, health probes) carries
// its default credential. A rejection of it there says as much about the
// credential as a call's would: it feeds the credential's live status (and
// with it /health, metrics, events and alerts), after the same reactive
// renewal a call gets; and once the value is known revoked or invalid,
// injectCredential sends it no more, so the reconnect loop does not keep
// presenting a dead token until it changes (issue 8: no retry storm).

// noteOwnSent records the value the upstream's own traffic just sent.
func (u *upstream) noteOwnSent(v string) {
	if p := u.ownSent.Load(); p == nil || *p != v {
		u.ownSent.Store(&v)
	}
}

// ownTrafficRejected feeds f, the failure of the upstream's own request
// that ended with err, to the default credential when the provider
// rejected that credential. It may renew the credential, so it blocks up to
// credentialTimeout: call it from the connect loop or the probe, not from
// a call.
func (u *upstream) ownTrafficRejected(ctx context.Context, err error, f authmap.Failure) {
	u.ownTrafficRejectedAt(ctx, err, f, u.ownGeneration())
}

// ownGeneration is the generation of the upstream's default credential, or 0.
func (u *upstream) ownGeneration() uint64 {
	if c := u.gw.credential(u.defaultCred); c != nil {
		return c.Generation()
	}
	return 0
}

// ownTrafficRejectedAt is ownTrafficRejected for a failure found while the
// credential was at generation gen: when it has changed since (a new
// value, a peer's or an admin's restore), the failure is old news and
// changes nothing. Run late (the probe's renewal runs on its own), it
// marked a credential invalid again right after a peer restored it.
func (u *upstream) ownTrafficRejectedAt(ctx context.Context, err error, f authmap.Failure, gen uint64) {
	if !f.IsAuth() || u.defaultCred == "" || f.Credential != u.defaultCred || notSent(err) || ctx.Err() != nil {
		return
	}
	if via := u.ownVia.Load(); via != nil && via.credential != u.defaultCred {
		// It carried another of its tools' credentials, the default's
		// being dead (ownFallback): the rejection is that one's, so that
		// it is not sent again either.
		if c := u.gw.credential(via.credential); c != nil && c.Value() == via.value && opensCredential(f.Subtype) {
			f.Credential = via.credential
			f.Detail, f.ProviderCode = u.gw.redact(f.Detail), u.gw.redact(f.ProviderCode)
			c.ReportFailure(f, via.value, "the upstream's own request")
		}
		return
	}
	c := u.gw.credential(u.defaultCred)
	p := u.ownSent.Load()
	if c == nil || p == nil || *p == "" || c.Generation() != gen {
		return
	}
	used := *p
	if opensCredential(f.Subtype) && c.Value() == used {
		// What the provider said, for the calls held back meanwhile.
		u.gw.credCauses.Store(u.defaultCred, credCause{f: f, gen: c.Generation()})
	}
	if renewable(&f) {
		rctx, cancel := context.WithTimeout(ctx, credentialTimeout)
		stop := context.AfterFunc(u.gw.abortCtx, cancel) // a gateway stopping ends it
		renewed := c.RenewAfterRejection(rctx, used)
		stop()
		cancel()
		if renewed {
			return // the new value wakes the reconnect (wakeForCredential)
		}
		if c.Knowledge().RefreshRejected {
			c.Report(authmap.SubtypeCredentialRevoked, used)
			return
		}
	}
	if c.Generation() != gen {
		return // restored or replaced while it renewed
	}
	f.Detail, f.ProviderCode = u.gw.redact(f.Detail), u.gw.redact(f.ProviderCode)
	c.ReportFailure(f, used, "the upstream's own request")
	// The credential's breaker hears it as it hears a call's: one
	// half-open after a rate limit stayed half-open when the probe then
	// found the credential invalid (found trying the gateway from outside).
	if _, out := breakerOutcomes(nil, &f); opensCredential(f.Subtype) {
		if done, err := u.gw.breakers.Allow(breaker.Name(u.name, u.defaultCred), gen); err == nil {
			done(out)
		}
	}
}
