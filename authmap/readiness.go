package authmap

import (
	"math"
	"time"
)

// Access-readiness parts, in the order they are listed.
const (
	// ReadinessExpiryKnown: the credential's expiry (or its rotation date) is known.
	ReadinessExpiryKnown = "expiry_known"
	// ReadinessRenewable: it is renewed without a human (OAuth, a store that rotates it).
	ReadinessRenewable = "renewable"
	// ReadinessScoped: it serves only some tools of an upstream, or its scopes are known.
	ReadinessScoped = "scoped"
	// ReadinessRotationPath: a new value reaches the gateway without a restart
	// (a watched file, a refresh, a secrets store re-read on a webhook or reload).
	ReadinessRotationPath = "rotation_path"
	// ReadinessSecretsStore: it is held in a secrets store or a secret file
	// rather than the environment or the config.
	ReadinessSecretsStore = "secrets_store"
)

// Readiness is the access-readiness score of a credential for `gateway
// check`: 20 points per part that holds, 0 to 100. The parts say what to fix
// to raise it.
type Readiness struct {
	Score int             `json:"score"`
	Parts []ReadinessPart `json:"parts"`
}

// ReadinessPart is one scored property.
type ReadinessPart struct {
	Name string `json:"name"`
	OK   bool   `json:"ok"`
	// Fix says how to earn the part; empty when OK.
	Fix string `json:"fix,omitempty"`
}

// Readiness scores the credential. perTool says the gateway uses it for some
// of an upstream's tools only (upstreams.<name>.credentials), which the
// credential cannot know itself.
func (c *Credential) Readiness(perTool bool) Readiness {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.readinessLocked(perTool)
}

func (c *Credential) readinessLocked(perTool bool) Readiness {
	kind := c.src.Kind()
	cfg := c.cfg.Source
	oauthScopes := cfg.OAuth2 != nil && len(cfg.OAuth2.Scopes) > 0
	parts := []ReadinessPart{
		{Name: ReadinessExpiryKnown, OK: !c.expiryLocked().IsZero() || !c.st.tok.RotationAt.IsZero(),
			Fix: "set expires_at, or use a source that reports the expiry (oauth2, exec or file JSON with expires_at)"},
		{Name: ReadinessRenewable, OK: kind == KindOAuth2 || c.st.tok.Renewable || !c.st.tok.RotationAt.IsZero(),
			Fix: "use an oauth2 source, or enable rotation at the secrets store"},
		{Name: ReadinessScoped, OK: perTool || oauthScopes || len(c.st.tok.Scopes) > 0,
			Fix: "give read and write tools their own credentials (upstreams.<name>.credentials), or request oauth2 scopes"},
		{Name: ReadinessRotationPath, OK: canChange(kind),
			Fix: "read it from a file (watched), exec, vault, aws_secrets_manager or oauth2: env and value change only with a restart"},
		{Name: ReadinessSecretsStore, OK: heldInStore(cfg),
			Fix: "move it out of env and value into vault, aws_secrets_manager, a secrets CLI (exec) or a mounted secret file"},
	}
	r := Readiness{Parts: parts}
	for i := range r.Parts {
		if r.Parts[i].OK {
			r.Score += 100 / len(parts)
			r.Parts[i].Fix = ""
		}
	}
	return r
}

// heldInStore: anything but env and value; an oauth2 source only when its
// own secrets are held in one too.
func heldInStore(s SourceConfig) bool {
	switch s.Kind() {
	case KindEnv, KindValue, "":
		return false
	case KindOAuth2:
		for _, ref := range []SecretRef{s.OAuth2.ClientSecret, s.OAuth2.RefreshToken} {
			if !ref.IsZero() && !heldInStore(SourceConfig(ref)) {
				return false
			}
		}
	case KindVault:
		return true // its token may sit in env, but the credential itself is in the store
	}
	return true
}

// Snapshot is a credential's state for /health and `gateway check`.
type Snapshot struct {
	Name        string     `json:"-"`
	Status      Status     `json:"status"`
	ExpiresAt   *time.Time `json:"expires_at,omitempty"`
	TTLSeconds  *int64     `json:"ttl_seconds,omitempty"`
	LastChecked *time.Time `json:"last_checked,omitempty"`
	// LastError is the last failure (redacted): of the source, the probe or a call.
	LastError *Failure `json:"last_error,omitempty"`
	// Source is the source's kind only.
	Source    string    `json:"source"`
	Renewable bool      `json:"renewable"`
	Readiness Readiness `json:"readiness"`
	// Version is the source's version of the value (Vault, AWS), if any.
	Version string `json:"version,omitempty"`
	// RotationAt is when the source will rotate it (AWS), if scheduled.
	RotationAt *time.Time `json:"rotation_at,omitempty"`
	// RenewalAt is when the gateway renews it by itself, a rejection's
	// renewal having been put off (one per minute): until then a value
	// found invalid or revoked may heal without anyone's help.
	RenewalAt *time.Time `json:"renewal_at,omitempty"`
}

// Snapshot returns the credential's state now; perTool as for [Credential.Readiness].
func (c *Credential) Snapshot(perTool bool) Snapshot {
	now := time.Now()
	c.mu.Lock()
	defer c.mu.Unlock()
	s := Snapshot{
		Name:      c.name,
		Status:    c.statusLocked(now),
		Source:    c.src.Kind(),
		Renewable: c.st.tok.Renewable || c.src.Kind() == KindOAuth2,
		Readiness: c.readinessLocked(perTool),
		Version:   c.st.tok.Version,
	}
	if exp := c.expiryLocked(); !exp.IsZero() {
		ttl := int64(exp.Sub(now) / time.Second)
		s.ExpiresAt, s.TTLSeconds = &exp, &ttl
	}
	if t := c.st.lastChecked; !t.IsZero() {
		s.LastChecked = &t
	}
	if t := c.st.tok.RotationAt; !t.IsZero() {
		s.RotationAt = &t
	}
	if c.reactiveDueLocked() {
		t := c.st.lastReactive.Add(reactiveInterval)
		s.RenewalAt = &t
	}
	if c.st.lastErr != nil {
		f := *c.st.lastErr
		if f.RetryAfterSeconds != nil && s.Status == StatusRateLimited {
			// The wait left now, not the one reported when it began.
			secs := max(int(math.Ceil(c.limitEndLocked().Sub(now).Seconds())), 0)
			f.RetryAfterSeconds = &secs
		}
		s.LastError = &f
	}
	return s
}
