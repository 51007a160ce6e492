package breaker

import (
	"errors"
	"fmt"
	"math"
	"time"
)

// Defaults for [Config]; they suit most upstreams.
const (
	DefaultFailures         = 5
	DefaultOpenTimeout      = 30 * time.Second
	DefaultHalfOpenRequests = 1
	DefaultQuotaCooldown    = 15 * time.Minute
)

// Config tunes the breakers of one upstream: its own and those of its
// credentials. In YAML it is an upstream's `breaker` block:
//
//	breaker: {failures: 5, open_timeout: 30s, half_open_requests: 1, quota_cooldown: 15m}
type Config struct {
	// Failures is how many consecutive failed calls (transport failure,
	// timeout, 5xx) open the breaker. If zero, defaults to 5.
	Failures int `koanf:"failures"`
	// OpenTimeout is how long a breaker opened by failures stays open before
	// it lets probes through (half-open). It is also the wait after a rate
	// limit that named no reset time. If zero, defaults to 30s.
	OpenTimeout time.Duration `koanf:"open_timeout"`
	// HalfOpenRequests is how many probe calls a half-open breaker lets
	// through at once; that many successes in a row close it. If zero,
	// defaults to 1.
	HalfOpenRequests int `koanf:"half_open_requests"`
	// QuotaCooldown is how long a credential whose quota is exhausted stays
	// open when the provider named no reset time. If zero, defaults to 15m.
	QuotaCooldown time.Duration `koanf:"quota_cooldown"`
}

// WithDefaults returns c with every zero field set to its default.
func (c Config) WithDefaults() Config {
	if c.Failures == 0 {
		c.Failures = DefaultFailures
	}
	if c.OpenTimeout == 0 {
		c.OpenTimeout = DefaultOpenTimeout
	}
	if c.HalfOpenRequests == 0 {
		c.HalfOpenRequests = DefaultHalfOpenRequests
	}
	if c.QuotaCooldown == 0 {
		c.QuotaCooldown = DefaultQuotaCooldown
	}
	return c
}

// Validate reports every problem with c at once, each naming its key under
// key (for example "upstreams.github.breaker").
func (c Config) Validate(key string) error {
	var errs []error
	if c.Failures < 0 || c.Failures > math.MaxUint32 {
		errs = append(errs, fmt.Errorf("%s.failures: %d is out of range; use a positive count (0 means %d)", key, c.Failures, DefaultFailures))
	}
	if c.OpenTimeout < 0 {
		errs = append(errs, fmt.Errorf("%s.open_timeout: %s is negative (0 means %s)", key, c.OpenTimeout, DefaultOpenTimeout))
	}
	if c.HalfOpenRequests < 0 || c.HalfOpenRequests > math.MaxUint32 {
		errs = append(errs, fmt.Errorf("%s.half_open_requests: %d is out of range; use a positive count (0 means %d)", key, c.HalfOpenRequests, DefaultHalfOpenRequests))
	}
	if c.QuotaCooldown < 0 {
		errs = append(errs, fmt.Errorf("%s.quota_cooldown: %s is negative (0 means %s)", key, c.QuotaCooldown, DefaultQuotaCooldown))
	}
	return errors.Join(errs...)
}
