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
		got, err := ParseTimeBound(tc.in, now, time.UTC)
		if err != nil || !got.Equal(tc.want) {
			t.Errorf("ParseTimeBound(%q) = %v, %v; want %v", tc.in, got, err, tc.want)
		}
	}
	// With --tz, a date is that day in the zone, and a span counts that
	// zone's calendar days: 1d before 2026-03-29T10:00 in Paris crosses
	// the change to summer time, so it is 23 hours.
	paris, err := time.LoadLocation("Europe/Paris")
	if err != nil {
		t.Fatal(err)
	}
	if got, err := ParseTimeBound("2026-11-23", now, paris); err != nil || !got.Equal(time.Date(2026, 11, 22, 23, 0, 0, 0, time.UTC)) {
		t.Errorf("a date in Paris: %v, %v", got, err)
	}
	spring := time.Date(2026, 3, 29, 8, 0, 0, 0, time.UTC)
	if got, err := ParseTimeBound("1d", spring, paris); err != nil || spring.Sub(got) != 23*time.Hour {
		t.Errorf("1d across the change of time in Paris: %v, %v", got, err)
	}
	for _, in := range []string{"yesterday", "-1h", "1.5d", "-2d", "+2d", "d", "mo", "100001d", "8 mo", "2026-11-31", "2026-11-23 10:00:00Z", "23.11.2026"} {
		if _, err := ParseTimeBound(in, now, time.UTC); err == nil || err.Error() != "want an RFC 3339 time (2026-12-04T09:30:00Z), a date (2026-12-04, from its start in UTC or --tz), or a span before now (90m, 24h, 30d, 2w, 8mo, 1y)" {
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
		got, err := ParseTimeBound(s, now, time.UTC)
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
