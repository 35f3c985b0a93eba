package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/auditproxy/auditproxy/audit"
	"github.com/auditproxy/auditproxy/hashing"
	"github.com/auditproxy/auditproxy/proxy"
	"github.com/auditproxy/auditproxy/shipper"
)

// serveConfig holds the flags shared by serve and demo.
type serveConfig struct {
	upstream            string
	listen              string
	adminListen         string
	dataDir             string
	hash                string
	keyIDSecretFile     string
	maxRequestBodySize  byteSize
	upstreamIdleTimeout time.Duration
	clientIdleTimeout   time.Duration
	upstreamMaxConns    int
	durability          string
	fsyncInterval       time.Duration
	shutdownTimeout     time.Duration
	logLevel            string
	logFormat           string
}

func (c *serveConfig) register(fs *flag.FlagSet, listenDefault string) {
	fs.StringVar(&c.upstream, "upstream", "", "base `URL` of the vLLM server, e.g. http://127.0.0.1:8000 (required)")
	fs.StringVar(&c.listen, "listen", listenDefault, "`address` for clients (OpenAI-compatible API)")
	fs.StringVar(&c.adminListen, "admin-listen", "127.0.0.1:9090", "`address` for /metrics, /healthz and /readyz; empty disables")
	fs.StringVar(&c.dataDir, "data-dir", "./auditproxy-data", "`directory` for the event log and the key id secret")
	fs.StringVar(&c.hash, "hash", "blake3", "body digest `algorithm`: blake3 or sha256")
	fs.StringVar(&c.keyIDSecretFile, "key-id-secret-file", "", "`file` with the 32-byte secret (hex) that keys api_key_id; generated with mode 0600 if absent (default DATA-DIR/key-id.secret)")
	c.maxRequestBodySize = 32 << 20
	fs.Var(&c.maxRequestBodySize, "max-request-body-size", "largest request body `size` accepted; larger ones get 413")
	fs.DurationVar(&c.upstreamIdleTimeout, "upstream-idle-timeout", 10*time.Minute, "fail an upstream exchange that sends no byte for this `duration` (504, or a cut stream); bounds the longest non-streamed generation")
	fs.DurationVar(&c.clientIdleTimeout, "client-idle-timeout", 2*time.Minute, "fail a client that reads no byte of its response, or sends no byte of its request, for this `duration`")
	fs.IntVar(&c.upstreamMaxConns, "upstream-max-conns", 4096, "most concurrent upstream `connections` (requests in flight at vLLM)")
	fs.StringVar(&c.durability, "durability", "sync", "`mode`: sync holds back the end of each answer until its event is fsynced; async fsyncs within --fsync-interval without holding back (a crash can lose that interval)")
	fs.DurationVar(&c.fsyncInterval, "fsync-interval", 5*time.Millisecond, "with --durability async, commit (write and fsync) the event log once per `duration`; with sync, commits run back to back and each takes every event that arrived during the last")
	fs.DurationVar(&c.shutdownTimeout, "shutdown-timeout", 30*time.Second, "on SIGTERM, how long in-flight requests may take to finish")
	fs.StringVar(&c.logLevel, "log-level", "info", "log `level`: debug, info, warn or error")
	fs.StringVar(&c.logFormat, "log-format", "json", "log `format` on stderr: json or text")
}

func runServe(args []string, _, stderr io.Writer) error {
	var c serveConfig
	fs := newFlagSet("serve", "serve --upstream URL [flags]", stderr)
	c.register(fs, "0.0.0.0:8080")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if c.upstream == "" {
		return usageError{"serve: --upstream is required (e.g. --upstream http://127.0.0.1:8000)"}
	}
	inst, err := start(c, stderr, nil)
	if err != nil {
		return err
	}
	return inst.waitForSignal()
}

// instance is a running proxy with its admin listener and event log.
type instance struct {
	cfg      serveConfig
	log      *slog.Logger
	proxy    *proxy.Proxy
	events   *shipper.FileLog
	ln       net.Listener
	admin    *http.Server
	adminLn  net.Listener
	serveErr chan error
}

// start opens the data dir and listeners and serves in the background. tee,
// if not nil, also receives every event (demo prints them).
func start(c serveConfig, stderr io.Writer, tee func(*audit.Event)) (*instance, error) {
	logger, err := newLogger(c.logLevel, c.logFormat, stderr)
	if err != nil {
		return nil, err
	}
	alg, err := hashing.ParseAlgorithm(c.hash)
	if err != nil {
		return nil, usageError{"--hash: " + err.Error()}
	}
	if _, err := proxy.ParseUpstream(c.upstream); err != nil {
		return nil, usageError{"--upstream: " + err.Error()}
	}
	if c.keyIDSecretFile == "" {
		c.keyIDSecretFile = filepath.Join(c.dataDir, "key-id.secret")
	}
	secret, err := hashing.LoadOrCreateKeyIDSecret(c.keyIDSecretFile)
	if err != nil {
		return nil, err
	}
	keyIDer, err := hashing.NewKeyIDer(secret)
	if err != nil {
		return nil, err
	}
	durability, err := shipper.ParseDurability(c.durability)
	if err != nil {
		return nil, usageError{"--durability: " + err.Error()}
	}
	events, err := shipper.OpenFileLog(c.dataDir, shipper.FileLogOptions{Durability: durability, FsyncInterval: c.fsyncInterval})
	if err != nil {
		return nil, err
	}
	if events.TornBytesCut > 0 {
		logger.Warn("cut a partial last line from the event log (the previous process died while writing it; no client got the end of that answer)",
			"bytes", events.TornBytesCut)
	}
	var rec audit.Recorder = events
	if tee != nil {
		rec = teeRecorder{next: events, tee: tee}
	}
	host, _ := os.Hostname()
	metrics := proxy.NewMetrics()
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	if err := metrics.Register(reg); err != nil {
		return nil, err
	}
	p, err := proxy.New(proxy.Config{
		Upstream:            c.upstream,
		MaxRequestBodySize:  int(c.maxRequestBodySize),
		UpstreamIdleTimeout: c.upstreamIdleTimeout,
		ClientIdleTimeout:   c.clientIdleTimeout,
		UpstreamMaxConns:    c.upstreamMaxConns,
		Hash:                alg,
		KeyIDer:             keyIDer,
		Recorder:            rec,
		Metrics:             metrics,
		Logger:              logger,
		Source:              audit.Source{Host: host, Version: buildVersion()},
	})
	if err != nil {
		return nil, err
	}
	inst := &instance{cfg: c, log: logger, proxy: p, events: events, serveErr: make(chan error, 2)}
	inst.ln, err = net.Listen("tcp", c.listen)
	if err != nil {
		events.Close()
		return nil, fmt.Errorf("listen %s: %w", c.listen, err)
	}
	if c.adminListen != "" {
		inst.adminLn, err = net.Listen("tcp", c.adminListen)
		if err != nil {
			inst.ln.Close()
			events.Close()
			return nil, fmt.Errorf("admin listen %s: %w", c.adminListen, err)
		}
		inst.admin = &http.Server{Handler: p.AdminHandler(reg), ReadHeaderTimeout: 10 * time.Second}
		go func() {
			if err := inst.admin.Serve(inst.adminLn); err != nil && !errors.Is(err, http.ErrServerClosed) {
				inst.serveErr <- fmt.Errorf("admin server: %w", err)
			}
		}()
	}
	go func() { inst.serveErr <- p.Serve(inst.ln) }()
	logger.Info("auditproxy serving", "version", buildVersion(), "listen", inst.ln.Addr().String(),
		"admin", c.adminListen, "upstream", c.upstream, "data_dir", c.dataDir, "hash", string(alg),
		"durability", string(durability), "fsync_interval", c.fsyncInterval.String())
	return inst, nil
}

// waitForSignal serves until SIGINT or SIGTERM, then shuts down.
func (inst *instance) waitForSignal() error {
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(sig)
	select {
	case s := <-sig:
		inst.log.Info("shutting down", "signal", s.String())
	case err := <-inst.serveErr:
		inst.shutdown()
		return err
	}
	return inst.shutdown()
}

// shutdown stops accepting, lets in-flight requests finish for up to the
// shutdown timeout, and closes the event log.
func (inst *instance) shutdown() error {
	done := make(chan error, 1)
	go func() { done <- inst.proxy.Shutdown() }()
	var err error
	select {
	case err = <-done:
	case <-time.After(inst.cfg.shutdownTimeout):
		err = fmt.Errorf("in-flight requests still running after %s", inst.cfg.shutdownTimeout)
	}
	if inst.admin != nil {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_ = inst.admin.Shutdown(ctx)
		cancel()
	}
	if cerr := inst.events.Close(); err == nil {
		err = cerr
	}
	inst.log.Info("stopped", "events_recorded", inst.events.Recorded())
	return err
}

func newLogger(level, format string, w io.Writer) (*slog.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return nil, usageError{fmt.Sprintf("--log-level %q: want debug, info, warn or error", level)}
	}
	opts := &slog.HandlerOptions{Level: l}
	switch format {
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	}
	return nil, usageError{fmt.Sprintf("--log-format %q: want json or text", format)}
}

// teeRecorder records to next, then shows the event to tee.
type teeRecorder struct {
	next audit.Recorder
	tee  func(*audit.Event)
}

func (t teeRecorder) Record(ev *audit.Event) error {
	err := t.next.Record(ev)
	if err == nil {
		t.tee(ev)
	}
	return err
}
