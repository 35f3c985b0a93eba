package transcript

import (
	"flag"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/auditproxy/auditproxy/internal/fakevllm"
)

// update rewrites testdata/*.sse and *.json from the fake vLLM's answers:
// go test ./transcript -run TestFakeVLLM -update
var update = flag.Bool("update", false, "rewrite testdata/ from internal/fakevllm's answers")

// fakeRequests are the captures in testdata/: each API vLLM streams, its
// stream and its body for the same request (the fake's answer depends only
// on the request), and a stream cut by an error.
var fakeRequests = []struct {
	name, path, body string
	header           map[string]string
}{
	{"chat", "/v1/chat/completions", `{"model":"m","messages":[{"role":"user","content":"hi"}],"max_tokens":5%s}`, nil},
	{"completions", "/v1/completions", `{"model":"m","prompt":"once upon","max_tokens":5%s}`, nil},
	{"responses", "/v1/responses", `{"model":"m","input":"hi","max_output_tokens":5%s}`, nil},
	{"messages", "/v1/messages", `{"model":"m","max_tokens":5,"messages":[{"role":"user","content":"hi"}]%s}`, nil},
	{"messages_done", "/v1/messages", `{"model":"m","max_tokens":5,"messages":[{"role":"user","content":"hi"}]%s}`, map[string]string{"X-Fake-Messages-Done": "1"}},
	{"chat_error", "/v1/chat/completions", `{"model":"m","messages":[{"role":"user","content":"hi"}],"max_tokens":5%s}`, map[string]string{fakevllm.HeaderMidstreamError: "2"}},
	{"messages_error", "/v1/messages", `{"model":"m","max_tokens":5,"messages":[{"role":"user","content":"hi"}]%s}`, map[string]string{fakevllm.HeaderMidstreamError: "2"}},
}

// TestFakeVLLMStreamsReadAsTheirBodies: for each API, the text re-assembled
// from the fake vLLM's stream is the text of its non-streamed answer to
// the same request, with the same finish reason.
func TestFakeVLLMStreamsReadAsTheirBodies(t *testing.T) {
	fake := fakevllm.New(fakevllm.Config{Model: "m"})
	base, err := fake.Start("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer fake.Close()
	post := func(path, body string, header map[string]string) []byte {
		t.Helper()
		req, _ := http.NewRequest("POST", base+path, strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		for k, v := range header {
			req.Header.Set(k, v)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return b
	}
	for _, r := range fakeRequests {
		t.Run(r.name, func(t *testing.T) {
			streamed := post(r.path, strings.Replace(r.body, "%s", `,"stream":true`, 1), r.header)
			if *update {
				os.MkdirAll("testdata", 0o755)
				if err := os.WriteFile(filepath.Join("testdata", r.name+".sse"), streamed, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			got := Read(streamed)
			if strings.HasSuffix(r.name, "_error") {
				if len(got.Errors) != 1 || !strings.Contains(got.Errors[0], "Simulated engine failure") {
					t.Errorf("errors %q, want the simulated failure", got.Errors)
				}
				return
			}
			body := post(r.path, strings.Replace(r.body, "%s", "", 1), r.header)
			if *update && !strings.HasSuffix(r.name, "_done") {
				if err := os.WriteFile(filepath.Join("testdata", r.name+".json"), body, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want := Read(body)
			if !got.Streamed || want.Streamed || !got.Ended || len(got.Notes) > 0 || len(want.Notes) > 0 || got.API != want.API {
				t.Fatalf("stream %+v\nbody %+v", got, want)
			}
			if len(got.Choices) != len(want.Choices) || len(got.Choices) == 0 {
				t.Fatalf("%d choices streamed, %d in the body", len(got.Choices), len(want.Choices))
			}
			for i := range got.Choices {
				g, w := got.Choices[i], want.Choices[i]
				if g.Text == "" || g.Text != w.Text || g.FinishReason != w.FinishReason || g.FinishReason == "" {
					t.Errorf("choice %d: streamed %q (%s), body %q (%s)", i, g.Text, g.FinishReason, w.Text, w.FinishReason)
				}
			}
		})
	}
}
