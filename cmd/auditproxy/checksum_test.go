package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/auditproxy/auditproxy/hashing"
)

// checksumModelDir writes a small model directory.
func checksumModelDir(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	for name, data := range map[string]string{
		"config.json":                  `{"hidden_size":64}`,
		"model.safetensors":            strings.Repeat("weights ", 300000),
		"tokenizer.json":               `{"version":"1.0"}`,
		"original/consolidated.00.pth": "pth weights",
		"README.md":                    "not part of the model",
		".git/HEAD":                    "ref: refs/heads/main",
	} {
		p := filepath.Join(dir, name)
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func TestChecksumFormats(t *testing.T) {
	dir := checksumModelDir(t)
	want, err := hashing.BuildManifest(context.Background(), dir, hashing.ManifestOptions{})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name  string
		args  []string
		env   map[string]string
		check func(t *testing.T, stdout, stderr string)
	}{
		{"manifest", []string{dir}, nil, func(t *testing.T, stdout, stderr string) {
			lines := strings.SplitAfter(stdout, "\n")
			lines = lines[:len(lines)-1] // after the final newline
			last := lines[len(lines)-1]
			if last != "model checksum: "+want.Checksum+"\n" {
				t.Errorf("last line %q, want the model checksum %s", last, want.Checksum)
			}
			// The documented check: auditproxy checksum DIR | sed '$d' | b3sum
			text := strings.Join(lines[:len(lines)-1], "")
			if got := hashing.Sum(hashing.BLAKE3, []byte(text)); got != want.Checksum {
				t.Errorf("BLAKE3 of the lines before the last is %s, want %s", got, want.Checksum)
			}
			if text != string(want.AppendCanonical(nil)) || len(lines) != 5 {
				t.Errorf("manifest lines:\n%s", text)
			}
			for _, l := range lines[:len(lines)-1] {
				if f := strings.Split(strings.TrimSuffix(l, "\n"), "  "); len(f) != 4 || len(f[0]) != 64 || len(f[1]) != 64 {
					t.Errorf("line %q is not <sha256>  <blake3>  <size>  <path>", l)
				}
			}
			if stderr != "" {
				t.Errorf("stderr %q", stderr)
			}
		}},
		{"sha256sum", []string{"--format", "sha256sum", dir}, nil, func(t *testing.T, stdout, stderr string) {
			if stdout != string(want.AppendSHA256Sum(nil)) {
				t.Errorf("stdout %q", stdout)
			}
			if stderr != "model checksum: "+want.Checksum+"\n" {
				t.Errorf("stderr %q, want the model checksum", stderr)
			}
			if _, err := exec.LookPath("sha256sum"); err != nil {
				return
			}
			cmd := exec.Command("sha256sum", "--check", "--strict", "-")
			cmd.Dir, cmd.Stdin = dir, strings.NewReader(stdout)
			if out, err := cmd.CombinedOutput(); err != nil || strings.Count(string(out), ": OK") != 4 {
				t.Errorf("sha256sum -c: %v\n%s", err, out)
			}
		}},
		{"json, flag after DIR", []string{dir, "--format", "json"}, nil, func(t *testing.T, stdout, stderr string) {
			var got hashing.Manifest
			if err := json.Unmarshal([]byte(stdout), &got); err != nil {
				t.Fatal(err)
			}
			if got.Checksum != want.Checksum || len(got.Files) != 4 || got.Files[0] != want.Files[0] ||
				hashing.ManifestChecksum(got.Files) != want.Checksum {
				t.Errorf("json %s", stdout)
			}
			if !strings.Contains(stdout, `"sha256": "`) || !strings.Contains(stdout, `"checksum": "blake3:`) {
				t.Errorf("json field names: %s", stdout)
			}
		}},
		{"format from the environment", []string{dir}, map[string]string{"AUDITPROXY_FORMAT": "sha256sum"}, func(t *testing.T, stdout, stderr string) {
			if stdout != string(want.AppendSHA256Sum(nil)) {
				t.Errorf("stdout %q", stdout)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for k, v := range tt.env {
				t.Setenv(k, v)
			}
			var stdout, stderr bytes.Buffer
			if err := runChecksum(tt.args, &stdout, &stderr); err != nil {
				t.Fatalf("runChecksum(%q): %v", tt.args, err)
			}
			tt.check(t, stdout.String(), stderr.String())
		})
	}
}

func TestChecksumCache(t *testing.T) {
	dir := checksumModelDir(t)
	cache := filepath.Join(t.TempDir(), "manifest-cache.json")
	var out1, out2, stderr bytes.Buffer
	if err := runChecksum([]string{"--cache", cache, dir}, &out1, &stderr); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(cache); err != nil {
		t.Fatalf("no cache written: %v", err)
	}
	if err := runChecksum([]string{"--cache", cache, dir}, &out2, &stderr); err != nil || out1.String() != out2.String() {
		t.Errorf("second run: %v; output %q, first %q", err, out2.String(), out1.String())
	}
	// A corrupt cache is a warning, not a failure.
	os.WriteFile(cache, []byte("{garbage"), 0o600)
	out2.Reset()
	if err := runChecksum([]string{"--cache", cache, dir}, &out2, &stderr); err != nil || out1.String() != out2.String() {
		t.Errorf("corrupt cache: %v", err)
	}
	if !strings.Contains(stderr.String(), "auditproxy: checksum: warning: manifest cache "+cache+" is corrupt") {
		t.Errorf("stderr %q does not warn about the corrupt cache", stderr.String())
	}
}

func TestChecksumErrors(t *testing.T) {
	dir := checksumModelDir(t)
	file := filepath.Join(dir, "config.json")
	empty := t.TempDir()
	tests := []struct {
		name  string
		args  []string
		usage bool
		want  string
	}{
		{"no directory", nil, true, "checksum: give one model directory"},
		{"two directories", []string{dir, dir}, true, "checksum: give one model directory"},
		{"unknown format", []string{"--format", "xml", dir}, true, `unknown --format "xml"`},
		{"unknown flag", []string{"--fast", dir}, true, "flag provided but not defined: -fast"},
		{"missing directory", []string{filepath.Join(dir, "nope")}, false, "checksum: model directory: stat " + filepath.Join(dir, "nope") + ": no such file or directory"},
		{"not a directory", []string{file}, false, "checksum: model directory " + file + " is not a directory"},
		{"no model files", []string{empty}, false, "checksum: model directory " + empty + " holds no model files"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			err := runChecksum(tt.args, &stdout, &stderr)
			if err == nil {
				t.Fatalf("no error; stdout %q", stdout.String())
			}
			if errors.As(err, new(usageError)) != tt.usage || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q (usage error: %v), want %q (usage error: %v)", err, errors.As(err, new(usageError)), tt.want, tt.usage)
			}
			if strings.Contains(err.Error(), "\n") {
				t.Errorf("error is not one line: %q", err)
			}
			if stdout.Len() > 0 {
				t.Errorf("stdout %q", stdout.String())
			}
		})
	}
}

func TestChecksumProgress(t *testing.T) {
	clock := time.Unix(1000, 0)
	now := func() time.Time { return clock }
	report := func(p *checksumProgress, done int64, at time.Duration, last bool) {
		clock = time.Unix(1000, 0).Add(at)
		p.update(hashing.ManifestProgress{FilesDone: int(done / 500), Files: 4, BytesDone: done, Bytes: 2000, Done: last})
	}

	var plain bytes.Buffer
	p := &checksumProgress{w: &plain, now: now, start: now()}
	report(p, 100, 200*time.Millisecond, false)
	report(p, 500, 1900*time.Millisecond, false) // quiet for the first 2 s
	report(p, 700, 2100*time.Millisecond, false)
	report(p, 900, 4*time.Second, false) // then every 5 s
	report(p, 1800, 7200*time.Millisecond, false)
	report(p, 2000, 7400*time.Millisecond, true)
	lines := strings.Split(strings.TrimSuffix(plain.String(), "\n"), "\n")
	if len(lines) != 2 || !strings.HasPrefix(lines[0], "auditproxy: checksum: hashing model files: 700 B of 2.0 KiB (35%), 1 of 4 files, 315 B/s, 4s left") ||
		!strings.Contains(lines[1], "1.8 KiB of 2.0 KiB (90%), 3 of 4 files, 242 B/s, 1s left") {
		t.Errorf("plain progress:\n%s", plain.String())
	}

	var tty bytes.Buffer
	p = &checksumProgress{w: &tty, tty: true, now: now, start: now()}
	report(p, 100, 200*time.Millisecond, false)
	report(p, 1000, time.Second, false)
	report(p, 2000, 1200*time.Millisecond, true)
	if got := tty.String(); strings.Count(got, "\r") != 3 || !strings.Contains(got, "(50%)") || !strings.HasSuffix(got, "\r\x1b[K") {
		t.Errorf("terminal progress %q", got)
	}

	var quiet bytes.Buffer
	p = &checksumProgress{w: &quiet, now: now, start: now()}
	report(p, 2000, 300*time.Millisecond, true)
	p.summary(&hashing.Manifest{})
	if quiet.Len() > 0 {
		t.Errorf("a short run printed %q", quiet.String())
	}
}
