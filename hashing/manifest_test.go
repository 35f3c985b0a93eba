package hashing

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/zeebo/blake3"
)

// TestMain lets the test binary stand in for b3sum (reading standard input,
// as the documented recipe uses it) where the real tool is not installed.
func TestMain(m *testing.M) {
	if os.Getenv("HASHING_TEST_AS_B3SUM") == "1" {
		if len(os.Args) != 2 || os.Args[1] != "--no-names" {
			fmt.Fprintln(os.Stderr, "b3sum stand-in: only 'b3sum --no-names' reading stdin is implemented")
			os.Exit(2)
		}
		h := blake3.New()
		if _, err := io.Copy(h, os.Stdin); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		fmt.Println(hex.EncodeToString(h.Sum(nil)))
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// randomBytes returns n deterministic pseudo-random bytes.
func randomBytes(seed uint64, n int) []byte {
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

func writeFile(t testing.TB, name string, data []byte) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(name), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(name, data, 0o644); err != nil {
		t.Fatal(err)
	}
}

// modelDir builds a model directory in a temp dir and returns it with the
// contents of the files a manifest must list, by manifest path. It has
// nested directories, a link to a file and a link to a directory outside
// it (as in a Hugging Face snapshot), a hidden .git and .cache, a hidden
// file, files that are not part of a model, and a dangling link with a name
// that is not a model file's.
func modelDir(t testing.TB) (string, map[string][]byte) {
	t.Helper()
	root := t.TempDir()
	dir := filepath.Join(root, "snapshot")
	want := map[string][]byte{
		"config.json":                            []byte(`{"architectures":["LlamaForCausalLM"],"hidden_size":64}`),
		"generation_config.json":                 []byte(`{"temperature":0.6}`),
		"model-00001-of-00002.safetensors":       randomBytes(1, 3<<20+12345), // crosses read buffers
		"model-00002-of-00002.safetensors":       randomBytes(2, 1<<20),
		"model.safetensors.index.json":           []byte(`{"weight_map":{}}`),
		"tokenizer.json":                         []byte(`{"version":"1.0"}`),
		"tokenizer.model":                        randomBytes(3, 5000),
		"merges.txt":                             []byte("a b\n"),
		"chat_template.jinja":                    []byte("{{ messages }}"),
		"empty.bin":                              nil,
		"original/consolidated.00.pth":           randomBytes(4, 70000),
		"original/params.json":                   []byte(`{"dim":64}`),
		`odd name\with backslash.json`:           []byte(`{}`),
		"lora/adapter/adapter_config.json":       []byte(`{"r":8}`),
		"lora/adapter/adapter_model.safetensors": randomBytes(5, 9000),
	}
	for p, b := range want {
		writeFile(t, filepath.Join(dir, p), b)
	}
	// Links out of the directory, as a snapshot links into blobs/.
	blob := randomBytes(6, 100000)
	writeFile(t, filepath.Join(root, "blobs", "0123abcd"), blob)
	os.Symlink("../blobs/0123abcd", filepath.Join(dir, "linked.gguf"))
	want["linked.gguf"] = blob
	writeFile(t, filepath.Join(root, "extra", "vocab.txt"), []byte("hello\n"))
	os.Symlink("../extra", filepath.Join(dir, "linked-dir"))
	want["linked-dir/vocab.txt"] = []byte("hello\n")
	// Not part of the model.
	for _, p := range []string{".git/config.json", ".git/objects/ab/cdef.bin", ".cache/huggingface/x.safetensors",
		".hidden.json", "original/.DS_Store.json", "README.md", "LICENSE", "notes.txt", "images/logo.png"} {
		writeFile(t, filepath.Join(dir, p), []byte("not model "+p))
	}
	os.Symlink("nowhere", filepath.Join(dir, "dangling.md"))
	return dir, want
}

// recipeChecksum computes the model checksum of files the way Manifest's
// doc comment says, from the files' contents.
func recipeChecksum(files map[string][]byte) string {
	paths := make([]string, 0, len(files))
	for p := range files {
		paths = append(paths, p)
	}
	slices.Sort(paths) // byte order, as LC_ALL=C sort
	var text strings.Builder
	for _, p := range paths {
		s, b := sha256.Sum256(files[p]), blake3.Sum256(files[p])
		fmt.Fprintf(&text, "%x  %x  %d  %s\n", s, b, len(files[p]), p)
	}
	b := blake3.Sum256([]byte(text.String()))
	return "blake3:" + hex.EncodeToString(b[:])
}

func TestBuildManifest(t *testing.T) {
	dir, want := modelDir(t)
	for _, workers := range []int{0, 1, 3, 64} {
		t.Run(fmt.Sprintf("workers=%d", workers), func(t *testing.T) {
			m, err := BuildManifest(context.Background(), dir, ManifestOptions{Workers: workers})
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, f := range m.Files {
				got = append(got, f.Path)
				data, ok := want[f.Path]
				if !ok {
					t.Errorf("manifest lists %s, which is not a model file", f.Path)
					continue
				}
				s, b := sha256.Sum256(data), blake3.Sum256(data)
				if f.Size != int64(len(data)) || f.SHA256 != hex.EncodeToString(s[:]) || f.BLAKE3 != hex.EncodeToString(b[:]) {
					t.Errorf("%s: got size %d sha256 %s blake3 %s; want %d %x %x", f.Path, f.Size, f.SHA256, f.BLAKE3, len(data), s, b)
				}
			}
			if !slices.IsSorted(got) {
				t.Errorf("files not sorted by path: %q", got)
			}
			if len(got) != len(want) {
				t.Errorf("manifest lists %d files %q, want %d", len(got), got, len(want))
			}
			if wantSum := recipeChecksum(want); m.Checksum != wantSum {
				t.Errorf("checksum %s, recomputed from the recipe %s", m.Checksum, wantSum)
			}
			if m.HashedFiles != len(want) || m.CacheErr != nil {
				t.Errorf("HashedFiles %d, CacheErr %v; want %d, nil", m.HashedFiles, m.CacheErr, len(want))
			}
			// The canonical text hashes to the checksum.
			b := blake3.Sum256(m.AppendCanonical(nil))
			if "blake3:"+hex.EncodeToString(b[:]) != m.Checksum {
				t.Error("BLAKE3 of AppendCanonical is not the checksum")
			}
		})
	}
}

func TestManifestChecksumIgnoresOrder(t *testing.T) {
	files := []ManifestFile{
		{Path: "b.json", Size: 1, SHA256: strings.Repeat("1", 64), BLAKE3: strings.Repeat("2", 64)},
		{Path: "a/b.json", Size: 22, SHA256: strings.Repeat("3", 64), BLAKE3: strings.Repeat("4", 64)},
		{Path: "a.json", Size: 333, SHA256: strings.Repeat("5", 64), BLAKE3: strings.Repeat("6", 64)},
	}
	text := "" +
		strings.Repeat("5", 64) + "  " + strings.Repeat("6", 64) + "  333  a.json\n" +
		strings.Repeat("3", 64) + "  " + strings.Repeat("4", 64) + "  22  a/b.json\n" +
		strings.Repeat("1", 64) + "  " + strings.Repeat("2", 64) + "  1  b.json\n"
	want := Sum(BLAKE3, []byte(text))
	if got := ManifestChecksum(files); got != want {
		t.Errorf("ManifestChecksum = %s, want %s", got, want)
	}
	if got := string((&Manifest{Files: files}).AppendCanonical(nil)); got != text {
		t.Errorf("AppendCanonical = %q, want %q", got, text)
	}
	if files[0].Path != "b.json" {
		t.Error("ManifestChecksum reordered its argument")
	}
}

// TestManifestShellRecipe runs the shell recipe of Manifest's doc comment,
// taken from the source, and compares its result with BuildManifest's.
func TestManifestShellRecipe(t *testing.T) {
	for _, tool := range []string{"bash", "find", "sed", "sort", "sha256sum", "cut", "stat"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not installed", tool)
		}
	}
	src, err := os.ReadFile("manifest.go")
	if err != nil {
		t.Fatal(err)
	}
	var recipe []string
	for _, line := range strings.Split(string(src), "\n") {
		if strings.HasPrefix(line, "//\tcd DIR && find") {
			recipe = append(recipe[:0], `cd "$1" && find`+strings.TrimPrefix(line, "//\tcd DIR && find"))
			continue
		}
		if len(recipe) > 0 && strings.HasPrefix(line, "//\t") {
			recipe = append(recipe, strings.TrimPrefix(line, "//\t"))
			if strings.HasPrefix(strings.TrimSpace(line[3:]), "done | b3sum") {
				break
			}
		}
	}
	if len(recipe) < 3 {
		t.Fatalf("recipe not found in manifest.go's doc comment: %q", recipe)
	}
	env := os.Environ()
	if _, err := exec.LookPath("b3sum"); err != nil {
		self, err := os.Executable()
		if err != nil {
			t.Fatal(err)
		}
		bin := t.TempDir()
		writeFile(t, filepath.Join(bin, "b3sum"), []byte("#!/bin/sh\n"+
			// (A race-enabled binary otherwise sleeps a second at exit.)
			"HASHING_TEST_AS_B3SUM=1 GORACE=atexit_sleep_ms=0 exec '"+self+"' \"$@\"\n"))
		os.Chmod(filepath.Join(bin, "b3sum"), 0o755)
		env = append(env, "PATH="+bin+string(os.PathListSeparator)+os.Getenv("PATH"))
		t.Log("b3sum not installed: the test binary stands in for it")
	}
	dir, want := modelDir(t)
	os.Remove(filepath.Join(dir, "dangling.md")) // find -L reports a dangling link
	cmd := exec.Command("bash", "-e", "-o", "pipefail", "-c", strings.Join(recipe, "\n"), "recipe", dir)
	cmd.Env = env
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("recipe: %v\n%s\n%s", err, strings.Join(recipe, "\n"), out)
	}
	m, err := BuildManifest(context.Background(), dir, ManifestOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if got := "blake3:" + strings.TrimSpace(string(out)); got != m.Checksum || got != recipeChecksum(want) {
		t.Errorf("shell recipe gives %s, BuildManifest %s", got, m.Checksum)
	}
}

func TestSHA256SumChecksAppendSHA256Sum(t *testing.T) {
	if _, err := exec.LookPath("sha256sum"); err != nil {
		t.Skip("sha256sum not installed")
	}
	dir, _ := modelDir(t)
	m, err := BuildManifest(context.Background(), dir, ManifestOptions{})
	if err != nil {
		t.Fatal(err)
	}
	sums := filepath.Join(t.TempDir(), "SHA256SUMS")
	writeFile(t, sums, m.AppendSHA256Sum(nil))
	check := func() (string, error) {
		cmd := exec.Command("sha256sum", "--check", "--strict", sums)
		cmd.Dir = dir
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	out, err := check()
	if err != nil {
		t.Fatalf("sha256sum -c: %v\n%s", err, out)
	}
	if n := strings.Count(out, ": OK\n"); n != len(m.Files) {
		t.Errorf("sha256sum checked %d files, want %d:\n%s", n, len(m.Files), out)
	}
	// And it notices a change.
	f, _ := os.OpenFile(filepath.Join(dir, "tokenizer.model"), os.O_WRONLY, 0)
	f.WriteAt([]byte{'!'}, 100)
	f.Close()
	if out, err := check(); err == nil || !strings.Contains(out, "tokenizer.model: FAILED") {
		t.Errorf("sha256sum -c accepted a changed file: %v\n%s", err, out)
	}
}

// countingOpen counts the files BuildManifest opens.
func countingOpen(n *atomic.Int64) func(string) (io.ReadCloser, error) {
	return func(name string) (io.ReadCloser, error) {
		n.Add(1)
		return os.Open(name)
	}
}

func TestManifestCache(t *testing.T) {
	dir, want := modelDir(t)
	cache := filepath.Join(t.TempDir(), "data", "manifest-cache.json")
	var opened atomic.Int64
	build := func(t *testing.T, dir string) *Manifest {
		t.Helper()
		opened.Store(0)
		m, err := BuildManifest(context.Background(), dir, ManifestOptions{CacheFile: cache, open: countingOpen(&opened)})
		if err != nil {
			t.Fatal(err)
		}
		if int64(m.HashedFiles) != opened.Load() {
			t.Errorf("HashedFiles %d, but %d files were opened", m.HashedFiles, opened.Load())
		}
		return m
	}
	first := build(t, dir)
	if first.HashedFiles != len(want) || first.CacheErr != nil {
		t.Fatalf("first build hashed %d files (cache error %v), want %d", first.HashedFiles, first.CacheErr, len(want))
	}
	if fi, err := os.Stat(cache); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("cache file: %v, %v", fi, err)
	}
	bump := func(rel string) {
		p := filepath.Join(dir, rel)
		fi, _ := os.Stat(p)
		mt := fi.ModTime().Add(time.Second)
		if err := os.Chtimes(p, mt, mt); err != nil {
			t.Fatal(err)
		}
	}
	other, _ := modelDir(t) // a second directory sharing the cache, like an adapter
	steps := []struct {
		name       string
		change     func()
		dir        string
		wantHashed int
		wantErr    string // in CacheErr
	}{
		{"unchanged", func() {}, dir, 0, ""},
		{"touched file", func() { bump("config.json") }, dir, 1, ""},
		{"touched through a link", func() { bump("linked.gguf") }, dir, 1, ""},
		{"a second directory", func() {}, other, len(want), ""},
		{"first directory still cached", func() {}, dir, 0, ""},
		{"second directory still cached", func() {}, other, 0, ""},
		{"new file", func() { writeFile(t, filepath.Join(dir, "new.json"), []byte("{}")) }, dir, 1, ""},
		{"removed file", func() { os.Remove(filepath.Join(dir, "new.json")) }, dir, 0, ""},
		{"replaced file, same size and mtime", func() {
			p := filepath.Join(dir, "tokenizer.json")
			fi, _ := os.Stat(p)
			os.Remove(p)
			writeFile(t, p, []byte(`{"version":"2.0"}`)) // another inode
			os.Chtimes(p, fi.ModTime(), fi.ModTime())
		}, dir, 1, ""},
		{"corrupt cache", func() { writeFile(t, cache, []byte(`{"version":1,"files":{"/x": [`)) }, dir, len(want), "corrupt"},
		{"rewritten after corruption", func() {}, dir, 0, ""},
		{"cache of another version", func() { writeFile(t, cache, []byte(`{"version":99,"files":{}}`)) }, dir, len(want), "version 99"},
		{"unreadable cache path", func() { os.Remove(cache); os.Mkdir(cache, 0o700) }, dir, len(want), "manifest cache"},
	}
	for _, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			st.change()
			m := build(t, st.dir)
			if m.HashedFiles != st.wantHashed {
				t.Errorf("hashed %d files, want %d", m.HashedFiles, st.wantHashed)
			}
			if st.wantErr == "" && m.CacheErr != nil || st.wantErr != "" && (m.CacheErr == nil || !strings.Contains(m.CacheErr.Error(), st.wantErr)) {
				t.Errorf("CacheErr %v, want %q", m.CacheErr, st.wantErr)
			}
			fresh, err := BuildManifest(context.Background(), st.dir, ManifestOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if m.Checksum != fresh.Checksum || !slices.Equal(m.Files, fresh.Files) {
				t.Errorf("manifest from the cache differs from a fresh one")
			}
		})
	}
}

// TestManifestCacheSeesRewriteWithOldMtime: a file rewritten in place, same
// size, with its modification time set back, is hashed again (its change
// time moved).
func TestManifestCacheSeesRewriteWithOldMtime(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "model.safetensors")
	writeFile(t, p, []byte("weights v1"))
	fi, _ := os.Stat(p)
	if statKey(fi).CtimeNS == 0 {
		t.Skip("no change time on this platform")
	}
	cache := filepath.Join(dir, ".cache.json")
	first, err := BuildManifest(context.Background(), dir, ManifestOptions{CacheFile: cache})
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(10 * time.Millisecond)
	os.WriteFile(p, []byte("weights v2"), 0o644)
	os.Chtimes(p, fi.ModTime(), fi.ModTime())
	second, err := BuildManifest(context.Background(), dir, ManifestOptions{CacheFile: cache})
	if err != nil {
		t.Fatal(err)
	}
	if second.HashedFiles != 1 || second.Checksum == first.Checksum {
		t.Errorf("rewritten file: hashed %d, checksum changed %v", second.HashedFiles, second.Checksum != first.Checksum)
	}
}

func TestChecksumChangesWithAnyChange(t *testing.T) {
	flip := func(rel string, off func(size int64) int64) func(string) {
		return func(dir string) {
			p := filepath.Join(dir, rel)
			b, _ := os.ReadFile(p)
			b[off(int64(len(b)))] ^= 1
			os.WriteFile(p, b, 0o644)
		}
	}
	tests := []struct {
		name   string
		change func(dir string)
	}{
		{"first byte of a shard", flip("model-00001-of-00002.safetensors", func(int64) int64 { return 0 })},
		{"byte at a buffer boundary", flip("model-00001-of-00002.safetensors", func(int64) int64 { return manifestBufferSize })},
		{"last byte of a shard", flip("model-00001-of-00002.safetensors", func(n int64) int64 { return n - 1 })},
		{"config", flip("config.json", func(int64) int64 { return 10 })},
		{"chat template", flip("chat_template.jinja", func(int64) int64 { return 3 })},
		{"nested file", flip("lora/adapter/adapter_config.json", func(int64) int64 { return 2 })},
		{"linked blob", flip("linked.gguf", func(n int64) int64 { return n / 2 })},
		{"appended byte", func(dir string) {
			f, _ := os.OpenFile(filepath.Join(dir, "empty.bin"), os.O_APPEND|os.O_WRONLY, 0)
			f.Write([]byte{0})
			f.Close()
		}},
		{"renamed file", func(dir string) {
			os.Rename(filepath.Join(dir, "merges.txt"), filepath.Join(dir, "vocab.txt"))
		}},
		{"added file", func(dir string) { writeFile(t, filepath.Join(dir, "special_tokens_map.json"), []byte("{}")) }},
		{"removed file", func(dir string) { os.Remove(filepath.Join(dir, "tokenizer.model")) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir, _ := modelDir(t)
			before, err := BuildManifest(context.Background(), dir, ManifestOptions{})
			if err != nil {
				t.Fatal(err)
			}
			tt.change(dir)
			after, err := BuildManifest(context.Background(), dir, ManifestOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if after.Checksum == before.Checksum {
				t.Errorf("checksum unchanged: %s", after.Checksum)
			}
		})
	}
	t.Run("non-model file", func(t *testing.T) {
		dir, _ := modelDir(t)
		before, _ := BuildManifest(context.Background(), dir, ManifestOptions{})
		writeFile(t, filepath.Join(dir, "README.md"), []byte("changed"))
		writeFile(t, filepath.Join(dir, ".git", "HEAD"), []byte("changed"))
		after, _ := BuildManifest(context.Background(), dir, ManifestOptions{})
		if after.Checksum != before.Checksum {
			t.Error("checksum changed with a file that is not part of the model")
		}
	})
}

// hookReader wraps a file, calling onRead before each Read.
type hookReader struct {
	*os.File
	onRead func() error
}

func (r hookReader) Read(p []byte) (int, error) {
	if err := r.onRead(); err != nil {
		return 0, err
	}
	return r.File.Read(p)
}

func TestBuildManifestCancel(t *testing.T) {
	dir, _ := modelDir(t)
	ctx, cancel := context.WithCancel(context.Background())
	var reads atomic.Int64
	var last ManifestProgress
	_, err := BuildManifest(ctx, dir, ManifestOptions{
		Progress: func(p ManifestProgress) { last = p },
		open: func(name string) (io.ReadCloser, error) {
			f, err := os.Open(name)
			return hookReader{f, func() error {
				if reads.Add(1) == 2 {
					cancel()
				}
				return nil
			}}, err
		},
	})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("error %v, want context.Canceled", err)
	}
	if !strings.Contains(err.Error(), dir) {
		t.Errorf("error %q does not name the file being hashed", err)
	}
	if n := reads.Load(); n > 4 {
		t.Errorf("%d reads after cancellation at the second", n)
	}
	if !last.Done || last.BytesDone >= last.Bytes {
		t.Errorf("last progress %+v: want Done, with bytes left", last)
	}

	// A context done before the start hashes nothing.
	reads.Store(0)
	if _, err := BuildManifest(ctx, dir, ManifestOptions{open: countingOpen(&reads)}); !errors.Is(err, context.Canceled) || reads.Load() != 0 {
		t.Errorf("canceled context: error %v, %d files opened", err, reads.Load())
	}
}

func TestBuildManifestErrors(t *testing.T) {
	root := t.TempDir()
	notDir := filepath.Join(root, "file.safetensors")
	writeFile(t, notDir, []byte("x"))
	empty := filepath.Join(root, "empty")
	writeFile(t, filepath.Join(empty, "README.md"), []byte("no weights here"))
	writeFile(t, filepath.Join(empty, ".git", "config.json"), []byte("{}"))
	dangling := filepath.Join(root, "dangling")
	writeFile(t, filepath.Join(dangling, "config.json"), []byte("{}"))
	os.Symlink("../blobs/missing", filepath.Join(dangling, "model.safetensors"))
	loop := filepath.Join(root, "loop")
	writeFile(t, filepath.Join(loop, "config.json"), []byte("{}"))
	os.MkdirAll(filepath.Join(loop, "sub"), 0o755)
	os.Symlink("..", filepath.Join(loop, "sub", "up"))
	newline := filepath.Join(root, "newline")
	writeFile(t, filepath.Join(newline, "a\nb.json"), []byte("{}"))
	readErr := filepath.Join(root, "readerr")
	writeFile(t, filepath.Join(readErr, "config.json"), []byte("{}"))
	writeFile(t, filepath.Join(readErr, "model.safetensors"), randomBytes(9, 3<<20))

	// failOn opens files, the one whose name ends with suffix failing at
	// its second read.
	failOn := func(suffix string) func(string) (io.ReadCloser, error) {
		return func(name string) (io.ReadCloser, error) {
			f, err := os.Open(name)
			if !strings.HasSuffix(name, suffix) {
				return f, err
			}
			var n int
			return hookReader{f, func() error {
				if n++; n == 2 {
					return errors.New("input/output error")
				}
				return nil
			}}, err
		}
	}
	tests := []struct {
		name string
		dir  string
		open func(string) (io.ReadCloser, error)
		want []string
	}{
		{"missing", filepath.Join(root, "nope"), nil, []string{"model directory", filepath.Join(root, "nope"), "no such file"}},
		{"not a directory", notDir, nil, []string{notDir, "is not a directory"}},
		{"no model files", empty, nil, []string{empty, "holds no model files"}},
		{"dangling link to weights", dangling, nil, []string{filepath.Join(dangling, "model.safetensors"), "no such file"}},
		{"link loop", loop, nil, []string{filepath.Join(loop, "sub", "up"), "loop"}},
		{"newline in a name", newline, nil, []string{"control character"}},
		{"read error", readErr, failOn(".safetensors"), []string{"read model file " + filepath.Join(readErr, "model.safetensors"), "input/output error"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cache := filepath.Join(t.TempDir(), "cache.json")
			m, err := BuildManifest(context.Background(), tt.dir, ManifestOptions{open: tt.open, CacheFile: cache})
			if err == nil {
				t.Fatalf("no error; manifest %+v", m)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
			if strings.Contains(err.Error(), "\n") {
				t.Errorf("error is not one line: %q", err)
			}
		})
	}

	// After a read error the files hashed before it are cached: a retry
	// hashes only the one that failed (the largest is hashed first).
	cache := filepath.Join(t.TempDir(), "cache.json")
	if _, err := BuildManifest(context.Background(), readErr, ManifestOptions{CacheFile: cache, open: failOn("config.json"), Workers: 1}); err == nil {
		t.Fatal("no error")
	}
	m, err := BuildManifest(context.Background(), readErr, ManifestOptions{CacheFile: cache})
	if err != nil || m.HashedFiles != 1 {
		t.Errorf("retry: %v, hashed %d files, want 1", err, m.HashedFiles)
	}
}

func TestManifestProgress(t *testing.T) {
	dir, want := modelDir(t)
	var total int64
	for _, b := range want {
		total += int64(len(b))
	}
	var (
		mu      sync.Mutex
		reports []ManifestProgress
		inside  atomic.Bool
	)
	slow := func(name string) (io.ReadCloser, error) {
		f, err := os.Open(name)
		return hookReader{f, func() error { time.Sleep(40 * time.Millisecond); return nil }}, err
	}
	m, err := BuildManifest(context.Background(), dir, ManifestOptions{Workers: 2, open: slow, Progress: func(p ManifestProgress) {
		if inside.Swap(true) {
			t.Error("Progress called concurrently")
		}
		mu.Lock()
		reports = append(reports, p)
		mu.Unlock()
		inside.Store(false)
	}})
	if err != nil {
		t.Fatal(err)
	}
	if len(reports) < 2 {
		t.Fatalf("%d progress reports over a slow build, want some before the end", len(reports))
	}
	for i, p := range reports {
		if p.Files != len(want) || p.Bytes != total {
			t.Errorf("report %d: %+v, want totals %d files %d bytes", i, p, len(want), total)
		}
		if i > 0 && (p.BytesDone < reports[i-1].BytesDone || p.FilesDone < reports[i-1].FilesDone) {
			t.Errorf("report %d went backwards: %+v after %+v", i, p, reports[i-1])
		}
		if p.Done != (i == len(reports)-1) {
			t.Errorf("report %d of %d has Done=%v", i, len(reports), p.Done)
		}
	}
	if last := reports[len(reports)-1]; last.FilesDone != last.Files || last.BytesDone != last.Bytes || m.HashedBytes != total {
		t.Errorf("last report %+v, hashed %d bytes; want all %d", last, m.HashedBytes, total)
	}
}

func TestIsModelFile(t *testing.T) {
	for name, want := range map[string]bool{
		"model.safetensors": true, "pytorch_model-00001-of-00002.bin": true, "model-q4_k_m.gguf": true,
		"consolidated.00.pth": true, "training_args.pt": true, "config.json": true, "tokenizer.model": true,
		"cl100k_base.tiktoken": true, "merges.txt": true, "vocab.txt": true, "chat_template.jinja": true,
		"modeling_custom.py": true, "README.md": false, "LICENSE": false, "notes.txt": false, "logo.png": false,
		"model.SAFETENSORS": false, "safetensors": false,
	} {
		if IsModelFile(name) != want {
			t.Errorf("IsModelFile(%q) = %v", name, !want)
		}
	}
}
