package audit

import (
	"os"
	"reflect"
	"regexp"
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

// TestTypesNameEveryType: every Type constant of this file is in Types, or
// query --type would refuse it as unknown.
func TestTypesNameEveryType(t *testing.T) {
	src, err := os.ReadFile("types.go")
	if err != nil {
		t.Fatal(err)
	}
	consts := regexp.MustCompile(`(?m)^\s*Type\w+\s*=\s*"([a-z_]+)"`).FindAllSubmatch(src, -1)
	if len(consts) < 10 {
		t.Fatalf("found %d Type constants in types.go", len(consts))
	}
	for _, c := range consts {
		if !slices.Contains(Types, string(c[1])) {
			t.Errorf("type %q is not in Types", c[1])
		}
	}
	if len(Types) != len(consts) {
		t.Errorf("Types has %d entries, types.go %d constants", len(Types), len(consts))
	}
}
