package change

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/hiddeco/sshsig"
	"golang.org/x/crypto/ssh"
)

// Namespace is the SSHSIG namespace of change records: a signature made
// for anything else (git commits, files) does not sign a record.
const Namespace = "auditproxy-change"

// Policy is what the sidecar requires of change records.
type Policy struct {
	// ApprovalRequired lists the change types that need an approver
	// other than the actor, who signs too (the two-person rule).
	ApprovalRequired []string
}

// Signature is a signature on a record as an annotation event keeps it.
type Signature struct {
	// Role is "actor" or "approver": whose signature it is.
	Role string `json:"role"`
	// Principal is the identity it signs for: the record's actor or
	// approver.
	Principal string `json:"principal"`
	// Key is the signing key's SHA256 fingerprint, as ssh-keygen -l
	// prints it.
	Key string `json:"key"`
	// SSHSIG is the signature, armored as ssh-keygen -Y sign writes it.
	SSHSIG string `json:"sshsig"`

	pub ssh.PublicKey
}

// Signed is a checked record with its signatures: the details of an
// annotation event.
type Signed struct {
	Record     json.RawMessage `json:"record"` // canonical
	Signatures []Signature     `json:"signatures"`
	// ApprovalRequired says the sidecar's policy required a second person
	// for the record's type when it took the record: an auditor's check
	// requires it again without knowing the policy.
	ApprovalRequired bool `json:"approval_required"`
}

// Check verifies armored SSH signatures on the record whose canonical form
// is canon, made at time at: each must verify and be by a key allowed to
// sign for the record's actor or approver; the actor must have signed, and
// so must a named approver; a type that policy lists needs an approver
// other than the actor, with a key of their own. It returns the record
// with its signatures, in the form an annotation event keeps.
func Check(r *Record, canon []byte, armored []string, allowed *AllowedSigners, policy Policy, at time.Time) (*Signed, error) {
	if allowed == nil {
		return nil, errors.New("no allowed-signers file: signed change records cannot be checked")
	}
	out := &Signed{Record: canon, ApprovalRequired: oneOf(r.Type, policy.ApprovalRequired)}
	var actorKey, approverKey string
	var actorPub, approverPub ssh.PublicKey
	for i, a := range armored {
		sig, err := sshsig.Unarmor([]byte(a))
		if err != nil {
			return nil, fmt.Errorf("signature %d: not an SSH signature (ssh-keygen -Y sign): %v", i+1, err)
		}
		s, err := checkOne(r, canon, sig, allowed, at)
		if err != nil {
			return nil, fmt.Errorf("signature %d: %v", i+1, err)
		}
		switch s.Role {
		case "actor":
			if actorKey != "" {
				return nil, fmt.Errorf("signature %d: the actor %s signed twice", i+1, r.Actor)
			}
			actorKey, actorPub = s.Key, s.pub
		case "approver":
			if approverKey != "" {
				return nil, fmt.Errorf("signature %d: the approver %s signed twice", i+1, r.Approver)
			}
			approverKey, approverPub = s.Key, s.pub
		}
		out.Signatures = append(out.Signatures, s)
	}
	needsApproval := oneOf(r.Type, policy.ApprovalRequired)
	switch {
	case actorKey == "":
		return nil, fmt.Errorf("no signature of the actor %s", r.Actor)
	case needsApproval && r.Approver == "":
		return nil, fmt.Errorf("a %s change needs an approver (two-person rule)", r.Type)
	case needsApproval && r.Approver == r.Actor:
		return nil, fmt.Errorf("a %s change needs an approver other than its actor %s (two-person rule)", r.Type, r.Actor)
	case r.Approver != "" && approverKey == "":
		return nil, fmt.Errorf("no signature of the approver %s: an approval must be signed by its approver", r.Approver)
	case needsApproval && approverKey == actorKey:
		return nil, fmt.Errorf("the actor and the approver signed with one key (%s): a %s change needs two people", actorKey, r.Type)
	case needsApproval && allowed.Allows(actorPub, r.Approver, Namespace, at):
		return nil, fmt.Errorf("the actor's key %s is also allowed for the approver %s: one person holds both identities, and a %s change needs two people", actorKey, r.Approver, r.Type)
	case needsApproval && allowed.Allows(approverPub, r.Actor, Namespace, at):
		return nil, fmt.Errorf("the approver's key %s is also allowed for the actor %s: one person holds both identities, and a %s change needs two people", approverKey, r.Actor, r.Type)
	}
	return out, nil
}

// checkOne verifies one signature on canon and says whose it is.
func checkOne(r *Record, canon []byte, sig *sshsig.Signature, allowed *AllowedSigners, at time.Time) (Signature, error) {
	fp := ssh.FingerprintSHA256(sig.PublicKey)
	if sig.Namespace != Namespace {
		return Signature{}, fmt.Errorf("made for namespace %q, not %q (sign with ssh-keygen -Y sign -n %s)", sig.Namespace, Namespace, Namespace)
	}
	if err := sshsig.Verify(bytes.NewReader(canon), sig, sig.PublicKey, sig.HashAlgorithm, Namespace); err != nil {
		return Signature{}, fmt.Errorf("by key %s: does not verify over the record (%v): it signs other bytes than the record's canonical form", fp, err)
	}
	if !allowed.Listed(sig.PublicKey, Namespace, at) {
		return Signature{}, fmt.Errorf("by key %s, which the allowed-signers file does not list (for namespace %s at %s)", fp, Namespace, at.UTC().Format(time.RFC3339))
	}
	armored := string(sshsig.Armor(sig))
	switch {
	case allowed.Allows(sig.PublicKey, r.Actor, Namespace, at):
		return Signature{Role: "actor", Principal: r.Actor, Key: fp, SSHSIG: armored, pub: sig.PublicKey}, nil
	case r.Approver != "" && allowed.Allows(sig.PublicKey, r.Approver, Namespace, at):
		return Signature{Role: "approver", Principal: r.Approver, Key: fp, SSHSIG: armored, pub: sig.PublicKey}, nil
	}
	return Signature{}, fmt.Errorf("by key %s, allowed for %s, which is neither the actor %s nor the approver %q", fp,
		strings.Join(allowed.principalsOf(sig.PublicKey, Namespace, at), ","), r.Actor, r.Approver)
}

// CheckSigned verifies an annotation event's details again, offline: the
// record as the event holds it and each signature, against allowed and
// policy at the event's time.
func CheckSigned(details []byte, allowed *AllowedSigners, policy Policy, at time.Time) (*Record, error) {
	var s Signed
	if err := json.Unmarshal(details, &s); err != nil {
		return nil, fmt.Errorf("not a signed change record: %v", err)
	}
	r, canon, err := ParseRecord(s.Record)
	if err != nil {
		return nil, err
	}
	armored := make([]string, len(s.Signatures))
	for i, sig := range s.Signatures {
		armored[i] = sig.SSHSIG
	}
	if s.ApprovalRequired && !oneOf(r.Type, policy.ApprovalRequired) {
		policy.ApprovalRequired = append(policy.ApprovalRequired[:len(policy.ApprovalRequired):len(policy.ApprovalRequired)], r.Type)
	}
	got, err := Check(r, canon, armored, allowed, policy, at)
	if err != nil {
		return r, err
	}
	for i, sig := range got.Signatures {
		if w := s.Signatures[i]; w.Role != sig.Role || w.Principal != sig.Principal || w.Key != sig.Key {
			return r, fmt.Errorf("signature %d: the event says %s %s with key %s; it is %s %s with key %s", i+1, w.Role, w.Principal, w.Key, sig.Role, sig.Principal, sig.Key)
		}
	}
	return r, nil
}
