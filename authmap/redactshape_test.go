package authmap

import (
	"math/rand/v2"
	"strings"
	"testing"
)

// redactUnfiltered is redactSorted without the shapeNeeds check: every
// shape runs.
func redactUnfiltered(s string, known []string) string {
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

// TestShapeNeedsExact: skipping the shapes whose text is absent redacts
// exactly as running them all, on texts made of every shape's tokens, their
// near misses, case variants and non-ASCII letters (mutations at random,
// seeded, so a failure repeats).
func TestShapeNeedsExact(t *testing.T) {
	t.Parallel()
	if len(shapeNeeds) != len(tokenShapes) {
		t.Fatalf("shapeNeeds has %d entries for %d tokenShapes", len(shapeNeeds), len(tokenShapes))
	}
	parts := []string{
		"github_pat_11ABCDEFG0123456789_abcdefghijklmnop", "ghp_0123456789abcdefABCDEF", "gho_0123456789abcdefXYZ",
		"sk-ant-api03-abcdefghij0123", "sk-proj-0123456789abcdefghij", "sk_live_0123456789ab", "rk_test_abcdefgh1234",
		"xoxb-0123456789-abcdef", "AKIAABCDEFGHIJKLMNOP", "ASIA0123456789ABCDEF", "glpat-0123456789abcdefghij",
		"npm_0123456789abcdefghijABCD", "hvs.0123456789abcdefghijklmn", "s.0123456789abcdefghijklmn",
		"eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.sig-nature_0", "Bearer abcdef0123456789", "BASIC dXNlcjpwYXNzd29yZDEy",
		"token abcdefghij0123456789", "?api_key=0123456789secret", "&TOKEN=abc123", `"access_token": "tok-0123456789"`,
		`"Password":"hunter2hunter2"`, "Authorization: Bearer 0123456789abcdef", "X-API-Key: k-0123456789",
		"Cookie: session=0123456789abcdef", "Expired API Key provided: sk_test_****0000.", "https://user:pa55word@example.com/x",
		"bearer", "basic", "Token", "to\u212aen abcdefghij0123456789", "ba\u017fic abcdefghij0123456789", "\u212aey=value0123",
		"gh", "sk-", "k_live_", "=", ":", "\"", "://", "@", " ", "\n", "é", "[REDACTED]", "plain words here", "0123456789",
	}
	known := []string{"super-secret-value-0123", "another-known-secret"}
	r := rand.New(rand.NewPCG(12, 34))
	for i := range 5000 {
		var b strings.Builder
		for range 1 + r.IntN(8) {
			p := parts[r.IntN(len(parts))]
			switch r.IntN(4) {
			case 0:
				p = strings.ToUpper(p)
			case 1:
				p = strings.ToLower(p)
			}
			b.WriteString(p)
			if r.IntN(3) == 0 {
				b.WriteString(known[r.IntN(len(known))])
			}
			b.WriteString([]string{"", " ", "\n", ",", "\"", "="}[r.IntN(6)])
		}
		s := b.String()
		if got, want := redactSorted(s, known), redactUnfiltered(s, known); got != want {
			t.Fatalf("case %d: %q\nfiltered:   %q\nunfiltered: %q", i, s, got, want)
		}
	}
}

// BenchmarkRedactLarge: a 1 MiB error text holding no token (the common
// case, and a hostile upstream's).
func BenchmarkRedactLarge(b *testing.B) {
	s := strings.Repeat("error: something failed at step 12; retrying later. ", 1<<20/52)
	b.SetBytes(int64(len(s)))
	for b.Loop() {
		_ = redactSorted(s, nil)
	}
}

// BenchmarkRedactLargeUnfiltered is BenchmarkRedactLarge with every shape run.
func BenchmarkRedactLargeUnfiltered(b *testing.B) {
	s := strings.Repeat("error: something failed at step 12; retrying later. ", 1<<20/52)
	b.SetBytes(int64(len(s)))
	for b.Loop() {
		_ = redactUnfiltered(s, nil)
	}
}
