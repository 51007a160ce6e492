package routing

import (
	"fmt"
	"slices"
	"strings"
)

// MaxNameLen is the longest exposed name. The MCP spec allows 128 characters,
// but several LLM APIs reject tool names longer than 64, so the gateway caps
// exposed names there rather than let an agent fail later.
const MaxNameLen = 64

// DefaultSeparator joins an upstream's prefix and a tool or prompt name.
// A double underscore is used because many LLM APIs forbid '.' and '/' in tool
// names and a single '_' is common inside names themselves.
const DefaultSeparator = "__"

// validNameChar reports whether c may appear in an exposed name ([A-Za-z0-9_.-]).
func validNameChar(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '.' || c == '-'
}

// CheckName reports why name cannot be exposed to agents, or nil if it can.
func CheckName(name string) error {
	if name == "" {
		return fmt.Errorf("empty name")
	}
	if len(name) > MaxNameLen {
		return fmt.Errorf("name %q is %d characters long; at most %d are allowed", name, len(name), MaxNameLen)
	}
	if r, bad := invalidRune(name); bad {
		return fmt.Errorf("name %q contains %q; only [A-Za-z0-9_.-] are allowed", name, r)
	}
	return nil
}

// invalidRune returns the first character of s that is not allowed in a
// name, as a character (not its first byte: "ü" read as 'Ã').
func invalidRune(s string) (rune, bool) {
	for _, r := range s {
		if r >= 0x80 || !validNameChar(byte(r)) {
			return r, true
		}
	}
	return 0, false
}

// CheckSeparator reports whether sep can join prefixes and names.
func CheckSeparator(sep string) error {
	if sep == "" {
		return fmt.Errorf("separator is empty")
	}
	if r, bad := invalidRune(sep); bad {
		return fmt.Errorf("separator %q contains %q; only [A-Za-z0-9_.-] are allowed", sep, r)
	}
	return nil
}

// CheckPrefix reports whether prefix can be used with sep. A prefix must not
// contain the separator: "a__b" + "__" + "c" and "a" + "__" + "b__c" would
// otherwise both expose "a__b__c".
func CheckPrefix(prefix, sep string) error {
	if prefix == "" {
		return nil
	}
	if strings.Contains(prefix, sep) {
		return fmt.Errorf("prefix %q contains the separator %q, which would make exposed names ambiguous", prefix, sep)
	}
	if r, bad := invalidRune(prefix); bad {
		return fmt.Errorf("prefix %q contains %q; only [A-Za-z0-9_.-] are allowed", prefix, r)
	}
	return nil
}

// Expose returns the name agents see for an upstream's name.
func Expose(prefix, sep, name string) string {
	if prefix == "" {
		return name
	}
	return prefix + sep + name
}

// Source is one upstream's offer of names, in the order the upstream listed them.
type Source struct {
	Upstream string
	Prefix   string
	Names    []string
}

// Target is the upstream and original name behind an exposed name.
type Target struct {
	Upstream string
	Name     string
}

// Problem is a name that could not be exposed, with the reason.
type Problem struct {
	Upstream string
	Name     string // the upstream's own name
	Exposed  string // the name it would have had
	Reason   string
}

// Table maps exposed names to their targets.
type Table struct {
	Targets  map[string]Target
	Problems []Problem
}

// Owner returns the prefix that owns an exposed name: the longest of
// prefixes p (ignoring "") such that name starts with p+sep, or "" if none
// does, in which case only an unprefixed upstream can serve the name.
//
// Longest wins so that no upstream captures another's names: with prefixes
// "a" and "a_" and separator "__", "a___x" belongs to "a_" (its tool "x"),
// not to "a" (a tool "_x"); and a name carrying any prefix never belongs to
// an unprefixed upstream.
func Owner(name, sep string, prefixes []string) string {
	return owner(name, sep, func(p string) bool { return slices.Contains(prefixes, p) })
}

// owner is Owner with the prefixes as a set: it tries the text before each
// separator in name, so its cost depends on the name, not on how many
// prefixes there are. The last hit is the longest.
func owner(name, sep string, isPrefix func(string) bool) string {
	best := ""
	for i := 0; ; {
		j := strings.Index(name[i:], sep)
		if j < 0 {
			return best
		}
		if p := name[:i+j]; p != "" && isPrefix(p) {
			best = p
		}
		i += j + 1
	}
}

// Build resolves the exposed names of sources, given in config order. A name
// offered by two sources is served by the first and reported against the later
// one, so the outcome depends only on the config, never on which upstream
// happened to connect first.
//
// A source never shadows another's names: a name whose exposed form carries
// another source's prefix (see [Owner]), such as "h__echo" offered by an
// unprefixed upstream while upstream "h" exists, is refused and reported,
// whether or not "h" offers that name or is connected at all.
func Build(sep string, sources []Source) Table {
	t := Table{Targets: make(map[string]Target)}
	byPrefix := make(map[string]string, len(sources)) // prefix -> first source with it
	for _, src := range sources {
		if _, ok := byPrefix[src.Prefix]; !ok {
			byPrefix[src.Prefix] = src.Upstream
		}
	}
	isPrefix := func(p string) bool { _, ok := byPrefix[p]; return ok }
	for _, src := range sources {
		for _, name := range src.Names {
			exposed := Expose(src.Prefix, sep, name)
			if name == "" {
				// Exposed as the bare prefix ("w__"), and forwarded.
				t.Problems = append(t.Problems, Problem{Upstream: src.Upstream, Name: name, Exposed: exposed, Reason: "empty name"})
				continue
			}
			if err := CheckName(exposed); err != nil {
				t.Problems = append(t.Problems, Problem{Upstream: src.Upstream, Name: name, Exposed: exposed, Reason: err.Error()})
				continue
			}
			if holder := owner(exposed, sep, isPrefix); holder != src.Prefix {
				t.Problems = append(t.Problems, Problem{Upstream: src.Upstream, Name: name, Exposed: exposed,
					Reason: fmt.Sprintf("name %q carries the prefix %q of upstream %q; it is refused so that it cannot shadow that upstream's names", exposed, holder+sep, byPrefix[holder])})
				continue
			}
			if prev, ok := t.Targets[exposed]; ok {
				reason := fmt.Sprintf("name %q is already served by upstream %q", exposed, prev.Upstream)
				if prev.Upstream == src.Upstream {
					reason = fmt.Sprintf("upstream lists %q twice", name)
				}
				t.Problems = append(t.Problems, Problem{Upstream: src.Upstream, Name: name, Exposed: exposed, Reason: reason})
				continue
			}
			t.Targets[exposed] = Target{Upstream: src.Upstream, Name: name}
		}
	}
	return t
}
