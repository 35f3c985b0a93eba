package main

import (
	"fmt"
	"strings"

	"github.com/auditproxy/auditproxy/query"
	"github.com/auditproxy/auditproxy/transcript"
)

// checkSelected returns an error unless sel selected exactly one event: none
// is a failure, several (a client sent its request id more than once) a
// usage error that names them and asks for --event-id.
func checkSelected(cmd string, sel *query.Selector) error {
	m := sel.Matched()
	switch len(m) {
	case 0:
		return fmt.Errorf("%s: no event with %s", cmd, sel.Describe())
	case 1:
		return nil
	}
	list := make([]string, len(m))
	for i, e := range m {
		list[i] = transcript.Line(e.ID) + " (" + transcript.Line(e.Time) + ")"
	}
	return usageError{fmt.Sprintf("%s: %d events have %s (a client sent it more than once): %s; give --event-id to choose one",
		cmd, len(m), sel.Describe(), strings.Join(list, ", "))}
}
