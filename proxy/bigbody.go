package proxy

import (
	"bytes"
	"fmt"
	"io"
	"net"

	"github.com/valyala/fasthttp"
)

// Request bodies of any size. vLLM sets no limit on a request body (uvicorn
// and FastAPI read a JSON body of any length; docs/vllm-wire-format.md,
// section g), and a multimodal request with base64 images, audio or video
// is often tens of megabytes. So the proxy sets no default limit either
// (Config.MaxRequestBodySize 0), and what bounds its memory is streaming:
//
//   - A body of at most maxHeldBody (8 MiB; more when payload capture keeps
//     more, see requestBodyHold) is read whole before it is sent, as
//     body.go describes: its fields are read as vLLM reads them, and a
//     stream that did not ask for usage is rewritten to ask for it. 8 MiB
//     is far above any text request (a 128k-token prompt is about 0.5 MB of
//     JSON), so only multimodal bodies are longer, and the default budget
//     (256 MiB) holds 32 such bodies at once.
//   - A longer body (announced by its Content-Length, or a chunked body that
//     grows past maxHeldBody while it is read) is streamed to vLLM as it
//     arrives: what was read already (a chunked body's first 8 MiB, or the
//     first --capture-max-bytes that capture keeps) goes first, then the rest
//     through one piece buffer of smallBodySize (64 KiB), which holds its
//     share of the budget until the body is sent; the part read already
//     gives its share back as soon as it is sent. Every byte is hashed into
//     the event's input as it is handed to the upstream connection, and
//     read for model, stream and stream_options on the way (bodyfields.go),
//     so input.hash and input.bytes are exactly those of the bytes vLLM got.
//     The body goes upstream with the client's framing: its Content-Length,
//     or chunked.
//
// A streamed body is never rewritten: a streamed chat or completion whose
// body is over maxHeldBody and did not ask for usage reaches vLLM as sent,
// so its event has null token counts (vLLM sent none). Payload capture, when
// on, keeps the body's first --capture-max-bytes, marked truncated, as for
// a held body longer than that.
//
// The answer is read only once the whole request is written (fasthttp
// writes a request, then reads its answer), so model and stream are known
// before the response tap starts. uvicorn, answering before it read a body
// (vLLM's API-key check answers 401 first), reads and drops the rest of the
// body on the same connection (h11_impl.py and httptools_impl.py drop body
// data once the response is complete), so that answer too comes after the
// whole body. An upstream that closes the connection instead fails the
// write: 502, and the event covers what was sent.
//
// A streamed body's faults are the client's, and end the exchange as a body
// that cannot be read does (answerBodyError): a body that ends before its
// Content-Length (the client closed or half-closed its connection) or a
// chunked body whose framing is broken gets 400 malformed_body, a client
// that sends nothing for --client-idle-timeout 408 request_timeout, a
// chunked body that passes --max-request-body-size 413. vLLM then has a cut
// request: the proxy closes that upstream connection, and Starlette, reading
// a body whose connection closed, raises ClientDisconnect, so vLLM acts on
// none of it. The request is never sent again (transport.go). While a body
// streams, reading it is bounded by the client idle timeout, not by
// fasthttp's whole-request ReadTimeout, so a long upload that keeps sending
// is not cut; the watch for a client that leaves (watch.go) starts once the
// body has been read.
const maxHeldBody = 8 << 20

// requestBodyHold returns the most of a request body read before it is
// sent (hold: a body up to it is held whole, and a chunked body is read one
// byte past it) and the most one body holds of the budget at once (held):
// hold, one byte, and the piece buffer, or what the body size limit allows.
func requestBodyHold(maxBodySize int, capture *CaptureConfig) (hold, held int64) {
	hold = maxHeldBody
	if capture != nil {
		// The sealer takes the body's first MaxBytes, and one more to
		// know it is longer, before the body streams.
		hold = max(hold, capture.MaxBytes+1)
	}
	held = hold + 1 + smallBodySize
	if maxBodySize > 0 {
		held = min(held, int64(maxBodySize)+1)
	}
	return hold, held
}

// MinRequestBodyBudget returns the smallest request body budget that one
// body fits in, for a body size limit (0: none) and capture's limit per
// body (0: capture off).
func MinRequestBodyBudget(maxBodySize int, captureMaxBytes int64) int64 {
	var c *CaptureConfig
	if captureMaxBytes > 0 {
		c = &CaptureConfig{MaxBytes: captureMaxBytes}
	}
	_, held := requestBodyHold(maxBodySize, c)
	return held
}

// streamedBody is a streamed request body as the upstream write reads it:
// the bytes read before streaming began, then the rest from the client
// through the piece buffer. Each byte is hashed into the exchange's input
// hasher and read for the request's fields once the upstream connection's
// writer took it.
type streamedBody struct {
	x *exchange
	// prefix was read before streaming began and goes first; prefixShare
	// is its share of the budget, given back once it is sent.
	prefix      []byte
	prefixShare int64
	rest        io.Reader // the client's body after the prefix
	piece       []byte
	// left bounds what the rest may add (the body size limit); -1: no
	// limit. due is what the rest must add (the announced length); -1:
	// chunked.
	left, due int64
	fields    *streamFields
	req       *fasthttp.Request
	// client is the client's connection, watched once the body is read
	// (watch.go); conn is it as the listener made it, read with an idle
	// timeout while the body streams.
	client net.Conn
	conn   *idleConn
	// eof says the client's body was read to its end; clientErr why it
	// could not be (the upstream write fails with it, and the event says
	// the client's body was at fault, not the upstream).
	eof       bool
	clientErr error
}

// errStreamedBodyOverLimit ends a chunked body that grew past
// --max-request-body-size after it began streaming.
var errStreamedBodyOverLimit = fmt.Errorf("streamed: %w", errBodyOverLimit)

// streamBody makes the request's body a stream of what was read (buf) and
// the rest of the client's body (stream); n is the announced length, -1
// for a chunked body. It takes the piece buffer's share of the budget.
func (p *Proxy) streamBody(ctx *fasthttp.RequestCtx, x *exchange, stream io.Reader, buf []byte, n, limit int64) error {
	piece := (*x.pooledBody)[:cap(*x.pooledBody)]
	share := int64(len(piece))
	var prefixShare int64
	if len(buf) > 0 && &buf[0] != &piece[0] {
		prefixShare = x.bodyShare // the prefix has a buffer of its own
		share += prefixShare
	}
	if share > x.bodyShare {
		if !p.budget.take(share - x.bodyShare) {
			return errBodyOverBudget
		}
		x.bodyShare = share
	}
	x.streamed = true
	x.in.Reset()
	b := &x.sbody
	*b = streamedBody{x: x, prefix: buf, prefixShare: prefixShare, rest: stream, piece: piece, left: -1, due: -1, req: &ctx.Request}
	b.fields = getStreamFields(ctx.Request.Header.ContentType())
	if n >= 0 {
		b.due = n - int64(len(buf))
	} else if limit > 0 {
		b.left = limit - int64(len(buf))
	}
	b.client = ctx.Conn()
	if ic, ok := b.client.(*idleConn); ok {
		// fasthttp's ReadTimeout is a deadline for the whole request: a
		// long upload that keeps sending must not hit it.
		ic.readIdle, b.conn = p.cfg.ClientIdleTimeout, ic
	}
	ctx.Request.SetBodyStream(b, int(n))
	return nil
}

// SupportsBodyWriteTo lets fasthttp write the body with WriteTo, through
// the piece buffer, rather than with Read through buffers of its own.
func (b *streamedBody) SupportsBodyWriteTo() bool { return true }

// WriteTo writes the body to the upstream connection's writer w, the
// prefix first, then the rest a piece at a time as it arrives.
func (b *streamedBody) WriteTo(w io.Writer) (int64, error) {
	var total int64
	if len(b.prefix) > 0 {
		n, err := w.Write(b.prefix)
		b.pass(b.prefix[:n])
		total += int64(n)
		if err != nil {
			return total, err
		}
		b.prefixSent()
	}
	for {
		p, err := b.readRest(b.piece)
		if len(p) > 0 {
			n, werr := w.Write(p)
			b.pass(p[:n])
			total += int64(n)
			if werr != nil {
				return total, werr
			}
		}
		if err == io.EOF {
			return total, nil
		}
		if err != nil {
			return total, err
		}
	}
}

// Read reads the body as WriteTo writes it.
func (b *streamedBody) Read(p []byte) (int, error) {
	if len(b.prefix) > 0 {
		n := copy(p, b.prefix)
		b.pass(b.prefix[:n])
		if b.prefix = b.prefix[n:]; len(b.prefix) == 0 {
			b.prefixSent()
		}
		return n, nil
	}
	got, err := b.readRest(p)
	b.pass(got)
	return len(got), err
}

// pass hashes and reads bytes handed to the upstream.
func (b *streamedBody) pass(p []byte) {
	if len(p) == 0 {
		return
	}
	b.x.in.Write(p)
	b.fields.write(p)
}

// prefixSent lets go of the prefix and its share of the budget once it is
// sent: a long upload holds only the piece buffer.
func (b *streamedBody) prefixSent() {
	x := b.x
	b.prefix = nil
	x.body = nil
	if b.prefixShare > 0 {
		x.p.budget.give(b.prefixShare)
		x.bodyShare -= b.prefixShare
		b.prefixShare = 0
	}
}

// readRest reads the next bytes of the client's body into p, within the
// limit and the announced length.
func (b *streamedBody) readRest(p []byte) ([]byte, error) {
	switch {
	case b.clientErr != nil:
		return nil, b.clientErr
	case b.eof:
		return nil, io.EOF
	case b.due == 0:
		b.clientDone(nil) // the announced length is read
		return nil, io.EOF
	}
	if b.left >= 0 && int64(len(p)) > b.left+1 {
		p = p[:b.left+1] // one byte past the limit, to see the body is over it
	}
	if b.due >= 0 && int64(len(p)) > b.due {
		p = p[:b.due]
	}
	n, err := b.rest.Read(p)
	p = p[:n]
	if b.left >= 0 {
		if int64(n) > b.left {
			b.clientDone(errStreamedBodyOverLimit)
			return nil, b.clientErr
		}
		b.left -= int64(n)
	}
	if b.due >= 0 {
		b.due -= int64(n)
	}
	switch {
	case err == io.EOF && b.due > 0:
		b.clientDone(io.ErrUnexpectedEOF) // shorter than its Content-Length
		return p, b.clientErr
	case err == io.EOF, err == nil && b.due == 0:
		b.clientDone(nil)
		return p, io.EOF
	case err != nil:
		b.clientDone(err)
		return p, err
	}
	return p, nil
}

// clientDone notes that reading the client's body ended, at its end (err
// nil) or not: the connection's reads get fasthttp's deadlines again, and
// the watch for a client that leaves starts.
func (b *streamedBody) clientDone(err error) {
	if b.conn != nil {
		b.conn.readIdle = 0
	}
	if err != nil {
		b.clientErr = err
		return
	}
	b.eof = true
	// A chunked body's trailer section has just been read into the
	// request's header; its fields are dropped, as prepareUpstreamRequest
	// drops a held body's, rather than sent after the body.
	h := &b.req.Header
	var trailers [][]byte
	for name := range h.Trailers() {
		trailers = append(trailers, bytes.Clone(name))
	}
	for _, name := range trailers {
		h.DelBytes(name)
	}
	if b.client != nil {
		b.x.watch.start(b.client)
	}
}

// streamedBodySent completes the event of a request whose body streamed,
// once its round trip returned (err): the input is what was sent, and the
// fields are those of the whole body, now read. fasthttp reads an answer
// only after the whole request is written, so a body whose round trip
// succeeded was read to its end before the answer's first byte. One whose
// round trip failed (the client's body or the upstream failed first, or no
// connection could be made) has no fields, as a body cut short has none.
func (p *Proxy) streamedBodySent(x *exchange, err error) {
	b := &x.sbody
	if !b.eof && b.clientErr == nil && b.conn != nil {
		b.conn.readIdle = 0 // the write failed before the body's end
	}
	f := b.fields.finish(err == nil && b.eof)
	putStreamFields(b.fields)
	b.fields = nil

	ev := &x.ev
	start := x.strs.mark()
	x.strs.buf = x.in.AppendDigest(x.strs.buf)
	ev.Input.Hash = x.strs.since(start)
	ev.Input.Bytes = x.in.Bytes()
	if f.model == x.lastModel {
		f.model = x.lastModel
	}
	ev.Model.Name, ev.Model.NameBytes = f.model, f.modelBytes
	x.lastModel = f.model
	if p.cfg.ModelChecksums != nil && f.model != "" {
		ev.Model.Checksum, ev.Model.BaseChecksum = p.cfg.ModelChecksums(f.model)
	}
	ev.Stream = f.stream
	if b.clientErr != nil {
		p.log.Info("streamed request body failed; the upstream got a cut request",
			"request_id", ev.RequestID, "bytes_sent", ev.Input.Bytes, "err", redactError(b.clientErr))
	}
}

// streamedBodyFault returns why a streamed request's round trip failed if
// the client's body was at fault, and whether the rest of the client's body
// is unread (the connection then cannot serve another request).
func (x *exchange) streamedBodyFault() (clientErr error, unread bool) {
	if !x.streamed {
		return nil, false
	}
	return x.sbody.clientErr, !x.sbody.eof
}
