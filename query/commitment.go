package query

import (
	"bytes"
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/auditproxy/auditproxy/audit"
	"github.com/valyala/fastjson"
)

// Commitment tells which of the selected events a checkpoint among those
// read commits to. A checkpoint event at seq N commits to seqs 0..N-1 of
// its log; an event after the newest checkpoint of its log that was read
// is not yet committed: no signature vouches for it (auditproxy
// verify counts such events as "uncommitted"). Signatures are not checked
// here: that is verify's work; Commitment only marks what a reader should
// not take as proven.
type Commitment struct {
	p        fastjson.Parser
	newest   map[string]int64   // origin -> seq of its newest checkpoint
	selected map[string][]int64 // origin -> seqs of the selected events
}

// checkpointMember is in every checkpoint event; lines without it need no
// parse.
var checkpointMember = []byte(`"checkpoint"`)

// Read notes line if it is a checkpoint event. Call it for every line
// read, selected or not.
func (c *Commitment) Read(line []byte) {
	if !bytes.Contains(line, checkpointMember) {
		return
	}
	v, err := c.p.ParseBytes(line)
	if err != nil || string(v.GetStringBytes("type")) != audit.TypeCheckpoint {
		return
	}
	origin, seq, ok := logPlace(v)
	if !ok {
		return
	}
	if c.newest == nil {
		c.newest = map[string]int64{}
	}
	if old, seen := c.newest[origin]; !seen || seq > old {
		c.newest[origin] = seq
	}
}

// Select notes a selected event (parsed). Events in no log are not noted.
func (c *Commitment) Select(v *fastjson.Value) {
	origin, seq, ok := logPlace(v)
	if !ok {
		return
	}
	if c.selected == nil {
		c.selected = map[string][]int64{}
	}
	c.selected[origin] = append(c.selected[origin], seq)
}

func logPlace(v *fastjson.Value) (string, int64, bool) {
	origin := v.GetStringBytes("log", "origin")
	seqv := v.Get("log", "seq")
	if len(origin) == 0 || seqv == nil {
		return "", 0, false
	}
	seq, err := seqv.Int64()
	return string(origin), seq, err == nil && seq >= 0
}

// Uncommitted returns how many selected events no checkpoint read commits
// to, and a line per log that says which (nil when there are none).
func (c *Commitment) Uncommitted() (int, []string) {
	var n int
	var lines []string
	for _, origin := range slices.Sorted(maps.Keys(c.selected)) {
		seqs := c.selected[origin]
		newest, has := c.newest[origin]
		var late []int64
		for _, s := range seqs {
			if !has || s > newest { // seq newest is the checkpoint itself
				late = append(late, s)
			}
		}
		if len(late) == 0 {
			continue
		}
		slices.Sort(late)
		late = slices.Compact(late)
		n += len(late)
		where := "no checkpoint of it was read"
		if has {
			where = fmt.Sprintf("after its newest checkpoint read (size %d)", newest)
		}
		lines = append(lines, fmt.Sprintf("%s: %d events, seq %s, %s", origin, len(late), seqRanges(late), where))
	}
	return n, lines
}

// seqRanges writes sorted seqs as ranges: "3..5, 9"; at most ten.
func seqRanges(seqs []int64) string {
	var parts []string
	for i := 0; i < len(seqs); {
		j := i
		for j+1 < len(seqs) && seqs[j+1] == seqs[j]+1 {
			j++
		}
		if len(parts) == 10 {
			parts = append(parts, "…")
			break
		}
		if i == j {
			parts = append(parts, fmt.Sprint(seqs[i]))
		} else {
			parts = append(parts, fmt.Sprintf("%d..%d", seqs[i], seqs[j]))
		}
		i = j + 1
	}
	return strings.Join(parts, ", ")
}

// Pending says why the event at seq of origin is not yet committed, or ""
// when a checkpoint read commits to it.
func (c *Commitment) Pending(origin string, seq int64) string {
	newest, has := c.newest[origin]
	switch {
	case !has:
		return "no checkpoint of its log was read"
	case seq > newest:
		return fmt.Sprintf("it is after the newest checkpoint of its log read (size %d)", newest)
	}
	return ""
}
