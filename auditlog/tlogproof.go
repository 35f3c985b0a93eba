package auditlog

import (
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
)

// TLogProofHeader starts a proof in the C2SP tlog-proof format
// (https://c2sp.org/tlog-proof).
const TLogProofHeader = "c2sp.org/tlog-proof@v1"

// MarshalTLogProof writes p in the C2SP tlog-proof format, the offline
// proof a third party checks with the log's verifier key (and the
// witnesses' keys) alone:
//
//	c2sp.org/tlog-proof@v1
//	extra <base64 of the event>
//	index <seq>
//	<inclusion proof, one base64 hash a line>
//
//	<the signed checkpoint, cosignatures included>
//
// The event travels in the extra line: the format leaves the entry out,
// and says the extra data is not to be trusted as it stands. It is not:
// UnmarshalTLogProof's caller checks it with InclusionProof.Check, which
// hashes it to the leaf the proof leads from.
func (p *InclusionProof) MarshalTLogProof() []byte {
	var b bytes.Buffer
	b.WriteString(TLogProofHeader + "\n")
	b.WriteString("extra " + base64.StdEncoding.EncodeToString(p.Event) + "\n")
	fmt.Fprintf(&b, "index %d\n", p.LeafIndex)
	for _, h := range p.Proof {
		b.WriteString(base64.StdEncoding.EncodeToString(h[:]) + "\n")
	}
	b.WriteString("\n")
	b.WriteString(p.Checkpoint)
	return b.Bytes()
}

// UnmarshalTLogProof reads a proof in the C2SP tlog-proof format written by
// MarshalTLogProof. Nothing is verified: call Check.
//
// Not transparency-dev/formats' proof.TLogProof (against which the tests
// check this format both ways): it reads lines with a bufio.Scanner's
// 64 KiB limit, and an event with a captured payload is longer in base64.
// Nor does it refuse an index with leading zeroes, which the spec forbids.
func UnmarshalTLogProof(b []byte) (InclusionProof, error) {
	var p InclusionProof
	head, checkpoint, ok := bytes.Cut(b, []byte("\n\n"))
	if !ok {
		return p, errors.New("tlog-proof: no empty line before the checkpoint")
	}
	lines := strings.Split(string(head), "\n")
	if lines[0] != TLogProofHeader {
		return p, fmt.Errorf("tlog-proof: the first line is %.40q, not %q", lines[0], TLogProofHeader)
	}
	lines = lines[1:]
	if len(lines) == 0 || !strings.HasPrefix(lines[0], "extra ") {
		return p, errors.New("tlog-proof: no extra line: the proofs auditproxy writes carry the event there")
	}
	event, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(lines[0], "extra "))
	if err != nil {
		return p, fmt.Errorf("tlog-proof: the extra line is not base64: %v", err)
	}
	p.Event = event
	lines = lines[1:]
	if len(lines) == 0 || !strings.HasPrefix(lines[0], "index ") {
		return p, errors.New("tlog-proof: no index line")
	}
	idx := strings.TrimPrefix(lines[0], "index ")
	if p.LeafIndex, err = strconv.ParseInt(idx, 10, 64); err != nil || p.LeafIndex < 0 || strconv.FormatInt(p.LeafIndex, 10) != idx {
		return p, fmt.Errorf("tlog-proof: index %.30q is not a decimal number without leading zeroes", idx)
	}
	for i, line := range lines[1:] {
		h, err := base64.StdEncoding.DecodeString(line)
		if err != nil || len(h) != tlog.HashSize {
			return p, fmt.Errorf("tlog-proof: proof line %d is not a base64 SHA-256 hash", i+1)
		}
		p.Proof = append(p.Proof, tlog.Hash(h))
	}
	p.Checkpoint = string(checkpoint)
	cp, err := checkpointOfNote(checkpoint)
	if err != nil {
		return p, fmt.Errorf("tlog-proof: the checkpoint: %v", err)
	}
	p.TreeSize = cp.Size
	return p, nil
}

// Cosigners returns the names of the witnesses whose cosignature on p's
// checkpoint verifies with witnesses, and an error naming any of
// witnesses that did not cosign it.
func (p *InclusionProof) Cosigners(witnesses []note.Verifier) ([]string, error) {
	var names, missing []string
	for _, w := range witnesses {
		if _, err := note.Open([]byte(p.Checkpoint), note.VerifierList(w)); err != nil {
			missing = append(missing, w.Name())
			continue
		}
		names = append(names, w.Name())
	}
	if len(missing) > 0 {
		return names, fmt.Errorf("the checkpoint is not cosigned by %s", strings.Join(missing, ", "))
	}
	return names, nil
}
