package identity

import (
	"fmt"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/auditproxy/auditproxy/audit"
)

// Whether the served models can be identified at all is a state of its own:
// a poll that cannot read /v1/models (vLLM refuses the sidecar's request,
// is down, or answers something that is not a model list) leaves every
// event without a model checksum and records no model_changed, and that
// must be seen, not only logged. The state is:
//
//   - a gauge, auditproxy_model_identity_known (1 while the last poll read
//     the served models, 0 before the first poll and while polls fail), and
//     a counter of failed polls by reason,
//   - Status, which serve shows on /readyz as a "degraded:" line,
//   - an event in the audit log at each change: model_identity_unavailable
//     when polls start failing or fail for another reason, and
//     model_identity_restored when one succeeds again,
//   - a WARN when polls start failing, repeated at most every warnEvery
//     while they go on failing, however short the poll interval.
//
// Failure reasons, the "reason" of the event and of the counter.
const (
	// ReasonUnauthorized: the upstream answered 401 or 403. vLLM started
	// with --api-key answers 401 to a /v1 request without its key.
	ReasonUnauthorized = "unauthorized"
	// ReasonUnreachable: no answer (connection refused, reset, timeout).
	ReasonUnreachable = "unreachable"
	// ReasonBadResponse: an answer other than 200, or a 200 whose body is
	// not a model list (not JSON, larger than maxModelsBody, no "data"
	// list, a card without an id, one id listed twice).
	ReasonBadResponse = "bad_response"
)

// The events recorded at a change of the identity state
// (audit.TypeModelIdentityUnavailable and audit.TypeModelIdentityRestored):
//
// model_identity_unavailable, when polls start failing (or fail for another
// reason than before):
//
//	"details":{"reason":"unauthorized","error":"vLLM answered 401 Unauthorized to GET /v1/models",
//	           "status":401,"hint":"set --upstream-api-key-file ..."}
//
// "status" is the HTTP status when one came, "hint" what the operator can
// do, when known. Inference events that follow carry no model checksum
// (only the pending or earlier ones may) until:
//
// model_identity_restored, when a poll succeeds again:
//
//	"details":{"reason":"unauthorized","unavailable_since":"2026-12-05T10:00:00Z"}
//
// A sidecar whose first poll succeeds records neither: its model_changed
// events say what it serves.
// warnEvery bounds how often a lasting failure is logged again.
const warnEvery = 5 * time.Minute

// pollError is why a poll could not read the served models.
type pollError struct {
	reason string
	status int    // the HTTP status, 0 when none came
	msg    string // one line, without the request's credentials
}

func (e *pollError) Error() string { return e.msg }

// IdentityStatus says whether the served models are identified.
type IdentityStatus struct {
	Polled bool      // a poll has finished
	Known  bool      // the last poll read the served models
	Reason string    // why not, when Polled and not Known: a Reason* constant
	Error  string    // what the last poll met, one line
	Hint   string    // what the operator can do about it, or ""
	Since  time.Time // when the state began (the first failure of a run of them)
}

// Problem is the line /readyz shows while the served models cannot be
// identified, or "" when they are (or the first poll has not finished).
func (s IdentityStatus) Problem() string {
	if !s.Polled || s.Known {
		return ""
	}
	p := fmt.Sprintf("model identity unknown since %s (%s): %s", s.Since.UTC().Format(time.RFC3339), s.Reason, s.Error)
	if s.Hint != "" {
		p += "; " + s.Hint
	}
	return p + "; events carry no model checksum meanwhile"
}

// availability tracks the identity state; Models holds one.
type availability struct {
	status   IdentityStatus
	failures int       // failed polls since Since
	warned   time.Time // last WARN about the current failure
	known    prometheus.Gauge
	failed   *prometheus.CounterVec
}

func newAvailability() *availability {
	a := &availability{
		known: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "auditproxy_model_identity_known",
			Help: "1 while the last poll of the upstream's /v1/models succeeded, so events can carry the served models' checksums; 0 before the first poll and while polls fail (auditproxy_model_identity_poll_failures_total says why, /readyz says what to do).",
		}),
		failed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "auditproxy_model_identity_poll_failures_total",
			Help: "Polls of the upstream's /v1/models that failed, by reason: unauthorized (401 or 403: vLLM's --api-key; see --upstream-api-key-file), unreachable (no answer), bad_response (another status, or not a model list).",
		}, []string{"reason"}),
	}
	for _, r := range []string{ReasonUnauthorized, ReasonUnreachable, ReasonBadResponse} {
		a.failed.WithLabelValues(r)
	}
	return a
}

// Register registers the identity metrics with reg.
func (m *Models) Register(reg prometheus.Registerer) error {
	for _, c := range []prometheus.Collector{m.avail.known, m.avail.failed} {
		if err := reg.Register(c); err != nil {
			return err
		}
	}
	return nil
}

// Status returns the identity state.
func (m *Models) Status() IdentityStatus {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.avail.status
}

// report updates the state with the outcome of a poll's read of
// /v1/models (perr nil: it succeeded), records an event when the state
// changed, and logs.
func (m *Models) report(perr *pollError, now time.Time) {
	m.mu.Lock()
	a := m.avail
	prev := a.status
	var typ string
	var details map[string]any
	warn := false
	if perr == nil {
		a.status = IdentityStatus{Polled: true, Known: true, Since: now}
		if prev.Known {
			a.status.Since = prev.Since
		}
		a.known.Set(1)
		if prev.Polled && !prev.Known {
			typ = audit.TypeModelIdentityRestored
			details = map[string]any{"reason": prev.Reason, "unavailable_since": audit.Timestamp(prev.Since)}
		}
	} else {
		a.failed.WithLabelValues(perr.reason).Inc()
		a.known.Set(0)
		next := IdentityStatus{Polled: true, Reason: perr.reason, Error: perr.msg, Since: now}
		if perr.reason == ReasonUnauthorized {
			next.Hint = m.opts.UnauthorizedHint
		}
		if prev.Polled && !prev.Known && prev.Reason == perr.reason {
			next.Since = prev.Since
			a.failures++
			warn = now.Sub(a.warned) >= warnEvery
		} else {
			a.failures = 1
			warn = true
			typ = audit.TypeModelIdentityUnavailable
			details = map[string]any{"reason": perr.reason, "error": perr.msg}
			if perr.status != 0 {
				details["status"] = perr.status
			}
			if next.Hint != "" {
				details["hint"] = next.Hint
			}
		}
		a.status = next
		if warn {
			a.warned = now
		}
	}
	cur, failures := a.status, a.failures
	m.mu.Unlock()

	switch {
	case warn:
		attrs := []any{"reason", cur.Reason, "err", cur.Error, "since", cur.Since.UTC().Format(time.RFC3339), "failed_polls", failures}
		if cur.Hint != "" {
			attrs = append(attrs, "fix", cur.Hint)
		}
		attrs = append(attrs, "repeated", "at most every "+warnEvery.String()+" while it lasts")
		m.opts.Logger.Warn("model identity unknown: events carry no model checksum and no model_changed is recorded", attrs...)
	case typ == audit.TypeModelIdentityRestored:
		m.opts.Logger.Info("model identity restored: the upstream's /v1/models answers again", "was", prev.Reason,
			"unavailable_since", prev.Since.UTC().Format(time.RFC3339))
	}
	if typ == "" {
		return
	}
	ev, err := audit.NewOpsEvent(typ, details, m.opts.Source, now)
	if err == nil && m.opts.Record != nil {
		err = m.opts.Record(ev)
	}
	if err != nil {
		m.opts.Logger.Error("cannot record an operational event", "type", typ, "err", err)
	}
}
