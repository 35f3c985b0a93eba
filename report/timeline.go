// Package report owns the audit report: one self-contained HTML page an
// auditor attaches to the audit file, over a log and its checkpoint
// copies. It holds what verification found (completeness: the events the
// checkpoints commit to against those present; the chain and signature
// checks), the checkpoint timeline of each log with its gaps, the change
// timeline (the sidecar's starts and stops, model, GPU and vLLM version
// changes, operators' change records with their approvers, and their
// outcomes), and the traffic figures per day, API key id and model
// version, which are query.Stats' own: the page shows the same numbers
// `auditproxy query --stats --format json` prints for the same window.
//
// The page fetches nothing (a Content-Security-Policy of default-src
// 'none' and no external reference), runs no script, and prints.
// Everything taken from the log is escaped, and long values are cut
// (MaxText), so a hostile event cannot change the page or blow it up.
//
// Timeline reads the events that are not inferences; Write renders a
// Data.
package report

import (
	"cmp"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/valyala/fastjson"
	"golang.org/x/mod/sumdb/note"

	"github.com/auditproxy/auditproxy/audit"
	"github.com/auditproxy/auditproxy/auditlog"
	"github.com/auditproxy/auditproxy/query"
	"github.com/auditproxy/auditproxy/transcript"
)

// MaxText bounds every text taken from an event into the page, in bytes.
const MaxText = 300

// MaxChanges bounds the rows of the change timeline; the rest are counted.
const MaxChanges = 5000

// Timeline collects the checkpoints and the changes of the events given to
// Add, each event once (drop repeats first). The zero Timeline is empty
// and ready to use.
type Timeline struct {
	// Since and Until bound the changes kept (a zero time: open), as
	// query.Filter's do; checkpoints are kept whatever their time, for
	// the whole timeline of each log.
	Since, Until time.Time
	// Keys, when set, are the verifier keys: a checkpoint then counts in
	// the timeline only when its signed note opens with them, for its
	// origin and size, as verify checks it (verify skips the others, and
	// reports the gap they would fill).
	Keys note.Verifiers

	logs    map[string][]checkpoint
	changes []Change
	more    int // changes past MaxChanges
}

type checkpoint struct {
	time        time.Time
	size        int64
	interval    time.Duration
	final       bool
	outageSince time.Time
	outage      string
}

// Change is one row of the change timeline.
type Change struct {
	Time   time.Time
	Origin string
	Type   string
	// What says what changed, Who who made and approved it (change
	// records), Ticket its ticket; each cut to MaxText and made printable.
	What, Who, Ticket string
	// Problem marks a change an auditor must look at: a damaged segment,
	// an outage, a model whose identity could not be read.
	Problem bool
}

// Add reads one event, parsed; an inference event is not its business.
func (tl *Timeline) Add(v *fastjson.Value) {
	typ := string(v.GetStringBytes("type"))
	if typ == audit.TypeInference || typ == "" {
		return
	}
	t, err := query.EventTime(v)
	if err != nil {
		return // verify reports it
	}
	origin := text(v.GetStringBytes("log", "origin"))
	if typ == audit.TypeCheckpoint {
		c := v.Get("checkpoint")
		if c == nil {
			return
		}
		cp := checkpoint{time: t, size: c.GetInt64("size"), interval: time.Duration(c.GetInt64("interval_ms")) * time.Millisecond,
			final: c.GetBool("final")}
		if o := c.Get("outage"); o != nil {
			cp.outageSince, _ = audit.ParseTime(o.GetStringBytes("since"))
			cp.outage = text(o.GetStringBytes("reason"))
			if e := o.GetStringBytes("error"); len(e) > 0 {
				cp.outage += ": " + text(e)
			}
		}
		name := string(c.GetStringBytes("origin"))
		if name == "" {
			name = string(v.GetStringBytes("log", "origin"))
		}
		if tl.Keys != nil {
			ck, _, err := auditlog.OpenCheckpoint(c.GetStringBytes("note"), tl.Keys)
			if err != nil || ck.Origin != name || ck.Size != cp.size || v.Get("log") == nil {
				return
			}
		}
		if tl.logs == nil {
			tl.logs = map[string][]checkpoint{}
		}
		tl.logs[name] = append(tl.logs[name], cp)
		return
	}
	if !tl.Since.IsZero() && t.Before(tl.Since) || !tl.Until.IsZero() && !t.Before(tl.Until) {
		return
	}
	if len(tl.changes) >= MaxChanges {
		tl.more++
		return
	}
	ch := Change{Time: t, Origin: cut(origin), Type: cut(text([]byte(typ)))}
	d := v.Get("details")
	str := func(path ...string) string { return text(d.GetStringBytes(path...)) }
	switch typ {
	case audit.TypeLogStarted:
		ls := v.Get("log_started")
		ch.What = "log started: " + text(ls.GetStringBytes("reason"))
		if n := ls.GetInt64("committed_lost"); n > 0 {
			ch.What += fmt.Sprintf("; %d committed events of the previous log lost", n)
			ch.Problem = true
		}
	case audit.TypeProxyStarted:
		ch.What = fmt.Sprintf("sidecar %s started, upstream %s, hash %s, payload capture %s", str("version"), str("upstream"), str("hash"), map[bool]string{true: "on", false: "off"}[d.GetBool("capture_payloads")])
		if g := str("gpu"); g != "" {
			ch.What += ", GPU " + g
		} else {
			ch.What += ", GPU unknown (no NVML)"
		}
	case audit.TypeProxyStopped:
		ch.What = fmt.Sprintf("sidecar stopped (%s) after %d events", str("reason"), d.GetInt64("events_recorded"))
	case audit.TypeModelChanged:
		ch.What = fmt.Sprintf("model %s: weights %s → %s", str("model"), orUnknown(str("before")), orUnknown(str("after")))
	case audit.TypeUpstreamVersion:
		ch.What = fmt.Sprintf("vLLM version %s → %s", orUnknown(str("before")), orUnknown(str("after")))
	case audit.TypeGPUIdentity:
		ch.What = "GPU identity " + orUnknown(str("digest"))
	case audit.TypeGPUChanged:
		ch.What = fmt.Sprintf("GPU %s → %s", orUnknown(str("before", "digest")), orUnknown(str("after", "digest")))
		ch.Problem = true
	case audit.TypeModelLoaded, audit.TypeModelUnloaded:
		ch.What = fmt.Sprintf("LoRA adapter %s %s", orUnknown(str("model")), strings.TrimPrefix(typ, "model_"))
	case audit.TypeModelIdentityUnavailable:
		ch.What = "the models served could not be read: " + orUnknown(str("error"))
		ch.Problem = true
	case audit.TypeModelIdentityRestored:
		ch.What = "the models served can be read again"
	case audit.TypeSegmentDamaged:
		ch.What = fmt.Sprintf("spool segment %s damaged, saved to %s, %d records kept", str("segment"), str("saved_to"), d.GetInt64("records_kept"))
		ch.Problem = true
	case audit.TypeAnnotation:
		r := d.Get("record")
		rs := func(k string) string { return text(r.GetStringBytes(k)) }
		ch.What = fmt.Sprintf("%s of %s: %s", orUnknown(rs("type")), orUnknown(rs("resource")), rs("justification"))
		if r == nil { // an unsigned annotation has its text only
			ch.What = orUnknown(str("text"))
		}
		ch.Who = rs("actor")
		if a := rs("approver"); a != "" {
			ch.Who += ", approved by " + a
		}
		var signers []string
		for _, s := range d.GetArray("signatures") {
			signers = append(signers, text(s.GetStringBytes("principal"))+" ("+text(s.GetStringBytes("role"))+")")
		}
		if len(signers) > 0 {
			ch.Who += "; signed by " + strings.Join(signers, ", ")
		} else {
			ch.Who += "; unsigned"
		}
		ch.Ticket = rs("ticket")
	case audit.TypeChangeOutcome:
		before, after := d.Get("before"), d.Get("after")
		ch.What = fmt.Sprintf("outcome of the %s at %s on %s: error rate %s → %s, latency p50 %s → %s ms, requests %d → %d",
			str("change", "type"), str("change", "time"), orUnknown(str("change", "resource")),
			rate(before.Get("error_rate")), rate(after.Get("error_rate")),
			msText(before.Get("latency_ms", "p50")), msText(after.Get("latency_ms", "p50")),
			before.GetInt64("requests"), after.GetInt64("requests"))
		// A higher error rate, not more errors: more traffic alone is
		// not a problem.
		if b, a := before.Get("error_rate"), after.Get("error_rate"); b != nil && a != nil && b.Type() == fastjson.TypeNumber && a.Type() == fastjson.TypeNumber {
			ch.Problem = a.GetFloat64() > b.GetFloat64()
		}
	default:
		if d != nil {
			ch.What = text(d.MarshalTo(nil))
		}
	}
	ch.What, ch.Who, ch.Ticket = cut(ch.What), cut(ch.Who), cut(ch.Ticket)
	tl.changes = append(tl.changes, ch)
}

func orUnknown(s string) string {
	if s == "" {
		return "unknown"
	}
	return s
}

func rate(v *fastjson.Value) string {
	if v == nil || v.Type() != fastjson.TypeNumber {
		return "unknown"
	}
	return strconv.FormatFloat(v.GetFloat64()*100, 'f', 2, 64) + "%"
}

func msText(v *fastjson.Value) string {
	if v == nil || v.Type() != fastjson.TypeNumber {
		return "unknown"
	}
	return strconv.FormatFloat(v.GetFloat64(), 'f', 1, 64)
}

// text makes a value from an event fit for the page: valid UTF-8, its
// controls and bidirectional formatting escaped as a terminal gets them
// (transcript.Line). What goes on the page is cut after.
func text(b []byte) string { return transcript.Line(string(b)) }

// cut bounds a text to MaxText bytes, at a character boundary, and says
// how long it was.
func cut(s string) string {
	if len(s) <= MaxText {
		return s
	}
	i := MaxText
	for i > 0 && !utf8.RuneStart(s[i]) {
		i--
	}
	return s[:i] + fmt.Sprintf("… (%d bytes)", len(s))
}

// Changes returns the change timeline, oldest first, and how many more
// changes there were past MaxChanges.
func (tl *Timeline) Changes() ([]Change, int) {
	slices.SortStableFunc(tl.changes, func(a, b Change) int { return a.Time.Compare(b.Time) })
	return tl.changes, tl.more
}

// Coverage is the checkpoint timeline of one log: the spans its
// checkpoints cover at their cadence, and the gaps between.
type Coverage struct {
	Origin      string
	Checkpoints int
	First, Last time.Time
	Spans       []Span
	Gaps        []Gap
}

// Span is a time covered by checkpoints no further apart than
// auditlog.CheckpointOverdue of their interval.
type Span struct{ From, To time.Time }

// Gap is a time between two checkpoints of a log that its cadence does
// not cover, and why.
type Gap struct {
	From, To time.Time
	// Kind: "stopped" (the first checkpoint was the sidecar's final one:
	// it was not running), "outage" (the second says the log could not be
	// written since before the first was overdue), or "missing"
	// (checkpoints between them are missing: verify reports it).
	Kind   string
	Detail string
}

// Coverage returns the checkpoint timeline of each log, by origin.
func (tl *Timeline) Coverage() []Coverage {
	var out []Coverage
	for origin, cps := range tl.logs {
		slices.SortFunc(cps, func(a, b checkpoint) int { return cmp.Or(cmp.Compare(a.size, b.size), a.time.Compare(b.time)) })
		cps = slices.CompactFunc(cps, func(a, b checkpoint) bool { return a.size == b.size && a.time.Equal(b.time) })
		c := Coverage{Origin: cut(text([]byte(origin))), Checkpoints: len(cps), First: cps[0].time, Last: cps[len(cps)-1].time}
		span := Span{cps[0].time, cps[0].time}
		for i := 1; i < len(cps); i++ {
			prev, cp := cps[i-1], cps[i]
			gap := Gap{From: prev.time, To: cp.time}
			switch {
			case prev.final:
				gap.Kind, gap.Detail = "stopped", "the sidecar stopped (final checkpoint) and started again"
			case prev.interval <= 0 || cp.time.Sub(prev.time) <= auditlog.CheckpointOverdue(prev.interval):
				span.To = cp.time
				continue
			case !cp.outageSince.IsZero() && !cp.outageSince.After(prev.time.Add(auditlog.CheckpointOverdue(prev.interval))) && i < len(cps)-1:
				// As verify takes it: the claim is outside the signed
				// note, so only a later checkpoint vouches for it.
				gap.Kind, gap.Detail = "outage", "the log could not be written since "+cp.outageSince.UTC().Format(time.RFC3339)+": "+cp.outage
			default:
				gap.Kind, gap.Detail = "missing", fmt.Sprintf("%s apart at a cadence of %s: checkpoints between sizes %d and %d are missing", cp.time.Sub(prev.time).Round(time.Millisecond), prev.interval, prev.size, cp.size)
			}
			c.Spans = append(c.Spans, span)
			c.Gaps = append(c.Gaps, gap)
			span = Span{cp.time, cp.time}
		}
		c.Spans = append(c.Spans, span)
		out = append(out, c)
	}
	slices.SortFunc(out, func(a, b Coverage) int { return strings.Compare(a.Origin, b.Origin) })
	return out
}
