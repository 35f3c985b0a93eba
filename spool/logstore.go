package spool

import (
	"errors"
	"io"
	"log/slog"

	"github.com/auditproxy/auditproxy/auditlog"
)

// logStore is the spool as its log (auditlog.Log) reads it when it opens:
// it implements auditlog.Store.
type logStore struct{ s *Spool }

var _ auditlog.Store = logStore{}

func (st logStore) Dir() string          { return st.s.dir }
func (st logStore) Logger() *slog.Logger { return st.s.log }
func (st logStore) MaxBytes() int64      { return st.s.opts.MaxBytes }
func (st logStore) WakeMaintenance()     { st.s.wakeMaintenance() }

func (st logStore) Segments() ([]uint64, error) {
	segs, _, err := listSegments(st.s.dir)
	ids := make([]uint64, len(segs))
	for i, sg := range segs {
		ids[i] = sg.id
	}
	return ids, err
}

func (st logStore) ReadSegment(id uint64, fn func([]byte) error) error {
	var damaged *DamagedSegmentError
	if err := readSegment(st.s.dir, id, fn); err != nil && !errors.As(err, &damaged) {
		return err // fn's, or the file's: damage is read past, and what it lost shows as missing records
	}
	return nil
}

func (st logStore) FirstRecord(id uint64) ([]byte, error) {
	sr, err := openSegment(st.s.dir, id)
	if err != nil {
		return nil, err
	}
	defer sr.Close()
	rec, err := sr.next()
	if err == io.EOF {
		err = errors.New("empty segment")
	}
	return rec, err
}

func (st logStore) Recovered() auditlog.Recovered {
	r := st.s.Recovery
	return auditlog.Recovered{Lost: r.Lost, CommittedLost: r.CommittedLost, CommittedLostDetail: r.CommittedLostDetail, Pending: st.s.pending}
}

func (st logStore) ReportCommittedLost(detail string) {
	st.s.Recovery.CommittedLost, st.s.Recovery.CommittedLostDetail = true, detail
}

// forEachRecord calls fn with every record of the spool in dir, oldest
// first, until fn returns an error.
func forEachRecord(dir string, fn func([]byte) error) error {
	segs, _, err := listSegments(dir)
	if err != nil {
		return err
	}
	for _, sg := range segs {
		var damaged *DamagedSegmentError
		if err := readSegment(dir, sg.id, fn); err != nil && !errors.As(err, &damaged) {
			return err // fn's, or the file's: damage is read past, and what it lost shows as missing records
		}
	}
	return nil
}

// readSegment calls fn with each intact record of segment id, reading past
// damage: a *DamagedSegmentError then says what was skipped. The spool's
// newest segment has been repaired before this is called, so a torn tail
// is damage too.
func readSegment(dir string, id uint64, fn func([]byte) error) error {
	path, _ := segmentPath(dir, id)
	_, err := scanSegmentFile(path, false, func(_ int64, rec []byte) error { return fn(rec) })
	return err
}

// Log returns the verifiable log the spool commits into, nil when it is
// none (Options.Log unset).
func (s *Spool) Log() *auditlog.Log { return s.chain }
