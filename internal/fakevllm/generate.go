package fakevllm

import (
	"bytes"
	"fmt"
	"hash/fnv"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/valyala/fasthttp"
	"github.com/valyala/fastjson"
)

type kind uint8

const (
	kindChat kind = iota
	kindCompletion
)

// errFormat selects how a mid-stream error event is written.
type errFormat uint8

const (
	errNested errFormat = iota // {"error":{...}}, current vLLM
	errFlat                    // {"object":"error",...}, older vLLM
	errSpaced                  // nested, json.dumps separators
)

// hooks are the per-request test behaviours chosen by X-Fake-* headers.
type hooks struct {
	midstreamErr int // content chunks before the error event; -1: none
	errFormat    errFormat
	delay        time.Duration
	stallAfter   int // content chunks before the stall; -1: none
	benchTS      bool
	ttft, itl    time.Duration // -1: use Config
	messagesDone bool          // Messages streams end with data: [DONE], as older vLLM releases did
}

// pacing returns the delays before the first token and between tokens for
// this request: the X-Fake-TTFT and X-Fake-ITL overrides, else cfg's.
func (h *hooks) pacing(cfg Config) (ttft, itl time.Duration) {
	ttft, itl = cfg.TTFT, cfg.InterTokenLatency
	if h.ttft >= 0 {
		ttft = h.ttft
	}
	if h.itl >= 0 {
		itl = h.itl
	}
	return ttft, itl
}

// parseHooks reads the X-Fake-* headers. It walks the headers once instead
// of peeking each name, since Peek normalises its argument on every call and
// this runs for every request of a load test.
func parseHooks(h *fasthttp.RequestHeader) (hooks, error) {
	k := hooks{midstreamErr: -1, stallAfter: -1, ttft: -1, itl: -1}
	const prefix = "X-Fake-"
	for name, v := range h.All() {
		if len(name) <= len(prefix) || !bytes.EqualFold(name[:len(prefix)], []byte(prefix)) {
			continue
		}
		var err error
		switch {
		case bytes.EqualFold(name, []byte(HeaderMidstreamError)):
			k.midstreamErr, err = hookInt(HeaderMidstreamError, v)
		case bytes.EqualFold(name, []byte(HeaderStallAfter)):
			k.stallAfter, err = hookInt(HeaderStallAfter, v)
		case bytes.EqualFold(name, []byte(HeaderDelayMs)):
			var ms int
			ms, err = hookInt(HeaderDelayMs, v)
			k.delay = time.Duration(ms) * time.Millisecond
		case bytes.EqualFold(name, []byte(HeaderErrorFormat)):
			switch string(v) {
			case "", "nested":
				k.errFormat = errNested
			case "flat":
				k.errFormat = errFlat
			case "spaced":
				k.errFormat = errSpaced
			default:
				err = fmt.Errorf("%s: want nested, flat or spaced, got %q", HeaderErrorFormat, v)
			}
		case bytes.EqualFold(name, []byte(HeaderBenchTimestamps)):
			k.benchTS = string(v) == "1"
		case bytes.EqualFold(name, []byte(HeaderTTFT)):
			k.ttft, err = hookDuration(HeaderTTFT, v)
		case bytes.EqualFold(name, []byte(HeaderITL)):
			k.itl, err = hookDuration(HeaderITL, v)
		case bytes.EqualFold(name, []byte(HeaderMessagesDone)):
			k.messagesDone = string(v) == "1"
		}
		if err != nil {
			return k, err
		}
	}
	return k, nil
}

func hookInt(name string, v []byte) (int, error) {
	n, err := fasthttp.ParseUint(v)
	if err != nil {
		return -1, fmt.Errorf("%s: want a non-negative integer, got %q", name, v)
	}
	return n, nil
}

func hookDuration(name string, v []byte) (time.Duration, error) {
	d, err := time.ParseDuration(string(v))
	if err != nil || d < 0 {
		return -1, fmt.Errorf("%s: want a non-negative Go duration such as 5ms, got %q", name, v)
	}
	return d, nil
}

// genRequest is what the fake needs from a chat or completion request.
type genRequest struct {
	promptTokens int
	maxTokens    int // 0: absent
	stream       bool
	includeUsage bool
	continuous   bool
	modelJSON    []byte // the answer's "model" member (tokenids.go)
	extras       genExtras
}

// apiError is a vLLM ErrorResponse to send instead of an answer.
type apiError struct {
	status int
	typ    string
	msg    string
}

func badRequest(format string, args ...any) *apiError {
	return &apiError{fasthttp.StatusBadRequest, "BadRequestError", fmt.Sprintf(format, args...)}
}

var parserPool fastjson.ParserPool

// member returns the value of key in the object v as vLLM sees it: Python's
// json keeps the last of duplicate keys (fastjson's Get returns the first).
// It is nil if v is not an object or has no such key.
func member(v *fastjson.Value, key string) *fastjson.Value {
	o, err := v.Object()
	if err != nil {
		return nil
	}
	var last *fastjson.Value
	o.Visit(func(k []byte, val *fastjson.Value) {
		if string(k) == key {
			last = val
		}
	})
	return last
}

// pyBool converts v as pydantic's lax mode converts a bool field: true and
// false, 0 and 1 (0.0 and 1.0), and the strings "0", "1", "f", "n", "no",
// "off", "false", "t", "y", "yes", "on", "true" in any case; null is None,
// which vLLM treats as false. ok is false for anything else (vLLM answers
// 400).
func pyBool(v *fastjson.Value) (b, ok bool) {
	switch v.Type() {
	case fastjson.TypeTrue:
		return true, true
	case fastjson.TypeFalse, fastjson.TypeNull:
		return false, true
	case fastjson.TypeNumber:
		switch f := v.GetFloat64(); f {
		case 0:
			return false, true
		case 1:
			return true, true
		}
	case fastjson.TypeString:
		switch strings.ToLower(string(v.GetStringBytes())) {
		case "0", "f", "n", "no", "off", "false":
			return false, true
		case "1", "t", "y", "yes", "on", "true":
			return true, true
		}
	}
	return false, false
}

// parseBody parses a JSON object body and checks its model field, the part
// every POST endpoint shares.
func (s *Server) parseBody(p *fastjson.Parser, body []byte) (*fastjson.Value, *apiError) {
	v, aerr := parseObject(p, body)
	if aerr != nil {
		return nil, aerr
	}
	name, given, aerr := modelName(v, s.cfg.RequireModel)
	if aerr != nil {
		return nil, aerr
	}
	if !given {
		return v, nil
	}
	return v, s.checkModel(string(name))
}

// parseObject parses a body that must be a JSON object.
func parseObject(p *fastjson.Parser, body []byte) (*fastjson.Value, *apiError) {
	v, err := p.ParseBytes(body)
	if err != nil {
		return nil, badRequest("JSON decode error: %v", err)
	}
	if v.Type() != fastjson.TypeObject {
		return nil, badRequest("Input should be a valid dictionary or object to extract fields from: body")
	}
	return v, nil
}

// modelName validates the body's model member (str | None in the OpenAI
// request models) and returns it; given is false when it is absent or null,
// which is refused only when required.
func modelName(v *fastjson.Value, required bool) (name []byte, given bool, aerr *apiError) {
	switch m := member(v, "model"); {
	case m == nil || m.Type() == fastjson.TypeNull:
		if required {
			return nil, false, badRequest("Field required: body.model")
		}
		return nil, false, nil
	case m.Type() != fastjson.TypeString:
		return nil, false, badRequest("Input should be a valid string: body.model")
	default:
		name, _ := m.StringBytes()
		return name, true, nil
	}
}

func (s *Server) parseGenRequest(v *fastjson.Value, k kind) (genRequest, *apiError) {
	var r genRequest
	var aerr *apiError
	if k == kindChat {
		r.promptTokens, aerr = chatPromptWords(member(v, "messages"))
	} else {
		r.promptTokens, aerr = promptWords(member(v, "prompt"), "prompt")
	}
	if aerr != nil {
		return r, aerr
	}
	r.promptTokens = max(r.promptTokens, 1)

	// Chat prefers max_completion_tokens, as vLLM does.
	mt := member(v, "max_tokens")
	name := "max_tokens"
	if k == kindChat {
		if m := member(v, "max_completion_tokens"); m != nil && m.Type() != fastjson.TypeNull {
			mt, name = m, "max_completion_tokens"
		}
	}
	if mt != nil && mt.Type() != fastjson.TypeNull {
		n, err := mt.Int()
		if err != nil {
			return r, badRequest("Input should be a valid integer: body.%s", name)
		}
		if n < 1 {
			return r, badRequest("max_tokens must be at least 1, got %d.", n)
		}
		r.maxTokens = n
	}

	if r.stream, aerr = streamFlag(v); aerr != nil {
		return r, aerr
	}
	optionsGiven, continuous := false, false
	if so := member(v, "stream_options"); so != nil && so.Type() != fastjson.TypeNull {
		if !r.stream {
			return r, badRequest("Stream options can only be defined when `stream=True`.")
		}
		if so.Type() != fastjson.TypeObject {
			return r, badRequest("Input should be a valid dictionary: body.stream_options")
		}
		// vLLM's StreamOptions defaults include_usage to True and
		// continuous_usage_stats to False; an explicit null is None, which
		// should_include_usage takes as false.
		optionsGiven, r.includeUsage = true, true
		if iu := member(so, "include_usage"); iu != nil {
			var ok bool
			if r.includeUsage, ok = pyBool(iu); !ok {
				return r, badRequest("Input should be a valid boolean, unable to interpret input: body.stream_options.include_usage")
			}
		}
		if cu := member(so, "continuous_usage_stats"); cu != nil {
			var ok bool
			if continuous, ok = pyBool(cu); !ok {
				return r, badRequest("Input should be a valid boolean, unable to interpret input: body.stream_options.continuous_usage_stats")
			}
		}
	}
	r.includeUsage, r.continuous = s.cfg.ForceIncludeUsage.apply(optionsGiven, r.includeUsage, continuous)
	r.modelJSON = s.servedModelJSON(v)
	if aerr := s.parseExtras(v, k, &r); aerr != nil {
		return r, aerr
	}

	return r, s.checkContext(r, name)
}

// checkContext refuses a prompt that fills the context, or a token limit
// (named by the field it came from) that does not fit beside the prompt.
func (s *Server) checkContext(r genRequest, name string) *apiError {
	if r.promptTokens >= s.cfg.MaxModelLen {
		return badRequest("This model's maximum context length is %d tokens. However, your request has %d input tokens. "+
			"Please reduce the length of the input messages.", s.cfg.MaxModelLen, r.promptTokens)
	}
	if r.maxTokens > s.cfg.MaxModelLen-r.promptTokens {
		return badRequest("'%s' is too large: %d. This model's maximum context length is %d tokens and your request has "+
			"%d input tokens (%d > %d - %d).", name, r.maxTokens, s.cfg.MaxModelLen, r.promptTokens,
			r.maxTokens, s.cfg.MaxModelLen, r.promptTokens)
	}
	return nil
}

// streamFlag reads the body's stream member (bool | None = False in every
// vLLM request model).
func streamFlag(v *fastjson.Value) (bool, *apiError) {
	st := member(v, "stream")
	if st == nil {
		return false, nil
	}
	b, ok := pyBool(st)
	if !ok {
		return false, badRequest("Input should be a valid boolean, unable to interpret input: body.stream")
	}
	return b, nil
}

// chatPromptWords counts the words of every message's content, whether the
// content is a string or a list of parts.
func chatPromptWords(msgs *fastjson.Value) (int, *apiError) {
	if msgs == nil || msgs.Type() == fastjson.TypeNull {
		return 0, badRequest("Field required: body.messages")
	}
	arr, err := msgs.Array()
	if err != nil {
		return 0, badRequest("Input should be a valid list: body.messages")
	}
	n := 0
	for i, m := range arr {
		if m.Type() != fastjson.TypeObject {
			return 0, badRequest("Input should be a valid dictionary: body.messages.%d", i)
		}
		c := member(m, "content")
		if c == nil {
			continue
		}
		switch c.Type() {
		case fastjson.TypeString:
			b, _ := c.StringBytes()
			n += CountWords(b)
		case fastjson.TypeArray:
			parts, _ := c.Array()
			for _, p := range parts {
				n += CountWords(p.GetStringBytes("text"))
			}
		case fastjson.TypeNull:
		default:
			return 0, badRequest("Input should be a valid string or list: body.messages.%d.content", i)
		}
	}
	return n, nil
}

// promptWords counts a completion prompt or an embedding input: a string, a
// list of strings, a list of token ids, or a list of token-id lists.
func promptWords(p *fastjson.Value, field string) (int, *apiError) {
	if p == nil || p.Type() == fastjson.TypeNull {
		return 0, badRequest("Field required: body.%s", field)
	}
	switch p.Type() {
	case fastjson.TypeString:
		b, _ := p.StringBytes()
		return CountWords(b), nil
	case fastjson.TypeArray:
		arr, _ := p.Array()
		if len(arr) == 0 {
			return 0, badRequest("Input should have at least 1 item: body.%s", field)
		}
		n := 0
		for _, e := range arr {
			switch e.Type() {
			case fastjson.TypeString:
				b, _ := e.StringBytes()
				n += CountWords(b)
			case fastjson.TypeNumber:
				n++
			case fastjson.TypeArray:
				ids, _ := e.Array()
				n += len(ids)
			default:
				return 0, badRequest("Input should be a valid string or list of integers: body.%s", field)
			}
		}
		return n, nil
	}
	return 0, badRequest("Input should be a valid string or list: body.%s", field)
}

// plan decides how many tokens to generate and why generation ends. vLLM
// reports "length" when max_tokens (or the context) cut generation short.
func (s *Server) plan(r genRequest) (n int, finish string) {
	n, finish = s.cfg.OutputTokens, "stop"
	if r.maxTokens > 0 && r.maxTokens <= n {
		n, finish = r.maxTokens, "length"
	}
	if room := s.cfg.MaxModelLen - r.promptTokens; n > room {
		n, finish = room, "length"
	}
	return n, finish
}

func (s *Server) generate(ctx *fasthttp.RequestCtx, k kind, h *hooks) {
	start := time.Now()
	p := parserPool.Get()
	v, aerr := s.parseBody(p, ctx.PostBody())
	var r genRequest
	if aerr == nil {
		r, aerr = s.parseGenRequest(v, k)
	}
	parserPool.Put(p)
	if aerr != nil {
		s.writeError(ctx, aerr.status, aerr.typ, aerr.msg)
		return
	}
	n, finish := s.plan(r)
	ttft, itl := h.pacing(s.cfg)
	s.promptTokens.Add(int64(r.promptTokens))
	if r.stream {
		s.startStream(ctx, &stream{
			s: s, kind: k, created: start.Unix(), start: start,
			n: n, finish: finish, prompt: r.promptTokens,
			includeUsage: r.includeUsage, continuous: r.continuous,
			ttft: ttft, itl: itl,
			errAfter: h.midstreamErr, errFormat: h.errFormat,
			stallAfter: h.stallAfter, stallFor: h.delay,
			benchTS:   h.benchTS,
			modelJSON: r.modelJSON, extras: r.extras,
		})
		return
	}
	// A non-streamed answer arrives when its last token would have.
	if ttft > 0 || itl > 0 {
		if !s.sleep(ttft + time.Duration(n)*itl) {
			ctx.SetConnectionClose()
			s.writeError(ctx, fasthttp.StatusServiceUnavailable, "ServiceUnavailableError", "server is shutting down")
			return
		}
	}
	ctx.SetContentType("application/json")
	b := ctx.Response.SwapBody(nil)[:0]
	b = append(b, `{"id":"`...)
	b = appendID(b, k, h.benchTS)
	if k == kindChat {
		b = append(b, `","object":"chat.completion","created":`...)
	} else {
		b = append(b, `","object":"text_completion","created":`...)
	}
	b = strconv.AppendInt(b, start.Unix(), 10)
	b = append(b, `,"model":`...)
	b = append(b, r.modelJSON...)
	x := &r.extras
	if k == kindChat {
		b = append(b, `,"choices":[{"index":0,"message":{"role":"assistant","content":"`...)
		b = appendTokens(b, n)
		b = append(b, `","refusal":null,"annotations":null,"audio":null,"function_call":null,"tool_calls":[],`+
			`"reasoning_content":null},"logprobs":null,"finish_reason":"`...)
		b = append(b, finish...)
		b = append(b, `","stop_reason":null`...)
		b = x.appendOutputIDs(b, 0, n)
		b = append(b, "}]"...)
	} else {
		b = append(b, `,"choices":[{"index":0,"text":"`...)
		b = appendTokens(b, n)
		b = append(b, `","logprobs":null,"finish_reason":"`...)
		b = append(b, finish...)
		b = append(b, `","stop_reason":null`...)
		b = x.appendOutputIDs(b, 0, n)
		b = append(b, `,"prompt_logprobs":`...)
		b = x.appendPromptLogprobs(b)
		b = x.appendPromptIDs(b)
		b = append(b, "}]"...)
	}
	b = append(b, `,"service_tier":null,"system_fingerprint":null,"usage":`...)
	b = appendUsage(b, r.promptTokens, n, true)
	if k == kindChat {
		// vLLM's ChatCompletionResponse puts its extension members after
		// usage, so a body with prompt_logprobs or prompt_token_ids does not
		// end with usage.
		b = append(b, `,"prompt_logprobs":`...)
		b = x.appendPromptLogprobs(b)
		b = x.appendPromptIDs(b)
	}
	b = append(b, `,"kv_transfer_params":null}`...)
	ctx.Response.SwapBody(b)
	s.completionTokens.Add(int64(n))
	s.recordE2E(start)
}

// appendID appends a response id: vLLM's prefix and a random uuid hex, or
// with bench timestamps the send time in unix nanoseconds.
func appendID(b []byte, k kind, benchTS bool) []byte {
	if benchTS {
		if k == kindChat {
			b = append(b, BenchChatIDPrefix...)
		} else {
			b = append(b, BenchCompletionIDPrefix...)
		}
		return strconv.AppendInt(b, time.Now().UnixNano(), 10)
	}
	if k == kindChat {
		b = append(b, "chatcmpl-"...)
	} else {
		b = append(b, "cmpl-"...)
	}
	return appendHexID(b)
}

// embeddings answers with one deterministic unit vector per input, derived
// from the input's text so equal inputs get equal vectors.
func (s *Server) embeddings(ctx *fasthttp.RequestCtx) {
	start := time.Now()
	p := parserPool.Get()
	defer parserPool.Put(p)
	v, aerr := s.parseBody(p, ctx.PostBody())
	var inputs []*fastjson.Value
	prompt := 0
	if aerr == nil {
		in := member(v, "input")
		prompt, aerr = promptWords(in, "input")
		if aerr == nil {
			// A list of strings or of id lists is a batch; a single string
			// or one flat id list is one input.
			inputs = []*fastjson.Value{in}
			if arr, err := in.Array(); err == nil && arr[0].Type() != fastjson.TypeNumber {
				inputs = arr
			}
		}
	}
	if aerr != nil {
		s.writeError(ctx, aerr.status, aerr.typ, aerr.msg)
		return
	}
	prompt = max(prompt, 1)
	ctx.SetContentType("application/json")
	b := ctx.Response.SwapBody(nil)[:0]
	b = append(b, `{"id":"embd-`...)
	b = appendHexID(b)
	b = append(b, `","object":"list","created":`...)
	b = strconv.AppendInt(b, start.Unix(), 10)
	b = append(b, `,"model":`...)
	b = append(b, s.modelJSON...)
	b = append(b, `,"data":[`...)
	for i, in := range inputs {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, `{"index":`...)
		b = strconv.AppendInt(b, int64(i), 10)
		b = append(b, `,"object":"embedding","embedding":`...)
		b = appendEmbedding(b, in.MarshalTo(nil))
		b = append(b, '}')
	}
	b = append(b, `],"usage":`...)
	b = appendUsage(b, prompt, 0, true)
	ctx.Response.SwapBody(append(b, '}'))
	s.promptTokens.Add(int64(prompt))
	s.recordE2E(start)
}

// EmbeddingFor returns the vector the fake answers for one input, given as
// its JSON text (`"hello"` for a string input, `[1,2]` for token ids).
func EmbeddingFor(inputJSON []byte) []float64 {
	h := fnv.New64a()
	h.Write(inputJSON)
	seed := h.Sum64()
	var vec [EmbeddingDim]float64
	var norm float64
	for i := range vec {
		seed += 0x9e3779b97f4a7c15 // splitmix64
		z := seed
		z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
		z = (z ^ (z >> 27)) * 0x94d049bb133111eb
		z ^= z >> 31
		vec[i] = float64(z>>11)/(1<<53)*2 - 1
		norm += vec[i] * vec[i]
	}
	norm = math.Sqrt(norm)
	out := make([]float64, EmbeddingDim)
	for i := range vec {
		out[i] = vec[i] / norm
	}
	return out
}

func appendEmbedding(b, inputJSON []byte) []byte {
	b = append(b, '[')
	for i, f := range EmbeddingFor(inputJSON) {
		if i > 0 {
			b = append(b, ',')
		}
		b = strconv.AppendFloat(b, f, 'g', -1, 64)
	}
	return append(b, ']')
}
