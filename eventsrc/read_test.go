package eventsrc

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/auditproxy/auditproxy/internal/testutil"
	"github.com/auditproxy/auditproxy/spool"
)

// TestReadingALiveSpool: verify, query, prove and show read a live data
// dir, whose segments are sealed (compressed, then the plain file removed)
// and deleted as they read it. A segment sealed between the listing of its
// directory and its opening is read from its compressed file; one deleted
// meanwhile is not an error (export does the same); one listed in both
// forms is read once.
func TestReadingALiveSpool(t *testing.T) {
	dataDir := t.TempDir()
	sp, err := spool.Open(dataDir, spool.Options{SegmentMaxBytes: 4 << 10, MinFreeBytes: -1})
	if err != nil {
		t.Fatal(err)
	}
	const n = 200
	for i := range n {
		if err := sp.Append(testutil.Event(i)); err != nil {
			t.Fatal(err)
		}
	}
	spoolDir := filepath.Join(dataDir, spool.DirName)
	var sealed []string
	testutil.WaitFor(t, "3 sealed segments", func() bool {
		sealed, _ = filepath.Glob(filepath.Join(spoolDir, "*.seg.zst"))
		return len(sealed) >= 3
	})
	sp.Close()
	count := func(path string) (int, error) {
		k := 0
		err := Read(path, func([]byte) { k++ })
		return k, err
	}
	want, err := count(spoolDir)
	if err != nil || want != n {
		t.Fatalf("%d events read, want %d: %v", want, n, err)
	}
	// Listed in both forms: the seal renamed the compressed file in and has
	// not yet removed the plain one.
	plain := strings.TrimSuffix(sealed[0], ".zst")
	if err := os.WriteFile(plain, []byte("the plain form, about to be removed"), 0o600); err != nil {
		t.Fatal(err)
	}
	if got, err := count(spoolDir); err != nil || got != n {
		t.Errorf("a segment listed in both forms: %d events, want %d: %v", got, n, err)
	}
	os.Remove(plain)
	var fromSealed int
	if err := Read(sealed[1], func([]byte) { fromSealed++ }); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		path string // as listed
		want int
	}{
		{"sealed since it was listed", strings.TrimSuffix(sealed[1], ".zst"), fromSealed},
		{"deleted since it was listed", sealed[2] + ".gone.seg.zst", 0},
	} {
		got := 0
		if err := readFile(tc.path, func([]byte) { got++ }); err != nil || got != tc.want {
			t.Errorf("%s: %d events, want %d: %v", tc.name, got, tc.want, err)
		}
	}
}

// TestSources: which files a directory holds events in. Beside spool
// segments, a *.json file is the spool's state or its log's, not events,
// found by the segments beside it, not by its name.
func TestSources(t *testing.T) {
	root := t.TempDir()
	write := func(name, content string) {
		t.Helper()
		p := filepath.Join(root, name)
		os.MkdirAll(filepath.Dir(p), 0o700)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	sp, err := spool.Open(filepath.Join(root, "data"), spool.Options{MinFreeBytes: -1})
	if err != nil {
		t.Fatal(err)
	}
	if err := sp.Append(testutil.Event(1)); err != nil {
		t.Fatal(err)
	}
	if err := sp.Close(); err != nil {
		t.Fatal(err)
	}
	spoolDir := filepath.Join(root, "data", spool.DirName)
	segs, _ := filepath.Glob(filepath.Join(spoolDir, "*.seg"))
	if len(segs) != 1 {
		t.Fatalf("segments %v", segs)
	}
	seg := filepath.Base(segs[0])
	if _, err := os.Stat(filepath.Join(spoolDir, "state.json")); err != nil {
		t.Fatal(err)
	}
	write("data/spool/log.json", `{"origin":"h/1"}`) // the log's own, beside the segments
	write("data/spool/notes.ndjson", "")
	// The sidecar's state beside its spool: not events.
	write("data/manifest-cache.json", `{}`)
	write("data/witness.json", `{}`)
	write("data/"+CosignaturesFile, `{"origin":"h/1","size":1,"note":"x"}`)
	write("data/checkpoints/checkpoints.ndjson", "") // a checkpoint dir inside: events
	write("evidence/"+seg, "")                       // a copy of a spool, under another name
	write("evidence/"+seg+".zst", "")                // ... taken while the segment was being sealed
	write("evidence/state.json", "")                 // ... with its state
	write("evidence/more.jsonl", "")                 // and events beside it
	write("exports/a.ndjson", "")
	write("exports/b.jsonl", "")
	write("exports/c.json", "")
	write("exports/notes.txt", "")
	write("exports/state.json", "") // no segments beside it: a file like any other

	rel := func(paths []string) []string {
		var r []string
		for _, p := range paths {
			q, _ := filepath.Rel(root, p)
			r = append(r, filepath.ToSlash(q))
		}
		return r
	}
	for _, tc := range []struct {
		path string
		want []string
	}{
		{"data", []string{"data/checkpoints/checkpoints.ndjson", "data/spool/" + seg, "data/spool/notes.ndjson"}},
		{"data/spool", []string{"data/spool/" + seg, "data/spool/notes.ndjson"}},
		{"data/spool/log.json", []string{"data/spool/log.json"}}, // named: read
		{"evidence", []string{"evidence/" + seg + ".zst", "evidence/more.jsonl"}},
		{"exports", []string{"exports/a.ndjson", "exports/b.jsonl", "exports/c.json", "exports/state.json"}},
	} {
		got, err := Sources(filepath.Join(root, tc.path))
		if err != nil || !slices.Equal(rel(got), tc.want) {
			t.Errorf("Sources(%s) = %q, %v; want %q", tc.path, rel(got), err, tc.want)
		}
	}
}

// TestReadConcurrently: the same events as Read, each tagged with its
// file's place in Read's order, in order within a file.
func TestReadConcurrently(t *testing.T) {
	dir := t.TempDir()
	var want []string
	for f := range 5 {
		var lines []string
		for i := range 50 {
			lines = append(lines, string(testutil.Event(f*100+i)))
		}
		want = append(want, lines...)
		os.WriteFile(filepath.Join(dir, string(rune('a'+f))+".ndjson"), []byte(strings.Join(lines, "\n")+"\n"), 0o600)
	}
	var one []string
	if err := Read(dir, func(ev []byte) { one = append(one, strings.TrimSpace(string(ev))) }); err != nil || !slices.Equal(one, want) {
		t.Fatalf("Read: %d events, %v", len(one), err)
	}
	for _, workers := range []int{1, 3, 16} {
		var mu sync.Mutex
		bySrc := make([][]string, 5)
		err := ReadConcurrently([]string{dir}, workers, func(src int, ev []byte) {
			mu.Lock()
			bySrc[src] = append(bySrc[src], strings.TrimSpace(string(ev)))
			mu.Unlock()
		})
		if got := slices.Concat(bySrc...); err != nil || !slices.Equal(got, want) {
			t.Errorf("%d workers: %d events, %v", workers, len(got), err)
		}
	}
}

// TestReadReportsATornEnd: a segment copied while a record was being
// committed (or cut short) ends in bytes that are not a whole record: the
// events before it are read, and the error names the file and the bytes.
func TestReadReportsATornEnd(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	sp, err := spool.Open(dir, spool.Options{MinFreeBytes: -1})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		if err := sp.Append(testutil.Event(i)); err != nil {
			t.Fatal(err)
		}
	}
	sp.Close()
	segs, _ := filepath.Glob(filepath.Join(dir, spool.DirName, "*.seg"))
	if len(segs) != 1 {
		t.Fatalf("segments %v", segs)
	}
	fi, _ := os.Stat(segs[0])
	if err := os.Truncate(segs[0], fi.Size()-5); err != nil {
		t.Fatal(err)
	}
	var n int
	err = Read(dir, func([]byte) { n++ })
	var d *DamageError
	if !errors.As(err, &d) || len(d.Torn) != 1 || d.Torn[0].File != segs[0] || d.Torn[0].Bytes <= 0 || len(d.Files) != 0 {
		t.Fatalf("Read of a torn segment: %v", err)
	}
	if n != 2 || !strings.Contains(err.Error(), "bytes that are not a whole record") {
		t.Errorf("%d events read; error %q", n, err)
	}
}
