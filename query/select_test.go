package query

import (
	"slices"
	"testing"

	"github.com/valyala/fastjson"
)

// nonEmpty is a filter's list of s, or none for "".
func nonEmpty(s string) []string {
	if s == "" {
		return nil
	}
	return []string{s}
}

// TestSelector: the events prove and show act on, matched as query's
// --request-id matches them: by the unescaped value, however an encoder
// wrote it.
func TestSelector(t *testing.T) {
	events := []string{
		`{"id":"e1","time":"2026-11-23T10:00:01Z","request_id":"dup"}`,
		`{"id":"e2","time":"2026-11-23T10:00:00Z","request_id":"dup"}`,
		`{"id":"e3","time":"2026-11-23T10:00:02Z","request_id":"one"}`,
		`{"id":"e3","time":"2026-11-23T10:00:02Z","request_id":"one"}`, // read twice: one event
		`{"id":"e4","time":"2026-11-23T10:00:03Z","request_id":"it\u0027s"}`,
		`{"id":"e5","time":"2026-11-23T10:00:04Z","request_id":"caf\u00e9"}`,
		`{"id":"e6","time":"2026-11-23T10:00:05Z","request_id":"a\/b"}`,
		`{"id":"e7","time":"2026-11-23T10:00:06Z","request_id":null}`,
		`{"id":"e8","time":"2026-11-23T10:00:07Z","request_id":7}`,
		`{"id":"e9","time":"2026-11-23T10:00:08Z"}`,
		`not JSON "one"`,
		`["one"]`,
	}
	for _, tc := range []struct {
		requestID, eventID string
		want               []string // ids matched, by time
		describe           string
	}{
		{"dup", "", []string{"e2", "e1"}, `request_id "dup"`},
		{"dup", "e1", []string{"e1"}, `request_id "dup" and id "e1"`},
		{"dup", "e3", nil, `request_id "dup" and id "e3"`},
		{"", "e3", []string{"e3"}, `id "e3"`},
		{"one", "", []string{"e3"}, `request_id "one"`},
		{"it's", "", []string{"e4"}, `request_id "it's"`},
		{"café", "", []string{"e5"}, `request_id "café"`},
		{"a/b", "", []string{"e6"}, `request_id "a/b"`},
		{"7", "", nil, `request_id "7"`},
		{"none", "", nil, `request_id "none"`},
	} {
		s := NewSelector(tc.requestID, tc.eventID)
		for _, ev := range events {
			s.Match([]byte(ev))
		}
		var got []string
		for _, m := range s.Matched() {
			got = append(got, m.ID)
		}
		if !slices.Equal(got, tc.want) || s.Describe() != tc.describe {
			t.Errorf("NewSelector(%q, %q): matched %q, %q; want %q, %q", tc.requestID, tc.eventID, got, s.Describe(), tc.want, tc.describe)
		}
		// The same ids through query's filter.
		q := mustQuery(t, Filter{RequestIDs: nonEmpty(tc.requestID), IDs: nonEmpty(tc.eventID)})
		var viaQuery []string
		var p fastjson.Parser
		for _, ev := range events {
			if v, _ := q.MatchValue(&p, []byte(ev)); v != nil {
				if id := string(v.GetStringBytes("id")); !slices.Contains(viaQuery, id) {
					viaQuery = append(viaQuery, id)
				}
			}
		}
		slices.Sort(viaQuery)
		sorted := slices.Sorted(slices.Values(got))
		if !slices.Equal(viaQuery, sorted) {
			t.Errorf("request_id %q id %q: query matches %q, the selector %q", tc.requestID, tc.eventID, viaQuery, sorted)
		}
	}
	if m := NewSelector("dup", "").Matched(); len(m) != 0 {
		t.Errorf("nothing read, matched %v", m)
	}
	s := NewSelector("dup", "")
	s.Match([]byte(events[0]))
	if m := s.Matched(); !slices.Equal(m, []Selected{{"e1", "2026-11-23T10:00:01Z"}}) {
		t.Errorf("Matched() = %v", m)
	}
}
