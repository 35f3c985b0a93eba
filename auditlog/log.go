package auditlog

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/valyala/fastjson"
	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"

	"github.com/auditproxy/auditproxy/audit"
	"github.com/auditproxy/auditproxy/internal/fsutil"
)

// Options configure a Log.
type Options struct {
	// Name is the sidecar's stable instance name. The log's origin is
	// Name + "/" + epoch, the epoch being the UTC time the log started
	// (20261123T101500Z): a new epoch starts when no earlier log can be
	// continued (a new data dir, or one whose log state is lost).
	Name string
	// Signer signs checkpoints. Required.
	Signer note.Signer
	// CheckpointInterval and CheckpointEvery: a checkpoint is committed
	// when either has passed since the last one (idle or not), and at
	// Close. Defaults: 10 s and 1,000 events.
	CheckpointInterval time.Duration
	CheckpointEvery    int
	// Source goes into checkpoint events.
	Source audit.Source
	// PreviousCheckpoint is the newest checkpoint event known from outside
	// the spool (the checkpoint directory), cited by the first event of a
	// new epoch.
	PreviousCheckpoint []byte
	// OnCheckpoint, if set, receives each checkpoint once the commit
	// holding it is durable, on the committer's goroutine: it must not
	// block. The value is the callee's.
	OnCheckpoint func(SignedCheckpoint)
	// Witness says that a witness is sent the checkpoints: the stored
	// hashes are kept for consistency proofs from the size it last
	// cosigned, which it reports with Log.WitnessCosigned (until it does,
	// from 0). Without one they are kept from the newest checkpoint on.
	Witness bool
}

const (
	logFileName = "log.json" // {"origin": …} of the current log
	// damagedTreeExt is appended to a tree state file that cannot be
	// read, kept aside while the tree is rebuilt.
	damagedTreeExt = ".corrupt"
	// treeFailureLogEvery bounds the log lines of failing tree writes.
	treeFailureLogEvery = 30 * time.Second
)

// A Log is a verifiable log kept in a spool (Store): the spool's committer
// hands it every event as it frames a commit (AppendEvent), and the Log
// gives the event its place in the log (origin, seq, prev), keeps the
// log's Merkle tree and its stored hashes (log.tree, see hashstore.go),
// adds signed checkpoints at their cadence (CheckpointDue,
// AppendCheckpoint), and hands each checkpoint on once its commit is
// durable (Committed). A failed commit is undone with Mark and Rollback.
//
// The committer goroutine makes those calls, one at a time; ReadHashes,
// WitnessCosigned, Size and the metrics are safe from any goroutine.
type Log struct {
	opts    Options
	st      Store
	dir     string
	rec     Recovered // what the spool's recovery found, and the log's own findings
	logger  *slog.Logger
	chain   *Chain
	origin  string    // the chain's, fixed once open
	tree    *treeFile // the stored hashes proofs need (hashstore.go)
	sinceCP int
	// cpSize is the size of the newest committed checkpoint, witnessSize
	// what the witness last cosigned: keepFrom.
	cpSize, witnessSize atomic.Int64
	cpPending           int64        // the size of the checkpoint in the commit in progress
	size                atomic.Int64 // the log's size at the last commit, for readers
	lastCP              time.Time
	cps                 []SignedCheckpoint // checkpoints of the commit in progress
	// cpCommitted is the time (Unix ns) of the newest checkpoint committed
	// to the spool, or of the log's opening before the first: read by the
	// metrics, so an alert can tell a log that stopped signing.
	cpCommitted atomic.Int64
	starting    []byte          // the log_started event still to commit, for a new epoch
	startingNow bool            // the commit in progress holds it
	known       map[string]bool // origins found in the spool (see newOrigin)

	// treeFailingSince is when writes of the tree state began to fail,
	// zero while they succeed; treeFailLogged when that was last logged.
	treeFailingSince, treeFailLogged time.Time

	// witnessKeepMax bounds the bytes of stored hashes kept for the
	// witness's next proof; witnessAbandoned is 1 + the witness size
	// keepFrom last gave up on (0: none), witnessAbandonedN counts them.
	witnessKeepMax                      int64
	witnessAbandoned, witnessAbandonedN atomic.Int64
}

// Mark is a Log's state before a commit, to undo a failed one.
type Mark struct {
	st        ChainState
	storedLen int
	sinceCP   int
	lastCP    time.Time
	starting  []byte
}

// Mark returns the log's state before a commit.
func (l *Log) Mark() Mark {
	return Mark{l.chain.State(), l.chain.StoredLen(), l.sinceCP, l.lastCP, l.starting}
}

// Rollback undoes what was appended since m, for a commit that failed.
func (l *Log) Rollback(m Mark) {
	l.chain.Restore(m.st, m.storedLen)
	l.sinceCP, l.lastCP, l.starting = m.sinceCP, m.lastCP, m.starting
	l.startingNow = false
	l.cps = l.cps[:0]
}

// Committed keeps the stored hashes of the commit that just completed and
// hands over its checkpoints. The hashes are written without fsync: after a
// crash they are recomputed from the spool. It reports whether the commit
// held the new epoch's log_started.
func (l *Log) Committed() (started bool) {
	started, l.startingNow = l.startingNow, false
	if stored := l.chain.TakeStored(); len(stored) > 0 {
		l.treeWritten(l.tree.append(stored))
	}
	if len(l.cps) > 0 {
		l.cpCommitted.Store(l.lastCP.UnixNano())
		l.cpSize.Store(l.cpPending)
	}
	l.size.Store(l.chain.Size())
	for _, cp := range l.cps {
		if l.opts.OnCheckpoint != nil {
			l.opts.OnCheckpoint(cp)
		}
	}
	l.cps = l.cps[:0]
	return started
}

// treeWritten logs a failed write of the tree state (the first, then one
// every treeFailureLogEvery while it lasts) and its end. The hashes are kept
// until they are written (treeFile.append); until then no segment is
// deleted.
func (l *Log) treeWritten(err error) {
	now := time.Now()
	switch {
	case err == nil && !l.treeFailingSince.IsZero():
		l.logger.Warn("the log's tree state is written again", "failing_for", now.Sub(l.treeFailingSince).Round(time.Millisecond).String())
		l.treeFailingSince = time.Time{}
	case err != nil && (l.treeFailingSince.IsZero() || now.Sub(l.treeFailLogged) >= treeFailureLogEvery):
		if l.treeFailingSince.IsZero() {
			l.treeFailingSince = now
		}
		l.treeFailLogged = now
		l.logger.Error("cannot write the log's tree state; no spool segment is deleted until it is written", "err", err,
			"since", l.treeFailingSince.UTC().Format(time.RFC3339Nano))
	}
}

// CheckpointDue reports whether a checkpoint is due at now.
func (l *Log) CheckpointDue(now time.Time) bool {
	return l.sinceCP >= l.opts.CheckpointEvery || now.Sub(l.lastCP) >= l.opts.CheckpointInterval
}

// AppendEvent appends event, placed in the log, to dst: its canonical form
// with the "log" member added (Chain.Append).
func (l *Log) AppendEvent(dst, event []byte) ([]byte, error) {
	dst, err := l.chain.Append(dst, event)
	if err == nil {
		l.sinceCP++
	}
	return dst, err
}

// AppendCheckpoint appends a signed checkpoint of the log so far to dst, as
// the log's next event; final closes the epoch (the spool is closing), and
// outage is the commit outage it reports (nil: none).
func (l *Log) AppendCheckpoint(dst []byte, now time.Time, final bool, outage *CheckpointOutage) ([]byte, error) {
	start := len(dst)
	l.cpPending = l.chain.Size()
	dst, cp, err := l.chain.appendCheckpointEvent(dst, l.opts.Signer, now, l.opts.CheckpointInterval, final, outage, l.opts.Source)
	if err != nil {
		return dst[:start], err
	}
	l.cps = append(l.cps, cp)
	l.sinceCP, l.lastCP = 0, now
	return dst, nil
}

// logStarted is the first event of every epoch.
type logStarted struct {
	V       int             `json:"v"`
	Type    string          `json:"type"`
	ID      string          `json:"id"`
	Time    audit.Timestamp `json:"time"`
	Started struct {
		Reason string `json:"reason"`
		// PreviousCheckpoint is the newest checkpoint event found when the
		// epoch started, from the spool or the checkpoint directory; null if
		// none.
		PreviousCheckpoint json.RawMessage `json:"previous_checkpoint"`
		// Lost lists committed records found damaged when the epoch started
		// (see RecoveryReport.Lost); CommittedLost says what the state file
		// shows was lost from the end of the spool.
		Lost          []audit.LostRange `json:"lost,omitempty"`
		CommittedLost string            `json:"committed_lost,omitempty"`
	} `json:"log_started"`
	Source audit.Source `json:"source"`
}

// Open opens the log kept in st, the spool it is committed to: it continues
// the log of the spool's newest event, repairing the stored hashes from the
// spool's events if a crash left them short, or starts a new epoch, whose
// log_started event the first commit holds. The spool must not commit
// until Open returns.
func Open(st Store, opts Options) (*Log, error) {
	if opts.Signer == nil {
		return nil, errors.New("audit log: a checkpoint signer is required")
	}
	if opts.Name == "" {
		return nil, errors.New("audit log: an instance name is required")
	}
	if err := CheckLogName(opts.Name); err != nil {
		return nil, fmt.Errorf("audit log: %w", err)
	}
	if opts.CheckpointInterval <= 0 {
		opts.CheckpointInterval = 10 * time.Second
	}
	if opts.CheckpointEvery <= 0 {
		opts.CheckpointEvery = 1000
	}
	dir := st.Dir()
	l := &Log{opts: opts, st: st, dir: dir, logger: st.Logger(), lastCP: time.Now(), rec: st.Recovered()}
	// An eighth of the spool's bound; but at least four checkpoint
	// intervals' hashes (about two an event), so that a witness that
	// cosigns each checkpoint a little late is never given up on, unless
	// that passes a quarter of the bound.
	maxBytes := st.MaxBytes()
	l.witnessKeepMax = max(maxBytes/8, min(4*int64(opts.CheckpointEvery)*2*tlog.HashSize, maxBytes/4))
	l.cpCommitted.Store(l.lastCP.UnixNano())
	t, err := openTreeFile(dir)
	if errors.Is(err, errTreeDamaged) {
		// Its header does not read back: start it again, and let recover
		// rebuild it from the spool.
		l.logger.Error("the log's tree state is damaged; rebuilding it from the spool's events", "err", err)
		os.Rename(filepath.Join(dir, HashStoreFile), filepath.Join(dir, HashStoreFile+damagedTreeExt))
		t, err = openTreeFile(dir)
	}
	if err != nil {
		return nil, err
	}
	l.tree = t
	f := t // closed on the error paths below
	cs, reason, err := l.recover()
	if err != nil {
		f.close()
		return nil, err
	}
	if reason != "" {
		cs = ChainState{Origin: l.newOrigin(time.Now())}
		// Recorded before the tree state is reset and log.json names the
		// new origin: both hide what the old log was, and a crash before
		// log_started commits would leave a spool whose next start no
		// longer knows why the log cannot go on.
		pe := PendingEpoch{Origin: cs.Origin, Reason: reason, Lost: l.rec.Lost, CommittedLost: l.rec.CommittedLostDetail}
		if err := SavePendingEpoch(dir, pe); err != nil {
			f.close()
			return nil, err
		}
		if err := t.reset(cs.Origin); err != nil {
			f.close()
			return nil, err
		}
		l.cpSize.Store(0)
		var ev logStarted
		ev.V, ev.Type, ev.ID, ev.Time, ev.Source = 1, audit.TypeLogStarted, audit.NewID(), audit.Timestamp(time.Now()), opts.Source
		ev.Started.Reason = reason
		ev.Started.Lost, ev.Started.CommittedLost = l.rec.Lost, l.rec.CommittedLostDetail
		ev.Started.PreviousCheckpoint = json.RawMessage("null")
		if prev := bytes.TrimSpace(l.opts.PreviousCheckpoint); len(prev) > 0 && json.Valid(prev) {
			ev.Started.PreviousCheckpoint = prev
		}
		if l.starting, err = json.Marshal(ev); err != nil {
			f.close()
			return nil, err
		}
		l.logger.Info("starting a new log epoch", "origin", cs.Origin, "reason", reason)
	}
	if cs.Tree.Size() == 0 && (t.legacy || t.origin != cs.Origin) {
		if err := t.reset(cs.Origin); err != nil { // nothing committed yet to this log
			f.close()
			return nil, err
		}
	}
	if err := saveLogFile(dir, cs.Origin); err != nil {
		f.close()
		return nil, err
	}
	l.chain, err = NewChain(cs)
	if err != nil {
		f.close()
		return nil, err
	}
	l.origin = cs.Origin
	l.size.Store(l.chain.Size())
	return l, nil
}

// CheckLogName reports whether name can name a log: valid UTF-8 of
// printable characters (strconv.IsPrint: letters, marks, numbers,
// punctuation, symbols, the ASCII space). The origin goes into every event
// as it is quoted, which for such names is its canonical JSON (RFC 8785);
// a control character or a byte that is not UTF-8 made every event invalid
// JSON, read back as damage.
func CheckLogName(name string) error {
	if !utf8.ValidString(name) {
		return fmt.Errorf("log name %q is not valid UTF-8", name)
	}
	for _, r := range name {
		if !strconv.IsPrint(r) {
			return fmt.Errorf("log name %q holds %U, not a printable character", name, r)
		}
	}
	return nil
}

// newOrigin returns the origin of a new epoch started at now: the instance
// name and the time, to the second. An epoch started again within the
// second of one this spool knows (a crash and a restart in quick
// succession) would take that epoch's origin and reuse its seqs; its time is
// moved on a second until the origin is new.
func (l *Log) newOrigin(now time.Time) string {
	for t := now.UTC().Truncate(time.Second); ; t = t.Add(time.Second) {
		origin := l.opts.Name + "/" + t.Format("20060102T150405Z")
		if !l.known[origin] {
			return origin
		}
	}
}

// knowOrigin notes an origin found in the spool, which a new epoch must not
// take.
func (l *Log) knowOrigin(origin string) {
	if origin == "" {
		return
	}
	if l.known == nil {
		l.known = map[string]bool{}
	}
	l.known[origin] = true
}

// recover returns the state of the log to continue, or the reason a new
// epoch starts.
func (l *Log) recover() (ChainState, string, error) {
	last, lastCP, err := lastRecords(l.st, signerVerifier{l.opts.Signer})
	if err != nil {
		return ChainState{}, "", err
	}
	var kp fastjson.Parser
	for _, rec := range [][]byte{last, lastCP} {
		if pl := PlaceOf(&kp, rec); pl != nil {
			l.knowOrigin(pl.Origin)
		}
	}
	if origin, err := loadLogFile(l.dir); err == nil {
		l.knowOrigin(origin)
	}
	for _, lr := range l.rec.Lost {
		for _, pl := range []*audit.Place{lr.Before, lr.After} {
			if pl != nil {
				l.knowOrigin(pl.Origin)
			}
		}
	}
	if l.rec.Pending != nil {
		l.knowOrigin(l.rec.Pending.Origin) // chosen, maybe with events nowhere but in the aggregator
	}
	if lastCP != nil && l.opts.PreviousCheckpoint == nil {
		l.opts.PreviousCheckpoint = lastCP
	}
	// Committed records were lost: the log cannot go on as if they were
	// there. Continuing after a cut would reuse seqs already shipped and
	// checkpointed (a fork); continuing after a hole would hide it.
	if rep := l.rec; len(rep.Lost) > 0 || rep.CommittedLost {
		var what []string
		for _, lr := range rep.Lost {
			w := fmt.Sprintf("%d bytes of segment %s at offset %d", lr.Bytes, lr.Segment, lr.Start)
			if lr.Missing != nil {
				w += fmt.Sprintf(" (seqs %d..%d of %s)", lr.Missing.First, lr.Missing.Last, lr.Missing.Origin)
			}
			what = append(what, w)
		}
		if rep.CommittedLost {
			what = append(what, rep.CommittedLostDetail)
		}
		return ChainState{}, "committed records were lost: " + strings.Join(what, "; "), nil
	}
	if p := l.rec.Pending; p != nil && p.Reason != "" {
		// A previous start began a new epoch and stopped before committing
		// its first event: whatever made it is still so (a log whose tree
		// state was reset for that epoch cannot be continued either).
		return ChainState{}, p.Reason, nil
	}
	if last == nil {
		origin, err := loadLogFile(l.dir)
		if err != nil || origin == "" || !isOwnOrigin(origin, l.opts.Name) {
			return ChainState{}, "new data dir", nil
		}
		return l.continueFromTree(origin)
	}
	var p fastjson.Parser
	v, err := p.ParseBytes(last)
	if err != nil {
		return ChainState{}, "the newest spooled event is not JSON", nil
	}
	origin := string(v.GetStringBytes("log", "origin"))
	seq := v.GetInt64("log", "seq")
	if origin == "" || v.Get("log", "seq") == nil {
		return ChainState{}, "the newest spooled event has no log member", nil
	}
	if !isOwnOrigin(origin, l.opts.Name) {
		return ChainState{}, fmt.Sprintf("instance name changed (was the log %q)", origin), nil
	}
	leaf, _, err := LeafHash(&p, nil, last)
	if err != nil {
		return ChainState{}, "the newest spooled event is not canonicalisable JSON", nil
	}
	n := seq + 1
	tree, why, err := l.recoverTree(origin, n, leaf, lastCP)
	if err != nil {
		return ChainState{}, "", err
	}
	if why != "" {
		return ChainState{}, why, nil
	}
	return ChainState{Origin: origin, Tree: tree, Prev: leaf}, "", nil
}

// continueFromTree continues origin when the spool holds none of its
// events: a new log that committed nothing yet, or one whose every segment
// was shipped and deleted while the active one is still empty. Starting
// that log again at seq 0 would reuse seqs already shipped and
// checkpointed (a fork), so the tree state says where it is: its size and
// its last leaf hash (fsynced before any segment was deleted). A tree state
// that cannot say starts a new epoch.
func (l *Log) continueFromTree(origin string) (ChainState, string, error) {
	t := l.tree
	if t.fresh || !t.legacy && t.origin != origin {
		return ChainState{}, fmt.Sprintf("the spool holds no event of the log %s and the log's tree state does not say how far it went (continuing could reuse its seqs)", origin), nil
	}
	k := t.base
	for tlog.StoredHashCount(k+1) <= t.n.Load() {
		k++
	}
	if k == 0 {
		return ChainState{Origin: origin}, "", nil // started, nothing committed yet
	}
	if err := t.cut(k); err != nil {
		return ChainState{}, "", err
	}
	tree, err := TreeFromStored(k, t)
	var prev []tlog.Hash
	if err == nil {
		prev, err = t.ReadHashes([]int64{tlog.StoredHashIndex(0, k-1)})
	}
	if err != nil {
		return ChainState{}, fmt.Sprintf("the spool holds no event of the log %s and the log's tree state cannot give its last leaf (%v)", origin, err), nil
	}
	l.logger.Warn("the spool holds no event of the log (all shipped and deleted); continuing it from the log's tree state", "origin", origin, "size", k)
	return ChainState{Origin: origin, Tree: tree, Prev: prev[0]}, "", nil
}

// recoverTree returns the edge of origin's tree of n leaves, from the tree
// state file and, for what a crash left out of it, the spool's events; or
// why it cannot be rebuilt.
//
// The file is checked before it is trusted: it must be origin's (or the
// previous release's, which names none), and the newest checkpoint of
// origin, if the file reaches back to it, must sign the root the file
// gives at its size. Where it fails, the tree is rebuilt from the spool's
// events from seq 0, if the spool still holds them all.
func (l *Log) recoverTree(origin string, n int64, leaf tlog.Hash, lastCP []byte) (Tree, string, error) {
	t := l.tree
	var cpSize int64 = -1
	var cpRoot tlog.Hash
	if lastCP != nil {
		var p fastjson.Parser
		if pl := PlaceOf(&p, lastCP); pl != nil && pl.Origin == origin {
			v, _ := p.ParseBytes(lastCP)
			if c, _, err := OpenCheckpoint(v.GetStringBytes("checkpoint", "note"), note.VerifierList(signerVerifier{l.opts.Signer})); err == nil {
				cpSize, cpRoot = c.Size, c.Root
			}
		}
	}
	problem := ""
	switch {
	case t.fresh:
		problem = "it is missing"
	case !t.legacy && t.origin != origin:
		problem = fmt.Sprintf("it is the tree of %q", t.origin)
	}
	var tree Tree
	held := t.leaves()
	if problem == "" && held > n {
		// Hashes are appended only once the commit of their events is
		// fsynced, so a tree state ahead of the spool means that committed
		// events are gone (the active segment lost, or its tail): the log
		// cannot go on at seq n, which was shipped and checkpointed.
		detail := fmt.Sprintf("the log's tree state holds %d events of %s, the spool's newest is seq %d: seqs %d..%d were committed and are no longer in the spool",
			held, origin, n-1, n, held-1)
		l.logger.Error("the log's tree state is ahead of the spool: the disk lost fsynced data; a new log epoch says so",
			"origin", origin, "tree_size", held, "spool_size", n)
		if l.rec.CommittedLost {
			detail = l.rec.CommittedLostDetail + "; " + detail
		}
		l.rec.CommittedLost, l.rec.CommittedLostDetail = true, detail
		l.st.ReportCommittedLost(detail)
		return tree, "committed records were lost: " + detail, nil
	}
	if problem == "" {
		// Whole leaves only; what a crash cut off is recomputed from the
		// spool. The file is trusted up to the newest checkpoint, whose
		// signed root checks it; the hashes after it (a write the disk
		// lost, or one that failed) are recomputed from the spool's
		// events, a checkpoint interval's worth.
		k := min(n, held)
		trust := k
		if cpSize >= t.base && cpSize <= k {
			trust = cpSize
		}
		if err := t.cut(trust); err != nil {
			return tree, "", err
		}
		var err error
		if tree, err = TreeFromStored(trust, t); err != nil {
			problem = err.Error()
		} else if trust == cpSize && tree.Root() != cpRoot {
			problem = fmt.Sprintf("its root at size %d is not the one the newest checkpoint signs", cpSize)
		} else if trust == n && n > 0 {
			// No checkpoint to check it by: its last leaf must be the
			// newest event's.
			if got, err := t.ReadHashes([]int64{tlog.StoredHashIndex(0, n-1)}); err != nil || got[0] != leaf {
				problem = fmt.Sprintf("its leaf %d is not the hash of the spool's event %d", n-1, n-1)
			}
		}
		if problem == "" && trust < n {
			if trust < k {
				l.logger.Debug("recomputing the log's stored hashes after the newest checkpoint from the spool", "from_seq", trust, "to_seq", n-1)
			} else {
				l.logger.Warn("recomputing the log's stored hashes from the spool", "from_seq", trust, "to_seq", n-1)
			}
			if tree, err = l.replay(origin, tree, n); err != nil {
				var mismatch *leafMismatchError
				if !errors.As(err, &mismatch) {
					return tree, fmt.Sprintf("the log's tree cannot be rebuilt: %v", err), nil
				}
				problem = err.Error()
			}
		}
		if problem == "" && cpSize > trust && cpSize <= n {
			if at, err := TreeFromStored(cpSize, t); err != nil || at.Root() != cpRoot {
				problem = fmt.Sprintf("its hashes and the spool's events give another root at size %d than the newest checkpoint signs", cpSize)
			}
		}
	}
	if problem != "" {
		l.logger.Error("the log's tree state cannot be used; rebuilding it from the spool's events", "problem", problem, "origin", origin)
		if err := t.reset(origin); err != nil {
			return tree, "", err
		}
		var err error
		if tree, err = l.replay(origin, Tree{}, n); err != nil {
			return tree, fmt.Sprintf("the log's tree state cannot be used (%s) and cannot be rebuilt from the spool: %v", problem, err), nil
		}
		if cpSize >= 0 && cpSize <= n {
			if at, err := TreeFromStored(cpSize, t); err != nil || at.Root() != cpRoot {
				return tree, fmt.Sprintf("the spool's events do not hash to the root the newest checkpoint (size %d) signs", cpSize), nil
			}
		}
	}
	if cpSize >= 0 {
		l.cpSize.Store(cpSize)
	}
	return tree, "", nil
}

// replay appends the leaves tree.Size() to n-1 of origin, read from the
// spool, to tree and to the stored hashes file. It reads from the segment
// that holds the event before them, whose leaf hash the file holds: one
// that is not the event's (a *leafMismatchError) means the file's hashes
// are not the spool's events'.
func (l *Log) replay(origin string, tree Tree, n int64) (Tree, error) {
	var p fastjson.Parser
	var scratch []byte
	var stored []tlog.Hash
	from := tree.Size() - 1 // the event whose leaf the file ends with
	err := forEachRecordFrom(l.st, segmentHolding(l.st, origin, max(from, 0)), func(rec []byte) error {
		v, err := p.ParseBytes(rec)
		if err != nil || string(v.GetStringBytes("log", "origin")) != origin {
			return nil
		}
		seq := v.GetInt64("log", "seq")
		if seq == from {
			leaf, _, err := LeafHash(&p, scratch, rec)
			if err != nil {
				return err
			}
			if got, err := l.tree.ReadHashes([]int64{tlog.StoredHashIndex(0, seq)}); err == nil && got[0] != leaf {
				return &leafMismatchError{seq}
			}
			return nil
		}
		if seq != tree.Size() {
			if seq < tree.Size() {
				return nil
			}
			return fmt.Errorf("event %d missing from the spool", tree.Size())
		}
		var leaf tlog.Hash
		leaf, scratch, err = LeafHash(&p, scratch, rec)
		if err != nil {
			return err
		}
		stored = tree.Append(leaf, stored[:0])
		if err := l.tree.append(stored); err != nil {
			return err
		}
		if tree.Size() == n {
			return io.EOF
		}
		return nil
	})
	if err != nil && err != io.EOF {
		return tree, err
	}
	if tree.Size() != n {
		return tree, fmt.Errorf("the spool holds events up to %d of %d", tree.Size(), n)
	}
	return tree, nil
}

// leafMismatchError: the tree state's leaf hash of an event is not the hash
// of the event in the spool.
type leafMismatchError struct{ seq int64 }

func (e *leafMismatchError) Error() string {
	return fmt.Sprintf("its leaf %d is not the hash of the spool's event %d", e.seq, e.seq)
}

// segmentHolding returns the id of the newest segment of st
// whose first event is origin's at seq or before, where a replay of origin
// from seq starts; the oldest segment if none is. Only first records are
// read. A segment that starts with another origin's event starts the
// replay too: origin's events, which follow every other origin's in the
// spool, cannot be in an older one.
func segmentHolding(st Store, origin string, seq int64) uint64 {
	segs, err := st.Segments()
	if err != nil || len(segs) == 0 {
		return 0
	}
	var p fastjson.Parser
	for i := len(segs) - 1; i > 0; i-- {
		rec, err := st.FirstRecord(segs[i])
		if err != nil {
			continue
		}
		if pl := PlaceOf(&p, rec); pl != nil && (pl.Origin != origin || pl.Seq <= seq) {
			return segs[i]
		}
	}
	return segs[0]
}

// ReadHashes implements tlog.HashReader over the tree state file.
func (l *Log) ReadHashes(indexes []int64) ([]tlog.Hash, error) {
	return l.tree.ReadHashes(indexes)
}

// Close closes the stored hashes file.
func (l *Log) Close() error { return l.tree.close() }

// keepFrom returns the tree size the log's stored hashes must prove from:
// the size the witness last cosigned (with a witness; 0 until it says), and
// never past the newest committed checkpoint.
//
// A witness that is absent or refusing never cosigns, and the hashes kept
// for its next proof would grow 64 bytes an event inside the spool's bound
// until every request is refused. So once they pass witnessKeepMax (an
// eighth of the bound), the newest checkpoint's size is kept from instead:
// the spool never waits for a witness. That is said (an error, and
// auditproxy_witness_proofs_abandoned_total), and the witness then gets an
// error naming the size proofs start from for a proof from before (it
// keeps retrying; a witness that cosigned this log before cannot accept
// its checkpoints again without one).
func (l *Log) keepFrom() int64 {
	keep := l.cpSize.Load()
	if !l.opts.Witness {
		return keep
	}
	w := l.witnessSize.Load()
	if w >= keep {
		return keep
	}
	if kept := (l.tree.n.Load() - tlog.StoredHashCount(w)) * tlog.HashSize; kept <= l.witnessKeepMax {
		return w
	}
	if old := l.witnessAbandoned.Load(); old != w+1 && l.witnessAbandoned.CompareAndSwap(old, w+1) {
		l.witnessAbandonedN.Add(1)
		l.logger.Error("the witness has not cosigned this log for so long that the hashes its next consistency proof needs would pass an eighth of --spool-max-bytes; the log keeps them from the newest checkpoint on instead, and the witness cannot cosign this log again without a proof from its size (is it down, or refusing?)",
			"origin", l.origin, "witness_size", w, "keep_from", keep, "max_bytes_kept_for_the_witness", l.witnessKeepMax)
	}
	return keep
}

// RebaseDue reports whether the tree state has grown enough to rewrite.
func (l *Log) RebaseDue() bool {
	return l.tree.worthRebasing(l.keepFrom())
}

func isOwnOrigin(origin, name string) bool {
	return len(origin) > len(name)+1 && origin[:len(name)] == name && origin[len(name)] == '/'
}

func loadLogFile(dir string) (string, error) {
	b, err := os.ReadFile(filepath.Join(dir, logFileName))
	if err != nil {
		return "", err
	}
	var st struct{ Origin string }
	err = json.Unmarshal(b, &st)
	return st.Origin, err
}

func saveLogFile(dir, origin string) error {
	b, _ := json.Marshal(struct {
		Origin string `json:"origin"`
	}{origin})
	path := filepath.Join(dir, logFileName)
	if old, err := os.ReadFile(path); err == nil && bytes.Equal(bytes.TrimSpace(old), b) {
		return nil
	}
	return fsutil.WriteFileAtomic(path, append(b, '\n'))
}

// lastRecords returns the spool's newest record and its newest checkpoint
// event (nil when there is none; see isLogCheckpoint), reading from the
// newest segment back.
func lastRecords(st Store, key note.Verifier) (last, lastCP []byte, err error) {
	segs, err := st.Segments()
	if err != nil {
		return nil, nil, err
	}
	var p fastjson.Parser
	for i := len(segs) - 1; i >= 0 && (last == nil || lastCP == nil); i-- {
		var segLast, segCP []byte
		err := st.ReadSegment(segs[i], func(rec []byte) error {
			segLast = append(segLast[:0], rec...)
			if isLogCheckpoint(&p, rec, key) {
				segCP = append(segCP[:0], rec...)
			}
			return nil
		})
		if err != nil {
			return nil, nil, err
		}
		if last == nil && segLast != nil {
			last = segLast
		}
		if lastCP == nil && segCP != nil {
			lastCP = segCP
		}
	}
	return last, lastCP, nil
}

// forEachRecordFrom calls fn with every intact record of st from segment
// from on, oldest first, until fn returns an error.
func forEachRecordFrom(st Store, from uint64, fn func([]byte) error) error {
	segs, err := st.Segments()
	if err != nil {
		return err
	}
	for _, id := range segs {
		if id < from {
			continue
		}
		if err := st.ReadSegment(id, fn); err != nil {
			return err
		}
	}
	return nil
}

// isLogCheckpoint reports whether rec is a checkpoint of a log written
// with key: an event whose top-level "type" is "checkpoint", whose "log"
// member places it at seq N of origin O, and whose "checkpoint" member holds
// a signed note that key verifies, for origin O and size N (the checkpoint
// of size N is event N). Matching bytes instead would take an operator's
// annotation whose details say "type":"checkpoint" for log structure.
func isLogCheckpoint(p *fastjson.Parser, rec []byte, key note.Verifier) bool {
	v, err := p.ParseBytes(rec)
	if err != nil || string(v.GetStringBytes("type")) != audit.TypeCheckpoint {
		return false
	}
	origin := string(v.GetStringBytes("log", "origin"))
	seqv := v.Get("log", "seq")
	msg := v.GetStringBytes("checkpoint", "note")
	if origin == "" || seqv == nil || len(msg) == 0 {
		return false
	}
	seq, err := seqv.Int64()
	if err != nil {
		return false
	}
	cp, _, err := OpenCheckpoint(msg, note.VerifierList(key))
	return err == nil && cp.Origin == origin && cp.Size == seq
}

// signerVerifier verifies signatures made by a note.Signer without its
// public key: note's keys are Ed25519, whose signatures are deterministic
// (RFC 8032), so a message signed by the same key again gives the same
// signature. The spool holds only its signer.
type signerVerifier struct{ s note.Signer }

func (v signerVerifier) Name() string    { return v.s.Name() }
func (v signerVerifier) KeyHash() uint32 { return v.s.KeyHash() }
func (v signerVerifier) Verify(msg, sig []byte) bool {
	again, err := v.s.Sign(msg)
	return err == nil && bytes.Equal(again, sig)
}

// AppendStarted appends the new epoch's log_started event to dst, when the
// log is a new epoch that has not committed it yet; else it returns dst.
// The commit that holds it must be the first.
func (l *Log) AppendStarted(dst []byte) ([]byte, error) {
	if l.starting == nil {
		return dst, nil
	}
	dst, err := l.AppendEvent(dst, l.starting)
	if err != nil {
		return dst, err
	}
	l.starting, l.startingNow = nil, true
	return dst, nil
}

// HoldsCheckpoint reports whether the commit in progress holds a
// checkpoint.
func (l *Log) HoldsCheckpoint() bool { return len(l.cps) > 0 }

// Origin returns the log's origin.
func (l *Log) Origin() string { return l.origin }

// Source returns the source the log's own events carry.
func (l *Log) Source() audit.Source { return l.opts.Source }

// CheckpointInterval returns the longest time between checkpoints.
func (l *Log) CheckpointInterval() time.Duration { return l.opts.CheckpointInterval }

// Size returns the log's size at the last commit.
func (l *Log) Size() int64 { return l.size.Load() }

// HashBytes returns the size of the stored hashes file, which the spool
// counts in its bound.
func (l *Log) HashBytes() int64 { return l.tree.size.Load() }

// SyncHashes makes the stored hashes durable. The spool calls it before it
// deletes a segment: a recomputation after a crash would need the
// segment's events otherwise.
func (l *Log) SyncHashes() error { return l.tree.sync() }

// Rebase rewrites the stored hashes file from the size proofs need on
// (see hashstore.go), once that is worth a rewrite.
func (l *Log) Rebase() {
	if !l.RebaseDue() {
		return
	}
	keep := l.keepFrom()
	before := l.tree.size.Load()
	done, err := l.tree.rebase(keep, l.origin)
	if err != nil {
		l.logger.Error("cannot rewrite the log's tree state smaller; it keeps growing until a rewrite succeeds", "err", err)
		return
	}
	if done {
		l.logger.Debug("rewrote the log's tree state from the size proofs need on", "from_size", keep,
			"bytes_before", before, "bytes_after", l.tree.size.Load())
	}
}

// WitnessCosigned tells the log the size the witness last cosigned for
// origin (witness.Options.Cosigned): the stored hashes are kept from there
// on, for the consistency proof of the next checkpoint.
func (l *Log) WitnessCosigned(origin string, size int64) {
	if origin != l.origin {
		return
	}
	for {
		old := l.witnessSize.Load()
		if size <= old {
			return
		}
		if l.witnessSize.CompareAndSwap(old, size) {
			break
		}
	}
	if l.RebaseDue() {
		l.st.WakeMaintenance()
	}
}

// Register registers the log's metrics with reg.
func (l *Log) Register(reg prometheus.Registerer) error {
	cs := []prometheus.Collector{
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "auditproxy_checkpoint_last_timestamp_seconds",
			Help: "Unix time of the newest signed checkpoint committed to the spool (before the first, the time the log was opened).",
		}, func() float64 { return float64(l.cpCommitted.Load()) / 1e9 }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "auditproxy_checkpoint_interval_seconds",
			Help: "The longest time between two checkpoints (--checkpoint-interval): a newest checkpoint older than twice this means the log stopped signing.",
		}, func() float64 { return l.opts.CheckpointInterval.Seconds() }),
	}
	if l.opts.Witness {
		cs = append(cs, prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "auditproxy_witness_proofs_abandoned_total",
			Help: "Times the log stopped keeping the hashes of a consistency proof from the size the witness last cosigned, because they would pass an eighth of --spool-max-bytes (the witness absent or refusing for that long): the spool does not wait for the witness, and that witness cannot cosign this log again without such a proof. Must stay 0.",
		}, func() float64 { return float64(l.witnessAbandonedN.Load()) }))
	}
	for _, c := range cs {
		if err := reg.Register(c); err != nil {
			return err
		}
	}
	return nil
}

// CheckpointSize returns the size of the newest committed checkpoint (0
// before the first).
func (l *Log) CheckpointSize() int64 { return l.cpSize.Load() }
