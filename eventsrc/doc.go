// Package eventsrc reads audit events where an auditor finds them, and puts
// them in order: the read side of the files the sidecar and its aggregator
// write, for the verify, query, show and prove commands.
//
// # Sources
//
// A source is a path, read by Read:
//
//   - "-": standard input, JSON lines.
//   - A spool segment file (spool.IsSegmentFile: NAME.seg, or NAME.seg.zst
//     once sealed), read with spool.ReadSegmentFile: every intact record is
//     an event. Damage is read past; the error is then a *DamageError that
//     names the file and the ranges skipped, after every intact event was
//     delivered.
//   - Any other file: JSON lines, one event a line. Lines are given as read,
//     newline and surrounding whitespace included; telling an event from a
//     line that is not one is the caller's business.
//   - A directory, walked recursively in lexical order: its spool segments
//     and its files named *.ndjson, *.jsonl or *.json, except a *.json file
//     beside spool segments: in a spool's directory (DATA-DIR/spool, or a
//     copy of it under any name) that is the spool's or its log's own state
//     (one JSON document, not events), whatever spool and auditlog name it.
//
// A live data dir may change while it is read, and that is not an error: a
// segment listed in both forms (being sealed: the compressed file is
// complete, renamed into place after its fsync, and the plain one is about
// to go) is read once, from its sealed form; a plain segment sealed since
// it was listed is read from its sealed form, the segment file whose name
// extends its own; a segment deleted since it was listed (retention, or
// shipped and deleted to make room) is skipped, as spool.Export does.
//
// ReadConcurrently reads several files at once (a sealed segment
// decompresses on one core) and says which file each event came from, so
// that a caller can restore the order Read would have given.
//
// # Repeats
//
// At-least-once shipping may deliver an event more than once, and an
// auditor may read a spool beside an export of it: an event seen again
// (same "id") is a repeat. IDSet remembers the ids seen.
//
// # Order
//
// Sorter orders events by (time, log seq, order added) with bounded memory:
// it holds them up to a limit, then writes each sorted run to one temporary
// file and merges the runs at the end (an external merge sort).
package eventsrc
