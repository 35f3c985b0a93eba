package auditlog

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/auditproxy/auditproxy/audit"
	"github.com/auditproxy/auditproxy/internal/jcs"
	"golang.org/x/mod/sumdb/tlog"
)

// The Certificate Transparency reference leaves and roots (RFC 6962 trees of
// 0 to 8 leaves), as used by every CT implementation's tests.
var (
	ctLeaves = []string{"", "00", "10", "2021", "3031", "40414243", "5051525354555657", "606162636465666768696a6b6c6d6e6f"}
	ctRoots  = []string{
		"e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
		"6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
		"fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
		"aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
		"d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
		"4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
		"76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
		"ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
		"5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
	}
	ctInclusion = []struct {
		index, size int64
		proof       []string
	}{
		{0, 8, []string{"96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
			"5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
			"6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"}},
		{5, 8, []string{"bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
			"ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
			"d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"}},
	}
)

// memHashes is a tlog.HashReader over stored hashes kept in memory.
type memHashes []tlog.Hash

func (m memHashes) ReadHashes(idx []int64) ([]tlog.Hash, error) {
	out := make([]tlog.Hash, len(idx))
	for i, x := range idx {
		if x >= int64(len(m)) {
			return nil, fmt.Errorf("stored hash %d of %d", x, len(m))
		}
		out[i] = m[x]
	}
	return out, nil
}

func TestTreeMatchesRFC6962Vectors(t *testing.T) {
	var tree Tree
	var stored memHashes
	check := func() {
		t.Helper()
		if got := func() string { r := tree.Root(); return hex.EncodeToString(r[:]) }(); got != ctRoots[tree.Size()] {
			t.Errorf("%d leaves: root %s, RFC 6962 says %s", tree.Size(), got, ctRoots[tree.Size()])
		}
	}
	check()
	for _, l := range ctLeaves {
		data, _ := hex.DecodeString(l)
		stored = tree.Append(tlog.RecordHash(data), stored)
		check()
	}
	for _, tc := range ctInclusion {
		proof, err := tlog.ProveRecord(tc.size, tc.index, stored)
		if err != nil {
			t.Fatal(err)
		}
		if len(proof) != len(tc.proof) {
			t.Fatalf("proof for %d in %d has %d hashes, want %d", tc.index, tc.size, len(proof), len(tc.proof))
		}
		for i := range proof {
			if got := hex.EncodeToString(proof[i][:]); got != tc.proof[i] {
				t.Errorf("proof for %d in %d, hash %d: %s, want %s", tc.index, tc.size, i, got, tc.proof[i])
			}
		}
	}
}

// TestTreeMatchesTlog: the stored hashes and roots of Tree are tlog's, for
// every size up to 300, and a tree rebuilt from stored hashes continues the
// same.
func TestTreeMatchesTlog(t *testing.T) {
	var tree Tree
	var stored memHashes
	for n := int64(0); n < 300; n++ {
		leaf := tlog.RecordHash([]byte(fmt.Sprint(n)))
		want, err := tlog.StoredHashesForRecordHash(n, leaf, stored)
		if err != nil {
			t.Fatal(err)
		}
		before := len(stored)
		stored = tree.Append(leaf, stored)
		for i, h := range want {
			if stored[before+i] != h {
				t.Fatalf("leaf %d: stored hash %d differs from tlog's", n, i)
			}
		}
		th, err := tlog.TreeHash(n+1, stored)
		if err != nil {
			t.Fatal(err)
		}
		if tree.Root() != th {
			t.Fatalf("root of %d leaves differs from tlog.TreeHash", n+1)
		}
		rebuilt, err := TreeFromStored(n+1, stored)
		if err != nil || rebuilt.Size() != tree.Size() || rebuilt.Root() != tree.Root() {
			t.Fatalf("TreeFromStored(%d) = %v, differs from the tree", n+1, err)
		}
		next := tlog.RecordHash([]byte("next"))
		a, b := tree, rebuilt
		a.Append(next, nil)
		b.Append(next, nil)
		if a.Root() != b.Root() {
			t.Fatalf("a tree rebuilt at %d leaves continues differently", n+1)
		}
	}
}

// TestChainWritesCanonicalLines: the chain writes each event in canonical
// form, so a line's leaf hash is SHA-256(0x00 || line), which the next
// event's prev repeats, whatever the order and spacing of the event given.
func TestChainWritesCanonicalLines(t *testing.T) {
	c, err := NewChain(ChainState{Origin: "h/1"})
	if err != nil {
		t.Fatal(err)
	}
	events := []string{
		`{"v":1,"type":"inference","id":"a","time":"2026-11-23T10:00:00Z","latency_ms":{"total":1.50,"ttft":2e-3}}`,
		"{ \"type\" : \"x\", \"id\":\"b\", \"note\":\"<tag> & \\u00e9\" }",
		`{}`,
	}
	var lines [][]byte
	for _, ev := range events {
		line, err := c.Append(nil, []byte(ev))
		if err != nil {
			t.Fatal(err)
		}
		canon, err := jcs.Append(nil, nil, line)
		if err != nil || !bytes.Equal(canon, line) {
			t.Fatalf("%s written as %s, not canonical (%s, %v)", ev, line, canon, err)
		}
		lines = append(lines, line)
	}
	if want := `{"id":"b","log":{"origin":"h/1","prev":"` + hex.EncodeToString(sha256Leaf(lines[0])) + `","seq":1},"note":"<tag> & é","type":"x"}`; string(lines[1]) != want {
		t.Errorf("second line\n%s\nwant\n%s", lines[1], want)
	}
	if !bytes.Contains(lines[0], []byte(`"latency_ms":{"total":1.5,"ttft":0.002}`)) {
		t.Errorf("numbers not canonical: %s", lines[0])
	}
	if !bytes.Contains(lines[2], []byte(`"prev":"`+hex.EncodeToString(sha256Leaf(lines[1]))+`"`)) {
		t.Errorf("third line does not chain to SHA-256(0x00 || second line): %s", lines[2])
	}
}

func sha256Leaf(line []byte) []byte {
	h := sha256.Sum256(append([]byte{0}, line...))
	return h[:]
}

// TestChainAddsLogToCanonicalEventsInOnePass: an event in canonical form
// (Event.AppendJSON) gets its "log" member spliced in without being parsed;
// the same event in encoding/json's member order is canonicalized whole.
// Both give the same lines, which are canonical, so the same leaves.
func TestChainAddsLogToCanonicalEventsInOnePass(t *testing.T) {
	fast, _ := NewChain(ChainState{Origin: "test-node/20261123T100000Z"})
	slow, _ := NewChain(ChainState{Origin: "test-node/20261123T100000Z"})
	key, gpu := "k1:97ec80fcbebd63cd2bdc8f0a95078437", "sha256:ab"
	names := []string{"Qwen/Qwen3-0.6B", "", "quote\" back\\ nl\n ctl\x01 \u2028 é 日本 bad\xff", "log", "\U0001F600"}
	for i := range 200 {
		n, ttft := int64(i*7), float64(i)/4
		ev := audit.Event{V: 1, Type: audit.TypeInference, ID: audit.NewID(), Time: audit.Timestamp(t0.Add(time.Duration(i) * time.Millisecond)),
			RequestID: fmt.Sprintf("req-%d", i), Method: "POST", Path: "/v1/chat/completions", Stream: i%2 == 0,
			Model:   audit.Model{Name: names[i%len(names)], Checksum: "blake3:00"},
			Input:   audit.Body{Hash: "sha256:00", Bytes: int64(i) << (i % 40), Tokens: &n},
			Output:  audit.Body{Hash: "sha256:11", Bytes: 3, FinishReason: "stop"},
			Latency: audit.Latency{Total: float64(i) + 0.125, TTFT: &ttft, Upstream: float64(i) * 2, Overhead: -0.5},
			Status:  audit.Status{Code: 200 + i%300, Outcome: audit.OutcomeOK}, Source: audit.Source{Host: "h", Version: "t"}}
		if i%3 == 0 {
			ev.APIKeyID, ev.GPU = &key, &gpu
		}
		if i%7 == 0 {
			// Numbers the one-pass check does not read (more significant
			// digits, exponents): the event is canonicalized whole, to the
			// same bytes.
			ttft = float64(i) / 3
			ev.Latency.Total, ev.Latency.Upstream = 1.5e-7, 1e21
		}
		if i%5 == 0 {
			ev.Payload = &audit.Payload{Age: []byte{byte(i)}, InputBytes: 1, OutputBytes: 2}
		}
		std, err := json.Marshal(&ev)
		if err != nil {
			t.Fatal(err)
		}
		line := ev.AppendJSON(nil)
		if _, ok := jcs.AppendInserted(nil, line, "log", []byte(`{}`)); !ok && i%7 != 0 {
			t.Fatalf("event %d: AppendJSON's line is not taken in one pass: %s", i, line)
		}
		a, err := fast.Append(nil, line)
		if err != nil {
			t.Fatal(err)
		}
		b, err := slow.Append(nil, std)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(a, b) {
			t.Fatalf("event %d:\none pass   %s\ncanonical %s", i, a, b)
		}
		if again, err := jcs.Append(nil, nil, a); err != nil || !bytes.Equal(again, a) {
			t.Fatalf("event %d: the line is not canonical: %s", i, a)
		}
	}
	if fast.Root() != slow.Root() {
		t.Error("the two chains' roots differ")
	}
}
