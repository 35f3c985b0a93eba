package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/mod/sumdb/note"

	"github.com/auditproxy/auditproxy/audit"
	"github.com/auditproxy/auditproxy/auditlog"
	"github.com/auditproxy/auditproxy/hashing"
	"github.com/auditproxy/auditproxy/payload"
	"github.com/auditproxy/auditproxy/query"
	"github.com/auditproxy/auditproxy/transcript"
)

// The files of an evidence bundle.
const (
	bundleEvent    = "event.json"
	bundleProof    = "event.tlog-proof"
	bundleKey      = "log.pub"
	bundleRequest  = "request.body"
	bundleResponse = "response.body"
	bundleReadme   = "README.txt"
)

// runBundle writes an evidence bundle: one directory that lets a third
// party check one inference with the auditproxy binary alone, or with
// standard tools:
//
//	event.json        the event, exactly as the log holds it (one line)
//	event.tlog-proof  its inclusion proof and signed checkpoint (C2SP tlog-proof), self-contained
//	log.pub           the verifier key(s) given with --pubkey that signed the checkpoint
//	request.body      with --identity: the decrypted bodies, the exact bytes the event's hashes cover,
//	response.body
//	transcript.txt    and their readable text (the request indented, the answer re-assembled)
//	README.txt        what each file is, and the commands that check them
//
// The proof is checked with --pubkey and the bodies against the event
// before anything is written; a directory that is not empty is refused.
// verify-proof --pubkey DIR/log.pub DIR checks a bundle.
func runBundle(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("bundle", "bundle --request-id ID [--event-id ID] --pubkey FILE [--identity FILE] [--cosignatures FILE] --out DIR PATH...", stderr)
	requestID := fs.String("request-id", "", "the `id` of the request (X-Request-Id) whose evidence to bundle")
	eventID := fs.String("event-id", "", "the event's own `id`: to choose among events with the same request id, or instead of it")
	var pubkeys stringList
	fs.Var(&pubkeys, "pubkey", "verifier key `file` (keygen's FILE.pub) or key text of the log's checkpoints: the proof is checked with it, and it is copied to DIR/log.pub (public keys only)")
	identity := fs.String("identity", "", "age identity `file` that decrypts the captured bodies: the bundle then holds them; without it, no bodies")
	var cosignatureFiles stringList
	fs.Var(&cosignatureFiles, "cosignatures", "`file` of cosigned checkpoints (DATA-DIR/cosignatures.ndjson): prove against the newest checkpoint a witness cosigned, and put its cosignatures in the proof")
	out := fs.String("out", "", "the `directory` to write: new, or empty")
	var ignore ignoredMembers
	fs.Var(&ignore, "ignore-member", ignoreMemberUsage)
	paths, err := parseFlagsAndArgs(fs, args)
	if err != nil {
		return err
	}
	if (*requestID == "" && *eventID == "") || len(pubkeys) == 0 || *out == "" || len(paths) == 0 {
		return usageError{"bundle: give --request-id or --event-id, --pubkey, --out and at least one PATH"}
	}
	if err := ignore.check("bundle"); err != nil {
		return err
	}
	verifiers, err := loadVerifiers(pubkeys)
	if err != nil {
		return usageError{"bundle: " + err.Error()}
	}
	keyText, err := verifierKeyText(pubkeys)
	if err != nil {
		return fmt.Errorf("bundle: %w", err)
	}
	if err := checkEmptyDir(*out); err != nil {
		return usageError{"bundle: " + err.Error()}
	}
	ids, err := loadIdentities(*identity)
	if err != nil {
		return fmt.Errorf("bundle: %w", err)
	}

	pr := auditlog.NewProver()
	pr.IgnoreMembers = ignore
	for _, name := range cosignatureFiles {
		if err := addCosigned(pr, name); err != nil {
			return fmt.Errorf("bundle: %w", err)
		}
	}
	sel := query.NewSelector(*requestID, *eventID)
	proofs, err := proveSelected("bundle", pr, sel, paths, stderr)
	if err != nil {
		return err
	}
	if len(proofs) != 1 {
		return usageError{fmt.Sprintf("bundle: %d events match, and a bundle holds one: choose it with --event-id", len(proofs))}
	}
	proof := proofs[0]
	cp, err := proof.Check(verifiers)
	if err != nil {
		return fmt.Errorf("bundle: the proof does not check with the --pubkey given: %w", err)
	}
	// log.pub holds the keys that signed the checkpoint, no other: a
	// reader who finds the operator's key in it must be able to take it
	// that this key signed.
	var signing strings.Builder
	for k := range strings.FieldsSeq(keyText) {
		if v, err := note.NewVerifier(k); err == nil && signedBy(proof.Checkpoint, v) {
			signing.WriteString(k + "\n")
		}
	}
	keyText = signing.String()
	var ev audit.Event
	if err := json.Unmarshal(proof.Event, &ev); err != nil {
		return fmt.Errorf("bundle: the event is not readable: %w", err)
	}

	files := []bundleFile{
		{bundleEvent, append(bytes.Clone(proof.Event), '\n'), 0o600},
		{bundleProof, proof.MarshalTLogProof(), 0o600},
		{bundleKey, []byte(keyText), 0o644},
	}
	var bodies *bundleBodies
	switch {
	case ids == nil:
	case ev.Payload == nil:
		return fmt.Errorf("bundle: --identity given, but the event has no captured payload (the sidecar ran without --capture-payloads)")
	default:
		req, resp, err := payload.Open(ev.Payload.Age, ids)
		if err != nil {
			return fmt.Errorf("bundle: %w", err)
		}
		rq, err := checkBody("the decrypted request", req, ev.Input, capturedBytes(ev.Payload, ev.Payload.InputBytes, ev.Input))
		if err != nil {
			return fmt.Errorf("bundle: %w", err)
		}
		rs, err := checkBody("the decrypted response", resp, ev.Output, capturedBytes(ev.Payload, ev.Payload.OutputBytes, ev.Output))
		if err != nil {
			return fmt.Errorf("bundle: %w", err)
		}
		fillBodies(rq, rs, req, resp)
		bodies = &bundleBodies{rq, rs}
		files = append(files,
			bundleFile{bundleRequest, req, 0o600},
			bundleFile{bundleResponse, resp, 0o600},
			bundleFile{transcriptFile, []byte(readableBodies(rq, rs, req, resp)), 0o600})
	}
	files = append(files, bundleFile{bundleReadme, []byte(bundleReadmeText(&ev, cp, bodies, ids != nil)), 0o644})
	if err := writeBundle(*out, files); err != nil {
		return fmt.Errorf("bundle: %w", err)
	}
	names := make([]string, len(files))
	for i, f := range files {
		names[i] = f.name
	}
	fmt.Fprintf(stdout, "wrote %s: %s\n", transcript.Line(*out), strings.Join(names, ", "))
	if ids == nil {
		fmt.Fprintln(stdout, "  no bodies: made without --identity, so only the event and its place in the log can be checked")
	}
	fmt.Fprintf(stdout, "  check it: auditproxy verify-proof --pubkey %s %s\n", transcript.Line(filepath.Join(*out, bundleKey)), transcript.Line(*out))
	return nil
}

type bundleFile struct {
	name string
	b    []byte
	perm os.FileMode
}

type bundleBodies struct{ req, resp *bodyReport }

// verifierKeyText is the verifier keys specs name, one a line, as
// loadVerifiers read them (it has refused anything else).
func verifierKeyText(specs []string) (string, error) {
	var b strings.Builder
	seen := map[string]bool{}
	for _, spec := range specs {
		text := spec
		if f, err := os.ReadFile(spec); err == nil {
			text = string(f)
		}
		for line := range strings.SplitSeq(text, "\n") {
			line = strings.TrimSpace(line)
			if line == "" || strings.HasPrefix(line, "#") || seen[line] {
				continue
			}
			if _, err := note.NewVerifier(line); err != nil {
				return "", errors.New("a --pubkey line is not a verifier key") // loadVerifiers said which
			}
			seen[line] = true
			b.WriteString(line + "\n")
		}
	}
	return b.String(), nil
}

// checkEmptyDir refuses a directory that holds anything: a bundle is
// written whole, never over or among other files.
func checkEmptyDir(dir string) error {
	entries, err := os.ReadDir(dir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil
	case err != nil:
		return fmt.Errorf("--out %s: %v", dir, err)
	case len(entries) > 0:
		return fmt.Errorf("--out %s is not empty (%d entries): a bundle is written into a new or empty directory, never over other files", dir, len(entries))
	}
	return nil
}

// writeBundle writes files into dir, created 0700 where new: the bodies
// are what a customer sent and was answered.
func writeBundle(dir string, files []bundleFile) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	if err := checkEmptyDir(dir); err != nil { // made meanwhile
		return err
	}
	for _, f := range files {
		if err := os.WriteFile(filepath.Join(dir, f.name), f.b, f.perm); err != nil {
			return err
		}
	}
	return nil
}

// bundleReadmeText is README.txt: what each file is and how to check it,
// in plain language.
func bundleReadmeText(ev *audit.Event, cp auditlog.Checkpoint, bodies *bundleBodies, identity bool) string {
	var b strings.Builder
	p := func(format string, args ...any) { fmt.Fprintf(&b, format+"\n", args...) }
	L := transcript.Line
	p("Evidence for one inference recorded by auditproxy")
	p("")
	p("Request id:  %s", L(ev.RequestID))
	p("Event id:    %s", L(ev.ID))
	p("Time:        %s (when the sidecar received the request)", time.Time(ev.Time).UTC().Format(time.RFC3339Nano))
	p("Model:       %s, weights checksum %s", L(ev.Model.Name), L(orUnknown(ev.Model.Checksum)))
	if ev.Log != nil {
		p("Log:         %s, event number %d of the %d the signed checkpoint commits to", L(ev.Log.Origin), ev.Log.Seq, cp.Size)
	}
	p("Bundled:     %s by auditproxy %s", time.Now().UTC().Format(time.RFC3339), L(buildVersion()))
	p("")
	p("FILES")
	p("")
	p("  %-17s the audit event the sidecar wrote for this request, exactly as its log holds it", bundleEvent)
	p("  %-17s (one JSON line): the model and its weights checksum, the GPUs (a digest), the API key's", "")
	p("  %-17s keyed id, token counts, latency, status, and the hashes of both bodies.", "")
	p("  %-17s proof that this event is in the sidecar's signed, append-only log: the event, its", bundleProof)
	p("  %-17s inclusion proof and the checkpoint signed with the log's key, in the C2SP tlog-proof", "")
	p("  %-17s format (https://c2sp.org/tlog-proof).", "")
	p("  %-17s the public key that verifies the log's checkpoints, as the bundle's maker gave it.", bundleKey)
	if bodies != nil {
		p("  %-17s the request body the client sent, byte for byte (decrypted from the capture).", bundleRequest)
		p("  %-17s the response body the client received, byte for byte (a streamed answer is its", bundleResponse)
		p("  %-17s Server-Sent Events frames).", "")
		p("  %-17s both bodies as readable text: the request indented, the answer re-assembled from", transcriptFile)
		p("  %-17s the stream. For reading only: the checks are on the .body files.", "")
	}
	p("  %-17s this file.", bundleReadme)
	p("")
	if bodies == nil {
		why := "it was made without the age identity that decrypts the bodies the sidecar captured"
		if identity {
			why = "the event has no captured bodies"
		}
		p("This bundle holds no bodies: %s. Only the event and its place in the log can be checked;", why)
		p("anyone holding the bodies can check them against the event's input.hash and output.hash (step 3).")
		p("")
	} else {
		p("request.body and response.body hold what a customer sent and was answered: keep this directory")
		p("as confidential as they are.")
		p("")
	}
	p("HOW TO CHECK IT")
	p("")
	p("1. Compare log.pub with the verifier key the operator publishes (on its website, in its contract")
	p("   or security documentation). The proof is only as good as the key: anyone can make a key and sign")
	p("   a log of their own with it. Do not take log.pub's word for it.")
	p("")
	p("2. With the auditproxy binary, in this directory:")
	p("")
	p("     auditproxy verify-proof --pubkey log.pub .")
	p("")
	p("   It checks that the checkpoint is signed by log.pub's key, that the event is in the log the")
	p("   checkpoint commits to (the inclusion proof), that event.json is that event, and that")
	p("   request.body and response.body hash to the hashes the event records, that transcript.txt is")
	p("   their readable text, and that the directory holds no other file. It says what it checked,")
	p("   and fails with the reason when anything was altered.")
	p("")
	p("3. The bodies, by hand, without auditproxy: the event's \"input\" and \"output\" members hold")
	p("   \"hash\":\"ALGORITHM:HEX\". For sha256: run sha256sum; for blake3: b3sum")
	p("   (https://github.com/BLAKE3-team/BLAKE3). The HEX each prints must be the event's:")
	p("")
	for _, h := range []struct{ file, member, hash string }{{bundleRequest, "input.hash", ev.Input.Hash}, {bundleResponse, "output.hash", ev.Output.Hash}} {
		alg, hex, _ := strings.Cut(h.hash, ":")
		tool := "sha256sum"
		if alg == string(hashing.BLAKE3) {
			tool = "b3sum"
		}
		p("     %s %-13s  must print %s (event.json's %s)", tool, h.file, L(hex), h.member)
	}
	p("")
	p("   The values above are copied from event.json for convenience: compare with event.json itself,")
	p("   which the proof covers.")
	if bodies != nil {
		for _, x := range []struct {
			name string
			r    *bodyReport
		}{{bundleRequest, bodies.req}, {bundleResponse, bodies.resp}} {
			if x.r.Check != "matches" {
				p("")
				p("   NOTE: %s: %s.", x.name, x.r.Check)
			}
		}
	}
	p("")
	p("4. Optionally, that event.json is the event the proof carries (in its \"extra\" line, base64),")
	p("   with standard tools (bash); cmp prints nothing when they are the same:")
	p("")
	p("     sed -n 2p event.tlog-proof | cut -d' ' -f2 | base64 -d | cmp - <(tr -d '\\n' < event.json)")
	p("")
	p("   Another C2SP tlog-proof verifier can check event.tlog-proof with log.pub, given the entry it")
	p("   proves: the RFC 8785 canonical JSON of event.json (its RFC 6962 leaf hash is SHA-256 of a zero")
	p("   byte and that entry).")
	return b.String()
}

func orUnknown(s string) string {
	if s == "" {
		return "unknown"
	}
	return s
}

// verifyBundle checks a bundle directory: its proof (as verify-proof
// checks any), that event.json is the event proven, and that the bodies
// hash to the proven event's hashes. keyText is the --pubkey keys, one a
// line: the one that signed the checkpoint is named, for the reader to
// compare with the operator's (a log.pub may hold others beside it).
func verifyBundle(dir string, check func(auditlog.InclusionProof) error, keyText string, stdout io.Writer) error {
	b, err := os.ReadFile(filepath.Join(dir, bundleProof))
	if err != nil {
		return fmt.Errorf("verify-proof: %s is not an evidence bundle (auditproxy bundle): %w", dir, err)
	}
	// Only the files bundle writes: anything else would be read as part
	// of the evidence, unchecked.
	entries, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("verify-proof: %w", err)
	}
	for _, e := range entries {
		switch e.Name() {
		case bundleEvent, bundleProof, bundleKey, bundleRequest, bundleResponse, transcriptFile, bundleReadme:
		default:
			return fmt.Errorf("verify-proof: %s is no file of a bundle: a bundle holds %s and nothing else, so none of it is checked",
				transcript.Line(e.Name()), strings.Join([]string{bundleEvent, bundleProof, bundleKey, bundleRequest, bundleResponse, transcriptFile, bundleReadme}, ", "))
		}
	}
	proof, err := auditlog.UnmarshalTLogProof(b)
	if err != nil {
		return fmt.Errorf("verify-proof: %s: %w", bundleProof, err)
	}
	if err := check(proof); err != nil {
		return err
	}
	evFile, err := os.ReadFile(filepath.Join(dir, bundleEvent))
	switch {
	case errors.Is(err, fs.ErrNotExist):
		fmt.Fprintf(stdout, "  %s: none in the bundle; the event checked is the one in %s\n", bundleEvent, bundleProof)
	case err != nil:
		return fmt.Errorf("verify-proof: %w", err)
	case !bytes.Equal(bytes.TrimSuffix(evFile, []byte("\n")), proof.Event):
		return fmt.Errorf("verify-proof: %s is not the event %s proves: it was altered, or the proof is another event's", bundleEvent, bundleProof)
	default:
		fmt.Fprintf(stdout, "  %s: the event the proof proves\n", bundleEvent)
	}
	var ev audit.Event
	if err := json.Unmarshal(proof.Event, &ev); err != nil {
		return fmt.Errorf("verify-proof: the proven event is not readable: %w", err)
	}
	fmt.Fprintf(stdout, "  request %s at %s, model %s, weights %s\n", transcript.Line(ev.RequestID),
		time.Time(ev.Time).UTC().Format(time.RFC3339Nano), transcript.Line(ev.Model.Name), transcript.Line(orUnknown(ev.Model.Checksum)))
	var inCaptured, outCaptured int64
	if ev.Payload != nil {
		inCaptured, outCaptured = ev.Payload.InputBytes, ev.Payload.OutputBytes
	}
	n := 0
	var bodies [2][]byte
	var reports [2]*bodyReport
	for i, f := range []struct {
		name, member string
		want         audit.Body
		captured     int64
	}{{bundleRequest, "input.hash", ev.Input, inCaptured}, {bundleResponse, "output.hash", ev.Output, outCaptured}} {
		body, err := os.ReadFile(filepath.Join(dir, f.name))
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return fmt.Errorf("verify-proof: %w", err)
		}
		n++
		r, err := checkBody(f.name, body, f.want, capturedBytes(ev.Payload, f.captured, f.want))
		if err != nil {
			return fmt.Errorf("verify-proof: %w: it was altered, or is another exchange's", err)
		}
		bodies[i], reports[i] = body, r
		if r.Check == "matches" {
			fmt.Fprintf(stdout, "  %s: %d bytes, %s matches the event's %s\n", f.name, r.Bytes, transcript.Line(r.Hash), f.member)
		} else {
			fmt.Fprintf(stdout, "  %s: %s\n", f.name, r.Check)
		}
	}
	if n == 0 {
		fmt.Fprintf(stdout, "  no bodies in the bundle: only the event and its place in the log were checked\n")
	}
	text, err := os.ReadFile(filepath.Join(dir, transcriptFile))
	switch {
	case n == 1 && reports[0] != nil:
		return fmt.Errorf("verify-proof: the bundle holds %s and not %s: bundle writes both or neither", bundleRequest, bundleResponse)
	case n == 1:
		return fmt.Errorf("verify-proof: the bundle holds %s and not %s: bundle writes both or neither", bundleResponse, bundleRequest)
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		return fmt.Errorf("verify-proof: %w", err)
	case n == 0:
		return fmt.Errorf("verify-proof: the bundle holds %s and no bodies: it is their readable text, and cannot be checked without them", transcriptFile)
	default:
		fillBodies(reports[0], reports[1], bodies[0], bodies[1])
		if string(text) != readableBodies(reports[0], reports[1], bodies[0], bodies[1]) {
			return fmt.Errorf("verify-proof: %s is not the readable text of %s and %s (as auditproxy %s writes it): it was altered, or written by another version; read the bodies",
				transcriptFile, bundleRequest, bundleResponse, transcript.Line(buildVersion()))
		}
		fmt.Fprintf(stdout, "  %s: the readable text of the bodies\n", transcriptFile)
	}
	keys := strings.Fields(keyText)
	var signers []string
	for _, k := range keys {
		v, err := note.NewVerifier(k)
		if err == nil && signedBy(proof.Checkpoint, v) {
			signers = append(signers, k)
		}
	}
	for _, k := range signers {
		fmt.Fprintf(stdout, "  checkpoint signed by %s\n", transcript.Line(k))
	}
	if len(keys) > len(signers) {
		fmt.Fprintf(stdout, "  --pubkey holds %d keys: only the one named above signed\n", len(keys))
	}
	fmt.Fprintf(stdout, "  compare the key that signed with the one the operator publishes: the proof is only as good as the key\n")
	return nil
}

// signedBy reports whether the signed note msg carries v's signature.
func signedBy(msg string, v note.Verifier) bool {
	_, err := note.Open([]byte(msg), note.VerifierList(v))
	return err == nil
}
