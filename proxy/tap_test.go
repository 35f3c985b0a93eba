package proxy

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/valyala/fasthttp"

	"github.com/auditproxy/auditproxy/audit"
	"github.com/auditproxy/auditproxy/hashing"
	"github.com/auditproxy/auditproxy/internal/fakevllm"
)

// lastEvent keeps the last recorded event.
type lastEvent struct{ ev audit.Event }

func (l *lastEvent) Record(ev *audit.Event) error {
	l.ev = *ev
	// The proxy reuses what the pointers point at.
	if ev.Output.Tokens != nil {
		n := *ev.Output.Tokens
		l.ev.Output.Tokens = &n
	}
	if ev.Input.Tokens != nil {
		n := *ev.Input.Tokens
		l.ev.Input.Tokens = &n
	}
	return nil
}

// splitReader returns its data in pieces whose sizes cycle through sizes,
// as a network read would.
type splitReader struct {
	data  []byte
	sizes []byte
	i     int
}

func (r *splitReader) Read(p []byte) (int, error) {
	if len(r.data) == 0 {
		return 0, io.EOF
	}
	n := 1
	if len(r.sizes) > 0 {
		n = int(r.sizes[r.i%len(r.sizes)]) + 1
		r.i++
	}
	n = min(n, len(p), len(r.data))
	copy(p, r.data[:n])
	r.data = r.data[n:]
	return n, nil
}

const (
	roleChunk  = "data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"},\"logprobs\":null,\"finish_reason\":null}]}\n\n"
	textChunk  = "data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"word \"},\"logprobs\":null,\"finish_reason\":null}]}\n\n"
	finalChunk = "data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"end\"},\"logprobs\":null,\"finish_reason\":\"length\",\"stop_reason\":null}]}\n\n"
	usageChunk = "data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"choices\":[],\"usage\":{\"prompt_tokens\":9,\"total_tokens\":60,\"completion_tokens\":51}}\n\n"
	doneChunk  = "data: [DONE]\n\n"
)

func vllmStream(words int) string {
	return roleChunk + strings.Repeat(textChunk, words) + finalChunk + usageChunk + doneChunk
}

// runTap feeds stream through a responseTap as fasthttp's server would: the
// upstream's reads split by upSizes, the server reading into a buffer of
// bufSize. It returns what the client got and the event.
func runTap(t *testing.T, stream string, strip bool, upSizes []byte, bufSize int) ([]byte, audit.Event) {
	t.Helper()
	return runTapAs(t, apiOpenAI, "text/event-stream; charset=utf-8", stream, strip, upSizes, bufSize)
}

// runTapAs is runTap for an answer of API kind and Content-Type ctype.
func runTapAs(t *testing.T, kind apiKind, ctype, stream string, strip bool, upSizes []byte, bufSize int) ([]byte, audit.Event) {
	t.Helper()
	rec := &lastEvent{}
	kid, _ := hashing.NewKeyIDer(make([]byte, 32))
	p, err := New(Config{Upstream: "http://127.0.0.1:1", KeyIDer: kid, Recorder: rec})
	if err != nil {
		t.Fatal(err)
	}
	x := p.acquireExchange()
	x.ev.Stream = strings.HasPrefix(ctype, "text/event-stream")
	x.tap.stripUsage = strip
	x.tap.status = 200
	x.tap.kind = kind
	x.tap.start(fasthttp.AcquireResponse(), &splitReader{data: []byte(stream), sizes: upSizes}, []byte(ctype), -1)
	var got []byte
	buf := make([]byte, bufSize)
	for {
		n, err := x.tap.Read(buf)
		got = append(got, buf[:n]...)
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	x.tap.CloseWithError(nil)
	return got, rec.ev
}

func TestTapStripsOnlyTheUsageChunk(t *testing.T) {
	stream := vllmStream(50)
	for _, strip := range []bool{false, true} {
		for _, bufSize := range []int{1, 7, 4096} {
			got, ev := runTap(t, stream, strip, []byte{0, 200, 3, 50}, bufSize)
			want := stream
			if strip {
				want = strings.Replace(stream, usageChunk, "", 1)
			}
			if string(got) != want {
				t.Fatalf("strip=%v buf=%d: client got\n%q\nwant\n%q", strip, bufSize, got, want)
			}
			sum := sha256.Sum256([]byte(want))
			if ev.Output.Hash != hashing.FormatDigest(hashing.SHA256, sum[:]) || ev.Output.Bytes != int64(len(want)) {
				t.Errorf("strip=%v: output %s/%d, want the digest of what the client got", strip, ev.Output.Hash, ev.Output.Bytes)
			}
			if ev.Output.Tokens == nil || *ev.Output.Tokens != 51 || ev.Output.FinishReason != "length" || ev.Status.Outcome != audit.OutcomeOK {
				t.Errorf("strip=%v: event %+v", strip, ev)
			}
		}
	}
}

func TestTapEventLargerThanItsBuffer(t *testing.T) {
	big := "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"" + strings.Repeat("x", 3*tapBufferSize) + "\"},\"finish_reason\":null}]}\n\n"
	stream := roleChunk + big + finalChunk + usageChunk + doneChunk
	got, ev := runTap(t, stream, true, []byte{255}, 4096)
	if want := strings.Replace(stream, usageChunk, "", 1); string(got) != want {
		t.Fatalf("client got %d bytes, want %d", len(got), len(want))
	}
	if ev.Output.Tokens == nil || *ev.Output.Tokens != 51 {
		t.Errorf("usage not read after a large event: %+v", ev.Output)
	}
}

// TestTapEventLargerThanItHolds: an SSE event larger than the tap holds (a
// first chunk with the prompt_token_ids of a long prompt) is handed out as
// it arrives and read on the way; the stream after it is read as before,
// so the usage chunk the proxy asked for is still removed and its counts
// recorded.
func TestTapEventLargerThanItHolds(t *testing.T) {
	ids := strings.Repeat("128000,", 300000) // 2.1 MB
	first := "data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"},\"finish_reason\":null}],\"prompt_token_ids\":[" + ids + "1]}\n\n"
	for _, tc := range []struct {
		name, stream, removed string
		in, out               int64
		finish                string
	}{
		{"a large first chunk", first + strings.Repeat(textChunk, 30) + finalChunk + usageChunk + doneChunk, usageChunk, 9, 51, "length"},
		{"a large chunk with CRLF line ends", strings.ReplaceAll(first, "\n", "\r\n") + finalChunk + usageChunk + doneChunk, usageChunk, 9, 51, "length"},
		{"usage inside the large chunk (continuous usage)",
			strings.Replace(first, `"prompt_token_ids"`, `"usage":{"prompt_tokens":300001,"completion_tokens":0},"prompt_token_ids"`, 1) +
				strings.Replace(finalChunk, `"stop_reason":null}]`, `"stop_reason":null}],"usage":{"prompt_tokens":300001,"completion_tokens":2}`, 1) + doneChunk,
			"", 300001, 2, "length"},
		{"a large finish chunk", roleChunk + strings.Replace(finalChunk, `"content":"end"`, `"content":"`+strings.Repeat("y", 200000)+`"`, 1) + usageChunk + doneChunk,
			usageChunk, 9, 51, "length"},
	} {
		for _, sizes := range [][]byte{{255}, {0, 200, 3}, {254, 254, 254, 254, 254, 254, 254}} {
			got, ev := runTap(t, tc.stream, tc.removed != "", sizes, 4096)
			want := tc.stream
			if tc.removed != "" {
				want = strings.Replace(want, tc.removed, "", 1)
			}
			if string(got) != want {
				t.Fatalf("%s split %v: client got %d bytes, want %d", tc.name, sizes, len(got), len(want))
			}
			if ev.Input.Tokens == nil || *ev.Input.Tokens != tc.in || ev.Output.Tokens == nil || *ev.Output.Tokens != tc.out ||
				ev.Output.FinishReason != tc.finish || ev.Status.Outcome != audit.OutcomeOK {
				t.Errorf("%s split %v: tokens %v/%v, finish %q, outcome %s", tc.name, sizes, ev.Input.Tokens, ev.Output.Tokens, ev.Output.FinishReason, ev.Status.Outcome)
			}
		}
	}
}

// TestTapReadsBodiesOfAnySize: a JSON answer is read as it passes, so
// usage is found wherever it stands in a body of any size.
func TestTapReadsBodiesOfAnySize(t *testing.T) {
	results := strings.Repeat(`{"index":1,"document":{"text":"`+strings.Repeat("d", 900)+`"},"relevance_score":0.25},`, 2000)
	ids := strings.Repeat("4242,", 400000)
	for _, tc := range []struct {
		name, body string
		in, out    *int64
		finish     string
	}{
		{"rerank: usage first, 1.8 MB of results", `{"id":"rerank-1","model":"m","usage":{"prompt_tokens":812,"total_tokens":812},"results":[` + results + `{}]}`,
			ptr(812), nil, ""},
		{"chat: prompt_token_ids after usage", `{"id":"c","object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":"hi"},"finish_reason":"stop","token_ids":[1,2]}],"usage":{"prompt_tokens":400001,"total_tokens":400003,"completion_tokens":2},"prompt_logprobs":null,"prompt_token_ids":[` + ids + `1],"kv_transfer_params":null}`,
			ptr(400001), ptr(2), "stop"},
		{"embeddings: completion_tokens 0 is known", `{"object":"list","data":[{"embedding":[0.5]}],"usage":{"prompt_tokens":3,"total_tokens":3,"completion_tokens":0}}`,
			ptr(3), ptr(0), ""},
		{"usage of a shape no API has", `{"text":"hello","usage":{"type":"duration","seconds":4}}`, nil, nil, ""},
		{"not JSON after all", `{"usage":{"prompt_tokens":3,"completion_tokens":4}`, nil, nil, ""},
	} {
		for _, sizes := range [][]byte{{255}, {0, 17}} {
			got, ev := runTapAs(t, apiOpenAI, "application/json", tc.body, false, sizes, 4096)
			if string(got) != tc.body {
				t.Fatalf("%s: client got %d bytes, want %d", tc.name, len(got), len(tc.body))
			}
			if !sameCount(ev.Input.Tokens, tc.in) || !sameCount(ev.Output.Tokens, tc.out) || ev.Output.FinishReason != tc.finish {
				t.Errorf("%s split %v: tokens %v/%v finish %q, want %v/%v %q", tc.name, sizes, ev.Input.Tokens, ev.Output.Tokens, ev.Output.FinishReason, tc.in, tc.out, tc.finish)
			}
		}
	}
}

func ptr(n int64) *int64 { return &n }

func sameCount(a, b *int64) bool { return (a == nil) == (b == nil) && (a == nil || *a == *b) }

// FuzzTap: however the upstream's bytes are split into reads, and however
// small the server's buffer, the client gets the stream less the usage chunk,
// and the event hashes exactly that.
func FuzzTap(f *testing.F) {
	f.Add([]byte{0}, uint16(1), true, 3)
	f.Add([]byte{5, 255, 17}, uint16(4096), false, 20)
	f.Add([]byte{63, 1}, uint16(33), true, 0)
	f.Fuzz(func(t *testing.T, sizes []byte, bufSize uint16, strip bool, words int) {
		if bufSize == 0 || words < 0 || words > 200 {
			return
		}
		stream := vllmStream(words)
		got, ev := runTap(t, stream, strip, sizes, int(bufSize))
		want := stream
		if strip {
			want = strings.Replace(stream, usageChunk, "", 1)
		}
		if !bytes.Equal(got, []byte(want)) {
			t.Fatalf("client got %q, want %q", got, want)
		}
		sum := sha256.Sum256(got)
		if ev.Output.Hash != hashing.FormatDigest(hashing.SHA256, sum[:]) {
			t.Fatal("output hash is not the digest of what the client got")
		}
	})
}

type discardRecorder struct{}

func (discardRecorder) Record(*audit.Event) error { return nil }

// BenchmarkTap is the proxy's per-response work on a 200-chunk vLLM stream
// with its usage chunk removed: hashing, SSE parsing, stripping and building
// the event (no network). SetBytes is the stream's size.
func BenchmarkTap(b *testing.B) {
	kid, _ := hashing.NewKeyIDer(make([]byte, 32))
	p, err := New(Config{Upstream: "http://127.0.0.1:1", KeyIDer: kid, Recorder: discardRecorder{}})
	if err != nil {
		b.Fatal(err)
	}
	stream := []byte(vllmStream(200))
	buf := make([]byte, 4096)
	r := &bytes.Reader{}
	b.SetBytes(int64(len(stream)))
	b.ReportAllocs()
	for b.Loop() {
		x := p.acquireExchange()
		x.tap.stripUsage = true
		x.tap.status = 200
		r.Reset(stream)
		x.tap.start(nil, r, []byte("text/event-stream"), -1)
		for {
			if _, err := x.tap.Read(buf); err != nil {
				break
			}
		}
		x.tap.CloseWithError(nil)
	}
}

func BenchmarkParseRequestFields(b *testing.B) {
	body := []byte(`{"model":"meta-llama/Llama-3.1-8B-Instruct","max_tokens":300,"stream":true,"messages":[{"role":"user","content":"` +
		strings.Repeat("audit every inference ", 44) + `"}]}`)
	var scratch []byte
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		_ = parseRequestFields(body, &scratch, "meta-llama/Llama-3.1-8B-Instruct")
	}
}

// recordWatcher records how many bytes the client had been handed when the
// event was recorded.
type recordWatcher struct {
	handed *int
	atRec  int
	n      int
	then   *lastEvent
}

func (r *recordWatcher) Record(ev *audit.Event) error {
	r.atRec = *r.handed
	r.n++
	if r.then != nil {
		return r.then.Record(ev)
	}
	return nil
}

// TestTapHoldsBackTheEnd: the event is recorded before the last bytes of a
// known-length body, or a stream's [DONE], are handed to the server, and
// exactly once.
func TestTapHoldsBackTheEnd(t *testing.T) {
	body := `{"id":"x","object":"chat.completion","choices":[{"index":0,"message":{"content":"` + strings.Repeat("z", 5000) +
		`"},"finish_reason":"stop"}],"usage":{"prompt_tokens":3,"completion_tokens":4}}`
	responses := "event: response.created\ndata: {\"type\":\"response.created\",\"sequence_number\":0,\"response\":{\"status\":\"in_progress\",\"usage\":null}}\n\n" +
		strings.Repeat("event: response.output_text.delta\ndata: {\"type\":\"response.output_text.delta\",\"delta\":\"w \"}\n\n", 20)
	completed := "event: response.completed\ndata: {\"type\":\"response.completed\",\"response\":{\"status\":\"completed\",\"output\":[{\"content\":[{\"text\":\"%s\"}]}],\"usage\":{\"input_tokens\":4,\"output_tokens\":20}}}\n\n"
	messages := "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"usage\":{\"input_tokens\":4,\"output_tokens\":0}}}\n\n" +
		"event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},\"usage\":{\"output_tokens\":20}}\n\n"
	stop := "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n"
	for _, tc := range []struct {
		name, stream, ctype string
		kind                apiKind
		size                int
		lastPart            string
	}{
		{"json of known length", body, "application/json", apiOpenAI, len(body), ""},
		{"sse", vllmStream(20), "text/event-stream", apiOpenAI, -1, doneChunk},
		{"responses stream", responses + fmt.Sprintf(completed, "short"), "text/event-stream", apiResponses, -1, fmt.Sprintf(completed, "short")},
		{"responses stream with a large last event", responses + fmt.Sprintf(completed, strings.Repeat("long ", 30000)), "text/event-stream", apiResponses, -1, "\n\n"},
		{"messages stream", messages + stop + doneChunk, "text/event-stream", apiMessages, -1, stop + doneChunk},
	} {
		for _, sizes := range [][]byte{{255}, {0, 17}, {99}} {
			handed := 0
			rec := &recordWatcher{handed: &handed}
			kid, _ := hashing.NewKeyIDer(make([]byte, 32))
			p, err := New(Config{Upstream: "http://127.0.0.1:1", KeyIDer: kid, Recorder: rec})
			if err != nil {
				t.Fatal(err)
			}
			x := p.acquireExchange()
			x.tap.status = 200
			x.tap.kind = tc.kind
			x.ev.Stream = tc.size < 0
			var last lastEvent
			rec.then = &last
			x.tap.start(nil, &splitReader{data: []byte(tc.stream), sizes: sizes}, []byte(tc.ctype), tc.size)
			var got []byte
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
			if string(got) != tc.stream {
				t.Fatalf("%s: client got %d bytes, want %d", tc.name, len(got), len(tc.stream))
			}
			if rec.n != 1 {
				t.Fatalf("%s: recorded %d times", tc.name, rec.n)
			}
			if rec.atRec >= len(tc.stream) {
				t.Errorf("%s split %v: event recorded after all %d bytes were handed out", tc.name, sizes, rec.atRec)
			}
			if tc.lastPart != "" && rec.atRec > len(tc.stream)-len(tc.lastPart) {
				t.Errorf("%s: %d bytes handed out before the event, past the start of %.40q", tc.name, rec.atRec, tc.lastPart)
			}
			if ev := last.ev; ev.Status.Outcome != audit.OutcomeOK || ev.Output.Tokens == nil {
				t.Errorf("%s: outcome %s %s, output tokens %v", tc.name, ev.Status.Outcome, ev.Status.Error, ev.Output.Tokens)
			}
		}
	}
}

// TestTapTakesTheModelFromTheAnswer: a request that names no model is
// served by vLLM's default model, which the answer names; the event
// records that name and says where it came from. A request that names one
// keeps it, whatever the answer says.
func TestTapTakesTheModelFromTheAnswer(t *testing.T) {
	chunk := strings.Replace(finalChunk, `"object"`, `"model":"served/default","object"`, 1)
	for _, tc := range []struct {
		name, requested, ctype, answer string
		kind                           apiKind
		want                           string
		fromAnswer                     bool
	}{
		{"no model, json", "", "application/json", `{"id":"c","object":"chat.completion","model":"served/default","choices":[]}`, apiOpenAI, "served/default", true},
		{"no model, stream", "", "text/event-stream", roleChunk + chunk + doneChunk, apiOpenAI, "served/default", true},
		{"no model, messages", "", "application/json", `{"type":"message","model":"served/default","stop_reason":"end_turn","usage":{"input_tokens":1,"output_tokens":1}}`, apiMessages, "served/default", true},
		{"a long name is cut", "", "application/json", `{"model":"` + strings.Repeat("é", 600) + `"}`, apiOpenAI, strings.Repeat("é", 512), true},
		{"named in the request", "mine", "application/json", `{"model":"served/default"}`, apiOpenAI, "mine", false},
	} {
		rec := &lastEvent{}
		kid, _ := hashing.NewKeyIDer(make([]byte, 32))
		p, err := New(Config{Upstream: "http://127.0.0.1:1", KeyIDer: kid, Recorder: rec,
			ModelChecksums: func(name string) (string, string) { return "sum-of:" + name, "" }})
		if err != nil {
			t.Fatal(err)
		}
		x := p.acquireExchange()
		x.ev.Model.Name = tc.requested
		x.tap.status, x.tap.kind = 200, tc.kind
		x.tap.start(fasthttp.AcquireResponse(), strings.NewReader(tc.answer), []byte(tc.ctype), -1)
		io.Copy(io.Discard, &x.tap)
		x.tap.CloseWithError(nil)
		m := rec.ev.Model
		if m.Name != tc.want || m.FromAnswer != tc.fromAnswer || (tc.fromAnswer && m.Checksum != "sum-of:"+tc.want) {
			t.Errorf("%s: model %.40q from answer %v checksum %.40q", tc.name, m.Name, m.FromAnswer, m.Checksum)
		}
	}
}

// BenchmarkTapFormats is BenchmarkTap for a 200-token answer streamed by
// each API, as the fake vLLM streams it (chat with its usage chunk removed;
// Responses and Messages as they come). ns/event is the proxy's cost per
// SSE event: hashing, finding events, reading the few that carry usage.
func BenchmarkTapFormats(b *testing.B) {
	fake := fakevllm.New(fakevllm.Config{OutputTokens: 200})
	base, err := fake.Start("127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer fake.Close()
	kid, _ := hashing.NewKeyIDer(make([]byte, 32))
	p, err := New(Config{Upstream: "http://127.0.0.1:1", KeyIDer: kid, Recorder: discardRecorder{}})
	if err != nil {
		b.Fatal(err)
	}
	const model = `"model":"meta-llama/Llama-3.1-8B-Instruct"`
	for _, f := range []struct {
		name, path, body string
		kind             apiKind
		strip            bool
	}{
		{"chat", "/v1/chat/completions", `{` + model + `,"stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"hi"}]}`, apiOpenAI, true},
		{"responses", "/v1/responses", `{` + model + `,"stream":true,"input":"hi"}`, apiResponses, false},
		{"messages", "/v1/messages", `{` + model + `,"stream":true,"max_tokens":500,"messages":[{"role":"user","content":"hi"}]}`, apiMessages, false},
	} {
		resp, err := http.Post(base+f.path, "application/json", strings.NewReader(f.body))
		if err != nil {
			b.Fatal(err)
		}
		stream, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		events := bytes.Count(stream, []byte("\n\n"))
		if resp.StatusCode != 200 || events < 200 {
			b.Fatalf("%s: %d, %d events: %.300s", f.name, resp.StatusCode, events, stream)
		}
		b.Run(f.name, func(b *testing.B) {
			buf := make([]byte, 4096)
			r := &bytes.Reader{}
			b.SetBytes(int64(len(stream)))
			b.ReportAllocs()
			for b.Loop() {
				x := p.acquireExchange()
				x.ev.Stream, x.ev.Model.Name = true, "meta-llama/Llama-3.1-8B-Instruct"
				x.tap.stripUsage, x.tap.kind, x.tap.status = f.strip, f.kind, 200
				r.Reset(stream)
				x.tap.start(nil, r, []byte("text/event-stream"), -1)
				for {
					if _, err := x.tap.Read(buf); err != nil {
						break
					}
				}
				if x.tap.usage.output.n != 200 {
					b.Fatalf("%s: %d output tokens read", f.name, x.tap.usage.output.n)
				}
				x.tap.CloseWithError(nil)
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*events), "ns/event")
			b.ReportMetric(float64(events), "events")
		})
	}
}

// FuzzTapLargeAndTypedEvents: FuzzTap for the streams whose events the tap
// does not hold whole (a chat chunk and a Responses last event over 64
// KiB) and for the typed streams: however the upstream's bytes are split,
// the client gets them (less the usage chunk the proxy asked for), the
// event hashes exactly that, and the counts are read.
func FuzzTapLargeAndTypedEvents(f *testing.F) {
	f.Add(uint8(0), []byte{255, 3}, uint16(4096), uint32(70000))
	f.Add(uint8(1), []byte{0}, uint16(7), uint32(100))
	f.Add(uint8(2), []byte{17, 200}, uint16(999), uint32(65536))
	f.Fuzz(func(t *testing.T, which uint8, sizes []byte, bufSize uint16, big uint32) {
		if bufSize == 0 || big > 300000 {
			return
		}
		filler := strings.Repeat("x", int(big))
		var stream, removed string
		var kind apiKind
		var wantOut int64
		switch which % 3 {
		case 0:
			first := "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"" + filler + "\"},\"finish_reason\":null}]}\n\n"
			stream, removed, kind, wantOut = roleChunk+first+finalChunk+usageChunk+doneChunk, usageChunk, apiOpenAI, 51
		case 1:
			stream = "event: response.created\ndata: {\"type\":\"response.created\",\"response\":{\"status\":\"in_progress\",\"usage\":null}}\n\n" +
				"event: response.completed\ndata: {\"type\":\"response.completed\",\"response\":{\"output\":\"" + filler + "\",\"status\":\"completed\",\"usage\":{\"input_tokens\":3,\"output_tokens\":7}}}\n\n"
			kind, wantOut = apiResponses, 7
		default:
			stream = "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"usage\":{\"input_tokens\":3,\"output_tokens\":0}}}\n\n" +
				"event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"delta\":{\"type\":\"text_delta\",\"text\":\"" + filler + "\"}}\n\n" +
				"event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},\"usage\":{\"output_tokens\":9}}\n\nevent: message_stop\ndata: {\"type\":\"message_stop\"}\n\n"
			kind, wantOut = apiMessages, 9
		}
		got, ev := runTapAs(t, kind, "text/event-stream", stream, removed != "", sizes, int(bufSize))
		want := strings.Replace(stream, removed, "", 1)
		if removed == "" {
			want = stream
		}
		if string(got) != want {
			t.Fatalf("client got %d bytes, want %d", len(got), len(want))
		}
		sum := sha256.Sum256(got)
		if ev.Output.Hash != hashing.FormatDigest(hashing.SHA256, sum[:]) {
			t.Fatal("output hash is not the digest of what the client got")
		}
		if ev.Output.Tokens == nil || *ev.Output.Tokens != wantOut || ev.Status.Outcome != audit.OutcomeOK {
			t.Fatalf("tokens %v, outcome %s %s", ev.Output.Tokens, ev.Status.Outcome, ev.Status.Error)
		}
	})
}
