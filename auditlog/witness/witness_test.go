package witness

import (
	"bufio"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"

	"github.com/auditproxy/auditproxy/audit"
	"github.com/auditproxy/auditproxy/auditlog"
	"github.com/auditproxy/auditproxy/internal/testutil"
)

// ---- a real log --------------------------------------------------------

// witnessTestHashes is a slice-backed tlog.HashReader, safe for concurrent
// use (the client reads while the test appends).
type witnessTestHashes struct {
	mu sync.Mutex
	h  []tlog.Hash
}

func (m *witnessTestHashes) add(hs []tlog.Hash) {
	m.mu.Lock()
	m.h = append(m.h, hs...)
	m.mu.Unlock()
}

// WitnessCosigned makes witnessTestHashes a Log; the tests read what the
// witness cosigned from its state and cosignature files.
func (m *witnessTestHashes) WitnessCosigned(string, int64) {}

func (m *witnessTestHashes) ReadHashes(idx []int64) ([]tlog.Hash, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]tlog.Hash, len(idx))
	for i, x := range idx {
		if x < 0 || x >= int64(len(m.h)) {
			return nil, fmt.Errorf("stored hash %d not written (have %d)", x, len(m.h))
		}
		out[i] = m.h[x]
	}
	return out, nil
}

// witnessTestLog is an audit log built with auditlog.Chain: events and signed
// checkpoint events, its stored hashes kept in memory.
type witnessTestLog struct {
	chain  *auditlog.Chain
	signer note.Signer
	hashes *witnessTestHashes
	tag    string
	n      int
	lines  [][]byte // the log's events, checkpoints included, in seq order
}

func newWitnessTestLog(t *testing.T, origin string, signer note.Signer, tag string) *witnessTestLog {
	t.Helper()
	c, err := auditlog.NewChain(auditlog.ChainState{Origin: origin})
	if err != nil {
		t.Fatal(err)
	}
	return &witnessTestLog{chain: c, signer: signer, hashes: &witnessTestHashes{}, tag: tag}
}

// grow appends n events.
func (l *witnessTestLog) grow(t *testing.T, n int) {
	t.Helper()
	for range n {
		l.n++
		ev := fmt.Appendf(nil, `{"v":1,"type":"test","n":%d,"tag":%q}`, l.n, l.tag)
		line, err := l.chain.Append(nil, ev)
		if err != nil {
			t.Fatal(err)
		}
		l.lines = append(l.lines, line)
	}
	l.hashes.add(l.chain.TakeStored())
}

// checkpoint signs the log's current tree as a checkpoint event (which
// becomes the log's next leaf) and returns the event and its size.
func (l *witnessTestLog) checkpoint(t *testing.T) ([]byte, int64) {
	t.Helper()
	size := l.chain.Size()
	ev, err := l.chain.AppendCheckpointEvent(nil, l.signer, time.Now(), 10*time.Second, false, audit.Source{Host: "h", Version: "t"})
	if err != nil {
		t.Fatal(err)
	}
	l.lines = append(l.lines, ev)
	l.hashes.add(l.chain.TakeStored())
	return ev, size
}

// ---- an Ed25519 cosignature/v1 key (c2sp.org/tlog-cosignature) ----------

type witnessTestCosigner struct {
	name string
	pub  ed25519.PublicKey
	priv ed25519.PrivateKey
}

func newWitnessTestCosigner(t *testing.T, name string) *witnessTestCosigner {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return &witnessTestCosigner{name: name, pub: pub, priv: priv}
}

func (k *witnessTestCosigner) Name() string { return k.name }

// KeyHash is SHA-256(name || "\n" || 0x04 || public key)[:4].
func (k *witnessTestCosigner) KeyHash() uint32 {
	h := sha256.New()
	h.Write([]byte(k.name + "\n\x04"))
	h.Write(k.pub)
	return binary.BigEndian.Uint32(h.Sum(nil))
}

func cosignatureV1Message(ts uint64, body []byte) []byte {
	return append(fmt.Appendf(nil, "cosignature/v1\ntime %d\n", ts), body...)
}

// Sign returns a timestamped_signature: u64 timestamp || Ed25519 signature.
func (k *witnessTestCosigner) Sign(body []byte) ([]byte, error) {
	ts := uint64(time.Now().Unix())
	sig := binary.BigEndian.AppendUint64(nil, ts)
	return append(sig, ed25519.Sign(k.priv, cosignatureV1Message(ts, body))...), nil
}

func (k *witnessTestCosigner) Verify(body, sig []byte) bool {
	if len(sig) != 8+ed25519.SignatureSize {
		return false
	}
	ts := binary.BigEndian.Uint64(sig)
	return ts < 1<<63 && ed25519.Verify(k.pub, cosignatureV1Message(ts, body), sig[8:])
}

// ---- a test witness, written from the spec, not from the client ---------

type witnessTestCP struct {
	size int64
	root tlog.Hash
}

type witnessTestReq struct {
	old, size int64
	proofLen  int
	status    int
}

// testTlogWitness is a C2SP tlog-witness for the logs it is given.
type testTlogWitness struct {
	logKeys note.Verifiers
	origins map[string]bool
	key     *witnessTestCosigner
	gate    chan struct{} // if set before start, requests wait for it to close
	arrived atomic.Int64
	srv     *httptest.Server

	mu     sync.Mutex
	latest map[string]witnessTestCP
	reqs   []witnessTestReq
}

func startTestTlogWitness(t *testing.T, logKeys note.Verifiers, gate chan struct{}, origins ...string) *testTlogWitness {
	t.Helper()
	tw := &testTlogWitness{logKeys: logKeys, origins: map[string]bool{}, key: newWitnessTestCosigner(t, "witness.test/w1"),
		gate: gate, latest: map[string]witnessTestCP{}}
	for _, o := range origins {
		tw.origins[o] = true
	}
	tw.srv = httptest.NewServer(tw)
	t.Cleanup(tw.srv.Close)
	return tw
}

func (tw *testTlogWitness) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost || r.URL.Path != "/add-checkpoint" {
		http.Error(w, "no such endpoint", http.StatusNotFound)
		return
	}
	tw.arrived.Add(1)
	if tw.gate != nil {
		select {
		case <-tw.gate:
		case <-r.Context().Done():
			return
		}
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	if err != nil {
		return
	}
	req, status, ctype, resp := tw.addCheckpoint(body)
	tw.mu.Lock()
	req.status = status
	tw.reqs = append(tw.reqs, req)
	tw.mu.Unlock()
	w.Header().Set("Content-Type", ctype)
	w.WriteHeader(status)
	io.WriteString(w, resp)
}

func (tw *testTlogWitness) addCheckpoint(body []byte) (req witnessTestReq, status int, ctype, resp string) {
	const plain = "text/plain; charset=utf-8"
	bad := func(code int, msg string) (witnessTestReq, int, string, string) { return req, code, plain, msg + "\n" }
	rest := string(body)
	oldLine, rest, ok := strings.Cut(rest, "\n")
	oldText, ok2 := strings.CutPrefix(oldLine, "old ")
	old, err := strconv.ParseInt(oldText, 10, 64)
	if !ok || !ok2 || err != nil || old < 0 || strconv.FormatInt(old, 10) != oldText {
		return bad(http.StatusBadRequest, "bad old size line")
	}
	req.old = old
	var proof tlog.TreeProof
	for {
		var line string
		if line, rest, ok = strings.Cut(rest, "\n"); !ok {
			return bad(http.StatusBadRequest, "no empty line before the checkpoint")
		}
		if line == "" {
			break
		}
		h, err := base64.StdEncoding.DecodeString(line)
		if err != nil || len(h) != tlog.HashSize || len(proof) == 63 {
			return bad(http.StatusBadRequest, "bad proof line")
		}
		proof = append(proof, tlog.Hash(h))
	}
	req.proofLen = len(proof)
	origin, _, _ := strings.Cut(rest, "\n")
	if !tw.origins[origin] {
		return bad(http.StatusNotFound, "unknown log")
	}
	n, err := note.Open([]byte(rest), tw.logKeys)
	if err != nil {
		var unverified *note.UnverifiedNoteError
		var invalid *note.InvalidSignatureError
		if errors.As(err, &unverified) || errors.As(err, &invalid) {
			return bad(http.StatusForbidden, "no valid signature by the log")
		}
		return bad(http.StatusBadRequest, "malformed checkpoint")
	}
	lines := strings.SplitN(n.Text, "\n", 4)
	if len(lines) < 4 || lines[0] != origin {
		return bad(http.StatusBadRequest, "malformed checkpoint")
	}
	size, err1 := strconv.ParseInt(lines[1], 10, 64)
	root, err2 := base64.StdEncoding.DecodeString(lines[2])
	if err1 != nil || err2 != nil || size < 0 || len(root) != tlog.HashSize {
		return bad(http.StatusBadRequest, "malformed checkpoint")
	}
	req.size = size
	if old > size {
		return bad(http.StatusBadRequest, "old size above the checkpoint's")
	}
	tw.mu.Lock()
	defer tw.mu.Unlock() // check and update atomically
	cur := tw.latest[origin]
	conflict := func() (witnessTestReq, int, string, string) {
		return req, http.StatusConflict, "text/x.tlog.size", strconv.FormatInt(cur.size, 10) + "\n"
	}
	switch {
	case old != cur.size:
		return conflict()
	case old == 0 && len(proof) > 0:
		return bad(http.StatusBadRequest, "a proof from size 0")
	case old == size:
		if tlog.Hash(root) != cur.root {
			return conflict()
		}
	case old > 0:
		if err := tlog.CheckTree(proof, size, tlog.Hash(root), old, cur.root); err != nil {
			return bad(http.StatusUnprocessableEntity, "consistency proof: "+err.Error())
		}
	}
	tw.latest[origin] = witnessTestCP{size: size, root: tlog.Hash(root)}
	signed, err := note.Sign(&note.Note{Text: n.Text}, tw.key)
	if err != nil {
		return bad(http.StatusInternalServerError, err.Error())
	}
	return req, http.StatusOK, plain, string(signed[len(n.Text)+1:])
}

func (tw *testTlogWitness) cp(origin string) witnessTestCP {
	tw.mu.Lock()
	defer tw.mu.Unlock()
	return tw.latest[origin]
}

func (tw *testTlogWitness) requests() []witnessTestReq {
	tw.mu.Lock()
	defer tw.mu.Unlock()
	return append([]witnessTestReq(nil), tw.reqs...)
}

// ---- helpers -------------------------------------------------------------

const witnessTestOrigin = "test-node/20260101T000000Z"

func witnessTestLogKey(t *testing.T) (note.Signer, note.Verifier) {
	t.Helper()
	s, keys := testutil.Signer(t, "test-node")
	v, err := keys.Verifier(s.Name(), s.KeyHash())
	if err != nil {
		t.Fatal(err)
	}
	return s, v
}

func newTestWitness(t *testing.T, opts Options, lg Log) *Client {
	t.Helper()
	w, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	w.Start(lg)
	return w
}

func waitForWitness(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func readCosignatures(t *testing.T, path string) []witnessCosignature {
	t.Helper()
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []witnessCosignature
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var c witnessCosignature
		if err := json.Unmarshal(sc.Bytes(), &c); err != nil {
			t.Fatalf("cosignature line %q: %v", sc.Text(), err)
		}
		out = append(out, c)
	}
	return out
}

func readWitnessState(t *testing.T, path string) witnessStateFile {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var st witnessStateFile
	if err := json.Unmarshal(b, &st); err != nil {
		t.Fatal(err)
	}
	return st
}

// checkCosignature checks that c is the log's checkpoint of size, signed by
// the log and cosigned by the witness.
func checkCosignature(t *testing.T, c witnessCosignature, size int64, logKey note.Verifier, witnessKey note.Verifier) {
	t.Helper()
	if c.Origin != witnessTestOrigin || c.Size != size {
		t.Errorf("cosignature of (%s, %d), want (%s, %d)", c.Origin, c.Size, witnessTestOrigin, size)
	}
	for _, keys := range []note.Verifiers{note.VerifierList(logKey), note.VerifierList(witnessKey)} {
		if _, err := note.Open([]byte(c.Note), keys); err != nil {
			t.Errorf("cosigned note of size %d: %v\n%s", size, err, c.Note)
		}
	}
	n, err := note.Open([]byte(c.Note), note.VerifierList(logKey, witnessKey))
	if err != nil {
		t.Fatal(err)
	}
	if len(n.Sigs) != 2 || len(n.UnverifiedSigs) != 0 {
		t.Errorf("cosigned note of size %d: verified %v, unverified %v", size, n.Sigs, n.UnverifiedSigs)
	}
	cp, err := auditlog.ParseCheckpoint(n.Text)
	if err != nil || cp.Size != size || cp.Origin != witnessTestOrigin {
		t.Errorf("cosigned note's checkpoint: %+v, %v", cp, err)
	}
}

// ---- tests ---------------------------------------------------------------

func TestWitnessCosignsEveryCheckpointAndResumes(t *testing.T) {
	logS, logV := witnessTestLogKey(t)
	tw := startTestTlogWitness(t, note.VerifierList(logV), nil, witnessTestOrigin)
	dir := t.TempDir()
	lg := newWitnessTestLog(t, witnessTestOrigin, logS, "a")
	opts := Options{URL: tw.srv.URL + "/", StateFile: filepath.Join(dir, "witness.json"), CosignatureFile: filepath.Join(dir, "cosignatures.jsonl")}
	w := newTestWitness(t, opts, lg.hashes)
	var sizes []int64
	for _, n := range []int{1, 4, 9, 30, 2, 64} {
		lg.grow(t, n)
		ev, size := lg.checkpoint(t)
		sizes = append(sizes, size)
		w.Submit(signedCheckpoint(t, ev))
		waitForWitness(t, fmt.Sprintf("the witness to cosign size %d", size), func() bool { return tw.cp(witnessTestOrigin).size == size })
	}
	if err := w.Close(5 * time.Second); err != nil {
		t.Fatal(err)
	}
	reqs := tw.requests()
	if len(reqs) != len(sizes) {
		t.Fatalf("witness got %d requests, want %d: %+v", len(reqs), len(sizes), reqs)
	}
	for i, r := range reqs {
		want := witnessTestReq{old: 0, size: sizes[i], status: http.StatusOK, proofLen: r.proofLen}
		if i > 0 {
			want.old = sizes[i-1]
		}
		if r != want || (i == 0) != (r.proofLen == 0) {
			t.Errorf("request %d: %+v, want %+v with a proof unless old is 0", i, r, want)
		}
	}
	cos := readCosignatures(t, opts.CosignatureFile)
	if len(cos) != len(sizes) {
		t.Fatalf("%d cosignatures, want %d", len(cos), len(sizes))
	}
	for i, c := range cos {
		checkCosignature(t, c, sizes[i], logV, tw.key)
	}
	st := readWitnessState(t, opts.StateFile)
	last := sizes[len(sizes)-1]
	if st.Witness != opts.URL || st.Logs[witnessTestOrigin].Size != last {
		t.Errorf("state %+v, want size %d", st, last)
	}
	if _, err := os.Stat(opts.StateFile + ".tmp"); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("temporary state file left: %v", err)
	}

	// A restart continues from the stored size: no 409 round trip.
	w = newTestWitness(t, opts, lg.hashes)
	lg.grow(t, 5)
	ev, size := lg.checkpoint(t)
	w.Submit(signedCheckpoint(t, ev))
	w.Submit(signedCheckpoint(t, ev)) // the same checkpoint again is not sent twice
	if err := w.Close(5 * time.Second); err != nil {
		t.Fatal(err)
	}
	reqs = tw.requests()
	if got := reqs[len(sizes):]; len(got) != 1 || got[0].old != last || got[0].size != size || got[0].status != http.StatusOK {
		t.Errorf("after the restart the witness got %+v, want one request from old %d to %d", got, last, size)
	}
	if cos = readCosignatures(t, opts.CosignatureFile); len(cos) != len(sizes)+1 {
		t.Fatalf("%d cosignatures after the restart, want %d", len(cos), len(sizes)+1)
	}
	checkCosignature(t, cos[len(cos)-1], size, logV, tw.key)
	if st := readWitnessState(t, opts.StateFile); st.Logs[witnessTestOrigin].Size != size {
		t.Errorf("state after the restart %+v, want size %d", st, size)
	}
}

func TestWitnessFollowsTheWitnessSizeOn409(t *testing.T) {
	logS, logV := witnessTestLogKey(t)
	tw := startTestTlogWitness(t, note.VerifierList(logV), nil, witnessTestOrigin)
	dir := t.TempDir()
	lg := newWitnessTestLog(t, witnessTestOrigin, logS, "a")
	opts := Options{URL: tw.srv.URL, StateFile: filepath.Join(dir, "witness.json"), CosignatureFile: filepath.Join(dir, "cosignatures.jsonl")}

	w := newTestWitness(t, opts, lg.hashes)
	lg.grow(t, 7)
	ev1, size1 := lg.checkpoint(t)
	w.Submit(signedCheckpoint(t, ev1))
	if err := w.Close(5 * time.Second); err != nil {
		t.Fatal(err)
	}
	stale, err := os.ReadFile(opts.StateFile)
	if err != nil {
		t.Fatal(err)
	}
	w = newTestWitness(t, opts, lg.hashes)
	lg.grow(t, 20)
	ev2, size2 := lg.checkpoint(t)
	w.Submit(signedCheckpoint(t, ev2))
	if err := w.Close(5 * time.Second); err != nil {
		t.Fatal(err)
	}

	// A client whose state is stale (size1, the witness is at size2).
	if err := os.WriteFile(opts.StateFile, stale, 0o600); err != nil {
		t.Fatal(err)
	}
	var logs testutil.LogBuffer
	opts.Logger = logs.Logger()
	w = newTestWitness(t, opts, lg.hashes)
	lg.grow(t, 3)
	ev3, size3 := lg.checkpoint(t)
	w.Submit(signedCheckpoint(t, ev3))
	if err := w.Close(5 * time.Second); err != nil {
		t.Fatal(err)
	}
	// A client with no state at all.
	opts.StateFile = ""
	w = newTestWitness(t, opts, lg.hashes)
	lg.grow(t, 40)
	ev4, size4 := lg.checkpoint(t)
	w.Submit(signedCheckpoint(t, ev4))
	if err := w.Close(5 * time.Second); err != nil {
		t.Fatal(err)
	}

	want := []witnessTestReq{
		{old: 0, size: size1, status: 200},
		{old: size1, size: size2, status: 200},
		{old: size1, size: size3, status: 409},
		{old: size2, size: size3, status: 200},
		{old: 0, size: size4, status: 409},
		{old: size3, size: size4, status: 200},
	}
	got := tw.requests()
	for i := range got {
		got[i].proofLen = 0
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("witness requests\n got %+v\nwant %+v", got, want)
	}
	if cp := tw.cp(witnessTestOrigin); cp.size != size4 {
		t.Errorf("witness at size %d, want %d", cp.size, size4)
	}
	cos := readCosignatures(t, opts.CosignatureFile)
	if len(cos) != 4 {
		t.Fatalf("%d cosignatures, want 4", len(cos))
	}
	for i, size := range []int64{size1, size2, size3, size4} {
		checkCosignature(t, cos[i], size, logV, tw.key)
	}
	if st := readWitnessState(t, filepath.Join(dir, "witness.json")); st.Logs[witnessTestOrigin].Size != size3 {
		t.Errorf("state %+v, want size %d", st, size3)
	}
	if strings.Contains(logs.String(), `"level":"ERROR"`) {
		t.Errorf("errors logged on the 409 path:\n%s", logs.String())
	}
}

func TestWitnessReportsAForkedLog(t *testing.T) {
	logS, logV := witnessTestLogKey(t)
	tw := startTestTlogWitness(t, note.VerifierList(logV), nil, witnessTestOrigin)
	dir := t.TempDir()

	// The witness cosigns log A at size witnessed.
	a := newWitnessTestLog(t, witnessTestOrigin, logS, "a")
	aState := filepath.Join(dir, "a.json")
	w := newTestWitness(t, Options{URL: tw.srv.URL, StateFile: aState}, a.hashes)
	a.grow(t, 20)
	ev, witnessed := a.checkpoint(t)
	w.Submit(signedCheckpoint(t, ev))
	if err := w.Close(5 * time.Second); err != nil {
		t.Fatal(err)
	}
	aCP := tw.cp(witnessTestOrigin)
	if aCP.size != witnessed {
		t.Fatalf("witness at %d, want %d", aCP.size, witnessed)
	}
	aStateBytes, err := os.ReadFile(aState)
	if err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct {
		name      string
		grow      int64 // size of the fork's checkpoint, relative to witnessed
		withState bool  // the client remembers A's cosigned size
		statuses  []int // the witness's answers
		report    string
	}{
		{"bigger/state lost", +15, false, []int{409, 422}, "refused the consistency proof"},
		{"bigger/state kept", +15, true, []int{422}, "refused the consistency proof"},
		{"same size/state lost", 0, false, []int{409, 409}, "cosigned another tree of this size"},
		{"same size/state kept", 0, true, []int{409}, "cosigned another tree of this size"},
		{"smaller/state lost", -5, false, []int{409}, "cosigned a bigger tree of this origin"},
		{"smaller/state kept", -5, true, nil, "smaller than one the witness already cosigned"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// Log B: same origin and key, other leaves.
			b := newWitnessTestLog(t, witnessTestOrigin, logS, "b-"+tc.name)
			b.grow(t, int(witnessed+tc.grow))
			ev, size := b.checkpoint(t)
			if size != witnessed+tc.grow {
				t.Fatalf("fork at size %d", size)
			}
			sub := t.TempDir()
			opts := Options{URL: tw.srv.URL, CosignatureFile: filepath.Join(sub, "cosignatures.jsonl")}
			if tc.withState {
				opts.StateFile = filepath.Join(sub, "state.json")
				if err := os.WriteFile(opts.StateFile, aStateBytes, 0o600); err != nil {
					t.Fatal(err)
				}
			}
			var logs testutil.LogBuffer
			opts.Logger = logs.Logger()
			before := len(tw.requests())
			w := newTestWitness(t, opts, b.hashes)
			w.Submit(signedCheckpoint(t, ev))
			if err := w.Close(5 * time.Second); err != nil {
				t.Fatal(err)
			}
			var statuses []int
			for _, r := range tw.requests()[before:] {
				statuses = append(statuses, r.status)
			}
			if fmt.Sprint(statuses) != fmt.Sprint(tc.statuses) {
				t.Errorf("witness answered %v, want %v", statuses, tc.statuses)
			}
			if cp := tw.cp(witnessTestOrigin); cp != aCP {
				t.Errorf("the witness moved to the fork: %+v, was %+v", cp, aCP)
			}
			var reported bool
			for _, line := range logs.Lines("") {
				if line["level"] == "ERROR" && line["alert"] == witnessForkAlert && strings.Contains(fmt.Sprint(line), tc.report) {
					reported = true
				}
			}
			if !reported {
				t.Errorf("no fork alert %q logged:\n%s", tc.report, logs.String())
			}
			if cos := readCosignatures(t, opts.CosignatureFile); len(cos) != 0 {
				t.Errorf("cosignatures kept for the fork: %+v", cos)
			}
			if n := witnessMetric(t, w, "auditproxy_witness_fork_alerts_total"); n < 1 {
				t.Errorf("auditproxy_witness_fork_alerts_total = %v, want at least 1", n)
			}
			if n := witnessMetric(t, w, "auditproxy_witness_cosigned_total"); n != 0 {
				t.Errorf("auditproxy_witness_cosigned_total = %v for a fork", n)
			}
			if tc.withState {
				if st := readWitnessState(t, opts.StateFile); st.Logs[witnessTestOrigin].Size != witnessed {
					t.Errorf("state %+v, want A's size %d", st, witnessed)
				}
			}
		})
	}
}

func TestWitnessSupersedesQueuedCheckpoints(t *testing.T) {
	logS, logV := witnessTestLogKey(t)
	gate := make(chan struct{})
	tw := startTestTlogWitness(t, note.VerifierList(logV), gate, witnessTestOrigin)
	lg := newWitnessTestLog(t, witnessTestOrigin, logS, "a")
	cosFile := filepath.Join(t.TempDir(), "cosignatures.jsonl")
	w := newTestWitness(t, Options{URL: tw.srv.URL, CosignatureFile: cosFile}, lg.hashes)
	lg.grow(t, 3)
	ev, first := lg.checkpoint(t)
	w.Submit(signedCheckpoint(t, ev))
	waitForWitness(t, "the first request", func() bool { return tw.arrived.Load() == 1 })
	var last int64
	for range 4 {
		lg.grow(t, 3)
		ev, last = lg.checkpoint(t)
		w.Submit(signedCheckpoint(t, ev))
	}
	close(gate)
	if err := w.Close(5 * time.Second); err != nil {
		t.Fatal(err)
	}
	reqs := tw.requests()
	if len(reqs) != 2 || reqs[0].size != first || reqs[1].size != last || reqs[1].old != first {
		t.Errorf("witness got %+v, want %d then %d", reqs, first, last)
	}
	cos := readCosignatures(t, cosFile)
	if len(cos) != 2 {
		t.Fatalf("%d cosignatures, want 2", len(cos))
	}
	checkCosignature(t, cos[0], first, logV, tw.key)
	checkCosignature(t, cos[1], last, logV, tw.key)
}

func TestWitnessDownNeverBlocksAndCloseIsBounded(t *testing.T) {
	logS, _ := witnessTestLogKey(t)
	lg := newWitnessTestLog(t, witnessTestOrigin, logS, "a")
	var events [][]byte
	for range 10 {
		lg.grow(t, 2)
		ev, _ := lg.checkpoint(t)
		events = append(events, ev)
	}

	hang := make(chan struct{})
	hanging := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body) // then the server notices the client going away
		select {
		case <-hang:
		case <-r.Context().Done():
		}
	}))
	defer func() {
		close(hang) // first, so that Close does not wait for the hanging handlers
		hanging.Close()
	}()
	failing := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "down", http.StatusServiceUnavailable)
	}))
	defer failing.Close()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	refused := "http://" + ln.Addr().String()
	ln.Close()

	for name, u := range map[string]string{"hanging": hanging.URL, "failing": failing.URL, "refused": refused} {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			w := newTestWitness(t, Options{URL: u, StateFile: filepath.Join(dir, "state.json"), CosignatureFile: filepath.Join(dir, "cosignatures.jsonl")}, lg.hashes)
			start := time.Now()
			for i := range 1000 {
				w.Submit(signedCheckpoint(t, events[i*len(events)/1000]))
			}
			if d := time.Since(start); d > time.Second {
				t.Errorf("1000 submits took %v", d)
			}
			time.Sleep(50 * time.Millisecond)
			start = time.Now()
			if err := w.Close(300 * time.Millisecond); err == nil {
				t.Error("Close reported success with the witness down")
			}
			if d := time.Since(start); d > 2*time.Second {
				t.Errorf("Close took %v", d)
			}
			start = time.Now()
			w.Submit(signedCheckpoint(t, events[0])) // after Close: dropped, not blocking
			if d := time.Since(start); d > 100*time.Millisecond {
				t.Errorf("Submit after Close took %v", d)
			}
			if _, err := os.Stat(filepath.Join(dir, "state.json")); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("state saved with nothing cosigned: %v", err)
			}
			if cos := readCosignatures(t, filepath.Join(dir, "cosignatures.jsonl")); len(cos) != 0 {
				t.Errorf("cosignatures from a down witness: %+v", cos)
			}
			if n := witnessMetric(t, w, "auditproxy_witness_failures_total"); name != "hanging" && n < 1 {
				t.Errorf("auditproxy_witness_failures_total = %v with the witness %s", n, name)
			}
		})
	}
}

func TestNewWitnessChecksItsOptions(t *testing.T) {
	h := &witnessTestHashes{}
	for _, opts := range []Options{
		{URL: ""},
		{URL: "ftp://witness.example"},
		{URL: "https://"},
	} {
		if w, err := New(opts); err == nil {
			w.Close(time.Second)
			t.Errorf("New(%+v) succeeded", opts)
		}
	}
	w := newTestWitness(t, Options{URL: "https://witness.example"}, h)
	if err := w.Close(time.Second); err != nil {
		t.Errorf("Close with nothing queued: %v", err)
	}
}

// witnessMetric reads one of the counters w registers.
func witnessMetric(t *testing.T, w *Client, name string) float64 {
	t.Helper()
	return testutil.MetricValue(t, w.Register, name)
}

// signedCheckpoint reads a checkpoint event as the log hands it on.
func signedCheckpoint(t *testing.T, event []byte) auditlog.SignedCheckpoint {
	t.Helper()
	cp, err := auditlog.ParseSignedCheckpoint(event)
	if err != nil {
		t.Fatal(err)
	}
	return cp
}

// cosignedLog records what a Client tells its log it cosigned.
type cosignedLog struct {
	*witnessTestHashes
	mu    sync.Mutex
	sizes map[string]int64
}

func (l *cosignedLog) WitnessCosigned(origin string, size int64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.sizes[origin] = size
}

func (l *cosignedLog) size(origin string) int64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.sizes[origin]
}

// TestCheckpointsBeforeStartAreSent: a Client is made before the log opens
// (so that the log's first checkpoints reach it) and started once it is.
// What was submitted meanwhile is sent once it starts; the log is told
// the size the state file holds at Start, and each new cosignature after;
// a Client closed without being started ends at once and says what it did
// not send.
func TestCheckpointsBeforeStartAreSent(t *testing.T) {
	logS, logV := witnessTestLogKey(t)
	tw := startTestTlogWitness(t, note.VerifierList(logV), nil, witnessTestOrigin)
	dir := t.TempDir()
	lg := newWitnessTestLog(t, witnessTestOrigin, logS, "a")
	opts := Options{URL: tw.srv.URL, StateFile: filepath.Join(dir, "witness.json")}
	w, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	lg.grow(t, 6)
	ev, size := lg.checkpoint(t)
	w.Submit(signedCheckpoint(t, ev))
	time.Sleep(50 * time.Millisecond)
	if n := len(tw.requests()); n != 0 {
		t.Fatalf("%d requests to the witness before Start", n)
	}
	cl := &cosignedLog{witnessTestHashes: lg.hashes, sizes: map[string]int64{}}
	w.Start(cl)
	waitForWitness(t, "the checkpoint submitted before Start cosigned", func() bool { return cl.size(witnessTestOrigin) == size })
	if err := w.Close(5 * time.Second); err != nil {
		t.Fatal(err)
	}

	// A restart: the log hears the stored size at Start, before any
	// checkpoint.
	w, err = New(opts)
	if err != nil {
		t.Fatal(err)
	}
	cl2 := &cosignedLog{witnessTestHashes: lg.hashes, sizes: map[string]int64{}}
	w.Start(cl2)
	if got := cl2.size(witnessTestOrigin); got != size {
		t.Errorf("at Start the log heard size %d, want %d from the state file", got, size)
	}
	w.Close(time.Second)

	// Never started: Close does not wait, and names what was not sent.
	w, err = New(opts)
	if err != nil {
		t.Fatal(err)
	}
	lg.grow(t, 2)
	ev, _ = lg.checkpoint(t)
	w.Submit(signedCheckpoint(t, ev))
	start := time.Now()
	if err := w.Close(5 * time.Second); err == nil || !strings.Contains(err.Error(), "1 checkpoint(s) not cosigned") {
		t.Errorf("Close of a Client never started: %v", err)
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("Close of a Client never started took %v", d)
	}
}
