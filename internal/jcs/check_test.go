package jcs

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestJCSIsCanonical(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want bool
	}{
		{`{}`, true},
		{`[]`, true},
		{`{"a":1,"b":[true,false,null],"c":{"d":"e"}}`, true},
		{`{"":0,"a":-1.5}`, true},
		{`"x\u001fy\n\"\\ é 😀 \u007f"`, false}, // \u007f is written as itself
		{"\"x\\u001fy\\n\\\"\\\\ é 😀 \x7f\"", true},
		{`0.000001`, true},
		{`0.0000001`, false}, // 1e-7
		{`123456789012345`, true},
		{`1234567890123456`, false}, // more than 15 digits: not checked here
		{`1.5e3`, false},
		{`1.50`, false},
		{`-0`, false},
		{`0`, true},
		{`-0.5`, true},
		{`01`, false},
		{`{"b":1,"a":2}`, false},
		{`{"a":1,"a":1}`, false},
		{`{"a":1, "b":2}`, false},
		{` {}`, false},
		{`{}` + "\n", false},
		{`"\/"`, false},
		{`"\u000a"`, false},
		{`"\u001F"`, false},
		{`"\b"`, true},
		{"\"\xff\"", false},
		{"\"\xed\xa0\x80\"", false}, // an encoded surrogate
		{`{"é":1}`, false},          // not checked here
		{`tru`, false},
		{`[1,]`, false},
		{`{"a":1,}`, false},
		{`[1 ]`, false},
		{strings.Repeat(`[`, jcsMaxDepth+1) + strings.Repeat(`]`, jcsMaxDepth+1), false},
	} {
		got := jcsIsCanonical([]byte(tc.in), nil, nil)
		if got != tc.want {
			t.Errorf("jcsIsCanonical(%q) = %v, want %v", tc.in, got, tc.want)
		}
		if got {
			// Canonicalizing it the long way gives it back.
			c := new(jcsState)
			out, err := c.canonical(nil, []byte(tc.in))
			if err != nil || !bytes.Equal(out, []byte(tc.in)) {
				t.Errorf("%q is called canonical, but canonicalizes to %q (%v)", tc.in, out, err)
			}
		}
	}
}

// The expected outputs of the RFC 8785 fixtures are recognized as canonical
// but for those jcsIsCanonical leaves to Append.
func TestJCSIsCanonicalFixtures(t *testing.T) {
	notChecked := map[string]string{
		"french":        "non-ASCII names",
		"rfc8785-3.2.2": "numbers in exponent form, 16 digits",
		"rfc8785-3.2.3": "non-ASCII and escaped names",
		"structures":    "an escaped name",
		"weird":         "non-ASCII and escaped names",
	}
	outs, _ := filepath.Glob("testdata/jcs/*.out.json")
	if len(outs) == 0 {
		t.Fatal("no fixtures")
	}
	for _, name := range outs {
		b, err := os.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		b = bytes.TrimSuffix(b, []byte("\n"))
		c := new(jcsState)
		if out, err := c.canonical(nil, b); err != nil || !bytes.Equal(out, b) {
			t.Fatalf("%s is not canonical: %q (%v)", name, out, err)
		}
		fixture := strings.TrimSuffix(filepath.Base(name), ".out.json")
		_, skip := notChecked[fixture]
		if got := jcsIsCanonical(b, nil, nil); got == skip {
			t.Errorf("%s: jcsIsCanonical = %v (%s)", fixture, got, notChecked[fixture])
		}
	}
}

func TestCanonicalMembers(t *testing.T) {
	names := []string{"id", "type", "log", "missing"}
	for _, in := range []string{
		`{"id":"a","log":{"seq":1},"type":"t"}`,   // canonical: js itself
		`{"type":"t", "log":{"seq":1}, "id":"a"}`, // not: canonicalized
		`{"type":"t","log":{"seq":1.0},"id":"a"}`, // not: the value is canonicalized
	} {
		// Checked in place first or not, the same answer.
		for _, likely := range []bool{true, false} {
			var ends [4]int
			canon, vals, err := AppendMembers(nil, []byte(in), names, nil, ends[:], likely)
			if err != nil {
				t.Fatal(err)
			}
			if string(canon) != `{"id":"a","log":{"seq":1},"type":"t"}` {
				t.Errorf("%s (likely canonical %v): canonical %s", in, likely, canon)
			}
			if got := string(vals); got != `"a""t"{"seq":1}` || ends != [4]int{3, 6, 15, 15} {
				t.Errorf("%s (likely canonical %v): values %q ends %v", in, likely, got, ends)
			}
		}
	}
	if _, _, err := AppendMembers(nil, []byte(`{"a":1,"a":2}`), names, nil, make([]int, 4), true); err == nil {
		t.Error("duplicate key accepted")
	}
}
