package oauthrs

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/go-jose/go-jose/v4"
)

// maxDocBytes bounds a metadata or JWKS document; maxKeys the keys kept
// from one JWKS.
const (
	maxDocBytes = 1 << 20
	maxKeys     = 64
)

// keySet is one fetched JWKS: its usable public signing keys.
type keySet struct {
	keys    []jose.JSONWebKey
	fetched time.Time
	gen     uint64 // bumped whenever the keys differ from the set before
}

// keyGen is the generation of the cached key set (0 before the first).
func (v *Verifier) keyGen() uint64 {
	if ks := v.keys.Load(); ks != nil {
		return ks.gen
	}
	return 0
}

// maxTried bounds the keys one token's signature is checked against: a
// token without a kid is tried with each key that fits its alg, and a forged
// one must not cost a signature check per key of a large JWKS.
const maxTried = 4

// find returns the keys that may have signed a token with kid and alg: the
// one with that kid (a JWKS may hold a kid once per algorithm), or, for a
// token without a kid, the first maxTried keys that fit alg.
func (ks *keySet) find(kid, alg string) []jose.JSONWebKey {
	if ks == nil {
		return nil
	}
	var out []jose.JSONWebKey
	for _, k := range ks.keys {
		if (kid == "" || k.KeyID == kid) && fits(k, alg) {
			out = append(out, k)
			if len(out) == maxTried {
				break
			}
		}
	}
	return out
}

// fits reports whether key k can verify alg: the key's own alg, when it
// names one, must be alg, and its type must be alg's.
func fits(k jose.JSONWebKey, alg string) bool {
	if k.Algorithm != "" && k.Algorithm != alg {
		return false
	}
	switch key := k.Key.(type) {
	case *rsa.PublicKey:
		return strings.HasPrefix(alg, "RS") || strings.HasPrefix(alg, "PS")
	case *ecdsa.PublicKey:
		switch alg {
		case "ES256":
			return key.Curve == elliptic.P256()
		case "ES384":
			return key.Curve == elliptic.P384()
		case "ES512":
			return key.Curve == elliptic.P521()
		}
	case ed25519.PublicKey:
		return alg == "EdDSA"
	}
	return false
}

// keysFor returns the cached keys for kid and alg, fetching the JWKS when
// there are none (no keys yet, or an unknown kid: at most once per
// RefetchInterval) or when the cached keys are older than MaxKeyAge.
func (v *Verifier) keysFor(ctx context.Context, kid, alg string) ([]jose.JSONWebKey, error) {
	ks := v.keys.Load()
	if ks != nil && v.now().Sub(ks.fetched) >= v.maxKeyAge {
		// Stale: one caller fetches while the others go on with the keys
		// they have; a failed fetch keeps them.
		select {
		case v.fetching <- struct{}{}:
			if v.keys.Load() == ks && v.now().Sub(v.lastAttempt) >= v.refetch {
				_, _ = v.fetchLocked(ctx, "max_age")
			}
			<-v.fetching
			ks = v.keys.Load()
		default:
		}
	}
	if keys := ks.find(kid, alg); len(keys) > 0 {
		return keys, nil
	}
	// Unknown kid (or no keys yet): fetch, unless another caller just did.
	select {
	case v.fetching <- struct{}{}:
	case <-ctx.Done():
		return nil, refuse(ErrKeysUnavailable, "waiting for the JWKS: %v", ctx.Err())
	}
	defer func() { <-v.fetching }()
	if cur := v.keys.Load(); cur != ks {
		if keys := cur.find(kid, alg); len(keys) > 0 {
			return keys, nil
		}
	}
	// The first fetch a token triggers is immediate (a key rotated just
	// after start-up is picked up at once); the next waits RefetchInterval.
	var fetchErr error
	if !v.triggered || v.now().Sub(v.lastTriggered) >= v.refetch {
		why := "unknown_kid"
		if v.keys.Load() == nil {
			why = "load"
		}
		v.triggered, v.lastTriggered = true, v.now()
		_, fetchErr = v.fetchLocked(ctx, why)
	}
	cur := v.keys.Load()
	if keys := cur.find(kid, alg); len(keys) > 0 {
		return keys, nil
	}
	if cur == nil {
		if fetchErr == nil {
			fetchErr = errors.New("not fetched yet; retried at most every " + v.refetch.String())
		}
		return nil, refuse(ErrKeysUnavailable, "%v", fetchErr)
	}
	return nil, refuse(ErrUnknownKey, "no %s key with kid %s in the issuer's JWKS", shown(alg), shown(kid))
}

// Load fetches the issuer's keys now (discovering the JWKS URL first when
// it is not configured). The gateway calls it at start-up so the first
// agent does not wait; Verify fetches on its own when it must.
func (v *Verifier) Load(ctx context.Context) error {
	select {
	case v.fetching <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	}
	defer func() { <-v.fetching }()
	_, err := v.fetchLocked(ctx, "load")
	return err
}

// KeyIDs lists the kids of the cached keys, and when they were fetched.
func (v *Verifier) KeyIDs() ([]string, time.Time) {
	ks := v.keys.Load()
	if ks == nil {
		return nil, time.Time{}
	}
	return kids(ks.keys), ks.fetched
}

func kids(keys []jose.JSONWebKey) []string {
	out := make([]string, 0, len(keys))
	for _, k := range keys {
		out = append(out, k.KeyID)
	}
	return out
}

// fetchLocked fetches the JWKS and caches its keys; the caller holds
// v.fetching. A failure keeps the keys cached before.
func (v *Verifier) fetchLocked(ctx context.Context, why string) (*keySet, error) {
	v.lastAttempt = v.now()
	ev := Fetch{Why: why}
	ks, err := v.fetch(ctx, &ev)
	if err != nil {
		ev.Err = err
	} else {
		ev.KeyIDs = kids(ks.keys)
	}
	if v.onFetch != nil {
		v.onFetch(ev)
	}
	return ks, err
}

func (v *Verifier) fetch(ctx context.Context, ev *Fetch) (*keySet, error) {
	if v.jwksURL == "" {
		u, err := v.discover(ctx)
		if err != nil {
			return nil, err
		}
		v.jwksURL = u
	}
	ev.URL = v.jwksURL
	body, err := v.get(ctx, v.jwksURL)
	if err != nil {
		return nil, fmt.Errorf("JWKS %s: %w", v.jwksURL, err)
	}
	keys, err := parseJWKS(body)
	if err != nil {
		return nil, fmt.Errorf("JWKS %s: %w", v.jwksURL, err)
	}
	old := v.keys.Load()
	ks := &keySet{keys: keys, fetched: v.now(), gen: 1}
	if old != nil {
		ks.gen = old.gen
		if !sameKeys(old.keys, keys) {
			ks.gen++
			ev.Changed = true
		}
	} else {
		ev.Changed = true
	}
	v.keys.Store(ks)
	return ks, nil
}

// parseJWKS returns the usable public signing keys of a JWKS document:
// asymmetric keys not marked for encryption only. Keys it cannot use
// (symmetric, private, unknown types) are skipped, not fatal: a JWKS may
// carry keys for other purposes.
func parseJWKS(body []byte) ([]jose.JSONWebKey, error) {
	var doc struct {
		Keys []json.RawMessage `json:"keys"`
	}
	if err := json.Unmarshal(body, &doc); err != nil {
		return nil, fmt.Errorf("not a JWKS document: %v", err)
	}
	var keys []jose.JSONWebKey
	for _, raw := range doc.Keys {
		var k jose.JSONWebKey
		if k.UnmarshalJSON(raw) != nil || !k.Valid() || !k.IsPublic() || (k.Use != "" && k.Use != "sig") {
			continue
		}
		switch k.Key.(type) {
		case *rsa.PublicKey, *ecdsa.PublicKey, ed25519.PublicKey:
		default:
			continue
		}
		keys = append(keys, k)
		if len(keys) == maxKeys {
			break
		}
	}
	if len(keys) == 0 {
		return nil, fmt.Errorf("no usable signing key among %d keys (want RSA, EC or Ed25519 public keys with use sig)", len(doc.Keys))
	}
	return keys, nil
}

// sameKeys reports whether two key sets hold the same keys (kid, alg and
// key material), in any order.
func sameKeys(a, b []jose.JSONWebKey) bool {
	if len(a) != len(b) {
		return false
	}
	ids := func(keys []jose.JSONWebKey) []string {
		var out []string
		for _, k := range keys {
			tp, _ := k.Thumbprint(crypto.SHA256)
			out = append(out, k.KeyID+"|"+k.Algorithm+"|"+string(tp))
		}
		slices.Sort(out)
		return out
	}
	return slices.Equal(ids(a), ids(b))
}

// discover reads the jwks_uri of the issuer's metadata: RFC 8414 first,
// then OpenID Connect Discovery (with the path inserted, then appended, for
// an issuer with a path). The metadata's issuer must be the configured one
// (RFC 8414 §3.3), or the metadata is someone else's.
func (v *Verifier) discover(ctx context.Context) (string, error) {
	var tried []string
	for _, u := range metadataURLs(v.cfg.Issuer) {
		body, err := v.get(ctx, u)
		var nf *notFound
		if errors.As(err, &nf) {
			tried = append(tried, u+": "+err.Error())
			continue
		}
		if err != nil {
			return "", fmt.Errorf("issuer metadata %s: %w", u, err)
		}
		var meta struct {
			Issuer  string `json:"issuer"`
			JWKSURI string `json:"jwks_uri"`
		}
		if err := json.Unmarshal(body, &meta); err != nil {
			return "", fmt.Errorf("issuer metadata %s: not a JSON object: %v", u, err)
		}
		if meta.Issuer != v.cfg.Issuer {
			return "", fmt.Errorf("issuer metadata %s: issuer %s; want %q", u, shown(meta.Issuer), v.cfg.Issuer)
		}
		if meta.JWKSURI == "" {
			return "", fmt.Errorf("issuer metadata %s: no jwks_uri (set jwks_url)", u)
		}
		if err := CheckURL(meta.JWKSURI); err != nil {
			return "", fmt.Errorf("issuer metadata %s: jwks_uri %s: %w", u, shownURL(meta.JWKSURI), err)
		}
		return meta.JWKSURI, nil
	}
	return "", fmt.Errorf("no issuer metadata found (set jwks_url): %s", strings.Join(tried, "; "))
}

// metadataURLs are where an issuer's metadata may be, in the order the MCP
// authorization spec lists them.
func metadataURLs(issuer string) []string {
	u, err := url.Parse(issuer)
	if err != nil {
		return nil
	}
	path := strings.Trim(u.Path, "/")
	at := func(p string) string {
		c := *u
		c.Path, c.RawPath = p, ""
		return c.String()
	}
	if path == "" {
		return []string{at("/.well-known/oauth-authorization-server"), at("/.well-known/openid-configuration")}
	}
	return []string{
		at("/.well-known/oauth-authorization-server/" + path),
		at("/.well-known/openid-configuration/" + path),
		at("/" + path + "/.well-known/openid-configuration"),
	}
}

// notFound is a 404 or 410 answer: discovery tries the next URL.
type notFound struct{ status int }

func (e *notFound) Error() string { return fmt.Sprintf("HTTP %d", e.status) }

// get fetches a JSON document of at most maxDocBytes.
func (v *Verifier) get(ctx context.Context, u string) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", "application/json")
	resp, err := v.client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxDocBytes+1))
	if err != nil {
		return nil, err
	}
	switch {
	case resp.StatusCode == http.StatusNotFound || resp.StatusCode == http.StatusGone:
		return nil, &notFound{resp.StatusCode}
	case resp.StatusCode != http.StatusOK:
		return nil, fmt.Errorf("HTTP %d", resp.StatusCode)
	case len(body) > maxDocBytes:
		return nil, fmt.Errorf("document larger than %d bytes", maxDocBytes)
	}
	return body, nil
}
