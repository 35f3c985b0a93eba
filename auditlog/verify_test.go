package auditlog

import (
	"bytes"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/auditproxy/auditproxy/audit"
	"golang.org/x/mod/sumdb/note"
)

// testLog is a generated log: one event a second, a checkpoint every ten.
type testLog struct {
	lines  [][]byte // every event, checkpoints included, in seq order
	cps    [][]byte // the checkpoint events (what a checkpoint dir keeps)
	signer note.Signer
	keys   note.Verifiers
	end    time.Time // the time of the newest event
}

var t0 = time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC)

func newTestKeys(t testing.TB, name string) (note.Signer, note.Verifiers) {
	skey, vkey, err := note.GenerateKey(rand.Reader, name)
	if err != nil {
		t.Fatal(err)
	}
	s, err := note.NewSigner(skey)
	if err != nil {
		t.Fatal(err)
	}
	v, err := note.NewVerifier(vkey)
	if err != nil {
		t.Fatal(err)
	}
	return s, note.VerifierList(v)
}

func inferenceJSON(i int, at time.Time) []byte {
	return fmt.Appendf(nil, `{"v":1,"type":"inference","id":"ev-%d","time":%q,"request_id":"req-%d","model":{"name":"m"},"input":{"hash":"blake3:00","bytes":%d,"tokens":3},"status":{"code":200,"outcome":"ok"}}`,
		i, at.Format(time.RFC3339Nano), i, 100+i)
}

// buildLog appends n inference events to a chain, one a second from start,
// with a checkpoint after every ten, and a final checkpoint if final.
func buildLog(t testing.TB, c *Chain, s note.Signer, start time.Time, first, n int, final bool) (lines, cps [][]byte, end time.Time) {
	t.Helper()
	at := start
	for i := first; i < first+n; i++ {
		at = start.Add(time.Duration(i-first) * time.Second)
		line, err := c.Append(nil, inferenceJSON(i, at))
		if err != nil {
			t.Fatal(err)
		}
		lines = append(lines, line)
		if (i-first+1)%10 == 0 || (final && i == first+n-1) {
			cp, err := c.AppendCheckpointEvent(nil, s, at, 10*time.Second, final && i == first+n-1, audit.Source{Host: "h", Version: "t"})
			if err != nil {
				t.Fatal(err)
			}
			lines = append(lines, cp)
			cps = append(cps, cp)
		}
	}
	return lines, cps, at
}

func newTestLog(t testing.TB, origin string, n int) *testLog {
	s, keys := newTestKeys(t, "test-signer")
	c, err := NewChain(ChainState{Origin: origin})
	if err != nil {
		t.Fatal(err)
	}
	lines, cps, end := buildLog(t, c, s, t0, 0, n, false)
	return &testLog{lines: lines, cps: cps, signer: s, keys: keys, end: end}
}

func verifyLines(keys note.Verifiers, until time.Time, sets ...[][]byte) *Report {
	v := NewVerifier(keys)
	v.Until = until
	for _, lines := range sets {
		for _, l := range lines {
			v.Add(l)
		}
	}
	return v.Report()
}

func allProblems(r *Report) string {
	var b strings.Builder
	for _, p := range r.Problems {
		b.WriteString(p + "\n")
	}
	for _, o := range r.Origins {
		for _, p := range o.Problems {
			fmt.Fprintf(&b, "%s: %s\n", o.Origin, p)
		}
	}
	return b.String()
}

func without(lines [][]byte, drop ...int) [][]byte {
	var out [][]byte
	for i, l := range lines {
		keep := true
		for _, d := range drop {
			keep = keep && i != d
		}
		if keep {
			out = append(out, l)
		}
	}
	return out
}

func replaced(lines [][]byte, i int, old, new string) [][]byte {
	out := append([][]byte(nil), lines...)
	out[i] = bytes.Replace(out[i], []byte(old), []byte(new), 1)
	return out
}

// TestVerifyDetectsTampering: each way of changing a log after the fact is
// reported with a message that says what happened; the clean log passes.
func TestVerifyDetectsTampering(t *testing.T) {
	const origin = "auditproxy/test/20261123T100000Z"
	lg := newTestLog(t, origin, 55) // events 0..54 with checkpoints after every 10: 60 lines
	// Line 15 is event seq 15 (checkpoint at seq 10 shifts the rest by one).
	// Another sidecar of the fleet, signing with the same key.
	other := &testLog{signer: lg.signer, keys: lg.keys}
	{
		c, _ := NewChain(ChainState{Origin: "auditproxy/other/20261123T100000Z"})
		other.lines, other.cps, other.end = buildLog(t, c, lg.signer, t0, 0, 20, false)
	}
	_, otherKeys := newTestKeys(t, "test-signer")

	// A fork: the log rolled back to seq 33 (a restored backup) and went on
	// writing different events over the same seqs.
	var forkLines [][]byte
	{
		c, _ := NewChain(ChainState{Origin: origin})
		first, _, _ := buildLog(t, c, lg.signer, t0, 0, 30, false) // seq 0..32
		st := c.State()
		rest, _, _ := buildLog(t, c, lg.signer, t0.Add(30*time.Second), 30, 25, false)
		lg.lines = append(first, rest...)
		lg.cps = nil
		for _, l := range lg.lines {
			if bytes.Contains(l, []byte(`"type":"checkpoint"`)) {
				lg.cps = append(lg.cps, l)
			}
		}
		fork, _ := NewChain(st)
		forkLines, _, _ = buildLog(t, fork, lg.signer, t0.Add(time.Hour), 1000, 12, false)
	}

	seqField := func(line []byte, seq int) (string, string) {
		old := fmt.Sprintf(`"seq":%d}`, seq)
		if !bytes.Contains(line, []byte(old)) {
			t.Fatalf("no %s in %s", old, line)
		}
		return old, fmt.Sprintf(`"seq":%d}`, seq+1000)
	}
	swapped := append([][]byte(nil), lg.lines...)
	{
		a, b := 15, 16
		oldA, _ := seqField(swapped[a], a)
		oldB, _ := seqField(swapped[b], b)
		swapped[a] = bytes.Replace(swapped[a], []byte(oldA), []byte(oldB), 1)
		swapped[b] = bytes.Replace(swapped[b], []byte(oldB), []byte(oldA), 1)
	}
	forged := append(append([][]byte(nil), lg.lines...),
		bytes.Replace(lg.lines[20], []byte(`"bytes":119`), []byte(`"bytes":999`), 1))
	exported := lg.end.Add(time.Second)

	for _, tc := range []struct {
		name  string
		input [][][]byte
		until time.Time
		keys  note.Verifiers
		want  string // in the problems; "" means the log verifies
	}{
		{"clean", [][][]byte{lg.lines}, exported, lg.keys, ""},
		{"clean, in reverse order, with duplicates and the checkpoint dir", [][][]byte{reversed(lg.lines), lg.lines[:30], lg.cps}, exported, lg.keys, ""},
		{"field modified", [][][]byte{replaced(lg.lines, 15, `"bytes":114`, `"bytes":115`)}, exported, lg.keys,
			"seq 16: prev does not match event 15"},
		{"middle event deleted", [][][]byte{without(lg.lines, 15)}, exported, lg.keys, "seq 15 missing (an event was removed)"},
		{"tail cut, the checkpoint dir has its newest checkpoint", [][][]byte{lg.lines[:52], lg.cps}, time.Time{}, lg.keys,
			"seq 52..53 missing (2 events removed)"},
		{"tail cut by more than an interval", [][][]byte{lg.lines[:33]}, exported, lg.keys,
			"the newest checkpoint (size 32) is from 2026-11-23T10:00:29Z"},
		{"tail cut, events after the last checkpoint kept", [][][]byte{without(lg.lines, 43, 54)}, time.Time{}, lg.keys,
			"events after the newest checkpoint (size 32)"},
		{"events reordered", [][][]byte{swapped}, exported, lg.keys, "prev does not match"},
		// Read newest first, each link is checked when the event it
		// names arrives, not as its own event is added.
		{"field modified, read in reverse", [][][]byte{reversed(replaced(lg.lines, 15, `"bytes":114`, `"bytes":115`))}, exported, lg.keys,
			"seq 16: prev does not match event 15"},
		{"events reordered, read in reverse", [][][]byte{reversed(swapped)}, exported, lg.keys, "prev does not match"},
		{"event replayed from another origin", [][][]byte{lg.lines, other.lines[5:6]}, exported, lg.keys,
			"seq 0..4 missing"},
		{"one event id in two logs", [][][]byte{lg.lines, other.lines}, exported, lg.keys,
			"one event id appears at auditproxy/test/20261123T100000Z seq 0 and at auditproxy/other/20261123T100000Z seq 0"},
		{"forged event inserted", [][][]byte{forged}, exported, lg.keys, "seq 20: two different events claim it"},
		{"rolled back and rewritten", [][][]byte{lg.lines, forkLines}, exported, lg.keys, "seq 33: two different events claim it"},
		{"signed by an unknown key", [][][]byte{lg.lines}, exported, otherKeys, "5 checkpoints signed by no key given: signed by key test-signer+"},
		{"checkpoint from another log", [][][]byte{append(without(lg.lines, 32), withLogOf(other.cps[0], lg.lines[32]))}, time.Time{}, lg.keys,
			`checkpoint at seq 32 is for origin "auditproxy/other/20261123T100000Z"`},
		{"unchained event", [][][]byte{lg.lines, {[]byte(`{"v":1,"type":"inference","id":"x"}`)}}, exported, lg.keys, "have no \"log\" member"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := verifyLines(tc.keys, tc.until, tc.input...)
			problems := allProblems(r)
			if tc.want == "" {
				if !r.OK || problems != "" {
					t.Fatalf("clean log failed:\n%s", problems)
				}
				o := r.Origins[0]
				if o.Events != 60 || o.CheckpointsVerified != 5 || o.NewestCheckpoint != 54 || o.Committed != 54 {
					t.Errorf("report %+v", o)
				}
				return
			}
			if r.OK {
				t.Fatalf("tampered log verified")
			}
			if !strings.Contains(problems, tc.want) {
				t.Errorf("problems do not mention %q:\n%s", tc.want, problems)
			}
		})
	}
}

func reversed(lines [][]byte) [][]byte {
	out := make([][]byte, len(lines))
	for i, l := range lines {
		out[len(lines)-1-i] = l
	}
	return out
}

// withLogOf returns event with its "log" member replaced by place's: an
// event moved into another log's slot.
func withLogOf(event, place []byte) []byte {
	i, j := bytes.LastIndex(event, []byte(`,"log":`)), bytes.LastIndex(place, []byte(`,"log":`))
	return append(append([]byte(nil), event[:i]...), place[j:]...)
}

func TestCheckpointNoteRoundTrip(t *testing.T) {
	s, keys := newTestKeys(t, "k")
	c := Checkpoint{Origin: "example.com/log", Size: 42}
	c.Root[0] = 7
	msg, err := SignCheckpoint(c, s)
	if err != nil {
		t.Fatal(err)
	}
	got, n, err := OpenCheckpoint(msg, keys)
	if err != nil || got != c || len(n.Sigs) != 1 {
		t.Fatalf("OpenCheckpoint = %+v, %v", got, err)
	}
	if !strings.HasPrefix(string(msg), "example.com/log\n42\nBwAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n\n— k ") {
		t.Errorf("note text:\n%s", msg)
	}
	c.Final = true
	msg, err = SignCheckpoint(c, s)
	if err != nil {
		t.Fatal(err)
	}
	if got, _, err := OpenCheckpoint(msg, keys); err != nil || got != c || !strings.HasPrefix(string(msg), "example.com/log\n42\nBwAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\nfinal\n\n— k ") {
		t.Fatalf("the final checkpoint's note:\n%s\nopened to %+v, %v", msg, got, err)
	}
	root := strings.Repeat("A", 43) + "=\n"
	for ext, final := range map[string]bool{"other\n": false, "final\nother\n": true, "other\nfinal\n": true, "finally\n": false} {
		if got, err := ParseCheckpoint("o\n1\n" + root + ext); err != nil || got.Final != final {
			t.Errorf("ParseCheckpoint with extension lines %q = %+v, %v; want final %v", ext, got, err, final)
		}
	}
	for _, bad := range []string{"o\n1\n" + root + "\n", "o\n1\n" + root + "final", "o\n1\n" + root + "final\n\n", "", "o\n", "o\n-1\nAA==\n", "o\n01\n" + strings.Repeat("A", 44) + "\n", "o\n1\nnot base64\n", "\n1\n" + strings.Repeat("A", 43) + "=\n"} {
		if _, err := ParseCheckpoint(bad); err == nil {
			t.Errorf("ParseCheckpoint(%q) succeeded", bad)
		}
	}
}

// TestSignedNoteExample verifies the signed-note example of
// golang.org/x/mod/sumdb/note's documentation (the same format C2SP
// signed-note specifies).
func TestSignedNoteExample(t *testing.T) {
	v, err := note.NewVerifier("PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW")
	if err != nil {
		t.Fatal(err)
	}
	msg := "If you think cryptography is the answer to your problem,\n" +
		"then you don't know what your problem is.\n" +
		"\n" +
		"— PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n"
	n, err := note.Open([]byte(msg), note.VerifierList(v))
	if err != nil || len(n.Sigs) != 1 || n.Sigs[0].Name != "PeterNeumann" {
		t.Fatalf("the example note does not verify: %v", err)
	}
	if _, err := note.Open([]byte(strings.Replace(msg, "answer", "question", 1)), note.VerifierList(v)); err == nil {
		t.Error("a changed note verified")
	}
}

// FuzzVerify: whatever lines it is given, the verifier does not panic, and a
// report that says OK has no problems.
func FuzzVerify(f *testing.F) {
	lg := newTestLog(f, "o/1", 12)
	f.Add(bytes.Join(lg.lines, []byte("\n")))
	f.Add([]byte(`{"log":{"origin":"o/1","seq":0,"prev":""}}`))
	f.Add([]byte(`{"type":"checkpoint","checkpoint":{"note":"o/1\n0\n"},"log":{"origin":"o/1","seq":0,"prev":""}}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		v := NewVerifier(lg.keys)
		for _, line := range bytes.Split(data, []byte("\n")) {
			v.Add(line)
		}
		r := v.Report()
		if r.OK && allProblems(r) != "" {
			t.Fatalf("OK with problems: %s", allProblems(r))
		}
	})
}

// FuzzParseCheckpoint: the checkpoint parser never panics, and what it
// accepts formats back to text it accepts again as the same checkpoint.
func FuzzParseCheckpoint(f *testing.F) {
	f.Add("example.com/log\n42\nBwAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n")
	f.Add("o\n0\n" + strings.Repeat("A", 43) + "=\nextension line\n")
	f.Add("o\n-1\n\n")
	f.Add("o\n7\n" + strings.Repeat("A", 43) + "=\nfinal\n")
	f.Fuzz(func(t *testing.T, text string) {
		c, err := ParseCheckpoint(text)
		if err != nil {
			return
		}
		again, err := ParseCheckpoint(c.Text())
		if err != nil || again != c {
			t.Fatalf("%q parsed to %+v, whose text %q parses to %+v, %v", text, c, c.Text(), again, err)
		}
	})
}

// TestVerifyAcceptsAReportedOutage: checkpoints further apart than their
// cadence are missing checkpoints, unless the later one reports an outage
// (the log could not be written) that began before the next checkpoint was
// overdue; such a gap is counted, not failed. An outage that began only
// after the gap was already overdue does not excuse it.
func TestVerifyAcceptsAReportedOutage(t *testing.T) {
	s, keys := newTestKeys(t, "test-signer")
	for _, tc := range []struct {
		name        string
		outageAfter time.Duration // from the checkpoint before the gap; <0: no outage reported
		later       bool          // a later checkpoint covers the one reporting the outage
		wantOK      bool
	}{
		{"gap without an outage", -1, true, false},
		{"outage from the next due checkpoint", 10 * time.Second, true, true},
		{"outage that began only after the gap was overdue", 40 * time.Second, true, false},
		// The outage member is outside the signed note: on the newest
		// checkpoint anyone could have added it.
		{"outage claimed by the newest checkpoint", 10 * time.Second, false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, _ := NewChain(ChainState{Origin: "auditproxy/outage/20261123T100000Z"})
			lines, _, end := buildLog(t, c, s, t0, 0, 10, false) // checkpoint at t0+9s
			// The disk fills: no commit for two minutes, then the first
			// commit is an event and a checkpoint reporting the outage.
			at := end.Add(2 * time.Minute)
			ev, err := c.Append(nil, inferenceJSON(10, at))
			if err != nil {
				t.Fatal(err)
			}
			var outage *CheckpointOutage
			if tc.outageAfter >= 0 {
				outage = &CheckpointOutage{Since: audit.Timestamp(end.Add(tc.outageAfter)), Reason: "commit_failed",
					Error: "no space left on device", FailedCommits: 12, FailedCheckpoints: 12}
			}
			cp, err := c.AppendCheckpointEventAfter(nil, s, at, 10*time.Second, false, outage, audit.Source{Host: "h", Version: "t"})
			if err != nil {
				t.Fatal(err)
			}
			lines = append(lines, ev, cp)
			if tc.later {
				ev2, err := c.Append(nil, inferenceJSON(12, at.Add(time.Second)))
				if err != nil {
					t.Fatal(err)
				}
				cp2, err := c.AppendCheckpointEventAfter(nil, s, at.Add(2*time.Second), 10*time.Second, false, nil, audit.Source{Host: "h", Version: "t"})
				if err != nil {
					t.Fatal(err)
				}
				lines = append(lines, ev2, cp2)
			}
			r := verifyLines(keys, time.Time{}, lines)
			if r.OK != tc.wantOK {
				t.Fatalf("OK = %v, want %v:\n%s", r.OK, tc.wantOK, allProblems(r))
			}
			if tc.wantOK && r.Origins[0].Outages != 1 {
				t.Errorf("outages = %d, want 1", r.Origins[0].Outages)
			}
			if !tc.wantOK && !strings.Contains(allProblems(r), "checkpoints between them are missing") {
				t.Errorf("problems:\n%s", allProblems(r))
			}
		})
	}
}

// reencode returns line with its members in another order and spaces after
// the separators, as an aggregator that re-encodes events may return it.
func reencode(t *testing.T, line []byte) []byte {
	t.Helper()
	var m map[string]json.RawMessage
	if err := json.Unmarshal(line, &m); err != nil {
		t.Fatal(err)
	}
	names := slices.Sorted(maps.Keys(m))
	slices.Reverse(names)
	var b bytes.Buffer
	b.WriteString("{")
	for i, n := range names {
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "%q: %s", n, m[n])
	}
	b.WriteString("}")
	return b.Bytes()
}

// TestVerifyReencodedLines: events re-encoded by an aggregator verify as
// the lines the log wrote, whether all of them are re-encoded or some (the
// verifier skips its in-place check after a re-encoded line, and takes it
// up again after a canonical one); a re-encoded event whose values were
// changed does not.
func TestVerifyReencodedLines(t *testing.T) {
	lg := newTestLog(t, "auditproxy/reencoded/20261123T100000Z", 35)
	all := make([][]byte, len(lg.lines))
	mixed := make([][]byte, len(lg.lines))
	for i, l := range lg.lines {
		all[i] = reencode(t, l)
		mixed[i] = l
		if i%7 < 3 {
			mixed[i] = all[i]
		}
	}
	for name, lines := range map[string][][]byte{"all re-encoded": all, "some re-encoded": mixed} {
		if r := verifyLines(lg.keys, time.Time{}, lines); !r.OK || r.Origins[0].CheckpointsVerified != 3 {
			t.Errorf("%s: ok %v, %d checkpoints verified:\n%s", name, r.OK, r.Origins[0].CheckpointsVerified, allProblems(r))
		}
	}
	changed := replaced(all, 15, `"bytes":114`, `"bytes":115`)
	if r := verifyLines(lg.keys, time.Time{}, changed); r.OK || !strings.Contains(allProblems(r), "seq 16: prev does not match event 15") {
		t.Errorf("a changed re-encoded event: ok %v:\n%s", r.OK, allProblems(r))
	}
}
