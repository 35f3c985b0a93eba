package report

import (
	"bytes"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/valyala/fastjson"

	"github.com/auditproxy/auditproxy/auditlog"
	"github.com/auditproxy/auditproxy/query"
)

func addEvents(t testing.TB, tl *Timeline, events ...string) {
	t.Helper()
	var p fastjson.Parser
	for _, e := range events {
		v, err := p.Parse(e)
		if err != nil {
			t.Fatalf("%s: %v", e, err)
		}
		tl.Add(v)
	}
}

func cp(at string, size int, extra string) string {
	return `{"type":"checkpoint","time":"` + at + `","log":{"origin":"o/1"},"checkpoint":{"origin":"o/1","size":` + strconv.Itoa(size) + `,"interval_ms":600000` + extra + `}}`
}

// TestCoverage: checkpoints at their cadence are one span; a gap after a
// final checkpoint is a stop, one a later checkpoint reports as an outage
// is an outage (not on the newest checkpoint, as verify takes it), any
// other gap is missing checkpoints; repeats count once.
func TestCoverage(t *testing.T) {
	var tl Timeline
	addEvents(t, &tl,
		cp("2026-11-20T10:00:00Z", 1, ""),
		cp("2026-11-20T10:10:00Z", 2, ""),
		cp("2026-11-20T10:10:00Z", 2, ""), // delivered twice
		cp("2026-11-20T10:20:00Z", 3, `,"final":true`),
		cp("2026-11-20T12:00:00Z", 5, ""),
		cp("2026-11-20T13:00:00Z", 7, `,"outage":{"since":"2026-11-20T12:05:00Z","reason":"disk full","error":"ENOSPC"}`),
		cp("2026-11-20T13:10:00Z", 8, ""),
		cp("2026-11-20T14:00:00Z", 9, ""),
		cp("2026-11-20T15:00:00Z", 11, `,"outage":{"since":"2026-11-20T14:01:00Z","reason":"disk full"}`),
	)
	c := tl.Coverage()
	if len(c) != 1 || c[0].Origin != "o/1" || c[0].Checkpoints != 8 {
		t.Fatalf("%+v", c)
	}
	var got []string
	for _, g := range c[0].Gaps {
		got = append(got, g.From.Format("15:04")+"-"+g.To.Format("15:04")+" "+g.Kind)
	}
	want := "10:20-12:00 stopped, 12:00-13:00 outage, 13:10-14:00 missing, 14:00-15:00 missing"
	if strings.Join(got, ", ") != want {
		t.Errorf("gaps %s, want %s", strings.Join(got, ", "), want)
	}
	if len(c[0].Spans) != 5 || !c[0].Spans[0].To.Equal(time.Date(2026, 11, 20, 10, 20, 0, 0, time.UTC)) {
		t.Errorf("spans %+v", c[0].Spans)
	}
	if !strings.Contains(c[0].Gaps[1].Detail, "disk full: ENOSPC") {
		t.Errorf("outage detail %q", c[0].Gaps[1].Detail)
	}
	if late := auditlog.CheckpointOverdue(10 * time.Minute); late != 15*time.Minute+time.Second {
		t.Errorf("CheckpointOverdue(10m) = %v", late)
	}
}

// TestChangesAreBoundedAndEscaped: text from events cannot drive the page
// (control characters quoted, markup escaped by the template), long text
// is cut, and past MaxChanges the rest are counted.
func TestChangesAreBoundedAndEscaped(t *testing.T) {
	tl := Timeline{Since: time.Date(2026, 11, 20, 0, 0, 0, 0, time.UTC)}
	addEvents(t, &tl,
		`{"type":"model_changed","time":"2026-11-19T23:59:59Z","details":{"model":"before the window"}}`,
		`{"type":"model_changed","time":"2026-11-20T01:00:00Z","log":{"origin":"o/1"},"details":{"model":"m\u001b[2J<b>","after":"`+strings.Repeat("x", 1000)+`"}}`,
		`{"type":"inference","time":"2026-11-20T01:00:00Z"}`,
		`{"type":"annotation","time":"2026-11-20T02:00:00Z","details":{"text":"restarted the node"}}`,
		`{"type":"something_new","time":"2026-11-20T03:00:00Z","details":{"a":1}}`,
	)
	changes, more := tl.Changes()
	if len(changes) != 3 || more != 0 {
		t.Fatalf("%d changes, %d more: %+v", len(changes), more, changes)
	}
	if w := changes[0].What; !strings.HasPrefix(w, `model m\x1b[2J<b>: weights unknown → xxx`) || !strings.HasSuffix(w, "… (1039 bytes)") || len(w) > MaxText+20 {
		t.Errorf("what %q", w)
	}
	if changes[1].What != "restarted the node" || changes[1].Who != "; unsigned" || changes[2].What != `{"a":1}` {
		t.Errorf("%+v", changes[1:])
	}
	var buf bytes.Buffer
	sum, _ := (&query.Stats{}).Summary(time.Time{}, time.Time{})
	sum.Window.TZ = "UTC"
	if err := Write(&buf, Data{Stats: sum, Timeline: &tl}); err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(buf.Bytes(), []byte("<b>")) || !bytes.Contains(buf.Bytes(), []byte(`&lt;b&gt;`)) {
		t.Error("markup from an event reached the page unescaped")
	}

	var many Timeline
	for range MaxChanges + 3 {
		addEvents(t, &many, `{"type":"gpu_changed","time":"2026-11-20T01:00:00Z","details":{}}`)
	}
	if c, more := many.Changes(); len(c) != MaxChanges || more != 3 {
		t.Errorf("%d changes, %d more", len(c), more)
	}
}

// FuzzTimeline: any event, however malformed, is taken or left without a
// panic, and the page made from it holds no markup of its own.
func FuzzTimeline(f *testing.F) {
	for _, s := range []string{
		`{"type":"annotation","time":"2026-11-20T02:00:00Z","details":{"record":{"type":"<script>","actor":"a"},"signatures":[{"principal":"p","role":"actor"}]}}`,
		`{"type":"checkpoint","time":"2026-11-20T02:00:00Z","checkpoint":{"origin":"<o>","size":-1,"interval_ms":-5,"outage":{"since":"x"}}}`,
		`{"type":"change_outcome","time":"2026-11-20T02:00:00Z","details":{"before":{"error_rate":"x"},"after":null}}`,
		`{"type":"log_started","time":"2026-11-20T02:00:00Z","log_started":{"committed_lost":9}}`,
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, event string) {
		var p fastjson.Parser
		v, err := p.Parse(event)
		if err != nil {
			return
		}
		var tl Timeline
		tl.Add(v)
		tl.Add(v)
		var buf bytes.Buffer
		sum, _ := (&query.Stats{}).Summary(time.Time{}, time.Time{})
		if err := Write(&buf, Data{Stats: sum, Timeline: &tl}); err != nil {
			t.Fatal(err)
		}
		if n := bytes.Count(buf.Bytes(), []byte("<script")); n != 0 {
			t.Fatalf("%d script elements in the page", n)
		}
	})
}

// TestEmptyDaysFold: one event with a wrong clock stretches the window to
// centuries; the page folds the runs of days without inferences, so it
// stays small, and the days with inferences keep their rows.
func TestEmptyDaysFold(t *testing.T) {
	st, _ := query.NewStats([]query.Grouping{query.ByDay}, time.UTC)
	var p fastjson.Parser
	for _, e := range []string{
		`{"type":"inference","id":"a","time":"2026-11-20T10:00:00Z","status":{"outcome":"ok"}}`,
		`{"type":"inference","id":"b","time":"2026-11-22T10:00:00Z","status":{"outcome":"ok"}}`,
		`{"type":"inference","id":"c","time":"2299-01-01T00:00:00Z","status":{"outcome":"ok"}}`,
	} {
		v, _ := p.Parse(e)
		if err := st.Add(v); err != nil {
			t.Fatal(err)
		}
	}
	sum, err := st.Summary(time.Time{}, time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	if len(sum.Groups.Day) < 99_000 {
		t.Fatalf("%d days", len(sum.Groups.Day))
	}
	var got []string
	for _, r := range dayRows(sum.Groups.Day) {
		got = append(got, fmt.Sprintf("%s/%d", r.Label[0], r.Folded))
	}
	want := "2026-11-20 (Fri) UTC/0,2026-11-21 (Sat) UTC/0,2026-11-22 (Sun) UTC/0,2026-11-23 to 2298-12-31: no inferences/" + strconv.Itoa(len(sum.Groups.Day)-4) + ",2299-01-01 (Sun) UTC/0"
	if strings.Join(got, ",") != want {
		t.Errorf("rows %s\nwant %s", strings.Join(got, ","), want)
	}
	var buf bytes.Buffer
	if err := Write(&buf, Data{Stats: sum, Timeline: &Timeline{}}); err != nil {
		t.Fatal(err)
	}
	if buf.Len() > 100_000 || !bytes.Contains(buf.Bytes(), []byte("days are too many to draw")) {
		t.Errorf("a page of %d bytes", buf.Len())
	}
}
