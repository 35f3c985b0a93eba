package auditlog

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/auditproxy/auditproxy/audit"
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

// TestRadixSort: radixSort sorts as slices.Sort does, at the sizes either
// way takes, with duplicates and values in every 16-bit digit.
func TestRadixSort(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for _, n := range []int{0, 1, 100, 1<<12 - 1, 1 << 12, 100_000} {
		a := make([]uint64, n)
		for i := range a {
			switch i % 3 {
			case 0:
				a[i] = r.Uint64()
			case 1:
				a[i] = r.Uint64() & 0xffff0000ffff0000
			default:
				a[i] = a[i/2] // duplicates
			}
		}
		want := slices.Clone(a)
		slices.Sort(want)
		if got := radixSort(a); !slices.Equal(got, want) {
			t.Errorf("n=%d: radixSort differs from slices.Sort", n)
		}
	}
}

// TestEventTime: the verifier's hour cache reads every time as
// audit.ParseTime does, whatever came before it.
func TestEventTime(t *testing.T) {
	times := []string{
		"2026-12-05T08:07:53.419429137Z",
		"2026-12-05T08:59:59.999999999Z", // the same hour, from the cache
		"2026-12-05T08:60:00.000000000Z", // no minute 60
		"2026-12-05T08:07:5x.000000000Z",
		"2026-12-05T08:07:53.41942913xZ",
		"2026-12-05T08:07:53Z",
		"2026-12-05T09:00:00.000000000Z",
		"2026-12-05T08:07:53.419429137+01:00", // hour 08 of another zone
		"2026-12-05T08:07:53.000000000Z",
		"1970-01-01T00:00:00.000000001Z",
		"2026-02-30T08:00:00.000000000Z",
		"not a time",
		"2026-11-23T1:05:06.5Z", // a one-digit hour, which time.Parse takes
		"2026-11-23T1:012:34.000000000Z",
	}
	v := NewVerifier(nil)
	for range 2 {
		for _, s := range times {
			want := int64(0)
			if tm, err := audit.ParseTime([]byte(s)); err == nil {
				want = tm.UnixNano()
			}
			if got := v.eventTime([]byte(s)); got != want {
				t.Errorf("eventTime(%q) = %d, want %d", s, got, want)
			}
		}
	}
}
