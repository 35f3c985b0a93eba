package auditlog_test

// Set-up for the tests that run a Log on a real spool, the way the
// sidecar does: through spool.Options.Log.

import (
	"bytes"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/mod/sumdb/note"

	"github.com/auditproxy/auditproxy/audit"
	"github.com/auditproxy/auditproxy/auditlog"
	"github.com/auditproxy/auditproxy/internal/testutil"
	"github.com/auditproxy/auditproxy/spool"
)

func logOpts(s note.Signer) *auditlog.Options {
	return &auditlog.Options{Name: "test-node", Signer: s, CheckpointInterval: time.Hour, CheckpointEvery: 7,
		Source: audit.Source{Host: "h", Version: "t"}}
}

func openTestSpool(t *testing.T, dir string, opts spool.Options) *spool.Spool {
	t.Helper()
	s, err := spool.Open(dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// fillLog appends n events with async durability (fast: one fsync per
// interval, not per event) and waits until they are committed.
func fillLog(t *testing.T, s *spool.Spool, from, n int) {
	t.Helper()
	before := s.Recorded()
	for i := from; i < from+n; i++ {
		if err := s.Append(testutil.Event(i)); err != nil {
			t.Fatal(err)
		}
	}
	testutil.WaitFor(t, "the events to be committed", func() bool { return s.Recorded() >= before+int64(n) })
}

// segmentFiles returns the segment files of the spool directory dir,
// oldest first (their names are their zero-padded ids).
func segmentFiles(t *testing.T, dir string) []string {
	t.Helper()
	m, err := filepath.Glob(filepath.Join(dir, "*.seg*"))
	if err != nil {
		t.Fatal(err)
	}
	var segs []string
	for _, path := range m {
		if spool.IsSegmentFile(filepath.Base(path)) {
			segs = append(segs, path)
		}
	}
	slices.Sort(segs)
	return segs
}

// unsealed counts the segments not yet compressed: the active one, and
// those awaiting their seal.
func unsealed(segs []string) int {
	n := 0
	for _, path := range segs {
		if !strings.HasSuffix(path, ".zst") {
			n++
		}
	}
	return n
}

// waitSealed waits until every segment but the active one is sealed.
func waitSealed(t *testing.T, s *spool.Spool) {
	t.Helper()
	testutil.WaitFor(t, "sealing", func() bool { return unsealed(segmentFiles(t, s.Dir())) == 1 })
}

// spoolBytes returns the bytes the spool counts against its bound.
func spoolBytes(t *testing.T, s *spool.Spool) int64 {
	t.Helper()
	return int64(testutil.MetricValue(t, s.Register, "auditproxy_spool_bytes"))
}

// exportLines returns the events of a data dir's spool, as export writes
// them.
func exportLines(t *testing.T, dataDir string) [][]byte {
	t.Helper()
	var out bytes.Buffer
	if _, err := spool.Export(dataDir, &out); err != nil {
		t.Fatal(err)
	}
	return bytes.Split(bytes.TrimSpace(out.Bytes()), []byte("\n"))
}

// verifyDataDir runs the auditor's verification over a data dir's spool.
func verifyDataDir(t *testing.T, dataDir string, keys note.Verifiers) *auditlog.Report {
	t.Helper()
	return testutil.Verify(keys, exportLines(t, dataDir)...)
}

// crashImage returns a copy of dataDir's spool as a kill -9 would leave it
// (no final checkpoint), in a new data dir.
func crashImage(t *testing.T, dataDir string) string {
	t.Helper()
	dst := t.TempDir()
	testutil.CopyDir(t, filepath.Join(dataDir, spool.DirName), filepath.Join(dst, spool.DirName))
	return dst
}

// logStartedOf returns the log_started events of a data dir's spool.
func logStartedOf(t *testing.T, dataDir string) []map[string]any {
	t.Helper()
	return testutil.OfType(t, exportLines(t, dataDir), audit.TypeLogStarted)
}
