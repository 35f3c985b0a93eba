package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/auditproxy/auditproxy/audit"
	"github.com/auditproxy/auditproxy/internal/fakevllm"
	"github.com/auditproxy/auditproxy/internal/forwardrecv"
)

const demoAPIKey = "sk-demo-0123456789"

func runDemo(args []string, stdout, stderr io.Writer) error {
	var c serveConfig
	fs := newFlagSet("demo", "demo [flags]", stderr)
	c.register(fs, "127.0.0.1:8080")
	c.logLevel, c.logFormat = "warn", "text"
	fs.Lookup("log-level").DefValue, fs.Lookup("log-format").DefValue = "warn", "text"
	fs.Lookup("data-dir").DefValue = "a new temporary directory"
	c.dataDir = ""
	fs.Lookup("forward").DefValue = "a built-in forward receiver on loopback"
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if c.upstream != "" {
		return usageError{"demo: --upstream is not used (the demo runs its own simulated vLLM); use serve"}
	}
	if c.dataDir == "" {
		dir, err := os.MkdirTemp("", "auditproxy-demo-")
		if err != nil {
			return err
		}
		c.dataDir = dir
	}

	fake := fakevllm.New(fakevllm.Config{TTFT: 120 * time.Millisecond, InterTokenLatency: 25 * time.Millisecond, OutputTokens: 12})
	upstream, err := fake.Start("127.0.0.1:0")
	if err != nil {
		return fmt.Errorf("start simulated vLLM: %w", err)
	}
	defer fake.Close()
	c.upstream = upstream
	var recv *forwardrecv.Receiver
	if c.forward == "" {
		// An aggregator of the demo's own, so that shipping with acks runs
		// too; --forward points the demo at a real Fluent Bit instead.
		recv, err = forwardrecv.Start("127.0.0.1:0", forwardrecv.Config{})
		if err != nil {
			return fmt.Errorf("start the demo's forward receiver: %w", err)
		}
		defer recv.Close()
		c.forward = "tcp://" + recv.Addr()
	}

	// Events are printed after the response that produced them, so the
	// output reads in order: the event is recorded the moment the last byte
	// is written, while the client may still be printing.
	var outMu sync.Mutex
	events := make(chan []byte, 64)
	queueEvent := func(ev *audit.Event) {
		b, _ := json.MarshalIndent(ev, "  ", "  ")
		select {
		case events <- b:
		default: // the demo's printer fell behind; the event is in the log
		}
	}
	printEvent := func(b []byte) {
		outMu.Lock()
		defer outMu.Unlock()
		fmt.Fprintf(stdout, "  audit event:\n  %s\n\n", b)
	}
	inst, err := start(c, stderr, queueEvent)
	if err != nil {
		return err
	}
	base := "http://" + inst.ln.Addr().String()
	fmt.Fprintf(stdout, "auditproxy demo: simulated vLLM at %s, proxy at %s, spool in %s, shipping to %s\n\n",
		upstream, base, c.dataDir, c.forward)

	model := "meta-llama/Llama-3.1-8B-Instruct"
	requests := []struct{ title, path, body string }{
		{"chat completion", "/v1/chat/completions",
			`{"model":"` + model + `","messages":[{"role":"user","content":"Which model answered this?"}],"max_tokens":8}`},
		{"streamed chat completion", "/v1/chat/completions",
			`{"model":"` + model + `","messages":[{"role":"user","content":"Stream me a short answer."}],"stream":true}`},
		{"streamed completion", "/v1/completions",
			`{"model":"` + model + `","prompt":"Once upon a time","max_tokens":6,"stream":true}`},
		{"embeddings", "/v1/embeddings",
			`{"model":"` + model + `","input":["an audit trail","for every inference"]}`},
		{"streamed Responses API", "/v1/responses",
			`{"model":"` + model + `","input":"Which GPU served me?","max_output_tokens":8,"stream":true}`},
		{"streamed Anthropic Messages API", "/v1/messages",
			`{"model":"` + model + `","max_tokens":8,"messages":[{"role":"user","content":"Who sent this?"}],"stream":true}`},
		{"rerank", "/v1/rerank",
			`{"model":"` + model + `","query":"audit","documents":["an audit trail","a weather report"]}`},
	}
	for _, r := range requests {
		outMu.Lock()
		fmt.Fprintf(stdout, "> POST %s (%s)\n", r.path, r.title)
		outMu.Unlock()
		if err := demoRequest(base+r.path, r.body, stdout, &outMu); err != nil {
			inst.shutdown()
			return fmt.Errorf("demo request %s: %w", r.path, err)
		}
		select {
		case b := <-events:
			printEvent(b)
		case <-time.After(2 * time.Second):
			fmt.Fprintln(stderr, "auditproxy demo: no audit event within 2s")
		}
	}
	go func() {
		for b := range events {
			printEvent(b)
		}
	}()
	if recv != nil {
		inferences := func() (n int) {
			for _, e := range recv.Entries() {
				if e.Record["type"] == audit.TypeInference {
					n++
				}
			}
			return n
		}
		for deadline := time.Now().Add(2 * time.Second); inferences() < len(requests) && time.Now().Before(deadline); {
			time.Sleep(20 * time.Millisecond)
		}
		outMu.Lock()
		fmt.Fprintf(stdout, "aggregator (the demo's forward receiver at %s): %d inference events received and acknowledged, and %d other log events (start, versions, checkpoints)\n\n",
			c.forward, inferences(), recv.Len()-inferences())
		outMu.Unlock()
	}
	adminAddr := "(admin listener disabled)"
	if inst.adminLn != nil {
		adminAddr = inst.adminLn.Addr().String()
	}
	outMu.Lock()
	fmt.Fprintf(stdout, `The proxy keeps serving until Ctrl-C. Try:
  curl -s %[1]s/v1/models
  curl -sN %[1]s/v1/chat/completions -H 'Authorization: Bearer %[2]s' -H 'Content-Type: application/json' \
    -d '{"model":"%[3]s","messages":[{"role":"user","content":"hi"}],"stream":true}'
  curl -s http://%[4]s/metrics | grep ^auditproxy_
  go run ./cmd/auditproxy export --data-dir %[5]s
  go run ./cmd/auditproxy verify --pubkey %[5]s/signing.key.pub %[5]s/spool

`, base, demoAPIKey, model, adminAddr, c.dataDir)
	outMu.Unlock()
	return inst.waitForSignal()
}

// demoRequest sends one request as an OpenAI client would and prints what
// came back: each streamed event's text as it arrives, or a non-streamed
// answer's size.
func demoRequest(url, body string, stdout io.Writer, mu *sync.Mutex) error {
	req, err := http.NewRequest(http.MethodPost, url, strings.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+demoAPIKey)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			return err
		}
		mu.Lock()
		fmt.Fprintf(stdout, "< %d, %d bytes, X-Request-Id %s\n", resp.StatusCode, len(b), resp.Header.Get("X-Request-Id"))
		mu.Unlock()
		return nil
	}
	mu.Lock()
	fmt.Fprintf(stdout, "< %d, streaming, X-Request-Id %s\n< ", resp.StatusCode, resp.Header.Get("X-Request-Id"))
	mu.Unlock()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		data, ok := bytes.CutPrefix(sc.Bytes(), []byte("data: "))
		if !ok || string(data) == "[DONE]" {
			continue
		}
		if text := streamedText(data); text != "" {
			mu.Lock()
			fmt.Fprint(stdout, text)
			mu.Unlock()
		}
	}
	mu.Lock()
	fmt.Fprintln(stdout)
	mu.Unlock()
	return sc.Err()
}

// streamedText returns the text an SSE event's data adds to the answer, in
// each API's shape: a chat or completion chunk's choice, a Responses
// output_text delta, a Messages text delta.
func streamedText(data []byte) string {
	var ev struct {
		Type    string `json:"type"`
		Choices []struct {
			Text  string `json:"text"`
			Delta struct {
				Content string `json:"content"`
			} `json:"delta"`
		} `json:"choices"`
		Delta json.RawMessage `json:"delta"`
	}
	if json.Unmarshal(data, &ev) != nil {
		return ""
	}
	switch ev.Type {
	case "response.output_text.delta":
		var s string
		json.Unmarshal(ev.Delta, &s)
		return s
	case "content_block_delta":
		var d struct {
			Text string `json:"text"`
		}
		json.Unmarshal(ev.Delta, &d)
		return d.Text
	}
	if len(ev.Choices) > 0 {
		return ev.Choices[0].Text + ev.Choices[0].Delta.Content
	}
	return ""
}
