package routing

import (
	"fmt"
	"regexp"
	"strings"
	"unicode/utf8"
)

// Glob is a compiled name pattern, as used by tool filters. '*' matches any
// run of characters (none, and '/' included), '?' any one character, "[a-z_]"
// one character of a class ("[!...]" or "[^...]" negates it), and '\'
// escapes the character after it.
//
// Unlike path.Match, '*' and '?' match '/': a tool name is not a path, and a
// filter that "*_delete" fails to match "repo/drop_delete" is a filter an
// upstream can walk around.
type Glob struct {
	pattern string
	re      *regexp.Regexp
}

// CompileGlob compiles pattern, or reports why it is not a valid glob.
func CompileGlob(pattern string) (*Glob, error) {
	var b strings.Builder
	b.WriteString(`\A(?s:`)
	for i := 0; i < len(pattern); {
		switch c := pattern[i]; c {
		case '*':
			for i < len(pattern) && pattern[i] == '*' {
				i++
			}
			b.WriteString(".*")
		case '?':
			b.WriteString(".")
			i++
		case '[':
			class, n, err := globClass(pattern[i:])
			if err != nil {
				return nil, fmt.Errorf("invalid glob %q: %v", pattern, err)
			}
			b.WriteString(class)
			i += n
		case '\\':
			if i+1 == len(pattern) {
				return nil, fmt.Errorf("invalid glob %q: trailing backslash escapes nothing", pattern)
			}
			r, size := utf8.DecodeRuneInString(pattern[i+1:])
			b.WriteString(regexp.QuoteMeta(string(r)))
			i += 1 + size
		default:
			r, size := utf8.DecodeRuneInString(pattern[i:])
			b.WriteString(regexp.QuoteMeta(string(r)))
			i += size
		}
	}
	b.WriteString(`)\z`)
	re, err := regexp.Compile(b.String())
	if err != nil { // unreachable: every piece above is escaped
		return nil, fmt.Errorf("invalid glob %q: %v", pattern, err)
	}
	return &Glob{pattern: pattern, re: re}, nil
}

// globClass translates the character class at the start of s (s[0] is '[')
// into a regexp class, and returns how many bytes of s it took. Every
// character is written as \x{...}, so nothing in the class can mean anything
// to the regexp but itself.
func globClass(s string) (string, int, error) {
	var b strings.Builder
	b.WriteByte('[')
	i := 1
	if i < len(s) && (s[i] == '!' || s[i] == '^') {
		b.WriteByte('^')
		i++
	}
	next := func() (rune, error) {
		if i < len(s) && s[i] == '\\' {
			i++
		}
		if i == len(s) {
			return 0, fmt.Errorf("unterminated character class")
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		i += size
		return r, nil
	}
	items := 0
	for {
		if i == len(s) {
			return "", 0, fmt.Errorf("unterminated character class")
		}
		if s[i] == ']' {
			if items == 0 {
				return "", 0, fmt.Errorf("empty character class")
			}
			b.WriteByte(']')
			return b.String(), i + 1, nil
		}
		lo, err := next()
		if err != nil {
			return "", 0, err
		}
		hi := lo
		if i+1 < len(s) && s[i] == '-' && s[i+1] != ']' {
			i++
			if hi, err = next(); err != nil {
				return "", 0, err
			}
			if hi < lo {
				return "", 0, fmt.Errorf("range %c-%c is backwards", lo, hi)
			}
		}
		fmt.Fprintf(&b, `\x{%x}`, lo)
		if hi != lo {
			fmt.Fprintf(&b, `-\x{%x}`, hi)
		}
		items++
	}
}

// Match reports whether name matches the whole pattern.
func (g *Glob) Match(name string) bool { return g.re.MatchString(name) }

// String returns the pattern as written.
func (g *Glob) String() string { return g.pattern }

// Filter selects names by globs. Deny wins over allow; with no allow globs,
// every name that is not denied passes. A nil *Filter lets everything
// through.
type Filter struct {
	allow, deny []*Glob
}

// NewFilter compiles allow and deny. It fails on the first invalid pattern;
// callers that report every problem compile each pattern with [CompileGlob].
func NewFilter(allow, deny []string) (*Filter, error) {
	f := &Filter{}
	for _, p := range allow {
		g, err := CompileGlob(p)
		if err != nil {
			return nil, err
		}
		f.allow = append(f.allow, g)
	}
	for _, p := range deny {
		g, err := CompileGlob(p)
		if err != nil {
			return nil, err
		}
		f.deny = append(f.deny, g)
	}
	return f, nil
}

// Denied reports whether a deny glob matches name (whatever the allow
// globs say). A nil *Filter denies nothing.
func (f *Filter) Denied(name string) bool {
	if f == nil {
		return false
	}
	for _, g := range f.deny {
		if g.Match(name) {
			return true
		}
	}
	return false
}

// Allowed reports whether name passes the filter.
func (f *Filter) Allowed(name string) bool {
	if f == nil {
		return true
	}
	if f.Denied(name) {
		return false
	}
	if len(f.allow) == 0 {
		return true
	}
	for _, g := range f.allow {
		if g.Match(name) {
			return true
		}
	}
	return false
}
