package hashing

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"sync"

	"github.com/zeebo/blake3"

	"github.com/auditproxy/auditproxy/internal/fsutil"
)

// KeyIDSecretSize is the size in bytes of the secret that keys API key ids.
const KeyIDSecretSize = 32

// keyIDVersion prefixes every key id so that a later change of construction
// (another length, another function) cannot be confused with this one.
const keyIDVersion = "k1:"

// KeyIDer computes API key ids. It is safe for concurrent use.
type KeyIDer struct {
	// Keyed BLAKE3 states, reset for each id. Not a clone per id on the
	// stack: a state is about 11 KB, and a request goroutine's stack that
	// held one would stay twice as large for the life of its connection.
	pool sync.Pool
}

// NewKeyIDer returns a KeyIDer keyed with secret, which must be
// KeyIDSecretSize bytes.
func NewKeyIDer(secret []byte) (*KeyIDer, error) {
	if len(secret) != KeyIDSecretSize {
		return nil, fmt.Errorf("key id secret is %d bytes, want %d", len(secret), KeyIDSecretSize)
	}
	if _, err := blake3.NewKeyed(secret); err != nil {
		return nil, err
	}
	key := bytes.Clone(secret)
	k := &KeyIDer{}
	k.pool.New = func() any {
		h, _ := blake3.NewKeyed(key) // checked above
		return h
	}
	return k, nil
}

// ID returns the key id of token, the bearer credential as the client sent it
// (without the "Bearer " prefix).
func (k *KeyIDer) ID(token []byte) string {
	var buf [len(keyIDVersion) + 32]byte
	return string(k.AppendID(buf[:0], token))
}

// AppendID appends the id of token, as ID returns it, to dst.
func (k *KeyIDer) AppendID(dst, token []byte) []byte {
	h := k.pool.Get().(*blake3.Hasher)
	h.Reset() // keeps the key
	_, _ = h.Write(token)
	var sum [32]byte
	h.Sum(sum[:0])
	k.pool.Put(h)
	dst = append(dst, keyIDVersion...)
	return hex.AppendEncode(dst, sum[:16])
}

// Credential returns what a key id is computed from, given an Authorization
// header value: the token of a Bearer credential ("Bearer sk-..." gives
// "sk-..."), or the whole value for any other scheme.
func Credential(authorization []byte) []byte {
	if len(authorization) > 7 && bytes.EqualFold(authorization[:7], []byte("bearer ")) {
		return bytes.TrimSpace(authorization[7:])
	}
	return authorization
}

// LoadOrCreateKeyIDSecret reads the secret from path. If the file does not
// exist it generates a random secret and writes it there with mode 0600
// (fsutil.CreateSecretFile), creating the parent directory (mode 0700) if
// needed. The file holds the secret in hex, so an operator can copy it
// between sidecars that must produce the same ids. Two sidecars sharing a
// data dir that start at once get the same secret: the one created first.
func LoadOrCreateKeyIDSecret(path string) ([]byte, error) {
	b, err := fsutil.LoadOrCreateSecretFile(path, func() ([]byte, error) {
		secret := make([]byte, KeyIDSecretSize)
		if _, err := rand.Read(secret); err != nil {
			return nil, err
		}
		if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
			return nil, err
		}
		return []byte(hex.EncodeToString(secret) + "\n"), nil
	})
	if err != nil {
		return nil, fmt.Errorf("key id secret: %w", err)
	}
	return parseKeyIDSecret(path, b)
}

// LoadKeyIDSecret reads the secret a sidecar keys its ids with from path,
// as LoadOrCreateKeyIDSecret wrote it, and never creates one.
func LoadKeyIDSecret(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read key id secret: %w", err)
	}
	return parseKeyIDSecret(path, b)
}

func parseKeyIDSecret(path string, b []byte) ([]byte, error) {
	b = bytes.TrimSpace(b)
	secret := make([]byte, hex.DecodedLen(len(b)))
	if _, err := hex.Decode(secret, b); err != nil || len(secret) != KeyIDSecretSize {
		return nil, fmt.Errorf("key id secret %s: want %d hex characters", path, 2*KeyIDSecretSize)
	}
	return secret, nil
}
