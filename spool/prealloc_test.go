package spool

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/auditproxy/auditproxy/audit"
	"github.com/auditproxy/auditproxy/internal/fsutil"
	"github.com/auditproxy/auditproxy/internal/testutil"
)

// preparedReady reports whether the next segment is prepared.
func preparedReady(s *Spool) bool {
	s.prepMu.Lock()
	defer s.prepMu.Unlock()
	return s.prepSize > 0
}

// fileSize returns the length of the file at path, -1 if it is missing.
func fileSize(t *testing.T, path string) int64 {
	t.Helper()
	fi, err := os.Stat(path)
	if errors.Is(err, os.ErrNotExist) {
		return -1
	}
	if err != nil {
		t.Fatal(err)
	}
	return fi.Size()
}

// checkUsed compares what the spool counts for its segments and prepared
// segment with their files on disk (once nothing is being sealed).
func checkUsed(t *testing.T, s *Spool) {
	t.Helper()
	testutil.WaitFor(t, "sealing", func() bool {
		s.stateMu.Lock()
		defer s.stateMu.Unlock()
		return len(s.sealQueue) == 0
	})
	entries, err := os.ReadDir(s.dir)
	if err != nil {
		t.Fatal(err)
	}
	var onDisk int64
	for _, e := range entries {
		if IsSegmentFile(e.Name()) || e.Name() == preparedName {
			fi, _ := e.Info()
			onDisk += fi.Size()
		}
	}
	if used := s.used.Load(); used != onDisk {
		t.Errorf("the spool counts %d bytes of segments, %d are on disk", used, onDisk)
	}
}

// segmentBytes returns a segment of events i from first to last-1, as the
// spool writes it (without a log).
func segmentBytes(first, last int) []byte {
	b := []byte(segmentMagic)
	for i := first; i < last; i++ {
		b = appendFrame(b, testutil.Event(i))
	}
	return b
}

// TestCommitsUseFdatasync: a commit's sync is fdatasync (see prealloc.go),
// through the hook that the fault tests replace.
func TestCommitsUseFdatasync(t *testing.T) {
	s := openTestSpool(t, t.TempDir(), Options{})
	if reflect.ValueOf(s.sync).Pointer() != reflect.ValueOf(fsutil.Fdatasync).Pointer() {
		t.Error("the commit's sync is not fsutil.Fdatasync")
	}
}

// TestCrashWithAPreallocatedTail: the active segment is preallocated to
// SegmentMaxBytes; a kill -9 leaves it so, zeros after its records. The
// next start keeps every committed record, cuts nothing, reports no damage
// nor loss, continues after the last record, and a clean stop cuts the file
// to its records.
func TestCrashWithAPreallocatedTail(t *testing.T) {
	dir := t.TempDir()
	s := openTestSpool(t, dir, Options{}) // the default 64 MiB segment
	const n = 20
	for i := range n {
		if err := s.Append(testutil.Event(i)); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.SaveState(); err != nil { // written up to the last record
		t.Fatal(err)
	}
	seg := filepath.Join(DirName, segmentName(1)+segmentExt)
	records := int64(len(segmentBytes(0, n)))
	if size := fileSize(t, filepath.Join(dir, seg)); size != 64<<20 {
		t.Fatalf("the active segment is %d bytes, want it preallocated to 64 MiB (%d of records)", size, records)
	}
	if got := s.totalBytes(); got < 64<<20 {
		t.Errorf("the spool counts %d bytes, less than its preallocated segment", got)
	}
	image := crashImage(t, dir) // kill -9

	// Without its state file the spool counts what it resends: the
	// records, not the preallocated space.
	noState := crashImage(t, dir)
	os.Remove(filepath.Join(noState, DirName, stateFileName))
	if s3 := openTestSpool(t, noState, Options{Forwarding: true}); s3.Recovery.Resend != n || s3.Recovery.StateLost == "" || s3.Recovery.RecordsCut != 0 {
		t.Errorf("recovery without the state file: %+v; want %d events to resend", s3.Recovery, n)
	}

	if ids, st := exportIDs(t, image); len(ids) != n || st.TornBytes != 0 {
		t.Errorf("export of the crashed spool: %d events, %+v; want %d, nothing torn", len(ids), st, n)
	}
	var logs testutil.LogBuffer
	s2 := openTestSpool(t, image, Options{Logger: logs.Logger()})
	if r := s2.Recovery; r.RecordsCut != 0 || r.BytesCut != 0 || len(r.Lost) != 0 || r.CommittedLost || r.StateLost != "" || r.Resumed != (Pos{1, records}) {
		t.Errorf("recovery after a crash with a preallocated tail: %+v; want nothing cut or lost, resumed at 1:%d", r, records)
	}
	if saved, _ := filepath.Glob(filepath.Join(image, DirName, "*"+quarantineExt)); len(saved) != 0 || len(logs.Lines("torn")) != 0 {
		t.Errorf("bytes saved as damage: %v; logged: %q", saved, logs.Lines("torn"))
	}
	checkUsed(t, s2)
	if err := s2.Append(testutil.Event(n)); err != nil {
		t.Fatal(err)
	}
	if err := s2.Close(); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(filepath.Join(image, seg))
	if err != nil {
		t.Fatal(err)
	}
	if want := segmentBytes(0, n+1); !bytes.Equal(data, want) {
		t.Errorf("after a clean stop the segment is %d bytes, want its %d bytes of records exactly", len(data), len(want))
	}
}

// TestPreallocatedTailIsNeitherShippedNorSealed: a segment rotated before
// it was full (by age) keeps its preallocated space until it is sealed.
// Readers of it (the shipper's, Export, ReadSegmentFile) read its records
// and stop at that space without error, and the sealed segment holds
// exactly its records: what the previous release sealed.
func TestPreallocatedTailIsNeitherShippedNorSealed(t *testing.T) {
	dir := t.TempDir()
	release := make(chan struct{})
	var once sync.Once
	open := func() { once.Do(func() { close(release) }) }
	defer open()
	s := openTestSpool(t, dir, Options{SegmentMaxBytes: 64 << 10, SegmentMaxAge: 150 * time.Millisecond,
		beforeSeal: func(uint64) { <-release }})
	for i := range 5 {
		if err := s.Append(testutil.Event(i)); err != nil {
			t.Fatal(err)
		}
	}
	testutil.WaitFor(t, "rotation by age", func() bool { c, _ := s.Committed(); return c.Segment == 2 })
	for i := 5; i < 10; i++ {
		if err := s.Append(testutil.Event(i)); err != nil {
			t.Fatal(err)
		}
	}
	plain := filepath.Join(s.dir, segmentName(1)+segmentExt)
	want := segmentBytes(0, 5)
	data, err := os.ReadFile(plain)
	if err != nil {
		t.Fatal(err)
	}
	if len(data) != 64<<10 || !bytes.Equal(data[:len(want)], want) {
		t.Fatalf("the rotated segment is %d bytes, want its records and preallocated space (64 KiB)", len(data))
	}

	r := s.NewReader(Pos{})
	var got []string
	for {
		rec, _, ok, err := r.Next()
		if err != nil {
			t.Fatalf("reader: %v", err)
		}
		if !ok {
			break
		}
		got = append(got, string(rec))
	}
	r.Close()
	if len(got) != 10 || got[4] != string(testutil.Event(4)) || got[5] != string(testutil.Event(5)) {
		t.Errorf("the reader read %d records, want the 10 committed", len(got))
	}
	if ids, st := exportIDs(t, dir); len(ids) != 10 || st.TornBytes != 0 || st.Segments < 2 {
		t.Errorf("export: %d events, %+v", len(ids), st)
	}
	var recs int
	if torn, err := ReadSegmentFile(plain, func([]byte) error { recs++; return nil }); err != nil || torn != 0 || recs != 5 {
		t.Errorf("ReadSegmentFile of the rotated segment: %d records, torn %d, %v; want 5, 0, nil", recs, torn, err)
	}

	open()
	testutil.WaitFor(t, "the seal", func() bool { return len(spoolFiles(t, s, segmentName(1)+sealedExt)) == 1 })
	sealed, err := os.ReadFile(filepath.Join(s.dir, segmentName(1)+sealedExt))
	if err != nil {
		t.Fatal(err)
	}
	if got, err := decompress(sealed); err != nil || !bytes.Equal(got, want) {
		t.Errorf("the sealed segment decompresses to %d bytes (%v), want its %d bytes of records exactly", len(got), err, len(want))
	}
	checkUsed(t, s)
}

// TestSealCutsAtTheLogicalEndAfterACrash: a rotated segment that a crash
// left unsealed, with its preallocated space, is sealed at the next start
// to exactly its records (the end is not known: found where the zeros
// start).
func TestSealCutsAtTheLogicalEndAfterACrash(t *testing.T) {
	dir := t.TempDir()
	spoolDir := filepath.Join(dir, DirName)
	os.MkdirAll(spoolDir, 0o700)
	want := segmentBytes(0, 5)
	os.WriteFile(filepath.Join(spoolDir, segmentName(1)+segmentExt), append(bytes.Clone(want), make([]byte, 10000)...), 0o600)
	os.WriteFile(filepath.Join(spoolDir, segmentName(2)+segmentExt), append(segmentBytes(5, 7), make([]byte, 5000)...), 0o600)
	s := openTestSpool(t, dir, Options{})
	s.wakeMaintenance() // the seal queued at open waits for the next wake
	testutil.WaitFor(t, "the seal", func() bool { return len(spoolFiles(t, s, segmentName(1)+sealedExt)) == 1 })
	sealed, _ := os.ReadFile(filepath.Join(s.dir, segmentName(1)+sealedExt))
	if got, err := decompress(sealed); err != nil || !bytes.Equal(got, want) {
		t.Errorf("the sealed segment decompresses to %d bytes (%v), want its %d bytes of records exactly", len(got), err, len(want))
	}
	if r := s.Recovery; r.RecordsCut != 0 || len(r.Lost) != 0 {
		t.Errorf("recovery: %+v", r)
	}
	checkUsed(t, s)
	s.Close()
	if ids, st := exportIDs(t, dir); len(ids) != 7 || st.TornBytes != 0 {
		t.Errorf("export: %d events, %+v", len(ids), st)
	}
}

// TestZerosBeforeAFrameAreDamage: zero bytes are unwritten space only when
// nothing but zeros follows them. Zeros with an intact record after them
// are damage, in the active segment (repaired at the next start, the loss
// reported) and in another (read past, named by Export).
func TestZerosBeforeAFrameAreDamage(t *testing.T) {
	zeros := make([]byte, 100)
	first := segmentBytes(0, 2)
	data := append(append(bytes.Clone(first), zeros...), appendFrame(nil, testutil.Event(2))...)
	data = append(data, make([]byte, 4096)...) // and preallocated space

	t.Run("active segment", func(t *testing.T) {
		dir := t.TempDir()
		os.MkdirAll(filepath.Join(dir, DirName), 0o700)
		os.WriteFile(filepath.Join(dir, DirName, segmentName(1)+segmentExt), data, 0o600)
		s := openTestSpool(t, dir, Options{})
		want := audit.ByteRange{Start: int64(len(first)), End: int64(len(first) + len(zeros))}
		if r := s.Recovery; len(r.Lost) != 1 || r.Lost[0].ByteRange != want || r.RecordsCut != 0 {
			t.Fatalf("recovery: %+v; want bytes %v lost, nothing cut", r, want)
		}
		s.Close()
		if ids, _ := exportIDs(t, dir); strings.Join(ids, ",") != "ev-000000,ev-000001,ev-000002" {
			t.Errorf("after the repair: %v", ids)
		}
	})
	t.Run("rotated segment", func(t *testing.T) {
		dir := t.TempDir()
		os.MkdirAll(filepath.Join(dir, DirName), 0o700)
		os.WriteFile(filepath.Join(dir, DirName, segmentName(1)+segmentExt), data, 0o600)
		os.WriteFile(filepath.Join(dir, DirName, segmentName(2)+segmentExt), segmentBytes(3, 4), 0o600)
		var out bytes.Buffer
		st, err := Export(dir, &out)
		var de *ExportDamageError
		if !errors.As(err, &de) || len(de.Damaged) != 1 || len(de.Damaged[0].Ranges) != 1 ||
			de.Damaged[0].Ranges[0] != (audit.ByteRange{Start: int64(len(first)), End: int64(len(first) + len(zeros))}) || st.Events != 4 {
			t.Errorf("export: %+v, %v; want the 100 zeros before a record named as damage, and 4 events", st, err)
		}
	})
}

// TestRotationUsesThePreparedSegment: once the active segment is half full
// the next one is prepared (header, zeros, fsynced) under its own name, and
// rotation makes that file the new segment.
func TestRotationUsesThePreparedSegment(t *testing.T) {
	dir := t.TempDir()
	var logs testutil.LogBuffer
	s := openTestSpool(t, dir, Options{SegmentMaxBytes: 8 << 10, Logger: logs.Logger()})
	prepared := filepath.Join(s.dir, preparedName)
	i := 0
	for ; ; i++ {
		if err := s.Append(testutil.Event(i)); err != nil {
			t.Fatal(err)
		}
		if c, _ := s.Committed(); c.Offset >= 4<<10 {
			break
		}
	}
	testutil.WaitFor(t, "the next segment prepared", func() bool { return preparedReady(s) })
	data, err := os.ReadFile(prepared)
	if err != nil {
		t.Fatal(err)
	}
	if len(data) != 8<<10 || string(data[:len(segmentMagic)]) != segmentMagic || zeroTailStart(data) != len(segmentMagic) {
		t.Fatalf("the prepared segment is %d bytes, want a header and zeros, 8 KiB", len(data))
	}
	before, _ := os.Stat(prepared)
	if got := otherFileBytes(s.dir); got != 0 {
		t.Errorf("%d bytes counted as other files; the prepared segment counts with the segments", got)
	}
	checkUsed(t, s)
	for c, _ := s.Committed(); c.Segment == 1; c, _ = s.Committed() {
		i++
		if err := s.Append(testutil.Event(i)); err != nil {
			t.Fatal(err)
		}
	}
	after, err := os.Stat(filepath.Join(s.dir, segmentName(2)+segmentExt))
	if err != nil || !os.SameFile(before, after) {
		t.Fatalf("segment 2 (%v) is not the prepared file", err)
	}
	if len(logs.Lines("cannot")) != 0 {
		t.Errorf("logged: %q", logs.Lines("cannot"))
	}
	checkUsed(t, s)
	s.Close()
	if _, err := os.Stat(prepared); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a prepared segment left after Close: %v", err)
	}
	if ids, _ := exportIDs(t, dir); len(ids) != i+1 {
		t.Errorf("%d events exported, want %d", len(ids), i+1)
	}
}

// TestPreparedSegmentLeftByACrashIsTakenOver: a crash leaves the prepared
// segment (and maybe one being prepared, NAME.tmp). The next start takes
// the prepared one over, reports nothing, counts it, removes the other,
// and its next rotation makes it the new segment.
func TestPreparedSegmentLeftByACrashIsTakenOver(t *testing.T) {
	dir := t.TempDir()
	s := openTestSpool(t, dir, Options{SegmentMaxBytes: 8 << 10})
	i := 0
	for ; !preparedReady(s); i++ {
		if err := s.Append(testutil.Event(i)); err != nil {
			t.Fatal(err)
		}
		if i > 200 {
			testutil.WaitFor(t, "the next segment prepared", func() bool { return preparedReady(s) })
		}
	}
	s.SaveState()
	image := crashImage(t, dir) // kill -9
	spoolDir := filepath.Join(image, DirName)
	os.WriteFile(filepath.Join(spoolDir, preparedName+tmpExt), []byte(segmentMagic), 0o600)

	var logs testutil.LogBuffer
	s2 := openTestSpool(t, image, Options{SegmentMaxBytes: 8 << 10, Logger: logs.Logger()})
	if r := s2.Recovery; r.RecordsCut != 0 || len(r.Lost) != 0 || r.CommittedLost || r.StateLost != "" {
		t.Errorf("recovery: %+v", r)
	}
	if !preparedReady(s2) {
		t.Fatal("the prepared segment was not taken over")
	}
	if _, err := os.Stat(filepath.Join(spoolDir, preparedName+tmpExt)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the interrupted preparation was not removed: %v", err)
	}
	if saved, _ := filepath.Glob(filepath.Join(spoolDir, "*"+quarantineExt)); len(saved) != 0 {
		t.Errorf("saved as damage: %v", saved)
	}
	checkUsed(t, s2)
	before, _ := os.Stat(filepath.Join(spoolDir, preparedName))
	active := s2.Recovery.Resumed.Segment
	for c, _ := s2.Committed(); c.Segment == active; c, _ = s2.Committed() {
		i++
		if err := s2.Append(testutil.Event(i)); err != nil {
			t.Fatal(err)
		}
	}
	after, err := os.Stat(filepath.Join(spoolDir, segmentName(active+1)+segmentExt))
	if err != nil || !os.SameFile(before, after) {
		t.Fatalf("segment 2 (%v) is not the prepared file taken over", err)
	}
	s2.Close()
	if ids, _ := exportIDs(t, image); len(ids) != i {
		t.Errorf("%d events exported, want %d", len(ids), i)
	}

	// A file under the prepared name that is no segment (never written by
	// the spool with its header) is removed, not taken over.
	os.WriteFile(filepath.Join(spoolDir, preparedName), []byte("something else"), 0o600)
	s3 := openTestSpool(t, image, Options{SegmentMaxBytes: 8 << 10})
	if preparedReady(s3) {
		t.Error("a file without a segment header was taken over as the prepared segment")
	}
}

// TestPreparedSegmentFailures: a preparation that fails (its fsync) leaves
// no file, is logged once, and rotation creates the segment itself; it is
// tried again. A file in the new segment's place is dealt with as before
// (createSegment takes over an unwritten one), and the prepared segment
// waits for the next rotation.
func TestPreparedSegmentFailures(t *testing.T) {
	dir := t.TempDir()
	var logs testutil.LogBuffer
	var failing atomic.Bool
	failing.Store(true)
	s := openTestSpool(t, dir, Options{SegmentMaxBytes: 8 << 10, Logger: logs.Logger(), prepareSync: func(f *os.File) error {
		if failing.Load() {
			return errors.New("injected EIO")
		}
		return f.Sync()
	}})
	i := 0
	appendUntil := func(seg uint64) {
		t.Helper()
		for c, _ := s.Committed(); c.Segment < seg; c, _ = s.Committed() {
			if err := s.Append(testutil.Event(i)); err != nil {
				t.Fatal(err)
			}
			i++
		}
	}
	appendUntil(2)
	testutil.WaitFor(t, "the failure logged", func() bool {
		return len(logs.Lines("cannot prepare the next spool segment ahead")) > 0
	})
	if preparedReady(s) || len(spoolFiles(t, s, preparedName)) != 0 {
		t.Error("a failed preparation left a prepared segment")
	}
	appendUntil(3)
	if n := len(logs.Lines("cannot prepare the next spool segment ahead")); n != 1 {
		t.Errorf("the failing preparation logged %d times, want once", n)
	}
	if n := len(logs.Lines("cannot start a new spool segment")); n != 0 {
		t.Errorf("%d rotations failed", n)
	}

	failing.Store(false)
	for c, _ := s.Committed(); c.Offset < 4<<10; c, _ = s.Committed() {
		if err := s.Append(testutil.Event(i)); err != nil {
			t.Fatal(err)
		}
		i++
	}
	testutil.WaitFor(t, "the next segment prepared", func() bool { return preparedReady(s) })
	before, _ := os.Stat(filepath.Join(s.dir, preparedName))
	// An empty file in segment 4's place (a creation that failed).
	os.WriteFile(filepath.Join(s.dir, segmentName(4)+segmentExt), nil, 0o600)
	appendUntil(4)
	if !preparedReady(s) {
		t.Fatal("the prepared segment was used although a file was in the way")
	}
	appendUntil(5)
	after, err := os.Stat(filepath.Join(s.dir, segmentName(5)+segmentExt))
	if err != nil || !os.SameFile(before, after) {
		t.Errorf("segment 5 (%v) is not the prepared file", err)
	}
	checkUsed(t, s)
	s.Close()
	if ids, _ := exportIDs(t, dir); len(ids) != i {
		t.Errorf("%d events exported, want %d", len(ids), i)
	}
}

// TestFailedCommitInPreallocatedSpace: a commit whose fdatasync fails is
// cut off the segment as before (truncated, fsynced), and the segment is
// preallocated again: a crash then leaves no trace of it (nothing torn),
// later commits follow the last good one, and the space is counted.
func TestFailedCommitInPreallocatedSpace(t *testing.T) {
	dir := t.TempDir()
	s := openTestSpool(t, dir, Options{SegmentMaxBytes: 64 << 10})
	for i := range 3 {
		if err := s.Append(testutil.Event(i)); err != nil {
			t.Fatal(err)
		}
	}
	var fail atomic.Bool
	fail.Store(true)
	s.sync = func(f *os.File) error {
		if fail.Load() {
			return errors.New("injected EIO")
		}
		return fsutil.Fdatasync(f)
	}
	if err := s.Append(testutil.Event(99)); err == nil || !strings.Contains(err.Error(), "injected EIO") {
		t.Fatalf("Record during a failing fdatasync: %v", err)
	}
	fail.Store(false)
	if err := s.Append(testutil.Event(3)); err != nil {
		t.Fatal(err)
	}
	seg := filepath.Join(s.dir, segmentName(1)+segmentExt)
	if size := fileSize(t, seg); size != 64<<10 {
		t.Errorf("after the undo the segment is %d bytes, want it preallocated again (64 KiB)", size)
	}
	checkUsed(t, s)
	image := crashImage(t, dir)
	s2 := openTestSpool(t, image, Options{SegmentMaxBytes: 64 << 10})
	if r := s2.Recovery; r.RecordsCut != 0 || len(r.Lost) != 0 {
		t.Errorf("recovery after the failed commit and a crash: %+v", r)
	}
	s2.Close()
	if ids, _ := exportIDs(t, image); strings.Join(ids, ",") != "ev-000000,ev-000001,ev-000002,ev-000003" {
		t.Errorf("events: %v", ids)
	}
}

// TestPreallocationKeepsTheReserves: a segment is preallocated only where
// that leaves the filesystem's free-space reserve and keeps the spool
// below nine tenths of MaxBytes; else it grows as it is written, as
// before.
func TestPreallocationKeepsTheReserves(t *testing.T) {
	for _, tc := range []struct {
		name     string
		free     int64
		maxBytes int64
		want     int64 // the active segment's length after open
	}{
		{"room", 100 << 20, 0, 64 << 10},
		{"below the free-space reserve", 1<<20 + 32<<10, 0, int64(len(segmentMagic))},
		{"past nine tenths of MaxBytes", 100 << 20, 70 << 10, int64(len(segmentMagic))},
	} {
		t.Run(tc.name, func(t *testing.T) {
			disk := &fakeDisk{}
			disk.free.Store(tc.free)
			s := openTestSpool(t, t.TempDir(), Options{SegmentMaxBytes: 64 << 10, MaxBytes: tc.maxBytes, MinFreeBytes: 1 << 20, statfs: disk.statfs})
			if got := fileSize(t, filepath.Join(s.dir, segmentName(1)+segmentExt)); got != tc.want {
				t.Errorf("the active segment is %d bytes, want %d", got, tc.want)
			}
			for i := range 10 {
				if err := s.Append(testutil.Event(i)); err != nil {
					t.Fatal(err)
				}
			}
			checkUsed(t, s)
			s.Close()
			if ids, _ := exportIDs(t, filepath.Dir(s.dir)); len(ids) != 10 {
				t.Errorf("%d events", len(ids))
			}
		})
	}
}

// TestPreviousFormatSegmentIsContinued: a segment as the previous release
// left it (appended, no preallocated space) is continued in place: the
// next records follow its last, and the segment is preallocated from there.
func TestPreviousFormatSegmentIsContinued(t *testing.T) {
	dir := t.TempDir()
	os.MkdirAll(filepath.Join(dir, DirName), 0o700)
	seg := filepath.Join(dir, DirName, segmentName(1)+segmentExt)
	os.WriteFile(seg, segmentBytes(0, 3), 0o600)
	s := openTestSpool(t, dir, Options{SegmentMaxBytes: 64 << 10})
	if r := s.Recovery; r.RecordsCut != 0 || len(r.Lost) != 0 || r.Resumed != (Pos{1, int64(len(segmentBytes(0, 3)))}) {
		t.Errorf("recovery: %+v", r)
	}
	if size := fileSize(t, seg); size != 64<<10 {
		t.Errorf("the continued segment is %d bytes, want 64 KiB preallocated", size)
	}
	if err := s.Append(testutil.Event(3)); err != nil {
		t.Fatal(err)
	}
	s.Close()
	if data, _ := os.ReadFile(seg); !bytes.Equal(data, segmentBytes(0, 4)) {
		t.Errorf("the continued segment holds %d bytes, want its 4 records exactly", len(data))
	}
}

// TestActiveSegmentIsZeroFilledAheadOfCommits: the active segment's
// preallocated space is zero-filled in the background while commits go on,
// past what they wrote and never over it: every record is there after a
// crash, nothing is cut or lost, and the fill reaches the segment's end.
func TestActiveSegmentIsZeroFilledAheadOfCommits(t *testing.T) {
	dir := t.TempDir()
	s := openTestSpool(t, dir, Options{SegmentMaxBytes: 4 << 20})
	const writers, each = 8, 150
	var wg sync.WaitGroup
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				if err := s.Append(testutil.Event(w*each + i)); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	testutil.WaitFor(t, "the active segment zero-filled", func() bool {
		s.fill.mu.Lock()
		defer s.fill.mu.Unlock()
		return s.fill.zeroed >= s.fill.limit && s.fill.limit == 4<<20
	})
	image := crashImage(t, dir)
	s2 := openTestSpool(t, image, Options{SegmentMaxBytes: 4 << 20})
	if r := s2.Recovery; r.RecordsCut != 0 || len(r.Lost) != 0 {
		t.Errorf("recovery: %+v", r)
	}
	s2.Close()
	ids, st := exportIDs(t, image)
	seen := map[string]bool{}
	for _, id := range ids {
		seen[id] = true
	}
	if len(ids) != writers*each || len(seen) != writers*each || st.TornBytes != 0 {
		t.Errorf("%d events (%d distinct), %+v; want %d", len(ids), len(seen), st, writers*each)
	}
}
