// Package proxy is the audited reverse proxy: it serves OpenAI-compatible
// clients, forwards every request to one upstream (a vLLM server) and its
// answer back unchanged, and taps both bodies on the way through to build the
// request's audit event, which it hands to an audit.Recorder.
//
// The proxy owns the hot path and nothing after it: where events are stored
// or shipped is the Recorder's business.
//
// # What passes through
//
// Method, path, query, headers and status pass unchanged, except the
// hop-by-hop headers of RFC 9110 section 7.6.1 and X-Request-Id, which the
// proxy validates or assigns and returns to the client. Response bodies are
// streamed: a Server-Sent Events stream reaches the client event by event as
// the upstream sends it, and nothing waits for a whole body.
//
// The end of every answer (a stream's "data: [DONE]", the last bytes of a
// body of known length) is held back until the Recorder has taken the
// answer's event, so a client never holds a complete answer without its
// event.
//
// One change is made to a request, and undone in its response: a streamed
// completion that did not ask for usage gets stream_options.include_usage, so
// that the audit record can carry vLLM's token counts, and the usage-only
// chunk that this adds is removed from the stream the client receives. The
// client gets the bytes it would have got from vLLM directly.
//
// # Timeouts
//
// fasthttp's ReadTimeout and WriteTimeout are deadlines for a whole response
// and would cut long generations, so the proxy sets them for neither side of
// a stream. Instead each connection has an idle timeout: a read from the
// upstream, or a write to the client, that makes no progress for that long
// fails.
//
// # Request bodies
//
// A request body is read whole before it is sent, within a memory budget
// (body.go), up to 8 MiB; a longer one, of any length (vLLM sets no limit),
// is streamed to the upstream as it arrives, hashed and read for its fields
// on the way (bigbody.go, bodyfields.go).
//
// The handler (handler.go), the upstream connection (transport.go), the
// response body tap (tap.go) and the header rules (headers.go) live in
// separate files.
package proxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"os"
	"strings"
	"sync"
	"syscall"
	"time"

	"filippo.io/age"

	"github.com/valyala/fasthttp"

	"github.com/auditproxy/auditproxy/audit"
	"github.com/auditproxy/auditproxy/hashing"
)

// Config configures a Proxy. Zero values take the defaults documented on each
// field.
type Config struct {
	// Upstream is the base URL of the server to proxy to, such as
	// "http://127.0.0.1:8000". Only scheme and host:port are used.
	Upstream string
	// UpstreamForcesUsage says vLLM runs with --enable-force-include-usage:
	// every stream carries a usage chunk, asked for or not. The proxy then
	// does not ask for it, so removes nothing: a client that did not ask
	// gets the chunk, as it would from vLLM directly.
	UpstreamForcesUsage bool
	// MaxRequestBodySize, if positive, bounds request bodies; a body
	// announced larger is answered 413 without contacting the upstream,
	// and a chunked body that grows larger is cut and answered 413.
	// Default 0: no limit, as vLLM sets none. Memory is bounded by
	// streaming instead: a body longer than 8 MiB (or than Capture's
	// MaxBytes) is streamed to the upstream as it arrives, read for its
	// fields and hashed on the way, holding a 64 KiB piece buffer
	// (bigbody.go); it is not rewritten to ask for usage.
	MaxRequestBodySize int
	// RequestBodyBudget bounds the bytes of request bodies held at once (see
	// body.go): held bodies, and a streamed body's piece buffer; at least
	// what one body holds (MinRequestBodyBudget). Default: a quarter of the
	// Go memory limit (GOMEMLIMIT) when one is set, else 256 MiB.
	RequestBodyBudget int64
	// UpstreamIdleTimeout fails an upstream exchange when the upstream sends
	// no byte for this long: 504 before the response started, a cut stream
	// after. vLLM sends nothing until a non-streamed answer is complete, so
	// this bounds the longest non-streamed generation. Default 10 minutes.
	UpstreamIdleTimeout time.Duration
	// ClientIdleTimeout fails a write to a client that accepts no byte for
	// this long, and bounds reading a request. Default 2 minutes.
	ClientIdleTimeout time.Duration
	// UpstreamMaxConns bounds concurrent upstream connections, so the number
	// of requests in flight at the upstream. Default 4096.
	UpstreamMaxConns int
	// MaxClientConns bounds open client connections; one more is answered
	// 503 and closed. Default: DefaultMaxClientConns of the descriptor
	// limit, so that the process does not run out of descriptors.
	MaxClientConns int
	// Hash is the digest algorithm for bodies. Default SHA-256, the digest
	// auditors' record fields name (issue #16); BLAKE3 on request.
	Hash hashing.Algorithm
	// KeyIDer computes api_key_id. Required.
	KeyIDer *hashing.KeyIDer
	// Recorder receives every finished event. Required.
	Recorder audit.Recorder
	// Capture, if set, encrypts each request's bodies into its event (see
	// package payload).
	Capture *CaptureConfig
	// GPU, if set, returns the event's "gpu" reference for each request
	// (the digest of the current GPU identity, or nil). It runs on every
	// request: an atomic load.
	GPU func() *string
	// ModelChecksums, if set, returns the checksums of the weights behind
	// a served model name (see package identity): checksum and, for a LoRA
	// adapter, its base's. It runs on every request.
	ModelChecksums func(name string) (checksum, base string)
	// AwaitModel, if set, is called when a request vLLM served named a
	// model whose checksums were unknown when it arrived (an adapter a LoRA
	// resolver loaded on this very request, say), before the answer's end
	// is handed out. It may wait, up to wait (a few seconds), for the
	// served models to be read again, and returns the checksums then
	// known. It runs on every request to a model served without known
	// weights (vLLM started from a hub name this host cannot read, say),
	// so it should not make a deadline before it knows it must poll.
	AwaitModel func(name string, wait time.Duration) (checksum, base string)
	// ModelsChanged, if set, is called when vLLM answered 200 to a runtime
	// LoRA load or unload, before the answer's end is handed out, so that
	// the change is recorded, and the adapter's checksum known, before the
	// client can send a request to it. It may wait within ctx.
	ModelsChanged func(ctx context.Context)
	// Metrics receives the proxy's measurements. Default: fresh, unregistered.
	Metrics *Metrics
	// Logger receives operational messages; never request content. Default
	// slog.Default().
	Logger *slog.Logger
	// Source is written into every event.
	Source audit.Source
	// UpstreamAPIKey, if set, is sent as "Authorization: Bearer KEY" on the
	// proxy's own requests to the upstream (the /readyz probe of /health),
	// never on a client's request, which keeps its own Authorization.
	UpstreamAPIKey string
	// Dial, if set, opens connections to the upstream instead of TCP to
	// Upstream's host:port (addr). Tests and benchmarks use it to put the
	// upstream on an in-memory listener; the idle timeouts still apply to
	// what it returns.
	Dial func(addr string) (net.Conn, error)
}

// Proxy is the audited reverse proxy. Create one with New.
type Proxy struct {
	cfg      Config
	client   *fasthttp.HostClient
	server   *fasthttp.Server
	metrics  *Metrics
	log      *slog.Logger
	exchPool sync.Pool
	admitter audit.Admitter // the Recorder, if it can refuse in advance
	budget   *bodyBudget
	// bodyHold is the most of a request body held whole; a longer one is
	// streamed (bigbody.go).
	bodyHold int64
}

// CaptureConfig turns on encrypted payload capture.
type CaptureConfig struct {
	// Recipients are the age public keys the bodies are encrypted to; the
	// proxy never holds a key that decrypts them.
	Recipients []age.Recipient
	// MaxBytes is the most captured of each body; longer bodies are
	// captured up to it and marked truncated.
	MaxBytes int64
}

// New validates cfg and returns a Proxy.
func New(cfg Config) (*Proxy, error) {
	if cfg.Recorder == nil {
		return nil, errors.New("proxy: Config.Recorder is required")
	}
	if cfg.KeyIDer == nil {
		return nil, errors.New("proxy: Config.KeyIDer is required")
	}
	if cfg.MaxRequestBodySize < 0 {
		cfg.MaxRequestBodySize = 0
	}
	if cfg.RequestBodyBudget <= 0 {
		cfg.RequestBodyBudget = DefaultRequestBodyBudget()
	}
	bodyHold, held := requestBodyHold(cfg.MaxRequestBodySize, cfg.Capture)
	if cfg.RequestBodyBudget < held {
		return nil, fmt.Errorf("proxy: the request body budget (%d bytes) is smaller than what one request body holds (%d bytes)",
			cfg.RequestBodyBudget, held)
	}
	if cfg.UpstreamIdleTimeout <= 0 {
		cfg.UpstreamIdleTimeout = 10 * time.Minute
	}
	if cfg.ClientIdleTimeout <= 0 {
		cfg.ClientIdleTimeout = 2 * time.Minute
	}
	if cfg.UpstreamMaxConns <= 0 {
		cfg.UpstreamMaxConns = 4096
	}
	if cfg.MaxClientConns <= 0 {
		cfg.MaxClientConns = DefaultMaxClientConns(DescriptorLimit())
	}
	if cfg.Hash == "" {
		cfg.Hash = hashing.SHA256
	}
	if cfg.Metrics == nil {
		cfg.Metrics = NewMetrics()
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	up, err := ParseUpstream(cfg.Upstream)
	if err != nil {
		return nil, err
	}
	p := &Proxy{cfg: cfg, metrics: cfg.Metrics, log: cfg.Logger, budget: &bodyBudget{limit: cfg.RequestBodyBudget}, bodyHold: bodyHold}
	p.metrics.budget.Store(p.budget)
	p.metrics.maxClientConns.Store(int64(cfg.MaxClientConns))
	p.admitter, _ = cfg.Recorder.(audit.Admitter)
	p.client = newUpstreamClient(up, cfg)
	p.exchPool.New = func() any { return newExchange(p) }
	p.server = &fasthttp.Server{
		Handler:            p.handle,
		ErrorHandler:       p.handleRequestError,
		Name:               "",
		MaxRequestBodySize: cfg.MaxRequestBodySize,
		ReadTimeout:        cfg.ClientIdleTimeout,
		IdleTimeout:        cfg.ClientIdleTimeout,
		// Headers pass through as the upstream wrote them: no added Server,
		// Date or Content-Type. Header names are normalized (x-request-id
		// becomes X-Request-Id): names are case-insensitive, and lookups of
		// Authorization or hop-by-hop headers must match whatever case a
		// client used.
		NoDefaultServerHeader:        true,
		NoDefaultDate:                true,
		NoDefaultContentType:         true,
		DisablePreParseMultipartForm: true,
		// The handler reads bodies itself, within a memory budget (body.go).
		StreamRequestBody: true,
		ReadBufferSize:    16 << 10,
		// The read buffer goes back to a pool once a request is read, so a
		// connection whose answer streams for minutes does not hold 16 KiB
		// (32 MB at 2,000 streams); the cost is a 1-byte read per request.
		ReduceMemoryUsage: true,
		// fasthttp puts a snippet of a request it cannot parse into its
		// errors, Authorization header and prompt included: neither its
		// errors nor its log lines may carry request bytes.
		SecureErrorLogMessage: true,
		Logger:                fasthttpLogger{p.log},
	}
	return p, nil
}

// Upstream is a parsed upstream base URL.
type Upstream struct {
	Addr  string // host:port
	IsTLS bool
}

// ParseUpstream parses an upstream base URL such as "http://127.0.0.1:8000".
func ParseUpstream(s string) (Upstream, error) {
	u, err := url.Parse(s)
	if err != nil {
		return Upstream{}, fmt.Errorf("upstream %q: %w", s, err)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return Upstream{}, fmt.Errorf("upstream %q: scheme must be http or https", s)
	}
	if u.Host == "" {
		return Upstream{}, fmt.Errorf("upstream %q: no host", s)
	}
	if u.Path != "" && u.Path != "/" {
		return Upstream{}, fmt.Errorf("upstream %q: a path prefix is not supported; give scheme://host:port", s)
	}
	up := Upstream{Addr: u.Host, IsTLS: u.Scheme == "https"}
	if u.Port() == "" {
		port := "80"
		if up.IsTLS {
			port = "443"
		}
		up.Addr = net.JoinHostPort(u.Hostname(), port)
	}
	return up, nil
}

// Handler returns the proxy's fasthttp request handler, for serving it with
// a fasthttp.Server of one's own (as tests and benchmarks do). Serve uses
// the Proxy's configured server, which also applies the body size limit and
// the request error handling.
func (p *Proxy) Handler() fasthttp.RequestHandler { return p.handle }

// Serve accepts client connections on ln until Shutdown.
func (p *Proxy) Serve(ln net.Listener) error {
	return p.server.Serve(&clientListener{Listener: ln, writeIdle: p.cfg.ClientIdleTimeout,
		maxConns: int64(p.cfg.MaxClientConns), log: p.log, m: p.metrics})
}

// MaxClientConns returns the cap on open client connections in force.
func (p *Proxy) MaxClientConns() int { return p.cfg.MaxClientConns }

// Shutdown stops accepting connections and waits for in-flight requests,
// streams included, to finish.
func (p *Proxy) Shutdown() error {
	return p.server.Shutdown()
}

// Metrics returns the proxy's metrics.
func (p *Proxy) Metrics() *Metrics { return p.metrics }

// fasthttpLogger sends fasthttp's own messages (accept errors, connections
// it could not serve) to slog, without the request bytes they may quote.
// fasthttp formats errors with a snippet of a request it could not parse
// (two Content-Length headers, a control character in a header, a forbidden
// trailer): the Authorization header and the prompt with it. So only the
// format string, addresses, numbers and errors that come from the network
// stack are printed; any other argument is replaced by a placeholder.
type fasthttpLogger struct{ l *slog.Logger }

func (f fasthttpLogger) Printf(format string, args ...any) {
	safe := make([]any, len(args))
	for i, a := range args {
		safe[i] = redactLogArg(a)
	}
	f.l.Warn("fasthttp: " + fmt.Sprintf(format, safe...))
}

// redactedArg stands in for an argument of fasthttp's that may hold request
// bytes.
const redactedArg = "(request content withheld)"

func redactLogArg(a any) any {
	switch v := a.(type) {
	case net.Addr:
		return v.String()
	case int, int32, int64, uint, uint32, uint64, float64, time.Duration:
		return v
	case error:
		return redactError(v)
	}
	return redactedArg
}

// redactError returns err's text if it comes from the network stack (which
// quotes addresses and system errors, never data); for fasthttp's request
// parsing errors, which quote the request, the known phrase that says what
// was wrong; and redactedArg otherwise.
func redactError(err error) string {
	if err == nil {
		return ""
	}
	var op *net.OpError
	var errno syscall.Errno
	switch {
	case errors.As(err, &op):
		return op.Error()
	case errors.As(err, &errno):
		return errno.Error()
	case errors.Is(err, os.ErrDeadlineExceeded), errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return err.Error()
	}
	for _, known := range knownErrors {
		if errors.Is(err, known) {
			return known.Error()
		}
	}
	text := err.Error()
	for _, phrase := range fasthttpErrorPhrases {
		if strings.Contains(text, phrase) {
			return phrase + " " + redactedArg
		}
	}
	return redactedArg
}

// knownErrors hold no request or response bytes.
var knownErrors = []error{fasthttp.ErrNoFreeConns, fasthttp.ErrTimeout, fasthttp.ErrConnectionClosed,
	fasthttp.ErrBodyTooLarge, errClientGone, errEventNotRecorded}

// fasthttpErrorPhrases are the parts of fasthttp's request parsing errors
// (fasthttp v1.77 header.go, http.go) that say what is wrong without
// quoting the request.
var fasthttpErrorPhrases = []string{
	"duplicate content-length header",
	"invalid header value",
	"invalid header key",
	"missing colon",
	"forbidden trailer key",
	"invalid trailer",
	"cannot find whitespace in the first line",
	"cannot find http request method",
	"unsupported http request method",
	"unexpected content-length",
	"invalid content-length",
	"cannot parse Content-Length",
	"body size exceeds the given limit",
	"small read buffer",
	"error when reading request headers",
	"error when reading request body",
	"error when reading response headers",
	"cannot find whitespace in the first line of response",
	"unexpected end of response",
	"cannot parse response status code",
	"error when reading response body",
	"cannot read chunk size",
}
