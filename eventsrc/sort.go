package eventsrc

import (
	"bufio"
	"container/heap"
	"encoding/binary"
	"fmt"
	"io"
	"math"
	"os"
	"slices"
	"time"
)

// NewSorter returns a Sorter that holds up to limit bytes of events in
// memory. Close it to remove its temporary file.
func NewSorter(limit int) *Sorter { return &Sorter{limit: limit} }

// Sorter orders events by (time, seq, arrival). It holds them in memory up
// to its limit in bytes, then writes each sorted run to one temporary file
// and merges the runs at the end. Its methods are not safe for concurrent
// use.
type Sorter struct {
	limit  int
	blocks [][]byte // the events held, in blocks of sortBlock bytes (or one event, if larger)
	used   int      // blocks in use; the last one may have room
	held   int      // bytes held
	recs   []sortRec
	next   int64 // arrival number

	tmp  *os.File
	tmpw *bufio.Writer
	runs []sortRun
	size int64 // bytes written to tmp
	err  error
}

type sortKey struct{ time, seq, n int64 }

func (a sortKey) compare(b sortKey) int {
	if c := cmpInt(a.time, b.time); c != 0 {
		return c
	}
	if c := cmpInt(a.seq, b.seq); c != 0 {
		return c
	}
	return cmpInt(a.n, b.n)
}

func cmpInt(a, b int64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

type sortRec struct {
	key   sortKey
	event []byte // in blocks
}

// sortBlock is the size of the blocks that hold events: no event is copied
// twice in memory, and the memory held stays near the limit.
const sortBlock = 1 << 20

type sortRun struct{ off, size int64 }

// Each record in a run: time, seq, arrival (int64 each), length (uint32),
// then the event's bytes.
const runHeader = 8*3 + 4

// Add adds a copy of event, at time t and log seq (-1 for none). After a
// failure (see Err), Add does nothing.
func (s *Sorter) Add(t time.Time, seq int64, event []byte) {
	if s.err != nil {
		return
	}
	if len(event) > math.MaxUint32 {
		s.err = fmt.Errorf("an event of %d bytes", len(event))
		return
	}
	s.recs = append(s.recs, sortRec{key: sortKey{unixNanos(t), seq, s.next}, event: s.hold(event)})
	s.next++
	if s.held >= s.limit {
		s.err = s.spill()
	}
}

func (s *Sorter) sort() {
	slices.SortFunc(s.recs, func(a, b sortRec) int { return a.key.compare(b.key) })
}

// spill writes the events held as a sorted run to the temporary file.
func (s *Sorter) spill() error {
	if s.tmp == nil {
		f, err := os.CreateTemp("", "auditproxy-query-*.tmp")
		if err != nil {
			return err
		}
		s.tmp, s.tmpw = f, bufio.NewWriterSize(f, 1<<20)
	}
	s.sort()
	start := s.size
	var hdr [runHeader]byte
	for _, r := range s.recs {
		binary.LittleEndian.PutUint64(hdr[0:], uint64(r.key.time))
		binary.LittleEndian.PutUint64(hdr[8:], uint64(r.key.seq))
		binary.LittleEndian.PutUint64(hdr[16:], uint64(r.key.n))
		binary.LittleEndian.PutUint32(hdr[24:], uint32(len(r.event)))
		s.tmpw.Write(hdr[:])
		s.tmpw.Write(r.event)
		s.size += int64(runHeader + len(r.event))
	}
	if err := s.tmpw.Flush(); err != nil {
		return err
	}
	s.runs = append(s.runs, sortRun{start, s.size - start})
	clear(s.recs) // no references into the blocks, which are reused
	s.recs = s.recs[:0]
	s.blocks = slices.DeleteFunc(s.blocks, func(b []byte) bool { return cap(b) != sortBlock })
	for i := range s.blocks {
		s.blocks[i] = s.blocks[i][:0]
	}
	s.used, s.held = 0, 0
	return nil
}

// hold copies event into the blocks and returns the copy.
func (s *Sorter) hold(event []byte) []byte {
	s.held += len(event)
	if len(event) > sortBlock {
		big := slices.Clone(event)
		s.blocks = slices.Insert(s.blocks, s.used, big)
		s.used++
		return big
	}
	if s.used == 0 || cap(s.blocks[s.used-1])-len(s.blocks[s.used-1]) < len(event) {
		if s.used == len(s.blocks) {
			s.blocks = append(s.blocks, make([]byte, 0, sortBlock))
		}
		s.used++
	}
	b := &s.blocks[s.used-1]
	start := len(*b)
	*b = append(*b, event...)
	return (*b)[start:len(*b):len(*b)]
}

// Err returns the error that stopped Add (an event of 4 GiB or more, or a
// failure to write a sorted run), if any.
func (s *Sorter) Err() error { return s.err }

// WriteSorted writes every event added, each with a newline, in order.
func (s *Sorter) WriteSorted(w *bufio.Writer) error {
	if s.err != nil {
		return s.err
	}
	if len(s.runs) == 0 {
		s.sort()
		for _, r := range s.recs {
			w.Write(r.event)
			if err := w.WriteByte('\n'); err != nil {
				return err
			}
		}
		return nil
	}
	if len(s.recs) > 0 {
		if err := s.spill(); err != nil {
			return err
		}
	}
	s.blocks = nil
	h := make(runHeap, 0, len(s.runs))
	for _, r := range s.runs {
		rr := &runReader{r: bufio.NewReaderSize(io.NewSectionReader(s.tmp, r.off, r.size), 64<<10)}
		if ok, err := rr.next(); err != nil {
			return err
		} else if ok {
			h = append(h, rr)
		}
	}
	heap.Init(&h)
	for len(h) > 0 {
		rr := h[0]
		w.Write(rr.event)
		if err := w.WriteByte('\n'); err != nil {
			return err
		}
		ok, err := rr.next()
		if err != nil {
			return err
		}
		if ok {
			heap.Fix(&h, 0)
		} else {
			heap.Pop(&h)
		}
	}
	return nil
}

// Close removes the temporary file, if any.
func (s *Sorter) Close() {
	if s.tmp != nil {
		s.tmp.Close()
		os.Remove(s.tmp.Name())
	}
}

// runReader reads one sorted run back.
type runReader struct {
	r     *bufio.Reader
	key   sortKey
	event []byte
}

func (rr *runReader) next() (bool, error) {
	var hdr [runHeader]byte
	if _, err := io.ReadFull(rr.r, hdr[:]); err == io.EOF {
		return false, nil
	} else if err != nil {
		return false, err
	}
	rr.key = sortKey{int64(binary.LittleEndian.Uint64(hdr[0:])), int64(binary.LittleEndian.Uint64(hdr[8:])),
		int64(binary.LittleEndian.Uint64(hdr[16:]))}
	n := int(binary.LittleEndian.Uint32(hdr[24:]))
	if cap(rr.event) < n {
		rr.event = make([]byte, n)
	}
	rr.event = rr.event[:n]
	_, err := io.ReadFull(rr.r, rr.event)
	return true, err
}

type runHeap []*runReader

func (h runHeap) Len() int           { return len(h) }
func (h runHeap) Less(i, j int) bool { return h[i].key.compare(h[j].key) < 0 }
func (h runHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *runHeap) Push(x any)        { *h = append(*h, x.(*runReader)) }
func (h *runHeap) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}

// unixNanos is t in nanoseconds since 1970, clamped to int64 (years
// 1678-2262 are exact).
func unixNanos(t time.Time) int64 {
	switch {
	case t.Before(minNanoTime):
		return math.MinInt64
	case t.After(maxNanoTime):
		return math.MaxInt64
	}
	return t.UnixNano()
}

var (
	minNanoTime = time.Unix(0, math.MinInt64)
	maxNanoTime = time.Unix(0, math.MaxInt64)
)
