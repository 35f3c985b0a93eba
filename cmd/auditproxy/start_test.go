package main

import (
	"errors"
	"flag"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/auditproxy/auditproxy/internal/fakevllm"
	"github.com/auditproxy/auditproxy/internal/fsutil"
)

func TestClosersUnwindInReverse(t *testing.T) {
	var order []int
	var cs closers
	for i := range 3 {
		cs.push(func() error {
			order = append(order, i)
			if i == 1 {
				return errors.New("one failed")
			}
			return nil
		})
	}
	err := cs.unwind()
	if len(order) != 3 || order[0] != 2 || order[1] != 1 || order[2] != 0 {
		t.Errorf("released in order %v, want [2 1 0]", order)
	}
	if err == nil || err.Error() != "one failed" {
		t.Errorf("unwind: %v, want the failure", err)
	}
	if len(cs) != 0 || cs.unwind() != nil {
		t.Error("the stack was not emptied")
	}
}

// ownGoroutines returns the stacks of the goroutines running this module's
// serving code (spool, log, checkpoint copies, witness, shipper, identity,
// proxy, the admin server), leaving out the test's own and the fake
// upstream's.
func ownGoroutines() []string {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	var own []string
	for _, g := range strings.Split(string(buf), "\n\n") {
		for _, pkg := range []string{"auditproxy/spool.", "auditproxy/auditlog.", "auditproxy/auditlog/witness.",
			"auditproxy/forward.", "auditproxy/identity.", "auditproxy/proxy.", "main.(*instance)"} {
			if strings.Contains(g, pkg) {
				own = append(own, g)
				break
			}
		}
	}
	return own
}

// TestFailedStartReleasesEverything: a start that fails at its last step
// (the admin token file is a directory), after it opened the listeners,
// the data dir's lock, the checkpoint dir, the checkpoint poster, the
// witness, the spool, the GPU watcher and the models poller, leaves none
// of them behind: no goroutine of theirs runs on, the ports and the lock
// are free, and a second start in the same process, on the same data dir
// and ports, serves.
func TestFailedStartReleasesEverything(t *testing.T) {
	_, upstream := startFake(t, fakevllm.Config{})
	var posted atomic.Int64
	sink := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		posted.Add(1)
		io.Copy(io.Discard, r.Body)
		http.Error(w, "not a witness", http.StatusNotFound)
	}))
	defer sink.Close()
	root := t.TempDir()
	dataDir := filepath.Join(root, "data")
	listen, admin := freeAddr(t), freeAddr(t)
	var c serveConfig
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	c.register(fs, "")
	if err := fs.Parse([]string{"--upstream", upstream, "--listen", listen, "--admin-listen", admin,
		"--data-dir", dataDir, "--checkpoint-dir", filepath.Join(root, "checkpoints"),
		"--checkpoint-url", sink.URL + "/checkpoints", "--witness-url", sink.URL + "/witness",
		"--model-poll-interval", "10ms", "--gpu-refresh-interval", "10ms", "--checkpoint-interval", "10ms",
		"--log-level", "error", "--drain-timeout", "1s"}); err != nil {
		t.Fatal(err)
	}
	if before := ownGoroutines(); len(before) > 0 {
		t.Fatalf("goroutines of a sidecar run before start:\n%s", strings.Join(before, "\n\n"))
	}
	tokenPath := filepath.Join(dataDir, "admin.token")
	if err := os.MkdirAll(tokenPath, 0o700); err != nil {
		t.Fatal(err)
	}

	inst, err := start(c, io.Discard, nil)
	if err == nil {
		inst.shutdown()
		t.Fatal("start with a directory for the admin token succeeded")
	}
	if !strings.Contains(err.Error(), "admin token") {
		t.Fatalf("start failed with %v, want the admin token's error (the last step)", err)
	}
	// Everything is released by the time start returns: each goroutine
	// has said it ended (a closed done channel), and is gone a moment
	// later, the time it takes to return from its function.
	left := ownGoroutines()
	for deadline := time.Now().Add(time.Second); len(left) > 0 && time.Now().Before(deadline); left = ownGoroutines() {
		time.Sleep(10 * time.Millisecond)
	}
	if len(left) > 0 {
		t.Errorf("%d goroutines left by the failed start:\n%s", len(left), strings.Join(left, "\n\n"))
	}
	for _, addr := range []string{listen, admin} {
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			t.Errorf("the failed start left %s bound: %v", addr, err)
			continue
		}
		ln.Close()
	}
	lock, err := fsutil.LockDataDir(dataDir)
	if err != nil {
		t.Fatalf("the failed start left the data dir locked: %v", err)
	}
	lock.Close()

	if err := os.Remove(tokenPath); err != nil {
		t.Fatal(err)
	}
	inst, err = start(c, io.Discard, nil)
	if err != nil {
		t.Fatalf("a second start, in the same process: %v", err)
	}
	resp, err := http.Get("http://" + admin + "/healthz")
	if err == nil {
		resp.Body.Close()
	}
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Errorf("healthz of the second start: %v %v", resp, err)
	}
	signal.Stop(inst.sig)
	if err := inst.shutdown(); err != nil {
		t.Errorf("shutdown: %v", err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for len(ownGoroutines()) > 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond) // the proxy's Serve returns after shutdown does
	}
	if left := ownGoroutines(); len(left) > 0 {
		t.Errorf("%d goroutines left after shutdown:\n%s", len(left), strings.Join(left, "\n\n"))
	}
}
