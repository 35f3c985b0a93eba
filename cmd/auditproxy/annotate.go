package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/auditproxy/auditproxy/audit"
	"github.com/auditproxy/auditproxy/change"
)

// runAnnotate records an operator's change in a running sidecar's log:
// `annotate prepare` writes a change record to sign, `annotate submit`
// sends it with its signatures, and `annotate` with flags sends an
// unsigned annotation.
func runAnnotate(args []string, stdout, stderr io.Writer) error {
	if len(args) > 0 {
		switch args[0] {
		case "prepare":
			return runAnnotatePrepare(args[1:], stdout, stderr)
		case "submit":
			return runAnnotateSubmit(args[1:], stdout, stderr)
		}
	}
	fs := newFlagSet("annotate", "annotate --type T --actor A --justification J [flags]  (unsigned; see annotate prepare and annotate submit for signed change records)", stderr)
	var a change.Annotation
	fs.StringVar(&a.Type, "type", "", "kind of `change`, e.g. model_rollout, gpu_tier_change, incident_action (required)")
	fs.StringVar(&a.Actor, "actor", "", "`who` made the change (required)")
	fs.StringVar(&a.Approver, "approver", "", "`who` approved it")
	fs.StringVar(&a.Ticket, "ticket", "", "change `ticket` id")
	fs.StringVar(&a.Justification, "justification", "", "`why` (required)")
	admin := fs.String("admin", "http://127.0.0.1:9090", "the sidecar's admin `URL` (--admin-listen)")
	tokenFile := fs.String("token-file", "./auditproxy-data/admin.token", "admin token `file` (DATA-DIR/admin.token of the sidecar)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if err := a.Validate(); err != nil {
		return usageError{err.Error()}
	}
	body, _ := json.Marshal(a)
	return postAnnotation(*admin, *tokenFile, body, stdout)
}

// runAnnotatePrepare writes a change record, in the canonical form its
// signers sign.
func runAnnotatePrepare(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("annotate prepare", "annotate prepare --type T --actor A --justification J [flags] > change.json", stderr)
	var r change.Record
	fs.StringVar(&r.Type, "type", "", "kind of `change`: model_rollout, gpu_tier_change, scaling, config_change, incident_action, ... (required)")
	fs.StringVar(&r.Resource, "resource", "", "what was changed: cluster, deployment, model slug or namespace (e.g. prod-cluster/vllm-llama-70b)")
	fs.StringVar(&r.Actor, "actor", "", "`who` made the change, as the allowed-signers file names them (required)")
	fs.StringVar(&r.Approver, "approver", "", "`who` approved it, as the allowed-signers file names them; they sign the record too")
	fs.StringVar(&r.Ticket, "ticket", "", "change `ticket` id")
	fs.StringVar(&r.Justification, "justification", "", "`why` (required)")
	fs.StringVar(&r.Mode, "mode", "", "planned or emergency")
	fs.StringVar(&r.Finding, "finding", "", "the `finding` or alert that triggered the change")
	before := fs.String("before", "", "the resource's state before: a JSON object, or @FILE")
	after := fs.String("after", "", "the resource's state after: a JSON object, or @FILE")
	fs.StringVar(&r.Outcome, "outcome", "", "how a change recorded before went: applied, failed or rolled_back (with --follows)")
	fs.StringVar(&r.Follows, "follows", "", "event `id` of the annotation whose outcome this records")
	out := fs.String("out", "", "write the record to `file` (default: standard output)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	for _, s := range []struct {
		flag, value string
		dst         *json.RawMessage
	}{{"--before", *before, &r.Before}, {"--after", *after, &r.After}} {
		if s.value == "" {
			continue
		}
		v := []byte(s.value)
		if name, ok := strings.CutPrefix(s.value, "@"); ok {
			b, err := os.ReadFile(name)
			if err != nil {
				return usageError{"annotate prepare: " + s.flag + ": " + err.Error()}
			}
			v = b
		}
		if !json.Valid(v) {
			return usageError{"annotate prepare: " + s.flag + ": not JSON"}
		}
		*s.dst = bytes.TrimSpace(v)
	}
	r.ID = audit.NewID()
	r.Created = time.Now().UTC().Format(time.RFC3339)
	if err := r.Validate(); err != nil {
		return usageError{"annotate prepare: " + err.Error()}
	}
	canon, err := r.Canonical()
	if err != nil {
		return fmt.Errorf("annotate prepare: %w", err)
	}
	file := *out
	if file == "" {
		_, err = stdout.Write(canon)
		file = "change.json"
	} else {
		err = os.WriteFile(file, canon, 0o644)
	}
	if err != nil {
		return fmt.Errorf("annotate prepare: %w", err)
	}
	signers := "the actor signs"
	if r.Approver != "" {
		signers = "the actor and the approver each sign"
	}
	fmt.Fprintf(stderr, "change record %s prepared; %s it as it is (no newline added, no edit):\n  ssh-keygen -Y sign -n %s -f ~/.ssh/id_ed25519 %s\nthen: auditproxy annotate submit --record %s --signature %s.sig [--signature approver.sig]\n",
		r.ID, signers, change.Namespace, file, file, file)
	return nil
}

// runAnnotateSubmit sends a signed change record to the sidecar.
func runAnnotateSubmit(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("annotate submit", "annotate submit --record FILE --signature FILE [--signature FILE] [flags]", stderr)
	record := fs.String("record", "", "the change record `file` from annotate prepare, as signed (required)")
	var sigs stringList
	fs.Var(&sigs, "signature", "signature `file` from ssh-keygen -Y sign -n "+change.Namespace+" (the actor's, then the approver's; repeat)")
	admin := fs.String("admin", "http://127.0.0.1:9090", "the sidecar's admin `URL` (--admin-listen)")
	tokenFile := fs.String("token-file", "./auditproxy-data/admin.token", "admin token `file` (DATA-DIR/admin.token of the sidecar)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *record == "" || len(sigs) == 0 {
		return usageError{"annotate submit: --record and at least one --signature are required"}
	}
	rec, err := os.ReadFile(*record)
	if err != nil {
		return usageError{"annotate submit: --record: " + err.Error()}
	}
	// What was signed must be what is sent: the file, as it is.
	if _, canon, err := change.ParseRecord(rec); err != nil {
		return usageError{"annotate submit: --record " + *record + ": " + err.Error()}
	} else if !bytes.Equal(canon, rec) {
		return usageError{"annotate submit: --record " + *record + " is not the record as annotate prepare wrote it (changed or reformatted since, a newline added?): its signatures cannot match what the sidecar checks"}
	}
	sub := change.Submission{Record: rec}
	for _, name := range sigs {
		b, err := os.ReadFile(name)
		if err != nil {
			return usageError{"annotate submit: --signature: " + err.Error()}
		}
		sub.Signatures = append(sub.Signatures, string(b))
	}
	body, _ := json.Marshal(sub)
	return postAnnotation(*admin, *tokenFile, body, stdout)
}

// postAnnotation POSTs an annotation body to the sidecar's admin API.
func postAnnotation(admin, tokenFile string, body []byte, stdout io.Writer) error {
	tok, err := os.ReadFile(tokenFile)
	if err != nil {
		return fmt.Errorf("annotate: %w", err)
	}
	req, err := http.NewRequest(http.MethodPost, strings.TrimSuffix(admin, "/")+change.AnnotationPath, bytes.NewReader(body))
	if err != nil {
		return usageError{"annotate: --admin: " + err.Error()}
	}
	req.Header.Set("Authorization", "Bearer "+strings.TrimSpace(string(tok)))
	req.Header.Set("Content-Type", "application/json")
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Do(req)
	if err != nil {
		return fmt.Errorf("annotate: %w", err)
	}
	defer resp.Body.Close()
	var answer struct {
		ID    string `json:"id"`
		Error struct{ Message string }
	}
	json.NewDecoder(io.LimitReader(resp.Body, 64<<10)).Decode(&answer)
	if resp.StatusCode != http.StatusCreated {
		return fmt.Errorf("annotate: %s: %s", resp.Status, answer.Error.Message)
	}
	fmt.Fprintf(stdout, "recorded annotation event %s\n", answer.ID)
	return nil
}
