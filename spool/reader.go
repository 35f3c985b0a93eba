package spool

import (
	"errors"
	"fmt"
	"io"
	"math"
	"os"
)

// A Reader reads a live spool's committed records in order, from a position
// on: what a shipper sends. Only the committer writes segments, and only
// records before the committed end are read, so a reader never sees a batch
// that is still being written or that a failed commit is about to cut off.
// A Reader is used by one goroutine.
type Reader struct {
	s   *Spool
	seg *segmentReader
	pos Pos // where the next record starts
}

// NewReader returns a Reader of s from position from (the oldest record
// still in the spool if from is before it).
func (s *Spool) NewReader(from Pos) *Reader {
	return &Reader{s: s, pos: from}
}

// Pos returns the position of the next record.
func (r *Reader) Pos() Pos { return r.pos }

// Next returns the next committed record (valid until the following call)
// and the position after it, or ok false when the reader is at the
// committed end. An error that is damage in a segment can be handed to
// Quarantine.
func (r *Reader) Next() (rec []byte, end Pos, ok bool, err error) {
	committed, _ := r.s.Committed()
	for {
		if !r.pos.Less(committed) {
			return nil, r.pos, false, nil
		}
		if r.seg == nil || r.seg.id != r.pos.Segment {
			if err := r.open(committed); err != nil {
				return nil, r.pos, false, err
			}
			continue
		}
		// A segment before the committed one is complete: the commit that
		// rotated it is in the committed end too.
		limit := int64(math.MaxInt64)
		if r.pos.Segment == committed.Segment {
			limit = committed.Offset
		}
		r.seg.limit(limit)
		rec, err := r.seg.next()
		if err == io.EOF && r.pos.Segment < committed.Segment {
			r.seg.Close()
			r.seg = nil
			r.pos = Pos{r.pos.Segment + 1, 0}
			continue
		}
		if err != nil && err != io.EOF {
			// The failed read consumed bytes of the stream: reopen at the
			// record's start next time, so that the error comes back
			// instead of the record being skipped.
			r.seg.Close()
			r.seg = nil
		}
		if err == io.EOF || errors.Is(err, io.ErrUnexpectedEOF) {
			return nil, r.pos, false, &segmentReadError{r.pos.Segment, r.pos.Segment == committed.Segment,
				fmt.Errorf("segment %s ends at %d before the committed end %s", segmentName(r.pos.Segment), r.pos.Offset, committed)}
		}
		if err != nil {
			return nil, r.pos, false, &segmentReadError{r.pos.Segment, r.pos.Segment == committed.Segment,
				fmt.Errorf("segment %s: %w", segmentName(r.pos.Segment), err)}
		}
		r.pos.Offset = r.seg.off
		return rec, r.pos, true, nil
	}
}

// open opens the segment at r.pos, or the oldest one if r.pos is before it.
func (r *Reader) open(committed Pos) error {
	if r.seg != nil {
		r.seg.Close()
		r.seg = nil
	}
	if first := r.s.firstSegment(); r.pos.Segment < first {
		r.pos = Pos{first, 0}
	}
	sr, err := openSegment(r.s.dir, r.pos.Segment)
	if errors.Is(err, os.ErrNotExist) && r.pos.Segment < committed.Segment {
		r.s.log.Error("a spool segment vanished before it was shipped; skipping it", "segment", segmentName(r.pos.Segment))
		r.pos = Pos{r.pos.Segment + 1, 0}
		return nil
	}
	if err != nil {
		var pe *os.PathError
		if !errors.As(err, &pe) {
			err = &segmentReadError{r.pos.Segment, r.pos.Segment == committed.Segment, err} // a bad header or compressed stream
		}
		return err
	}
	if r.pos.Offset < sr.off {
		r.pos.Offset = sr.off
	}
	if err := sr.skipTo(r.pos.Offset); err != nil {
		sr.Close()
		return &segmentReadError{r.pos.Segment, r.pos.Segment == committed.Segment, err}
	}
	r.seg = sr
	return nil
}

// Close closes the segment the reader has open.
func (r *Reader) Close() {
	if r.seg != nil {
		r.seg.Close()
		r.seg = nil
	}
}

// segmentReadError is a committed record that could not be read: damage
// (see damage.go) in segment id, or the end of a segment before the
// committed end. Active says the segment is the one being written, which
// only the next start repairs.
type segmentReadError struct {
	id     uint64
	active bool
	err    error
}

func (e *segmentReadError) Error() string { return e.err.Error() }
func (e *segmentReadError) Unwrap() error { return e.err }

// Quarantine handles err, an error from Next. When it is damage in a segment
// the committer is done with, the spool quarantines the segment (its intact
// records kept, the damaged bytes saved beside it, a segment_damaged event
// recorded) and the reader goes on from the same record, in the segment's
// new layout: Quarantine reports true. It reports false for any other
// error, and for damage in the active segment, which only the next start
// repairs; it logs why.
func (r *Reader) Quarantine(err error) bool {
	var re *segmentReadError
	if !errors.As(err, &re) {
		return false
	}
	if re.active {
		r.s.log.Error("the spool's active segment cannot be read: it is repaired at the next start (restart the sidecar); reading waits", "err", err)
		return false
	}
	translate, qerr := r.s.quarantine(re.id)
	if qerr != nil {
		r.s.log.Error("cannot read a spool segment, nor quarantine it; retrying", "err", err, "quarantine", qerr)
		return false
	}
	if r.pos.Segment == re.id {
		r.pos.Offset = translate(r.pos.Offset)
	}
	r.Close()
	return true
}
