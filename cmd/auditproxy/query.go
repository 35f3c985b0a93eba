package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strings"
	"time"

	"github.com/valyala/fastjson"

	"github.com/auditproxy/auditproxy/audit"
)

// runQuery prints the events that match, or their statistics.
func runQuery(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("query", "query [filters] [--stats [--json]] PATH...", stderr)
	var models, keyIDs, requestIDs, outcomes, types stringList
	since := fs.String("since", "", "events at or after this `time` (RFC 3339, or a duration back from now: 24h)")
	until := fs.String("until", "", "events before this `time` (RFC 3339, or a duration back from now)")
	fs.Var(&models, "model", "model `name` the request asked for (repeat for any of several)")
	fs.Var(&keyIDs, "api-key-id", "keyed API key `id` (k1:...) (repeat)")
	fs.Var(&requestIDs, "request-id", "request `id` (X-Request-Id) (repeat)")
	fs.Var(&outcomes, "outcome", "status `outcome`: ok, upstream_error, upstream_unreachable, upstream_timeout, client_cancelled, rejected (repeat)")
	fs.Var(&types, "type", "event `type`: inference, checkpoint, log_started, proxy_started, model_changed, annotation, ... (repeat)")
	stats := fs.Bool("stats", false, "print statistics of the matching inference events instead of the events")
	asJSON := fs.Bool("json", false, "with --stats, print them as JSON")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() == 0 {
		return usageError{"query: give at least one PATH (event files, directories, spool segments, or - for stdin)"}
	}
	f := audit.Filter{Types: types, Models: models, APIKeyIDs: keyIDs, RequestIDs: requestIDs}
	for _, o := range outcomes {
		oc, err := audit.ParseOutcome(o)
		if err != nil {
			return usageError{"query: --outcome: " + err.Error()}
		}
		f.Outcomes = append(f.Outcomes, oc)
	}
	now := time.Now()
	var err error
	if f.Since, err = parseWhen("--since", *since, now); err != nil {
		return err
	}
	if f.Until, err = parseWhen("--until", *until, now); err != nil {
		return err
	}
	q, err := audit.NewQuery(f)
	if err != nil {
		return usageError{"query: " + err.Error()}
	}

	var p fastjson.Parser
	var seen audit.IDSet
	var st audit.Stats
	type match struct {
		event  []byte
		time   time.Time
		origin string
		seq    int64
	}
	var matches []match
	var readErr error
	for _, path := range fs.Args() {
		err := readEvents(path, func(ev []byte) {
			ev = bytes.TrimSpace(ev)
			if len(ev) == 0 || readErr != nil {
				return
			}
			v, err := q.MatchValue(&p, ev)
			if err != nil {
				readErr = fmt.Errorf("%s: %w", path, err)
				return
			}
			if v == nil || !seen.Add(v.GetStringBytes("id")) {
				return
			}
			if *stats {
				if err := st.Add(v); err != nil {
					readErr = fmt.Errorf("%s: %w", path, err)
				}
				return
			}
			t, _ := audit.EventTime(v)
			matches = append(matches, match{append([]byte(nil), ev...), t,
				string(v.GetStringBytes("log", "origin")), v.GetInt64("log", "seq")})
		})
		if err == nil {
			err = readErr
		}
		if err != nil {
			return fmt.Errorf("query: %w", err)
		}
	}
	if *stats {
		return printStats(stdout, st.Summary(), *asJSON)
	}
	sort.SliceStable(matches, func(i, j int) bool {
		a, b := matches[i], matches[j]
		if !a.time.Equal(b.time) {
			return a.time.Before(b.time)
		}
		if a.origin != b.origin {
			return a.origin < b.origin
		}
		return a.seq < b.seq
	})
	for _, m := range matches {
		stdout.Write(m.event)
		io.WriteString(stdout, "\n")
	}
	return nil
}

// parseWhen reads an RFC 3339 time, or a duration back from now.
func parseWhen(flag, s string, now time.Time) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t, nil
	}
	if d, err := time.ParseDuration(s); err == nil && d >= 0 {
		return now.Add(-d), nil
	}
	return time.Time{}, usageError{fmt.Sprintf("query: %s %q: want an RFC 3339 time (2026-11-23T10:00:00Z) or a duration like 24h", flag, s)}
}

func printStats(w io.Writer, s audit.StatsSummary, asJSON bool) error {
	if asJSON {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(s)
	}
	if s.Events == 0 {
		fmt.Fprintln(w, "no inference events match")
		return nil
	}
	fmt.Fprintf(w, "inference events: %d, from %s to %s\n", s.Events,
		time.Time(s.First).UTC().Format(time.RFC3339), time.Time(s.Last).UTC().Format(time.RFC3339))
	fmt.Fprintf(w, "errors: %d (%.2f%%)\n", s.Errors, 100*s.ErrorRate)
	if l := s.Latency.Total; l != nil {
		fmt.Fprintf(w, "latency ms: p50 %.1f, p95 %.1f, p99 %.1f\n", l.P50, l.P95, l.P99)
	}
	if l := s.Latency.TTFT; l != nil {
		fmt.Fprintf(w, "time to first token ms: p50 %.1f, p95 %.1f, p99 %.1f (%d streamed)\n", l.P50, l.P95, l.P99, l.Count)
	}
	fmt.Fprintf(w, "tokens: %d in, %d out\n\n", s.InputTokens, s.OutputTokens)
	fmt.Fprintf(w, "%-40s %8s %7s %10s %10s %10s %10s %10s\n", "model", "events", "errors", "p50 ms", "p95 ms", "p99 ms", "tokens in", "tokens out")
	for _, m := range s.Models {
		p50, p95, p99 := "-", "-", "-"
		if l := m.Latency.Total; l != nil {
			p50, p95, p99 = fmt.Sprintf("%.1f", l.P50), fmt.Sprintf("%.1f", l.P95), fmt.Sprintf("%.1f", l.P99)
		}
		name := m.Model
		if name == "" {
			name = "(none)"
		}
		fmt.Fprintf(w, "%-40s %8d %7d %10s %10s %10s %10d %10d\n", strings.TrimSpace(name), m.Events, m.Errors, p50, p95, p99, m.InputTokens, m.OutputTokens)
	}
	return nil
}
