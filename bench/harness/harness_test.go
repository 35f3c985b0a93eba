package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/auditproxy/auditproxy/bench/fakevllm"
)

func TestPercentile(t *testing.T) {
	hundred := make([]int64, 100)
	for i := range hundred {
		hundred[i] = int64(i + 1)
	}
	tests := []struct {
		name   string
		sorted []int64
		p      float64
		want   int64
	}{
		{"empty", nil, 50, -1},
		{"single", []int64{7}, 99.9, 7},
		{"p50 of 100", hundred, 50, 50},
		{"p99 of 100", hundred, 99, 99},
		{"p99.9 of 100 is the max", hundred, 99.9, 100},
		{"p100", hundred, 100, 100},
		{"tiny p rounds up to the first", hundred, 0.001, 1},
		{"p50 of 2", []int64{1, 2}, 50, 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := percentile(tc.sorted, tc.p); got != tc.want {
				t.Errorf("percentile(p%v) = %d, want %d", tc.p, got, tc.want)
			}
		})
	}
}

func TestBenchTimestamp(t *testing.T) {
	tests := []struct {
		event  string
		want   int64
		wantOK bool
	}{
		{`{"id":"chatcmpl-bench-1795420468123456789","object":"chat.completion.chunk"}`, 1795420468123456789, true},
		{`{"id":"cmpl-bench-42","object":"text_completion"}`, 42, true},
		{`{"id":"chatcmpl-0123456789abcdef0123456789abcdef"}`, 0, false},
		{`{"object":"chat.completion.chunk"}`, 0, false},
		{`{"id":"chatcmpl-bench-12x"}`, 0, false},
		{`{"id":"chatcmpl-bench-`, 0, false},
	}
	for _, tc := range tests {
		got, ok := benchTimestamp([]byte(tc.event))
		if got != tc.want || ok != tc.wantOK {
			t.Errorf("benchTimestamp(%s) = %d, %v; want %d, %v", tc.event, got, ok, tc.want, tc.wantOK)
		}
	}
}

func TestReadBenchStream(t *testing.T) {
	sent := time.Now().Add(-3 * time.Millisecond).UnixNano()
	ev := func(id string) string {
		return `data: {"id":"` + id + `","object":"chat.completion.chunk","choices":[]}` + "\n\n"
	}
	bench := "chatcmpl-bench-" + strconv.FormatInt(sent, 10)
	tests := []struct {
		name       string
		body       string
		wantEvents int
		wantDelays int
		wantErr    string
	}{
		{"timestamped", ev(bench) + ev(bench) + "data: [DONE]\n\n", 2, 2, ""},
		{"plain ids", ev("chatcmpl-abc") + "data: [DONE]\n\n", 1, 0, ""},
		{"CRLF lines", strings.ReplaceAll(ev(bench)+"data: [DONE]\n\n", "\n", "\r\n"), 1, 1, ""},
		{"no DONE", ev(bench), 1, 1, "without data: [DONE]"},
		{"error event", ev(bench) + `data: {"error":{"message":"boom"}}` + "\n\n", 1, 1, "error event"},
		{"flat error event", `data: {"object":"error","message":"boom"}` + "\n\n", 0, 0, "error event"},
		{"data after DONE", "data: [DONE]\n\n" + ev(bench), 0, 0, "after [DONE]"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t0 := time.Now().Add(-time.Millisecond)
			ttft, events, delays, err := readBenchStream(bufio.NewReader(strings.NewReader(tc.body)), t0, nil)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err %v, want one containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if events != tc.wantEvents || len(delays) != tc.wantDelays {
				t.Errorf("%d events, %d delays; want %d, %d", events, len(delays), tc.wantEvents, tc.wantDelays)
			}
			if ttft <= 0 {
				t.Errorf("ttft %v, want > 0", ttft)
			}
			for _, d := range delays {
				if d < int64(3*time.Millisecond) || d > int64(time.Minute) {
					t.Errorf("delay %v, want about 3ms", time.Duration(d))
				}
			}
		})
	}
}

func TestParseFlags(t *testing.T) {
	tests := []struct {
		name    string
		args    []string
		wantErr string
		check   func(t *testing.T, o options)
	}{
		{name: "defaults", args: nil, check: func(t *testing.T, o options) {
			if o.workload != "all" || o.rounds != 3 || o.duration != 10*time.Second || o.warmup != time.Second {
				t.Errorf("defaults %+v", o)
			}
		}},
		{name: "short rounds get a short warm-up", args: []string{"-duration", "2s"}, check: func(t *testing.T, o options) {
			if o.warmup != 200*time.Millisecond {
				t.Errorf("warmup %v, want 200ms", o.warmup)
			}
		}},
		{name: "too few rounds", args: []string{"-rounds", "2"}, wantErr: "at least 3"},
		{name: "unknown workload", args: []string{"-workload", "mixed"}, wantErr: "nonstream, stream or all"},
		{name: "remote proxy", args: []string{"-proxy-url", "http://10.0.0.1:8080", "-fake-url", "http://127.0.0.1:8000"}, wantErr: "only sends traffic to 127.0.0.1"},
		{name: "https proxy", args: []string{"-proxy-url", "https://127.0.0.1:8080", "-fake-url", "http://127.0.0.1:8000"}, wantErr: "only http://"},
		{name: "proxy-url without a known upstream", args: []string{"-proxy-url", "http://127.0.0.1:8080"}, wantErr: "-fake-listen"},
		{name: "proxy-url with fake-listen", args: []string{"-proxy-url", "http://127.0.0.1:8080", "-fake-listen", "127.0.0.1:8000"}},
		{name: "stray argument", args: []string{"extra"}, wantErr: "unexpected arguments"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			o, err := parseFlags(tc.args, io.Discard)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err %v, want one containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if tc.check != nil {
				tc.check(t, o)
			}
		})
	}
}

// quickOptions are flags for a run that takes a couple of seconds.
func quickOptions(workload string) options {
	o, err := parseFlags([]string{
		"-workload", workload, "-rounds", "3", "-duration", "150ms", "-warmup", "30ms",
		"-concurrency", "4", "-stream-chunks", "10", "-stream-itl", "2ms", "-timeout", "30s",
	}, io.Discard)
	if err != nil {
		panic(err)
	}
	return o
}

var (
	nonstreamRow = regexp.MustCompile(`(?m)^\| (direct|proxy) \| (\d+) \| (\d+) \| (\d+) \| `)
	streamRow    = regexp.MustCompile(`(?m)^\| (direct|proxy) \| (\d+) \| (\d+) \| (\d+) \| ([0-9.]+) \| `)
)

// checkReport asserts that each target row of each workload in report shows
// traffic and no errors.
func checkReport(t *testing.T, report string, nonstream, stream bool) {
	t.Helper()
	ns, st := report, ""
	if i := strings.Index(report, "### stream"); i >= 0 {
		ns, st = report[:i], report[i:]
	}
	if nonstream {
		rows := nonstreamRow.FindAllStringSubmatch(ns, -1)
		if len(rows) != 2 {
			t.Fatalf("want 2 nonstream rows, got %d in:\n%s", len(rows), report)
		}
		for _, r := range rows {
			if r[2] == "0" || r[3] != "0" || r[4] == "0" {
				t.Errorf("nonstream %s: %s requests, %s errors, %s RPS; want traffic and no errors\n%s", r[1], r[2], r[3], r[4], report)
			}
		}
	}
	if stream {
		rows := streamRow.FindAllStringSubmatch(st, -1)
		if len(rows) != 2 {
			t.Fatalf("want 2 stream rows, got %d in:\n%s", len(rows), report)
		}
		for _, r := range rows {
			if r[2] == "0" || r[3] == "0" || r[4] != "0" {
				t.Errorf("stream %s: %s streams, %s chunks, %s errors; want traffic and no errors\n%s", r[1], r[2], r[3], r[4], report)
			}
		}
	}
	if !strings.Contains(report, "| proxy − direct |") {
		t.Errorf("report lacks the difference row:\n%s", report)
	}
}

// TestRunInProcess runs the whole harness against a fake and a stand-in
// proxy that live in this process (the -fake-url / -proxy-url path).
func TestRunInProcess(t *testing.T) {
	fake := fakevllm.New(fakevllm.Config{OutputTokens: 4096})
	fakeURL, err := fake.Start("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { fake.Close() })
	proxyURL := startPassProxy(t, fakeURL)

	o := quickOptions("all")
	o.fakeURL, o.proxyURL = fakeURL, proxyURL
	o.out = t.TempDir() + "/results.md"
	var stdout, stderr bytes.Buffer
	const cmdline = "harness -workload all (test)"
	if err := run(context.Background(), o, &stdout, &stderr, cmdline); err != nil {
		t.Fatalf("run: %v\nstderr:\n%s", err, stderr.String())
	}
	checkReport(t, stdout.String(), true, true)
	saved, err := os.ReadFile(o.out)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(saved), "`"+cmdline+"`") || !strings.Contains(string(saved), stdout.String()) {
		t.Errorf("-out file lacks the command line or the tables:\n%s", saved)
	}
	// Every stream ran to its end: none was cut by the harness or the proxy.
	if st := fake.Stats(); st.StreamsAborted != 0 || st.StreamsCompleted != st.StreamsStarted {
		t.Errorf("fake stats %+v: want every stream completed", st)
	}
}

// TestRunChildProcesses runs the harness the default way, with the fake and
// the proxy as child processes (this test binary plays both), and checks
// that they are gone afterwards, after a normal end and after a cancel.
func TestRunChildProcesses(t *testing.T) {
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name        string
		cancelAfter time.Duration
		wantErr     bool
	}{
		{"runs to the end", 0, false},
		{"interrupted", 300 * time.Millisecond, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			pidDir := t.TempDir()
			t.Setenv(childEnv, "1")
			t.Setenv(pidDirEnv, pidDir)
			o := quickOptions("nonstream")
			o.fakeBin, o.proxyBin = self, self
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			if tc.cancelAfter > 0 {
				time.AfterFunc(tc.cancelAfter, cancel)
			}
			var stdout, stderr bytes.Buffer
			err := run(ctx, o, &stdout, &stderr, "harness (test)")
			if tc.wantErr != (err != nil) {
				t.Fatalf("run error %v, want error %v\nstderr:\n%s", err, tc.wantErr, stderr.String())
			}
			if !tc.wantErr {
				checkReport(t, stdout.String(), true, false)
				if !strings.Contains(stdout.String(), "auditproxy ") {
					t.Errorf("report shows no proxy CPU use:\n%s", stdout.String())
				}
			}
			pids, _ := os.ReadDir(pidDir)
			if len(pids) != 2 {
				t.Fatalf("%d children recorded their pid, want 2", len(pids))
			}
			for _, p := range pids {
				pid, _ := strconv.Atoi(p.Name())
				if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
					t.Errorf("child %d still exists after run returned (kill -0: %v)", pid, err)
				}
			}
		})
	}
}

func TestRunProxyFailsToStart(t *testing.T) {
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv(childEnv, "1")
	t.Setenv(failNowEnv, "1")
	o := quickOptions("nonstream")
	o.fakeBin, o.proxyBin = self, self
	err = run(context.Background(), o, io.Discard, io.Discard, "harness (test)")
	if err == nil || !strings.Contains(err.Error(), failMessage) || !strings.Contains(err.Error(), "exited") {
		t.Fatalf("err %v, want the proxy's exit and its log", err)
	}
}
