package jcs

import (
	"encoding/binary"
	"math/bits"
	"unicode/utf8"
)

// jcsIsCanonical reports whether js is its own RFC 8785 canonical form, so
// that Append(nil, nil, js) would return js unchanged. It checks the
// form in place, without writing or sorting anything, which costs about half
// of what canonicalizing costs; the log writes every event in canonical form
// (see Chain.Append), so a verifier reading the spool, an export or an
// aggregator that kept the lines takes this path.
//
// It answers false for every text that is not canonical, and also, to stay
// small, for some that are: an object with a name that is not printable
// ASCII, or a number of more than 15 significant digits. A false answer only
// sends the caller to Append.
//
// When names is not nil, spans[i] is set to the offsets in js of the value
// of the top-level member named names[i], if there is one; the others are
// left as they were.
func jcsIsCanonical(js []byte, names []string, spans [][2]int32) bool {
	if len(js) > 1<<31-1 {
		return false
	}
	k := jcsChecker{js: js, names: names, spans: spans}
	return k.value(0, 1) == len(js)
}

type jcsChecker struct {
	js    []byte
	names []string
	spans [][2]int32
	// insert, when set, is a name whose place among the top-level members
	// is wanted: at is the offset of the first member named after it (-1:
	// none), and found says a member has the name itself.
	insert string
	at     int
	found  bool
}

// value returns the offset past the canonical value at js[i], at the given
// depth, or -1.
func (k *jcsChecker) value(i, depth int) int {
	js := k.js
	if i >= len(js) || depth > jcsMaxDepth {
		return -1
	}
	switch js[i] {
	case '{':
		return k.object(i, depth)
	case '[':
		return k.array(i, depth)
	case '"':
		return k.str(i)
	case 't':
		if len(js)-i >= 4 && string(js[i:i+4]) == "true" {
			return i + 4
		}
	case 'f':
		if len(js)-i >= 5 && string(js[i:i+5]) == "false" {
			return i + 5
		}
	case 'n':
		if len(js)-i >= 4 && string(js[i:i+4]) == "null" {
			return i + 4
		}
	default:
		return k.number(i)
	}
	return -1
}

func (k *jcsChecker) object(i, depth int) int {
	js := k.js
	i++
	if i < len(js) && js[i] == '}' {
		return i + 1
	}
	var prev []byte
	for first := true; ; first = false {
		end := k.str(i)
		if end < 0 {
			return -1
		}
		name := js[i+1 : end-1]
		// Names of printable ASCII without escapes compare as their
		// UTF-16 code units do; equal names are a duplicate.
		for _, b := range name {
			if b < 0x20 || b >= 0x7f || b == '\\' {
				return -1
			}
		}
		if !first && !before(prev, name) {
			return -1
		}
		prev = name
		if end >= len(js) || js[end] != ':' {
			return -1
		}
		v := end + 1
		if end = k.value(v, depth+1); end < 0 || end >= len(js) {
			return -1
		}
		if depth == 1 && k.insert != "" {
			switch {
			case string(name) == k.insert:
				k.found = true
			case k.at < 0 && string(name) > k.insert:
				k.at = i
			}
		}
		if depth == 1 {
			for n, want := range k.names {
				if string(name) == want {
					k.spans[n] = [2]int32{int32(v), int32(end)}
				}
			}
		}
		switch js[end] {
		case ',':
			i = end + 1
		case '}':
			return end + 1
		default:
			return -1
		}
	}
}

// before reports whether name a sorts strictly before name b. Most names
// of an object differ in their first byte, which decides without a call
// to the runtime's comparison.
func before(a, b []byte) bool {
	if len(a) > 0 && len(b) > 0 && a[0] != b[0] {
		return a[0] < b[0]
	}
	return string(a) < string(b)
}

func (k *jcsChecker) array(i, depth int) int {
	js := k.js
	i++
	if i < len(js) && js[i] == ']' {
		return i + 1
	}
	for {
		if i = k.value(i, depth+1); i < 0 || i >= len(js) {
			return -1
		}
		switch js[i] {
		case ',':
			i++
		case ']':
			return i + 1
		default:
			return -1
		}
	}
}

// str returns the offset past the canonical string at js[i], or -1.
func (k *jcsChecker) str(i int) int {
	js := k.js
	if i >= len(js) || js[i] != '"' {
		return -1
	}
	// Plain ASCII 8 bytes at a time, as jcsString reads it; the first 8
	// start with the opening quote, which is not special.
	first := uint64(0x80)
	for i+8 <= len(js) {
		x := binary.LittleEndian.Uint64(js[i:])
		if m := jcsSpecial(x) &^ first; m != 0 {
			n := bits.TrailingZeros64(m) >> 3
			if js[i+n] == '"' {
				return i + n + 1
			}
			return k.strSlow(i + n)
		}
		i += 8
		first = 0
	}
	if first != 0 {
		i++
	}
	return k.strSlow(i)
}

// strSlow returns the offset past the rest of a string, from js[i] on, if it
// is canonical: escapes only for '"', '\\' and the controls, in the forms JCS
// writes them, and valid UTF-8 otherwise.
func (k *jcsChecker) strSlow(i int) int {
	js := k.js
	for i < len(js) {
		switch b := js[i]; {
		case b == '"':
			return i + 1
		case b == '\\':
			if i+1 >= len(js) {
				return -1
			}
			switch js[i+1] {
			case '"', '\\', 'b', 'f', 'n', 'r', 't':
				i += 2
			case 'u':
				// \u00xx, lower-case hex, for a control without a
				// short form.
				if i+6 > len(js) || js[i+2] != '0' || js[i+3] != '0' || (js[i+4] != '0' && js[i+4] != '1') {
					return -1
				}
				c := js[i+5]
				var low byte
				switch {
				case '0' <= c && c <= '9':
					low = c - '0'
				case 'a' <= c && c <= 'f':
					low = c - 'a' + 10
				default:
					return -1
				}
				switch (js[i+4]-'0')<<4 | low {
				case '\b', '\f', '\n', '\r', '\t':
					return -1
				}
				i += 6
			default:
				return -1
			}
		case b < 0x20:
			return -1
		case b < utf8.RuneSelf:
			i++
		default:
			r, n := utf8.DecodeRune(js[i:])
			if r == utf8.RuneError && n == 1 {
				return -1
			}
			i += n
		}
	}
	return -1
}

// number returns the offset past the number at js[i] if it is written as
// JCS writes it, or -1. It accepts the numbers of at most 15 significant
// digits that jcsNumberValue's fast path writes as they stand.
func (k *jcsChecker) number(i int) int {
	js := k.js
	j := i
	if j < len(js) && js[j] == '-' {
		j++
	}
	d := j
	for j < len(js) && js[j]-'0' < 10 {
		j++
	}
	n := j - d
	if n == 0 || n > 15 || js[d] == '0' && n > 1 {
		return -1
	}
	if j < len(js) && js[j] == '.' {
		f := j + 1
		e := f
		for e < len(js) && js[e]-'0' < 10 {
			e++
		}
		if e == f || js[e-1] == '0' {
			return -1 // no fraction digits, or a trailing zero
		}
		if js[d] != '0' {
			if n+e-f > 15 {
				return -1
			}
		} else {
			z := f // the first significant digit
			for js[z] == '0' {
				z++
			}
			if z-f > 5 || e-z > 15 {
				return -1
			}
		}
		j = e
	} else if n == 1 && js[d] == '0' && d > i {
		return -1 // -0
	}
	if j < len(js) && jcsNumChar[js[j]] {
		return -1 // an exponent, or not a number
	}
	return j
}

// AppendInserted appends to dst the JSON object js with the member
// name:value added at its place in the canonical order, and reports true,
// when js is a canonical object without a member name and value is a
// canonical value; otherwise it appends nothing and reports false, and
// the caller canonicalizes (Append). name must be printable ASCII other
// than '"' and '\\'.
//
// The result is what Append would give for js with the member added, but
// found in one pass over js, without parsing or sorting it: the log adds
// each event's "log" member this way.
func AppendInserted(dst, js []byte, name string, value []byte) ([]byte, bool) {
	if len(js) < 2 || js[0] != '{' || !jcsIsCanonical(value, nil, nil) {
		return dst, false
	}
	k := jcsChecker{js: js, insert: name, at: -1}
	if len(js) > 1<<31-1 || k.value(0, 1) != len(js) || k.found {
		return dst, false
	}
	member := func(dst []byte) []byte {
		dst = append(dst, '"')
		dst = append(dst, name...)
		dst = append(dst, '"', ':')
		return append(dst, value...)
	}
	switch {
	case len(js) == 2: // {}
		dst = append(dst, '{')
		dst = member(dst)
		return append(dst, '}'), true
	case k.at < 0: // after every member
		dst = append(dst, js[:len(js)-1]...)
		dst = member(append(dst, ','))
		return append(dst, '}'), true
	default: // before the member at k.at
		dst = append(dst, js[:k.at]...)
		dst = append(member(dst), ',')
		return append(dst, js[k.at:]...), true
	}
}
