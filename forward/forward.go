// Package forward ships the spool's committed events to an aggregator
// (Fluent Bit, Fluentd) over the Fluentd forward protocol
// (https://github.com/fluent/fluentd/wiki/Forward-Protocol-Specification-v1),
// in Forward-mode batches with a chunk id, over TCP or TLS, and advances the
// spool's acknowledged position only when the aggregator acknowledges a
// chunk. Delivery is at least once; the event id lets the aggregator
// deduplicate.
package forward

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/url"
	"sync"
	"sync/atomic"
	"time"

	"github.com/auditproxy/auditproxy/spool"
	"github.com/fluent/fluent-logger-golang/fluent"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/tinylib/msgp/msgp"
)

// DefaultTag is the forward-protocol tag events are sent with.
const DefaultTag = "auditproxy.inference"

// Options configure a Shipper. Zero values take the defaults.
type Options struct {
	// Address is tcp://HOST:PORT or tls://HOST:PORT. Required.
	Address string
	// Tag defaults to DefaultTag.
	Tag string
	// RootCAs verify the aggregator's certificate over TLS; nil means the
	// system roots (which honour SSL_CERT_FILE and SSL_CERT_DIR).
	RootCAs *x509.CertPool
	// InsecureSkipVerify accepts any certificate. Only for tests and
	// explicit operator choice.
	InsecureSkipVerify bool
	// BatchMaxEvents and BatchMaxBytes bound one Forward-mode message.
	// Defaults: 2,000 events, 4 MiB of JSON.
	BatchMaxEvents int
	BatchMaxBytes  int
	// BatchLinger is how long the shipper, caught up and woken by a new
	// commit, waits for more before it reads a message: at low rates one
	// message and one ack per event cost the proxy a wake-up, a write and a
	// read each (the aggregator's guarantee is seconds, not microseconds).
	// Under load the shipper is never caught up and never lingers.
	// Default 5 ms; negative: none.
	BatchLinger time.Duration
	// AckTimeout bounds the wait for an acknowledgement (and for a write);
	// then the connection is dropped and the batch sent again on a new
	// one. Default 10 s.
	AckTimeout time.Duration
	// DialTimeout bounds connecting, TLS handshake included. Default 5 s.
	DialTimeout time.Duration
	// BackoffMin and BackoffMax bound the wait between failed attempts,
	// which doubles from BackoffMin up to BackoffMax, with jitter.
	// Defaults: 100 ms and 30 s.
	BackoffMin, BackoffMax time.Duration
	// StateInterval is how often, at most, the acknowledged position is
	// written to the spool's state file. Default 1 s; a crash re-sends at
	// most that much.
	StateInterval time.Duration
	Logger        *slog.Logger
}

func (o *Options) setDefaults() {
	if o.Tag == "" {
		o.Tag = DefaultTag
	}
	if o.BatchMaxEvents <= 0 {
		o.BatchMaxEvents = 2000
	}
	if o.BatchMaxBytes <= 0 {
		o.BatchMaxBytes = 4 << 20
	}
	if o.BatchLinger == 0 {
		o.BatchLinger = 5 * time.Millisecond
	}
	if o.AckTimeout <= 0 {
		o.AckTimeout = 10 * time.Second
	}
	if o.DialTimeout <= 0 {
		o.DialTimeout = 5 * time.Second
	}
	if o.BackoffMin <= 0 {
		o.BackoffMin = 100 * time.Millisecond
	}
	if o.BackoffMax < o.BackoffMin {
		o.BackoffMax = max(30*time.Second, o.BackoffMin)
	}
	if o.StateInterval <= 0 {
		o.StateInterval = time.Second
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
}

// ParseAddress splits tcp://HOST:PORT or tls://HOST:PORT.
func ParseAddress(s string) (useTLS bool, hostport string, err error) {
	u, err := url.Parse(s)
	if err != nil {
		return false, "", fmt.Errorf("forward address %q: %w", s, err)
	}
	switch u.Scheme {
	case "tcp":
	case "tls":
		useTLS = true
	default:
		return false, "", fmt.Errorf("forward address %q: scheme must be tcp or tls", s)
	}
	if u.Host == "" || u.Port() == "" || (u.Path != "" && u.Path != "/") || u.RawQuery != "" {
		return false, "", fmt.Errorf("forward address %q: want %s://HOST:PORT", s, u.Scheme)
	}
	return useTLS, u.Host, nil
}

// Shipper sends the spool's events to a forward-protocol aggregator (Fluent
// Bit, Fluentd) and advances the spool's acknowledged position on each ack.
//
// Each message is one Forward-mode batch, [tag, [[time, record]...],
// {"chunk": id, "size": n}], with the events' JSON fields as msgpack maps.
// fluent-logger-golang provides the protocol's types (EventTime, AckResp),
// but its client sends one event per message and waits for each ack, which
// we measured at a fraction of the throughput batches give (see
// bench/RESULTS.md); so the Shipper writes the batches on a connection of
// its own, with deadlines on every write and every ack wait.
type Shipper struct {
	sp      *spool.Spool
	opts    Options
	useTLS  bool
	host    string
	addr    string
	log     *slog.Logger
	metrics *forwardMetrics

	ctx    context.Context
	cancel context.CancelFunc
	done   chan struct{}

	connMu sync.Mutex
	conn   net.Conn

	oldestUnacked atomic.Int64 // unix nanos of the oldest unacknowledged event; 0 if none
	everConnected bool
}

// New returns a Shipper for spool; Start starts it.
func New(sp *spool.Spool, opts Options) (*Shipper, error) {
	opts.setDefaults()
	useTLS, hostport, err := ParseAddress(opts.Address)
	if err != nil {
		return nil, err
	}
	host, _, _ := net.SplitHostPort(hostport)
	ctx, cancel := context.WithCancel(context.Background())
	return &Shipper{sp: sp, opts: opts, useTLS: useTLS, host: host, addr: hostport, log: opts.Logger,
		metrics: newForwardMetrics(), ctx: ctx, cancel: cancel, done: make(chan struct{})}, nil
}

// Start ships in the background until Drain or Close.
func (sh *Shipper) Start() {
	go sh.run()
}

// Drain waits until every committed event is acknowledged, for at most
// timeout, then stops the Shipper. Call it after closing the spool, so that
// nothing new is committed meanwhile. It reports whether all was shipped;
// what was not ships at the next start.
func (sh *Shipper) Drain(timeout time.Duration) bool {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	drained := false
	for !drained {
		committed, changed := sh.sp.Committed()
		if !sh.sp.Acked().Less(committed) {
			drained = true
			break
		}
		select {
		case <-deadline.C:
			sh.Close()
			return false
		case <-changed:
		case <-time.After(10 * time.Millisecond):
		case <-sh.done:
			return !sh.sp.Acked().Less(committed)
		}
	}
	sh.Close()
	return drained
}

// Close stops the Shipper at once and writes the acknowledged position to
// the spool's state file.
func (sh *Shipper) Close() error {
	sh.cancel()
	sh.connMu.Lock()
	if sh.conn != nil {
		sh.conn.Close() // unblocks a write or an ack wait
	}
	sh.connMu.Unlock()
	<-sh.done
	return sh.sp.SaveState()
}

// pendingBatch is a message built and not yet acknowledged.
type pendingBatch struct {
	frame  []byte
	chunk  string
	events int
	end    spool.Pos
}

func (sh *Shipper) run() {
	defer close(sh.done)
	defer sh.dropConn()
	r := sh.sp.NewReader(sh.sp.Acked())
	defer func() { r.Close() }()
	var (
		frame     forwardFrame
		pending   *pendingBatch
		failures  int
		lastSaved = time.Now()
		saved     = true
		ackReader *msgp.Reader
		// Caught up, the state is saved once StateInterval has passed
		// since the last save, not at every catch-up: under steady load
		// the shipper catches up after nearly every batch, and an atomic
		// file replacement (two fsyncs) per batch cost 12% of the
		// proxy's CPU and slowed the spool's own fsyncs.
		saveTimer = time.NewTimer(time.Hour)
	)
	saveTimer.Stop()
	defer saveTimer.Stop()
	for sh.ctx.Err() == nil {
		if pending == nil {
			var err error
			pending, err = sh.nextBatch(r, &frame)
			if err != nil {
				// Stuck on a record: the lag must show it, not read 0.
				sh.oldestUnacked.CompareAndSwap(0, time.Now().UnixNano())
				if r.Quarantine(err) {
					continue
				}
				sh.log.Error("cannot read the spool for shipping; retrying", "err", err)
				if !sh.sleep(sh.opts.BackoffMax) {
					return
				}
				r.Close()
				r = sh.sp.NewReader(sh.sp.Acked())
				continue
			}
			if pending == nil {
				sh.oldestUnacked.Store(0)
				var saveDue <-chan time.Time
				if !saved {
					if wait := sh.opts.StateInterval - time.Since(lastSaved); wait > 0 {
						saveTimer.Reset(wait)
						saveDue = saveTimer.C
					} else {
						if err := sh.sp.SaveState(); err != nil {
							sh.log.Error("cannot write the spool state", "err", err)
						}
						saved, lastSaved = true, time.Now()
					}
				}
				_, changed := sh.sp.Committed()
				if committed, _ := sh.sp.Committed(); r.Pos().Less(committed) {
					saveTimer.Stop()
					continue
				}
				select {
				case <-changed:
					saveTimer.Stop()
					if sh.opts.BatchLinger > 0 && !sh.sleep(sh.opts.BatchLinger) {
						return
					}
				case <-saveDue:
				case <-sh.ctx.Done():
					return
				}
				continue
			}
		}
		if sh.currentConn() == nil {
			if err := sh.connect(); err != nil {
				failures++
				sh.metrics.retries.Inc()
				sh.log.Warn("cannot connect to the aggregator; retrying", "address", sh.opts.Address, "err", err, "attempt", failures)
				if !sh.sleep(sh.backoff(failures)) {
					return
				}
				continue
			}
			ackReader = msgp.NewReader(sh.currentConn())
		}
		if err := sh.send(pending, ackReader); err != nil {
			failures++
			sh.metrics.retries.Inc()
			sh.dropConn()
			if sh.ctx.Err() != nil {
				return
			}
			sh.log.Warn("batch not acknowledged; reconnecting and sending it again", "events", pending.events, "err", err, "attempt", failures)
			if !sh.sleep(sh.backoff(failures)) {
				return
			}
			continue
		}
		failures = 0
		sh.sp.Ack(pending.end)
		if committed, _ := sh.sp.Committed(); !r.Pos().Less(committed) {
			sh.oldestUnacked.Store(0) // caught up
		}
		sh.metrics.acked.Add(float64(pending.events))
		pending, saved = nil, false
		if time.Since(lastSaved) >= sh.opts.StateInterval {
			if err := sh.sp.SaveState(); err != nil {
				sh.log.Error("cannot write the spool state", "err", err)
			}
			saved, lastSaved = true, time.Now()
		}
	}
}

// nextBatch reads committed events into one message, or returns nil when
// there are none.
func (sh *Shipper) nextBatch(r *spool.Reader, f *forwardFrame) (*pendingBatch, error) {
	f.reset(sh.opts.Tag)
	now := time.Now()
	var bytes int
	var end spool.Pos
	for f.len() < sh.opts.BatchMaxEvents && bytes < sh.opts.BatchMaxBytes {
		rec, next, ok, err := r.Next()
		if err != nil {
			if f.len() > 0 {
				break // ship what was read; the error comes back next time
			}
			return nil, err
		}
		if !ok {
			break
		}
		if err := f.add(rec, now); err != nil {
			// A record that passed its checksum but is not a JSON object
			// was written by a bug; ship it wrapped rather than lose it.
			sh.log.Error("spool record is not a JSON object; shipping it as a string", "pos", next.String(), "err", err)
			if err := f.add(wrapRaw(rec), now); err != nil {
				return nil, err
			}
		}
		if f.len() == 1 {
			sh.oldestUnacked.Store(time.Time(f.et).UnixNano())
		}
		bytes += len(rec)
		end = next
	}
	if f.len() == 0 {
		return nil, nil
	}
	chunk := newChunkID()
	frame := f.finish(chunk)
	return &pendingBatch{frame: frame, chunk: chunk, events: f.len(), end: end}, nil
}

// send writes one batch and waits for its ack.
func (sh *Shipper) send(b *pendingBatch, ackReader *msgp.Reader) error {
	conn := sh.currentConn()
	if conn == nil {
		return errors.New("not connected")
	}
	start := time.Now()
	deadline := start.Add(sh.opts.AckTimeout)
	if err := conn.SetDeadline(deadline); err != nil {
		return err
	}
	if _, err := conn.Write(b.frame); err != nil {
		return fmt.Errorf("send %d events: %w", b.events, err)
	}
	sh.metrics.sent.Add(float64(b.events))
	var ack fluent.AckResp
	if err := ack.DecodeMsg(ackReader); err != nil {
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			return fmt.Errorf("no ack within %s", sh.opts.AckTimeout)
		}
		return fmt.Errorf("read ack: %w", err)
	}
	if ack.Ack != b.chunk {
		return fmt.Errorf("ack for chunk %q, want %q", ack.Ack, b.chunk)
	}
	sh.metrics.ackSeconds.Observe(time.Since(start).Seconds())
	return nil
}

func (sh *Shipper) connect() error {
	d := net.Dialer{Timeout: sh.opts.DialTimeout, KeepAlive: 30 * time.Second}
	ctx, cancel := context.WithTimeout(sh.ctx, sh.opts.DialTimeout)
	defer cancel()
	var conn net.Conn
	var err error
	if sh.useTLS {
		td := tls.Dialer{NetDialer: &d, Config: &tls.Config{
			ServerName:         sh.host,
			RootCAs:            sh.opts.RootCAs,
			InsecureSkipVerify: sh.opts.InsecureSkipVerify,
			MinVersion:         tls.VersionTLS12,
		}}
		conn, err = td.DialContext(ctx, "tcp", sh.addr)
	} else {
		conn, err = d.DialContext(ctx, "tcp", sh.addr)
	}
	if err != nil {
		return err
	}
	sh.connMu.Lock()
	defer sh.connMu.Unlock()
	if sh.ctx.Err() != nil {
		conn.Close()
		return sh.ctx.Err()
	}
	sh.conn = conn
	if sh.everConnected {
		sh.metrics.reconnects.Inc()
	}
	sh.everConnected = true
	sh.metrics.connected.Set(1)
	sh.log.Info("connected to the aggregator", "address", sh.opts.Address)
	return nil
}

func (sh *Shipper) currentConn() net.Conn {
	sh.connMu.Lock()
	defer sh.connMu.Unlock()
	return sh.conn
}

func (sh *Shipper) dropConn() {
	sh.connMu.Lock()
	defer sh.connMu.Unlock()
	if sh.conn != nil {
		sh.conn.Close()
		sh.conn = nil
		sh.metrics.connected.Set(0)
	}
}

// backoff returns the wait after the n-th consecutive failure: doubling from
// BackoffMin, capped at BackoffMax, the upper half randomised so that many
// sidecars that lost the same aggregator do not return in step.
func (sh *Shipper) backoff(n int) time.Duration {
	d := sh.opts.BackoffMin << min(n-1, 30)
	if d <= 0 || d > sh.opts.BackoffMax {
		d = sh.opts.BackoffMax
	}
	return d/2 + rand.N(d/2+1)
}

// sleep waits for d or until the Shipper stops; it reports whether to go on.
func (sh *Shipper) sleep(d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-sh.ctx.Done():
		return false
	}
}

// ShipLag returns the age of the oldest event not yet acknowledged, or 0
// when every committed event is. While shipping cannot read on (a damaged
// segment it could not quarantine), it counts at least from the first
// failed read: the event there is older than that.
func (sh *Shipper) ShipLag() time.Duration {
	t := sh.oldestUnacked.Load()
	if t == 0 {
		return 0
	}
	return max(time.Since(time.Unix(0, t)), 0)
}

// wrapRaw makes a JSON object of a record that is not one.
func wrapRaw(rec []byte) []byte {
	b := []byte(`{"unparsed":`)
	b = appendJSONString(b, rec)
	return append(b, '}')
}

func appendJSONString(dst, s []byte) []byte {
	const hex = "0123456789abcdef"
	dst = append(dst, '"')
	for _, c := range s {
		switch {
		case c == '"' || c == '\\':
			dst = append(dst, '\\', c)
		case c < 0x20 || c >= 0x7f:
			dst = append(dst, '\\', 'u', '0', '0', hex[c>>4], hex[c&15])
		default:
			dst = append(dst, c)
		}
	}
	return append(dst, '"')
}

// forwardMetrics are the Shipper's collectors.
type forwardMetrics struct {
	sent, acked, retries, reconnects prometheus.Counter
	connected                        prometheus.Gauge
	ackSeconds                       prometheus.Histogram
}

func newForwardMetrics() *forwardMetrics {
	return &forwardMetrics{
		sent: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "auditproxy_forward_events_sent_total",
			Help: "Events written to the aggregator connection, resends included.",
		}),
		acked: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "auditproxy_forward_events_acked_total",
			Help: "Events the aggregator acknowledged.",
		}),
		retries: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "auditproxy_forward_retries_total",
			Help: "Failed attempts to connect or to get a batch acknowledged; each is retried after a backoff.",
		}),
		reconnects: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "auditproxy_forward_reconnects_total",
			Help: "Connections to the aggregator made after the first.",
		}),
		connected: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "auditproxy_forward_connected",
			Help: "1 while a connection to the aggregator is open.",
		}),
		ackSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "auditproxy_forward_ack_seconds",
			Help:    "Time from sending a batch to its acknowledgement.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 10},
		}),
	}
}

// Register registers the Shipper's metrics with reg.
func (sh *Shipper) Register(reg prometheus.Registerer) error {
	m := sh.metrics
	for _, c := range []prometheus.Collector{m.sent, m.acked, m.retries, m.reconnects, m.connected, m.ackSeconds,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "auditproxy_forward_ship_lag_seconds",
			Help: "Age of the oldest event not yet acknowledged by the aggregator; 0 when all are.",
		}, func() float64 { return sh.ShipLag().Seconds() }),
	} {
		if err := reg.Register(c); err != nil {
			return err
		}
	}
	return nil
}
