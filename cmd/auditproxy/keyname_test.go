package main

import (
	"bytes"
	cryptorand "crypto/rand"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/mod/sumdb/note"
)

// TestKeyNameFollowsTheLog: the signing key is named after the log, the
// part of the origin (NAME/EPOCH) that stays across epochs; keygen's
// default is the default --log-name, and a key named otherwise is
// warned about.
func TestKeyNameFollowsTheLog(t *testing.T) {
	host, _ := os.Hostname()
	out := filepath.Join(t.TempDir(), "signing.key")
	var vkey bytes.Buffer
	if code := run([]string{"keygen", "--out", out}, &vkey, io.Discard); code != 0 {
		t.Fatalf("keygen exited %d", code)
	}
	if name, _, _ := strings.Cut(vkey.String(), "+"); name != keyNameFor(host) {
		t.Errorf("keygen named the key %q, want the default log name %q", name, keyNameFor(host))
	}
	for _, tc := range []struct{ key, log, want string }{
		{"gpu-node-7", "gpu-node-7", ""},
		{"gpu-node-7", "gpu node+7", ""},
		{"auditproxy-gpu-node-7", "gpu-node-7", `is named "auditproxy-gpu-node-7", not after the log "gpu-node-7"`},
	} {
		if got := keyNameWarning(tc.key, tc.log); tc.want == "" && got != "" || !strings.Contains(got, tc.want) {
			t.Errorf("keyNameWarning(%q, %q) = %q, want %q", tc.key, tc.log, got, tc.want)
		}
	}
}

// TestWitnessKeysGivenTwice: one witness key given twice is one key (not
// an ambiguous pair that fails every cosignature); two keys of one name
// are noted as one witness.
func TestWitnessKeysGivenTwice(t *testing.T) {
	_, a, _ := note.GenerateKey(cryptorand.Reader, "witness.example")
	_, b, _ := note.GenerateKey(cryptorand.Reader, "witness.example")
	_, c, _ := note.GenerateKey(cryptorand.Reader, "other.example")
	file := filepath.Join(t.TempDir(), "witness.pub")
	os.WriteFile(file, []byte(a+"\n"), 0o644)
	vs, err := loadWitnessKeys([]string{file, a, c})
	if err != nil || len(vs) != 2 {
		t.Fatalf("the same key as a file and as text: %d keys, %v", len(vs), err)
	}
	if n := sharedWitnessNames(vs); n != "" {
		t.Errorf("noted %q for keys of two names", n)
	}
	// The same for --pubkey: a log's key given twice still verifies its
	// checkpoints.
	skey, vkey, _ := note.GenerateKey(cryptorand.Reader, "gpu-node-7")
	signer, _ := note.NewSigner(skey)
	msg, _ := note.Sign(&note.Note{Text: "gpu-node-7/1\n1\nAAAA\n"}, signer)
	pubFile := filepath.Join(t.TempDir(), "signing.key.pub")
	os.WriteFile(pubFile, []byte(vkey+"\n"), 0o644)
	keys, err := loadVerifiers([]string{pubFile, vkey})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := note.Open(msg, keys); err != nil {
		t.Errorf("a note signed by a key given twice: %v", err)
	}
	vs, _ = loadWitnessKeys([]string{a, b, c})
	if n := sharedWitnessNames(vs); !strings.Contains(n, "share a name: they count as one witness") || strings.Contains(n, "other.example") {
		t.Errorf("two keys named witness.example: noted %q", n)
	}
}
