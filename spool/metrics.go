package spool

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
	// Writability (space.go); set by the committer.
	writable           prometheus.Gauge
	unwritable         *prometheus.GaugeVec
	freeBytes          prometheus.Gauge
	checkpointFailures prometheus.Counter
	damaged            prometheus.Counter
}

func newSpoolMetrics() *spoolMetrics {
	return &spoolMetrics{
		rejected: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "auditproxy_spool_full_rejections_total",
			Help: "Requests refused with 503 because the spool was at --spool-max-bytes or not writable (auditproxy_spool_writable): no inference runs without a place for its record.",
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
		writable: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "auditproxy_spool_writable",
			Help: "1 while the spool takes events; 0 while it refuses new requests (503) because its disk is below the free-space reserve or its commits fail (auditproxy_spool_unwritable says why).",
		}),
		unwritable: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "auditproxy_spool_unwritable",
			Help: "1 for the reason the spool refuses requests, 0 for the others: low_disk_space (free space below --spool-min-free-bytes), commit_failed (a write or fsync failed; probed every second), unusable (a failed commit could not be cut off).",
		}, []string{"reason"}),
		freeBytes: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "auditproxy_spool_free_bytes",
			Help: "Free bytes of the spool's filesystem at the last check (statfs, every second and after commits near the reserve).",
		}),
		damaged: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "auditproxy_spool_segments_damaged_total",
			Help: "Spool segments found damaged (committed records unreadable): a sealed one quarantined while shipping (its intact records shipped, the file kept as .damaged, a segment_damaged event in the log), or the active one repaired at start (a new log epoch).",
		}),
		checkpointFailures: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "auditproxy_checkpoint_failures_total",
			Help: "Checkpoints of the log that could not be committed (their commit failed); retried every second while the spool is not writable.",
		}),
	}
}

// Register registers the spool's metrics with reg.
func (s *Spool) Register(reg prometheus.Registerer) error {
	m := s.metrics
	s.stateMu.Lock()
	rec := s.Recovery
	s.stateMu.Unlock()
	cs := []prometheus.Collector{m.rejected, m.commitSeconds, m.commitErrors, m.sealed, m.deleted,
		m.writable, m.unwritable, m.freeBytes, m.checkpointFailures, m.damaged,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "auditproxy_spool_min_free_bytes",
			Help: "The free space kept in reserve on the spool's filesystem (--spool-min-free-bytes); below it requests are refused.",
		}, func() float64 { return float64(s.opts.MinFreeBytes) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "auditproxy_spool_bytes",
			Help: "Bytes of the spool's files on disk, all counted against --spool-max-bytes: segments, the log's tree state, state files, saved damage (.corrupt, .damaged).",
		}, func() float64 { return float64(s.totalBytes()) }),
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
	for _, c := range cs {
		if err := reg.Register(c); err != nil {
			return err
		}
	}
	if s.chain != nil {
		return s.chain.Register(reg)
	}
	return nil
}
