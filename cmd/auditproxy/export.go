package main

import (
	"fmt"
	"io"

	"github.com/auditproxy/auditproxy/spool"
)

func runExport(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("export", "export --data-dir DIR", stderr)
	dataDir := fs.String("data-dir", "./auditproxy-data", "`directory` the proxy writes its events to")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	st, err := spool.Export(*dataDir, stdout)
	if st.TornBytes > 0 {
		fmt.Fprintf(stderr, "auditproxy: export: skipped %d bytes at the end of the newest segment that are not a whole record (a proxy died while committing them, or is committing them now)\n", st.TornBytes)
	}
	for _, q := range st.Quarantined {
		fmt.Fprintf(stderr, "auditproxy: export: note: %s is a damaged segment the sidecar moved aside; its intact records were exported from the segment that replaced it, and a segment_damaged event in the log says what was lost\n", q)
	}
	if err != nil {
		// With damage, every intact record was exported (the error names
		// the damaged files and ranges), and the exit status says so.
		return fmt.Errorf("export: %w", err)
	}
	return nil
}
