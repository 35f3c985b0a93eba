package proxy

// Findings of the adversarial review of the answer-reading code (an
// upstream that is compromised or buggy, a hostile client). Each test
// states what a client receives, or what a Python client (json module: the
// last duplicate wins, keys compared after unescaping) or the official SDKs
// read from the same bytes, and checks that the event agrees.

import (
	"crypto/sha256"
	"io"
	"strconv"
	"strings"
	"testing"

	"github.com/auditproxy/auditproxy/audit"
	"github.com/auditproxy/auditproxy/hashing"
)

// tapRecordPoint runs stream through a tap as TestTapHoldsBackTheEnd does
// and returns what the client got, how many bytes it had been handed when
// the event was recorded, and the event.
func tapRecordPoint(t *testing.T, kind apiKind, stream string, sizes []byte) (got []byte, atRecord int, ev audit.Event) {
	t.Helper()
	handed := 0
	last := &lastEvent{}
	rec := &recordWatcher{handed: &handed, then: last}
	kid, _ := hashing.NewKeyIDer(make([]byte, 32))
	p, err := New(Config{Upstream: "http://127.0.0.1:1", KeyIDer: kid, Recorder: rec})
	if err != nil {
		t.Fatal(err)
	}
	x := p.acquireExchange()
	x.tap.status, x.tap.kind = 200, kind
	x.ev.Stream = true
	x.tap.start(nil, &splitReader{data: []byte(stream), sizes: sizes}, []byte("text/event-stream"), -1)
	buf := make([]byte, 1000)
	for {
		n, err := x.tap.Read(buf)
		got = append(got, buf[:n]...)
		handed = len(got)
		if err != nil {
			break
		}
	}
	x.tap.CloseWithError(nil)
	if rec.n != 1 {
		t.Fatalf("recorded %d times", rec.n)
	}
	return got, rec.atRec, last.ev
}

// TestReviewDoneWithMoreDataIsTheEnd: openai-go (packages/ssestream,
// Stream.Next: bytes.HasPrefix(event.Data, "[DONE]")) and openai-python
// (_streaming.py: sse.data.startswith("[DONE]")) end the stream at an event
// whose data only starts with [DONE]. The tap ends it only at data exactly
// "[DONE]": it hands such an event out before recording (the client has
// its complete answer first) and records the answer stream_incomplete.
func TestReviewDoneWithMoreDataIsTheEnd(t *testing.T) {
	body := roleChunk + strings.Repeat(textChunk, 5) + finalChunk + usageChunk
	for _, done := range []string{
		"data: [DONE] \n\n",
		"data: [DONE]\r\n\r\n", // control: exact, passes today
		"data: [DONE]\ndata: \n\n",
		"data:[DONE]x\n\n",
	} {
		stream := body + done
		got, at, ev := tapRecordPoint(t, apiOpenAI, stream, []byte{255})
		if string(got) != stream {
			t.Fatalf("%q: the client got other bytes", done)
		}
		if at > len(body) {
			t.Errorf("%q: %d bytes handed out before the event, past the start of the [DONE] event at %d", done, at, len(body))
		}
		if ev.Status.Outcome != audit.OutcomeOK {
			t.Errorf("%q: outcome %s %s, want ok: the SDKs read a complete stream", done, ev.Status.Outcome, ev.Status.Error)
		}
	}
}

// TestReviewResponsesEndWithoutUsage: a response.completed (or .incomplete,
// .failed) event whose response has no "usage" member is the end of the
// stream for any client, but mayCarryFields passes it without a parse: the
// event is handed out before the audit event is recorded, and the answer
// is recorded stream_incomplete. (vLLM writes every member, "usage":null
// included; an upstream that leaves usage out is enough.)
func TestReviewResponsesEndWithoutUsage(t *testing.T) {
	created := "event: response.created\ndata: {\"type\":\"response.created\",\"response\":{\"status\":\"in_progress\",\"usage\":null}}\n\n" +
		"event: response.output_text.delta\ndata: {\"type\":\"response.output_text.delta\",\"delta\":\"w \"}\n\n"
	for _, last := range []string{
		"event: response.completed\ndata: {\"type\":\"response.completed\",\"response\":{\"status\":\"completed\"}}\n\n",
		"event: response.incomplete\ndata: {\"type\":\"response.incomplete\",\"response\":{\"status\":\"incomplete\",\"incomplete_details\":{\"reason\":\"max_output_tokens\"}}}\n\n",
	} {
		stream := created + last
		got, at, ev := tapRecordPoint(t, apiResponses, stream, []byte{255})
		if string(got) != stream {
			t.Fatal("the client got other bytes")
		}
		if at > len(created) {
			t.Errorf("%.40q: %d bytes handed out before the event, past the start of the last event at %d", last, at, len(created))
		}
		if ev.Status.Error == "stream_incomplete" || ev.Output.FinishReason == "" {
			t.Errorf("%.40q: outcome %s %s, finish %q: the stream ended with its last event", last, ev.Status.Outcome, ev.Status.Error, ev.Output.FinishReason)
		}
	}
}

// TestReviewFinishReasonAsPythonReadsIt: mayCarryFields skips any chunk
// holding `"finish_reason":null`, and any whose member names are written
// with escapes, so the finish reason (or usage) Python reads from those
// bytes is not recorded.
func TestReviewFinishReasonAsPythonReadsIt(t *testing.T) {
	for _, tc := range []struct {
		name, chunk string
		finish      string
		out         int64 // -1: no count
	}{
		{"two choices, the second not finished",
			`{"id":"c","object":"chat.completion.chunk","choices":[{"index":0,"delta":{},"finish_reason":"stop"},{"index":1,"delta":{"content":"x"},"finish_reason":null}]}`, "stop", -1},
		{"a duplicate finish_reason, the last one a string",
			`{"id":"c","object":"chat.completion.chunk","choices":[{"index":0,"delta":{},"finish_reason":null,"finish_reason":"length"}]}`, "length", -1},
		{"an escaped key",
			`{"id":"c","object":"chat.completion.chunk","choices":[{"index":0,"delta":{},"finish\u005freason":"stop"}]}`, "stop", -1},
		{"an escaped usage key",
			`{"id":"c","object":"chat.completion.chunk","choices":[],"usag\u0065":{"prompt_tokens":2,"completion_tokens":3}}`, "", 3},
	} {
		stream := roleChunk + "data: " + tc.chunk + "\n\n" + doneChunk
		_, ev := runTap(t, stream, false, []byte{255}, 4096)
		if ev.Output.FinishReason != tc.finish {
			t.Errorf("%s: finish %q, want %q as Python reads it", tc.name, ev.Output.FinishReason, tc.finish)
		}
		if tc.out >= 0 && (ev.Output.Tokens == nil || *ev.Output.Tokens != tc.out) {
			t.Errorf("%s: output tokens %v, want %d as Python reads them", tc.name, ev.Output.Tokens, tc.out)
		}
	}
}

// TestReviewMalformedJSONReadsNothing: json.loads refuses each of these
// bodies (so a Python client reads no usage), but the field scanner, which
// only balances brackets where no member is read and does not check a
// scalar past maxFieldBytes or a string's escapes, reads the usage.
func TestReviewMalformedJSONReadsNothing(t *testing.T) {
	usage := `"usage":{"prompt_tokens":3,"completion_tokens":4}`
	for _, tc := range []struct{ name, body string }{
		{"control: a truncated body", `{` + usage},
		{"mismatched brackets in a member not read", `{"x":[1},` + usage + `}`},
		{"an invalid literal longer than maxFieldBytes", `{"x":` + strings.Repeat("t", 3000) + `,` + usage + `}`},
		{"an invalid escape in a string not read", `{"x":"\q",` + usage + `}`},
		{"a \\u escape without four hex digits", `{"x":"\u12",` + usage + `}`},
		{"nesting deeper than Python's recursion limit", `{"x":` + strings.Repeat("[", 100000) + strings.Repeat("]", 100000) + `,` + usage + `}`},
		{"two values without a comma in a member not read", `{"x":[1 2],` + usage + `}`},
		{"a member without a colon in an object not read", `{"x":{"a" 1},` + usage + `}`},
		{"a trailing comma in an array not read", `{"x":[1,],` + usage + `}`},
		{"a leading zero", `{"x":[01],` + usage + `}`},
		{"a fraction without digits", `{"x":[1.],` + usage + `}`},
		{"an exponent without digits", `{"x":{"a":1e+},` + usage + `}`},
		{"a cut literal", `{"x":[nul],` + usage + `}`},
		{"a control character in a string not read", "{\"x\":[\"a\x01b\"]," + usage + `}`},
		{"an invalid escape in a key not read", `{"x":{"\q":1},` + usage + `}`},
	} {
		_, ev := runTapAs(t, apiOpenAI, "application/json", tc.body, false, []byte{255}, 4096)
		if ev.Input.Tokens != nil || ev.Output.Tokens != nil {
			t.Errorf("%s: tokens %d/%d read from a body json.loads refuses", tc.name, *ev.Input.Tokens, *ev.Output.Tokens)
		}
	}
	// Controls: bodies json.loads reads (each checked with Python 3.11)
	// keep their usage.
	for _, body := range []string{
		`{"x":[1,-0,0.5e-3,1E+9,-12.25,NaN,Infinity,-Infinity,true,false,null],` + usage + `}`,
		`{"x":"\"\\\/\b\f\n\r\t\u00e9\ud800\uDFFF","\u0079":{"a":[{}],"b":{}},` + usage + `}`,
		`{"x":` + strings.Repeat("[", 900) + strings.Repeat("]", 900) + `,` + usage + `}`,
		`{"x":` + strings.Repeat("9", 4000) + `,"y":"` + strings.Repeat("s", 5000) + `",` + usage + "}",
		" {\t\"x\" :\r\n[ 1 , { } ] ,\n" + usage + " } ",
	} {
		_, ev := runTapAs(t, apiOpenAI, "application/json", body, false, []byte{255}, 4096)
		if ev.Input.Tokens == nil || *ev.Input.Tokens != 3 || ev.Output.Tokens == nil || *ev.Output.Tokens != 4 {
			t.Errorf("%.60q: usage not read from a body json.loads reads", body)
		}
	}
}

// TestReviewHashCoversWhatTheClientGot: more than a buffer of bytes after
// [DONE] (here keep-alive comments) makes the tap record early; every
// byte after that still goes to the client, but no longer into the hash
// or the byte count. The event must hash exactly what the client got (or
// the client must not get what is not hashed).
func TestReviewHashCoversWhatTheClientGot(t *testing.T) {
	stream := vllmStream(3) + strings.Repeat(": keep-alive\n\n", 2000)
	for _, sizes := range [][]byte{{255}, {0, 17}} {
		got, ev := runTap(t, stream, true, sizes, 4096)
		sum := sha256.Sum256(got)
		if ev.Output.Hash != hashing.FormatDigest(hashing.SHA256, sum[:]) || ev.Output.Bytes != int64(len(got)) {
			t.Errorf("split %v: the event hashes %d bytes, the client got %d", sizes, ev.Output.Bytes, len(got))
		}
		// The fix withholds the tail past a buffer: the client still gets
		// its whole answer, [DONE] included, and the event says so.
		if !strings.Contains(string(got), doneChunk) || ev.Status.Outcome != audit.OutcomeOK || ev.Status.AfterEnd != "tail_withheld" {
			t.Errorf("split %v: [DONE] handed out %v, status %+v", sizes, strings.Contains(string(got), doneChunk), ev.Status)
		}
	}
}

// TestReviewPendingEventIsReadOnce: an SSE event that arrives in many
// small reads was searched for its end from its start again after every
// read (nextSSEEvent keeps no state), so an upstream that sends a 60 KiB
// event a byte at a time made the tap scan ~1.8 GB. The test counts the
// bytes offered to nextSSEEvent (the tap's scanned); it should stay linear
// in the stream. (The review's first version counted the bytes pending
// before each read, which are the same with or without a rescan.) Events
// whose lines end in "\r\n" or "\r", and many-line events, are searched
// once too.
func TestReviewPendingEventIsReadOnce(t *testing.T) {
	content := strings.Repeat("x", 16<<10)
	for _, tc := range []struct{ name, event string }{
		{"one line", "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"" + content + "\"},\"finish_reason\":null}]}\n\n"},
		{"crlf", "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"" + content + "\"},\"finish_reason\":null}]}\r\n\r\n"},
		{"cr", "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"" + content + "\"},\"finish_reason\":null}]}\r\r"},
		{"many lines", strings.Repeat(": c\r\n", 2000) + "data: {\"choices\":[]}\n\n"},
	} {
		stream := roleChunk + tc.event + finalChunk + doneChunk
		kid, _ := hashing.NewKeyIDer(make([]byte, 32))
		p, err := New(Config{Upstream: "http://127.0.0.1:1", KeyIDer: kid, Recorder: &lastEvent{}})
		if err != nil {
			t.Fatal(err)
		}
		x := p.acquireExchange()
		x.tap.status = 200
		x.tap.start(nil, &splitReader{data: []byte(stream)}, []byte("text/event-stream"), -1)
		got, err := io.ReadAll(&x.tap)
		if err != nil {
			t.Fatal(err)
		}
		scanned := x.tap.scanned
		x.tap.CloseWithError(nil)
		if string(got) != stream {
			t.Fatalf("%s: the client got other bytes", tc.name)
		}
		if scanned > 4*len(stream) {
			t.Errorf("%s: %d bytes searched for a %d-byte stream read a byte at a time", tc.name, scanned, len(stream))
		}
	}
}

// TestReviewBrokenAfterDone: the upstream sent the whole stream, [DONE]
// included, then its connection broke (or idled out) before the chunked
// body's last chunk. The client gets every byte, [DONE] too (the tap hands
// the held end out after recording), and the SDKs read a complete answer;
// the event says upstream_broke_off.
func TestReviewBrokenAfterDone(t *testing.T) {
	stream := vllmStream(5)
	rec := &lastEvent{}
	kid, _ := hashing.NewKeyIDer(make([]byte, 32))
	p, err := New(Config{Upstream: "http://127.0.0.1:1", KeyIDer: kid, Recorder: rec})
	if err != nil {
		t.Fatal(err)
	}
	x := p.acquireExchange()
	x.ev.Stream = true
	x.tap.status, x.tap.stripUsage = 200, true
	x.tap.start(nil, io.MultiReader(strings.NewReader(stream), errReader{io.ErrUnexpectedEOF}), []byte("text/event-stream"), -1)
	got, _ := io.ReadAll(&x.tap)
	x.tap.CloseWithError(io.ErrUnexpectedEOF)
	if want := strings.Replace(stream, usageChunk, "", 1); string(got) != want {
		t.Fatalf("client got %q", got)
	}
	if ev := rec.ev; ev.Status.Outcome != audit.OutcomeOK {
		t.Errorf("outcome %s %s for an answer the client got whole, [DONE] included", ev.Status.Outcome, ev.Status.Error)
	}
	// The break is recorded beside the outcome, and the finish reason and
	// counts are the complete answer's.
	if ev := rec.ev; ev.Status.AfterEnd != "upstream_broke_off" || ev.Status.Error != "" || ev.Output.FinishReason != "length" || ev.Output.Tokens == nil || *ev.Output.Tokens != 51 {
		t.Errorf("status %+v, finish %q, output tokens %v: want after_end upstream_broke_off beside a complete answer", ev.Status, ev.Output.FinishReason, ev.Output.Tokens)
	}
}

// TestReviewErrorMemberAsTheSDKReadsIt: openai-python raises on an event
// only when data.get("error") is truthy (_streaming.py,
// _raise_streaming_error); the tap takes any "error" member that is not
// null for an upstream error, so a stream the Python SDK reads whole is
// recorded upstream_error. (openai-go differs from both: it stops at any
// "error" member gjson finds, null included.)
func TestReviewErrorMemberAsTheSDKReadsIt(t *testing.T) {
	for _, v := range []string{`false`, `""`, `{}`, `[]`, `0`, `null`, `-0`, `0.0`, `0e5`, `1e-400`, `{ }`, `[ ]`} {
		chunk := strings.Replace(finalChunk, `"object"`, `"error":`+v+`,"object"`, 1)
		_, ev := runTap(t, roleChunk+chunk+doneChunk, false, []byte{255}, 4096)
		if ev.Status.Outcome != audit.OutcomeOK {
			t.Errorf(`"error":%s: outcome %s %s, want ok (Python's data.get("error") is falsy)`, v, ev.Status.Outcome, ev.Status.Error)
		}
	}
	// Controls: truthy members are errors, the type read from an object.
	for _, v := range []string{`true`, `"x"`, `{"type":"BadRequestError"}`, `[0]`, `[[]]`, `1`, `-0.5`, `1e400`, `NaN`, `{"message":""}`} {
		chunk := strings.Replace(finalChunk, `"object"`, `"error":`+v+`,"object"`, 1)
		_, ev := runTap(t, roleChunk+chunk+doneChunk, false, []byte{255}, 4096)
		if ev.Status.Outcome != audit.OutcomeUpstreamError || ev.Status.Error != "upstream_error_in_stream" {
			t.Errorf(`"error":%s: outcome %s %s, want upstream_error_in_stream (Python's data.get("error") is truthy)`, v, ev.Status.Outcome, ev.Status.Error)
		}
		if want := map[bool]string{true: "BadRequestError"}[strings.Contains(v, "type")]; ev.Status.UpstreamError != want {
			t.Errorf(`"error":%s: upstream error %q, want %q`, v, ev.Status.UpstreamError, want)
		}
	}
}

type errReader struct{ err error }

func (e errReader) Read([]byte) (int, error) { return 0, e.err }

// BenchmarkTapOneByteReads: a stream whose one large SSE event arrives a
// byte at a time (TestReviewPendingEventIsReadOnce). SetBytes is the
// stream's size, so MB/s that stays flat as the event grows is linear
// work; before the fix it fell with the event's size (each read searched
// the whole pending event again).
func BenchmarkTapOneByteReads(b *testing.B) {
	kid, _ := hashing.NewKeyIDer(make([]byte, 32))
	p, err := New(Config{Upstream: "http://127.0.0.1:1", KeyIDer: kid, Recorder: discardRecorder{}})
	if err != nil {
		b.Fatal(err)
	}
	for _, size := range []int{1 << 10, 8 << 10, 32 << 10} {
		event := "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"" + strings.Repeat("x", size) + "\"},\"finish_reason\":null}]}\n\n"
		stream := []byte(roleChunk + event + finalChunk + doneChunk)
		b.Run(strconv.Itoa(size>>10)+"KiB", func(b *testing.B) {
			buf := make([]byte, 4096)
			r := &splitReader{}
			b.SetBytes(int64(len(stream)))
			for b.Loop() {
				x := p.acquireExchange()
				x.tap.status = 200
				r.data = stream
				x.tap.start(nil, r, []byte("text/event-stream"), -1)
				for {
					if _, err := x.tap.Read(buf); err != nil {
						break
					}
				}
				x.tap.CloseWithError(nil)
			}
		})
	}
}
