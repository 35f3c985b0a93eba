package main

import (
	"bytes"
	"encoding/json"
	"sort"
	"sync"
	"time"

	"github.com/auditproxy/auditproxy/audit"
	"github.com/auditproxy/auditproxy/change"
	"github.com/auditproxy/auditproxy/gpu"
)

// opsEvent is an operational event show keeps to say what was in effect
// when an inference ran: the weights of its model, a change record about
// the model, the GPUs, the vLLM version.
type opsEvent struct {
	Type    string          `json:"type"`
	ID      string          `json:"id"`
	Time    audit.Timestamp `json:"time"`
	Source  audit.Source    `json:"source"`
	Log     *audit.LogRef   `json:"log"`
	Details json.RawMessage `json:"details"`
	src, n  int             // read order: file, then place in it
}

func (o *opsEvent) origin() string {
	if o.Log == nil {
		return ""
	}
	return o.Log.Origin
}

// contextTypes are the event types show reads for context.
var contextTypes = map[string]bool{
	audit.TypeModelChanged: true, audit.TypeModelLoaded: true, audit.TypeUpstreamVersion: true,
	audit.TypeGPUIdentity: true, audit.TypeGPUChanged: true, audit.TypeAnnotation: true,
}

// opsEvents collects the context events of the logs read; safe for
// concurrent use.
type opsEvents struct {
	mu   sync.Mutex
	evs  []*opsEvent
	seen int
}

// add keeps ev (read from file src) when it is a context event. Inference
// events, the bulk of a log, have no "details" member, so the test below
// skips them without a parse (a model name holding the word is parsed and
// then skipped).
func (c *opsEvents) add(src int, ev []byte) {
	if !bytes.Contains(ev, []byte(`"details"`)) {
		return
	}
	var o opsEvent
	if json.Unmarshal(ev, &o) != nil || !contextTypes[o.Type] {
		return
	}
	c.mu.Lock()
	c.seen++
	o.src, o.n = src, c.seen
	c.evs = append(c.evs, &o)
	c.mu.Unlock()
}

// sorted returns the events oldest first (ties in read order).
func (c *opsEvents) sorted() []*opsEvent {
	evs := append([]*opsEvent(nil), c.evs...)
	sort.SliceStable(evs, func(i, j int) bool {
		ti, tj := time.Time(evs[i].Time), time.Time(evs[j].Time)
		if !ti.Equal(tj) {
			return ti.Before(tj)
		}
		if evs[i].src != evs[j].src {
			return evs[i].src < evs[j].src
		}
		return evs[i].n < evs[j].n
	})
	return evs
}

// eventRef names the event a fact was read from.
type eventRef struct {
	Type string `json:"type"`
	ID   string `json:"id"`
	Time string `json:"time"`
	Log  string `json:"log,omitempty"`
}

func refOf(o *opsEvent) eventRef {
	return eventRef{Type: o.Type, ID: o.ID, Time: time.Time(o.Time).UTC().Format(time.RFC3339Nano), Log: o.origin()}
}

// rolloutInEffect is the newest model_changed (or model_loaded) event of the
// model before the inference.
type rolloutInEffect struct {
	eventRef
	Checksum     string `json:"checksum,omitempty"`
	Before       string `json:"before,omitempty"`
	BaseChecksum string `json:"base_checksum,omitempty"`
	Dir          string `json:"dir,omitempty"`
	Root         string `json:"root,omitempty"`
	// Differs says its checksum is not the event's: no event recorded the
	// weights the event names before it.
	Differs bool `json:"checksum_differs,omitempty"`
}

// annotationInEffect is the newest signed change record about the model
// before the inference.
type annotationInEffect struct {
	eventRef
	RecordID string `json:"record_id"`
	Type     string `json:"change_type"`
	Resource string `json:"resource"`
	Ticket   string `json:"ticket,omitempty"`
	Actor    string `json:"actor"`
	Approver string `json:"approver,omitempty"`
	Mode     string `json:"mode,omitempty"`
	// Outcome is the outcome a later record gave it (applied, failed,
	// rolled_back) before the inference; "" when none was recorded.
	Outcome string `json:"outcome,omitempty"`
	// SignaturesChecked says the record's signatures were checked with
	// show --allowed-signers (as verify --allowed-signers does); without
	// it the record is as the log has it. SignatureProblem says why they
	// do not verify.
	SignaturesChecked bool   `json:"signatures_checked"`
	SignatureProblem  string `json:"signature_problem,omitempty"`

	details json.RawMessage // the annotation's, to check its signatures
	at      audit.Timestamp
}

// gpuInEffect is what the event's gpu digest stands for.
type gpuInEffect struct {
	Digest   string        `json:"digest"`
	Identity *gpu.Identity `json:"identity,omitempty"`
	From     *eventRef     `json:"from,omitempty"`
	// Note says why the identity is unknown, or what is odd about it.
	Note string `json:"note,omitempty"`
}

// versionInEffect is the vLLM version in effect.
type versionInEffect struct {
	Version string `json:"version"`
	eventRef
	// OtherLog says it was read from another log of the same host (an
	// earlier run): the event's own log recorded none before it.
	OtherLog bool `json:"other_log,omitempty"`
}

// inEffect is what the context events say was in effect for ev.
type inEffect struct {
	Rollout    *rolloutInEffect    `json:"rollout"`
	Annotation *annotationInEffect `json:"annotation"`
	GPU        *gpuInEffect        `json:"gpu"`
	Version    *versionInEffect    `json:"vllm_version"`
}

// resolve finds, among evs (oldest first), what was in effect when ev
// ran. Nothing is made up: what no event says stays nil.
func resolve(ev *audit.Event, evs []*opsEvent) inEffect {
	at := time.Time(ev.Time)
	origin := ""
	if ev.Log != nil {
		origin = ev.Log.Origin
	}
	var r inEffect
	annotations := map[string]*annotationInEffect{} // by annotation event id
	for _, o := range evs {
		if time.Time(o.Time).After(at) {
			break
		}
		if o.Type != audit.TypeUpstreamVersion && o.origin() != origin && o.Source.Host != ev.Source.Host {
			// Another sidecar's rollout or change record is about
			// another deployment, whatever model it names.
			continue
		}
		switch o.Type {
		case audit.TypeModelChanged, audit.TypeModelLoaded:
			var d struct {
				Model, Dir, Root, After, Before, Checksum string
				BaseChecksum                              string `json:"base_checksum"`
			}
			if json.Unmarshal(o.Details, &d) != nil || d.Model != ev.Model.Name || ev.Model.Name == "" {
				continue
			}
			sum := d.After
			if o.Type == audit.TypeModelLoaded {
				sum = d.Checksum
			}
			ro := &rolloutInEffect{eventRef: refOf(o), Checksum: sum, Before: d.Before, BaseChecksum: d.BaseChecksum, Dir: d.Dir, Root: d.Root}
			ro.Differs = ev.Model.Checksum != "" && ev.Model.Checksum != "pending" && sum != ev.Model.Checksum
			// The newest whose weights are the event's; else the newest.
			if r.Rollout == nil || !ro.Differs || r.Rollout.Differs {
				r.Rollout = ro
			}
		case audit.TypeAnnotation:
			var d struct {
				Record json.RawMessage `json:"record"`
			}
			var rec change.Record
			if json.Unmarshal(o.Details, &d) != nil || len(d.Record) == 0 || json.Unmarshal(d.Record, &rec) != nil {
				continue // an unsigned annotation names no resource
			}
			if rec.Outcome != "" {
				if a := annotations[rec.Follows]; a != nil {
					a.Outcome = rec.Outcome
				}
				continue
			}
			if rec.Resource != ev.Model.Name || ev.Model.Name == "" {
				continue
			}
			a := &annotationInEffect{eventRef: refOf(o), RecordID: rec.ID, Type: rec.Type, Resource: rec.Resource,
				Ticket: rec.Ticket, Actor: rec.Actor, Approver: rec.Approver, Mode: rec.Mode, details: o.Details, at: o.Time}
			annotations[o.ID] = a
			r.Annotation = a
		case audit.TypeUpstreamVersion:
			var d struct{ After string }
			if json.Unmarshal(o.Details, &d) != nil || d.After == "" {
				continue
			}
			v := &versionInEffect{Version: d.After, eventRef: refOf(o)}
			switch {
			case o.origin() == origin:
				r.Version = v
			case o.Source.Host == ev.Source.Host && (r.Version == nil || r.Version.OtherLog):
				v.OtherLog = true
				r.Version = v
			}
		}
	}
	if ev.GPU != nil {
		r.GPU = resolveGPU(*ev.GPU, origin, at, evs)
	}
	return r
}

// resolveGPU finds the identity a GPU digest stands for: the newest
// gpu_identity or gpu_changed event of the event's log before it that
// records that digest, else any event of the logs read that does (the
// digest is the identity's SHA-256, so any record of it will do). The
// identity is hashed again, so a record edited to name other GPUs is
// caught.
func resolveGPU(digest, origin string, at time.Time, evs []*opsEvent) *gpuInEffect {
	g := &gpuInEffect{Digest: digest}
	best, bestRank := (*opsEvent)(nil), 0
	var bestID *gpu.Identity
	for _, o := range evs {
		var rec struct {
			Digest   string        `json:"digest"`
			Identity *gpu.Identity `json:"identity"`
		}
		switch o.Type {
		case audit.TypeGPUIdentity:
			if json.Unmarshal(o.Details, &rec) != nil {
				continue
			}
		case audit.TypeGPUChanged:
			var d struct {
				After json.RawMessage `json:"after"`
			}
			if json.Unmarshal(o.Details, &d) != nil || json.Unmarshal(d.After, &rec) != nil {
				continue
			}
		default:
			continue
		}
		if rec.Digest != digest || rec.Identity == nil {
			continue
		}
		rank := 1 // another log, or later
		if o.origin() == origin && !time.Time(o.Time).After(at) {
			rank = 2
		}
		if rank >= bestRank {
			best, bestRank, bestID = o, rank, rec.Identity
		}
	}
	if best == nil {
		g.Note = "no gpu_identity or gpu_changed event with this digest in the logs read"
		return g
	}
	ref := refOf(best)
	g.From, g.Identity = &ref, bestID
	if bestID.Digest() != digest {
		g.Note = "the identity recorded with this digest does not hash to it (" + bestID.Digest() + "): the record was altered"
	} else if bestRank == 1 {
		g.Note = "recorded in another log, or after the event, than the event's"
	}
	return g
}
