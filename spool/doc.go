// Package spool owns the durable queue of audit events on local disk, the
// source of truth until the aggregator has acknowledged them: segments and
// their frames, group commits, recovery after a crash, the data-dir lock's
// use, the state file, sealing, retention, damage and quarantine, and the
// readers of committed records (Reader for a shipper, Export and
// ReadSegmentFile for auditors).
//
// Events are appended to segment files in DATA-DIR/spool, each record framed
// with its length and CRC-32C (see segment.go). Appends are group commits:
// the events recorded since the last commit go out in one write(2)
// followed by one fsync. With DurabilitySync, Record returns only after the
// commit holding its event, and the proxy holds back the end of the answer
// until then. A segment is rotated when it reaches SegmentMaxBytes or
// SegmentMaxAge, then compressed with zstd (NAME.seg.zst) off the hot path.
//
// On open, the newest segment is checked frame by frame; a torn or corrupt
// tail (a crash during a commit) is cut off, saved beside it in a .corrupt
// file, and counted. Everything before it stays.
//
// The spool is bounded by MaxBytes: at the bound, Admit refuses new requests
// (the proxy answers 503) until acknowledged segments can be deleted or
// retention frees space. Unacknowledged events are never deleted.
//
// The state file (state.json) holds the committed and acknowledged
// positions and is replaced atomically.
//
// # The log
//
// With Options.Log, the spool is a verifiable log (package auditlog): the
// committer gives every event its place in the log as it commits it, keeps
// the log's stored hashes beside the segments (log.tree), and commits signed
// checkpoints among the events at their cadence.
package spool
