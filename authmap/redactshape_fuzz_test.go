package authmap

import "testing"

// FuzzShapeNeedsExact: redactSorted (shapes skipped when their text is
// absent) equals running every shape, on any input.
func FuzzShapeNeedsExact(f *testing.F) {
	for _, s := range []string{
		"to\u212aen abcdefghij0123456789", "ba\u017fic abcdefghij0123456789", "\u212aey=value0123",
		"Bearer abcdef0123456789", "api key provided: sk_test_x.", "API KEY PROVIDED: abc", "https://u:p@h",
		`"Password":"x"`, "Cookie: a=b", "eyJa.eyJb.c", "s.0123456789abcdefghijklmn", "\xffBearer 0123456789abcd",
		"gh\u017f_0123456789abcdef", "AKIAABCDEFGHIJKLMNOP", "[REDACTED]Token 0123456789abcd",
	} {
		f.Add(s)
	}
	known := []string{"super-secret-value-0123", "Bearer", "oken"}
	f.Fuzz(func(t *testing.T, s string) {
		if got, want := redactSorted(s, known), redactUnfiltered(s, known); got != want {
			t.Fatalf("%q\nfiltered:   %q\nunfiltered: %q", s, got, want)
		}
		if got, want := redactSorted(s, nil), redactUnfiltered(s, nil); got != want {
			t.Fatalf("%q (no known)\nfiltered:   %q\nunfiltered: %q", s, got, want)
		}
	})
}
