package bench

import (
	"crypto/rand"
	"testing"
	"time"

	"github.com/valyala/fastjson"
	"golang.org/x/mod/sumdb/note"

	"github.com/auditproxy/auditproxy/audit"
	"github.com/auditproxy/auditproxy/auditlog"
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
	c, err := auditlog.NewChain(auditlog.ChainState{Origin: "gpu-node-17/20261123T100000Z"})
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
// goroutine. "as-written": the lines as the spool, export and a forwarding
// aggregator that keeps them give them (canonical form, hashed as they
// stand); "reencoded": the same events with their members in another order,
// as an aggregator that re-encodes them may give them back (canonicalized
// first). For one core, run it with -cpu 1 under taskset.
func BenchmarkVerify(b *testing.B) {
	s, keys := benchSigner(b)
	lines, reencoded := benchLog(b, s, 100_000)
	b.Run("as-written", func(b *testing.B) { benchVerify(b, keys, lines) })
	b.Run("reencoded", func(b *testing.B) { benchVerify(b, keys, reencoded) })
}

func benchVerify(b *testing.B, keys note.Verifiers, lines [][]byte) {
	var bytes int64
	for _, l := range lines {
		bytes += int64(len(l))
	}
	b.SetBytes(bytes / int64(len(lines)))
	b.ReportAllocs()
	b.ResetTimer()
	// One op is one event; past the log's end the events come again, as
	// at-least-once shipping delivers them, and count as duplicates.
	v := auditlog.NewVerifier(keys)
	for i := range b.N {
		v.Add(lines[i%len(lines)])
	}
	addDone := time.Now()
	r := v.Report()
	b.ReportMetric(float64(time.Since(addDone).Nanoseconds())/float64(b.N), "report-ns/op")
	b.StopTimer()
	if b.N >= len(lines) && !r.OK {
		b.Fatalf("log does not verify: %+v", r)
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
}

// benchLog returns a log of n realistic events with a checkpoint every
// 1,000 (a final one last), as lines: canonical, as the spool and export
// write them, and re-encoded, each event's members in the order its type
// declares them with "log" last, as an aggregator may give them back.
func benchLog(b *testing.B, s note.Signer, n int) (canonical, reencoded [][]byte) {
	c, _ := auditlog.NewChain(auditlog.ChainState{Origin: "gpu-node-17/20261123T100000Z"})
	canonical = make([][]byte, 0, n+n/1000)
	reencoded = make([][]byte, 0, n+n/1000)
	t := time.Now()
	var p fastjson.Parser
	for i := range n {
		ev := realisticEvent(int64(i), t).AppendJSON(nil)
		line, err := c.Append(nil, ev)
		if err != nil {
			b.Fatal(err)
		}
		canonical = append(canonical, line)
		v, err := p.ParseBytes(line)
		if err != nil {
			b.Fatal(err)
		}
		re := append(ev[:len(ev)-1:len(ev)-1], `,"log":`...)
		re = append(v.Get("log").MarshalTo(re), '}')
		reencoded = append(reencoded, re)
		c.TakeStored()
		if (i+1)%1000 == 0 {
			cp, err := c.AppendCheckpointEvent(nil, s, t, 10*time.Second, i == n-1, audit.Source{Host: "h"})
			if err != nil {
				b.Fatal(err)
			}
			canonical = append(canonical, cp)
			reencoded = append(reencoded, cp)
		}
	}
	return canonical, reencoded
}
