// Command harness is auditproxy's load harness: it measures what the proxy
// adds in front of vLLM by comparing, in one run and in interleaved rounds
// (direct, proxy, direct, proxy, …), a direct connection to the simulated
// vLLM server of internal/fakevllm with the same traffic sent through auditproxy.
//
//	go run ./bench/harness [-workload nonstream|nonstream-rate|stream|all] [-rate 2000] [-rounds 5] [-duration 10s] [-out FILE]
//
// By default it builds bench/cmd/fakevllm and cmd/auditproxy (and
// bench/cmd/bareproxy for the fasthttp peer), runs each as its own process
// on 127.0.0.1, and kills them when it exits (also on Ctrl-C). -fake-bin
// and -proxy-bin skip the builds; -fake-url and -proxy-url use servers that
// are already running. All traffic stays on 127.0.0.1 and
// the run ends by itself (see -timeout).
//
// Workloads (all, the default, runs the three in this order):
//
//   - nonstream: non-streamed chat completions, ~1 KiB request, ~2 KiB answer,
//     no model delay, many keep-alive connections, each sending its next
//     request as soon as the answer is in (closed loop): the proxy's
//     throughput and CPU cost when it is the bottleneck. Its latencies are
//     mostly queueing at saturation, not what the proxy adds to a request.
//   - nonstream-rate: the same requests in an open loop, as wrk2 sends them:
//     due at a fixed rate (-rate, default 2000 req/s) below saturation,
//     whatever the answers, with latency counted from each request's
//     intended send time. This is where the proxy's added latency is read.
//     `-workload nonstream -rate N` runs this one alone, too.
//   - stream: streamed chat completions, 200 chunks 5 ms apart, at modest
//     concurrency (-stream-concurrency for several levels): the time to
//     first token and per-chunk delay the proxy adds. The fake stamps each
//     chunk's id with its send time, so per-chunk delay is receive time
//     minus send time. Each round keeps N streams going back to back for
//     its window; then (-stream-burst, on by default), once the processes
//     are quiet, it starts N streams at once on the round's open
//     connections and measures the time from the first request sent to the
//     last stream's last byte, against the ideal the fake's pacing alone
//     needs, (chunks − 1) × ITL: issue #16's "time until all streams end".
//     The burst adds that ideal plus the wait for quiet, about 1.2 s at the
//     defaults, to every round of every target. Peak RSS covers the window
//     and the burst, where it peaks when streams are many.
//
// Peers (-peers, default fasthttp,nginx,haproxy) are plain reverse proxies
// measured in the same interleaved rounds, so that each table also shows
// auditproxy against them: fasthttp is bench/cmd/bareproxy, a bare fasthttp
// proxy configured as auditproxy's own but auditing nothing, the floor for a
// Go proxy on fasthttp, which the harness builds like the fake (-bare-bin
// skips the build); nginx and HAProxy are the distribution's (see
// peers.go). -peers none measures auditproxy against the direct connection
// alone.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// options are the harness's flags.
type options struct {
	workload    string
	rounds      int
	duration    time.Duration
	warmup      time.Duration
	concurrency int
	rate        float64 // -rate as given; see openLoopRate
	out         string
	timeout     time.Duration

	proxyBin, proxyURL string
	fakeBin, fakeURL   string
	fakeListen         string
	keepTmp            bool

	promptBytes  int
	answerBytes  int
	streamChunks int
	streamITL    time.Duration

	peers        []string // plain proxies measured beside auditproxy: fasthttp, nginx, haproxy
	bareBin      string   // bench/cmd/bareproxy binary, the fasthttp peer ("": build it)
	installPeers bool
	streamLevels []int         // concurrent streams of each stream level; nil: -concurrency or the default
	recvBin      string        // forwardrecv binary ("": build it)
	plot         string        // PNG file for the latency CDF
	async        bool          // also auditproxy with --durability async
	stallAfter   time.Duration // a stream gap longer than this is a stall (0: derived from the ITL)
	streamBurst  bool          // after each stream round, a burst of all the level's streams at once

	tmpParent string // where the run's temporary directory goes ("": the system's); tests set it
}

const (
	defaultNonstreamConcurrency = 64
	defaultStreamConcurrency    = 32
	minRounds                   = 3
	// defaultRate is the open loop's rate when -rate is not given: well
	// below where the proxy saturates a couple of shared cores, so the
	// latencies it measures are the proxy's own cost, not queueing.
	defaultRate = 2000
)

func parseFlags(args []string, stderr io.Writer) (options, error) {
	var o options
	fs := flag.NewFlagSet("harness", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&o.workload, "workload", "all", "nonstream, nonstream-rate, stream or all")
	fs.IntVar(&o.rounds, "rounds", 5, "rounds per target; each round runs direct, then proxy (at least 3; the tables' median of round p99s "+
		"needs enough rounds that one stalled round cannot decide it)")
	fs.DurationVar(&o.duration, "duration", 10*time.Second, "measured time per round and target")
	fs.DurationVar(&o.warmup, "warmup", 0, "unmeasured load before each round on fresh connections (default duration/10, at most 1s)")
	fs.IntVar(&o.concurrency, "concurrency", 0, fmt.Sprintf("concurrent connections (default %d for nonstream and nonstream-rate, %d for stream); in the open loop, also the workers that share its schedule",
		defaultNonstreamConcurrency, defaultStreamConcurrency))
	fs.Float64Var(&o.rate, "rate", 0, fmt.Sprintf("open loop: requests per second in total, for nonstream-rate and all (default %d); with -workload nonstream, "+
		"runs it open-loop at this rate instead of closed-loop", defaultRate))
	fs.StringVar(&o.out, "out", "", "append the results and the command line to this markdown file")
	fs.DurationVar(&o.timeout, "timeout", 0, "give up after this long (default: twice the planned run plus 5 minutes for builds)")
	fs.StringVar(&o.proxyBin, "proxy-bin", "", "auditproxy binary to run instead of building ./cmd/auditproxy")
	fs.StringVar(&o.proxyURL, "proxy-url", "", "use an auditproxy already running at this URL (its upstream must be the fake: see -fake-listen, -fake-url)")
	fs.StringVar(&o.fakeBin, "fake-bin", "", "fakevllm binary to run instead of building ./bench/cmd/fakevllm")
	fs.StringVar(&o.fakeURL, "fake-url", "", "use a fakevllm already running at this URL (start it with -output-tokens 4096 and the default -ttft/-itl 0s)")
	fs.StringVar(&o.fakeListen, "fake-listen", "127.0.0.1:0", "address for the fake the harness starts")
	fs.BoolVar(&o.keepTmp, "keep-tmp", false, "keep the temporary directory (binaries, logs, proxy data)")
	fs.IntVar(&o.promptBytes, "prompt-bytes", 1024, "request body size, both workloads")
	fs.IntVar(&o.answerBytes, "answer-bytes", 2048, "nonstream answer body size (max_tokens is calibrated to it)")
	fs.IntVar(&o.streamChunks, "stream-chunks", 200, "content chunks per stream")
	fs.DurationVar(&o.streamITL, "stream-itl", 5*time.Millisecond, "delay between stream chunks (at least concurrency × 50µs at each stream level, "+
		"so the fake sends at most 20,000 chunks/s: 100ms at 2,000 streams, about a loaded vLLM's pace)")
	peers := fs.String("peers", "fasthttp,nginx,haproxy", "plain reverse proxies to measure beside auditproxy, comma-separated: "+
		"fasthttp (bench/cmd/bareproxy, a bare fasthttp proxy: the floor for a Go proxy), nginx, haproxy, or none")
	fs.StringVar(&o.bareBin, "bare-bin", "", "bareproxy binary to run as the fasthttp peer instead of building ./bench/cmd/bareproxy")
	fs.BoolVar(&o.async, "async", false, "also measure auditproxy with --durability async (events fsynced every --fsync-interval, not before each answer ends) as auditproxy-async")
	fs.BoolVar(&o.installPeers, "install-peers", true, "install missing peers with apt-get (as root)")
	levels := fs.String("stream-concurrency", "", "stream workload: comma-separated concurrent stream counts, one level each, e.g. 32,1000,2000 (default: -concurrency, or 32)")
	fs.StringVar(&o.recvBin, "recv-bin", "", "forwardrecv binary to run instead of building ./bench/cmd/forwardrecv (the aggregator auditproxy ships to)")
	fs.StringVar(&o.plot, "plot", "", "write a PNG of the latency percentiles per target (nonstream-rate latency, and stream chunk delay in FILE with -stream before .png)")
	fs.BoolVar(&o.streamBurst, "stream-burst", true, "stream: after each round's window, wait for quiet and start the level's N streams at once, "+
		"measuring the time until all have ended (adds about (chunks − 1) × ITL plus the wait per round and target)")
	fs.DurationVar(&o.stallAfter, "stall-after", 0, "stream: a gap between two chunks longer than this counts the stream as stalled (default max(1s, 20 × ITL))")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	for _, p := range strings.Split(*peers, ",") {
		switch p = strings.TrimSpace(p); p {
		case "", "none":
		case "fasthttp", "nginx", "haproxy":
			if !slices.Contains(o.peers, p) {
				o.peers = append(o.peers, p)
			}
		default:
			return o, fmt.Errorf("-peers %q: want fasthttp, nginx, haproxy or none", *peers)
		}
	}
	if *levels != "" {
		for _, f := range strings.Split(*levels, ",") {
			n, err := strconv.Atoi(strings.TrimSpace(f))
			if err != nil || n < 1 || n > 20000 {
				return o, fmt.Errorf("-stream-concurrency %q: want counts from 1 to 20000, comma-separated", *levels)
			}
			o.streamLevels = append(o.streamLevels, n)
		}
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	switch o.workload {
	case "nonstream", "nonstream-rate", "stream", "all":
	default:
		return o, fmt.Errorf("-workload %q: want nonstream, nonstream-rate, stream or all", o.workload)
	}
	if o.rounds < minRounds {
		return o, fmt.Errorf("-rounds %d: at least %d rounds are needed to see run-to-run spread", o.rounds, minRounds)
	}
	if o.duration <= 0 || o.concurrency < 0 || o.streamChunks < 1 || o.streamITL < 0 || o.promptBytes < 64 || o.answerBytes < 512 {
		return o, errors.New("-duration, -concurrency, -stream-chunks, -stream-itl, -prompt-bytes (>= 64) and -answer-bytes (>= 512) must be positive")
	}
	if o.warmup == 0 {
		o.warmup = min(o.duration/10, time.Second)
	}
	if !(o.rate >= 0 && o.rate <= 1e7) { // also NaN and Inf, which the flag package accepts
		return o, fmt.Errorf("-rate %g: want requests per second, up to 1e7", o.rate)
	}
	if o.rate > 0 && o.workload == "stream" {
		return o, errors.New("-rate applies to the nonstream workloads, not to stream")
	}
	if r := o.openLoopRate(); r > 0 && r*o.duration.Seconds() < 10 {
		return o, fmt.Errorf("-rate %g over -duration %v: fewer than 10 requests per round", r, o.duration)
	}
	for _, u := range []struct{ flag, v string }{{"-proxy-url", o.proxyURL}, {"-fake-url", o.fakeURL}} {
		if u.v != "" {
			if err := checkLoopbackURL(u.v); err != nil {
				return o, fmt.Errorf("%s: %w", u.flag, err)
			}
		}
	}
	if h, _, err := net.SplitHostPort(o.fakeListen); err != nil || !isLoopback(h) {
		return o, fmt.Errorf("-fake-listen %q: want 127.0.0.1:PORT; the harness keeps its traffic on this machine", o.fakeListen)
	}
	if o.proxyURL != "" && o.fakeURL == "" && strings.HasSuffix(o.fakeListen, ":0") {
		return o, errors.New("-proxy-url needs the fake at the proxy's upstream address: give -fake-listen ADDR or -fake-url URL")
	}
	return o, nil
}

// checkLoopbackURL keeps the harness's traffic on this machine.
func checkLoopbackURL(s string) error {
	u, err := url.Parse(s)
	if err != nil {
		return err
	}
	if u.Scheme != "http" {
		return fmt.Errorf("%q: only http:// is supported", s)
	}
	if !isLoopback(u.Hostname()) {
		return fmt.Errorf("%q: the harness only sends traffic to 127.0.0.1", s)
	}
	if u.Port() == "" {
		return fmt.Errorf("%q: give a port", s)
	}
	return nil
}

func isLoopback(host string) bool {
	return host == "127.0.0.1" || host == "localhost" || host == "::1"
}

// closedLoop reports whether the run includes the closed-loop nonstream
// workload.
func (o options) closedLoop() bool {
	return o.workload == "all" || o.workload == "nonstream" && o.rate == 0
}

// openLoopRate is the rate of the run's open-loop nonstream workload, 0
// when it has none.
func (o options) openLoopRate() float64 {
	switch {
	case o.workload == "nonstream" && o.rate > 0:
		return o.rate
	case o.workload != "nonstream-rate" && o.workload != "all":
		return 0
	case o.rate > 0:
		return o.rate
	}
	return defaultRate
}

func (o options) streams() bool { return o.workload == "all" || o.workload == "stream" }

// streamConcurrency lists the stream workload's levels.
func (o options) streamConcurrency() []int {
	switch {
	case len(o.streamLevels) > 0:
		return o.streamLevels
	case o.concurrency > 0:
		return []int{o.concurrency}
	}
	return []int{defaultStreamConcurrency}
}

// itl is the delay between chunks at a stream level: -stream-itl, but no
// less than 50µs per stream, which keeps the fake at or below 20,000 chunks
// a second on the shared cores.
func (o options) itl(concurrency int) time.Duration {
	return max(o.streamITL, time.Duration(concurrency)*50*time.Microsecond)
}

// plannedRun is how long the measurements take, builds and start-up aside.
func (o options) plannedRun() time.Duration {
	per := 2 * time.Duration(o.rounds) * (o.duration + o.warmup + time.Second)
	d := time.Duration(0)
	if o.closedLoop() {
		d += per
	}
	if o.openLoopRate() > 0 {
		d += per
	}
	if o.streams() {
		for _, conc := range o.streamConcurrency() {
			d += per + 2*time.Duration(o.rounds)*time.Duration(o.streamChunks)*o.itl(conc)
			if o.streamBurst {
				// The burst, and the wait for quiet before it.
				d += 2 * time.Duration(o.rounds) * (streamIdeal(o.streamChunks, o.itl(conc)) + time.Second)
			}
		}
	}
	return d * time.Duration(2+len(o.peers)) / 2
}

func main() {
	o, err := parseFlags(os.Args[1:], os.Stderr)
	if errors.Is(err, flag.ErrHelp) {
		os.Exit(0)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "harness:", err)
		os.Exit(2)
	}
	timeout := o.timeout
	if timeout == 0 {
		timeout = 2*o.plannedRun() + 5*time.Minute
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	// After the first Ctrl-C the run cleans up; a second one kills the
	// harness outright (the children then die by their parent-death signal).
	go func() {
		<-ctx.Done()
		stop()
	}()
	ctx, cancel := context.WithTimeoutCause(ctx, timeout, fmt.Errorf("run exceeded -timeout %v", timeout))
	defer cancel()

	err = run(ctx, o, os.Stdout, os.Stderr, commandLine())
	if err != nil {
		if cause := context.Cause(ctx); cause != nil && ctx.Err() != nil {
			err = fmt.Errorf("%w (stopped: %v)", err, cause)
		}
		fmt.Fprintln(os.Stderr, "harness:", err)
		os.Exit(1)
	}
}

// commandLine is how the run was started, for the record in -out.
func commandLine() string {
	prog := os.Args[0]
	if strings.Contains(prog, "go-build") {
		prog = "go run ./bench/harness"
	}
	parts := []string{prog}
	for _, a := range os.Args[1:] {
		if strings.ContainsAny(a, " \t'\"$\\") {
			a = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
		}
		parts = append(parts, a)
	}
	return strings.Join(parts, " ")
}
