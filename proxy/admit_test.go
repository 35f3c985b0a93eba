package proxy_test

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/auditproxy/auditproxy/audit"
	"github.com/auditproxy/auditproxy/internal/fakevllm"
	"github.com/auditproxy/auditproxy/proxy"
)

// refusingRecorder refuses admission while full is set, and fails Record
// while failing is set.
type refusingRecorder struct {
	next          audit.Recorder
	full, failing atomic.Bool
	retry         time.Duration // the refusal's RetryAfter, when set
}

type refusal struct{ retry time.Duration }

func (r refusal) Error() string             { return "audit spool is full: test" }
func (r refusal) RetryAfter() time.Duration { return r.retry }

func (r *refusingRecorder) Admit() error {
	if r.full.Load() {
		if r.retry > 0 {
			return refusal{r.retry}
		}
		return errors.New("audit spool is full: test")
	}
	return nil
}

func (r *refusingRecorder) Record(ev *audit.Event) error {
	if r.failing.Load() {
		return errors.New("disk on fire")
	}
	return r.next.Record(ev)
}

// TestFullAuditLogRefusesWithoutCallingUpstream: while the Recorder cannot
// admit, requests get 503 with an OpenAI error and never reach vLLM.
func TestFullAuditLogRefusesWithoutCallingUpstream(t *testing.T) {
	rec := &refusingRecorder{}
	var metrics *proxy.Metrics
	e := newTestEnv(t, fakevllm.Config{}, func(c *proxy.Config) {
		rec.next = c.Recorder
		c.Recorder = rec
		metrics = proxy.NewMetrics()
		c.Metrics = metrics
	})
	rec.full.Store(true)
	body := strings.Replace(chatBody, `"stream":true`, `"stream":false`, 1)
	resp, err := http.Post(e.proxyURL+"/v1/chat/completions", "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	var oe struct {
		Error struct{ Message, Type, Code string }
	}
	if resp.StatusCode != 503 || json.Unmarshal(b, &oe) != nil || oe.Error.Code != "audit_log_unavailable" ||
		!strings.Contains(oe.Error.Message, "audit log unavailable") || resp.Header.Get("Retry-After") != "5" {
		t.Errorf("refused request: %d %s %v", resp.StatusCode, b, resp.Header)
	}
	if n := e.fake.Stats().Requests; n != 0 {
		t.Errorf("the upstream saw %d requests while the audit log was full", n)
	}
	// Once there is room again, requests pass.
	rec.full.Store(false)
	resp, err = http.Post(e.proxyURL+"/v1/chat/completions", "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || e.fake.Stats().Requests != 1 {
		t.Errorf("after room was made: %d, upstream saw %d", resp.StatusCode, e.fake.Stats().Requests)
	}
	if ev := e.events.next(t); ev.Status.Code != 200 {
		t.Errorf("event %+v", ev.Status)
	}
	reg := prometheus.NewRegistry()
	if err := metrics.Register(reg); err != nil {
		t.Fatal(err)
	}
	want := `
# HELP auditproxy_requests_total Proxied requests by model, HTTP status code sent to the client, and outcome.
# TYPE auditproxy_requests_total counter
auditproxy_requests_total{code="200",model="` + testModel + `",outcome="ok"} 1
auditproxy_requests_total{code="503",model="none",outcome="rejected"} 1
`
	// The refused request's body was not read: no model is known.
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "auditproxy_requests_total"); err != nil {
		t.Error(err)
	}
}

// TestAnswerWithoutRecordIsCut: when the Recorder fails, the client does not
// get the end of the answer ([DONE], or the last bytes of a body), so no
// client holds a complete answer that has no record.
func TestAnswerWithoutRecordIsCut(t *testing.T) {
	for _, tc := range []struct{ name, body, end string }{
		{"stream", chatBody, "data: [DONE]"},
		{"non-streamed", strings.Replace(chatBody, `"stream":true`, `"stream":false`, 1), "}"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rec := &refusingRecorder{}
			e := newTestEnv(t, fakevllm.Config{}, func(c *proxy.Config) {
				rec.next = c.Recorder
				c.Recorder = rec
			})
			rec.failing.Store(true)
			resp, err := http.Post(e.proxyURL+"/v1/chat/completions", "application/json", strings.NewReader(tc.body))
			var b []byte
			readErr := err // a small body is held whole, headers included: the client gets nothing
			if err == nil {
				b, readErr = io.ReadAll(resp.Body)
				resp.Body.Close()
			}
			if readErr == nil {
				t.Errorf("the client read the whole answer (%d bytes, ends %q) although its event was not recorded",
					len(b), b[max(len(b)-20, 0):])
			}
			if strings.Contains(string(b), tc.end) && tc.name == "stream" {
				t.Errorf("the client got %q", tc.end)
			}
			if !strings.Contains(e.logs.String(), "audit event not recorded") {
				t.Errorf("no log line for the lost event")
			}
		})
	}
	t.Run("no body", func(t *testing.T) {
		rec := &refusingRecorder{}
		e := newTestEnv(t, fakevllm.Config{}, func(c *proxy.Config) {
			rec.next = c.Recorder
			c.Recorder = rec
		})
		rec.failing.Store(true)
		// The answer to a HEAD is its header: that is what is withheld.
		if resp, err := http.Head(e.proxyURL + "/v1/models"); err == nil {
			resp.Body.Close()
			t.Errorf("the client got %d to a HEAD whose event was not recorded", resp.StatusCode)
		}
	})
}

// TestRetryAfterIsTheRecordersOwn: a refusal that knows when the Recorder
// looks again (a spool re-checks its disk every second) sets Retry-After.
func TestRetryAfterIsTheRecordersOwn(t *testing.T) {
	rec := &refusingRecorder{retry: 1500 * time.Millisecond}
	e := newTestEnv(t, fakevllm.Config{}, func(c *proxy.Config) {
		rec.next = c.Recorder
		c.Recorder = rec
	})
	rec.full.Store(true)
	resp, _ := rawRequest(t, "POST", e.proxyURL+"/v1/completions", nil, `{"model":"m","prompt":"hi"}`)
	if resp.StatusCode != 503 || resp.Header.Get("Retry-After") != "2" {
		t.Errorf("%d, Retry-After %q; want 503 and 2 (1.5 s rounded up)", resp.StatusCode, resp.Header.Get("Retry-After"))
	}
}
