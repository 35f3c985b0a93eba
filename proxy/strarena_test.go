package proxy

import (
	"strings"
	"testing"
)

// TestStrArenaStringsStay checks that the arena's strings keep their bytes
// when the buffer outgrows its capacity and after reset starts the next
// request.
func TestStrArenaStringsStay(t *testing.T) {
	var a strArena
	a.reset()
	id := a.newID()
	if len(id) != 36 || strings.Count(id, "-") != 4 {
		t.Fatalf("newID = %q", id)
	}
	idCopy := strings.Clone(id)
	start := a.mark()
	long := strings.Repeat("x", 2*strArenaSize) // forces append to reallocate
	a.buf = append(a.buf, long...)
	got := a.since(start)
	if got != long || id != idCopy {
		t.Fatalf("after growth: id %q (was %q), long string intact: %v", id, idCopy, got == long)
	}
	if s := a.since(a.mark()); s != "" {
		t.Fatalf("empty string = %q", s)
	}
	a.reset()
	for range 20 {
		a.newID()
	}
	if id != idCopy || got != long {
		t.Fatalf("after reset: id %q (was %q)", id, idCopy)
	}
}
