package oauthrs

import (
	"errors"
	"fmt"
	"net/http"
	"strings"
)

// Why a token was refused. Every error Verify returns is a *TokenError that
// unwraps to exactly one of these, so a caller tells them apart with
// errors.Is. None of them carries the token or any part of its signature.
var (
	// ErrMalformed: not a compact JWS JWT, undecodable header or claims, a
	// missing exp or iss claim, a typ that is not an access token's, or an
	// unknown crit header.
	ErrMalformed = errors.New("malformed token")
	// ErrUnsigned: alg "none" (or no alg), or an empty signature. Never
	// accepted.
	ErrUnsigned = errors.New("unsigned token")
	// ErrAlgorithm: a signing algorithm outside the asymmetric ones
	// (RS*, PS*, ES*, EdDSA); HS256 and the other HMACs are refused, so a
	// token "signed" with the issuer's public key as an HMAC secret is too.
	ErrAlgorithm = errors.New("signing algorithm not allowed")
	// ErrUnknownKey: no key of the issuer's JWKS has the token's kid (or
	// fits its alg), even after fetching the JWKS anew.
	ErrUnknownKey = errors.New("signing key unknown")
	// ErrBadSignature: the signature does not verify with the issuer's key.
	ErrBadSignature = errors.New("bad signature")
	// ErrWrongIssuer: iss is not the configured issuer.
	ErrWrongIssuer = errors.New("wrong issuer")
	// ErrWrongAudience: aud does not name the configured audience (the
	// gateway's resource URL).
	ErrWrongAudience = errors.New("wrong audience")
	// ErrExpired: exp (plus the leeway) is past.
	ErrExpired = errors.New("token expired")
	// ErrNotYetValid: nbf or iat (less the leeway) is in the future.
	ErrNotYetValid = errors.New("token not yet valid")
	// ErrTokenBinding: the token is sender-constrained (a cnf claim: DPoP or
	// mTLS-bound), which this resource server cannot check; accepting it as
	// a plain bearer token would void the binding.
	ErrTokenBinding = errors.New("sender-constrained token not supported")
	// ErrInsufficientScope: the token is valid but lacks a required scope.
	// Verify returns the token's Claims with it, so the caller can say who
	// was refused; TokenError.Scopes lists the scopes required.
	ErrInsufficientScope = errors.New("insufficient scope")
	// ErrKeysUnavailable: the issuer's JWKS (or its metadata) could not be
	// fetched and no keys are cached: the token could not be checked at all.
	ErrKeysUnavailable = errors.New("issuer keys unavailable")
)

// reasons maps each sentinel to its short code, for logs and audit lines.
var reasons = map[error]string{
	ErrMalformed:         "malformed",
	ErrUnsigned:          "unsigned",
	ErrAlgorithm:         "algorithm",
	ErrUnknownKey:        "unknown_key",
	ErrBadSignature:      "bad_signature",
	ErrWrongIssuer:       "wrong_issuer",
	ErrWrongAudience:     "wrong_audience",
	ErrExpired:           "expired",
	ErrNotYetValid:       "not_yet_valid",
	ErrTokenBinding:      "token_binding",
	ErrInsufficientScope: "insufficient_scope",
	ErrKeysUnavailable:   "keys_unavailable",
}

// TokenError is why Verify refused a token.
type TokenError struct {
	// Reason is one of the Err sentinels above.
	Reason error
	// Detail says more (which claim, which values), for logs. It never holds
	// the token; values that came from the token are quoted and cut short.
	Detail string
	// Scopes are the scopes required, with ErrInsufficientScope.
	Scopes []string
}

func (e *TokenError) Error() string {
	if e.Detail == "" {
		return "oauth: " + e.Reason.Error()
	}
	return "oauth: " + e.Reason.Error() + ": " + e.Detail
}

func (e *TokenError) Unwrap() error { return e.Reason }

// Code is the reason's short code: "expired", "wrong_audience", ...
func (e *TokenError) Code() string { return reasons[e.Reason] }

// Reason returns the short code of err's reason ("expired", "bad_signature",
// ...), or "" when err is not a Verify refusal.
func Reason(err error) string {
	var te *TokenError
	if errors.As(err, &te) {
		return te.Code()
	}
	return ""
}

func refuse(reason error, format string, args ...any) *TokenError {
	return &TokenError{Reason: reason, Detail: fmt.Sprintf(format, args...)}
}

// shown quotes a value that came from a token for an error message, cut to
// 80 bytes: a token's claims are not secret, but they are the caller's text.
func shown(s string) string {
	if len(s) > 80 {
		s = s[:80] + "..."
	}
	return fmt.Sprintf("%q", s)
}

// Challenge answers a request refused because of err (an error from Verify,
// or nil when the request carried no bearer token at all): the HTTP status
// and the WWW-Authenticate value (RFC 6750 §3, RFC 9728 §5.1).
//
//	no token              401  Bearer resource_metadata="…", scope="…"
//	a refused token       401  Bearer error="invalid_token", error_description="…", resource_metadata="…"
//	ErrInsufficientScope  403  Bearer error="insufficient_scope", scope="…", resource_metadata="…"
//	ErrKeysUnavailable    503  (no challenge: the token may be fine; retry later)
//
// The description is fixed text per reason, never a value from the token.
// scope lists the configured required scopes, so a client knows what to ask
// its authorization server for.
func (v *Verifier) Challenge(err error) (status int, wwwAuthenticate string) {
	meta := fmt.Sprintf("resource_metadata=%q", v.metadataURL)
	scope := ""
	if len(v.cfg.RequiredScopes) > 0 {
		scope = fmt.Sprintf("scope=%q", strings.Join(v.cfg.RequiredScopes, " "))
	}
	join := func(params ...string) string {
		var out []string
		for _, p := range params {
			if p != "" {
				out = append(out, p)
			}
		}
		return "Bearer " + strings.Join(out, ", ")
	}
	switch {
	case err == nil:
		return http.StatusUnauthorized, join(meta, scope)
	case errors.Is(err, ErrKeysUnavailable):
		return http.StatusServiceUnavailable, ""
	case errors.Is(err, ErrInsufficientScope):
		return http.StatusForbidden, join(`error="insufficient_scope"`, scope, meta)
	}
	desc := "the access token is invalid"
	var te *TokenError
	if errors.As(err, &te) {
		desc = "the access token is refused: " + te.Reason.Error()
	}
	return http.StatusUnauthorized, join(`error="invalid_token"`, fmt.Sprintf("error_description=%q", desc), meta)
}
