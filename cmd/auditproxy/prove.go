package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"

	"golang.org/x/mod/sumdb/note"

	"github.com/auditproxy/auditproxy/auditlog"
	"github.com/auditproxy/auditproxy/eventsrc"
	"github.com/auditproxy/auditproxy/query"
	"github.com/auditproxy/auditproxy/transcript"
)

// runProve prints an inclusion proof for the events of one request, or a
// consistency proof between two checkpoints of a log.
func runProve(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("prove", "prove --request-id ID [--event-id ID] [--format tlog-proof] [--cosignatures FILE] PATH... | prove --old-checkpoint FILE [--new-checkpoint FILE] PATH...", stderr)
	requestID := fs.String("request-id", "", "the `id` of the request (X-Request-Id) whose event to prove")
	eventID := fs.String("event-id", "", "the event's own `id`: to choose among events with the same request id, or instead of it")
	oldCP := fs.String("old-checkpoint", "", "prove that the log extends this checkpoint: a `file` holding its signed note or its checkpoint event (a line of checkpoints.ndjson)")
	newCP := fs.String("new-checkpoint", "", "with --old-checkpoint: the later checkpoint `file` to prove from (default: the newest checkpoint of that log among the events read)")
	format := fs.String("format", "json", "`format` of an inclusion proof: json (one JSON object a line, for verify-proof), or tlog-proof (C2SP tlog-proof: one self-contained proof, the event in its extra line, checked by verify-proof or any tlog-proof verifier; save it as NAME.tlog-proof)")
	var cosignatureFiles stringList
	fs.Var(&cosignatureFiles, "cosignatures", "`file` of cosigned checkpoints (DATA-DIR/cosignatures.ndjson): prove against the newest checkpoint a witness cosigned, and put its cosignatures in the proof")
	var ignore ignoredMembers
	fs.Var(&ignore, "ignore-member", ignoreMemberUsage)
	paths, err := parseFlagsAndArgs(fs, args)
	if err != nil {
		return err
	}
	if *format != "json" && *format != "tlog-proof" {
		return usageError{fmt.Sprintf("prove: --format %q: want json or tlog-proof", *format)}
	}
	if err := ignore.check("prove"); err != nil {
		return err
	}
	if *oldCP != "" || *newCP != "" {
		if *requestID != "" || *eventID != "" || *oldCP == "" || len(paths) == 0 {
			return usageError{"prove: a consistency proof takes --old-checkpoint (and --new-checkpoint), no --request-id or --event-id, and at least one PATH"}
		}
		return proveConsistency(*oldCP, *newCP, ignore, paths, stdout, stderr)
	}
	if (*requestID == "" && *eventID == "") || len(paths) == 0 {
		return usageError{"prove: give --request-id or --event-id, and at least one PATH"}
	}
	pr := auditlog.NewProver()
	pr.IgnoreMembers = ignore
	for _, name := range cosignatureFiles {
		if err := addCosigned(pr, name); err != nil {
			return fmt.Errorf("prove: %w", err)
		}
	}
	sel := query.NewSelector(*requestID, *eventID)
	proofs, err := proveSelected("prove", pr, sel, paths, stderr)
	if err != nil {
		return err
	}
	if *format == "tlog-proof" {
		if len(proofs) != 1 {
			return usageError{fmt.Sprintf("prove: %d events match, and a tlog-proof holds one: choose it with --event-id", len(proofs))}
		}
		_, err := stdout.Write(proofs[0].MarshalTLogProof())
		return err
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

// addCosigned offers pr the cosigned checkpoints of a witness client's
// cosignatures file.
func addCosigned(pr *auditlog.Prover, name string) error {
	b, err := os.ReadFile(name)
	if err != nil {
		return err
	}
	n := 0
	for line := range bytes.Lines(b) {
		n++
		if line = bytes.TrimSpace(line); len(line) == 0 {
			continue
		}
		var c struct {
			Note string `json:"note"`
		}
		if err := json.Unmarshal(line, &c); err != nil || c.Note == "" {
			return fmt.Errorf("%s line %d: not a cosignature line", name, n)
		}
		if err := pr.AddCosigned([]byte(c.Note)); err != nil {
			return fmt.Errorf("%s line %d: %w", name, n, err)
		}
	}
	return nil
}

// proveConsistency prints the consistency proof from the checkpoint in
// oldFile to the one in newFile, or to the newest of its log in paths.
func proveConsistency(oldFile, newFile string, ignore []string, paths []string, stdout, stderr io.Writer) error {
	readCP := func(name string) ([]byte, auditlog.Checkpoint, error) {
		b, err := os.ReadFile(name)
		if err != nil {
			return nil, auditlog.Checkpoint{}, err
		}
		msg, cp, err := auditlog.ReadCheckpoint(b)
		if err != nil {
			return nil, cp, fmt.Errorf("%s: %w", name, err)
		}
		return msg, cp, nil
	}
	oldNote, old, err := readCP(oldFile)
	if err != nil {
		return fmt.Errorf("prove: %w", err)
	}
	var newNote []byte
	if newFile != "" {
		if newNote, _, err = readCP(newFile); err != nil {
			return fmt.Errorf("prove: %w", err)
		}
	}
	pr := auditlog.NewProver()
	pr.IgnoreMembers = ignore
	for _, path := range paths {
		err := eventsrc.Read(path, func(ev []byte) { _ = pr.Add(ev, false) })
		if err := warnDamaged(stderr, err); err != nil {
			return fmt.Errorf("prove: %w", err)
		}
	}
	if newNote == nil {
		if newNote = pr.NewestCheckpoint(old.Origin); newNote == nil {
			return fmt.Errorf("prove: no checkpoint of log %s among the events read", old.Origin)
		}
	}
	proof, err := pr.ProveConsistency(oldNote, newNote)
	if err != nil {
		return fmt.Errorf("prove: %w", err)
	}
	enc := json.NewEncoder(stdout)
	enc.SetEscapeHTML(false)
	return enc.Encode(proof)
}

// runVerifyProof checks proofs printed by prove, and the evidence bundles
// bundle writes (a directory: its proof, then its event and bodies against
// the proven event).
func runVerifyProof(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("verify-proof", "verify-proof --pubkey FILE [--witness-key FILE] [PROOF-FILE | BUNDLE-DIR | -]", stderr)
	var pubkeys, witnessKeys stringList
	fs.Var(&pubkeys, "pubkey", "verifier key `file` (keygen's FILE.pub) or key text; repeat for several")
	fs.Var(&witnessKeys, "witness-key", "verifier key `file` (or text) of a witness that must have cosigned the checkpoint of an inclusion proof; repeat for several")
	paths, err := parseFlagsAndArgs(fs, args)
	if err != nil {
		return err
	}
	if len(pubkeys) == 0 || len(paths) > 1 {
		return usageError{"verify-proof: give --pubkey and at most one PROOF-FILE or BUNDLE-DIR (default stdin)"}
	}
	keys, err := loadVerifiers(pubkeys)
	if err != nil {
		return usageError{"verify-proof: " + err.Error()}
	}
	var witnesses []note.Verifier
	if len(witnessKeys) > 0 {
		if witnesses, err = loadWitnessKeys(witnessKeys); err != nil {
			return usageError{"verify-proof: " + err.Error()}
		}
	}
	inclusion := func(proof auditlog.InclusionProof) error {
		cp, err := proof.Check(keys)
		if err != nil {
			return fmt.Errorf("verify-proof: %w", err)
		}
		cosigners, err := proof.Cosigners(witnesses)
		if err != nil {
			return fmt.Errorf("verify-proof: %w", err)
		}
		fmt.Fprintf(stdout, "verified: event %d of log %s is in the %d events its signed checkpoint commits to", proof.LeafIndex, transcript.Line(cp.Origin), cp.Size)
		if len(cosigners) > 0 {
			fmt.Fprintf(stdout, ", cosigned by %s", strings.Join(cosigners, ", "))
		}
		fmt.Fprintln(stdout)
		return nil
	}
	if len(paths) == 1 {
		// A directory is an evidence bundle (auditproxy bundle): its proof,
		// and its event and bodies against the proven event.
		if fi, err := os.Stat(paths[0]); err == nil && fi.IsDir() {
			keyText, err := verifierKeyText(pubkeys)
			if err != nil {
				return fmt.Errorf("verify-proof: %w", err)
			}
			return verifyBundle(paths[0], inclusion, keyText, stdout)
		}
	}
	var in io.Reader = os.Stdin
	if len(paths) == 1 && paths[0] != "-" {
		f, err := os.Open(paths[0])
		if err != nil {
			return fmt.Errorf("verify-proof: %w", err)
		}
		defer f.Close()
		in = f
	}
	input, err := io.ReadAll(io.LimitReader(in, 64<<20))
	if err != nil {
		return fmt.Errorf("verify-proof: %w", err)
	}
	if bytes.HasPrefix(input, []byte(auditlog.TLogProofHeader+"\n")) {
		proof, err := auditlog.UnmarshalTLogProof(input)
		if err != nil {
			return fmt.Errorf("verify-proof: %w", err)
		}
		return inclusion(proof)
	}
	dec := json.NewDecoder(bytes.NewReader(input))
	n := 0
	for dec.More() {
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			return fmt.Errorf("verify-proof: not a proof printed by auditproxy prove: %w", err)
		}
		var kind struct {
			OldCheckpoint *string `json:"old_checkpoint"`
		}
		if json.Unmarshal(raw, &kind) == nil && kind.OldCheckpoint != nil {
			var proof auditlog.ConsistencyProof
			if err := json.Unmarshal(raw, &proof); err != nil {
				return fmt.Errorf("verify-proof: not a consistency proof printed by auditproxy prove: %w", err)
			}
			from, to, err := proof.Check(keys)
			if err != nil {
				return fmt.Errorf("verify-proof: %w", err)
			}
			fmt.Fprintf(stdout, "verified: log %s at size %d extends its checkpoint at size %d (consistency proof of %d hashes)\n",
				transcript.Line(to.Origin), to.Size, from.Size, len(proof.Proof))
			n++
			continue
		}
		var proof auditlog.InclusionProof
		if err := json.Unmarshal(raw, &proof); err != nil {
			return fmt.Errorf("verify-proof: not a proof printed by auditproxy prove: %w", err)
		}
		if err := inclusion(proof); err != nil {
			return err
		}
		n++
	}
	if n == 0 {
		return usageError{"verify-proof: no proof in the input"}
	}
	return nil
}
