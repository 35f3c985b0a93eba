package fakevllm

import (
	"bufio"
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
)

func sdkClient(base string) openai.Client {
	return openai.NewClient(option.WithBaseURL(base+"/v1"), option.WithAPIKey("unused"), option.WithMaxRetries(0))
}

// topLevelKeys returns the member names of a JSON object in order.
func topLevelKeys(t *testing.T, body []byte) []string {
	t.Helper()
	dec := json.NewDecoder(strings.NewReader(string(body)))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		t.Fatalf("not an object: %s", body)
	}
	var keys []string
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			t.Fatal(err)
		}
		keys = append(keys, tok.(string))
		var skip json.RawMessage
		if err := dec.Decode(&skip); err != nil {
			t.Fatal(err)
		}
	}
	return keys
}

func wantIDs(n int) []int {
	ids := make([]int, n)
	for i := range ids {
		ids[i] = OutputTokenID(i)
	}
	return ids
}

func TestReturnTokenIDsGolden(t *testing.T) {
	_, base := startServer(t, Config{OutputTokens: 3})
	_, body := postJSON(t, base+"/v1/chat/completions",
		`{"messages":[{"role":"user","content":"hello the model"}],"return_token_ids":true,"prompt_logprobs":2}`)
	checkGolden(t, "chat_return_token_ids", normalizeAll(body))
}

// TestReturnTokenIDsChatSDK drives the fake with the official SDK, as a
// client of vLLM's extension would: extra request fields, extra answer
// members.
func TestReturnTokenIDsChatSDK(t *testing.T) {
	_, base := startServer(t, Config{OutputTokens: 4})
	client := sdkClient(base)
	prompt := "tell the model a story"
	resp, err := client.Chat.Completions.New(context.Background(), openai.ChatCompletionNewParams{
		Model:    testModel,
		Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage(prompt)},
	}, option.WithJSONSet("return_token_ids", true))
	if err != nil {
		t.Fatal(err)
	}
	var extras struct {
		PromptTokenIDs []int `json:"prompt_token_ids"`
		Choices        []struct {
			TokenIDs []int `json:"token_ids"`
		} `json:"choices"`
	}
	if err := json.Unmarshal([]byte(resp.RawJSON()), &extras); err != nil {
		t.Fatal(err)
	}
	if got, want := extras.PromptTokenIDs, PromptTokenIDs(prompt); !equalInts(got, want) {
		t.Errorf("prompt_token_ids %v, want %v", got, want)
	}
	if len(extras.PromptTokenIDs) != int(resp.Usage.PromptTokens) {
		t.Errorf("%d prompt ids, usage says %d prompt tokens", len(extras.PromptTokenIDs), resp.Usage.PromptTokens)
	}
	if got := extras.Choices[0].TokenIDs; !equalInts(got, wantIDs(4)) || len(got) != int(resp.Usage.CompletionTokens) {
		t.Errorf("token_ids %v, want %v", got, wantIDs(4))
	}
	// usage is not the last member: the extension members follow it.
	keys := topLevelKeys(t, []byte(resp.RawJSON()))
	want := []string{"id", "object", "created", "model", "choices", "service_tier", "system_fingerprint", "usage", "prompt_logprobs", "prompt_token_ids", "kv_transfer_params"}
	if strings.Join(keys, ",") != strings.Join(want, ",") {
		t.Errorf("members %v, want %v", keys, want)
	}
}

func equalInts(a, b []int) bool {
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

func TestReturnTokenIDsShapes(t *testing.T) {
	_, base := startServer(t, Config{OutputTokens: 2})
	tests := []struct {
		name, path, body string
		keys             []string // top-level members in order
		choiceKeys       []string
	}{
		{
			"chat without extras keeps the old body", "/v1/chat/completions", `{"messages":[{"role":"user","content":"a b"}]}`,
			[]string{"id", "object", "created", "model", "choices", "service_tier", "system_fingerprint", "usage", "prompt_logprobs", "kv_transfer_params"},
			[]string{"index", "message", "logprobs", "finish_reason", "stop_reason"},
		},
		{
			"chat prompt_logprobs only", "/v1/chat/completions", `{"messages":[{"role":"user","content":"a b"}],"prompt_logprobs":0}`,
			[]string{"id", "object", "created", "model", "choices", "service_tier", "system_fingerprint", "usage", "prompt_logprobs", "kv_transfer_params"},
			[]string{"index", "message", "logprobs", "finish_reason", "stop_reason"},
		},
		{
			"completion return_token_ids", "/v1/completions", `{"prompt":"a b","return_token_ids":"yes"}`,
			[]string{"id", "object", "created", "model", "choices", "service_tier", "system_fingerprint", "usage", "kv_transfer_params"},
			[]string{"index", "text", "logprobs", "finish_reason", "stop_reason", "token_ids", "prompt_logprobs", "prompt_token_ids"},
		},
		{
			"last return_token_ids wins", "/v1/completions", `{"prompt":"a b","return_token_ids":true,"return_token_ids":false}`,
			[]string{"id", "object", "created", "model", "choices", "service_tier", "system_fingerprint", "usage", "kv_transfer_params"},
			[]string{"index", "text", "logprobs", "finish_reason", "stop_reason", "prompt_logprobs"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			resp, body := postJSON(t, base+tc.path, tc.body)
			if resp.StatusCode != 200 {
				t.Fatalf("status %d: %s", resp.StatusCode, body)
			}
			if got := topLevelKeys(t, body); strings.Join(got, ",") != strings.Join(tc.keys, ",") {
				t.Errorf("members %v, want %v", got, tc.keys)
			}
			var r struct {
				Choices []json.RawMessage `json:"choices"`
			}
			json.Unmarshal(body, &r)
			if got := topLevelKeys(t, r.Choices[0]); strings.Join(got, ",") != strings.Join(tc.choiceKeys, ",") {
				t.Errorf("choice members %v, want %v", got, tc.choiceKeys)
			}
		})
	}
}

func TestPromptLogprobs(t *testing.T) {
	_, base := startServer(t, Config{OutputTokens: 1})
	for _, tc := range []struct {
		name      string
		n         string
		perPrompt int // entries for each prompt position after the first
	}{
		{"zero is the prompt token only", "0", 1},
		{"one", "1", 1},
		{"three", "3", 3},
		{"minus one is the whole vocabulary", "-1", len(words)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, body := postJSON(t, base+"/v1/chat/completions", `{"messages":[{"role":"user","content":"x the y"}],"prompt_logprobs":`+tc.n+`}`)
			var r struct {
				PromptLogprobs []map[string]struct {
					Logprob      float64 `json:"logprob"`
					Rank         int     `json:"rank"`
					DecodedToken string  `json:"decoded_token"`
				} `json:"prompt_logprobs"`
			}
			if err := json.Unmarshal(body, &r); err != nil {
				t.Fatalf("%v: %s", err, body)
			}
			ids := PromptTokenIDs("x the y")
			if len(r.PromptLogprobs) != len(ids) || r.PromptLogprobs[0] != nil {
				t.Fatalf("prompt_logprobs %v, want null then %d entries", r.PromptLogprobs, len(ids)-1)
			}
			for i, pos := range r.PromptLogprobs[1:] {
				if len(pos) != tc.perPrompt {
					t.Errorf("position %d has %d entries, want %d", i+1, len(pos), tc.perPrompt)
				}
				tok := pos[jsonInt(ids[i+1])]
				if tok.Rank != 1 || tok.Logprob != -0.5 {
					t.Errorf("position %d: prompt token %d is %+v, want rank 1", i+1, ids[i+1], tok)
				}
			}
		})
	}
}

func jsonInt(i int) string { b, _ := json.Marshal(i); return string(b) }

func TestReturnTokenIDsStreams(t *testing.T) {
	_, base := startServer(t, Config{OutputTokens: 3})
	t.Run("chat", func(t *testing.T) {
		_, events, err := postStream(t, base+"/v1/chat/completions",
			`{"messages":[{"role":"user","content":"a b c"}],"stream":true,"return_token_ids":true,"stream_options":{"continuous_usage_stats":true}}`, nil)
		if err != nil {
			t.Fatal(err)
		}
		// role chunk, 3 content chunks, usage chunk, [DONE]
		if len(events) != 6 {
			t.Fatalf("%d events: %v", len(events), events)
		}
		if got := topLevelKeys(t, []byte(events[0])); strings.Join(got, ",") != "id,object,created,model,choices,usage,prompt_token_ids" {
			t.Errorf("first chunk members %v", got)
		}
		var first struct {
			PromptTokenIDs []int `json:"prompt_token_ids"`
		}
		json.Unmarshal([]byte(events[0]), &first)
		if !equalInts(first.PromptTokenIDs, PromptTokenIDs("a b c")) {
			t.Errorf("first chunk prompt_token_ids %v", first.PromptTokenIDs)
		}
		for i, ev := range events[1:4] {
			if strings.Contains(ev, "prompt_token_ids") {
				t.Errorf("chunk %d repeats prompt_token_ids: %s", i+1, ev)
			}
			var c struct {
				Choices []struct {
					TokenIDs []int `json:"token_ids"`
				} `json:"choices"`
			}
			json.Unmarshal([]byte(ev), &c)
			if !equalInts(c.Choices[0].TokenIDs, []int{OutputTokenID(i)}) {
				t.Errorf("chunk %d token_ids %v", i+1, c.Choices[0].TokenIDs)
			}
		}
	})
	t.Run("completion", func(t *testing.T) {
		_, events, err := postStream(t, base+"/v1/completions", `{"prompt":[5,6],"stream":true,"return_token_ids":true}`, nil)
		if err != nil {
			t.Fatal(err)
		}
		for i, ev := range events[:3] {
			var c struct {
				Choices []struct {
					PromptTokenIDs *[]int `json:"prompt_token_ids"`
					TokenIDs       []int  `json:"token_ids"`
				} `json:"choices"`
			}
			if err := json.Unmarshal([]byte(ev), &c); err != nil {
				t.Fatal(err)
			}
			ch := c.Choices[0]
			if i == 0 && (ch.PromptTokenIDs == nil || !equalInts(*ch.PromptTokenIDs, []int{5, 6})) {
				t.Errorf("first chunk prompt_token_ids %v, want [5 6]", ch.PromptTokenIDs)
			}
			if i > 0 && ch.PromptTokenIDs != nil {
				t.Errorf("chunk %d prompt_token_ids %v, want null", i, *ch.PromptTokenIDs)
			}
			if !equalInts(ch.TokenIDs, []int{OutputTokenID(i)}) {
				t.Errorf("chunk %d token_ids %v", i, ch.TokenIDs)
			}
		}
	})
}

// TestFirstChunkOverOneMiB: a long prompt's prompt_token_ids make the first
// SSE event larger than 1 MiB, before any content.
func TestFirstChunkOverOneMiB(t *testing.T) {
	const words = 250000
	_, base := startServer(t, Config{OutputTokens: 2, MaxModelLen: words + 100})
	prompt := strings.Repeat("audit ", words)
	req, _ := http.NewRequest("POST", base+"/v1/chat/completions",
		strings.NewReader(`{"messages":[{"role":"user","content":"`+prompt+`"}],"stream":true,"return_token_ids":true}`))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	br := bufio.NewReaderSize(resp.Body, 1<<16)
	line, err := br.ReadString('\n')
	if err != nil {
		t.Fatal(err)
	}
	if len(line) <= 1<<20 {
		t.Fatalf("first event is %d bytes, want more than 1 MiB", len(line))
	}
	var first struct {
		Choices []struct {
			Delta struct {
				Role string `json:"role"`
			} `json:"delta"`
		} `json:"choices"`
		PromptTokenIDs []int `json:"prompt_token_ids"`
	}
	if err := json.Unmarshal([]byte(strings.TrimPrefix(line, "data: ")), &first); err != nil {
		t.Fatal(err)
	}
	if len(first.PromptTokenIDs) != words || first.Choices[0].Delta.Role != "assistant" {
		t.Errorf("first event has %d prompt ids and role %q", len(first.PromptTokenIDs), first.Choices[0].Delta.Role)
	}
}

func TestTokenIDsErrors(t *testing.T) {
	_, base := startServer(t, Config{})
	tests := []struct {
		name, path, body, msg string
	}{
		{"prompt_logprobs in a stream", "/v1/chat/completions", `{"messages":[],"stream":true,"prompt_logprobs":1}`, "not available when `stream=True`"},
		{"prompt_logprobs -1 in a stream", "/v1/completions", `{"prompt":"x","stream":true,"prompt_logprobs":-1}`, "not available when `stream=True`"},
		{"prompt_logprobs below -1", "/v1/completions", `{"prompt":"x","prompt_logprobs":-2}`, "positive value or -1"},
		{"prompt_logprobs a string", "/v1/completions", `{"prompt":"x","prompt_logprobs":"1"}`, "must be an integer"},
		{"prompt_logprobs a fraction", "/v1/completions", `{"prompt":"x","prompt_logprobs":1.5}`, "body.prompt_logprobs"},
		{"return_token_ids not a bool", "/v1/chat/completions", `{"messages":[],"return_token_ids":"maybe"}`, "body.return_token_ids"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			resp, body := postJSON(t, base+tc.path, tc.body)
			if resp.StatusCode != 400 {
				t.Fatalf("status %d: %s", resp.StatusCode, body)
			}
			checkErrorBody(t, body, 400, "BadRequestError", tc.msg)
		})
	}
	// prompt_logprobs 0 is allowed in a stream, and adds nothing to it.
	resp, events, err := postStream(t, base+"/v1/completions", `{"prompt":"x","stream":true,"prompt_logprobs":0}`, nil)
	if err != nil || resp.StatusCode != 200 || strings.Contains(strings.Join(events, ""), "prompt_logprobs") {
		t.Errorf("status %d err %v events %v", resp.StatusCode, err, events)
	}
}

func TestPromptTokenIDs(t *testing.T) {
	tests := []struct {
		text string
		want []int
	}{
		{"", []int{BOSTokenID}},
		{"the model", []int{outputIDBase, outputIDBase + 1}},
		{"  the\n\tmodel  ", []int{outputIDBase, outputIDBase + 1}},
	}
	for _, tc := range tests {
		if got := PromptTokenIDs(tc.text); !equalInts(got, tc.want) {
			t.Errorf("PromptTokenIDs(%q) = %v, want %v", tc.text, got, tc.want)
		}
	}
	// Other words: stable, outside the output vocabulary, one per word.
	a, b := PromptTokenIDs("hello world"), PromptTokenIDs("hello world")
	if !equalInts(a, b) || len(a) != 2 || a[0] < promptIDBase || a[0] >= promptIDBase+promptIDSpan {
		t.Errorf("PromptTokenIDs(hello world) = %v then %v", a, b)
	}
	if n := CountWords([]byte("a b  c\nd")); len(PromptTokenIDs("a b  c\nd")) != n {
		t.Errorf("ids and CountWords disagree: %d words", n)
	}
}
