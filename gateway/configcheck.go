package gateway

import (
	"encoding"
	"fmt"
	"maps"
	"math"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/knadh/koanf/v2"
)

// keyError is one config problem: the key it is about and, when the value
// came from the environment, the variable that set it.
type keyError struct {
	key string // config key path, such as upstreams.github.timeout
	env string // CREDGATE_* variable(s), or "" for the file
	msg string
}

func (e *keyError) Error() string {
	if e.env != "" {
		return fmt.Sprintf("%s (%s): %s", e.env, e.key, e.msg)
	}
	return fmt.Sprintf("%s: %s", e.key, e.msg)
}

// keyHints are keys other tools spell differently (a desktop client's
// "type"), for "did you mean" when no key is a near spelling.
var keyHints = map[string]string{"type": "transport", "transportType": "transport", "serverUrl": "url", "httpUrl": "url",
	"host": "listen", "port": "listen", "addr": "listen", "address": "listen"}

// typeCheck walks one source's raw config map along the Go type it decodes
// into, before the decoder sees it. It reports every unknown key (with a
// "did you mean" hint) and every value the decoder would reject or, worse,
// accept wrongly (a duration without a unit is nanoseconds to the decoder),
// naming the key and, for the environment, the variable. A bad value is
// removed from the map, so the decoder cannot fail and the problems are
// reported together with Validate's.
//
// The rules follow the Go type only, not a list of keys, so fields added to
// Config later get them for free.
type typeCheck struct {
	// envVars maps a key path to the CREDGATE_* variable that set it; nil
	// for the file.
	envVars map[string]string
	errs    []error
	// dropped holds the key paths whose values were removed.
	dropped []string
	// templates maps keys to their text before ${NAME} expansion, which
	// messages show instead of the value.
	templates map[string]string
}

// quote quotes a string value for a message, or its text before expansion.
func (c *typeCheck) quote(key, v string) string {
	if t, ok := c.templates[key]; ok {
		return fmt.Sprintf("%q (before expansion)", t)
	}
	return quoteShort(v)
}

var (
	durationType        = reflect.TypeFor[time.Duration]()
	textUnmarshalerType = reflect.TypeFor[encoding.TextUnmarshaler]()
)

func (c *typeCheck) bad(key, format string, args ...any) {
	c.errs = append(c.errs, &keyError{key: key, env: c.varsFor(key), msg: fmt.Sprintf(format, args...)})
}

// varsFor names the variables that set key or anything under it.
func (c *typeCheck) varsFor(key string) string {
	if c.envVars == nil {
		return ""
	}
	if v, ok := c.envVars[key]; ok {
		return v
	}
	var vars []string
	for k, v := range c.envVars {
		if strings.HasPrefix(k, key+".") {
			vars = append(vars, v)
		}
	}
	slices.Sort(vars)
	if len(vars) == 0 {
		return EnvPrefix + "*"
	}
	return strings.Join(vars, ", ")
}

// fields checks the keys of a mapping that decodes into the struct t.
func (c *typeCheck) fields(m map[string]any, t reflect.Type, at string) {
	for _, k := range slices.Sorted(maps.Keys(m)) {
		key := joinKey(at, k)
		ft, ok := fieldByTag(t, k)
		if !ok {
			msg := "unknown key"
			tags := fieldTags(t)
			if s := suggest(k, tags); s != "" {
				msg += fmt.Sprintf(" (did you mean %s?)", s)
			} else if s := keyHints[k]; slices.Contains(tags, s) {
				msg += fmt.Sprintf(" (did you mean %s?)", s)
			} else if c.envVars != nil {
				// A variable meant to hold a value ({env: CREDGATE_TOKEN}).
				msg += "; every " + EnvPrefix + "* variable is read as a config override, so a variable holding a secret needs another name"
			}
			c.bad(key, "%s", msg)
			delete(m, k)
			c.dropped = append(c.dropped, key)
			continue
		}
		v, ok := c.value(m[k], ft, key)
		if !ok {
			delete(m, k)
			c.dropped = append(c.dropped, key)
			continue
		}
		m[k] = v
	}
}

// value checks one value against t. It returns the value to decode (scalars
// written for a string field are turned into their YAML text) and false
// when the value was reported and must be dropped.
func (c *typeCheck) value(v any, t reflect.Type, key string) (any, bool) {
	if v == nil {
		return nil, true // "key:" with no value leaves the zero value
	}
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if t == durationType {
		return c.duration(v, key)
	}
	_, isMap := v.(map[string]any)
	// A struct that also reads from a string (authmap.SecretRef: a plain
	// string or a source object) takes a mapping as a struct.
	if reflect.PointerTo(t).Implements(textUnmarshalerType) && !(isMap && t.Kind() == reflect.Struct) {
		if tv, ok := v.(time.Time); ok && t == reflect.TypeFor[time.Time]() {
			return tv, true // YAML read an unquoted timestamp
		}
		s, ok := v.(string)
		if !ok {
			c.bad(key, "want a string, got %s", describe(v))
			return nil, false
		}
		if err := reflect.New(t).Interface().(encoding.TextUnmarshaler).UnmarshalText([]byte(s)); err != nil {
			if t == reflect.TypeFor[time.Time]() {
				// time's own error quotes its layout ("cannot parse
				// "tomorrow" as "2006"").
				c.bad(key, `want an RFC 3339 time such as "2027-01-31T09:00:00Z", got %s`, c.quote(key, s))
				return nil, false
			}
			c.bad(key, "invalid value: %v", err)
			return nil, false
		}
		return v, true
	}
	switch t.Kind() {
	case reflect.Struct:
		m, ok := v.(map[string]any)
		if !ok {
			c.bad(key, "want a mapping, got %s", describe(v))
			return nil, false
		}
		c.fields(m, t, key)
		return m, true
	case reflect.Map:
		m, ok := v.(map[string]any)
		if !ok {
			hint := ""
			if c.envVars != nil {
				hint = fmt.Sprintf("; set one entry per variable, such as %s__NAME", c.varsFor(key))
			}
			c.bad(key, "want a mapping, got %s%s", describe(v), hint)
			return nil, false
		}
		for _, k := range slices.Sorted(maps.Keys(m)) {
			e, ok := c.value(m[k], t.Elem(), joinKey(key, k))
			if !ok {
				delete(m, k)
				c.dropped = append(c.dropped, joinKey(key, k))
				continue
			}
			m[k] = e
		}
		return m, true
	case reflect.Slice:
		if c.envVars != nil {
			c.bad(key, "a list cannot be set from the environment; set it in the config file")
			return nil, false
		}
		s, ok := v.([]any)
		if !ok {
			c.bad(key, "want a list, got %s", describe(v))
			return nil, false
		}
		good := true
		for i, e := range s {
			e, ok := c.value(e, t.Elem(), fmt.Sprintf("%s[%d]", key, i))
			good = good && ok
			s[i] = e
		}
		return s, good
	case reflect.String:
		switch x := v.(type) {
		case string:
			return x, true
		case bool:
			// The decoder would write true as "1".
			return strconv.FormatBool(x), true
		case int, int64, uint64:
			return fmt.Sprint(x), true
		case float64:
			return strconv.FormatFloat(x, 'f', -1, 64), true
		case time.Time:
			if strings.HasSuffix(key, ".protocol_version") && x.Equal(x.Truncate(24*time.Hour)) && x.Location() == time.UTC {
				// An MCP version, which YAML reads as a date unquoted
				// (2025-11-25): the date. Other keys keep asking for quotes,
				// since the text written cannot be told from the time.
				return x.Format(time.DateOnly), true
			}
			c.bad(key, "want a string, got a timestamp; quote it")
			return nil, false
		}
		c.bad(key, "want a string, got %s", describe(v))
		return nil, false
	case reflect.Bool:
		switch x := v.(type) {
		case bool:
			return x, true
		case string:
			if b, err := strconv.ParseBool(x); err == nil {
				return b, true
			}
			c.bad(key, "want true or false, got %s", c.quote(key, x))
			return nil, false
		}
		c.bad(key, "want true or false, got %s", describe(v))
		return nil, false
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return c.integer(v, t, key)
	case reflect.Float32, reflect.Float64:
		switch x := v.(type) {
		case int, int64, uint64, float64:
			return x, true
		case string:
			if f, err := strconv.ParseFloat(x, 64); err == nil {
				return f, true
			}
			c.bad(key, "want a number, got %s", c.quote(key, x))
			return nil, false
		}
		c.bad(key, "want a number, got %s", describe(v))
		return nil, false
	}
	return v, true
}

func (c *typeCheck) integer(v any, t reflect.Type, key string) (any, bool) {
	var n int64
	var u uint64
	unsigned := t.Kind() >= reflect.Uint && t.Kind() <= reflect.Uint64
	switch x := v.(type) {
	case int:
		n = int64(x)
	case int64:
		n = x
	case uint64:
		if x > math.MaxInt64 {
			c.bad(key, "number %d out of range", x)
			return nil, false
		}
		n = int64(x)
	case float64:
		if x != math.Trunc(x) || x > math.MaxInt64 || x < math.MinInt64 {
			c.bad(key, "want a whole number, got %v", x)
			return nil, false
		}
		n = int64(x)
	case string:
		var err error
		if n, err = strconv.ParseInt(x, 0, 64); err != nil {
			c.bad(key, "want a whole number, got %s", c.quote(key, x))
			return nil, false
		}
	default:
		c.bad(key, "want a whole number, got %s", describe(v))
		return nil, false
	}
	if unsigned {
		if n < 0 {
			c.bad(key, "want a number >= 0, got %d", n)
			return nil, false
		}
		u = uint64(n)
		if reflect.New(t).Elem().OverflowUint(u) {
			c.bad(key, "number %d out of range", n)
			return nil, false
		}
		return n, true
	}
	if reflect.New(t).Elem().OverflowInt(n) {
		c.bad(key, "number %d out of range", n)
		return nil, false
	}
	return n, true
}

// duration accepts a string with a unit ("30s", "1m30s", and the decoder's
// "1d"). A bare number is refused: the decoder would read 30 as 30ns. Zero
// needs no unit.
func (c *typeCheck) duration(v any, key string) (any, bool) {
	const want = `want a duration with a unit, such as "30s", "5m" or "1h30m"`
	switch x := v.(type) {
	case string:
		if _, err := time.ParseDuration(x); err != nil && !koanfDuration(x) {
			c.bad(key, "%s, got %s", want, c.quote(key, x))
			return nil, false
		}
		return x, true
	case int:
		if x == 0 {
			return "0s", true
		}
		c.bad(key, "%s, got %d", want, x)
		return nil, false
	}
	c.bad(key, "%s, got %s", want, describe(v))
	return nil, false
}

// koanfDuration reports whether the decoder accepts s as a duration: it
// also reads days ("2d").
func koanfDuration(s string) bool {
	k := koanf.New(".")
	if k.Set("d", s) != nil {
		return false
	}
	var out struct {
		D time.Duration `koanf:"d"`
	}
	return k.Unmarshal("", &out) == nil
}

// describe names the kind of a raw value for an error, without printing
// strings: a string may be a secret.
func describe(v any) string {
	switch x := v.(type) {
	case map[string]any:
		return "a mapping"
	case []any:
		return "a list"
	case string:
		return "a string"
	case bool:
		return fmt.Sprintf("%t", x)
	case int, int64, uint64, float64:
		return fmt.Sprintf("the number %v", x)
	case time.Time:
		return "a timestamp"
	}
	return fmt.Sprintf("a %T", v)
}

// fieldTags lists the keys a struct takes.
func fieldTags(t reflect.Type) []string {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if t.Kind() != reflect.Struct {
		return nil
	}
	var tags []string
	for i := range t.NumField() {
		f := t.Field(i)
		if tag, _, _ := strings.Cut(f.Tag.Get("koanf"), ","); tag != "" && tag != "-" && f.IsExported() {
			tags = append(tags, tag)
		}
	}
	return tags
}

// suggest returns the candidate closest to key, if it is close enough to
// be a typo: at most one edit for short keys, two for keys of five or more
// characters, ignoring case.
func suggest(key string, candidates []string) string {
	key = strings.ToLower(key)
	limit := 1
	if len(key) >= 5 {
		limit = 2
	}
	best, bestD := "", limit+1
	for _, c := range candidates {
		if d := editDistance(key, strings.ToLower(c)); d < bestD || (d == bestD && c < best) {
			best, bestD = c, d
		}
	}
	if bestD > limit {
		return ""
	}
	return best
}

// editDistance is the Levenshtein distance, with an adjacent transposition
// counting as one edit (the commonest typo).
func editDistance(a, b string) int {
	ra, rb := []rune(a), []rune(b)
	prev2 := make([]int, len(rb)+1)
	prev := make([]int, len(rb)+1)
	cur := make([]int, len(rb)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(ra); i++ {
		cur[0] = i
		for j := 1; j <= len(rb); j++ {
			cost := 1
			if ra[i-1] == rb[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
			if i > 1 && j > 1 && ra[i-1] == rb[j-2] && ra[i-2] == rb[j-1] {
				cur[j] = min(cur[j], prev2[j-2]+1)
			}
		}
		prev2, prev, cur = prev, cur, prev2
	}
	return prev[len(rb)]
}
