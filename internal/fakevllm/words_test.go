package fakevllm

import (
	"math/rand/v2"
	"testing"
)

// countWordsSlow is the definition CountWords must match: words are runs of
// bytes above 0x20.
func countWordsSlow(b []byte) int {
	n, in := 0, false
	for _, c := range b {
		if c > 0x20 && !in {
			n++
		}
		in = c > 0x20
	}
	return n
}

func TestCountWords(t *testing.T) {
	tests := []struct {
		in   string
		want int
	}{
		{"", 0},
		{" ", 0},
		{"a", 1},
		{"hello world", 2},
		{"  leading and trailing  ", 3},
		{"tabs\tand\nnewlines\r\nmixed", 4},
		{"exactly8", 1},
		{"exactly8 exactly8", 2},
		{"a       b", 2},       // separator run crossing the 8-byte boundary
		{"abcdefg hijklmn", 2}, // word starting right at byte 8
		{"abcdefgh ijklmnop qrstuvwx", 3},
		{"héllo wörld ünïcode", 3},
		{"\x00\x01\x1f words\x7f\x80\xff x", 2},
	}
	for _, tc := range tests {
		if got := CountWords([]byte(tc.in)); got != tc.want {
			t.Errorf("CountWords(%q) = %d, want %d", tc.in, got, tc.want)
		}
	}
	r := rand.New(rand.NewPCG(1, 2))
	alphabet := []byte(" \t\nab\x00\x20\x21\x7f\x80\xa0\xff")
	for i := range 2000 {
		b := make([]byte, r.IntN(40))
		for j := range b {
			b[j] = alphabet[r.IntN(len(alphabet))]
		}
		if got, want := CountWords(b), countWordsSlow(b); got != want {
			t.Fatalf("case %d: CountWords(%q) = %d, want %d", i, b, got, want)
		}
	}
}
