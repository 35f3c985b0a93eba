package main

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"

	"github.com/auditproxy/auditproxy/internal/fakevllm"
	"github.com/auditproxy/auditproxy/internal/forwardrecv"
	"github.com/auditproxy/auditproxy/internal/testutil"
)

// postChat sends one chat completion through a sidecar and returns the
// status and body.
func postChat(t *testing.T, listen, requestID string) (int, []byte) {
	t.Helper()
	return postJSON(t, listen, "/v1/chat/completions", requestID, `{"model":"meta-llama/Llama-3.1-8B-Instruct","messages":[{"role":"user","content":"hi"}]}`)
}

// postJSON posts body to the proxy at listen with request id requestID,
// and returns the status and the answer, or 0 and the transport error.
func postJSON(t *testing.T, listen, path, requestID, body string) (int, []byte) {
	t.Helper()
	req, _ := http.NewRequest("POST", "http://"+listen+path, strings.NewReader(body))
	req.Header.Set("X-Request-Id", requestID)
	req.Header.Set("Content-Type", "application/json")
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
	stderr := &testutil.LogBuffer{}
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

// mountTmpfs mounts a tmpfs of size bytes on a new directory for the rest of
// the test, or skips the test when it cannot (not root, no mount).
func mountTmpfs(t *testing.T, size string) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("mounts a small tmpfs as the data dir to fill it for real: run the tests as root to exercise a full disk")
	}
	dir := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size="+size+",mode=0700", "tmpfs", dir).CombinedOutput(); err != nil {
		t.Skipf("cannot mount a tmpfs on %s (%v: %s): the full-disk test needs mount(8) and CAP_SYS_ADMIN", dir, err, bytes.TrimSpace(out))
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", dir).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v %s", dir, err, out)
		}
	})
	return dir
}

func freeBytes(t *testing.T, dir string) int64 {
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		t.Fatal(err)
	}
	return int64(st.Bavail) * st.Bsize
}

// fillTo writes to path until the filesystem has at most leave bytes free
// (leave 0: until it is full).
func fillTo(t *testing.T, dir, path string, leave int64) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	chunk := make([]byte, 64<<10)
	for {
		free := freeBytes(t, dir)
		if free <= leave || (leave == 0 && free == 0) {
			return
		}
		n := min(int64(len(chunk)), max(free-leave, 4096))
		if _, err := f.Write(chunk[:n]); err != nil {
			if errors.Is(err, syscall.ENOSPC) {
				return
			}
			t.Fatal(err)
		}
	}
}

// TestFullDiskFailsClosed fills the real filesystem under a running sidecar
// (a tmpfs, far below --spool-max-bytes) while requests flow: every request
// that reached the upstream has its event, requests get 503
// audit_log_unavailable with a Retry-After without reaching the upstream
// while the disk is full, checkpoints that cannot be committed are counted,
// service resumes once space is freed, and the log verifies.
func TestFullDiskFailsClosed(t *testing.T) {
	dataDir := mountTmpfs(t, "24m")
	_, upstream := startFake(t, fakevllm.Config{})
	// The upstream as the sidecar sees it: every request id that reached it.
	var reachedMu sync.Mutex
	reached := map[string]bool{}
	target, _ := url.Parse(upstream)
	rp := httputil.NewSingleHostReverseProxy(target)
	recorder := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if id := r.Header.Get("X-Request-Id"); id != "" {
			reachedMu.Lock()
			reached[id] = true
			reachedMu.Unlock()
		}
		rp.ServeHTTP(w, r)
	}))
	defer recorder.Close()

	// Small segments: the spool commits into the space it preallocated
	// (its active segment and the next one, prepared) also once the
	// filesystem is full; checkpoints fill 16 KiB segments within seconds,
	// and only then do commits fail.
	p := startServe(t, recorder.URL, nil, "--data-dir", dataDir, "--log-level", "warn", "--spool-min-free-bytes", "2MiB",
		"--spool-max-bytes", "1GiB", "--segment-max-bytes", "16KiB", "--checkpoint-interval", "200ms")

	var mu sync.Mutex
	status := map[string]int{} // request id -> status
	var refusedWithRetry atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var n atomic.Int64
	for range 4 {
		wg.Go(func() {
			client := &http.Client{Timeout: 10 * time.Second}
			for {
				select {
				case <-stop:
					return
				default:
				}
				id := fmt.Sprintf("disk-%d", n.Add(1))
				req, _ := http.NewRequest("POST", "http://"+p.listen+"/v1/chat/completions",
					strings.NewReader(`{"model":"meta-llama/Llama-3.1-8B-Instruct","messages":[{"role":"user","content":"hi"}]}`))
				req.Header.Set("X-Request-Id", id)
				resp, err := client.Do(req)
				code := 0
				if err == nil {
					b, _ := io.ReadAll(resp.Body)
					resp.Body.Close()
					code = resp.StatusCode
					if code == 503 && bytes.Contains(b, []byte(`"code":"audit_log_unavailable"`)) && resp.Header.Get("Retry-After") != "" {
						refusedWithRetry.Add(1)
					}
				}
				mu.Lock()
				status[id] = code
				mu.Unlock()
				time.Sleep(time.Millisecond)
			}
		})
	}
	count := func(code int) int {
		mu.Lock()
		defer mu.Unlock()
		k := 0
		for _, c := range status {
			if c == code {
				k++
			}
		}
		return k
	}
	waitUntil(t, "100 answers", 30*time.Second, func() bool { return count(200) >= 100 })

	// Another writer fills the volume to half the reserve: the sidecar
	// refuses from then on, and what it admitted fits in what is left.
	filler := filepath.Join(dataDir, "filler")
	fillTo(t, dataDir, filler, 1<<20)
	waitUntil(t, "refusals with a full disk", 30*time.Second, func() bool { return refusedWithRetry.Load() >= 20 })
	if w := scrapeMetric(t, p.admin, "auditproxy_spool_writable"); w != 0 {
		t.Errorf("auditproxy_spool_writable %v with the disk below the reserve", w)
	}
	reachedMu.Lock()
	reachedWhileFull := len(reached)
	reachedMu.Unlock()

	// Full to the last byte: no checkpoint can be committed; each failure
	// is counted.
	fillTo(t, dataDir, filler, 0)
	waitUntil(t, "failed checkpoints", 30*time.Second, func() bool {
		return scrapeMetric(t, p.admin, "auditproxy_checkpoint_failures_total") >= 2
	})
	// Held full past the verifier's allowance for a late checkpoint (1.5
	// cadences and a second): the checkpoint after the outage reports it.
	time.Sleep(2 * time.Second)
	if w := scrapeMetric(t, p.admin, "auditproxy_spool_writable"); w != 0 {
		t.Errorf("auditproxy_spool_writable %v with the disk full", w)
	}
	okWhileFull := count(200)
	reachedMu.Lock()
	if len(reached) != reachedWhileFull {
		t.Errorf("%d requests reached the upstream while the disk was full", len(reached)-reachedWhileFull)
	}
	reachedMu.Unlock()

	// Space is freed: service resumes by itself.
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "answers after space was freed", 30*time.Second, func() bool { return count(200) >= okWhileFull+50 })
	close(stop)
	wg.Wait()
	if m := scrapeMetric(t, p.admin, "auditproxy_events_dropped_total"); m != 0 {
		t.Errorf("auditproxy_events_dropped_total %v", m)
	}
	if err := p.stop(); err != nil {
		t.Fatalf("serve: %v\n%s", err, p.stderr.String())
	}

	var out, errOut bytes.Buffer
	if code := run([]string{"export", "--data-dir", dataDir}, &out, &errOut); code != 0 {
		t.Fatalf("export exited %d: %s", code, errOut.String())
	}
	recorded := map[string]bool{}
	for _, line := range bytes.Split(bytes.TrimSpace(out.Bytes()), []byte("\n")) {
		var ev struct {
			Type      string `json:"type"`
			RequestID string `json:"request_id"`
		}
		if err := json.Unmarshal(line, &ev); err != nil {
			t.Fatalf("%v: %s", err, line)
		}
		if ev.Type == "inference" {
			recorded[ev.RequestID] = true
		}
	}
	missing := 0
	reachedMu.Lock()
	for id := range reached {
		if !recorded[id] {
			missing++
			if missing <= 5 {
				t.Errorf("request %s reached the upstream but has no event", id)
			}
		}
	}
	reachedMu.Unlock()
	if missing > 0 {
		t.Errorf("%d of %d requests that reached the upstream have no event", missing, len(reached))
	}
	mu.Lock()
	for id, code := range status {
		if code == 200 && !recorded[id] {
			t.Errorf("request %s was answered 200 without its event", id)
		}
	}
	mu.Unlock()
	var report, verr bytes.Buffer
	if code := run([]string{"verify", "--pubkey", filepath.Join(dataDir, "signing.key.pub"), filepath.Join(dataDir, "spool")}, &report, &verr); code != 0 {
		t.Errorf("verify exited %d after the disk was full:\n%s%s", code, report.String(), verr.String())
	}
	if !strings.Contains(report.String(), "outages: 1 ") {
		t.Errorf("verify does not report the outage:\n%s", report.String())
	}
	t.Logf("%d answered, %d refused with Retry-After, %d reached the upstream; verify:\n%s", count(200), refusedWithRetry.Load(), len(reached), report.String())
}

// damageSealedSegment flips a byte inside the third record of the sealed
// segment at path (decompressed, changed, compressed again, so that the
// stream decodes and the record fails its checksum) and returns the id of
// the event it destroyed.
func damageSealedSegment(t *testing.T, path string) string {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	dec, _ := zstd.NewReader(nil)
	data, err := dec.DecodeAll(raw, nil)
	dec.Close()
	if err != nil {
		t.Fatal(err)
	}
	off := 8 // the segment header
	for range 2 {
		off += 8 + int(binary.LittleEndian.Uint32(data[off:]))
	}
	payload := data[off+8 : off+8+int(binary.LittleEndian.Uint32(data[off:]))]
	var ev struct{ ID string }
	if err := json.Unmarshal(payload, &ev); err != nil {
		t.Fatal(err)
	}
	payload[10] ^= 0x04
	enc, _ := zstd.NewWriter(nil)
	if err := os.WriteFile(path, enc.EncodeAll(data, nil), 0o600); err != nil {
		t.Fatal(err)
	}
	return ev.ID
}

// TestDamagedSealedSegmentEndToEnd: with a damaged sealed segment in the
// spool, export and verify read past it: export prints every intact event
// and exits 1 naming the file and the damaged offsets; verify reports the
// lost event's seq as missing and the damaged file, and exits 1. A sidecar
// shipping the spool quarantines the segment (the metric counts it) and
// ships everything else; export then exits 0 and notes the file kept
// aside.
func TestDamagedSealedSegmentEndToEnd(t *testing.T) {
	_, upstream := startFake(t, fakevllm.Config{})
	dataDir := t.TempDir()
	p := startServe(t, upstream, nil, "--data-dir", dataDir, "--log-level", "warn", "--segment-max-bytes", "4KiB")
	for i := range 40 {
		if code, body := postChat(t, p.listen, fmt.Sprintf("dmg-%d", i)); code != 200 {
			t.Fatalf("%d %s", code, body)
		}
	}
	if err := p.stop(); err != nil {
		t.Fatal(err)
	}
	var before bytes.Buffer
	if code := run([]string{"export", "--data-dir", dataDir}, &before, io.Discard); code != 0 {
		t.Fatal("export of the intact spool failed")
	}
	spoolDir := filepath.Join(dataDir, "spool")
	sealed, _ := filepath.Glob(filepath.Join(spoolDir, "*.seg.zst"))
	if len(sealed) < 3 {
		t.Fatalf("%d sealed segments", len(sealed))
	}
	damaged := sealed[1]
	lostID := damageSealedSegment(t, damaged)

	var out, errOut bytes.Buffer
	if code := run([]string{"export", "--data-dir", dataDir}, &out, &errOut); code != 1 {
		t.Errorf("export of a damaged spool exited %d, want 1", code)
	}
	if !strings.Contains(errOut.String(), damaged+" is damaged at offsets ") {
		t.Errorf("export does not name the damaged file:\n%s", errOut.String())
	}
	if bytes.Count(out.Bytes(), []byte("\n")) != bytes.Count(before.Bytes(), []byte("\n"))-1 || bytes.Contains(out.Bytes(), []byte(lostID)) {
		t.Errorf("export printed %d events, want the %d intact ones", bytes.Count(out.Bytes(), []byte("\n")), bytes.Count(before.Bytes(), []byte("\n"))-1)
	}
	var lostSeq int64 = -1
	for _, line := range bytes.Split(before.Bytes(), []byte("\n")) {
		if bytes.Contains(line, []byte(`"id":"`+lostID+`"`)) {
			var ev struct{ Log struct{ Seq int64 } }
			json.Unmarshal(line, &ev)
			lostSeq = ev.Log.Seq
		}
	}
	var report bytes.Buffer
	errOut.Reset()
	if code := run([]string{"verify", "--pubkey", filepath.Join(dataDir, "signing.key.pub"), spoolDir}, &report, &errOut); code != 1 {
		t.Errorf("verify of a damaged spool exited %d, want 1:\n%s%s", code, report.String(), errOut.String())
	}
	for _, want := range []string{fmt.Sprintf("problem: seq %d missing", lostSeq), "problem: " + damaged + " is damaged at offsets "} {
		if !strings.Contains(report.String(), want) {
			t.Errorf("verify's report lacks %q:\n%s", want, report.String())
		}
	}

	// A sidecar that ships the spool quarantines the segment.
	recv := testutil.StartReceiver(t, "127.0.0.1:0", forwardrecv.Config{})
	p = startServe(t, upstream, nil, "--data-dir", dataDir, "--log-level", "error", "--segment-max-bytes", "4KiB",
		"--forward", "tcp://"+recv.Addr())
	waitUntil(t, "the segment_damaged event at the aggregator", 30*time.Second, func() bool {
		for _, e := range recv.Entries() {
			if e.Record["type"] == "segment_damaged" {
				return true
			}
		}
		return false
	})
	if m := scrapeMetric(t, p.admin, "auditproxy_spool_segments_damaged_total"); m != 1 {
		t.Errorf("auditproxy_spool_segments_damaged_total %v", m)
	}
	if err := p.stop(); err != nil {
		t.Fatal(err)
	}
	ids := map[string]bool{}
	for _, e := range recv.Entries() {
		if id, ok := e.Record["id"].(string); ok {
			ids[id] = true
		}
	}
	for _, line := range bytes.Split(bytes.TrimSpace(before.Bytes()), []byte("\n")) {
		var ev struct{ ID string }
		json.Unmarshal(line, &ev)
		if ev.ID != lostID && !ids[ev.ID] {
			t.Errorf("intact event %s was not shipped", ev.ID)
		}
	}
	out.Reset()
	errOut.Reset()
	if code := run([]string{"export", "--data-dir", dataDir}, &out, &errOut); code != 0 || !strings.Contains(errOut.String(), filepath.Base(damaged)+".damaged is a damaged segment the sidecar moved aside") {
		t.Errorf("export after the quarantine exited %d:\n%s", code, errOut.String())
	}
}

// TestKill9WhileTheTreeStateIsRewritten SIGKILLs a loaded sidecar that
// checkpoints every 20 events, so that its tree state (log.tree) is
// rewritten smaller again and again while it runs, and restarts it on the
// same data dir: each restart continues the same log from log.tree and the
// spool, the file stays small, and the whole log verifies.
func TestKill9WhileTheTreeStateIsRewritten(t *testing.T) {
	_, upstream := startFake(t, fakevllm.Config{})
	dataDir := t.TempDir()
	var n atomic.Int64
	for round := range 3 {
		p := startServeRetrying(t, upstream, "--data-dir", dataDir, "--log-level", "warn", "--checkpoint-every", "20",
			"--segment-max-bytes", "64KiB")
		stop := make(chan struct{})
		var wg sync.WaitGroup
		for range 4 {
			wg.Go(func() {
				for {
					select {
					case <-stop:
						return
					default:
					}
					postChat(t, p.listen, fmt.Sprintf("tree-%d", n.Add(1)))
				}
			})
		}
		time.Sleep(time.Duration(700+300*round) * time.Millisecond)
		p.kill()
		close(stop)
		wg.Wait()
	}
	last := startServeRetrying(t, upstream, "--data-dir", dataDir, "--log-level", "warn", "--checkpoint-every", "20")
	if err := last.stop(); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if code := run([]string{"export", "--data-dir", dataDir}, &out, io.Discard); code != 0 {
		t.Fatal("export failed")
	}
	events := bytes.Count(out.Bytes(), []byte("\n"))
	fi, err := os.Stat(filepath.Join(dataDir, "spool", "log.tree"))
	if err != nil {
		t.Fatal(err)
	}
	legacy := 0
	for l := events; l > 0; l >>= 1 {
		legacy += l // StoredHashCount, about 2 per event
	}
	t.Logf("%d events after 3 kills; log.tree %d bytes, the previous release's tree.hashes would be about %d", events, fi.Size(), legacy*32)
	if events < 500 {
		t.Fatalf("only %d events: the kills came before any load", events)
	}
	if fi.Size() > int64(legacy*32/2) {
		t.Errorf("log.tree is %d bytes for %d events: not kept small", fi.Size(), events)
	}
	var report bytes.Buffer
	if code := run([]string{"verify", "--pubkey", filepath.Join(dataDir, "signing.key.pub"), filepath.Join(dataDir, "spool")}, &report, io.Discard); code != 0 || bytes.Count(report.Bytes(), []byte("OK ")) != 1 {
		t.Errorf("verify after kills (want one log, continued):\n%s", report.String())
	}
}

// retriedServe is a serve process started by startServeRetrying.
type retriedServe struct {
	cmd           *exec.Cmd
	listen, admin string
	stderr        *testutil.LogBuffer
	exited        chan struct{}
	err           error // the exit, once exited is closed
}

// stop sends SIGTERM and returns how the process exited.
func (s *retriedServe) stop() error {
	s.cmd.Process.Signal(syscall.SIGTERM)
	<-s.exited
	return s.err
}

// kill sends SIGKILL and waits for the exit.
func (s *retriedServe) kill() {
	s.cmd.Process.Signal(syscall.SIGKILL)
	<-s.exited
}

// startServeRetrying is startServe for a test that has just loaded the
// loopback with client connections: a port freeAddr found free can be taken
// by one of them before serve binds it, so a start that fails to bind is
// tried again on other ports.
func startServeRetrying(t *testing.T, upstream string, args ...string) *retriedServe {
	t.Helper()
	for attempt := 0; ; attempt++ {
		s := &retriedServe{listen: freeAddr(t), admin: freeAddr(t), stderr: &testutil.LogBuffer{}, exited: make(chan struct{})}
		s.cmd = exec.Command(buildBinary(t), append([]string{"serve", "--upstream", upstream,
			"--listen", s.listen, "--admin-listen", s.admin}, args...)...)
		s.cmd.Stderr = s.stderr
		if err := s.cmd.Start(); err != nil {
			t.Fatal(err)
		}
		go func() { s.err = s.cmd.Wait(); close(s.exited) }()
		t.Cleanup(func() { s.cmd.Process.Kill(); <-s.exited })
		retry := false
		for deadline := time.Now().Add(15 * time.Second); !retry; {
			select {
			case <-s.exited:
				if attempt < 3 && strings.Contains(s.stderr.String(), "address already in use") {
					retry = true
					continue
				}
				t.Fatalf("serve exited:\n%s", s.stderr.String())
			default:
			}
			if r, err := http.Get("http://" + s.admin + "/readyz"); err == nil {
				r.Body.Close()
				if r.StatusCode == 200 {
					return s
				}
			}
			if time.Now().After(deadline) {
				t.Fatalf("serve not ready within 15s:\n%s", s.stderr.String())
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
}
