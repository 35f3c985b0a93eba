package spool

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/auditproxy/auditproxy/audit"
	"github.com/auditproxy/auditproxy/auditlog"
)

// Why a spool refuses requests (Admit), besides its size bound: the
// reasons of auditproxy_spool_unwritable, worst first.
const (
	// reasonUnusable: a failed commit could not be cut off the segment.
	reasonUnusable = "unusable"
	// reasonCommitFailed: the last commit's write or fsync failed.
	reasonCommitFailed = "commit_failed"
	// reasonLowSpace: the spool's filesystem has less free space than
	// MinFreeBytes.
	reasonLowSpace = "low_disk_space"
)

var unwritableReasons = []string{reasonUnusable, reasonCommitFailed, reasonLowSpace}

// ErrSpoolNotWritable is wrapped by Admit's error while the spool cannot
// take events: its disk is (nearly) full or its commits fail.
var ErrSpoolNotWritable = errors.New("audit spool is not writable")

// AdmitError is Admit's refusal: why, and when the spool will next look
// whether it can take events again (audit.RetryAfter).
type AdmitError struct {
	Reason string // unusable, commit_failed, low_disk_space, or full (at MaxBytes)
	Err    error
	Retry  time.Duration
}

func (e *AdmitError) Error() string             { return e.Err.Error() }
func (e *AdmitError) Unwrap() error             { return e.Err }
func (e *AdmitError) RetryAfter() time.Duration { return e.Retry }

var _ audit.RetryAfter = (*AdmitError)(nil)

// writability is what the committer knows about whether the spool can take
// events. The committer goroutine owns it; Admit reads what it publishes
// (Spool.refusal).
//
// A spool fails closed: a request that reaches the upstream must be able to
// commit its event, so the spool refuses new requests as soon as
//
//   - the free space of its filesystem drops below MinFreeBytes (statfs,
//     cached: refreshed every SpaceCheckInterval and after commits once the
//     estimate nears the reserve, never once per request). The reserve is
//     what requests already admitted, checkpoints and the log's own files
//     still need;
//   - a commit fails (ENOSPC below the reserve, EIO, a read-only remount);
//   - a failed commit could not be cut off the segment (unusable).
//
// Refusing every request means committing nothing, and a state cleared only
// by a successful commit would then never clear. So the committer probes by
// itself every SpaceCheckInterval while a commit failure stands: it commits
// a checkpoint (a spool that is a log) or writes and fsyncs a probe file,
// and the first success clears the state. Low space clears when statfs shows
// the reserve free again.
type writability struct {
	lowSpace     bool
	free, total  int64     // from the last statfs; free -1 when unknown
	checked      time.Time // when
	sinceStatfs  int64     // bytes committed since that statfs
	commitFailed error     // the last commit's failure, until one succeeds
	// The outage: from the first failure until the next successful commit.
	outageSince    time.Time
	outageErr      string
	outageReason   string
	failedCommits  int
	failedCPs      int
	lastFailureLog time.Time
}

const (
	// failureLogEvery bounds the log lines of a standing failure: the
	// first failure is logged, then one line this often while it lasts.
	failureLogEvery = 30 * time.Second
	// statfsAfterCommits: while commits flow, the free space is read at
	// least this often (see committedBytes).
	statfsAfterCommits = 100 * time.Millisecond
	probeFileName      = "probe" + tmpExt
)

// checkSpace reads the filesystem's free space and updates the state.
func (s *Spool) checkSpace() {
	w := &s.w
	free, total, err := s.opts.statfs(s.dir)
	if err != nil {
		if w.free != -1 {
			s.log.Warn("cannot read the free space of the spool's filesystem; not checking it", "err", err)
		}
		w.free, w.lowSpace = -1, false
		s.free.Store(-1)
		s.publishWritability()
		return
	}
	w.free, w.total, w.sinceStatfs, w.checked = free, total, 0, time.Now()
	s.free.Store(free)
	s.metrics.freeBytes.Set(float64(free))
	low := s.opts.MinFreeBytes > 0 && free < s.opts.MinFreeBytes
	if low != w.lowSpace {
		if low {
			s.log.Error("free space on the spool's filesystem is below the reserve; refusing requests (503) until space is freed",
				"free_bytes", free, "min_free_bytes", s.opts.MinFreeBytes, "spool", s.dir)
		} else {
			s.log.Warn("free space on the spool's filesystem is above the reserve again; taking requests",
				"free_bytes", free, "min_free_bytes", s.opts.MinFreeBytes)
		}
	}
	w.lowSpace = low
	s.publishWritability()
}

// committedBytes notes n bytes committed, and reads the free space again
// when the estimate (the last statfs less what was written since) nears the
// reserve, or, while commits flow, once statfsAfterCommits has passed since
// the last reading: others (vLLM's logs, another container on the volume)
// fill the disk too, and under load the reserve is crossed well within a
// timer tick. At most ten statfs calls a second however many commits.
func (s *Spool) committedBytes(n int64) {
	w := &s.w
	w.sinceStatfs += n
	if w.free < 0 || s.opts.MinFreeBytes <= 0 {
		return
	}
	if w.free-w.sinceStatfs < 2*s.opts.MinFreeBytes || time.Since(w.checked) >= statfsAfterCommits {
		s.checkSpace()
	}
}

// commitFailed records a failed commit (heldCheckpoint: it held one).
func (s *Spool) commitFailed(err error, heldCheckpoint bool) {
	w := &s.w
	now := time.Now()
	if w.outageSince.IsZero() {
		w.outageSince, w.outageErr, w.outageReason, w.failedCommits, w.failedCPs = now, err.Error(), "", 0, 0
	}
	w.failedCommits++
	if heldCheckpoint {
		w.failedCPs++
		s.metrics.checkpointFailures.Inc()
	}
	first := w.commitFailed == nil
	w.commitFailed = err
	if s.broken != nil {
		w.outageReason = reasonUnusable
	} else if w.outageReason == "" {
		w.outageReason = reasonCommitFailed
	}
	s.publishWritability()
	if first || now.Sub(w.lastFailureLog) >= failureLogEvery {
		w.lastFailureLog = now
		msg := "spool commit failed; its requests are answered with an error, and new requests are refused (503) until a commit succeeds (probed every " + s.opts.SpaceCheckInterval.String() + ")"
		if heldCheckpoint {
			msg = "spool commit failed, with a checkpoint of the log in it; new requests are refused (503) until a commit succeeds (probed every " + s.opts.SpaceCheckInterval.String() + ")"
		}
		s.log.Error(msg, "err", err, "failed_commits", w.failedCommits, "failed_checkpoints", w.failedCPs,
			"since", w.outageSince.UTC().Format(time.RFC3339Nano))
	}
	if w.free >= 0 {
		s.checkSpace() // a full disk shows in statfs at once
	}
}

// commitSucceeded ends a commit failure.
func (s *Spool) commitSucceeded() {
	w := &s.w
	if w.commitFailed == nil {
		return
	}
	s.log.Warn("spool commits succeed again; taking requests",
		"outage", time.Since(w.outageSince).Round(time.Millisecond).String(), "failed_commits", w.failedCommits,
		"failed_checkpoints", w.failedCPs)
	w.commitFailed = nil
	if s.chain == nil {
		w.outageSince = time.Time{}
	} // else the next checkpoint reports the outage, then it ends (commit)
	s.publishWritability()
}

// outage returns the outage a checkpoint committed now reports, nil if
// none.
func (s *Spool) outage() *auditlog.CheckpointOutage {
	w := &s.w
	if w.outageSince.IsZero() {
		return nil
	}
	return &auditlog.CheckpointOutage{Since: audit.Timestamp(w.outageSince), Reason: w.outageReason, Error: w.outageErr,
		FailedCommits: w.failedCommits, FailedCheckpoints: w.failedCPs}
}

// publishWritability makes the state visible to Admit and the metrics.
func (s *Spool) publishWritability() {
	w := &s.w
	reason := ""
	var err error
	switch {
	case s.broken != nil:
		reason, err = reasonUnusable, fmt.Errorf("%w: %v", ErrSpoolNotWritable, s.broken)
	case w.commitFailed != nil:
		reason, err = reasonCommitFailed, fmt.Errorf("%w: the last commit failed (%v)", ErrSpoolNotWritable, w.commitFailed)
	case w.lowSpace:
		reason, err = reasonLowSpace, fmt.Errorf("%w: %d bytes free on the spool's filesystem, less than the %d kept in reserve (--spool-min-free-bytes)",
			ErrSpoolNotWritable, w.free, s.opts.MinFreeBytes)
	}
	for _, r := range unwritableReasons {
		v := 0.0
		if r == reason {
			v = 1
		}
		s.metrics.unwritable.WithLabelValues(r).Set(v)
	}
	if reason == "" {
		s.metrics.writable.Set(1)
		s.refusal.Store(nil)
		return
	}
	s.metrics.writable.Set(0)
	s.refusal.Store(&AdmitError{Reason: reason, Err: err, Retry: max(s.opts.SpaceCheckInterval, time.Second).Round(time.Second)})
}

// probe, while a commit failure stands, tries a commit of its own: a
// checkpoint when the spool is a log, else a probe file written, fsynced
// and removed. A success clears the failure.
func (s *Spool) probe() {
	if s.broken != nil {
		if err := s.retryUndo(); err != nil {
			s.commitFailed(err, false)
			return
		}
	}
	if s.chain != nil {
		b := s.newBatch()
		b.err = s.commit(b, false, true)
		b.done.Done()
		s.releaseBatch(b)
		return
	}
	path := filepath.Join(s.dir, probeFileName)
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err == nil {
		_, err = f.Write(make([]byte, 4<<10))
		if err == nil {
			err = s.sync(f)
		}
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		os.Remove(path)
	}
	if err != nil {
		s.metrics.commitErrors.Inc()
		s.commitFailed(fmt.Errorf("probe write to the spool: %w", err), false)
		return
	}
	s.commitSucceeded()
}
