package auditlog_test

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/mod/sumdb/note"

	"github.com/auditproxy/auditproxy/audit"
	"github.com/auditproxy/auditproxy/auditlog"
	"github.com/auditproxy/auditproxy/internal/testutil"
	"github.com/auditproxy/auditproxy/spool"
)

// TestPreviousReleaseSpool: a data dir written by the release before the
// log had its own package (testdata/release-376d1b2) reads, verifies, and
// is continued by this one: the same log, its events and checkpoints in
// the same format, and the whole still verifies with the same key.
func TestPreviousReleaseSpool(t *testing.T) {
	const fixture = "testdata/release-376d1b2"
	dir := t.TempDir()
	testutil.CopyDir(t, fixture, dir)
	testutil.CopyDir(t, filepath.Join(fixture, spool.DirName), filepath.Join(dir, spool.DirName))
	read := func(name string) string {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		return strings.TrimSpace(string(b))
	}
	signer, err := note.NewSigner(read("signing.key"))
	if err != nil {
		t.Fatal(err)
	}
	verifier, err := note.NewVerifier(read("signing.key.pub"))
	if err != nil {
		t.Fatal(err)
	}
	keys := note.VerifierList(verifier)

	before := exportLines(t, dir)
	r := testutil.Verify(keys, before...)
	if !r.OK || len(r.Origins) != 1 {
		t.Fatalf("the previous release's log does not verify:\n%s", testutil.Problems(r))
	}
	origin := r.Origins[0].Origin
	inferences := testutil.OfType(t, before, audit.TypeInference)
	if len(inferences) != 60 {
		t.Fatalf("%d inference events, want 60", len(inferences))
	}
	for _, line := range before {
		var ev audit.Event
		if err := json.Unmarshal(line, &ev); err != nil {
			t.Fatalf("%s: %v", line, err)
		}
		if ev.Type == audit.TypeInference && (ev.Model.Name != "Qwen/Qwen3-0.6B" || ev.Input.Tokens == nil || *ev.Input.Tokens != 12 || ev.Log == nil || ev.Log.Origin != origin) {
			t.Errorf("inference event read back as %+v", ev)
		}
	}

	opts := logOpts(signer)
	opts.Name = "fixture-node"
	s := openTestSpool(t, dir, spool.Options{SegmentMaxBytes: 4 << 10, Forwarding: true, Log: opts})
	if got := s.Log().Origin(); got != origin {
		t.Fatalf("this release started the log %s; the previous release's is %s", got, origin)
	}
	if rec := s.Recovery; rec.RecordsCut != 0 || rec.CommittedLost || len(rec.Lost) != 0 || rec.StateLost != "" {
		t.Errorf("opening the previous release's spool found %+v", rec)
	}
	for i := range 5 {
		if err := s.Append(testutil.Event(i)); err != nil {
			t.Fatal(err)
		}
	}
	s.Close()
	after := exportLines(t, dir)
	r = testutil.Verify(keys, after...)
	if !r.OK || len(r.Origins) != 1 || r.Origins[0].Origin != origin {
		t.Fatalf("the log continued by this release does not verify as one:\n%s", testutil.Problems(r))
	}
	if !bytes.Equal(bytes.Join(after[:len(before)], nil), bytes.Join(before, nil)) {
		t.Error("the previous release's events read differently after this release wrote to the spool")
	}
	if n := len(after) - len(before); n < 6 { // 5 events and the final checkpoint
		t.Errorf("%d events added, want at least 6", n)
	}
	if cps := testutil.OfType(t, after, audit.TypeCheckpoint); len(cps) == 0 {
		t.Error("no checkpoint")
	} else if _, err := auditlog.ParseSignedCheckpoint(after[len(after)-1]); err != nil {
		t.Errorf("the newest event is not a checkpoint: %v", err)
	}
}
