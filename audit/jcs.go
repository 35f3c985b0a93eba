package audit

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

// AppendCanonical appends the RFC 8785 canonical form (JSON Canonicalization
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
// AppendCanonical returns an error, and dst unchanged, when js is not JSON
// (including number forms JSON lacks, such as 01, 1., .5, +1, NaN, Infinity),
// when an object has two members with the same name ("duplicate key"), when
// a string holds invalid UTF-8 or an escaped lone surrogate such as "\ud800",
// when a number is too large for a double (1e400), or when values nest more
// than fastjson.MaxDepth (300) deep.
//
// p is reused between calls to save allocations; it is not safe for
// concurrent use, and the result does not depend on what p parsed before.
// With a warm p and a dst of sufficient capacity AppendCanonical does not
// allocate. js may share memory with dst: AppendCanonical(b[:0], p, b)
// canonicalizes b in place.
func AppendCanonical(dst []byte, p *fastjson.Parser, js []byte) ([]byte, error) {
	v, err := p.ParseBytes(js)
	if err != nil {
		return dst, fmt.Errorf("jcs: %w", err)
	}
	c := jcsPool.Get().(*jcsState)
	c.js = js
	c.checked = false
	if jcsOverlap(dst[len(dst):cap(dst)], js) {
		// Writing to dst may overwrite js, which checkStrings may need:
		// check now (fastjson parsed a copy, the rest reads that).
		if err := c.checkStrings(); err != nil {
			c.release()
			return dst, err
		}
	}
	out, err := c.value(dst, v)
	c.release()
	if err != nil {
		return dst, err
	}
	return out, nil
}

// How it works. fastjson checks the structure of js, but it is lenient where
// JCS must not be: it takes number-like words (1.2.3, NaN, inf), keeps raw
// control characters, invalid escapes and invalid UTF-8 in strings, and its
// unescaping turns lone surrogates into U+FFFD or leaves them as text. So
// AppendCanonical takes from fastjson only the tree, and reads every string
// and number value in its raw form, as written in js: Value.MarshalTo writes
// exactly that for strings and numbers that nobody has asked fastjson to
// unescape. Those are validated and rewritten in place, in dst.
//
// Member names, though, fastjson hands out only unescaped, with the raw form
// gone. A name whose unescaped form is plain (no '\\', no control character,
// only ASCII) can only come from a valid raw name; for any other name every
// string in js is checked once against the strict grammar (checkStrings),
// after which fastjson's unescaping is known to be exact.
//
// Object.Visit asks its callback not to keep the name and value it is given.
// Both point into the Parser's buffers, which stay in place until its next
// Parse, and sorting needs them after the callback: AppendCanonical keeps them
// until it returns, no longer. (The tests would catch a fastjson that moved
// them.)

// jcsOverlap reports whether a and b share memory (as
// crypto/internal/alias.AnyOverlap does).
func jcsOverlap(a, b []byte) bool {
	return len(a) > 0 && len(b) > 0 &&
		uintptr(unsafe.Pointer(&a[0])) <= uintptr(unsafe.Pointer(&b[len(b)-1])) &&
		uintptr(unsafe.Pointer(&b[0])) <= uintptr(unsafe.Pointer(&a[len(a)-1]))
}

var jcsPool = sync.Pool{New: func() any { return new(jcsState) }}

// jcsState is the scratch state of one AppendCanonical call.
type jcsState struct {
	js      []byte // the input, for checkStrings
	checked bool   // checkStrings has passed
	// members is a stack of the members of the objects being written, the
	// innermost last, and order a stack of their sort words (see object).
	members []jcsMember
	order   []uint64
}

type jcsMember struct {
	name  []byte // unescaped
	value *fastjson.Value
	esc   bool // the name has a byte to escape
}

// Scratch above this size is not kept in the pool.
const jcsMaxPooled = 1 << 12

func (c *jcsState) release() {
	c.js = nil
	clear(c.members[:cap(c.members)]) // drop references into the Parser
	c.members, c.order = c.members[:0], c.order[:0]
	if cap(c.members) > jcsMaxPooled || cap(c.order) > jcsMaxPooled {
		return
	}
	jcsPool.Put(c)
}

func (c *jcsState) value(dst []byte, v *fastjson.Value) ([]byte, error) {
	// GetObject, GetArray and MarshalTo read the value as parsed; Type and
	// StringBytes would unescape strings first, losing their raw form.
	if o := v.GetObject(); o != nil {
		return c.object(dst, o)
	}
	if a := v.GetArray(); len(a) > 0 {
		dst = append(dst, '[')
		for i, e := range a {
			if i > 0 {
				dst = append(dst, ',')
			}
			var err error
			if dst, err = c.value(dst, e); err != nil {
				return dst, err
			}
		}
		return append(dst, ']'), nil
	}
	start := len(dst)
	dst = v.MarshalTo(dst)
	lit := dst[start:]
	switch lit[0] {
	case '"':
		return canonString(dst, start)
	case 't', 'f', '[': // true, false, []
		return dst, nil
	case 'n':
		if len(lit) == len("null") { // not "nan"
			return dst, nil
		}
	}
	return canonNumber(dst, start)
}

// The sort word of a member of an object of at most 256 members with ASCII
// names holds the first 8 bytes of the name, 7 bits each, zero-padded, then
// the member's index in the object in the low 8 bits. ASCII bytes compare as
// UTF-16 code units do, and the padding sorts a shorter name first (or ties
// with a NUL), so when two words differ in their top 56 bits, they compare as
// the names do. For other objects, the word is just the index.
const (
	jcsWordShift = 8
	jcsWordIndex = 1<<jcsWordShift - 1
)

func (c *jcsState) object(dst []byte, o *fastjson.Object) ([]byte, error) {
	base := len(c.members)
	var err error
	var all byte // the byte classes of all names
	o.Visit(func(k []byte, v *fastjson.Value) {
		var class byte
		var word uint64
		for i, b := range k {
			class |= jcsClass[b]
			if i < 8 {
				word |= uint64(b) << (64 - 7 - 7*i)
			}
		}
		all |= class
		if class&^jcsQuote != 0 && !c.checked && err == nil {
			// The name held an escape, a control character or non-ASCII
			// text: fastjson may have unescaped it leniently.
			err = c.checkStrings()
		}
		i := len(c.members) - base
		// Filled in place: a struct built aside and copied in is read back
		// with wider loads than it was written with, which stalls.
		c.members = append(c.members, jcsMember{})
		m := &c.members[len(c.members)-1]
		m.name, m.value = k, v
		m.esc = class&(jcsQuote|jcsBackslash|jcsControl) != 0
		c.order = append(c.order, word|uint64(i&jcsWordIndex))
	})
	if err != nil {
		return dst, err
	}
	ms, order := c.members[base:], c.order[base:]
	index := uint64(jcsWordIndex) // extracts the index from a word
	if all&jcsNonASCII == 0 && len(ms) <= jcsWordIndex+1 {
		jcsSortWords(order, ms)
		for i := 1; i < len(order); i++ {
			// Equal names have equal words but for the index.
			if a, b := order[i-1], order[i]; a>>jcsWordShift == b>>jcsWordShift {
				if k := ms[a&index].name; string(k) == string(ms[b&index].name) {
					return dst, fmt.Errorf("jcs: duplicate key %q", k)
				}
			}
		}
	} else {
		index = math.MaxUint64
		for i := range order {
			order[i] = uint64(i)
		}
		slices.SortFunc(order, func(a, b uint64) int { return compareUTF16(ms[a].name, ms[b].name) })
		for i := 1; i < len(order); i++ {
			if k := ms[order[i-1]].name; string(k) == string(ms[order[i]].name) {
				return dst, fmt.Errorf("jcs: duplicate key %q", k)
			}
		}
	}
	dst = append(dst, '{')
	for i := range len(ms) {
		// c.members and c.order may grow (and move) in the recursion.
		m := &c.members[base+int(c.order[base+i]&index)]
		if i > 0 {
			dst = append(dst, ',')
		}
		if m.esc {
			dst = jcsAppendName(dst, m.name)
		} else {
			dst = append(dst, '"')
			dst = append(dst, m.name...)
			dst = append(dst, '"')
		}
		dst = append(dst, ':')
		if dst, err = c.value(dst, m.value); err != nil {
			return dst, err // release resets the stacks
		}
	}
	clear(c.members[base:])
	c.members, c.order = c.members[:base], c.order[:base]
	return append(dst, '}'), nil
}

// jcsSortWords sorts the sort words of the members ms of an object with
// ASCII names: insertion sort, which is cheaper than a general sort for the
// small objects of audit events.
func jcsSortWords(order []uint64, ms []jcsMember) {
	for i := 1; i < len(order); i++ {
		w := order[i]
		j := i
		for ; j > 0; j-- {
			p := order[j-1]
			if p>>jcsWordShift < w>>jcsWordShift ||
				p>>jcsWordShift == w>>jcsWordShift && string(ms[p&jcsWordIndex].name) <= string(ms[w&jcsWordIndex].name) {
				break
			}
			order[j] = p
		}
		order[j] = w
	}
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

// jcsAppendName appends a member name, k unescaped, as a canonical JSON
// string.
func jcsAppendName(dst, k []byte) []byte {
	dst = append(dst, '"')
	for _, b := range k {
		if jcsClass[b]&(jcsQuote|jcsBackslash|jcsControl) != 0 {
			dst = jcsAppendEscaped(dst, b)
		} else {
			dst = append(dst, b)
		}
	}
	return append(dst, '"')
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

var (
	errJCSControl = errors.New("jcs: control character in string")
	errJCSUTF8    = errors.New("jcs: invalid UTF-8 in string")
	errJCSEscape  = errors.New("jcs: invalid escape in string")
	errJCSNumber  = errors.New("jcs: invalid number")
)

// canonString rewrites dst[start:], a JSON string as written in the input
// (quotes included), to its canonical form. The canonical form is never
// longer: an escape is rewritten as at most as many bytes as it takes, so the
// rewriting runs in place, behind the reading.
func canonString(dst []byte, start int) ([]byte, error) {
	s := dst[start+1 : len(dst)-1] // the text between the quotes
	// Fast path: a string without escapes is already canonical once it is
	// known to be valid.
	i := 0
scan:
	for {
		if i += jcsPlainRun(s[i:]); i == len(s) {
			return dst, nil
		}
		switch jcsClass[s[i]] {
		case jcsNonASCII:
			r, size := utf8.DecodeRune(s[i:])
			if r == utf8.RuneError && size == 1 {
				return dst, errJCSUTF8
			}
			i += size
		case jcsBackslash:
			break scan
		default:
			return dst, errJCSControl // or a stray '"', which fastjson cannot give
		}
	}
	w := i
	for i < len(s) {
		if n := jcsPlainRun(s[i:]); n > 0 {
			w += copy(s[w:], s[i:i+n])
			i += n
			continue
		}
		switch jcsClass[s[i]] {
		case jcsNonASCII:
			r, size := utf8.DecodeRune(s[i:])
			if r == utf8.RuneError && size == 1 {
				return dst, errJCSUTF8
			}
			w += copy(s[w:], s[i:i+size])
			i += size
		case jcsBackslash:
			r, n, err := jcsUnescape(s, i)
			if err != nil {
				return dst, err
			}
			i += n
			if r < 0x20 || r == '"' || r == '\\' {
				w += len(jcsAppendEscaped(s[w:w], byte(r)))
			} else {
				w += utf8.EncodeRune(s[w:], r)
			}
		default:
			return dst, errJCSControl
		}
	}
	end := start + 1 + w
	dst[end] = '"'
	return dst[:end+1], nil
}

// jcsPlainRun returns the length of the longest prefix of s without a '"',
// '\\', control character or non-ASCII byte, looking at 8 bytes at a time.
func jcsPlainRun(s []byte) int {
	if len(s) < 8 {
		i := 0
		for i < len(s) && jcsClass[s[i]] == jcsPlain {
			i++
		}
		return i
	}
	i := 0
	for ; i+8 <= len(s); i += 8 {
		if m := jcsSpecial(binary.LittleEndian.Uint64(s[i:])); m != 0 {
			return i + bits.TrailingZeros64(m)>>3
		}
	}
	if i < len(s) {
		// The last 8 bytes, of which those before i are known plain.
		i = len(s) - 8
		if m := jcsSpecial(binary.LittleEndian.Uint64(s[i:])); m != 0 {
			return i + bits.TrailingZeros64(m)>>3
		}
	}
	return len(s)
}

// jcsSpecial returns x, 8 bytes little-endian, with the high bit of the
// lowest byte that is '"', '\\', a control character or not ASCII set, and
// maybe that of bytes above it; or 0 when there is none.
func jcsSpecial(x uint64) uint64 {
	const lo, hi = 0x0101010101010101, 0x8080808080808080
	q := x ^ (lo * '"')
	b := x ^ (lo * '\\')
	// The high bit of a byte is set in (v-lo)&^v where the byte of v is 0,
	// in (x-0x20*lo)&^x where that of x is below 0x20, and in x where it
	// is not ASCII; and is set falsely only above a byte where it is set
	// truly (by a borrow), so the lowest is true.
	return ((x-lo*0x20)&^x | (q-lo)&^q | (b-lo)&^b | x) & hi
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

// checkStrings checks every string in c.js, which fastjson has parsed, against
// the JSON grammar and for valid UTF-8 and paired surrogates. Outside strings
// a parsed text has no '"', so each one found there opens a string.
func (c *jcsState) checkStrings() error {
	c.checked = true
	js := c.js
	inString := false
	for i := 0; i < len(js); {
		b := js[i]
		if !inString {
			if b == '"' {
				inString = true
			}
			i++
			continue
		}
		switch jcsClass[b] {
		case jcsPlain:
			i++
		case jcsQuote:
			inString = false
			i++
		case jcsNonASCII:
			r, size := utf8.DecodeRune(js[i:])
			if r == utf8.RuneError && size == 1 {
				return errJCSUTF8
			}
			i += size
		case jcsBackslash:
			_, n, err := jcsUnescape(js, i)
			if err != nil {
				return err
			}
			i += n
		default:
			return errJCSControl
		}
	}
	if inString {
		return errors.New("jcs: unterminated string")
	}
	return nil
}

// canonNumber rewrites dst[start:], a number as written in the input, to its
// canonical form.
func canonNumber(dst []byte, start int) ([]byte, error) {
	lit := dst[start:]
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
		return dst, jcsNumberError(lit)
	}
	intEnd, fracEnd := i, i
	if i < len(lit) && lit[i] == '.' {
		i++
		j := i
		for i < len(lit) && '0' <= lit[i] && lit[i] <= '9' {
			i++
		}
		if i == j {
			return dst, jcsNumberError(lit)
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
				return dst[:start+fracEnd], nil
			}
		} else {
			// 0.000ddd: at most 5 zeros after the point keeps it >= 1e-6.
			z := intEnd + 1
			for z < fracEnd && lit[z] == '0' {
				z++
			}
			switch {
			case fracEnd <= intEnd+1: // zero, maybe negative
				return append(dst[:start], '0'), nil
			case z-(intEnd+1) <= 5 && fracEnd-z <= 15:
				return dst[:start+fracEnd], nil
			}
		}
	} else {
		if lit[i] != 'e' && lit[i] != 'E' {
			return dst, jcsNumberError(lit)
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
			return dst, jcsNumberError(lit)
		}
	}
	// lit is not modified while ParseFloat reads it, and ParseFloat keeps
	// only a copy of it (in its error).
	f, err := strconv.ParseFloat(unsafe.String(&lit[0], len(lit)), 64)
	if err != nil {
		return dst, fmt.Errorf("jcs: number %s out of range for a double", lit)
	}
	return jcsAppendNumber(dst[:start], f), nil
}

func jcsNumberError(lit []byte) error {
	return fmt.Errorf("%w %q", errJCSNumber, lit)
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
