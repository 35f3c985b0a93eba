package main

import (
	"bytes"
	cryptorand "crypto/rand"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"filippo.io/age"
	"golang.org/x/mod/sumdb/note"

	"github.com/auditproxy/auditproxy/internal/testutil"
	"github.com/auditproxy/auditproxy/spool"
)

// TestSecretsGivenAsKeysAreNotPrinted: a private signing key or an age
// identity given where a public key belongs is refused with what it is and
// what to give instead, and the secret is not in the message.
func TestSecretsGivenAsKeysAreNotPrinted(t *testing.T) {
	dir := t.TempDir()
	skey, vkey, _ := note.GenerateKey(cryptorand.Reader, "gpu-node-7")
	signingKey := filepath.Join(dir, "signing.key")
	os.WriteFile(signingKey, []byte(skey+"\n"), 0o600)
	id, _ := age.GenerateX25519Identity()
	identityFile := filepath.Join(dir, "auditor.agekey")
	os.WriteFile(identityFile, []byte("# created: 2026-12-05T10:00:00Z\n# public key: "+id.Recipient().String()+"\n"+id.String()+"\n"), 0o600)
	events := filepath.Join(dir, "events.ndjson")
	os.WriteFile(events, []byte("{}\n"), 0o600)
	for _, tc := range []struct {
		name   string
		args   []string
		secret string
		want   string
	}{
		{"verify --pubkey the signing key", []string{"verify", "--pubkey", signingKey, events}, skey, "line 1 of " + signingKey + " is a private signing key"},
		{"verify --pubkey the key text", []string{"verify", "--pubkey", skey, events}, skey, "line 1 of the key given is a private signing key"},
		{"verify --pubkey an age identity", []string{"verify", "--pubkey", identityFile, events}, id.String(), "line 3 of " + identityFile + " is an age identity"},
		{"verify-proof --pubkey the signing key", []string{"verify-proof", "--pubkey", signingKey, events}, skey, "is a private signing key"},
		{"verify --witness-key an age identity", []string{"verify", "--pubkey", vkey, "--witness-key", identityFile, events}, id.String(), "is an age identity"},
		{"serve --payload-recipient an identity", []string{"serve", "--upstream", "http://127.0.0.1:1", "--capture-payloads", "--payload-recipient", id.String()}, id.String(), "is an age identity"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out, errOut bytes.Buffer
			code := run(tc.args, &out, &errOut)
			all := out.String() + errOut.String()
			if code != 2 || !strings.Contains(all, tc.want) {
				t.Errorf("exit %d, want 2 and %q:\n%s", code, tc.want, all)
			}
			secretPart := tc.secret[len(tc.secret)-20:]
			if strings.Contains(all, secretPart) {
				t.Errorf("the secret is printed:\n%s", all)
			}
		})
	}
}

// TestVerifyNotesWhatItCouldNotCheck: a copy whose last segment is torn
// says so, and without --until verify says that completeness after the
// newest checkpoint was not checked, and how to check it.
func TestVerifyNotesWhatItCouldNotCheck(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	sp, err := spool.Open(dir, spool.Options{MinFreeBytes: -1})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		sp.Append(testutil.Event(i))
	}
	sp.Close()
	segs, _ := filepath.Glob(filepath.Join(dir, spool.DirName, "*.seg"))
	fi, _ := os.Stat(segs[0])
	os.Truncate(segs[0], fi.Size()-5)
	for _, until := range []string{"", "1h"} {
		args := []string{"verify", dir}
		if until != "" {
			args = []string{"verify", "--until", until, dir}
		}
		var out bytes.Buffer
		run(args, &out, &bytes.Buffer{})
		if !strings.Contains(out.String(), "note: "+segs[0]+" ends in ") {
			t.Errorf("verify %v does not note the torn segment:\n%s", args, out.String())
		}
		if noted := strings.Contains(out.String(), "completeness after each log's newest checkpoint was not checked"); noted != (until == "") {
			t.Errorf("verify %v: completeness note %v:\n%s", args, noted, out.String())
		}
	}
}

// TestKeygenAge: keygen --age makes an auditor's age identity (mode 0600,
// age-keygen's format) and prints its recipient, which serve takes as
// --payload-recipient; it never overwrites a key.
func TestKeygenAge(t *testing.T) {
	file := filepath.Join(t.TempDir(), "auditor.agekey")
	var out, errOut bytes.Buffer
	if code := run([]string{"keygen", "--age", "--out", file}, &out, &errOut); code != 0 {
		t.Fatalf("keygen --age: %d %s", code, errOut.String())
	}
	recipient := strings.TrimSpace(out.String())
	b, err := os.ReadFile(file)
	fi, _ := os.Stat(file)
	if err != nil || fi.Mode().Perm() != 0o600 || !strings.Contains(string(b), "# public key: "+recipient+"\n") {
		t.Fatalf("identity file (%v, %v):\n%s", fi.Mode(), err, b)
	}
	ids, err := age.ParseIdentities(bytes.NewReader(b))
	if err != nil || len(ids) != 1 || ids[0].(*age.X25519Identity).Recipient().String() != recipient {
		t.Fatalf("the identity does not parse to the recipient printed: %v", err)
	}
	if _, err := age.ParseX25519Recipient(recipient); err != nil {
		t.Errorf("printed %q, not a recipient: %v", recipient, err)
	}
	if code := run([]string{"keygen", "--age", "--out", file}, &bytes.Buffer{}, &errOut); code != 1 || !strings.Contains(errOut.String(), "not overwriting it") {
		t.Errorf("keygen --age over an existing key: %d %s", code, errOut.String())
	}
}
