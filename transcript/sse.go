package transcript

import "bytes"

// Event is one Server-Sent Event: its event type ("" when the stream named
// none, which the SSE standard calls "message") and its data, the data
// lines joined with "\n".
type Event struct {
	Type string
	Data []byte
}

// Parser reads a Server-Sent Events stream as the WHATWG HTML standard
// ("Parsing an event stream") defines it, from bytes split anywhere: lines
// end in CRLF, LF or CR (a CRLF split between two writes is one line end);
// a line starting with ':' is a comment; "event" sets the type and "data"
// adds a data line (one space after the colon is dropped); an empty line
// dispatches the event, and one with no data line dispatches nothing; "id",
// "retry" and unknown fields are ignored; a byte order mark at the start is
// skipped. Lines have no length limit: a 10 MB delta is one line.
//
// The zero value is ready to use.
type Parser struct {
	line      []byte // the line read so far
	pendingCR bool   // the last byte written was a CR: an LF next is its pair
	started   bool   // the first bytes (a BOM) were looked at
	typ       string
	data      []byte
	hasData   bool
	events    []Event
	partial   bool // bytes of an event not yet dispatched
}

var bom = []byte("\xef\xbb\xbf")

// Write adds p to the stream. It never fails.
func (p *Parser) Write(b []byte) (int, error) {
	n := len(b)
	if !p.started {
		// The BOM may itself arrive split: wait for three bytes.
		if len(p.line)+len(b) < len(bom) && bytes.HasPrefix(bom, append(p.line[:len(p.line):len(p.line)], b...)) {
			p.line = append(p.line, b...)
			return n, nil
		}
		b = append(p.line, b...)
		p.line = nil
		p.started = true
		b = bytes.TrimPrefix(b, bom)
	}
	for len(b) > 0 {
		if p.pendingCR {
			p.pendingCR = false
			if b[0] == '\n' {
				b = b[1:]
				continue
			}
		}
		i := bytes.IndexAny(b, "\r\n")
		if i < 0 {
			p.line = append(p.line, b...)
			p.partial = p.partial || len(p.line) > 0
			return n, nil
		}
		var line []byte
		if len(p.line) > 0 {
			p.line = append(p.line, b[:i]...)
			line = p.line
		} else {
			line = b[:i]
		}
		p.pendingCR = b[i] == '\r'
		b = b[i+1:]
		p.handleLine(line)
		p.line = p.line[:0]
	}
	return n, nil
}

// handleLine processes one complete line.
func (p *Parser) handleLine(line []byte) {
	if len(line) == 0 {
		if p.hasData {
			p.events = append(p.events, Event{Type: p.typ, Data: p.data})
		}
		p.typ, p.data, p.hasData, p.partial = "", nil, false, false
		return
	}
	if line[0] == ':' {
		return
	}
	p.partial = true
	name, value := line, []byte(nil)
	if i := bytes.IndexByte(line, ':'); i >= 0 {
		name, value = line[:i], line[i+1:]
		value = bytes.TrimPrefix(value, []byte(" "))
	}
	switch string(name) {
	case "event":
		p.typ = string(value)
	case "data":
		if p.hasData {
			p.data = append(p.data, '\n')
		}
		p.data = append(p.data, value...)
		p.hasData = true
	}
}

// Events returns the events dispatched so far and forgets them.
func (p *Parser) Events() []Event {
	ev := p.events
	p.events = nil
	return ev
}

// Pending reports whether the stream so far ends inside an event: lines
// (or part of one) that no empty line has dispatched yet. At the end of a
// stream they are not an event (the standard discards them); a cut
// capture ends that way.
func (p *Parser) Pending() bool { return p.partial || len(p.line) > 0 }
