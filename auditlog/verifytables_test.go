package auditlog

import (
	"fmt"
	"strings"
	"testing"
)

func TestLeafTable(t *testing.T) {
	var lt leafTable
	if lt.len() != 0 || lt.at(0) != nil || lt.get(5).present {
		t.Fatal("empty table is not empty")
	}
	// Out of order, across chunks, with a whole chunk never touched.
	for _, seq := range []int64{3 * tableChunk, 2, tableChunk - 1} {
		lt.set(seq, leafRec{present: true, time: seq})
	}
	if lt.len() != 3*tableChunk+1 {
		t.Errorf("len %d, want %d", lt.len(), 3*tableChunk+1)
	}
	for _, seq := range []int64{3 * tableChunk, 2, tableChunk - 1} {
		if r := lt.get(seq); !r.present || r.time != seq {
			t.Errorf("seq %d: %+v", seq, r)
		}
	}
	if lt.at(2*tableChunk) != nil {
		t.Error("a chunk no seq touched was allocated")
	}
	if r := lt.at(3); r == nil || r.present {
		t.Errorf("seq 3, in an allocated chunk, not set: %+v", r)
	}
	if lt.get(10 * tableChunk).present {
		t.Error("a seq past the end is present")
	}
}

// TestVerifyAcrossTableChunks: a log longer than one chunk of the
// verifier's tables, with an event removed on each side of a chunk
// boundary, is reported exactly so.
func TestVerifyAcrossTableChunks(t *testing.T) {
	const origin = "auditproxy/test/20261123T100000Z"
	lg := newTestLog(t, origin, tableChunk+500)
	whole := verifyLines(lg.keys, lg.end, lg.lines)
	if !whole.OK {
		t.Fatalf("clean log of %d lines does not verify: %+v", len(lg.lines), whole)
	}
	// Line i is seq i (a checkpoint is an event of the log too).
	var cut [][]byte
	for i, l := range lg.lines {
		if i == tableChunk-1 || i == tableChunk+1 {
			continue
		}
		cut = append(cut, l)
	}
	r := verifyLines(lg.keys, lg.end, cut)
	got := strings.Join(r.Origins[0].Problems, "\n")
	for _, seq := range []int{tableChunk - 1, tableChunk + 1} {
		if !strings.Contains(got, fmt.Sprintf("seq %d missing", seq)) {
			t.Errorf("seq %d removed, not reported:\n%s", seq, got)
		}
	}
	if r.OK || r.Origins[0].Events != int64(len(lg.lines)-2) {
		t.Errorf("OK %v, %d events; want not OK, %d", r.OK, r.Origins[0].Events, len(lg.lines)-2)
	}
}
