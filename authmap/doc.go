// Package authmap classifies upstream failures and runs credentials' lifecycle. It turns what an upstream API or MCP server
// sent back (an HTTP status, headers and body, or the text of a JSON-RPC error message or an
// isError tool result) into one typed [Failure]: auth_failure with a subtype
// (credential_missing, credential_invalid, credential_expired, credential_revoked,
// insufficient_scope, permission_denied, rate_limit_reached, quota_exhausted) or a non-auth
// control (upstream_error, upstream_unavailable, timeout, invalid_request, not_found).
//
//	HTTP response ──► Classify ─┐                       ┌─► Failure{type, subtype,
//	JSON-RPC error text ─┐      │   ops rules           │     retryable, recovery,
//	isError text ────────┴► ClassifyText ──► provider body codes ──► ...     retry_after_seconds,
//	                                WWW-Authenticate     │     provider, provider_code,
//	                                rate-limit signals   │     detail (redacted)}
//	                                message patterns     │
//	                                status fallback ─────┘   + Knowledge (expiry, renewal)
//
// Rules are tried in this order, the first decision wins:
//
//  1. Ops rules ([Options].Rules, config key classify.rules).
//  2. Provider-specific body codes, whatever the status: Slack ok:false on 200, GitHub GraphQL
//     errors, RFC 6749 error / Entra AADSTS codes, Vault errors, Notion and Atlassian codes,
//     Google ErrorInfo reasons, Graph error and innerError codes, OpenAI/Anthropic/Stripe
//     error.type and error.code, AWS __type / x-amzn-ErrorType / <Code>, GitHub and GitLab
//     messages, npm notices.
//  3. WWW-Authenticate (RFC 6750, RFC 9728): error=invalid_token refined by error_description,
//     insufficient_scope with its scope, no error parameter = credential_missing.
//  4. Rate-limit signals, only on 403 and 429 (never on 401: GitHub sends
//     x-ratelimit-remaining: 0 with Bad credentials).
//  5. Provider-distinctive message patterns (for bodies and tool text no rule understood).
//  6. The status: 401 invalid, 403 permission denied, 429 rate limit, 5xx, 404 and 4xx controls.
//
// A 5xx, 404 or 422 is never an auth_failure (npm's documented 404 for an expired or revoked
// token is the one exception); ops rules may override this.
//
// Retryable means the agent may retry the same call later without a human acting: a rate limit
// is retryable (retry_after_seconds when the upstream says), a credential_expired only when the
// gateway can renew the credential itself ([Knowledge].Renewable, recovery refresh), transient
// 5xx and timeouts are. Missing, invalid, revoked, scope, permission and quota failures are not.
// Where the wire cannot tell expired from revoked (GitHub "Bad credentials"), [Knowledge] does:
// a past ExpiresAt or JWT exp means expired, a rejected refresh means revoked.
//
// Text an upstream reported as a success goes through [Classifier.ClassifyStructured], which
// finds a failure only in a provider's error document (a JSON or XML error body with a status or a
// provider error code), never in a phrase: "Title: HTTP 403 Forbidden on S3 upload" is data.
//
// Detail carries the provider's message with secrets removed by [Redact]. A [Redactor] holds a
// live list of secrets (values added while it is in use are redacted from then on) for callers
// that redact many surfaces.
//
// # Credentials
//
// The package also owns each credential's life: where its value comes from, whether it works,
// when it expires, how it is renewed and rotated without a restart.
//
//	sources (Source.Fetch → Token{Value, ExpiresAt, Version, Renewable, RotationAt})
//	  env, value, file (+ Watch: fsnotify on the directory), exec          this package
//	  vault (KV v2), awssm (Secrets Manager), oauth2src (x/oauth2)        subpackages, via SourceOptions.Openers
//	        │
//	        ▼
//	Credential ── Load (pre-flight: fetch, expiry, probe)                 Value()     atomic, lock-free
//	   │          Run  (expiry watch, refresh_before, backoff, polling)   Knowledge() for Classify
//	   │          Renew / RenewAfterRejection (single-flight, 1/min)      Report()    live auth failures
//	   │          status: healthy expiring expired revoked invalid missing rate_limited unknown
//	   ▼
//	Set ── Apply(lifecycle, credentials) keeps unchanged Credentials across reloads
//	   │   Load, Problems(fail_on), Reload / ReloadAll (admin, webhook, SIGHUP), Run
//	   ▼
//	events: func(Event){time, credential, kind, trigger, status, detail (redacted)}
//
// A credential's expiry is, in order: the config's expires_at, the source's (OAuth expires_in,
// exec or file JSON, Vault custom metadata), a JWT's exp claim, or an expiry a provider header
// announced ([Credential.NoteExpiry]). A credential the gateway cannot renew is expiring under
// lifecycle.expiry_warning; a renewable one is renewed refresh_before its expiry (half way
// through a shorter lifetime) and is expiring only while that keeps failing. A new value is
// probed, when a probe is configured, before it replaces the old one.
//
// The package imports neither the gateway nor the MCP SDK, and no dependency's type appears in
// its API.
package authmap
