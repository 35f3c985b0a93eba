package shipper

import (
	"github.com/prometheus/client_golang/prometheus"
)

// spoolMetrics are the spool's collectors; Spool.Register registers them.
type spoolMetrics struct {
	spool         *Spool
	rejected      prometheus.Counter
	commitSeconds prometheus.Histogram
	commitErrors  prometheus.Counter
	sealed        prometheus.Counter
	deleted       *prometheus.CounterVec
}

func newSpoolMetrics() *spoolMetrics {
	return &spoolMetrics{
		rejected: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "auditproxy_spool_full_rejections_total",
			Help: "Requests refused with 503 because the spool was at --spool-max-bytes (or unusable): no inference runs without a place for its record.",
		}),
		commitSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "auditproxy_spool_commit_seconds",
			Help:    "Time of one group commit to the spool: write and fsync.",
			Buckets: []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, 1},
		}),
		commitErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "auditproxy_spool_commit_errors_total",
			Help: "Group commits that failed to write or fsync. With sync durability their answers were cut before the end; with async their events are lost.",
		}),
		sealed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "auditproxy_spool_segments_sealed_total",
			Help: "Spool segments compressed after rotation.",
		}),
		deleted: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "auditproxy_spool_segments_deleted_total",
			Help: "Spool segments deleted, by reason: retention (older than --retention) or space (acknowledged, deleted to make room).",
		}, []string{"reason"}),
	}
}

// Register registers the spool's metrics with reg.
func (s *Spool) Register(reg prometheus.Registerer) error {
	m := s.metrics
	s.stateMu.Lock()
	rec := s.Recovery
	s.stateMu.Unlock()
	cs := []prometheus.Collector{m.rejected, m.commitSeconds, m.commitErrors, m.sealed, m.deleted,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "auditproxy_spool_bytes",
			Help: "Bytes of spool segment files on disk.",
		}, func() float64 { return float64(s.used.Load()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "auditproxy_spool_max_bytes",
			Help: "The spool's size bound (--spool-max-bytes).",
		}, func() float64 { return float64(s.opts.MaxBytes) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "auditproxy_spool_segments",
			Help: "Spool segment files, the active one included.",
		}, func() float64 {
			s.stateMu.Lock()
			defer s.stateMu.Unlock()
			return float64(len(s.segs))
		}),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "auditproxy_spool_records_cut_total",
			Help: "Torn or corrupt records cut from the end of the spool when it was opened (a crash during a commit); the bytes are kept in a .corrupt file.",
		}, func() float64 { return float64(rec.RecordsCut) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "auditproxy_spool_bytes_cut_total",
			Help: "Bytes of the records counted by auditproxy_spool_records_cut_total.",
		}, func() float64 { return float64(rec.BytesCut) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "auditproxy_spool_state_reset_events",
			Help: "Events this run ships again from the oldest because the spool's state file (state.json) was missing, corrupt or of an unknown version at start, so nothing said what the aggregator had acknowledged (it deduplicates them by event id). 0 normally.",
		}, func() float64 { return float64(rec.Resend) }),
	}
	if s.chain != nil {
		cs = append(cs,
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{
				Name: "auditproxy_checkpoint_last_timestamp_seconds",
				Help: "Unix time of the newest signed checkpoint committed to the spool (before the first, the time the log was opened).",
			}, func() float64 { return float64(s.chain.cpCommitted.Load()) / 1e9 }),
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{
				Name: "auditproxy_checkpoint_interval_seconds",
				Help: "The longest time between two checkpoints (--checkpoint-interval): a newest checkpoint older than twice this means the log stopped signing.",
			}, func() float64 { return s.chain.opts.CheckpointInterval.Seconds() }))
	}
	for _, c := range cs {
		if err := reg.Register(c); err != nil {
			return err
		}
	}
	return nil
}
