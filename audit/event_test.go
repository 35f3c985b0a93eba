package audit

import (
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"regexp"
	"testing"
	"time"
)

var update = flag.Bool("update", false, "rewrite golden files")

// TestEventGolden pins the wire format: key names, order and encodings. A
// diff here is a schema change; version 1 may only gain fields.
func TestEventGolden(t *testing.T) {
	key := "k1:97ec80fcbebd63cd2bdc8f0a95078437"
	in, out := int64(5), int64(12)
	ttft := 120.5
	ev := Event{
		V: SchemaVersion, Type: TypeInference, ID: "6f1c2a3b-4d5e-4f60-8a7b-9c0d1e2f3a4b",
		Time:      Timestamp(time.Date(2026, 11, 23, 8, 0, 0, 120, time.FixedZone("CET", 3600))),
		RequestID: "req-1", Method: "POST", Path: "/v1/chat/completions", Stream: true,
		Model:    Model{Name: "meta-llama/Llama-3.1-8B-Instruct"},
		Input:    Body{Hash: "blake3:00", Bytes: 125, Tokens: &in},
		Output:   Body{Hash: "blake3:11", Bytes: 3223, Tokens: &out, FinishReason: "stop"},
		APIKeyID: &key,
		Latency:  Latency{Total: 403.25, TTFT: &ttft, Upstream: 402.5, Overhead: 0.75},
		Status:   Status{Code: 200, Outcome: OutcomeOK},
		Source:   Source{Host: "gpu-node-7", Version: "v0.1.0"},
	}
	got, err := json.Marshal(ev)
	if err != nil {
		t.Fatal(err)
	}
	golden := filepath.Join("testdata", "event.golden.json")
	if *update {
		os.WriteFile(golden, append(got, '\n'), 0o644)
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatal(err)
	}
	if string(got)+"\n" != string(want) {
		t.Errorf("event JSON changed:\ngot  %s\nwant %s", got, want)
	}
	var back Event
	if err := json.Unmarshal(got, &back); err != nil {
		t.Fatal(err)
	}
	if again, _ := json.Marshal(back); string(again) != string(got) {
		t.Errorf("round trip changed the event:\n%s\n%s", again, got)
	}
}

func TestTimestamp(t *testing.T) {
	for _, tt := range []struct {
		in   time.Time
		want string
	}{
		{time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC), `"2026-01-02T03:04:05.000000000Z"`},
		{time.Date(2026, 1, 2, 3, 4, 5, 7, time.FixedZone("X", -7200)), `"2026-01-02T05:04:05.000000007Z"`},
	} {
		b, _ := Timestamp(tt.in).MarshalJSON()
		if string(b) != tt.want {
			t.Errorf("%v -> %s, want %s", tt.in, b, tt.want)
		}
	}
	var ts Timestamp
	for _, bad := range []string{`12`, `"yesterday"`, `"`} {
		if err := ts.UnmarshalJSON([]byte(bad)); err == nil {
			t.Errorf("UnmarshalJSON(%s) succeeded", bad)
		}
	}
}

func TestNewID(t *testing.T) {
	v4 := regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`)
	seen := map[string]bool{}
	for range 1000 {
		id := NewID()
		if !v4.MatchString(id) || seen[id] {
			t.Fatalf("NewID() = %q: not a fresh UUIDv4", id)
		}
		seen[id] = true
	}
}
