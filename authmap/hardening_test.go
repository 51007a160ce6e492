package authmap

import (
	"strings"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// TestClassifyStructured is the regression test for issue 6 item 1 in the classifier: text an
// upstream marked successful is a failure only on structured evidence (a provider's error body
// with a status or a provider error code), never on a phrase.
func TestClassifyStructured(t *testing.T) {
	t.Parallel()
	c := mustNew(t, nil)
	corpus := corpusByID(t)
	type want struct {
		Type    Type
		Subtype Subtype
	}
	failures := []struct {
		name string
		text string
		want want
	}{
		{"status and github body", "HTTP 401 Unauthorized\n" + `{"message":"Bad credentials","documentation_url":"https://docs.github.com/rest"}`, want{TypeAuthFailure, SubtypeCredentialInvalid}},
		{"leading status and message body", `401 {"message":"Bad credentials"}`, want{TypeAuthFailure, SubtypeCredentialInvalid}},
		{"bare github body with its status", `{"message":"Bad credentials","documentation_url":"https://docs.github.com/rest","status":"401"}`, want{TypeAuthFailure, SubtypeCredentialInvalid}},
		{"slack code without a status", `{"ok":false,"error":"invalid_auth"}`, want{TypeAuthFailure, SubtypeCredentialInvalid}},
		{"stripe body with its status", "upstream returned status 401: " + corpus["stripe-401-api-key-expired"].Body, want{TypeAuthFailure, SubtypeCredentialExpired}},
		{"aws xml code", corpus["aws-iam-query-expiredtoken-xml"].Body, want{TypeAuthFailure, SubtypeCredentialExpired}},
	}
	for _, tt := range failures {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			f, ok := c.ClassifyStructured(tt.text, "", Knowledge{Now: testNow})
			if !ok {
				t.Fatalf("ClassifyStructured(%q) = false, want a failure", tt.text)
			}
			if diff := cmp.Diff(tt.want, want{f.Type, f.Subtype}); diff != "" {
				t.Errorf("mismatch (-want +got):\n%s\nfailure: %+v", diff, f)
			}
		})
	}
	for _, text := range []string{
		"Title: HTTP 403 Forbidden on S3 upload",
		"Issue #401: Unauthorized error when the token rotates",
		"Authentication Failed: Bad credentials",
		"failed to list issues: GET https://api.github.com/repos/o/r/issues: 401 Bad credentials []",
		"You have exceeded a secondary rate limit. Please wait a few minutes before you try again.",
		`{"message":"Bad credentials"}`, // a phrase inside JSON: no status, no code
		`{"title":"HTTP 403 Forbidden on S3 upload","status":403,"number":12}`,
		"HTTP 403 Forbidden on S3 upload\n" + `{"id":1,"state":"open"}`,
		`[{"title":"Unauthorized","number":401}]`,
		"dial tcp: lookup api.github.com: no such host",
		"request timed out",
		`{"jsonrpc":"2.0","id":1,"error":{"code":-32603,"message":"Authentication Failed: Bad credentials"}}`,
	} {
		if f, ok := c.ClassifyStructured(text, "", Knowledge{Now: testNow}); ok {
			t.Errorf("ClassifyStructured(%q) = %+v, want no failure (no structured evidence)", text, f)
		}
	}
}

// TestConnectionFailureText is the regression test for issue 6 item 3 in the classifier: a
// network outage between an MCP server and its provider, reported in the server's error text,
// is upstream_unavailable (or timeout) and retryable, whichever client library wrote it.
func TestConnectionFailureText(t *testing.T) {
	t.Parallel()
	c := mustNew(t, nil)
	tests := []struct {
		text string
		want Type
	}{
		{`failed to list issues: Get "https://api.github.com/repos/o/r/issues": dial tcp: lookup api.github.com: no such host`, TypeUpstreamUnavailable},
		{`Post "https://api.openai.com/v1/x": dial tcp: lookup api.openai.com on 127.0.0.53:53: server misbehaving`, TypeUpstreamUnavailable},
		{"request to https://api.github.com/user failed, reason: getaddrinfo ENOTFOUND api.github.com", TypeUpstreamUnavailable},
		{`Get "https://api.github.com": read tcp 10.0.0.1:5555->140.82.112.6:443: read: connection reset by peer`, TypeUpstreamUnavailable},
		{"curl: (56) Recv failure: Connection reset by peer", TypeUpstreamUnavailable},
		{"requests.exceptions.ConnectionError: ('Connection aborted.', ConnectionResetError(104, 'Connection reset by peer'))", TypeUpstreamUnavailable},
		{"dial tcp 1.2.3.4:443: connect: no route to host", TypeUpstreamUnavailable},
		{"connect ENETUNREACH 1.2.3.4:443", TypeUpstreamUnavailable},
		{"dial tcp 1.2.3.4:443: connect: network is unreachable", TypeUpstreamUnavailable},
		{"error sending request for url (https://api.x.com/): error trying to connect: dns error: failed to lookup address information: Name or service not known", TypeUpstreamUnavailable},
		{"HTTPSConnectionPool(host='api.github.com', port=443): Max retries exceeded with url: /user (Caused by NameResolutionError(\"Failed to resolve 'api.github.com' ([Errno -3] Temporary failure in name resolution)\"))", TypeUpstreamUnavailable},
		{"HTTPSConnectionPool(host='x', port=443): Max retries exceeded (Caused by NewConnectionError('Failed to establish a new connection: [Errno 111]'))", TypeUpstreamUnavailable},
		{"getaddrinfo ENOTFOUND: nodename nor servname provided, or not known", TypeUpstreamUnavailable},
		{"connect EHOSTUNREACH 10.0.0.7:443", TypeUpstreamUnavailable},
		{"read ECONNABORTED", TypeUpstreamUnavailable},
		{`Get "https://x": net/http: TLS handshake timeout`, TypeTimeout},
		{"dial tcp 1.2.3.4:443: i/o timeout", TypeTimeout},
		{`Get "https://x": context deadline exceeded (Client.Timeout exceeded while awaiting headers)`, TypeTimeout},
	}
	for _, tt := range tests {
		f, ok := c.ClassifyText(tt.text, "", Knowledge{})
		if !ok || f.Type != tt.want || !f.Retryable {
			t.Errorf("ClassifyText(%q) = %+v, %v; want %s, retryable", tt.text, f, ok, tt.want)
		}
	}
	// A message that only says a connection was reset is the server's own failure.
	if f, ok := c.ClassifyText("database connection reset by peer", "", Knowledge{}); ok {
		t.Errorf("ClassifyText(database connection reset by peer) = %+v, want not recognised", f)
	}
}

// TestRedactor is the regression test for issue 6 item 13 in authmap: one live list of secrets,
// values of 4 characters or more, raw JSON forms included, and values added later redacted from
// then on.
func TestRedactor(t *testing.T) {
	t.Parallel()
	r := NewRedactor([]string{"abc", "k3y9", `pa"ss<word>`, "longsecret-0123456789"})
	tests := []struct{ in, want string }{
		{"abc stays: too short", "abc stays: too short"},
		{"key k3y9 here", "key [REDACTED] here"},
		{`{"v":"pa\"ss\u003cword\u003e"}`, `{"v":"[REDACTED]"}`},
		{`{"v":"pa\"ss<word>"}`, `{"v":"[REDACTED]"}`},
		{"x longsecret-0123456789 y", "x [REDACTED] y"},
	}
	for _, tt := range tests {
		if got := r.RedactKnown(tt.in); got != tt.want {
			t.Errorf("RedactKnown(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
	// A value with characters that URLs and some JSON encoders escape is
	// also known in those forms (found trying the gateway: an upstream's
	// result and its 401 body quoted a token percent-encoded, unredacted).
	enc := NewRedactor([]string{"tok/en+Secret=ABC def123456789"})
	for _, in := range []string{
		"tok%2Fen%2BSecret%3DABC+def123456789",   // a query value
		"tok%2Fen%2BSecret%3DABC%20def123456789", // encodeURIComponent
		"tok%2fen%2bSecret%3dABC%20def123456789", // lower-case hex
		"tok%2Fen+Secret=ABC%20def123456789",     // a path segment
		"tok/en%2BSecret%3DABC%20def123456789",   // Python's quote (keeps "/")
		"tok/en+Secret=ABC%20def123456789",       // encodeURI
		"tok%2fen%2BSecret%3dABC%20def123456789", // hex cases mixed
		`tok\/en+Secret=ABC def123456789`,        // "/" escaped in JSON
	} {
		if got := enc.RedactKnown("sent " + in + " back"); got != "sent [REDACTED] back" {
			t.Errorf("RedactKnown(%q) = %q, want it redacted", in, got)
		}
		if got := enc.Redact("sent " + in + " back"); got != "sent [REDACTED] back" {
			t.Errorf("Redact(%q) = %q, want it redacted", in, got)
		}
		if strings.Contains(in, "%") && !enc.HoldsEncoded([]byte(in)) {
			t.Errorf("HoldsEncoded(%q) = false", in)
		}
	}
	// A space form-encoded, and nothing else escaped: no "%" at all.
	words := NewRedactor([]string{"correct horse battery staple"})
	if got := words.RedactKnown("pw=correct+horse+battery+staple"); got != "pw=[REDACTED]" || !words.HoldsEncoded([]byte("correct+horse+battery+staple")) {
		t.Errorf("a space as +: RedactKnown = %q", got)
	}
	if enc.HoldsEncoded([]byte("tok%2Fen%2BSecret%3DABC%20other")) {
		t.Error("HoldsEncoded matched another value")
	}
	// The values are kept as given, each once; a value of letters and
	// digits is searched for in one form only, and has no pattern.
	plain := NewRedactor([]string{"plainToken0123456789", "plainToken0123456789"})
	if n := len(plain.Secrets()); n != 1 || len(plain.Values()) != 1 || plain.HoldsEncoded([]byte("plainToken0123456789%")) {
		t.Errorf("a plain token: %d forms, values %v; want 1 form, 1 value, no pattern", n, plain.Values())
	}
	if v := enc.Values(); len(v) != 1 || v[0] != "tok/en+Secret=ABC def123456789" {
		t.Errorf("Values() = %q; want the value as given", v)
	}
	// RedactKnown leaves token shapes to the surfaces that want them gone.
	if in := "token ghp_0123456789abcdefghij0123"; r.RedactKnown(in) != in || r.Redact(in) == in {
		t.Errorf("RedactKnown(%q) = %q, Redact = %q; want only Redact to remove the token shape", in, r.RedactKnown(in), r.Redact(in))
	}
	// Live: values added while others redact.
	var wg sync.WaitGroup
	for i := range 4 {
		wg.Go(func() {
			r.Add("rotated-value-" + strings.Repeat("x", i))
			_ = r.Redact("rotated-value-x")
		})
	}
	wg.Wait()
	if got := r.Redact("new rotated-value-xxx"); got != "new [REDACTED]" {
		t.Errorf("after Add: Redact = %q, want the rotated value redacted whole", got)
	}
}
