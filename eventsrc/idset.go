package eventsrc

// IDSet remembers event ids, to drop the repeats of an event that
// at-least-once shipping delivers more than once (same event, same "id").
// Ids in the canonical form NewID writes take 16 bytes each; others are kept
// as strings. The zero IDSet is empty and ready to use.
type IDSet struct {
	uuids map[[16]byte]struct{}
	other map[string]struct{}
}

// Add adds id and reports whether it was not in the set yet. An empty id
// (an event without one) is never a repeat: Add returns true.
func (s *IDSet) Add(id []byte) bool {
	if len(id) == 0 {
		return true
	}
	if u, ok := parseUUID(id); ok {
		if s.uuids == nil {
			s.uuids = map[[16]byte]struct{}{}
		}
		if _, dup := s.uuids[u]; dup {
			return false
		}
		s.uuids[u] = struct{}{}
		return true
	}
	if s.other == nil {
		s.other = map[string]struct{}{}
	}
	if _, dup := s.other[string(id)]; dup {
		return false
	}
	s.other[string(id)] = struct{}{}
	return true
}

// Len returns the number of ids in the set.
func (s *IDSet) Len() int { return len(s.uuids) + len(s.other) }

// parseUUID parses the lower-case canonical form only, so that two ids map
// to the same key exactly when they are the same string.
func parseUUID(b []byte) (u [16]byte, ok bool) {
	if len(b) != 36 || b[8] != '-' || b[13] != '-' || b[18] != '-' || b[23] != '-' {
		return u, false
	}
	j := 0
	for i := 0; i < 36; {
		if i == 8 || i == 13 || i == 18 || i == 23 {
			i++
			continue
		}
		hi, ok1 := lowerHex(b[i])
		lo, ok2 := lowerHex(b[i+1])
		if !ok1 || !ok2 {
			return u, false
		}
		u[j] = hi<<4 | lo
		i += 2
		j++
	}
	return u, true
}

func lowerHex(c byte) (byte, bool) {
	switch {
	case c >= '0' && c <= '9':
		return c - '0', true
	case c >= 'a' && c <= 'f':
		return c - 'a' + 10, true
	}
	return 0, false
}
