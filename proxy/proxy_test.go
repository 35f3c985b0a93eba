package proxy_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
	"github.com/zeebo/blake3"

	"github.com/auditproxy/auditproxy/audit"
	"github.com/auditproxy/auditproxy/hashing"
	"github.com/auditproxy/auditproxy/internal/fakevllm"
	"github.com/auditproxy/auditproxy/internal/testutil"
	"github.com/auditproxy/auditproxy/proxy"
)

const testModel = "meta-llama/Llama-3.1-8B-Instruct"

// eventSink is an audit.Recorder for tests. It keeps each event as the JSON
// the proxy's real recorders would write, decoded again, so tests see
// exactly what an auditor would.
type eventSink struct {
	mu     sync.Mutex
	events []audit.Event
	ch     chan audit.Event
	raw    bytes.Buffer
}

func newEventSink() *eventSink { return &eventSink{ch: make(chan audit.Event, 1024)} }

func (s *eventSink) Record(ev *audit.Event) error {
	b, err := json.Marshal(ev)
	if err != nil {
		return err
	}
	var cp audit.Event
	if err := json.Unmarshal(b, &cp); err != nil {
		return err
	}
	s.mu.Lock()
	s.events = append(s.events, cp)
	s.raw.Write(b)
	s.raw.WriteByte('\n')
	s.mu.Unlock()
	s.ch <- cp
	return nil
}

// next waits for the next recorded event.
func (s *eventSink) next(t *testing.T) audit.Event {
	t.Helper()
	select {
	case ev := <-s.ch:
		return ev
	case <-time.After(10 * time.Second):
		t.Fatal("no audit event recorded within 10s")
		return audit.Event{}
	}
}

func (s *eventSink) rawJSON() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.raw.String()
}

type testEnv struct {
	fake     *fakevllm.Server
	upstream string // the fake's base URL
	proxyURL string // the proxy's base URL
	proxy    *proxy.Proxy
	events   *eventSink
	logs     *testutil.LogBuffer
	keyIDer  *hashing.KeyIDer
}

// newTestEnv starts a fake vLLM and the proxy in front of it. mod may change
// the proxy's config.
func newTestEnv(t testing.TB, fcfg fakevllm.Config, mod func(*proxy.Config)) *testEnv {
	t.Helper()
	e := &testEnv{fake: fakevllm.New(fcfg), events: newEventSink(), logs: &testutil.LogBuffer{}}
	var err error
	e.upstream, err = e.fake.Start("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.fake.Close() })
	e.keyIDer, err = hashing.NewKeyIDer(bytes.Repeat([]byte{7}, hashing.KeyIDSecretSize))
	if err != nil {
		t.Fatal(err)
	}
	cfg := proxy.Config{
		Upstream: e.upstream,
		KeyIDer:  e.keyIDer,
		Recorder: e.events,
		Logger:   slog.New(slog.NewJSONHandler(e.logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		Source:   audit.Source{Host: "test", Version: "test"},
	}
	if mod != nil {
		mod(&cfg)
	}
	e.proxy, err = proxy.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go e.proxy.Serve(ln)
	t.Cleanup(func() { e.proxy.Shutdown() })
	t.Cleanup(func() { checkLogsHoldNoSecret(t, e.logs.String()) })
	e.proxyURL = "http://" + ln.Addr().String()
	return e
}

// sentSecrets are the API keys and request bodies the tests sent: none may
// appear in any log line of any test.
var sentSecrets sync.Map

func noteSecret(s string) {
	if len(s) >= 8 {
		sentSecrets.Store(s, true)
	}
}

// checkLogsHoldNoSecret fails the test if a log line holds an API key, a
// request body or a prompt that any test sent, or JSON members that only a
// request body has.
func checkLogsHoldNoSecret(t testing.TB, logs string) {
	t.Helper()
	for _, marker := range []string{`"prompt":`, `"messages":`, `"content":`, "Bearer ", "bearer "} {
		if strings.Contains(logs, marker) {
			t.Errorf("a log line holds %q, which only requests have:\n%s", marker, logs)
		}
	}
	sentSecrets.Range(func(k, _ any) bool {
		if strings.Contains(logs, k.(string)) {
			t.Errorf("a log line holds what a request sent: %.80q", k)
		}
		return true
	})
}

// capture is an http.RoundTripper that keeps the exact bytes of every request
// body sent and response body received, as the OpenAI SDK sees them.
type capture struct {
	base http.RoundTripper
	mu   sync.Mutex
	req  []byte
	resp *bytes.Buffer
	hdr  http.Header
}

func newCapture() *capture { return &capture{base: &http.Transport{}} }

func (c *capture) RoundTrip(r *http.Request) (*http.Response, error) {
	var body []byte
	if r.Body != nil {
		var err error
		body, err = io.ReadAll(r.Body)
		if err != nil {
			return nil, err
		}
		r.Body = io.NopCloser(bytes.NewReader(body))
	}
	resp, err := c.base.RoundTrip(r)
	if err != nil {
		return nil, err
	}
	buf := &bytes.Buffer{}
	c.mu.Lock()
	c.req, c.resp, c.hdr = body, buf, resp.Header
	c.mu.Unlock()
	resp.Body = teeBody{ReadCloser: resp.Body, w: buf, mu: &c.mu}
	return resp, nil
}

func (c *capture) bodies() (req, resp []byte, hdr http.Header) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.req, append([]byte(nil), c.resp.Bytes()...), c.hdr
}

type teeBody struct {
	io.ReadCloser
	w  *bytes.Buffer
	mu *sync.Mutex
}

func (t teeBody) Read(p []byte) (int, error) {
	n, err := t.ReadCloser.Read(p)
	t.mu.Lock()
	t.w.Write(p[:n])
	t.mu.Unlock()
	return n, err
}

const sdkAPIKey = "sk-test-secret-key-123"

func init() { noteSecret(sdkAPIKey) }

func sdkClient(baseURL string, c *capture, opts ...option.RequestOption) openai.Client {
	all := []option.RequestOption{
		option.WithBaseURL(baseURL + "/v1/"),
		option.WithAPIKey(sdkAPIKey),
		option.WithHTTPClient(&http.Client{Transport: c}),
		option.WithMaxRetries(0),
	}
	return openai.NewClient(append(all, opts...)...)
}

// volatile matches the parts of a vLLM answer that differ between two
// identical requests: ids and creation times.
var volatile = regexp.MustCompile(`"(id|created|system_fingerprint)":("[^"]*"|[0-9]+)`)

func normalize(b []byte) string { return volatile.ReplaceAllString(string(b), `"$1":_`) }

// exchangeBoth runs do against the upstream directly and through the proxy,
// and returns the bytes each response body had and the proxy's event.
func (e *testEnv) exchangeBoth(t *testing.T, do func(openai.Client) error) (direct, proxied, proxiedReq []byte, ev audit.Event, hdr http.Header) {
	t.Helper()
	dc, pc := newCapture(), newCapture()
	if err := do(sdkClient(e.upstream, dc)); err != nil {
		t.Fatalf("direct: %v", err)
	}
	if err := do(sdkClient(e.proxyURL, pc)); err != nil {
		t.Fatalf("through the proxy: %v", err)
	}
	_, direct, _ = dc.bodies()
	proxiedReq, proxied, hdr = pc.bodies()
	return direct, proxied, proxiedReq, e.events.next(t), hdr
}

// checkHashes asserts that the event's hashes are those of the bytes the
// client sent and received, computed independently of the proxy's code.
func checkHashes(t *testing.T, ev audit.Event, req, resp []byte) {
	t.Helper()
	if want := bodyDigest(req); ev.Input.Hash != want {
		t.Errorf("input.hash = %s, want %s (of the %d request bytes the client sent)", ev.Input.Hash, want, len(req))
	}
	if ev.Input.Bytes != int64(len(req)) {
		t.Errorf("input.bytes = %d, want %d", ev.Input.Bytes, len(req))
	}
	if want := bodyDigest(resp); ev.Output.Hash != want {
		t.Errorf("output.hash = %s, want %s (of the %d response bytes the client got)", ev.Output.Hash, want, len(resp))
	}
	if ev.Output.Bytes != int64(len(resp)) {
		t.Errorf("output.bytes = %d, want %d", ev.Output.Bytes, len(resp))
	}
}

func tokens(p *int64) int64 {
	if p == nil {
		return -1
	}
	return *p
}

func TestOpenAISDKThroughProxy(t *testing.T) {
	e := newTestEnv(t, fakevllm.Config{OutputTokens: 20}, nil)
	ctx := context.Background()
	chat := openai.ChatCompletionNewParams{
		Model:    testModel,
		Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("say something about audit trails")},
	}

	t.Run("chat", func(t *testing.T) {
		var got []*openai.ChatCompletion
		direct, proxied, req, ev, hdr := e.exchangeBoth(t, func(c openai.Client) error {
			r, err := c.Chat.Completions.New(ctx, chat)
			got = append(got, r)
			return err
		})
		if normalize(direct) != normalize(proxied) {
			t.Errorf("answers differ:\ndirect:  %s\nproxied: %s", direct, proxied)
		}
		checkHashes(t, ev, req, proxied)
		if ev.Stream || ev.Model.Name != testModel || ev.Path != "/v1/chat/completions" || ev.Method != "POST" {
			t.Errorf("event stream/model/path/method = %v %q %q %q", ev.Stream, ev.Model.Name, ev.Path, ev.Method)
		}
		u := got[1].Usage
		if tokens(ev.Input.Tokens) != u.PromptTokens || tokens(ev.Output.Tokens) != u.CompletionTokens {
			t.Errorf("event tokens %d/%d, usage %d/%d", tokens(ev.Input.Tokens), tokens(ev.Output.Tokens), u.PromptTokens, u.CompletionTokens)
		}
		if ev.Output.FinishReason != got[1].Choices[0].FinishReason {
			t.Errorf("finish_reason %q, want %q", ev.Output.FinishReason, got[1].Choices[0].FinishReason)
		}
		if ev.Status.Code != 200 || ev.Status.Outcome != audit.OutcomeOK {
			t.Errorf("status %+v", ev.Status)
		}
		if id := hdr.Get("X-Request-Id"); id == "" || id != ev.RequestID {
			t.Errorf("X-Request-Id %q, event request_id %q", id, ev.RequestID)
		}
		if want := e.keyIDer.ID([]byte("sk-test-secret-key-123")); ev.APIKeyID == nil || *ev.APIKeyID != want {
			t.Errorf("api_key_id = %v, want %s", ev.APIKeyID, want)
		}
		if ev.Latency.Total <= 0 || ev.Latency.Upstream <= 0 || ev.Latency.Overhead < 0 || ev.Latency.TTFT != nil {
			t.Errorf("latency %+v", ev.Latency)
		}
	})

	// A stream that did not ask for usage: the proxy asks vLLM for it and
	// removes the usage chunk, so the client's bytes equal a direct stream's.
	for _, includeUsage := range []bool{false, true} {
		name := "chat stream without usage"
		if includeUsage {
			name = "chat stream with usage"
		}
		t.Run(name, func(t *testing.T) {
			params := chat
			if includeUsage {
				params.StreamOptions.IncludeUsage = openai.Bool(true)
			}
			var texts []string
			var usage []openai.CompletionUsage
			direct, proxied, req, ev, _ := e.exchangeBoth(t, func(c openai.Client) error {
				s := c.Chat.Completions.NewStreaming(ctx, params)
				var acc openai.ChatCompletionAccumulator
				for s.Next() {
					acc.AddChunk(s.Current())
				}
				texts = append(texts, acc.Choices[0].Message.Content)
				usage = append(usage, acc.Usage)
				return s.Err()
			})
			if normalize(direct) != normalize(proxied) {
				t.Errorf("streams differ:\ndirect:  %s\nproxied: %s", direct, proxied)
			}
			if strings.Contains(string(proxied), `"usage"`) != includeUsage {
				t.Errorf("usage in the client's stream: %v, want %v", !includeUsage, includeUsage)
			}
			if texts[0] == "" || texts[0] != texts[1] {
				t.Errorf("texts differ: %q vs %q", texts[0], texts[1])
			}
			checkHashes(t, ev, req, proxied)
			if !ev.Stream || ev.Status.Outcome != audit.OutcomeOK || ev.Output.FinishReason == "" {
				t.Errorf("event stream=%v status=%+v finish=%q", ev.Stream, ev.Status, ev.Output.FinishReason)
			}
			if tokens(ev.Output.Tokens) != 20 || tokens(ev.Input.Tokens) != 5 {
				t.Errorf("tokens in/out = %d/%d, want 5/20 (the fake's count)", tokens(ev.Input.Tokens), tokens(ev.Output.Tokens))
			}
			if includeUsage && (usage[1].CompletionTokens != tokens(ev.Output.Tokens) || usage[1].PromptTokens != tokens(ev.Input.Tokens)) {
				t.Errorf("client usage %+v, event %d/%d", usage[1], tokens(ev.Input.Tokens), tokens(ev.Output.Tokens))
			}
			if ev.Latency.TTFT == nil || *ev.Latency.TTFT <= 0 || *ev.Latency.TTFT > ev.Latency.Total {
				t.Errorf("ttft %v of total %v", ev.Latency.TTFT, ev.Latency.Total)
			}
		})
	}

	t.Run("completion stream", func(t *testing.T) {
		params := openai.CompletionNewParams{
			Model:     testModel,
			Prompt:    openai.CompletionNewParamsPromptUnion{OfString: openai.String("once upon a time")},
			MaxTokens: openai.Int(7),
		}
		direct, proxied, req, ev, _ := e.exchangeBoth(t, func(c openai.Client) error {
			s := c.Completions.NewStreaming(ctx, params)
			for s.Next() {
			}
			return s.Err()
		})
		if normalize(direct) != normalize(proxied) {
			t.Errorf("streams differ:\ndirect:  %s\nproxied: %s", direct, proxied)
		}
		checkHashes(t, ev, req, proxied)
		if tokens(ev.Output.Tokens) != 7 || tokens(ev.Input.Tokens) != 4 || ev.Output.FinishReason != "length" {
			t.Errorf("tokens %d/%d finish %q", tokens(ev.Input.Tokens), tokens(ev.Output.Tokens), ev.Output.FinishReason)
		}
	})

	t.Run("embeddings", func(t *testing.T) {
		var got []*openai.CreateEmbeddingResponse
		params := openai.EmbeddingNewParams{
			Model: testModel,
			Input: openai.EmbeddingNewParamsInputUnion{OfArrayOfStrings: []string{"first text", "second one here"}},
		}
		direct, proxied, req, ev, _ := e.exchangeBoth(t, func(c openai.Client) error {
			r, err := c.Embeddings.New(ctx, params)
			got = append(got, r)
			return err
		})
		if normalize(direct) != normalize(proxied) {
			t.Errorf("answers differ")
		}
		checkHashes(t, ev, req, proxied)
		if len(got[1].Data) != 2 || tokens(ev.Input.Tokens) != got[1].Usage.PromptTokens {
			t.Errorf("embeddings %d, input tokens %d, usage %+v", len(got[1].Data), tokens(ev.Input.Tokens), got[1].Usage)
		}
	})

	t.Run("models", func(t *testing.T) {
		direct, proxied, _, ev, _ := e.exchangeBoth(t, func(c openai.Client) error {
			_, err := c.Models.List(ctx)
			return err
		})
		if normalize(direct) != normalize(proxied) {
			t.Errorf("/v1/models differs:\n%s\n%s", direct, proxied)
		}
		if ev.Method != "GET" || ev.Path != "/v1/models" || ev.Input.Bytes != 0 || ev.Model.Name != "" {
			t.Errorf("event %+v", ev)
		}
	})

	t.Run("client request id", func(t *testing.T) {
		c := newCapture()
		client := sdkClient(e.proxyURL, c, option.WithHeader("X-Request-Id", "req-2026.11:abc_DEF"))
		_, err := client.Chat.Completions.New(ctx, chat)
		if err != nil {
			t.Fatal(err)
		}
		ev := e.events.next(t)
		_, _, hdr := c.bodies()
		if ev.RequestID != "req-2026.11:abc_DEF" || hdr.Get("X-Request-Id") != ev.RequestID {
			t.Errorf("request id: event %q, header %q", ev.RequestID, hdr.Get("X-Request-Id"))
		}
	})
}

// rawRequest sends one request with net/http and returns the response and
// its whole body.
func rawRequest(t *testing.T, method, url string, hdr map[string]string, body string) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
		if k == "Authorization" {
			noteSecret(v)
		}
	}
	noteSecret(body)
	resp, err := (&http.Client{Transport: &http.Transport{}}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("read body: %v", err)
	}
	return resp, b
}

// openAIError decodes the OpenAI error shape, failing the test if b is not
// one.
func openAIError(t *testing.T, b []byte) (typ, code string) {
	t.Helper()
	var e struct {
		Error *struct {
			Message string  `json:"message"`
			Type    string  `json:"type"`
			Code    string  `json:"code"`
			Param   *string `json:"param"`
		} `json:"error"`
	}
	if err := json.Unmarshal(b, &e); err != nil || e.Error == nil || e.Error.Message == "" {
		t.Fatalf("not an OpenAI error body: %s", b)
	}
	return e.Error.Type, e.Error.Code
}

const chatBody = `{"model":"` + testModel + `","messages":[{"role":"user","content":"hello there"}],"stream":true}`

func TestProxyFailures(t *testing.T) {
	t.Run("upstream unreachable", func(t *testing.T) {
		ln, _ := net.Listen("tcp", "127.0.0.1:0")
		addr := ln.Addr().String()
		ln.Close()
		e := newTestEnv(t, fakevllm.Config{}, func(c *proxy.Config) { c.Upstream = "http://" + addr })
		// The SDK sees a proper API error.
		client := sdkClient(e.proxyURL, newCapture())
		_, err := client.Chat.Completions.New(context.Background(), openai.ChatCompletionNewParams{
			Model: testModel, Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("hi")}})
		var apiErr *openai.Error
		if !errors.As(err, &apiErr) || apiErr.StatusCode != 502 || apiErr.Code != "upstream_unreachable" {
			t.Fatalf("SDK error = %v, want a 502 API error with code upstream_unreachable", err)
		}
		ev := e.events.next(t)
		if ev.Status.Code != 502 || ev.Status.Outcome != audit.OutcomeUpstreamUnreachable || ev.Input.Hash == "" || ev.Output.Hash == "" {
			t.Errorf("event %+v", ev)
		}
	})

	// A small answer of known length is read whole before it is sent;
	// when the upstream breaks off inside it, the client gets what a
	// streamed answer gives: no complete answer, a cut connection.
	t.Run("upstream breaks off inside a small known-length answer", func(t *testing.T) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		const half = `{"id":"chatcmpl-1","object":"chat.completion","choices":[{"index":0,"message":{"role":"assi`
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				go func() {
					defer c.Close()
					br := bufio.NewReader(c)
					req, err := http.ReadRequest(br)
					if err != nil {
						return
					}
					io.Copy(io.Discard, req.Body)
					fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s", 2*len(half), half)
				}()
			}
		}()
		e := newTestEnv(t, fakevllm.Config{}, func(c *proxy.Config) { c.Upstream = "http://" + ln.Addr().String() })
		resp, err := http.Post(e.proxyURL+"/v1/chat/completions", "application/json",
			strings.NewReader(strings.Replace(chatBody, `"stream":true`, `"stream":false`, 1)))
		// A body this small sits in the server's write buffer with its
		// header, so the cut may come before the header: either way the
		// client must not hold an answer that looks whole.
		if err == nil {
			b, readErr := io.ReadAll(resp.Body)
			resp.Body.Close()
			if readErr == nil || !strings.HasPrefix(half, string(b)) {
				t.Errorf("client got %q, %v; want at most the %d bytes sent, then an error", b, readErr, len(half))
			}
		}
		ev := e.events.next(t)
		if ev.Status.Outcome != audit.OutcomeUpstreamError || ev.Status.Error != "upstream_broke_off" ||
			ev.Output.Bytes != int64(len(half)) || ev.Output.Hash != bodyDigest([]byte(half)) {
			t.Errorf("event status %+v output %+v; want upstream_broke_off over the %d bytes received", ev.Status, ev.Output, len(half))
		}
	})

	t.Run("upstream silent past the idle timeout", func(t *testing.T) {
		e := newTestEnv(t, fakevllm.Config{}, func(c *proxy.Config) { c.UpstreamIdleTimeout = 300 * time.Millisecond })
		start := time.Now()
		resp, b := rawRequest(t, "POST", e.proxyURL+"/v1/chat/completions",
			map[string]string{fakevllm.HeaderDelayMs: "5000"}, chatBody)
		if resp.StatusCode != 504 {
			t.Fatalf("status %d, want 504: %s", resp.StatusCode, b)
		}
		if _, code := openAIError(t, b); code != "upstream_timeout" {
			t.Errorf("code %q", code)
		}
		if d := time.Since(start); d > 3*time.Second {
			t.Errorf("took %v; the idle timeout is 300ms", d)
		}
		ev := e.events.next(t)
		if ev.Status.Outcome != audit.OutcomeUpstreamTimeout || ev.Status.Code != 504 {
			t.Errorf("status %+v", ev.Status)
		}
	})

	t.Run("upstream stalls mid-stream", func(t *testing.T) {
		e := newTestEnv(t, fakevllm.Config{}, func(c *proxy.Config) { c.UpstreamIdleTimeout = 300 * time.Millisecond })
		resp, b := rawRequest(t, "POST", e.proxyURL+"/v1/chat/completions",
			map[string]string{fakevllm.HeaderStallAfter: "3", fakevllm.HeaderDelayMs: "5000"}, chatBody)
		if resp.StatusCode != 200 || !bytes.Contains(b, []byte("data: ")) || bytes.Contains(b, []byte("[DONE]")) {
			t.Fatalf("status %d body %q: want a 200 stream cut before [DONE]", resp.StatusCode, b)
		}
		ev := e.events.next(t)
		if ev.Status.Outcome != audit.OutcomeUpstreamTimeout || ev.Status.Error != "upstream_idle_timeout" {
			t.Errorf("status %+v", ev.Status)
		}
		if want := bodyDigest(b); ev.Output.Hash != want {
			t.Errorf("output hash %s, want %s of the %d bytes received", ev.Output.Hash, want, len(b))
		}
	})

	for _, format := range []string{"", "flat", "spaced"} {
		t.Run("mid-stream error "+format, func(t *testing.T) {
			e := newTestEnv(t, fakevllm.Config{}, nil)
			hdr := map[string]string{fakevllm.HeaderMidstreamError: "2", fakevllm.HeaderErrorFormat: format}
			direct, db := rawRequest(t, "POST", e.upstream+"/v1/chat/completions", hdr, chatBody)
			resp, b := rawRequest(t, "POST", e.proxyURL+"/v1/chat/completions", hdr, chatBody)
			if resp.StatusCode != 200 || direct.StatusCode != 200 || normalize(db) != normalize(b) {
				t.Fatalf("proxied stream differs from direct:\n%s\n%s", db, b)
			}
			ev := e.events.next(t)
			if ev.Status.Outcome != audit.OutcomeUpstreamError || ev.Status.UpstreamError != "InternalServerError" || ev.Status.Code != 200 {
				t.Errorf("status %+v", ev.Status)
			}
			if want := bodyDigest(b); ev.Output.Hash != want {
				t.Errorf("output hash %s, want %s", ev.Output.Hash, want)
			}
		})
	}

	t.Run("body over the limit", func(t *testing.T) {
		e := newTestEnv(t, fakevllm.Config{}, func(c *proxy.Config) { c.MaxRequestBodySize = 1024 })
		body := `{"model":"m","prompt":"` + strings.Repeat("x", 2000) + `"}`
		resp, b := rawRequest(t, "POST", e.proxyURL+"/v1/completions",
			map[string]string{"Content-Type": "application/json", "X-Request-Id": "big-1"}, body)
		if resp.StatusCode != 413 {
			t.Fatalf("status %d, want 413", resp.StatusCode)
		}
		if typ, code := openAIError(t, b); typ != "invalid_request_error" || code != "request_too_large" {
			t.Errorf("error type %q code %q", typ, code)
		}
		ev := e.events.next(t)
		if ev.Status.Outcome != audit.OutcomeRejected || ev.Status.Code != 413 || ev.RequestID != "big-1" || ev.Input.Bytes != int64(len(body)) {
			t.Errorf("event %+v", ev)
		}
		if n := e.fake.Stats().Requests; n != 0 {
			t.Errorf("the upstream got %d requests, want 0", n)
		}
	})

	t.Run("malformed JSON is forwarded and audited", func(t *testing.T) {
		e := newTestEnv(t, fakevllm.Config{}, nil)
		body := `{"model": "` + testModel + `", "messages": [` // cut off
		direct, db := rawRequest(t, "POST", e.upstream+"/v1/chat/completions", nil, body)
		resp, b := rawRequest(t, "POST", e.proxyURL+"/v1/chat/completions", nil, body)
		if resp.StatusCode != 400 || direct.StatusCode != 400 || string(db) != string(b) {
			t.Fatalf("status %d, body %s; direct %d %s", resp.StatusCode, b, direct.StatusCode, db)
		}
		ev := e.events.next(t)
		if ev.Status.Code != 400 || ev.Status.Outcome != audit.OutcomeUpstreamError || ev.Status.UpstreamError != "BadRequestError" {
			t.Errorf("status %+v", ev.Status)
		}
		checkHashes(t, ev, []byte(body), b)
	})

	t.Run("bad request id is replaced", func(t *testing.T) {
		e := newTestEnv(t, fakevllm.Config{}, nil)
		for _, bad := range []string{"has space", strings.Repeat("a", 129), "semi;colon", "quote\"d"} {
			resp, _ := rawRequest(t, "GET", e.proxyURL+"/v1/models", map[string]string{"X-Request-Id": bad}, "")
			ev := e.events.next(t)
			got := resp.Header.Get("X-Request-Id")
			if got == bad || got != ev.RequestID || !uuidV4.MatchString(got) {
				t.Errorf("X-Request-Id %q -> header %q, event %q: want a fresh UUIDv4 in both", bad, got, ev.RequestID)
			}
		}
	})
}

var uuidV4 = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`)

func TestClientCancelMidStream(t *testing.T) {
	e := newTestEnv(t, fakevllm.Config{InterTokenLatency: 20 * time.Millisecond, OutputTokens: 200}, nil)
	ctx, cancel := context.WithCancel(context.Background())
	c := newCapture()
	client := sdkClient(e.proxyURL, c)
	s := client.Chat.Completions.NewStreaming(ctx, openai.ChatCompletionNewParams{
		Model: testModel, Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("a long answer please")}})
	for i := 0; i < 5 && s.Next(); i++ {
	}
	cancel()
	s.Close()
	ev := e.events.next(t)
	if ev.Status.Outcome != audit.OutcomeClientCancelled || ev.Status.Error != "client_disconnected" {
		t.Errorf("status %+v, want client_cancelled", ev.Status)
	}
	_, got, _ := c.bodies()
	// The proxy wrote at least what the client read, and far less than the
	// 200 chunks of the whole answer.
	if ev.Output.Bytes < int64(len(got)) || ev.Output.Bytes > 100*int64(len(got)) || ev.Output.Bytes > 40_000 {
		t.Errorf("output.bytes = %d; the client read %d", ev.Output.Bytes, len(got))
	}
	// The upstream connection was closed, which stops the generation.
	deadline := time.Now().Add(5 * time.Second)
	for e.fake.Stats().StreamsAborted == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("the upstream stream was not aborted: %+v", e.fake.Stats())
		}
		time.Sleep(10 * time.Millisecond)
	}
	if st := e.fake.Stats(); st.StreamsCompleted != 0 {
		t.Errorf("upstream stats %+v: the stream ran to its end", st)
	}
}

func TestPassThrough(t *testing.T) {
	e := newTestEnv(t, fakevllm.Config{}, nil)
	for _, path := range []string{"/health", "/version", "/metrics", "/v1/models?x=1", "/no/such/path"} {
		t.Run(path, func(t *testing.T) {
			direct, db := rawRequest(t, "GET", e.upstream+path, nil, "")
			resp, b := rawRequest(t, "GET", e.proxyURL+path, nil, "")
			if resp.StatusCode != direct.StatusCode || normalize(b) != normalize(db) {
				t.Errorf("proxied %d %q, direct %d %q", resp.StatusCode, b, direct.StatusCode, db)
			}
			for _, h := range []string{"Content-Type", "Server"} {
				if resp.Header.Get(h) != direct.Header.Get(h) {
					t.Errorf("%s: proxied %q, direct %q", h, resp.Header.Get(h), direct.Header.Get(h))
				}
			}
			ev := e.events.next(t)
			if ev.Status.Code != direct.StatusCode || ev.Path != strings.SplitN(path, "?", 2)[0] {
				t.Errorf("event status %d path %q", ev.Status.Code, ev.Path)
			}
		})
	}
}

// TestNoSecretsWritten runs requests carrying an API key and a distinctive
// prompt, and checks that neither the key, nor the prompt, nor the answer
// appears in any event or log line.
func TestNoSecretsWritten(t *testing.T) {
	e := newTestEnv(t, fakevllm.Config{}, nil)
	const key = "sk-live-SUPERSECRET-0042"
	const prompt = "my social security number is zebra-quokka-771"
	body := `{"model":"` + testModel + `","messages":[{"role":"user","content":"` + prompt + `"}]}`
	hdr := map[string]string{"Authorization": "Bearer " + key}
	_, answer := rawRequest(t, "POST", e.proxyURL+"/v1/chat/completions", hdr, body)
	e.events.next(t)
	_, _ = rawRequest(t, "POST", e.proxyURL+"/v1/chat/completions", hdr, strings.Replace(body, "}]}", "}],\"stream\":true}", 1))
	e.events.next(t)
	_, _ = rawRequest(t, "POST", e.proxyURL+"/v1/chat/completions", hdr, body[:40]) // malformed
	e.events.next(t)

	var content struct {
		Choices []struct {
			Message struct{ Content string } `json:"message"`
		} `json:"choices"`
	}
	if err := json.Unmarshal(answer, &content); err != nil || len(content.Choices) == 0 || content.Choices[0].Message.Content == "" {
		t.Fatalf("no answer text: %s", answer)
	}
	written := e.events.rawJSON() + e.logs.String()
	for _, secret := range []string{key, "SUPERSECRET", prompt, "zebra-quokka", content.Choices[0].Message.Content} {
		if strings.Contains(written, secret) {
			t.Errorf("%q appears in what was written:\n%s", secret, written)
		}
	}
	if !strings.Contains(written, e.keyIDer.ID([]byte(key))) {
		t.Error("the key id is missing from the events")
	}
}

// TestClientStopsReading: a client that sends a request and then reads
// nothing is cut after the client idle timeout, and the event says so.
func TestClientStopsReading(t *testing.T) {
	e := newTestEnv(t, fakevllm.Config{OutputTokens: 200_000, MaxModelLen: 1 << 20}, func(c *proxy.Config) { c.ClientIdleTimeout = 500 * time.Millisecond })
	conn, err := net.Dial("tcp", strings.TrimPrefix(e.proxyURL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.(*net.TCPConn).SetReadBuffer(4096)
	body := chatBody
	_, err = io.WriteString(conn, "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: "+
		strconv.Itoa(len(body))+"\r\n\r\n"+body)
	if err != nil {
		t.Fatal(err)
	}
	ev := e.events.next(t)
	if ev.Status.Outcome != audit.OutcomeClientCancelled || ev.Status.Error != "client_idle_timeout" {
		t.Errorf("status %+v, want client_cancelled / client_idle_timeout", ev.Status)
	}
	if ev.Output.Bytes == 0 {
		t.Error("output.bytes is 0; the proxy wrote until the client's buffers were full")
	}
}

// TestHeaders checks header handling against an upstream that echoes what it
// received: any-case lookups, hop-by-hop removal both ways, X-Request-Id.
func TestHeaders(t *testing.T) {
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Connection", "X-Hop")
		w.Header().Set("X-Hop", "must not reach the client")
		w.Header().Set("Keep-Alive", "timeout=5")
		w.Header().Set("X-End-To-End", "kept")
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(r.Header)
	}))
	defer upstream.Close()
	e := newTestEnv(t, fakevllm.Config{}, func(c *proxy.Config) { c.Upstream = upstream.URL })

	conn, err := net.Dial("tcp", strings.TrimPrefix(e.proxyURL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	body := `{"model":"m"}`
	io.WriteString(conn, "POST /v1/completions?beta=1 HTTP/1.1\r\nhost: x\r\nauthorization: bearer sk-lower\r\n"+
		"x-request-id: lower-case-id\r\nconnection: keep-alive, x-secret-hop\r\nx-secret-hop: 1\r\n"+
		"keep-alive: 300\r\nproxy-authorization: Basic Zm9v\r\nte: trailers\r\nx-custom: v\r\n"+
		"content-length: "+strconv.Itoa(len(body))+"\r\n\r\n"+body)
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	var got http.Header
	if err := json.NewDecoder(resp.Body).Decode(&got); err != nil {
		t.Fatal(err)
	}
	for _, h := range []string{"X-Secret-Hop", "Keep-Alive", "Proxy-Authorization", "Te"} {
		if v := got.Get(h); v != "" {
			t.Errorf("hop-by-hop %s: %q reached the upstream", h, v)
		}
	}
	if got.Get("X-Custom") != "v" || got.Get("Authorization") != "bearer sk-lower" || got.Get("X-Request-Id") != "lower-case-id" {
		t.Errorf("end-to-end headers at the upstream: %v", got)
	}
	if resp.Header.Get("X-Hop") != "" || resp.Header.Get("Keep-Alive") != "" || resp.Header.Get("X-End-To-End") != "kept" {
		t.Errorf("response headers at the client: %v", resp.Header)
	}
	if resp.Header.Get("X-Request-Id") != "lower-case-id" {
		t.Errorf("X-Request-Id %q", resp.Header.Get("X-Request-Id"))
	}
	ev := e.events.next(t)
	if ev.RequestID != "lower-case-id" || ev.APIKeyID == nil || *ev.APIKeyID != e.keyIDer.ID([]byte("sk-lower")) {
		t.Errorf("event request_id %q api_key_id %v", ev.RequestID, ev.APIKeyID)
	}
}

// gatedRecorder holds every Record until its gate opens.
type gatedRecorder struct {
	next audit.Recorder
	gate chan struct{}
}

func (g gatedRecorder) Record(ev *audit.Event) error {
	<-g.gate
	return g.next.Record(ev)
}

// TestAnswerEndsOnlyAfterItsEvent: while the event log has not taken the
// event, the client gets neither a stream's [DONE] nor the end of a
// non-streamed body; once it has, the client gets everything.
func TestAnswerEndsOnlyAfterItsEvent(t *testing.T) {
	for _, tc := range []struct {
		name, body string
		before     func(got []byte) bool // what the client may have seen while the event waits
	}{
		{"stream", chatBody, func(got []byte) bool {
			return bytes.Contains(got, []byte("data: {")) && !bytes.Contains(got, []byte("[DONE]"))
		}},
		{"non-streamed", strings.Replace(chatBody, `"stream":true`, `"stream":false`, 1), func(got []byte) bool {
			return len(got) == 0
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			gate := make(chan struct{})
			sink := newEventSink()
			e := newTestEnv(t, fakevllm.Config{}, func(c *proxy.Config) { c.Recorder = gatedRecorder{next: sink, gate: gate} })
			var mu sync.Mutex
			var got []byte
			done := make(chan error, 1)
			// A non-streamed answer's headers wait with its body, so the
			// request runs where it may block.
			go func() {
				resp, err := http.Post(e.proxyURL+"/v1/chat/completions", "application/json", strings.NewReader(tc.body))
				if err != nil {
					done <- err
					return
				}
				defer resp.Body.Close()
				buf := make([]byte, 512)
				for {
					n, err := resp.Body.Read(buf)
					mu.Lock()
					got = append(got, buf[:n]...)
					mu.Unlock()
					if err != nil {
						done <- err
						return
					}
				}
			}()
			time.Sleep(300 * time.Millisecond)
			mu.Lock()
			early := append([]byte(nil), got...)
			mu.Unlock()
			if !tc.before(early) {
				t.Fatalf("while the event was not recorded the client got %q", early)
			}
			select {
			case <-done:
				t.Fatal("the response ended before its event was recorded")
			default:
			}
			close(gate)
			select {
			case err := <-done:
				if err != io.EOF {
					t.Fatalf("read: %v", err)
				}
			case <-time.After(5 * time.Second):
				t.Fatal("the response did not complete after its event was recorded")
			}
			ev := sink.next(t)
			if want := bodyDigest(got); ev.Output.Hash != want || ev.Status.Outcome != audit.OutcomeOK || ev.Output.Tokens == nil {
				t.Errorf("event %s %s %v, want ok, tokens, and the hash of the %d bytes received", ev.Output.Hash, ev.Status.Outcome, ev.Output.Tokens, len(got))
			}
		})
	}
}

// BLAKE3 stays available on request (--hash blake3): both bodies, streamed
// and not, are hashed with it and the digests say so.
func TestBLAKE3OnRequest(t *testing.T) {
	e := newTestEnv(t, fakevllm.Config{OutputTokens: 20}, func(c *proxy.Config) { c.Hash = hashing.BLAKE3 })
	ctx := context.Background()
	chat := openai.ChatCompletionNewParams{
		Model:    testModel,
		Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("hash me with blake3")},
	}
	b3 := func(b []byte) string {
		s := blake3.Sum256(b)
		return "blake3:" + hex.EncodeToString(s[:])
	}
	for _, stream := range []bool{false, true} {
		_, proxied, req, ev, _ := e.exchangeBoth(t, func(c openai.Client) error {
			if stream {
				s := c.Chat.Completions.NewStreaming(ctx, chat)
				for s.Next() {
				}
				return s.Err()
			}
			_, err := c.Chat.Completions.New(ctx, chat)
			return err
		})
		if ev.Stream != stream || ev.Input.Hash != b3(req) || ev.Output.Hash != b3(proxied) {
			t.Errorf("stream=%v: input %s output %s, want %s and %s", stream, ev.Input.Hash, ev.Output.Hash, b3(req), b3(proxied))
		}
	}
}
