package bench

import (
	"flag"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/auditproxy/auditproxy/spool"
)

// BenchmarkSpoolCommit: the cost of recording one event through the spool
// with sync durability (issue #16): Append returns once the group commit
// holding the event is durable. One op is one realistic event (about 700
// bytes of JSON). writers=1 is a lone request, each event a commit of its
// own; writers=8 are eight concurrent requests sharing commits
// (events/commit). segment=default (64 MiB) does not rotate within a run:
// just opened, and settled (2 s after opening, once a spool that
// zero-fills its active segment in the background, issue #16, has done
// so: about a second for 64 MiB). segment=1MiB rotates every ~1,400 events,
// so that the cost of starting segments (and of sealing them beside the
// commits) is in the figure.
//
// It uses only the spool's public API, so that the same file measures an
// earlier commit: copy it into that tree's bench/ and build there.
func BenchmarkSpoolCommit(b *testing.B) {
	for _, c := range []struct {
		name   string
		seg    int64
		settle time.Duration
	}{{"segment=default", 0, 0}, {"segment=default-settled", 0, 2 * time.Second}, {"segment=1MiB", 1 << 20, 0}} {
		for _, writers := range []int{1, 8} {
			b.Run(fmt.Sprintf("%s/writers=%d", c.name, writers), func(b *testing.B) { benchSpoolCommit(b, c.seg, c.settle, writers) })
		}
	}
}

func benchSpoolCommit(b *testing.B, segmentMaxBytes int64, settle time.Duration, writers int) {
	sp, err := spool.Open(commitTempDir(b), spool.Options{Durability: spool.DurabilitySync, SegmentMaxBytes: segmentMaxBytes})
	if err != nil {
		b.Fatal(err)
	}
	defer sp.Close()
	time.Sleep(settle)
	reg := prometheus.NewRegistry()
	if err := sp.Register(reg); err != nil {
		b.Fatal(err)
	}
	events := make([][]byte, 64)
	now := time.Now()
	for i := range events {
		events[i] = realisticEvent(int64(i), now).AppendJSON(nil)
	}
	b.SetBytes(int64(len(events[0])))
	b.ReportAllocs()
	before := commitCount(b, reg)
	b.ResetTimer()
	runWriters(b, writers, func(w, i int) error { return sp.Append(events[(w*7+i)%len(events)]) })
	b.StopTimer()
	if commits := commitCount(b, reg) - before; commits > 0 {
		b.ReportMetric(float64(b.N)/float64(commits), "events/commit")
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(commits), "ns/commit")
	}
}

// commitCount returns how many commits auditproxy_spool_commit_seconds
// has observed.
func commitCount(b *testing.B, reg *prometheus.Registry) float64 {
	mfs, err := reg.Gather()
	if err != nil {
		b.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == "auditproxy_spool_commit_seconds" {
			return float64(mf.GetMetric()[0].GetHistogram().GetSampleCount())
		}
	}
	return 0
}

// -commitdir names the directory of BenchmarkCommit's and
// BenchmarkSpoolCommit's files; by default a temporary directory under
// os.TempDir (on the project's VM the same disk as a data dir).
var commitDir = flag.String("commitdir", "", "directory for the commit benchmarks' files (default: a temporary directory under os.TempDir)")

func commitTempDir(b *testing.B) string {
	b.Helper()
	if *commitDir == "" {
		return b.TempDir()
	}
	d, err := os.MkdirTemp(*commitDir, "commit-bench-")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { os.RemoveAll(d) })
	return d
}
