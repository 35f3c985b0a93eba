package shipper

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/auditproxy/auditproxy/audit"
)

func TestFileLogAndExport(t *testing.T) {
	dir := t.TempDir()
	l, err := OpenFileLog(dir)
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
