package proxy

import (
	"bytes"
	"errors"
	"io"
	"mime/multipart"
	"strconv"
	"sync"
	"unicode/utf16"
	"unicode/utf8"

	"github.com/auditproxy/auditproxy/audit"
)

// A body too long to hold (bigbody.go) is read for the fields vLLM acts on
// as it passes, piece by piece, without being held, and what is read is
// what parseRequestFields or parseFormFields read from the same bytes held
// whole (FuzzStreamedRequestFields checks it): the last model, stream and
// stream_options members, as Python's json and pydantic read them.
//
//   - JSON: the encoding is told from the first four bytes as
//     pythonJSONText tells it (a UTF-8 byte order mark is skipped; UTF-16
//     and UTF-32 are transcoded piece by piece, a unit or surrogate pair
//     cut by a piece's end waiting for the next); a fieldScanner reads the
//     top-level members with requestSpec. A model name of any length is
//     unescaped as it arrives and only its first bytes are kept (the event
//     cuts it at 1 KiB and records its length); a number of any length for
//     a bool is reduced as it arrives to one that strconv.ParseFloat reads
//     alike (numberText).
//   - multipart/form-data: the parts go through Go's multipart reader in a
//     goroutine of the request's, through a pipe, which reads the model,
//     stream and stream_include_usage fields (readFormFields) and skips the
//     rest, the audio file included; the close delimiter is looked for
//     across pieces.
//
// Nothing is known until the body has been read to its end: a duplicate
// member at the end wins. A body not read to its end (the client or the
// upstream failed first) reads as nothing, like a body cut short.
//
// What this holds is fixed: the scanner's stack and current scalar (2 KiB),
// 1 KiB of a model name, a few KiB of transcoding and the multipart
// reader's buffer. One thing is bounded only by Go's multipart reader: it
// reads a part's header lines whole, up to its own limit of 10 MiB, so a
// hostile form can hold that much, outside the budget, while it is read
// (a held form of 8 MiB is parsed the same way).
type streamFields struct {
	form bool
	// JSON: head holds the first bytes until the encoding is known (enc);
	// carry holds a UTF-16 or UTF-32 unit, or half a surrogate pair, that
	// a piece's end cut.
	enc   textEncoding
	head  [4]byte
	nhead int
	carry []byte
	text  []byte // transcoded text, a window at a time
	scan  fieldScanner
	sink  requestSink
	// multipart/form-data
	boundary string
	formw    *io.PipeWriter
	formDone chan requestFields
	delim    closeDelimiter
}

// textEncoding is the encoding of a JSON body, as json.detect_encoding
// tells it.
type textEncoding uint8

const (
	encUnknown textEncoding = iota // fewer than four bytes seen
	encUTF8
	encUTF16BE
	encUTF16LE
	encUTF32BE
	encUTF32LE
)

var streamFieldsPool = sync.Pool{New: func() any { return new(streamFields) }}

// getStreamFields returns a reader for a body with contentType.
func getStreamFields(contentType []byte) *streamFields {
	s := streamFieldsPool.Get().(*streamFields)
	s.form = isMultipartForm(contentType)
	s.enc, s.nhead, s.carry = encUnknown, 0, s.carry[:0]
	s.boundary, s.formw, s.formDone = "", nil, nil
	if s.form {
		s.boundary = formBoundary(contentType)
		s.delim.reset("--" + s.boundary + "--")
	} else {
		s.sink.reset()
		s.scan.reset(requestSpec, &s.sink)
	}
	return s
}

func putStreamFields(s *streamFields) {
	if cap(s.text) > 16<<10 || cap(s.carry) > 16<<10 {
		s.text, s.carry = nil, nil
	}
	s.sink.name.reset()
	streamFieldsPool.Put(s)
}

// write reads the next piece of the body.
func (s *streamFields) write(b []byte) {
	if s.form {
		s.writeForm(b)
		return
	}
	if s.enc == encUnknown {
		n := copy(s.head[s.nhead:], b)
		s.nhead += n
		b = b[n:]
		if s.nhead < len(s.head) {
			return
		}
		var skip int
		s.enc, skip = detectEncoding(s.head[:])
		s.writeText(s.head[skip:])
	}
	s.writeText(b)
}

// detectEncoding tells a JSON body's encoding from its first four bytes as
// pythonJSONText does, and how many bytes of byte order mark to skip.
func detectEncoding(b []byte) (textEncoding, int) {
	switch {
	case bytes.HasPrefix(b, []byte{0, 0, 0xfe, 0xff}):
		return encUTF32BE, 4
	case bytes.HasPrefix(b, []byte{0xff, 0xfe, 0, 0}):
		return encUTF32LE, 4
	case bytes.HasPrefix(b, []byte{0xfe, 0xff}):
		return encUTF16BE, 2
	case bytes.HasPrefix(b, []byte{0xff, 0xfe}):
		return encUTF16LE, 2
	case bytes.HasPrefix(b, []byte{0xef, 0xbb, 0xbf}):
		return encUTF8, 3
	case b[0] == 0 && b[1] != 0:
		return encUTF16BE, 0
	case b[0] == 0:
		return encUTF32BE, 0
	case b[1] == 0 && (b[2] != 0 || b[3] != 0):
		return encUTF16LE, 0
	case b[1] == 0:
		return encUTF32LE, 0
	}
	return encUTF8, 0
}

// transcodeWindow bounds the bytes transcoded at once.
const transcodeWindow = 4 << 10

// writeText hands b, in the body's encoding, to the scanner as UTF-8.
func (s *streamFields) writeText(b []byte) {
	if s.enc == encUTF8 {
		s.scan.write(b)
		return
	}
	for len(b) > 0 {
		n := min(len(b), transcodeWindow)
		s.carry = append(s.carry, b[:n]...)
		b = b[n:]
		ready := s.transcodable()
		s.scan.write(s.transcode(s.carry[:ready]))
		s.carry = s.carry[:copy(s.carry, s.carry[ready:])]
	}
}

// transcodable returns how much of carry transcodes the same whatever
// follows it: whole units, and not a surrogate whose pair may be next.
func (s *streamFields) transcodable() int {
	b := s.carry
	switch s.enc {
	case encUTF32BE, encUTF32LE:
		return len(b) - len(b)%4
	}
	little := s.enc == encUTF16LE
	unit := func(i int) rune {
		if little {
			return rune(b[i+1])<<8 | rune(b[i])
		}
		return rune(b[i])<<8 | rune(b[i+1])
	}
	// As transcodeUTF16 reads units.
	i := 0
	for i+1 < len(b) {
		if r := unit(i); utf16.IsSurrogate(r) {
			if i+3 >= len(b) {
				return i
			}
			if utf16.DecodeRune(r, unit(i+2)) != utf8.RuneError {
				i += 4
				continue
			}
		}
		i += 2
	}
	return i
}

// transcode returns b in UTF-8, as pythonJSONText transcodes it.
func (s *streamFields) transcode(b []byte) []byte {
	var out []byte
	switch s.enc {
	case encUTF16BE, encUTF16LE:
		out, _ = transcodeUTF16(b, s.enc == encUTF16LE, &s.text)
	default:
		out, _ = transcodeUTF32(b, s.enc == encUTF32LE, &s.text)
	}
	return out
}

// finish returns the fields of the body written, if it was written to its
// end (complete), else none. The reader is not used again until reset.
func (s *streamFields) finish(complete bool) requestFields {
	if s.form {
		return s.finishForm(complete)
	}
	if !complete {
		return requestFields{}
	}
	if s.enc == encUnknown {
		// A body of fewer than four bytes (only a cut body streams so
		// short): as pythonJSONText reads it.
		text, _, _ := pythonJSONText(s.head[:s.nhead], &s.text)
		s.enc = encUTF8
		s.scan.write(text)
	} else if len(s.carry) > 0 {
		s.scan.write(s.transcode(s.carry))
		s.carry = s.carry[:0]
	}
	if !s.scan.close() {
		return requestFields{}
	}
	return s.sink.fields()
}

// The slots of requestSpec.
const (
	_ = iota
	reqSlotRoot
	reqSlotModel
	reqSlotStream
	reqSlotStreamOptions
	reqSlotIncludeUsage
	reqSlotContinuousUsage
)

// requestSpec is what a request body is read for: the members
// parseRequestFields reads. Only stream_options' own members are read
// inside a value; everything else is skipped.
var requestSpec = compileFieldSpec(field{slot: reqSlotRoot, members: []field{
	{name: "model", slot: reqSlotModel},
	{name: "stream", slot: reqSlotStream},
	{name: "stream_options", slot: reqSlotStreamOptions, members: []field{
		{name: "include_usage", slot: reqSlotIncludeUsage},
		{name: "continuous_usage_stats", slot: reqSlotContinuousUsage},
	}},
}})

// requestSink keeps what requestSpec reads, the last of duplicates.
type requestSink struct {
	rootSeen, object bool
	// modelString says the last model member was a string; name is it.
	modelString bool
	name        jsonNameReader
	stream      bool
	// options is the last stream_options member: optAbsent, optNull,
	// optObject or optOther; include is its last include_usage (true when
	// absent), and optValid says every include_usage and
	// continuous_usage_stats in it is a bool pydantic takes.
	options           int
	include, optValid bool
	// leafOpen says pieces of the current scalar have come (see piece);
	// num reduces a number for a bool as it arrives.
	leafOpen bool
	num      numberText
}

// reset readies k for a body, keeping its buffers.
func (k *requestSink) reset() {
	name, num := k.name, k.num
	name.reset()
	num.reset()
	*k = requestSink{name: name, num: num}
}

const (
	optAbsent = iota
	optNull
	optObject
	optOther
)

func isBoolSlot(slot int) bool {
	return slot == reqSlotStream || slot == reqSlotIncludeUsage || slot == reqSlotContinuousUsage
}

func (k *requestSink) piece(slot int, str bool, b []byte) {
	if !k.leafOpen {
		k.leafOpen = true
		switch {
		case slot == reqSlotModel && str:
			k.name.reset()
		case isBoolSlot(slot) && !str:
			k.num.reset()
		}
	}
	switch {
	case slot == reqSlotModel && str:
		k.name.write(b)
	case isBoolSlot(slot) && !str:
		k.num.write(b)
	}
}

func (k *requestSink) take(slot int, kind fieldKind, raw []byte, truncated bool) {
	opened := k.leafOpen
	if kind == fieldString || kind == fieldScalar {
		k.leafOpen = false
	}
	if kind == fieldClose {
		return
	}
	switch slot {
	case reqSlotRoot:
		if !k.rootSeen {
			k.rootSeen = true
			k.object = kind == fieldOpen && raw[0] == '{'
		}
	case reqSlotModel:
		k.modelString = kind == fieldString
		if k.modelString {
			if !opened {
				k.name.reset() // "": no piece came
			}
			k.name.finish()
		}
	case reqSlotStream:
		k.stream, _ = k.pyBool(kind, raw, truncated)
	case reqSlotStreamOptions:
		switch {
		case kind == fieldOpen && raw[0] == '{':
			k.options, k.include, k.optValid = optObject, true, true // include_usage defaults to True
		case kind == fieldScalar && string(raw) == "null":
			k.options = optNull
		default:
			k.options = optOther
		}
	case reqSlotIncludeUsage:
		var known bool
		k.include, known = k.pyBool(kind, raw, truncated)
		k.optValid = k.optValid && known
	case reqSlotContinuousUsage:
		_, known := k.pyBool(kind, raw, truncated)
		k.optValid = k.optValid && known
	}
}

// pyBool reads a value as pyBool reads its JSON text.
func (k *requestSink) pyBool(kind fieldKind, raw []byte, truncated bool) (b, ok bool) {
	switch kind {
	case fieldString:
		if truncated || len(raw) > 6*5 {
			return false, false // pyBool refuses it for its length
		}
		var buf [2 + 6*5]byte
		v := append(append(append(buf[:0], '"'), raw...), '"')
		return pyBool(v)
	case fieldScalar:
		if truncated {
			return pyBool(k.num.reduced())
		}
		return pyBool(raw)
	}
	return false, false // an object or array
}

// fields returns what was read from a whole, well-formed body.
func (k *requestSink) fields() requestFields {
	if !k.object {
		return requestFields{}
	}
	f := requestFields{valid: true, stream: k.stream, hasStreamOptions: k.options != optAbsent}
	if k.modelString {
		f.model, f.modelBytes = k.name.name()
	}
	f.includeUsage = k.options == optObject && k.include && k.optValid
	return f
}

// jsonNameReader unescapes a JSON string that arrives in pieces, as
// appendJSONUnescaped unescapes it whole, and keeps its first bytes: as
// many as modelNameCut looks at.
type jsonNameReader struct {
	// pend holds escaped bytes whose meaning depends on what follows: an
	// escape, a surrogate escape whose pair may come, a UTF-8 sequence.
	pend []byte
	head []byte
	n    int64 // bytes unescaped
	tmp  []byte
}

// nameHead is how much of a name is kept: modelNameCut looks at the byte
// at audit.MaxModelNameBytes.
const nameHead = audit.MaxModelNameBytes + 1

func (r *jsonNameReader) reset() {
	r.pend, r.head, r.n = r.pend[:0], r.head[:0], 0
}

func (r *jsonNameReader) write(b []byte) {
	for len(b) > 0 {
		n := min(len(b), 256)
		r.pend = append(r.pend, b[:n]...)
		b = b[n:]
		ready := unescapable(r.pend)
		r.emit(r.pend[:ready])
		r.pend = r.pend[:copy(r.pend, r.pend[ready:])]
	}
}

// finish unescapes what is pending: the string has ended.
func (r *jsonNameReader) finish() {
	r.emit(r.pend)
	r.pend = r.pend[:0]
}

func (r *jsonNameReader) emit(s []byte) {
	if len(s) == 0 {
		return
	}
	r.tmp = appendJSONUnescaped(r.tmp[:0], s)
	r.n += int64(len(r.tmp))
	if room := nameHead - len(r.head); room > 0 {
		r.head = append(r.head, r.tmp[:min(room, len(r.tmp))]...)
	}
	if cap(r.tmp) > 4<<10 {
		r.tmp = nil
	}
}

// name returns the name as parseRequestFields records it: cut by
// modelNameCut, with its whole length when cut.
func (r *jsonNameReader) name() (string, int64) {
	if r.n <= audit.MaxModelNameBytes {
		return string(r.head), 0
	}
	return string(r.head[:modelNameCut(r.head)]), r.n
}

// unescapable returns how much of the escaped bytes s appendJSONUnescaped
// unescapes the same whatever follows s: it stops before an escape, a
// surrogate escape that may pair with the next, or a UTF-8 sequence that s
// ends inside of. It follows appendJSONUnescaped step by step.
func unescapable(s []byte) int {
	i := 0
	for i < len(s) {
		c := s[i]
		if c != '\\' {
			if c < utf8.RuneSelf {
				i++
				continue
			}
			if !utf8.FullRune(s[i:]) {
				return i
			}
			_, size := utf8.DecodeRune(s[i:])
			i += size
			continue
		}
		if i+1 >= len(s) {
			return i
		}
		if s[i+1] != 'u' {
			i += 2
			continue
		}
		if i+6 > len(s) {
			return i
		}
		r, ok := hex4(s, i+2)
		if !ok {
			i += 2 // "\u" as it stands; the four bytes are read as they come
			continue
		}
		if !utf16.IsSurrogate(r) {
			i += 6
			continue
		}
		if i+12 > len(s) {
			return i
		}
		j := i + 6
		if s[j] == '\\' && s[j+1] == 'u' {
			if r2, ok := hex4(s, j+2); ok && utf16.DecodeRune(r, r2) != utf8.RuneError {
				j += 6
			}
		}
		i = j
	}
	return i
}

// parseJSONFloat reads a JSON number as Python's float does, correctly
// rounded whatever its length. strconv.ParseFloat misplaces the decimal
// point of a number with more than 800 digits before it (it reads
// "1" + 800 zeros + "e-800" as 0.1), so a longer text is first reduced to
// one it reads exactly.
func parseJSONFloat(v []byte) (float64, error) {
	if len(v) > maxNumberDigits {
		var n numberText
		n.write(v)
		v = n.reduced()
	}
	return strconv.ParseFloat(string(v), 64)
}

// numberText reduces the text of a number of any length, as it arrives, to
// one of at most about 830 bytes, "0." + digits + "e" + exponent, that
// strconv.ParseFloat reads as the number's correctly rounded float64 (with
// ErrRange past the float64 range): the sign, the first 800 significant
// digits, one more digit 1 if any digit after them is not 0, and the
// decimal exponent. Rounding needs no more: ParseFloat itself keeps 800
// digits and notes whether any digit after them is not 0. Text that is not
// a decimal number reduces to text ParseFloat refuses.
type numberText struct {
	state  numState
	neg    bool
	digits []byte // significant digits, at most maxNumberDigits
	sticky bool   // a digit after those is not 0
	any    bool   // a mantissa digit was seen
	point  int64  // value = 0.digits × 10^(point ± exp)
	exp    int64
	expNeg bool
	expAny bool // an exponent digit was seen
	out    []byte
}

type numState uint8

const (
	numSign numState = iota // before the first character
	numInt
	numFrac
	numExpSign
	numExp
	numBad
)

const maxNumberDigits = 800

func (n *numberText) reset() {
	digits, out := n.digits[:0], n.out[:0]
	*n = numberText{digits: digits, out: out}
}

func (n *numberText) write(b []byte) {
	for _, c := range b {
		n.step(c)
	}
}

func (n *numberText) step(c byte) {
	isDigit := '0' <= c && c <= '9'
	switch n.state {
	case numSign:
		n.state = numInt
		if c == '-' || c == '+' {
			n.neg = c == '-'
			return
		}
		fallthrough
	case numInt, numFrac:
		switch {
		case isDigit:
			n.digit(c)
		case c == '.' && n.state == numInt:
			n.state = numFrac
		case (c == 'e' || c == 'E') && n.any:
			n.state = numExpSign
		default:
			n.state = numBad
		}
	case numExpSign:
		n.state = numExp
		if c == '-' || c == '+' {
			n.expNeg = c == '-'
			return
		}
		fallthrough
	case numExp:
		if !isDigit {
			n.state = numBad
			return
		}
		n.expAny = true
		if n.exp < 1e15 { // past it, any exponent is far past the float64 range
			n.exp = n.exp*10 + int64(c-'0')
		}
	}
}

func (n *numberText) digit(c byte) {
	n.any = true
	switch {
	case len(n.digits) == 0 && c == '0':
		if n.state == numFrac {
			n.point-- // a leading zero after the point
		}
		return
	case len(n.digits) < maxNumberDigits:
		n.digits = append(n.digits, c)
	case c != '0':
		n.sticky = true
	}
	if n.state == numInt {
		n.point++
	}
}

// reduced returns the reduced text.
func (n *numberText) reduced() []byte {
	out := n.out[:0]
	if n.state == numBad || n.state == numExpSign || (n.state == numExp && !n.expAny) || !n.any {
		n.out = append(out, 'x') // not a number
		return n.out
	}
	if n.neg {
		out = append(out, '-')
	}
	if len(n.digits) == 0 {
		n.out = append(out, '0')
		return n.out
	}
	out = append(out, "0."...)
	out = append(out, n.digits...)
	if n.sticky {
		out = append(out, '1')
	}
	e := n.exp
	if n.expNeg {
		e = -e
	}
	out = append(out, 'e')
	out = strconv.AppendInt(out, n.point+e, 10)
	n.out = out
	return out
}

// writeForm hands b to the multipart reader, starting it with the first
// piece.
func (s *streamFields) writeForm(b []byte) {
	if s.boundary == "" {
		return // not a form Go's reader or Starlette reads
	}
	if s.formw == nil {
		r, w := io.Pipe()
		s.formw, s.formDone = w, make(chan requestFields, 1)
		go func(boundary string, done chan<- requestFields) {
			f := readFormFields(multipart.NewReader(r, boundary))
			// What follows the close delimiter, or the rest of a form
			// that did not parse, is read and dropped, so that the
			// body's writer never waits on this reader.
			_, _ = io.Copy(io.Discard, r)
			done <- f
		}(s.boundary, s.formDone)
	}
	s.delim.write(b)
	_, _ = s.formw.Write(b)
}

// errBodyCut ends the multipart reader of a body not read to its end.
var errBodyCut = errors.New("request body cut short")

func (s *streamFields) finishForm(complete bool) requestFields {
	if s.formw == nil {
		return requestFields{}
	}
	if complete {
		s.formw.Close()
	} else {
		s.formw.CloseWithError(errBodyCut)
	}
	f := <-s.formDone
	s.formw, s.formDone = nil, nil
	if !complete || !s.delim.found {
		return requestFields{} // no close delimiter, as parseFormFields
	}
	return f
}

// closeDelimiter looks for a form's close delimiter in a body that
// arrives in pieces.
type closeDelimiter struct {
	delim string
	tail  []byte // the last len(delim)-1 bytes seen
	found bool
}

func (d *closeDelimiter) reset(delim string) {
	d.delim, d.tail, d.found = delim, d.tail[:0], false
}

func (d *closeDelimiter) write(b []byte) {
	if d.found {
		return
	}
	keep := len(d.delim) - 1
	// Across the end of what came before and the start of b, then in b.
	joined := append(d.tail, b[:min(len(b), keep)]...)
	if bytes.Contains(joined, []byte(d.delim)) || bytes.Contains(b, []byte(d.delim)) {
		d.found = true
		return
	}
	if len(b) >= keep {
		d.tail = append(d.tail[:0], b[len(b)-keep:]...)
		return
	}
	joined = append(d.tail, b...) // d.tail is not aliased by b
	d.tail = append(d.tail[:0], joined[len(joined)-min(len(joined), keep):]...)
}
