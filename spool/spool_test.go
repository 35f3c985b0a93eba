package spool

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/auditproxy/auditproxy/internal/testutil"
	"github.com/prometheus/client_golang/prometheus"
	promtest "github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/auditproxy/auditproxy/audit"
)

func openTestSpool(t *testing.T, dir string, opts Options) *Spool {
	t.Helper()
	s, err := Open(dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func exportIDs(t *testing.T, dataDir string) ([]string, ExportStats) {
	t.Helper()
	var out bytes.Buffer
	st, err := Export(dataDir, &out)
	if err != nil {
		t.Fatalf("Export: %v", err)
	}
	var ids []string
	for _, line := range strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n") {
		if line == "" {
			continue
		}
		var ev struct{ ID string }
		if err := json.Unmarshal([]byte(line), &ev); err != nil {
			t.Fatalf("exported line %q: %v", line, err)
		}
		ids = append(ids, ev.ID)
	}
	return ids, st
}

func TestSpoolRecordAndExport(t *testing.T) {
	dir := t.TempDir()
	s := openTestSpool(t, dir, Options{})
	// Concurrent writers: every event lands as one whole record.
	const n = 200
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ev := audit.Event{V: 1, Type: audit.TypeInference, ID: fmt.Sprint(i), Time: audit.Timestamp(time.Now()),
				RequestID: strings.Repeat("r", i%50+1)}
			if err := s.Record(&ev); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Record(&audit.Event{}); err == nil {
		t.Error("Record after Close succeeded")
	}
	seg := filepath.Join(dir, DirName, segmentName(1)+segmentExt)
	if fi, err := os.Stat(seg); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("segment %s: %v, mode %v; want mode 0600", seg, err, fi.Mode().Perm())
	}
	ids, st := exportIDs(t, dir)
	if st.Events != n || st.TornBytes != 0 || len(ids) != n {
		t.Fatalf("Export = %+v with %d ids; want %d events", st, len(ids), n)
	}
	seen := map[string]bool{}
	for _, id := range ids {
		seen[id] = true
	}
	if len(seen) != n {
		t.Errorf("%d distinct events exported, want %d", len(seen), n)
	}
}

func TestExportErrors(t *testing.T) {
	if _, err := Export(filepath.Join(t.TempDir(), "missing"), &bytes.Buffer{}); err == nil {
		t.Error("export of a missing data dir succeeded")
	}
	if st, err := Export(t.TempDir(), &bytes.Buffer{}); err != nil || st.Events != 0 {
		t.Errorf("export of an empty data dir: %+v %v", st, err)
	}
	// A corrupt record in a segment that is not the newest is damage, not
	// a torn tail: read past, the intact records before and after it
	// exported, and the file and offsets named in the error.
	dir := t.TempDir()
	spoolDir := filepath.Join(dir, DirName)
	os.MkdirAll(spoolDir, 0o700)
	seg := appendFrame([]byte(segmentMagic), testutil.Event(1))
	bad := len(seg)
	seg = appendFrame(seg, testutil.Event(2))
	damagedEnd := len(seg)
	seg = appendFrame(seg, testutil.Event(3))
	seg[damagedEnd-2] ^= 0xff
	os.WriteFile(filepath.Join(spoolDir, segmentName(1)+segmentExt), seg, 0o600)
	os.WriteFile(filepath.Join(spoolDir, segmentName(2)+segmentExt), appendFrame([]byte(segmentMagic), testutil.Event(4)), 0o600)
	var out bytes.Buffer
	st, err := Export(dir, &out)
	var de *ExportDamageError
	if !errors.As(err, &de) || len(de.Damaged) != 1 || !strings.Contains(err.Error(), fmt.Sprintf("00000000000000000001.seg is damaged at offsets %d-%d", bad, damagedEnd)) {
		t.Errorf("export of a damaged segment: error %v", err)
	}
	if st.Events != 3 || !bytes.Contains(out.Bytes(), []byte(`"id":"ev-000003"`)) || !bytes.Contains(out.Bytes(), []byte(`"id":"ev-000004"`)) {
		t.Errorf("export past the damage: %+v\n%s", st, out.String())
	}
}

// TestGroupCommit: in sync mode Record returns only once its event is on
// disk (written and fsynced), and events that arrive during an fsync share
// the next one.
func TestGroupCommit(t *testing.T) {
	dir := t.TempDir()
	const fsyncTime = 20 * time.Millisecond
	s := openTestSpool(t, dir, Options{Durability: DurabilitySync})
	var syncs atomic.Int64
	var syncedSize atomic.Int64
	s.sync = func(f *os.File) error {
		syncs.Add(1)
		// The end of what this sync makes durable (the file's size is
		// that of its preallocated space).
		syncedSize.Store(s.syncing)
		time.Sleep(fsyncTime) // a slow disk, so that events pile up behind it
		return f.Sync()
	}
	const n = 64
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			before := syncedSize.Load()
			if err := s.Append(testutil.Event(i)); err != nil {
				t.Error(err)
			}
			// Record returned: an fsync covered a size beyond what was
			// synced when it started.
			if after := syncedSize.Load(); after <= before {
				t.Errorf("Record returned without an fsync after it (synced %d -> %d)", before, after)
			}
		}()
	}
	wg.Wait()
	if got := syncs.Load(); got >= n/2 {
		t.Errorf("%d fsyncs for %d concurrent events; want them grouped", got, n)
	}
	if s.Recorded() != n {
		t.Errorf("Recorded = %d, want %d", s.Recorded(), n)
	}
}

// TestBatchReuseUnderLoad has many recorders share and reuse batches: every
// event is committed before its Record returns, each once, and with a failing
// commit among them, exactly the events of that commit get its error.
func TestBatchReuseUnderLoad(t *testing.T) {
	dir := t.TempDir()
	s := openTestSpool(t, dir, Options{Durability: DurabilitySync})
	var syncs, failed atomic.Int64
	s.sync = func(f *os.File) error {
		if syncs.Add(1) == 50 {
			return errors.New("injected fsync failure")
		}
		return f.Sync()
	}
	const workers, each = 16, 100
	var wg sync.WaitGroup
	var okIDs sync.Map
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				ev := testutil.Event(w*each + i)
				committedBefore, _ := s.Committed()
				if err := s.Append(ev); err != nil {
					failed.Add(1)
					continue
				}
				if after, _ := s.Committed(); !committedBefore.Less(after) {
					t.Errorf("Record returned before a commit (%v -> %v)", committedBefore, after)
				}
				okIDs.Store(fmt.Sprintf("ev-%06d", w*each+i), true)
			}
		}()
	}
	wg.Wait()
	if s.Recorded()+failed.Load() != workers*each || failed.Load() == 0 {
		t.Errorf("recorded %d, failed %d, want %d in all and some failed", s.Recorded(), failed.Load(), workers*each)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	ids, _ := exportIDs(t, dir)
	seen := map[string]bool{}
	for _, id := range ids {
		if seen[id] {
			t.Errorf("event %s exported twice", id)
		}
		seen[id] = true
		if _, ok := okIDs.Load(id); !ok {
			t.Errorf("event %s is in the spool, but its Record failed", id)
		}
	}
	if int64(len(ids)) != s.Recorded() {
		t.Errorf("%d events exported, %d recorded", len(ids), s.Recorded())
	}
}

func TestAsyncDurabilityCommitsWithinInterval(t *testing.T) {
	dir := t.TempDir()
	s := openTestSpool(t, dir, Options{Durability: DurabilityAsync, FsyncInterval: 50 * time.Millisecond})
	start := time.Now()
	if err := s.Append(testutil.Event(1)); err != nil {
		t.Fatal(err)
	}
	if time.Since(start) > 25*time.Millisecond {
		t.Errorf("async Record took %v; want it not to wait for the commit", time.Since(start))
	}
	_, changed := s.Committed()
	select {
	case <-changed:
	case <-time.After(2 * time.Second):
		t.Fatal("event not committed within 2 s")
	}
	if s.Recorded() != 1 {
		t.Errorf("Recorded = %d", s.Recorded())
	}
}

// TestTornTailRecovery cuts the newest segment at every byte offset of its
// last two records, and flips every byte of the last: opening the spool
// keeps every whole record before the damage, cuts the rest (saving it),
// counts it, and accepts new events after it.
func TestTornTailRecovery(t *testing.T) {
	src := t.TempDir()
	s := openTestSpool(t, src, Options{})
	const n = 5
	for i := range n {
		if err := s.Append(testutil.Event(i)); err != nil {
			t.Fatal(err)
		}
	}
	s.Close()
	full, err := os.ReadFile(filepath.Join(src, DirName, segmentName(1)+segmentExt))
	if err != nil {
		t.Fatal(err)
	}
	// Record boundaries.
	bounds := []int{len(segmentMagic)}
	for i := range n {
		bounds = append(bounds, bounds[i]+frameHeaderSize+len(testutil.Event(i)))
	}
	if bounds[n] != len(full) {
		t.Fatalf("segment is %d bytes, records end at %d", len(full), bounds[n])
	}
	type damage struct {
		name      string
		data      []byte
		wantWhole int // records kept
		wantCut   bool
	}
	var cases []damage
	for cut := bounds[n-2]; cut < len(full); cut++ {
		whole := n - 2
		if cut >= bounds[n-1] {
			whole = n - 1
		}
		cases = append(cases, damage{fmt.Sprintf("cut at %d", cut), full[:cut], whole, cut != bounds[whole]})
	}
	for i := bounds[n-1]; i < len(full); i++ {
		flipped := bytes.Clone(full)
		flipped[i] ^= 0x5a
		cases = append(cases, damage{fmt.Sprintf("byte %d flipped", i), flipped, n - 1, true})
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			spoolDir := filepath.Join(dir, DirName)
			os.MkdirAll(spoolDir, 0o700)
			os.WriteFile(filepath.Join(spoolDir, segmentName(1)+segmentExt), tc.data, 0o600)
			// Export before repair reads the same whole records.
			if ids, st := exportIDs(t, dir); len(ids) != tc.wantWhole || (st.TornBytes > 0) != tc.wantCut {
				t.Errorf("export before repair: %d events, %+v; want %d", len(ids), st, tc.wantWhole)
			}
			s, err := Open(dir, Options{})
			if err != nil {
				t.Fatal(err)
			}
			if got := s.Recovery.RecordsCut > 0; got != tc.wantCut {
				t.Errorf("RecordsCut = %d, want cut %v", s.Recovery.RecordsCut, tc.wantCut)
			}
			if tc.wantCut {
				saved, _ := filepath.Glob(filepath.Join(spoolDir, "*"+quarantineExt))
				if len(saved) != 1 {
					t.Errorf("cut bytes saved in %v, want one .corrupt file", saved)
				} else if b, _ := os.ReadFile(saved[0]); !bytes.Equal(b, tc.data[bounds[tc.wantWhole]:]) {
					t.Errorf("saved %d bytes, want the %d cut", len(b), len(tc.data)-bounds[tc.wantWhole])
				}
			}
			if err := s.Append(testutil.Event(99)); err != nil {
				t.Fatal(err)
			}
			s.Close()
			ids, st := exportIDs(t, dir)
			if len(ids) != tc.wantWhole+1 || st.TornBytes != 0 || ids[len(ids)-1] != "ev-000099" {
				t.Errorf("after repair and one more event: %v %+v", ids, st)
			}
			for i := range tc.wantWhole {
				if ids[i] != fmt.Sprintf("ev-%06d", i) {
					t.Errorf("record %d is %s", i, ids[i])
				}
			}
		})
	}
	// Damage in the middle is not a torn tail: every byte of record 2 of
	// 5 flipped in turn loses record 2 alone; records 3 and 4, intact
	// after it, are kept, and the loss is reported (not counted as cut).
	for i := bounds[2]; i < bounds[3]; i++ {
		t.Run(fmt.Sprintf("byte %d of a middle record flipped", i), func(t *testing.T) {
			dir := t.TempDir()
			spoolDir := filepath.Join(dir, DirName)
			os.MkdirAll(spoolDir, 0o700)
			data := bytes.Clone(full)
			data[i] ^= 0x5a
			os.WriteFile(filepath.Join(spoolDir, segmentName(1)+segmentExt), data, 0o600)
			s, err := Open(dir, Options{})
			if err != nil {
				t.Fatal(err)
			}
			if s.Recovery.RecordsCut != 0 || len(s.Recovery.Lost) != 1 || s.Recovery.Lost[0].ByteRange != (audit.ByteRange{Start: int64(bounds[2]), End: int64(bounds[3])}) {
				t.Errorf("recovery: %+v; want bytes %d-%d lost, nothing cut", s.Recovery, bounds[2], bounds[3])
			}
			if err := s.Append(testutil.Event(99)); err != nil {
				t.Fatal(err)
			}
			s.Close()
			ids, _ := exportIDs(t, dir)
			if strings.Join(ids, ",") != "ev-000000,ev-000001,ev-000003,ev-000004,ev-000099" {
				t.Errorf("after the repair: %v", ids)
			}
		})
	}
}

func TestRecoveryOfAnInterruptedSegmentCreation(t *testing.T) {
	for cut := 0; cut < len(segmentMagic); cut++ {
		dir := t.TempDir()
		spoolDir := filepath.Join(dir, DirName)
		os.MkdirAll(spoolDir, 0o700)
		os.WriteFile(filepath.Join(spoolDir, segmentName(1)+segmentExt), []byte(segmentMagic[:cut]), 0o600)
		s, err := Open(dir, Options{})
		if err != nil {
			t.Fatalf("header cut at %d: %v", cut, err)
		}
		if err := s.Append(testutil.Event(1)); err != nil {
			t.Fatal(err)
		}
		s.Close()
		if ids, _ := exportIDs(t, dir); len(ids) != 1 {
			t.Errorf("header cut at %d: %d events after repair", cut, len(ids))
		}
	}
	dir := t.TempDir()
	os.MkdirAll(filepath.Join(dir, DirName), 0o700)
	os.WriteFile(filepath.Join(dir, DirName, segmentName(1)+segmentExt), []byte("not a segment at all"), 0o600)
	if _, err := Open(dir, Options{}); err == nil || !strings.Contains(err.Error(), "not a spool segment") {
		t.Errorf("a foreign file as segment: %v", err)
	}
}

// TestRotationAfterAFailedSegmentCreation: a segment creation that failed
// (ENOSPC or EIO on the header's write or fsync) removes its file, and a
// file that holds part of a header at most is taken over, so the next
// rotation succeeds: left in the way, it failed every later rotation, the
// active segment grew past every bound and, acknowledged or not, could
// never be deleted. A file that holds records is never overwritten.
func TestRotationAfterAFailedSegmentCreation(t *testing.T) {
	for _, tc := range []struct {
		name     string
		leftover []byte // in segment 2's place before the first rotation; nil: none
		failSync bool   // the new segment's first fsync fails
		rotates  bool
	}{
		{"an empty file left behind", []byte{}, false, true},
		{"part of a header left behind", []byte(segmentMagic[:5]), false, true},
		{"a whole header left behind", []byte(segmentMagic), false, true},
		{"the new segment's fsync fails once", nil, true, true},
		{"a segment with a record in the way", appendFrame([]byte(segmentMagic), testutil.Event(999)), false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			var logs testutil.LogBuffer
			// noPrepare: rotation creates each segment itself, as it does
			// when none was prepared ahead in time; failures of the
			// preparation are TestPreparedSegmentFailures'.
			s := openTestSpool(t, dir, Options{Forwarding: true, SegmentMaxBytes: 4 << 10, MinFreeBytes: -1, Logger: logs.Logger(), noPrepare: true})
			second := filepath.Join(dir, DirName, segmentName(2)+segmentExt)
			if tc.leftover != nil {
				if err := os.WriteFile(second, tc.leftover, 0o600); err != nil {
					t.Fatal(err)
				}
			}
			var failed atomic.Bool
			s.sync = func(f *os.File) error {
				if tc.failSync && f.Name() == second && failed.CompareAndSwap(false, true) {
					return errors.New("injected ENOSPC")
				}
				return f.Sync()
			}
			for i := range 100 { // about 13 KB: three segments
				if err := s.Append(testutil.Event(i)); err != nil {
					t.Fatal(err)
				}
			}
			s.stateMu.Lock()
			segs := len(s.segs)
			s.stateMu.Unlock()
			if tc.failSync && !failed.Load() {
				t.Fatal("the injected failure was not met")
			}
			failures := len(logs.Lines("cannot start a new spool segment; continuing in the current one"))
			if !tc.rotates {
				data, _ := os.ReadFile(second)
				if !bytes.Equal(data, tc.leftover) || failures == 0 {
					t.Errorf("segment 2 in the way: %d failed rotations logged, its file now %q", failures, data)
				}
				return
			}
			if segs < 3 || s.activeSize > 2*(4<<10) {
				t.Errorf("%d segments, the active one %d bytes (max %d), %d failed rotations logged", segs, s.activeSize, 4<<10, failures)
			}
			if tc.failSync != (failures == 1) {
				t.Errorf("%d failed rotations logged", failures)
			}
			s.Close()
			if ids, _ := exportIDs(t, dir); len(ids) != 100 {
				t.Errorf("%d events exported, want 100", len(ids))
			}
		})
	}
}

// TestEventLargerThanARecordIsRefused: an event whose record, with its
// place in the log, would pass maxRecordSize is refused with an error that
// says so (the proxy then cuts that answer, as for any failed record),
// instead of being committed and then read as damage. The margin left for
// the place covers the longest origin escaping can make. The spool goes on.
func TestEventLargerThanARecordIsRefused(t *testing.T) {
	signer, keys := testutil.Signer(t, "spool-test")
	opts := logOpts(signer)
	opts.Name = `node"\` + strings.Repeat(`"`, 40) // escaped at two bytes a byte
	dir := t.TempDir()
	s := openTestSpool(t, dir, Options{Log: opts})
	if err := s.Append(testutil.Event(1)); err != nil {
		t.Fatal(err)
	}
	// The margin: what placing an event in the log adds to it.
	var added int
	r := s.NewReader(Pos{})
	for {
		rec, _, ok, err := r.Next()
		if err != nil || !ok {
			t.Fatal("event not read back", err)
		}
		if bytes.Contains(rec, []byte("ev-000001")) {
			added = len(rec) - len(testutil.Event(1))
			break
		}
	}
	r.Close()
	if margin := maxRecordSize - maxEventSize(s.chain.Origin()); added > margin || margin > 1<<20 {
		t.Errorf("placing an event adds %d bytes, the margin is %d", added, margin)
	}
	// Refused by size alone: a lower bound stands for maxEventSize, which
	// the encoding of a 256 MiB event would take too long to reach here.
	s.mu.Lock()
	s.maxEvent = 4 << 10
	s.mu.Unlock()
	big := &audit.Event{V: 1, Type: audit.TypeInference, ID: "big", Payload: &audit.Payload{Age: make([]byte, 4<<10)}}
	for name, err := range map[string]error{
		"Record": s.Record(big),
		"Append": s.Append(append(testutil.Event(2)[:len(testutil.Event(2))-1], `,"pad":"`+strings.Repeat("x", 5<<10)+`"}`...)),
	} {
		if err == nil || !strings.Contains(err.Error(), "the spool takes events of 1 to 4096 bytes") {
			t.Errorf("%s of an event larger than a record: %v", name, err)
		}
	}
	if err := s.Append(testutil.Event(3)); err != nil {
		t.Fatalf("after a refused event: %v", err)
	}
	s.Close()
	if r := verifyDataDir(t, dir, keys); !r.OK || r.Origins[0].Events != 4 {
		t.Errorf("after refused events:\n%s", testutil.Problems(r))
	}
}

func spoolFiles(t *testing.T, s *Spool, pattern string) []string {
	t.Helper()
	m, err := filepath.Glob(filepath.Join(s.dir, pattern))
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func TestRotationSealsAndExportReadsAll(t *testing.T) {
	dir := t.TempDir()
	s := openTestSpool(t, dir, Options{SegmentMaxBytes: 4 << 10})
	const n = 300 // about 40 KB: ten segments
	for i := range n {
		if err := s.Append(testutil.Event(i)); err != nil {
			t.Fatal(err)
		}
	}
	testutil.WaitFor(t, "sealed segments", func() bool { return len(spoolFiles(t, s, "*"+sealedExt)) >= 8 })
	if tmp := spoolFiles(t, s, "*"+tmpExt); len(tmp) > 0 {
		t.Logf("in progress: %v", tmp)
	}
	// The reader reads across sealed and plain segments, from any record.
	r := s.NewReader(Pos{})
	var got []string
	var mid Pos
	for {
		rec, end, ok, err := r.Next()
		if err != nil {
			t.Fatal(err)
		}
		if !ok {
			break
		}
		got = append(got, string(rec))
		if len(got) == n/2 {
			mid = end
		}
	}
	r.Close()
	if len(got) != n || got[n-1] != string(testutil.Event(n-1)) {
		t.Fatalf("reader: %d records", len(got))
	}
	r = s.NewReader(mid)
	rec, _, ok, err := r.Next()
	r.Close()
	if err != nil || !ok || string(rec) != string(testutil.Event(n/2)) {
		t.Errorf("reader from %v: %q %v %v", mid, rec, ok, err)
	}
	s.Close()
	ids, st := exportIDs(t, dir)
	if len(ids) != n || st.Segments < 10 {
		t.Errorf("export: %d events from %d segments", len(ids), st.Segments)
	}
	for i, id := range ids {
		if id != fmt.Sprintf("ev-%06d", i) {
			t.Fatalf("export out of order at %d: %s", i, id)
		}
	}
	// Segments compress: the test events are alike.
	var plain, sealed int64
	for _, sg := range s.segs[:len(s.segs)-1] {
		if sg.sealed {
			sealed += sg.size
			plain += 4 << 10
		}
	}
	if sealed == 0 || sealed*2 > plain {
		t.Errorf("sealed segments take %d bytes for about %d", sealed, plain)
	}
}

func TestSegmentRotatesByAge(t *testing.T) {
	s := openTestSpool(t, t.TempDir(), Options{SegmentMaxAge: 30 * time.Millisecond})
	if err := s.Append(testutil.Event(1)); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, "rotation by age", func() bool {
		c, _ := s.Committed()
		return c.Segment >= 2
	})
	// An empty active segment is not rotated.
	time.Sleep(100 * time.Millisecond)
	if c, _ := s.Committed(); c.Segment != 2 {
		t.Errorf("empty segment rotated: now at %v", c)
	}
}

func TestSpoolFullRejectsUntilAcknowledgedDataIsDeleted(t *testing.T) {
	for _, forwarding := range []bool{false, true} {
		t.Run(fmt.Sprintf("forwarding=%v", forwarding), func(t *testing.T) {
			s := openTestSpool(t, t.TempDir(), Options{MaxBytes: 32 << 10, SegmentMaxBytes: 4 << 10, Forwarding: forwarding})
			reg := prometheus.NewRegistry()
			if err := s.Register(reg); err != nil {
				t.Fatal(err)
			}
			// Fill it. Sealing compresses segments and so frees space:
			// full means full once every sealed segment is compressed.
			sealingDone := func() bool {
				s.stateMu.Lock()
				defer s.stateMu.Unlock()
				return len(s.sealQueue) == 0
			}
			i := 0
			for {
				if s.Admit() != nil {
					testutil.WaitFor(t, "sealing", sealingDone)
					if s.Admit() != nil {
						break
					}
				}
				if i > 100000 {
					t.Fatal("spool never full")
				}
				if err := s.Append(testutil.Event(i)); err != nil {
					t.Fatal(err)
				}
				i++
			}
			err := s.Admit()
			if !errors.Is(err, ErrSpoolFull) {
				t.Fatalf("Admit = %v, want ErrSpoolFull", err)
			}
			if got := promtest.ToFloat64(s.metrics.rejected); got < 2 {
				t.Errorf("rejections counted: %v", got)
			}
			// Nothing acknowledged: nothing may be deleted.
			time.Sleep(50 * time.Millisecond)
			if ids, _ := exportIDs(t, filepath.Dir(s.dir)); len(ids) != i {
				t.Fatalf("%d events exported, %d written", len(ids), i)
			}
			c, _ := s.Committed()
			s.Ack(c)
			if !forwarding {
				time.Sleep(50 * time.Millisecond)
				if s.Admit() == nil {
					t.Fatal("without forwarding, an ack freed space")
				}
				return
			}
			testutil.WaitFor(t, "acknowledged segments deleted", func() bool { return s.Admit() == nil })
			if got := promtest.ToFloat64(s.metrics.deleted.WithLabelValues("space")); got == 0 {
				t.Error("no deletion counted")
			}
		})
	}
}

func TestRetentionDeletesOnlyWhatMayGo(t *testing.T) {
	for _, tc := range []struct {
		forwarding, ack bool
		wantDeleted     bool
	}{
		{false, false, true},
		{true, false, false},
		{true, true, true},
	} {
		t.Run(fmt.Sprintf("forwarding=%v,acked=%v", tc.forwarding, tc.ack), func(t *testing.T) {
			s := openTestSpool(t, t.TempDir(), Options{SegmentMaxBytes: 4 << 10, Retention: 100 * time.Millisecond, Forwarding: tc.forwarding})
			for i := range 100 {
				if err := s.Append(testutil.Event(i)); err != nil {
					t.Fatal(err)
				}
			}
			if tc.ack {
				c, _ := s.Committed()
				s.Ack(c)
			}
			if tc.wantDeleted {
				testutil.WaitFor(t, "retention", func() bool {
					s.stateMu.Lock()
					defer s.stateMu.Unlock()
					return len(s.segs) == 1
				})
				return
			}
			time.Sleep(400 * time.Millisecond)
			s.stateMu.Lock()
			defer s.stateMu.Unlock()
			if len(s.segs) < 3 {
				t.Errorf("unacknowledged segments deleted: %d left", len(s.segs))
			}
		})
	}
}

func TestStateSurvivesReopen(t *testing.T) {
	dir := t.TempDir()
	s := openTestSpool(t, dir, Options{Forwarding: true})
	for i := range 10 {
		s.Append(testutil.Event(i))
	}
	r := s.NewReader(Pos{})
	var fifth Pos
	for range 5 {
		_, fifth, _, _ = r.Next()
	}
	r.Close()
	s.Ack(fifth)
	s.Close()
	st, err := loadState(s.dir)
	if err != nil || st.Acked != fifth {
		t.Fatalf("state %+v %v, want acked %v", st, err, fifth)
	}
	s2 := openTestSpool(t, dir, Options{Forwarding: true})
	if s2.Acked() != fifth || s2.Recovery.Acked != fifth {
		t.Errorf("reopened at acked %v, want %v", s2.Acked(), fifth)
	}
	rec, _, _, _ := s2.NewReader(s2.Acked()).Next()
	if string(rec) != string(testutil.Event(5)) {
		t.Errorf("first unacknowledged record %q", rec)
	}
	// A state file that cannot be read restarts shipping from the start.
	s2.Close()
	os.WriteFile(filepath.Join(dir, DirName, stateFileName), []byte("{"), 0o600)
	s3 := openTestSpool(t, dir, Options{Forwarding: true})
	if s3.Acked() != (Pos{}) {
		t.Errorf("acked %v after a broken state file", s3.Acked())
	}
}

func TestCommitFailureIsUndoneAndReported(t *testing.T) {
	dir := t.TempDir()
	s := openTestSpool(t, dir, Options{})
	if err := s.Append(testutil.Event(1)); err != nil {
		t.Fatal(err)
	}
	var fail atomic.Bool
	s.sync = func(f *os.File) error {
		if fail.Load() {
			return errors.New("injected EIO")
		}
		return f.Sync()
	}
	fail.Store(true)
	if err := s.Append(testutil.Event(2)); err == nil || !strings.Contains(err.Error(), "injected EIO") {
		t.Errorf("Record during a failing fsync: %v", err)
	}
	fail.Store(false)
	if err := s.Append(testutil.Event(3)); err != nil {
		t.Fatal(err)
	}
	if s.Admit() != nil {
		t.Error("spool refuses after a failure it undid")
	}
	if got := promtest.ToFloat64(s.metrics.commitErrors); got != 1 {
		t.Errorf("commit errors counted: %v", got)
	}
	s.Close()
	if ids, _ := exportIDs(t, dir); strings.Join(ids, ",") != "ev-000001,ev-000003" {
		t.Errorf("events after a failed commit: %v", ids)
	}
}

// FuzzSegmentRecovery: whatever bytes the newest segment holds, recovery
// keeps exactly the frames a reader can read, in order: validPrefix (the
// part before any damage, which a torn tail is cut back to) and scanFrames
// (every intact frame, past damage, resynchronising on the next valid
// frame). Frames, damaged ranges and the torn tail cover the segment
// exactly; a damaged range always ends where a valid frame starts; the
// repaired segment (intact frames only) scans to the same records with
// nothing left to repair; offsets translate to the same records; and
// Export reads the same records, the torn tail counted and the damage
// named. The zero bytes a segment ends with (its preallocated space, not yet
// written) are none of these: frames, damage, the torn tail and that space
// cover the segment exactly, and zeros followed by a valid frame are
// damage. The reader never panics nor allocates for lengths the file does
// not hold. (Open itself, with its fsyncs, is covered at every cut
// offset by TestTornTailRecovery and for damage in the middle by
// TestDamageInTheActiveSegment; fsyncs would make fuzzing crawl.)
func FuzzSegmentRecovery(f *testing.F) {
	valid := []byte(segmentMagic)
	var bounds []int
	for i := range 5 {
		valid = appendFrame(valid, testutil.Event(i))
		bounds = append(bounds, len(valid))
	}
	f.Add(valid)
	f.Add(valid[:len(valid)-3])
	f.Add([]byte(segmentMagic + "\xff\xff\xff\x0f\x00\x00\x00\x00"))
	f.Add([]byte(segmentMagic[:3]))
	flipped := bytes.Clone(valid)
	flipped[bounds[1]+20] ^= 0x40 // damage in the third record, two intact after it
	f.Add(flipped)
	zeroed := bytes.Clone(valid)
	clear(zeroed[bounds[0]+3 : bounds[2]+5]) // a zeroed range across three frames
	f.Add(zeroed)
	badLen := bytes.Clone(valid)
	binary.LittleEndian.PutUint32(badLen[bounds[2]:], 200<<20) // a length the file does not hold
	f.Add(badLen)
	f.Add(append(bytes.Clone(flipped), "torn"...))
	// Preallocated: records, then zeros to the end; torn, then zeros; a
	// torn header whose length ends in zero bytes; zeros, then a frame.
	zeros := make([]byte, 300)
	f.Add(append(bytes.Clone(valid), zeros...))
	f.Add(append(bytes.Clone(valid[:bounds[3]-7]), zeros...))
	f.Add(append(bytes.Clone(valid[:bounds[3]+2]), zeros...))
	f.Add(append(append(bytes.Clone(valid[:bounds[1]]), zeros...), valid[bounds[1]:]...))
	f.Add(append([]byte(segmentMagic), zeros...))
	dir := f.TempDir()
	spoolDir := filepath.Join(dir, DirName)
	os.MkdirAll(spoolDir, 0o700)
	seg := filepath.Join(spoolDir, segmentName(1)+segmentExt)
	f.Fuzz(func(t *testing.T, data []byte) {
		end, records := validPrefix(data)
		badHeader := len(data) < len(segmentMagic) || string(data[:len(segmentMagic)]) != segmentMagic
		if end > int64(len(data)) || (end == 0) != badHeader {
			t.Fatalf("validPrefix = %d, %d for %d bytes", end, records, len(data))
		}
		if end > 0 {
			if again, n := validPrefix(data[:end]); again != end || n != records {
				t.Fatalf("recovery is not idempotent: %d,%d then %d,%d", end, records, again, n)
			}
		}
		if err := os.WriteFile(seg, data, 0o600); err != nil {
			t.Fatal(err)
		}
		var out bytes.Buffer
		st, err := Export(dir, &out)
		if end == 0 {
			if err == nil {
				t.Fatalf("export of a segment without a valid header succeeded: %+v", st)
			}
			return
		}
		sc := scanFrames(data, 0)
		// The frames: in order, each parses, the first ones are validPrefix's.
		covered := int64(len(segmentMagic))
		for i, fr := range sc.frames {
			if _, size, err := parseFrame(data[fr.Start:], fr.Start); err != nil || int64(size) != fr.End-fr.Start {
				t.Fatalf("frame %d at %v does not parse: %v", i, fr, err)
			}
			if i > 0 && fr.Start < sc.frames[i-1].End {
				t.Fatalf("frames overlap: %v %v", sc.frames[i-1], fr)
			}
			if i < records && (i == 0 && fr.Start != int64(len(segmentMagic)) || fr.End > end) {
				t.Fatalf("frame %d at %v is not validPrefix's", i, fr)
			}
			covered += fr.End - fr.Start
		}
		if len(sc.frames) < records {
			t.Fatalf("scan found %d frames, validPrefix %d", len(sc.frames), records)
		}
		for _, d := range sc.damaged {
			if d.End <= d.Start || validFrameAt(data[d.End:]) == 0 {
				t.Fatalf("damaged range %v is not followed by a valid frame", d.ByteRange)
			}
			covered += d.End - d.Start
		}
		if len(sc.damaged) == 0 && (len(sc.frames) != records || sc.tail != (audit.ByteRange{Start: end, End: sc.unwritten}) && end < sc.unwritten) {
			t.Fatalf("no damage, yet %d frames (validPrefix %d) and tail %v (validPrefix ends at %d, unwritten space at %d)", len(sc.frames), records, sc.tail, end, sc.unwritten)
		}
		covered += sc.tail.End - sc.tail.Start
		if sc.unwritten > int64(len(data)) || bytes.ContainsFunc(data[sc.unwritten:], func(r rune) bool { return r != 0 }) {
			t.Fatalf("unwritten space from %d of %d bytes holds more than zeros", sc.unwritten, len(data))
		}
		covered += int64(len(data)) - sc.unwritten
		if covered != int64(len(data)) {
			t.Fatalf("frames, damage, tail and unwritten space cover %d of %d bytes", covered, len(data))
		}
		// Repair: the intact frames alone scan to the same, with nothing to
		// repair, and offsets translate record for record.
		sv := &segmentSalvage{data: data, scan: sc}
		repaired := sv.intactBytes()
		again := scanFrames(repaired, 0)
		if len(again.frames) != len(sc.frames) || len(again.damaged) != 0 || again.tail.End != again.tail.Start {
			t.Fatalf("the repaired segment scans to %d frames, %d damaged, tail %v; want %d frames and nothing else",
				len(again.frames), len(again.damaged), again.tail, len(sc.frames))
		}
		var want bytes.Buffer
		for i, fr := range sc.frames {
			if got := sv.translate(fr.End); got != again.frames[i].End {
				t.Fatalf("the end of frame %d translates to %d, want %d", i, got, again.frames[i].End)
			}
			want.Write(sv.payload(i))
			want.WriteByte('\n')
		}
		// Export reads the same records, past the damage, which it names.
		var de *ExportDamageError
		if (len(sc.damaged) > 0) != errors.As(err, &de) || (err != nil && de == nil) {
			t.Fatalf("export error %v with %d damaged ranges", err, len(sc.damaged))
		}
		if st.Events != len(sc.frames) || st.TornBytes != sc.tail.End-sc.tail.Start {
			t.Fatalf("export = %+v; the scan keeps %d records and a torn tail of %d bytes", st, len(sc.frames), sc.tail.End-sc.tail.Start)
		}
		if !bytes.Equal(out.Bytes(), want.Bytes()) {
			t.Fatal("export differs from the frames recovery keeps")
		}
	})
}

// TestReaderFollowsCommitsAcrossRotation: a reader that keeps up with the
// committed end reads every record, including the last ones of a segment
// committed just before it was rotated.
func TestReaderFollowsCommitsAcrossRotation(t *testing.T) {
	s := openTestSpool(t, t.TempDir(), Options{SegmentMaxBytes: 4 << 10})
	r := s.NewReader(Pos{})
	defer r.Close()
	var got []string
	for i := range 300 {
		if err := s.Append(testutil.Event(i)); err != nil {
			t.Fatal(err)
		}
		if i%7 != 0 {
			continue // several commits, some across a rotation, between reads
		}
		for {
			rec, _, ok, err := r.Next()
			if err != nil {
				t.Fatal(err)
			}
			if !ok {
				break
			}
			got = append(got, string(rec))
		}
	}
	if c, _ := s.Committed(); c.Segment < 5 {
		t.Fatalf("only %d segments", c.Segment)
	}
	for {
		rec, _, ok, err := r.Next()
		if err != nil || !ok {
			break
		}
		got = append(got, string(rec))
	}
	for i := range 300 {
		if i >= len(got) || got[i] != string(testutil.Event(i)) {
			t.Fatalf("record %d missing or out of order (%d read)", i, len(got))
		}
	}
}

// TestRecordedEventKeepsEveryMember: an event recorded through the spool
// reads back from it with every member it was given, the optional ones
// included (model.from_answer and audio_seconds were once dropped on the way
// to disk), and as the same event.
func TestRecordedEventKeepsEveryMember(t *testing.T) {
	dir := t.TempDir()
	signer, _ := testutil.Signer(t, "spool-test")
	s := openTestSpool(t, dir, Options{Log: logOpts(signer)})
	key, gpu, n, ttft, audio := "k1:00", "sha256:ab", int64(7), 12.5, 3.25
	ev := audit.Event{V: 1, Type: audit.TypeInference, ID: audit.NewID(), Time: audit.Timestamp(time.Date(2026, 12, 5, 9, 0, 0, 5, time.UTC)),
		RequestID: "r", Method: "POST", Path: "/v1/audio/transcriptions", Stream: true, GPU: &gpu, APIKeyID: &key,
		Model:   audit.Model{Name: "whisper", NameBytes: 7, Checksum: "blake3:00", BaseChecksum: "blake3:01", FromAnswer: true},
		Input:   audit.Body{Hash: "sha256:00", Bytes: 1, Tokens: &n, AudioSeconds: &audio},
		Output:  audit.Body{Hash: "sha256:11", Bytes: 2, Tokens: &n, FinishReason: "stop", AudioSeconds: &audio},
		Latency: audit.Latency{Total: 1.5, TTFT: &ttft, Upstream: 1.25, Overhead: 0.25},
		Status:  audit.Status{Code: 200, Outcome: audit.OutcomeOK, Error: "e", UpstreamError: "u", AfterEnd: "upstream_broke_off"},
		Source:  audit.Source{Host: "h", Version: "v"}, Payload: &audit.Payload{Age: []byte("age"), InputBytes: 1, OutputBytes: 2, Truncated: true}}
	if err := s.Record(&ev); err != nil {
		t.Fatal(err)
	}
	s.Close()
	var out bytes.Buffer
	if _, err := Export(dir, &out); err != nil {
		t.Fatal(err)
	}
	found := false
	for _, line := range bytes.Split(bytes.TrimSpace(out.Bytes()), []byte("\n")) {
		var back audit.Event
		if err := json.Unmarshal(line, &back); err != nil {
			t.Fatal(err)
		}
		if back.Type != audit.TypeInference {
			continue
		}
		found = true
		if back.Log == nil {
			t.Fatal("no log member")
		}
		back.Log = nil
		if !reflect.DeepEqual(back, ev) {
			t.Errorf("read back from the spool:\n%+v\nrecorded:\n%+v\n%s", back, ev, line)
		}
	}
	if !found {
		t.Fatal("the event is not in the spool")
	}
}
