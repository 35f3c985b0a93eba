// Package shipper owns where audit events go after the proxy hands them over:
// the local log in the data directory and, later, the durable spool and the
// forward-protocol connection to the aggregator.
//
// Until the durable spool exists, events are appended to one NDJSON file,
// events.ndjson, in the data directory: one JSON object per line, oldest
// first, each written with a single write(2) on a file opened with O_APPEND,
// so a crash leaves at most the last line torn and never interleaves two
// events.
package shipper

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"

	"github.com/auditproxy/auditproxy/audit"
)

// EventLogName is the events file's name inside the data directory.
const EventLogName = "events.ndjson"

// FileLog appends events to the data directory's NDJSON file. It implements
// audit.Recorder and is safe for concurrent use.
type FileLog struct {
	mu       sync.Mutex
	f        *os.File
	buf      []byte
	recorded atomic.Int64
}

var _ audit.Recorder = (*FileLog)(nil)

// OpenFileLog opens (creating if needed) the events file in dataDir.
func OpenFileLog(dataDir string) (*FileLog, error) {
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return nil, fmt.Errorf("create data dir: %w", err)
	}
	path := filepath.Join(dataDir, EventLogName)
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open event log: %w", err)
	}
	return &FileLog{f: f}, nil
}

// Record appends ev as one line.
func (l *FileLog) Record(ev *audit.Event) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.f == nil {
		return errors.New("event log is closed")
	}
	l.buf = append(ev.AppendJSON(l.buf[:0]), '\n')
	if _, err := l.f.Write(l.buf); err != nil {
		return fmt.Errorf("append event: %w", err)
	}
	l.recorded.Add(1)
	return nil
}

// Recorded reports how many events this FileLog appended.
func (l *FileLog) Recorded() int64 { return l.recorded.Load() }

// Sync flushes the file to stable storage.
func (l *FileLog) Sync() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.f == nil {
		return nil
	}
	return l.f.Sync()
}

// Close syncs and closes the file. Record fails after Close.
func (l *FileLog) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.f == nil {
		return nil
	}
	err := l.f.Sync()
	if cerr := l.f.Close(); err == nil {
		err = cerr
	}
	l.f = nil
	return err
}

// ExportStats reports what Export read.
type ExportStats struct {
	Events int
	// TornTail is set when the file ended in a partial line (the process died
	// while writing it); that line is not exported.
	TornTail bool
}

// Export writes every event recorded in dataDir to w, oldest first, one JSON
// object per line. Lines that are not valid JSON are an error, except a final
// line without its newline, which a crash can leave and which is skipped and
// reported in the stats.
func Export(dataDir string, w io.Writer) (ExportStats, error) {
	var st ExportStats
	path := filepath.Join(dataDir, EventLogName)
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		if _, serr := os.Stat(dataDir); serr != nil {
			return st, fmt.Errorf("data dir %s: %w", dataDir, serr)
		}
		return st, nil // a data dir with no event yet
	}
	if err != nil {
		return st, fmt.Errorf("open event log: %w", err)
	}
	defer f.Close()
	r := bufio.NewReaderSize(f, 256<<10)
	bw := bufio.NewWriterSize(w, 256<<10)
	for lineNo := 1; ; lineNo++ {
		line, err := r.ReadSlice('\n')
		if errors.Is(err, bufio.ErrBufferFull) {
			// A long line: collect it whole.
			full := append([]byte(nil), line...)
			for errors.Is(err, bufio.ErrBufferFull) {
				line, err = r.ReadSlice('\n')
				full = append(full, line...)
			}
			line = full
		}
		if err == io.EOF {
			if len(line) > 0 {
				st.TornTail = true
			}
			break
		}
		if err != nil {
			return st, fmt.Errorf("read event log: %w", err)
		}
		if !json.Valid(line) {
			return st, fmt.Errorf("%s line %d: not a JSON event", path, lineNo)
		}
		if _, err := bw.Write(line); err != nil {
			return st, err
		}
		st.Events++
	}
	return st, bw.Flush()
}
