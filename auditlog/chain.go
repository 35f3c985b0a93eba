package auditlog

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"

	"github.com/auditproxy/auditproxy/internal/jcs"
	"github.com/valyala/fastjson"
	"golang.org/x/mod/sumdb/tlog"
)

// LeafHash returns the leaf hash of an event given as JSON.
func LeafHash(p *fastjson.Parser, scratch []byte, event []byte) (tlog.Hash, []byte, error) {
	canon, err := jcs.Append(scratch[:0], p, event)
	if err != nil {
		return tlog.Hash{}, canon, err
	}
	return tlog.RecordHash(canon), canon, nil
}

// Tree is the right edge of an RFC 6962 Merkle tree: enough to append leaves
// and compute the root, in O(log n) space. Its stored hashes (in the order of
// tlog.StoredHashIndex) are handed to the caller as they are produced.
type Tree struct {
	n int64
	// frontier[l] is the root of the complete subtree of 2^l leaves that
	// ends the tree's leftmost part, when bit l of n is set.
	frontier [64]tlog.Hash
}

// Size returns the number of leaves.
func (t *Tree) Size() int64 { return t.n }

// Append adds a leaf and appends the stored hashes it creates (the leaf
// hash, then one hash for every subtree it completes) to stored.
func (t *Tree) Append(leaf tlog.Hash, stored []tlog.Hash) []tlog.Hash {
	stored = append(stored, leaf)
	h := leaf
	l := 0
	for ; t.n&(1<<l) != 0; l++ {
		h = tlog.NodeHash(t.frontier[l], h)
		stored = append(stored, h)
	}
	t.frontier[l] = h
	t.n++
	return stored
}

// Root returns the tree hash: RFC 6962's Merkle tree hash of the leaves, as
// tlog.TreeHash computes it; for the empty tree, as RFC 6962 says,
// SHA-256 of the empty string (tlog returns zero there).
func (t *Tree) Root() tlog.Hash {
	if t.n == 0 {
		return emptyTreeHash
	}
	var h tlog.Hash
	first := true
	for l := 0; l < 64; l++ {
		if t.n&(1<<l) == 0 {
			continue
		}
		if first {
			h, first = t.frontier[l], false
		} else {
			h = tlog.NodeHash(t.frontier[l], h)
		}
	}
	return h
}

// TreeFromStored rebuilds the edge of a tree of n leaves from its stored
// hashes.
func TreeFromStored(n int64, r tlog.HashReader) (Tree, error) {
	t := Tree{n: n}
	var idx []int64
	var levels []int
	var start int64
	for l := 63; l >= 0; l-- {
		if n&(1<<l) == 0 {
			continue
		}
		idx = append(idx, tlog.StoredHashIndex(l, start>>l))
		levels = append(levels, l)
		start += 1 << l
	}
	hashes, err := r.ReadHashes(idx)
	if err != nil {
		return Tree{}, err
	}
	if len(hashes) != len(idx) {
		return Tree{}, fmt.Errorf("read %d stored hashes, want %d", len(hashes), len(idx))
	}
	for i, l := range levels {
		t.frontier[l] = hashes[i]
	}
	return t, nil
}

var emptyTreeHash = tlog.Hash(sha256.Sum256(nil))

// Chain assigns events their place in one log: it adds the "log" member to
// each, keeps the previous leaf hash and the tree. It is not safe for
// concurrent use; the spool's committer owns it.
type Chain struct {
	origin    string
	originLit []byte // origin as a JSON string
	prev      tlog.Hash
	tree      Tree
	stored    []tlog.Hash // produced since the last TakeStored
	scratch   []byte      // the event with its "log" member, before canonicalization
}

// ChainState is a Chain's position, to continue a log after a restart.
type ChainState struct {
	Origin string
	Tree   Tree
	Prev   tlog.Hash // leaf hash of the last event; zero when the tree is empty
}

// NewChain continues the log described by st.
func NewChain(st ChainState) (*Chain, error) {
	if st.Origin == "" {
		return nil, errors.New("auditlog: log origin is empty")
	}
	return &Chain{origin: st.Origin, originLit: strconv.AppendQuote(nil, st.Origin), prev: st.Prev, tree: st.Tree}, nil
}

// State returns the chain's position.
func (c *Chain) State() ChainState {
	return ChainState{Origin: c.origin, Tree: c.tree, Prev: c.prev}
}

// Restore returns the chain to st, taken earlier by State, and forgets the
// stored hashes produced since: their events were not committed.
func (c *Chain) Restore(st ChainState, storedLen int) {
	c.tree, c.prev = st.Tree, st.Prev
	c.stored = c.stored[:storedLen]
}

// Origin returns the log's origin.
func (c *Chain) Origin() string { return c.origin }

// Size returns the number of events in the log.
func (c *Chain) Size() int64 { return c.tree.n }

// Root returns the tree hash of the log.
func (c *Chain) Root() tlog.Hash { return c.tree.Root() }

// StoredLen and TakeStored hand over the stored hashes produced by Append
// since the last TakeStored, for the caller to keep (see LogRef). The slice
// TakeStored returns is valid until the next Append or
// AppendCheckpointEvent, which reuse its memory: the spool's committer takes
// the hashes of every commit, so reusing one slice saves an allocation per
// commit.
func (c *Chain) StoredLen() int { return len(c.stored) }

func (c *Chain) TakeStored() []tlog.Hash {
	s := c.stored
	c.stored = c.stored[:0]
	if cap(c.stored) > 1<<16 {
		c.stored = nil
	}
	return s
}

// Append appends to dst event, a JSON object without a "log" member, with
// its "log" member added, and makes it the log's next event. It writes the
// event in canonical form (see jcs.Append): the line is its own leaf's
// bytes, so SHA-256(0x00 || line) is its leaf hash, and a verifier reading
// the lines as written need not canonicalize them again.
func (c *Chain) Append(dst, event []byte) ([]byte, error) {
	if len(event) < 2 || event[0] != '{' || event[len(event)-1] != '}' {
		return dst, errors.New("auditlog: event is not a JSON object")
	}
	v := append(c.scratch[:0], `{"origin":`...)
	v = append(v, c.originLit...)
	v = append(v, `,"prev":"`...)
	if c.tree.n > 0 {
		v = hex.AppendEncode(v, c.prev[:])
	}
	v = append(v, `","seq":`...)
	v = strconv.AppendInt(v, c.tree.n, 10)
	v = append(v, '}')
	start := len(dst)
	// An event already in canonical form (Event.AppendJSON writes it so)
	// gets its "log" member in one pass; anything else is canonicalized
	// whole, with the member added. Both give the same bytes.
	out, ok := jcs.AppendInserted(dst, event, "log", v)
	c.scratch = v
	if !ok {
		// The event with the member added after its own, in the scratch
		// buffer after v.
		n := len(v)
		s := append(v, event[:len(event)-1]...)
		if len(event) > 2 {
			s = append(s, ',')
		}
		s = append(s, `"log":`...)
		s = append(s, s[:n]...)
		s = append(s, '}')
		c.scratch = s
		var err error
		if out, err = jcs.Append(dst, nil, s[n:]); err != nil {
			return dst, fmt.Errorf("auditlog: event is not valid JSON: %w", err)
		}
	}
	dst = out
	leaf := tlog.RecordHash(dst[start:])
	c.stored = c.tree.Append(leaf, c.stored)
	c.prev = leaf
	return dst, nil
}
