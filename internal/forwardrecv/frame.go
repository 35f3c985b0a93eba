package forwardrecv

import (
	"bytes"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"time"
)

// frame is one decoded forward-protocol message.
type frame struct {
	tag     string
	entries []event
	// chunk is the option's "chunk" value; hasChunk says the option had one
	// (the sender wants an ack).
	chunk    string
	hasChunk bool
	// size is how many bytes the frame occupied on the wire.
	size int
}

// event is one entry of a frame: its time and record.
type event struct {
	time   time.Time
	record map[string]any
}

// readFrame reads and checks the next frame from r, consuming exactly its
// bytes. It returns io.EOF, unwrapped, only when r ends before the first byte
// of a frame; every other failure is a decode or protocol error (truncation
// included), after which the stream is no longer in step and must be closed.
//
// A frame is a msgpack array in one of the forward protocol's modes:
//
//	Message                  [tag, time, record]      or [tag, time, record, option]
//	Forward                  [tag, [[time, record]...]] or [..., option]
//	PackedForward            [tag, bin|str]           or [tag, bin|str, option]
//	CompressedPackedForward  as PackedForward, option {"compressed": "gzip"}
//
// tag is a str; time an integer (unix seconds) or an EventTime (ext type 0,
// 8 bytes: big-endian uint32 seconds, uint32 nanoseconds < 1e9); record a
// map with str keys; a packed payload the concatenation of msgpack
// [time, record] entries, gzip-compressed (possibly as several gzip members)
// when the option says "compressed": "gzip". The option is a map or nil; of
// its keys the receiver checks "chunk" (a str: the sender wants an ack),
// "size" (an integer that must equal the number of entries) and "compressed"
// ("gzip", or "text" for none; "gzip" only on a packed payload), and ignores
// the rest.
func readFrame(r source) (*frame, error) {
	d := &decoder{r: r, budget: MaxFrameSize}
	c, err := r.ReadByte()
	if err != nil {
		if errors.Is(err, io.EOF) {
			return nil, io.EOF
		}
		return nil, d.ioErr(err)
	}
	d.budget--
	d.pos++
	if c&0xf0 != 0x90 && c != 0xdc && c != 0xdd {
		// Refuse what is not an array (an HTTP request, a TLS
		// handshake) before reading on.
		return nil, frameErr("starts with format byte 0x%02x, want an array", c)
	}
	v, err := d.valueAfter(c, 0)
	if err != nil {
		return nil, err
	}
	f, err := d.frame(v)
	if err != nil {
		return nil, err
	}
	f.size = int(d.pos)
	return f, nil
}

func frameErr(format string, args ...any) error {
	return fmt.Errorf("forwardrecv: frame: "+format, args...)
}

// frame interprets the decoded top-level value v.
func (d *decoder) frame(v any) (*frame, error) {
	arr, ok := v.([]any)
	if !ok {
		return nil, frameErr("want an array, got %s", typeName(v))
	}
	if len(arr) < 2 || len(arr) > 4 {
		return nil, frameErr("array of %d elements, want 2 to 4", len(arr))
	}
	f := &frame{}
	if f.tag, ok = arr[0].(string); !ok {
		return nil, frameErr("tag is %s, want a str", typeName(arr[0]))
	}

	// The second element decides the mode.
	var rest []any // what follows the mode's own elements: the option, if any
	packed := false
	var payload []byte
	switch second := arr[1].(type) {
	case int64, uint64, Ext: // Message
		if len(arr) < 3 {
			return nil, frameErr("message mode needs [tag, time, record], got %d elements", len(arr))
		}
		ev, err := toEvent(second, arr[2])
		if err != nil {
			return nil, frameErr("message mode: %w", err)
		}
		f.entries = []event{ev}
		rest = arr[3:]
	case []any: // Forward
		if len(arr) > 3 {
			return nil, frameErr("forward mode has %d elements, want at most 3", len(arr))
		}
		f.entries = make([]event, 0, len(second))
		for i, e := range second {
			pair, ok := e.([]any)
			if !ok || len(pair) != 2 {
				return nil, frameErr("forward mode: entry %d is not a [time, record] array", i)
			}
			ev, err := toEvent(pair[0], pair[1])
			if err != nil {
				return nil, frameErr("forward mode: entry %d: %w", i, err)
			}
			f.entries = append(f.entries, ev)
		}
		rest = arr[2:]
	case []byte: // PackedForward, bin
		packed, payload, rest = true, second, arr[2:]
	case string: // PackedForward, str
		packed, payload, rest = true, []byte(second), arr[2:]
	default:
		return nil, frameErr("second element is %s: not a time, entries array or packed entries", typeName(second))
	}
	if packed && len(arr) > 3 {
		return nil, frameErr("packed forward mode has %d elements, want at most 3", len(arr))
	}

	// The option.
	var size any
	compressed := ""
	if len(rest) == 1 && rest[0] != nil {
		opt, ok := rest[0].(map[string]any)
		if !ok {
			return nil, frameErr("option is %s, want a map", typeName(rest[0]))
		}
		if c, ok := opt["chunk"]; ok {
			if f.chunk, ok = c.(string); !ok {
				return nil, frameErr("option chunk is %s, want a str", typeName(c))
			}
			f.hasChunk = true
		}
		size = opt["size"]
		if c, ok := opt["compressed"]; ok {
			if compressed, ok = c.(string); !ok || (compressed != "gzip" && compressed != "text") {
				return nil, frameErr(`option compressed is %v, want "gzip" or "text"`, c)
			}
		}
	}

	if packed {
		if compressed == "gzip" {
			var err error
			if payload, err = gunzip(payload); err != nil {
				return nil, err
			}
		}
		var err error
		if f.entries, err = d.packed(payload); err != nil {
			return nil, err
		}
	} else if compressed == "gzip" {
		return nil, frameErr(`option compressed "gzip" on a frame without packed entries`)
	}

	if size != nil {
		var n int64
		switch s := size.(type) {
		case int64:
			n = s
		case uint64:
			n = -1 // more than any frame can hold
		default:
			return nil, frameErr("option size is %s, want an integer", typeName(size))
		}
		if n != int64(len(f.entries)) {
			return nil, frameErr("option size is %v but the frame has %d entries", size, len(f.entries))
		}
	}
	return f, nil
}

// packed decodes the concatenated [time, record] entries of a packed
// payload, counting their values against the frame's limit.
func (d *decoder) packed(p []byte) ([]event, error) {
	saved := *d
	defer func() {
		values := d.values
		*d = saved
		d.values = values
	}()
	br := bytes.NewReader(p)
	d.r, d.budget, d.pos, d.inMemory = br, uint64(len(p)), 0, true
	var evs []event
	for br.Len() > 0 {
		v, err := d.value(1)
		if err != nil {
			return nil, frameErr("packed entry %d: %w", len(evs), err)
		}
		pair, ok := v.([]any)
		if !ok || len(pair) != 2 {
			return nil, frameErr("packed entry %d is not a [time, record] array", len(evs))
		}
		ev, err := toEvent(pair[0], pair[1])
		if err != nil {
			return nil, frameErr("packed entry %d: %w", len(evs), err)
		}
		evs = append(evs, ev)
	}
	return evs, nil
}

// gunzip decompresses a CompressedPackedForward payload, refusing to make
// more than MaxFrameSize bytes of it.
func gunzip(p []byte) ([]byte, error) {
	zr, err := gzip.NewReader(bytes.NewReader(p))
	if err != nil {
		return nil, frameErr("gzip: %w", err)
	}
	out, err := io.ReadAll(io.LimitReader(zr, MaxFrameSize+1))
	if err != nil {
		return nil, frameErr("gzip: %w", err)
	}
	if len(out) > MaxFrameSize {
		return nil, frameErr("gzip payload decompresses to more than %d bytes", MaxFrameSize)
	}
	return out, nil
}

// toEvent checks an entry's time and record.
func toEvent(t, rec any) (event, error) {
	var ev event
	switch t := t.(type) {
	case int64:
		ev.time = time.Unix(t, 0).UTC()
	case uint64:
		return ev, fmt.Errorf("time %d is out of range", t)
	case Ext:
		if t.Type != 0 || len(t.Data) != 8 {
			return ev, fmt.Errorf("time is an ext of type %d with %d bytes, want EventTime (type 0, 8 bytes)", t.Type, len(t.Data))
		}
		b := t.Data
		sec := uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
		nsec := uint32(b[4])<<24 | uint32(b[5])<<16 | uint32(b[6])<<8 | uint32(b[7])
		if nsec >= 1e9 {
			return ev, fmt.Errorf("EventTime has %d nanoseconds", nsec)
		}
		ev.time = time.Unix(int64(sec), int64(nsec)).UTC()
	default:
		return ev, fmt.Errorf("time is %s, want an integer or EventTime", typeName(t))
	}
	m, ok := rec.(map[string]any)
	if !ok {
		return ev, fmt.Errorf("record is %s, want a map", typeName(rec))
	}
	ev.record = m
	return ev, nil
}

// typeName names the msgpack type a decoded value came from.
func typeName(v any) string {
	switch v := v.(type) {
	case nil:
		return "nil"
	case bool:
		return "a bool"
	case int64, uint64:
		return "an integer"
	case float64:
		return "a float"
	case string:
		return "a str"
	case []byte:
		return "a bin"
	case []any:
		return "an array"
	case map[string]any:
		return "a map"
	case Ext:
		return fmt.Sprintf("an ext of type %d", v.Type)
	}
	return fmt.Sprintf("%T", v)
}
