// Package hashing owns every digest auditproxy computes: the streaming body
// hashers that fingerprint request and response bytes, and the keyed API-key
// id that attributes a request to a caller without recording the key.
//
// # Digest strings
//
// A digest is written as "<algorithm>:<lowercase hex>", for example
//
//	blake3:af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262
//	sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855
//
// The prefix names the algorithm so that an auditor recomputing a digest from
// captured bytes knows which function to run: b3sum and sha256sum give the same
// hex for the same bytes.
//
// # API key ids
//
// A key id is the keyed BLAKE3 (BLAKE3's keyed_hash mode) of the bearer token
// under a 32-byte secret, written "k1:<first 16 bytes in hex>". The secret
// never leaves the sidecar's data directory; without it the id cannot be
// linked back to a key, and with it an operator can compute the id of a
// known key to find its requests.
package hashing

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"hash"
	"sync"

	"github.com/zeebo/blake3"
)

// Algorithm names a body digest function.
type Algorithm string

// The supported body digest algorithms.
const (
	BLAKE3 Algorithm = "blake3"
	SHA256 Algorithm = "sha256"
)

// ParseAlgorithm returns the Algorithm named s.
func ParseAlgorithm(s string) (Algorithm, error) {
	switch Algorithm(s) {
	case BLAKE3, SHA256:
		return Algorithm(s), nil
	}
	return "", fmt.Errorf("unknown hash algorithm %q (want %q or %q)", s, BLAKE3, SHA256)
}

// New returns a fresh hash.Hash for a.
func (a Algorithm) New() hash.Hash {
	if a == SHA256 {
		return sha256.New()
	}
	return blake3.New()
}

// Hasher digests a body incrementally, as its bytes pass through the proxy.
// The zero value is not usable; call NewHasher. A Hasher is not safe for
// concurrent use.
type Hasher struct {
	alg Algorithm
	// b3 is set for BLAKE3: called directly rather than through hash.Hash,
	// so the digest buffer stays on the stack.
	b3    *blake3.Hasher
	h     hash.Hash
	bytes int64
	// sum receives h.Sum: a buffer on the stack would escape through the
	// interface call, one allocation per digest (SHA-256, the default).
	sum [64]byte
}

// NewHasher returns a Hasher for alg.
func NewHasher(alg Algorithm) *Hasher {
	h := &Hasher{alg: alg, h: alg.New()}
	h.b3, _ = h.h.(*blake3.Hasher)
	return h
}

// Write adds p to the digest. It never fails.
func (h *Hasher) Write(p []byte) (int, error) {
	h.bytes += int64(len(p))
	if h.b3 != nil {
		return h.b3.Write(p)
	}
	return h.h.Write(p)
}

// Bytes reports how many bytes were written.
func (h *Hasher) Bytes() int64 { return h.bytes }

// Reset returns h to its initial state, keeping its algorithm.
func (h *Hasher) Reset() {
	h.h.Reset()
	h.bytes = 0
}

// Digest returns the digest string ("blake3:<hex>") of the bytes written so
// far. It does not change the Hasher's state.
func (h *Hasher) Digest() string {
	var buf [16 + 1 + 2*64]byte
	return string(h.AppendDigest(buf[:0]))
}

// AppendDigest appends the digest string of the bytes written so far to dst,
// as Digest returns it, for callers that keep it in storage of their own.
func (h *Hasher) AppendDigest(dst []byte) []byte {
	if h.b3 != nil {
		var sum [32]byte
		return AppendDigest(dst, h.alg, h.b3.Sum(sum[:0]))
	}
	return AppendDigest(dst, h.alg, h.h.Sum(h.sum[:0]))
}

// Sum returns the digest string of b.
func Sum(alg Algorithm, b []byte) string {
	sum := Sum256(alg, b)
	return FormatDigest(alg, sum[:])
}

// Sum256 returns the digest of b, computed in one call without a Hasher's
// state (a BLAKE3 Hasher holds about 11 KiB; thousands of streams in flight
// would each keep one for a body hashed once).
func Sum256(alg Algorithm, b []byte) [32]byte {
	if alg == SHA256 {
		return sha256.Sum256(b)
	}
	h := blake3Pool.Get().(*blake3.Hasher)
	h.Reset()
	_, _ = h.Write(b)
	var sum [32]byte
	h.Sum(sum[:0])
	blake3Pool.Put(h)
	return sum
}

// blake3Pool holds the BLAKE3 states Sum256 hashes with. blake3.Sum256 keeps
// its state in a 22 KB stack frame: one call from a request's goroutine grows
// that goroutine's stack from 8 to 32 KiB for the rest of its life, 64 MB at
// 2,000 streams in flight.
var blake3Pool = sync.Pool{New: func() any { return blake3.New() }}

// FormatDigest writes sum as "<alg>:<hex>".
func FormatDigest(alg Algorithm, sum []byte) string {
	var buf [16 + 1 + 2*64]byte
	return string(AppendDigest(buf[:0], alg, sum))
}

// AppendDigest appends sum as "<alg>:<hex>" to dst.
func AppendDigest(dst []byte, alg Algorithm, sum []byte) []byte {
	dst = append(dst, alg...)
	dst = append(dst, ':')
	return hex.AppendEncode(dst, sum)
}
