package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
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
	"strings"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"golang.org/x/mod/sumdb/note"

	"github.com/auditproxy/auditproxy/audit"
	"github.com/auditproxy/auditproxy/auditlog"
	"github.com/auditproxy/auditproxy/auditlog/witness"
	"github.com/auditproxy/auditproxy/change"
	"github.com/auditproxy/auditproxy/eventsrc"
	"github.com/auditproxy/auditproxy/forward"
	"github.com/auditproxy/auditproxy/hashing"
	"github.com/auditproxy/auditproxy/identity"
	"github.com/auditproxy/auditproxy/internal/fsutil"
	"github.com/auditproxy/auditproxy/payload"
	"github.com/auditproxy/auditproxy/proxy"
	"github.com/auditproxy/auditproxy/spool"
)

// serveConfig holds the flags shared by serve and demo.
type serveConfig struct {
	upstream            string
	upstreamAPIKeyFile  string
	listen              string
	adminListen         string
	adminPprof          bool
	maxClientConns      int
	dataDir             string
	hash                string
	keyIDSecretFile     string
	maxRequestBodySize  byteSize
	requestBodyBudget   byteSize
	upstreamIdleTimeout time.Duration
	clientIdleTimeout   time.Duration
	upstreamMaxConns    int
	durability          string
	fsyncInterval       time.Duration
	spoolMaxBytes       byteSize
	spoolMinFree        byteSize
	onSpoolFull         string
	segmentMaxBytes     byteSize
	segmentMaxAge       time.Duration
	retention           time.Duration
	forward             string
	forwardTag          string
	forwardSkipVerify   bool
	forwardAckTimeout   time.Duration
	drainTimeout        time.Duration
	logName             string
	signingKey          string
	checkpointInterval  time.Duration
	checkpointEvery     int
	checkpointDir       string
	checkpointURL       string
	witnessURL          string
	capturePayloads     bool
	allowedSigners      string
	requireSigned       bool
	approvalRequired    string
	changeOutcomeWindow time.Duration
	payloadRecipients   stringList
	captureMaxBytes     byteSize
	gpus                string
	modelDirs           stringList
	modelPoll           time.Duration
	requireGPU          bool
	gpuRefresh          time.Duration
	shutdownTimeout     time.Duration
	logLevel            string
	logFormat           string
	upstreamForcesUsage bool
}

func (c *serveConfig) register(fs *flag.FlagSet, listenDefault string) {
	fs.StringVar(&c.upstream, "upstream", "", "base `URL` of the vLLM server, e.g. http://127.0.0.1:8000 (required)")
	fs.StringVar(&c.upstreamAPIKeyFile, "upstream-api-key-file", "", "`file` holding an API key vLLM accepts (vLLM's --api-key or VLLM_API_KEY; trailing whitespace is ignored): sent only on the sidecar's own requests to vLLM, such as its GET /v1/models, which vLLM refuses without it, leaving events without model checksums")
	fs.StringVar(&c.listen, "listen", listenDefault, "`address` for clients (OpenAI-compatible API)")
	fs.StringVar(&c.adminListen, "admin-listen", "127.0.0.1:9090", "`address` for /metrics, /healthz and /readyz; empty disables")
	fs.BoolVar(&c.adminPprof, "admin-pprof", false, "serve Go's profiler under /debug/pprof/ on the admin listener, to requests with the admin token (DATA-DIR/admin.token) as a bearer token")
	fs.IntVar(&c.maxClientConns, "max-client-conns", 0, "most open client `connections`; one more is answered 503 too_many_connections (0: below half the file descriptor limit)")
	fs.StringVar(&c.dataDir, "data-dir", "./auditproxy-data", "`directory` for the spool (DATA-DIR/spool) and the key id secret")
	fs.StringVar(&c.hash, "hash", "sha256", "body digest `algorithm`: sha256 or blake3")
	fs.StringVar(&c.keyIDSecretFile, "key-id-secret-file", "", "`file` with the 32-byte secret (hex) that keys api_key_id; generated with mode 0600 if absent (default DATA-DIR/key-id.secret)")
	fs.Var(&c.maxRequestBodySize, "max-request-body-size", "largest request body `size` accepted; larger ones get 413 (0: no limit, as vLLM sets none; a body over 8MiB is streamed to vLLM as it arrives, read and hashed on the way, never held)")
	fs.Var(&c.requestBodyBudget, "request-body-budget", "most bytes of request bodies held at once (`size`); a request whose body does not fit gets 503 request_bodies_over_budget (0: a quarter of GOMEMLIMIT if set, else 256MiB)")
	fs.DurationVar(&c.upstreamIdleTimeout, "upstream-idle-timeout", 10*time.Minute, "fail an upstream exchange that sends no byte for this `duration` (504, or a cut stream); bounds the longest non-streamed generation")
	fs.DurationVar(&c.clientIdleTimeout, "client-idle-timeout", 2*time.Minute, "fail a client that reads no byte of its response, or sends no byte of its request, for this `duration`")
	fs.BoolVar(&c.upstreamForcesUsage, "upstream-force-include-usage", false, "vLLM runs with --enable-force-include-usage: every stream carries its usage unasked, so the proxy neither asks for it nor removes it from what the client receives")
	fs.IntVar(&c.upstreamMaxConns, "upstream-max-conns", 4096, "most concurrent upstream `connections` (requests in flight at vLLM)")
	fs.StringVar(&c.durability, "durability", "sync", "`mode`: sync holds back the end of each answer until its event is fsynced; async fsyncs within --fsync-interval without holding back (a crash can lose that interval)")
	fs.DurationVar(&c.fsyncInterval, "fsync-interval", 5*time.Millisecond, "with --durability async, commit (write and fsync) the spool once per `duration`; with sync, commits run back to back and each takes every event that arrived during the last")
	c.spoolMaxBytes = 4 << 30
	fs.Var(&c.spoolMaxBytes, "spool-max-bytes", "bound on the total `size` of the spool's files; at the bound, acknowledged segments are deleted to make room, and if none can be, new requests get 503 (see --on-spool-full)")
	c.spoolMinFree = 256 << 20
	fs.Var(&c.spoolMinFree, "spool-min-free-bytes", "free `size` kept in reserve on the spool's filesystem: below it new requests get 503 without calling the upstream, so that those admitted can still record their events; 0 disables the check")
	fs.StringVar(&c.onSpoolFull, "on-spool-full", "reject", "`policy` when the spool is full: reject answers 503 with an OpenAI error (\"audit log unavailable\") without calling the upstream; the only policy, since no inference may run without its record")
	c.segmentMaxBytes = 64 << 20
	fs.Var(&c.segmentMaxBytes, "segment-max-bytes", "rotate the active spool segment at this `size` (then compress it with zstd)")
	fs.DurationVar(&c.segmentMaxAge, "segment-max-age", time.Hour, "rotate the active spool segment after this `duration`")
	fs.DurationVar(&c.retention, "retention", 0, "delete sealed segments older than this `duration` (with --forward, only once acknowledged); 0 keeps them until space is needed")
	fs.StringVar(&c.forward, "forward", "", "aggregator `address`, tcp://HOST:PORT or tls://HOST:PORT (Fluent Bit or Fluentd forward input with acks); TLS verifies against the system roots, or SSL_CERT_FILE for a private CA")
	fs.StringVar(&c.forwardTag, "forward-tag", forward.DefaultTag, "forward-protocol `tag` for events")
	fs.BoolVar(&c.forwardSkipVerify, "forward-insecure-skip-verify", false, "accept any TLS certificate from the aggregator (insecure: anyone on the path can read and drop the audit log)")
	fs.DurationVar(&c.forwardAckTimeout, "forward-ack-timeout", 10*time.Second, "resend a batch on a new connection when its ack takes longer than this `duration`")
	fs.DurationVar(&c.drainTimeout, "drain-timeout", 10*time.Second, "on SIGTERM, how long to keep shipping the spool to the aggregator before exiting (the rest ships at the next start)")
	host, _ := os.Hostname()
	fs.StringVar(&c.logName, "log-name", host, "stable instance `name` of this sidecar; its log's origin is NAME/EPOCH")
	fs.StringVar(&c.signingKey, "signing-key", "", "checkpoint signing key `file` from auditproxy keygen (default DATA-DIR/signing.key, generated if absent)")
	fs.DurationVar(&c.checkpointInterval, "checkpoint-interval", 10*time.Second, "sign a checkpoint of the log at least this often, idle or not (`duration`)")
	fs.IntVar(&c.checkpointEvery, "checkpoint-every", 1000, "sign a checkpoint after this many `events` at the latest")
	fs.StringVar(&c.checkpointDir, "checkpoint-dir", "", "`directory` (another volume) that keeps a second copy of every checkpoint, apart from the spool and the aggregator")
	fs.StringVar(&c.witnessURL, "witness-url", "", "C2SP tlog-witness `URL` to submit each checkpoint to (with a consistency proof); cosignatures are kept in DATA-DIR/cosignatures.ndjson")
	fs.StringVar(&c.checkpointURL, "checkpoint-url", "", "`URL` that receives a copy of every checkpoint event by HTTP POST (JSON), apart from the spool and the aggregator")
	fs.StringVar(&c.allowedSigners, "allowed-signers", "", "OpenSSH allowed-signers `file` (principals [options] key, as git's gpg.ssh.allowedSignersFile): who may sign change records submitted to the annotations API (auditproxy annotate submit)")
	fs.BoolVar(&c.requireSigned, "require-signed-annotations", false, "refuse unsigned annotations: only change records signed by their actor (and approver) under --allowed-signers are recorded")
	fs.StringVar(&c.approvalRequired, "approval-required", "", "comma-separated change `types` (e.g. model_rollout,gpu_tier_change) whose records must be signed by an approver other than the actor too (the two-person rule)")
	fs.DurationVar(&c.changeOutcomeWindow, "change-outcome-window", 10*time.Minute, "after each change (model_changed, gpu_changed, an annotation), record a change_outcome event comparing the requests of this `duration` before and after it: counts, error rate, latency and TTFT p50/p99; 0 disables")
	fs.BoolVar(&c.capturePayloads, "capture-payloads", false, "encrypt each request's bodies into its event, to the --payload-recipient keys (auditproxy show decrypts them)")
	fs.Var(&c.payloadRecipients, "payload-recipient", "age public `key` (age1...) the captured bodies are encrypted to; repeat for several; the sidecar holds no key that decrypts them")
	c.captureMaxBytes = 1 << 20
	fs.Var(&c.captureMaxBytes, "capture-max-bytes", "most captured of each body (`size`); longer ones are captured up to it and marked truncated")
	fs.Var(&c.modelDirs, "model-dir", "weights `directory` of the served model (DIR), or of one served name (NAME=DIR; repeat); default: each /v1/models card's root when it is a local directory")
	fs.DurationVar(&c.modelPoll, "model-poll-interval", 30*time.Second, "how often to re-read /v1/models and re-check the weights' manifests (`duration`)")
	fs.StringVar(&c.gpus, "gpus", "", "GPUs the upstream runs on, comma-separated NVML indexes or UUIDs (default: $CUDA_VISIBLE_DEVICES, then $NVIDIA_VISIBLE_DEVICES, then all)")
	fs.BoolVar(&c.requireGPU, "require-gpu", false, "refuse to start without NVML (instead of recording \"gpu\": null)")
	fs.DurationVar(&c.gpuRefresh, "gpu-refresh-interval", time.Minute, "how often to re-read the GPU identity and record a gpu_changed event when it changed (`duration`)")
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

// instance is a running proxy with its admin listener and spool (and shipper).
type instance struct {
	cfg      serveConfig
	sig      chan os.Signal // SIGINT and SIGTERM, caught from the end of start on
	log      *slog.Logger
	proxy    *proxy.Proxy
	spool    *spool.Spool
	shipper  *forward.Shipper           // nil without --forward
	cpDir    *auditlog.CheckpointDir    // nil without --checkpoint-dir
	cpPoster *auditlog.CheckpointPoster // nil without --checkpoint-url
	witness  *witness.Client            // nil without --witness-url
	lock     *fsutil.DataDirLock        // held until shutdown ends
	source   audit.Source
	gpu      *identity.GPU // its Current is nil without NVML
	models   *identity.Models
	// upstreamKey is the key of --upstream-api-key-file, for the sidecar's
	// own requests to vLLM; kept out of cfg, whose values are logged and
	// digested.
	upstreamKey string
	// changes is how the annotations API checks signed change records.
	changes change.HandlerOptions
	// outcomes follows requests around changes; nil with
	// --change-outcome-window 0.
	outcomes *change.Outcomes
	ln       net.Listener
	admin    *http.Server
	adminLn  net.Listener
	serveErr chan error
}

// settings are what checkFlags makes of the flags for the later steps.
type settings struct {
	alg        hashing.Algorithm
	durability spool.Durability
	capture    *proxy.CaptureConfig // nil without --capture-payloads
}

// start checks the configuration, opens the data dir and listeners, and
// serves in the background. tee, if not nil, also receives every event
// (demo prints them).
//
// Each step pushes what it opened onto undo; when a later step fails, undo
// releases all of it, last opened first, so that a failed start leaves
// neither a goroutine nor a listener nor the data dir's lock behind. Once
// start returns the instance, shutdown releases them instead, in the order
// what is recorded needs (see shutdown).
func start(c serveConfig, stderr io.Writer, tee func(*audit.Event)) (_ *instance, err error) {
	inst := &instance{cfg: c, serveErr: make(chan error, 2)}
	var undo closers
	defer func() {
		if err != nil {
			_ = undo.unwind() // the step's error says why start failed
		}
	}()
	// Every flag is checked, and both listeners bound, before anything is
	// created on disk or recorded: a sidecar that cannot serve must leave no
	// proxy_started event behind.
	s, err := inst.checkFlags(stderr)
	if err != nil {
		return nil, err
	}
	if err := inst.listen(&undo); err != nil {
		return nil, err
	}
	keyIDer, signer, err := inst.openDataDir(&undo)
	if err != nil {
		return nil, err
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	if err := inst.openLog(s, signer, reg, &undo); err != nil {
		return nil, err
	}
	if c.changeOutcomeWindow > 0 {
		inst.outcomes = change.StartOutcomes(change.OutcomesOptions{Window: c.changeOutcomeWindow,
			Record: inst.appendChange, Source: inst.source, Logger: inst.log})
		undo.push(func() error { inst.outcomes.Close(); return nil })
	}
	if err := inst.buildProxy(s, keyIDer, reg, tee); err != nil {
		return nil, err
	}
	if err := inst.startIdentity(reg, &undo); err != nil {
		return nil, err
	}
	// Catch the signals before /readyz can say ready: a SIGTERM right
	// after it (an orchestrator's rollout) then shuts the sidecar down
	// rather than killing it; one during the last steps waits for them.
	inst.sig = make(chan os.Signal, 1)
	signal.Notify(inst.sig, syscall.SIGINT, syscall.SIGTERM)
	undo.push(func() error { signal.Stop(inst.sig); return nil })
	if err := inst.startAdmin(reg, &undo); err != nil {
		return nil, err
	}
	inst.serve(s)
	return inst, nil
}

// checkFlags checks every flag, makes the logger, and reads the upstream
// API key; it creates nothing.
func (inst *instance) checkFlags(stderr io.Writer) (settings, error) {
	c := inst.cfg
	var s settings
	logger, err := newLogger(c.logLevel, c.logFormat, stderr)
	if err != nil {
		return s, err
	}
	inst.log = logger
	if s.alg, err = hashing.ParseAlgorithm(c.hash); err != nil {
		return s, usageError{"--hash: " + err.Error()}
	}
	if _, err := proxy.ParseUpstream(c.upstream); err != nil {
		return s, usageError{"--upstream: " + err.Error()}
	}
	if s.durability, err = spool.ParseDurability(c.durability); err != nil {
		return s, usageError{"--durability: " + err.Error()}
	}
	if c.onSpoolFull != "reject" {
		return s, usageError{fmt.Sprintf("--on-spool-full %q: the only policy is reject (an inference never runs without its record)", c.onSpoolFull)}
	}
	if c.spoolMaxBytes < 1<<20 {
		return s, usageError{fmt.Sprintf("--spool-max-bytes %s: want at least 1MiB", c.spoolMaxBytes.String())}
	}
	if c.segmentMaxBytes < 4<<10 || c.segmentMaxBytes > c.spoolMaxBytes/2 {
		return s, usageError{fmt.Sprintf("--segment-max-bytes %s: want 4KiB to half of --spool-max-bytes", c.segmentMaxBytes.String())}
	}
	// A captured exchange goes into its event: both bodies, encrypted (age
	// adds 16 bytes every 64 KiB) and base64-encoded (4/3), so 64 MiB of
	// each is about 171 MiB, within the spool's 256 MiB record with the
	// rest of the event. A larger event would be refused, and its answer
	// cut, every time.
	if c.captureMaxBytes > maxCaptureBytes {
		return s, usageError{fmt.Sprintf("--capture-max-bytes %s: want at most %s (both bodies, encrypted and encoded, must fit in one spool record of %s)",
			c.captureMaxBytes.String(), formatSize(maxCaptureBytes), formatSize(spool.MaxRecordBytes))}
	}
	switch {
	case c.capturePayloads && len(c.payloadRecipients) == 0:
		return s, usageError{"--capture-payloads needs at least one --payload-recipient age1..."}
	case !c.capturePayloads && len(c.payloadRecipients) > 0:
		return s, usageError{"--payload-recipient without --capture-payloads"}
	case c.capturePayloads:
		rcpts, err := payload.ParseRecipients(c.payloadRecipients)
		if err != nil {
			return s, usageError{err.Error()}
		}
		s.capture = &proxy.CaptureConfig{Recipients: rcpts, MaxBytes: int64(c.captureMaxBytes)}
	}
	if c.logName == "" || strings.ContainsAny(c.logName, "\n") {
		return s, usageError{fmt.Sprintf("--log-name %q: want a non-empty name on one line", c.logName)}
	}
	if err := auditlog.CheckLogName(c.logName); err != nil {
		return s, usageError{"--log-name: " + err.Error()}
	}
	if c.checkpointInterval < 10*time.Millisecond || c.checkpointEvery < 1 {
		return s, usageError{"--checkpoint-interval must be at least 10ms and --checkpoint-every at least 1"}
	}
	if c.forward != "" {
		if _, _, err := forward.ParseAddress(c.forward); err != nil {
			return s, usageError{"--forward: " + err.Error()}
		}
	} else if c.forwardSkipVerify {
		return s, usageError{"--forward-insecure-skip-verify without --forward"}
	}
	if c.adminPprof && c.adminListen == "" {
		return s, usageError{"--admin-pprof without --admin-listen"}
	}
	var captureMax int64
	if s.capture != nil {
		captureMax = s.capture.MaxBytes
	}
	if held := proxy.MinRequestBodyBudget(int(c.maxRequestBodySize), captureMax); c.requestBodyBudget != 0 && int64(c.requestBodyBudget) < held {
		return s, usageError{fmt.Sprintf("--request-body-budget %s: want at least %d bytes, what one request body may hold (8MiB, or --capture-max-bytes if larger, and a 64KiB piece; --max-request-body-size if smaller)", c.requestBodyBudget.String(), held)}
	}
	if c.maxClientConns < 0 {
		return s, usageError{fmt.Sprintf("--max-client-conns %d: want 0 (below half the descriptor limit) or more", c.maxClientConns)}
	}
	if c.upstreamAPIKeyFile != "" {
		if inst.upstreamKey, err = readUpstreamAPIKey(c.upstreamAPIKeyFile); err != nil {
			return s, err
		}
	}
	if err := inst.checkChangeFlags(); err != nil {
		return s, err
	}
	return s, nil
}

// checkChangeFlags reads --allowed-signers and the policy on change
// records.
func (inst *instance) checkChangeFlags() error {
	c := inst.cfg
	o := &inst.changes
	o.RequireSigned = c.requireSigned
	for _, t := range strings.Split(c.approvalRequired, ",") {
		if t = strings.TrimSpace(t); t != "" {
			o.Policy.ApprovalRequired = append(o.Policy.ApprovalRequired, t)
		}
	}
	switch {
	case c.allowedSigners == "" && (c.requireSigned || len(o.Policy.ApprovalRequired) > 0):
		return usageError{"--require-signed-annotations and --approval-required need --allowed-signers, the file of who may sign"}
	case c.allowedSigners != "" && c.adminListen == "":
		return usageError{"--allowed-signers without --admin-listen, where annotations are submitted"}
	case c.allowedSigners == "":
		return nil
	}
	b, err := os.ReadFile(c.allowedSigners)
	if err != nil {
		return usageError{"--allowed-signers: " + err.Error()}
	}
	if o.Allowed, err = change.ParseAllowedSigners(c.allowedSigners, b); err != nil {
		return usageError{"--allowed-signers: " + err.Error()}
	}
	return nil
}

// listen binds the client listener and the admin one.
func (inst *instance) listen(undo *closers) error {
	c := inst.cfg
	ln, err := net.Listen("tcp", c.listen)
	if err != nil {
		return fmt.Errorf("listen %s: %w", c.listen, err)
	}
	inst.ln = ln
	undo.push(ln.Close)
	if c.adminListen != "" {
		adminLn, err := net.Listen("tcp", c.adminListen)
		if err != nil {
			return fmt.Errorf("admin listen %s: %w", c.adminListen, err)
		}
		inst.adminLn = adminLn
		undo.push(adminLn.Close)
	}
	return nil
}

// openDataDir creates the data dir, takes its lock, and loads the key id
// secret and the checkpoint signing key (created on first start).
func (inst *instance) openDataDir(undo *closers) (*hashing.KeyIDer, note.Signer, error) {
	c := &inst.cfg
	if c.keyIDSecretFile == "" {
		c.keyIDSecretFile = filepath.Join(c.dataDir, "key-id.secret")
	}
	if err := os.MkdirAll(c.dataDir, 0o700); err != nil {
		return nil, nil, fmt.Errorf("create data dir: %w", err)
	}
	// One writer per data dir, for the life of the process: a second one
	// would fork the log. Released at the end of shutdown, or by the kernel.
	lock, err := fsutil.LockDataDir(c.dataDir)
	if err != nil {
		return nil, nil, err
	}
	inst.lock = lock
	undo.push(lock.Close)
	secret, err := hashing.LoadOrCreateKeyIDSecret(c.keyIDSecretFile)
	if err != nil {
		return nil, nil, err
	}
	keyIDer, err := hashing.NewKeyIDer(secret)
	if err != nil {
		return nil, nil, err
	}
	signer, err := openSigner(*c, inst.log)
	if err != nil {
		return nil, nil, err
	}
	return keyIDer, signer, nil
}

// openLog opens the spool and the log it commits into, with the log's
// consumers (the checkpoint copies and the witness) and the shipper that
// forwards it (started by serve); their metrics go to reg.
func (inst *instance) openLog(s settings, signer note.Signer, reg prometheus.Registerer, undo *closers) error {
	c, logger := inst.cfg, inst.log
	host, _ := os.Hostname()
	inst.source = audit.Source{Host: host, Version: buildVersion()}
	logOpts := &auditlog.Options{Name: c.logName, Signer: signer, CheckpointInterval: c.checkpointInterval,
		CheckpointEvery: c.checkpointEvery, Source: inst.source, Witness: c.witnessURL != ""}
	if c.checkpointURL != "" {
		poster, err := auditlog.NewCheckpointPoster(c.checkpointURL, logger)
		if err != nil {
			return usageError{"--checkpoint-url: " + err.Error()}
		}
		inst.cpPoster = poster
		undo.push(func() error { return poster.Close(0) })
	}
	if c.checkpointDir != "" {
		dir, previous, err := auditlog.OpenCheckpointDir(c.checkpointDir, logger)
		if err != nil {
			return err
		}
		inst.cpDir, logOpts.PreviousCheckpoint = dir, previous
		undo.push(dir.Close)
	}
	// The witness client is made before the spool, so that the log's first
	// checkpoints reach it, and started once the log is open.
	if c.witnessURL != "" {
		wc, err := witness.New(witness.Options{URL: c.witnessURL,
			StateFile: filepath.Join(c.dataDir, "witness.json"), CosignatureFile: filepath.Join(c.dataDir, eventsrc.CosignaturesFile),
			Logger: logger})
		if err != nil {
			return usageError{"--witness-url: " + err.Error()}
		}
		inst.witness = wc
		undo.push(func() error { return wc.Close(0) })
	}
	cpDir, cpPoster, wc := inst.cpDir, inst.cpPoster, inst.witness
	logOpts.OnCheckpoint = func(cp auditlog.SignedCheckpoint) {
		if cpDir != nil {
			cpDir.Write(cp)
		}
		if cpPoster != nil {
			cpPoster.Write(cp)
		}
		if wc != nil {
			wc.Submit(cp)
		}
	}
	minFree := int64(c.spoolMinFree)
	if minFree == 0 {
		minFree = -1 // SpoolOptions: negative disables, 0 is the default
	}
	// Pushed after its consumers, the spool is closed before them: its
	// last checkpoint still reaches them.
	sp, err := spool.Open(c.dataDir, spool.Options{
		MinFreeBytes:    minFree,
		Durability:      s.durability,
		FsyncInterval:   c.fsyncInterval,
		MaxBytes:        int64(c.spoolMaxBytes),
		SegmentMaxBytes: int64(c.segmentMaxBytes),
		SegmentMaxAge:   c.segmentMaxAge,
		Retention:       c.retention,
		Forwarding:      c.forward != "",
		Log:             logOpts,
		Logger:          logger,
	})
	if err != nil {
		return err
	}
	inst.spool = sp
	undo.push(sp.Close)
	if err := sp.Register(reg); err != nil {
		return err
	}
	if wc != nil {
		wc.Start(sp.Log())
		if err := wc.Register(reg); err != nil {
			return err
		}
	}
	if c.forward != "" {
		// Not pushed: it runs nothing until serve starts it, and nothing
		// fails after that.
		sh, err := forward.New(sp, forward.Options{
			Address:            c.forward,
			Tag:                c.forwardTag,
			InsecureSkipVerify: c.forwardSkipVerify,
			AckTimeout:         c.forwardAckTimeout,
			Logger:             logger,
		})
		if err != nil {
			return err
		}
		inst.shipper = sh
		if err := sh.Register(reg); err != nil {
			return err
		}
	}
	return nil
}

// buildProxy makes the proxy (its metrics in reg), recording into the
// spool and, with tee, showing each event to tee too.
func (inst *instance) buildProxy(s settings, keyIDer *hashing.KeyIDer, reg prometheus.Registerer, tee func(*audit.Event)) error {
	c := inst.cfg
	metrics := proxy.NewMetrics()
	if err := metrics.Register(reg); err != nil {
		return err
	}
	var rec audit.Recorder = inst.spool
	switch {
	case inst.outcomes != nil && tee != nil:
		rec = teeRecorder{spool: inst.spool, tee: func(ev *audit.Event) { inst.outcomes.Observe(ev); tee(ev) }}
	case inst.outcomes != nil:
		rec = teeRecorder{spool: inst.spool, tee: inst.outcomes.Observe}
	case tee != nil:
		rec = teeRecorder{spool: inst.spool, tee: tee}
	}
	var err error
	inst.proxy, err = proxy.New(proxy.Config{
		Upstream:            c.upstream,
		MaxRequestBodySize:  int(c.maxRequestBodySize),
		RequestBodyBudget:   int64(c.requestBodyBudget),
		UpstreamIdleTimeout: c.upstreamIdleTimeout,
		ClientIdleTimeout:   c.clientIdleTimeout,
		UpstreamMaxConns:    c.upstreamMaxConns,
		UpstreamForcesUsage: c.upstreamForcesUsage,
		MaxClientConns:      c.maxClientConns,
		Hash:                s.alg,
		KeyIDer:             keyIDer,
		Recorder:            rec,
		Capture:             s.capture,
		GPU:                 inst.gpuDigest,
		ModelChecksums:      inst.modelChecksums,
		ModelsChanged:       inst.modelsChanged,
		AwaitModel:          inst.awaitModel,
		UpstreamAPIKey:      inst.upstreamKey,
		Metrics:             metrics,
		Logger:              inst.log,
		Source:              inst.source,
	})
	return err
}

// startAdmin serves /metrics (reg), /healthz, /readyz, the annotations
// and, with --admin-pprof, the profiler on the admin listener.
func (inst *instance) startAdmin(reg prometheus.Gatherer, undo *closers) error {
	if inst.adminLn == nil {
		return nil
	}
	token, err := identity.LoadOrCreateToken(filepath.Join(inst.cfg.dataDir, "admin.token"))
	if err != nil {
		return err
	}
	adminOpts := proxy.AdminOptions{Degraded: inst.degraded}
	if inst.cfg.adminPprof {
		adminOpts.ProfilingToken = token
	}
	mux := http.NewServeMux()
	mux.Handle("/", inst.proxy.AdminHandler(reg, adminOpts))
	changes := inst.changes
	changes.Token, changes.Record, changes.Source = token, inst.appendChange, inst.source
	mux.Handle(change.AnnotationPath, change.Handler(changes))
	inst.admin = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	undo.push(inst.admin.Close)
	go func() {
		if err := inst.admin.Serve(inst.adminLn); err != nil && !errors.Is(err, http.ErrServerClosed) {
			inst.serveErr <- fmt.Errorf("admin server: %w", err)
		}
	}()
	return nil
}

// serve starts the shipper and the proxy, and catches the signals. It is
// the last step, and cannot fail: nothing it starts is pushed on undo.
func (inst *instance) serve(s settings) {
	c, logger, sp := inst.cfg, inst.log, inst.spool
	if rep := sp.Recovery; rep.RecordsCut > 0 || rep.CommittedLost || len(rep.Lost) > 0 {
		logger.Warn("spool recovered after a crash", "records_cut", rep.RecordsCut, "bytes_cut", rep.BytesCut,
			"committed_data_lost", rep.CommittedLost || len(rep.Lost) > 0, "damaged_ranges", len(rep.Lost))
	}
	if inst.shipper != nil {
		inst.shipper.Start()
	} else {
		logger.Warn("no --forward: audit events stay only in the spool on this machine; ship them to an aggregator so that this server is not the only place they live",
			"spool", sp.Dir())
	}
	go func() { inst.serveErr <- inst.proxy.Serve(inst.ln) }()
	logger.Info("auditproxy serving", "version", buildVersion(), "listen", inst.ln.Addr().String(),
		"admin", c.adminListen, "upstream", c.upstream, "data_dir", c.dataDir, "hash", string(s.alg),
		"durability", string(s.durability), "fsync_interval", c.fsyncInterval.String(),
		"spool_max_bytes", int64(c.spoolMaxBytes), "forward", c.forward, "resumed_at", sp.Recovery.Resumed.String(),
		"acked", sp.Recovery.Acked.String(), "descriptor_limit", proxy.DescriptorLimit(),
		"max_client_conns", inst.proxy.MaxClientConns(), "admin_pprof", c.adminPprof, "upstream_api_key", inst.upstreamKey != "")
}

// waitForSignal serves until SIGINT or SIGTERM, then shuts down.
func (inst *instance) waitForSignal() error {
	defer signal.Stop(inst.sig)
	select {
	case s := <-inst.sig:
		inst.log.Info("shutting down", "signal", s.String())
	case err := <-inst.serveErr:
		inst.shutdown()
		return err
	}
	return inst.shutdown()
}

// maxCaptureBytes bounds --capture-max-bytes (see start).
const maxCaptureBytes = 64 << 20

// shutdown stops accepting, lets in-flight requests finish for up to the
// shutdown timeout, commits and closes the spool, and ships what it can for
// up to the drain timeout.
func (inst *instance) shutdown() error {
	done := make(chan error, 1)
	go func() { done <- inst.proxy.Shutdown() }()
	var err error
	reason := "signal"
	select {
	case err = <-done:
	case <-time.After(inst.cfg.shutdownTimeout):
		err = fmt.Errorf("in-flight requests still running after %s", inst.cfg.shutdownTimeout)
		reason = "signal; shutdown timeout passed with requests in flight"
	}
	inst.gpu.Close()
	if inst.models != nil {
		inst.models.Close()
	}
	if inst.outcomes != nil {
		inst.outcomes.Close() // the changes still in their window, cut short
	}
	inst.recordOps(audit.TypeProxyStopped, map[string]any{"reason": reason, "events_recorded": inst.spool.Recorded()})
	if inst.admin != nil {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_ = inst.admin.Shutdown(ctx)
		cancel()
	}
	if cerr := inst.spool.Close(); err == nil {
		err = cerr
	}
	if inst.cpDir != nil {
		if cerr := inst.cpDir.Close(); err == nil {
			err = cerr
		}
	}
	if inst.cpPoster != nil {
		if cerr := inst.cpPoster.Close(5 * time.Second); cerr != nil {
			inst.log.Warn("checkpoint copies not posted", "err", cerr)
		}
	}
	if inst.witness != nil {
		if cerr := inst.witness.Close(5 * time.Second); cerr != nil {
			inst.log.Warn("checkpoints not cosigned by the witness", "err", cerr)
		}
	}
	drained := true
	if inst.shipper != nil {
		drained = inst.shipper.Drain(inst.cfg.drainTimeout)
		if !drained {
			inst.log.Warn("aggregator did not acknowledge every event within the drain timeout; the rest ships at the next start",
				"drain_timeout", inst.cfg.drainTimeout.String(), "acked", inst.spool.Acked().String())
		}
	}
	committed, _ := inst.spool.Committed()
	inst.log.Info("stopped", "events_recorded", inst.spool.Recorded(), "committed", committed.String(),
		"acked", inst.spool.Acked().String(), "all_shipped", inst.shipper != nil && drained)
	inst.lock.Close()
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

// recipientsOf lists the age recipients captured bodies are encrypted to
// (public keys): an auditor finds in proxy_started which identity decrypts
// a run's captures. Empty without capture.
func recipientsOf(c serveConfig) []string {
	if !c.capturePayloads {
		return []string{}
	}
	out := make([]string, 0, len(c.payloadRecipients))
	for _, r := range c.payloadRecipients {
		out = append(out, strings.TrimSpace(r))
	}
	return out
}

// appendChange records an event of the identity pollers or the annotations
// API, and shows it to the change outcomes: some are changes.
func (inst *instance) appendChange(ev []byte) error {
	err := inst.spool.Append(ev)
	if err == nil && inst.outcomes != nil {
		inst.outcomes.Noticed(ev)
	}
	return err
}

// teeRecorder records to the spool, then shows the event to tee.
type teeRecorder struct {
	spool *spool.Spool
	tee   func(*audit.Event)
}

func (t teeRecorder) Admit() error { return t.spool.Admit() }

func (t teeRecorder) Record(ev *audit.Event) error {
	err := t.spool.Record(ev)
	if err == nil {
		t.tee(ev)
	}
	return err
}

// openSigner loads the checkpoint signing key, generating it in the data dir
// on first start when no --signing-key is given.
func openSigner(c serveConfig, logger *slog.Logger) (note.Signer, error) {
	path := c.signingKey
	if path == "" {
		path = filepath.Join(c.dataDir, "signing.key")
		if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
			vkey, err := writeSigningKey(path, keyNameFor(c.logName))
			if err != nil {
				return nil, err
			}
			logger.Warn("generated a checkpoint signing key; give its verifier key to auditors (auditproxy verify --pubkey), and keep the private key only here",
				"key", path, "verifier_key", vkey)
		}
	}
	s, err := loadSigner(path)
	if err == nil {
		if w := keyNameWarning(s.Name(), c.logName); w != "" {
			logger.Warn(w)
		}
	}
	return s, err
}

// startIdentity starts reading the GPU identity and the served models (the
// poller's metrics in reg), and records proxy_started: what the events
// that follow were produced by.
func (inst *instance) startIdentity(reg prometheus.Registerer, undo *closers) error {
	c := inst.cfg
	var visible []string
	if c.gpus != "" {
		visible = strings.Split(c.gpus, ",")
	}
	g, err := identity.OpenGPU(identity.GPUOptions{Visible: visible, Require: c.requireGPU, Interval: c.gpuRefresh,
		Record: inst.spool.Append, Source: inst.source, Logger: inst.log})
	if err != nil {
		return fmt.Errorf("--require-gpu: %w", err)
	}
	inst.gpu = g
	undo.push(g.Close)
	// proxy_started opens the run's events, before the identity's own.
	inst.recordOps(audit.TypeProxyStarted, map[string]any{"version": buildVersion(), "config_digest": c.digest(),
		"gpu": inst.gpu.Current(), "upstream": c.upstream, "listen": c.listen, "hash": c.hash, "durability": c.durability,
		"forward": c.forward, "capture_payloads": c.capturePayloads, "payload_recipients": recipientsOf(c)})
	g.Start()
	dirs := map[string]string{}
	for _, spec := range c.modelDirs {
		name, dir, named := strings.Cut(spec, "=")
		if !named {
			name, dir = "", spec
		}
		dirs[name] = dir
	}
	models := identity.StartModels(identity.ModelsOptions{Upstream: c.upstream, Dirs: dirs,
		CacheFile: filepath.Join(c.dataDir, "manifest-cache.json"), Interval: c.modelPoll,
		Record: inst.appendChange, Source: inst.source, Logger: inst.log,
		APIKey: inst.upstreamKey, UnauthorizedHint: unauthorizedHint(c.upstreamAPIKeyFile)})
	inst.models = models
	undo.push(func() error { models.Close(); return nil })
	return models.Register(reg)
}

// gpuDigest is the digest of the current GPU identity, for events; nil
// without NVML.
func (inst *instance) gpuDigest() *string { return inst.gpu.Current() }

// recordOps records an operational event in the spool, logging a failure.
func (inst *instance) recordOps(typ string, details any) {
	ev, err := audit.NewOpsEvent(typ, details, inst.source, time.Now())
	if err == nil {
		err = inst.spool.Append(ev)
	}
	if err != nil {
		inst.log.Error("cannot record an operational event", "type", typ, "err", err)
	}
}

// digest returns "sha256:<hex>" of the configuration: every flag's value.
// The flags hold no secret (keys are given as files and public keys).
func (c serveConfig) digest() string {
	b, _ := json.Marshal(fmt.Sprintf("%+v", c))
	sum := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(sum[:])
}

// degraded says, for /readyz, what the events lack now.
func (inst *instance) degraded() []string {
	if inst.models == nil {
		return nil
	}
	if p := inst.models.Status().Problem(); p != "" {
		return []string{p}
	}
	return nil
}

// modelsChanged has the served models read again (a LoRA load or unload
// vLLM accepted), within ctx.
func (inst *instance) modelsChanged(ctx context.Context) {
	if inst.models != nil {
		inst.models.Refresh(ctx)
	}
}

// awaitModel returns the checksums of a name vLLM has just served, reading
// the served models again if no poll listed it (see identity.Models.Await).
func (inst *instance) awaitModel(name string, wait time.Duration) (string, string) {
	if inst.models == nil {
		return "", ""
	}
	if inst.models.Listed(name) { // nothing to wait for: no timer made
		ids := inst.models.Lookup(name)
		return ids.Checksum, ids.BaseChecksum
	}
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	ids := inst.models.Await(ctx, name)
	return ids.Checksum, ids.BaseChecksum
}

func (inst *instance) modelChecksums(name string) (string, string) {
	if inst.models == nil {
		return "", ""
	}
	ids := inst.models.Lookup(name)
	return ids.Checksum, ids.BaseChecksum
}
