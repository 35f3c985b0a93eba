package proxy

import "bytes"

// sseEvent is one Server-Sent Events event found in a buffer.
type sseEvent struct {
	// size is the event's length in the buffer, through its terminating
	// blank line.
	size int
	// data is the event's data: the values of its data fields joined with
	// "\n", as the EventSource specification assembles them. It aliases the
	// buffer when the event has one data line, and scratch otherwise.
	data []byte
	// hasData reports whether the event had at least one data field.
	hasData bool
}

// nextSSEEvent finds the first complete event in b, which must start at an
// event boundary. An event is complete when a blank line ends it; lines end
// in "\n", "\r\n" or "\r". ok is false when b holds no complete event yet.
//
// A "\r" at the very end of b is not taken as a line end, since a "\n" may
// follow in the next read and the pair is one line end.
//
// scratch is reused to join multi-line data; the caller keeps it between
// calls to avoid allocating.
func nextSSEEvent(b []byte, scratch *[]byte) (ev sseEvent, ok bool) {
	pos := 0
	dataLines := 0
	var first []byte
	for {
		lineEnd, next := findLineEnd(b[pos:])
		if lineEnd < 0 {
			return sseEvent{}, false
		}
		line := b[pos : pos+lineEnd]
		pos += next
		if len(line) == 0 {
			ev.size = pos
			switch dataLines {
			case 0:
			case 1:
				ev.data = first
			default:
				ev.data = *scratch
			}
			ev.hasData = dataLines > 0
			return ev, true
		}
		value, isData := dataField(line)
		if !isData {
			continue
		}
		switch dataLines {
		case 0:
			first = value
		case 1:
			*scratch = append(append(append((*scratch)[:0], first...), '\n'), value...)
		default:
			*scratch = append(append(*scratch, '\n'), value...)
		}
		dataLines++
	}
}

// findLineEnd returns the length of the first line in b and the offset of the
// byte after its line end, or -1 when b holds no complete line.
func findLineEnd(b []byte) (lineLen, next int) {
	i := bytes.IndexAny(b, "\r\n")
	if i < 0 {
		return -1, 0
	}
	if b[i] == '\n' {
		return i, i + 1
	}
	// "\r": a following "\n" belongs to the same line end.
	if i+1 == len(b) {
		return -1, 0
	}
	if b[i+1] == '\n' {
		return i, i + 2
	}
	return i, i + 1
}

// dataField returns the value of line if it is a "data" field. Per the
// EventSource specification, a single space after the colon is not part of
// the value, and a line "data" without a colon is a data field with an empty
// value.
func dataField(line []byte) (value []byte, ok bool) {
	const name = "data"
	if len(line) < len(name) || string(line[:len(name)]) != name {
		return nil, false
	}
	rest := line[len(name):]
	if len(rest) == 0 {
		return rest, true
	}
	if rest[0] != ':' {
		return nil, false // another field whose name starts with "data"
	}
	rest = rest[1:]
	if len(rest) > 0 && rest[0] == ' ' {
		rest = rest[1:]
	}
	return rest, true
}

// sseEventReader reads one SSE event that arrives in pieces, as
// nextSSEEvent reads a whole one: the values of its data fields, joined
// with "\n", go to a fieldScanner as they come, so that an event of any
// size is read without being held.
type sseEventReader struct {
	state     sseReadState
	name      [5]byte // the field name read so far, if it may be "data"
	nameLen   int
	dataLines int
	// afterCR: the last byte read was a "\r" line end, which a "\n" may
	// complete.
	afterCR bool
}

type sseReadState uint8

const (
	sseLineStart sseReadState = iota
	sseName                   // in a field name
	sseDataSpace              // after "data:", where one space is dropped
	sseData                   // in a data field's value
	sseOther                  // in another field, or a comment
)

// feed reads b, the next bytes of the event, and returns how many it took:
// all of b, or those through the blank line that ends the event (ended).
func (r *sseEventReader) feed(b []byte, s *fieldScanner) (n int, ended bool) {
	i := 0
	if r.afterCR && len(b) > 0 {
		r.afterCR = false
		if b[0] == '\n' {
			i++
		}
	}
	for i < len(b) {
		c := b[i]
		switch r.state {
		case sseLineStart:
			if c == '\r' || c == '\n' {
				return i + r.lineEnd(b, i), true
			}
			r.state, r.nameLen = sseName, 0
		case sseName:
			switch {
			case c == ':':
				r.state = sseOther
				if r.isData() {
					r.startData(s)
					r.state = sseDataSpace
				}
				i++
			case c == '\r' || c == '\n':
				if r.isData() {
					r.startData(s) // "data" alone: an empty value
				}
				i += r.lineEnd(b, i)
				r.state = sseLineStart
			default:
				if r.nameLen < len(r.name) {
					r.name[r.nameLen] = c
				}
				r.nameLen++
				i++
			}
		case sseDataSpace:
			r.state = sseData
			if c == ' ' {
				i++
			}
		case sseData, sseOther:
			j := i
			for j < len(b) && b[j] != '\r' && b[j] != '\n' {
				j++
			}
			if r.state == sseData {
				s.write(b[i:j])
			}
			i = j
			if i < len(b) {
				i += r.lineEnd(b, i)
				r.state = sseLineStart
			}
		}
	}
	return i, false
}

func (r *sseEventReader) isData() bool {
	return r.nameLen == 4 && string(r.name[:4]) == "data"
}

// startData begins a data field's value: after the first, a "\n" joins it
// to the ones before.
func (r *sseEventReader) startData(s *fieldScanner) {
	if r.dataLines > 0 {
		s.write(newline)
	}
	r.dataLines++
}

// lineEnd returns the length of the line end at b[i]: "\r\n", "\r" or
// "\n". A "\r" at the end of b may be completed by the next piece.
func (r *sseEventReader) lineEnd(b []byte, i int) int {
	if b[i] == '\r' {
		if i+1 < len(b) {
			if b[i+1] == '\n' {
				return 2
			}
			return 1
		}
		r.afterCR = true
	}
	return 1
}

var newline = []byte{'\n'}
