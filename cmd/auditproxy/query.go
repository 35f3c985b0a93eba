package main

import (
	"bufio"
	"bytes"
	"container/heap"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/valyala/fastjson"

	"github.com/auditproxy/auditproxy/audit"
	"github.com/auditproxy/auditproxy/query"
)

const querySynopsis = "query PATH... [--since T] [--until T] [--model M] [--api-key-id K] [--request-id R] [--outcome O] [--type T] [--stats] [--json]"

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
	since := fs.String("since", "", "select events at or after `T`: an RFC 3339 time, or a duration before now (24h, 90m, 7d)")
	until := fs.String("until", "", "select events before `T` (exclusive): an RFC 3339 time, or a duration before now")
	var types, models, keyIDs, requestIDs, outcomes stringList
	fs.Var(&models, "model", "select events for model `M` (model.name); repeat for any of several")
	fs.Var(&keyIDs, "api-key-id", "select events of API key id `K` (\"k1:<hex>\", the api_key_id field; not the key itself); repeat for any of several")
	fs.Var(&requestIDs, "request-id", "select the events of request `R` (X-Request-Id); repeat for any of several")
	fs.Var(&outcomes, "outcome", "select events with outcome `O` (ok, upstream_error, upstream_unreachable, upstream_timeout, client_cancelled, rejected); repeat for any of several")
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
	f := query.Filter{Types: types, Models: models, APIKeyIDs: keyIDs, RequestIDs: requestIDs}
	if f.Since, err = parseQueryTime(*since, now); err != nil {
		return usageError{fmt.Sprintf("query: --since %q: %v", *since, err)}
	}
	if f.Until, err = parseQueryTime(*until, now); err != nil {
		return usageError{fmt.Sprintf("query: --until %q: %v", *until, err)}
	}
	for _, o := range outcomes {
		oc, err := audit.ParseOutcome(o)
		if err != nil {
			return usageError{"query: --outcome: " + err.Error()}
		}
		f.Outcomes = append(f.Outcomes, oc)
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
		ids    query.IDSet
		st     query.Stats
		sorter = &eventSorter{limit: querySortMemory}
		bad    badEvents
		n      int64 // events read from the current path
	)
	defer sorter.close()
	var damaged damagedFilesError // read past: reported after the output
	for _, path := range paths {
		n = 0
		err := readEvents(path, func(line []byte) {
			line = bytes.TrimSpace(line)
			if len(line) == 0 || sorter.err != nil {
				return
			}
			n++
			v, err := q.MatchValue(&p, line)
			if err == nil && v != nil {
				var t time.Time
				if t, err = query.EventTime(v); err == nil && ids.Add(v.GetStringBytes("id")) {
					if *stats {
						err = st.Add(v)
					} else {
						seq := int64(-1)
						if s := v.Get("log", "seq"); s != nil {
							if i, serr := s.Int64(); serr == nil {
								seq = i
							}
						}
						sorter.add(unixNanos(t), seq, line)
					}
				}
			}
			if err != nil {
				bad.add(path, n, err)
			}
		})
		if err = damaged.collect(err); err != nil {
			return fmt.Errorf("query: %w", err)
		}
		if sorter.err != nil {
			return fmt.Errorf("query: sorting the events: %w", sorter.err)
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
		err = sorter.writeTo(w)
	}
	if ferr := w.Flush(); err == nil {
		err = ferr
	}
	if err != nil {
		return fmt.Errorf("query: %w", err)
	}
	if len(damaged.files) > 0 {
		if berr := bad.err(); berr != nil {
			fmt.Fprintln(stderr, "auditproxy:", berr)
		}
		return fmt.Errorf("query: %w", &damaged)
	}
	return bad.err()
}

// parseQueryTime parses a --since or --until value: "" (no bound), an RFC
// 3339 time, or a duration (not negative) before now (time.ParseDuration's form,
// or a whole number of days such as 7d).
func parseQueryTime(s string, now time.Time) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		if days, ok := strings.CutSuffix(s, "d"); ok {
			if n, nerr := strconv.Atoi(days); nerr == nil && n > 0 && n <= 1e5 {
				d, err = time.Duration(n)*24*time.Hour, nil
			}
		}
	}
	if err != nil || d < 0 {
		return time.Time{}, errors.New("want an RFC 3339 time or a duration like 24h")
	}
	return now.Add(-d), nil
}

// unixNanos is t in nanoseconds since 1970, clamped to int64 (years
// 1678-2262 are exact).
func unixNanos(t time.Time) int64 {
	switch {
	case t.Before(minNanoTime):
		return math.MinInt64
	case t.After(maxNanoTime):
		return math.MaxInt64
	}
	return t.UnixNano()
}

var (
	minNanoTime = time.Unix(0, math.MinInt64)
	maxNanoTime = time.Unix(0, math.MaxInt64)
)

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

// eventSorter orders events by (time, seq, arrival). It holds them in
// memory up to limit bytes, then writes each sorted run to one temporary
// file and merges the runs at the end.
type eventSorter struct {
	limit  int
	blocks [][]byte // the events held, in blocks of sortBlock bytes (or one event, if larger)
	used   int      // blocks in use; the last one may have room
	held   int      // bytes held
	recs   []sortRec
	next   int64 // arrival number

	tmp  *os.File
	tmpw *bufio.Writer
	runs []sortRun
	size int64 // bytes written to tmp
	err  error
}

type sortKey struct{ time, seq, n int64 }

func (a sortKey) compare(b sortKey) int {
	if c := cmpInt(a.time, b.time); c != 0 {
		return c
	}
	if c := cmpInt(a.seq, b.seq); c != 0 {
		return c
	}
	return cmpInt(a.n, b.n)
}

func cmpInt(a, b int64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

type sortRec struct {
	key   sortKey
	event []byte // in blocks
}

// sortBlock is the size of the blocks that hold events: no event is copied
// twice in memory, and the memory held stays near the limit.
const sortBlock = 1 << 20

type sortRun struct{ off, size int64 }

// Each record in a run: time, seq, arrival (int64 each), length (uint32),
// then the event's bytes.
const runHeader = 8*3 + 4

func (s *eventSorter) add(time, seq int64, event []byte) {
	if s.err != nil {
		return
	}
	if len(event) > math.MaxUint32 {
		s.err = fmt.Errorf("an event of %d bytes", len(event))
		return
	}
	s.recs = append(s.recs, sortRec{key: sortKey{time, seq, s.next}, event: s.hold(event)})
	s.next++
	if s.held >= s.limit {
		s.err = s.spill()
	}
}

func (s *eventSorter) sort() {
	slices.SortFunc(s.recs, func(a, b sortRec) int { return a.key.compare(b.key) })
}

// spill writes the events held as a sorted run to the temporary file.
func (s *eventSorter) spill() error {
	if s.tmp == nil {
		f, err := os.CreateTemp("", "auditproxy-query-*.tmp")
		if err != nil {
			return err
		}
		s.tmp, s.tmpw = f, bufio.NewWriterSize(f, 1<<20)
	}
	s.sort()
	start := s.size
	var hdr [runHeader]byte
	for _, r := range s.recs {
		binary.LittleEndian.PutUint64(hdr[0:], uint64(r.key.time))
		binary.LittleEndian.PutUint64(hdr[8:], uint64(r.key.seq))
		binary.LittleEndian.PutUint64(hdr[16:], uint64(r.key.n))
		binary.LittleEndian.PutUint32(hdr[24:], uint32(len(r.event)))
		s.tmpw.Write(hdr[:])
		s.tmpw.Write(r.event)
		s.size += int64(runHeader + len(r.event))
	}
	if err := s.tmpw.Flush(); err != nil {
		return err
	}
	s.runs = append(s.runs, sortRun{start, s.size - start})
	clear(s.recs) // no references into the blocks, which are reused
	s.recs = s.recs[:0]
	s.blocks = slices.DeleteFunc(s.blocks, func(b []byte) bool { return cap(b) != sortBlock })
	for i := range s.blocks {
		s.blocks[i] = s.blocks[i][:0]
	}
	s.used, s.held = 0, 0
	return nil
}

// hold copies event into the blocks and returns the copy.
func (s *eventSorter) hold(event []byte) []byte {
	s.held += len(event)
	if len(event) > sortBlock {
		big := slices.Clone(event)
		s.blocks = slices.Insert(s.blocks, s.used, big)
		s.used++
		return big
	}
	if s.used == 0 || cap(s.blocks[s.used-1])-len(s.blocks[s.used-1]) < len(event) {
		if s.used == len(s.blocks) {
			s.blocks = append(s.blocks, make([]byte, 0, sortBlock))
		}
		s.used++
	}
	b := &s.blocks[s.used-1]
	start := len(*b)
	*b = append(*b, event...)
	return (*b)[start:len(*b):len(*b)]
}

// writeTo writes every event, each with a newline, in order.
func (s *eventSorter) writeTo(w *bufio.Writer) error {
	if s.err != nil {
		return s.err
	}
	if len(s.runs) == 0 {
		s.sort()
		for _, r := range s.recs {
			w.Write(r.event)
			if err := w.WriteByte('\n'); err != nil {
				return err
			}
		}
		return nil
	}
	if len(s.recs) > 0 {
		if err := s.spill(); err != nil {
			return err
		}
	}
	s.blocks = nil
	h := make(runHeap, 0, len(s.runs))
	for _, r := range s.runs {
		rr := &runReader{r: bufio.NewReaderSize(io.NewSectionReader(s.tmp, r.off, r.size), 64<<10)}
		if ok, err := rr.next(); err != nil {
			return err
		} else if ok {
			h = append(h, rr)
		}
	}
	heap.Init(&h)
	for len(h) > 0 {
		rr := h[0]
		w.Write(rr.event)
		if err := w.WriteByte('\n'); err != nil {
			return err
		}
		ok, err := rr.next()
		if err != nil {
			return err
		}
		if ok {
			heap.Fix(&h, 0)
		} else {
			heap.Pop(&h)
		}
	}
	return nil
}

func (s *eventSorter) close() {
	if s.tmp != nil {
		s.tmp.Close()
		os.Remove(s.tmp.Name())
	}
}

// runReader reads one sorted run back.
type runReader struct {
	r     *bufio.Reader
	key   sortKey
	event []byte
}

func (rr *runReader) next() (bool, error) {
	var hdr [runHeader]byte
	if _, err := io.ReadFull(rr.r, hdr[:]); err == io.EOF {
		return false, nil
	} else if err != nil {
		return false, err
	}
	rr.key = sortKey{int64(binary.LittleEndian.Uint64(hdr[0:])), int64(binary.LittleEndian.Uint64(hdr[8:])),
		int64(binary.LittleEndian.Uint64(hdr[16:]))}
	n := int(binary.LittleEndian.Uint32(hdr[24:]))
	if cap(rr.event) < n {
		rr.event = make([]byte, n)
	}
	rr.event = rr.event[:n]
	_, err := io.ReadFull(rr.r, rr.event)
	return true, err
}

type runHeap []*runReader

func (h runHeap) Len() int           { return len(h) }
func (h runHeap) Less(i, j int) bool { return h[i].key.compare(h[j].key) < 0 }
func (h runHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *runHeap) Push(x any)        { *h = append(*h, x.(*runReader)) }
func (h *runHeap) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}
