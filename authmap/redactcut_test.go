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
		{"teddy sk_short_0", "teddy " + Redacted},
		{"teddy ask_short_0", "teddy ask_short_0"}, // inside a word
		{"key sk_short_0123456789 and more", "key " + Redacted + " and more"},
		{"nothing here, sk_shor", "nothing here, sk_shor"}, // too little of a value to cut
		{"nothing here", "nothing here"},
	} {
		if got := r.RedactCut(tc.in); got != tc.want {
			t.Errorf("RedactCut(%.60q) = %.80q, want %.80q", tc.in, got, tc.want)
		}
	}
}

// TestRedactElided: a piece of input a JSON decoder quotes cut short ("...")
// loses the start of a known value that ends it; the rest is redacted as
// Redact does, and ordinary ellipses are kept.
func TestRedactElided(t *testing.T) {
	r := NewRedactor([]string{"Bearer tangerine-Walrus-Secret-42"})
	for _, tc := range []struct{ in, want string }{
		{`json: cannot unmarshal "\"bad key Bearer tangerine-Walrus..." into Go struct field`, `json: cannot unmarshal "\"bad key ` + Redacted + `..." into Go struct field`},
		{"loading... done", "loading... done"},
		{"Refreshing the access Bearer... try again", "Refreshing the access Bearer... try again"},
		{"key Bearer tangerine-Walrus-Secret-42 ok...", "key " + Redacted + " ok..."},
	} {
		if got := r.RedactElided(tc.in); got != tc.want {
			t.Errorf("RedactElided(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}
