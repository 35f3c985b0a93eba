package auditlog

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"

	"github.com/auditproxy/auditproxy/internal/fsutil"
	"golang.org/x/mod/sumdb/tlog"
)

// The log's tree state is kept in DATA-DIR/spool/log.tree:
//
//	magic     "aptree\x01\n" (8 bytes)
//	base      uint64 LE: the tree size M the file can prove from
//	originLen uint16 LE, then the origin's bytes: the log the file belongs to
//	crc       uint32 LE: CRC-32C of everything before it
//	frontier  popcount(M) hashes of 32 bytes: the roots of the complete
//	          subtrees that make up the first M leaves, largest first (the
//	          stored hashes TreeFromStored(M) reads)
//	hashes    the stored hashes (tlog.StoredHashIndex order) from index
//	          StoredHashCount(M) on, 32 bytes each
//
// That is all any proof from M on needs. A consistency proof from a size
// m >= M to a later size, and the edge of the tree at any size >= M (to go
// on appending after a restart), read only the roots of the complete
// subtrees that make up the first m leaves, each either one of M's (it
// ends at or before M) or created after M, and subtrees that start at or
// after m, all created after M. The hashes of the first M leaves' inner
// nodes are never read again, so the file drops them: M advances to the
// size the witness last cosigned (with --witness-url), else to the newest
// checkpoint's, and the file is rewritten once what it would drop is at
// least half of it. It stays about as large as the hashes of the events
// since that size, instead of 64 bytes for every event the log ever held
// (2.7 GB a day at 500 events a second).
//
// The header and frontier are written once per rewrite, which is atomic
// (written aside, fsynced, renamed over, the directory fsynced). Appends
// after it are not fsynced (a crash may lose their tail, which the next
// start recomputes from the spool's events), except that the file is
// fsynced before a spool segment is deleted, so that a recomputation never
// needs a deleted segment.
//
// The previous release kept every stored hash from index 0 in tree.hashes,
// without a header: such a file is read as a tree state with M = 0 and
// replaced by log.tree at the first rewrite.
// crcTable is CRC-32C, as the spool's frames use.
var crcTable = crc32.MakeTable(crc32.Castagnoli)

const (
	HashStoreFile       = "log.tree"
	LegacyHashStoreFile = "tree.hashes"
	treeMagic           = "aptree\x01\n"
	// treeRewriteMin: a rewrite drops at least this much.
	treeRewriteMin = 64 << 10
)

// treeFile is the log's stored hashes from its base on. Appends come from
// the committer, reads from the committer and proof makers (the witness),
// rewrites from the maintenance loop.
type treeFile struct {
	dir    string
	mu     sync.RWMutex // Lock: append, rewrite, truncate; RLock: read, sync
	f      *os.File
	legacy bool   // f is the previous release's tree.hashes
	fresh  bool   // openTreeFile found none and made an empty one
	origin string // "" for a legacy file
	base   int64  // M
	hdr    int64  // bytes before the first stored hash
	front  map[int64]tlog.Hash
	n      atomic.Int64 // stored hashes below this index are in the file
	size   atomic.Int64 // the file's bytes
	// backlog holds stored hashes from index n on whose write failed; they
	// are written before the next ones, and read from here meanwhile.
	// broken is set once the backlog would pass treeBacklogMax: then no
	// hash past n is kept (appends fail), and sync fails, so that no
	// segment whose events a rebuild needs is deleted; the next start
	// rebuilds the rest from the spool.
	backlog    []byte
	broken     error
	backlogMax int // treeBacklogMax; tests lower it
}

// treeBacklogMax bounds the stored hashes kept in memory while writing
// them to the tree state fails: 32 MiB, half a million events.
const treeBacklogMax = 1 << 20

// baseSize returns the tree size the file proves from.
func (t *treeFile) baseSize() int64 {
	t.mu.RLock()
	defer t.mu.RUnlock()
	return t.base
}

// baseIndex returns the index of the first stored hash in the body.
func (t *treeFile) baseIndex() int64 { return tlog.StoredHashCount(t.base) }

// frontierIndexes returns the stored-hash indexes of the roots of the
// complete subtrees that make up the first m leaves, largest first: what
// TreeFromStored(m) reads.
func frontierIndexes(m int64) []int64 {
	var idx []int64
	var start int64
	for l := 63; l >= 0; l-- {
		if m&(1<<l) == 0 {
			continue
		}
		idx = append(idx, tlog.StoredHashIndex(l, start>>l))
		start += 1 << l
	}
	return idx
}

// openTreeFile opens the tree state in dir: log.tree, or the previous
// release's tree.hashes, or a new empty log.tree.
func openTreeFile(dir string) (*treeFile, error) {
	t := &treeFile{dir: dir, backlogMax: treeBacklogMax}
	path := filepath.Join(dir, HashStoreFile)
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if errors.Is(err, os.ErrNotExist) {
		if lf, lerr := os.OpenFile(filepath.Join(dir, LegacyHashStoreFile), os.O_RDWR, 0); lerr == nil {
			t.f, t.legacy = lf, true
			return t, t.load()
		}
		if err := t.writeNew(path, "", 0, nil, nil); err != nil {
			return nil, err
		}
		t.fresh = true
		return t, nil
	}
	if err != nil {
		return nil, fmt.Errorf("open the log's tree state: %w", err)
	}
	t.f = f
	if err := t.load(); err != nil {
		f.Close()
		return nil, err
	}
	return t, nil
}

// load reads the header and counts the whole stored hashes.
func (t *treeFile) load() error {
	fi, err := t.f.Stat()
	if err != nil {
		return err
	}
	t.size.Store(fi.Size())
	t.front = map[int64]tlog.Hash{}
	if t.legacy {
		t.n.Store(fi.Size() / tlog.HashSize)
		return nil
	}
	head := make([]byte, min(fi.Size(), 8+8+2+1<<16+4))
	if _, err := io.ReadFull(io.NewSectionReader(t.f, 0, int64(len(head))), head); err != nil {
		return fmt.Errorf("read the log's tree state: %w", err)
	}
	bad := func(why string) error {
		return fmt.Errorf("%w: %s %s", errTreeDamaged, filepath.Join(t.dir, HashStoreFile), why)
	}
	if len(head) < 8+8+2 || string(head[:8]) != treeMagic {
		return bad("has no tree state header")
	}
	base := int64(binary.LittleEndian.Uint64(head[8:]))
	olen := int(binary.LittleEndian.Uint16(head[16:]))
	if base < 0 || len(head) < 18+olen+4 {
		return bad("has a short header")
	}
	origin := string(head[18 : 18+olen])
	crcAt := 18 + olen
	idx := frontierIndexes(base)
	hdr := int64(crcAt+4) + int64(len(idx))*tlog.HashSize
	if fi.Size() < hdr {
		return bad("is shorter than its header")
	}
	front := make([]byte, len(idx)*tlog.HashSize)
	if _, err := t.f.ReadAt(front, int64(crcAt+4)); err != nil {
		return err
	}
	c := crc32.Update(crc32.Checksum(head[:crcAt], crcTable), crcTable, front)
	if c != binary.LittleEndian.Uint32(head[crcAt:]) {
		return bad("fails its header checksum")
	}
	t.origin, t.base, t.hdr = origin, base, hdr
	for i, x := range idx {
		var h tlog.Hash
		copy(h[:], front[i*tlog.HashSize:])
		t.front[x] = h
	}
	t.n.Store(t.baseIndex() + (fi.Size()-hdr)/tlog.HashSize)
	return nil
}

// errTreeDamaged is a tree state file whose header does not read back.
var errTreeDamaged = errors.New("the log's tree state is damaged")

// header returns the header and frontier of a tree state of origin from
// size base on.
func treeHeader(origin string, base int64, front []tlog.Hash) []byte {
	b := append([]byte(treeMagic), make([]byte, 10)...)
	binary.LittleEndian.PutUint64(b[8:], uint64(base))
	binary.LittleEndian.PutUint16(b[16:], uint16(len(origin)))
	b = append(b, origin...)
	c := crc32.Checksum(b, crcTable)
	var fb []byte
	for _, h := range front {
		fb = append(fb, h[:]...)
	}
	b = binary.LittleEndian.AppendUint32(b, crc32.Update(c, crcTable, fb))
	return append(b, fb...)
}

// writeNew replaces the tree state with one of origin from size base on:
// front (frontierIndexes(base)'s hashes) and body, the stored hashes from
// StoredHashCount(base) on. Written aside, fsynced, renamed over log.tree,
// the directory fsynced; a legacy tree.hashes is removed after. Called with
// t.mu held, or before t is shared.
func (t *treeFile) writeNew(path, origin string, base int64, front []tlog.Hash, body []byte) error {
	hdr := treeHeader(origin, base, front)
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("write the log's tree state: %w", err)
	}
	_, err = f.Write(append(hdr, body...))
	if err == nil {
		err = f.Sync()
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		f.Close()
		os.Remove(tmp)
		return fmt.Errorf("write the log's tree state: %w", err)
	}
	// Renamed: the new file is the tree state now, whether or not the
	// directory's fsync below succeeds. Appending to the old one, no
	// longer linked, would lose every hash after.
	if t.f != nil {
		t.f.Close()
	}
	wasLegacy := t.legacy
	t.f, t.legacy, t.origin, t.base, t.hdr = f, false, origin, base, int64(len(hdr))
	t.front = map[int64]tlog.Hash{}
	for i, x := range frontierIndexes(base) {
		t.front[x] = front[i]
	}
	t.n.Store(tlog.StoredHashCount(base) + int64(len(body))/tlog.HashSize)
	t.size.Store(int64(len(hdr) + len(body)))
	t.backlog, t.broken = nil, nil
	if err := fsutil.SyncDir(t.dir); err != nil {
		return fmt.Errorf("write the log's tree state: fsync its directory: %w", err)
	}
	if wasLegacy {
		os.Remove(filepath.Join(t.dir, LegacyHashStoreFile))
		fsutil.SyncDir(t.dir)
	}
	return nil
}

// leaves returns the number of leaves whose stored hashes the file holds
// whole: the largest k with StoredHashCount(k) <= n.
func (t *treeFile) leaves() int64 {
	n := t.n.Load()
	lo, hi := t.base, max(t.base, n) // StoredHashCount(k) >= k
	for lo < hi {
		mid := lo + (hi-lo+1)/2
		if tlog.StoredHashCount(mid) <= n {
			lo = mid
		} else {
			hi = mid - 1
		}
	}
	return lo
}

// ReadHashes implements tlog.HashReader.
func (t *treeFile) ReadHashes(indexes []int64) ([]tlog.Hash, error) {
	t.mu.RLock()
	defer t.mu.RUnlock()
	return t.readHashes(indexes)
}

func (t *treeFile) readHashes(indexes []int64) ([]tlog.Hash, error) {
	out := make([]tlog.Hash, len(indexes))
	bi := t.baseIndex()
	for i, idx := range indexes {
		if idx < bi {
			h, ok := t.front[idx]
			if !ok {
				return nil, fmt.Errorf("stored hash %d is no longer kept: the log keeps what proofs from tree size %d on need (the size the witness last cosigned, else the newest checkpoint's, also when the witness has not cosigned for so long that its proof's hashes would pass an eighth of --spool-max-bytes)", idx, t.base)
			}
			out[i] = h
			continue
		}
		if n := t.n.Load(); idx >= n {
			if k := idx - n; k < int64(len(t.backlog)/tlog.HashSize) {
				copy(out[i][:], t.backlog[k*tlog.HashSize:])
				continue
			}
			if t.broken != nil {
				return nil, fmt.Errorf("stored hash %d not kept (have %d): %w", idx, n, t.broken)
			}
			return nil, fmt.Errorf("stored hash %d not written (have %d)", idx, n)
		}
		if _, err := t.f.ReadAt(out[i][:], t.hdr+(idx-bi)*tlog.HashSize); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// append adds stored hashes after the last one. A failed write does not
// move the end: the hashes are kept in the backlog (readable, and written
// with the next append, sync or rewrite), so that the next ones never land
// at the indexes of those that failed.
func (t *treeFile) append(hashes []tlog.Hash) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.broken != nil {
		return t.broken
	}
	for _, h := range hashes {
		t.backlog = append(t.backlog, h[:]...)
	}
	return t.flushBacklog()
}

// flushBacklog writes the backlog after the last stored hash. Called with
// t.mu held.
func (t *treeFile) flushBacklog() error {
	if len(t.backlog) == 0 {
		return nil
	}
	off := t.hdr + (t.n.Load()-t.baseIndex())*tlog.HashSize
	if _, err := t.f.WriteAt(t.backlog, off); err != nil {
		n := len(t.backlog) / tlog.HashSize
		if n > t.backlogMax {
			t.backlog = nil
			t.broken = fmt.Errorf("the log's tree state has been failing to write for %d stored hashes (%w); it is rebuilt from the spool's events at the next start", n, err)
			return t.broken
		}
		return fmt.Errorf("write %d stored hashes to the log's tree state (kept in memory, written with the next): %w", n, err)
	}
	t.n.Add(int64(len(t.backlog) / tlog.HashSize))
	t.size.Store(off + int64(len(t.backlog)))
	if cap(t.backlog) > 1<<20 {
		t.backlog = nil
	} else {
		t.backlog = t.backlog[:0]
	}
	return nil
}

// cut keeps the stored hashes of the first k leaves only (k >= base).
func (t *treeFile) cut(k int64) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	n := tlog.StoredHashCount(k)
	size := t.hdr + (n-t.baseIndex())*tlog.HashSize
	if err := t.f.Truncate(size); err != nil {
		return err
	}
	t.n.Store(n)
	t.size.Store(size)
	return nil
}

// reset starts the tree state of a new log, origin, empty.
func (t *treeFile) reset(origin string) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.writeNew(filepath.Join(t.dir, HashStoreFile), origin, 0, nil, nil)
}

// rebase rewrites the file to prove from size base on (see above), when
// that drops at least half of it and treeRewriteMin. The bulk is copied
// while the committer goes on appending; only the hashes it appended
// meanwhile are copied with the lock held, before the rename.
func (t *treeFile) rebase(base int64, origin string) (bool, error) {
	t.mu.RLock()
	if !t.worthRebasingLocked(base) {
		t.mu.RUnlock()
		return false, nil
	}
	front, err := t.readHashes(frontierIndexes(base))
	if err != nil {
		t.mu.RUnlock()
		return false, err
	}
	from := tlog.StoredHashCount(base)
	upTo := t.n.Load()
	body := make([]byte, (upTo-from)*tlog.HashSize)
	_, err = t.f.ReadAt(body, t.hdr+(from-t.baseIndex())*tlog.HashSize)
	t.mu.RUnlock()
	if err != nil {
		return false, err
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.origin != origin && !t.legacy {
		return false, nil // a new epoch meanwhile
	}
	if t.broken != nil {
		return false, t.broken
	}
	if n := t.n.Load(); n > upTo {
		more := make([]byte, (n-upTo)*tlog.HashSize)
		if _, err := t.f.ReadAt(more, t.hdr+(upTo-t.baseIndex())*tlog.HashSize); err != nil {
			return false, err
		}
		body = append(body, more...)
	}
	// Hashes whose write failed go into the new file.
	return true, t.writeNew(filepath.Join(t.dir, HashStoreFile), origin, base, front, append(body, t.backlog...))
}

// worthRebasing reports whether rebase(base) would rewrite the file: it
// would drop at least treeRewriteMin and at least what it keeps, so that
// the bytes rewritten stay proportional to the bytes appended.
func (t *treeFile) worthRebasing(base int64) bool {
	t.mu.RLock()
	defer t.mu.RUnlock()
	return t.worthRebasingLocked(base)
}

func (t *treeFile) worthRebasingLocked(base int64) bool {
	if base <= t.base || tlog.StoredHashCount(base) > t.n.Load() || t.broken != nil {
		return false
	}
	drop := (tlog.StoredHashCount(base) - t.baseIndex()) * tlog.HashSize
	keep := (t.n.Load() - tlog.StoredHashCount(base)) * tlog.HashSize
	return drop >= treeRewriteMin && drop >= keep
}

// sync writes the backlog and fsyncs the file (before a spool segment is
// deleted: see above). It fails while a hash is not in the file.
func (t *treeFile) sync() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.broken != nil {
		return t.broken
	}
	if err := t.flushBacklog(); err != nil {
		return err
	}
	return t.f.Sync()
}

func (t *treeFile) close() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.f.Close()
}

// IsHashStoreFile reports whether name is the stored hashes file, or the
// previous release's, which a spool counts as the log keeps them
// (Log.HashBytes) rather than as other files.
func IsHashStoreFile(name string) bool {
	return name == HashStoreFile || name == LegacyHashStoreFile
}
