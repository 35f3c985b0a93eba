// Package query selects audit events (Filter, Query; Selector for the one
// event a command acts on) and summarizes inference events (Stats): the
// reading side of the events, for the query, show and prove commands and
// anything else that scans logs. Package eventsrc reads the events, drops
// their repeats and sorts them.
package query

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"time"

	"github.com/auditproxy/auditproxy/audit"
	"github.com/valyala/fastjson"
)

// Filter says which events a Query selects. Every criterion that is set must
// hold (AND); within one list, any of its values will do (OR). The zero
// Filter selects every event.
//
// The string criteria compare exact, whole values of one member of the
// event, after JSON unescaping. A criterion on a member an event lacks
// selects it only through the empty value "": Models: [""] selects events
// without a model name (checkpoints among them), APIKeyIDs: [""] events
// whose api_key_id is null or absent.
type Filter struct {
	// Since and Until bound the event's "time": Since <= time < Until
	// (Since inclusive, Until exclusive). A zero time leaves its side open.
	Since, Until time.Time
	// Types selects on "type": TypeInference, TypeCheckpoint, "log_started".
	Types []string
	// Models selects on "model"."name", the model the request asked for.
	Models []string
	// APIKeyIDs selects on "api_key_id": the keyed id of a bearer token
	// ("k1:<hex>", see package hashing), never the token itself.
	APIKeyIDs []string
	// RequestIDs selects on "request_id" (the X-Request-Id of the request).
	// A client chooses it, and may send the same one twice.
	RequestIDs []string
	// IDs selects on "id", the event's own id (unique, but read twice when
	// shipped twice).
	IDs []string
	// Outcomes selects on "status"."outcome"; each must be one of audit.Outcomes().
	Outcomes []audit.Outcome
	// Resources selects change records and their outcomes on the resource
	// changed: "details"."record"."resource" of an annotation, or
	// "details"."change"."resource" of a change_outcome.
	Resources []string
}

// Query is a compiled Filter. It keeps no state between events and is safe
// for concurrent use; the fastjson.Parser given to each call is not.
type Query struct {
	since, until time.Time
	fields       []fieldFilter
}

// fieldFilter is one string criterion: the value at path, or at any of
// paths when there are several.
type fieldFilter struct {
	path   []string
	paths  [][]string
	values [][]byte
	// needles are the values as JSON strings ("value", quotes included),
	// for the raw pre-check; nil when a value is "" (which also matches an
	// absent member, so the raw bytes prove nothing). anchors are the
	// index of each needle's rarest byte (see rareByte).
	needles [][]byte
	anchors []int
}

// NewQuery compiles f. It fails when an outcome is unknown or when Since is
// not before Until.
func NewQuery(f Filter) (*Query, error) {
	for _, o := range f.Outcomes {
		if _, err := audit.ParseOutcome(string(o)); err != nil {
			return nil, err
		}
	}
	if !f.Since.IsZero() && !f.Until.IsZero() && !f.Since.Before(f.Until) {
		return nil, fmt.Errorf("since %s is not before until %s",
			f.Since.Format(time.RFC3339Nano), f.Until.Format(time.RFC3339Nano))
	}
	q := &Query{since: f.Since, until: f.Until}
	outcomes := make([]string, len(f.Outcomes))
	for i, o := range f.Outcomes {
		outcomes[i] = string(o)
	}
	// Most selective first: the first criterion whose value is absent from
	// the raw bytes ends the pre-check.
	for _, c := range []struct {
		values []string
		path   []string
	}{
		{f.IDs, []string{"id"}},
		{f.RequestIDs, []string{"request_id"}},
		{f.APIKeyIDs, []string{"api_key_id"}},
		{f.Models, []string{"model", "name"}},
		{outcomes, []string{"status", "outcome"}},
		{f.Types, []string{"type"}},
		{f.Resources, nil},
	} {
		if len(c.values) == 0 {
			continue
		}
		ff := fieldFilter{path: c.path}
		if c.path == nil {
			ff.paths = [][]string{{"details", "record", "resource"}, {"details", "change", "resource"}}
		}
		usable := true
		for _, v := range c.values {
			ff.values = append(ff.values, []byte(v))
			usable = usable && v != ""
			needle := []byte(`"` + v + `"`)
			ff.needles = append(ff.needles, needle)
			ff.anchors = append(ff.anchors, rareByte(needle))
		}
		if !usable {
			ff.needles, ff.anchors = nil, nil
		}
		q.fields = append(q.fields, ff)
	}
	return q, nil
}

// Match reports whether event, one JSON object, is selected by the query.
// See MatchValue.
func (q *Query) Match(p *fastjson.Parser, event []byte) (bool, error) {
	v, err := q.MatchValue(p, event)
	return v != nil, err
}

// MatchValue returns the parsed event when event, one JSON object, is
// selected by the query, and nil when it is not. The value lives in p's
// memory: it is valid until p parses again.
//
// Before parsing, it rules events out from their raw bytes: an event that
// holds no backslash has no JSON escapes, so each of its string values
// appears verbatim between quotes, and one in which no wanted value of a
// string criterion so appears cannot match. Such an event is not parsed, so
// it is not checked for being JSON either: an error (not JSON, not an
// object, a "time" that is not an RFC 3339 time when the query bounds time)
// is returned only for events the pre-check lets through.
func (q *Query) MatchValue(p *fastjson.Parser, event []byte) (*fastjson.Value, error) {
	escaped := -1 // unknown; then 0 or 1
	for i := range q.fields {
		ff := &q.fields[i]
		if ff.needles == nil || ff.containsAny(event) {
			continue
		}
		if escaped < 0 {
			escaped = 0
			if bytes.IndexByte(event, '\\') >= 0 {
				escaped = 1
			}
		}
		if escaped == 0 {
			return nil, nil
		}
		break // with escapes, the raw bytes prove nothing
	}
	v, err := p.ParseBytes(event)
	if err != nil {
		return nil, fmt.Errorf("not JSON: %w", err)
	}
	if v.Type() != fastjson.TypeObject {
		return nil, errors.New("not a JSON object")
	}
	for i := range q.fields {
		if !q.fields[i].match(v) {
			return nil, nil
		}
	}
	if !q.since.IsZero() || !q.until.IsZero() {
		t, err := EventTime(v)
		if err != nil {
			return nil, err
		}
		if !q.since.IsZero() && t.Before(q.since) || !q.until.IsZero() && !t.Before(q.until) {
			return nil, nil
		}
	}
	return v, nil
}

func (ff *fieldFilter) containsAny(event []byte) bool {
	for i, n := range ff.needles {
		if containsAnchored(event, n, ff.anchors[i]) {
			return true
		}
	}
	return false
}

// rareByte returns the index of the byte of needle likely rarest in audit
// events, which are mostly lowercase hex, digits, JSON punctuation and
// snake_case keys: better an uppercase letter or punctuation such as -, then
// another lowercase letter.
func rareByte(needle []byte) int {
	rank := func(c byte) int {
		switch {
		case c >= '0' && c <= '9', c >= 'a' && c <= 'f', strings.IndexByte(`":,{} `, c) >= 0:
			return 2
		case c >= 'g' && c <= 'z', c == '_', c == '.':
			return 1
		}
		return 0
	}
	best := 0
	for i := range needle {
		if rank(needle[i]) < rank(needle[best]) {
			best = i
		}
	}
	return best
}

// containsAnchored is bytes.Contains(s, needle), searching for needle[k]
// first: bytes.Index looks for needle[0], here a quote, and a request id
// such as a UUID goes on with hex digits, which every event holds hundreds
// of.
func containsAnchored(s, needle []byte, k int) bool {
	c := needle[k]
	for i := k; i < len(s); i++ {
		j := bytes.IndexByte(s[i:], c)
		if j < 0 {
			return false
		}
		i += j
		if start := i - k; start+len(needle) <= len(s) && bytes.Equal(s[start:start+len(needle)], needle) {
			return true
		}
	}
	return false
}

func (ff *fieldFilter) match(v *fastjson.Value) bool {
	if ff.paths != nil {
		for _, p := range ff.paths {
			if (&fieldFilter{path: p, values: ff.values}).match(v) {
				return true
			}
		}
		return false
	}
	var got []byte // absent and null read as ""
	if m := v.Get(ff.path...); m != nil {
		switch m.Type() {
		case fastjson.TypeString:
			got = m.GetStringBytes()
		case fastjson.TypeNull:
		default:
			return false
		}
	}
	for _, want := range ff.values {
		if bytes.Equal(got, want) {
			return true
		}
	}
	return false
}

// EventTime returns an event's "time", which must be an RFC 3339 time.
func EventTime(v *fastjson.Value) (time.Time, error) {
	m := v.Get("time")
	if m == nil {
		return time.Time{}, errors.New(`event has no "time"`)
	}
	b, err := m.StringBytes()
	if err != nil {
		return time.Time{}, errors.New(`event "time" is not a string`)
	}
	return audit.ParseTime(b)
}

// Stats summarizes inference events; it ignores events of other types. Add
// each event once (drop repeats first, with an eventsrc.IDSet): Stats counts what it
// is given. It keeps two float64s per event (total latency, and TTFT for
// streamed events) for exact percentiles, and sums and counts per model. The
// zero Stats is empty and ready to use.
type Stats struct {
	models map[string]*statsAcc
}

type statsAcc struct {
	events, errors int64
	outcomes       []outcomeCount // few: a slice, so counting allocates nothing
	first, last    time.Time
	total, ttft    []float64
	in, out        int64
}

// Add counts one event, given parsed. An inference event must have an RFC
// 3339 "time"; every other member it lacks is left out of the figures: no
// latency_ms.total, no latency sample; no ttft (a response that was not
// streamed), no TTFT sample; null token counts (the upstream reported
// none), nothing added to the sums. An event of another type is ignored
// and Add returns nil.
func (s *Stats) Add(v *fastjson.Value) error {
	if string(v.GetStringBytes("type")) != audit.TypeInference {
		return nil
	}
	t, err := EventTime(v)
	if err != nil {
		return err
	}
	if s.models == nil {
		s.models = map[string]*statsAcc{}
	}
	model := v.GetStringBytes("model", "name")
	a := s.models[string(model)]
	if a == nil {
		a = &statsAcc{}
		s.models[string(model)] = a
	}
	if a.events == 0 || t.Before(a.first) {
		a.first = t
	}
	if a.events == 0 || t.After(a.last) {
		a.last = t
	}
	a.events++
	outcome := v.GetStringBytes("status", "outcome")
	a.count(outcome, 1)
	if string(outcome) != string(audit.OutcomeOK) {
		a.errors++
	}
	if f, ok := number(v, "latency_ms", "total"); ok {
		a.total = append(a.total, f)
	}
	if f, ok := number(v, "latency_ms", "ttft"); ok {
		a.ttft = append(a.ttft, f)
	}
	if f, ok := number(v, "input", "tokens"); ok {
		a.in += int64(f)
	}
	if f, ok := number(v, "output", "tokens"); ok {
		a.out += int64(f)
	}
	return nil
}

type outcomeCount struct {
	outcome string
	n       int64
}

func (a *statsAcc) count(outcome []byte, n int64) {
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

// StatsSummary is what Stats found: the figures over all inference events,
// then the same per model.
type StatsSummary struct {
	StatsGroup
	// Models has one entry per model name (the empty name for events
	// without one), most events first, then by name.
	Models []ModelStats `json:"models"`
}

// ModelStats are the figures of one model's events.
type ModelStats struct {
	Model string `json:"model"`
	StatsGroup
}

// StatsGroup holds the figures of a set of inference events.
type StatsGroup struct {
	// Events counts the events.
	Events int64 `json:"events"`
	// First and Last are the earliest and the latest event time; absent
	// when there are no events.
	First audit.Timestamp `json:"first,omitzero"`
	Last  audit.Timestamp `json:"last,omitzero"`
	// Errors counts the events whose status.outcome is not "ok";
	// ErrorRate is Errors/Events (0 without events).
	Errors    int64   `json:"errors"`
	ErrorRate float64 `json:"error_rate"`
	// Outcomes counts the events by status.outcome.
	Outcomes map[string]int64 `json:"outcomes"`
	// Latency has the percentiles of latency_ms.total and latency_ms.ttft.
	Latency LatencyStats `json:"latency_ms"`
	// InputTokens and OutputTokens sum input.tokens and output.tokens
	// where the upstream reported them.
	InputTokens  int64 `json:"input_tokens"`
	OutputTokens int64 `json:"output_tokens"`
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

// Summary computes the figures of the events added so far. It sorts the
// samples it keeps; Add may still be called after it.
func (s *Stats) Summary() StatsSummary {
	sum := StatsSummary{Models: []ModelStats{}}
	var all statsAcc
	for name, a := range s.models {
		sum.Models = append(sum.Models, ModelStats{Model: name, StatsGroup: a.group()})
		if all.events == 0 || a.first.Before(all.first) {
			all.first = a.first
		}
		if all.events == 0 || a.last.After(all.last) {
			all.last = a.last
		}
		all.events += a.events
		all.errors += a.errors
		all.in += a.in
		all.out += a.out
		all.total = append(all.total, a.total...)
		all.ttft = append(all.ttft, a.ttft...)
		for _, o := range a.outcomes {
			all.count([]byte(o.outcome), o.n)
		}
	}
	sum.StatsGroup = all.group()
	slices.SortFunc(sum.Models, func(a, b ModelStats) int {
		if a.Events != b.Events {
			if a.Events > b.Events {
				return -1
			}
			return 1
		}
		return strings.Compare(a.Model, b.Model)
	})
	return sum
}

func (a *statsAcc) group() StatsGroup {
	g := StatsGroup{Events: a.events, Errors: a.errors, Outcomes: map[string]int64{},
		InputTokens: a.in, OutputTokens: a.out}
	for _, o := range a.outcomes {
		g.Outcomes[o.outcome] = o.n
	}
	if a.events > 0 {
		g.First, g.Last = audit.Timestamp(a.first.UTC()), audit.Timestamp(a.last.UTC())
		g.ErrorRate = float64(a.errors) / float64(a.events)
	}
	g.Latency.Total = percentiles(a.total)
	g.Latency.TTFT = percentiles(a.ttft)
	return g
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
