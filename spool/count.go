package spool

import (
	"io"
	"os"
	"strconv"
	"strings"

	"github.com/valyala/fastjson"
)

// countRecords returns how many records the segments hold, and whether the
// count is exact. activeRecords is the count of the last (active) segment
// when known, else -1.
//
// Decompressing every sealed segment to count frames would hold up a start
// for as long as reading gigabytes takes, so the log counts instead: within
// one origin seqs follow each other without gaps, so a segment holds as many
// records as the seq of the next segment's first record minus the seq of its
// own. Only a segment whose first record, or the next one's, is in no log,
// or in another origin (an epoch starts there), is read whole. Records lost
// to damage leave gaps in the seqs and are counted as if present: then the
// count is not exact. Such a segment shows as damage kept beside it
// (NAME.damaged, NAME.OFFSET.corrupt), and a count across one says so.
func countRecords(dir string, segs []segmentFile, activeRecords int) (n int64, exact bool) {
	damaged := map[uint64]bool{}
	if entries, err := os.ReadDir(dir); err == nil {
		for _, e := range entries {
			name := e.Name()
			if !strings.HasSuffix(name, damagedExt) && !strings.HasSuffix(name, quarantineExt) {
				continue
			}
			if id, err := strconv.ParseUint(name[:min(len(name), 20)], 10, 64); err == nil {
				damaged[id] = true
			}
		}
	}
	type first struct {
		origin string
		seq    int64
		ok     bool
	}
	var p fastjson.Parser
	firstOf := func(id uint64) first {
		sr, err := openSegment(dir, id)
		if err != nil {
			return first{}
		}
		defer sr.Close()
		rec, err := sr.next()
		if err != nil {
			return first{}
		}
		v, err := p.ParseBytes(rec)
		if err != nil || v.Get("log", "seq") == nil {
			return first{}
		}
		seq, err := v.Get("log", "seq").Int64()
		origin := string(v.GetStringBytes("log", "origin"))
		return first{origin, seq, err == nil && origin != ""}
	}
	countWhole := func(id uint64) int64 {
		sr, err := openSegment(dir, id)
		if err != nil {
			return 0
		}
		defer sr.Close()
		var k int64
		for {
			if _, err := sr.next(); err != nil {
				if err != io.EOF {
					exact = false
				}
				return k
			}
			k++
		}
	}
	exact = true
	next := first{}
	if len(segs) > 0 {
		last := segs[len(segs)-1]
		if activeRecords >= 0 {
			n += int64(activeRecords)
		} else {
			n += countWhole(last.id)
		}
		next = firstOf(last.id)
	}
	for i := len(segs) - 2; i >= 0; i-- {
		f := firstOf(segs[i].id)
		if f.ok && next.ok && f.origin == next.origin && next.seq > f.seq {
			n += next.seq - f.seq
			exact = exact && !damaged[segs[i].id]
		} else {
			n += countWhole(segs[i].id)
		}
		next = f
	}
	return n, exact
}
