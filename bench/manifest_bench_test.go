package bench

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/auditproxy/auditproxy/hashing"
)

// The model of the manifest benchmarks: four 256 MiB safetensors shards and
// the small files beside them.
const (
	benchShards     = 4
	benchShardBytes = 256 << 20
)

// writeBenchModel writes the benchmark model into dir and returns the paths
// of its shards. The shards are real random bytes (a sparse file would be
// read from the zero page, faster than any disk or page cache). They stay in
// the page cache after writing, so the benchmarks measure hashing, not the
// disk.
func writeBenchModel(b *testing.B, dir string) []string {
	b.Helper()
	rng := rand.NewChaCha8([32]byte{'m', 'o', 'd', 'e', 'l'})
	buf := make([]byte, 4<<20)
	var shards []string
	for i := range benchShards {
		p := filepath.Join(dir, fmt.Sprintf("model-%05d-of-%05d.safetensors", i+1, benchShards))
		f, err := os.Create(p)
		if err != nil {
			b.Fatal(err)
		}
		for n := 0; n < benchShardBytes; n += len(buf) {
			rng.Read(buf)
			if _, err := f.Write(buf); err != nil {
				b.Fatal(err)
			}
		}
		// Written back now, not while a benchmark runs.
		if err := f.Sync(); err != nil {
			b.Fatal(err)
		}
		if err := f.Close(); err != nil {
			b.Fatal(err)
		}
		shards = append(shards, p)
	}
	for name, s := range map[string]string{
		"config.json":                  `{"architectures":["LlamaForCausalLM"]}`,
		"generation_config.json":       `{"temperature":0.6}`,
		"tokenizer.json":               `{"version":"1.0"}`,
		"tokenizer_config.json":        `{"chat_template":"{{ messages }}"}`,
		"special_tokens_map.json":      `{}`,
		"model.safetensors.index.json": `{"weight_map":{}}`,
	} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(s), 0o644); err != nil {
			b.Fatal(err)
		}
	}
	return shards
}

// BenchmarkManifest hashes a 1 GiB model (SHA-256 and BLAKE3 in one read
// pass), on GOMAXPROCS workers and on one, a single 256 MiB shard alone,
// and, for comparison over the same files, the commands sha256sum, b3sum
// and openssl dgst -sha256 where installed (GNU sha256sum does not use the
// CPU's SHA instructions unless coreutils was built with OpenSSL; openssl
// does).
func BenchmarkManifest(b *testing.B) {
	root := b.TempDir()
	dir := filepath.Join(root, "model")
	os.Mkdir(dir, 0o755)
	shards := writeBenchModel(b, dir)
	one := filepath.Join(root, "one-shard")
	os.Mkdir(one, 0o755)
	if err := os.Symlink(shards[0], filepath.Join(one, "model.safetensors")); err != nil {
		b.Fatal(err)
	}
	total := int64(benchShards * benchShardBytes)

	build := func(dir string, workers int, bytes int64) func(b *testing.B) {
		return func(b *testing.B) {
			b.SetBytes(bytes)
			for b.Loop() {
				m, err := hashing.BuildManifest(context.Background(), dir, hashing.ManifestOptions{Workers: workers})
				if err != nil {
					b.Fatal(err)
				}
				if m.HashedBytes < bytes {
					b.Fatalf("hashed %d bytes, want %d", m.HashedBytes, bytes)
				}
			}
		}
	}
	b.Run(fmt.Sprintf("sha256+blake3/workers=%d", runtime.GOMAXPROCS(0)), build(dir, 0, total))
	b.Run("sha256+blake3/workers=1", build(dir, 1, total))
	b.Run("sha256+blake3/one-shard", build(one, 0, benchShardBytes))

	// Each tool hashes the shards one after the other, on one core.
	for _, tool := range [][]string{{"sha256sum"}, {"b3sum"}, {"openssl", "dgst", "-sha256"}} {
		path, err := exec.LookPath(tool[0])
		if err != nil {
			b.Logf("%s not installed: no comparison", tool[0])
			continue
		}
		b.Run(strings.Join(tool, "-"), func(b *testing.B) {
			b.SetBytes(total)
			for b.Loop() {
				if out, err := exec.Command(path, append(tool[1:], shards...)...).CombinedOutput(); err != nil {
					b.Fatalf("%s: %v\n%s", tool, err, out)
				}
			}
		})
	}

	// openssl on every core: one process per shard, GOMAXPROCS at a time,
	// the bound issue #16 sets for the manifest (its SHA-256 column is
	// required, so SHA-256 on all cores is the limit, not b3sum).
	if path, err := exec.LookPath("openssl"); err == nil {
		b.Run(fmt.Sprintf("openssl-dgst-sha256/parallel=%d", runtime.GOMAXPROCS(0)), func(b *testing.B) {
			b.SetBytes(total)
			for b.Loop() {
				jobs := make(chan string, len(shards))
				for _, s := range shards {
					jobs <- s
				}
				close(jobs)
				errs := make(chan error, runtime.GOMAXPROCS(0))
				for range runtime.GOMAXPROCS(0) {
					go func() {
						var err error
						for s := range jobs {
							if out, e := exec.Command(path, "dgst", "-sha256", s).CombinedOutput(); e != nil && err == nil {
								err = fmt.Errorf("openssl dgst -sha256 %s: %v\n%s", s, e, out)
							}
						}
						errs <- err
					}()
				}
				for range runtime.GOMAXPROCS(0) {
					if err := <-errs; err != nil {
						b.Fatal(err)
					}
				}
			}
		})
	}
}

// BenchmarkManifestWarmCache is a restart with unchanged weights: every
// digest comes from the cache, nothing is read.
func BenchmarkManifestWarmCache(b *testing.B) {
	dir := b.TempDir()
	writeBenchModel(b, dir)
	opts := hashing.ManifestOptions{CacheFile: filepath.Join(b.TempDir(), "manifest-cache.json")}
	first, err := hashing.BuildManifest(context.Background(), dir, opts)
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		m, err := hashing.BuildManifest(context.Background(), dir, opts)
		if err != nil {
			b.Fatal(err)
		}
		if m.HashedFiles != 0 || m.Checksum != first.Checksum {
			b.Fatalf("warm cache hashed %d files", m.HashedFiles)
		}
	}
}
