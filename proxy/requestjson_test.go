package proxy

import (
	"encoding/json"
	"strings"
	"testing"
	"unicode/utf16"
)

func TestParseRequestFields(t *testing.T) {
	deep := `{"model":"m","stream":true,"x":` + strings.Repeat("[", 2000) + strings.Repeat("]", 2000) + `}`
	utf16le := func(s string) string {
		var b []byte
		for _, u := range utf16.Encode([]rune(s)) {
			b = append(b, byte(u), byte(u>>8))
		}
		return string(b)
	}
	utf16be := func(s string) string {
		var b []byte
		for _, u := range utf16.Encode([]rune(s)) {
			b = append(b, byte(u>>8), byte(u))
		}
		return string(b)
	}
	utf32be := func(s string) string {
		var b []byte
		for _, r := range s {
			b = append(b, byte(r>>24), byte(r>>16), byte(r>>8), byte(r))
		}
		return string(b)
	}
	type want struct {
		valid               bool
		model               string
		stream, usage, hasO bool
		rewritable          bool
	}
	tests := []struct {
		name string
		body string
		want want
	}{
		{"plain", `{"model":"m","stream":true}`, want{true, "m", true, false, false, true}},
		{"asks for usage", `{"model":"m","stream":true,"stream_options":{"include_usage":true}}`, want{true, "m", true, true, true, true}},
		{"stream_options null", `{"model":"m","stream":false,"stream_options":null}`, want{true, "m", false, false, true, true}},
		{"stream_options {} (include_usage defaults to true)", `{"stream":true,"stream_options":{}}`, want{true, "", true, true, true, true}},
		{"include_usage null", `{"stream":true,"stream_options":{"include_usage":null}}`, want{true, "", true, false, true, true}},
		{"include_usage twice, last wins", `{"stream":true,"stream_options":{"include_usage":false,"include_usage":true}}`, want{true, "", true, true, true, true}},
		{"stream_options twice, last wins", `{"stream":true,"stream_options":{"include_usage":true},"stream_options":{"include_usage":false}}`, want{true, "", true, false, true, true}},
		{"not a string model", `{"model":42,"stream":"yes"}`, want{true, "", true, false, false, true}},
		{"escaped model", `{"model":"caf\u00e9"}`, want{true, "café", false, false, false, true}},
		{"duplicate keys, last wins", `{"model":"a","model":"b","stream":true,"stream":false}`, want{true, "b", false, false, false, true}},
		{"escaped duplicate key", `{"model":"a","mod\u0065l":"b","str\u0065am":1}`, want{true, "b", true, false, false, true}},
		{"stream 1", `{"stream":1}`, want{true, "", true, false, false, true}},
		{"stream 1.0", `{"stream":1.0}`, want{true, "", true, false, false, true}},
		{"stream 1e0", `{"stream":1e0}`, want{true, "", true, false, false, true}},
		{"stream \"TRUE\"", `{"stream":"TRUE"}`, want{true, "", true, false, false, true}},
		{"stream \"on\"", `{"stream":"on"}`, want{true, "", true, false, false, true}},
		{"stream \"off\"", `{"stream":"off"}`, want{true, "", false, false, false, true}},
		{"stream 2 (refused by vLLM)", `{"stream":2}`, want{true, "", false, false, false, true}},
		{"stream null", `{"stream":null}`, want{true, "", false, false, false, true}},
		{"Infinity and NaN", `{"model":"m","temperature":Infinity,"top_p":-Infinity,"x":NaN,"stream":true}`, want{true, "m", true, false, false, true}},
		{"nested 2,000 deep", deep, want{true, "m", true, false, false, true}},
		{"byte order mark", "\xef\xbb\xbf" + `{"model":"m","stream":true}`, want{true, "m", true, false, false, true}},
		{"UTF-16LE", utf16le(`{"model":"m☃","stream":true}`), want{true, "m☃", true, false, false, true}},
		{"UTF-16BE with BOM", "\xfe\xff" + utf16be(`{"model":"m","stream":true}`), want{true, "m", true, false, false, true}},
		{"UTF-32BE", utf32be(`{"model":"m","stream":true}`), want{true, "m", true, false, false, true}},
		{"model not UTF-8", "{\"model\":\"\xff\xfe\"}", want{true, "\ufffd\ufffd", false, false, false, true}},
		{"lone surrogate", `{"model":"\ud800x"}`, want{true, "\ufffdx", false, false, false, true}},
		{"surrogate pair", `{"model":"\ud83d\ude00"}`, want{true, "😀", false, false, false, true}},
		{"braces in strings", `{"a":"}{][","model":"m\"}"}`, want{true, "m\"}", false, false, false, true}},
		{"stream_options an array (refused by vLLM)", `{"stream":true,"stream_options":[]}`, want{true, "", true, false, true, false}},
		{"include_usage not a bool", `{"stream":true,"stream_options":{"include_usage":"maybe"}}`, want{true, "", true, false, true, false}},
		{"continuous_usage_stats not a bool", `{"stream":true,"stream_options":{"continuous_usage_stats":2}}`, want{true, "", true, false, true, false}},
		{"stream_options not JSON inside", `{"stream":true,"stream_options":{"include_usage":false, !!}}`, want{true, "", true, false, true, false}},
		{"UTF-16 with an odd byte", utf16le(`{"stream":true}`) + "x", want{true, "", true, false, false, false}},
		{"array", `[1,2]`, want{}},
		{"unterminated", `{"model":"m"`, want{}},
		{"extra data", `{"model":"m"} {}`, want{}},
		{"empty", ``, want{}},
		{"not json", `not json`, want{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var scratch []byte
			f := parseRequestFields([]byte(tt.body), &scratch, "")
			got := want{f.valid, f.model, f.stream, f.includeUsage, f.hasStreamOptions, f.rewritable}
			if got != tt.want {
				t.Errorf("parseRequestFields(%.60q) = %+v, want %+v", tt.body, got, tt.want)
			}
		})
	}
}

func TestWithIncludeUsage(t *testing.T) {
	tests := []struct{ in, want string }{
		// Spliced: the client's bytes are kept as they are.
		{`{"model":"m","stream":true}`, `{"model":"m","stream":true,"stream_options":{"include_usage":true}}`},
		{"{\"stream\":true }\n", "{\"stream\":true ,\"stream_options\":{\"include_usage\":true}}\n"},
		{`{ }`, `{ "stream_options":{"include_usage":true}}`},
		{`{"a":"}","stream":true}`, `{"a":"}","stream":true,"stream_options":{"include_usage":true}}`},
		// Rebuilt: every stream_options member is replaced by one at the end.
		{`{"stream":true,"stream_options":{"include_usage":false}}`, `{"stream":true,"stream_options":{"include_usage":true}}`},
		{`{"stream":true,"stream_options":null}`, `{"stream":true,"stream_options":{"include_usage":true}}`},
		{`{"stream":true,"stream_options":{"continuous_usage_stats":true,"include_usage":false}}`,
			`{"stream":true,"stream_options":{"include_usage":true}}`},
		{`{"stream_options":{"include_usage":true},"stream":1,"stream_options":{"include_usage":false,"x":[1, 2]} , "n": 1.50}`,
			`{"stream":1,"n": 1.50,"stream_options":{"x":[1, 2],"include_usage":true}}`},
	}
	for _, tt := range tests {
		var scratch []byte
		f := parseRequestFields([]byte(tt.in), &scratch, "")
		got := string(withIncludeUsage(nil, f))
		if got != tt.want {
			t.Errorf("withIncludeUsage(%s) = %s, want %s", tt.in, got, tt.want)
		}
		if g := parseRequestFields([]byte(got), &scratch, ""); !g.valid || !g.includeUsage {
			t.Errorf("withIncludeUsage(%s) = %s, which does not ask for usage", tt.in, got)
		}
	}
}

// FuzzRequestFields checks the request reader against encoding/json, which
// like Python's json keeps the last of duplicate keys and replaces invalid
// UTF-8 and lone surrogates: every body it reads as an object is valid, with
// the same model and stream; and the include_usage rewrite of a body that
// may be rewritten is JSON that asks for usage, with every other member
// unchanged.
func FuzzRequestFields(f *testing.F) {
	for _, s := range []string{`{"model":"m","stream":true}`, `{"stream":true,"stream_options":{"include_usage":false}}`,
		`{"stream":true,"stream_options":null}`, `{}`, `{"a":"}"}`, `[`, `{"model":"\u0000"}`,
		`{"model":"a","model":"b","stream":"yes","stream":1}`, `{"mod\u0065l":"x","stream_options":{"x":1,"x":2}}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		var scratch []byte
		fields := parseRequestFields(body, &scratch, "m")
		var ref map[string]any
		if json.Unmarshal(body, &ref) == nil && ref != nil && len(body) > 0 && body[0] != 0xef {
			if !fields.valid {
				t.Fatalf("%q is a JSON object, read as invalid", body)
			}
			if m, ok := ref["model"].(string); ok && fields.model != m {
				t.Fatalf("%q: model %q, encoding/json %q", body, fields.model, m)
			}
			if b, ok := ref["stream"].(bool); ok && fields.stream != b {
				t.Fatalf("%q: stream %v, encoding/json %v", body, fields.stream, b)
			}
		}
		if !fields.valid || !fields.rewritable {
			return // forwarded unchanged
		}
		out := withIncludeUsage(nil, fields)
		if again := parseRequestFields(out, &scratch, ""); !again.valid || !again.includeUsage || again.model != fields.model {
			t.Fatalf("rewrite of %q is %q: %+v", body, out, again)
		}
		var before, after map[string]any
		if json.Unmarshal(fields.text, &before) != nil {
			return
		}
		if err := json.Unmarshal(out, &after); err != nil {
			t.Fatalf("rewrite of %q is not JSON: %q: %v", body, out, err)
		}
		so, _ := after["stream_options"].(map[string]any)
		if so == nil || so["include_usage"] != true {
			t.Fatalf("rewrite of %q does not ask for usage: %q", body, out)
		}
		for k, v := range before {
			if k == "stream_options" {
				continue
			}
			if b1, _ := json.Marshal(v); string(b1) != mustMarshal(after[k]) {
				t.Fatalf("field %q changed: %q -> %q", k, body, out)
			}
		}
	})
}

func mustMarshal(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}
