package jcs

import (
	"os"
	"testing"
)

// BenchmarkAppendCanonicalForms measures Append on the audit event
// fixture as written (members out of order) and in canonical form (as the
// verifier may meet it), and on an event in an array (objects sorted in
// place).
func BenchmarkAppendCanonicalForms(b *testing.B) {
	in, err := os.ReadFile("testdata/jcs/event.in.json")
	if err != nil {
		b.Fatal(err)
	}
	out, err := os.ReadFile("testdata/jcs/event.out.json")
	if err != nil {
		b.Fatal(err)
	}
	arr := append(append([]byte("["), in...), ']')
	dst := make([]byte, 0, 4096)
	for _, bc := range []struct {
		name string
		js   []byte
	}{{"unsorted", in}, {"canonical", out}, {"array", arr}} {
		b.Run(bc.name, func(b *testing.B) {
			b.SetBytes(int64(len(bc.js)))
			b.ReportAllocs()
			for b.Loop() {
				if _, err := Append(dst[:0], nil, bc.js); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
