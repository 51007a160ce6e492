package authmap

import (
	"fmt"
	"time"
)

// Status is a credential's health.
type Status uint8

// Statuses. The zero value is StatusUnknown.
const (
	// StatusUnknown: not loaded yet.
	StatusUnknown Status = iota
	// StatusHealthy: a value is held and nothing says it does not work.
	StatusHealthy
	// StatusExpiring: it expires soon: within lifecycle.expiry_warning for a
	// credential the gateway cannot renew, or past its refresh point with the
	// renewal failing for one it can.
	StatusExpiring
	// StatusExpired: past its expiry, or a call was answered credential_expired.
	StatusExpired
	// StatusRevoked: a refresh was answered invalid_grant, or a call was
	// answered credential_revoked.
	StatusRevoked
	// StatusInvalid: the provider rejected the value (a call or the probe
	// answered credential_invalid), or the token endpoint rejected the OAuth client.
	StatusInvalid
	// StatusMissing: there is no value: the source resolved to nothing or
	// could not be read.
	StatusMissing
	// StatusRateLimited: a call was answered rate_limit_reached; it clears on
	// the next call that authenticates, or by itself when the provider said
	// the limit resets (its Retry-After), a minute on if it did not say.
	StatusRateLimited
)

var statusNames = [...]string{"unknown", "healthy", "expiring", "expired", "revoked", "invalid", "missing", "rate_limited"}

func (s Status) String() string {
	if int(s) < len(statusNames) {
		return statusNames[s]
	}
	return fmt.Sprintf("Status(%d)", s)
}

// Statuses lists every Status, in order (the one-hot series of
// credgate_credential_status have one per status).
func Statuses() []Status {
	out := make([]Status, len(statusNames))
	for i := range out {
		out[i] = Status(i)
	}
	return out
}

// MarshalText writes the status's name (JSON, logs).
func (s Status) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// UnmarshalText reads a status's name (state shared between replicas).
func (s *Status) UnmarshalText(b []byte) error {
	for i, n := range statusNames {
		if n == string(b) {
			*s = Status(i)
			return nil
		}
	}
	return fmt.Errorf("unknown credential status %q", b)
}

// dead reports whether s says the provider refused the value (revoked,
// invalid, expired).
func (s Status) dead() bool {
	return s == StatusRevoked || s == StatusInvalid || s == StatusExpired
}

// Usable reports whether calls should be sent with a credential in this
// status: healthy, expiring and unknown (not checked yet) are; the others are
// known to fail.
func (s Status) Usable() bool {
	return s == StatusHealthy || s == StatusExpiring || s == StatusUnknown
}

// StatusOf maps an auth failure subtype a provider answered with to the
// credential status it implies; false for subtypes that say nothing about the
// credential itself (insufficient_scope, permission_denied, quota_exhausted).
func StatusOf(sub Subtype) (Status, bool) {
	switch sub {
	case SubtypeCredentialMissing:
		return StatusMissing, true
	case SubtypeCredentialInvalid:
		return StatusInvalid, true
	case SubtypeCredentialExpired:
		return StatusExpired, true
	case SubtypeCredentialRevoked:
		return StatusRevoked, true
	case SubtypeRateLimitReached:
		return StatusRateLimited, true
	}
	return 0, false
}

// EventKind is what happened to a credential.
type EventKind string

// Event kinds.
const (
	// EventLoaded: the pre-flight read a value, or the source holds the
	// value again after failing to (the same value back).
	EventLoaded EventKind = "loaded"
	// EventValidated: the probe accepted the value.
	EventValidated EventKind = "validated"
	// EventRefreshed: a renewable credential (OAuth) got a new value.
	EventRefreshed EventKind = "refreshed"
	// EventRotated: the source handed a new value (file, exec, Vault, AWS,
	// env after a reload) and it replaced the old one.
	EventRotated EventKind = "rotated"
	// EventExpiring: the credential entered its warning window.
	EventExpiring EventKind = "expiring"
	// EventExpired: it passed its expiry, or a call was answered credential_expired.
	EventExpired EventKind = "expired"
	// EventRevoked: a refresh was rejected (invalid_grant) or a call was
	// answered credential_revoked.
	EventRevoked EventKind = "revoked"
	// EventInvalid: the provider or the token endpoint rejected the value or client.
	EventInvalid EventKind = "invalid"
	// EventMissing: the source resolved to nothing where there was no value to keep.
	EventMissing EventKind = "missing"
	// EventRateLimited: a call was answered rate_limit_reached.
	EventRateLimited EventKind = "rate_limited"
	// EventRestored: a credential that was not usable is healthy again
	// without a new value (a call authenticated, a rate limit cleared).
	EventRestored EventKind = "restored"
	// EventRejectedRotation: a new value from the source failed its check (or
	// the source resolved to nothing) and the old value was kept.
	EventRejectedRotation EventKind = "rejected_rotation"
	// EventRefreshFailed: a renewal or re-read of the source failed for a
	// reason that may pass (the token endpoint or the store unreachable, a
	// 5xx); the value held is kept and the renewal is retried with backoff.
	// A source failing the same way again is not reported again.
	EventRefreshFailed EventKind = "refresh_failed"
)

func (k EventKind) String() string { return string(k) }

// Trigger is what started the work an event reports.
type Trigger string

// Triggers.
const (
	TriggerStartup   Trigger = "startup"    // the pre-flight
	TriggerWatch     Trigger = "watch"      // the expiry watch (every check_interval, and at expiry points)
	TriggerRefresh   Trigger = "refresh"    // a renewal before expiry
	TriggerFile      Trigger = "file"       // the file source changed
	TriggerSignal    Trigger = "signal"     // SIGHUP
	TriggerAdmin     Trigger = "admin"      // POST /admin/credentials/<name>/reload
	TriggerWebhook   Trigger = "webhook"    // POST /webhooks/rotate/<name>
	TriggerLiveError Trigger = "live_error" // a call's auth failure
	TriggerConfig    Trigger = "config"     // a config reload added or changed the credential
	// TriggerPeer: a peer replica announced a rotation or shared a renewed
	// value (issue 11).
	TriggerPeer Trigger = "peer"
)

func (t Trigger) String() string { return string(t) }

// manual reports whether a person or a provider asked for this: such a
// renewal is tried even for a credential whose refresh was rejected.
func (t Trigger) manual() bool {
	return t == TriggerSignal || t == TriggerAdmin || t == TriggerWebhook || t == TriggerFile || t == TriggerPeer
}

// Event is one lifecycle event: one structured log line and one entry of
// the admin event log.
type Event struct {
	Time       time.Time `json:"time"`
	Credential string    `json:"credential"`
	Kind       EventKind `json:"kind"`
	Trigger    Trigger   `json:"trigger"`
	// Status is the credential's status after the event.
	Status Status `json:"status"`
	// Version is the source's version of the value (Vault, AWS), if any.
	Version string `json:"version,omitempty"`
	// Detail says why, with every secret redacted.
	Detail string `json:"detail,omitempty"`
}
