package fakevllm

import (
	"github.com/valyala/fasthttp"
	"github.com/valyala/fastjson"
)

// POST /invocations, the SageMaker route (docs/vllm-wire-format.md,
// section f). vLLM validates the JSON body against each request type its
// model serves, in a fixed order, and hands it to the first that accepts it:
// ChatCompletionRequest, CompletionRequest (generate models), then
// EmbeddingRequest, ClassificationRequest, RerankRequest, ScoreRequest,
// PoolingRequest (pooling models). The answer is that endpoint's answer,
// byte for byte; a body no type accepts gets 400 "Cannot find suitable
// handler for request. Expected one of: [...]".
//
// The fake serves generation and pooling at once and decides by the members
// each type requires, in vLLM's order: messages (a list) is chat; a
// non-empty prompt is a completion; input is embeddings; query with
// documents is rerank; a score pair is score. Where vLLM would fall through
// to the next type because a member has a bad value, the fake answers the
// first type's 400 instead.

// invocationTypes is the list vLLM's error names, for the fake's types.
const invocationTypes = "['ChatCompletionRequest', 'CompletionRequest', 'EmbeddingRequest', 'RerankRequest', 'ScoreRequest']"

type invocationKind uint8

const (
	invokeNone invocationKind = iota
	invokeChat
	invokeCompletion
	invokeEmbeddings
	invokeRerank
	invokeScore
)

// classifyInvocation picks the endpoint for a parsed body.
func classifyInvocation(v *fastjson.Value) invocationKind {
	if v.Type() != fastjson.TypeObject {
		return invokeNone
	}
	if m := member(v, "messages"); m != nil && m.Type() == fastjson.TypeArray {
		return invokeChat
	}
	if p := member(v, "prompt"); p != nil && p.Type() != fastjson.TypeNull &&
		!(p.Type() == fastjson.TypeString && len(p.GetStringBytes()) == 0) {
		return invokeCompletion
	}
	if in := member(v, "input"); in != nil && in.Type() != fastjson.TypeNull {
		return invokeEmbeddings
	}
	if member(v, "query") != nil && member(v, "documents") != nil {
		return invokeRerank
	}
	for _, pair := range scorePairs {
		if member(v, pair[0]) != nil && member(v, pair[1]) != nil {
			return invokeScore
		}
	}
	return invokeNone
}

func (s *Server) invocations(ctx *fasthttp.RequestCtx, h *hooks) {
	if !s.requireJSON(ctx) {
		return
	}
	p := parserPool.Get()
	v, err := p.ParseBytes(ctx.PostBody())
	kind := invokeNone
	if err == nil {
		kind = classifyInvocation(v)
	}
	parserPool.Put(p)
	if err != nil {
		// raw_request.json() failed: an HTTPException(400) through vLLM's
		// handler.
		s.writeError(ctx, fasthttp.StatusBadRequest, "Bad Request", "JSON decode error: "+err.Error())
		return
	}
	switch kind {
	case invokeChat:
		s.generate(ctx, kindChat, h)
	case invokeCompletion:
		s.generate(ctx, kindCompletion, h)
	case invokeEmbeddings:
		s.embeddings(ctx)
	case invokeRerank:
		s.rerank(ctx)
	case invokeScore:
		s.score(ctx)
	default:
		s.writeError(ctx, fasthttp.StatusBadRequest, "BadRequestError",
			"Cannot find suitable handler for request. Expected one of: "+invocationTypes)
	}
}
