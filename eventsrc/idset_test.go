package eventsrc

import "testing"

func TestIDSet(t *testing.T) {
	var s IDSet
	for i, tc := range []struct {
		id  string
		new bool
	}{
		{"6f1c2a3b-4d5e-4f60-8a7b-9c0d1e2f3a4b", true},
		{"6f1c2a3b-4d5e-4f60-8a7b-9c0d1e2f3a4b", false},
		{"6F1C2A3B-4D5E-4F60-8A7B-9C0D1E2F3A4B", true}, // another string, another id
		{"6F1C2A3B-4D5E-4F60-8A7B-9C0D1E2F3A4B", false},
		{"6f1c2a3b-4d5e-4f60-8a7b-9c0d1e2f3a4c", true},
		{"ev-1", true},
		{"ev-1", false},
		{"", true},
		{"", true}, // no id: never a repeat
	} {
		if got := s.Add([]byte(tc.id)); got != tc.new {
			t.Errorf("%d: Add(%q) = %v, want %v", i, tc.id, got, tc.new)
		}
	}
	if s.Len() != 4 {
		t.Errorf("Len() = %d, want 4", s.Len())
	}
}
