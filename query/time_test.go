package query

import (
	"strings"
	"testing"
	"time"
)

func TestParseTimeBound(t *testing.T) {
	now := queryT0
	for _, tc := range []struct {
		in   string
		want time.Time
	}{
		{"", time.Time{}},
		{"24h", now.Add(-24 * time.Hour)},
		{"1h30m", now.Add(-90 * time.Minute)},
		{"30m", now.Add(-30 * time.Minute)},
		{"0s", now},
		{"7d", now.Add(-7 * 24 * time.Hour)},
		{"0d", now},
		{"2w", now.AddDate(0, 0, -14)},
		{"8mo", time.Date(2026, 3, 23, 10, 0, 0, 0, time.UTC)}, // on the calendar: 8 months before 2026-11-23
		{"1y", time.Date(2025, 11, 23, 10, 0, 0, 0, time.UTC)},
		{"2026-11-23", time.Date(2026, 11, 23, 0, 0, 0, 0, time.UTC)},
		{"2026-11-23T10:00:00Z", queryT0},
		{"2026-11-23T11:00:00.5+01:00", queryT0.Add(500 * time.Millisecond)},
	} {
		got, err := ParseTimeBound(tc.in, now)
		if err != nil || !got.Equal(tc.want) {
			t.Errorf("ParseTimeBound(%q) = %v, %v; want %v", tc.in, got, err, tc.want)
		}
	}
	for _, in := range []string{"yesterday", "-1h", "1.5d", "-2d", "+2d", "d", "mo", "100001d", "8 mo", "2026-11-31", "2026-11-23 10:00:00Z", "23.11.2026"} {
		if _, err := ParseTimeBound(in, now); err == nil || err.Error() != "want an RFC 3339 time (2026-12-04T09:30:00Z), a date (2026-12-04, from its start in UTC), or a span before now (90m, 24h, 30d, 2w, 8mo, 1y)" {
			t.Errorf("ParseTimeBound(%q): %v", in, err)
		}
	}
}

// FuzzParseTimeBound: never panics; a span is never after now, and what is
// refused gets the one message with the examples.
func FuzzParseTimeBound(f *testing.F) {
	for _, s := range []string{"24h", "8mo", "2026-12-04", "2026-12-04T09:30:00Z", "1y", "-1d", "99999y"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		now := queryT0
		got, err := ParseTimeBound(s, now)
		if err != nil {
			if !strings.HasPrefix(err.Error(), "want an RFC 3339 time") {
				t.Fatalf("%q: %v", s, err)
			}
			return
		}
		if _, rfc := time.Parse(time.RFC3339Nano, s); rfc != nil && len(s) != len(time.DateOnly) && got.After(now) {
			t.Fatalf("the span %q ends after now: %v", s, got)
		}
	})
}
