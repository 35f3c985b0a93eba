package proxy

import (
	"bytes"
	"strconv"
	"unicode/utf16"
	"unicode/utf8"

	"github.com/valyala/fastjson"

	"github.com/auditproxy/auditproxy/audit"
	"github.com/auditproxy/auditproxy/internal/jcs"
)

// A request body is read the way vLLM reads it, so that the event names the
// model vLLM serves and the stream mode it uses, whatever a client sends.
// vLLM decodes a body with Python's json module (through FastAPI and
// Starlette's Request.json) and validates it with pydantic in lax mode:
//
//   - json.loads takes bytes in UTF-8, with or without a byte order mark,
//     and in UTF-16 or UTF-32 (json.detect_encoding).
//   - A key that appears twice keeps its last value, as dict insertion does;
//     keys are compared after unescaping ("mod\u0065l" is "model").
//   - NaN, Infinity and -Infinity are numbers; there is no nesting limit
//     below the interpreter's recursion limit.
//   - A bool field takes true and false, the numbers 0 and 1 (0.0 and 1.0),
//     and the strings "0", "1", and, in any case, "f", "n", "no", "off",
//     "false", "t", "y", "yes", "on", "true"; null is None. (pydantic's
//     conversion table, docs.pydantic.dev/latest/concepts/conversion_table.)
//   - stream_options is StreamOptions, whose include_usage defaults to True
//     and continuous_usage_stats to False, and vLLM sends usage when
//     stream_options is given and its include_usage is truthy
//     (vllm/entrypoints/openai/engine/protocol.py StreamOptions,
//     vllm/entrypoints/utils.py should_include_usage).
//
// The reader below walks only the body's top-level members and parses only
// the values it needs. It accepts everything Python's json accepts, and
// some things it rejects (it does not check inside values it skips): a body
// vLLM rejects gets a 400 from vLLM, which the event records, whatever was
// read from it.

// requestFields are the fields of a request body that vLLM acts on and the
// audit record needs.
type requestFields struct {
	// valid reports whether the body is a JSON object.
	valid bool
	// model is the last "model" member, if it is a string; invalid UTF-8 and
	// lone surrogates are replaced by U+FFFD. A name longer than
	// audit.MaxModelNameBytes is cut there, and modelBytes is its length.
	model      string
	modelBytes int64
	// stream is the last "stream" member, as a pydantic bool.
	stream bool
	// includeUsage reports whether vLLM will send usage in a stream the
	// client asked for: the last stream_options is an object whose last
	// include_usage is truthy, or absent.
	includeUsage bool
	// hasStreamOptions reports whether the body has a stream_options member,
	// whatever its value.
	hasStreamOptions bool
	// empty reports whether the object has no member.
	empty bool
	// hasMessages and hasPrompt report members that make a body to
	// /invocations a chat or a completion request.
	hasMessages, hasPrompt bool
	// rewritable reports whether the body may be rewritten to ask for
	// usage without making valid what vLLM would refuse: stream_options
	// is absent, null, or an object vLLM accepts, and the text decoded
	// without loss.
	rewritable bool
	// transcoded reports whether text is a UTF-8 copy of the body.
	transcoded bool
	// text is the body as UTF-8 (the body itself unless it was UTF-16, UTF-32
	// or began with a byte order mark), and end the offset of its closing
	// brace.
	text []byte
	end  int
}

// jsonMember is one member of a JSON object, as offsets into its text.
type jsonMember struct {
	keyStart, keyEnd     int // the key's bytes between its quotes, still escaped
	valueStart, valueEnd int
}

// scanObject calls fn with each top-level member of the JSON object that
// text holds, in order, and returns the offset of the object's closing
// brace. ok is false if text is not a JSON object (fn may have been called
// for members before the fault). Values are skipped by matching brackets
// and strings, without recursion, so there is no depth limit.
func scanObject(text []byte, fn func(m jsonMember)) (end int, ok bool) {
	i := skipJSONSpace(text, 0)
	if i >= len(text) || text[i] != '{' {
		return 0, false
	}
	i = skipJSONSpace(text, i+1)
	if i < len(text) && text[i] == '}' {
		return i, trailerIsSpace(text, i+1)
	}
	for {
		if i >= len(text) || text[i] != '"' {
			return 0, false
		}
		var m jsonMember
		m.keyStart = i + 1
		if i = jcs.SkipString(text, i); i < 0 {
			return 0, false
		}
		m.keyEnd = i - 1
		i = skipJSONSpace(text, i)
		if i >= len(text) || text[i] != ':' {
			return 0, false
		}
		m.valueStart = skipJSONSpace(text, i+1)
		if m.valueEnd = jcs.SkipValue(text, m.valueStart); m.valueEnd < 0 {
			return 0, false
		}
		fn(m)
		i = skipJSONSpace(text, m.valueEnd)
		if i >= len(text) {
			return 0, false
		}
		switch text[i] {
		case ',':
			i = skipJSONSpace(text, i+1)
		case '}':
			return i, trailerIsSpace(text, i+1)
		default:
			return 0, false
		}
	}
}

func trailerIsSpace(text []byte, i int) bool { return skipJSONSpace(text, i) == len(text) }

// skipJSONSpace skips JSON's (and Python's json's) four whitespace bytes.
func skipJSONSpace(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
}

// appendJSONUnescaped appends the string whose escaped bytes (between the
// quotes) are s to dst, as Python decodes it, with invalid UTF-8 and lone
// surrogates replaced by U+FFFD.
func appendJSONUnescaped(dst, s []byte) []byte {
	for i := 0; i < len(s); {
		c := s[i]
		if c != '\\' {
			if c < utf8.RuneSelf {
				dst = append(dst, c)
				i++
				continue
			}
			r, size := utf8.DecodeRune(s[i:])
			dst = utf8.AppendRune(dst, r) // RuneError for invalid bytes
			i += size
			continue
		}
		if i+1 >= len(s) {
			return append(dst, '\\')
		}
		e := s[i+1]
		i += 2
		switch e {
		case 'b':
			dst = append(dst, '\b')
		case 'f':
			dst = append(dst, '\f')
		case 'n':
			dst = append(dst, '\n')
		case 'r':
			dst = append(dst, '\r')
		case 't':
			dst = append(dst, '\t')
		case 'u':
			r, ok := hex4(s, i)
			if !ok {
				dst = append(dst, '\\', 'u')
				continue
			}
			i += 4
			if utf16.IsSurrogate(r) {
				if i+6 <= len(s) && s[i] == '\\' && s[i+1] == 'u' {
					if r2, ok := hex4(s, i+2); ok {
						if dec := utf16.DecodeRune(r, r2); dec != utf8.RuneError {
							dst = utf8.AppendRune(dst, dec)
							i += 6
							continue
						}
					}
				}
				r = utf8.RuneError
			}
			dst = utf8.AppendRune(dst, r)
		default: // '"', '\\', '/' and, leniently, anything else
			dst = append(dst, e)
		}
	}
	return dst
}

// validJSONStringText reports whether s, a string's bytes between its
// quotes, is what Python's json accepts: no control character, and only
// the escapes \" \\ \/ \b \f \n \r \t and \u with four hex digits.
// (The body's other strings, which the proxy does not read, are not
// checked here: see docs/vllm-wire-format.md.)
func validJSONStringText(s []byte) bool {
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c < 0x20:
			return false
		case c == '\\':
			if i+1 >= len(s) {
				return false
			}
			i++
			switch s[i] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
			case 'u':
				if i+5 > len(s) {
					return false
				}
				for _, h := range s[i+1 : i+5] {
					if !isHex(h) {
						return false
					}
				}
				i += 4
			default:
				return false
			}
		}
	}
	return true
}

func hex4(s []byte, i int) (rune, bool) {
	if i+4 > len(s) {
		return 0, false
	}
	v, err := strconv.ParseUint(string(s[i:i+4]), 16, 32)
	return rune(v), err == nil
}

// keyIs reports whether the escaped key k is name once unescaped.
func keyIs(k []byte, name string) bool {
	if bytes.IndexByte(k, '\\') < 0 {
		return string(k) == name
	}
	var buf [32]byte
	return len(k) <= 6*len(name) && string(appendJSONUnescaped(buf[:0], k)) == name
}

// pyBool returns the value pydantic gives a bool field for the JSON value v
// (null is None, which vLLM treats as false). ok is false for a value that
// pydantic refuses, so that vLLM answers 400.
func pyBool(v []byte) (b, ok bool) {
	switch string(v) {
	case "true":
		return true, true
	case "false", "null":
		return false, true
	}
	if len(v) > 0 && v[0] == '"' {
		var buf [16]byte
		if len(v) > 2+6*5 {
			return false, false
		}
		s := appendJSONUnescaped(buf[:0], v[1:len(v)-1])
		switch string(bytes.ToLower(s)) {
		case "0", "f", "n", "no", "off", "false":
			return false, true
		case "1", "t", "y", "yes", "on", "true":
			return true, true
		}
		return false, false
	}
	f, err := parseJSONFloat(v)
	switch {
	case err != nil:
		return false, false
	case f == 1:
		return true, true
	case f == 0:
		return false, true
	}
	return false, false
}

// parseRequestFields reads requestFields from body. scratch holds the body
// transcoded to UTF-8 when it is in another encoding; prevModel is a model
// name seen before, reused rather than allocated when the body names the
// same model.
func parseRequestFields(body []byte, scratch *[]byte, prevModel string) (f requestFields) {
	var lossy bool
	f.text, f.transcoded, lossy = pythonJSONText(body, scratch)
	var model, stream, streamOptions jsonMember
	var hasModel, hasStream bool
	f.empty = true
	end, ok := scanObject(f.text, func(m jsonMember) {
		f.empty = false
		k := f.text[m.keyStart:m.keyEnd]
		switch {
		case keyIs(k, "model"):
			model, hasModel = m, true
		case keyIs(k, "stream"):
			stream, hasStream = m, true
		case keyIs(k, "stream_options"):
			streamOptions, f.hasStreamOptions = m, true
		case keyIs(k, "messages"):
			f.hasMessages = true
		case keyIs(k, "prompt"):
			f.hasPrompt = true
		}
	})
	if !ok {
		return requestFields{}
	}
	if hasModel {
		if v := f.text[model.valueStart:model.valueEnd]; len(v) >= 2 && v[0] == '"' && !validJSONStringText(v[1:len(v)-1]) {
			// Python's json refuses the body (vLLM answers 400): no
			// fields, as the streamed reader (fieldScanner) reads none.
			return requestFields{}
		}
	}
	f.valid, f.end = true, end
	if hasModel {
		if v := f.text[model.valueStart:model.valueEnd]; len(v) >= 2 && v[0] == '"' {
			var buf [128]byte
			name := appendJSONUnescaped(buf[:0], v[1:len(v)-1])
			if cut := modelNameCut(name); cut < len(name) {
				f.modelBytes = int64(len(name))
				name = name[:cut]
			}
			if string(name) == prevModel {
				f.model = prevModel
			} else {
				f.model = string(name)
			}
		}
	}
	if hasStream {
		f.stream, _ = pyBool(f.text[stream.valueStart:stream.valueEnd])
	}
	f.rewritable = !lossy
	if f.hasStreamOptions {
		v := f.text[streamOptions.valueStart:streamOptions.valueEnd]
		var valid bool
		f.includeUsage, valid = streamOptionsIncludeUsage(v)
		f.rewritable = f.rewritable && valid
	}
	return f
}

// streamOptionsIncludeUsage reports whether vLLM sends usage for the
// stream_options value v, and whether vLLM accepts v at all: null, or an
// object whose include_usage and continuous_usage_stats, if present, are
// bools as pydantic reads them.
func streamOptionsIncludeUsage(v []byte) (include, valid bool) {
	if string(v) == "null" {
		return false, true // None
	}
	if len(v) == 0 || v[0] != '{' || fastjson.ValidateBytes(v) != nil {
		return false, false
	}
	include, valid = true, true // StreamOptions.include_usage defaults to True
	_, ok := scanObject(v, func(m jsonMember) {
		k := v[m.keyStart:m.keyEnd]
		switch {
		case keyIs(k, "include_usage"):
			var known bool
			include, known = pyBool(v[m.valueStart:m.valueEnd])
			valid = valid && known
		case keyIs(k, "continuous_usage_stats"):
			_, known := pyBool(v[m.valueStart:m.valueEnd])
			valid = valid && known
		}
	})
	return include && valid, valid && ok
}

// withIncludeUsage appends to dst the body f was read from, changed so that
// vLLM sends usage in the stream: stream_options.include_usage true. It must
// only be called for a valid f.
//
// Without a stream_options member, the member is spliced in before the
// closing brace, so the rest of the body is byte for byte what the client
// sent. Otherwise every stream_options member is replaced by one at the end
// that keeps the last one's other members; continuous_usage_stats is
// dropped (it defaults to false), because the client did not ask for usage
// and must not get it in every chunk.
func withIncludeUsage(dst []byte, f requestFields) []byte {
	text := f.text
	if !f.hasStreamOptions {
		dst = append(dst, text[:f.end]...)
		if !f.empty {
			dst = append(dst, ',')
		}
		dst = append(dst, `"stream_options":{"include_usage":true}`...)
		return append(dst, text[f.end:]...)
	}
	var last []byte
	dst = append(dst, '{')
	first := true
	scanObject(text, func(m jsonMember) {
		if keyIs(text[m.keyStart:m.keyEnd], "stream_options") {
			last = text[m.valueStart:m.valueEnd]
			return
		}
		if !first {
			dst = append(dst, ',')
		}
		first = false
		dst = append(dst, text[m.keyStart-1:m.valueEnd]...)
	})
	if !first {
		dst = append(dst, ',')
	}
	dst = append(dst, `"stream_options":{`...)
	if len(last) > 0 && last[0] == '{' {
		scanObject(last, func(m jsonMember) {
			k := last[m.keyStart:m.keyEnd]
			if keyIs(k, "include_usage") || keyIs(k, "continuous_usage_stats") {
				return
			}
			dst = append(dst, last[m.keyStart-1:m.valueEnd]...)
			dst = append(dst, ',')
		})
	}
	return append(dst, `"include_usage":true}}`...)
}

// pythonJSONText returns body as the UTF-8 text Python's json.loads reads
// from it: without a UTF-8 byte order mark, and transcoded from UTF-16 or
// UTF-32 as json.detect_encoding finds them (into scratch, and transcoded
// says so). lossy reports a
// transcoding that replaced something (an odd byte, a lone surrogate, a code
// point past U+10FFFF): Python refuses or keeps what UTF-8 cannot hold.
func pythonJSONText(body []byte, scratch *[]byte) (text []byte, transcoded, lossy bool) {
	switch {
	case bytes.HasPrefix(body, []byte{0, 0, 0xfe, 0xff}):
		return asTranscoded(transcodeUTF32(body[4:], false, scratch))
	case bytes.HasPrefix(body, []byte{0xff, 0xfe, 0, 0}):
		return asTranscoded(transcodeUTF32(body[4:], true, scratch))
	case bytes.HasPrefix(body, []byte{0xfe, 0xff}):
		return asTranscoded(transcodeUTF16(body[2:], false, scratch))
	case bytes.HasPrefix(body, []byte{0xff, 0xfe}):
		return asTranscoded(transcodeUTF16(body[2:], true, scratch))
	case bytes.HasPrefix(body, []byte{0xef, 0xbb, 0xbf}):
		return body[3:], false, false
	case len(body) >= 4 && body[0] == 0:
		if body[1] != 0 {
			return asTranscoded(transcodeUTF16(body, false, scratch))
		}
		return asTranscoded(transcodeUTF32(body, false, scratch))
	case len(body) >= 4 && body[1] == 0:
		if body[2] != 0 || body[3] != 0 {
			return asTranscoded(transcodeUTF16(body, true, scratch))
		}
		return asTranscoded(transcodeUTF32(body, true, scratch))
	case len(body) == 2 && body[0] == 0:
		return asTranscoded(transcodeUTF16(body, false, scratch))
	case len(body) == 2 && body[1] == 0:
		return asTranscoded(transcodeUTF16(body, true, scratch))
	}
	return body, false, false
}

// asTranscoded marks text as a transcoded copy.
func asTranscoded(text []byte, lossy bool) ([]byte, bool, bool) { return text, true, lossy }

func transcodeUTF16(b []byte, little bool, scratch *[]byte) ([]byte, bool) {
	out := (*scratch)[:0]
	lossy := len(b)%2 != 0
	unit := func(i int) rune {
		if little {
			return rune(b[i+1])<<8 | rune(b[i])
		}
		return rune(b[i])<<8 | rune(b[i+1])
	}
	for i := 0; i+1 < len(b); i += 2 {
		r := unit(i)
		if utf16.IsSurrogate(r) {
			if i+3 < len(b) {
				if dec := utf16.DecodeRune(r, unit(i+2)); dec != utf8.RuneError {
					out = utf8.AppendRune(out, dec)
					i += 2
					continue
				}
			}
			lossy = true
		}
		out = utf8.AppendRune(out, r)
	}
	*scratch = out
	return out, lossy
}

func transcodeUTF32(b []byte, little bool, scratch *[]byte) ([]byte, bool) {
	out := (*scratch)[:0]
	lossy := len(b)%4 != 0
	for i := 0; i+3 < len(b); i += 4 {
		r := rune(b[i])<<24 | rune(b[i+1])<<16 | rune(b[i+2])<<8 | rune(b[i+3])
		if little {
			r = rune(b[i+3])<<24 | rune(b[i+2])<<16 | rune(b[i+1])<<8 | rune(b[i])
		}
		if !utf8.ValidRune(r) {
			lossy = true
		}
		out = utf8.AppendRune(out, r)
	}
	*scratch = out
	return out, lossy
}

// modelNameCut returns where a model name is cut: at most
// audit.MaxModelNameBytes, at a character boundary.
func modelNameCut[T string | []byte](name T) int {
	if len(name) <= audit.MaxModelNameBytes {
		return len(name)
	}
	cut := audit.MaxModelNameBytes
	for cut > 0 && !utf8.RuneStart(name[cut]) {
		cut--
	}
	return cut
}

// cutModelName returns name as an event records it, and the length it had
// if that was cut (0 if whole).
func cutModelName(name string) (string, int64) {
	if cut := modelNameCut(name); cut < len(name) {
		return name[:cut], int64(len(name))
	}
	return name, 0
}

// topLevelString returns the last top-level member name of the JSON object
// text holds, if it is a string (unescaped, cut as a model name is), as
// pydantic reads a str field.
func topLevelString(text []byte, name string) (string, int64) {
	var last jsonMember
	found := false
	if _, ok := scanObject(text, func(m jsonMember) {
		if keyIs(text[m.keyStart:m.keyEnd], name) {
			last, found = m, true
		}
	}); !ok || !found {
		return "", 0
	}
	v := text[last.valueStart:last.valueEnd]
	if len(v) < 2 || v[0] != '"' {
		return "", 0
	}
	return cutModelName(string(appendJSONUnescaped(nil, v[1:len(v)-1])))
}
