package main

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"maps"
	"os"
	"slices"
	"strings"
	"time"

	fnote "github.com/transparency-dev/formats/note"
	"golang.org/x/mod/sumdb/note"

	"github.com/auditproxy/auditproxy/auditlog"
	"github.com/auditproxy/auditproxy/change"
	"github.com/auditproxy/auditproxy/eventsrc"
	"github.com/auditproxy/auditproxy/query"
)

// stringList is a repeatable string flag.
type stringList []string

func (l *stringList) String() string     { return strings.Join(*l, ",") }
func (l *stringList) Set(s string) error { *l = append(*l, s); return nil }

// ignoredMembers is the repeatable --ignore-member flag: top-level members
// an aggregator added to the records it stored, dropped before hashing.
type ignoredMembers []string

func (l *ignoredMembers) String() string { return strings.Join(*l, ",") }
func (l *ignoredMembers) Set(s string) error {
	for name := range strings.SplitSeq(s, ",") {
		if name = strings.TrimSpace(name); !slices.Contains(*l, name) {
			*l = append(*l, name)
		}
	}
	return nil
}

// check says, as cmd's usage error, why a name cannot be ignored; after
// parsing, so that the one line is not lost in the usage text.
func (l ignoredMembers) check(cmd string) error {
	for _, name := range l {
		if err := auditlog.CheckIgnorable(name); err != nil {
			return usageError{fmt.Sprintf("%s: --ignore-member: %v", cmd, err)}
		}
	}
	return nil
}

// ignoreMemberUsage is the flag's help, shared by the commands that hash
// events.
const ignoreMemberUsage = "top-level member `NAME` an aggregator adds to the records it stores (Fluent Bit: @timestamp from its OpenSearch output, date from its S3 and HTTP outputs, a tag with Include_Tag_Key), dropped from each event before it is hashed; repeat or separate with commas"

// runVerify checks logs from their events.
func runVerify(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("verify", "verify --pubkey FILE [--json] [--require-committed] [--ignore-member NAME] [--until T] PATH...", stderr)
	var opts verifyOptions
	opts.register(fs)
	asJSON := fs.Bool("json", false, "print the report as JSON")
	paths, err := parseFlagsAndArgs(fs, args)
	if err != nil {
		return err
	}
	if len(paths) == 0 {
		return usageError{"verify: give at least one PATH (event files, directories, spool segments, or - for stdin)"}
	}
	vr, err := opts.start("verify", stderr)
	if err != nil {
		return err
	}
	var damaged eventsrc.DamageError
	for _, path := range paths {
		if err := damaged.Collect(eventsrc.Read(path, vr.v.Add)); err != nil {
			return fmt.Errorf("verify: %w", err)
		}
	}
	r, changeReport, notes := vr.finish(damaged)
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(struct {
			*auditlog.Report
			Changes *change.AuditReport `json:"change_records,omitempty"`
			Notes   []string            `json:"notes,omitempty"`
		}{r, changeReport, notes}); err != nil {
			return err
		}
	} else {
		printReport(stdout, r, len(opts.pubkeys) == 0, changeReport, notes)
	}
	if !r.OK {
		return errVerifyFailed
	}
	return nil
}

// verifyOptions are the flags of the commands that verify logs: verify,
// and report, which verifies before it reports.
type verifyOptions struct {
	pubkeys, witnessKeys, cosignatureFiles stringList
	ignore                                 ignoredMembers
	requireCommitted                       bool
	allowedSigners, approvalRequired       string
	until                                  string
}

func (o *verifyOptions) register(fs *flag.FlagSet) {
	fs.Var(&o.pubkeys, "pubkey", "verifier key `file` (keygen's FILE.pub) or key text; repeat for several")
	fs.Var(&o.ignore, "ignore-member", ignoreMemberUsage)
	fs.Var(&o.witnessKeys, "witness-key", "verifier key `file` (or key text) of a C2SP tlog-witness whose cosignatures to check (its cosignature/v1 or Ed25519 note verifier key); every log must then have a checkpoint cosigned by each witness given (by key name); repeat for several")
	fs.Var(&o.cosignatureFiles, "cosignatures", "`file` of cosigned checkpoints the sidecar's witness client kept (DATA-DIR/cosignatures.ndjson), checked with --witness-key; repeat for several")
	fs.BoolVar(&o.requireCommitted, "require-committed", false, "fail on events no checkpoint commits to yet (the tail after each log's newest checkpoint); off, they are counted and pass, as every copy of a running log ends with up to a checkpoint interval of them")
	fs.StringVar(&o.allowedSigners, "allowed-signers", "", "OpenSSH allowed-signers `file`: check the signatures of the change records in annotation events again (signed by their actor, and approver, as the sidecar checked them)")
	fs.StringVar(&o.approvalRequired, "approval-required", "", "comma-separated change `types` whose records must have an approver other than the actor (besides those the sidecar's policy marked)")
	fs.StringVar(&o.until, "until", "", "`time` the logs should reach (e.g. when they were exported): an RFC 3339 time, a date (UTC), or a span before now (24h, 7d, 8mo); an older newest checkpoint means a cut tail")
}

// verifyRun is a verification under way: feed the events to v.Add.
type verifyRun struct {
	v               *auditlog.Verifier
	changes         *change.Auditor
	until           time.Time
	keys, witnesses []string // NAME+HASH
}

// start checks the options and makes the verifier; its errors are the
// command's (cmd) to return.
func (o *verifyOptions) start(cmd string, stderr io.Writer) (*verifyRun, error) {
	if err := o.ignore.check(cmd); err != nil {
		return nil, err
	}
	untilTime, err := query.ParseTimeBound(o.until, time.Now(), time.UTC)
	if err != nil {
		return nil, usageError{fmt.Sprintf("%s: --until %q: %v", cmd, o.until, err)}
	}
	keys, err := loadVerifierKeys(o.pubkeys)
	if err != nil {
		return nil, usageError{cmd + ": " + err.Error()}
	}
	if len(o.cosignatureFiles) > 0 && len(o.witnessKeys) == 0 {
		return nil, usageError{cmd + ": --cosignatures needs --witness-key, the key to check them with"}
	}
	v := auditlog.NewVerifier(note.VerifierList(keys...))
	vr := &verifyRun{v: v, until: untilTime, keys: keyIDs(keys)}
	if len(o.witnessKeys) > 0 {
		ws, err := loadWitnessKeys(o.witnessKeys)
		if err != nil {
			return nil, usageError{cmd + ": " + err.Error()}
		}
		v.Witnesses = ws
		vr.witnesses = keyIDs(ws)
		fmt.Fprint(stderr, sharedWitnessNames(ws))
	}
	for _, name := range o.cosignatureFiles {
		b, err := os.ReadFile(name)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", cmd, err)
		}
		n := 0
		for line := range bytes.Lines(b) {
			n++
			if line = bytes.TrimSpace(line); len(line) == 0 {
				continue
			}
			if err := v.AddCosignature(line); err != nil {
				return nil, fmt.Errorf("%s: %s line %d: %w", cmd, name, n, err)
			}
		}
	}
	v.Until = untilTime
	v.IgnoreMembers = o.ignore
	v.RequireCommitted = o.requireCommitted
	if o.allowedSigners != "" {
		changes := &change.Auditor{}
		if changes.Allowed, err = loadAllowedSigners(o.allowedSigners); err != nil {
			return nil, usageError{cmd + ": " + err.Error()}
		}
		for _, t := range strings.Split(o.approvalRequired, ",") {
			if t = strings.TrimSpace(t); t != "" {
				changes.Policy.ApprovalRequired = append(changes.Policy.ApprovalRequired, t)
			}
		}
		v.Observe = changes.Add
		vr.changes = changes
	} else if o.approvalRequired != "" {
		return nil, usageError{cmd + ": --approval-required needs --allowed-signers"}
	}
	return vr, nil
}

// loadAllowedSigners reads an --allowed-signers file.
func loadAllowedSigners(name string) (*change.AllowedSigners, error) {
	b, err := os.ReadFile(name)
	if err != nil {
		return nil, fmt.Errorf("--allowed-signers: %w", err)
	}
	allowed, err := change.ParseAllowedSigners(name, b)
	if err != nil {
		return nil, fmt.Errorf("--allowed-signers: %w", err)
	}
	return allowed, nil
}

// finish reports the verification of the events fed to it, damage read
// past among its problems, and what it could not check among its notes.
func (vr *verifyRun) finish(damaged eventsrc.DamageError) (*auditlog.Report, *change.AuditReport, []string) {
	r := vr.v.Report()
	var changeReport *change.AuditReport
	if vr.changes != nil {
		cr := vr.changes.Report()
		changeReport = &cr
		r.OK = r.OK && len(cr.Problems) == 0
	}
	for _, d := range damaged.Files {
		// Every intact event of the file was verified; those in the
		// damaged ranges show above as missing seqs.
		r.Problems = append(r.Problems, d.Error()+"; events lost in it show as missing seqs")
		r.OK = false
	}
	var notes []string
	for _, t := range damaged.Torn {
		notes = append(notes, t.Error())
	}
	if vr.until.IsZero() {
		notes = append(notes, "completeness after each log's newest checkpoint was not checked: events and checkpoints cut from the end of this copy would not show; give --until (when the copy was made), or the checkpoints kept apart (--checkpoint-dir's checkpoints.ndjson, the witness's --cosignatures)")
	}
	return r, changeReport, notes
}

// sharedWitnessNames says which witness keys given share a name: verify
// counts them as one witness (a key rotation), so a cosignature by any of
// them satisfies it, and the key names are the witnesses' own choice.
func sharedWitnessNames(vs []note.Verifier) string {
	byName := map[string][]string{}
	var names []string
	for _, v := range vs {
		if byName[v.Name()] == nil {
			names = append(names, v.Name())
		}
		byName[v.Name()] = append(byName[v.Name()], fmt.Sprintf("%s+%08x", v.Name(), v.KeyHash()))
	}
	var out []string
	for _, n := range names {
		if len(byName[n]) > 1 {
			out = append(out, strings.Join(byName[n], " and "))
		}
	}
	if out == nil {
		return ""
	}
	return "note: witness keys " + strings.Join(out, "; ") + " share a name: they count as one witness (a key rotation), and a cosignature by any of them satisfies it; give only the keys of witnesses you trust\n"
}

// errVerifyFailed makes verify exit 1 after its report, without another line.
var errVerifyFailed = silentError{"verification failed"}

type silentError struct{ msg string }

func (e silentError) Error() string { return e.msg }

func printReport(w io.Writer, r *auditlog.Report, noKeys bool, changes *change.AuditReport, notes []string) {
	for _, o := range r.Origins {
		status := "OK"
		if !o.OK {
			status = "FAIL"
		}
		fmt.Fprintf(w, "%s %s\n", status, o.Origin)
		fmt.Fprintf(w, "  events: %d (seq 0..%d), duplicates: %d\n", o.Events, o.MaxSeq, o.Duplicates)
		fmt.Fprintf(w, "  checkpoints: %d, verified: %d", o.Checkpoints, o.CheckpointsVerified)
		if o.NewestCheckpoint >= 0 {
			final := ""
			if o.NewestCheckpointFinal {
				final = " (final: the sidecar stopped there)"
			}
			fmt.Fprintf(w, ", newest: size %d at %s%s\n", o.NewestCheckpoint, o.NewestCheckpointAt, final)
			if o.UnsignedFinal {
				fmt.Fprintln(w, "  note: the newest checkpoint's event says final, its signed note does not: it is taken as not final (a log from before notes carried final, or an edited copy)")
			}
			fmt.Fprintf(w, "  complete: %d of the %d events the newest checkpoint commits to are present\n", o.Committed, o.NewestCheckpoint)
		} else {
			fmt.Fprintln(w)
		}
		if len(o.SignedBy) > 0 {
			fmt.Fprintf(w, "  signed by: %s\n", strings.Join(o.SignedBy, ", "))
			for _, k := range o.SignedBy {
				if name, _, _ := strings.Cut(k, "+"); !auditlog.KeyNamedForOrigin(name, o.Origin) {
					fmt.Fprintf(w, "  note: key %s is not named after this log (a sidecar's key is named after the NAME of its origin NAME/EPOCH); every --pubkey given verifies every log, so make sure it is this log's key\n", k)
				}
			}
		}
		if o.Uncommitted > 0 {
			after := "no checkpoint verified, so"
			if o.NewestCheckpoint >= 0 {
				after = fmt.Sprintf("after the newest checkpoint (size %d),", o.NewestCheckpoint)
			}
			fmt.Fprintf(w, "  uncommitted: %d events %s seq %d..%d: no checkpoint commits to them yet, so nothing signed vouches for them (--require-committed fails on them)\n",
				o.Uncommitted, after, o.UncommittedFrom, o.UncommittedTo)
		}
		if len(o.Witnesses) > 0 {
			fmt.Fprintf(w, "  cosigned: %d checkpoints by %s, the newest at size %d\n", o.Cosigned, strings.Join(o.Witnesses, ", "), o.NewestCosigned)
		}
		if o.Outages > 0 {
			fmt.Fprintf(w, "  outages: %d (the spool could not be written for a while; the checkpoint after each says since when and why)\n", o.Outages)
		}
		for _, p := range o.Problems {
			fmt.Fprintf(w, "  problem: %s\n", p)
		}
	}
	for _, p := range r.Problems {
		fmt.Fprintf(w, "problem: %s\n", p)
	}
	if len(r.Ignored) > 0 {
		names := slices.Sorted(maps.Keys(r.Ignored))
		var seen []string
		for _, name := range names {
			seen = append(seen, fmt.Sprintf("%s in %d events", name, r.Ignored[name]))
		}
		fmt.Fprintf(w, "ignored: members dropped before hashing as an aggregator's (--ignore-member): %s\n", strings.Join(seen, ", "))
	}
	if changes != nil {
		fmt.Fprintf(w, "change records: %d signed, their signatures checked with --allowed-signers; %d unsigned annotations (only the admin token vouches for them)\n", changes.Signed, changes.Unsigned)
		for _, p := range changes.Problems {
			fmt.Fprintf(w, "problem: %s\n", p)
		}
	}
	if noKeys {
		fmt.Fprintln(w, "note: no --pubkey given, so no checkpoint signature could be verified")
	}
	for _, n := range notes {
		fmt.Fprintln(w, "note: "+n)
	}
	if r.OK {
		fmt.Fprintln(w, "verified")
	} else {
		fmt.Fprintln(w, "NOT verified")
	}
}

// warnDamaged prints damage read past to stderr and returns the errors that
// are something else: for commands (prove, show) whose answer may not need
// the damaged events.
func warnDamaged(stderr io.Writer, err error) error {
	var d eventsrc.DamageError
	if err = d.Collect(err); err == nil && (len(d.Files) > 0 || len(d.Torn) > 0) {
		fmt.Fprintln(stderr, "auditproxy: warning:", d.Error())
	}
	return err
}

// loadWitnessKeys reads witness verifier keys (cosignature/v1, or their
// Ed25519 note keys), as loadKeys reads keys.
func loadWitnessKeys(specs []string) ([]note.Verifier, error) {
	return loadKeys("--witness-key", "a witness verifier key (NAME+HASH+KEY, Ed25519; its operator publishes it)", specs, fnote.NewVerifierForCosignatureV1)
}
