package spool

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/mod/sumdb/note"

	"github.com/auditproxy/auditproxy/audit"
	"github.com/auditproxy/auditproxy/auditlog"
	"github.com/auditproxy/auditproxy/internal/testutil"
)

func logOpts(s note.Signer) *auditlog.Options {
	return &auditlog.Options{Name: "test-node", Signer: s, CheckpointInterval: time.Hour, CheckpointEvery: 7,
		Source: audit.Source{Host: "h", Version: "t"}}
}

// verifyDataDir runs the auditor's verification over a data dir's spool.
func verifyDataDir(t *testing.T, dataDir string, keys note.Verifiers, extra ...[]byte) *auditlog.Report {
	t.Helper()
	var out bytes.Buffer
	if _, err := Export(dataDir, &out); err != nil {
		t.Fatal(err)
	}
	return testutil.Verify(keys, append([][]byte{out.Bytes()}, extra...)...)
}

// TestSpoolIsAVerifiableLog: events committed through a spool with a log
// get their place in it, checkpoints come every CheckpointEvery events and
// at Close, a restart continues the same log, and the whole verifies.
func TestSpoolIsAVerifiableLog(t *testing.T) {
	dir := t.TempDir()
	signer, keys := testutil.Signer(t, "spool-test")
	var cps [][]byte
	opts := logOpts(signer)
	opts.OnCheckpoint = func(cp auditlog.SignedCheckpoint) { cps = append(cps, cp.Event) }
	s := openTestSpool(t, dir, Options{Log: opts})
	for i := range 20 {
		if err := s.Append(testutil.Event(i)); err != nil {
			t.Fatal(err)
		}
	}
	s.Close()
	if len(cps) != 4 { // after 7, 14 and 21 events (log_started is one), and at Close
		t.Errorf("%d checkpoints handed over, want 4", len(cps))
	}
	r := verifyDataDir(t, dir, keys)
	if !r.OK || len(r.Origins) != 1 {
		t.Fatalf("first run does not verify:\n%s", testutil.Problems(r))
	}
	origin := r.Origins[0].Origin
	if !strings.HasPrefix(origin, "test-node/") || r.Origins[0].Events != 25 { // log_started, 20 events, 4 checkpoints
		t.Errorf("origin %q with %d events", origin, r.Origins[0].Events)
	}

	// A restart continues the log, even with the stored hashes lost.
	os.Remove(filepath.Join(s.dir, auditlog.HashStoreFile))
	s2 := openTestSpool(t, dir, Options{Log: logOpts(signer)})
	if err := s2.Append(testutil.Event(100)); err != nil {
		t.Fatal(err)
	}
	s2.Close()
	r = verifyDataDir(t, dir, keys)
	if !r.OK || len(r.Origins) != 1 || r.Origins[0].Origin != origin || r.Origins[0].Events != 27 {
		t.Fatalf("after a restart: %+v\n%s", r.Origins, testutil.Problems(r))
	}
	// The stored hashes were rebuilt and extended: a third run agrees.
	s3 := openTestSpool(t, dir, Options{Log: logOpts(signer)})
	s3.Append(testutil.Event(101))
	s3.Close()
	if r = verifyDataDir(t, dir, keys); !r.OK {
		t.Fatalf("third run:\n%s", testutil.Problems(r))
	}
}

// TestIdleLogCheckpointsOnItsCadence: with no events, a checkpoint still
// comes every interval, so a cut tail shows within one.
func TestIdleLogCheckpointsOnItsCadence(t *testing.T) {
	signer, keys := testutil.Signer(t, "spool-test")
	opts := logOpts(signer)
	opts.CheckpointInterval = 30 * time.Millisecond
	var n atomic.Int64
	opts.OnCheckpoint = func(auditlog.SignedCheckpoint) { n.Add(1) }
	dir := t.TempDir()
	s := openTestSpool(t, dir, Options{Log: opts})
	testutil.WaitFor(t, "three idle checkpoints", func() bool { return n.Load() >= 3 })
	s.Close()
	if r := verifyDataDir(t, dir, keys); !r.OK {
		t.Fatalf("idle log:\n%s", testutil.Problems(r))
	}
}

// TestCheckpointAgeMetric: the newest committed checkpoint's time advances
// with each checkpoint, so an alert on its age sees a log that stops
// signing.
func TestCheckpointAgeMetric(t *testing.T) {
	signer, _ := testutil.Signer(t, "spool-test")
	opts := logOpts(signer)
	opts.CheckpointInterval = 200 * time.Millisecond
	var n atomic.Int64
	opts.OnCheckpoint = func(auditlog.SignedCheckpoint) { n.Add(1) }
	opened := time.Now()
	s := openTestSpool(t, t.TempDir(), Options{Log: opts})
	defer s.Close()
	gauge := func(name string) float64 { return testutil.MetricValue(t, s.Register, name) }
	if got := gauge("auditproxy_checkpoint_interval_seconds"); got != 0.2 {
		t.Errorf("interval gauge = %v, want 0.2", got)
	}
	first := gauge("auditproxy_checkpoint_last_timestamp_seconds")
	if d := first - float64(opened.UnixNano())/1e9; d < -1 || d > 1 {
		t.Errorf("before any checkpoint the gauge is %v, %.3f s from the opening", first, d)
	}
	testutil.WaitFor(t, "two checkpoints", func() bool { return n.Load() >= 2 })
	later := gauge("auditproxy_checkpoint_last_timestamp_seconds")
	if later-first < 0.15 || later > float64(time.Now().UnixNano())/1e9 {
		t.Errorf("after two checkpoints 200 ms apart the gauge went from %v to %v", first, later)
	}
}

// TestNewEpochCitesTheLastCheckpoint: a spool whose events are in no log
// (or whose log cannot be continued) starts a new epoch whose first event
// cites the newest checkpoint known.
func TestNewEpochCitesTheLastCheckpoint(t *testing.T) {
	signer, keys := testutil.Signer(t, "spool-test")
	dir := t.TempDir()
	s := openTestSpool(t, dir, Options{Log: logOpts(signer)})
	s.Append(testutil.Event(1))
	s.Close()
	// Another instance name takes over the data dir.
	opts := logOpts(signer)
	opts.Name = "renamed-node"
	s2 := openTestSpool(t, dir, Options{Log: opts})
	s2.Append(testutil.Event(2))
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
		t.Fatalf("two epochs: %+v\n%s", r.Origins, testutil.Problems(r))
	}
}

// TestFailedCommitLeavesTheLogWhole: a commit that fails is undone in the
// log too, so the events that follow continue it without a gap.
func TestFailedCommitLeavesTheLogWhole(t *testing.T) {
	signer, keys := testutil.Signer(t, "spool-test")
	dir := t.TempDir()
	s := openTestSpool(t, dir, Options{Log: logOpts(signer)})
	s.Append(testutil.Event(1))
	var fail atomic.Bool
	s.sync = func(f *os.File) error {
		if fail.Load() {
			return errors.New("injected EIO")
		}
		return f.Sync()
	}
	fail.Store(true)
	if err := s.Append(testutil.Event(2)); err == nil {
		t.Fatal("commit did not fail")
	}
	fail.Store(false)
	for i := 3; i < 12; i++ {
		if err := s.Append(testutil.Event(i)); err != nil {
			t.Fatal(err)
		}
	}
	s.Close()
	if r := verifyDataDir(t, dir, keys); !r.OK {
		t.Fatalf("after a failed commit:\n%s", testutil.Problems(r))
	}
}

func TestCheckpointDirKeepsASecondCopy(t *testing.T) {
	signer, keys := testutil.Signer(t, "spool-test")
	dataDir, cpDir := t.TempDir(), t.TempDir()
	cd, last, err := auditlog.OpenCheckpointDir(cpDir, nil)
	if err != nil || last != nil {
		t.Fatal(err, last)
	}
	opts := logOpts(signer)
	opts.OnCheckpoint = cd.Write
	s := openTestSpool(t, dataDir, Options{Log: opts})
	for i := range 30 {
		s.Append(testutil.Event(i))
	}
	s.Close()
	cd.Close()
	copies, err := os.ReadFile(filepath.Join(cpDir, auditlog.CheckpointFileName))
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
		t.Fatalf("spool plus checkpoint dir: %+v\n%s", r.Origins, testutil.Problems(r))
	}
	_, last, _ = auditlog.OpenCheckpointDir(cpDir, nil)
	if !bytes.Contains(last, []byte(`"final":true`)) {
		t.Errorf("the dir's last checkpoint is not the final one: %s", last)
	}
}

// crashImage returns a copy of dataDir's spool as a kill -9 would leave it
// (no final checkpoint), in a new data dir.
func crashImage(t *testing.T, dataDir string) string {
	t.Helper()
	dst := t.TempDir()
	testutil.CopyDir(t, filepath.Join(dataDir, DirName), filepath.Join(dst, DirName))
	return dst
}

// logStartedOf returns the log_started events of a data dir's spool.
func logStartedOf(t *testing.T, dataDir string) []map[string]any {
	t.Helper()
	var out bytes.Buffer
	if _, err := Export(dataDir, &out); err != nil {
		t.Fatal(err)
	}
	return testutil.OfType(t, bytes.Split(out.Bytes(), []byte("\n")), audit.TypeLogStarted)
}

// TestOnlyRealCheckpointsAreCitedAsPrevious: the previous_checkpoint a new
// epoch cites is an event whose top-level type is checkpoint, placed in the
// log at the size its note signs, signed with the spool's key. An operator's
// annotation whose details say "type":"checkpoint", or a checkpoint signed
// by another key, is newer in the spool but is not cited.
func TestOnlyRealCheckpointsAreCitedAsPrevious(t *testing.T) {
	signer, _ := testutil.Signer(t, "spool-test")
	other, _ := testutil.Signer(t, "spool-test")
	annotation, err := audit.NewOpsEvent("annotation", map[string]any{"type": "checkpoint", "actor": "mallory",
		"justification": `"type":"checkpoint"`, "checkpoint": map[string]any{"note": "forged"}}, audit.Source{}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	// A checkpoint event of another key's log, replayed into this spool.
	foreign := t.TempDir()
	fs := openTestSpool(t, foreign, Options{Log: logOpts(other)})
	for i := range 7 {
		fs.Append(testutil.Event(i))
	}
	fs.Close()
	var fout bytes.Buffer
	Export(foreign, &fout)
	var foreignCP []byte
	for _, line := range bytes.Split(fout.Bytes(), []byte("\n")) {
		if bytes.Contains(line, []byte(`"type":"checkpoint"`)) {
			foreignCP = line
			break
		}
	}
	var fev map[string]any
	json.Unmarshal(foreignCP, &fev)
	delete(fev, "log")
	replayed, _ := json.Marshal(fev)

	for _, tc := range []struct {
		name  string
		event []byte
	}{
		{"an annotation saying type checkpoint", annotation},
		{"a checkpoint signed by another key", replayed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			s := openTestSpool(t, dir, Options{Log: logOpts(signer)})
			for i := range 7 { // log_started and 6 events, then the checkpoint of size 7, then one more
				s.Append(testutil.Event(i))
			}
			if err := s.Append(tc.event); err != nil {
				t.Fatal(err)
			}
			image := crashImage(t, dir) // before Close writes its final checkpoint
			opts := logOpts(signer)
			opts.Name = "renamed-node"
			s2 := openTestSpool(t, image, Options{Log: opts})
			s2.Close()
			started := logStartedOf(t, image)
			if len(started) != 2 {
				t.Fatalf("%d log_started events, want 2", len(started))
			}
			prev, _ := started[1]["log_started"].(map[string]any)["previous_checkpoint"].(map[string]any)
			if prev == nil || prev["type"] != "checkpoint" {
				t.Fatalf("previous_checkpoint %v, want the checkpoint of size 7", started[1]["log_started"])
			}
			if cp := prev["checkpoint"].(map[string]any); cp["size"] != float64(7) || prev["log"].(map[string]any)["seq"] != float64(7) {
				t.Errorf("previous_checkpoint is the event at seq %v, want the real checkpoint at seq 7:\n%v", prev["log"].(map[string]any)["seq"], prev)
			}
		})
	}
}

func TestCheckpointDirIgnoresLinesThatAreNotCheckpoints(t *testing.T) {
	dir := t.TempDir()
	cp := `{"checkpoint":{"note":"n","origin":"o","size":1},"type":"checkpoint"}`
	content := cp + "\n" + `{"type":"annotation","details":{"type":"checkpoint"}}` + "\n" + `{"type":"checkpo`
	os.WriteFile(filepath.Join(dir, auditlog.CheckpointFileName), []byte(content), 0o600)
	cd, last, err := auditlog.OpenCheckpointDir(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	cd.Close()
	if string(last) != cp {
		t.Errorf("last checkpoint %s, want %s", last, cp)
	}
}

// TestLogNameMustBePrintable: the origin goes into every event as it is
// quoted, so a log name must be UTF-8 of printable characters, for which
// that is canonical JSON. A control character, or a byte that is not UTF-8,
// made every event invalid JSON, which readers took for damage.
func TestLogNameMustBePrintable(t *testing.T) {
	signer, keys := testutil.Signer(t, "spool-test")
	for _, tc := range []struct {
		name string
		ok   bool
	}{
		{"gpu-node-17", true},
		{`a "quoted" \ name, with spaces and ünïcödé`, true},
		{"node\x01", false},
		{"node\t17", false},
		{"node\xff", false},
		{"node\u200b", false}, // a format character: quoted as \u200b, not canonical
	} {
		opts := logOpts(signer)
		opts.Name = tc.name
		dir := t.TempDir()
		s, err := Open(dir, Options{Log: opts})
		if (err == nil) != tc.ok {
			t.Errorf("log name %q: %v", tc.name, err)
		}
		if err != nil {
			continue
		}
		s.Append(testutil.Event(1))
		s.Close()
		if r := verifyDataDir(t, dir, keys); !r.OK {
			t.Errorf("log name %q:\n%s", tc.name, testutil.Problems(r))
		}
	}
}
