package authmap

import (
	"context"
	"time"
)

// Replicas sharing renewals (issue 11).
//
// Several gateways behind a load balancer hold the same credentials. A
// source that mints values at a provider (OAuth) must not be renewed by
// each of them: providers that rotate refresh tokens reject one used twice,
// so two replicas refreshing at once would make one of them see
// invalid_grant and call the credential revoked. A [Coordinator], when set,
// is consulted before each fetch of such a source ([SharedRenewal]): it
// hands back a value a peer renewed and shared, or lets this replica fetch
// once no peer can be renewing. This package defines the seam only; the
// gateway implements it on its shared state store.

// Coordinator shares the renewals of credentials between replicas.
type Coordinator interface {
	// Renew returns the credential's next value: one a peer renewed and
	// shared, or r.Fetch's, called when this replica may renew. Its error
	// is handled like a source's (a transient failure unless it wraps one
	// of the source sentinels).
	Renew(ctx context.Context, r Renewal) (Token, error)
}

// Renewal is one renewal a Coordinator is asked for.
type Renewal struct {
	Credential string
	Trigger    Trigger
	// Current is the value held now ("" if none) and CurrentExpiry its
	// expiry (zero if unknown): a shared value is worth adopting only when
	// it is newer.
	Current       string
	CurrentExpiry time.Time
	// Source is the credential's source, a SharedRenewal.
	Source SharedRenewal
	// Fetch fetches from the source.
	Fetch func(ctx context.Context) (Token, error)
}

// SharedRenewal is a Source whose renewals replicas share through a
// Coordinator (the oauth2 source): a renewal mints a new value, and may
// rotate the refresh token the next one needs.
type SharedRenewal interface {
	Source
	// RefreshToken returns the refresh token the next renewal uses ("" for
	// the client credentials grant).
	RefreshToken() string
	// AdoptRefreshToken makes rt (a peer's renewal rotated it) the refresh
	// token the next renewal uses. An empty rt is ignored.
	AdoptRefreshToken(rt string)
	// RotatesRefreshTokens reports whether the provider was seen handing
	// back a new refresh token with a renewal (and so rejects old ones).
	RotatesRefreshTokens() bool
}

// fetch is the fetch of a renewal: through the coordinator for a source
// whose renewals are shared, else from the source.
func (c *Credential) fetch(ctx context.Context, trigger Trigger) (Token, error) {
	sr, ok := c.src.(SharedRenewal)
	if c.coord == nil || !ok {
		return c.src.Fetch(ctx)
	}
	c.mu.Lock()
	r := Renewal{Credential: c.name, Trigger: trigger, Current: c.st.value, CurrentExpiry: c.expiryLocked(), Source: sr, Fetch: c.src.Fetch}
	c.mu.Unlock()
	return c.coord.Renew(ctx, r)
}

// SharesRenewals reports whether the credential's renewals go through a
// Coordinator.
func (c *Credential) SharesRenewals() bool {
	_, ok := c.src.(SharedRenewal)
	return ok && c.coord != nil
}
