package main

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/valyala/fastjson"

	"github.com/auditproxy/auditproxy/audit"
	"github.com/auditproxy/auditproxy/eventsrc"
	"github.com/auditproxy/auditproxy/query"
)

const querySynopsis = "query PATH... [--since T] [--until T] [--model M] [--api-key-id K] [--request-id R] [--outcome O] [--type T] [--resource R] [--stats [--by G] [--format text|json|csv]] [--tz ZONE]"

// runQuery prints the events that match a filter, or statistics over them.
//
// The events are printed as NDJSON, one per line, each exactly as found
// (less surrounding whitespace), oldest first by "time", then by log.seq,
// then in the order read; an event seen again (same "id", as at-least-once
// shipping delivers it) is printed once. Memory: the input is streamed; the
// matching events are held for the sort, up to querySortMemory bytes, beyond
// which sorted runs go to a temporary file and are merged at the end; the
// ids of matching events are kept for dropping repeats. With --stats, no
// event is held: only two float64s per matching inference event, and two
// more per --by grouping (see query.Stats).
//
// Lines that are not events (not JSON, no RFC 3339 "time") are skipped and
// counted; after the output, a line on stderr names the first, and the exit
// status is 1. Lines the raw pre-check rules out (see query.Query) are not
// parsed, so they are not checked.
func runQuery(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("query", querySynopsis, stderr)
	since := fs.String("since", "", "select events at or after `T`: an RFC 3339 time, a date (2026-12-04, from its start in UTC or --tz), or a span before now (90m, 24h, 30d, 2w, 8mo, 1y)")
	until := fs.String("until", "", "select events before `T` (exclusive): an RFC 3339 time, a date (UTC or --tz), or a span before now")
	var types, models, keyIDs, requestIDs, outcomes, resources stringList
	fs.Var(&models, "model", "select events for model `M` (model.name); repeat for any of several")
	fs.Var(&keyIDs, "api-key-id", "select events of API key id `K` (\"k1:<hex>\", the api_key_id field; not the key itself); repeat for any of several")
	fs.Var(&requestIDs, "request-id", "select the events of request `R` (X-Request-Id); repeat for any of several")
	fs.Var(&outcomes, "outcome", "select events with outcome `O` (ok, upstream_error, upstream_unreachable, upstream_timeout, client_cancelled, rejected); repeat for any of several")
	fs.Var(&resources, "resource", "select change records and their outcomes for resource `R` (an annotation's record.resource, a change_outcome's change.resource: the served model name of a model_changed); repeat for any of several")
	fs.Var(&types, "type", "select events of type `T` (inference, checkpoint, log_started, proxy_started, model_changed, annotation, ...); repeat for any of several (default all)")
	stats := fs.Bool("stats", false, "print a summary of the matching inference events instead of the events: counts by outcome (errors, client give-ups and refusals apart), error rate, latency of the ok requests, tokens")
	var by stringList
	fs.Var(&by, "by", "with --stats, also group the figures by `G`: model (name and weights checksum), key (api_key_id), outcome, hour or day (in --tz; every one of the window, empty ones too); repeat or separate with commas (default model)")
	format := fs.String("format", "text", "with --stats, print the summary as `F`: text, json, or csv (one row per group, the totals first)")
	asJSON := fs.Bool("json", false, "with --stats, the same as --format json")
	tz := fs.String("tz", "UTC", "time `zone` to read dates in and to show times and cut hours and days in: an IANA name (Europe/Paris, America/New_York), UTC, or Local")
	paths, err := parseFlagsAndArgs(fs, args)
	if err != nil {
		return err
	}
	if len(paths) == 0 {
		return usageError{"query: give at least one PATH (event files, directories, spool segments, or - for stdin)"}
	}
	loc, err := loadZone(*tz)
	if err != nil {
		return usageError{"query: " + err.Error()}
	}
	if *asJSON {
		*format = "json"
	}
	if !slices.Contains([]string{"text", "json", "csv"}, *format) {
		return usageError{fmt.Sprintf("query: --format %q: want text, json or csv", *format)}
	}
	if !*stats && (len(by) > 0 || *format != "text") {
		return usageError{"query: --by, --format and --json shape the summary of --stats; without --stats, query prints the matching events as NDJSON"}
	}
	var groupings []query.Grouping
	for _, b := range by {
		for g := range strings.SplitSeq(b, ",") {
			groupings = append(groupings, query.Grouping(strings.TrimSpace(g)))
		}
	}
	if len(groupings) == 0 {
		groupings = []query.Grouping{query.ByModel}
	}
	st, err := query.NewStats(groupings, loc)
	if err != nil {
		return usageError{"query: --by: " + err.Error()}
	}
	now := time.Now()
	f := query.Filter{Types: types, Models: models, APIKeyIDs: keyIDs, RequestIDs: requestIDs, Resources: resources}
	if f.Since, err = query.ParseTimeBound(*since, now, loc); err != nil {
		return usageError{fmt.Sprintf("query: --since %q: %v", *since, err)}
	}
	if f.Until, err = query.ParseTimeBound(*until, now, loc); err != nil {
		return usageError{fmt.Sprintf("query: --until %q: %v", *until, err)}
	}
	for _, o := range outcomes {
		oc, err := audit.ParseOutcome(o)
		if err != nil {
			return usageError{"query: --outcome: " + err.Error()}
		}
		f.Outcomes = append(f.Outcomes, oc)
	}
	if err := checkSelectors(f); err != nil {
		return err
	}
	if *stats && len(f.Types) == 0 {
		f.Types = []string{audit.TypeInference} // the only type --stats counts
	}
	q, err := query.NewQuery(f)
	if err != nil {
		return usageError{"query: --since and --until: " + err.Error()}
	}
	for _, path := range paths {
		if path == "-" {
			continue
		}
		if _, err := os.Stat(path); err != nil {
			return fmt.Errorf("query: %w", err)
		}
	}

	var (
		p      fastjson.Parser
		ids    eventsrc.IDSet
		sorter = eventsrc.NewSorter(querySortMemory)
		bad    badEvents
		n      int64 // events read from the current path
		commit query.Commitment
	)
	defer sorter.Close()
	var damaged eventsrc.DamageError // read past: reported after the output
	for _, path := range paths {
		n = 0
		err := eventsrc.Read(path, func(line []byte) {
			line = bytes.TrimSpace(line)
			if len(line) == 0 || sorter.Err() != nil {
				return
			}
			n++
			commit.Read(line)
			v, err := q.MatchValue(&p, line)
			if err == nil && v != nil {
				var t time.Time
				if t, err = query.EventTime(v); err == nil && ids.Add(v.GetStringBytes("id")) {
					commit.Select(v)
					if *stats {
						err = st.Add(v)
					} else {
						seq := int64(-1)
						if s := v.Get("log", "seq"); s != nil {
							if i, serr := s.Int64(); serr == nil {
								seq = i
							}
						}
						sorter.Add(t, seq, line)
					}
				}
			}
			if err != nil {
				bad.add(path, n, err)
			}
		})
		if err = damaged.Collect(err); err != nil {
			return fmt.Errorf("query: %w", err)
		}
		if n == 0 && path != "-" {
			fmt.Fprintf(stderr, "auditproxy: note: %s holds no events (give the spool directory, DATA-DIR/spool, or event files)\n", path)
		}
		if err := sorter.Err(); err != nil {
			return fmt.Errorf("query: sorting the events: %w", err)
		}
	}

	w := bufio.NewWriterSize(stdout, 64<<10)
	if *stats {
		var sum query.Summary
		if sum, err = st.Summary(f.Since, f.Until); err != nil {
			return usageError{"query: --by: " + err.Error()}
		}
		err = writeStats(w, *format, sum)
	} else {
		err = sorter.WriteSorted(w)
	}
	if ferr := w.Flush(); err == nil {
		err = ferr
	}
	if err != nil {
		return fmt.Errorf("query: %w", err)
	}
	if n, logs := commit.Uncommitted(); n > 0 {
		fmt.Fprintf(stderr, "auditproxy: note: %d of the selected events are not yet committed: no checkpoint among the events read commits to them, so nothing signed vouches for them yet (verify counts them as uncommitted):\n", n)
		for _, l := range logs {
			fmt.Fprintln(stderr, "  "+l)
		}
	}
	for _, t := range damaged.Torn {
		fmt.Fprintln(stderr, "auditproxy: note:", t.Error())
	}
	if len(damaged.Files) > 0 {
		if berr := bad.err(); berr != nil {
			fmt.Fprintln(stderr, "auditproxy:", berr)
		}
		return fmt.Errorf("query: %w", &damaged)
	}
	return bad.err()
}

// checkSelectors refuses values no event can match, said without
// printing a value that may be a secret: a type the sidecar never writes,
// an API key given instead of its id, a model checksum given as a model
// name.
func checkSelectors(f query.Filter) error {
	for _, t := range f.Types {
		if !slices.Contains(audit.Types, t) {
			hint := ""
			for _, known := range audit.Types {
				if strings.HasPrefix(known, t) || strings.HasPrefix(t, known) {
					hint = fmt.Sprintf(" (did you mean %s?)", known)
					break
				}
			}
			return usageError{fmt.Sprintf("query: --type %q is not an event type%s; the types are %s", t, hint, strings.Join(audit.Types, ", "))}
		}
	}
	for i, k := range f.APIKeyIDs {
		if !strings.HasPrefix(k, "k1:") {
			return usageError{fmt.Sprintf("query: --api-key-id (the %s given) is not a key id (k1:<hex>, the api_key_id of events); if it is the API key itself, find its id with: auditproxy keyid --key-id-secret-file FILE, the key on standard input", ordinal(i+1))}
		}
	}
	for _, m := range f.Models {
		if strings.HasPrefix(m, "blake3:") || strings.HasPrefix(m, "sha256:") {
			return usageError{fmt.Sprintf("query: --model %q is a checksum; --model takes the model name a request asked for (model.name); the weights' checksum is model.checksum in each event", m)}
		}
	}
	return nil
}

func ordinal(n int) string {
	switch n {
	case 1:
		return "first"
	case 2:
		return "second"
	case 3:
		return "third"
	}
	return strconv.Itoa(n) + "th"
}

// badEvents counts the lines that are not events and keeps the first.
type badEvents struct {
	count int64
	first string
}

func (b *badEvents) add(path string, n int64, err error) {
	if b.count == 0 {
		msg := err.Error()
		if len(msg) > 200 {
			msg = msg[:200] + "..."
		}
		b.first = fmt.Sprintf("%s: event %d: %s", path, n, msg)
	}
	b.count++
}

func (b *badEvents) err() error {
	switch b.count {
	case 0:
		return nil
	case 1:
		return fmt.Errorf("query: skipped 1 line that is not an event: %s", b.first)
	}
	return fmt.Errorf("query: skipped %d lines that are not events; the first: %s", b.count, b.first)
}

// querySortMemory is how many bytes of matching events query holds before
// it writes a sorted run to a temporary file.
var querySortMemory = 256 << 20
