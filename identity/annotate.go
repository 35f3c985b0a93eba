package identity

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/auditproxy/auditproxy/audit"
	"github.com/auditproxy/auditproxy/internal/fsutil"
)

// Annotation is what an operator records: what kind of change, who made
// it, who approved it, under which ticket, and why.
type Annotation struct {
	Type          string `json:"type"`
	Actor         string `json:"actor"`
	Approver      string `json:"approver,omitempty"`
	Ticket        string `json:"ticket,omitempty"`
	Justification string `json:"justification"`
}

// Validate says what is missing or too long.
func (a Annotation) Validate() error {
	for _, f := range []struct{ name, value string }{{"type", a.Type}, {"actor", a.Actor}, {"justification", a.Justification}} {
		if strings.TrimSpace(f.value) == "" {
			return fmt.Errorf("annotation: %s is required", f.name)
		}
	}
	for _, f := range []struct{ name, value string }{{"type", a.Type}, {"actor", a.Actor}, {"approver", a.Approver}, {"ticket", a.Ticket}, {"justification", a.Justification}} {
		if len(f.value) > 4096 {
			return fmt.Errorf("annotation: %s is longer than 4096 bytes", f.name)
		}
	}
	return nil
}

// AnnotationPath is where the admin API takes annotations.
const AnnotationPath = "/v1/annotations"

// AnnotationHandler records annotations POSTed as JSON with the bearer
// token, as annotation events in the audit log; it answers 201 with the
// event's id. A missing or wrong token is 401, a bad body 400 with what is
// wrong.
func AnnotationHandler(token string, record func([]byte) error, src audit.Source) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost {
			w.Header().Set("Allow", http.MethodPost)
			httpError(w, http.StatusMethodNotAllowed, "use POST")
			return
		}
		got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		if !ok || subtle.ConstantTimeCompare([]byte(got), []byte(token)) != 1 {
			httpError(w, http.StatusUnauthorized, "a valid bearer token is required (the admin token file)")
			return
		}
		var a Annotation
		dec := json.NewDecoder(io.LimitReader(r.Body, 64<<10))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&a); err != nil {
			httpError(w, http.StatusBadRequest, "annotation: "+err.Error())
			return
		}
		if err := a.Validate(); err != nil {
			httpError(w, http.StatusBadRequest, err.Error())
			return
		}
		ev, err := audit.NewOpsEvent(audit.TypeAnnotation, a, src, time.Now())
		if err == nil {
			err = record(ev)
		}
		if err != nil {
			httpError(w, http.StatusServiceUnavailable, "annotation not recorded: "+err.Error())
			return
		}
		var id struct{ ID string }
		json.Unmarshal(ev, &id)
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusCreated)
		json.NewEncoder(w).Encode(map[string]string{"id": id.ID})
	})
}

func httpError(w http.ResponseWriter, code int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(map[string]map[string]string{"error": {"message": msg}})
}

// LoadOrCreateToken reads the admin token from path, creating it (32
// random bytes, hex, mode 0600, fsynced: fsutil.CreateSecretFile) if
// absent.
func LoadOrCreateToken(path string) (string, error) {
	b, err := fsutil.LoadOrCreateSecretFile(path, func() ([]byte, error) {
		var raw [32]byte
		if _, err := rand.Read(raw[:]); err != nil {
			return nil, err
		}
		return []byte(hex.EncodeToString(raw[:]) + "\n"), nil
	})
	if err != nil {
		return "", fmt.Errorf("admin token: %w", err)
	}
	tok := strings.TrimSpace(string(b))
	if len(tok) < 32 {
		return "", fmt.Errorf("admin token %s: shorter than 32 characters", path)
	}
	return tok, nil
}
