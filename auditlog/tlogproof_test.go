package auditlog

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"strings"
	"testing"

	fproof "github.com/transparency-dev/formats/proof"
	"golang.org/x/mod/sumdb/note"
)

// TestTLogProof: a proof written in the C2SP tlog-proof format has the
// spec's lines, reads back to the same proof, and is checked with the
// log's key alone; cosignatures in its checkpoint are checked against the
// witness keys required; each change to it fails.
func TestTLogProof(t *testing.T) {
	lg := newTestLog(t, "auditproxy/tlogproof/20261123T100000Z", 40)
	witness, witnessKey := newCosigner(t, "witness.example")
	_, strangerKey := newCosigner(t, "stranger.example")
	pr := NewProver()
	for i, l := range lg.lines {
		if err := pr.Add(l, i == 7); err != nil {
			t.Fatal(err)
		}
	}
	// The newest checkpoint (size 43) cosigned: the proof is made against it.
	var c cosignatureLine
	c.parse(t, cosign(t, lg.cps[len(lg.cps)-1], witness))
	if err := pr.AddCosigned([]byte(c.Note)); err != nil {
		t.Fatal(err)
	}
	proofs, err := pr.Prove()
	if err != nil || len(proofs) != 1 {
		t.Fatalf("Prove: %d, %v", len(proofs), err)
	}
	text := proofs[0].MarshalTLogProof()

	lines := strings.Split(string(text), "\n")
	if lines[0] != "c2sp.org/tlog-proof@v1" || !strings.HasPrefix(lines[1], "extra ") || lines[2] != "index 7" {
		t.Fatalf("tlog-proof starts %q", lines[:3])
	}
	i := 3
	for ; lines[i] != ""; i++ {
		if h, err := base64.StdEncoding.DecodeString(lines[i]); err != nil || len(h) != 32 {
			t.Errorf("proof line %q is not a base64 hash", lines[i])
		}
	}
	if got := strings.Join(lines[i+1:], "\n"); got != c.Note {
		t.Errorf("the checkpoint is not the cosigned note verbatim:\n%s\nwant\n%s", got, c.Note)
	}

	back, err := UnmarshalTLogProof(text)
	if err != nil {
		t.Fatal(err)
	}
	cp, err := back.Check(lg.keys)
	if err != nil || cp.Size != 43 || !bytes.Equal(back.Event, lg.lines[7]) {
		t.Fatalf("Check: size %d, %v", cp.Size, err)
	}
	if names, err := back.Cosigners([]note.Verifier{witnessKey}); err != nil || len(names) != 1 || names[0] != "witness.example" {
		t.Errorf("Cosigners: %v, %v", names, err)
	}
	if _, err := back.Cosigners([]note.Verifier{witnessKey, strangerKey}); err == nil || !strings.Contains(err.Error(), "not cosigned by stranger.example") {
		t.Errorf("a witness that did not cosign: %v", err)
	}

	for name, change := range map[string]func(string) string{
		"event changed": func(s string) string {
			ev := strings.Replace(string(lg.lines[7]), `"bytes":107`, `"bytes":108`, 1)
			return strings.Replace(s, base64.StdEncoding.EncodeToString(lg.lines[7]), base64.StdEncoding.EncodeToString([]byte(ev)), 1)
		},
		"index changed": func(s string) string { return strings.Replace(s, "index 7\n", "index 6\n", 1) },
		"proof hash changed": func(s string) string {
			return strings.Replace(s, lines[3], base64.StdEncoding.EncodeToString(make([]byte, 32)), 1)
		},
		"proof hash dropped": func(s string) string { return strings.Replace(s, lines[3]+"\n", "", 1) },
	} {
		p, err := UnmarshalTLogProof([]byte(change(string(text))))
		if err == nil {
			_, err = p.Check(lg.keys)
		}
		if err == nil {
			t.Errorf("%s: the proof still checks", name)
		}
	}
	for name, in := range map[string]string{
		"not a tlog-proof":   "hello\n\nworld",
		"no empty line":      "c2sp.org/tlog-proof@v1\nindex 1\n",
		"no extra line":      "c2sp.org/tlog-proof@v1\nindex 1\n\n" + c.Note,
		"leading zero index": strings.Replace(string(text), "index 7\n", "index 07\n", 1),
		"bad hash line":      strings.Replace(string(text), lines[3], "not base64!", 1),
		"not a checkpoint":   string(text[:bytes.Index(text, []byte("\n\n"))]) + "\n\nhello\n",
	} {
		if _, err := UnmarshalTLogProof([]byte(in)); err == nil {
			t.Errorf("%s: read as a tlog-proof", name)
		}
	}
}

type cosignatureLine struct{ cosignature }

func (c *cosignatureLine) parse(t *testing.T, line []byte) {
	t.Helper()
	if err := json.Unmarshal(line, &c.cosignature); err != nil {
		t.Fatal(err)
	}
}

func FuzzUnmarshalTLogProof(f *testing.F) {
	f.Add([]byte("c2sp.org/tlog-proof@v1\nextra e30=\nindex 0\n\nlog\n1\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n\n— log AAAA\n"))
	f.Add([]byte("c2sp.org/tlog-proof@v1\nindex 3\nAAAA\n\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := UnmarshalTLogProof(b)
		if err != nil {
			return
		}
		// What reads back writes out as it was read.
		if q, err := UnmarshalTLogProof(p.MarshalTLogProof()); err != nil || q.LeafIndex != p.LeafIndex || len(q.Proof) != len(p.Proof) || q.Checkpoint != p.Checkpoint {
			t.Fatalf("round trip of %q: %+v, %v", b, q, err)
		}
	})
}

// TestTLogProofMatchesFormats: the proofs written here read back with
// transparency-dev/formats' tlog-proof parser, an independent reading of
// the spec, to the same index, hashes, checkpoint and event; and its
// writer's output reads back here.
func TestTLogProofMatchesFormats(t *testing.T) {
	lg := newTestLog(t, "auditproxy/formats/20261123T100000Z", 25)
	pr := NewProver()
	for i, l := range lg.lines {
		pr.Add(l, i == 3)
	}
	proofs, err := pr.Prove()
	if err != nil {
		t.Fatal(err)
	}
	ours := proofs[0]
	var theirs fproof.TLogProof
	if err := theirs.Unmarshal(ours.MarshalTLogProof()); err != nil {
		t.Fatal(err)
	}
	if theirs.Index != uint64(ours.LeafIndex) || len(theirs.Hashes) != len(ours.Proof) || string(theirs.Checkpoint) != ours.Checkpoint || !bytes.Equal(theirs.ExtraData, ours.Event) {
		t.Fatalf("formats reads %+v", theirs)
	}
	for i := range theirs.Hashes {
		if theirs.Hashes[i] != ours.Proof[i] {
			t.Errorf("hash %d differs", i)
		}
	}
	back, err := UnmarshalTLogProof(theirs.Marshal())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := back.Check(lg.keys); err != nil {
		t.Errorf("formats' output does not check here: %v", err)
	}
}
