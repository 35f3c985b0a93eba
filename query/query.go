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
	if ok, err := q.MatchParsed(v); !ok {
		return nil, err
	}
	return v, nil
}

// MatchParsed reports whether an event, parsed, is selected by the query:
// for a caller that parsed it for its own reasons. Its errors are
// MatchValue's.
func (q *Query) MatchParsed(v *fastjson.Value) (bool, error) {
	if v.Type() != fastjson.TypeObject {
		return false, errors.New("not a JSON object")
	}
	for i := range q.fields {
		if !q.fields[i].match(v) {
			return false, nil
		}
	}
	if !q.since.IsZero() || !q.until.IsZero() {
		t, err := EventTime(v)
		if err != nil {
			return false, err
		}
		if !q.since.IsZero() && t.Before(q.since) || !q.until.IsZero() && !t.Before(q.until) {
			return false, nil
		}
	}
	return true, nil
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
