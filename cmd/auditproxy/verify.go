package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/auditproxy/auditproxy/auditlog"
	"github.com/auditproxy/auditproxy/spool"
)

// stringList is a repeatable string flag.
type stringList []string

func (l *stringList) String() string     { return strings.Join(*l, ",") }
func (l *stringList) Set(s string) error { *l = append(*l, s); return nil }

// runVerify checks logs from their events.
func runVerify(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("verify", "verify --pubkey FILE [--json] PATH...", stderr)
	var pubkeys stringList
	fs.Var(&pubkeys, "pubkey", "verifier key `file` (keygen's FILE.pub) or key text; repeat for several")
	asJSON := fs.Bool("json", false, "print the report as JSON")
	until := fs.String("until", "", "RFC 3339 `time` the logs should reach (e.g. when they were exported); an older newest checkpoint means a cut tail")
	if err := fs.Parse(args); err != nil {
		return err
	}
	var untilTime time.Time
	if *until != "" {
		t, err := time.Parse(time.RFC3339Nano, *until)
		if err != nil {
			return usageError{fmt.Sprintf("verify: --until %q: want an RFC 3339 time like 2026-11-23T10:00:00Z", *until)}
		}
		untilTime = t
	}
	if fs.NArg() == 0 {
		return usageError{"verify: give at least one PATH (event files, directories, spool segments, or - for stdin)"}
	}
	keys, err := loadVerifiers(pubkeys)
	if err != nil {
		return usageError{"verify: " + err.Error()}
	}
	v := auditlog.NewVerifier(keys)
	v.Until = untilTime
	var damaged []*spool.DamagedSegmentError
	for _, path := range fs.Args() {
		if err := readEvents(path, v.Add); err != nil {
			var dfe *damagedFilesError
			if !errors.As(err, &dfe) {
				return fmt.Errorf("verify: %w", err)
			}
			damaged = append(damaged, dfe.files...)
		}
	}
	r := v.Report()
	for _, d := range damaged {
		// Every intact event of the file was verified; those in the
		// damaged ranges show above as missing seqs.
		r.Problems = append(r.Problems, d.Error()+"; events lost in it show as missing seqs")
		r.OK = false
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(r); err != nil {
			return err
		}
	} else {
		printReport(stdout, r, len(pubkeys) == 0)
	}
	if !r.OK {
		return errVerifyFailed
	}
	return nil
}

// errVerifyFailed makes verify exit 1 after its report, without another line.
var errVerifyFailed = silentError{"verification failed"}

type silentError struct{ msg string }

func (e silentError) Error() string { return e.msg }

func printReport(w io.Writer, r *auditlog.Report, noKeys bool) {
	for _, o := range r.Origins {
		status := "OK"
		if !o.OK {
			status = "FAIL"
		}
		fmt.Fprintf(w, "%s %s\n", status, o.Origin)
		fmt.Fprintf(w, "  events: %d (seq 0..%d), duplicates: %d\n", o.Events, o.MaxSeq, o.Duplicates)
		fmt.Fprintf(w, "  checkpoints: %d, verified: %d", o.Checkpoints, o.CheckpointsVerified)
		if o.NewestCheckpoint >= 0 {
			fmt.Fprintf(w, ", newest: size %d at %s\n", o.NewestCheckpoint, o.NewestCheckpointAt)
			fmt.Fprintf(w, "  complete: %d of the %d events the newest checkpoint commits to are present\n", o.Committed, o.NewestCheckpoint)
		} else {
			fmt.Fprintln(w)
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
	if noKeys {
		fmt.Fprintln(w, "note: no --pubkey given, so no checkpoint signature could be verified")
	}
	if r.OK {
		fmt.Fprintln(w, "verified")
	} else {
		fmt.Fprintln(w, "NOT verified")
	}
}

// damagedFilesError names the spool segments that readEvents read past
// damage: their intact events were read, the damaged ranges not.
type damagedFilesError struct {
	files []*spool.DamagedSegmentError
}

func (e *damagedFilesError) Error() string {
	msgs := make([]string, len(e.files))
	for i, f := range e.files {
		msgs[i] = f.Error()
	}
	return strings.Join(msgs, "; ")
}

// collectDamage adds err to d when it is damage read past, and returns the
// errors that are something else.
func (d *damagedFilesError) collect(err error) error {
	var dse *spool.DamagedSegmentError
	var dfe *damagedFilesError
	switch {
	case errors.As(err, &dfe):
		d.files = append(d.files, dfe.files...)
		return nil
	case errors.As(err, &dse):
		d.files = append(d.files, dse)
		return nil
	}
	return err
}

func (d *damagedFilesError) orNil() error {
	if len(d.files) == 0 {
		return nil
	}
	return d
}

// readEvents calls add with every event found at path: a file of JSON lines,
// a spool segment (.seg, .seg.zst), a directory (read recursively: *.ndjson,
// *.jsonl, *.json, segments), or - for stdin. A damaged spool segment is
// read past: every intact event is read, and the error is then a
// *damagedFilesError naming the damaged files.
func readEvents(path string, add func([]byte)) error {
	if path == "-" {
		return readLines(os.Stdin, add)
	}
	info, err := os.Stat(path)
	if err != nil {
		return err
	}
	var damaged damagedFilesError
	if !info.IsDir() {
		if err := damaged.collect(readEventFile(path, add)); err != nil {
			return err
		}
		return damaged.orNil()
	}
	files, err := eventSources(path)
	if err != nil {
		return err
	}
	for _, p := range files {
		if err := damaged.collect(readEventFile(p, add)); err != nil {
			return err
		}
	}
	return damaged.orNil()
}

// warnDamaged prints damage read past to stderr and returns the errors that
// are something else: for commands (prove, show) whose answer may not need
// the damaged events.
func warnDamaged(stderr io.Writer, err error) error {
	var d damagedFilesError
	if err = d.collect(err); err == nil && len(d.files) > 0 {
		fmt.Fprintln(stderr, "auditproxy: warning:", d.Error())
	}
	return err
}

// isEventFileName reports whether a file of this name in a directory holds
// events: JSON lines or a spool segment, but not a spool's own state files.
func isEventFileName(name string) bool {
	if name == "state.json" || name == "log.json" {
		return false
	}
	return spool.IsSegmentFile(name) || strings.HasSuffix(name, ".ndjson") ||
		strings.HasSuffix(name, ".jsonl") || strings.HasSuffix(name, ".json")
}

// eventSources returns the files readEvents reads for path, in the order it
// reads them: path itself (or - for stdin) or the event files under the
// directory path.
func eventSources(path string) ([]string, error) {
	if path == "-" {
		return []string{path}, nil
	}
	info, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if !info.IsDir() {
		return []string{path}, nil
	}
	var files []string
	listed := map[string]bool{}
	err = filepath.WalkDir(path, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() && isEventFileName(d.Name()) {
			files = append(files, p)
			listed[p] = true
		}
		return nil
	})
	// A live spool's segment listed in both forms was being sealed: the
	// compressed one is complete (renamed into place after its fsync), and
	// the plain one about to go.
	kept := files[:0]
	for _, p := range files {
		if !strings.HasSuffix(p, plainSegmentExt) || !listed[p+".zst"] {
			kept = append(kept, p)
		}
	}
	return kept, err
}

// plainSegmentExt is a spool segment's extension before it is sealed
// (compressed) to NAME.seg.zst.
const plainSegmentExt = ".seg"

// readEventsConcurrently calls add with every event found at paths, as
// readEvents does for each path, reading up to workers files at once (a
// sealed segment decompresses on one core). add is called concurrently for
// different files, and in order for the events of one file; src is the
// file's index in the order readEvents would read them, across paths, so
// that a caller can restore that order. Stdin (-) is read once.
func readEventsConcurrently(paths []string, workers int, add func(src int, ev []byte)) error {
	var srcs []string
	stdin := false
	for _, path := range paths {
		if path == "-" {
			if stdin {
				continue // already read to its end
			}
			stdin = true
		}
		files, err := eventSources(path)
		if err != nil {
			return err
		}
		srcs = append(srcs, files...)
	}
	errs := make([]error, len(srcs))
	var damagedMu sync.Mutex
	var damaged damagedFilesError
	var next atomic.Int64
	var failed atomic.Bool
	var wg sync.WaitGroup
	for range max(1, min(workers, len(srcs))) {
		wg.Go(func() {
			for !failed.Load() {
				i := int(next.Add(1) - 1)
				if i >= len(srcs) {
					return
				}
				fn := func(ev []byte) { add(i, ev) }
				var err error
				if srcs[i] == "-" {
					err = readLines(os.Stdin, fn)
				} else {
					err = readEventFile(srcs[i], fn)
				}
				damagedMu.Lock()
				err = damaged.collect(err)
				damagedMu.Unlock()
				if err != nil {
					errs[i] = err
					failed.Store(true)
				}
			}
		})
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return damaged.orNil()
}

// readEventFile calls add with every event of the file at path. A spool
// segment of a live data dir that went since it was listed is not an
// error: a plain one was sealed (its compressed file holds the same
// records, read instead), a sealed one deleted (retention, or shipped and
// deleted to make room), as export reads them.
func readEventFile(path string, add func([]byte)) error {
	if spool.IsSegmentFile(path) {
		read := func(path string) error {
			_, err := spool.ReadSegmentFile(path, func(rec []byte) error { add(rec); return nil })
			return err
		}
		err := read(path)
		if errors.Is(err, fs.ErrNotExist) && strings.HasSuffix(path, plainSegmentExt) {
			err = read(path + ".zst")
		}
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		return err
	}
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := readLines(f, add); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	return nil
}

func readLines(r io.Reader, add func([]byte)) error {
	br := bufio.NewReaderSize(r, 1<<20)
	for {
		line, err := br.ReadSlice('\n')
		if err == bufio.ErrBufferFull {
			long := append([]byte(nil), line...)
			for err == bufio.ErrBufferFull {
				line, err = br.ReadSlice('\n')
				long = append(long, line...)
			}
			line = long
		}
		if len(line) > 0 {
			add(line)
		}
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
	}
}
