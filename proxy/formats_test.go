package proxy_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"mime/multipart"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/anthropics/anthropic-sdk-go/v2"
	aoption "github.com/anthropics/anthropic-sdk-go/v2/option"
	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
	"github.com/openai/openai-go/v3/responses"

	"github.com/auditproxy/auditproxy/audit"
	"github.com/auditproxy/auditproxy/internal/fakevllm"
	"github.com/auditproxy/auditproxy/proxy"
)

// wav is a silent 16 kHz mono PCM WAV file of the given length.
func wav(seconds float64) []byte {
	samples := int(seconds * 16000)
	var b bytes.Buffer
	b.WriteString("RIFF")
	binary.Write(&b, binary.LittleEndian, uint32(36+2*samples))
	b.WriteString("WAVEfmt ")
	for _, v := range []any{uint32(16), uint16(1), uint16(1), uint32(16000), uint32(32000), uint16(2), uint16(16)} {
		binary.Write(&b, binary.LittleEndian, v)
	}
	b.WriteString("data")
	binary.Write(&b, binary.LittleEndian, uint32(2*samples))
	b.Write(make([]byte, 2*samples))
	return b.Bytes()
}

// usageIn returns the counts of the last usage object in a JSON body or an
// SSE stream, -1 for a count it lacks.
func usageIn(t *testing.T, b []byte) (prompt, completion int64) {
	t.Helper()
	prompt, completion = -1, -1
	docs := [][]byte{b}
	if bytes.HasPrefix(b, []byte("data:")) || bytes.HasPrefix(b, []byte("event:")) {
		docs = nil
		for _, line := range bytes.Split(b, []byte("\n")) {
			if d, ok := bytes.CutPrefix(line, []byte("data: ")); ok && d[0] == '{' {
				docs = append(docs, d)
			}
		}
	}
	for _, d := range docs {
		var v struct {
			Usage *struct {
				Prompt     *int64 `json:"prompt_tokens"`
				Completion *int64 `json:"completion_tokens"`
			} `json:"usage"`
		}
		if err := json.Unmarshal(d, &v); err != nil {
			t.Fatalf("not JSON: %.200s: %v", d, err)
		}
		if v.Usage == nil {
			continue
		}
		prompt, completion = -1, -1
		if v.Usage.Prompt != nil {
			prompt = *v.Usage.Prompt
		}
		if v.Usage.Completion != nil {
			completion = *v.Usage.Completion
		}
	}
	return prompt, completion
}

// TestAnswerFormatsThroughProxy: for each of vLLM's answer formats that the
// fake reproduces, the client gets through the proxy what it gets from vLLM
// directly, and the event's counts are vLLM's usage (null where vLLM sends
// none).
func TestAnswerFormatsThroughProxy(t *testing.T) {
	e := newTestEnv(t, fakevllm.Config{OutputTokens: 12, MaxModelLen: 1 << 20}, nil)
	longPrompt := strings.Repeat("every inference leaves a record ", 60000) // 360,000 prompt tokens: a first chunk over 2 MB
	docs := make([]string, 1500)
	for i := range docs {
		docs[i] = fmt.Sprintf("document %d says %s", i, strings.Repeat("words ", 100))
	}
	docsJSON, _ := json.Marshal(docs)
	jsonHdr := map[string]string{"Content-Type": "application/json"}
	for _, tc := range []struct {
		name, path, body string
		// usageFrom, if set, is the body that makes vLLM send usage, whose
		// counts the event must have (the proxy asked for them).
		usageFrom    string
		wantIn       int64 // -1: null
		wantOut      int64
		finishReason string
	}{
		{name: "rerank: usage before 1 MB of results, no completion count", path: "/v1/rerank",
			body: `{"model":"` + testModel + `","query":"which documents matter","documents":` + string(docsJSON) + `}`, wantOut: -1},
		{name: "score: completion_tokens 0", path: "/v1/score",
			body: `{"model":"` + testModel + `","text_1":"a","text_2":["b c","d"]}`},
		{name: "chat with prompt_logprobs and token ids after usage", path: "/v1/chat/completions",
			body:         `{"model":"` + testModel + `","messages":[{"role":"user","content":"` + longPrompt[:200000] + `"}],"prompt_logprobs":1,"return_token_ids":true}`,
			finishReason: "stop"},
		{name: "chat stream whose first chunk carries 2 MB of prompt token ids", path: "/v1/chat/completions",
			body:         `{"model":"` + testModel + `","stream":true,"return_token_ids":true,"messages":[{"role":"user","content":"` + longPrompt + `"}]}`,
			usageFrom:    `{"model":"` + testModel + `","stream":true,"stream_options":{"include_usage":true},"return_token_ids":true,"messages":[{"role":"user","content":"` + longPrompt + `"}]}`,
			finishReason: "stop"},
		{name: "invocations: a streamed chat", path: "/invocations",
			body:         `{"model":"` + testModel + `","stream":true,"messages":[{"role":"user","content":"hello"}]}`,
			usageFrom:    `{"model":"` + testModel + `","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"hello"}]}`,
			finishReason: "stop"},
		{name: "invocations: an embedding", path: "/invocations",
			body: `{"model":"` + testModel + `","input":"embed me"}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, direct := rawRequest(t, "POST", e.upstream+tc.path, jsonHdr, tc.body)
			_, proxied := rawRequest(t, "POST", e.proxyURL+tc.path, jsonHdr, tc.body)
			ev := e.events.next(t)
			if normalize(direct) != normalize(proxied) {
				t.Fatalf("the client got %d bytes through the proxy, %d directly:\n%.300s\n%.300s", len(proxied), len(direct), proxied, direct)
			}
			source := direct
			if tc.usageFrom != "" {
				_, source = rawRequest(t, "POST", e.upstream+tc.path, jsonHdr, tc.usageFrom)
			}
			in, out := usageIn(t, source)
			if in < 0 && out < 0 {
				t.Fatalf("the fake sent no usage: %.300s", source)
			}
			if tc.wantOut < 0 && out >= 0 {
				t.Fatalf("the fake sent a completion count: %.300s", source)
			}
			if tokens(ev.Input.Tokens) != in || tokens(ev.Output.Tokens) != out {
				t.Errorf("event tokens %d/%d, vLLM's usage %d/%d", tokens(ev.Input.Tokens), tokens(ev.Output.Tokens), in, out)
			}
			if ev.Output.FinishReason != tc.finishReason || ev.Status.Outcome != audit.OutcomeOK || ev.Model.Name != testModel {
				t.Errorf("finish %q outcome %s model %q", ev.Output.FinishReason, ev.Status.Outcome, ev.Model.Name)
			}
		})
	}
}

// TestTranscriptionsThroughProxy: a transcription (a multipart form, read
// as vLLM reads it) records its model, and the audio length vLLM bills as
// its usage; a streamed one that asks for usage records token counts.
func TestTranscriptionsThroughProxy(t *testing.T) {
	e := newTestEnv(t, fakevllm.Config{OutputTokens: 6}, nil)
	ctx := context.Background()
	audio := wav(2.2)
	for _, c := range []openai.Client{sdkClient(e.upstream, newCapture()), sdkClient(e.proxyURL, newCapture())} {
		res, err := c.Audio.Transcriptions.New(ctx, openai.AudioTranscriptionNewParams{File: bytes.NewReader(audio), Model: testModel})
		if err != nil {
			t.Fatal(err)
		}
		if res.Usage.Seconds != 3 {
			t.Errorf("usage %+v", res.Usage)
		}
	}
	ev := e.events.next(t)
	if ev.Model.Name != testModel || ev.Input.AudioSeconds == nil || *ev.Input.AudioSeconds != 3 ||
		ev.Input.Tokens != nil || ev.Output.Tokens != nil || ev.Status.Outcome != audit.OutcomeOK || ev.Stream {
		t.Errorf("event %+v (audio seconds %v)", ev, ev.Input.AudioSeconds)
	}

	var b bytes.Buffer
	w := multipart.NewWriter(&b)
	fw, _ := w.CreateFormFile("file", "a.wav")
	fw.Write(audio)
	w.WriteField("model", "someone-else")
	w.WriteField("model", testModel) // the last wins, in vLLM
	w.WriteField("stream", "true")
	w.WriteField("stream_include_usage", "true")
	w.Close()
	hdr := map[string]string{"Content-Type": w.FormDataContentType()}
	_, direct := rawRequest(t, "POST", e.upstream+"/v1/audio/transcriptions", hdr, b.String())
	_, proxied := rawRequest(t, "POST", e.proxyURL+"/v1/audio/transcriptions", hdr, b.String())
	if normalize(direct) != normalize(proxied) {
		t.Fatalf("stream through the proxy differs:\n%s\n%s", proxied, direct)
	}
	ev = e.events.next(t)
	in, out := usageIn(t, direct)
	if ev.Model.Name != testModel || !ev.Stream || tokens(ev.Input.Tokens) != in || tokens(ev.Output.Tokens) != out || in < 0 || ev.Status.Outcome != audit.OutcomeOK {
		t.Errorf("streamed transcription: model %q stream %v tokens %d/%d (vLLM %d/%d) outcome %s", ev.Model.Name, ev.Stream, tokens(ev.Input.Tokens), tokens(ev.Output.Tokens), in, out, ev.Status.Outcome)
	}
}

// TestForcedUsageReachesTheClient: with vLLM's --enable-force-include-usage
// every stream carries usage; told so, the proxy neither asks for it nor
// removes it, so a client that did not ask gets what vLLM sends it.
func TestForcedUsageReachesTheClient(t *testing.T) {
	e := newTestEnv(t, fakevllm.Config{OutputTokens: 8, ForceIncludeUsage: fakevllm.ForceUsageFinal},
		func(c *proxy.Config) { c.UpstreamForcesUsage = true })
	direct, proxied, _, ev, _ := e.exchangeBoth(t, func(c openai.Client) error {
		s := c.Chat.Completions.NewStreaming(context.Background(), openai.ChatCompletionNewParams{
			Model: testModel, Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("hi")},
		}, option.WithJSONDel("stream_options"))
		for s.Next() {
		}
		return s.Err()
	})
	if normalize(direct) != normalize(proxied) {
		t.Fatalf("the client got\n%s\nthrough the proxy, and\n%s\ndirectly", proxied, direct)
	}
	in, out := usageIn(t, direct)
	if in < 0 || tokens(ev.Input.Tokens) != in || tokens(ev.Output.Tokens) != out {
		t.Errorf("tokens %d/%d, vLLM's %d/%d", tokens(ev.Input.Tokens), tokens(ev.Output.Tokens), in, out)
	}
}

// TestRequestWithoutModel: vLLM serves a request that names no model with
// its first served name; the event records that name, from the answer, and
// its checksum.
func TestRequestWithoutModel(t *testing.T) {
	e := newTestEnv(t, fakevllm.Config{OutputTokens: 3}, func(c *proxy.Config) {
		c.ModelChecksums = func(name string) (string, string) { return "blake3:sum-of-" + name, "" }
	})
	_, body := rawRequest(t, "POST", e.proxyURL+"/v1/chat/completions", map[string]string{"Content-Type": "application/json"},
		`{"messages":[{"role":"user","content":"hi"}]}`)
	ev := e.events.next(t)
	if !strings.Contains(string(body), `"model":"`+testModel+`"`) {
		t.Fatalf("the fake did not serve its first model: %s", body)
	}
	if ev.Model.Name != testModel || !ev.Model.FromAnswer || ev.Model.Checksum != "blake3:sum-of-"+testModel {
		t.Errorf("model %+v", ev.Model)
	}
}

// TestResponsesAPIThroughProxy: the Responses API with the official SDK,
// streamed (typed events, usage only in response.completed, no [DONE]) and
// not: the same bytes as directly, vLLM's usage, the response's status as
// the finish reason, outcome ok.
func TestResponsesAPIThroughProxy(t *testing.T) {
	e := newTestEnv(t, fakevllm.Config{OutputTokens: 9}, nil)
	ctx := context.Background()
	for _, tc := range []struct {
		name      string
		maxTokens int64
		finish    string
	}{
		{"completed", 0, "completed"},
		{"cut at max_output_tokens", 4, "max_output_tokens"},
	} {
		params := responses.ResponseNewParams{Model: testModel, Input: responses.ResponseNewParamsInputUnion{OfString: openai.String("tell me about audit logs")}}
		if tc.maxTokens > 0 {
			params.MaxOutputTokens = openai.Int(tc.maxTokens)
		}
		for _, streamed := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/streamed=%v", tc.name, streamed), func(t *testing.T) {
				var usage responses.ResponseUsage
				direct, proxied, _, ev, _ := e.exchangeBoth(t, func(c openai.Client) error {
					if !streamed {
						r, err := c.Responses.New(ctx, params)
						if err == nil {
							usage = r.Usage
						}
						return err
					}
					s := c.Responses.NewStreaming(ctx, params)
					for s.Next() {
						if cur := s.Current(); cur.Type == "response.completed" {
							usage = cur.Response.Usage
						}
					}
					return s.Err()
				})
				if normalizeResponses(direct) != normalizeResponses(proxied) {
					t.Fatalf("through the proxy:\n%.400s\ndirectly:\n%.400s", proxied, direct)
				}
				if usage.OutputTokens == 0 || tokens(ev.Input.Tokens) != usage.InputTokens || tokens(ev.Output.Tokens) != usage.OutputTokens {
					t.Errorf("tokens %d/%d, vLLM's usage %d/%d", tokens(ev.Input.Tokens), tokens(ev.Output.Tokens), usage.InputTokens, usage.OutputTokens)
				}
				if ev.Output.FinishReason != tc.finish || ev.Status.Outcome != audit.OutcomeOK || ev.Stream != streamed || ev.Model.Name != testModel {
					t.Errorf("finish %q outcome %s %s stream %v model %q", ev.Output.FinishReason, ev.Status.Outcome, ev.Status.Error, ev.Stream, ev.Model.Name)
				}
			})
		}
	}
	t.Run("the upstream drops the stream", func(t *testing.T) {
		c := sdkClient(e.proxyURL, newCapture(), option.WithHeader(fakevllm.HeaderMidstreamError, "2"))
		s := c.Responses.NewStreaming(ctx,
			responses.ResponseNewParams{Model: testModel, Input: responses.ResponseNewParamsInputUnion{OfString: openai.String("hi")}})
		for s.Next() {
		}
		ev := e.events.next(t)
		if ev.Status.Outcome != audit.OutcomeUpstreamError || ev.Output.Tokens != nil {
			t.Errorf("outcome %s %s, output tokens %v", ev.Status.Outcome, ev.Status.Error, ev.Output.Tokens)
		}
	})
}

// normalizeResponses is normalize for the Responses API, whose ids and
// timestamps have other names.
func normalizeResponses(b []byte) string {
	return responsesVolatile.ReplaceAllString(normalize(b), `"$1":_`)
}

var responsesVolatile = regexp.MustCompile(`"(id|item_id|created_at)":("[^"]*"|[0-9.]+)`)

// TestMessagesAPIThroughProxy: the Anthropic Messages API with Anthropic's
// official SDK, streamed and not: the same bytes as directly, vLLM's usage
// (input from message_start, output from message_delta), stop_reason as
// the finish reason; an error event in the stream is an upstream error.
func TestMessagesAPIThroughProxy(t *testing.T) {
	e := newTestEnv(t, fakevllm.Config{OutputTokens: 7}, nil)
	ctx := context.Background()
	client := func(base string, c *capture, opts ...aoption.RequestOption) anthropic.Client {
		return anthropic.NewClient(append([]aoption.RequestOption{aoption.WithBaseURL(base), aoption.WithAPIKey(sdkAPIKey),
			aoption.WithHTTPClient(&http.Client{Transport: c}), aoption.WithMaxRetries(0)}, opts...)...)
	}
	for _, tc := range []struct {
		name      string
		maxTokens int64
		stop      string
	}{
		{"end_turn", 100, "end_turn"},
		{"max_tokens", 3, "max_tokens"},
	} {
		params := anthropic.MessageNewParams{Model: testModel, MaxTokens: tc.maxTokens,
			Messages: []anthropic.MessageParam{anthropic.NewUserMessage(anthropic.NewTextBlock("who answered this"))}}
		for _, streamed := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/streamed=%v", tc.name, streamed), func(t *testing.T) {
				var msgs [2]anthropic.Message
				var bodies [2][]byte
				for i, base := range []string{e.upstream, e.proxyURL} {
					c := newCapture()
					cl := client(base, c)
					if !streamed {
						m, err := cl.Messages.New(ctx, params)
						if err != nil {
							t.Fatal(err)
						}
						msgs[i] = *m
					} else {
						s := cl.Messages.NewStreaming(ctx, params)
						for s.Next() {
							if err := msgs[i].Accumulate(s.Current()); err != nil {
								t.Fatal(err)
							}
						}
						if err := s.Err(); err != nil {
							t.Fatal(err)
						}
					}
					_, bodies[i], _ = c.bodies()
				}
				ev := e.events.next(t)
				if normalize(bodies[0]) != normalize(bodies[1]) {
					t.Fatalf("through the proxy:\n%.400s\ndirectly:\n%.400s", bodies[1], bodies[0])
				}
				u := msgs[0].Usage
				if u.OutputTokens == 0 || tokens(ev.Input.Tokens) != u.InputTokens || tokens(ev.Output.Tokens) != u.OutputTokens {
					t.Errorf("tokens %d/%d, vLLM's usage %d/%d", tokens(ev.Input.Tokens), tokens(ev.Output.Tokens), u.InputTokens, u.OutputTokens)
				}
				if ev.Output.FinishReason != tc.stop || string(msgs[0].StopReason) != tc.stop || ev.Status.Outcome != audit.OutcomeOK || ev.Stream != streamed {
					t.Errorf("finish %q (vLLM %q) outcome %s %s stream %v", ev.Output.FinishReason, msgs[0].StopReason, ev.Status.Outcome, ev.Status.Error, ev.Stream)
				}
			})
		}
	}
	t.Run("an error event in the stream", func(t *testing.T) {
		c := client(e.proxyURL, newCapture(), aoption.WithHeader(fakevllm.HeaderMidstreamError, "2"))
		s := c.Messages.NewStreaming(ctx,
			anthropic.MessageNewParams{Model: testModel, MaxTokens: 50, Messages: []anthropic.MessageParam{anthropic.NewUserMessage(anthropic.NewTextBlock("hi"))}})
		for s.Next() {
		}
		ev := e.events.next(t)
		if ev.Status.Outcome != audit.OutcomeUpstreamError || ev.Status.UpstreamError != "internal_error" {
			t.Errorf("outcome %s, upstream error %q", ev.Status.Outcome, ev.Status.UpstreamError)
		}
	})
}

// writeLoRA makes a PEFT LoRA adapter directory the fake can load.
func writeLoRA(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	for name, content := range map[string]string{
		"adapter_config.json":       `{"peft_type":"LORA","base_model_name_or_path":"` + testModel + `","r":8}`,
		"adapter_model.safetensors": "adapter weights",
	} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// TestLoRALoadIsRecordedBeforeItsAnswer: a runtime LoRA load or unload
// that vLLM accepted makes the proxy have the served models read again
// (ModelsChanged) before the client gets the answer, so the adapter is
// identified from its first request on; the exchange's event names the
// adapter. A refused load changes nothing. A request for a model unknown
// when it came waits for it to be identified (AwaitModel).
func TestLoRALoadIsRecordedBeforeItsAnswer(t *testing.T) {
	var mu sync.Mutex
	sums := map[string]string{}
	var changes, awaits int
	e := newTestEnv(t, fakevllm.Config{OutputTokens: 3, AllowRuntimeLoRA: true}, func(c *proxy.Config) {
		c.ModelChecksums = func(name string) (string, string) {
			mu.Lock()
			defer mu.Unlock()
			if sums[name] == "" {
				return "", ""
			}
			return sums[name], "blake3:base"
		}
		c.ModelsChanged = func(ctx context.Context) {
			mu.Lock()
			defer mu.Unlock()
			changes++
			sums["sql-adapter"] = "blake3:adapter"
		}
		c.AwaitModel = func(name string, wait time.Duration) (string, string) {
			mu.Lock()
			defer mu.Unlock()
			awaits++
			return "blake3:late-" + name, ""
		}
	})
	counts := func() (int, int) {
		mu.Lock()
		defer mu.Unlock()
		return changes, awaits
	}
	hdr := map[string]string{"Content-Type": "application/json"}
	load := `{"lora_name":"sql-adapter","lora_path":"` + writeLoRA(t) + `"}`
	resp, body := rawRequest(t, "POST", e.proxyURL+"/v1/load_lora_adapter", hdr, load)
	ev := e.events.next(t)
	gotChanges, _ := counts()
	if resp.StatusCode != 200 || !strings.Contains(string(body), "added successfully") || gotChanges != 1 {
		t.Fatalf("load: %d %s, %d model changes", resp.StatusCode, body, gotChanges)
	}
	if ev.Model.Name != "sql-adapter" || ev.Model.Checksum != "blake3:adapter" || ev.Status.Outcome != audit.OutcomeOK {
		t.Errorf("load event: model %+v outcome %s", ev.Model, ev.Status.Outcome)
	}

	// The first request to the adapter has both checksums.
	rawRequest(t, "POST", e.proxyURL+"/v1/chat/completions", hdr, `{"model":"sql-adapter","messages":[{"role":"user","content":"select"}]}`)
	if ev := e.events.next(t); ev.Model.Checksum != "blake3:adapter" || ev.Model.BaseChecksum != "blake3:base" {
		t.Errorf("first request to the adapter: %+v", ev.Model)
	}

	// Loaded again without load_inplace: vLLM refuses, nothing changes.
	resp, _ = rawRequest(t, "POST", e.proxyURL+"/v1/load_lora_adapter", hdr, load)
	e.events.next(t)
	if c, _ := counts(); resp.StatusCode != 400 || c != 1 {
		t.Errorf("a refused load: %d, %d model changes", resp.StatusCode, c)
	}

	// A model the proxy had no checksum for when the request came.
	rawRequest(t, "POST", e.proxyURL+"/v1/chat/completions", hdr, `{"model":"`+testModel+`","messages":[{"role":"user","content":"x"}]}`)
	if ev := e.events.next(t); ev.Model.Checksum != "blake3:late-"+testModel {
		t.Errorf("a model unknown when the request came: %+v", ev.Model)
	}
	if _, a := counts(); a != 1 {
		t.Errorf("%d waits for a model unknown when the request came, want 1", a)
	}

	resp, _ = rawRequest(t, "POST", e.proxyURL+"/v1/unload_lora_adapter", hdr, `{"lora_name":"sql-adapter"}`)
	if ev := e.events.next(t); resp.StatusCode != 200 || ev.Model.Name != "sql-adapter" {
		t.Errorf("unload: %d, model %q", resp.StatusCode, ev.Model.Name)
	}
	if c, _ := counts(); c != 2 {
		t.Errorf("%d model changes after the unload, want 2", c)
	}
}

// TestSageMakerAdapterChangesReadTheModels: a load at POST /adapters and an
// unload at DELETE /adapters/{name} (vLLM's LoRA handlers as SageMaker
// mounts them) read the served models again before the answer's end, as
// /v1/load_lora_adapter does, and their events name the adapter.
func TestSageMakerAdapterChangesReadTheModels(t *testing.T) {
	up := startScriptedUpstream(t, func(c net.Conn, _ int) bool {
		io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nok")
		return true
	})
	var mu sync.Mutex
	changes := 0
	e := newTestEnv(t, fakevllm.Config{}, func(c *proxy.Config) {
		c.Upstream = "http://" + up.ln.Addr().String()
		c.ModelsChanged = func(context.Context) {
			mu.Lock()
			defer mu.Unlock()
			changes++
		}
		c.ModelChecksums = func(name string) (string, string) { return "blake3:" + name, "" }
	})
	hdr := map[string]string{"Content-Type": "application/json"}
	for i, req := range []struct{ method, path, body string }{
		{"POST", "/adapters", `{"name":"sql-adapter","src":"s3://bucket/sql"}`},
		{"DELETE", "/adapters/sql-adapter", ""},
	} {
		resp, _ := rawRequest(t, req.method, e.proxyURL+req.path, hdr, req.body)
		ev := e.events.next(t)
		mu.Lock()
		n := changes
		mu.Unlock()
		if resp.StatusCode != 200 || n != i+1 {
			t.Errorf("%s %s: status %d, %d model reads, want %d", req.method, req.path, resp.StatusCode, n, i+1)
		}
		if ev.Model.Name != "sql-adapter" || ev.Model.Checksum != "blake3:sql-adapter" {
			t.Errorf("%s %s: event model %+v, want the adapter", req.method, req.path, ev.Model)
		}
	}
}

// TestGenerateStreamUsageThroughTheProxy: a streamed /inference/v1/generate
// request that did not ask for usage goes to vLLM with include_usage (also
// with --upstream-force-include-usage, which vLLM does not apply there),
// the usage chunk is removed from the client's stream, and the event has
// its counts.
func TestGenerateStreamUsageThroughTheProxy(t *testing.T) {
	const (
		chunk1 = "data: {\"request_id\":\"g\",\"choices\":[{\"index\":0,\"logprobs\":null,\"finish_reason\":null,\"token_ids\":[5],\"routed_experts\":null,\"sampling_mask\":null}],\"usage\":null}\n\n"
		chunk2 = "data: {\"request_id\":\"g\",\"choices\":[{\"index\":0,\"logprobs\":null,\"finish_reason\":\"stop\",\"token_ids\":[6],\"routed_experts\":null,\"sampling_mask\":null}],\"usage\":null}\n\n"
		usage  = "data: {\"request_id\":\"g\",\"choices\":[],\"usage\":{\"prompt_tokens\":4,\"total_tokens\":6,\"completion_tokens\":2}}\n\n"
		done   = "data: [DONE]\n\n"
	)
	for _, forced := range []bool{false, true} {
		up := startScriptedUpstream(t, func(c net.Conn, _ int) bool {
			io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\n"+chunk1+chunk2+usage+done)
			return false
		})
		e := newTestEnv(t, fakevllm.Config{}, func(c *proxy.Config) {
			c.Upstream = "http://" + up.ln.Addr().String()
			c.UpstreamForcesUsage = forced
		})
		resp, got := rawRequest(t, "POST", e.proxyURL+"/inference/v1/generate", map[string]string{"Content-Type": "application/json"},
			`{"token_ids":[1,2,3,4],"sampling_params":{"max_tokens":2},"stream":true}`)
		ev := e.events.next(t)
		sent := up.sentBodies()
		if len(sent) != 1 || !strings.Contains(sent[0], `"include_usage":true`) {
			t.Errorf("forced=%v: vLLM was sent %q, want include_usage", forced, sent)
		}
		if resp.StatusCode != 200 || string(got) != chunk1+chunk2+done {
			t.Errorf("forced=%v: the client got %d %q, want the stream without the usage chunk", forced, resp.StatusCode, got)
		}
		if ev.Input.Tokens == nil || *ev.Input.Tokens != 4 || ev.Output.Tokens == nil || *ev.Output.Tokens != 2 || ev.Status.Outcome != audit.OutcomeOK {
			t.Errorf("forced=%v: event tokens %v/%v outcome %s", forced, ev.Input.Tokens, ev.Output.Tokens, ev.Status.Outcome)
		}
	}
}
