package auditlog

import (
	"crypto/rand"
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	fnote "github.com/transparency-dev/formats/note"
	"golang.org/x/mod/sumdb/note"
)

// cosign returns the cosignature line a witness client keeps for the
// checkpoint event cp, cosigned by w.
func cosign(t *testing.T, cp []byte, w note.Signer) []byte {
	t.Helper()
	sc, err := ParseSignedCheckpoint(cp)
	if err != nil {
		t.Fatal(err)
	}
	_, err = note.Open(sc.Note, nil)
	var unverified *note.UnverifiedNoteError
	if !errors.As(err, &unverified) {
		t.Fatal(err)
	}
	n := unverified.Note
	n.Sigs, n.UnverifiedSigs = n.UnverifiedSigs, nil
	msg, err := note.Sign(n, w)
	if err != nil {
		t.Fatal(err)
	}
	line, _ := json.Marshal(cosignature{Origin: sc.Origin, Size: sc.Size, Note: string(msg)})
	return line
}

func newCosigner(t *testing.T, name string) (note.Signer, note.Verifier) {
	t.Helper()
	skey, vkey, err := note.GenerateKey(rand.Reader, name)
	if err != nil {
		t.Fatal(err)
	}
	s, err := fnote.NewSignerForCosignatureV1(skey)
	if err != nil {
		t.Fatal(err)
	}
	v, err := fnote.NewVerifierForCosignatureV1(vkey)
	if err != nil {
		t.Fatal(err)
	}
	return s, v
}

// TestVerifyChecksCosignatures: with witness keys, each log needs a
// checkpoint a witness cosigned with the root its events hash to; a
// witness shown another tree, an unknown witness, a broken cosignature, a
// log nobody cosigned and a witness given that cosigned none of it are each
// reported.
func TestVerifyChecksCosignatures(t *testing.T) {
	const origin = "auditproxy/cosign/20261123T100000Z"
	s, keys := newTestKeys(t, "cosign-log")
	c, _ := NewChain(ChainState{Origin: origin})
	base, baseCPs, end := buildLog(t, c, s, t0, 0, 20, false) // checkpoints at sizes 10 and 21
	st := c.State()
	rest, restCPs, _ := buildLog(t, c, s, end.Add(time.Second), 20, 10, false) // at size 32
	lines := append(append([][]byte(nil), base...), rest...)
	// The same log forked after size 21: another checkpoint of size 32.
	fork, _ := NewChain(st)
	_, forkCPs, _ := buildLog(t, fork, s, end.Add(time.Hour), 500, 10, false)

	witness, witnessKey := newCosigner(t, "witness.example")
	stranger, strangerKey := newCosigner(t, "stranger.example")
	_, rotatedKey := newCosigner(t, "witness.example") // the same witness's next key
	good := [][]byte{cosign(t, baseCPs[0], witness), cosign(t, restCPs[0], witness)}
	broken := []byte(strings.Replace(string(good[1]), `\n— witness.example `, `\n— witness.example AAAA`, 1))

	for _, tc := range []struct {
		name      string
		cosigs    [][]byte
		want      string // in the problems; "" means it verifies
		cosigned  int
		witnesses []note.Verifier // default witnessKey
	}{
		{"two checkpoints cosigned", good, "", 2, nil},
		{"the witness was shown another tree", append(good[:1:1], cosign(t, forkCPs[0], witness)), "whose root is not the one these events hash to", 1, nil},
		{"cosigned by a witness not given", [][]byte{cosign(t, restCPs[0], stranger)}, "cosigned by no witness key given", 0, nil},
		{"a cosignature that does not verify", [][]byte{good[0], broken}, "checkpoint of size 32", 1, nil},
		{"no cosignature", nil, "no checkpoint of this log is cosigned", 0, nil},
		{"two witnesses given, one cosigned", good, "witness stranger.example cosigned no checkpoint of this log", 2, []note.Verifier{witnessKey, strangerKey}},
		{"two witnesses given, both cosigned", append(good[:2:2], cosign(t, baseCPs[0], stranger)), "", 2, []note.Verifier{witnessKey, strangerKey}},
		{"two keys of one witness, one used", good, "", 2, []note.Verifier{witnessKey, rotatedKey}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v := NewVerifier(keys)
			v.Witnesses = []note.Verifier{witnessKey}
			if tc.witnesses != nil {
				v.Witnesses = tc.witnesses
			}
			for _, l := range lines {
				v.Add(l)
			}
			for _, cs := range tc.cosigs {
				if err := v.AddCosignature(cs); err != nil {
					t.Fatal(err)
				}
			}
			r := v.Report()
			problems := allProblems(r)
			switch {
			case tc.want == "" && !r.OK:
				t.Errorf("failed:\n%s", problems)
			case tc.want != "" && (r.OK || !strings.Contains(problems, tc.want)):
				t.Errorf("ok %v; problems do not mention %q:\n%s", r.OK, tc.want, problems)
			}
			if o := r.Origins[0]; o.Cosigned != tc.cosigned || tc.cosigned > 0 && (!slices.Contains(o.Witnesses, "witness.example") || o.NewestCosigned < 10) {
				t.Errorf("cosigned %d by %v (newest %d), want %d", o.Cosigned, o.Witnesses, o.NewestCosigned, tc.cosigned)
			}
		})
	}
	if err := NewVerifier(keys).AddCosignature(good[0]); err == nil {
		t.Error("a cosignature was read without witness keys")
	}
}

// TestCosignedProofsFromAnOlderExport: the witness client's file grows
// after an export; prove uses the newest cosigned checkpoint whose events
// were all read. A cosignature line naming a log with no events says what
// is wrong with it.
func TestCosignedProofsFromAnOlderExport(t *testing.T) {
	lg := newTestLog(t, "auditproxy/older/20261123T100000Z", 50) // checkpoints at 10, 21, 32, 43, 54
	witness, witnessKey := newCosigner(t, "witness.example")
	pr := NewProver()
	for i, l := range lg.lines[:34] { // exported up to seq 33
		pr.Add(l, i == 5)
	}
	for _, cp := range lg.cps {
		var c cosignatureLine
		c.parse(t, cosign(t, cp, witness))
		pr.AddCosigned([]byte(c.Note))
	}
	proofs, err := pr.Prove()
	if err != nil || len(proofs) != 1 || proofs[0].TreeSize != 32 {
		t.Fatalf("Prove: %v, %+v", err, proofs)
	}

	v := NewVerifier(lg.keys)
	v.Witnesses = []note.Verifier{witnessKey}
	for _, l := range lg.lines {
		v.Add(l)
	}
	line := strings.Replace(string(cosign(t, lg.cps[0], witness)), `"origin":"auditproxy/older/20261123T100000Z"`, `"origin":"typo"`, 1)
	v.AddCosignature([]byte(line))
	if p := allProblems(v.Report()); !strings.Contains(p, "log typo: cosignature line of size 10: its fields disagree with its note") {
		t.Errorf("a cosignature line of another log:\n%s", p)
	}
}
