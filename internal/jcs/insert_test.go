package jcs

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/valyala/fastjson"
)

// appendInsertedSlowly is what AppendInserted must give: js with the member
// added after its own, canonicalized whole.
func appendInsertedSlowly(p *fastjson.Parser, js []byte, name string, value []byte) ([]byte, error) {
	s := append(bytes.Clone(js[:len(js)-1]), []byte(`,"`+name+`":`)...)
	if len(bytes.TrimSpace(js)) == 2 {
		s = append(bytes.Clone(js[:len(js)-1]), []byte(`"`+name+`":`)...)
	}
	s = append(append(s, value...), '}')
	return Append(nil, p, s)
}

func TestAppendInserted(t *testing.T) {
	value := []byte(`{"origin":"o","prev":"","seq":0}`)
	var p fastjson.Parser
	for _, tc := range []struct {
		js   string
		want string // "": not canonical or already named; the caller canonicalizes
	}{
		{`{}`, `{"log":{"origin":"o","prev":"","seq":0}}`},
		{`{"a":1}`, `{"a":1,"log":{"origin":"o","prev":"","seq":0}}`},
		{`{"z":1}`, `{"log":{"origin":"o","prev":"","seq":0},"z":1}`},
		{`{"a":{"z":1},"lo":2,"log_":3,"m":[{"log":1}]}`, `{"a":{"z":1},"lo":2,"log":{"origin":"o","prev":"","seq":0},"log_":3,"m":[{"log":1}]}`},
		{`{"LOG":1,"l":"}","logs":"\"log\":"}`, `{"LOG":1,"l":"}","log":{"origin":"o","prev":"","seq":0},"logs":"\"log\":"}`},
		{`{"log":1}`, ""},        // already has one: Append refuses the duplicate
		{`{"b":1,"a":2}`, ""},    // not sorted
		{`{"a": 1}`, ""},         // whitespace
		{`{"a":1.0}`, ""},        // a number not in canonical form
		{`{"a":"\u0041"}`, ""},   // an escape JCS does not write
		{`[1]`, ""},              // not an object
		{`{"a":1}x`, ""},         // trailing bytes
		{`{"a":1`, ""},           // cut short
		{"{\"a\":\"\xff\"}", ""}, // not UTF-8
		{`{"\u00e9":1}`, ""},     // a name the check does not compare: left to Append
	} {
		got, ok := AppendInserted([]byte("prefix"), []byte(tc.js), "log", value)
		if tc.want == "" {
			if ok || string(got) != "prefix" {
				t.Errorf("%s: inserted as %s, want it left to Append", tc.js, got)
			}
			continue
		}
		if !ok || string(got) != "prefix"+tc.want {
			t.Errorf("%s: %s, %v; want %s", tc.js, got, ok, tc.want)
		}
		slow, err := appendInsertedSlowly(&p, []byte(tc.js), "log", value)
		if err != nil || !bytes.Equal(slow, []byte(tc.want)) {
			t.Errorf("%s: the slow way gives %s, %v", tc.js, slow, err)
		}
	}
	if _, ok := AppendInserted(nil, []byte(`{"a":1}`), "log", []byte(`{"b":1, "a":2}`)); ok {
		t.Error("a value not in canonical form was inserted")
	}
}

// FuzzAppendInserted: whatever AppendInserted accepts, it gives what
// canonicalizing the object with the member added gives; and it accepts
// every canonical object without the member that the check knows.
func FuzzAppendInserted(f *testing.F) {
	ins, _ := filepath.Glob("testdata/jcs/*.out.json")
	for _, in := range ins {
		js, err := os.ReadFile(in)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(bytes.TrimSpace(js), "log")
	}
	f.Add([]byte(`{"a":1,"z":[true,null]}`), "m")
	f.Add([]byte(`{}`), "a")
	var p fastjson.Parser
	value := []byte(`{"origin":"gpu/1","prev":"ab","seq":7}`)
	f.Fuzz(func(t *testing.T, js []byte, name string) {
		if name == "" || strings.ContainsAny(name, "\"\\") || strings.IndexFunc(name, func(r rune) bool { return r < 0x20 || r >= 0x7f }) >= 0 {
			return
		}
		got, ok := AppendInserted(nil, js, name, value)
		if len(js) < 2 || js[0] != '{' {
			if ok {
				t.Fatalf("%q: inserted into a non-object: %q", js, got)
			}
			return
		}
		slow, err := appendInsertedSlowly(&p, js, name, value)
		if ok && (err != nil || !bytes.Equal(got, slow)) {
			t.Fatalf("%q + %q: %q; canonicalized whole: %q, %v", js, name, got, slow, err)
		}
		if !ok && err == nil && jcsIsCanonical(js, nil, nil) && !bytes.Contains(js, []byte(`"`+name+`":`)) {
			t.Fatalf("%q + %q: left to Append, which gives %q", js, name, slow)
		}
	})
}
