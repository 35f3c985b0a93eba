package fakevllm

import (
	"bufio"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// readEvents returns the data payloads of an SSE body in order and the error
// that ended it (nil at a clean end).
func readEvents(r io.Reader) ([]string, error) {
	var events []string
	br := bufio.NewReader(r)
	for {
		line, err := br.ReadString('\n')
		if strings.HasPrefix(line, "data: ") && strings.HasSuffix(line, "\n") {
			events = append(events, strings.TrimSuffix(strings.TrimPrefix(line, "data: "), "\n"))
		} else if line != "\n" && line != "" {
			return events, errors.New("unexpected SSE line " + strconv.Quote(line))
		}
		if err == io.EOF {
			return events, nil
		}
		if err != nil {
			return events, err
		}
	}
}

func postStream(t *testing.T, url, body string, hdr map[string]string) (*http.Response, []string, error) {
	t.Helper()
	req, err := http.NewRequest("POST", url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("POST %s: %v", url, err)
	}
	defer resp.Body.Close()
	events, err := readEvents(resp.Body)
	return resp, events, err
}

// chunk holds the decoded fields of a chat or completion stream chunk.
type chunk struct {
	ID      string `json:"id"`
	Object  string `json:"object"`
	Created int64  `json:"created"`
	Model   string `json:"model"`
	Choices []struct {
		Index int `json:"index"`
		Delta *struct {
			Role    *string `json:"role"`
			Content *string `json:"content"`
		} `json:"delta"`
		Text         *string `json:"text"`
		FinishReason *string `json:"finish_reason"`
	} `json:"choices"`
	Usage *usage `json:"usage"`
}

func TestStreamSequence(t *testing.T) {
	s, base := startServer(t, Config{OutputTokens: 50})
	chatBody := func(extra string) string {
		return `{"model":"` + testModel + `","messages":[{"role":"user","content":"tell me a story"}],"stream":true,"max_tokens":3` + extra + `}`
	}
	complBody := func(extra string) string {
		return `{"model":"` + testModel + `","prompt":"tell me a story","stream":true,"max_tokens":3` + extra + `}`
	}
	tests := []struct {
		name, path, body string
		chat             bool
		usageChunk       bool
		continuous       bool
		golden           []string // normalized events, when the exact bytes matter
	}{
		{
			name: "chat", path: "/v1/chat/completions", body: chatBody(""), chat: true,
			golden: []string{
				`{"id":"chatcmpl-ID","object":"chat.completion.chunk","created":T,"model":"meta-llama/Llama-3.1-8B-Instruct","choices":[{"index":0,"delta":{"role":"assistant","content":""},"logprobs":null,"finish_reason":null}]}`,
				`{"id":"chatcmpl-ID","object":"chat.completion.chunk","created":T,"model":"meta-llama/Llama-3.1-8B-Instruct","choices":[{"index":0,"delta":{"content":"the "},"logprobs":null,"finish_reason":null}]}`,
				`{"id":"chatcmpl-ID","object":"chat.completion.chunk","created":T,"model":"meta-llama/Llama-3.1-8B-Instruct","choices":[{"index":0,"delta":{"content":"model "},"logprobs":null,"finish_reason":null}]}`,
				`{"id":"chatcmpl-ID","object":"chat.completion.chunk","created":T,"model":"meta-llama/Llama-3.1-8B-Instruct","choices":[{"index":0,"delta":{"content":"answers "},"logprobs":null,"finish_reason":"length","stop_reason":null}]}`,
				`[DONE]`,
			},
		},
		{
			name: "chat include_usage", path: "/v1/chat/completions", chat: true, usageChunk: true,
			body: chatBody(`,"stream_options":{"include_usage":true}`),
			golden: []string{
				`{"id":"chatcmpl-ID","object":"chat.completion.chunk","created":T,"model":"meta-llama/Llama-3.1-8B-Instruct","choices":[{"index":0,"delta":{"role":"assistant","content":""},"logprobs":null,"finish_reason":null}]}`,
				`{"id":"chatcmpl-ID","object":"chat.completion.chunk","created":T,"model":"meta-llama/Llama-3.1-8B-Instruct","choices":[{"index":0,"delta":{"content":"the "},"logprobs":null,"finish_reason":null}]}`,
				`{"id":"chatcmpl-ID","object":"chat.completion.chunk","created":T,"model":"meta-llama/Llama-3.1-8B-Instruct","choices":[{"index":0,"delta":{"content":"model "},"logprobs":null,"finish_reason":null}]}`,
				`{"id":"chatcmpl-ID","object":"chat.completion.chunk","created":T,"model":"meta-llama/Llama-3.1-8B-Instruct","choices":[{"index":0,"delta":{"content":"answers "},"logprobs":null,"finish_reason":"length","stop_reason":null}]}`,
				`{"id":"chatcmpl-ID","object":"chat.completion.chunk","created":T,"model":"meta-llama/Llama-3.1-8B-Instruct","choices":[],"usage":{"prompt_tokens":4,"total_tokens":7,"completion_tokens":3}}`,
				`[DONE]`,
			},
		},
		{name: "chat stream_options defaults include_usage", path: "/v1/chat/completions", body: chatBody(`,"stream_options":{}`), chat: true, usageChunk: true},
		{name: "chat include_usage false", path: "/v1/chat/completions", body: chatBody(`,"stream_options":{"include_usage":false,"continuous_usage_stats":true}`), chat: true},
		{
			name: "chat continuous usage", path: "/v1/chat/completions", chat: true, usageChunk: true, continuous: true,
			body: chatBody(`,"stream_options":{"include_usage":true,"continuous_usage_stats":true}`),
		},
		{
			name: "completion", path: "/v1/completions", body: complBody(""),
			golden: []string{
				`{"id":"cmpl-ID","object":"text_completion","created":T,"model":"meta-llama/Llama-3.1-8B-Instruct","choices":[{"index":0,"text":"the ","logprobs":null,"finish_reason":null,"stop_reason":null}],"usage":null}`,
				`{"id":"cmpl-ID","object":"text_completion","created":T,"model":"meta-llama/Llama-3.1-8B-Instruct","choices":[{"index":0,"text":"model ","logprobs":null,"finish_reason":null,"stop_reason":null}],"usage":null}`,
				`{"id":"cmpl-ID","object":"text_completion","created":T,"model":"meta-llama/Llama-3.1-8B-Instruct","choices":[{"index":0,"text":"answers ","logprobs":null,"finish_reason":"length","stop_reason":null}],"usage":null}`,
				`[DONE]`,
			},
		},
		{
			name: "completion continuous usage", path: "/v1/completions", usageChunk: true, continuous: true,
			body: complBody(`,"stream_options":{"include_usage":true,"continuous_usage_stats":true}`),
			golden: []string{
				`{"id":"cmpl-ID","object":"text_completion","created":T,"model":"meta-llama/Llama-3.1-8B-Instruct","choices":[{"index":0,"text":"the ","logprobs":null,"finish_reason":null,"stop_reason":null}],"usage":{"prompt_tokens":4,"total_tokens":5,"completion_tokens":1,"prompt_tokens_details":null}}`,
				`{"id":"cmpl-ID","object":"text_completion","created":T,"model":"meta-llama/Llama-3.1-8B-Instruct","choices":[{"index":0,"text":"model ","logprobs":null,"finish_reason":null,"stop_reason":null}],"usage":{"prompt_tokens":4,"total_tokens":6,"completion_tokens":2,"prompt_tokens_details":null}}`,
				`{"id":"cmpl-ID","object":"text_completion","created":T,"model":"meta-llama/Llama-3.1-8B-Instruct","choices":[{"index":0,"text":"answers ","logprobs":null,"finish_reason":"length","stop_reason":null}],"usage":{"prompt_tokens":4,"total_tokens":7,"completion_tokens":3,"prompt_tokens_details":null}}`,
				`{"id":"cmpl-ID","object":"text_completion","created":T,"model":"meta-llama/Llama-3.1-8B-Instruct","choices":[],"usage":{"prompt_tokens":4,"total_tokens":7,"completion_tokens":3}}`,
				`[DONE]`,
			},
		},
	}
	const n, prompt = 3, 4
	defer func() {
		if st := s.Stats(); st.StreamsCompleted != int64(len(tests)) || st.CompletionTokens != int64(n*len(tests)) {
			t.Errorf("stats %+v, want %d completed streams of %d tokens", st, len(tests), n)
		}
	}()
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			resp, events, err := postStream(t, base+tc.path, tc.body, nil)
			if err != nil {
				t.Fatalf("reading stream: %v (events so far %q)", err, events)
			}
			if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/event-stream; charset=utf-8" {
				t.Fatalf("status %d content-type %q", resp.StatusCode, resp.Header.Get("Content-Type"))
			}
			if len(resp.TransferEncoding) != 1 || resp.TransferEncoding[0] != "chunked" {
				t.Errorf("transfer encoding %v, want chunked", resp.TransferEncoding)
			}
			if tc.golden != nil {
				for i := range max(len(events), len(tc.golden)) {
					var got, want string
					if i < len(events) {
						got = normalize([]byte(events[i]))
					}
					if i < len(tc.golden) {
						want = tc.golden[i]
					}
					if got != want {
						t.Errorf("event %d differs from vLLM's\n got: %s\nwant: %s", i, got, want)
					}
				}
			}
			if len(events) == 0 || events[len(events)-1] != "[DONE]" {
				t.Fatalf("stream does not end with [DONE]: %q", events)
			}
			events = events[:len(events)-1]
			var text string
			var id string
			content := 0
			for i, ev := range events {
				var c chunk
				if err := json.Unmarshal([]byte(ev), &c); err != nil {
					t.Fatalf("event %d %s: %v", i, ev, err)
				}
				if id == "" {
					id = c.ID
				}
				if c.ID != id || c.Model != testModel {
					t.Errorf("event %d: id %q model %q, want %q %q", i, c.ID, c.Model, id, testModel)
				}
				if tc.usageChunk && i == len(events)-1 {
					if len(c.Choices) != 0 || c.Usage == nil || *c.Usage != (usage{prompt, n, prompt + n}) {
						t.Errorf("usage chunk %s, want no choices and usage %d+%d", ev, prompt, n)
					}
					continue
				}
				if len(c.Choices) != 1 {
					t.Fatalf("event %d has %d choices: %s", i, len(c.Choices), ev)
				}
				ch := c.Choices[0]
				if tc.chat && i == 0 {
					if c.Object != "chat.completion.chunk" || ch.Delta == nil || ch.Delta.Role == nil || *ch.Delta.Role != "assistant" {
						t.Errorf("first chat event is not the role chunk: %s", ev)
					}
					if tc.continuous && (c.Usage == nil || c.Usage.CompletionTokens != 0) {
						t.Errorf("role chunk usage %+v, want 0 completion tokens", c.Usage)
					}
					continue
				}
				content++
				if tc.chat {
					text += *ch.Delta.Content
				} else {
					if c.Object != "text_completion" || ch.Text == nil {
						t.Fatalf("completion event %d: %s", i, ev)
					}
					text += *ch.Text
				}
				if isLast := content == n; isLast != (ch.FinishReason != nil) {
					t.Errorf("event %d: finish_reason %v on content chunk %d of %d", i, ch.FinishReason, content, n)
				}
				if tc.continuous {
					if c.Usage == nil || *c.Usage != (usage{prompt, content, prompt + content}) {
						t.Errorf("event %d usage %+v, want running count %d", i, c.Usage, content)
					}
				} else if c.Usage != nil {
					t.Errorf("event %d carries usage without continuous_usage_stats: %s", i, ev)
				}
			}
			if text != GeneratedText(n) {
				t.Errorf("streamed text %q, want %q", text, GeneratedText(n))
			}
		})
	}
}

func TestMidstreamError(t *testing.T) {
	s, base := startServer(t, Config{OutputTokens: 5})
	body := `{"messages":[{"role":"user","content":"hi"}],"stream":true,"stream_options":{"include_usage":true}}`
	tests := []struct {
		name, after, format string
		wantContent         int
		wantFinishSent      bool
		want                string // exact error event, message replaced by M
	}{
		{"nested after 2", "2", "", 2, false, `{"error":{"message":M,"type":"InternalServerError","param":null,"code":500}}`},
		{"nested before any token", "0", "", 0, false, `{"error":{"message":M,"type":"InternalServerError","param":null,"code":500}}`},
		{"flat after 1", "1", "flat", 1, false, `{"object":"error","message":M,"type":"InternalServerError","param":null,"code":500}`},
		{"spaced after 3", "3", "spaced", 3, false, `{"error": {"message": M, "type": "InternalServerError", "param": null, "code": 500}}`},
		{"after the last token", "99", "", 5, true, `{"error":{"message":M,"type":"InternalServerError","param":null,"code":500}}`},
	}
	msg := regexp.MustCompile(`("message": ?)"[^"]*"`)
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			hdr := map[string]string{HeaderMidstreamError: tc.after}
			if tc.format != "" {
				hdr[HeaderErrorFormat] = tc.format
			}
			resp, events, err := postStream(t, base+"/v1/chat/completions", body, hdr)
			if err != nil {
				t.Fatalf("reading stream: %v", err)
			}
			if resp.StatusCode != 200 {
				t.Fatalf("status %d, vLLM keeps 200 for mid-stream errors", resp.StatusCode)
			}
			// role chunk + content chunks + error + [DONE]; no usage chunk.
			if len(events) != tc.wantContent+3 {
				t.Fatalf("%d events, want %d: %q", len(events), tc.wantContent+3, events)
			}
			if events[len(events)-1] != "[DONE]" {
				t.Errorf("last event %q, want [DONE]", events[len(events)-1])
			}
			errEv := events[len(events)-2]
			if got := msg.ReplaceAllString(errEv, "${1}M"); got != tc.want {
				t.Errorf("error event\n got: %s\nwant: %s", errEv, tc.want)
			}
			var anyJSON map[string]any
			if err := json.Unmarshal([]byte(errEv), &anyJSON); err != nil {
				t.Errorf("error event is not JSON: %v", err)
			}
			lastContent := events[len(events)-3]
			if hasFinish := strings.Contains(lastContent, `"finish_reason":"`); hasFinish != tc.wantFinishSent {
				t.Errorf("chunk before the error %s: finish sent %v, want %v", lastContent, hasFinish, tc.wantFinishSent)
			}
		})
	}
	// A stream ended by an error event still ends with [DONE]: completed.
	if st, n := s.Stats(), int64(len(tests)); st.StreamsStarted != n || st.StreamsCompleted != n || st.StreamsAborted != 0 {
		t.Errorf("stats %+v, want %d streams started and completed", st, n)
	}
}

func TestBenchTimestamps(t *testing.T) {
	_, base := startServer(t, Config{OutputTokens: 4})
	before := time.Now().UnixNano()
	_, events, err := postStream(t, base+"/v1/chat/completions", `{"messages":[{"role":"user","content":"hi"}],"stream":true}`,
		map[string]string{HeaderBenchTimestamps: "1"})
	after := time.Now().UnixNano()
	if err != nil {
		t.Fatal(err)
	}
	if len(events) != 6 {
		t.Fatalf("%d events, want 6: %q", len(events), events)
	}
	prev := before
	for _, ev := range events[:len(events)-1] {
		var c chunk
		if err := json.Unmarshal([]byte(ev), &c); err != nil {
			t.Fatal(err)
		}
		ns, err := strconv.ParseInt(strings.TrimPrefix(c.ID, BenchChatIDPrefix), 10, 64)
		if err != nil || !strings.HasPrefix(c.ID, BenchChatIDPrefix) {
			t.Fatalf("id %q is not %s<ns>", c.ID, BenchChatIDPrefix)
		}
		if ns < prev || ns > after {
			t.Errorf("timestamp %d outside [%d, %d]", ns, prev, after)
		}
		prev = ns
	}
}

// TestStreamsAborted is the hook proxy tests rely on: when the peer closes
// the connection mid-stream, the next write fails and the stream counts as
// aborted, not completed.
func TestStreamsAborted(t *testing.T) {
	s, base := startServer(t, Config{OutputTokens: 2000, InterTokenLatency: 2 * time.Millisecond})
	resp, err := http.Post(base+"/v1/chat/completions", "application/json",
		strings.NewReader(`{"messages":[{"role":"user","content":"hi"}],"stream":true}`))
	if err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(resp.Body)
	if _, err := br.ReadString('\n'); err != nil {
		t.Fatalf("reading first event: %v", err)
	}
	// Closing an unread body makes net/http close the connection.
	resp.Body.Close()
	deadline := time.Now().Add(5 * time.Second)
	for s.Stats().StreamsAborted == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("stats %+v: no aborted stream 5 s after the client hung up", s.Stats())
		}
		time.Sleep(5 * time.Millisecond)
	}
	st := s.Stats()
	if st.StreamsAborted != 1 || st.StreamsCompleted != 0 || st.StreamsStarted != 1 {
		t.Errorf("stats %+v, want 1 started, 1 aborted, 0 completed", st)
	}
	if st.CompletionTokens >= 2000 {
		t.Errorf("%d tokens counted as sent after an abort", st.CompletionTokens)
	}
}

func TestStall(t *testing.T) {
	s, base := startServer(t, Config{OutputTokens: 10})
	body := `{"messages":[{"role":"user","content":"hi"}],"stream":true}`
	start := time.Now()
	_, events, err := postStream(t, base+"/v1/chat/completions", body, map[string]string{HeaderStallAfter: "2", HeaderDelayMs: "150"})
	took := time.Since(start)
	if err == nil {
		t.Errorf("stalled stream ended cleanly; want a truncated body")
	}
	if len(events) != 3 { // role + 2 content chunks
		t.Errorf("%d events before the stall, want 3: %q", len(events), events)
	}
	if took < 150*time.Millisecond || took > 3*time.Second {
		t.Errorf("stall lasted %v, want about 150ms", took)
	}

	// Without a delay the stall would last 30 s; Close must end it at once.
	done := make(chan time.Duration, 1)
	go func() {
		start := time.Now()
		req, _ := http.NewRequest("POST", base+"/v1/chat/completions", strings.NewReader(body))
		req.Header.Set(HeaderStallAfter, "1")
		if resp, err := http.DefaultClient.Do(req); err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
		done <- time.Since(start)
	}()
	for s.Stats().StreamsStarted < 2 {
		time.Sleep(time.Millisecond)
	}
	time.Sleep(20 * time.Millisecond)
	s.Close()
	select {
	case d := <-done:
		if d > 3*time.Second {
			t.Errorf("stalled stream outlived Close by %v", d)
		}
	case <-time.After(6 * time.Second):
		t.Fatal("stalled stream still open 6 s after Close")
	}
}
