package gateway

import (
	"fmt"
	"regexp"
	"strings"
)

// Variable references in config values.
//
//	${NAME}           the value of environment variable NAME; an error if it is unset or empty
//	${NAME:-default}  default when NAME is unset or empty (default is taken literally)
//	${env:NAME}       the same as ${NAME} (the spelling of VS Code and Cursor)
//	$${               a literal "${": $${NAME} is the text ${NAME}
//
// A missing variable is an error naming the key and the variable, never an
// empty string: a secret that did not reach the gateway must not turn into an
// empty Authorization header. Only the config file is expanded; a CREDGATE_*
// override is taken literally. Error messages name keys and variables, never
// an expanded value.

var varNameRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// expander expands references in every string of a raw config tree.
type expander struct {
	lookup func(name string) (string, bool)
	errs   []error
	// templates maps the key of each value that held a reference to its
	// text before expansion, so that messages can show it instead of the
	// value, which may be a secret.
	templates map[string]string
	// failed holds the keys whose values could not be expanded.
	failed map[string]bool
}

func newExpander(environ []string) *expander {
	vars := make(map[string]string, len(environ))
	for _, kv := range environ {
		if k, v, ok := strings.Cut(kv, "="); ok {
			vars[k] = v
		}
	}
	return &expander{
		lookup:    func(name string) (string, bool) { v, ok := vars[name]; return v, ok },
		templates: map[string]string{},
		failed:    map[string]bool{},
	}
}

// tree expands every string under v, in place where v is a map or list.
func (e *expander) tree(v any, key string) any {
	switch x := v.(type) {
	case string:
		out, err := expandString(x, e.lookup)
		if err != nil {
			e.errs = append(e.errs, &keyError{key: key, msg: err.Error()})
			e.failed[key] = true
			return x
		}
		if out != x {
			e.templates[key] = x
		}
		return out
	case map[string]any:
		for k, c := range x {
			x[k] = e.tree(c, joinKey(key, k))
		}
	case []any:
		for i, c := range x {
			x[i] = e.tree(c, fmt.Sprintf("%s[%d]", key, i))
		}
	}
	return v
}

// expandString expands the references in s. The first bad reference is the
// error.
func expandString(s string, lookup func(string) (string, bool)) (string, error) {
	if !strings.Contains(s, "$") {
		return s, nil
	}
	var b strings.Builder
	for {
		i := strings.IndexByte(s, '$')
		if i < 0 {
			b.WriteString(s)
			return b.String(), nil
		}
		b.WriteString(s[:i])
		s = s[i:]
		switch {
		case strings.HasPrefix(s, "$${"):
			b.WriteString("${")
			s = s[3:]
		case strings.HasPrefix(s, "${"):
			end := strings.IndexByte(s, '}')
			if end < 0 {
				return "", fmt.Errorf("unterminated reference %q: want ${NAME}; write $${ for a literal ${", truncate(s, 40))
			}
			v, err := resolve(s[2:end], lookup)
			if err != nil {
				return "", err
			}
			b.WriteString(v)
			s = s[end+1:]
		default:
			b.WriteByte('$')
			s = s[1:]
		}
	}
}

// resolve returns the value of the reference ${ref}.
func resolve(ref string, lookup func(string) (string, bool)) (string, error) {
	name, def, hasDef := strings.Cut(ref, ":-")
	if n, ok := strings.CutPrefix(name, "env:"); ok {
		name = n
	}
	if !varNameRE.MatchString(name) {
		if strings.HasPrefix(name, "input:") {
			return "", fmt.Errorf("${%s}: input variables (a VS Code prompt) are not supported; use ${NAME} with an environment variable", ref)
		}
		return "", fmt.Errorf("invalid reference ${%s}: want ${NAME} with NAME an environment variable name; write $${ for a literal ${", ref)
	}
	v, ok := lookup(name)
	switch {
	case v != "":
		return v, nil
	case hasDef:
		return def, nil
	case ok:
		return "", fmt.Errorf("${%s}: environment variable %s is empty (write ${%s:-} if empty is intended)", name, name, name)
	}
	return "", fmt.Errorf("${%s}: environment variable %s is not set", name, name)
}
