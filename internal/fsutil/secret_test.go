package fsutil

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
)

// TestCreateSecretFile: the file holds data, with mode 0600, and no
// temporary file is left beside it; a second create refuses to replace it
// and leaves it as it was.
func TestCreateSecretFile(t *testing.T) {
	for _, tc := range []struct {
		name string
		link func(string, string) error
	}{
		{"hard link", os.Link},
		{"no hard links", func(string, string) error { return &os.LinkError{Op: "link", Err: syscall.EPERM} }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			defer func(l func(string, string) error) { link = l }(link)
			link = tc.link
			dir := t.TempDir()
			path := filepath.Join(dir, "secret")
			if err := CreateSecretFile(path, []byte("first\n")); err != nil {
				t.Fatal(err)
			}
			checkSecret(t, path, "first\n")
			err := CreateSecretFile(path, []byte("second\n"))
			if !errors.Is(err, fs.ErrExist) {
				t.Errorf("second create: %v, want an error wrapping fs.ErrExist", err)
			}
			checkSecret(t, path, "first\n")
			if entries, _ := os.ReadDir(dir); len(entries) != 1 {
				t.Errorf("dir holds %v, want the secret alone", entries)
			}
		})
	}
}

// TestCreateSecretFileInAMissingDir: the directory is not created; that
// is the caller's choice (and mode).
func TestCreateSecretFileInAMissingDir(t *testing.T) {
	path := filepath.Join(t.TempDir(), "missing", "secret")
	if err := CreateSecretFile(path, []byte("x")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("create in a missing dir: %v, want fs.ErrNotExist", err)
	}
}

func checkSecret(t *testing.T, path, want string) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil || string(b) != want {
		t.Errorf("content %q (%v), want %q", b, err, want)
	}
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("mode %v (%v), want 0600", fi.Mode(), err)
	}
}

// TestLoadOrCreateSecretFile: the first call creates the file from
// generate, the next ones read it without generating; a failure to
// generate creates nothing.
func TestLoadOrCreateSecretFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "secret")
	if _, err := LoadOrCreateSecretFile(path, func() ([]byte, error) { return nil, errors.New("no entropy") }); err == nil {
		t.Error("a generate error was not returned")
	}
	if _, err := os.Stat(path); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("a failed generate left a file: %v", err)
	}
	b, err := LoadOrCreateSecretFile(path, func() ([]byte, error) { return []byte("one"), nil })
	if err != nil || string(b) != "one" {
		t.Fatalf("create: %q %v", b, err)
	}
	checkSecret(t, path, "one")
	b, err = LoadOrCreateSecretFile(path, func() ([]byte, error) { t.Error("generated again"); return []byte("two"), nil })
	if err != nil || string(b) != "one" {
		t.Errorf("load: %q %v", b, err)
	}
	if _, err := LoadOrCreateSecretFile(t.TempDir(), nil); err == nil {
		t.Error("a directory was read as a secret")
	}
}

// TestLoadOrCreateSecretFileConcurrently: of creators racing on one path,
// exactly one writes its content, and every one returns that content, never
// an empty or partial file.
func TestLoadOrCreateSecretFileConcurrently(t *testing.T) {
	for round := range 20 {
		path := filepath.Join(t.TempDir(), "secret")
		const n = 8
		var wg sync.WaitGroup
		got := make([][]byte, n)
		errs := make([]error, n)
		var mu sync.Mutex
		generated := 0
		for i := range n {
			wg.Go(func() {
				got[i], errs[i] = LoadOrCreateSecretFile(path, func() ([]byte, error) {
					mu.Lock()
					generated++
					mu.Unlock()
					return bytes.Repeat([]byte(fmt.Sprint(i)), 4096), nil
				})
			})
		}
		wg.Wait()
		want, err := os.ReadFile(path)
		if err != nil || len(want) != 4096 {
			t.Fatalf("round %d: the file holds %d bytes (%v)", round, len(want), err)
		}
		for i := range n {
			if errs[i] != nil || !bytes.Equal(got[i], want) {
				t.Fatalf("round %d: creator %d got %.8q... (%v), want the file's %.8q...", round, i, got[i], errs[i], want)
			}
		}
		if entries, _ := os.ReadDir(filepath.Dir(path)); len(entries) != 1 || generated < 1 {
			t.Errorf("round %d: dir holds %v after %d generated", round, entries, generated)
		}
	}
}
