package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/auditproxy/auditproxy/hashing"
)

const checksumSynopsis = "checksum [--format manifest|sha256sum|json] [--cache FILE] DIR"

// runChecksum prints the manifest of a model directory and its model
// checksum (see hashing.Manifest for which files, and how an auditor
// recomputes the checksum).
func runChecksum(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("checksum", checksumSynopsis, stderr)
	format := fs.String("format", "manifest", "output `format`: manifest (lines \"<sha256>  <blake3>  <size>  <path>\", then the model checksum), "+
		"sha256sum (lines that \"sha256sum -c\" run in DIR checks; the model checksum goes to stderr) or json")
	cache := fs.String("cache", "", "digest cache `file` (e.g. DATA-DIR/manifest-cache.json): files whose size, times and inode are unchanged are not hashed again")
	dirs, err := parseFlagsAndArgs(fs, args)
	if err != nil {
		return err
	}
	switch *format {
	case "manifest", "sha256sum", "json":
	default:
		return usageError{fmt.Sprintf("checksum: unknown --format %q (want manifest, sha256sum or json)", *format)}
	}
	if len(dirs) != 1 {
		return usageError{"checksum: give one model directory (usage: auditproxy " + checksumSynopsis + ")"}
	}

	// An interrupted run still saves the digests it finished to the cache.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	progress := newChecksumProgress(stderr)
	m, err := hashing.BuildManifest(ctx, dirs[0], hashing.ManifestOptions{CacheFile: *cache, Progress: progress.update})
	if err != nil {
		return fmt.Errorf("checksum: %w", err)
	}
	if m.CacheErr != nil {
		for _, line := range strings.Split(m.CacheErr.Error(), "\n") {
			fmt.Fprintf(stderr, "auditproxy: checksum: warning: %s\n", line)
		}
	}
	progress.summary(m)

	sumLine := "model checksum: " + m.Checksum + "\n"
	switch *format {
	case "manifest":
		_, err = stdout.Write(append(m.AppendCanonical(nil), sumLine...))
	case "sha256sum":
		if _, err = stdout.Write(m.AppendSHA256Sum(nil)); err == nil {
			_, err = io.WriteString(stderr, sumLine)
		}
	case "json":
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		err = enc.Encode(m)
	}
	return err
}

// parseFlagsAndArgs parses args, which may mix flags and positional
// arguments (checksum DIR --format json), fills the flags not given from
// the environment as parseFlags does, and returns the positional arguments.
// Everything after "--" is positional.
func parseFlagsAndArgs(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			if err == flag.ErrHelp {
				return nil, err
			}
			return nil, usageError{err.Error()}
		}
		rest := fs.Args()
		if len(rest) == 0 {
			break
		}
		if n := len(args) - len(rest); n > 0 && args[n-1] == "--" {
			pos = append(pos, rest...)
			break
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
	// Parse keeps the flags already set, so parseFlags sees them as given
	// and fills only the others from the environment.
	return pos, parseFlags(fs, nil)
}

// checksumProgress shows hashing progress on stderr: a bar redrawn in place
// when stderr is a terminal, otherwise a plain line after 2 s and then
// every 5 s, so short runs stay quiet.
type checksumProgress struct {
	w     io.Writer
	tty   bool
	now   func() time.Time
	start time.Time
	// The first report's time and bytes, for the rate: bytes found in the
	// cache count as done from the start and are not hashing speed.
	first      time.Time
	firstBytes int64
	lastLine   time.Time
	shown      bool
}

func newChecksumProgress(w io.Writer) *checksumProgress {
	return &checksumProgress{w: w, tty: isTerminal(w), now: time.Now, start: time.Now()}
}

// isTerminal reports whether w is a character device such as a terminal.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

func (p *checksumProgress) update(pr hashing.ManifestProgress) {
	now := p.now()
	if p.first.IsZero() {
		p.first, p.firstBytes = now, pr.BytesDone
	}
	if pr.Done {
		if p.tty && p.shown {
			fmt.Fprint(p.w, "\r\x1b[K")
		}
		return
	}
	switch {
	case p.tty:
		fmt.Fprintf(p.w, "\rhashing model files: %s\x1b[K", p.describe(pr, now))
	case now.Sub(p.start) >= 2*time.Second && (p.lastLine.IsZero() || now.Sub(p.lastLine) >= 5*time.Second):
		fmt.Fprintf(p.w, "auditproxy: checksum: hashing model files: %s\n", p.describe(pr, now))
		p.lastLine = now
	default:
		return
	}
	p.shown = true
}

func (p *checksumProgress) describe(pr hashing.ManifestProgress, now time.Time) string {
	pct := 100.0
	if pr.Bytes > 0 {
		pct = 100 * float64(pr.BytesDone) / float64(pr.Bytes)
	}
	s := fmt.Sprintf("%s of %s (%.0f%%), %d of %d files", humanBytes(pr.BytesDone), humanBytes(pr.Bytes), pct, pr.FilesDone, pr.Files)
	if secs := now.Sub(p.first).Seconds(); secs > 0.5 && pr.BytesDone > p.firstBytes {
		rate := float64(pr.BytesDone-p.firstBytes) / secs
		left := time.Duration(float64(pr.Bytes-pr.BytesDone) / rate * float64(time.Second)).Round(time.Second)
		s += fmt.Sprintf(", %s/s, %s left", humanBytes(int64(rate)), left)
	}
	return s
}

// summary says how long hashing took, when progress was shown.
func (p *checksumProgress) summary(m *hashing.Manifest) {
	if !p.shown {
		return
	}
	d := p.now().Sub(p.start)
	fmt.Fprintf(p.w, "auditproxy: checksum: hashed %d files (%s) in %s, %s/s; %d files from the cache\n",
		m.HashedFiles, humanBytes(m.HashedBytes), d.Round(100*time.Millisecond), humanBytes(int64(float64(m.HashedBytes)/d.Seconds())),
		len(m.Files)-m.HashedFiles)
}

// humanBytes writes n in binary units with one decimal: 12.3 GiB.
func humanBytes(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}
