package proxy

import (
	"bytes"
	"math"
	"strconv"
	"strings"
)

// answer.go reads what the audit record takes from an answer (token
// counts, the finish reason, an error, the end of a typed stream) from the
// JSON objects vLLM sends: a whole non-streamed body, or each SSE event's
// data. Each API puts them in other members (docs/vllm-wire-format.md says
// where, with the vLLM files it was read in); apiKind picks the reading.
//
// A count is known only when vLLM sent it as a non-negative integer under
// the name that API uses: an object named usage of another shape says
// nothing, and the event then records null, not 0.

// apiKind is the API an answer follows, known from the request's path.
type apiKind uint8

const (
	apiOpenAI    apiKind = iota // chat, completions, embeddings, pooling, score, rerank...: usage.prompt_tokens/completion_tokens, choices[].finish_reason
	apiResponses                // /v1/responses: usage.input_tokens/output_tokens, status; typed stream ending in response.completed
	apiMessages                 // /v1/messages (Anthropic): usage.input_tokens/output_tokens, stop_reason; typed stream
)

// apiKindOf returns the API of a request path as vLLM routes it (the path
// without its query).
func apiKindOf(path string) apiKind {
	path = pathOnly(path)
	switch {
	case path == "/v1/responses" || strings.HasPrefix(path, "/v1/responses/"):
		// Also GET /v1/responses/{id} (a stored response, or its stream
		// again with ?stream=true) and POST .../cancel: Responses objects.
		return apiResponses
	case path == "/v1/messages":
		return apiMessages
	}
	return apiOpenAI
}

// hasStreamOptions reports whether the request model vLLM validates a
// request to path with has stream_options (chat and completions): only
// there does asking for usage not change what vLLM does otherwise.
// Responses and Messages streams carry usage unasked. /invocations
// (SageMaker) tries ChatCompletionRequest, then CompletionRequest, then
// the pooling requests: a body with messages is a chat, one with a prompt
// a completion (a body neither accepts falls through to the next type;
// rewriting it changes nothing vLLM accepts, since stream_options is
// optional in both).
//
// /inference/v1/generate (GenerateRequest) has stream_options too, and its
// stream ends with a "choices":[] usage chunk when asked
// (scale_out/token_in_token_out/protocol.py and serving.py @055e47c2).
func hasStreamOptions(path string, f *requestFields) bool {
	switch pathOnly(path) {
	case "/v1/chat/completions", "/v1/completions", "/inference/v1/generate":
		return true
	case "/invocations":
		return f.hasMessages || f.hasPrompt
	}
	return false
}

// forcedUsageApplies reports whether vLLM's --enable-force-include-usage
// makes a stream to path carry usage unasked. /inference/v1/generate calls
// should_include_usage(request.stream_options, False): the flag does not
// apply there, so the proxy asks for usage even with
// --upstream-force-include-usage.
func forcedUsageApplies(path string) bool {
	return pathOnly(path) != "/inference/v1/generate"
}

// countsTokens reports whether the usage in an answer to path counts
// tokens this exchange made vLLM process. /v1/chat/completions/derender
// and /v1/completions/derender run no inference: they turn a
// GenerateResponse the client sends back into a chat or completion
// answer, with usage built from what the client sent
// (scale_out/derender/serving.py @055e47c2); the tokens were counted at
// /inference/v1/generate, so the event's counts are null here.
func countsTokens(path string) bool {
	switch pathOnly(path) {
	case "/v1/chat/completions/derender", "/v1/completions/derender":
		return false
	}
	return true
}

func pathOnly(path string) string {
	for i := 0; i < len(path); i++ {
		if path[i] == '?' {
			return path[:i]
		}
	}
	return path
}

// The slots of answerSpec.
const (
	_ = iota
	slotUsage
	slotPromptTokens
	slotCompletionTokens
	slotInputTokens
	slotOutputTokens
	slotChoices
	slotChoice
	slotChoiceIndex
	slotFinishReason
	slotError
	slotErrorType
	slotObject
	slotType
	slotStatus
	slotIncompleteReason
	slotStopReason
	slotResponse
	slotMessage
	slotDelta
	slotModel
	slotUsageType
	slotUsageSeconds
)

// answerSpec is every member any API's answer is read for. Nested objects
// reuse the top level's slots: a Responses event's response.usage and a
// Messages event's message.usage are read as usage (only the event's type
// says which counts).
var answerSpec = func() *fieldSpec {
	usage := field{name: "usage", slot: slotUsage, members: []field{
		{name: "prompt_tokens", slot: slotPromptTokens},
		{name: "completion_tokens", slot: slotCompletionTokens},
		{name: "input_tokens", slot: slotInputTokens},
		{name: "output_tokens", slot: slotOutputTokens},
		{name: "type", slot: slotUsageType},
		{name: "seconds", slot: slotUsageSeconds},
	}}
	errorField := field{name: "error", slot: slotError, members: []field{{name: "type", slot: slotErrorType}}}
	status := field{name: "status", slot: slotStatus}
	incomplete := field{name: "incomplete_details", members: []field{{name: "reason", slot: slotIncompleteReason}}}
	stopReason := field{name: "stop_reason", slot: slotStopReason}
	model := field{name: "model", slot: slotModel}
	return compileFieldSpec(field{members: []field{
		usage,
		{name: "choices", slot: slotChoices, each: &field{slot: slotChoice, members: []field{
			{name: "index", slot: slotChoiceIndex},
			{name: "finish_reason", slot: slotFinishReason},
		}}},
		errorField,
		{name: "object", slot: slotObject},
		{name: "type", slot: slotType},
		status,
		incomplete,
		stopReason,
		model,
		{name: "response", slot: slotResponse, members: []field{usage, status, incomplete, errorField, model}},
		{name: "message", slot: slotMessage, members: []field{usage, stopReason, model}},
		{name: "delta", slot: slotDelta, members: []field{stopReason}},
	}})
}()

// truthyScalar reports whether a JSON number or literal is true to Python
// (bool(json.loads(raw))): true, NaN, Infinity and a number other than zero.
// A number Python reads as a float (with a fraction or an exponent) is zero
// when it parses to zero, as 1e-400 does in both languages; an integer when
// all its digits are zeros. A number longer than maxFieldBytes (truncated)
// counts as true: its kept digits cannot say.
func truthyScalar(raw []byte, truncated bool) bool {
	switch string(raw) {
	case "null", "false":
		return false
	case "true", "NaN", "Infinity", "-Infinity":
		return true
	}
	if truncated {
		return true
	}
	if bytes.ContainsAny(raw, ".eE") {
		v, err := strconv.ParseFloat(string(raw), 64)
		return err != nil || v != 0
	}
	return strings.Trim(string(raw), "-0") != ""
}

// optInt is a count that may be unknown.
type optInt struct {
	n     int64
	known bool
}

// answerObject is what one JSON object of an answer says, each member as
// Python's json keeps it: the last of duplicates.
type answerObject struct {
	usage                       bool // a usage object (the last usage member is one)
	prompt, completion          optInt
	input, output               optInt
	duration                    bool // usage.type is "duration" (a transcription's)
	seconds                     float64
	hasSeconds                  bool
	choices                     int // elements of choices, -1 when there is no choices array
	choice                      int // the element being read
	choiceIndex                 optInt
	choiceFinish, finishReason  string
	isError                     bool
	errorType                   string
	object, typ, status, reason string
	stopReason                  string
	// model is the answer's model member, read only when wantModel (the
	// request named none).
	model     string
	wantModel bool
}

func (o *answerObject) reset() {
	*o = answerObject{choices: -1, wantModel: o.wantModel}
}

// take is the fieldScanner's sink.
func (o *answerObject) take(slot int, kind fieldKind, raw []byte, truncated bool) {
	switch slot {
	case slotUsage:
		o.usage = kind == fieldOpen || (kind == fieldClose && o.usage)
		if kind == fieldOpen {
			o.prompt, o.completion, o.input, o.output = optInt{}, optInt{}, optInt{}, optInt{}
			o.duration, o.hasSeconds = false, false
		}
	case slotPromptTokens:
		o.prompt = countOf(kind, raw, truncated)
	case slotCompletionTokens:
		o.completion = countOf(kind, raw, truncated)
	case slotInputTokens:
		o.input = countOf(kind, raw, truncated)
	case slotOutputTokens:
		o.output = countOf(kind, raw, truncated)
	case slotChoices:
		if kind == fieldOpen {
			o.choices, o.finishReason = 0, ""
		}
	case slotChoice:
		switch kind {
		case fieldOpen:
			o.choices++
			o.choiceIndex, o.choiceFinish = optInt{}, ""
		case fieldClose:
			// The first choice's finish reason (index 0; an element without
			// an index is taken as the first).
			if (!o.choiceIndex.known || o.choiceIndex.n == 0) && o.finishReason == "" {
				o.finishReason = o.choiceFinish
			}
		}
	case slotChoiceIndex:
		o.choiceIndex = countOf(kind, raw, truncated)
	case slotFinishReason:
		o.choiceFinish = stringOf(kind, raw, truncated, commonFinishReasons)
	case slotError:
		// An error member counts as the OpenAI Python SDK counts it: when
		// data.get("error") is truthy (_streaming.py,
		// _raise_streaming_error). So an error object or array that is not
		// empty, a non-empty string (vLLM's auth middleware answers
		// {"error":"Unauthorized"}), true, a number other than zero; not
		// null, false, 0, "", {} or [].
		switch kind {
		case fieldOpen:
			o.isError, o.errorType = false, "" // known at the close
		case fieldClose:
			o.isError = len(raw) == 1 // "}" or "]": not empty
		case fieldString:
			o.isError, o.errorType = len(raw) > 0, ""
		case fieldScalar:
			o.isError, o.errorType = truthyScalar(raw, truncated), ""
		}
	case slotErrorType:
		o.errorType = stringOf(kind, raw, truncated, nil)
	case slotObject:
		o.object = knownString(kind, raw, []string{"error"})
	case slotType:
		o.typ = stringOf(kind, raw, truncated, commonEventTypes)
	case slotStatus:
		o.status = stringOf(kind, raw, truncated, responseStatuses)
	case slotIncompleteReason:
		o.reason = stringOf(kind, raw, truncated, incompleteReasons)
	case slotStopReason:
		o.stopReason = stringOf(kind, raw, truncated, stopReasons)
	case slotUsageType:
		o.duration = knownString(kind, raw, []string{"duration"}) != ""
	case slotUsageSeconds:
		o.seconds, o.hasSeconds = 0, false
		if kind == fieldScalar && !truncated {
			if v, err := strconv.ParseFloat(string(raw), 64); err == nil && v >= 0 && !math.IsInf(v, 0) {
				o.seconds, o.hasSeconds = v, true
			}
		}
	case slotModel:
		if o.wantModel {
			o.model = stringOf(kind, raw, truncated, nil)
		}
	}
}

// countOf reads a token count: a non-negative integer (as JSON writes
// one: no sign, fraction or exponent), else unknown.
func countOf(kind fieldKind, raw []byte, truncated bool) optInt {
	if kind != fieldScalar || truncated || len(raw) == 0 || len(raw) > 18 || (raw[0] == '0' && len(raw) > 1) {
		return optInt{}
	}
	var n int64
	for _, c := range raw {
		if c < '0' || c > '9' {
			return optInt{}
		}
		n = n*10 + int64(c-'0')
	}
	return optInt{n, true}
}

// knownString returns the one of known that a string member is, "" for
// any other value: what only matters if it is one of them is not copied.
func knownString(kind fieldKind, raw []byte, known []string) string {
	if kind != fieldString {
		return ""
	}
	for _, k := range known {
		if string(raw) == k {
			return k
		}
	}
	return ""
}

// stringOf reads a short string member ("" for anything else), interned
// when it is one of known.
func stringOf(kind fieldKind, raw []byte, truncated bool, known []string) string {
	if kind != fieldString || truncated {
		return ""
	}
	for _, k := range known {
		if string(raw) == k {
			return k
		}
	}
	var buf [64]byte
	return string(appendJSONUnescaped(buf[:0], raw))
}

// The values of string members read, so that reading them does not
// allocate: commonEventTypes are the typed streams' event types the proxy
// acts on; the others are the values vLLM sends (a value not listed is
// still read, as a new string).
var (
	commonEventTypes = []string{"response.completed", "response.incomplete", "response.failed", "error",
		"response.created", "response.in_progress", "message_start", "message_delta", "message_stop"}
	responseStatuses  = []string{"completed", "incomplete", "failed", "in_progress", "queued", "cancelled"}
	incompleteReasons = []string{"max_output_tokens", "content_filter"}
	stopReasons       = []string{"end_turn", "max_tokens", "stop_sequence", "tool_use", "pause_turn", "refusal"}
)

// usageInfo is what the audit record takes from an answer, gathered over
// its objects (one for a body, one an SSE event for a stream).
type usageInfo struct {
	input, output optInt
	finishReason  string
	// errorType is the type of an error object the upstream sent (nested
	// {"error":{…}} or vLLM's older flat {"object":"error",…}).
	errorType string
	isError   bool
	// ended: a typed stream (Responses, Messages) sent its last event.
	ended bool
	// model is the first model member the answer named (read only when the
	// request named none).
	model string
	// audioSeconds is a transcription's billed duration, when hasAudio.
	audioSeconds float64
	hasAudio     bool
}

// add merges what one object of an answer of API kind says. It reports
// whether the object is a usage-only chunk of an OpenAI stream
// ("choices":[] with a usage), the chunk that include_usage adds.
func (u *usageInfo) add(kind apiKind, o *answerObject) (usageOnly bool) {
	if u.model == "" {
		u.model = o.model
	}
	switch {
	case o.isError:
		u.isError, u.errorType = true, o.errorType
	case o.object == "error": // vLLM's older flat error
		u.isError, u.errorType = true, o.typ
	}
	switch kind {
	case apiOpenAI:
		if o.usage {
			u.input, u.output = o.prompt, o.completion
			u.audioSeconds, u.hasAudio = 0, o.duration && o.hasSeconds
			if u.hasAudio {
				u.audioSeconds = o.seconds
			}
		}
		if o.finishReason != "" && u.finishReason == "" {
			u.finishReason = o.finishReason
		}
		return o.choices == 0 && o.usage
	case apiResponses:
		if o.usage {
			u.input, u.output = o.input, o.output
		}
		switch o.typ {
		case "response.completed", "response.incomplete", "response.failed":
			u.ended = true
		}
		if o.typ == "response.failed" || o.status == "failed" {
			u.isError = true
		}
		if o.status != "" && o.status != "in_progress" && o.status != "queued" {
			u.finishReason = o.status
			if o.reason != "" {
				u.finishReason = o.reason
			}
		}
		if o.typ == "error" {
			u.isError = true
		}
	case apiMessages:
		if o.usage {
			// message_start carries the input count, message_delta the
			// output count so far (and may repeat the input count).
			if o.input.known {
				u.input = o.input
			}
			if o.output.known {
				u.output = o.output
			}
		}
		if o.stopReason != "" {
			u.finishReason = o.stopReason
		}
		switch o.typ {
		case "message_stop":
			u.ended = true
		case "error":
			u.isError = true
		}
	}
	return false
}

// readAnswerObject reads one whole JSON object (an SSE event's data) into
// u, as add does. An object that is not well-formed JSON says nothing.
func readAnswerObject(s *fieldScanner, o *answerObject, kind apiKind, b []byte, u *usageInfo) (usageOnly bool) {
	o.reset()
	s.reset(answerSpec, o)
	s.write(b)
	if !s.close() {
		return false
	}
	return u.add(kind, o)
}
