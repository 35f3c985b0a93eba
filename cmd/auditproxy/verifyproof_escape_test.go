package main

import (
	"bytes"
	"crypto/rand"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"

	"github.com/auditproxy/auditproxy/auditlog"
	"github.com/auditproxy/auditproxy/internal/jcs"
)

// TestVerifyProofEscapesTheOrigin: a log's origin is the checkpoint's
// text, which a note may carry with C1 controls and bidirectional
// formatting characters (it refuses only ASCII controls); a bundle comes
// with its key, so whoever made it chose the origin. verify-proof prints
// it escaped.
func TestVerifyProofEscapesTheOrigin(t *testing.T) {
	origin := "ops\u202egol\u009b2J"
	skey, vkey, err := note.GenerateKey(rand.Reader, "forger")
	if err != nil {
		t.Fatal(err)
	}
	signer, _ := note.NewSigner(skey)
	event := []byte(`{"v":1,"type":"inference","id":"e1","time":"2026-12-01T10:00:00Z","request_id":"r1","model":{"name":"m"},"log":{"origin":"` + origin + `","seq":0,"prev":""}}`)
	canon, err := jcs.Append(nil, nil, event)
	if err != nil {
		t.Fatal(err)
	}
	cp := auditlog.Checkpoint{Origin: origin, Size: 1, Root: tlog.RecordHash(canon)}
	signed, err := auditlog.SignCheckpoint(cp, signer)
	if err != nil {
		t.Fatal(err)
	}
	proof := auditlog.InclusionProof{Event: event, LeafIndex: 0, TreeSize: 1, Checkpoint: string(signed)}
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "event.tlog-proof"), proof.MarshalTLogProof(), 0o600)
	os.WriteFile(filepath.Join(dir, "log.pub"), []byte(vkey+"\n"), 0o644)
	for _, path := range []string{dir, filepath.Join(dir, "event.tlog-proof")} {
		var out, errOut bytes.Buffer
		code := run([]string{"verify-proof", "--pubkey", filepath.Join(dir, "log.pub"), path}, &out, &errOut)
		if code != 0 || !strings.Contains(out.String(), `of log ops\u202egol\u009b2J is in the 1 events`) || strings.ContainsAny(out.String(), "\u202e\u009b") {
			t.Errorf("verify-proof %s: %d %q %s", path, code, out.String(), errOut.String())
		}
	}
}
