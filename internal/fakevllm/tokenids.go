package fakevllm

import (
	"hash/fnv"
	"strconv"

	"github.com/valyala/fastjson"
)

// Token ids and the chat/completion extension members that carry them
// (vLLM's return_token_ids and prompt_logprobs request fields).
//
// No tokenizer runs, so ids follow a fixed rule a test can reproduce:
// output token i is OutputTokenID(i); a prompt word that is one of the
// fake's output words has that word's id, any other word an id derived from
// its bytes (PromptWordID); a completion prompt given as token ids keeps its
// ids; an empty prompt is the single token BOSTokenID, as the fake counts it
// as one token.
//
// Where vLLM puts the members (docs/vllm-wire-format.md, section c):
//   - chat, non-streamed: choices[i].token_ids after stop_reason; top-level
//     prompt_logprobs then prompt_token_ids after usage;
//   - completion, non-streamed: choices[i].token_ids after stop_reason, then
//     prompt_logprobs and prompt_token_ids in the choice (before usage);
//   - chat stream: prompt_token_ids top-level in the first (role) chunk only,
//     token_ids in every content chunk's choice;
//   - completion stream: prompt_token_ids and token_ids in every chunk's
//     choice, the prompt's ids in the first chunk and null after it.
//
// Without either request field the fake writes the bodies of the vLLM
// release it otherwise reproduces, which predates these members (so they are
// absent rather than null).

const (
	// BOSTokenID is the one prompt token of an empty prompt.
	BOSTokenID = 1
	// outputIDBase is the id of output word 0; word j is outputIDBase+j.
	outputIDBase = 1000
	// promptIDBase and promptIDSpan bound the ids of words outside the
	// output vocabulary.
	promptIDBase = 2000
	promptIDSpan = 30000
)

// OutputTokenID returns the id of output token i (0-based), as the fake
// reports it in token_ids.
func OutputTokenID(i int) int { return outputIDBase + i%len(words) }

// vocabID maps an output word to its id.
var vocabID = func() map[string]int {
	m := make(map[string]int, len(words))
	for i, w := range words {
		m[w] = outputIDBase + i
	}
	return m
}()

// PromptWordID returns the id the fake gives one prompt word.
func PromptWordID(word []byte) int {
	if id, ok := vocabID[string(word)]; ok {
		return id
	}
	h := fnv.New32a()
	h.Write(word)
	return promptIDBase + int(h.Sum32()%promptIDSpan)
}

// PromptTokenIDs returns the ids of a text prompt, word by word, with the
// word rule of CountWords.
func PromptTokenIDs(text string) []int {
	ids := appendWordIDs(nil, []byte(text))
	if len(ids) == 0 {
		ids = append(ids, BOSTokenID)
	}
	return ids
}

// appendWordIDs appends the id of every word of text.
func appendWordIDs(ids []int, text []byte) []int {
	start := -1
	for i, c := range text {
		if c > 0x20 {
			if start < 0 {
				start = i
			}
			continue
		}
		if start >= 0 {
			ids = append(ids, PromptWordID(text[start:i]))
			start = -1
		}
	}
	if start >= 0 {
		ids = append(ids, PromptWordID(text[start:]))
	}
	return ids
}

// decodedToken is the text the fake reports for a token id in logprobs.
func decodedToken(b []byte, id int) []byte {
	switch {
	case id >= outputIDBase && id < outputIDBase+len(words):
		return appendJSONString(b, words[id-outputIDBase])
	case id == BOSTokenID:
		return append(b, `"<s>"`...)
	}
	b = append(b, `"t`...)
	b = strconv.AppendInt(b, int64(id), 10)
	return append(b, '"')
}

// genExtras holds what a request asked of the extension members.
type genExtras struct {
	returnTokenIDs bool
	// promptLogprobs is the request's prompt_logprobs: -2 when absent,
	// -1 for the whole vocabulary, else the number of top entries.
	promptLogprobs int
	promptIDs      []int // filled only when a member needs them
}

// parseExtras reads return_token_ids and prompt_logprobs as vLLM validates
// them and collects the prompt's ids when either asks for them.
func (s *Server) parseExtras(v *fastjson.Value, k kind, r *genRequest) *apiError {
	x := &r.extras
	x.promptLogprobs = -2
	if rt := member(v, "return_token_ids"); rt != nil {
		b, ok := pyBool(rt)
		if !ok {
			return badRequest("Input should be a valid boolean, unable to interpret input: body.return_token_ids")
		}
		x.returnTokenIDs = b
	}
	if pl := member(v, "prompt_logprobs"); pl != nil && pl.Type() != fastjson.TypeNull {
		// vLLM's check_logprobs validator: a number, positive or -1, and
		// no prompt logprobs in a stream.
		if pl.Type() != fastjson.TypeNumber {
			return badRequest("`prompt_logprobs` must be an integer.")
		}
		n, err := pl.Int()
		if err != nil {
			return badRequest("Input should be a valid integer: body.prompt_logprobs")
		}
		if r.stream && (n > 0 || n == -1) {
			return badRequest("`prompt_logprobs` are not available when `stream=True`.")
		}
		if n < -1 {
			return badRequest("`prompt_logprobs` must be a positive value or -1.")
		}
		if !r.stream {
			x.promptLogprobs = n
		}
	}
	if !x.returnTokenIDs && x.promptLogprobs == -2 {
		return nil
	}
	if k == kindChat {
		for _, m := range member(v, "messages").GetArray() {
			c := member(m, "content")
			if c == nil {
				continue
			}
			switch c.Type() {
			case fastjson.TypeString:
				x.promptIDs = appendWordIDs(x.promptIDs, c.GetStringBytes())
			case fastjson.TypeArray:
				for _, p := range c.GetArray() {
					x.promptIDs = appendWordIDs(x.promptIDs, p.GetStringBytes("text"))
				}
			}
		}
	} else {
		x.promptIDs = appendPromptValueIDs(x.promptIDs, member(v, "prompt"))
	}
	if len(x.promptIDs) == 0 {
		x.promptIDs = append(x.promptIDs, BOSTokenID)
	}
	return nil
}

// appendPromptValueIDs collects the ids of a completion prompt: a string,
// strings, token ids or lists of token ids (one list of ids for all).
func appendPromptValueIDs(ids []int, p *fastjson.Value) []int {
	switch p.Type() {
	case fastjson.TypeString:
		return appendWordIDs(ids, p.GetStringBytes())
	case fastjson.TypeArray:
		for _, e := range p.GetArray() {
			switch e.Type() {
			case fastjson.TypeString:
				ids = appendWordIDs(ids, e.GetStringBytes())
			case fastjson.TypeNumber:
				ids = append(ids, e.GetInt())
			case fastjson.TypeArray:
				for _, id := range e.GetArray() {
					ids = append(ids, id.GetInt())
				}
			}
		}
	}
	return ids
}

// appendOutputIDs appends `,"token_ids":[…]` for output tokens from to to-1
// when the request asked for token ids.
func (x *genExtras) appendOutputIDs(b []byte, from, to int) []byte {
	if !x.returnTokenIDs {
		return b
	}
	b = append(b, `,"token_ids":[`...)
	for i := from; i < to; i++ {
		if i > from {
			b = append(b, ',')
		}
		b = strconv.AppendInt(b, int64(OutputTokenID(i)), 10)
	}
	return append(b, ']')
}

// appendPromptIDs appends `,"prompt_token_ids":[…]` when the request asked
// for token ids.
func (x *genExtras) appendPromptIDs(b []byte) []byte {
	if !x.returnTokenIDs {
		return b
	}
	b = append(b, `,"prompt_token_ids":[`...)
	for i, id := range x.promptIDs {
		if i > 0 {
			b = append(b, ',')
		}
		b = strconv.AppendInt(b, int64(id), 10)
	}
	return append(b, ']')
}

// appendPromptLogprobs appends the prompt_logprobs value: null, or vLLM's
// list with null for the first prompt token and, for each later one, an
// object keyed by token id (a JSON string) whose values are Logprob
// dataclasses {logprob, rank, decoded_token}. The prompt token itself is
// rank 1; the top-N adds the next output words.
func (x *genExtras) appendPromptLogprobs(b []byte) []byte {
	if x.promptLogprobs == -2 {
		return append(b, "null"...)
	}
	top := x.promptLogprobs
	if top == -1 {
		top = len(words)
	}
	b = append(b, "[null"...)
	for _, id := range x.promptIDs[min(1, len(x.promptIDs)):] {
		b = append(b, ",{"...)
		b = appendLogprobEntry(b, id, 1)
		rank := 2
		for j := 0; rank <= top && j < len(words); j++ {
			if alt := outputIDBase + j; alt != id {
				b = append(b, ',')
				b = appendLogprobEntry(b, alt, rank)
				rank++
			}
		}
		b = append(b, '}')
	}
	return append(b, ']')
}

func appendLogprobEntry(b []byte, id, rank int) []byte {
	b = append(b, '"')
	b = strconv.AppendInt(b, int64(id), 10)
	b = append(b, `":{"logprob":`...)
	b = appendPyFloat(b, -0.5*float64(rank))
	b = append(b, `,"rank":`...)
	b = strconv.AppendInt(b, int64(rank), 10)
	b = append(b, `,"decoded_token":`...)
	b = decodedToken(b, id)
	return append(b, '}')
}

// appendPyFloat appends f as Python's repr writes a float in the range the
// fake produces (|f| < 1e16): shortest digits, and ".0" after an integral
// value.
func appendPyFloat(b []byte, f float64) []byte {
	start := len(b)
	b = strconv.AppendFloat(b, f, 'g', -1, 64)
	for _, c := range b[start:] {
		if c == '.' || c == 'e' || c == 'n' || c == 'I' {
			return b
		}
	}
	return append(b, ".0"...)
}
