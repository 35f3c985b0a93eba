package proxy

// fieldScanner reads chosen members of one JSON value that arrives in
// pieces of any size, without holding the value: what it keeps is the
// stack of the containers it is inside and the bytes of the scalar it is
// reading, if that scalar is one it was asked for (at most maxFieldBytes of
// it). It is how the proxy reads usage, finish reasons and errors from an
// answer of any size (a rerank answer puts usage near its start, a chat
// answer with prompt_token_ids puts it before megabytes of token ids) and
// from an SSE event too large to hold.
//
// What to read is a fieldSpec: a tree of member names, where an array's
// elements share one node. The scanner calls its sink for every value a
// node with a slot matches, in document order: a scalar with its bytes as
// they stand in the JSON text (a string without its quotes, still
// escaped), an object or array once when it opens and once when it closes.
// Duplicate members are all reported, in order, so a sink that keeps the
// last keeps what Python's json keeps (vLLM's clients parse with it, and a
// sink must not know more than they do).
//
// The scanner checks the grammar of the whole value as Python's json does
// (brackets, commas, colons, keys, escapes, numbers and literals, NaN and
// Infinity included, no control character in a string), inside containers
// no node matches too, and refuses nesting deeper than maxDepth. A value
// found malformed stops the scan: failed reports it, and the sink's reports
// up to there are to be dropped, since a whole-body parser (vLLM's, a
// client's json.loads) would have read nothing.
type fieldScanner struct {
	spec *fieldSpec
	sink fieldSink
	// pieces is sink, if it takes the pieces of the scalars it reads.
	pieces fieldPieceSink

	state scanState
	stack []scanFrame
	// valNode is the node of the value about to start, -1 for none.
	valNode int32

	key         []byte
	keyOverflow bool

	// leaf collects a scalar being read for slot leafSlot (0: read, not
	// kept). leafString says it is a string.
	leaf       []byte
	leafSlot   int
	leafTrunc  bool
	leafString bool
	// esc is where a string is in an escape: escNone, escBackslash after
	// a backslash, or 1-4: the hex digits of a \u escape still to come.
	esc uint8
	// num is where a number or literal is in its grammar; lit is the
	// literal being matched, litPos how much of it has been.
	num    scalarState
	lit    string
	litPos int

	// A container no node matches is checked by skip, without a frame:
	// skipDepth is the depth inside it, skipArr a bit per level (1: an
	// array), skState what comes next, skipKey that the string being read
	// is a key.
	skState   skipState
	skipDepth int
	skipArr   [maxDepth/64 + 1]uint64
	skipKey   bool
	failed    bool
}

// maxDepth bounds the nesting of containers, as Python's json does: it
// refuses a value nested deeper than its recursion limit allows (measured
// with 3.11 and the default limit of 1000: depth 995 parses, 996 does not;
// 3.12 counts against a C recursion limit of about 1500, later releases
// allow more). A value nested deeper than this is refused here, so that no
// field is read from a body no Python release parses; between the two a
// field may be read from a body an older Python refuses. It also bounds
// the scanner's memory (skipArr).
const maxDepth = 10000

const (
	escNone      = 0
	escBackslash = 5
)

type scalarState uint8

const (
	nStart     scalarState = iota
	nMinus                 // "-"
	nZero                  // an integer part "0": a fraction or exponent may follow
	nInt                   // in an integer part that does not start with 0
	nDot                   // after ".": a digit must follow
	nFrac                  // in the fraction
	nExp                   // after "e": a sign or digit must follow
	nExpSign               // after the exponent's sign
	nExpDigits             // in the exponent
	nLit                   // in a literal (lit, litPos)
	nBad
)

type skipState uint8

const (
	skValue       skipState = iota // a value is expected
	skElemOrClose                  // after "[": a value or "]"
	skKeyOrClose                   // after "{": a key or "}"
	skKey                          // after "," in an object: a key
	skColon                        // after a key
	skAfter                        // "," or the container's closing bracket
	skString                       // in a key or string
	skScalar                       // in a number or literal
)

// fieldSink takes what a fieldScanner reads: a value matched by a node
// with a slot. raw is valid only during the call.
type fieldSink interface {
	take(slot int, kind fieldKind, raw []byte, truncated bool)
}

// fieldPieceSink is a fieldSink that is also handed every piece of a
// scalar reported to it as the piece arrives, before take: a string's
// escaped bytes (str), a number's or literal's text. A sink reads a scalar
// longer than maxFieldBytes this way without holding it (a request's model
// name, a number of any length).
type fieldPieceSink interface {
	fieldSink
	piece(slot int, str bool, b []byte)
}

// fieldKind says what a sink is told about.
type fieldKind uint8

const (
	fieldString fieldKind = iota // raw: the escaped bytes between the quotes
	fieldScalar                  // a number, true, false, null, NaN, Infinity: raw as written
	fieldOpen                    // an object or array begins; raw is "{" or "["
	fieldClose                   // it ends; raw is "}" or "]", "{}" or "[]" if it was empty
)

// maxFieldBytes bounds the bytes of one scalar kept for a sink. A longer
// one is reported cut, with truncated set; nothing vLLM sends in the
// members read is that long.
const maxFieldBytes = 2 << 10

// maxKeyBytes bounds a member name compared with the spec's: a longer one
// matches no node (escapes take at most six bytes a character).
const maxKeyBytes = 256

type scanState uint8

const (
	stValue       scanState = iota // a value is expected
	stElemOrClose                  // after "[": a value or "]"
	stKeyOrClose                   // after "{": a key or "}"
	stKeyStart                     // after "," in an object: a key
	stKey                          // inside a key
	stColon                        // after a key
	stAfterValue                   // "," or the container's closing bracket
	stString                       // inside a string value
	stScalar                       // inside a number or literal
	stSkip                         // inside an unmatched container (see skip)
	stEnd                          // after the root value: only whitespace
)

type scanFrame struct {
	node  int32
	array bool
	// filled: a member or element has begun (a sink is told an empty
	// container at its close).
	filled bool
}

// fieldSpec is a compiled tree of member names (see field).
type fieldSpec struct {
	nodes []fieldNode // nodes[0] is the root value
}

type fieldNode struct {
	name    string
	slot    int
	members []int32 // an object value's members
	elem    int32   // an array value's elements, -1 none
}

// field declares one node of a fieldSpec: a member's name, the slot its
// value is reported under (0: not reported, only descended into), the
// members read when the value is an object, and the node each element
// matches when it is an array.
type field struct {
	name    string
	slot    int
	members []field
	each    *field
}

func compileFieldSpec(root field) *fieldSpec {
	s := &fieldSpec{}
	var add func(f field) int32
	add = func(f field) int32 {
		i := int32(len(s.nodes))
		s.nodes = append(s.nodes, fieldNode{name: f.name, slot: f.slot, elem: -1})
		var members []int32
		for _, m := range f.members {
			members = append(members, add(m))
		}
		s.nodes[i].members = members
		if f.each != nil {
			e := add(*f.each)
			s.nodes[i].elem = e
		}
		return i
	}
	add(root)
	return s
}

// reset makes the scanner ready for a new value.
func (s *fieldScanner) reset(spec *fieldSpec, sink fieldSink) {
	s.spec, s.sink = spec, sink
	s.pieces, _ = sink.(fieldPieceSink)
	s.state = stValue
	s.stack = s.stack[:0]
	s.valNode = 0
	s.key = s.key[:0]
	s.leaf = s.leaf[:0]
	s.leafSlot, s.leafTrunc, s.leafString, s.esc = 0, false, false, escNone
	s.num, s.lit, s.litPos = nStart, "", 0
	s.skState, s.skipDepth, s.skipKey = skValue, 0, false
	s.failed = false
}

func (s *fieldScanner) fail() { s.failed = true }

// write scans the next piece of the value.
func (s *fieldScanner) write(b []byte) {
	for i := 0; i < len(b) && !s.failed; {
		i = s.step(b, i)
	}
}

// close ends the value and reports whether it was a whole, well-formed
// JSON value. A scalar at the root ends here.
func (s *fieldScanner) close() bool {
	if s.failed {
		return false
	}
	if s.state == stScalar {
		s.endScalar()
		if s.failed {
			return false
		}
	}
	return s.state == stEnd
}

// step consumes b from i on, as far as the current state goes, and returns
// where it stopped.
func (s *fieldScanner) step(b []byte, i int) int {
	switch s.state {
	case stSkip:
		return s.skip(b, i)
	case stString, stKey:
		return s.inString(b, i)
	case stScalar:
		start := i
		for i < len(b) && !isScalarEnd(b[i]) {
			i++
		}
		s.scalarBytes(b[start:i])
		s.keepLeaf(b[start:i])
		if i < len(b) {
			s.endScalar()
		}
		return i
	}
	c := b[i]
	if c == ' ' || c == '\t' || c == '\n' || c == '\r' {
		return i + 1
	}
	switch s.state {
	case stElemOrClose:
		if c == ']' {
			return s.closeContainer(i)
		}
		s.stack[len(s.stack)-1].filled = true
		return s.startValue(b, i)
	case stValue:
		return s.startValue(b, i)
	case stKeyOrClose:
		if c == '}' {
			return s.closeContainer(i)
		}
		fallthrough
	case stKeyStart:
		if c != '"' {
			s.fail()
			return i
		}
		s.stack[len(s.stack)-1].filled = true
		s.key = s.key[:0]
		s.keyOverflow = false
		s.esc = escNone
		s.state = stKey
	case stColon:
		if c != ':' {
			s.fail()
			return i
		}
		s.valNode = s.memberNode()
		s.state = stValue
	case stAfterValue:
		top := s.stack[len(s.stack)-1]
		switch {
		case c == ',' && top.array:
			s.valNode = s.spec.nodes[top.node].elem
			s.state = stValue
		case c == ',':
			s.state = stKeyStart
		case c == '}' && !top.array, c == ']' && top.array:
			return s.closeContainer(i)
		default:
			s.fail()
		}
	case stEnd:
		s.fail()
	}
	return i + 1
}

// startValue begins the value whose first byte is b[i], for node valNode.
func (s *fieldScanner) startValue(b []byte, i int) int {
	node := s.valNode
	slot := 0
	if node >= 0 {
		slot = s.spec.nodes[node].slot
	}
	switch c := b[i]; c {
	case '{', '[':
		if len(s.stack) >= maxDepth {
			s.fail()
			return i
		}
		if node < 0 {
			s.skipDepth = 0
			s.pushSkip(c == '[')
			s.state = stSkip
			return i + 1
		}
		s.stack = append(s.stack, scanFrame{node: node, array: c == '['})
		if slot > 0 {
			s.sink.take(slot, fieldOpen, b[i:i+1], false)
		}
		if c == '[' {
			s.valNode = s.spec.nodes[node].elem
			s.state = stElemOrClose
		} else {
			s.state = stKeyOrClose
		}
	case '"':
		s.beginLeaf(slot, true)
		s.state = stString
	case ',', ':', '}', ']':
		s.fail()
		return i
	default:
		s.beginLeaf(slot, false)
		s.state = stScalar
		return i // stScalar reads it
	}
	return i + 1
}

func (s *fieldScanner) beginLeaf(slot int, str bool) {
	s.leaf = s.leaf[:0]
	s.leafSlot, s.leafTrunc, s.leafString, s.esc = slot, false, str, escNone
	s.num, s.litPos = nStart, 0
}

// keepLeaf adds b to the scalar being read, if it is kept.
func (s *fieldScanner) keepLeaf(b []byte) {
	if s.leafSlot == 0 && s.leafString {
		return
	}
	if s.pieces != nil && s.leafSlot > 0 {
		s.pieces.piece(s.leafSlot, s.leafString, b)
	}
	room := maxFieldBytes - len(s.leaf)
	if len(b) > room {
		b = b[:room]
		s.leafTrunc = true
	}
	s.leaf = append(s.leaf, b...)
}

// inString reads a key or a string value from b[i] on, up to its closing
// quote.
func (s *fieldScanner) inString(b []byte, i int) int {
	start := i
	i = s.scanString(b, i)
	if s.failed {
		return i
	}
	piece := b[start:i]
	switch s.state {
	case stKey:
		if len(s.key)+len(piece) > maxKeyBytes {
			s.keyOverflow = true
		} else {
			s.key = append(s.key, piece...)
		}
	case stString:
		s.keepLeaf(piece)
	}
	if i == len(b) {
		return i
	}
	switch s.state {
	case stKey:
		s.state = stColon
	case stString:
		if s.leafSlot > 0 {
			s.sink.take(s.leafSlot, fieldString, s.leaf, s.leafTrunc)
		}
		s.valueEnded()
	}
	return i + 1
}

// strStop marks the bytes a string's scan stops at: the quote, the
// backslash and the control characters (which Python's json refuses in a
// string).
var strStop = func() (t [256]bool) {
	for c := range 0x20 {
		t[c] = true
	}
	t['"'], t['\\'] = true, true
	return t
}()

// scanString reads a string's bytes from b[i] on and returns the index of
// its closing quote, or len(b). It fails on a control character or an
// escape Python's json refuses: a backslash before any byte but one of
// "\\/bfnrtu, a \u not followed by four hex digits.
func (s *fieldScanner) scanString(b []byte, i int) int {
	for i < len(b) {
		if s.esc != escNone {
			c := b[i]
			if s.esc == escBackslash {
				switch c {
				case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
					s.esc = escNone
				case 'u':
					s.esc = 4
				default:
					s.fail()
					return i
				}
			} else {
				if !isHex(c) {
					s.fail()
					return i
				}
				s.esc--
			}
			i++
			continue
		}
		for i < len(b) && !strStop[b[i]] {
			i++
		}
		if i == len(b) {
			return i
		}
		switch b[i] {
		case '"':
			return i
		case '\\':
			s.esc = escBackslash
			i++
		default:
			s.fail()
			return i
		}
	}
	return i
}

func isHex(c byte) bool {
	return c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F'
}

// skip reads on in a container no node matches, from b[i], checking its
// grammar without reporting anything, and returns where it stopped: at the
// end of b, or after the bracket that closes the container.
func (s *fieldScanner) skip(b []byte, i int) int {
	for i < len(b) {
		switch s.skState {
		case skString:
			i = s.scanString(b, i)
			if s.failed || i == len(b) {
				return i
			}
			i++
			if s.skipKey {
				s.skState = skColon
			} else {
				s.skState = skAfter
			}
			continue
		case skScalar:
			start := i
			for i < len(b) && !scalarEnd[b[i]] {
				i++
			}
			s.scalarBytes(b[start:i])
			if i == len(b) {
				return i
			}
			if !s.scalarOK() {
				s.fail()
				return i
			}
			s.skState = skAfter
			continue
		}
		c := b[i]
		if c == ' ' || c == '\t' || c == '\n' || c == '\r' {
			i++
			continue
		}
		switch s.skState {
		case skElemOrClose:
			if c == ']' {
				if s.popSkip() {
					return i + 1
				}
				break
			}
			fallthrough
		case skValue:
			switch c {
			case '{', '[':
				if len(s.stack)+s.skipDepth >= maxDepth {
					s.fail()
					return i
				}
				s.pushSkip(c == '[')
			case '"':
				s.skipKey, s.esc, s.skState = false, escNone, skString
			case ',', ':', '}', ']':
				s.fail()
				return i
			default:
				if c >= '1' && c <= '9' {
					// Most skipped scalars are integers (token ids):
					// read one whole here when it ends in this piece.
					j := i + 1
					for j < len(b) && b[j]-'0' < 10 {
						j++
					}
					if j < len(b) && scalarEnd[b[j]] {
						i, s.skState = j, skAfter
						continue
					}
				}
				s.num, s.litPos, s.skState = nStart, 0, skScalar
				continue // skScalar reads it
			}
		case skKeyOrClose:
			if c == '}' {
				if s.popSkip() {
					return i + 1
				}
				break
			}
			fallthrough
		case skKey:
			if c != '"' {
				s.fail()
				return i
			}
			s.skipKey, s.esc, s.skState = true, escNone, skString
		case skColon:
			if c != ':' {
				s.fail()
				return i
			}
			s.skState = skValue
		case skAfter:
			d := s.skipDepth - 1
			arr := s.skipArr[d/64]&(1<<(d%64)) != 0
			switch {
			case c == ',' && arr:
				s.skState = skValue
			case c == ',':
				s.skState = skKey
			case c == '}' && !arr, c == ']' && arr:
				if s.popSkip() {
					return i + 1
				}
			default:
				s.fail()
				return i
			}
		}
		i++
	}
	return i
}

// pushSkip enters a container inside the skipped one (or the skipped one).
func (s *fieldScanner) pushSkip(array bool) {
	d := s.skipDepth
	if array {
		s.skipArr[d/64] |= 1 << (d % 64)
		s.skState = skElemOrClose
	} else {
		s.skipArr[d/64] &^= 1 << (d % 64)
		s.skState = skKeyOrClose
	}
	s.skipDepth++
}

// popSkip leaves a container and reports whether it was the skipped one:
// the scan goes on after it as after any value.
func (s *fieldScanner) popSkip() bool {
	s.skipDepth--
	s.skState = skAfter
	if s.skipDepth == 0 {
		s.valueEnded()
		return true
	}
	return false
}

// literals are the literals Python's json reads, by their first byte.
var literals = [256]string{'t': "true", 'f': "false", 'n': "null", 'N': "NaN", 'I': "Infinity"}

// scalarBytes reads the next bytes of a number or literal through its
// grammar (num).
func (s *fieldScanner) scalarBytes(b []byte) {
	st := s.num
	for j := 0; j < len(b) && st != nBad; j++ {
		c := b[j]
		digit := c >= '0' && c <= '9'
		switch st {
		case nStart:
			switch {
			case c == '-':
				st = nMinus
			case c == '0':
				st = nZero
			case digit:
				st = nInt
			case literals[c] != "":
				st, s.lit, s.litPos = nLit, literals[c], 1
			default:
				st = nBad
			}
		case nMinus:
			switch {
			case c == '0':
				st = nZero
			case digit:
				st = nInt
			case c == 'I':
				st, s.lit, s.litPos = nLit, "-Infinity", 2
			default:
				st = nBad
			}
		case nInt, nFrac, nExpDigits:
			for j < len(b) && b[j] >= '0' && b[j] <= '9' {
				j++
			}
			if j == len(b) {
				break
			}
			switch c := b[j]; {
			case c == '.' && st == nInt:
				st = nDot
			case (c == 'e' || c == 'E') && st != nExpDigits:
				st = nExp
			default:
				st = nBad
			}
		case nZero:
			switch c {
			case '.':
				st = nDot
			case 'e', 'E':
				st = nExp
			default:
				st = nBad
			}
		case nDot:
			st = nBad
			if digit {
				st = nFrac
			}
		case nExp:
			switch {
			case c == '+' || c == '-':
				st = nExpSign
			case digit:
				st = nExpDigits
			default:
				st = nBad
			}
		case nExpSign:
			st = nBad
			if digit {
				st = nExpDigits
			}
		case nLit:
			if s.litPos < len(s.lit) && c == s.lit[s.litPos] {
				s.litPos++
			} else {
				st = nBad
			}
		}
	}
	s.num = st
}

// scalarOK reports whether the number or literal read is whole.
func (s *fieldScanner) scalarOK() bool {
	switch s.num {
	case nZero, nInt, nFrac, nExpDigits:
		return true
	case nLit:
		return s.litPos == len(s.lit)
	}
	return false
}

// endScalar checks the number or literal just read and reports it.
func (s *fieldScanner) endScalar() {
	if !s.scalarOK() {
		s.fail()
		return
	}
	if s.leafSlot > 0 {
		s.sink.take(s.leafSlot, fieldScalar, s.leaf, s.leafTrunc)
	}
	s.valueEnded()
}

// closeContainer ends the object or array on top of the stack at b[i].
func (s *fieldScanner) closeContainer(i int) int {
	top := s.stack[len(s.stack)-1]
	s.stack = s.stack[:len(s.stack)-1]
	if slot := s.spec.nodes[top.node].slot; slot > 0 {
		closer := closeBrace
		switch {
		case top.array && !top.filled:
			closer = emptyArray
		case top.array:
			closer = closeBracket
		case !top.filled:
			closer = emptyObject
		}
		s.sink.take(slot, fieldClose, closer, false)
	}
	s.valueEnded()
	return i + 1
}

// valueEnded moves on after a value.
func (s *fieldScanner) valueEnded() {
	if len(s.stack) == 0 {
		s.state = stEnd
		return
	}
	s.state = stAfterValue
}

// memberNode returns the node of the member whose key was just read in the
// object on top of the stack, -1 if none matches.
func (s *fieldScanner) memberNode() int32 {
	if s.keyOverflow {
		return -1
	}
	top := s.stack[len(s.stack)-1]
	for _, m := range s.spec.nodes[top.node].members {
		if keyIs(s.key, s.spec.nodes[m].name) {
			return m
		}
	}
	return -1
}

// isScalarEnd reports whether c ends a number or literal.
func isScalarEnd(c byte) bool { return scalarEnd[c] }

var scalarEnd = func() (t [256]bool) {
	for _, c := range []byte(",}] \t\n\r:\"{[") {
		t[c] = true
	}
	return t
}()

var (
	closeBrace, closeBracket = []byte("}"), []byte("]")
	emptyObject, emptyArray  = []byte("{}"), []byte("[]")
)
