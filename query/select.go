package query

import (
	"cmp"
	"fmt"
	"slices"
	"strings"
	"sync"

	"github.com/valyala/fastjson"
)

// Selector picks the one event that a command such as prove or show acts
// on: the events with a request id (a client chooses it, and may send the
// same one twice) and, if given, an event id (unique). It matches with the
// Query of Filter{RequestIDs, IDs}, as the query command does, and collects
// the distinct events it matched (by id: the same event read from several
// files, a spool and an aggregator's export of it, is one event), so that a
// command can refuse to choose among several on its own. It is safe for
// concurrent use.
type Selector struct {
	requestID, eventID string
	q                  *Query
	parsers            fastjson.ParserPool

	mu   sync.Mutex
	seen map[string]string // event id -> time, of the matched events
}

// Selected is an event a Selector matched: its id and its "time" as found.
type Selected struct {
	ID, Time string
}

// NewSelector returns a Selector of the events with request id requestID
// and event id eventID; an empty one does not restrict. Give at least one:
// with neither, every event matches.
func NewSelector(requestID, eventID string) *Selector {
	var f Filter
	if requestID != "" {
		f.RequestIDs = []string{requestID}
	}
	if eventID != "" {
		f.IDs = []string{eventID}
	}
	q, err := NewQuery(f)
	if err != nil {
		panic(err) // no time bound, no outcome: cannot fail
	}
	return &Selector{requestID: requestID, eventID: eventID, q: q, seen: map[string]string{}}
}

// Match reports whether event, one JSON object, is selected, noting it if
// so. An event that is not one (not JSON, not an object) is not selected.
func (s *Selector) Match(event []byte) bool {
	p := s.parsers.Get()
	defer s.parsers.Put(p)
	v, err := s.q.MatchValue(p, event)
	if err != nil || v == nil {
		return false
	}
	id := string(v.GetStringBytes("id"))
	t := string(v.GetStringBytes("time"))
	s.mu.Lock()
	s.seen[id] = t
	s.mu.Unlock()
	return true
}

// Matched returns the distinct events matched so far, by "time", then id.
func (s *Selector) Matched() []Selected {
	s.mu.Lock()
	defer s.mu.Unlock()
	m := make([]Selected, 0, len(s.seen))
	for id, t := range s.seen {
		m = append(m, Selected{ID: id, Time: t})
	}
	slices.SortFunc(m, func(a, b Selected) int {
		return cmp.Or(strings.Compare(a.Time, b.Time), strings.Compare(a.ID, b.ID))
	})
	return m
}

// Describe names what was asked for, as in `request_id "x" and id "y"`.
func (s *Selector) Describe() string {
	var parts []string
	if s.requestID != "" {
		parts = append(parts, fmt.Sprintf("request_id %q", s.requestID))
	}
	if s.eventID != "" {
		parts = append(parts, fmt.Sprintf("id %q", s.eventID))
	}
	return strings.Join(parts, " and ")
}
