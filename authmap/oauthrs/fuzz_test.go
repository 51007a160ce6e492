package oauthrs

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"
)

// FuzzVerify: any string as a token gets an answer, never a panic, and
// anything but the one valid token is refused with a *TokenError.
func FuzzVerify(f *testing.F) {
	k := rsaSigner(f, 0, "k1")
	as := newTestAS(f, k)
	v, err := New(Config{Issuer: as.issuer, Audience: resource}, &Options{RefetchInterval: time.Hour})
	if err != nil {
		f.Fatal(err)
	}
	ctx := context.Background()
	if err := v.Load(ctx); err != nil {
		f.Fatal(err)
	}
	valid := sign(f, k, as.claims(time.Now()))
	f.Add(valid)
	f.Add(valid[:len(valid)-3])
	f.Add(strings.Replace(valid, ".", "..", 1))
	f.Add("eyJhbGciOiJub25lIn0.e30.")
	f.Add("eyJhbGciOiJSUzI1NiIsImtpZCI6ImsxIn0.eyJpc3MiOjF9.AAAA")
	f.Add("a.b.c")
	f.Add("")
	f.Fuzz(func(t *testing.T, token string) {
		_, err := v.Verify(ctx, token)
		if token == valid {
			if err != nil {
				t.Fatalf("the valid token: %v", err)
			}
			return
		}
		var te *TokenError
		if err != nil && !errors.As(err, &te) {
			t.Fatalf("error %v (%T) is not a *TokenError", err, err)
		}
	})
}
