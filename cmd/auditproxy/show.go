package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"filippo.io/age"

	"github.com/auditproxy/auditproxy/audit"
	"github.com/auditproxy/auditproxy/auditlog"
	"github.com/auditproxy/auditproxy/change"
	"github.com/auditproxy/auditproxy/eventsrc"
	"github.com/auditproxy/auditproxy/hashing"
	"github.com/auditproxy/auditproxy/payload"
	"github.com/auditproxy/auditproxy/query"
	"github.com/auditproxy/auditproxy/transcript"
)

// runShow answers, for one request, which model version answered it, on
// which GPUs and vLLM version, for whom, what was sent and what came back:
// the event; the model's weights checksum and the rollout and signed change
// record in effect; the GPU identity its digest stands for; tokens,
// latency and outcome; with --identity the decrypted bodies, checked
// against the event's hashes and shown as readable text (a stream
// re-assembled into the answer); with --pubkey the proof that the event is
// in the signed log. What the logs read do not say is said to be unknown,
// never guessed.
func runShow(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("show", "show --request-id ID [--event-id ID] [--identity FILE] [--pubkey FILE] [--raw | --json] [--out-dir DIR] PATH...", stderr)
	requestID := fs.String("request-id", "", "the `id` of the request (X-Request-Id) to reconstruct")
	eventID := fs.String("event-id", "", "the event's own `id`: to choose among events with the same request id, or instead of it")
	identity := fs.String("identity", "", "age identity `file` that decrypts the captured bodies (from age-keygen); without it the bodies are not shown")
	var pubkeys stringList
	fs.Var(&pubkeys, "pubkey", "verifier key `file` of the log's checkpoints: also prove the event is in the signed log")
	outDir := fs.String("out-dir", "", "write the bodies to this `directory` instead of printing them: request.body and response.body (the exact bytes the event's hashes cover) and transcript.txt (readable text)")
	raw := fs.Bool("raw", false, "print the bodies' exact bytes (a stream as its frames) instead of readable text; written to a terminal they are escaped, so redirect to a file (or use --out-dir) for the bytes")
	asJSON := fs.Bool("json", false, "print the whole answer as one JSON object (for tools): the event, what was in effect, the checks, the bodies and the re-assembled answer")
	allowedSigners := fs.String("allowed-signers", "", "OpenSSH allowed-signers `file`: check the signatures of the change record in effect (as verify --allowed-signers does)")
	paths, err := parseFlagsAndArgs(fs, args)
	if err != nil {
		return err
	}
	switch {
	case (*requestID == "" && *eventID == "") || len(paths) == 0:
		return usageError{"show: give --request-id or --event-id, and at least one PATH"}
	case *raw && *asJSON:
		return usageError{"show: --raw and --json are two ways to print the bodies: give one"}
	case (*raw || *outDir != "") && *identity == "":
		return usageError{"show: --raw and --out-dir need --identity, the age identity that decrypts the captured bodies"}
	}
	var allowed *change.AllowedSigners
	if *allowedSigners != "" {
		if allowed, err = loadAllowedSigners(*allowedSigners); err != nil {
			return usageError{"show: " + err.Error()}
		}
	}
	ids, err := loadIdentities(*identity)
	if err != nil {
		return fmt.Errorf("show: %w", err)
	}
	keys := []string(pubkeys)
	verifiers, err := loadVerifiers(keys)
	if err != nil {
		return usageError{"show: " + err.Error()}
	}

	pr := auditlog.NewProver()
	sel := query.NewSelector(*requestID, *eventID)
	var found [][]byte
	var commit query.Commitment
	var ops opsEvents
	if len(keys) > 0 {
		// The proof needs every event of the log, in order per file.
		for i, path := range paths {
			err := eventsrc.Read(path, func(ev []byte) {
				commit.Read(ev)
				ops.add(i, ev)
				keep := sel.Match(ev)
				if keep {
					found = append(found, append([]byte(nil), ev...))
				}
				_ = pr.Add(ev, keep)
			})
			if err := warnDamaged(stderr, err); err != nil {
				return fmt.Errorf("show: %w", err)
			}
		}
	} else {
		// Only the event and its context are needed: read files side by
		// side, and keep the events in the order one reader would have
		// found them.
		type hit struct {
			src int
			ev  []byte
		}
		var mu sync.Mutex
		var hits []hit
		err := eventsrc.ReadConcurrently(paths, showReaders(), func(src int, ev []byte) {
			if bytes.Contains(ev, []byte(`"checkpoint"`)) { // Read's own test, before the lock
				mu.Lock()
				commit.Read(ev)
				mu.Unlock()
			}
			ops.add(src, ev)
			if sel.Match(ev) {
				ev = append([]byte(nil), ev...)
				mu.Lock()
				hits = append(hits, hit{src, ev})
				mu.Unlock()
			}
		})
		if err := warnDamaged(stderr, err); err != nil {
			return fmt.Errorf("show: %w", err)
		}
		sort.SliceStable(hits, func(i, j int) bool { return hits[i].src < hits[j].src })
		for _, h := range hits {
			found = append(found, h.ev)
		}
	}
	if err := checkSelected("show", sel); err != nil {
		return err
	}
	var ev audit.Event
	if err := json.Unmarshal(found[0], &ev); err != nil {
		return fmt.Errorf("show: the event is not readable: %w", err)
	}
	rep := showReport{Event: found[0], InEffect: resolve(&ev, ops.sorted())}
	if a := rep.InEffect.Annotation; a != nil && allowed != nil {
		a.SignaturesChecked = true
		if _, err := change.CheckSigned(a.details, allowed, change.Policy{}, time.Time(a.at)); err != nil {
			a.SignatureProblem = err.Error()
		}
	}
	if ev.Log != nil {
		rep.NotCommitted = commit.Pending(ev.Log.Origin, ev.Log.Seq)
	}
	if len(keys) > 0 {
		proofs, err := pr.Prove()
		if err != nil {
			return fmt.Errorf("show: %w", err)
		}
		for _, proof := range proofs {
			cp, err := proof.Check(verifiers)
			if err != nil {
				return fmt.Errorf("show: inclusion: %w", err)
			}
			rep.InSignedLog = append(rep.InSignedLog, signedLogRef{LeafIndex: proof.LeafIndex, TreeSize: cp.Size, Origin: cp.Origin})
		}
	}

	// The bodies: a failure to open or check them is the command's error,
	// said after what was found (text) or instead of it (JSON).
	var req, resp []byte
	var bodyErr error
	switch {
	case ids == nil && ev.Payload == nil:
		rep.Notes = append(rep.Notes, "bodies: none captured (the sidecar ran without --capture-payloads)")
	case ids == nil:
		rep.Notes = append(rep.Notes, "bodies: captured, not shown: give --identity, the age identity that decrypts them")
	case ev.Payload == nil:
		bodyErr = errors.New("the event has no captured payload (the sidecar ran without --capture-payloads)")
	default:
		if req, resp, bodyErr = payload.Open(ev.Payload.Age, ids); bodyErr == nil {
			rep.Request, bodyErr = checkBody("the decrypted request", req, ev.Input, capturedBytes(ev.Payload, ev.Payload.InputBytes, ev.Input))
			if bodyErr == nil {
				rep.Response, bodyErr = checkBody("the decrypted response", resp, ev.Output, capturedBytes(ev.Payload, ev.Payload.OutputBytes, ev.Output))
			}
			if bodyErr != nil {
				bodyErr = fmt.Errorf("%w: the capture is not of this exchange", bodyErr)
			}
		}
	}
	if rep.Request != nil && rep.Response != nil {
		fillBodies(rep.Request, rep.Response, req, resp)
	}

	if *asJSON {
		if bodyErr != nil {
			return fmt.Errorf("show: %w", bodyErr)
		}
		b, err := json.Marshal(rep)
		if err != nil {
			return fmt.Errorf("show: %w", err)
		}
		_, err = stdout.Write(append(transcript.EscapeJSON(b), '\n'))
		return err
	}
	printShow(stdout, &ev, &rep)
	if bodyErr != nil {
		return fmt.Errorf("show: %w", bodyErr)
	}
	if rep.Request == nil {
		return nil
	}
	switch {
	case *outDir != "":
		if err := writeBodies(*outDir, req, resp, readableBodies(rep.Request, rep.Response, req, resp)); err != nil {
			return fmt.Errorf("show: %w", err)
		}
		fmt.Fprintf(stdout, "  bodies written to %s: request.body and response.body (exact bytes), %s (readable)\n", transcript.Line(*outDir), transcriptFile)
	case *raw:
		printRaw(stdout, req, resp)
	default:
		io.WriteString(stdout, readableBodies(rep.Request, rep.Response, req, resp))
	}
	return nil
}

// loadIdentities reads the age identities of an --identity file; none
// for no file.
func loadIdentities(name string) ([]age.Identity, error) {
	if name == "" {
		return nil, nil
	}
	f, err := os.Open(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	ids, err := payload.ParseIdentities(f)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return ids, nil
}

// showReaders is how many files show reads at once: one per core, each
// decompressing its own segment.
func showReaders() int { return min(runtime.GOMAXPROCS(0), 16) }

// showReport is what show found: the JSON object --json prints.
type showReport struct {
	// Event is the event, as the log holds it.
	Event    json.RawMessage `json:"event"`
	InEffect inEffect        `json:"in_effect"`
	// NotCommitted says why no checkpoint read commits to the event yet.
	NotCommitted string         `json:"not_committed,omitempty"`
	InSignedLog  []signedLogRef `json:"in_signed_log,omitempty"`
	Request      *bodyReport    `json:"request,omitempty"`
	Response     *bodyReport    `json:"response,omitempty"`
	Notes        []string       `json:"notes,omitempty"`
}

// signedLogRef is an inclusion proof checked with --pubkey.
type signedLogRef struct {
	LeafIndex int64  `json:"leaf_index"`
	TreeSize  int64  `json:"tree_size"`
	Origin    string `json:"origin"`
}

// bodyReport is one decrypted body: its check against the event, and its
// content in the first of these forms that fits: JSON (a valid JSON body,
// as is), text (UTF-8), base64.
type bodyReport struct {
	Bytes int    `json:"bytes"`
	Hash  string `json:"hash"`
	// Check is "matches" or, for a truncated capture, why it cannot be
	// checked.
	Check  string             `json:"check"`
	JSON   json.RawMessage    `json:"json,omitempty"`
	Text   *string            `json:"text,omitempty"`
	Base64 []byte             `json:"base64,omitempty"`
	Answer *transcript.Answer `json:"answer,omitempty"`
}

// checkBody checks a body against the event's hash of it; name says which
// body in an error. A capture cut at its limit cannot be checked: the hash
// covers the whole body. cut is how many bytes of the body a truncated
// capture holds (the payload's input_bytes or output_bytes), or -1 where
// it holds the whole body (capturedBytes): a cut body must be that long.
func checkBody(name string, body []byte, want audit.Body, cut int64) (*bodyReport, error) {
	r := &bodyReport{Bytes: len(body), Hash: want.Hash}
	if cut >= 0 {
		if int64(len(body)) != cut {
			return nil, fmt.Errorf("%s is %d bytes, and the event says %d of its %d bytes were captured (truncated)", name, len(body), cut, want.Bytes)
		}
		r.Check = fmt.Sprintf("%d of %d bytes captured (truncated); the hash covers all of them and cannot be checked", len(body), want.Bytes)
		return r, nil
	}
	alg, _, _ := strings.Cut(want.Hash, ":")
	a, err := hashing.ParseAlgorithm(alg)
	if err != nil {
		return nil, fmt.Errorf("%s hash %q: %w", name, want.Hash, err)
	}
	if got := hashing.Sum(a, body); got != want.Hash {
		return nil, fmt.Errorf("%s hashes to %s, the event says %s", name, got, transcript.Line(want.Hash))
	}
	r.Check = "matches"
	return r, nil
}

// capturedBytes is checkBody's cut for a body of p: the bytes captured
// where the capture is truncated and holds less than the body (want), else
// -1. A body captured whole in a truncated capture (the other was cut) is
// checked against its hash.
func capturedBytes(p *audit.Payload, captured int64, want audit.Body) int64 {
	if p == nil || !p.Truncated || captured >= want.Bytes {
		return -1
	}
	return captured
}

// fillBodies puts the bodies' content and the re-assembled answer in
// their reports.
func fillBodies(rq, rs *bodyReport, req, resp []byte) {
	for _, x := range []struct {
		r *bodyReport
		b []byte
	}{{rq, req}, {rs, resp}} {
		switch t := bytes.TrimSpace(x.b); {
		case len(t) > 0 && json.Valid(t) && utf8.Valid(t):
			x.r.JSON = t
		case utf8.Valid(x.b):
			s := string(x.b)
			x.r.Text = &s
		default:
			x.r.Base64 = x.b
		}
	}
	a := transcript.Read(resp)
	rs.Answer = &a
}

// transcriptFile is the readable text --out-dir and bundle write.
const transcriptFile = "transcript.txt"

// writeBodies writes the exact bodies and their readable text to dir. Each
// is a new 0600 file renamed into place: a file already there by that name
// is replaced, never written into (it would keep its mode, 0644 say), and
// a symlink is replaced, not followed.
func writeBodies(dir string, req, resp []byte, readable string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	for _, f := range []struct {
		name string
		b    []byte
	}{{"request.body", req}, {"response.body", resp}, {transcriptFile, []byte(readable)}} {
		if err := writeNewFile(filepath.Join(dir, f.name), f.b); err != nil {
			return err
		}
	}
	return nil
}

// writeNewFile writes b to a new file (0600, os.CreateTemp's mode) beside
// name and renames it to name.
func writeNewFile(name string, b []byte) error {
	f, err := os.CreateTemp(filepath.Dir(name), "."+filepath.Base(name)+".*")
	if err != nil {
		return err
	}
	_, err = f.Write(b)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(f.Name(), name)
	}
	if err != nil {
		os.Remove(f.Name())
	}
	return err
}

// printShow prints what show found, every value that came from a client,
// the model or the log escaped for the terminal.
func printShow(w io.Writer, ev *audit.Event, rep *showReport) {
	L := transcript.Line
	p := func(format string, args ...any) { fmt.Fprintf(w, format+"\n", args...) }
	p("request %s at %s", L(ev.RequestID), time.Time(ev.Time).UTC().Format(time.RFC3339Nano))
	if ev.Log != nil {
		p("  event %s, log %s, seq %d", L(ev.ID), L(ev.Log.Origin), ev.Log.Seq)
	} else {
		p("  event %s (no log member: not read from a sidecar's log)", L(ev.ID))
	}
	if rep.NotCommitted != "" {
		p("  NOT YET COMMITTED: %s, so nothing signed vouches for this event yet", rep.NotCommitted)
	}
	mode := "not streamed"
	if ev.Stream {
		mode = "streamed"
	}
	outcome := string(ev.Status.Outcome)
	for _, s := range []string{ev.Status.Error, ev.Status.UpstreamError} {
		if s != "" {
			outcome += ", " + s
		}
	}
	if ev.Status.AfterEnd != "" {
		outcome += ", after its end: " + ev.Status.AfterEnd
	}
	p("  %s %s, %s, status %d (%s)", L(ev.Method), L(ev.Path), mode, ev.Status.Code, L(outcome))
	if ev.APIKeyID != nil {
		p("  api_key_id %s", L(*ev.APIKeyID))
	} else {
		p("  api_key_id none (the request carried no API key)")
	}
	p("  sidecar %s, version %s", L(ev.Source.Host), L(ev.Source.Version))

	p(`model "%s"`, L(ev.Model.Name))
	if ev.Model.FromAnswer {
		p("  (the request named no model; this is the model vLLM's answer named)")
	}
	switch ev.Model.Checksum {
	case "":
		p("  weights checksum: unknown (the sidecar knew no weights for this name)")
	case "pending":
		p("  weights checksum: pending (the weights were still being hashed)")
	default:
		p("  weights checksum: %s", L(ev.Model.Checksum))
	}
	if ev.Model.BaseChecksum != "" {
		p("  base model checksum (LoRA adapter): %s", L(ev.Model.BaseChecksum))
	}
	eff := rep.InEffect
	if r := eff.Rollout; r != nil {
		line := fmt.Sprintf("  rollout in effect: %s at %s (event %s, log %s): weights %s", r.Type, r.Time, L(r.ID), L(r.Log), L(r.Checksum))
		if r.Before != "" {
			line += ", before them " + L(r.Before)
		}
		if r.Dir != "" {
			line += ", dir " + L(r.Dir)
		} else if r.Root != "" {
			line += ", root " + L(r.Root)
		}
		p("%s", line)
		if r.Differs {
			p("    NOTE: no event before the request recorded the weights it names; this newest one records others")
		}
	} else {
		p("  rollout in effect: none recorded in the logs read (no model_changed or model_loaded event for this model before the request)")
	}
	if a := eff.Annotation; a != nil {
		line := fmt.Sprintf("  change record in effect: %s of %s by %s", L(a.Type), L(a.Resource), L(a.Actor))
		if a.Approver != "" {
			line += ", approved by " + L(a.Approver)
		}
		if a.Ticket != "" {
			line += ", ticket " + L(a.Ticket)
		}
		if a.Mode != "" {
			line += ", " + L(a.Mode)
		}
		p("%s", line)
		p("    record %s, annotation event %s at %s", L(a.RecordID), L(a.ID), a.Time)
		switch {
		case !a.SignaturesChecked:
			p("    as recorded: its signatures are not checked without --allowed-signers")
		case a.SignatureProblem != "":
			p("    SIGNATURES DO NOT VERIFY with --allowed-signers: %s", L(a.SignatureProblem))
		default:
			p("    signatures checked with --allowed-signers: signed by whom it names")
		}
		if a.Outcome != "" {
			p("    outcome recorded before the request: %s", L(a.Outcome))
		}
	} else {
		p("  change record in effect: none recorded in the logs read (no signed annotation with this model as its resource before the request)")
	}

	if g := eff.GPU; g == nil {
		p("gpu: unknown (NVML not available to the sidecar: the event's gpu is null)")
	} else {
		p("gpu: %s", L(g.Digest))
		if id := g.Identity; id != nil {
			p("  driver %s, CUDA %s, %d GPU(s) (%s at %s, event %s)", L(id.DriverVersion), L(id.CUDADriverVersion), len(id.Devices), g.From.Type, g.From.Time, L(g.From.ID))
			for _, d := range id.Devices {
				line := fmt.Sprintf("    %d: %s %s", d.Index, L(d.Name), L(d.UUID))
				if d.Serial != "" {
					line += ", serial " + L(d.Serial)
				}
				if d.PCIBusID != "" {
					line += ", " + L(d.PCIBusID)
				}
				if d.MIGMode != "" {
					line += ", MIG " + L(d.MIGMode)
				}
				p("%s", line)
			}
		}
		if g.Note != "" {
			p("  NOTE: %s", g.Note)
		}
	}
	if v := eff.Version; v != nil {
		other := ""
		if v.OtherLog {
			other = ", an earlier log of this host: its own log recorded none before it"
		}
		p("vLLM version: %s (%s at %s, event %s, log %s%s)", L(v.Version), v.Type, v.Time, L(v.ID), L(v.Log), other)
	} else {
		p("vLLM version: unknown (no upstream_version event of this sidecar before the request in the logs read)")
	}

	tokens := func(n *int64) string {
		if n == nil {
			return "unknown"
		}
		return fmt.Sprint(*n)
	}
	line := fmt.Sprintf("tokens: in %s, out %s", tokens(ev.Input.Tokens), tokens(ev.Output.Tokens))
	if ev.Input.AudioSeconds != nil {
		line += fmt.Sprintf(", audio %g s", *ev.Input.AudioSeconds)
	}
	if ev.Output.FinishReason != "" {
		line += ", finish_reason " + L(ev.Output.FinishReason)
	} else {
		line += ", finish_reason none recorded"
	}
	p("%s", line)
	ttft := "n/a (not streamed)"
	if ev.Latency.TTFT != nil {
		ttft = fmt.Sprintf("%.2f ms", *ev.Latency.TTFT)
	}
	p("latency: total %.2f ms, ttft %s, upstream %.2f ms, overhead %.2f ms", ev.Latency.Total, ttft, ev.Latency.Upstream, ev.Latency.Overhead)

	p("bodies: request %d bytes %s, response %d bytes %s", ev.Input.Bytes, L(ev.Input.Hash), ev.Output.Bytes, L(ev.Output.Hash))
	for _, b := range []struct {
		name string
		r    *bodyReport
	}{{"request", rep.Request}, {"response", rep.Response}} {
		if b.r == nil {
			continue
		}
		if b.r.Check == "matches" {
			p("  %s: %d bytes, %s matches the event", b.name, b.r.Bytes, L(b.r.Hash))
		} else {
			p("  %s: %s", b.name, b.r.Check)
		}
	}
	for _, n := range rep.Notes {
		p("  %s", n)
	}
	for _, s := range rep.InSignedLog {
		p("  in the signed log: event %d of the %d that checkpoint %s commits to", s.LeafIndex, s.TreeSize, L(s.Origin))
	}
}

// readableBodies renders the bodies as text for a terminal: the request
// (JSON indented), the response's answer re-assembled, per choice, and a
// non-streamed response's JSON indented.
func readableBodies(rq, rs *bodyReport, req, resp []byte) string {
	var b strings.Builder
	if rq.JSON != nil {
		b.WriteString("--- request (JSON, indented) ---\n")
		b.WriteString(transcript.Printable(indentJSON(rq.JSON)))
	} else {
		b.WriteString("--- request (not JSON: as sent, control characters escaped) ---\n")
		b.WriteString(transcript.Printable(req))
	}
	b.WriteString("\n")
	a := rs.Answer
	if rs.JSON != nil {
		b.WriteString("--- response (JSON, indented) ---\n")
		b.WriteString(transcript.Printable(indentJSON(rs.JSON)))
		b.WriteString("\n")
	}
	switch {
	case a.API == "" && rs.JSON == nil:
		b.WriteString("--- response (not an answer show reads: as sent, control characters escaped) ---\n")
		b.WriteString(transcript.Printable(resp))
		b.WriteString("\n")
	case a.API == "":
	default:
		how := "not streamed"
		if a.Streamed {
			how = fmt.Sprintf("streamed, %d events re-assembled", a.Events)
		}
		fmt.Fprintf(&b, "--- answer (%s API, %s) ---\n", a.API, how)
		for _, c := range a.Choices {
			if len(a.Choices) > 1 {
				fmt.Fprintf(&b, "[choice %d]\n", c.Index)
			}
			if c.Reasoning != "" {
				fmt.Fprintf(&b, "reasoning:\n%s\n", transcript.Printable([]byte(c.Reasoning)))
				b.WriteString("text:\n")
			}
			b.WriteString(transcript.Printable([]byte(c.Text)))
			b.WriteString("\n")
			if c.Refusal != "" {
				fmt.Fprintf(&b, "refusal: %s\n", transcript.Printable([]byte(c.Refusal)))
			}
			for _, tc := range c.ToolCalls {
				fmt.Fprintf(&b, "tool call %d: %s(%s)", tc.Index, transcript.Line(tc.Name), transcript.Printable([]byte(tc.Arguments)))
				if tc.ID != "" {
					fmt.Fprintf(&b, " id %s", transcript.Line(tc.ID))
				}
				b.WriteString("\n")
			}
			if c.FinishReason != "" {
				fmt.Fprintf(&b, "finish: %s\n", transcript.Line(c.FinishReason))
			}
		}
	}
	for _, e := range a.Errors {
		fmt.Fprintf(&b, "error in the answer: %s\n", transcript.Line(e))
	}
	for _, n := range a.Notes {
		fmt.Fprintf(&b, "note: %s\n", transcript.Line(n))
	}
	b.WriteString("--- end ---\n")
	return b.String()
}

func indentJSON(b []byte) []byte {
	var out bytes.Buffer
	if json.Indent(&out, b, "", "  ") != nil {
		return b
	}
	return out.Bytes()
}

// printRaw prints the exact bodies; written to a terminal, escaped.
func printRaw(w io.Writer, req, resp []byte) {
	tty := isTerminal(w)
	body := func(b []byte) {
		if tty {
			io.WriteString(w, transcript.Printable(b))
		} else {
			w.Write(b)
		}
	}
	if tty {
		fmt.Fprintln(w, "(stdout is a terminal: control characters and bytes that are not UTF-8 are escaped; redirect to a file, or use --out-dir, for the exact bytes)")
	}
	fmt.Fprintln(w, "--- request body (exact bytes) ---")
	body(req)
	fmt.Fprintln(w, "\n--- response body (exact bytes) ---")
	body(resp)
	fmt.Fprintln(w, "\n--- end ---")
}
