package authmap

import (
	"regexp"
	"strconv"
	"strings"
)

// detector recognises one provider's documented error shape. It returns a decided verdict when
// the body's machine codes settle the question, or an undecided one carrying what it learned
// (provider, code, detail).
type detector func(in input, d *doc) verdict

// detectors run in this order; shapes are mostly disjoint, the order breaks the few ties
// (a Google envelope also has error.code, an RFC 6749 body also has "error").
var detectors = []detector{
	detectSlack,
	detectGraphQL,
	detectOAuthBody,
	detectVault,
	detectNotion,
	detectAtlassian,
	detectGoogle,
	detectGraph,
	detectAPIEnvelope,
	detectAWS,
	detectGitHub,
	detectGitLab,
	detectNPM,
	detectSDKText,
}

func bptr(b bool) *bool { return &b }

func lower(s string) string { return strings.ToLower(s) }

func has(s, sub string) bool { return strings.Contains(strings.ToLower(s), strings.ToLower(sub)) }

// ---- Slack: HTTP 200 {"ok":false,"error":"code"} ----

var slackCodes = map[string]Subtype{
	"not_authed":                SubtypeCredentialMissing,
	"invalid_auth":              SubtypeCredentialInvalid,
	"not_allowed_token_type":    SubtypeCredentialInvalid,
	"invalid_client_id":         SubtypeCredentialInvalid,
	"bad_client_secret":         SubtypeCredentialInvalid,
	"token_expired":             SubtypeCredentialExpired,
	"token_revoked":             SubtypeCredentialRevoked,
	"account_inactive":          SubtypeCredentialRevoked,
	"invalid_refresh_token":     SubtypeCredentialRevoked,
	"missing_scope":             SubtypeInsufficientScope,
	"no_permission":             SubtypePermissionDenied,
	"ekm_access_denied":         SubtypePermissionDenied,
	"access_denied":             SubtypePermissionDenied,
	"org_login_required":        SubtypePermissionDenied,
	"team_access_not_granted":   SubtypePermissionDenied,
	"two_factor_setup_required": SubtypePermissionDenied,
	"restricted_action":         SubtypePermissionDenied,
	"ratelimited":               SubtypeRateLimitReached,
	"rate_limited":              SubtypeRateLimitReached,
}

func detectSlack(in input, d *doc) verdict {
	ok, isBool := d.obj["ok"].(bool)
	code := str(d.obj["error"])
	if !isBool || ok || code == "" {
		return verdict{}
	}
	v := verdict{provider: ProviderSlack, code: code, kind: kindOAuth}
	if needed := str(d.obj["needed"]); needed != "" {
		v.detail = code + ": needed " + needed
		if p := str(d.obj["provided"]); p != "" {
			v.detail += ", provided " + p
		}
	}
	return slackCodeVerdict(v, code)
}

// slackCodeVerdict types a Slack Web API error code.
func slackCodeVerdict(v verdict, code string) verdict {
	if s, ok := slackCodes[code]; ok {
		v.typ, v.sub = TypeAuthFailure, s
		return v
	}
	switch {
	case strings.HasSuffix(code, "_not_found"):
		v.typ = TypeNotFound
	case code == "service_unavailable":
		v.typ = TypeUpstreamUnavailable
	case code == "request_timeout":
		v.typ = TypeTimeout
	case code == "internal_error" || code == "fatal_error":
		v.typ, v.retryable = TypeUpstreamError, bptr(true)
	case strings.HasPrefix(code, "invalid_") || strings.HasPrefix(code, "missing_") || strings.HasSuffix(code, "_too_long"):
		v.typ = TypeInvalidRequest
	default:
		v.typ = TypeUpstreamError
	}
	return v
}

// ---- GraphQL (GitHub v4): 200 with errors[] ----

func detectGraphQL(in input, d *doc) verdict {
	errs, ok := d.obj["errors"].([]any)
	if !ok || len(errs) == 0 {
		return verdict{}
	}
	v := verdict{}
	if isGitHub(in, d) {
		v.provider = ProviderGitHub
	}
	for _, e := range errs {
		m, ok := e.(map[string]any)
		if !ok {
			return verdict{}
		}
		typ := strings.ToUpper(str(m["type"]))
		msg := str(m["message"])
		ext, _ := m["extensions"].(map[string]any)
		if v.detail == "" {
			v.detail = msg
		}
		switch {
		case ext["saml_failure"] == true || has(msg, "SAML enforcement"):
			v.typ, v.sub, v.detail, v.code = TypeAuthFailure, SubtypePermissionDenied, msg, "saml_failure"
		case typ == "INSUFFICIENT_SCOPES":
			v.typ, v.sub, v.detail, v.code = TypeAuthFailure, SubtypeInsufficientScope, msg, typ
		case typ == "RATE_LIMITED" || (typ != "" && reRateStrong.MatchString(msg)):
			v.typ, v.sub, v.detail, v.code = TypeAuthFailure, SubtypeRateLimitReached, msg, typ
		case typ == "FORBIDDEN":
			v.typ, v.sub, v.detail, v.code = TypeAuthFailure, SubtypePermissionDenied, msg, typ
		case typ == "UNAUTHORIZED" || typ == "UNAUTHENTICATED":
			v.typ, v.sub, v.detail, v.code = TypeAuthFailure, SubtypeCredentialInvalid, msg, typ
		}
		if v.decided() {
			return v
		}
	}
	return v
}

// ---- RFC 6749 token endpoint / RFC 6750 body / Entra: {"error":"code","error_description":...} ----

var reAADSTS = regexp.MustCompile(`AADSTS(\d+)`)

// entraCodes maps AADSTS error codes (Microsoft Entra ID) that tell apart what invalid_grant merges.
var entraCodes = map[int]struct {
	sub  Subtype
	kind credKind
	rec  Recovery
}{
	700082:  {SubtypeCredentialExpired, kindRefresh, RecoveryReauthorize}, // refresh token expired due to inactivity
	70008:   {SubtypeCredentialExpired, kindRefresh, RecoveryReauthorize}, // refresh token / code expired
	70043:   {SubtypeCredentialExpired, kindRefresh, RecoveryReauthorize}, // conditional access sign-in frequency
	7000222: {SubtypeCredentialExpired, kindKey, RecoveryRotate},          // client secret expired
	50173:   {SubtypeCredentialRevoked, kindRefresh, RecoveryReauthorize}, // grant revoked (password reset)
	50133:   {SubtypeCredentialRevoked, kindRefresh, RecoveryReauthorize}, // session invalid after password change
	50057:   {SubtypeCredentialRevoked, kindRefresh, RecoveryReauthorize}, // user account disabled
	7000215: {SubtypeCredentialInvalid, kindKey, RecoveryRotate},          // invalid client secret
	50012:   {SubtypeCredentialInvalid, kindKey, RecoveryRotate},          // authentication failed (client credential)
	700016:  {SubtypeCredentialInvalid, kindKey, RecoveryContactAdmin},    // application not found in the directory
	50126:   {SubtypeCredentialInvalid, kindKey, RecoveryReauthorize},     // invalid username or password
	50076:   {SubtypeCredentialInvalid, kindOAuth, RecoveryReauthorize},   // MFA required: interaction needed
	50079:   {SubtypeCredentialInvalid, kindOAuth, RecoveryReauthorize},   // MFA enrollment required
	50158:   {SubtypeCredentialInvalid, kindOAuth, RecoveryReauthorize},   // external security challenge
	65001:   {SubtypeInsufficientScope, kindOAuth, RecoveryGrantScope},    // consent not granted
	65004:   {SubtypeInsufficientScope, kindOAuth, RecoveryGrantScope},    // user declined consent
	70011:   {SubtypeInsufficientScope, kindOAuth, RecoveryGrantScope},    // invalid scope
	53003:   {SubtypePermissionDenied, kindOAuth, RecoveryContactAdmin},   // blocked by conditional access
	50105:   {SubtypePermissionDenied, kindOAuth, RecoveryContactAdmin},   // user not assigned to the app
}

func detectOAuthBody(in input, d *doc) verdict {
	code := str(d.obj["error"])
	if code == "" {
		return verdict{}
	}
	desc := str(d.obj["error_description"])
	v := verdict{provider: ProviderOAuth, code: code, detail: desc, kind: kindOAuth}
	if v.detail == "" {
		v.detail = code
	}
	// Entra: error_codes[0] or the AADSTS prefix in the description.
	aad := 0
	if codes, ok := d.obj["error_codes"].([]any); ok && len(codes) > 0 {
		if n, ok := codes[0].(float64); ok {
			aad = int(n)
		}
	}
	if m := reAADSTS.FindStringSubmatch(desc); m != nil {
		v.provider = ProviderMicrosoft
		if aad == 0 {
			aad, _ = strconv.Atoi(m[1])
		}
	}
	if aad != 0 {
		v.provider = ProviderMicrosoft
		v.code = "AADSTS" + strconv.Itoa(aad)
		if e, ok := entraCodes[aad]; ok {
			v.typ, v.sub, v.kind, v.recovery = TypeAuthFailure, e.sub, e.kind, e.rec
			return v
		}
	}
	switch code {
	case "invalid_grant":
		v.typ, v.kind = TypeAuthFailure, kindRefresh
		switch {
		case reClockSkew.MatchString(desc):
			v.sub, v.kind = SubtypeCredentialInvalid, kindKey
		case reRevoked.MatchString(desc):
			v.sub = SubtypeCredentialRevoked
		case reExpired.MatchString(desc):
			v.sub = SubtypeCredentialExpired
		case desc != "" && reInvalidWord.MatchString(desc):
			v.sub = SubtypeCredentialInvalid
		default:
			// "invalid, expired, revoked, ... or issued to another client": treat like revoked.
			v.sub = SubtypeCredentialRevoked
		}
	case "invalid_client":
		v.typ, v.sub, v.kind, v.refine = TypeAuthFailure, SubtypeCredentialInvalid, kindKey, true
	case "invalid_token":
		v.typ, v.sub, v.refine = TypeAuthFailure, SubtypeCredentialInvalid, true
	case "unauthorized_client", "access_denied":
		v.typ, v.sub = TypeAuthFailure, SubtypePermissionDenied
	case "invalid_scope", "insufficient_scope", "consent_required":
		v.typ, v.sub = TypeAuthFailure, SubtypeInsufficientScope
		if sc := str(d.obj["scope"]); sc != "" {
			v.detail = strings.TrimSpace(v.detail + " (scope: " + sc + ")")
		}
	case "login_required", "interaction_required":
		v.typ, v.sub, v.recovery = TypeAuthFailure, SubtypeCredentialInvalid, RecoveryReauthorize
	case "invalid_request", "unsupported_grant_type", "unsupported_response_type", "unsupported_token_type":
		if in.status == 401 {
			v.typ, v.sub = TypeAuthFailure, SubtypeCredentialInvalid
			if reMissing.MatchString(desc) {
				v.sub = SubtypeCredentialMissing
			}
		} else {
			v.typ = TypeInvalidRequest
		}
	case "temporarily_unavailable":
		v.typ = TypeUpstreamUnavailable
	case "server_error":
		v.typ, v.retryable = TypeUpstreamError, bptr(true)
	default:
		// Not an OAuth code ("Unauthorized", "Not found"): keep the text for later steps.
		v = verdict{detail: strings.TrimSpace(code + " " + desc)}
	}
	return v
}

var reClockSkew = regexp.MustCompile(`(?i)invalid jwt|clock|iat and exp|reasonable timeframe`)

// ---- HashiCorp Vault: {"errors":["..."]} ----

func detectVault(in input, d *doc) verdict {
	arr, ok := d.obj["errors"].([]any)
	if !ok {
		return verdict{}
	}
	var parts []string
	for _, e := range arr {
		s, ok := e.(string)
		if !ok {
			return verdict{}
		}
		parts = append(parts, s)
	}
	msg := strings.Join(parts, "; ")
	v := verdict{provider: ProviderVault, detail: msg, kind: kindKey}
	switch l := lower(msg); {
	case strings.Contains(l, "invalid token") || strings.Contains(l, "bad token") || strings.Contains(l, "token not found"):
		v.typ, v.sub, v.code = TypeAuthFailure, SubtypeCredentialInvalid, "invalid token"
	case strings.Contains(l, "missing client token"):
		v.typ, v.sub, v.code = TypeAuthFailure, SubtypeCredentialMissing, "missing client token"
	case strings.Contains(l, "permission denied"):
		// Older Vault sends only "permission denied" for bad tokens too (hashicorp/vault#2159);
		// the policy reading is the documented one.
		v.typ, v.sub, v.code = TypeAuthFailure, SubtypePermissionDenied, "permission denied"
	case strings.Contains(l, "rate limit"):
		v.typ, v.sub = TypeAuthFailure, SubtypeRateLimitReached
	case strings.Contains(l, "vault is sealed"):
		v.typ = TypeUpstreamUnavailable
	}
	return v
}

// ---- Notion: {"object":"error","status":N,"code":...,"message":...} ----

var notionCodes = map[string]verdict{
	"unauthorized":                    auth(SubtypeCredentialInvalid),
	"restricted_resource":             auth(SubtypeInsufficientScope),
	"rate_limited":                    auth(SubtypeRateLimitReached),
	"invalid_grant":                   auth(SubtypeCredentialRevoked),
	"object_not_found":                {typ: TypeNotFound},
	"validation_error":                {typ: TypeInvalidRequest},
	"invalid_json":                    {typ: TypeInvalidRequest},
	"invalid_request_url":             {typ: TypeInvalidRequest},
	"invalid_request":                 {typ: TypeInvalidRequest},
	"missing_version":                 {typ: TypeInvalidRequest},
	"conflict_error":                  {typ: TypeUpstreamError, retryable: bptr(true)},
	"internal_server_error":           {typ: TypeUpstreamError, retryable: bptr(true)},
	"service_unavailable":             {typ: TypeUpstreamUnavailable},
	"database_connection_unavailable": {typ: TypeUpstreamUnavailable},
	"gateway_timeout":                 {typ: TypeTimeout},
}

func detectNotion(in input, d *doc) verdict {
	if str(d.obj["object"]) != "error" {
		return verdict{}
	}
	code := str(d.obj["code"])
	v := verdict{provider: ProviderNotion, code: code, detail: str(d.obj["message"]), kind: kindKey}
	if nv, ok := notionCodes[code]; ok {
		v.typ, v.sub, v.retryable = nv.typ, nv.sub, nv.retryable
		if code == "object_not_found" {
			v.detail = strings.TrimSpace(v.detail + " (may be unshared with the integration)")
		}
	}
	return v
}

// ---- Atlassian (Jira/Confluence Cloud and DC) ----

var reXMLMessage = regexp.MustCompile(`(?s)<message>(.*?)</message>`)

func detectAtlassian(in input, d *doc) verdict {
	var msg string
	switch {
	case d.obj != nil && (d.obj["status-code"] != nil || d.obj["errorMessages"] != nil):
		msg = str(d.obj["message"])
		if em, ok := d.obj["errorMessages"].([]any); ok {
			var parts []string
			for _, e := range em {
				parts = append(parts, str(e))
			}
			msg = strings.Join(parts, "; ")
		}
	case d.xml && strings.Contains(d.raw, "<status-code>"):
		if m := reXMLMessage.FindStringSubmatch(d.raw); m != nil {
			msg = m[1]
		}
	case d.obj != nil && has(str(d.obj["message"]), "scope does not match"):
		msg = str(d.obj["message"])
	case has(in.header.Get("Www-Authenticate"), "atlassian") || has(in.header.Get("Server"), "atlassian") || in.hint == ProviderAtlassian:
		msg = str(d.obj["message"])
	default:
		return verdict{}
	}
	v := verdict{provider: ProviderAtlassian, detail: msg, kind: kindKey}
	switch {
	case has(msg, "scope does not match"):
		// Often a trailing slash in the URL rather than a real scope gap (Atlassian KB).
		v.typ, v.sub = TypeAuthFailure, SubtypeInsufficientScope
	case in.status == 401:
		v.typ, v.sub = TypeAuthFailure, SubtypeCredentialInvalid
	case in.status == 403:
		v.typ, v.sub = TypeAuthFailure, SubtypePermissionDenied
		if reScopeWeak.MatchString(msg) {
			v.sub = SubtypeInsufficientScope
		}
	}
	return v
}

// ---- Google APIs: google.rpc.Status envelope ----

var googleReasons = map[string]verdict{
	"ACCESS_TOKEN_EXPIRED":            {typ: TypeAuthFailure, sub: SubtypeCredentialExpired, kind: kindOAuth},
	"CREDENTIALS_MISSING":             {typ: TypeAuthFailure, sub: SubtypeCredentialMissing, kind: kindOAuth},
	"ACCESS_TOKEN_TYPE_UNSUPPORTED":   {typ: TypeAuthFailure, sub: SubtypeCredentialInvalid, kind: kindOAuth},
	"ACCESS_TOKEN_INVALID":            {typ: TypeAuthFailure, sub: SubtypeCredentialInvalid, kind: kindOAuth},
	"SESSION_COOKIE_INVALID":          {typ: TypeAuthFailure, sub: SubtypeCredentialInvalid, kind: kindOAuth},
	"API_KEY_INVALID":                 {typ: TypeAuthFailure, sub: SubtypeCredentialInvalid, kind: kindKey},
	"API_KEY_EXPIRED":                 {typ: TypeAuthFailure, sub: SubtypeCredentialExpired, kind: kindKey},
	"ACCESS_TOKEN_SCOPE_INSUFFICIENT": {typ: TypeAuthFailure, sub: SubtypeInsufficientScope, kind: kindOAuth},
	"API_KEY_SERVICE_BLOCKED":         {typ: TypeAuthFailure, sub: SubtypePermissionDenied, kind: kindKey},
	"API_KEY_HTTP_REFERRER_BLOCKED":   {typ: TypeAuthFailure, sub: SubtypePermissionDenied, kind: kindKey},
	"API_KEY_IP_ADDRESS_BLOCKED":      {typ: TypeAuthFailure, sub: SubtypePermissionDenied, kind: kindKey},
	"API_KEY_ANDROID_APP_BLOCKED":     {typ: TypeAuthFailure, sub: SubtypePermissionDenied, kind: kindKey},
	"API_KEY_IOS_APP_BLOCKED":         {typ: TypeAuthFailure, sub: SubtypePermissionDenied, kind: kindKey},
	"IAM_PERMISSION_DENIED":           auth(SubtypePermissionDenied),
	"USER_PROJECT_DENIED":             auth(SubtypePermissionDenied),
	"ORG_RESTRICTION_VIOLATION":       auth(SubtypePermissionDenied),
	"ORG_RESTRICTION_HEADER_INVALID":  auth(SubtypePermissionDenied),
	"LOCATION_POLICY_VIOLATION":       auth(SubtypePermissionDenied),
	"SECURITY_POLICY_VIOLATION":       auth(SubtypePermissionDenied),
	"SERVICE_DISABLED":                {typ: TypeAuthFailure, sub: SubtypePermissionDenied, recovery: RecoveryContactAdmin},
	"BILLING_DISABLED":                {typ: TypeAuthFailure, sub: SubtypePermissionDenied, recovery: RecoveryContactAdmin},
	"CONSUMER_SUSPENDED":              {typ: TypeAuthFailure, sub: SubtypePermissionDenied, recovery: RecoveryContactAdmin},
	"CONSUMER_INVALID":                {typ: TypeAuthFailure, sub: SubtypePermissionDenied, recovery: RecoveryContactAdmin},
	"RATE_LIMIT_EXCEEDED":             auth(SubtypeRateLimitReached),
	"RESOURCE_QUOTA_EXCEEDED":         auth(SubtypeRateLimitReached),
}

// googleLegacy maps the legacy errors[].reason values of Google's older JSON APIs.
var googleLegacy = map[string]verdict{
	"authError":               {typ: TypeAuthFailure, sub: SubtypeCredentialInvalid, kind: kindOAuth, refine: true},
	"required":                {}, // ambiguous (missing parameter or missing login)
	"insufficientPermissions": auth(SubtypeInsufficientScope),
	"forbidden":               auth(SubtypePermissionDenied),
	"rateLimitExceeded":       auth(SubtypeRateLimitReached),
	"userRateLimitExceeded":   auth(SubtypeRateLimitReached),
	"dailyLimitExceeded":      auth(SubtypeQuotaExhausted),
	"dailyLimitExceededUnreg": auth(SubtypeQuotaExhausted),
	"quotaExceeded":           auth(SubtypeQuotaExhausted),
	"keyInvalid":              {typ: TypeAuthFailure, sub: SubtypeCredentialInvalid, kind: kindKey},
	"keyExpired":              {typ: TypeAuthFailure, sub: SubtypeCredentialExpired, kind: kindKey},
	"accessNotConfigured":     {typ: TypeAuthFailure, sub: SubtypePermissionDenied, recovery: RecoveryContactAdmin},
}

var googleStatuses = map[string]bool{
	"CANCELLED": true, "UNKNOWN": true, "INVALID_ARGUMENT": true, "DEADLINE_EXCEEDED": true, "NOT_FOUND": true,
	"ALREADY_EXISTS": true, "PERMISSION_DENIED": true, "RESOURCE_EXHAUSTED": true, "FAILED_PRECONDITION": true,
	"ABORTED": true, "OUT_OF_RANGE": true, "UNIMPLEMENTED": true, "INTERNAL": true, "UNAVAILABLE": true,
	"DATA_LOSS": true, "UNAUTHENTICATED": true,
}

var rePerDay = regexp.MustCompile(`(?i)per[ -]day|daily|per[ -]month|monthly`)

func detectGoogle(in input, d *doc) verdict {
	e, ok := d.obj["error"].(map[string]any)
	if !ok {
		return verdict{}
	}
	status := str(e["status"])
	_, numCode := e["code"].(float64)
	_, hasDetails := e["details"].([]any)
	_, hasErrors := e["errors"].([]any)
	if !googleStatuses[status] && !(numCode && (hasDetails || hasErrors)) {
		return verdict{}
	}
	msg := str(e["message"])
	v := verdict{provider: ProviderGoogle, code: status, detail: msg, kind: kindOAuth}
	var reason string
	quotaFailure := false
	if details, ok := e["details"].([]any); ok {
		for _, x := range details {
			m, _ := x.(map[string]any)
			switch t := str(m["@type"]); {
			case strings.HasSuffix(t, "google.rpc.ErrorInfo") && reason == "":
				reason = str(m["reason"])
			case strings.HasSuffix(t, "google.rpc.QuotaFailure"):
				quotaFailure = true
			}
		}
	}
	var legacy string
	if errs, ok := e["errors"].([]any); ok && len(errs) > 0 {
		m, _ := errs[0].(map[string]any)
		legacy = str(m["reason"])
	}
	daily := rePerDay.MatchString(msg)
	if reason != "" {
		v.code = reason
		if gv, ok := googleReasons[reason]; ok {
			v.typ, v.sub, v.recovery = gv.typ, gv.sub, gv.recovery
			if gv.kind != kindUnknown {
				v.kind = gv.kind
			}
			if v.sub == SubtypeRateLimitReached && daily {
				v.sub = SubtypeQuotaExhausted
			}
			return v
		}
	}
	if lv, ok := googleLegacy[legacy]; ok && lv.decided() {
		v.code = legacy
		v.typ, v.sub, v.recovery, v.refine = lv.typ, lv.sub, lv.recovery, lv.refine
		if lv.kind != kindUnknown {
			v.kind = lv.kind
		}
		if v.sub == SubtypeRateLimitReached && daily {
			v.sub = SubtypeQuotaExhausted
		}
		return v
	}
	switch {
	case has(msg, "insufficient authentication scopes"):
		v.typ, v.sub = TypeAuthFailure, SubtypeInsufficientScope
	case has(msg, "API key not valid") || has(msg, "API key expired"):
		v.typ, v.sub, v.kind, v.refine = TypeAuthFailure, SubtypeCredentialInvalid, kindKey, true
	case status == "UNAUTHENTICATED":
		v.typ, v.sub, v.refine = TypeAuthFailure, SubtypeCredentialInvalid, true
		if has(msg, "missing required authentication") {
			v.sub = SubtypeCredentialMissing
		}
	case status == "PERMISSION_DENIED":
		v.typ, v.sub = TypeAuthFailure, SubtypePermissionDenied
	case status == "RESOURCE_EXHAUSTED" || quotaFailure:
		v.typ, v.sub = TypeAuthFailure, SubtypeRateLimitReached
		if daily {
			v.sub = SubtypeQuotaExhausted
		}
	case status == "NOT_FOUND":
		v.typ = TypeNotFound
	case status == "INVALID_ARGUMENT" || status == "FAILED_PRECONDITION" || status == "OUT_OF_RANGE" || status == "ALREADY_EXISTS":
		v.typ = TypeInvalidRequest
	case status == "UNAVAILABLE":
		v.typ = TypeUpstreamUnavailable
	case status == "DEADLINE_EXCEEDED":
		v.typ = TypeTimeout
	case status == "ABORTED":
		// google.rpc.Code ABORTED: a concurrency conflict; the API design guide says retry.
		v.typ, v.retryable = TypeUpstreamError, bptr(true)
	}
	return v
}

// ---- Microsoft Graph: {"error":{"code":"PascalCase","message":...,"innerError":{...}}} ----

var graphCodes = map[string]verdict{
	"InvalidAuthenticationToken":      {typ: TypeAuthFailure, sub: SubtypeCredentialInvalid, refine: true},
	"Authorization_RequestDenied":     auth(SubtypeInsufficientScope),
	"Authorization_IdentityNotFound":  auth(SubtypePermissionDenied),
	"accessDenied":                    auth(SubtypePermissionDenied),
	"ErrorAccessDenied":               auth(SubtypePermissionDenied),
	"Forbidden":                       auth(SubtypePermissionDenied),
	"TooManyRequests":                 auth(SubtypeRateLimitReached),
	"activityLimitReached":            auth(SubtypeRateLimitReached),
	"throttledRequest":                auth(SubtypeRateLimitReached),
	"ApplicationThrottled":            auth(SubtypeRateLimitReached),
	"itemNotFound":                    {typ: TypeNotFound},
	"ResourceNotFound":                {typ: TypeNotFound},
	"Request_ResourceNotFound":        {typ: TypeNotFound},
	"ErrorItemNotFound":               {typ: TypeNotFound},
	"BadRequest":                      {typ: TypeInvalidRequest},
	"invalidRequest":                  {typ: TypeInvalidRequest},
	"Request_BadRequest":              {typ: TypeInvalidRequest},
	"serviceNotAvailable":             {typ: TypeUpstreamUnavailable},
	"ServiceUnavailable":              {typ: TypeUpstreamUnavailable},
	"generalException":                {typ: TypeUpstreamError, retryable: bptr(true)},
	"Authorization_RequestDenied_MFA": auth(SubtypePermissionDenied),
}

func detectGraph(in input, d *doc) verdict {
	e, ok := d.obj["error"].(map[string]any)
	if !ok {
		return verdict{}
	}
	code, isStr := e["code"].(string)
	inner, _ := e["innerError"].(map[string]any)
	if inner == nil {
		inner, _ = e["innererror"].(map[string]any)
	}
	_, known := graphCodes[code]
	msHeaders := in.header.Get("Client-Request-Id") != "" || in.header.Get("X-Ms-Ags-Diagnostic") != ""
	if !isStr || code == "" || (inner == nil && !known && !msHeaders) {
		return verdict{}
	}
	if _, llm := e["type"]; llm {
		return verdict{}
	}
	v := verdict{provider: ProviderMicrosoft, code: code, detail: str(e["message"]), kind: kindOAuth}
	innerCode := str(inner["code"])
	if in.status == 429 || innerCode == "throttledRequest" {
		v.typ, v.sub = TypeAuthFailure, SubtypeRateLimitReached
		if innerCode != "" {
			v.code = code + "/" + innerCode
		}
		return v
	}
	if gv, ok := graphCodes[code]; ok {
		v.typ, v.sub, v.refine, v.retryable = gv.typ, gv.sub, gv.refine, gv.retryable
	}
	return v
}

// ---- OpenAI / Anthropic / Stripe: {"error":{"type","code","message",...}} ----

func detectAPIEnvelope(in input, d *doc) verdict {
	e, ok := d.obj["error"].(map[string]any)
	if !ok {
		return verdict{}
	}
	etype := str(e["type"])
	ecode := str(e["code"])
	msg := str(e["message"])
	if etype == "" && ecode == "" && msg == "" {
		return verdict{}
	}
	v := verdict{detail: msg, kind: kindKey}
	_, hasParam := e["param"]
	switch {
	case str(d.obj["type"]) == "error" || strings.HasPrefix(str(d.obj["request_id"]), "req_") && etype != "" ||
		in.header.Get("Anthropic-Ratelimit-Requests-Limit") != "" || has(msg, "anthropic") || has(msg, "x-api-key"):
		v.provider = ProviderAnthropic
	case strings.Contains(str(e["doc_url"]), "stripe.com") || in.header.Get("Stripe-Should-Retry") != "" ||
		in.header.Get("Stripe-Version") != "" || reStripeKey.MatchString(msg) || has(msg, "stripe.com"):
		v.provider = ProviderStripe
	case hasParam || in.header.Get("Openai-Organization") != "" || in.header.Get("Openai-Processing-Ms") != "" ||
		has(msg, "openai.com") || ecode == "invalid_api_key" || ecode == "insufficient_quota" || etype == "insufficient_quota":
		v.provider = ProviderOpenAI
	}
	v.code = ecode
	if v.code == "" {
		v.code = etype
	}
	switch {
	case etype == "insufficient_quota" || ecode == "insufficient_quota" || etype == "billing_error" ||
		has(msg, "credit balance is too low") || has(msg, "exceeded your current quota"):
		v.typ, v.sub = TypeAuthFailure, SubtypeQuotaExhausted
	case has(msg, "request too large"):
		// OpenAI's TPM "Request too large" arrives as rate_limit_exceeded but retrying never helps.
		v.typ, v.retryable = TypeInvalidRequest, bptr(false)
	case etype == "overloaded_error" || has(msg, "currently overloaded"):
		v.typ = TypeUpstreamUnavailable
	case ecode == "lock_timeout":
		// Stripe sends object-lock contention as a 429 (stripe-php#718 retries it): transient, and
		// neither the credential nor its rate limit is involved, so it is checked before the 429 rule.
		v.typ, v.retryable = TypeUpstreamError, bptr(true)
	case etype == "rate_limit_error" || ecode == "rate_limit" || ecode == "rate_limit_exceeded" || etype == "rate_limit_exceeded" || in.status == 429:
		v.typ, v.sub = TypeAuthFailure, SubtypeRateLimitReached
	case ecode == "api_key_expired":
		v.typ, v.sub = TypeAuthFailure, SubtypeCredentialExpired
	case etype == "authentication_error" || ecode == "invalid_api_key" || in.status == 401:
		v.typ, v.sub, v.refine = TypeAuthFailure, SubtypeCredentialInvalid, true
		if reMissing.MatchString(msg) {
			v.sub = SubtypeCredentialMissing
		}
		if has(msg, "oauth") {
			v.kind = kindOAuth
		}
	case etype == "permission_error" || in.status == 403:
		v.typ, v.sub = TypeAuthFailure, SubtypePermissionDenied
		if has(msg, "does not have the required permissions") {
			// Stripe restricted keys name the missing rak_ permission: a scope the key lacks.
			v.sub = SubtypeInsufficientScope
		}
	case etype == "not_found_error" || ecode == "model_not_found" || ecode == "resource_missing":
		v.typ = TypeNotFound
	case etype == "api_error" || etype == "server_error":
		v.typ, v.retryable = TypeUpstreamError, bptr(true)
	case etype == "card_error" || etype == "idempotency_error" || etype == "invalid_request_error" && in.status < 500 && in.status != 0:
		v.typ = TypeInvalidRequest
	}
	if v.provider == "" && !v.decided() {
		return verdict{detail: msg, code: v.code}
	}
	return v
}

var reStripeKey = regexp.MustCompile(`\b[sr]k_(?:live|test)_|\brak_`)

// ---- AWS: JSON __type, x-amzn-ErrorType, XML <Code> ----

var awsCodes = map[string]Subtype{
	"ExpiredToken":                           SubtypeCredentialExpired,
	"ExpiredTokenException":                  SubtypeCredentialExpired,
	"RequestExpired":                         SubtypeCredentialExpired,
	"TokenRefreshRequired":                   SubtypeCredentialExpired,
	"InvalidClientTokenId":                   SubtypeCredentialInvalid,
	"UnrecognizedClientException":            SubtypeCredentialInvalid,
	"InvalidAccessKeyId":                     SubtypeCredentialInvalid,
	"InvalidToken":                           SubtypeCredentialInvalid,
	"SignatureDoesNotMatch":                  SubtypeCredentialInvalid,
	"InvalidSignatureException":              SubtypeCredentialInvalid,
	"IncompleteSignature":                    SubtypeCredentialInvalid,
	"NotAuthorizedException":                 SubtypeCredentialInvalid,
	"MissingAuthenticationToken":             SubtypeCredentialMissing,
	"MissingAuthenticationTokenException":    SubtypeCredentialMissing,
	"AccessDenied":                           SubtypePermissionDenied,
	"AccessDeniedException":                  SubtypePermissionDenied,
	"NotAuthorized":                          SubtypePermissionDenied,
	"UnauthorizedOperation":                  SubtypePermissionDenied,
	"AuthorizationError":                     SubtypePermissionDenied,
	"OptInRequired":                          SubtypePermissionDenied,
	"SubscriptionRequiredException":          SubtypePermissionDenied,
	"Throttling":                             SubtypeRateLimitReached,
	"ThrottlingException":                    SubtypeRateLimitReached,
	"ThrottledException":                     SubtypeRateLimitReached,
	"TooManyRequestsException":               SubtypeRateLimitReached,
	"RequestLimitExceeded":                   SubtypeRateLimitReached,
	"RequestThrottled":                       SubtypeRateLimitReached,
	"RequestThrottledException":              SubtypeRateLimitReached,
	"SlowDown":                               SubtypeRateLimitReached,
	"ProvisionedThroughputExceededException": SubtypeRateLimitReached,
}

var awsNonAuth = map[string]Type{
	"ValidationException":             TypeInvalidRequest,
	"ValidationError":                 TypeInvalidRequest,
	"InvalidParameterValue":           TypeInvalidRequest,
	"InvalidParameterException":       TypeInvalidRequest,
	"SerializationException":          TypeInvalidRequest,
	"ResourceNotFoundException":       TypeNotFound,
	"NoSuchKey":                       TypeNotFound,
	"NoSuchBucket":                    TypeNotFound,
	"NotFoundException":               TypeNotFound,
	"ServiceUnavailable":              TypeUpstreamUnavailable,
	"ServiceUnavailableException":     TypeUpstreamUnavailable,
	"ConditionalCheckFailedException": TypeInvalidRequest,
}

var (
	reXMLCode   = regexp.MustCompile(`<Code>\s*([A-Za-z0-9.]+)\s*</Code>`)
	reXMLAWSMsg = regexp.MustCompile(`(?s)<Message>(.*?)</Message>`)
)

func awsShortCode(s string) string {
	if i := strings.IndexByte(s, ':'); i >= 0 {
		s = s[:i]
	}
	if i := strings.LastIndexByte(s, '#'); i >= 0 {
		s = s[i+1:]
	}
	return strings.TrimSpace(s)
}

func detectAWS(in input, d *doc) verdict {
	var code, msg string
	awsHeaders := in.header.Get("X-Amzn-Requestid") != "" || in.header.Get("X-Amz-Request-Id") != "" ||
		in.header.Get("X-Amz-Id-2") != "" || has(in.header.Get("Server"), "AmazonS3") ||
		strings.HasPrefix(in.header.Get("Content-Type"), "application/x-amz-json")
	switch {
	case d.obj != nil && str(d.obj["__type"]) != "":
		code = awsShortCode(str(d.obj["__type"]))
		msg = str(d.obj["message"])
		if msg == "" {
			msg = str(d.obj["Message"])
		}
		awsHeaders = true
	case in.header.Get("X-Amzn-Errortype") != "":
		code = awsShortCode(in.header.Get("X-Amzn-Errortype"))
		msg = str(d.obj["message"])
		if msg == "" {
			msg = str(d.obj["Message"])
		}
		awsHeaders = true
	case d.obj != nil:
		if e, ok := d.obj["Error"].(map[string]any); ok {
			code, msg = str(e["Code"]), str(e["Message"])
		}
	case d.xml:
		if m := reXMLCode.FindStringSubmatch(d.raw); m != nil {
			code = m[1]
		}
		if m := reXMLAWSMsg.FindStringSubmatch(d.raw); m != nil {
			msg = m[1]
		}
	}
	if code == "" {
		return verdict{}
	}
	sub, known := awsCodes[code]
	nt, knownNon := awsNonAuth[code]
	if !known && !knownNon && !awsHeaders {
		return verdict{}
	}
	v := verdict{provider: ProviderAWS, code: code, detail: msg, kind: kindKey}
	switch {
	case known:
		v.typ, v.sub = TypeAuthFailure, sub
	case knownNon:
		v.typ = nt
	}
	return v
}

// ---- GitHub REST: {"message":...,"documentation_url":...} ----

func isGitHub(in input, d *doc) bool {
	if in.hint == ProviderGitHub {
		return true
	}
	for k := range in.header {
		if strings.HasPrefix(strings.ToLower(k), "x-github") {
			return true
		}
	}
	if has(in.header.Get("Server"), "github.com") {
		return true
	}
	du := str(d.obj["documentation_url"])
	return strings.Contains(du, "github.com")
}

func detectGitHub(in input, d *doc) verdict {
	msg, isMsg := d.obj["message"].(string)
	if !isMsg || !isGitHub(in, d) {
		return verdict{}
	}
	v := verdict{provider: ProviderGitHub, detail: msg, kind: kindKey}
	status := in.status
	if status == 0 {
		status, _ = strconv.Atoi(str(d.obj["status"]))
	}
	switch status {
	case 401:
		v.typ, v.sub = TypeAuthFailure, SubtypeCredentialInvalid
		if has(msg, "requires authentication") {
			v.sub = SubtypeCredentialMissing
		}
	case 403, 429:
		switch {
		case in.header.Get("X-Ratelimit-Remaining") == "0" || in.header.Get("Retry-After") != "" || has(msg, "rate limit"):
			v.typ, v.sub = TypeAuthFailure, SubtypeRateLimitReached
		case has(msg, "SAML enforcement") || in.header.Get("X-Github-Sso") != "":
			v.typ, v.sub = TypeAuthFailure, SubtypePermissionDenied
			if sso := in.header.Get("X-Github-Sso"); sso != "" {
				v.detail = strings.TrimSpace(msg + " (" + sso + ")")
			}
		case has(msg, "Resource not accessible by"):
			v.typ, v.sub = TypeAuthFailure, SubtypeInsufficientScope
			if p := in.header.Get("X-Accepted-Github-Permissions"); p != "" {
				v.detail = msg + " (needs " + p + ")"
			}
		case status == 429:
			v.typ, v.sub = TypeAuthFailure, SubtypeRateLimitReached
		default:
			v.typ, v.sub = TypeAuthFailure, SubtypePermissionDenied
		}
	case 404:
		v.typ = TypeNotFound
		v.detail = msg + " (may be unauthorized: GitHub hides private resources)"
	case 422:
		v.typ = TypeInvalidRequest
	}
	return v
}

// ---- GitLab: {"message":"401 Unauthorized"} ----

var reGitLabMsg = regexp.MustCompile(`^([1-5]\d\d)\b`)

func detectGitLab(in input, d *doc) verdict {
	msg, ok := d.obj["message"].(string)
	gl := in.hint == ProviderGitLab || in.header.Get("X-Gitlab-Meta") != "" || in.header.Get("Gitlab-Lb") != "" ||
		has(in.header.Get("Www-Authenticate"), "Protected by OAuth 2.0")
	if !ok || (!gl && !(len(d.obj) == 1 && reGitLabMsg.MatchString(msg))) {
		return verdict{}
	}
	v := verdict{provider: ProviderGitLab, detail: msg, kind: kindKey}
	status := in.status
	if m := reGitLabMsg.FindStringSubmatch(msg); m != nil && status == 0 {
		status, _ = strconv.Atoi(m[1])
	}
	switch status {
	case 401:
		v.typ, v.sub, v.refine = TypeAuthFailure, SubtypeCredentialInvalid, true
	case 403:
		v.typ, v.sub = TypeAuthFailure, SubtypePermissionDenied
		if reScopeWeak.MatchString(msg) {
			v.sub = SubtypeInsufficientScope
		}
	}
	return v
}

// ---- npm registry ----

var reNPMNotice = regexp.MustCompile(`(?i)expired or revoked|token (?:has )?expired|revoked|log(?:ging)? in again`)

// npmAuthNotice reports npm's documented quirk: a 404 for a request whose token expired or was
// revoked, announced in an npm-notice header (or the npm CLI's "npm notice" line in text).
func npmAuthNotice(h hdr, body []byte) bool {
	if n := h.Get("Npm-Notice"); n != "" && reNPMNotice.MatchString(n) {
		return true
	}
	s := string(body)
	i := strings.Index(strings.ToLower(s), "npm notice")
	return i >= 0 && reNPMNotice.MatchString(s[i:])
}

func detectNPM(in input, d *doc) verdict {
	notice := in.header.Get("Npm-Notice")
	text := d.raw
	npm := in.hint == ProviderNPM || notice != "" || has(text, "npm notice") || has(text, "npm ERR!") || has(text, "npm error") ||
		has(text, "registry.npmjs.org")
	if !npm {
		return verdict{}
	}
	v := verdict{provider: ProviderNPM, kind: kindKey, detail: notice}
	if v.detail == "" {
		v.detail = str(d.obj["error"])
	}
	switch {
	case npmAuthNotice(in.header, in.body):
		v.typ, v.sub = TypeAuthFailure, SubtypeCredentialRevoked
		if v.detail == "" {
			v.detail = "Access token expired or revoked"
		}
	case in.status == 401 || has(text, "E401") || has(text, "Unable to authenticate"):
		v.typ, v.sub = TypeAuthFailure, SubtypeCredentialInvalid
	case reStateConflict.MatchString(text):
		// npm answers a republish of an existing version with 403 "You cannot publish over the
		// previously published versions": a conflict with the package's state, not the token.
		v.typ = TypeInvalidRequest
	case in.status == 403 || has(text, "E403"):
		v.typ, v.sub = TypeAuthFailure, SubtypePermissionDenied
	}
	return v
}

// hdr is the read side of http.Header (so a nil map works).
type hdr interface{ Get(string) string }

// ---- Client-SDK error text (tool text only) ----

var (
	// @slack/web-api platformErrorFromResult: "An API error occurred: invalid_auth".
	reSlackSDK = regexp.MustCompile(`\bAn API error occurred: ([a-z_]+)\b`)
	// aws-sdk-go-v2: "https response error StatusCode: 403, RequestID: X, [HostID: Y, ][api error ]Code: msg".
	reAWSGoV2 = regexp.MustCompile(`https response error StatusCode: \d{3}, RequestID: [^,]*, (?:HostID: [^,]*, )?(?:api error )?([A-Za-z][A-Za-z0-9]+):`)
	// aws-sdk-js v2/v3 ServiceException printed by Node ("ExpiredTokenException: ..."), AWS SDK for Java v1
	// ("(Service: ...; Status Code: 400; Error Code: ExpiredToken; ...)").
	reAWSName = regexp.MustCompile(`(?m)^(?:Error:\s*)?([A-Z][A-Za-z0-9]+):\s|\bError Code: ([A-Za-z0-9]+);`)
)

// detectSDKText reads the error codes client SDKs print in their exception text, which an MCP server
// passes on as tool text: Slack's web-api code and AWS error codes. Only codes in the known tables
// count, so a class name that happens to lead a line decides nothing.
func detectSDKText(in input, d *doc) verdict {
	if !in.fromText || d.json || d.xml || d.html {
		return verdict{}
	}
	if m := reSlackSDK.FindStringSubmatch(d.raw); m != nil {
		return slackCodeVerdict(verdict{provider: ProviderSlack, code: m[1], kind: kindOAuth}, m[1])
	}
	var code string
	if m := reAWSGoV2.FindStringSubmatch(d.raw); m != nil {
		code = m[1]
	} else {
		for _, m := range reAWSName.FindAllStringSubmatch(d.raw, 4) {
			c := m[1] + m[2]
			if _, ok := awsCodes[c]; ok {
				code = c
				break
			}
			if _, ok := awsNonAuth[c]; ok {
				code = c
				break
			}
		}
	}
	if code == "" {
		return verdict{}
	}
	v := verdict{provider: ProviderAWS, code: code, kind: kindKey}
	if sub, ok := awsCodes[code]; ok {
		v.typ, v.sub = TypeAuthFailure, sub
	} else if t, ok := awsNonAuth[code]; ok {
		v.typ = t
	} else {
		return verdict{}
	}
	return v
}
