package proxy

import (
	"bytes"

	"github.com/valyala/fastjson"
)

// jsonParsers lends parsers for the moments a response body or an SSE
// event is read. Not one per exchange: a parser keeps what it last parsed,
// and thousands of streams in flight would each hold one between their few
// parses.
var jsonParsers fastjson.ParserPool

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
