package eventsrc

import (
	"bufio"
	"bytes"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestSorterSpills: events come out by (time, seq, order added); with a
// small memory limit they go through sorted runs in a temporary file, and
// the output is the same as sorted in memory.
func TestSorterSpills(t *testing.T) {
	t0 := time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC)
	type ev struct {
		t   time.Time
		seq int64
		n   int
	}
	rng := rand.New(rand.NewPCG(1, 2))
	var evs []ev
	for i := range 500 {
		// Times collide often (20 distinct), so seq and then the order
		// added decide too; some events have no seq (-1).
		e := ev{t0.Add(time.Duration(rng.IntN(20)) * time.Millisecond), int64(rng.IntN(50)), i}
		if i%7 == 0 {
			e.seq = -1
		}
		evs = append(evs, e)
	}
	// Beyond int64 nanoseconds: clamped, still in order.
	evs = append(evs, ev{time.Date(1000, 1, 1, 0, 0, 0, 0, time.UTC), 0, 500}, ev{time.Date(3000, 1, 1, 0, 0, 0, 0, time.UTC), 0, 501})
	line := func(e ev) []byte { return fmt.Appendf(nil, "event %d %s", e.n, strings.Repeat("x", e.n%300)) }
	want := slices.Clone(evs)
	slices.SortStableFunc(want, func(a, b ev) int {
		if c := a.t.Compare(b.t); c != 0 {
			return c
		}
		return int(a.seq - b.seq)
	})
	var wantOut bytes.Buffer
	for _, e := range want {
		wantOut.Write(line(e))
		wantOut.WriteByte('\n')
	}
	for _, limit := range []int{1, 5000, 20_000, 256 << 20} {
		s := NewSorter(limit)
		for _, e := range evs {
			s.Add(e.t, e.seq, line(e))
		}
		var out bytes.Buffer
		w := bufio.NewWriter(&out)
		err := s.WriteSorted(w)
		w.Flush()
		s.Close()
		if err != nil || out.String() != wantOut.String() {
			t.Errorf("limit %d: %v; output differs: %v", limit, err, out.String() != wantOut.String())
		}
		if spilled := s.tmp != nil; spilled != (limit < 256<<20) {
			t.Errorf("limit %d: spilled %v", limit, spilled)
		}
	}
}
