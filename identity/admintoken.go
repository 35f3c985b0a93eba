package identity

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"strings"

	"github.com/auditproxy/auditproxy/internal/fsutil"
)

// LoadOrCreateToken reads the admin token from path, creating it (32
// random bytes, hex, mode 0600, fsynced: fsutil.CreateSecretFile) if
// absent.
func LoadOrCreateToken(path string) (string, error) {
	b, err := fsutil.LoadOrCreateSecretFile(path, func() ([]byte, error) {
		var raw [32]byte
		if _, err := rand.Read(raw[:]); err != nil {
			return nil, err
		}
		return []byte(hex.EncodeToString(raw[:]) + "\n"), nil
	})
	if err != nil {
		return "", fmt.Errorf("admin token: %w", err)
	}
	tok := strings.TrimSpace(string(b))
	if len(tok) < 32 {
		return "", fmt.Errorf("admin token %s: shorter than 32 characters", path)
	}
	return tok, nil
}
