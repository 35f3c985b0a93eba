package bench

import (
	"net"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/fluent/fluent-logger-golang/fluent"

	"github.com/auditproxy/auditproxy/internal/forwardrecv"
)

// These benchmarks measure what github.com/fluent/fluent-logger-golang can
// do as the shipper's transport when every event must be acknowledged:
// with RequestAck the library sends each Post as its own Message-mode frame
// and blocks until that frame's ack comes back, so one connection carries
// one event per round trip and nothing is batched. The peer is
// internal/forwardrecv in this process over loopback TCP, keeping no entries,
// so allocs/op counts the receiver's decoding too.

// auditEvent is a realistic audit record: about 700 bytes in msgpack (the
// frame around it adds about 60), with the nested maps auditproxy's events
// have.
func auditEvent() map[string]any {
	return map[string]any{
		"id":         "evt_01JDQ7Z6Q4M8X3V7K2T5N0B1C4",
		"time":       "2026-11-23T11:37:12.778712Z",
		"request_id": "req-7f3c2a91-5d4e-4b8a-9c1f-2e6d8a0b3c57",
		"key_id":     "kid_3b9f2c1d",
		"method":     "POST",
		"path":       "/v1/chat/completions",
		"stream":     true,
		"seq":        int64(1234567),
		"model": map[string]any{
			"name": "meta-llama/Llama-3.1-8B-Instruct",
			"root": "/models/meta-llama/Llama-3.1-8B-Instruct",
		},
		"input": map[string]any{
			"hash":   "blake3:5f0c3e1a9b7d2c4e6f8a0b1c3d5e7f9a2b4c6d8e0f1a3b5c7d9e1f2a4b6c8d0e",
			"bytes":  int64(1034),
			"tokens": int64(212),
		},
		"output": map[string]any{
			"hash":          "blake3:a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f90",
			"bytes":         int64(2088),
			"tokens":        int64(300),
			"finish_reason": "length",
		},
		"latency_ms": map[string]any{
			"ttft":     41.7,
			"total":    1873.2,
			"upstream": 1869.9,
			"proxy":    0.41,
		},
		"status": map[string]any{
			"code":     int64(200),
			"upstream": int64(200),
			"error":    nil,
		},
		"source": map[string]any{
			"ip":         "10.12.4.87",
			"user_agent": "openai-python/1.52.0",
			"tenant":     "team-research",
		},
	}
}

// startFluentPeer starts a receiver that acks and keeps nothing.
func startFluentPeer(b *testing.B) (*forwardrecv.Receiver, string, int) {
	b.Helper()
	r, err := forwardrecv.Start("127.0.0.1:0", forwardrecv.Config{Discard: true})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { r.Close() })
	host, port, err := net.SplitHostPort(r.Addr())
	if err != nil {
		b.Fatal(err)
	}
	p, err := strconv.Atoi(port)
	if err != nil {
		b.Fatal(err)
	}
	return r, host, p
}

func newFluentLogger(b *testing.B, host string, port int) *fluent.Fluent {
	b.Helper()
	f, err := fluent.New(fluent.Config{
		FluentHost:         host,
		FluentPort:         port,
		RequestAck:         true,
		SubSecondPrecision: true,
		ReadTimeout:        5 * time.Second,
		Timeout:            3 * time.Second,
	})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { f.Close() })
	return f
}

// reportFluent checks that the receiver acked every event, without errors,
// and reports throughput and frame size.
func reportFluent(b *testing.B, r *forwardrecv.Receiver) {
	b.Helper()
	s := r.Stats()
	if s.Acks != int64(b.N) || s.Entries != int64(b.N) || s.Errors != 0 {
		b.Fatalf("posted %d events; receiver stats %+v", b.N, s)
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
	b.ReportMetric(float64(s.Bytes)/float64(s.Messages), "B/frame")
}

// BenchmarkFluentLoggerRequestAck: one logger, one connection, b.N
// sequential Posts, each waiting for its ack.
func BenchmarkFluentLoggerRequestAck(b *testing.B) {
	r, host, port := startFluentPeer(b)
	f := newFluentLogger(b, host, port)
	event := auditEvent()
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		if err := f.Post("auditproxy.event", event); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	reportFluent(b, r)
}

// BenchmarkFluentLoggerRequestAckParallel: four loggers, so four
// connections, posting concurrently, each its share of b.N.
func BenchmarkFluentLoggerRequestAckParallel(b *testing.B) {
	const loggers = 4
	r, host, port := startFluentPeer(b)
	fs := make([]*fluent.Fluent, loggers)
	for i := range fs {
		fs[i] = newFluentLogger(b, host, port)
	}
	b.ReportAllocs()
	b.ResetTimer()
	var wg sync.WaitGroup
	errs := make(chan error, loggers)
	for i, f := range fs {
		n := b.N / loggers
		if i < b.N%loggers {
			n++
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			event := auditEvent()
			for range n {
				if err := f.Post("auditproxy.event", event); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	b.StopTimer()
	close(errs)
	for err := range errs {
		b.Fatal(err)
	}
	reportFluent(b, r)
}
