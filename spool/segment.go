package spool

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"github.com/klauspost/compress/zstd"
)

// A segment file is
//
//	segmentMagic (8 bytes)
//	frame*
//
// and a frame is
//
//	length  uint32, little endian: the payload's size in bytes
//	crc     uint32, little endian: CRC-32C (Castagnoli) of the payload
//	payload length bytes: one event as a JSON object
//
// A plain segment file may be longer than its frames: it is preallocated
// (see prealloc.go), and the space not yet written reads as zero bytes. A
// frame's length is never 0, so a frame boundary from which every byte to
// the end of the file is zero is the segment's logical end, not a torn
// tail nor damage; zero bytes followed by anything else are damage, as any
// bytes that are not a frame. The frames the spool writes end with the
// payload's closing brace, so the logical end is also where the file's
// trailing run of zero bytes starts (zeroTailStart).
//
// A sealed segment is compressed to a single zstd stream of the same bytes,
// up to the logical end (NAME.seg.zst): it never holds the unwritten
// space. Offsets always count uncompressed bytes, so a position in a
// segment stays valid when it is sealed.
const (
	segmentMagic    = "apspool\x01"
	frameHeaderSize = 8
	// maxRecordSize bounds one event, so that a corrupt length field cannot
	// make a reader allocate without limit.
	maxRecordSize = 256 << 20

	segmentExt    = ".seg"
	sealedExt     = ".seg.zst"
	tmpExt        = ".tmp"
	quarantineExt = ".corrupt"
	// damagedExt marks a damaged segment file moved aside, kept but no
	// longer read: NAME.seg.zst.damaged (see Spool.quarantine).
	damagedExt = ".damaged"
)

var crcTable = crc32.MakeTable(crc32.Castagnoli)

// Pos is a position in the spool: a segment and a byte offset in its
// uncompressed contents. Positions order records: a record's end position is
// where the next one starts.
type Pos struct {
	Segment uint64 `json:"segment"`
	Offset  int64  `json:"offset"`
}

// Less reports whether p comes before q.
func (p Pos) Less(q Pos) bool {
	return p.Segment < q.Segment || (p.Segment == q.Segment && p.Offset < q.Offset)
}

func (p Pos) String() string { return fmt.Sprintf("%d:%d", p.Segment, p.Offset) }

func segmentName(id uint64) string { return fmt.Sprintf("%020d", id) }

// appendFrame appends payload as one frame.
func appendFrame(dst, payload []byte) []byte {
	dst = binary.LittleEndian.AppendUint32(dst, uint32(len(payload)))
	dst = binary.LittleEndian.AppendUint32(dst, crc32.Checksum(payload, crcTable))
	return append(dst, payload...)
}

// errCorruptFrame reports a frame whose header or checksum is wrong.
type errCorruptFrame struct {
	Offset int64
	Reason string
}

func (e *errCorruptFrame) Error() string {
	return fmt.Sprintf("corrupt record at offset %d: %s", e.Offset, e.Reason)
}

// parseFrame reads the frame at the start of b, found at offset off. It
// returns the payload and the frame's size, or size 0 when b holds only part
// of a frame (more bytes may follow), or an errCorruptFrame.
func parseFrame(b []byte, off int64) (payload []byte, size int, err error) {
	if len(b) < frameHeaderSize {
		return nil, 0, nil
	}
	n := binary.LittleEndian.Uint32(b)
	if n == 0 || n > maxRecordSize {
		return nil, 0, &errCorruptFrame{off, fmt.Sprintf("length %d out of range", n)}
	}
	if len(b) < frameHeaderSize+int(n) {
		return nil, 0, nil
	}
	payload = b[frameHeaderSize : frameHeaderSize+int(n)]
	if crc32.Checksum(payload, crcTable) != binary.LittleEndian.Uint32(b[4:]) {
		return nil, 0, &errCorruptFrame{off, "checksum mismatch"}
	}
	return payload, frameHeaderSize + int(n), nil
}

// segmentReader reads the frames of one segment, sealed or not, in order.
type segmentReader struct {
	id     uint64
	sealed bool
	f      *os.File
	plain  *boundedFile  // plain only
	dec    *zstd.Decoder // sealed only
	r      *bufio.Reader // over plain or dec
	off    int64         // of the next frame
	hdr    [frameHeaderSize]byte
	buf    []byte
}

// openSegment opens segment id in dir, preferring the plain file: a segment
// is compressed under a new name before its plain file is removed, so one of
// the two always exists.
func openSegment(dir string, id uint64) (*segmentReader, error) {
	base := filepath.Join(dir, segmentName(id))
	f, err := os.Open(base + segmentExt)
	sealed := false
	if errors.Is(err, os.ErrNotExist) {
		f, err = os.Open(base + sealedExt)
		sealed = true
	}
	if err != nil {
		return nil, err
	}
	return newSegmentReader(f, id, sealed)
}

// newSegmentReader reads the segment in f, which it takes over.
func newSegmentReader(f *os.File, id uint64, sealed bool) (*segmentReader, error) {
	var err error
	sr := &segmentReader{id: id, sealed: sealed}
	sr.f = f
	if sr.sealed {
		sr.dec, err = zstd.NewReader(f, zstd.WithDecoderConcurrency(1), zstd.WithDecoderLowmem(true))
		if err != nil {
			f.Close()
			return nil, fmt.Errorf("segment %s: %w", segmentName(id), err)
		}
		sr.r = bufio.NewReaderSize(sr.dec, 64<<10)
	} else {
		sr.plain = &boundedFile{f: f, limit: math.MaxInt64}
		sr.r = bufio.NewReaderSize(sr.plain, 64<<10)
	}
	var magic [len(segmentMagic)]byte
	if _, err := io.ReadFull(sr.r, magic[:]); err != nil || string(magic[:]) != segmentMagic {
		sr.Close()
		if err == nil || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("segment %s: not a spool segment (bad header)", segmentName(id))
		}
		return nil, fmt.Errorf("segment %s: %w", segmentName(id), err)
	}
	sr.off = int64(len(segmentMagic))
	return sr, nil
}

// skipTo advances to offset off, which must be a frame boundary at or after
// the current one.
func (sr *segmentReader) skipTo(off int64) error {
	if off < sr.off {
		return fmt.Errorf("segment %s: cannot seek back to %d from %d", segmentName(sr.id), off, sr.off)
	}
	if !sr.sealed {
		sr.plain.off = off
		sr.r.Reset(sr.plain)
		sr.off = off
		return nil
	}
	n, err := sr.r.Discard(int(off - sr.off))
	sr.off += int64(n)
	if err != nil {
		return fmt.Errorf("segment %s: seek to %d: %w", segmentName(sr.id), off, err)
	}
	return nil
}

// next returns the next record's payload, valid until the following call,
// or io.EOF at a clean end. A frame cut short by the end of the file is
// io.ErrUnexpectedEOF (a torn tail, or a frame still being written).
func (sr *segmentReader) next() ([]byte, error) {
	if _, err := io.ReadFull(sr.r, sr.hdr[:]); err != nil {
		if err == io.EOF {
			return nil, io.EOF
		}
		return nil, sr.wrap(err)
	}
	n := binary.LittleEndian.Uint32(sr.hdr[:])
	if n == 0 && sr.unwrittenFrom(sr.off) {
		// The preallocated space after the last frame. The stream is put
		// back at the frame boundary: a later call reads on from there.
		sr.plain.off = sr.off
		sr.r.Reset(sr.plain)
		return nil, io.EOF
	}
	if n == 0 || n > maxRecordSize {
		return nil, &errCorruptFrame{sr.off, fmt.Sprintf("length %d out of range", n)}
	}
	if err := sr.readPayload(int(n)); err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return nil, sr.wrap(err)
	}
	if crc32.Checksum(sr.buf, crcTable) != binary.LittleEndian.Uint32(sr.hdr[4:]) {
		return nil, &errCorruptFrame{sr.off, "checksum mismatch"}
	}
	sr.off += frameHeaderSize + int64(n)
	return sr.buf, nil
}

// unwrittenFrom reports whether every byte of a plain segment from offset
// off to the end of the file (or the reader's limit) is zero: the space
// preallocated and not yet written. A sealed segment holds no such space.
func (sr *segmentReader) unwrittenFrom(off int64) bool {
	if sr.plain == nil {
		return false
	}
	zero, err := zeroFrom(sr.f, off, sr.plain.limit)
	return err == nil && zero
}

// zeroBlock is a run of zero bytes to compare with.
var zeroBlock [64 << 10]byte

// zeroTailStart returns where the run of zero bytes that data ends with
// starts: len(data) when its last byte is not zero, 0 when all are zero.
func zeroTailStart(data []byte) int {
	end := len(data)
	for end > 0 {
		n := min(end, len(zeroBlock))
		if !bytes.Equal(data[end-n:end], zeroBlock[:n]) {
			break
		}
		end -= n
	}
	for end > 0 && data[end-1] == 0 {
		end--
	}
	return end
}

// zeroFrom reports whether the bytes of f from off to its end, or to limit
// if that comes first, are all zero.
func zeroFrom(f *os.File, off, limit int64) (bool, error) {
	buf := make([]byte, len(zeroBlock))
	for off < limit {
		b := buf[:min(int64(len(buf)), limit-off)]
		n, err := f.ReadAt(b, off)
		if !bytes.Equal(b[:n], zeroBlock[:n]) {
			return false, nil
		}
		off += int64(n)
		if err == io.EOF {
			return true, nil
		}
		if err != nil {
			return false, err
		}
	}
	return true, nil
}

// fileContentEnd returns where the run of zero bytes that f ends with
// starts (see zeroTailStart), reading it from its end.
func fileContentEnd(f *os.File) (int64, error) {
	fi, err := f.Stat()
	if err != nil {
		return 0, err
	}
	end := fi.Size()
	buf := make([]byte, 256<<10)
	for end > 0 {
		b := buf[:min(end, int64(len(buf)))]
		if _, err := f.ReadAt(b, end-int64(len(b))); err != nil {
			return 0, err
		}
		if k := zeroTailStart(b); k > 0 {
			return end - int64(len(b)) + int64(k), nil
		}
		end -= int64(len(b))
	}
	return 0, nil
}

// limit stops reading a plain segment at offset n, so that bytes past the
// committed end are not even buffered: a failed commit is cut off and
// written over.
func (sr *segmentReader) limit(n int64) {
	if sr.plain != nil {
		sr.plain.limit = n
	}
}

// boundedFile reads a file sequentially up to a limit that may grow.
type boundedFile struct {
	f     *os.File
	off   int64
	limit int64
}

func (b *boundedFile) Read(p []byte) (int, error) {
	if b.off >= b.limit {
		return 0, io.EOF
	}
	if rest := b.limit - b.off; int64(len(p)) > rest {
		p = p[:rest]
	}
	n, err := b.f.ReadAt(p, b.off)
	b.off += int64(n)
	if n > 0 && err == io.EOF {
		err = nil
	}
	return n, err
}

// readPayload reads n bytes into sr.buf. A length read from a torn or
// corrupt header can be anything up to maxRecordSize, so past a small size
// the buffer grows only as bytes actually arrive.
func (sr *segmentReader) readPayload(n int) error {
	const eager = 1 << 20
	if n <= eager || cap(sr.buf) >= n {
		if cap(sr.buf) < n {
			sr.buf = make([]byte, n)
		}
		sr.buf = sr.buf[:n]
		_, err := io.ReadFull(sr.r, sr.buf)
		return err
	}
	sr.buf = sr.buf[:0]
	for len(sr.buf) < n {
		if len(sr.buf) == cap(sr.buf) {
			sr.buf = append(sr.buf, make([]byte, min(max(cap(sr.buf), eager), n-len(sr.buf)))...)[:len(sr.buf)]
		}
		m, err := sr.r.Read(sr.buf[len(sr.buf):min(cap(sr.buf), n)])
		sr.buf = sr.buf[:len(sr.buf)+m]
		if err != nil {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return err
		}
	}
	return nil
}

func (sr *segmentReader) wrap(err error) error {
	if errors.Is(err, io.ErrUnexpectedEOF) {
		return io.ErrUnexpectedEOF
	}
	return fmt.Errorf("segment %s offset %d: %w", segmentName(sr.id), sr.off, err)
}

func (sr *segmentReader) Close() error {
	if sr.dec != nil {
		sr.dec.Close()
	}
	return sr.f.Close()
}

// segmentFile is one segment as found in the spool directory.
type segmentFile struct {
	id     uint64
	sealed bool  // compressed
	size   int64 // on disk: a plain segment's whole file, preallocated space included
	// end is a plain segment's logical end (where its unwritten space
	// starts), when the spool knows it: the active segment's, and a
	// rotated one's. 0: not known (found on disk at open).
	end int64
}

// listSegments returns the segments in dir, oldest first, and the names of
// leftovers (temporary files of an interrupted seal, and plain files whose
// compressed copy is complete) that the caller may remove.
func listSegments(dir string) (segs []segmentFile, leftovers []string, err error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, nil, err
	}
	byID := map[uint64]*segmentFile{}
	for _, e := range entries {
		name := e.Name()
		if strings.HasSuffix(name, tmpExt) {
			leftovers = append(leftovers, name)
			continue
		}
		var sealed bool
		var stem string
		switch {
		case strings.HasSuffix(name, sealedExt):
			sealed, stem = true, strings.TrimSuffix(name, sealedExt)
		case strings.HasSuffix(name, segmentExt):
			stem = strings.TrimSuffix(name, segmentExt)
		default:
			continue
		}
		id, perr := strconv.ParseUint(stem, 10, 64)
		if perr != nil || len(stem) != 20 {
			continue
		}
		info, ierr := e.Info()
		if ierr != nil {
			return nil, nil, ierr
		}
		if prev, ok := byID[id]; ok {
			// Both forms: the compressed one was renamed into place after
			// its fsync, so it is complete and the plain one is redundant.
			leftovers = append(leftovers, segmentName(id)+segmentExt)
			if sealed {
				prev.size = info.Size()
			}
			prev.sealed = true
			continue
		}
		byID[id] = &segmentFile{id: id, sealed: sealed, size: info.Size()}
	}
	for _, s := range byID {
		segs = append(segs, *s)
	}
	sort.Slice(segs, func(i, j int) bool { return segs[i].id < segs[j].id })
	return segs, leftovers, nil
}
