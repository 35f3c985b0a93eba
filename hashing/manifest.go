package hashing

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"reflect"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/zeebo/blake3"
)

// Manifest lists the files of a model directory with their sizes and
// digests, and the model checksum that commits to all of them. One manifest
// covers one directory: a base model and a LoRA adapter each get their own.
//
// # Which files
//
// BuildManifest walks the directory recursively, in a deterministic order,
// following symbolic links to files and to directories (a Hugging Face cache
// snapshot is a tree of links into ../../blobs/). Every entry whose name
// begins with "." is skipped with everything below it (.git, .cache,
// .huggingface). A regular file is listed when its name matches one of
//
//	*.safetensors *.bin *.gguf *.pt *.pth      weights
//	*.json                                     configs, tokenizer, shard index, adapter config
//	*.model *.tiktoken merges.txt vocab.txt    tokenizer vocabularies (tokenizer.model, spiece.model)
//	*.jinja                                    chat templates
//	*.py                                       code a model loads with trust_remote_code
//
// Names are matched case-sensitively. Everything else (README.md, LICENSE,
// images) does not change what the model computes and is left out. A link
// with a model file's name that does not resolve is an error, as is a link
// to a directory that contains it (a loop). A path
// is the file's path relative to the directory, names joined by "/"; it must
// be valid UTF-8 without control characters, so that every line below is
// unambiguous.
//
// # Model checksum
//
// The canonical text of a manifest is one line per file, sorted by path as
// byte strings (the order of LC_ALL=C sort), each line
//
//	<sha256>  <blake3>  <size>  <path>\n
//
// where <sha256> and <blake3> are the file's digests in lowercase hex (64
// characters each), <size> its length in bytes in decimal without leading
// zeros, fields are separated by two spaces, and every line, the last
// included, ends with a single "\n". The model checksum is "blake3:"
// followed by the lowercase hex BLAKE3 of the canonical text. The SHA-256 of
// a file stored with Git LFS is its LFS oid, the sha256 a Hugging Face file
// page shows.
//
// "auditproxy checksum DIR" prints the canonical text and then a line with
// the checksum, so the last line can be checked against the others with
//
//	auditproxy checksum DIR | sed '$d' | b3sum --no-names
//
// and the whole checksum recomputed without auditproxy (GNU coreutils and
// b3sum) with
//
//	cd DIR && find -L . -mindepth 1 -name '.*' -prune -o -type f \( \
//	    -name '*.safetensors' -o -name '*.bin' -o -name '*.gguf' -o -name '*.pt' -o \
//	    -name '*.pth' -o -name '*.json' -o -name '*.model' -o -name '*.tiktoken' -o \
//	    -name merges.txt -o -name vocab.txt -o -name '*.jinja' -o -name '*.py' \) -print |
//	  sed 's|^\./||' | LC_ALL=C sort | while IFS= read -r f; do
//	    printf '%s  %s  %s  %s\n' "$(sha256sum <"$f" | cut -c1-64)" \
//	      "$(b3sum --no-names <"$f")" "$(stat -L -c %s -- "$f")" "$f"
//	  done | b3sum --no-names
//
// which prints the hex that follows "blake3:".
type Manifest struct {
	// Files in canonical order: sorted by Path as byte strings.
	Files []ManifestFile `json:"files"`
	// Checksum is ManifestChecksum(Files).
	Checksum string `json:"checksum"`

	// What BuildManifest did, not part of the manifest itself:

	// HashedFiles and HashedBytes count the files read and hashed; the
	// others' digests came from the cache.
	HashedFiles int   `json:"-"`
	HashedBytes int64 `json:"-"`
	// CacheErr is set when the cache could not be read (it was then
	// ignored and every file hashed) or written. The manifest is right
	// regardless.
	CacheErr error `json:"-"`
}

// ManifestFile is one file of a Manifest.
type ManifestFile struct {
	Path   string `json:"path"`   // relative to the model directory, "/"-separated
	Size   int64  `json:"size"`   // in bytes
	SHA256 string `json:"sha256"` // lowercase hex
	BLAKE3 string `json:"blake3"` // lowercase hex
}

// ManifestOptions configures BuildManifest. The zero value hashes every file
// on GOMAXPROCS workers, with no cache and no progress reports.
type ManifestOptions struct {
	// CacheFile, if set, is a JSON file that remembers the digests of files
	// by absolute path, size, modification time, change time, device and
	// inode, so that a later build re-hashes only files whose key changed.
	// It is created (mode 0600) if missing and replaced atomically (temp
	// file, fsync, rename); one file serves several model directories, and
	// concurrent builds in one process keep each other's entries (two
	// processes may drop each other's new entries: a later re-hash, never
	// a wrong digest). A cache that cannot be read or parsed is ignored and
	// reported in Manifest.CacheErr. The cache is trusted: whoever can
	// write it can make a build report digests a file does not have, so
	// keep it where the weights' owner alone can write (the data dir).
	CacheFile string
	// Progress, if set, is called from a single goroutine about every
	// ManifestProgressInterval while files are hashed, and once more with
	// Done set when BuildManifest returns, successfully or not.
	Progress func(ManifestProgress)
	// Workers is the number of files hashed at once; 0 means GOMAXPROCS.
	// While fewer than GOMAXPROCS/2 files are being hashed, each takes a
	// second core (SHA-256 on one, BLAKE3 on the other).
	Workers int

	// open replaces os.Open in tests.
	open func(name string) (io.ReadCloser, error)
}

// ManifestProgressInterval is how often BuildManifest reports progress.
const ManifestProgressInterval = 200 * time.Millisecond

// ManifestProgress reports how far BuildManifest has got. Files found in the
// cache count as done from the start.
type ManifestProgress struct {
	FilesDone, Files int
	BytesDone, Bytes int64
	// Done is set on the last report.
	Done bool
}

// manifestBufferSize is the read size: large enough that the per-call cost of
// both hash functions and of the read is negligible, small enough to stay in
// L2/L3 cache between the two passes over it.
const manifestBufferSize = 1 << 20

// IsModelFile reports whether a file named name (a base name, without
// directory) is part of a model manifest.
func IsModelFile(name string) bool {
	switch name {
	case "merges.txt", "vocab.txt":
		return true
	}
	switch path.Ext(name) {
	case ".safetensors", ".bin", ".gguf", ".pt", ".pth", ".json", ".model", ".tiktoken", ".jinja", ".py":
		return true
	}
	return false
}

// modelEntry is a file found by the walk.
type modelEntry struct {
	rel  string // manifest path
	name string // path as the caller would write it: dir joined with rel
	abs  string // absolute path: the cache key
	key  fileKey
}

// BuildManifest lists and hashes the model files under dir (see Manifest for
// which). Each file is read once, feeding SHA-256 and BLAKE3 from the same
// buffer; files are hashed in parallel, largest first. It fails if dir is
// not a directory, holds no model files, or a model file cannot be read (the
// error names the file), and when ctx is done.
func BuildManifest(ctx context.Context, dir string, opts ManifestOptions) (m *Manifest, err error) {
	st, err := os.Stat(dir)
	if err != nil {
		return nil, fmt.Errorf("model directory: %w", err)
	}
	if !st.IsDir() {
		return nil, fmt.Errorf("model directory %s is not a directory", dir)
	}
	absDir, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("model directory %s: %w", dir, err)
	}
	var entries []modelEntry
	if err := walkModelDir(dir, absDir, "", []fs.FileInfo{st}, &entries); err != nil {
		return nil, err
	}
	if len(entries) == 0 {
		return nil, fmt.Errorf("model directory %s holds no model files (*.safetensors, *.bin, *.gguf, *.pt, *.pth, *.json, ...)", dir)
	}
	slices.SortFunc(entries, func(a, b modelEntry) int { return strings.Compare(a.rel, b.rel) })

	m = &Manifest{Files: make([]ManifestFile, len(entries))}
	var cache map[string]cacheEntry
	if opts.CacheFile != "" {
		cache, m.CacheErr = loadManifestCache(opts.CacheFile)
	}
	var jobs []int // indexes into entries of the files to hash
	var total, cachedBytes int64
	for i, e := range entries {
		total += e.key.Size
		m.Files[i] = ManifestFile{Path: e.rel, Size: e.key.Size}
		if c, ok := cache[e.abs]; ok && c.fileKey == e.key && c.valid() {
			m.Files[i].SHA256, m.Files[i].BLAKE3 = c.SHA256, c.BLAKE3
			cachedBytes += e.key.Size
			continue
		}
		jobs = append(jobs, i)
	}
	// Largest first, so that the longest files start early and the pool
	// does not end waiting on one big file begun last.
	slices.SortStableFunc(jobs, func(a, b int) int { return cmp.Compare(entries[b].key.Size, entries[a].key.Size) })

	var filesDone, bytesDone atomic.Int64
	filesDone.Store(int64(len(entries) - len(jobs)))
	bytesDone.Store(cachedBytes)
	report := func(done bool) {
		opts.Progress(ManifestProgress{FilesDone: int(filesDone.Load()), Files: len(entries),
			BytesDone: bytesDone.Load(), Bytes: total, Done: done})
	}
	if opts.Progress != nil {
		stop, stopped := make(chan struct{}), make(chan struct{})
		go func() {
			defer close(stopped)
			t := time.NewTicker(ManifestProgressInterval)
			defer t.Stop()
			for {
				select {
				case <-t.C:
					report(false)
				case <-stop:
					return
				}
			}
		}()
		defer func() {
			close(stop)
			<-stopped
			report(true)
		}()
	}

	hashed := make([]bool, len(entries))
	keys := make([]fileKey, len(entries))
	err = hashModelFiles(ctx, entries, jobs, opts, m.Files, hashed, keys, &filesDone, &bytesDone)

	var newEntries map[string]cacheEntry
	for i, ok := range hashed {
		if !ok {
			continue
		}
		m.HashedFiles++
		m.HashedBytes += m.Files[i].Size
		if newEntries == nil {
			newEntries = map[string]cacheEntry{}
		}
		newEntries[entries[i].abs] = cacheEntry{keys[i], m.Files[i].SHA256, m.Files[i].BLAKE3}
	}
	if opts.CacheFile != "" {
		// After a failure, keep what was hashed, so that a retry resumes;
		// drop the entries of files that are gone only after a success.
		var keep map[string]bool
		if err == nil {
			keep = make(map[string]bool, len(entries))
			for _, e := range entries {
				keep[e.abs] = true
			}
		}
		if werr := saveManifestCache(opts.CacheFile, absDir, keep, newEntries, m.CacheErr != nil); werr != nil {
			m.CacheErr = errors.Join(m.CacheErr, werr)
		}
	}
	if err != nil {
		return nil, err
	}
	m.Checksum = ManifestChecksum(m.Files)
	return m, nil
}

// walkModelDir appends the model files under root/rel to out, in order of
// name within each directory. ancestors are the directories from root down
// to rel, to detect a symbolic link that loops back.
func walkModelDir(root, absRoot, rel string, ancestors []fs.FileInfo, out *[]modelEntry) error {
	dir := filepath.Join(root, filepath.FromSlash(rel))
	des, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("read model directory %s: %w", dir, err)
	}
	for _, de := range des {
		if strings.HasPrefix(de.Name(), ".") {
			continue
		}
		p := path.Join(rel, de.Name())
		name := filepath.Join(root, filepath.FromSlash(p))
		typ := de.Type()
		var fi fs.FileInfo
		if typ&fs.ModeSymlink != 0 || typ.IsDir() || IsModelFile(de.Name()) {
			if fi, err = os.Stat(name); err != nil {
				if typ&fs.ModeSymlink != 0 && !IsModelFile(de.Name()) {
					continue // a dangling link that could not be part of the model
				}
				return fmt.Errorf("model file %s: %w", name, err)
			}
			typ = fi.Mode().Type()
		}
		switch {
		case typ.IsDir():
			for _, a := range ancestors {
				if os.SameFile(a, fi) {
					return fmt.Errorf("model directory %s: symbolic link loop: it is %s again", name, filepath.Join(root, filepath.FromSlash(rel)))
				}
			}
			if err := walkModelDir(root, absRoot, p, append(ancestors, fi), out); err != nil {
				return err
			}
		case typ.IsRegular() && IsModelFile(de.Name()):
			if err := checkManifestPath(p); err != nil {
				return fmt.Errorf("model file %q: %w", name, err)
			}
			*out = append(*out, modelEntry{rel: p, name: name, abs: filepath.Join(absRoot, filepath.FromSlash(p)), key: statKey(fi)})
		}
	}
	return nil
}

// checkManifestPath rejects a path that would make a manifest line
// ambiguous.
func checkManifestPath(p string) error {
	if !utf8.ValidString(p) {
		return errors.New("path is not valid UTF-8; rename the file")
	}
	for _, r := range p {
		if r < 0x20 || r == 0x7f {
			return fmt.Errorf("path contains the control character %q; rename the file", r)
		}
	}
	return nil
}

// hashModelFiles hashes entries[jobs[...]] on a pool of workers, filling
// files[i] digests, hashed[i] and keys[i] (the file's key when it was read).
// The first failure stops the others.
func hashModelFiles(ctx context.Context, entries []modelEntry, jobs []int, opts ManifestOptions,
	files []ManifestFile, hashed []bool, keys []fileKey, filesDone, bytesDone *atomic.Int64) error {
	if len(jobs) == 0 {
		return ctx.Err()
	}
	open := opts.open
	if open == nil {
		open = func(name string) (io.ReadCloser, error) { return os.Open(name) }
	}
	workers := opts.Workers
	if workers <= 0 {
		workers = runtime.GOMAXPROCS(0)
	}
	workers = min(workers, len(jobs))
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		next     atomic.Int64
		active   atomic.Int64 // files being hashed
		wg       sync.WaitGroup
		mu       sync.Mutex
		firstErr error
	)
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			h := newDualHasher(&active)
			defer h.close()
			for {
				j := int(next.Add(1) - 1)
				if j >= len(jobs) || ctx.Err() != nil {
					return
				}
				i := jobs[j]
				active.Add(1)
				key, err := hashModelFile(ctx, open, entries[i].name, h, bytesDone)
				active.Add(-1)
				if err != nil {
					mu.Lock()
					// A real failure wins over the cancellation it caused.
					if firstErr == nil || errors.Is(firstErr, context.Canceled) && !errors.Is(err, context.Canceled) {
						firstErr = err
					}
					mu.Unlock()
					cancel()
					return
				}
				var sum [32]byte
				files[i].SHA256 = hex.EncodeToString(h.sh.Sum(sum[:0]))
				files[i].BLAKE3 = hex.EncodeToString(h.b3.Sum(sum[:0]))
				files[i].Size = key.Size
				hashed[i], keys[i] = true, key
				filesDone.Add(1)
			}
		}()
	}
	wg.Wait()
	if firstErr != nil {
		return firstErr
	}
	return ctx.Err()
}

// hashModelFile reads the file name once into h and returns its key. It
// fails if the file changed while it was read.
func hashModelFile(ctx context.Context, open func(string) (io.ReadCloser, error), name string, h *dualHasher,
	bytesDone *atomic.Int64) (fileKey, error) {
	before, err := os.Stat(name)
	if err != nil {
		return fileKey{}, fmt.Errorf("model file %s: %w", name, err)
	}
	f, err := open(name)
	if err != nil {
		return fileKey{}, fmt.Errorf("model file %s: %w", name, err)
	}
	defer f.Close()
	n, err := h.hash(ctx, f, bytesDone)
	if err != nil {
		if ctx.Err() != nil {
			return fileKey{}, fmt.Errorf("hash model file %s: %w", name, err)
		}
		return fileKey{}, fmt.Errorf("read model file %s: %w", name, err)
	}
	after, err := os.Stat(name)
	if err != nil {
		return fileKey{}, fmt.Errorf("model file %s: %w", name, err)
	}
	key := statKey(before)
	if key != statKey(after) || n != key.Size {
		return fileKey{}, fmt.Errorf("model file %s changed while it was hashed (read %d bytes, size %d then %d); hash again when it is complete",
			name, n, before.Size(), after.Size())
	}
	return key, nil
}

// dualHasher computes the SHA-256 and the BLAKE3 of a stream in one read
// pass: each block read is written to both.
//
// While fewer files are being hashed than half the cores (the last large
// file, a single-file GGUF model), a helper goroutine runs BLAKE3 on a block
// while the reading goroutine runs SHA-256 on it, so that the file is hashed
// at about the speed of SHA-256 alone rather than of both in turn; two
// buffers alternate, the next read overlapping BLAKE3 of the previous block.
// (On 2 cores, one 256 MiB file: about 1.55 GB/s instead of 1.25.) When
// every core has a file, both run on the reading goroutine, which gains
// nothing from a handover and keeps the block in its core's cache between
// the two passes.
type dualHasher struct {
	bufs   [2][]byte
	sh     hash.Hash
	b3     *blake3.Hasher
	blocks chan []byte   // to the BLAKE3 goroutine
	done   chan struct{} // from it: a block was hashed
	// active counts the files being hashed, by all workers; cores is
	// GOMAXPROCS.
	active *atomic.Int64
	cores  int64
}

func newDualHasher(active *atomic.Int64) *dualHasher {
	h := &dualHasher{sh: sha256.New(), b3: blake3.New(), blocks: make(chan []byte), done: make(chan struct{}),
		active: active, cores: int64(runtime.GOMAXPROCS(0))}
	for i := range h.bufs {
		h.bufs[i] = make([]byte, manifestBufferSize)
	}
	go func() {
		for p := range h.blocks {
			h.b3.Write(p)
			h.done <- struct{}{}
		}
	}()
	return h
}

// close ends the BLAKE3 goroutine.
func (h *dualHasher) close() { close(h.blocks) }

// hash resets both hashes, then writes r to its end into them. It returns
// the number of bytes read.
func (h *dualHasher) hash(ctx context.Context, r io.Reader, bytesDone *atomic.Int64) (n int64, err error) {
	h.sh.Reset()
	h.b3.Reset()
	pending := false // the BLAKE3 goroutine holds a block
	defer func() {
		if pending { // a buffer must not be reused while BLAKE3 reads it
			<-h.done
		}
	}()
	for k := 0; ; k ^= 1 {
		if err := ctx.Err(); err != nil {
			return n, err
		}
		m, rerr := r.Read(h.bufs[k])
		if m > 0 {
			p := h.bufs[k][:m]
			if pending { // BLAKE3 takes the blocks in order
				<-h.done
				pending = false
			}
			if 2*h.active.Load() <= h.cores {
				h.blocks <- p
				pending = true
			} else {
				h.b3.Write(p)
			}
			h.sh.Write(p)
			n += int64(m)
			bytesDone.Add(int64(m))
		}
		if rerr == io.EOF {
			return n, nil
		}
		if rerr != nil {
			return n, rerr
		}
	}
}

// ManifestChecksum returns the model checksum of files: "blake3:" and the
// hex BLAKE3 of their canonical text (see Manifest). files need not be
// sorted.
func ManifestChecksum(files []ManifestFile) string {
	b3 := blake3.New()
	var line []byte
	for _, f := range sortedFiles(files) {
		line = appendCanonicalLine(line[:0], f)
		b3.Write(line)
	}
	var sum [32]byte
	return FormatDigest(BLAKE3, b3.Sum(sum[:0]))
}

// AppendCanonical appends the canonical text of m (see Manifest) to dst.
func (m *Manifest) AppendCanonical(dst []byte) []byte {
	for _, f := range sortedFiles(m.Files) {
		dst = appendCanonicalLine(dst, f)
	}
	return dst
}

// AppendSHA256Sum appends to dst the lines "<sha256>  <path>\n" that
// "sha256sum -c", run in the model directory, checks. As sha256sum writes
// them, a path containing a backslash is written with each backslash doubled
// and the line starts with a backslash.
func (m *Manifest) AppendSHA256Sum(dst []byte) []byte {
	for _, f := range sortedFiles(m.Files) {
		p := f.Path
		if strings.Contains(p, `\`) {
			dst = append(dst, '\\')
			p = strings.ReplaceAll(p, `\`, `\\`)
		}
		dst = append(dst, f.SHA256...)
		dst = append(dst, "  "...)
		dst = append(dst, p...)
		dst = append(dst, '\n')
	}
	return dst
}

func appendCanonicalLine(dst []byte, f ManifestFile) []byte {
	dst = append(dst, f.SHA256...)
	dst = append(dst, "  "...)
	dst = append(dst, f.BLAKE3...)
	dst = append(dst, "  "...)
	dst = strconv.AppendInt(dst, f.Size, 10)
	dst = append(dst, "  "...)
	dst = append(dst, f.Path...)
	return append(dst, '\n')
}

func sortedFiles(files []ManifestFile) []ManifestFile {
	less := func(a, b ManifestFile) int { return strings.Compare(a.Path, b.Path) }
	if slices.IsSortedFunc(files, less) {
		return files
	}
	files = slices.Clone(files)
	slices.SortFunc(files, less)
	return files
}

// fileKey identifies a version of a file: if any field differs, the file may
// have changed and is hashed again.
type fileKey struct {
	Size    int64  `json:"size"`
	MtimeNS int64  `json:"mtime_ns"`
	CtimeNS int64  `json:"ctime_ns"`
	Dev     uint64 `json:"dev"`
	Ino     uint64 `json:"ino"`
}

// statKey returns the key of fi. The change time, device and inode come
// from the platform's stat structure where it has them (Linux, macOS, the
// BSDs); elsewhere they are zero, and size and modification time alone key
// the file. The change time catches a rewrite whose modification time was
// set back.
func statKey(fi fs.FileInfo) fileKey {
	k := fileKey{Size: fi.Size(), MtimeNS: fi.ModTime().UnixNano()}
	v := reflect.ValueOf(fi.Sys())
	if v.Kind() == reflect.Pointer && !v.IsNil() {
		v = v.Elem()
	}
	if v.Kind() != reflect.Struct {
		return k
	}
	k.Dev, k.Ino = uintField(v, "Dev"), uintField(v, "Ino")
	for _, name := range []string{"Ctim", "Ctimespec"} { // Linux and OpenBSD; macOS and the other BSDs
		if t := v.FieldByName(name); t.IsValid() && t.Kind() == reflect.Struct {
			k.CtimeNS = int64(uintField(t, "Sec"))*1e9 + int64(uintField(t, "Nsec"))
			break
		}
	}
	return k
}

// uintField returns the integer field name of the struct v, or 0.
func uintField(v reflect.Value, name string) uint64 {
	f := v.FieldByName(name)
	switch {
	case !f.IsValid():
		return 0
	case f.CanInt():
		return uint64(f.Int())
	case f.CanUint():
		return f.Uint()
	}
	return 0
}

// manifestCacheVersion changes when the cache's meaning changes; a cache of
// another version is ignored.
const manifestCacheVersion = 1

type manifestCacheFile struct {
	Version int                   `json:"version"`
	Files   map[string]cacheEntry `json:"files"` // by absolute path
}

type cacheEntry struct {
	fileKey
	SHA256 string `json:"sha256"`
	BLAKE3 string `json:"blake3"`
}

func (c cacheEntry) valid() bool { return isHexDigest(c.SHA256) && isHexDigest(c.BLAKE3) }

func isHexDigest(s string) bool {
	if len(s) != 64 {
		return false
	}
	for i := range len(s) {
		if c := s[i]; !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}

// manifestCacheMu serializes the read-merge-write of cache files, so that
// builds sharing one (a base model and its adapter) keep each other's
// entries.
var manifestCacheMu sync.Mutex

// loadManifestCache reads the cache at path. A missing file is an empty
// cache.
func loadManifestCache(path string) (map[string]cacheEntry, error) {
	manifestCacheMu.Lock()
	defer manifestCacheMu.Unlock()
	return readManifestCache(path)
}

func readManifestCache(path string) (map[string]cacheEntry, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read manifest cache: %w", err)
	}
	var c manifestCacheFile
	if err := json.Unmarshal(b, &c); err != nil {
		return nil, fmt.Errorf("manifest cache %s is corrupt, ignored it: %w", path, err)
	}
	if c.Version != manifestCacheVersion {
		return nil, fmt.Errorf("manifest cache %s has version %d, want %d; ignored it", path, c.Version, manifestCacheVersion)
	}
	return c.Files, nil
}

// saveManifestCache merges into the cache at path: it drops the entries
// under absDir that keep lacks (all of them are kept when keep is nil), then
// adds add. It writes only when that changes the cache, or when force is
// set (the cache could not be read). The file is replaced atomically: a temp
// file in the same directory, fsynced, renamed over it.
func saveManifestCache(path, absDir string, keep map[string]bool, add map[string]cacheEntry, force bool) error {
	manifestCacheMu.Lock()
	defer manifestCacheMu.Unlock()
	files, err := readManifestCache(path)
	if err != nil || files == nil {
		files, force = map[string]cacheEntry{}, force || err != nil
	}
	changed := force || len(add) > 0
	if keep != nil {
		prefix := absDir + string(filepath.Separator)
		for p := range files {
			if strings.HasPrefix(p, prefix) && !keep[p] {
				delete(files, p)
				changed = true
			}
		}
	}
	if !changed {
		return nil
	}
	for p, e := range add {
		files[p] = e
	}
	b, err := json.Marshal(manifestCacheFile{Version: manifestCacheVersion, Files: files})
	if err != nil {
		return fmt.Errorf("write manifest cache: %w", err)
	}
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("write manifest cache: %w", err)
	}
	tmp, err := os.CreateTemp(dir, ".manifest-cache-*.tmp")
	if err != nil {
		return fmt.Errorf("write manifest cache: %w", err)
	}
	_, err = tmp.Write(append(b, '\n'))
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), path)
	}
	if err != nil {
		os.Remove(tmp.Name())
		return fmt.Errorf("write manifest cache %s: %w", path, err)
	}
	// Make the rename durable; not every platform can sync a directory.
	if d, err := os.Open(dir); err == nil {
		d.Sync()
		d.Close()
	}
	return nil
}
