package eventsrc

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/auditproxy/auditproxy/spool"
)

// Stdin is the path that names standard input.
const Stdin = "-"

// DamageError names the spool segments that were read past damage: their
// intact events were read, the damaged ranges not. Torn are the segments
// that end in bytes that are not a whole record: a copy taken while the
// sidecar was committing them, or cut short; the events before were read.
type DamageError struct {
	Files []*spool.DamagedSegmentError
	Torn  []*TornError
}

func (e *DamageError) Error() string {
	var msgs []string
	for _, f := range e.Files {
		msgs = append(msgs, f.Error())
	}
	for _, t := range e.Torn {
		msgs = append(msgs, t.Error())
	}
	return strings.Join(msgs, "; ")
}

// TornError is a segment file that ends in Bytes bytes that are not a
// whole record.
type TornError struct {
	File  string
	Bytes int64
}

func (e *TornError) Error() string {
	return fmt.Sprintf("%s ends in %d bytes that are not a whole record (a copy taken while the sidecar was committing them, or cut short): the events in them were not read", e.File, e.Bytes)
}

// Collect adds err to e when it is damage read past (a *DamageError or a
// *spool.DamagedSegmentError), and returns err when it is something else.
func (e *DamageError) Collect(err error) error {
	var dse *spool.DamagedSegmentError
	var de *DamageError
	var te *TornError
	switch {
	case errors.As(err, &de):
		e.Files = append(e.Files, de.Files...)
		e.Torn = append(e.Torn, de.Torn...)
		return nil
	case errors.As(err, &dse):
		e.Files = append(e.Files, dse)
		return nil
	case errors.As(err, &te):
		e.Torn = append(e.Torn, te)
		return nil
	}
	return err
}

// OrNil returns e, or nil when it names no file.
func (e *DamageError) OrNil() error {
	if len(e.Files) == 0 && len(e.Torn) == 0 {
		return nil
	}
	return e
}

// Read calls add with every event found at path (see the package
// documentation for what it reads). A damaged spool segment is read past:
// every intact event is read, and the error is then a *DamageError naming
// the damaged files.
func Read(path string, add func([]byte)) error {
	if path == Stdin {
		return readLines(os.Stdin, add)
	}
	files, err := Sources(path)
	if err != nil {
		return err
	}
	var damaged DamageError
	for _, p := range files {
		if err := damaged.Collect(readFile(p, add)); err != nil {
			return err
		}
	}
	return damaged.OrNil()
}

// ReadConcurrently calls add with every event found at paths, as Read does
// for each path, reading up to workers files at once. add is called
// concurrently for different files, and in order for the events of one
// file; src is the file's index in the order Read would read them, across
// paths, so that a caller can restore that order. Stdin (-) is read once.
func ReadConcurrently(paths []string, workers int, add func(src int, ev []byte)) error {
	var srcs []string
	stdin := false
	for _, path := range paths {
		if path == Stdin {
			if stdin {
				continue // already read to its end
			}
			stdin = true
		}
		files, err := Sources(path)
		if err != nil {
			return err
		}
		srcs = append(srcs, files...)
	}
	errs := make([]error, len(srcs))
	var damagedMu sync.Mutex
	var damaged DamageError
	var next atomic.Int64
	var failed atomic.Bool
	var wg sync.WaitGroup
	for range max(1, min(workers, len(srcs))) {
		wg.Go(func() {
			for !failed.Load() {
				i := int(next.Add(1) - 1)
				if i >= len(srcs) {
					return
				}
				fn := func(ev []byte) { add(i, ev) }
				var err error
				if srcs[i] == Stdin {
					err = readLines(os.Stdin, fn)
				} else {
					err = readFile(srcs[i], fn)
				}
				damagedMu.Lock()
				err = damaged.Collect(err)
				damagedMu.Unlock()
				if err != nil {
					errs[i] = err
					failed.Store(true)
				}
			}
		})
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return damaged.OrNil()
}

// CosignaturesFile is the name of the witness client's file of cosigned
// checkpoints in a data dir (DATA-DIR/cosignatures.ndjson): not events.
const CosignaturesFile = "cosignatures.ndjson"

// Sources returns the files Read reads for path, in the order it reads
// them: path itself (or - for stdin), or the event files under the
// directory path. Given a data dir, it reads the spool in it, not the
// sidecar's state files beside it.
func Sources(path string) ([]string, error) {
	if path == Stdin {
		return []string{path}, nil
	}
	info, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if !info.IsDir() {
		return []string{path}, nil
	}
	var files []string
	segments := map[string]bool{}  // the segment files listed
	spoolDirs := map[string]bool{} // the directories holding segments
	err = filepath.WalkDir(path, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() || !isEventFileName(d.Name()) {
			return nil
		}
		files = append(files, p)
		if spool.IsSegmentFile(d.Name()) {
			segments[p] = true
			spoolDirs[filepath.Dir(p)] = true
		}
		return nil
	})
	kept := files[:0]
	for i, p := range files {
		dir := filepath.Dir(p)
		switch {
		case strings.HasSuffix(p, ".json") && spoolDirs[dir]:
			// The spool's state or its log's, beside the segments.
		case spoolDirs[filepath.Join(dir, spool.DirName)] && (strings.HasSuffix(p, ".json") || filepath.Base(p) == CosignaturesFile):
			// A data dir given for its spool: the sidecar's own state
			// beside it (the manifest cache, the witness client's state
			// and cosignatures) holds no events.
		case segments[p] && listedSealed(files[i+1:], p, segments):
			// Being sealed: read the sealed form, listed after it.
		default:
			kept = append(kept, p)
		}
	}
	return kept, err
}

// listedSealed reports whether the segment file p was listed also in its
// sealed form: a segment file beside it whose name extends p's (NAME.seg,
// then NAME.seg.zst). WalkDir lists in lexical order, so the paths that
// extend p's come right after it.
func listedSealed(after []string, p string, segments map[string]bool) bool {
	for _, q := range after {
		if !strings.HasPrefix(q, p) {
			return false
		}
		if segments[q] && filepath.Dir(q) == filepath.Dir(p) {
			return true
		}
	}
	return false
}

// isEventFileName reports whether a file of this name in a directory may
// hold events: a spool segment, or JSON lines.
func isEventFileName(name string) bool {
	return spool.IsSegmentFile(name) || strings.HasSuffix(name, ".ndjson") ||
		strings.HasSuffix(name, ".jsonl") || strings.HasSuffix(name, ".json")
}

// readFile calls add with every event of the file at path. A spool segment
// of a live data dir that went since it was listed is not an error: a plain
// one was sealed (its sealed file holds the same records, read instead), a
// sealed one deleted.
func readFile(path string, add func([]byte)) error {
	if spool.IsSegmentFile(path) {
		read := func(path string) error {
			torn, err := spool.ReadSegmentFile(path, func(rec []byte) error { add(rec); return nil })
			if err == nil && torn > 0 {
				return &TornError{File: path, Bytes: torn}
			}
			return err
		}
		err := read(path)
		if errors.Is(err, fs.ErrNotExist) {
			if sealed := sealedForm(path); sealed != "" {
				err = read(sealed)
			}
		}
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		return err
	}
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := readLines(f, add); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	return nil
}

// sealedForm returns the sealed form of the segment file at path, gone
// since it was listed: the segment file beside it whose name extends its
// own; or "" when there is none (path was sealed already, and deleted).
func sealedForm(path string) string {
	dir, name := filepath.Split(path)
	if dir == "" {
		dir = "."
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return ""
	}
	for _, e := range entries {
		if n := e.Name(); len(n) > len(name) && strings.HasPrefix(n, name) && spool.IsSegmentFile(n) {
			return filepath.Join(dir, n)
		}
	}
	return ""
}

func readLines(r io.Reader, add func([]byte)) error {
	br := bufio.NewReaderSize(r, 1<<20)
	for {
		line, err := br.ReadSlice('\n')
		if err == bufio.ErrBufferFull {
			long := append([]byte(nil), line...)
			for err == bufio.ErrBufferFull {
				line, err = br.ReadSlice('\n')
				long = append(long, line...)
			}
			line = long
		}
		if len(line) > 0 {
			add(line)
		}
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
	}
}
