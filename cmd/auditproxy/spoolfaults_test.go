package main

import (
	"bytes"
	"fmt"
	"net/http"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/auditproxy/auditproxy/bench/fakevllm"
)

// postChat sends one chat completion through a sidecar and returns the
// status and body.
func postChat(t *testing.T, listen, requestID string) (int, []byte) {
	t.Helper()
	req, _ := http.NewRequest("POST", "http://"+listen+"/v1/chat/completions",
		strings.NewReader(`{"model":"meta-llama/Llama-3.1-8B-Instruct","messages":[{"role":"user","content":"hi"}]}`))
	req.Header.Set("X-Request-Id", requestID)
	client := &http.Client{Timeout: 10 * time.Second}
	resp, err := client.Do(req)
	if err != nil {
		return 0, []byte(err.Error())
	}
	defer resp.Body.Close()
	var b bytes.Buffer
	b.ReadFrom(resp.Body)
	return resp.StatusCode, b.Bytes()
}

// TestSecondWriterOnALiveDataDirIsRefused: a second serve on a data dir a
// running sidecar owns exits at once with one line naming the owner, and
// touches nothing; export and verify still read the live data dir; once the
// owner is killed (-9), the kernel's release of the lock lets a new sidecar
// take over, and the log continues.
func TestSecondWriterOnALiveDataDirIsRefused(t *testing.T) {
	_, upstream := startFake(t, fakevllm.Config{})
	dataDir := t.TempDir()
	first := startServe(t, upstream, nil, "--data-dir", dataDir, "--log-level", "warn", "--checkpoint-interval", "100ms")
	if code, body := postChat(t, first.listen, "lock-1"); code != 200 {
		t.Fatalf("first sidecar: %d %s", code, body)
	}
	spoolDir := filepath.Join(dataDir, "spool")
	segsBefore, _ := filepath.Glob(filepath.Join(spoolDir, "*"))

	second := exec.Command(buildBinary(t), "serve", "--upstream", upstream, "--listen", freeAddr(t),
		"--admin-listen", freeAddr(t), "--data-dir", dataDir)
	stderr := &syncBuffer{}
	second.Stderr = stderr
	done := make(chan error, 1)
	if err := second.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { done <- second.Wait() }()
	select {
	case err := <-done:
		if code := second.ProcessState.ExitCode(); code != 1 {
			t.Errorf("second serve exited %d (%v), want 1", code, err)
		}
	case <-time.After(30 * time.Second):
		second.Process.Kill()
		<-done
		t.Fatalf("a second serve on a live data dir is still running:\n%s", stderr.String())
	}
	want := fmt.Sprintf("auditproxy: data dir %s is in use by another auditproxy (pid %d)\n", dataDir, first.cmd.Process.Pid)
	if stderr.String() != want {
		t.Errorf("second serve said\n%q\nwant\n%q", stderr.String(), want)
	}
	if segsAfter, _ := filepath.Glob(filepath.Join(spoolDir, "*")); len(segsAfter) != len(segsBefore) {
		t.Errorf("the refused serve changed the spool: %v -> %v", segsBefore, segsAfter)
	}

	// Readers need no lock.
	bin := buildBinary(t)
	out, err := exec.Command(bin, "export", "--data-dir", dataDir).Output()
	if err != nil || !bytes.Contains(out, []byte(`"request_id":"lock-1"`)) {
		t.Errorf("export of a live data dir: %v\n%s", err, out)
	}
	waitUntil(t, "a checkpoint after the request", 10*time.Second, func() bool {
		out, _ := exec.Command(bin, "verify", "--pubkey", filepath.Join(dataDir, "signing.key.pub"), spoolDir).CombinedOutput()
		return bytes.Contains(out, []byte("\nverified\n"))
	})

	// kill -9: the lock goes with the process.
	first.cmd.Process.Signal(syscall.SIGKILL)
	first.cmd.Wait()
	third := startServe(t, upstream, nil, "--data-dir", dataDir, "--log-level", "warn")
	if code, body := postChat(t, third.listen, "lock-2"); code != 200 {
		t.Fatalf("sidecar after the owner was killed: %d %s", code, body)
	}
	if err := third.stop(); err != nil {
		t.Fatalf("third: %v\n%s", err, third.stderr.String())
	}
	out, err = exec.Command(bin, "verify", "--pubkey", filepath.Join(dataDir, "signing.key.pub"), spoolDir).CombinedOutput()
	if err != nil || bytes.Count(out, []byte("OK ")) != 1 {
		t.Errorf("the log after a takeover: %v\n%s", err, out)
	}
}
