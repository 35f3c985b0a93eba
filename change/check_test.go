package change

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hiddeco/sshsig"

	"github.com/auditproxy/auditproxy/internal/testutil"
)

func testRecord(actor, approver string) *Record {
	return &Record{ID: "0b6f6e7a-8d7c-4a43-9a3b-2f0d6c1d9e10", Created: "2026-12-05T14:23:11Z", Type: "model_rollout",
		Resource: "prod-cluster/vllm-llama-70b", Actor: actor, Approver: approver, Ticket: "OPS-2891",
		Justification: "KV cache pressure finding #4471", Mode: "planned", Finding: "#4471",
		Before: json.RawMessage(`{"model":"llama-3.1-70b","replicas":2}`), After: json.RawMessage(`{"model":"llama-3.3-70b","replicas":2}`)}
}

func canonical(t *testing.T, r *Record) []byte {
	t.Helper()
	b, err := r.Canonical()
	if err != nil {
		t.Fatal(err)
	}
	if _, back, err := ParseRecord(b); err != nil || !bytes.Equal(back, b) {
		t.Fatalf("the canonical record does not parse back to itself: %v", err)
	}
	return b
}

// TestCheckSignedRecords: records signed with ssh-keygen are accepted
// only when the signers are allowed for the actor and approver they sign
// for, the approver is another person where the type needs one, and the
// record is the one signed.
func TestCheckSignedRecords(t *testing.T) {
	sarah, marcus, mallory := testutil.NewSSHKey(t, "sarah"), testutil.NewSSHKey(t, "marcus"), testutil.NewSSHKey(t, "mallory")
	allowed, err := ParseAllowedSigners("allowed_signers", []byte(
		"# the platform team\n"+
			"sarah@example.com "+sarah.Public+" sarah's laptop\n"+
			`marcus@example.com,oncall@example.com namespaces="auditproxy-change,git" `+marcus.Public+"\n"))
	if err != nil {
		t.Fatal(err)
	}
	policy := Policy{ApprovalRequired: []string{"model_rollout", "gpu_tier_change"}}
	at := time.Date(2026, 12, 5, 14, 24, 0, 0, time.UTC)

	rec := testRecord("sarah@example.com", "marcus@example.com")
	canon := canonical(t, rec)
	actorSig, approverSig := sarah.Sign(t, canon, Namespace), marcus.Sign(t, canon, Namespace)

	selfApproved := testRecord("sarah@example.com", "sarah@example.com")
	selfCanon := canonical(t, selfApproved)
	unapproved := testRecord("sarah@example.com", "")
	unapprovedCanon := canonical(t, unapproved)
	annotation := testRecord("sarah@example.com", "")
	annotation.Type = "incident_action"
	annotationCanon := canonical(t, annotation)
	forgedApproval := testRecord("sarah@example.com", "oncall@example.com") // marcus's key is allowed for oncall too
	forgedCanon := canonical(t, forgedApproval)
	// One person, two identities and two keys: sarah's second key is
	// listed for sarah.admin too.
	sarah2 := testutil.NewSSHKey(t, "sarah2")
	aliasAllowed, err := ParseAllowedSigners("allowed_signers", []byte("sarah@example.com,sarah.admin@example.com "+sarah2.Public+"\nsarah@example.com "+sarah.Public+"\n"))
	if err != nil {
		t.Fatal(err)
	}
	alias := testRecord("sarah.admin@example.com", "sarah@example.com")
	aliasCanon := canonical(t, alias)
	if _, err := Check(alias, aliasCanon, []string{sarah2.Sign(t, aliasCanon, Namespace), sarah.Sign(t, aliasCanon, Namespace)}, aliasAllowed, policy, at); err == nil ||
		!strings.Contains(err.Error(), "one person holds both identities") {
		t.Errorf("one person approving their own change under another name: %v", err)
	}
	bossApproved := testRecord("sarah@example.com", "boss@example.com")
	bossCanon := canonical(t, bossApproved)

	for _, tc := range []struct {
		name  string
		rec   *Record
		canon []byte
		sigs  []string
		want  string // in the error; "" means accepted
	}{
		{"actor and approver signed", rec, canon, []string{actorSig, approverSig}, ""},
		{"in either order", rec, canon, []string{approverSig, actorSig}, ""},
		{"a type that needs no approval, the actor alone", annotation, annotationCanon, []string{sarah.Sign(t, annotationCanon, Namespace)}, ""},
		{"the approver's signature missing", rec, canon, []string{actorSig}, "no signature of the approver marcus@example.com"},
		{"no approver for a model rollout", unapproved, unapprovedCanon, []string{sarah.Sign(t, unapprovedCanon, Namespace)}, "needs an approver (two-person rule)"},
		{"the actor approving their own change", selfApproved, selfCanon, []string{sarah.Sign(t, selfCanon, Namespace)}, "needs an approver other than its actor"},
		{"a forged actor: signed by another allowed key", rec, canon, []string{marcus.Sign(t, canon, Namespace)}, "no signature of the actor"},
		{"an unknown signer", rec, canon, []string{mallory.Sign(t, canon, Namespace), approverSig}, "which the allowed-signers file does not list"},
		{"signed for another namespace", rec, canon, []string{sarah.Sign(t, canon, "git"), approverSig}, `made for namespace "git"`},
		{"the after state changed after signing", rec, bytes.Replace(canon, []byte(`"llama-3.3-70b"`), []byte(`"llama-3.3-8b"`), 1), []string{actorSig, approverSig}, "does not verify over the record"},
		{"an approver named by another identity of the approver's key", forgedApproval, forgedCanon, []string{sarah.Sign(t, forgedCanon, Namespace), marcus.Sign(t, forgedCanon, Namespace)}, ""},
		{"a forged approver: signed by a key not allowed for them", bossApproved, bossCanon, []string{sarah.Sign(t, bossCanon, Namespace), marcus.Sign(t, bossCanon, Namespace)}, "neither the actor sarah@example.com nor the approver \"boss@example.com\""},
		{"not a signature", rec, canon, []string{"-----BEGIN SSH SIGNATURE-----\nAAAA\n-----END SSH SIGNATURE-----\n"}, "not an SSH signature"},
		{"the actor twice", rec, canon, []string{actorSig, actorSig, approverSig}, "signed twice"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := tc.rec
			if !bytes.Equal(tc.canon, canonical(t, tc.rec)) {
				// The bytes were changed after signing: what the sidecar
				// receives is that record.
				var err error
				if r, _, err = ParseRecord(tc.canon); err != nil {
					t.Fatal(err)
				}
			}
			signed, err := Check(r, tc.canon, tc.sigs, allowed, policy, at)
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("refused: %v", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("error %v, want one saying %q", err, tc.want)
			case err != nil:
				return
			}
			// What the event keeps checks again, offline.
			details, _ := json.Marshal(signed)
			if _, err := CheckSigned(details, allowed, Policy{}, at); err != nil {
				t.Errorf("the event's details do not check again: %v", err)
			}
			tampered := bytes.Replace(details, []byte(`replicas`), []byte(`Replicas`), 1)
			if _, err := CheckSigned(tampered, allowed, Policy{}, at); err == nil {
				t.Error("the event's record changed, and it still checks")
			}
		})
	}
	// Offline, the two-person rule follows the event: a record the policy
	// required approval for is checked so without the policy.
	signed, err := Check(rec, canon, []string{actorSig, approverSig}, allowed, policy, at)
	if err != nil || !signed.ApprovalRequired {
		t.Fatalf("Check: %v, approval required %v", err, signed != nil && signed.ApprovalRequired)
	}
	signed.Signatures = signed.Signatures[:1]
	details, _ := json.Marshal(signed)
	if _, err := CheckSigned(details, allowed, Policy{}, at); err == nil || !strings.Contains(err.Error(), "no signature of the approver") {
		t.Errorf("an event whose approval signature was removed: %v", err)
	}
}

// TestAllowedSignersAgreeWithOpenSSH: for each line form, ssh-keygen -Y
// verify and AllowedSigners agree on who may sign.
func TestAllowedSignersAgreeWithOpenSSH(t *testing.T) {
	k := testutil.NewSSHKey(t, "k")
	data := []byte(`{"x":1}`)
	sig := k.Sign(t, data, Namespace)
	dir := t.TempDir()
	file, sigFile := filepath.Join(dir, "data"), filepath.Join(dir, "data.sig")
	os.WriteFile(file, data, 0o600)
	os.WriteFile(sigFile, []byte(sig), 0o600)
	for _, line := range []string{
		`"alice@example.com, bob@example.com" ` + k.Public,                     // OpenSSH trims nothing: " bob@example.com"
		"alice@example.com " + k.Public + "\n*,!alice@example.com " + k.Public, // lines taken one by one
		"*,!alice@example.com " + k.Public + "\nalice@example.com " + k.Public,
		`alice@example.com valid-after="20200101UTC" ` + k.Public,
		`alice@example.com valid-before="20991231z" ` + k.Public,
		"alice@example.com " + k.Public,
		"*@example.com " + k.Public,
		"alice@example.com,bob@example.com " + k.Public,
		`"alice@example.com" ` + k.Public,
		`alice@example.com namespaces="git" ` + k.Public,
		`alice@example.com namespaces="git,auditproxy-change" ` + k.Public,
		`alice@example.com valid-before="20200101" ` + k.Public,
		`alice@example.com valid-after="20991231Z" ` + k.Public,
		`alice@example.com valid-after="20200101",valid-before="20990101Z" ` + k.Public,
		`*,!alice@example.com ` + k.Public,
		`?lice@example.com ` + k.Public,
	} {
		allowedFile := filepath.Join(dir, "allowed")
		if err := os.WriteFile(allowedFile, []byte(line+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		for _, who := range []string{"alice@example.com", "bob@example.com"} {
			cmd := exec.Command("ssh-keygen", "-Y", "verify", "-f", allowedFile, "-I", who, "-n", Namespace, "-s", sigFile)
			cmd.Stdin = bytes.NewReader(data)
			out, err := cmd.CombinedOutput()
			openssh := err == nil
			as, perr := ParseAllowedSigners("allowed", []byte(line))
			if perr != nil {
				t.Fatalf("%s: %v", line, perr)
			}
			s, _ := sshsig.Unarmor([]byte(sig))
			ours := as.Allows(s.PublicKey, who, Namespace, time.Now())
			if ours != openssh {
				t.Errorf("%q for %s: ours %v, ssh-keygen %v (%s)", line, who, ours, openssh, bytes.TrimSpace(out))
			}
		}
	}
	for _, bad := range []string{
		"", "# only a comment",
		"alice@example.com",
		"alice@example.com ssh-ed25519 notbase64!",
		"alice@example.com cert-authority " + k.Public,
		`alice@example.com verify-required ` + k.Public,
		`alice@example.com valid-after="yesterday" ` + k.Public,
		`alice@example.com namespaces="git",namespaces="auditproxy-change" ` + k.Public,
		"-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\n-----END OPENSSH PRIVATE KEY-----\n",
		`"alice@example.com ` + k.Public,
	} {
		if _, err := ParseAllowedSigners("allowed", []byte(bad)); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

// TestParseRecordRefuses: records that are not what was signed, or not a
// record, are refused with what is wrong.
func TestParseRecordRefuses(t *testing.T) {
	good := canonical(t, testRecord("a", "b"))
	for _, tc := range []struct{ in, want string }{
		{`{"id":"x","id":"y"}`, "duplicate"},
		{strings.Replace(string(good), `"actor":"a",`, ``, 1), "actor is required"},
		{strings.Replace(string(good), `"mode":"planned"`, `"mode":"whenever"`, 1), `mode "whenever"`},
		{strings.Replace(string(good), `"created":"2026-12-05T14:23:11Z"`, `"created":"yesterday"`, 1), "not an RFC 3339 time"},
		{strings.Replace(string(good), `"before":{`, `"before":[],"b4":{`, 1), "unknown field"},
		{strings.Replace(string(good), `"before":{"model":"llama-3.1-70b","replicas":2}`, `"before":"x"`, 1), "before is not a JSON object"},
		{strings.Replace(string(good), `"before":{"model":"llama-3.1-70b","replicas":2}`, `"before":{"big":"`+strings.Repeat("x", MaxStateBytes)+`"}`, 1), "more than"},
		{strings.Replace(string(good), `"ticket":"OPS-2891"`, `"ticket":""`, 1), "empty or null"},
		{strings.Replace(string(good), `"mode":"planned"`, `"outcome":"applied"`, 1), "needs follows"},
		{"\xff", ""},
		{`[]`, ""},
	} {
		if _, _, err := ParseRecord([]byte(tc.in)); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%.80s: %v, want an error saying %q", tc.in, err, tc.want)
		}
	}
}

// TestWildcardIsNotExponential: a pattern of many stars against a long
// identity (actor and approver may be 4 KiB) answers at once, as a
// backtracking matcher would not; and the matcher agrees with a plain
// reading of *, ? and literals.
func TestWildcardIsNotExponential(t *testing.T) {
	long := strings.Repeat("a", MaxTextBytes)
	if wildcard(strings.Repeat("*a", 20)+"*b", long) {
		t.Error("matched a b that is not there")
	}
	for _, tc := range []struct {
		p, s string
		want bool
	}{
		{"*", "", true}, {"", "", true}, {"", "a", false}, {"a*", "abc", true}, {"*c", "abc", true},
		{"a?c", "abc", true}, {"a?c", "ac", false}, {"*@example.com", "alice@example.com", true},
		{"*@example.com", "alice@example.comx", false}, {"a*b*c", "aXbYc", true}, {"a*b*c", "aXcYb", false},
		{"**", "x", true}, {"?*", "", false},
	} {
		if got := wildcard(tc.p, tc.s); got != tc.want {
			t.Errorf("wildcard(%q, %q) = %v", tc.p, tc.s, got)
		}
	}
}
