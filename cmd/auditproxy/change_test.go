package main

import (
	"bytes"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/auditproxy/auditproxy/change"
	"github.com/auditproxy/auditproxy/internal/fakevllm"
	"github.com/auditproxy/auditproxy/internal/testutil"
)

// TestSignedChangeRecordsThroughServe: operators prepare change records,
// sign them with ssh-keygen and submit them; serve records only those
// signed by their actor (and a different approver where the type needs
// one) under the allowed-signers file, and verify checks the recorded ones
// again offline, catching an edited record.
func TestSignedChangeRecordsThroughServe(t *testing.T) {
	sarah, marcus, mallory := testutil.NewSSHKey(t, "sarah"), testutil.NewSSHKey(t, "marcus"), testutil.NewSSHKey(t, "mallory")
	dir := t.TempDir()
	allowed := filepath.Join(dir, "allowed_signers")
	os.WriteFile(allowed, []byte("sarah@example.com "+sarah.Public+"\nmarcus@example.com "+marcus.Public+"\n"), 0o644)

	_, upstream := startFake(t, fakevllm.Config{})
	dataDir := t.TempDir()
	p := startServe(t, upstream, nil, "--data-dir", dataDir, "--log-level", "warn",
		"--allowed-signers", allowed, "--require-signed-annotations", "--approval-required", "model_rollout,gpu_tier_change",
		"--change-outcome-window", "1s")
	admin := []string{"--admin", "http://" + p.admin, "--token-file", filepath.Join(dataDir, "admin.token")}

	prepare := func(name string, args ...string) string {
		t.Helper()
		file := filepath.Join(dir, name)
		var errOut bytes.Buffer
		if code := run(append([]string{"annotate", "prepare", "--out", file}, args...), io.Discard, &errOut); code != 0 ||
			!strings.Contains(errOut.String(), "ssh-keygen -Y sign -n "+change.Namespace) {
			t.Fatalf("annotate prepare: %d %s", code, errOut.String())
		}
		return file
	}
	submit := func(record string, sigs ...string) (int, string) {
		t.Helper()
		args := append([]string{"annotate", "submit", "--record", record}, admin...)
		for _, s := range sigs {
			args = append(args, "--signature", s)
		}
		var out, errOut bytes.Buffer
		code := run(args, &out, &errOut)
		return code, out.String() + errOut.String()
	}
	signed := func(k testutil.SSHKey, file, as string) string {
		t.Helper()
		sig := k.SignFile(t, file, change.Namespace)
		renamed := file + "." + as + ".sig"
		if err := os.Rename(sig, renamed); err != nil {
			t.Fatal(err)
		}
		return renamed
	}
	rollout := []string{"--type", "model_rollout", "--resource", "prod-cluster/vllm-llama-70b", "--actor", "sarah@example.com",
		"--justification", "KV cache pressure finding #4471", "--ticket", "OPS-2891", "--mode", "planned", "--finding", "#4471",
		"--before", `{"model":"llama-3.1-70b","replicas":2}`, "--after", `{"model":"llama-3.3-70b","replicas":2}`}

	good := prepare("good.json", append(rollout, "--approver", "marcus@example.com")...)
	if code, out := submit(good, signed(sarah, good, "sarah"), signed(marcus, good, "marcus")); code != 0 || !strings.Contains(out, "recorded annotation event") {
		t.Fatalf("a record signed by its actor and approver: %d %s", code, out)
	}

	forged := prepare("forged.json", append(rollout, "--approver", "marcus@example.com")...)
	self := prepare("self.json", append(rollout, "--approver", "sarah@example.com")...)
	unknown := prepare("unknown.json", append(rollout, "--approver", "marcus@example.com")...)
	tampered := prepare("tampered.json", append(rollout, "--approver", "marcus@example.com")...)
	tamperedSigs := []string{signed(sarah, tampered, "sarah"), signed(marcus, tampered, "marcus")}
	b, _ := os.ReadFile(tampered)
	os.WriteFile(tampered, bytes.Replace(b, []byte(`"replicas":2}`), []byte(`"replicas":8}`), 1), 0o644)
	for _, tc := range []struct {
		name   string
		record string
		sigs   []string
		want   string
	}{
		{"a forged actor (marcus signs as sarah)", forged, []string{signed(marcus, forged, "marcus")}, "no signature of the actor sarah@example.com"},
		{"the actor approving their own change", self, []string{signed(sarah, self, "sarah")}, "needs an approver other than its actor"},
		{"an unknown signer", unknown, []string{signed(sarah, unknown, "sarah"), signed(mallory, unknown, "mallory")}, "which the allowed-signers file does not list"},
		{"the after state changed after signing", tampered, tamperedSigs, "does not verify over the record"},
	} {
		code, out := submit(tc.record, tc.sigs...)
		if code != 1 || !strings.Contains(out, "403 Forbidden") || !strings.Contains(out, tc.want) {
			t.Errorf("%s: exit %d: %s", tc.name, code, out)
		}
	}
	var errOut bytes.Buffer
	if code := run(append([]string{"annotate", "--type", "model_rollout", "--actor", "sarah@example.com", "--justification", "x"}, admin...), io.Discard, &errOut); code != 1 ||
		!strings.Contains(errOut.String(), "takes only signed change records") {
		t.Errorf("an unsigned annotation with --require-signed-annotations: %d %s", code, errOut.String())
	}
	if err := p.stop(); err != nil {
		t.Fatal(err)
	}

	// Offline: the recorded record checks again; an edited copy does not.
	var exported bytes.Buffer
	run([]string{"export", "--data-dir", dataDir}, &exported, io.Discard)
	if n := bytes.Count(exported.Bytes(), []byte(`"type":"annotation","v":1}`)); n != 1 {
		t.Fatalf("%d annotation events, want the one accepted:\n%s", n, exported.String())
	}
	// Its outcome follows it: the requests of a second before and after.
	annotationID := regexp.MustCompile(`"id":"([^"]+)","log":\{[^\n]*"type":"annotation","v":1\}`).FindSubmatch(exported.Bytes())
	if annotationID == nil || !regexp.MustCompile(`"details":\{"after":\{[^\n]*"change":\{"id":"`+string(annotationID[1])+`","resource":"prod-cluster/vllm-llama-70b","time":"[^"]+","type":"annotation"\}[^\n]*"type":"change_outcome"`).Match(exported.Bytes()) {
		t.Errorf("no change_outcome event for the annotation:\n%s", exported.String())
	}
	// All changes to the deployment, with approvals and outcomes: the
	// annotation (its signatures) and its change_outcome; nothing else.
	var changes bytes.Buffer
	if code := run([]string{"query", "--resource", "prod-cluster/vllm-llama-70b", dataDir}, &changes, io.Discard); code != 0 ||
		strings.Count(changes.String(), "\n") != 2 || !strings.Contains(changes.String(), `"role":"approver"`) ||
		!strings.Contains(changes.String(), `"type":"change_outcome"`) {
		t.Errorf("query --resource: %d\n%s", code, changes.String())
	}
	pub := filepath.Join(dataDir, "signing.key.pub")
	events := filepath.Join(dir, "events.ndjson")
	os.WriteFile(events, exported.Bytes(), 0o644)
	var out bytes.Buffer
	if code := run([]string{"verify", "--pubkey", pub, "--allowed-signers", allowed, events}, &out, io.Discard); code != 0 ||
		!strings.Contains(out.String(), "change records: 1 signed, their signatures checked with --allowed-signers; 0 unsigned") {
		t.Errorf("verify --allowed-signers: %d\n%s", code, out.String())
	}
	// An escape cannot hide the annotation from the check: the chain is
	// verified on the canonical form, and so are change records.
	escaped := filepath.Join(dir, "escaped.ndjson")
	os.WriteFile(escaped, bytes.Replace(exported.Bytes(), []byte(`"type":"annotation","v":1}`), []byte(`"type":"annot\u0061tion","v":1}`), 1), 0o644)
	out.Reset()
	if code := run([]string{"verify", "--pubkey", pub, "--allowed-signers", allowed, escaped}, &out, io.Discard); code != 0 ||
		!strings.Contains(out.String(), "change records: 1 signed") {
		t.Errorf("verify of a copy with the annotation's type escaped: %d\n%s", code, out.String())
	}
	edited := filepath.Join(dir, "edited.ndjson")
	os.WriteFile(edited, bytes.Replace(exported.Bytes(), []byte(`"llama-3.3-70b"`), []byte(`"llama-3.3-8b"`), 1), 0o644)
	out.Reset()
	if code := run([]string{"verify", "--pubkey", pub, "--allowed-signers", allowed, edited}, &out, io.Discard); code != 1 ||
		!strings.Contains(out.String(), "does not verify over the record") {
		t.Errorf("verify of an edited change record: %d\n%s", code, out.String())
	}
	// Someone else's file: the record's signers are not allowed there.
	other := filepath.Join(dir, "other_signers")
	os.WriteFile(other, []byte("sarah@example.com "+mallory.Public+"\n"), 0o644)
	out.Reset()
	if code := run([]string{"verify", "--pubkey", pub, "--allowed-signers", other, events}, &out, io.Discard); code != 1 ||
		!strings.Contains(out.String(), "which the allowed-signers file does not list") {
		t.Errorf("verify with another allowed-signers file: %d\n%s", code, out.String())
	}
}
