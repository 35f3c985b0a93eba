package main

import (
	"bytes"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/auditproxy/auditproxy/audit"
	"github.com/auditproxy/auditproxy/query"
	"github.com/auditproxy/auditproxy/spool"
)

var qT0 = time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC)

// qEvent is an inference event as a sidecar writes it.
func qEvent(i int, t time.Time, seq int64, model, key, outcome string, total, ttft float64, in, out int64) string {
	ev := audit.Event{V: 1, Type: audit.TypeInference, ID: fmt.Sprintf("00000000-0000-4000-8000-%012d", i), Time: audit.Timestamp(t),
		RequestID: fmt.Sprintf("req-%d", i), Method: "POST", Path: "/v1/chat/completions", Model: audit.Model{Name: model},
		Latency: audit.Latency{Total: total, Upstream: total}, Status: audit.Status{Code: 200, Outcome: audit.Outcome(outcome)},
		Log: &audit.LogRef{Origin: "h/1", Seq: seq, Prev: "ab"}}
	if key != "" {
		ev.APIKeyID = &key
	}
	if ttft != 0 {
		ev.Latency.TTFT = &ttft
	}
	ev.Input.Tokens, ev.Output.Tokens = &in, &out
	return string(ev.AppendJSON(nil))
}

// queryFixture writes six inference events (req-2 twice, as at-least-once
// shipping would), a checkpoint and a file that is not events: a.ndjson in
// the top directory, out of time order, and more/b.jsonl below. It returns
// the directory and the events by name.
//
//	event  time     seq  model    key    outcome           total  ttft  in  out
//	req-1  T0       1    llama    k1:aa  ok                100    10    10  20
//	req-2  T0+1s    2    llama    k1:bb  ok                200    20    11  21
//	req-3  T0+2s    3    llama    k1:aa  upstream_error    300    -     12  0
//	req-4  T0+3s    5    mistral  k1:aa  ok                400    -     13  23
//	req-5  T0+3s    4    mistral  k1:cc  client_cancelled  500    50    14  24
//	req-6  T0+4s    6    llama    -      ok                600    60    15  25
//	cp     T0+5s    7    (checkpoint)
func queryFixture(t *testing.T) (string, map[string]string) {
	t.Helper()
	s := func(n int) time.Time { return qT0.Add(time.Duration(n) * time.Second) }
	ev := map[string]string{
		"req-1": qEvent(1, s(0), 1, "llama", "k1:aa", "ok", 100, 10, 10, 20),
		"req-2": qEvent(2, s(1), 2, "llama", "k1:bb", "ok", 200, 20, 11, 21),
		"req-3": qEvent(3, s(2), 3, "llama", "k1:aa", "upstream_error", 300, 0, 12, 0),
		"req-4": qEvent(4, s(3), 5, "mistral", "k1:aa", "ok", 400, 0, 13, 23),
		"req-5": qEvent(5, s(3), 4, "mistral", "k1:cc", "client_cancelled", 500, 50, 14, 24),
		"req-6": qEvent(6, s(4), 6, "llama", "", "ok", 600, 60, 15, 25),
		"cp":    `{"v":1,"type":"checkpoint","id":"00000000-0000-4000-8000-000000000099","time":"2026-11-23T10:00:05.000000000Z","checkpoint":{"note":"a\nb"},"log":{"origin":"h/1","seq":7,"prev":""}}`,
	}
	dir := t.TempDir()
	write := func(name string, lines ...string) {
		t.Helper()
		p := filepath.Join(dir, name)
		os.MkdirAll(filepath.Dir(p), 0o700)
		if err := os.WriteFile(p, []byte(strings.Join(lines, "\n")+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("a.ndjson", ev["req-3"], ev["cp"], ev["req-1"], "", ev["req-2"]+"\r")
	write("more/b.jsonl", ev["req-6"], ev["req-5"], ev["req-2"], "  "+ev["req-4"])
	// A data dir's spool with no event in it: its state file is skipped.
	sp, err := spool.Open(filepath.Join(dir, "data"), spool.Options{MinFreeBytes: -1})
	if err != nil {
		t.Fatal(err)
	}
	if err := sp.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "data", spool.DirName, "state.json")); err != nil {
		t.Fatal(err)
	}
	write("notes.txt", "not events") // not an event file name: skipped
	return dir, ev
}

func queryCmd(args ...string) (stdout, stderr string, err error) {
	var out, errOut bytes.Buffer
	err = runQuery(args, &out, &errOut)
	return out.String(), errOut.String(), err
}

func TestQueryPrintsMatchingEvents(t *testing.T) {
	dir, ev := queryFixture(t)
	for _, tc := range []struct {
		args []string
		want string // the events printed, in order
	}{
		// Oldest first; req-5 and req-4 share a time and go by seq; req-2
		// once; the checkpoint is an event too.
		{nil, "req-1 req-2 req-3 req-5 req-4 req-6 cp"},
		{[]string{"--type", "inference"}, "req-1 req-2 req-3 req-5 req-4 req-6"},
		{[]string{"--type", "checkpoint"}, "cp"},
		{[]string{"--api-key-id", "k1:aa"}, "req-1 req-3 req-4"},
		{[]string{"--api-key-id", "k1:aa", "--api-key-id", "k1:cc"}, "req-1 req-3 req-5 req-4"},
		{[]string{"--model", "mistral", "--outcome", "ok"}, "req-4"},
		{[]string{"--model", "mistral", "--model", "llama", "--outcome", "upstream_error", "--outcome", "client_cancelled"}, "req-3 req-5"},
		{[]string{"--request-id", "req-2"}, "req-2"},
		{[]string{"--request-id", "req-2", "--request-id", "req-6"}, "req-2 req-6"},
		{[]string{"--request-id", "req-9"}, ""},
		{[]string{"--since", "2026-11-23T10:00:02Z", "--until", "2026-11-23T10:00:04Z"}, "req-3 req-5 req-4"},
		{[]string{"--since", "2026-11-23T11:00:02+01:00", "--until", "2026-11-23T10:00:03.000000001Z"}, "req-3 req-5 req-4"},
		{[]string{"--until", "2026-11-23T10:00:03Z", "--model", "llama", "--api-key-id", "k1:aa"}, "req-1 req-3"},
	} {
		out, errOut, err := queryCmd(append(tc.args, dir)...)
		if err != nil {
			t.Fatalf("%v: %v %s", tc.args, err, errOut)
		}
		var want string
		if tc.want != "" {
			for _, name := range strings.Fields(tc.want) {
				want += ev[name] + "\n" // exactly the bytes found, less surrounding space
			}
		}
		if out != want {
			t.Errorf("%v printed:\n%s\nwant (%s):\n%s", tc.args, out, tc.want, want)
		}
	}
}

func TestQueryPathsAndFlagsInAnyOrder(t *testing.T) {
	dir, ev := queryFixture(t)
	a, b := filepath.Join(dir, "a.ndjson"), filepath.Join(dir, "more", "b.jsonl")
	want := ev["req-3"] + "\n" + ev["req-5"] + "\n"
	for _, args := range [][]string{
		{a, b, "--outcome", "upstream_error", "--outcome", "client_cancelled"},
		{"--outcome", "upstream_error", a, "--outcome", "client_cancelled", b},
		{"--outcome", "upstream_error", "--outcome", "client_cancelled", "--", a, b},
	} {
		if out, _, err := queryCmd(args...); err != nil || out != want {
			t.Errorf("%v: %v\n%s", args, err, out)
		}
	}
	// After "--", a path may look like a flag.
	if err := os.WriteFile(filepath.Join(dir, "--model"), []byte(ev["req-1"]+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Chdir(dir)
	if out, _, err := queryCmd("--", "--model"); err != nil || out != ev["req-1"]+"\n" {
		t.Errorf(`query -- --model: %v %q`, err, out)
	}
}

func TestQueryStdin(t *testing.T) {
	_, ev := queryFixture(t)
	f, err := os.CreateTemp(t.TempDir(), "stdin")
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString(ev["req-6"] + "\n" + ev["req-1"] + "\n")
	f.Seek(0, io.SeekStart)
	defer func(old *os.File) { os.Stdin = old }(os.Stdin)
	os.Stdin = f
	if out, _, err := queryCmd("-"); err != nil || out != ev["req-1"]+"\n"+ev["req-6"]+"\n" {
		t.Errorf("query -: %v\n%s", err, out)
	}
}

func TestQueryRelativeTimes(t *testing.T) {
	now := time.Now()
	old := qEvent(1, now.Add(-3*time.Hour), 1, "m", "", "ok", 1, 0, 1, 1)
	recent := qEvent(2, now.Add(-30*time.Minute), 2, "m", "", "ok", 1, 0, 1, 1)
	path := filepath.Join(t.TempDir(), "e.ndjson")
	os.WriteFile(path, []byte(recent+"\n"+old+"\n"), 0o600)
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--since", "1h"}, recent + "\n"},
		{[]string{"--since", "90m"}, recent + "\n"},
		{[]string{"--until", "1h"}, old + "\n"},
		{[]string{"--since", "1d", "--until", "2h"}, old + "\n"},
		{[]string{"--since", "4h", "--until", "0s"}, old + "\n" + recent + "\n"},
		{[]string{"--since", "2h", "--until", "1h"}, ""},
	} {
		if out, _, err := queryCmd(append(tc.args, path)...); err != nil || out != tc.want {
			t.Errorf("%v: %v\n%s", tc.args, err, out)
		}
	}
}

// TestQuerySpills: with a small sort memory the events go through sorted
// runs in a temporary file; the output is the same as sorted in memory.
func TestQuerySpills(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	var lines []string
	for i := range 500 {
		// Times collide often (20 distinct), so seq and then the order
		// read decide too; some events have no log seq.
		ev := qEvent(i, qT0.Add(time.Duration(rng.IntN(20))*time.Millisecond), int64(rng.IntN(50)), "m", "", "ok", float64(i), 0, 1, 1)
		if i%7 == 0 {
			ev = strings.Replace(ev, `"seq":`, `"nr":`, 1)
		}
		lines = append(lines, ev)
		if i%5 == 0 {
			lines = append(lines, ev) // shipped twice
		}
	}
	rng.Shuffle(len(lines), func(i, j int) { lines[i], lines[j] = lines[j], lines[i] })
	path := filepath.Join(t.TempDir(), "e.ndjson")
	os.WriteFile(path, []byte(strings.Join(lines, "\n")), 0o600)

	inMemory, _, err := queryCmd(path)
	if err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(inMemory, "\n"); n != 500 {
		t.Fatalf("%d events printed, want 500", n)
	}
	// Sorted by time, then seq (none: first).
	var prevTime string
	prevSeq := int64(-2)
	for _, line := range strings.Split(strings.TrimSuffix(inMemory, "\n"), "\n") {
		var e audit.Event
		if err := json.Unmarshal([]byte(line), &e); err != nil {
			t.Fatal(err)
		}
		tm, _ := e.Time.MarshalJSON()
		seq := int64(-1)
		if e.Log != nil {
			seq = e.Log.Seq
		}
		if string(tm) < prevTime || string(tm) == prevTime && seq < prevSeq {
			t.Fatalf("out of order at %s", line)
		}
		prevTime, prevSeq = string(tm), seq
	}

	defer func(old int) { querySortMemory = old }(querySortMemory)
	for _, limit := range []int{1, 5000, 100_000} {
		querySortMemory = limit
		spilled, _, err := queryCmd(path)
		if err != nil || spilled != inMemory {
			t.Errorf("sort memory %d: %v; output differs: %v", limit, err, spilled != inMemory)
		}
	}
}

func TestQueryStats(t *testing.T) {
	dir, _ := queryFixture(t)
	out, _, err := queryCmd("--stats", "--format", "json", "--by", "model,key", "--by", "day", dir)
	if err != nil {
		t.Fatal(err)
	}
	var s query.Summary
	if err := json.Unmarshal([]byte(out), &s); err != nil {
		t.Fatal(err)
	}
	// By hand: six distinct inference events (the checkpoint is not
	// counted): ok req-1 2 4 6, an error req-3, a give-up req-5; error
	// rate 1/(4+1). Latency of the ok ones 100 200 400 600: nearest ranks
	// ceil(.5*4)=2, 4, 4; their TTFT 10 20 60: ranks 2, 3, 3.
	if s.Events != 6 || s.OK != 4 || s.Errors != 1 || s.ClientCancelled != 1 || *s.ErrorRate != 0.2 || s.InputTokens != 75 || s.OutputTokens != 113 ||
		!s.Window.First.Equal(qT0) || !s.Window.Last.Equal(qT0.Add(4*time.Second)) || s.Window.Since != nil {
		t.Errorf("summary %+v", s)
	}
	if l := s.Latency.Total; l == nil || *l != (query.Percentiles{Count: 4, P50: 200, P95: 600, P99: 600}) {
		t.Errorf("latency %+v", l)
	}
	if l := s.Latency.TTFT; l == nil || *l != (query.Percentiles{Count: 3, P50: 20, P95: 60, P99: 60}) {
		t.Errorf("ttft %+v", l)
	}
	if m := s.Groups.Model; len(m) != 2 || m[0].Model != "llama" || m[0].Events != 4 || m[0].Errors != 1 || m[0].Checksum != nil ||
		m[1].Model != "mistral" || m[1].Events != 2 || m[1].ClientCancelled != 1 {
		t.Errorf("by model %+v", m)
	}
	if k := s.Groups.Key; len(k) != 4 || *k[0].APIKeyID != "k1:aa" || k[0].Events != 3 || k[1].APIKeyID != nil || k[1].Events != 1 {
		t.Errorf("by key %+v", k)
	}
	if d := s.Groups.Day; len(d) != 1 || d[0].Events != 6 || !d[0].From.Equal(time.Date(2026, 11, 23, 0, 0, 0, 0, time.UTC)) {
		t.Errorf("by day %+v", d)
	}

	out, _, err = queryCmd("--stats", dir)
	if err != nil {
		t.Fatal(err)
	}
	// llama: ok totals 100 200 600 (ranks 2, 3, 3), TTFT 10 20 60;
	// mistral: 400; its give-up is not an error.
	want := `window:           all events read; events from 2026-11-23T10:00:00Z to 2026-11-23T10:00:04Z (times in UTC)
inference events: 6: ok 4, errors 1, client gave up 1, rejected by the sidecar 0
error rate:       20.00% of the ok and errors; not ok: upstream_error 1, client_cancelled 1
latency ms (ok):  p50 200.0  p95 600.0  p99 600.0  (ok events: 4)
ttft ms (ok):     p50 20.0  p95 60.0  p99 60.0  (ok streamed events: 3)
tokens:           input 75, output 113

MODEL    CHECKSUM  EVENTS  OK  ERRORS  GAVE UP  REJECTED  ERROR%  LATENCY P50    P95    P99  TTFT P50   P95   P99  IN TOKENS  OUT TOKENS
llama    unknown        4   3       1        0         0  25.00%        200.0  600.0  600.0      20.0  60.0  60.0         48          66
mistral  unknown        2   1       0        1         0   0.00%        400.0  400.0  400.0         -     -     -         27          47
`
	if out != want {
		t.Errorf("text stats:\n%s\nwant:\n%s", out, want)
	}

	out, _, err = queryCmd("--stats", "--format", "csv", "--by", "outcome,hour", "--since", "2026-11-23T09:00:00Z", "--until", "2026-11-23", "--tz", "Europe/Paris", dir)
	if err == nil || !strings.Contains(err.Error(), "--since and --until") {
		t.Errorf("until before since: %v", err)
	}
	out, _, err = queryCmd("--stats", "--format", "csv", "--by", "outcome,hour", "--since", "2026-11-23T09:00:00Z", "--until", "2026-11-24", "--tz", "Europe/Paris", "--model", "mistral", dir)
	if err != nil {
		t.Fatal(err)
	}
	// --until 2026-11-24 is midnight in Paris: 23:00 UTC on the 23rd, so
	// hours 10:00 to 23:00 Paris time; mistral's two events at 11:00:03.
	rows, err := csv.NewReader(strings.NewReader(out)).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	if len(rows) != 1+1+2+14 || strings.Join(rows[0], ",") != strings.Join(statsCSVHeader, ",") {
		t.Fatalf("%d rows:\n%s", len(rows), out)
	}
	for i, want := range []string{
		"total,,,,,2026-11-23T10:00:00+01:00,2026-11-24T00:00:00+01:00,2,1,0,1,0,0,1,400,400,400,0,,,,27,0,47,0",
		"outcome,,,,client_cancelled,,,1,0,0,1,0,,0,,,,0,,,,14,0,24,0",
		"outcome,,,,ok,,,1,1,0,0,0,0,1,400,400,400,0,,,,13,0,23,0",
		"hour,,,,,2026-11-23T10:00:00+01:00,2026-11-23T11:00:00+01:00,0,0,0,0,0,,0,,,,0,,,,0,0,0,0",
		"hour,,,,,2026-11-23T11:00:00+01:00,2026-11-23T12:00:00+01:00,2,1,0,1,0,0,1,400,400,400,0,,,,27,0,47,0",
	} {
		if got := strings.Join(rows[1+i], ","); got != want {
			t.Errorf("row %d:\n%s\nwant\n%s", 1+i, got, want)
		}
	}
	if last := strings.Join(rows[len(rows)-1], ","); !strings.HasPrefix(last, "hour,,,,,2026-11-23T23:00:00+01:00,2026-11-24T00:00:00+01:00,0,") {
		t.Errorf("last row %s", last)
	}

	out, _, err = queryCmd("--stats", "--model", "mistral", "--outcome", "ok", dir)
	if err != nil || !strings.Contains(out, "\ninference events: 1: ok 1, errors 0, client gave up 0, rejected by the sidecar 0\nerror rate:       0.00% of the ok and errors\n") ||
		!strings.Contains(out, "ttft ms (ok):     none\n") || !strings.Contains(out, "\nmistral  unknown        1   1       0        0         0   0.00%        400.0  400.0  400.0         -    -    -         13          23\n") {
		t.Errorf("stats of one event: %v\n%s", err, out)
	}
	out, _, err = queryCmd("--stats", "--type", "checkpoint", dir)
	if err != nil || !strings.HasSuffix(out, "; no events (times in UTC)\ninference events: 0: ok 0, errors 0, client gave up 0, rejected by the sidecar 0\n") {
		t.Errorf("stats of no inference event: %v %q", err, out)
	}
	out, _, err = queryCmd("--stats", "--json", "--request-id", "none", dir)
	if err != nil || !strings.Contains(out, `"events": 0,`) || !strings.Contains(out, `"model": []`) || !strings.Contains(out, `"error_rate": null`) {
		t.Errorf("JSON stats of nothing: %v\n%s", err, out)
	}
}

// TestQueryStatsCSVFormulas: a model name a client chose cannot become a
// spreadsheet formula in the CSV an auditor opens.
func TestQueryStatsCSVFormulas(t *testing.T) {
	path := filepath.Join(t.TempDir(), "e.ndjson")
	os.WriteFile(path, []byte(qEvent(1, qT0, 1, `=HYPERLINK("http://x","y")`, "", "ok", 1, 0, 1, 1)+"\n"), 0o600)
	out, _, err := queryCmd("--stats", "--format", "csv", path)
	if err != nil {
		t.Fatal(err)
	}
	rows, _ := csv.NewReader(strings.NewReader(out)).ReadAll()
	if len(rows) != 3 || rows[2][1] != `'=HYPERLINK("http://x","y")` {
		t.Errorf("%q", rows)
	}
}

func TestQueryStatsQuotesOddModelNames(t *testing.T) {
	path := filepath.Join(t.TempDir(), "e.ndjson")
	os.WriteFile(path, []byte(qEvent(1, qT0, 1, "evil\x1b[2Jmodel", "", "ok", 1, 0, 1, 1)+"\n"), 0o600)
	out, _, err := queryCmd("--stats", path)
	if err != nil || strings.ContainsRune(out, 0x1b) || !strings.Contains(out, `evil\x1b[2Jmodel `) {
		t.Errorf("%v\n%q", err, out)
	}
}

func TestQuerySkipsLinesThatAreNotEvents(t *testing.T) {
	_, ev := queryFixture(t)
	path := filepath.Join(t.TempDir(), "e.ndjson")
	os.WriteFile(path, []byte(ev["req-2"]+"\n{broken\n"+ev["req-1"]+"\n"+`{"type":"inference","time":"noon"}`+"\n"), 0o600)
	out, _, err := queryCmd(path)
	if out != ev["req-1"]+"\n"+ev["req-2"]+"\n" {
		t.Errorf("printed:\n%s", out)
	}
	if err == nil || !strings.Contains(err.Error(), "query: skipped 2 lines that are not events; the first: "+path+": event 2: not JSON") ||
		errors.As(err, new(usageError)) {
		t.Errorf("error: %v", err)
	}
	// A request-id lookup does not parse the lines it rules out.
	if out, _, err := queryCmd("--request-id", "req-1", path); err != nil || out != ev["req-1"]+"\n" {
		t.Errorf("lookup: %v\n%s", err, out)
	}
}

func TestQueryErrors(t *testing.T) {
	dir, _ := queryFixture(t)
	for _, tc := range []struct {
		args []string
		code int
		want string // on stderr
	}{
		{[]string{"query"}, 2, "auditproxy: query: give at least one PATH"},
		{[]string{"query", "--since", "yesterday", dir}, 2, `auditproxy: query: --since "yesterday": want an RFC 3339 time (2026-12-04T09:30:00Z), a date (2026-12-04, from its start in UTC or --tz), or a span before now (90m, 24h, 30d, 2w, 8mo, 1y)` + "\n"},
		{[]string{"query", "--until", "2026-11-31", dir}, 2, `auditproxy: query: --until "2026-11-31": want an RFC 3339 time`},
		{[]string{"query", "--outcome", "fine", dir}, 2, `auditproxy: query: --outcome: unknown outcome "fine": want one of ok, upstream_error, upstream_unreachable, upstream_timeout, client_cancelled, rejected` + "\n"},
		{[]string{"query", "--since", "2026-11-24T00:00:00Z", "--until", "2026-11-23T00:00:00Z", dir}, 2,
			"auditproxy: query: --since and --until: since 2026-11-24T00:00:00Z is not before until 2026-11-23T00:00:00Z\n"},
		{[]string{"query", "--stats=maybe", dir}, 2, "invalid boolean value"},
		{[]string{"query", "--colour", dir}, 2, "flag provided but not defined: -colour"},
		{[]string{"query", dir, filepath.Join(dir, "missing")}, 1, "auditproxy: query: stat " + filepath.Join(dir, "missing") + ": no such file or directory\n"},
		{[]string{"query", "--help"}, 0, "Usage: auditproxy query PATH..."},
		// Values no event can match are refused, not answered with nothing.
		{[]string{"query", "--type", "model_change", dir}, 2, `--type "model_change" is not an event type (did you mean model_changed?)`},
		{[]string{"query", "--api-key-id", "sk-live-secret-123", dir}, 2, "--api-key-id (the first given) is not a key id (k1:<hex>"},
		{[]string{"query", "--model", "blake3:0123abcd", dir}, 2, `--model "blake3:0123abcd" is a checksum`},
	} {
		var out, errOut bytes.Buffer
		if code := run(tc.args, &out, &errOut); code != tc.code || !strings.Contains(errOut.String(), tc.want) {
			t.Errorf("%v: exit %d, stderr %q; want %d, %q", tc.args, code, errOut.String(), tc.code, tc.want)
		}
		if tc.code != 0 && out.Len() != 0 {
			t.Errorf("%v printed %q", tc.args, out.String())
		}
		if strings.Contains(errOut.String(), "sk-live-secret") {
			t.Errorf("%v printed the API key: %s", tc.args, errOut.String())
		}
	}
	// A path with no events is named on stderr.
	empty := t.TempDir()
	var out, errOut bytes.Buffer
	if code := run([]string{"query", empty}, &out, &errOut); code != 0 || !strings.Contains(errOut.String(), empty+" holds no events") {
		t.Errorf("query of an empty directory: %d %q", code, errOut.String())
	}
	// The same through runQuery: usage errors are usageErrors.
	if _, _, err := queryCmd("--since", "yesterday", dir); !errors.As(err, new(usageError)) {
		t.Errorf("bad --since: %T %v", err, err)
	}
	if _, _, err := queryCmd(filepath.Join(dir, "missing")); err == nil || errors.As(err, new(usageError)) {
		t.Errorf("missing path: %T %v", err, err)
	}
}

// TestQueryMarksUncommittedEvents: events after their log's newest
// checkpoint among those read are printed as found, and a note on stderr
// says which are not yet committed; committed ones get no note.
func TestQueryMarksUncommittedEvents(t *testing.T) {
	s := func(n int) time.Time { return qT0.Add(time.Duration(n) * time.Second) }
	cp := `{"v":1,"type":"checkpoint","id":"00000000-0000-4000-8000-000000000099","time":"2026-11-23T10:00:05Z","checkpoint":{"note":"a\nb"},"log":{"origin":"h/1","seq":3,"prev":""}}`
	other := strings.Replace(qEvent(9, s(9), 0, "llama", "", "ok", 1, 0, 1, 1), `"origin":"h/1"`, `"origin":"h/2"`, 1)
	file := filepath.Join(t.TempDir(), "events.ndjson")
	os.WriteFile(file, []byte(strings.Join([]string{
		qEvent(1, s(1), 1, "llama", "", "ok", 1, 0, 1, 1), qEvent(2, s(2), 2, "llama", "", "ok", 1, 0, 1, 1), cp,
		qEvent(4, s(6), 4, "llama", "", "ok", 1, 0, 1, 1), qEvent(5, s(7), 5, "llama", "", "ok", 1, 0, 1, 1), other,
	}, "\n")), 0o600)

	out, errOut, err := queryCmd(file)
	if err != nil || strings.Count(out, "\n") != 6 {
		t.Fatalf("query: %v, %d lines\n%s", err, strings.Count(out, "\n"), errOut)
	}
	for _, want := range []string{"3 of the selected events are not yet committed",
		"h/1: 2 events, seq 4..5, after its newest checkpoint read (size 3)", "h/2: 1 events, seq 0, no checkpoint of it was read"} {
		if !strings.Contains(errOut, want) {
			t.Errorf("stderr does not say %q:\n%s", want, errOut)
		}
	}
	if _, errOut, err := queryCmd("--request-id", "req-2", "--request-id", "req-1", file); err != nil || errOut != "" {
		t.Errorf("committed events: %v, stderr %q", err, errOut)
	}
	if _, errOut, _ := queryCmd("--stats", file); !strings.Contains(errOut, "3 of the selected events are not yet committed") {
		t.Errorf("--stats over uncommitted events: stderr %q", errOut)
	}
}

// TestLocalZoneIsNamed: --tz Local names the machine's zone, so that
// "times in ..." means something where the output is read.
func TestLocalZoneIsNamed(t *testing.T) {
	for tz, want := range map[string]string{"Asia/Tokyo": "Asia/Tokyo", ":Europe/Paris": "Europe/Paris", "": "UTC"} {
		t.Setenv("TZ", tz)
		if loc, err := loadZone("Local"); err != nil || loc.String() != want {
			t.Errorf("TZ=%q: --tz Local is %v, %v; want %s", tz, loc, err, want)
		}
	}
}
