package authmap

import (
	"errors"
	"fmt"
	"net/http"
	"regexp"
	"slices"
	"strings"
)

// Rule is an ops rule from config key classify.rules. Rules are tried in order, before the
// built-in rules; the first whose Match holds decides.
type Rule struct {
	// Provider names the provider reported in the failure: a built-in one (Providers) or the
	// rule's own, such as "acme" for a company's API. If empty, the provider is detected.
	Provider string `koanf:"provider" json:"provider"`
	// Match says which responses the rule applies to. At least one criterion is required.
	Match RuleMatch `koanf:"match" json:"match"`
	// Subtype is the auth failure subtype. Required when Type is auth_failure; must be empty otherwise.
	Subtype Subtype `koanf:"subtype" json:"subtype"`
	// Type is the failure type. If empty, defaults to auth_failure.
	Type Type `koanf:"type" json:"type"`
	// Retryable overrides the default. If nil, the default for the subtype applies.
	Retryable *bool `koanf:"retryable" json:"retryable"`
	// Recovery overrides the default. If empty, the default for the subtype applies.
	Recovery Recovery `koanf:"recovery" json:"recovery"`
}

// RuleMatch holds the criteria of a Rule; all given criteria must hold.
type RuleMatch struct {
	// Status is the HTTP status to match. If zero, any status (including none, for tool text) matches.
	Status int `koanf:"status" json:"status"`
	// Header maps a header name (case-insensitive) to a regular expression its value must match.
	// If empty, headers are not checked.
	Header map[string]string `koanf:"header" json:"header"`
	// Body is a regular expression (RE2) over the body, or over the text of a JSON-RPC error
	// message or isError result. If empty, the body is not checked.
	Body string `koanf:"body" json:"body"`
}

// providerNameRE is the shape of a provider name (schema/error.schema.json).
var providerNameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9_.-]*$`)

type compiledRule struct {
	rule   Rule
	header map[string]*regexp.Regexp // canonical header name
	body   *regexp.Regexp
}

// ValidateRules returns every problem of rules at once (errors.Join), each naming its key path,
// such as `classify.rules[1].match.body: invalid regex: ...` or
// `classify.rules[0].subtype: unknown subtype "foo"`. It returns nil when all rules are valid.
func ValidateRules(rules []Rule) error {
	_, err := compileRules(rules)
	return err
}

func compileRules(rules []Rule) ([]compiledRule, error) {
	var errs []error
	out := make([]compiledRule, 0, len(rules))
	for i, r := range rules {
		key := fmt.Sprintf("classify.rules[%d]", i)
		bad := func(field, format string, args ...any) {
			errs = append(errs, fmt.Errorf("%s.%s: %s", key, field, fmt.Sprintf(format, args...)))
		}
		cr := compiledRule{rule: r, header: map[string]*regexp.Regexp{}}
		typ := r.Type
		if typ == "" {
			typ = TypeAuthFailure
		}
		if !slices.Contains(Types(), typ) {
			bad("type", "unknown type %q", r.Type)
		}
		switch {
		case r.Subtype != "" && !slices.Contains(Subtypes(), r.Subtype):
			bad("subtype", "unknown subtype %q", r.Subtype)
		case typ == TypeAuthFailure && r.Subtype == "":
			bad("subtype", "required when type is auth_failure")
		case typ != TypeAuthFailure && r.Subtype != "":
			bad("subtype", "must be empty when type is %q", typ)
		}
		if r.Recovery != "" && !slices.Contains(Recoveries(), r.Recovery) {
			bad("recovery", "unknown recovery %q", r.Recovery)
		}
		// A provider that is not built in is the rule's own (a company's API):
		// the rule defines it. Its name travels in failure objects, so it is
		// held to the shape of the built-in ones.
		if r.Provider != "" && !providerNameRE.MatchString(r.Provider) {
			bad("provider", "invalid provider name %q: want [a-z0-9][a-z0-9_.-]*, such as acme (or a built-in one: %s)", r.Provider, strings.Join(Providers(), ", "))
		}
		m := r.Match
		if m.Status != 0 && (m.Status < 100 || m.Status > 599) {
			bad("match.status", "invalid HTTP status %d", m.Status)
		}
		for _, name := range slices.Sorted(mapKeys(m.Header)) {
			expr := m.Header[name]
			if strings.TrimSpace(name) == "" {
				bad("match.header", "empty header name")
				continue
			}
			re, err := regexp.Compile(expr)
			if err != nil {
				bad("match.header."+name, "invalid regex: %v", err)
				continue
			}
			cr.header[http.CanonicalHeaderKey(strings.TrimSpace(name))] = re
		}
		if m.Body != "" {
			re, err := regexp.Compile(m.Body)
			if err != nil {
				bad("match.body", "invalid regex: %v", err)
			}
			cr.body = re
		}
		if m.Status == 0 && len(m.Header) == 0 && m.Body == "" {
			bad("match", "at least one of status, header or body is required")
		}
		out = append(out, cr)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return out, nil
}

func mapKeys(m map[string]string) func(func(string) bool) {
	return func(yield func(string) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

func (c *Classifier) matchRules(in input) (verdict, bool) {
	rules := c.rules.Load()
	if rules == nil {
		return verdict{}, false
	}
	for _, cr := range *rules {
		m := cr.rule.Match
		if m.Status != 0 && m.Status != in.status {
			continue
		}
		ok := true
		for name, re := range cr.header {
			vals := in.header.Values(name)
			if !slices.ContainsFunc(vals, re.MatchString) {
				ok = false
				break
			}
		}
		if !ok {
			continue
		}
		if cr.body != nil {
			text := in.ruleText
			if text == "" {
				text = string(in.body)
			}
			if !cr.body.MatchString(text) {
				continue
			}
		}
		typ := cr.rule.Type
		if typ == "" {
			typ = TypeAuthFailure
		}
		v := verdict{typ: typ, sub: cr.rule.Subtype, retryable: cr.rule.Retryable, recovery: cr.rule.Recovery,
			provider: cr.rule.Provider, ops: true}
		v.detail = textDetail(in, parseDoc(in.body), verdict{})
		return v, true
	}
	return verdict{}, false
}
