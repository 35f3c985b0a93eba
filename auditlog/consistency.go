package auditlog

import (
	"bytes"
	"errors"
	"fmt"
	"strings"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
)

// ConsistencyProof shows that a log's newer checkpoint extends an older
// one: the first events under the new root, as many as the old checkpoint
// signed, are the events under the old root, unchanged. It is checked with
// the two signed checkpoints and the log's verifier key alone, without the
// log:
//
//	{"old_checkpoint":"<signed note>","new_checkpoint":"<signed note>","proof":["<base64>",…]}
//
// Proof is the RFC 6962 consistency proof from the old tree to the new one
// (tlog.ProveTree): O(log n) hashes.
type ConsistencyProof struct {
	OldCheckpoint string      `json:"old_checkpoint"`
	NewCheckpoint string      `json:"new_checkpoint"`
	Proof         []tlog.Hash `json:"proof"`
}

// Check verifies p: both checkpoints' signatures against known, that they
// are of one log, and the proof from the old root to the new one. It
// returns both checkpoints.
func (p *ConsistencyProof) Check(known note.Verifiers) (from, to Checkpoint, err error) {
	if from, _, err = OpenCheckpoint([]byte(p.OldCheckpoint), known); err != nil {
		return from, to, fmt.Errorf("old checkpoint: %w", err)
	}
	if to, _, err = OpenCheckpoint([]byte(p.NewCheckpoint), known); err != nil {
		return from, to, fmt.Errorf("new checkpoint: %w", err)
	}
	switch {
	case from.Origin != to.Origin:
		return from, to, fmt.Errorf("the checkpoints are of two logs, %q and %q: a log's new epoch is a new tree, which no proof relates to the old one", from.Origin, to.Origin)
	case from.Size > to.Size:
		return from, to, fmt.Errorf("the old checkpoint (size %d) is larger than the new one (size %d)", from.Size, to.Size)
	case from.Size == 0:
		return from, to, errEmptyOld
	}
	if err := tlog.CheckTree(p.Proof, to.Size, to.Root, from.Size, from.Root); err != nil {
		return from, to, fmt.Errorf("the log of the new checkpoint (size %d) does not extend the old one (size %d): the events the old one signed were changed, removed or reordered, or the log was forked (%v)", to.Size, from.Size, err)
	}
	return from, to, nil
}

// errEmptyOld refuses a proof from an empty tree, which every tree
// extends: such a proof would say nothing (and a sidecar signs no
// checkpoint of size 0, its log_started being event 0).
var errEmptyOld = errors.New("the old checkpoint is of an empty tree (size 0), which every tree extends: there is nothing to prove; give a checkpoint of a larger size")

// ReadCheckpoint reads a signed checkpoint as an auditor keeps one: its
// signed note as text, or a checkpoint event (a line of a checkpoint
// directory's checkpoints.ndjson, or of an export). The signature is not
// checked here.
func ReadCheckpoint(b []byte) ([]byte, Checkpoint, error) {
	b = bytes.TrimSpace(b)
	if len(b) > 0 && b[0] == '{' {
		if bytes.Count(b, []byte("\n")) > 0 {
			return nil, Checkpoint{}, errors.New("more than one line: give one checkpoint event")
		}
		sc, err := ParseSignedCheckpoint(b)
		if err != nil {
			return nil, Checkpoint{}, err
		}
		return sc.Note, sc.Checkpoint, nil
	}
	msg := append(bytes.Clone(b), '\n') // a note ends with a newline, which TrimSpace took
	cp, err := checkpointOfNote(msg)
	if err != nil {
		return nil, Checkpoint{}, fmt.Errorf("not a signed checkpoint note nor a checkpoint event: %v", err)
	}
	return msg, cp, nil
}

// ProveConsistency returns the consistency proof between two signed
// checkpoints of one log (in either order) from the events added: every
// event before the newer checkpoint's size must be present, and they must hash to its root.
func (pr *Prover) ProveConsistency(oldNote, newNote []byte) (ConsistencyProof, error) {
	var out ConsistencyProof
	from, err := checkpointOfNote(oldNote)
	if err != nil {
		return out, fmt.Errorf("old checkpoint: %w", err)
	}
	to, err := checkpointOfNote(newNote)
	if err != nil {
		return out, fmt.Errorf("new checkpoint: %w", err)
	}
	if from.Origin != to.Origin {
		return out, fmt.Errorf("the checkpoints are of two logs, %q and %q: a new epoch starts a new tree (its log_started event cites the last checkpoint of the one before), so no proof relates them", from.Origin, to.Origin)
	}
	if from.Size > to.Size {
		from, to = to, from
		oldNote, newNote = newNote, oldNote
	}
	if from.Size == 0 {
		return out, errEmptyOld
	}
	o := pr.origins[to.Origin]
	if o == nil {
		return out, fmt.Errorf("no event of log %s was read", to.Origin)
	}
	var stored memStore
	var tree Tree
	for i := int64(0); i < to.Size; i++ {
		if i >= int64(len(o.have)) || !o.have[i] {
			return out, fmt.Errorf("log %s: event %d is missing, and the proof needs every event up to the new checkpoint's size %d", to.Origin, i, to.Size)
		}
		stored = tree.Append(o.leaves[i], stored)
		if i+1 == from.Size && tree.Root() != from.Root {
			return out, fmt.Errorf("log %s: the events read do not hash to the old checkpoint's root (size %d): they are not the events it signed", from.Origin, from.Size)
		}
	}
	if tree.Root() != to.Root {
		return out, fmt.Errorf("log %s: the events read do not hash to the new checkpoint's root (size %d): they are not the events it signed", to.Origin, to.Size)
	}
	proof, err := tlog.ProveTree(to.Size, from.Size, stored)
	if err != nil {
		return out, err
	}
	return ConsistencyProof{OldCheckpoint: string(oldNote), NewCheckpoint: string(newNote), Proof: proof}, nil
}

func checkpointOfNote(msg []byte) (Checkpoint, error) {
	_, err := note.Open(msg, nil)
	var unverified *note.UnverifiedNoteError
	if !errors.As(err, &unverified) {
		return Checkpoint{}, fmt.Errorf("not a signed note: %v", err)
	}
	if !strings.HasSuffix(unverified.Note.Text, "\n") {
		return Checkpoint{}, errors.New("not a checkpoint")
	}
	return ParseCheckpoint(unverified.Note.Text)
}

// NewestCheckpoint returns the signed note of the newest checkpoint read
// of origin, or nil.
func (pr *Prover) NewestCheckpoint(origin string) []byte {
	o := pr.origins[origin]
	if o == nil {
		return nil
	}
	newest := int64(-1)
	for size := range o.cps {
		newest = max(newest, size)
	}
	if newest < 0 {
		return nil
	}
	return []byte(o.cps[newest])
}
