package spool

import (
	"github.com/auditproxy/auditproxy/audit"
	"github.com/auditproxy/auditproxy/auditlog"
	"github.com/valyala/fastjson"
)

// epochStarted removes the pending epoch file once the new epoch's
// log_started is committed: the event says what the file did. Not fsynced:
// a removal a crash undoes leaves a file whose epoch has events, which the
// next start ignores.
func (s *Spool) epochStarted() {
	n, err := auditlog.RemovePendingEpoch(s.dir)
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
			if pl := auditlog.PlaceOf(&p, rec); pl != nil {
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
// (see auditlog.PendingEpochFile). A spool that is no log has none.
func (s *Spool) loadPendingEpoch() error {
	if s.opts.Log == nil {
		return nil
	}
	p, err := auditlog.LoadPendingEpoch(s.dir)
	if err != nil || p == nil {
		if err != nil {
			// Unreadable: what it said is lost, but the damage it recorded
			// is still in the .corrupt files and the previous start's log.
			s.log.Error("the record of a new log epoch a previous start began is unreadable; removing it", "err", err)
			_, err = auditlog.RemovePendingEpoch(s.dir)
			return err
		}
		return nil
	}
	if p.Origin != "" && newestOrigin(s.dir) == p.Origin {
		_, err := auditlog.RemovePendingEpoch(s.dir) // its log_started was committed; the file's removal was not
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
func (r *RecoveryReport) addLost(lr audit.LostRange) {
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
	return auditlog.SavePendingEpoch(s.dir, auditlog.PendingEpoch{Lost: s.Recovery.Lost, CommittedLost: s.Recovery.CommittedLostDetail})
}
