package shipper

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// ExportStats reports what Export read.
type ExportStats struct {
	Events   int
	Segments int
	// TornBytes counts bytes at the end of the newest segment that are not a
	// whole, intact record: the process died while committing them (their
	// requests were never answered in full) or is committing them now.
	// They are not exported; the next start cuts them off.
	TornBytes int64
}

// Export writes every event in dataDir's spool to w, oldest first, one JSON
// object per line. It reads sealed (compressed) segments and the active one,
// also while a proxy is writing it or after one died writing it.
func Export(dataDir string, w io.Writer) (ExportStats, error) {
	var st ExportStats
	dir := filepath.Join(dataDir, SpoolDirName)
	segs, _, err := listSegments(dir)
	if errors.Is(err, fs.ErrNotExist) {
		if _, serr := os.Stat(dataDir); serr != nil {
			return st, fmt.Errorf("data dir %s: %w", dataDir, serr)
		}
		return st, nil // a data dir with no event yet
	}
	if err != nil {
		return st, fmt.Errorf("read spool dir: %w", err)
	}
	bw := bufio.NewWriterSize(w, 256<<10)
	for i, sg := range segs {
		last := i == len(segs)-1
		n, torn, err := exportSegment(dir, sg.id, bw, last)
		st.Events += n
		st.TornBytes += torn
		if errors.Is(err, fs.ErrNotExist) {
			continue // deleted by retention while we read
		}
		if err != nil {
			return st, err
		}
		st.Segments++
	}
	return st, bw.Flush()
}

// exportSegment copies one segment's records to w. In the newest segment a
// record cut short or failing its checksum ends the export as a torn tail;
// anywhere else it is an error.
func exportSegment(dir string, id uint64, w *bufio.Writer, newest bool) (events int, torn int64, err error) {
	sr, err := openSegment(dir, id)
	if err != nil {
		return 0, 0, err
	}
	defer sr.Close()
	for {
		rec, err := sr.next()
		if err == io.EOF {
			return events, 0, nil
		}
		var corrupt *errCorruptFrame
		if newest && (errors.Is(err, io.ErrUnexpectedEOF) || errors.As(err, &corrupt)) {
			fi, serr := sr.f.Stat()
			if serr != nil || sr.sealed {
				return events, 0, err
			}
			return events, fi.Size() - sr.off, nil
		}
		if err != nil {
			return events, 0, fmt.Errorf("%s: %w", filepath.Join(dir, segmentName(id)), err)
		}
		w.Write(rec)
		if err := w.WriteByte('\n'); err != nil {
			return events, 0, err
		}
		events++
	}
}

// ReadSegmentFile calls fn with each record of the spool segment file at
// path, plain (.seg) or sealed (.seg.zst), until fn returns an error. A torn
// tail (a crash while committing) ends the records without error; its size
// is returned.
func ReadSegmentFile(path string, fn func(record []byte) error) (torn int64, err error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	sr, err := newSegmentReader(f, 0, strings.HasSuffix(path, sealedExt))
	if err != nil {
		return 0, fmt.Errorf("%s: %w", path, err)
	}
	defer sr.Close()
	for {
		rec, err := sr.next()
		if err == io.EOF {
			return 0, nil
		}
		var corrupt *errCorruptFrame
		if !sr.sealed && (errors.Is(err, io.ErrUnexpectedEOF) || errors.As(err, &corrupt)) {
			if fi, serr := sr.f.Stat(); serr == nil {
				return fi.Size() - sr.off, nil
			}
		}
		if err != nil {
			return 0, fmt.Errorf("%s: %w", path, err)
		}
		if err := fn(rec); err != nil {
			return 0, err
		}
	}
}

// IsSegmentFile reports whether name is a spool segment's file name.
func IsSegmentFile(name string) bool {
	return strings.HasSuffix(name, segmentExt) || strings.HasSuffix(name, sealedExt)
}
