// Package shipper owns what happens to an audit event after the proxy hands
// it over: the durable spool on local disk, which is the source of truth,
// and the forward-protocol connection that ships it to the aggregator.
//
// # Spool
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
// # Shipping
//
// A Shipper reads committed events from the acknowledged position on, sends
// them in Forward-mode batches with a chunk id, and advances the
// acknowledged position only when the aggregator acknowledges the chunk.
// Delivery is at least once; the event id lets the aggregator deduplicate.
package shipper
