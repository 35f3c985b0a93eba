package proxy

import (
	"bytes"

	"github.com/valyala/fastjson"
)

// requestFields are the fields of an OpenAI-style request body that the
// audit record needs.
type requestFields struct {
	// valid reports whether the body parsed as a JSON object.
	valid bool
	model string
	// stream is the body's "stream" field.
	stream bool
	// includeUsage is stream_options.include_usage.
	includeUsage bool
	// hasStreamOptions reports whether the body had a stream_options key,
	// whatever its value.
	hasStreamOptions bool
}

// jsonParsers lends parsers for the moments a body or an event is read. Not
// one per exchange: a parser keeps what it last parsed, and thousands of
// streams in flight would each hold one between their few parses.
var jsonParsers fastjson.ParserPool

// parseRequestFields extracts requestFields from body. A body that is not a
// JSON object yields valid == false and is forwarded unchanged: the upstream
// owns the error message. prevModel is a model name seen before; when the
// body names the same model, that string is reused rather than allocated.
func parseRequestFields(p *fastjson.Parser, body []byte, prevModel string) (f requestFields) {
	v, err := p.ParseBytes(body)
	if err != nil || v.Type() != fastjson.TypeObject {
		return f
	}
	f.valid = true
	if m := v.Get("model"); m != nil && m.Type() == fastjson.TypeString {
		if b := m.GetStringBytes(); string(b) == prevModel {
			f.model = prevModel
		} else {
			f.model = string(b)
		}
	}
	f.stream = v.GetBool("stream")
	if so := v.Get("stream_options"); so != nil {
		f.hasStreamOptions = true
		f.includeUsage = so.GetBool("include_usage")
	}
	return f
}

// withIncludeUsage returns body with stream_options.include_usage set to
// true, appended to dst. It must only be called for a body that
// parseRequestFields found valid.
//
// Without stream_options the key is spliced in before the closing brace, so
// the rest of the body is byte for byte what the client sent. Otherwise the
// body is re-encoded; continuous_usage_stats is then forced off, because the
// client did not ask for usage and must not get it in every chunk.
func withIncludeUsage(dst []byte, p *fastjson.Parser, body []byte, f requestFields) []byte {
	if !f.hasStreamOptions {
		end := bytes.LastIndexByte(body, '}')
		if end < 0 {
			return append(dst, body...)
		}
		dst = append(dst, body[:end]...)
		if !isEmptyObjectPrefix(body[:end]) {
			dst = append(dst, ',')
		}
		dst = append(dst, `"stream_options":{"include_usage":true}`...)
		return append(dst, body[end:]...)
	}
	v, err := p.ParseBytes(body)
	if err != nil {
		return append(dst, body...)
	}
	so := v.Get("stream_options")
	if so.Type() != fastjson.TypeObject {
		var a fastjson.Arena
		so = a.NewObject()
		v.Set("stream_options", so)
	}
	so.Set("include_usage", jsonTrue)
	if so.Get("continuous_usage_stats") != nil {
		so.Set("continuous_usage_stats", jsonFalse)
	}
	return v.MarshalTo(dst)
}

// Shared read-only values for withIncludeUsage; fastjson only reads a value
// that is set into another object.
var (
	jsonTrue  = fastjson.MustParse("true")
	jsonFalse = fastjson.MustParse("false")
)

// isEmptyObjectPrefix reports whether b, a JSON object without its closing
// brace, has no members yet.
func isEmptyObjectPrefix(b []byte) bool {
	b = bytes.TrimSpace(b)
	return len(b) == 1 && b[0] == '{'
}

// usageInfo is what the audit record takes from a response.
type usageInfo struct {
	promptTokens     int64
	completionTokens int64
	hasUsage         bool
	finishReason     string
	// errorType is the type of an error object the upstream sent (nested
	// {"error":{…}} or vLLM's older flat {"object":"error",…}).
	errorType string
	isError   bool
}

// scanResponseObject reads usage, the first choice's finish_reason and an
// error from one JSON object: a whole non-streamed response or one SSE chunk.
// It reports whether the object is a usage-only chunk ("choices":[] with a
// usage), the chunk that include_usage adds to a stream.
func scanResponseObject(p *fastjson.Parser, b []byte, u *usageInfo) (usageOnly bool) {
	v, err := p.ParseBytes(b)
	if err != nil || v.Type() != fastjson.TypeObject {
		return false
	}
	if e := v.Get("error"); e != nil && e.Type() == fastjson.TypeObject {
		u.isError = true
		u.errorType = string(e.GetStringBytes("type"))
	} else if string(v.GetStringBytes("object")) == "error" {
		u.isError = true
		u.errorType = string(v.GetStringBytes("type"))
	}
	usage := v.Get("usage")
	if usage != nil && usage.Type() == fastjson.TypeObject {
		readUsage(usage, u)
	}
	choices := v.Get("choices")
	if choices == nil || choices.Type() != fastjson.TypeArray {
		return false
	}
	arr, _ := choices.Array()
	for _, c := range arr {
		if c.GetInt("index") != 0 {
			continue
		}
		if fr := c.GetStringBytes("finish_reason"); len(fr) > 0 && u.finishReason == "" {
			u.finishReason = internString(fr, commonFinishReasons)
		}
	}
	return len(arr) == 0 && usage != nil && usage.Type() == fastjson.TypeObject
}

func readUsage(usage *fastjson.Value, u *usageInfo) {
	u.hasUsage = true
	u.promptTokens = usage.GetInt64("prompt_tokens")
	u.completionTokens = usage.GetInt64("completion_tokens")
}

// scanUsageTail finds the last "usage" object in tail, the end of a response
// too large to keep whole, and reads it. vLLM writes usage after the choices,
// so it is in the tail of even a large embeddings response.
func scanUsageTail(p *fastjson.Parser, tail []byte, u *usageInfo) {
	i := bytes.LastIndex(tail, []byte(`"usage":`))
	if i < 0 {
		return
	}
	obj := jsonObjectPrefix(tail[i+len(`"usage":`):])
	if obj == nil {
		return
	}
	v, err := p.ParseBytes(obj)
	if err != nil || v.Type() != fastjson.TypeObject {
		return
	}
	readUsage(v, u)
}

// jsonObjectPrefix returns the JSON object at the start of b (after
// whitespace), through its matching closing brace, or nil if b does not hold
// a whole one. It tracks strings so braces inside them do not count.
func jsonObjectPrefix(b []byte) []byte {
	start := 0
	for start < len(b) && (b[start] == ' ' || b[start] == '\t' || b[start] == '\n' || b[start] == '\r') {
		start++
	}
	if start == len(b) || b[start] != '{' {
		return nil
	}
	depth := 0
	inString := false
	for i := start; i < len(b); i++ {
		c := b[i]
		if inString {
			switch c {
			case '\\':
				i++
			case '"':
				inString = false
			}
			continue
		}
		switch c {
		case '"':
			inString = true
		case '{', '[':
			depth++
		case '}', ']':
			depth--
			if depth == 0 {
				return b[start : i+1]
			}
		}
	}
	return nil
}
