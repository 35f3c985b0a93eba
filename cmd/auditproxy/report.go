package main

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/valyala/fastjson"

	"github.com/auditproxy/auditproxy/audit"
	"github.com/auditproxy/auditproxy/eventsrc"
	"github.com/auditproxy/auditproxy/query"
	"github.com/auditproxy/auditproxy/report"
)

// reportGroupings are the groupings of a report's traffic figures.
var reportGroupings = []query.Grouping{query.ByDay, query.ByKey, query.ByModel, query.ByOutcome}

// runReport writes the audit report of logs (package report): it verifies
// them as verify does, and summarizes the window as query --stats does,
// in one pass over the events.
func runReport(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("report", "report --html OUT --pubkey FILE [--witness-key FILE --cosignatures FILE] [--allowed-signers FILE] [--since T] [--until T] [--tz ZONE] PATH...", stderr)
	var opts verifyOptions
	opts.register(fs)
	out := fs.String("html", "", "write the report to this `file` (one self-contained HTML page; - for stdout)")
	since := fs.String("since", "", "the window's start, for the change timeline and the traffic figures: an RFC 3339 time, a date (from its start in --tz), or a span before now (30d, 8mo); the whole log is verified whatever the window")
	tz := fs.String("tz", "UTC", "time `zone` to read dates in, show times and cut days in: an IANA name (Europe/Paris), UTC, or Local")
	// The window's end, and as for verify the time the logs must reach;
	// a date is read in --tz here, as --since is.
	fs.Lookup("until").Usage = "the window's end (exclusive), and the `time` the logs must reach (an older newest checkpoint means a cut tail, as verify --until): an RFC 3339 time, a date (from its start in --tz), or a span before now (24h, 7d)"
	paths, err := parseFlagsAndArgs(fs, args)
	if err != nil {
		return err
	}
	if *out == "" || len(paths) == 0 {
		return usageError{"report: give --html OUT and at least one PATH (event files, directories, spool segments, or - for stdin)"}
	}
	loc, err := loadZone(*tz)
	if err != nil {
		return usageError{"report: " + err.Error()}
	}
	now := time.Now()
	f := query.Filter{Types: []string{audit.TypeInference}}
	if f.Since, err = query.ParseTimeBound(*since, now, loc); err != nil {
		return usageError{fmt.Sprintf("report: --since %q: %v", *since, err)}
	}
	if f.Until, err = query.ParseTimeBound(opts.until, now, loc); err != nil {
		return usageError{fmt.Sprintf("report: --until %q: %v", opts.until, err)}
	}
	q, err := query.NewQuery(f)
	if err != nil {
		return usageError{"report: --since and --until: " + err.Error()}
	}
	vr, err := opts.start("report", stderr)
	if err != nil {
		return err
	}
	vr.v.Until = f.Until // a date or span read in --tz, as the window's end
	vr.until = f.Until
	st, err := query.NewStats(reportGroupings, loc)
	if err != nil {
		return err
	}
	tl := &report.Timeline{Since: f.Since, Until: f.Until}
	if len(opts.pubkeys) > 0 {
		tl.Keys = vr.v.Keys // the checkpoints verify counts; with no key, the page says none was verified
	}

	var (
		p       fastjson.Parser
		ids     eventsrc.IDSet // inferences counted, as query drops repeats
		changes eventsrc.IDSet // the timeline's events, the same
		bad     badEvents
		damaged eventsrc.DamageError
	)
	for _, path := range paths {
		var n int64
		err := eventsrc.Read(path, func(line []byte) {
			vr.v.Add(line)
			line = bytes.TrimSpace(line)
			if len(line) == 0 {
				return
			}
			n++
			v, err := p.ParseBytes(line)
			if err != nil {
				bad.add(path, n, fmt.Errorf("not JSON: %w", err))
				return
			}
			var counted bool
			if counted, err = q.MatchParsed(v); counted {
				// As query: an event with no time is no event, and does
				// not take its id from a copy that has one.
				if _, err = query.EventTime(v); err == nil && ids.Add(v.GetStringBytes("id")) {
					err = st.Add(v)
				}
			} else if string(v.GetStringBytes("type")) != audit.TypeInference && changes.Add(v.GetStringBytes("id")) {
				tl.Add(v)
			}
			if err != nil {
				bad.add(path, n, err)
			}
		})
		if err := damaged.Collect(err); err != nil {
			return fmt.Errorf("report: %w", err)
		}
	}
	r, changeReport, notes := vr.finish(damaged)
	sum, err := st.Summary(f.Since, f.Until)
	if err != nil {
		return usageError{"report: " + err.Error()}
	}
	if berr := bad.err(); berr != nil {
		notes = append(notes, strings.TrimPrefix(berr.Error(), "query: "))
	}

	var inputs []string
	for _, p := range paths {
		if abs, err := filepath.Abs(p); err == nil && p != "-" {
			p = abs
		}
		inputs = append(inputs, p)
	}
	d := report.Data{Generated: now, Version: buildVersion(), Inputs: inputs, Keys: vr.keys, Witnesses: vr.witnesses,
		Verify: r, Changes: changeReport, Notes: notes, Stats: sum, Timeline: tl,
		Commands: reportCommands(opts, f, *tz, paths)}
	var buf bytes.Buffer
	if err := report.Write(&buf, d); err != nil {
		return fmt.Errorf("report: %w", err)
	}
	if *out == "-" {
		_, err = stdout.Write(buf.Bytes())
	} else {
		err = writeFileAtomic(*out, buf.Bytes())
	}
	if err != nil {
		return fmt.Errorf("report: %w", err)
	}
	verdict := "verified"
	if !r.OK {
		verdict = "NOT verified (the report lists the problems)"
	}
	changeRows, more := tl.Changes()
	fmt.Fprintf(stderr, "auditproxy: report: %d logs, %d inference events and %d changes in the window: %s\n", len(r.Origins), sum.Events, len(changeRows)+more, verdict)
	if *out != "-" {
		fmt.Fprintf(stderr, "auditproxy: report written to %s\n", *out)
	}
	if !r.OK {
		return errVerifyFailed
	}
	return nil
}

// reportCommands are the CLI commands that recompute a report's findings,
// with the window's bounds as the times they stood for.
func reportCommands(o verifyOptions, f query.Filter, tz string, paths []string) []string {
	quote := func(s string) string {
		if s != "" && strings.Trim(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_./:+=,@") == "" {
			return s
		}
		return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
	}
	var verify, stats []string
	verify = append(verify, "auditproxy verify")
	for _, k := range o.pubkeys {
		verify = append(verify, "--pubkey "+quote(k))
	}
	for _, k := range o.witnessKeys {
		verify = append(verify, "--witness-key "+quote(k))
	}
	for _, c := range o.cosignatureFiles {
		verify = append(verify, "--cosignatures "+quote(c))
	}
	if o.allowedSigners != "" {
		verify = append(verify, "--allowed-signers "+quote(o.allowedSigners))
	}
	if o.approvalRequired != "" {
		verify = append(verify, "--approval-required "+quote(o.approvalRequired))
	}
	for _, m := range o.ignore {
		verify = append(verify, "--ignore-member "+quote(m))
	}
	if o.requireCommitted {
		verify = append(verify, "--require-committed")
	}
	stats = append(stats, "auditproxy query --stats --by day,key,model,outcome --format json --tz "+quote(tz))
	if !f.Since.IsZero() {
		stats = append(stats, "--since "+f.Since.UTC().Format(time.RFC3339Nano))
	}
	if !f.Until.IsZero() {
		u := "--until " + f.Until.UTC().Format(time.RFC3339Nano)
		verify, stats = append(verify, u), append(stats, u)
	}
	for _, p := range paths {
		verify, stats = append(verify, quote(p)), append(stats, quote(p))
	}
	return []string{strings.Join(verify, " "), strings.Join(stats, " ")}
}

// writeFileAtomic writes a file whole or not at all: a report cut short
// must not pass for one.
func writeFileAtomic(name string, b []byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(name), "."+filepath.Base(name)+".*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(b); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Chmod(0o644); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), name)
}
