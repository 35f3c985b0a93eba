package jcs

import "bytes"

// SkipString returns the offset after the JSON string that starts at
// js[i], or -1 if js[i] is not a quote or the string does not end. A quote
// ends the string unless an odd number of backslashes precedes it. It finds
// where the string ends, not whether it is valid.
func SkipString(js []byte, i int) int {
	if i >= len(js) || js[i] != '"' {
		return -1
	}
	for i++; ; {
		q := bytes.IndexByte(js[i:], '"')
		if q < 0 {
			return -1
		}
		end := i + q
		n := 0
		for j := end - 1; j >= i && js[j] == '\\'; j-- {
			n++
		}
		if n%2 == 0 {
			return end + 1
		}
		i = end + 1
	}
}

// SkipValue returns the offset after the JSON value that starts at js[i],
// or -1 if there is none: a string, an object or array (to its matching
// bracket, strings in it skipped), or a number or literal (a run of
// letters, digits, '+', '-' and '.', which also covers NaN and Infinity as
// some encoders write them). It finds where the value ends, not whether it
// is valid.
func SkipValue(js []byte, i int) int {
	if i >= len(js) {
		return -1
	}
	switch js[i] {
	case '"':
		return SkipString(js, i)
	case '{', '[':
		depth := 0
		for ; i < len(js); i++ {
			switch js[i] {
			case '"':
				if i = SkipString(js, i); i < 0 {
					return -1
				}
				i--
			case '{', '[':
				depth++
			case '}', ']':
				if depth--; depth == 0 {
					return i + 1
				}
			}
		}
		return -1
	}
	start := i
	for i < len(js) && (js[i] == '+' || js[i] == '-' || js[i] == '.' ||
		'0' <= js[i] && js[i] <= '9' || 'a' <= js[i] && js[i] <= 'z' || 'A' <= js[i] && js[i] <= 'Z') {
		i++
	}
	if i == start {
		return -1
	}
	return i
}
