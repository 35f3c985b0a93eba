package jcs

import (
	"bytes"
	"encoding/json"
)

// AppendWithout appends to dst the JSON object js without its top-level
// members named in names, and reports which it removed: removed[i] for
// names[i] (removed must be as long as names). Names are compared after
// unescaping, so "\u0040timestamp" is "@timestamp"; every member with a
// removed name goes, duplicates included. The rest of js is copied as it
// is, whitespace and member order included, for Append to canonicalize.
//
// When js has none of the members, or is not a well-formed object at the
// top level, AppendWithout returns js itself, and dst untouched: errors are
// left to the canonicalization that follows, which reports them with their
// place.
//
// Aggregators add members of their own to each record they store (Fluent
// Bit's OpenSearch output "@timestamp", its S3 output "date", a tag): they
// are not part of the event its log hashed, and a verifier drops them,
// named by the auditor, before hashing.
func AppendWithout(dst, js []byte, names []string, removed []bool) []byte {
	clear(removed)
	if !mayHoldMember(js, names) {
		return js
	}
	out, ok := appendWithout(dst, js, names, removed)
	if !ok {
		clear(removed)
		return js
	}
	return out
}

// appendWithout is AppendWithout past its quick check; false means js is
// not a well-formed object or holds none of the members.
func appendWithout(dst, js []byte, names []string, removed []bool) ([]byte, bool) {
	i := skipWS(js, 0)
	if i >= len(js) || js[i] != '{' {
		return nil, false
	}
	type span struct{ start, end int }
	var kept [16]span
	keep := kept[:0]
	any := false
	i = skipWS(js, i+1)
	if i < len(js) && js[i] == '}' {
		return nil, false
	}
	for {
		start := i
		keyEnd := SkipString(js, i)
		if keyEnd < 0 {
			return nil, false
		}
		key := js[i+1 : keyEnd-1]
		i = skipWS(js, keyEnd)
		if i >= len(js) || js[i] != ':' {
			return nil, false
		}
		end := SkipValue(js, skipWS(js, i+1))
		if end < 0 {
			return nil, false
		}
		if k := memberIndex(key, names); k >= 0 {
			if !json.Valid(js[skipWS(js, i+1):end]) {
				return nil, false // a broken value must not go unseen with its member
			}
			removed[k], any = true, true
		} else {
			keep = append(keep, span{start, end})
		}
		i = skipWS(js, end)
		if i >= len(js) {
			return nil, false
		}
		if js[i] == '}' {
			if skipWS(js, i+1) != len(js) {
				return nil, false
			}
			break
		}
		if js[i] != ',' {
			return nil, false
		}
		i = skipWS(js, i+1)
	}
	if !any {
		return nil, false
	}
	dst = append(dst, '{')
	for n, s := range keep {
		if n > 0 {
			dst = append(dst, ',')
		}
		dst = append(dst, js[s.start:s.end]...)
	}
	return append(dst, '}'), true
}

// mayHoldMember reports whether js may have a member named in names: it
// holds one of them quoted, or an escape, which could spell one.
func mayHoldMember(js []byte, names []string) bool {
	if bytes.IndexByte(js, '\\') >= 0 {
		return true
	}
	for _, n := range names {
		for off := 0; ; {
			k := bytes.Index(js[off:], []byte(n))
			if k < 0 {
				break
			}
			k += off
			if k > 0 && k+len(n) < len(js) && js[k-1] == '"' && js[k+len(n)] == '"' {
				return true
			}
			off = k + 1
		}
	}
	return false
}

// memberIndex returns the index in names of the member name key (a JSON
// string's contents, escapes and all), or -1.
func memberIndex(key []byte, names []string) int {
	if bytes.IndexByte(key, '\\') >= 0 {
		var s string
		quoted := append(append([]byte{'"'}, key...), '"')
		if json.Unmarshal(quoted, &s) != nil {
			return -1
		}
		key = []byte(s)
	}
	for i, n := range names {
		if string(key) == n {
			return i
		}
	}
	return -1
}

func skipWS(js []byte, i int) int {
	for i < len(js) && (js[i] == ' ' || js[i] == '\t' || js[i] == '\n' || js[i] == '\r') {
		i++
	}
	return i
}
