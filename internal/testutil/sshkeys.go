package testutil

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// SSHKey is an Ed25519 key made by OpenSSH's ssh-keygen for a test, as an
// operator makes theirs.
type SSHKey struct {
	// Path is the private key file; Path+".pub" the public key.
	Path string
	// Public is the public key line without its comment ("ssh-ed25519
	// AAAA…"), as an allowed-signers line takes it.
	Public string
}

// NeedSSHKeygen skips t without ssh-keygen, or fails it where
// AUDITPROXY_REQUIRE_SSH_KEYGEN is set (.ci/run installs it).
func NeedSSHKeygen(t testing.TB) {
	t.Helper()
	if _, err := exec.LookPath("ssh-keygen"); err != nil {
		if os.Getenv("AUDITPROXY_REQUIRE_SSH_KEYGEN") != "" {
			t.Fatal("ssh-keygen not found, and AUDITPROXY_REQUIRE_SSH_KEYGEN is set")
		}
		t.Skip("ssh-keygen not found (.ci/run installs openssh-client)")
	}
}

// NewSSHKey makes a key with ssh-keygen.
func NewSSHKey(t testing.TB, name string) SSHKey {
	t.Helper()
	NeedSSHKeygen(t)
	path := filepath.Join(t.TempDir(), name)
	if out, err := exec.Command("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name, "-f", path).CombinedOutput(); err != nil {
		t.Fatalf("ssh-keygen: %v\n%s", err, out)
	}
	b, err := os.ReadFile(path + ".pub")
	if err != nil {
		t.Fatal(err)
	}
	f := strings.Fields(string(b))
	return SSHKey{Path: path, Public: f[0] + " " + f[1]}
}

// SignFile signs file with ssh-keygen -Y sign in namespace ns, as an
// operator does, and returns the signature file's name (file+".sig").
func (k SSHKey) SignFile(t testing.TB, file, ns string) string {
	t.Helper()
	os.Remove(file + ".sig") // ssh-keygen asks before overwriting
	if out, err := exec.Command("ssh-keygen", "-Y", "sign", "-n", ns, "-f", k.Path, file).CombinedOutput(); err != nil {
		t.Fatalf("ssh-keygen -Y sign: %v\n%s", err, out)
	}
	return file + ".sig"
}

// Sign signs data in namespace ns and returns the armored signature.
func (k SSHKey) Sign(t testing.TB, data []byte, ns string) string {
	t.Helper()
	file := filepath.Join(t.TempDir(), "signed")
	if err := os.WriteFile(file, data, 0o600); err != nil {
		t.Fatal(err)
	}
	sig, err := os.ReadFile(k.SignFile(t, file, ns))
	if err != nil {
		t.Fatal(err)
	}
	return string(sig)
}
