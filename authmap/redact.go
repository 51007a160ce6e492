package authmap

import (
	"regexp"
	"slices"
	"strings"
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
	regexp.MustCompile(`(?i)\b(?:x-api-key|api-key|authorization|private-token|x-auth-token|x-vault-token|cookie)\s*:\s*([^\s,;"]+(?:\s+[^\s,;"]+)?)`),
	regexp.MustCompile(`(?i)api key provided:\s*([^\s,;"]+?)(?:\.?(?:\s|$|"))`),
	regexp.MustCompile(`(?i)\b[a-z][a-z0-9+.\-]*://[^\s:/@"']+:([^\s@/"']+)@`),
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
	slices.SortFunc(known, func(a, b string) int { return len(b) - len(a) })
	for _, sec := range known {
		if len(sec) >= minSecretLen {
			s = strings.ReplaceAll(s, sec, Redacted)
		}
	}
	for _, re := range tokenShapes {
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
