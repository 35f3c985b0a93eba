package report

import (
	_ "embed"
	"fmt"
	"html/template"
	"io"
	"strconv"
	"time"

	"github.com/auditproxy/auditproxy/auditlog"
	"github.com/auditproxy/auditproxy/change"
	"github.com/auditproxy/auditproxy/query"
)

// Data is what a report shows.
type Data struct {
	// Generated is when the report was made; Version the auditproxy
	// version that made it.
	Generated time.Time
	Version   string
	// Inputs are the paths read; Keys the verifier keys (name+hash)
	// given, Witnesses the witness keys.
	Inputs, Keys, Witnesses []string
	// Commands reproduce the report's findings with the CLI.
	Commands []string
	// Verify, Changes and Notes are what verification found (Changes nil
	// without an allowed-signers file).
	Verify  *auditlog.Report
	Changes *change.AuditReport
	Notes   []string
	// Stats are the traffic figures over the window, as query --stats
	// --by day,key,model,outcome computes them.
	Stats    query.Summary
	Timeline *Timeline
}

//go:embed report.html.tmpl
var pageTemplate string

var page = template.Must(template.New("report").Parse(pageTemplate))

// Write renders d as one HTML page.
func Write(w io.Writer, d Data) error {
	return page.Execute(w, build(d))
}

// view is Data made ready for the template: rows of cells, each figure
// with its exact value (data-value, for machines) and its text.
type view struct {
	Data
	Loc        *time.Location
	Verified   bool
	Logs       []logView
	Totals     []cell
	Days       []row
	Models     []row
	APIKeys    []row
	Outcomes   []row
	Chart      chart
	ChangeRows []changeView
	More       int
	Coverage   []coverageView
	// ManyLogs says the changes come from more than one log, so the
	// change timeline names each one's.
	ManyLogs bool
}

type cell struct{ Name, Value, Text string }

type row struct {
	Label []string
	Cells []cell
	// Folded is a run of days without events shown as one row (Label
	// says from when to when), with no figures.
	Folded int
}

// foldDays is how many days without events in a row the day table shows
// one by one; a longer run is one row. query --stats lists every day of
// the window, and a window stretched by one event with a wrong clock
// (2299) would make the page megabytes of empty rows.
const foldDays = 3

// maxBars bounds the days the chart draws.
const maxBars = 1000

func dayRows(days []query.TimeRow) []row {
	var rows []row
	for i := 0; i < len(days); {
		j := i
		for j < len(days) && days[j].Events == 0 {
			j++
		}
		if j-i > foldDays {
			last := days[j-1]
			rows = append(rows, row{Label: []string{days[i].From.Format("2006-01-02") + " to " + last.From.Format("2006-01-02") + ": no inferences"}, Folded: j - i})
			i = j
			continue
		}
		r := days[i]
		rows = append(rows, row{Label: []string{r.From.Format("2006-01-02 (Mon) MST")}, Cells: figureCells(r.Figures)})
		i++
	}
	return rows
}

type logView struct {
	auditlog.OriginReport
	Status string
}

type changeView struct {
	Change
	At string
}

// build makes the view of d.
func build(d Data) view {
	loc := time.UTC
	if l, err := time.LoadLocation(d.Stats.Window.TZ); err == nil {
		loc = l
	}
	v := view{Data: d, Loc: loc, Verified: d.Verify != nil && d.Verify.OK}
	if d.Verify != nil {
		for _, o := range d.Verify.Origins {
			st := "OK"
			if !o.OK {
				st = "FAIL"
			}
			v.Logs = append(v.Logs, logView{o, st})
		}
	}
	v.Totals = figureCells(d.Stats.Figures)
	v.Days = dayRows(d.Stats.Groups.Day)
	for _, r := range d.Stats.Groups.Model {
		sum := "unknown"
		if r.Checksum != nil {
			sum = cut(text([]byte(*r.Checksum)))
		}
		name := cut(text([]byte(r.Model)))
		if r.Model == "" {
			name = "(none)"
		}
		v.Models = append(v.Models, row{Label: []string{name, sum}, Cells: figureCells(r.Figures)})
	}
	for _, r := range d.Stats.Groups.Key {
		id := "(no key)"
		if r.APIKeyID != nil {
			id = cut(text([]byte(*r.APIKeyID)))
		}
		v.APIKeys = append(v.APIKeys, row{Label: []string{id}, Cells: figureCells(r.Figures)})
	}
	for _, r := range d.Stats.Groups.Outcome {
		v.Outcomes = append(v.Outcomes, row{Label: []string{cut(text([]byte(r.Outcome)))}, Cells: figureCells(r.Figures)})
	}
	v.Chart = dayChart(d.Stats.Groups.Day, loc)
	if len(v.Chart.Bars) > maxBars {
		v.Chart = chart{Width: chartWidth, Height: chartHeight, TooMany: len(v.Chart.Bars)}
	}
	if d.Timeline != nil {
		changes, more := d.Timeline.Changes()
		for _, c := range changes {
			v.ChangeRows = append(v.ChangeRows, changeView{c, c.Time.In(loc).Format(time.RFC3339)})
			v.ManyLogs = v.ManyLogs || c.Origin != changes[0].Origin
		}
		v.More = more
		v.Coverage = coverageViews(d.Timeline.Coverage(), loc)
	}
	return v
}

// figureCells are the columns of every figures table, named after the
// members of query --stats --format json (latency_ms.total.p50 as
// latency_p50).
func figureCells(f query.Figures) []cell {
	count := func(name string, n int64) cell { return cell{name, strconv.FormatInt(n, 10), strconv.FormatInt(n, 10)} }
	tokens := func(name string, sum, unknown int64) cell {
		c := count(name, sum)
		switch {
		case unknown == f.Events && f.Events > 0:
			c.Text = "unknown"
		case unknown > 0:
			c.Text = fmt.Sprintf("%d (+%d unknown)", sum, unknown)
		}
		return c
	}
	cells := []cell{count("events", f.Events), count("ok", f.OK), count("errors", f.Errors),
		count("client_cancelled", f.ClientCancelled), count("rejected", f.Rejected), ratio("error_rate", f.ErrorRate)}
	for _, p := range []struct {
		name string
		p    *query.Percentiles
	}{{"latency", f.Latency.Total}, {"ttft", f.Latency.TTFT}} {
		if p.p == nil {
			cells = append(cells, cell{p.name + "_p50", "null", "–"}, cell{p.name + "_p95", "null", "–"}, cell{p.name + "_p99", "null", "–"})
			continue
		}
		cells = append(cells, msCell(p.name+"_p50", p.p.P50), msCell(p.name+"_p95", p.p.P95), msCell(p.name+"_p99", p.p.P99))
	}
	return append(cells, tokens("input_tokens", f.InputTokens, f.InputTokensUnknown), tokens("output_tokens", f.OutputTokens, f.OutputTokensUnknown))
}

func ratio(name string, r *float64) cell {
	if r == nil {
		return cell{name, "null", "–"}
	}
	return cell{name, strconv.FormatFloat(*r, 'g', -1, 64), strconv.FormatFloat(*r*100, 'f', 2, 64) + "%"}
}

func msCell(name string, ms float64) cell {
	return cell{name, strconv.FormatFloat(ms, 'g', -1, 64), strconv.FormatFloat(ms, 'f', 1, 64)}
}

// chart is the daily volume as SVG bars, ok and not ok stacked.
type chart struct {
	Width, Height int
	Bars          []bar
	// TooMany counts the days when there were more than maxBars to draw.
	TooMany int
}

type bar struct {
	X, W, OKY, OKH, BadY, BadH string
	Title                      string
}

const chartWidth, chartHeight = 960, 140

func dayChart(days []query.TimeRow, loc *time.Location) chart {
	c := chart{Width: chartWidth, Height: chartHeight}
	var peak int64
	for _, d := range days {
		peak = max(peak, d.Events)
	}
	if len(days) == 0 || peak == 0 {
		return c
	}
	w := min(float64(chartWidth)/float64(len(days)), 48) // one day is a bar, not the page
	px := func(f float64) string { return strconv.FormatFloat(f, 'f', 2, 64) }
	for i, d := range days {
		okH := float64(d.OK) / float64(peak) * (chartHeight - 2)
		badH := float64(d.Events-d.OK) / float64(peak) * (chartHeight - 2)
		c.Bars = append(c.Bars, bar{X: px(float64(i) * w), W: px(max(w-1, 0.5)),
			OKY: px(chartHeight - okH), OKH: px(okH), BadY: px(chartHeight - okH - badH), BadH: px(badH),
			Title: fmt.Sprintf("%s: %d events, %d not ok", d.From.In(loc).Format("2006-01-02"), d.Events, d.Events-d.OK)})
	}
	return c
}

// coverageView is a log's checkpoint timeline, its spans and gaps placed
// on one SVG strip per log, all on the same time axis.
type coverageView struct {
	Coverage
	FirstAt, LastAt string
	Spans           []rect
	Gaps            []gapView
}

type rect struct{ X, W, Class, Title string }

type gapView struct {
	Gap
	FromAt, ToAt, Length string
	Rect                 rect
}

func coverageViews(cs []Coverage, loc *time.Location) []coverageView {
	if len(cs) == 0 {
		return nil
	}
	from, to := cs[0].First, cs[0].Last
	for _, c := range cs {
		from, to = minTime(from, c.First), maxTime(to, c.Last)
	}
	total := max(to.Sub(from), time.Second)
	x := func(t time.Time) float64 { return float64(t.Sub(from)) / float64(total) * chartWidth }
	px := func(f float64) string { return strconv.FormatFloat(f, 'f', 2, 64) }
	at := func(t time.Time) string { return t.In(loc).Format(time.RFC3339) }
	var out []coverageView
	for _, c := range cs {
		cv := coverageView{Coverage: c, FirstAt: at(c.First), LastAt: at(c.Last)}
		for _, s := range c.Spans {
			cv.Spans = append(cv.Spans, rect{px(x(s.From)), px(max(x(s.To)-x(s.From), 1)), "covered",
				"checkpoints at their cadence " + at(s.From) + " to " + at(s.To)})
		}
		for _, g := range c.Gaps {
			cv.Gaps = append(cv.Gaps, gapView{Gap: g, FromAt: at(g.From), ToAt: at(g.To), Length: g.To.Sub(g.From).Round(time.Second).String(),
				Rect: rect{px(x(g.From)), px(max(x(g.To)-x(g.From), 1)), g.Kind, g.Kind + " " + at(g.From) + " to " + at(g.To)}})
		}
		out = append(out, cv)
	}
	return out
}

func minTime(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}

func maxTime(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}
