package auditlog_test

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/auditproxy/auditproxy/auditlog"
	"github.com/auditproxy/auditproxy/internal/testutil"
	"github.com/auditproxy/auditproxy/spool"
	"github.com/valyala/fastjson"
	"golang.org/x/mod/sumdb/tlog"
)

// TestTreeStateStaysBounded measures the log's tree state: the previous
// release kept every stored hash (64 bytes an event, for ever); log.tree
// keeps what proofs from the newest checkpoint on need, whatever the
// number of events. Every file of the spool counts in its size. A restart
// continues the same log from the file, and the whole verifies. The figures
// are in bench/RESULTS.md (go test -run TestTreeStateStaysBounded -v ./spool/).
func TestTreeStateStaysBounded(t *testing.T) {
	const events = 50000
	signer, keys := testutil.Signer(t, "spool-test")
	dir := t.TempDir()
	opts := logOpts(signer)
	opts.CheckpointEvery = 1000
	s := openTestSpool(t, dir, spool.Options{Durability: spool.DurabilityAsync, SegmentMaxBytes: 1 << 20, Log: opts})
	var largest int64
	for i := 0; i < events; i += 1000 {
		fillLog(t, s, i, 1000)
		// The maintenance loop rewrites the file off the commit path;
		// sample once it has caught up (at 60,000 events a second here it
		// can lag behind; at a GPU server's rates it does not).
		testutil.WaitFor(t, "the maintenance loop to catch up", func() bool { return !s.Log().RebaseDue() })
		largest = max(largest, s.Log().HashBytes())
	}
	waitSealed(t, s)
	size := s.Log().Size()
	legacy := tlog.StoredHashCount(size) * tlog.HashSize
	testutil.WaitFor(t, "the tree state to be rewritten", func() bool { return s.Log().Tree().BaseSize() > 0 })
	got := s.Log().HashBytes()
	t.Logf("%d events in the log (%d leaves, checkpoints every 1,000): tree.hashes of the previous release %d bytes; log.tree at most %d bytes (sampled every 1,000 events), %d at the end (proves from size %d)",
		events, size, legacy, largest, got, s.Log().Tree().BaseSize())
	// At most: the hashes since the newest checkpoint (a checkpoint
	// interval, here up to 2,000 events as commits group them), and as
	// many again before a rewrite, and the rewrite's minimum.
	if bound := int64(2*2*2000*tlog.HashSize + auditlog.TreeRewriteMin + 4096); largest > bound || got > bound {
		t.Errorf("log.tree reached %d bytes in %d events, want at most %d", largest, events, bound)
	}
	if total, onDisk := spoolBytes(t, s), testutil.DirBytes(t, s.Dir()); total != onDisk {
		t.Errorf("the spool counts %d bytes, its files hold %d", total, onDisk)
	}
	s.Close()

	s2 := openTestSpool(t, dir, spool.Options{Log: logOpts(signer)})
	if s2.Log().Size() != size+1 { // the final checkpoint
		t.Errorf("after a restart the log is at %d, want %d", s2.Log().Size(), size+1)
	}
	if total, onDisk := spoolBytes(t, s2), testutil.DirBytes(t, s2.Dir()); total != onDisk {
		t.Errorf("after a restart the spool counts %d bytes, its files hold %d", total, onDisk)
	}
	s2.Append(testutil.Event(events))
	s2.Close()
	r := verifyDataDir(t, dir, keys)
	if !r.OK || len(r.Origins) != 1 {
		t.Fatalf("after a restart from log.tree:\n%s", testutil.Problems(r))
	}
}

// TestWitnessProofsAfterRewrites: with a witness, the stored hashes are kept
// from the size it last cosigned, and consistency proofs from there to any
// later checkpoint verify against the roots; what no proof needs is dropped,
// and asking for it says so.
func TestWitnessProofsAfterRewrites(t *testing.T) {
	signer, keys := testutil.Signer(t, "spool-test")
	opts := logOpts(signer)
	opts.CheckpointEvery = 500
	opts.Witness = true
	var mu sync.Mutex
	var roots = map[int64]tlog.Hash{}
	opts.OnCheckpoint = func(cp auditlog.SignedCheckpoint) {
		c, _, err := auditlog.OpenCheckpoint(cp.Note, keys)
		if err != nil {
			t.Error(err)
			return
		}
		mu.Lock()
		roots[c.Size] = c.Root
		mu.Unlock()
	}
	// Sync durability: one commit per event, so that checkpoints come at
	// sizes 500, 1001, 1502, ...
	s := openTestSpool(t, t.TempDir(), spool.Options{Log: opts})
	fillLog(t, s, 0, 3000)
	if b := s.Log().Tree().BaseSize(); b != 0 {
		t.Fatalf("trimmed to %d before the witness said what it cosigned", b)
	}
	// The witness cosigned the checkpoint before the newest.
	var cosigned, newest int64
	mu.Lock()
	for size := range roots {
		newest = max(newest, size)
	}
	for size := range roots {
		if size < newest {
			cosigned = max(cosigned, size)
		}
	}
	mu.Unlock()
	if cosigned < 2000 {
		t.Fatalf("checkpoints at %v: want one past 2000 before the newest", roots)
	}
	s.Log().WitnessCosigned("another/20260101T000000Z", 1<<40) // another log's: ignored
	s.Log().WitnessCosigned(s.Log().Origin(), cosigned)
	fillLog(t, s, 3000, 10)
	testutil.WaitFor(t, "a rewrite", func() bool { return s.Log().Tree().BaseSize() == cosigned })
	mu.Lock()
	defer mu.Unlock()
	for size, root := range roots {
		if size <= cosigned {
			continue
		}
		proof, err := tlog.ProveTree(size, cosigned, s.Log())
		if err != nil {
			t.Fatalf("proof from %d to %d: %v", cosigned, size, err)
		}
		if err := tlog.CheckTree(proof, size, root, cosigned, roots[cosigned]); err != nil {
			t.Fatalf("proof from %d to %d does not verify: %v", cosigned, size, err)
		}
	}
	if _, err := tlog.ProveTree(cosigned+500, 500, s.Log()); err == nil || !strings.Contains(err.Error(), "no longer kept") {
		t.Errorf("a proof from before the witness's size: %v", err)
	}
}

// legacyTreeHashes writes the previous release's tree.hashes for a data
// dir's log: every stored hash from index 0, computed from its events.
func legacyTreeHashes(t *testing.T, dataDir string) int64 {
	t.Helper()
	var out bytes.Buffer
	if _, err := spool.Export(dataDir, &out); err != nil {
		t.Fatal(err)
	}
	var p fastjson.Parser
	var tree auditlog.Tree
	var file []byte
	for _, line := range bytes.Split(bytes.TrimSpace(out.Bytes()), []byte("\n")) {
		leaf, _, err := auditlog.LeafHash(&p, nil, line)
		if err != nil {
			t.Fatal(err)
		}
		for _, h := range tree.Append(leaf, nil) {
			file = append(file, h[:]...)
		}
	}
	spoolDir := filepath.Join(dataDir, spool.DirName)
	os.Remove(filepath.Join(spoolDir, auditlog.HashStoreFile))
	if err := os.WriteFile(filepath.Join(spoolDir, auditlog.LegacyHashStoreFile), file, 0o600); err != nil {
		t.Fatal(err)
	}
	return int64(len(file))
}

// TestPreviousReleaseTreeHashesOpens: a data dir of the previous release,
// whose tree.hashes holds every stored hash, opens and continues the same
// log; the file is replaced by a log.tree that proves from the newest
// checkpoint on, and the log verifies.
func TestPreviousReleaseTreeHashesOpens(t *testing.T) {
	signer, keys := testutil.Signer(t, "spool-test")
	dir := t.TempDir()
	opts := logOpts(signer)
	opts.CheckpointEvery = 1000
	s := openTestSpool(t, dir, spool.Options{Durability: spool.DurabilityAsync, Log: opts})
	fillLog(t, s, 0, 5000)
	origin := s.Log().Origin()
	s.Close()
	legacy := legacyTreeHashes(t, dir)

	opts = logOpts(signer)
	opts.CheckpointEvery = 1000
	s = openTestSpool(t, dir, spool.Options{Durability: spool.DurabilityAsync, Log: opts})
	if s.Log().Origin() != origin {
		t.Fatalf("the previous release's data dir started a new log %s (was %s)", s.Log().Origin(), origin)
	}
	fillLog(t, s, 5000, 1000)
	testutil.WaitFor(t, "the rewrite to log.tree", func() bool {
		_, err := os.Stat(filepath.Join(dir, spool.DirName, auditlog.LegacyHashStoreFile))
		return os.IsNotExist(err)
	})
	fi, err := os.Stat(filepath.Join(dir, spool.DirName, auditlog.HashStoreFile))
	if err != nil || fi.Size() >= legacy {
		t.Errorf("log.tree: %v, %d bytes; tree.hashes was %d", err, fi.Size(), legacy)
	}
	s.Close()
	if r := verifyDataDir(t, dir, keys); !r.OK || len(r.Origins) != 1 {
		t.Fatalf("after the previous release's data dir:\n%s", testutil.Problems(r))
	}
}

// TestTreeStateAfterACrash: what a kill -9 can leave of log.tree. A torn or
// missing tail, or a missing file, is recomputed from the spool's events and
// the same log continues; a file whose hashes do not give the root the
// newest checkpoint signs is rebuilt from the events; and when the events
// needed are no longer in the spool, a new epoch starts and its
// log_started says why.
func TestTreeStateAfterACrash(t *testing.T) {
	signer, keys := testutil.Signer(t, "spool-test")
	type crash struct {
		name      string
		damage    func(t *testing.T, spoolDir string, tf *auditlog.TreeFile)
		newEpoch  string // "": the same log continues
		verifying bool   // the whole spool verifies
	}
	for _, tc := range []crash{
		{"a torn tail", func(t *testing.T, dir string, tf *auditlog.TreeFile) {
			os.Truncate(filepath.Join(dir, auditlog.HashStoreFile), tf.Bytes()-45)
		}, "", true},
		{"no hashes after the header", func(t *testing.T, dir string, tf *auditlog.TreeFile) {
			os.Truncate(filepath.Join(dir, auditlog.HashStoreFile), tf.HeaderBytes())
		}, "", true},
		{"no file", func(t *testing.T, dir string, tf *auditlog.TreeFile) {
			os.Remove(filepath.Join(dir, auditlog.HashStoreFile))
		}, "", true},
		{"a changed hash", func(t *testing.T, dir string, tf *auditlog.TreeFile) {
			f, _ := os.OpenFile(filepath.Join(dir, auditlog.HashStoreFile), os.O_RDWR, 0)
			f.WriteAt([]byte("XXXX"), tf.HeaderBytes()+5)
			f.Close()
		}, "", true},
		{"a damaged header", func(t *testing.T, dir string, tf *auditlog.TreeFile) {
			f, _ := os.OpenFile(filepath.Join(dir, auditlog.HashStoreFile), os.O_RDWR, 0)
			f.WriteAt([]byte("X"), 9)
			f.Close()
		}, "", true},
		{"no file and the oldest events gone", func(t *testing.T, dir string, tf *auditlog.TreeFile) {
			// Deleted by retention, say: a recomputation has no seq 0.
			os.Remove(filepath.Join(dir, auditlog.HashStoreFile))
			os.Remove(segmentFiles(t, dir)[0])
		}, "the log's tree state", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			opts := logOpts(signer)
			opts.CheckpointEvery = 1000
			s := openTestSpool(t, dir, spool.Options{Durability: spool.DurabilityAsync, SegmentMaxBytes: 64 << 10, Log: opts})
			fillLog(t, s, 0, 2500)
			waitSealed(t, s)
			// The damage below is placed with the live file's header and
			// size: the image must hold the same file, not one the
			// maintenance loop is about to rewrite smaller.
			testutil.WaitFor(t, "the maintenance loop to catch up", func() bool { return !s.Log().RebaseDue() })
			origin := s.Log().Origin()
			image := crashImage(t, dir) // kill -9: no final checkpoint
			tc.damage(t, filepath.Join(image, spool.DirName), s.Log().Tree())
			s2 := openTestSpool(t, image, spool.Options{Log: logOpts(signer)})
			if err := s2.Append(testutil.Event(9999)); err != nil {
				t.Fatal(err)
			}
			s2.Close()
			started := logStartedOf(t, image)
			if tc.newEpoch != "" && len(started) == 0 {
				entries, _ := os.ReadDir(filepath.Join(image, spool.DirName))
				var names []string
				for _, e := range entries {
					names = append(names, e.Name())
				}
				t.Fatalf("no log_started at all (origin %s, now %s); spool: %v", origin, s2.Log().Origin(), names)
			}
			if tc.newEpoch == "" {
				if s2.Log().Origin() != origin || len(started) != 1 {
					t.Errorf("a new epoch %s after %s", s2.Log().Origin(), tc.name)
				}
			} else {
				reason, _ := started[len(started)-1]["log_started"].(map[string]any)["reason"].(string)
				if s2.Log().Origin() == origin || !strings.Contains(reason, tc.newEpoch) {
					t.Errorf("no new epoch saying why: %q", reason)
				}
			}
			r := verifyDataDir(t, image, keys)
			if tc.verifying && !r.OK {
				t.Errorf("verify:\n%s", testutil.Problems(r))
			}
			// With the oldest segment deleted, the old epoch lacks its events
			// (if any are left to show it); the new epoch verifies.
			for _, o := range r.Origins {
				if o.Origin == s2.Log().Origin() && !o.OK {
					t.Errorf("the new epoch: %v", o.Problems)
				}
			}
		})
	}
}

// TestLogContinuesWhenEveryEventWasDeleted: when every segment holding the
// log's events was shipped and deleted and the active one is still empty,
// a restart finds no event of the log. It continues from the tree state's
// size, never from seq 0 again (which would reuse seqs already shipped and
// checkpointed: a fork).
func TestLogContinuesWhenEveryEventWasDeleted(t *testing.T) {
	signer, _ := testutil.Signer(t, "spool-test")
	dir := t.TempDir()
	s := openTestSpool(t, dir, spool.Options{SegmentMaxAge: 50 * time.Millisecond, Log: logOpts(signer)})
	for i := range 30 {
		s.Append(testutil.Event(i))
	}
	size := s.Log().Size()
	testutil.WaitFor(t, "rotation by age and sealing", func() bool {
		segs := segmentFiles(t, s.Dir())
		if len(segs) < 2 || unsealed(segs) != 1 {
			return false
		}
		records := 0
		_, err := spool.ReadSegmentFile(segs[len(segs)-1], func([]byte) error { records++; return nil })
		return err == nil && records == 0
	})
	s.Log().SyncHashes() // as before any deletion
	image := crashImage(t, dir)
	segs := segmentFiles(t, filepath.Join(image, spool.DirName))
	for _, path := range segs[:len(segs)-1] { // shipped and deleted
		os.Remove(path)
	}
	s2 := openTestSpool(t, image, spool.Options{Log: logOpts(signer)})
	if err := s2.Append(testutil.Event(100)); err != nil {
		t.Fatal(err)
	}
	s2.Close()
	var out bytes.Buffer
	if _, err := spool.Export(image, &out); err != nil {
		t.Fatal(err)
	}
	var p fastjson.Parser
	first := auditlog.PlaceOf(&p, bytes.SplitN(out.Bytes(), []byte("\n"), 2)[0])
	if first == nil || first.Origin != s.Log().Origin() || first.Seq != size {
		t.Fatalf("the first event after the restart is at %+v, want seq %d of %s", first, size, s.Log().Origin())
	}
}

// spoolStoredHashes returns every stored hash of origin's tree, computed
// from the events of a data dir's spool (tlog.StoredHashIndex order), as a
// tlog.HashReader.
func spoolStoredHashes(t *testing.T, dataDir, origin string) storedHashList {
	t.Helper()
	var p fastjson.Parser
	var tree auditlog.Tree
	var all storedHashList
	for _, rec := range exportLines(t, dataDir) {
		if pl := auditlog.PlaceOf(&p, rec); pl == nil || pl.Origin != origin {
			continue
		}
		leaf, _, err := auditlog.LeafHash(&p, nil, rec)
		if err != nil {
			t.Fatal(err)
		}
		all = tree.Append(leaf, all)
	}
	return all
}

type storedHashList []tlog.Hash

func (l storedHashList) ReadHashes(idx []int64) ([]tlog.Hash, error) {
	out := make([]tlog.Hash, len(idx))
	for i, x := range idx {
		out[i] = l[x]
	}
	return out, nil
}

// TestTreeStateWriteFailures: a failed write of the tree state does not
// move its end. The hashes are kept, readable, and written with the next
// ones, so that those never land at the indexes of the ones that failed
// (which made every consistency proof after them wrong: a witness then
// reports a fork). While a hash is not in the file, it cannot be fsynced,
// so no segment is deleted. The log verifies, also after a restart.
func TestTreeStateWriteFailures(t *testing.T) {
	signer, keys := testutil.Signer(t, "spool-test")
	for _, tc := range []struct {
		name       string
		failFor    int // commits whose tree writes fail
		backlogMax int // hashes kept in memory meanwhile; 0: the default
	}{
		{"one failed write", 1, 0},
		{"writes failing for a while", 12, 0},
		{"writes failing past the hashes kept in memory", 12, 10},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			var logs testutil.LogBuffer
			s := openTestSpool(t, dir, spool.Options{Log: logOpts(signer), Logger: logs.Logger()})
			for i := range 10 {
				s.Append(testutil.Event(i))
			}
			tf := s.Log().Tree()
			if tc.backlogMax > 0 {
				tf.SetBacklogMax(tc.backlogMax)
			}
			restore := tf.FailWrites(t)
			for i := 10; i < 10+tc.failFor; i++ {
				if err := s.Append(testutil.Event(i)); err != nil {
					t.Fatal(err)
				}
			}
			// Meanwhile: every hash readable and right, none fsyncable.
			size := s.Log().Size()
			want := spoolStoredHashes(t, dir, s.Log().Origin())
			got, err := s.Log().ReadHashes([]int64{int64(len(want)) - 1})
			if tc.backlogMax == 0 && (err != nil || got[0] != want[len(want)-1]) {
				t.Errorf("the newest stored hash while writes fail: %v", err)
			}
			if tc.backlogMax > 0 && err == nil {
				t.Errorf("a stored hash past the bound is served: %v", got)
			}
			if err := tf.Sync(); err == nil {
				t.Error("the tree state fsyncs while hashes are not in it: a segment could be deleted")
			}
			if n := len(logs.Lines("cannot write the log's tree state")); n != 1 {
				t.Errorf("%d failures logged, want the first only", n)
			}
			restore()
			for i := 10 + tc.failFor; i < 40; i++ {
				s.Append(testutil.Event(i))
			}
			if tc.backlogMax > 0 {
				// Past the bound, the hashes after the failure are rebuilt
				// from the spool at the next start; until then nothing is
				// deleted.
				if err := tf.Sync(); err == nil {
					t.Error("the tree state fsyncs with hashes it no longer holds")
				}
				s.Close()
				s2 := openTestSpool(t, dir, spool.Options{Log: logOpts(signer)})
				s2.Append(testutil.Event(100))
				s2.Close()
				if r := verifyDataDir(t, dir, keys); !r.OK || len(r.Origins) != 1 {
					t.Errorf("after the tree state was rebuilt:\n%s", testutil.Problems(r))
				}
				return
			}
			if err := tf.Sync(); err != nil {
				t.Errorf("sync after the writes succeed again: %v", err)
			}
			size = s.Log().Size()
			want = spoolStoredHashes(t, dir, s.Log().Origin())
			if n := tf.Stored(); n != int64(len(want)) || n != tlog.StoredHashCount(size) {
				t.Errorf("%d stored hashes in the file, want %d", n, len(want))
			}
			const m = 8
			rm, _ := tlog.TreeHash(m, want)
			for n := int64(m + 1); n <= size; n++ {
				rn, _ := tlog.TreeHash(n, want)
				proof, err := tlog.ProveTree(n, m, s.Log())
				if err == nil {
					err = tlog.CheckTree(proof, n, rn, m, rm)
				}
				if err != nil {
					t.Fatalf("consistency proof from %d to %d: %v", m, n, err)
				}
			}
			s.Close()
			s2 := openTestSpool(t, dir, spool.Options{Log: logOpts(signer)})
			s2.Append(testutil.Event(100))
			s2.Close()
			if r := verifyDataDir(t, dir, keys); !r.OK || len(r.Origins) != 1 {
				t.Errorf("after failed tree writes:\n%s", testutil.Problems(r))
			}
		})
	}
}

// TestTreeStateIsCheckedAgainstTheSpool: a start trusts log.tree only as
// far as the newest checkpoint's signed root checks it, and recomputes the
// hashes after it from the spool's events; without a checkpoint to check
// it, its last leaf must be the newest event's. A file whose hashes are
// wrong after the newest checkpoint (a write that failed and was written
// over, a bad sector), or before it with the tail after it lost, is
// rebuilt: continuing from it, the sidecar signed checkpoints over roots
// its events do not hash to.
func TestTreeStateIsCheckedAgainstTheSpool(t *testing.T) {
	signer, keys := testutil.Signer(t, "spool-test")
	// corrupt flips a byte of stored hash idx of the tree state file at path.
	corrupt := func(t *testing.T, path string, tf *auditlog.TreeFile, idx int64) {
		f, err := os.OpenFile(path, os.O_RDWR, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		off := tf.HeaderBytes() + (idx-tf.BaseIndex())*tlog.HashSize
		b := make([]byte, 1)
		f.ReadAt(b, off)
		b[0] ^= 0x40
		f.WriteAt(b, off)
	}
	last := func(idx []int64) int64 { return idx[len(idx)-1] }
	for _, tc := range []struct {
		name       string
		checkpoint bool // the spool holds a checkpoint before its newest events
		damage     func(t *testing.T, path string, tf *auditlog.TreeFile, cpSize, n int64)
	}{
		{"a wrong hash after the newest checkpoint", true, func(t *testing.T, path string, tf *auditlog.TreeFile, cpSize, n int64) {
			corrupt(t, path, tf, last(auditlog.FrontierIndexes(n)))
		}},
		{"a wrong hash before the newest checkpoint, the tail after it lost", true, func(t *testing.T, path string, tf *auditlog.TreeFile, cpSize, n int64) {
			k := cpSize - 1
			corrupt(t, path, tf, last(auditlog.FrontierIndexes(k)))
			os.Truncate(path, tf.HeaderBytes()+(tlog.StoredHashCount(k)-tf.BaseIndex())*tlog.HashSize)
		}},
		{"a wrong last leaf and no checkpoint", false, func(t *testing.T, path string, tf *auditlog.TreeFile, cpSize, n int64) {
			corrupt(t, path, tf, tlog.StoredHashIndex(0, n-1))
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			opts := logOpts(signer)
			if !tc.checkpoint {
				opts.CheckpointEvery = 1000
			}
			s := openTestSpool(t, dir, spool.Options{Log: opts})
			for i := 0; i < 24 || tc.checkpoint && s.Log().Size()-s.Log().CheckpointSize() < 4; i++ {
				s.Append(testutil.Event(i))
			}
			origin, n, cpSize := s.Log().Origin(), s.Log().Size(), s.Log().CheckpointSize()
			if tc.checkpoint != (cpSize > 0) {
				t.Fatalf("newest checkpoint at %d", cpSize)
			}
			image := crashImage(t, dir) // kill -9
			tc.damage(t, filepath.Join(image, spool.DirName, auditlog.HashStoreFile), s.Log().Tree(), cpSize, n)

			s2 := openTestSpool(t, image, spool.Options{Log: logOpts(signer)})
			for i := range 10 {
				s2.Append(testutil.Event(100 + i))
			}
			s2.Close()
			if s2.Log().Origin() != origin {
				t.Errorf("a new epoch %s; the spool holds every event to rebuild the tree from", s2.Log().Origin())
			}
			if r := verifyDataDir(t, image, keys); !r.OK {
				t.Errorf("the log after a start from a wrong tree state:\n%s", testutil.Problems(r))
			}
		})
	}
}

// TestAbsentWitnessNeverFillsTheSpool: a witness that cosigned once and then
// went away (down, or refusing every checkpoint) would have the log keep
// the hashes of a proof from its size for ever, 64 bytes an event inside
// the spool's bound, until every request is refused although the
// aggregator acknowledged every event. Once they pass an eighth of the
// bound, the log keeps them from the newest checkpoint on instead, says so
// once (an error and a metric), and a proof from the witness's size says
// why it cannot be made.
func TestAbsentWitnessNeverFillsTheSpool(t *testing.T) {
	signer, keys := testutil.Signer(t, "spool-test")
	opts := logOpts(signer)
	opts.Witness = true
	opts.CheckpointEvery = 200
	const maxBytes = 1 << 20
	dir := t.TempDir()
	var logs testutil.LogBuffer
	s := openTestSpool(t, dir, spool.Options{Forwarding: true, MaxBytes: maxBytes, SegmentMaxBytes: 64 << 10, MinFreeBytes: -1,
		Durability: spool.DurabilityAsync, Log: opts, Logger: logs.Logger()})
	fillLog(t, s, 0, 300)
	cosigned := s.Log().CheckpointSize()
	s.Log().WitnessCosigned(s.Log().Origin(), cosigned) // then the witness is gone
	var largest int64
	for i := 300; i < 20000; i += 500 {
		fillLog(t, s, i, 500)
		c, _ := s.Committed()
		s.Ack(c) // the aggregator has every event
		testutil.WaitFor(t, "the maintenance loop to catch up", func() bool { return !s.Log().RebaseDue() })
		largest = max(largest, s.Log().HashBytes())
	}
	testutil.WaitFor(t, "acknowledged segments deleted", func() bool { return s.Admit() == nil })
	if bound := int64(maxBytes/8 + auditlog.TreeRewriteMin); largest > bound {
		t.Errorf("log.tree reached %d bytes, want at most %d (an eighth of the bound, and a rewrite's minimum)", largest, bound)
	}
	if got := testutil.MetricValue(t, s.Register, "auditproxy_witness_proofs_abandoned_total"); got != 1 {
		t.Errorf("auditproxy_witness_proofs_abandoned_total = %v, want 1", got)
	}
	if n := len(logs.Lines("the witness has not cosigned this log for so long")); n != 1 {
		t.Errorf("said %d times, want once", n)
	}
	if _, err := tlog.ProveTree(s.Log().CheckpointSize(), cosigned, s.Log()); err == nil || !strings.Contains(err.Error(), "no longer kept") {
		t.Errorf("a proof from the witness's size: %v", err)
	}
	s.Close()
	if r := verifyDataDir(t, dir, keys); len(r.Origins) != 1 {
		t.Errorf("%d origins", len(r.Origins))
	}
}

// TestUndeletableSegmentsSayWhy: while the log's stored hashes cannot be
// made durable, acknowledged segments are not deleted (a recomputation
// after a crash would need their events), and a spool full of them says
// so, naming the log's tree state.
func TestUndeletableSegmentsSayWhy(t *testing.T) {
	signer, _ := testutil.Signer(t, "spool-test")
	// A short retention makes the maintenance loop run every 50 ms, as a
	// test outside the spool cannot wake it; every segment is acknowledged,
	// so retention and acknowledgement ask for the same deletions.
	// No checkpoint: the stored hashes are kept from size 0, so no rewrite
	// of log.tree replaces the file whose writes fail.
	opts := logOpts(signer)
	opts.CheckpointEvery = 1 << 30
	s := openTestSpool(t, t.TempDir(), spool.Options{Forwarding: true, Log: opts,
		MaxBytes: 64 << 10, SegmentMaxBytes: 4 << 10, MinFreeBytes: -1, Retention: 500 * time.Millisecond})
	tf := s.Log().Tree()
	tf.SetBacklogMax(1)
	tf.FailWrites(t)
	want := []string{"acknowledged segments cannot be deleted: the log's tree state", "in acknowledged segments"}
	// Filled until it refuses for good: a refusal while segments await
	// their seal can end once they are compressed.
	var err error
	for i := 0; i < 20000; i++ {
		if err := s.Append(testutil.Event(i)); err != nil {
			t.Fatal(err)
		}
		c, _ := s.Committed()
		s.Ack(c)
		if s.Admit() == nil {
			continue
		}
		waitSealed(t, s)
		deadline := time.Now().Add(time.Second) // the maintenance loop runs every 50 ms
		for err = s.Admit(); err != nil && !strings.Contains(err.Error(), want[0]) && time.Now().Before(deadline); err = s.Admit() {
			time.Sleep(10 * time.Millisecond)
		}
		if err != nil && strings.Contains(err.Error(), want[0]) {
			break
		}
	}
	if !errors.Is(err, spool.ErrSpoolFull) {
		t.Fatalf("Admit: %v", err)
	}
	if err == nil {
		t.Fatal("the spool took requests again: a segment was deleted while the log's hashes could not be fsynced")
	}
	for _, w := range want {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("Admit: %v\nwant it to say %q", err, w)
		}
	}
}
