package transcript

import (
	"fmt"
	"unicode/utf8"
)

// Printable returns b as text that is safe to write to a terminal: what a
// model, a client or a hostile capture wrote cannot move the cursor, change
// colours, set the window title, rewrite earlier lines or reorder text.
// Newlines and tabs are kept; every other C0 control, DEL and each byte that
// is not UTF-8 is written \xNN (\r as \r); C1 controls (U+0080 to U+009F,
// which some terminals obey as escape sequences), the bidirectional
// formatting characters (U+061C, U+200E, U+200F, U+202A to U+202E, U+2066
// to U+2069) and the line and paragraph separators (U+2028, U+2029) are
// written \uXXXX. Everything else passes unchanged.
//
// The escapes are not themselves escaped: a text holding a backslash, an x
// and two hex digits reads like an escaped byte. The exact bytes are what
// show --raw, --out-dir and --json give.
func Printable(b []byte) string { return string(appendPrintable(nil, b, false)) }

// Line is Printable for a value printed within a line (a model name, a
// request id, a ticket): newlines and tabs are escaped too (\n, \t), so a
// value cannot start a line of its own that looks like another field.
func Line(s string) string { return string(appendPrintable(nil, []byte(s), true)) }

func appendPrintable(dst, b []byte, oneLine bool) []byte {
	for len(b) > 0 {
		c := b[0]
		if c < utf8.RuneSelf {
			switch {
			case c == '\n' && !oneLine, c == '\t' && !oneLine:
				dst = append(dst, c)
			case c == '\n':
				dst = append(dst, `\n`...)
			case c == '\t':
				dst = append(dst, `\t`...)
			case c == '\r':
				dst = append(dst, `\r`...)
			case c < 0x20 || c == 0x7f:
				dst = fmt.Appendf(dst, `\x%02x`, c)
			default:
				dst = append(dst, c)
			}
			b = b[1:]
			continue
		}
		r, n := utf8.DecodeRune(b)
		switch {
		case r == utf8.RuneError && n == 1:
			dst = fmt.Appendf(dst, `\x%02x`, c)
		case unsafeRune(r):
			dst = fmt.Appendf(dst, `\u%04x`, r)
		default:
			dst = append(dst, b[:n]...)
		}
		b = b[n:]
	}
	return dst
}

// unsafeRune reports whether r is a character Printable escapes.
func unsafeRune(r rune) bool {
	switch {
	case r >= 0x80 && r <= 0x9f:
		return true
	case r == 0x061c, r == 0x200e, r == 0x200f, r == 0x2028, r == 0x2029:
		return true
	case r >= 0x202a && r <= 0x202e, r >= 0x2066 && r <= 0x2069:
		return true
	}
	return false
}

// EscapeJSON returns the JSON text b with the characters Printable
// escapes that JSON allows raw in a string (C1 controls, bidirectional
// formatting characters, line and paragraph separators) written as \uXXXX
// escapes: the same JSON value, safe to print on a terminal. A byte that
// is not UTF-8 (encoding/json copies a json.RawMessage as it is) becomes
// \ufffd, as encoding/json writes such a byte in a string. b must be valid
// JSON: JSON allows no raw C0 control, and outside strings none of these
// can stand.
func EscapeJSON(b []byte) []byte {
	var out []byte
	last := 0
	for i := 0; i < len(b); {
		if b[i] < utf8.RuneSelf {
			i++
			continue
		}
		r, n := utf8.DecodeRune(b[i:])
		if unsafeRune(r) || (r == utf8.RuneError && n == 1) {
			out = append(out, b[last:i]...)
			out = fmt.Appendf(out, `\u%04x`, r)
			last = i + n
		}
		i += n
	}
	if out == nil {
		return b
	}
	return append(out, b[last:]...)
}
