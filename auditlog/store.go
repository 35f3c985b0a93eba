package auditlog

import (
	"log/slog"

	"github.com/valyala/fastjson"

	"github.com/auditproxy/auditproxy/audit"
)

// Store is the spool a Log is committed to, as the Log reads it when it
// opens (package spool implements it): its segments of records and what
// its recovery found. The Log keeps its own files in Dir: log.json (the
// current origin), log.tree (the stored hashes) and log.pending (a new
// epoch not yet started).
type Store interface {
	// Dir is the directory the spool's segments and the log's files are in.
	Dir() string
	Logger() *slog.Logger
	// MaxBytes is the spool's bound, which the log's files count in.
	MaxBytes() int64
	// Segments returns the ids of the spool's segments, oldest first.
	Segments() ([]uint64, error)
	// ReadSegment calls fn with each intact record of segment id, in order,
	// reading past damage, until fn returns an error, which it returns.
	ReadSegment(id uint64, fn func(rec []byte) error) error
	// FirstRecord returns the first intact record of segment id.
	FirstRecord(id uint64) ([]byte, error)
	// Recovered returns what the spool's recovery found lost.
	Recovered() Recovered
	// ReportCommittedLost tells the spool that the log found committed
	// records lost (its stored hashes reach past the spool's newest event).
	ReportCommittedLost(detail string)
	// WakeMaintenance asks the spool's maintenance to run soon: the log's
	// stored hashes are worth a rewrite (Log.Rebase).
	WakeMaintenance()
}

// Recovered is what a spool's recovery found: committed records damaged
// (Lost) or missing from the end (CommittedLost), and the new epoch a
// previous start began and did not start (Pending). Any of them starts a
// new epoch, whose log_started event says so.
type Recovered struct {
	Lost                []audit.LostRange
	CommittedLost       bool
	CommittedLostDetail string
	Pending             *PendingEpoch
}

// PlaceOf returns rec's place in its log (its "log" member), nil when it
// has none.
func PlaceOf(p *fastjson.Parser, rec []byte) *audit.Place {
	v, err := p.ParseBytes(rec)
	if err != nil {
		return nil
	}
	origin := v.GetStringBytes("log", "origin")
	seqv := v.Get("log", "seq")
	if len(origin) == 0 || seqv == nil {
		return nil
	}
	seq, err := seqv.Int64()
	if err != nil {
		return nil
	}
	return &audit.Place{Origin: string(origin), Seq: seq}
}
