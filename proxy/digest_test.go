package proxy_test

import (
	"crypto/sha256"
	"encoding/hex"
)

// bodyDigest is the event's digest of b under the default algorithm
// (SHA-256), computed by the standard library directly, not through package
// hashing, so a test comparing it with an event checks the event.
func bodyDigest(b []byte) string {
	s := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(s[:])
}
