package spool

import (
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/auditproxy/auditproxy/internal/fsutil"
	"github.com/klauspost/compress/zstd"
)

// maintenanceLoop seals (compresses) segments the committer has finished
// with and deletes segments that retention or space allow, off the
// committer's path, until Close. (Preallocated space is filled by
// fillLoop, prealloc.go.)
func (s *Spool) maintenanceLoop() {
	defer close(s.maintDone)
	period := time.Minute
	if s.opts.Retention > 0 {
		period = min(period, max(s.opts.Retention/10, 10*time.Millisecond))
	}
	tick := time.NewTicker(period)
	defer tick.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-s.maint:
		case <-tick.C:
		}
		s.sealPending()
		s.reclaim(time.Now())
		s.rebaseTree()
	}
}

// rebaseTree drops the log's stored hashes that no proof needs any more,
// once that is worth a rewrite (auditlog.Log.Rebase).
func (s *Spool) rebaseTree() {
	if s.chain != nil {
		s.chain.Rebase()
	}
}

// sealPending compresses every segment queued for sealing.
func (s *Spool) sealPending() {
	for {
		s.stateMu.Lock()
		if len(s.sealQueue) == 0 {
			s.stateMu.Unlock()
			return
		}
		id := s.sealQueue[0]
		s.stateMu.Unlock()
		if s.opts.beforeSeal != nil {
			s.opts.beforeSeal(id)
		}
		err := s.seal(id)
		if errors.Is(err, errStopped) {
			return // resumes at the next open
		}
		// By value: while seal waited for the segment, quarantine may have
		// taken it off the queue (its replacement is sealed already), and
		// the queue's head is then another segment that still needs it.
		s.unqueueSeal(id)
		if err != nil {
			// The plain segment stays; it is as readable, only larger.
			s.log.Error("cannot compress a sealed spool segment; keeping it uncompressed", "segment", segmentName(id), "err", err)
		}
	}
}

// unqueueSeal takes segment id off the seal queue, if it is still there.
func (s *Spool) unqueueSeal(id uint64) {
	s.stateMu.Lock()
	defer s.stateMu.Unlock()
	for i, q := range s.sealQueue {
		if q == id {
			s.sealQueue = append(s.sealQueue[:i], s.sealQueue[i+1:]...)
			return
		}
	}
}

var errStopped = errors.New("spool closing")

// seal compresses segment id to NAME.seg.zst and removes the plain file once
// the compressed one is fsynced, renamed into place and checked to
// decompress to the same bytes. It compresses the segment up to its logical
// end: the preallocated space after it is not part of the segment.
func (s *Spool) seal(id uint64) error {
	s.segFiles.Lock()
	defer s.segFiles.Unlock()
	base := filepath.Join(s.dir, segmentName(id))
	if _, err := os.Stat(base + segmentExt); errors.Is(err, os.ErrNotExist) {
		if _, serr := os.Stat(base + sealedExt); serr == nil {
			return nil // quarantined meanwhile: its replacement is sealed
		}
	}
	src, err := os.Open(base + segmentExt)
	if err != nil {
		return err
	}
	defer src.Close()
	end, err := s.logicalEnd(id, src)
	if err != nil {
		return err
	}
	tmp := base + sealedExt + tmpExt
	dst, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	defer os.Remove(tmp) // a no-op after the rename
	// SpeedFastest: on 64 MB of spooled events it compressed at 714 MB/s to
	// ratio 5.71, SpeedDefault at 420 MB/s to 5.38; sealing runs on the
	// cores that serve requests.
	enc, err := zstd.NewWriter(dst, zstd.WithEncoderConcurrency(1), zstd.WithEncoderLevel(zstd.SpeedFastest))
	if err != nil {
		dst.Close()
		return err
	}
	plainCRC := crc32.New(crcTable)
	_, err = io.Copy(enc, io.TeeReader(stopReader{io.LimitReader(src, end), s.stop}, plainCRC))
	if cerr := enc.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = dst.Sync()
	}
	if cerr := dst.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	if err := checkCompressed(tmp, plainCRC.Sum32()); err != nil {
		return err
	}
	if err := os.Rename(tmp, base+sealedExt); err != nil {
		return err
	}
	if err := fsutil.SyncDir(s.dir); err != nil {
		return err
	}
	if err := os.Remove(base + segmentExt); err != nil {
		return err
	}
	fi, err := os.Stat(base + sealedExt)
	if err != nil {
		return err
	}
	s.stateMu.Lock()
	for i := range s.segs {
		if s.segs[i].id == id {
			s.used.Add(fi.Size() - s.segs[i].size)
			s.segs[i].sealed, s.segs[i].size = true, fi.Size()
		}
	}
	s.stateMu.Unlock()
	s.metrics.sealed.Inc()
	return nil
}

// logicalEnd returns where the records of plain segment id, open as f, end:
// known for a segment this run rotated, else where the zeros that the file
// ends with start (the frames the spool writes end with a closing brace).
func (s *Spool) logicalEnd(id uint64, f *os.File) (int64, error) {
	s.stateMu.Lock()
	var end int64
	for _, sg := range s.segs {
		if sg.id == id && !sg.sealed {
			end = sg.end
		}
	}
	s.stateMu.Unlock()
	if end > 0 {
		return end, nil
	}
	return fileContentEnd(f)
}

// checkCompressed decompresses path and compares its checksum with want.
func checkCompressed(path string, want uint32) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	dec, err := zstd.NewReader(f, zstd.WithDecoderConcurrency(1))
	if err != nil {
		return err
	}
	defer dec.Close()
	h := crc32.New(crcTable)
	if _, err := io.Copy(h, dec); err != nil {
		return fmt.Errorf("check compressed segment: %w", err)
	}
	if h.Sum32() != want {
		return errors.New("compressed segment does not decompress to the original bytes")
	}
	return nil
}

// stopReader fails with errStopped once stop is closed, so that a long
// compression does not hold up Close.
type stopReader struct {
	r    io.Reader
	stop <-chan struct{}
}

func (r stopReader) Read(p []byte) (int, error) {
	select {
	case <-r.stop:
		return 0, errStopped
	default:
	}
	return r.r.Read(p)
}

// reclaim deletes sealed segments, oldest first, that may go: with
// forwarding only acknowledged ones, and those either past retention or,
// while the spool is nearly full, to make room; without forwarding only past
// retention. Unacknowledged events are never deleted.
func (s *Spool) reclaim(now time.Time) {
	for {
		s.stateMu.Lock()
		if len(s.segs) < 2 {
			s.stateMu.Unlock()
			return
		}
		oldest := s.segs[0]
		acked := s.acked
		queued := len(s.sealQueue) > 0 && s.sealQueue[0] == oldest.id
		s.stateMu.Unlock()
		if queued || (s.opts.Forwarding && acked.Segment <= oldest.id) {
			return
		}
		name := segmentName(oldest.id) + segmentExt
		if oldest.sealed {
			name = segmentName(oldest.id) + sealedExt
		}
		path := filepath.Join(s.dir, name)
		reason := ""
		if s.opts.Retention > 0 {
			if fi, err := os.Stat(path); err == nil && now.Sub(fi.ModTime()) > s.opts.Retention {
				reason = "retention"
			}
		}
		if reason == "" && s.opts.Forwarding && s.totalBytes() >= s.opts.MaxBytes*9/10 {
			reason = "space"
		}
		if reason == "" {
			return
		}
		if s.chain != nil {
			// The stored hashes of the segment's events must be on disk
			// before the events go: a crash would otherwise need them.
			if err := s.chain.SyncHashes(); err != nil {
				why := fmt.Sprintf("the log's tree state, which a recomputation after a crash would need their events for, cannot be written and fsynced (%v)", err)
				if old := s.reclaimBlocked.Swap(&why); old == nil || *old != why {
					s.log.Error("cannot fsync the log's tree state; not deleting spool segments", "err", err)
				}
				return
			}
			s.reclaimBlocked.Store(nil)
		}
		s.segFiles.Lock()
		err := os.Remove(path)
		if errors.Is(err, os.ErrNotExist) && !oldest.sealed {
			// Quarantined meanwhile: the replacement is sealed.
			name = segmentName(oldest.id) + sealedExt
			path = filepath.Join(s.dir, name)
			s.stateMu.Lock()
			oldest = s.segs[0]
			s.stateMu.Unlock()
			err = os.Remove(path)
		}
		s.segFiles.Unlock()
		if err != nil {
			s.log.Error("cannot delete a spool segment", "segment", name, "err", err)
			return
		}
		s.stateMu.Lock()
		s.segs = s.segs[1:]
		s.used.Add(-oldest.size)
		s.stateMu.Unlock()
		s.metrics.deleted.WithLabelValues(reason).Inc()
		s.log.Info("deleted a spool segment", "segment", name, "reason", reason, "acknowledged", s.opts.Forwarding)
	}
}
