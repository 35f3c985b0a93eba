package auditlog

import "slices"

// A verifier keeps a record per event of logs of millions of events. Both
// tables below grow by fixed-size chunks rather than by reallocating one
// slice: a slice that grows by copying moves and clears each record several
// times over, which cost a quarter of verify's time per event.

const tableChunk = 1 << 12

// leafTable holds the leafRecs of one origin, indexed by seq. Seqs need not
// arrive in order; a chunk is allocated when the first seq in it arrives.
type leafTable struct {
	chunks [][]leafRec
	n      int64 // one past the greatest seq set
}

// len returns one past the greatest seq set.
func (t *leafTable) len() int64 { return t.n }

// at returns the record of seq, or nil when its chunk does not exist (no seq
// near it was set); a record that was not set has present false.
func (t *leafTable) at(seq int64) *leafRec {
	c := seq / tableChunk
	if c >= int64(len(t.chunks)) || t.chunks[c] == nil {
		return nil
	}
	return &t.chunks[c][seq%tableChunk]
}

// get returns a copy of the record of seq (present false when not set).
func (t *leafTable) get(seq int64) leafRec {
	if r := t.at(seq); r != nil {
		return *r
	}
	return leafRec{}
}

func (t *leafTable) set(seq int64, r leafRec) {
	c := seq / tableChunk
	if c >= int64(len(t.chunks)) {
		t.chunks = slices.Grow(t.chunks, int(c)+1-len(t.chunks))[:c+1]
	}
	if t.chunks[c] == nil {
		t.chunks[c] = make([]leafRec, tableChunk)
	}
	t.chunks[c][seq%tableChunk] = r
	t.n = max(t.n, seq+1)
}

// idTable is an append-only list of the hashes of event ids.
type idTable struct {
	chunks [][]uint64
}

func (t *idTable) add(r uint64) {
	if n := len(t.chunks); n == 0 || len(t.chunks[n-1]) == tableChunk {
		t.chunks = append(t.chunks, make([]uint64, 0, tableChunk))
	}
	last := &t.chunks[len(t.chunks)-1]
	*last = append(*last, r)
}

// all returns the hashes in one slice, for sorting.
func (t *idTable) all() []uint64 {
	n := 0
	for _, c := range t.chunks {
		n += len(c)
	}
	out := make([]uint64, 0, n)
	for _, c := range t.chunks {
		out = append(out, c...)
	}
	return out
}

// radixSort sorts a in ascending order, in four passes of 16 bits (LSD):
// for the hundreds of thousands of id hashes of a log it takes a fifth of
// the time of slices.Sort. It may return a's scratch twin, not a.
func radixSort(a []uint64) []uint64 {
	if len(a) < 1<<12 {
		slices.Sort(a)
		return a
	}
	b := make([]uint64, len(a))
	var counts [1 << 16]int
	for shift := uint(0); shift < 64; shift += 16 {
		clear(counts[:])
		for _, x := range a {
			counts[(x>>shift)&0xffff]++
		}
		sum := 0
		for i, c := range counts {
			counts[i] = sum
			sum += c
		}
		for _, x := range a {
			d := (x >> shift) & 0xffff
			b[counts[d]] = x
			counts[d]++
		}
		a, b = b, a
	}
	return a
}
