package proxy_test

import (
	"bufio"
	"bytes"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/auditproxy/auditproxy/audit"
	"github.com/auditproxy/auditproxy/bench/fakevllm"
	"github.com/auditproxy/auditproxy/proxy"
)

// rawUpstream is an upstream that keeps the exact bytes of every request it
// receives and answers each with a small JSON body.
type rawUpstream struct {
	ln   net.Listener
	mu   sync.Mutex
	reqs [][]byte
}

func startRawUpstream(t *testing.T) *rawUpstream {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	u := &rawUpstream{ln: ln}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go u.serve(c)
		}
	}()
	t.Cleanup(func() { ln.Close() })
	return u
}

func (u *rawUpstream) serve(c net.Conn) {
	defer c.Close()
	var raw bytes.Buffer
	br := bufio.NewReader(io.TeeReader(c, &raw))
	for {
		req, err := http.ReadRequest(br)
		if err != nil {
			return
		}
		io.Copy(io.Discard, req.Body)
		req.Body.Close()
		// What the request took is what was read, less what is buffered
		// for the next one.
		n := raw.Len() - br.Buffered()
		u.mu.Lock()
		u.reqs = append(u.reqs, bytes.Clone(raw.Bytes()[:n]))
		u.mu.Unlock()
		raw.Next(n)
		io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}")
	}
}

func (u *rawUpstream) last(t *testing.T) string {
	t.Helper()
	u.mu.Lock()
	defer u.mu.Unlock()
	if len(u.reqs) == 0 {
		t.Fatal("the upstream received no request")
	}
	return string(u.reqs[len(u.reqs)-1])
}

// TestUpstreamGetsWhatTheClientSent: the upstream receives the client's
// request line and headers as sent, less hop-by-hop headers and plus
// X-Request-Id, and the event records the path the upstream received.
func TestUpstreamGetsWhatTheClientSent(t *testing.T) {
	up := startRawUpstream(t)
	e := newTestEnv(t, fakevllm.Config{}, func(c *proxy.Config) { c.Upstream = "http://" + up.ln.Addr().String() })
	addr := strings.TrimPrefix(e.proxyURL, "http://")
	for _, tc := range []struct {
		name       string
		raw        string
		wantLine   string   // the request line the upstream gets
		wantPath   string   // the event's path
		wantHeader []string // lines the upstream gets
		notHeader  []string // header names the upstream must not get
	}{
		{name: "dot segments are not resolved",
			raw:      withLength("POST /v1/../../etc/passwd HTTP/1.1\r\nHost: x\r\n", `{}`),
			wantLine: "POST /v1/../../etc/passwd HTTP/1.1", wantPath: "/v1/../../etc/passwd"},
		{name: "percent-encoding and double slashes stay",
			raw:      withLength("POST //v1/chat%2Fcompletions?x=%2F HTTP/1.1\r\nHost: x\r\n", `{}`),
			wantLine: "POST //v1/chat%2Fcompletions?x=%2F HTTP/1.1", wantPath: "//v1/chat%2Fcompletions"},
		{name: "no Content-Type is added",
			raw:      withLength("POST /v1/completions HTTP/1.1\r\nHost: x\r\n", `{"model":"m"}`),
			wantLine: "POST /v1/completions HTTP/1.1", wantPath: "/v1/completions", notHeader: []string{"Content-Type"}},
		{name: "chunked trailers are not made headers",
			raw: "POST /v1/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTrailer: X-Checksum\r\n\r\n" +
				"d\r\n{\"model\":\"m\"}\r\n0\r\nX-Checksum: abc\r\n\r\n",
			wantLine: "POST /v1/completions HTTP/1.1", wantPath: "/v1/completions", notHeader: []string{"X-Checksum", "Trailer"}},
		{name: "HTTP/1.0 without Host",
			raw:      withLength("POST /v1/completions HTTP/1.0\r\n", `{}`),
			wantLine: "POST /v1/completions HTTP/1.0", wantPath: "/v1/completions",
			wantHeader: []string{"Host: " + up.ln.Addr().String()}},
		{name: "absolute-form target",
			raw:      withLength("POST http://api.example.com/v1/completions?a=1 HTTP/1.1\r\nHost: other\r\n", `{}`),
			wantLine: "POST /v1/completions?a=1 HTTP/1.1", wantPath: "/v1/completions", wantHeader: []string{"Host: api.example.com"}},
		{name: "Host is the client's",
			raw:      withLength("POST /v1/completions HTTP/1.1\r\nHost: api.example.com\r\n", `{}`),
			wantLine: "POST /v1/completions HTTP/1.1", wantPath: "/v1/completions", wantHeader: []string{"Host: api.example.com"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, body := rawExchange(t, addr, tc.raw)
			ev := e.events.next(t)
			if code != 200 {
				t.Fatalf("status %d %s (event %+v)", code, body, ev.Status)
			}
			got := up.last(t)
			head, _, _ := strings.Cut(got, "\r\n\r\n")
			lines := strings.Split(head, "\r\n")
			if lines[0] != tc.wantLine {
				t.Errorf("upstream request line %q, want %q", lines[0], tc.wantLine)
			}
			if ev.Path != tc.wantPath {
				t.Errorf("event path %q, want %q", ev.Path, tc.wantPath)
			}
			for _, w := range tc.wantHeader {
				if !strings.Contains(head+"\r\n", "\r\n"+w+"\r\n") {
					t.Errorf("the upstream did not get %q:\n%s", w, head)
				}
			}
			for _, n := range tc.notHeader {
				if strings.Contains(strings.ToLower(head), "\r\n"+strings.ToLower(n)+":") {
					t.Errorf("the upstream got a %s header the client did not send:\n%s", n, head)
				}
			}
		})
	}
}

// holdingUpstream reads one request per connection, optionally sends a
// response head, then holds the connection without answering further, and
// reports when the proxy closes it.
type holdingUpstream struct {
	ln     net.Listener
	head   string
	closed chan time.Time
}

func startHoldingUpstream(t *testing.T, head string) *holdingUpstream {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	u := &holdingUpstream{ln: ln, head: head, closed: make(chan time.Time, 16)}
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
				io.WriteString(c, u.head)
				// Hold: the next read returns when the proxy closes.
				c.SetReadDeadline(time.Now().Add(20 * time.Second))
				if _, err := br.ReadByte(); err == io.EOF {
					u.closed <- time.Now()
				}
			}()
		}
	}()
	t.Cleanup(func() { ln.Close() })
	return u
}

// TestClientLeavingBeforeTheAnswerCancelsTheUpstream: a client that closes
// its connection while vLLM generates a non-streamed answer, or while a
// stream is still in prefill, makes the proxy close the upstream connection
// (vLLM then aborts the generation) and record client_cancelled.
func TestClientLeavingBeforeTheAnswerCancelsTheUpstream(t *testing.T) {
	for _, tc := range []struct{ name, head, body string }{
		{"non-streamed", "", `{"model":"m","prompt":"hi"}`},
		{"stream in prefill", "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n",
			`{"model":"m","prompt":"hi","stream":true}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			up := startHoldingUpstream(t, tc.head)
			e := newTestEnv(t, fakevllm.Config{}, func(c *proxy.Config) { c.Upstream = "http://" + up.ln.Addr().String() })
			conn, err := net.Dial("tcp", strings.TrimPrefix(e.proxyURL, "http://"))
			if err != nil {
				t.Fatal(err)
			}
			io.WriteString(conn, withLength("POST /v1/completions HTTP/1.1\r\nHost: x\r\n", tc.body))
			time.Sleep(300 * time.Millisecond)
			left := time.Now()
			conn.Close()
			select {
			case at := <-up.closed:
				t.Logf("upstream connection closed %v after the client left", at.Sub(left))
			case <-time.After(5 * time.Second):
				t.Fatal("the upstream connection was still open 5s after the client left")
			}
			ev := e.events.next(t)
			if ev.Status.Outcome != audit.OutcomeClientCancelled || ev.Status.Error != "client_disconnected_before_answer" {
				t.Errorf("status %+v, want client_cancelled / client_disconnected_before_answer", ev.Status)
			}
			if tc.head == "" && ev.Status.Code != 499 {
				t.Errorf("status code %d, want 499 (no status reached the client)", ev.Status.Code)
			}
		})
	}
}

// TestClientThatWaitsIsNotCancelled: a client that waits longer than the
// watch's delay for a slow answer gets it.
func TestClientThatWaitsIsNotCancelled(t *testing.T) {
	e := newTestEnv(t, fakevllm.Config{TTFT: 300 * time.Millisecond}, nil)
	for _, body := range []string{`{"model":"` + testModel + `","prompt":"hi"}`, `{"model":"` + testModel + `","prompt":"hi","stream":true}`} {
		resp, b := rawRequest(t, "POST", e.proxyURL+"/v1/completions", nil, body)
		ev := e.events.next(t)
		if resp.StatusCode != 200 || ev.Status.Outcome != audit.OutcomeOK {
			t.Errorf("%s: %d %s, event %+v", body, resp.StatusCode, b, ev.Status)
		}
	}
}
