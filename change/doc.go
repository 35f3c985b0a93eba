// Package change owns change records: what an operator changed (the model
// rolled out, the GPU tier, the replicas), on which resource, from which
// state to which, why, planned or in an emergency, and who made and who
// approved it, proven by their own signatures.
//
// # Records and signatures
//
// A Record is signed as its RFC 8785 canonical JSON, the bytes Canonical
// returns and `auditproxy annotate prepare` writes to a file, with SSH
// signatures (the SSHSIG format of OpenSSH's PROTOCOL.sshsig) in the
// namespace Namespace:
//
//	ssh-keygen -Y sign -n auditproxy-change -f ~/.ssh/id_ed25519 change.json
//
// SSH keys are what a platform team already holds (git signs commits with
// them, hardware tokens carry them), and ssh-keygen signs and verifies
// without any tool of ours. The actor signs the record; where the change
// needs approval, the approver signs the same bytes.
//
// # Who may sign
//
// AllowedSigners reads OpenSSH's allowed-signers file (ssh-keygen(1),
// ALLOWED SIGNERS; git's gpg.ssh.allowedSignersFile): one line per key,
//
//	principals [options] keytype base64-key [comment]
//
// principals a comma-separated list of identities (patterns with * and ?),
// options namespaces="…", valid-after="…" and valid-before="…". A record's
// actor and approver are principals: a signature counts for a principal
// only when its key is listed for it.
//
// # Checks
//
// Check verifies a signed record against the allowed signers and a Policy
// (which change types need a second person). The sidecar runs it when an
// annotation is submitted and records the record and its signatures in the
// annotation event; an auditor runs it again, offline, with the same
// allowed-signers file, on the events (CheckEvent).
package change
