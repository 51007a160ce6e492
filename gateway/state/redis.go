package state

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// Redis is the Store on a Redis server (7.0 or later; nothing newer is
// used: keys with PX expiry, INCR, PUBLISH, SET NX PX and two Lua scripts).
//
//	<prefix>version            the version counter (INCR)
//	<prefix><key>              "<version> <value>", with its TTL (SET PX)
//	<prefix>notices            the channel: "<key>\n<version> <value>" per Put
//	<prefix><lock key>         a lock's owner token (SET NX PX)
//
// A Put is one script, so the version, the value and the notice cannot
// disagree. Every operation is bounded by the configured timeout and is not
// retried: a caller that cannot reach Redis in time goes on with its local
// state and catches up later.
type Redis struct {
	client  *redis.Client
	prefix  string
	timeout time.Duration
}

// putScript: KEYS[1] the entry, KEYS[2] the version counter; ARGV[1] the
// value, ARGV[2] the TTL in ms (0: none), ARGV[3] the channel.
var putScript = redis.NewScript(`
local v = redis.call('INCR', KEYS[2])
local val = v .. ' ' .. ARGV[1]
if tonumber(ARGV[2]) > 0 then
  redis.call('SET', KEYS[1], val, 'PX', ARGV[2])
else
  redis.call('SET', KEYS[1], val)
end
redis.call('PUBLISH', ARGV[3], KEYS[1] .. '\n' .. val)
return v
`)

// unlockScript deletes KEYS[1] only if it still holds the owner token
// ARGV[1]: a lock that expired and was taken by another owner is left alone.
var unlockScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
`)

// NewRedis returns a store on the server cfg names. It does no I/O: the
// first operation connects.
func NewRedis(cfg *RedisConfig) (*Redis, error) {
	opts, err := redis.ParseURL(cfg.URL)
	if err != nil {
		return nil, errors.New("state.redis.url: invalid Redis URL")
	}
	t := cfg.Wait()
	opts.DialTimeout, opts.ReadTimeout, opts.WriteTimeout, opts.PoolTimeout = t, t, t, t
	opts.ContextTimeoutEnabled = true
	opts.MaxRetries = -1 // a retry would wait past the timeout
	opts.DisableIdentity = true
	opts.Protocol = 2
	opts.PoolSize = 8
	return &Redis{client: redis.NewClient(opts), prefix: cfg.Prefix(), timeout: t}, nil
}

// Backend returns BackendRedis.
func (r *Redis) Backend() string { return BackendRedis }

func (r *Redis) bound(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, r.timeout)
}

func (r *Redis) channel() string { return r.prefix + "notices" }

// Put implements Store.
func (r *Redis) Put(ctx context.Context, key string, value []byte, ttl time.Duration) (int64, error) {
	ctx, cancel := r.bound(ctx)
	defer cancel()
	ms := int64(0)
	if ttl > 0 {
		ms = max(ttl.Milliseconds(), 1)
	}
	v, err := putScript.Run(ctx, r.client, []string{r.prefix + key, r.prefix + "version"}, value, ms, r.channel()).Int64()
	if err != nil {
		return 0, fmt.Errorf("redis: put %s: %w", key, err)
	}
	return v, nil
}

// Get implements Store.
func (r *Redis) Get(ctx context.Context, keys ...string) ([]Entry, error) {
	if len(keys) == 0 {
		return nil, nil
	}
	ctx, cancel := r.bound(ctx)
	defer cancel()
	full := make([]string, len(keys))
	for i, k := range keys {
		full[i] = r.prefix + k
	}
	vals, err := r.client.MGet(ctx, full...).Result()
	if err != nil {
		return nil, fmt.Errorf("redis: get: %w", err)
	}
	var out []Entry
	for i, v := range vals {
		s, ok := v.(string)
		if !ok {
			continue
		}
		if e, ok := parseEntry(keys[i], s); ok {
			out = append(out, e)
		}
	}
	return out, nil
}

// parseEntry reads "<version> <value>".
func parseEntry(key, s string) (Entry, bool) {
	vs, val, ok := strings.Cut(s, " ")
	if !ok {
		return Entry{}, false
	}
	v, err := strconv.ParseInt(vs, 10, 64)
	if err != nil {
		return Entry{}, false
	}
	return Entry{Key: key, Version: v, Value: []byte(val)}, true
}

// Version implements Store.
func (r *Redis) Version(ctx context.Context) (int64, error) {
	ctx, cancel := r.bound(ctx)
	defer cancel()
	v, err := r.client.Get(ctx, r.prefix+"version").Int64()
	if errors.Is(err, redis.Nil) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("redis: version: %w", err)
	}
	return v, nil
}

// Watch implements Store. The subscription reconnects by itself after a
// lost connection; notices sent meanwhile are lost (see Store.Watch).
func (r *Redis) Watch(ctx context.Context, fn func(Entry)) error {
	ps := r.client.Subscribe(ctx, r.channel())
	defer ps.Close()
	ch := ps.Channel(redis.WithChannelSize(watchBuffer), redis.WithChannelHealthCheckInterval(5*time.Second))
	for {
		select {
		case <-ctx.Done():
			return nil
		case m, ok := <-ch:
			if !ok {
				return nil
			}
			full, rest, ok := strings.Cut(m.Payload, "\n")
			key, own := strings.CutPrefix(full, r.prefix)
			if !ok || !own {
				continue
			}
			if e, ok := parseEntry(key, rest); ok {
				fn(e)
			}
		}
	}
}

// Lock implements Store.
func (r *Redis) Lock(ctx context.Context, key string, ttl time.Duration) (string, error) {
	ctx, cancel := r.bound(ctx)
	defer cancel()
	token := newToken()
	ok, err := r.client.SetNX(ctx, r.prefix+key, token, ttl).Result()
	switch {
	case err != nil:
		return "", fmt.Errorf("redis: lock %s: %w", key, err)
	case !ok:
		return "", ErrLocked
	}
	return token, nil
}

// Unlock implements Store.
func (r *Redis) Unlock(ctx context.Context, key, token string) error {
	ctx, cancel := r.bound(ctx)
	defer cancel()
	n, err := unlockScript.Run(ctx, r.client, []string{r.prefix + key}, token).Int64()
	switch {
	case err != nil:
		return fmt.Errorf("redis: unlock %s: %w", key, err)
	case n == 0:
		return ErrNotOwner
	}
	return nil
}

// Close implements Store.
func (r *Redis) Close() error { return r.client.Close() }

// QuietLibraryLogs sends go-redis's own log lines (connection pool and
// subscription notices, which it writes to stderr by default) to log. The
// library's logger is process-wide: the binary calls this once.
func QuietLibraryLogs(log func(msg string)) {
	redis.SetLogger(libLogger(log))
}

type libLogger func(string)

func (l libLogger) Printf(_ context.Context, format string, v ...any) { l(fmt.Sprintf(format, v...)) }
