package state

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/credgate/credgate/authmap"
)

// Defaults of the redis section.
const (
	DefaultKeyPrefix = "credgate:"
	DefaultTimeout   = 200 * time.Millisecond
	// MaxTimeout bounds state.redis.timeout: calls must never wait on Redis
	// for long, and a renewal waits a few timeouts at most.
	MaxTimeout = 5 * time.Second
	// MinKeyBytes is the shortest encryption key accepted.
	MinKeyBytes = 16
)

// Config is the state section of the gateway's config. The zero value keeps
// the state in memory (one replica).
type Config struct {
	// Redis, if set, shares the state between replicas through Redis.
	Redis *RedisConfig `koanf:"redis"`
}

// RedisConfig is state.redis.
type RedisConfig struct {
	// URL is the Redis server: redis://[user:password@]host:port[/db],
	// rediss:// for TLS, or unix:///path/to/redis.sock. Required.
	URL string `koanf:"url"`
	// KeyPrefix starts every key and the notice channel, so several
	// gateways (or tests) can share one Redis. If empty, defaults to
	// "credgate:".
	KeyPrefix string `koanf:"key_prefix"`
	// Timeout bounds every Redis operation: the gateway never waits on
	// Redis longer than this. If zero, defaults to 200ms; at most 5s.
	Timeout time.Duration `koanf:"timeout"`
	// EncryptionKey encrypts the OAuth token sets replicas share (AES-256-GCM
	// under a key derived from it): a plain string or a source object
	// ({env: GATEWAY_STATE_KEY}, {file: ...}), at least 16 bytes. If zero,
	// renewed tokens are not shared and each replica renews its own.
	EncryptionKey authmap.SecretRef `koanf:"encryption_key"`
}

// Enabled reports whether the state is shared through Redis.
func (c Config) Enabled() bool { return c.Redis != nil }

// Prefix returns the effective key prefix.
func (c *RedisConfig) Prefix() string {
	if c.KeyPrefix == "" {
		return DefaultKeyPrefix
	}
	return c.KeyPrefix
}

// Wait returns the effective timeout.
func (c *RedisConfig) Wait() time.Duration {
	if c.Timeout <= 0 {
		return DefaultTimeout
	}
	return c.Timeout
}

// Validate reports every problem of the state section, each naming its key
// under key (normally "state"). shownURL quotes a URL for a message without
// its password.
func (c Config) Validate(key string, shownURL func(string) string) error {
	if c.Redis == nil {
		return nil
	}
	r := c.Redis
	key += ".redis"
	var errs []error
	bad := func(k, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", k, fmt.Sprintf(format, args...)))
	}
	switch {
	case r.URL == "":
		bad(key+".url", "missing: the Redis server, such as redis://redis:6379/0 or unix:///run/redis.sock")
	default:
		if _, err := redis.ParseURL(r.URL); err != nil {
			bad(key+".url", "invalid Redis URL %s: want redis://[user:password@]host:port[/db], rediss://... or unix:///path", shownURL(r.URL))
		}
	}
	if strings.ContainsFunc(r.KeyPrefix, func(c rune) bool { return c <= ' ' || c == 0x7f }) {
		bad(key+".key_prefix", "contains a space or a control character")
	}
	if len(r.KeyPrefix) > 64 {
		bad(key+".key_prefix", "longer than 64 characters")
	}
	switch {
	case r.Timeout < 0:
		bad(key+".timeout", "negative duration %s", r.Timeout)
	case r.Timeout > MaxTimeout:
		bad(key+".timeout", "%s is too long: calls never wait on Redis longer than this; want at most %s (default %s)", r.Timeout, MaxTimeout, DefaultTimeout)
	}
	if !r.EncryptionKey.IsZero() {
		if err := r.EncryptionKey.Validate(key + ".encryption_key"); err != nil {
			errs = append(errs, err)
		} else if v := r.EncryptionKey.Value; v != "" && len(v) < MinKeyBytes {
			// Written inline: too short now, as NewSealer would find at
			// start-up (validate passed it, serve refused it).
			bad(key+".encryption_key", "%d bytes is too short: want at least %d (such as 32 random bytes, base64-encoded)", len(v), MinKeyBytes)
		}
	}
	return errors.Join(errs...)
}
