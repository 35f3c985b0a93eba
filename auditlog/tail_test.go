package auditlog

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"
)

// rechained returns lines appended again to a new chain of origin after
// edit changed line i's members (its "log" member removed): a copy edited
// by someone who recomputes the chain, which is unkeyed.
func rechained(t *testing.T, origin string, lines [][]byte, i int, edit func(m map[string]json.RawMessage)) (*Chain, [][]byte) {
	t.Helper()
	c, err := NewChain(ChainState{Origin: origin})
	if err != nil {
		t.Fatal(err)
	}
	var out [][]byte
	for j, l := range lines {
		var m map[string]json.RawMessage
		if err := json.Unmarshal(l, &m); err != nil {
			t.Fatal(err)
		}
		delete(m, "log")
		if j == i {
			edit(m)
		}
		ev, err := json.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		line, err := c.Append(nil, ev)
		if err != nil {
			t.Fatal(err)
		}
		if j < i && !bytes.Equal(line, l) {
			t.Fatalf("line %d chained again differs:\n%s\n%s", j, line, l)
		}
		out = append(out, line)
	}
	return c, out
}

// setFinal sets or removes the "final" member of a checkpoint event.
func setFinal(final bool) func(m map[string]json.RawMessage) {
	return func(m map[string]json.RawMessage) {
		var cp map[string]json.RawMessage
		if err := json.Unmarshal(m["checkpoint"], &cp); err != nil {
			panic(err)
		}
		delete(cp, "final")
		if final {
			cp["final"] = json.RawMessage("true")
		}
		m["checkpoint"], _ = json.Marshal(cp)
	}
}

func proxyStartedJSON(at time.Time) []byte {
	return fmt.Appendf(nil, `{"v":1,"type":"proxy_started","id":"start-%d","time":%q,"details":{"version":"t"},"source":{"host":"h","version":"t"}}`,
		at.UnixNano(), at.Format(time.RFC3339Nano))
}

// TestVerifyUncommittedTail: events after the newest checkpoint are
// counted as uncommitted and pass unless RequireCommitted is set; after a
// final checkpoint only a restart may go on.
func TestVerifyUncommittedTail(t *testing.T) {
	const origin = "auditproxy/tail/20261123T100000Z"
	s, keys := newTestKeys(t, "tail-signer")

	// 30 events, checkpoints after every ten: the newest at size 32 (seq
	// 32), nothing after it.
	c, _ := NewChain(ChainState{Origin: origin})
	closed, _, end := buildLog(t, c, s, t0, 0, 30, false)
	// ... then 50 events forged by whoever could append to the copy,
	// chained correctly, within one checkpoint interval.
	appended := append([][]byte(nil), closed...)
	for i := range 50 {
		line, err := c.Append(nil, inferenceJSON(1000+i, end.Add(time.Duration(i)*time.Millisecond)))
		if err != nil {
			t.Fatal(err)
		}
		appended = append(appended, line)
	}

	// A log whose sidecar stopped: the final checkpoint is its newest event.
	cf, _ := NewChain(ChainState{Origin: origin})
	final, _, fend := buildLog(t, cf, s, t0, 0, 25, true) // final checkpoint at size 27
	afterFinal := append([][]byte(nil), final...)
	restartState := cf.State()
	for i := range 3 {
		line, _ := cf.Append(nil, inferenceJSON(2000+i, fend.Add(time.Second)))
		afterFinal = append(afterFinal, line)
	}
	// The same log restarted two hours later: proxy_started, then requests,
	// before its first checkpoint.
	cr, _ := NewChain(restartState)
	restarted := append([][]byte(nil), final...)
	line, _ := cr.Append(nil, proxyStartedJSON(fend.Add(2*time.Hour)))
	restarted = append(restarted, line)
	for i := range 3 {
		line, _ := cr.Append(nil, inferenceJSON(3000+i, fend.Add(2*time.Hour+time.Second)))
		restarted = append(restarted, line)
	}

	// A log of the release before notes carried final (the event's member
	// alone says so), restarted three hours later, no checkpoint since:
	// the downtime is no missing checkpoint.
	cl, legacy := rechained(t, origin, closed, len(closed)-1, setFinal(true))
	line, _ = cl.Append(nil, proxyStartedJSON(end.Add(3*time.Hour)))
	legacy = append(legacy, line)
	for i := range 3 {
		line, _ := cl.Append(nil, inferenceJSON(4000+i, end.Add(3*time.Hour+time.Second)))
		legacy = append(legacy, line)
	}

	// The events appended after the stop, with the final checkpoint's
	// "final" member removed (its note still says final) and the chain
	// recomputed after it.
	cu, unfinal := rechained(t, origin, final, len(final)-1, setFinal(false))
	for i := range 3 {
		line, _ := cu.Append(nil, inferenceJSON(2000+i, fend.Add(time.Second)))
		unfinal = append(unfinal, line)
	}

	for _, tc := range []struct {
		name        string
		lines       [][]byte
		require     bool
		want        string // in the problems; "" means it verifies
		uncommitted int64
		from, to    int64
		newestFinal bool
	}{
		{"nothing after the newest checkpoint", closed, true, "", 0, 0, 0, false},
		{"50 events appended within one interval", appended, false, "", 50, 33, 82, false},
		{"50 events appended within one interval, --require-committed", appended, true,
			"50 events after the newest checkpoint (size 32), seq 33..82, are not committed to by any checkpoint", 50, 33, 82, false},
		{"stopped: the final checkpoint is the newest event", final, true, "", 0, 0, 0, true},
		{"events appended after the final checkpoint", afterFinal, false,
			"3 events after the final checkpoint (size 27), seq 28..30, and no restart (proxy_started) among them", 3, 28, 30, true},
		{"events appended after the final checkpoint, its final member removed", unfinal, false,
			"3 events after the final checkpoint (size 27), seq 28..30, and no restart", 3, 28, 30, true},
		{"the same, its signed note named", unfinal, false,
			"checkpoint at seq 27: its signed note is final, its event says it is not", 3, 28, 30, true},
		{"restarted after the final checkpoint, not yet checkpointed", restarted, false, "", 4, 28, 31, true},
		{"restarted after an unsigned final of the release before", legacy, false, "", 4, 33, 36, false},
		{"the same, --require-committed", restarted, true, "4 events after the newest checkpoint (size 27), seq 28..31, are not committed", 4, 28, 31, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v := NewVerifier(keys)
			v.RequireCommitted = tc.require
			for _, l := range tc.lines {
				v.Add(l)
			}
			r := v.Report()
			problems := allProblems(r)
			switch {
			case tc.want == "" && (!r.OK || problems != ""):
				t.Errorf("failed:\n%s", problems)
			case tc.want != "" && (r.OK || !strings.Contains(problems, tc.want)):
				t.Errorf("ok %v; problems do not mention %q:\n%s", r.OK, tc.want, problems)
			}
			o := r.Origins[0]
			if o.Uncommitted != tc.uncommitted || o.Uncommitted > 0 && (o.UncommittedFrom != tc.from || o.UncommittedTo != tc.to) || o.NewestCheckpointFinal != tc.newestFinal {
				t.Errorf("uncommitted %d (seq %d..%d), newest final %v; want %d (seq %d..%d), %v",
					o.Uncommitted, o.UncommittedFrom, o.UncommittedTo, o.NewestCheckpointFinal, tc.uncommitted, tc.from, tc.to, tc.newestFinal)
			}
		})
	}
}

// TestVerifyRollback: a copy rolled back to an earlier checkpoint (the
// events and checkpoints after it removed) is caught by the checkpoints
// kept elsewhere, or, without them, by the time the copy should reach.
func TestVerifyRollback(t *testing.T) {
	lg := newTestLog(t, "auditproxy/rollback/20261123T100000Z", 55)
	// A sidecar that stopped (a final checkpoint), then ran an hour more
	// after a restart; the copy holds only the first run.
	var stopped struct {
		lines [][]byte
		until time.Time
	}
	{
		c, _ := NewChain(ChainState{Origin: "auditproxy/rollback/20261123T100000Z"})
		var end time.Time
		stopped.lines, _, end = buildLog(t, c, lg.signer, t0, 0, 25, true)
		c.Append(nil, proxyStartedJSON(end.Add(time.Minute)))
		_, _, stopped.until = buildLog(t, c, lg.signer, end.Add(time.Minute), 100, 3600, false)
	}
	rolledBack := lg.lines[:33] // up to the checkpoint at size 32
	for _, tc := range []struct {
		name  string
		sets  [][][]byte
		until time.Time
		want  string
	}{
		{"with the checkpoint directory", [][][]byte{rolledBack, lg.cps}, time.Time{}, "checkpoint at size 43: cannot check its root, events before it are missing"},
		{"without it, given when the copy was made", [][][]byte{rolledBack}, lg.end.Add(time.Second), "the newest checkpoint (size 32) is from 2026-11-23T10:00:29Z"},
		// A copy cut back to a real stop: the log went on after a restart.
		{"cut back to an earlier stop", [][][]byte{stopped.lines}, stopped.until, "(a stop: if the sidecar did not run after it"},
		// Claiming the sidecar stopped there does not excuse the missing
		// tail: the claim is not in the checkpoint's signed note.
		{"the same, its newest checkpoint made final", [][][]byte{replaced(rolledBack, 32, `"interval_ms":`, `"final":true,"interval_ms":`)},
			lg.end.Add(time.Second), "the newest checkpoint (size 32) is from 2026-11-23T10:00:29Z"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v := NewVerifier(lg.keys)
			v.Until = tc.until
			v.RequireCommitted = true
			for _, lines := range tc.sets {
				for _, l := range lines {
					v.Add(l)
				}
			}
			r := v.Report()
			if r.OK || !strings.Contains(allProblems(r), tc.want) {
				t.Errorf("ok %v; problems do not mention %q:\n%s", r.OK, tc.want, allProblems(r))
			}
		})
	}
}

// TestFinalIsSigned: a final checkpoint's note carries the final extension
// line, so its signature covers the claim; the event's member only
// repeats it.
func TestFinalIsSigned(t *testing.T) {
	const origin = "auditproxy/final/20261123T100000Z"
	s, keys := newTestKeys(t, "final-signer")
	c, _ := NewChain(ChainState{Origin: origin})
	lines, cps, _ := buildLog(t, c, s, t0, 0, 15, true)
	last := cps[len(cps)-1]
	sc, err := ParseSignedCheckpoint(last)
	if err != nil {
		t.Fatal(err)
	}
	ck, _, err := OpenCheckpoint(sc.Note, keys)
	if err != nil || !ck.Final || !strings.HasSuffix(ck.Text(), "\nfinal\n") {
		t.Fatalf("the final checkpoint's note opened to %+v, %v:\n%s", ck, err, sc.Note)
	}
	if ck, _, _ := OpenCheckpoint(noteOf(t, cps[0]), keys); ck.Final {
		t.Errorf("a checkpoint before the stop is final: %+v", ck)
	}
	if r := verifyLines(keys, time.Time{}, lines); !r.OK || !r.Origins[0].NewestCheckpointFinal || r.Origins[0].UnsignedFinal {
		t.Fatalf("the stopped log: ok %v, newest final %v, unsigned final %v:\n%s", r.OK, r.Origins[0].NewestCheckpointFinal, r.Origins[0].UnsignedFinal, allProblems(r))
	}
	// A non-final newest checkpoint whose event claims final: taken as
	// not final, and said.
	cut := replaced(lines[:11], 10, `"interval_ms":`, `"final":true,"interval_ms":`)
	if r := verifyLines(keys, time.Time{}, cut); !r.OK || r.Origins[0].NewestCheckpointFinal || !r.Origins[0].UnsignedFinal {
		t.Errorf("a copy cut at a checkpoint claimed final: ok %v, newest final %v, unsigned final %v:\n%s", r.OK, r.Origins[0].NewestCheckpointFinal, r.Origins[0].UnsignedFinal, allProblems(r))
	}
	// The same claim on a checkpoint that a later root covers is trusted
	// (logs written before notes carried final): TestPreviousReleaseSpool.
}
