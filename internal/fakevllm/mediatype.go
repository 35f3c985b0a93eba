package fakevllm

import (
	"bytes"

	"github.com/valyala/fasthttp"
)

// unsupportedMediaType is the message of vLLM's validation handler for the
// RequestValidationError that validate_json_request raises.
const unsupportedMediaType = "1 validation error:\n  Unsupported Media Type: Only 'application/json' is allowed"

// requireJSON is vLLM's validate_json_request dependency, which guards the
// JSON routes the fake's newer formats reproduce (rerank, score, LoRA,
// /invocations): the Content-Type, lower-cased and cut at the first ";"
// (not trimmed), must be exactly application/json. Otherwise the request is
// refused with 400 before its body is read; the handler writes the error
// with type "Bad Request" (HTTPStatus.BAD_REQUEST.phrase) and param null.
func (s *Server) requireJSON(ctx *fasthttp.RequestCtx) bool {
	ct := bytes.ToLower(ctx.Request.Header.ContentType())
	if i := bytes.IndexByte(ct, ';'); i >= 0 {
		ct = ct[:i]
	}
	if string(ct) == "application/json" {
		return true
	}
	s.writeError(ctx, fasthttp.StatusBadRequest, "Bad Request", unsupportedMediaType)
	return false
}
