package auditlog

import (
	"crypto/sha256"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"golang.org/x/mod/sumdb/tlog"
)

func noteOf(t *testing.T, cpEvent []byte) []byte {
	t.Helper()
	sc, err := ParseSignedCheckpoint(cpEvent)
	if err != nil {
		t.Fatal(err)
	}
	return sc.Note
}

// TestConsistencyProof: an auditor holding an old checkpoint checks, from
// the new checkpoint and O(log n) hashes, that today's log extends it; a
// rolled-back and rewritten log, a changed proof and a checkpoint of
// another log or epoch fail.
func TestConsistencyProof(t *testing.T) {
	const origin = "auditproxy/consistency/20261123T100000Z"
	s, keys := newTestKeys(t, "consistency-signer")
	c, _ := NewChain(ChainState{Origin: origin})
	first, firstCPs, _ := buildLog(t, c, s, t0, 0, 30, false) // checkpoints at sizes 10, 21, 32
	forkFrom := c.State()
	rest, restCPs, _ := buildLog(t, c, s, t0.Add(30*time.Second), 30, 300, false)
	lines, cps := append(first, rest...), append(firstCPs, restCPs...)

	pr := NewProver()
	for _, l := range lines {
		if err := pr.Add(l, false); err != nil {
			t.Fatal(err)
		}
	}
	oldNote, newNote := noteOf(t, cps[0]), noteOf(t, cps[len(cps)-1])
	proof, err := pr.ProveConsistency(oldNote, newNote)
	if err != nil {
		t.Fatal(err)
	}
	from, to, err := proof.Check(keys)
	if err != nil || from.Size != 10 || to.Size != 362 {
		t.Fatalf("Check: %v (sizes %d, %d)", err, from.Size, to.Size)
	}
	if len(proof.Proof) > 2*9 { // at most about 2 log2(n) hashes
		t.Errorf("the proof from 10 to 362 has %d hashes", len(proof.Proof))
	}
	// It survives JSON, and the checkpoints may be given newest first.
	b, _ := json.Marshal(proof)
	var back ConsistencyProof
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	if _, _, err := back.Check(keys); err != nil {
		t.Errorf("after JSON: %v", err)
	}
	if swapped, err := pr.ProveConsistency(newNote, oldNote); err != nil || swapped.OldCheckpoint != string(oldNote) {
		t.Errorf("checkpoints given newest first: %v", err)
	}

	// A fork: the log rolled back to size 32 (a restored backup) and signed
	// checkpoints over different events from there.
	fork, _ := NewChain(forkFrom)
	forkLines, forkCPs, _ := buildLog(t, fork, s, t0.Add(time.Hour), 5000, 40, false)
	prFork := NewProver()
	for _, l := range append(append([][]byte(nil), first...), forkLines...) {
		prFork.Add(l, false)
	}
	forkNew := noteOf(t, forkCPs[len(forkCPs)-1])
	if _, err := prFork.ProveConsistency(oldNote, forkNew); err != nil {
		t.Errorf("the fork extends what was checkpointed before it: %v", err)
	}
	beforeFork := noteOf(t, cps[3]) // size 43: after the fork's base, of the original
	if _, err := prFork.ProveConsistency(beforeFork, forkNew); err == nil || !strings.Contains(err.Error(), "do not hash to the old checkpoint's root") {
		t.Errorf("proof across the fork: %v", err)
	}
	// A proof for the fork, presented with the original's checkpoint.
	forkProof, err := prFork.ProveConsistency(noteOf(t, forkCPs[0]), forkNew)
	if err != nil {
		t.Fatal(err)
	}
	forkProof.OldCheckpoint = string(beforeFork)
	if _, _, err := forkProof.Check(keys); err == nil || !strings.Contains(err.Error(), "does not extend the old one") {
		t.Errorf("a forked log's proof against the original's checkpoint: %v", err)
	}

	changed := proof
	changed.Proof = append([]tlog.Hash(nil), proof.Proof...)
	changed.Proof[0][0] ^= 1
	if _, _, err := changed.Check(keys); err == nil {
		t.Error("a changed proof verified")
	}
	if _, _, err := proof.Check(nil); err == nil {
		t.Error("verified without the log's key")
	}

	// A checkpoint of the empty tree (signed by the key, though a sidecar
	// signs none) proves nothing: refused, saying so.
	empty, err := SignCheckpoint(Checkpoint{Origin: origin, Root: tlog.Hash(sha256.Sum256(nil))}, s)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := pr.ProveConsistency(empty, newNote); err == nil || !strings.Contains(err.Error(), "empty tree (size 0)") {
		t.Errorf("prove from a size-0 checkpoint: %v", err)
	}
	fromEmpty := proof
	fromEmpty.OldCheckpoint, fromEmpty.Proof = string(empty), nil
	if _, _, err := fromEmpty.Check(keys); err == nil || !strings.Contains(err.Error(), "empty tree (size 0)") {
		t.Errorf("check from a size-0 checkpoint: %v", err)
	}

	// Another epoch of the log is another tree.
	c2, _ := NewChain(ChainState{Origin: "auditproxy/consistency/20261124T100000Z"})
	_, epoch2CPs, _ := buildLog(t, c2, s, t0.Add(24*time.Hour), 0, 10, false)
	other := noteOf(t, epoch2CPs[0])
	if _, err := pr.ProveConsistency(oldNote, other); err == nil || !strings.Contains(err.Error(), "two logs") {
		t.Errorf("proof between two epochs: %v", err)
	}
	crossed := proof
	crossed.NewCheckpoint = string(other)
	if _, _, err := crossed.Check(keys); err == nil || !strings.Contains(err.Error(), "two logs") {
		t.Errorf("a proof presented with another epoch's checkpoint: %v", err)
	}
}

func TestReadCheckpoint(t *testing.T) {
	lg := newTestLog(t, "auditproxy/read/20261123T100000Z", 12)
	want := noteOf(t, lg.cps[0])
	for name, in := range map[string]string{
		"event":                       string(lg.cps[0]) + "\n",
		"signed note":                 string(want),
		"note, CRLF-free but trimmed": strings.TrimSpace(string(want)),
	} {
		msg, cp, err := ReadCheckpoint([]byte(in))
		if err != nil || string(msg) != string(want) || cp.Size != 10 {
			t.Errorf("%s: %q, size %d, %v", name, msg, cp.Size, err)
		}
	}
	for name, in := range map[string]string{
		"two events":         string(lg.cps[0]) + "\n" + string(lg.cps[0]),
		"not a note":         "hello\n",
		"an inference event": string(lg.lines[0]),
	} {
		if _, _, err := ReadCheckpoint([]byte(in)); err == nil {
			t.Errorf("%s: read as a checkpoint", name)
		}
	}
}
