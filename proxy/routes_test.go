package proxy

import (
	"io"
	"strings"
	"testing"

	"github.com/valyala/fasthttp"

	"github.com/auditproxy/auditproxy/audit"
	"github.com/auditproxy/auditproxy/hashing"
)

// routes_test.go: what the event records for the vLLM routes that
// internal/fakevllm does not serve, from answers shaped as vLLM's source writes
// them (docs/vllm-wire-format.md, "Every route vLLM serves", names the files
// and commits; fixtures keep vLLM's member order and leave out members that
// do not bear on the event). The tests named ...Mismatch pin what the proxy
// does today where it differs from what vLLM does; each says what vLLM does,
// and is to be inverted when the proxy is changed.

// tapAnswer runs an answer through a responseTap for a request to path, as
// the handler sets it up: the API kind from the path, the request's stream
// flag, the Content-Type. It returns what the client got and the event.
func tapAnswer(t *testing.T, path string, requestStreamed bool, ctype, answer string, upSizes []byte) ([]byte, audit.Event) {
	t.Helper()
	got, ev, _ := tapAnswerFirst(t, path, requestStreamed, ctype, answer, upSizes)
	return got, ev
}

// firstRead is what the client's first Read of an answer got, and whether
// the event had a time to first token by then.
type firstRead struct {
	bytes []byte
	ttft  bool
}

// tapAnswerFirst is tapAnswer that also tells what the first Read got.
func tapAnswerFirst(t *testing.T, path string, requestStreamed bool, ctype, answer string, upSizes []byte) ([]byte, audit.Event, firstRead) {
	t.Helper()
	rec := &lastEvent{}
	kid, _ := hashing.NewKeyIDer(make([]byte, 32))
	p, err := New(Config{Upstream: "http://127.0.0.1:1", KeyIDer: kid, Recorder: rec})
	if err != nil {
		t.Fatal(err)
	}
	x := p.acquireExchange()
	x.ev.Path, x.ev.Stream = path, requestStreamed
	x.tap.kind, x.tap.status = apiKindOf(path), 200
	x.tap.start(fasthttp.AcquireResponse(), &splitReader{data: []byte(answer), sizes: upSizes}, []byte(ctype), -1)
	var got []byte
	buf := make([]byte, 64<<10)
	var first firstRead
	for i := 0; ; i++ {
		n, err := x.tap.Read(buf)
		got = append(got, buf[:n]...)
		if i == 0 {
			first = firstRead{bytes: append([]byte(nil), buf[:n]...), ttft: x.ev.Latency.TTFT != nil}
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	x.tap.CloseWithError(nil)
	return got, rec.ev, first
}

// Answers of routes the fake does not serve, member order as vLLM's classes
// declare it.
const (
	// UsageInfo: prompt_tokens, total_tokens, completion_tokens,
	// prompt_tokens_details (serve/engine/protocol.py).
	usage10x15 = `{"prompt_tokens":10,"total_tokens":25,"completion_tokens":15,"prompt_tokens_details":null}`

	// POST /v1/chat/completions/batch: one ChatCompletionResponse, a choice
	// per conversation (index 0..N-1, sorted), usage summed over all
	// (openai/chat_completion/batch_serving.py @055e47c2).
	batchAnswer = `{"id":"chatcmpl-b","object":"chat.completion","created":1,"model":"m","choices":[` +
		`{"index":0,"message":{"role":"assistant","content":"a"},"logprobs":null,"finish_reason":"length","stop_reason":null},` +
		`{"index":1,"message":{"role":"assistant","content":"b"},"logprobs":null,"finish_reason":"stop","stop_reason":null}],` +
		`"service_tier":null,"system_fingerprint":null,"usage":` + usage10x15 + `,"prompt_logprobs":null}`

	// POST /classify: ClassificationResponse (pooling/classify/protocol.py).
	classifyAnswer = `{"id":"classify-1","object":"list","created":1,"model":"m","data":[{"index":0,"label":"yes","probs":[0.9,0.1],"num_classes":2}],` +
		`"usage":{"prompt_tokens":7,"total_tokens":7,"completion_tokens":0,"prompt_tokens_details":null}}`

	// POST /generative_scoring: GenerativeScoringResponse
	// (generate/generative_scoring/serving.py).
	generativeScoringAnswer = `{"id":"","object":"list","created":1,"model":"m","data":[{"index":0,"object":"score","score":0.7}],"usage":` + usage10x15 + `}`

	// POST /inference/v1/generate, not streamed: GenerateResponse
	// (scale_out/token_in_token_out/protocol.py, serving.py @055e47c2).
	generateAnswer = `{"request_id":"generate-tokens-1","model":"m","created":1,"choices":[{"index":0,"logprobs":null,"finish_reason":"length",` +
		`"token_ids":[5,6,7],"routed_experts":null,"sampling_mask":null}],"usage":{"prompt_tokens":4,"total_tokens":7,"completion_tokens":3,"prompt_tokens_details":null},` +
		`"prompt_logprobs":null,"kv_transfer_params":null,"ec_transfer_params":null}`

	// Its stream: GenerateStreamResponse chunks (model_dump_json(), so
	// "usage":null in each), the usage-only chunk (exclude_none) only when
	// stream_options asks for it, then [DONE].
	generateChunk1    = "data: {\"request_id\":\"g\",\"choices\":[{\"index\":0,\"logprobs\":null,\"finish_reason\":null,\"token_ids\":[5],\"routed_experts\":null,\"sampling_mask\":null}],\"usage\":null}\n\n"
	generateChunk2    = "data: {\"request_id\":\"g\",\"choices\":[{\"index\":0,\"logprobs\":null,\"finish_reason\":\"stop\",\"token_ids\":[6],\"routed_experts\":null,\"sampling_mask\":null}],\"usage\":null}\n\n"
	generateUsage     = "data: {\"request_id\":\"g\",\"choices\":[],\"usage\":{\"prompt_tokens\":4,\"total_tokens\":6,\"completion_tokens\":2}}\n\n"
	generateWithUsage = generateChunk1 + generateChunk2 + generateUsage + doneChunk
	generateNoUsage   = generateChunk1 + generateChunk2 + doneChunk

	// POST /v1/messages/count_tokens: AnthropicCountTokensResponse.
	countTokensAnswer = `{"input_tokens":12}`
	// POST /tokenize: TokenizeResponse (serve/tokenize/protocol.py).
	tokenizeAnswer = `{"count":3,"max_model_len":4096,"tokens":[1,2,3],"token_strs":null}`
	// POST /cohere/v2/chat, not streamed: CohereChatV2Response dumped with
	// exclude_none; the counts are floats under usage.billed_units and
	// usage.tokens (cohere/protocol.py @b59bccae).
	cohereAnswer = `{"id":"c1","finish_reason":"COMPLETE","message":{"role":"assistant","content":[{"type":"text","text":"hi"}]},` +
		`"usage":{"billed_units":{"input_tokens":5.0,"output_tokens":3.0},"tokens":{"input_tokens":9.0,"output_tokens":3.0}}}`
)

// TestRouteAnswersOutsideTheFake: the event of each route the fake does not
// serve has vLLM's usage where vLLM sends OpenAI-shaped usage, and null
// (never 0) where it sends none or another shape.
func TestRouteAnswersOutsideTheFake(t *testing.T) {
	const sse, json = "text/event-stream", "application/json"
	for _, tc := range []struct {
		name, path  string
		streamed    bool
		ctype, body string
		in, out     int64 // -1: null
		finish      string
	}{
		{"batch chat: summed usage, the first conversation's finish", "/v1/chat/completions/batch", false, json, batchAnswer, 10, 15, "length"},
		{"classify: completion 0 as vLLM writes it", "/classify", false, json, classifyAnswer, 7, 0, ""},
		{"generative scoring", "/generative_scoring", false, json, generativeScoringAnswer, 10, 15, ""},
		{"tokens in, tokens out", "/inference/v1/generate", false, json, generateAnswer, 4, 3, "length"},
		{"tokens in, tokens out, a stream that asked for usage", "/inference/v1/generate", true, sse, generateWithUsage, 4, 2, "stop"},
		{"tokens in, tokens out, a stream without the usage chunk (a request the proxy could not rewrite)", "/inference/v1/generate", true, sse, generateNoUsage, -1, -1, "stop"},
		{"count_tokens is a count, not usage", "/v1/messages/count_tokens", false, json, countTokensAnswer, -1, -1, ""},
		{"tokenize", "/tokenize", false, json, tokenizeAnswer, -1, -1, ""},
		{"cohere chat: not read", "/cohere/v2/chat", false, json, cohereAnswer, -1, -1, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, ev := tapAnswer(t, tc.path, tc.streamed, tc.ctype, tc.body, []byte{3, 200, 17})
			if string(got) != tc.body {
				t.Fatalf("the client got %q", got)
			}
			if tokens(ev.Input.Tokens) != tc.in || tokens(ev.Output.Tokens) != tc.out {
				t.Errorf("tokens %d/%d, want %d/%d", tokens(ev.Input.Tokens), tokens(ev.Output.Tokens), tc.in, tc.out)
			}
			if ev.Output.FinishReason != tc.finish || ev.Status.Outcome != audit.OutcomeOK {
				t.Errorf("finish %q outcome %s %s", ev.Output.FinishReason, ev.Status.Outcome, ev.Status.Error)
			}
		})
	}
}

func tokens(p *int64) int64 {
	if p == nil {
		return -1
	}
	return *p
}

// TestGenerateStreamAsksForUsage: GenerateRequest (/inference/v1/generate)
// has stream_options, and its stream ends with the same "choices":[] usage
// chunk as a chat stream when asked (scale_out/token_in_token_out/
// protocol.py, serving.py @055e47c2), so the proxy asks for it as for chat
// and completions, and removes it again
// (TestGenerateStreamUsageThroughTheProxy). There should_include_usage is
// called with force False, so --enable-force-include-usage does not apply:
// the proxy asks even when told vLLM forces usage. This was
// TestGenerateStreamUsageMismatch, which pinned that the proxy did not ask.
func TestGenerateStreamAsksForUsage(t *testing.T) {
	f := requestFields{valid: true, stream: true, rewritable: true}
	for _, path := range []string{"/inference/v1/generate", "/inference/v1/generate?x=1", "/v1/chat/completions", "/v1/completions"} {
		if !hasStreamOptions(path, &f) {
			t.Errorf("%s streams are not asked for usage", path)
		}
	}
	if forcedUsageApplies("/inference/v1/generate") || !forcedUsageApplies("/v1/chat/completions") {
		t.Error("--enable-force-include-usage applies to chat, not to /inference/v1/generate")
	}
	if hasStreamOptions("/v1/chat/completions/derender", &f) || hasStreamOptions("/inference/v1/generatex", &f) {
		t.Error("a route without stream_options is asked for usage")
	}
}

// TestDerenderCountsNoTokens: /v1/chat/completions/derender and
// /v1/completions/derender run no inference: they turn a GenerateResponse
// the client sends back into a chat or completion answer, with usage built
// from what the client sent (prompt_tokens as given, 0 when left out;
// completion tokens = the token ids sent; scale_out/derender/serving.py
// @055e47c2). Those tokens were counted at /inference/v1/generate, so the
// event's counts are null here; the finish reason is the answer's. This
// was TestDerenderUsageMismatch, which pinned that the usage was counted.
func TestDerenderCountsNoTokens(t *testing.T) {
	derendered := `{"id":"generate-tokens-1","object":"chat.completion","created":1,"model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"hi"},` +
		`"logprobs":null,"finish_reason":"length","stop_reason":null}],"service_tier":null,"system_fingerprint":null,` +
		`"usage":{"prompt_tokens":0,"total_tokens":3,"completion_tokens":3,"prompt_tokens_details":null},"prompt_logprobs":null,"kv_transfer_params":null}`
	for _, path := range []string{"/v1/chat/completions/derender", "/v1/completions/derender?x=1"} {
		got, ev := tapAnswer(t, path, false, "application/json", derendered, nil)
		if string(got) != derendered {
			t.Fatalf("%s: the client got other bytes", path)
		}
		if ev.Input.Tokens != nil || ev.Output.Tokens != nil || ev.Output.FinishReason != "length" || ev.Status.Outcome != audit.OutcomeOK {
			t.Errorf("%s: tokens %d/%d finish %q outcome %s; want null counts", path, tokens(ev.Input.Tokens), tokens(ev.Output.Tokens), ev.Output.FinishReason, ev.Status.Outcome)
		}
	}
	// Control: the same answer at /v1/chat/completions is an inference's.
	if _, ev := tapAnswer(t, "/v1/chat/completions", false, "application/json", derendered, nil); tokens(ev.Input.Tokens) != 0 || tokens(ev.Output.Tokens) != 3 {
		t.Errorf("chat: tokens %d/%d, want 0/3", tokens(ev.Input.Tokens), tokens(ev.Output.Tokens))
	}
}

// TestResponsesRetrievalMismatch: GET /v1/responses/{id} answers a stored
// response whole, usage included (openai/responses/api_router.py,
// retrieve_responses @055e47c2); each retrieval's event records the counts
// again, though no tokens were generated for it. With background=true the
// POST answers {"status":"queued","usage":null} at once (serving.py
// @055e47c2), so the counts appear only in the events of later retrievals,
// once per retrieval, or never.
func TestResponsesRetrievalMismatch(t *testing.T) {
	stored := `{"id":"resp_1","created_at":1,"incomplete_details":null,"instructions":null,"metadata":null,"model":"m","object":"response","output":[],` +
		`"background":true,"status":"completed","usage":{"input_tokens":5,"input_tokens_details":{"cached_tokens":0},"output_tokens":9,` +
		`"output_tokens_details":{"reasoning_tokens":0},"total_tokens":14},"user":null}`
	_, ev := tapAnswer(t, "/v1/responses/resp_1", false, "application/json", stored, nil)
	if tokens(ev.Input.Tokens) != 5 || tokens(ev.Output.Tokens) != 9 || ev.Output.FinishReason != "completed" {
		t.Errorf("retrieval: tokens %d/%d finish %q; the proxy changed, invert this test", tokens(ev.Input.Tokens), tokens(ev.Output.Tokens), ev.Output.FinishReason)
	}
	queued := `{"id":"resp_1","created_at":1,"incomplete_details":null,"instructions":null,"metadata":null,"model":"m","object":"response","output":[],` +
		`"background":true,"status":"queued","usage":null,"user":null}`
	_, ev = tapAnswer(t, "/v1/responses", false, "application/json", queued, nil)
	if ev.Input.Tokens != nil || ev.Output.Tokens != nil || ev.Output.FinishReason != "" || ev.Status.Outcome != audit.OutcomeOK {
		t.Errorf("background POST: tokens %d/%d finish %q outcome %s", tokens(ev.Input.Tokens), tokens(ev.Output.Tokens), ev.Output.FinishReason, ev.Status.Outcome)
	}

	// A replay (?stream=true) has no request body, so the event is not a
	// stream's: one that ends before response.completed is not
	// stream_incomplete.
	cut := "event: response.created\ndata: {\"type\":\"response.created\",\"response\":{\"status\":\"in_progress\",\"usage\":null},\"sequence_number\":0}\n\n"
	_, ev = tapAnswer(t, "/v1/responses/resp_1?stream=true", false, "text/event-stream", cut, nil)
	if ev.Status.Outcome != audit.OutcomeOK {
		t.Errorf("a cut replay: outcome %s %s; the proxy changed, invert this test", ev.Status.Outcome, ev.Status.Error)
	}
}

// TestKeepAliveTTFTMismatch: with --sse-keep-alive-interval N (default 0,
// off), vLLM sends the SSE comment ": keep-alive\n\n" on chat and completion
// streams after N idle seconds, also while the request is queued or in
// prefill (openai/sse_keep_alive.py, used by chat_completion/api_router.py
// and completion/api_router.py @055e47c2; launchers/cli_args.py). The
// comment passes unchanged and carries no data, but the proxy takes the
// time to first token at the stream's first byte: the first keep-alive,
// not the first token.
func TestKeepAliveTTFTMismatch(t *testing.T) {
	const keepAlive = ": keep-alive\n\n"
	stream := keepAlive + keepAlive + vllmStream(2)
	got, ev, first := tapAnswerFirst(t, "/v1/chat/completions", true, "text/event-stream", stream, []byte{byte(len(keepAlive) - 1), 255})
	if string(got) != stream || ev.Status.Outcome != audit.OutcomeOK || tokens(ev.Output.Tokens) != 51 {
		t.Fatalf("the stream with keep-alives: %d bytes, outcome %s, output tokens %d", len(got), ev.Status.Outcome, tokens(ev.Output.Tokens))
	}
	if string(first.bytes) != keepAlive {
		t.Fatalf("the first read got %q, not the keep-alive alone", first.bytes)
	}
	if !first.ttft {
		t.Error("the time to first token is no longer taken at a keep-alive comment: invert this test")
	}
}

// TestMessagesCachedInputMismatch: vLLM's Messages usage is
// input_tokens = prompt_tokens - cache_read_input_tokens -
// cache_creation_input_tokens, the cache members set when
// --enable-prompt-tokens-details reports them (_build_anthropic_usage,
// anthropic/serving.py @b59bccae; AnthropicUsage member order in
// vllm/entrypoints/anthropic/protocol.py @82df3f49). The event records
// input_tokens alone, so the same prompt counts fewer input tokens through
// /v1/messages than through /v1/chat/completions when the prefix cache hits.
func TestMessagesCachedInputMismatch(t *testing.T) {
	body := `{"id":"chatcmpl-1","type":"message","role":"assistant","content":[{"type":"text","text":"hi"}],"model":"m","stop_reason":"end_turn",` +
		`"usage":{"input_tokens":4,"output_tokens":2,"cache_read_input_tokens":96}}`
	_, ev := tapAnswer(t, "/v1/messages", false, "application/json", body, nil)
	if tokens(ev.Input.Tokens) != 4 || tokens(ev.Output.Tokens) != 2 {
		t.Errorf("tokens %d/%d: if input now counts the cached 96 (vLLM's prompt_tokens 100), invert this test", tokens(ev.Input.Tokens), tokens(ev.Output.Tokens))
	}
}

// TestSageMakerAdapterRoutes: with VLLM_ALLOW_RUNTIME_LORA_UPDATING,
// vLLM's LoRA handlers are also registered with the SageMaker standards
// library (register_load_adapter_handler, register_unload_adapter_handler
// in serve/lora/api_router.py @055e47c2), whose bootstrap (launchers/app.py)
// mounts them at POST /adapters ({"name","src"}: request_shape maps
// lora_name to body.name) and DELETE /adapters/{adapter_name} (lora_name
// from the path; aws/model-hosting-container-standards,
// sagemaker/lora/routes.py). They are LoRA changes like
// /v1/load_lora_adapter: the event names the adapter (and
// TestSageMakerAdapterChangesReadTheModels checks the /v1/models read).
// This was TestSageMakerAdapterRoutesMismatch, which pinned that they were
// not.
func TestSageMakerAdapterRoutes(t *testing.T) {
	for _, tc := range []struct {
		method, path string
		want         bool
	}{
		{"POST", "/adapters", true}, {"DELETE", "/adapters/sql-adapter", true}, {"DELETE", "/adapters/a%2Fb?x=1", true},
		{"POST", "/v1/load_lora_adapter", true}, {"POST", "/v1/unload_lora_adapter?x=1", true},
		{"GET", "/adapters", false}, {"DELETE", "/adapters/", false}, {"DELETE", "/adapters/a/b", false},
		{"POST", "/adapters/sql-adapter", false}, {"GET", "/v1/load_lora_adapter", false}, {"POST", "/adaptersx", false},
	} {
		if got := isLoRAChange(tc.method, tc.path); got != tc.want {
			t.Errorf("%s %s: a LoRA change %v, want %v", tc.method, tc.path, got, tc.want)
		}
	}
	for _, tc := range []struct{ path, body, want string }{
		{"/adapters", `{"name":"sql-adapter","src":"s3://b/a"}`, "sql-adapter"},
		{"/adapters", `{"lora_name":"x","src":"s3://b/a"}`, ""},
		{"/adapters/sql%2Dadapter", ``, "sql-adapter"},
		{"/adapters/bad%zz", ``, ""},
		{"/v1/load_lora_adapter", `{"lora_name":"sql-adapter","lora_path":"/p"}`, "sql-adapter"},
	} {
		var scratch []byte
		f := parseRequestFields([]byte(tc.body), &scratch, "")
		if got, _ := loraAdapterName(tc.path, &f); got != tc.want {
			t.Errorf("%s %s: adapter %q, want %q", tc.path, tc.body, got, tc.want)
		}
	}
}

// TestKeepAliveCommentsPassOnAnyAPI: an SSE comment is never read as an
// event and never removed, whichever API's stream it is in (the proxy
// removes only the usage chunk it asked for).
func TestKeepAliveCommentsPassOnAnyAPI(t *testing.T) {
	stream := ": keep-alive\n\n" + strings.Replace(vllmStream(1), usageChunk, ": keep-alive\n\n"+usageChunk, 1)
	got, ev := runTap(t, stream, true, []byte{5, 90}, 100)
	if want := strings.Replace(stream, usageChunk, "", 1); string(got) != want {
		t.Fatalf("client got %q, want %q", got, want)
	}
	if tokens(ev.Output.Tokens) != 51 || ev.Status.Outcome != audit.OutcomeOK {
		t.Errorf("tokens %d outcome %s", tokens(ev.Output.Tokens), ev.Status.Outcome)
	}
}
