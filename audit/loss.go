package audit

import "fmt"

// The members of log_started and segment_damaged events that say what
// committed data a spool found damaged or lost, and where it was in the log.

// ByteRange is a range of a segment's uncompressed bytes, [Start, End).
// End is -1 when the damage runs to a point the reader cannot reach: the
// rest of a compressed stream that cannot be decoded.
type ByteRange struct {
	Start int64 `json:"offset"`
	End   int64 `json:"end"`
}

// String writes r as START-END.
func (r ByteRange) String() string {
	if r.End < 0 {
		return fmt.Sprintf("%d-(end, undecodable)", r.Start)
	}
	return fmt.Sprintf("%d-%d", r.Start, r.End)
}

// Place is an event's place in its log.
type Place struct {
	Origin string `json:"origin"`
	Seq    int64  `json:"seq"`
}

// SeqRange is a range of seqs of one origin, First to Last inclusive.
type SeqRange struct {
	Origin string `json:"origin"`
	First  int64  `json:"first"`
	Last   int64  `json:"last"`
}

// DamagedRange is one damaged range and what it cost: the intact events
// around it and, when both are in one origin, the seqs between them, which
// are the events lost (as far as the records around the damage say).
type DamagedRange struct {
	ByteRange
	Before  *Place    `json:"last_intact_before"`
	After   *Place    `json:"first_intact_after"`
	Missing *SeqRange `json:"missing_seqs"`
}

// SetMissing fills Missing from Before and After.
func (d *DamagedRange) SetMissing() {
	d.Missing = nil
	if d.Before != nil && d.After != nil && d.Before.Origin == d.After.Origin && d.After.Seq > d.Before.Seq+1 {
		d.Missing = &SeqRange{d.Before.Origin, d.Before.Seq + 1, d.After.Seq - 1}
	}
}

// LostRange is committed data a start found damaged in the active segment:
// the byte range (of the segment as found), the intact events around it,
// the seqs missing between them, and where the bytes were saved.
type LostRange struct {
	Segment string `json:"segment"`
	DamagedRange
	Bytes   int64  `json:"bytes"`
	SavedTo string `json:"saved_to"`
}

// SegmentDamage is the details of a segment_damaged event.
type SegmentDamage struct {
	Segment     string         `json:"segment"`
	SavedTo     string         `json:"saved_to"`
	RecordsKept int            `json:"records_kept"`
	Damaged     []DamagedRange `json:"damaged"`
}
