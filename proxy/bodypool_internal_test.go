package proxy

import "testing"

// A body takes the smallest pooled buffer that holds it: at 2,000 streams
// starting at once, every 1 KiB chat request holding 64 KiB until it was sent
// upstream was 50 MB of the proxy's peak heap.
func TestBodyBufferFitsTheBody(t *testing.T) {
	for _, tc := range []struct {
		size int64
		cap  int
	}{
		{0, 4 << 10}, {1025, 4 << 10}, {4 << 10, 4 << 10}, {4<<10 + 1, 16 << 10},
		{16 << 10, 16 << 10}, {40 << 10, 64 << 10}, {64 << 10, 64 << 10},
		{1 << 20, 64 << 10}, // larger: the largest, grown by the reader
	} {
		b := getBodyBuffer(tc.size)
		if cap(*b) != tc.cap || len(*b) != 0 {
			t.Errorf("size %d: buffer len %d cap %d, want cap %d", tc.size, len(*b), cap(*b), tc.cap)
		}
		*b = append(*b, 'x')
		putBodyBuffer(b)
	}
	// A buffer of another size (not one the pools lent) is not kept.
	other := make([]byte, 0, 8<<10)
	putBodyBuffer(&other)
	for range 100 {
		if b := getBodyBuffer(5 << 10); cap(*b) != 16<<10 {
			t.Fatalf("a 5 KiB body got a buffer of %d bytes", cap(*b))
		}
	}
}
