package bench

import (
	"crypto/rand"
	"testing"
	"time"

	"golang.org/x/mod/sumdb/note"

	"github.com/auditproxy/auditproxy/audit"
)

func benchSigner(b *testing.B) (note.Signer, note.Verifiers) {
	skey, vkey, err := note.GenerateKey(rand.Reader, "bench")
	if err != nil {
		b.Fatal(err)
	}
	s, _ := note.NewSigner(skey)
	v, _ := note.NewVerifier(vkey)
	return s, note.VerifierList(v)
}

// BenchmarkChainAppend: placing one realistic event (about 700 bytes) in the
// log: the log member, RFC 8785 canonical form, leaf hash, tree update. It
// runs on the spool's committer, once per event.
func BenchmarkChainAppend(b *testing.B) {
	c, err := audit.NewChain(audit.ChainState{Origin: "gpu-node-17/20261123T100000Z"})
	if err != nil {
		b.Fatal(err)
	}
	event := realisticEvent(1, time.Now()).AppendJSON(nil)
	var dst []byte
	b.SetBytes(int64(len(event)))
	b.ReportAllocs()
	for b.Loop() {
		dst, err = c.Append(dst[:0], event)
		if err != nil {
			b.Fatal(err)
		}
		c.TakeStored()
	}
}

// BenchmarkVerify: the auditor's verification of a log of 100,000
// realistic events with a checkpoint every 1,000, per event, on one
// goroutine.
func BenchmarkVerify(b *testing.B) {
	s, keys := benchSigner(b)
	c, _ := audit.NewChain(audit.ChainState{Origin: "gpu-node-17/20261123T100000Z"})
	const n = 100_000
	lines := make([][]byte, 0, n+n/1000)
	t := time.Now()
	for i := range n {
		line, err := c.Append(nil, realisticEvent(int64(i), t).AppendJSON(nil))
		if err != nil {
			b.Fatal(err)
		}
		lines = append(lines, line)
		c.TakeStored()
		if (i+1)%1000 == 0 {
			cp, err := c.AppendCheckpointEvent(nil, s, t, 10*time.Second, i == n-1, audit.Source{Host: "h"})
			if err != nil {
				b.Fatal(err)
			}
			lines = append(lines, cp)
		}
	}
	var bytes int64
	for _, l := range lines {
		bytes += int64(len(l))
	}
	b.SetBytes(bytes / int64(len(lines)))
	b.ReportAllocs()
	b.ResetTimer()
	// One op is one event; past the log's end the events come again, as
	// at-least-once shipping delivers them, and count as duplicates.
	v := audit.NewVerifier(keys)
	for i := range b.N {
		v.Add(lines[i%len(lines)])
	}
	r := v.Report()
	b.StopTimer()
	if b.N >= len(lines) && !r.OK {
		b.Fatalf("log does not verify: %+v", r)
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
}
