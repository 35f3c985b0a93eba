package main

import (
	"math"
	"slices"
	"time"
)

// aggregate pools every round of one target. Percentiles come from all
// samples of all rounds; RPS from all requests over all measured time.
type aggregate struct {
	requests, errors, chunks, unsent int64
	window                           time.Duration
	firstErr                         string
	lat, delays, lags                []int64
	roundRPS                         []float64
	cpu                              map[string]time.Duration
	sorted                           bool
}

func (a *aggregate) add(r roundResult) {
	a.requests += r.requests
	a.errors += r.errors
	a.chunks += r.chunks
	a.unsent += r.unsent
	a.window += r.window
	if a.firstErr == "" {
		a.firstErr = r.firstErr
	}
	a.lat = append(a.lat, r.lat...)
	a.delays = append(a.delays, r.delays...)
	a.lags = append(a.lags, r.lags...)
	a.roundRPS = append(a.roundRPS, float64(r.requests)/r.window.Seconds())
	if a.cpu == nil {
		a.cpu = map[string]time.Duration{}
	}
	for k, v := range r.cpu {
		a.cpu[k] += v
	}
	a.sorted = false
}

func (a *aggregate) rps() float64 {
	if a.window <= 0 {
		return 0
	}
	return float64(a.requests) / a.window.Seconds()
}

func (a *aggregate) sort() {
	if !a.sorted {
		slices.Sort(a.lat)
		slices.Sort(a.delays)
		slices.Sort(a.lags)
		a.sorted = true
	}
}

// latMs, delayMs and lagMs return the p-th percentile in milliseconds, NaN when
// there are no samples.
func (a *aggregate) latMs(p float64) float64 {
	a.sort()
	return ms(percentile(a.lat, p))
}

func (a *aggregate) delayMs(p float64) float64 {
	a.sort()
	return ms(percentile(a.delays, p))
}

func (a *aggregate) lagMs(p float64) float64 {
	a.sort()
	return ms(percentile(a.lags, p))
}

// percentile returns the nearest-rank p-th percentile (0 < p <= 100) of
// sorted, or -1 when sorted is empty.
func percentile(sorted []int64, p float64) int64 {
	if len(sorted) == 0 {
		return -1
	}
	rank := int(math.Ceil(p / 100 * float64(len(sorted))))
	rank = min(max(rank, 1), len(sorted))
	return sorted[rank-1]
}

func ms(ns int64) float64 {
	if ns < 0 {
		return math.NaN()
	}
	return float64(ns) / 1e6
}
