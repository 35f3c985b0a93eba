package bench

import (
	"bytes"
	"crypto/rand"
	"log/slog"
	"net"
	"runtime"
	"testing"

	"github.com/valyala/fasthttp"
	"github.com/valyala/fasthttp/fasthttputil"
	"golang.org/x/mod/sumdb/note"

	"github.com/auditproxy/auditproxy/audit"
	"github.com/auditproxy/auditproxy/auditlog"
	"github.com/auditproxy/auditproxy/hashing"
	"github.com/auditproxy/auditproxy/internal/fakevllm"
	"github.com/auditproxy/auditproxy/proxy"
	"github.com/auditproxy/auditproxy/spool"
)

// BenchmarkProxyAllocs measures the allocations of one proxied request over
// the whole path, with no TCP: client -> in-memory listener -> auditproxy ->
// in-memory listener -> fake vLLM, all in this process. The proxy is wired
// as `auditproxy serve` wires it: a real spool with the product default
// durability (sync: each answer waits for its event's write and fsync), a
// verifiable log that chains every event and signs checkpoints, and the
// proxy's metrics.
//
// allocs/op counts the whole process (client, proxy, spool committer, fake).
// The "direct" sub-benchmarks are the client talking to the fake with no
// proxy; each "proxy" sub-benchmark also measures that baseline itself, on
// the same fake, and reports the difference as proxy-allocs/op: the proxy's
// share, the figure issue #6 bounds at 10.
//
//	go test ./bench -run '^$' -bench ProxyAllocs -benchtime 20000x -count 3
//
// SetBytes counts the response body, so MB/s is the rate of answer bytes.
func BenchmarkProxyAllocs(b *testing.B) {
	cases := []struct {
		name, body string
		wantSuffix []byte
	}{
		// A 1 KiB prompt and a ~2 KiB non-streamed answer.
		{"nonstream", prompt1KiB, []byte("}")},
		// A streamed answer of 200 chunks, with no pacing; the proxy adds
		// include_usage upstream and strips the usage chunk again.
		{"stream", `{"model":"meta-llama/Llama-3.1-8B-Instruct","max_tokens":200,"stream":true,"messages":[{"role":"user","content":"hi"}]}`,
			[]byte("data: [DONE]\n\n")},
	}
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			b.Run("direct", func(b *testing.B) {
				p := startInmemoryPath(b, false)
				allocLoop(b, p.direct, c.body, c.wantSuffix)
			})
			b.Run("proxy", func(b *testing.B) {
				p := startInmemoryPath(b, true)
				base := allocsPerRequest(b, p.direct, c.body, c.wantSuffix, 2000)
				perOp := allocLoop(b, p.proxied, c.body, c.wantSuffix)
				b.ReportMetric(perOp-base, "proxy-allocs/op")
			})
		})
	}
}

// inmemoryPath is a fake vLLM and, optionally, auditproxy in front of it,
// connected by in-memory listeners.
type inmemoryPath struct {
	direct  *fasthttp.HostClient // to the fake
	proxied *fasthttp.HostClient // to the proxy; nil without one
}

func startInmemoryPath(b *testing.B, withProxy bool) inmemoryPath {
	b.Helper()
	fake := fakevllm.New(fakevllm.Config{})
	fakeLn := fasthttputil.NewInmemoryListener()
	go fake.Serve(fakeLn) //nolint:errcheck // ends at Close
	b.Cleanup(func() { fake.Close() })
	dialFake := func(string) (net.Conn, error) { return fakeLn.Dial() }
	path := inmemoryPath{direct: &fasthttp.HostClient{Addr: "fakevllm", Dial: dialFake}}
	if !withProxy {
		return path
	}

	skey, _, err := note.GenerateKey(rand.Reader, "bench-allocs")
	if err != nil {
		b.Fatal(err)
	}
	signer, err := note.NewSigner(skey)
	if err != nil {
		b.Fatal(err)
	}
	source := audit.Source{Host: "gpu-node-17", Version: "bench"}
	logger := slog.New(slog.DiscardHandler)
	sp, err := spool.Open(b.TempDir(), spool.Options{
		Durability: spool.DurabilitySync,
		Log:        &auditlog.Options{Name: "bench-allocs", Signer: signer, Source: source},
		Logger:     logger,
	})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { sp.Close() })
	kid, err := hashing.NewKeyIDer(make([]byte, 32))
	if err != nil {
		b.Fatal(err)
	}
	p, err := proxy.New(proxy.Config{
		Upstream: "http://fakevllm:8000",
		Dial:     dialFake,
		KeyIDer:  kid,
		Recorder: sp,
		GPU:      func() *string { return nil }, // as serve without NVML: an atomic load of nil
		Logger:   logger,
		Source:   source,
	})
	if err != nil {
		b.Fatal(err)
	}
	proxyLn := fasthttputil.NewInmemoryListener()
	go p.Serve(proxyLn) //nolint:errcheck // ends at Shutdown
	b.Cleanup(func() { p.Shutdown() })
	path.proxied = &fasthttp.HostClient{Addr: "auditproxy",
		Dial: func(string) (net.Conn, error) { return proxyLn.Dial() }}
	return path
}

// newChatRequest returns a chat completion request with body.
func newChatRequest(c *fasthttp.HostClient, body string) *fasthttp.Request {
	req := fasthttp.AcquireRequest()
	req.SetRequestURI("http://" + c.Addr + "/v1/chat/completions")
	req.Header.SetMethod("POST")
	req.Header.SetContentType("application/json")
	req.Header.Set("Authorization", "Bearer sk-bench")
	req.SetBodyString(body)
	return req
}

func doChat(tb testing.TB, c *fasthttp.HostClient, req *fasthttp.Request, resp *fasthttp.Response, wantSuffix []byte) {
	if err := c.Do(req, resp); err != nil {
		tb.Fatal(err)
	}
	if resp.StatusCode() != 200 || !bytes.HasSuffix(resp.Body(), wantSuffix) {
		tb.Fatalf("status %d body %q", resp.StatusCode(), resp.Body())
	}
}

// allocLoop runs the benchmark loop and returns its allocations per request,
// counted as the testing package counts allocs/op.
func allocLoop(b *testing.B, c *fasthttp.HostClient, body string, wantSuffix []byte) float64 {
	req := newChatRequest(c, body)
	resp := fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(resp)
	doChat(b, c, req, resp, wantSuffix) // warm up; its answer's size for SetBytes
	b.SetBytes(int64(len(resp.Body())))
	b.ReportAllocs()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	n := 0
	for b.Loop() {
		doChat(b, c, req, resp, wantSuffix)
		n++
	}
	runtime.ReadMemStats(&after)
	return float64(after.Mallocs-before.Mallocs) / float64(n)
}

// allocsPerRequest returns the allocations per request of n requests sent
// through c, after a warm-up.
func allocsPerRequest(b *testing.B, c *fasthttp.HostClient, body string, wantSuffix []byte, n int) float64 {
	req := newChatRequest(c, body)
	resp := fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(resp)
	for range 100 {
		doChat(b, c, req, resp, wantSuffix)
	}
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	for range n {
		doChat(b, c, req, resp, wantSuffix)
	}
	runtime.ReadMemStats(&after)
	return float64(after.Mallocs-before.Mallocs) / float64(n)
}
