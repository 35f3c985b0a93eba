package query

import (
	"errors"
	"strconv"
	"strings"
	"time"
)

// ParseTimeBound parses a bound of a time range, as the --since and --until
// flags of the auditor's commands take it: "" (no bound: the zero time), an
// RFC 3339 time, or a duration (not negative) before now, in
// time.ParseDuration's form (90m, 24h) or a whole number of days (7d).
func ParseTimeBound(s string, now time.Time) (time.Time, error) {
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
