package spool

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/valyala/fastjson"

	"github.com/auditproxy/auditproxy/audit"
	"github.com/auditproxy/auditproxy/auditlog"
	"github.com/auditproxy/auditproxy/internal/fsutil"
)

// DirName is the spool's directory inside the data directory.
const DirName = "spool"

// Durability says when Record returns.
type Durability string

const (
	// DurabilitySync: Record returns once the event is fsynced. The proxy
	// holds back the end of an answer until then, so every answer a client
	// received completely has a durable event.
	DurabilitySync Durability = "sync"
	// DurabilityAsync: Record returns at once; the event is written and
	// fsynced within the fsync interval. A crash can lose that interval.
	DurabilityAsync Durability = "async"
)

// ParseDurability returns the Durability named s.
func ParseDurability(s string) (Durability, error) {
	switch Durability(s) {
	case DurabilitySync, DurabilityAsync:
		return Durability(s), nil
	}
	return "", fmt.Errorf("unknown durability %q (want %q or %q)", s, DurabilitySync, DurabilityAsync)
}

// Options configure a Spool. Zero values take the defaults.
type Options struct {
	// Durability defaults to DurabilitySync.
	Durability Durability
	// FsyncInterval, with DurabilityAsync, is the time between two commits;
	// events recorded meanwhile share the next one. Default 5 ms. With
	// DurabilitySync commits run back to back (see commitLoop).
	FsyncInterval time.Duration
	// MaxBytes bounds the spool's files on disk. At the bound Admit refuses
	// new requests; events of requests already admitted are still written,
	// so the bound can be passed by those. Default 4 GiB.
	MaxBytes int64
	// SegmentMaxBytes and SegmentMaxAge bound the active segment; past
	// either it is sealed (compressed) and a new one started. Defaults:
	// 64 MiB (at most an eighth of MaxBytes) and 1 hour.
	SegmentMaxBytes int64
	SegmentMaxAge   time.Duration
	// Retention, when positive, deletes a sealed segment once its last
	// event is older than this, provided it was acknowledged or nothing
	// is forwarded. Zero keeps segments until space is needed.
	Retention time.Duration
	// Forwarding says that a shipper acknowledges events. Only then is
	// any event acknowledged, and only acknowledged segments are deleted
	// to make room.
	Forwarding bool
	// MinFreeBytes is the free space kept in reserve on the spool's
	// filesystem: below it Admit refuses new requests, so that those
	// already admitted, checkpoints and the log's files can still be
	// written (see writability). Default 256 MiB; negative: not checked.
	MinFreeBytes int64
	// SpaceCheckInterval is how often the free space is read (statfs), and
	// how often a spool whose commits fail probes with a commit of its own.
	// Default 1 s.
	SpaceCheckInterval time.Duration
	// Log, if set, makes the spool a verifiable log (auditlog.Log), opened
	// on it once the spool has recovered.
	Log    *auditlog.Options
	Logger *slog.Logger

	statfs func(dir string) (free, total int64, err error) // tests fake it
	// beforeSeal, in tests, runs in the maintenance loop between taking
	// segment id from the head of the seal queue and sealing it.
	beforeSeal func(id uint64)
	// noPrepare, in tests, prepares no segment ahead: rotation creates
	// each (createSegment), as it does when none is ready.
	noPrepare bool
	// prepareSync, in tests, replaces the fsync of the prepared segment.
	prepareSync func(*os.File) error
}

func (o *Options) setDefaults() {
	if o.Durability == "" {
		o.Durability = DurabilitySync
	}
	if o.FsyncInterval <= 0 {
		o.FsyncInterval = 5 * time.Millisecond
	}
	if o.MaxBytes <= 0 {
		o.MaxBytes = 4 << 30
	}
	if o.SegmentMaxBytes <= 0 {
		o.SegmentMaxBytes = min(64<<20, max(o.MaxBytes/8, 4<<10))
	}
	if o.SegmentMaxAge <= 0 {
		o.SegmentMaxAge = time.Hour
	}
	if o.MinFreeBytes == 0 {
		o.MinFreeBytes = 256 << 20
	} else if o.MinFreeBytes < 0 {
		o.MinFreeBytes = 0
	}
	if o.SpaceCheckInterval <= 0 {
		o.SpaceCheckInterval = time.Second
	}
	if o.statfs == nil {
		o.statfs = fsutil.StatfsFree
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
}

// ErrSpoolFull is returned by Admit while the spool is at its size bound.
var ErrSpoolFull = errors.New("audit spool is full")

// RecoveryReport says what opening a spool found and repaired.
type RecoveryReport struct {
	// RecordsCut counts torn or corrupt records cut from the end of the
	// active segment (a frame cut short, or one whose checksum fails), and
	// BytesCut their bytes. The cut bytes are kept in a .corrupt file
	// beside the segment. A record whose commit had not completed was never
	// acknowledged to its request, so no client got the end of that answer.
	RecordsCut int
	BytesCut   int64
	// CommittedLost is set when the state file says more was committed
	// than the active segment holds: the disk lost fsynced data.
	CommittedLost       bool
	CommittedLostDetail string
	// Lost lists committed data found damaged in the middle of the active
	// segment (intact records after it): the intact records were kept,
	// the damaged bytes saved to .corrupt files. Like CommittedLost it
	// starts a new log epoch, whose log_started event lists it: continuing
	// the log after lost records would hide the loss.
	Lost []audit.LostRange
	// Resumed is where the spool continues: the end of the last record.
	Resumed Pos
	// Acked is the acknowledged position loaded from the state file.
	Acked Pos
	// StateLost says what was wrong with the state file (missing, not
	// JSON, an unknown version) when the spool held events; "" when it was
	// fine or the spool new. Resend is then, with forwarding, the number
	// of events shipped again from the oldest (exact but for records lost
	// to damage between segments, which it counts too).
	StateLost string
	Resend    int64
}

// Spool is the durable on-disk queue of audit events: append-only segment
// files in DATA-DIR/spool, written by group commit. It implements
// audit.Recorder and audit.Admitter and is safe for concurrent use.
type Spool struct {
	dir     string
	opts    Options
	log     *slog.Logger
	metrics *spoolMetrics

	// Recorders fill cur under mu; the committer takes it.
	mu      sync.Mutex
	cur     *batch
	batches sync.Pool // of *batch, reused once done with
	closed  bool
	kick    chan struct{}
	stop    chan struct{}
	done    chan struct{}

	// Owned by the committer goroutine.
	active       *os.File
	activeID     uint64
	activeSize   int64 // the logical end: where the next record goes
	activeAlloc  int64 // the file's length, preallocated space included (>= activeSize)
	activeOpened time.Time
	prepAsked    bool                 // the next segment was asked for (askPrepare)
	noExtend     bool                 // a preallocation of the active segment failed: not tried again for it
	sync         func(*os.File) error // fdatasync; tests slow it down or fail it
	syncing      int64                // the end of the records the sync in progress makes durable (for tests' sync)
	broken       error                // a failed commit could not be undone
	out          []byte               // the framed batch being written
	chain        *auditlog.Log        // nil unless the spool is a verifiable log
	w            writability          // can it take events (see space.go)

	// Shared with readers and the maintenance goroutine.
	stateMu    sync.Mutex
	segs       []segmentFile              // oldest first; the last is the active one
	committed  Pos                        // end of the last fsynced record
	acked      Pos                        // end of the last acknowledged record
	changed    chan struct{}              // closed on the next commit, if watched
	watched    bool                       // Committed handed out changed
	used       atomic.Int64               // bytes of segment files
	otherBytes atomic.Int64               // bytes of the spool's other files (quarantined damage, state)
	segFiles   sync.Mutex                 // held while a segment file is sealed, deleted or quarantined
	refusal    atomic.Pointer[AdmitError] // set while the spool is not writable
	// reclaimBlocked says why no segment can be deleted (the log's tree
	// state cannot be fsynced), nil when they can.
	reclaimBlocked atomic.Pointer[string]
	free           atomic.Int64 // the filesystem's free bytes at the last statfs, -1 unknown
	noPrealloc     atomic.Bool  // the filesystem cannot preallocate (fallocate unsupported)

	// The next segment, prepared ahead (prealloc.go).
	prepMu     sync.Mutex  // held for the prepared file's renames
	prepSize   int64       // its size, 0 while there is none; under prepMu
	prepWanted atomic.Bool // asked for by the committer, not yet prepared
	prepFailed bool        // the last try failed (logged once); fillLoop only
	fill       fillState   // the active segment's space being zero-filled
	fillKick   chan struct{}
	fillDone   chan struct{}

	recorded atomic.Int64
	maxEvent int // maxEventSize, fixed at open

	maint     chan struct{} // wakes the maintenance loop
	sealQueue []uint64
	maintDone chan struct{}
	stateFile sync.Mutex // serialises state writes
	stateSize int64      // of state.json, under stateFile

	// pending is a new log epoch a previous start began and did not
	// commit (see auditlog.PendingEpochFile), nil if none; read by auditlog.Open (logStore.Recovered).
	pending *auditlog.PendingEpoch

	// Recovery says what opening found.
	Recovery RecoveryReport
}

// batch is the events of one commit, each as a little-endian uint32 length
// and the event's JSON; the committer frames them.
//
// Batches are reused, so that a commit allocates nothing (with sync
// durability and light load every request is a commit of its own): a
// closed channel cannot be reopened, so recorders wait on a WaitGroup
// instead, and refs counts who still uses the batch (the committer and
// each recorder waiting for the commit). The last of them puts it back in
// the pool, so a batch is never reused while a recorder may still read its
// err or wait on done.
type batch struct {
	buf  []byte
	n    int
	done sync.WaitGroup // released when the commit is over
	err  error          // the commit's error, set before done is released
	refs atomic.Int32
}

// batchRetainLimit: a batch whose buffer grew past this lets it go when
// it is reused.
const batchRetainLimit = 16 << 20

// newBatch returns an empty batch, held by the committer, whose done is
// not yet released.
func (s *Spool) newBatch() *batch {
	b, _ := s.batches.Get().(*batch)
	if b == nil {
		b = new(batch)
	}
	b.refs.Store(1)
	b.done.Add(1)
	return b
}

// releaseBatch drops one reference to b; the last one returns it to the
// pool.
func (s *Spool) releaseBatch(b *batch) {
	if b.refs.Add(-1) != 0 {
		return
	}
	b.buf, b.n, b.err = b.buf[:0], 0, nil
	if cap(b.buf) > batchRetainLimit {
		b.buf = nil
	}
	s.batches.Put(b)
}

var (
	_ audit.Recorder = (*Spool)(nil)
	_ audit.Admitter = (*Spool)(nil)
)

// Open opens the spool in dataDir/spool, creating it if needed,
// repairs a torn tail left by a crash and starts the committer and the
// maintenance loop (sealing, retention). Close stops them.
func Open(dataDir string, opts Options) (*Spool, error) {
	opts.setDefaults()
	dir := filepath.Join(dataDir, DirName)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("create spool dir: %w", err)
	}
	s := &Spool{dir: dir, opts: opts, log: opts.Logger, metrics: newSpoolMetrics(),
		kick: make(chan struct{}, 1), stop: make(chan struct{}), done: make(chan struct{}),
		changed: make(chan struct{}), maint: make(chan struct{}, 1), maintDone: make(chan struct{}),
		fillKick: make(chan struct{}, 1), fillDone: make(chan struct{}),
		sync: fsutil.Fdatasync}
	s.cur = s.newBatch()
	// The free space first: recovery preallocates the active segment only
	// where there is room.
	s.w.free = -1
	s.free.Store(-1)
	s.checkSpace()
	if err := s.recover(); err != nil {
		return nil, err
	}
	if opts.Log != nil {
		var err error
		if s.chain, err = auditlog.Open(logStore{s}, *opts.Log); err != nil {
			s.active.Close()
			return nil, err
		}
		s.otherBytes.Store(otherFileBytes(s.dir)) // log.json may be new
	}
	origin := ""
	if s.chain != nil {
		origin = s.chain.Origin()
	}
	s.maxEvent = maxEventSize(origin)
	s.metrics.spool = s
	if len(s.Recovery.Lost) > 0 {
		s.metrics.damaged.Inc()
	}
	go s.commitLoop()
	go s.maintenanceLoop()
	go s.fillLoop()
	return s, nil
}

// recover finds the segments, repairs the last one and opens it for append.
func (s *Spool) recover() error {
	st, stateErr := loadState(s.dir)
	if stateErr != nil {
		st = spoolState{}
	}
	if err := s.loadPendingEpoch(); err != nil {
		return err
	}
	segs, leftovers, err := listSegments(s.dir)
	if err != nil {
		return fmt.Errorf("read spool dir: %w", err)
	}
	for _, name := range leftovers {
		if err := os.Remove(filepath.Join(s.dir, name)); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("remove leftover %s: %w", name, err)
		}
	}
	if err := s.adoptPrepared(); err != nil {
		return fmt.Errorf("prepared segment: %w", err)
	}
	// What is on disk so far, for roomFor (set again below).
	used := s.prepSize
	for _, sg := range segs {
		used += sg.size
	}
	s.used.Store(used)
	activeRecords := -1 // unknown
	moved := false      // positions in the active segment moved with a repair
	if len(segs) == 0 || segs[len(segs)-1].sealed {
		// The newest segment is sealed: a crash between a rotation and the
		// next commit, or the active segment is gone. Sealed segments are
		// complete, so the state file says whether committed records were
		// in a later one.
		var newest uint64
		if len(segs) > 0 {
			newest = segs[len(segs)-1].id
		}
		if w := st.Written; w.Segment > newest+1 || w.Segment == newest+1 && w.Offset > int64(len(segmentMagic)) {
			s.committedLost(st.Written, fmt.Sprintf("the spool's newest segment is %s (sealed) and segment %s is missing",
				segmentName(newest), segmentName(w.Segment)))
		}
		// A new segment never takes the id of one the state file names:
		// its positions would point into the wrong records.
		next := max(newest, st.Written.Segment, st.Acked.Segment) + 1
		if err := s.createSegment(next); err != nil {
			return err
		}
		segs = append(segs, segmentFile{id: next, size: s.activeAlloc, end: s.activeSize})
	} else {
		last := &segs[len(segs)-1]
		end, records, translate, err := s.repairSegment(last.id)
		if err != nil {
			return err
		}
		activeRecords = records
		if translate != nil {
			// The segment was rewritten without its damage: positions in it
			// move with the records they follow.
			moved = true
			if st.Written.Segment == last.id {
				st.Written.Offset = translate(st.Written.Offset)
			}
			if st.Acked.Segment == last.id {
				st.Acked.Offset = translate(st.Acked.Offset)
			}
		}
		// Written in place at the logical end (pwrite), not appended: the
		// file may be longer (preallocated).
		f, err := os.OpenFile(filepath.Join(s.dir, segmentName(last.id)+segmentExt), os.O_RDWR, 0)
		if err != nil {
			return fmt.Errorf("open segment: %w", err)
		}
		alloc := end
		if fi, err := f.Stat(); err == nil {
			alloc = max(end, fi.Size())
		}
		s.active, s.activeID, s.activeSize, s.activeAlloc = f, last.id, end, alloc
		last.size, last.end = alloc, end
		if st.Written.Segment == last.id && st.Written.Offset > end || st.Written.Segment > last.id {
			s.committedLost(st.Written, fmt.Sprintf("the spool ends at %s", Pos{last.id, end}))
		}
	}
	s.activeOpened = time.Now()
	for _, sg := range segs[:len(segs)-1] {
		if !sg.sealed {
			s.sealQueue = append(s.sealQueue, sg.id)
		}
	}
	used = s.prepSize
	for _, sg := range segs {
		used += sg.size
	}
	s.used.Store(used)
	s.segs = segs
	// A segment the previous run stopped cleanly (truncated to its
	// records), one a previous release wrote, or one just repaired, is
	// preallocated again.
	s.fill = fillState{id: s.activeID, written: s.activeSize, zeroed: s.activeSize, limit: s.activeAlloc}
	s.setActiveAlloc(s.preallocate(s.active, s.activeAlloc, s.preallocSize()))
	s.kickFill() // zero-fill it ahead of the commits
	s.committed = Pos{s.activeID, s.activeSize}
	s.acked = st.Acked
	if s.committed.Less(s.acked) {
		s.log.Error("the spool state acknowledges more than the spool holds; shipping resumes at the end", "acked", st.Acked.String(), "end", s.committed.String())
		s.acked = s.committed
	}
	s.Recovery.Resumed, s.Recovery.Acked = s.committed, s.acked
	if stateErr != nil {
		s.stateLost(stateErr, segs, activeRecords)
	}
	if fi, err := os.Stat(filepath.Join(s.dir, stateFileName)); err == nil {
		s.stateSize = fi.Size() // after stateLost moved an unreadable one aside
	}
	s.otherBytes.Store(otherFileBytes(s.dir))
	if moved || s.Recovery.CommittedLost {
		// The state file must say where the spool ends now: a repair moved
		// positions, or committed records were lost. Kept until the next
		// clean stop (without forwarding it is written only then), it
		// would report a loss again at the next crash, and start another
		// epoch for nothing. What was lost is in the pending epoch file by
		// now.
		if s.Recovery.CommittedLost {
			if err := s.recordPendingEpoch(); err != nil {
				return err
			}
		}
		if err := s.SaveState(); err != nil {
			return err
		}
	}
	return nil
}

// committedLost records that the state file says records up to written were
// committed and the spool no longer holds them (found says what it holds):
// the disk lost fsynced data. The log starts a new epoch that says so.
func (s *Spool) committedLost(written Pos, found string) {
	detail := fmt.Sprintf("the state file says records up to %s were committed; %s", written, found)
	if s.Recovery.CommittedLost && s.Recovery.CommittedLostDetail != detail {
		detail = s.Recovery.CommittedLostDetail + "; " + detail
	}
	s.Recovery.CommittedLost, s.Recovery.CommittedLostDetail = true, detail
	s.log.Error("the spool state says more was committed than the spool holds: the disk lost fsynced data; a new log epoch says so",
		"state_written", written.String(), "found", found)
}

// stateLost says what a start without a usable state file does: with
// forwarding, every event in the spool is shipped again from the oldest,
// since nothing says what the aggregator acknowledged. That is safe (the
// aggregator deduplicates by event id) but must not happen silently: a
// deleted state file would otherwise resend gigabytes without a word. An
// unreadable file is kept beside it as state.json.corrupt.
func (s *Spool) stateLost(cause error, segs []segmentFile, activeRecords int) {
	path := filepath.Join(s.dir, stateFileName)
	if !errors.Is(cause, errStateMissing) {
		if err := os.Rename(path, path+quarantineExt); err != nil {
			s.log.Error("cannot move the unreadable spool state file aside", "file", path, "err", err)
		}
	}
	empty := true
	for _, sg := range segs {
		n := sg.size
		if sg.end > 0 {
			n = sg.end // preallocated: its records end here
		}
		empty = empty && n <= int64(len(segmentMagic))
	}
	if empty {
		return // a new spool: nothing was shipped, nothing is resent
	}
	s.Recovery.StateLost = cause.Error()
	if !s.opts.Forwarding {
		// Nothing is shipped, so nothing is resent. Without forwarding the
		// file is written only at a clean stop: after a crash its absence
		// is expected.
		if !errors.Is(cause, errStateMissing) {
			s.log.Warn("spool state file unusable; the check that the disk kept every committed record is skipped this start",
				"file", path, "problem", cause.Error())
		}
		return
	}
	n, exact := countRecords(s.dir, segs, activeRecords)
	s.Recovery.Resend = n
	s.log.Warn("spool state file unusable: every event in the spool is shipped again from the oldest, since nothing says which the aggregator acknowledged (it deduplicates them by event id)",
		"file", path, "problem", cause.Error(), "events_to_resend", n, "exact", exact,
		"segments", len(segs), "from", Pos{segs[0].id, 0}.String())
}

// totalBytes returns the bytes of every file the spool keeps: segments and
// the rest (otherFileBytes), all counted against MaxBytes.
func (s *Spool) totalBytes() int64 {
	n := s.used.Load() + s.otherBytes.Load()
	if s.chain != nil {
		n += s.chain.HashBytes()
	}
	return n
}

// otherFileBytes returns the size of the files in the spool directory that
// are not segments: state files, saved torn tails and damage (.corrupt),
// quarantined segments (.damaged). Temporary files of a seal in progress
// are not counted.
func otherFileBytes(dir string) int64 {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return 0
	}
	var n int64
	for _, e := range entries {
		name := e.Name()
		if !e.Type().IsRegular() || IsSegmentFile(name) || strings.HasSuffix(name, tmpExt) || name == preparedName || // counted with the segments
			auditlog.IsHashStoreFile(name) { // counted as the log keeps them
			continue
		}
		if fi, err := e.Info(); err == nil {
			n += fi.Size()
		}
	}
	return n
}

// createSegment starts segment id as the active one, preallocated where
// there is room (fallocate only: fillLoop zero-fills it, off the commit
// path, see prealloc.go). The file is created
// exclusively, never over a segment that holds records. A file of that name
// that holds part of a header at most, and zeros (what a creation that
// failed, or a crash during one, leaves) is taken over. A creation that
// fails removes its file again: left behind, it would fail every later
// rotation, and the active segment would grow until the spool is full.
func (s *Spool) createSegment(id uint64) error {
	name := segmentName(id) + segmentExt
	path := filepath.Join(s.dir, name)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, os.ErrExist) {
		f, err = takeOverUnwrittenSegment(path)
	}
	if err != nil {
		return fmt.Errorf("create segment %s: %w", name, err)
	}
	alloc := int64(len(segmentMagic))
	if _, err = f.WriteAt([]byte(segmentMagic), 0); err == nil {
		alloc = s.preallocate(f, alloc, s.preallocSize())
		// fdatasync writes the new size and blocks too: they are needed
		// to read the data back.
		err = s.sync(f)
	}
	if err == nil {
		err = fsutil.SyncDir(s.dir)
	}
	if err != nil {
		f.Close()
		if rerr := os.Remove(path); rerr == nil {
			fsutil.SyncDir(s.dir)
		} else if !errors.Is(rerr, os.ErrNotExist) {
			err = fmt.Errorf("%w; and its partial file cannot be removed (%v)", err, rerr)
		}
		return fmt.Errorf("create segment %s: %w", name, err)
	}
	s.active, s.activeID, s.activeSize, s.activeAlloc = f, id, int64(len(segmentMagic)), alloc
	return nil
}

// takeOverUnwrittenSegment opens the segment file at path, emptied, if it
// holds no more than a part of a segment's header, and zeros (preallocated
// space): no record was ever committed to it.
func takeOverUnwrittenSegment(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return nil, err
	}
	end, err := fileContentEnd(f)
	if err != nil {
		f.Close()
		return nil, err
	}
	head := make([]byte, len(segmentMagic)+1)
	n, err := f.ReadAt(head[:min(end, int64(len(head)))], 0)
	if err != nil && err != io.EOF {
		f.Close()
		return nil, err
	}
	if n > len(segmentMagic) || !bytes.HasPrefix([]byte(segmentMagic), head[:n]) {
		f.Close()
		return nil, fmt.Errorf("%s already exists and holds more than a segment header; not overwriting it", path)
	}
	if err := f.Truncate(0); err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

// repairSegment checks every frame of the active segment id and returns
// where the next record goes, the intact records it holds, and how offsets
// of the segment as found map to the segment as repaired (nil: unchanged).
//
// A torn tail (bytes after the last intact frame with no valid frame after
// them: a commit a crash interrupted, which no client was answered for) is
// cut off. Damage with an intact frame after it is a loss of committed data
// (a bad sector, a write lost under a later one): every intact frame after
// it is kept, the segment is rewritten without the damaged bytes (written
// aside and renamed over it, so a crash leaves the old or the new), and the
// loss goes into the recovery report, which starts a new log epoch that
// says what was lost. Either way the bytes removed are saved first, beside
// the segment as NAME.seg.OFFSET.corrupt, so that nothing is destroyed.
func (s *Spool) repairSegment(id uint64) (int64, int, func(int64) int64, error) {
	path := filepath.Join(s.dir, segmentName(id)+segmentExt)
	data, err := os.ReadFile(path)
	if err != nil {
		return 0, 0, nil, fmt.Errorf("read segment: %w", err)
	}
	end, records := validPrefix(data)
	// Past z every byte is zero: preallocated space, not yet written.
	z := int64(zeroTailStart(data))
	if end > 0 && end >= z {
		return end, records, nil, nil
	}
	if end > 0 {
		if sc := scanFrames(data, end); len(sc.damaged) > 0 {
			return s.repairDamage(id, path, data)
		}
	}
	cut := data[end:tornEnd(data, end, z)]
	if end == 0 {
		// Not even a whole header: the crash came while creating it.
		end = int64(len(segmentMagic))
		if !bytes.HasPrefix([]byte(segmentMagic), data[:z]) {
			return 0, 0, nil, fmt.Errorf("segment %s is not a spool segment (bad header); move it away to start", path)
		}
		cut = nil
	}
	if len(cut) > 0 {
		q := fmt.Sprintf("%s.%d%s", path, end, quarantineExt)
		if err := fsutil.WriteFileSynced(q, cut); err != nil {
			return 0, 0, nil, fmt.Errorf("save torn tail to %s: %w", q, err)
		}
		if err := fsutil.SyncDir(s.dir); err != nil {
			return 0, 0, nil, err
		}
		s.Recovery.RecordsCut++
		s.Recovery.BytesCut += int64(len(cut))
		s.log.Warn("cut a torn or corrupt record from the end of the spool (the process or machine stopped while committing it; its request was never answered in full)",
			"segment", segmentName(id), "offset", end, "bytes", len(cut), "good_records", records, "saved_to", q)
	}
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return 0, 0, nil, err
	}
	defer f.Close()
	if z < end {
		if _, err := f.WriteAt([]byte(segmentMagic), 0); err != nil {
			return 0, 0, nil, err
		}
	}
	// Cut to the records (the preallocated space with it: recover
	// preallocates again).
	if err := f.Truncate(end); err != nil {
		return 0, 0, nil, fmt.Errorf("cut torn tail: %w", err)
	}
	return end, records, nil, f.Sync()
}

// repairDamage rewrites the active segment without its damaged ranges (see
// repairSegment).
func (s *Spool) repairDamage(id uint64, path string, data []byte) (int64, int, func(int64) int64, error) {
	sv := &segmentSalvage{data: data, scan: scanFrames(data, 0)}
	sv.records = len(sv.scan.frames)
	if len(sv.scan.damaged) > 0 && sv.scan.damaged[0].Before == nil {
		// Damage before the first intact frame: the event before it is the
		// previous segment's last.
		sv.scan.damaged[0].Before = s.lastPlaceBefore(id)
		sv.scan.damaged[0].SetMissing()
	}
	name := segmentName(id) + segmentExt
	for _, d := range sv.scan.damaged {
		q := fmt.Sprintf("%s.%d%s", path, d.Start, quarantineExt)
		if err := fsutil.WriteFileSynced(q, data[d.Start:d.End]); err != nil {
			return 0, 0, nil, fmt.Errorf("save damaged bytes to %s: %w", q, err)
		}
		lr := audit.LostRange{Segment: name, DamagedRange: d, Bytes: d.End - d.Start, SavedTo: filepath.Base(q)}
		s.Recovery.addLost(lr)
		s.log.Error("committed records of the spool are damaged; every intact record after the damage is kept, the damaged bytes saved, and a new log epoch says what was lost",
			"segment", name, "offset", d.Start, "end", d.End, "bytes", d.End-d.Start, "last_intact_before", d.Before,
			"first_intact_after", d.After, "missing_seqs", d.Missing, "saved_to", q)
	}
	if t := sv.scan.tail; t.End > t.Start {
		q := fmt.Sprintf("%s.%d%s", path, t.Start, quarantineExt)
		if err := fsutil.WriteFileSynced(q, data[t.Start:t.End]); err != nil {
			return 0, 0, nil, fmt.Errorf("save torn tail to %s: %w", q, err)
		}
		s.Recovery.RecordsCut++
		s.Recovery.BytesCut += t.End - t.Start
		s.log.Warn("cut a torn or corrupt record from the end of the spool (the process or machine stopped while committing it; its request was never answered in full)",
			"segment", name, "offset", t.Start, "bytes", t.End-t.Start, "saved_to", q)
	}
	// The damaged bytes are on disk, and what they cost is recorded for the
	// new epoch, before the segment that holds them is replaced.
	if err := fsutil.SyncDir(s.dir); err != nil {
		return 0, 0, nil, err
	}
	if err := s.recordPendingEpoch(); err != nil {
		return 0, 0, nil, err
	}
	repaired := sv.intactBytes()
	if err := fsutil.WriteFileAtomic(path, repaired); err != nil {
		return 0, 0, nil, fmt.Errorf("rewrite segment %s without its damage: %w", name, err)
	}
	return int64(len(repaired)), sv.records, sv.translate, nil
}

// lastPlaceBefore returns the log place of the last intact record of the
// segment before id that has one, nil if none.
func (s *Spool) lastPlaceBefore(id uint64) *audit.Place {
	segs, _, err := listSegments(s.dir)
	if err != nil {
		return nil
	}
	var prev *segmentFile
	for i := range segs {
		if segs[i].id < id {
			prev = &segs[i]
		}
	}
	if prev == nil {
		return nil
	}
	path, _ := segmentPath(s.dir, prev.id)
	var p fastjson.Parser
	var last *audit.Place
	scanSegmentFile(path, false, func(_ int64, rec []byte) error {
		if pl := auditlog.PlaceOf(&p, rec); pl != nil {
			last = pl
		}
		return nil
	})
	return last
}

// validPrefix returns the length of the longest prefix of a segment's bytes
// that is its header and whole, intact frames, and how many frames that is.
// It returns 0 if the header itself is incomplete or wrong.
func validPrefix(data []byte) (end int64, records int) {
	if len(data) < len(segmentMagic) || string(data[:len(segmentMagic)]) != segmentMagic {
		return 0, 0
	}
	off := len(segmentMagic)
	for {
		_, size, err := parseFrame(data[off:], int64(off))
		if err != nil || size == 0 {
			return int64(off), records
		}
		off += size
		records++
	}
}

// Admit implements audit.Admitter: it refuses new requests, with an
// *AdmitError, while the spool is not writable (its filesystem is below the
// free-space reserve, or its commits fail: see writability) or is at its
// size bound. It reads only what the committer published: no system call.
func (s *Spool) Admit() error {
	if e := s.refusal.Load(); e != nil {
		s.metrics.rejected.Inc()
		return e
	}
	if used := s.totalBytes(); used >= s.opts.MaxBytes {
		s.wakeMaintenance() // acknowledged segments may make room
		s.metrics.rejected.Inc()
		return &AdmitError{Reason: "full", Retry: 5 * time.Second, Err: s.fullError(used)}
	}
	return nil
}

// fullError says what fills a spool at its bound: the segments, and what
// keeps them (events not yet acknowledged, or retention), the log's tree
// state, and the other files (saved damage, state files); and, when
// acknowledged segments cannot be deleted, why.
func (s *Spool) fullError(used int64) error {
	s.stateMu.Lock()
	var held, deletable int64 // bytes of segments that must stay, and of those that may go
	for i, sg := range s.segs {
		if s.opts.Forwarding && sg.id < s.acked.Segment && i < len(s.segs)-1 {
			deletable += sg.size
		} else {
			held += sg.size
		}
	}
	s.stateMu.Unlock()
	var parts []string
	if s.opts.Forwarding {
		parts = append(parts, fmt.Sprintf("%d in segments holding events not yet acknowledged by the aggregator", held))
		if deletable > 0 {
			parts = append(parts, fmt.Sprintf("%d in acknowledged segments (deleted as room is needed)", deletable))
		}
	} else {
		parts = append(parts, fmt.Sprintf("%d in segments, kept without --forward until --retention deletes them", held))
	}
	s.prepMu.Lock()
	if s.prepSize > 0 {
		parts = append(parts, fmt.Sprintf("%d in the next segment, preallocated ahead", s.prepSize))
	}
	s.prepMu.Unlock()
	if s.chain != nil {
		parts = append(parts, fmt.Sprintf("%d in the log's tree state (log.tree)", s.chain.HashBytes()))
	}
	if n := s.otherBytes.Load(); n > 0 {
		parts = append(parts, fmt.Sprintf("%d in saved damage (.corrupt, .damaged, kept until an operator removes them) and state files", n))
	}
	msg := strings.Join(parts, ", ")
	if why := s.reclaimBlocked.Load(); why != nil {
		msg += "; acknowledged segments cannot be deleted: " + *why
	}
	return fmt.Errorf("%w: %d of %d bytes: %s", ErrSpoolFull, used, s.opts.MaxBytes, msg)
}

// Record implements audit.Recorder: it appends ev to the next commit and,
// with DurabilitySync, waits for that commit.
func (s *Spool) Record(ev *audit.Event) error {
	return s.append(func(dst []byte) []byte { return ev.AppendJSON(dst) }, s.opts.Durability != DurabilityAsync)
}

// Append records one event given as its JSON object.
func (s *Spool) Append(event []byte) error {
	if len(event) == 0 || len(event) > s.maxEvent {
		return s.eventSizeError(len(event))
	}
	return s.append(func(dst []byte) []byte { return append(dst, event...) }, s.opts.Durability != DurabilityAsync)
}

// MaxRecordBytes is the most bytes one record of the spool holds: an event
// with its place in the log. A reader takes a longer frame for damage.
const MaxRecordBytes = maxRecordSize

// maxEventSize returns the most bytes of an event the spool takes: its
// record, with the "log" member the committer adds (an origin escaped in
// JSON at worst six bytes a byte, a prev hash, a seq), must fit in
// maxRecordSize, or it would be committed and then read as damage.
func maxEventSize(origin string) int {
	if origin == "" {
		return maxRecordSize
	}
	return maxRecordSize - (256 + 6*len(origin))
}

func (s *Spool) eventSizeError(n int) error {
	return fmt.Errorf("event of %d bytes: the spool takes events of 1 to %d bytes (one record holds at most %d, with the event's place in the log)", n, s.maxEvent, maxRecordSize)
}

// isClosed reports whether Close was called.
func (s *Spool) isClosed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closed
}

func (s *Spool) append(encode func([]byte) []byte, wait bool) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return errors.New("spool is closed")
	}
	b := s.cur
	start := len(b.buf)
	b.buf = encode(append(b.buf, 0, 0, 0, 0))
	if n := len(b.buf) - start - 4; n == 0 || n > s.maxEvent {
		b.buf = b.buf[:start]
		s.mu.Unlock()
		return s.eventSizeError(n)
	}
	binary.LittleEndian.PutUint32(b.buf[start:], uint32(len(b.buf)-start-4))
	b.n++
	if b.n == 1 {
		select {
		case s.kick <- struct{}{}:
		default:
		}
	}
	if wait {
		b.refs.Add(1) // while b is current, before the committer takes it
	}
	s.mu.Unlock()
	if !wait {
		return nil
	}
	b.done.Wait()
	err := b.err
	s.releaseBatch(b)
	return err
}

// commitLoop commits a batch whenever one has events, until Close.
//
// With DurabilityAsync a commit waits until an fsync interval has passed
// since the last one, so the disk sees at most one fsync per interval and an
// event waits at most an interval. With DurabilitySync an answer waits for
// its commit, so commits run back to back: the events that arrive while one
// fsync runs form the next batch. Batches grow with load, and the fsync rate
// is bounded by the disk's fsync time instead of by a timer that would add
// up to an interval to every answer (measured: +5 ms at p50 with 5 ms).
func (s *Spool) commitLoop() {
	defer close(s.done)
	var last time.Time
	ageCheck := time.NewTicker(max(s.opts.SegmentMaxAge/10, 10*time.Millisecond))
	defer ageCheck.Stop()
	spaceCheck := time.NewTicker(s.opts.SpaceCheckInterval)
	defer spaceCheck.Stop()
	var cpTick <-chan time.Time
	if s.chain != nil {
		t := time.NewTicker(max(s.chain.CheckpointInterval()/4, time.Millisecond))
		defer t.Stop()
		cpTick = t.C
	}
	for {
		open := true
		select {
		case <-cpTick:
			if !s.chain.CheckpointDue(time.Now()) {
				continue
			}
		case <-s.kick:
			if wait := s.opts.FsyncInterval - time.Since(last); wait > 0 && s.opts.Durability == DurabilityAsync {
				t := time.NewTimer(wait)
				select {
				case <-t.C:
				case <-s.stop:
					t.Stop()
					open = false
				}
			}
		case <-ageCheck.C:
			if s.activeSize > int64(len(segmentMagic)) && time.Since(s.activeOpened) >= s.opts.SegmentMaxAge {
				s.rotate()
			} else if s.activeSize > int64(len(segmentMagic)) {
				s.askPrepare()
			}
			continue
		case <-spaceCheck.C:
			s.checkSpace()
			if s.w.commitFailed != nil || s.broken != nil {
				s.probe()
			}
			continue
		case <-s.stop:
			open = false
		}
		last = time.Now()
		s.mu.Lock()
		b := s.cur
		s.cur = s.newBatch()
		s.mu.Unlock()
		// A log checkpoints on its cadence even when idle, and at Close.
		if b.n > 0 || (s.chain != nil && (!open || s.chain.CheckpointDue(last))) {
			b.err = s.commit(b, !open, false)
		}
		b.done.Done()
		s.releaseBatch(b)
		if !open {
			return
		}
		if s.activeSize >= s.opts.SegmentMaxBytes {
			s.rotate()
		} else {
			s.askPrepare()
		}
	}
}

// commit frames one batch (placing each event in the log, and adding a
// checkpoint when one is due, or final or checkpoint is set), writes it at
// the active segment's logical end and fdatasyncs it (into preallocated
// space a commit changes no metadata: see prealloc.go), then publishes the
// new end.
func (s *Spool) commit(b *batch, final, checkpoint bool) error {
	if s.broken != nil {
		return s.broken
	}
	start := time.Now()
	var mark auditlog.Mark
	if s.chain != nil {
		mark = s.chain.Mark()
	}
	out, err := s.frame(s.out[:0], b, final, checkpoint, start)
	s.out = out
	end := s.activeSize + int64(len(out))
	if err == nil {
		s.extendActive(end)
		// Under fill.mu: fillLoop writes zeros only past what is written.
		s.fill.mu.Lock()
		_, err = s.active.WriteAt(out, s.activeSize)
		s.fill.written = max(s.fill.written, end)
		s.fill.mu.Unlock()
		if err != nil {
			err = fmt.Errorf("append %d events to the spool: %w", b.n, err)
		}
	}
	if err == nil {
		s.syncing = end
		if err = s.sync(s.active); err != nil {
			// After a failed fsync the kernel may have dropped the dirty
			// pages; nothing written since the last good fsync can be
			// trusted.
			err = fmt.Errorf("fsync %d events: %w", b.n, err)
		}
	}
	if err != nil {
		s.metrics.commitErrors.Inc()
		heldCheckpoint := false
		if s.chain != nil {
			heldCheckpoint = s.chain.HoldsCheckpoint()
			s.chain.Rollback(mark)
		}
		s.undo(err)
		s.commitFailed(err, heldCheckpoint)
		return err
	}
	s.metrics.commitSeconds.Observe(time.Since(start).Seconds())
	s.commitSucceeded()
	if s.chain != nil {
		if s.chain.HoldsCheckpoint() {
			s.w.outageSince = time.Time{} // reported by the checkpoint just committed
		}
		if s.chain.Committed() {
			s.epochStarted()
		}
		if s.chain.RebaseDue() {
			s.wakeMaintenance()
		}
	}
	s.committedBytes(int64(len(out)))
	s.activeSize = end
	s.recorded.Add(int64(b.n))
	if end > s.activeAlloc { // written past the preallocated space
		s.used.Add(end - s.activeAlloc)
		s.activeAlloc = end
	}
	s.stateMu.Lock()
	s.segs[len(s.segs)-1].size, s.segs[len(s.segs)-1].end = s.activeAlloc, s.activeSize
	s.committed = Pos{s.activeID, s.activeSize}
	s.notifyChanged()
	s.stateMu.Unlock()
	if s.totalBytes() >= s.opts.MaxBytes*9/10 {
		s.wakeMaintenance()
	}
	return nil
}

// undo cuts a failed commit's bytes off the active segment. If that fails
// too, the spool is broken: nothing is committed (after the garbage) until
// a probe manages the cut (retryUndo).
func (s *Spool) undo(cause error) {
	if err := s.cutFailedCommit(); err != nil {
		s.broken = fmt.Errorf("spool unusable: a failed commit (%v) could not be cut off the segment: %w", cause, err)
		s.log.Error("spool unusable; refusing requests until the failed commit can be cut off", "err", s.broken)
	}
}

// cutFailedCommit truncates the active segment to the committed end and
// fsyncs it. After a failed fdatasync the kernel may have dropped the dirty
// pages; the truncation drops them with their blocks, so nothing of the
// failed commit can come back, whatever the preallocated blocks held. The
// preallocated space goes with them; the next commit preallocates again
// (extendActive).
func (s *Spool) cutFailedCommit() error {
	s.fill.mu.Lock()
	err := s.active.Truncate(s.activeSize)
	if err == nil {
		s.fill.written, s.fill.limit = s.activeSize, s.activeSize
		s.fill.zeroed = min(s.fill.zeroed, s.activeSize)
	}
	s.fill.mu.Unlock()
	if err == nil {
		s.setActiveAlloc(s.activeSize)
		s.noExtend = false
		err = s.active.Sync()
	}
	return err
}

// retryUndo tries again to cut what a failed commit left after the
// committed end.
func (s *Spool) retryUndo() error {
	if err := s.cutFailedCommit(); err != nil {
		return fmt.Errorf("cut a failed commit off the segment: %w", err)
	}
	s.log.Warn("the failed commit was cut off the segment; the spool is usable again")
	s.broken = nil
	return nil
}

// rotate seals the active segment and starts the next: the one prepared
// ahead if it is ready, else one it creates. A failure leaves the current
// segment active.
//
// The old segment keeps its preallocated space after its records until it
// is sealed (the seal reads up to its logical end, and removes it): cutting
// it off here would cost the commit path a truncation and its journal
// commit, and a crash before the seal would leave it anyway, which every
// reader of the segment handles.
func (s *Spool) rotate() {
	old, oldID := s.active, s.activeID
	prepared, err := s.startPrepared(oldID + 1)
	if err == nil && !prepared {
		err = s.createSegment(oldID + 1)
	}
	if err != nil {
		s.log.Error("cannot start a new spool segment; continuing in the current one", "err", err)
		return
	}
	// A prepared segment is zero-filled already; one just created is
	// filled ahead of the commits.
	zeroed := s.activeSize
	if prepared {
		zeroed = s.activeAlloc
	}
	s.fill.mu.Lock()
	s.fill.id, s.fill.written, s.fill.zeroed, s.fill.limit = s.activeID, s.activeSize, zeroed, s.activeAlloc
	s.fill.mu.Unlock()
	old.Close()
	s.activeOpened = time.Now()
	s.prepAsked, s.noExtend = false, false
	if !prepared {
		s.used.Add(s.activeAlloc) // a prepared one was counted already
		s.kickFill()
	}
	s.stateMu.Lock()
	s.segs = append(s.segs, segmentFile{id: s.activeID, size: s.activeAlloc, end: s.activeSize})
	s.committed = Pos{s.activeID, s.activeSize}
	s.sealQueue = append(s.sealQueue, oldID)
	s.notifyChanged()
	s.stateMu.Unlock()
	s.wakeMaintenance()
}

// Close commits what was recorded, stops the committer and the maintenance
// loop (an interrupted seal resumes at the next open) and writes the state
// file. Record fails after Close; reading for shipping goes on.
func (s *Spool) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	pending := s.cur
	pending.refs.Add(1)
	close(s.stop)
	s.mu.Unlock()
	<-s.done
	<-s.maintDone
	<-s.fillDone
	pending.done.Wait()
	err := pending.err
	s.releaseBatch(pending)
	// A clean stop leaves the active segment as long as its records, and
	// no prepared segment: the files are then what the previous release
	// wrote (which would take the preallocated space for a torn tail), and
	// the next start preallocates again. A crash leaves both, which the
	// next start handles.
	if terr := s.active.Truncate(s.activeSize); terr == nil {
		s.setActiveAlloc(s.activeSize)
		s.active.Sync()
	} else {
		s.log.Warn("cannot cut the spool's active segment to its records at stop; the next start reads past its unwritten space", "err", terr)
	}
	s.dropPrepared()
	if cerr := s.active.Close(); err == nil {
		err = cerr
	}
	if s.chain != nil {
		if cerr := s.chain.Close(); err == nil {
			err = cerr
		}
	}
	if serr := s.SaveState(); err == nil {
		err = serr
	}
	return err
}

// Recorded reports how many events this Spool committed.
func (s *Spool) Recorded() int64 { return s.recorded.Load() }

// Dir returns the spool's directory.
func (s *Spool) Dir() string { return s.dir }

// Committed returns the end of the last fsynced record and a channel that
// is closed when that changes.
func (s *Spool) Committed() (Pos, <-chan struct{}) {
	s.stateMu.Lock()
	defer s.stateMu.Unlock()
	s.watched = true
	return s.committed, s.changed
}

// notifyChanged closes the channel Committed hands out, once the end moved.
// A channel that nobody was given is kept for the next commit, so commits
// with no shipper waiting allocate none. Called with stateMu held.
func (s *Spool) notifyChanged() {
	if s.watched {
		close(s.changed)
		s.changed = make(chan struct{})
		s.watched = false
	}
}

// Acked returns the end of the last acknowledged record.
func (s *Spool) Acked() Pos {
	s.stateMu.Lock()
	defer s.stateMu.Unlock()
	return s.acked
}

// Ack records that every event before p reached the aggregator. The state
// file is written by SaveState, which the shipper calls at its own pace: a
// crash in between only means that those events are shipped again.
func (s *Spool) Ack(p Pos) {
	s.stateMu.Lock()
	if s.acked.Less(p) {
		s.acked = p
	}
	full := s.totalBytes() >= s.opts.MaxBytes*9/10
	s.stateMu.Unlock()
	if full {
		s.wakeMaintenance()
	}
}

// SaveState writes the state file (written, acknowledged) atomically.
func (s *Spool) SaveState() error {
	s.stateFile.Lock()
	defer s.stateFile.Unlock()
	s.stateMu.Lock()
	st := spoolState{Version: 1, Written: s.committed, Acked: s.acked}
	s.stateMu.Unlock()
	n, err := saveState(s.dir, st)
	if err == nil {
		s.otherBytes.Add(n - s.stateSize) // counted against MaxBytes like every file
		s.stateSize = n
	}
	return err
}

// firstSegment returns the oldest segment's id.
func (s *Spool) firstSegment() uint64 {
	s.stateMu.Lock()
	defer s.stateMu.Unlock()
	return s.segs[0].id
}

func (s *Spool) wakeMaintenance() {
	select {
	case s.maint <- struct{}{}:
	default:
	}
}

// frame appends b's events to dst as frames, each placed in the log when the
// spool is one, followed by a checkpoint when one is due.
func (s *Spool) frame(dst []byte, b *batch, final, checkpoint bool, now time.Time) ([]byte, error) {
	var err error
	if s.chain != nil {
		if dst, err = appendFramed(dst, s.chain.AppendStarted); err != nil {
			return dst, err
		}
	}
	for rest := b.buf; len(rest) >= 4; {
		n := binary.LittleEndian.Uint32(rest)
		event := rest[4 : 4+n]
		rest = rest[4+n:]
		dst, _ = appendFramed(dst, func(dst []byte) ([]byte, error) {
			if s.chain == nil {
				return append(dst, event...), nil
			}
			out, err := s.chain.AppendEvent(dst, event)
			if err != nil {
				// Not JSON: a bug upstream. Keep the event, outside the log,
				// rather than lose it; a verifier reports it as unchained.
				s.log.Error("event not placed in the log", "err", err)
				out = append(dst, event...)
			}
			return out, nil
		})
	}
	if s.chain != nil && (final || checkpoint || s.chain.CheckpointDue(now)) {
		return appendFramed(dst, func(dst []byte) ([]byte, error) {
			return s.chain.AppendCheckpoint(dst, now, final, s.outage())
		})
	}
	return dst, nil
}

// appendFramed appends to dst the frame of what payload appends, in place;
// nothing when it appends nothing or fails.
func appendFramed(dst []byte, payload func([]byte) ([]byte, error)) ([]byte, error) {
	start := len(dst)
	dst, err := payload(append(dst, make([]byte, frameHeaderSize)...))
	if err != nil || len(dst) == start+frameHeaderSize {
		return dst[:start], err
	}
	putFrameHeader(dst[start:])
	return dst, nil
}

// putFrameHeader fills in the header of the frame that f starts with and
// whose payload is the rest of f.
func putFrameHeader(f []byte) {
	payload := f[frameHeaderSize:]
	binary.LittleEndian.PutUint32(f, uint32(len(payload)))
	binary.LittleEndian.PutUint32(f[4:], crc32.Checksum(payload, crcTable))
}
