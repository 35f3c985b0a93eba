package change

import (
	"bytes"
	"crypto/subtle"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/auditproxy/auditproxy/audit"
)

// Annotation is an unsigned annotation: what kind of change, who says they
// made it, who they say approved it, under which ticket, and why. Only the
// admin token vouches for it; Record, signed, is the change record an
// auditor can trust.
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
		if len(f.value) > MaxTextBytes {
			return fmt.Errorf("annotation: %s is longer than %d bytes", f.name, MaxTextBytes)
		}
	}
	return nil
}

// Submission is the body of a signed annotation: the record and the
// armored SSH signatures on its canonical form.
type Submission struct {
	Record     json.RawMessage `json:"record"`
	Signatures []string        `json:"signatures"`
}

// AnnotationPath is where the admin API takes annotations.
const AnnotationPath = "/v1/annotations"

// HandlerOptions configure Handler.
type HandlerOptions struct {
	// Token is the admin token, required as a bearer token.
	Token string
	// Record writes an event to the audit log.
	Record func(event []byte) error
	Source audit.Source
	// Allowed are the allowed signers; nil: signed records are refused.
	Allowed *AllowedSigners
	Policy  Policy
	// RequireSigned refuses unsigned annotations.
	RequireSigned bool
	// Now is the clock (time.Now when nil).
	Now func() time.Time
}

// How far a record's created time may be from the sidecar's clock: a
// record is submitted soon after it is signed, and one kept back for long
// (to be replayed) is refused.
const (
	maxRecordAge  = 7 * 24 * time.Hour
	maxClockAhead = 5 * time.Minute
)

// Handler records annotations POSTed as JSON with the bearer token, as
// annotation events in the audit log, and answers 201 with the event's id.
// The body is a Submission (a signed change record, checked with Check) or
// an unsigned Annotation (refused with RequireSigned). A missing or wrong
// token is 401; a body that is not one of the two, or a record that is not
// valid, 400; signatures that do not satisfy the allowed signers and the
// policy, 403; an event the log cannot take, 503. Errors are OpenAI-style
// JSON, {"error":{"message":…}}.
//
// A record already recorded (the same id) is refused with 409: a replay of
// a signed record would count as a second change. The ids are kept while a
// record can be submitted (maxRecordAge), in memory: across a restart,
// verify finds replays.
func Handler(o HandlerOptions) http.Handler {
	if o.Now == nil {
		o.Now = time.Now
	}
	var mu sync.Mutex
	seen := map[string]seenRecord{}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost {
			w.Header().Set("Allow", http.MethodPost)
			httpError(w, http.StatusMethodNotAllowed, "use POST")
			return
		}
		got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		if !ok || subtle.ConstantTimeCompare([]byte(got), []byte(o.Token)) != 1 {
			httpError(w, http.StatusUnauthorized, "a valid bearer token is required (the admin token file)")
			return
		}
		body, err := io.ReadAll(io.LimitReader(r.Body, MaxRecordSize+64<<10+1))
		switch {
		case err != nil:
			httpError(w, http.StatusBadRequest, "annotation: "+err.Error())
			return
		case len(body) > MaxRecordSize+64<<10:
			httpError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("annotation: the body is larger than %d bytes", MaxRecordSize+64<<10))
			return
		}
		var probe map[string]json.RawMessage
		if err := json.Unmarshal(body, &probe); err != nil {
			httpError(w, http.StatusBadRequest, "annotation: not a JSON object: "+err.Error())
			return
		}
		var details any
		now := o.Now()
		var recordID string
		if _, signed := probe["record"]; signed {
			s, code, err := o.checkSubmission(body, now)
			if err != nil {
				httpError(w, code, err.Error())
				return
			}
			details = s
			var r Record
			json.Unmarshal(s.Record, &r)
			recordID = r.ID
			mu.Lock()
			for id, sr := range seen {
				if now.Sub(sr.created) > maxRecordAge {
					delete(seen, id)
				}
			}
			if sr, dup := seen[recordID]; dup {
				mu.Unlock()
				httpError(w, http.StatusConflict, fmt.Sprintf("change record %s was recorded already (annotation %s): a signed record counts once", recordID, sr.event))
				return
			}
			created, _ := time.Parse(time.RFC3339, r.Created)
			seen[recordID] = seenRecord{created: created, event: "being recorded"}
			mu.Unlock()
		} else {
			if o.RequireSigned {
				httpError(w, http.StatusForbidden, "this sidecar takes only signed change records (--require-signed-annotations): write one with auditproxy annotate prepare, sign it with ssh-keygen -Y sign -n "+Namespace+", submit it with auditproxy annotate submit")
				return
			}
			var a Annotation
			dec := json.NewDecoder(bytes.NewReader(body))
			dec.DisallowUnknownFields()
			if err := dec.Decode(&a); err != nil {
				httpError(w, http.StatusBadRequest, "annotation: "+err.Error())
				return
			}
			if err := a.Validate(); err != nil {
				httpError(w, http.StatusBadRequest, err.Error())
				return
			}
			details = a
		}
		ev, err := audit.NewOpsEvent(audit.TypeAnnotation, details, o.Source, now)
		if err == nil {
			err = o.Record(ev)
		}
		var id struct{ ID string }
		json.Unmarshal(ev, &id)
		if recordID != "" {
			mu.Lock()
			if err != nil {
				delete(seen, recordID) // not recorded: it may be submitted again
			} else {
				seen[recordID] = seenRecord{created: seen[recordID].created, event: id.ID}
			}
			mu.Unlock()
		}
		if err != nil {
			httpError(w, http.StatusServiceUnavailable, "annotation not recorded: "+err.Error())
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusCreated)
		json.NewEncoder(w).Encode(map[string]string{"id": id.ID})
	})
}

// seenRecord is a record the handler recorded: when it was prepared, and
// the id of its annotation event.
type seenRecord struct {
	created time.Time
	event   string
}

// checkSubmission reads and checks a signed submission; the int is the
// HTTP status of its error.
func (o HandlerOptions) checkSubmission(body []byte, now time.Time) (*Signed, int, error) {
	var sub Submission
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&sub); err != nil {
		return nil, http.StatusBadRequest, fmt.Errorf("signed annotation: %v (want {\"record\":{…},\"signatures\":[\"-----BEGIN SSH SIGNATURE-----…\"]})", err)
	}
	rec, canon, err := ParseRecord(sub.Record)
	if err != nil {
		return nil, http.StatusBadRequest, err
	}
	created, _ := time.Parse(time.RFC3339, rec.Created)
	switch {
	case created.After(now.Add(maxClockAhead)):
		return nil, http.StatusBadRequest, fmt.Errorf("change record: created %s is ahead of this sidecar's clock (%s)", rec.Created, now.UTC().Format(time.RFC3339))
	case now.Sub(created) > maxRecordAge:
		return nil, http.StatusBadRequest, fmt.Errorf("change record: created %s, more than %s ago: prepare and sign it again", rec.Created, maxRecordAge)
	case len(sub.Signatures) == 0:
		return nil, http.StatusBadRequest, fmt.Errorf("signed annotation: no signature (sign the record with ssh-keygen -Y sign -n %s)", Namespace)
	case len(sub.Signatures) > 8:
		return nil, http.StatusBadRequest, fmt.Errorf("signed annotation: %d signatures, more than 8", len(sub.Signatures))
	}
	s, err := Check(rec, canon, sub.Signatures, o.Allowed, o.Policy, now)
	if err != nil {
		return nil, http.StatusForbidden, fmt.Errorf("change record %s not accepted: %v", rec.ID, err)
	}
	return s, 0, nil
}

func httpError(w http.ResponseWriter, code int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(map[string]map[string]string{"error": {"message": msg}})
}
