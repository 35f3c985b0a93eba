package shipper

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/auditproxy/auditproxy/audit"
)

func TestFileLogAndExport(t *testing.T) {
	dir := t.TempDir()
	l, err := OpenFileLog(dir, FileLogOptions{})
	if err != nil {
		t.Fatal(err)
	}
	// Concurrent writers: every event lands as one whole line.
	const n = 200
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ev := audit.Event{V: 1, Type: audit.TypeInference, ID: audit.NewID(), Time: audit.Timestamp(time.Now()),
				RequestID: strings.Repeat("r", i%50+1)}
			if err := l.Record(&ev); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if err := l.Record(&audit.Event{}); err == nil {
		t.Error("Record after Close succeeded")
	}
	fi, _ := os.Stat(filepath.Join(dir, EventLogName))
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("event log mode %v, want 0600", fi.Mode().Perm())
	}

	var out bytes.Buffer
	st, err := Export(dir, &out)
	if err != nil || st.Events != n || st.TornTail {
		t.Fatalf("Export = %+v, %v; want %d events", st, err, n)
	}
	ids := map[string]bool{}
	for _, line := range strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n") {
		var ev audit.Event
		if err := json.Unmarshal([]byte(line), &ev); err != nil {
			t.Fatalf("exported line %q: %v", line, err)
		}
		ids[ev.ID] = true
	}
	if len(ids) != n {
		t.Errorf("%d distinct events exported, want %d", len(ids), n)
	}
}

func TestExportTornTail(t *testing.T) {
	dir := t.TempDir()
	full := `{"v":1,"id":"a"}` + "\n" + `{"v":1,"id":"b"}` + "\n"
	// Every cut inside the last line is a torn tail; the first line survives.
	for cut := len(full) - 1; cut > len(full)/2; cut-- {
		os.WriteFile(filepath.Join(dir, EventLogName), []byte(full[:cut]), 0o600)
		var out bytes.Buffer
		st, err := Export(dir, &out)
		if err != nil || st.Events != 1 || out.String() != full[:len(full)/2] || st.TornTail != (cut > len(full)/2) {
			t.Fatalf("cut at %d: %+v %v %q", cut, st, err, out.String())
		}
	}
}

func TestExportErrors(t *testing.T) {
	if _, err := Export(filepath.Join(t.TempDir(), "missing"), &bytes.Buffer{}); err == nil {
		t.Error("export of a missing data dir succeeded")
	}
	dir := t.TempDir()
	if st, err := Export(dir, &bytes.Buffer{}); err != nil || st.Events != 0 {
		t.Errorf("export of an empty data dir: %+v %v", st, err)
	}
	os.WriteFile(filepath.Join(dir, EventLogName), []byte("{\"v\":1}\ngarbage\n"), 0o600)
	if _, err := Export(dir, &bytes.Buffer{}); err == nil || !strings.Contains(err.Error(), "line 2") {
		t.Errorf("corrupt line: error %v", err)
	}
}

// TestGroupCommit: in sync mode Record returns only once its event is on
// disk (written and fsynced), and events that arrive during an fsync share
// the next one.
func TestGroupCommit(t *testing.T) {
	dir := t.TempDir()
	const fsyncTime = 20 * time.Millisecond
	l, err := OpenFileLog(dir, FileLogOptions{Durability: DurabilitySync})
	if err != nil {
		t.Fatal(err)
	}
	var syncs atomic.Int64
	var syncedSize atomic.Int64
	realSync := l.sync
	l.sync = func() error {
		syncs.Add(1)
		fi, _ := l.f.Stat()
		syncedSize.Store(fi.Size())
		time.Sleep(fsyncTime) // a slow disk, so that events pile up behind it
		return realSync()
	}
	const n = 64
	start := time.Now()
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ev := audit.Event{V: 1, ID: strings.Repeat("x", i)}
			if err := l.Record(&ev); err != nil {
				t.Error(err)
				return
			}
			// Returned: its line must be within what was fsynced.
			b, _ := os.ReadFile(filepath.Join(dir, EventLogName))
			line := `"id":"` + ev.ID + `"`
			idx := strings.Index(string(b), line)
			if idx < 0 || int64(idx) >= syncedSize.Load() {
				t.Errorf("Record returned before its event was fsynced")
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	if got := syncs.Load(); got >= n || got > int64(elapsed/fsyncTime)+1 {
		t.Errorf("%d fsyncs for %d concurrent events in %v; want them grouped, one at a time", got, n, elapsed)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if l.Recorded() != n {
		t.Errorf("Recorded() = %d, want %d", l.Recorded(), n)
	}
}

// TestAsyncDurability: Record returns before the commit; Close commits
// everything.
func TestAsyncDurability(t *testing.T) {
	dir := t.TempDir()
	l, err := OpenFileLog(dir, FileLogOptions{Durability: DurabilityAsync, FsyncInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	// The first commit runs at once (none ran for an interval); the
	// second waits an hour, so these events can only be pending.
	l.Record(&audit.Event{ID: "first"})
	deadline := time.Now().Add(5 * time.Second)
	for l.Recorded() != 1 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	for i := range 10 {
		if err := l.Record(&audit.Event{ID: strings.Repeat("y", i+1)}); err != nil {
			t.Fatal(err)
		}
	}
	if got := l.Recorded(); got != 1 {
		t.Errorf("%d events committed before the interval; want 1", got)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if st, err := Export(dir, &out); err != nil || st.Events != 11 {
		t.Errorf("after Close: %+v %v, want 11 events", st, err)
	}
}

func TestParseDurability(t *testing.T) {
	for _, s := range []string{"sync", "async"} {
		if d, err := ParseDurability(s); err != nil || string(d) != s {
			t.Errorf("ParseDurability(%q) = %q, %v", s, d, err)
		}
	}
	if _, err := ParseDurability("eventually"); err == nil {
		t.Error("ParseDurability(eventually) succeeded")
	}
}

// TestOpenCutsTornTail: a log left with a partial last line at every
// possible cut is repaired on open, and the next event starts a line of its
// own.
func TestOpenCutsTornTail(t *testing.T) {
	full := `{"v":1,"id":"a"}` + "\n" + `{"v":1,"id":"b"}` + "\n"
	firstLine := len(full) / 2
	for cut := 0; cut <= len(full); cut++ {
		dir := t.TempDir()
		os.WriteFile(filepath.Join(dir, EventLogName), []byte(full[:cut]), 0o600)
		l, err := OpenFileLog(dir, FileLogOptions{})
		if err != nil {
			t.Fatal(err)
		}
		wantCut := int64(0)
		switch {
		case cut < firstLine:
			wantCut = int64(cut)
		case cut < len(full):
			wantCut = int64(cut - firstLine)
		}
		if l.TornBytesCut != wantCut {
			t.Errorf("cut at %d: TornBytesCut %d, want %d", cut, l.TornBytesCut, wantCut)
		}
		if err := l.Record(&audit.Event{V: 1, ID: "c"}); err != nil {
			t.Fatal(err)
		}
		l.Close()
		var out bytes.Buffer
		st, err := Export(dir, &out)
		if err != nil || st.TornTail {
			t.Fatalf("cut at %d: export %+v %v:\n%s", cut, st, err, out.String())
		}
		kept := strings.Count(full[:cut], "\n")
		lines := strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n")
		if st.Events != kept+1 || !strings.Contains(lines[len(lines)-1], `"id":"c"`) {
			t.Errorf("cut at %d: exported %d events (%q), want the %d whole ones and the new one last", cut, st.Events, out.String(), kept)
		}
	}
}
