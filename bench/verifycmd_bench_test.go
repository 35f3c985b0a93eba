package bench

import (
	"bytes"
	"crypto/rand"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/mod/sumdb/note"
)

// BenchmarkVerifyCommand: `auditproxy verify --pubkey KEY FILE` as an
// auditor runs it, on an export of 205,000 realistic events with a
// checkpoint every 1,000, with GOMAXPROCS=1 (one core; run the benchmark
// under taskset -c 0 to hold the process to it). One op is one run of the
// command over the whole file; events/s counts events of the file per
// second of wall time, cpu-s the command's user+system time. "canonical":
// the lines as the spool and export write them; "reencoded": the same
// events with their members in the order the event type declares them
// and "log" last, as an aggregator that re-encodes them may give them
// back. With AUDITPROXY_BENCH_DIR set, the binary, key and files are
// left in that directory, to profile the command by hand.
func BenchmarkVerifyCommand(b *testing.B) {
	dir := os.Getenv("AUDITPROXY_BENCH_DIR")
	if dir == "" {
		dir = b.TempDir()
	}
	bin := filepath.Join(dir, "auditproxy")
	build := exec.Command("go", "build", "-o", bin, "github.com/auditproxy/auditproxy/cmd/auditproxy")
	if out, err := build.CombinedOutput(); err != nil {
		b.Fatalf("go build: %v\n%s", err, out)
	}
	skey, vkey, err := note.GenerateKey(rand.Reader, "bench")
	if err != nil {
		b.Fatal(err)
	}
	s, _ := note.NewSigner(skey)
	pub := filepath.Join(dir, "signing.key.pub")
	os.WriteFile(pub, []byte(vkey+"\n"), 0o600)

	const n = 205_000
	lines, reencodedLines := benchLog(b, s, n)
	canonical := bytes.Join(append(lines, nil), []byte("\n"))
	reencoded := bytes.Join(append(reencodedLines, nil), []byte("\n"))
	for name, content := range map[string][]byte{"canonical": canonical, "reencoded": reencoded} {
		file := filepath.Join(dir, name+".ndjson")
		if err := os.WriteFile(file, content, 0o600); err != nil {
			b.Fatal(err)
		}
	}
	for _, name := range []string{"canonical", "reencoded"} {
		b.Run(name, func(b *testing.B) {
			file := filepath.Join(dir, name+".ndjson")
			st, _ := os.Stat(file)
			b.SetBytes(st.Size())
			var cpu time.Duration
			for range b.N {
				cmd := exec.Command(bin, "verify", "--pubkey", pub, file)
				cmd.Env = append(os.Environ(), "GOMAXPROCS=1")
				if out, err := cmd.CombinedOutput(); err != nil || !bytes.Contains(out, []byte("\nverified\n")) {
					b.Fatalf("verify: %v\n%s", err, out)
				}
				cpu += cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()
			}
			b.ReportMetric(float64(n)*float64(b.N)/b.Elapsed().Seconds(), "events/s")
			b.ReportMetric(cpu.Seconds()/float64(b.N), "cpu-s/op")
		})
	}
}
