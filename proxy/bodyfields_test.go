package proxy

import (
	"bytes"
	"encoding/json"
	"math"
	"math/big"
	"math/rand/v2"
	"strconv"
	"strings"
	"testing"
	"unicode/utf16"
	"unicode/utf8"
)

// streamedFieldsOf reads body with the streaming reader, in pieces whose
// sizes come from seed (0: one piece).
func streamedFieldsOf(body []byte, contentType string, seed uint64) requestFields {
	s := getStreamFields([]byte(contentType))
	defer putStreamFields(s)
	r := rand.New(rand.NewPCG(seed, 1))
	for rest := body; len(rest) > 0; {
		n := len(rest)
		if seed != 0 {
			n = min(n, 1+r.IntN(int(seed%97)+1))
		}
		s.write(rest[:n])
		rest = rest[n:]
	}
	return s.finish(true)
}

// fieldsKey is what the streaming reader must agree with parseRequestFields
// on.
type fieldsKey struct {
	valid                         bool
	model                         string
	modelBytes                    int64
	stream, includeUsage, hasOpts bool
}

func keyOf(f requestFields) fieldsKey {
	return fieldsKey{f.valid, f.model, f.modelBytes, f.stream, f.includeUsage, f.hasStreamOptions}
}

func utf16Of(s string, little bool) string {
	var b []byte
	for _, u := range utf16.Encode([]rune(s)) {
		if little {
			b = append(b, byte(u), byte(u>>8))
		} else {
			b = append(b, byte(u>>8), byte(u))
		}
	}
	return string(b)
}

func utf32Of(s string, little bool) string {
	var b []byte
	for _, r := range s {
		if little {
			b = append(b, byte(r), byte(r>>8), byte(r>>16), byte(r>>24))
		} else {
			b = append(b, byte(r>>24), byte(r>>16), byte(r>>8), byte(r))
		}
	}
	return string(b)
}

// requestFieldBodies are bodies of every kind parseRequestFields is tested
// on, and the long scalars only a streamed body can cut.
func requestFieldBodies() []string {
	long := strings.Repeat("m", 3000)
	escaped := strings.Repeat(`\u0041`, 600)     // 600 bytes unescaped, 3,600 escaped
	pairs := strings.Repeat(`\ud83d\ude00`, 300) // 1,200 bytes unescaped
	zeros := strings.Repeat("0", 3000)
	bodies := []string{
		`{"model":"m","stream":true}`,
		`{"model":"m","stream":true,"stream_options":{"include_usage":true}}`,
		`{"model":"m","stream":false,"stream_options":null}`,
		`{"stream":true,"stream_options":{}}`,
		`{"stream":true,"stream_options":{"include_usage":null}}`,
		`{"stream":true,"stream_options":{"include_usage":false,"include_usage":true}}`,
		`{"stream":true,"stream_options":{"include_usage":true},"stream_options":{"include_usage":false}}`,
		`{"model":42,"stream":"yes"}`,
		`{"model":"caf\u00e9"}`,
		`{"model":"a","model":"b","stream":true,"stream":false}`,
		`{"model":"a","mod\u0065l":"b","str\u0065am":1}`,
		`{"stream":1}`, `{"stream":1.0}`, `{"stream":1e0}`, `{"stream":"TRUE"}`, `{"stream":"on"}`,
		`{"stream":"off"}`, `{"stream":2}`, `{"stream":null}`, `{"stream":-0.0}`, `{"stream":[true]}`,
		`{"model":"m","temperature":Infinity,"top_p":-Infinity,"x":NaN,"stream":true}`,
		`{"model":"m","stream":true,"x":` + strings.Repeat("[", 2000) + strings.Repeat("]", 2000) + `}`,
		"\xef\xbb\xbf" + `{"model":"m","stream":true}`,
		utf16Of(`{"model":"m☃😀","stream":true}`, true),
		"\xfe\xff" + utf16Of(`{"model":"m","stream":true}`, false),
		"\xff\xfe" + utf16Of(`{"model":"m😀","stream":"1"}`, true),
		utf32Of(`{"model":"m","stream":true}`, false),
		"\xff\xfe\x00\x00" + utf32Of(`{"model":"m😀","stream":true}`, true),
		utf16Of(`{"stream":true}`, true) + "x",
		utf16Of(`{"model":"`, true) + "\x00\xd8" + utf16Of(`x","stream":true}`, true), // a lone surrogate
		"{\"model\":\"\xff\xfe\"}",
		`{"model":"\ud800x"}`, `{"model":"\ud83d\ude00"}`, `{"model":"\ud83d\u0041"}`, `{"model":"\u00zz"}`,
		`{"a":"}{][","model":"m\"}"}`,
		`{"stream":true,"stream_options":[]}`,
		`{"stream":true,"stream_options":"x"}`,
		`{"stream":true,"stream_options":{"include_usage":"maybe"}}`,
		`{"stream":true,"stream_options":{"include_usage":{"a":1}}}`,
		`{"stream":true,"stream_options":{"continuous_usage_stats":2}}`,
		`{"stream":true,"stream_options":{"continuous_usage_stats":"yes","x":[1,{"include_usage":false}]}}`,
		`{ "model" : "m" , "stream" : true } ` + "\n",
		`{}`, `[1,2]`, `"model"`, `3`, `{"model":"m"`, `{"model":"m"} {}`, ``, `not json`, `{`, `{"a":1,}`,
		// Long values: a model name of 3,000 bytes, names cut only once
		// unescaped, numbers of any length for a bool.
		`{"model":"` + long + `","stream":true}`,
		`{"model":"` + escaped + `"}`,
		`{"model":"` + escaped + escaped + `"}`,
		`{"model":"` + pairs + `"}`,
		`{"model":"` + strings.Repeat("é", 600) + `"}`,
		`{"stream":1.` + zeros + `}`,
		`{"stream":0.` + zeros + `1}`,
		`{"stream":1` + zeros + `e-3000}`,
		`{"stream":1` + zeros + `}`,
		`{"stream":-0.` + zeros + `}`,
		`{"stream":0.` + zeros + `1e3001}`,
		`{"stream":true,"stream_options":{"continuous_usage_stats":0.` + zeros + `e99999}}`,
		`{"stream":true,"stream_options":{"include_usage":1.` + zeros + `1}}`,
		`{"stream":"` + long + `"}`,
	}
	return bodies
}

// TestStreamedRequestFields: a body read in pieces of any size gives what
// parseRequestFields gives the body held whole.
func TestStreamedRequestFields(t *testing.T) {
	for _, body := range requestFieldBodies() {
		var scratch []byte
		want := keyOf(parseRequestFields([]byte(body), &scratch, ""))
		for _, seed := range []uint64{0, 1, 2, 3, 7, 64, 96} {
			if got := keyOf(streamedFieldsOf([]byte(body), "application/json", seed)); got != want {
				t.Errorf("%.80q in pieces (seed %d): %+v, held whole: %+v", body, seed, got, want)
			}
		}
	}
}

// TestStreamedBodyCutReadsNothing: a body not read to its end has no
// fields, whatever its first bytes said.
func TestStreamedBodyCutReadsNothing(t *testing.T) {
	s := getStreamFields([]byte("application/json"))
	s.write([]byte(`{"model":"m","stream":true,`))
	if f := s.finish(false); f.valid || f.model != "" || f.stream {
		t.Errorf("a cut body read as %+v", f)
	}
	putStreamFields(s)
}

// FuzzStreamedRequestFields: for every body that encoding/json reads as a
// JSON object, as it stands and in UTF-16 and UTF-32, the streaming reader
// in pieces agrees with parseRequestFields on the whole body: valid, model
// (and its length), stream, include_usage. On any other input it does not
// panic.
func FuzzStreamedRequestFields(f *testing.F) {
	for _, b := range requestFieldBodies() {
		if len(b) <= 512 { // the long ones are TestStreamedRequestFields's: they make minimizing slow
			f.Add([]byte(b), uint64(5))
		}
	}
	f.Add([]byte(`{"model":"`+strings.Repeat(`\u00e9`, 200)+`","stream":1`+strings.Repeat("0", 810)+`e-810}`), uint64(9))
	f.Fuzz(func(t *testing.T, body []byte, seed uint64) {
		var scratch []byte
		got := keyOf(streamedFieldsOf(body, "application/json", seed))
		var obj map[string]any
		if json.Unmarshal(body, &obj) != nil || obj == nil {
			return
		}
		want := keyOf(parseRequestFields(body, &scratch, ""))
		if got != want {
			t.Fatalf("%q in pieces (seed %d): %+v, held whole: %+v", body, seed, got, want)
		}
		if !utf8.Valid(body) {
			return
		}
		for _, enc := range []string{utf16Of(string(body), true), "\xfe\xff" + utf16Of(string(body), false), utf32Of(string(body), true)} {
			want := keyOf(parseRequestFields([]byte(enc), &scratch, ""))
			if got := keyOf(streamedFieldsOf([]byte(enc), "application/json", seed)); got != want {
				t.Fatalf("%q transcoded, in pieces (seed %d): %+v, held whole: %+v", enc, seed, got, want)
			}
		}
	})
}

// FuzzJSONNameReader: a string's escaped bytes unescaped in pieces are what
// appendJSONUnescaped makes of them whole, and the name kept is the start
// of it, cut as modelNameCut cuts it.
func FuzzJSONNameReader(f *testing.F) {
	for _, s := range []string{`a\u00e9\ud83d\ude00\ud800x\\\"\n\u12`, "\xe2\x82\xac\xe2\x82", `\ud83d\u0041`, `\u00zz`,
		strings.Repeat(`\u0041`, 300), strings.Repeat("é", 700)} {
		f.Add([]byte(s), uint64(3))
	}
	f.Fuzz(func(t *testing.T, s []byte, seed uint64) {
		want := appendJSONUnescaped(nil, s)
		var r jsonNameReader
		r.reset()
		rng := rand.New(rand.NewPCG(seed, 2))
		for rest := s; len(rest) > 0; {
			n := min(len(rest), 1+rng.IntN(13))
			r.write(rest[:n])
			rest = rest[n:]
		}
		r.finish()
		if r.n != int64(len(want)) || !bytes.HasPrefix(want, r.head) || len(r.head) != min(len(want), nameHead) {
			t.Fatalf("%q: %d bytes, head %q; whole: %d bytes %q", s, r.n, r.head, len(want), want)
		}
		name, n := r.name()
		if wname, wn := cutModelName(string(want)); name != wname || n != wn {
			t.Fatalf("%q: name %q/%d, want %q/%d", s, name, n, wname, wn)
		}
	})
}

// FuzzNumberText: a number reduced as it arrives reads as the number's
// correctly rounded float64 (math/big's exact reading), as Python reads
// it; text that is not a decimal number reduces to text strconv refuses.
func FuzzNumberText(f *testing.F) {
	zeros := strings.Repeat("0", 810)
	for _, s := range []string{"1", "-0", "0.5", "1e5", "1.5e-3", "+7", ".5", "5.", "1e", "1e+", "x", "1.2.3", "--1",
		"1" + zeros, "0." + zeros + "1", "1." + zeros + "1", "1" + zeros + "e-810", "9" + zeros + "e9999", "1e-9999",
		"0." + zeros + "1e811", strings.Repeat("9", 820) + "e-820", "2.4703282292062327208828439643411068618252990130716238221279284125033775363510437593264991818081799618989828234772285886546332835517796989819938739800539093906315035659515570226392290858392449105184435931802849936536152500319370457678249219365623669863658480757001585769269903706311928279558551332927834338409351978015531246597263579574622766465272827220056374006485499977096599470454020828166226237857393450736339007967761930577506740176324673600968951340535537458516661134223766678604162159680461914467291840300530057530849048765391711386591646239524912623653881879636239373280423891018672348497668235089863388587925628302755995657524455507255189313690836254779186948667994968324049705821028513185451396213837722826145437693412532098591327667236328125e-324"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		var n numberText
		n.reset()
		for i := 0; i < len(s); i += 5 {
			n.write([]byte(s[i:min(i+5, len(s))]))
		}
		red := string(n.reduced())
		got, gerr := strconv.ParseFloat(red, 64)
		if !decimalNumber(s) {
			if gerr == nil {
				t.Fatalf("%q is not a decimal number, reduced to %q, which reads as %v", s, red, got)
			}
			return
		}
		if len(s) <= maxNumberDigits {
			// strconv reads it right: the reduced text must read alike.
			if want, werr := strconv.ParseFloat(s, 64); got != want || (werr == nil) != (gerr == nil) {
				t.Fatalf("%q reduced to %q: %v %v, strconv reads it %v %v", s, red, got, gerr, want, werr)
			}
		}
		mant, exp, _ := strings.Cut(strings.ToLower(s), "e")
		if len(exp) > 4 || strings.HasPrefix(mant, ".") || strings.HasSuffix(mant, ".") {
			return // too far out for math/big in a fuzz loop, or a form it does not read
		}
		r, ok := new(big.Rat).SetString(s)
		if !ok {
			t.Fatalf("math/big does not read %q", s)
		}
		want, _ := r.Float64()
		if got != want || (gerr != nil) != math.IsInf(want, 0) {
			t.Fatalf("%q reduced to %q: %v %v, exactly %v", s, red, got, gerr, want)
		}
	})
}

// decimalNumber reports whether s is a number numberText reads:
// [+-]digits[.digits][e[+-]digits], with a digit in the mantissa.
func decimalNumber(s string) bool {
	i := 0
	if i < len(s) && (s[i] == '+' || s[i] == '-') {
		i++
	}
	digits := 0
	for i < len(s) && '0' <= s[i] && s[i] <= '9' {
		i++
		digits++
	}
	if i < len(s) && s[i] == '.' {
		i++
		for i < len(s) && '0' <= s[i] && s[i] <= '9' {
			i++
			digits++
		}
	}
	if digits == 0 {
		return false
	}
	if i < len(s) && (s[i] == 'e' || s[i] == 'E') {
		i++
		if i < len(s) && (s[i] == '+' || s[i] == '-') {
			i++
		}
		e := 0
		for i < len(s) && '0' <= s[i] && s[i] <= '9' {
			i++
			e++
		}
		if e == 0 {
			return false
		}
	}
	return i == len(s)
}

// TestStreamedFormFields: a form read in pieces gives what parseFormFields
// gives it whole, a form without its close delimiter or cut short nothing.
func TestStreamedFormFields(t *testing.T) {
	long := strings.Repeat("m", 5000)
	for _, pairs := range [][]string{
		{"@file", "RIFF", "model", "whisper", "stream", "true", "stream_include_usage", "true"},
		{"model", "whisper", "@file", strings.Repeat("a", 100000)},
		{"model", "a", "stream", "true", "model", "b", "stream", "false"},
		{"model", "a", "model", ""},
		{"stream", "Yes", "stream_include_usage", "on"},
		{"@model", "x", "model", "m"},
		{"model", "\xff\xfem"},
		{"model", long},
	} {
		body, ct := form(t, pairs...)
		want := keyOf(parseFormFields(body, []byte(ct)))
		if !want.valid {
			t.Fatalf("%q: not read as a form", pairs)
		}
		for _, seed := range []uint64{0, 1, 5, 64} {
			if got := keyOf(streamedFieldsOf(body, ct, seed)); got != want {
				t.Errorf("%q in pieces (seed %d): %+v, whole: %+v", pairs, seed, got, want)
			}
		}
		cut := body[:bytes.LastIndex(body, []byte("--"))]
		if got := keyOf(streamedFieldsOf(cut, ct, 3)); got.valid {
			t.Errorf("%q without its close delimiter read as %+v", pairs, got)
		}
		s := getStreamFields([]byte(ct))
		s.write(body[:len(body)/2])
		if f := s.finish(false); f.valid {
			t.Errorf("%q cut short read as %+v", pairs, f)
		}
		putStreamFields(s)
	}
	if got := keyOf(streamedFieldsOf([]byte("--x\r\n"), "multipart/form-data", 1)); got.valid {
		t.Errorf("a form without a boundary read as %+v", got)
	}
}
