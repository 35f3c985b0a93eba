package identity

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestLoadOrCreateToken: the first call creates a 64-hex-character token
// with mode 0600, the next ones read the same; a short token is refused.
func TestLoadOrCreateToken(t *testing.T) {
	path := filepath.Join(t.TempDir(), "admin.token")
	tok, err := LoadOrCreateToken(path)
	if err != nil || len(tok) != 64 || strings.Trim(tok, "0123456789abcdef") != "" {
		t.Fatalf("created token %q, %v", tok, err)
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("token file: %v %v, want mode 0600", fi, err)
	}
	if again, err := LoadOrCreateToken(path); again != tok || err != nil {
		t.Errorf("reloaded %q, %v; want the token created", again, err)
	}
	short := filepath.Join(t.TempDir(), "short.token")
	os.WriteFile(short, []byte("too-short\n"), 0o600)
	if _, err := LoadOrCreateToken(short); err == nil || !strings.Contains(err.Error(), "shorter than 32") {
		t.Errorf("a short token: %v", err)
	}
	if _, err := LoadOrCreateToken(t.TempDir()); err == nil {
		t.Error("a directory was read as the token")
	}
}
