package fakevllm

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/anthropics/anthropic-sdk-go/v2"
	"github.com/anthropics/anthropic-sdk-go/v2/option"
	"github.com/valyala/fasthttp"
)

// anthropicErr is vLLM's AnthropicErrorResponse.
func anthropicErr(typ, msg string) string {
	return `{"type":"error","error":{"type":"` + typ + `","message":` + jsonString(msg) + `}}`
}

func TestMessagesBodies(t *testing.T) {
	_, base := startServer(t, Config{OutputTokens: 4, MaxModelLen: 64})
	model := `"model":"` + testModel + `"`
	user := `"messages":[{"role":"user","content":"tell me a story"}]`
	tests := []struct {
		name, body string
		status     int
		want       string // normalized body
	}{
		{
			name: "cut by max_tokens", body: `{` + model + `,` + user + `,"max_tokens":3}`, status: 200,
			want: `{"id":"chatcmpl-ID","type":"message","role":"assistant","content":[{"type":"text","text":"the model answers "}],` +
				`"model":"meta-llama/Llama-3.1-8B-Instruct","stop_reason":"max_tokens","usage":{"input_tokens":4,"output_tokens":3}}`,
		},
		{
			// system (a string or text blocks) and every text block count;
			// other blocks do not.
			name: "ends by itself",
			body: `{` + model + `,"system":[{"type":"text","text":"be brief"}],"messages":[{"role":"user","content":[{"type":"text","text":"hi there"},` +
				`{"type":"image","source":{"type":"url","url":"http://x"}}]},{"role":"assistant","content":"ok"},{"role":"user","content":"go"}],"max_tokens":9}`,
			status: 200,
			want: `{"id":"chatcmpl-ID","type":"message","role":"assistant","content":[{"type":"text","text":"the model answers with "}],` +
				`"model":"meta-llama/Llama-3.1-8B-Instruct","stop_reason":"end_turn","usage":{"input_tokens":6,"output_tokens":4}}`,
		},
		{name: "system string", body: `{` + model + `,"system":"one two",` + user + `,"max_tokens":9}`, status: 200},
		{name: "last duplicate stream wins", body: `{` + model + `,` + user + `,"max_tokens":9,"stream":true,"stream":false}`, status: 200},
		{name: "last duplicate model wins", body: `{"model":"gpt-4",` + user + `,"max_tokens":9,` + model + `}`, status: 200},
		{name: "roles vLLM maps to user", body: `{` + model + `,"messages":[{"role":"ctx","content":"a"},{"role":"msg","content":"b"}],"max_tokens":9}`, status: 200},

		// A body the request model refuses gets FastAPI's validation
		// handler: vLLM's OpenAI ErrorResponse, even on this route.
		{name: "malformed JSON", body: `{"model":`, status: 400},
		{name: "no model", body: `{` + user + `,"max_tokens":9}`, status: 400, want: errBody("Field required: body.model", "BadRequestError", 400)},
		{name: "null model", body: `{"model":null,` + user + `,"max_tokens":9}`, status: 400, want: errBody("Input should be a valid string: body.model", "BadRequestError", 400)},
		{name: "empty model", body: `{"model":"",` + user + `,"max_tokens":9}`, status: 400,
			want: errBody("Value error, Model is required: body.model", "BadRequestError", 400)},
		{name: "model not a string", body: `{"model":1,` + user + `,"max_tokens":9}`, status: 400, want: errBody("Input should be a valid string: body.model", "BadRequestError", 400)},
		{name: "no max_tokens", body: `{` + model + `,` + user + `}`, status: 400, want: errBody("Field required: body.max_tokens", "BadRequestError", 400)},
		{name: "null max_tokens", body: `{` + model + `,` + user + `,"max_tokens":null}`, status: 400,
			want: errBody("Input should be a valid integer: body.max_tokens", "BadRequestError", 400)},
		{name: "zero max_tokens", body: `{` + model + `,` + user + `,"max_tokens":0}`, status: 400,
			want: errBody("Value error, max_tokens must be positive: body.max_tokens", "BadRequestError", 400)},
		{name: "no messages", body: `{` + model + `,"max_tokens":9}`, status: 400, want: errBody("Field required: body.messages", "BadRequestError", 400)},
		{name: "messages not a list", body: `{` + model + `,"messages":"hi","max_tokens":9}`, status: 400,
			want: errBody("Input should be a valid list: body.messages", "BadRequestError", 400)},
		{name: "message not an object", body: `{` + model + `,"messages":["hi"],"max_tokens":9}`, status: 400,
			want: errBody("Input should be a valid dictionary or instance of AnthropicMessage: body.messages.0", "BadRequestError", 400)},
		{name: "unknown role", body: `{` + model + `,"messages":[{"role":"tool","content":"x"}],"max_tokens":9}`, status: 400,
			want: errBody("Input should be 'user', 'assistant' or 'system': body.messages.0.role", "BadRequestError", 400)},
		{name: "no role", body: `{` + model + `,"messages":[{"content":"x"}],"max_tokens":9}`, status: 400,
			want: errBody("Field required: body.messages.0.role", "BadRequestError", 400)},
		{name: "no content", body: `{` + model + `,"messages":[{"role":"user"}],"max_tokens":9}`, status: 400,
			want: errBody("Field required: body.messages.0.content", "BadRequestError", 400)},
		{name: "content not text", body: `{` + model + `,"messages":[{"role":"user","content":3}],"max_tokens":9}`, status: 400,
			want: errBody("Input should be a valid string or list: body.messages.0.content", "BadRequestError", 400)},
		{name: "block not an object", body: `{` + model + `,"messages":[{"role":"user","content":["x"]}],"max_tokens":9}`, status: 400,
			want: errBody("Input should be a valid dictionary or instance of AnthropicContentBlock: body.messages.0.content.0", "BadRequestError", 400)},
		{name: "unknown block type", body: `{` + model + `,"messages":[{"role":"user","content":[{"type":"video"}]}],"max_tokens":9}`, status: 400,
			want: errBody("Input should be a valid content block type: body.messages.0.content.0.type", "BadRequestError", 400)},
		{name: "system not text", body: `{` + model + `,"system":7,` + user + `,"max_tokens":9}`, status: 400,
			want: errBody("Input should be a valid string or list: body.system", "BadRequestError", 400)},
		{name: "stream not a bool", body: `{` + model + `,` + user + `,"max_tokens":9,"stream":[]}`, status: 400,
			want: errBody("Input should be a valid boolean, unable to interpret input: body.stream", "BadRequestError", 400)},
		// Request validation runs before the handler looks the model up.
		{name: "validation before model lookup", body: `{"model":"gpt-4",` + user + `}`, status: 400,
			want: errBody("Field required: body.max_tokens", "BadRequestError", 400)},

		// vLLM's handler answers in Anthropic's shape.
		{name: "unknown model", body: `{"model":"gpt-4",` + user + `,"max_tokens":9}`, status: 404,
			want: anthropicErr("NotFoundError", "The model `gpt-4` does not exist.")},
		{name: "prompt fills the context", body: `{` + model + `,"messages":[{"role":"user","content":"` + strings.Repeat("w ", 64) + `"}],"max_tokens":9}`, status: 400,
			want: anthropicErr("BadRequestError", "This model's maximum context length is 64 tokens. However, your request has 64 input tokens. Please reduce the length of the input messages.")},
		{name: "max_tokens beyond the context", body: `{` + model + `,` + user + `,"max_tokens":61}`, status: 400,
			want: anthropicErr("BadRequestError", "'max_completion_tokens' is too large: 61. This model's maximum context length is 64 tokens and your request has 4 input tokens (61 > 64 - 4).")},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			resp, body := do(t, "POST", base+"/v1/messages", tc.body, nil)
			if resp.StatusCode != tc.status {
				t.Fatalf("status %d, want %d; body %s", resp.StatusCode, tc.status, body)
			}
			if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
				t.Errorf("Content-Type %q", ct)
			}
			if !json.Valid(body) {
				t.Fatalf("body is not JSON: %s", body)
			}
			if tc.want != "" {
				if got := normalize(body); got != tc.want {
					t.Errorf("body differs from vLLM's\n got: %s\nwant: %s", got, tc.want)
				}
			}
		})
	}
}

func anthropicClient(base string, opts ...option.RequestOption) anthropic.Client {
	return anthropic.NewClient(append([]option.RequestOption{
		option.WithBaseURL(base), option.WithAPIKey("test-key"), option.WithMaxRetries(0),
	}, opts...)...)
}

// wantMessageEvents is the event sequence vLLM streams for an answer of n
// tokens.
func wantMessageEvents(n int) []string {
	ev := []string{"message_start", "content_block_start"}
	for range n {
		ev = append(ev, "content_block_delta")
	}
	return append(ev, "content_block_stop", "message_delta", "message_stop")
}

func TestMessagesWithAnthropicSDK(t *testing.T) {
	s, base := startServer(t, Config{OutputTokens: 6})
	ctx := context.Background()
	const prompt = 5 // three words of the message, two of system
	tests := []struct {
		name       string
		maxTokens  int64
		wantTokens int
		wantStop   anthropic.StopReason
		done       bool // X-Fake-Messages-Done: the SDK skips the extra data: [DONE]
	}{
		{"ends by itself", 100, 6, anthropic.StopReasonEndTurn, false},
		{"cut by max_tokens", 4, 4, anthropic.StopReasonMaxTokens, false},
		{"older releases' data: [DONE]", 100, 6, anthropic.StopReasonEndTurn, true},
	}
	for _, tc := range tests {
		var opts []option.RequestOption
		if tc.done {
			opts = append(opts, option.WithHeader(HeaderMessagesDone, "1"))
		}
		client := anthropicClient(base, opts...)
		params := anthropic.MessageNewParams{
			Model:     testModel,
			MaxTokens: tc.maxTokens,
			System:    []anthropic.TextBlockParam{{Text: "be brief"}},
			Messages:  []anthropic.MessageParam{anthropic.NewUserMessage(anthropic.NewTextBlock("one two three"))},
		}
		checkMessage := func(t *testing.T, m *anthropic.Message) {
			t.Helper()
			checkDecoded(t, "message", *m)
			if !strings.HasPrefix(m.ID, "chatcmpl-") || m.Model != testModel || m.Role != "assistant" || m.Type != "message" {
				t.Errorf("id %q model %q role %q type %q", m.ID, m.Model, m.Role, m.Type)
			}
			if len(m.Content) != 1 || m.Content[0].Type != "text" || m.Content[0].Text != GeneratedText(tc.wantTokens) {
				t.Errorf("content %s, want the text of %d tokens", m.JSON.Content.Raw(), tc.wantTokens)
			}
			if m.StopReason != tc.wantStop || m.StopSequence != "" {
				t.Errorf("stop_reason %q stop_sequence %q, want %q", m.StopReason, m.StopSequence, tc.wantStop)
			}
			if m.Usage.InputTokens != prompt || m.Usage.OutputTokens != int64(tc.wantTokens) {
				t.Errorf("usage %s, want %d in and %d out", m.Usage.RawJSON(), prompt, tc.wantTokens)
			}
		}

		t.Run(tc.name+"/not streamed", func(t *testing.T) {
			m, err := client.Messages.New(ctx, params)
			if err != nil {
				t.Fatal(err)
			}
			checkMessage(t, m)
		})

		t.Run(tc.name+"/streamed", func(t *testing.T) {
			stream := client.Messages.NewStreaming(ctx, params)
			defer stream.Close()
			var (
				acc   anthropic.Message
				types []string
			)
			for stream.Next() {
				ev := stream.Current()
				types = append(types, ev.Type)
				if ev.AsAny() == nil {
					t.Errorf("event type %q is unknown to the SDK", ev.Type)
				}
				checkDecoded(t, ev.Type, ev.AsAny())
				if ev.Type == "message_start" && (ev.Message.Usage.InputTokens != prompt || !ev.Message.Usage.JSON.OutputTokens.Valid()) {
					t.Errorf("message_start usage %s", ev.Message.Usage.RawJSON())
				}
				if err := acc.Accumulate(ev); err != nil {
					t.Fatalf("accumulating %s: %v", ev.Type, err)
				}
			}
			if err := stream.Err(); err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(types, wantMessageEvents(tc.wantTokens)) {
				t.Errorf("events %v\nwant %v", types, wantMessageEvents(tc.wantTokens))
			}
			checkMessage(t, &acc)
		})
	}
	if st := s.Stats(); st.StreamsStarted != 3 || st.StreamsCompleted != 3 {
		t.Errorf("stats %+v", st)
	}
}

func TestMessagesErrorsWithAnthropicSDK(t *testing.T) {
	s, base := startServer(t, Config{OutputTokens: 6})
	ctx := context.Background()
	params := func(model string, maxTokens int64) anthropic.MessageNewParams {
		return anthropic.MessageNewParams{
			Model: anthropic.Model(model), MaxTokens: maxTokens,
			Messages: []anthropic.MessageParam{anthropic.NewUserMessage(anthropic.NewTextBlock("hi"))},
		}
	}
	tests := []struct {
		name       string
		params     anthropic.MessageNewParams
		wantStatus int
		wantType   string
	}{
		{"unknown model", params("gpt-4", 9), 404, "NotFoundError"},
		// The SDK sends max_tokens 0 as is; the validation error is in
		// vLLM's OpenAI shape, whose error.type the SDK reads all the same.
		{"invalid max_tokens", params(testModel, 0), 400, "BadRequestError"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			client := anthropicClient(base)
			_, err := client.Messages.New(ctx, tc.params)
			var apiErr *anthropic.Error
			if !errors.As(err, &apiErr) || apiErr.StatusCode != tc.wantStatus || string(apiErr.Type()) != tc.wantType || apiErr.Message == "" {
				t.Fatalf("got %v, want a %d %s", err, tc.wantStatus, tc.wantType)
			}
		})
	}

	for _, done := range []bool{false, true} {
		t.Run("failure mid-stream/done "+map[bool]string{false: "off", true: "on"}[done], func(t *testing.T) {
			opts := []option.RequestOption{option.WithHeader(HeaderMidstreamError, "2")}
			if done {
				opts = append(opts, option.WithHeader(HeaderMessagesDone, "1"))
			}
			client := anthropicClient(base, opts...)
			stream := client.Messages.NewStreaming(ctx, params(testModel, 9))
			defer stream.Close()
			var types []string
			for stream.Next() {
				types = append(types, stream.Current().Type)
			}
			var apiErr *anthropic.Error
			if err := stream.Err(); !errors.As(err, &apiErr) || apiErr.Type() != "internal_error" || !strings.Contains(apiErr.Message, "after 2 tokens") {
				t.Fatalf("stream error %v, want the error event as a typed error", err)
			}
			// The open text block is never stopped: the error event follows
			// the last delta.
			if want := wantMessageEvents(2)[:4]; !slices.Equal(types, want) {
				t.Errorf("events %v, want %v", types, want)
			}
		})
	}
	// The client stops at the error event; the handler counts the stream
	// as it returns, a moment later.
	deadline := time.Now().Add(5 * time.Second)
	for st := s.Stats(); st.StreamsCompleted != 2 || st.CompletionTokens != 4; st = s.Stats() {
		if time.Now().After(deadline) {
			t.Fatalf("stats %+v: streams ended by an error event are completed", st)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestMessagesStreamGolden pins the exact bytes of short streams.
func TestMessagesStreamGolden(t *testing.T) {
	_, base := startServer(t, Config{OutputTokens: 2})
	body := `{"model":"` + testModel + `","max_tokens":9,"messages":[{"role":"user","content":"hi"}],"stream":true}`
	for _, tc := range []struct {
		golden string
		hdr    map[string]string
	}{
		{"messages_stream.golden", nil},
		{"messages_stream_error.golden", map[string]string{HeaderMidstreamError: "1"}},
		{"messages_stream_done.golden", map[string]string{HeaderMessagesDone: "1"}},
	} {
		t.Run(tc.golden, func(t *testing.T) {
			resp, got := do(t, "POST", base+"/v1/messages", body, tc.hdr)
			if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/event-stream; charset=utf-8" {
				t.Fatalf("status %d content-type %q", resp.StatusCode, resp.Header.Get("Content-Type"))
			}
			checkGolden(t, strings.TrimSuffix(tc.golden, ".golden"), normalize(got))
		})
	}
}

// FuzzMessagesRequest: whatever the body, the fake answers a non-streamed
// request with valid JSON, and an accepted one with the usage it counted.
func FuzzMessagesRequest(f *testing.F) {
	for _, seed := range []string{
		`{"model":"` + testModel + `","max_tokens":3,"messages":[{"role":"user","content":"hi"}]}`,
		`{"model":"` + testModel + `","max_tokens":3,"system":[{"type":"text","text":"a"}],"messages":[{"role":"user","content":[{"type":"text","text":"b c"}]}]}`,
		`{"model":"x","max_tokens":3,"messages":[]}`, `{"model":"","max_tokens":-1}`, `{"messages":[{"role":7}]}`, `[`, `null`,
	} {
		f.Add([]byte(seed))
	}
	s := New(Config{OutputTokens: 3, MaxModelLen: 32})
	f.Fuzz(func(t *testing.T, body []byte) {
		if streamed(body) {
			return // streamed answers are checked by the stream tests
		}
		var ctx fasthttp.RequestCtx
		ctx.Request.Header.SetMethod("POST")
		ctx.Request.SetRequestURI("/v1/messages")
		ctx.Request.SetBody(body)
		s.Handler(&ctx)
		out := ctx.Response.Body()
		if !json.Valid(out) {
			t.Fatalf("invalid JSON answer %q to %q", out, body)
		}
		if ctx.Response.StatusCode() != 200 {
			return
		}
		var m struct {
			Usage struct {
				InputTokens  int `json:"input_tokens"`
				OutputTokens int `json:"output_tokens"`
			} `json:"usage"`
			StopReason string `json:"stop_reason"`
		}
		if err := json.Unmarshal(out, &m); err != nil {
			t.Fatal(err)
		}
		if m.Usage.InputTokens < 1 || m.Usage.OutputTokens < 1 || (m.StopReason != "end_turn" && m.StopReason != "max_tokens") {
			t.Fatalf("answer %s to %q", out, body)
		}
	})
}
