package jcs

import (
	"encoding/json"
	"reflect"
	"testing"
)

var aggregatorMembers = []string{"@timestamp", "tag", "date"}

func TestAppendWithout(t *testing.T) {
	for _, tc := range []struct {
		name, in, want string
		removed        []bool
	}{
		{"none of them", `{"a":1,"b":"tag"}`, `{"a":1,"b":"tag"}`, []bool{false, false, false}},
		{"one, first", `{"@timestamp":"2026-12-05T10:00:00Z","a":1}`, `{"a":1}`, []bool{true, false, false}},
		{"one, last", `{"a":1,"date":1733392800.123}`, `{"a":1}`, []bool{false, false, true}},
		{"all three, spaced", "{ \"tag\" : \"auditproxy.inference\" ,\n \"a\": {\"tag\": 1},\t\"@timestamp\":\"x\", \"date\": 2 }", `{"a": {"tag": 1}}`, []bool{true, true, true}},
		{"only members removed", `{"date":1}`, `{}`, []bool{false, false, true}},
		{"nested are kept", `{"a":{"date":1},"b":["tag"]}`, `{"a":{"date":1},"b":["tag"]}`, []bool{false, false, false}},
		{"escaped name", `{"\u0040timestamp":"x","a":"\"tag\""}`, `{"a":"\"tag\""}`, []bool{true, false, false}},
		{"duplicates all go", `{"tag":1,"a":2,"tag":3}`, `{"a":2}`, []bool{false, true, false}},
		{"a name inside a string", `{"a":"\"date\""}`, `{"a":"\"date\""}`, []bool{false, false, false}},
		{"not an object", `["tag"]`, `["tag"]`, []bool{false, false, false}},
		{"truncated", `{"tag":1,"a":`, `{"tag":1,"a":`, []bool{false, false, false}},
		{"trailing bytes", `{"tag":1} x`, `{"tag":1} x`, []bool{false, false, false}},
		{"missing colon", `{"tag" 1}`, `{"tag" 1}`, []bool{false, false, false}},
		{"a removed value that is not JSON", `{"tag":{"model":"evil"],"a":1}`, `{"tag":{"model":"evil"],"a":1}`, []bool{false, false, false}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			removed := make([]bool, len(aggregatorMembers))
			got := AppendWithout(nil, []byte(tc.in), aggregatorMembers, removed)
			if string(got) != tc.want || !reflect.DeepEqual(removed, tc.removed) {
				t.Errorf("AppendWithout(%s) = %s %v, want %s %v", tc.in, got, removed, tc.want, tc.removed)
			}
		})
	}
}

// TestAppendWithoutKeepsTheEvent: what is left canonicalizes to the event
// the log hashed before an aggregator added its members.
func TestAppendWithoutKeepsTheEvent(t *testing.T) {
	event := `{"id":"e1","log":{"origin":"o","prev":"","seq":0},"time":"2026-12-05T10:00:00.000000Z","type":"inference"}`
	stored := `{"date":1733392800.5,"time":"2026-12-05T10:00:00.000000Z", "log":{"seq":0,"origin":"o","prev":""},"@timestamp":"2026-12-05T10:00:00.000Z","id":"e1","type":"inference","tag":"auditproxy.inference"}`
	removed := make([]bool, 3)
	canon, err := Append(nil, nil, AppendWithout(nil, []byte(stored), aggregatorMembers, removed))
	if err != nil || string(canon) != event {
		t.Fatalf("canonical form without the aggregator's members:\n%s (%v)\nwant\n%s", canon, err, event)
	}
}

func FuzzAppendWithout(f *testing.F) {
	for _, s := range []string{`{"tag":1,"a":2}`, `{"a":{"date":[1,"}"]},"@timestamp":"x"}`, `{"\u0074ag":1}`, `{}`, `[]`, `{"a":"\\"}`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		removed := make([]bool, len(aggregatorMembers))
		out := AppendWithout(nil, []byte(in), aggregatorMembers, removed)
		var before map[string]any
		if json.Unmarshal([]byte(in), &before) != nil {
			return // not an object: whatever came out, canonicalization rejects it
		}
		var after map[string]any
		if err := json.Unmarshal(out, &after); err != nil {
			t.Fatalf("AppendWithout(%q) = %q, not JSON: %v", in, out, err)
		}
		for i, n := range aggregatorMembers {
			_, had := before[n]
			if _, has := after[n]; has || had != removed[i] {
				t.Fatalf("AppendWithout(%q) = %q: member %q had %v, removed %v", in, out, n, had, removed[i])
			}
			delete(before, n)
		}
		if !reflect.DeepEqual(before, after) {
			t.Fatalf("AppendWithout(%q) = %q changed other members", in, out)
		}
	})
}
