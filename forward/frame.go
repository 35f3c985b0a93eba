package forward

import (
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"math"
	"strconv"
	"time"

	"github.com/fluent/fluent-logger-golang/fluent"
	"github.com/tinylib/msgp/msgp"
	"github.com/valyala/fastjson"
)

// eventTimeLen is the encoded size of a fluent.EventTime: fixext8 marker,
// extension type 0, then uint32 BE seconds and uint32 BE nanoseconds.
const eventTimeLen = 1 + 1 + 8

// maxArrayHeaderLen is the size of the largest msgpack array header
// (array32: marker and uint32 count).
const maxArrayHeaderLen = 5

// appendMsgpackRecord appends the msgpack encoding of the JSON object js to
// dst: a map with the same keys in the same order and the same values,
// integers as msgpack ints (int64, or uint64 above MaxInt64), other numbers as
// float64, strings as str, null as nil. It also returns the value of the
// top-level "time" string field parsed as RFC 3339 (zero time if
// absent/unparsable).
//
// A JSON number whose literal contains '.', 'e' or 'E' is a float; any other
// number is an integer, encoded as a float64 if it overflows both int64 and
// uint64. Numbers that are not valid JSON numbers (fastjson lets through
// literals such as "1.2.3", "NaN" and "Inf") and numbers too large for a
// float64 are errors. Strings are passed through byte for byte after
// unescaping, without UTF-8 validation; a \u escape of a lone UTF-16
// surrogate is kept as the six characters of the escape (encoding/json would
// decode it as U+FFFD, but never produces one).
//
// js must be one JSON object; anything else is an error that says what is
// wrong. On error, the returned slice is dst truncated to its original
// length (its spare capacity may have been written to).
//
// p is reused for parsing, so with a warm parser and enough capacity in dst
// the conversion does not allocate.
func appendMsgpackRecord(dst []byte, p *fastjson.Parser, js []byte) ([]byte, time.Time, error) {
	v, err := p.ParseBytes(js)
	if err != nil {
		return dst, time.Time{}, fmt.Errorf("record is not valid JSON: %w", err)
	}
	if t := v.Type(); t != fastjson.TypeObject {
		return dst, time.Time{}, fmt.Errorf("record is not a JSON object but a JSON %s", t)
	}
	o, _ := v.Object()
	start := len(dst)
	var ts time.Time
	dst = msgp.AppendMapHeader(dst, uint32(o.Len()))
	o.Visit(func(k []byte, vv *fastjson.Value) {
		if err != nil {
			return
		}
		dst = msgp.AppendStringFromBytes(dst, k)
		if string(k) == "time" {
			ts = time.Time{}
			if vv.Type() == fastjson.TypeString {
				s, _ := vv.StringBytes()
				if ts.UnmarshalText(s) != nil {
					ts = time.Time{}
				}
			}
		}
		dst, err = appendMsgpackValue(dst, vv)
		if err != nil {
			err = fmt.Errorf("field %q: %w", k, err)
		}
	})
	if err != nil {
		return dst[:start], time.Time{}, err
	}
	return dst, ts, nil
}

// appendMsgpackValue appends the msgpack encoding of the JSON value v.
func appendMsgpackValue(dst []byte, v *fastjson.Value) ([]byte, error) {
	switch v.Type() {
	case fastjson.TypeString:
		s, _ := v.StringBytes()
		return msgp.AppendStringFromBytes(dst, s), nil
	case fastjson.TypeNumber:
		return appendMsgpackNumber(dst, v)
	case fastjson.TypeObject:
		o, _ := v.Object()
		dst = msgp.AppendMapHeader(dst, uint32(o.Len()))
		var err error
		o.Visit(func(k []byte, vv *fastjson.Value) {
			if err != nil {
				return
			}
			dst = msgp.AppendStringFromBytes(dst, k)
			dst, err = appendMsgpackValue(dst, vv)
			if err != nil {
				err = fmt.Errorf("field %q: %w", k, err)
			}
		})
		return dst, err
	case fastjson.TypeArray:
		a, _ := v.Array()
		dst = msgp.AppendArrayHeader(dst, uint32(len(a)))
		for i, e := range a {
			var err error
			if dst, err = appendMsgpackValue(dst, e); err != nil {
				return dst, fmt.Errorf("element %d: %w", i, err)
			}
		}
		return dst, nil
	case fastjson.TypeTrue:
		return msgp.AppendBool(dst, true), nil
	case fastjson.TypeFalse:
		return msgp.AppendBool(dst, false), nil
	case fastjson.TypeNull:
		return msgp.AppendNil(dst), nil
	default:
		return dst, fmt.Errorf("unexpected JSON value type %s", v.Type())
	}
}

var errNumberRange = errors.New("out of range for a float64")

// appendMsgpackNumber appends the JSON number v as an int64, a uint64 or a
// float64 (see appendMsgpackRecord).
func appendMsgpackNumber(dst []byte, v *fastjson.Value) ([]byte, error) {
	// fastjson keeps the literal but only hands it out through MarshalTo.
	// Write it into dst's spare capacity (growing it if needed): the
	// encoding appended below overwrites it once it has been parsed.
	lit := v.MarshalTo(dst[len(dst):])
	isFloat, ok := scanJSONNumber(lit)
	if !ok {
		return dst, fmt.Errorf("invalid JSON number %q", lit)
	}
	if !isFloat {
		neg := lit[0] == '-'
		digits := lit
		if neg {
			digits = lit[1:]
		}
		var u uint64
		overflow := false
		for _, c := range digits {
			d := uint64(c - '0')
			if u > (math.MaxUint64-d)/10 {
				overflow = true
				break
			}
			u = u*10 + d
		}
		switch {
		case overflow:
			// Falls through to float64 below.
		case !neg && u <= math.MaxInt64:
			return msgp.AppendInt64(dst, int64(u)), nil
		case !neg:
			return msgp.AppendUint64(dst, u), nil
		case u <= 1<<63:
			// For u == 1<<63, int64(u) is MinInt64 and so is its negation.
			return msgp.AppendInt64(dst, -int64(u)), nil
		}
	}
	f, err := strconv.ParseFloat(string(lit), 64)
	if err != nil {
		// The literal is valid, so the only possible error is ErrRange
		// for a magnitude beyond MaxFloat64; underflow is not an error.
		return dst, fmt.Errorf("number %q: %w", lit, errNumberRange)
	}
	return msgp.AppendFloat64(dst, f), nil
}

// scanJSONNumber reports whether s is a number by the JSON grammar
// (-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?) and, if so, whether it has
// a fraction or an exponent.
func scanJSONNumber(s []byte) (isFloat, ok bool) {
	i := 0
	if i < len(s) && s[i] == '-' {
		i++
	}
	switch {
	case i < len(s) && s[i] == '0':
		i++
	case i < len(s) && s[i] >= '1' && s[i] <= '9':
		for i++; i < len(s) && s[i] >= '0' && s[i] <= '9'; i++ {
		}
	default:
		return false, false
	}
	if i < len(s) && s[i] == '.' {
		isFloat = true
		i++
		j := i
		for ; i < len(s) && s[i] >= '0' && s[i] <= '9'; i++ {
		}
		if i == j {
			return false, false
		}
	}
	if i < len(s) && (s[i] == 'e' || s[i] == 'E') {
		isFloat = true
		i++
		if i < len(s) && (s[i] == '+' || s[i] == '-') {
			i++
		}
		j := i
		for ; i < len(s) && s[i] >= '0' && s[i] <= '9'; i++ {
		}
		if i == j {
			return false, false
		}
	}
	return isFloat, i == len(s)
}

// forwardFrame builds one Forward-mode message:
// [tag, [[EventTime, record], ...], {"chunk": id, "size": n}].
//
// The buffers are reused across reset, so in steady state building a frame
// does not allocate. The entries are appended to buf after a gap big enough
// for the largest possible message prefix (fixarray 3, tag, array32 header);
// finish writes the actual prefix, with the smallest array header form for
// the entry count, right-aligned into the gap, so the frame is contiguous and
// nothing is copied.
//
// A forwardFrame is not safe for concurrent use.
type forwardFrame struct {
	p   fastjson.Parser
	tag string
	buf []byte // gap for the prefix, then entries, then the option map
	hdr []byte // scratch for the prefix
	gap int    // size of the gap at the start of buf
	end int    // length of buf after the last entry
	n   int    // entries
	et  fluent.EventTime
}

// reset empties f and starts a frame for tag.
func (f *forwardFrame) reset(tag string) {
	f.tag = tag
	f.gap = 1 + msgp.StringPrefixSize + len(tag) + maxArrayHeaderLen
	if cap(f.buf) < f.gap {
		f.buf = make([]byte, f.gap, max(f.gap, 64<<10))
	}
	f.buf = f.buf[:f.gap]
	f.end = f.gap
	f.n = 0
}

// add converts the JSON event js and appends it as an entry. The entry's
// time is the event's "time" field; when that is absent, not an RFC 3339
// string, or outside what an EventTime can hold (1970 to 2106), it is now.
// On error the frame is unchanged.
func (f *forwardFrame) add(js []byte, now time.Time) error {
	if f.gap == 0 {
		panic("forward: forwardFrame.add before reset")
	}
	b := msgp.AppendArrayHeader(f.buf[:f.end], 2)
	tpos := len(b)
	b = append(b, make([]byte, eventTimeLen)...) // patched below
	b, t, err := appendMsgpackRecord(b, &f.p, js)
	if err != nil {
		f.buf = b[:f.end]
		return err
	}
	if sec := t.Unix(); t.IsZero() || sec < 0 || sec > math.MaxUint32 {
		t = now
	}
	f.et = fluent.EventTime(t)
	// The capacity of b[tpos:tpos] covers the reserved bytes, so this
	// overwrites them in place. EventTime.MarshalBinaryTo writes the low
	// 32 bits of the seconds, which is the uint32 the protocol wants.
	if _, err := msgp.AppendExtension(b[tpos:tpos], &f.et); err != nil {
		f.buf = b[:f.end]
		return fmt.Errorf("encoding EventTime: %w", err)
	}
	f.buf = b
	f.end = len(b)
	f.n++
	return nil
}

// len returns the number of entries added since reset.
func (f *forwardFrame) len() int { return f.n }

// finish returns the complete frame, with options chunk and size. The bytes
// are valid until the next reset or add. Calling add after finish continues
// the frame (the options are dropped and written again by the next finish).
func (f *forwardFrame) finish(chunk string) []byte {
	if f.gap == 0 {
		panic("forward: forwardFrame.finish before reset")
	}
	h := msgp.AppendArrayHeader(f.hdr[:0], 3)
	h = msgp.AppendString(h, f.tag)
	h = msgp.AppendArrayHeader(h, uint32(f.n))
	f.hdr = h
	off := f.gap - len(h)
	copy(f.buf[off:], h)
	b := f.buf[:f.end]
	b = msgp.AppendMapHeader(b, 2)
	b = msgp.AppendString(b, "chunk")
	b = msgp.AppendString(b, chunk)
	b = msgp.AppendString(b, "size")
	b = msgp.AppendInt64(b, int64(f.n))
	f.buf = b
	return b[off:]
}

// newChunkID returns a fresh chunk id for the forward protocol's ack option:
// 16 random bytes in standard base64, as fluent-logger-golang makes them.
func newChunkID() string {
	var b [16]byte
	rand.Read(b[:]) // never returns an error; crashes the program instead
	return base64.StdEncoding.EncodeToString(b[:])
}
