package spool

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/auditproxy/auditproxy/audit"
	"github.com/auditproxy/auditproxy/auditlog"
	"github.com/klauspost/compress/zstd"
	"github.com/valyala/fastjson"
)

// Damage in a segment is any byte that is not part of an intact frame: a
// frame whose length is out of range or whose checksum fails, bytes that do
// not start a frame, a compressed stream that cannot be decoded past some
// point. A reader that meets damage does not stop there (that would lose
// every intact record after it, and a log that continues after a cut reuses
// seqs already shipped and checkpointed: a fork). It resynchronises on the
// next valid frame, one that
//
//   - has a length from 1 to maxRecordSize that the bytes hold,
//   - whose payload passes its CRC-32C,
//   - and whose payload is a JSON object in canonical form: starting with
//     `{"`, ending with `}` (every event the spool writes is), and valid JSON.
//
// The last two conditions make a false frame in random bytes about one in
// 2^56 per offset. What lies between the last intact frame before the
// damage and that next frame is a damaged range. Bytes after the last
// intact frame of the active segment with no valid frame after them are a
// torn tail instead: a commit a crash interrupted, never acknowledged, which
// is not a loss of committed data. The zero bytes a plain segment ends with
// are neither: they are its preallocated space, not yet written (see
// segment.go). A torn tail ends where they start.

// segmentScan is what scanning a segment's bytes found.
type segmentScan struct {
	frames  []audit.ByteRange    // the intact frames, in order
	damaged []audit.DamagedRange // damage with an intact frame after it (or undecodable)
	tail    audit.ByteRange      // bytes after the last intact frame with no valid frame after them, up to the unwritten space; empty if none
	// unwritten is where the zero bytes that the segment ends with start,
	// after the last frame and the tail: its preallocated space, not yet
	// written. len(data) when there are none.
	unwritten int64
}

// validFrameAt reports the size of a valid frame (see above) at the start
// of b, or 0.
func validFrameAt(b []byte) int {
	if len(b) < frameHeaderSize+2 {
		return 0
	}
	n := binary.LittleEndian.Uint32(b)
	if n < 2 || n > maxRecordSize || int64(len(b)) < frameHeaderSize+int64(n) {
		return 0
	}
	payload := b[frameHeaderSize : frameHeaderSize+int(n)]
	if payload[0] != '{' || payload[1] != '"' || payload[n-1] != '}' {
		return 0
	}
	if crc32.Checksum(payload, crcTable) != binary.LittleEndian.Uint32(b[4:]) || fastjson.ValidateBytes(payload) != nil {
		return 0
	}
	return frameHeaderSize + int(n)
}

// scanFrames scans a segment's bytes (its header included) from offset
// from, a frame boundary: intact frames are read in order as a reader reads
// them (any frame whose checksum passes), and past damage the scan
// resynchronises on the next valid frame. A header that is not a segment's
// is not scanned (all of it is damage). A frame boundary from which every
// byte is zero ends the scan: the rest is unwritten space.
func scanFrames(data []byte, from int64) segmentScan {
	sc := segmentScan{unwritten: int64(len(data))}
	if len(data) < len(segmentMagic) || string(data[:len(segmentMagic)]) != segmentMagic {
		sc.damaged = append(sc.damaged, audit.DamagedRange{ByteRange: audit.ByteRange{Start: 0, End: int64(len(data))}})
		return sc
	}
	off := max(from, int64(len(segmentMagic)))
	// Past z every byte is zero.
	z := int64(zeroTailStart(data))
	var p fastjson.Parser
	var before *audit.Place // the last placed frame's, of frames[:searched]
	searched := 0
	for off < z {
		if _, size, err := parseFrame(data[off:], off); err == nil && size > 0 {
			sc.frames = append(sc.frames, audit.ByteRange{Start: off, End: off + int64(size)})
			off += int64(size)
			continue
		}
		// Damage (or a torn tail): find the next valid frame.
		start := off
		next := int64(-1)
		for x := start + 1; x+frameHeaderSize < int64(len(data)); x++ {
			// Payloads start with `{"`: look for that 8 bytes on, then
			// check the frame around it.
			k := bytes.Index(data[x+frameHeaderSize:], []byte(`{"`))
			if k < 0 {
				break
			}
			x += int64(k)
			if validFrameAt(data[x:]) > 0 {
				next = x
				break
			}
		}
		// The last event before the damage with a place in the log: a frame
		// in none (an event a bug left unplaced) says nothing about the
		// seqs lost, and the previous segment's last event would count
		// this segment's events before the damage among them.
		for i := len(sc.frames) - 1; i >= searched; i-- {
			f := sc.frames[i]
			if pl := auditlog.PlaceOf(&p, data[f.Start+frameHeaderSize:f.End]); pl != nil {
				before = pl
				break
			}
		}
		searched = len(sc.frames)
		if next < 0 {
			sc.tail = audit.ByteRange{Start: start, End: tornEnd(data, start, z)}
			sc.unwritten = sc.tail.End
			sc.placeAfter(data)
			return sc
		}
		sc.damaged = append(sc.damaged, audit.DamagedRange{ByteRange: audit.ByteRange{Start: start, End: next}, Before: before})
		off = next
	}
	sc.unwritten = max(off, z) // off passes z when the last frame ends with zero bytes
	sc.placeAfter(data)
	return sc
}

// tornEnd returns where a torn tail that starts at frame boundary start
// ends, in a segment whose bytes past z are all zero: at z, or at the end
// of the torn frame's header if that is later (the high bytes of its length
// are zeros of the frame, not unwritten space).
func tornEnd(data []byte, start, z int64) int64 {
	return max(z, min(int64(len(data)), start+frameHeaderSize))
}

// placeAfter sets each damaged range's After, the first event after it
// with a place in the log, and its Missing.
func (sc *segmentScan) placeAfter(data []byte) {
	var p fastjson.Parser
	i := 0
	for k := range sc.damaged {
		d := &sc.damaged[k]
		for i < len(sc.frames) && sc.frames[i].Start < d.End {
			i++
		}
		for j := i; j < len(sc.frames) && d.After == nil; j++ {
			f := sc.frames[j]
			d.After = auditlog.PlaceOf(&p, data[f.Start+frameHeaderSize:f.End])
		}
		d.SetMissing()
	}
}

// lastPlace returns the place of the last of the frames that has one.
func (sc *segmentScan) lastPlace(data []byte) *audit.Place {
	var p fastjson.Parser
	for i := len(sc.frames) - 1; i >= 0; i-- {
		f := sc.frames[i]
		if pl := auditlog.PlaceOf(&p, data[f.Start+frameHeaderSize:f.End]); pl != nil {
			return pl
		}
	}
	return nil
}

// readSegmentBytes reads a segment file's uncompressed bytes, as far as they
// can be read: a compressed stream damaged in the middle decodes up to the
// damage, and undecodable reports that (with the bytes before it).
func readSegmentBytes(path string) (data []byte, undecodable error, err error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, nil, err
	}
	if !strings.HasSuffix(path, sealedExt) {
		return raw, nil, nil
	}
	data, undecodable = decompress(raw)
	return data, undecodable, nil
}

// decompress decodes a zstd stream as far as it decodes.
func decompress(raw []byte) ([]byte, error) {
	dec, err := zstd.NewReader(bytes.NewReader(raw), zstd.WithDecoderConcurrency(1), zstd.WithDecoderLowmem(true))
	if err != nil {
		return nil, err
	}
	defer dec.Close()
	var out bytes.Buffer
	_, err = io.Copy(&out, dec)
	return out.Bytes(), err
}

// segmentSalvage is what can still be read of a damaged segment file.
type segmentSalvage struct {
	data    []byte // its uncompressed bytes as far as they decode
	scan    segmentScan
	records int
	newEnds []int64 // frame i's end in intactBytes; built by translate
}

// salvageSegment scans the segment file at path for intact records and
// damage. newest says the file is the spool's newest plain segment, the only
// one that may end in a torn tail; anywhere else bytes after the last intact
// frame are damage too.
func salvageSegment(path string, newest bool) (*segmentSalvage, error) {
	data, undecodable, err := readSegmentBytes(path)
	if err != nil {
		return nil, err
	}
	sv := &segmentSalvage{data: data, scan: scanFrames(data, 0)}
	sv.records = len(sv.scan.frames)
	if t := sv.scan.tail; t.End > t.Start && (!newest || undecodable != nil) {
		sv.scan.damaged = append(sv.scan.damaged, audit.DamagedRange{ByteRange: t, Before: sv.scan.lastPlace(data)})
		sv.scan.tail = audit.ByteRange{}
	}
	if undecodable != nil {
		end := int64(len(data))
		if n := len(sv.scan.damaged); n > 0 && sv.scan.damaged[n-1].End == end {
			sv.scan.damaged[n-1].End = -1
		} else {
			sv.scan.damaged = append(sv.scan.damaged, audit.DamagedRange{ByteRange: audit.ByteRange{Start: end, End: -1}, Before: sv.scan.lastPlace(data)})
		}
	}
	return sv, nil
}

// payload returns the payload of intact frame i.
func (sv *segmentSalvage) payload(i int) []byte {
	f := sv.scan.frames[i]
	return sv.data[f.Start+frameHeaderSize : f.End]
}

// intactBytes returns a segment of the intact frames only: the header and
// every intact frame, in order, with nothing between them.
func (sv *segmentSalvage) intactBytes() []byte {
	out := make([]byte, 0, len(sv.data))
	out = append(out, segmentMagic...)
	for _, f := range sv.scan.frames {
		out = append(out, sv.data[f.Start:f.End]...)
	}
	return out
}

// translate maps an offset of the damaged segment to the segment of its
// intact frames (intactBytes): a record's end stays the same record's end;
// an offset inside a damaged range moves to where the next intact frame
// starts.
func (sv *segmentSalvage) translate(off int64) int64 {
	frames := sv.scan.frames
	if sv.newEnds == nil {
		sv.newEnds = make([]int64, len(frames))
		end := int64(len(segmentMagic))
		for i, f := range frames {
			end += f.End - f.Start
			sv.newEnds[i] = end
		}
	}
	// The first frame that ends after off starts where the one before it
	// ends in the repaired segment.
	i := sort.Search(len(frames), func(i int) bool { return off < frames[i].End })
	if i == 0 {
		return int64(len(segmentMagic))
	}
	return sv.newEnds[i-1]
}

// DamagedSegmentError reports damage that a reader read past: the intact
// records of the file were read, these ranges were not.
type DamagedSegmentError struct {
	File    string
	Ranges  []audit.ByteRange
	Records int // intact records read
}

func (e *DamagedSegmentError) Error() string {
	rs := make([]string, len(e.Ranges))
	var lost int64
	undecodable := false
	for i, r := range e.Ranges {
		rs[i] = r.String()
		if r.End < 0 {
			undecodable = true
		} else {
			lost += r.End - r.Start
		}
	}
	what := fmt.Sprintf("%d bytes skipped", lost)
	if undecodable {
		what += ", and the rest of its compressed stream cannot be decoded"
	}
	return fmt.Sprintf("%s is damaged at offsets %s (%s); its %d intact records were read", e.File, strings.Join(rs, ", "), what, e.Records)
}

// scanSegmentFile calls fn with every intact record of the segment file at
// path, in order, reading past damage (see above). It reads the file as a
// stream and only loads it whole, to resynchronise, once it meets damage.
// The error is a *DamagedSegmentError when damage was read past (every
// intact record was delivered), fn's error, or the file's. newest: the file
// is the spool's newest plain segment, whose trailing bytes that are no
// whole record are a torn tail (returned as torn), not damage.
func scanSegmentFile(path string, newest bool, fn func(off int64, rec []byte) error) (torn int64, err error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	sr, err := newSegmentReader(f, 0, strings.HasSuffix(path, sealedExt))
	if err != nil {
		return 0, fmt.Errorf("%s: %w", path, err)
	}
	defer sr.Close()
	for {
		off := sr.off
		rec, rerr := sr.next()
		if rerr == io.EOF {
			return 0, nil
		}
		if rerr == nil {
			if err := fn(off, rec); err != nil {
				return 0, err
			}
			continue
		}
		// Damage, a torn tail, or a read error: read the file whole and
		// scan from here.
		var pe *os.PathError
		if errors.As(rerr, &pe) {
			return 0, rerr
		}
		return scanRest(path, newest, off, fn)
	}
}

// scanRest delivers the intact records of the segment file at path from
// offset from on, reading it whole.
func scanRest(path string, newest bool, from int64, fn func(off int64, rec []byte) error) (int64, error) {
	sv, err := salvageSegment(path, newest)
	if err != nil {
		return 0, err
	}
	n := 0
	for i, f := range sv.scan.frames {
		n++
		if f.Start < from {
			continue
		}
		if err := fn(f.Start, sv.payload(i)); err != nil {
			return 0, err
		}
	}
	torn := sv.scan.tail.End - sv.scan.tail.Start
	var ranges []audit.ByteRange
	for _, d := range sv.scan.damaged {
		if d.End < 0 || d.End > from {
			ranges = append(ranges, d.ByteRange)
		}
	}
	if len(ranges) == 0 {
		return torn, nil
	}
	return torn, &DamagedSegmentError{File: path, Ranges: ranges, Records: n}
}

// segmentPath returns the path of segment id in dir, plain if present.
func segmentPath(dir string, id uint64) (string, bool) {
	base := filepath.Join(dir, segmentName(id))
	if _, err := os.Stat(base + segmentExt); err == nil {
		return base + segmentExt, false
	}
	return base + sealedExt, true
}
