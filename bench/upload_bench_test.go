package bench

import (
	"bufio"
	"bytes"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
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

// BenchmarkSlowLargeUploads measures the memory that request bodies hold: 20
// clients upload 31 MB bodies at 10 MB/s each, all at once, to a proxy whose
// upstream reads and discards them. A body over 8 MiB is streamed upstream
// as it arrives, holding a 64 KiB piece buffer (proxy/bigbody.go), so with
// the default request body budget (256 MiB) all fit; "unbounded" sets a
// budget of 8 GiB.
// It reports the peak of the process's resident memory above what it was
// before the uploads (peak-rss-MB), the peak Go heap (peak-heap-MB) and how
// many uploads were answered 200 and 503.
//
//	go test ./bench -run '^$' -bench SlowLargeUploads -benchtime 1x -count 3
func BenchmarkSlowLargeUploads(b *testing.B) {
	for _, c := range []struct {
		name   string
		budget int64
	}{{"default-budget", 0}, {"unbounded", 8 << 30}} {
		b.Run(c.name, func(b *testing.B) {
			for b.Loop() {
				runSlowUploads(b, c.budget)
			}
		})
	}
}

func runSlowUploads(b *testing.B, budget int64) {
	const (
		clients  = 20
		bodySize = 31 << 20
		step     = 1 << 20
		pause    = 100 * time.Millisecond
	)
	upstream := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, "{}")
	})}
	uln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	go upstream.Serve(uln)
	defer upstream.Close()
	kid, _ := hashing.NewKeyIDer(make([]byte, hashing.KeyIDSecretSize))
	p, err := proxy.New(proxy.Config{Upstream: "http://" + uln.Addr().String(), KeyIDer: kid, Recorder: discard{},
		MaxRequestBodySize: 32 << 20, RequestBodyBudget: budget, Logger: slog.New(slog.DiscardHandler)})
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
			case <-time.After(20 * time.Millisecond):
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

	chunk := bytes.Repeat([]byte("x"), step)
	var ok, refused atomic.Int64
	var wg sync.WaitGroup
	for range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := net.Dial("tcp", pln.Addr().String())
			if err != nil {
				return
			}
			defer c.Close()
			io.WriteString(c, "POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: "+
				strconv.Itoa(bodySize)+"\r\n\r\n")
			for sent := 0; sent < bodySize; sent += step {
				if _, err := c.Write(chunk[:min(step, bodySize-sent)]); err != nil {
					break // refused: the proxy answered and closed
				}
				time.Sleep(pause)
			}
			resp, err := http.ReadResponse(bufio.NewReader(c), nil)
			if err != nil {
				return
			}
			resp.Body.Close()
			switch resp.StatusCode {
			case 200:
				ok.Add(1)
			case 503:
				refused.Add(1)
			}
		}()
	}
	wg.Wait()
	close(stop)
	<-sampled
	b.ReportMetric(float64(peakRSS.Load()-min(baseRSS, peakRSS.Load()))/1e6, "peak-rss-MB")
	b.ReportMetric(float64(peakHeap.Load())/1e6, "peak-heap-MB")
	b.ReportMetric(float64(ok.Load()), "ok")
	b.ReportMetric(float64(refused.Load()), "refused")
}

// vmRSS returns the process's resident set size in bytes.
func vmRSS() uint64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, line := range bytes.Split(b, []byte("\n")) {
		if v, ok := bytes.CutPrefix(line, []byte("VmRSS:")); ok {
			kb, _ := strconv.ParseUint(string(bytes.TrimSpace(bytes.TrimSuffix(bytes.TrimSpace(v), []byte("kB")))), 10, 64)
			return kb << 10
		}
	}
	return 0
}

type discard struct{}

func (discard) Record(*audit.Event) error { return nil }
