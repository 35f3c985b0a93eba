package main

import (
	"fmt"
	"io"
	"strings"

	"github.com/auditproxy/auditproxy/auditlog"
	"github.com/auditproxy/auditproxy/eventsrc"
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

// proveSelected reads the events of paths into pr, the ones sel selects
// marked, and proves those: for a command (cmd) that needs exactly what sel
// names. verify reports unreadable events; a proof needs only the
// readable ones, so pr.Add's errors are not the command's.
func proveSelected(cmd string, pr *auditlog.Prover, sel *query.Selector, paths []string, stderr io.Writer) ([]auditlog.InclusionProof, error) {
	for _, path := range paths {
		err := eventsrc.Read(path, func(ev []byte) { _ = pr.Add(ev, sel.Match(ev)) })
		if err := warnDamaged(stderr, err); err != nil {
			return nil, fmt.Errorf("%s: %w", cmd, err)
		}
	}
	if err := checkSelected(cmd, sel); err != nil {
		return nil, err
	}
	proofs, err := pr.Prove()
	if err != nil {
		return nil, fmt.Errorf("%s: %w", cmd, err)
	}
	return proofs, nil
}
