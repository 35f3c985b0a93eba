package spool

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/auditproxy/auditproxy/internal/fsutil"
	"github.com/valyala/fastjson"
)

// pendingEpochFile records a new log epoch that a start decided on, and why,
// until the epoch's first event (log_started, which says the same) is
// committed. It is written (atomically, fsynced) before anything that
// destroys the evidence of the reason: a segment rewritten without its
// damage, a state file that no longer says how much was committed, a tree
// state reset for the new epoch. A crash before log_started commits would
// otherwise leave a spool that looks whole, or whose tree state belongs to
// an epoch without events, and the next start would continue the old log
// without a word about what was lost (or rebuild its tree, blaming that
// instead). The next start reads it, starts the epoch again with the same
// reason and what it recorded as lost (adding what it finds itself), and
// the file is removed once log_started is committed. A file whose epoch has
// events in the spool was left by a crash just after that commit: it is
// removed without effect.
//
// Its name ends in neither .json nor a segment's extension, so that verify
// and query, reading a spool directory, do not take it for events.
const pendingEpochFile = "log.pending"

// pendingEpoch is the content of pendingEpochFile.
type pendingEpoch struct {
	// Origin is the new epoch's origin once chosen; "" while the start that
	// wrote the file was still repairing the spool.
	Origin string `json:"origin,omitempty"`
	// Reason is the new epoch's reason when it is not a loss (which Lost
	// and CommittedLost say, and the reason is made from).
	Reason        string      `json:"reason,omitempty"`
	Lost          []LostRange `json:"lost,omitempty"`
	CommittedLost string      `json:"committed_lost,omitempty"`
}

// loadPendingEpoch reads dir's pending epoch file: nil when there is none.
func loadPendingEpoch(dir string) (*pendingEpoch, error) {
	b, err := os.ReadFile(filepath.Join(dir, pendingEpochFile))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var p pendingEpoch
	if err := json.Unmarshal(b, &p); err != nil {
		return nil, fmt.Errorf("%s is not a pending log epoch (%v)", pendingEpochFile, err)
	}
	return &p, nil
}

// savePendingEpoch replaces dir's pending epoch file with p, durably.
func savePendingEpoch(dir string, p pendingEpoch) error {
	b, err := json.Marshal(p)
	if err != nil {
		return err
	}
	if err := fsutil.WriteFileAtomic(filepath.Join(dir, pendingEpochFile), append(b, '\n')); err != nil {
		return fmt.Errorf("record the new log epoch before repairing the spool: %w", err)
	}
	return nil
}

// removePendingEpoch removes dir's pending epoch file and returns its size
// (0 when there was none).
func removePendingEpoch(dir string) (int64, error) {
	path := filepath.Join(dir, pendingEpochFile)
	fi, err := os.Stat(path)
	if errors.Is(err, os.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return 0, err
	}
	return fi.Size(), nil
}

// epochStarted removes the pending epoch file once the new epoch's
// log_started is committed: the event says what the file did. Not fsynced:
// a removal a crash undoes leaves a file whose epoch has events, which the
// next start ignores.
func (s *Spool) epochStarted() {
	n, err := removePendingEpoch(s.dir)
	if err != nil {
		s.log.Error("cannot remove the record of the new log epoch, now committed; the next start ignores it", "err", err)
	}
	s.otherBytes.Add(-n)
}

// newestOrigin returns the origin of the spool's newest event that is
// placed in a log, "" when there is none. Damage is read past.
func newestOrigin(dir string) string {
	segs, _, err := listSegments(dir)
	if err != nil {
		return ""
	}
	var p fastjson.Parser
	for i := len(segs) - 1; i >= 0; i-- {
		path, sealed := segmentPath(dir, segs[i].id)
		origin := ""
		scanSegmentFile(path, i == len(segs)-1 && !sealed, func(_ int64, rec []byte) error {
			if pl := placeOf(&p, rec); pl != nil {
				origin = pl.Origin
			}
			return nil
		})
		if origin != "" {
			return origin
		}
	}
	return ""
}

// loadPendingEpoch takes over what a previous start that began a new log
// epoch, and stopped before committing its first event, recorded as lost
// (see pendingEpochFile). A spool that is no log has none.
func (s *Spool) loadPendingEpoch() error {
	if s.opts.Log == nil {
		return nil
	}
	p, err := loadPendingEpoch(s.dir)
	if err != nil || p == nil {
		if err != nil {
			// Unreadable: what it said is lost, but the damage it recorded
			// is still in the .corrupt files and the previous start's log.
			s.log.Error("the record of a new log epoch a previous start began is unreadable; removing it", "err", err)
			_, err = removePendingEpoch(s.dir)
			return err
		}
		return nil
	}
	if p.Origin != "" && newestOrigin(s.dir) == p.Origin {
		_, err := removePendingEpoch(s.dir) // its log_started was committed; the file's removal was not
		return err
	}
	s.log.Warn("a previous start began a new log epoch and stopped before committing its first event; this start begins one for the same reason",
		"reason", p.Reason, "lost", len(p.Lost), "committed_lost", p.CommittedLost)
	s.pending = p
	for _, lr := range p.Lost {
		s.Recovery.addLost(lr)
	}
	if p.CommittedLost != "" {
		s.Recovery.CommittedLost, s.Recovery.CommittedLostDetail = true, p.CommittedLost
	}
	return nil
}

// addLost appends lr to the recovery report's losses unless it is there
// already (from the pending epoch file of a start that found the same
// damage and stopped before repairing it).
func (r *RecoveryReport) addLost(lr LostRange) {
	for _, x := range r.Lost {
		if x.Segment == lr.Segment && x.Start == lr.Start && x.End == lr.End {
			return
		}
	}
	r.Lost = append(r.Lost, lr)
}

// recordPendingEpoch writes what the recovery found lost to the pending
// epoch file, before the spool is changed in a way that hides it. A spool
// that is no log starts no epoch and keeps no such file.
func (s *Spool) recordPendingEpoch() error {
	if s.opts.Log == nil {
		return nil
	}
	return savePendingEpoch(s.dir, pendingEpoch{Lost: s.Recovery.Lost, CommittedLost: s.Recovery.CommittedLostDetail})
}
