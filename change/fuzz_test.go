package change

import (
	"bytes"
	"strings"
	"testing"
	"time"
)

// FuzzParseRecord: the record parser never panics, and what it accepts is
// its own canonical form, which parses again to the same record.
func FuzzParseRecord(f *testing.F) {
	good, _ := testRecord("a", "b").Canonical()
	f.Add(good)
	f.Add([]byte(`{"id":"x","id":"y"}`))
	f.Add([]byte(`{"actor":"a","created":"2026-12-05T14:23:11Z","id":"i","justification":"j","type":"t","before":{"a":[1,2,{"b":null}]}}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		r, canon, err := ParseRecord(b)
		if err != nil {
			return
		}
		again, err := r.Canonical()
		if err != nil || !bytes.Equal(again, canon) {
			t.Fatalf("%q parsed to %+v, whose canonical form %q differs from %q (%v)", b, r, again, canon, err)
		}
		if _, canon2, err := ParseRecord(canon); err != nil || !bytes.Equal(canon2, canon) {
			t.Fatalf("the canonical form %q does not parse back: %v", canon, err)
		}
	})
}

// FuzzAllowedSigners: the allowed-signers parser never panics, and what it
// accepts can be looked up: each key listed is allowed for the principals
// of its line that are plain names (no pattern), when the line has no
// negation, namespace or validity limit.
func FuzzAllowedSigners(f *testing.F) {
	const key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGJm5bq8w3P8yZ0m0G0b1C6y0Kq6sM6mH1Hn3W3b8x2c"
	f.Add([]byte("alice@example.com " + key + "\n"))
	f.Add([]byte(`"a b",c namespaces="x,y",valid-after="20200101Z" ` + key + " comment\n# c\n"))
	f.Add([]byte(`*,!bob ` + key))
	f.Fuzz(func(t *testing.T, b []byte) {
		as, err := ParseAllowedSigners("fuzz", b)
		if err != nil {
			return
		}
		for _, e := range as.entries {
			negated := false
			for _, p := range e.principals {
				negated = negated || strings.HasPrefix(p, "!")
			}
			if negated || e.namespaces != nil || !e.after.IsZero() || !e.before.IsZero() {
				continue
			}
			for _, p := range e.principals {
				if !strings.ContainsAny(p, "*?!") && !as.Allows(e.key, p, Namespace, time.Now()) {
					t.Fatalf("line %d lists %s for %q, and it is not allowed for it", e.line, e.key.Type(), p)
				}
			}
		}
	})
}
