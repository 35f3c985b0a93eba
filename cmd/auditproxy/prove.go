package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"

	"github.com/auditproxy/auditproxy/auditlog"
	"github.com/auditproxy/auditproxy/eventsrc"
	"github.com/auditproxy/auditproxy/query"
)

// runProve prints an inclusion proof for the events of one request.
func runProve(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("prove", "prove --request-id ID [--event-id ID] PATH...", stderr)
	requestID := fs.String("request-id", "", "the `id` of the request (X-Request-Id) whose event to prove")
	eventID := fs.String("event-id", "", "the event's own `id`: to choose among events with the same request id, or instead of it")
	var ignore ignoredMembers
	fs.Var(&ignore, "ignore-member", ignoreMemberUsage)
	if err := fs.Parse(args); err != nil {
		return err
	}
	if err := ignore.check("prove"); err != nil {
		return err
	}
	if (*requestID == "" && *eventID == "") || fs.NArg() == 0 {
		return usageError{"prove: give --request-id or --event-id, and at least one PATH"}
	}
	pr := auditlog.NewProver()
	pr.IgnoreMembers = ignore
	sel := query.NewSelector(*requestID, *eventID)
	var readErr error
	for _, path := range fs.Args() {
		err := eventsrc.Read(path, func(ev []byte) {
			// verify reports unreadable events; prove only needs the
			// readable ones.
			if err := pr.Add(ev, sel.Match(ev)); err != nil && readErr == nil {
				readErr = err
			}
		})
		if err := warnDamaged(stderr, err); err != nil {
			return fmt.Errorf("prove: %w", err)
		}
	}
	if err := checkSelected("prove", sel); err != nil {
		return err
	}
	proofs, err := pr.Prove()
	if err != nil {
		return fmt.Errorf("prove: %w", err)
	}
	enc := json.NewEncoder(stdout)
	enc.SetEscapeHTML(false)
	for _, proof := range proofs {
		if err := enc.Encode(proof); err != nil {
			return err
		}
	}
	return nil
}

// runVerifyProof checks proofs printed by prove.
func runVerifyProof(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("verify-proof", "verify-proof --pubkey FILE [PROOF-FILE | -]", stderr)
	var pubkeys stringList
	fs.Var(&pubkeys, "pubkey", "verifier key `file` (keygen's FILE.pub) or key text; repeat for several")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if len(pubkeys) == 0 || fs.NArg() > 1 {
		return usageError{"verify-proof: give --pubkey and at most one PROOF-FILE (default stdin)"}
	}
	keys, err := loadVerifiers(pubkeys)
	if err != nil {
		return usageError{"verify-proof: " + err.Error()}
	}
	var in io.Reader = os.Stdin
	if fs.NArg() == 1 && fs.Arg(0) != "-" {
		f, err := os.Open(fs.Arg(0))
		if err != nil {
			return fmt.Errorf("verify-proof: %w", err)
		}
		defer f.Close()
		in = f
	}
	dec := json.NewDecoder(in)
	n := 0
	for dec.More() {
		var proof auditlog.InclusionProof
		if err := dec.Decode(&proof); err != nil {
			return fmt.Errorf("verify-proof: not a proof printed by auditproxy prove: %w", err)
		}
		cp, err := proof.Check(keys)
		if err != nil {
			return fmt.Errorf("verify-proof: %w", err)
		}
		fmt.Fprintf(stdout, "verified: event %d of log %s is in the %d events its signed checkpoint commits to\n",
			proof.LeafIndex, cp.Origin, cp.Size)
		n++
	}
	if n == 0 {
		return usageError{"verify-proof: no proof in the input"}
	}
	return nil
}
