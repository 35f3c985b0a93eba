package fakevllm

import (
	"bufio"
	"net"
	"strconv"
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
	ctx.SetBodyStreamWriter(st.run)
}

func (st *stream) run(w *bufio.Writer) {
	s := st.s
	defer func() {
		s.completionTokens.Add(int64(st.sent))
		if st.timer != nil {
			st.timer.Stop()
		}
	}()
	if !st.wait(st.ttft) {
		return
	}
	if st.kind == kindChat {
		// vLLM opens every chat stream with the assistant role and empty content.
		st.buf = st.appendChunk(st.buf[:0], -1)
		if !st.send(w, st.buf) {
			return
		}
	}
	for i := 0; ; i++ {
		if i == st.errAfter || (i == st.n && st.errAfter > st.n) {
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
		st.buf = st.appendChunk(st.buf[:0], i)
		if !st.send(w, st.buf) {
			return
		}
		st.sent++
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
