package bench

import (
	"bytes"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/valyala/fastjson"

	"github.com/auditproxy/auditproxy/audit"
	"github.com/auditproxy/auditproxy/auditlog"
	"github.com/auditproxy/auditproxy/eventsrc"
	"github.com/auditproxy/auditproxy/query"
)

const queryBenchEvents = 1_000_000

var (
	queryBenchOnce  sync.Once
	queryBenchLines [][]byte
	queryBenchT0    = time.Date(2026, 11, 23, 0, 0, 0, 0, time.UTC)
)

// queryBenchLog is a log of 1M realistic events as a sidecar writes them
// (with their "log" member, about 790 bytes each), one millisecond apart,
// held in memory.
func queryBenchLog(b *testing.B) [][]byte {
	queryBenchOnce.Do(func() {
		c, err := auditlog.NewChain(auditlog.ChainState{Origin: "gpu-node-17/20261123T000000Z"})
		if err != nil {
			b.Fatal(err)
		}
		var arena, scratch []byte
		ends := make([]int, 0, queryBenchEvents)
		for i := range queryBenchEvents {
			scratch = realisticEvent(int64(i), queryBenchT0.Add(time.Duration(i)*time.Millisecond)).AppendJSON(scratch[:0])
			if arena, err = c.Append(arena, scratch); err != nil {
				b.Fatal(err)
			}
			arena = append(arena, '\n')
			ends = append(ends, len(arena))
			c.TakeStored()
		}
		start := 0
		for _, end := range ends {
			queryBenchLines = append(queryBenchLines, arena[start:end:end])
			start = end
		}
	})
	return queryBenchLines
}

// scan runs the query command's per-line work over every line: trim,
// match, drop repeats. It returns the matches.
func scan(b *testing.B, q *query.Query, lines [][]byte, each func(v *fastjson.Value)) int {
	var p fastjson.Parser
	var ids eventsrc.IDSet
	n := 0
	for _, line := range lines {
		v, err := q.MatchValue(&p, bytes.TrimSpace(line))
		if err != nil {
			b.Fatal(err)
		}
		if v == nil || !ids.Add(v.GetStringBytes("id")) {
			continue
		}
		n++
		if each != nil {
			each(v)
		}
	}
	return n
}

// BenchmarkQuery: one op is a scan of 1M realistic events held in memory, on
// one goroutine; events/s is the scan rate (target >= 300k/s for a
// request-id lookup).
//
//   - request-id: one event wanted; the raw pre-check rules out the rest
//     unparsed.
//   - api-key-id: every event has the key, so every event is parsed.
//   - time-range: a 10% window; no string criterion, so every event is
//     parsed and its time read.
//   - stats: --stats over all of them (parse, dedup, two float64s each).
func BenchmarkQuery(b *testing.B) {
	lines := queryBenchLog(b)
	var bytesTotal int64
	for _, l := range lines {
		bytesTotal += int64(len(l))
	}
	mid := func(i int) time.Time { return queryBenchT0.Add(time.Duration(i) * time.Millisecond) }
	for _, tc := range []struct {
		name  string
		f     query.Filter
		stats bool
		want  int
	}{
		{"request-id", query.Filter{RequestIDs: []string{fmt.Sprintf("req-%012d", queryBenchEvents/2)}}, false, 1},
		{"api-key-id", query.Filter{APIKeyIDs: []string{"k1:9f86d081884c7d659a2feaa0c55ad015"}}, false, queryBenchEvents},
		{"time-range", query.Filter{Since: mid(queryBenchEvents / 2), Until: mid(queryBenchEvents/2 + queryBenchEvents/10)}, false, queryBenchEvents / 10},
		{"stats", query.Filter{Types: []string{audit.TypeInference}}, true, queryBenchEvents},
	} {
		b.Run(tc.name, func(b *testing.B) {
			q, err := query.NewQuery(tc.f)
			if err != nil {
				b.Fatal(err)
			}
			b.SetBytes(bytesTotal)
			b.ReportAllocs()
			for b.Loop() {
				st, err := query.NewStats([]query.Grouping{query.ByModel}, time.UTC) // query --stats' default
				if err != nil {
					b.Fatal(err)
				}
				var each func(*fastjson.Value)
				if tc.stats {
					each = func(v *fastjson.Value) {
						if err := st.Add(v); err != nil {
							b.Fatal(err)
						}
					}
				}
				if n := scan(b, q, lines, each); n != tc.want {
					b.Fatalf("%d matches, want %d", n, tc.want)
				}
				if tc.stats {
					if s, _ := st.Summary(time.Time{}, time.Time{}); s.Events != queryBenchEvents {
						b.Fatalf("stats of %d events", s.Events)
					}
				}
			}
			b.ReportMetric(float64(b.N)*queryBenchEvents/b.Elapsed().Seconds(), "events/s")
		})
	}
}
