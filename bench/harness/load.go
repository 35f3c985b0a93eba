package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/url"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/valyala/fasthttp"
)

// target is one side of the comparison.
type target struct {
	name  string
	url   string   // base URL, http://127.0.0.1:PORT
	procs []*child // processes whose CPU the target's rounds are charged with
	peer  bool     // a plain proxy of -peers, which auditproxy is compared with
}

// label is the target's name in tables.
func (t *target) label() string {
	if t.name == "fasthttp" {
		return bareProxyLabel
	}
	return t.name
}

func (t *target) addr() string {
	u, _ := url.Parse(t.url)
	return u.Host
}

// roundResult is what one round against one target measured.
type roundResult struct {
	requests  int64                    // requests (streams) started in the window and completed
	errors    int64                    // failed requests, all kinds
	firstErr  string                   // the first failure, to explain errors
	window    time.Duration            // measured time
	lat       []int64                  // ns: request latency (nonstream) or TTFT (stream)
	delays    []int64                  // ns: per-chunk delay (stream)
	chunks    int64                    // stream data events received in the window
	lags      []int64                  // ns: open loop, actual send minus intended send time
	unsent    int64                    // open loop: requests due in the window, still unsent after the grace
	cpu       map[string]time.Duration // CPU used by each child during the window
	rss       map[string]int64         // peak resident bytes of each child (with its descendants) in the window
	stalls    int64                    // streams in the window with a gap between events over loadSpec.stallAfter
	maxGap    time.Duration            // the longest gap between two events of one stream
	burst     *burstResult             // stream with loadSpec.burst: the burst after the window
	unsettled bool                     // the processes were still busy when the burst had to start
}

// loadSpec is one workload's traffic.
type loadSpec struct {
	stream      bool
	body        []byte
	headers     map[string]string
	concurrency int     // connections, and workers
	rate        float64 // nonstream open loop: requests per second over all workers; 0: closed loop
	warmup      time.Duration
	duration    time.Duration
	wantLen     int           // nonstream: exact answer length
	wantEvents  int           // stream: data events before [DONE]
	stallAfter  time.Duration // stream: a longer gap between two events of a stream is a stall
	once        bool          // stop after the first request (pre-flight checks)
	burst       bool          // stream: after the window, start concurrency streams at once (see runBurst)
	ideal       time.Duration // stream: what the fake's pacing alone makes a stream last, TTFT + (chunks − 1) × ITL
}

// workerResult is one worker's share of a round. Each worker keeps its own
// samples, merged when the round ends, so the measured path takes no locks.
type workerResult struct {
	requests, errors, chunks, unsent, stalls int64
	maxGap                                   time.Duration
	firstErr                                 string
	lat, delays, lags                        []int64
}

func newClient(addr string, spec loadSpec) *fasthttp.HostClient {
	return &fasthttp.HostClient{
		Addr:                     addr,
		MaxConns:                 spec.concurrency,
		MaxConnWaitTimeout:       30 * time.Second,
		NoDefaultUserAgentHeader: true,
		// A POST is not retried, so a failure counts instead of hiding.
		MaxIdemponentCallAttempts: 1,
		// Read/WriteTimeout are absolute per response in fasthttp; a stream
		// lasts a second or so, so these only catch a wedged peer.
		ReadTimeout:        60 * time.Second,
		WriteTimeout:       60 * time.Second,
		StreamResponseBody: spec.stream,
		ReadBufferSize:     16 << 10,
		// The burst after a stream round reuses the round's connections
		// after waiting for quiet (up to settleLimit): they must not be
		// closed as idle in between, or the burst would open new ones,
		// N at once, and measure a connect storm instead.
		MaxIdleConnDuration: time.Minute,
	}
}

// runRound sends spec's traffic to t with a fresh connection pool: warm-up
// first (not measured), then the measured window. Workers start a request
// only while the window is open; requests started in it are counted.
func runRound(ctx context.Context, t *target, spec loadSpec) roundResult {
	hc := newClient(t.addr(), spec)
	defer hc.CloseIdleConnections()
	start := time.Now()
	mStart := start.Add(spec.warmup)
	end := mStart.Add(spec.duration)

	// CPU is read when the window opens and closes, not when stragglers
	// finish.
	var cpuBefore, cpuAfter map[string]time.Duration
	cpuDone := make(chan struct{})
	go func() {
		defer close(cpuDone)
		for i, at := range []time.Time{mStart, end} {
			select {
			case <-time.After(time.Until(at)):
			case <-ctx.Done():
				return
			}
			if i == 0 {
				cpuBefore = cpuSnapshot(t.procs)
			} else {
				cpuAfter = cpuSnapshot(t.procs)
			}
		}
	}()

	// Resident memory is sampled through the window; the peak counts.
	rssDone := make(chan map[string]int64, 1)
	go func() {
		peak := map[string]int64{}
		defer func() { rssDone <- peak }()
		select {
		case <-time.After(time.Until(mStart)):
		case <-ctx.Done():
			return
		}
		for time.Now().Before(end) {
			samplePeakRSS(t.procs, peak)
			select {
			case <-time.After(250 * time.Millisecond):
			case <-ctx.Done():
				return
			}
		}
	}()

	// The open-loop schedule starts with the warm-up, so the warm-up
	// already runs at the measured rate. Requests due just before the
	// window closes may go out a little after it; only a backlog longer
	// than the grace is dropped, which bounds a round the target cannot
	// keep up with.
	sched := newSchedule(start, spec.rate)
	sendBy := end.Add(openLoopGrace(spec.duration))
	results := make([]workerResult, spec.concurrency)
	var wg sync.WaitGroup
	for i := range results {
		wg.Add(1)
		go func(w *workerResult) {
			defer wg.Done()
			switch {
			case spec.stream:
				streamWorker(ctx, hc, t.url, spec, mStart, end, w)
			case spec.rate > 0:
				openLoopWorker(ctx, hc, t.url, spec, sched, window{from: mStart, to: end}, sendBy, w)
			default:
				nonstreamWorker(ctx, hc, t.url, spec, mStart, end, w)
			}
		}(&results[i])
	}
	wg.Wait()
	<-cpuDone
	rss := <-rssDone

	r := roundResult{window: spec.duration, cpu: map[string]time.Duration{}, rss: rss}
	for _, w := range results {
		r.requests += w.requests
		r.errors += w.errors
		r.chunks += w.chunks
		r.unsent += w.unsent
		r.stalls += w.stalls
		r.maxGap = max(r.maxGap, w.maxGap)
		if r.firstErr == "" {
			r.firstErr = w.firstErr
		}
		r.lat = append(r.lat, w.lat...)
		r.delays = append(r.delays, w.delays...)
		r.lags = append(r.lags, w.lags...)
	}
	for name, after := range cpuAfter {
		if before, ok := cpuBefore[name]; ok {
			r.cpu[name] = after - before
		}
	}
	if spec.stream && spec.burst && ctx.Err() == nil {
		// Work the proxy defers past the window's streams (auditproxy
		// seals and ships their events) would otherwise slow its burst.
		r.unsettled = !settle(ctx, []*target{t}, settleLimit)
		b := runBurst(ctx, hc, t, spec)
		r.burst = &b
	}
	return r
}

// samplePeakRSS raises peak[name] to each child's resident memory now.
func samplePeakRSS(procs []*child, peak map[string]int64) {
	for _, c := range procs {
		if c == nil {
			continue
		}
		if b, ok := rssBytes(c.cmd.Process.Pid); ok && b > peak[c.name] {
			peak[c.name] = b
		}
	}
}

// harnessCPU names the load generator's own CPU use in reports.
const harnessCPU = "harness"

func cpuSnapshot(procs []*child) map[string]time.Duration {
	m := map[string]time.Duration{}
	if d, ok := selfCPU(); ok {
		m[harnessCPU] = d
	}
	for _, c := range procs {
		if c == nil {
			continue
		}
		if d, ok := cpuTime(c.cmd.Process.Pid); ok {
			m[c.name] = d
		}
	}
	return m
}

func newRequest(base, path string, spec loadSpec) *fasthttp.Request {
	req := fasthttp.AcquireRequest()
	req.SetRequestURI(base + path)
	req.Header.SetMethod(fasthttp.MethodPost)
	req.Header.SetContentType("application/json")
	for k, v := range spec.headers {
		req.Header.Set(k, v)
	}
	req.SetBody(spec.body)
	return req
}

func (w *workerResult) fail(err error) {
	w.errors++
	if w.firstErr == "" {
		w.firstErr = err.Error()
	}
	// Failures are usually instant (connection refused); pausing keeps a
	// broken target from turning the round into a busy loop.
	time.Sleep(time.Millisecond)
}

func nonstreamWorker(ctx context.Context, hc *fasthttp.HostClient, base string, spec loadSpec, mStart, end time.Time, w *workerResult) {
	req := newRequest(base, "/v1/chat/completions", spec)
	resp := fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(resp)
	for ctx.Err() == nil {
		t0 := time.Now()
		if !t0.Before(end) {
			return
		}
		err := hc.Do(req, resp)
		lat := time.Since(t0)
		if err == nil {
			err = checkAnswer(resp, spec.wantLen)
		}
		if t0.Before(mStart) {
			continue
		}
		if err != nil {
			w.fail(err)
			continue
		}
		w.requests++
		w.lat = append(w.lat, int64(lat))
	}
}

// schedule hands out the open loop's intended send times, 1/rate apart from
// start, to whichever worker asks next. Workers ask as soon as they are
// free, so while one waits for a slow answer the others keep the schedule.
type schedule struct {
	start time.Time
	rate  float64
	next  atomic.Int64
}

func newSchedule(start time.Time, rate float64) *schedule {
	return &schedule{start: start, rate: rate}
}

// due claims the next send time.
func (s *schedule) due() time.Time {
	k := s.next.Add(1) - 1
	// From k rather than by adding an interval, so rounding does not drift.
	return s.start.Add(time.Duration(float64(k) * float64(time.Second) / s.rate))
}

// clock lets tests run the open loop on simulated time.
type clock interface {
	now() time.Time
	// sleepUntil returns at t, or earlier if ctx ends.
	sleepUntil(ctx context.Context, t time.Time)
}

type wallClock struct{}

func (wallClock) now() time.Time { return time.Now() }

func (wallClock) sleepUntil(ctx context.Context, t time.Time) {
	// In slices, so a cancelled run does not wait for a worker whose next
	// request is due late in the window.
	for ctx.Err() == nil {
		d := time.Until(t)
		if d <= 0 {
			return
		}
		preciseSleep(min(d, 50*time.Millisecond))
	}
}

func openLoopGrace(duration time.Duration) time.Duration { return min(duration/10, time.Second) }

// openLoopWorker is one of the open loop's workers, on a shared connection
// pool.
func openLoopWorker(ctx context.Context, hc *fasthttp.HostClient, base string, spec loadSpec, sched *schedule, win window, sendBy time.Time, w *workerResult) {
	req := newRequest(base, "/v1/chat/completions", spec)
	resp := fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(resp)
	openLoop(ctx, sched, win, sendBy, wallClock{}, func() error {
		if err := hc.Do(req, resp); err != nil {
			return err
		}
		return checkAnswer(resp, spec.wantLen)
	}, w)
}

// openLoop sends requests at the times sched hands out, as wrk2 does. A
// request whose time has passed before a worker is free (the target is
// slow, or the workers are all busy) goes out at once, and its latency
// still runs from the intended time: measuring from the late send would
// drop exactly the waiting a real client at this rate sees (coordinated
// omission). Requests due in the window are measured; one not sent by
// sendBy is counted as unsent instead, so a target that cannot keep up does
// not stretch the round without end.
func openLoop(ctx context.Context, sched *schedule, win window, sendBy time.Time, clk clock, send func() error, w *workerResult) {
	for ctx.Err() == nil {
		due := sched.due()
		if !due.Before(win.to) {
			return
		}
		clk.sleepUntil(ctx, due)
		sent := clk.now()
		measured := win.contains(due)
		if !sent.Before(sendBy) || ctx.Err() != nil {
			if measured {
				w.unsent++
			}
			continue
		}
		err := send()
		done := clk.now()
		if !measured {
			continue
		}
		if err != nil {
			w.fail(err)
			continue
		}
		w.requests++
		w.lat = append(w.lat, int64(done.Sub(due)))
		w.lags = append(w.lags, int64(sent.Sub(due)))
	}
}

func checkAnswer(resp *fasthttp.Response, wantLen int) error {
	if resp.StatusCode() != fasthttp.StatusOK {
		return fmt.Errorf("status %d: %.200s", resp.StatusCode(), resp.Body())
	}
	if wantLen > 0 && len(resp.Body()) != wantLen {
		return fmt.Errorf("answer of %d bytes, want %d: %.200s", len(resp.Body()), wantLen, resp.Body())
	}
	return nil
}

// streamWorker runs streams back to back. Chunk delays count for chunks
// received inside the measured window, whichever stream they belong to, so
// a round measures its window even when streams outlast it; TTFT and the
// stream count cover streams started inside the window. Streams still
// running when the window closes are read to their end (not cut, which
// would look like client disconnects to the proxy) but add no samples.
func streamWorker(ctx context.Context, hc *fasthttp.HostClient, base string, spec loadSpec, mStart, end time.Time, w *workerResult) {
	req := newRequest(base, "/v1/chat/completions", spec)
	resp := fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(resp)
	br := bufio.NewReaderSize(nil, 64<<10)
	win := window{from: mStart, to: end}
	for ctx.Err() == nil {
		t0 := time.Now()
		if !t0.Before(end) {
			return
		}
		st := streamStats{delays: w.delays} // samples go straight into the worker's list
		st, err := oneStream(hc, req, resp, br, t0, win, spec, st)
		w.delays = st.delays
		w.chunks += int64(st.inWindow)
		if err != nil {
			if win.contains(t0) || win.contains(time.Now()) {
				w.fail(err)
			}
			if spec.once {
				return
			}
			continue
		}
		if win.contains(t0) {
			w.requests++
			w.lat = append(w.lat, int64(st.ttft))
			w.maxGap = max(w.maxGap, st.maxGap)
			if spec.stallAfter > 0 && st.maxGap > spec.stallAfter {
				w.stalls++
			}
		}
		if spec.once {
			return
		}
	}
}

// oneStream sends req, sent at t0, and reads its stream to the end (the
// body stream closed), checking it has spec.wantEvents data events; see
// readBenchStream for st and win.
func oneStream(hc *fasthttp.HostClient, req *fasthttp.Request, resp *fasthttp.Response, br *bufio.Reader,
	t0 time.Time, win window, spec loadSpec, st streamStats) (streamStats, error) {
	defer resp.CloseBodyStream()
	if err := hc.Do(req, resp); err != nil {
		return st, err
	}
	if resp.StatusCode() != fasthttp.StatusOK {
		body, _ := io.ReadAll(io.LimitReader(resp.BodyStream(), 200))
		return st, fmt.Errorf("status %d: %s", resp.StatusCode(), body)
	}
	if resp.BodyStream() == nil {
		return st, errors.New("answer is not streamed")
	}
	br.Reset(resp.BodyStream())
	st, err := readBenchStream(br, t0, win, st)
	if err == nil && st.events != spec.wantEvents {
		err = fmt.Errorf("stream had %d data events before [DONE], want %d", st.events, spec.wantEvents)
	}
	return st, err
}

// burstResult is what one burst measured: spec.concurrency streams
// started at once, each read to its end.
type burstResult struct {
	streams, errors, stalls int64 // streams started, failed, and completed with a gap over spec.stallAfter
	firstErr                string
	// elapsed runs from the first request sent to the last byte of the
	// last stream to end (its failure, for a failed one): the time until
	// all streams end.
	elapsed time.Duration
	spread  time.Duration // the last request's send time minus the first's: the load generator's share of elapsed
	ttftMax time.Duration // the slowest first data event of a completed stream
	rss     map[string]int64
}

// runBurst starts spec.concurrency streams at once on hc and waits for
// them all to end. Each stream's goroutine builds its request and buffers
// first and then waits at a gate, so that opening the gate sends them all
// as close together as the Go scheduler allows; hc is the round's pool,
// whose connections (one per stream of the round) are still open, so no
// request waits for a dial. Resident memory is sampled through the burst,
// which is where it peaks when streams are many.
func runBurst(ctx context.Context, hc *fasthttp.HostClient, t *target, spec loadSpec) burstResult {
	type result struct {
		sent, end time.Time
		st        streamStats
		err       error
	}
	results := make([]result, spec.concurrency)
	gate := make(chan struct{})
	var ready, done sync.WaitGroup
	for i := range results {
		ready.Add(1)
		done.Add(1)
		go func(r *result) {
			defer done.Done()
			req := newRequest(t.url, "/v1/chat/completions", spec)
			resp := fasthttp.AcquireResponse()
			defer fasthttp.ReleaseRequest(req)
			defer fasthttp.ReleaseResponse(resp)
			br := bufio.NewReaderSize(nil, 64<<10)
			ready.Done()
			select {
			case <-gate:
			case <-ctx.Done():
				r.err = context.Cause(ctx)
				return
			}
			r.sent = time.Now()
			// No samples are taken (an empty window): the burst gives
			// one figure, the steady window the delays.
			r.st, r.err = oneStream(hc, req, resp, br, r.sent, window{}, spec, streamStats{})
			r.end = time.Now()
		}(&results[i])
	}
	ready.Wait()

	// The first sample halfway through the pacing, when every stream is
	// open, then every tenth of it, between 50 and 250 ms: often enough
	// to see a short burst, rarely enough not to compete with the
	// processes measured (each sample walks /proc).
	peak := map[string]int64{}
	stop := make(chan struct{})
	rssDone := make(chan struct{})
	go func() {
		defer close(rssDone)
		next, every := spec.ideal/2, burstRSSEvery(spec.ideal)
		for {
			select {
			case <-time.After(next):
			case <-stop:
				return
			}
			samplePeakRSS(t.procs, peak)
			next = every
		}
	}()

	start := time.Now()
	close(gate)
	done.Wait()
	close(stop)
	<-rssDone

	b := burstResult{streams: int64(len(results)), rss: peak}
	for _, r := range results {
		if r.sent.IsZero() {
			b.errors++ // cancelled before the gate opened
			continue
		}
		b.spread = max(b.spread, r.sent.Sub(start))
		b.elapsed = max(b.elapsed, r.end.Sub(start))
		if r.err != nil {
			b.errors++
			if b.firstErr == "" {
				b.firstErr = r.err.Error()
			}
			continue
		}
		b.ttftMax = max(b.ttftMax, r.st.ttft)
		if spec.stallAfter > 0 && r.st.maxGap > spec.stallAfter {
			b.stalls++
		}
	}
	return b
}

// burstRSSEvery is how often a burst samples resident memory.
func burstRSSEvery(ideal time.Duration) time.Duration {
	return min(max(ideal/10, 50*time.Millisecond), 250*time.Millisecond)
}

// window is a round's measured time, [from, to).
type window struct{ from, to time.Time }

func (w window) contains(t time.Time) bool { return !t.Before(w.from) && t.Before(w.to) }

// streamStats is what reading one stream found.
type streamStats struct {
	ttft     time.Duration // request sent to first data event
	events   int           // data events before [DONE]
	inWindow int           // of which received inside the window
	delays   []int64       // ns, send-to-receive, for events inside the window
	maxGap   time.Duration // the longest time between two data events, or from the request to the first
	last     time.Time
}

var (
	dataPrefix = []byte("data: ")
	doneData   = []byte("[DONE]")
	idField    = []byte(`"id":"`)
)

// readBenchStream reads an SSE body to its end. For every data event whose
// id carries the fake's send timestamp and which arrives inside win, it
// appends to st.delays the time from sending to receiving it.
func readBenchStream(br *bufio.Reader, t0 time.Time, win window, st streamStats) (streamStats, error) {
	done := false
	for {
		line, err := br.ReadSlice('\n')
		now := time.Now()
		if errors.Is(err, io.EOF) && len(line) == 0 {
			if !done {
				return st, errors.New("stream ended without data: [DONE]")
			}
			return st, nil
		}
		if err != nil {
			if errors.Is(err, bufio.ErrBufferFull) {
				err = fmt.Errorf("SSE line longer than %d bytes", br.Size())
			}
			return st, fmt.Errorf("reading stream after %d events: %w", st.events, err)
		}
		payload, ok := bytes.CutPrefix(line, dataPrefix)
		if !ok {
			continue
		}
		if st.ttft == 0 {
			st.ttft = now.Sub(t0)
			st.last = t0
		}
		st.maxGap = max(st.maxGap, now.Sub(st.last))
		st.last = now
		payload = bytes.TrimRight(payload, "\r\n")
		if bytes.Equal(payload, doneData) {
			done = true
			continue
		}
		if done {
			return st, errors.New("data after [DONE]")
		}
		if bytes.HasPrefix(payload, []byte(`{"error"`)) || bytes.HasPrefix(payload, []byte(`{"object":"error"`)) {
			return st, fmt.Errorf("error event in stream: %.200s", payload)
		}
		st.events++
		if !win.contains(now) {
			continue
		}
		st.inWindow++
		if ns, ok := benchTimestamp(payload); ok {
			st.delays = append(st.delays, now.UnixNano()-ns)
		}
	}
}

// benchTimestamp extracts the send time from an id such as
// "chatcmpl-bench-1795420468123456789".
func benchTimestamp(event []byte) (int64, bool) {
	i := bytes.Index(event, idField)
	if i < 0 {
		return 0, false
	}
	id := event[i+len(idField):]
	j := bytes.IndexByte(id, '"')
	if j < 0 {
		return 0, false
	}
	id = id[:j]
	k := bytes.LastIndexByte(id, '-')
	if k < 0 || !bytes.Contains(id[:k], []byte("bench")) {
		return 0, false
	}
	ns, err := strconv.ParseInt(string(id[k+1:]), 10, 64)
	return ns, err == nil
}
