package fakevllm

import (
	"encoding/json"
	"io"
	"net"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"
)

const testModel = "meta-llama/Llama-3.1-8B-Instruct"

func startServer(t *testing.T, cfg Config) (*Server, string) {
	t.Helper()
	s := New(cfg)
	base, err := s.Start("127.0.0.1:0")
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s, base
}

func do(t *testing.T, method, url, body string, hdr map[string]string) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: reading body: %v", method, url, err)
	}
	return resp, b
}

// volatile matches the parts of a body that change per request (ids,
// creation times, embedding values) so that the rest can be compared byte
// for byte with what vLLM writes.
var volatile = []struct {
	re   *regexp.Regexp
	repl string
}{
	{regexp.MustCompile(`"(chatcmpl|cmpl|embd|modelperm)-[0-9a-f]{32}"`), `"$1-ID"`},
	{regexp.MustCompile(`"created":\d+`), `"created":T`},
	{regexp.MustCompile(`"(resp|msg)_[0-9a-f]{32}"`), `"${1}_ID"`},
	{regexp.MustCompile(`"(id|item_id)":"[0-9a-f]{32}"`), `"$1":"ITEM"`},
	{regexp.MustCompile(`"created_at":\d+`), `"created_at":T`},
	{regexp.MustCompile(`"embedding":\[[^\]]*\]`), `"embedding":[E]`},
}

func normalize(b []byte) string {
	s := string(b)
	for _, v := range volatile {
		s = v.re.ReplaceAllString(s, v.repl)
	}
	return s
}

func TestEndpointShapes(t *testing.T) {
	_, base := startServer(t, Config{OutputTokens: 4})
	tests := []struct {
		name, method, path, body string
		status                   int
		contentType              string
		want                     string // normalized body
	}{
		{
			name: "chat", method: "POST", path: "/v1/chat/completions",
			body:   `{"model":"` + testModel + `","messages":[{"role":"system","content":"be brief"},{"role":"user","content":[{"type":"text","text":"hello  there\nworld"}]}],"max_tokens":3}`,
			status: 200, contentType: "application/json",
			want: `{"id":"chatcmpl-ID","object":"chat.completion","created":T,"model":"meta-llama/Llama-3.1-8B-Instruct",` +
				`"choices":[{"index":0,"message":{"role":"assistant","content":"the model answers ","refusal":null,"annotations":null,` +
				`"audio":null,"function_call":null,"tool_calls":[],"reasoning_content":null},"logprobs":null,"finish_reason":"length",` +
				`"stop_reason":null}],"service_tier":null,"system_fingerprint":null,"usage":{"prompt_tokens":5,"total_tokens":8,` +
				`"completion_tokens":3,"prompt_tokens_details":null},"prompt_logprobs":null,"kv_transfer_params":null}`,
		},
		{
			name: "chat without max_tokens stops by itself", method: "POST", path: "/v1/chat/completions",
			body:   `{"messages":[{"role":"user","content":"hi"}],"max_completion_tokens":9}`,
			status: 200, contentType: "application/json",
			want: `{"id":"chatcmpl-ID","object":"chat.completion","created":T,"model":"meta-llama/Llama-3.1-8B-Instruct",` +
				`"choices":[{"index":0,"message":{"role":"assistant","content":"the model answers with ","refusal":null,"annotations":null,` +
				`"audio":null,"function_call":null,"tool_calls":[],"reasoning_content":null},"logprobs":null,"finish_reason":"stop",` +
				`"stop_reason":null}],"service_tier":null,"system_fingerprint":null,"usage":{"prompt_tokens":1,"total_tokens":5,` +
				`"completion_tokens":4,"prompt_tokens_details":null},"prompt_logprobs":null,"kv_transfer_params":null}`,
		},
		{
			name: "completion", method: "POST", path: "/v1/completions",
			body:   `{"model":"` + testModel + `","prompt":"once upon a time","max_tokens":2}`,
			status: 200, contentType: "application/json",
			want: `{"id":"cmpl-ID","object":"text_completion","created":T,"model":"meta-llama/Llama-3.1-8B-Instruct",` +
				`"choices":[{"index":0,"text":"the model ","logprobs":null,"finish_reason":"length","stop_reason":null,"prompt_logprobs":null}],` +
				`"service_tier":null,"system_fingerprint":null,"usage":{"prompt_tokens":4,"total_tokens":6,"completion_tokens":2,` +
				`"prompt_tokens_details":null},"kv_transfer_params":null}`,
		},
		{
			name: "embeddings batch", method: "POST", path: "/v1/embeddings",
			body:   `{"model":"` + testModel + `","input":["one two","three"]}`,
			status: 200, contentType: "application/json",
			want: `{"id":"embd-ID","object":"list","created":T,"model":"meta-llama/Llama-3.1-8B-Instruct",` +
				`"data":[{"index":0,"object":"embedding","embedding":[E]},{"index":1,"object":"embedding","embedding":[E]}],` +
				`"usage":{"prompt_tokens":3,"total_tokens":3,"completion_tokens":0,"prompt_tokens_details":null}}`,
		},
		{
			name: "embeddings single", method: "POST", path: "/v1/embeddings",
			body:   `{"input":"one"}`,
			status: 200, contentType: "application/json",
			want: `{"id":"embd-ID","object":"list","created":T,"model":"meta-llama/Llama-3.1-8B-Instruct",` +
				`"data":[{"index":0,"object":"embedding","embedding":[E]}],` +
				`"usage":{"prompt_tokens":1,"total_tokens":1,"completion_tokens":0,"prompt_tokens_details":null}}`,
		},
		{
			name: "models", method: "GET", path: "/v1/models",
			status: 200, contentType: "application/json",
			want: `{"object":"list","data":[{"id":"meta-llama/Llama-3.1-8B-Instruct","object":"model","created":T,"owned_by":"vllm",` +
				`"root":"/models/meta-llama/Llama-3.1-8B-Instruct","parent":null,"max_model_len":8192,"permission":[{"id":"modelperm-ID",` +
				`"object":"model_permission","created":T,"allow_create_engine":false,"allow_sampling":true,"allow_logprobs":true,` +
				`"allow_search_indices":false,"allow_view":true,"allow_fine_tuning":false,"organization":"*","group":null,"is_blocking":false}]}]}`,
		},
		{name: "version", method: "GET", path: "/version", status: 200, contentType: "application/json", want: `{"version":"0.11.0"}`},
		{name: "health", method: "GET", path: "/health", status: 200, want: ``},
		{name: "unknown path", method: "GET", path: "/v2/nothing", status: 404, contentType: "application/json", want: `{"detail":"Not Found"}`},
		{name: "wrong method", method: "GET", path: "/v1/chat/completions", status: 405, contentType: "application/json", want: `{"detail":"Method Not Allowed"}`},
		{
			name: "unknown model", method: "POST", path: "/v1/chat/completions",
			body:   `{"model":"gpt-4","messages":[{"role":"user","content":"hi"}]}`,
			status: 404, contentType: "application/json",
			want: `{"error":{"message":"The model ` + "`gpt-4`" + ` does not exist.","type":"NotFoundError","param":null,"code":404}}`,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			resp, body := do(t, tc.method, base+tc.path, tc.body, nil)
			if resp.StatusCode != tc.status {
				t.Fatalf("status %d, want %d; body %s", resp.StatusCode, tc.status, body)
			}
			if got := resp.Header.Get("Server"); got != "uvicorn" {
				t.Errorf("Server header %q, want uvicorn", got)
			}
			if tc.contentType != "" && resp.Header.Get("Content-Type") != tc.contentType {
				t.Errorf("Content-Type %q, want %q", resp.Header.Get("Content-Type"), tc.contentType)
			}
			if resp.ContentLength != int64(len(body)) {
				t.Errorf("Content-Length %d, body %d bytes", resp.ContentLength, len(body))
			}
			if got := normalize(body); got != tc.want {
				t.Errorf("body differs from vLLM's\n got: %s\nwant: %s", got, tc.want)
			}
			if len(body) > 0 && !json.Valid(body) {
				t.Errorf("body is not valid JSON: %s", body)
			}
		})
	}
}

// chatResponse holds the fields tests check after decoding with encoding/json.
type chatResponse struct {
	ID      string `json:"id"`
	Object  string `json:"object"`
	Created int64  `json:"created"`
	Model   string `json:"model"`
	Choices []struct {
		Message struct {
			Role    string `json:"role"`
			Content string `json:"content"`
		} `json:"message"`
		Text         string `json:"text"`
		FinishReason string `json:"finish_reason"`
	} `json:"choices"`
	Usage usage `json:"usage"`
}

type usage struct {
	PromptTokens     int `json:"prompt_tokens"`
	CompletionTokens int `json:"completion_tokens"`
	TotalTokens      int `json:"total_tokens"`
}

func TestUsageMatchesGeneratedTokens(t *testing.T) {
	s, base := startServer(t, Config{OutputTokens: 100})
	prompt := strings.Repeat("word ", 37)
	tests := []struct {
		name, body   string
		wantTokens   int
		wantFinish   string
		wantPrompt   int
		isCompletion bool
	}{
		{"default output tokens", `{"messages":[{"role":"user","content":"` + prompt + `"}]}`, 100, "stop", 37, false},
		{"max_tokens caps", `{"messages":[{"role":"user","content":"` + prompt + `"}],"max_tokens":40}`, 40, "length", 37, false},
		{"max_tokens above output tokens", `{"messages":[{"role":"user","content":"x"}],"max_tokens":500}`, 100, "stop", 1, false},
		{"empty prompt counts one", `{"messages":[{"role":"user","content":""}],"max_tokens":1}`, 1, "length", 1, false},
		{"completion token ids", `{"prompt":[1,2,3,4],"max_tokens":7}`, 7, "length", 4, true},
	}
	var wantPrompt, wantCompletion int64
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			path := "/v1/chat/completions"
			if tc.isCompletion {
				path = "/v1/completions"
			}
			resp, body := do(t, "POST", base+path, tc.body, nil)
			if resp.StatusCode != 200 {
				t.Fatalf("status %d: %s", resp.StatusCode, body)
			}
			var r chatResponse
			if err := json.Unmarshal(body, &r); err != nil {
				t.Fatalf("decoding %s: %v", body, err)
			}
			text := r.Choices[0].Message.Content + r.Choices[0].Text
			if text != GeneratedText(tc.wantTokens) {
				t.Errorf("text %q, want %d tokens %q", text, tc.wantTokens, GeneratedText(tc.wantTokens))
			}
			want := usage{tc.wantPrompt, tc.wantTokens, tc.wantPrompt + tc.wantTokens}
			if r.Usage != want {
				t.Errorf("usage %+v, want %+v", r.Usage, want)
			}
			if r.Choices[0].FinishReason != tc.wantFinish {
				t.Errorf("finish_reason %q, want %q", r.Choices[0].FinishReason, tc.wantFinish)
			}
			if r.Model != testModel || r.Created == 0 {
				t.Errorf("model %q created %d", r.Model, r.Created)
			}
			wantPrompt += int64(tc.wantPrompt)
			wantCompletion += int64(tc.wantTokens)
		})
	}
	st := s.Stats()
	if st.PromptTokens != wantPrompt || st.CompletionTokens != wantCompletion || st.Requests != int64(len(tests)) {
		t.Errorf("stats %+v, want %d requests, %d prompt and %d completion tokens", st, len(tests), wantPrompt, wantCompletion)
	}
}

func TestEmbeddingsDeterministic(t *testing.T) {
	_, base := startServer(t, Config{})
	var first []float64
	for range 2 {
		_, body := do(t, "POST", base+"/v1/embeddings", `{"input":"same text"}`, nil)
		var r struct {
			Data []struct {
				Embedding []float64 `json:"embedding"`
			} `json:"data"`
		}
		if err := json.Unmarshal(body, &r); err != nil {
			t.Fatalf("decoding %s: %v", body, err)
		}
		got := r.Data[0].Embedding
		if len(got) != EmbeddingDim {
			t.Fatalf("dimension %d, want %d", len(got), EmbeddingDim)
		}
		if first != nil && !equalFloats(first, got) {
			t.Fatalf("same input gave %v then %v", first, got)
		}
		first = got
	}
	if want := EmbeddingFor([]byte(`"same text"`)); !equalFloats(first, want) {
		t.Errorf("embedding %v, EmbeddingFor says %v", first, want)
	}
}

func equalFloats(a, b []float64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestErrors(t *testing.T) {
	_, base := startServer(t, Config{MaxModelLen: 100})
	_, strict := startServer(t, Config{RequireModel: true})
	tests := []struct {
		name, url, body string
		status          int
		errType         string
		msgContains     string
	}{
		{"malformed JSON", base + "/v1/chat/completions", `{"messages":`, 400, "BadRequestError", "JSON decode error"},
		{"not an object", base + "/v1/chat/completions", `[1]`, 400, "BadRequestError", "dictionary"},
		{"missing messages", base + "/v1/chat/completions", `{"model":"` + testModel + `"}`, 400, "BadRequestError", "body.messages"},
		{"missing prompt", base + "/v1/completions", `{}`, 400, "BadRequestError", "body.prompt"},
		{"missing input", base + "/v1/embeddings", `{}`, 400, "BadRequestError", "body.input"},
		{"unknown model", base + "/v1/completions", `{"model":"nope","prompt":"x"}`, 404, "NotFoundError", "`nope` does not exist"},
		{"model not a string", base + "/v1/completions", `{"model":1,"prompt":"x"}`, 400, "BadRequestError", "body.model"},
		{"missing model when required", strict + "/v1/chat/completions", `{"messages":[]}`, 400, "BadRequestError", "body.model"},
		{"max_tokens zero", base + "/v1/completions", `{"prompt":"x","max_tokens":0}`, 400, "BadRequestError", "at least 1"},
		{"max_tokens beyond context", base + "/v1/completions", `{"prompt":"x","max_tokens":100}`, 400, "BadRequestError", "maximum context length is 100"},
		{"prompt beyond context", base + "/v1/completions", `{"prompt":"` + strings.Repeat("w ", 100) + `"}`, 400, "BadRequestError", "100 input tokens"},
		{"stream_options without stream", base + "/v1/chat/completions", `{"messages":[],"stream_options":{"include_usage":true}}`, 400, "BadRequestError", "stream=True"},
		{"last of two models", base + "/v1/completions", `{"model":"` + testModel + `","model":"nope","prompt":"x"}`, 404, "NotFoundError", "`nope` does not exist"},
		{"stream not a bool", base + "/v1/completions", `{"prompt":"x","stream":2}`, 400, "BadRequestError", "body.stream"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			resp, body := do(t, "POST", tc.url, tc.body, nil)
			if resp.StatusCode != tc.status {
				t.Fatalf("status %d, want %d: %s", resp.StatusCode, tc.status, body)
			}
			var e struct {
				Error struct {
					Message string  `json:"message"`
					Type    string  `json:"type"`
					Param   *string `json:"param"`
					Code    int     `json:"code"`
				} `json:"error"`
			}
			if err := json.Unmarshal(body, &e); err != nil {
				t.Fatalf("decoding %s: %v", body, err)
			}
			if e.Error.Type != tc.errType || e.Error.Code != tc.status || e.Error.Param != nil {
				t.Errorf("error %+v, want type %s code %d param null", e.Error, tc.errType, tc.status)
			}
			if !strings.Contains(e.Error.Message, tc.msgContains) {
				t.Errorf("message %q lacks %q", e.Error.Message, tc.msgContains)
			}
		})
	}
}

func TestBadHookHeader(t *testing.T) {
	_, base := startServer(t, Config{})
	resp, body := do(t, "POST", base+"/v1/chat/completions", `{"messages":[]}`, map[string]string{HeaderMidstreamError: "soon"})
	if resp.StatusCode != 400 || !strings.Contains(string(body), HeaderMidstreamError) {
		t.Errorf("status %d body %s, want 400 naming the header", resp.StatusCode, body)
	}
}

func TestPacing(t *testing.T) {
	_, base := startServer(t, Config{TTFT: 30 * time.Millisecond, InterTokenLatency: 10 * time.Millisecond, OutputTokens: 5})
	tests := []struct {
		name string
		hdr  map[string]string
		min  time.Duration
		max  time.Duration
	}{
		{"config pacing", nil, 80 * time.Millisecond, 2 * time.Second},
		{"header override", map[string]string{HeaderTTFT: "0s", HeaderITL: "0s"}, 0, 50 * time.Millisecond},
		{"delay before headers", map[string]string{HeaderTTFT: "0s", HeaderITL: "0s", HeaderDelayMs: "120"}, 120 * time.Millisecond, 2 * time.Second},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			start := time.Now()
			resp, body := do(t, "POST", base+"/v1/chat/completions", `{"messages":[{"role":"user","content":"hi"}]}`, tc.hdr)
			took := time.Since(start)
			if resp.StatusCode != 200 {
				t.Fatalf("status %d: %s", resp.StatusCode, body)
			}
			if took < tc.min || took > tc.max {
				t.Errorf("answer took %v, want between %v and %v", took, tc.min, tc.max)
			}
		})
	}
}

func TestServeAfterClose(t *testing.T) {
	s := New(Config{})
	s.Close()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Serve(ln); err == nil {
		t.Error("Serve after Close returned nil, want an error")
	}
}

// TestReadsTheBodyAsVLLMDoes: duplicate keys keep their last value, bool
// fields take pydantic's lax forms, and include_usage null is false.
func TestReadsTheBodyAsVLLMDoes(t *testing.T) {
	_, base := startServer(t, Config{})
	for _, tc := range []struct {
		name, body string
		sse, usage bool
	}{
		{"last stream wins", `{"model":"nope","model":"` + testModel + `","prompt":"x","stream":true,"stream":false}`, false, false},
		{"stream \"yes\"", `{"prompt":"x","stream":"yes"}`, true, false},
		{"stream 1", `{"prompt":"x","stream":1}`, true, false},
		{"stream_options {} sends usage", `{"prompt":"x","stream":true,"stream_options":{}}`, true, true},
		{"include_usage null is false", `{"prompt":"x","stream":true,"stream_options":{"include_usage":null}}`, true, false},
		{"last include_usage wins", `{"prompt":"x","stream":true,"stream_options":{"include_usage":true,"include_usage":false}}`, true, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, body := do(t, "POST", base+"/v1/completions", tc.body, nil)
			if resp.StatusCode != 200 {
				t.Fatalf("%d %s", resp.StatusCode, body)
			}
			if sse := strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream"); sse != tc.sse {
				t.Errorf("streamed %v, want %v", sse, tc.sse)
			}
			if tc.sse {
				if usage := strings.Contains(string(body), `"choices":[],"usage"`); usage != tc.usage {
					t.Errorf("usage chunk %v, want %v:\n%s", usage, tc.usage, body)
				}
			}
		})
	}
}
