package proxy_test

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/auditproxy/auditproxy/bench/fakevllm"
	"github.com/auditproxy/auditproxy/proxy"
)

func TestAdminEndpointsAndMetrics(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := proxy.NewMetrics()
	if err := m.Register(reg); err != nil {
		t.Fatal(err)
	}
	e := newTestEnv(t, fakevllm.Config{}, func(c *proxy.Config) { c.Metrics = m })
	admin := httptest.NewServer(e.proxy.AdminHandler(reg))
	defer admin.Close()

	rawRequest(t, "POST", e.proxyURL+"/v1/chat/completions", nil, chatBody)
	e.events.next(t)
	rawRequest(t, "POST", e.proxyURL+"/v1/chat/completions", nil, `{"model":"`+testModel+`","messages":[{"role":"user","content":"hi"}]}`)
	e.events.next(t)

	// promtool check metrics runs this linter.
	problems, err := testutil.GatherAndLint(reg)
	if err != nil || len(problems) > 0 {
		t.Errorf("metric lint: %v %+v", err, problems)
	}
	body := get(t, admin.URL+"/metrics", 200)
	for _, want := range []string{
		`auditproxy_requests_total{code="200",model="` + testModel + `",outcome="ok"} 2`,
		`auditproxy_time_to_first_token_seconds_count{model="` + testModel + `"} 1`,
		`auditproxy_request_duration_seconds_count{model="` + testModel + `"} 2`,
		`auditproxy_proxy_overhead_seconds_bucket{le="0.0001"}`,
		`auditproxy_input_tokens_total{model="` + testModel + `"} 3`,
		`auditproxy_output_tokens_total{model="` + testModel + `"} 32`,
		`auditproxy_requests_in_flight 0`,
		`auditproxy_event_record_seconds_count 2`,
		`auditproxy_events_recorded_total 2`,
		`auditproxy_events_dropped_total 0`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	get(t, admin.URL+"/healthz", 200)
	get(t, admin.URL+"/readyz", 200)
	e.fake.Close()
	// /readyz caches its probe for a second; a fresh handler probes now.
	admin2 := httptest.NewServer(e.proxy.AdminHandler(reg))
	defer admin2.Close()
	if b := get(t, admin2.URL+"/readyz", 503); !strings.Contains(b, "upstream") {
		t.Errorf("/readyz with the upstream down: %q", b)
	}
}

func TestModelLabelCardinalityIsBounded(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := proxy.NewMetrics()
	m.Register(reg)
	e := newTestEnv(t, fakevllm.Config{}, func(c *proxy.Config) { c.Metrics = m })
	for i := range 80 {
		rawRequest(t, "POST", e.proxyURL+"/v1/completions", nil, `{"model":"junk-`+strings.Repeat("x", i)+`","prompt":"a"}`)
		e.events.next(t)
	}
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, f := range families {
		if f.GetName() == "auditproxy_requests_total" {
			n = len(f.GetMetric())
		}
	}
	if n < 64 || n > 65 {
		t.Errorf("%d request series for 80 model names; want at most 64 names plus \"other\"", n)
	}
}

func get(t *testing.T, url string, wantCode int) string {
	t.Helper()
	r, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Body.Close()
	b, _ := io.ReadAll(r.Body)
	if r.StatusCode != wantCode {
		t.Fatalf("GET %s: %d %s, want %d", url, r.StatusCode, b, wantCode)
	}
	return string(b)
}
