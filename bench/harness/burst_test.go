package main

import (
	"bufio"
	"context"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/valyala/fasthttp"
)

// sseServer is an in-process SSE upstream for the burst tests. Each
// request gets events data events itl apart and data: [DONE]; the requests
// numbered (in arrival order, from 0) failAt, stallAt and slowAt answer
// 500, pause stall between their first two events, and take slow longer,
// spread over their gaps so that none of them is a stall.
type sseServer struct {
	events                  int
	itl, stall, slow        time.Duration
	failAt, stallAt, slowAt int64

	url      string
	accepted atomic.Int64 // TCP connections
	requests atomic.Int64
	mu       sync.Mutex
	arrivals []time.Time
}

func startSSEServer(t *testing.T, s *sseServer) *sseServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &fasthttp.Server{Handler: s.handle}
	go srv.Serve(&countingListener{Listener: ln, n: &s.accepted})
	t.Cleanup(func() { srv.Shutdown() })
	s.url = "http://" + ln.Addr().String()
	return s
}

type countingListener struct {
	net.Listener
	n *atomic.Int64
}

func (l *countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.n.Add(1)
	}
	return c, err
}

func (s *sseServer) handle(ctx *fasthttp.RequestCtx) {
	k := s.requests.Add(1) - 1
	s.mu.Lock()
	s.arrivals = append(s.arrivals, time.Now())
	s.mu.Unlock()
	if k == s.failAt {
		ctx.Error("upstream broke", fasthttp.StatusInternalServerError)
		return
	}
	ctx.SetContentType("text/event-stream")
	ctx.SetBodyStreamWriter(func(w *bufio.Writer) {
		for i := range s.events {
			if i > 0 {
				time.Sleep(s.itl)
				if k == s.slowAt {
					time.Sleep(s.slow / time.Duration(s.events-1))
				}
			}
			if i == 1 && k == s.stallAt {
				time.Sleep(s.stall)
			}
			w.WriteString(`data: {"id":"chatcmpl-x","object":"chat.completion.chunk","choices":[]}` + "\n\n")
			w.Flush()
		}
		w.WriteString("data: [DONE]\n\n")
		w.Flush()
	})
}

// arrivalSpan is the time between the first request's arrival and the
// last's.
func (s *sseServer) arrivalSpan() time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	lo, hi := s.arrivals[0], s.arrivals[0]
	for _, a := range s.arrivals {
		lo, hi = minTime(lo, a), maxTime(hi, a)
	}
	return hi.Sub(lo)
}

func minTime(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}

func maxTime(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// TestRunBurst starts a burst against a server where one stream fails, one
// stalls and one ends late: the burst must count each, and last until the
// late one's last byte, however early the others end.
func TestRunBurst(t *testing.T) {
	const n, events, itl = 20, 6, 40 * time.Millisecond
	// The slow stream's gaps are 160 ms, under stallAfter; the stalled
	// stream's one of 440 ms is over it, and it ends before the slow one.
	const slow, stall, stallAfter = 600 * time.Millisecond, 400 * time.Millisecond, 250 * time.Millisecond
	srv := startSSEServer(t, &sseServer{events: events, itl: itl, stall: stall, slow: slow, failAt: 3, stallAt: 7, slowAt: 11})
	ideal := (events - 1) * itl
	spec := loadSpec{stream: true, body: []byte(`{}`), concurrency: n, wantEvents: events, stallAfter: stallAfter, burst: true, ideal: ideal}
	hc := newClient(strings.TrimPrefix(srv.url, "http://"), spec)
	defer hc.CloseIdleConnections()

	b := runBurst(context.Background(), hc, &target{name: "sse", url: srv.url}, spec)
	if b.streams != n || b.errors != 1 || b.stalls != 1 {
		t.Errorf("%d streams, %d errors, %d stalled; want %d, 1, 1", b.streams, b.errors, b.stalls, n)
	}
	if !strings.Contains(b.firstErr, "status 500") {
		t.Errorf("first error %q, want the 500", b.firstErr)
	}
	if got := srv.requests.Load(); got != n {
		t.Errorf("the server got %d requests, want %d", got, n)
	}
	// The slow stream paces ideal plus slow before its last byte; ending the burst at the first, the typical or the median
	// stream's end would come in under this.
	if floor := ideal + slow; b.elapsed < floor {
		t.Errorf("burst ended after %v, before the slow stream could (%v)", b.elapsed, floor)
	}
	// Loose: a loaded machine, the race detector; a sequential burst would
	// take n × ideal = 4 s and more.
	if limit := ideal + slow + time.Second; b.elapsed > limit {
		t.Errorf("burst took %v, want under %v", b.elapsed, limit)
	}
	// All requests were out together: they reached the server within one
	// stream's pacing of each other.
	if span := srv.arrivalSpan(); span >= ideal {
		t.Errorf("requests reached the server over %v, want within one stream's %v", span, ideal)
	}
	if b.spread < 0 || b.spread >= ideal || b.ttftMax <= 0 || b.ttftMax >= b.elapsed {
		t.Errorf("send spread %v, slowest TTFT %v of a %v burst: want 0 <= spread < %v, 0 < TTFT < burst", b.spread, b.ttftMax, b.elapsed, ideal)
	}
}

// TestRunRoundBurst runs a stream round with its burst: the burst must run
// on the connections the window opened, not dial new ones, and its
// figures reach the round's result.
func TestRunRoundBurst(t *testing.T) {
	const n, events, itl = 4, 5, 10 * time.Millisecond
	srv := startSSEServer(t, &sseServer{events: events, itl: itl, failAt: -1, stallAt: -1, slowAt: -1})
	ideal := (events - 1) * itl
	spec := loadSpec{stream: true, body: []byte(`{}`), concurrency: n, warmup: 20 * time.Millisecond, duration: 150 * time.Millisecond,
		wantEvents: events, stallAfter: time.Second, burst: true, ideal: ideal}
	r := runRound(context.Background(), &target{name: "sse", url: srv.url}, spec)
	if r.requests == 0 || r.errors != 0 {
		t.Fatalf("window: %d streams, %d errors (%s); want streams and no errors", r.requests, r.errors, r.firstErr)
	}
	b := r.burst
	if b == nil {
		t.Fatal("no burst in the round's result")
	}
	if b.streams != n || b.errors != 0 || b.stalls != 0 || b.elapsed < ideal || b.elapsed > ideal+time.Second {
		t.Errorf("burst: %d streams, %d errors (%s), %d stalled, %v; want %d, none, none, between %v and %v",
			b.streams, b.errors, b.firstErr, b.stalls, b.elapsed, n, ideal, ideal+time.Second)
	}
	if got := srv.accepted.Load(); got != n {
		t.Errorf("%d connections for a window and a burst of %d streams; want %d, the burst on the window's", got, n, n)
	}

	// Without -stream-burst a round runs none.
	spec.burst = false
	if r := runRound(context.Background(), &target{name: "sse", url: srv.url}, spec); r.burst != nil {
		t.Errorf("a burst ran with spec.burst false: %+v", *r.burst)
	}
}
