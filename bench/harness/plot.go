package main

import (
	"errors"
	"fmt"
	"image/color"
	"math"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"
)

// cdfSeries is one target's latencies for writeCDF.
type cdfSeries struct {
	Name string  // e.g. "direct", "auditproxy", "nginx", "haproxy"
	Lat  []int64 // latency samples in nanoseconds, any order; not modified
}

const (
	cdfWidthPx, cdfHeightPx = 900, 600
	cdfDPI                  = 96
	// cdfPoints is how many points each curve is drawn with, evenly
	// spaced on the tail scale, however many samples it has.
	cdfPoints = 2000
	// cdfFloorMs is the least latency drawn: the x axis is logarithmic, so
	// a zero sample is drawn as 1µs.
	cdfFloorMs = 1e-3
)

// cdfColors are the series' colors, by their place in writeCDF's series
// (the tab10 palette less its grey, which the grid could be taken for).
var cdfColors = []color.RGBA{
	{31, 119, 180, 255},  // blue
	{255, 127, 14, 255},  // orange
	{44, 160, 44, 255},   // green
	{214, 39, 40, 255},   // red
	{148, 103, 189, 255}, // purple
	{140, 86, 75, 255},   // brown
	{227, 119, 194, 255}, // pink
	{188, 189, 34, 255},  // olive
	{23, 190, 207, 255},  // cyan
}

// writeCDF writes to path a PNG plot of the latency distributions of series,
// one line each, as HdrHistogram plots them: latency in milliseconds on a log
// x axis against the percentile on a tail scale, -log10(1-q), on which p90,
// p99, p99.9, … are evenly spaced. A series with n samples runs from its
// minimum at 0% to its maximum at 1-1/n, where the scale runs out; the points
// between are nearest-rank percentiles, as in the harness's tables. Empty
// series are left out; a series' color is set by its place in series, so
// plots of the same targets in the same order match. The image is 900x600
// pixels whatever path's extension.
func writeCDF(path, title string, series []cdfSeries) error {
	type curve struct {
		name  string
		color color.Color
		pts   plotter.XYs
	}
	var curves []curve
	for i, s := range series {
		if len(s.Lat) > 0 {
			curves = append(curves, curve{name: s.Name, color: cdfColors[i%len(cdfColors)]})
		}
	}
	if len(curves) == 0 {
		return errors.New("plot: no samples")
	}
	// Sorting a copy of each series is nearly all the time taken for
	// millions of samples: do the series at once, and not at all for one
	// already in order (as aggregate keeps its samples once it has sorted).
	var wg sync.WaitGroup
	j := 0
	for _, s := range series {
		if len(s.Lat) == 0 {
			continue
		}
		c := &curves[j]
		j++
		wg.Go(func() {
			sorted := s.Lat
			if !slices.IsSorted(sorted) {
				sorted = slices.Clone(sorted)
				slices.Sort(sorted)
			}
			c.pts = tailPoints(sorted, cdfPoints)
		})
	}
	wg.Wait()

	p := plot.New()
	p.Title.Text = title
	p.X.Label.Text = "latency (ms)"
	p.Y.Label.Text = "percentile"
	p.X.Scale = plot.LogScale{}
	p.X.Tick.Marker = plot.TickerFunc(latencyTicks)
	grid := plotter.NewGrid()
	grid.Vertical.Color = color.Gray{Y: 215}
	grid.Horizontal.Color = color.Gray{Y: 215}
	p.Add(grid)
	p.Legend.Top = true // the upper left is empty: no fast tail
	p.Legend.Left = true
	p.Legend.XOffs = vg.Points(8)
	p.Legend.YOffs = -vg.Points(8)

	xMin, xMax, yMax := math.Inf(1), math.Inf(-1), 1.0
	for _, c := range curves {
		xMin = min(xMin, c.pts[0].X)
		xMax = max(xMax, c.pts[len(c.pts)-1].X)
		yMax = max(yMax, c.pts[len(c.pts)-1].Y)
		line, err := plotter.NewLine(c.pts)
		if err != nil {
			return fmt.Errorf("plot: series %q: %w", c.name, err)
		}
		line.Color = c.color
		line.Width = vg.Points(1.5)
		p.Add(line)
		p.Legend.Add(c.name, line)
		if len(c.pts) == 1 { // one sample: a line of one point is not drawn
			dot, err := plotter.NewScatter(c.pts)
			if err != nil {
				return fmt.Errorf("plot: series %q: %w", c.name, err)
			}
			dot.Color = c.color
			dot.Shape = draw.CircleGlyph{}
			p.Add(dot)
		}
	}
	// A little room either side, and some width for a constant series.
	p.X.Min, p.X.Max = xMin/1.15, xMax*1.15
	p.Y.Min, p.Y.Max = 0, yMax
	p.Y.Tick.Marker = plot.ConstantTicks(tailTicks(yMax))

	canvas := vgimg.NewWith(
		vgimg.UseWH(cdfWidthPx*vg.Inch/cdfDPI, cdfHeightPx*vg.Inch/cdfDPI),
		vgimg.UseDPI(cdfDPI),
	)
	margin := vg.Points(8) // the plot draws to the edges, its title too
	p.Draw(draw.Crop(draw.New(canvas), margin, -margin, margin/2, -margin))

	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("plot: %w", err)
	}
	if _, err := (vgimg.PngCanvas{Canvas: canvas}).WriteTo(f); err != nil {
		f.Close()
		return fmt.Errorf("plot: writing %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("plot: writing %s: %w", path, err)
	}
	return nil
}

// tailPoints downsamples sorted (not empty) to at most m points (m >= 2),
// X in milliseconds and Y = -log10(1-q), evenly spaced in Y from 0 (the
// minimum) to log10(n) (q = 1-1/n, drawn with the maximum). Points between
// are nearest-rank percentiles. One sample gives one point.
func tailPoints(sorted []int64, m int) plotter.XYs {
	n := len(sorted)
	if n == 1 {
		return plotter.XYs{{X: max(ms(sorted[0]), cdfFloorMs), Y: 0}}
	}
	yMax := math.Log10(float64(n))
	pts := make(plotter.XYs, m)
	for k := range pts {
		y := yMax * float64(k) / float64(m-1)
		v := percentile(sorted, 100*(1-math.Pow(10, -y)))
		if k == m-1 {
			y, v = yMax, sorted[n-1]
		}
		pts[k] = plotter.XY{X: max(ms(v), cdfFloorMs), Y: y}
	}
	return pts
}

// tailTicks are the y axis's ticks on the tail scale up to yMax: 0%, 50%,
// then 90%, 99%, 99.9%, … one to a unit.
func tailTicks(yMax float64) []plot.Tick {
	ticks := []plot.Tick{{Value: 0, Label: "0%"}, {Value: math.Log10(2), Label: "50%"}}
	for k := 1; float64(k) <= yMax+1e-9; k++ {
		label := "90%"
		if k >= 2 {
			label = "99"
			if k > 2 {
				label += "." + strings.Repeat("9", k-2)
			}
			label += "%"
		}
		ticks = append(ticks, plot.Tick{Value: float64(k), Label: label})
	}
	return ticks
}

// latencyTicks are the x axis's ticks on its log scale: 1, 2 and 5 times
// the powers of ten labelled over up to three decades, only the powers
// beyond that, and every multiple when fewer than two labels would show.
func latencyTicks(lo, hi float64) []plot.Tick {
	first, last := int(math.Floor(math.Log10(lo))), int(math.Ceil(math.Log10(hi)))
	var ticks []plot.Tick
	for _, labelled := range []func(m int) bool{
		func(m int) bool { return m == 1 || (last-first <= 3 && (m == 2 || m == 5)) },
		func(int) bool { return true },
	} {
		ticks = ticks[:0]
		labels := 0
		for e := first; e <= last; e++ {
			for m := 1; m < 10; m++ {
				v := float64(m) * math.Pow10(e)
				if v < lo || v > hi {
					continue
				}
				t := plot.Tick{Value: v}
				if labelled(m) {
					t.Label = strconv.FormatFloat(v, 'g', 6, 64)
					labels++
				}
				ticks = append(ticks, t)
			}
		}
		if labels >= 2 {
			break
		}
	}
	return ticks
}
