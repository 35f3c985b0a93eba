package bench

import (
	"bytes"
	"io"
	"log/slog"
	"net"
	"strings"
	"testing"

	"github.com/valyala/fasthttp"

	"github.com/auditproxy/auditproxy/hashing"
	"github.com/auditproxy/auditproxy/internal/fakevllm"
	"github.com/auditproxy/auditproxy/proxy"
	"github.com/auditproxy/auditproxy/spool"
)

// startPath starts a fake vLLM and, when durability is not empty, auditproxy
// in front of it (recording to a real event file with that durability), all
// in this process over loopback TCP. It returns a client for whichever the
// benchmark talks to.
func startPath(b *testing.B, durability spool.Durability) *fasthttp.HostClient {
	b.Helper()
	fake := fakevllm.New(fakevllm.Config{})
	upstream, err := fake.Start("127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { fake.Close() })
	addr := strings.TrimPrefix(upstream, "http://")
	if durability != "" {
		log, err := spool.Open(b.TempDir(), spool.Options{Durability: durability})
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { log.Close() })
		kid, _ := hashing.NewKeyIDer(make([]byte, 32))
		p, err := proxy.New(proxy.Config{Upstream: upstream, KeyIDer: kid, Recorder: log,
			Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
		if err != nil {
			b.Fatal(err)
		}
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			b.Fatal(err)
		}
		go p.Serve(ln)
		b.Cleanup(func() { p.Shutdown() })
		addr = ln.Addr().String()
	}
	return &fasthttp.HostClient{Addr: addr, MaxConns: 1024}
}

// prompt1KiB is a chat request of about 1 KiB; max_tokens 300 makes the
// fake's answer about 2 KiB.
var prompt1KiB = `{"model":"meta-llama/Llama-3.1-8B-Instruct","max_tokens":300,"messages":[{"role":"user","content":"` +
	strings.Repeat("audit every inference ", 44) + `"}]}`

func benchRequest(b *testing.B, c *fasthttp.HostClient, body string, wantSuffix []byte) {
	req := fasthttp.AcquireRequest()
	resp := fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(resp)
	req.SetRequestURI("http://" + c.Addr + "/v1/chat/completions")
	req.Header.SetMethod("POST")
	req.Header.SetContentType("application/json")
	req.Header.Set("Authorization", "Bearer sk-bench")
	req.SetBodyString(body)
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		if err := c.Do(req, resp); err != nil {
			b.Fatal(err)
		}
		if resp.StatusCode() != 200 || !bytes.HasSuffix(resp.Body(), wantSuffix) {
			b.Fatalf("status %d body %q", resp.StatusCode(), resp.Body())
		}
	}
}

// paths are the ways a benchmark request goes: straight to the fake, or
// through auditproxy with async durability (the proxy's own work) or sync
// durability (plus waiting for write and fsync, one request at a time).
var paths = []struct {
	name       string
	durability spool.Durability
}{{"direct", ""}, {"proxy-async", spool.DurabilityAsync}, {"proxy-sync", spool.DurabilitySync}}

// BenchmarkNonStream is one client, one request at a time: a non-streamed
// chat completion with a 1 KiB prompt and a 2 KiB answer. allocs/op covers
// the whole process (client, proxy, fake); the proxy's share is proxy minus
// direct.
func BenchmarkNonStream(b *testing.B) {
	for _, via := range paths {
		b.Run(via.name, func(b *testing.B) {
			benchRequest(b, startPath(b, via.durability), prompt1KiB, []byte("}"))
		})
	}
}

// BenchmarkStream is a streamed chat completion of 200 chunks with no
// pacing: the cost of tapping, parsing and stripping an SSE stream.
func BenchmarkStream(b *testing.B) {
	body := `{"model":"meta-llama/Llama-3.1-8B-Instruct","max_tokens":200,"stream":true,"messages":[{"role":"user","content":"hi"}]}`
	for _, via := range paths {
		b.Run(via.name, func(b *testing.B) {
			benchRequest(b, startPath(b, via.durability), body, []byte("data: [DONE]\n\n"))
		})
	}
}
