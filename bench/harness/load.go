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
	"time"

	"github.com/valyala/fasthttp"
)

// target is one side of the comparison.
type target struct {
	name  string
	url   string   // base URL, http://127.0.0.1:PORT
	procs []*child // processes whose CPU the target's rounds are charged with
}

func (t *target) addr() string {
	u, _ := url.Parse(t.url)
	return u.Host
}

// roundResult is what one round against one target measured.
type roundResult struct {
	requests int64         // requests (or streams) completed in the window
	errors   int64         // failed requests, all kinds
	firstErr string        // the first failure, to explain errors
	window   time.Duration // measured time
	lat      []int64       // ns: request latency (nonstream) or TTFT (stream)
	delays   []int64       // ns: per-chunk delay (stream)
	chunks   int64
	cpu      map[string]time.Duration // CPU used by each child during the window
}

// loadSpec is one workload's traffic.
type loadSpec struct {
	stream      bool
	body        []byte
	headers     map[string]string
	concurrency int
	warmup      time.Duration
	duration    time.Duration
	wantLen     int  // nonstream: exact answer length
	wantEvents  int  // stream: data events before [DONE]
	once        bool // stop after the first request (pre-flight checks)
}

// worker state: each worker keeps its own samples and merges at the end,
// so the measured path takes no locks.
type workerResult struct {
	requests, errors, chunks int64
	firstErr                 string
	lat, delays              []int64
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

	results := make([]workerResult, spec.concurrency)
	var wg sync.WaitGroup
	for i := range results {
		wg.Add(1)
		go func(w *workerResult) {
			defer wg.Done()
			if spec.stream {
				streamWorker(ctx, hc, t.url, spec, mStart, end, w)
			} else {
				nonstreamWorker(ctx, hc, t.url, spec, mStart, end, w)
			}
		}(&results[i])
	}
	wg.Wait()
	<-cpuDone

	r := roundResult{window: spec.duration, cpu: map[string]time.Duration{}}
	for _, w := range results {
		r.requests += w.requests
		r.errors += w.errors
		r.chunks += w.chunks
		if r.firstErr == "" {
			r.firstErr = w.firstErr
		}
		r.lat = append(r.lat, w.lat...)
		r.delays = append(r.delays, w.delays...)
	}
	for name, after := range cpuAfter {
		if before, ok := cpuBefore[name]; ok {
			r.cpu[name] = after - before
		}
	}
	return r
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

func checkAnswer(resp *fasthttp.Response, wantLen int) error {
	if resp.StatusCode() != fasthttp.StatusOK {
		return fmt.Errorf("status %d: %.200s", resp.StatusCode(), resp.Body())
	}
	if wantLen > 0 && len(resp.Body()) != wantLen {
		return fmt.Errorf("answer of %d bytes, want %d: %.200s", len(resp.Body()), wantLen, resp.Body())
	}
	return nil
}

func streamWorker(ctx context.Context, hc *fasthttp.HostClient, base string, spec loadSpec, mStart, end time.Time, w *workerResult) {
	req := newRequest(base, "/v1/chat/completions", spec)
	resp := fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(resp)
	br := bufio.NewReaderSize(nil, 64<<10)
	var delays []int64
	for ctx.Err() == nil {
		t0 := time.Now()
		if !t0.Before(end) {
			return
		}
		measured := !t0.Before(mStart)
		delays = delays[:0]
		var ttft time.Duration
		var events int
		err := hc.Do(req, resp)
		if err == nil && resp.StatusCode() != fasthttp.StatusOK {
			body, _ := io.ReadAll(io.LimitReader(resp.BodyStream(), 200))
			err = fmt.Errorf("status %d: %s", resp.StatusCode(), body)
		}
		if err == nil && resp.BodyStream() == nil {
			err = errors.New("answer is not streamed")
		}
		if err == nil {
			br.Reset(resp.BodyStream())
			ttft, events, delays, err = readBenchStream(br, t0, delays)
		}
		if err == nil && events != spec.wantEvents {
			err = fmt.Errorf("stream had %d data events before [DONE], want %d", events, spec.wantEvents)
		}
		resp.CloseBodyStream()
		if !measured {
			continue
		}
		if err != nil {
			w.fail(err)
			if spec.once {
				return
			}
			continue
		}
		w.requests++
		w.chunks += int64(events)
		w.lat = append(w.lat, int64(ttft))
		w.delays = append(w.delays, delays...)
		if spec.once {
			return
		}
	}
}

var (
	dataPrefix = []byte("data: ")
	doneData   = []byte("[DONE]")
	idField    = []byte(`"id":"`)
)

// readBenchStream reads an SSE body to its end. It returns the time from t0
// to the first data event, the number of data events before [DONE], and
// appends to delays, for every event whose id carries the fake's send
// timestamp, the time from sending to receiving it.
func readBenchStream(br *bufio.Reader, t0 time.Time, delays []int64) (ttft time.Duration, events int, _ []int64, err error) {
	done := false
	for {
		line, err := br.ReadSlice('\n')
		now := time.Now()
		if errors.Is(err, io.EOF) && len(line) == 0 {
			if !done {
				return ttft, events, delays, errors.New("stream ended without data: [DONE]")
			}
			return ttft, events, delays, nil
		}
		if err != nil {
			if errors.Is(err, bufio.ErrBufferFull) {
				err = fmt.Errorf("SSE line longer than %d bytes", br.Size())
			}
			return ttft, events, delays, fmt.Errorf("reading stream after %d events: %w", events, err)
		}
		payload, ok := bytes.CutPrefix(line, dataPrefix)
		if !ok {
			continue
		}
		if ttft == 0 {
			ttft = now.Sub(t0)
		}
		payload = bytes.TrimRight(payload, "\r\n")
		if bytes.Equal(payload, doneData) {
			done = true
			continue
		}
		if done {
			return ttft, events, delays, errors.New("data after [DONE]")
		}
		if bytes.HasPrefix(payload, []byte(`{"error"`)) || bytes.HasPrefix(payload, []byte(`{"object":"error"`)) {
			return ttft, events, delays, fmt.Errorf("error event in stream: %.200s", payload)
		}
		events++
		if ns, ok := benchTimestamp(payload); ok {
			delays = append(delays, now.UnixNano()-ns)
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
