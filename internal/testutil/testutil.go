// Package testutil holds the set-up that tests of several packages share:
// a checkpoint signing key, a spool event, a forward-protocol receiver, a
// metric's value, and waiting for a condition. Only tests import it.
package testutil

import (
	"bytes"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/mod/sumdb/note"

	"github.com/auditproxy/auditproxy/auditlog"
	"github.com/auditproxy/auditproxy/internal/forwardrecv"
)

// Signer returns a new Ed25519 note key named name: the signer, and the
// verifiers of its signatures.
func Signer(tb testing.TB, name string) (note.Signer, note.Verifiers) {
	tb.Helper()
	skey, vkey, err := note.GenerateKey(rand.Reader, name)
	if err != nil {
		tb.Fatal(err)
	}
	s, err := note.NewSigner(skey)
	if err != nil {
		tb.Fatal(err)
	}
	v, err := note.NewVerifier(vkey)
	if err != nil {
		tb.Fatal(err)
	}
	return s, note.VerifierList(v)
}

// Event returns the i-th of a series of small, distinct inference events
// (ids ev-000000, ev-000001, …), of varying length.
func Event(i int) []byte {
	return fmt.Appendf(nil, `{"v":1,"type":"inference","id":"ev-%06d","time":"2026-11-23T10:00:00.%09dZ","request_id":"%s","status":{"code":200,"outcome":"ok"}}`,
		i, i, strings.Repeat("r", i%40+1))
}

// WaitFor polls cond every 5 ms for up to 5 s, and fails the test, naming
// what it waited for, if cond never holds.
func WaitFor(tb testing.TB, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// MetricValue registers metrics with register in a new registry and returns
// the value of the gauge or counter name (its first series).
func MetricValue(tb testing.TB, register func(prometheus.Registerer) error, name string) float64 {
	tb.Helper()
	reg := prometheus.NewPedanticRegistry()
	if err := register(reg); err != nil {
		tb.Fatal(err)
	}
	mfs, err := reg.Gather()
	if err != nil {
		tb.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			m := mf.GetMetric()[0]
			if m.GetGauge() != nil {
				return m.GetGauge().GetValue()
			}
			return m.GetCounter().GetValue()
		}
	}
	tb.Fatalf("no metric %s", name)
	return 0
}

// StartReceiver starts an independent forward-protocol receiver (the
// aggregator of the tests) on addr, closed when the test ends.
func StartReceiver(tb testing.TB, addr string, cfg forwardrecv.Config) *forwardrecv.Receiver {
	tb.Helper()
	r, err := forwardrecv.Start(addr, cfg)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { r.Close() })
	return r
}

// LogBuffer captures a logger's JSON lines, for tests that assert on what
// was logged.
type LogBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *LogBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

// Logger returns a logger, at debug level, that writes to l.
func (l *LogBuffer) Logger() *slog.Logger {
	return slog.New(slog.NewJSONHandler(l, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// Lines returns the lines whose message contains msg, decoded.
func (l *LogBuffer) Lines(msg string) []map[string]any {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []map[string]any
	for _, line := range bytes.Split(l.b.Bytes(), []byte("\n")) {
		var m map[string]any
		if json.Unmarshal(line, &m) == nil && strings.Contains(fmt.Sprint(m["msg"]), msg) {
			out = append(out, m)
		}
	}
	return out
}

// String returns everything logged.
func (l *LogBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// CopyDir copies the regular files of directory src into dst (created if
// needed), skipping those that vanish meanwhile: the image a kill -9 leaves
// of a directory being written.
func CopyDir(tb testing.TB, src, dst string) {
	tb.Helper()
	if err := os.MkdirAll(dst, 0o700); err != nil {
		tb.Fatal(err)
	}
	entries, err := os.ReadDir(src)
	if err != nil {
		tb.Fatal(err)
	}
	for _, e := range entries {
		if !e.Type().IsRegular() {
			continue
		}
		b, err := os.ReadFile(filepath.Join(src, e.Name()))
		if errors.Is(err, os.ErrNotExist) {
			continue // a temporary file renamed or removed meanwhile
		}
		if err != nil {
			tb.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dst, e.Name()), b, 0o600); err != nil {
			tb.Fatal(err)
		}
	}
}

// DirBytes returns the bytes of every file in dir but temporary ones
// (*.tmp): what a spool directory holds on disk.
func DirBytes(tb testing.TB, dir string) int64 {
	tb.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		tb.Fatal(err)
	}
	var n int64
	for _, e := range entries {
		if strings.HasSuffix(e.Name(), ".tmp") {
			continue
		}
		fi, err := e.Info()
		if err != nil {
			tb.Fatal(err)
		}
		n += fi.Size()
	}
	return n
}

// Verify runs the auditor's verification (auditlog.Verifier) over events
// given as JSON lines, several to a slice or one each.
func Verify(keys note.Verifiers, lines ...[]byte) *auditlog.Report {
	v := auditlog.NewVerifier(keys)
	for _, l := range lines {
		for _, line := range bytes.Split(l, []byte("\n")) {
			v.Add(line)
		}
	}
	return v.Report()
}

// Problems returns every problem a verification report lists, one a line.
func Problems(r *auditlog.Report) string {
	var b strings.Builder
	b.WriteString(strings.Join(r.Problems, "\n"))
	for _, o := range r.Origins {
		b.WriteString(strings.Join(o.Problems, "\n"))
	}
	return b.String()
}

// OfType returns the events among lines (JSON objects) whose "type" is typ,
// decoded.
func OfType(tb testing.TB, lines [][]byte, typ string) []map[string]any {
	tb.Helper()
	var out []map[string]any
	for _, line := range lines {
		if len(bytes.TrimSpace(line)) == 0 {
			continue
		}
		var ev map[string]any
		if err := json.Unmarshal(line, &ev); err != nil {
			tb.Fatalf("%v: %s", err, line)
		}
		if ev["type"] == typ {
			out = append(out, ev)
		}
	}
	return out
}
