package auditlog

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

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
		{"restarted after the final checkpoint, not yet checkpointed", restarted, false, "", 4, 28, 31, true},
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
	rolledBack := lg.lines[:33] // up to the checkpoint at size 32
	for _, tc := range []struct {
		name  string
		sets  [][][]byte
		until time.Time
		want  string
	}{
		{"with the checkpoint directory", [][][]byte{rolledBack, lg.cps}, time.Time{}, "checkpoint at size 43: cannot check its root, events before it are missing"},
		{"without it, given when the copy was made", [][][]byte{rolledBack}, lg.end.Add(time.Second), "the newest checkpoint (size 32) is from 2026-11-23T10:00:29Z"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := verifyLines(lg.keys, tc.until, tc.sets...)
			if r.OK || !strings.Contains(allProblems(r), tc.want) {
				t.Errorf("ok %v; problems do not mention %q:\n%s", r.OK, tc.want, allProblems(r))
			}
		})
	}
}
