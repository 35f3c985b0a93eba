package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/auditproxy/auditproxy/audit"
)

// queryEvents writes six inference events (one of them twice, as
// at-least-once shipping would) and a checkpoint, in two files.
func queryEvents(t *testing.T) string {
	t.Helper()
	ev := func(i int, model, key, outcome string, total float64, ttft string, in, out int) string {
		return fmt.Sprintf(`{"v":1,"type":"inference","id":"ev-%d","time":"2026-11-23T10:00:0%d.000000000Z","request_id":"req-%d","model":{"name":%q},"api_key_id":%q,"input":{"bytes":1,"tokens":%d},"output":{"bytes":1,"tokens":%d},"latency_ms":{"total":%g%s},"status":{"code":200,"outcome":%q},"log":{"origin":"o/1","seq":%d,"prev":""}}`,
			i, i, i, model, key, in, out, total, ttft, outcome, i)
	}
	a := []string{
		ev(1, "llama", "k1:aa", "ok", 100, `,"ttft":10`, 10, 20),
		ev(2, "llama", "k1:bb", "ok", 200, `,"ttft":20`, 11, 21),
		ev(3, "llama", "k1:aa", "upstream_error", 300, "", 12, 0),
	}
	b := []string{
		ev(4, "mistral", "k1:aa", "ok", 400, "", 13, 23),
		ev(5, "mistral", "k1:cc", "client_cancelled", 500, `,"ttft":50`, 14, 24),
		a[1], // a duplicate
		`{"v":1,"type":"checkpoint","id":"cp-1","time":"2026-11-23T10:00:09.000000000Z","log":{"origin":"o/1","seq":6,"prev":""}}`,
	}
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "a.ndjson"), []byte(strings.Join(a, "\n")+"\n"), 0o600)
	os.MkdirAll(filepath.Join(dir, "more"), 0o700)
	os.WriteFile(filepath.Join(dir, "more", "b.ndjson"), []byte(strings.Join(b, "\n")+"\n"), 0o600)
	return dir
}

func TestQuerySelectsEvents(t *testing.T) {
	dir := queryEvents(t)
	for _, tc := range []struct {
		args []string
		want string // request ids of the printed events, in order
	}{
		{nil, "req-1,req-2,req-3,req-4,req-5,"}, // the checkpoint has no request id
		{[]string{"--api-key-id", "k1:aa"}, "req-1,req-3,req-4"},
		{[]string{"--model", "mistral", "--outcome", "ok"}, "req-4"},
		{[]string{"--model", "mistral", "--model", "llama", "--outcome", "upstream_error", "--outcome", "client_cancelled"}, "req-3,req-5"},
		{[]string{"--request-id", "req-2"}, "req-2"},
		{[]string{"--since", "2026-11-23T10:00:02Z", "--until", "2026-11-23T10:00:04Z"}, "req-2,req-3"},
		{[]string{"--type", "checkpoint"}, ""},
	} {
		var out, errOut bytes.Buffer
		args := append(append([]string{"query"}, tc.args...), dir)
		if code := run(args, &out, &errOut); code != 0 {
			t.Fatalf("%v: exit %d %s", args, code, errOut.String())
		}
		var ids []string
		for _, line := range strings.Split(strings.TrimSpace(out.String()), "\n") {
			if line == "" {
				continue
			}
			var ev audit.Event
			if err := json.Unmarshal([]byte(line), &ev); err != nil {
				t.Fatal(err)
			}
			ids = append(ids, ev.RequestID)
		}
		if got := strings.Join(ids, ","); got != tc.want {
			t.Errorf("%v: %q, want %q", tc.args, got, tc.want)
		}
	}
}

func TestQueryStats(t *testing.T) {
	dir := queryEvents(t)
	var out bytes.Buffer
	if code := run([]string{"query", "--stats", "--json", dir}, &out, io.Discard); code != 0 {
		t.Fatalf("exit %d", code)
	}
	var s audit.StatsSummary
	if err := json.Unmarshal(out.Bytes(), &s); err != nil {
		t.Fatal(err)
	}
	// Five distinct inference events: latencies 100..500, two errors,
	// ttft on three; tokens 10+11+12+13+14 in, 20+21+0+23+24 out.
	if s.Events != 5 || s.Errors != 2 || s.InputTokens != 60 || s.OutputTokens != 88 {
		t.Errorf("summary %+v", s.StatsGroup)
	}
	if l := s.Latency.Total; l == nil || l.P50 != 300 || l.P95 != 500 || l.P99 != 500 {
		t.Errorf("latency %+v", l)
	}
	if l := s.Latency.TTFT; l == nil || l.Count != 3 || l.P50 != 20 {
		t.Errorf("ttft %+v", l)
	}
	if len(s.Models) != 2 || s.Models[0].Model != "llama" || s.Models[0].Events != 3 || s.Models[1].Errors != 1 {
		t.Errorf("by model %+v", s.Models)
	}
	out.Reset()
	if code := run([]string{"query", "--stats", "--model", "mistral", dir}, &out, io.Discard); code != 0 ||
		!strings.Contains(out.String(), "inference events: 2") || !strings.Contains(out.String(), "errors: 1 (50.00%)") {
		t.Errorf("text stats:\n%s", out.String())
	}
}

func TestQueryUsageErrors(t *testing.T) {
	dir := queryEvents(t)
	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"query"}, 2, "give at least one PATH"},
		{[]string{"query", "--since", "yesterday", dir}, 2, `--since "yesterday": want an RFC 3339 time`},
		{[]string{"query", "--outcome", "fine", dir}, 2, `unknown outcome "fine"`},
		{[]string{"query", "--since", "2026-11-24T00:00:00Z", "--until", "2026-11-23T00:00:00Z", dir}, 2, "is not before until"},
		{[]string{"query", filepath.Join(dir, "missing")}, 1, "no such file"},
	} {
		var errOut bytes.Buffer
		if code := run(tc.args, io.Discard, &errOut); code != tc.code || !strings.Contains(errOut.String(), tc.want) {
			t.Errorf("%v: %d %q, want %d %q", tc.args, code, errOut.String(), tc.code, tc.want)
		}
	}
}
