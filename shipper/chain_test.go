package shipper

import (
	"bytes"
	"crypto/rand"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/mod/sumdb/note"

	"github.com/auditproxy/auditproxy/audit"
)

func testSigner(t *testing.T) (note.Signer, note.Verifiers) {
	t.Helper()
	skey, vkey, err := note.GenerateKey(rand.Reader, "spool-test")
	if err != nil {
		t.Fatal(err)
	}
	s, _ := note.NewSigner(skey)
	v, _ := note.NewVerifier(vkey)
	return s, note.VerifierList(v)
}

func logOpts(s note.Signer) *LogOptions {
	return &LogOptions{Name: "test-node", Signer: s, CheckpointInterval: time.Hour, CheckpointEvery: 7,
		Source: audit.Source{Host: "h", Version: "t"}}
}

// verifyDataDir runs the auditor's verification over a data dir's spool.
func verifyDataDir(t *testing.T, dataDir string, keys note.Verifiers, extra ...[]byte) *audit.Report {
	t.Helper()
	var out bytes.Buffer
	if _, err := Export(dataDir, &out); err != nil {
		t.Fatal(err)
	}
	v := audit.NewVerifier(keys)
	for _, line := range bytes.Split(out.Bytes(), []byte("\n")) {
		v.Add(line)
	}
	for _, line := range extra {
		v.Add(line)
	}
	return v.Report()
}

func problems(r *audit.Report) string {
	var b strings.Builder
	b.WriteString(strings.Join(r.Problems, "\n"))
	for _, o := range r.Origins {
		b.WriteString(strings.Join(o.Problems, "\n"))
	}
	return b.String()
}

// TestSpoolIsAVerifiableLog: events committed through a spool with a log
// get their place in it, checkpoints come every CheckpointEvery events and
// at Close, a restart continues the same log, and the whole verifies.
func TestSpoolIsAVerifiableLog(t *testing.T) {
	dir := t.TempDir()
	signer, keys := testSigner(t)
	var cps [][]byte
	opts := logOpts(signer)
	opts.OnCheckpoint = func(ev []byte) { cps = append(cps, ev) }
	s := openTestSpool(t, dir, SpoolOptions{Log: opts})
	for i := range 20 {
		if err := s.Append(testEvent(i)); err != nil {
			t.Fatal(err)
		}
	}
	s.Close()
	if len(cps) != 4 { // after 7, 14 and 21 events (log_started is one), and at Close
		t.Errorf("%d checkpoints handed over, want 4", len(cps))
	}
	r := verifyDataDir(t, dir, keys)
	if !r.OK || len(r.Origins) != 1 {
		t.Fatalf("first run does not verify:\n%s", problems(r))
	}
	origin := r.Origins[0].Origin
	if !strings.HasPrefix(origin, "test-node/") || r.Origins[0].Events != 25 { // log_started, 20 events, 4 checkpoints
		t.Errorf("origin %q with %d events", origin, r.Origins[0].Events)
	}

	// A restart continues the log, even with the stored hashes lost.
	os.Remove(filepath.Join(s.dir, hashesFileName))
	s2 := openTestSpool(t, dir, SpoolOptions{Log: logOpts(signer)})
	if err := s2.Append(testEvent(100)); err != nil {
		t.Fatal(err)
	}
	s2.Close()
	r = verifyDataDir(t, dir, keys)
	if !r.OK || len(r.Origins) != 1 || r.Origins[0].Origin != origin || r.Origins[0].Events != 27 {
		t.Fatalf("after a restart: %+v\n%s", r.Origins, problems(r))
	}
	// The stored hashes were rebuilt and extended: a third run agrees.
	s3 := openTestSpool(t, dir, SpoolOptions{Log: logOpts(signer)})
	s3.Append(testEvent(101))
	s3.Close()
	if r = verifyDataDir(t, dir, keys); !r.OK {
		t.Fatalf("third run:\n%s", problems(r))
	}
}

// TestIdleLogCheckpointsOnItsCadence: with no events, a checkpoint still
// comes every interval, so a cut tail shows within one.
func TestIdleLogCheckpointsOnItsCadence(t *testing.T) {
	signer, keys := testSigner(t)
	opts := logOpts(signer)
	opts.CheckpointInterval = 30 * time.Millisecond
	var n atomic.Int64
	opts.OnCheckpoint = func([]byte) { n.Add(1) }
	dir := t.TempDir()
	s := openTestSpool(t, dir, SpoolOptions{Log: opts})
	waitFor(t, "three idle checkpoints", func() bool { return n.Load() >= 3 })
	s.Close()
	if r := verifyDataDir(t, dir, keys); !r.OK {
		t.Fatalf("idle log:\n%s", problems(r))
	}
}

// TestCheckpointAgeMetric: the newest committed checkpoint's time advances
// with each checkpoint, so an alert on its age sees a log that stops
// signing.
func TestCheckpointAgeMetric(t *testing.T) {
	signer, _ := testSigner(t)
	opts := logOpts(signer)
	opts.CheckpointInterval = 200 * time.Millisecond
	var n atomic.Int64
	opts.OnCheckpoint = func([]byte) { n.Add(1) }
	opened := time.Now()
	s := openTestSpool(t, t.TempDir(), SpoolOptions{Log: opts})
	defer s.Close()
	gauge := func(name string) float64 { return registeredValue(t, s.Register, name) }
	if got := gauge("auditproxy_checkpoint_interval_seconds"); got != 0.2 {
		t.Errorf("interval gauge = %v, want 0.2", got)
	}
	first := gauge("auditproxy_checkpoint_last_timestamp_seconds")
	if d := first - float64(opened.UnixNano())/1e9; d < -1 || d > 1 {
		t.Errorf("before any checkpoint the gauge is %v, %.3f s from the opening", first, d)
	}
	waitFor(t, "two checkpoints", func() bool { return n.Load() >= 2 })
	later := gauge("auditproxy_checkpoint_last_timestamp_seconds")
	if later-first < 0.15 || later > float64(time.Now().UnixNano())/1e9 {
		t.Errorf("after two checkpoints 200 ms apart the gauge went from %v to %v", first, later)
	}
}

// TestNewEpochCitesTheLastCheckpoint: a spool whose events are in no log
// (or whose log cannot be continued) starts a new epoch whose first event
// cites the newest checkpoint known.
func TestNewEpochCitesTheLastCheckpoint(t *testing.T) {
	signer, keys := testSigner(t)
	dir := t.TempDir()
	s := openTestSpool(t, dir, SpoolOptions{Log: logOpts(signer)})
	s.Append(testEvent(1))
	s.Close()
	// Another instance name takes over the data dir.
	opts := logOpts(signer)
	opts.Name = "renamed-node"
	s2 := openTestSpool(t, dir, SpoolOptions{Log: opts})
	s2.Append(testEvent(2))
	s2.Close()
	var out bytes.Buffer
	Export(dir, &out)
	if !bytes.Contains(out.Bytes(), []byte(`"type":"log_started"`)) ||
		!bytes.Contains(out.Bytes(), []byte(`"reason":"instance name changed`)) ||
		!bytes.Contains(out.Bytes(), []byte(`"previous_checkpoint":{"checkpoint":{`)) {
		t.Errorf("the new epoch does not start with a log_started event citing the last checkpoint:\n%s", out.String())
	}
	r := verifyDataDir(t, dir, keys)
	if !r.OK || len(r.Origins) != 2 {
		t.Fatalf("two epochs: %+v\n%s", r.Origins, problems(r))
	}
}

// TestFailedCommitLeavesTheLogWhole: a commit that fails is undone in the
// log too, so the events that follow continue it without a gap.
func TestFailedCommitLeavesTheLogWhole(t *testing.T) {
	signer, keys := testSigner(t)
	dir := t.TempDir()
	s := openTestSpool(t, dir, SpoolOptions{Log: logOpts(signer)})
	s.Append(testEvent(1))
	var fail atomic.Bool
	s.sync = func(f *os.File) error {
		if fail.Load() {
			return errors.New("injected EIO")
		}
		return f.Sync()
	}
	fail.Store(true)
	if err := s.Append(testEvent(2)); err == nil {
		t.Fatal("commit did not fail")
	}
	fail.Store(false)
	for i := 3; i < 12; i++ {
		if err := s.Append(testEvent(i)); err != nil {
			t.Fatal(err)
		}
	}
	s.Close()
	if r := verifyDataDir(t, dir, keys); !r.OK {
		t.Fatalf("after a failed commit:\n%s", problems(r))
	}
}

func TestCheckpointDirKeepsASecondCopy(t *testing.T) {
	signer, keys := testSigner(t)
	dataDir, cpDir := t.TempDir(), t.TempDir()
	cd, last, err := OpenCheckpointDir(cpDir, nil)
	if err != nil || last != nil {
		t.Fatal(err, last)
	}
	opts := logOpts(signer)
	opts.OnCheckpoint = cd.Write
	s := openTestSpool(t, dataDir, SpoolOptions{Log: opts})
	for i := range 30 {
		s.Append(testEvent(i))
	}
	s.Close()
	cd.Close()
	copies, err := os.ReadFile(filepath.Join(cpDir, CheckpointFileName))
	if err != nil {
		t.Fatal(err)
	}
	if n := bytes.Count(copies, []byte("\n")); n != 5 { // after 7, 14, 21, 28 events and at Close
		t.Errorf("%d checkpoints in the checkpoint dir, want 5", n)
	}
	// The dir's copies are the same events as the spool's: verifying both
	// counts them as duplicates, not as problems.
	r := verifyDataDir(t, dataDir, keys, bytes.Split(copies, []byte("\n"))...)
	if !r.OK || r.Origins[0].Duplicates != 5 {
		t.Fatalf("spool plus checkpoint dir: %+v\n%s", r.Origins, problems(r))
	}
	_, last, _ = OpenCheckpointDir(cpDir, nil)
	if !bytes.Contains(last, []byte(`"final":true`)) {
		t.Errorf("the dir's last checkpoint is not the final one: %s", last)
	}
}
