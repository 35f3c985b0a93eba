// Package spool owns the durable queue of audit events on local disk, the
// source of truth until the aggregator has acknowledged them: segments and
// their frames, group commits, recovery after a crash, the data-dir lock's
// use, the state file, sealing, retention, damage and quarantine, and the
// readers of committed records (Reader for a shipper, Export and
// ReadSegmentFile for auditors).
//
// Events are appended to segment files in DATA-DIR/spool, each record framed
// with its length and CRC-32C (see segment.go). Appends are group commits:
// the events recorded since the last commit go out in one write (pwrite(2)
// at the segment's logical end) followed by one fdatasync. With
// DurabilitySync, Record returns only after the commit holding its event,
// and the proxy holds back the end of the answer until then. Segment files
// are preallocated, so that a commit writes no metadata, and the next
// segment is prepared ahead, so that rotation does not create one on the
// commit path (see prealloc.go); the zero bytes after a segment's last
// record are its unwritten space, never read as records nor as damage. A
// segment is rotated when it reaches SegmentMaxBytes or SegmentMaxAge, then
// compressed with zstd (NAME.seg.zst, its records only) off the hot path.
//
// On open, the newest segment is checked frame by frame; a torn or corrupt
// tail (a crash during a commit) is cut off, saved beside it in a .corrupt
// file, and counted. Everything before it stays. A prepared segment a crash
// left (next.seg.prepared) is taken over.
//
// The spool is bounded by MaxBytes, preallocated space counted: at the
// bound, Admit refuses new requests
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
