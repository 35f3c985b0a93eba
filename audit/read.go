package audit

// This file reads back what event.go defines.

import (
	"fmt"
	"strings"
	"time"
)

// Outcomes returns every Outcome an event can have, in the order of their
// declaration.
func Outcomes() []Outcome {
	return []Outcome{OutcomeOK, OutcomeUpstreamError, OutcomeUpstreamUnreachable,
		OutcomeUpstreamTimeout, OutcomeClientCancelled, OutcomeRejected}
}

// ParseOutcome returns s as an Outcome, or an error naming the outcomes
// there are when s is none of them.
func ParseOutcome(s string) (Outcome, error) {
	all := Outcomes()
	names := make([]string, len(all))
	for i, o := range all {
		if string(o) == s {
			return o, nil
		}
		names[i] = string(o)
	}
	return "", fmt.Errorf("unknown outcome %q: want one of %s", s, strings.Join(names, ", "))
}

// ParseTime parses an RFC 3339 time. Events' times, written as Timestamp
// writes them (UTC, nine fractional digits), take a fast path.
func ParseTime(b []byte) (time.Time, error) {
	if t, ok := parseTimestamp(b); ok {
		return t, nil
	}
	t, err := time.Parse(time.RFC3339Nano, string(b))
	if err != nil {
		return time.Time{}, fmt.Errorf("event time %q is not an RFC 3339 time", b)
	}
	return t, nil
}

// parseTimestamp parses exactly the layout "2006-01-02T15:04:05.000000000Z".
func parseTimestamp(b []byte) (time.Time, bool) {
	if len(b) != len(timestampLayout) || b[4] != '-' || b[7] != '-' || b[10] != 'T' ||
		b[13] != ':' || b[16] != ':' || b[19] != '.' || b[29] != 'Z' {
		return time.Time{}, false
	}
	num := func(s []byte) (int, bool) {
		n := 0
		for _, c := range s {
			if c < '0' || c > '9' {
				return 0, false
			}
			n = n*10 + int(c-'0')
		}
		return n, true
	}
	y, ok1 := num(b[0:4])
	mo, ok2 := num(b[5:7])
	d, ok3 := num(b[8:10])
	h, ok4 := num(b[11:13])
	mi, ok5 := num(b[14:16])
	s, ok6 := num(b[17:19])
	ns, ok7 := num(b[20:29])
	if !(ok1 && ok2 && ok3 && ok4 && ok5 && ok6 && ok7) || mo < 1 || mo > 12 || d < 1 || h > 23 || mi > 59 || s > 59 {
		return time.Time{}, false
	}
	t := time.Date(y, time.Month(mo), d, h, mi, s, ns, time.UTC)
	if t.Day() != d { // 31 April and the like; time.Parse says why
		return time.Time{}, false
	}
	return t, true
}
