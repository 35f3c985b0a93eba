package proxy_test

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"mime/multipart"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"filippo.io/age"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/auditproxy/auditproxy/audit"
	"github.com/auditproxy/auditproxy/internal/fakevllm"
	"github.com/auditproxy/auditproxy/internal/testutil"
	"github.com/auditproxy/auditproxy/payload"
	"github.com/auditproxy/auditproxy/proxy"
)

// bigChat is a chat request of about size bytes: a base64 image in the
// message (as a multimodal client sends it), the model named twice, first
// someone else's and last the one vLLM serves (the last duplicate wins),
// and stream_options when usage is asked for.
func bigChat(size int, stream, askUsage bool) []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, `{"model":"someone-else","stream":%v,"messages":[{"role":"user","content":[{"type":"text","text":"describe it"},{"type":"image_url","image_url":{"url":"data:image/png;base64,`, stream)
	b.Write(bytes.Repeat([]byte("iVBORw0K"), size/8))
	b.WriteString(`"}}]}]`)
	if askUsage {
		b.WriteString(`,"stream_options":{"include_usage":true}`)
	}
	b.WriteString(`,"model":"` + testModel + `"}`)
	return b.Bytes()
}

// postBody posts body to url, with its Content-Length or chunked.
func postBody(t *testing.T, url string, body []byte, chunked bool) (int, []byte) {
	t.Helper()
	var r io.Reader = bytes.NewReader(body)
	if chunked {
		r = io.MultiReader(r) // no length known: chunked
	}
	resp, err := http.Post(url, "application/json", r)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

// TestLargeBodiesStreamToVLLM: bodies longer than the proxy holds, up to
// 100 MB, reach vLLM and answer as they do directly; the event has the
// model and stream flag vLLM acted on (the last model member, read from
// the body as it passed), and the hash and length of every byte sent. A
// streamed answer whose client did not ask for usage has no token counts
// (a streamed body is not rewritten to ask for them); one that asked has.
func TestLargeBodiesStreamToVLLM(t *testing.T) {
	e := newTestEnv(t, fakevllm.Config{OutputTokens: 3, MaxRequestBodySize: 256 << 20}, nil)
	for _, tc := range []struct {
		name                      string
		size                      int
		stream, askUsage, chunked bool
		proxyOnly                 bool // too large to send twice in a unit test
	}{
		{name: "40 MB, Content-Length", size: 40 << 20},
		{name: "40 MB, chunked", size: 40 << 20, chunked: true},
		{name: "20 MB, streamed answer, usage not asked", size: 20 << 20, stream: true},
		{name: "20 MB, streamed answer, usage asked", size: 20 << 20, stream: true, askUsage: true},
		{name: "just over what is held, chunked", size: 8<<20 + 100, chunked: true},
		{name: "100 MB", size: 100 << 20, proxyOnly: true},
		{name: "100 MB, streamed answer, chunked", size: 100 << 20, stream: true, chunked: true, proxyOnly: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			body := bigChat(tc.size, tc.stream, tc.askUsage)
			var direct []byte
			if !tc.proxyOnly {
				var code int
				if code, direct = postBody(t, e.upstream+"/v1/chat/completions", body, tc.chunked); code != 200 {
					t.Fatalf("directly: %d %.300s", code, direct)
				}
			}
			code, proxied := postBody(t, e.proxyURL+"/v1/chat/completions", body, tc.chunked)
			ev := e.events.next(t)
			if code != 200 || (direct != nil && normalize(direct) != normalize(proxied)) {
				t.Fatalf("through the proxy %d:\n%.300s\ndirectly:\n%.300s", code, proxied, direct)
			}
			if want := bodyDigest(body); ev.Input.Hash != want || ev.Input.Bytes != int64(len(body)) {
				t.Errorf("input %s/%d, want %s/%d", ev.Input.Hash, ev.Input.Bytes, want, len(body))
			}
			if ev.Model.Name != testModel || ev.Model.FromAnswer || ev.Stream != tc.stream || ev.Status.Outcome != audit.OutcomeOK {
				t.Errorf("model %+v stream %v outcome %s %s", ev.Model, ev.Stream, ev.Status.Outcome, ev.Status.Error)
			}
			in, out := usageIn(t, proxied)
			switch {
			case tc.stream && !tc.askUsage:
				if ev.Input.Tokens != nil || ev.Output.Tokens != nil || in != -1 {
					t.Errorf("usage not asked for: tokens %v/%v, answer's usage %d", ev.Input.Tokens, ev.Output.Tokens, in)
				}
			case tokens(ev.Input.Tokens) != in || tokens(ev.Output.Tokens) != out || in < 0:
				t.Errorf("tokens %v/%v, vLLM's %d/%d", ev.Input.Tokens, ev.Output.Tokens, in, out)
			}
		})
	}
}

// TestStreamedFormIsRead: a transcription whose form is longer than the
// proxy holds (a long WAV; vLLM takes 25 MB) streams, and its model,
// stream and stream_include_usage fields are read on the way: the last
// model field, and vLLM's usage for the stream that asked for it.
func TestStreamedFormIsRead(t *testing.T) {
	e := newTestEnv(t, fakevllm.Config{OutputTokens: 4, MaxRequestBodySize: 64 << 20}, nil)
	var b bytes.Buffer
	w := multipart.NewWriter(&b)
	w.WriteField("model", "someone-else")
	fw, _ := w.CreateFormFile("file", "a.wav")
	fw.Write(wav(300)) // 9.6 MB
	w.WriteField("model", testModel)
	w.WriteField("stream", "true")
	w.WriteField("stream_include_usage", "true")
	w.Close()
	hdr := map[string]string{"Content-Type": w.FormDataContentType()}
	_, direct := rawRequest(t, "POST", e.upstream+"/v1/audio/transcriptions", hdr, b.String())
	resp, proxied := rawRequest(t, "POST", e.proxyURL+"/v1/audio/transcriptions", hdr, b.String())
	ev := e.events.next(t)
	if resp.StatusCode != 200 || normalize(direct) != normalize(proxied) {
		t.Fatalf("%d through the proxy:\n%.300s\ndirectly:\n%.300s", resp.StatusCode, proxied, direct)
	}
	in, out := usageIn(t, direct)
	if ev.Model.Name != testModel || !ev.Stream || tokens(ev.Input.Tokens) != in || tokens(ev.Output.Tokens) != out || in < 0 {
		t.Errorf("model %q stream %v tokens %v/%v (vLLM %d/%d)", ev.Model.Name, ev.Stream, ev.Input.Tokens, ev.Output.Tokens, in, out)
	}
	if ev.Input.Bytes != int64(b.Len()) || ev.Input.Hash != bodyDigest(b.Bytes()) {
		t.Errorf("input %s/%d", ev.Input.Hash, ev.Input.Bytes)
	}
}

// bodyBytesHeld reads auditproxy_request_body_bytes.
func bodyBytesHeld(t *testing.T, admin string) string {
	for _, line := range strings.Split(get(t, admin+"/metrics", 200), "\n") {
		if v, ok := strings.CutPrefix(line, "auditproxy_request_body_bytes "); ok {
			return v
		}
	}
	t.Fatal("no auditproxy_request_body_bytes")
	return ""
}

// TestStreamedBodyHoldsOnlyItsPiece: with a budget that fits one held body
// and nothing more, a chunked body that grew past what is held gives back
// the share of its first 8 MiB once they are sent, and keeps only its 64
// KiB piece; streamed uploads in flight together hold a piece each, and a
// small request still passes beside them. Each upload, once complete, is
// answered and recorded with the hash of its bytes.
func TestStreamedBodyHoldsOnlyItsPiece(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := proxy.NewMetrics()
	if err := m.Register(reg); err != nil {
		t.Fatal(err)
	}
	e := newTestEnv(t, fakevllm.Config{OutputTokens: 2, MaxRequestBodySize: 64 << 20}, func(c *proxy.Config) {
		c.Metrics = m
		c.RequestBodyBudget = proxy.MinRequestBodyBudget(0, 0)
	})
	admin := httptest.NewServer(e.proxy.AdminHandler(reg, proxy.AdminOptions{}))
	defer admin.Close()
	addr := strings.TrimPrefix(e.proxyURL, "http://")
	const piece = 64 << 10

	type upload struct {
		conn net.Conn
		body []byte
		rest func()
	}
	start := func(chunked bool, sendFirst int) upload {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		body := bigChat(12<<20, false, false)
		u := upload{conn: c, body: body}
		if chunked {
			io.WriteString(c, "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
			fmt.Fprintf(c, "%x\r\n%s\r\n", sendFirst, body[:sendFirst])
			u.rest = func() { fmt.Fprintf(c, "%x\r\n%s\r\n0\r\n\r\n", len(body)-sendFirst, body[sendFirst:]) }
		} else {
			fmt.Fprintf(c, "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n", len(body))
			c.Write(body[:sendFirst])
			u.rest = func() { c.Write(body[sendFirst:]) }
		}
		return u
	}
	finish := func(u upload) {
		u.rest()
		u.conn.SetReadDeadline(time.Now().Add(20 * time.Second))
		resp, err := http.ReadResponse(bufio.NewReader(u.conn), nil)
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("upload once complete: %v %v", resp, err)
		}
		resp.Body.Close()
		if ev := e.events.next(t); ev.Input.Hash != bodyDigest(u.body) || ev.Model.Name != testModel {
			t.Errorf("event input %s model %q", ev.Input.Hash, ev.Model.Name)
		}
	}

	chunked := start(true, 9<<20) // past the 8 MiB held: it streams
	waitFor(t, "the chunked body to hold only its piece", func() bool { return bodyBytesHeld(t, admin.URL) == strconv.Itoa(piece) })
	var uploads []upload
	for range 3 {
		uploads = append(uploads, start(false, 1<<20))
	}
	waitFor(t, "four streamed bodies to hold a piece each", func() bool { return bodyBytesHeld(t, admin.URL) == strconv.Itoa(4*piece) })
	if code, body := rawExchange(t, addr, withLength("POST /v1/completions HTTP/1.1\r\nHost: x\r\n", `{"model":"`+testModel+`","prompt":"hi"}`)); code != 200 {
		t.Fatalf("a small request beside four streamed uploads: %d %s", code, body)
	}
	e.events.next(t)
	finish(chunked)
	for _, u := range uploads {
		finish(u)
	}
	waitFor(t, "every share given back", func() bool { return bodyBytesHeld(t, admin.URL) == "0" })
}

// TestSlowStreamedUploadIsNotCut: a streamed body is read with the client
// idle timeout, not a deadline for the whole request: an upload that takes
// longer than the timeout but keeps sending is answered; one that stops
// sending for the timeout gets 408 and is recorded so.
func TestSlowStreamedUploadIsNotCut(t *testing.T) {
	e := newTestEnv(t, fakevllm.Config{OutputTokens: 2, MaxRequestBodySize: 64 << 20},
		func(c *proxy.Config) { c.ClientIdleTimeout = 400 * time.Millisecond })
	addr := strings.TrimPrefix(e.proxyURL, "http://")
	body := bigChat(10<<20, false, false)
	send := func(stallAt int) (int, audit.Event) {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		fmt.Fprintf(c, "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n", len(body))
		const step = 1 << 20
		for sent := 0; sent < len(body); sent += step {
			if sent >= stallAt {
				break // and send nothing more
			}
			c.Write(body[sent:min(sent+step, len(body))])
			time.Sleep(150 * time.Millisecond) // 11 pieces: 1.6 s in all
		}
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		code := 0
		if err == nil {
			code = resp.StatusCode
			resp.Body.Close()
		}
		return code, e.events.next(t)
	}
	if code, ev := send(len(body)); code != 200 || ev.Status.Outcome != audit.OutcomeOK || ev.Input.Bytes != int64(len(body)) {
		t.Errorf("a slow upload that keeps sending: %d, event %+v", code, ev.Status)
	}
	if code, ev := send(3 << 20); code != 408 || ev.Status.Error != "request_timeout" || ev.Status.Outcome != audit.OutcomeRejected {
		t.Errorf("an upload that stops sending: %d, event %+v", code, ev.Status)
	}
	if st := e.fake.Stats(); st.Requests != 1 {
		t.Errorf("vLLM served %d requests, want the one whole body", st.Requests)
	}
}

// TestStreamedBodyFaults: a streamed body that ends before its
// Content-Length (the client closed, half-closed or reset its connection
// mid-upload), a chunked one whose framing breaks, or one that passes
// --max-request-body-size after it began streaming is the client's fault:
// the client gets 400 or 413 if it still listens, the event says so with
// the bytes that were sent, the request is never sent again, and vLLM,
// which got a cut request, serves nothing.
func TestStreamedBodyFaults(t *testing.T) {
	e := newTestEnv(t, fakevllm.Config{OutputTokens: 2, MaxRequestBodySize: 256 << 20},
		func(c *proxy.Config) { c.MaxRequestBodySize = 24 << 20 })
	addr := strings.TrimPrefix(e.proxyURL, "http://")
	body := bigChat(16<<20, false, false)
	half := 10 << 20
	for _, tc := range []struct {
		name     string
		write    func(c *net.TCPConn)
		answered bool // the client still listens
		code     int
		reason   string
		sent     int // input bytes the event records; -1: at most the limit; -2: a start of what was sent
	}{
		{"shorter than its Content-Length, half-closed", func(c *net.TCPConn) {
			fmt.Fprintf(c, "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n", len(body)+1000)
			c.Write(body)
			c.CloseWrite()
		}, true, 400, "malformed_body", len(body)},
		{"client closes mid-upload", func(c *net.TCPConn) {
			fmt.Fprintf(c, "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n", len(body))
			c.Write(body[:half])
			c.Close()
		}, false, 400, "malformed_body", half},
		{"client resets mid-upload", func(c *net.TCPConn) {
			fmt.Fprintf(c, "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n", len(body))
			c.Write(body[:half])
			time.Sleep(200 * time.Millisecond) // sent on before the reset drops it
			c.SetLinger(0)
			c.Close()
		}, false, 400, "malformed_body", -2},
		{"broken chunk framing", func(c *net.TCPConn) {
			io.WriteString(c, "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
			fmt.Fprintf(c, "%x\r\n%s\r\nzz\r\nnot a chunk\r\n", half, body[:half])
		}, true, 400, "malformed_body", half},
		{"chunked past the limit", func(c *net.TCPConn) {
			long := bigChat(30<<20, false, false)
			io.WriteString(c, "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
			for rest := long; len(rest) > 0; {
				n := min(len(rest), 1<<20)
				if _, err := fmt.Fprintf(c, "%x\r\n%s\r\n", n, rest[:n]); err != nil {
					return // the proxy answered and closed
				}
				rest = rest[n:]
			}
		}, true, 413, "body_too_large", -1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			conn, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			c := conn.(*net.TCPConn)
			done := make(chan struct{})
			go func() { tc.write(c); close(done) }()
			if tc.answered {
				c.SetReadDeadline(time.Now().Add(20 * time.Second))
				resp, err := http.ReadResponse(bufio.NewReader(c), nil)
				if err != nil {
					t.Fatalf("no answer: %v", err)
				}
				resp.Body.Close()
				if resp.StatusCode != tc.code || !resp.Close {
					t.Errorf("status %d (close %v), want %d and the connection closed", resp.StatusCode, resp.Close, tc.code)
				}
			}
			ev := e.events.next(t)
			<-done
			if ev.Status.Outcome != audit.OutcomeRejected || ev.Status.Error != tc.reason || ev.Status.Code != tc.code {
				t.Errorf("event %+v", ev.Status)
			}
			switch {
			case tc.sent >= 0 && (ev.Input.Bytes != int64(tc.sent) || ev.Input.Hash != bodyDigest(body[:tc.sent])):
				t.Errorf("input %d bytes %s, want the %d bytes sent", ev.Input.Bytes, ev.Input.Hash, tc.sent)
			case tc.sent == -1 && ev.Input.Bytes > 24<<20:
				t.Errorf("input %d bytes: more than the limit was sent", ev.Input.Bytes)
			case tc.sent == -2 && (ev.Input.Bytes > int64(half) || ev.Input.Hash != bodyDigest(body[:ev.Input.Bytes])):
				// A reset may drop bytes the proxy had not read yet.
				t.Errorf("input %d bytes %s, want a start of the %d bytes sent", ev.Input.Bytes, ev.Input.Hash, half)
			}
		})
	}
	if st := e.fake.Stats(); st.Requests != 0 || st.StreamsStarted != 0 {
		t.Errorf("vLLM served %d requests from cut bodies", st.Requests)
	}
}

// TestUpstreamRefusingMidUpload: an upstream that closes or resets the
// connection while a streamed body is still being sent gets it once: the
// client gets 502, with its connection closed (the rest of its body is not
// read), and the event records upstream_unreachable and the bytes handed
// to the upstream connection before it failed.
func TestUpstreamRefusingMidUpload(t *testing.T) {
	for _, reset := range []bool{false, true} {
		var conns atomic.Int32
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				conns.Add(1)
				go func() {
					io.CopyN(io.Discard, c, 2<<20) // the head and some of the body
					if reset {
						c.(*net.TCPConn).SetLinger(0)
					}
					c.Close()
				}()
			}
		}()
		e := newTestEnv(t, fakevllm.Config{}, func(c *proxy.Config) { c.Upstream = "http://" + ln.Addr().String() })
		body := bigChat(40<<20, false, false)
		conn, err := net.Dial("tcp", strings.TrimPrefix(e.proxyURL, "http://"))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		go func() {
			fmt.Fprintf(conn, "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n", len(body))
			conn.Write(body)
		}()
		conn.SetReadDeadline(time.Now().Add(20 * time.Second))
		resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
		if err != nil {
			t.Fatalf("reset %v: no answer: %v", reset, err)
		}
		resp.Body.Close()
		ev := e.events.next(t)
		if resp.StatusCode != 502 || !resp.Close || ev.Status.Outcome != audit.OutcomeUpstreamUnreachable || ev.Status.Code != 502 {
			t.Errorf("reset %v: %d (close %v), event %+v", reset, resp.StatusCode, resp.Close, ev.Status)
		}
		if ev.Input.Bytes <= 0 || ev.Input.Bytes >= int64(len(body)) || ev.Input.Hash != bodyDigest(body[:ev.Input.Bytes]) {
			t.Errorf("reset %v: input %d bytes %s, want what was sent of the body", reset, ev.Input.Bytes, ev.Input.Hash)
		}
		if n := conns.Load(); n != 1 {
			t.Errorf("reset %v: the upstream got %d connections; the request was sent again", reset, n)
		}
	}
}

// TestEarlyAnswerAfterTheWholeBody: an upstream that answers before it
// reads the body (vLLM's API-key check answers 401 first) and then reads
// and drops the rest, as uvicorn does, gets the whole body, and the client
// gets its answer; the event records the answer and the whole body.
func TestEarlyAnswerAfterTheWholeBody(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var got atomic.Int64
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				req, err := http.ReadRequest(bufio.NewReader(c))
				if err != nil {
					return
				}
				io.WriteString(c, "HTTP/1.1 401 Unauthorized\r\nContent-Type: application/json\r\nContent-Length: 26\r\n\r\n"+`{"error":"Unauthorized"}  `)
				n, _ := io.Copy(io.Discard, req.Body)
				got.Store(n)
			}()
		}
	}()
	e := newTestEnv(t, fakevllm.Config{}, func(c *proxy.Config) { c.Upstream = "http://" + ln.Addr().String() })
	body := bigChat(20<<20, true, false)
	code, answer := postBody(t, e.proxyURL+"/v1/chat/completions", body, false)
	ev := e.events.next(t)
	if code != 401 || !strings.Contains(string(answer), "Unauthorized") || ev.Status.Code != 401 {
		t.Fatalf("%d %s, event %+v", code, answer, ev.Status)
	}
	// The upstream counts the body once it has read it all, which may be
	// after the client has its answer and the event is recorded.
	testutil.WaitFor(t, "the upstream to read the whole body", func() bool { return got.Load() != 0 })
	if got.Load() != int64(len(body)) || ev.Input.Bytes != int64(len(body)) || ev.Model.Name != testModel || !ev.Stream {
		t.Errorf("upstream read %d of %d bytes; event input %d, model %q, stream %v", got.Load(), len(body), ev.Input.Bytes, ev.Model.Name, ev.Stream)
	}
}

// TestStreamedChunkedBodyDropsTrailers: the fields of a streamed chunked
// body's trailer section are dropped, as a held body's are: the upstream
// gets the body, chunked, and no trailer field.
func TestStreamedChunkedBodyDropsTrailers(t *testing.T) {
	up := startRawUpstream(t)
	e := newTestEnv(t, fakevllm.Config{}, func(c *proxy.Config) { c.Upstream = "http://" + up.ln.Addr().String() })
	body := bigChat(9<<20, false, false)
	raw := "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTrailer: X-Checksum\r\n\r\n" +
		fmt.Sprintf("%x\r\n%s\r\n0\r\nX-Checksum: abc\r\n\r\n", len(body), body)
	if code, answer := rawExchange(t, strings.TrimPrefix(e.proxyURL, "http://"), raw); code != 200 {
		t.Fatalf("%d %s", code, answer)
	}
	if ev := e.events.next(t); ev.Input.Hash != bodyDigest(body) || ev.Model.Name != testModel {
		t.Errorf("input %s model %q", ev.Input.Hash, ev.Model.Name)
	}
	got := up.last(t)
	if strings.Contains(got, "X-Checksum") || !strings.HasSuffix(got, "\r\n0\r\n\r\n") || !strings.Contains(got, "Transfer-Encoding: chunked") {
		t.Errorf("the upstream got a trailer field, or not the chunked body: head %.300q, end %q", got, got[len(got)-40:])
	}
}

// rawUpload sends head and body on a new connection to addr, the body
// while the answer is read, and returns the answer's status (0: none).
func rawUpload(t *testing.T, addr, head string, body []byte) int {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	go func() {
		io.WriteString(c, head)
		c.Write(body)
	}()
	c.SetReadDeadline(time.Now().Add(20 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}

// failingConn accepts no byte: every write fails at once.
type failingConn struct{ net.Conn }

func (failingConn) Write([]byte) (int, error) { return 0, errors.New("connection refused the write") }

// TestStreamedBodyIsNeverResent: a write that fails before the upstream
// took a byte is tried again on a new connection for a held body, but
// never for a streamed one: the bytes the failed write took from the
// client are gone (and fasthttp takes the stream off the request, which
// would go out again with no body).
func TestStreamedBodyIsNeverResent(t *testing.T) {
	var dials atomic.Int32
	e := newTestEnv(t, fakevllm.Config{MaxRequestBodySize: 64 << 20}, func(c *proxy.Config) {
		c.Dial = func(addr string) (net.Conn, error) {
			c, err := net.Dial("tcp", addr)
			if err != nil {
				return nil, err
			}
			if dials.Add(1) == 1 {
				return failingConn{c}, nil
			}
			return c, nil
		}
	})
	body := bigChat(12<<20, false, false)
	code := rawUpload(t, strings.TrimPrefix(e.proxyURL, "http://"),
		fmt.Sprintf("POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n", len(body)), body)
	ev := e.events.next(t)
	if code != 502 || ev.Status.Outcome != audit.OutcomeUpstreamUnreachable || dials.Load() != 1 {
		t.Errorf("streamed: %d, event %+v, %d connections", code, ev.Status, dials.Load())
	}
	if st := e.fake.Stats(); st.Requests != 0 {
		t.Errorf("vLLM got %d requests", st.Requests)
	}
	dials.Store(0)
	code, _ = postBody(t, e.proxyURL+"/v1/chat/completions", bigChat(1<<10, false, false), false)
	if ev := e.events.next(t); code != 200 || ev.Status.Outcome != audit.OutcomeOK || dials.Load() != 2 {
		t.Errorf("held: %d, event %+v, %d connections", code, ev.Status, dials.Load())
	}
}

// TestStreamedBodyCapture: payload capture of a streamed body keeps its
// first --capture-max-bytes, marked truncated, and the answer whole; the
// event's hash still covers the whole body.
func TestStreamedBodyCapture(t *testing.T) {
	id, err := age.GenerateX25519Identity()
	if err != nil {
		t.Fatal(err)
	}
	const limit = 1 << 20
	e := newTestEnv(t, fakevllm.Config{OutputTokens: 3, MaxRequestBodySize: 64 << 20}, func(c *proxy.Config) {
		c.Capture = &proxy.CaptureConfig{Recipients: []age.Recipient{id.Recipient()}, MaxBytes: limit}
	})
	for _, chunked := range []bool{false, true} {
		body := bigChat(12<<20, false, false)
		code, answer := postBody(t, e.proxyURL+"/v1/chat/completions", body, chunked)
		ev := e.events.next(t)
		if code != 200 || ev.Payload == nil || !ev.Payload.Truncated || ev.Payload.InputBytes != limit {
			t.Fatalf("chunked %v: %d, payload %+v", chunked, code, ev.Payload)
		}
		req, resp, err := payload.Open(ev.Payload.Age, []age.Identity{id})
		if err != nil || !bytes.Equal(req, body[:limit]) || !bytes.Equal(resp, answer) {
			t.Errorf("chunked %v: capture holds %d request bytes (the body's first %d: %v) and %d answer bytes: %v",
				chunked, len(req), limit, bytes.Equal(req, body[:limit]), len(resp), err)
		}
		if ev.Input.Hash != bodyDigest(body) || ev.Model.Name != testModel {
			t.Errorf("chunked %v: input %s model %q", chunked, ev.Input.Hash, ev.Model.Name)
		}
	}
}
