package proxy_test

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/auditproxy/auditproxy/internal/fakevllm"
	"github.com/auditproxy/auditproxy/proxy"
)

// The secrets the fuzzed requests carry. '#' cannot be in a request id, the
// one request-chosen string that log lines carry on purpose.
const (
	fuzzKey    = "sk-fuzz#SECRET"
	fuzzPrompt = "PROMPT#fuzz"
)

// idRecorder is an upstream in front of the fake vLLM that keeps the
// X-Request-Id of every request that reaches it.
type idRecorder struct {
	mu  sync.Mutex
	ids []string
}

// FuzzProxyRawRequest sends arbitrary bytes to the proxy's port, as a
// client would, and checks what must hold whatever a client sends: the proxy
// does not panic and keeps serving, no log line holds the API key or the
// prompt, and every request that reached the upstream has its own event
// (none reaches it twice).
func FuzzProxyRawRequest(f *testing.F) {
	auth := "Authorization: Bearer " + fuzzKey + "\r\n"
	body := `{"model":"` + testModel + `","prompt":"` + fuzzPrompt + `","stream":true}`
	for _, seed := range []string{
		withLength("POST /v1/completions HTTP/1.1\r\nHost: x\r\n"+auth, body),
		withLength("POST /v1/completions HTTP/1.1\r\nHost: x\r\n"+auth, strings.Replace(body, "true", "false", 1)),
		withLength("POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"+auth, `{"model":"`+testModel+`","messages":[{"role":"user","content":"`+fuzzPrompt+`"}]}`),
		"POST /v1/completions HTTP/1.1\r\nHost: x\r\n" + auth + "Content-Length: 3\r\n" + withLength("", body),
		"POST /v1/completions HTTP/1.1\r\nHost: x\r\n" + auth + "Transfer-Encoding: chunked\r\nTrailer: X-T\r\n\r\n5\r\n{\"a\":\r\n2\r\n1}\r\n0\r\nX-T: " + fuzzPrompt + "\r\n\r\n",
		"POST /v1/completions HTTP/1.1\r\nHost: x\r\n" + auth + "Transfer-Encoding: chunked\r\n\r\nzz\r\n" + fuzzPrompt + "\r\n",
		withLength("POST /v1/completions HTTP/1.0\r\n"+auth, "{\"model\":\"\xff\xfe\",\"prompt\":\""+fuzzPrompt+"\"}"),
		withLength("GET /v1/models HTTP/1.1\r\nHost: x\r\n"+auth+"X-Bad: \x01\r\n", ""),
		"POST /v1/completions HTTP/1.1\r\nHost: x\r\n" + auth + "Content-Length: 99999999999\r\n\r\n" + body,
		withLength("POST /v1/completions HTTP/1.1\r\nHost: x\r\n"+auth, body) + withLength("POST /v1/completions HTTP/1.1\r\nHost: x\r\n"+auth, body),
		auth,
	} {
		f.Add([]byte(seed))
	}

	fake := fakevllm.New(fakevllm.Config{})
	fakeURL, err := fake.Start("127.0.0.1:0")
	if err != nil {
		f.Fatal(err)
	}
	defer fake.Close()
	rec := &idRecorder{}
	front := &http.Server{Handler: recordingProxy(fakeURL, rec)}
	fln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		f.Fatal(err)
	}
	go front.Serve(fln)
	defer front.Close()
	e := newTestEnv(f, fakevllm.Config{}, func(c *proxy.Config) {
		c.Upstream = "http://" + fln.Addr().String()
		c.MaxRequestBodySize = 1 << 20
		c.ClientIdleTimeout = 2 * time.Second
	})
	addr := strings.TrimPrefix(e.proxyURL, "http://")
	// The checks read the sink's list; its channel, which tests wait on,
	// must not fill up and block the recorder.
	go func() {
		for range e.events.ch {
		}
	}()

	f.Fuzz(func(t *testing.T, raw []byte) {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatalf("the proxy no longer accepts connections: %v", err)
		}
		c.SetDeadline(time.Now().Add(5 * time.Second))
		c.Write(raw)
		c.(*net.TCPConn).CloseWrite()
		io.Copy(io.Discard, bufio.NewReader(c))
		c.Close()

		// Every request the upstream got must have its event.
		deadline := time.Now().Add(5 * time.Second)
		for {
			missing := rec.missing(e.events)
			if missing == "" {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("the upstream got request %q more often than it has events (input %q)", missing, raw)
			}
			time.Sleep(5 * time.Millisecond)
		}
		logs := e.logs.String()
		for _, secret := range []string{fuzzKey, "#SECRET", fuzzPrompt} {
			if strings.Contains(logs, secret) {
				t.Fatalf("a log line holds %q (input %q):\n%s", secret, raw, logs)
			}
		}
		// Still serving.
		code, _ := rawExchange(t, addr, withLength("POST /v1/completions HTTP/1.1\r\nHost: x\r\n", `{"model":"`+testModel+`","prompt":"a"}`))
		if code != 200 {
			t.Fatalf("after input %q the proxy answers %d", raw, code)
		}
	})
}

// recordingProxy forwards to upstream, noting each request's X-Request-Id.
func recordingProxy(upstream string, rec *idRecorder) http.Handler {
	client := &http.Client{}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rec.mu.Lock()
		rec.ids = append(rec.ids, r.Header.Get("X-Request-Id"))
		rec.mu.Unlock()
		req, _ := http.NewRequest(r.Method, upstream+r.URL.RequestURI(), r.Body)
		req.Header = r.Header.Clone()
		resp, err := client.Do(req)
		if err != nil {
			w.WriteHeader(502)
			return
		}
		defer resp.Body.Close()
		for k, v := range resp.Header {
			w.Header()[k] = v
		}
		w.WriteHeader(resp.StatusCode)
		buf := make([]byte, 4096)
		for {
			n, err := resp.Body.Read(buf)
			w.Write(buf[:n])
			if fl, ok := w.(http.Flusher); ok {
				fl.Flush()
			}
			if err != nil {
				return
			}
		}
	})
}

// missing returns a request id the upstream got more often than events
// carry it: a request that reached the upstream without its own event, or
// one sent twice.
func (r *idRecorder) missing(events *eventSink) string {
	events.mu.Lock()
	seen := make(map[string]int, len(events.events))
	for _, ev := range events.events {
		seen[ev.RequestID]++
	}
	events.mu.Unlock()
	r.mu.Lock()
	defer r.mu.Unlock()
	got := make(map[string]int, len(r.ids))
	for _, id := range r.ids {
		if got[id]++; got[id] > seen[id] {
			return id
		}
	}
	return ""
}
