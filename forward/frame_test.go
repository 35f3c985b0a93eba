package forward

import (
	"bytes"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/fluent/fluent-logger-golang/fluent"
	"github.com/tinylib/msgp/msgp"
	"github.com/valyala/fastjson"
)

// orderedObj is a decoded JSON object or msgpack map that keeps its key
// order, so reflect.DeepEqual also checks the order.
type orderedObj struct {
	Keys []string
	Vals []any
}

// jsonNumber applies the conversion's number rule to a JSON literal: a
// literal with '.', 'e' or 'E' is a float64; otherwise int64, uint64 above
// MaxInt64, float64 when it overflows both.
func jsonNumber(s string) (any, error) {
	if strings.ContainsAny(s, ".eE") {
		return strconv.ParseFloat(s, 64)
	}
	if i, err := strconv.ParseInt(s, 10, 64); err == nil {
		return i, nil
	}
	if u, err := strconv.ParseUint(s, 10, 64); err == nil {
		return u, nil
	}
	return strconv.ParseFloat(s, 64)
}

// decodeJSONOrdered decodes js with encoding/json, keeping key order and
// typing numbers by jsonNumber.
func decodeJSONOrdered(js []byte) (any, error) {
	dec := json.NewDecoder(bytes.NewReader(js))
	dec.UseNumber()
	v, err := decodeJSONValue(dec)
	if err != nil {
		return nil, err
	}
	if _, err := dec.Token(); err == nil {
		return nil, errors.New("trailing data after JSON value")
	}
	return v, nil
}

func decodeJSONValue(dec *json.Decoder) (any, error) {
	tok, err := dec.Token()
	if err != nil {
		return nil, err
	}
	switch x := tok.(type) {
	case json.Delim:
		switch x {
		case '{':
			o := orderedObj{Keys: []string{}, Vals: []any{}}
			for dec.More() {
				kt, err := dec.Token()
				if err != nil {
					return nil, err
				}
				v, err := decodeJSONValue(dec)
				if err != nil {
					return nil, err
				}
				o.Keys = append(o.Keys, kt.(string))
				o.Vals = append(o.Vals, v)
			}
			_, err := dec.Token()
			return o, err
		case '[':
			a := []any{}
			for dec.More() {
				v, err := decodeJSONValue(dec)
				if err != nil {
					return nil, err
				}
				a = append(a, v)
			}
			_, err := dec.Token()
			return a, err
		}
		return nil, fmt.Errorf("unexpected delimiter %v", x)
	case json.Number:
		return jsonNumber(string(x))
	default: // string, bool, nil
		return x, nil
	}
}

// decodeMsgpOrdered decodes one msgpack value, keeping map key order. Only
// the types the conversion may produce are accepted: in particular floats
// must be float64 and map keys must be str.
func decodeMsgpOrdered(b []byte) (any, []byte, error) {
	switch typ := msgp.NextType(b); typ {
	case msgp.MapType:
		n, b, err := msgp.ReadMapHeaderBytes(b)
		if err != nil {
			return nil, b, err
		}
		o := orderedObj{Keys: []string{}, Vals: []any{}}
		for range n {
			var k string
			var v any
			if k, b, err = msgp.ReadStringBytes(b); err != nil {
				return nil, b, err
			}
			if v, b, err = decodeMsgpOrdered(b); err != nil {
				return nil, b, err
			}
			o.Keys = append(o.Keys, k)
			o.Vals = append(o.Vals, v)
		}
		return o, b, nil
	case msgp.ArrayType:
		n, b, err := msgp.ReadArrayHeaderBytes(b)
		if err != nil {
			return nil, b, err
		}
		a := []any{}
		for range n {
			var v any
			if v, b, err = decodeMsgpOrdered(b); err != nil {
				return nil, b, err
			}
			a = append(a, v)
		}
		return a, b, nil
	case msgp.StrType:
		return msgp.ReadStringBytes(b)
	case msgp.IntType:
		return msgp.ReadInt64Bytes(b)
	case msgp.UintType:
		u, rest, err := msgp.ReadUint64Bytes(b)
		if err == nil && u <= 1<<63-1 {
			err = fmt.Errorf("uint %d fits int64 but was encoded as uint", u)
		}
		return u, rest, err
	case msgp.Float64Type:
		return msgp.ReadFloat64Bytes(b)
	case msgp.BoolType:
		return msgp.ReadBoolBytes(b)
	case msgp.NilType:
		rest, err := msgp.ReadNilBytes(b)
		return nil, rest, err
	default:
		return nil, b, fmt.Errorf("unexpected msgpack type %v", typ)
	}
}

// toIntf turns orderedObj trees into the map[string]any form that
// msgp.ReadIntfBytes returns (last duplicate key wins, as in encoding/json).
func toIntf(v any) any {
	switch x := v.(type) {
	case orderedObj:
		m := make(map[string]any, len(x.Keys))
		for i, k := range x.Keys {
			m[k] = toIntf(x.Vals[i])
		}
		return m
	case []any:
		a := make([]any, len(x))
		for i, e := range x {
			a[i] = toIntf(e)
		}
		return a
	default:
		return v
	}
}

// checkRoundTrip checks that mp, the conversion of js, decodes to what
// encoding/json decodes from js: same keys in the same order, same values,
// same int/uint/float typing.
func checkRoundTrip(t testing.TB, js, mp []byte) {
	t.Helper()
	want, err := decodeJSONOrdered(js)
	if err != nil {
		t.Fatalf("encoding/json cannot decode %q: %v", js, err)
	}
	got, rest, err := decodeMsgpOrdered(mp)
	if err != nil {
		t.Fatalf("decoding msgpack % x: %v", mp, err)
	}
	if len(rest) != 0 {
		t.Fatalf("%d bytes left after the msgpack value", len(rest))
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("msgpack decodes to\n%#v\nwant (encoding/json)\n%#v", got, want)
	}
	// The same through msgp's generic decoder.
	intf, rest, err := msgp.ReadIntfBytes(mp)
	if err != nil || len(rest) != 0 {
		t.Fatalf("msgp.ReadIntfBytes: %v, %d bytes left", err, len(rest))
	}
	if w := toIntf(want); !reflect.DeepEqual(intf, w) {
		t.Fatalf("msgp.ReadIntfBytes gives\n%#v\nwant\n%#v", intf, w)
	}
}

// mustHex decodes hex digits, ignoring white space and "#" comments that
// run to the end of the line.
func mustHex(t testing.TB, s string) []byte {
	t.Helper()
	var digits strings.Builder
	for line := range strings.Lines(s) {
		line, _, _ = strings.Cut(line, "#")
		digits.WriteString(strings.Join(strings.Fields(line), ""))
	}
	b, err := hex.DecodeString(digits.String())
	if err != nil {
		t.Fatalf("bad hex %q: %v", s, err)
	}
	return b
}

func TestAppendMsgpackRecordConversion(t *testing.T) {
	long := strings.Repeat("x", 32)
	cases := []struct {
		name string
		json string
		want string // expected msgpack, hex (spaces ignored); "" = round trip only
	}{
		{"empty object", `{}`, `80`},
		{"whitespace", " \t{ \"a\" : 1 }\n", `81 a161 01`},
		{"key order kept", `{"z":1,"a":2,"m":3}`, `83 a17a 01 a161 02 a16d 03`},
		{"duplicate keys kept", `{"a":1,"a":2}`, `82 a161 01 a161 02`},
		{"small ints", `{"a":0,"b":127,"c":128,"d":65536}`,
			`84 a161 00 a162 7f a163 d1 0080 a164 d2 00010000`},
		{"negative ints", `{"a":-1,"b":-32,"c":-33,"d":-129,"e":-0}`,
			`85 a161 ff a162 e0 a163 d0 df a164 d1 ff7f a165 00`},
		{"int64 limits", `{"max":9223372036854775807,"min":-9223372036854775808}`,
			`82 a36d6178 d3 7fffffffffffffff a36d696e d3 8000000000000000`},
		{"big uint64", `{"u":9223372036854775808,"m":18446744073709551615}`,
			`82 a175 cf 8000000000000000 a16d cf ffffffffffffffff`},
		{"int overflow to float", `{"o":18446744073709551616,"n":-9223372036854775809}`,
			`82 a16f cb 43f0000000000000 a16e cb c3e0000000000000`},
		{"floats", `{"f":1.5,"g":-0.25,"z":0.0,"one":1.0,"lat":12.345}`,
			`85 a166 cb 3ff8000000000000 a167 cb bfd0000000000000 a17a cb 0000000000000000` +
				` a36f6e65 cb 3ff0000000000000 a36c6174 cb 4028b0a3d70a3d71`},
		{"exponent floats", `{"e":1e3,"E":2.5E-1,"p":1e+2,"tiny":1e-400}`,
			`84 a165 cb 408f400000000000 a145 cb 3fd0000000000000 a170 cb 4059000000000000` +
				` a474696e79 cb 0000000000000000`},
		{"escaped strings", `{"s":"\u00e9\n\"","esc":"a\/b\\c\t\u0000","k\u00e9y":"日本","emoji":"\ud83d\ude00","":""}`,
			`85 a173 a4 c3a90a22 a3657363 a7 612f625c630900 a46bc3a979 a6 e697a5e69cac` +
				` a5656d6f6a69 a4 f09f9880 a0 a0`},
		{"str8", `{"l":"` + long + `"}`, `81 a16c d920` + strings.Repeat("78", 32)},
		{"nested objects", `{"a":{"b":{"c":null}},"d":{}}`, `82 a161 81 a162 81 a163 c0 a164 80`},
		{"arrays", `{"a":[1,"x",[true,false],{}],"e":[]}`, `82 a161 94 01 a178 92 c3 c2 80 a165 90`},
		{"null and bools", `{"n":null,"t":true,"f":false}`, `83 a16e c0 a174 c3 a166 c2`},
		{"sixteen keys", `{"k0":0,"k1":1,"k2":2,"k3":3,"k4":4,"k5":5,"k6":6,"k7":7,"k8":8,"k9":9,"ka":10,"kb":11,"kc":12,"kd":13,"ke":14,"kf":15}`, ""},
		{"realistic event", string(benchEvent(7)), ""},
	}
	var p fastjson.Parser
	var buf []byte
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			prefix := []byte{0xaa, 0xbb}
			out, _, err := appendMsgpackRecord(append(buf[:0], prefix...), &p, []byte(tc.json))
			if err != nil {
				t.Fatalf("appendMsgpackRecord(%q): %v", tc.json, err)
			}
			buf = out
			if !bytes.HasPrefix(out, prefix) {
				t.Fatalf("dst prefix clobbered: % x", out)
			}
			mp := out[len(prefix):]
			if tc.want != "" {
				if want := mustHex(t, tc.want); !bytes.Equal(mp, want) {
					t.Errorf("got  % x\nwant % x", mp, want)
				}
			}
			checkRoundTrip(t, []byte(tc.json), mp)
		})
	}
}

func TestAppendMsgpackRecordTime(t *testing.T) {
	cet := time.FixedZone("", 3600)
	cases := []struct {
		json string
		want time.Time
	}{
		{`{"time":"2026-11-23T10:00:00.123456789Z"}`, time.Date(2026, 11, 23, 10, 0, 0, 123456789, time.UTC)},
		{`{"a":1,"time":"2026-11-23T11:00:00.5+01:00","b":2}`, time.Date(2026, 11, 23, 11, 0, 0, 5e8, cet)},
		{`{"time":"2026-11-23T10:00:00Z"}`, time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC)},
		{`{"ti\u006de":"2026-11-23T10:00:00Z"}`, time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC)},
		{`{}`, time.Time{}},
		{`{"time":1795428000}`, time.Time{}},
		{`{"time":"yesterday"}`, time.Time{}},
		{`{"time":"2026-11-23 10:00:00"}`, time.Time{}},
		{`{"time":null}`, time.Time{}},
		{`{"Time":"2026-11-23T10:00:00Z"}`, time.Time{}},
		{`{"nested":{"time":"2026-11-23T10:00:00Z"}}`, time.Time{}},
	}
	var p fastjson.Parser
	for _, tc := range cases {
		_, got, err := appendMsgpackRecord(nil, &p, []byte(tc.json))
		if err != nil {
			t.Errorf("%s: %v", tc.json, err)
			continue
		}
		if !got.Equal(tc.want) || got.IsZero() != tc.want.IsZero() {
			t.Errorf("%s: time %v, want %v", tc.json, got, tc.want)
		}
	}
}

func TestAppendMsgpackRecordErrors(t *testing.T) {
	cases := []struct {
		json, want string
	}{
		{``, "not valid JSON"},
		{`{`, "not valid JSON"},
		{`{"a":1} x`, "not valid JSON"},
		{`{"a":1,}`, "not valid JSON"},
		{`[]`, "not a JSON object but a JSON array"},
		{`[{"a":1}]`, "not a JSON object but a JSON array"},
		{`"str"`, "not a JSON object but a JSON string"},
		{`12`, "not a JSON object but a JSON number"},
		{`null`, "not a JSON object but a JSON null"},
		{`true`, "not a JSON object but a JSON true"},
		{`{"a":1.2.3}`, `field "a": invalid JSON number "1.2.3"`},
		{`{"a":NaN}`, `invalid JSON number "NaN"`},
		{`{"a":-Inf}`, `invalid JSON number "-Inf"`},
		{`{"a":01}`, `invalid JSON number "01"`},
		{`{"a":+1}`, `invalid JSON number "+1"`},
		{`{"a":1.}`, `invalid JSON number "1."`},
		{`{"a":.5}`, `invalid JSON number ".5"`},
		{`{"a":1e}`, `invalid JSON number "1e"`},
		{`{"a":-}`, "not valid JSON"},
		{`{"a":-x}`, "not valid JSON"},
		{`{"a":1-2}`, `invalid JSON number "1-2"`},
		{`{"a":1e+-2}`, `invalid JSON number "1e+-2"`},
		{`{"a":{"b":[1,2,1e999]}}`, `field "a": field "b": element 2: number "1e999": out of range`},
		{`{"a":-1e400}`, `out of range`},
	}
	var p fastjson.Parser
	for _, tc := range cases {
		dst := make([]byte, 3, 64)
		copy(dst, "pfx")
		out, ts, err := appendMsgpackRecord(dst, &p, []byte(tc.json))
		if err == nil {
			t.Errorf("%q: no error, output % x", tc.json, out)
			continue
		}
		if !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: error %q does not contain %q", tc.json, err, tc.want)
		}
		if string(out) != "pfx" {
			t.Errorf("%q: on error dst is % x, want it unchanged", tc.json, out)
		}
		if !ts.IsZero() {
			t.Errorf("%q: on error time is %v", tc.json, ts)
		}
	}
}

// decodedEntry is one decoded [EventTime, record] entry.
type decodedEntry struct {
	sec, nsec uint32
	record    any
}

// decodeFrame decodes a Forward-mode message strictly and checks that it is
// exactly the frame's bytes.
func decodeFrame(t testing.TB, b []byte) (tag string, entries []decodedEntry, chunk string, size int64) {
	t.Helper()
	fail := func(what string, err error) {
		t.Helper()
		t.Fatalf("decoding frame: %s: %v", what, err)
	}
	n, b, err := msgp.ReadArrayHeaderBytes(b)
	if err != nil || n != 3 {
		fail(fmt.Sprintf("message array (size %d)", n), err)
	}
	if tag, b, err = msgp.ReadStringBytes(b); err != nil {
		fail("tag", err)
	}
	ne, b, err := msgp.ReadArrayHeaderBytes(b)
	if err != nil {
		fail("entries array", err)
	}
	for i := range ne {
		var n uint32
		if n, b, err = msgp.ReadArrayHeaderBytes(b); err != nil || n != 2 {
			fail(fmt.Sprintf("entry %d array (size %d)", i, n), err)
		}
		if len(b) < 10 || b[0] != 0xd7 || b[1] != 0x00 {
			t.Fatalf("entry %d: time is not fixext8 type 0: % x", i, b[:min(len(b), 10)])
		}
		e := decodedEntry{
			sec:  binary.BigEndian.Uint32(b[2:6]),
			nsec: binary.BigEndian.Uint32(b[6:10]),
		}
		var et fluent.EventTime
		if b, err = msgp.ReadExtensionBytes(b, &et); err != nil {
			fail(fmt.Sprintf("entry %d EventTime", i), err)
		}
		if tt := time.Time(et); uint32(tt.Unix()) != e.sec || uint32(tt.Nanosecond()) != e.nsec {
			t.Fatalf("entry %d: fluent.EventTime decodes to %v, raw %d.%09d", i, tt, e.sec, e.nsec)
		}
		if e.record, b, err = decodeMsgpOrdered(b); err != nil {
			fail(fmt.Sprintf("entry %d record", i), err)
		}
		entries = append(entries, e)
	}
	if n, b, err = msgp.ReadMapHeaderBytes(b); err != nil || n != 2 {
		fail(fmt.Sprintf("option map (size %d)", n), err)
	}
	for range 2 {
		var k string
		if k, b, err = msgp.ReadStringBytes(b); err != nil {
			fail("option key", err)
		}
		switch k {
		case "chunk":
			if chunk, b, err = msgp.ReadStringBytes(b); err != nil {
				fail("chunk", err)
			}
		case "size":
			if size, b, err = msgp.ReadInt64Bytes(b); err != nil {
				fail("size", err)
			}
		default:
			t.Fatalf("unexpected option %q", k)
		}
	}
	if len(b) != 0 {
		t.Fatalf("%d bytes after the message", len(b))
	}
	return tag, entries, chunk, size
}

func TestForwardFrame(t *testing.T) {
	now := time.Date(2026, 11, 23, 12, 34, 56, 789, time.UTC)
	events := []string{
		`{"v":1,"time":"2026-11-23T10:00:00.123456789Z","n":1}`,
		`{"v":1,"n":2,"nested":{"time":"2026-11-23T10:00:00Z"}}`,              // no top-level time: now
		`{"time":"2026-11-23T11:00:00.5+01:00","latency":{"total":1234.567}}`, // offset: converted to UTC
		`{"time":"not a time","n":4}`,                                         // unparsable: now
		`{"time":"1969-12-31T23:59:59Z","n":5}`,                               // before 1970: now
		`{"time":"2106-02-07T06:28:15Z","n":6}`,                               // last uint32 second
		`{"time":"2106-02-07T06:28:16Z","n":7}`,                               // beyond uint32: now
		string(benchEvent(3)),
	}
	wantTimes := [][2]uint32{
		{1795428000, 123456789},
		{uint32(now.Unix()), 789},
		{1795428000, 500000000},
		{uint32(now.Unix()), 789},
		{uint32(now.Unix()), 789},
		{1<<32 - 1, 0},
		{uint32(now.Unix()), 789},
		{1795428000, 123456789},
	}
	var f forwardFrame
	f.reset("auditproxy.inference")
	for i, js := range events {
		if err := f.add([]byte(js), now); err != nil {
			t.Fatalf("add %d: %v", i, err)
		}
		if f.len() != i+1 {
			t.Fatalf("len() = %d after %d adds", f.len(), i+1)
		}
	}
	chunk := newChunkID()
	frame := f.finish(chunk)
	tag, entries, gotChunk, size := decodeFrame(t, frame)
	if tag != "auditproxy.inference" {
		t.Errorf("tag %q", tag)
	}
	if len(entries) != len(events) || size != int64(len(events)) {
		t.Fatalf("%d entries, option size %d, want %d", len(entries), size, len(events))
	}
	if gotChunk != chunk {
		t.Errorf("chunk %q, want %q", gotChunk, chunk)
	}
	for i, e := range entries {
		if e.sec != wantTimes[i][0] || e.nsec != wantTimes[i][1] {
			t.Errorf("entry %d: EventTime %d.%09d, want %d.%09d", i, e.sec, e.nsec, wantTimes[i][0], wantTimes[i][1])
		}
		want, err := decodeJSONOrdered([]byte(events[i]))
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(e.record, want) {
			t.Errorf("entry %d: record\n%#v\nwant\n%#v", i, e.record, want)
		}
	}

	// Finishing again with another chunk id gives the same frame but for
	// the chunk id.
	frame = bytes.Clone(frame)
	chunk2 := newChunkID()
	frame2 := f.finish(chunk2)
	if want := bytes.Replace(frame, []byte(chunk), []byte(chunk2), 1); !bytes.Equal(frame2, want) {
		t.Errorf("second finish differs beyond the chunk id")
	}

	// add after finish continues the frame.
	if err := f.add([]byte(events[0]), now); err != nil {
		t.Fatal(err)
	}
	_, entries, _, size = decodeFrame(t, f.finish(chunk))
	if len(entries) != len(events)+1 || size != int64(len(events)+1) {
		t.Errorf("after one more add: %d entries, size %d", len(entries), size)
	}
}

func TestForwardFrameFailedAddLeavesFrameUnchanged(t *testing.T) {
	now := time.Unix(1795428000, 0)
	good := []byte(`{"time":"2026-11-23T10:00:00.123456789Z","a":[1,2,3]}`)
	var want, got forwardFrame
	want.reset("t")
	got.reset("t")
	for _, js := range [][]byte{good, good} {
		if err := want.add(js, now); err != nil {
			t.Fatal(err)
		}
	}
	if err := got.add(good, now); err != nil {
		t.Fatal(err)
	}
	for _, bad := range []string{`[1]`, `{"a":1,"b":{"c":[1,2,NaN]}}`, `{"a":"x"`, `{"a":"` + strings.Repeat("y", 100000) + `",1}`} {
		if err := got.add([]byte(bad), now); err == nil {
			t.Fatalf("add(%.40q) succeeded", bad)
		}
		if got.len() != 1 {
			t.Fatalf("len() = %d after a failed add", got.len())
		}
	}
	if err := got.add(good, now); err != nil {
		t.Fatal(err)
	}
	if w, g := want.finish("c"), got.finish("c"); !bytes.Equal(g, w) {
		t.Errorf("frame after failed adds\n% x\nwant\n% x", g, w)
	}
}

// TestForwardFrameHeaders checks the entries array header takes the smallest
// form for the count, and that reset reuses the buffers across tags of
// different lengths.
func TestForwardFrameHeaders(t *testing.T) {
	var f forwardFrame
	ev := []byte(`{"a":1}`)
	now := time.Unix(1795428000, 0)
	for _, tc := range []struct {
		tag    string
		n      int
		header string
	}{
		{"a", 0, "90"},
		{strings.Repeat("long.tag.", 10), 1, "91"},
		{"", 15, "9f"},
		{"x.y", 16, "dc0010"},
		{strings.Repeat("t", 40), 65535, "dcffff"},
		{"x.y", 65536, "dd00010000"},
		{"b", 2, "92"},
	} {
		f.reset(tc.tag)
		for range tc.n {
			if err := f.add(ev, now); err != nil {
				t.Fatal(err)
			}
		}
		frame := f.finish("chunk")
		prefix := append([]byte{0x93}, msgp.AppendString(nil, tc.tag)...)
		prefix = append(prefix, mustHex(t, tc.header)...)
		if !bytes.HasPrefix(frame, prefix) {
			t.Errorf("tag %q, %d entries: frame starts % x, want % x", tc.tag, tc.n, frame[:min(len(frame), len(prefix))], prefix)
		}
		tag, entries, chunk, size := decodeFrame(t, frame)
		if tag != tc.tag || len(entries) != tc.n || size != int64(tc.n) || chunk != "chunk" {
			t.Errorf("decoded tag %q, %d entries, size %d, chunk %q", tag, len(entries), size, chunk)
		}
	}
}

// TestForwardFrameGolden checks a tiny frame byte for byte against an
// encoding worked out by hand from the msgpack spec and the forward
// protocol v1 spec.
func TestForwardFrameGolden(t *testing.T) {
	// 2026-11-23T10:00:00Z is day 20780 since the epoch
	// (56*365 + 14 leap days to 2026-01-01, + 304 + 22 days to Nov 23):
	// 20780*86400 + 10*3600 = 1795428000 = 0x6b040ea0.
	// 123456789 ns = 0x075bcd15.
	want := mustHex(t, `
		93                                  # fixarray 3: [tag, entries, option]
		a9 6170702e6175646974               # fixstr 9 "app.audit"
		91                                  # fixarray 1: one entry
		  92                                # fixarray 2: [time, record]
		    d7 00 6b040ea0 075bcd15         # fixext8 type 0 (EventTime): uint32 sec, uint32 nsec
		    84                              # fixmap 4: the record
		      a4 74696d65                   # fixstr 4 "time"
		      be 323032362d31312d3233       # fixstr 30 "2026-11-23
		         5431303a30303a30302e       #   T10:00:00.
		         3132333435363738395a       #   123456789Z"
		      a1 6e  d1 012c                # "n": int 16 300
		      a1 66  cb 3ff8000000000000    # "f": float 64 1.5
		      a1 78  92 c0 c3               # "x": fixarray 2 [nil, true]
		82                                  # fixmap 2: option
		  a5 6368756e6b                     # fixstr 5 "chunk"
		  b8 41414141414141414141           # fixstr 24 "AAAAAAAAAA
		     41414141414141414141           #   AAAAAAAAAA
		     41413d3d                       #   AA=="
		  a4 73697a65  01                   # fixstr 4 "size": positive fixint 1
	`)
	var f forwardFrame
	f.reset("app.audit")
	if err := f.add([]byte(`{"time":"2026-11-23T10:00:00.123456789Z","n":300,"f":1.5,"x":[null,true]}`), time.Now()); err != nil {
		t.Fatal(err)
	}
	if got := f.finish("AAAAAAAAAAAAAAAAAAAAAA=="); !bytes.Equal(got, want) {
		t.Errorf("frame\n% x\nwant\n% x", got, want)
	}
}

func TestNewChunkID(t *testing.T) {
	seen := map[string]bool{}
	for range 100 {
		id := newChunkID()
		raw, err := base64.StdEncoding.DecodeString(id)
		if err != nil || len(raw) != 16 || len(id) != 24 {
			t.Fatalf("chunk id %q: %d bytes, %v", id, len(raw), err)
		}
		if seen[id] {
			t.Fatalf("chunk id %q repeated", id)
		}
		seen[id] = true
	}
}

// TestForwardAckResp checks the ack reply for a chunk id decodes with
// fluent.AckResp, as the shipper will read it.
func TestForwardAckResp(t *testing.T) {
	id := newChunkID()
	reply := msgp.AppendMapHeader(nil, 1)
	reply = msgp.AppendString(reply, "ack")
	reply = msgp.AppendString(reply, id)
	var ack fluent.AckResp
	if err := ack.DecodeMsg(msgp.NewReader(bytes.NewReader(reply))); err != nil {
		t.Fatal(err)
	}
	if ack.Ack != id {
		t.Errorf("ack %q, want %q", ack.Ack, id)
	}
}

func TestForwardFrameSteadyStateAllocs(t *testing.T) {
	if testing.Short() {
		t.Skip("short")
	}
	events := make([][]byte, 100)
	for i := range events {
		events[i] = benchEvent(i)
	}
	var f forwardFrame
	now := time.Now()
	build := func() {
		f.reset("auditproxy.inference")
		for _, ev := range events {
			if err := f.add(ev, now); err != nil {
				t.Fatal(err)
			}
		}
		f.finish("AAAAAAAAAAAAAAAAAAAAAA==")
	}
	build()
	if a := testing.AllocsPerRun(20, build); a != 0 {
		t.Errorf("%v allocations per frame of %d events in steady state, want 0", a, len(events))
	}
}

// benchEvent returns a realistic audit event of about 700 bytes.
func benchEvent(i int) []byte {
	h := func(salt string) string {
		var b [32]byte
		for j := range b {
			b[j] = byte(i*31 + j*7 + len(salt))
		}
		return hex.EncodeToString(b[:])
	}
	return fmt.Appendf(nil, `{"v":1,"type":"inference","id":"evt_%016x","time":"2026-11-23T10:00:00.123456789Z",`+
		`"request_id":"req_%08x-%04x-4b1c-9f2e-%012x","method":"POST","path":"/v1/chat/completions","stream":true,`+
		`"model":{"name":"meta-llama/Llama-3.1-8B-Instruct"},`+
		`"input":{"hash":"blake3:%s","bytes":%d,"tokens":%d},`+
		`"output":{"hash":"blake3:%s","bytes":%d,"tokens":%d,"finish_reason":"stop"},`+
		`"api_key_id":"k1:%s","latency_ms":{"total":%d.567,"ttft":45.6,"upstream":1233.1,"overhead":0.123},`+
		`"status":{"code":200,"outcome":"ok"},"source":{"host":"gpu-1","version":"0.1.0"}}`,
		uint64(i)*0x9e3779b97f4a7c15, i, i%65536, uint64(i)*0x1234567,
		h("in"), 1234+i, 20+i%100,
		h("out"), 5000+i, 300+i%1000,
		h("key")[:24], 1000+i%5000)
}

func BenchmarkForwardFrame(b *testing.B) {
	const n = 1000
	events := make([][]byte, n)
	total := 0
	for i := range events {
		events[i] = benchEvent(i)
		total += len(events[i])
	}
	var f forwardFrame
	now := time.Now()
	chunk := newChunkID()
	var frameLen int
	build := func() {
		f.reset("auditproxy.inference")
		for _, ev := range events {
			if err := f.add(ev, now); err != nil {
				b.Fatal(err)
			}
		}
		frameLen = len(f.finish(chunk))
	}
	build() // grow the buffers: the loop measures the steady state
	b.SetBytes(int64(total))
	b.ReportAllocs()
	for b.Loop() {
		build()
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/event")
	b.ReportMetric(float64(total)/n, "json-B/event")
	b.ReportMetric(float64(frameLen)/n, "frame-B/event")
}

// surrogateEscape matches a \u escape of a UTF-16 surrogate (or, harmlessly,
// an escaped backslash followed by such text).
var surrogateEscape = regexp.MustCompile(`\\u[dD][89a-fA-F]`)

func FuzzAppendMsgpackRecord(f *testing.F) {
	for _, s := range []string{
		`{}`, `{"a":1}`, `{"a":-9223372036854775808,"b":18446744073709551615,"c":18446744073709551616}`,
		`{"f":1.5e-3,"g":1E3,"h":-0.0}`, `{"s":"\u00e9\n\"\ud83d\ude00"}`, `{"a":{"b":[1,[2,[3,{}]]]}}`,
		`{"n":null,"t":true,"f":false,"e":[]}`, `{"time":"2026-11-23T10:00:00.123456789Z"}`,
		`[]`, `"x"`, `{"a":1.2.3}`, `{"a":NaN}`, `{"a":01}`, `{"a":1e999}`, `{"a":`, `{"a":"\ud800"}`,
		string(benchEvent(1)),
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, js []byte) {
		var p fastjson.Parser
		out, ts, err := appendMsgpackRecord([]byte("pfx"), &p, js)
		if len(out) < 3 || string(out[:3]) != "pfx" {
			t.Fatalf("dst prefix clobbered: % x", out)
		}
		if err != nil {
			if len(out) != 3 || !ts.IsZero() {
				t.Fatalf("error %v with output % x, time %v", err, out, ts)
			}
			// Valid JSON objects are only refused for numbers beyond
			// float64 and for nesting deeper than fastjson allows.
			if json.Valid(js) && bytes.HasPrefix(bytes.TrimLeft(js, " \t\r\n"), []byte("{")) &&
				!errors.Is(err, errNumberRange) && !strings.Contains(err.Error(), "depth") {
				t.Fatalf("valid JSON object %q refused: %v", js, err)
			}
			return
		}
		mp := out[3:]
		if rest, err := msgp.Skip(mp); err != nil || len(rest) != 0 {
			t.Fatalf("output is not one msgpack value: %v, %d bytes left", err, len(rest))
		}
		n, _, err := msgp.ReadMapHeaderBytes(mp)
		if err != nil {
			t.Fatalf("output is not a map: %v", err)
		}
		v, err := fastjson.ParseBytes(js)
		if err != nil {
			t.Fatalf("fastjson refuses input it converted: %v", err)
		}
		if o := v.GetObject(); o == nil || o.Len() != int(n) {
			t.Fatalf("map of %d keys for a JSON object of %d", n, o.Len())
		}
		if _, rest, err := msgp.ReadIntfBytes(mp); err != nil || len(rest) != 0 {
			t.Fatalf("msgp.ReadIntfBytes: %v, %d bytes left", err, len(rest))
		}
		// Where encoding/json agrees the input is valid, the full round
		// trip must hold too, except for what encoding/json replaces with
		// U+FFFD: invalid UTF-8 and lone surrogate escapes (which fastjson
		// keeps as is; encoding/json, our events' producer, emits neither).
		if json.Valid(js) && utf8.Valid(js) && !surrogateEscape.Match(js) {
			checkRoundTrip(t, js, mp)
		}
	})
}
