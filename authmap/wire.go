package authmap

import (
	"encoding/base64"
	"encoding/json"
	"math"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// challenge is one WWW-Authenticate challenge (RFC 9110 §11.6.1).
type challenge struct {
	scheme string
	params map[string]string // lower-case names
}

// parseChallenges parses WWW-Authenticate values leniently: several challenges per value,
// quoted strings with escapes, token68 values, and headers folded onto one line.
func parseChallenges(values []string) []challenge {
	var out []challenge
	for _, v := range values {
		s := v
		var cur *challenge
		for {
			s = strings.TrimLeft(s, " \t\r\n,")
			if s == "" {
				break
			}
			tok := readToken(s)
			if tok == "" {
				// Skip garbage up to the next comma.
				if i := strings.IndexByte(s, ','); i >= 0 {
					s = s[i+1:]
					continue
				}
				break
			}
			rest := strings.TrimLeft(s[len(tok):], " \t")
			if strings.HasPrefix(rest, "=") && cur != nil && !strings.HasPrefix(rest, "==") {
				// auth-param
				rest = strings.TrimLeft(rest[1:], " \t")
				var val string
				if strings.HasPrefix(rest, `"`) {
					val, rest = readQuoted(rest)
				} else {
					val = readToken(rest)
					if val == "" {
						// token68-ish or empty value up to the separator
						i := strings.IndexAny(rest, ", ")
						if i < 0 {
							i = len(rest)
						}
						val = rest[:i]
					}
					rest = rest[len(val):]
				}
				cur.params[strings.ToLower(tok)] = val
				s = rest
				continue
			}
			if cur != nil && len(cur.params) == 0 && strings.HasPrefix(rest, "=") {
				// token68 ending in '='
				s = strings.TrimLeft(rest, "=")
				continue
			}
			// A new challenge (scheme), possibly followed by a token68.
			out = append(out, challenge{scheme: tok, params: map[string]string{}})
			cur = &out[len(out)-1]
			s = rest
		}
	}
	return out
}

func readToken(s string) string {
	i := 0
	for i < len(s) {
		c := s[i]
		if c == ' ' || c == '\t' || c == ',' || c == '=' || c == '"' || c == '\r' || c == '\n' {
			break
		}
		i++
	}
	return s[:i]
}

func readQuoted(s string) (string, string) {
	var b strings.Builder
	for i := 1; i < len(s); i++ {
		switch s[i] {
		case '\\':
			if i+1 < len(s) {
				i++
				b.WriteByte(s[i])
			}
		case '"':
			return b.String(), s[i+1:]
		default:
			b.WriteByte(s[i])
		}
	}
	return b.String(), ""
}

// maxRetryAfter bounds retry_after_seconds; beyond a week a value is garbage, not advice.
const maxRetryAfter = 7 * 24 * 3600

var (
	reResetsAt  = regexp.MustCompile(`(?i)resets? at:?\s*(\d{4}-\d\d-\d\dT[0-9:.]+(?:Z|[+-]\d\d:?\d\d)?)`)
	reTryAgain  = regexp.MustCompile(`(?i)(?:try again|retry|reset) in ~?\s*((?:\d+(?:\.\d+)?(?:h|ms|m|s))+)`)
	reRetryInfo = regexp.MustCompile(`"retryDelay"\s*:\s*"(\d+(?:\.\d+)?)s"`)
)

// retryAfter finds when a rate limit lifts: Retry-After (seconds or HTTP-date), retry-after-ms,
// x-ratelimit-reset / RateLimit-Reset (epoch, delta or ISO 8601), anthropic-ratelimit-*-reset and
// OpenAI x-ratelimit-reset-* for exhausted buckets, then the body ("Resets at: <ISO>",
// "try again in 18.6s", Google RetryInfo). It returns nil when unknown or already past.
func retryAfter(h http.Header, body []byte, now time.Time) *int {
	secs := func(f float64) *int {
		if f < 0 || f > maxRetryAfter || math.IsNaN(f) {
			return nil
		}
		n := int(math.Ceil(f))
		return &n
	}
	if v := strings.TrimSpace(h.Get("Retry-After")); v != "" {
		if n, err := strconv.ParseFloat(v, 64); err == nil {
			return secs(n)
		}
		if t, err := http.ParseTime(v); err == nil {
			return secs(t.Sub(now).Seconds())
		}
	}
	if v := strings.TrimSpace(h.Get("Retry-After-Ms")); v != "" {
		if n, err := strconv.ParseFloat(v, 64); err == nil {
			return secs(n / 1000)
		}
	}
	for _, name := range []string{"X-Ratelimit-Reset", "Ratelimit-Reset", "X-Rate-Limit-Reset"} {
		if v := strings.TrimSpace(h.Get(name)); v != "" {
			if r := resetValue(v, now); r != nil {
				return secs(*r)
			}
		}
	}
	// Per-bucket resets: the latest reset of the exhausted buckets; with
	// no bucket's remaining count sent at all (a proxy may drop them), the
	// latest reset of any.
	var best, unknown *float64
	for k, vs := range h {
		lk := strings.ToLower(k)
		if !strings.HasSuffix(lk, "-reset") && !strings.Contains(lk, "-reset-") {
			continue
		}
		if !strings.HasPrefix(lk, "anthropic-ratelimit-") && !strings.HasPrefix(lk, "x-ratelimit-reset-") {
			continue
		}
		r := resetValue(vs[0], now)
		if r == nil {
			continue
		}
		switch left, sent := h[http.CanonicalHeaderKey(strings.Replace(lk, "reset", "remaining", 1))]; {
		case !sent:
			if unknown == nil || *r > *unknown {
				unknown = r
			}
		case len(left) > 0 && strings.TrimSpace(left[0]) == "0":
			if best == nil || *r > *best {
				best = r
			}
		}
	}
	if best == nil && unknown != nil && !remainingSent(h) {
		best = unknown
	}
	if best != nil {
		return secs(*best)
	}
	s := string(body)
	if m := reResetsAt.FindStringSubmatch(s); m != nil {
		if t, err := time.Parse(time.RFC3339Nano, m[1]); err == nil {
			return secs(t.Sub(now).Seconds())
		}
	}
	if m := reTryAgain.FindStringSubmatch(s); m != nil {
		if d, err := time.ParseDuration(m[1]); err == nil {
			return secs(d.Seconds())
		}
	}
	if m := reRetryInfo.FindStringSubmatch(s); m != nil {
		if f, err := strconv.ParseFloat(m[1], 64); err == nil {
			return secs(f)
		}
	}
	return nil
}

// remainingSent reports whether h holds any bucket's remaining count.
func remainingSent(h http.Header) bool {
	for k := range h {
		lk := strings.ToLower(k)
		if (strings.HasPrefix(lk, "anthropic-ratelimit-") || strings.HasPrefix(lk, "x-ratelimit-remaining-")) && strings.Contains(lk, "remaining") {
			return true
		}
	}
	return false
}

// resetValue reads a reset header value as seconds from now.
func resetValue(v string, now time.Time) *float64 {
	v = strings.TrimSpace(v)
	if f, err := strconv.ParseFloat(v, 64); err == nil {
		if f > 1e9 { // epoch seconds (GitHub, GitLab)
			d := f - float64(now.UnixNano())/1e9
			if d < 0 {
				return nil
			}
			return &d
		}
		return &f
	}
	if d, err := time.ParseDuration(v); err == nil { // OpenAI "6m0s", "12ms"
		f := d.Seconds()
		return &f
	}
	if t, err := time.Parse(time.RFC3339Nano, v); err == nil { // Anthropic, Atlassian
		d := t.Sub(now).Seconds()
		if d < 0 {
			return nil
		}
		return &d
	}
	return nil
}

// jwtExpiry decodes a JWT's payload without verifying it and returns its exp claim.
func jwtExpiry(tok string) (time.Time, bool) {
	tok = strings.TrimSpace(tok)
	tok = strings.TrimPrefix(tok, "Bearer ")
	parts := strings.Split(tok, ".")
	if len(parts) != 3 || !strings.HasPrefix(parts[0], "eyJ") {
		return time.Time{}, false
	}
	payload, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(parts[1], "="))
	if err != nil {
		return time.Time{}, false
	}
	var claims struct {
		Exp *float64 `json:"exp"`
	}
	if json.Unmarshal(payload, &claims) != nil || claims.Exp == nil {
		return time.Time{}, false
	}
	sec, frac := math.Modf(*claims.Exp)
	return time.Unix(int64(sec), int64(frac*1e9)), true
}
