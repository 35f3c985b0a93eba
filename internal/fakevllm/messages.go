package fakevllm

// The Anthropic Messages API, POST /v1/messages, as vLLM serves it: vLLM
// converts the request into a chat completion request (streamed with
// include_usage and continuous_usage_stats forced on) and converts the chat
// answer back (docs/vllm-wire-format.md, "Anthropic Messages API", has each
// rule with the vLLM file it was read in):
//
//   - The request is AnthropicMessagesRequest: model (a non-empty string),
//     messages and max_tokens (a positive integer) are required; system is
//     optional; stream is a lax bool.
//   - A non-streamed answer is the message dumped with exclude_none: id (the
//     chat completion's "chatcmpl-" id), type, role, content, model,
//     stop_reason ("end_turn", or "max_tokens" when max_tokens cut it) and
//     usage {input_tokens, output_tokens}; stop_sequence is left out when null.
//   - A stream is "event: <type>" then "data: {...}": message_start (usage
//     with the input tokens and output_tokens 0), content_block_start, one
//     content_block_delta per token, content_block_stop, message_delta
//     (delta.stop_reason and the final usage), message_stop. No data: [DONE]
//     follows (releases before the converter moved to serving.py sent one;
//     X-Fake-Messages-Done brings it back).
//   - A mid-stream engine failure becomes an "error" event of type
//     internal_error after the blocks already open, and the stream ends.
//   - Errors from vLLM's handler (an unknown model, a context overflow) are
//     Anthropic's {"type":"error","error":{"type","message"}} with vLLM's error
//     type; a body the request model refuses gets FastAPI's validation
//     handler, which writes vLLM's OpenAI ErrorResponse even on this route.

import (
	"strconv"
	"time"

	"github.com/valyala/fasthttp"
	"github.com/valyala/fastjson"
)

// HeaderMessagesDone: "1" ends Messages streams (and their error events) with
// data: [DONE], as vLLM releases up to the serving_messages.py converter did.
const HeaderMessagesDone = "X-Fake-Messages-Done"

// anthropicBlockTypes are the content block types AnthropicContentBlock
// accepts.
var anthropicBlockTypes = map[string]bool{
	"text": true, "image": true, "tool_use": true, "tool_result": true,
	"tool_reference": true, "thinking": true, "redacted_thinking": true,
}

func (s *Server) messages(ctx *fasthttp.RequestCtx, h *hooks) {
	start := time.Now()
	p := parserPool.Get()
	r, invalid, refused := s.parseMessagesRequest(p, ctx.PostBody())
	parserPool.Put(p)
	if invalid != nil {
		s.writeError(ctx, invalid.status, invalid.typ, invalid.msg)
		return
	}
	if refused != nil {
		writeAnthropicError(ctx, refused.status, refused.typ, refused.msg)
		return
	}
	n, finish := s.plan(r)
	ttft, itl := h.pacing(s.cfg)
	s.promptTokens.Add(int64(r.promptTokens))
	mf := &messagesFormat{id: appendID(nil, kindChat, false), done: h.messagesDone}
	if r.stream {
		s.startStream(ctx, &stream{
			s: s, created: start.Unix(), start: start,
			n: n, finish: finish, prompt: r.promptTokens,
			ttft: ttft, itl: itl,
			errAfter: h.midstreamErr, stallAfter: h.stallAfter, stallFor: h.delay,
			format: mf,
		})
		return
	}
	if ttft > 0 || itl > 0 {
		if !s.sleep(ttft + time.Duration(n)*itl) {
			ctx.SetConnectionClose()
			writeAnthropicError(ctx, fasthttp.StatusServiceUnavailable, "ServiceUnavailableError", "server is shutting down")
			return
		}
	}
	ctx.SetContentType("application/json")
	b := ctx.Response.SwapBody(nil)[:0]
	b = append(b, `{"id":"`...)
	b = append(b, mf.id...)
	b = append(b, `","type":"message","role":"assistant","content":[{"type":"text","text":"`...)
	b = appendTokens(b, n)
	b = append(b, `"}],"model":`...)
	b = append(b, s.modelJSON...)
	b = append(b, `,"stop_reason":"`...)
	b = append(b, stopReason(finish)...)
	b = append(b, `","usage":`...)
	b = appendAnthropicUsage(b, r.promptTokens, n)
	ctx.Response.SwapBody(append(b, '}'))
	s.completionTokens.Add(int64(n))
	s.recordE2E(start)
}

// parseMessagesRequest validates the members AnthropicMessagesRequest
// declares that the fake acts on (invalid: FastAPI's validation handler
// answers), then checks the model and the context (refused: vLLM's handler
// answers, in Anthropic's error shape).
func (s *Server) parseMessagesRequest(p *fastjson.Parser, body []byte) (r genRequest, invalid, refused *apiError) {
	v, invalid := parseObject(p, body)
	if invalid != nil {
		return r, invalid, nil
	}
	// model is str (not None), required, and a validator refuses "".
	if m := member(v, "model"); m != nil && m.Type() == fastjson.TypeNull {
		return r, badRequest("Input should be a valid string: body.model"), nil
	}
	name, given, invalid := modelName(v, true)
	if invalid != nil {
		return r, invalid, nil
	}
	if len(name) == 0 {
		return r, badRequest("Value error, Model is required: body.model"), nil
	}
	if r.promptTokens, invalid = anthropicMessagesWords(member(v, "messages")); invalid != nil {
		return r, invalid, nil
	}
	if sys := member(v, "system"); sys != nil && sys.Type() != fastjson.TypeNull {
		n, aerr := anthropicContentWords(sys, "body.system")
		if aerr != nil {
			return r, aerr, nil
		}
		r.promptTokens += n
	}
	r.promptTokens = max(r.promptTokens, 1)
	switch mt := member(v, "max_tokens"); {
	case mt == nil:
		return r, badRequest("Field required: body.max_tokens"), nil
	default:
		n, err := mt.Int()
		if err != nil {
			return r, badRequest("Input should be a valid integer: body.max_tokens"), nil
		}
		if n <= 0 {
			return r, badRequest("Value error, max_tokens must be positive: body.max_tokens"), nil
		}
		r.maxTokens = n
	}
	if r.stream, invalid = streamFlag(v); invalid != nil {
		return r, invalid, nil
	}
	if given {
		if refused = s.checkModel(string(name)); refused != nil {
			return r, nil, refused
		}
	}
	// vLLM passes max_tokens on as both max_tokens and max_completion_tokens;
	// the chat rules name the latter.
	return r, nil, s.checkContext(r, "max_completion_tokens")
}

// anthropicMessagesWords counts the words of every message's content.
func anthropicMessagesWords(msgs *fastjson.Value) (int, *apiError) {
	if msgs == nil {
		return 0, badRequest("Field required: body.messages")
	}
	arr, err := msgs.Array()
	if err != nil {
		return 0, badRequest("Input should be a valid list: body.messages")
	}
	n := 0
	for i, m := range arr {
		if m.Type() != fastjson.TypeObject {
			return 0, badRequest("Input should be a valid dictionary or instance of AnthropicMessage: body.messages.%d", i)
		}
		switch role := member(m, "role"); {
		case role == nil:
			return 0, badRequest("Field required: body.messages.%d.role", i)
		default:
			// vLLM maps the roles "ctx" and "msg" (sent by some Claude Code
			// releases) to "user" before validating.
			switch string(role.GetStringBytes()) {
			case "user", "assistant", "system", "ctx", "msg":
			default:
				return 0, badRequest("Input should be 'user', 'assistant' or 'system': body.messages.%d.role", i)
			}
		}
		c := member(m, "content")
		if c == nil {
			return 0, badRequest("Field required: body.messages.%d.content", i)
		}
		words, aerr := anthropicContentWords(c, "body.messages."+strconv.Itoa(i)+".content")
		if aerr != nil {
			return 0, aerr
		}
		n += words
	}
	return n, nil
}

// anthropicContentWords counts the words of a content or system value: a
// string, or a list of blocks whose text blocks count.
func anthropicContentWords(c *fastjson.Value, loc string) (int, *apiError) {
	switch c.Type() {
	case fastjson.TypeString:
		b, _ := c.StringBytes()
		return CountWords(b), nil
	case fastjson.TypeArray:
	default:
		return 0, badRequest("Input should be a valid string or list: %s", loc)
	}
	blocks, _ := c.Array()
	n := 0
	for j, blk := range blocks {
		if blk.Type() != fastjson.TypeObject {
			return 0, badRequest("Input should be a valid dictionary or instance of AnthropicContentBlock: %s.%d", loc, j)
		}
		t := member(blk, "type")
		if t == nil {
			return 0, badRequest("Field required: %s.%d.type", loc, j)
		}
		typ := string(t.GetStringBytes())
		if t.Type() != fastjson.TypeString || !anthropicBlockTypes[typ] {
			return 0, badRequest("Input should be a valid content block type: %s.%d.type", loc, j)
		}
		if typ != "text" {
			continue
		}
		if text := member(blk, "text"); text != nil && text.Type() == fastjson.TypeString {
			b, _ := text.StringBytes()
			n += CountWords(b)
		}
	}
	return n, nil
}

// writeAnthropicError writes vLLM's AnthropicErrorResponse.
func writeAnthropicError(ctx *fasthttp.RequestCtx, status int, typ, msg string) {
	ctx.SetStatusCode(status)
	ctx.SetContentType("application/json")
	b := ctx.Response.SwapBody(nil)[:0]
	b = appendAnthropicError(b, typ, msg)
	ctx.Response.SwapBody(b)
}

func appendAnthropicError(b []byte, typ, msg string) []byte {
	b = append(b, `{"type":"error","error":{"type":`...)
	b = appendJSONString(b, typ)
	b = append(b, `,"message":`...)
	b = appendJSONString(b, msg)
	return append(b, "}}"...)
}

// stopReason maps a chat finish reason to Anthropic's stop_reason as vLLM's
// stop_reason_map does.
func stopReason(finish string) string {
	if finish == "length" {
		return "max_tokens"
	}
	return "end_turn"
}

// appendAnthropicUsage appends AnthropicUsage as vLLM fills it without
// prompt-token details: the cache members stay unset and are left out.
func appendAnthropicUsage(b []byte, input, output int) []byte {
	b = append(b, `{"input_tokens":`...)
	b = strconv.AppendInt(b, int64(input), 10)
	b = append(b, `,"output_tokens":`...)
	b = strconv.AppendInt(b, int64(output), 10)
	return append(b, '}')
}

// messagesFormat is one streamed Messages answer.
type messagesFormat struct {
	id   []byte // the chat completion id vLLM reuses
	done bool   // end with data: [DONE] (HeaderMessagesDone)
}

// Each event is an AnthropicStreamEvent dumped with exclude_unset, so its
// members come in the class's order: type, message, delta, content_block,
// index, error, usage.

// start sends nothing: message_start is made from the chat stream's first
// chunk, which vLLM sends with the engine's first output.
func (mf *messagesFormat) start(_ *stream, b []byte) []byte { return b }

func (mf *messagesFormat) open(st *stream, b []byte) []byte {
	b = appendEventHead(b, "message_start")
	b = append(b, `{"type":"message_start","message":{"id":"`...)
	b = append(b, mf.id...)
	b = append(b, `","type":"message","role":"assistant","content":[],"model":`...)
	b = append(b, st.s.modelJSON...)
	b = append(b, `,"stop_reason":null,"stop_sequence":null,"usage":`...)
	b = appendAnthropicUsage(b, st.prompt, 0)
	return append(b, "}}\n\n"...)
}

func (mf *messagesFormat) token(st *stream, b []byte, i int) []byte {
	if i == 0 {
		b = appendEventHead(b, "content_block_start")
		b = append(b, `{"type":"content_block_start","content_block":{"type":"text","text":""},"index":0}`+"\n\n"...)
	}
	b = appendEventHead(b, "content_block_delta")
	b = append(b, `{"type":"content_block_delta","delta":{"type":"text_delta","text":"`...)
	b = append(b, Token(i)...)
	return append(b, `"},"index":0}`+"\n\n"...)
}

func (mf *messagesFormat) close(st *stream, b []byte) []byte {
	if st.sent > 0 {
		b = appendEventHead(b, "content_block_stop")
		b = append(b, `{"type":"content_block_stop","index":0}`+"\n\n"...)
	}
	b = appendEventHead(b, "message_delta")
	b = append(b, `{"type":"message_delta","delta":{"stop_reason":"`...)
	b = append(b, stopReason(st.finish)...)
	b = append(b, `"},"usage":`...)
	b = appendAnthropicUsage(b, st.prompt, st.sent)
	b = append(b, "}\n\n"...)
	b = appendEventHead(b, "message_stop")
	b = append(b, `{"type":"message_stop"}`+"\n\n"...)
	if mf.done {
		b = append(b, doneEvent...)
	}
	return b
}

// fail writes the error event vLLM's converter sends when the chat stream
// under it yields an error chunk: vLLM's message is the validation error of
// that chunk; the fake says what happened instead.
func (mf *messagesFormat) fail(st *stream, b []byte) ([]byte, bool) {
	b = appendEventHead(b, "error")
	b = appendAnthropicError(b, "internal_error",
		"Simulated engine failure after "+strconv.Itoa(st.sent)+" tokens ("+HeaderMidstreamError+").")
	b = append(b, "\n\n"...)
	if mf.done {
		b = append(b, doneEvent...)
	}
	return b, true
}
