//go:build linux

package bench

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/auditproxy/auditproxy/internal/fsutil"
)

// The cost of one commit of the spool, without the spool (issue #16): a
// record of about 1 KiB written to a segment file and made durable before
// the next, the four ways a commit can do it:
//
//   - append+fsync: what the spool did (O_APPEND, fsync(2)). The file
//     grows with every commit, so every fsync also writes the inode.
//   - append+fdatasync: the same with fdatasync(2). The file's size is
//     needed to read the data back, so fdatasync writes the inode too.
//   - fallocate+fdatasync: the file preallocated to its full size first
//     (fallocate(2), mode 0, once), records written in place (pwrite) at the
//     logical end. The size no longer changes, but on ext4 the blocks are
//     "unwritten" extents: writing one converts it, a metadata change that
//     fdatasync must journal.
//   - zeroed+fdatasync: the file preallocated by writing zeros and fsyncing
//     once, records written in place: a commit changes data only.
//
// The preallocation itself is done with the timer stopped (it is the
// maintenance goroutine's work in the spool); BenchmarkSegmentPrepare
// measures it. dev-writes/op, dev-KiB/op and flushes/op are the disk's
// counters (/proc/diskstats) over the run divided by the records: other
// processes writing to the same disk inflate them. -commitdir names the
// directory (see spoolcommit_bench_test.go).
const (
	commitRecordSize = 1 << 10
	commitFileSize   = 64 << 20 // the spool's default SegmentMaxBytes
)

var commitVariants = []string{"append+fsync", "append+fdatasync", "fallocate+fdatasync", "zeroed+fdatasync"}

// commitFile is one variant's segment file and how it commits.
type commitFile struct {
	b       *testing.B
	variant string
	dir     string
	n       int
	f       *os.File
	off     int64 // the logical end: where the next record goes
}

func newCommitFile(b *testing.B, variant, dir string) *commitFile {
	c := &commitFile{b: b, variant: variant, dir: dir}
	c.next()
	b.Cleanup(func() { c.f.Close() })
	return c
}

// next starts a new file, preallocated as the variant wants; the caller
// stops the timer around it.
func (c *commitFile) next() {
	if c.f != nil {
		c.f.Close()
		os.Remove(c.f.Name())
	}
	c.n++
	path := filepath.Join(c.dir, fmt.Sprintf("%s-%d.seg", strings.ReplaceAll(c.variant, "+", "-"), c.n))
	flags := os.O_RDWR | os.O_CREATE | os.O_EXCL
	if strings.HasPrefix(c.variant, "append") {
		flags |= os.O_APPEND
	}
	f, err := os.OpenFile(path, flags, 0o600)
	if err != nil {
		c.b.Fatal(err)
	}
	switch {
	case strings.HasPrefix(c.variant, "fallocate"):
		err = fallocate(f, commitFileSize)
	case strings.HasPrefix(c.variant, "zeroed"):
		err = writeZeros(f, commitFileSize)
	}
	if err == nil {
		err = f.Sync()
	}
	if err == nil {
		err = fsutil.SyncDir(c.dir)
	}
	if err != nil {
		c.b.Fatal(err)
	}
	c.f, c.off = f, 0
}

// commit writes p at the logical end and makes it durable.
func (c *commitFile) commit(p []byte) error {
	if strings.HasPrefix(c.variant, "append") {
		if _, err := c.f.Write(p); err != nil {
			return err
		}
	} else if _, err := c.f.WriteAt(p, c.off); err != nil {
		return err
	}
	c.off += int64(len(p))
	if strings.HasSuffix(c.variant, "+fsync") {
		return c.f.Sync()
	}
	return fdatasync(c.f)
}

// full reports whether another n bytes would pass the preallocated size.
func (c *commitFile) full(n int) bool { return c.off+int64(n) > commitFileSize }

func fallocate(f *os.File, size int64) error {
	for {
		err := syscall.Fallocate(int(f.Fd()), 0, 0, size)
		if err != syscall.EINTR {
			return err
		}
	}
}

func fdatasync(f *os.File) error {
	for {
		err := syscall.Fdatasync(int(f.Fd()))
		if err != syscall.EINTR {
			return err
		}
	}
}

func writeZeros(f *os.File, size int64) error {
	zeros := make([]byte, 1<<20)
	for off := int64(0); off < size; off += int64(len(zeros)) {
		if _, err := f.WriteAt(zeros[:min(int64(len(zeros)), size-off)], off); err != nil {
			return err
		}
	}
	return nil
}

// commitRecord is a frame of about 1 KiB: a length, a checksum and a JSON
// object, as the spool writes one.
func commitRecord(i int) []byte {
	rec := make([]byte, 8, commitRecordSize)
	rec = append(rec, `{"id":"`...)
	rec = strconv.AppendInt(rec, int64(i), 10)
	rec = append(rec, `","pad":"`...)
	rec = append(rec, bytes.Repeat([]byte("x"), commitRecordSize-len(rec)-2)...)
	return append(rec, `"}`...)
}

// diskStats are the counters of the block device holding a path.
type diskStats struct{ writes, sectors, flushes int64 }

// readDiskStats reads /proc/diskstats for the device of dir (the first
// whole disk whose name prefixes the mount's source, e.g. vda for
// /dev/vda1); ok false where that cannot be found.
func readDiskStats(dir string) (diskStats, bool) {
	dev := deviceOf(dir)
	if dev == "" {
		return diskStats{}, false
	}
	data, err := os.ReadFile("/proc/diskstats")
	if err != nil {
		return diskStats{}, false
	}
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		if len(f) < 18 || f[2] != dev {
			continue
		}
		n := func(i int) int64 { v, _ := strconv.ParseInt(f[i], 10, 64); return v }
		return diskStats{writes: n(7), sectors: n(9), flushes: n(18)}, true
	}
	return diskStats{}, false
}

// deviceOf returns the block device name (vda) of the filesystem holding
// dir, from /proc/self/mountinfo's longest matching mount point.
func deviceOf(dir string) string {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return ""
	}
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return ""
	}
	best, dev := -1, ""
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		sep := -1
		for i, x := range f {
			if x == "-" {
				sep = i
				break
			}
		}
		if sep < 0 || len(f) < sep+3 || len(f) < 5 {
			continue
		}
		mp := f[4]
		if (abs == mp || strings.HasPrefix(abs, strings.TrimSuffix(mp, "/")+"/")) && len(mp) > best && strings.HasPrefix(f[sep+2], "/dev/") {
			best, dev = len(mp), strings.TrimPrefix(f[sep+2], "/dev/")
		}
	}
	return dev
}

func reportDisk(b *testing.B, before diskStats, ok bool, dir string, records int) {
	after, ok2 := readDiskStats(dir)
	if !ok || !ok2 || records == 0 {
		return
	}
	n := float64(records)
	b.ReportMetric(float64(after.writes-before.writes)/n, "dev-writes/op")
	b.ReportMetric(float64(after.sectors-before.sectors)*512/1024/n, "dev-KiB/op")
	b.ReportMetric(float64(after.flushes-before.flushes)/n, "flushes/op")
}

// BenchmarkCommit: one op is one record of 1 KiB written and made durable.
// writers=1 commits each record on its own (a lone request under sync
// durability); writers=2 and 8 are that many goroutines whose records are
// grouped: whoever finds no commit running writes and syncs everything
// pending (the spool's group commit, in small). records/commit says how
// many records a commit held. Run one variant at a time, alternately
// (-test.bench 'Commit/zeroed\+fdatasync/writers=1$'): the disk's latency
// drifts.
func BenchmarkCommit(b *testing.B) {
	for _, v := range commitVariants {
		b.Run(v, func(b *testing.B) {
			for _, writers := range []int{1, 2, 8} {
				b.Run(fmt.Sprintf("writers=%d", writers), func(b *testing.B) { benchCommit(b, v, writers) })
			}
		})
	}
}

func benchCommit(b *testing.B, variant string, writers int) {
	dir := commitTempDir(b)
	c := newCommitFile(b, variant, dir)
	recs := make([][]byte, 64)
	for i := range recs {
		recs[i] = commitRecord(i)
	}
	g := &grouper{c: c}
	g.cond = sync.NewCond(&g.mu)
	b.SetBytes(commitRecordSize)
	b.ReportAllocs()
	ds, ok := readDiskStats(dir)
	b.ResetTimer()
	start := time.Now()
	runWriters(b, writers, func(w, i int) error { return g.append(recs[(w*7+i)%len(recs)]) })
	elapsed := time.Since(start)
	b.StopTimer()
	reportDisk(b, ds, ok, dir, b.N)
	if g.commits > 0 {
		b.ReportMetric(float64(b.N)/float64(g.commits), "records/commit")
		b.ReportMetric(float64(elapsed.Nanoseconds())/float64(g.commits), "ns/commit")
	}
}

// grouper is a group commit: a record is durable once a commit that
// started after it was appended has finished.
type grouper struct {
	c              *commitFile
	mu             sync.Mutex
	cond           *sync.Cond
	pending, spare []byte
	seq, durable   uint64
	committing     bool
	commits        int
}

func (g *grouper) append(rec []byte) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.pending = append(g.pending, rec...)
	g.seq++
	mine := g.seq
	for g.durable < mine {
		if g.committing {
			g.cond.Wait()
			continue
		}
		g.committing = true
		buf, upto := g.pending, g.seq
		g.pending = g.spare[:0]
		g.mu.Unlock()
		if g.c.full(len(buf)) {
			g.c.b.StopTimer()
			g.c.next()
			g.c.b.StartTimer()
		}
		err := g.c.commit(buf)
		g.mu.Lock()
		g.spare, g.committing = buf, false
		if err != nil {
			g.cond.Broadcast()
			return err
		}
		g.durable = upto
		g.commits++
		g.cond.Broadcast()
	}
	return nil
}

// BenchmarkSegmentPrepare: what preparing a 64 MiB segment costs, off the
// commit path: create, preallocate (fallocate, or write zeros), fsync, and
// fsync the directory. The file is removed with the timer stopped.
func BenchmarkSegmentPrepare(b *testing.B) {
	for _, v := range []string{"fallocate", "zeroed"} {
		b.Run(v, func(b *testing.B) {
			dir := commitTempDir(b)
			b.SetBytes(commitFileSize)
			c := &commitFile{b: b, variant: v, dir: dir}
			for b.Loop() {
				c.next()
				b.StopTimer()
				c.f.Close()
				os.Remove(c.f.Name())
				c.f = nil
				b.StartTimer()
			}
		})
	}
}

// BenchmarkCommitDuringPrepare: commits of one writer (zeroed+fdatasync)
// while another goroutine prepares 64 MiB segments back to back, the three
// ways it can: fallocate; zeros written whole then fsynced; zeros written
// a MiB at a time, each MiB fdatasynced before the next (so that a
// commit's flush never waits behind more than a MiB). p50-ns and p99-ns
// are the commits' latencies; none: no preparation running.
func BenchmarkCommitDuringPrepare(b *testing.B) {
	for _, prep := range []string{"none", "fallocate", "zeroed", "zeroed-1MiB-steps", "zeroed-paced"} {
		b.Run(prep, func(b *testing.B) {
			dir := commitTempDir(b)
			c := newCommitFile(b, "zeroed+fdatasync", dir)
			stop := make(chan struct{})
			var wg sync.WaitGroup
			if prep != "none" {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for n := 0; ; n++ {
						select {
						case <-stop:
							return
						default:
						}
						if err := prepareFile(filepath.Join(dir, fmt.Sprintf("prep-%d", n)), prep); err != nil {
							b.Error(err)
							return
						}
					}
				}()
			}
			rec := commitRecord(1)
			lat := make([]time.Duration, 0, b.N)
			b.SetBytes(commitRecordSize)
			b.ResetTimer()
			for range b.N {
				if c.full(len(rec)) {
					b.StopTimer()
					c.next()
					b.StartTimer()
				}
				t := time.Now()
				if err := c.commit(rec); err != nil {
					b.Fatal(err)
				}
				lat = append(lat, time.Since(t))
			}
			b.StopTimer()
			close(stop)
			wg.Wait()
			slices.Sort(lat)
			b.ReportMetric(float64(lat[len(lat)/2].Nanoseconds()), "p50-ns")
			b.ReportMetric(float64(lat[len(lat)*99/100].Nanoseconds()), "p99-ns")
			b.ReportMetric(float64(lat[len(lat)-1].Nanoseconds()), "max-ns")
		})
	}
}

func prepareFile(path, how string) error {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	defer os.Remove(path)
	defer f.Close()
	switch how {
	case "fallocate":
		err = fallocate(f, commitFileSize)
	case "zeroed":
		err = writeZeros(f, commitFileSize)
	case "zeroed-paced":
		// fallocate first, then zeros in 256 KiB steps, each fdatasynced,
		// with a 2 ms pause after each: about 0.8 s for 64 MiB.
		err = fallocate(f, commitFileSize)
		zeros := make([]byte, 256<<10)
		for off := int64(0); off < commitFileSize && err == nil; off += int64(len(zeros)) {
			if _, err = f.WriteAt(zeros, off); err == nil {
				err = fdatasync(f)
			}
			time.Sleep(2 * time.Millisecond)
		}
	case "zeroed-1MiB-steps":
		zeros := make([]byte, 1<<20)
		for off := int64(0); off < commitFileSize && err == nil; off += int64(len(zeros)) {
			if _, err = f.WriteAt(zeros, off); err == nil {
				err = fdatasync(f)
			}
		}
	}
	if err == nil {
		err = f.Sync()
	}
	return err
}

// runWriters runs b.N calls of write on writers goroutines (w: the
// goroutine, i: its call) and returns once all are done; the first error
// fails the benchmark and ends its goroutine.
func runWriters(b *testing.B, writers int, write func(w, i int) error) {
	var wg sync.WaitGroup
	per := b.N / writers
	for w := range writers {
		n := per
		if w == 0 {
			n += b.N - per*writers
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range n {
				if err := write(w, i); err != nil {
					b.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
}
