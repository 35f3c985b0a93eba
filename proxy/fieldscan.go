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
// The scanner checks the structure of the whole value (brackets, commas,
// colons, strings, the scalars it reads); inside a container no node
// matches it only balances brackets and strings. A value found malformed
// stops the scan: failed reports it, and the sink's reports up to there are
// to be dropped, since a whole-body parser would have read nothing.
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
	escaped    bool // in a string, the byte before was an unpaired backslash

	skipDepth int // the depth inside an unmatched container (stSkip)
	failed    bool
}

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
	stSkip                         // inside an unmatched container
	stSkipString                   // inside a string there
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
	s.leafSlot, s.leafTrunc, s.leafString, s.escaped = 0, false, false, false
	s.skipDepth = 0
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
		for ; i < len(b); i++ {
			switch b[i] {
			case '"':
				s.state = stSkipString
				return i + 1
			case '{', '[':
				s.skipDepth++
			case '}', ']':
				s.skipDepth--
				if s.skipDepth == 0 {
					s.valueEnded()
					return i + 1
				}
			}
		}
		return i
	case stSkipString, stString, stKey:
		return s.inString(b, i)
	case stScalar:
		start := i
		for i < len(b) && !isScalarEnd(b[i]) {
			i++
		}
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
		if node < 0 {
			s.skipDepth = 1
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
		if node < 0 {
			s.state = stSkipString
		}
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
	s.leafSlot, s.leafTrunc, s.leafString, s.escaped = slot, false, str, false
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
// quote. Control characters are refused, as Python's json refuses them.
func (s *fieldScanner) inString(b []byte, i int) int {
	start := i
	for ; i < len(b); i++ {
		c := b[i]
		if s.escaped {
			s.escaped = false
			continue
		}
		if c == '\\' {
			s.escaped = true
			continue
		}
		if c < 0x20 {
			s.fail()
			return i
		}
		if c == '"' {
			break
		}
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
	case stSkipString:
		if s.skipDepth > 0 {
			s.state = stSkip
		} else {
			s.valueEnded()
		}
	}
	return i + 1
}

// endScalar checks the number or literal just read and reports it.
func (s *fieldScanner) endScalar() {
	if !s.leafTrunc && !validScalar(s.leaf) {
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
func isScalarEnd(c byte) bool {
	switch c {
	case ',', '}', ']', ' ', '\t', '\n', '\r', ':', '"', '{', '[':
		return true
	}
	return false
}

// validScalar reports whether b is a JSON number or literal as Python's
// json reads them (which adds NaN, Infinity and -Infinity).
func validScalar(b []byte) bool {
	switch string(b) {
	case "true", "false", "null", "NaN", "Infinity", "-Infinity":
		return true
	}
	i := 0
	if i < len(b) && b[i] == '-' {
		i++
	}
	digits := func() int {
		n := 0
		for i < len(b) && b[i] >= '0' && b[i] <= '9' {
			i++
			n++
		}
		return n
	}
	switch {
	case i < len(b) && b[i] == '0':
		i++
	case digits() == 0:
		return false
	}
	if i < len(b) && b[i] == '.' {
		i++
		if digits() == 0 {
			return false
		}
	}
	if i < len(b) && (b[i] == 'e' || b[i] == 'E') {
		i++
		if i < len(b) && (b[i] == '+' || b[i] == '-') {
			i++
		}
		if digits() == 0 {
			return false
		}
	}
	return i == len(b)
}

var (
	closeBrace, closeBracket = []byte("}"), []byte("]")
	emptyObject, emptyArray  = []byte("{}"), []byte("[]")
)
