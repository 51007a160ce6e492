package authmap

import (
	"bytes"
	"encoding/json"
	"regexp"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"unicode/utf8"
)

// Redacted replaces every secret Redact removes.
const Redacted = "[REDACTED]"

// minSecretLen keeps Redact from shredding text when a configured secret is trivially short.
const minSecretLen = 4

// tokenShapes match well-known credential formats. A pattern with a capture group redacts only
// the group (the scheme or parameter name stays readable).
var tokenShapes = []*regexp.Regexp{
	regexp.MustCompile(`\bgithub_pat_[A-Za-z0-9_]{20,}`),
	regexp.MustCompile(`\bgh[pousr]_[A-Za-z0-9]{16,}`),
	regexp.MustCompile(`\bsk-ant-[A-Za-z0-9_\-]{10,}`),
	regexp.MustCompile(`\bsk-[A-Za-z0-9_\-]{16,}`),
	regexp.MustCompile(`\b[sr]k_(?:live|test)_[A-Za-z0-9]{8,}`),
	regexp.MustCompile(`\bxox[abposre]-[A-Za-z0-9\-]{8,}`),
	regexp.MustCompile(`\b(?:AKIA|ASIA)[A-Z0-9]{16}\b`),
	regexp.MustCompile(`\bglpat-[A-Za-z0-9_\-]{16,}`),
	regexp.MustCompile(`\bnpm_[A-Za-z0-9]{20,}`),
	regexp.MustCompile(`\bhv[sbr]\.[A-Za-z0-9_\-]{20,}`),
	regexp.MustCompile(`\bs\.[A-Za-z0-9]{24}\b`),
	regexp.MustCompile(`\beyJ[A-Za-z0-9_\-]+\.eyJ[A-Za-z0-9_\-]+\.[A-Za-z0-9_\-]*`),
	authSchemeValue,
	regexp.MustCompile(`(?i)(?:[?&;]|\b)(?:api[_-]?key|apikey|key|token|access_token|refresh_token|id_token|client_secret|password|secret|sig|signature|x-amz-signature|x-amz-credential|x-amz-security-token)=([^&\s"'#<>]+)`),
	regexp.MustCompile(`(?i)"(?:access_token|refresh_token|id_token|client_secret|password|api_key|apikey|secret|token|private_key)"\s*:\s*"([^"]+)"`),
	// A header name (x-goog-api-key too), not after "." or a word character: "upstreams.x.headers.X-Api-Key: want a string" is a
	// config key path, not a header line.
	regexp.MustCompile(`(?i)(?:^|[^.\w-])(?:[a-z0-9]+-)*(?:x-api-key|api-key|authorization|private-token|x-auth-token|x-vault-token|cookie)\s*:\s*([^\s,;"]+(?:\s+[^\s,;"]+)?)`),
	regexp.MustCompile(`(?i)api key provided:\s*([^\s,;"]+?)(?:\.?(?:\s|$|"))`),
	regexp.MustCompile(`(?i)\b[a-z][a-z0-9+.\-]*://[^\s:/@"']+:([^\s@/"']+)@`),
}

// shapeNeeds holds, for each of tokenShapes, text that any match of it
// contains (one of any; each of all): a shape whose text is absent is not
// run, which makes redacting text that holds no token several times faster
// (a 15 MB error result took 11 s of CPU). fold literals are matched in the
// text's lower case, and only when the text is ASCII: (?i) folds some other
// letters into ASCII ones (the Kelvin sign into k, the long s into s). A
// replacement ("[REDACTED]") never makes one of them appear, so the check
// holds for every step.
var shapeNeeds = [...]struct {
	any, all []string
	fold     bool
}{
	{any: []string{"github_pat_"}},
	{any: []string{"gh"}},
	{any: []string{"sk-ant-"}},
	{any: []string{"sk-"}},
	{any: []string{"k_live_", "k_test_"}},
	{any: []string{"xox"}},
	{any: []string{"AKIA", "ASIA"}},
	{any: []string{"glpat-"}},
	{any: []string{"npm_"}},
	{any: []string{"hv"}},
	{any: []string{"s."}},
	{all: []string{"eyJ"}},
	{any: []string{"bearer", "basic", "token"}, fold: true},
	{all: []string{"="}},
	{all: []string{`"`, ":"}},
	{all: []string{":"}},
	{all: []string{":", "api key provided"}, fold: true},
	{all: []string{"://", "@"}},
}

// mayMatch reports whether s (lower: its lower case, or "" when not ASCII)
// holds what a shape needs.
func mayMatch(s, lower string, need struct {
	any, all []string
	fold     bool
}) bool {
	text := s
	if need.fold {
		if lower == "" {
			return true // not ASCII: run the shape
		}
		text = lower
	}
	for _, lit := range need.all {
		if !strings.Contains(text, lit) {
			return false
		}
	}
	if len(need.any) == 0 {
		return true
	}
	for _, lit := range need.any {
		if strings.Contains(text, lit) {
			return true
		}
	}
	return false
}

func ascii(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return false
		}
	}
	return true
}

// authSchemeValue matches "Bearer <value>"; the value must contain a digit, so that
// `Bearer resource_metadata="..."` and prose ("Bearer authentication") stay readable.
var authSchemeValue = regexp.MustCompile(`(?i)\b(?:Bearer|Basic|Token)\s+([A-Za-z0-9._~+/\-]{12,}=*)(?:$|[\s"',;)\]}>])`)

// Redact removes secrets from s: every known secret value (at least 4 characters), plus well-known
// token shapes (GitHub, OpenAI, Anthropic, Stripe, Slack, AWS access key ids, GitLab, npm, Vault,
// JWTs, Bearer/Basic values, api_key=... query parameters, URL passwords). Each becomes "[REDACTED]".
func Redact(s string, secrets []string) string {
	if s == "" {
		return s
	}
	known := slices.Clone(secrets)
	// Longest first, so a secret containing another is removed whole.
	slices.SortFunc(known, longestFirst)
	return redactSorted(s, known)
}

func longestFirst(a, b string) int { return len(b) - len(a) }

// redactSorted is Redact with the known secrets sorted longest first.
func redactSorted(s string, known []string) string {
	for _, sec := range known {
		if len(sec) >= minSecretLen {
			s = strings.ReplaceAll(s, sec, Redacted)
		}
	}
	lower := "" // s in lower case, when ASCII (see shapeNeeds)
	if ascii(s) {
		lower = strings.ToLower(s)
	}
	for i, re := range tokenShapes {
		if !mayMatch(s, lower, shapeNeeds[i]) {
			continue
		}
		if re.NumSubexp() == 0 {
			s = re.ReplaceAllString(s, Redacted)
			continue
		}
		s = replaceGroup(s, re, re == authSchemeValue)
	}
	return s
}

func replaceGroup(s string, re *regexp.Regexp, needDigit bool) string {
	idx := re.FindAllStringSubmatchIndex(s, -1)
	if idx == nil {
		return s
	}
	var b strings.Builder
	last := 0
	for _, m := range idx {
		if m[2] < 0 || s[m[2]:m[3]] == Redacted {
			continue
		}
		if strings.HasPrefix(s[m[2]:m[3]], "[REDACTED") {
			continue
		}
		if needDigit && !strings.ContainsAny(s[m[2]:m[3]], "0123456789") {
			continue
		}
		b.WriteString(s[last:m[2]])
		b.WriteString(Redacted)
		last = m[3]
	}
	b.WriteString(s[last:])
	return b.String()
}

// Redactor removes secrets from text: the values it knows and, in Redact, the well-known token
// shapes. Its list is live: Add makes a value known from then on (a credential rotated while the
// gateway runs), for every surface that redacts through it. It is safe for concurrent use, and
// redacting takes no lock.
//
// A value is known as written, in the forms JSON encoders write it in (jsonForms), and
// percent-encoded by any encoder (pctPattern): a value an upstream echoes in a URL it quotes, or
// a form body, is redacted too. (Found trying the gateway from outside: "tok/en+Secret=..." came
// back as "tok%2Fen%2BSecret%3D..." in a result and in an upstream's 401 body, unredacted.)
type Redactor struct {
	mu    sync.Mutex                    // serialises Add and Replace
	state atomic.Pointer[redactorState] // nil: nothing known
}

// redactorState is what a Redactor knows, replaced whole on each change.
type redactorState struct {
	values []string // as given: at least 4 bytes each, no duplicates
	known  []string // values and their JSON forms, longest first, no duplicates
	// pct matches a value percent-encoded, any of its escapable bytes
	// escaped or not, in either hex case; one per value that has such a
	// byte, longest value first. Run only on text that holds a "%" or a
	// "+" (a space form-encoded).
	pct []*regexp.Regexp
}

// NewRedactor returns a Redactor that knows secrets (nil allowed).
func NewRedactor(secrets []string) *Redactor {
	r := &Redactor{}
	r.Add(secrets...)
	return r
}

// Add makes secrets known. Values shorter than 4 bytes are ignored: redacting them would shred
// ordinary text.
func (r *Redactor) Add(secrets ...string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	old := r.Values()
	next := newRedactorState(append(slices.Clone(old), secrets...))
	if len(next.values) == len(old) {
		return
	}
	r.state.Store(next)
}

// Replace makes secrets the whole list, dropping values no longer given: for a caller that
// rebuilds its list from sources that bound their own history (credentials keep their last
// values), so that the list does not grow with every renewal of a short-lived token.
func (r *Redactor) Replace(secrets ...string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.state.Store(newRedactorState(secrets))
}

func newRedactorState(secrets []string) *redactorState {
	st := &redactorState{}
	seen := make(map[string]bool, len(secrets))
	for _, v := range secrets {
		if len(v) < minSecretLen || seen[v] {
			continue
		}
		seen[v] = true
		st.values = append(st.values, v)
	}
	forms := make(map[string]bool, len(st.values))
	for _, v := range st.values {
		for _, f := range jsonForms(v) {
			if len(f) >= minSecretLen && !forms[f] {
				forms[f] = true
				st.known = append(st.known, f)
			}
		}
	}
	slices.SortStableFunc(st.known, longestFirst)
	byLength := slices.Clone(st.values)
	slices.SortStableFunc(byLength, longestFirst)
	for _, v := range byLength {
		if re := pctPattern(v); re != nil {
			st.pct = append(st.pct, re)
		}
	}
	return st
}

// pctPattern returns a pattern matching v percent-encoded by any encoder, or nil when no encoder
// would change it (letters, digits and "-._~" only, as most tokens are). Each other byte may be
// written as is or as %XX (either hex case), and a space also as "+": query values, path segments,
// encodeURIComponent, encodeURI and Python's quote differ only in which bytes they escape.
func pctPattern(v string) *regexp.Regexp {
	if !utf8.ValidString(v) {
		return nil
	}
	var b strings.Builder
	escapable := false
	for _, c := range v {
		if c < utf8.RuneSelf && unreserved(byte(c)) {
			b.WriteString(regexp.QuoteMeta(string(c)))
			continue
		}
		escapable = true
		b.WriteString("(?:")
		b.WriteString(regexp.QuoteMeta(string(c)))
		if c == ' ' {
			b.WriteString(`|\+`)
		}
		b.WriteString("|")
		for _, x := range []byte(string(c)) {
			b.WriteString("%" + hexClass(x>>4) + hexClass(x&0xf))
		}
		b.WriteString(")")
	}
	if !escapable {
		return nil
	}
	return regexp.MustCompile(b.String())
}

// unreserved reports whether c is one no percent-encoder escapes (RFC 3986's unreserved).
func unreserved(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '.' || c == '_' || c == '~'
}

// hexClass is a pattern matching the hex digit of n in either case.
func hexClass(n byte) string {
	const digits = "0123456789ABCDEF"
	d := digits[n]
	if d < 'A' {
		return string(d)
	}
	return "[" + string(d) + string(d+'a'-'A') + "]"
}

// jsonForms returns s and, where they differ, the forms JSON encoders write it in: with and
// without HTML escapes, and with "/" escaped as "\/" (PHP's json_encode, some Java encoders).
func jsonForms(s string) []string {
	forms := []string{s}
	for _, escapeHTML := range []bool{true, false} {
		var b bytes.Buffer
		enc := json.NewEncoder(&b)
		enc.SetEscapeHTML(escapeHTML)
		if enc.Encode(s) != nil {
			continue
		}
		e := strings.TrimSuffix(b.String(), "\n")
		e = e[1 : len(e)-1] // the quotes
		for _, f := range []string{e, strings.ReplaceAll(e, "/", `\/`)} {
			if !slices.Contains(forms, f) {
				forms = append(forms, f)
			}
		}
	}
	return forms
}

// Secrets returns the forms of the known values that are searched for as they are (the values
// and their JSON forms), longest first. The slice must not be modified. A value percent-encoded
// is not among them: see HoldsEncoded.
func (r *Redactor) Secrets() []string {
	if st := r.state.Load(); st != nil {
		return st.known
	}
	return nil
}

// Values returns the known values as they were given. The slice must not be modified.
func (r *Redactor) Values() []string {
	if st := r.state.Load(); st != nil {
		return st.values
	}
	return nil
}

// HoldsEncoded reports whether b holds a known value percent-encoded (with at least one byte
// escaped, or as written).
func (r *Redactor) HoldsEncoded(b []byte) bool {
	st := r.state.Load()
	if st == nil || len(st.pct) == 0 || bytes.IndexAny(b, "%+") < 0 {
		return false
	}
	for _, re := range st.pct {
		if re.Match(b) {
			return true
		}
	}
	return false
}

// redactEncoded removes the known values percent-encoded from s.
func (r *Redactor) redactEncoded(s string) string {
	st := r.state.Load()
	if st == nil || len(st.pct) == 0 || strings.IndexAny(s, "%+") < 0 {
		return s
	}
	for _, re := range st.pct {
		s = re.ReplaceAllLiteralString(s, Redacted)
	}
	return s
}

// Redact removes the known values and the well-known token shapes from s, like the package's
// Redact: for text bound for logs, failure objects and health.
func (r *Redactor) Redact(s string) string {
	if s == "" {
		return s
	}
	return redactSorted(r.redactEncoded(s), r.Secrets())
}

// RedactKnown removes only the known values from s: for data an upstream returned as a success,
// where a token-shaped string may be the very point of the result. It returns s itself, without
// allocating, when s holds none, so that the hot path of ordinary results costs a few searches.
func (r *Redactor) RedactKnown(s string) string {
	s = r.redactEncoded(s)
	known := r.Secrets()
	for i, sec := range known {
		if strings.Contains(s, sec) {
			for _, sec := range known[i:] {
				s = strings.ReplaceAll(s, sec, Redacted)
			}
			return s
		}
	}
	return s
}

// RedactCut is Redact for text cut short at its end (the first bytes of a longer line): a known
// value the cut split is not found whole, so what ends the text and begins a known value (see
// cutEnd) is removed too, and the text ends in Redacted in its place.
func (r *Redactor) RedactCut(s string) string {
	return r.cutEnd(r.Redact(s))
}

// RedactElided is Redact for text that quotes pieces of its input cut short with "..." (a JSON
// decoder's errors do): what ends such a piece and begins a known value is removed as well.
func (r *Redactor) RedactElided(s string) string {
	s = r.Redact(s)
	if !strings.Contains(s, "...") {
		return s
	}
	var b strings.Builder
	for {
		i := strings.Index(s, "...")
		if i < 0 {
			b.WriteString(s)
			return b.String()
		}
		b.WriteString(r.cutEnd(s[:i]))
		b.WriteString("...")
		s = s[i+3:]
	}
}

// cutEnd removes from the end of s the longest proper prefix of a known value, of at least
// minCutLen bytes and starting where a word may (not inside a run of letters and digits), putting
// Redacted in its place. A shorter piece shows too little of a value to matter, and ordinary text
// ("the access token...") must not lose its words.
func (r *Redactor) cutEnd(s string) string {
	cut := len(s)
	for _, sec := range r.Secrets() {
		// The earliest start of a proper prefix of sec that ends s.
		for i := max(0, len(s)-len(sec)+1); i <= len(s)-minCutLen && i < cut; i++ {
			if s[i] == sec[0] && (i == 0 || !wordByte(s[i-1]) || !wordByte(s[i])) && strings.HasPrefix(sec, s[i:]) {
				cut = i
				break
			}
		}
	}
	if cut == len(s) {
		return s
	}
	return s[:cut] + Redacted
}

// minCutLen is the shortest piece of a known value cutEnd removes.
const minCutLen = 8

func wordByte(b byte) bool {
	return b >= 'a' && b <= 'z' || b >= 'A' && b <= 'Z' || b >= '0' && b <= '9' || b >= 0x80
}
