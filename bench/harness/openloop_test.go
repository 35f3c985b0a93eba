package main

import (
	"context"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// fakeClock is simulated time for one worker: sleeping jumps ahead, and
// the send function moves time on by the answer's duration.
type fakeClock struct{ t time.Time }

func (c *fakeClock) now() time.Time { return c.t }

func (c *fakeClock) sleepUntil(_ context.Context, t time.Time) {
	if t.After(c.t) {
		c.t = t
	}
}

func TestOpenLoopCountsFromIntendedTime(t *testing.T) {
	ms := func(n float64) time.Duration { return time.Duration(n * float64(time.Millisecond)) }
	t0 := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	tests := []struct {
		name       string
		service    time.Duration // how long each answer takes
		warmup     time.Duration
		grace      time.Duration // after the window, for requests due in it
		wantLat    []time.Duration
		wantLag    []time.Duration
		wantUnsent int64
	}{
		{
			// Due every 1ms, answered in 0.2ms: each request waits for its
			// time, so this is not a closed loop.
			name:    "keeps up",
			service: ms(0.2),
			wantLat: slices.Repeat([]time.Duration{ms(0.2)}, 10),
			wantLag: make([]time.Duration, 10),
		},
		{
			name:    "warm-up requests are sent but not measured",
			service: ms(0.2),
			warmup:  ms(2),
			wantLat: slices.Repeat([]time.Duration{ms(0.2)}, 8),
			wantLag: make([]time.Duration, 8),
		},
		{
			// Answered in 3ms by the only worker: request k is due at k ms
			// but sent at 3k ms, so it waited 2k ms for the worker and its
			// latency is 2k+3 ms, not the 3ms the target took. Requests
			// due from 4ms on would be sent after the window closed.
			name:       "falls behind",
			service:    ms(3),
			wantLat:    []time.Duration{ms(3), ms(5), ms(7), ms(9)},
			wantLag:    []time.Duration{0, ms(2), ms(4), ms(6)},
			wantUnsent: 6,
		},
		{
			name:       "falls behind, with time to catch up",
			service:    ms(3),
			grace:      ms(5),
			wantLat:    []time.Duration{ms(3), ms(5), ms(7), ms(9), ms(11)},
			wantLag:    []time.Duration{0, ms(2), ms(4), ms(6), ms(8)},
			wantUnsent: 5,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			clk := &fakeClock{t: t0}
			sched := newSchedule(t0, 1000)
			win := window{from: t0.Add(tc.warmup), to: t0.Add(ms(10))}
			sends := 0
			send := func() error {
				sends++
				clk.t = clk.t.Add(tc.service)
				return nil
			}
			var w workerResult
			openLoop(context.Background(), sched, win, win.to.Add(tc.grace), clk, send, &w)

			if got := durations(w.lat); !slices.Equal(got, tc.wantLat) {
				t.Errorf("latencies %v, want %v", got, tc.wantLat)
			}
			if got := durations(w.lags); !slices.Equal(got, tc.wantLag) {
				t.Errorf("send lags %v, want %v", got, tc.wantLag)
			}
			if w.requests != int64(len(tc.wantLat)) || w.unsent != tc.wantUnsent || w.errors != 0 {
				t.Errorf("%d requests, %d unsent, %d errors; want %d, %d, 0", w.requests, w.unsent, w.errors, len(tc.wantLat), tc.wantUnsent)
			}
			if want := len(tc.wantLat) + int(tc.warmup/ms(1)); sends != want {
				t.Errorf("%d requests sent, want %d", sends, want)
			}
		})
	}
}

func durations(ns []int64) []time.Duration {
	d := make([]time.Duration, len(ns))
	for i, v := range ns {
		d[i] = time.Duration(v)
	}
	return d
}

// TestOpenLoopSlowAnswer checks on the wall clock that one slow answer holds
// up one worker, not the schedule: the others send the requests due
// meanwhile, on time.
func TestOpenLoopSlowAnswer(t *testing.T) {
	const (
		rate    = 1000
		workers = 8
		slow    = 100 * time.Millisecond
		length  = 300 * time.Millisecond
	)
	start := time.Now()
	sched := newSchedule(start, rate)
	win := window{from: start, to: start.Add(length)}
	var slowDone atomic.Bool
	send := func() error {
		if slowDone.CompareAndSwap(false, true) {
			time.Sleep(slow)
		}
		return nil
	}
	results := make([]workerResult, workers)
	var wg sync.WaitGroup
	for i := range results {
		wg.Go(func() {
			openLoop(context.Background(), sched, win, win.to.Add(openLoopGrace(length)), wallClock{}, send, &results[i])
		})
	}
	wg.Wait()

	var requests, unsent int64
	var lat []int64
	for _, w := range results {
		requests += w.requests
		unsent += w.unsent
		lat = append(lat, w.lat...)
	}
	if want := int64(rate * length.Seconds()); requests < want*9/10 || unsent != 0 {
		t.Errorf("%d requests answered, %d never sent; want about %d, all sent", requests, unsent, want)
	}
	slowOnes := 0
	for _, l := range lat {
		if time.Duration(l) >= slow*9/10 {
			slowOnes++
		}
	}
	if slowOnes != 1 {
		t.Errorf("%d requests took about %v, want only the slow one", slowOnes, slow)
	}
}

// TestOpenLoopAchievedRate runs open-loop rounds against a fake and the
// stand-in proxy in this process: the rate achieved is the rate asked for.
func TestOpenLoopAchievedRate(t *testing.T) {
	_, fakeURL, proxyURL := startFakeAndPassProxy(t)
	ctx := context.Background()
	model, err := servedModel(ctx, fakeURL)
	if err != nil {
		t.Fatal(err)
	}
	body := chatBody(model, 1024, `"max_tokens":`+strconv.Itoa(100))
	answerLen, _, err := probe(ctx, fakeURL, body)
	if err != nil {
		t.Fatal(err)
	}

	const rate = 1000
	spec := loadSpec{body: body, wantLen: answerLen, concurrency: 16, rate: rate, warmup: 50 * time.Millisecond, duration: 400 * time.Millisecond}
	for _, tg := range []*target{{name: "direct", url: fakeURL}, {name: "proxy", url: proxyURL}} {
		r := runRound(ctx, tg, spec)
		achieved := float64(r.requests) / r.window.Seconds()
		// The upper bound is the schedule's own; the lower bound only catches
		// a scheduler that stalls, since a loaded CI machine may fall behind.
		if achieved < rate*0.5 || achieved > rate*1.1 || r.errors != 0 || r.unsent > r.requests/10 {
			t.Errorf("%s: %.0f requests/s achieved, %d errors (%s), %d never sent; want at most %d/s +10%%, no errors, nearly all sent",
				tg.name, achieved, r.errors, r.firstErr, r.unsent, rate)
		}
		if len(r.lags) != len(r.lat) || int64(len(r.lat)) != r.requests {
			t.Fatalf("%s: %d latencies, %d send lags for %d requests", tg.name, len(r.lat), len(r.lags), r.requests)
		}
		for i := range r.lat {
			if r.lat[i] < r.lags[i] || r.lags[i] < 0 {
				t.Fatalf("%s: latency %v with send lag %v; latency runs from the intended time, so it covers the lag",
					tg.name, time.Duration(r.lat[i]), time.Duration(r.lags[i]))
			}
		}
	}
}
