package proxy_test

import (
	"encoding/hex"

	"github.com/zeebo/blake3"
)

// b3hex is BLAKE3 computed by the library directly, not through package
// hashing, so a test comparing it with an event checks the event.
func b3hex(b []byte) string {
	s := blake3.Sum256(b)
	return hex.EncodeToString(s[:])
}
