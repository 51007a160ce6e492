package authmap

import (
	"strings"
	"testing"
)

// TestRedactCut: a known value split by the cut that ends a text is removed
// from the text's end, whatever its length; a text that ends in no part of
// one is only redacted.
func TestRedactCut(t *testing.T) {
	secret := strings.Repeat("correct horse battery staple ", 100)
	r := NewRedactor([]string{secret, "sk_short_0123456789"})
	for _, tc := range []struct{ in, want string }{
		{"config: " + secret + " again: " + secret[:2000], "config: " + Redacted + " again: " + Redacted},
		{"key sk_short_01", "key " + Redacted},
		{"key sk_short_0123456789 and more", "key " + Redacted + " and more"},
		{"nothing here, s", "nothing here, " + Redacted}, // "s" begins sk_short: cut too
		{"nothing here", "nothing here"},
	} {
		if got := r.RedactCut(tc.in); got != tc.want {
			t.Errorf("RedactCut(%.60q) = %.80q, want %.80q", tc.in, got, tc.want)
		}
	}
}
