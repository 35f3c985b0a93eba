package proxy

import (
	"encoding/json"
	"testing"

	"github.com/valyala/fastjson"
)

func TestParseRequestFields(t *testing.T) {
	tests := []struct {
		body string
		want requestFields
	}{
		{`{"model":"m","stream":true}`, requestFields{valid: true, model: "m", stream: true}},
		{`{"model":"m","stream":true,"stream_options":{"include_usage":true}}`,
			requestFields{valid: true, model: "m", stream: true, includeUsage: true, hasStreamOptions: true}},
		{`{"model":"m","stream":false,"stream_options":null}`, requestFields{valid: true, model: "m", hasStreamOptions: true}},
		{`{"model":42,"stream":"yes"}`, requestFields{valid: true}},
		{`{"model":"caf\u00e9"}`, requestFields{valid: true, model: "café"}},
		{`[1,2]`, requestFields{}},
		{`{"model":"m"`, requestFields{}},
		{``, requestFields{}},
		{`not json`, requestFields{}},
	}
	var p fastjson.Parser
	for _, tt := range tests {
		if got := parseRequestFields(&p, []byte(tt.body), ""); got != tt.want {
			t.Errorf("parseRequestFields(%s) = %+v, want %+v", tt.body, got, tt.want)
		}
	}
}

func TestWithIncludeUsage(t *testing.T) {
	tests := []struct{ in, want string }{
		// Spliced: the client's bytes are kept as they are.
		{`{"model":"m","stream":true}`, `{"model":"m","stream":true,"stream_options":{"include_usage":true}}`},
		{"{\"stream\":true }\n", "{\"stream\":true ,\"stream_options\":{\"include_usage\":true}}\n"},
		{`{ }`, `{ "stream_options":{"include_usage":true}}`},
		// Re-encoded.
		{`{"stream":true,"stream_options":{"include_usage":false}}`, `{"stream":true,"stream_options":{"include_usage":true}}`},
		{`{"stream":true,"stream_options":null}`, `{"stream":true,"stream_options":{"include_usage":true}}`},
		{`{"stream":true,"stream_options":{"continuous_usage_stats":true}}`,
			`{"stream":true,"stream_options":{"continuous_usage_stats":false,"include_usage":true}}`},
	}
	var p fastjson.Parser
	for _, tt := range tests {
		f := parseRequestFields(&p, []byte(tt.in), "")
		got := string(withIncludeUsage(nil, &p, []byte(tt.in), f))
		if got != tt.want {
			t.Errorf("withIncludeUsage(%s) = %s, want %s", tt.in, got, tt.want)
		}
	}
}

func TestScanResponseObject(t *testing.T) {
	tests := []struct {
		name      string
		in        string
		want      usageInfo
		usageOnly bool
	}{
		{"usage chunk", `{"id":"x","choices":[],"usage":{"prompt_tokens":3,"total_tokens":10,"completion_tokens":7}}`,
			usageInfo{promptTokens: 3, completionTokens: 7, hasUsage: true}, true},
		{"finish chunk", `{"choices":[{"index":0,"delta":{"content":"a"},"finish_reason":"stop","stop_reason":null}]}`,
			usageInfo{finishReason: "stop"}, false},
		{"continuous usage chunk keeps its choice", `{"choices":[{"index":0,"delta":{},"finish_reason":null}],"usage":{"prompt_tokens":1,"completion_tokens":2}}`,
			usageInfo{promptTokens: 1, completionTokens: 2, hasUsage: true}, false},
		{"nested error", `{"error":{"message":"boom","type":"InternalServerError","param":null,"code":500}}`,
			usageInfo{isError: true, errorType: "InternalServerError"}, false},
		{"flat error", `{"object":"error","message":"boom","type":"BadRequestError","param":null,"code":400}`,
			usageInfo{isError: true, errorType: "BadRequestError"}, false},
		{"second choice's finish reason is not the first's", `{"choices":[{"index":1,"finish_reason":"length"}]}`, usageInfo{}, false},
		{"not an object", `[]`, usageInfo{}, false},
	}
	var p fastjson.Parser
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var u usageInfo
			if got := scanResponseObject(&p, []byte(tt.in), &u); got != tt.usageOnly || u != tt.want {
				t.Errorf("got usageOnly=%v %+v, want %v %+v", got, u, tt.usageOnly, tt.want)
			}
		})
	}
}

func TestScanUsageTail(t *testing.T) {
	var p fastjson.Parser
	var u usageInfo
	tail := []byte(`0.25,0.5]}],"usage":{"prompt_tokens":12,"total_tokens":12,"completion_tokens":0,"prompt_tokens_details":{"x":"}"}}}`)
	scanUsageTail(&p, tail, &u)
	if !u.hasUsage || u.promptTokens != 12 {
		t.Errorf("got %+v", u)
	}
}

// FuzzRequestFields checks that any body is handled without panic, and that
// the include_usage rewrite of a valid body is valid JSON asking for usage,
// with its other fields unchanged.
func FuzzRequestFields(f *testing.F) {
	for _, s := range []string{`{"model":"m","stream":true}`, `{"stream":true,"stream_options":{"include_usage":false}}`,
		`{"stream":true,"stream_options":null}`, `{}`, `{"a":"}"}`, `[`, `{"model":"\u0000"}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		var p fastjson.Parser
		fields := parseRequestFields(&p, body, "m")
		if !fields.valid {
			return
		}
		out := withIncludeUsage(nil, &p, body, fields)
		var before, after map[string]any
		if err := json.Unmarshal(out, &after); err != nil {
			// encoding/json is stricter than fastjson about some inputs
			// (invalid UTF-8, duplicate handling); only a body it accepts
			// must stay acceptable.
			if json.Unmarshal(body, &before) == nil {
				t.Fatalf("rewrite of %q is not JSON: %q: %v", body, out, err)
			}
			return
		}
		so, _ := after["stream_options"].(map[string]any)
		if so == nil || so["include_usage"] != true {
			t.Fatalf("rewrite of %q does not ask for usage: %q", body, out)
		}
		if json.Unmarshal(body, &before) == nil {
			for k, v := range before {
				if k == "stream_options" {
					continue
				}
				if b1, _ := json.Marshal(v); string(b1) != mustMarshal(after[k]) {
					t.Fatalf("field %q changed: %q -> %q", k, body, out)
				}
			}
		}
	})
}

func mustMarshal(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

// FuzzResponseObject checks that any SSE data or response body is scanned
// without panic, and that a usage-only verdict implies an empty choices
// array and a usage object.
func FuzzResponseObject(f *testing.F) {
	for _, s := range []string{`{"choices":[],"usage":{"prompt_tokens":1,"completion_tokens":2}}`,
		`{"error":{"type":"X"}}`, `{"object":"error","type":"Y"}`, `{"choices":[{"index":0,"finish_reason":"stop"}]}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var p fastjson.Parser
		var u usageInfo
		usageOnly := scanResponseObject(&p, b, &u)
		if usageOnly && !u.hasUsage {
			t.Fatalf("usage-only without usage: %q", b)
		}
		var tail usageInfo
		scanUsageTail(&p, b, &tail)
		_ = jsonObjectPrefix(b)
	})
}
