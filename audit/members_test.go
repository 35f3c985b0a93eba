package audit

import (
	"reflect"
	"slices"
	"strings"
	"testing"
)

// TestMembersNameEveryMember: a member added to an event type must be
// added to Members, or a verifier would let an auditor drop it as an
// aggregator's.
func TestMembersNameEveryMember(t *testing.T) {
	for _, v := range []any{Event{}, opsEvent{}} {
		typ := reflect.TypeOf(v)
		for i := range typ.NumField() {
			name, _, _ := strings.Cut(typ.Field(i).Tag.Get("json"), ",")
			if name != "" && name != "-" && !slices.Contains(Members, name) {
				t.Errorf("%s's member %q is not in Members", typ.Name(), name)
			}
		}
	}
}
