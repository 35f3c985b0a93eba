package fakevllm

import (
	"encoding/json"
	"strings"
	"testing"
)

func TestInvocations(t *testing.T) {
	_, base := startServer(t, Config{OutputTokens: 2})
	tests := []struct {
		name, body string
		status     int
		want       string // a member the routed endpoint's answer has
	}{
		{"messages is chat", `{"messages":[{"role":"user","content":"hi"}]}`, 200, `"object":"chat.completion"`},
		{"chat before completion", `{"messages":[],"prompt":"x"}`, 200, `"object":"chat.completion"`},
		{"messages not a list falls through", `{"messages":"hi","prompt":"x"}`, 200, `"object":"text_completion"`},
		{"prompt is completion", `{"prompt":"x"}`, 200, `"object":"text_completion"`},
		{"empty prompt is not a completion", `{"prompt":"","input":"x"}`, 200, `"object":"embedding"`},
		{"input is embeddings", `{"input":["a","b"]}`, 200, `"object":"embedding"`},
		{"query and documents is rerank", `{"query":"q","documents":["d"]}`, 200, `"results"`},
		{"score pair is score", `{"text_1":"q","text_2":"d"}`, 200, `"object":"score"`},
		{"completion stream", `{"prompt":"x","stream":true}`, 200, `data: [DONE]`},
		{"nothing matches", `{"query":"q"}`, 400, `Cannot find suitable handler for request. Expected one of: ['ChatCompletionRequest', 'CompletionRequest', 'EmbeddingRequest', 'RerankRequest', 'ScoreRequest']`},
		{"not an object", `[1,2]`, 400, `Cannot find suitable handler`},
		{"malformed JSON", `{"prompt":`, 400, `"type":"Bad Request"`},
		{"routed errors are the endpoint's", `{"prompt":"x","model":"nope"}`, 404, "`nope` does not exist"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			resp, body := postJSON(t, base+"/invocations", tc.body)
			if resp.StatusCode != tc.status {
				t.Fatalf("status %d, want %d: %s", resp.StatusCode, tc.status, body)
			}
			if !strings.Contains(string(body), tc.want) {
				t.Errorf("answer %s lacks %s", body, tc.want)
			}
		})
	}
	t.Run("not JSON content type", func(t *testing.T) {
		resp, body := do(t, "POST", base+"/invocations", `{"prompt":"x"}`, map[string]string{"Content-Type": "application/x-www-form-urlencoded"})
		if resp.StatusCode != 400 {
			t.Fatalf("status %d: %s", resp.StatusCode, body)
		}
		checkErrorBody(t, body, 400, "Bad Request", "Unsupported Media Type")
	})
	t.Run("same bytes as the endpoint", func(t *testing.T) {
		body := `{"messages":[{"role":"user","content":"hi"}],"max_tokens":1}`
		_, a := postJSON(t, base+"/invocations", body)
		_, b := postJSON(t, base+"/v1/chat/completions", body)
		if normalizeAll(a) != normalizeAll(b) {
			t.Errorf("invocations %s\nchat        %s", a, b)
		}
	})
}

// TestForceIncludeUsage: what each --enable-force-include-usage behaviour
// does to chat and completion streams.
func TestForceIncludeUsage(t *testing.T) {
	tests := []struct {
		name          string
		force         ForceUsage
		options       string // stream_options member, "" for none
		usageChunk    bool
		perChunkUsage bool
	}{
		{"off, nothing asked", ForceUsageOff, "", false, false},
		{"off, include_usage", ForceUsageOff, `{"include_usage":true}`, true, false},
		{"final, nothing asked", ForceUsageFinal, "", true, false},
		{"final, include_usage false", ForceUsageFinal, `{"include_usage":false}`, true, false},
		{"final, continuous asked with include_usage false", ForceUsageFinal, `{"include_usage":false,"continuous_usage_stats":true}`, true, true},
		{"every, nothing asked", ForceUsageEvery, "", true, true},
		{"every, include_usage false", ForceUsageEvery, `{"include_usage":false}`, true, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, base := startServer(t, Config{OutputTokens: 2, ForceIncludeUsage: tc.force})
			for _, path := range []string{"/v1/chat/completions", "/v1/completions"} {
				body := `{"prompt":"a b","messages":[{"role":"user","content":"a b"}],"stream":true`
				if tc.options != "" {
					body += `,"stream_options":` + tc.options
				}
				_, events, err := postStream(t, base+path, body+"}", nil)
				if err != nil {
					t.Fatal(err)
				}
				var chunks []chunk
				for _, ev := range events[:len(events)-1] {
					var c chunk
					if err := json.Unmarshal([]byte(ev), &c); err != nil {
						t.Fatal(err)
					}
					chunks = append(chunks, c)
				}
				last := chunks[len(chunks)-1]
				if got := len(last.Choices) == 0 && last.Usage != nil; got != tc.usageChunk {
					t.Errorf("%s: usage chunk %v, want %v", path, got, tc.usageChunk)
				}
				if tc.usageChunk && *last.Usage != (usage{2, 2, 4}) {
					t.Errorf("%s: usage %+v", path, *last.Usage)
				}
				content := chunks
				if tc.usageChunk {
					content = chunks[:len(chunks)-1]
				}
				for i, c := range content {
					if (c.Usage != nil) != tc.perChunkUsage {
						t.Errorf("%s: chunk %d usage %v, want per-chunk usage %v", path, i, c.Usage, tc.perChunkUsage)
					}
				}
			}
		})
	}
}

func TestParseForceUsage(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want ForceUsage
		ok   bool
	}{
		{"", ForceUsageOff, true}, {"off", ForceUsageOff, true}, {"final", ForceUsageFinal, true},
		{"every", ForceUsageEvery, true}, {"true", ForceUsageOff, false}, {"Final", ForceUsageOff, false},
	} {
		got, err := ParseForceUsage(tc.in)
		if (err == nil) != tc.ok || got != tc.want {
			t.Errorf("ParseForceUsage(%q) = %v, %v", tc.in, got, err)
		}
		if tc.ok && tc.in != "" && got.String() != tc.in {
			t.Errorf("%v.String() = %q", got, got.String())
		}
	}
}

// TestPoolingUsage: vLLM's UsageInfo for pooling answers has
// completion_tokens 0 (not absent, not null) and prompt_tokens_details null.
func TestPoolingUsage(t *testing.T) {
	_, base := startServer(t, Config{})
	for _, tc := range []struct{ path, body string }{
		{"/v1/embeddings", `{"input":"a b c"}`},
		{"/score", `{"text_1":"a","text_2":"b c"}`},
	} {
		_, body := postJSON(t, base+tc.path, tc.body)
		var r struct {
			Usage map[string]json.RawMessage `json:"usage"`
		}
		if err := json.Unmarshal(body, &r); err != nil {
			t.Fatal(err)
		}
		if string(r.Usage["completion_tokens"]) != "0" || string(r.Usage["prompt_tokens_details"]) != "null" ||
			string(r.Usage["prompt_tokens"]) != "3" || string(r.Usage["total_tokens"]) != "3" {
			t.Errorf("%s usage %s", tc.path, body)
		}
	}
}

// TestNoModel: every endpoint serves a request without "model" with the
// first served name.
func TestNoModel(t *testing.T) {
	_, base := startServer(t, Config{})
	for _, tc := range []struct{ path, body string }{
		{"/v1/chat/completions", `{"messages":[{"role":"user","content":"x"}]}`},
		{"/v1/completions", `{"prompt":"x","model":null}`},
		{"/v1/completions", `{"prompt":"x","model":""}`},
		{"/v1/embeddings", `{"input":"x"}`},
		{"/rerank", `{"query":"x","documents":["y"]}`},
		{"/score", `{"text_1":"x","text_2":"y"}`},
		{"/invocations", `{"prompt":"x"}`},
	} {
		resp, body := postJSON(t, base+tc.path, tc.body)
		if resp.StatusCode != 200 || !strings.Contains(string(body), `"model":"`+testModel+`"`) {
			t.Errorf("%s: %d %s", tc.path, resp.StatusCode, body)
		}
	}
	resp, body := postForm(t, base+"/v1/audio/transcriptions", []formField{{name: "file", file: makeWAV(1)}, {name: "stream", value: "true"}})
	if resp.StatusCode != 200 || !strings.Contains(string(body), `"model":"`+testModel+`"`) {
		t.Errorf("transcription stream: %d %s", resp.StatusCode, body)
	}
}

// TestLargeBodies: the fake takes request bodies up to
// Config.MaxRequestBodySize, so tests can send what vLLM accepts.
func TestLargeBodies(t *testing.T) {
	_, base := startServer(t, Config{MaxRequestBodySize: 48 << 20, MaxModelLen: 1 << 20})
	image := strings.Repeat("A", 40<<20) // a 40 MiB base64 image part
	body := `{"messages":[{"role":"user","content":[{"type":"text","text":"describe"},{"type":"image_url","image_url":{"url":"data:image/png;base64,` + image + `"}}]}],"max_tokens":1}`
	resp, out := postJSON(t, base+"/v1/chat/completions", body)
	if resp.StatusCode != 200 {
		t.Fatalf("40 MiB body: status %d: %.200s", resp.StatusCode, out)
	}
}
