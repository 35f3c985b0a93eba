package fakevllm

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
	"github.com/openai/openai-go/v3/responses"
	"github.com/valyala/fasthttp"
)

func TestResponsesBodies(t *testing.T) {
	_, base := startServer(t, Config{OutputTokens: 4, MaxModelLen: 64})
	// What vLLM writes for a response object, split where the tests vary it.
	const (
		head = `{"id":"resp_ID","created_at":T,"incomplete_details":`
		mid  = `,"metadata":null,"model":"meta-llama/Llama-3.1-8B-Instruct","object":"response","output":[{"id":"msg_ID","content":[{"annotations":[],"text":`
		tail = `,"type":"output_text","logprobs":null}],"role":"assistant","status":"completed","type":"message","phase":null}],` +
			`"parallel_tool_calls":true,"temperature":1.0,"tool_choice":"none","tools":[],"top_p":1.0,"background":false,"max_output_tokens":`
		end = `,"user":null,"presence_penalty":0.0,"frequency_penalty":0.0,"kv_transfer_params":null,"ec_transfer_params":null,` +
			`"input_messages":null,"output_messages":null}`
		usage43 = `{"input_tokens":4,"input_tokens_details":{"cached_tokens":0,"input_tokens_per_turn":[],"cached_tokens_per_turn":[]},` +
			`"output_tokens":3,"output_tokens_details":{"reasoning_tokens":0,"tool_output_tokens":0,"output_tokens_per_turn":[],` +
			`"tool_output_tokens_per_turn":[]},"total_tokens":7}`
		usage14 = `{"input_tokens":1,"input_tokens_details":{"cached_tokens":0,"input_tokens_per_turn":[],"cached_tokens_per_turn":[]},` +
			`"output_tokens":4,"output_tokens_details":{"reasoning_tokens":0,"tool_output_tokens":0,"output_tokens_per_turn":[],` +
			`"tool_output_tokens_per_turn":[]},"total_tokens":5}`
	)
	tests := []struct {
		name, body string
		status     int
		want       string // normalized body
	}{
		{
			name:   "cut by max_output_tokens",
			body:   `{"model":"` + testModel + `","input":"tell me a story","max_output_tokens":3}`,
			status: 200,
			want: head + `{"reason":"max_output_tokens"},"instructions":null` + mid + `"the model answers "` + tail + `3,` +
				`"max_tool_calls":null,"previous_response_id":null,"prompt":null,"reasoning":null,"service_tier":"auto",` +
				`"status":"incomplete","text":null,"top_logprobs":null,"truncation":"disabled","usage":` + usage43 + end,
		},
		{
			// Without max_output_tokens vLLM reports the room the context
			// leaves; instructions are echoed and counted.
			name:   "instructions and items",
			body:   `{"input":[{"role":"user","content":[{"type":"input_text","text":"hi there"}]},{"type":"function_call_output","call_id":"c","output":"x"}],"instructions":"be \"brief\""}`,
			status: 200,
			want: head + `null,"instructions":"be \"brief\""` + mid + `"the model answers with "` + tail + `60,` +
				`"max_tool_calls":null,"previous_response_id":null,"prompt":null,"reasoning":null,"service_tier":"auto",` +
				`"status":"completed","text":null,"top_logprobs":null,"truncation":"disabled","usage":` +
				strings.Replace(strings.Replace(usage14, `"input_tokens":1`, `"input_tokens":4`, 1), `"total_tokens":5`, `"total_tokens":8`, 1) + end,
		},
		{
			name:   "string input",
			body:   `{"input":"x"}`,
			status: 200,
			want: head + `null,"instructions":null` + mid + `"the model answers with "` + tail + `63,` +
				`"max_tool_calls":null,"previous_response_id":null,"prompt":null,"reasoning":null,"service_tier":"auto",` +
				`"status":"completed","text":null,"top_logprobs":null,"truncation":"disabled","usage":` + usage14 + end,
		},
		// ResponsesRequest has no stream_options: vLLM logs it as an ignored
		// extra field, whatever its value and whether or not it streams.
		{name: "stream_options ignored", body: `{"input":"x","stream_options":"nonsense"}`, status: 200},
		{name: "last duplicate stream wins", body: `{"input":"x","stream":true,"stream":false}`, status: 200},
		{name: "last duplicate model wins", body: `{"model":"gpt-4","input":"x","model":"` + testModel + `"}`, status: 200},
		{name: "null max_output_tokens", body: `{"input":"x","max_output_tokens":null}`, status: 200},
		{name: "item without content", body: `{"input":[{"type":"function_call_output","call_id":"c","output":"x"}]}`, status: 200},

		{name: "malformed JSON", body: `{"input":`, status: 400},
		{name: "not an object", body: `["input"]`, status: 400,
			want: errBody("Input should be a valid dictionary or object to extract fields from: body", "BadRequestError", 400)},
		{name: "no input", body: `{"model":"` + testModel + `"}`, status: 400, want: errBody("Field required: body.input", "BadRequestError", 400)},
		{name: "null input", body: `{"input":null}`, status: 400, want: errBody("Input should be a valid string or list: body.input", "BadRequestError", 400)},
		{name: "numeric input", body: `{"input":7}`, status: 400, want: errBody("Input should be a valid string or list: body.input", "BadRequestError", 400)},
		{name: "item not an object", body: `{"input":["hi"]}`, status: 400, want: errBody("Input should be a valid dictionary: body.input.0", "BadRequestError", 400)},
		{name: "content not text", body: `{"input":[{"role":"user","content":5}]}`, status: 400,
			want: errBody("Input should be a valid string or list: body.input.0.content", "BadRequestError", 400)},
		{name: "part not an object", body: `{"input":[{"role":"user","content":["hi"]}]}`, status: 400,
			want: errBody("Input should be a valid dictionary: body.input.0.content.0", "BadRequestError", 400)},
		{name: "instructions not a string", body: `{"input":"x","instructions":["a"]}`, status: 400,
			want: errBody("Input should be a valid string: body.instructions", "BadRequestError", 400)},
		{name: "max_output_tokens zero", body: `{"input":"x","max_output_tokens":0}`, status: 400,
			want: errBody("max_tokens must be at least 1, got 0.", "BadRequestError", 400)},
		{name: "max_output_tokens not an integer", body: `{"input":"x","max_output_tokens":"many"}`, status: 400,
			want: errBody("Input should be a valid integer: body.max_output_tokens", "BadRequestError", 400)},
		{name: "stream not a bool", body: `{"input":"x","stream":"maybe"}`, status: 400,
			want: errBody("Input should be a valid boolean, unable to interpret input: body.stream", "BadRequestError", 400)},
		{name: "model not a string", body: `{"input":"x","model":5}`, status: 400, want: errBody("Input should be a valid string: body.model", "BadRequestError", 400)},
		{name: "unknown model", body: `{"input":"x","model":"gpt-4"}`, status: 404, want: errBody("The model `gpt-4` does not exist.", "NotFoundError", 404)},
		// Request validation runs before the handler looks the model up.
		{name: "validation before model lookup", body: `{"model":"gpt-4"}`, status: 400, want: errBody("Field required: body.input", "BadRequestError", 400)},
		{name: "prompt fills the context", body: `{"input":"` + strings.Repeat("w ", 64) + `"}`, status: 400,
			want: errBody("This model's maximum context length is 64 tokens. However, your request has 64 input tokens. Please reduce the length of the input messages.", "BadRequestError", 400)},
		{name: "limit beyond the context", body: `{"input":"a b","max_output_tokens":63}`, status: 400,
			want: errBody("'max_output_tokens' is too large: 63. This model's maximum context length is 64 tokens and your request has 2 input tokens (63 > 64 - 2).", "BadRequestError", 400)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			resp, body := do(t, "POST", base+"/v1/responses", tc.body, nil)
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
	t.Run("GET is refused", func(t *testing.T) {
		resp, body := do(t, "GET", base+"/v1/responses", "", nil)
		if resp.StatusCode != 405 || string(body) != `{"detail":"Method Not Allowed"}` {
			t.Errorf("got %d %s", resp.StatusCode, body)
		}
	})
}

// errBody is vLLM's OpenAI ErrorResponse.
func errBody(msg, typ string, code int) string {
	return `{"error":{"message":` + jsonString(msg) + `,"type":"` + typ + `","param":null,"code":` + strconv.Itoa(code) + `}}`
}

// jsonString writes s as Python's json and pydantic do: no HTML escapes.
func jsonString(s string) string {
	var b strings.Builder
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	enc.Encode(s)
	return strings.TrimSuffix(b.String(), "\n")
}

func openaiClient(base string, opts ...option.RequestOption) openai.Client {
	return openai.NewClient(append([]option.RequestOption{
		option.WithBaseURL(base + "/v1/"), option.WithAPIKey("test-key"), option.WithMaxRetries(0),
	}, opts...)...)
}

// wantResponseEvents is the event sequence vLLM streams for an answer of n
// tokens.
func wantResponseEvents(n int) []string {
	ev := []string{"response.created", "response.in_progress", "response.output_item.added", "response.content_part.added"}
	for range n {
		ev = append(ev, "response.output_text.delta")
	}
	return append(ev, "response.output_text.done", "response.content_part.done", "response.output_item.done", "response.completed")
}

func TestResponsesWithOpenAISDK(t *testing.T) {
	s, base := startServer(t, Config{OutputTokens: 6})
	client := openaiClient(base)
	ctx := context.Background()
	input := responses.ResponseNewParamsInputUnion{OfString: openai.String("one two three")}
	tests := []struct {
		name       string
		maxOutput  int64
		wantTokens int
		wantStatus responses.ResponseStatus
	}{
		{"finishes by itself", 0, 6, responses.ResponseStatusCompleted},
		{"cut by max_output_tokens", 4, 4, responses.ResponseStatusIncomplete},
	}
	for _, tc := range tests {
		params := responses.ResponseNewParams{Model: testModel, Input: input, Instructions: openai.String("be brief")}
		if tc.maxOutput > 0 {
			params.MaxOutputTokens = openai.Int(tc.maxOutput)
		}
		const prompt = 5 // three input words and two of instructions
		checkResponse := func(t *testing.T, r *responses.Response) {
			t.Helper()
			checkDecoded(t, "response", *r)
			if r.Status != tc.wantStatus || r.Model != testModel || !strings.HasPrefix(r.ID, "resp_") || r.Object != "response" {
				t.Errorf("status %q model %q id %q object %q", r.Status, r.Model, r.ID, r.Object)
			}
			if got := r.OutputText(); got != GeneratedText(tc.wantTokens) {
				t.Errorf("output text %q, want %q", got, GeneratedText(tc.wantTokens))
			}
			u := r.Usage
			if u.InputTokens != prompt || u.OutputTokens != int64(tc.wantTokens) || u.TotalTokens != int64(prompt+tc.wantTokens) ||
				!u.JSON.InputTokensDetails.Valid() || !u.JSON.OutputTokensDetails.Valid() {
				t.Errorf("usage %s, want %d in and %d out", u.RawJSON(), prompt, tc.wantTokens)
			}
			incomplete := tc.wantStatus == responses.ResponseStatusIncomplete
			if got := r.IncompleteDetails.Reason; incomplete != (got == "max_output_tokens") {
				t.Errorf("incomplete_details %s with status %q", r.IncompleteDetails.RawJSON(), r.Status)
			}
			if r.Instructions.OfString != "be brief" {
				t.Errorf("instructions %s", r.Instructions.RawJSON())
			}
		}

		t.Run(tc.name+"/not streamed", func(t *testing.T) {
			r, err := client.Responses.New(ctx, params)
			if err != nil {
				t.Fatal(err)
			}
			checkResponse(t, r)
		})

		t.Run(tc.name+"/streamed", func(t *testing.T) {
			stream := client.Responses.NewStreaming(ctx, params)
			defer stream.Close()
			var (
				types []string
				text  strings.Builder
				final *responses.Response
				acc   responses.ResponseAccumulator
			)
			for stream.Next() {
				ev := stream.Current()
				if ev.SequenceNumber != int64(len(types)) {
					t.Errorf("event %d (%s) has sequence_number %d", len(types), ev.Type, ev.SequenceNumber)
				}
				types = append(types, ev.Type)
				if ev.AsAny() == nil {
					t.Errorf("event type %q is unknown to the SDK", ev.Type)
				}
				checkDecoded(t, ev.Type, ev.AsAny())
				// The SDK's accumulator checks that items, parts and deltas
				// agree with each other.
				var sev responses.ResponsesServerEventUnion
				if err := sev.UnmarshalJSON([]byte(ev.RawJSON())); err != nil {
					t.Fatalf("%s: %v", ev.Type, err)
				}
				if err := acc.AddEvent(sev); err != nil {
					t.Fatalf("accumulating %s: %v", ev.Type, err)
				}
				switch ev.Type {
				case "response.output_text.delta":
					text.WriteString(ev.Delta)
				case "response.completed":
					r := ev.AsResponseCompleted().Response
					final = &r
				}
			}
			if err := stream.Err(); err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(types, wantResponseEvents(tc.wantTokens)) {
				t.Errorf("events %v\nwant %v", types, wantResponseEvents(tc.wantTokens))
			}
			if text.String() != GeneratedText(tc.wantTokens) {
				t.Errorf("deltas %q", text.String())
			}
			if final == nil {
				t.Fatal("no response.completed")
			}
			checkResponse(t, final)
			snap := acc.Snapshot()
			if snap.TerminalEvent != "response.completed" || snap.OutputText() != GeneratedText(tc.wantTokens) {
				t.Errorf("accumulated %+v", snap)
			}
		})
	}
	if st := s.Stats(); st.StreamsStarted != 2 || st.StreamsCompleted != 2 {
		t.Errorf("stats %+v", st)
	}
}

func TestResponsesErrorsWithOpenAISDK(t *testing.T) {
	s, base := startServer(t, Config{OutputTokens: 6})
	ctx := context.Background()
	input := responses.ResponseNewParamsInputUnion{OfString: openai.String("hi")}

	t.Run("unknown model", func(t *testing.T) {
		client := openaiClient(base)
		_, err := client.Responses.New(ctx, responses.ResponseNewParams{Model: "gpt-4", Input: input})
		var apiErr *openai.Error
		if !errors.As(err, &apiErr) || apiErr.StatusCode != 404 || apiErr.Type != "NotFoundError" {
			t.Fatalf("got %v", err)
		}
	})

	t.Run("failure mid-stream drops the connection", func(t *testing.T) {
		client := openaiClient(base, option.WithHeader(HeaderMidstreamError, "2"))
		stream := client.Responses.NewStreaming(ctx, responses.ResponseNewParams{Model: testModel, Input: input})
		defer stream.Close()
		var types []string
		for stream.Next() {
			types = append(types, stream.Current().Type)
		}
		if stream.Err() == nil {
			t.Error("the stream ended cleanly; vLLM's ends without the chunked body's end")
		}
		if want := wantResponseEvents(2)[:6]; !slices.Equal(types, want) {
			t.Errorf("events %v, want %v", types, want)
		}
	})
	if st := s.Stats(); st.StreamsCompleted != 0 || st.CompletionTokens != 2 {
		t.Errorf("stats %+v: a dropped stream is not completed and counts the tokens it sent", st)
	}
}

// TestResponsesStreamGolden pins the exact bytes of a short stream.
func TestResponsesStreamGolden(t *testing.T) {
	_, base := startServer(t, Config{OutputTokens: 2})
	resp, body := do(t, "POST", base+"/v1/responses", `{"model":"`+testModel+`","input":"hi","stream":true}`, nil)
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/event-stream; charset=utf-8" {
		t.Fatalf("status %d content-type %q", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	checkGolden(t, "responses_stream", normalize(body))
}

// TestResponsesCreatedDuringPrefill: vLLM yields response.created and
// response.in_progress before it waits for the engine, so they arrive while
// the first token is still an hour away.
func TestResponsesCreatedDuringPrefill(t *testing.T) {
	_, base := startServer(t, Config{TTFT: time.Hour})
	// The deadline only bounds a failure; a pass reads two events at once.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "POST", base+"/v1/responses", strings.NewReader(`{"input":"hi","stream":true}`))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	br := bufio.NewReader(resp.Body)
	var lines []string
	for len(lines) < 6 {
		line, err := br.ReadString('\n')
		if err != nil {
			t.Fatalf("after %q: %v", lines, err)
		}
		lines = append(lines, line)
	}
	if lines[0] != "event: response.created\n" || lines[3] != "event: response.in_progress\n" {
		t.Errorf("first events %q", lines)
	}
}

// TestResponsesStreamOptionsAccepted: a proxy may inject stream_options
// into every streamed request; vLLM's Responses API ignores it.
func TestResponsesStreamOptionsAccepted(t *testing.T) {
	_, base := startServer(t, Config{OutputTokens: 2})
	req, _ := http.NewRequest("POST", base+"/v1/responses",
		strings.NewReader(`{"input":"hi","stream":true,"stream_options":{"include_usage":true}}`))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != 200 || !strings.Contains(string(body), "event: response.completed\n") {
		t.Fatalf("status %d err %v body %s", resp.StatusCode, err, body)
	}
}

// FuzzResponsesRequest: whatever the body, the fake answers a non-streamed
// request with valid JSON, and an accepted one with the usage it counted.
func FuzzResponsesRequest(f *testing.F) {
	for _, seed := range []string{
		`{"input":"hi"}`, `{"input":[{"role":"user","content":[{"type":"input_text","text":"a b"}]}],"instructions":"x"}`,
		`{"input":"x","max_output_tokens":1}`, `{"input":"x","instructions":"\u0000\"\\"}`, `{"input":[1]}`, `[]`, `{`,
		`{"input":"a","input":7}`, `{"model":null,"input":"é"}`,
	} {
		f.Add([]byte(seed))
	}
	s := New(Config{OutputTokens: 3, MaxModelLen: 32})
	f.Fuzz(func(t *testing.T, body []byte) {
		var ctx fasthttp.RequestCtx
		ctx.Request.Header.SetMethod("POST")
		ctx.Request.SetRequestURI("/v1/responses")
		ctx.Request.SetBody(body)
		if streamed(body) {
			return // streamed answers are checked by the stream tests
		}
		s.Handler(&ctx)
		out := ctx.Response.Body()
		if !json.Valid(out) {
			t.Fatalf("invalid JSON answer %q to %q", out, body)
		}
		if ctx.Response.StatusCode() != 200 {
			return
		}
		var r struct {
			Usage struct {
				InputTokens  int `json:"input_tokens"`
				OutputTokens int `json:"output_tokens"`
				TotalTokens  int `json:"total_tokens"`
			} `json:"usage"`
		}
		if err := json.Unmarshal(out, &r); err != nil {
			t.Fatal(err)
		}
		u := r.Usage
		if u.InputTokens < 1 || u.OutputTokens < 1 || u.TotalTokens != u.InputTokens+u.OutputTokens {
			t.Fatalf("usage %+v for %q", u, body)
		}
	})
}
