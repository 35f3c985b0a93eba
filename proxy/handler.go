package proxy

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/auditproxy/auditproxy/audit"
	"github.com/auditproxy/auditproxy/hashing"
	"github.com/auditproxy/auditproxy/payload"
)

// exchange is the state of one proxied request, from the handler to the
// moment the response body is written. It is pooled; everything in it is
// reset by reset.
type exchange struct {
	p     *Proxy
	ev    audit.Event
	start time.Time
	// body is the request body as read (see body.go), pooledBody its buffer
	// when it came from the pool, and bodyShare its share of the budget;
	// reqBody holds it rewritten for include_usage, and textScratch
	// transcoded to UTF-8 to be read.
	body        []byte
	ctx         *fasthttp.RequestCtx // during the round trip, for bodySent
	bodySent    func()
	pooledBody  *[]byte
	bodyShare   int64
	reqBody     []byte
	textScratch []byte
	// streamed says the body is longer than the proxy holds and goes
	// upstream as sbody, hashed into in as it is sent (bigbody.go).
	streamed bool
	sbody    streamedBody
	in       *hashing.Hasher
	// Storage that the event's pointer fields point into, so building an
	// event allocates nothing for them.
	apiKeyID     string
	ttft         float64
	inTokens     int64
	outTokens    int64
	audioSeconds float64
	upstream     time.Duration
	clientClose  bool // the client asked for Connection: close
	// lastModel is the model name of the last request this pooled exchange
	// served; most requests name the same one.
	lastModel string
	// up is the upstream connection of the request in flight; watch
	// watches the client's connection until the answer begins, and gone
	// says the client left before (see watch.go).
	up    upstreamConn
	watch clientWatch
	gone  atomic.Bool
	// seal captures the bodies when payload capture is on.
	seal    *payload.Sealer
	payload audit.Payload
	// strs holds the event's per-request strings (ids, digests, key id).
	strs strArena

	tap responseTap
}

func newExchange(p *Proxy) *exchange {
	x := &exchange{p: p}
	x.tap.x = x
	x.watch.x = x
	// Once the request is written, waiting for vLLM's answer (a whole
	// generation, for a non-streamed one) must not hold its body.
	x.bodySent = func() { p.releaseBody(x.ctx, x) }
	x.tap.out = hashing.NewHasher(p.cfg.Hash)
	x.in = hashing.NewHasher(p.cfg.Hash)
	return x
}

func (p *Proxy) acquireExchange() *exchange {
	x := p.exchPool.Get().(*exchange)
	x.start = time.Now()
	x.strs.reset()
	x.ev = audit.Event{
		V:      audit.SchemaVersion,
		Type:   audit.TypeInference,
		ID:     x.strs.newID(),
		Time:   audit.Timestamp(x.start),
		Source: p.cfg.Source,
	}
	if p.cfg.GPU != nil {
		x.ev.GPU = p.cfg.GPU()
	}
	p.metrics.inFlight.Inc()
	return x
}

// releaseExchange returns x to the pool once fasthttp is done with it.
func (p *Proxy) releaseExchange(x *exchange) {
	p.metrics.inFlight.Dec()
	p.releaseBody(nil, x)
	x.ctx = nil
	x.watch.stop()
	x.up.reset()
	x.gone.Store(false)
	if cap(x.textScratch) > smallBodySize {
		x.textScratch = nil
	}
	x.seal, x.payload = nil, audit.Payload{}
	x.strs.reset() // the pooled exchange does not keep the last request's strings alive
	x.upstream = 0
	x.streamed, x.sbody = false, streamedBody{}
	x.tap.reset()
	p.exchPool.Put(x)
}

// handle proxies one request.
func (p *Proxy) handle(ctx *fasthttp.RequestCtx) {
	x := p.acquireExchange()
	ev := &x.ev
	ev.RequestID = x.requestIDFor(ctx.Request.Header.Peek(requestIDHeader))
	ev.Method = internString(ctx.Method(), commonMethods)
	ev.Path = internString(requestPath(&ctx.Request), commonPaths)
	x.identifyCaller(&ctx.Request.Header)

	// A request the audit log cannot take is refused before its body is
	// read: no inference may run without its record.
	if p.admitter != nil {
		if err := p.admitter.Admit(); err != nil {
			p.refuseUnrecordable(ctx, x, err)
			return
		}
	}
	body, err := p.readBody(ctx, x)
	if err != nil {
		p.answerBodyError(ctx, x, err)
		return
	}
	if c := p.cfg.Capture; c != nil {
		var err error
		if x.seal, err = payload.NewSealer(c.Recipients, c.MaxBytes, body); err != nil {
			p.log.Error("payload capture failed to start", "request_id", ev.RequestID, "err", err)
		}
	}
	var f requestFields
	if !x.streamed {
		start := x.strs.mark()
		inSum := hashing.Sum256(p.cfg.Hash, body)
		x.strs.buf = hashing.AppendDigest(x.strs.buf, p.cfg.Hash, inSum[:])
		ev.Input.Hash = x.strs.since(start)
		ev.Input.Bytes = int64(len(body))
	}
	if x.streamed {
		// Read for its fields as it is sent (bigbody.go).
	} else if ct := ctx.Request.Header.ContentType(); isMultipartForm(ct) {
		f = parseFormFields(body, ct)
	} else {
		f = parseRequestFields(body, &x.textScratch, x.lastModel)
	}
	ev.Model.Name, ev.Model.NameBytes = f.model, f.modelBytes
	if isLoRAChange(ev.Method, ev.Path) {
		// A load or unload names the adapter it changes.
		ev.Model.Name, ev.Model.NameBytes = loraAdapterName(ev.Path, &f)
	}
	x.lastModel = f.model
	if p.cfg.ModelChecksums != nil && f.model != "" {
		ev.Model.Checksum, ev.Model.BaseChecksum = p.cfg.ModelChecksums(f.model)
	}
	ev.Stream = f.stream
	if f.transcoded {
		// A UTF-8 copy of a UTF-16 or UTF-32 body, held until the rewrite
		// below is made.
		if !p.budget.take(int64(cap(x.textScratch))) {
			p.answerBodyError(ctx, x, errBodyOverBudget)
			return
		}
		defer p.budget.give(int64(cap(x.textScratch)))
	}
	x.tap.kind = apiKindOf(ev.Path)
	if f.valid && f.stream && !f.includeUsage && f.rewritable && hasStreamOptions(ev.Path, &f) && !(p.cfg.UpstreamForcesUsage && forcedUsageApplies(ev.Path)) {
		x.reqBody = withIncludeUsage(x.reqBody[:0], f)
		if !p.budget.take(int64(cap(x.reqBody))) {
			p.answerBodyError(ctx, x, errBodyOverBudget)
			return
		}
		x.bodyShare += int64(cap(x.reqBody))
		ctx.Request.SetBodyRaw(x.reqBody)
		x.tap.stripUsage = true
	}
	if cap(x.textScratch) > smallBodySize {
		x.textScratch = nil
	}

	x.clientClose = prepareUpstreamRequest(&ctx.Request, ev.RequestID, p.client.Addr)
	resp := fasthttp.AcquireResponse()
	if !x.streamed {
		x.watch.start(ctx.Conn()) // a streamed body's starts once it is read
	}
	sent := time.Now()
	x.ctx = ctx
	err = x.up.roundTrip(p.client, &ctx.Request, resp, x.bodySent)
	x.upstream = time.Since(sent)
	if x.streamed {
		p.streamedBodySent(x, err)
	}
	restoreClientRequest(&ctx.Request.Header, x.clientClose)
	p.releaseBody(ctx, x) // if the request never went out
	if err != nil {
		x.watch.stop()
		fasthttp.ReleaseResponse(resp)
		if x.gone.Load() {
			p.recordClientGone(ctx, x)
			return
		}
		p.answerUpstreamFailure(ctx, x, err)
		return
	}

	x.tap.status = resp.Header.StatusCode()
	copyResponseHeader(&ctx.Response.Header, &resp.Header, ev.RequestID)
	if resp.BodyStream() == nil {
		// No body: a HEAD request, or a 204 or 304.
		x.watch.stop()
		fasthttp.ReleaseResponse(resp)
		if x.tap.finish(nil) != nil {
			// The header is the whole answer, so it is what is withheld:
			// the connection closes without one.
			ctx.HijackSetNoResponse(true)
			ctx.Hijack(func(net.Conn) {})
		}
		p.releaseExchange(x)
		return
	}
	x.tap.start(resp, &x.up.body, resp.Header.ContentType(), resp.Header.ContentLength())
	if !x.tap.sse {
		// A body that is not a stream follows its header at once.
		x.watch.stop()
	}
	size := resp.Header.ContentLength()
	if size < 0 || (x.tap.sse && x.tap.stripUsage) {
		// Unknown length, or a stream that may lose its usage chunk: send
		// chunked, flushed after every piece.
		size = -1
	}
	if size >= 0 && size <= bufferedBodyLimit && !x.tap.sse {
		p.answerBuffered(ctx, x, size)
		return
	}
	ctx.Response.SetBodyStream(&x.tap, size)
}

// bufferedBodyLimit is the largest body of known length, not an SSE stream,
// that is read whole before it is written to the client: nearly every
// non-streamed completion or embedding. Streaming such a body piece by piece
// through fasthttp costs a bare proxy a third of its throughput (the team's
// field notes: 0.65x nginx streamed, 0.86x buffered).
const bufferedBodyLimit = 64 << 10

// answerBuffered reads a small body of known length through the tap to its
// end and gives it to fasthttp as one body. The tap does what it does when
// streaming: it hashes the body, reads its usage and records the event
// before handing out the body's last bytes, so the event is still recorded
// before any byte of the answer leaves. Should the client's write then fail,
// the event says the answer was delivered, as for the held-back end of a
// streamed answer; the failure is not seen here. If the tap fails (the
// upstream broke off, the event could not be recorded), the bytes it handed
// out go to the client as a stream that fails where the tap failed, exactly
// as when streaming.
func (p *Proxy) answerBuffered(ctx *fasthttp.RequestCtx, x *exchange, size int) {
	if _, err := x.tap.WriteTo(ctx.Response.BodyWriter()); err != nil {
		got := bytes.Clone(ctx.Response.Body())
		ctx.Response.ResetBody()
		ctx.Response.SetBodyStream(io.MultiReader(bytes.NewReader(got), failingReader{err}), size)
	}
	_ = x.tap.CloseWithError(nil) // records if it has not, and releases x
}

// failingReader returns err at once.
type failingReader struct{ err error }

func (r failingReader) Read([]byte) (int, error) { return 0, r.err }

// identifyCaller sets api_key_id from the Authorization header: the keyed id
// of the bearer token, or of the whole credential for another scheme.
func (x *exchange) identifyCaller(h *fasthttp.RequestHeader) {
	auth := h.Peek("Authorization")
	if len(auth) == 0 {
		x.ev.APIKeyID = nil
		return
	}
	start := x.strs.mark()
	x.strs.buf = x.p.cfg.KeyIDer.AppendID(x.strs.buf, hashing.Credential(auth))
	x.apiKeyID = x.strs.since(start)
	x.ev.APIKeyID = &x.apiKeyID
}

// answerUpstreamFailure answers a request whose upstream exchange failed
// before a response header arrived.
func (p *Proxy) answerUpstreamFailure(ctx *fasthttp.RequestCtx, x *exchange, err error) {
	if clientErr, unread := x.streamedBodyFault(); clientErr != nil {
		// The client's streamed body failed, not the upstream: vLLM got
		// a cut request, which it does not act on (bigbody.go).
		p.answerBodyError(ctx, x, clientErr)
		return
	} else if unread {
		defer ctx.SetConnectionClose() // the rest of the body is not read
	}
	pe, outcome, reason := errUpstreamUnreachable, audit.OutcomeUpstreamUnreachable, "upstream_unreachable"
	switch {
	case errors.Is(err, fasthttp.ErrNoFreeConns):
		pe, reason = errUpstreamBusy, "upstream_no_free_connections"
	case isTimeout(err):
		pe, outcome, reason = errUpstreamTimeout, audit.OutcomeUpstreamTimeout, "upstream_idle_timeout"
	}
	p.log.Warn("upstream request failed", "request_id", x.ev.RequestID, "reason", reason, "err", redactError(err))
	x.ev.Status.Error = reason
	p.answerWithError(ctx, x, pe, outcome)
}

// clientGone is called by the watch when the client has left before the
// answer began: the upstream request is cancelled, and the exchange ends
// with the event recordClientGone or the tap records.
func (x *exchange) clientGone() {
	x.gone.Store(true)
	x.up.cancel()
}

// recordClientGone records an exchange whose client left before the answer
// began and whose upstream request was cancelled for it. Nothing is sent:
// there is no one to send it to. The status is 499, nginx's "client closed
// request", since no status reached the client.
func (p *Proxy) recordClientGone(ctx *fasthttp.RequestCtx, x *exchange) {
	p.log.Info("client left before the answer began; upstream request cancelled", "request_id", x.ev.RequestID)
	ctx.Response.Reset()
	ctx.SetConnectionClose()
	x.ev.Output.Hash = hashing.Sum(p.cfg.Hash, nil)
	x.ev.Output.Bytes = 0
	x.ev.Status.Code = statusClientClosedRequest
	x.ev.Status.Outcome = audit.OutcomeClientCancelled
	x.ev.Status.Error = "client_disconnected_before_answer"
	p.record(x)
	p.releaseExchange(x)
}

// statusClientClosedRequest is nginx's 499: the client closed the connection
// before the answer.
const statusClientClosedRequest = 499

// answerBodyError answers a request whose body could not be read, and
// records it as rejected. The rest of the body is not read, so the
// connection is closed after the answer.
func (p *Proxy) answerBodyError(ctx *fasthttp.RequestCtx, x *exchange, err error) {
	pe, reason := errBadRequest, "malformed_body"
	switch {
	case errors.Is(err, errBodyOverLimit):
		pe, reason = errBodyTooLarge, "body_too_large"
	case errors.Is(err, errBodyOverBudget):
		pe, reason = errBodiesOverBudget, "request_bodies_over_budget"
		p.metrics.bodyBudgetRejections.Inc()
	case isTimeout(err):
		pe, reason = errRequestTimeout, "request_timeout"
	}
	if n := ctx.Request.Header.ContentLength(); n > 0 && !x.streamed {
		x.ev.Input.Bytes = int64(n)
	}
	x.ev.Status.Error = reason
	p.answerWithError(ctx, x, pe, audit.OutcomeRejected)
	ctx.SetConnectionClose()
	if pe.status == fasthttp.StatusServiceUnavailable {
		ctx.Response.Header.Set("Retry-After", "1")
	}
}

// answerWithError writes pe as the response and records the exchange.
func (p *Proxy) answerWithError(ctx *fasthttp.RequestCtx, x *exchange, pe proxyError, outcome audit.Outcome) {
	p.releaseBody(ctx, x)
	ctx.Response.Reset()
	ctx.Response.SetStatusCode(pe.status)
	ctx.Response.Header.SetContentType("application/json")
	ctx.Response.Header.Set(requestIDHeader, x.ev.RequestID)
	var buf [256]byte
	body := pe.appendJSON(buf[:0])
	ctx.Response.SetBody(body)
	if x.seal != nil {
		x.seal.WriteResponse(body)
	}
	x.ev.Output.Hash = hashing.Sum(p.cfg.Hash, body)
	x.ev.Output.Bytes = int64(len(body))
	x.ev.Status.Code = pe.status
	x.ev.Status.Outcome = outcome
	p.record(x)
	p.releaseExchange(x)
}

// handleRequestError answers a request that fasthttp could not read (too
// large, malformed, too slow), and records it as rejected: the upstream
// never saw it, but an auditor sees that it was attempted.
func (p *Proxy) handleRequestError(ctx *fasthttp.RequestCtx, err error) {
	x := p.acquireExchange()
	x.ev.RequestID = x.requestIDFor(ctx.Request.Header.Peek(requestIDHeader))
	x.ev.Method = internString(ctx.Method(), commonMethods)
	x.ev.Path = internString(requestPath(&ctx.Request), commonPaths)
	x.identifyCaller(&ctx.Request.Header)
	if n := ctx.Request.Header.ContentLength(); n > 0 {
		x.ev.Input.Bytes = int64(n)
	}
	pe, reason := errBadRequest, "malformed_request"
	switch {
	case errors.Is(err, fasthttp.ErrBodyTooLarge):
		pe, reason = errBodyTooLarge, "body_too_large"
	case isTimeout(err):
		pe, reason = errRequestTimeout, "request_timeout"
	case errors.As(err, new(*fasthttp.ErrSmallBuffer)):
		pe, reason = errHeaderTooLarge, "headers_too_large"
	}
	x.ev.Status.Error = reason
	p.answerWithError(ctx, x, pe, audit.OutcomeRejected)
}

// refuseUnrecordable answers 503 to a request the Recorder cannot take the
// event of. The request does not reach the upstream and, there being no
// place for it, has no event; auditproxy_requests_total counts it.
func (p *Proxy) refuseUnrecordable(ctx *fasthttp.RequestCtx, x *exchange, err error) {
	p.log.Warn("request refused: the audit log cannot take its event", "request_id", x.ev.RequestID, "err", err)
	ctx.Response.Reset()
	// The body is not read: the connection cannot serve another request.
	ctx.SetConnectionClose()
	ctx.Response.SetStatusCode(errAuditUnavailable.status)
	ctx.Response.Header.SetContentType("application/json")
	ctx.Response.Header.Set(requestIDHeader, x.ev.RequestID)
	ctx.Response.Header.Set("Retry-After", retryAfter(err))
	var buf [256]byte
	ctx.Response.SetBody(errAuditUnavailable.appendJSON(buf[:0]))
	p.metrics.refused(x.ev.Model.Name)
	p.releaseExchange(x)
}

// retryAfter is the Retry-After, in whole seconds, for a request the
// Recorder refused with err: when it says it will know more (a spool
// re-checks its disk every second), else 5 seconds.
func retryAfter(err error) string {
	var ra audit.RetryAfter
	if errors.As(err, &ra) {
		if d := ra.RetryAfter(); d > 0 {
			return strconv.FormatInt(int64(max((d+time.Second-1)/time.Second, 1)), 10)
		}
	}
	return "5"
}

// record finishes the event's timings, hands it to the Recorder and updates
// the metrics. The exchange stays in use until releaseExchange.
func (p *Proxy) record(x *exchange) error {
	ev := &x.ev
	total := time.Since(x.start)
	ev.Latency.Total = ms(total)
	ev.Latency.Upstream = ms(x.upstream)
	ev.Latency.Overhead = ms(total - x.upstream)
	if x.seal != nil {
		c, err := x.seal.Close()
		x.seal = nil
		if err != nil {
			p.log.Error("payload capture failed", "request_id", ev.RequestID, "err", err)
		} else {
			x.payload = audit.Payload{Age: c.Ciphertext, InputBytes: c.InputBytes, OutputBytes: c.OutputBytes, Truncated: c.Truncated}
			ev.Payload = &x.payload
		}
	}
	start := time.Now()
	err := p.cfg.Recorder.Record(ev)
	p.metrics.recordWait.Observe(time.Since(start).Seconds())
	if err != nil {
		p.log.Error("audit event not recorded", "request_id", ev.RequestID, "event_id", ev.ID, "err", err)
	}
	p.metrics.observe(ev, err)
	return err
}

// modelsAfterAnswer keeps the served models current around an answer vLLM
// gave with 200: a runtime LoRA load or unload is recorded (ModelsChanged)
// before its answer ends, and a request for a model whose checksums were
// unknown gets them if they become known meanwhile (AwaitModel): an adapter
// is identified from its first request on.
func (p *Proxy) modelsAfterAnswer(x *exchange) {
	ev := &x.ev
	switch {
	case isLoRAChange(ev.Method, ev.Path):
		if p.cfg.ModelsChanged != nil {
			ctx, cancel := context.WithTimeout(context.Background(), modelsChangedWait)
			p.cfg.ModelsChanged(ctx)
			cancel()
		}
		if p.cfg.ModelChecksums != nil && ev.Model.Name != "" {
			ev.Model.Checksum, ev.Model.BaseChecksum = p.cfg.ModelChecksums(ev.Model.Name) // a loaded adapter's
		}
	case ev.Model.Name != "" && ev.Model.Checksum == "" && p.cfg.AwaitModel != nil && modelPaths[pathOnly(ev.Path)]:
		ev.Model.Checksum, ev.Model.BaseChecksum = p.cfg.AwaitModel(ev.Model.Name, awaitModelWait)
	}
}

// How long an answer's end waits for the served models to be read again:
// after a LoRA load, while the adapter's files are hashed; for a request
// to a model unknown when it came, while /v1/models is read.
const (
	modelsChangedWait = 30 * time.Second
	awaitModelWait    = 5 * time.Second
)

// isLoRAChange reports whether a request is vLLM's runtime LoRA load or
// unload: POST /v1/load_lora_adapter and /v1/unload_lora_adapter, and the
// same two handlers as the SageMaker standards library mounts them (vLLM
// registers them with register_load_adapter_handler and
// register_unload_adapter_handler, serve/lora/api_router.py @055e47c2):
// POST /adapters and DELETE /adapters/{adapter_name}.
func isLoRAChange(method, path string) bool {
	path = pathOnly(path)
	switch {
	case path == "/v1/load_lora_adapter" || path == "/v1/unload_lora_adapter" || path == "/adapters":
		return method == "POST"
	case strings.HasPrefix(path, "/adapters/"):
		name := path[len("/adapters/"):]
		return method == "DELETE" && name != "" && !strings.Contains(name, "/")
	}
	return false
}

// loraAdapterName returns the adapter a LoRA change names, as vLLM reads
// it: lora_name in a /v1 body; name in a SageMaker load's body (its
// request_shape maps lora_name to body.name); the path parameter of a
// SageMaker unload, percent-decoded as Starlette decodes path parameters.
func loraAdapterName(path string, f *requestFields) (string, int64) {
	path = pathOnly(path)
	switch {
	case strings.HasPrefix(path, "/adapters/"):
		name, err := url.PathUnescape(path[len("/adapters/"):])
		if err != nil {
			return "", 0
		}
		return cutModelName(name)
	case !f.valid:
		return "", 0
	case path == "/adapters":
		return topLevelString(f.text, "name")
	}
	return topLevelString(f.text, "lora_name")
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// The methods, paths and finish reasons nearly every request has, so that
// the event's copies of them need no allocation.
var (
	commonMethods = []string{"POST", "GET", "HEAD", "OPTIONS", "PUT", "DELETE", "PATCH"}
	// commonFinishReasons are vLLM's and OpenAI's finish_reason values.
	commonFinishReasons = []string{"stop", "length", "tool_calls", "abort", "content_filter", "function_call", "error"}
	commonPaths         = []string{"/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/models",
		"/v1/responses", "/health", "/metrics", "/version", "/tokenize", "/detokenize", "/pooling", "/score",
		"/rerank", "/v1/rerank", "/v1/score", "/v1/audio/transcriptions", "/v1/audio/translations"}
)

// internString returns the string in known equal to b, or a copy of b.
func internString(b []byte, known []string) string {
	for _, k := range known {
		if string(b) == k {
			return k
		}
	}
	return string(b)
}
