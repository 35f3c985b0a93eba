package spool

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/valyala/fastjson"
	"golang.org/x/mod/sumdb/note"

	"github.com/auditproxy/auditproxy/audit"
	"github.com/auditproxy/auditproxy/auditlog"
	"github.com/auditproxy/auditproxy/internal/testutil"
)

// logBuffer collects a spool's log lines (JSON), safe for concurrent use.
// TestUnusableStateFileIsReported: a start without a usable state.json
// (deleted, corrupt, of an unknown version) ships everything again; it says
// so in one WARN with the number of events, in the recovery report and in a
// metric, and keeps an unreadable file aside. The count is exact across
// sealed segments and an epoch change, without reading them all.
func TestUnusableStateFileIsReported(t *testing.T) {
	signer, _ := testutil.Signer(t, "spool-test")
	for _, tc := range []struct {
		name    string
		mangle  func(path string)
		problem string
		kept    bool
	}{
		{"deleted", func(p string) { os.Remove(p) }, "state.json is missing", false},
		{"corrupt", func(p string) { os.WriteFile(p, []byte(`{"version":1,"acked":{"segm`), 0o600) }, "is not a spool state", true},
		{"unknown version", func(p string) { os.WriteFile(p, []byte(`{"version":7,"written":{},"acked":{}}`), 0o600) }, "unknown version 7", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			opts := Options{Forwarding: true, SegmentMaxBytes: 4 << 10, Log: logOpts(signer)}
			s := openTestSpool(t, dir, opts)
			for i := range 150 {
				s.Append(testutil.Event(i))
			}
			c, _ := s.Committed()
			s.Ack(c) // everything shipped
			s.Close()
			// A second epoch, so that one segment's count is not a seq difference.
			renamed := logOpts(signer)
			renamed.Name = "renamed-node"
			opts.Log = renamed
			s = openTestSpool(t, dir, opts)
			for i := range 150 {
				s.Append(testutil.Event(1000 + i))
			}
			c, _ = s.Committed()
			s.Ack(c)
			s.Close()
			ids, _ := exportIDs(t, dir)
			statePath := filepath.Join(dir, DirName, stateFileName)
			tc.mangle(statePath)

			var logs testutil.LogBuffer
			opts.Logger = logs.Logger()
			s = openTestSpool(t, dir, opts)
			if !strings.Contains(s.Recovery.StateLost, tc.problem) || s.Recovery.Resend != int64(len(ids)) {
				t.Errorf("recovery report: state lost %q, resend %d; want %q and the %d events in the spool",
					s.Recovery.StateLost, s.Recovery.Resend, tc.problem, len(ids))
			}
			if s.Acked() != (Pos{}) {
				t.Errorf("acked %v, want shipping from the oldest event", s.Acked())
			}
			warns := logs.Lines("spool state file unusable")
			if len(warns) != 1 || warns[0]["level"] != "WARN" || warns[0]["events_to_resend"] != float64(len(ids)) ||
				!strings.Contains(warns[0]["problem"].(string), tc.problem) || !strings.Contains(warns[0]["msg"].(string), "deduplicates") {
				t.Errorf("warning: %v", warns)
			}
			if got := testutil.MetricValue(t, s.Register, "auditproxy_spool_state_reset_events"); got != float64(len(ids)) {
				t.Errorf("auditproxy_spool_state_reset_events = %v, want %d", got, len(ids))
			}
			if _, err := os.Stat(statePath + quarantineExt); (err == nil) != tc.kept {
				t.Errorf("unreadable state file kept aside: %v, want %v", err == nil, tc.kept)
			}
		})
	}

	// A new spool has no state file and nothing to resend: no warning.
	var logs testutil.LogBuffer
	s := openTestSpool(t, t.TempDir(), Options{Forwarding: true, Logger: logs.Logger()})
	if s.Recovery.StateLost != "" || len(logs.Lines("state file")) != 0 {
		t.Errorf("a new spool reports a lost state: %q", s.Recovery.StateLost)
	}
}

// fakeDisk is a statfs for tests: the free bytes it reports, and how often
// it was asked.
type fakeDisk struct {
	free, calls atomic.Int64
}

func (d *fakeDisk) statfs(string) (int64, int64, error) {
	d.calls.Add(1)
	return d.free.Load(), 1 << 40, nil
}

// TestLowDiskSpaceRefusesBeforeTheUpstream: below the free-space reserve
// Admit refuses (the proxy then answers 503 without calling the upstream),
// events of admitted requests are still written, and once space is freed
// requests are taken again. The free space is read from a cache: once at
// open, then only on the timer, or after a commit that brings the estimate
// near the reserve; never per request.
func TestLowDiskSpaceRefusesBeforeTheUpstream(t *testing.T) {
	const reserve = 1 << 20
	disk := &fakeDisk{}
	disk.free.Store(100 << 20)
	s := openTestSpool(t, t.TempDir(), Options{MinFreeBytes: reserve, SpaceCheckInterval: time.Hour, statfs: disk.statfs})
	metric := func(name string) float64 { return testutil.MetricValue(t, s.Register, name) }
	start := time.Now()
	for i := range 200 {
		if err := s.Admit(); err != nil {
			t.Fatalf("Admit with 100 MiB free: %v", err)
		}
		if err := s.Append(testutil.Event(i)); err != nil {
			t.Fatal(err)
		}
	}
	// At open, then at most one per statfsAfterCommits while commits flow.
	if n, most := disk.calls.Load(), 2+int64(time.Since(start)/statfsAfterCommits); n > most {
		t.Errorf("%d statfs calls for 200 requests far from the reserve, want at most %d", n, most)
	}
	if metric("auditproxy_spool_writable") != 1 || metric("auditproxy_spool_free_bytes") != 100<<20 {
		t.Errorf("writable %v, free %v", metric("auditproxy_spool_writable"), metric("auditproxy_spool_free_bytes"))
	}

	// Near the reserve the spool's own commits are what fill the disk: once
	// the estimate (the last reading less what was committed since) is
	// within twice the reserve, each commit reads statfs again.
	s.Close()
	dir := filepath.Dir(s.dir)
	disk.free.Store(2*reserve + 16<<10)
	s = openTestSpool(t, dir, Options{MinFreeBytes: reserve, SpaceCheckInterval: time.Hour, statfs: disk.statfs})
	metric = func(name string) float64 { return testutil.MetricValue(t, s.Register, name) }
	before := disk.calls.Load()
	disk.free.Store(reserve - 1) // what the next statfs finds: another process wrote meanwhile
	commits := 0
	for ; disk.calls.Load() == before; commits++ {
		if commits > 1000 {
			t.Fatal("1,000 commits and no statfs, with the estimate far past the reserve")
		}
		if err := s.Append(testutil.Event(2000 + commits)); err != nil {
			t.Fatal(err)
		}
	}
	// Retry-After: the spool looks again at its next timer tick.
	err := s.Admit()
	var ae *AdmitError
	if !errors.As(err, &ae) || !errors.Is(err, ErrSpoolNotWritable) || ae.Reason != "low_disk_space" || ae.RetryAfter() != time.Hour {
		t.Fatalf("Admit below the reserve: %v (%+v)", err, ae)
	}
	if !strings.Contains(err.Error(), fmt.Sprintf("%d bytes free", reserve-1)) || !strings.Contains(err.Error(), "--spool-min-free-bytes") {
		t.Errorf("the refusal does not say what is wrong: %v", err)
	}
	if metric("auditproxy_spool_writable") != 0 || metric("auditproxy_spool_full_rejections_total") != 1 {
		t.Errorf("writable %v, rejections %v", metric("auditproxy_spool_writable"), metric("auditproxy_spool_full_rejections_total"))
	}
	// A request admitted before still records its event (the reserve is
	// for it).
	if err := s.Append(testutil.Event(1000)); err != nil {
		t.Errorf("an admitted request's event below the reserve: %v", err)
	}

	// Space is freed: the timer's check takes requests again.
	s.Close()
	disk.free.Store(100 << 20)
	s = openTestSpool(t, dir, Options{MinFreeBytes: reserve, SpaceCheckInterval: 10 * time.Millisecond, statfs: disk.statfs})
	disk.free.Store(reserve / 2)
	testutil.WaitFor(t, "the timer to see the disk below the reserve", func() bool { return s.Admit() != nil })
	disk.free.Store(100 << 20)
	testutil.WaitFor(t, "the timer to see space freed", func() bool { return s.Admit() == nil })
	if ids, _ := exportIDs(t, dir); len(ids) != 201+commits {
		t.Errorf("%d events in the spool, want %d", len(ids), 201+commits)
	}
}

// TestFailingCommitsRefuseUntilAProbeSucceeds: once a commit fails (an
// injected fsync error, as from a full or failing disk) Admit refuses;
// with every request refused nothing would be committed, so the spool
// probes by itself: with a log, a checkpoint commit, which fails, is
// counted and logged, and once the disk works again succeeds and clears the
// state. The checkpoint after the outage reports it, and the log verifies
// although checkpoints were missing for longer than their cadence.
func TestFailingCommitsRefuseUntilAProbeSucceeds(t *testing.T) {
	signer, keys := testutil.Signer(t, "spool-test")
	for _, withLog := range []bool{true, false} {
		t.Run(fmt.Sprintf("log=%v", withLog), func(t *testing.T) {
			dir := t.TempDir()
			var logs testutil.LogBuffer
			opts := Options{SpaceCheckInterval: 20 * time.Millisecond, Logger: logs.Logger()}
			var checkpoints atomic.Int64
			if withLog {
				opts.Log = logOpts(signer)
				opts.Log.CheckpointInterval = 100 * time.Millisecond
				opts.Log.OnCheckpoint = func(auditlog.SignedCheckpoint) { checkpoints.Add(1) }
			}
			s := openTestSpool(t, dir, opts)
			var fail atomic.Bool
			s.sync = func(f *os.File) error {
				if fail.Load() {
					return syscall.ENOSPC
				}
				return f.Sync()
			}
			metric := func(name string) float64 { return testutil.MetricValue(t, s.Register, name) }
			if err := s.Append(testutil.Event(1)); err != nil {
				t.Fatal(err)
			}
			if withLog {
				testutil.WaitFor(t, "a checkpoint before the outage", func() bool { return checkpoints.Load() > 0 })
			}
			fail.Store(true)
			if err := s.Append(testutil.Event(2)); !errors.Is(err, syscall.ENOSPC) {
				t.Fatalf("commit on a failing disk: %v", err)
			}
			err := s.Admit()
			var ae *AdmitError
			if !errors.As(err, &ae) || ae.Reason != "commit_failed" || !strings.Contains(err.Error(), "no space left on device") {
				t.Fatalf("Admit after a failed commit: %v", err)
			}
			if withLog {
				testutil.WaitFor(t, "failed checkpoint probes", func() bool { return metric("auditproxy_checkpoint_failures_total") >= 3 })
				// Checkpoints stay missing for well over their cadence
				// (100 ms; a verifier allows 1.15 s).
				time.Sleep(1500 * time.Millisecond)
			} else {
				testutil.WaitFor(t, "failed probes", func() bool { return metric("auditproxy_spool_commit_errors_total") >= 3 })
			}
			if s.Admit() == nil {
				t.Fatal("a spool whose probes fail takes requests")
			}
			// A standing failure is logged once, then at most every 30 s.
			if n := len(logs.Lines("spool commit failed")); n != 1 {
				t.Errorf("%d log lines for one standing failure, want 1", n)
			}
			fail.Store(false)
			testutil.WaitFor(t, "a probe to succeed", func() bool { return s.Admit() == nil })
			if metric("auditproxy_spool_writable") != 1 || len(logs.Lines("commits succeed again")) != 1 {
				t.Errorf("writable %v after the recovery", metric("auditproxy_spool_writable"))
			}
			if err := s.Append(testutil.Event(3)); err != nil {
				t.Fatal(err)
			}
			s.Close()
			if probes, _ := filepath.Glob(filepath.Join(dir, DirName, "probe*")); len(probes) > 0 {
				t.Errorf("probe files left: %v", probes)
			}
			ids, _ := exportIDs(t, dir)
			var inferences []string
			for _, id := range ids {
				if strings.HasPrefix(id, "ev-") {
					inferences = append(inferences, id)
				}
			}
			if strings.Join(inferences, ",") != "ev-000001,ev-000003" {
				t.Errorf("events: %v", inferences)
			}
			if !withLog {
				return
			}
			r := verifyDataDir(t, dir, keys)
			if !r.OK || r.Origins[0].Outages != 1 {
				t.Fatalf("the log after an outage: outages %d\n%s", r.Origins[0].Outages, testutil.Problems(r))
			}
			var out bytes.Buffer
			Export(dir, &out)
			if !bytes.Contains(out.Bytes(), []byte(`"outage":{"error":"fsync 1 events: no space left on device","failed_checkpoints":`)) {
				t.Errorf("no checkpoint reports the outage:\n%s", out.String())
			}
		})
	}
}

// framesBySeq returns the byte range of each frame of a segment's bytes, by
// the seq of its event.
func framesBySeq(t *testing.T, data []byte) map[int64]audit.ByteRange {
	t.Helper()
	sc := scanFrames(data, 0)
	if len(sc.damaged) > 0 || sc.tail.End > sc.tail.Start {
		t.Fatalf("segment already damaged: %+v", sc)
	}
	var p fastjson.Parser
	out := map[int64]audit.ByteRange{}
	for _, f := range sc.frames {
		pl := auditlog.PlaceOf(&p, data[f.Start+frameHeaderSize:f.End])
		if pl == nil {
			t.Fatalf("frame %v is in no log", f)
		}
		out[pl.Seq] = f
	}
	return out
}

// TestDamageInTheActiveSegment: damage in the middle of the active segment
// (not a torn tail: intact records follow it) loses only what it destroyed.
// Every intact record after it is kept, the damaged bytes are saved to a
// .corrupt file, the acknowledged position still points after the same
// record, and the log starts a new epoch whose log_started says what was
// lost (segment, byte range, the missing seqs) instead of reusing seqs that
// were shipped and checkpointed. The old epoch verifies except for exactly
// the missing seqs; the new one verifies.
func TestDamageInTheActiveSegment(t *testing.T) {
	signer, keys := testutil.Signer(t, "spool-test")
	for _, tc := range []struct {
		name          string
		damage        func(data []byte, f map[int64]audit.ByteRange) []byte
		first, last   int64 // the seqs lost
		wantTornBytes bool
	}{
		{"a flipped byte in one record", func(d []byte, f map[int64]audit.ByteRange) []byte {
			d[f[10].Start+40] ^= 0x20
			return d
		}, 10, 10, false},
		{"a zeroed range across records", func(d []byte, f map[int64]audit.ByteRange) []byte {
			clear(d[f[12].Start+30 : f[15].Start+5])
			return d
		}, 12, 15, false},
		{"a length out of range", func(d []byte, f map[int64]audit.ByteRange) []byte {
			binary.LittleEndian.PutUint32(d[f[10].Start:], 0xffffffff)
			return d
		}, 10, 10, false},
		{"damage at the start of the segment", func(d []byte, f map[int64]audit.ByteRange) []byte {
			d[f[0].Start+frameHeaderSize+3] ^= 0x01
			return d
		}, 0, 0, false},
		{"damage and a torn tail", func(d []byte, f map[int64]audit.ByteRange) []byte {
			d[f[10].Start+40] ^= 0x20
			last := f[int64(len(f)-1)]
			return d[:last.Start+(last.End-last.Start)/2]
		}, 10, 10, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			s := openTestSpool(t, dir, Options{Forwarding: true, Log: logOpts(signer)})
			for i := range 30 {
				s.Append(testutil.Event(i))
			}
			// The aggregator acknowledged up to the event at seq 20.
			r := s.NewReader(Pos{})
			var acked Pos
			var p fastjson.Parser
			for {
				rec, end, ok, err := r.Next()
				if err != nil || !ok {
					t.Fatal("seq 20 not found", err)
				}
				if pl := auditlog.PlaceOf(&p, rec); pl != nil && pl.Seq == 20 {
					acked = end
					break
				}
			}
			r.Close()
			s.Ack(acked)
			s.SaveState()
			image := crashImage(t, dir)
			segPath := filepath.Join(image, DirName, segmentName(1)+segmentExt)
			data, _ := os.ReadFile(segPath)
			frames := framesBySeq(t, data)
			origin := ""
			if pl := auditlog.PlaceOf(&p, data[frames[0].Start+frameHeaderSize:frames[0].End]); pl != nil {
				origin = pl.Origin
			}
			damaged := tc.damage(bytes.Clone(data), frames)
			os.WriteFile(segPath, damaged, 0o600)

			var logs testutil.LogBuffer
			s2 := openTestSpool(t, image, Options{Forwarding: true, Log: logOpts(signer), Logger: logs.Logger()})
			lost := s2.Recovery.Lost
			if len(lost) != 1 || tc.first > 0 && (lost[0].Missing == nil || *lost[0].Missing != (audit.SeqRange{Origin: origin, First: tc.first, Last: tc.last})) {
				t.Fatalf("recovery report: %+v, want seqs %d..%d of %s lost", lost, tc.first, tc.last, origin)
			}
			if tc.first == 0 && (lost[0].Before != nil || lost[0].After == nil || lost[0].After.Seq != 1) {
				t.Errorf("damage before any record: %+v", lost[0])
			}
			if (s2.Recovery.RecordsCut > 0) != tc.wantTornBytes {
				t.Errorf("records cut %d, torn tail %v", s2.Recovery.RecordsCut, tc.wantTornBytes)
			}
			saved, err := os.ReadFile(filepath.Join(image, DirName, lost[0].SavedTo))
			if err != nil || !bytes.Equal(saved, damaged[lost[0].Start:lost[0].End]) {
				t.Errorf("saved damage %s: %v, %d bytes; want the %d damaged", lost[0].SavedTo, err, len(saved), lost[0].End-lost[0].Start)
			}
			if len(logs.Lines("committed records of the spool are damaged")) != 1 {
				t.Error("the damage is not logged")
			}
			// Shipping resumes after the same record.
			r = s2.NewReader(s2.Acked())
			rec, _, ok, err := r.Next()
			r.Close()
			if pl := auditlog.PlaceOf(&p, rec); err != nil || !ok || pl == nil || pl.Seq != 21 || pl.Origin != origin {
				t.Errorf("first unacknowledged record after the repair: %v %v %s", err, pl, rec)
			}
			s2.Append(testutil.Event(100))
			s2.Close()

			// Export: every intact record of the old epoch, then the new one.
			seqs := map[int64]bool{}
			var newOrigin string
			var out bytes.Buffer
			if _, err := Export(image, &out); err != nil {
				t.Fatal(err)
			}
			for _, line := range bytes.Split(bytes.TrimSpace(out.Bytes()), []byte("\n")) {
				pl := auditlog.PlaceOf(&p, line)
				if pl.Origin == origin {
					seqs[pl.Seq] = true
				} else {
					newOrigin = pl.Origin
				}
			}
			lastSeq := int64(len(frames) - 1)
			if tc.wantTornBytes {
				lastSeq--
			}
			for seq := int64(0); seq <= lastSeq; seq++ {
				if seqs[seq] == (seq >= tc.first && seq <= tc.last) {
					t.Errorf("seq %d present: %v", seq, seqs[seq])
				}
			}
			started := logStartedOf(t, image)
			epochs := 2
			if tc.first == 0 {
				epochs = 1 // the old epoch's log_started was the damaged record
			}
			if len(started) != epochs || newOrigin == "" {
				t.Fatalf("%d log_started events, new origin %q; want a new epoch", len(started), newOrigin)
			}
			ls := started[epochs-1]["log_started"].(map[string]any)
			if !strings.HasPrefix(ls["reason"].(string), "committed records were lost: ") {
				t.Errorf("new epoch's reason: %v", ls["reason"])
			}
			l0 := ls["lost"].([]any)[0].(map[string]any)
			if l0["segment"] != segmentName(1)+segmentExt || l0["offset"] != float64(lost[0].Start) {
				t.Errorf("log_started's lost: %v", l0)
			}
			if tc.first > 0 {
				if m := l0["missing_seqs"].(map[string]any); m["first"] != float64(tc.first) || m["last"] != float64(tc.last) || m["origin"] != origin {
					t.Errorf("log_started's missing seqs: %v", m)
				}
			}
			// The verifier sees exactly the loss.
			rep := verifyDataDir(t, image, keys)
			for _, o := range rep.Origins {
				switch o.Origin {
				case newOrigin:
					if !o.OK {
						t.Errorf("new epoch: %v", o.Problems)
					}
				case origin:
					want := fmt.Sprintf("seq %d missing", tc.first)
					if tc.last > tc.first {
						want = fmt.Sprintf("seq %d..%d missing", tc.first, tc.last)
					}
					if len(o.Problems) == 0 || !strings.HasPrefix(o.Problems[0], want) {
						t.Errorf("old epoch's problems %v, want %q first", o.Problems, want)
					}
				}
			}
			// Repaired for good: the next start finds nothing to repair and
			// continues the new epoch.
			s3 := openTestSpool(t, image, Options{Forwarding: true, Log: logOpts(signer)})
			s3.Close()
			if len(s3.Recovery.Lost) != 0 || len(logStartedOf(t, image)) != epochs {
				t.Errorf("a second start repaired again: %+v", s3.Recovery)
			}
		})
	}
}

// sealedSpool returns a data dir whose spool (a log) holds n events in
// sealed segments of about 4 KiB and an active one, closed.
func sealedSpool(t *testing.T, signer note.Signer, n int) string {
	t.Helper()
	dir := t.TempDir()
	s := openTestSpool(t, dir, Options{Forwarding: true, SegmentMaxBytes: 4 << 10, Log: logOpts(signer)})
	for i := range n {
		if err := s.Append(testutil.Event(i)); err != nil {
			t.Fatal(err)
		}
	}
	testutil.WaitFor(t, "sealing", func() bool {
		s.stateMu.Lock()
		defer s.stateMu.Unlock()
		return len(s.sealQueue) == 0
	})
	s.Close()
	return dir
}

// eventsOf returns the "id" of each record of a segment's bytes, in order,
// and the seq of each.
func eventsOf(t *testing.T, data []byte) (ids []string, seqs []int64) {
	t.Helper()
	sc := scanFrames(data, 0)
	var p fastjson.Parser
	for _, f := range sc.frames {
		v, err := p.ParseBytes(data[f.Start+frameHeaderSize : f.End])
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, string(v.GetStringBytes("id")))
		seqs = append(seqs, v.GetInt64("log", "seq"))
	}
	return ids, seqs
}

// TestDamagedSegmentIsQuarantinedAndReadPast: a damaged segment the
// committer is done with (sealed, or plain awaiting its seal) no longer
// stops a reader (the shipper's). Reader.Quarantine lets it read every
// intact record; the spool keeps the damaged file aside (.damaged) and a
// segment of its intact records in its place, records a segment_damaged
// event (read too) that says what was lost, counts it and logs it; export
// then reads without error and names the file kept aside; verify reports
// the lost seqs as missing. (forward's TestDamagedSegmentIsShippedPast
// ships the same.)
func TestDamagedSegmentIsQuarantinedAndReadPast(t *testing.T) {
	signer, keys := testutil.Signer(t, "spool-test")
	const damagedID = 3
	for _, tc := range []struct {
		name string
		// damage damages segment damagedID of spoolDir, whose records are
		// data.
		damage func(t *testing.T, spoolDir string, data []byte)
	}{
		{"a flipped byte in a record of a sealed segment", func(t *testing.T, spoolDir string, data []byte) {
			sc := scanFrames(data, 0)
			data = bytes.Clone(data)
			data[sc.frames[2].Start+30] ^= 0x08
			if err := writeCompressed(filepath.Join(spoolDir, segmentName(damagedID)+sealedExt), data); err != nil {
				t.Fatal(err)
			}
		}},
		{"a damaged compressed stream", func(t *testing.T, spoolDir string, data []byte) {
			// What a flip in the compressed bytes destroys depends on
			// where it lands: wrong bytes (caught by the frames' CRCs),
			// a stream that stops decoding, or both.
			path := filepath.Join(spoolDir, segmentName(damagedID)+sealedExt)
			z, _ := os.ReadFile(path)
			z[len(z)/2] ^= 0xff
			os.WriteFile(path, z, 0o600)
		}},
		{"a plain segment awaiting its seal", func(t *testing.T, spoolDir string, data []byte) {
			sc := scanFrames(data, 0)
			data = bytes.Clone(data)
			binary.LittleEndian.PutUint32(data[sc.frames[1].Start:], 1<<30)
			os.Remove(filepath.Join(spoolDir, segmentName(damagedID)+sealedExt))
			os.WriteFile(filepath.Join(spoolDir, segmentName(damagedID)+segmentExt), data, 0o600)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := sealedSpool(t, signer, 120)
			spoolDir := filepath.Join(dir, DirName)
			allIDs, _ := exportIDs(t, dir)
			data, _, err := readSegmentBytes(filepath.Join(spoolDir, segmentName(damagedID)+sealedExt))
			if err != nil {
				t.Fatal(err)
			}
			segIDs, segSeqs := eventsOf(t, data)
			tc.damage(t, spoolDir, data)
			damagedPath, _ := segmentPath(spoolDir, damagedID)
			damagedBytes, _ := os.ReadFile(damagedPath)
			// What the damage destroyed: the records a salvage no longer
			// finds.
			sv, err := salvageSegment(damagedPath, false)
			if err != nil {
				t.Fatal(err)
			}
			kept, _ := eventsOf(t, sv.intactBytes())
			survived := map[string]bool{}
			for _, id := range kept {
				survived[id] = true
			}
			lost := map[string]bool{}
			var lostSeqs []int64
			for i, id := range segIDs {
				if !survived[id] {
					lost[id] = true
					lostSeqs = append(lostSeqs, segSeqs[i])
				}
			}
			if len(lost) == 0 {
				t.Skip("this damage destroyed no record")
			}
			if _, err := Export(dir, io.Discard); err == nil {
				t.Fatal("export of the damaged spool succeeded")
			}

			// Read as a shipper reads: handing each read error to
			// Quarantine, which must let the reader go on.
			var logs testutil.LogBuffer
			s := openTestSpool(t, dir, Options{Forwarding: true, SegmentMaxBytes: 4 << 10, Log: logOpts(signer), Logger: logs.Logger()})
			r := s.NewReader(Pos{})
			defer r.Close()
			var records []map[string]any
			arrived := func() map[string]bool {
				got := map[string]bool{}
				for _, rec := range records {
					if id, ok := rec["id"].(string); ok {
						got[id] = true
					}
				}
				return got
			}
			t.Cleanup(func() {
				if t.Failed() {
					t.Log(logs.String())
				}
			})
			testutil.WaitFor(t, "every intact event and the segment_damaged event read", func() bool {
				for {
					rec, _, ok, err := r.Next()
					if err != nil {
						if !r.Quarantine(err) {
							t.Fatalf("the reader cannot go on past %v", err)
						}
						continue
					}
					if !ok {
						break
					}
					var m map[string]any
					if err := json.Unmarshal(rec, &m); err != nil {
						t.Fatalf("record %q: %v", rec, err)
					}
					records = append(records, m)
				}
				got := arrived()
				for _, id := range allIDs {
					if !lost[id] && !got[id] {
						return false
					}
				}
				for _, rec := range records {
					if rec["type"] == audit.TypeSegmentDamaged {
						return true
					}
				}
				return false
			})
			got := arrived()
			for id := range lost {
				if got[id] {
					t.Errorf("event %s, in the damaged range, arrived", id)
				}
			}
			var details audit.SegmentDamage
			for _, rec := range records {
				if rec["type"] == audit.TypeSegmentDamaged {
					b, _ := json.Marshal(rec["details"])
					if err := json.Unmarshal(b, &details); err != nil {
						t.Fatal(err)
					}
				}
			}
			if details.Segment != segmentName(damagedID)+sealedExt || details.RecordsKept != len(segIDs)-len(lost) || len(details.Damaged) == 0 {
				t.Errorf("segment_damaged details: %+v", details)
			}
			var said []int64
			for _, d := range details.Damaged {
				if m := d.Missing; m != nil {
					for seq := m.First; seq <= m.Last; seq++ {
						said = append(said, seq)
					}
				}
			}
			if fmt.Sprint(said) != fmt.Sprint(lostSeqs) {
				t.Errorf("segment_damaged says seqs %v are missing, want %v: %+v", said, lostSeqs, details.Damaged)
			}
			keptFile, err := os.ReadFile(filepath.Join(spoolDir, details.SavedTo))
			if err != nil || !bytes.Equal(keptFile, damagedBytes) {
				t.Errorf("damaged file kept as %v: %v, equal %v", details.SavedTo, err, bytes.Equal(keptFile, damagedBytes))
			}
			if got := testutil.MetricValue(t, s.Register, "auditproxy_spool_segments_damaged_total"); got != 1 {
				t.Errorf("auditproxy_spool_segments_damaged_total = %v", got)
			}
			if len(logs.Lines("a spool segment is damaged")) != 1 {
				t.Error("the damage is not logged")
			}
			r.Close()
			s.Close()

			var out bytes.Buffer
			st, err := Export(dir, &out)
			if err != nil || len(st.Quarantined) != 1 {
				t.Errorf("export after the quarantine: %v, quarantined %v", err, st.Quarantined)
			}
			rep := verifyDataDir(t, dir, keys)
			for i := 0; i < len(lostSeqs); {
				j := i
				for j+1 < len(lostSeqs) && lostSeqs[j+1] == lostSeqs[j]+1 {
					j++
				}
				want := fmt.Sprintf("seq %d missing", lostSeqs[i])
				if j > i {
					want = fmt.Sprintf("seq %d..%d missing", lostSeqs[i], lostSeqs[j])
				}
				if rep.OK || !strings.Contains(testutil.Problems(rep), want) {
					t.Errorf("verify: want %q\n%s", want, testutil.Problems(rep))
				}
				i = j + 1
			}
		})
	}
}

// TestReaderDoesNotSkipADamagedRecord: a read that fails on a damaged
// record fails again when tried again, on the same record; it never goes on
// to the next one as if the damaged one were not there (a sealed segment is
// read as a stream, and the failed read had consumed its bytes).
func TestReaderDoesNotSkipADamagedRecord(t *testing.T) {
	signer, _ := testutil.Signer(t, "spool-test")
	dir := sealedSpool(t, signer, 60)
	path := filepath.Join(dir, DirName, segmentName(2)+sealedExt)
	data, _, _ := readSegmentBytes(path)
	sc := scanFrames(data, 0)
	data[sc.frames[1].Start+30] ^= 0x08
	if err := writeCompressed(path, data); err != nil {
		t.Fatal(err)
	}
	s := openTestSpool(t, dir, Options{Forwarding: true, Log: logOpts(signer)})
	r := s.NewReader(Pos{})
	defer r.Close()
	var first error
	for range 1000 {
		_, end, ok, err := r.Next()
		if err != nil {
			if first == nil {
				first = err
				continue // try again
			}
			if err.Error() != first.Error() {
				t.Fatalf("second read: %v, first %v", err, first)
			}
			return
		}
		if first != nil {
			t.Fatalf("after %v, the reader went on to the record ending at %v", first, end)
		}
		if !ok {
			t.Fatal("read the whole spool without meeting the damage")
		}
	}
}

// unseal turns sealed segment id of spoolDir back into a plain one, as a
// crash after its rotation and before its seal leaves it, and returns its
// bytes.
func unseal(t *testing.T, spoolDir string, id uint64) []byte {
	t.Helper()
	sealed := filepath.Join(spoolDir, segmentName(id)+sealedExt)
	data, undecodable, err := readSegmentBytes(sealed)
	if err != nil || undecodable != nil {
		t.Fatal(err, undecodable)
	}
	if err := os.WriteFile(filepath.Join(spoolDir, segmentName(id)+segmentExt), data, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(sealed); err != nil {
		t.Fatal(err)
	}
	return data
}

// TestQuarantineOfASegmentAwaitingItsSeal: the shipper quarantines a
// damaged segment that waits in the seal queue while the maintenance loop
// is about to seal it. The seal finds the replacement sealed already, and
// the queue loses that segment only: every other one is still sealed, and
// nothing panics (a panic there, in a goroutine of its own, would end the
// sidecar).
func TestQuarantineOfASegmentAwaitingItsSeal(t *testing.T) {
	signer, _ := testutil.Signer(t, "spool-test")
	for _, queued := range []uint64{1, 2, 3} {
		t.Run(fmt.Sprintf("%d segments queued", queued), func(t *testing.T) {
			dir := sealedSpool(t, signer, 120)
			spoolDir := filepath.Join(dir, DirName)
			for id := uint64(1); id <= queued; id++ {
				data := unseal(t, spoolDir, id)
				if id == 1 {
					sc := scanFrames(data, 0)
					data[sc.frames[2].Start+30] ^= 0x08
					os.WriteFile(filepath.Join(spoolDir, segmentName(id)+segmentExt), data, 0o600)
				}
			}
			var sp atomic.Pointer[Spool]
			var quarantined atomic.Bool
			opts := Options{Forwarding: true, SegmentMaxBytes: 4 << 10, Log: logOpts(signer),
				beforeSeal: func(id uint64) {
					// The shipper met the damage while the maintenance loop
					// was about to seal the segment.
					if id == 1 && quarantined.CompareAndSwap(false, true) {
						if _, err := sp.Load().quarantine(1); err != nil {
							t.Errorf("quarantine: %v", err)
						}
					}
				}}
			s := openTestSpool(t, dir, opts)
			sp.Store(s)
			s.stateMu.Lock()
			if got := fmt.Sprint(s.sealQueue); len(s.sealQueue) != int(queued) {
				t.Fatalf("seal queue at open %s, want segments 1 to %d", got, queued)
			}
			s.stateMu.Unlock()
			s.wakeMaintenance()
			testutil.WaitFor(t, "the seal queue to empty", func() bool {
				s.stateMu.Lock()
				defer s.stateMu.Unlock()
				return len(s.sealQueue) == 0
			})
			if !quarantined.Load() {
				t.Fatal("segment 1 was not quarantined")
			}
			for id := uint64(1); id <= queued; id++ {
				if len(spoolFiles(t, s, segmentName(id)+segmentExt)) != 0 || len(spoolFiles(t, s, segmentName(id)+sealedExt)) != 1 {
					t.Errorf("segment %d is not sealed: %v", id, spoolFiles(t, s, segmentName(id)+"*"))
				}
			}
		})
	}
}

// TestLostCommittedRecordsStartANewEpoch: the disk loses the active segment
// (the newest file is then a sealed one) or its tail, at whole records, so
// that nothing in the spool looks damaged. The state file (written by the
// shipper as it goes, or only at a clean stop without forwarding, so absent
// after a crash) or else the log's tree state (whose hashes are written
// only once their commit is fsynced, so it is never legitimately ahead)
// shows that more was committed: the log starts a new epoch whose
// log_started says which seqs were lost, instead of continuing the old one
// at seqs already shipped and checkpointed (a fork).
func TestLostCommittedRecordsStartANewEpoch(t *testing.T) {
	signer, keys := testutil.Signer(t, "spool-test")
	for _, tc := range []struct {
		name       string
		forwarding bool // the state file says how far the spool was written
		lose       func(t *testing.T, spoolDir string, active uint64)
	}{
		{"the active segment lost, the state file written", true, func(t *testing.T, dir string, active uint64) {
			os.Remove(filepath.Join(dir, segmentName(active)+segmentExt))
		}},
		{"the active segment lost, no state file", false, func(t *testing.T, dir string, active uint64) {
			os.Remove(filepath.Join(dir, segmentName(active)+segmentExt))
		}},
		{"the active segment's last records lost, no state file", false, func(t *testing.T, dir string, active uint64) {
			path := filepath.Join(dir, segmentName(active)+segmentExt)
			data, _ := os.ReadFile(path)
			sc := scanFrames(data, 0)
			os.Truncate(path, sc.frames[len(sc.frames)-3].Start)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			s := openTestSpool(t, dir, Options{Forwarding: tc.forwarding, SegmentMaxBytes: 4 << 10, Log: logOpts(signer)})
			for i := range 60 {
				s.Append(testutil.Event(i))
			}
			testutil.WaitFor(t, "sealing", func() bool {
				s.stateMu.Lock()
				defer s.stateMu.Unlock()
				return len(s.sealQueue) == 0
			})
			committed, _ := s.Committed()
			if tc.forwarding {
				s.Ack(committed) // shipped and acknowledged
				if err := s.SaveState(); err != nil {
					t.Fatal(err)
				}
			}
			origin, size := s.chain.Origin(), s.chain.Size()
			image := crashImage(t, dir) // kill -9
			tc.lose(t, filepath.Join(image, DirName), committed.Segment)

			s2 := openTestSpool(t, image, Options{Forwarding: tc.forwarding, SegmentMaxBytes: 4 << 10, Log: logOpts(signer)})
			if !s2.Recovery.CommittedLost || s2.chain.Origin() == origin {
				t.Fatalf("committed lost %v (%s); the log continues %s at seq %d, seqs up to %d were committed",
					s2.Recovery.CommittedLost, s2.Recovery.CommittedLostDetail, s2.chain.Origin(), s2.chain.Size(), size-1)
			}
			if tc.forwarding && s2.activeID <= committed.Segment {
				t.Errorf("the new active segment %d takes the id of the lost one, which the state file names", s2.activeID)
			}
			s2.Append(testutil.Event(100))
			s2.Close()
			started := logStartedOf(t, image)
			ls := started[len(started)-1]["log_started"].(map[string]any)
			if !strings.HasPrefix(ls["reason"].(string), "committed records were lost: ") || ls["committed_lost"] == nil {
				t.Errorf("the new epoch's log_started: %v", ls)
			}
			if !tc.forwarding {
				// Only the tree state could tell: it names the lost seqs.
				if want := fmt.Sprintf("..%d were committed", size-1); !strings.Contains(ls["committed_lost"].(string), want) {
					t.Errorf("committed_lost %q, want it to name the seqs up to %d", ls["committed_lost"], size-1)
				}
			}
			for _, o := range verifyDataDir(t, image, keys).Origins {
				if o.Origin != origin && !o.OK {
					t.Errorf("the new epoch: %v", o.Problems)
				}
			}
			// Said once: the next start continues the new epoch.
			s3 := openTestSpool(t, image, Options{Forwarding: tc.forwarding, Log: logOpts(signer)})
			s3.Close()
			if s3.Recovery.CommittedLost || s3.chain.Origin() != s2.chain.Origin() {
				t.Errorf("the start after: committed lost %v (%s), origin %s, want %s", s3.Recovery.CommittedLost,
					s3.Recovery.CommittedLostDetail, s3.chain.Origin(), s2.chain.Origin())
			}
		})
	}
}

// damageSeqs zeroes the bytes of a segment file from inside the record of
// seq from to inside that of seq to (intact records on both sides).
func damageSeqs(t *testing.T, segPath string, from, to int64) {
	t.Helper()
	data, err := os.ReadFile(segPath)
	if err != nil {
		t.Fatal(err)
	}
	f := framesBySeq(t, data)
	clear(data[f[from].Start+30 : f[to].Start+5])
	if err := os.WriteFile(segPath, data, 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestRepairIsKeptInTheStateFile: a repair of the active segment moves the
// positions after the damage, and a loss of committed records leaves the
// state file saying more than the spool holds. The state file is saved
// with the start that found them, so that a kill -9 later does not report
// the same loss again (as committed records lost, with yet another epoch):
// without forwarding, or with the aggregator unreachable, nothing else
// writes it before a clean stop.
func TestRepairIsKeptInTheStateFile(t *testing.T) {
	signer, _ := testutil.Signer(t, "spool-test")
	for _, tc := range []struct {
		name   string
		damage func(t *testing.T, spoolDir string)
	}{
		{"damage in the middle of the active segment", func(t *testing.T, dir string) {
			damageSeqs(t, filepath.Join(dir, segmentName(1)+segmentExt), 10, 20)
		}},
		{"the active segment's tail lost", func(t *testing.T, dir string) {
			path := filepath.Join(dir, segmentName(1)+segmentExt)
			data, _ := os.ReadFile(path)
			os.Truncate(path, framesBySeq(t, data)[30].Start)
		}},
	} {
		for _, forwarding := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s, forwarding %v", tc.name, forwarding), func(t *testing.T) {
				dir := t.TempDir()
				opts := Options{Forwarding: forwarding, Log: logOpts(signer)}
				s := openTestSpool(t, dir, opts)
				for i := range 40 {
					s.Append(testutil.Event(i))
				}
				s.Close() // the state file says where the spool ends
				tc.damage(t, filepath.Join(dir, DirName))

				s2 := openTestSpool(t, dir, opts)
				if len(s2.Recovery.Lost) == 0 && !s2.Recovery.CommittedLost {
					t.Fatalf("the loss was not found: %+v", s2.Recovery)
				}
				for i := range 3 {
					if err := s2.Append(testutil.Event(100 + i)); err != nil {
						t.Fatal(err)
					}
				}
				image := crashImage(t, dir) // kill -9: no state saved at a stop

				s3 := openTestSpool(t, image, opts)
				s3.Close()
				if s3.Recovery.CommittedLost || len(s3.Recovery.Lost) > 0 || s3.chain.Origin() != s2.chain.Origin() {
					t.Errorf("the start after the repair reports a loss again: committed lost %v (%s), lost %v; origin %s, want %s",
						s3.Recovery.CommittedLost, s3.Recovery.CommittedLostDetail, s3.Recovery.Lost, s3.chain.Origin(), s2.chain.Origin())
				}
				if n := len(logStartedOf(t, image)); n != 2 {
					t.Errorf("%d epochs, want 2 (the first, and the one after the loss)", n)
				}
			})
		}
	}
}

// TestNewEpochSurvivesACrashBeforeItsFirstEvent: a start that finds
// committed records lost repairs the spool (the segment rewritten without
// its damage, the state file saved, the tree state reset for the new
// epoch) before the new epoch's log_started is committed, which an idle
// sidecar does with its first event or checkpoint. A crash in between must
// not lose the record of the loss: the next start begins the epoch again
// and its log_started says what was lost (segment, offsets, missing seqs,
// saved_to), instead of continuing the old log or blaming its tree state.
// Once log_started is committed, the record is gone, and a record left by
// a crash just after that commit changes nothing.
func TestNewEpochSurvivesACrashBeforeItsFirstEvent(t *testing.T) {
	signer, keys := testutil.Signer(t, "spool-test")
	for _, tc := range []struct {
		name string
		lose func(t *testing.T, spoolDir string)
		want string // in the reason of the epoch that the start after the crash begins
	}{
		{"damage in the middle of the active segment", func(t *testing.T, dir string) {
			damageSeqs(t, filepath.Join(dir, segmentName(1)+segmentExt), 10, 12)
		}, "(seqs 10..12 of "},
		{"the active segment's tail lost", func(t *testing.T, dir string) {
			path := filepath.Join(dir, segmentName(1)+segmentExt)
			data, _ := os.ReadFile(path)
			os.Truncate(path, framesBySeq(t, data)[30].Start)
		}, "seqs 30..45 were committed and are no longer in the spool"}, // 40 events, 5 checkpoints, log_started
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			opts := Options{Forwarding: true, Log: logOpts(signer)}
			s := openTestSpool(t, dir, opts)
			for i := range 40 {
				s.Append(testutil.Event(i))
			}
			origin := s.chain.Origin()
			image := crashImage(t, dir) // kill -9, no state file
			tc.lose(t, filepath.Join(image, DirName))

			s2 := openTestSpool(t, image, opts)
			if s2.chain.Origin() == origin {
				t.Fatalf("the loss was not found: %+v", s2.Recovery)
			}
			image2 := crashImage(t, image) // kill -9 before anything is committed

			s3 := openTestSpool(t, image2, opts)
			if err := s3.Append(testutil.Event(200)); err != nil {
				t.Fatal(err)
			}
			if _, err := os.Stat(filepath.Join(image2, DirName, auditlog.PendingEpochFile)); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("the record of the new epoch is still there once its log_started is committed: %v", err)
			}
			s3.Close()
			started := logStartedOf(t, image2)
			ls := started[len(started)-1]["log_started"].(map[string]any)
			if reason := ls["reason"].(string); len(started) != 2 || s3.chain.Origin() == origin || !strings.Contains(reason, tc.want) {
				t.Fatalf("%d epochs; the last one's reason %q, want it to say %q", len(started), reason, tc.want)
			}
			if lost, _ := ls["lost"].([]any); len(s2.Recovery.Lost) > 0 {
				l0, _ := lost[0].(map[string]any)
				if len(lost) != 1 || l0["saved_to"] != s2.Recovery.Lost[0].SavedTo || l0["missing_seqs"] == nil {
					t.Errorf("log_started's lost: %v, want %+v", lost, s2.Recovery.Lost)
				}
			}
			for _, o := range verifyDataDir(t, image2, keys).Origins {
				if o.Origin != origin && !o.OK {
					t.Errorf("the new epoch: %v", o.Problems)
				}
			}

			// A crash just after log_started's commit, before the record's
			// removal: the next start sees the epoch's events and goes on.
			b, err := json.Marshal(map[string]string{"origin": s3.chain.Origin(), "reason": "x", "committed_lost": "y"})
			if err != nil {
				t.Fatal(err)
			}
			os.WriteFile(filepath.Join(image2, DirName, auditlog.PendingEpochFile), b, 0o600)
			s4 := openTestSpool(t, image2, opts)
			s4.Close()
			if s4.chain.Origin() != s3.chain.Origin() || s4.Recovery.CommittedLost {
				t.Errorf("a record of an epoch already started began another: %s after %s (%+v)", s4.chain.Origin(), s3.chain.Origin(), s4.Recovery)
			}
		})
	}
}

// damageSealed flips a byte in the third record of sealed segment id of
// spoolDir.
func damageSealed(t *testing.T, spoolDir string, id uint64) {
	t.Helper()
	path := filepath.Join(spoolDir, segmentName(id)+sealedExt)
	data, _, err := readSegmentBytes(path)
	if err != nil {
		t.Fatal(err)
	}
	sc := scanFrames(data, 0)
	data[sc.frames[2].Start+30] ^= 0x08
	if err := writeCompressed(path, data); err != nil {
		t.Fatal(err)
	}
}

// segmentDamagedEvents returns the segment_damaged events of a data dir's
// spool.
func segmentDamagedEvents(t *testing.T, dataDir string) []audit.SegmentDamage {
	t.Helper()
	var out bytes.Buffer
	Export(dataDir, &out)
	var evs []audit.SegmentDamage
	for _, line := range bytes.Split(bytes.TrimSpace(out.Bytes()), []byte("\n")) {
		var ev struct {
			Type    string
			Details audit.SegmentDamage
		}
		if json.Unmarshal(line, &ev) == nil && ev.Type == audit.TypeSegmentDamaged {
			evs = append(evs, ev.Details)
		}
	}
	return evs
}

// TestSegmentDamagedIsCommittedBeforeTheQuarantine: once a damaged segment
// is replaced by its intact records, only the segment_damaged event says
// what it lost. So the event is committed first, and a spool that cannot
// commit it leaves the segment as it is, to be quarantined once it can:
// after Close (serve drains the shipper after closing the spool), or while
// its commits fail. The quarantine that follows records the event.
func TestSegmentDamagedIsCommittedBeforeTheQuarantine(t *testing.T) {
	signer, _ := testutil.Signer(t, "spool-test")
	for _, tc := range []struct {
		name string
		// refuse makes s unable to commit; allow undoes it, or returns a
		// spool that can.
		refuse func(t *testing.T, s *Spool) (allow func() *Spool)
	}{
		{"the spool closed", func(t *testing.T, s *Spool) func() *Spool {
			s.Close()
			return func() *Spool {
				return openTestSpool(t, filepath.Dir(s.dir), Options{Forwarding: true, Log: logOpts(signer)})
			}
		}},
		{"commits failing", func(t *testing.T, s *Spool) func() *Spool {
			var failing atomic.Bool
			failing.Store(true)
			s.sync = func(f *os.File) error {
				if failing.Load() {
					return errors.New("injected EIO")
				}
				return f.Sync()
			}
			return func() *Spool { failing.Store(false); return s }
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := sealedSpool(t, signer, 120)
			spoolDir := filepath.Join(dir, DirName)
			damageSealed(t, spoolDir, 3)
			before, _ := os.ReadFile(filepath.Join(spoolDir, segmentName(3)+sealedExt))
			s := openTestSpool(t, dir, Options{Forwarding: true, Log: logOpts(signer)})
			allow := tc.refuse(t, s)
			if _, err := s.quarantine(3); err == nil {
				t.Fatal("quarantined without a segment_damaged event committed")
			}
			after, _ := os.ReadFile(filepath.Join(spoolDir, segmentName(3)+sealedExt))
			if kept, _ := filepath.Glob(filepath.Join(spoolDir, "*"+damagedExt)); !bytes.Equal(before, after) || len(kept) > 0 {
				t.Fatalf("the segment was replaced (%v) or kept aside (%v) without its event", !bytes.Equal(before, after), kept)
			}
			s = allow()
			if _, err := s.quarantine(3); err != nil {
				t.Fatal(err)
			}
			s.Close()
			if evs := segmentDamagedEvents(t, dir); len(evs) != 1 || evs[0].Segment != segmentName(3)+sealedExt {
				t.Errorf("segment_damaged events: %+v", evs)
			}
		})
	}
}

// TestQuarantineKeepsEveryDamagedFile: a segment quarantined twice (its
// replacement damaged in turn) keeps both damaged files, each named by its
// segment_damaged event; a link left by a quarantine a crash interrupted is
// taken over. The spool counts every file once.
func TestQuarantineKeepsEveryDamagedFile(t *testing.T) {
	signer, _ := testutil.Signer(t, "spool-test")
	dir := sealedSpool(t, signer, 120)
	spoolDir := filepath.Join(dir, DirName)
	damageSealed(t, spoolDir, 3)
	path := filepath.Join(spoolDir, segmentName(3)+sealedExt)
	// A quarantine a crash interrupted after its link.
	if err := os.Link(path, path+damagedExt); err != nil {
		t.Fatal(err)
	}
	s := openTestSpool(t, dir, Options{Forwarding: true, Log: logOpts(signer)})
	if _, err := s.quarantine(3); err != nil {
		t.Fatal(err)
	}
	damageSealed(t, spoolDir, 3) // the replacement is damaged in turn
	s.stateMu.Lock()
	s.used.Add(-s.segs[2].size)
	fi, _ := os.Stat(path)
	s.segs[2].size = fi.Size()
	s.used.Add(fi.Size())
	s.stateMu.Unlock()
	if _, err := s.quarantine(3); err != nil {
		t.Fatal(err)
	}
	if total, onDisk := s.totalBytes(), testutil.DirBytes(t, s.dir); total != onDisk {
		t.Errorf("the spool counts %d bytes, its files hold %d", total, onDisk)
	}
	s.Close()
	kept, _ := filepath.Glob(filepath.Join(spoolDir, "*"+damagedExt))
	evs := segmentDamagedEvents(t, dir)
	if len(kept) != 2 || len(evs) != 2 || evs[0].SavedTo == evs[1].SavedTo {
		t.Fatalf("damaged files kept %v; segment_damaged events %+v", kept, evs)
	}
	for _, ev := range evs {
		if _, err := os.Stat(filepath.Join(spoolDir, ev.SavedTo)); err != nil {
			t.Errorf("segment_damaged names %s: %v", ev.SavedTo, err)
		}
	}
}

// TestMissingSeqsAroundUnplacedEvents: the seqs a damaged range lost are
// counted between the nearest events around it that have a place in the
// log. An event a bug left outside the log (kept, unplaced) right before or
// after the damage says nothing about them: taken for the neighbour, it
// made missing_seqs null, or counted from the previous segment's last
// event, so that events of this segment before the damage were reported
// lost.
func TestMissingSeqsAroundUnplacedEvents(t *testing.T) {
	signer, _ := testutil.Signer(t, "spool-test")
	for _, tc := range []struct {
		name    string
		records []string // appended to the active segment in turn: "event", "unplaced", "damaged"
	}{
		{"an unplaced event before the damage", []string{"event", "event", "unplaced", "damaged", "damaged", "event", "event"}},
		{"an unplaced event after the damage", []string{"event", "event", "damaged", "damaged", "unplaced", "event", "event"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			s := openTestSpool(t, dir, Options{SegmentMaxBytes: 4 << 10, Log: logOpts(signer)})
			for i := range 40 { // a sealed segment or more before the active one
				s.Append(testutil.Event(i))
			}
			testutil.WaitFor(t, "a rotation", func() bool { c, _ := s.Committed(); return c.Segment > 1 })
			s.Close()
			s = openTestSpool(t, dir, Options{SegmentMaxBytes: 1 << 20, Log: logOpts(signer)})
			var damaged []string
			for i, r := range tc.records {
				ev := testutil.Event(1000 + i)
				if r == "unplaced" {
					ev = []byte(`{"n":1e999}`) // JSON that has no canonical form: placed in no log, kept as it is
				}
				if err := s.Append(ev); err != nil {
					t.Fatal(err)
				}
				if r == "damaged" {
					damaged = append(damaged, fmt.Sprintf("ev-%06d", 1000+i))
				}
			}
			c, _ := s.Committed()
			image := crashImage(t, dir)
			// Damage the records marked so, and learn their seqs.
			path := filepath.Join(image, DirName, segmentName(c.Segment)+segmentExt)
			data, _ := os.ReadFile(path)
			var p fastjson.Parser
			var lost []int64
			for _, f := range scanFrames(data, 0).frames {
				payload := data[f.Start+frameHeaderSize : f.End]
				for _, id := range damaged {
					if bytes.Contains(payload, []byte(id)) {
						lost = append(lost, auditlog.PlaceOf(&p, payload).Seq)
						clear(data[f.Start+4 : f.End-2])
					}
				}
			}
			os.WriteFile(path, data, 0o600)

			s2 := openTestSpool(t, image, Options{Log: logOpts(signer)})
			if len(s2.Recovery.Lost) != 1 {
				t.Fatalf("lost: %+v", s2.Recovery.Lost)
			}
			if m := s2.Recovery.Lost[0].Missing; m == nil || m.First != lost[0] || m.Last != lost[len(lost)-1] {
				t.Errorf("missing_seqs %+v, want %v (before %+v, after %+v)", m, lost, s2.Recovery.Lost[0].Before, s2.Recovery.Lost[0].After)
			}
		})
	}
}

// TestSpoolCountsAnUnusableStateFileOnce: an unusable state.json is moved
// aside as state.json.corrupt, and counted as that; the state file written
// after it is counted from nothing, not in place of the one moved aside.
func TestSpoolCountsAnUnusableStateFileOnce(t *testing.T) {
	for _, tc := range []struct{ name, content string }{
		{"not JSON", strings.Repeat("garbage ", 200)},
		{"an unknown version", `{"version":9,"padding":"` + strings.Repeat("x", 2000) + `"}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			s := openTestSpool(t, dir, Options{Forwarding: true})
			s.Append(testutil.Event(1))
			s.Close()
			os.WriteFile(filepath.Join(dir, DirName, stateFileName), []byte(tc.content), 0o600)
			s = openTestSpool(t, dir, Options{Forwarding: true})
			if err := s.SaveState(); err != nil {
				t.Fatal(err)
			}
			if total, onDisk := s.totalBytes(), testutil.DirBytes(t, s.dir); total != onDisk {
				t.Errorf("the spool counts %d bytes, its files hold %d", total, onDisk)
			}
		})
	}
}

// TestRecordCountAcrossDamageIsNotExact: the count of records to resend
// (from the seqs, without reading the sealed segments) counts records lost
// to damage as present; across a segment that lost records it says it is
// not exact.
func TestRecordCountAcrossDamageIsNotExact(t *testing.T) {
	signer, _ := testutil.Signer(t, "spool-test")
	dir := sealedSpool(t, signer, 120)
	spoolDir := filepath.Join(dir, DirName)
	segs, _, _ := listSegments(spoolDir)
	if n, exact := countRecords(spoolDir, segs, -1); !exact {
		t.Fatalf("%d records, not exact, before any damage", n)
	}
	damageSealed(t, spoolDir, 3)
	s := openTestSpool(t, dir, Options{Forwarding: true, Log: logOpts(signer)})
	if _, err := s.quarantine(3); err != nil {
		t.Fatal(err)
	}
	s.Close()
	segs, _, _ = listSegments(spoolDir)
	if n, exact := countRecords(spoolDir, segs, -1); exact {
		t.Errorf("%d records, said to be exact across a segment that lost one", n)
	}
}

// TestSpoolFullSaysWhatFillsIt: a spool at its bound refuses requests and
// says what fills it, so that an operator knows what to do: events not yet
// acknowledged (the aggregator), segments kept without forwarding
// (--retention), saved damage (remove it once examined), the log's tree
// state. (auditlog's TestUndeletableSegmentsSayWhy: acknowledged segments
// that cannot be deleted, and why.)
func TestSpoolFullSaysWhatFillsIt(t *testing.T) {
	signer, _ := testutil.Signer(t, "spool-test")
	for _, tc := range []struct {
		name    string
		opts    Options
		prepare func(t *testing.T, s *Spool) // before it is filled
		ack     bool                         // every event is acknowledged
		want    []string
	}{
		{"events not yet acknowledged", Options{Forwarding: true, Log: logOpts(signer)}, nil, false,
			[]string{"in segments holding events not yet acknowledged by the aggregator", "in the log's tree state (log.tree)"}},
		{"no forwarding", Options{}, nil, false,
			[]string{"in segments, kept without --forward until --retention deletes them"}},
		{"saved damage", Options{Forwarding: true}, func(t *testing.T, s *Spool) {
			os.WriteFile(filepath.Join(s.dir, segmentName(1)+sealedExt+damagedExt), make([]byte, 64<<10), 0o600)
			s.otherBytes.Store(otherFileBytes(s.dir))
		}, true, []string{"in saved damage (.corrupt, .damaged"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			opts := tc.opts
			opts.MaxBytes, opts.SegmentMaxBytes, opts.MinFreeBytes = 64<<10, 4<<10, -1
			s := openTestSpool(t, t.TempDir(), opts)
			if tc.prepare != nil {
				tc.prepare(t, s)
			}
			var err error
			for i := 0; i < 5000 && err == nil; i++ {
				if err := s.Append(testutil.Event(i)); err != nil {
					t.Fatal(err)
				}
				if tc.ack {
					c, _ := s.Committed()
					s.Ack(c)
				}
				if err = s.Admit(); err != nil {
					// Full once what can be done to make room was done.
					testutil.WaitFor(t, "sealing", func() bool {
						s.stateMu.Lock()
						defer s.stateMu.Unlock()
						return len(s.sealQueue) == 0
					})
					s.reclaim(time.Now())
					err = s.Admit()
				}
			}
			if !errors.Is(err, ErrSpoolFull) {
				t.Fatalf("Admit: %v", err)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("Admit: %v\nwant it to say %q", err, w)
				}
			}
		})
	}
}
