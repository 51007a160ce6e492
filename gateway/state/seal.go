package state

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
)

// Sealer encrypts what replicas share that is secret (OAuth token sets) with
// AES-256-GCM, and fingerprints credential values so that replicas can say
// "this value is revoked" without putting the value in the store.
//
// The AES key and the fingerprint key are both derived from the configured
// encryption key with HMAC-SHA256 under distinct labels, so neither reveals
// the other. Each sealed value carries its own random 96-bit nonce, and is
// bound to its store key as additional data: a ciphertext moved to another
// key does not open.
type Sealer struct {
	aead  cipher.AEAD // nil without an encryption key
	fpKey []byte
}

// ErrOpen is returned by [Sealer.Open] for a value that does not decrypt
// (another key, a changed or truncated value, another store key).
var ErrOpen = errors.New("state: sealed value does not open with this key")

// fpLabel keys fingerprints when no encryption key is set: they are then
// plain hashes of the value under a fixed label (see NewSealer).
const fpLabel = "credgate fingerprint v1"

// NewSealer derives the keys from secret. An empty secret gives a Sealer
// that cannot seal (CanSeal is false) and fingerprints values with a fixed
// label: an attacker reading the store could then test guesses of a value
// against its fingerprint, so a value of low entropy should be shared only
// with an encryption key. A non-empty secret must be at least MinKeyBytes.
func NewSealer(secret string) (*Sealer, error) {
	if secret == "" {
		return &Sealer{fpKey: []byte(fpLabel)}, nil
	}
	if len(secret) < MinKeyBytes {
		return nil, fmt.Errorf("state.redis.encryption_key: %d bytes is too short: want at least %d (such as 32 random bytes, base64-encoded)", len(secret), MinKeyBytes)
	}
	derive := func(label string) []byte {
		m := hmac.New(sha256.New, []byte(secret))
		m.Write([]byte(label))
		return m.Sum(nil)
	}
	block, err := aes.NewCipher(derive("credgate state encryption v1"))
	if err != nil {
		return nil, err
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, err
	}
	return &Sealer{aead: aead, fpKey: derive(fpLabel)}, nil
}

// CanSeal reports whether an encryption key is set.
func (s *Sealer) CanSeal() bool { return s.aead != nil }

// Seal encrypts plain for the store key key: nonce || ciphertext || tag.
func (s *Sealer) Seal(key string, plain []byte) ([]byte, error) {
	if s.aead == nil {
		return nil, errors.New("state: no encryption key")
	}
	nonce := make([]byte, s.aead.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		return nil, err
	}
	return s.aead.Seal(nonce, nonce, plain, []byte(key)), nil
}

// Open decrypts what Seal made for key.
func (s *Sealer) Open(key string, sealed []byte) ([]byte, error) {
	if s.aead == nil {
		return nil, errors.New("state: no encryption key")
	}
	n := s.aead.NonceSize()
	if len(sealed) < n+s.aead.Overhead() {
		return nil, ErrOpen
	}
	plain, err := s.aead.Open(nil, sealed[:n], sealed[n:], []byte(key))
	if err != nil {
		return nil, ErrOpen
	}
	return plain, nil
}

// Fingerprint identifies value without revealing it: the first 16 bytes of
// its HMAC-SHA256 under the fingerprint key, in hex. "" for "".
func (s *Sealer) Fingerprint(value string) string {
	if value == "" {
		return ""
	}
	m := hmac.New(sha256.New, s.fpKey)
	m.Write([]byte(value))
	return hex.EncodeToString(m.Sum(nil)[:16])
}
