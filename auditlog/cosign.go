package auditlog

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
)

// A cosignature is what a C2SP tlog-witness returned for one checkpoint,
// as the witness client keeps it (a line of DATA-DIR/cosignatures.ndjson):
//
//	{"origin":"<origin>","size":N,"note":"<the checkpoint's signed note, the witness's signature lines appended>"}
//
// A witness cosigns a checkpoint only after checking that it is consistent
// with every checkpoint of the origin it cosigned before, so a cosignature
// says that the witness, an outsider, saw this tree: a log that shows
// auditors one tree and the witness another (a fork) cannot have the
// witness's cosignature on the auditors' checkpoints.
type cosignature struct {
	Origin string `json:"origin"`
	Size   int64  `json:"size"`
	Note   string `json:"note"`
}

// cosigned is a cosignature that verified, kept for its origin's report.
type cosigned struct {
	size    int64
	root    tlog.Hash
	signers []string // the witnesses whose signature verified
}

// AddCosignature reads one cosignature line. It is checked against the
// log's key and Witnesses here, and against the log's events in Report.
// Without Witnesses, cosignatures are not read: AddCosignature reports an
// error.
func (v *Verifier) AddCosignature(line []byte) error {
	if v.Witnesses == nil {
		return errors.New("cosignatures given, but no witness key to check them with")
	}
	var c cosignature
	if err := json.Unmarshal(line, &c); err != nil || c.Note == "" {
		return fmt.Errorf("not a cosignature line (want {\"origin\":…,\"size\":N,\"note\":…}): %.80q", line)
	}
	if _, _, err := OpenCheckpoint([]byte(c.Note), v.Keys); err != nil {
		v.cosignProblem(c.Origin, fmt.Sprintf("cosigned checkpoint of size %d: not a checkpoint signed by the log's key (%v)", c.Size, err))
		return nil
	}
	n, err := note.Open([]byte(c.Note), note.VerifierList(v.Witnesses...))
	var unknown *note.UnverifiedNoteError
	switch {
	case errors.As(err, &unknown):
		v.cosignProblem(c.Origin, fmt.Sprintf("checkpoint of size %d: cosigned by no witness key given (%s)", c.Size, signerNames(unknown.Note)))
		return nil
	case err != nil:
		v.cosignProblem(c.Origin, fmt.Sprintf("checkpoint of size %d: a witness's cosignature does not verify (%v)", c.Size, err))
		return nil
	}
	cp, err := ParseCheckpoint(n.Text)
	if err != nil || cp.Origin != c.Origin || cp.Size != c.Size {
		v.cosignProblem(c.Origin, fmt.Sprintf("cosignature line of size %d: its fields disagree with its note", c.Size))
		return nil
	}
	rec := cosigned{size: cp.Size, root: cp.Root}
	for _, s := range n.Sigs {
		rec.signers = append(rec.signers, s.Name)
	}
	if v.cosigned == nil {
		v.cosigned = map[string][]cosigned{}
	}
	v.cosigned[cp.Origin] = append(v.cosigned[cp.Origin], rec)
	return nil
}

func (v *Verifier) cosignProblem(origin, p string) {
	if v.cosignProblems == nil {
		v.cosignProblems = map[string][]string{}
	}
	v.cosignProblems[origin] = append(v.cosignProblems[origin], p)
}

// checkCosigned compares the cosigned checkpoints of o with the roots its
// events hash to (roots: size -> root of the checkpoints that verified),
// filling r's Cosigned, NewestCosigned and Witnesses and its problems.
func (v *Verifier) checkCosigned(o *originLog, roots map[int64]tlog.Hash, r *OriginReport, problem func(string, ...any)) {
	if v.Witnesses == nil {
		return
	}
	for _, p := range v.cosignProblems[o.origin] {
		problem("%s", p)
	}
	r.NewestCosigned = -1
	seen := map[int64]bool{}
	newestBy := map[string]int64{}
	for _, c := range v.cosigned[o.origin] {
		root, ok := roots[c.size]
		switch {
		case !ok:
			problem("a witness cosigned the checkpoint of size %d, which is not among the verified checkpoints of these events", c.size)
			continue
		case root != c.root:
			problem("a witness cosigned a checkpoint of size %d whose root is not the one these events hash to: the log showed the witness another tree (a fork)", c.size)
			continue
		}
		for _, s := range c.signers {
			if !slices.Contains(r.Witnesses, s) {
				r.Witnesses = append(r.Witnesses, s)
			}
			newestBy[s] = max(newestBy[s], c.size)
		}
		if !seen[c.size] {
			seen[c.size] = true
			r.Cosigned++
		}
		r.NewestCosigned = max(r.NewestCosigned, c.size)
	}
	slices.Sort(r.Witnesses)
	if r.Cosigned == 0 {
		problem("no checkpoint of this log is cosigned by a witness key given: nothing outside the sidecar vouches that it showed everyone the same log")
		return
	}
	var missing []string
	for _, w := range v.Witnesses {
		if _, ok := newestBy[w.Name()]; !ok && !slices.Contains(missing, w.Name()) {
			missing = append(missing, w.Name())
		}
	}
	for _, name := range missing {
		problem("witness %s cosigned no checkpoint of this log (every --witness-key given must; others did: %s)", name, strings.Join(r.Witnesses, ", "))
	}
}

// cosignedOrigins returns the origins with cosignatures (or problems with
// them) but no events.
func (v *Verifier) cosignedOrigins() []string {
	var out []string
	for origin := range v.cosigned {
		if _, ok := v.origins[origin]; !ok && !slices.Contains(out, origin) {
			out = append(out, origin)
		}
	}
	for origin := range v.cosignProblems {
		if _, ok := v.origins[origin]; !ok && !slices.Contains(out, origin) {
			out = append(out, origin)
		}
	}
	slices.Sort(out)
	return out
}
