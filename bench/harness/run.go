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

	"github.com/auditproxy/auditproxy/internal/fakevllm"
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
	var recv *child
	var asyncTarget *target
	if proxyURL == "" {
		bin := o.proxyBin
		if bin == "" {
			bin = filepath.Join(tmp, "auditproxy")
			logf("building ./cmd/auditproxy")
			if err := build(ctx, "./cmd/auditproxy", bin); err != nil {
				return fmt.Errorf("%w\n(pass -proxy-bin or -proxy-url to use another build)", err)
			}
		}
		recvBin := o.recvBin
		if recvBin == "" {
			recvBin = filepath.Join(tmp, "forwardrecv")
			logf("building ./bench/cmd/forwardrecv")
			if err := build(ctx, "./bench/cmd/forwardrecv", recvBin); err != nil {
				return err
			}
		}
		var recvAddr string
		if recv, recvAddr, err = startForwardRecv(ctx, &procs, recvBin, tmp); err != nil {
			return err
		}
		if proxy, proxyURL, err = startProxy(ctx, &procs, "auditproxy", bin, fakeURL, "tcp://"+recvAddr, tmp); err != nil {
			return err
		}
		if o.async {
			c, u, err := startProxy(ctx, &procs, "auditproxy-async", bin, fakeURL, "tcp://"+recvAddr, tmp, "--durability", "async")
			if err != nil {
				return err
			}
			asyncTarget = &target{name: "auditproxy-async", url: u, procs: []*child{fake, c, recv}}
		}
		proxyDesc = fmt.Sprintf("process `%s serve --upstream %s --forward tcp://%s` at %s: full audit (request and response hashed, "+
			"hash-chained signed log, sync durability: each answer ends after its event is fsynced, events shipped with acks to "+
			"bench/cmd/forwardrecv, a separate process, whose CPU is counted with auditproxy's)", bin, fakeURL, recvAddr, proxyURL)
	}
	targets := []*target{
		{name: "direct", url: fakeURL, procs: []*child{fake}},
		{name: "auditproxy", url: proxyURL, procs: []*child{fake, proxy, recv}},
	}
	if asyncTarget != nil {
		targets = append(targets, asyncTarget)
	}
	var peerDescs []string
	upstream := strings.TrimPrefix(fakeURL, "http://")
	for _, name := range o.peers {
		if name == "fasthttp" {
			bin := o.bareBin
			if bin == "" {
				bin = filepath.Join(tmp, "bareproxy")
				logf("building ./bench/cmd/bareproxy")
				if err := build(ctx, "./bench/cmd/bareproxy", bin); err != nil {
					return fmt.Errorf("%w\n(pass -bare-bin to use another build, or -peers without fasthttp)", err)
				}
			}
			c, u, err := startBareProxy(ctx, &procs, bin, upstream, tmp)
			if err != nil {
				return fmt.Errorf("starting the fasthttp peer: %w", err)
			}
			targets = append(targets, &target{name: name, url: u, procs: []*child{fake, c}, peer: true})
			peerDescs = append(peerDescs, fmt.Sprintf("- %s: process `%s -listen %s -upstream %s` (%s): bench/cmd/bareproxy, "+
				"auditproxy's fasthttp server and client settings with no auditing (no hashing, no events, no log), the floor for a Go proxy on fasthttp\n",
				bareProxyLabel, bin, strings.TrimPrefix(u, "http://"), fakeURL, peerVersion(bin)))
			continue
		}
		bin, why := findPeer(ctx, name, o.installPeers, logf)
		if bin == "" {
			logf("%s: skipped: %s", name, why)
			peerDescs = append(peerDescs, fmt.Sprintf("- %s: not measured: %s\n", name, why))
			continue
		}
		start := startNginx
		if name == "haproxy" {
			start = startHAProxy
		}
		c, u, err := start(ctx, &procs, bin, upstream, tmp)
		if err != nil {
			return fmt.Errorf("starting %s: %w", name, err)
		}
		targets = append(targets, &target{name: name, url: u, procs: []*child{fake, c}, peer: true})
		peerDescs = append(peerDescs, fmt.Sprintf("- %s: %s (%s) at %s, configuration in the harness's bench/harness/peers.go\n", name, bin, peerVersion(bin), u))
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
	fmt.Fprintf(&report, "- auditproxy: %s\n", proxyDesc)
	for _, d := range peerDescs {
		report.WriteString(d)
	}
	fmt.Fprintf(&report, "- %d interleaved rounds per workload (each target in turn, then again), each started once all measured processes are quiet (under 2%% of a core) and %v measured after %v of warm-up on fresh connections; "+
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
			sec, aggs, err := nonstreamRateWorkload(ctx, o, targets, tr, rate, logf)
			if err != nil {
				return fmt.Errorf("nonstream-rate workload: %w", err)
			}
			report.WriteString(sec)
			if o.plot != "" {
				if err := plotTargets(o.plot, fmt.Sprintf("Latency at %s requests/s (open loop)", fmtRate(rate)), targets, aggs, false); err != nil {
					return err
				}
				fmt.Fprintf(&report, "\nLatency percentiles: %s\n", o.plot)
			}
		}
	}
	if o.streams() {
		for i, conc := range o.streamConcurrency() {
			sec, aggs, err := streamWorkload(ctx, o, targets, model, conc, logf)
			if err != nil {
				return fmt.Errorf("stream workload, %d streams: %w", conc, err)
			}
			report.WriteString(sec)
			if o.plot != "" && i == len(o.streamConcurrency())-1 {
				path := strings.TrimSuffix(o.plot, ".png") + "-stream.png"
				if err := plotTargets(path, fmt.Sprintf("Per-chunk delay, %d concurrent streams", conc), targets, aggs, true); err != nil {
					return err
				}
				fmt.Fprintf(&report, "\nPer-chunk delay percentiles: %s\n", path)
			}
		}
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
			if !settle(ctx, targets, settleLimit) {
				logf("%s round %d/%d %s: the processes were still busy after %v; measuring anyway", label, r, o.rounds, t.name, settleLimit)
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
			if b := res.burst; b != nil {
				msg += fmt.Sprintf("; burst of %d: all ended after %s ms (ideal %s)", b.streams, fmtMs(ms(int64(b.elapsed))), fmtMs(ms(int64(spec.ideal))))
				if b.errors > 0 {
					msg += fmt.Sprintf(", %d errors (first: %s)", b.errors, b.firstErr)
				}
				if res.unsettled {
					msg += fmt.Sprintf(", started with %s still busy after %v", t.name, settleLimit)
				}
			}
			logf("%s", msg)
		}
	}
	return aggs, ctx.Err()
}

const (
	// settleLimit bounds the wait for quiet before a round.
	settleLimit = 15 * time.Second
	// settleSample and settleCPU: quiet is less than 2% of a core over a
	// sample, all measured processes together.
	settleSample = 200 * time.Millisecond
	settleCPU    = settleSample / 50
)

// settle waits until the processes of all targets are quiet, at most limit,
// and reports whether they became so. Work a proxy defers past its round
// (auditproxy ships and seals its spool after the answers) would otherwise
// run during the next target's round, slowing it and not the proxy that
// caused it.
func settle(ctx context.Context, targets []*target, limit time.Duration) bool {
	seen := map[*child]bool{}
	var procs []*child
	for _, t := range targets {
		for _, c := range t.procs {
			if c != nil && !seen[c] {
				seen[c] = true
				procs = append(procs, c)
			}
		}
	}
	total := func() time.Duration {
		var sum time.Duration
		for _, c := range procs {
			if d, ok := cpuTime(c.cmd.Process.Pid); ok {
				sum += d
			}
		}
		return sum
	}
	deadline := time.Now().Add(limit)
	for before := total(); time.Now().Before(deadline); {
		select {
		case <-ctx.Done():
			return false
		case <-time.After(settleSample):
		}
		after := total()
		if after-before < settleCPU {
			return true
		}
		before = after
	}
	return false
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
	// One request through each proxy first: a proxy that fails or
	// changes the answer should stop the run with a reason, not fill the
	// table with errors.
	for _, t := range targets[1:] {
		if n, _, err := probe(ctx, t.url, body); err != nil {
			return nonstreamTraffic{}, fmt.Errorf("request through %s: %w", t.name, err)
		} else if n != answerLen {
			return nonstreamTraffic{}, fmt.Errorf("through %s the answer is %d bytes, direct %d", t.name, n, answerLen)
		}
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

func nonstreamRateWorkload(ctx context.Context, o options, targets []*target, tr nonstreamTraffic, rate float64, logf func(string, ...any)) (string, []*aggregate, error) {
	spec := tr.spec(o)
	spec.rate = rate
	logf("nonstream-rate: open loop at %s requests/s, %d-byte requests, %d-byte answers (max_tokens %d), %d workers",
		fmtRate(rate), len(tr.body), tr.answerLen, tr.maxTokens, spec.concurrency)
	aggs, err := rounds(ctx, o, targets, spec, "nonstream-rate", logf)
	if err != nil {
		return "", nil, err
	}
	return nonstreamRateReport(spec, tr.maxTokens, targets, aggs), aggs, nil
}

func streamWorkload(ctx context.Context, o options, targets []*target, model string, conc int, logf func(string, ...any)) (string, []*aggregate, error) {
	itl := o.itl(conc)
	stall := o.stallAfter
	if stall == 0 {
		stall = max(time.Second, 20*itl)
	}
	spec := loadSpec{
		stream: true,
		body: chatBody(model, o.promptBytes, `"stream":true,"stream_options":{"include_usage":true},"max_tokens":`+
			strconv.Itoa(o.streamChunks)),
		headers: map[string]string{
			fakevllm.HeaderBenchTimestamps: "1",
			fakevllm.HeaderTTFT:            "0s",
			fakevllm.HeaderITL:             itl.String(),
		},
		concurrency: conc,
		warmup:      o.warmup,
		duration:    o.duration,
		wantEvents:  o.streamChunks + 2, // role chunk, content chunks, usage chunk
		stallAfter:  stall,
		burst:       o.streamBurst,
		ideal:       streamIdeal(o.streamChunks, itl),
	}
	// One stream each way first, so a proxy that buffers, drops or breaks
	// streams stops the run with a reason.
	for _, t := range targets {
		if err := checkStream(ctx, t, spec); err != nil {
			return "", nil, fmt.Errorf("test stream via %s (%s): %w", t.name, t.url, err)
		}
	}
	msg := fmt.Sprintf("stream: %d chunks %v apart per stream, %d concurrent streams", o.streamChunks, itl, conc)
	if spec.burst {
		msg += fmt.Sprintf("; after each round a burst of %d streams at once (ideal %s ms)", conc, fmtMs(ms(int64(spec.ideal))))
	}
	logf("%s", msg)
	aggs, err := rounds(ctx, o, targets, spec, fmt.Sprintf("stream-%d", conc), logf)
	if err != nil {
		return "", nil, err
	}
	return streamReport(o, spec, itl, targets, aggs), aggs, nil
}

// streamIdeal is how long the fake's pacing alone makes a stream last, from
// the request to its last chunk, at TTFT 0 (the harness's): the role chunk
// and the first content chunk go out at once, then each further content
// chunk after one ITL, and the usage chunk and [DONE] right after the last.
func streamIdeal(chunks int, itl time.Duration) time.Duration {
	return time.Duration(chunks-1) * itl
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
			fmt.Fprintf(&b, "\n%d errors via %s; first: `%s`\n", a.errors, targets[i].label(), strings.ReplaceAll(a.firstErr, "`", "'"))
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
		fmt.Fprintf(&b, "| %s | %d | %d | %.0f | %s | %s | %s | %s | %s | %s | %s |\n", targets[i].label(), a.requests, a.errors, a.rps(),
			roundList(a), fmtMs(a.latMs(50)), fmtMs(a.latMs(99)), fmtMs(a.latMs(99.9)),
			msList(a.roundLatP99), fmtMs(medianMs(a.roundLatP99)), cpuPer(a, targets[i], a.requests))
	}
	b.WriteString("\nEach proxy against the direct connection and against nginx (added: the proxy's figure minus direct's; " +
		"proxy CPU: the proxy's own processes, auditproxy's aggregator included, per request):\n\n")
	b.WriteString("| target | RPS ÷ direct | RPS ÷ nginx | added p50 ms | added p99 ms | added p99.9 ms | added p99 median of rounds ms | proxy CPU µs/request |\n")
	b.WriteString("|---|---:|---:|---:|---:|---:|---:|---:|\n")
	d, ng := aggs[0], peerAgg(targets, aggs, "nginx")
	for i, p := range aggs[1:] {
		t := targets[i+1]
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s | %s | %s |\n", t.label(), ratio(p.rps(), d.rps()), ratioTo(p, ng, (*aggregate).rps),
			fmtAdded(p.latMs(50), d.latMs(50)), fmtAdded(p.latMs(99), d.latMs(99)), fmtAdded(p.latMs(99.9), d.latMs(99.9)),
			fmtAdded(medianMs(p.roundLatP99), medianMs(d.roundLatP99)), proxyCPU(p, t, p.requests))
	}
	b.WriteString(nonstreamPeersTable(targets, aggs))
	b.WriteString(errorNotes(targets, aggs))
	return b.String()
}

// peerAgg returns the aggregate of the target named name, or nil.
func peerAgg(targets []*target, aggs []*aggregate, name string) *aggregate {
	for i, t := range targets {
		if t.name == name {
			return aggs[i]
		}
	}
	return nil
}

func ratio(a, b float64) string {
	if b <= 0 || math.IsNaN(a) || math.IsNaN(b) {
		return "n/a"
	}
	return fmt.Sprintf("×%.3f", a/b)
}

func ratioTo(p, ref *aggregate, f func(*aggregate) float64) string {
	if ref == nil {
		return "n/a"
	}
	return ratio(f(p), f(ref))
}

// proxyCPU is the CPU of a target's own processes (all but the fake, which
// is charged to every target alike) per unit of work, in µs.
func proxyCPU(a *aggregate, t *target, units int64) string {
	v, ok := proxyCPUValue(a, t, units)
	if !ok {
		return "n/a"
	}
	return fmt.Sprintf("%.1f", v)
}

func proxyCPUValue(a *aggregate, t *target, units int64) (float64, bool) {
	if units == 0 || len(t.procs) < 2 {
		return 0, false
	}
	var total time.Duration
	found := false
	for _, c := range t.procs[1:] {
		if c == nil {
			continue
		}
		if d, ok := a.cpu[c.name]; ok {
			total += d
			found = true
		}
	}
	return float64(total.Microseconds()) / float64(units), found
}

// proxyRSS is the peak resident memory of a target's own processes, in MB.
func proxyRSS(a *aggregate, t *target) string { return fmtMB(proxyRSSBytes(a, t)) }

func proxyRSSBytes(a *aggregate, t *target) int64 { return proxyRSSIn(a.rss, t) }

// proxyRSSIn sums the peaks in rss of a target's own processes.
func proxyRSSIn(rss map[string]int64, t *target) int64 {
	var total int64
	for _, c := range t.procs[1:] {
		if c != nil && c.name != "forwardrecv" { // the aggregator runs elsewhere in production
			total += rss[c.name]
		}
	}
	return total
}

// fmtMB formats bytes in MB, n/a for none (not sampled).
func fmtMB(b int64) string {
	if b == 0 {
		return "n/a"
	}
	return fmt.Sprintf("%.1f", float64(b)/(1<<20))
}

// peerPair is an auditproxy target (auditproxy, auditproxy-async) and a
// peer measured in the same rounds.
type peerPair struct {
	t, peer   *target
	a, peerAg *aggregate
}

// peerPairs pairs each auditproxy target with each peer, in target order;
// none when no peer was measured.
func peerPairs(targets []*target, aggs []*aggregate) []peerPair {
	var out []peerPair
	for i, t := range targets[1:] { // targets[0] is direct
		if t.peer {
			continue
		}
		for j, p := range targets {
			if p.peer {
				out = append(out, peerPair{t: t, peer: p, a: aggs[i+1], peerAg: aggs[j]})
			}
		}
	}
	return out
}

func (pp peerPair) label() string { return pp.t.label() + " / " + pp.peer.label() }

// cpuRatio is the pair's proxy CPU per unit of work, auditproxy's over the
// peer's.
func (pp peerPair) cpuRatio(units func(*aggregate) int64) string {
	a, ok1 := proxyCPUValue(pp.a, pp.t, units(pp.a))
	p, ok2 := proxyCPUValue(pp.peerAg, pp.peer, units(pp.peerAg))
	if !ok1 || !ok2 {
		return "n/a"
	}
	return ratio(a, p)
}

// rssRatio is the pair's peak RSS, auditproxy's over the peer's.
func (pp peerPair) rssRatio() string {
	a, p := proxyRSSBytes(pp.a, pp.t), proxyRSSBytes(pp.peerAg, pp.peer)
	if a == 0 || p == 0 {
		return "n/a" // not sampled: a target the harness did not start
	}
	return ratio(float64(a), float64(p))
}

func perRequest(a *aggregate) int64 { return a.requests }
func perChunk(a *aggregate) int64   { return a.chunks }

// roundRatios lists, round by round, a's values over b's.
func roundRatios(a, b []float64) string {
	parts := make([]string, min(len(a), len(b)))
	for i := range parts {
		parts[i] = ratio(a[i], b[i])
	}
	return strings.Join(parts, " / ")
}

// peersIntro opens the table of auditproxy against each peer; diffs says
// it has "− peer's" columns.
func peersIntro(diffs bool) string {
	s := "\nauditproxy against each peer measured in the same rounds (÷ peer: auditproxy's figure over the peer's"
	if diffs {
		s += "; − peer's: auditproxy's added figure minus the peer's added figure, which is auditproxy's figure minus the peer's"
	}
	return s + ")"
}

func nonstreamPeersTable(targets []*target, aggs []*aggregate) string {
	pairs := peerPairs(targets, aggs)
	if len(pairs) == 0 {
		return ""
	}
	var b strings.Builder
	b.WriteString(peersIntro(false) + ". RPS ÷ peer per round: the ratio of the RPS each measured in round 1, 2, …, rounds being interleaved. " +
		"Issue #16 asks, at 64 connections, for RPS ÷ fasthttp (bare proxy) of at least ×0.85 and RPS ÷ nginx of at least ×0.8:\n\n")
	b.WriteString("| auditproxy / peer | RPS ÷ peer | RPS ÷ peer per round | proxy CPU µs/request ÷ peer |\n")
	b.WriteString("|---|---:|---|---:|\n")
	for _, pp := range pairs {
		fmt.Fprintf(&b, "| %s | %s | %s | %s |\n", pp.label(), ratio(pp.a.rps(), pp.peerAg.rps()),
			roundRatios(pp.a.roundRPS, pp.peerAg.roundRPS), pp.cpuRatio(perRequest))
	}
	return b.String()
}

func nonstreamRatePeersTable(targets []*target, aggs []*aggregate) string {
	pairs := peerPairs(targets, aggs)
	if len(pairs) == 0 {
		return ""
	}
	var b strings.Builder
	b.WriteString(peersIntro(true) + ". Issue #16 asks, at 2,000 requests/s, for proxy CPU µs/request ÷ nginx of at most ×2 " +
		"and added p99 − nginx's of at most +0.5 ms:\n\n")
	b.WriteString("| auditproxy / peer | added p50 − peer's ms | added p99 − peer's ms | added p99 median of rounds − peer's ms | proxy CPU µs/request ÷ peer |\n")
	b.WriteString("|---|---:|---:|---:|---:|\n")
	for _, pp := range pairs {
		a, p := pp.a, pp.peerAg
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s |\n", pp.label(), fmtAdded(a.latMs(50), p.latMs(50)), fmtAdded(a.latMs(99), p.latMs(99)),
			fmtAdded(medianMs(a.roundLatP99), medianMs(p.roundLatP99)), pp.cpuRatio(perRequest))
	}
	return b.String()
}

func streamPeersTable(targets []*target, aggs []*aggregate) string {
	pairs := peerPairs(targets, aggs)
	if len(pairs) == 0 {
		return ""
	}
	var b strings.Builder
	b.WriteString(peersIntro(true) + ". Issue #16 asks, at 256 streams, for added chunk delay p99 − nginx's of at most +0.1 ms, and at 2,000 streams " +
		"for peak RSS ÷ nginx of at most ×1.2 and a time until all streams end of at most ×1.05 nginx's: burst end ÷ peer, " +
		"the medians of rounds over each other (the ideal included, as the issue counts it), and per round the ratio of the two bursts run in round 1, 2, …:\n\n")
	b.WriteString("| auditproxy / peer | added TTFT p99 − peer's ms | added chunk delay p50 − peer's ms | added chunk delay p99 − peer's ms | " +
		"added chunk delay p99 median of rounds − peer's ms | peak RSS ÷ peer | burst end ÷ peer | burst end ÷ peer per round | proxy CPU µs/chunk ÷ peer |\n")
	b.WriteString("|---|---:|---:|---:|---:|---:|---:|---|---:|\n")
	for _, pp := range pairs {
		a, p := pp.a, pp.peerAg
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", pp.label(), fmtAdded(a.latMs(99), p.latMs(99)),
			fmtAdded(a.delayMs(50), p.delayMs(50)), fmtAdded(a.delayMs(99), p.delayMs(99)),
			fmtAdded(medianMs(a.roundDelayP99), medianMs(p.roundDelayP99)),
			pp.rssRatio(), ratio(medianMs(a.roundBurstMs), medianMs(p.roundBurstMs)), orNA(roundRatios(a.roundBurstMs, p.roundBurstMs)),
			pp.cpuRatio(perChunk))
	}
	return b.String()
}

func orNA(s string) string {
	if s == "" {
		return "n/a"
	}
	return s
}

func burstNote(spec loadSpec) string {
	if !spec.burst {
		return " (no burst: -stream-burst=false)"
	}
	return "; the burst after it has the next table"
}

// streamBurstTable lists each target's bursts; "" when none ran.
func streamBurstTable(spec loadSpec, chunks int, itl time.Duration, targets []*target, aggs []*aggregate) string {
	if !spec.burst {
		return ""
	}
	var b strings.Builder
	ideal := ms(int64(spec.ideal))
	fmt.Fprintf(&b, "\nBurst, issue #16's time until all streams end: after each round's window, once the processes are quiet (as before a round), "+
		"%d streams start at once on the round's %d open keep-alive connections (each request built beforehand, all released together), "+
		"with the same request, chunks and ITL. Burst end: the time from the first request sent to the last byte of the last stream to end. "+
		"Ideal: what the fake's pacing alone needs, TTFT 0 + (%d chunks − 1) × %v = %s ms (the first content chunk goes out with the role chunk; "+
		"usage and [DONE] right after the last); burst end − ideal is the rest: the proxy, the fake and the load generator at this concurrency. "+
		"Send spread: the last request's send time minus the first's, the load generator's share. Slowest TTFT: the longest wait for a stream's first "+
		"data event. Errors and stalled: streams of the bursts that failed, and that had a gap over %v. Burst peak RSS: the proxy's own processes, "+
		"sampled every %v through the burst; the peak RSS column below covers the window and the burst. Each burst adds about the ideal "+
		"plus the wait for quiet (a fifth of a second or more) to its round.\n\n",
		spec.concurrency, spec.concurrency, chunks, itl, fmtMs(ideal),
		spec.stallAfter, burstRSSEvery(spec.ideal))
	b.WriteString("| target | burst streams | burst errors | burst stalled | burst end ms per round | burst end median of rounds ms | " +
		"burst end − ideal median of rounds ms | send spread max ms | slowest TTFT median of rounds ms | burst peak RSS MB |\n")
	b.WriteString("|---|---:|---:|---:|---|---:|---:|---:|---:|---:|\n")
	for i, a := range aggs {
		fmt.Fprintf(&b, "| %s | %d | %d | %d | %s | %s | %s | %s | %s | %s |\n", targets[i].label(), a.burstStreams, a.burstErrors, a.burstStalls,
			msList(a.roundBurstMs), fmtMs(medianMs(a.roundBurstMs)), fmtAdded(medianMs(a.roundBurstMs), ideal),
			fmtMs(ms(int64(a.burstSpreadMax))), fmtMs(medianMs(a.roundBurstTTFTMaxMs)), fmtMB(proxyRSSIn(a.burstRSS, targets[i])))
	}
	return b.String()
}

// plotTargets writes the latency (or per-chunk delay) percentiles of every
// target to a PNG.
func plotTargets(path, title string, targets []*target, aggs []*aggregate, delays bool) error {
	var series []cdfSeries
	for i, t := range targets {
		lat := aggs[i].lat
		if delays {
			lat = aggs[i].delays
		}
		series = append(series, cdfSeries{Name: t.label(), Lat: lat})
	}
	if err := writeCDF(path, title, series); err != nil {
		return fmt.Errorf("-plot %s: %w", path, err)
	}
	return nil
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
		fmt.Fprintf(&b, "| %s | %d | %d | %s | %.0f | %s | %s | %s | %s | %s | %s | %s | %s |\n", targets[i].label(), a.requests, a.errors,
			fmtRate(spec.rate), a.rps(), roundList(a), fmtMs(a.latMs(50)), fmtMs(a.latMs(99)), fmtMs(a.latMs(99.9)),
			msList(a.roundLatP99), fmtMs(medianMs(a.roundLatP99)), fmtMs(a.lagMs(99)), cpuPer(a, targets[i], a.requests))
	}
	b.WriteString("\nEach proxy against the direct connection and against nginx (added: the proxy's figure minus direct's; " +
		"added ÷ nginx's: the proxy's added p99 over nginx's, below 1 is less; proxy CPU: the proxy's own processes, auditproxy's aggregator included, per request):\n\n")
	b.WriteString("| target | added p50 ms | added p99 ms | added p99.9 ms | added p99 median of rounds ms | added p99 ÷ nginx's | proxy CPU µs/request |\n")
	b.WriteString("|---|---:|---:|---:|---:|---:|---:|\n")
	d, ng := aggs[0], peerAgg(targets, aggs, "nginx")
	for i, p := range aggs[1:] {
		t := targets[i+1]
		vsNginx := "n/a"
		if ng != nil {
			vsNginx = ratio(medianMs(p.roundLatP99)-medianMs(d.roundLatP99), medianMs(ng.roundLatP99)-medianMs(d.roundLatP99))
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s | %s |\n", t.label(),
			fmtAdded(p.latMs(50), d.latMs(50)), fmtAdded(p.latMs(99), d.latMs(99)), fmtAdded(p.latMs(99.9), d.latMs(99.9)),
			fmtAdded(medianMs(p.roundLatP99), medianMs(d.roundLatP99)), vsNginx, proxyCPU(p, t, p.requests))
	}
	b.WriteString(nonstreamRatePeersTable(targets, aggs))
	for i, a := range aggs {
		if a.unsent > 0 {
			fmt.Fprintf(&b, "\n%d requests due via %s were still unsent %v after their round's window closed: the rate was not kept, "+
				"so its latencies are queueing; lower -rate\n", a.unsent, targets[i].label(), openLoopGrace(spec.duration))
		}
	}
	b.WriteString(errorNotes(targets, aggs))
	return b.String()
}

// fmtRate writes a rate without a spurious fraction: 2000, 2500.5.
func fmtRate(r float64) string { return strconv.FormatFloat(r, 'f', -1, 64) }

func streamReport(o options, spec loadSpec, itl time.Duration, targets []*target, aggs []*aggregate) string {
	var b strings.Builder
	fmt.Fprintf(&b, "\n### stream: %d concurrent streamed chat completions\n\n", spec.concurrency)
	fmt.Fprintf(&b, "POST /v1/chat/completions with stream and include_usage, %d-byte request, %d content chunks %v apart, TTFT 0; "+
		"%d concurrent streams. TTFT: request sent to first data event received. Chunk delay: receive time minus the send "+
		"time the fake stamps into each chunk's id, for every data event (%d per stream) received in the measured window. "+
		"Streams: started in the window; chunks: received in it. Stalled: streams with a gap over %v between two events. %s "+
		"This first table is the measured window's, where each of the %d streams starts again as soon as it ends%s.\n\n",
		len(spec.body), o.streamChunks, itl, spec.concurrency, spec.wantEvents, spec.stallAfter,
		medianNote("Each p99 median of rounds (TTFT, chunk delay)"), spec.concurrency, burstNote(spec))
	b.WriteString("| target | streams | chunks | errors | stalled | TTFT p50 ms | TTFT p99 ms | TTFT p99 per round ms | TTFT p99 median of rounds ms | " +
		"chunk delay p50 ms | chunk delay p99 ms | chunk delay p99.9 ms | chunk delay p99 per round ms | chunk delay p99 median of rounds ms | CPU µs/chunk |\n")
	b.WriteString("|---|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|---|---:|---|\n")
	for i, a := range aggs {
		fmt.Fprintf(&b, "| %s | %d | %d | %d | %d | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", targets[i].label(), a.requests, a.chunks, a.errors, a.stalls,
			fmtMs(a.latMs(50)), fmtMs(a.latMs(99)), msList(a.roundLatP99), fmtMs(medianMs(a.roundLatP99)),
			fmtMs(a.delayMs(50)), fmtMs(a.delayMs(99)), fmtMs(a.delayMs(99.9)), msList(a.roundDelayP99), fmtMs(medianMs(a.roundDelayP99)),
			cpuPer(a, targets[i], a.chunks))
	}
	b.WriteString(streamBurstTable(spec, o.streamChunks, itl, targets, aggs))
	sampled := "sampled every 250 ms in the window"
	if spec.burst {
		sampled += " and through the burst as above"
	}
	fmt.Fprintf(&b, "\nEach proxy against the direct connection (added: the proxy's figure minus direct's; peak RSS: the proxy's own "+
		"processes, %s, the aggregator not included; proxy CPU: its own processes per chunk in the window):\n\n", sampled)
	b.WriteString("| target | added TTFT p50 ms | added TTFT p99 ms | added chunk delay p50 ms | added chunk delay p99 ms | added chunk delay p99.9 ms | " +
		"added TTFT p99 median of rounds ms | added chunk delay p99 median of rounds ms | added burst end median of rounds ms | longest gap ms | peak RSS MB | proxy CPU µs/chunk |\n")
	b.WriteString("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	d := aggs[0]
	for i, p := range aggs[1:] {
		t := targets[i+1]
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", t.label(),
			fmtAdded(p.latMs(50), d.latMs(50)), fmtAdded(p.latMs(99), d.latMs(99)),
			fmtAdded(p.delayMs(50), d.delayMs(50)), fmtAdded(p.delayMs(99), d.delayMs(99)), fmtAdded(p.delayMs(99.9), d.delayMs(99.9)),
			fmtAdded(medianMs(p.roundLatP99), medianMs(d.roundLatP99)), fmtAdded(medianMs(p.roundDelayP99), medianMs(d.roundDelayP99)),
			fmtAdded(medianMs(p.roundBurstMs), medianMs(d.roundBurstMs)), fmtMs(float64(p.maxGap)/1e6), proxyRSS(p, t), proxyCPU(p, t, p.chunks))
	}
	b.WriteString(streamPeersTable(targets, aggs))
	b.WriteString(errorNotes(targets, aggs))
	for i, a := range aggs {
		if a.burstErrors > 0 {
			fmt.Fprintf(&b, "\n%d burst streams failed via %s; first: `%s`\n", a.burstErrors, targets[i].label(), strings.ReplaceAll(a.burstFirstErr, "`", "'"))
		}
	}
	return b.String()
}
