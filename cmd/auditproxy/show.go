package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/auditproxy/auditproxy/audit"
	"github.com/auditproxy/auditproxy/auditlog"
	"github.com/auditproxy/auditproxy/eventsrc"
	"github.com/auditproxy/auditproxy/hashing"
	"github.com/auditproxy/auditproxy/payload"
	"github.com/auditproxy/auditproxy/query"
)

// runShow reconstructs one request from the log: its event, its decrypted
// bodies checked against the event's hashes, and with --pubkey the proof
// that the event is in a signed log.
func runShow(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("show", "show --request-id ID [--event-id ID] --identity FILE [--pubkey FILE] [--out-dir DIR] PATH...", stderr)
	requestID := fs.String("request-id", "", "the `id` of the request (X-Request-Id) to reconstruct")
	eventID := fs.String("event-id", "", "the event's own `id`: to choose among events with the same request id, or instead of it")
	identity := fs.String("identity", "", "age identity `file` that decrypts the captured bodies (from age-keygen)")
	var pubkeys stringList
	fs.Var(&pubkeys, "pubkey", "verifier key `file` of the log's checkpoints: also prove the event is in the signed log")
	outDir := fs.String("out-dir", "", "write request.body and response.body to this `directory` instead of printing them")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if (*requestID == "" && *eventID == "") || *identity == "" || fs.NArg() == 0 {
		return usageError{"show: give --request-id or --event-id, --identity and at least one PATH"}
	}
	idFile, err := os.Open(*identity)
	if err != nil {
		return fmt.Errorf("show: %w", err)
	}
	ids, err := payload.ParseIdentities(idFile)
	idFile.Close()
	if err != nil {
		return fmt.Errorf("show: %s: %w", *identity, err)
	}
	keys := []string(pubkeys)
	verifiers, err := loadVerifiers(keys)
	if err != nil {
		return usageError{"show: " + err.Error()}
	}

	pr := auditlog.NewProver()
	sel := query.NewSelector(*requestID, *eventID)
	match := sel.Match
	var found [][]byte
	var commit query.Commitment
	if len(keys) > 0 {
		// The proof needs every event of the log, in order per file.
		for _, path := range fs.Args() {
			err := eventsrc.Read(path, func(ev []byte) {
				commit.Read(ev)
				keep := match(ev)
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
		// Only the event is needed: read files side by side, and keep the
		// events in the order one reader would have found them.
		type hit struct {
			src int
			ev  []byte
		}
		var mu sync.Mutex
		var hits []hit
		err := eventsrc.ReadConcurrently(fs.Args(), showReaders(), func(src int, ev []byte) {
			if bytes.Contains(ev, []byte(`"checkpoint"`)) { // Read's own test, before the lock
				mu.Lock()
				commit.Read(ev)
				mu.Unlock()
			}
			if match(ev) {
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
	fmt.Fprintf(stdout, "request %s at %s\n", ev.RequestID, time.Time(ev.Time).UTC().Format(time.RFC3339Nano))
	fmt.Fprintf(stdout, "  %s %s, model %q, status %d (%s)\n", ev.Method, ev.Path, ev.Model.Name, ev.Status.Code, ev.Status.Outcome)
	if ev.APIKeyID != nil {
		fmt.Fprintf(stdout, "  api_key_id %s\n", *ev.APIKeyID)
	}
	if ev.Log != nil {
		fmt.Fprintf(stdout, "  log %s, seq %d\n", ev.Log.Origin, ev.Log.Seq)
		if why := commit.Pending(ev.Log.Origin, ev.Log.Seq); why != "" {
			fmt.Fprintf(stdout, "  NOT YET COMMITTED: %s, so nothing signed vouches for this event yet\n", why)
		}
	}
	if ev.Payload == nil {
		return fmt.Errorf("show: the event has no captured payload (the sidecar ran without --capture-payloads)")
	}
	req, resp, err := payload.Open(ev.Payload.Age, ids)
	if err != nil {
		return fmt.Errorf("show: %w", err)
	}
	check := func(name string, body []byte, want string, total int64) error {
		if ev.Payload.Truncated && int64(len(body)) < total {
			fmt.Fprintf(stdout, "  %s: %d of %d bytes captured (truncated); the hash covers all of them and cannot be checked\n", name, len(body), total)
			return nil
		}
		alg, _, _ := strings.Cut(want, ":")
		a, err := hashing.ParseAlgorithm(alg)
		if err != nil {
			return fmt.Errorf("%s hash %q: %w", name, want, err)
		}
		if got := hashing.Sum(a, body); got != want {
			return fmt.Errorf("%s: the decrypted bytes hash to %s, the event says %s", name, got, want)
		}
		fmt.Fprintf(stdout, "  %s: %d bytes, %s matches the event\n", name, len(body), want)
		return nil
	}
	if err := check("request", req, ev.Input.Hash, ev.Input.Bytes); err != nil {
		return fmt.Errorf("show: %w", err)
	}
	if err := check("response", resp, ev.Output.Hash, ev.Output.Bytes); err != nil {
		return fmt.Errorf("show: %w", err)
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
			fmt.Fprintf(stdout, "  in the signed log: event %d of the %d that checkpoint %s commits to\n", proof.LeafIndex, cp.Size, cp.Origin)
		}
	}
	if *outDir != "" {
		if err := os.MkdirAll(*outDir, 0o700); err != nil {
			return fmt.Errorf("show: %w", err)
		}
		for name, b := range map[string][]byte{"request.body": req, "response.body": resp} {
			if err := os.WriteFile(filepath.Join(*outDir, name), b, 0o600); err != nil {
				return fmt.Errorf("show: %w", err)
			}
		}
		fmt.Fprintf(stdout, "  bodies written to %s\n", *outDir)
		return nil
	}
	fmt.Fprintf(stdout, "--- request body ---\n%s\n--- response body ---\n%s\n", req, resp)
	return nil
}

// showReaders is how many files show reads at once: one per core, each
// decompressing its own segment.
func showReaders() int { return min(runtime.GOMAXPROCS(0), 16) }
