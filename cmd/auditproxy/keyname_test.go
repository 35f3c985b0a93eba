package main

import (
	"bytes"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestKeyNameFollowsTheLog: the signing key is named after the log, the
// part of the origin (NAME/EPOCH) that stays across epochs; keygen's
// default is the default --log-name, and a key named otherwise is
// warned about.
func TestKeyNameFollowsTheLog(t *testing.T) {
	host, _ := os.Hostname()
	out := filepath.Join(t.TempDir(), "signing.key")
	var vkey bytes.Buffer
	if code := run([]string{"keygen", "--out", out}, &vkey, io.Discard); code != 0 {
		t.Fatalf("keygen exited %d", code)
	}
	if name, _, _ := strings.Cut(vkey.String(), "+"); name != keyNameFor(host) {
		t.Errorf("keygen named the key %q, want the default log name %q", name, keyNameFor(host))
	}
	for _, tc := range []struct{ key, log, want string }{
		{"gpu-node-7", "gpu-node-7", ""},
		{"gpu-node-7", "gpu node+7", ""},
		{"auditproxy-gpu-node-7", "gpu-node-7", `is named "auditproxy-gpu-node-7", not after the log "gpu-node-7"`},
	} {
		if got := keyNameWarning(tc.key, tc.log); tc.want == "" && got != "" || !strings.Contains(got, tc.want) {
			t.Errorf("keyNameWarning(%q, %q) = %q, want %q", tc.key, tc.log, got, tc.want)
		}
	}
}
