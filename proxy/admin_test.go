package proxy_test

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/auditproxy/auditproxy/internal/fakevllm"
	"github.com/auditproxy/auditproxy/proxy"
)

func TestAdminEndpointsAndMetrics(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := proxy.NewMetrics()
	if err := m.Register(reg); err != nil {
		t.Fatal(err)
	}
	e := newTestEnv(t, fakevllm.Config{}, func(c *proxy.Config) { c.Metrics = m })
	admin := httptest.NewServer(e.proxy.AdminHandler(reg, proxy.AdminOptions{}))
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
	admin2 := httptest.NewServer(e.proxy.AdminHandler(reg, proxy.AdminOptions{}))
	defer admin2.Close()
	if b := get(t, admin2.URL+"/readyz", 503); !strings.Contains(b, "upstream") {
		t.Errorf("/readyz with the upstream down: %q", b)
	}
}

// TestModelLabels: a model name gets a label of its own only once the
// upstream served it, only if it is short and plain, and only while fewer
// than 64 names have one; every other request counts under "other", with
// the reason in auditproxy_model_label_folded_total.
func TestModelLabels(t *testing.T) {
	// An upstream that serves any model name, as a vLLM with many LoRA
	// adapters would, unless the name starts with "unserved".
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		w.Header().Set("Content-Type", "application/json")
		if strings.Contains(string(b), `"unserved`) {
			w.WriteHeader(404)
		}
		io.WriteString(w, `{}`)
	}))
	defer upstream.Close()
	reg := prometheus.NewRegistry()
	m := proxy.NewMetrics()
	m.Register(reg)
	e := newTestEnv(t, fakevllm.Config{}, func(c *proxy.Config) { c.Metrics = m; c.Upstream = upstream.URL })
	send := func(model string) {
		rawRequest(t, "POST", e.proxyURL+"/v1/completions", nil, `{"model":"`+model+`","prompt":"a"}`)
		e.events.next(t)
	}
	for i := range 10 {
		send("unserved-" + strconv.Itoa(i))
	}
	send(strings.Repeat("x", 129))
	send("has space")
	for i := range 80 {
		send("adapter-" + strconv.Itoa(i))
	}
	send("adapter-3") // labelled already
	send("other")     // the fold label itself is not a model's
	// A 200 where vLLM does not look at "model" gives no slot.
	rawRequest(t, "GET", e.proxyURL+"/v1/models", nil, `{"model":"junk"}`)
	e.events.next(t)
	want := `
# HELP auditproxy_model_label_folded_total Requests counted under model="other" instead of their own model label, by reason: invalid (longer than 128 bytes or outside [A-Za-z0-9._:/@+=-]), unserved (no answer below 400 for that name yet), overflow (64 names already labelled).
# TYPE auditproxy_model_label_folded_total counter
auditproxy_model_label_folded_total{reason="invalid"} 3
auditproxy_model_label_folded_total{reason="overflow"} 16
auditproxy_model_label_folded_total{reason="unserved"} 11
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "auditproxy_model_label_folded_total"); err != nil {
		t.Error(err)
	}
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() != "auditproxy_requests_total" {
			continue
		}
		names := map[string]float64{}
		for _, s := range f.GetMetric() {
			for _, l := range s.GetLabel() {
				if l.GetName() == "model" {
					names[l.GetValue()] += s.GetCounter().GetValue()
				}
			}
		}
		if len(names) != 65 || names["other"] != 30 || names["adapter-3"] != 2 || names["adapter-63"] != 1 {
			t.Errorf("%d model labels (other: %v, adapter-3: %v); want 64 adapters and other with 30", len(names), names["other"], names["adapter-3"])
		}
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

// TestProfilerNeedsTheAdminToken: /debug/pprof is not served by default,
// and when it is, only with the admin token.
func TestProfilerNeedsTheAdminToken(t *testing.T) {
	e := newTestEnv(t, fakevllm.Config{}, nil)
	reg := prometheus.NewRegistry()
	off := httptest.NewServer(e.proxy.AdminHandler(reg, proxy.AdminOptions{}))
	defer off.Close()
	get(t, off.URL+"/debug/pprof/", 404)
	get(t, off.URL+"/debug/pprof/goroutine?debug=2", 404)
	get(t, off.URL+"/metrics", 200)

	const token = "0123456789abcdef0123456789abcdef"
	on := httptest.NewServer(e.proxy.AdminHandler(reg, proxy.AdminOptions{ProfilingToken: token}))
	defer on.Close()
	get(t, on.URL+"/debug/pprof/goroutine?debug=2", 401)
	for _, auth := range []string{"Bearer wrong", "Bearer " + token[:31], "Basic " + token, token} {
		req, _ := http.NewRequest("GET", on.URL+"/debug/pprof/goroutine?debug=2", nil)
		req.Header.Set("Authorization", auth)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 401 {
			t.Errorf("Authorization %q: %d, want 401", auth, resp.StatusCode)
		}
	}
	req, _ := http.NewRequest("GET", on.URL+"/debug/pprof/goroutine?debug=2", nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(b), "goroutine") {
		t.Errorf("with the token: %d %.100s", resp.StatusCode, b)
	}
	get(t, on.URL+"/metrics", 200) // no token needed
}
