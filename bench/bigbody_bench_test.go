package bench

import (
	"bufio"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"runtime"
	"runtime/debug"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/auditproxy/auditproxy/audit"
	"github.com/auditproxy/auditproxy/hashing"
	"github.com/auditproxy/auditproxy/proxy"
)

// BenchmarkLargeRequestBody measures what a 100 MB multimodal chat request
// costs the proxy: a base64 image in a message, the model named twice (the
// last one is vLLM's), sent by clients that generate it as they send it, to
// an upstream that reads and drops it and answers a small completion (or
// a stream, for stream:true), all in this process. Nothing in the process
// but the proxy holds a body, so the peak of its resident memory above what
// it was before the uploads (peak-rss-MB) and the peak Go heap in use
// (peak-heap-MB) are the proxy's. MB/s is the rate of request bytes
// through the proxy. Each event is checked: model, stream flag, and input
// length (events-ok counts the right ones).
//
//	go test ./bench -run '^$' -bench LargeRequestBody -benchtime 3x -count 1
func BenchmarkLargeRequestBody(b *testing.B) {
	for _, c := range []struct {
		name            string
		clients         int
		stream, chunked bool
	}{
		{"1x100MB", 1, false, false},
		{"1x100MB-stream-chunked", 1, true, true},
		{"8x100MB", 8, false, false},
	} {
		b.Run(c.name, func(b *testing.B) {
			runLargeBodies(b, c.clients, c.stream, c.chunked)
		})
	}
}

const largeBodyImage = 100 << 20

// largeChatBody generates a chat request with a largeBodyImage-byte base64
// image as it is read, without holding it.
type largeChatBody struct {
	parts [3][]byte
	part  int
	image int64 // image bytes left
}

func newLargeChatBody(stream bool) *largeChatBody {
	return &largeChatBody{
		parts: [3][]byte{
			fmt.Appendf(nil, `{"model":"someone-else","stream":%v,"messages":[{"role":"user","content":[{"type":"text","text":"describe it"},{"type":"image_url","image_url":{"url":"data:image/png;base64,`, stream),
			nil,
			[]byte(`"}}]}],"model":"meta-llama/Llama-3.1-8B-Instruct"}`),
		},
		image: largeBodyImage,
	}
}

func (r *largeChatBody) size() int64 {
	return int64(len(r.parts[0])) + r.image + int64(len(r.parts[2]))
}

var base64Run = func() []byte {
	b := make([]byte, 64<<10)
	for i := range b {
		b[i] = "iVBORw0KGgoAAAANSUhEUg"[i%22]
	}
	return b
}()

func (r *largeChatBody) Read(p []byte) (int, error) {
	for r.part < 3 {
		if r.part == 1 {
			if r.image == 0 {
				r.part++
				continue
			}
			n := copy(p[:min(int64(len(p)), r.image)], base64Run)
			r.image -= int64(n)
			return n, nil
		}
		if len(r.parts[r.part]) == 0 {
			r.part++
			continue
		}
		n := copy(p, r.parts[r.part])
		r.parts[r.part] = r.parts[r.part][n:]
		return n, nil
	}
	return 0, io.EOF
}

// checkingRecorder counts the events of the large bodies that name the
// last model, the stream flag sent and the whole body's length.
type checkingRecorder struct {
	stream bool
	size   int64
	ok     atomic.Int64
}

func (r *checkingRecorder) Record(ev *audit.Event) error {
	if ev.Model.Name == "meta-llama/Llama-3.1-8B-Instruct" && ev.Stream == r.stream && ev.Input.Bytes == r.size &&
		ev.Status.Outcome == audit.OutcomeOK {
		r.ok.Add(1)
	}
	return nil
}

func runLargeBodies(b *testing.B, clients int, stream, chunked bool) {
	upstream := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		if stream {
			w.Header().Set("Content-Type", "text/event-stream")
			io.WriteString(w, `data: {"id":"c","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":"a cat"},"finish_reason":"stop"}]}`+"\n\ndata: [DONE]\n\n")
			return
		}
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"id":"c","object":"chat.completion","model":"meta-llama/Llama-3.1-8B-Instruct","choices":[{"index":0,"message":{"role":"assistant","content":"a cat"},"finish_reason":"stop"}],"usage":{"prompt_tokens":9000,"total_tokens":9002,"completion_tokens":2}}`)
	})}
	uln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	go upstream.Serve(uln)
	defer upstream.Close()
	size := newLargeChatBody(stream).size()
	rec := &checkingRecorder{stream: stream, size: size}
	kid, _ := hashing.NewKeyIDer(make([]byte, hashing.KeyIDSecretSize))
	p, err := proxy.New(proxy.Config{Upstream: "http://" + uln.Addr().String(), KeyIDer: kid, Recorder: rec,
		Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		b.Fatal(err)
	}
	pln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	go p.Serve(pln)
	defer p.Shutdown()

	runtime.GC()
	debug.FreeOSMemory()
	baseRSS := vmRSS()
	var peakRSS, peakHeap atomic.Uint64
	stop := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		var ms runtime.MemStats
		for {
			select {
			case <-stop:
				return
			case <-time.After(10 * time.Millisecond):
			}
			if r := vmRSS(); r > peakRSS.Load() {
				peakRSS.Store(r)
			}
			runtime.ReadMemStats(&ms)
			if ms.HeapInuse > peakHeap.Load() {
				peakHeap.Store(ms.HeapInuse)
			}
		}
	}()

	b.SetBytes(size * int64(clients))
	b.ResetTimer()
	var failed atomic.Int64
	for b.Loop() {
		var wg sync.WaitGroup
		for range clients {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if code := uploadLarge(pln.Addr().String(), stream, chunked); code != 200 {
					failed.Add(1)
				}
			}()
		}
		wg.Wait()
	}
	b.StopTimer()
	close(stop)
	<-sampled
	if failed.Load() > 0 {
		b.Fatalf("%d uploads failed", failed.Load())
	}
	b.ReportMetric(float64(peakRSS.Load()-min(baseRSS, peakRSS.Load()))/1e6, "peak-rss-MB")
	b.ReportMetric(float64(peakHeap.Load())/1e6, "peak-heap-MB")
	b.ReportMetric(float64(rec.ok.Load())/float64(b.N*clients), "events-ok")
}

// uploadLarge sends one large chat body and returns the answer's status.
func uploadLarge(addr string, stream, chunked bool) int {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		return 0
	}
	defer c.Close()
	body := newLargeChatBody(stream)
	w := bufio.NewWriterSize(c, 64<<10)
	if chunked {
		io.WriteString(w, "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n")
		buf := make([]byte, 64<<10)
		for {
			n, err := body.Read(buf)
			if n > 0 {
				fmt.Fprintf(w, "%x\r\n", n)
				w.Write(buf[:n])
				io.WriteString(w, "\r\n")
			}
			if err != nil {
				break
			}
		}
		io.WriteString(w, "0\r\n\r\n")
	} else {
		io.WriteString(w, "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: "+
			strconv.FormatInt(body.size(), 10)+"\r\n\r\n")
		io.Copy(w, body)
	}
	if w.Flush() != nil {
		return 0
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return 0
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}
