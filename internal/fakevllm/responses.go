package fakevllm

// The OpenAI Responses API, POST /v1/responses, as vLLM serves it for a model
// without reasoning or tool parsers (docs/vllm-wire-format.md, "Responses
// API", has each rule with the vLLM file it was read in):
//
//   - The request is ResponsesRequest: input (a string or a list of items)
//     is required, model is optional, max_output_tokens caps generation,
//     stream is a lax bool. ResponsesRequest has no stream_options: vLLM
//     logs it as an ignored extra field whatever its value, so the fake
//     never refuses it.
//   - A non-streamed answer is the whole ResponsesResponse with every member,
//     nulls included; usage sits after status, and status "incomplete" with
//     incomplete_details {"reason":"max_output_tokens"} reports a cut.
//   - A stream is typed events, "event: <type>" then "data: {...}", with a
//     sequence_number from 0: response.created, response.in_progress,
//     response.output_item.added, response.content_part.added, one
//     response.output_text.delta per token, response.output_text.done,
//     response.content_part.done, response.output_item.done and
//     response.completed, whose response carries status and usage. No
//     data: [DONE] follows, and a cut answer still ends with
//     response.completed (its status says "incomplete").
//   - A mid-stream engine failure sends no event: vLLM's generator raises
//     and the connection is dropped without the chunked body's end.
//   - Errors before the answer are vLLM's OpenAI ErrorResponse.
//
// Every event and body member is in the order pydantic writes it (the
// declaring class's field order, sequence_number and type last in the
// openai-python event types).

import (
	"strconv"
	"time"

	"github.com/valyala/fasthttp"
	"github.com/valyala/fastjson"
)

// responsesRequest is what the fake acts on in a Responses API request.
type responsesRequest struct {
	genRequest
	// instructions is the request's instructions as a JSON string literal,
	// or nil when absent or null; vLLM echoes it in every response object.
	instructions []byte
}

func (s *Server) responses(ctx *fasthttp.RequestCtx, h *hooks) {
	start := time.Now()
	p := parserPool.Get()
	r, aerr := s.parseResponsesRequest(p, ctx.PostBody())
	parserPool.Put(p)
	if aerr != nil {
		s.writeError(ctx, aerr.status, aerr.typ, aerr.msg)
		return
	}
	n, finish := s.plan(r.genRequest)
	ttft, itl := h.pacing(s.cfg)
	s.promptTokens.Add(int64(r.promptTokens))
	rf := &responsesFormat{
		id:           appendResponseID(nil),
		created:      start.Unix(),
		instructions: r.instructions,
		// vLLM reports the limit it generated under: the request's, or all
		// the room the context leaves.
		maxOutput: s.cfg.MaxModelLen - r.promptTokens,
	}
	if r.maxTokens > 0 {
		rf.maxOutput = r.maxTokens
	}
	if r.stream {
		s.startStream(ctx, &stream{
			s: s, created: start.Unix(), start: start,
			n: n, finish: finish, prompt: r.promptTokens,
			ttft: ttft, itl: itl,
			errAfter: h.midstreamErr, stallAfter: h.stallAfter, stallFor: h.delay,
			format: rf,
		})
		return
	}
	if ttft > 0 || itl > 0 {
		if !s.sleep(ttft + time.Duration(n)*itl) {
			ctx.SetConnectionClose()
			s.writeError(ctx, fasthttp.StatusServiceUnavailable, "ServiceUnavailableError", "server is shutting down")
			return
		}
	}
	ctx.SetContentType("application/json")
	b := ctx.Response.SwapBody(nil)[:0]
	b = rf.appendResponse(b, s, r.promptTokens, n, finish, true)
	ctx.Response.SwapBody(b)
	s.completionTokens.Add(int64(n))
	s.recordE2E(start)
}

// parseResponsesRequest validates the members vLLM's ResponsesRequest
// declares that the fake acts on, then checks the model and the context, in
// the order vLLM does: request validation, then the handler.
func (s *Server) parseResponsesRequest(p *fastjson.Parser, body []byte) (responsesRequest, *apiError) {
	var r responsesRequest
	v, aerr := parseObject(p, body)
	if aerr != nil {
		return r, aerr
	}
	name, given, aerr := modelName(v, s.cfg.RequireModel)
	if aerr != nil {
		return r, aerr
	}
	if r.promptTokens, aerr = responsesInputWords(member(v, "input")); aerr != nil {
		return r, aerr
	}
	switch in := member(v, "instructions"); {
	case in == nil || in.Type() == fastjson.TypeNull:
	case in.Type() == fastjson.TypeString:
		text, _ := in.StringBytes()
		r.promptTokens += CountWords(text)
		r.instructions = appendJSONString(nil, string(text))
	default:
		return r, badRequest("Input should be a valid string: body.instructions")
	}
	r.promptTokens = max(r.promptTokens, 1)
	if mt := member(v, "max_output_tokens"); mt != nil && mt.Type() != fastjson.TypeNull {
		n, err := mt.Int()
		if err != nil {
			return r, badRequest("Input should be a valid integer: body.max_output_tokens")
		}
		if n < 1 {
			// The limit reaches SamplingParams as max_tokens, which refuses it.
			return r, badRequest("max_tokens must be at least 1, got %d.", n)
		}
		r.maxTokens = n
	}
	if r.stream, aerr = streamFlag(v); aerr != nil {
		return r, aerr
	}
	if given {
		if aerr = s.checkModel(string(name)); aerr != nil {
			return r, aerr
		}
	}
	return r, s.checkContext(r.genRequest, "max_output_tokens")
}

// responsesInputWords counts the words of a Responses input: a string, or a
// list of items whose content is a string or a list of parts with text.
// Items without content (function calls and their outputs) count nothing.
func responsesInputWords(in *fastjson.Value) (int, *apiError) {
	if in == nil {
		return 0, badRequest("Field required: body.input")
	}
	switch in.Type() {
	case fastjson.TypeString:
		b, _ := in.StringBytes()
		return CountWords(b), nil
	case fastjson.TypeArray:
	default:
		return 0, badRequest("Input should be a valid string or list: body.input")
	}
	items, _ := in.Array()
	n := 0
	for i, item := range items {
		if item.Type() != fastjson.TypeObject {
			return 0, badRequest("Input should be a valid dictionary: body.input.%d", i)
		}
		c := member(item, "content")
		if c == nil {
			continue
		}
		switch c.Type() {
		case fastjson.TypeString:
			b, _ := c.StringBytes()
			n += CountWords(b)
		case fastjson.TypeArray:
			parts, _ := c.Array()
			for j, part := range parts {
				if part.Type() != fastjson.TypeObject {
					return 0, badRequest("Input should be a valid dictionary: body.input.%d.content.%d", i, j)
				}
				if t := member(part, "text"); t != nil && t.Type() == fastjson.TypeString {
					b, _ := t.StringBytes()
					n += CountWords(b)
				}
			}
		default:
			return 0, badRequest("Input should be a valid string or list: body.input.%d.content", i)
		}
	}
	return n, nil
}

// appendResponseID appends vLLM's default request_id, which becomes the
// response id: "resp_" and a uuid4 hex.
func appendResponseID(b []byte) []byte {
	return appendHexID(append(b, "resp_"...))
}

// responsesFormat is one Responses answer: the members its response object
// repeats, and the stream's event counter.
type responsesFormat struct {
	id           []byte
	created      int64
	instructions []byte
	maxOutput    int
	itemID       []byte // the streamed message item's id, a bare uuid4 hex
	seq          int    // sequence_number of the next event
}

// appendResponse appends vLLM's ResponsesResponse. Before the answer exists
// (final false) it is the in_progress object that response.created and
// response.in_progress carry: no output, usage null.
func (rf *responsesFormat) appendResponse(b []byte, s *Server, prompt, n int, finish string, final bool) []byte {
	b = append(b, `{"id":"`...)
	b = append(b, rf.id...)
	b = append(b, `","created_at":`...)
	b = strconv.AppendInt(b, rf.created, 10)
	b = append(b, `,"incomplete_details":`...)
	status := "in_progress"
	if final {
		status = "completed"
		if finish == "length" {
			status = "incomplete"
		}
	}
	if status == "incomplete" {
		b = append(b, `{"reason":"max_output_tokens"}`...)
	} else {
		b = append(b, "null"...)
	}
	b = append(b, `,"instructions":`...)
	if rf.instructions != nil {
		b = append(b, rf.instructions...)
	} else {
		b = append(b, "null"...)
	}
	b = append(b, `,"metadata":null,"model":`...)
	b = append(b, s.modelJSON...)
	b = append(b, `,"object":"response","output":[`...)
	if final {
		// The final output is rebuilt from the whole text, under a new id.
		b = append(b, `{"id":"msg_`...)
		b = appendHexID(b)
		b = append(b, `","content":[`...)
		b = appendOutputText(b, n, "null")
		b = append(b, `],"role":"assistant","status":"completed","type":"message","phase":null}`...)
	}
	// With no tools, vLLM turns tool_choice "auto" into "none"; sampling
	// parameters are SamplingParams' defaults.
	b = append(b, `],"parallel_tool_calls":true,"temperature":1.0,"tool_choice":"none","tools":[],"top_p":1.0,`+
		`"background":false,"max_output_tokens":`...)
	b = strconv.AppendInt(b, int64(rf.maxOutput), 10)
	b = append(b, `,"max_tool_calls":null,"previous_response_id":null,"prompt":null,"reasoning":null,`+
		`"service_tier":"auto","status":"`...)
	b = append(b, status...)
	b = append(b, `","text":null,"top_logprobs":null,"truncation":"disabled","usage":`...)
	if final {
		b = appendResponseUsage(b, prompt, n)
	} else {
		b = append(b, "null"...)
	}
	return append(b, `,"user":null,"presence_penalty":0.0,"frequency_penalty":0.0,"kv_transfer_params":null,`+
		`"ec_transfer_params":null,"input_messages":null,"output_messages":null}`...)
}

// appendOutputText appends an output_text part holding the first n tokens;
// logprobs is the literal vLLM puts there ("[]" or "null").
func appendOutputText(b []byte, n int, logprobs string) []byte {
	b = append(b, `{"annotations":[],"text":"`...)
	b = appendTokens(b, n)
	b = append(b, `","type":"output_text","logprobs":`...)
	b = append(b, logprobs...)
	return append(b, '}')
}

// appendResponseUsage appends vLLM's ResponseUsage. Without prefix caching,
// reasoning or tools the details are zeros, and the per-turn lists stay
// empty: vLLM does not fill them for a plain model.
func appendResponseUsage(b []byte, prompt, completion int) []byte {
	b = append(b, `{"input_tokens":`...)
	b = strconv.AppendInt(b, int64(prompt), 10)
	b = append(b, `,"input_tokens_details":{"cached_tokens":0,"input_tokens_per_turn":[],"cached_tokens_per_turn":[]},"output_tokens":`...)
	b = strconv.AppendInt(b, int64(completion), 10)
	b = append(b, `,"output_tokens_details":{"reasoning_tokens":0,"tool_output_tokens":0,"output_tokens_per_turn":[],`+
		`"tool_output_tokens_per_turn":[]},"total_tokens":`...)
	b = strconv.AppendInt(b, int64(prompt+completion), 10)
	return append(b, '}')
}

// appendEventHead starts an SSE event of type typ.
func appendEventHead(b []byte, typ string) []byte {
	b = append(b, "event: "...)
	b = append(b, typ...)
	return append(b, "\ndata: "...)
}

// appendTail ends a Responses event: its sequence_number and type, which
// most openai-python event classes declare last.
func (rf *responsesFormat) appendTail(b []byte, typ string) []byte {
	b = append(b, `,"sequence_number":`...)
	b = strconv.AppendInt(b, int64(rf.seq), 10)
	rf.seq++
	b = append(b, `,"type":"`...)
	b = append(b, typ...)
	return append(b, "\"}\n\n"...)
}

// start sends response.created and response.in_progress at once: vLLM
// yields them before it waits for the engine.
func (rf *responsesFormat) start(st *stream, b []byte) []byte {
	for _, typ := range [...]string{"response.created", "response.in_progress"} {
		b = appendEventHead(b, typ)
		b = append(b, `{"response":`...)
		b = rf.appendResponse(b, st.s, st.prompt, 0, "", false)
		b = rf.appendTail(b, typ)
	}
	return b
}

func (rf *responsesFormat) open(_ *stream, b []byte) []byte { return b }

// appendItemID appends the item_id member of the streamed message's events.
func (rf *responsesFormat) appendItemID(b []byte) []byte {
	b = append(b, `"item_id":"`...)
	b = append(b, rf.itemID...)
	return append(b, '"')
}

func (rf *responsesFormat) token(st *stream, b []byte, i int) []byte {
	if i == 0 {
		// vLLM opens the message item at the first non-empty text.
		rf.itemID = appendHexID(rf.itemID[:0])
		b = appendEventHead(b, "response.output_item.added")
		b = append(b, `{"item":{"id":"`...)
		b = append(b, rf.itemID...)
		b = append(b, `","content":[],"role":"assistant","status":"in_progress","type":"message","phase":null},"output_index":0`...)
		b = rf.appendTail(b, "response.output_item.added")

		b = appendEventHead(b, "response.content_part.added")
		b = append(b, `{"content_index":0,`...)
		b = rf.appendItemID(b)
		b = append(b, `,"output_index":0,"part":`...)
		b = appendOutputText(b, 0, "[]")
		b = rf.appendTail(b, "response.content_part.added")
	}
	b = appendEventHead(b, "response.output_text.delta")
	b = append(b, `{"content_index":0,"delta":"`...)
	b = append(b, Token(i)...)
	b = append(b, `",`...)
	b = rf.appendItemID(b)
	b = append(b, `,"logprobs":[],"output_index":0`...)
	return rf.appendTail(b, "response.output_text.delta")
}

func (rf *responsesFormat) close(st *stream, b []byte) []byte {
	if st.sent > 0 {
		b = appendEventHead(b, "response.output_text.done")
		b = append(b, `{"content_index":0,`...)
		b = rf.appendItemID(b)
		// ResponseTextDoneEvent declares text between sequence_number and type.
		b = append(b, `,"logprobs":[],"output_index":0,"sequence_number":`...)
		b = strconv.AppendInt(b, int64(rf.seq), 10)
		rf.seq++
		b = append(b, `,"text":"`...)
		b = appendTokens(b, st.sent)
		b = append(b, `","type":"response.output_text.done"}`+"\n\n"...)

		b = appendEventHead(b, "response.content_part.done")
		b = append(b, `{"content_index":0,`...)
		b = rf.appendItemID(b)
		b = append(b, `,"output_index":0,"part":`...)
		b = appendOutputText(b, st.sent, "null")
		b = rf.appendTail(b, "response.content_part.done")

		// vLLM builds this item with an extra summary member, which pydantic
		// keeps (openai-python models allow extras) and writes last.
		b = appendEventHead(b, "response.output_item.done")
		b = append(b, `{"item":{"id":"`...)
		b = append(b, rf.itemID...)
		b = append(b, `","content":[`...)
		b = appendOutputText(b, st.sent, "null")
		b = append(b, `],"role":"assistant","status":"completed","type":"message","phase":null,"summary":[]},"output_index":0`...)
		b = rf.appendTail(b, "response.output_item.done")
	}
	b = appendEventHead(b, "response.completed")
	b = append(b, `{"response":`...)
	b = rf.appendResponse(b, st.s, st.prompt, st.sent, st.finish, true)
	return rf.appendTail(b, "response.completed")
}

// fail sends nothing: vLLM's Responses generator raises on an engine error
// (it cannot turn the error into a stream event), and the server drops the
// connection mid-body.
func (rf *responsesFormat) fail(*stream, []byte) ([]byte, bool) { return nil, false }
