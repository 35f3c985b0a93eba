package proxy_test

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/auditproxy/auditproxy/internal/fakevllm"
	"github.com/auditproxy/auditproxy/proxy"
)

// TestUpstreamKeyIsNotGivenToClients: behind a vLLM started with --api-key,
// the proxy's own key never answers for a client: a client without a key
// gets vLLM's 401, one with its own valid key is served, and both are
// recorded.
func TestUpstreamKeyIsNotGivenToClients(t *testing.T) {
	const key = "sk-vllm-upstream-3b9d"
	noteSecret(key)
	e := newTestEnv(t, fakevllm.Config{APIKeys: []string{key}}, func(c *proxy.Config) { c.UpstreamAPIKey = key })
	body := `{"model":"` + testModel + `","messages":[{"role":"user","content":"hi"}],"max_tokens":2}`
	for _, tt := range []struct {
		name   string
		hdr    map[string]string
		status int
		keyID  bool
	}{
		{"no key", nil, 401, false},
		{"a wrong key", map[string]string{"Authorization": "Bearer sk-client-wrong-1"}, 401, true},
		{"the client's valid key", map[string]string{"Authorization": "Bearer " + key}, 200, true},
	} {
		resp, b := rawRequest(t, "POST", e.proxyURL+"/v1/chat/completions", tt.hdr, body)
		if resp.StatusCode != tt.status {
			t.Errorf("%s: %d %s, want %d", tt.name, resp.StatusCode, b, tt.status)
		}
		if tt.status == 401 && string(b) != `{"error":"Unauthorized"}` {
			t.Errorf("%s: vLLM's 401 did not reach the client unchanged: %q", tt.name, b)
		}
		ev := e.events.next(t)
		if ev.Status.Code != tt.status || (ev.APIKeyID != nil) != tt.keyID {
			t.Errorf("%s: event status %d, api_key_id %v", tt.name, ev.Status.Code, ev.APIKeyID)
		}
	}
	if n := e.fake.Stats().Unauthorized; n != 2 {
		t.Errorf("vLLM refused %d requests, want 2", n)
	}
}

// TestReadinessProbeCarriesTheUpstreamKey: the /readyz probe of the
// upstream's /health is the proxy's own request and carries the key; a
// client's request carries what the client sent.
func TestReadinessProbeCarriesTheUpstreamKey(t *testing.T) {
	const key = "sk-vllm-upstream-5c1e"
	noteSecret(key)
	var mu sync.Mutex
	seen := map[string][]string{} // path -> Authorization values
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seen[r.URL.Path] = append(seen[r.URL.Path], r.Header.Get("Authorization"))
		mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		w.Write([]byte(`{}`))
	}))
	defer up.Close()
	e := newTestEnv(t, fakevllm.Config{}, func(c *proxy.Config) { c.Upstream = up.URL; c.UpstreamAPIKey = key })
	admin := httptest.NewServer(e.proxy.AdminHandler(prometheus.NewRegistry(), proxy.AdminOptions{}))
	defer admin.Close()
	get(t, admin.URL+"/readyz", 200)
	rawRequest(t, "POST", e.proxyURL+"/v1/completions", nil, `{"model":"m","prompt":"a"}`)
	e.events.next(t)
	rawRequest(t, "POST", e.proxyURL+"/v1/completions", map[string]string{"Authorization": "Bearer sk-client-own-77"}, `{"model":"m","prompt":"a"}`)
	e.events.next(t)
	mu.Lock()
	defer mu.Unlock()
	if got := strings.Join(seen["/health"], ","); got != "Bearer "+key {
		t.Errorf("the probe of /health sent Authorization %q", got)
	}
	if got := strings.Join(seen["/v1/completions"], ","); got != ",Bearer sk-client-own-77" {
		t.Errorf("clients' requests reached the upstream with Authorization %q", got)
	}
}

// TestReadyzShowsWhatIsDegraded: a degraded sidecar stays ready and says
// why; a not ready one says both.
func TestReadyzShowsWhatIsDegraded(t *testing.T) {
	e := newTestEnv(t, fakevllm.Config{}, nil)
	lines := []string{"model identity unknown since 2026-12-05T10:00:00Z (unauthorized): vLLM answered 401 Unauthorized to GET /v1/models; set --upstream-api-key-file"}
	var mu sync.Mutex
	degraded := func() []string { mu.Lock(); defer mu.Unlock(); return lines }
	opts := proxy.AdminOptions{Degraded: degraded}
	admin := httptest.NewServer(e.proxy.AdminHandler(prometheus.NewRegistry(), opts))
	defer admin.Close()
	if b := get(t, admin.URL+"/readyz", 200); b != "ok\ndegraded: "+lines[0]+"\n" {
		t.Errorf("/readyz while degraded: %q", b)
	}
	mu.Lock()
	lines = nil
	mu.Unlock()
	// The probe is cached for a second, the degraded lines are not.
	if b := get(t, admin.URL+"/readyz", 200); b != "ok\n" {
		t.Errorf("/readyz when all is well: %q", b)
	}
	e.fake.Close()
	mu.Lock()
	lines = []string{"x"}
	mu.Unlock()
	fresh := httptest.NewServer(e.proxy.AdminHandler(prometheus.NewRegistry(), opts))
	defer fresh.Close()
	if b := get(t, fresh.URL+"/readyz", 503); !strings.HasPrefix(b, "not ready: upstream /health") || !strings.HasSuffix(b, "\ndegraded: x\n") {
		t.Errorf("/readyz with the upstream down: %q", b)
	}
}
