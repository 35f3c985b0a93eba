package spool

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
	// Damaged lists the segments read past damage (their intact records
	// were exported); Export's error then names them.
	Damaged []*DamagedSegmentError
	// Quarantined lists damaged segment files the spool moved aside
	// (NAME.damaged): their intact records are in the segment that took
	// their place, and a segment_damaged event in the log says what was
	// lost.
	Quarantined []string
}

// ExportDamageError is Export's error when it read past damage: every
// intact record was exported, the damaged ranges were not.
type ExportDamageError struct {
	Damaged []*DamagedSegmentError
}

func (e *ExportDamageError) Error() string {
	msgs := make([]string, len(e.Damaged))
	for i, d := range e.Damaged {
		msgs[i] = d.Error()
	}
	return "damaged spool segment: " + strings.Join(msgs, "; ")
}

// Export writes every event in dataDir's spool to w, oldest first, one JSON
// object per line. It reads sealed (compressed) segments and the active one,
// also while a proxy is writing it or after one died writing it. Damage in
// a segment is read past (see damage.go): the intact records before and
// after it are exported, and the error, an *ExportDamageError, names the
// damaged files and ranges.
func Export(dataDir string, w io.Writer) (ExportStats, error) {
	var st ExportStats
	dir := filepath.Join(dataDir, DirName)
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
	st.Quarantined, _ = filepath.Glob(filepath.Join(dir, "*"+damagedExt))
	bw := bufio.NewWriterSize(w, 256<<10)
	for i, sg := range segs {
		last := i == len(segs)-1
		path := filepath.Join(dir, segmentName(sg.id)+segmentExt)
		if sg.sealed {
			path = filepath.Join(dir, segmentName(sg.id)+sealedExt)
		}
		torn, err := scanSegmentFile(path, last && !sg.sealed, func(_ int64, rec []byte) error {
			bw.Write(rec)
			st.Events++
			return bw.WriteByte('\n')
		})
		st.TornBytes += torn
		var damaged *DamagedSegmentError
		switch {
		case errors.Is(err, fs.ErrNotExist):
			if sg.sealed {
				continue // deleted by retention while we read
			}
			// Sealed while we read: the compressed file holds the same records.
			torn, err = scanSegmentFile(filepath.Join(dir, segmentName(sg.id)+sealedExt), false, func(_ int64, rec []byte) error {
				bw.Write(rec)
				st.Events++
				return bw.WriteByte('\n')
			})
			if errors.Is(err, fs.ErrNotExist) {
				continue
			}
			if errors.As(err, &damaged) {
				st.Damaged = append(st.Damaged, damaged)
			} else if err != nil {
				return st, err
			}
		case errors.As(err, &damaged):
			st.Damaged = append(st.Damaged, damaged)
		case err != nil:
			return st, err
		}
		st.Segments++
	}
	if err := bw.Flush(); err != nil {
		return st, err
	}
	if len(st.Damaged) > 0 {
		return st, &ExportDamageError{st.Damaged}
	}
	return st, nil
}

// ReadSegmentFile calls fn with each record of the spool segment file at
// path, plain (.seg) or sealed (.seg.zst), until fn returns an error. A torn
// tail of a plain segment (a crash while committing) ends the records
// without error; its size is returned. Damage is read past: every intact
// record is delivered, and the error is then a *DamagedSegmentError that
// names the file and the ranges skipped.
func ReadSegmentFile(path string, fn func(record []byte) error) (torn int64, err error) {
	return scanSegmentFile(path, !strings.HasSuffix(path, sealedExt), func(_ int64, rec []byte) error { return fn(rec) })
}

// IsSegmentFile reports whether name is a spool segment's file name.
func IsSegmentFile(name string) bool {
	return strings.HasSuffix(name, segmentExt) || strings.HasSuffix(name, sealedExt)
}
