// Package jcs writes JSON in its RFC 8785 canonical form (the JSON
// Canonicalization Scheme): members sorted by name as UTF-16 code units,
// numbers as ECMAScript writes them, strings with the fewest escapes, no
// whitespace. The log hashes events in this form, so that a record still
// verifies after an aggregator has re-encoded it.
package jcs

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"math/bits"
	"slices"
	"strconv"
	"sync"
	"unicode/utf8"
	"unsafe"

	"github.com/valyala/fastjson"
)

// Append appends the RFC 8785 canonical form (JSON Canonicalization
// Scheme, JCS) of the JSON text js to dst and returns the extended slice. The
// log's Merkle leaves are these bytes, so that a record still verifies after
// an aggregator has re-encoded it (through msgpack, say) and reordered its
// keys.
//
// js must be one JSON value (RFC 8259), optionally surrounded by whitespace,
// that is also I-JSON (RFC 7493) as far as JCS needs. The canonical form is:
//
//   - no whitespace between tokens;
//   - object members sorted by name, names compared as sequences of UTF-16
//     code units (so a name holding a character above U+FFFF sorts by its
//     surrogate pair, before one holding a character in U+E000..U+FFFF);
//     array elements keep their order;
//   - strings as UTF-8 with only '"', '\\' and U+0000..U+001F escaped: \b \t
//     \n \f \r for those five controls, \u00xx (lower-case hex) for the
//     others; every other character (non-ASCII, '/', U+2028, U+007F, ...) is
//     written as itself;
//   - numbers read as IEEE 754 doubles (rounding to nearest, so a literal too
//     small for a double becomes 0) and written as ECMAScript's
//     Number.prototype.toString writes them: the shortest digits that read
//     back as the same double, in plain notation when 1e-6 <= |x| < 1e21
//     ("0.000001", "295147905179352830000") and in exponent notation
//     otherwise ("1e-7", "1e+21"); -0 is written as 0;
//   - true, false and null as themselves.
//
// Integers beyond 2^53 lose precision as doubles ("9007199254740993" becomes
// "9007199254740992"): RFC 8785 mandates it, and events keep their counts far
// below 2^53.
//
// Append returns an error, and dst unchanged (its spare capacity
// included), when js is not JSON (including number forms JSON lacks, such as
// 01, 1., .5, +1, NaN, Infinity), when an object has two members with the
// same name ("duplicate key"), when a string holds a raw control character,
// an invalid escape, invalid UTF-8 or an escaped lone surrogate such as
// "\ud800", when a number is too large for a double (1e400), when values
// nest more than fastjson.MaxDepth (300) deep (the top-level value is at
// depth 1, and a scalar counts as a level), or, a limit of this
// implementation, when an object ends more than 2 GiB into the canonical
// form. When js has several faults, which one the error names is
// not specified.
//
// p is not used: Append reads js in a single pass of its own and
// keeps no state between calls. The argument remains so that callers written
// for the fastjson-based version still compile; it may be nil.
//
// Append is safe for concurrent use. With a dst of sufficient
// capacity it does not allocate, once its pooled scratch space has grown to
// the size of the inputs. js may share memory with dst:
// Append(b[:0], p, b) canonicalizes b in place.
func Append(dst []byte, p *fastjson.Parser, js []byte) ([]byte, error) {
	_ = p // unused, kept for API stability
	if jcsIsCanonical(js, nil, nil) {
		return append(dst, js...), nil
	}
	c := jcsPool.Get().(*jcsState)
	out, err := c.canonical(dst, js)
	c.release()
	if err != nil {
		return dst, err
	}
	return out, nil
}

// AppendMembers appends the canonical form of js: js itself when it is
// already canonical, or else Append(dst, nil, js). It also appends
// to vals the values of the top-level members of js named names, in that
// order, and sets ends[i] to the end in vals of names[i]'s value (ends[i] ==
// ends[i-1], or len(vals) on entry for i == 0, when names[i] is absent or js
// is not an object). The values have canonical tokens, but the members of an
// object among them may be in the order of js. It spares a caller that reads
// a few members a second pass over the canonical form.
//
// Unless likelyCanonical, js is canonicalized without first being checked in
// place: a caller that saw its last text was not canonical (an aggregator
// re-encodes every event alike) spares the check a pass over the whole text
// that would fail at its last member. A canonical js then comes back as a
// copy, equal to it.
func AppendMembers(dst, js []byte, names []string, vals []byte, ends []int, likelyCanonical bool) (canon, _ []byte, _ error) {
	var spans [8][2]int32
	if len(names) > len(spans) {
		panic("jcs: AppendMembers: too many names")
	}
	for i := range names {
		spans[i] = [2]int32{-1, -1}
	}
	if likelyCanonical && jcsIsCanonical(js, names, spans[:len(names)]) {
		for i, sp := range spans[:len(names)] {
			if sp[0] >= 0 {
				vals = append(vals, js[sp[0]:sp[1]]...)
			}
			ends[i] = len(vals)
		}
		return js, vals, nil
	}
	c := jcsPool.Get().(*jcsState)
	defer c.release()
	c.names = names
	c.spans = append(c.spans[:0], spans[:len(names)]...)
	out, err := c.canonical(dst, js)
	if err != nil {
		return dst, vals, err
	}
	for i, sp := range c.spans {
		if sp[0] >= 0 {
			vals = append(vals, c.buf[sp[0]:sp[1]]...)
		}
		ends[i] = len(vals)
	}
	return out, vals, nil
}

// How it works. One pass over js checks the grammar strictly and writes the
// canonical form of every token, in the order of js, to the scratch buffer
// buf: `{"b":1,"a":[2]}` is written `{"b":1,"a":[2]}`, `1.50` is written
// `1.5`, "\u0041" is written "A". Only the order of object members is left
// to fix. Each member is written as one span of buf, `"name":value`, so an
// object's canonical form is the spans of its members, sorted by name and
// joined with commas; and it is exactly as long as what buf holds for it.
// Nothing is written to dst until js has been read to its end, which makes
// the in-place use safe and leaves dst alone on errors.
//
// An object is sorted when it ends: its members (their spans and sort words,
// see finish) are kept on a stack while it is read. An object whose members
// came in order, and which holds no object out of order, is canonical as it
// stands in buf, and is forgotten. Any other is recorded as a "hole" in buf,
// with its members' spans, sorted, in the list final. Holes are listed in
// the order in which their objects start (so that those in a span of buf
// are together in the list), each with the index of the first hole past its
// end. The canonical form is then written to dst by copying buf, but for the
// holes, which are written member by member in sorted order, each member
// being a span of buf, which may hold holes in its turn (emitSpan). Every
// byte is copied once from buf to dst, however deep objects nest.

var jcsPool = sync.Pool{New: func() any { return new(jcsState) }}

// jcsState is the scratch state of one Append call.
type jcsState struct {
	buf  []byte // the canonical tokens of js, in the order of js
	keys []byte // the names of members whose canonical form has escapes, unescaped
	// stack holds the members of the objects being read, the innermost
	// last, and order their sort words (see finish).
	stack []jcsMember
	order []uint64
	// holes lists the objects out of order, as they start in buf, and
	// final holds their members, sorted, each object's together.
	holes []jcsHole
	final []jcsMember
	// names, when set, are top-level member names whose values'
	// offsets in buf object records in spans (-1 when absent).
	names []string
	spans [][2]int32
}

// jcsMember is a member of an object. Its offsets are int32s, to keep it
// small: object fails before it sorts an object that ends past
// math.MaxInt32.
type jcsMember struct {
	// The member is buf[start:end].
	start, end int32
	// The unescaped name is keys[name:][:nameLen] when esc is set, and
	// buf[name:][:nameLen], the name as written, when not.
	name, nameLen int32
	// The holes in the member are those from holes[hole] on that start
	// before end; hole is -1 when there are none.
	hole int32
	esc  bool
}

// jcsHole is an object that is not canonical as it stands in buf.
type jcsHole struct {
	// The object is buf[start:end], and next is the index of the first
	// hole after its end.
	start, end, next int32
	// Its members, sorted, are final[first:][:n]; when n is 0, its
	// members came in order, and only holes in it are out of order.
	first, n int32
}

// Scratch above these sizes is not kept in the pool.
const (
	jcsMaxPooledMembers = 1 << 12
	jcsMaxPooledBytes   = 1 << 18
)

func (c *jcsState) release() {
	c.names, c.spans = nil, c.spans[:0]
	c.stack, c.order, c.final, c.holes = c.stack[:0], c.order[:0], c.final[:0], c.holes[:0]
	c.buf, c.keys = c.buf[:0], c.keys[:0]
	if cap(c.stack) > jcsMaxPooledMembers || cap(c.order) > jcsMaxPooledMembers ||
		cap(c.final) > jcsMaxPooledMembers || cap(c.holes) > jcsMaxPooledMembers ||
		cap(c.buf) > jcsMaxPooledBytes || cap(c.keys) > jcsMaxPooledBytes {
		return
	}
	jcsPool.Put(c)
}

// jcsMaxDepth is the deepest nesting allowed, as fastjson allows it.
const jcsMaxDepth = fastjson.MaxDepth

func (c *jcsState) canonical(dst, js []byte) ([]byte, error) {
	i := jcsSkipWS(js, 0)
	buf, i, err := c.value(c.buf[:0], js, i, 1)
	c.buf = buf
	if err != nil {
		return dst, err
	}
	if i = jcsSkipWS(js, i); i < len(js) {
		return dst, jcsTailError(js, i)
	}
	if len(c.holes) == 0 {
		return append(dst, buf...), nil
	}
	// The canonical form is as long as buf.
	dst = slices.Grow(dst, len(buf))
	return c.emitSpan(dst, 0, len(buf), 0), nil
}

// emitSpan appends the canonical form of buf[start:end], whose holes are
// those from holes[h] on that start before end.
func (c *jcsState) emitSpan(dst []byte, start, end, h int) []byte {
	for h < len(c.holes) && int(c.holes[h].start) < end {
		o := &c.holes[h]
		dst = append(dst, c.buf[start:o.start]...)
		if o.n == 0 {
			dst = c.emitSpan(dst, int(o.start), int(o.end), h+1)
		} else {
			dst = append(dst, '{')
			ms := c.final[o.first : o.first+o.n]
			for i := range ms {
				m := &ms[i]
				if i > 0 {
					dst = append(dst, ',')
				}
				if m.hole >= 0 {
					dst = c.emitSpan(dst, int(m.start), int(m.end), int(m.hole))
				} else {
					dst = append(dst, c.buf[m.start:m.end]...)
				}
			}
			dst = append(dst, '}')
		}
		start, h = int(o.end), int(o.next)
	}
	return append(dst, c.buf[start:end]...)
}

// value appends the canonical form of the value at js[i], which is at the
// given depth, and returns the offset past it.
func (c *jcsState) value(buf, js []byte, i, depth int) ([]byte, int, error) {
	if depth > jcsMaxDepth {
		return buf, i, jcsSyntaxError(js, i, fmt.Sprintf("too big depth for the nested JSON; it exceeds %d", jcsMaxDepth))
	}
	if i >= len(js) {
		return buf, i, jcsSyntaxError(js, i, "unexpected end of input")
	}
	switch js[i] {
	case '{':
		return c.object(buf, js, i, depth)
	case '[':
		return c.array(buf, js, i, depth)
	case '"':
		buf, i, _, err := jcsString(buf, js, i)
		return buf, i, err
	case 't':
		if len(js)-i >= 4 && string(js[i:i+4]) == "true" {
			return append(buf, "true"...), i + 4, nil
		}
	case 'f':
		if len(js)-i >= 5 && string(js[i:i+5]) == "false" {
			return append(buf, "false"...), i + 5, nil
		}
	case 'n':
		if len(js)-i >= 4 && string(js[i:i+4]) == "null" {
			return append(buf, "null"...), i + 4, nil
		}
		if jcsNaNInf(js, i) {
			return buf, i, jcsBadNumber(js, i, i+3, depth)
		}
	default:
		return jcsNumberValue(buf, js, i, depth)
	}
	return buf, i, jcsSyntaxError(js, i, "unexpected value")
}

func (c *jcsState) array(buf, js []byte, i, depth int) ([]byte, int, error) {
	buf = append(buf, '[')
	i = jcsSkipWS(js, i+1)
	if i < len(js) && js[i] == ']' {
		return append(buf, ']'), i + 1, nil
	}
	for {
		var err error
		if buf, i, err = c.value(buf, js, i, depth+1); err != nil {
			return buf, i, err
		}
		if i = jcsSkipWS(js, i); i >= len(js) {
			return buf, i, jcsSyntaxError(js, i, "unexpected end of array")
		}
		switch js[i] {
		case ',':
			buf = append(buf, ',')
			i = jcsSkipWS(js, i+1)
		case ']':
			return append(buf, ']'), i + 1, nil
		default:
			return buf, i, jcsSyntaxError(js, i, "missing ',' after array value")
		}
	}
}

func (c *jcsState) object(buf, js []byte, i, depth int) ([]byte, int, error) {
	open := len(buf)
	buf = append(buf, '{')
	i = jcsSkipWS(js, i+1)
	if i < len(js) && js[i] == '}' {
		return append(buf, '}'), i + 1, nil
	}
	// The object's hole, in case; finish fills it in or drops it.
	h := len(c.holes)
	if h == cap(c.holes) {
		c.holes = slices.Grow(c.holes, 1)
	}
	c.holes = c.holes[:h+1]
	base := len(c.stack)
	var all byte // the classes of all names
	for {
		if i >= len(js) || js[i] != '"' {
			return buf, i, jcsSyntaxError(js, i, `cannot find opening '"' for object key`)
		}
		start := len(buf)
		var class byte
		var err error
		if buf, i, class, err = jcsString(buf, js, i); err != nil {
			return buf, i, err
		}
		if i = jcsSkipWS(js, i); i >= len(js) || js[i] != ':' {
			return buf, i, jcsSyntaxError(js, i, "missing ':' after object key")
		}
		i = jcsSkipWS(js, i+1)
		buf = append(buf, ':')
		value := len(buf)
		hole := len(c.holes)
		if i < len(js) && js[i] == '"' && depth < jcsMaxDepth {
			buf, i, _, err = jcsString(buf, js, i)
		} else if i < len(js) && (js[i] == '-' || '0' <= js[i] && js[i] <= '9') && depth < jcsMaxDepth {
			buf, i, err = jcsNumberValue(buf, js, i, depth+1)
		} else if i < len(js) && js[i] == '{' && depth < jcsMaxDepth {
			buf, i, err = c.object(buf, js, i, depth+1)
		} else {
			buf, i, err = c.value(buf, js, i, depth+1)
		}
		if err != nil {
			return buf, i, err // release resets the stacks
		}
		n := len(c.stack) - base
		// Filled in place, every field: a struct built aside and copied
		// in is read back with wider loads than it was written with,
		// which stalls.
		if len(c.stack) == cap(c.stack) {
			c.stack = slices.Grow(c.stack, 1)
		}
		c.stack = c.stack[:len(c.stack)+1]
		m := &c.stack[len(c.stack)-1]
		m.start, m.end, m.hole = int32(start), int32(len(buf)), int32(hole)
		if len(c.holes) == hole {
			m.hole = -1
		}
		var k []byte
		if class&jcsBackslash == 0 {
			k = buf[start+1 : value-2]
			m.name, m.nameLen = int32(start+1), int32(len(k))
			m.esc = false
		} else {
			// The canonical name has escapes: keep it unescaped aside.
			m.esc = true
			name := len(c.keys)
			c.keys = jcsUnescapeCanonical(c.keys, buf[start+1:value-2])
			k = c.keys[name:]
			m.name, m.nameLen = int32(name), int32(len(k))
		}
		all |= class
		c.order = append(c.order, jcsWord(k)&^jcsWordIndex|uint64(n&jcsWordIndex))
		if depth == 1 && c.names != nil {
			for j, name := range c.names {
				if string(k) == name {
					c.spans[j] = [2]int32{int32(value), int32(len(buf))}
				}
			}
		}
		if i = jcsSkipWS(js, i); i >= len(js) {
			return buf, i, jcsSyntaxError(js, i, "unexpected end of object")
		}
		if js[i] == ',' {
			buf = append(buf, ',')
			i = jcsSkipWS(js, i+1)
			continue
		}
		if js[i] != '}' {
			return buf, i, jcsSyntaxError(js, i, "missing ',' after object value")
		}
		buf = append(buf, '}')
		i++
		break
	}
	if len(buf) > math.MaxInt32 {
		// The offsets of the members, which are no greater, and those
		// of their unescaped names (keys is shorter than buf) may have
		// overflowed their int32s.
		return buf, i, errors.New("jcs: input too large")
	}
	err := c.finish(buf, open, h, base, all)
	c.stack, c.order = c.stack[:base], c.order[:base]
	return buf, i, err
}

// The sort word of a member of an object of at most 256 members with ASCII
// names holds the first 7 bytes of the name, zero-padded, big-endian, then
// the member's index in the object in the low 8 bits. ASCII bytes compare as
// UTF-16 code units do, and the padding sorts a shorter name first (or ties
// with a NUL), so when two words differ in their top 56 bits, they compare as
// the names do. For other objects, the word is just the index.
const (
	jcsWordShift = 8
	jcsWordIndex = 1<<jcsWordShift - 1
)

// jcsWord returns the first 8 bytes of k, zero-padded, big-endian.
func jcsWord(k []byte) uint64 {
	if cap(k) >= 8 {
		// Load 8 bytes (past the end of k, within its capacity) and
		// clear those past the end.
		w := binary.BigEndian.Uint64(k[:8])
		if len(k) < 8 {
			w &^= math.MaxUint64 >> (8 * len(k))
		}
		return w
	}
	var w uint64
	for i, b := range k {
		w |= uint64(b) << (56 - 8*i)
	}
	return w
}

// sortTies finishes sorting the sorted words order of the members ms, the
// first two of which have the same top 56 bits: it sorts each run of words
// with the same top 56 bits by name. It reports whether it moved any word,
// and returns an error when two names are the same.
func (c *jcsState) sortTies(buf []byte, ms []jcsMember, order []uint64) (moved bool, err error) {
	for a := 0; a < len(order)-1; {
		b := a + 1
		for b < len(order) && order[b]>>jcsWordShift == order[a]>>jcsWordShift {
			b++
		}
		if b-a > 1 {
			// Insertion sort by name, which is stable.
			run := order[a:b]
			for i := 1; i < len(run); i++ {
				w := run[i]
				j := i
				for ; j > 0 && string(c.name(buf, &ms[run[j-1]&jcsWordIndex])) > string(c.name(buf, &ms[w&jcsWordIndex])); j-- {
					run[j] = run[j-1]
				}
				if j != i {
					run[j] = w
					moved = true
				}
			}
			for i := 1; i < len(run); i++ {
				if k := c.name(buf, &ms[run[i-1]&jcsWordIndex]); string(k) == string(c.name(buf, &ms[run[i]&jcsWordIndex])) {
					return moved, fmt.Errorf("jcs: duplicate key %q", k)
				}
			}
		}
		a = b
	}
	return moved, nil
}

// jcsSortWords sorts the distinct words order, of which order[:i] are in
// order: insertion sort, which is cheaper than a general sort for the small
// objects of audit events, or for larger ones a general sort.
func jcsSortWords(order []uint64, i int) {
	if len(order) > 32 {
		slices.Sort(order)
		return
	}
	for ; i < len(order); i++ {
		w := order[i]
		j := i
		for ; j > 0 && order[j-1] > w; j-- {
			order[j] = order[j-1]
		}
		order[j] = w
	}
}

// name returns the unescaped name of m.
func (c *jcsState) name(buf []byte, m *jcsMember) []byte {
	if m.esc {
		return c.keys[m.name : m.name+m.nameLen]
	}
	return buf[m.name : m.name+m.nameLen]
}

// finish sorts the members of the object that buf[open:] holds, which are
// c.stack[base:], and fills in its hole, holes[h], or drops it when the
// object is canonical as it stands.
func (c *jcsState) finish(buf []byte, open, h, base int, all byte) error {
	ms, order := c.stack[base:], c.order[base:]
	index := uint64(jcsWordIndex) // extracts the index from a word
	inOrder := true
	if all&jcsNonASCII == 0 && len(ms) <= jcsWordIndex+1 {
		// The words differ (in their indexes), and sort as the names do
		// but among those that have the same top 56 bits.
		for i := 1; i < len(order); i++ {
			if order[i-1] > order[i] {
				inOrder = false
				jcsSortWords(order, i)
				break
			}
		}
		for i := 1; i < len(order); i++ {
			if order[i-1]>>jcsWordShift == order[i]>>jcsWordShift {
				moved, err := c.sortTies(buf, ms, order[i-1:])
				if err != nil {
					return err
				}
				inOrder = inOrder && !moved
				break
			}
		}
	} else {
		index = math.MaxUint64
		for i := range order {
			order[i] = uint64(i)
		}
		slices.SortFunc(order, func(a, b uint64) int { return compareUTF16(c.name(buf, &ms[a]), c.name(buf, &ms[b])) })
		for i := 1; i < len(order); i++ {
			if k := c.name(buf, &ms[order[i-1]]); string(k) == string(c.name(buf, &ms[order[i]])) {
				return fmt.Errorf("jcs: duplicate key %q", k)
			}
		}
		for i, w := range order {
			if w != uint64(i) {
				inOrder = false
				break
			}
		}
	}
	o := &c.holes[h]
	if inOrder {
		if len(c.holes) == h+1 {
			c.holes = c.holes[:h] // no holes in it: canonical
			return nil
		}
		o.n = 0
	} else {
		first := len(c.final)
		c.final = slices.Grow(c.final, len(ms))[:first+len(ms)]
		final := c.final[first:]
		for k, w := range order {
			final[k] = ms[w&index]
		}
		o.first, o.n = int32(first), int32(len(ms))
	}
	o.start, o.end, o.next = int32(open), int32(len(buf)), int32(len(c.holes))
	return nil
}

// compareUTF16 compares the valid UTF-8 strings a and b as their UTF-16
// encodings compare, code unit by code unit: it returns a negative number
// when a sorts first, 0 when they are equal, and a positive number when b
// sorts first.
//
// UTF-8 bytes compare as the code points they encode, and so do UTF-16 code
// units, except that a character above U+FFFF is encoded as a surrogate pair
// (U+D800..U+DFFF) and so sorts before one in U+E000..U+FFFF. At the first
// byte where a and b differ, both are at the same position of a character of
// the same length (the text before is the same), so the order of those two
// bytes is the order of the two characters, and of the code units that encode
// them, unless one byte is the lead byte of a character above U+FFFF
// (0xF0..0xF4) and the other of a character in U+E000..U+FFFF (0xEE, 0xEF).
func compareUTF16(a, b []byte) int {
	n := min(len(a), len(b))
	for i := 0; i < n; i++ {
		if x, y := a[i], b[i]; x != y {
			if x >= 0xEE && y >= 0xEE && (x >= 0xF0) != (y >= 0xF0) {
				// A surrogate pair against a code unit >= 0xE000.
				if x >= 0xF0 {
					return -1
				}
				return 1
			}
			return int(x) - int(y)
		}
	}
	return len(a) - len(b)
}

// String byte classes.
const (
	jcsPlain     = 0
	jcsQuote     = 1 << iota // '"'
	jcsBackslash             // '\\'
	jcsControl               // U+0000..U+001F
	jcsNonASCII              // 0x80..0xFF
)

var jcsClass = func() (t [256]byte) {
	for i := range 0x20 {
		t[i] = jcsControl
	}
	for i := 0x80; i < 0x100; i++ {
		t[i] = jcsNonASCII
	}
	t['"'] = jcsQuote
	t['\\'] = jcsBackslash
	return t
}()

var (
	errJCSControl = errors.New("jcs: control character in string")
	errJCSUTF8    = errors.New("jcs: invalid UTF-8 in string")
	errJCSEscape  = errors.New("jcs: invalid escape in string")
	errJCSNumber  = errors.New("jcs: invalid number")
)

// jcsString appends the canonical form, quotes included, of the string that
// starts at js[i], with its opening quote, and returns the offset past its
// closing quote. class has jcsNonASCII set when the string holds a
// character above U+007F, and jcsBackslash when its canonical form has an
// escape (it holds '"', '\\' or a control character).
func jcsString(buf, js []byte, i int) ([]byte, int, byte, error) {
	// The fast path, for a string of plain ASCII: copy 8 bytes at a
	// time, all of them, and keep those up to the closing quote. The
	// first 8 start with the opening quote, which is not special.
	first := uint64(0x80)
	for i+8 <= len(js) {
		if cap(buf)-len(buf) < 8 {
			buf = slices.Grow(buf, 8)
		}
		x := binary.LittleEndian.Uint64(js[i:])
		w := len(buf)
		binary.LittleEndian.PutUint64(buf[w:w+8], x)
		if m := jcsSpecial(x) &^ first; m != 0 {
			n := bits.TrailingZeros64(m) >> 3
			if byte(x>>(8*n)) == '"' {
				return buf[:w+n+1], i + n + 1, 0, nil
			}
			return jcsStringSlow(buf[:w+n], js, i+n)
		}
		buf, i = buf[:w+8], i+8
		first = 0
	}
	if first != 0 {
		buf = append(buf, '"')
		i++
	}
	return jcsStringSlow(buf, js, i)
}

// jcsStringSlow is jcsString from js[i] on, buf holding the canonical form
// of the string up to there.
func jcsStringSlow(buf, js []byte, i int) (_ []byte, _ int, class byte, _ error) {
	for {
		// Copy 8 bytes at a time, all of them, and keep those before
		// the first special one, if any.
		for i+8 <= len(js) {
			if cap(buf)-len(buf) < 8 {
				buf = slices.Grow(buf, 8)
			}
			x := binary.LittleEndian.Uint64(js[i:])
			w := len(buf)
			binary.LittleEndian.PutUint64(buf[w:w+8], x)
			if m := jcsSpecial(x); m != 0 {
				n := bits.TrailingZeros64(m) >> 3
				buf, i = buf[:w+n], i+n
				goto special
			}
			buf, i = buf[:w+8], i+8
		}
		for i < len(js) && jcsClass[js[i]] == jcsPlain {
			buf = append(buf, js[i])
			i++
		}
		if i >= len(js) {
			return buf, i, class, jcsSyntaxError(js, i, `missing closing '"' of string`)
		}
	special:
		switch jcsClass[js[i]] {
		case jcsQuote:
			return append(buf, '"'), i + 1, class, nil
		case jcsNonASCII:
			r, size := utf8.DecodeRune(js[i:])
			if r == utf8.RuneError && size == 1 {
				return buf, i, class, errJCSUTF8
			}
			class |= jcsNonASCII
			buf = append(buf, js[i:i+size]...)
			i += size
		case jcsBackslash:
			r, n, err := jcsUnescape(js, i)
			if err != nil {
				return buf, i, class, err
			}
			switch {
			case r < 0x20 || r == '"' || r == '\\':
				buf = jcsAppendEscaped(buf, byte(r))
				class |= jcsBackslash
			case r < utf8.RuneSelf:
				buf = append(buf, byte(r))
			default:
				buf = utf8.AppendRune(buf, r)
				class |= jcsNonASCII
			}
			i += n
		default:
			return buf, i, class, errJCSControl
		}
	}
}

// jcsUnescapeCanonical appends s, the text of a canonical string (between
// its quotes), unescaped.
func jcsUnescapeCanonical(dst, s []byte) []byte {
	for i := 0; i < len(s); i++ {
		b := s[i]
		if b != '\\' {
			dst = append(dst, b)
			continue
		}
		i++
		switch s[i] {
		case 'b':
			b = '\b'
		case 'f':
			b = '\f'
		case 'n':
			b = '\n'
		case 'r':
			b = '\r'
		case 't':
			b = '\t'
		case 'u': // \u00xx
			r, _ := jcsHex4(s, i+1)
			b = byte(r)
			i += 4
		default: // '"', '\\'
			b = s[i]
		}
		dst = append(dst, b)
	}
	return dst
}

const jcsHex = "0123456789abcdef"

// jcsAppendEscaped appends the canonical escape of '"', '\\' or a control
// character.
func jcsAppendEscaped(dst []byte, b byte) []byte {
	switch b {
	case '"', '\\':
		return append(dst, '\\', b)
	case '\b':
		return append(dst, '\\', 'b')
	case '\t':
		return append(dst, '\\', 't')
	case '\n':
		return append(dst, '\\', 'n')
	case '\f':
		return append(dst, '\\', 'f')
	case '\r':
		return append(dst, '\\', 'r')
	}
	return append(dst, '\\', 'u', '0', '0', jcsHex[b>>4], jcsHex[b&0xF])
}

// jcsSpecial returns x, 8 bytes little-endian, with the high bit of the
// lowest byte that is '"', '\\', a control character or not ASCII set, and
// maybe that of bytes above it; or 0 when there is none.
func jcsSpecial(x uint64) uint64 {
	const lo, hi = 0x0101010101010101, 0x8080808080808080
	q := x ^ (lo * '"')
	b := x ^ (lo * '\\')
	// Subtracting lo from v sets the high bit of a byte of v that is 0 (of
	// q that is '"', of b that is '\\'), subtracting lo*0x20 from x that
	// of a byte below 0x20, and x has it set in a byte that is not ASCII.
	// They set it falsely only in bytes that are not ASCII (which x
	// flags anyway) or above a byte that they flag truly (by a borrow), so
	// the lowest is true.
	return ((x - lo*0x20) | (q - lo) | (b - lo) | x) & hi
}

// jcsUnescape decodes the escape at s[i] (a backslash): the character it stands
// for and its length in bytes. A \u escape of a high surrogate must be
// followed by one of a low surrogate, and the pair stands for one character.
func jcsUnescape(s []byte, i int) (r rune, n int, err error) {
	if i+1 >= len(s) {
		return 0, 0, errJCSEscape
	}
	switch s[i+1] {
	case '"', '\\', '/':
		return rune(s[i+1]), 2, nil
	case 'b':
		return '\b', 2, nil
	case 'f':
		return '\f', 2, nil
	case 'n':
		return '\n', 2, nil
	case 'r':
		return '\r', 2, nil
	case 't':
		return '\t', 2, nil
	case 'u':
		r, ok := jcsHex4(s, i+2)
		if !ok {
			return 0, 0, errJCSEscape
		}
		switch {
		case r < 0xD800 || r > 0xDFFF:
			return r, 6, nil
		case r <= 0xDBFF && i+7 < len(s) && s[i+6] == '\\' && s[i+7] == 'u':
			if r2, ok := jcsHex4(s, i+8); ok && r2 >= 0xDC00 && r2 <= 0xDFFF {
				return 0x10000 + (r-0xD800)<<10 + (r2 - 0xDC00), 12, nil
			}
		}
		return 0, 0, fmt.Errorf("jcs: lone surrogate %q in string", s[i:i+6])
	}
	return 0, 0, errJCSEscape
}

// jcsHex4 decodes the four hex digits at s[i:].
func jcsHex4(s []byte, i int) (rune, bool) {
	if i+4 > len(s) {
		return 0, false
	}
	var r rune
	for _, b := range s[i : i+4] {
		switch {
		case '0' <= b && b <= '9':
			b -= '0'
		case 'a' <= b && b <= 'f':
			b -= 'a' - 10
		case 'A' <= b && b <= 'F':
			b -= 'A' - 10
		default:
			return 0, false
		}
		r = r<<4 | rune(b)
	}
	return r, true
}

// jcsNumChar holds the bytes that fastjson, which Append once used,
// takes as part of a number: a number token is the longest run of them, and
// is then checked against the JSON grammar ("1.2.3" is an invalid number,
// not a number followed by garbage).
var jcsNumChar = func() (t [256]bool) {
	for _, b := range []byte("0123456789.eE+-") {
		t[b] = true
	}
	return t
}()

// jcsNumberValue appends the canonical form of the number at js[i], which is
// at the given depth, and returns the offset past it.
func jcsNumberValue(buf, js []byte, i, depth int) ([]byte, int, error) {
	// The fast path, for a number without exponent of at most 15
	// significant digits, not below 1e-6 (see jcsNumber): it is written as
	// it stands, less the trailing zeros of its fraction.
	j := i
	if js[j] == '-' {
		j++
	}
	d := j
	for j < len(js) && js[j]-'0' < 10 {
		j++
	}
	if n := j - d; n > 0 && (js[d] != '0' || n == 1) {
		if j < len(js) && js[j] == '.' {
			f := j + 1
			k := f
			for k < len(js) && js[k]-'0' < 10 {
				k++
			}
			if k > f && (k == len(js) || !jcsNumChar[js[k]]) {
				e := k // the end of the fraction, less its trailing zeros
				for js[e-1] == '0' {
					e--
				}
				switch {
				case e == f && n == 1 && js[d] == '0':
					return append(buf, '0'), k, nil // and -0.0 too
				case e == f && n <= 15:
					return append(buf, js[i:j]...), k, nil
				case js[d] != '0' && n+e-f <= 15:
					return append(buf, js[i:e]...), k, nil
				case js[d] == '0':
					z := f // the first significant digit
					for js[z] == '0' {
						z++
					}
					if z-f <= 5 && e-z <= 15 {
						return append(buf, js[i:e]...), k, nil
					}
				}
			}
		} else if n <= 15 && (j == len(js) || !jcsNumChar[js[j]]) {
			if n == 1 && js[d] == '0' {
				return append(buf, '0'), j, nil // and -0 too
			}
			return append(buf, js[i:j]...), j, nil
		}
	}
	for j < len(js) && jcsNumChar[js[j]] {
		j++
	}
	if j < len(js) && (j == i || j == i+1 && (js[i] == '-' || js[i] == '+')) {
		// No digits: [+-]?(inf|nan), in any case, is an invalid number,
		// anything else is not a value.
		if jcsNaNInf(js, j) {
			return buf, i, jcsBadNumber(js, i, j+3, depth)
		}
		return buf, i, jcsSyntaxError(js, j, "unexpected value")
	}
	out, err := jcsNumber(buf, js[i:j])
	if err == errJCSNumber {
		return buf, i, jcsBadNumber(js, i, j, depth)
	}
	if err != nil {
		return buf, i, err
	}
	return out, j, nil
}

// jcsNaNInf reports whether js[i:] starts with "nan" or "inf", in any case.
func jcsNaNInf(js []byte, i int) bool {
	if len(js)-i < 3 {
		return false
	}
	w := string([]byte{js[i] | 0x20, js[i+1] | 0x20, js[i+2] | 0x20})
	return w == "nan" || w == "inf"
}

// jcsBadNumber returns the error for the invalid number js[i:end] at the
// given depth: what follows it is checked first, so that a word such as
// Infinity is reported as the syntax error it is.
func jcsBadNumber(js []byte, i, end, depth int) error {
	k := jcsSkipWS(js, end)
	switch {
	case depth == 1 && k < len(js):
		return jcsTailError(js, k)
	case depth > 1 && (k == len(js) || js[k] != ',' && js[k] != ']' && js[k] != '}'):
		return jcsSyntaxError(js, k, "missing ',' after value")
	}
	return fmt.Errorf("%w %q", errJCSNumber, js[i:end])
}

// jcsNumber appends the canonical form of lit, a non-empty run of number
// characters; it returns errJCSNumber itself when lit is not a JSON number.
func jcsNumber(dst, lit []byte) ([]byte, error) {
	// Check the JSON grammar: -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?
	i := 0
	if lit[0] == '-' {
		i++
	}
	intStart := i
	switch {
	case i < len(lit) && lit[i] == '0':
		i++
	case i < len(lit) && '1' <= lit[i] && lit[i] <= '9':
		for i < len(lit) && '0' <= lit[i] && lit[i] <= '9' {
			i++
		}
	default:
		return dst, errJCSNumber
	}
	intEnd, fracEnd := i, i
	if i < len(lit) && lit[i] == '.' {
		i++
		j := i
		for i < len(lit) && '0' <= lit[i] && lit[i] <= '9' {
			i++
		}
		if i == j {
			return dst, errJCSNumber
		}
		fracEnd = i
	}
	if i == len(lit) {
		// Fast path, no exponent. A decimal of at most 15 significant
		// digits reads as a double that no other decimal of at most 15
		// digits reads as (DBL_DIG is 15), so its shortest digits are its
		// own, without trailing zeros. In [1e-6, 1e21) ECMAScript writes
		// them in plain notation: the literal, less the trailing zeros of
		// its fraction.
		for fracEnd > intEnd && (lit[fracEnd-1] == '0' || lit[fracEnd-1] == '.') {
			fracEnd--
		}
		if lit[intStart] != '0' {
			digits := fracEnd - intStart
			if fracEnd > intEnd {
				digits-- // the '.'
			}
			if digits <= 15 {
				return append(dst, lit[:fracEnd]...), nil
			}
		} else {
			// 0.000ddd: at most 5 zeros after the point keeps it >= 1e-6.
			z := intEnd + 1
			for z < fracEnd && lit[z] == '0' {
				z++
			}
			switch {
			case fracEnd <= intEnd+1: // zero, maybe negative
				return append(dst, '0'), nil
			case z-(intEnd+1) <= 5 && fracEnd-z <= 15:
				return append(dst, lit[:fracEnd]...), nil
			}
		}
	} else {
		if lit[i] != 'e' && lit[i] != 'E' {
			return dst, errJCSNumber
		}
		i++
		if i < len(lit) && (lit[i] == '+' || lit[i] == '-') {
			i++
		}
		j := i
		for i < len(lit) && '0' <= lit[i] && lit[i] <= '9' {
			i++
		}
		if i == j || i != len(lit) {
			return dst, errJCSNumber
		}
	}
	// lit is not modified while ParseFloat reads it, and ParseFloat keeps
	// only a copy of it (in its error).
	f, err := strconv.ParseFloat(unsafe.String(&lit[0], len(lit)), 64)
	if err != nil {
		return dst, fmt.Errorf("jcs: number %s out of range for a double", lit)
	}
	return jcsAppendNumber(dst, f), nil
}

// jcsAppendNumber appends the finite f as ECMAScript's Number.prototype.toString
// writes it.
func jcsAppendNumber(dst []byte, f float64) []byte {
	if f == 0 {
		return append(dst, '0') // and -0 too
	}
	if abs := math.Abs(f); abs >= 1e-6 && abs < 1e21 {
		return strconv.AppendFloat(dst, f, 'f', -1, 64)
	}
	dst = strconv.AppendFloat(dst, f, 'e', -1, 64)
	// Go writes at least two exponent digits (1e-07); ECMAScript, no
	// leading zero (1e-7). With |f| >= 1e21 the exponent has two digits.
	if n := len(dst); dst[n-4] == 'e' && dst[n-2] == '0' {
		dst[n-2] = dst[n-1]
		dst = dst[:n-1]
	}
	return dst
}

// jcsSkipWS returns the offset of the first byte at or after js[i] that is
// not JSON whitespace.
func jcsSkipWS(js []byte, i int) int {
	for i < len(js) && js[i] <= ' ' && (js[i] == ' ' || js[i] == '\n' || js[i] == '\r' || js[i] == '\t') {
		i++
	}
	return i
}

// jcsSyntaxError reports that js is not JSON, at offset i.
func jcsSyntaxError(js []byte, i int, msg string) error {
	return fmt.Errorf("jcs: cannot parse JSON: %s at offset %d: %q", msg, i, jcsExcerpt(js, i))
}

// jcsTailError reports that a value ends before js[i], which is not
// whitespace.
func jcsTailError(js []byte, i int) error {
	return fmt.Errorf("jcs: unexpected tail at offset %d: %q", i, jcsExcerpt(js, i))
}

// jcsExcerpt returns at most 32 bytes of js from offset i on.
func jcsExcerpt(js []byte, i int) []byte {
	i = min(i, len(js))
	return js[i:min(len(js), i+32)]
}
