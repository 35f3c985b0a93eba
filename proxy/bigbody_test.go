package proxy_test

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/auditproxy/auditproxy/audit"
	"github.com/auditproxy/auditproxy/internal/fakevllm"
	"github.com/auditproxy/auditproxy/proxy"
)

// bigChat is a chat request of about size bytes: a base64 image in the
// message (as a multimodal client sends it), and a second model member at
// the end, which vLLM (the last duplicate wins) serves.
func bigChat(size int, stream bool) []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, `{"model":"someone-else","stream":%v,"messages":[{"role":"user","content":[{"type":"text","text":"describe it"},{"type":"image_url","image_url":{"url":"data:image/png;base64,`, stream)
	b.Write(bytes.Repeat([]byte("iVBORw0K"), size/8))
	b.WriteString(`"}}]}],"model":"` + testModel + `"}`)
	return b.Bytes()
}

// TestLargeBodiesStreamToVLLM: vLLM takes request bodies of any size, so
// the proxy does not refuse them (no default limit): a body longer than it
// holds (8 MiB) is streamed to vLLM, hashed on the way, with the model
// vLLM served taken from its answer. The client gets what it gets
// directly, sent with a Content-Length or chunked, streamed or not.
func TestLargeBodiesStreamToVLLM(t *testing.T) {
	e := newTestEnv(t, fakevllm.Config{OutputTokens: 4, MaxRequestBodySize: 256 << 20}, nil)
	for _, tc := range []struct {
		name    string
		size    int
		stream  bool
		chunked bool
	}{
		{"40 MB, Content-Length", 40 << 20, false, false},
		{"40 MB, chunked", 40 << 20, false, true},
		{"20 MB, streamed answer", 20 << 20, true, false},
		{"just over what is held, chunked", 8<<20 + 100, false, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			body := bigChat(tc.size, tc.stream)
			post := func(base string) (int, []byte) {
				var r io.Reader = bytes.NewReader(body)
				if tc.chunked {
					r = io.MultiReader(r) // no length known: chunked
				}
				resp, err := http.Post(base+"/v1/chat/completions", "application/json", r)
				if err != nil {
					t.Fatal(err)
				}
				defer resp.Body.Close()
				b, _ := io.ReadAll(resp.Body)
				return resp.StatusCode, b
			}
			dcode, direct := post(e.upstream)
			pcode, proxied := post(e.proxyURL)
			ev := e.events.next(t)
			if dcode != 200 || pcode != 200 || normalize(direct) != normalize(proxied) {
				t.Fatalf("direct %d, through the proxy %d:\n%.300s\n%.300s", dcode, pcode, direct, proxied)
			}
			if want := "blake3:" + b3hex(body); ev.Input.Hash != want || ev.Input.Bytes != int64(len(body)) {
				t.Errorf("input %s/%d, want %s/%d", ev.Input.Hash, ev.Input.Bytes, want, len(body))
			}
			if ev.Model.Name != testModel || !ev.Model.FromAnswer || ev.Stream != tc.stream || ev.Status.Outcome != audit.OutcomeOK {
				t.Errorf("model %+v stream %v outcome %s %s", ev.Model, ev.Stream, ev.Status.Outcome, ev.Status.Error)
			}
			if !tc.stream && (ev.Input.Tokens == nil || ev.Output.Tokens == nil) {
				t.Errorf("a non-streamed answer's usage was not read: %v/%v", ev.Input.Tokens, ev.Output.Tokens)
			}
		})
	}
}

// TestStreamedBodyFaults: a streamed body that ends before its
// Content-Length, or a chunked one that passes --max-request-body-size
// after it began streaming, is the client's fault: the client gets 400 or
// 413, the event says so, and the request is never sent again.
func TestStreamedBodyFaults(t *testing.T) {
	e := newTestEnv(t, fakevllm.Config{OutputTokens: 2, MaxRequestBodySize: 256 << 20},
		func(c *proxy.Config) { c.MaxRequestBodySize = 12 << 20 })
	addr := strings.TrimPrefix(e.proxyURL, "http://")

	t.Run("shorter than its Content-Length", func(t *testing.T) {
		conn, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		body := bigChat(10<<20, false)
		fmt.Fprintf(conn, "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n", len(body)+1000)
		conn.Write(body)
		conn.(*net.TCPConn).CloseWrite()
		conn.SetReadDeadline(time.Now().Add(10 * time.Second))
		resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
		if err == nil {
			resp.Body.Close()
		}
		ev := e.events.next(t)
		if ev.Status.Outcome != audit.OutcomeRejected || ev.Status.Error != "malformed_body" {
			t.Errorf("outcome %s %s (status %d)", ev.Status.Outcome, ev.Status.Error, ev.Status.Code)
		}
	})
	t.Run("chunked past the limit", func(t *testing.T) {
		resp, err := http.Post(e.proxyURL+"/v1/chat/completions", "application/json", io.MultiReader(bytes.NewReader(bigChat(16<<20, false))))
		if err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 413 {
				t.Errorf("status %d, want 413", resp.StatusCode)
			}
		}
		ev := e.events.next(t)
		if ev.Status.Code != 413 || ev.Status.Error != "body_too_large" || ev.Input.Bytes > 12<<20 {
			t.Errorf("event: status %d %s, input bytes %d", ev.Status.Code, ev.Status.Error, ev.Input.Bytes)
		}
	})
	if st := e.fake.Stats(); st.StreamsStarted != 0 {
		t.Errorf("vLLM started %d generations from cut requests", st.StreamsStarted)
	}
}
