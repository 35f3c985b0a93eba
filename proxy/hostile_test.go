package proxy_test

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/auditproxy/auditproxy/audit"
	"github.com/auditproxy/auditproxy/internal/fakevllm"
	"github.com/auditproxy/auditproxy/proxy"
)

// The secrets the hostile requests carry: none may appear in a log line.
const (
	hostileKey    = "sk-hostile-SECRETKEY-9d41"
	hostilePrompt = "PROMPT-SECRET-emu-kiwi-walrus"
)

func init() {
	noteSecret(hostileKey)
	noteSecret(hostilePrompt)
}

// rawExchange writes raw to a new connection to addr and reads one HTTP
// response. A connection the proxy closes without answering is status 0.
func rawExchange(t *testing.T, addr, raw string) (int, string) {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := conn.Write([]byte(raw)); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		return 0, ""
	}
	defer resp.Body.Close()
	var b strings.Builder
	_, _ = bufio.NewReader(resp.Body).WriteTo(&b)
	return resp.StatusCode, b.String()
}

func withLength(head, body string) string {
	return head + "Content-Length: " + strconv.Itoa(len(body)) + "\r\n\r\n" + body
}

// TestHostileRequests sends requests built to break the proxy or make it
// print what they carry. Each must get an answer (proxied, or an OpenAI
// error from the proxy), leave the proxy serving, keep /metrics small and
// valid, and put neither the API key nor the prompt in any log line.
func TestHostileRequests(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := proxy.NewMetrics()
	if err := m.Register(reg); err != nil {
		t.Fatal(err)
	}
	e := newTestEnv(t, fakevllm.Config{}, func(c *proxy.Config) { c.Metrics = m })
	admin := httptest.NewServer(e.proxy.AdminHandler(reg, proxy.AdminOptions{}))
	defer admin.Close()
	addr := strings.TrimPrefix(e.proxyURL, "http://")
	auth := "Authorization: Bearer " + hostileKey + "\r\n"
	served := `"model":"` + testModel + `",`
	prompt := `"prompt":"` + hostilePrompt + `"`
	bigName := strings.Repeat("m", 1<<20)

	for _, tc := range []struct {
		name       string
		raw        string
		wantStatus int
		wantModel  string // the event's model name, for proxied requests
		rejected   bool   // answered by the proxy, not proxied
	}{
		{"model not UTF-8, streamed", withLength("POST /v1/completions HTTP/1.1\r\nHost: x\r\n"+auth,
			"{\"model\":\"\xff\xfe\xc0\xaf\","+prompt+`,"stream":true}`), 404, "\ufffd\ufffd\ufffd\ufffd", false},
		{"model not UTF-8, escaped surrogate", withLength("POST /v1/completions HTTP/1.1\r\nHost: x\r\n"+auth,
			`{"model":"\ud800x",`+prompt+`}`), 404, "\ufffdx", false},
		{"model of 1 MiB", withLength("POST /v1/completions HTTP/1.1\r\nHost: x\r\n"+auth,
			`{"model":"`+bigName+`",`+prompt+`,"stream":true}`), 404, bigName[:1024], false},
		{"model with a newline and quotes", withLength("POST /v1/completions HTTP/1.1\r\nHost: x\r\n"+auth,
			`{"model":"a\n} 1\n# \"b",`+prompt+`}`), 404, "a\n} 1\n# \"b", false},
		{"two Content-Length headers", "POST /v1/completions HTTP/1.1\r\nHost: x\r\n" + auth +
			"Content-Length: 40\r\n" + withLength("", `{`+served+prompt+`}`), 400, "", true},
		{"control character in a header", withLength("POST /v1/completions HTTP/1.1\r\nHost: x\r\n"+auth+"X-Bad: a\x01b\r\n",
			`{`+served+prompt+`}`), 400, "", true},
		{"forbidden trailer", "POST /v1/completions HTTP/1.1\r\nHost: x\r\n" + auth + "Transfer-Encoding: chunked\r\nTrailer: Authorization\r\n\r\n" +
			strconv.FormatInt(int64(len(`{`+served+prompt+`}`)), 16) + "\r\n" + `{"model":"m",` + prompt + "}\r\n0\r\n" + auth + "\r\n", 400, "", true},
		{"header without a colon", withLength("POST /v1/completions HTTP/1.1\r\nHost: x\r\n"+auth+"Bearer-"+hostileKey+"\r\n",
			`{`+served+prompt+`}`), 400, "", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, body := rawExchange(t, addr, tc.raw)
			if code != tc.wantStatus {
				t.Fatalf("status %d (body %.200q), want %d", code, body, tc.wantStatus)
			}
			ev := e.events.next(t)
			if tc.rejected {
				openAIError(t, []byte(body))
				if ev.Status.Outcome != audit.OutcomeRejected || ev.Status.Code != code {
					t.Errorf("event status %+v, want rejected with %d", ev.Status, code)
				}
			} else if ev.Model.Name != tc.wantModel {
				t.Errorf("event model %.80q, want %.80q", ev.Model.Name, tc.wantModel)
			}
			if len(ev.Model.Name) == 1024 && ev.Model.NameBytes != 1<<20 {
				t.Errorf("a 1 MiB model name cut to 1 KiB says it was %d bytes", ev.Model.NameBytes)
			}
		})
	}

	// Still serving.
	if code, _ := rawExchange(t, addr, withLength("POST /v1/completions HTTP/1.1\r\nHost: x\r\n", `{"model":"`+testModel+`","prompt":"a"}`)); code != 200 {
		t.Fatalf("after the hostile requests the proxy answers %d", code)
	}
	e.events.next(t)

	metrics := get(t, admin.URL+"/metrics", 200)
	if len(metrics) > 64<<10 {
		t.Errorf("/metrics is %d bytes after a 1 MiB model name", len(metrics))
	}
	textParser := expfmt.NewTextParser(model.LegacyValidation)
	if _, err := textParser.TextToMetricFamilies(strings.NewReader(metrics)); err != nil {
		t.Errorf("/metrics does not parse: %v", err)
	}
	for _, want := range []string{
		`auditproxy_model_label_folded_total{reason="invalid"} 4`,
		`auditproxy_requests_total{code="404",model="other",outcome="upstream_error"} 4`,
	} {
		if !strings.Contains(metrics, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	logs := e.logs.String()
	for _, secret := range []string{hostileKey, "SECRETKEY", hostilePrompt, "emu-kiwi"} {
		if strings.Contains(logs, secret) {
			t.Errorf("%q appears in the log:\n%s", secret, logs)
		}
	}
}

// TestClientConnectionCap: past MaxClientConns open connections, a new one
// is answered 503 too_many_connections at once; once one closes, new ones
// are served again.
func TestClientConnectionCap(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := proxy.NewMetrics()
	if err := m.Register(reg); err != nil {
		t.Fatal(err)
	}
	e := newTestEnv(t, fakevllm.Config{}, func(c *proxy.Config) { c.Metrics = m; c.MaxClientConns = 3 })
	addr := strings.TrimPrefix(e.proxyURL, "http://")
	req := withLength("POST /v1/completions HTTP/1.1\r\nHost: x\r\n", `{"model":"`+testModel+`","prompt":"a"}`)
	var held []net.Conn
	for range 3 {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		c.Write([]byte(req))
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("connection %d: %v %v", len(held), resp, err)
		}
		e.events.next(t)
		held = append(held, c)
	}
	code, body := rawExchange(t, addr, req)
	if code != 503 {
		t.Fatalf("a fourth connection got %d, want 503", code)
	}
	if _, errCode := openAIError(t, []byte(body)); errCode != "too_many_connections" {
		t.Errorf("code %q", errCode)
	}
	held[0].Close()
	deadline := time.Now().Add(5 * time.Second)
	for {
		code, _ := rawExchange(t, addr, req)
		if code == 200 {
			e.events.next(t)
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after a connection closed, new ones still get %d", code)
		}
		time.Sleep(10 * time.Millisecond)
	}
	admin := httptest.NewServer(e.proxy.AdminHandler(reg, proxy.AdminOptions{}))
	defer admin.Close()
	metrics := get(t, admin.URL+"/metrics", 200)
	for _, want := range []string{"auditproxy_client_connections_max 3", "auditproxy_client_connections_rejected_total "} {
		if !strings.Contains(metrics, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
}

// TestRecordsWhatVLLMActsOn sends bodies that a naive reader misreads
// (duplicate keys, escaped keys, pydantic's lax bools, Python's number
// literals, other encodings) through the proxy and directly to the fake
// vLLM, which reads them as vLLM does. The client must get what it would get
// directly, and the event must name the model that answered and the stream
// mode it used, with vLLM's token counts.
func TestRecordsWhatVLLMActsOn(t *testing.T) {
	e := newTestEnv(t, fakevllm.Config{}, nil)
	m := testModel
	utf16le := func(s string) string {
		b := []byte{0xff, 0xfe}
		for _, r := range s {
			b = append(b, byte(r), byte(r>>8))
		}
		return string(b)
	}
	for _, tc := range []struct {
		name, body string
		stream     bool
	}{
		{"duplicate model and stream", `{"model":"other-model","model":"` + m + `","stream":true,"stream":false,"prompt":"hi"}`, false},
		{"duplicate stream, streamed last", `{"model":"` + m + `","stream":false,"prompt":"hi","stream":true}`, true},
		{"escaped key", `{"model":"other-model","mod\u0065l":"` + m + `","prompt":"hi","stream":true}`, true},
		{"stream \"yes\"", `{"model":"` + m + `","prompt":"hi","stream":"yes"}`, true},
		{"stream 1", `{"model":"` + m + `","prompt":"hi","stream":1}`, true},
		{"stream_options {} asks for usage", `{"model":"` + m + `","prompt":"hi","stream":true,"stream_options":{}}`, true},
		{"include_usage null does not", `{"model":"` + m + `","prompt":"hi","stream":true,"stream_options":{"include_usage":null}}`, true},
		{"include_usage twice", `{"model":"` + m + `","prompt":"hi","stream":true,"stream_options":{"include_usage":true,"include_usage":false}}`, true},
		{"UTF-16 body", utf16le(`{"model":"` + m + `","prompt":"hi","stream":false}`), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			noteSecret(tc.body)
			direct, directBody := rawRequest(t, "POST", e.upstream+"/v1/completions", map[string]string{"Content-Type": "application/json"}, tc.body)
			proxied, proxiedBody := rawRequest(t, "POST", e.proxyURL+"/v1/completions", map[string]string{"Content-Type": "application/json"}, tc.body)
			ev := e.events.next(t)
			if direct.StatusCode != 200 && tc.name != "UTF-16 body" {
				t.Fatalf("the fake answered %d: %s", direct.StatusCode, directBody)
			}
			if proxied.StatusCode != direct.StatusCode || normalize(proxiedBody) != normalize(directBody) {
				t.Errorf("through the proxy: %d\n%s\ndirect: %d\n%s", proxied.StatusCode, proxiedBody, direct.StatusCode, directBody)
			}
			if direct.StatusCode != 200 {
				return // the fake reads UTF-8 only; vLLM reads UTF-16 (json.detect_encoding)
			}
			if ev.Model.Name != m || ev.Stream != tc.stream || ev.Status.Outcome != audit.OutcomeOK {
				t.Errorf("event model %q stream %v outcome %s; vLLM served %q, stream %v", ev.Model.Name, ev.Stream, ev.Status.Outcome, m, tc.stream)
			}
			if ev.Input.Tokens == nil || ev.Output.Tokens == nil || *ev.Output.Tokens == 0 {
				t.Errorf("tokens %v %v: vLLM's usage was not recorded", ev.Input.Tokens, ev.Output.Tokens)
			}
		})
	}
}

// TestRequestBodyBudget: bodies held at once are bounded by the budget,
// counted as they arrive. Two slow uploads that take most of it make a
// third request 503
// request_bodies_over_budget, without reaching the upstream; once they are
// sent, requests pass again. Chunked bodies count as they arrive and are
// held to the body size limit.
func TestRequestBodyBudget(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := proxy.NewMetrics()
	if err := m.Register(reg); err != nil {
		t.Fatal(err)
	}
	e := newTestEnv(t, fakevllm.Config{}, func(c *proxy.Config) {
		c.Metrics = m
		c.MaxRequestBodySize = 256 << 10
		c.RequestBodyBudget = 512 << 10
	})
	admin := httptest.NewServer(e.proxy.AdminHandler(reg, proxy.AdminOptions{}))
	defer admin.Close()
	addr := strings.TrimPrefix(e.proxyURL, "http://")
	body := `{"model":"` + testModel + `","prompt":"hi","pad":"` + strings.Repeat("w ", 100<<10) + `"}` // ~200 KiB
	head := "POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: " + strconv.Itoa(len(body)) + "\r\n\r\n"

	var slow []net.Conn
	for range 2 {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		io.WriteString(c, head+body[:len(body)-10])
		slow = append(slow, c)
	}
	waitFor(t, "two bodies to hold their budget", func() bool {
		return strings.Contains(get(t, admin.URL+"/metrics", 200), "auditproxy_request_body_bytes "+strconv.Itoa(2*len(body)))
	})
	before := e.fake.Stats().Requests
	code, answer := rawExchange(t, addr, head+body)
	if code != 503 {
		t.Fatalf("a third body over the budget got %d %s", code, answer)
	}
	if _, c := openAIError(t, []byte(answer)); c != "request_bodies_over_budget" {
		t.Errorf("code %q", c)
	}
	if ev := e.events.next(t); ev.Status.Outcome != audit.OutcomeRejected || ev.Status.Error != "request_bodies_over_budget" {
		t.Errorf("event %+v", ev.Status)
	}
	if n := e.fake.Stats().Requests - before; n != 0 {
		t.Errorf("the upstream got %d requests over the budget", n)
	}
	for _, c := range slow {
		io.WriteString(c, body[len(body)-10:])
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("a slow upload, once complete: %v %v", resp, err)
		}
		e.events.next(t)
	}
	if code, answer := rawExchange(t, addr, head+body); code != 200 {
		t.Fatalf("with the budget free again: %d %s", code, answer)
	}
	e.events.next(t)

	chunked := func(b string) string {
		var s strings.Builder
		s.WriteString("POST /v1/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
		for len(b) > 0 {
			n := min(len(b), 50_000)
			s.WriteString(strconv.FormatInt(int64(n), 16) + "\r\n" + b[:n] + "\r\n")
			b = b[n:]
		}
		s.WriteString("0\r\n\r\n")
		return s.String()
	}
	if code, answer := rawExchange(t, addr, chunked(body)); code != 200 {
		t.Fatalf("chunked body within the limit: %d %s", code, answer)
	}
	if ev := e.events.next(t); ev.Input.Bytes != int64(len(body)) || ev.Input.Hash != bodyDigest([]byte(body)) {
		t.Errorf("chunked body recorded as %d bytes %s", ev.Input.Bytes, ev.Input.Hash)
	}
	big := `{"model":"` + testModel + `","prompt":"hi","pad":"` + strings.Repeat("w ", 200<<10) + `"}`
	if code, _ := rawExchange(t, addr, chunked(big)); code != 413 {
		t.Fatalf("chunked body over the limit: %d, want 413", code)
	}
	if ev := e.events.next(t); ev.Status.Error != "body_too_large" {
		t.Errorf("event %+v", ev.Status)
	}
	if !strings.Contains(get(t, admin.URL+"/metrics", 200), "auditproxy_request_body_bytes 0") {
		t.Error("bodies still counted after every request ended")
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestAnnouncedLengthHoldsNoBudget: a client that announces a large body and
// sends little holds a share of what it sent, not of what it announced, so
// a few idle uploads cannot shut everyone out.
func TestAnnouncedLengthHoldsNoBudget(t *testing.T) {
	e := newTestEnv(t, fakevllm.Config{}, func(c *proxy.Config) {
		c.MaxRequestBodySize = 16 << 20
		c.RequestBodyBudget = 32 << 20
	})
	addr := strings.TrimPrefix(e.proxyURL, "http://")
	for range 4 {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		io.WriteString(c, "POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 16000000\r\n\r\n"+strings.Repeat("x", 8<<10))
	}
	time.Sleep(100 * time.Millisecond)
	if code, body := rawExchange(t, addr, withLength("POST /v1/completions HTTP/1.1\r\nHost: x\r\n", `{"model":"`+testModel+`","prompt":"hi"}`)); code != 200 {
		t.Fatalf("with four uploads that announced 16 MB each and sent 8 KiB: %d %s", code, body)
	}
	e.events.next(t)
}

// TestRefusedBodiesAreNotRepaired: a streamed request whose stream_options
// vLLM refuses goes upstream unchanged, so the client gets vLLM's 400, as it
// would directly; rewriting it to ask for usage would have made it valid.
func TestRefusedBodiesAreNotRepaired(t *testing.T) {
	e := newTestEnv(t, fakevllm.Config{}, nil)
	for _, so := range []string{`[]`, `"x"`, `5`, `{"include_usage":"maybe"}`, `{"include_usage":false,"continuous_usage_stats":[]}`} {
		body := `{"model":"` + testModel + `","prompt":"hi","stream":true,"stream_options":` + so + `}`
		direct, directBody := rawRequest(t, "POST", e.upstream+"/v1/completions", nil, body)
		proxied, proxiedBody := rawRequest(t, "POST", e.proxyURL+"/v1/completions", nil, body)
		ev := e.events.next(t)
		if direct.StatusCode != 400 || proxied.StatusCode != 400 || normalize(proxiedBody) != normalize(directBody) {
			t.Errorf("stream_options %s: direct %d %s, proxied %d %s", so, direct.StatusCode, directBody, proxied.StatusCode, proxiedBody)
		}
		if ev.Status.Code != 400 {
			t.Errorf("stream_options %s: event %+v", so, ev.Status)
		}
	}
}
