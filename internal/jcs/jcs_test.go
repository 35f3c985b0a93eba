package jcs

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"math/bits"
	"math/rand/v2"
	"os"
	"path/filepath"
	"reflect"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode/utf16"
	"unicode/utf8"

	"github.com/auditproxy/auditproxy/audit"
	"github.com/valyala/fastjson"
)

func jcsCanonical(t testing.TB, p *fastjson.Parser, js string) string {
	t.Helper()
	out, err := Append(nil, p, []byte(js))
	if err != nil {
		t.Fatalf("Append(%q): %v", js, err)
	}
	return string(out)
}

// TestAppendCanonicalFixtures checks the known answers in testdata/jcs: the
// examples of RFC 8785 sections 3.2.2 and 3.2.3, the test data of the RFC's
// reference implementations (github.com/cyberphone/json-canonicalization),
// and an audit event.
func TestAppendCanonicalFixtures(t *testing.T) {
	ins, err := filepath.Glob("testdata/jcs/*.in.json")
	if err != nil || len(ins) < 8 {
		t.Fatalf("fixtures: %v %v", ins, err)
	}
	var p fastjson.Parser
	for _, in := range ins {
		name := strings.TrimSuffix(filepath.Base(in), ".in.json")
		t.Run(name, func(t *testing.T) {
			js, err := os.ReadFile(in)
			if err != nil {
				t.Fatal(err)
			}
			want, err := os.ReadFile(strings.TrimSuffix(in, ".in.json") + ".out.json")
			if err != nil {
				t.Fatal(err)
			}
			got, err := Append([]byte("prefix"), &p, js)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, append([]byte("prefix"), want...)) {
				t.Errorf("got\n%s\nwant\nprefix%s", got, want)
			}
			// The independent implementation below agrees.
			if ref, err := jcsRefCanonical(js); err != nil || !bytes.Equal(ref, want) {
				t.Errorf("reference: %s, %v", ref, err)
			}
		})
	}
}

// TestAppendCanonicalRFC8785Sorting checks the property order that RFC 8785
// section 3.2.3 gives for its example.
func TestAppendCanonicalRFC8785Sorting(t *testing.T) {
	js, err := os.ReadFile("testdata/jcs/rfc8785-3.2.3.in.json")
	if err != nil {
		t.Fatal(err)
	}
	var p fastjson.Parser
	out := jcsCanonical(t, &p, string(js))
	var got []string
	for _, v := range strings.Split(out, `":"`)[1:] {
		got = append(got, v[:strings.IndexByte(v, '"')])
	}
	want := []string{
		"Carriage Return",
		"One",
		"Control",
		"Latin Small Letter O With Diaeresis",
		"Euro Sign",
		"Emoji: Grinning Face",
		"Hebrew Letter Dalet With Dagesh",
	}
	if !slices.Equal(got, want) {
		t.Errorf("order %q, want %q", got, want)
	}
}

// TestAppendCanonicalRFC8785Numbers checks RFC 8785 Appendix B: each double
// written in several JSON forms canonicalizes to the RFC's string.
func TestAppendCanonicalRFC8785Numbers(t *testing.T) {
	f, err := os.Open("testdata/jcs/numbers.txt")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var p fastjson.Parser
	n := 0
	for sc := bufio.NewScanner(f); sc.Scan(); {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		hexBits, want, _ := strings.Cut(line, ",")
		bits, err := strconv.ParseUint(hexBits, 16, 64)
		if err != nil {
			t.Fatal(err)
		}
		x := math.Float64frombits(bits)
		if got := jcsRefNumber(x); got != want {
			t.Errorf("reference: %s: %s, want %s", hexBits, got, want)
		}
		forms := []string{
			want,
			strconv.FormatFloat(x, 'g', -1, 64),
			strconv.FormatFloat(x, 'e', 16, 64), // 17 digits: round-trips
			strconv.FormatFloat(x, 'E', 25, 64),
			strconv.FormatFloat(x, 'f', -1, 64),
		}
		for _, form := range forms {
			if got := jcsCanonical(t, &p, "["+form+"]"); got != "["+want+"]" {
				t.Errorf("%s: %s -> %s, want %s", hexBits, form, got, want)
			}
		}
		n++
	}
	if n != 24 {
		t.Errorf("%d samples, want 24", n)
	}
}

func TestAppendCanonicalExamples(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		// Literals, whitespace, structure.
		{" \t\r\n null \n", `null`},
		{`true`, `true`},
		{`false`, `false`},
		{`[ ]`, `[]`},
		{`{ }`, `{}`},
		{`[[],{},[{}],[[]]]`, `[[],{},[{}],[[]]]`},
		{`[ 3 , 1 , 2 ]`, `[3,1,2]`},
		{`{"b":[{"d":1,"c":2}],"a":{"f":null,"e":true}}`, `{"a":{"e":true,"f":null},"b":[{"c":2,"d":1}]}`},
		{`{"aa":1,"a":2,"":3,"b":4,"ab":5}`, `{"":3,"a":2,"aa":1,"ab":5,"b":4}`},
		{`{"B":1,"a":2,"_":3}`, `{"B":1,"_":3,"a":2}`},
		// Numbers.
		{`0`, `0`},
		{`-0`, `0`},
		{`-0.0`, `0`},
		{`0e5`, `0`},
		{`-0E-5`, `0`},
		{`1.0`, `1`},
		{`1.50`, `1.5`},
		{`-1.50`, `-1.5`},
		{`100`, `100`},
		{`1E2`, `100`},
		{`1e+2`, `100`},
		{`12.5e-1`, `1.25`},
		{`0.1`, `0.1`},
		{`0.000001`, `0.000001`},
		{`0.0000010`, `0.000001`},
		{`0.0000001`, `1e-7`},
		{`0.00000012345`, `1.2345e-7`},
		{`1e-7`, `1e-7`},
		{`1e-6`, `0.000001`},
		{`123456789012345`, `123456789012345`},
		{`1234567890123456`, `1234567890123456`},
		{`12345678901234567`, `12345678901234568`},
		{`9007199254740993`, `9007199254740992`},
		{`123456789012345.6`, `123456789012345.6`},
		{`0.123456789012345678`, `0.12345678901234568`},
		{`100000000000000000000`, `100000000000000000000`},
		{`1000000000000000000000`, `1e+21`},
		{`1e21`, `1e+21`},
		{`-1e21`, `-1e+21`},
		{`1.5e300`, `1.5e+300`},
		{`1e-400`, `0`}, // rounds to 0, as a double must
		{`-1e-400`, `0`},
		{`2.5e-324`, `5e-324`},
		{`0.30000000000000004`, `0.30000000000000004`},
		{`2734.118`, `2734.118`},
		{`[1,2.0,-3e0]`, `[1,2,-3]`},
		// Strings.
		{`""`, `""`},
		{`"abc"`, `"abc"`},
		{`"\"\\\/"`, `"\"\\/"`},
		{`"\b\f\n\r\t"`, `"\b\f\n\r\t"`},
		{`"\u0008\u000C\u000a\u000D\u0009"`, `"\b\f\n\r\t"`},
		{`"\u0000\u0001\u001f\u001F\u000b"`, `"\u0000\u0001\u001f\u001f\u000b"`},
		{`"\u0020\u0022\u005c\u005C\u002f"`, `" \"\\\\/"`},
		{`"\u007f\u0080\u00e9\u2028\u2029\ufeff\uFFFF"`, "\"\u007f\u0080\u00e9\u2028\u2029\ufeff\uffff\""},
		{"\"\u007f\u0080\u00e9\u2028\u2029\ufeff\ufffd\"", "\"\u007f\u0080\u00e9\u2028\u2029\ufeff\ufffd\""},
		{`"\ud83d\ude00\uD83D\uDE00\udbff\udfff"`, "\"\U0001F600\U0001F600\U0010FFFF\""},
		{`"<html>&amp;"`, `"<html>&amp;"`},
		{`"a\u0062c\n"`, `"abc\n"`},
		{"\"日本語\"", "\"日本語\""},
		{`["\u00e9x","y\t"]`, "[\"\u00e9x\",\"y\\t\"]"},
		// Member names.
		{`{"a\"b":1}`, `{"a\"b":1}`},
		{`{"a\\b":1}`, `{"a\\b":1}`},
		{`{"\u0061":1,"b":2}`, `{"a":1,"b":2}`},
		{`{"\n":1,"\u0001":2,"\/":3}`, `{"\u0001":2,"\n":1,"/":3}`},
		{`{"\ud83d\ude00":1,"\ufb33":2,"\u20ac":3}`, "{\"\u20ac\":3,\"\U0001F600\":1,\"\ufb33\":2}"},
		{"{\"\ufffd\":1}", "{\"\ufffd\":1}"},
		{`{"\ufffd":1,"x":"\u0041"}`, "{\"x\":\"A\",\"\ufffd\":1}"},
	} {
		var p fastjson.Parser
		if got := jcsCanonical(t, &p, tc.in); got != tc.want {
			t.Errorf("%s: got %s, want %s", tc.in, got, tc.want)
		}
		if ref, err := jcsRefCanonical([]byte(tc.in)); err != nil || string(ref) != tc.want {
			t.Errorf("%s: reference: %s, %v", tc.in, ref, err)
		}
	}
}

func TestAppendCanonicalErrors(t *testing.T) {
	deep := strings.Repeat("[", fastjson.MaxDepth+1) + strings.Repeat("]", fastjson.MaxDepth+1)
	for _, tc := range []struct{ in, err string }{
		// Not JSON at all.
		{``, "cannot parse"},
		{` `, "cannot parse"},
		{`{`, "cannot parse"},
		{`{"a"}`, "cannot parse"},
		{`{"a":1,}`, "cannot parse"},
		{`[1,]`, "cannot parse"},
		{`'a'`, "cannot parse"},
		{`nul`, "cannot parse"},
		{`True`, "cannot parse"},
		{"\ufeff{}", "cannot parse"},
		{deep, "depth"},
		// Trailing garbage.
		{`{} x`, "unexpected tail"},
		{`{}}`, "unexpected tail"},
		{`1 2`, "unexpected tail"},
		{`[1],`, "unexpected tail"},
		{`"a" "b"`, "unexpected tail"},
		{`truex`, "unexpected tail"},
		{`nullnull`, "unexpected tail"},
		// Numbers JSON lacks.
		{`01`, "invalid number"},
		{`-01`, "invalid number"},
		{`00`, "invalid number"},
		{`1.`, "invalid number"},
		{`1.e5`, "invalid number"},
		{`.5`, "invalid number"},
		{`-.5`, "invalid number"},
		{`+1`, "invalid number"},
		{`-`, "invalid number"},
		{`--1`, "invalid number"},
		{`1e`, "invalid number"},
		{`1e+`, "invalid number"},
		{`1E-`, "invalid number"},
		{`1e5.5`, "invalid number"},
		{`1.2.3`, "invalid number"},
		{`1-2`, "invalid number"},
		{`1ee2`, "invalid number"},
		{`NaN`, "invalid number"},
		{`nan`, "invalid number"},
		{`-nan`, "invalid number"},
		{`[NAN]`, "invalid number"},
		{`inf`, "invalid number"},
		{`-Inf`, "invalid number"},
		{`Infinity`, "unexpected tail"},
		{`{"a":-Infinity}`, "cannot parse"},
		{`0x10`, "unexpected tail"},
		{`1_000`, "unexpected tail"},
		// Numbers beyond a double.
		{`1e400`, "out of range"},
		{`-1e400`, "out of range"},
		{`[1.8e308]`, "out of range"},
		{`{"a":` + "1" + strings.Repeat("0", 309) + `}`, "out of range"},
		// Duplicate names.
		{`{"a":1,"a":2}`, `duplicate key "a"`},
		{`{"a":1,"b":2,"a":1}`, `duplicate key "a"`},
		{`{"a":1,"\u0061":2}`, `duplicate key "a"`},
		{`{"x":[{"k":1,"k":1}]}`, `duplicate key "k"`},
		{`{"":1,"":2}`, `duplicate key ""`},
		{`{"\ud83d\ude00":1,"😀":2}`, `duplicate key "😀"`},
		// Invalid UTF-8.
		{"\"\xff\"", "invalid UTF-8"},
		{"\"a\xc3\"", "invalid UTF-8"},
		{"\"\xc0\xaf\"", "invalid UTF-8"},         // overlong '/'
		{"\"\xed\xa0\x80\"", "invalid UTF-8"},     // an encoded surrogate
		{"\"\xf4\x90\x80\x80\"", "invalid UTF-8"}, // above U+10FFFF
		{"\"\\n\xff\"", "invalid UTF-8"},
		{"{\"\xff\":1}", "invalid UTF-8"},
		{"{\"a\":1,\"\xe2\x82\":1}", "invalid UTF-8"},
		{"{\"\xc3\xa9\":\"\xff\"}", "invalid UTF-8"},
		// Lone surrogates.
		{`"\ud800"`, "lone surrogate"},
		{`"\uDBFF"`, "lone surrogate"},
		{`"\udc00"`, "lone surrogate"},
		{`"\ude00\ud83d"`, "lone surrogate"},
		{`"\ud800x"`, "lone surrogate"},
		{`"\ud800\u0041"`, "lone surrogate"},
		{`"\ud800\ud800"`, "lone surrogate"},
		{`"\ud800\n"`, "lone surrogate"},
		{`"a\ud83d"`, "lone surrogate"},
		{`{"\ud800":1}`, "lone surrogate"},
		{`{"\udc00":1}`, "lone surrogate"},
		{`{"\ud800\u0041":1}`, "lone surrogate"},
		{`{"\ud800\udbff":1}`, "lone surrogate"},
		{`{"ok":1,"x\ud800":1}`, "lone surrogate"},
		// Invalid escapes and raw control characters.
		{`"\x41"`, "invalid escape"},
		{`"\'"`, "invalid escape"},
		{`"\u12"`, "invalid escape"},
		{`"\u12G4"`, "invalid escape"},
		{`"\u+123"`, "invalid escape"},
		{`"\U0041"`, "invalid escape"},
		{`{"\q":1}`, "invalid escape"},
		{`{"\u00":1}`, "invalid escape"},
		{"\"a\nb\"", "control character"},
		{"\"\t\"", "control character"},
		{"\"\x00\"", "control character"},
		{"{\"a\x1fb\":1}", "control character"},
		{"{\"\\n\":1,\"x\":\"\x01\"}", "control character"},
	} {
		var p fastjson.Parser
		// A parse of a valid text first: the outcome must not depend on it.
		if _, err := Append(nil, &p, []byte(`{"b":"\u00e9","a":[1.5,"x\ty"]}`)); err != nil {
			t.Fatal(err)
		}
		dst := []byte("prefix")
		out, err := Append(dst, &p, []byte(tc.in))
		if err == nil {
			t.Errorf("%q: no error, got %s", tc.in, out)
			continue
		}
		if !strings.Contains(err.Error(), tc.err) {
			t.Errorf("%q: error %q, want one containing %q", tc.in, err, tc.err)
		}
		if string(out) != "prefix" {
			t.Errorf("%q: dst changed to %q", tc.in, out)
		}
	}
}

// TestCompareUTF16 checks compareUTF16 against a comparison of the UTF-16
// encodings, on all pairs of strings of up to two characters drawn from the
// edges of the UTF-8 and UTF-16 ranges.
func TestCompareUTF16(t *testing.T) {
	runes := []rune{0, 1, '0', 'A', 'a', 0x7e, 0x7f, 0x80, 0xff, 0x100, 0x7ff, 0x800, 0xfff, 0x1000,
		0xcfff, 0xd000, 0xd7ff, 0xe000, 0xe001, 0xefff, 0xf000, 0xfb33, 0xfeff, 0xfffd, 0xffff,
		0x10000, 0x10001, 0x1f600, 0x3ffff, 0x40000, 0xfffff, 0x100000, 0x10fffe, 0x10ffff}
	strs := []string{""}
	for _, r := range runes {
		strs = append(strs, string(r))
		for _, r2 := range runes {
			strs = append(strs, string(r)+string(r2))
		}
	}
	for _, a := range strs {
		for _, b := range strs {
			want := slices.Compare(utf16.Encode([]rune(a)), utf16.Encode([]rune(b)))
			got := compareUTF16([]byte(a), []byte(b))
			if jcsSign(got) != want {
				t.Fatalf("compareUTF16(%+q, %+q) = %d, want sign %d", a, b, got, want)
			}
		}
	}
}

func jcsSign(x int) int {
	switch {
	case x < 0:
		return -1
	case x > 0:
		return 1
	}
	return 0
}

// TestCanonNumberFastPath checks the literal-preserving paths of jcsNumber
// and jcsNumberValue against parsing the literal and writing the double, on
// random literals crowded around their limits (15 significant digits, 1e-6).
func TestCanonNumberFastPath(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	digits := func(n int, zeros bool) string {
		var b strings.Builder
		for range n {
			if zeros && rng.IntN(3) == 0 {
				b.WriteByte('0')
			} else {
				b.WriteByte(byte('0' + rng.IntN(10)))
			}
		}
		return b.String()
	}
	for range 300000 {
		var lit string
		if rng.IntN(8) == 0 {
			lit = "-"
		}
		switch rng.IntN(3) {
		case 0:
			lit += "0"
		default:
			lit += string(byte('1'+rng.IntN(9))) + digits(rng.IntN(18), rng.IntN(2) == 0)
		}
		if rng.IntN(4) != 0 {
			frac := strings.Repeat("0", rng.IntN(9)) + digits(1+rng.IntN(18), rng.IntN(2) == 0)
			if rng.IntN(3) == 0 {
				frac += strings.Repeat("0", rng.IntN(5))
			}
			lit += "." + frac
		}
		if rng.IntN(10) == 0 {
			lit += "e" + strconv.Itoa(rng.IntN(50)-25)
		}
		got, err := jcsNumber([]byte("prefix"), []byte(lit))
		if !bytes.HasPrefix(got, []byte("prefix")) {
			t.Fatalf("%s: got %s, prefix lost", lit, got)
		}
		got = got[len("prefix"):]
		if err != nil {
			t.Fatalf("%s: %v", lit, err)
		}
		f, err := strconv.ParseFloat(lit, 64)
		if err != nil {
			t.Fatal(err)
		}
		if want := jcsRefNumber(f); string(got) != want {
			t.Fatalf("%s: got %s, want %s", lit, got, want)
		}
		if want := jcsAppendNumber(nil, f); string(got) != string(want) {
			t.Fatalf("%s: got %s, slow path %s", lit, got, want)
		}
		// And through Append, which has a fast path of its own.
		if got2, err := Append(nil, nil, []byte(lit)); err != nil || string(got2) != string(got) {
			t.Fatalf("%s: Append gives %s, %v; want %s", lit, got2, err, got)
		}
	}
}

// TestAppendCanonicalInvariance checks that the canonical form is a fixed
// point, and that it does not change when members are reordered, whitespace
// is added and characters and numbers are written differently.
func TestAppendCanonicalInvariance(t *testing.T) {
	docs := []string{
		`{"a":{"b":[1,2,{"c":"d","e":[]}],"f":"\u20ac\ud83d\ude00"},"g":-0.5,"h":1e300,"i":1e-300,"j":null,"k":[true,false]}`,
		`[{"z":1,"y":2,"x":3,"w":4,"v":5,"u":6,"t":7,"s":8,"r":9,"q":10,"p":11,"o":12,"n":13,"m":14,"l":15,"k":16,"j":17,"i":18,"h":19,"g":20,"f":21,"e":22,"d":23,"c":24,"b":25,"a":26,"é":27,"😀":28,"\ufb33":29,"\r":30}]`,
	}
	ins, _ := filepath.Glob("testdata/jcs/*.in.json")
	for _, in := range ins {
		js, err := os.ReadFile(in)
		if err != nil {
			t.Fatal(err)
		}
		docs = append(docs, string(js))
	}
	rng := rand.New(rand.NewPCG(3, 4))
	var p fastjson.Parser
	for _, doc := range docs {
		want := jcsCanonical(t, &p, doc)
		if again := jcsCanonical(t, &p, want); again != want {
			t.Errorf("not idempotent:\n%s\n%s", want, again)
		}
		for range 50 {
			dec := json.NewDecoder(strings.NewReader(want))
			dec.UseNumber()
			tree, err := jcsDecodeOrdered(dec)
			if err != nil {
				t.Fatal(err)
			}
			variant := jcsRewrite(rng, nil, tree)
			if !json.Valid(variant) {
				t.Fatalf("rewrite made invalid JSON: %s", variant)
			}
			if got := jcsCanonical(t, &p, string(variant)); got != want {
				t.Errorf("variant %s\ngives %s\nwant  %s", variant, got, want)
			}
		}
	}
}

type jcsOrderedMember struct {
	k string
	v any
}

type jcsOrderedObject []jcsOrderedMember

// jcsDecodeOrdered decodes one JSON value, keeping objects' member order.
func jcsDecodeOrdered(dec *json.Decoder) (any, error) {
	tok, err := dec.Token()
	if err != nil {
		return nil, err
	}
	d, ok := tok.(json.Delim)
	if !ok {
		return tok, nil
	}
	switch d {
	case '[':
		a := []any{}
		for dec.More() {
			v, err := jcsDecodeOrdered(dec)
			if err != nil {
				return nil, err
			}
			a = append(a, v)
		}
		_, err = dec.Token()
		return a, err
	case '{':
		o := jcsOrderedObject{}
		for dec.More() {
			k, err := dec.Token()
			if err != nil {
				return nil, err
			}
			v, err := jcsDecodeOrdered(dec)
			if err != nil {
				return nil, err
			}
			o = append(o, jcsOrderedMember{k.(string), v})
		}
		_, err = dec.Token()
		return o, err
	}
	return nil, fmt.Errorf("unexpected %v", d)
}

// jcsRewrite writes v as JSON in a random equivalent form.
func jcsRewrite(rng *rand.Rand, dst []byte, v any) []byte {
	ws := func() {
		for rng.IntN(3) == 0 {
			dst = append(dst, " \t\r\n"[rng.IntN(4)])
		}
	}
	ws()
	switch v := v.(type) {
	case jcsOrderedObject:
		o := slices.Clone(v)
		rng.Shuffle(len(o), func(i, j int) { o[i], o[j] = o[j], o[i] })
		dst = append(dst, '{')
		for i, m := range o {
			if i > 0 {
				dst = append(dst, ',')
			}
			ws()
			dst = jcsRewriteString(rng, dst, m.k)
			ws()
			dst = append(dst, ':')
			dst = jcsRewrite(rng, dst, m.v)
		}
		ws()
		dst = append(dst, '}')
	case []any:
		dst = append(dst, '[')
		for i, e := range v {
			if i > 0 {
				dst = append(dst, ',')
			}
			dst = jcsRewrite(rng, dst, e)
		}
		ws()
		dst = append(dst, ']')
	case string:
		dst = jcsRewriteString(rng, dst, v)
	case json.Number:
		f, err := v.Float64()
		if err != nil {
			panic(err)
		}
		switch rng.IntN(4) {
		case 0:
			dst = append(dst, v...)
		case 1:
			dst = strconv.AppendFloat(dst, f, 'E', 20, 64)
		case 2:
			dst = strconv.AppendFloat(dst, f, 'e', -1, 64)
		default:
			dst = strconv.AppendFloat(dst, f, 'f', -1, 64)
			if !strings.ContainsAny(string(v), ".eE") && rng.IntN(2) == 0 {
				dst = append(dst, ".000"...)
			}
		}
	default:
		b, err := json.Marshal(v)
		if err != nil {
			panic(err)
		}
		dst = append(dst, b...)
	}
	ws()
	return dst
}

// jcsRewriteString writes s as a JSON string, escaping characters at random.
func jcsRewriteString(rng *rand.Rand, dst []byte, s string) []byte {
	dst = append(dst, '"')
	for _, r := range s {
		switch {
		case r == '"' || r == '\\':
			if rng.IntN(2) == 0 {
				dst = append(dst, '\\', byte(r))
				continue
			}
		case r == '/':
			if rng.IntN(2) == 0 {
				dst = append(dst, `\/`...)
				continue
			}
		case r < 0x20:
		default:
			if rng.IntN(3) != 0 {
				dst = utf8.AppendRune(dst, r)
				continue
			}
		}
		for _, u := range utf16.Encode([]rune{r}) {
			dst = fmt.Appendf(dst, []string{`\u%04x`, `\u%04X`}[rng.IntN(2)], u)
		}
	}
	return append(dst, '"')
}

func jcsRaceEnabled() bool {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return false
	}
	for _, s := range bi.Settings {
		if s.Key == "-race" {
			return s.Value == "true"
		}
	}
	return false
}

// TestAppendCanonicalReusesParser checks that results do not depend on what
// the Parser did before, and that a warm call does not allocate.
func TestAppendCanonicalReusesParser(t *testing.T) {
	event, err := os.ReadFile("testdata/jcs/event.in.json")
	if err != nil {
		t.Fatal(err)
	}
	want, err := os.ReadFile("testdata/jcs/event.out.json")
	if err != nil {
		t.Fatal(err)
	}
	big := `{"k":[` + strings.Repeat(`{"x\n":"\u00e9\ud83d\ude00","b":[1.5e300,{"a":null}],"a":"\u0000"},`, 100) + `0]}`
	var p fastjson.Parser
	for i, js := range []string{big, `{"a":[1,`, string(event), big, `"\ud800"`, string(event)} {
		out, err := Append(nil, &p, []byte(js))
		var fresh fastjson.Parser
		out2, err2 := Append(nil, &fresh, []byte(js))
		if !bytes.Equal(out, out2) || (err == nil) != (err2 == nil) {
			t.Errorf("%d: reused parser: %s, %v; fresh parser: %s, %v", i, out, err, out2, err2)
		}
	}
	if jcsRaceEnabled() {
		t.Log("no allocation check: sync.Pool drops items under the race detector")
		return
	}
	dst := make([]byte, 0, 1<<14)
	allocs := testing.AllocsPerRun(100, func() {
		out, err := Append(dst[:0], &p, event)
		if err != nil || !bytes.Equal(out, want) {
			t.Fatalf("%s %v", out, err)
		}
	})
	if allocs != 0 {
		t.Errorf("%v allocations per call, want 0", allocs)
	}
	// Nor on the other paths: non-ASCII names, large objects, escapes,
	// numbers that need strconv.
	var large strings.Builder
	large.WriteString(`{`)
	for i := range 300 {
		fmt.Fprintf(&large, `"k%d":[%d.5e-9,"\u00e9\n"],`, 300-i, i)
	}
	large.WriteString(`"\u00e9\ud83d\ude00":{"z":1,"\ufb33":2}}`)
	for _, js := range [][]byte{[]byte(large.String()), []byte(big)} {
		allocs := testing.AllocsPerRun(100, func() {
			if _, err := Append(dst[:0], &p, js); err != nil {
				t.Fatal(err)
			}
		})
		if allocs != 0 {
			t.Errorf("%.40s...: %v allocations per call, want 0", js, allocs)
		}
	}
}

// TestAppendCanonicalInPlace checks canonicalizing a buffer into itself.
func TestAppendCanonicalInPlace(t *testing.T) {
	long := strings.Repeat("x", 100)
	docs := []string{
		`{"b":{"\u00e9":1},"a":"` + long + `"}`,
		`{"b":{"\ud800x":1},"a":"` + long + `"}`, // the lone surrogate lies where "a" is written
		`{"b":{"\\":1,"\u00e9":[1E2,"\/"]},"a":"` + long + `"}`,
		`{"b":{"x\ud83d\ude00":1,"\ud83d":2},"a":"` + long + `"}`,
	}
	ins, _ := filepath.Glob("testdata/jcs/*.in.json")
	for _, in := range ins {
		js, err := os.ReadFile(in)
		if err != nil {
			t.Fatal(err)
		}
		docs = append(docs, string(js))
	}
	var p fastjson.Parser
	for _, doc := range docs {
		want, wantErr := Append(nil, &p, []byte(doc))
		for _, extra := range []int{0, 1000} {
			buf := append(make([]byte, 0, len(doc)+extra), doc...)
			got, err := Append(buf[:0], &p, buf)
			if (err == nil) != (wantErr == nil) || !bytes.Equal(got, want) {
				t.Errorf("%s in place: %s, %v; want %s, %v", doc, got, err, want, wantErr)
			}
		}
	}
}

func TestAppendCanonicalConcurrent(t *testing.T) {
	event, err := os.ReadFile("testdata/jcs/event.in.json")
	if err != nil {
		t.Fatal(err)
	}
	want, err := os.ReadFile("testdata/jcs/event.out.json")
	if err != nil {
		t.Fatal(err)
	}
	errc := make(chan error)
	for range 8 {
		go func() {
			var p fastjson.Parser
			var out []byte
			for range 200 {
				var err error
				if out, err = Append(out[:0], &p, event); err != nil || !bytes.Equal(out, want) {
					errc <- fmt.Errorf("%s %v", out, err)
					return
				}
			}
			errc <- nil
		}()
	}
	for range 8 {
		if err := <-errc; err != nil {
			t.Error(err)
		}
	}
}

// TestAppendCanonicalEncodingJSON checks that JSON written by encoding/json,
// as events are, keeps its values through canonicalization: floats to the
// bit (but for -0, which is written 0), strings and integers.
func TestAppendCanonicalEncodingJSON(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	randFloat := func() float64 {
		for {
			var f float64
			switch rng.IntN(4) {
			case 0:
				f = math.Float64frombits(rng.Uint64())
			case 1:
				f = rng.NormFloat64() * math.Pow(10, float64(rng.IntN(40)-20))
			case 2:
				f = float64(rng.IntN(1e6)) / 1000 // milliseconds as events hold them
			default:
				f = float64(rng.Int64N(1<<53)) - 1<<52
			}
			if !math.IsNaN(f) && !math.IsInf(f, 0) {
				return f
			}
		}
	}
	randString := func() string {
		var b []rune
		for range rng.IntN(8) {
			switch rng.IntN(4) {
			case 0:
				b = append(b, rune(rng.IntN(0x80)))
			case 1:
				b = append(b, rune(rng.IntN(0xd800)))
			case 2:
				b = append(b, rune(0xe000+rng.IntN(0x2000)))
			default:
				b = append(b, rune(0x10000+rng.IntN(0x100000)))
			}
		}
		return string(b)
	}
	var p fastjson.Parser
	var buf bytes.Buffer
	for range 2000 {
		m := map[string]any{}
		for range rng.IntN(12) {
			switch rng.IntN(4) {
			case 0:
				m[randString()] = randString()
			case 1:
				m[randString()] = []any{randFloat(), randFloat(), map[string]any{randString(): randFloat()}}
			default:
				m[randString()] = randFloat()
			}
		}
		buf.Reset()
		enc := json.NewEncoder(&buf)
		enc.SetEscapeHTML(false)
		if err := enc.Encode(m); err != nil {
			t.Fatal(err)
		}
		out, err := Append(nil, &p, buf.Bytes())
		if err != nil {
			t.Fatalf("%s: %v", buf.Bytes(), err)
		}
		var back map[string]any
		if err := json.Unmarshal(out, &back); err != nil {
			t.Fatalf("%s: %v", out, err)
		}
		if !reflect.DeepEqual(back, m) { // float64s compare with ==
			t.Fatalf("values changed:\n%s\n%s", buf.Bytes(), out)
		}
		if ref, err := jcsRefCanonical(buf.Bytes()); err != nil || !bytes.Equal(ref, out) {
			t.Fatalf("reference: %s, %v\ngot %s", ref, err, out)
		}
	}

	// Events, written by encoding/json and by audit.Event.AppendJSON (which must be that canonical form).
	key := "k1:97ec80fcbebd63cd2bdc8f0a95078437"
	for range 500 {
		n, ttft := rng.Int64N(1e9), randFloat()
		ev := audit.Event{V: 1, Type: audit.TypeInference, ID: audit.NewID(), Time: audit.Timestamp(time.Unix(rng.Int64N(4e9), rng.Int64N(1e9)).UTC()),
			RequestID: randString(), Method: "POST", Path: "/v1/chat/completions", Stream: rng.IntN(2) == 0,
			Model: audit.Model{Name: randString()}, Input: audit.Body{Hash: "blake3:00", Bytes: rng.Int64N(1 << 40), Tokens: &n},
			Output: audit.Body{Hash: "blake3:11", Bytes: rng.Int64N(1 << 40), FinishReason: "stop"}, APIKeyID: &key,
			Latency: audit.Latency{Total: randFloat(), TTFT: &ttft, Upstream: randFloat(), Overhead: randFloat()},
			Status:  audit.Status{Code: 200, Outcome: audit.OutcomeOK}, Source: audit.Source{Host: "gpu-node-17", Version: "0.3.0"}}
		buf.Reset()
		enc := json.NewEncoder(&buf)
		enc.SetEscapeHTML(false)
		if err := enc.Encode(&ev); err != nil {
			t.Fatal(err)
		}
		out, err := Append(nil, &p, buf.Bytes())
		if err != nil {
			t.Fatalf("%s: %v", buf.Bytes(), err)
		}
		var back audit.Event
		if err := json.Unmarshal(out, &back); err != nil {
			t.Fatalf("%s: %v", out, err)
		}
		if !reflect.DeepEqual(back, ev) {
			t.Fatalf("event changed:\n%s\n%s\n%+v\n%+v", buf.Bytes(), out, back, ev)
		}
		if got := ev.AppendJSON(nil); !bytes.Equal(got, out) {
			t.Fatalf("AppendJSON is not encoding/json's canonical form:\n%s\n%s", got, out)
		}
	}
}

// FuzzAppendCanonical checks, on any input, that Append does not
// panic and that whatever it accepts is JSON that an independent
// implementation (encoding/json, jcsRefCanonical) canonicalizes the same, whose
// jcsCanonical form is itself and holds the same values; and that what it
// rejects, encoding/json rejects too, or has a lone surrogate, invalid UTF-8
// or deep nesting.
func FuzzAppendCanonical(f *testing.F) {
	ins, _ := filepath.Glob("testdata/jcs/*.json")
	for _, in := range ins {
		js, err := os.ReadFile(in)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(js)
	}
	for _, s := range []string{`0`, `-0.0`, `1e400`, `1e-400`, `0.0000001`, `123456789012345.67`, `[01]`, `{"a":1,"a":2}`,
		`"\ud800"`, `"\ud83d\ude00"`, `{"\u0061":1,"a":2}`, `{"\ud800\u0041":1}`, "\"\xff\"", `"\u001f\/"`, `[1,2,]`, `NaN`, `{} x`,
		`{"a":[1,-0.5,0.000001,"\u001f\n",{"b":null}],"c":true}`, "\"\x7f\\u007f\"", `{"":1,"a":2,"ab":3,"b":4}`, `{"ab":1,"aa":2}`, `{"a":1,"":2}`, `{"":1,"":2}`} {
		f.Add([]byte(s))
	}
	var p fastjson.Parser
	f.Fuzz(func(t *testing.T, in []byte) {
		out, err := Append(nil, &p, in)
		ref, refErr := jcsRefCanonical(in)
		if err != nil {
			if refErr == nil && utf8.Valid(in) && !jcsMaybeLoneSurrogate(in) && jcsNesting(in) < fastjson.MaxDepth {
				t.Fatalf("%q rejected: %v; reference gives %s", in, err, ref)
			}
			return
		}
		if !json.Valid(out) {
			t.Fatalf("%q -> invalid JSON %q", in, out)
		}
		if refErr != nil {
			t.Fatalf("%q accepted as %q; reference rejects it: %v", in, out, refErr)
		}
		if !bytes.Equal(out, ref) {
			t.Fatalf("%q -> %q; reference gives %q", in, out, ref)
		}
		again, err := Append(nil, &p, out)
		if err != nil || !bytes.Equal(again, out) {
			t.Fatalf("%q -> %q -> %q, %v", in, out, again, err)
		}
		// The check Append starts with never calls a text
		// canonical that the long way changes.
		if jcsIsCanonical(in, nil, nil) {
			c := new(jcsState)
			if long, err := c.canonical(nil, in); err != nil || !bytes.Equal(long, in) {
				t.Fatalf("%q called canonical, but canonicalizes to %q (%v)", in, long, err)
			}
		}
		var vin, vout any
		if err := json.Unmarshal(in, &vin); err != nil {
			t.Fatalf("%q accepted, but encoding/json: %v", in, err)
		}
		if err := json.Unmarshal(out, &vout); err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(vin, vout) {
			t.Fatalf("%q -> %q: values differ: %#v, %#v", in, out, vin, vout)
		}
	})
}

// jcsMaybeLoneSurrogate reports whether js has a \u escape of a surrogate,
// which encoding/json turns into U+FFFD where Append rejects it.
func jcsMaybeLoneSurrogate(js []byte) bool {
	for i := 0; i+2 < len(js); i++ {
		if js[i] == '\\' && js[i+1] == 'u' && (js[i+2] == 'd' || js[i+2] == 'D') {
			return true
		}
	}
	return false
}

// jcsNesting bounds the nesting depth of js from above.
func jcsNesting(js []byte) int {
	return bytes.Count(js, []byte("[")) + bytes.Count(js, []byte("{"))
}

// jcsRefCanonical is a plain RFC 8785 canonicalizer built on encoding/json, for
// comparison. Unlike Append it lets through lone surrogates and
// invalid UTF-8, which encoding/json replaces with U+FFFD.
func jcsRefCanonical(js []byte) ([]byte, error) {
	if !json.Valid(js) {
		return nil, errors.New("not JSON")
	}
	dec := json.NewDecoder(bytes.NewReader(js))
	dec.UseNumber()
	out, err := jcsRefValue(dec, nil)
	if err != nil {
		return nil, err
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, fmt.Errorf("trailing data: %v", err)
	}
	return out, nil
}

func jcsRefValue(dec *json.Decoder, out []byte) ([]byte, error) {
	tok, err := dec.Token()
	if err != nil {
		return nil, err
	}
	switch tok := tok.(type) {
	case json.Delim:
		if tok == '[' {
			out = append(out, '[')
			for i := 0; dec.More(); i++ {
				if i > 0 {
					out = append(out, ',')
				}
				if out, err = jcsRefValue(dec, out); err != nil {
					return nil, err
				}
			}
			dec.Token()
			return append(out, ']'), nil
		}
		type member struct {
			k []uint16
			v []byte
		}
		var ms []member
		for dec.More() {
			k, _ := dec.Token()
			v, err := jcsRefValue(dec, nil)
			if err != nil {
				return nil, err
			}
			ms = append(ms, member{utf16.Encode([]rune(k.(string))), v})
		}
		dec.Token()
		slices.SortFunc(ms, func(a, b member) int { return slices.Compare(a.k, b.k) })
		out = append(out, '{')
		for i, m := range ms {
			if i > 0 {
				if slices.Equal(ms[i-1].k, m.k) {
					return nil, errors.New("duplicate key")
				}
				out = append(out, ',')
			}
			out = jcsRefString(out, string(utf16.Decode(m.k)))
			out = append(out, ':')
			out = append(out, m.v...)
		}
		return append(out, '}'), nil
	case string:
		return jcsRefString(out, tok), nil
	case json.Number:
		f, err := strconv.ParseFloat(string(tok), 64)
		if err != nil {
			return nil, err
		}
		return append(out, jcsRefNumber(f)...), nil
	case bool:
		return strconv.AppendBool(out, tok), nil
	case nil:
		return append(out, "null"...), nil
	}
	return nil, fmt.Errorf("unexpected token %v", tok)
}

func jcsRefString(out []byte, s string) []byte {
	out = append(out, '"')
	for _, r := range s {
		switch r {
		case '"':
			out = append(out, `\"`...)
		case '\\':
			out = append(out, `\\`...)
		case '\b':
			out = append(out, `\b`...)
		case '\f':
			out = append(out, `\f`...)
		case '\n':
			out = append(out, `\n`...)
		case '\r':
			out = append(out, `\r`...)
		case '\t':
			out = append(out, `\t`...)
		default:
			if r < 0x20 {
				out = fmt.Appendf(out, `\u%04x`, r)
			} else {
				out = utf8.AppendRune(out, r)
			}
		}
	}
	return append(out, '"')
}

// jcsRefNumber writes f as ECMAScript's Number::toString does (ECMA-262,
// 6.1.6.1.20), following its steps: with s the shortest digits (k of them)
// and n the decimal exponent, so that f = s × 10^(n-k).
func jcsRefNumber(f float64) string {
	if f == 0 {
		return "0"
	}
	if f < 0 {
		return "-" + jcsRefNumber(-f)
	}
	mant, exp, _ := strings.Cut(strconv.FormatFloat(f, 'e', -1, 64), "e")
	s := strings.Replace(mant, ".", "", 1)
	k := len(s)
	e, _ := strconv.Atoi(exp)
	n := e + 1
	switch {
	case k <= n && n <= 21:
		return s + strings.Repeat("0", n-k)
	case 0 < n && n <= 21:
		return s[:n] + "." + s[n:]
	case -6 < n && n <= 0:
		return "0." + strings.Repeat("0", -n) + s
	}
	sign := "+"
	if n-1 < 0 {
		sign = "-"
	}
	ex := strconv.Itoa(max(n-1, 1-n))
	if k == 1 {
		return s + "e" + sign + ex
	}
	return s[:1] + "." + s[1:] + "e" + sign + ex
}

func BenchmarkAppendCanonical(b *testing.B) {
	event, err := os.ReadFile("testdata/jcs/event.in.json")
	if err != nil {
		b.Fatal(err)
	}
	var p fastjson.Parser
	dst := make([]byte, 0, 4096)
	b.Run("event", func(b *testing.B) {
		b.SetBytes(int64(len(event)))
		b.ReportAllocs()
		for b.Loop() {
			if _, err := Append(dst[:0], &p, event); err != nil {
				b.Fatal(err)
			}
		}
	})
	// For comparison: fastjson's parse alone, which Append
	// included before it read JSON on its own.
	b.Run("parse-only", func(b *testing.B) {
		b.SetBytes(int64(len(event)))
		b.ReportAllocs()
		for b.Loop() {
			if _, err := p.ParseBytes(event); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// TestJCSSpecial checks the word-at-a-time scan for the bytes that end the
// fast path of a string against a byte loop.
func TestJCSSpecial(t *testing.T) {
	firstSpecial := func(s []byte) int {
		for i, b := range s {
			if b < 0x20 || b >= 0x80 || b == '"' || b == '\\' {
				return i
			}
		}
		return len(s)
	}
	check := func(s []byte) {
		t.Helper()
		got := 8
		if m := jcsSpecial(binary.LittleEndian.Uint64(s)); m != 0 {
			got = bits.TrailingZeros64(m) >> 3
		}
		if want := firstSpecial(s); got != want {
			t.Fatalf("jcsSpecial(%q): first special byte %d, want %d", s, got, want)
		}
	}
	// Every byte at every position, after and before bytes next to the
	// edges of the classes.
	edges := []byte{0x00, 0x01, 0x1f, 0x20, 0x21, '"' - 1, '"', '"' + 1, '\\' - 1, '\\', '\\' + 1, 0x7e, 0x7f, 0x80, 0x81, 0xa0, 0xff}
	s := make([]byte, 8)
	for b := range 256 {
		for pos := range 8 {
			for _, e := range edges {
				for i := range s {
					s[i] = 'a'
				}
				for i := pos + 1; i < 8; i++ {
					s[i] = e
				}
				s[pos] = byte(b)
				check(s)
				for i := range pos {
					s[i] = e
				}
				check(s)
			}
		}
	}
	rng := rand.New(rand.NewPCG(7, 8))
	special := []byte{0, 0x1f, 0x20, 0x21, '"', '#', '[', '\\', ']', 0x7f, 0x80, 0xc3, 0xff, 0x01, 0x5b}
	for range 200000 {
		for i := range s {
			if rng.IntN(6) == 0 {
				s[i] = special[rng.IntN(len(special))]
			} else {
				s[i] = byte(0x20 + rng.IntN(0x60))
			}
		}
		check(s)
	}
}

// TestAppendCanonicalDepth checks the nesting limit against fastjson's, which
// Append keeps: no value deeper than fastjson.MaxDepth, the
// top-level value being at depth 1.
func TestAppendCanonicalDepth(t *testing.T) {
	var p fastjson.Parser
	for _, n := range []int{1, 2, 150, 298, 299, 300, 301, 302} {
		rep := strings.Repeat
		for _, js := range []string{
			rep("[", n) + rep("]", n),
			rep("[", n) + "1" + rep("]", n),
			rep("[", n) + `"x"` + rep("]", n),
			rep("[", n) + "null" + rep("]", n),
			rep("[", n) + "{}" + rep("]", n),
			rep(`{"a":`, n) + "1" + rep("}", n),
			rep(`{"a":`, n) + `"x"` + rep("}", n),
			rep(`{"a":`, n) + "-1.5" + rep("}", n),
			rep(`{"a":`, n) + "{}" + rep("}", n),
			rep(`{"a":`, n) + "[]" + rep("}", n),
			rep(`{"b":0,"a":`, n) + "true" + rep("}", n),
			rep(`[{"a":`, n/2) + "1" + rep("}]", n/2),
			rep(`[{"b":1,"a":`, n/2) + "1" + rep("}]", n/2),
		} {
			_, fjErr := p.Parse(js)
			out, err := Append(nil, nil, []byte(js))
			if (err == nil) != (fjErr == nil) {
				t.Errorf("%d, %.40s...: %v; fastjson: %v", n, js, err, fjErr)
				continue
			}
			if err != nil {
				if !strings.Contains(err.Error(), "depth") {
					t.Errorf("%d, %.40s...: %v, want a depth error", n, js, err)
				}
				continue
			}
			if ref, err := jcsRefCanonical([]byte(js)); err != nil || !bytes.Equal(ref, out) {
				t.Errorf("%d, %.40s...: got %.60s..., reference %.60s..., %v", n, js, out, ref, err)
			}
		}
	}
}

// TestAppendCanonicalOrder checks member order and duplicate names on
// objects that take each of Append's ways: lazy objects (reached
// through objects only) and eager ones (in arrays), in and out of order,
// names that the sort words tell apart and names they do not, and objects
// small and large, against the reference.
func TestAppendCanonicalOrder(t *testing.T) {
	docs := []string{
		`{"b":{"d":1,"c":[{"f":1,"e":{"h":2,"g":3}}]},"a":{"y":{"z":1,"x":2}},"c":[]}`,
		`{"a":{"b":{"c":{"e":1,"d":2}}},"b":[[{"z":{"y":1,"x":2},"a":[{"q":1,"p":2}]}]]}`,
		`{"a":1,"b":{"c":2,"d":{"e":3}},"f":[{"g":4,"h":5}]}`, // all in order
		`{"a":1,"b":{"c":2,"d":{"f":3,"e":4}}}`,               // in order but for a grandchild
		`[{"b":{"d":1,"c":2},"a":0},{"a":{"c":1,"b":2}}]`,
		`{"abcdefgh1":1,"abcdefgh0":2,"abcdefg":3,"abcdefgh":4,"abcdefgi":5,"abcdefg\u0000":6}`,
		`{"a\u0000":1,"a":2,"a\u0000\u0000":3,"":4,"\u0000":5}`,
		`{"a\"b":1,"a\\b":2,"a b":3,"a\nb":4,"a\"":5,"a\\":6}`,
		`{"\u00e9":1,"e":2,"\ud83d\ude00":3,"\uffff":4,"abcdefgh":{"y":1,"x":2}}`,
		`{"long name number one":1,"long name number two":{"b":1,"a":2},"long name number":3}`,
	}
	// Objects with 5, 33, 256 and 257 members, in random order, with names
	// that share long prefixes.
	rng := rand.New(rand.NewPCG(9, 10))
	for _, n := range []int{5, 33, 256, 257, 600} {
		names := make([]string, n)
		for i := range names {
			names[i] = fmt.Sprintf("%s%d", []string{"k", "prefix_", "a_very_long_prefix_", ""}[i%4], i)
		}
		rng.Shuffle(n, func(i, j int) { names[i], names[j] = names[j], names[i] })
		var b strings.Builder
		b.WriteString("{")
		for i, name := range names {
			if i > 0 {
				b.WriteString(",")
			}
			fmt.Fprintf(&b, `"%s":{"z":%d,"a":[{"y":1,"x":%d}]}`, name, i, i)
		}
		b.WriteString("}")
		docs = append(docs, b.String(), "["+b.String()+"]")
	}
	for _, doc := range docs {
		got, err := Append(nil, nil, []byte(doc))
		want, refErr := jcsRefCanonical([]byte(doc))
		if err != nil || refErr != nil || !bytes.Equal(got, want) {
			t.Errorf("%.80s...:\ngot  %.300s, %v\nwant %.300s, %v", doc, got, err, want, refErr)
		}
	}

	for _, doc := range []string{
		`{"abcdefghij":1,"abcdefghij":2}`,
		`{"abcdefgh1":1,"abcdefgh0":2,"abcdefgh1":3}`,
		`{"a\u0000":1,"a":2,"a\u0000":3}`,
		`{"a\"b":1,"a\u0022b":2}`,
		`{"x":{"k":1,"j":0,"k":2}}`,
		`[{"k":1,"k":2}]`,
		`{"x":[{"y":{"k":1,"k":2}}]}`,
		`{"\u00e9":1,"é":2}`,
		"{" + strings.Repeat(`"a":1,`, 300) + `"a":1}`,
		"{" + strings.Repeat(`"a":1,`, 40) + `"a":1}`,
	} {
		if _, err := Append(nil, nil, []byte(doc)); err == nil || !strings.Contains(err.Error(), "duplicate key") {
			t.Errorf("%.60s: %v, want a duplicate key error", doc, err)
		}
	}
}

// TestAppendCanonicalErrorKeepsDst checks that a failing call writes
// nothing to dst, its spare capacity included.
func TestAppendCanonicalErrorKeepsDst(t *testing.T) {
	for _, js := range []string{`{"b":1,"a":[1,2,"x"],"a":3}`, `{"a":"` + strings.Repeat("x", 100) + `\q"}`, `[1,2,3,1e999]`, `{"a":1} x`} {
		dst := make([]byte, 3, 1000)
		for i := range dst[:cap(dst)] {
			dst[:cap(dst)][i] = '#'
		}
		out, err := Append(dst, nil, []byte(js))
		if err == nil {
			t.Fatalf("%s: no error", js)
		}
		if len(out) != 3 || strings.Trim(string(dst[:cap(dst)]), "#") != "" {
			t.Errorf("%s: dst changed: %q", js, dst[:cap(dst)])
		}
	}
}
