package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// builtBareProxy is bench/cmd/bareproxy, built once for all tests of this
// run into builtDir (removed by TestMain).
var (
	buildBareOnce sync.Once
	builtDir      string
	builtBareBin  string
	builtBareErr  error
)

func bareProxyBin(t *testing.T) string {
	t.Helper()
	buildBareOnce.Do(func() {
		if builtDir, builtBareErr = os.MkdirTemp("", "harness-test-bin-"); builtBareErr != nil {
			return
		}
		builtBareBin = filepath.Join(builtDir, "bareproxy")
		builtBareErr = build(context.Background(), "./bench/cmd/bareproxy", builtBareBin)
	})
	if builtBareErr != nil {
		t.Fatalf("building bench/cmd/bareproxy: %v", builtBareErr)
	}
	return builtBareBin
}

// startBareProxyFor runs the real bareproxy, through the harness's own
// startBareProxy, in front of upstream (http://host:port).
func startBareProxyFor(t *testing.T, upstream string) string {
	t.Helper()
	var procs procGroup
	t.Cleanup(procs.stopAll)
	_, u, err := startBareProxy(context.Background(), &procs, bareProxyBin(t), strings.TrimPrefix(upstream, "http://"), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return u
}

// TestBareProxyPassesBytesAndStreams sends requests through the real
// bareproxy to an upstream that records what it gets: request and answer
// bytes must pass unchanged, hop-by-hop headers must not, one connection
// each side must serve every request, and an SSE stream must reach the
// client event by event: the upstream sends its next event only once the
// client has received the last, so a proxy that holds events back stalls it.
func TestBareProxyPassesBytesAndStreams(t *testing.T) {
	type seen struct {
		method, uri string
		header      http.Header
		body        []byte
	}
	var (
		mu       sync.Mutex
		requests []seen
		upConns  atomic.Int32
	)
	// Bytes a proxy might be tempted to touch: escapes, CRLF, non-UTF-8.
	answer := []byte("{\"id\":\"cmpl-1\",\"text\":\"caf\u00e9 \\r\\n \xff\xfe\",\"n\":1}\n")
	big := bytes.Repeat([]byte("0123456789abcdef"), 8<<10) // 128 KiB: streamed at its known length
	pieces := []string{"first piece\n", "second piece\n", "third\n"}
	const events = 4
	acks := make(chan struct{}, events)
	var sseSent bytes.Buffer // what the upstream sent of the stream, under mu
	var late atomic.Int32    // events the client had not received when the upstream gave up waiting

	upstream := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		mu.Lock()
		requests = append(requests, seen{r.Method, r.RequestURI, r.Header.Clone(), body})
		mu.Unlock()
		switch r.URL.Path {
		case "/health":
		case "/v1/chat/completions":
			w.Header().Set("Content-Type", "application/json")
			w.Header().Set("X-Upstream", "yes")
			w.Header().Set("Content-Length", strconv.Itoa(len(answer)))
			w.Write(answer)
		case "/big":
			w.Header().Set("Content-Length", strconv.Itoa(len(big)))
			w.Write(big)
		case "/chunked":
			for _, p := range pieces {
				io.WriteString(w, p)
				w.(http.Flusher).Flush()
			}
		case "/sse":
			w.Header().Set("Content-Type", "text/event-stream")
			for i := range events {
				ev := fmt.Sprintf("data: {\"i\":%d,\"pad\":%q}\n\n", i, strings.Repeat("x", 10*i))
				mu.Lock()
				sseSent.WriteString(ev)
				mu.Unlock()
				io.WriteString(w, ev)
				w.(http.Flusher).Flush()
				select {
				case <-acks:
				case <-time.After(time.Second):
					late.Add(1)
				}
			}
			mu.Lock()
			sseSent.WriteString("data: [DONE]\n\n")
			mu.Unlock()
			io.WriteString(w, "data: [DONE]\n\n")
		default:
			http.NotFound(w, r)
		}
	}))
	upstream.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			upConns.Add(1)
		}
	}
	upstream.Start()
	t.Cleanup(upstream.Close)
	proxyURL := startBareProxyFor(t, upstream.URL)

	var dials atomic.Int32
	client := &http.Client{Timeout: 20 * time.Second, Transport: &http.Transport{
		DisableCompression: true,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			dials.Add(1)
			return (&net.Dialer{}).DialContext(ctx, network, addr)
		},
	}}
	do := func(method, path string, body []byte, header map[string]string) *http.Response {
		t.Helper()
		req, _ := http.NewRequest(method, proxyURL+path, bytes.NewReader(body))
		for k, v := range header {
			req.Header.Set(k, v)
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatalf("%s %s: %v", method, path, err)
		}
		if resp.StatusCode != http.StatusOK {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			t.Fatalf("%s %s: %s: %s", method, path, resp.Status, b)
		}
		return resp
	}
	readAll := func(resp *http.Response) []byte {
		t.Helper()
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	mu.Lock()
	requests = nil // the harness's start-up probe of /health
	mu.Unlock()

	// A non-streamed completion: the request's bytes reach the upstream,
	// the answer's the client.
	reqBody := []byte("{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"h\u00e9llo \\\"x\\\" \xc3\"}]}")
	resp := do("POST", "/v1/chat/completions?trace=%2Fa&b=1", reqBody, map[string]string{
		"Content-Type": "application/json", "Authorization": "Bearer sk-test", "X-Custom": "kept",
		"Connection": "X-Hop", "X-Hop": "dropped",
	})
	if got := readAll(resp); !bytes.Equal(got, answer) {
		t.Errorf("answer through bareproxy:\n%q\nwant the upstream's\n%q", got, answer)
	}
	if resp.Header.Get("X-Upstream") != "yes" || resp.Header.Get("Content-Type") != "application/json" || resp.ContentLength != int64(len(answer)) {
		t.Errorf("answer header %v: want the upstream's X-Upstream, Content-Type and Content-Length %d", resp.Header, len(answer))
	}
	mu.Lock()
	if len(requests) != 1 {
		t.Fatalf("upstream got %d requests, want 1", len(requests))
	}
	r := requests[0]
	mu.Unlock()
	if r.method != "POST" || r.uri != "/v1/chat/completions?trace=%2Fa&b=1" || !bytes.Equal(r.body, reqBody) {
		t.Errorf("upstream got %s %s with body\n%q\nwant POST /v1/chat/completions?trace=%%2Fa&b=1 with\n%q", r.method, r.uri, r.body, reqBody)
	}
	for k, want := range map[string]string{"Authorization": "Bearer sk-test", "X-Custom": "kept", "Content-Type": "application/json", "X-Hop": ""} {
		if got := r.header.Get(k); got != want {
			t.Errorf("upstream got %s %q, want %q", k, got, want)
		}
	}

	// Known length over 64 KiB (streamed), and unknown length (chunked).
	resp = do("GET", "/big", nil, nil)
	if got := readAll(resp); !bytes.Equal(got, big) || resp.ContentLength != int64(len(big)) {
		t.Errorf("big answer: %d bytes (Content-Length %d), equal %v; want the upstream's %d", len(got), resp.ContentLength, bytes.Equal(got, big), len(big))
	}
	if got := readAll(do("GET", "/chunked", nil, nil)); string(got) != strings.Join(pieces, "") {
		t.Errorf("chunked answer %q, want %q", got, strings.Join(pieces, ""))
	}

	// SSE, in lockstep: each event is acknowledged once received whole.
	resp = do("POST", "/sse", []byte(`{"stream":true}`), map[string]string{"Content-Type": "application/json"})
	br := bufio.NewReader(resp.Body)
	var got bytes.Buffer
	for i := range events {
		for {
			line, err := br.ReadString('\n')
			got.WriteString(line)
			if err != nil {
				t.Fatalf("event %d: %v after %q", i, err, got.String())
			}
			if line == "\n" {
				break
			}
		}
		acks <- struct{}{}
	}
	rest, err := io.ReadAll(br)
	resp.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	got.Write(rest)
	if n := late.Load(); n > 0 {
		t.Errorf("%d of %d SSE events had not reached the client a second after the upstream sent them: bareproxy holds events back", n, events)
	}
	mu.Lock()
	sent := sseSent.String()
	mu.Unlock()
	if got.String() != sent {
		t.Errorf("SSE stream through bareproxy:\n%q\nwant the upstream's\n%q", got.String(), sent)
	}

	// After a stream, both connections serve the next request.
	if got := readAll(do("POST", "/v1/chat/completions", reqBody, nil)); !bytes.Equal(got, answer) {
		t.Errorf("answer after the stream: %q", got)
	}
	if d, u := dials.Load(), upConns.Load(); d != 1 || u != 1 {
		t.Errorf("%d client connections, %d upstream connections for sequential requests; want 1 and 1 (keep-alive)", d, u)
	}
}

// TestRunWithBareProxyPeer runs the harness the default way (the fake, the
// stand-in auditproxy and the receiver as child processes) with the real
// bareproxy as the fasthttp peer, and checks that each workload's tables
// give it a row and set auditproxy's figures against it, computed from the
// figures the other tables show.
func TestRunWithBareProxyPeer(t *testing.T) {
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv(childEnv, "1")
	o := quickOptions(t, "all")
	o.fakeBin, o.proxyBin, o.recvBin, o.bareBin = self, self, self, bareProxyBin(t)
	o.peers = []string{"fasthttp"}
	o.rate = 500 // as TestRunInProcess: one the race detector's slowdown allows
	var stdout, stderr bytes.Buffer
	if err := run(context.Background(), o, &stdout, &stderr, "harness (test)"); err != nil {
		t.Fatalf("run: %v\nstderr:\n%s", err, stderr.String())
	}
	report := stdout.String()
	checkReport(t, report, true, o.rate, true)
	if !strings.Contains(report, "\n- "+bareProxyLabel+": process `"+o.bareBin+" -listen 127.0.0.1:") {
		t.Errorf("report does not describe the fasthttp peer:\n%s", report)
	}

	num := func(sec, cell string) float64 {
		t.Helper()
		v, err := strconv.ParseFloat(strings.TrimPrefix(cell, "×"), 64)
		if err != nil {
			t.Fatalf("cell %q is not a number in:\n%s", cell, sec)
		}
		return v
	}
	// near reports whether a printed figure is want, give or take the
	// rounding of the figures it was computed from.
	near := func(got, want, rel, abs float64) bool { return math.Abs(got-want) <= rel*math.Abs(want)+abs }
	pair := "auditproxy / " + bareProxyLabel
	for _, w := range []struct{ name, count, cpuCol string }{
		{"nonstream", "requests", "proxy CPU µs/request"},
		{"nonstream-rate", "requests", "proxy CPU µs/request"},
		{"stream", "streams", "proxy CPU µs/chunk"},
	} {
		sec := section(report, w.name)
		tabs := tables(t, sec)
		want := 3
		if w.name == "stream" {
			want = 4 // the burst's
		}
		if len(tabs) != want {
			t.Fatalf("%s: %d tables, want the targets', for streams the burst's, the comparison and auditproxy against the peer:\n%s", w.name, len(tabs), sec)
		}
		targets, cmp, vs := tabs[0], tableWith(t, sec, w.cpuCol), tableWith(t, sec, "auditproxy / peer")[pair]
		bare := targets[bareProxyLabel]
		if bare == nil || bare[w.count] == "0" || bare["errors"] != "0" || cmp[bareProxyLabel] == nil {
			t.Fatalf("%s: the bare proxy's rows %v, %v: want traffic and no errors in both tables:\n%s", w.name, bare, cmp[bareProxyLabel], sec)
		}
		if vs == nil {
			t.Fatalf("%s: no %q row in:\n%s", w.name, pair, sec)
		}
		// CPU is counted in 10 ms ticks: a quick round's may be none.
		if c := vs[w.cpuCol+" ÷ peer"]; c != "n/a" {
			want := num(sec, cmp["auditproxy"][w.cpuCol]) / num(sec, cmp[bareProxyLabel][w.cpuCol])
			if !near(num(sec, c), want, 0.02, 0.002) {
				t.Errorf("%s: CPU ÷ peer %s, want about ×%.3f from the comparison table:\n%s", w.name, c, want, sec)
			}
		}
		switch w.name {
		case "nonstream":
			want := num(sec, targets["auditproxy"]["RPS"]) / num(sec, targets[bareProxyLabel]["RPS"])
			if got := num(sec, vs["RPS ÷ peer"]); !near(got, want, 0.01, 0.002) {
				t.Errorf("RPS ÷ peer %v, want about ×%.3f from the RPS column:\n%s", got, want, sec)
			}
			if n := len(strings.Split(vs["RPS ÷ peer per round"], " / ")); n != 3 {
				t.Errorf("RPS ÷ peer per round %q: want 3 rounds", vs["RPS ÷ peer per round"])
			}
		case "nonstream-rate":
			want := num(sec, targets["auditproxy"]["p99 ms"]) - num(sec, targets[bareProxyLabel]["p99 ms"])
			if got := num(sec, vs["added p99 − peer's ms"]); !near(got, want, 0, 0.0025) {
				t.Errorf("added p99 − peer's %v, want %+.3f from the p99 column:\n%s", got, want, sec)
			}
			want = num(sec, targets["auditproxy"]["p99 median of rounds ms"]) - num(sec, targets[bareProxyLabel]["p99 median of rounds ms"])
			if got := num(sec, vs["added p99 median of rounds − peer's ms"]); !near(got, want, 0, 0.0025) {
				t.Errorf("added p99 median of rounds − peer's %v, want %+.3f:\n%s", got, want, sec)
			}
		case "stream":
			want := num(sec, targets["auditproxy"]["chunk delay p99 ms"]) - num(sec, targets[bareProxyLabel]["chunk delay p99 ms"])
			if got := num(sec, vs["added chunk delay p99 − peer's ms"]); !near(got, want, 0, 0.0025) {
				t.Errorf("added chunk delay p99 − peer's %v, want %+.3f from the chunk delay column:\n%s", got, want, sec)
			}
			want = num(sec, cmp["auditproxy"]["peak RSS MB"]) / num(sec, cmp[bareProxyLabel]["peak RSS MB"])
			if got := num(sec, vs["peak RSS ÷ peer"]); !near(got, want, 0.02, 0.002) {
				t.Errorf("peak RSS ÷ peer %v, want about ×%.3f from the comparison table:\n%s", got, want, sec)
			}
			checkBurst(t, sec, o, "direct", "auditproxy", bareProxyLabel)
			burst := tableWith(t, sec, "burst end median of rounds ms")
			// The peak RSS covers the burst: it is at least the burst's.
			for _, target := range []string{"auditproxy", bareProxyLabel} {
				if peak, inBurst := num(sec, cmp[target]["peak RSS MB"]), num(sec, burst[target]["burst peak RSS MB"]); peak < inBurst {
					t.Errorf("%s: peak RSS %v MB, under the burst's %v MB:\n%s", target, peak, inBurst, sec)
				}
			}
			want = num(sec, burst["auditproxy"]["burst end median of rounds ms"]) / num(sec, burst[bareProxyLabel]["burst end median of rounds ms"])
			if got := num(sec, vs["burst end ÷ peer"]); !near(got, want, 0.0001, 0.0015) {
				t.Errorf("burst end ÷ peer %v, want ×%.3f from the burst table:\n%s", got, want, sec)
			}
			ap := strings.Split(burst["auditproxy"]["burst end ms per round"], " / ")
			bp := strings.Split(burst[bareProxyLabel]["burst end ms per round"], " / ")
			got := strings.Split(vs["burst end ÷ peer per round"], " / ")
			if len(got) != 3 || len(ap) != 3 || len(bp) != 3 {
				t.Fatalf("burst end ÷ peer per round %q from %q and %q: want 3 rounds each", got, ap, bp)
			}
			for r := range got {
				if want := num(sec, ap[r]) / num(sec, bp[r]); !near(num(sec, got[r]), want, 0.0001, 0.0015) {
					t.Errorf("round %d: burst end ÷ peer %s, want ×%.3f from %s and %s ms", r+1, got[r], want, ap[r], bp[r])
				}
			}
		}
	}
}
