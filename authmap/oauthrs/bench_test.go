package oauthrs

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
)

// BenchmarkVerify measures Verify with the issuer's key cached (no network):
//
//	token_cached     the agent's token seen before: SHA-256, a map lookup, exp and scopes
//	RS256, ES256     a token never seen (cache off): parse, signature, claims
func BenchmarkVerify(b *testing.B) {
	ec, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		b.Fatal(err)
	}
	rs := signingKey{kid: "rs", alg: jose.RS256, priv: rsaKey(b, 0)}
	es := signingKey{kid: "es", alg: jose.ES256, priv: ec}
	as := newTestAS(b, rs, es)
	ctx := context.Background()
	for _, bc := range []struct {
		name  string
		key   signingKey
		cache int
	}{
		{"token_cached", rs, 0},
		{"RS256", rs, -1},
		{"ES256", es, -1},
	} {
		b.Run(bc.name, func(b *testing.B) {
			v, err := New(Config{Issuer: as.issuer, Audience: resource, RequiredScopes: []string{"mcp:tools"}}, &Options{CacheSize: bc.cache})
			if err != nil {
				b.Fatal(err)
			}
			if err := v.Load(ctx); err != nil {
				b.Fatal(err)
			}
			tok := sign(b, bc.key, as.claims(time.Now()))
			b.ReportAllocs()
			for b.Loop() {
				if _, err := v.Verify(ctx, tok); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
