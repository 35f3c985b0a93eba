package proxy

import (
	"strconv"
	"sync"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/auditproxy/auditproxy/audit"
)

// The "model" label's value comes from request bodies, which any client can
// fill with anything: megabytes of bytes, invalid UTF-8 (which the
// Prometheus client refuses with a panic), a new name per request. So a name
// becomes a label value only if it is short, in the label charset (see
// validModelLabel), and the upstream answered a request for it with a status
// below 400 (vLLM answers 404 for a model it does not serve), and only while
// fewer than maxModelLabels names have one. Every other request is counted
// under "other", and auditproxy_model_label_folded_total says why.
const (
	maxModelLabels   = 64
	maxModelLabelLen = 128
	// otherModelLabel is where folded names are counted; noModelLabel is the
	// label of requests without a model.
	otherModelLabel = "other"
	noModelLabel    = "none"
)

// Reasons a model name was folded into "other".
const (
	foldInvalid  = "invalid"  // too long, or a byte outside the label charset
	foldRejected = "unserved" // the upstream has not yet answered it below 400
	foldOverflow = "overflow" // maxModelLabels names already have a label
)

// Metrics holds the proxy's Prometheus collectors. Register them with
// Register.
type Metrics struct {
	requests       *prometheus.CounterVec
	duration       *prometheus.HistogramVec
	ttft           *prometheus.HistogramVec
	overhead       prometheus.Histogram
	inputTokens    *prometheus.CounterVec
	outputTokens   *prometheus.CounterVec
	inFlight       prometheus.Gauge
	recordWait     prometheus.Histogram
	eventsRecorded prometheus.Counter
	eventsDropped  prometheus.Counter
	folded         *prometheus.CounterVec
	acceptErrors   *prometheus.CounterVec
	// bodyBudgetRejections counts requests refused for the body budget,
	// budget is the Proxy's, for its gauges.
	bodyBudgetRejections prometheus.Counter
	budget               atomic.Pointer[bodyBudget]
	connsRejected        prometheus.Counter
	// clientConns counts open client connections; maxClientConns is the
	// cap (Config.MaxClientConns).
	clientConns    atomic.Int64
	maxClientConns atomic.Int64

	modelsMu sync.RWMutex
	models   map[string]struct{}
}

// NewMetrics returns unregistered collectors.
func NewMetrics() *Metrics {
	latencyBuckets := []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 120, 300}
	return &Metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "auditproxy_requests_total",
			Help: "Proxied requests by model, HTTP status code sent to the client, and outcome.",
		}, []string{"model", "code", "outcome"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "auditproxy_request_duration_seconds",
			Help:    "Time from request received to last response byte written, by model.",
			Buckets: latencyBuckets,
		}, []string{"model"}),
		ttft: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "auditproxy_time_to_first_token_seconds",
			Help:    "Time from request received to the first upstream body byte of a streamed response, by model.",
			Buckets: latencyBuckets,
		}, []string{"model"}),
		overhead: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "auditproxy_proxy_overhead_seconds",
			Help:    "Request duration minus time spent waiting on the upstream.",
			Buckets: []float64{.00001, .000025, .00005, .0001, .00025, .0005, .001, .0025, .005, .01, .025, .1, 1},
		}),
		inputTokens: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "auditproxy_input_tokens_total",
			Help: "Prompt tokens reported by the upstream, by model.",
		}, []string{"model"}),
		outputTokens: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "auditproxy_output_tokens_total",
			Help: "Completion tokens reported by the upstream, by model.",
		}, []string{"model"}),
		inFlight: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "auditproxy_requests_in_flight",
			Help: "Requests being proxied now, streams included.",
		}),
		recordWait: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "auditproxy_event_record_seconds",
			Help:    "Time the end of an answer waited for the audit log (the spool) to take its event (with sync durability: write and fsync).",
			Buckets: []float64{.00001, .00005, .0001, .00025, .0005, .001, .0025, .005, .01, .025, .1, 1},
		}),
		eventsRecorded: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "auditproxy_events_recorded_total",
			Help: "Audit events accepted by the audit log (the spool).",
		}),
		eventsDropped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "auditproxy_events_dropped_total",
			Help: "Audit events the audit log failed to accept (their answers were cut before the end). Anything but 0 is a bug or a failing disk.",
		}),
		folded: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "auditproxy_model_label_folded_total",
			Help: "Requests counted under model=\"other\" instead of their own model label, by reason: invalid (longer than 128 bytes or outside [A-Za-z0-9._:/@+=-]), unserved (no answer below 400 for that name yet), overflow (64 names already labelled).",
		}, []string{"reason"}),
		acceptErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "auditproxy_accept_errors_total",
			Help: "Failed accepts of client connections, retried after a pause, by reason: emfile (the process is out of file descriptors), enfile (the system is), enomem, econnaborted.",
		}, []string{"reason"}),
		bodyBudgetRejections: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "auditproxy_request_body_budget_rejections_total",
			Help: "Requests answered 503 request_bodies_over_budget: their bodies did not fit in the request body budget (--request-body-budget).",
		}),
		connsRejected: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "auditproxy_client_connections_rejected_total",
			Help: "Client connections answered 503 too_many_connections and closed because auditproxy_client_connections_max were open.",
		}),
		models: make(map[string]struct{}),
	}
}

// Register registers every collector with r.
func (m *Metrics) Register(r prometheus.Registerer) error {
	for _, c := range []prometheus.Collector{m.requests, m.duration, m.ttft, m.overhead,
		m.inputTokens, m.outputTokens, m.inFlight, m.recordWait, m.eventsRecorded, m.eventsDropped, m.folded,
		m.acceptErrors, m.connsRejected, m.bodyBudgetRejections,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "auditproxy_request_body_bytes",
			Help: "Bytes of request bodies held now: read, or being read, and not yet sent upstream.",
		}, func() float64 {
			if b := m.budget.Load(); b != nil {
				return float64(b.used.Load())
			}
			return 0
		}),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "auditproxy_request_body_budget_bytes",
			Help: "The most bytes of request bodies held at once (--request-body-budget).",
		}, func() float64 {
			if b := m.budget.Load(); b != nil {
				return float64(b.limit)
			}
			return 0
		}),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "auditproxy_client_connections",
			Help: "Client connections open now.",
		}, func() float64 { return float64(m.clientConns.Load()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "auditproxy_client_connections_max",
			Help: "The cap on open client connections (--max-client-conns; by default below half the file descriptor limit).",
		}, func() float64 { return float64(m.maxClientConns.Load()) }),
	} {
		if err := r.Register(c); err != nil {
			return err
		}
	}
	return nil
}

// modelLabel returns the label value for requests naming model name; served
// says whether the upstream answered this request below 400, which lets a
// new name have a label of its own.
func (m *Metrics) modelLabel(name string, served bool) string {
	if name == "" {
		return noModelLabel
	}
	if !validModelLabel(name) {
		return m.fold(foldInvalid)
	}
	m.modelsMu.RLock()
	_, ok := m.models[name]
	n := len(m.models)
	m.modelsMu.RUnlock()
	switch {
	case ok:
		return name
	case !served:
		return m.fold(foldRejected)
	case n >= maxModelLabels:
		return m.fold(foldOverflow)
	}
	m.modelsMu.Lock()
	defer m.modelsMu.Unlock()
	if _, ok := m.models[name]; !ok {
		if len(m.models) >= maxModelLabels {
			return m.fold(foldOverflow)
		}
		// The map keeps the name: a copy, so that it holds none of the
		// request's memory.
		name = string([]byte(name))
		m.models[name] = struct{}{}
	}
	return name
}

func (m *Metrics) fold(reason string) string {
	m.folded.WithLabelValues(reason).Inc()
	return otherModelLabel
}

// modelPaths are vLLM's endpoints that answer 404 for a model they do not
// serve: a name answered below 400 there is a served one. Elsewhere a
// "model" member means nothing to vLLM (GET /v1/models answers 200 with any
// body), and would let any client take the label slots.
var modelPaths = map[string]bool{
	"/v1/chat/completions": true, "/v1/completions": true, "/v1/embeddings": true, "/v1/responses": true,
	"/v1/messages": true, "/pooling": true, "/classify": true, "/score": true, "/v1/score": true,
	"/rerank": true, "/v1/rerank": true, "/v2/rerank": true, "/v1/audio/transcriptions": true,
	"/v1/audio/translations": true, "/tokenize": true, "/detokenize": true, "/invocations": true,
}

// validModelLabel reports whether name may be a label value as it is: at
// most maxModelLabelLen bytes of letters, digits and "._:/@+=-", enough for
// hub ids ("meta-llama/Llama-3.1-8B-Instruct"), local paths and LoRA names,
// and nothing that needs escaping in the exposition format or is not UTF-8.
// The names "other" and "none" are the labels' own.
func validModelLabel(name string) bool {
	if len(name) > maxModelLabelLen || name == otherModelLabel || name == noModelLabel {
		return false
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case c == '.', c == '_', c == ':', c == '/', c == '@', c == '+', c == '=', c == '-':
		default:
			return false
		}
	}
	return true
}

// observe records one finished exchange.
func (m *Metrics) observe(ev *audit.Event, recordErr error) {
	served := ev.Status.Code > 0 && ev.Status.Code < 400 && ev.Method == "POST" && modelPaths[ev.Path]
	model := m.modelLabel(ev.Model.Name, served)
	m.requests.WithLabelValues(model, statusLabel(ev.Status.Code), string(ev.Status.Outcome)).Inc()
	m.duration.WithLabelValues(model).Observe(ev.Latency.Total / 1e3)
	if ev.Latency.TTFT != nil {
		m.ttft.WithLabelValues(model).Observe(*ev.Latency.TTFT / 1e3)
	}
	m.overhead.Observe(ev.Latency.Overhead / 1e3)
	if ev.Input.Tokens != nil {
		m.inputTokens.WithLabelValues(model).Add(float64(*ev.Input.Tokens))
	}
	if ev.Output.Tokens != nil {
		m.outputTokens.WithLabelValues(model).Add(float64(*ev.Output.Tokens))
	}
	if recordErr != nil {
		m.eventsDropped.Inc()
	} else {
		m.eventsRecorded.Inc()
	}
}

// refused counts a request answered 503 because its event could not be kept.
func (m *Metrics) refused(model string) {
	m.requests.WithLabelValues(m.modelLabel(model, false), "503", string(audit.OutcomeRejected)).Inc()
}

// statusLabels avoids formatting the common codes on every request.
var statusLabels = func() map[int]string {
	l := make(map[int]string)
	for _, c := range []int{200, 201, 204, 304, 400, 401, 403, 404, 405, 408, 413, 422, 429, 431, 500, 502, 503, 504} {
		l[c] = strconv.Itoa(c)
	}
	return l
}()

func statusLabel(code int) string {
	if s, ok := statusLabels[code]; ok {
		return s
	}
	return strconv.Itoa(code)
}
