package forwardrecv

import (
	"errors"
	"fmt"
	"io"
	"math"
	"slices"
)

// Limits on what one frame may make the decoder read or build. A frame
// (one top-level msgpack array on the connection) that exceeds any of them is
// malformed: the receiver counts an error and closes the connection.
const (
	// MaxFrameSize is the most bytes one frame may occupy on the wire, and
	// the most bytes the decompressed entries of a CompressedPackedForward
	// frame may occupy. Every length field is checked against what is left
	// of this budget before anything is allocated for it.
	MaxFrameSize = 64 << 20

	// maxDepth is how deeply arrays and maps may nest, counting the frame's
	// own array as depth 1.
	maxDepth = 100

	// maxValues is the most msgpack values one frame may decode to, counting
	// those inside packed entries: it keeps a frame of 64 MiB of one-byte
	// empty maps from becoming gigabytes of Go maps.
	maxValues = 1 << 22

	// readChunk is the most memory a string, bin or ext body gets ahead of
	// the bytes that fill it: longer bodies grow as their bytes arrive, so a
	// length field on a connection that then stalls costs at most this much.
	readChunk = 64 << 10
)

// Ext is a msgpack extension value (fixext 1 to 16, ext 8/16/32) found in a
// record. The receiver gives meaning only to the EventTime extension (type 0,
// 8 bytes) in an entry's time field; anywhere else an extension decodes to an
// Ext as it was sent.
type Ext struct {
	Type int8
	Data []byte
}

// errTruncated is wrapped by every error about input that ended inside a
// value.
var errTruncated = errors.New("truncated input")

// source is what the decoder reads: a *bufio.Reader on a connection or a
// *bytes.Reader on packed entries.
type source interface {
	io.Reader
	io.ByteReader
}

// decoder decodes msgpack values from r, one frame at a time. It never reads
// past the end of the value it is asked for, so frames may follow one
// another on the same stream.
type decoder struct {
	r source
	// budget is how many more bytes the current frame (or packed payload)
	// may consume; pos is how many it has consumed, for error messages.
	budget uint64
	pos    uint64
	// inMemory says the budget is exactly the input left (packed entries),
	// so a length beyond it means truncated input rather than an oversized
	// frame.
	inMemory bool
	// values counts the values decoded in this frame against maxValues.
	values  int
	tmp     [8]byte
	scratch []byte
}

func (d *decoder) errorf(format string, args ...any) error {
	return fmt.Errorf("forwardrecv: msgpack: at byte %d: %w", d.pos, fmt.Errorf(format, args...))
}

// ioErr turns an error from the source into a decode error: any end of input
// inside a value is a truncated value.
func (d *decoder) ioErr(err error) error {
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return fmt.Errorf("forwardrecv: msgpack: at byte %d: %w", d.pos, errTruncated)
	}
	return fmt.Errorf("forwardrecv: msgpack: at byte %d: %w", d.pos, err)
}

// take charges n bytes to the budget before they are read.
func (d *decoder) take(n uint64) error {
	if n > d.budget {
		if d.inMemory {
			return d.errorf("length %d exceeds the %d bytes left: %w", n, d.budget, errTruncated)
		}
		return d.errorf("length %d exceeds the frame size limit of %d bytes", n, MaxFrameSize)
	}
	d.budget -= n
	return nil
}

func (d *decoder) byte() (byte, error) {
	if err := d.take(1); err != nil {
		return 0, err
	}
	c, err := d.r.ReadByte()
	if err != nil {
		return 0, d.ioErr(err)
	}
	d.pos++
	return c, nil
}

// fixed reads n <= 8 bytes into d.tmp.
func (d *decoder) fixed(n int) ([]byte, error) {
	if err := d.take(uint64(n)); err != nil {
		return nil, err
	}
	b := d.tmp[:n]
	if _, err := io.ReadFull(d.r, b); err != nil {
		return nil, d.ioErr(err)
	}
	d.pos += uint64(n)
	return b, nil
}

// uint reads an n-byte big-endian unsigned integer, n in 1, 2, 4, 8.
func (d *decoder) uint(n int) (uint64, error) {
	b, err := d.fixed(n)
	if err != nil {
		return 0, err
	}
	var v uint64
	for _, c := range b {
		v = v<<8 | uint64(c)
	}
	return v, nil
}

// read reads n bytes into dst[:0], growing it no faster than the bytes
// arrive (readChunk at a time), and returns the filled slice.
func (d *decoder) read(dst []byte, n uint64) ([]byte, error) {
	if err := d.take(n); err != nil {
		return nil, err
	}
	dst = dst[:0]
	for uint64(len(dst)) < n {
		k := int(min(n-uint64(len(dst)), readChunk))
		dst = slices.Grow(dst, k)
		m, err := io.ReadFull(d.r, dst[len(dst):len(dst)+k])
		dst = dst[:len(dst)+m]
		d.pos += uint64(m)
		if err != nil {
			return nil, d.ioErr(err)
		}
	}
	return dst, nil
}

func (d *decoder) str(n uint64) (string, error) {
	b, err := d.read(d.scratch, n)
	if err != nil {
		return "", err
	}
	if cap(b) <= readChunk {
		d.scratch = b
	}
	return string(b), nil
}

func (d *decoder) bin(n uint64) ([]byte, error) {
	b, err := d.read(nil, n)
	if b == nil && err == nil {
		b = []byte{}
	}
	return b, err
}

func (d *decoder) ext(n uint64) (Ext, error) {
	t, err := d.byte()
	if err != nil {
		return Ext{}, err
	}
	data, err := d.bin(n)
	return Ext{Type: int8(t), Data: data}, err
}

// count checks a container's element count: each element takes at least
// one byte (a map entry two), so a count the budget cannot hold is refused
// before anything is allocated for it.
func (d *decoder) count(n, perElem uint64, depth int) error {
	if depth > maxDepth {
		return d.errorf("nesting deeper than %d", maxDepth)
	}
	if n*perElem > d.budget {
		if d.inMemory {
			return d.errorf("container of %d elements cannot fit in the %d bytes left: %w", n, d.budget, errTruncated)
		}
		return d.errorf("container of %d elements exceeds the frame size limit", n)
	}
	return nil
}

// value decodes one msgpack value. Integers become int64, or uint64 when
// above math.MaxInt64; floats float64; str string; bin []byte; arrays []any;
// maps map[string]any (keys must be str and distinct); nil nil; ext Ext.
// depth is the nesting depth of the value's container.
func (d *decoder) value(depth int) (any, error) {
	c, err := d.byte()
	if err != nil {
		return nil, err
	}
	return d.valueAfter(c, depth)
}

func (d *decoder) valueAfter(c byte, depth int) (any, error) {
	d.values++
	if d.values > maxValues {
		return nil, d.errorf("more than %d values in one frame", maxValues)
	}
	switch {
	case c <= 0x7f: // positive fixint
		return int64(c), nil
	case c >= 0xe0: // negative fixint
		return int64(int8(c)), nil
	case c&0xf0 == 0x80: // fixmap
		return d.mapN(uint64(c&0x0f), depth+1)
	case c&0xf0 == 0x90: // fixarray
		return d.arrayN(uint64(c&0x0f), depth+1)
	case c&0xe0 == 0xa0: // fixstr
		return d.str(uint64(c & 0x1f))
	}
	switch c {
	case 0xc0:
		return nil, nil
	case 0xc2:
		return false, nil
	case 0xc3:
		return true, nil
	case 0xc4, 0xc5, 0xc6: // bin 8/16/32
		n, err := d.uint(1 << (c - 0xc4))
		if err != nil {
			return nil, err
		}
		return d.bin(n)
	case 0xc7, 0xc8, 0xc9: // ext 8/16/32
		n, err := d.uint(1 << (c - 0xc7))
		if err != nil {
			return nil, err
		}
		return d.ext(n)
	case 0xca: // float 32
		v, err := d.uint(4)
		return float64(math.Float32frombits(uint32(v))), err
	case 0xcb: // float 64
		v, err := d.uint(8)
		return math.Float64frombits(v), err
	case 0xcc, 0xcd, 0xce, 0xcf: // uint 8/16/32/64
		v, err := d.uint(1 << (c - 0xcc))
		if err != nil {
			return nil, err
		}
		if v > math.MaxInt64 {
			return v, nil
		}
		return int64(v), nil
	case 0xd0, 0xd1, 0xd2, 0xd3: // int 8/16/32/64
		n := 1 << (c - 0xd0)
		v, err := d.uint(n)
		if err != nil {
			return nil, err
		}
		shift := 64 - 8*n // sign-extend from n bytes
		return int64(v<<shift) >> shift, nil
	case 0xd4, 0xd5, 0xd6, 0xd7, 0xd8: // fixext 1/2/4/8/16
		return d.ext(1 << (c - 0xd4))
	case 0xd9, 0xda, 0xdb: // str 8/16/32
		n, err := d.uint(1 << (c - 0xd9))
		if err != nil {
			return nil, err
		}
		return d.str(n)
	case 0xdc, 0xdd: // array 16/32
		n, err := d.uint(2 << (c - 0xdc))
		if err != nil {
			return nil, err
		}
		return d.arrayN(n, depth+1)
	case 0xde, 0xdf: // map 16/32
		n, err := d.uint(2 << (c - 0xde))
		if err != nil {
			return nil, err
		}
		return d.mapN(n, depth+1)
	}
	return nil, d.errorf("invalid format byte 0x%02x", c) // 0xc1, never used
}

func (d *decoder) arrayN(n uint64, depth int) ([]any, error) {
	if err := d.count(n, 1, depth); err != nil {
		return nil, err
	}
	a := make([]any, 0, min(n, 1024))
	for range n {
		v, err := d.value(depth)
		if err != nil {
			return nil, err
		}
		a = append(a, v)
	}
	return a, nil
}

func (d *decoder) mapN(n uint64, depth int) (map[string]any, error) {
	if err := d.count(n, 2, depth); err != nil {
		return nil, err
	}
	m := make(map[string]any, min(n, 64))
	for range n {
		k, err := d.key()
		if err != nil {
			return nil, err
		}
		if _, dup := m[k]; dup {
			return nil, d.errorf("duplicate map key %q", k)
		}
		v, err := d.value(depth)
		if err != nil {
			return nil, err
		}
		m[k] = v
	}
	return m, nil
}

// key decodes a map key, which must be a str.
func (d *decoder) key() (string, error) {
	c, err := d.byte()
	if err != nil {
		return "", err
	}
	d.values++
	if d.values > maxValues {
		return "", d.errorf("more than %d values in one frame", maxValues)
	}
	var n uint64
	switch {
	case c&0xe0 == 0xa0:
		n = uint64(c & 0x1f)
	case c == 0xd9 || c == 0xda || c == 0xdb:
		if n, err = d.uint(1 << (c - 0xd9)); err != nil {
			return "", err
		}
	default:
		return "", d.errorf("map key has format byte 0x%02x, want a str", c)
	}
	return d.str(n)
}

// appendStr appends s encoded as the smallest msgpack str format.
func appendStr(b []byte, s string) []byte {
	switch n := len(s); {
	case n < 32:
		b = append(b, 0xa0|byte(n))
	case n <= math.MaxUint8:
		b = append(b, 0xd9, byte(n))
	case n <= math.MaxUint16:
		b = append(b, 0xda, byte(n>>8), byte(n))
	default:
		b = append(b, 0xdb, byte(n>>24), byte(n>>16), byte(n>>8), byte(n))
	}
	return append(b, s...)
}

// appendAck appends the reply to a message whose option carried chunk: the
// map {"ack": chunk}.
func appendAck(b []byte, chunk string) []byte {
	b = append(b, 0x81, 0xa3, 'a', 'c', 'k')
	return appendStr(b, chunk)
}
