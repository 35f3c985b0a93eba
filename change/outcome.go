package change

import (
	"cmp"
	"encoding/json"
	"log/slog"
	"math/rand/v2"
	"slices"
	"sync"
	"time"

	"github.com/auditproxy/auditproxy/audit"
)

// Outcomes answers "did the change help?" from what the sidecar recorded
// itself. It follows the requests the sidecar records (Observe) and the
// changes it records (Noticed: model_changed, gpu_changed, annotations), and
// a Window after each change records a change_outcome event:
//
//	{"change":{"id","type","time","resource"},"window_s":W,"cut_short":false,
//	 "before":{figures},"after":{figures}}
//
// with the figures of the requests that ended in the Window before the
// change and in the Window after it:
//
//	{"from","to","requests","ok","errors","client_cancelled","rejected",
//	 "error_rate","latency_ms":{"p50","p99"},"ttft_ms":{"p50","p99"},"sampled"}
//
// errors are the exchanges the upstream failed (upstream_error,
// upstream_unreachable, upstream_timeout); error_rate is errors over ok plus
// errors, client give-ups and the proxy's own refusals left out; latency
// is of the ok requests, TTFT of the ok ones that had a first token. A
// figure with nothing to compute it from is null. from is when the
// sidecar started when that is later than the Window before the change.
// Past perSecondSamples requests ending in one second, that second's
// percentiles come from a uniform sample of its requests, each weighing as
// many requests as it stands for, and sampled says so; counts are always
// exact. A window summed so late that its first seconds were dropped says
// truncated.
//
// Windows are in whole seconds. A change whose Window has not passed when
// the sidecar stops gets its event then, the after figures up to the stop,
// with cut_short; one pending when the sidecar is killed gets none.
type Outcomes struct {
	window time.Duration
	record func([]byte) error
	source audit.Source
	logger *slog.Logger
	now    func() time.Time

	mu      sync.Mutex
	started time.Time
	secs    []second // a ring, indexed by unix second modulo its length
	pending []pendingChange
	stop    chan struct{}
	done    chan struct{}
}

// perSecondSamples bounds the latencies kept for each second.
const perSecondSamples = 2048

type second struct {
	unix                                 int64
	requests, ok, errors, cancelled, rej int
	latency, ttft                        []float64 // samples of at most perSecondSamples
	okSeen, ttftSeen                     int       // the values the samples were drawn from
}

type pendingChange struct {
	change changeRef
	at     time.Time
	before Figures
}

type changeRef struct {
	ID   string `json:"id"`
	Type string `json:"type"`
	Time string `json:"time"`
	// Resource is what changed, for query --resource: an annotation's
	// record's resource, the served model name of a model_changed.
	Resource string `json:"resource,omitempty"`
}

// Figures are the requests of one window.
type Figures struct {
	From            string      `json:"from"`
	To              string      `json:"to"`
	Requests        int         `json:"requests"`
	OK              int         `json:"ok"`
	Errors          int         `json:"errors"`
	ClientCancelled int         `json:"client_cancelled"`
	Rejected        int         `json:"rejected"`
	ErrorRate       *float64    `json:"error_rate"`
	LatencyMS       Percentiles `json:"latency_ms"`
	TTFTMS          Percentiles `json:"ttft_ms"`
	Sampled         bool        `json:"sampled"`
	// Truncated says seconds of the window were no longer held when it
	// was summed (the summing ran late: a blocked log); the figures are
	// of the rest.
	Truncated bool `json:"truncated"`
}

// weighted is a sampled value and how many values it stands for.
type weighted struct{ v, w float64 }

// Percentiles of a window; null when it had no such request.
type Percentiles struct {
	P50 *float64 `json:"p50"`
	P99 *float64 `json:"p99"`
}

// Outcome is the details of a change_outcome event.
type Outcome struct {
	Change   changeRef `json:"change"`
	WindowS  float64   `json:"window_s"`
	CutShort bool      `json:"cut_short"`
	Before   Figures   `json:"before"`
	After    Figures   `json:"after"`
}

// OutcomesOptions configure StartOutcomes.
type OutcomesOptions struct {
	// Window before and after each change (at least a second).
	Window time.Duration
	// Record writes an event to the audit log.
	Record func(event []byte) error
	Source audit.Source
	Logger *slog.Logger
	// Now is the clock (time.Now when nil); with it, no goroutine runs:
	// the caller calls Due.
	Now func() time.Time
}

// StartOutcomes starts following requests and changes.
func StartOutcomes(o OutcomesOptions) *Outcomes {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Window < time.Second {
		o.Window = time.Second
	}
	oc := &Outcomes{window: o.Window, record: o.Record, source: o.Source, logger: o.Logger, now: o.Now}
	ticking := oc.now == nil
	if ticking {
		oc.now = time.Now
	}
	oc.started = oc.now()
	// The window after a change is summed when it has passed, at the next
	// tick: a few seconds more than the window are kept, so that a late
	// tick still finds them.
	oc.secs = make([]second, int(o.Window/time.Second)+10)
	if ticking {
		oc.stop, oc.done = make(chan struct{}), make(chan struct{})
		go oc.tick()
	}
	return oc
}

func (oc *Outcomes) tick() {
	defer close(oc.done)
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-oc.stop:
			return
		case <-t.C:
			oc.Due()
		}
	}
}

// Observe counts an inference event the sidecar recorded, in the second
// it ended.
func (oc *Outcomes) Observe(ev *audit.Event) {
	if ev.Type != audit.TypeInference {
		return
	}
	now := oc.now().Unix()
	oc.mu.Lock()
	defer oc.mu.Unlock()
	s := &oc.secs[now%int64(len(oc.secs))]
	if s.unix != now {
		*s = second{unix: now, latency: s.latency[:0], ttft: s.ttft[:0]}
	}
	s.requests++
	switch ev.Status.Outcome {
	case audit.OutcomeOK:
		s.ok++
		s.okSeen++
		s.latency = reservoir(s.latency, s.okSeen, ev.Latency.Total)
		if ev.Latency.TTFT != nil {
			s.ttftSeen++
			s.ttft = reservoir(s.ttft, s.ttftSeen, *ev.Latency.TTFT)
		}
	case audit.OutcomeUpstreamError, audit.OutcomeUpstreamUnreachable, audit.OutcomeUpstreamTimeout:
		s.errors++
	case audit.OutcomeClientCancelled:
		s.cancelled++
	case audit.OutcomeRejected:
		s.rej++
	}
}

// reservoir adds v, the seen-th value, to a uniform sample of at most
// perSecondSamples.
func reservoir(sample []float64, seen int, v float64) []float64 {
	if len(sample) < perSecondSamples {
		return append(sample, v)
	}
	if i := rand.IntN(seen); i < perSecondSamples {
		sample[i] = v
	}
	return sample
}

// Noticed looks at an event the sidecar recorded other than through the
// proxy; a change starts its window.
func (oc *Outcomes) Noticed(event []byte) {
	var ev struct {
		Type    string `json:"type"`
		ID      string `json:"id"`
		Time    string `json:"time"`
		Details struct {
			Record *struct {
				Outcome  string `json:"outcome"`
				Resource string `json:"resource"`
			} `json:"record"`
			Model string `json:"model"`
		} `json:"details"`
	}
	if json.Unmarshal(event, &ev) != nil {
		return
	}
	ref := changeRef{ID: ev.ID, Type: ev.Type, Time: ev.Time}
	switch {
	case ev.Type == audit.TypeModelChanged:
		ref.Resource = ev.Details.Model
	case ev.Type == audit.TypeGPUChanged:
	case ev.Type == audit.TypeAnnotation && ev.Details.Record == nil:
	case ev.Type == audit.TypeAnnotation && ev.Details.Record.Outcome == "":
		ref.Resource = ev.Details.Record.Resource
	default:
		return // a record of an earlier change's outcome is no change
	}
	now := oc.now()
	oc.mu.Lock()
	defer oc.mu.Unlock()
	oc.pending = append(oc.pending, pendingChange{change: ref,
		at: now, before: oc.figures(now.Add(-oc.window), now, now)})
}

// figures sums the whole seconds from from's to the one before to's, that
// the ring still holds at now: a request counts in the second it ended, and
// the second a change happens in counts after it.
func (oc *Outcomes) figures(from, to, now time.Time) Figures {
	if from.Before(oc.started) {
		from = oc.started
	}
	f := Figures{From: from.UTC().Format(time.RFC3339), To: to.UTC().Format(time.RFC3339)}
	var latency, ttft []weighted
	oldest := now.Unix() - int64(len(oc.secs)) + 1 // the oldest second the ring can still hold
	for u := from.Unix(); u < to.Unix(); u++ {
		if u < oldest {
			f.Truncated = true
			continue
		}
		s := &oc.secs[u%int64(len(oc.secs))]
		if s.unix != u {
			continue
		}
		f.Requests += s.requests
		f.OK += s.ok
		f.Errors += s.errors
		f.ClientCancelled += s.cancelled
		f.Rejected += s.rej
		f.Sampled = f.Sampled || s.okSeen > perSecondSamples || s.ttftSeen > perSecondSamples
		latency = appendWeighted(latency, s.latency, s.okSeen)
		ttft = appendWeighted(ttft, s.ttft, s.ttftSeen)
	}
	if n := f.OK + f.Errors; n > 0 {
		r := float64(f.Errors) / float64(n)
		f.ErrorRate = &r
	}
	f.LatencyMS, f.TTFTMS = percentiles(latency), percentiles(ttft)
	return f
}

// appendWeighted adds a second's sample of seen values: each stands for
// seen/len(sample) of them, so that a busy second's sample weighs as much
// as its requests, not as its sample's size.
func appendWeighted(dst []weighted, sample []float64, seen int) []weighted {
	if len(sample) == 0 {
		return dst
	}
	w := float64(seen) / float64(len(sample))
	for _, v := range sample {
		dst = append(dst, weighted{v, w})
	}
	return dst
}

// percentiles are weighted nearest-rank percentiles of v: the smallest
// value whose cumulative weight reaches p of the total. With every weight
// 1 (no second sampled) they are the exact nearest-rank percentiles.
func percentiles(v []weighted) Percentiles {
	if len(v) == 0 {
		return Percentiles{}
	}
	slices.SortFunc(v, func(a, b weighted) int { return cmp.Compare(a.v, b.v) })
	var total float64
	for _, x := range v {
		total += x.w
	}
	rank := func(p float64) *float64 {
		want, sum := p*total, 0.0
		for _, x := range v {
			if sum += x.w; sum >= want-1e-9*total {
				r := x.v
				return &r
			}
		}
		r := v[len(v)-1].v
		return &r
	}
	return Percentiles{P50: rank(0.50), P99: rank(0.99)}
}

// Due records the outcome of each change whose window has passed.
func (oc *Outcomes) Due() {
	now := oc.now()
	oc.mu.Lock()
	var due []Outcome
	keep := oc.pending[:0]
	for _, p := range oc.pending {
		if now.Sub(p.at) < oc.window {
			keep = append(keep, p)
			continue
		}
		due = append(due, Outcome{Change: p.change, WindowS: oc.window.Seconds(), Before: p.before, After: oc.figures(p.at, p.at.Add(oc.window), now)})
	}
	oc.pending = keep
	oc.mu.Unlock()
	oc.write(due, now)
}

// Close stops following and records the outcome of the changes still
// pending, cut short at now.
func (oc *Outcomes) Close() {
	if oc.stop != nil {
		close(oc.stop)
		<-oc.done
	}
	now := oc.now()
	oc.mu.Lock()
	var due []Outcome
	for _, p := range oc.pending {
		// Up to the stop: the second it is in, which has ended for the
		// requests it counts; never past the window.
		end := now.Truncate(time.Second).Add(time.Second)
		if limit := p.at.Add(oc.window); end.Unix() > limit.Unix() {
			end = limit
		}
		due = append(due, Outcome{Change: p.change, WindowS: oc.window.Seconds(), CutShort: true, Before: p.before, After: oc.figures(p.at, end, now)})
	}
	oc.pending = nil
	oc.mu.Unlock()
	oc.write(due, now)
}

func (oc *Outcomes) write(due []Outcome, now time.Time) {
	for _, o := range due {
		ev, err := audit.NewOpsEvent(audit.TypeChangeOutcome, o, oc.source, now)
		if err == nil {
			err = oc.record(ev)
		}
		if err != nil {
			oc.logger.Error("cannot record a change's outcome", "change", o.Change.ID, "err", err)
		}
	}
}
