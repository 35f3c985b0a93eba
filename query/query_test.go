package query

import (
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/auditproxy/auditproxy/audit"
	"github.com/valyala/fastjson"
)

var queryT0 = time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC)

type queryLine struct {
	name  string
	event string
}

// queryEvents is the test log: a log_started event, seven inference events
// (r1..r7, one second apart from queryT0), r2 again (shipped twice) and a
// checkpoint.
//
//	name  model  api_key_id  outcome           total  ttft  tokens in/out  time
//	r1    llama  k1:aa       ok                100    10    10/20          T0
//	r2    llama  k1:bb       ok                200    20    11/21          T0+1s
//	r3    llama  k1:aa       upstream_error    300    -     12/null        T0+2s
//	r4    mist   k1:aa       ok                400    -     13/23          T0+3s
//	r5    mist   null        client_cancelled  500    50    null/null      T0+4s
//	r6    ""     null        rejected          1      -     null/null      T0+5s
//	r7    llama  k1:cc       upstream_timeout  700    70    14/24          T0+6s
func queryEvents() []queryLine {
	type row struct {
		model, sum, key, outcome string
		total, ttft              float64 // ttft 0: none
		in, out                  int64   // -1: null
	}
	rows := []row{
		{"llama", "sha256:a1", "k1:aa", "ok", 100, 10, 10, 20},
		{"llama", "sha256:a1", "k1:bb", "ok", 200, 20, 11, 21},
		{"llama", "sha256:a2", "k1:aa", "upstream_error", 300, 0, 12, -1},
		{"mist", "pending", "k1:aa", "ok", 400, 0, 13, 23},
		{"mist", "", "", "client_cancelled", 500, 50, -1, -1},
		{"", "", "", "rejected", 1, 0, -1, -1},
		{"llama", "sha256:a2", "k1:cc", "upstream_timeout", 700, 70, 14, 24},
	}
	lines := []queryLine{{"ls", `{"v":1,"type":"log_started","id":"00000000-0000-4000-8000-000000000000","time":"2026-11-23T09:59:59.000000000Z","source":{"host":"h","version":"t"},"log":{"origin":"h/1","seq":0,"prev":""}}`}}
	for i, r := range rows {
		ev := audit.Event{V: 1, Type: audit.TypeInference, ID: "00000000-0000-4000-8000-00000000000" + string(rune('1'+i)),
			Time: audit.Timestamp(queryT0.Add(time.Duration(i) * time.Second)), RequestID: "r" + string(rune('1'+i)),
			Method: "POST", Path: "/v1/chat/completions", Model: audit.Model{Name: r.model, Checksum: r.sum},
			Latency: audit.Latency{Total: r.total, Upstream: r.total},
			Status:  audit.Status{Code: 200, Outcome: audit.Outcome(r.outcome)},
			Log:     &audit.LogRef{Origin: "h/1", Seq: int64(i + 1), Prev: "ab"}}
		if r.key != "" {
			ev.APIKeyID = &r.key
		}
		if r.ttft != 0 {
			ev.Latency.TTFT = &r.ttft
		}
		if r.in >= 0 {
			ev.Input.Tokens = &r.in
		}
		if r.out >= 0 {
			ev.Output.Tokens = &r.out
		}
		lines = append(lines, queryLine{ev.RequestID, string(ev.AppendJSON(nil))})
	}
	lines = append(lines, queryLine{"r2dup", lines[2].event},
		queryLine{"cp", `{"v":1,"type":"checkpoint","id":"00000000-0000-4000-8000-000000000009","time":"2026-11-23T10:00:07.000000000Z","checkpoint":{"origin":"h/1","size":8,"root":"x","note":"h/1\n8\nx\n","interval_ms":1000},"source":{"host":"h","version":"t"},"log":{"origin":"h/1","seq":8,"prev":"cd"}}`})
	return lines
}

func mustQuery(t *testing.T, f Filter) *Query {
	t.Helper()
	q, err := NewQuery(f)
	if err != nil {
		t.Fatal(err)
	}
	return q
}

func TestQueryMatch(t *testing.T) {
	lines := queryEvents()
	sec := func(n int) time.Time { return queryT0.Add(time.Duration(n) * time.Second) }
	for _, tc := range []struct {
		name string
		f    Filter
		want string
	}{
		{"everything", Filter{}, "ls r1 r2 r3 r4 r5 r6 r7 r2dup cp"},
		{"type", Filter{Types: []string{audit.TypeInference}}, "r1 r2 r3 r4 r5 r6 r7 r2dup"},
		{"types OR", Filter{Types: []string{audit.TypeCheckpoint, "log_started"}}, "ls cp"},
		{"unknown type", Filter{Types: []string{"nope"}}, ""},
		{"model", Filter{Models: []string{"llama"}}, "r1 r2 r3 r7 r2dup"},
		{"models OR", Filter{Models: []string{"llama", "mist"}}, "r1 r2 r3 r4 r5 r7 r2dup"},
		{"no model", Filter{Models: []string{""}}, "ls r6 cp"},
		{"model prefix is no match", Filter{Models: []string{"lla"}}, ""},
		{"key id", Filter{APIKeyIDs: []string{"k1:aa"}}, "r1 r3 r4"},
		{"key ids OR", Filter{APIKeyIDs: []string{"k1:bb", "k1:cc"}}, "r2 r7 r2dup"},
		{"no key", Filter{APIKeyIDs: []string{""}}, "ls r5 r6 cp"},
		{"request id", Filter{RequestIDs: []string{"r3"}}, "r3"},
		{"request id shipped twice", Filter{RequestIDs: []string{"r2"}}, "r2 r2dup"},
		{"request id prefix is no match", Filter{RequestIDs: []string{"r"}}, ""},
		{"outcome", Filter{Outcomes: []audit.Outcome{audit.OutcomeOK}}, "r1 r2 r4 r2dup"},
		{"outcomes OR", Filter{Outcomes: []audit.Outcome{audit.OutcomeUpstreamError, audit.OutcomeClientCancelled}}, "r3 r5"},
		{"since is inclusive", Filter{Since: sec(2)}, "r3 r4 r5 r6 r7 cp"},
		{"since, a nanosecond later", Filter{Since: sec(2).Add(1)}, "r4 r5 r6 r7 cp"},
		{"since in another zone", Filter{Since: sec(2).In(time.FixedZone("CET", 3600))}, "r3 r4 r5 r6 r7 cp"},
		{"until is exclusive", Filter{Until: sec(2)}, "ls r1 r2 r2dup"},
		{"until, a nanosecond later", Filter{Until: sec(2).Add(1)}, "ls r1 r2 r3 r2dup"},
		{"since and until", Filter{Since: sec(1), Until: sec(3)}, "r2 r3 r2dup"},
		{"model AND outcome AND key", Filter{Models: []string{"llama"}, Outcomes: []audit.Outcome{audit.OutcomeOK}, APIKeyIDs: []string{"k1:bb"}}, "r2 r2dup"},
		{"type AND since AND outcomes", Filter{Types: []string{audit.TypeInference}, Since: sec(3), Outcomes: []audit.Outcome{audit.OutcomeOK, audit.OutcomeRejected}}, "r4 r6"},
		{"model AND request id, disjoint", Filter{Models: []string{"llama"}, RequestIDs: []string{"r4"}}, ""},
		{"everything set", Filter{Types: []string{audit.TypeInference}, Models: []string{"mist"}, APIKeyIDs: []string{"k1:aa"},
			RequestIDs: []string{"r4", "r5"}, Outcomes: []audit.Outcome{audit.OutcomeOK}, Since: sec(3), Until: sec(4)}, "r4"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			q := mustQuery(t, tc.f)
			var p fastjson.Parser
			var got []string
			for _, l := range lines {
				ok, err := q.Match(&p, []byte(l.event))
				if err != nil {
					t.Fatalf("%s: %v", l.name, err)
				}
				if ok {
					got = append(got, l.name)
				}
			}
			if strings.Join(got, " ") != tc.want {
				t.Errorf("matched %q, want %q", strings.Join(got, " "), tc.want)
			}
		})
	}
}

// TestQueryEscapes: the raw pre-check must not rule out an event whose
// value is written with JSON escapes, and a value elsewhere in the event is
// no match.
func TestQueryEscapes(t *testing.T) {
	const tm = `"time":"2026-11-23T10:00:00.000000000Z"`
	for _, tc := range []struct {
		f     Filter
		event string
		want  bool
	}{
		{Filter{RequestIDs: []string{"r9"}}, `{` + tm + `,"request_id":"r\u0039"}`, true},
		{Filter{RequestIDs: []string{`q"8`}}, `{` + tm + `,"request_id":"q\"8"}`, true},
		{Filter{RequestIDs: []string{"r9"}}, `{` + tm + `,"request_id":"r9x","note":"a\nb"}`, false},
		{Filter{Models: []string{"llamaé"}}, `{` + tm + `,"model":{"name":"llama\u00e9"}}`, true},
		{Filter{Models: []string{"llamaé"}}, `{` + tm + `,"model":{"name":"llamaé"}}`, true},
		{Filter{Models: []string{"llama"}}, `{` + tm + `,"model":{"name":"llama\u00e9"}}`, false},
		{Filter{Models: []string{"/m"}}, `{` + tm + `,"model":{"name":"\/m"}}`, true},
		{Filter{RequestIDs: []string{"r1"}}, `{` + tm + `,"request_id":"a","x":{"request_id":"r1"}}`, false},
		{Filter{RequestIDs: []string{"r1"}}, `{` + tm + `,"request_id":"a","x":"r1"}`, false},
		{Filter{APIKeyIDs: []string{"1"}}, `{` + tm + `,"api_key_id":1}`, false},
		{Filter{APIKeyIDs: []string{""}}, `{` + tm + `,"api_key_id":1}`, false},
		{Filter{APIKeyIDs: []string{""}}, `{` + tm + `,"api_key_id":null}`, true},
		{Filter{APIKeyIDs: []string{""}}, `{` + tm + `,"api_key_id":""}`, true},
		{Filter{APIKeyIDs: []string{"", "k"}}, `{` + tm + `,"api_key_id":"k"}`, true},
	} {
		q := mustQuery(t, tc.f)
		var p fastjson.Parser
		got, err := q.Match(&p, []byte(tc.event))
		if err != nil || got != tc.want {
			t.Errorf("%+v on %s: %v, %v; want %v", tc.f, tc.event, got, err, tc.want)
		}
	}
}

func TestQueryErrors(t *testing.T) {
	for _, tc := range []struct {
		f    Filter
		want string
	}{
		{Filter{Outcomes: []audit.Outcome{"fine"}}, `unknown outcome "fine": want one of ok, upstream_error, upstream_unreachable, upstream_timeout, client_cancelled, rejected`},
		{Filter{Since: queryT0, Until: queryT0}, "is not before until"},
		{Filter{Since: queryT0.Add(time.Second), Until: queryT0}, "is not before until"},
	} {
		if _, err := NewQuery(tc.f); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("NewQuery(%+v): %v, want %q", tc.f, err, tc.want)
		}
	}
	bounded := mustQuery(t, Filter{Since: queryT0})
	byID := mustQuery(t, Filter{RequestIDs: []string{"r1"}})
	for _, tc := range []struct {
		q       *Query
		event   string
		wantErr string // "" for no error
		want    bool
	}{
		{mustQuery(t, Filter{}), `{"type":`, "not JSON", false},
		{mustQuery(t, Filter{}), `[1,2]`, "not a JSON object", false},
		{bounded, `{"time":"yesterday"}`, `event time "yesterday" is not an RFC 3339 time`, false},
		{bounded, `{"time":12}`, `"time" is not a string`, false},
		{bounded, `{"type":"x"}`, `event has no "time"`, false},
		{mustQuery(t, Filter{}), `{"time":"yesterday"}`, "", true}, // time unchecked without bounds
		{byID, `not json at all`, "", false},                       // ruled out unparsed (documented)
		{byID, `not json "r1"`, "not JSON", false},
		{byID, `not json \ at all`, "not JSON", false},
	} {
		var p fastjson.Parser
		got, err := tc.q.Match(&p, []byte(tc.event))
		if tc.wantErr == "" && err != nil || tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)) || got != tc.want {
			t.Errorf("Match(%s): %v, %v; want %v, error %q", tc.event, got, err, tc.want, tc.wantErr)
		}
	}
}

func TestNearestRank(t *testing.T) {
	seq := func(n int) []float64 {
		s := make([]float64, n)
		for i := range s {
			s[i] = float64(i + 1)
		}
		return s
	}
	for _, tc := range []struct {
		n, p int
		want float64
	}{
		{1, 50, 1}, {1, 99, 1},
		{2, 50, 1}, {2, 51, 2}, {2, 95, 2},
		{10, 50, 5}, {10, 95, 10}, {10, 99, 10},
		{20, 95, 19}, {20, 99, 20},
		{100, 50, 50}, {100, 95, 95}, {100, 99, 99}, {100, 100, 100}, {100, 1, 1},
		{101, 50, 51}, {101, 99, 100},
		{1000, 99, 990},
	} {
		if got := NearestRank(seq(tc.n), tc.p); got != tc.want {
			t.Errorf("NearestRank(1..%d, %d) = %v, want %v", tc.n, tc.p, got, tc.want)
		}
	}
}

// figuresLine is a Figures in one line, for tables of expected rows:
// events ok errors cancelled rejected, error rate, latency and TTFT as
// count/p50/p95/p99, tokens as sum/unknown.
func figuresLine(f Figures) string {
	rate := "null"
	if f.ErrorRate != nil {
		rate = strconv.FormatFloat(*f.ErrorRate, 'g', 4, 64)
	}
	pct := func(p *Percentiles) string {
		if p == nil {
			return "null"
		}
		return fmt.Sprintf("%d/%g/%g/%g", p.Count, p.P50, p.P95, p.P99)
	}
	return fmt.Sprintf("n=%d ok=%d err=%d cc=%d rej=%d rate=%s lat=%s ttft=%s in=%d/%d out=%d/%d",
		f.Events, f.OK, f.Errors, f.ClientCancelled, f.Rejected, rate, pct(f.Latency.Total), pct(f.Latency.TTFT),
		f.InputTokens, f.InputTokensUnknown, f.OutputTokens, f.OutputTokensUnknown)
}

func addAll(t *testing.T, s *Stats, events []queryLine) {
	t.Helper()
	var p fastjson.Parser
	ids := map[string]bool{}
	for _, l := range events { // checkpoint and log_started are ignored
		v, err := p.Parse(l.event)
		if err != nil {
			t.Fatal(err)
		}
		if id := string(v.GetStringBytes("id")); ids[id] {
			continue // r2dup
		} else {
			ids[id] = true
		}
		if err := s.Add(v); err != nil {
			t.Fatal(err)
		}
	}
}

func TestStats(t *testing.T) {
	s, err := NewStats([]Grouping{ByModel, ByKey, ByOutcome, ByHour, ByModel}, time.UTC)
	if err != nil {
		t.Fatal(err)
	}
	addAll(t, s, queryEvents())
	got, err := s.Summary(time.Time{}, time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	// By hand, from the table in queryEvents: ok r1 r2 r4, errors r3 r7,
	// error rate 2/(3+2). Latency of the ok ones 100 200 400: nearest
	// ranks ceil(.5*3)=2, ceil(.95*3)=3, 3; their TTFT 10 20: ranks 1, 2, 2.
	// Input tokens 10+11+12+13+14, r5 r6 unknown; output 20+21+23+24, r3
	// r5 r6 unknown.
	if want := "n=7 ok=3 err=2 cc=1 rej=1 rate=0.4 lat=3/200/400/400 ttft=2/10/20/20 in=60/2 out=88/3"; figuresLine(got.Figures) != want {
		t.Errorf("totals:\n%s\nwant\n%s", figuresLine(got.Figures), want)
	}
	if w := got.Window; w.Since != nil || w.Until != nil || !w.First.Equal(queryT0) || !w.Last.Equal(queryT0.Add(6*time.Second)) || w.TZ != "UTC" {
		t.Errorf("window %+v", w)
	}
	var rows []string
	for _, r := range got.Groups.Model {
		rows = append(rows, fmt.Sprintf("%q %s %s", r.Model, deref(r.Checksum), figuresLine(r.Figures)))
	}
	// A "pending" checksum is unknown (null), as is a missing one; nulls
	// sort first among equals.
	wantRows := []string{
		`"llama" ` + "\x00" + `sha256:a1 n=2 ok=2 err=0 cc=0 rej=0 rate=0 lat=2/100/200/200 ttft=2/10/20/20 in=21/0 out=41/0`,
		`"llama" ` + "\x00" + `sha256:a2 n=2 ok=0 err=2 cc=0 rej=0 rate=1 lat=null ttft=null in=26/0 out=24/1`,
		`"mist"  n=2 ok=1 err=0 cc=1 rej=0 rate=0 lat=1/400/400/400 ttft=null in=13/1 out=23/1`,
		`""  n=1 ok=0 err=0 cc=0 rej=1 rate=null lat=null ttft=null in=0/1 out=0/1`,
	}
	if !slices.Equal(rows, wantRows) {
		t.Errorf("by model:\n%s\nwant\n%s", strings.Join(rows, "\n"), strings.Join(wantRows, "\n"))
	}
	rows = nil
	for _, r := range got.Groups.Key {
		rows = append(rows, fmt.Sprintf("%s %s", deref(r.APIKeyID), figuresLine(r.Figures)))
	}
	wantRows = []string{
		"\x00k1:aa n=3 ok=2 err=1 cc=0 rej=0 rate=0.3333 lat=2/100/400/400 ttft=1/10/10/10 in=35/0 out=43/1",
		" n=2 ok=0 err=0 cc=1 rej=1 rate=null lat=null ttft=null in=0/2 out=0/2",
		"\x00k1:bb n=1 ok=1 err=0 cc=0 rej=0 rate=0 lat=1/200/200/200 ttft=1/20/20/20 in=11/0 out=21/0",
		"\x00k1:cc n=1 ok=0 err=1 cc=0 rej=0 rate=1 lat=null ttft=null in=14/0 out=24/0",
	}
	if !slices.Equal(rows, wantRows) {
		t.Errorf("by key:\n%q\nwant\n%q", rows, wantRows)
	}
	rows = nil
	for _, r := range got.Groups.Outcome {
		rows = append(rows, fmt.Sprintf("%s %d", r.Outcome, r.Events))
	}
	if want := "ok 3,client_cancelled 1,rejected 1,upstream_error 1,upstream_timeout 1"; strings.Join(rows, ",") != want {
		t.Errorf("by outcome: %s", strings.Join(rows, ","))
	}
	if h := got.Groups.Hour; len(h) != 1 || !h[0].From.Equal(queryT0) || !h[0].To.Equal(queryT0.Add(time.Hour)) || h[0].Events != 7 {
		t.Errorf("by hour %+v", h)
	}
	if got.Groups.Day != nil {
		t.Errorf("by day not asked for, got %+v", got.Groups.Day)
	}
	// Asked twice, a grouping is listed once, and the JSON has every member.
	b, _ := json.Marshal(got)
	var back map[string]any
	json.Unmarshal(b, &back)
	for _, k := range []string{"window", "events", "ok", "errors", "client_cancelled", "rejected", "error_rate", "outcomes", "latency_ms", "input_tokens", "output_tokens", "input_tokens_unknown", "output_tokens_unknown", "groups"} {
		if _, ok := back[k]; !ok {
			t.Errorf("summary JSON lacks %q", k)
		}
	}
	if g := back["groups"].(map[string]any); len(g) != 4 {
		t.Errorf("groups %v", g)
	}
	if again, _ := s.Summary(time.Time{}, time.Time{}); figuresLine(again.Figures) != figuresLine(got.Figures) {
		t.Errorf("a second Summary differs")
	}
}

// TestStatsTimeBuckets: every bucket of the window is listed, empty ones
// too, cut on the clock of the zone asked for: a half-hour zone, and the
// night Paris puts its clocks back (two 02:00 hours, a 25-hour day).
func TestStatsTimeBuckets(t *testing.T) {
	zone := func(name string) *time.Location {
		l, err := time.LoadLocation(name)
		if err != nil {
			t.Fatal(err)
		}
		return l
	}
	at := func(s string) time.Time {
		tm, err := time.Parse(time.RFC3339, s)
		if err != nil {
			t.Fatal(err)
		}
		return tm
	}
	ev := func(tm string) queryLine {
		return queryLine{tm, `{"type":"inference","id":"` + tm + `","time":"` + tm + `","status":{"outcome":"ok"},"latency_ms":{"total":1}}`}
	}
	for _, tc := range []struct {
		name         string
		by           Grouping
		loc          string
		since, until string
		events       []string
		want         []string // from to events
	}{
		{"window wider than the events", ByHour, "UTC", "2026-11-23T09:00:00Z", "2026-11-23T12:00:00Z",
			[]string{"2026-11-23T10:00:00Z", "2026-11-23T10:59:59Z"},
			[]string{"2026-11-23T09:00:00Z 2026-11-23T10:00:00Z 0", "2026-11-23T10:00:00Z 2026-11-23T11:00:00Z 2", "2026-11-23T11:00:00Z 2026-11-23T12:00:00Z 0"}},
		{"open window: first to last event", ByDay, "UTC", "", "",
			[]string{"2026-11-21T23:59:59Z", "2026-11-23T00:00:00Z"},
			[]string{"2026-11-21T00:00:00Z 2026-11-22T00:00:00Z 1", "2026-11-22T00:00:00Z 2026-11-23T00:00:00Z 0", "2026-11-23T00:00:00Z 2026-11-24T00:00:00Z 1"}},
		{"half-hour zone", ByHour, "Asia/Kolkata", "", "",
			[]string{"2026-11-23T10:00:00Z", "2026-11-23T10:29:59Z", "2026-11-23T10:30:00Z"},
			[]string{"2026-11-23T15:00:00+05:30 2026-11-23T16:00:00+05:30 2", "2026-11-23T16:00:00+05:30 2026-11-23T17:00:00+05:30 1"}},
		{"clocks back: two 02:00 hours", ByHour, "Europe/Paris", "", "",
			[]string{"2026-10-25T00:30:00Z", "2026-10-25T01:30:00Z"},
			[]string{"2026-10-25T02:00:00+02:00 2026-10-25T02:00:00+01:00 1", "2026-10-25T02:00:00+01:00 2026-10-25T03:00:00+01:00 1"}},
		{"clocks back: a 25-hour day", ByDay, "Europe/Paris", "2026-10-24T22:00:00Z", "2026-10-26T23:00:00Z",
			[]string{"2026-10-24T22:00:00Z", "2026-10-25T22:59:59Z", "2026-10-25T23:00:00Z"},
			[]string{"2026-10-25T00:00:00+02:00 2026-10-26T00:00:00+01:00 2", "2026-10-26T00:00:00+01:00 2026-10-27T00:00:00+01:00 1"}},
		{"clocks forward half an hour: an hour of 30 minutes", ByHour, "Australia/Lord_Howe", "", "",
			[]string{"2026-10-03T15:15:00Z", "2026-10-03T15:45:00Z"}, // 01:45 +10:30, then 02:45 +11:00
			[]string{"2026-10-04T01:00:00+10:30 2026-10-04T02:30:00+11:00 1", "2026-10-04T02:30:00+11:00 2026-10-04T03:00:00+11:00 1"}},
		{"no events, open window", ByDay, "UTC", "", "", nil, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := NewStats([]Grouping{tc.by}, zone(tc.loc))
			if err != nil {
				t.Fatal(err)
			}
			var lines []queryLine
			for _, e := range tc.events {
				lines = append(lines, ev(e))
			}
			addAll(t, s, lines)
			var since, until time.Time
			if tc.since != "" {
				since, until = at(tc.since), at(tc.until)
			}
			sum, err := s.Summary(since, until)
			if err != nil {
				t.Fatal(err)
			}
			rows := append(sum.Groups.Hour, sum.Groups.Day...)
			var got []string
			for _, r := range rows {
				got = append(got, fmt.Sprintf("%s %s %d", r.From.Format(time.RFC3339), r.To.Format(time.RFC3339), r.Events))
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("rows:\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(tc.want, "\n"))
			}
		})
	}

	s, _ := NewStats([]Grouping{ByHour}, time.UTC)
	if _, err := s.Summary(at("2000-01-01T00:00:00Z"), at("2026-01-01T00:00:00Z")); err == nil || !strings.Contains(err.Error(), "more than 100000 hours") {
		t.Errorf("26 years by hour: %v", err)
	}
	if _, err := NewStats([]Grouping{"week"}, time.UTC); err == nil || err.Error() != `cannot group by "week": want one of model, key, outcome, hour, day` {
		t.Errorf("by week: %v", err)
	}
}

func TestStatsEmptyAndErrors(t *testing.T) {
	s, _ := NewStats([]Grouping{ByModel}, time.UTC)
	sum, _ := s.Summary(time.Time{}, time.Time{})
	b, _ := json.Marshal(sum)
	if want := `{"window":{"since":null,"until":null,"first":null,"last":null,"tz":"UTC"},"events":0,"ok":0,"errors":0,"client_cancelled":0,"rejected":0,"error_rate":null,"outcomes":{},"latency_ms":{"total":null,"ttft":null},"input_tokens":0,"output_tokens":0,"input_tokens_unknown":0,"output_tokens_unknown":0,"groups":{"model":[]}}`; string(b) != want {
		t.Errorf("empty summary:\n%s\nwant\n%s", b, want)
	}
	var p fastjson.Parser
	v, _ := p.Parse(`{"type":"inference","time":"noon"}`)
	if err := s.Add(v); err == nil {
		t.Error("Add took an event without a valid time")
	}
	v, _ = p.Parse(`{"type":"checkpoint","time":"noon"}`)
	if err := s.Add(v); err != nil {
		t.Errorf("Add of a checkpoint: %v", err)
	}
	// Members of the wrong type are left out, not guessed.
	v, _ = p.Parse(`{"type":"inference","time":"2026-11-23T10:00:00Z","latency_ms":{"total":"5","ttft":null},"input":{"tokens":"3"},"model":{"checksum":7},"api_key_id":5,"status":{"outcome":"ok"}}`)
	if err := s.Add(v); err != nil {
		t.Fatal(err)
	}
	sum, _ = s.Summary(time.Time{}, time.Time{})
	if want := "n=1 ok=1 err=0 cc=0 rej=0 rate=0 lat=null ttft=null in=0/1 out=0/1"; figuresLine(sum.Figures) != want {
		t.Errorf("summary %s", figuresLine(sum.Figures))
	}
	if m := sum.Groups.Model; len(m) != 1 || m[0].Model != "" || m[0].Checksum != nil {
		t.Errorf("models %+v", m)
	}
}

// TestQueryResource: --resource selects the change records of a resource
// and the outcomes of its changes, not events that hold the name
// elsewhere.
func TestQueryResource(t *testing.T) {
	lines := []queryLine{
		{"rollout", `{"type":"annotation","time":"2026-11-23T10:00:00Z","details":{"record":{"resource":"prod/a","type":"model_rollout"}}}`},
		{"outcome", `{"type":"change_outcome","time":"2026-11-23T10:10:00Z","details":{"change":{"id":"x","resource":"prod/a","type":"annotation"}}}`},
		{"other", `{"type":"annotation","time":"2026-11-23T10:00:01Z","details":{"record":{"resource":"prod/b"}}}`},
		{"elsewhere", `{"type":"annotation","time":"2026-11-23T10:00:02Z","details":{"record":{"justification":"prod/a"}}}`},
		{"model", `{"type":"inference","time":"2026-11-23T10:00:03Z","model":{"name":"prod/a"}}`},
		{"escaped", `{"type":"annotation","time":"2026-11-23T10:00:04Z","details":{"record":{"resource":"prod\/a"}}}`},
	}
	for _, tc := range []struct {
		f    Filter
		want string
	}{
		{Filter{Resources: []string{"prod/a"}}, "rollout outcome escaped"},
		{Filter{Resources: []string{"prod/a", "prod/b"}, Types: []string{audit.TypeAnnotation}}, "rollout other escaped"},
		{Filter{Resources: []string{"prod"}}, ""},
	} {
		q := mustQuery(t, tc.f)
		var p fastjson.Parser
		var got []string
		for _, l := range lines {
			if ok, err := q.Match(&p, []byte(l.event)); err != nil {
				t.Fatalf("%s: %v", l.name, err)
			} else if ok {
				got = append(got, l.name)
			}
		}
		if strings.Join(got, " ") != tc.want {
			t.Errorf("%+v matched %q, want %q", tc.f, strings.Join(got, " "), tc.want)
		}
	}
}

// TestStatsDayWhereMidnightIsSkipped: where the clocks go from 24:00 to
// 01:00 (America/Santiago on 2026-09-06, America/Havana on 2026-03-08),
// the day starts at 01:00; time.Date's midnight of that day is an instant
// of the day before, and the listing of the window's days never ended
// (found by the review of report: query --stats --by day --tz
// America/Santiago hung, eating memory).
func TestStatsDayWhereMidnightIsSkipped(t *testing.T) {
	for _, tc := range []struct {
		zone, at string
		want     []string
	}{
		{"America/Santiago", "2026-09-06T12:00:00Z", []string{"2026-09-05T00:00:00-04:00 2026-09-06T01:00:00-03:00 0", "2026-09-06T01:00:00-03:00 2026-09-07T00:00:00-03:00 2", "2026-09-07T00:00:00-03:00 2026-09-08T00:00:00-03:00 0"}},
		{"America/Havana", "2026-03-08T12:00:00Z", []string{"2026-03-07T00:00:00-05:00 2026-03-08T01:00:00-04:00 0", "2026-03-08T01:00:00-04:00 2026-03-09T00:00:00-04:00 2", "2026-03-09T00:00:00-04:00 2026-03-10T00:00:00-04:00 0"}},
	} {
		loc, err := time.LoadLocation(tc.zone)
		if err != nil {
			t.Fatal(err)
		}
		day, _ := time.Parse(time.RFC3339, tc.at)
		y, m, d := day.Date()
		s, _ := NewStats([]Grouping{ByDay}, loc)
		start := time.Date(y, m, d, 1, 0, 0, 0, loc) // the day's first instant
		addAll(t, s, []queryLine{
			{"a", `{"type":"inference","id":"a","time":"` + start.UTC().Format(time.RFC3339) + `","status":{"outcome":"ok"}}`},
			{"b", `{"type":"inference","id":"b","time":"` + tc.at + `","status":{"outcome":"ok"}}`},
		})
		done := make(chan []string, 1)
		go func() {
			sum, err := s.Summary(time.Date(y, m, d-1, 12, 0, 0, 0, loc), time.Date(y, m, d+1, 12, 0, 0, 0, loc))
			if err != nil {
				t.Error(err)
			}
			var got []string
			for _, r := range sum.Groups.Day {
				got = append(got, fmt.Sprintf("%s %s %d", r.From.Format(time.RFC3339), r.To.Format(time.RFC3339), r.Events))
			}
			done <- got
		}()
		select {
		case got := <-done:
			if !slices.Equal(got, tc.want) {
				t.Errorf("%s: rows:\n%s\nwant\n%s", tc.zone, strings.Join(got, "\n"), strings.Join(tc.want, "\n"))
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("%s: the days of the window are still being listed after 10s", tc.zone)
		}
		if got, err := ParseTimeBound(y4m2d2(day), queryT0, loc); err != nil || !got.Equal(start) {
			t.Errorf("%s: the date %s read as %v, %v; want %v, the day's first instant", tc.zone, y4m2d2(day), got, err, start)
		}
	}
}

func y4m2d2(t time.Time) string { return t.Format(time.DateOnly) }
