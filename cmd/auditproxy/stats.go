package main

import (
	"encoding/csv"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"
	_ "time/tzdata" // --tz works on a machine without a zone database
	"unicode/utf8"

	"github.com/auditproxy/auditproxy/audit"
	"github.com/auditproxy/auditproxy/query"
	"github.com/auditproxy/auditproxy/transcript"
)

// loadZone reads a --tz value.
func loadZone(name string) (*time.Location, error) {
	if name == "" {
		return nil, fmt.Errorf("--tz is empty: want an IANA zone name (Europe/Paris), UTC, or Local")
	}
	if name == "Local" {
		// Named, so that what the output says ("times in ...") means
		// something on another machine.
		if local := localZoneName(); local != "" {
			name = local
		}
	}
	loc, err := time.LoadLocation(name)
	if err != nil {
		return nil, fmt.Errorf("--tz %q is not a known time zone: want an IANA zone name (Europe/Paris, America/New_York), UTC, or Local", name)
	}
	return loc, nil
}

// localZoneName is the IANA name of this machine's zone: $TZ, or where
// /etc/localtime links into a zoneinfo directory; "" when unknown.
func localZoneName() string {
	if tz, ok := os.LookupEnv("TZ"); ok {
		tz = strings.TrimPrefix(tz, ":")
		if tz == "" {
			return "UTC"
		}
		if _, err := time.LoadLocation(tz); err == nil && !strings.HasPrefix(tz, "/") {
			return tz
		}
		return ""
	}
	if target, err := os.Readlink("/etc/localtime"); err == nil {
		if _, zone, ok := strings.Cut(target, "zoneinfo/"); ok {
			if _, err := time.LoadLocation(zone); err == nil {
				return zone
			}
		}
	}
	return ""
}

// writeStats writes a summary in format: text, json or csv.
func writeStats(w io.Writer, format string, s query.Summary) error {
	switch format {
	case "json":
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		enc.SetEscapeHTML(false)
		return enc.Encode(s)
	case "csv":
		return writeStatsCSV(w, s)
	}
	return writeStatsText(w, s)
}

// statsTime shows a time of a summary, in its zone.
func statsTime(t time.Time) string { return t.Format(time.RFC3339Nano) }

// windowText says what window a summary covers: the one asked for, and
// the events found in it.
func windowText(w query.Window) string {
	var asked []string
	if w.Since != nil {
		asked = append(asked, "since "+statsTime(*w.Since))
	}
	if w.Until != nil {
		asked = append(asked, "until "+statsTime(*w.Until))
	}
	if asked == nil {
		asked = []string{"all events read"}
	}
	found := "no events"
	if w.First != nil {
		found = fmt.Sprintf("events from %s to %s", statsTime(*w.First), statsTime(*w.Last))
	}
	return fmt.Sprintf("window:           %s; %s (times in %s)", strings.Join(asked, " "), found, w.TZ)
}

// writeStatsText writes a summary for people: the window, the totals, then
// a table per grouping; latencies to a tenth of a millisecond (json and
// csv give them exactly).
func writeStatsText(w io.Writer, s query.Summary) error {
	fmt.Fprintln(w, windowText(s.Window))
	f := s.Figures
	fmt.Fprintf(w, "inference events: %d: ok %d, errors %d, client gave up %d, rejected by the sidecar %d\n",
		f.Events, f.OK, f.Errors, f.ClientCancelled, f.Rejected)
	if f.Events == 0 {
		return nil
	}
	fmt.Fprintf(w, "error rate:       %s of the ok and errors%s\n", rateText(f.ErrorRate), outcomesText(f.Outcomes))
	fmt.Fprintf(w, "latency ms (ok):  %s\n", percentilesText(f.Latency.Total, "ok events"))
	fmt.Fprintf(w, "ttft ms (ok):     %s\n", percentilesText(f.Latency.TTFT, "ok streamed events"))
	fmt.Fprintf(w, "tokens:           input %d%s, output %d%s\n", f.InputTokens, unknownText(f.InputTokensUnknown),
		f.OutputTokens, unknownText(f.OutputTokensUnknown))
	abbreviated := false
	table := func(heads []string, rows [][]string, figs []query.Figures) error {
		out := [][]string{append(heads, "EVENTS", "OK", "ERRORS", "GAVE UP", "REJECTED", "ERROR%",
			"LATENCY P50", "P95", "P99", "TTFT P50", "P95", "P99", "IN TOKENS", "OUT TOKENS")}
		for i, r := range rows {
			g := figs[i]
			row := append(r, strconv.FormatInt(g.Events, 10), strconv.FormatInt(g.OK, 10), strconv.FormatInt(g.Errors, 10),
				strconv.FormatInt(g.ClientCancelled, 10), strconv.FormatInt(g.Rejected, 10), rateText(g.ErrorRate))
			row = append(row, percentileCells(g.Latency.Total)...)
			row = append(row, percentileCells(g.Latency.TTFT)...)
			out = append(out, append(row, tokensCell(g.InputTokens, g.InputTokensUnknown, g.Events), tokensCell(g.OutputTokens, g.OutputTokensUnknown, g.Events)))
		}
		fmt.Fprintln(w)
		return writeTable(w, len(heads), out)
	}
	var err error
	if rows := s.Groups.Model; rows != nil {
		var cells [][]string
		var figs []query.Figures
		for _, r := range rows {
			sum := "unknown"
			if r.Checksum != nil {
				sum = *r.Checksum
				if alg, hex, ok := strings.Cut(sum, ":"); ok && len(hex) > 16 {
					sum, abbreviated = alg+":"+hex[:16]+"…", true
				}
				sum = printable(sum)
			}
			cells = append(cells, []string{nameCell(r.Model), sum})
			figs = append(figs, r.Figures)
		}
		err = table([]string{"MODEL", "CHECKSUM"}, cells, figs)
	}
	if rows := s.Groups.Key; rows != nil && err == nil {
		var cells [][]string
		var figs []query.Figures
		for _, r := range rows {
			id := "(no key)"
			if r.APIKeyID != nil {
				id = printable(*r.APIKeyID)
			}
			cells = append(cells, []string{id})
			figs = append(figs, r.Figures)
		}
		err = table([]string{"API KEY ID"}, cells, figs)
	}
	if rows := s.Groups.Outcome; rows != nil && err == nil {
		var cells [][]string
		var figs []query.Figures
		for _, r := range rows {
			cells = append(cells, []string{nameCell(r.Outcome)})
			figs = append(figs, r.Figures)
		}
		err = table([]string{"OUTCOME"}, cells, figs)
	}
	for _, tr := range []struct {
		head string
		rows []query.TimeRow
	}{{"HOUR FROM", s.Groups.Hour}, {"DAY FROM", s.Groups.Day}} {
		if tr.rows == nil || err != nil {
			continue
		}
		var cells [][]string
		var figs []query.Figures
		for _, r := range tr.rows {
			cells = append(cells, []string{r.From.Format(time.RFC3339)})
			figs = append(figs, r.Figures)
		}
		err = table([]string{tr.head}, cells, figs)
	}
	if err == nil && abbreviated {
		_, err = fmt.Fprintln(w, "\nchecksums are shortened; --format json or csv prints them whole")
	}
	return err
}

// outcomesText lists the outcomes other than ok, known ones in their
// declared order, then any other.
func outcomesText(outcomes map[string]int64) string {
	var parts, unknown []string
	for _, o := range audit.Outcomes() {
		if n := outcomes[string(o)]; n > 0 && o != audit.OutcomeOK {
			parts = append(parts, fmt.Sprintf("%s %d", o, n))
		}
	}
	for o, n := range outcomes {
		if _, err := audit.ParseOutcome(o); err != nil {
			unknown = append(unknown, fmt.Sprintf("%s %d", strconv.Quote(o), n))
		}
	}
	slices.Sort(unknown)
	parts = append(parts, unknown...)
	if len(parts) == 0 {
		return ""
	}
	return "; not ok: " + strings.Join(parts, ", ")
}

func unknownText(n int64) string {
	if n == 0 {
		return ""
	}
	return fmt.Sprintf(" (%d events with no count)", n)
}

// tokensCell is a token sum, marked when some events reported none.
func tokensCell(sum, unknown, events int64) string {
	switch {
	case unknown == 0:
		return strconv.FormatInt(sum, 10)
	case unknown == events:
		return "unknown"
	}
	return strconv.FormatInt(sum, 10) + "+?"
}

// nameCell shows a name a client chose without letting it drive the
// terminal.
func nameCell(name string) string {
	if name == "" {
		return "(none)"
	}
	return printable(name)
}

// printable escapes what a value from the log could do to a terminal.
func printable(s string) string { return transcript.Line(s) }

// writeTable writes rows as columns two spaces apart: the first left
// columns aligned left, the others (numbers) right.
func writeTable(w io.Writer, left int, rows [][]string) error {
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
			if i > 0 {
				b.WriteString("  ")
			}
			if i < left {
				b.WriteString(cell)
				if i < len(row)-1 {
					b.WriteString(pad)
				}
			} else {
				b.WriteString(pad)
				b.WriteString(cell)
			}
		}
		b.WriteByte('\n')
	}
	_, err := io.WriteString(w, b.String())
	return err
}

func rateText(rate *float64) string {
	if rate == nil {
		return "-"
	}
	return strconv.FormatFloat(*rate*100, 'f', 2, 64) + "%"
}

// ms is a latency exactly, for machines (CSV).
func ms(f float64) string { return strconv.FormatFloat(f, 'f', -1, 64) }

// msText is a latency for people: to a tenth of a millisecond.
func msText(f float64) string { return strconv.FormatFloat(f, 'f', 1, 64) }

func percentilesText(p *query.Percentiles, what string) string {
	if p == nil {
		return "none"
	}
	return fmt.Sprintf("p50 %s  p95 %s  p99 %s  (%s: %d)", msText(p.P50), msText(p.P95), msText(p.P99), what, p.Count)
}

func percentileCells(p *query.Percentiles) []string {
	if p == nil {
		return []string{"-", "-", "-"}
	}
	return []string{msText(p.P50), msText(p.P95), msText(p.P99)}
}

// statsCSVHeader names the columns of query --stats --format csv.
var statsCSVHeader = []string{"grouping", "model", "checksum", "api_key_id", "outcome", "from", "to",
	"events", "ok", "errors", "client_cancelled", "rejected", "error_rate",
	"latency_count", "latency_p50_ms", "latency_p95_ms", "latency_p99_ms",
	"ttft_count", "ttft_p50_ms", "ttft_p95_ms", "ttft_p99_ms",
	"input_tokens", "input_tokens_unknown", "output_tokens", "output_tokens_unknown"}

// writeStatsCSV writes one row for the totals (grouping "total", from and
// to the window) and one per group, in RFC 4180 CSV. An empty cell is a
// null: unknown, or not of that grouping.
func writeStatsCSV(w io.Writer, s query.Summary) error {
	cw := csv.NewWriter(w)
	cw.Write(statsCSVHeader)
	row := func(grouping, model, checksum, key, outcome, from, to string, f query.Figures) {
		r := []string{grouping, csvText(model), csvText(checksum), csvText(key), csvText(outcome), from, to,
			strconv.FormatInt(f.Events, 10), strconv.FormatInt(f.OK, 10), strconv.FormatInt(f.Errors, 10),
			strconv.FormatInt(f.ClientCancelled, 10), strconv.FormatInt(f.Rejected, 10), ""}
		if f.ErrorRate != nil {
			r[len(r)-1] = strconv.FormatFloat(*f.ErrorRate, 'g', -1, 64)
		}
		for _, p := range []*query.Percentiles{f.Latency.Total, f.Latency.TTFT} {
			if p == nil {
				r = append(r, "0", "", "", "")
			} else {
				r = append(r, strconv.FormatInt(p.Count, 10), ms(p.P50), ms(p.P95), ms(p.P99))
			}
		}
		cw.Write(append(r, strconv.FormatInt(f.InputTokens, 10), strconv.FormatInt(f.InputTokensUnknown, 10),
			strconv.FormatInt(f.OutputTokens, 10), strconv.FormatInt(f.OutputTokensUnknown, 10)))
	}
	from, to := "", ""
	if s.Window.Since != nil {
		from = statsTime(*s.Window.Since)
	} else if s.Window.First != nil {
		from = statsTime(*s.Window.First)
	}
	if s.Window.Until != nil {
		to = statsTime(*s.Window.Until)
	} else if s.Window.Last != nil {
		to = statsTime(*s.Window.Last)
	}
	row("total", "", "", "", "", from, to, s.Figures)
	for _, r := range s.Groups.Model {
		sum := ""
		if r.Checksum != nil {
			sum = *r.Checksum
		}
		row("model", r.Model, sum, "", "", "", "", r.Figures)
	}
	for _, r := range s.Groups.Key {
		id := ""
		if r.APIKeyID != nil {
			id = *r.APIKeyID
		}
		row("key", "", "", id, "", "", "", r.Figures)
	}
	for _, r := range s.Groups.Outcome {
		row("outcome", "", "", "", r.Outcome, "", "", r.Figures)
	}
	for _, r := range s.Groups.Hour {
		row("hour", "", "", "", "", statsTime(r.From), statsTime(r.To), r.Figures)
	}
	for _, r := range s.Groups.Day {
		row("day", "", "", "", "", statsTime(r.From), statsTime(r.To), r.Figures)
	}
	cw.Flush()
	return cw.Error()
}

// csvText keeps a text a client chose (a model name) from being read as a
// formula by a spreadsheet: one that starts with = + - @ or a tab or
// carriage return gets a leading ', as OWASP's advice on CSV injection
// has it. No value the sidecar writes itself starts so.
func csvText(s string) string {
	if s != "" && strings.ContainsRune("=+-@\t\r", rune(s[0])) {
		return "'" + s
	}
	return s
}
