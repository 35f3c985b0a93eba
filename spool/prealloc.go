package spool

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/auditproxy/auditproxy/internal/fsutil"
)

// Preallocated segments (issue #16). A commit writes its records and waits
// for them to be durable; with DurabilitySync every answer waits for it.
// A commit appended to the segment used to grow the file, so its fsync
// also journalled the inode (the new size, new blocks). Measured on the
// project's VM (ext4, bench/RESULTS.md, issue #16), per commit of one
// 1 KiB record, medians: append+fsync 241 us, append+fdatasync 235 us (the
// size is metadata fdatasync must write too), a file preallocated with
// fallocate(2) and written in place + fdatasync 189 us, a file
// preallocated by writing zeros + fdatasync 190 us. With 8 writers (4
// records a commit): 280, 288, 261 and 206 us a commit. Writing into an
// fallocated ("unwritten") extent converts it, a metadata change that
// fdatasync journals: every commit that reaches a new block pays it, every
// commit does once commits are larger than a block. Over written zeros a
// commit writes data only.
//
// So, as etcd's WAL does, and further:
//
//   - A segment is preallocated when it is created (fallocate:
//     preallocSize, the whole segment up to 64 MiB; a longer one is
//     extended by that much ahead of the write position), and commits
//     write at the logical end (pwrite) and fdatasync (Spool.sync).
//   - fillLoop zero-fills the active segment's preallocated space ahead of
//     the commits, never over what they wrote (fillState), in paced steps:
//     writing 64 MiB of zeros at once stalled concurrent commits by up to
//     60 ms; steps of 256 KiB, each fdatasynced, with a 2 ms pause, cost
//     them little at the median (about 0.8 s for 64 MiB).
//   - fillLoop also prepares the next segment once the active one is half
//     full (or half its age): created as NAME.tmp, its header written,
//     fallocated, zero-filled the same way, fsynced, renamed to
//     preparedName. Rotation renames it to the new segment's name and
//     fsyncs the directory: no creation, header, allocation or file fsync
//     on the commit path, and the new segment is all written zeros.
//   - The zero bytes after a segment's last frame are unwritten space
//     (segment.go): every reader stops there, sealing cuts them off, a
//     clean Close truncates the active segment to its records and removes
//     the prepared file, so a stopped spool's files are what the previous
//     release wrote.
//   - Space: a preallocated file counts with its whole size against
//     MaxBytes (used), and is not made where it would take the spool past
//     nine tenths of MaxBytes (where reclaim starts deleting) or the
//     filesystem below MinFreeBytes: the segment then grows as it is
//     written, as before.
const (
	// preparedName is the next segment, prepared ahead: header and
	// zeros. It holds no record: rotation renames it to a segment's name
	// before the first is written to it.
	preparedName = "next" + segmentExt + ".prepared"
	// preallocStep bounds one preallocation.
	preallocStep = 64 << 20
	// zeroFillStep and zeroFillPause pace the zero-filling of the
	// prepared segment: each step is written and fdatasynced, then the
	// disk is left to the commits for a pause (64 MiB: about 0.8 s).
	zeroFillStep  = 256 << 10
	zeroFillPause = 2 * time.Millisecond
)

// preallocSize is how much of a segment is allocated when it is created.
func (s *Spool) preallocSize() int64 { return min(s.opts.SegmentMaxBytes, preallocStep) }

// roomFor reports whether n more bytes may be preallocated: not past nine
// tenths of MaxBytes (where reclaim starts deleting for space) nor below
// the free-space reserve as last read.
func (s *Spool) roomFor(n int64) bool {
	if s.totalBytes()+n > s.opts.MaxBytes/10*9 {
		return false
	}
	free := s.free.Load()
	return free < 0 || s.opts.MinFreeBytes <= 0 || free-n >= s.opts.MinFreeBytes
}

// preallocate extends f from cur bytes to target, where there is room, and
// returns its length after (cur where nothing was done). A failure is not
// an error: the file grows as it is written, as without preallocation.
func (s *Spool) preallocate(f *os.File, cur, target int64) int64 {
	if target <= cur || s.noPrealloc.Load() || !s.roomFor(target-cur) {
		return cur
	}
	err := fsutil.Preallocate(f, target)
	if err == nil {
		return target
	}
	if errors.Is(err, errors.ErrUnsupported) {
		s.noPrealloc.Store(true) // not tried again
		return cur
	}
	s.log.Warn("cannot preallocate a spool segment; it grows as it is written", "err", err)
	if fi, serr := f.Stat(); serr == nil {
		return max(cur, fi.Size()) // a failed fallocate may have allocated part
	}
	return cur
}

// setActiveAlloc records that the active segment's file is n bytes long.
// Committer only.
func (s *Spool) setActiveAlloc(n int64) {
	if n == s.activeAlloc {
		return
	}
	s.fill.mu.Lock()
	s.fill.limit = n
	s.fill.zeroed = min(s.fill.zeroed, n)
	s.fill.mu.Unlock()
	if n > s.activeAlloc {
		s.kickFill()
	}
	s.used.Add(n - s.activeAlloc)
	s.activeAlloc = n
	s.stateMu.Lock()
	s.segs[len(s.segs)-1].size = n
	s.stateMu.Unlock()
}

// extendActive preallocates another step of the active segment before a
// commit that ends at end would pass its allocation, as long as the segment
// is below SegmentMaxBytes (longer than preallocStep).
// A preallocation that fails is not tried again for this segment (a full
// disk would fail it at every commit); one skipped for want of room is
// tried at the next commit (a cheap check).
func (s *Spool) extendActive(end int64) {
	if end <= s.activeAlloc || s.activeAlloc >= s.opts.SegmentMaxBytes || s.noExtend {
		return
	}
	target := min(s.activeAlloc+preallocStep, s.opts.SegmentMaxBytes)
	if target < end || !s.roomFor(target-s.activeAlloc) {
		return // a commit larger than the step: the write extends the file
	}
	n := s.preallocate(s.active, s.activeAlloc, target)
	s.noExtend = n < target
	s.setActiveAlloc(n)
}

// askPrepare asks the maintenance goroutine for the next segment once the
// active one is half full or half its age. Committer only.
func (s *Spool) askPrepare() {
	if s.prepAsked || s.opts.noPrepare {
		return
	}
	if s.activeSize >= s.opts.SegmentMaxBytes/2 || time.Since(s.activeOpened) >= s.opts.SegmentMaxAge/2 {
		s.prepAsked = true
		s.prepWanted.Store(true)
		s.kickFill()
	}
}

// prepareNext prepares the next segment when one was asked for and none is
// ready. fillLoop only. A failure leaves it asked for (tried
// again at the next wake); rotation meanwhile creates the segment itself.
func (s *Spool) prepareNext() {
	if !s.prepWanted.Swap(false) {
		return
	}
	s.prepMu.Lock()
	ready := s.prepSize > 0
	s.prepMu.Unlock()
	if ready {
		return
	}
	size := s.preallocSize()
	if !s.roomFor(size) {
		s.prepWanted.Store(true)
		return
	}
	err := s.writePrepared(size)
	if errors.Is(err, errStopped) {
		return
	}
	if err != nil {
		s.prepWanted.Store(true)
		if !s.prepFailed {
			s.log.Warn("cannot prepare the next spool segment ahead; rotation creates it itself", "err", err)
		}
		s.prepFailed = true
		return
	}
	s.prepFailed = false
}

// fillState is what fillLoop zero-fills of the active segment: from
// max(zeroed, written) to limit. The committer writes records, and fillLoop
// zeros, under mu, and zeros only past written: never over a record.
type fillState struct {
	mu      sync.Mutex
	id      uint64 // the active segment
	written int64  // the end of what the committer wrote into it
	zeroed  int64  // how far fillLoop zero-filled it (or it was, prepared)
	limit   int64  // its allocated length
}

func (s *Spool) kickFill() {
	select {
	case s.fillKick <- struct{}{}:
	default:
	}
}

// fillLoop prepares the next segment when the committer asks for it, and
// zero-fills the active segment's preallocated space ahead of the commits
// (a segment created at open or by rotation itself is only fallocated: its
// first commits into each block journal an extent conversion), until Close.
func (s *Spool) fillLoop() {
	defer close(s.fillDone)
	for {
		select {
		case <-s.stop:
			return
		case <-s.fillKick:
		}
		s.prepareNext()
		if err := s.fillActive(); err != nil && !errors.Is(err, errStopped) {
			s.log.Warn("cannot zero-fill the spool's active segment ahead of its commits; they write metadata as well", "err", err)
		}
	}
}

// fillActive zero-fills the active segment from where it is written or
// filled to its allocated length, in paced steps, through a file of its own
// (the committer closes its file at rotation).
func (s *Spool) fillActive() error {
	var f *os.File
	var fid uint64
	defer func() {
		if f != nil {
			f.Close()
		}
	}()
	zeros := make([]byte, zeroFillStep)
	var pause *time.Timer
	defer stopTimer(&pause)
	for {
		s.fill.mu.Lock()
		off, limit := max(s.fill.zeroed, s.fill.written), s.fill.limit
		if off >= limit {
			s.fill.mu.Unlock()
			return nil
		}
		var err error
		if f == nil || fid != s.fill.id {
			if f != nil {
				f.Close()
			}
			fid = s.fill.id
			f, err = os.OpenFile(filepath.Join(s.dir, segmentName(fid)+segmentExt), os.O_WRONLY, 0)
		}
		n := min(int64(len(zeros)), limit-off)
		if err == nil {
			_, err = f.WriteAt(zeros[:n], off)
		}
		if err == nil {
			s.fill.zeroed = off + n
		}
		s.fill.mu.Unlock()
		if err == nil {
			err = fsutil.Fdatasync(f)
		}
		if err != nil {
			return err
		}
		if !s.pauseFill(&pause) {
			return errStopped
		}
	}
}

// writePrepared writes the prepared segment (see above) and makes it
// ready.
func (s *Spool) writePrepared(size int64) error {
	tmp := filepath.Join(s.dir, preparedName+tmpExt)
	f, err := os.OpenFile(tmp, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	fail := func(err error) error {
		f.Close()
		os.Remove(tmp)
		return err
	}
	if _, err := f.WriteAt([]byte(segmentMagic), 0); err != nil {
		return fail(err)
	}
	if err := fsutil.Preallocate(f, size); err != nil && !errors.Is(err, errors.ErrUnsupported) {
		return fail(err)
	}
	if err := s.zeroFill(f, int64(len(segmentMagic)), size); err != nil {
		return fail(err)
	}
	sync := s.opts.prepareSync
	if sync == nil {
		sync = (*os.File).Sync
	}
	if err := sync(f); err != nil {
		return fail(err)
	}
	if err := f.Close(); err != nil {
		os.Remove(tmp)
		return err
	}
	// Under prepMu, so that the rename never meets rotation's.
	s.prepMu.Lock()
	err = os.Rename(tmp, filepath.Join(s.dir, preparedName))
	if err == nil {
		s.used.Add(size)
		s.prepSize = size
	}
	s.prepMu.Unlock()
	if err != nil {
		os.Remove(tmp)
		return err
	}
	// Rotation fsyncs the directory after its own rename; this one
	// matters only to keep the file over a crash, and recovery takes it
	// over or not.
	fsutil.SyncDir(s.dir)
	return nil
}

// zeroFill writes zeros over f from from to to, in paced steps (see above),
// until the spool stops.
func (s *Spool) zeroFill(f *os.File, from, to int64) error {
	zeros := make([]byte, zeroFillStep)
	var pause *time.Timer
	defer stopTimer(&pause)
	for off := from; off < to; {
		n := min(int64(len(zeros)), to-off)
		if _, err := f.WriteAt(zeros[:n], off); err != nil {
			return err
		}
		if err := fsutil.Fdatasync(f); err != nil {
			return err
		}
		off += n
		if off >= to {
			break
		}
		if !s.pauseFill(&pause) {
			return errStopped
		}
	}
	return nil
}

// startPrepared makes the prepared segment the active one, as segment id:
// renamed to its name, the directory fsynced. It reports false when none
// is ready, or a file is in the way (createSegment deals with that).
// Committer only.
func (s *Spool) startPrepared(id uint64) (bool, error) {
	name := segmentName(id) + segmentExt
	path := filepath.Join(s.dir, name)
	s.prepMu.Lock()
	size := s.prepSize
	if size == 0 {
		s.prepMu.Unlock()
		return false, nil
	}
	if _, err := os.Lstat(path); !errors.Is(err, os.ErrNotExist) {
		s.prepMu.Unlock()
		return false, nil
	}
	err := os.Rename(filepath.Join(s.dir, preparedName), path)
	if err == nil || errors.Is(err, os.ErrNotExist) {
		s.prepSize = 0
	}
	s.prepMu.Unlock()
	if errors.Is(err, os.ErrNotExist) {
		s.used.Add(-size) // gone (removed by hand?): not ours to count
		return false, nil
	}
	if err != nil {
		return false, nil
	}
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err == nil {
		err = fsutil.SyncDir(s.dir)
	}
	if err != nil {
		// It holds no record: removed, as createSegment removes a segment
		// it could not finish.
		if f != nil {
			f.Close()
		}
		if rerr := os.Remove(path); rerr == nil {
			fsutil.SyncDir(s.dir)
		}
		s.used.Add(-size)
		return false, fmt.Errorf("start the prepared segment as %s: %w", name, err)
	}
	s.active, s.activeID, s.activeSize, s.activeAlloc = f, id, int64(len(segmentMagic)), size
	return true, nil
}

// adoptPrepared takes over a prepared segment a previous run left (a
// crash, or a stop before its rotation): it holds no record. One whose
// header is wrong is removed. At open, before the goroutines start.
func (s *Spool) adoptPrepared() error {
	path := filepath.Join(s.dir, preparedName)
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	defer f.Close()
	var head [len(segmentMagic)]byte
	_, rerr := io.ReadFull(f, head[:])
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	if rerr != nil || string(head[:]) != segmentMagic {
		s.log.Warn("removing a prepared spool segment whose header is wrong (it never held records)", "file", path)
		return os.Remove(path)
	}
	s.prepSize = fi.Size()
	return nil
}

// dropPrepared removes the prepared segment, if any. After the goroutines
// stopped.
func (s *Spool) dropPrepared() {
	s.prepMu.Lock()
	size := s.prepSize
	s.prepSize = 0
	s.prepMu.Unlock()
	if size > 0 {
		os.Remove(filepath.Join(s.dir, preparedName))
		s.used.Add(-size)
	}
}

// pauseFill leaves the disk to the commits for zeroFillPause between two
// steps of zeros, on one timer made at the first pause (*t); it reports
// false when the spool stops meanwhile.
func (s *Spool) pauseFill(t **time.Timer) bool {
	if *t == nil {
		*t = time.NewTimer(zeroFillPause)
	} else {
		(*t).Reset(zeroFillPause)
	}
	select {
	case <-s.stop:
		return false
	case <-(*t).C:
		return true
	}
}

func stopTimer(t **time.Timer) {
	if *t != nil {
		(*t).Stop()
	}
}
