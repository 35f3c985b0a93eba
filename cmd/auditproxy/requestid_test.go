package main

import (
	"bytes"
	cryptorand "crypto/rand"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"filippo.io/age"
	"golang.org/x/mod/sumdb/note"

	"github.com/auditproxy/auditproxy/audit"
	"github.com/auditproxy/auditproxy/auditlog"
)

// TestOneRequestIDMatcher: query, prove and show find the same events for a
// request id, with one matcher (query.Filter's), however the event's
// encoder escaped it; prove and show refuse to choose among several and
// count an event read from two files once.
func TestOneRequestIDMatcher(t *testing.T) {
	dir := t.TempDir()
	ev := func(id, time, requestIDJSON string) string {
		return `{"v":1,"type":"inference","id":"` + id + `","time":"2026-11-23T10:00:0` + time + `Z","request_id":` + requestIDJSON + `,"status":{"code":200,"outcome":"ok"}}`
	}
	os.WriteFile(filepath.Join(dir, "a.ndjson"), []byte(strings.Join([]string{
		ev("e1", "1", `"dup"`),
		ev("e2", "0", `"dup"`),
		ev("e3", "2", `"one"`),
		ev("e4", "3", `"it\u0027s"`), // an encoder that escapes '
		ev("e5", "4", `"caf\u00e9"`),
	}, "\n")+"\n"), 0o600)
	os.WriteFile(filepath.Join(dir, "b.jsonl"), []byte(ev("e3", "2", `"one"`)+"\n"), 0o600) // e3 again: one event
	identity, err := age.GenerateX25519Identity()
	if err != nil {
		t.Fatal(err)
	}
	idFile := filepath.Join(t.TempDir(), "identity")
	os.WriteFile(idFile, []byte(identity.String()+"\n"), 0o600)

	for _, tc := range []struct {
		requestID string
		events    int // distinct events with it
	}{
		{"dup", 2},
		{"one", 1},
		{"it's", 1},
		{"café", 1},
		{"none", 0},
		{"on", 0},
	} {
		var out, errOut bytes.Buffer
		if code := run([]string{"query", "--request-id", tc.requestID, dir}, &out, &errOut); code != 0 {
			t.Fatalf("query %q: exit %d %s", tc.requestID, code, errOut.String())
		}
		if n := strings.Count(out.String(), "\n"); n != tc.events {
			t.Errorf("query --request-id %q: %d events, want %d", tc.requestID, n, tc.events)
		}
		for _, cmd := range [][]string{
			{"prove", "--request-id", tc.requestID, dir},
			{"show", "--request-id", tc.requestID, "--identity", idFile, dir},
		} {
			out.Reset()
			errOut.Reset()
			code := run(cmd, &out, &errOut)
			stderr := errOut.String()
			switch tc.events {
			case 0:
				if code != 1 || !strings.Contains(stderr, cmd[0]+": no event with request_id ") {
					t.Errorf("%q: exit %d %q; want no event", cmd, code, stderr)
				}
			case 1:
				// Selected: the command goes on (prove finds no log to
				// prove it in; show, no payload to open).
				if code == 2 || strings.Contains(stderr, "no event with") || strings.Contains(stderr, "events have") {
					t.Errorf("%q: exit %d %q; want the event selected", cmd, code, stderr)
				}
			default:
				want := cmd[0] + `: 2 events have request_id "dup" (a client sent it more than once): e2 (2026-11-23T10:00:00Z), e1 (2026-11-23T10:00:01Z); give --event-id to choose one`
				if code != 2 || !strings.Contains(stderr, want) {
					t.Errorf("%q: exit %d %q; want %q", cmd, code, stderr, want)
				}
				out.Reset()
				errOut.Reset()
				code := run(append(cmd[:len(cmd)-1:len(cmd)-1], "--event-id", "e1", dir), &out, &errOut)
				if code == 2 || strings.Contains(errOut.String(), "events have") || strings.Contains(errOut.String(), "no event with") {
					t.Errorf("%q --event-id e1: exit %d %q; want the event selected", cmd, code, errOut.String())
				}
			}
		}
	}
}

// TestTimeBoundsAcceptTheSameForms: verify's --until takes what query's
// --since and --until take: RFC 3339 times and durations before now.
func TestTimeBoundsAcceptTheSameForms(t *testing.T) {
	// A log whose newest checkpoint is from now: each --until below is no
	// later than it.
	skey, vkey, err := note.GenerateKey(cryptorand.Reader, "stopped-node")
	if err != nil {
		t.Fatal(err)
	}
	signer, _ := note.NewSigner(skey)
	at := time.Now()
	c, _ := auditlog.NewChain(auditlog.ChainState{Origin: "stopped-node/20261205T080000Z"})
	log, _ := c.Append(nil, fmt.Appendf(nil, `{"v":1,"type":"inference","id":"e0","time":%q}`, at.Add(-time.Second).UTC().Format(time.RFC3339Nano)))
	log = append(log, '\n')
	log, err = c.AppendCheckpointEvent(log, signer, at, time.Hour, false, audit.Source{Host: "h"})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	pub, spoolDir := filepath.Join(dir, "signing.key.pub"), filepath.Join(dir, "events.ndjson")
	os.WriteFile(pub, []byte(vkey+"\n"), 0o644)
	os.WriteFile(spoolDir, append(log, '\n'), 0o644)
	for _, tc := range []struct {
		until string
		ok    bool
	}{
		{"2026-12-05T08:07:54Z", true},
		{"2026-12-05T09:07:54+01:00", true},
		{"1h", true},
		{"30m", true},
		{"0s", true},
		{"7d", true},
		{"yesterday", false},
		{"-1h", false},
		{"2026-12-05", true},
		{"8mo", true},
		{"2026-12-32", false},
	} {
		var out, errOut bytes.Buffer
		code := run([]string{"verify", "--pubkey", pub, "--until", tc.until, spoolDir}, &out, &errOut)
		if tc.ok && code != 0 || !tc.ok && (code != 2 || !strings.Contains(errOut.String(), `verify: --until "`+tc.until+`": want an RFC 3339 time (2026-12-04T09:30:00Z)`)) {
			t.Errorf("verify --until %q: exit %d %q %s", tc.until, code, errOut.String(), out.String())
		}
		out.Reset()
		errOut.Reset()
		code = run([]string{"query", "--until", tc.until, spoolDir}, &out, &errOut)
		if tc.ok && code != 0 || !tc.ok && (code != 2 || !strings.Contains(errOut.String(), `query: --until "`+tc.until+`": want an RFC 3339 time (2026-12-04T09:30:00Z)`)) {
			t.Errorf("query --until %q: exit %d %q", tc.until, code, errOut.String())
		}
	}
}
