package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/auditproxy/auditproxy/auditlog"
	"github.com/auditproxy/auditproxy/internal/fakevllm"
	"github.com/auditproxy/auditproxy/internal/testutil"
	"github.com/auditproxy/auditproxy/proxy"
)

// TestServeThatCannotBindRecordsNothing: a serve whose port is taken fails
// with one line saying so, before it creates the data dir or records a
// proxy_started event and a checkpoint for a proxy that never served.
func TestServeThatCannotBindRecordsNothing(t *testing.T) {
	_, upstream := startFake(t, fakevllm.Config{})
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	for _, tc := range []struct{ name, listen, admin string }{
		{"client port taken", taken.Addr().String(), freeAddr(t)},
		{"admin port taken", freeAddr(t), taken.Addr().String()},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dataDir := filepath.Join(t.TempDir(), "data")
			cmd := exec.Command(buildBinary(t), "serve", "--upstream", upstream, "--listen", tc.listen,
				"--admin-listen", tc.admin, "--data-dir", dataDir)
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			err := cmd.Run()
			if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 {
				t.Fatalf("exit %v, want status 1; stderr:\n%s", err, stderr.String())
			}
			lines := strings.Split(strings.TrimSpace(stderr.String()), "\n")
			if len(lines) != 1 || !strings.Contains(lines[0], taken.Addr().String()) || !strings.Contains(lines[0], "address already in use") {
				t.Errorf("stderr %q: want one line naming the address in use", stderr.String())
			}
			if _, err := os.Stat(dataDir); !os.IsNotExist(err) {
				t.Errorf("the data dir was created (%v): a serve that never served left records", err)
			}
		})
	}
}

// TestServeSurvivesRunningOutOfDescriptors runs serve with a descriptor limit
// of 1024 and opens 1,100 idle connections to it: the process must keep
// running, answer connections over its cap with 503 too_many_connections
// rather than exit on EMFILE, and serve again once connections close.
func TestServeSurvivesRunningOutOfDescriptors(t *testing.T) {
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil || rl.Cur < 1400 {
		t.Skipf("this test opens 1,100 connections and needs a descriptor limit of 1,400 (have %d)", rl.Cur)
	}
	_, upstream := startFake(t, fakevllm.Config{})
	bin := buildBinary(t)
	listen, admin := freeAddr(t), freeAddr(t)
	// "ulimit -n" sets the hard limit too, so Go cannot raise it.
	cmd := exec.Command("/bin/sh", "-c", `ulimit -n 1024 && exec "$0" "$@"`, bin, "serve", "--upstream", upstream,
		"--listen", listen, "--admin-listen", admin, "--data-dir", filepath.Join(t.TempDir(), "data"))
	stderr := &testutil.LogBuffer{}
	cmd.Stderr = stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	defer func() {
		cmd.Process.Kill()
		<-exited
	}()
	waitReady(t, "http://"+admin+"/readyz", stderr)
	waitUntil(t, "the start line with the cap for 1024 descriptors (448)", 10*time.Second, func() bool {
		return strings.Contains(stderr.String(), `"max_client_conns":448`)
	})

	var idle []net.Conn
	defer func() {
		for _, c := range idle {
			c.Close()
		}
	}()
	for range 1100 {
		c, err := net.DialTimeout("tcp", listen, 5*time.Second)
		if err != nil {
			t.Fatalf("dial after %d connections: %v", len(idle), err)
		}
		idle = append(idle, c)
	}
	body := `{"model":"meta-llama/Llama-3.1-8B-Instruct","prompt":"hi"}`
	request := "POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: " + strconv.Itoa(len(body)) + "\r\n\r\n" + body
	ask := func() int {
		c, err := net.DialTimeout("tcp", listen, 5*time.Second)
		if err != nil {
			return -1
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(5 * time.Second))
		c.Write([]byte(request))
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			return 0
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if code := ask(); code != 503 {
		t.Errorf("with 1,100 connections open, a request got %d, want 503 too_many_connections", code)
	}
	select {
	case err := <-exited:
		t.Fatalf("serve exited with 1,100 connections open: %v\n%s", err, stderr)
	default:
	}
	for _, c := range idle {
		c.Close()
	}
	idle = nil
	waitUntil(t, "a request served after the connections closed", 10*time.Second, func() bool { return ask() == 200 })
	if n := scrapeMetric(t, admin, "auditproxy_client_connections_rejected_total"); n < 1 {
		t.Errorf("auditproxy_client_connections_rejected_total = %v", n)
	}
}

// TestProveRefusesToChooseAmongEventsOfOneRequestID: a client may send the
// same X-Request-Id twice. prove and show then name the events and ask for
// --event-id instead of picking one; the same event read from two files
// (the spool and an export of it) is one event.
func TestProveRefusesToChooseAmongEventsOfOneRequestID(t *testing.T) {
	_, upstream := startFake(t, fakevllm.Config{})
	dataDir := t.TempDir()
	p := startServe(t, upstream, nil, "--data-dir", dataDir, "--log-level", "warn", "--checkpoint-every", "2")
	for _, id := range []string{"dup", "dup", "single"} {
		req, _ := http.NewRequest("POST", "http://"+p.listen+"/v1/completions",
			strings.NewReader(`{"model":"meta-llama/Llama-3.1-8B-Instruct","prompt":"hi"}`))
		req.Header.Set("X-Request-Id", id)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	if err := p.stop(); err != nil {
		t.Fatal(err)
	}
	spool := filepath.Join(dataDir, "spool")
	export := filepath.Join(t.TempDir(), "export.ndjson")
	var exported bytes.Buffer
	if code := run([]string{"export", "--data-dir", dataDir}, &exported, io.Discard); code != 0 {
		t.Fatal("export failed")
	}
	os.WriteFile(export, exported.Bytes(), 0o600)

	var out, errOut bytes.Buffer
	code := run([]string{"prove", "--request-id", "dup", spool}, &out, &errOut)
	if code != 2 || !strings.Contains(errOut.String(), `2 events have request_id "dup"`) || !strings.Contains(errOut.String(), "--event-id") {
		t.Fatalf("prove of a request id sent twice: exit %d, stderr %q", code, errOut.String())
	}
	var ids []string
	for _, line := range bytes.Split(exported.Bytes(), []byte("\n")) {
		var ev struct {
			ID        string `json:"id"`
			RequestID string `json:"request_id"`
		}
		if json.Unmarshal(line, &ev) == nil && ev.RequestID == "dup" {
			ids = append(ids, ev.ID)
		}
	}
	if len(ids) != 2 || !strings.Contains(errOut.String(), ids[0]) || !strings.Contains(errOut.String(), ids[1]) {
		t.Fatalf("the message does not name both events %v: %q", ids, errOut.String())
	}
	out.Reset()
	if code := run([]string{"prove", "--request-id", "dup", "--event-id", ids[1], spool}, &out, &errOut); code != 0 {
		t.Fatalf("prove --event-id: %d %s", code, errOut.String())
	}
	var proof auditlog.InclusionProof
	if err := json.Unmarshal(out.Bytes(), &proof); err != nil || !bytes.Contains(proof.Event, []byte(ids[1])) {
		t.Fatalf("proof %s: %v", out.String(), err)
	}
	out.Reset()
	errOut.Reset()
	if code := run([]string{"prove", "--request-id", "single", spool, export}, &out, &errOut); code != 0 {
		t.Errorf("the same event in the spool and an export of it: exit %d %s", code, errOut.String())
	}
}

// TestServeRaisesTheDescriptorLimit: started with a soft descriptor limit
// of 512 under a higher hard limit, serve runs with the hard limit (the Go
// runtime raises it) and sizes its connection cap from it.
func TestServeRaisesTheDescriptorLimit(t *testing.T) {
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil || rl.Max <= 1024 {
		t.Skipf("needs a hard descriptor limit above 1024 (have %d)", rl.Max)
	}
	_, upstream := startFake(t, fakevllm.Config{})
	listen, admin := freeAddr(t), freeAddr(t)
	cmd := exec.Command("/bin/sh", "-c", `ulimit -S -n 512 && exec "$0" "$@"`, buildBinary(t), "serve", "--upstream", upstream,
		"--listen", listen, "--admin-listen", admin, "--data-dir", filepath.Join(t.TempDir(), "data"))
	stderr := &testutil.LogBuffer{}
	cmd.Stderr = stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		cmd.Process.Kill()
		cmd.Wait()
	}()
	waitReady(t, "http://"+admin+"/readyz", stderr)
	var start struct {
		Limit uint64 `json:"descriptor_limit"`
		Max   int    `json:"max_client_conns"`
	}
	// /readyz can answer before the start line is written.
	waitUntil(t, "the start line", 10*time.Second, func() bool {
		for _, line := range strings.Split(stderr.String(), "\n") {
			if strings.Contains(line, `"msg":"auditproxy serving"`) {
				return json.Unmarshal([]byte(line), &start) == nil
			}
		}
		return false
	})
	if start.Limit <= 512 || start.Max != proxy.DefaultMaxClientConns(start.Limit) {
		t.Errorf("descriptor limit %d and connection cap %d after starting with a soft limit of 512 (hard %d)", start.Limit, start.Max, rl.Max)
	}
}
