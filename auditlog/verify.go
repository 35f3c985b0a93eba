package auditlog

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"hash/maphash"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/auditproxy/auditproxy/audit"
	"github.com/auditproxy/auditproxy/internal/jcs"
	"github.com/valyala/fastjson"
	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
)

// A Verifier checks logs from their events alone, given in any order and
// possibly repeated (shipping is at least once): for each origin, that seq
// numbers have no gaps, that each prev is the leaf hash of the event before,
// that the leaves hash to the root each checkpoint signs, that checkpoints
// are signed by a known key and come at their cadence, and how much of what
// the newest checkpoint commits to is present.
type Verifier struct {
	// Keys verify checkpoint signatures. A checkpoint no key verifies is a
	// failure.
	Keys note.Verifiers
	// Until, if set, is the time the logs are expected to reach (when they
	// were exported, say): a log whose newest checkpoint is older than that
	// by more than its cadence lost its tail.
	Until time.Time
	// IgnoreMembers are top-level members an aggregator added to the
	// records it stored ("@timestamp", "tag", "date"; CheckIgnorable says
	// which names may be given): each is dropped from an event before it
	// is hashed, and the report counts the events that had it.
	IgnoreMembers []string
	// RequireCommitted makes events that no checkpoint commits to yet (the
	// tail after an origin's newest checkpoint) a failure. Off, they are
	// counted in the report (OriginReport.Uncommitted) and pass: a copy of
	// a running log always ends with up to a checkpoint interval of them.
	RequireCommitted bool
	// Observe, if set, is shown each event read, in its canonical form
	// (RFC 8785, without IgnoreMembers), for checks of what events say
	// beyond the log (change records): in that form a string has one
	// spelling, so an event cannot hide its type behind escapes. The
	// bytes are valid only during the call.
	Observe func(canon []byte)
	// Witnesses, if set, verify the cosignatures given to AddCosignature
	// (C2SP tlog-cosignature keys, cosignature/v1). Every witness named
	// (a key's name; several keys of one name are one witness rotating
	// keys) must then have cosigned a checkpoint of every log with the
	// root its events hash to: each witness given is one whose word the
	// auditor requires, as InclusionProof.Cosigners requires for a proof.
	Witnesses []note.Verifier

	p        fastjson.Parser
	stripped []byte  // an event without IgnoreMembers
	removed  []bool  // by IgnoreMembers, for the event being added
	ignored  []int64 // events that had each of IgnoreMembers

	cosigned       map[string][]cosigned // by origin
	cosignProblems map[string][]string   // by origin
	canon          []byte
	vals           []byte
	// reencoded says the last event added was not in canonical form: the
	// next is canonicalized without checking it first.
	reencoded  bool
	sha        hash.Hash
	sum        []byte
	hourText   [len("2006-01-02T15:")]byte
	hourNanos  int64 // unix nanos of hourText's hour; 0: none yet
	origins    map[string]*originLog
	originList []*originLog // by index
	ids        idTable
	seed       maphash.Seed
	unchained  int
	invalid    int
	firstBad   []string
}

// originLog is what a Verifier gathered about one origin.
type originLog struct {
	origin      string
	index       int32
	leaves      leafTable
	duplicates  int
	conflicts   []int64 // seqs claimed by two different events
	checkpoints []cpRec
	// prevs holds the prev link of an event added before the event it
	// links to; in a log read in order it stays empty.
	prevs map[int64]tlog.Hash
}

// A leafRec is kept for every event of a log, so it holds no prev link (a
// third more memory, each page of it a fault in a fresh process): an
// event's link is checked as it is added when the event before it is
// there, and kept in originLog.prevs otherwise.
type leafRec struct {
	hash    tlog.Hash
	time    int64  // unix nanos
	id      uint64 // maphash of the event id; 0 without one
	present bool
	noPrev  bool // prev was "" (seq 0, or a malformed event)
	started bool // a proxy_started event: the sidecar (re)started
	linked  bool // prev was compared with the event before's hash as it was added
	badLink bool // ... and differed
}

type cpRec struct {
	seq         int64
	rec         CheckpointRecord
	final       bool
	time        int64
	outageSince int64  // unix nanos; 0 unless the checkpoint reports an outage before it
	eventErr    string // the event's own fields disagree with its note
}

// NewVerifier returns a Verifier that checks signatures with keys.
func NewVerifier(keys note.Verifiers) *Verifier {
	return &Verifier{Keys: keys, origins: map[string]*originLog{}, seed: maphash.MakeSeed()}
}

// Add reads one event (a JSON object). An event that is not JSON, or whose
// "log" member is malformed, is counted as invalid; one without a "log"
// member as unchained. Both are failures in the report.
func (v *Verifier) Add(event []byte) {
	event = bytes.TrimSpace(event)
	if len(event) == 0 {
		return
	}
	if err := v.add(event); err != nil {
		v.invalid++
		if len(v.firstBad) < 5 {
			snippet := event
			if len(snippet) > 80 {
				snippet = snippet[:80]
			}
			v.firstBad = append(v.firstBad, fmt.Sprintf("%v: %s", err, snippet))
		}
	}
}

func (v *Verifier) add(event []byte) error {
	if len(v.IgnoreMembers) > 0 {
		event = v.withoutIgnored(event)
	}
	var err error
	var ends [len(verifiedMembers)]int
	var canon []byte
	canon, v.vals, err = jcs.AppendMembers(v.canon[:0], event, verifiedMembers[:], v.vals[:0], ends[:], !v.reencoded)
	if err != nil {
		return fmt.Errorf("not JSON (%v)", err)
	}
	v.reencoded = false
	if &canon[0] != &event[0] {
		v.canon = canon // keep the grown scratch
		v.reencoded = !bytes.Equal(canon, event)
	}
	leaf := v.leafHash(canon)
	if v.Observe != nil {
		v.Observe(canon)
	}
	f, ok := fieldsFromMembers(v.vals, ends)
	if !ok || f.typ == audit.TypeCheckpoint {
		// Escapes in the fields, or a checkpoint: read them with a parser.
		if f, err = v.parseEventFields(canon); err != nil {
			return err
		}
	}
	if !f.hasLog {
		v.unchained++
		return nil
	}
	if len(f.origin) == 0 || !f.hasSeq {
		return errors.New(`"log" lacks origin or seq`)
	}
	seq := f.seq
	if seq < 0 {
		return errors.New(`"log" seq is not a non-negative integer`)
	}
	var rec leafRec
	var prev tlog.Hash
	rec.present = true
	if len(f.prev) == 0 {
		rec.noPrev = true
	} else if len(f.prev) != 2*tlog.HashSize {
		return errors.New(`"log" prev is not a 64-digit hex hash`)
	} else if _, err := hex.Decode(prev[:], f.prev); err != nil {
		return errors.New(`"log" prev is not a 64-digit hex hash`)
	}
	id, typ, origin := f.id, f.typ, f.origin
	rec.time = v.eventTime(f.time)
	var cp *cpRec
	if typ == audit.TypeCheckpoint {
		if f.cp == nil {
			return errors.New(`checkpoint event without "checkpoint"`)
		}
		cp = f.cp
		cp.seq, cp.time = seq, rec.time
	}
	rec.hash = leaf
	rec.started = typ == audit.TypeProxyStarted

	o := v.origins[string(origin)] // no allocation for the lookup
	if o == nil {
		o = &originLog{origin: string(origin), index: int32(len(v.originList))}
		v.origins[o.origin] = o
		v.originList = append(v.originList, o)
	}
	if seq >= 1<<32 {
		return fmt.Errorf("seq %d is implausibly large", seq)
	}
	if old := o.leaves.at(seq); old != nil && old.present {
		if old.hash == leaf {
			o.duplicates++
			return nil
		}
		o.conflicts = append(o.conflicts, seq)
		return nil
	}
	if len(id) > 0 {
		rec.id = maphash.Bytes(v.seed, id)
		v.ids.add(rec.id)
	}
	if !rec.noPrev && seq > 0 {
		if before := o.leaves.at(seq - 1); before != nil && before.present {
			rec.linked, rec.badLink = true, prev != before.hash
		} else {
			if o.prevs == nil {
				o.prevs = map[int64]tlog.Hash{}
			}
			o.prevs[seq] = prev
		}
	}
	o.leaves.set(seq, rec)
	if cp != nil {
		o.checkpoints = append(o.checkpoints, *cp)
	}
	return nil
}

// withoutIgnored returns event without IgnoreMembers, counting them.
func (v *Verifier) withoutIgnored(event []byte) []byte {
	if len(v.removed) != len(v.IgnoreMembers) {
		v.removed = make([]bool, len(v.IgnoreMembers))
		v.ignored = make([]int64, len(v.IgnoreMembers))
	}
	out := jcs.AppendWithout(v.stripped[:0], event, v.IgnoreMembers, v.removed)
	if len(out) == 0 || &out[0] == &event[0] {
		return event // none of them: the caller's bytes, not the scratch
	}
	v.stripped = out
	for i, r := range v.removed {
		if r {
			v.ignored[i]++
		}
	}
	return out
}

// CheckIgnorable says why name cannot be given in IgnoreMembers: a member
// the sidecar writes (audit.Members) is part of the event its log hashed.
func CheckIgnorable(name string) error {
	switch {
	case name == "":
		return errors.New("an empty member name")
	case slices.Contains(audit.Members, name):
		return fmt.Errorf("%q is a member the sidecar writes, part of every event its log hashed; only members an aggregator adds (such as @timestamp, tag, date) can be ignored", name)
	}
	return nil
}

// eventTime returns an event's time in unix nanoseconds, 0 when it is not
// an RFC 3339 time. Events of one hour share the hour's start, kept in
// hourText and hourNanos: the minutes, seconds and nanoseconds of the
// sidecar's layout (audit's "2006-01-02T15:04:05.000000000Z") are added
// to it without building a time.Time for every event.
func (v *Verifier) eventTime(b []byte) int64 {
	const hourLen = len("2006-01-02T15:")
	if len(b) == len("2006-01-02T15:04:05.000000000Z") && v.hourNanos != 0 && string(b[:hourLen]) == string(v.hourText[:]) &&
		b[16] == ':' && b[19] == '.' && b[29] == 'Z' {
		n, ok := int64(0), true
		digits := func(s []byte) int64 {
			x := int64(0)
			for _, c := range s {
				ok = ok && c-'0' < 10
				x = x*10 + int64(c-'0')
			}
			return x
		}
		mi, sec, ns := digits(b[14:16]), digits(b[17:19]), digits(b[20:29])
		if ok && mi < 60 && sec < 60 {
			n = v.hourNanos + (mi*60+sec)*int64(time.Second) + ns
			return n
		}
	}
	t, err := audit.ParseTime(b)
	if err != nil {
		return 0
	}
	// Only a time in the sidecar's layout gives the cache its hour: the
	// hour of another RFC 3339 form (one digit, an offset) is elsewhere.
	if len(b) == len("2006-01-02T15:04:05.000000000Z") && b[4] == '-' && b[7] == '-' && b[10] == 'T' && b[13] == ':' && t.Location() == time.UTC {
		copy(v.hourText[:], b[:hourLen])
		v.hourNanos = t.Truncate(time.Hour).UnixNano()
	}
	return t.UnixNano()
}

// leafPrefix starts an RFC 6962 leaf hash; a variable, as a literal passed
// to Write would be allocated at every call.
var leafPrefix = []byte{0x00}

// leafHash is tlog.RecordHash(canon) with a reused hash state.
func (v *Verifier) leafHash(canon []byte) tlog.Hash {
	if v.sha == nil {
		v.sha = sha256.New()
	}
	v.sha.Reset()
	v.sha.Write(leafPrefix)
	v.sha.Write(canon)
	// Into a kept buffer: h passed to the interface's Sum would escape
	// and be allocated for every event.
	v.sum = v.sha.Sum(v.sum[:0])
	return tlog.Hash(v.sum)
}

// The members of an event a Verifier reads, in the order fieldsFromMembers
// expects them.
var verifiedMembers = [...]string{"id", "type", "time", "log"}

// fieldsFromMembers reads the fields from the values of verifiedMembers, as
// appendCanonicalMembers returns them. It reports false when a field holds
// an escape or is not in the expected shape; the caller then parses.
func fieldsFromMembers(vals []byte, ends [len(verifiedMembers)]int) (eventFields, bool) {
	var f eventFields
	member := func(i int) []byte {
		if i == 0 {
			return vals[:ends[0]]
		}
		return vals[ends[i-1]:ends[i]]
	}
	ok := true
	str := func(i int) []byte {
		m := member(i)
		if len(m) == 0 {
			return nil
		}
		s, plain := plainString(m)
		ok = ok && plain
		return s
	}
	f.id, f.time = str(0), str(2)
	f.typ = internType(str(1))
	if l := member(3); len(l) > 0 {
		f.hasLog = true
		ok = ok && scanMembers(l, func(k, v []byte) bool {
			switch string(k) {
			case "origin":
				s, ok := plainString(v)
				f.origin = s
				return ok
			case "prev":
				s, ok := plainString(v)
				f.prev = s
				return ok
			case "seq":
				n, ok := plainInt(v)
				f.seq, f.hasSeq = n, ok
				return ok
			}
			return true
		})
	}
	return f, ok
}

// Report is the outcome of a verification.
type Report struct {
	Origins   []OriginReport `json:"origins"`
	Unchained int            `json:"unchained_events"`
	Invalid   int            `json:"invalid_events"`
	Problems  []string       `json:"problems"` // not tied to one origin
	// Ignored counts, for each of IgnoreMembers, the events that had it:
	// members dropped before hashing as an aggregator's.
	Ignored map[string]int64 `json:"ignored_members,omitempty"`
	OK      bool             `json:"ok"`
}

// OriginReport is the verification of one origin's log.
type OriginReport struct {
	Origin              string `json:"origin"`
	Events              int64  `json:"events"` // distinct seqs present
	MaxSeq              int64  `json:"max_seq"`
	Duplicates          int    `json:"duplicates"` // repeated copies of the same event (at-least-once shipping)
	Checkpoints         int    `json:"checkpoints"`
	CheckpointsVerified int    `json:"checkpoints_verified"`
	NewestCheckpoint    int64  `json:"newest_checkpoint_size"` // -1: none
	NewestCheckpointAt  string `json:"newest_checkpoint_time"` // RFC 3339
	Committed           int64  `json:"committed_present"`      // events below the newest checkpoint's size that are present
	Outages             int    `json:"outages"`                // gaps between checkpoints that the later one reports as an outage (the log could not be written)
	// Uncommitted counts the events present after the newest checkpoint
	// (all of them when none verifies): no signature vouches for them
	// yet. UncommittedFrom and UncommittedTo are their first and last seq.
	Uncommitted     int64 `json:"uncommitted"`
	UncommittedFrom int64 `json:"uncommitted_from,omitempty"`
	UncommittedTo   int64 `json:"uncommitted_to,omitempty"`
	// NewestCheckpointFinal says the newest checkpoint is the one a
	// sidecar writes as it stops.
	NewestCheckpointFinal bool `json:"newest_checkpoint_final"`
	// UnsignedFinal says the newest checkpoint's event claims it is final
	// but its note does not sign the claim (a log written before notes
	// carried it, or an edited copy), so it is taken as not final.
	UnsignedFinal bool `json:"unsigned_final,omitempty"`
	// SignedBy are the keys (name+hash) whose signature on a checkpoint of
	// the log verified. A sidecar's key is named after its log, the NAME
	// of the origin NAME/EPOCH (C2SP tlog-checkpoint: a key name SHOULD
	// match the origin); any key given verifies any log, so a report
	// whose key is named otherwise is worth a look (KeyNamedForOrigin).
	SignedBy []string `json:"signed_by,omitempty"`
	// With Verifier.Witnesses: how many of the log's checkpoints a
	// witness cosigned (with the root the events hash to), the newest
	// such size (-1: none), and the witnesses' key names.
	Cosigned       int      `json:"cosigned_checkpoints,omitempty"`
	NewestCosigned int64    `json:"newest_cosigned_size,omitempty"`
	Witnesses      []string `json:"witnesses,omitempty"`
	Problems       []string `json:"problems"`
	OK             bool     `json:"ok"`
}

// Report finishes the verification.
func (v *Verifier) Report() *Report {
	r := &Report{Unchained: v.unchained, Invalid: v.invalid, OK: true}
	if len(v.IgnoreMembers) > 0 {
		r.Ignored = make(map[string]int64, len(v.IgnoreMembers))
		for i, name := range v.IgnoreMembers {
			if i < len(v.ignored) {
				r.Ignored[name] = v.ignored[i]
			} else {
				r.Ignored[name] = 0
			}
		}
	}
	if v.unchained > 0 {
		r.Problems = append(r.Problems, fmt.Sprintf("%d events have no \"log\" member: they are in no log and cannot be verified", v.unchained))
	}
	if v.invalid > 0 {
		r.Problems = append(r.Problems, fmt.Sprintf("%d events could not be read: %v", v.invalid, v.firstBad))
	}
	r.Problems = append(r.Problems, v.duplicateIDs()...)
	names := make([]string, 0, len(v.origins))
	for name := range v.origins {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		or := v.verifyOrigin(v.origins[name])
		r.Origins = append(r.Origins, or)
		r.OK = r.OK && or.OK
	}
	for _, origin := range v.cosignedOrigins() {
		r.Problems = append(r.Problems, fmt.Sprintf("cosignatures of log %s, but none of its events were given", origin))
		for _, p := range v.cosignProblems[origin] {
			r.Problems = append(r.Problems, fmt.Sprintf("log %s: %s", origin, p))
		}
	}
	if len(r.Problems) > 0 || len(r.Origins) == 0 {
		r.OK = false
		if len(r.Origins) == 0 && len(r.Problems) == 0 {
			r.Problems = append(r.Problems, "no events")
		}
	}
	return r
}

// duplicateIDs reports event ids found at two different places.
func (v *Verifier) duplicateIDs() []string {
	// Sort the hashes of the ids alone, which is fast; only if two are
	// the same, look for their places.
	ids := radixSort(v.ids.all())
	dup := map[uint64]bool{}
	for i := 1; i < len(ids); i++ {
		if ids[i] == ids[i-1] {
			dup[ids[i]] = true
		}
	}
	if len(dup) == 0 {
		return nil
	}
	type place struct {
		origin string
		seq    int64
	}
	first := map[uint64]place{}
	var out []string
	for _, o := range v.originList {
		for seq := range o.leaves.len() {
			l := o.leaves.at(seq)
			if l == nil || !l.present || !dup[l.id] {
				continue
			}
			p, seen := first[l.id]
			if !seen {
				first[l.id] = place{o.origin, seq}
				continue
			}
			if len(out) < 10 {
				out = append(out, fmt.Sprintf("one event id appears at %s seq %d and at %s seq %d (a replayed or copied event)",
					p.origin, p.seq, o.origin, seq))
			}
		}
	}
	return out
}

func (v *Verifier) verifyOrigin(o *originLog) OriginReport {
	r := OriginReport{Origin: o.origin, MaxSeq: o.leaves.len() - 1, Duplicates: o.duplicates,
		Checkpoints: len(o.checkpoints), NewestCheckpoint: -1}
	problem := func(format string, args ...any) {
		if len(r.Problems) < 50 {
			r.Problems = append(r.Problems, fmt.Sprintf(format, args...))
		}
	}
	for _, seq := range o.conflicts {
		problem("seq %d: two different events claim it (an event was modified or forged)", seq)
	}
	// Gaps and prev links.
	for seq := int64(0); seq < o.leaves.len(); {
		if !o.leaves.get(seq).present {
			end := seq
			for end < o.leaves.len() && !o.leaves.get(end).present {
				end++
			}
			if end-seq == 1 {
				problem("seq %d missing (an event was removed)", seq)
			} else {
				problem("seq %d..%d missing (%d events removed)", seq, end-1, end-seq)
			}
			seq = end
			continue
		}
		r.Events++
		l := o.leaves.get(seq)
		switch {
		case seq == 0 && !l.noPrev:
			problem("seq 0 has a prev link; a log starts with an empty prev")
		case seq > 0 && l.noPrev:
			problem("seq %d has no prev link", seq)
		case seq > 0 && (l.linked && l.badLink || !l.linked && o.leaves.get(seq-1).present && o.prevs[seq] != o.leaves.get(seq-1).hash):
			problem("seq %d: prev does not match event %d (events reordered, modified or inserted)", seq, seq-1)
		}
		seq++
	}
	// Checkpoints, in seq order, against the tree of the leaves.
	slices.SortFunc(o.checkpoints, func(a, b cpRec) int { return int(a.seq - b.seq) })
	var tree Tree
	var stored []tlog.Hash
	treeOK := true // every leaf so far present
	var prevCP *cpRec
	roots := map[int64]tlog.Hash{} // of the checkpoints that verified
	unknownSigned, unknownSigners := 0, []string(nil)
	for i := range o.checkpoints {
		cp := &o.checkpoints[i]
		for tree.Size() < cp.seq && treeOK {
			l := o.leaves.get(tree.Size())
			if !l.present {
				treeOK = false
				break
			}
			stored = tree.Append(l.hash, stored[:0]) // not kept; reused so it does not allocate
		}
		newest := i == len(o.checkpoints)-1
		ck, n, err := OpenCheckpoint([]byte(cp.rec.Note), v.Keys)
		if err == nil {
			for _, sig := range n.Sigs {
				if signer := fmt.Sprintf("%s+%08x", sig.Name, sig.Hash); !slices.Contains(r.SignedBy, signer) {
					r.SignedBy = append(r.SignedBy, signer)
				}
			}
		}
		var unknown *note.UnverifiedNoteError
		switch {
		case errors.As(err, &unknown):
			unknownSigned++
			for _, name := range signerIDs(unknown.Note) {
				if !slices.Contains(unknownSigners, name) {
					unknownSigners = append(unknownSigners, name)
				}
			}
			continue
		case err != nil:
			problem("checkpoint at seq %d: %v", cp.seq, err)
			continue
		}
		switch {
		case ck.Origin != o.origin:
			problem("checkpoint at seq %d is for origin %q, not this log's (a checkpoint replayed from another log)", cp.seq, ck.Origin)
			continue
		case ck.Size != cp.seq:
			problem("checkpoint at seq %d commits to size %d; a checkpoint commits to the events before it", cp.seq, ck.Size)
			continue
		case cp.rec.Size != ck.Size || cp.rec.Origin != ck.Origin:
			problem("checkpoint at seq %d: its fields disagree with its signed note", cp.seq)
		case ck.Final && !cp.final:
			problem("checkpoint at seq %d: its signed note is final, its event says it is not", cp.seq)
		case cp.final && !ck.Final && newest:
			// A final member that the note does not sign is trusted only
			// where a later checkpoint's root covers it (logs written
			// before notes carried it); on the newest checkpoint anyone
			// could have added it.
			r.UnsignedFinal = true
		}
		cp.final = ck.Final || cp.final && !newest
		if !treeOK {
			problem("checkpoint at size %d: cannot check its root, events before it are missing", ck.Size)
		} else if root := tree.Root(); root != ck.Root {
			problem("checkpoint at size %d: the events do not hash to its signed root (an event before it was changed, removed, inserted or reordered)", ck.Size)
		} else {
			r.CheckpointsVerified++
			roots[ck.Size] = ck.Root
		}
		if prevCP != nil && !prevCP.final && prevCP.time > 0 && cp.time > 0 {
			gap := time.Duration(cp.time - prevCP.time)
			cadence := time.Duration(prevCP.rec.IntervalMS) * time.Millisecond
			late := CheckpointOverdue(cadence)
			switch {
			case cadence <= 0 || gap <= late:
			case cp.outageSince > 0 && cp.outageSince <= prevCP.time+int64(late) && i < len(o.checkpoints)-1:
				// The sidecar says its commits failed from a time when the
				// next checkpoint was not yet overdue: the checkpoints due
				// meanwhile could not be written, none was removed. The
				// claim is outside the signed note, so only a later
				// checkpoint, whose root covers this event, vouches for it.
				r.Outages++
			default:
				problem("checkpoints at sizes %d and %d are %s apart, cadence %s: checkpoints between them are missing", prevCP.seq, cp.seq, gap.Round(time.Millisecond), cadence)
			}
		}
		prevCP = cp
		r.NewestCheckpoint = ck.Size
		r.NewestCheckpointAt = time.Unix(0, cp.time).UTC().Format(time.RFC3339Nano)
	}
	if unknownSigned > 0 {
		// One line, not one per checkpoint: what the auditor lacks is a
		// key, named here by the id its holder can look up.
		who := "no signature"
		if len(unknownSigners) > 0 {
			who = "key " + strings.Join(unknownSigners, ", ")
		}
		problem("%d checkpoints signed by no key given: signed by %s; ask the operator for its verifier key (the line of signing.key.pub starting %s+) and give it with --pubkey",
			unknownSigned, who, firstOr(unknownSigners, "NAME+HASH"))
	}
	// The uncommitted tail: events after the newest checkpoint that
	// verified, which nothing signed covers yet.
	tailFrom := int64(0)
	if prevCP != nil {
		tailFrom = prevCP.seq + 1
		r.NewestCheckpointFinal = prevCP.final
	}
	var restarted bool
	var restartAt, newestBefore, newest int64 // the latest restart in the tail; the newest event before it, and of all
	for seq := tailFrom; seq < o.leaves.len(); seq++ {
		if l := o.leaves.get(seq); l.present {
			if r.Uncommitted == 0 {
				r.UncommittedFrom = seq
			}
			r.Uncommitted++
			r.UncommittedTo = seq
			if l.started {
				restarted, restartAt, newestBefore = true, l.time, max(newestBefore, newest)
			}
			newest = max(newest, l.time)
		}
	}
	switch {
	case prevCP != nil && prevCP.final && r.Uncommitted > 0 && !restarted:
		// A final checkpoint is the last event a sidecar writes before it
		// stops; the log goes on after it only when the sidecar starts
		// again, and the restart records proxy_started.
		problem("%d events after the final checkpoint (size %d), seq %d..%d, and no restart (proxy_started) among them: a final checkpoint is the last event before the sidecar stops, so these were appended to a closed log",
			r.Uncommitted, prevCP.seq, r.UncommittedFrom, r.UncommittedTo)
	case v.RequireCommitted && r.Uncommitted > 0 && prevCP != nil:
		problem("%d events after the newest checkpoint (size %d), seq %d..%d, are not committed to by any checkpoint (--require-committed)",
			r.Uncommitted, prevCP.seq, r.UncommittedFrom, r.UncommittedTo)
	}
	if prevCP == nil {
		problem("no verifiable checkpoint: nothing vouches for these events")
	} else {
		for seq := int64(0); seq < r.NewestCheckpoint; seq++ {
			if o.leaves.get(seq).present {
				r.Committed++
			}
		}
		// Events after the newest checkpoint: its successor should have come
		// within the cadence of the newest of them, or, after a restart
		// among them, within the cadence of the restart (the time between
		// is downtime, not missing checkpoints).
		cadence := time.Duration(prevCP.rec.IntervalMS) * time.Millisecond
		late := cadence*3/2 + time.Second
		since, last := prevCP.time, newest
		if restarted {
			since = restartAt
			if newestBefore > 0 && prevCP.time > 0 && time.Duration(newestBefore-prevCP.time) > late && cadence > 0 {
				problem("events after the newest checkpoint (size %d) and before the restart span %s, cadence %s: the checkpoints after it are missing (the log's tail was cut?)",
					prevCP.seq, time.Duration(newestBefore-prevCP.time).Round(time.Millisecond), cadence)
			}
		}
		if cadence > 0 && last > 0 && since > 0 && time.Duration(last-since) > late {
			problem("%d events after the newest checkpoint (size %d) span %s, cadence %s: the checkpoints after it are missing (the log's tail was cut?)",
				o.leaves.len()-prevCP.seq-1, prevCP.seq, time.Duration(last-since).Round(time.Millisecond), cadence)
		}
		// With the time the log should reach: a checkpoint should be
		// there within the cadence of it. A final newest checkpoint is no
		// excuse: a copy cut back to an earlier stop (every restart leaves
		// one) ends at a final checkpoint too; a sidecar stopped since is
		// verified with --until at its stop.
		ref := max(prevCP.time, restartAt)
		if !v.Until.IsZero() && cadence > 0 && ref > 0 && v.Until.Sub(time.Unix(0, ref)) > late {
			what := "the newest checkpoint (size " + strconv.FormatInt(prevCP.seq, 10) + ") is from"
			if restartAt > prevCP.time {
				what = "the sidecar restarted after the newest checkpoint (size " + strconv.FormatInt(prevCP.seq, 10) + ") at"
			}
			stop := ""
			if prevCP.final && restartAt == 0 {
				stop = " (a stop: if the sidecar did not run after it, give --until at or before its stop)"
			}
			problem("%s %s, %s before %s, cadence %s: the log's tail was cut%s",
				what, time.Unix(0, ref).UTC().Format(time.RFC3339), v.Until.Sub(time.Unix(0, ref)).Round(time.Second),
				v.Until.UTC().Format(time.RFC3339), cadence, stop)
		}
	}
	v.checkCosigned(o, roots, &r, problem)
	r.OK = len(r.Problems) == 0
	return r
}

// CheckpointOverdue is how long after a checkpoint the next one, due an
// interval later, may come before the checkpoints between them count as
// missing: half an interval and a second of slack for a busy host.
func CheckpointOverdue(interval time.Duration) time.Duration { return interval*3/2 + time.Second }

// KeyNamedForOrigin reports whether a key of that name is named for the
// log of origin: the whole origin, or its NAME before "/EPOCH".
func KeyNamedForOrigin(keyName, origin string) bool {
	if keyName == origin {
		return true
	}
	i := strings.LastIndexByte(origin, '/')
	return i > 0 && keyName == origin[:i]
}

// signerIDs are the key ids (name+hash) of a note's signatures.
func signerIDs(n *note.Note) []string {
	if n == nil {
		return nil
	}
	var ids []string
	for _, s := range n.UnverifiedSigs {
		ids = append(ids, fmt.Sprintf("%s+%08x", s.Name, s.Hash))
	}
	return ids
}

func firstOr(s []string, or string) string {
	if len(s) == 0 {
		return or
	}
	return s[0]
}

func signerNames(n *note.Note) string {
	if n == nil || len(n.UnverifiedSigs) == 0 {
		return "no signature"
	}
	var names []string
	for _, s := range n.UnverifiedSigs {
		names = append(names, fmt.Sprintf("%s+%08x", s.Name, s.Hash))
	}
	return fmt.Sprint(names)
}

// eventFields are the members of an event a Verifier reads.
type eventFields struct {
	typ            string
	id, origin     []byte
	time, prev     []byte
	seq            int64
	hasLog, hasSeq bool
	cp             *cpRec
}

// parseEventFields reads the fields with a JSON parser.
func (v *Verifier) parseEventFields(canon []byte) (eventFields, error) {
	var f eventFields
	val, err := v.p.ParseBytes(canon)
	if err != nil {
		return f, fmt.Errorf("not JSON (%v)", err)
	}
	f.id = append([]byte(nil), val.GetStringBytes("id")...)
	f.typ = string(val.GetStringBytes("type"))
	f.time = append([]byte(nil), val.GetStringBytes("time")...)
	if logv := val.Get("log"); logv != nil {
		f.hasLog = true
		f.origin = append([]byte(nil), logv.GetStringBytes("origin")...)
		f.prev = append([]byte(nil), logv.GetStringBytes("prev")...)
		if seqv := logv.Get("seq"); seqv != nil {
			seq, err := seqv.Int64()
			if err != nil {
				return f, errors.New(`"log" seq is not a non-negative integer`)
			}
			f.seq, f.hasSeq = seq, true
		}
	}
	if c := val.Get("checkpoint"); c != nil && f.typ == audit.TypeCheckpoint {
		f.cp = &cpRec{final: c.GetBool("final"), rec: CheckpointRecord{
			Origin: string(c.GetStringBytes("origin")), Size: c.GetInt64("size"),
			Root: string(c.GetStringBytes("root")), Note: string(c.GetStringBytes("note")),
			IntervalMS: c.GetInt64("interval_ms")}}
		if since := c.GetStringBytes("outage", "since"); since != nil {
			if t, err := audit.ParseTime(since); err == nil {
				f.cp.outageSince = t.UnixNano()
			}
		}
	}
	return f, nil
}

// scanMembers calls fn with each member of the JSON object at the start of
// c (canonical form: no whitespace), until fn returns false. It reports
// false if c is not such an object or fn returned false.
func scanMembers(c []byte, fn func(key, val []byte) bool) bool {
	if len(c) < 2 || c[0] != '{' {
		return false
	}
	i := 1
	if c[i] == '}' {
		return true
	}
	for {
		kEnd := jcs.SkipString(c, i)
		if kEnd < 0 || kEnd >= len(c) || c[kEnd] != ':' {
			return false
		}
		key := c[i+1 : kEnd-1]
		vEnd := jcs.SkipValue(c, kEnd+1)
		if vEnd < 0 || vEnd >= len(c) {
			return false
		}
		if !fn(key, c[kEnd+1:vEnd]) {
			return false
		}
		switch c[vEnd] {
		case ',':
			i = vEnd + 1
		case '}':
			return true
		default:
			return false
		}
	}
}

// plainString returns a JSON string's contents when it has no escape.
func plainString(v []byte) ([]byte, bool) {
	if len(v) < 2 || v[0] != '"' || v[len(v)-1] != '"' {
		return nil, false
	}
	s := v[1 : len(v)-1]
	return s, bytes.IndexByte(s, '\\') < 0
}

// plainInt returns a JSON number made of decimal digits only.
func plainInt(v []byte) (int64, bool) {
	if len(v) == 0 || len(v) > 18 {
		return 0, false
	}
	var n int64
	for _, b := range v {
		if b < '0' || b > '9' {
			return 0, false
		}
		n = n*10 + int64(b-'0')
	}
	return n, true
}

// internType returns the common event types without allocating.
func internType(b []byte) string {
	for _, t := range []string{audit.TypeInference, audit.TypeCheckpoint, audit.TypeLogStarted, audit.TypeProxyStarted, audit.TypeProxyStopped} {
		if string(b) == t {
			return t
		}
	}
	return string(b)
}
