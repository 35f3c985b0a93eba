package main

import (
	"math"
	"slices"
	"time"
)

// aggregate pools every round of one target. Percentiles come from all
// samples of all rounds; RPS from all requests over all measured time.
// Each round's own p99 is kept as well: on a shared VM one round in a few
// is hit by a stall that decides the pooled p99 alone, and only the
// rounds' p99s show that and give a tail figure (their median) it cannot
// move.
type aggregate struct {
	requests, errors, chunks, unsent int64
	window                           time.Duration
	firstErr                         string
	lat, delays, lags                []int64
	roundRPS                         []float64
	roundLatP99, roundDelayP99       []float64 // ms, NaN for a round without samples
	cpu                              map[string]time.Duration
	rss                              map[string]int64 // peak over the rounds
	stalls                           int64
	maxGap                           time.Duration
	sorted                           bool

	// The stream bursts, one per round (see runBurst); rounds without one
	// add nothing.
	burstStreams, burstErrors, burstStalls int64
	burstFirstErr                          string
	roundBurstMs                           []float64 // ms: first request sent to the last stream's last byte
	roundBurstTTFTMaxMs                    []float64
	burstSpreadMax                         time.Duration
	burstRSS                               map[string]int64 // peak over the bursts (also in rss)
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
	a.roundLatP99 = append(a.roundLatP99, p99Ms(r.lat))
	a.roundDelayP99 = append(a.roundDelayP99, p99Ms(r.delays))
	if a.cpu == nil {
		a.cpu = map[string]time.Duration{}
	}
	for k, v := range r.cpu {
		a.cpu[k] += v
	}
	if a.rss == nil {
		a.rss = map[string]int64{}
	}
	for k, v := range r.rss {
		a.rss[k] = max(a.rss[k], v)
	}
	a.stalls += r.stalls
	a.maxGap = max(a.maxGap, r.maxGap)
	a.sorted = false
	if b := r.burst; b != nil {
		a.burstStreams += b.streams
		a.burstErrors += b.errors
		a.burstStalls += b.stalls
		if a.burstFirstErr == "" {
			a.burstFirstErr = b.firstErr
		}
		a.roundBurstMs = append(a.roundBurstMs, ms(int64(b.elapsed)))
		ttft := math.NaN() // no stream completed
		if b.errors < b.streams {
			ttft = ms(int64(b.ttftMax))
		}
		a.roundBurstTTFTMaxMs = append(a.roundBurstTTFTMaxMs, ttft)
		a.burstSpreadMax = max(a.burstSpreadMax, b.spread)
		if a.burstRSS == nil {
			a.burstRSS = map[string]int64{}
		}
		for k, v := range b.rss {
			a.burstRSS[k] = max(a.burstRSS[k], v)
			a.rss[k] = max(a.rss[k], v)
		}
	}
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

// p99Ms is the p99 of unsorted samples in milliseconds, NaN when there are
// none. It sorts a copy: the round's samples are pooled as they are.
func p99Ms(samples []int64) float64 {
	s := slices.Clone(samples)
	slices.Sort(s)
	return ms(percentile(s, 99))
}

// medianMs is the median of per-round values, the mean of the middle two
// for an even count. Rounds without samples (NaN) are left out rather than
// counted as fast or slow; NaN when no round has a value.
func medianMs(perRound []float64) float64 {
	v := make([]float64, 0, len(perRound))
	for _, x := range perRound {
		if !math.IsNaN(x) {
			v = append(v, x)
		}
	}
	if len(v) == 0 {
		return math.NaN()
	}
	slices.Sort(v)
	n := len(v)
	if n%2 == 1 {
		return v[n/2]
	}
	return (v[n/2-1] + v[n/2]) / 2
}
