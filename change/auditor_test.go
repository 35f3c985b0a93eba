package change

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/hiddeco/sshsig"
	"golang.org/x/crypto/ssh"

	"github.com/auditproxy/auditproxy/audit"
	"github.com/auditproxy/auditproxy/internal/testutil"
)

// TestAuditorChecksEachEventAgain: offline, with the allowed-signers file,
// each kind of bad change record an event could hold is reported (a log
// written by someone who skipped the sidecar's checks), and good ones,
// repeated by shipping, are counted once.
func TestAuditorChecksEachEventAgain(t *testing.T) {
	sarah, marcus, mallory := testutil.NewSSHKey(t, "sarah"), testutil.NewSSHKey(t, "marcus"), testutil.NewSSHKey(t, "mallory")
	allowed, err := ParseAllowedSigners("allowed", []byte("sarah@example.com "+sarah.Public+"\nmarcus@example.com "+marcus.Public+"\n"))
	if err != nil {
		t.Fatal(err)
	}
	keys := map[string]testutil.SSHKey{"sarah": sarah, "marcus": marcus, "mallory": mallory}
	type by struct{ key, role, principal string }
	event := func(id string, r *Record, approval bool, signers ...by) []byte {
		t.Helper()
		canon := canonical(t, r)
		var sigs []Signature
		for _, b := range signers {
			armored := keys[b.key].Sign(t, canon, Namespace)
			s, err := sshsig.Unarmor([]byte(armored))
			if err != nil {
				t.Fatal(err)
			}
			sigs = append(sigs, Signature{Role: b.role, Principal: b.principal, Key: ssh.FingerprintSHA256(s.PublicKey), SSHSIG: armored})
		}
		ev, err := audit.NewOpsEvent(audit.TypeAnnotation, Signed{Record: canon, Signatures: sigs, ApprovalRequired: approval},
			audit.Source{Host: "h"}, time.Date(2026, 12, 5, 14, 30, 0, 0, time.UTC))
		if err != nil {
			t.Fatal(err)
		}
		var e map[string]any
		json.Unmarshal(ev, &e)
		e["id"] = id
		ev, _ = json.Marshal(e)
		return ev
	}
	actor := by{"sarah", "actor", "sarah@example.com"}
	approver := by{"marcus", "approver", "marcus@example.com"}
	good := testRecord("sarah@example.com", "marcus@example.com")
	goodEvent := event("good", good, true, actor, approver)
	self := testRecord("sarah@example.com", "sarah@example.com")
	tampered := event("tampered", good, true, actor, approver)
	tampered = []byte(strings.Replace(string(tampered), `"replicas":2}`, `"replicas":8}`, 1))
	replay := *good
	a := &Auditor{Allowed: allowed}
	for _, ev := range [][]byte{
		goodEvent, goodEvent, // shipped twice: one event
		event("forged-actor", good, true, by{"marcus", "actor", "sarah@example.com"}),
		event("self-approved", self, true, actor),
		event("unknown-signer", good, true, by{"mallory", "actor", "sarah@example.com"}, approver),
		tampered,
		event("relabelled", good, true, by{"sarah", "approver", "marcus@example.com"}, approver),
		event("replayed", &replay, true, actor, approver),
		[]byte(`{"type":"annotation","id":"unsigned","time":"2026-12-05T14:30:00Z","details":{"type":"x","actor":"a","justification":"j"}}`),
		[]byte(`{"type":"inference","id":"not-a-change","time":"2026-12-05T14:30:00Z"}`),
		[]byte(`{"details":{"record":{}},"id":7,"time":"2026-12-05T14:30:00Z","type":"annotation"}`), // hidden by a numeric id
		[]byte(`{"details":"x","id":"odd","time":"2026-12-05T14:30:00Z","type":"annotation"}`),
	} {
		a.Add(ev)
	}
	r := a.Report()
	problems := strings.Join(r.Problems, "\n")
	for _, want := range []string{
		"annotation forged-actor: no signature of the actor sarah@example.com",
		"annotation self-approved: a model_rollout change needs an approver other than its actor",
		"annotation unknown-signer: signature 1: by key SHA256:",
		"annotation tampered: signature 1: by key SHA256:",
		"annotation relabelled: signature 1: the event says approver marcus@example.com",
		"an annotation event that cannot be read as one",
		"annotation odd: its details are not a JSON object",
		"change record 0b6f6e7a-8d7c-4a43-9a3b-2f0d6c1d9e10 is in annotations good and replayed",
	} {
		if !strings.Contains(problems, want) {
			t.Errorf("problems do not say %q:\n%s", want, problems)
		}
	}
	if r.Signed != 1 || r.Unsigned != 1 || len(r.Problems) != 8 {
		t.Errorf("signed %d, unsigned %d, %d problems:\n%s", r.Signed, r.Unsigned, len(r.Problems), problems)
	}
}
