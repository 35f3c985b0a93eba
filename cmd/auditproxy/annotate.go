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

	"github.com/auditproxy/auditproxy/identity"
)

// runAnnotate records an operator's change in a running sidecar's log.
func runAnnotate(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("annotate", "annotate --type T --actor A --justification J [flags]", stderr)
	var a identity.Annotation
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
	tok, err := os.ReadFile(*tokenFile)
	if err != nil {
		return fmt.Errorf("annotate: %w", err)
	}
	body, _ := json.Marshal(a)
	req, err := http.NewRequest(http.MethodPost, strings.TrimSuffix(*admin, "/")+identity.AnnotationPath, bytes.NewReader(body))
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
