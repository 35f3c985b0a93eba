package spool

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/klauspost/compress/zstd"
	"github.com/valyala/fastjson"

	"github.com/auditproxy/auditproxy/audit"
	"github.com/auditproxy/auditproxy/auditlog"
	"github.com/auditproxy/auditproxy/internal/fsutil"
)

// errNotDamaged: a segment that failed to read scanned clean (the failure
// was elsewhere: an I/O error that passed), so nothing was quarantined.
var errNotDamaged = errors.New("the segment scans without damage")

// quarantine takes damaged segment id (one the committer is done with: not
// the active one) out of the way of readers without losing anything:
//
//   - the intact records it still yields (read past the damage, see
//     damage.go) become the segment: compressed, fsynced, checked, and
//     renamed into its place;
//   - the damaged file is kept beside it as NAME.damaged (a hard link made
//     before the replacement, so a crash at any point leaves the old file
//     or the new one in place, and the old one kept), never read again by
//     the spool, and counted in the spool's size; a .damaged file already
//     there from an earlier quarantine of the same segment is kept too;
//   - a segment_damaged event records what was lost, committed before the
//     replacement is renamed in: once the damaged file is out of the way
//     nothing else says what it lost, so a crash before that commit, or a
//     spool that cannot commit (closed, or its commits failing), leaves the
//     segment as it was, to be quarantined again (a crash after the commit
//     and before the rename records the damage twice, never not at all);
//   - the metric auditproxy_spool_segments_damaged_total counts it, and an
//     error is logged.
//
// It returns how offsets of the damaged segment map to the new one (a
// record's end to the same record's end): positions in it (the
// acknowledged one, a reader's) move with their records.
func (s *Spool) quarantine(id uint64) (func(int64) int64, error) {
	s.segFiles.Lock()
	defer s.segFiles.Unlock()
	if s.isClosed() {
		return nil, fmt.Errorf("segment %s is damaged; the spool is closed, so its segment_damaged event cannot be recorded: it is quarantined after the next start", segmentName(id))
	}
	s.stateMu.Lock()
	idx := -1
	for i, sg := range s.segs {
		if sg.id == id {
			idx = i
		}
	}
	last := len(s.segs) - 1
	s.stateMu.Unlock()
	switch {
	case idx < 0:
		return nil, fmt.Errorf("segment %s is no longer in the spool", segmentName(id))
	case idx == last:
		return nil, fmt.Errorf("segment %s is the active one: it is repaired at the next start", segmentName(id))
	}
	path, _ := segmentPath(s.dir, id)
	sv, err := salvageSegment(path, false)
	if err != nil {
		return nil, err
	}
	if len(sv.scan.damaged) == 0 {
		return nil, errNotDamaged
	}
	// The events just before and after the damage, where this segment does
	// not hold them: the neighbours' last and first.
	if d := &sv.scan.damaged[0]; d.Before == nil {
		d.Before = s.lastPlaceBefore(id)
		d.SetMissing()
	}
	if d := &sv.scan.damaged[len(sv.scan.damaged)-1]; d.After == nil {
		d.After = s.firstPlaceAfter(id)
		d.SetMissing()
	}

	base := filepath.Join(s.dir, segmentName(id))
	tmp := base + sealedExt + tmpExt
	if err := writeCompressed(tmp, sv.intactBytes()); err != nil {
		os.Remove(tmp)
		return nil, fmt.Errorf("write the intact records of damaged segment %s: %w", segmentName(id), err)
	}
	damagedPath, leftover, err := s.damagedPath(path)
	if err != nil {
		os.Remove(tmp)
		return nil, err
	}
	if err := os.Link(path, damagedPath); err != nil {
		os.Remove(tmp)
		return nil, fmt.Errorf("keep damaged segment %s aside: %w", segmentName(id), err)
	}
	s.otherBytes.Add(-leftover) // the same bytes, counted again below
	undo := func() {
		os.Remove(tmp)
		os.Remove(damagedPath) // a link: the damaged segment stays in place
		fsutil.SyncDir(s.dir)
	}
	if err := fsutil.SyncDir(s.dir); err != nil {
		undo()
		return nil, err
	}

	damaged := filepath.Base(damagedPath)
	details := audit.SegmentDamage{Segment: filepath.Base(base + sealedExt), SavedTo: damaged, RecordsKept: sv.records, Damaged: sv.scan.damaged}
	src := audit.Source{}
	if s.chain != nil {
		src = s.chain.Source()
	}
	ev, err := audit.NewOpsEvent(audit.TypeSegmentDamaged, details, src, time.Now())
	if err == nil {
		err = s.append(func(dst []byte) []byte { return append(dst, ev...) }, true)
	}
	if err != nil {
		undo()
		return nil, fmt.Errorf("segment %s is damaged, and its segment_damaged event cannot be committed (%w): it stays in place until it can", segmentName(id), err)
	}

	if err := os.Rename(tmp, base+sealedExt); err != nil {
		os.Remove(tmp)
		return nil, err
	}
	if path != base+sealedExt {
		if err := os.Remove(path); err != nil {
			return nil, err
		}
	}
	if err := fsutil.SyncDir(s.dir); err != nil {
		return nil, err
	}
	fi, err := os.Stat(base + sealedExt)
	if err != nil {
		return nil, err
	}
	var damagedSize int64
	if dfi, err := os.Stat(damagedPath); err == nil {
		damagedSize = dfi.Size()
	}
	s.stateMu.Lock()
	for i := range s.segs {
		if s.segs[i].id == id {
			s.used.Add(fi.Size() - s.segs[i].size)
			s.segs[i].sealed, s.segs[i].size = true, fi.Size()
		}
	}
	if s.acked.Segment == id {
		s.acked.Offset = sv.translate(s.acked.Offset)
	}
	s.stateMu.Unlock()
	s.unqueueSeal(id) // its replacement is sealed
	s.otherBytes.Add(damagedSize)
	s.metrics.damaged.Inc()
	s.log.Error("a spool segment is damaged: its intact records are kept and shipped, the damaged file is kept aside, and a segment_damaged event records what was lost",
		"segment", details.Segment, "saved_to", damaged, "records_kept", sv.records, "damaged", sv.scan.damaged)
	return sv.translate, nil
}

// damagedPath returns the name the damaged segment file at path is kept
// under: path.damaged, or, when an earlier quarantine of the same segment
// (its replacement damaged in turn) kept a file there, the first free
// path.N.damaged. A path.damaged that is path itself (a link left by an
// attempt a crash interrupted) is removed and reused; leftover is its size.
func (s *Spool) damagedPath(path string) (_ string, leftover int64, _ error) {
	fi, err := os.Stat(path)
	if err != nil {
		return "", 0, err
	}
	for n := 1; ; n++ {
		p := path + damagedExt
		if n > 1 {
			p = fmt.Sprintf("%s.%d%s", path, n, damagedExt)
		}
		di, err := os.Stat(p)
		if errors.Is(err, os.ErrNotExist) {
			return p, 0, nil
		}
		if err != nil {
			return "", 0, err
		}
		if os.SameFile(fi, di) {
			if err := os.Remove(p); err != nil {
				return "", 0, err
			}
			return p, di.Size(), nil
		}
	}
}

// firstPlaceAfter returns the log place of the first intact record of the
// segment after id that has one, nil if none.
func (s *Spool) firstPlaceAfter(id uint64) *audit.Place {
	s.stateMu.Lock()
	var next uint64
	for _, sg := range s.segs {
		if sg.id > id {
			next = sg.id
			break
		}
	}
	s.stateMu.Unlock()
	if next == 0 {
		return nil
	}
	path, _ := segmentPath(s.dir, next)
	var p fastjson.Parser
	var first *audit.Place
	errFound := errors.New("found")
	scanSegmentFile(path, true, func(_ int64, rec []byte) error {
		if first = auditlog.PlaceOf(&p, rec); first != nil {
			return errFound
		}
		return nil
	})
	return first
}

// writeCompressed writes data to path as a sealed segment (one zstd
// stream), fsyncs it and checks that it decompresses to data.
func writeCompressed(path string, data []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	enc, err := zstd.NewWriter(f, zstd.WithEncoderConcurrency(1), zstd.WithEncoderLevel(zstd.SpeedFastest))
	if err != nil {
		f.Close()
		return err
	}
	_, err = enc.Write(data)
	if cerr := enc.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	raw, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	if got, err := decompress(raw); err != nil || !bytes.Equal(got, data) {
		return fmt.Errorf("the compressed segment does not decompress to its records (%v)", err)
	}
	return nil
}
