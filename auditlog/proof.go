package auditlog

import (
	"encoding/json"
	"errors"
	"fmt"

	"github.com/auditproxy/auditproxy/audit"
	"github.com/auditproxy/auditproxy/internal/jcs"
	"github.com/valyala/fastjson"
	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
)

// InclusionProof shows that one event is in a log, to someone who holds
// only the proof and the log's verifier key:
//
//	{"event":{…},"leaf_index":N,"tree_size":M,"proof":["<base64>",…],"checkpoint":"<signed note>"}
//
// Event is the event as found; LeafIndex its seq; Proof the RFC 6962 audit
// path from its leaf hash to the root of the first TreeSize events, which
// Checkpoint (a signed checkpoint of that size) names.
type InclusionProof struct {
	Event      json.RawMessage `json:"event"`
	LeafIndex  int64           `json:"leaf_index"`
	TreeSize   int64           `json:"tree_size"`
	Proof      []tlog.Hash     `json:"proof"`
	Checkpoint string          `json:"checkpoint"`
}

// Check verifies p: the checkpoint's signature against known, and the
// event's leaf hash through the proof to the checkpoint's root. It returns
// the checkpoint.
func (p *InclusionProof) Check(known note.Verifiers) (Checkpoint, error) {
	cp, _, err := OpenCheckpoint([]byte(p.Checkpoint), known)
	if err != nil {
		return cp, fmt.Errorf("checkpoint: %w", err)
	}
	if cp.Size != p.TreeSize {
		return cp, fmt.Errorf("proof is for a tree of %d events, the checkpoint for %d", p.TreeSize, cp.Size)
	}
	var fp fastjson.Parser
	v, err := fp.ParseBytes(p.Event)
	if err != nil {
		return cp, fmt.Errorf("event: %w", err)
	}
	if origin := string(v.GetStringBytes("log", "origin")); origin != cp.Origin {
		return cp, fmt.Errorf("event is in log %q, the checkpoint is for %q", origin, cp.Origin)
	}
	if seq := v.GetInt64("log", "seq"); seq != p.LeafIndex {
		return cp, fmt.Errorf("event has seq %d, the proof is for leaf %d", seq, p.LeafIndex)
	}
	leaf, _, err := LeafHash(&fp, nil, p.Event)
	if err != nil {
		return cp, fmt.Errorf("event: %w", err)
	}
	if err := tlog.CheckRecord(p.Proof, p.TreeSize, cp.Root, p.LeafIndex, leaf); err != nil {
		return cp, errors.New("the event is not in the log the checkpoint signs (proof does not lead to its root)")
	}
	return cp, nil
}

// Prover builds inclusion proofs from a log's events, added in any order.
type Prover struct {
	// IgnoreMembers are dropped from each event before it is hashed, as
	// Verifier.IgnoreMembers; a kept event is kept without them, as its
	// log hashed it.
	IgnoreMembers []string

	p        fastjson.Parser
	canon    []byte
	stripped []byte
	removed  []bool
	origins  map[string]*proverLog
}

type proverLog struct {
	leaves []tlog.Hash
	have   []bool
	events map[int64][]byte // only those asked for
	cps    map[int64]string // size -> signed note
	// cosigned: size -> the signed note with witnesses' cosignatures
	// (AddCosigned); proofs are then made against the newest of them.
	cosigned map[int64]string
}

// NewProver returns an empty Prover.
func NewProver() *Prover { return &Prover{origins: map[string]*proverLog{}} }

// Add reads one event; match says whether to keep it as a proof's subject.
// Events not in a log are ignored.
func (pr *Prover) Add(event []byte, keep bool) error {
	if len(pr.IgnoreMembers) > 0 {
		if len(pr.removed) != len(pr.IgnoreMembers) {
			pr.removed = make([]bool, len(pr.IgnoreMembers))
		}
		out := jcs.AppendWithout(pr.stripped[:0], event, pr.IgnoreMembers, pr.removed)
		if len(out) > 0 && len(event) > 0 && &out[0] != &event[0] {
			pr.stripped = out // the grown scratch, not the caller's event
		}
		event = out
	}
	v, err := pr.p.ParseBytes(event)
	if err != nil {
		return err
	}
	origin := string(v.GetStringBytes("log", "origin"))
	if origin == "" {
		return nil
	}
	seq := v.GetInt64("log", "seq")
	var cpNote string
	if string(v.GetStringBytes("type")) == audit.TypeCheckpoint {
		cpNote = string(v.GetStringBytes("checkpoint", "note"))
	}
	leaf, canon, err := LeafHash(&pr.p, pr.canon, event)
	pr.canon = canon
	if err != nil {
		return err
	}
	o := pr.origins[origin]
	if o == nil {
		o = &proverLog{events: map[int64][]byte{}, cps: map[int64]string{}}
		pr.origins[origin] = o
	}
	for int64(len(o.leaves)) <= seq {
		o.leaves = append(o.leaves, tlog.Hash{})
		o.have = append(o.have, false)
	}
	o.leaves[seq], o.have[seq] = leaf, true
	if keep {
		o.events[seq] = append([]byte(nil), event...)
	}
	if cpNote != "" {
		o.cps[seq] = cpNote
	}
	return nil
}

// AddCosigned offers a checkpoint note that witnesses cosigned (a line's
// note in the witness client's cosignatures file): Prove then proves each
// event of its log against the newest cosigned checkpoint, whose note,
// cosignatures included, goes into the proof. The signatures are checked
// by whoever checks the proof.
func (pr *Prover) AddCosigned(msg []byte) error {
	cp, err := checkpointOfNote(msg)
	if err != nil {
		return err
	}
	o := pr.origins[cp.Origin]
	if o == nil {
		o = &proverLog{events: map[int64][]byte{}, cps: map[int64]string{}}
		pr.origins[cp.Origin] = o
	}
	if o.cosigned == nil {
		o.cosigned = map[int64]string{}
	}
	o.cosigned[cp.Size] = string(msg)
	return nil
}

// Prove returns proofs for every kept event, each against the newest
// checkpoint of its log, or the newest cosigned one (AddCosigned), that
// commits to it.
func (pr *Prover) Prove() ([]InclusionProof, error) {
	var out []InclusionProof
	for origin, o := range pr.origins {
		if len(o.events) == 0 {
			continue
		}
		cps, which := o.cps, "checkpoint"
		if len(o.cosigned) > 0 {
			cps, which = o.cosigned, "cosigned checkpoint"
		}
		var newest int64 = -1
		for size := range cps {
			newest = max(newest, size)
		}
		if len(o.cosigned) > 0 {
			// A witness client's file grows after an export: take the
			// newest cosigned checkpoint whose events were all read.
			present := int64(0)
			for present < int64(len(o.have)) && o.have[present] {
				present++
			}
			best := int64(-1)
			for size := range cps {
				if size <= present {
					best = max(best, size)
				}
			}
			if best >= 0 {
				newest = best
			}
		}
		var stored memStore
		var tree Tree
		for i := int64(0); i < newest; i++ {
			if i >= int64(len(o.have)) || !o.have[i] {
				return nil, fmt.Errorf("log %s: event %d is missing, so no proof against the checkpoint at size %d", origin, i, newest)
			}
			stored = tree.Append(o.leaves[i], stored)
		}
		if newest > 0 {
			if cp, err := checkpointOfNote([]byte(cps[newest])); err != nil || cp.Root != tree.Root() {
				return nil, fmt.Errorf("log %s: the events read do not hash to the root of the %s at size %d", origin, which, newest)
			}
		}
		for seq, ev := range o.events {
			if seq >= newest {
				return nil, fmt.Errorf("log %s: event %d is not yet committed to by a %s (newest size %d)", origin, seq, which, max(newest, 0))
			}
			proof, err := tlog.ProveRecord(newest, seq, stored)
			if err != nil {
				return nil, err
			}
			out = append(out, InclusionProof{Event: ev, LeafIndex: seq, TreeSize: newest, Proof: proof, Checkpoint: cps[newest]})
		}
	}
	return out, nil
}

// memStore is a tlog.HashReader over stored hashes in memory.
type memStore []tlog.Hash

func (m memStore) ReadHashes(idx []int64) ([]tlog.Hash, error) {
	out := make([]tlog.Hash, len(idx))
	for i, x := range idx {
		if x < 0 || x >= int64(len(m)) {
			return nil, fmt.Errorf("stored hash %d of %d", x, len(m))
		}
		out[i] = m[x]
	}
	return out, nil
}
