package fakevllm

import (
	"io"
	"net/http"
	"strings"
	"testing"
)

// TestAPIKeyAsVLLMChecksIt: with APIKeys the fake answers as vLLM's
// AuthenticationMiddleware does (docs/vllm-wire-format.md,
// "Authentication"): which paths are guarded, how the header is read, and
// the 401 it sends.
func TestAPIKeyAsVLLMChecksIt(t *testing.T) {
	s, base := startServer(t, Config{APIKeys: []string{"sk-one", "", "sk-two", "café"}})
	tests := []struct {
		name, method, path string
		auth               []string // Authorization header lines, in order
		hdr                map[string]string
		status             int
	}{
		{"models without a key", "GET", "/v1/models", nil, nil, 401},
		{"first key", "GET", "/v1/models", []string{"Bearer sk-one"}, nil, 200},
		{"second key", "GET", "/v1/models", []string{"Bearer sk-two"}, nil, 200},
		{"scheme in lower case", "GET", "/v1/models", []string{"bearer sk-one"}, nil, 200},
		{"scheme in upper case", "GET", "/v1/models", []string{"BEARER sk-one"}, nil, 200},
		{"wrong key", "GET", "/v1/models", []string{"Bearer sk-three"}, nil, 401},
		{"a key's prefix", "GET", "/v1/models", []string{"Bearer sk-on"}, nil, 401},
		{"a key with more after it", "GET", "/v1/models", []string{"Bearer sk-one2"}, nil, 401},
		{"two spaces after the scheme", "GET", "/v1/models", []string{"Bearer  sk-one"}, nil, 401},
		{"another scheme", "GET", "/v1/models", []string{"Basic sk-one"}, nil, 401},
		{"no space", "GET", "/v1/models", []string{"Bearersk-one"}, nil, 401},
		{"the scheme alone", "GET", "/v1/models", []string{"Bearer"}, nil, 401},
		{"the key alone", "GET", "/v1/models", []string{"sk-one"}, nil, 401},
		{"an empty key is no key", "GET", "/v1/models", []string{"Bearer "}, nil, 401},
		{"first of two headers wrong", "GET", "/v1/models", []string{"Bearer wrong", "Bearer sk-one"}, nil, 401},
		{"first of two headers right", "GET", "/v1/models", []string{"Bearer sk-one", "Bearer wrong"}, nil, 200},
		{"non-ASCII key sent as UTF-8", "GET", "/v1/models", []string{"Bearer café"}, nil, 401},
		{"non-ASCII key sent as Latin-1", "GET", "/v1/models", []string{"Bearer caf\xe9"}, nil, 200},
		{"chat without a key", "POST", "/v1/chat/completions", nil, nil, 401},
		{"chat with a key", "POST", "/v1/chat/completions", []string{"Bearer sk-two"}, nil, 200},
		{"unknown /v1 path without a key", "GET", "/v1/nothing", nil, nil, 401},
		{"unknown /v1 path with a key", "GET", "/v1/nothing", []string{"Bearer sk-one"}, nil, 404},
		{"a path that only starts like /v1", "GET", "/v1foo", nil, nil, 401},
		{"/v2", "GET", "/v2/rerank", nil, nil, 401},
		{"/inference", "POST", "/inference/v1/generate", nil, nil, 401},
		{"/cohere", "POST", "/cohere/v2/chat", nil, nil, 401},
		{"dot segments are not resolved", "GET", "/v1/../health", nil, nil, 401},
		{"percent-encoded path", "GET", "/%761/models", nil, nil, 401},
		{"health is open", "GET", "/health", nil, nil, 200},
		{"version is open", "GET", "/version", nil, nil, 200},
		{"metrics are open", "GET", "/metrics", nil, nil, 200},
		{"other paths are open", "GET", "/tokenize", nil, nil, 404},
		{"a preflight is not checked", "OPTIONS", "/v1/models", nil, nil, 405},
		{"a refusal comes before the test hooks", "GET", "/v1/models", nil, map[string]string{HeaderDelayMs: "soon"}, 401},
	}
	refused := 0
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			body := ""
			if tt.method == "POST" {
				body = `{"model":"` + testModel + `","messages":[{"role":"user","content":"hi"}],"max_tokens":2}`
			}
			req, err := http.NewRequest(tt.method, base+tt.path, strings.NewReader(body))
			if err != nil {
				t.Fatal(err)
			}
			req.Header.Set("Content-Type", "application/json")
			for _, a := range tt.auth {
				req.Header.Add("Authorization", a)
			}
			for k, v := range tt.hdr {
				req.Header.Set(k, v)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			b, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err != nil {
				t.Fatal(err)
			}
			if resp.StatusCode != tt.status {
				t.Fatalf("status %d, want %d: %s", resp.StatusCode, tt.status, b)
			}
			if tt.status != 401 {
				return
			}
			refused++
			if string(b) != `{"error":"Unauthorized"}` || resp.Header.Get("Content-Type") != "application/json" ||
				resp.Header.Get("WWW-Authenticate") != "" {
				t.Errorf("401 answer: %q, headers %v", b, resp.Header)
			}
		})
	}
	if got := s.Stats().Unauthorized; got != int64(refused) {
		t.Errorf("Stats().Unauthorized = %d, want %d", got, refused)
	}
}

// TestNoAPIKeyNoAuthentication: without keys, or with only empty ones (an
// empty VLLM_API_KEY), nothing is checked.
func TestNoAPIKeyNoAuthentication(t *testing.T) {
	for _, keys := range [][]string{nil, {""}} {
		_, base := startServer(t, Config{APIKeys: keys})
		if resp, b := do(t, "GET", base+"/v1/models", "", nil); resp.StatusCode != 200 {
			t.Errorf("keys %q: /v1/models answered %d: %s", keys, resp.StatusCode, b)
		}
	}
}
