package proxy

import (
	"bytes"
	"testing"
)

func TestNextSSEEvent(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		ok      bool
		size    int
		data    string
		hasData bool
	}{
		{"vllm chunk", "data: {\"a\":1}\n\ndata: [DONE]\n\n", true, 15, `{"a":1}`, true},
		{"no space after colon", "data:x\n\n", true, 8, "x", true},
		{"two spaces keep one", "data:  x\n\n", true, 10, " x", true},
		{"crlf", "data: x\r\n\r\n", true, 11, "x", true},
		{"cr only", "data: x\r\rrest", true, 9, "x", true},
		{"multi-line data joins with newline", "data: a\ndata: b\ndata: c\n\n", true, 25, "a\nb\nc", true},
		{"comment and other fields ignored", ": ping\nevent: x\nid: 7\ndata: d\n\n", true, 31, "d", true},
		{"data without colon is empty data", "data\n\n", true, 6, "", true},
		{"field named datax is not data", "datax: 1\n\n", true, 10, "", false},
		{"comment-only event", ": keepalive\n\n", true, 13, "", false},
		{"incomplete: no blank line", "data: x\n", false, 0, "", false},
		{"incomplete: no line end", "data: x", false, 0, "", false},
		{"incomplete: cr may pair with next lf", "data: x\n\r", false, 0, "", false},
		{"empty", "", false, 0, "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var scratch []byte
			ev, ok := nextSSEEvent([]byte(tt.in), &scratch)
			if ok != tt.ok || ev.size != tt.size || string(ev.data) != tt.data || ev.hasData != tt.hasData {
				t.Errorf("nextSSEEvent(%q) = size %d data %q hasData %v ok %v; want size %d data %q hasData %v ok %v",
					tt.in, ev.size, ev.data, ev.hasData, ok, tt.size, tt.data, tt.hasData, tt.ok)
			}
		})
	}
}

// splitEvents parses every complete event in b, feeding it in pieces as a
// stream would arrive: cut at the given offsets.
func splitEvents(b []byte, cuts []int) (events []string, rest int) {
	var scratch []byte
	var buf []byte
	prev := 0
	feed := func(upto int) {
		buf = append(buf, b[prev:upto]...)
		prev = upto
		for {
			ev, ok := nextSSEEvent(buf, &scratch)
			if !ok {
				return
			}
			if ev.hasData {
				events = append(events, string(ev.data))
			}
			buf = buf[ev.size:]
		}
	}
	for _, c := range cuts {
		if c > prev && c <= len(b) {
			feed(c)
		}
	}
	feed(len(b))
	return events, len(buf)
}

func FuzzSSEParser(f *testing.F) {
	f.Add([]byte("data: {\"choices\":[]}\n\ndata: [DONE]\n\n"), uint16(3), uint16(20))
	f.Add([]byte("data: a\r\ndata: b\r\n\r\n: c\n\n"), uint16(8), uint16(9))
	f.Add([]byte("data:x\r\rdata:y\r\n\r\n"), uint16(7), uint16(8))
	f.Fuzz(func(t *testing.T, b []byte, c1, c2 uint16) {
		whole, restWhole := splitEvents(b, nil)
		parts, restParts := splitEvents(b, []int{int(c1) % (len(b) + 1), int(c2) % (len(b) + 1)})
		// Where a stream is cut must not change what is parsed from it, except
		// that a cut between "\r" and "\n" is resolved the same way.
		if len(whole) != len(parts) || restWhole != restParts {
			t.Fatalf("split changes the parse of %q: %q (rest %d) vs %q (rest %d)", b, whole, restWhole, parts, restParts)
		}
		for i := range whole {
			if whole[i] != parts[i] {
				t.Fatalf("event %d: %q vs %q", i, whole[i], parts[i])
			}
		}
		var scratch []byte
		if ev, ok := nextSSEEvent(b, &scratch); ok {
			if ev.size <= 0 || ev.size > len(b) || (!bytes.HasSuffix(b[:ev.size], []byte("\n")) && !bytes.HasSuffix(b[:ev.size], []byte("\r"))) {
				t.Fatalf("event size %d of %q does not end at a line end", ev.size, b)
			}
		}
	})
}
