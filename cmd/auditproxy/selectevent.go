package main

import (
	"fmt"
	"sort"
	"strings"
	"sync"

	"github.com/valyala/fastjson"
)

// requestSelector picks the events that prove and show act on: those with a
// request_id (a client chooses it, and may send the same one twice) and, if
// given, an event id (unique). It collects the distinct events it matched,
// so that a command can refuse to choose among several on its own.
type requestSelector struct {
	requestID, eventID string
	matchID            func(ev []byte) bool

	mu      sync.Mutex
	parsers fastjson.ParserPool
	seen    map[string]string // event id -> time, of the matched events
}

func newRequestSelector(requestID, eventID string) *requestSelector {
	s := &requestSelector{requestID: requestID, eventID: eventID, seen: map[string]string{}}
	switch {
	case requestID != "":
		s.matchID = requestIDMatcher(requestID)
	default:
		s.matchID = func([]byte) bool { return true }
	}
	return s
}

// match reports whether ev is selected, noting it if so. It is safe for
// concurrent use.
func (s *requestSelector) match(ev []byte) bool {
	if !s.matchID(ev) {
		return false
	}
	p := s.parsers.Get()
	defer s.parsers.Put(p)
	v, err := p.ParseBytes(ev)
	if err != nil {
		return false
	}
	id := string(v.GetStringBytes("id"))
	if s.eventID != "" && id != s.eventID {
		return false
	}
	s.mu.Lock()
	s.seen[id] = string(v.GetStringBytes("time"))
	s.mu.Unlock()
	return true
}

// describe names what was asked for, as in "request_id "x"".
func (s *requestSelector) describe() string {
	var parts []string
	if s.requestID != "" {
		parts = append(parts, fmt.Sprintf("request_id %q", s.requestID))
	}
	if s.eventID != "" {
		parts = append(parts, fmt.Sprintf("id %q", s.eventID))
	}
	return strings.Join(parts, " and ")
}

// check returns an error unless exactly one event was selected (the same
// event read from several files, a spool and an aggregator's export, is one
// event).
func (s *requestSelector) check(cmd string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch len(s.seen) {
	case 0:
		return fmt.Errorf("%s: no event with %s", cmd, s.describe())
	case 1:
		return nil
	}
	ids := make([]string, 0, len(s.seen))
	for id := range s.seen {
		ids = append(ids, id)
	}
	sort.Slice(ids, func(i, j int) bool { return s.seen[ids[i]] < s.seen[ids[j]] })
	var list []string
	for _, id := range ids {
		list = append(list, id+" ("+s.seen[id]+")")
	}
	return usageError{fmt.Sprintf("%s: %d events have %s (a client sent it more than once): %s; give --event-id to choose one",
		cmd, len(ids), s.describe(), strings.Join(list, ", "))}
}
