package shipper

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// logBuffer collects a spool's log lines (JSON), safe for concurrent use.
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) logger() *slog.Logger {
	return slog.New(slog.NewJSONHandler(l, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// lines returns the log lines whose message contains msg, decoded.
func (l *logBuffer) lines(msg string) []map[string]any {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []map[string]any
	for _, line := range bytes.Split(l.b.Bytes(), []byte("\n")) {
		var m map[string]any
		if json.Unmarshal(line, &m) == nil && strings.Contains(m["msg"].(string), msg) {
			out = append(out, m)
		}
	}
	return out
}

// TestUnusableStateFileIsReported: a start without a usable state.json
// (deleted, corrupt, of an unknown version) ships everything again; it says
// so in one WARN with the number of events, in the recovery report and in a
// metric, and keeps an unreadable file aside. The count is exact across
// sealed segments and an epoch change, without reading them all.
func TestUnusableStateFileIsReported(t *testing.T) {
	signer, _ := testSigner(t)
	for _, tc := range []struct {
		name    string
		mangle  func(path string)
		problem string
		kept    bool
	}{
		{"deleted", func(p string) { os.Remove(p) }, "state.json is missing", false},
		{"corrupt", func(p string) { os.WriteFile(p, []byte(`{"version":1,"acked":{"segm`), 0o600) }, "is not a spool state", true},
		{"unknown version", func(p string) { os.WriteFile(p, []byte(`{"version":7,"written":{},"acked":{}}`), 0o600) }, "unknown version 7", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			opts := SpoolOptions{Forwarding: true, SegmentMaxBytes: 4 << 10, Log: logOpts(signer)}
			s := openTestSpool(t, dir, opts)
			for i := range 150 {
				s.Append(testEvent(i))
			}
			c, _ := s.Committed()
			s.Ack(c) // everything shipped
			s.Close()
			// A second epoch, so that one segment's count is not a seq difference.
			renamed := logOpts(signer)
			renamed.Name = "renamed-node"
			opts.Log = renamed
			s = openTestSpool(t, dir, opts)
			for i := range 150 {
				s.Append(testEvent(1000 + i))
			}
			c, _ = s.Committed()
			s.Ack(c)
			s.Close()
			ids, _ := exportIDs(t, dir)
			statePath := filepath.Join(dir, SpoolDirName, stateFileName)
			tc.mangle(statePath)

			var logs logBuffer
			opts.Logger = logs.logger()
			s = openTestSpool(t, dir, opts)
			if !strings.Contains(s.Recovery.StateLost, tc.problem) || s.Recovery.Resend != int64(len(ids)) {
				t.Errorf("recovery report: state lost %q, resend %d; want %q and the %d events in the spool",
					s.Recovery.StateLost, s.Recovery.Resend, tc.problem, len(ids))
			}
			if s.Acked() != (Pos{}) {
				t.Errorf("acked %v, want shipping from the oldest event", s.Acked())
			}
			warns := logs.lines("spool state file unusable")
			if len(warns) != 1 || warns[0]["level"] != "WARN" || warns[0]["events_to_resend"] != float64(len(ids)) ||
				!strings.Contains(warns[0]["problem"].(string), tc.problem) || !strings.Contains(warns[0]["msg"].(string), "deduplicates") {
				t.Errorf("warning: %v", warns)
			}
			if got := registeredValue(t, s.Register, "auditproxy_spool_state_reset_events"); got != float64(len(ids)) {
				t.Errorf("auditproxy_spool_state_reset_events = %v, want %d", got, len(ids))
			}
			if _, err := os.Stat(statePath + quarantineExt); (err == nil) != tc.kept {
				t.Errorf("unreadable state file kept aside: %v, want %v", err == nil, tc.kept)
			}
		})
	}

	// A new spool has no state file and nothing to resend: no warning.
	var logs logBuffer
	s := openTestSpool(t, t.TempDir(), SpoolOptions{Forwarding: true, Logger: logs.logger()})
	if s.Recovery.StateLost != "" || len(logs.lines("state file")) != 0 {
		t.Errorf("a new spool reports a lost state: %q", s.Recovery.StateLost)
	}
}
