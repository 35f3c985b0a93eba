package main

import (
	"bufio"
	"bytes"
	cryptorand "crypto/rand"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"hash/crc32"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"filippo.io/age"
	"golang.org/x/mod/sumdb/note"

	"github.com/auditproxy/auditproxy/audit"
	"github.com/auditproxy/auditproxy/auditlog"
	"github.com/auditproxy/auditproxy/internal/fakevllm"
	"github.com/auditproxy/auditproxy/internal/forwardrecv"
	"github.com/auditproxy/auditproxy/internal/testutil"
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
		{"budget below one body", []string{"serve", "--upstream", "http://127.0.0.1:1", "--request-body-budget", "8MiB"}, nil, 2, "--request-body-budget 8MiB: want at least 8454145 bytes"},
		{"bad env value", []string{"serve", "--upstream", "http://127.0.0.1:1"}, map[string]string{"AUDITPROXY_UPSTREAM_IDLE_TIMEOUT": "soon"}, 2, "$AUDITPROXY_UPSTREAM_IDLE_TIMEOUT"},
		{"env upstream is used", []string{"serve"}, map[string]string{"AUDITPROXY_UPSTREAM": "gopher://x"}, 2, "scheme must be http or https"},
		{"bad durability", []string{"serve", "--upstream", "http://127.0.0.1:1", "--durability", "eventually"}, nil, 2, `unknown durability "eventually"`},
		{"bad forward scheme", []string{"serve", "--upstream", "http://127.0.0.1:1", "--forward", "udp://x:1"}, nil, 2, "--forward: forward address \"udp://x:1\": scheme must be tcp or tls"},
		{"forward without port", []string{"serve", "--upstream", "http://127.0.0.1:1", "--forward", "tls://agg"}, nil, 2, "want tls://HOST:PORT"},
		{"skip verify without forward", []string{"serve", "--upstream", "http://127.0.0.1:1", "--forward-insecure-skip-verify"}, nil, 2, "without --forward"},
		{"unknown spool-full policy", []string{"serve", "--upstream", "http://127.0.0.1:1", "--on-spool-full", "drop"}, nil, 2, "the only policy is reject"},
		{"tiny spool", []string{"serve", "--upstream", "http://127.0.0.1:1", "--spool-max-bytes", "10KiB"}, nil, 2, "want at least 1MiB"},
		{"segment larger than spool", []string{"serve", "--upstream", "http://127.0.0.1:1", "--spool-max-bytes", "1MiB", "--segment-max-bytes", "1MiB"}, nil, 2, "half of --spool-max-bytes"},
		{"log name with a control character", []string{"serve", "--upstream", "http://127.0.0.1:1", "--log-name", "node\x01"}, nil, 2, `--log-name: log name "node\x01" holds U+0001, not a printable character`},
		{"capture larger than a spool record", []string{"serve", "--upstream", "http://127.0.0.1:1", "--capture-max-bytes", "200MiB"}, nil, 2, "--capture-max-bytes 200MiB: want at most 64MiB"},
		{"stray argument", []string{"export", "extra"}, nil, 2, `unexpected argument "extra"`},
		{"export of a missing dir", []string{"export", "--data-dir", "/nonexistent/auditproxy"}, nil, 1, "export: data dir"},
		{"keyid with the key as an argument", []string{"keyid", "sk-secret"}, nil, 2, "read from standard input, not from arguments"},
		{"keyid without a secret", []string{"keyid", "--key-id-secret-file", "/nonexistent/key-id.secret"}, nil, 1, "read key id secret"},
		{"healthcheck of a bad address", []string{"healthcheck", "--admin-listen", "9090"}, nil, 2, `--admin-listen "9090": want HOST:PORT`},
	}
	// A usage error creates nothing: run in an empty directory and check.
	wd, _ := os.Getwd()
	t.Cleanup(func() { os.Chdir(wd) })
	empty := t.TempDir()
	os.Chdir(empty)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for k, v := range tt.env {
				t.Setenv(k, v)
			}
			defer func() {
				if entries, _ := os.ReadDir(empty); len(entries) > 0 {
					t.Errorf("%q created %s", tt.args, entries[0].Name())
					os.RemoveAll(filepath.Join(empty, entries[0].Name()))
				}
			}()
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
		"max-request-body-size", "upstream-idle-timeout", "client-idle-timeout", "durability", "fsync-interval",
		"spool-max-bytes", "on-spool-full", "segment-max-bytes", "segment-max-age", "retention", "forward", "forward-tag",
		"forward-insecure-skip-verify", "forward-ack-timeout", "drain-timeout", "log-name", "signing-key",
		"checkpoint-interval", "checkpoint-every", "checkpoint-dir", "checkpoint-url", "upstream-api-key-file"} {
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

	// The container's HEALTHCHECK: ready while serving, on the admin
	// address from the environment as in the image; 0.0.0.0 is asked on
	// loopback.
	_, adminPort, _ := net.SplitHostPort(admin)
	hc := exec.Command(bin, "healthcheck")
	hc.Env = append(os.Environ(), "AUDITPROXY_ADMIN_LISTEN=0.0.0.0:"+adminPort)
	if out, err := hc.CombinedOutput(); err != nil || !strings.Contains(string(out), "/readyz: ok") {
		t.Errorf("healthcheck of a serving sidecar: %v: %s", err, out)
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
	var hcOut, hcErr bytes.Buffer
	if code := run([]string{"healthcheck", "--admin-listen", admin, "--timeout", "1s"}, &hcOut, &hcErr); code != 1 || !strings.Contains(hcErr.String(), "healthcheck:") {
		t.Errorf("healthcheck of a stopped sidecar exited %d: %s%s", code, hcOut.String(), hcErr.String())
	}
	if fi, err := os.Stat(filepath.Join(dataDir, "key-id.secret")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("key id secret: %v %v", fi, err)
	}

	var out, errOut bytes.Buffer
	if code := run([]string{"export", "--data-dir", dataDir}, &out, &errOut); code != 0 {
		t.Fatalf("export exited %d: %s", code, errOut.String())
	}
	// The log: log_started, proxy_started (no GPU identity on a machine
	// without NVML), the request's event, proxy_stopped, the checkpoint at
	// shutdown; upstream_version (from the poller) anywhere after the start.
	var types []string
	inferenceAt := -1
	for i, typ := range eventTypes(t, out.Bytes()) {
		if typ == "upstream_version" {
			if !slices.Contains(types, audit.TypeProxyStarted) {
				t.Errorf("upstream_version recorded before proxy_started: %v", types)
			}
			continue
		}
		if typ == audit.TypeInference {
			inferenceAt = i
		}
		types = append(types, typ)
	}
	if strings.Join(types, ",") != "log_started,proxy_started,inference,proxy_stopped,checkpoint" {
		t.Errorf("exported event types %v", types)
	}
	lines := bytes.Split(bytes.TrimSpace(out.Bytes()), []byte("\n"))
	if last := lines[len(lines)-1]; !bytes.Contains(last, []byte(`"final":true`)) || !bytes.Contains(last, []byte(`=\nfinal\n\n—`)) {
		t.Errorf("the checkpoint at shutdown is not final in its signed note: %s", last)
	}
	if !bytes.Contains(out.Bytes(), []byte(`"gpu":null`)) {
		t.Error(`events lack "gpu":null without NVML`)
	}
	if inferenceAt < 0 {
		t.Fatalf("no inference event in %s", out.String())
	}
	var ev audit.Event
	if err := json.Unmarshal(bytes.Split(out.Bytes(), []byte("\n"))[inferenceAt], &ev); err != nil {
		t.Fatalf("export printed %q: %v", out.String(), err)
	}
	if ev.Log == nil || ev.Log.Seq != int64(inferenceAt) || ev.Log.Prev == "" {
		t.Errorf("exported event's log member %+v", ev.Log)
	}
	if ev.Path != "/v1/completions" || !ev.Stream || ev.Status.Outcome != audit.OutcomeOK || ev.RequestID != resp.Header.Get("X-Request-Id") || ev.APIKeyID == nil {
		t.Errorf("exported event %+v", ev)
	}
	// An operator holding the key finds its id with keyid: from the key, or
	// from a whole Authorization value.
	for _, in := range []string{"sk-process-test\n", "Bearer sk-process-test"} {
		stdin = strings.NewReader(in)
		var idOut, idErr bytes.Buffer
		code := run([]string{"keyid", "--key-id-secret-file", filepath.Join(dataDir, "key-id.secret")}, &idOut, &idErr)
		if code != 0 || strings.TrimSpace(idOut.String()) != *ev.APIKeyID {
			t.Errorf("keyid of %q exited %d: %q%s, the event recorded %s", in, code, idOut.String(), idErr.String(), *ev.APIKeyID)
		}
	}
	// With the log: the right secret finds the key's events, another
	// secret gives an id no event has, and keyid says so.
	wrongSecret := filepath.Join(t.TempDir(), "other.secret")
	os.WriteFile(wrongSecret, []byte(strings.Repeat("ab", 32)+"\n"), 0o600)
	for _, tc := range []struct {
		secret string
		noted  bool
	}{{filepath.Join(dataDir, "key-id.secret"), false}, {wrongSecret, true}} {
		stdin = strings.NewReader("sk-process-test\n")
		var idOut, idErr bytes.Buffer
		code := run([]string{"keyid", "--key-id-secret-file", tc.secret, "--log", dataDir}, &idOut, &idErr)
		if noted := strings.Contains(idErr.String(), "has this key id"); code != 0 || noted != tc.noted {
			t.Errorf("keyid --log with %s: exit %d, noted %v: %s", tc.secret, code, noted, idErr.String())
		}
	}
	stdin = os.Stdin
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
	const demoRequests = 7 // chat, streamed chat, streamed completion, embeddings, Responses, Messages, rerank
	if n := strings.Count(out.String(), "audit event:"); n != demoRequests {
		t.Errorf("%d audit events printed, want %d", n, demoRequests)
	}
	if !strings.Contains(out.String(), fmt.Sprintf(": %d inference events received and acknowledged", demoRequests)) {
		t.Errorf("the demo's aggregator did not report %d events:\n%s", demoRequests, out.String())
	}
	if n := strings.Count(out.String(), `"outcome": "ok"`); n != demoRequests {
		t.Errorf("%d ok outcomes, want %d:\n%s", n, demoRequests, out.String())
	}
	// Every API's answer gave its token counts (rerank has no output count).
	if n := strings.Count(out.String(), `"tokens": null`); n != 1 {
		t.Errorf("%d null token counts, want 1 (rerank's output):\n%s", n, out.String())
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
	if code := run([]string{"export", "--data-dir", dataDir}, &exported, io.Discard); code != 0 || strings.Count(exported.String(), `"type":"inference"`) != demoRequests {
		t.Errorf("export after the demo: code %d, %q", code, exported.String())
	}
	// The command the demo suggests verifies its log.
	var report bytes.Buffer
	if code := run([]string{"verify", "--pubkey", filepath.Join(dataDir, "signing.key.pub"), filepath.Join(dataDir, "spool")}, &report, io.Discard); code != 0 {
		t.Errorf("verify after the demo exited %d:\n%s", code, report.String())
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
// times at random moments and restarts it on the same data dir, shipping to
// an independent forward-protocol receiver. Every answer whose end a client
// received (a stream's [DONE], a whole non-streamed body) must have its
// event in the local spool and, after a last run drains, at the receiver:
// the proxy holds the end back until the event is fsynced, and the spool
// ships from the last acknowledged position. Duplicates at the receiver
// (a batch sent again after a kill) carry the same event id. (With
// --durability async the same test loses events: 17 of 302 in one run.)
func TestKill9KeepsEveryCompletedAnswer(t *testing.T) {
	recv := testutil.StartReceiver(t, "127.0.0.1:0", forwardrecv.Config{})
	forward := "tcp://" + recv.Addr()
	_, upstream := startFake(t, fakevllm.Config{InterTokenLatency: time.Millisecond, OutputTokens: 30})
	dataDir := t.TempDir()

	var mu sync.Mutex
	completed := map[string]bool{}
	var seq atomic.Int64
	for round := range 5 {
		p := startServe(t, upstream, nil, "--data-dir", dataDir, "--log-level", "warn", "--forward", forward,
			"--segment-max-bytes", "64KiB")
		listen := p.listen

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
		p.cmd.Process.Signal(syscall.SIGKILL)
		p.cmd.Wait()
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
		if ev.Type == audit.TypeInference {
			recorded[ev.RequestID] = true
		}
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

	// A last run ships what the killed ones left, and drains on SIGTERM.
	last := startServe(t, upstream, nil, "--data-dir", dataDir, "--log-level", "warn", "--forward", forward)
	if m := scrapeMetric(t, last.admin, "auditproxy_events_dropped_total"); m != 0 {
		t.Errorf("auditproxy_events_dropped_total %v", m)
	}
	if err := last.stop(); err != nil {
		t.Fatalf("last run: %v\n%s", err, last.stderr.String())
	}
	eventIDs := map[string]map[string]bool{} // request id -> event ids
	for _, e := range recv.Entries() {
		if e.Record["type"] != audit.TypeInference {
			continue
		}
		rid, _ := e.Record["request_id"].(string)
		eid, _ := e.Record["id"].(string)
		if eventIDs[rid] == nil {
			eventIDs[rid] = map[string]bool{}
		}
		eventIDs[rid][eid] = true
	}
	missing = 0
	for id := range completed {
		if len(eventIDs[id]) == 0 {
			missing++
			if missing <= 5 {
				t.Errorf("answer %s reached its client but its event never reached the aggregator", id)
			}
		}
	}
	for rid, ids := range eventIDs {
		if len(ids) > 1 {
			t.Errorf("request %s arrived as %d different events %v; a resend must carry the same event id", rid, len(ids), ids)
		}
	}
	if missing > 0 {
		t.Errorf("%d of %d completed answers missing at the aggregator", missing, len(completed))
	}
	if len(recorded) != len(eventIDs) {
		t.Errorf("%d requests in the spool, %d at the aggregator", len(recorded), len(eventIDs))
	}

	// The log verifies, from the spool and from what the aggregator
	// decoded out of msgpack (re-encoded as JSON with other key order and
	// number formatting: the leaf hashes are over canonical JSON).
	var shipped bytes.Buffer
	for _, e := range recv.Entries() {
		b, err := json.Marshal(e.Record)
		if err != nil {
			t.Fatal(err)
		}
		shipped.Write(append(b, '\n'))
	}
	shippedFile := filepath.Join(t.TempDir(), "shipped.ndjson")
	os.WriteFile(shippedFile, shipped.Bytes(), 0o600)
	pub := filepath.Join(dataDir, "signing.key.pub")
	for _, input := range []string{filepath.Join(dataDir, "spool"), shippedFile} {
		var report, errOut bytes.Buffer
		if code := run([]string{"verify", "--pubkey", pub, input}, &report, &errOut); code != 0 {
			t.Errorf("verify %s exited %d:\n%s%s", input, code, report.String(), errOut.String())
		}
	}
	t.Logf("%d completed answers; %d events at the aggregator (%d requests)", len(completed), recv.Len(), len(eventIDs))
}

// scrapeMetric returns the value of an unlabelled metric from the admin port.
func scrapeMetric(t *testing.T, admin, name string) float64 {
	t.Helper()
	resp, err := http.Get("http://" + admin + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), name+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatalf("metric %s: %q", name, v)
			}
			return f
		}
	}
	t.Fatalf("metric %s not found", name)
	return 0
}

// TestAggregatorOutageUnderLoad stops the aggregator while requests flow and
// restarts it: the ship lag rises while it is away and returns to 0, the
// spool stays within its bound, and every event arrives.
func TestAggregatorOutageUnderLoad(t *testing.T) {
	_, upstream := startFake(t, fakevllm.Config{OutputTokens: 20})
	recv := testutil.StartReceiver(t, "127.0.0.1:0", forwardrecv.Config{})
	recvAddr := recv.Addr()
	const maxBytes = 4 << 20
	p := startServe(t, upstream, nil, "--data-dir", t.TempDir(), "--log-level", "error", "--forward", "tcp://"+recvAddr,
		"--spool-max-bytes", "4MiB", "--segment-max-bytes", "64KiB", "--drain-timeout", "5s")
	listen, admin := p.listen, p.admin

	var ok atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			client := &http.Client{Timeout: 10 * time.Second}
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				req, _ := http.NewRequest("POST", "http://"+listen+"/v1/chat/completions",
					strings.NewReader(`{"model":"meta-llama/Llama-3.1-8B-Instruct","messages":[{"role":"user","content":"hi"}]}`))
				req.Header.Set("X-Request-Id", fmt.Sprintf("out-%d-%d", w, i))
				resp, err := client.Do(req)
				if err != nil {
					t.Error(err)
					return
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode == 200 {
					ok.Add(1)
				}
				time.Sleep(time.Millisecond)
			}
		}()
	}
	time.Sleep(300 * time.Millisecond)
	recv.Close()
	down := time.Now()
	waitUntil(t, "ship lag to rise", 10*time.Second, func() bool {
		return scrapeMetric(t, admin, "auditproxy_forward_ship_lag_seconds") >= 0.5
	})
	if used := scrapeMetric(t, admin, "auditproxy_spool_bytes"); used > maxBytes+64<<10 {
		t.Errorf("spool at %v bytes, bound %d", used, maxBytes)
	}
	recv2 := testutil.StartReceiver(t, recvAddr, forwardrecv.Config{})
	t.Logf("aggregator down for %v", time.Since(down).Round(time.Millisecond))
	waitUntil(t, "ship lag to recover", 10*time.Second, func() bool {
		return scrapeMetric(t, admin, "auditproxy_forward_ship_lag_seconds") < 0.5
	})
	t.Logf("recovered %v after the restart", time.Since(down).Round(time.Millisecond))
	// Enough answers to mean something, however slow a shared CI machine
	// runs the load.
	waitUntil(t, "100 answered requests", 60*time.Second, func() bool { return ok.Load() >= 100 })
	close(stop)
	wg.Wait()
	if m := scrapeMetric(t, admin, "auditproxy_forward_reconnects_total"); m < 1 {
		t.Errorf("reconnects %v", m)
	}
	if m := scrapeMetric(t, admin, "auditproxy_events_dropped_total"); m != 0 {
		t.Errorf("auditproxy_events_dropped_total %v", m)
	}
	term := time.Now()
	if err := p.stop(); err != nil {
		t.Fatalf("serve: %v\n%s", err, p.stderr.String())
	}
	t.Logf("stopped %v after SIGTERM", time.Since(term).Round(time.Millisecond))
	ids := map[string]bool{}
	for _, e := range append(recv.Entries(), recv2.Entries()...) {
		if rid, ok := e.Record["request_id"].(string); ok {
			ids[rid] = true
		}
	}
	if int64(len(ids)) != ok.Load() || ok.Load() < 100 {
		t.Errorf("%d answered requests, %d distinct events at the aggregator", ok.Load(), len(ids))
	}
	t.Logf("%d requests answered; events at the aggregator: %d before the outage, %d after", ok.Load(), recv.Len(), recv2.Len())
}

// TestFullSpoolAnswers503WithoutUpstreamCall starts on a spool that is
// already at its bound (no aggregator, so nothing may be deleted).
func TestFullSpoolAnswers503WithoutUpstreamCall(t *testing.T) {
	fake, upstream := startFake(t, fakevllm.Config{})
	dataDir := t.TempDir()
	// Fill the spool with one big event from an earlier run.
	var ev bytes.Buffer
	ev.WriteString(`{"v":1,"type":"inference","id":"filler","pad":"`)
	// Random bytes, so that sealing (zstd) cannot shrink it under the bound.
	filler := make([]byte, 3<<19)
	cryptorand.Read(filler)
	ev.WriteString(base64.StdEncoding.EncodeToString(filler))
	ev.WriteString(`"}`)
	frame := binary.LittleEndian.AppendUint32([]byte("apspool\x01"), uint32(ev.Len()))
	frame = binary.LittleEndian.AppendUint32(frame, crc32.Checksum(ev.Bytes(), crc32.MakeTable(crc32.Castagnoli)))
	frame = append(frame, ev.Bytes()...)
	os.MkdirAll(filepath.Join(dataDir, "spool"), 0o700)
	if err := os.WriteFile(filepath.Join(dataDir, "spool", "00000000000000000001.seg"), frame, 0o600); err != nil {
		t.Fatal(err)
	}
	p := startServe(t, upstream, nil, "--data-dir", dataDir, "--log-level", "error", "--spool-max-bytes", "1MiB",
		"--segment-max-bytes", "256KiB")
	listen, admin := p.listen, p.admin
	// Only generation counts: /readyz probes /health and the model poller
	// reads /version and /v1/models on its own schedule.
	before := fake.Stats().PromptTokens
	resp, err := http.Post("http://"+listen+"/v1/chat/completions", "application/json",
		strings.NewReader(`{"model":"meta-llama/Llama-3.1-8B-Instruct","messages":[{"role":"user","content":"hi"}]}`))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 503 || !bytes.Contains(b, []byte(`"code":"audit_log_unavailable"`)) {
		t.Errorf("full spool: %d %s", resp.StatusCode, b)
	}
	if n := fake.Stats().PromptTokens - before; n != 0 {
		t.Errorf("the upstream answered %d prompt tokens with a full spool", n)
	}
	if m := scrapeMetric(t, admin, "auditproxy_spool_full_rejections_total"); m != 1 {
		t.Errorf("rejections metric %v", m)
	}
	if m := scrapeMetric(t, admin, "auditproxy_events_dropped_total"); m != 0 {
		t.Errorf("dropped %v", m)
	}
}

func waitUntil(t *testing.T, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestForwardOverTLSWithPrivateCA: with the aggregator's CA in
// SSL_CERT_FILE (as the README says) events arrive over TLS; without it the
// certificate is refused and nothing is sent.
func TestForwardOverTLSWithPrivateCA(t *testing.T) {
	_, upstream := startFake(t, fakevllm.Config{})
	serverTLS, _, err := forwardrecv.SelfSignedTLS()
	if err != nil {
		t.Fatal(err)
	}
	caFile := filepath.Join(t.TempDir(), "ca.pem")
	caPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: serverTLS.Certificates[0].Leaf.Raw})
	if err := os.WriteFile(caFile, caPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	recv := testutil.StartReceiver(t, "127.0.0.1:0", forwardrecv.Config{TLS: serverTLS})
	for _, tc := range []struct {
		name   string
		env    []string
		arrive bool
	}{
		{"CA in SSL_CERT_FILE", []string{"SSL_CERT_FILE=" + caFile}, true},
		{"system roots only", nil, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := recv.Len()
			p := startServe(t, upstream, tc.env, "--data-dir", t.TempDir(), "--log-level", "warn",
				"--forward", "tls://"+recv.Addr(), "--drain-timeout", "1s")
			stderr := p.stderr
			resp, err := http.Post("http://"+p.listen+"/v1/chat/completions", "application/json",
				strings.NewReader(`{"model":"meta-llama/Llama-3.1-8B-Instruct","messages":[{"role":"user","content":"hi"}]}`))
			if err != nil {
				t.Fatal(err)
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if tc.arrive {
				if !recv.WaitFor(before+1, 5*time.Second) {
					t.Fatalf("no event arrived over TLS\n%s", stderr.String())
				}
				return
			}
			waitUntil(t, "a refused certificate in the log", 5*time.Second, func() bool {
				return strings.Contains(stderr.String(), "certificate")
			})
			if recv.Len() != before {
				t.Error("an event was sent to an aggregator whose certificate is not trusted")
			}
		})
	}
}

// startFake starts a fake vLLM for the rest of the test and returns it and
// its URL.
func startFake(t *testing.T, cfg fakevllm.Config) (*fakevllm.Server, string) {
	t.Helper()
	fake := fakevllm.New(cfg)
	upstream, err := fake.Start("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { fake.Close() })
	return fake, upstream
}

// served is a running `auditproxy serve`.
type served struct {
	cmd           *exec.Cmd
	listen, admin string
	stderr        *testutil.LogBuffer
}

// startServe runs `auditproxy serve` in front of upstream on fresh loopback
// ports, with args added to its flags and env to its environment, and waits
// until it is ready. It is killed at the end of the test if still running.
func startServe(t *testing.T, upstream string, env []string, args ...string) *served {
	t.Helper()
	s := &served{listen: freeAddr(t), admin: freeAddr(t), stderr: &testutil.LogBuffer{}}
	s.cmd = exec.Command(buildBinary(t), append([]string{"serve", "--upstream", upstream,
		"--listen", s.listen, "--admin-listen", s.admin}, args...)...)
	s.cmd.Env = append(os.Environ(), env...)
	s.cmd.Stderr = s.stderr
	if err := s.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if s.cmd.ProcessState == nil {
			s.cmd.Process.Kill()
			s.cmd.Wait()
		}
	})
	waitReady(t, "http://"+s.admin+"/readyz", s.stderr)
	return s
}

// stop sends SIGTERM and waits for the exit.
func (s *served) stop() error {
	s.cmd.Process.Signal(syscall.SIGTERM)
	return s.cmd.Wait()
}

// eventTypes returns the "type" of each exported event.
func eventTypes(t *testing.T, ndjson []byte) []string {
	t.Helper()
	var types []string
	for _, line := range bytes.Split(bytes.TrimSpace(ndjson), []byte("\n")) {
		var ev struct{ Type string }
		if err := json.Unmarshal(line, &ev); err != nil {
			t.Fatalf("exported line %q: %v", line, err)
		}
		types = append(types, ev.Type)
	}
	return types
}

// TestVerifyProveAndVerifyProof: the auditor's commands on a real sidecar's
// log: verify passes on the spool, a proof for one request verifies with
// only the verifier key, and a changed proof does not.
func TestVerifyProveAndVerifyProof(t *testing.T) {
	_, upstream := startFake(t, fakevllm.Config{})
	dataDir, cpDir := t.TempDir(), t.TempDir()
	var postedMu sync.Mutex
	var posted [][]byte
	cpServer := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		postedMu.Lock()
		posted = append(posted, b)
		postedMu.Unlock()
	}))
	defer cpServer.Close()
	p := startServe(t, upstream, nil, "--data-dir", dataDir, "--log-level", "warn", "--checkpoint-every", "3",
		"--checkpoint-dir", cpDir, "--checkpoint-url", cpServer.URL+"/checkpoints")
	for i := range 10 {
		req, _ := http.NewRequest("POST", "http://"+p.listen+"/v1/chat/completions",
			strings.NewReader(`{"model":"meta-llama/Llama-3.1-8B-Instruct","messages":[{"role":"user","content":"hi"}]}`))
		req.Header.Set("X-Request-Id", fmt.Sprintf("prove-me-%d", i))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	if err := p.stop(); err != nil {
		t.Fatal(err)
	}
	pub := filepath.Join(dataDir, "signing.key.pub")
	spool := filepath.Join(dataDir, "spool")
	// Both second destinations hold every checkpoint: 10 events (and
	// log_started) with one every 3, and the final one.
	dirCopies, _ := os.ReadFile(filepath.Join(cpDir, "checkpoints.ndjson"))
	postedMu.Lock()
	nPosted := len(posted)
	postedMu.Unlock()
	if n := bytes.Count(dirCopies, []byte("\n")); n < 4 || n != nPosted {
		t.Errorf("%d checkpoints in --checkpoint-dir, %d posted to --checkpoint-url", n, nPosted)
	}

	var out, errOut bytes.Buffer
	if code := run([]string{"verify", "--pubkey", pub, spool}, &out, &errOut); code != 0 || !strings.Contains(out.String(), "verified") {
		t.Fatalf("verify: %d\n%s%s", code, out.String(), errOut.String())
	}
	out.Reset()
	if code := run([]string{"verify", spool}, &out, &errOut); code != 1 || !regexp.MustCompile(`checkpoints signed by no key given: signed by key \S+\+[0-9a-f]{8}; ask the operator for its verifier key`).Match(out.Bytes()) {
		t.Errorf("verify without a key: %d\n%s", code, out.String())
	}
	verifyAggregatorCopy(t, dataDir, pub)
	verifyUncommittedCopy(t, dataDir, pub)

	out.Reset()
	if code := run([]string{"prove", "--request-id", "prove-me-4", spool}, &out, &errOut); code != 0 {
		t.Fatalf("prove: %d %s", code, errOut.String())
	}
	proofFile := filepath.Join(t.TempDir(), "proof.json")
	os.WriteFile(proofFile, out.Bytes(), 0o600)
	var proof auditlog.InclusionProof
	if err := json.Unmarshal(out.Bytes(), &proof); err != nil || !bytes.Contains(proof.Event, []byte(`"request_id":"prove-me-4"`)) {
		t.Fatalf("proof %s: %v", out.String(), err)
	}
	out.Reset()
	if code := run([]string{"verify-proof", "--pubkey", pub, proofFile}, &out, &errOut); code != 0 || !strings.Contains(out.String(), "verified: event") {
		t.Fatalf("verify-proof: %d %s %s", code, out.String(), errOut.String())
	}
	for name, change := range map[string][2]string{
		"event changed":      {`"bytes":`, `"bytes":1`},
		"leaf index changed": {fmt.Sprintf(`"leaf_index":%d`, proof.LeafIndex), fmt.Sprintf(`"leaf_index":%d`, proof.LeafIndex+1)},
	} {
		bad := filepath.Join(t.TempDir(), "bad.json")
		b, _ := os.ReadFile(proofFile)
		os.WriteFile(bad, bytes.Replace(b, []byte(change[0]), []byte(change[1]), 1), 0o600)
		errOut.Reset()
		if code := run([]string{"verify-proof", "--pubkey", pub, bad}, io.Discard, &errOut); code != 1 {
			t.Errorf("%s: verify-proof exited %d: %s", name, code, errOut.String())
		}
	}
	if code := run([]string{"prove", "--request-id", "nobody", spool}, io.Discard, &errOut); code != 1 || !strings.Contains(errOut.String(), `no event with request_id "nobody"`) {
		t.Errorf("prove of an unknown request: %d %s", code, errOut.String())
	}

	// The auditor kept the first checkpoint; the log today extends it.
	oldCP := filepath.Join(t.TempDir(), "old.checkpoint")
	first, _, _ := bytes.Cut(dirCopies, []byte("\n"))
	os.WriteFile(oldCP, first, 0o600)
	out.Reset()
	if code := run([]string{"prove", "--old-checkpoint", oldCP, spool}, &out, &errOut); code != 0 {
		t.Fatalf("prove --old-checkpoint: %d %s", code, errOut.String())
	}
	consistency := filepath.Join(t.TempDir(), "consistency.json")
	os.WriteFile(consistency, out.Bytes(), 0o600)
	out.Reset()
	if code := run([]string{"verify-proof", "--pubkey", pub, consistency}, &out, &errOut); code != 0 ||
		!regexp.MustCompile(`verified: log \S+ at size \d+ extends its checkpoint at size \d+`).Match(out.Bytes()) {
		t.Errorf("verify-proof of a consistency proof: %d %s %s", code, out.String(), errOut.String())
	}
	errOut.Reset()
	if code := run([]string{"prove", "--old-checkpoint", oldCP, "--request-id", "x", spool}, io.Discard, &errOut); code != 2 {
		t.Errorf("prove --old-checkpoint with --request-id: %d %s", code, errOut.String())
	}
}

// TestCapturedPayloadIsReconstructed: with payload capture on, the spool
// holds the bodies only encrypted, and show decrypts them with the auditor's
// identity, checks them against the event's hashes and proves the event is
// in the signed log; another identity cannot.
func TestCapturedPayloadIsReconstructed(t *testing.T) {
	_, upstream := startFake(t, fakevllm.Config{})
	auditor, err := age.GenerateX25519Identity()
	if err != nil {
		t.Fatal(err)
	}
	stranger, _ := age.GenerateX25519Identity()
	dir := t.TempDir()
	idFile, strangerFile := filepath.Join(dir, "auditor.key"), filepath.Join(dir, "stranger.key")
	os.WriteFile(idFile, []byte(auditor.String()+"\n"), 0o600)
	os.WriteFile(strangerFile, []byte(stranger.String()+"\n"), 0o600)
	dataDir := filepath.Join(dir, "data")
	p := startServe(t, upstream, nil, "--data-dir", dataDir, "--log-level", "warn",
		"--capture-payloads", "--payload-recipient", auditor.Recipient().String())
	const prompt = "which model answered complaint 4711"
	for i, stream := range []bool{false, true} {
		req, _ := http.NewRequest("POST", "http://"+p.listen+"/v1/chat/completions", strings.NewReader(fmt.Sprintf(
			`{"model":"meta-llama/Llama-3.1-8B-Instruct","messages":[{"role":"user","content":%q}],"stream":%v}`, prompt, stream)))
		req.Header.Set("X-Request-Id", fmt.Sprintf("complaint-%d", i))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	if err := p.stop(); err != nil {
		t.Fatal(err)
	}
	spool := filepath.Join(dataDir, "spool")
	segs, _ := filepath.Glob(filepath.Join(spool, "*.seg"))
	for _, seg := range segs {
		if b, _ := os.ReadFile(seg); bytes.Contains(b, []byte(prompt)) {
			t.Fatalf("the prompt is in %s in clear", seg)
		}
	}
	// proxy_started names the recipients, so an auditor knows which
	// identity decrypts the run's captures.
	var started bytes.Buffer
	run([]string{"query", "--type", "proxy_started", spool}, &started, io.Discard)
	if !strings.Contains(started.String(), `"payload_recipients":["`+auditor.Recipient().String()+`"]`) {
		t.Errorf("proxy_started does not name the payload recipient:\n%s", started.String())
	}
	pub := filepath.Join(dataDir, "signing.key.pub")
	for i := range 2 {
		var out, errOut bytes.Buffer
		code := run([]string{"show", "--request-id", fmt.Sprintf("complaint-%d", i), "--identity", idFile, "--pubkey", pub, spool}, &out, &errOut)
		if code != 0 || !strings.Contains(out.String(), prompt) || strings.Count(out.String(), "matches the event") != 2 ||
			!strings.Contains(out.String(), "in the signed log: event") || strings.Contains(out.String(), "NOT YET COMMITTED") {
			t.Errorf("show complaint-%d: %d\n%s%s", i, code, out.String(), errOut.String())
		}
	}
	// A copy without the checkpoints after the event: show says nothing
	// signed vouches for it.
	var exported bytes.Buffer
	if code := run([]string{"export", "--data-dir", dataDir}, &exported, io.Discard); code != 0 {
		t.Fatalf("export exited %d", code)
	}
	var cut bytes.Buffer
	for line := range bytes.Lines(exported.Bytes()) {
		if !bytes.Contains(line, []byte(`"type":"checkpoint"`)) {
			cut.Write(line)
		}
	}
	cutFile := filepath.Join(dir, "cut.ndjson")
	os.WriteFile(cutFile, cut.Bytes(), 0o600)
	var out bytes.Buffer
	if code := run([]string{"show", "--request-id", "complaint-1", "--identity", idFile, cutFile}, &out, io.Discard); code != 0 ||
		!strings.Contains(out.String(), "NOT YET COMMITTED: no checkpoint of its log was read") {
		t.Errorf("show of an event no checkpoint commits to: %d\n%s", code, out.String())
	}
	var errOut bytes.Buffer
	if code := run([]string{"show", "--request-id", "complaint-0", "--identity", strangerFile, spool}, io.Discard, &errOut); code != 1 ||
		!strings.Contains(errOut.String(), "decrypt payload") {
		t.Errorf("show with a stranger's identity: %d %s", code, errOut.String())
	}
}

// TestEventsCarryTheModelChecksum: the weights behind the served model
// (found through /v1/models' root) are hashed, recorded as model_changed,
// and every event after carries the checksum `auditproxy checksum` prints.
func TestEventsCarryTheModelChecksum(t *testing.T) {
	modelDir := t.TempDir()
	os.WriteFile(filepath.Join(modelDir, "config.json"), []byte(`{"model_type":"llama"}`), 0o644)
	os.WriteFile(filepath.Join(modelDir, "model.safetensors"), bytes.Repeat([]byte("w"), 1<<20), 0o644)
	var sum bytes.Buffer
	if code := run([]string{"checksum", modelDir}, &sum, io.Discard); code != 0 {
		t.Fatalf("checksum exited %d", code)
	}
	lines := strings.Split(strings.TrimSpace(sum.String()), "\n")
	want := strings.TrimPrefix(lines[len(lines)-1], "model checksum: ")

	_, upstream := startFake(t, fakevllm.Config{Root: modelDir})
	dataDir := t.TempDir()
	p := startServe(t, upstream, nil, "--data-dir", dataDir, "--log-level", "warn")
	waitUntil(t, "model_changed in the log", 10*time.Second, func() bool {
		var out bytes.Buffer
		run([]string{"export", "--data-dir", dataDir}, &out, io.Discard)
		return bytes.Contains(out.Bytes(), []byte(`"type":"model_changed"`))
	})
	resp, err := http.Post("http://"+p.listen+"/v1/chat/completions", "application/json",
		strings.NewReader(`{"model":"meta-llama/Llama-3.1-8B-Instruct","messages":[{"role":"user","content":"hi"}]}`))
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if err := p.stop(); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	run([]string{"export", "--data-dir", dataDir}, &out, io.Discard)
	inferences := 0
	for _, line := range bytes.Split(bytes.TrimSpace(out.Bytes()), []byte("\n")) {
		var ev audit.Event
		json.Unmarshal(line, &ev)
		if ev.Type == audit.TypeInference {
			inferences++
			if ev.Model.Checksum != want {
				t.Errorf("inference event's model checksum %q, `auditproxy checksum` says %q", ev.Model.Checksum, want)
			}
		}
	}
	if inferences != 1 {
		t.Errorf("%d inference events", inferences)
	}
	if !bytes.Contains(out.Bytes(), []byte(`"after":"`+want+`"`)) {
		t.Errorf("no model_changed event with the checksum:\n%s", out.String())
	}
}

// TestAnnotateRecordsAnOperatorsChange: annotate reaches the admin API with
// the token file and its event lands in the log; a wrong token does not.
func TestAnnotateRecordsAnOperatorsChange(t *testing.T) {
	_, upstream := startFake(t, fakevllm.Config{})
	dataDir := t.TempDir()
	p := startServe(t, upstream, nil, "--data-dir", dataDir, "--log-level", "warn")
	tokenFile := filepath.Join(dataDir, "admin.token")
	if fi, err := os.Stat(tokenFile); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("admin token file: %v %v", fi, err)
	}
	args := []string{"annotate", "--admin", "http://" + p.admin, "--token-file", tokenFile, "--type", "model_rollout",
		"--actor", "alice", "--approver", "bob", "--ticket", "CHG-1234", "--justification", "quarterly model refresh"}
	var out, errOut bytes.Buffer
	if code := run(args, &out, &errOut); code != 0 || !strings.Contains(out.String(), "recorded annotation event") {
		t.Fatalf("annotate: %d %s %s", code, out.String(), errOut.String())
	}
	wrong := filepath.Join(t.TempDir(), "wrong.token")
	os.WriteFile(wrong, []byte(strings.Repeat("0", 64)), 0o600)
	errOut.Reset()
	badArgs := append([]string(nil), args...)
	badArgs[4] = wrong
	if code := run(badArgs, io.Discard, &errOut); code != 1 || !strings.Contains(errOut.String(), "401") {
		t.Errorf("annotate with a wrong token: %d %s", code, errOut.String())
	}
	if code := run([]string{"annotate", "--actor", "alice"}, io.Discard, &errOut); code != 2 {
		t.Errorf("annotate without type and justification exited %d", code)
	}
	if err := p.stop(); err != nil {
		t.Fatal(err)
	}
	var exported bytes.Buffer
	run([]string{"export", "--data-dir", dataDir}, &exported, io.Discard)
	if n := bytes.Count(exported.Bytes(), []byte(`"type":"annotation","v":1}`)); n != 1 ||
		!bytes.Contains(exported.Bytes(), []byte(`"details":{"actor":"alice","approver":"bob","justification":"quarterly model refresh","ticket":"CHG-1234","type":"model_rollout"}`)) {
		t.Errorf("%d annotation events:\n%s", n, exported.String())
	}
}

// TestRequireGPUWithoutNVML: on a machine without NVML, --require-gpu is a
// startup error that says why; without it the proxy starts (and its events
// say "gpu": null, see TestServeProcess).
func TestRequireGPUWithoutNVML(t *testing.T) {
	if _, err := exec.LookPath("nvidia-smi"); err == nil {
		t.Skip("this machine has an NVIDIA driver")
	}
	_, upstream := startFake(t, fakevllm.Config{})
	var errOut bytes.Buffer
	code := run([]string{"serve", "--upstream", upstream, "--listen", "127.0.0.1:0", "--admin-listen", "",
		"--data-dir", t.TempDir(), "--require-gpu"}, io.Discard, &errOut)
	if code != 1 || !strings.Contains(errOut.String(), "--require-gpu: gpu: NVML not available") {
		t.Errorf("serve --require-gpu without NVML: %d %q", code, errOut.String())
	}
}

// verifyAggregatorCopy: events as an aggregator stores them (re-encoded,
// members reordered, "@timestamp" and "tag" added) verify only with those
// members named in --ignore-member, which the report says; a member the
// sidecar writes cannot be named.
func verifyAggregatorCopy(t *testing.T, dataDir, pub string) {
	t.Helper()
	var exported, errOut bytes.Buffer
	if code := run([]string{"export", "--data-dir", dataDir}, &exported, &errOut); code != 0 {
		t.Fatalf("export: %d %s", code, errOut.String())
	}
	var stored bytes.Buffer
	for line := range bytes.Lines(exported.Bytes()) {
		var m map[string]any
		if err := json.Unmarshal(line, &m); err != nil {
			t.Fatal(err)
		}
		m["@timestamp"], m["tag"] = "2026-12-05T10:00:00.000Z", "auditproxy.inference"
		b, _ := json.Marshal(m) // members sorted by name: reordered
		stored.Write(append(b, '\n'))
	}
	copyFile := filepath.Join(t.TempDir(), "opensearch.ndjson")
	os.WriteFile(copyFile, stored.Bytes(), 0o600)
	var out bytes.Buffer
	if code := run([]string{"verify", "--pubkey", pub, copyFile}, &out, io.Discard); code != 1 {
		t.Errorf("verify of the aggregator's copy without --ignore-member: %d\n%s", code, out.String())
	}
	out.Reset()
	n := bytes.Count(stored.Bytes(), []byte("\n"))
	if code := run([]string{"verify", "--pubkey", pub, "--ignore-member", "@timestamp,tag", copyFile}, &out, &errOut); code != 0 ||
		!strings.Contains(out.String(), fmt.Sprintf("@timestamp in %d events, tag in %d events", n, n)) {
		t.Errorf("verify --ignore-member @timestamp,tag: %d\n%s%s", code, out.String(), errOut.String())
	}
	errOut.Reset()
	if code := run([]string{"verify", "--pubkey", pub, "--ignore-member", "time", copyFile}, io.Discard, &errOut); code != 2 ||
		!strings.Contains(errOut.String(), `"time" is a member the sidecar writes`) {
		t.Errorf("verify --ignore-member time: %d %s", code, errOut.String())
	}
}

// verifyUncommittedCopy: a copy cut before the final checkpoint verifies
// and names the events after its newest checkpoint as uncommitted;
// --require-committed fails on them.
func verifyUncommittedCopy(t *testing.T, dataDir, pub string) {
	t.Helper()
	var exported bytes.Buffer
	if code := run([]string{"export", "--data-dir", dataDir}, &exported, io.Discard); code != 0 {
		t.Fatalf("export exited %d", code)
	}
	lines := bytes.SplitAfter(bytes.TrimSpace(exported.Bytes()), []byte("\n"))
	if !bytes.Contains(lines[len(lines)-1], []byte(`"final":true`)) {
		t.Fatalf("the last event is not the final checkpoint: %s", lines[len(lines)-1])
	}
	cut := filepath.Join(t.TempDir(), "cut.ndjson")
	os.WriteFile(cut, bytes.Join(lines[:len(lines)-1], nil), 0o600)
	var out bytes.Buffer
	if code := run([]string{"verify", "--pubkey", pub, cut}, &out, io.Discard); code != 0 ||
		!regexp.MustCompile(`uncommitted: [1-9]\d* events after the newest checkpoint \(size \d+\), seq \d+\.\.\d+`).Match(out.Bytes()) {
		t.Errorf("verify of a copy cut before its final checkpoint: %d\n%s", code, out.String())
	}
	out.Reset()
	if code := run([]string{"verify", "--pubkey", pub, "--require-committed", cut}, &out, io.Discard); code != 1 ||
		!strings.Contains(out.String(), "are not committed to by any checkpoint (--require-committed)") {
		t.Errorf("verify --require-committed: %d\n%s", code, out.String())
	}
}

// TestServeWithOmniwitness: a sidecar submits its checkpoints to an
// independent C2SP tlog-witness (transparency-dev's omniwitness, its own
// process), and verify checks the cosignatures it kept against the log.
func TestServeWithOmniwitness(t *testing.T) {
	_, upstream := startFake(t, fakevllm.Config{})
	dataDir := t.TempDir()
	request := func(p *served, id string) {
		req, _ := http.NewRequest("POST", "http://"+p.listen+"/v1/chat/completions",
			strings.NewReader(`{"model":"meta-llama/Llama-3.1-8B-Instruct","messages":[{"role":"user","content":"hi"}]}`))
		req.Header.Set("Content-Type", "application/json")
		if id != "" {
			req.Header.Set("X-Request-Id", id)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	args := []string{"--data-dir", dataDir, "--log-level", "warn", "--log-name", "witnessed-node", "--checkpoint-every", "3"}
	// The first start makes the log, whose origin the witness must know.
	p := startServe(t, upstream, nil, args...)
	request(p, "")
	if err := p.stop(); err != nil {
		t.Fatal(err)
	}
	var exported bytes.Buffer
	run([]string{"export", "--data-dir", dataDir}, &exported, io.Discard)
	var first struct {
		Log struct{ Origin string } `json:"log"`
	}
	line, _, _ := bytes.Cut(exported.Bytes(), []byte("\n"))
	if err := json.Unmarshal(line, &first); err != nil || first.Log.Origin == "" {
		t.Fatalf("no origin in %s: %v", line, err)
	}
	pub := filepath.Join(dataDir, "signing.key.pub")
	logVKey, _ := os.ReadFile(pub)
	url, _, witnessVKey := testutil.Omniwitness(t, first.Log.Origin, strings.TrimSpace(string(logVKey)))

	p = startServe(t, upstream, nil, append(args, "--witness-url", url)...)
	for range 7 {
		request(p, "")
	}
	request(p, "bundle-me")
	for range 3 {
		request(p, "")
	}
	if err := p.stop(); err != nil {
		t.Fatal(err)
	}
	witnessKey := filepath.Join(t.TempDir(), "witness.pub")
	os.WriteFile(witnessKey, []byte(witnessVKey+"\n"), 0o644)
	cosignatures := filepath.Join(dataDir, "cosignatures.ndjson")
	var out, errOut bytes.Buffer
	if code := run([]string{"verify", "--pubkey", pub, "--witness-key", witnessKey, "--cosignatures", cosignatures, filepath.Join(dataDir, "spool")}, &out, &errOut); code != 0 ||
		!regexp.MustCompile(`cosigned: [1-9]\d* checkpoints by omniwitness.test, the newest at size \d+`).Match(out.Bytes()) {
		t.Fatalf("verify with the witness's cosignatures: %d\n%s%s", code, out.String(), errOut.String())
	}
	// The final checkpoint, whose note has the extension line "final", is
	// cosigned too: the witness takes such a note.
	newest := regexp.MustCompile(`newest: size (\d+) at \S+ \(final`).FindSubmatch(out.Bytes())
	if newest == nil || !strings.Contains(out.String(), "the newest at size "+string(newest[1])+"\n") {
		t.Errorf("the final checkpoint is not the newest cosigned:\n%s", out.String())
	}
	// The offline bundle: the event, its proof and the cosigned checkpoint
	// in one C2SP tlog-proof a third party checks with the two keys.
	var bundle bytes.Buffer
	errOut.Reset()
	if code := run([]string{"prove", "--request-id", "bundle-me", "--format", "tlog-proof", "--cosignatures", cosignatures, filepath.Join(dataDir, "spool")}, &bundle, &errOut); code != 0 ||
		!bytes.HasPrefix(bundle.Bytes(), []byte("c2sp.org/tlog-proof@v1\nextra ")) {
		t.Fatalf("prove --format tlog-proof: %d %s\n%s", code, errOut.String(), bundle.String())
	}
	proofFile := filepath.Join(t.TempDir(), "bundle-me.tlog-proof")
	os.WriteFile(proofFile, bundle.Bytes(), 0o600)
	out.Reset()
	if code := run([]string{"verify-proof", "--pubkey", pub, "--witness-key", witnessKey, proofFile}, &out, &errOut); code != 0 ||
		!regexp.MustCompile(`verified: event \d+ of log witnessed-node/\S+ is in the \d+ events its signed checkpoint commits to, cosigned by omniwitness.test`).Match(out.Bytes()) {
		t.Errorf("verify-proof of the tlog-proof: %d %s %s", code, out.String(), errOut.String())
	}
	_, strangerVKey, _ := note.GenerateKey(cryptorand.Reader, "stranger.example")
	errOut.Reset()
	if code := run([]string{"verify-proof", "--pubkey", pub, "--witness-key", strangerVKey, proofFile}, io.Discard, &errOut); code != 1 ||
		!strings.Contains(errOut.String(), "not cosigned by stranger.example") {
		t.Errorf("verify-proof requiring another witness: %d %s", code, errOut.String())
	}
	out.Reset()
	if code := run([]string{"verify", "--pubkey", pub, "--witness-key", strangerVKey, "--cosignatures", cosignatures, filepath.Join(dataDir, "spool")}, &out, io.Discard); code != 1 ||
		!strings.Contains(out.String(), "cosigned by no witness key given (") {
		t.Errorf("verify with another witness's key: %d\n%s", code, out.String())
	}
	skey, _, _ := note.GenerateKey(cryptorand.Reader, "oops")
	errOut.Reset()
	if code := run([]string{"verify", "--pubkey", pub, "--witness-key", skey, "--cosignatures", cosignatures, dataDir}, io.Discard, &errOut); code != 2 ||
		!strings.Contains(errOut.String(), "is a private signing key") || strings.Contains(errOut.String(), skey) {
		t.Errorf("verify with a private key as the witness key: %d %s", code, errOut.String())
	}
}
