package bench

import (
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/auditproxy/auditproxy/audit"
	"github.com/auditproxy/auditproxy/forward"
	"github.com/auditproxy/auditproxy/internal/forwardrecv"
	"github.com/auditproxy/auditproxy/spool"
)

// realisticEvent is an inference event as the proxy records it (about 700
// bytes of JSON).
func realisticEvent(i int64, now time.Time) *audit.Event {
	in, out := int64(812), int64(300)
	ttft := 45.612
	key := "k1:9f86d081884c7d659a2feaa0c55ad015"
	return &audit.Event{V: 1, Type: audit.TypeInference, ID: audit.NewID(), Time: audit.Timestamp(now),
		RequestID: fmt.Sprintf("req-%012d", i), Method: "POST", Path: "/v1/chat/completions", Stream: true,
		Model:    audit.Model{Name: "meta-llama/Llama-3.1-8B-Instruct"},
		Input:    audit.Body{Hash: "blake3:af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262", Bytes: 4211, Tokens: &in},
		Output:   audit.Body{Hash: "blake3:d74981efa70a0c880b8d8c1985d075dbcbf679b99a5f9914e5aaf96b831a9e24", Bytes: 61840, Tokens: &out, FinishReason: "stop"},
		APIKeyID: &key,
		Latency:  audit.Latency{Total: 2734.118, TTFT: &ttft, Upstream: 2733.904, Overhead: 0.214},
		Status:   audit.Status{Code: 200, Outcome: audit.OutcomeOK},
		Source:   audit.Source{Host: "gpu-node-17", Version: "0.3.0"},
	}
}

func startShipPath(b *testing.B, durability spool.Durability, onEntry func(forwardrecv.Entry)) (*spool.Spool, *forwardrecv.Receiver) {
	b.Helper()
	recv, err := forwardrecv.Start("127.0.0.1:0", forwardrecv.Config{Discard: true, OnEntry: onEntry})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { recv.Close() })
	sp, err := spool.Open(b.TempDir(), spool.Options{Durability: durability, Forwarding: true})
	if err != nil {
		b.Fatal(err)
	}
	sh, err := forward.New(sp, forward.Options{Address: "tcp://" + recv.Addr()})
	if err != nil {
		b.Fatal(err)
	}
	sh.Start()
	b.Cleanup(func() { sp.Close(); sh.Close() })
	return sp, recv
}

// BenchmarkShipWithAcks: events recorded by 64 concurrent requests (sync
// durability: each waits for its group commit) until the loopback
// aggregator has acknowledged every one. events/s is the end-to-end rate.
func BenchmarkShipWithAcks(b *testing.B) {
	for _, d := range []spool.Durability{spool.DurabilitySync, spool.DurabilityAsync} {
		b.Run(string(d), func(b *testing.B) {
			sp, recv := startShipPath(b, d, nil)
			var next atomic.Int64
			b.ReportAllocs()
			b.ResetTimer()
			var wg sync.WaitGroup
			for range 64 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for {
						i := next.Add(1)
						if i > int64(b.N) {
							return
						}
						if err := sp.Record(realisticEvent(i, time.Now())); err != nil {
							b.Error(err)
							return
						}
					}
				}()
			}
			wg.Wait()
			if !recv.WaitFor(b.N, time.Minute) {
				b.Fatalf("receiver has %d of %d events", recv.Len(), b.N)
			}
			b.StopTimer()
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
		})
	}
}

// BenchmarkEventToReceiverLatency records events at a fixed rate (open
// loop: one goroutine per event, started on schedule) for a fixed time and
// reports the time from Record being called to the aggregator holding the
// event. Run it with -benchtime=1x; b.N only repeats the measurement.
func BenchmarkEventToReceiverLatency(b *testing.B) {
	const rate = 5000
	const duration = 5 * time.Second
	for range b.N {
		var mu sync.Mutex
		var lat []time.Duration
		sp, recv := startShipPath(b, spool.DurabilitySync, func(e forwardrecv.Entry) {
			d := time.Since(e.Time)
			mu.Lock()
			lat = append(lat, d)
			mu.Unlock()
		})
		total := int(rate * duration.Seconds())
		start := time.Now()
		var wg sync.WaitGroup
		for i := range total {
			due := start.Add(time.Duration(i) * time.Second / rate)
			time.Sleep(time.Until(due))
			wg.Add(1)
			go func() {
				defer wg.Done()
				// The event's time is when it was due, so lateness of the
				// load generator counts against us, not for us.
				if err := sp.Record(realisticEvent(int64(i), due)); err != nil {
					b.Error(err)
				}
			}()
		}
		wg.Wait()
		if !recv.WaitFor(total, time.Minute) {
			b.Fatalf("receiver has %d of %d events", recv.Len(), total)
		}
		mu.Lock()
		slices.Sort(lat)
		q := func(p float64) float64 { return float64(lat[int(p*float64(len(lat)-1))]) / 1e6 }
		b.ReportMetric(q(0.5), "p50-ms")
		b.ReportMetric(q(0.99), "p99-ms")
		b.ReportMetric(float64(lat[len(lat)-1])/1e6, "max-ms")
		b.ReportMetric(float64(len(lat))/time.Since(start).Seconds(), "events/s")
		mu.Unlock()
	}
}
