package forwardrecv

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"io"
	"math"
	"net"
	"reflect"
	"runtime"
	"strings"
	"testing"
	"time"
)

// b builds a byte fixture by hand: each part is hex (spaces allowed) or,
// when it starts with a quote, the text after the quote.
func b(parts ...string) []byte {
	var out []byte
	for _, p := range parts {
		if text, ok := strings.CutPrefix(p, "'"); ok {
			out = append(out, text...)
			continue
		}
		h, err := hex.DecodeString(strings.ReplaceAll(p, " ", ""))
		if err != nil {
			panic("bad hex fixture " + p)
		}
		out = append(out, h...)
	}
	return out
}

func cat(parts ...[]byte) []byte { return bytes.Join(parts, nil) }

// decodeOne decodes one value from in as a stream (not as an in-memory
// payload), returning how many bytes it consumed.
func decodeOne(in []byte) (any, int, error) {
	br := bytes.NewReader(in)
	d := &decoder{r: br, budget: MaxFrameSize}
	v, err := d.value(0)
	return v, len(in) - br.Len(), err
}

func TestDecodeValue(t *testing.T) {
	x32 := strings.Repeat("x", 32)
	sixteen := "00 01 02 03 04 05 06 07 08 09 0a 0b 0c 0d 0e 0f"
	tests := []struct {
		name string
		in   []byte
		want any
	}{
		{"positive fixint 0", b("00"), int64(0)},
		{"positive fixint 127", b("7f"), int64(127)},
		{"negative fixint -32", b("e0"), int64(-32)},
		{"negative fixint -1", b("ff"), int64(-1)},
		{"uint8", b("cc ff"), int64(255)},
		{"uint16", b("cd ff ff"), int64(65535)},
		{"uint32", b("ce ff ff ff ff"), int64(4294967295)},
		{"uint64 MaxInt64", b("cf 7f ff ff ff ff ff ff ff"), int64(math.MaxInt64)},
		{"uint64 2^63", b("cf 80 00 00 00 00 00 00 00"), uint64(1 << 63)},
		{"uint64 max", b("cf ff ff ff ff ff ff ff ff"), uint64(math.MaxUint64)},
		{"int8 -128", b("d0 80"), int64(-128)},
		{"int8 127", b("d0 7f"), int64(127)},
		{"int16 min", b("d1 80 00"), int64(math.MinInt16)},
		{"int16 -2", b("d1 ff fe"), int64(-2)},
		{"int32 min", b("d2 80 00 00 00"), int64(math.MinInt32)},
		{"int32 1", b("d2 00 00 00 01"), int64(1)},
		{"int64 min", b("d3 80 00 00 00 00 00 00 00"), int64(math.MinInt64)},
		{"int64 -2", b("d3 ff ff ff ff ff ff ff fe"), int64(-2)},
		{"float32 1.5", b("ca 3f c0 00 00"), 1.5},
		{"float32 0.1 widened", b("ca 3d cc cc cd"), float64(float32(0.1))},
		{"float64 1.5", b("cb 3f f8 00 00 00 00 00 00"), 1.5},
		{"float64 -0.25", b("cb bf d0 00 00 00 00 00 00"), -0.25},
		{"float64 +Inf", b("cb 7f f0 00 00 00 00 00 00"), math.Inf(1)},
		{"nil", b("c0"), nil},
		{"false", b("c2"), false},
		{"true", b("c3"), true},
		{"fixstr empty", b("a0"), ""},
		{"fixstr", b("a3", "'abc"), "abc"},
		{"fixstr utf-8", b("a2 c3 a9"), "é"},
		{"fixstr 31", b("bf", "'"+x32[:31]), x32[:31]},
		{"str8", b("d9 20", "'"+x32), x32},
		{"str16", b("da 00 03", "'abc"), "abc"},
		{"str32", b("db 00 00 00 03", "'abc"), "abc"},
		{"bin8 empty", b("c4 00"), []byte{}},
		{"bin8", b("c4 03 01 02 03"), []byte{1, 2, 3}},
		{"bin16", b("c5 00 03 01 02 03"), []byte{1, 2, 3}},
		{"bin32", b("c6 00 00 00 03 01 02 03"), []byte{1, 2, 3}},
		{"fixarray empty", b("90"), []any{}},
		{"fixarray", b("93 01 02 03"), []any{int64(1), int64(2), int64(3)}},
		{"array16", b("dc 00 02 c0 c3"), []any{nil, true}},
		{"array32", b("dd 00 00 00 01 a1", "'x"), []any{"x"}},
		{"fixmap empty", b("80"), map[string]any{}},
		{"fixmap", b("81 a1", "'a", "01"), map[string]any{"a": int64(1)}},
		{"fixmap str8 key", b("81 d9 01", "'k", "01"), map[string]any{"k": int64(1)}},
		{"map16", b("de 00 01 a1", "'a", "c2"), map[string]any{"a": false}},
		{"map32", b("df 00 00 00 01 a1", "'a", "90"), map[string]any{"a": []any{}}},
		{"nested", b("82 a3", "'arr", "92 01 81 a1", "'x", "c0 a3", "'map", "81 a1", "'y", "ca 3f c0 00 00"),
			map[string]any{"arr": []any{int64(1), map[string]any{"x": nil}}, "map": map[string]any{"y": 1.5}}},
		{"fixext1", b("d4 01 ff"), Ext{1, []byte{0xff}}},
		{"fixext2", b("d5 02 01 02"), Ext{2, []byte{1, 2}}},
		{"fixext4", b("d6 03 01 02 03 04"), Ext{3, []byte{1, 2, 3, 4}}},
		{"fixext8 negative type", b("d7 ff 00 00 00 00 00 00 00 01"), Ext{-1, []byte{0, 0, 0, 0, 0, 0, 0, 1}}},
		{"fixext16", b("d8 04", sixteen), Ext{4, b(sixteen)}},
		{"ext8 empty", b("c7 00 05"), Ext{5, []byte{}}},
		{"ext8", b("c7 03 05 01 02 03"), Ext{5, []byte{1, 2, 3}}},
		{"ext16", b("c8 00 02 06 01 02"), Ext{6, []byte{1, 2}}},
		{"ext32", b("c9 00 00 00 01 07 09"), Ext{7, []byte{9}}},
		{"nesting 100 deep", b(strings.Repeat("91", 99), "c0"), nest(99)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// A trailing byte must be left unread: values end where
			// their encoding says, as frames on a stream must.
			got, n, err := decodeOne(append(tt.in, 0xc1))
			if err != nil {
				t.Fatalf("decode % x: %v", tt.in, err)
			}
			if n != len(tt.in) {
				t.Errorf("consumed %d bytes, want %d", n, len(tt.in))
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got %#v (%T), want %#v (%T)", got, got, tt.want, tt.want)
			}
		})
	}
}

func nest(n int) any {
	var v any
	for range n {
		v = []any{v}
	}
	return v
}

func TestDecodeValueErrors(t *testing.T) {
	tests := []struct {
		name      string
		in        []byte
		truncated bool   // want errTruncated
		want      string // else: in the message
	}{
		{"empty", nil, true, ""},
		{"never used 0xc1", b("c1"), false, "invalid format byte 0xc1"},
		{"uint8 cut", b("cc"), true, ""},
		{"uint16 cut", b("cd 01"), true, ""},
		{"uint32 cut", b("ce 01 02 03"), true, ""},
		{"uint64 cut", b("cf 01 02 03 04 05 06 07"), true, ""},
		{"int8 cut", b("d0"), true, ""},
		{"int64 cut", b("d3 00"), true, ""},
		{"float32 cut", b("ca 00 00"), true, ""},
		{"float64 cut", b("cb 00"), true, ""},
		{"fixstr cut", b("a3", "'ab"), true, ""},
		{"str8 no length", b("d9"), true, ""},
		{"str8 cut", b("d9 05", "'abc"), true, ""},
		{"str16 cut length", b("da 00"), true, ""},
		{"str32 cut", b("db 00 00 00 05", "'ab"), true, ""},
		{"bin8 cut", b("c4 05 01"), true, ""},
		{"bin16 no length", b("c5 00"), true, ""},
		{"bin32 cut", b("c6 00 00 00 09"), true, ""},
		{"fixarray cut", b("93 01 02"), true, ""},
		{"array16 cut", b("dc 00 03 01"), true, ""},
		{"array32 cut", b("dd 00 00 00 02 01"), true, ""},
		{"fixmap cut", b("82 a1", "'a", "01"), true, ""},
		{"map value missing", b("81 a1", "'a"), true, ""},
		{"map16 cut", b("de 00"), true, ""},
		{"fixext1 cut", b("d4 01"), true, ""},
		{"fixext16 cut", b("d8 01 00 01"), true, ""},
		{"ext8 no type", b("c7 02"), true, ""},
		{"ext8 cut", b("c7 02 01 00"), true, ""},
		{"ext16 cut", b("c8 00 05 01"), true, ""},
		{"int key", b("81 01 01"), false, "want a str"},
		{"bin key", b("81 c4 01", "'a", "01"), false, "want a str"},
		{"array key", b("81 91 01 01"), false, "want a str"},
		{"nil key", b("81 c0 01"), false, "want a str"},
		{"duplicate key", b("82 a1", "'a", "01 a1", "'a", "02"), false, `duplicate map key "a"`},
		{"array32 count past the frame limit", b("dd ff ff ff ff"), false, "frame size limit"},
		{"map32 count past the frame limit", b("df 7f ff ff ff"), false, "frame size limit"},
		{"str32 length past the frame limit", b("db ff ff ff ff"), false, "frame size limit"},
		{"bin32 length past the frame limit", b("c6 04 00 00 00"), false, "frame size limit"},
		{"ext32 length past the frame limit", b("c9 ff ff ff ff 01"), false, "frame size limit"},
		{"nesting 101 deep", b(strings.Repeat("91", 101), "c0"), false, "nesting deeper than 100"},
		{"map nesting 101 deep", b(strings.Repeat("81 a1 6b", 101), "c0"), false, "nesting deeper"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v, _, err := decodeOne(tt.in)
			if err == nil {
				t.Fatalf("decode % x = %#v, want an error", tt.in, v)
			}
			if tt.truncated != errors.Is(err, errTruncated) {
				t.Errorf("error %q: truncated is %v, want %v", err, !tt.truncated, tt.truncated)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q does not contain %q", err, tt.want)
			}
		})
	}
}

// TestDecodeAllocBounded: a length or count field promises much more than
// the input holds; decoding must fail having allocated about what arrived,
// not what was promised.
func TestDecodeAllocBounded(t *testing.T) {
	tests := []struct {
		name string
		in   []byte
	}{
		{"str32 of 64 MiB - 16", b("db 03 ff ff f0", "'abc")},
		{"bin32 of 64 MiB - 16", b("c6 03 ff ff f0 01 02")},
		{"ext32 of 64 MiB - 16", b("c9 03 ff ff f0 01 02")},
		{"array32 of 64M - 16", b("dd 03 ff ff f0 01 02")},
		{"map32 of 32M - 16", b("df 01 ff ff f0 a1", "'a", "01")},
		{"map32 of 32M - 16 in an array", b("91 df 01 ff ff f0 a1", "'a", "01")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			_, _, err := decodeOne(tt.in)
			runtime.ReadMemStats(&after)
			if !errors.Is(err, errTruncated) {
				t.Fatalf("got error %v, want a truncation", err)
			}
			if n := after.TotalAlloc - before.TotalAlloc; n > 1<<20 {
				t.Errorf("allocated %d bytes for %d bytes of input", n, len(tt.in))
			}
		})
	}
}

// Hand-written frames. Times: 0x5f5e1000 is 1600000000 (2020-09-13T12:26:40Z);
// 0x075bcd15 nanoseconds is 123456789.
var (
	// ["test", 1600000000, {"msg": "hi"}]
	frameMessage = b("93 a4", "'test", "ce 5f 5e 10 00", "81 a3", "'msg", "a2", "'hi")
	// ["test", EventTime(fixext8), {"msg": "hi"}, {"chunk": "abcd"}]
	frameMessageEventTime = b("94 a4", "'test", "d7 00 5f 5e 10 00 07 5b cd 15", "81 a3", "'msg", "a2", "'hi",
		"81 a5", "'chunk", "a4", "'abcd")
	// ["test", EventTime(ext8), {"msg": "hi"}, nil]
	frameMessageExt8 = b("94 a4", "'test", "c7 08 00 5f 5e 10 00 07 5b cd 15", "81 a3", "'msg", "a2", "'hi", "c0")
	// ["fwd", [[1600000000, {"a": 1}], [EventTime 1600000001.000000001, {"b": true}]], {"size": 2, "chunk": "c1"}]
	frameForward = b("93 a3", "'fwd", "92",
		"92 ce 5f 5e 10 00 81 a1", "'a", "01",
		"92 d7 00 5f 5e 10 01 00 00 00 01 81 a1", "'b", "c3",
		"82 a4", "'size", "02 a5", "'chunk", "a2", "'c1")
	// [[1600000000, {"a": 1}] [1600000001, {"a": 2}]], packed: 20 bytes
	packedEntries = b("92 ce 5f 5e 10 00 81 a1", "'a", "01", "92 ce 5f 5e 10 01 81 a1", "'a", "02")
	// ["pkd", bin(packedEntries), {"size": 2}]
	framePackedBin = cat(b("93 a3", "'pkd", "c4 14"), packedEntries, b("81 a4", "'size", "02"))
	// ["pkd", str(packedEntries)]
	framePackedStr = cat(b("92 a3", "'pkd", "b4"), packedEntries)
	// ["pkd", bin(packedEntries), {"compressed": "text", "chunk": "t"}]
	framePackedText = cat(b("93 a3", "'pkd", "c4 14"), packedEntries,
		b("82 aa", "'compressed", "a4", "'text", "a5", "'chunk", "a1", "'t"))
)

var (
	recordHi    = map[string]any{"msg": "hi"}
	t1600       = time.Unix(1600000000, 0).UTC()
	t1600nano   = time.Unix(1600000000, 123456789).UTC()
	packedWant  = []event{{t1600, map[string]any{"a": int64(1)}}, {t1600.Add(time.Second), map[string]any{"a": int64(2)}}}
	forwardWant = []event{{t1600, map[string]any{"a": int64(1)}}, {time.Unix(1600000001, 1).UTC(), map[string]any{"b": true}}}
)

func gz(p ...[]byte) []byte {
	var buf bytes.Buffer
	for _, part := range p { // one gzip member per part, as Fluentd appends them
		w := gzip.NewWriter(&buf)
		w.Write(part)
		w.Close()
	}
	return buf.Bytes()
}

// frameCompressed is ["cmp", bin(gzip(payload)), {"compressed": "gzip", "chunk": "z"}].
func frameCompressed(gzipped []byte) []byte {
	if len(gzipped) > 255 {
		panic("fixture too long")
	}
	return cat(b("93 a3", "'cmp", "c4"), []byte{byte(len(gzipped))}, gzipped,
		b("82 aa", "'compressed", "a4", "'gzip", "a5", "'chunk", "a1", "'z"))
}

func TestReadFrame(t *testing.T) {
	half := len(packedEntries) / 2
	tests := []struct {
		name      string
		in        []byte
		tag       string
		entries   []event
		chunk     string
		hasChunk  bool
		wantError string // when not empty, the frame is refused with this in the message
	}{
		{name: "message, integer time", in: frameMessage, tag: "test", entries: []event{{t1600, recordHi}}},
		{name: "message, EventTime fixext8, chunk", in: frameMessageEventTime, tag: "test",
			entries: []event{{t1600nano, recordHi}}, chunk: "abcd", hasChunk: true},
		{name: "message, EventTime ext8, nil option", in: frameMessageExt8, tag: "test", entries: []event{{t1600nano, recordHi}}},
		{name: "message, empty chunk", in: b("94 a1", "'x", "01 80 81 a5", "'chunk", "a0"), tag: "x",
			entries: []event{{time.Unix(1, 0).UTC(), map[string]any{}}}, hasChunk: true},
		{name: "message, negative time, unknown option key", in: b("94 a1", "'x", "ff 80 81 a3", "'foo", "01"), tag: "x",
			entries: []event{{time.Unix(-1, 0).UTC(), map[string]any{}}}},
		{name: "message, size 1", in: b("94 a1", "'x", "01 80 81 a4", "'size", "01"), tag: "x",
			entries: []event{{time.Unix(1, 0).UTC(), map[string]any{}}}},
		{name: "forward", in: frameForward, tag: "fwd", entries: forwardWant, chunk: "c1", hasChunk: true},
		{name: "forward, no entries", in: b("92 a3", "'fwd", "90"), tag: "fwd", entries: []event{}},
		{name: "packed forward, bin", in: framePackedBin, tag: "pkd", entries: packedWant},
		{name: "packed forward, str", in: framePackedStr, tag: "pkd", entries: packedWant},
		{name: "packed forward, compressed text", in: framePackedText, tag: "pkd", entries: packedWant, chunk: "t", hasChunk: true},
		{name: "compressed packed forward", in: frameCompressed(gz(packedEntries)), tag: "cmp",
			entries: packedWant, chunk: "z", hasChunk: true},
		{name: "compressed packed forward, two gzip members", in: frameCompressed(gz(packedEntries[:half], packedEntries[half:])),
			tag: "cmp", entries: packedWant, chunk: "z", hasChunk: true},

		{name: "not an array", in: b("81 a1", "'a", "01"), wantError: "format byte 0x81, want an array"},
		{name: "HTTP", in: []byte("POST / HTTP/1.1\r\n"), wantError: "format byte 0x50, want an array"},
		{name: "array of 1", in: b("91 a1", "'x"), wantError: "array of 1 elements"},
		{name: "array of 5", in: b("95 a1", "'x", "01 80 80 80"), wantError: "array of 5 elements"},
		{name: "tag an integer", in: b("93 01 01 80"), wantError: "tag is an integer"},
		{name: "tag a bin", in: b("93 c4 01", "'x", "01 80"), wantError: "tag is a bin"},
		{name: "message without record", in: b("92 a1", "'x", "01"), wantError: "message mode needs"},
		{name: "time a float", in: b("93 a1", "'x", "cb 3f f8 00 00 00 00 00 00 80"), wantError: "second element is a float"},
		{name: "time a nil", in: b("93 a1", "'x", "c0 80"), wantError: "second element is nil"},
		{name: "time above MaxInt64", in: b("93 a1", "'x", "cf ff ff ff ff ff ff ff ff 80"), wantError: "out of range"},
		{name: "EventTime of ext type 1", in: b("93 a1", "'x", "d7 01 5f 5e 10 00 00 00 00 00 80"), wantError: "want EventTime"},
		{name: "EventTime of 4 bytes", in: b("93 a1", "'x", "d6 00 5f 5e 10 00 80"), wantError: "want EventTime"},
		{name: "EventTime nanoseconds 1e9", in: b("93 a1", "'x", "d7 00 5f 5e 10 00 3b 9a ca 00 80"), wantError: "1000000000 nanoseconds"},
		{name: "record an array", in: b("93 a1", "'x", "01 91 01"), wantError: "record is an array"},
		{name: "record nil", in: b("93 a1", "'x", "01 c0"), wantError: "record is nil"},
		{name: "record with an integer key", in: b("93 a1", "'x", "01 81 01 01"), wantError: "want a str"},
		{name: "option an array", in: b("94 a1", "'x", "01 80 91 01"), wantError: "option is an array"},
		{name: "chunk an integer", in: b("94 a1", "'x", "01 80 81 a5", "'chunk", "01"), wantError: "chunk is an integer"},
		{name: "size mismatch, forward", in: b("93 a1", "'x", "91 92 01 80 81 a4", "'size", "02"),
			wantError: "option size is 2 but the frame has 1 entries"},
		{name: "size mismatch, message", in: b("94 a1", "'x", "01 80 81 a4", "'size", "00"), wantError: "option size is 0"},
		{name: "size mismatch, packed", in: cat(b("93 a3", "'pkd", "c4 14"), packedEntries, b("81 a4", "'size", "03")),
			wantError: "option size is 3 but the frame has 2 entries"},
		{name: "size mismatch, compressed", in: cat(b("93 a3", "'pkd", "c4 14"), packedEntries, b("81 a4", "'size", "ff")),
			wantError: "option size is -1"},
		{name: "size above MaxInt64", in: b("94 a1", "'x", "01 80 81 a4", "'size", "cf ff ff ff ff ff ff ff ff"),
			wantError: "option size is 18446744073709551615"},
		{name: "size a str", in: b("94 a1", "'x", "01 80 81 a4", "'size", "a1", "'1"), wantError: "size is a str"},
		{name: "compressed zstd", in: cat(b("93 a3", "'pkd", "c4 14"), packedEntries, b("81 aa", "'compressed", "a4", "'zstd")),
			wantError: `want "gzip" or "text"`},
		{name: "compressed gzip on forward mode", in: b("93 a1", "'x", "90 81 aa", "'compressed", "a4", "'gzip"),
			wantError: "without packed entries"},
		{name: "compressed gzip, not gzip", in: frameCompressed(packedEntries), wantError: "gzip"},
		{name: "compressed gzip, cut short", in: frameCompressed(gz(packedEntries)[:20]), wantError: "gzip"},
		{name: "packed entry cut short", in: b("92 a1", "'x", "c4 03 92 01 81"), wantError: "packed entry 0"},
		{name: "packed entry not a pair", in: b("92 a1", "'x", "c4 01 01"), wantError: "packed entry 0 is not a [time, record]"},
		{name: "packed entry array of 3", in: b("92 a1", "'x", "c4 04 93 01 80 01"), wantError: "is not a [time, record]"},
		{name: "packed entry length past its payload", in: b("92 a1", "'x", "c4 04 92 01 a9 41"), wantError: "bytes left"},
		{name: "packed with 4 elements", in: b("94 a1", "'x", "c4 00 80 80"), wantError: "at most 3"},
		{name: "forward entry not a pair", in: b("92 a1", "'x", "91 91 01"), wantError: "entry 0 is not a [time, record]"},
		{name: "forward entry with a bad time", in: b("92 a1", "'x", "91 92 c2 80"), wantError: "time is a bool"},
		{name: "forward with 4 elements", in: b("94 a1", "'x", "90 80 80"), wantError: "at most 3"},
		{name: "cut short", in: b("93 a4", "'te"), wantError: "truncated"},
		{name: "array32 frame past the limit", in: b("dd 7f ff ff ff"), wantError: "frame size limit"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, err := readFrame(bufio.NewReader(bytes.NewReader(tt.in)))
			if tt.wantError != "" {
				if err == nil {
					t.Fatalf("frame % x accepted, want an error containing %q", tt.in, tt.wantError)
				}
				if !strings.Contains(err.Error(), tt.wantError) {
					t.Fatalf("error %q does not contain %q", err, tt.wantError)
				}
				return
			}
			if err != nil {
				t.Fatalf("frame % x: %v", tt.in, err)
			}
			if f.tag != tt.tag || f.chunk != tt.chunk || f.hasChunk != tt.hasChunk || f.size != len(tt.in) {
				t.Errorf("tag %q chunk %q hasChunk %v size %d, want %q %q %v %d",
					f.tag, f.chunk, f.hasChunk, f.size, tt.tag, tt.chunk, tt.hasChunk, len(tt.in))
			}
			if !reflect.DeepEqual(f.entries, tt.entries) {
				t.Errorf("entries %v, want %v", f.entries, tt.entries)
			}
		})
	}
}

// TestReadFrameStream: frames back to back on a stream, read through a
// buffer smaller than they are, come out one by one, then io.EOF; a frame
// cut short by the end of the stream is an error, not io.EOF.
func TestReadFrameStream(t *testing.T) {
	stream := cat(frameMessage, frameForward, framePackedBin, frameMessageEventTime)
	br := bufio.NewReaderSize(bytes.NewReader(stream), 16)
	wantTags := []string{"test", "fwd", "pkd", "test"}
	for i, tag := range wantTags {
		f, err := readFrame(br)
		if err != nil {
			t.Fatalf("frame %d: %v", i, err)
		}
		if f.tag != tag {
			t.Errorf("frame %d tag %q, want %q", i, f.tag, tag)
		}
	}
	if _, err := readFrame(br); err != io.EOF {
		t.Errorf("after the last frame: %v, want io.EOF", err)
	}

	cut := cat(frameMessage, frameForward[:10])
	br = bufio.NewReaderSize(bytes.NewReader(cut), 16)
	if _, err := readFrame(br); err != nil {
		t.Fatal(err)
	}
	if _, err := readFrame(br); err == nil || err == io.EOF || !errors.Is(err, errTruncated) {
		t.Errorf("frame cut short: %v, want a truncation error", err)
	}
}

func TestAppendAck(t *testing.T) {
	tests := []struct {
		chunk string
		want  []byte
	}{
		{"", b("81 a3", "'ack", "a0")},
		{"abcd", b("81 a3", "'ack", "a4", "'abcd")},
		// fluent-logger-golang's chunks: 16 bytes in base64.
		{"AAECAwQFBgcICQoLDA0ODw==", b("81 a3", "'ack", "b8", "'AAECAwQFBgcICQoLDA0ODw==")},
		{strings.Repeat("c", 31), b("81 a3", "'ack", "bf", "'"+strings.Repeat("c", 31))},
		{strings.Repeat("c", 32), b("81 a3", "'ack", "d9 20", "'"+strings.Repeat("c", 32))},
		{strings.Repeat("c", 255), b("81 a3", "'ack", "d9 ff", "'"+strings.Repeat("c", 255))},
		{strings.Repeat("c", 256), b("81 a3", "'ack", "da 01 00", "'"+strings.Repeat("c", 256))},
		{strings.Repeat("c", 65536), b("81 a3", "'ack", "db 00 01 00 00", "'"+strings.Repeat("c", 65536))},
	}
	for _, tt := range tests {
		if got := appendAck(nil, tt.chunk); !bytes.Equal(got, tt.want) {
			t.Errorf("ack for a chunk of %d bytes: % x, want % x", len(tt.chunk), got[:min(len(got), 12)], tt.want[:min(len(tt.want), 12)])
		}
		// And the decoder reads it back as the map it is.
		v, _, err := decodeOne(appendAck(nil, tt.chunk))
		if err != nil || !reflect.DeepEqual(v, map[string]any{"ack": tt.chunk}) {
			t.Errorf("decoding the ack for a chunk of %d bytes: %v, %v", len(tt.chunk), v, err)
		}
	}
}

// --- over TCP ---

func start(t *testing.T, cfg Config) *Receiver {
	t.Helper()
	r, err := Start("127.0.0.1:0", cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

func dial(t *testing.T, r *Receiver) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", r.Addr())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func send(t *testing.T, c net.Conn, frame []byte) {
	t.Helper()
	if _, err := c.Write(frame); err != nil {
		t.Fatal(err)
	}
}

// readFor reads what arrives on c within d: the bytes, and the error that
// ended the read (a timeout when the peer stayed silent and connected).
func readFor(c net.Conn, d time.Duration, n int) ([]byte, error) {
	c.SetReadDeadline(time.Now().Add(d))
	buf := make([]byte, n)
	m, err := io.ReadFull(c, buf)
	return buf[:m], err
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

func ack(chunk string) []byte { return appendAck(nil, chunk) }

// TestProtocolModesOverTCP sends one hand-encoded frame of each forward
// protocol mode, each asking for an ack, and checks the ack's exact bytes
// and the entries stored.
func TestProtocolModesOverTCP(t *testing.T) {
	tests := []struct {
		name    string
		frame   []byte
		ack     []byte
		tag     string
		entries []event
	}{
		{"Message", frameMessageEventTime, b("81 a3", "'ack", "a4", "'abcd"), "test", []event{{t1600nano, recordHi}}},
		{"Forward", frameForward, b("81 a3", "'ack", "a2", "'c1"), "fwd", forwardWant},
		{"PackedForward", framePackedText, b("81 a3", "'ack", "a1", "'t"), "pkd", packedWant},
		{"CompressedPackedForward", frameCompressed(gz(packedEntries)), b("81 a3", "'ack", "a1", "'z"), "cmp", packedWant},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := start(t, Config{})
			c := dial(t, r)
			send(t, c, tt.frame)
			got, err := readFor(c, 5*time.Second, len(tt.ack))
			if err != nil || !bytes.Equal(got, tt.ack) {
				t.Fatalf("reply % x (%v), want % x", got, err, tt.ack)
			}
			if extra, err := readFor(c, 50*time.Millisecond, 1); !isTimeout(err) {
				t.Errorf("more after the ack: % x, %v", extra, err)
			}
			var want []Entry
			for _, ev := range tt.entries {
				want = append(want, Entry{Tag: tt.tag, Time: ev.time, Record: ev.record, Conn: 1})
			}
			if got := r.Entries(); !reflect.DeepEqual(got, want) {
				t.Errorf("entries %v, want %v", got, want)
			}
			s := r.Stats()
			if s.Messages != 1 || s.Acks != 1 || s.Entries != int64(len(want)) || s.Errors != 0 ||
				s.Bytes != int64(len(tt.frame)) || s.Connections != 1 || s.Open != 1 {
				t.Errorf("stats %+v", s)
			}
		})
	}
}

// TestReceiverModes: what each Mode does with a message that asks for an
// ack, and that every mode stores, without replying, one that does not.
func TestReceiverModes(t *testing.T) {
	tests := []struct {
		name   string
		mode   Mode
		frame  []byte
		reply  []byte // exact reply, nil for none
		closes bool   // the receiver closes the connection
		stored int
		check  func(Stats) bool
	}{
		{"Ack, chunk", Ack, frameMessageEventTime, ack("abcd"), false, 1,
			func(s Stats) bool { return s.Acks == 1 && s.Withheld == 0 && s.Dropped == 0 }},
		{"WithholdAck, chunk", WithholdAck, frameMessageEventTime, nil, false, 1,
			func(s Stats) bool { return s.Acks == 0 && s.Withheld == 1 && s.Dropped == 0 }},
		{"DropConn, chunk", DropConn, frameMessageEventTime, nil, true, 0,
			func(s Stats) bool { return s.Acks == 0 && s.Dropped == 1 && s.Messages == 1 && s.Entries == 0 }},
		{"Ack, no chunk", Ack, frameMessage, nil, false, 1,
			func(s Stats) bool { return s.Acks == 0 && s.Withheld == 0 }},
		{"WithholdAck, no chunk", WithholdAck, frameMessage, nil, false, 1,
			func(s Stats) bool { return s.Withheld == 0 }},
		{"DropConn, no chunk", DropConn, framePackedBin, nil, false, 2,
			func(s Stats) bool { return s.Dropped == 0 && s.Entries == 2 }},
	}

	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := start(t, Config{})
			r.SetMode(tt.mode)
			c := dial(t, r)
			send(t, c, tt.frame)
			switch {
			case tt.reply != nil:
				got, err := readFor(c, 5*time.Second, len(tt.reply))
				if err != nil || !bytes.Equal(got, tt.reply) {
					t.Fatalf("reply % x (%v), want % x", got, err, tt.reply)
				}
			case tt.closes:
				got, err := readFor(c, 5*time.Second, 1)
				if err == nil || isTimeout(err) {
					t.Fatalf("read % x, %v: want the connection closed", got, err)
				}
			default:
				// Nothing, and the connection stays open.
				got, err := readFor(c, 300*time.Millisecond, 1)
				if !isTimeout(err) {
					t.Fatalf("read % x, %v: want silence", got, err)
				}
			}
			if tt.stored > 0 && !r.WaitFor(tt.stored, 5*time.Second) {
				t.Fatalf("stored %d entries, want %d", r.Len(), tt.stored)
			}
			if n := r.Len(); n != tt.stored {
				t.Errorf("stored %d entries, want %d", n, tt.stored)
			}
			if s := r.Stats(); s.Errors != 0 || !tt.check(s) {
				t.Errorf("stats %+v", s)
			}
			if !tt.closes {
				// The connection still works: switch to Ack and ask again.
				r.SetMode(Ack)
				send(t, c, frameMessageEventTime)
				if got, err := readFor(c, 5*time.Second, len(ack("abcd"))); err != nil || !bytes.Equal(got, ack("abcd")) {
					t.Errorf("after: reply % x (%v)", got, err)
				}
			}
		})
	}
}

// TestRefusedFrameClosesConn: a frame the receiver refuses (here a size
// mismatch, and bytes that are not msgpack) gets no ack, is not stored,
// counts as an error and closes its connection; other connections go on.
func TestRefusedFrameClosesConn(t *testing.T) {
	tests := []struct {
		name  string
		frame []byte
		want  string
	}{
		{"size mismatch", b("94 a1", "'x", "01 80 82 a4", "'size", "02 a5", "'chunk", "a1", "'k"), "option size is 2"},
		{"not msgpack", []byte("GET / HTTP/1.1\r\n\r\n"), "frame"},
		{"invalid format byte", b("93 a1", "'x", "01 c1"), "0xc1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := start(t, Config{})
			c := dial(t, r)
			send(t, c, cat(frameMessage, tt.frame, frameMessageEventTime))
			got, err := readFor(c, 5*time.Second, 1)
			if err == nil || isTimeout(err) {
				t.Fatalf("read % x, %v: want the connection closed", got, err)
			}
			if n := r.Len(); n != 1 { // the good frame before the bad one
				t.Errorf("stored %d entries, want 1", n)
			}
			s := r.Stats()
			if s.Errors != 1 || s.Acks != 0 || !strings.Contains(s.LastError, tt.want) {
				t.Errorf("stats %+v, want 1 error about %q", s, tt.want)
			}
			c2 := dial(t, r)
			send(t, c2, frameMessageEventTime)
			if got, err := readFor(c2, 5*time.Second, len(ack("abcd"))); err != nil || !bytes.Equal(got, ack("abcd")) {
				t.Errorf("second connection: reply % x (%v)", got, err)
			}
		})
	}
}

// TestBackToBack: frames written in one go are answered in order, and
// entries carry the number of the connection they came on.
func TestBackToBack(t *testing.T) {
	r := start(t, Config{})
	c1 := dial(t, r)
	send(t, c1, cat(frameMessageEventTime, frameForward, framePackedText))
	want := cat(ack("abcd"), ack("c1"), ack("t"))
	if got, err := readFor(c1, 5*time.Second, len(want)); err != nil || !bytes.Equal(got, want) {
		t.Fatalf("replies % x (%v), want % x", got, err, want)
	}
	c2 := dial(t, r)
	send(t, c2, frameMessage)
	if !r.WaitFor(6, 5*time.Second) {
		t.Fatalf("stored %d entries, want 6", r.Len())
	}
	var tags []string
	var conns []int
	for _, e := range r.Entries() {
		tags = append(tags, e.Tag)
		conns = append(conns, e.Conn)
	}
	if !reflect.DeepEqual(tags, []string{"test", "fwd", "fwd", "pkd", "pkd", "test"}) ||
		!reflect.DeepEqual(conns, []int{1, 1, 1, 1, 1, 2}) {
		t.Errorf("tags %v conns %v", tags, conns)
	}
}

func TestTLS(t *testing.T) {
	serverCfg, roots, err := SelfSignedTLS()
	if err != nil {
		t.Fatal(err)
	}
	r := start(t, Config{TLS: serverCfg})
	for _, name := range []string{"localhost", "127.0.0.1"} {
		t.Run(name, func(t *testing.T) {
			c, err := tls.Dial("tcp", r.Addr(), &tls.Config{RootCAs: roots, ServerName: name})
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			send(t, c, frameCompressed(gz(packedEntries)))
			if got, err := readFor(c, 5*time.Second, len(ack("z"))); err != nil || !bytes.Equal(got, ack("z")) {
				t.Fatalf("reply % x (%v)", got, err)
			}
		})
	}
	if r.Len() != 4 {
		t.Errorf("stored %d entries, want 4", r.Len())
	}

	// A client that does not trust the certificate fails, and so does a
	// plain-TCP one.
	if c, err := tls.Dial("tcp", r.Addr(), &tls.Config{ServerName: "localhost"}); err == nil {
		c.Close()
		t.Error("handshake succeeded without the root")
	}
	c := dial(t, r)
	send(t, c, frameMessageEventTime)
	if got, err := readFor(c, 5*time.Second, len(ack("abcd"))); bytes.Equal(got, ack("abcd")) {
		t.Errorf("plain TCP client got an ack (%v)", err)
	}
	if r.Len() != 4 {
		t.Errorf("stored %d entries, want 4", r.Len())
	}
}

// TestCloseAndRestart: Close ends connections and frees the port at once,
// so a new receiver can start on the same address.
func TestCloseAndRestart(t *testing.T) {
	r1, err := Start("127.0.0.1:0", Config{})
	if err != nil {
		t.Fatal(err)
	}
	addr := r1.Addr()
	c := dial(t, r1)
	send(t, c, frameMessageEventTime)
	if got, err := readFor(c, 5*time.Second, len(ack("abcd"))); err != nil || !bytes.Equal(got, ack("abcd")) {
		t.Fatalf("reply % x (%v)", got, err)
	}
	dial(t, r1) // connected, never sends
	for r1.Stats().Open != 2 {
		time.Sleep(time.Millisecond)
	}
	if err := r1.Close(); err != nil {
		t.Fatal(err)
	}
	if err := r1.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if _, err := readFor(c, 5*time.Second, 1); err == nil || isTimeout(err) {
		t.Errorf("after Close the connection reads %v, want it closed", err)
	}
	if s := r1.Stats(); s.Open != 0 || s.Errors != 0 || s.Connections != 2 {
		t.Errorf("stats after Close %+v", s)
	}
	if r1.Len() != 1 || r1.WaitFor(2, time.Hour) {
		t.Errorf("after Close: Len %d, WaitFor must not wait", r1.Len())
	}

	r2, err := Start(addr, Config{})
	if err != nil {
		t.Fatalf("restart on %s: %v", addr, err)
	}
	defer r2.Close()
	c2, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	send(t, c2, frameMessageEventTime)
	if got, err := readFor(c2, 5*time.Second, len(ack("abcd"))); err != nil || !bytes.Equal(got, ack("abcd")) {
		t.Fatalf("restarted reply % x (%v)", got, err)
	}
	if r2.Len() != 1 || r2.Entries()[0].Conn != 1 {
		t.Errorf("restarted receiver entries %v", r2.Entries())
	}
}

func TestWaitFor(t *testing.T) {
	r := start(t, Config{})
	t0 := time.Now()
	if r.WaitFor(1, 100*time.Millisecond) {
		t.Fatal("WaitFor(1) true with nothing sent")
	}
	if el := time.Since(t0); el < 100*time.Millisecond {
		t.Errorf("WaitFor returned after %v, before its timeout", el)
	}
	if !r.WaitFor(0, 0) {
		t.Error("WaitFor(0) false")
	}
	c := dial(t, r)
	go func() {
		time.Sleep(50 * time.Millisecond)
		c.Write(frameMessage)
		time.Sleep(50 * time.Millisecond)
		c.Write(framePackedStr)
	}()
	if !r.WaitFor(3, 5*time.Second) {
		t.Fatalf("WaitFor(3) false with %d stored", r.Len())
	}
}

func TestOnEntryAndDiscard(t *testing.T) {
	got := make(chan Entry, 10)
	r := start(t, Config{Discard: true, OnEntry: func(e Entry) { got <- e }})
	c := dial(t, r)
	send(t, c, cat(frameMessage, framePackedBin))
	if !r.WaitFor(3, 5*time.Second) {
		t.Fatalf("Len %d, want 3", r.Len())
	}
	if e := r.Entries(); e != nil {
		t.Errorf("Entries with Discard: %v", e)
	}
	first := <-got
	if first.Tag != "test" || !first.Time.Equal(t1600) || !reflect.DeepEqual(first.Record, recordHi) || first.Conn != 1 {
		t.Errorf("OnEntry got %+v", first)
	}
	if len(got) != 2 {
		t.Errorf("OnEntry called %d times, want 3", 1+len(got))
	}
}

// BenchmarkReadFrame decodes a Forward frame of 100 entries of a 15-field
// record, to show the receiver is no bottleneck for a sender.
func BenchmarkReadFrame(bm *testing.B) {
	entry := cat(b("92 d7 00 5f 5e 10 00 07 5b cd 15 8f"),
		b("a2", "'id", "be", "'evt_01JDQ7Z6Q4M8X3V7K2T5N0B1C4"),
		b("aa", "'request_id", "d9 28", "'req-7f3c2a91-5d4e-4b8a-9c1f-2e6d8a0b3c57"),
		b("a6", "'method", "a4", "'POST", "a4", "'path", "b4", "'/v1/chat/completions"),
		b("a6", "'stream", "c3", "a3", "'seq", "ce 00 12 d6 87"),
		b("a5", "'model", "81 a4", "'name", "d9 20", "'meta-llama/Llama-3.1-8B-Instruct"),
		b("a5", "'input", "83 a4", "'hash", "d9 47", "'blake3:5f0c3e1a9b7d2c4e6f8a0b1c3d5e7f9a2b4c6d8e0f1a3b5c7d9e1f2a4b6c8d0e",
			"a5", "'bytes", "cd 04 0a", "a6", "'tokens", "cc d4"),
		b("a6", "'output", "82 a6", "'tokens", "cd 01 2c", "ad", "'finish_reason", "a6", "'length"),
		b("aa", "'latency_ms", "82 a4", "'ttft", "cb 40 44 d9 99 99 99 99 9a", "a5", "'total", "cb 40 9d 44 cc cc cc cc cd"),
		b("a6", "'status", "82 a4", "'code", "cc c8", "a5", "'error", "c0"),
		b("a6", "'source", "82 a2", "'ip", "aa", "'10.12.4.87", "a6", "'tenant", "ad", "'team-research"),
		b("a4", "'time", "ba", "'2026-11-23T11:37:12.77871Z"),
		b("a6", "'key_id", "ac", "'kid_3b9f2c1d"),
		b("a6", "'bodies", "92 c4 03 01 02 03 c4 00"))
	frame := cat(b("93 a3", "'fwd", "dc 00 64"), bytes.Repeat(entry, 100), b("81 a4", "'size", "64"))
	if f, err := readFrame(bufio.NewReader(bytes.NewReader(frame))); err != nil || len(f.entries) != 100 || len(f.entries[99].record) != 15 {
		bm.Fatalf("fixture: %v", err)
	}
	rd := bytes.NewReader(frame)
	br := bufio.NewReaderSize(rd, 64<<10)
	bm.SetBytes(int64(len(frame)))
	bm.ReportAllocs()
	for bm.Loop() {
		rd.Reset(frame)
		br.Reset(rd)
		if _, err := readFrame(br); err != nil {
			bm.Fatal(err)
		}
	}
	bm.ReportMetric(100*float64(bm.N)/bm.Elapsed().Seconds(), "entries/s")
}

// FuzzDecode feeds arbitrary bytes to the frame reader, as a stream of
// back-to-back frames, and to the value decoder: neither may panic, and a
// frame may not claim more bytes than were there.
func FuzzDecode(f *testing.F) {
	for _, seed := range [][]byte{
		frameMessage, frameMessageEventTime, frameMessageExt8, frameForward,
		framePackedBin, framePackedStr, framePackedText, frameCompressed(gz(packedEntries)),
		cat(frameMessage, frameForward),
		b("82 a3", "'arr", "92 01 81 a1", "'x", "c0 a3", "'map", "81 a1", "'y", "ca 3f c0 00 00"),
		b("dc 00 02 c0 c3"), b("c7 03 05 01 02 03"), b("d8 04 00 01 02 03 04 05 06 07 08 09 0a 0b 0c 0d 0e 0f"),
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		br := bufio.NewReaderSize(bytes.NewReader(data), 16)
		total := 0
		for {
			fr, err := readFrame(br)
			if err != nil {
				break
			}
			total += fr.size
			if total > len(data) {
				t.Fatalf("frames claim %d bytes of %d", total, len(data))
			}
			for _, e := range fr.entries {
				if e.record == nil {
					t.Fatal("entry without a record")
				}
			}
		}
		d := &decoder{r: bytes.NewReader(data), budget: uint64(len(data)), inMemory: true}
		d.value(0)
	})
}
