package query

import (
	"cmp"
	"encoding/binary"
	"fmt"
	"math"
	"slices"
	"strings"
	"time"

	"github.com/valyala/fastjson"

	"github.com/auditproxy/auditproxy/audit"
)

// Stats summarizes inference events; it ignores events of other types. Add
// each event once (drop repeats first, with an eventsrc.IDSet): Stats
// counts what it is given.
//
// The figures of a set of events (Figures) count them by outcome, in the
// classes change_outcome events use too (package change):
//
//   - ok: the whole answer reached the client;
//   - errors: the upstream failed (upstream_error, upstream_unreachable,
//     upstream_timeout);
//   - client_cancelled: the client gave up; not an error of the service;
//   - rejected: the sidecar refused the request; the upstream never saw it.
//
// error_rate is errors over ok plus errors (null when both are 0). Latency
// percentiles are of the ok events only, so that timeouts and give-ups do
// not pass for slow answers; TTFT of the ok events that were streamed.
// Token sums add what the upstream reported, and the events it reported no
// count for are counted apart (unknown, never taken as 0).
//
// Besides the totals, Stats groups the events by each Grouping asked for.
// Memory: per matching inference event, two float64s (latency, TTFT) for
// the totals and two for each grouping, for exact percentiles.
type Stats struct {
	by     []Grouping
	loc    *time.Location
	total  acc
	groups []map[string]*acc // one per by, keyed by groupKey.appendTo
	key    []byte            // scratch for the key of a row
}

// Grouping is a way to split the figures: by model version, API key id,
// outcome, or time bucket.
type Grouping string

// The groupings.
const (
	// ByModel groups by model name and weights checksum (a model version):
	// a name served by other weights after a rollout is another row.
	ByModel Grouping = "model"
	// ByKey groups by api_key_id (the keyed id; null without a key).
	ByKey Grouping = "key"
	// ByOutcome groups by status.outcome.
	ByOutcome Grouping = "outcome"
	// ByHour and ByDay group by the hour or the calendar day, in the Stats'
	// location, that the event's time falls in. Every bucket of the window
	// is listed, those without events too: a day with no record is
	// something an auditor needs to see.
	ByHour Grouping = "hour"
	ByDay  Grouping = "day"
)

// Groupings lists every Grouping, in the order Summary lists them.
var Groupings = []Grouping{ByModel, ByKey, ByOutcome, ByHour, ByDay}

// MaxTimeBuckets bounds the rows a time grouping may have.
const MaxTimeBuckets = 100_000

// NewStats returns a Stats that groups by each of by (none: totals only),
// with time buckets and times in loc.
func NewStats(by []Grouping, loc *time.Location) (*Stats, error) {
	s := &Stats{loc: loc}
	for _, g := range by {
		if !slices.Contains(Groupings, g) {
			return nil, fmt.Errorf("cannot group by %q: want one of %s", g, joinGroupings())
		}
		if slices.Contains(s.by, g) {
			continue
		}
		s.by = append(s.by, g)
		s.groups = append(s.groups, map[string]*acc{})
	}
	return s, nil
}

func joinGroupings() string {
	names := make([]string, len(Groupings))
	for i, g := range Groupings {
		names[i] = string(g)
	}
	return strings.Join(names, ", ")
}

// groupKey names one row of a grouping: a and b are the model name and
// checksum, the key id or the outcome; t the bucket's start in unix
// nanoseconds; null says the member was null or absent. Its fields are
// the event's bytes until the row is made.
type groupKey struct {
	a, b []byte
	null bool
	t    int64
}

// appendTo writes the key as a map key: no two keys write the same bytes.
func (k *groupKey) appendTo(dst []byte) []byte {
	dst = binary.BigEndian.AppendUint64(dst, uint64(k.t))
	if k.null {
		dst = append(dst, 0)
	} else {
		dst = append(dst, 1)
	}
	dst = binary.BigEndian.AppendUint32(dst, uint32(len(k.a)))
	dst = append(dst, k.a...)
	return append(dst, k.b...)
}

type acc struct {
	// label names the row (a grouping's), copied from its first event.
	label struct {
		a, b string
		null bool
		t    int64
	}
	events, ok, errors, cancelled, rejected int64
	outcomes                                []outcomeCount // few: a slice, so counting allocates nothing
	first, last                             time.Time
	latency, ttft                           []float64
	in, out                                 int64
	inUnknown, outUnknown                   int64
}

type outcomeCount struct {
	outcome string
	n       int64
}

// sample is what Add reads from one event.
type sample struct {
	t             time.Time
	outcome       []byte
	latency, ttft float64
	hasLatency    bool
	hasTTFT       bool
	in, out       int64
	hasIn, hasOut bool
}

// Add counts one event, given parsed. An inference event must have an RFC
// 3339 "time"; a member it lacks, or has in another type, is left out of
// the figures it feeds, not guessed. An event of another type is ignored
// and Add returns nil.
func (s *Stats) Add(v *fastjson.Value) error {
	if string(v.GetStringBytes("type")) != audit.TypeInference {
		return nil
	}
	t, err := EventTime(v)
	if err != nil {
		return err
	}
	sm := sample{t: t, outcome: v.GetStringBytes("status", "outcome")}
	sm.latency, sm.hasLatency = number(v, "latency_ms", "total")
	sm.ttft, sm.hasTTFT = number(v, "latency_ms", "ttft")
	var f float64
	if f, sm.hasIn = number(v, "input", "tokens"); sm.hasIn {
		sm.in = int64(f)
	}
	if f, sm.hasOut = number(v, "output", "tokens"); sm.hasOut {
		sm.out = int64(f)
	}
	s.total.add(&sm)
	for i, g := range s.by {
		var k groupKey
		switch g {
		case ByModel:
			k.a = v.GetStringBytes("model", "name")
			c := v.Get("model", "checksum")
			if c == nil || c.Type() != fastjson.TypeString || len(c.GetStringBytes()) == 0 || string(c.GetStringBytes()) == "pending" {
				k.null = true // unknown to the sidecar then, or still being hashed
			} else {
				k.b = c.GetStringBytes()
			}
		case ByKey:
			if id := v.Get("api_key_id"); id != nil && id.Type() == fastjson.TypeString {
				k.a = id.GetStringBytes()
			} else {
				k.null = true
			}
		case ByOutcome:
			k.a = v.GetStringBytes("status", "outcome")
		case ByHour, ByDay:
			k.t = s.bucketStart(g, t).UnixNano()
		}
		s.key = k.appendTo(s.key[:0])
		a := s.groups[i][string(s.key)] // no allocation to look up
		if a == nil {
			a = &acc{}
			a.label.a, a.label.b, a.label.null, a.label.t = string(k.a), string(k.b), k.null, k.t
			s.groups[i][string(s.key)] = a
		}
		a.add(&sm)
	}
	return nil
}

func (a *acc) add(sm *sample) {
	if a.events == 0 || sm.t.Before(a.first) {
		a.first = sm.t
	}
	if a.events == 0 || sm.t.After(a.last) {
		a.last = sm.t
	}
	a.events++
	a.count(sm.outcome, 1)
	switch audit.Outcome(sm.outcome) { // no allocation: a conversion for a comparison
	case audit.OutcomeOK:
		a.ok++
		if sm.hasLatency {
			a.latency = append(a.latency, sm.latency)
		}
		if sm.hasTTFT {
			a.ttft = append(a.ttft, sm.ttft)
		}
	case audit.OutcomeUpstreamError, audit.OutcomeUpstreamUnreachable, audit.OutcomeUpstreamTimeout:
		a.errors++
	case audit.OutcomeClientCancelled:
		a.cancelled++
	case audit.OutcomeRejected:
		a.rejected++
	}
	if sm.hasIn {
		a.in += sm.in
	} else {
		a.inUnknown++
	}
	if sm.hasOut {
		a.out += sm.out
	} else {
		a.outUnknown++
	}
}

func (a *acc) count(outcome []byte, n int64) {
	for i := range a.outcomes {
		if a.outcomes[i].outcome == string(outcome) {
			a.outcomes[i].n += n
			return
		}
	}
	a.outcomes = append(a.outcomes, outcomeCount{string(outcome), n})
}

func number(v *fastjson.Value, path ...string) (float64, bool) {
	m := v.Get(path...)
	if m == nil || m.Type() != fastjson.TypeNumber {
		return 0, false
	}
	f, err := m.Float64()
	return f, err == nil && !math.IsNaN(f) && !math.IsInf(f, 0)
}

// bucketStart is the instant the hour or day holding t began, on the
// clock of s.loc: across a change of time, the two 01:00 hours of the
// night clocks go back are two buckets, and a day may be 23 or 25 hours.
func (s *Stats) bucketStart(g Grouping, t time.Time) time.Time {
	l := t.In(s.loc)
	if g == ByDay {
		y, m, d := l.Date()
		return dayStart(y, m, d, s.loc)
	}
	h := l.Add(-time.Duration(l.Minute())*time.Minute - time.Duration(l.Second())*time.Second - time.Duration(l.Nanosecond()))
	if zoneStart, _ := l.ZoneBounds(); h.Before(zoneStart) {
		// The clocks moved by other than whole hours within this hour
		// (Australia/Lord_Howe's half hour): it began when they moved.
		h = zoneStart
	}
	return h
}

// dayStart is the first instant of the day y-m-d (normalized, as by
// time.Date) in loc: its midnight, or, where the clocks skip midnight
// (24:00 to 01:00: America/Santiago, America/Havana), the end of the skip,
// where time.Date gives an instant of the day before.
func dayStart(y int, m time.Month, d int, loc *time.Location) time.Time {
	t := time.Date(y, m, d, 0, 0, 0, 0, loc)
	if t.Day() != time.Date(y, m, d, 0, 0, 0, 0, time.UTC).Day() {
		if _, end := t.ZoneBounds(); end.After(t) {
			t = end
		}
	}
	return t
}

// bucketEnd is the start of the bucket after the one starting at start.
func (s *Stats) bucketEnd(g Grouping, start time.Time) time.Time {
	if g == ByDay {
		y, m, d := start.Date()
		return dayStart(y, m, d+1, s.loc)
	}
	return s.bucketStart(ByHour, start.Add(time.Hour+time.Minute)) // the next hour, even one of 30 or 90 minutes
}

// Summary is what Stats found, over a window: the one asked for, whose
// open sides (zero times) are closed by the first and the last event.
type Summary struct {
	Window Window `json:"window"`
	Figures
	// Groups has a list per grouping asked for, by name; see the row
	// types for their order.
	Groups Groups `json:"groups"`
}

// Window is the time range a summary covers.
type Window struct {
	// Since and Until are the bounds asked for (Since inclusive, Until
	// exclusive); null when that side was left open.
	Since *time.Time `json:"since"`
	Until *time.Time `json:"until"`
	// First and Last are the times of the earliest and the latest event
	// counted; null without events.
	First *time.Time `json:"first"`
	Last  *time.Time `json:"last"`
	// TZ names the location times are shown in and time buckets are cut in.
	TZ string `json:"tz"`
}

// Groups holds the rows of each grouping asked for; a grouping not asked
// for is absent (nil), one asked for with no events is an empty list.
type Groups struct {
	Model   []ModelRow   `json:"model,omitzero"`
	Key     []KeyRow     `json:"key,omitzero"`
	Outcome []OutcomeRow `json:"outcome,omitzero"`
	Hour    []TimeRow    `json:"hour,omitzero"`
	Day     []TimeRow    `json:"day,omitzero"`
}

// ModelRow is one model version: most events first, then by name and
// checksum.
type ModelRow struct {
	Model string `json:"model"`
	// Checksum is the weights' model.checksum; null when the sidecar did
	// not know it (or was still hashing them).
	Checksum *string `json:"checksum"`
	Figures
}

// KeyRow is one API key id, most events first; APIKeyID is null for the
// requests that carried no key.
type KeyRow struct {
	APIKeyID *string `json:"api_key_id"`
	Figures
}

// OutcomeRow is one status.outcome, most events first.
type OutcomeRow struct {
	Outcome string `json:"outcome"`
	Figures
}

// TimeRow is one hour or day, [From, To), oldest first.
type TimeRow struct {
	From time.Time `json:"from"`
	To   time.Time `json:"to"`
	Figures
}

// Figures are the figures of a set of inference events (see Stats).
type Figures struct {
	Events          int64 `json:"events"`
	OK              int64 `json:"ok"`
	Errors          int64 `json:"errors"`
	ClientCancelled int64 `json:"client_cancelled"`
	Rejected        int64 `json:"rejected"`
	// ErrorRate is Errors / (OK + Errors); null when both are 0.
	ErrorRate *float64 `json:"error_rate"`
	// Outcomes counts the events by status.outcome, those not known to
	// this release too.
	Outcomes map[string]int64 `json:"outcomes"`
	// Latency has the percentiles of the ok events' latency_ms.total and
	// latency_ms.ttft.
	Latency LatencyStats `json:"latency_ms"`
	// InputTokens and OutputTokens sum input.tokens and output.tokens
	// where the upstream reported them; the Unknown counts are the events
	// it did not report them for.
	InputTokens         int64 `json:"input_tokens"`
	OutputTokens        int64 `json:"output_tokens"`
	InputTokensUnknown  int64 `json:"input_tokens_unknown"`
	OutputTokensUnknown int64 `json:"output_tokens_unknown"`
}

// LatencyStats are latency percentiles in milliseconds; a member is nil
// when no event had that latency (TTFT exists for streamed responses only).
type LatencyStats struct {
	Total *Percentiles `json:"total"`
	TTFT  *Percentiles `json:"ttft"`
}

// Percentiles are exact nearest-rank percentiles of Count samples: the
// p-th percentile is the ceil(p/100*Count)-th smallest sample, so it is
// always a value that was recorded.
type Percentiles struct {
	Count int64   `json:"count"`
	P50   float64 `json:"p50"`
	P95   float64 `json:"p95"`
	P99   float64 `json:"p99"`
}

// Summary computes the figures of the events added so far over the window
// [since, until) asked for (a zero time: that side open). It sorts the
// samples it keeps; Add may still be called after it. It fails only when
// a time grouping would have more than MaxTimeBuckets rows.
func (s *Stats) Summary(since, until time.Time) (Summary, error) {
	sum := Summary{Figures: s.total.figures(), Window: Window{TZ: s.loc.String()}}
	in := func(t time.Time) *time.Time { t = t.In(s.loc); return &t }
	if !since.IsZero() {
		sum.Window.Since = in(since)
	}
	if !until.IsZero() {
		sum.Window.Until = in(until)
	}
	if s.total.events > 0 {
		sum.Window.First, sum.Window.Last = in(s.total.first), in(s.total.last)
	}
	for i, g := range s.by {
		rows := s.groups[i]
		switch g {
		case ByModel:
			sum.Groups.Model = []ModelRow{}
			for _, a := range rows {
				r := ModelRow{Model: a.label.a, Figures: a.figures()}
				if !a.label.null {
					r.Checksum = &a.label.b
				}
				sum.Groups.Model = append(sum.Groups.Model, r)
			}
			slices.SortFunc(sum.Groups.Model, func(x, y ModelRow) int {
				return cmp.Or(cmp.Compare(y.Events, x.Events), strings.Compare(x.Model, y.Model), cmp.Compare(deref(x.Checksum), deref(y.Checksum)))
			})
		case ByKey:
			sum.Groups.Key = []KeyRow{}
			for _, a := range rows {
				r := KeyRow{Figures: a.figures()}
				if !a.label.null {
					r.APIKeyID = &a.label.a
				}
				sum.Groups.Key = append(sum.Groups.Key, r)
			}
			slices.SortFunc(sum.Groups.Key, func(x, y KeyRow) int {
				return cmp.Or(cmp.Compare(y.Events, x.Events), cmp.Compare(deref(x.APIKeyID), deref(y.APIKeyID)))
			})
		case ByOutcome:
			sum.Groups.Outcome = []OutcomeRow{}
			for _, a := range rows {
				sum.Groups.Outcome = append(sum.Groups.Outcome, OutcomeRow{Outcome: a.label.a, Figures: a.figures()})
			}
			slices.SortFunc(sum.Groups.Outcome, func(x, y OutcomeRow) int {
				return cmp.Or(cmp.Compare(y.Events, x.Events), strings.Compare(x.Outcome, y.Outcome))
			})
		case ByHour, ByDay:
			tr, err := s.timeRows(g, rows, since, until)
			if err != nil {
				return Summary{}, err
			}
			if g == ByHour {
				sum.Groups.Hour = tr
			} else {
				sum.Groups.Day = tr
			}
		}
	}
	return sum, nil
}

// deref orders a null before every string.
func deref(s *string) string {
	if s == nil {
		return ""
	}
	return "\x00" + *s
}

// timeRows lists every bucket from the one holding the window's start to
// the one holding its end, empty ones too.
func (s *Stats) timeRows(g Grouping, rows map[string]*acc, since, until time.Time) ([]TimeRow, error) {
	byStart := make(map[int64]*acc, len(rows))
	for _, a := range rows {
		byStart[a.label.t] = a
	}
	out := []TimeRow{}
	if since.IsZero() {
		if s.total.events == 0 {
			return out, nil
		}
		since = s.total.first
	}
	last := until.Add(-1) // exclusive
	if until.IsZero() {
		if s.total.events == 0 {
			return out, nil
		}
		last = s.total.last
	}
	if last.Before(since) {
		return out, nil
	}
	if n := last.Sub(since) / time.Hour; g == ByHour && n > MaxTimeBuckets || g == ByDay && n/24 > MaxTimeBuckets {
		return nil, fmt.Errorf("the window from %s to %s has more than %d %ss: give a narrower --since/--until, or group by day", since.Format(time.RFC3339), last.Format(time.RFC3339), MaxTimeBuckets, g)
	}
	for start := s.bucketStart(g, since); !start.After(last); {
		end := s.bucketEnd(g, start)
		if !end.After(start) {
			return nil, fmt.Errorf("the %s from %s has no end in %s", g, start.Format(time.RFC3339), s.loc) // cannot happen; not a loop forever
		}
		r := TimeRow{From: start, To: end}
		if a := byStart[start.UnixNano()]; a != nil {
			r.Figures = a.figures()
		} else {
			r.Figures = (&acc{}).figures()
		}
		out = append(out, r)
		start = end
	}
	return out, nil
}

func (a *acc) figures() Figures {
	f := Figures{Events: a.events, OK: a.ok, Errors: a.errors, ClientCancelled: a.cancelled, Rejected: a.rejected,
		Outcomes: map[string]int64{}, InputTokens: a.in, OutputTokens: a.out,
		InputTokensUnknown: a.inUnknown, OutputTokensUnknown: a.outUnknown}
	for _, o := range a.outcomes {
		f.Outcomes[o.outcome] = o.n
	}
	if d := a.ok + a.errors; d > 0 {
		r := float64(a.errors) / float64(d)
		f.ErrorRate = &r
	}
	f.Latency.Total = percentiles(a.latency)
	f.Latency.TTFT = percentiles(a.ttft)
	return f
}

// percentiles sorts samples and returns their nearest-rank percentiles, or
// nil for no samples.
func percentiles(samples []float64) *Percentiles {
	if len(samples) == 0 {
		return nil
	}
	slices.Sort(samples)
	return &Percentiles{Count: int64(len(samples)),
		P50: NearestRank(samples, 50), P95: NearestRank(samples, 95), P99: NearestRank(samples, 99)}
}

// NearestRank returns the p-th percentile (0 < p <= 100) of sorted, a
// non-empty ascending slice: its ceil(p/100*len)-th smallest element.
func NearestRank(sorted []float64, p int) float64 {
	n := len(sorted)
	rank := (p*n + 99) / 100 // ceil(p*n/100), exact in integers
	if rank < 1 {
		rank = 1
	}
	if rank > n {
		rank = n
	}
	return sorted[rank-1]
}
