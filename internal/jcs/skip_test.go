package jcs

import "testing"

// TestSkipValue: where each kind of value ends, escapes and nesting
// included; -1 where none does.
func TestSkipValue(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want int
	}{
		{`"abc",`, 5}, {`"a\"b"}`, 6}, {`"a\\"x`, 5}, {`"a\\\"b"`, 8}, {`"open`, -1},
		{`{"a":{"b":"}"}},`, 15}, {`[1,[2,"]"],3]x`, 13}, {`{"a":1`, -1},
		{`12.5e+3,`, 7}, {`true}`, 4}, {`null`, 4}, {`-Infinity]`, 9}, {`,`, -1}, {``, -1},
	} {
		if got := SkipValue([]byte(tc.in), 0); got != tc.want {
			t.Errorf("SkipValue(%q) = %d, want %d", tc.in, got, tc.want)
		}
	}
	if got := SkipString([]byte(`x"a"`), 0); got != -1 {
		t.Errorf("SkipString at a non-quote = %d", got)
	}
}
