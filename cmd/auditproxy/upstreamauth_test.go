package main

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/auditproxy/auditproxy/audit"
	"github.com/auditproxy/auditproxy/internal/fakevllm"
	"github.com/auditproxy/auditproxy/internal/testutil"
)

// The keys of a vLLM started with --api-key sk-vllm-sidecar-... --api-key
// sk-vllm-client-...: one for the sidecar's own requests, one for clients.
const (
	sidecarKey = "sk-vllm-sidecar-4e2b8a1f"
	clientKey  = "sk-vllm-client-91c7d0e3"
)

// weightsWithChecksum writes a small model directory and returns it with
// the checksum `auditproxy checksum` prints for it.
func weightsWithChecksum(t *testing.T) (string, string) {
	t.Helper()
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "config.json"), []byte(`{"model_type":"llama"}`), 0o644)
	os.WriteFile(filepath.Join(dir, "model.safetensors"), bytes.Repeat([]byte("w"), 64<<10), 0o644)
	var out bytes.Buffer
	if code := run([]string{"checksum", dir}, &out, io.Discard); code != 0 {
		t.Fatalf("checksum exited %d", code)
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	return dir, strings.TrimPrefix(lines[len(lines)-1], "model checksum: ")
}

// chat sends one chat request through the sidecar with the given
// Authorization (none if empty) and returns the status.
func chat(t *testing.T, listen, auth string) int {
	t.Helper()
	req, _ := http.NewRequest("POST", "http://"+listen+"/v1/chat/completions",
		strings.NewReader(`{"model":"meta-llama/Llama-3.1-8B-Instruct","messages":[{"role":"user","content":"hi"}],"max_tokens":2}`))
	req.Header.Set("Content-Type", "application/json")
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

// getBody returns the status and body of GET url.
func getBody(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// exported returns the data dir's events, decoded, and as text.
func exported(t *testing.T, dataDir string) ([]map[string]any, string) {
	t.Helper()
	var out, errOut bytes.Buffer
	if code := run([]string{"export", "--data-dir", dataDir}, &out, &errOut); code != 0 {
		t.Fatalf("export: %d %s", code, errOut.String())
	}
	var evs []map[string]any
	for _, line := range bytes.Split(bytes.TrimSpace(out.Bytes()), []byte("\n")) {
		var ev map[string]any
		if err := json.Unmarshal(line, &ev); err != nil {
			t.Fatalf("exported line %q: %v", line, err)
		}
		evs = append(evs, ev)
	}
	return evs, out.String()
}

func ofType(evs []map[string]any, typ string) []map[string]any {
	var out []map[string]any
	for _, e := range evs {
		if e["type"] == typ {
			out = append(out, e)
		}
	}
	return out
}

// noKeyIn fails the test if any of the texts holds one of the keys.
func noKeyIn(t *testing.T, texts map[string]string, keys ...string) {
	t.Helper()
	for what, text := range texts {
		for _, k := range keys {
			if strings.Contains(text, k) {
				t.Errorf("%s holds an API key (%.12s...)", what, k)
			}
		}
	}
}

// TestUpstreamAPIKeyFileIdentifiesTheModel: behind a vLLM started with
// --api-key, the sidecar given the key (here through its environment
// variable) reads /v1/models, records model_changed and puts the checksum
// in every event; clients are served with their own key; the sidecar's key
// is in no log line, event, metric or /readyz answer.
func TestUpstreamAPIKeyFileIdentifiesTheModel(t *testing.T) {
	modelDir, want := weightsWithChecksum(t)
	fake, upstream := startFake(t, fakevllm.Config{Root: modelDir, APIKeys: []string{sidecarKey, clientKey}})
	keyFile := filepath.Join(t.TempDir(), "api-key")
	os.WriteFile(keyFile, []byte(sidecarKey+"\n"), 0o600)
	dataDir := t.TempDir()
	p := startServe(t, upstream, []string{"AUDITPROXY_UPSTREAM_API_KEY_FILE=" + keyFile},
		"--data-dir", dataDir, "--log-level", "debug", "--model-poll-interval", "100ms")
	waitUntil(t, "model_changed in the log", 10*time.Second, func() bool {
		_, text := exported(t, dataDir)
		return strings.Contains(text, `"type":"model_changed"`)
	})
	if code := chat(t, p.listen, "Bearer "+clientKey); code != 200 {
		t.Errorf("a client with its own key got %d", code)
	}
	if code := chat(t, p.listen, ""); code != 401 {
		t.Errorf("a client without a key got %d: the sidecar's key must not answer for it", code)
	}
	if v := scrapeMetric(t, p.admin, "auditproxy_model_identity_known"); v != 1 {
		t.Errorf("auditproxy_model_identity_known %v", v)
	}
	_, metrics := getBody(t, "http://"+p.admin+"/metrics")
	code, ready := getBody(t, "http://"+p.admin+"/readyz")
	if code != 200 || ready != "ok\n" {
		t.Errorf("/readyz: %d %q", code, ready)
	}
	if err := p.stop(); err != nil {
		t.Fatal(err)
	}
	evs, text := exported(t, dataDir)
	var inferences []audit.Event
	for _, line := range strings.Split(strings.TrimSpace(text), "\n") {
		var ev audit.Event
		json.Unmarshal([]byte(line), &ev)
		if ev.Type == audit.TypeInference {
			inferences = append(inferences, ev)
		}
	}
	if len(inferences) != 2 || inferences[0].Status.Code != 200 || inferences[1].Status.Code != 401 {
		t.Fatalf("inference events: %+v", inferences)
	}
	for _, ev := range inferences {
		if ev.Model.Checksum != want {
			t.Errorf("event with status %d: model checksum %q, want %q", ev.Status.Code, ev.Model.Checksum, want)
		}
	}
	if len(ofType(evs, "model_changed")) != 1 || !strings.Contains(text, `"after":"`+want+`"`) {
		t.Errorf("no model_changed with the checksum:\n%s", text)
	}
	if n := len(ofType(evs, "model_identity_unavailable")); n != 0 {
		t.Errorf("%d model_identity_unavailable events", n)
	}
	if n := fake.Stats().Unauthorized; n != 1 {
		t.Errorf("vLLM refused %d requests, want 1 (the client without a key)", n)
	}
	noKeyIn(t, map[string]string{"the process log": p.stderr.String(), "the event log": text, "/metrics": metrics, "/readyz": ready}, sidecarKey, clientKey)
}

// TestWithoutAValidUpstreamKeyIdentityIsUnknown: without the key, or with
// one vLLM does not accept, the sidecar's /v1/models is refused: the metric,
// /readyz (still 200) and a model_identity_unavailable event say so and
// what to do, one WARN says it however often the poll runs, and clients
// with their own key are still served and recorded, without a checksum.
func TestWithoutAValidUpstreamKeyIdentityIsUnknown(t *testing.T) {
	modelDir, _ := weightsWithChecksum(t)
	_, upstream := startFake(t, fakevllm.Config{Root: modelDir, APIKeys: []string{sidecarKey, clientKey}})
	wrongKey := filepath.Join(t.TempDir(), "api-key")
	os.WriteFile(wrongKey, []byte("sk-vllm-revoked-0d5c\n"), 0o600)
	for _, tc := range []struct {
		name string
		args []string
		hint string
	}{
		{"no key file", nil, "set --upstream-api-key-file to a file that holds it"},
		{"a key vLLM does not accept", []string{"--upstream-api-key-file", wrongKey}, "the key in --upstream-api-key-file " + wrongKey + " is not one vLLM accepts"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dataDir := t.TempDir()
			p := startServe(t, upstream, nil, append([]string{"--data-dir", dataDir, "--log-level", "debug",
				"--model-poll-interval", "20ms"}, tc.args...)...)
			const failures = `auditproxy_model_identity_poll_failures_total{reason="unauthorized"}`
			waitUntil(t, "five refused polls", 10*time.Second, func() bool { return scrapeMetric(t, p.admin, failures) >= 5 })
			if v := scrapeMetric(t, p.admin, "auditproxy_model_identity_known"); v != 0 {
				t.Errorf("auditproxy_model_identity_known %v", v)
			}
			code, ready := getBody(t, "http://"+p.admin+"/readyz")
			if code != 200 || !strings.HasPrefix(ready, "ok\ndegraded: model identity unknown since ") ||
				!strings.Contains(ready, "(unauthorized): vLLM answered 401 Unauthorized to GET /v1/models; ") || !strings.Contains(ready, tc.hint) {
				t.Errorf("/readyz: %d %q", code, ready)
			}
			if code := chat(t, p.listen, "Bearer "+clientKey); code != 200 {
				t.Errorf("a client with its own key got %d", code)
			}
			if code := chat(t, p.listen, ""); code != 401 {
				t.Errorf("a client without a key got %d", code)
			}
			_, metrics := getBody(t, "http://"+p.admin+"/metrics")
			if err := p.stop(); err != nil {
				t.Fatal(err)
			}
			evs, text := exported(t, dataDir)
			unavailable := ofType(evs, "model_identity_unavailable")
			if len(unavailable) != 1 {
				t.Fatalf("%d model_identity_unavailable events:\n%s", len(unavailable), text)
			}
			d, _ := json.Marshal(unavailable[0]["details"])
			if !strings.Contains(string(d), `"reason":"unauthorized","status":401`) || !strings.Contains(string(d), tc.hint) {
				t.Errorf("model_identity_unavailable details: %s", d)
			}
			if n := len(ofType(evs, "model_changed")); n != 0 {
				t.Errorf("%d model_changed events without access to /v1/models", n)
			}
			inferences := ofType(evs, audit.TypeInference)
			if len(inferences) != 2 {
				t.Fatalf("%d inference events", len(inferences))
			}
			for i, want := range []float64{200, 401} {
				ev := inferences[i]
				if code := ev["status"].(map[string]any)["code"]; code != want {
					t.Errorf("inference %d: status %v, want %v", i, code, want)
				}
				if sum, ok := ev["model"].(map[string]any)["checksum"]; ok {
					t.Errorf("inference %d carries a checksum %v", i, sum)
				}
			}
			logs := p.stderr.String()
			if n := strings.Count(logs, `"msg":"model identity unknown`); n != 1 {
				t.Errorf("%d warnings about the model identity, want 1:\n%s", n, logs)
			}
			if !strings.Contains(logs, tc.hint) {
				t.Errorf("the warning does not say what to do:\n%s", logs)
			}
			noKeyIn(t, map[string]string{"the process log": logs, "the event log": text, "/metrics": metrics, "/readyz": ready},
				sidecarKey, clientKey, "sk-vllm-revoked-0d5c")
		})
	}
}

// TestModelIdentityRestoredWhenVLLMAnswers: a sidecar started before vLLM
// records that the identity is unknown (unreachable), then, once vLLM
// answers, that it is restored, followed by the model_changed of the
// weights.
func TestModelIdentityRestoredWhenVLLMAnswers(t *testing.T) {
	modelDir, want := weightsWithChecksum(t)
	vllmAddr := freeAddr(t)
	keyFile := filepath.Join(t.TempDir(), "api-key")
	os.WriteFile(keyFile, []byte(sidecarKey), 0o600)
	dataDir := t.TempDir()
	listen, admin := freeAddr(t), freeAddr(t)
	stderr := &testutil.LogBuffer{}
	cmd := exec.Command(buildBinary(t), "serve", "--upstream", "http://"+vllmAddr, "--listen", listen, "--admin-listen", admin,
		"--data-dir", dataDir, "--log-level", "debug", "--model-poll-interval", "50ms", "--upstream-api-key-file", keyFile)
	cmd.Stderr = stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			cmd.Process.Kill()
			cmd.Wait()
		}
	})
	waitReady(t, "http://"+admin+"/healthz", stderr)
	waitUntil(t, "an unreachable vLLM in the metrics", 10*time.Second, func() bool {
		return scrapeMetric(t, admin, `auditproxy_model_identity_poll_failures_total{reason="unreachable"}`) >= 1
	})
	if code, ready := getBody(t, "http://"+admin+"/readyz"); code != 503 || !strings.Contains(ready, "\ndegraded: model identity unknown since ") ||
		!strings.Contains(ready, "(unreachable): cannot reach vLLM for GET /v1/models") {
		t.Errorf("/readyz before vLLM is up: %d %q", code, ready)
	}

	fake := fakevllm.New(fakevllm.Config{Root: modelDir, APIKeys: []string{sidecarKey}})
	if _, err := fake.Start(vllmAddr); err != nil {
		t.Fatal(err)
	}
	defer fake.Close()
	waitUntil(t, "the identity known", 10*time.Second, func() bool {
		return scrapeMetric(t, admin, "auditproxy_model_identity_known") == 1
	})
	waitReady(t, "http://"+admin+"/readyz", stderr)
	waitUntil(t, "model_changed in the log", 10*time.Second, func() bool {
		_, text := exported(t, dataDir)
		return strings.Contains(text, `"type":"model_changed"`)
	})
	cmd.Process.Signal(os.Interrupt)
	if err := cmd.Wait(); err != nil {
		t.Fatalf("serve: %v\n%s", err, stderr.String())
	}
	evs, text := exported(t, dataDir)
	var order []string
	for _, e := range evs {
		switch e["type"] {
		case "model_identity_unavailable", "model_identity_restored", "model_changed":
			order = append(order, e["type"].(string))
		}
	}
	if strings.Join(order, " ") != "model_identity_unavailable model_identity_restored model_changed" {
		t.Errorf("identity events in the log: %v\n%s", order, text)
	}
	restored, _ := json.Marshal(ofType(evs, "model_identity_restored")[0]["details"])
	if !strings.Contains(string(restored), `"reason":"unreachable","unavailable_since":"`) {
		t.Errorf("model_identity_restored details: %s", restored)
	}
	if !strings.Contains(text, `"after":"`+want+`"`) {
		t.Errorf("model_changed lacks the checksum:\n%s", text)
	}
	if !strings.Contains(stderr.String(), `"msg":"model identity restored`) {
		t.Errorf("no log line says the identity is restored:\n%s", stderr.String())
	}
	noKeyIn(t, map[string]string{"the process log": stderr.String(), "the event log": text}, sidecarKey)
}

// TestUpstreamAPIKeyFileErrors: a key file that cannot hold a key is one
// line at start, exit 2, and nothing created; no error quotes the file.
func TestUpstreamAPIKeyFileErrors(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	unreadable := write("unreadable", "sk-secret-unreadable")
	os.Chmod(unreadable, 0)
	for _, tt := range []struct {
		name, file, want string
	}{
		{"missing", filepath.Join(dir, "absent"), "--upstream-api-key-file: open " + filepath.Join(dir, "absent") + ": no such file or directory"},
		{"empty", write("empty", ""), "the file is empty; it must hold the key vLLM was started with"},
		{"only a newline", write("newline", "\n \r\n"), "the file is empty"},
		{"a directory", dir, "--upstream-api-key-file: read " + dir + ": is a directory"},
		{"two lines", write("two", "sk-secret-one\nsk-secret-two\n"), "byte 14 is a control character (a second line?); the file must hold one key on one line"},
		{"a NUL byte", write("nul", "sk-secret\x00x"), "byte 10 is a control character"},
		{"too large", write("large", strings.Repeat("k", 5000)), "longer than 4096 bytes, so not an API key file"},
		{"unreadable", unreadable, "permission denied"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if tt.name == "unreadable" && os.Geteuid() == 0 {
				t.Skip("root reads any file")
			}
			dataDir := filepath.Join(t.TempDir(), "data")
			var errOut bytes.Buffer
			code := run([]string{"serve", "--upstream", "http://127.0.0.1:1", "--listen", "127.0.0.1:0", "--admin-listen", "",
				"--data-dir", dataDir, "--upstream-api-key-file", tt.file}, io.Discard, &errOut)
			msg := errOut.String()
			if code != 2 || !strings.Contains(msg, tt.want) || strings.Count(strings.TrimSpace(msg), "\n") != 0 {
				t.Errorf("exit %d, stderr %q; want 2 and one line with %q", code, msg, tt.want)
			}
			if strings.Contains(msg, "sk-secret") {
				t.Errorf("the error quotes the file: %q", msg)
			}
			if _, err := os.Stat(dataDir); err == nil {
				t.Error("a refused start created the data dir")
			}
		})
	}
}

// TestReadUpstreamAPIKey: what is kept of a key file.
func TestReadUpstreamAPIKey(t *testing.T) {
	for content, want := range map[string]string{
		"sk-abc":                  "sk-abc",
		"sk-abc\n":                "sk-abc",
		"sk-abc\r\n":              "sk-abc",
		"sk-abc \t\n\n":           "sk-abc",
		" sk-abc\n":               " sk-abc", // a leading space is part of the key vLLM compares
		"sk-a\tb\n":               "sk-a\tb",
		"sk-ümlaut-ключ\n":        "sk-ümlaut-ключ",
		strings.Repeat("k", 4096): strings.Repeat("k", 4096),
	} {
		p := filepath.Join(t.TempDir(), "key")
		os.WriteFile(p, []byte(content), 0o600)
		got, err := readUpstreamAPIKey(p)
		if err != nil || got != want {
			t.Errorf("%q: %q, %v; want %q", content, got, err, want)
		}
	}
}
