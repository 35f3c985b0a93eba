package hashing

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestDigestKnownAnswers(t *testing.T) {
	// Values from b3sum and sha256sum of the same bytes.
	tests := []struct {
		alg  Algorithm
		in   string
		want string
	}{
		{BLAKE3, "", "blake3:af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262"},
		{BLAKE3, "abc", "blake3:6437b3ac38465133ffb63b75273a8db548c558465d79db03fd359c6cd5bd9d85"},
		{SHA256, "", "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"},
		{SHA256, "abc", "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"},
	}
	for _, tt := range tests {
		if got := Sum(tt.alg, []byte(tt.in)); got != tt.want {
			t.Errorf("Sum(%s, %q) = %s, want %s", tt.alg, tt.in, got, tt.want)
		}
		h := NewHasher(tt.alg)
		for i := range len(tt.in) { // byte by byte, as a stream may arrive
			h.Write([]byte{tt.in[i]})
		}
		if got := h.Digest(); got != tt.want || h.Bytes() != int64(len(tt.in)) {
			t.Errorf("Hasher(%s, %q) = %s (%d bytes), want %s", tt.alg, tt.in, got, h.Bytes(), tt.want)
		}
		h.Reset()
		if got := h.Digest(); got != Sum(tt.alg, nil) {
			t.Errorf("after Reset, digest %s is not the empty digest", got)
		}
	}
}

func TestParseAlgorithm(t *testing.T) {
	for _, s := range []string{"blake3", "sha256"} {
		if a, err := ParseAlgorithm(s); err != nil || string(a) != s {
			t.Errorf("ParseAlgorithm(%q) = %q, %v", s, a, err)
		}
	}
	if _, err := ParseAlgorithm("md5"); err == nil || !strings.Contains(err.Error(), "md5") {
		t.Errorf("ParseAlgorithm(md5) error = %v", err)
	}
}

func TestKeyID(t *testing.T) {
	k1, err := NewKeyIDer(bytes.Repeat([]byte{1}, 32))
	if err != nil {
		t.Fatal(err)
	}
	k2, _ := NewKeyIDer(bytes.Repeat([]byte{2}, 32))
	a, b := k1.ID([]byte("sk-abc")), k1.ID([]byte("sk-abd"))
	if a != k1.ID([]byte("sk-abc")) {
		t.Error("key id is not stable")
	}
	if a == b || a == k2.ID([]byte("sk-abc")) {
		t.Error("key id does not depend on key and secret")
	}
	if !strings.HasPrefix(a, "k1:") || len(a) != 3+32 || strings.Contains(a, "abc") {
		t.Errorf("key id %q: want k1: and 32 hex digits", a)
	}
	if _, err := NewKeyIDer(make([]byte, 16)); err == nil {
		t.Error("a 16-byte secret was accepted")
	}
}

func TestKeyIDKnownAnswers(t *testing.T) {
	// b3sum --keyed of each token, key 32 bytes of 0x01, first 16 bytes. The
	// long token (more than one 8 KiB SIMD batch) in between checks that a
	// reused state starts from the key again.
	k, err := NewKeyIDer(bytes.Repeat([]byte{1}, 32))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct{ token, want string }{
		{"sk-abc", "k1:04ff2a2147caf314154f1d1f77851289"},
		{strings.Repeat("x", 9000), "k1:3af36136a1d875c1608aedb3f0a20fb7"},
		{"sk-abc", "k1:04ff2a2147caf314154f1d1f77851289"},
	}
	for range 3 {
		for _, tt := range tests {
			if got := k.ID([]byte(tt.token)); got != tt.want {
				t.Errorf("ID(%d-byte token) = %s, want %s", len(tt.token), got, tt.want)
			}
		}
	}
	long := strings.Repeat("y", 9000)
	for range 3 { // Sum256 reuses its states too
		if got := Sum(BLAKE3, []byte(long)); got != "blake3:80bdcd28021788a7a778bd3ae884f3f30ef32da7cbce2e15581516b192625c6b" { // b3sum
			t.Errorf("Sum(9000 bytes) = %s", got)
		}
		if got := Sum(BLAKE3, []byte("abc")); got != "blake3:6437b3ac38465133ffb63b75273a8db548c558465d79db03fd359c6cd5bd9d85" {
			t.Errorf("Sum(abc) after a long input = %s", got)
		}
	}
}

func TestLoadOrCreateKeyIDSecret(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "sub", "key-id.secret")
	s1, err := LoadOrCreateKeyIDSecret(path)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("secret file mode %v, want 0600", fi.Mode().Perm())
	}
	s2, err := LoadOrCreateKeyIDSecret(path)
	if err != nil || !bytes.Equal(s1, s2) || len(s1) != KeyIDSecretSize {
		t.Errorf("reloaded secret differs or has the wrong size: %v", err)
	}
	bad := filepath.Join(dir, "bad")
	os.WriteFile(bad, []byte("not hex"), 0o600)
	if _, err := LoadOrCreateKeyIDSecret(bad); err == nil || !strings.Contains(err.Error(), "64 hex characters") {
		t.Errorf("bad secret file: error %v", err)
	}
}

func BenchmarkHasher(b *testing.B) {
	for _, alg := range []Algorithm{BLAKE3, SHA256} {
		for _, size := range []int{1 << 10, 64 << 10} {
			b.Run(fmt.Sprintf("%s/%dKiB", alg, size>>10), func(b *testing.B) {
				buf := make([]byte, size)
				h := NewHasher(alg)
				b.SetBytes(int64(size))
				b.ReportAllocs()
				for b.Loop() {
					h.Reset()
					h.Write(buf)
					_ = h.Digest()
				}
			})
		}
	}
}

func BenchmarkKeyID(b *testing.B) {
	k, _ := NewKeyIDer(make([]byte, 32))
	tok := []byte("sk-0123456789abcdef0123456789abcdef")
	b.ReportAllocs()
	for b.Loop() {
		_ = k.ID(tok)
	}
}
