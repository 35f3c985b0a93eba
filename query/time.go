package query

import (
	"errors"
	"strconv"
	"strings"
	"time"
)

// ParseTimeBound parses a bound of a time range, as the --since and --until
// flags of the auditor's commands take it: "" (no bound: the zero time), an
// RFC 3339 time, a date (2026-12-04: its start in loc, which auditors set
// with --tz), or a span (not negative) before now: time.ParseDuration's
// form (90m, 24h), or a whole number of days (30d), weeks (2w), months
// (8mo) or years (1y), counted on loc's calendar from now (8mo before
// 2026-12-04 is 2026-04-04).
func ParseTimeBound(s string, now time.Time, loc *time.Location) (time.Time, error) {
	now = now.In(loc)
	if s == "" {
		return time.Time{}, nil
	}
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t, nil
	}
	if t, err := time.Parse(time.DateOnly, s); err == nil {
		return dayStart(t.Year(), t.Month(), t.Day(), loc), nil
	}
	if d, err := time.ParseDuration(s); err == nil && d >= 0 {
		return now.Add(-d), nil
	}
	for _, u := range []struct {
		suffix              string
		years, months, days int
	}{{"mo", 0, 1, 0}, {"d", 0, 0, 1}, {"w", 0, 0, 7}, {"y", 1, 0, 0}} {
		if num, ok := strings.CutSuffix(s, u.suffix); ok {
			if n, err := strconv.Atoi(num); err == nil && n >= 0 && n <= 1e5 && strings.TrimLeft(num, "0123456789") == "" {
				return now.AddDate(-n*u.years, -n*u.months, -n*u.days), nil
			}
		}
	}
	return time.Time{}, errors.New("want an RFC 3339 time (2026-12-04T09:30:00Z), a date (2026-12-04, from its start in UTC or --tz), or a span before now (90m, 24h, 30d, 2w, 8mo, 1y)")
}
