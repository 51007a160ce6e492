package authmap

import (
	"net/http"
	"regexp"
	"strconv"
	"strings"
)

// Message patterns. Every pattern here has a sample in testdata (corpus.json or holdout.json).
var (
	reRevoked     = regexp.MustCompile(`(?i)\brevoked\b|\btoken_revoked\b|\baccount_inactive\b|\bdeactivated\b|deleted user`)
	reExpired     = regexp.MustCompile(`(?i)\bexpired\b|lifetime validation failed|ExpiredToken|_EXPIRED\b|\btoken_expired\b`)
	reInvalidWord = regexp.MustCompile(`(?i)\binvalid\b|malformed|not found|does not match|bad request|not valid`)
	reMissing     = regexp.MustCompile(`(?i)(did not|didn't) provide an api key|no (api key|auth\w*|token|credentials?|bearer token|access token)( was| were)? (provided|supplied|given|found|present)|missing (required )?(authentication|credentials?|api key|access token|authorization|bearer token|client token)|authorization required|authentication required|requires authentication|not authenticated|x-api-key header is required|login required`)
	reScopeWeak   = regexp.MustCompile(`(?i)\bscopes?\b`)
	reRateStrong  = regexp.MustCompile(`(?i)secondary rate limit|rate limit (?:of \d+ (?:still )?)?exceeded|rate limit reached|rate_limit_exceeded|\bratelimited\b|\brate[_ ]limited\b|too many requests|RESOURCE_EXHAUSTED|ThrottlingException|\bThrottling\b|TooManyRequestsException|RequestLimitExceeded|throttledRequest|code = ResourceExhausted|exceeded the rate limit|rate-limit has been reached|\brated limited\b|\berror code:? 1015\b`)
	reQuota       = regexp.MustCompile(`(?i)insufficient_quota|credit balance is too low|exceeded your current quota|billing_error|dailyLimitExceeded|\bquotaExceeded\b|quota exceeded for quota metric .*per day`)
	reHTMLTitle   = regexp.MustCompile(`(?is)<title>(.*?)</title>`)
)

// strongText are provider-distinctive phrases; they count even without an HTTP status (tool text).
var strongText = []struct {
	re       *regexp.Regexp
	v        verdict
	provider string
}{
	{reQuota, auth(SubtypeQuotaExhausted), ""},
	{regexp.MustCompile(`(?i)request too large for .*tokens`), verdict{typ: TypeInvalidRequest, retryable: bptr(false)}, ProviderOpenAI},
	{regexp.MustCompile(`SAML enforcement|X-GitHub-SSO`), auth(SubtypePermissionDenied), ProviderGitHub},
	{regexp.MustCompile(`Resource not accessible by (?:integration|personal access token)`), auth(SubtypeInsufficientScope), ProviderGitHub},
	{regexp.MustCompile(`(?i)\binsufficient_scopes?\b|insufficient authentication scopes|scope does not match|\bmissing_scope\b|ACCESS_TOKEN_SCOPE_INSUFFICIENT|Authorization_RequestDenied|not been granted the required scopes?|\binsufficientPermissions\b|insufficient permissions for this endpoint|\brestricted_resource\b|does not have the required permissions for this endpoint`), auth(SubtypeInsufficientScope), ""},
	// Entra's AADSTS codes say which it is, though the body also carries invalid_grant.
	{regexp.MustCompile(`AADSTS(?:700082|70008|70043|7000222)\b`), auth(SubtypeCredentialExpired), ""},
	{regexp.MustCompile(`(?i)expired or revoked|\btoken_revoked\b|\baccount_inactive\b|token was revoked|has been revoked|\binvalid_grant\b|AADSTS50173\b`), auth(SubtypeCredentialRevoked), ""},
	{regexp.MustCompile(`ExpiredToken(?:Exception)?\b|\bRequestExpired\b|ACCESS_TOKEN_EXPIRED|\btoken_expired\b|\bapi_key_expired\b|(?i)(?:oauth|access|security|id|refresh|bearer) token (?:has |is )?expired|token is expired|lifetime validation failed|expired api key|AADSTS(?:700082|70008|70043|7000222)\b`), auth(SubtypeCredentialExpired), ""},
	{regexp.MustCompile(`\bnot_authed\b|CREDENTIALS_MISSING|MissingAuthenticationToken|Requires authentication|CredentialsProviderError|Could not load credentials from any providers|\bNoCredentialProviders\b|get credentials: failed to refresh cached credentials, no EC2 IMDS role found|CredentialUnavailableError|(?i)(?:did not|didn't) provide an API key|missing client token`), auth(SubtypeCredentialMissing), ""},
	{regexp.MustCompile(`Bad credentials|Authentication Failed:`), verdict{typ: TypeAuthFailure, sub: SubtypeCredentialInvalid, kind: kindKey}, ProviderGitHub},
	{regexp.MustCompile(`(?i)invalid x-api-key|incorrect api key provided|invalid api key provided|\binvalid_api_key\b|API key not valid|\binvalid_auth\b|\binvalid_token\b|\binvalid_client\b|InvalidClientTokenId|UnrecognizedClientException|SignatureDoesNotMatch|InvalidSignatureException|IncompleteSignature|InvalidAccessKeyId|InvalidAuthenticationToken|API token is invalid|authentication token seems to be invalid|\bE401\b|invalid authentication credentials|Client must be authenticated|code = Unauthenticated|\bUNAUTHENTICATED\b|Bad Access Token|Server failed to authenticate the request|\* invalid token|AADSTS(?:7000215|50012|50126)\b`), verdict{typ: TypeAuthFailure, sub: SubtypeCredentialInvalid, refine: true}, ""},
	{regexp.MustCompile(`(?m)^(?:Error: )?Permission Denied:|AccessDenied(?:Exception)?\b|UnauthorizedOperation|\bno_permission\b|\bPERMISSION_DENIED\b|code = PermissionDenied|Insufficient privileges to complete|not authorized to perform|\bpermission_error\b|The caller does not have permission`), auth(SubtypePermissionDenied), ""},
}

// fromChallenge reads WWW-Authenticate (RFC 6750 / RFC 9728).
func fromChallenge(in input) verdict {
	chs := parseChallenges(in.header.Values("Www-Authenticate"))
	if len(chs) == 0 {
		return verdict{}
	}
	var info verdict
	for _, ch := range chs {
		if ch.params["resource_metadata"] != "" {
			info.provider = ProviderMCP
		}
	}
	for _, ch := range chs {
		code := ch.params["error"]
		if code == "" {
			continue
		}
		desc := ch.params["error_description"]
		v := verdict{code: code, detail: desc, kind: kindOAuth, provider: info.provider}
		if v.provider == "" {
			v.provider = ProviderOAuth
		}
		switch code {
		case "invalid_token":
			v.typ, v.sub, v.refine = TypeAuthFailure, SubtypeCredentialInvalid, true
		case "insufficient_scope":
			v.typ, v.sub = TypeAuthFailure, SubtypeInsufficientScope
			if sc := ch.params["scope"]; sc != "" {
				v.detail = strings.TrimSpace(desc + " (scope: " + sc + ")")
			}
		case "invalid_request":
			if in.status == 401 {
				v.typ, v.sub = TypeAuthFailure, SubtypeCredentialMissing
				if !reMissing.MatchString(desc) && desc != "" {
					v.sub, v.refine = SubtypeCredentialInvalid, true
				}
			} else {
				v.typ = TypeInvalidRequest
			}
		default:
			continue
		}
		return v
	}
	// No error parameter: RFC 6750 §3.1 says the request carried no credential.
	if in.status == 401 {
		v := verdict{typ: TypeAuthFailure, sub: SubtypeCredentialMissing, provider: info.provider, kind: kindOAuth}
		if strings.EqualFold(chs[0].scheme, "basic") {
			v.kind = kindKey
		}
		if sc := chs[0].params["scope"]; sc != "" {
			v.detail = "authentication required (scope: " + sc + ")"
		}
		return v
	}
	return info
}

// rateLimitSignal applies rate-limit signals, but only on 403 and 429 (and tool text without a
// status). GitHub sends x-ratelimit-remaining: 0 on a 401 Bad credentials: that is never a rate limit.
func rateLimitSignal(in input, d *doc, info verdict) verdict {
	text := d.raw
	switch in.status {
	case 429:
		switch {
		case reQuota.MatchString(text):
			return auth(SubtypeQuotaExhausted)
		case has(text, "currently overloaded"):
			return verdict{typ: TypeUpstreamUnavailable}
		}
		return auth(SubtypeRateLimitReached)
	case 403:
		if reQuota.MatchString(text) {
			return auth(SubtypeQuotaExhausted)
		}
		if remainingZero(in.header) || in.header.Get("Retry-After") != "" || in.header.Get("Ratelimit-Reason") != "" ||
			reRateStrong.MatchString(text) || has(text, "rate limit") {
			return auth(SubtypeRateLimitReached)
		}
	case 0:
		if in.fromText && (reRateStrong.MatchString(text) || strings.Contains(text, "Rate Limit Exceeded:")) {
			return verdict{typ: TypeAuthFailure, sub: SubtypeRateLimitReached}
		}
	}
	return verdict{}
}

func remainingZero(h http.Header) bool {
	for k, vs := range h {
		lk := strings.ToLower(k)
		if strings.Contains(lk, "ratelimit-remaining") || strings.Contains(lk, "rate-limit-remaining") {
			for _, v := range vs {
				if strings.TrimSpace(v) == "0" {
					return true
				}
			}
		}
	}
	return false
}

// textSignal matches provider-distinctive phrases in bodies no detector understood (text,
// HTML, unknown JSON) and in tool text.
func textSignal(in input, d *doc, info verdict) verdict {
	switch in.status {
	case 0, 400, 401, 403, 407:
	default:
		return verdict{}
	}
	text := d.raw
	for _, p := range strongText {
		if !p.re.MatchString(text) {
			continue
		}
		v := p.v
		if in.status == 400 && v.sub != SubtypeQuotaExhausted && v.sub != SubtypeCredentialRevoked && v.sub != SubtypeCredentialExpired {
			// A 400 is a validation error unless the body names a credential's state.
			continue
		}
		v.provider = p.provider
		if v.detail == "" {
			v.detail = textDetail(in, d, info)
		}
		return v
	}
	return verdict{}
}

// textDetail picks the human message of a body no detector understood.
func textDetail(in input, d *doc, info verdict) string {
	if info.detail != "" {
		return info.detail
	}
	if d.html {
		if m := reHTMLTitle.FindStringSubmatch(d.raw); m != nil {
			return m[1]
		}
		return ""
	}
	if d.obj != nil {
		for _, k := range []string{"message", "error_description", "detail", "title", "error", "errorMessage", "msg"} {
			if s := str(d.obj[k]); s != "" {
				return s
			}
		}
		if e, ok := d.obj["error"].(map[string]any); ok {
			return str(e["message"])
		}
		return ""
	}
	if d.xml {
		if m := reXMLAWSMsg.FindStringSubmatch(d.raw); m != nil {
			return m[1]
		}
		if m := reXMLMessage.FindStringSubmatch(d.raw); m != nil {
			return m[1]
		}
		return ""
	}
	return strings.TrimSpace(d.raw)
}

// reStateConflict matches messages that blame the resource's state, not the caller's credential.
var reStateConflict = regexp.MustCompile(`(?i)cannot publish over|previously published version|already exists`)

// statusFallback decides from the status alone, refined by the message.
func statusFallback(in input, info verdict) verdict {
	d := parseDoc(in.body)
	v := verdict{detail: textDetail(in, d, info)}
	text := d.raw
	s := in.status
	switch {
	case s == 401 || s == 407:
		v.typ, v.sub, v.refine = TypeAuthFailure, SubtypeCredentialInvalid, true
		if reMissing.MatchString(text) {
			v.sub = SubtypeCredentialMissing
		}
	case s == 403 && reStateConflict.MatchString(text):
		// Some registries answer a write that conflicts with existing state with 403 (npm's
		// "cannot publish over the previously published versions"): the request, not the credential.
		v.typ = TypeInvalidRequest
	case s == 403:
		v.typ, v.sub = TypeAuthFailure, SubtypePermissionDenied
		if reScopeWeak.MatchString(text) && !d.html {
			v.sub = SubtypeInsufficientScope
		}
	case s == 429:
		v.typ, v.sub = TypeAuthFailure, SubtypeRateLimitReached
	case s == 402:
		v.typ, v.sub = TypeAuthFailure, SubtypeQuotaExhausted
	case s == 408:
		v.typ = TypeTimeout
	case s == 504 || s == 522 || s == 524:
		// Gateway timeouts; Cloudflare's 522 (connection timed out) and 524 (a timeout occurred) too.
		v.typ = TypeUpstreamUnavailable
		if has(text, "timeout") || has(text, "time-out") || has(text, "timed out") {
			v.typ = TypeTimeout
		}
	case s == 502 || s == 503 || s == 529 || (s >= 520 && s <= 527):
		v.typ = TypeUpstreamUnavailable
	case s == 501 || s == 505:
		v.typ, v.retryable = TypeUpstreamError, bptr(false)
	case s >= 500:
		v.typ, v.retryable = TypeUpstreamError, bptr(true)
	case s == 404 || s == 410:
		v.typ = TypeNotFound
	case s == 400 || s == 409 || s == 422 || s == 405 || s == 406 || s == 411 || s == 413 || s == 414 || s == 415 || s == 416 || s == 431:
		v.typ = TypeInvalidRequest
	case s >= 100:
		v.typ = TypeUpstreamError
	}
	return v
}

// refineMessage tells expired and revoked apart where only the message does. Revoked wins when a
// message says both ("The provided grant has expired due to it being revoked").
func refineMessage(msg string) Subtype {
	switch {
	case reRevoked.MatchString(msg):
		return SubtypeCredentialRevoked
	case reExpired.MatchString(msg):
		return SubtypeCredentialExpired
	}
	return ""
}

// inferStatus reads a status echoed in a body seen without one (tool text).
func inferStatus(d *doc) int {
	pick := func(v any) int {
		switch x := v.(type) {
		case float64:
			if x >= 100 && x <= 599 {
				return int(x)
			}
		case string:
			if n, err := strconv.Atoi(x); err == nil && n >= 100 && n <= 599 {
				return n
			}
		}
		return 0
	}
	if d.obj == nil {
		return 0
	}
	for _, k := range []string{"status", "status-code", "statusCode", "code"} {
		if n := pick(d.obj[k]); n != 0 {
			return n
		}
	}
	if e, ok := d.obj["error"].(map[string]any); ok {
		if n := pick(e["code"]); n != 0 {
			return n
		}
	}
	return 0
}

var providerMarkers = []struct {
	provider string
	re       *regexp.Regexp
}{
	{ProviderGitHub, regexp.MustCompile(`(?i)api\.github\.com|docs\.github\.com|developer\.github\.com|\bgithub\b`)},
	{ProviderGitLab, regexp.MustCompile(`(?i)\bgitlab\b`)},
	{ProviderStripe, regexp.MustCompile(`(?i)stripe\.com|\bstripe\b`)},
	{ProviderOpenAI, regexp.MustCompile(`(?i)openai\.com|\bopenai\b`)},
	{ProviderAnthropic, regexp.MustCompile(`(?i)anthropic|x-api-key`)},
	{ProviderMicrosoft, regexp.MustCompile(`(?i)AADSTS\d+|login\.microsoftonline\.com|graph\.microsoft\.com|InvalidAuthenticationToken`)},
	{ProviderGoogle, regexp.MustCompile(`(?i)googleapis\.com|accounts\.google\.com`)},
	{ProviderAWS, regexp.MustCompile(`amazonaws\.com|\b(?:ExpiredToken|InvalidClientTokenId|UnrecognizedClientException|SignatureDoesNotMatch|AccessDeniedException)\b`)},
	{ProviderSlack, regexp.MustCompile(`(?i)slack\.com|\bslack\b`)},
	{ProviderNotion, regexp.MustCompile(`(?i)api\.notion\.com|\bnotion\b`)},
	{ProviderAtlassian, regexp.MustCompile(`(?i)atlassian|\bjira\b|confluence`)},
	{ProviderNPM, regexp.MustCompile(`(?i)registry\.npmjs\.org|npm notice|npm ERR!`)},
	{ProviderVault, regexp.MustCompile(`(?i)\bvault\b`)},
}

// detectProviderMeta names the provider from headers and text when no rule did.
func detectProviderMeta(in input, d *doc) string {
	h := in.header
	server := lower(h.Get("Server"))
	switch {
	case strings.Contains(server, "cloudflare") || strings.Contains(server, "nginx"):
		return ProviderGeneric
	case h.Get("X-Github-Request-Id") != "" || strings.Contains(server, "github.com"):
		return ProviderGitHub
	case h.Get("X-Notion-Request-Id") != "":
		return ProviderNotion
	case h.Get("Npm-Notice") != "":
		return ProviderNPM
	case h.Get("X-Vault-Request") != "":
		return ProviderVault
	case h.Get("X-Amzn-Requestid") != "" || h.Get("X-Amz-Request-Id") != "":
		return ProviderAWS
	case h.Get("Client-Request-Id") != "" && h.Get("Request-Id") != "":
		return ProviderMicrosoft
	}
	for k := range h {
		lk := lower(k)
		switch {
		case strings.HasPrefix(lk, "x-github"):
			return ProviderGitHub
		case strings.HasPrefix(lk, "anthropic-"):
			return ProviderAnthropic
		case strings.HasPrefix(lk, "openai-"):
			return ProviderOpenAI
		case strings.HasPrefix(lk, "stripe-"):
			return ProviderStripe
		case strings.HasPrefix(lk, "x-slack"):
			return ProviderSlack
		}
	}
	for _, ch := range parseChallenges(h.Values("Www-Authenticate")) {
		if ch.params["resource_metadata"] != "" {
			return ProviderMCP
		}
		if ch.params["error"] != "" {
			return ProviderOAuth
		}
	}
	if d.html {
		return ""
	}
	for _, m := range providerMarkers {
		if m.re.MatchString(d.raw) {
			return m.provider
		}
	}
	return ""
}
