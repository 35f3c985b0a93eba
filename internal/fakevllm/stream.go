package fakevllm

import (
	"bufio"
	"errors"
	"io"
	"net"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/valyala/fasthttp"
)

// stream is one SSE answer; its run method is the body stream writer, which
// fasthttp runs in its own goroutine while the handler has already returned.
// It must therefore hold everything it needs and never touch the RequestCtx.
type stream struct {
	s            *Server
	kind         kind
	created      int64
	start        time.Time
	n            int // content tokens to generate
	finish       string
	prompt       int
	includeUsage bool
	continuous   bool
	ttft, itl    time.Duration
	errAfter     int // -1: none
	errFormat    errFormat
	stallAfter   int // -1: none
	stallFor     time.Duration
	benchTS      bool
	modelJSON    []byte // the chunks' "model" member
	extras       genExtras
	// format writes the events of the Responses and Messages APIs; nil
	// means chat or completion chunks, chosen by kind.
	format  sseFormat
	dropped atomic.Bool // the format's failure ends the body without its last chunk

	conn  net.Conn    // set only for stalls, which end by closing it
	timer *time.Timer // reused for every pause of this stream
	id    []byte      // response id when ids carry no timestamps
	sent  int         // content tokens written so far
	buf   []byte
}

func (s *Server) startStream(ctx *fasthttp.RequestCtx, st *stream) {
	s.streamsStarted.Add(1)
	if !st.benchTS {
		st.id = appendID(nil, st.kind, false)
	}
	if st.stallAfter >= 0 {
		st.conn = ctx.Conn()
		if st.stallFor <= 0 {
			st.stallFor = defaultStall
		}
	}
	st.buf = make([]byte, 0, 512)
	ctx.SetContentType("text/event-stream; charset=utf-8")
	// Uvicorn sends the headers as soon as the response starts, before the
	// first token exists; a proxy sees a silent 200 during prefill.
	ctx.Response.ImmediateHeaderFlush = true
	if st.format != nil && st.errAfter >= 0 {
		// The format may have to end the body without its last chunk.
		ctx.SetBodyStream(&droppableBody{ReadCloser: fasthttp.NewStreamReader(st.run), st: st}, -1)
		return
	}
	ctx.SetBodyStreamWriter(st.run)
}

// errDropped ends a response body without its last chunk: fasthttp stops
// writing the body at a read error other than io.EOF and closes the
// connection.
var errDropped = errors.New("fakevllm: stream dropped to simulate a failed vLLM generator")

// droppableBody is the body of a stream whose writer may drop the
// connection. The writer cannot close it itself: what it wrote is still in
// fasthttp's pipe, on its way to the peer. So the writer only marks the
// stream dropped and returns; the body is read to its end, and the end is
// turned into errDropped, after every byte before it was sent.
type droppableBody struct {
	io.ReadCloser
	st *stream
}

func (b *droppableBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if err == io.EOF && b.st.dropped.Load() {
		err = errDropped
	}
	return n, err
}

func (st *stream) run(w *bufio.Writer) {
	s := st.s
	defer func() {
		s.completionTokens.Add(int64(st.sent))
		if st.timer != nil {
			st.timer.Stop()
		}
	}()
	if st.format != nil {
		if st.buf = st.format.start(st, st.buf[:0]); len(st.buf) > 0 && !st.send(w, st.buf) {
			return
		}
	}
	if !st.wait(st.ttft) {
		return
	}
	if st.format != nil {
		if st.buf = st.format.open(st, st.buf[:0]); len(st.buf) > 0 && !st.send(w, st.buf) {
			return
		}
	} else if st.kind == kindChat {
		// vLLM opens every chat stream with the assistant role and empty content.
		st.buf = st.appendChunk(st.buf[:0], -1)
		if !st.send(w, st.buf) {
			return
		}
	}
	for i := 0; ; i++ {
		if i == st.errAfter || (i == st.n && st.errAfter > st.n) {
			if st.format != nil {
				st.failFormat(w)
				return
			}
			st.buf = st.appendError(st.buf[:0])
			if st.send(w, st.buf) && st.send(w, doneEvent) {
				s.streamsCompleted.Add(1)
				s.recordE2E(st.start)
			}
			return
		}
		if i == st.stallAfter || (i == st.n && st.stallAfter > st.n) {
			// Hold the connection silent, then drop it without the final
			// chunk, the way a wedged engine or a killed pod ends a stream.
			s.sleep(st.stallFor)
			st.conn.Close()
			return
		}
		if i == st.n {
			break
		}
		if i > 0 && !st.wait(st.itl) {
			return
		}
		if st.format != nil {
			st.buf = st.format.token(st, st.buf[:0], i)
		} else {
			st.buf = st.appendChunk(st.buf[:0], i)
		}
		if !st.send(w, st.buf) {
			return
		}
		st.sent++
	}
	if st.format != nil {
		st.buf = st.format.close(st, st.buf[:0])
		if st.send(w, st.buf) {
			s.streamsCompleted.Add(1)
			s.recordE2E(st.start)
		}
		return
	}
	if st.includeUsage {
		st.buf = st.appendUsageChunk(st.buf[:0])
		if !st.send(w, st.buf) {
			return
		}
	}
	if !st.send(w, doneEvent) {
		return
	}
	s.streamsCompleted.Add(1)
	s.recordE2E(st.start)
}

// sseFormat writes the events of an API whose stream is not made of chat or
// completion chunks (Responses, Messages) around the shared token loop of
// run, so pacing, token counts and the X-Fake-* hooks behave the same for
// every API. Each method appends to b and returns it.
type sseFormat interface {
	// start appends the events vLLM sends as soon as the response starts,
	// before the engine has produced anything (during prefill).
	start(st *stream, b []byte) []byte
	// open appends the events vLLM sends with the engine's first output,
	// before the first token's own events.
	open(st *stream, b []byte) []byte
	// token appends the events that carry output token i.
	token(st *stream, b []byte, i int) []byte
	// close appends everything after the last token, up to the stream's end.
	close(st *stream, b []byte) []byte
	// fail appends the events vLLM sends when generation fails mid-stream
	// after st.sent tokens; ok false means vLLM sends none and the
	// connection is dropped without ending the chunked body.
	fail(st *stream, b []byte) (out []byte, ok bool)
}

// failFormat ends a format's stream the way vLLM ends it on a mid-stream
// engine failure.
func (st *stream) failFormat(w *bufio.Writer) {
	b, ok := st.format.fail(st, st.buf[:0])
	if !ok {
		st.dropped.Store(true)
		return
	}
	st.buf = b
	if st.send(w, st.buf) {
		st.s.streamsCompleted.Add(1)
		st.s.recordE2E(st.start)
	}
}

// wait pauses the stream for d, or less if the server is closed; it
// reports whether the full pause passed. One timer serves the whole stream
// rather than one per token.
func (st *stream) wait(d time.Duration) bool {
	if d <= 0 {
		return !st.s.isClosed()
	}
	if st.timer == nil {
		st.timer = time.NewTimer(d)
	} else {
		st.timer.Reset(d)
	}
	select {
	case <-st.timer.C:
		return true
	case <-st.s.done:
		return false
	}
}

// doneEvent ends every stream; it is only ever read.
var doneEvent = []byte("data: [DONE]\n\n")

// send writes one event and flushes it to the peer at once, as uvicorn
// does; a failed write means the peer (or the proxy) closed the connection.
func (st *stream) send(w *bufio.Writer, ev []byte) bool {
	if _, err := w.Write(ev); err != nil {
		st.s.streamsAborted.Add(1)
		return false
	}
	if err := w.Flush(); err != nil {
		st.s.streamsAborted.Add(1)
		return false
	}
	return true
}

func (st *stream) appendHead(b []byte) []byte {
	b = append(b, `data: {"id":"`...)
	if st.benchTS {
		b = appendID(b, st.kind, true)
	} else {
		b = append(b, st.id...)
	}
	if st.kind == kindChat {
		b = append(b, `","object":"chat.completion.chunk","created":`...)
	} else {
		b = append(b, `","object":"text_completion","created":`...)
	}
	b = strconv.AppendInt(b, st.created, 10)
	b = append(b, `,"model":`...)
	return append(b, st.modelJSON...)
}

// appendChunk appends the event for content token i, or for the chat role
// chunk when i is -1. Chat chunks are dumped by vLLM with exclude_unset
// (absent stop_reason and usage until set); completion chunks with
// exclude_unset=False, so they always carry stop_reason and "usage":null.
func (st *stream) appendChunk(b []byte, i int) []byte {
	b = st.appendHead(b)
	last := i == st.n-1
	if st.kind == kindChat {
		b = append(b, `,"choices":[{"index":0,"delta":{`...)
		if i < 0 {
			b = append(b, `"role":"assistant","content":""`...)
		} else {
			b = append(b, `"content":"`...)
			b = append(b, Token(i)...)
			b = append(b, '"')
		}
		b = append(b, `},"logprobs":null,"finish_reason":`...)
		if last {
			b = append(b, '"')
			b = append(b, st.finish...)
			b = append(b, `","stop_reason":null`...)
		} else {
			b = append(b, `null`...)
		}
		if i >= 0 {
			b = st.extras.appendOutputIDs(b, i, i+1)
		}
		b = append(b, "}]"...)
		if st.continuous {
			b = append(b, `,"usage":`...)
			b = appendUsage(b, st.prompt, i+1, false)
		}
		if i < 0 {
			// vLLM sends prompt_token_ids in the first chunk only.
			b = st.extras.appendPromptIDs(b)
		}
		return append(b, "}\n\n"...)
	}
	b = append(b, `,"choices":[{"index":0,"text":"`...)
	b = append(b, Token(i)...)
	b = append(b, `","logprobs":null,"finish_reason":`...)
	if last {
		b = append(b, '"')
		b = append(b, st.finish...)
		b = append(b, '"')
	} else {
		b = append(b, "null"...)
	}
	b = append(b, `,"stop_reason":null`...)
	if st.extras.returnTokenIDs {
		// Completion chunks carry both members in the choice; the prompt's
		// ids only in the first one (vLLM's has_echoed bookkeeping).
		if i == 0 {
			b = st.extras.appendPromptIDs(b)
		} else {
			b = append(b, `,"prompt_token_ids":null`...)
		}
		b = st.extras.appendOutputIDs(b, i, i+1)
	}
	b = append(b, `}],"usage":`...)
	if st.continuous {
		b = appendUsage(b, st.prompt, i+1, true)
	} else {
		b = append(b, "null"...)
	}
	return append(b, "}\n\n"...)
}

// appendUsageChunk appends the include_usage chunk vLLM sends just before
// data: [DONE]: no choices, the totals of what was sent.
func (st *stream) appendUsageChunk(b []byte) []byte {
	b = st.appendHead(b)
	b = append(b, `,"choices":[],"usage":`...)
	b = appendUsage(b, st.prompt, st.sent, false)
	return append(b, "}\n\n"...)
}

func (st *stream) appendError(b []byte) []byte {
	msg := "Simulated engine failure after " + strconv.Itoa(st.sent) + " tokens (" + HeaderMidstreamError + ")."
	b = append(b, "data: "...)
	switch st.errFormat {
	case errFlat:
		b = append(b, `{"object":"error","message":`...)
		b = appendJSONString(b, msg)
		b = append(b, `,"type":"InternalServerError","param":null,"code":500}`...)
	case errSpaced:
		b = append(b, `{"error": {"message": `...)
		b = appendJSONString(b, msg)
		b = append(b, `, "type": "InternalServerError", "param": null, "code": 500}}`...)
	default:
		b = append(b, `{"error":{"message":`...)
		b = appendJSONString(b, msg)
		b = append(b, `,"type":"InternalServerError","param":null,"code":500}}`...)
	}
	return append(b, "\n\n"...)
}
