package witness

import (
	"bytes"
	"crypto/rand"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/mod/sumdb/note"

	"github.com/auditproxy/auditproxy/auditlog"
	"github.com/auditproxy/auditproxy/internal/testutil"
)

// TestAgainstOmniwitness: the client, against an independent tlog-witness
// (transparency-dev's omniwitness, a separate process), gets every
// checkpoint cosigned, from old 0 and then with consistency proofs, and
// keeps cosignatures that verify with the witness's cosignature/v1 key.
func TestAgainstOmniwitness(t *testing.T) {
	skey, vkey, err := note.GenerateKey(rand.Reader, "test-node")
	if err != nil {
		t.Fatal(err)
	}
	logS, _ := note.NewSigner(skey)
	logV, _ := note.NewVerifier(vkey)
	url, witnessKey, _ := testutil.Omniwitness(t, witnessTestOrigin, vkey)

	dir := t.TempDir()
	lg := newWitnessTestLog(t, witnessTestOrigin, logS, "omni")
	opts := Options{URL: url, StateFile: filepath.Join(dir, "witness.json"), CosignatureFile: filepath.Join(dir, "cosignatures.ndjson")}
	w := newTestWitness(t, opts, lg.hashes)
	var sizes []int64
	for _, n := range []int{1, 4, 9, 30, 2, 64} {
		lg.grow(t, n)
		ev, size := lg.checkpoint(t)
		sizes = append(sizes, size)
		w.Submit(signedCheckpoint(t, ev))
		waitForWitness(t, fmt.Sprintf("omniwitness to cosign size %d", size), func() bool {
			cos := readCosignatures(t, opts.CosignatureFile)
			return len(cos) > 0 && cos[len(cos)-1].Size == size
		})
	}
	if err := w.Close(5 * time.Second); err != nil {
		t.Fatal(err)
	}
	cos := readCosignatures(t, opts.CosignatureFile)
	if len(cos) != len(sizes) {
		t.Fatalf("%d cosignatures, want %d", len(cos), len(sizes))
	}
	for i, c := range cos {
		checkCosignature(t, c, sizes[i], logV, witnessKey)
	}
	if st := readWitnessState(t, opts.StateFile); st.Logs[witnessTestOrigin].Size != sizes[len(sizes)-1] {
		t.Errorf("state %+v, want size %d", st, sizes[len(sizes)-1])
	}

	// A restart of the client with its state lost: omniwitness answers
	// 409 with the size it holds, and the client goes on from there.
	os.Remove(opts.StateFile)
	w = newTestWitness(t, opts, lg.hashes)
	lg.grow(t, 7)
	ev, size := lg.checkpoint(t)
	w.Submit(signedCheckpoint(t, ev))
	waitForWitness(t, "omniwitness to cosign after a 409", func() bool {
		cos := readCosignatures(t, opts.CosignatureFile)
		return cos[len(cos)-1].Size == size
	})
	if err := w.Close(5 * time.Second); err != nil {
		t.Fatal(err)
	}
	cos = readCosignatures(t, opts.CosignatureFile)
	checkCosignature(t, cos[len(cos)-1], size, logV, witnessKey)

	// An auditor's verify checks the cosignatures against the events.
	v := auditlog.NewVerifier(note.VerifierList(logV))
	v.Witnesses = []note.Verifier{witnessKey}
	for _, l := range lg.lines {
		v.Add(l)
	}
	b, _ := os.ReadFile(opts.CosignatureFile)
	for line := range bytes.Lines(b) {
		if err := v.AddCosignature(line); err != nil {
			t.Fatal(err)
		}
	}
	r := v.Report()
	if len(r.Origins) != 1 || !r.Origins[0].OK || r.Origins[0].Cosigned != len(sizes)+1 || r.Origins[0].NewestCosigned != size {
		t.Errorf("verify with omniwitness's cosignatures: %+v", r)
	}
}
