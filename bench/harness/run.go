package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/auditproxy/auditproxy/bench/fakevllm"
)

// run performs the whole comparison and writes the markdown report to
// stdout (and -out); progress goes to stderr.
func run(ctx context.Context, o options, stdout, stderr io.Writer, cmdline string) (err error) {
	logf := func(format string, args ...any) { fmt.Fprintf(stderr, "harness: "+format+"\n", args...) }
	tmp, err := os.MkdirTemp(o.tmpParent, "auditproxy-harness-")
	if err != nil {
		return err
	}
	defer func() {
		if o.keepTmp || err != nil {
			logf("logs, binaries and proxy data kept in %s", tmp)
			return
		}
		os.RemoveAll(tmp)
	}()
	var procs procGroup
	defer procs.stopAll()
	// On Ctrl-C or timeout, stop the children at once: requests in flight
	// then fail fast instead of holding the run open.
	finished := make(chan struct{})
	defer close(finished)
	go func() {
		select {
		case <-ctx.Done():
			procs.stopAll()
		case <-finished:
		}
	}()

	var fake, proxy *child
	fakeURL, fakeDesc := o.fakeURL, "already running at "+o.fakeURL
	if fakeURL == "" {
		bin := o.fakeBin
		if bin == "" {
			bin = filepath.Join(tmp, "fakevllm")
			logf("building ./bench/cmd/fakevllm")
			if err := build(ctx, "./bench/cmd/fakevllm", bin); err != nil {
				return err
			}
		}
		if fake, fakeURL, err = startFake(ctx, &procs, bin, o.fakeListen, tmp); err != nil {
			return err
		}
		fakeDesc = fmt.Sprintf("process %s at %s", bin, fakeURL)
	}
	proxyURL, proxyDesc := o.proxyURL, "already running at "+o.proxyURL
	if proxyURL == "" {
		bin := o.proxyBin
		if bin == "" {
			bin = filepath.Join(tmp, "auditproxy")
			logf("building ./cmd/auditproxy")
			if err := build(ctx, "./cmd/auditproxy", bin); err != nil {
				return fmt.Errorf("%w\n(pass -proxy-bin or -proxy-url to use another build)", err)
			}
		}
		if proxy, proxyURL, err = startProxy(ctx, &procs, bin, fakeURL, tmp); err != nil {
			return err
		}
		proxyDesc = fmt.Sprintf("process `%s serve --upstream %s` at %s", bin, fakeURL, proxyURL)
	}
	targets := []*target{
		{name: "direct", url: fakeURL, procs: []*child{fake}},
		{name: "proxy", url: proxyURL, procs: []*child{fake, proxy}},
	}
	model, err := servedModel(ctx, fakeURL)
	if err != nil {
		return err
	}

	var report strings.Builder
	fmt.Fprintf(&report, "## auditproxy load harness, %s\n\n", time.Now().UTC().Format(time.RFC3339))
	fmt.Fprintf(&report, "- command: `%s`\n", cmdline)
	fmt.Fprintf(&report, "- machine: %s/%s, %d CPUs, %s; the fake, the proxy and this load generator share it\n",
		runtime.GOOS, runtime.GOARCH, runtime.NumCPU(), runtime.Version())
	fmt.Fprintf(&report, "- direct: fakevllm %s (model %s)\n", fakeDesc, model)
	fmt.Fprintf(&report, "- proxy: %s\n", proxyDesc)
	fmt.Fprintf(&report, "- %d interleaved rounds per workload (direct, proxy, direct, proxy, …), each %v measured after %v of warm-up on fresh connections; "+
		"percentiles are nearest-rank over all samples of all rounds, except the per-round p99s and their median\n", o.rounds, o.duration, o.warmup)

	if rate := o.openLoopRate(); o.closedLoop() || rate > 0 {
		tr, err := prepareNonstream(ctx, o, targets, model)
		if err != nil {
			return fmt.Errorf("nonstream workload: %w", err)
		}
		if o.closedLoop() {
			sec, err := nonstreamWorkload(ctx, o, targets, tr, logf)
			if err != nil {
				return fmt.Errorf("nonstream workload: %w", err)
			}
			report.WriteString(sec)
		}
		if rate > 0 {
			sec, err := nonstreamRateWorkload(ctx, o, targets, tr, rate, logf)
			if err != nil {
				return fmt.Errorf("nonstream-rate workload: %w", err)
			}
			report.WriteString(sec)
		}
	}
	if o.streams() {
		sec, err := streamWorkload(ctx, o, targets, model, logf)
		if err != nil {
			return fmt.Errorf("stream workload: %w", err)
		}
		report.WriteString(sec)
	}
	if _, err := io.WriteString(stdout, report.String()); err != nil {
		return err
	}
	if o.out != "" {
		f, err := os.OpenFile(o.out, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
		if err != nil {
			return fmt.Errorf("-out: %w", err)
		}
		_, werr := io.WriteString(f, "\n"+report.String())
		if cerr := f.Close(); werr == nil {
			werr = cerr
		}
		if werr != nil {
			return fmt.Errorf("-out %s: %w", o.out, werr)
		}
	}
	return nil
}

// servedModel asks the fake which model it serves, so the harness works
// with a fake started with any -model.
func servedModel(ctx context.Context, base string) (string, error) {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, base+"/v1/models", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", fmt.Errorf("asking the fake for its model: %w", err)
	}
	defer resp.Body.Close()
	var ml struct {
		Data []struct {
			ID string `json:"id"`
		} `json:"data"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&ml); err != nil || len(ml.Data) == 0 {
		return "", fmt.Errorf("%s/v1/models: no model list (status %s, %v)", base, resp.Status, err)
	}
	return ml.Data[0].ID, nil
}

// chatBody builds a chat request of about size bytes: one user message of
// filler words plus extra fields (`"max_tokens":N`…).
func chatBody(model string, size int, extra string) []byte {
	const filler = "Summarize the following audit record for the compliance team and flag anything unusual. "
	head := `{"model":` + strconv.Quote(model) + `,"messages":[{"role":"user","content":"`
	tail := `"}],` + extra + `}`
	n := max(size-len(head)-len(tail), 1)
	content := strings.Repeat(filler, n/len(filler)+1)[:n]
	content = strings.TrimRight(content, " ") + "."
	return []byte(head + content + tail)
}

// probe sends one non-streamed request directly and returns the answer's
// length and completion token count.
func probe(ctx context.Context, base string, body []byte) (int, int, error) {
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, base+"/v1/chat/completions", strings.NewReader(string(body)))
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, 0, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, 0, err
	}
	if resp.StatusCode != http.StatusOK {
		return 0, 0, fmt.Errorf("%s: %s", resp.Status, b)
	}
	var r struct {
		Usage struct {
			CompletionTokens int `json:"completion_tokens"`
		} `json:"usage"`
	}
	if err := json.Unmarshal(b, &r); err != nil {
		return 0, 0, fmt.Errorf("answer is not JSON: %v", err)
	}
	return len(b), r.Usage.CompletionTokens, nil
}

// calibrate finds the max_tokens that makes the answer about answerBytes
// long, by measuring two answers and interpolating, and returns the request
// body and the exact answer length.
func calibrate(ctx context.Context, o options, base, model string) (body []byte, maxTokens, answerLen int, err error) {
	mk := func(k int) []byte { return chatBody(model, o.promptBytes, `"max_tokens":`+strconv.Itoa(k)) }
	const k1, k2 = 64, 128
	l1, _, err := probe(ctx, base, mk(k1))
	if err != nil {
		return nil, 0, 0, fmt.Errorf("calibration request to the fake: %w", err)
	}
	l2, _, err := probe(ctx, base, mk(k2))
	if err != nil {
		return nil, 0, 0, fmt.Errorf("calibration request to the fake: %w", err)
	}
	perToken := float64(l2-l1) / (k2 - k1)
	if perToken <= 0 {
		return nil, 0, 0, fmt.Errorf("calibration: answers of %d and %d tokens were %d and %d bytes; the fake caps output (start it with -output-tokens 4096)", k1, k2, l1, l2)
	}
	k := max(1, k1+int(math.Round(float64(o.answerBytes-l1)/perToken)))
	body = mk(k)
	answerLen, got, err := probe(ctx, base, body)
	if err != nil {
		return nil, 0, 0, fmt.Errorf("calibration request to the fake: %w", err)
	}
	if got != k {
		return nil, 0, 0, fmt.Errorf("calibration: asked for %d tokens, the fake produced %d (start it with -output-tokens >= %d)", k, got, k)
	}
	return body, k, answerLen, nil
}

// rounds runs spec against each target in turn, rounds times, and pools the
// results per target.
func rounds(ctx context.Context, o options, targets []*target, spec loadSpec, label string, logf func(string, ...any)) ([]*aggregate, error) {
	aggs := make([]*aggregate, len(targets))
	for i := range aggs {
		aggs[i] = &aggregate{}
	}
	for r := 1; r <= o.rounds; r++ {
		for i, t := range targets {
			if err := ctx.Err(); err != nil {
				return nil, context.Cause(ctx)
			}
			res := runRound(ctx, t, spec)
			aggs[i].add(res)
			unit := "requests/s"
			if spec.stream {
				unit = "streams/s"
			}
			msg := fmt.Sprintf("%s round %d/%d %-6s %8.0f %s", label, r, o.rounds, t.name, float64(res.requests)/res.window.Seconds(), unit)
			if spec.rate > 0 {
				// Seen live, a round's own p99 shows a stall as it happens;
				// the table lists them all afterwards.
				msg += fmt.Sprintf(" (target %s), p99 %s ms", fmtRate(spec.rate), fmtMs(aggs[i].roundLatP99[r-1]))
			}
			if res.unsent > 0 {
				msg += fmt.Sprintf(", %d due but never sent", res.unsent)
			}
			if res.errors > 0 {
				msg += fmt.Sprintf(", %d errors (first: %s)", res.errors, res.firstErr)
			}
			logf("%s", msg)
		}
	}
	return aggs, ctx.Err()
}

// nonstreamTraffic is the calibrated request of the nonstream workloads.
type nonstreamTraffic struct {
	body                 []byte
	maxTokens, answerLen int
}

func prepareNonstream(ctx context.Context, o options, targets []*target, model string) (nonstreamTraffic, error) {
	body, maxTokens, answerLen, err := calibrate(ctx, o, targets[0].url, model)
	if err != nil {
		return nonstreamTraffic{}, err
	}
	// One request through the proxy first: a proxy that fails or changes
	// the answer should stop the run with a reason, not fill the table
	// with errors.
	if n, _, err := probe(ctx, targets[1].url, body); err != nil {
		return nonstreamTraffic{}, fmt.Errorf("request through the proxy: %w", err)
	} else if n != answerLen {
		return nonstreamTraffic{}, fmt.Errorf("through the proxy the answer is %d bytes, direct %d", n, answerLen)
	}
	return nonstreamTraffic{body: body, maxTokens: maxTokens, answerLen: answerLen}, nil
}

func (tr nonstreamTraffic) spec(o options) loadSpec {
	conc := o.concurrency
	if conc == 0 {
		conc = defaultNonstreamConcurrency
	}
	return loadSpec{body: tr.body, concurrency: conc, warmup: o.warmup, duration: o.duration, wantLen: tr.answerLen}
}

func nonstreamWorkload(ctx context.Context, o options, targets []*target, tr nonstreamTraffic, logf func(string, ...any)) (string, error) {
	spec := tr.spec(o)
	logf("nonstream: %d-byte requests, %d-byte answers (max_tokens %d), %d connections", len(tr.body), tr.answerLen, tr.maxTokens, spec.concurrency)
	aggs, err := rounds(ctx, o, targets, spec, "nonstream", logf)
	if err != nil {
		return "", err
	}
	return nonstreamReport(o, spec, tr.maxTokens, targets, aggs), nil
}

func nonstreamRateWorkload(ctx context.Context, o options, targets []*target, tr nonstreamTraffic, rate float64, logf func(string, ...any)) (string, error) {
	spec := tr.spec(o)
	spec.rate = rate
	logf("nonstream-rate: open loop at %s requests/s, %d-byte requests, %d-byte answers (max_tokens %d), %d workers",
		fmtRate(rate), len(tr.body), tr.answerLen, tr.maxTokens, spec.concurrency)
	aggs, err := rounds(ctx, o, targets, spec, "nonstream-rate", logf)
	if err != nil {
		return "", err
	}
	return nonstreamRateReport(spec, tr.maxTokens, targets, aggs), nil
}

func streamWorkload(ctx context.Context, o options, targets []*target, model string, logf func(string, ...any)) (string, error) {
	conc := o.concurrency
	if conc == 0 {
		conc = defaultStreamConcurrency
	}
	spec := loadSpec{
		stream: true,
		body: chatBody(model, o.promptBytes, `"stream":true,"stream_options":{"include_usage":true},"max_tokens":`+
			strconv.Itoa(o.streamChunks)),
		headers: map[string]string{
			fakevllm.HeaderBenchTimestamps: "1",
			fakevllm.HeaderTTFT:            "0s",
			fakevllm.HeaderITL:             o.streamITL.String(),
		},
		concurrency: conc,
		warmup:      o.warmup,
		duration:    o.duration,
		wantEvents:  o.streamChunks + 2, // role chunk, content chunks, usage chunk
	}
	// One stream each way first, so a proxy that buffers, drops or breaks
	// streams stops the run with a reason.
	for _, t := range targets {
		if err := checkStream(ctx, t, spec); err != nil {
			return "", fmt.Errorf("test stream via %s (%s): %w", t.name, t.url, err)
		}
	}
	logf("stream: %d chunks %v apart per stream, %d concurrent streams", o.streamChunks, o.streamITL, conc)
	aggs, err := rounds(ctx, o, targets, spec, "stream", logf)
	if err != nil {
		return "", err
	}
	return streamReport(o, spec, targets, aggs), nil
}

func checkStream(ctx context.Context, t *target, spec loadSpec) error {
	one := spec
	one.concurrency = 1
	one.once = true
	hc := newClient(t.addr(), one)
	defer hc.CloseIdleConnections()
	var w workerResult
	now := time.Now()
	streamWorker(ctx, hc, t.url, one, now, now.Add(time.Hour), &w)
	if w.errors > 0 {
		return fmt.Errorf("%s", w.firstErr)
	}
	if w.requests != 1 || len(w.delays) != spec.wantEvents {
		return fmt.Errorf("%d streams, %d timestamped chunks; want 1 stream of %d (is %s forwarded?)",
			w.requests, len(w.delays), spec.wantEvents, fakevllm.HeaderBenchTimestamps)
	}
	return nil
}

// cpuPer formats the CPU each child used per unit of work, e.g.
// "fakevllm 11.2, auditproxy 30.4".
func cpuPer(a *aggregate, t *target, units int64) string {
	if units == 0 {
		return "n/a"
	}
	var parts []string
	for _, c := range t.procs {
		if c == nil {
			continue
		}
		if d, ok := a.cpu[c.name]; ok {
			parts = append(parts, fmt.Sprintf("%s %.1f", c.name, float64(d.Microseconds())/float64(units)))
		}
	}
	if d, ok := a.cpu[harnessCPU]; ok {
		parts = append(parts, fmt.Sprintf("%s %.1f", harnessCPU, float64(d.Microseconds())/float64(units)))
	}
	if len(parts) == 0 {
		return "n/a"
	}
	return strings.Join(parts, ", ")
}

func fmtMs(v float64) string {
	if math.IsNaN(v) {
		return "n/a"
	}
	return strconv.FormatFloat(v, 'f', 3, 64)
}

func fmtAdded(proxy, direct float64) string {
	if math.IsNaN(proxy) || math.IsNaN(direct) {
		return "n/a"
	}
	return fmt.Sprintf("%+.3f", proxy-direct)
}

func roundList(a *aggregate) string {
	parts := make([]string, len(a.roundRPS))
	for i, v := range a.roundRPS {
		parts[i] = strconv.FormatFloat(v, 'f', 0, 64)
	}
	return strings.Join(parts, " / ")
}

// msList formats per-round values in milliseconds, in round order.
func msList(perRound []float64) string {
	parts := make([]string, len(perRound))
	for i, v := range perRound {
		parts[i] = fmtMs(v)
	}
	return strings.Join(parts, " / ")
}

// medianNote is the sentence each description gives the median-of-rounds
// columns, so a reader of a pasted table knows why they differ from the
// pooled ones.
func medianNote(what string) string {
	return what + " is the median of the p99s each round measured on its own (listed per round), there because one round " +
		"hit by a VM stall (CPU steal) can set the pooled p99 by itself but leaves this median within the other rounds' range."
}

func errorNotes(targets []*target, aggs []*aggregate) string {
	var b strings.Builder
	for i, a := range aggs {
		if a.errors > 0 {
			fmt.Fprintf(&b, "\n%d errors via %s; first: `%s`\n", a.errors, targets[i].name, strings.ReplaceAll(a.firstErr, "`", "'"))
		}
	}
	return b.String()
}

func nonstreamReport(o options, spec loadSpec, maxTokens int, targets []*target, aggs []*aggregate) string {
	var b strings.Builder
	fmt.Fprintf(&b, "\n### nonstream: non-streamed chat completions\n\n")
	fmt.Fprintf(&b, "POST /v1/chat/completions, %d-byte request, %d-byte answer (max_tokens %d), fake TTFT 0 and ITL 0; "+
		"%d keep-alive connections (fasthttp client). %s\n\n", len(spec.body), spec.wantLen, maxTokens, spec.concurrency,
		medianNote("P99 median of rounds"))
	b.WriteString("| target | requests | errors | RPS | RPS per round | p50 ms | p99 ms | p99.9 ms | p99 per round ms | p99 median of rounds ms | CPU µs/request |\n")
	b.WriteString("|---|---:|---:|---:|---|---:|---:|---:|---|---:|---|\n")
	for i, a := range aggs {
		fmt.Fprintf(&b, "| %s | %d | %d | %.0f | %s | %s | %s | %s | %s | %s | %s |\n", targets[i].name, a.requests, a.errors, a.rps(),
			roundList(a), fmtMs(a.latMs(50)), fmtMs(a.latMs(99)), fmtMs(a.latMs(99.9)),
			msList(a.roundLatP99), fmtMs(medianMs(a.roundLatP99)), cpuPer(a, targets[i], a.requests))
	}
	d, p := aggs[0], aggs[1]
	ratio := "n/a"
	if d.rps() > 0 {
		ratio = fmt.Sprintf("×%.3f", p.rps()/d.rps())
	}
	fmt.Fprintf(&b, "| proxy − direct | | | %s | | %s | %s | %s | | %s | |\n", ratio,
		fmtAdded(p.latMs(50), d.latMs(50)), fmtAdded(p.latMs(99), d.latMs(99)), fmtAdded(p.latMs(99.9), d.latMs(99.9)),
		fmtAdded(medianMs(p.roundLatP99), medianMs(d.roundLatP99)))
	b.WriteString(errorNotes(targets, aggs))
	return b.String()
}

func nonstreamRateReport(spec loadSpec, maxTokens int, targets []*target, aggs []*aggregate) string {
	var b strings.Builder
	fmt.Fprintf(&b, "\n### nonstream-rate: open loop at %s requests/s; latencies count from each request's intended send time\n\n", fmtRate(spec.rate))
	fmt.Fprintf(&b, "POST /v1/chat/completions, %d-byte request, %d-byte answer (max_tokens %d), fake TTFT 0 and ITL 0. "+
		"Open loop, as wrk2 runs: a request is due every %v whatever the answers, and goes out from the first of %d workers "+
		"to be free (up to %d keep-alive connections, fasthttp client). Latency runs from the intended send time to the whole answer, "+
		"so time spent waiting behind a slow answer counts (coordinated omission is not hidden). "+
		"Achieved: answered requests due in the window, per second. Send lag: actual minus intended send time, "+
		"the load generator's timer slack plus any backlog. %s\n\n",
		len(spec.body), spec.wantLen, maxTokens, time.Duration(float64(time.Second)/spec.rate), spec.concurrency, spec.concurrency,
		medianNote("P99 median of rounds"))
	b.WriteString("| target | requests | errors | target req/s | achieved req/s | achieved per round | p50 ms | p99 ms | p99.9 ms | " +
		"p99 per round ms | p99 median of rounds ms | send lag p99 ms | CPU µs/request |\n")
	b.WriteString("|---|---:|---:|---:|---:|---|---:|---:|---:|---|---:|---:|---|\n")
	for i, a := range aggs {
		fmt.Fprintf(&b, "| %s | %d | %d | %s | %.0f | %s | %s | %s | %s | %s | %s | %s | %s |\n", targets[i].name, a.requests, a.errors,
			fmtRate(spec.rate), a.rps(), roundList(a), fmtMs(a.latMs(50)), fmtMs(a.latMs(99)), fmtMs(a.latMs(99.9)),
			msList(a.roundLatP99), fmtMs(medianMs(a.roundLatP99)), fmtMs(a.lagMs(99)), cpuPer(a, targets[i], a.requests))
	}
	d, p := aggs[0], aggs[1]
	fmt.Fprintf(&b, "| proxy − direct | | | | | | %s | %s | %s | | %s | | |\n",
		fmtAdded(p.latMs(50), d.latMs(50)), fmtAdded(p.latMs(99), d.latMs(99)), fmtAdded(p.latMs(99.9), d.latMs(99.9)),
		fmtAdded(medianMs(p.roundLatP99), medianMs(d.roundLatP99)))
	for i, a := range aggs {
		if a.unsent > 0 {
			fmt.Fprintf(&b, "\n%d requests due via %s were still unsent %v after their round's window closed: the rate was not kept, "+
				"so its latencies are queueing; lower -rate\n", a.unsent, targets[i].name, openLoopGrace(spec.duration))
		}
	}
	b.WriteString(errorNotes(targets, aggs))
	return b.String()
}

// fmtRate writes a rate without a spurious fraction: 2000, 2500.5.
func fmtRate(r float64) string { return strconv.FormatFloat(r, 'f', -1, 64) }

func streamReport(o options, spec loadSpec, targets []*target, aggs []*aggregate) string {
	var b strings.Builder
	fmt.Fprintf(&b, "\n### stream: streamed chat completions\n\n")
	fmt.Fprintf(&b, "POST /v1/chat/completions with stream and include_usage, %d-byte request, %d content chunks %v apart, TTFT 0; "+
		"%d concurrent streams. TTFT: request sent to first data event received. Chunk delay: receive time minus the send "+
		"time the fake stamps into each chunk's id, for every data event (%d per stream) received in the measured window. "+
		"Streams: started in the window; chunks: received in it. %s\n\n",
		len(spec.body), o.streamChunks, o.streamITL, spec.concurrency, spec.wantEvents,
		medianNote("Each p99 median of rounds (TTFT, chunk delay)"))
	b.WriteString("| target | streams | chunks | errors | TTFT p50 ms | TTFT p99 ms | TTFT p99 per round ms | TTFT p99 median of rounds ms | " +
		"chunk delay p50 ms | chunk delay p99 ms | chunk delay p99.9 ms | chunk delay p99 per round ms | chunk delay p99 median of rounds ms | CPU µs/chunk |\n")
	b.WriteString("|---|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|---|---:|---|\n")
	for i, a := range aggs {
		fmt.Fprintf(&b, "| %s | %d | %d | %d | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", targets[i].name, a.requests, a.chunks, a.errors,
			fmtMs(a.latMs(50)), fmtMs(a.latMs(99)), msList(a.roundLatP99), fmtMs(medianMs(a.roundLatP99)),
			fmtMs(a.delayMs(50)), fmtMs(a.delayMs(99)), fmtMs(a.delayMs(99.9)), msList(a.roundDelayP99), fmtMs(medianMs(a.roundDelayP99)),
			cpuPer(a, targets[i], a.chunks))
	}
	d, p := aggs[0], aggs[1]
	fmt.Fprintf(&b, "| proxy − direct | | | | %s | %s | | %s | %s | %s | %s | | %s | |\n",
		fmtAdded(p.latMs(50), d.latMs(50)), fmtAdded(p.latMs(99), d.latMs(99)), fmtAdded(medianMs(p.roundLatP99), medianMs(d.roundLatP99)),
		fmtAdded(p.delayMs(50), d.delayMs(50)), fmtAdded(p.delayMs(99), d.delayMs(99)), fmtAdded(p.delayMs(99.9), d.delayMs(99.9)),
		fmtAdded(medianMs(p.roundDelayP99), medianMs(d.roundDelayP99)))
	b.WriteString(errorNotes(targets, aggs))
	return b.String()
}
