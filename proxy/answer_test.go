package proxy

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"testing"
)

func known(n int64) optInt { return optInt{n, true} }

func TestReadAnswerObject(t *testing.T) {
	tests := []struct {
		name      string
		kind      apiKind
		in        string
		want      usageInfo
		usageOnly bool
	}{
		{"usage chunk", apiOpenAI, `{"id":"x","choices":[],"usage":{"prompt_tokens":3,"total_tokens":10,"completion_tokens":7}}`,
			usageInfo{input: known(3), output: known(7)}, true},
		{"finish chunk", apiOpenAI, `{"choices":[{"index":0,"delta":{"content":"a"},"finish_reason":"stop","stop_reason":null}]}`,
			usageInfo{finishReason: "stop"}, false},
		{"continuous usage chunk keeps its choice", apiOpenAI, `{"choices":[{"index":0,"delta":{},"finish_reason":null}],"usage":{"prompt_tokens":1,"completion_tokens":2}}`,
			usageInfo{input: known(1), output: known(2)}, false},
		{"nested error", apiOpenAI, `{"error":{"message":"boom","type":"InternalServerError","param":null,"code":500}}`,
			usageInfo{isError: true, errorType: "InternalServerError"}, false},
		{"flat error", apiOpenAI, `{"object":"error","message":"boom","type":"BadRequestError","param":null,"code":400}`,
			usageInfo{isError: true, errorType: "BadRequestError"}, false},
		{"auth middleware's error", apiOpenAI, `{"error":"Unauthorized"}`, usageInfo{isError: true}, false},
		{"error null is none", apiOpenAI, `{"error":null,"usage":{"prompt_tokens":1,"completion_tokens":0}}`,
			usageInfo{input: known(1), output: known(0)}, false},
		{"second choice's finish reason is not the first's", apiOpenAI, `{"choices":[{"index":1,"finish_reason":"length"},{"index":0,"finish_reason":"stop"}]}`,
			usageInfo{finishReason: "stop"}, false},
		{"not an object", apiOpenAI, `[]`, usageInfo{}, false},
		{"not JSON", apiOpenAI, `{"usage":{"prompt_tokens":1,"completion_tokens":2}`, usageInfo{}, false},
		// Unknown is not 0.
		{"rerank usage: no completion count", apiOpenAI, `{"id":"r","model":"m","usage":{"prompt_tokens":12,"total_tokens":12},"results":[]}`,
			usageInfo{input: known(12)}, false},
		{"transcription usage: a duration, no tokens", apiOpenAI, `{"text":"hi","usage":{"type":"duration","seconds":3}}`, usageInfo{audioSeconds: 3, hasAudio: true}, false},
		{"seconds without the duration type", apiOpenAI, `{"usage":{"seconds":3}}`, usageInfo{}, false},
		{"a duration that is not a number", apiOpenAI, `{"usage":{"type":"duration","seconds":"3"}}`, usageInfo{}, false},
		{"usage null", apiOpenAI, `{"usage":null}`, usageInfo{}, false},
		{"a count that is not a count", apiOpenAI, `{"usage":{"prompt_tokens":-1,"completion_tokens":2.5}}`, usageInfo{}, false},
		{"a count as a string", apiOpenAI, `{"usage":{"prompt_tokens":"5","completion_tokens":1e2}}`, usageInfo{}, false},
		{"duplicate usage, last wins", apiOpenAI, `{"usage":{"prompt_tokens":1,"completion_tokens":2},"usage":{"prompt_tokens":3}}`,
			usageInfo{input: known(3)}, false},
		{"duplicate usage, last is null", apiOpenAI, `{"usage":{"prompt_tokens":1,"completion_tokens":2},"usage":null}`, usageInfo{}, false},
		{"duplicate count, last wins", apiOpenAI, `{"usage":{"prompt_tokens":1,"prompt_tokens":4,"completion_tokens":2}}`,
			usageInfo{input: known(4), output: known(2)}, false},
		{"escaped member names", apiOpenAI, `{"us\u0061ge":{"prompt_tokens":1,"completion_tokens":2}}`,
			usageInfo{input: known(1), output: known(2)}, false},
		{"OpenAI names in a Responses answer", apiResponses, `{"usage":{"prompt_tokens":1,"completion_tokens":2}}`, usageInfo{}, false},

		{"responses body", apiResponses, `{"id":"resp_1","object":"response","status":"completed","usage":{"input_tokens":5,"input_tokens_details":{"cached_tokens":0},"output_tokens":9,"output_tokens_details":{"reasoning_tokens":0},"total_tokens":14}}`,
			usageInfo{input: known(5), output: known(9), finishReason: "completed"}, false},
		{"responses body cut at max tokens", apiResponses, `{"status":"incomplete","incomplete_details":{"reason":"max_output_tokens"},"usage":{"input_tokens":5,"output_tokens":16}}`,
			usageInfo{input: known(5), output: known(16), finishReason: "max_output_tokens"}, false},
		{"responses created event", apiResponses, `{"type":"response.created","sequence_number":0,"response":{"id":"r","status":"in_progress","usage":null}}`,
			usageInfo{}, false},
		{"responses completed event", apiResponses, `{"type":"response.completed","sequence_number":9,"response":{"status":"completed","usage":{"input_tokens":5,"output_tokens":9,"total_tokens":14}}}`,
			usageInfo{input: known(5), output: known(9), finishReason: "completed", ended: true}, false},
		{"responses failed event", apiResponses, `{"type":"response.failed","response":{"status":"failed","error":{"code":"server_error"},"usage":null}}`,
			usageInfo{isError: true, finishReason: "failed", ended: true}, false},
		{"responses error event", apiResponses, `{"type":"error","code":"x","message":"m","sequence_number":3}`,
			usageInfo{isError: true}, false},

		{"messages body", apiMessages, `{"id":"msg_1","type":"message","role":"assistant","content":[],"model":"m","stop_reason":"end_turn","stop_sequence":null,"usage":{"input_tokens":7,"output_tokens":3}}`,
			usageInfo{input: known(7), output: known(3), finishReason: "end_turn"}, false},
		{"messages start", apiMessages, `{"type":"message_start","message":{"id":"msg_1","stop_reason":null,"usage":{"input_tokens":7,"output_tokens":0}}}`,
			usageInfo{input: known(7), output: known(0)}, false},
		{"messages delta", apiMessages, `{"type":"message_delta","delta":{"stop_reason":"max_tokens","stop_sequence":null},"usage":{"output_tokens":16}}`,
			usageInfo{output: known(16), finishReason: "max_tokens"}, false},
		{"messages stop", apiMessages, `{"type":"message_stop"}`, usageInfo{ended: true}, false},
		{"messages error", apiMessages, `{"type":"error","error":{"type":"overloaded_error","message":"m"}}`,
			usageInfo{isError: true, errorType: "overloaded_error"}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var s fieldScanner
			var o answerObject
			var u usageInfo
			if got := readAnswerObject(&s, &o, tt.kind, []byte(tt.in), &u); got != tt.usageOnly || u != tt.want {
				t.Errorf("got usageOnly=%v %+v, want %v %+v", got, u, tt.usageOnly, tt.want)
			}
		})
	}
}

// TestMessagesStreamKeepsBothCounts: message_start says the input count,
// message_delta the output count; neither forgets the other.
func TestMessagesStreamKeepsBothCounts(t *testing.T) {
	var s fieldScanner
	var o answerObject
	var u usageInfo
	for _, ev := range []string{
		`{"type":"message_start","message":{"usage":{"input_tokens":7,"output_tokens":1}}}`,
		`{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"hi"}}`,
		`{"type":"message_delta","delta":{"stop_reason":"end_turn"},"usage":{"output_tokens":12}}`,
		`{"type":"message_stop"}`,
	} {
		readAnswerObject(&s, &o, apiMessages, []byte(ev), &u)
	}
	want := usageInfo{input: known(7), output: known(12), finishReason: "end_turn", ended: true}
	if u != want {
		t.Errorf("got %+v, want %+v", u, want)
	}
}

// scanInPieces reads b with the answer spec, in the pieces sizes cut it
// into (whole when sizes is empty).
func scanInPieces(b []byte, sizes []byte) (answerObject, bool) {
	var s fieldScanner
	var o answerObject
	o.reset()
	s.reset(answerSpec, &o)
	for i := 0; len(b) > 0; i++ {
		n := len(b)
		if len(sizes) > 0 {
			n = min(int(sizes[i%len(sizes)])+1, len(b))
		}
		s.write(b[:n])
		b = b[n:]
	}
	return o, s.close()
}

// TestFieldScannerAgainstEncodingJSON: on valid JSON, what the scanner
// reads is what a whole-body parse gives (encoding/json keeps the last of
// duplicate members, as Python's json does).
func TestFieldScannerAgainstEncodingJSON(t *testing.T) {
	big := strings.Repeat(`{"index":3,"relevance_score":0.5,"document":{"text":"a \"usage\" {[ }"}},`, 20000)
	bodies := []string{
		`{"id":"r","model":"m","usage":{"prompt_tokens":12,"total_tokens":12},"results":[` + big + `{}]}`,
		`{"choices":[{"index":0,"message":{"content":"x"},"finish_reason":"length"}],"usage":{"prompt_tokens":2,"completion_tokens":3},"prompt_token_ids":[` + strings.Repeat("1,", 300000) + `1]}`,
		` {"usage" : {"prompt_tokens" : 2 , "completion_tokens" : 0 } } `,
		`{"a":[[],{},[{}],""],"usage":{"completion_tokens":5,"prompt_tokens":7}}`,
	}
	for i, b := range bodies {
		for _, sizes := range [][]byte{nil, {0}, {6, 200, 1}, {255}} {
			o, ok := scanInPieces([]byte(b), sizes)
			if !ok {
				t.Fatalf("body %d (%d bytes) split %v: read as malformed", i, len(b), sizes)
			}
			var ref struct {
				Usage *struct {
					Prompt     *int64 `json:"prompt_tokens"`
					Completion *int64 `json:"completion_tokens"`
				} `json:"usage"`
				Choices []struct {
					FinishReason string `json:"finish_reason"`
				} `json:"choices"`
			}
			if err := json.Unmarshal([]byte(b), &ref); err != nil {
				t.Fatal(err)
			}
			got := fmt.Sprint(o.usage, o.prompt, o.completion, o.finishReason)
			want := fmt.Sprint(ref.Usage != nil, optOf(ref.Usage, true), optOf(ref.Usage, false), firstFinish(ref.Choices))
			if got != want {
				t.Errorf("body %d split %v: scanner %s, encoding/json %s", i, sizes, got, want)
			}
		}
	}
}

func optOf(u *struct {
	Prompt     *int64 `json:"prompt_tokens"`
	Completion *int64 `json:"completion_tokens"`
}, prompt bool) optInt {
	if u == nil {
		return optInt{}
	}
	p := u.Completion
	if prompt {
		p = u.Prompt
	}
	if p == nil || *p < 0 {
		return optInt{}
	}
	return known(*p)
}

func firstFinish(c []struct {
	FinishReason string `json:"finish_reason"`
}) string {
	if len(c) == 0 {
		return ""
	}
	return c[0].FinishReason
}

// TestFieldScannerRefusesMalformedJSON: the structure of the whole value
// is checked, and every scalar outside containers no spec node matches
// (inside those only strings and brackets are followed: `{"a":[1,]}` passes).
func TestFieldScannerRefusesMalformedJSON(t *testing.T) {
	for _, b := range []string{
		``, `{`, `{"usage":}`, `{"usage" {}}`, `{"a":1,}`, `{"a":1 "b":2}`, `{"usage":[1,]}`, `{"a":tru}`,
		`{"a":01}`, `{"a":1.}`, `{"a":"x` + "\n" + `"}`, `{"a":1}}`, `{"a":1} x`, `{"a":1]`, `{,}`, `[1 2]`, `{"a":-}`,
	} {
		if _, ok := scanInPieces([]byte(b), nil); ok {
			t.Errorf("%q read as well-formed", b)
		}
	}
	for _, b := range []string{`{}`, `[]`, `1`, `"s"`, `{"a":NaN,"b":-Infinity,"c":1e-5,"d":-0.5E+3}`, "\t{ }\n"} {
		if _, ok := scanInPieces([]byte(b), nil); !ok {
			t.Errorf("%q read as malformed", b)
		}
	}
}

// FuzzFieldScanner: split invariance, and agreement with a whole-body
// parse. However a body is cut into pieces, the scanner reads the same
// members and the same verdict; on a body encoding/json parses, it reads
// the usage encoding/json finds.
func FuzzFieldScanner(f *testing.F) {
	for _, s := range []string{`{"choices":[],"usage":{"prompt_tokens":1,"completion_tokens":2}}`,
		`{"error":{"type":"X"}}`, `{"object":"error","type":"Y"}`, `{"choices":[{"index":0,"finish_reason":"stop"}]}`,
		`{"type":"message_delta","delta":{"stop_reason":"end_turn"},"usage":{"output_tokens":3}}`,
		`{"usage":{"prompt_tokens":1},"results":[{"a":"\"}]"}]}`, `{"us\u0061ge":{"prompt_tokens":1}}`,
		`{"x":[1,{"a":[-0.5e3,"\u00e9"]}],"usage":{"prompt_tokens":1}}`, `{"x":[1},"usage":{"prompt_tokens":1}}`} {
		f.Add([]byte(s), []byte{3, 0, 9})
	}
	f.Fuzz(func(t *testing.T, b, sizes []byte) {
		whole, okWhole := scanInPieces(b, nil)
		split, okSplit := scanInPieces(b, sizes)
		if okWhole != okSplit || whole != split {
			t.Fatalf("%q: whole %v %+v, split %v %+v", b, okWhole, whole, okSplit, split)
		}
		usage, prompt, completion, isObject := referenceUsage(b)
		// The converse: an object the scanner finds well-formed is one
		// encoding/json parses (the grammars differ only in Python's NaN
		// and Infinity, left out here).
		if okWhole && !isObject && !bytes.ContainsAny(b, "NI") && bytes.HasPrefix(bytes.TrimLeft(b, " \t\r\n"), []byte("{")) {
			t.Fatalf("%q: the scanner reads a body encoding/json refuses", b)
		}
		if !isObject {
			return
		}
		if !okWhole {
			t.Fatalf("%q: encoding/json parses it, the scanner calls it malformed", b)
		}
		if whole.usage != usage || (usage && (whole.prompt != prompt || whole.completion != completion)) {
			t.Fatalf("%q: scanner %v %v %v, encoding/json %v %v %v", b, whole.usage, whole.prompt, whole.completion, usage, prompt, completion)
		}
	})
}

// referenceUsage reads the top-level usage object of b with encoding/json
// into maps, whose keys, unlike struct fields, match exactly (as Python's
// do) and keep the last of duplicates. isObject is false when b is not one
// JSON object.
func referenceUsage(b []byte) (usage bool, prompt, completion optInt, isObject bool) {
	d := json.NewDecoder(bytes.NewReader(b))
	d.UseNumber()
	var top map[string]any
	if d.Decode(&top) != nil || top == nil || d.InputOffset() != int64(len(bytes.TrimRight(b, " \t\r\n"))) {
		return false, optInt{}, optInt{}, false
	}
	u, ok := top["usage"].(map[string]any)
	if !ok {
		return false, optInt{}, optInt{}, true
	}
	count := func(name string) optInt {
		n, ok := u[name].(json.Number)
		if !ok {
			return optInt{}
		}
		v, err := strconv.ParseInt(string(n), 10, 64)
		if err != nil || v < 0 {
			return optInt{}
		}
		return known(v)
	}
	return true, count("prompt_tokens"), count("completion_tokens"), true
}

// FuzzSSEEventReader: an event read in pieces by sseEventReader gives what
// nextSSEEvent and readAnswerObject give for it whole.
func FuzzSSEEventReader(f *testing.F) {
	f.Add([]byte("data: {\"usage\":{\"prompt_tokens\":1,\"completion_tokens\":2}}\n\n"), []byte{2})
	f.Add([]byte("event: x\r\ndata: {\"usage\":\r\ndata: {\"prompt_tokens\":1}}\r\n\r\n"), []byte{0, 7})
	f.Add([]byte(": comment\ndata\ndata:{\"error\":{}}\r\r"), []byte{1})
	f.Fuzz(func(t *testing.T, stream, sizes []byte) {
		var scratch []byte
		ev, ok := nextSSEEvent(stream, &scratch)
		if !ok {
			return
		}
		var s fieldScanner
		var o answerObject
		var want usageInfo
		wantOK := false
		if ev.hasData {
			o.reset()
			s.reset(answerSpec, &o)
			s.write(ev.data)
			if wantOK = s.close(); wantOK {
				want.add(apiOpenAI, &o)
			}
		}

		var r sseEventReader
		var s2 fieldScanner
		var o2 answerObject
		o2.reset()
		s2.reset(answerSpec, &o2)
		b := stream[:ev.size]
		read, ended := 0, false
		for i := 0; read < len(b) && !ended; i++ {
			n := len(b) - read
			if len(sizes) > 0 {
				n = min(int(sizes[i%len(sizes)])+1, n)
			}
			var k int
			k, ended = r.feed(b[read:read+n], &s2)
			read += k
			if !ended && k != n {
				t.Fatalf("%q: took %d of %d bytes without ending", b, k, n)
			}
		}
		if !ended || (read != ev.size && !(read == ev.size-1 && b[ev.size-1] == '\n' && r.afterCR)) {
			t.Fatalf("%q: ended %v after %d bytes; the event is %d", b, ended, read, ev.size)
		}
		var got usageInfo
		gotOK := r.dataLines > 0 && s2.close()
		if gotOK {
			got.add(apiOpenAI, &o2)
		}
		if ev.hasData != (r.dataLines > 0) || gotOK != wantOK || got != want {
			t.Fatalf("%q: in pieces %v %+v, whole %v %+v", b, gotOK, got, wantOK, want)
		}
	})
}

// BenchmarkFieldScannerLargeBody: reading a 1.8 MB rerank answer (usage
// first, then the results) as it passes, in 4 KiB pieces.
func BenchmarkFieldScannerLargeBody(b *testing.B) {
	body := []byte(`{"id":"rerank-1","model":"m","usage":{"prompt_tokens":812,"total_tokens":812},"results":[` +
		strings.Repeat(`{"index":1,"document":{"text":"`+strings.Repeat("d", 900)+`","multi_modal":null},"relevance_score":0.25},`, 2000) + `{}]}`)
	var s fieldScanner
	var o answerObject
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		o.reset()
		s.reset(answerSpec, &o)
		for rest := body; len(rest) > 0; {
			n := min(4096, len(rest))
			s.write(rest[:n])
			rest = rest[n:]
		}
		if !s.close() || o.prompt.n != 812 {
			b.Fatal("usage not read")
		}
	}
}

func TestAPIKindOf(t *testing.T) {
	for path, want := range map[string]apiKind{
		"/v1/chat/completions": apiOpenAI, "/v1/responses": apiResponses, "/v1/responses?x=1": apiResponses,
		"/v1/responses/resp_1?stream=true": apiResponses, "/v1/responses/resp_1/cancel": apiResponses,
		"/v1/messages": apiMessages, "/v1/messages/count_tokens": apiOpenAI, "/v1/responsesX": apiOpenAI,
	} {
		if got := apiKindOf(path); got != want {
			t.Errorf("apiKindOf(%q) = %d, want %d", path, got, want)
		}
	}
}

// BenchmarkFieldScannerTokenIDs: reading a chat answer of ~1 MB whose
// usage comes before prompt_token_ids and prompt_logprobs (vLLM's
// return_token_ids, prompt_logprobs): numbers and small objects the
// scanner skips, in 4 KiB pieces.
func BenchmarkFieldScannerTokenIDs(b *testing.B) {
	var ids, lps strings.Builder
	for i := range 60000 {
		if i > 0 {
			ids.WriteByte(',')
		}
		fmt.Fprintf(&ids, "%d", 100+i*7%128000)
	}
	for i := range 4000 {
		if i > 0 {
			lps.WriteByte(',')
		}
		fmt.Fprintf(&lps, `{"%d":{"logprob":-%d.25,"rank":%d,"decoded_token":"tok\u00e9n"}}`, i, i%9, i%50)
	}
	body := []byte(`{"id":"chatcmpl-1","object":"chat.completion","model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"hi"},"finish_reason":"stop"}],` +
		`"usage":{"prompt_tokens":60000,"completion_tokens":1,"total_tokens":60001},"prompt_logprobs":[null,` + lps.String() + `],"prompt_token_ids":[` + ids.String() + `]}`)
	var s fieldScanner
	var o answerObject
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		o.reset()
		s.reset(answerSpec, &o)
		for rest := body; len(rest) > 0; {
			n := min(4096, len(rest))
			s.write(rest[:n])
			rest = rest[n:]
		}
		if !s.close() || o.prompt.n != 60000 {
			b.Fatal("usage not read")
		}
	}
}
