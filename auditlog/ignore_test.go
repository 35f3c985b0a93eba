package auditlog

import (
	"bytes"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/auditproxy/auditproxy/audit"
)

// asAggregatorStored returns the lines as an aggregator stores them: with
// members of its own added at the top level (Fluent Bit's OpenSearch output
// adds "@timestamp" first, a tag with Include_Tag_Key, its S3 output
// "date" last).
func asAggregatorStored(lines [][]byte) [][]byte {
	var out [][]byte
	for _, l := range lines {
		s := bytes.Replace(l, []byte("{"), []byte(`{"@timestamp":"2026-11-23T10:00:00.000Z", "tag":"auditproxy.inference",`), 1)
		s = append(bytes.TrimSuffix(s, []byte("}")), []byte(`,"date":1763892000.25}`)...)
		out = append(out, s)
	}
	return out
}

func TestVerifyIgnoresAggregatorMembers(t *testing.T) {
	l := newTestLog(t, "ignore-test/1", 25)
	stored := asAggregatorStored(l.lines)

	if r := verifyLines(l.keys, l.end, stored); r.OK {
		t.Fatalf("records with an aggregator's members verified without --ignore-member:\n%s", allProblems(r))
	}

	v := NewVerifier(l.keys)
	v.Until = l.end
	v.IgnoreMembers = []string{"@timestamp", "tag", "date", "host"}
	for _, line := range stored {
		v.Add(line)
	}
	r := v.Report()
	if !r.OK || r.Origins[0].CheckpointsVerified != 2 {
		t.Fatalf("with the aggregator's members ignored: ok %v, checkpoints verified %d:\n%s", r.OK, r.Origins[0].CheckpointsVerified, allProblems(r))
	}
	n := int64(len(stored))
	if want := map[string]int64{"@timestamp": n, "tag": n, "date": n, "host": 0}; !reflect.DeepEqual(r.Ignored, want) {
		t.Errorf("ignored members counted %v, want %v", r.Ignored, want)
	}

	// Ignoring members does not make a changed event verify.
	tampered := slices.Clone(stored)
	tampered[3] = bytes.Replace(tampered[3], []byte(`"outcome":"ok"`), []byte(`"outcome":"error"`), 1)
	v = NewVerifier(l.keys)
	v.IgnoreMembers = []string{"@timestamp", "tag", "date"}
	for _, line := range tampered {
		v.Add(line)
	}
	if r := v.Report(); r.OK || !strings.Contains(allProblems(r), "do not hash to its signed root") {
		t.Errorf("a changed event verified with members ignored:\n%s", allProblems(r))
	}
}

func TestProveIgnoresAggregatorMembers(t *testing.T) {
	l := newTestLog(t, "ignore-test/2", 12)
	pr := NewProver()
	pr.IgnoreMembers = []string{"@timestamp", "tag", "date"}
	for i, line := range asAggregatorStored(l.lines) {
		if err := pr.Add(line, i == 4); err != nil {
			t.Fatal(err)
		}
	}
	proofs, err := pr.Prove()
	if err != nil || len(proofs) != 1 {
		t.Fatalf("Prove: %d proofs, %v", len(proofs), err)
	}
	if _, err := proofs[0].Check(l.keys); err != nil {
		t.Errorf("the proof of an event an aggregator stored does not verify: %v", err)
	}
	if bytes.Contains(proofs[0].Event, []byte("@timestamp")) {
		t.Errorf("the proven event still holds the aggregator's member: %s", proofs[0].Event)
	}
}

func TestCheckIgnorable(t *testing.T) {
	for _, name := range []string{"@timestamp", "tag", "date", "_flb-key", "kubernetes"} {
		if err := CheckIgnorable(name); err != nil {
			t.Errorf("CheckIgnorable(%q) = %v", name, err)
		}
	}
	for _, name := range append([]string{""}, audit.Members...) {
		if CheckIgnorable(name) == nil {
			t.Errorf("CheckIgnorable(%q) accepted a member the sidecar writes", name)
		}
	}
}

// TestMembersNameTheLogsEvents: the log's own events' members are in
// audit.Members (see audit's test for the others).
func TestMembersNameTheLogsEvents(t *testing.T) {
	for _, v := range []any{checkpointEvent{}, logStarted{}} {
		typ := reflect.TypeOf(v)
		for i := range typ.NumField() {
			name, _, _ := strings.Cut(typ.Field(i).Tag.Get("json"), ",")
			if name != "" && !slices.Contains(audit.Members, name) {
				t.Errorf("%s's member %q is not in audit.Members", typ.Name(), name)
			}
		}
	}
}
