package change

import (
	"encoding/json"
	"sync"
	"testing"
	"time"

	"github.com/auditproxy/auditproxy/audit"
)

// outcomeClock drives Outcomes in a test.
type outcomeClock struct{ t time.Time }

func (c *outcomeClock) now() time.Time { return c.t }

func inference(outcome audit.Outcome, latency float64, ttft *float64) *audit.Event {
	return &audit.Event{Type: audit.TypeInference, Status: audit.Status{Outcome: outcome}, Latency: audit.Latency{Total: latency, TTFT: ttft}}
}

func recorded(t *testing.T, events [][]byte) []Outcome {
	t.Helper()
	var out []Outcome
	for _, ev := range events {
		var e struct {
			Type    string  `json:"type"`
			Details Outcome `json:"details"`
		}
		if err := json.Unmarshal(ev, &e); err != nil || e.Type != audit.TypeChangeOutcome {
			t.Fatalf("recorded %s (%v)", ev, err)
		}
		out = append(out, e.Details)
	}
	return out
}

func opsEvent(t *testing.T, typ string, details any) []byte {
	t.Helper()
	ev, err := audit.NewOpsEvent(typ, details, audit.Source{Host: "h"}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return ev
}

// TestChangeOutcomeFigures: from a known mix of requests before and after a
// model change, the change_outcome event has the exact counts, error rate
// and percentiles of each window.
func TestChangeOutcomeFigures(t *testing.T) {
	clock := &outcomeClock{t: time.Unix(1_800_000_000, 0)}
	var events [][]byte
	oc := StartOutcomes(OutcomesOptions{Window: time.Minute, Now: clock.now,
		Record: func(ev []byte) error { events = append(events, ev); return nil }})
	start := clock.t
	ttft := func(v float64) *float64 { return &v }

	// Before: 60 seconds of 9 ok requests (latencies 1..540 ms, the first
	// 5 of each second streamed with a TTFT) and 1 upstream error; one
	// client give-up and one refusal.
	n := 0
	for s := range 60 {
		clock.t = start.Add(time.Duration(s)*time.Second + 100*time.Millisecond)
		for i := range 9 {
			n++
			var tt *float64
			if i < 5 {
				tt = ttft(float64(n % 50))
			}
			oc.Observe(inference(audit.OutcomeOK, float64(n), tt))
		}
		oc.Observe(inference(audit.OutcomeUpstreamError, 5, nil))
	}
	oc.Observe(inference(audit.OutcomeClientCancelled, 9000, nil))
	oc.Observe(inference(audit.OutcomeRejected, 0, nil))

	// The change, half a second into second 60; a record of an earlier
	// change's outcome and an inference event start no window.
	clock.t = start.Add(60*time.Second + 500*time.Millisecond)
	change := opsEvent(t, audit.TypeModelChanged, map[string]any{"model": "m"})
	oc.Noticed(change)
	oc.Noticed(opsEvent(t, audit.TypeAnnotation, map[string]any{"record": map[string]any{"outcome": "applied"}}))
	oc.Noticed([]byte(`{"type":"inference"}`))

	// After: 60 seconds of 10 ok requests at 1000+ ms, and an error every
	// tenth second.
	for s := range 60 {
		clock.t = start.Add(time.Duration(60+s)*time.Second + 700*time.Millisecond)
		for i := range 10 {
			oc.Observe(inference(audit.OutcomeOK, float64(1000+10*s+i), nil))
		}
		if s%10 == 0 {
			oc.Observe(inference(audit.OutcomeUpstreamTimeout, 0, nil))
		}
	}
	clock.t = start.Add(119 * time.Second)
	oc.Due()
	if len(events) != 0 {
		t.Fatalf("an outcome recorded before its window passed: %s", events)
	}
	clock.t = start.Add(121 * time.Second)
	oc.Due()
	got := recorded(t, events)
	if len(got) != 1 {
		t.Fatalf("%d outcomes, want 1", len(got))
	}
	o := got[0]
	var ch struct{ ID string }
	json.Unmarshal(change, &ch)
	if o.Change.ID != ch.ID || o.Change.Type != audit.TypeModelChanged || o.Change.Resource != "m" || o.WindowS != 60 || o.CutShort {
		t.Errorf("outcome of %+v, window %v, cut short %v", o.Change, o.WindowS, o.CutShort)
	}
	b, a := o.Before, o.After
	if b.Requests != 602 || b.OK != 540 || b.Errors != 60 || b.ClientCancelled != 1 || b.Rejected != 1 || *b.ErrorRate != 0.1 ||
		*b.LatencyMS.P50 != 270 || *b.LatencyMS.P99 != 535 || b.Sampled {
		t.Errorf("before: %+v error rate %v latency %v/%v", b, *b.ErrorRate, *b.LatencyMS.P50, *b.LatencyMS.P99)
	}
	// 300 TTFTs, n%50 for n = 1..5, 10..14, ...: their median and p99.
	if b.TTFTMS.P50 == nil || b.TTFTMS.P99 == nil || *b.TTFTMS.P99 < *b.TTFTMS.P50 {
		t.Errorf("before TTFT %+v", b.TTFTMS)
	}
	if b.From != start.UTC().Format(time.RFC3339) || a.From != start.Add(60*time.Second).UTC().Format(time.RFC3339) {
		t.Errorf("windows from %s and %s", b.From, a.From)
	}
	if a.Requests != 606 || a.OK != 600 || a.Errors != 6 || *a.ErrorRate != 6.0/606 || *a.LatencyMS.P50 != 1000+10*29+9 || *a.LatencyMS.P99 != 1000+10*59+3 ||
		a.TTFTMS.P50 != nil || a.TTFTMS.P99 != nil {
		t.Errorf("after: %+v", a)
	}
}

// TestChangeOutcomeEdges: a change with no request around it has null
// figures, not zeros; one pending at Close is recorded cut short; past the
// per-second sample, counts stay exact and sampled is said.
func TestChangeOutcomeEdges(t *testing.T) {
	clock := &outcomeClock{t: time.Unix(1_800_000_000, 0)}
	var events [][]byte
	oc := StartOutcomes(OutcomesOptions{Window: 10 * time.Second, Now: clock.now,
		Record: func(ev []byte) error { events = append(events, ev); return nil }})
	oc.Noticed(opsEvent(t, audit.TypeGPUChanged, map[string]any{}))
	clock.t = clock.t.Add(2 * time.Second)
	for i := range 3 * perSecondSamples {
		oc.Observe(inference(audit.OutcomeOK, float64(i), nil))
	}
	clock.t = clock.t.Add(12 * time.Second)
	oc.Due()
	oc.Noticed(opsEvent(t, audit.TypeAnnotation, map[string]any{"record": map[string]any{"type": "incident_action", "resource": "prod/llama"}}))
	clock.t = clock.t.Add(3 * time.Second)
	oc.Close()
	got := recorded(t, events)
	if len(got) != 2 {
		t.Fatalf("%d outcomes, want 2", len(got))
	}
	quiet, busy := got[0].Before, got[0].After
	if quiet.Requests != 0 || quiet.ErrorRate != nil || quiet.LatencyMS.P50 != nil || quiet.TTFTMS.P99 != nil {
		t.Errorf("a window without requests: %+v", quiet)
	}
	if busy.OK != 3*perSecondSamples || !busy.Sampled || busy.LatencyMS.P50 == nil || *busy.ErrorRate != 0 {
		t.Errorf("a busy second: ok %d sampled %v", busy.OK, busy.Sampled)
	}
	if cut := got[1]; !cut.CutShort || cut.Change.Type != audit.TypeAnnotation || cut.Change.Resource != "prod/llama" || cut.After.To != clock.t.Add(time.Second).UTC().Format(time.RFC3339) {
		t.Errorf("the change pending at Close: %+v", cut)
	}
}

// TestChangeOutcomesConcurrently: requests recorded from many goroutines
// while changes come and the ticker runs (go test -race); every request is
// counted once.
func TestChangeOutcomesConcurrently(t *testing.T) {
	var mu sync.Mutex
	var events [][]byte
	oc := StartOutcomes(OutcomesOptions{Window: time.Second, Record: func(ev []byte) error {
		mu.Lock()
		defer mu.Unlock()
		events = append(events, ev)
		return nil
	}})
	oc.Noticed(opsEvent(t, audit.TypeGPUChanged, map[string]any{}))
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 500 {
				oc.Observe(inference(audit.OutcomeOK, 1, nil))
			}
		}()
	}
	wg.Wait()
	oc.Close()
	mu.Lock()
	defer mu.Unlock()
	got := recorded(t, events)
	if len(got) != 1 || got[0].After.Requests != 4000 {
		t.Fatalf("%d outcomes; after: %+v", len(got), got)
	}
}

// TestChangeOutcomeSampledAndLate: a busy second's sample weighs as many
// requests as it stands for; a window summed after its seconds were
// dropped says truncated; a change cut short counts no more than its
// window.
func TestChangeOutcomeSampledAndLate(t *testing.T) {
	clock := &outcomeClock{t: time.Unix(1_800_000_000, 0)}
	var events [][]byte
	oc := StartOutcomes(OutcomesOptions{Window: 10 * time.Second, Now: clock.now,
		Record: func(ev []byte) error { events = append(events, ev); return nil }})
	oc.Noticed(opsEvent(t, audit.TypeGPUChanged, map[string]any{}))
	// After: 4,000 requests of 10 ms in one second (sampled to 2,048),
	// then 3,048 of 1,000 ms over two seconds: the median is 10 ms.
	clock.t = clock.t.Add(time.Second)
	for range 4000 {
		oc.Observe(inference(audit.OutcomeOK, 10, nil))
	}
	for s := range 2 {
		clock.t = clock.t.Add(time.Second)
		for range 1524 + s {
			oc.Observe(inference(audit.OutcomeOK, 1000, nil))
		}
	}
	clock.t = time.Unix(1_800_000_000, 0).Add(11 * time.Second)
	oc.Due()
	// A second change whose window is summed 30 s late: its first
	// seconds are gone from the ring.
	oc.Noticed(opsEvent(t, audit.TypeGPUChanged, map[string]any{}))
	for range 5 {
		oc.Observe(inference(audit.OutcomeOK, 1, nil))
	}
	clock.t = clock.t.Add(40 * time.Second)
	oc.Due()
	// A third, cut short at Close 0.9 s into a 10 s window.
	oc.Noticed(opsEvent(t, audit.TypeGPUChanged, map[string]any{}))
	clock.t = clock.t.Add(900 * time.Millisecond)
	oc.Close()
	got := recorded(t, events)
	if len(got) != 3 {
		t.Fatalf("%d outcomes, want 3", len(got))
	}
	if a := got[0].After; a.OK != 7049 || !a.Sampled || *a.LatencyMS.P50 != 10 || *a.LatencyMS.P99 != 1000 || a.Truncated {
		t.Errorf("the sampled window: ok %d sampled %v p50 %v p99 %v truncated %v", a.OK, a.Sampled, *a.LatencyMS.P50, *a.LatencyMS.P99, a.Truncated)
	}
	if a := got[1].After; !a.Truncated || a.Requests != 0 {
		t.Errorf("the window summed late: truncated %v, %d requests", a.Truncated, a.Requests)
	}
	if c := got[2]; !c.CutShort {
		t.Errorf("cut short: %+v", c)
	}

	// Cut short never counts past the window: a 1 s window from x.9, the
	// sidecar stopping at x+1.8: the second x only.
	events = nil
	x := time.Unix(1_800_000_100, 0)
	clock.t = x.Add(900 * time.Millisecond)
	short := StartOutcomes(OutcomesOptions{Window: time.Second, Now: clock.now,
		Record: func(ev []byte) error { events = append(events, ev); return nil }})
	short.Noticed(opsEvent(t, audit.TypeGPUChanged, map[string]any{}))
	short.Observe(inference(audit.OutcomeOK, 1, nil))
	clock.t = x.Add(1500 * time.Millisecond)
	short.Observe(inference(audit.OutcomeOK, 1, nil))
	short.Observe(inference(audit.OutcomeOK, 1, nil))
	clock.t = x.Add(1800 * time.Millisecond)
	short.Close()
	if got := recorded(t, events); len(got) != 1 || got[0].After.Requests != 1 {
		t.Errorf("cut short past its window: %+v", got)
	}
}
