package change

import (
	"bytes"
	"encoding/json"
	"fmt"

	"github.com/auditproxy/auditproxy/audit"
)

// An Auditor checks the annotation events of a log again, offline: each
// signed change record against the allowed signers and the policy at the
// event's time, as the sidecar did when it took it.
type Auditor struct {
	Allowed *AllowedSigners
	Policy  Policy

	report  AuditReport
	records map[string]string // record id -> the id of the event that first held it
	events  map[string]bool   // event ids seen: shipping repeats events
}

// AuditReport is what an Auditor found.
type AuditReport struct {
	// Signed counts the signed change records whose signatures checked;
	// Unsigned the annotations only the admin token vouches for.
	Signed   int      `json:"signed"`
	Unsigned int      `json:"unsigned"`
	Problems []string `json:"problems"`
}

// Add reads one event in canonical form (RFC 8785, as auditlog.Verifier's
// Observe shows it, where "annotation" has one spelling); events other
// than annotations are skipped. An annotation that cannot be read as one
// is a problem, not skipped: a record hidden so would escape the check.
func (a *Auditor) Add(canon []byte) {
	if !bytes.Contains(canon, []byte(`"`+audit.TypeAnnotation+`"`)) {
		return
	}
	var typ struct {
		Type string `json:"type"`
	}
	if json.Unmarshal(canon, &typ) != nil || typ.Type != audit.TypeAnnotation {
		return
	}
	var ev struct {
		ID      string          `json:"id"`
		Time    string          `json:"time"`
		Details json.RawMessage `json:"details"`
	}
	if err := json.Unmarshal(canon, &ev); err != nil {
		a.problem("an annotation event that cannot be read as one (%v): %.120s", err, canon)
		return
	}
	if a.events == nil {
		a.events, a.records = map[string]bool{}, map[string]string{}
	}
	if a.events[ev.ID] {
		return
	}
	a.events[ev.ID] = true
	var probe map[string]json.RawMessage
	if err := json.Unmarshal(ev.Details, &probe); err != nil {
		a.problem("annotation %s: its details are not a JSON object (%v)", ev.ID, err)
		return
	}
	if _, signed := probe["record"]; !signed {
		a.report.Unsigned++
		return
	}
	at, err := audit.ParseTime([]byte(ev.Time))
	if err != nil {
		a.problem("annotation %s: its time %q is not an RFC 3339 time", ev.ID, ev.Time)
		return
	}
	r, err := CheckSigned(ev.Details, a.Allowed, a.Policy, at)
	if err != nil {
		a.problem("annotation %s: %v", ev.ID, err)
		return
	}
	if first, seen := a.records[r.ID]; seen {
		a.problem("change record %s is in annotations %s and %s: a signed record submitted twice (replayed)", r.ID, first, ev.ID)
		return
	}
	a.records[r.ID] = ev.ID
	a.report.Signed++
}

func (a *Auditor) problem(format string, args ...any) {
	if len(a.report.Problems) < 50 {
		a.report.Problems = append(a.report.Problems, fmt.Sprintf(format, args...))
	}
}

// Report returns what was found.
func (a *Auditor) Report() AuditReport { return a.report }
