// Package fakevllm is a simulated vLLM OpenAI-compatible server. It owns the
// wire format auditproxy sits in front of: the exact JSON and SSE bytes vLLM
// writes for chat completions, completions, the Responses API, the Anthropic
// Messages API, embeddings, /v1/models, /version, /health and /metrics, its
// error bodies, the API key check of --api-key (auth.go), and a set of
// per-request test hooks (mid-stream errors, silent upstreams, stalled
// streams, send timestamps) chosen by request headers so that tests can
// drive the upstream through a proxy that forwards headers unchanged.
//
// No model runs: output tokens come from a fixed word list and token counts
// are deterministic (prompt tokens are whitespace-separated words), so a test
// can predict every byte except ids and timestamps. The server is built for
// load tests (tens of thousands of requests per second on two cores): JSON is
// appended by hand, requests are parsed with fastjson, and the only goroutine
// per request is the stream writer fasthttp starts for SSE responses.
package fakevllm

import (
	"context"
	"crypto/sha256"
	"errors"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/valyala/fasthttp"
)

// Request headers that select per-request behaviour. The proxy under test
// forwards them unchanged, so a test reaches the upstream through it.
const (
	// HeaderMidstreamError: after N content chunks, send vLLM's mid-stream
	// error event and data: [DONE] (the HTTP status stays 200). A Messages
	// stream gets its error event instead, and a Responses stream is dropped
	// without the chunked body's end, as vLLM does (responses.go, messages.go).
	HeaderMidstreamError = "X-Fake-Midstream-Error"
	// HeaderErrorFormat picks the mid-stream error body: "" (the current
	// nested {"error":{…}} form), "flat" (older releases' {"object":"error",…})
	// or "spaced" (nested, with the ", " and ": " separators Python's
	// json.dumps writes, as vLLM's create_streaming_error_response does).
	HeaderErrorFormat = "X-Fake-Error-Format"
	// HeaderDelayMs: sleep N ms before sending response headers. Together
	// with HeaderStallAfter it sets the stall length instead.
	HeaderDelayMs = "X-Fake-Delay-Ms"
	// HeaderStallAfter: in a stream, after N content chunks send nothing for
	// HeaderDelayMs (default 30 s), then close the connection without
	// finishing the chunked body.
	HeaderStallAfter = "X-Fake-Stall-After"
	// HeaderBenchTimestamps: "1" puts the send time in unix nanoseconds into
	// every chunk's id ("chatcmpl-bench-<ns>", "cmpl-bench-<ns>").
	HeaderBenchTimestamps = "X-Fake-Bench-Timestamps"
	// HeaderTTFT and HeaderITL override Config.TTFT and
	// Config.InterTokenLatency for one request (Go duration syntax, "5ms"),
	// so one fake process can serve workloads with different pacing.
	HeaderTTFT = "X-Fake-TTFT"
	HeaderITL  = "X-Fake-ITL"
)

// Bench id prefixes: with HeaderBenchTimestamps the id is the prefix followed
// by the decimal unix-nanosecond send time.
const (
	BenchChatIDPrefix       = "chatcmpl-bench-"
	BenchCompletionIDPrefix = "cmpl-bench-"
)

// EmbeddingDim is the length of every embedding vector the fake returns.
const EmbeddingDim = 16

// defaultStall is how long a stalled stream stays silent when the request
// names no HeaderDelayMs: long enough to outlast any proxy idle timeout a
// test would configure.
const defaultStall = 30 * time.Second

// Config describes the served model and its pacing. The zero value is usable.
type Config struct {
	Model             string        // served model name; default "meta-llama/Llama-3.1-8B-Instruct"
	Root              string        // /v1/models "root" (weights path); default "/models/" + Model
	MaxModelLen       int           // context length; default 8192
	TTFT              time.Duration // delay before the first token (also before a non-streamed answer)
	InterTokenLatency time.Duration // delay between tokens
	OutputTokens      int           // tokens generated without max_tokens (default 16); max_tokens caps it
	Version           string        // /version answer; default "0.11.0"

	// RequireModel rejects requests without "model" with 400. vLLM itself
	// serves its (only) model when the field is absent, which is the default
	// here too.
	RequireModel bool

	// ForceIncludeUsage reproduces vLLM's --enable-force-include-usage:
	// usage is sent in streams that did not ask for it (forceusage.go).
	ForceIncludeUsage ForceUsage
	// AllowRuntimeLoRA reproduces VLLM_ALLOW_RUNTIME_LORA_UPDATING: the
	// /v1/load_lora_adapter and /v1/unload_lora_adapter routes exist
	// (lora.go).
	AllowRuntimeLoRA bool
	// LoRAResolverDir reproduces VLLM_LORA_RESOLVER_CACHE_DIR: with
	// AllowRuntimeLoRA, a request naming an unknown model loads the adapter
	// in the subdirectory of that name on first use (lora.go).
	LoRAResolverDir string
	// MaxAudioFileMB is VLLM_MAX_AUDIO_CLIP_FILESIZE_MB, the largest audio
	// upload transcriptions and translations take; default 25 (audio.go).
	MaxAudioFileMB float64
	// MaxRequestBodySize is the largest request body the server reads;
	// default 64 MiB. vLLM (uvicorn) sets no limit; the fake needs one
	// because fasthttp holds a request body in memory.
	MaxRequestBodySize int
	// APIKeys, when it holds a non-empty key, makes the fake check
	// "Authorization: Bearer KEY" as vLLM started with --api-key KEY...
	// does (auth.go): /v1 and the other guarded paths answer 401
	// {"error":"Unauthorized"} without one of the keys; /health, /version
	// and /metrics stay open.
	APIKeys []string
}

// Stats counts what the server did; all fields are totals since New.
type Stats struct {
	Requests         int64 // every request, any path
	StreamsStarted   int64 // SSE responses begun
	StreamsCompleted int64 // SSE responses that ended as their API ends them (mid-stream error events included)
	// StreamsAborted counts streams whose write to the peer failed because
	// the peer closed the connection; tests use it to prove that a proxy
	// closed its upstream connection when its client went away.
	StreamsAborted   int64
	Unauthorized     int64 // requests refused 401 for want of a valid API key (Config.APIKeys)
	PromptTokens     int64 // prompt tokens of requests answered
	CompletionTokens int64 // tokens actually sent (streams cut short count what was sent)
}

// Server is a fake vLLM OpenAI server. Create it with New.
type Server struct {
	cfg       Config
	modelJSON []byte              // cfg.Model as a JSON string literal, quotes included
	keyHashes [][sha256.Size]byte // SHA-256 of each API key; none: no authentication
	srv       *fasthttp.Server

	done      chan struct{} // closed by Close: ends sleeps, stalls and streams
	closeOnce sync.Once
	mu        sync.Mutex
	lns       []net.Listener
	closed    bool

	requests         atomic.Int64
	streamsStarted   atomic.Int64
	streamsCompleted atomic.Int64
	streamsAborted   atomic.Int64
	unauthorized     atomic.Int64
	promptTokens     atomic.Int64
	completionTokens atomic.Int64
	e2eCount         atomic.Int64
	e2eSumNs         atomic.Int64

	lora loraState // runtime LoRA adapters (lora.go)
}

// New returns a server for cfg with defaults filled in.
func New(cfg Config) *Server {
	if cfg.Model == "" {
		cfg.Model = "meta-llama/Llama-3.1-8B-Instruct"
	}
	if cfg.Root == "" {
		cfg.Root = "/models/" + cfg.Model
	}
	if cfg.MaxModelLen <= 0 {
		cfg.MaxModelLen = 8192
	}
	if cfg.OutputTokens <= 0 {
		cfg.OutputTokens = 16
	}
	if cfg.Version == "" {
		cfg.Version = "0.11.0"
	}
	if cfg.MaxAudioFileMB <= 0 {
		cfg.MaxAudioFileMB = defaultMaxAudioFileMB
	}
	if cfg.MaxRequestBodySize <= 0 {
		cfg.MaxRequestBodySize = 64 << 20
	}
	cfg.TTFT = max(cfg.TTFT, 0)
	cfg.InterTokenLatency = max(cfg.InterTokenLatency, 0)
	s := &Server{
		cfg:       cfg,
		modelJSON: appendJSONString(nil, cfg.Model),
		keyHashes: apiKeyHashes(cfg.APIKeys),
		done:      make(chan struct{}),
	}
	s.srv = &fasthttp.Server{
		Handler: s.Handler,
		// uvicorn, which serves vLLM, answers "server: uvicorn".
		Name: "uvicorn",
		// vLLM takes large prompts; fasthttp's 4 MiB default would turn a
		// big request into a connection reset instead of an answer.
		MaxRequestBodySize: cfg.MaxRequestBodySize,
		CloseOnShutdown:    true,
		Logger:             quietLogger{},
	}
	return s
}

// Config returns the configuration in effect, defaults included.
func (s *Server) Config() Config { return s.cfg }

// Serve answers connections from ln until Close; it returns nil after Close.
func (s *Server) Serve(ln net.Listener) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		ln.Close()
		return errors.New("fakevllm: Serve called after Close")
	}
	s.lns = append(s.lns, ln)
	s.mu.Unlock()
	err := s.srv.Serve(ln)
	if s.isClosed() {
		return nil
	}
	return err
}

// Start listens on addr ("127.0.0.1:0" picks a free port), serves in the
// background and returns the base URL, e.g. "http://127.0.0.1:41234".
func (s *Server) Start(addr string) (string, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return "", err
	}
	go s.Serve(ln) //nolint:errcheck // Serve only fails on listener errors, which Close causes
	return "http://" + ln.Addr().String(), nil
}

// Close stops listening, ends sleeping handlers, stalled and running streams
// at their next step, and waits (up to 5 s) for connections to finish.
func (s *Server) Close() error {
	var err error
	s.closeOnce.Do(func() {
		s.mu.Lock()
		s.closed = true
		lns := s.lns
		s.mu.Unlock()
		close(s.done)
		for _, ln := range lns {
			ln.Close()
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if e := s.srv.ShutdownWithContext(ctx); e != nil && !errors.Is(e, net.ErrClosed) {
			err = e
		}
	})
	return err
}

func (s *Server) isClosed() bool {
	select {
	case <-s.done:
		return true
	default:
		return false
	}
}

// Stats returns a snapshot of the counters.
func (s *Server) Stats() Stats {
	return Stats{
		Requests:         s.requests.Load(),
		StreamsStarted:   s.streamsStarted.Load(),
		StreamsCompleted: s.streamsCompleted.Load(),
		StreamsAborted:   s.streamsAborted.Load(),
		Unauthorized:     s.unauthorized.Load(),
		PromptTokens:     s.promptTokens.Load(),
		CompletionTokens: s.completionTokens.Load(),
	}
}

// sleep waits d, or less if the server is closed; it reports whether the
// full delay passed.
func (s *Server) sleep(d time.Duration) bool {
	if d <= 0 {
		return !s.isClosed()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-s.done:
		return false
	}
}

// Handler is the fasthttp request handler; use it directly to serve the fake
// from your own fasthttp.Server or an in-memory listener.
func (s *Server) Handler(ctx *fasthttp.RequestCtx) {
	s.requests.Add(1)
	if !s.authorize(ctx) {
		return
	}
	h, err := parseHooks(&ctx.Request.Header)
	if err != nil {
		s.writeError(ctx, fasthttp.StatusBadRequest, "BadRequestError", err.Error())
		return
	}
	if h.delay > 0 && h.stallAfter < 0 && !s.sleep(h.delay) {
		ctx.SetConnectionClose()
		s.writeError(ctx, fasthttp.StatusServiceUnavailable, "ServiceUnavailableError", "server is shutting down")
		return
	}
	switch string(ctx.Path()) {
	case "/v1/chat/completions":
		if s.allow(ctx, fasthttp.MethodPost) {
			s.generate(ctx, kindChat, &h)
		}
	case "/v1/completions":
		if s.allow(ctx, fasthttp.MethodPost) {
			s.generate(ctx, kindCompletion, &h)
		}
	case "/v1/responses":
		if s.allow(ctx, fasthttp.MethodPost) {
			s.responses(ctx, &h)
		}
	case "/v1/messages":
		if s.allow(ctx, fasthttp.MethodPost) {
			s.messages(ctx, &h)
		}
	case "/v1/embeddings":
		if s.allow(ctx, fasthttp.MethodPost) {
			s.embeddings(ctx)
		}
	case "/rerank", "/v1/rerank", "/v2/rerank":
		if s.allow(ctx, fasthttp.MethodPost) {
			s.rerank(ctx)
		}
	case "/score", "/v1/score":
		if s.allow(ctx, fasthttp.MethodPost) {
			s.score(ctx)
		}
	case "/v1/audio/transcriptions":
		if s.allow(ctx, fasthttp.MethodPost) {
			s.audio(ctx, taskTranscribe, &h)
		}
	case "/v1/audio/translations":
		if s.allow(ctx, fasthttp.MethodPost) {
			s.audio(ctx, taskTranslate, &h)
		}
	case "/v1/load_lora_adapter":
		if s.loraRoute(ctx) {
			s.loadLoRA(ctx)
		}
	case "/v1/unload_lora_adapter":
		if s.loraRoute(ctx) {
			s.unloadLoRA(ctx)
		}
	case "/invocations":
		if s.allow(ctx, fasthttp.MethodPost) {
			s.invocations(ctx, &h)
		}
	case "/v1/models":
		if s.allow(ctx, fasthttp.MethodGet) {
			s.models(ctx)
		}
	case "/version":
		if s.allow(ctx, fasthttp.MethodGet) {
			ctx.SetContentType("application/json")
			b := ctx.Response.SwapBody(nil)[:0]
			b = append(b, `{"version":`...)
			b = appendJSONString(b, s.cfg.Version)
			ctx.Response.SwapBody(append(b, '}'))
		}
	case "/health":
		// vLLM answers 200 with an empty body.
		if s.allow(ctx, fasthttp.MethodGet) {
			ctx.SetStatusCode(fasthttp.StatusOK)
		}
	case "/metrics":
		if s.allow(ctx, fasthttp.MethodGet) {
			s.metrics(ctx)
		}
	default:
		writeDetail(ctx, fasthttp.StatusNotFound, "Not Found")
	}
}

// allow answers FastAPI's 405 for a method the route does not take. Like
// Starlette, a GET route also answers HEAD.
func (s *Server) allow(ctx *fasthttp.RequestCtx, method string) bool {
	m := ctx.Method()
	if string(m) == method || (method == fasthttp.MethodGet && string(m) == fasthttp.MethodHead) {
		return true
	}
	ctx.Response.Header.Set("Allow", method)
	writeDetail(ctx, fasthttp.StatusMethodNotAllowed, "Method Not Allowed")
	return false
}

// writeDetail writes FastAPI's own error body, used for routing errors.
func writeDetail(ctx *fasthttp.RequestCtx, status int, detail string) {
	ctx.SetStatusCode(status)
	ctx.SetContentType("application/json")
	b := ctx.Response.SwapBody(nil)[:0]
	b = append(b, `{"detail":`...)
	b = appendJSONString(b, detail)
	ctx.Response.SwapBody(append(b, '}'))
}

// writeError writes vLLM's ErrorResponse body.
func (s *Server) writeError(ctx *fasthttp.RequestCtx, status int, typ, msg string) {
	ctx.SetStatusCode(status)
	ctx.SetContentType("application/json")
	b := ctx.Response.SwapBody(nil)[:0]
	b = append(b, `{"error":{"message":`...)
	b = appendJSONString(b, msg)
	b = append(b, `,"type":`...)
	b = appendJSONString(b, typ)
	b = append(b, `,"param":null,"code":`...)
	b = strconv.AppendInt(b, int64(status), 10)
	ctx.Response.SwapBody(append(b, "}}"...))
}

func (s *Server) models(ctx *fasthttp.RequestCtx) {
	now := time.Now().Unix()
	ctx.SetContentType("application/json")
	b := ctx.Response.SwapBody(nil)[:0]
	b = append(b, `{"object":"list","data":[{"id":`...)
	b = append(b, s.modelJSON...)
	b = append(b, `,"object":"model","created":`...)
	b = strconv.AppendInt(b, now, 10)
	b = append(b, `,"owned_by":"vllm","root":`...)
	b = appendJSONString(b, s.cfg.Root)
	b = append(b, `,"parent":null,"max_model_len":`...)
	b = strconv.AppendInt(b, int64(s.cfg.MaxModelLen), 10)
	b = append(b, `,"permission":[{"id":"modelperm-`...)
	b = appendHexID(b)
	b = append(b, `","object":"model_permission","created":`...)
	b = strconv.AppendInt(b, now, 10)
	b = append(b, `,"allow_create_engine":false,"allow_sampling":true,"allow_logprobs":true,`+
		`"allow_search_indices":false,"allow_view":true,"allow_fine_tuning":false,`+
		`"organization":"*","group":null,"is_blocking":false}]}`...)
	b = s.appendAdapterCards(b, now)
	ctx.Response.SwapBody(append(b, "]}"...))
}

// metrics writes a small Prometheus exposition with vLLM's metric names; the
// counters are real, the latency histograms are reduced to _sum and _count.
func (s *Server) metrics(ctx *fasthttp.RequestCtx) {
	ctx.SetContentType("text/plain; version=0.0.4; charset=utf-8")
	label := `{model_name=` + string(s.modelJSON) + `}`
	b := ctx.Response.SwapBody(nil)[:0]
	counter := func(name, help string, v int64) {
		b = append(b, "# HELP "+name+" "+help+"\n# TYPE "+name+" counter\n"+name+label+" "...)
		b = strconv.AppendInt(b, v, 10)
		b = append(b, '\n')
	}
	counter("vllm:prompt_tokens_total", "Number of prefill tokens processed.", s.promptTokens.Load())
	counter("vllm:generation_tokens_total", "Number of generation tokens processed.", s.completionTokens.Load())
	n, sum := s.e2eCount.Load(), time.Duration(s.e2eSumNs.Load()).Seconds()
	for _, name := range []string{"vllm:e2e_request_latency_seconds", "vllm:time_to_first_token_seconds", "vllm:inter_token_latency_seconds"} {
		b = append(b, "# HELP "+name+" Histogram of latency in seconds.\n# TYPE "+name+" histogram\n"...)
		b = append(b, name+`_bucket{le="+Inf",model_name=`+string(s.modelJSON)+`} `...)
		b = strconv.AppendInt(b, n, 10)
		b = append(b, "\n"+name+"_count"+label+" "...)
		b = strconv.AppendInt(b, n, 10)
		b = append(b, "\n"+name+"_sum"+label+" "...)
		if name == "vllm:e2e_request_latency_seconds" {
			b = strconv.AppendFloat(b, sum, 'g', -1, 64)
		} else {
			b = append(b, '0')
		}
		b = append(b, '\n')
	}
	ctx.Response.SwapBody(b)
}

func (s *Server) recordE2E(start time.Time) {
	s.e2eCount.Add(1)
	s.e2eSumNs.Add(int64(time.Since(start)))
}

// quietLogger drops fasthttp's per-connection error logs: peers that hang up
// mid-stream are the point of several tests, not news.
type quietLogger struct{}

func (quietLogger) Printf(string, ...any) {}
