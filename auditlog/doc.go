// Package auditlog owns the verifiable log the audit events form: each
// event's place in it, the Merkle tree over the events and its stored
// hashes, epochs, signed checkpoints and their cadence, what is done with
// each checkpoint once committed, inclusion proofs, and the Verifier that
// checks a log from its events alone.
//
// # Writing
//
// A Log is kept in a spool (package spool opens it through Options.Log):
// the spool's committer hands it every event as it frames a commit, and the
// Log places it (Chain), keeps the tree's stored hashes beside the spool's
// segments (log.tree, see hashstore.go), adds a signed checkpoint when one
// is due, and, once the commit is durable, hands each checkpoint on as a
// SignedCheckpoint (Options.OnCheckpoint) to a CheckpointDir, a
// CheckpointPoster and the witness client (package auditlog/witness). When
// it opens, the Log reads the spool through Store to continue the log of
// the spool's newest event, or starts a new epoch, whose first event
// (log_started) says why: a new data dir, committed records lost, a log
// state that cannot be trusted.
//
// # Places
//
// Every event a sidecar writes carries its place in its log, the "log"
// member (audit.LogRef):
//
//	"log":{"origin":"<origin>","seq":N,"prev":"<hex>"}
//
// An origin names one log: a sidecar instance and an epoch. Seqs number the
// origin's events from 0 without gaps; prev is the leaf hash of the event
// with seq N-1, "" for seq 0, so the events form a hash chain.
//
// # Leaves and the tree
//
// An event's leaf hash is the RFC 6962 leaf hash of its canonical bytes:
// SHA-256(0x00 || JCS(event)), JCS being RFC 8785 canonical JSON with the
// "log" member included. Canonical bytes keep a record verifiable after an
// aggregator re-encoded it (through msgpack, say) and reordered its members.
// The events of one origin, in seq order, are the leaves of an RFC 6962
// Merkle tree (Tree); Chain appends events to it, giving each its place.
//
// # Checkpoints
//
// A checkpoint is a C2SP tlog-checkpoint of the origin's tree (Checkpoint),
// signed as a note (golang.org/x/mod/sumdb/note) and recorded in the log
// itself as the event of type "checkpoint" at seq N, committing to the N
// events before it. Checkpoints come at a cadence (an interval and a count of
// events), so a Verifier can tell a log that stopped signing from one that
// was cut short; a final checkpoint (its note's extension line "final")
// marks a stop: the log goes on after it only when the sidecar restarts,
// which records proxy_started first.
//
// # Verification
//
// A Verifier takes a log's events in any order, repeated or not (shipping
// is at least once), and checks for each origin that seqs have no gaps, that
// each prev is the leaf hash of the event before, that the leaves hash to
// the root each checkpoint signs, that checkpoints are signed by a known key
// and come at their cadence, how much of what the newest checkpoint
// commits to is present, and which events come after it: uncommitted,
// signed by nothing yet (a failure with RequireCommitted, and always after
// a final checkpoint unless the sidecar restarted). A Prover gives
// inclusion proofs of chosen events.
package auditlog
