package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/valyala/fastjson"

	"github.com/auditproxy/auditproxy/audit"
	"github.com/auditproxy/auditproxy/eventsrc"
	"github.com/auditproxy/auditproxy/query"
)

const querySynopsis = "query PATH... [--since T] [--until T] [--model M] [--api-key-id K] [--request-id R] [--outcome O] [--type T] [--resource R] [--stats] [--json]"

// runQuery prints the events that match a filter, or statistics over them.
//
// The events are printed as NDJSON, one per line, each exactly as found
// (less surrounding whitespace), oldest first by "time", then by log.seq,
// then in the order read; an event seen again (same "id", as at-least-once
// shipping delivers it) is printed once. Memory: the input is streamed; the
// matching events are held for the sort, up to querySortMemory bytes, beyond
// which sorted runs go to a temporary file and are merged at the end; the
// ids of matching events are kept for dropping repeats. With --stats, no
// event is held: only two float64s per matching inference event.
//
// Lines that are not events (not JSON, no RFC 3339 "time") are skipped and
// counted; after the output, a line on stderr names the first, and the exit
// status is 1. Lines the raw pre-check rules out (see query.Query) are not
// parsed, so they are not checked.
func runQuery(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("query", querySynopsis, stderr)
	since := fs.String("since", "", "select events at or after `T`: an RFC 3339 time, a date (2026-12-04, UTC), or a span before now (90m, 24h, 30d, 2w, 8mo, 1y)")
	until := fs.String("until", "", "select events before `T` (exclusive): an RFC 3339 time, a date (UTC), or a span before now")
	var types, models, keyIDs, requestIDs, outcomes, resources stringList
	fs.Var(&models, "model", "select events for model `M` (model.name); repeat for any of several")
	fs.Var(&keyIDs, "api-key-id", "select events of API key id `K` (\"k1:<hex>\", the api_key_id field; not the key itself); repeat for any of several")
	fs.Var(&requestIDs, "request-id", "select the events of request `R` (X-Request-Id); repeat for any of several")
	fs.Var(&outcomes, "outcome", "select events with outcome `O` (ok, upstream_error, upstream_unreachable, upstream_timeout, client_cancelled, rejected); repeat for any of several")
	fs.Var(&resources, "resource", "select change records and their outcomes for resource `R` (an annotation's record.resource, a change_outcome's change.resource: the served model name of a model_changed); repeat for any of several")
	fs.Var(&types, "type", "select events of type `T` (inference, checkpoint, log_started, proxy_started, model_changed, annotation, ...); repeat for any of several (default all)")
	stats := fs.Bool("stats", false, "print a summary of the matching inference events instead of the events")
	asJSON := fs.Bool("json", false, "with --stats, print the summary as JSON")
	paths, err := parseFlagsAndArgs(fs, args)
	if err != nil {
		return err
	}
	if len(paths) == 0 {
		return usageError{"query: give at least one PATH (event files, directories, spool segments, or - for stdin)"}
	}
	now := time.Now()
	f := query.Filter{Types: types, Models: models, APIKeyIDs: keyIDs, RequestIDs: requestIDs, Resources: resources}
	if f.Since, err = query.ParseTimeBound(*since, now); err != nil {
		return usageError{fmt.Sprintf("query: --since %q: %v", *since, err)}
	}
	if f.Until, err = query.ParseTimeBound(*until, now); err != nil {
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
		st     query.Stats
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
	switch {
	case *stats && *asJSON:
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		enc.SetEscapeHTML(false)
		err = enc.Encode(st.Summary())
	case *stats:
		err = printStats(w, st.Summary())
	default:
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

// printStats writes a summary as text: the totals, then a table by model.
func printStats(w io.Writer, s query.StatsSummary) error {
	if s.Events == 0 {
		_, err := fmt.Fprintln(w, "inference events: 0")
		return err
	}
	g := s.StatsGroup
	fmt.Fprintf(w, "inference events: %d, %s to %s\n", g.Events,
		time.Time(g.First).Format(time.RFC3339Nano), time.Time(g.Last).Format(time.RFC3339Nano))
	fmt.Fprintf(w, "errors:           %d (%s)", g.Errors, percent(g.ErrorRate))
	var outcomes, unknown []string // not ok: known ones in declaration order, then the others
	for _, o := range audit.Outcomes() {
		if n := g.Outcomes[string(o)]; n > 0 && o != audit.OutcomeOK {
			outcomes = append(outcomes, fmt.Sprintf("%s %d", o, n))
		}
	}
	for o, n := range g.Outcomes {
		if _, err := audit.ParseOutcome(o); err != nil {
			unknown = append(unknown, fmt.Sprintf("%q %d", o, n))
		}
	}
	slices.Sort(unknown)
	outcomes = append(outcomes, unknown...)
	if len(outcomes) > 0 {
		fmt.Fprintf(w, ": %s", strings.Join(outcomes, ", "))
	}
	fmt.Fprintln(w)
	fmt.Fprintf(w, "latency total ms: %s\n", percentilesText(g.Latency.Total, "events"))
	fmt.Fprintf(w, "latency ttft ms:  %s\n", percentilesText(g.Latency.TTFT, "streamed events"))
	fmt.Fprintf(w, "tokens:           input %d, output %d\n\n", g.InputTokens, g.OutputTokens)

	rows := [][]string{{"MODEL", "EVENTS", "ERRORS", "ERROR%", "TOTAL P50", "P95", "P99",
		"TTFT P50", "P95", "P99", "INPUT TOKENS", "OUTPUT TOKENS"}}
	for _, m := range s.Models {
		name := m.Model
		if name == "" {
			name = "(none)"
		} else if strings.ContainsFunc(name, func(r rune) bool { return !unicode.IsPrint(r) }) {
			name = strconv.Quote(name) // the client chose it: no control characters to the terminal
		}
		row := []string{name, strconv.FormatInt(m.Events, 10), strconv.FormatInt(m.Errors, 10), percent(m.ErrorRate)}
		row = append(row, percentileCells(m.Latency.Total)...)
		row = append(row, percentileCells(m.Latency.TTFT)...)
		rows = append(rows, append(row, strconv.FormatInt(m.InputTokens, 10), strconv.FormatInt(m.OutputTokens, 10)))
	}
	return writeTable(w, rows)
}

// writeTable writes rows as columns two spaces apart: the first aligned
// left, the others (numbers) right.
func writeTable(w io.Writer, rows [][]string) error {
	widths := make([]int, len(rows[0]))
	for _, row := range rows {
		for i, cell := range row {
			widths[i] = max(widths[i], utf8.RuneCountInString(cell))
		}
	}
	var b strings.Builder
	for _, row := range rows {
		for i, cell := range row {
			pad := strings.Repeat(" ", widths[i]-utf8.RuneCountInString(cell))
			switch {
			case i == 0:
				b.WriteString(cell)
				if len(row) > 1 {
					b.WriteString(pad)
				}
			default:
				b.WriteString("  ")
				b.WriteString(pad)
				b.WriteString(cell)
			}
		}
		b.WriteByte('\n')
	}
	_, err := io.WriteString(w, b.String())
	return err
}

func percent(rate float64) string { return strconv.FormatFloat(rate*100, 'f', 2, 64) + "%" }

func ms(f float64) string { return strconv.FormatFloat(f, 'f', -1, 64) }

func percentilesText(p *query.Percentiles, what string) string {
	if p == nil {
		return "none"
	}
	return fmt.Sprintf("p50 %s  p95 %s  p99 %s  (%s: %d)", ms(p.P50), ms(p.P95), ms(p.P99), what, p.Count)
}

func percentileCells(p *query.Percentiles) []string {
	if p == nil {
		return []string{"-", "-", "-"}
	}
	return []string{ms(p.P50), ms(p.P95), ms(p.P99)}
}

// querySortMemory is how many bytes of matching events query holds before
// it writes a sorted run to a temporary file.
var querySortMemory = 256 << 20
