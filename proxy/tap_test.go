package proxy

import (
	"bytes"
	"io"
	"strings"
	"testing"

	"github.com/valyala/fasthttp"
	"github.com/zeebo/blake3"

	"github.com/auditproxy/auditproxy/audit"
	"github.com/auditproxy/auditproxy/hashing"
)

// lastEvent keeps the last recorded event.
type lastEvent struct{ ev audit.Event }

func (l *lastEvent) Record(ev *audit.Event) error {
	l.ev = *ev
	if ev.Output.Tokens != nil { // the proxy reuses what the pointers point at
		n := *ev.Output.Tokens
		l.ev.Output.Tokens = &n
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
	rec := &lastEvent{}
	kid, _ := hashing.NewKeyIDer(make([]byte, 32))
	p, err := New(Config{Upstream: "http://127.0.0.1:1", KeyIDer: kid, Recorder: rec})
	if err != nil {
		t.Fatal(err)
	}
	x := p.acquireExchange()
	x.ev.Stream = true
	x.tap.stripUsage = strip
	x.tap.status = 200
	x.tap.start(fasthttp.AcquireResponse(), &splitReader{data: []byte(stream), sizes: upSizes}, []byte("text/event-stream; charset=utf-8"), -1)
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
			sum := blake3.Sum256([]byte(want))
			if ev.Output.Hash != hashing.FormatDigest(hashing.BLAKE3, sum[:]) || ev.Output.Bytes != int64(len(want)) {
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
		sum := blake3.Sum256(got)
		if ev.Output.Hash != hashing.FormatDigest(hashing.BLAKE3, sum[:]) {
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
}

func (r *recordWatcher) Record(*audit.Event) error {
	r.atRec = *r.handed
	r.n++
	return nil
}

// TestTapHoldsBackTheEnd: the event is recorded before the last bytes of a
// known-length body, or a stream's [DONE], are handed to the server, and
// exactly once.
func TestTapHoldsBackTheEnd(t *testing.T) {
	body := `{"id":"x","object":"chat.completion","choices":[{"index":0,"message":{"content":"` + strings.Repeat("z", 5000) +
		`"},"finish_reason":"stop"}],"usage":{"prompt_tokens":3,"completion_tokens":4}}`
	for _, tc := range []struct {
		name, stream, ctype string
		size                int
		lastPart            string
	}{
		{"json of known length", body, "application/json", len(body), ""},
		{"sse", vllmStream(20), "text/event-stream", -1, doneChunk},
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
				t.Errorf("%s: %d bytes handed out before the event, past the start of %q", tc.name, rec.atRec, tc.lastPart)
			}
		}
	}
}
