package query

import (
	"encoding/json"
	"slices"
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
		model, key, outcome string
		total, ttft         float64 // ttft 0: none
		in, out             int64   // -1: null
	}
	rows := []row{
		{"llama", "k1:aa", "ok", 100, 10, 10, 20},
		{"llama", "k1:bb", "ok", 200, 20, 11, 21},
		{"llama", "k1:aa", "upstream_error", 300, 0, 12, -1},
		{"mist", "k1:aa", "ok", 400, 0, 13, 23},
		{"mist", "", "client_cancelled", 500, 50, -1, -1},
		{"", "", "rejected", 1, 0, -1, -1},
		{"llama", "k1:cc", "upstream_timeout", 700, 70, 14, 24},
	}
	lines := []queryLine{{"ls", `{"v":1,"type":"log_started","id":"00000000-0000-4000-8000-000000000000","time":"2026-11-23T09:59:59.000000000Z","source":{"host":"h","version":"t"},"log":{"origin":"h/1","seq":0,"prev":""}}`}}
	for i, r := range rows {
		ev := audit.Event{V: 1, Type: audit.TypeInference, ID: "00000000-0000-4000-8000-00000000000" + string(rune('1'+i)),
			Time: audit.Timestamp(queryT0.Add(time.Duration(i) * time.Second)), RequestID: "r" + string(rune('1'+i)),
			Method: "POST", Path: "/v1/chat/completions", Model: audit.Model{Name: r.model},
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

func TestStats(t *testing.T) {
	var p fastjson.Parser
	var s Stats
	ids := map[string]bool{}
	for _, l := range queryEvents() { // checkpoint and log_started are ignored
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
	got := s.Summary()
	pct := func(n int64, p50, p95, p99 float64) *Percentiles { return &Percentiles{n, p50, p95, p99} }
	// By hand, from the table in queryEvents' comment: totals sorted
	// 1 100 200 300 400 500 700: ranks ceil(.5*7)=4, ceil(.95*7)=7,
	// ceil(.99*7)=7. TTFT 10 20 50 70: ranks 2, 4, 4.
	want := StatsSummary{
		StatsGroup: StatsGroup{Events: 7, First: audit.Timestamp(queryT0), Last: audit.Timestamp(queryT0.Add(6 * time.Second)),
			Errors: 4, ErrorRate: 4.0 / 7,
			Outcomes: map[string]int64{"ok": 3, "upstream_error": 1, "client_cancelled": 1, "rejected": 1, "upstream_timeout": 1},
			Latency:  LatencyStats{Total: pct(7, 300, 700, 700), TTFT: pct(4, 20, 70, 70)},
			// 10+11+12+13+14; 20+21+23+24
			InputTokens: 60, OutputTokens: 88},
		Models: []ModelStats{
			// llama: r1 r2 r3 r7; totals 100 200 300 700 (ranks 2, 4, 4), TTFT 10 20 70 (ranks 2, 3, 3)
			{"llama", StatsGroup{Events: 4, First: audit.Timestamp(queryT0), Last: audit.Timestamp(queryT0.Add(6 * time.Second)),
				Errors: 2, ErrorRate: 0.5, Outcomes: map[string]int64{"ok": 2, "upstream_error": 1, "upstream_timeout": 1},
				Latency:     LatencyStats{Total: pct(4, 200, 700, 700), TTFT: pct(3, 20, 70, 70)},
				InputTokens: 47, OutputTokens: 65}},
			// mist: r4 r5; totals 400 500 (ranks 1, 2, 2), TTFT 50
			{"mist", StatsGroup{Events: 2, First: audit.Timestamp(queryT0.Add(3 * time.Second)), Last: audit.Timestamp(queryT0.Add(4 * time.Second)),
				Errors: 1, ErrorRate: 0.5, Outcomes: map[string]int64{"ok": 1, "client_cancelled": 1},
				Latency:     LatencyStats{Total: pct(2, 400, 500, 500), TTFT: pct(1, 50, 50, 50)},
				InputTokens: 13, OutputTokens: 23}},
			// no model: r6 alone, no TTFT, no tokens
			{"", StatsGroup{Events: 1, First: audit.Timestamp(queryT0.Add(5 * time.Second)), Last: audit.Timestamp(queryT0.Add(5 * time.Second)),
				Errors: 1, ErrorRate: 1, Outcomes: map[string]int64{"rejected": 1},
				Latency: LatencyStats{Total: pct(1, 1, 1, 1)}}},
		},
	}
	gotJSON, _ := json.MarshalIndent(got, "", " ")
	wantJSON, _ := json.MarshalIndent(want, "", " ")
	if string(gotJSON) != string(wantJSON) {
		t.Errorf("summary:\n%s\nwant:\n%s", gotJSON, wantJSON)
	}
	if again, _ := json.MarshalIndent(s.Summary(), "", " "); string(again) != string(gotJSON) {
		t.Errorf("a second Summary differs:\n%s", again)
	}

	// The JSON form, as query --stats --json prints it.
	var back map[string]any
	json.Unmarshal(gotJSON, &back)
	for _, k := range []string{"events", "first", "last", "errors", "error_rate", "outcomes", "latency_ms", "input_tokens", "output_tokens", "models"} {
		if _, ok := back[k]; !ok {
			t.Errorf("summary JSON lacks %q", k)
		}
	}
	if m := back["models"].([]any)[2].(map[string]any); m["latency_ms"].(map[string]any)["ttft"] != nil {
		t.Errorf("no-model ttft = %v, want null", m["latency_ms"])
	}
}

func TestStatsEmptyAndErrors(t *testing.T) {
	var s Stats
	b, _ := json.Marshal(s.Summary())
	if want := `{"events":0,"errors":0,"error_rate":0,"outcomes":{},"latency_ms":{"total":null,"ttft":null},"input_tokens":0,"output_tokens":0,"models":[]}`; string(b) != want {
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
	v, _ = p.Parse(`{"type":"inference","time":"2026-11-23T10:00:00Z","latency_ms":{"total":"5","ttft":null},"input":{"tokens":"3"},"status":{"outcome":"ok"}}`)
	if err := s.Add(v); err != nil {
		t.Fatal(err)
	}
	sum := s.Summary()
	if sum.Events != 1 || sum.Errors != 0 || sum.Latency.Total != nil || sum.Latency.TTFT != nil || sum.InputTokens != 0 {
		t.Errorf("summary %+v", sum.StatsGroup)
	}
	if !slices.Equal([]string{sum.Models[0].Model}, []string{""}) {
		t.Errorf("models %+v", sum.Models)
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
