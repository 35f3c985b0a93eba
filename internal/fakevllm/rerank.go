package fakevllm

import (
	"hash/fnv"
	"sort"
	"strconv"
	"time"

	"github.com/valyala/fasthttp"
	"github.com/valyala/fastjson"
)

// Rerank and score, vLLM's cross-encoder endpoints (docs/vllm-wire-format.md,
// section a).
//
//	POST /rerank, /v1/rerank, /v2/rerank  {"model","query","documents","top_n"}
//	  -> {"id":"score-…","model":…,"usage":{"prompt_tokens":N,"total_tokens":N},
//	      "results":[{"index":i,"document":{"text":…,"multi_modal":null},"relevance_score":f},…]}
//	POST /score, /v1/score  {"model", "queries"+"documents" | "queries"+"items" |
//	                         "data_1"+"data_2" | "text_1"+"text_2"}
//	  -> {"id":"score-…","object":"list","created":…,"model":…,
//	      "data":[{"index":i,"object":"score","score":f},…],
//	      "usage":{"prompt_tokens":N,"total_tokens":N,"completion_tokens":0,"prompt_tokens_details":null}}
//
// A rerank body puts usage before its results, so it does not end with usage;
// its usage has no completion_tokens. The answer's model is always the first
// served name (vLLM calls models.model_name() without the LoRA request).
// Results are sorted by relevance, highest first (stable), and cut to top_n
// when top_n is above 0 and below the number of documents.
//
// The fake is a text-only cross-encoder: a pair's prompt tokens are the
// words of the query and the document, and its score is RelevanceScore.

// fakeScoreArchitecture names the fake's model class in vLLM's error for a
// multimodal input to a text-only model.
const fakeScoreArchitecture = "FakeVLLMForSequenceClassification"

// RelevanceScore returns the score the fake gives a (query, document) pair:
// a float32 in [0, 1) derived from both texts, widened to float64 as vLLM's
// torch output is.
func RelevanceScore(query, document string) float64 {
	h := fnv.New32a()
	h.Write([]byte(query))
	h.Write([]byte{0})
	h.Write([]byte(document))
	return float64(float32(h.Sum32()>>8) / (1 << 24))
}

// scoreInputs reads a ScoreInput | list[ScoreInput] field as a list of
// texts. A dict (ScoreMultiModalParam) is refused as vLLM refuses it for a
// text-only model.
func scoreInputs(v *fastjson.Value, field string, listOK bool) ([]string, *apiError) {
	if v == nil || v.Type() == fastjson.TypeNull {
		return nil, badRequest("Field required: body.%s", field)
	}
	one := func(e *fastjson.Value) (string, *apiError) {
		switch e.Type() {
		case fastjson.TypeString:
			return string(e.GetStringBytes()), nil
		case fastjson.TypeObject:
			return "", badRequest("MultiModalParam is not supported for %s", fakeScoreArchitecture)
		}
		return "", badRequest("Input should be a valid string: body.%s", field)
	}
	if v.Type() != fastjson.TypeArray {
		t, aerr := one(v)
		return []string{t}, aerr
	}
	if !listOK {
		return nil, badRequest("Input should be a valid string: body.%s", field)
	}
	arr := v.GetArray()
	out := make([]string, 0, len(arr))
	for _, e := range arr {
		t, aerr := one(e)
		if aerr != nil {
			return nil, aerr
		}
		out = append(out, t)
	}
	return out, nil
}

// pairWords is the fake's prompt token count of one scored pair.
func pairWords(query, doc string) int {
	return max(CountWords([]byte(query))+CountWords([]byte(doc)), 1)
}

func (s *Server) rerank(ctx *fasthttp.RequestCtx) {
	if !s.requireJSON(ctx) {
		return
	}
	start := time.Now()
	p := parserPool.Get()
	defer parserPool.Put(p)
	v, aerr := s.parseBody(p, ctx.PostBody())
	var query []string
	var docs []string
	topN := 0
	if aerr == nil {
		query, aerr = scoreInputs(member(v, "query"), "query", false)
	}
	if aerr == nil {
		docs, aerr = scoreInputs(member(v, "documents"), "documents", true)
	}
	if aerr == nil {
		if t := member(v, "top_n"); t != nil {
			n, err := t.Int()
			switch {
			case err != nil:
				aerr = badRequest("Input should be a valid integer: body.top_n")
			case n < 0:
				aerr = badRequest("Input should be greater than or equal to 0: body.top_n")
			default:
				topN = n
			}
		}
	}
	if aerr == nil && len(docs) == 0 {
		aerr = badRequest("At least one text_pair element must be given")
	}
	if aerr != nil {
		s.writeError(ctx, aerr.status, aerr.typ, aerr.msg)
		return
	}
	type result struct {
		index int
		doc   string
		score float64
	}
	results := make([]result, len(docs))
	prompt := 0
	for i, d := range docs {
		results[i] = result{i, d, RelevanceScore(query[0], d)}
		prompt += pairWords(query[0], d)
	}
	sort.SliceStable(results, func(i, j int) bool { return results[i].score > results[j].score })
	if topN <= 0 {
		topN = len(results)
	}
	if topN < len(results) {
		results = results[:topN]
	}

	ctx.SetContentType("application/json")
	b := ctx.Response.SwapBody(nil)[:0]
	b = append(b, `{"id":"score-`...)
	b = appendHexID(b)
	b = append(b, `","model":`...)
	b = append(b, s.modelJSON...)
	b = append(b, `,"usage":{"prompt_tokens":`...)
	b = strconv.AppendInt(b, int64(prompt), 10)
	b = append(b, `,"total_tokens":`...)
	b = strconv.AppendInt(b, int64(prompt), 10)
	b = append(b, `},"results":[`...)
	for i, r := range results {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, `{"index":`...)
		b = strconv.AppendInt(b, int64(r.index), 10)
		b = append(b, `,"document":{"text":`...)
		b = appendJSONString(b, r.doc)
		b = append(b, `,"multi_modal":null},"relevance_score":`...)
		b = appendPyFloat(b, r.score)
		b = append(b, '}')
	}
	ctx.Response.SwapBody(append(b, "]}"...))
	s.promptTokens.Add(int64(prompt))
	s.recordE2E(start)
}

// scorePairs are the member pairs of vLLM's ScoreRequest union, in its
// order.
var scorePairs = [...][2]string{{"queries", "documents"}, {"queries", "items"}, {"data_1", "data_2"}, {"text_1", "text_2"}}

func (s *Server) score(ctx *fasthttp.RequestCtx) {
	if !s.requireJSON(ctx) {
		return
	}
	start := time.Now()
	p := parserPool.Get()
	defer parserPool.Put(p)
	v, aerr := s.parseBody(p, ctx.PostBody())
	var first, second []string
	if aerr == nil {
		aerr = badRequest("Field required: body.text_1")
		for _, pair := range scorePairs {
			a, b := member(v, pair[0]), member(v, pair[1])
			if a == nil || b == nil {
				continue
			}
			if first, aerr = scoreInputs(a, pair[0], true); aerr == nil {
				second, aerr = scoreInputs(b, pair[1], true)
			}
			break
		}
	}
	if aerr == nil {
		// _validate_score_input_lens
		switch {
		case len(first) > 1 && len(first) != len(second):
			aerr = badRequest("Input lengths must be either 1:1, 1:N or N:N")
		case len(first) == 0:
			aerr = badRequest("At least one text element must be given")
		case len(second) == 0:
			aerr = badRequest("At least one text_pair element must be given")
		}
	}
	if aerr != nil {
		s.writeError(ctx, aerr.status, aerr.typ, aerr.msg)
		return
	}
	ctx.SetContentType("application/json")
	b := ctx.Response.SwapBody(nil)[:0]
	b = append(b, `{"id":"score-`...)
	b = appendHexID(b)
	b = append(b, `","object":"list","created":`...)
	b = strconv.AppendInt(b, start.Unix(), 10)
	b = append(b, `,"model":`...)
	b = append(b, s.modelJSON...)
	b = append(b, `,"data":[`...)
	prompt := 0
	for i, doc := range second {
		q := first[0]
		if len(first) > 1 {
			q = first[i]
		}
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, `{"index":`...)
		b = strconv.AppendInt(b, int64(i), 10)
		b = append(b, `,"object":"score","score":`...)
		b = appendPyFloat(b, RelevanceScore(q, doc))
		b = append(b, '}')
		prompt += pairWords(q, doc)
	}
	b = append(b, `],"usage":`...)
	b = appendUsage(b, prompt, 0, true)
	ctx.Response.SwapBody(append(b, '}'))
	s.promptTokens.Add(int64(prompt))
	s.recordE2E(start)
}
