package query

import (
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
		{"2026-11-23T10:00:00Z", queryT0},
		{"2026-11-23T11:00:00.5+01:00", queryT0.Add(500 * time.Millisecond)},
	} {
		got, err := ParseTimeBound(tc.in, now)
		if err != nil || !got.Equal(tc.want) {
			t.Errorf("ParseTimeBound(%q) = %v, %v; want %v", tc.in, got, err, tc.want)
		}
	}
	for _, in := range []string{"yesterday", "-1h", "1.5d", "-2d", "0d", "d", "100001d", "2026-11-23", "2026-11-23 10:00:00Z"} {
		if _, err := ParseTimeBound(in, now); err == nil || err.Error() != "want an RFC 3339 time or a duration like 24h" {
			t.Errorf("ParseTimeBound(%q): %v", in, err)
		}
	}
}
