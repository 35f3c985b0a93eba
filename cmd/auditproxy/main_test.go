package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/auditproxy/auditproxy/audit"
	"github.com/auditproxy/auditproxy/bench/fakevllm"
)

func TestUsageErrors(t *testing.T) {
	tests := []struct {
		name string
		args []string
		env  map[string]string
		code int
		want string
	}{
		{"no command", nil, nil, 2, "Usage:"},
		{"unknown command", []string{"frobnicate"}, nil, 2, `unknown command "frobnicate"`},
		{"serve without upstream", []string{"serve"}, nil, 2, "--upstream is required"},
		{"bad upstream", []string{"serve", "--upstream", "ftp://x"}, nil, 2, "scheme must be http or https"},
		{"bad hash", []string{"serve", "--upstream", "http://127.0.0.1:1", "--hash", "md5"}, nil, 2, `unknown hash algorithm "md5"`},
		{"bad size", []string{"serve", "--upstream", "http://127.0.0.1:1", "--max-request-body-size", "lots"}, nil, 2, `invalid size "lots"`},
		{"bad env value", []string{"serve", "--upstream", "http://127.0.0.1:1"}, map[string]string{"AUDITPROXY_UPSTREAM_IDLE_TIMEOUT": "soon"}, 2, "$AUDITPROXY_UPSTREAM_IDLE_TIMEOUT"},
		{"env upstream is used", []string{"serve"}, map[string]string{"AUDITPROXY_UPSTREAM": "gopher://x"}, 2, "scheme must be http or https"},
		{"bad durability", []string{"serve", "--upstream", "http://127.0.0.1:1", "--durability", "eventually"}, nil, 2, `unknown durability "eventually"`},
		{"stray argument", []string{"export", "extra"}, nil, 2, `unexpected argument "extra"`},
		{"export of a missing dir", []string{"export", "--data-dir", "/nonexistent/auditproxy"}, nil, 1, "export: data dir"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for k, v := range tt.env {
				t.Setenv(k, v)
			}
			var out, errOut bytes.Buffer
			code := run(tt.args, &out, &errOut)
			if code != tt.code || !strings.Contains(errOut.String(), tt.want) {
				t.Errorf("run(%q) = %d, stderr %q; want %d and %q", tt.args, code, errOut.String(), tt.code, tt.want)
			}
			if strings.Count(strings.TrimSpace(errOut.String()), "\n") > 0 && tt.code == 1 {
				t.Errorf("a runtime error should be one line: %q", errOut.String())
			}
		})
	}
}

func TestHelpListsEveryFlagWithItsEnvVar(t *testing.T) {
	var out, errOut bytes.Buffer
	if code := run([]string{"serve", "--help"}, &out, &errOut); code != 0 {
		t.Fatalf("serve --help exited %d", code)
	}
	for _, flag := range []string{"upstream", "listen", "admin-listen", "data-dir", "hash", "key-id-secret-file",
		"max-request-body-size", "upstream-idle-timeout", "client-idle-timeout", "durability", "fsync-interval"} {
		if !strings.Contains(errOut.String(), "--"+flag+" ") || !strings.Contains(errOut.String(), "$"+envName(flag)) {
			t.Errorf("serve --help does not document --%s and $%s", flag, envName(flag))
		}
	}
}

func TestParseSize(t *testing.T) {
	for in, want := range map[string]int64{"1024": 1024, "32MiB": 32 << 20, "1 GiB": 1 << 30, "5KB": 5000, "7B": 7} {
		if got, err := parseSize(in); err != nil || got != want {
			t.Errorf("parseSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "-1", "0", "1.5MiB", "12XB", "99999999999GiB"} {
		if _, err := parseSize(bad); err == nil {
			t.Errorf("parseSize(%q) succeeded", bad)
		}
	}
}

// TestServeProcess runs the real binary: serve in front of a fake vLLM, one
// request through it, SIGTERM, then export.
func TestServeProcess(t *testing.T) {
	bin := buildBinary(t)
	fake := fakevllm.New(fakevllm.Config{})
	upstream, err := fake.Start("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer fake.Close()

	dataDir := filepath.Join(t.TempDir(), "data")
	listen, admin := freeAddr(t), freeAddr(t)
	cmd := exec.Command(bin, "serve", "--listen", listen, "--data-dir", dataDir)
	// The environment carries two flags, as in a container.
	cmd.Env = append(os.Environ(), "AUDITPROXY_UPSTREAM="+upstream, "AUDITPROXY_ADMIN_LISTEN="+admin)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	waitReady(t, "http://"+admin+"/readyz", &stderr)

	body := `{"model":"meta-llama/Llama-3.1-8B-Instruct","prompt":"hello","stream":true}`
	req, _ := http.NewRequest("POST", "http://"+listen+"/v1/completions", strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer sk-process-test")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !bytes.HasSuffix(got, []byte("data: [DONE]\n\n")) {
		t.Fatalf("status %d body %q", resp.StatusCode, got)
	}

	m, err := http.Get("http://" + admin + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	metrics, _ := io.ReadAll(m.Body)
	m.Body.Close()
	for _, want := range []string{`auditproxy_requests_total{code="200",model="meta-llama/Llama-3.1-8B-Instruct",outcome="ok"} 1`, "auditproxy_events_recorded_total 1", "auditproxy_events_dropped_total 0"} {
		if !bytes.Contains(metrics, []byte(want)) {
			t.Errorf("metrics lack %q", want)
		}
	}

	cmd.Process.Signal(syscall.SIGTERM)
	if err := cmd.Wait(); err != nil {
		t.Fatalf("serve exited with %v after SIGTERM\n%s", err, stderr.String())
	}
	if fi, err := os.Stat(filepath.Join(dataDir, "key-id.secret")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("key id secret: %v %v", fi, err)
	}

	var out, errOut bytes.Buffer
	if code := run([]string{"export", "--data-dir", dataDir}, &out, &errOut); code != 0 {
		t.Fatalf("export exited %d: %s", code, errOut.String())
	}
	var ev audit.Event
	if err := json.Unmarshal(out.Bytes(), &ev); err != nil {
		t.Fatalf("export printed %q: %v", out.String(), err)
	}
	if ev.Path != "/v1/completions" || !ev.Stream || ev.Status.Outcome != audit.OutcomeOK || ev.RequestID != resp.Header.Get("X-Request-Id") || ev.APIKeyID == nil {
		t.Errorf("exported event %+v", ev)
	}
	for _, secret := range []string{"sk-process-test", "hello"} {
		if strings.Contains(out.String()+stderr.String(), secret) {
			t.Errorf("%q written to the event log or the process log", secret)
		}
	}
}

func freeAddr(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func waitReady(t *testing.T, url string, stderr fmt.Stringer) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		if r, err := http.Get(url); err == nil {
			r.Body.Close()
			if r.StatusCode == 200 {
				return
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("%s not ready within 15s\n%s", url, stderr)
}

// TestDemoProcess runs `auditproxy demo` as a user would: it must print one
// audit event per request it sends, keep serving, and exit cleanly on Ctrl-C.
func TestDemoProcess(t *testing.T) {
	bin := buildBinary(t)
	dataDir := t.TempDir()
	cmd := exec.Command(bin, "demo", "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0", "--data-dir", dataDir)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()

	lines := make(chan string)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	var out strings.Builder
	timeout := time.After(30 * time.Second)
	for !strings.Contains(out.String(), "keeps serving until Ctrl-C") {
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatalf("demo ended early:\n%s\n%s", out.String(), stderr.String())
			}
			out.WriteString(l + "\n")
		case <-timeout:
			t.Fatalf("demo did not finish its requests in 30s:\n%s", out.String())
		}
	}
	if n := strings.Count(out.String(), "audit event:"); n != 4 {
		t.Errorf("%d audit events printed, want 4 (chat, streamed chat, streamed completion, embeddings)", n)
	}
	if n := strings.Count(out.String(), `"outcome": "ok"`); n != 4 {
		t.Errorf("%d ok outcomes, want 4:\n%s", n, out.String())
	}
	// The closing hint shows a curl command with the demo key; the events
	// before it must not contain it.
	if events, _, _ := strings.Cut(out.String(), "The proxy keeps serving"); strings.Contains(events, demoAPIKey) {
		t.Error("the demo's API key appears in an event")
	}
	cmd.Process.Signal(os.Interrupt)
	go func() {
		for range lines {
		}
	}()
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("demo exited with %v on Ctrl-C\n%s", err, stderr.String())
		}
	case <-time.After(10 * time.Second):
		t.Fatal("demo did not exit within 10s of Ctrl-C")
	}
	var exported bytes.Buffer
	if code := run([]string{"export", "--data-dir", dataDir}, &exported, io.Discard); code != 0 || strings.Count(exported.String(), "\n") != 4 {
		t.Errorf("export after the demo: code %d, %q", code, exported.String())
	}
}

var (
	buildOnce sync.Once
	builtBin  string
	buildErr  error
)

// buildBinary builds auditproxy once for all the tests that run it as a
// process.
func buildBinary(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "auditproxy-test-")
		if err != nil {
			buildErr = err
			return
		}
		builtBin = filepath.Join(dir, "auditproxy")
		if out, err := exec.Command("go", "build", "-o", builtBin, ".").CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return builtBin
}

func TestMain(m *testing.M) {
	code := m.Run()
	if builtBin != "" {
		os.RemoveAll(filepath.Dir(builtBin))
	}
	os.Exit(code)
}

// TestKill9KeepsEveryCompletedAnswer SIGKILLs a loaded serve process five
// times at random moments and restarts it on the same data dir. Every answer
// whose end a client received (a stream's [DONE], a whole non-streamed body)
// must have its event in the log afterwards: the proxy holds the end back
// until the event is fsynced. (With --durability async the same test loses
// events: 17 of 302 in one run.)
func TestKill9KeepsEveryCompletedAnswer(t *testing.T) {
	bin := buildBinary(t)
	fake := fakevllm.New(fakevllm.Config{InterTokenLatency: time.Millisecond, OutputTokens: 30})
	upstream, err := fake.Start("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer fake.Close()
	dataDir := t.TempDir()

	var mu sync.Mutex
	completed := map[string]bool{}
	var seq atomic.Int64
	for round := range 5 {
		listen, admin := freeAddr(t), freeAddr(t)
		cmd := exec.Command(bin, "serve", "--upstream", upstream, "--listen", listen, "--admin-listen", admin,
			"--data-dir", dataDir, "--log-level", "warn")
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		waitReady(t, "http://"+admin+"/readyz", &stderr)

		stop := make(chan struct{})
		var wg sync.WaitGroup
		for range 6 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{}}
				for {
					select {
					case <-stop:
						return
					default:
					}
					n := seq.Add(1)
					id := fmt.Sprintf("k9-%d", n)
					stream := n%2 == 0
					body := fmt.Sprintf(`{"model":"meta-llama/Llama-3.1-8B-Instruct","messages":[{"role":"user","content":"request %d"}],"stream":%v}`, n, stream)
					req, _ := http.NewRequest("POST", "http://"+listen+"/v1/chat/completions", strings.NewReader(body))
					req.Header.Set("X-Request-Id", id)
					resp, err := client.Do(req)
					if err != nil {
						time.Sleep(5 * time.Millisecond)
						continue
					}
					b, err := io.ReadAll(resp.Body)
					resp.Body.Close()
					done := resp.StatusCode == 200 && (stream && bytes.Contains(b, []byte("data: [DONE]")) || !stream && err == nil)
					if done {
						mu.Lock()
						completed[id] = true
						mu.Unlock()
					}
				}
			}()
		}
		time.Sleep(time.Duration(150+rand.IntN(400)) * time.Millisecond)
		cmd.Process.Signal(syscall.SIGKILL)
		cmd.Wait()
		close(stop)
		wg.Wait()
		t.Logf("round %d: %d answers completed so far", round, len(completed))
	}

	var out, errOut bytes.Buffer
	if code := run([]string{"export", "--data-dir", dataDir}, &out, &errOut); code != 0 {
		t.Fatalf("export exited %d: %s", code, errOut.String())
	}
	recorded := map[string]bool{}
	sc := bufio.NewScanner(&out)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var ev audit.Event
		if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
			t.Fatalf("exported line %q: %v", sc.Text(), err)
		}
		recorded[ev.RequestID] = true
	}
	if len(completed) < 20 {
		t.Fatalf("only %d answers completed; the test did not exercise the proxy", len(completed))
	}
	missing := 0
	for id := range completed {
		if !recorded[id] {
			missing++
			if missing <= 5 {
				t.Errorf("answer %s reached its client but has no event", id)
			}
		}
	}
	if missing > 0 {
		t.Errorf("%d of %d completed answers have no event", missing, len(completed))
	}
}
