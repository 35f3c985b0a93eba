package proxy

import (
	"bytes"
	"errors"
	"io"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/auditproxy/auditproxy/audit"
	"github.com/auditproxy/auditproxy/hashing"
)

// errEventNotRecorded ends an answer whose event the Recorder refused: the
// client's connection is cut before the answer's end.
var errEventNotRecorded = errors.New("audit event not recorded; the end of the answer is withheld")

const (
	// tapBufferSize is a tap's initial buffer. It grows only while one SSE
	// event is larger, up to maxSSEEventSize.
	tapBufferSize = 4 << 10
	// maxSSEEventSize bounds the bytes held back for one incomplete SSE
	// event. A larger event is handed out as it arrives and read on the way
	// (see bigEvent): such an event is never a usage-only chunk to remove.
	maxSSEEventSize = 64 << 10
	// tapRetainLimit: a pooled tap whose buffers grew past this lets them go.
	tapRetainLimit = 64 << 10
)

// responseTap is the response body as fasthttp's server reads it: it reads
// the upstream body, hands the bytes on, and on the way hashes them, parses
// SSE events for usage and errors, and removes the usage-only chunk that the
// proxy's include_usage added.
//
// A piece handed to the server is hashed only when the server asks for the
// next one (by then it has written the piece to the client connection). So
// when the client goes away mid-stream, the output hash covers what was
// written to it.
//
// The end of the answer is held back until the event is recorded: an SSE
// stream's "data: [DONE]" event and everything after it, the last bytes of
// a body of known length. When the upstream body ends, the tap hashes what it
// still holds, records the event, and only then hands the rest out. So a
// client that received a complete answer had its event recorded first. If
// that last write fails, the event already says the answer was delivered;
// the failure is logged.
//
// The buffer holds, in order: the piece last handed out (outStart:outEnd),
// bytes ready to hand out (outEnd:ready), and bytes held back (ready:end):
// an SSE event whose end has not arrived yet, or the end of the answer. SSE
// events are handed out whole, so a usage-only event can be removed before
// any byte of it leaves.
type responseTap struct {
	x    *exchange
	out  *hashing.Hasher
	resp *fasthttp.Response
	body io.Reader

	status     int
	sse        bool    // the body is an SSE stream
	json       bool    // the body is JSON
	stripUsage bool    // remove usage-only SSE chunks (the proxy asked for them)
	kind       apiKind // where the answer's usage and end are
	// size is the body's Content-Length, -1 if unknown; read counts the
	// body bytes read so far.
	size, read int64
	held       bool // the end of the answer has arrived and is held back
	recorded   bool // the event is recorded; every byte in buf is hashed
	// afterEnd is the event's status.after_end: "tail_withheld" when the
	// upstream sent more than a buffer after the answer's end.
	afterEnd string

	buf                             []byte
	outStart, outEnd, ready, end    int
	eof, readFailed, gotFirst, done bool
	readErr                         error

	usage   usageInfo
	scratch []byte
	// scan reads a JSON body as it passes, or the data of an SSE event, into
	// obj.
	scan fieldScanner
	obj  answerObject
	// big reads an SSE event larger than maxSSEEventSize as it passes;
	// inBig says one is being read, up to buf[bigScanned].
	big        sseEventReader
	inBig      bool
	bigScanned int
	// searched: the bytes ready:searched were searched for the end of the
	// SSE event at ready and hold none (0: not searched). A read that adds
	// bytes is searched again only when they may complete a blank line
	// (see mayEndEvent), so an event that arrives a byte at a time is
	// searched in linear time, not once per byte.
	searched int
	// scanned counts the bytes offered to nextSSEEvent (read by tests).
	scanned int
}

// start prepares the tap for the upstream response resp, whose body is read
// from body. The tap owns resp from now on and releases it in finish.
func (t *responseTap) start(resp *fasthttp.Response, body io.Reader, contentType []byte, size int) {
	t.resp = resp
	t.body = body
	t.size = int64(size)
	t.sse = bytes.HasPrefix(contentType, []byte("text/event-stream"))
	t.json = !t.sse && bytes.Contains(contentType, []byte("json"))
	if t.buf == nil {
		t.buf = make([]byte, tapBufferSize)
	}
	t.obj.wantModel = t.x.ev.Model.Name == ""
	if t.json {
		t.obj.reset()
		t.scan.reset(answerSpec, &t.obj)
	}
}

func (t *responseTap) reset() {
	t.resp, t.body = nil, nil
	t.out.Reset()
	t.status = 0
	t.sse, t.json, t.stripUsage, t.inBig = false, false, false, false
	t.kind, t.bigScanned, t.searched, t.scanned = apiOpenAI, 0, 0, 0
	t.outStart, t.outEnd, t.ready, t.end = 0, 0, 0, 0
	t.eof, t.readFailed, t.gotFirst, t.done = false, false, false, false
	t.size, t.read, t.held, t.recorded = 0, 0, false, false
	t.readErr = nil
	t.afterEnd = ""
	t.usage = usageInfo{}
	t.obj.wantModel = false
	if cap(t.buf) > tapRetainLimit {
		t.buf = nil
	}
}

// Read implements io.Reader for fasthttp's server.
func (t *responseTap) Read(p []byte) (int, error) {
	t.commit()
	for t.ready == t.outEnd {
		if t.eof {
			return 0, t.readErr
		}
		t.fill()
	}
	n := copy(p, t.buf[t.outEnd:t.ready])
	t.outEnd += n
	return n, nil
}

// WriteTo hands out the body as Read would, each piece written to w straight
// from the tap's buffer, and returns nil at the body's end or the error that
// ended it: w's, or Read's other than io.EOF. A piece counts as written, and
// is hashed, once w.Write returns without error.
//
// fasthttp's server calls it in place of Read (see SupportsBodyWriteTo), with
// a writer that flushes each piece of a chunked body to the client: so no
// 4 KiB copy buffer of fasthttp's is held per stream in flight.
func (t *responseTap) WriteTo(w io.Writer) (int64, error) {
	var written int64
	for {
		t.commit()
		for t.ready == t.outEnd {
			if t.eof {
				if t.readErr == io.EOF {
					return written, nil
				}
				return written, t.readErr
			}
			t.fill()
		}
		n, err := w.Write(t.buf[t.outEnd:t.ready])
		t.outEnd += n
		written += int64(n)
		if err != nil {
			return written, err
		}
	}
}

// SupportsBodyWriteTo implements fasthttp.BodyWriterTo: WriteTo does what
// Read does.
func (t *responseTap) SupportsBodyWriteTo() bool { return true }

// CloseWithError implements fasthttp.ReadCloserWithError. fasthttp calls it
// once the response is written, with the error that ended the write: nil, an
// error of Read's, or the client connection's write error. It releases the
// exchange: fasthttp is done with the tap.
func (t *responseTap) CloseWithError(err error) error {
	x := t.x
	switch {
	case !t.recorded:
		t.finish(err) // the answer did not reach its end
	case err != nil && !t.readFailed && t.afterEnd == "":
		x.p.log.Info("the end of a recorded answer was not delivered", "request_id", x.ev.RequestID, "err", redactError(err))
	}
	t.releaseUpstream()
	x.p.releaseExchange(x)
	return nil
}

// releaseUpstream lets go of the upstream response and its connection. A
// connection whose response body was not read to its end is closed rather
// than reused half-read; for vLLM that aborts the generation.
func (t *responseTap) releaseUpstream() {
	if t.resp == nil {
		return
	}
	keepAlive := !t.resp.ConnectionClose()
	fasthttp.ReleaseResponse(t.resp)
	t.resp, t.body = nil, nil
	t.x.up.done(keepAlive)
}

// commit hashes the piece last handed out: the server has written it.
func (t *responseTap) commit() {
	if t.outEnd > t.outStart && !t.recorded {
		_, _ = t.out.Write(t.buf[t.outStart:t.outEnd])
		if t.x.seal != nil {
			t.x.seal.WriteResponse(t.buf[t.outStart:t.outEnd])
		}
		t.outStart = t.outEnd
	}
}

// fill reads once from the upstream. Called only when everything handed out
// is committed.
func (t *responseTap) fill() {
	if t.outEnd > 0 {
		n := copy(t.buf, t.buf[t.outEnd:t.end])
		t.ready -= t.outEnd
		t.bigScanned = max(t.bigScanned-t.outEnd, 0)
		t.searched = max(t.searched-t.outEnd, 0)
		t.end = n
		t.outStart, t.outEnd = 0, 0
	}
	if t.end == len(t.buf) {
		if t.held && !t.recorded {
			// More than a buffer after the answer's end ([DONE], a typed
			// stream's last event): nothing vLLM sends. The event is
			// recorded now, over everything up to here, rather than when
			// an unbounded tail ends (the client, its answer complete but
			// for the held end, would wait for that). Then the client gets
			// exactly what the event hashes, its answer's end included,
			// and its body ends there: a byte handed out after the record
			// would be in no hash. The rest is withheld, and the event
			// says so (status.after_end). A chunked body ends cleanly; one
			// of fixed length ends short, so the connection closes.
			t.afterEnd = "tail_withheld"
			if t.finish(nil) != nil {
				t.eof, t.readErr, t.readFailed = true, errEventNotRecorded, true
				return
			}
			t.x.p.log.Info("the upstream sent more than a buffer after the end of its answer; the rest is withheld", "request_id", t.x.ev.RequestID)
			t.ready = t.end
			t.eof, t.readErr = true, io.EOF
			return
		}
		switch {
		case len(t.buf) < maxSSEEventSize:
			t.buf = append(t.buf, make([]byte, len(t.buf))...)
		case t.sse && !t.inBig:
			// One event fills the buffer: read it as it passes.
			t.inBig, t.bigScanned, t.searched = true, t.ready, 0
			t.big = sseEventReader{}
			t.obj.reset()
			t.scan.reset(answerSpec, &t.obj)
			t.scanEvents()
			return
		default:
			t.ready = t.end
			return
		}
	}
	before := time.Now()
	n, err := t.body.Read(t.buf[t.end:])
	now := time.Now()
	t.x.upstream += now.Sub(before)
	if n > 0 && !t.gotFirst {
		t.gotFirst = true
		// Writes to the client now tell whether it is still there.
		t.x.watch.stop()
		if t.sse {
			t.x.ttft = ms(now.Sub(t.x.start))
			t.x.ev.Latency.TTFT = &t.x.ttft
		}
	}
	prev := t.end
	t.end += n
	t.read += int64(n)
	if t.json {
		t.scan.write(t.buf[prev:t.end])
	}
	switch {
	case t.recorded:
		t.ready = t.end
	case t.held:
	case t.sse:
		t.scanEvents()
	case t.size >= 0 && t.read >= t.size:
		t.held = true // the body's last bytes
	default:
		t.ready = t.end
	}
	if err != nil {
		t.eof = true
		t.readErr = err
		if err != io.EOF {
			t.readFailed = true
		}
		// The answer is complete, or as complete as it will get: record the
		// event, then let the rest (held bytes, a torn last event) go to the
		// client as the upstream sent it. If the event could not be kept,
		// the rest is withheld and the client's connection cut instead.
		if !t.recorded && t.finish(nil) != nil {
			t.readErr, t.readFailed = errEventNotRecorded, true
			return
		}
		t.ready = t.end
	}
}

// scanEvents moves ready past every complete SSE event after it, removing
// the usage-only events the client did not ask for.
func (t *responseTap) scanEvents() {
	for {
		if t.inBig && !t.scanBigEvent() {
			return
		}
		if t.searched > t.ready && !mayEndEvent(t.buf[t.ready:t.end], t.searched-t.ready) {
			t.searched = t.end
			return
		}
		t.scanned += t.end - t.ready
		ev, ok := nextSSEEvent(t.buf[t.ready:t.end], &t.scratch)
		if !ok {
			t.searched = t.end
			return
		}
		t.searched = 0 // the next event is searched from its start
		if t.inspectEvent(ev) {
			copy(t.buf[t.ready:], t.buf[t.ready+ev.size:t.end])
			t.end -= ev.size
			continue
		}
		if t.done {
			t.held = true // [DONE] and anything after it wait for the event
			return
		}
		t.ready += ev.size
	}
}

// mayEndEvent reports whether b, an SSE event's bytes of which b[:old]
// were searched and hold no blank line, may now hold one. A blank line is
// a line end at the event's start, or a line end after another: "\n\n",
// "\n\r" or "\r\r" (a "\r\n" pair is one line end). Only the new bytes and
// the two before them are looked at: a pair wholly in the old bytes would
// have ended the event, except one whose "\r" was the last byte (a "\n" may
// still follow it), which the two bytes cover.
func mayEndEvent(b []byte, old int) bool {
	if len(b) > 0 && (b[0] == '\n' || b[0] == '\r') {
		return true
	}
	w := b[max(old-2, 0):]
	for {
		i := bytes.IndexAny(w, "\r\n")
		if i < 0 || i+1 >= len(w) {
			return false
		}
		if c, d := w[i], w[i+1]; d == '\r' || (c == '\n' && d == '\n') {
			return true
		}
		w = w[i+1:]
	}
}

// inspectEvent reads usage, finish reason, errors and the end marker from one
// event, and reports whether the event is to be removed. Most chunks carry
// only content and "finish_reason":null; they are recognised without a parse.
func (t *responseTap) inspectEvent(ev sseEvent) (remove bool) {
	if !ev.hasData {
		return false
	}
	d := ev.data
	if bytes.HasPrefix(d, doneMarker) {
		// The SDKs end a stream at data that starts with [DONE]
		// (openai-python: sse.data.startswith("[DONE]"); openai-go:
		// bytes.HasPrefix), so it is the end, held back like [DONE].
		t.done = true
		return false
	}
	if !mayCarryFields(t.kind, d) {
		return false
	}
	usageOnly := readAnswerObject(&t.scan, &t.obj, t.kind, d, &t.usage)
	if t.usage.ended {
		t.done = true // the typed stream's last event: held with what follows
	}
	return usageOnly && t.stripUsage
}

// mayCarryFields reports whether an SSE event's data may hold something
// usageInfo reads. Most events carry only content (and an OpenAI chunk
// "finish_reason":null); they are passed without a parse. The names
// searched for cannot stand in a string value, where quotes are escaped.
//
// A name written with escapes ("usag\u0065") is the same name to Python's
// json, so data holding a \u escape is parsed. A chunk is passed unparsed
// for "finish_reason":null only when every finish_reason in it is null (a
// chunk of two choices, or a duplicate member, may hold another).
func mayCarryFields(kind apiKind, d []byte) bool {
	if bytes.Contains(d, []byte(`"usage"`)) || bytes.Contains(d, []byte(`"error"`)) || bytes.Contains(d, []byte(`\u`)) {
		return true
	}
	switch kind {
	case apiOpenAI:
		n := bytes.Count(d, []byte(`"finish_reason"`))
		return n > 0 && bytes.Count(d, []byte(`"finish_reason":null`)) != n
	case apiResponses:
		// The last event ends the stream whether or not it has usage.
		return hasResponsesEnd(d)
	case apiMessages:
		return bytes.Contains(d, []byte(`"stop_reason"`)) || bytes.Contains(d, []byte(`"message_stop"`))
	}
	return false
}

// hasResponsesEnd reports whether d may be a Responses stream's last
// event: it names "response.completed", ".incomplete" or ".failed" (one
// search for the common prefix, which costs a third of three).
func hasResponsesEnd(d []byte) bool {
	for {
		i := bytes.Index(d, []byte(`"response.`))
		if i < 0 {
			return false
		}
		d = d[i+len(`"response.`):]
		if bytes.HasPrefix(d, []byte(`completed"`)) || bytes.HasPrefix(d, []byte(`incomplete"`)) || bytes.HasPrefix(d, []byte(`failed"`)) {
			return true
		}
	}
}

var doneMarker = []byte("[DONE]")

// scanBigEvent reads on in an SSE event too large to hold, from bigScanned
// to the end of the buffer, and hands out what it read. It reports whether
// the event ended, ready then at the next event. The line ends read last
// are held back until the event ends: a client dispatches an event at its
// blank line, so the last event of a typed stream is not complete for the
// client until the answer is recorded.
func (t *responseTap) scanBigEvent() (ended bool) {
	n, ended := t.big.feed(t.buf[t.bigScanned:t.end], &t.scan)
	t.bigScanned += n
	if !ended {
		t.ready = max(t.ready, t.bigScanned-trailingLineEnds(t.buf[t.ready:t.bigScanned]))
		return false
	}
	t.inBig = false
	if t.big.dataLines > 0 && t.scan.close() {
		t.usage.add(t.kind, &t.obj)
		if t.usage.ended {
			t.done, t.held = true, true
			t.ready = max(t.ready, t.bigScanned-trailingLineEnds(t.buf[t.ready:t.bigScanned]))
			return false
		}
	}
	t.ready = t.bigScanned
	return true
}

// trailingLineEnds counts the "\r" and "\n" bytes that end b.
func trailingLineEnds(b []byte) int {
	n := 0
	for n < len(b) && (b[len(b)-1-n] == '\n' || b[len(b)-1-n] == '\r') {
		n++
	}
	return n
}

// finish completes the event and records it: when the upstream body ended
// (err nil; everything not yet handed out is about to be and is hashed now),
// or when the write to the client failed first (err; what was not written is
// not hashed).
func (t *responseTap) finish(err error) error {
	x := t.x
	ev := &x.ev
	clientFailed := err != nil && !t.readFailed
	if !clientFailed {
		t.commit()
		_, _ = t.out.Write(t.buf[t.outEnd:t.end])
		if x.seal != nil {
			x.seal.WriteResponse(t.buf[t.outEnd:t.end])
		}
	}
	t.recorded = true
	if err != nil || t.eof {
		// Recorded at a tail withheld (more than a buffer after [DONE]),
		// CloseWithError releases the upstream, closing its connection.
		t.releaseUpstream()
	}
	if t.json && t.read > 0 && t.scan.close() {
		t.usage.add(t.kind, &t.obj)
	}

	start := x.strs.mark()
	x.strs.buf = t.out.AppendDigest(x.strs.buf)
	ev.Output.Hash = x.strs.since(start)
	ev.Output.Bytes = t.out.Bytes()
	ev.Output.FinishReason = t.usage.finishReason
	if ev.Model.Name == "" && t.usage.model != "" {
		// vLLM served its default model; the answer names it.
		ev.Model.Name, ev.Model.NameBytes = cutModelName(t.usage.model)
		ev.Model.FromAnswer = true
		if x.p.cfg.ModelChecksums != nil {
			ev.Model.Checksum, ev.Model.BaseChecksum = x.p.cfg.ModelChecksums(ev.Model.Name)
		}
	}
	if !clientFailed && !t.readFailed && t.status == 200 {
		x.p.modelsAfterAnswer(x)
	}
	counts := countsTokens(ev.Path)
	if t.usage.input.known && counts {
		x.inTokens = t.usage.input.n
		ev.Input.Tokens = &x.inTokens
	}
	if t.usage.output.known && counts {
		x.outTokens = t.usage.output.n
		ev.Output.Tokens = &x.outTokens
	}
	if t.usage.hasAudio {
		x.audioSeconds = t.usage.audioSeconds
		ev.Input.AudioSeconds = &x.audioSeconds
	}
	ev.Status.Code = t.status
	// The stream's end ([DONE], its last typed event) arrived whole before
	// the upstream connection broke or idled out: the answer is complete,
	// as the SDKs read it, and the client gets all of it. The outcome is
	// the answer's; the break is recorded beside it.
	brokeAfterEnd := t.readFailed && t.done && !clientFailed
	ev.Status.AfterEnd = t.afterEnd
	if brokeAfterEnd {
		ev.Status.AfterEnd = "upstream_broke_off"
		if isTimeout(t.readErr) {
			ev.Status.AfterEnd = "upstream_idle_timeout"
		}
	}
	switch {
	case x.gone.Load():
		// The client left while vLLM queued or prefilled the stream; the
		// watch cancelled the upstream request (see watch.go).
		ev.Status.Outcome = audit.OutcomeClientCancelled
		ev.Status.Error = "client_disconnected_before_answer"
	case clientFailed:
		ev.Status.Outcome = audit.OutcomeClientCancelled
		ev.Status.Error = "client_disconnected"
		if isTimeout(err) {
			ev.Status.Error = "client_idle_timeout"
		}
	case t.readFailed && !brokeAfterEnd && isTimeout(t.readErr):
		ev.Status.Outcome = audit.OutcomeUpstreamTimeout
		ev.Status.Error = "upstream_idle_timeout"
	case t.readFailed && !brokeAfterEnd:
		ev.Status.Outcome = audit.OutcomeUpstreamError
		ev.Status.Error = "upstream_broke_off"
	case t.usage.isError:
		ev.Status.Outcome = audit.OutcomeUpstreamError
		ev.Status.UpstreamError = t.usage.errorType
		if t.status < 400 {
			ev.Status.Error = "upstream_error_in_stream"
		}
	case t.status >= 400:
		ev.Status.Outcome = audit.OutcomeUpstreamError
	case t.sse && ev.Stream && !t.done:
		ev.Status.Outcome = audit.OutcomeUpstreamError
		ev.Status.Error = "stream_incomplete"
	default:
		ev.Status.Outcome = audit.OutcomeOK
	}
	switch {
	case brokeAfterEnd:
		x.p.log.Info("the upstream connection broke after the end of the answer", "request_id", ev.RequestID, "after_end", ev.Status.AfterEnd, "err", redactError(t.readErr))
	case clientFailed || t.readFailed:
		cause := err
		if t.readFailed {
			cause = t.readErr
		}
		x.p.log.Info("response not completed", "request_id", ev.RequestID, "reason", ev.Status.Error, "err", redactError(cause))
	}
	return x.p.record(x)
}
