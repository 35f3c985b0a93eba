package change

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/auditproxy/auditproxy/internal/jcs"
)

// Record is a change as its actor and approver sign it.
type Record struct {
	// ID is a random id that prepare gives the record, so that a record
	// submitted twice (a replay) shows as one record in two events.
	ID string `json:"id"`
	// Created is when the record was prepared (RFC 3339, UTC).
	Created string `json:"created"`
	// Type is the kind of change: model_rollout, gpu_tier_change,
	// scaling, config_change, incident_action, ...
	Type string `json:"type"`
	// Resource is what was changed: a cluster, deployment, model slug
	// or namespace (e.g. prod-cluster/vllm-llama-70b).
	Resource      string `json:"resource,omitempty"`
	Actor         string `json:"actor"`
	Approver      string `json:"approver,omitempty"`
	Ticket        string `json:"ticket,omitempty"`
	Justification string `json:"justification"`
	// Mode is "planned" or "emergency"; empty when not said.
	Mode string `json:"mode,omitempty"`
	// Finding is the finding or alert that triggered the change.
	Finding string `json:"finding,omitempty"`
	// Before and After are the resource's state before and after the
	// change, as JSON objects (at most MaxStateBytes each).
	Before json.RawMessage `json:"before,omitempty"`
	After  json.RawMessage `json:"after,omitempty"`
	// Outcome, with Follows (the event id of the annotation it follows),
	// says how a change recorded before went: applied, failed or
	// rolled_back.
	Outcome string `json:"outcome,omitempty"`
	Follows string `json:"follows,omitempty"`
}

// Limits on a record.
const (
	MaxTextBytes  = 4096      // each text field
	MaxStateBytes = 16 << 10  // Before and After, each, in canonical form
	MaxRecordSize = 128 << 10 // the whole record as submitted
)

// Modes and outcomes a record may name.
var (
	ModeValues    = []string{"planned", "emergency"}
	OutcomeValues = []string{"applied", "failed", "rolled_back"}
)

// Validate says what is missing, too long or not one of the values
// allowed.
func (r *Record) Validate() error {
	for _, f := range []struct{ name, value string }{{"id", r.ID}, {"created", r.Created}, {"type", r.Type}, {"actor", r.Actor}, {"justification", r.Justification}} {
		if strings.TrimSpace(f.value) == "" {
			return fmt.Errorf("change record: %s is required", f.name)
		}
	}
	for _, f := range []struct{ name, value string }{{"id", r.ID}, {"created", r.Created}, {"type", r.Type}, {"resource", r.Resource},
		{"actor", r.Actor}, {"approver", r.Approver}, {"ticket", r.Ticket}, {"justification", r.Justification},
		{"mode", r.Mode}, {"finding", r.Finding}, {"outcome", r.Outcome}, {"follows", r.Follows}} {
		switch {
		case len(f.value) > MaxTextBytes:
			return fmt.Errorf("change record: %s is longer than %d bytes", f.name, MaxTextBytes)
		case !utf8.ValidString(f.value):
			return fmt.Errorf("change record: %s is not UTF-8", f.name)
		}
	}
	if _, err := time.Parse(time.RFC3339, r.Created); err != nil {
		return fmt.Errorf("change record: created %q is not an RFC 3339 time", r.Created)
	}
	if r.Mode != "" && !oneOf(r.Mode, ModeValues) {
		return fmt.Errorf("change record: mode %q: want %s", r.Mode, strings.Join(ModeValues, " or "))
	}
	switch {
	case r.Outcome != "" && !oneOf(r.Outcome, OutcomeValues):
		return fmt.Errorf("change record: outcome %q: want %s", r.Outcome, strings.Join(OutcomeValues, ", "))
	case r.Outcome != "" && r.Follows == "":
		return errors.New("change record: an outcome needs follows, the event id of the change it follows")
	case r.Follows != "" && r.Outcome == "":
		return errors.New("change record: follows without an outcome")
	}
	for _, s := range []struct {
		name  string
		value json.RawMessage
	}{{"before", r.Before}, {"after", r.After}} {
		if len(s.value) == 0 {
			continue
		}
		if v := bytes.TrimSpace(s.value); len(v) == 0 || v[0] != '{' {
			return fmt.Errorf("change record: %s is not a JSON object", s.name)
		}
		c, err := jcs.Append(nil, nil, s.value)
		switch {
		case err != nil:
			return fmt.Errorf("change record: %s: %v", s.name, err)
		case len(c) > MaxStateBytes:
			return fmt.Errorf("change record: %s is %d bytes, more than %d", s.name, len(c), MaxStateBytes)
		}
	}
	return nil
}

func oneOf(s string, list []string) bool {
	for _, x := range list {
		if s == x {
			return true
		}
	}
	return false
}

// Canonical returns the bytes that are signed: the record's RFC 8785
// canonical JSON.
func (r *Record) Canonical() ([]byte, error) {
	b, err := json.Marshal(r)
	if err != nil {
		return nil, err
	}
	return jcs.Append(nil, nil, b)
}

// ParseRecord reads a record as submitted or as an event holds it: one JSON
// object, no member it does not know, no member twice, valid. It returns
// the record and its canonical form, the bytes its signatures sign.
func ParseRecord(b []byte) (*Record, []byte, error) {
	if len(b) > MaxRecordSize {
		return nil, nil, fmt.Errorf("change record: %d bytes, more than %d", len(b), MaxRecordSize)
	}
	// The canonical form first: it refuses a member given twice, which a
	// decoder would take the last of, and what it accepts is what is
	// signed.
	canon, err := jcs.Append(nil, nil, bytes.TrimSpace(b))
	if err != nil {
		return nil, nil, fmt.Errorf("change record: %v", err)
	}
	var r Record
	dec := json.NewDecoder(bytes.NewReader(canon))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&r); err != nil {
		return nil, nil, fmt.Errorf("change record: %v", err)
	}
	if err := r.Validate(); err != nil {
		return nil, nil, err
	}
	// Members given as null or "" are not in the record's own form:
	// signing the submitted form and checking the record's would differ.
	own, err := r.Canonical()
	if err != nil {
		return nil, nil, err
	}
	if !bytes.Equal(own, canon) {
		return nil, nil, errors.New("change record: it has members that are empty or null, or states not in canonical form; write it with auditproxy annotate prepare")
	}
	return &r, canon, nil
}
