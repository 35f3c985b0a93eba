package main

import (
	"image"
	"image/png"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// lognormalNs returns n latencies in nanoseconds around median, spread
// log-normally with sigma, in random order.
func lognormalNs(seed uint64, n int, median time.Duration, sigma float64) []int64 {
	r := rand.New(rand.NewPCG(seed, 1))
	lat := make([]int64, n)
	for i := range lat {
		lat[i] = int64(float64(median) * math.Exp(sigma*r.NormFloat64()))
	}
	return lat
}

// colorPixels counts the pixels of img within a small distance of c, the
// line's own color where the line covers a pixel whole.
func colorPixels(img image.Image, c [3]uint8) int {
	near := func(a uint32, b uint8) bool { return max(a>>8, uint32(b))-min(a>>8, uint32(b)) <= 4 }
	n := 0
	b := img.Bounds()
	for y := b.Min.Y; y < b.Max.Y; y++ {
		for x := b.Min.X; x < b.Max.X; x++ {
			r, g, bl, _ := img.At(x, y).RGBA()
			if near(r, c[0]) && near(g, c[1]) && near(bl, c[2]) {
				n++
			}
		}
	}
	return n
}

func TestWriteCDF(t *testing.T) {
	fast := lognormalNs(1, 50_000, time.Millisecond, 0.3)
	slow := lognormalNs(2, 50_000, 20*time.Millisecond, 0.6)
	tests := []struct {
		name    string
		series  []cdfSeries
		wantErr string
	}{
		{name: "two series", series: []cdfSeries{{"direct", fast}, {"auditproxy", slow}}},
		{name: "empty series left out", series: []cdfSeries{{"direct", fast}, {"nginx", nil}, {"haproxy", slow}}},
		{name: "constant and one-sample series", series: []cdfSeries{{"same", slices.Repeat([]int64{3e6}, 1000)}, {"one", []int64{0}}}},
		{name: "no series", series: nil, wantErr: "plot: no samples"},
		{name: "all empty", series: []cdfSeries{{"direct", nil}, {"auditproxy", []int64{}}}, wantErr: "plot: no samples"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var before [][]int64
			for _, s := range tc.series {
				before = append(before, slices.Clone(s.Lat))
			}
			path := filepath.Join(t.TempDir(), "cdf.png")
			err := writeCDF(path, "latency: "+tc.name, tc.series)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("writeCDF = %v, want an error with %q", err, tc.wantErr)
				}
				if _, err := os.Stat(path); err == nil {
					t.Errorf("writeCDF failed but wrote %s", path)
				}
				return
			}
			if err != nil {
				t.Fatalf("writeCDF: %v", err)
			}
			for i, s := range tc.series {
				if !slices.Equal(s.Lat, before[i]) {
					t.Errorf("series %q was modified", s.Name)
				}
			}
			f, err := os.Open(path)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			img, err := png.Decode(f)
			if err != nil {
				t.Fatalf("decoding the plot: %v", err)
			}
			if got := img.Bounds().Size(); got != (image.Point{X: 900, Y: 600}) {
				t.Errorf("size %v, want 900x600", got)
			}
			for i, s := range tc.series {
				c := cdfColors[i]
				n := colorPixels(img, [3]uint8{c.R, c.G, c.B})
				// The legend's sample of a line is some 25 pixels, a
				// curve or a dot more; an empty series has neither.
				want := 300
				if len(s.Lat) == 1 {
					want = 40 // a dot (some 25 pixels) and the legend
				}
				switch {
				case len(s.Lat) == 0 && n > 0:
					t.Errorf("empty series %q: %d pixels of its color %v", s.Name, n, c)
				case len(s.Lat) > 0 && n < want:
					t.Errorf("series %q: %d pixels of its color %v, want %d or more", s.Name, n, c, want)
				}
			}
		})
	}
}

func TestWriteCDFBadPath(t *testing.T) {
	path := filepath.Join(t.TempDir(), "missing", "cdf.png")
	err := writeCDF(path, "t", []cdfSeries{{"direct", []int64{1e6, 2e6}}})
	if err == nil || !strings.Contains(err.Error(), path) {
		t.Fatalf("writeCDF = %v, want an error naming %s", err, path)
	}
}

func TestTailPointsCDF(t *testing.T) {
	sorted := make([]int64, 10_000)
	for i := range sorted {
		sorted[i] = int64(i+1) * 1000 // 1µs … 10ms
	}
	pts := tailPoints(sorted, 2001)
	if len(pts) != 2001 {
		t.Fatalf("%d points, want 2001", len(pts))
	}
	if pts[0].X != 0.001 || pts[0].Y != 0 {
		t.Errorf("first point %v, want the minimum at 0", pts[0])
	}
	if last := pts[len(pts)-1]; last.X != 10 || last.Y != 4 {
		t.Errorf("last point %v, want the maximum at 4 (1-1/n)", last)
	}
	for i := 1; i < len(pts); i++ {
		if pts[i].X < pts[i-1].X || math.Abs(pts[i].Y-pts[i-1].Y-0.002) > 1e-9 {
			t.Fatalf("points %d, %d: %v %v: not rising by an even step", i-1, i, pts[i-1], pts[i])
		}
	}
	// y = 2 is p99: the same nearest-rank value as the tables.
	if p := pts[1000]; p.Y != 2 || p.X != ms(percentile(sorted, 99)) {
		t.Errorf("point at y=2 is %v, want p99 %v", p, ms(percentile(sorted, 99)))
	}
	if got := tailPoints([]int64{0}, 2000); len(got) != 1 || got[0].X != cdfFloorMs {
		t.Errorf("one zero sample: %v, want one point at the floor", got)
	}
}

func TestTailTicksCDF(t *testing.T) {
	var labels []string
	for _, tk := range tailTicks(4.5) {
		labels = append(labels, tk.Label)
	}
	want := []string{"0%", "50%", "90%", "99%", "99.9%", "99.99%"}
	if !slices.Equal(labels, want) {
		t.Errorf("labels %q, want %q", labels, want)
	}
}

// BenchmarkWriteCDF plots 4 series of 1,000,000 samples each, in random
// order and already sorted.
func BenchmarkWriteCDF(b *testing.B) {
	series := []cdfSeries{
		{"direct", lognormalNs(1, 1_000_000, 400*time.Microsecond, 0.3)},
		{"auditproxy", lognormalNs(2, 1_000_000, 600*time.Microsecond, 0.4)},
		{"nginx", lognormalNs(3, 1_000_000, 500*time.Microsecond, 0.35)},
		{"haproxy", lognormalNs(4, 1_000_000, 450*time.Microsecond, 0.5)},
	}
	sorted := make([]cdfSeries, len(series))
	for i, s := range series {
		sorted[i] = cdfSeries{s.Name, slices.Sorted(slices.Values(s.Lat))}
	}
	for _, bc := range []struct {
		name   string
		series []cdfSeries
	}{{"unsorted", series}, {"sorted", sorted}} {
		b.Run(bc.name, func(b *testing.B) {
			path := filepath.Join(b.TempDir(), "cdf.png")
			for b.Loop() {
				if err := writeCDF(path, "4 x 1M", bc.series); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
