package authmap

import (
	"fmt"
	"strings"
)

// Type is the top-level class of a normalized upstream failure.
type Type string

// Failure types. Only TypeAuthFailure concerns the credential; the others are
// controls that must never trigger a credential recovery.
const (
	TypeAuthFailure         Type = "auth_failure"
	TypeUpstreamError       Type = "upstream_error"
	TypeUpstreamUnavailable Type = "upstream_unavailable"
	TypeTimeout             Type = "timeout"
	TypeInvalidRequest      Type = "invalid_request"
	TypeNotFound            Type = "not_found"
	// TypeForbidden is the gateway's own refusal: the agent's policy does
	// not let it call the tool (or read the prompt or resource). It is
	// never about an upstream credential, and no classifier rule yields it.
	TypeForbidden Type = "forbidden"
)

func (t Type) String() string { return string(t) }

// Types lists every Type, in schema order.
func Types() []Type {
	return []Type{TypeAuthFailure, TypeUpstreamError, TypeUpstreamUnavailable, TypeTimeout, TypeInvalidRequest, TypeNotFound, TypeForbidden}
}

// Subtype refines TypeAuthFailure.
type Subtype string

// Auth failure subtypes.
const (
	SubtypeCredentialMissing Subtype = "credential_missing"
	SubtypeCredentialInvalid Subtype = "credential_invalid"
	SubtypeCredentialExpired Subtype = "credential_expired"
	SubtypeCredentialRevoked Subtype = "credential_revoked"
	SubtypeInsufficientScope Subtype = "insufficient_scope"
	SubtypePermissionDenied  Subtype = "permission_denied"
	SubtypeRateLimitReached  Subtype = "rate_limit_reached"
	SubtypeQuotaExhausted    Subtype = "quota_exhausted"
)

func (s Subtype) String() string { return string(s) }

// Subtypes lists every Subtype, in schema order.
func Subtypes() []Subtype {
	return []Subtype{SubtypeCredentialMissing, SubtypeCredentialInvalid, SubtypeCredentialExpired, SubtypeCredentialRevoked,
		SubtypeInsufficientScope, SubtypePermissionDenied, SubtypeRateLimitReached, SubtypeQuotaExhausted}
}

// Recovery is a hint for what makes the call succeed again.
type Recovery string

// Recovery hints.
const (
	RecoveryRefresh         Recovery = "refresh"          // renew the credential (OAuth refresh, rotating source)
	RecoveryReauthorize     Recovery = "reauthorize"      // a human runs the OAuth flow again
	RecoveryRotate          Recovery = "rotate"           // replace the API key / secret
	RecoveryGrantScope      Recovery = "grant_scope"      // grant the missing OAuth scope or app permission
	RecoveryGrantPermission Recovery = "grant_permission" // change policy / ACL / IAM / SSO authorization
	RecoveryWait            Recovery = "wait"             // wait (retry_after_seconds when known), then retry
	RecoveryAddQuota        Recovery = "add_quota"        // add credits or raise the quota
	RecoveryContactAdmin    Recovery = "contact_admin"    // an administrator must act (account, tenant, service setup)
)

func (r Recovery) String() string { return string(r) }

// Recoveries lists every Recovery, in schema order.
func Recoveries() []Recovery {
	return []Recovery{RecoveryRefresh, RecoveryReauthorize, RecoveryRotate, RecoveryGrantScope, RecoveryGrantPermission,
		RecoveryWait, RecoveryAddQuota, RecoveryContactAdmin}
}

// Provider names that appear in Failure.Provider.
const (
	ProviderGitHub    = "github"
	ProviderGitLab    = "gitlab"
	ProviderStripe    = "stripe"
	ProviderOpenAI    = "openai"
	ProviderAnthropic = "anthropic"
	ProviderAWS       = "aws"
	ProviderGoogle    = "google"
	ProviderMicrosoft = "microsoft"
	ProviderSlack     = "slack"
	ProviderNotion    = "notion"
	ProviderAtlassian = "atlassian"
	ProviderNPM       = "npm"
	ProviderVault     = "vault"
	ProviderOAuth     = "oauth"
	ProviderMCP       = "mcp"
	ProviderGeneric   = "generic"
)

// Providers lists every provider name Failure.Provider can hold.
func Providers() []string {
	return []string{ProviderGitHub, ProviderGitLab, ProviderStripe, ProviderOpenAI, ProviderAnthropic, ProviderAWS,
		ProviderGoogle, ProviderMicrosoft, ProviderSlack, ProviderNotion, ProviderAtlassian, ProviderNPM, ProviderVault,
		ProviderOAuth, ProviderMCP, ProviderGeneric}
}

// NormalizeProvider maps a provider hint or alias ("google-oauth", "microsoft-graph", "rfc6750", "nginx", ...)
// to one of Providers. It returns "" for an empty or unknown name.
func NormalizeProvider(name string) string {
	n := strings.ToLower(strings.TrimSpace(name))
	for _, p := range Providers() {
		if n == p {
			return p
		}
	}
	switch {
	case n == "":
		return ""
	case strings.HasPrefix(n, "google"), strings.HasPrefix(n, "gcp"):
		return ProviderGoogle
	case strings.HasPrefix(n, "microsoft"), strings.HasPrefix(n, "azure"), strings.HasPrefix(n, "entra"),
		strings.HasPrefix(n, "graph"), strings.HasPrefix(n, "msgraph"):
		return ProviderMicrosoft
	case strings.HasPrefix(n, "rfc6749"), strings.HasPrefix(n, "rfc6750"), strings.HasPrefix(n, "rfc9728"),
		strings.HasPrefix(n, "oauth"), strings.HasPrefix(n, "oidc"):
		return ProviderOAuth
	case strings.HasPrefix(n, "jira"), strings.HasPrefix(n, "confluence"), strings.HasPrefix(n, "atlassian"):
		return ProviderAtlassian
	case strings.HasPrefix(n, "github"):
		return ProviderGitHub
	case strings.HasPrefix(n, "gitlab"):
		return ProviderGitLab
	case strings.HasPrefix(n, "aws"), strings.HasPrefix(n, "amazon"), n == "s3":
		return ProviderAWS
	case strings.HasPrefix(n, "claude"):
		return ProviderAnthropic
	case strings.HasPrefix(n, "hashicorp"):
		return ProviderVault
	case strings.HasPrefix(n, "nginx"), strings.HasPrefix(n, "cloudflare"), strings.HasPrefix(n, "proxy"):
		return ProviderGeneric
	}
	return ""
}

// Failure is the gateway-normalized description of an upstream failure, as sent on the wire.
type Failure struct {
	Type              Type     `json:"type"`
	Subtype           Subtype  `json:"subtype,omitempty"`
	Retryable         bool     `json:"retryable"`
	RetryAfterSeconds *int     `json:"retry_after_seconds,omitempty"`
	Recovery          Recovery `json:"recovery,omitempty"`
	Upstream          string   `json:"upstream,omitempty"`
	Credential        string   `json:"credential,omitempty"`
	Provider          string   `json:"provider,omitempty"`
	ProviderCode      string   `json:"provider_code,omitempty"`
	Detail            string   `json:"detail,omitempty"`
}

// IsAuth reports whether the failure concerns the credential (type auth_failure).
func (f *Failure) IsAuth() bool { return f != nil && f.Type == TypeAuthFailure }

// Error returns a short human line, for example
//
//	auth_failure/credential_expired from upstream "github" (github: Bad credentials): refresh the credential
func (f *Failure) Error() string {
	var b strings.Builder
	b.WriteString(string(f.Type))
	if f.Subtype != "" {
		b.WriteByte('/')
		b.WriteString(string(f.Subtype))
	}
	if f.Upstream != "" {
		fmt.Fprintf(&b, " from upstream %q", f.Upstream)
	}
	if f.Credential != "" {
		fmt.Fprintf(&b, " with credential %q", f.Credential)
	}
	src := f.Provider
	if f.ProviderCode != "" {
		if src != "" {
			src += " "
		}
		src += f.ProviderCode
	}
	switch {
	case src != "" && f.Detail != "":
		fmt.Fprintf(&b, " (%s: %s)", src, Redact(f.Detail, nil))
	case src != "":
		fmt.Fprintf(&b, " (%s)", src)
	case f.Detail != "":
		fmt.Fprintf(&b, " (%s)", Redact(f.Detail, nil))
	}
	if h := f.hint(); h != "" {
		b.WriteString(": ")
		b.WriteString(h)
	}
	return b.String()
}

func (f *Failure) hint() string {
	switch f.Recovery {
	case RecoveryRefresh:
		return "refresh the credential"
	case RecoveryReauthorize:
		return "reauthorize"
	case RecoveryRotate:
		return "rotate the credential"
	case RecoveryGrantScope:
		return "grant the missing scope"
	case RecoveryGrantPermission:
		return "grant the permission"
	case RecoveryWait:
		if f.RetryAfterSeconds != nil {
			return fmt.Sprintf("retry after %ds", *f.RetryAfterSeconds)
		}
		return "wait and retry"
	case RecoveryAddQuota:
		return "add quota or credits"
	case RecoveryContactAdmin:
		return "contact the administrator"
	}
	return ""
}
