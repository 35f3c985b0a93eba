package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
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

func TestMedianMs(t *testing.T) {
	nan := math.NaN()
	tests := []struct {
		name     string
		perRound []float64
		want     float64
	}{
		{"one stalled round of three", []float64{0.473, 6.108, 0.660}, 0.660},
		{"one stalled round of five", []float64{0.5, 0.7, 120, 0.6, 0.4}, 0.6},
		{"even count: mean of the middle two", []float64{4, 1, 100, 2}, 3},
		{"a round without samples is left out", []float64{0.9, nan, 0.3, 0.5}, 0.5},
		{"single", []float64{2.5}, 2.5},
		{"no samples at all", []float64{nan, nan}, nan},
		{"no rounds", nil, nan},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			in := slices.Clone(tc.perRound)
			got := medianMs(in)
			if math.IsNaN(tc.want) != math.IsNaN(got) || !math.IsNaN(got) && got != tc.want {
				t.Errorf("medianMs(%v) = %v, want %v", tc.perRound, got, tc.want)
			}
			// The per-round column is printed after the median is taken.
			for i := range in {
				if in[i] != tc.perRound[i] && !(math.IsNaN(in[i]) && math.IsNaN(tc.perRound[i])) {
					t.Fatalf("medianMs reordered its input: %v, was %v", in, tc.perRound)
				}
			}
		})
	}
}

// TestAggregateRoundP99 feeds rounds where one stalls: the pooled p99 is
// the stall's, the median of the rounds' p99s is not.
func TestAggregateRoundP99(t *testing.T) {
	round := func(latMs, stallMs float64, delays bool) roundResult {
		r := roundResult{requests: 100, window: time.Second}
		for i := range 100 {
			v := latMs
			if i >= 95 { // 5% of the round: inside its p99
				v = stallMs
			}
			r.lat = append(r.lat, int64(v*1e6))
			if delays {
				r.delays = append(r.delays, int64(v*1e6))
			}
		}
		// Out of order, as workers append them.
		slices.Reverse(r.lat)
		return r
	}
	var a aggregate
	a.add(round(0.5, 0.5, true))
	a.add(round(0.5, 150, true)) // the stalled round
	a.add(round(0.6, 0.6, false))
	if got := a.latMs(99); got != 150 {
		t.Errorf("pooled p99 %v ms, want the stall's 150", got)
	}
	if got, want := msList(a.roundLatP99), "0.500 / 150.000 / 0.600"; got != want {
		t.Errorf("p99 per round %q, want %q", got, want)
	}
	if got := medianMs(a.roundLatP99); got != 0.6 {
		t.Errorf("median of round p99s %v ms, want 0.6", got)
	}
	if got, want := msList(a.roundDelayP99), "0.500 / 150.000 / n/a"; got != want {
		t.Errorf("chunk delay p99 per round %q, want %q", got, want)
	}
	if got := medianMs(a.roundDelayP99); got != 75.25 {
		t.Errorf("median of chunk delay round p99s %v ms, want 75.25 (two rounds with samples)", got)
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
			win := window{from: t0, to: t0.Add(time.Hour)}
			st, err := readBenchStream(bufio.NewReader(strings.NewReader(tc.body)), t0, win, streamStats{})
			ttft, events, delays := st.ttft, st.events, st.delays
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
			if st.inWindow != events {
				t.Errorf("%d of %d events counted in a window covering the whole stream", st.inWindow, events)
			}
		})
	}
	// Outside the window events are still counted, but give no samples.
	body := ev(bench) + ev(bench) + "data: [DONE]\n\n"
	past := window{from: time.Now().Add(-time.Hour), to: time.Now().Add(-time.Minute)}
	st, err := readBenchStream(bufio.NewReader(strings.NewReader(body)), time.Now(), past, streamStats{})
	if err != nil || st.events != 2 || st.inWindow != 0 || len(st.delays) != 0 {
		t.Errorf("closed window: %+v, %v; want 2 events, none in the window, no samples", st, err)
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
			if o.workload != "all" || o.rounds != 5 || o.duration != 10*time.Second || o.warmup != time.Second {
				t.Errorf("defaults %+v", o)
			}
		}},
		{name: "short rounds get a short warm-up", args: []string{"-duration", "2s"}, check: func(t *testing.T, o options) {
			if o.warmup != 200*time.Millisecond {
				t.Errorf("warmup %v, want 200ms", o.warmup)
			}
		}},
		{name: "too few rounds", args: []string{"-rounds", "2"}, wantErr: "at least 3"},
		{name: "unknown workload", args: []string{"-workload", "mixed"}, wantErr: "nonstream, nonstream-rate, stream or all"},
		{name: "all: closed loop, open loop at the default rate, stream", args: nil, check: wantLoops(true, defaultRate, true)},
		{name: "all at a rate", args: []string{"-rate", "500"}, check: wantLoops(true, 500, true)},
		{name: "nonstream", args: []string{"-workload", "nonstream"}, check: wantLoops(true, 0, false)},
		{name: "nonstream at a rate is open-loop", args: []string{"-workload", "nonstream", "-rate", "500"}, check: wantLoops(false, 500, false)},
		{name: "nonstream-rate", args: []string{"-workload", "nonstream-rate"}, check: wantLoops(false, defaultRate, false)},
		{name: "nonstream-rate at a rate", args: []string{"-workload", "nonstream-rate", "-rate", "1500.5"}, check: wantLoops(false, 1500.5, false)},
		{name: "stream", args: []string{"-workload", "stream"}, check: wantLoops(false, 0, true)},
		{name: "stream at a rate", args: []string{"-workload", "stream", "-rate", "100"}, wantErr: "not to stream"},
		{name: "negative rate", args: []string{"-rate", "-5"}, wantErr: "-rate"},
		{name: "NaN rate", args: []string{"-rate", "NaN"}, wantErr: "-rate"},
		{name: "rate too low for a round", args: []string{"-rate", "5", "-duration", "1s"}, wantErr: "fewer than 10"},
		{name: "remote proxy", args: []string{"-proxy-url", "http://10.0.0.1:8080", "-fake-url", "http://127.0.0.1:8000"}, wantErr: "only sends traffic to 127.0.0.1"},
		{name: "https proxy", args: []string{"-proxy-url", "https://127.0.0.1:8080", "-fake-url", "http://127.0.0.1:8000"}, wantErr: "only http://"},
		{name: "proxy-url without a known upstream", args: []string{"-proxy-url", "http://127.0.0.1:8080"}, wantErr: "-fake-listen"},
		{name: "proxy-url with fake-listen", args: []string{"-proxy-url", "http://127.0.0.1:8080", "-fake-listen", "127.0.0.1:8000"}},
		{name: "fake listening beyond loopback", args: []string{"-fake-listen", "0.0.0.0:8000"}, wantErr: "-fake-listen"},
		{name: "stray argument", args: []string{"extra"}, wantErr: "unexpected arguments"},
		{name: "peers by default: the bare fasthttp proxy, nginx, haproxy", args: nil, check: wantPeers("fasthttp", "nginx", "haproxy")},
		{name: "no peers", args: []string{"-peers", "none"}, check: wantPeers()},
		{name: "peers in the order given, once each", args: []string{"-peers", "nginx, fasthttp,nginx"}, check: wantPeers("nginx", "fasthttp")},
		{name: "unknown peer", args: []string{"-peers", "fasthttp,envoy"}, wantErr: "want fasthttp, nginx, haproxy or none"},
		{name: "stream bursts by default", args: nil, check: func(t *testing.T, o options) {
			if !o.streamBurst {
				t.Error("-stream-burst off by default")
			}
		}},
		{name: "stream bursts off", args: []string{"-stream-burst=false"}, check: func(t *testing.T, o options) {
			if o.streamBurst {
				t.Error("-stream-burst=false left it on")
			}
		}},
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

func wantPeers(want ...string) func(*testing.T, options) {
	return func(t *testing.T, o options) {
		if !slices.Equal(o.peers, want) {
			t.Errorf("peers %q, want %q", o.peers, want)
		}
	}
}

func wantLoops(closed bool, rate float64, stream bool) func(*testing.T, options) {
	return func(t *testing.T, o options) {
		if o.closedLoop() != closed || o.openLoopRate() != rate || o.streams() != stream {
			t.Errorf("closed loop %v, open loop at %v/s, stream %v; want %v, %v, %v",
				o.closedLoop(), o.openLoopRate(), o.streams(), closed, rate, stream)
		}
	}
}

// quickOptions are flags for a run that takes a couple of seconds.
func quickOptions(t *testing.T, workload string) options {
	o, err := parseFlags([]string{
		"-workload", workload, "-rounds", "3", "-duration", "150ms", "-warmup", "30ms",
		"-concurrency", "4", "-stream-chunks", "10", "-stream-itl", "2ms", "-timeout", "30s", "-peers", "none",
	}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	o.tmpParent = t.TempDir()
	return o
}

var (
	nonstreamRow = regexp.MustCompile(`(?m)^\| (direct|auditproxy) \| (\d+) \| (\d+) \| (\d+) \| `)
	streamRow    = regexp.MustCompile(`(?m)^\| (direct|auditproxy) \| (\d+) \| (\d+) \| (\d+) \| ([0-9.]+) \| `)
	// target, requests, errors, target rate, achieved rate
	rateRow = regexp.MustCompile(`(?m)^\| (direct|auditproxy) \| (\d+) \| (\d+) \| ([0-9.]+) \| (\d+) \| `)
)

// tables returns the cells of each markdown table in sec by column name,
// one map per row, keyed by the row's first cell.
func tables(t *testing.T, sec string) []map[string]map[string]string {
	t.Helper()
	var out []map[string]map[string]string
	var header []string
	var rows map[string]map[string]string
	for _, line := range strings.Split(sec, "\n") {
		if !strings.HasPrefix(line, "| ") {
			if strings.TrimSpace(line) == "" && header != nil {
				out = append(out, rows)
				header = nil
			}
			continue // also the |---| alignment row
		}
		cells := strings.Split(strings.Trim(line, "|"), "|")
		for i := range cells {
			cells[i] = strings.TrimSpace(cells[i])
		}
		if header == nil {
			header = cells
			rows = map[string]map[string]string{}
			continue
		}
		if len(cells) != len(header) {
			t.Fatalf("row %q has %d cells, the header %d:\n%s", line, len(cells), len(header), sec)
		}
		row := map[string]string{}
		for i, c := range cells {
			row[header[i]] = c
		}
		rows[cells[0]] = row
	}
	if header != nil {
		out = append(out, rows)
	}
	return out
}

// checkMedianOfRounds asserts that the table in sec lists one p99 per round
// under col+" per round ms", their median under col+" median of rounds ms",
// and the proxy's added median in the difference row.
func checkMedianOfRounds(t *testing.T, sec, col string, rounds int) {
	t.Helper()
	if !strings.Contains(sec, "median of the p99s each round measured on its own") || !strings.Contains(sec, "VM stall") {
		t.Errorf("description does not explain the median of rounds:\n%s", sec)
	}
	tabs := tables(t, sec)
	if len(tabs) < 2 || len(tabs) > 4 {
		t.Fatalf("want the targets' table, for streams the burst table, the comparison table and, with peers, auditproxy against them; got %d tables in:\n%s", len(tabs), sec)
	}
	rows := tabs[0]
	medians := map[string]float64{}
	for _, target := range []string{"direct", "auditproxy"} {
		row := rows[target]
		list, ok := row[col+" per round ms"]
		if !ok {
			t.Fatalf("no %q column in:\n%s", col+" per round ms", sec)
		}
		var perRound []float64
		for _, f := range strings.Split(list, " / ") {
			v, err := strconv.ParseFloat(f, 64)
			if err != nil || v <= 0 {
				t.Fatalf("%s %s per round: %q, want %d positive values", target, col, list, rounds)
			}
			perRound = append(perRound, v)
		}
		if len(perRound) != rounds {
			t.Fatalf("%s %s per round: %q, want %d values", target, col, list, rounds)
		}
		got, err := strconv.ParseFloat(row[col+" median of rounds ms"], 64)
		if want := medianMs(perRound); err != nil || math.Abs(got-want) > 0.0015 {
			t.Errorf("%s %s median of rounds %q, want %.3f, the median of %q", target, col, row[col+" median of rounds ms"], want, list)
		}
		medians[target] = got
	}
	cell := tableWith(t, sec, "added "+col+" median of rounds ms")["auditproxy"]["added "+col+" median of rounds ms"]
	added, err := strconv.ParseFloat(cell, 64)
	if want := medians["auditproxy"] - medians["direct"]; err != nil || math.Abs(added-want) > 0.0025 {
		t.Errorf("auditproxy's added %s median of rounds %q, want %+.3f", col, cell, want)
	}
}

// tableWith returns the first table in sec with a column named col.
func tableWith(t *testing.T, sec, col string) map[string]map[string]string {
	t.Helper()
	for _, tab := range tables(t, sec) {
		for _, row := range tab {
			if _, ok := row[col]; ok {
				return tab
			}
			break
		}
	}
	t.Fatalf("no table with a %q column in:\n%s", col, sec)
	return nil
}

// msCell parses a cell in milliseconds; ok false for n/a or junk.
func msCell(cell string) (float64, bool) {
	v, err := strconv.ParseFloat(strings.TrimPrefix(cell, "×"), 64)
	return v, err == nil && !math.IsNaN(v)
}

// checkBurst asserts that the stream section sec has a burst table whose
// figures are possible for o's streams: each round's burst end no shorter
// than the fake's pacing alone allows and not absurdly long, the median
// and the margin over the ideal computed from them, no errors, and the
// comparison table's added figure the difference of the medians.
func checkBurst(t *testing.T, sec string, o options, targets ...string) {
	t.Helper()
	conc := o.streamConcurrency()[0]
	ideal := ms(int64(streamIdeal(o.streamChunks, o.itl(conc))))
	if want := fmt.Sprintf("(%d chunks − 1) × %v = %s ms", o.streamChunks, o.itl(conc), fmtMs(ideal)); !strings.Contains(sec, want) {
		t.Errorf("burst description does not state the ideal %q:\n%s", want, sec)
	}
	// Loose: a shared, loaded machine, the race detector. A burst that
	// waited for a read timeout (60 s) or ran its streams one after
	// another would be far over.
	limit := ideal + 3000
	burst := tableWith(t, sec, "burst end median of rounds ms")
	medians := map[string]float64{}
	for _, target := range targets {
		row := burst[target]
		if row == nil {
			t.Fatalf("no burst row for %s in:\n%s", target, sec)
		}
		if want := strconv.Itoa(o.rounds * conc); row["burst streams"] != want || row["burst errors"] != "0" {
			t.Errorf("%s: %s burst streams, %s errors; want %s, none\n%s", target, row["burst streams"], row["burst errors"], want, sec)
		}
		var perRound []float64
		for _, f := range strings.Split(row["burst end ms per round"], " / ") {
			v, ok := msCell(f)
			if !ok || v < ideal || v > limit {
				t.Errorf("%s: burst end per round %q: want %d values from the ideal %s ms to %.0f ms\n%s",
					target, row["burst end ms per round"], o.rounds, fmtMs(ideal), limit, sec)
			}
			perRound = append(perRound, v)
		}
		if len(perRound) != o.rounds {
			t.Errorf("%s: burst end per round %q: want %d rounds", target, row["burst end ms per round"], o.rounds)
		}
		med, ok := msCell(row["burst end median of rounds ms"])
		if want := medianMs(perRound); !ok || math.Abs(med-want) > 0.0015 {
			t.Errorf("%s: burst end median %q, want %.3f, the median of %q", target, row["burst end median of rounds ms"], want, row["burst end ms per round"])
		}
		over, ok := msCell(row["burst end − ideal median of rounds ms"])
		if !ok || math.Abs(over-(med-ideal)) > 0.0015 {
			t.Errorf("%s: burst end − ideal %q, want %+.3f", target, row["burst end − ideal median of rounds ms"], med-ideal)
		}
		spread, ok1 := msCell(row["send spread max ms"])
		ttft, ok2 := msCell(row["slowest TTFT median of rounds ms"])
		if !ok1 || !ok2 || spread < 0 || spread > med || ttft <= 0 || ttft > med {
			t.Errorf("%s: send spread %q, slowest TTFT %q: want each within the burst's %.3f ms", target, row["send spread max ms"], row["slowest TTFT median of rounds ms"], med)
		}
		medians[target] = med
	}
	cmp := tableWith(t, sec, "added burst end median of rounds ms")
	for _, target := range targets[1:] {
		added, ok := msCell(cmp[target]["added burst end median of rounds ms"])
		if want := medians[target] - medians["direct"]; !ok || math.Abs(added-want) > 0.0025 {
			t.Errorf("%s: added burst end %q, want %+.3f", target, cmp[target]["added burst end median of rounds ms"], want)
		}
	}
}

// section returns the part of report under the heading that starts with
// "### "+name, "" if there is none.
func section(report, name string) string {
	i := strings.Index(report, "### "+name+":")
	if i < 0 {
		return ""
	}
	s := report[i+4:]
	if j := strings.Index(s, "### "); j >= 0 {
		s = s[:j]
	}
	return s
}

// checkReport asserts that each target row of each workload in report shows
// traffic and no errors, and that the open loop, if rate > 0, ran at rate.
func checkReport(t *testing.T, report string, nonstream bool, rate float64, stream bool) {
	t.Helper()
	ns, st, nr := section(report, "nonstream"), section(report, "stream"), section(report, "nonstream-rate")
	if (ns != "") != nonstream || (st != "") != stream || (nr != "") != (rate > 0) {
		t.Fatalf("want sections nonstream %v, nonstream-rate %v, stream %v in:\n%s", nonstream, rate > 0, stream, report)
	}
	if rate > 0 {
		head := strings.SplitN(nr, "\n", 2)[0]
		if want := "open loop at " + fmtRate(rate) + " requests/s; latencies count from each request's intended send time"; !strings.Contains(head, want) {
			t.Errorf("open-loop heading %q does not say %q", head, want)
		}
		rows := rateRow.FindAllStringSubmatch(nr, -1)
		if len(rows) != 2 {
			t.Fatalf("want 2 nonstream-rate rows, got %d in:\n%s", len(rows), report)
		}
		for _, r := range rows {
			target, _ := strconv.ParseFloat(r[4], 64)
			achieved, _ := strconv.ParseFloat(r[5], 64)
			// The schedule caps the rate exactly; how close a loaded CI machine
			// comes to it is not this test's business, so the floor is loose.
			if r[2] == "0" || r[3] != "0" || target != rate || achieved < rate*0.5 || achieved > rate*1.1 {
				t.Errorf("nonstream-rate %s: %s requests, %s errors, %s/s achieved of %s/s; want traffic, no errors, at most %v/s +10%%\n%s",
					r[1], r[2], r[3], r[5], r[4], rate, report)
			}
		}
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
	for _, sec := range []string{ns, nr, st} {
		if sec != "" && !strings.Contains(sec, "Each proxy against the direct connection") {
			t.Errorf("section lacks the comparison table:\n%s", sec)
		}
	}
	// quickOptions runs 3 rounds.
	for _, sec := range []string{ns, nr} {
		if sec != "" {
			checkMedianOfRounds(t, sec, "p99", 3)
		}
	}
	if st != "" {
		checkMedianOfRounds(t, st, "TTFT p99", 3)
		checkMedianOfRounds(t, st, "chunk delay p99", 3)
	}
}

// TestRunInProcess runs the whole harness against a fake and a stand-in
// proxy that live in this process (the -fake-url / -proxy-url path).
func TestRunInProcess(t *testing.T) {
	fake, fakeURL, proxyURL := startFakeAndPassProxy(t)

	o := quickOptions(t, "all")
	o.fakeURL, o.proxyURL = fakeURL, proxyURL
	// Below the default, which the race detector's slowdown could turn
	// into a rate this process cannot keep.
	o.rate = 500
	o.out = t.TempDir() + "/results.md"
	var stdout, stderr bytes.Buffer
	const cmdline = "harness -workload all (test)"
	if err := run(context.Background(), o, &stdout, &stderr, cmdline); err != nil {
		t.Fatalf("run: %v\nstderr:\n%s", err, stderr.String())
	}
	checkReport(t, stdout.String(), true, o.rate, true)
	checkBurst(t, section(stdout.String(), "stream"), o, "direct", "auditproxy")
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
		name      string
		interrupt bool // cancel once all three children run
		wantErr   bool
	}{
		{"runs to the end", false, false},
		{"interrupted", true, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			pidDir := t.TempDir()
			t.Setenv(childEnv, "1")
			t.Setenv(pidDirEnv, pidDir)
			o := quickOptions(t, "nonstream")
			o.fakeBin, o.proxyBin, o.recvBin = self, self, self
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			if tc.interrupt {
				// A fixed delay raced the children's start on a loaded
				// machine: cancel once each has written its pid.
				go func() {
					for ctx.Err() == nil {
						if pids, _ := os.ReadDir(pidDir); len(pids) == 3 {
							cancel()
							return
						}
						time.Sleep(10 * time.Millisecond)
					}
				}()
			}
			var stdout, stderr bytes.Buffer
			err := run(ctx, o, &stdout, &stderr, "harness (test)")
			if tc.wantErr != (err != nil) {
				t.Fatalf("run error %v, want error %v\nstderr:\n%s", err, tc.wantErr, stderr.String())
			}
			if !tc.wantErr {
				checkReport(t, stdout.String(), true, 0, false)
				if !strings.Contains(stdout.String(), "auditproxy ") {
					t.Errorf("report shows no proxy CPU use:\n%s", stdout.String())
				}
			}
			pids, _ := os.ReadDir(pidDir)
			if len(pids) != 3 {
				t.Fatalf("%d children recorded their pid, want 3 (fake, receiver, proxy)", len(pids))
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
	o := quickOptions(t, "nonstream")
	o.fakeBin, o.proxyBin, o.recvBin = self, self, self
	err = run(context.Background(), o, io.Discard, io.Discard, "harness (test)")
	if err == nil || !strings.Contains(err.Error(), failMessage) || !strings.Contains(err.Error(), "exited") {
		t.Fatalf("err %v, want the proxy's exit and its log", err)
	}
}

// TestPeerTables checks which targets auditproxy is set against, and the
// figures, on made-up aggregates.
func TestPeerTables(t *testing.T) {
	fake, ap, apAsync, bare, ng := &child{name: "fakevllm"}, &child{name: "auditproxy"}, &child{name: "auditproxy-async"},
		&child{name: "bareproxy"}, &child{name: "nginx"}
	targets := []*target{
		{name: "direct", procs: []*child{fake}},
		{name: "auditproxy", procs: []*child{fake, ap}},
		{name: "auditproxy-async", procs: []*child{fake, apAsync}},
		{name: "fasthttp", procs: []*child{fake, bare}, peer: true},
		{name: "nginx", procs: []*child{fake, ng}, peer: true},
	}
	// burstMs: each round's burst end; its peak RSS is burstRSSMB, in the
	// window rssMB.
	agg := func(name string, rps []int64, cpuMs, rssMB int64, burstMs []int64, burstRSSMB int64) *aggregate {
		a := &aggregate{}
		for i, n := range rps {
			a.add(roundResult{requests: n, window: time.Second, lat: []int64{int64(time.Millisecond)},
				cpu:   map[string]time.Duration{name: time.Duration(cpuMs) * time.Millisecond / time.Duration(len(rps))},
				rss:   map[string]int64{name: rssMB << 20},
				burst: &burstResult{streams: 4, elapsed: time.Duration(burstMs[i]) * time.Millisecond, rss: map[string]int64{name: burstRSSMB << 20}}})
		}
		return a
	}
	aggs := []*aggregate{
		agg("fakevllm", []int64{2000, 2000}, 0, 0, []int64{90, 90}, 0),
		agg("auditproxy", []int64{800, 900}, 170, 30, []int64{110, 120}, 45), // 1700 requests, 100 µs each
		agg("auditproxy-async", []int64{900, 1000}, 190, 30, []int64{105, 95}, 20),
		agg("bareproxy", []int64{1000, 1000}, 80, 20, []int64{110, 100}, 10), // 40 µs each
		agg("nginx", []int64{1000, 1250}, 45, 10, []int64{100, 100}, 15),     // 20 µs each
	}
	var got []string
	for _, pp := range peerPairs(targets, aggs) {
		got = append(got, pp.label())
	}
	want := []string{"auditproxy / fasthttp (bare proxy)", "auditproxy / nginx", "auditproxy-async / fasthttp (bare proxy)", "auditproxy-async / nginx"}
	if !slices.Equal(got, want) {
		t.Fatalf("pairs %q, want %q", got, want)
	}
	tabs := tables(t, nonstreamPeersTable(targets, aggs)+"\n")
	if len(tabs) != 1 {
		t.Fatalf("%d tables, want 1", len(tabs))
	}
	for pair, cells := range map[string][3]string{
		"auditproxy / fasthttp (bare proxy)": {"×0.850", "×0.800 / ×0.900", "×2.500"},
		"auditproxy / nginx":                 {"×0.756", "×0.800 / ×0.720", "×5.000"},
		"auditproxy-async / nginx":           {"×0.844", "×0.900 / ×0.800", "×5.000"},
	} {
		row := tabs[0][pair]
		if g := [3]string{row["RPS ÷ peer"], row["RPS ÷ peer per round"], row["proxy CPU µs/request ÷ peer"]}; g != cells {
			t.Errorf("%s: %q, want %q", pair, g, cells)
		}
	}
	stream := tables(t, streamPeersTable(targets, aggs)+"\n")[0]
	// The peak covers the bursts: auditproxy's 45 MB there, nginx's 15.
	for pair, cells := range map[string][3]string{
		"auditproxy / nginx":                       {"×3.000", "×1.150", "×1.100 / ×1.200"},
		"auditproxy / fasthttp (bare proxy)":       {"×2.250", "×1.095", "×1.000 / ×1.200"},
		"auditproxy-async / fasthttp (bare proxy)": {"×1.500", "×0.952", "×0.955 / ×0.950"},
	} {
		row := stream[pair]
		if g := [3]string{row["peak RSS ÷ peer"], row["burst end ÷ peer"], row["burst end ÷ peer per round"]}; g != cells {
			t.Errorf("stream %s: peak RSS, burst end, burst end per round ÷ peer %q, want %q", pair, g, cells)
		}
	}
	// The burst table: each target's figures, its RSS in the bursts alone.
	spec := loadSpec{stream: true, concurrency: 4, wantEvents: 12, burst: true, ideal: 90 * time.Millisecond, stallAfter: time.Second}
	sec := streamBurstTable(spec, 10, 10*time.Millisecond, targets, aggs)
	if !strings.Contains(sec, "(10 chunks − 1) × 10ms = 90.000 ms") {
		t.Errorf("burst table does not state the ideal:\n%s", sec)
	}
	burst := tables(t, sec+"\n")[0]
	for target, cells := range map[string][5]string{
		"direct":     {"8", "90.000 / 90.000", "90.000", "+0.000", "n/a"},
		"auditproxy": {"8", "110.000 / 120.000", "115.000", "+25.000", "45.0"},
		"nginx":      {"8", "100.000 / 100.000", "100.000", "+10.000", "15.0"},
	} {
		row := burst[target]
		if g := [5]string{row["burst streams"], row["burst end ms per round"], row["burst end median of rounds ms"],
			row["burst end − ideal median of rounds ms"], row["burst peak RSS MB"]}; g != cells {
			t.Errorf("burst table, %s: %q, want %q", target, g, cells)
		}
	}
	if s := streamBurstTable(loadSpec{stream: true}, 10, 0, targets, aggs); s != "" {
		t.Errorf("a burst table with the burst off:\n%s", s)
	}
	// Without peers there is nothing to set auditproxy against.
	for _, f := range []func([]*target, []*aggregate) string{nonstreamPeersTable, nonstreamRatePeersTable, streamPeersTable} {
		if s := f(targets[:3], aggs[:3]); s != "" {
			t.Errorf("a peers table without peers:\n%s", s)
		}
	}
}
