package main

import (
	"fmt"
	"io"

	"github.com/auditproxy/auditproxy/shipper"
)

func runExport(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("export", "export --data-dir DIR", stderr)
	dataDir := fs.String("data-dir", "./auditproxy-data", "`directory` the proxy writes its events to")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	st, err := shipper.Export(*dataDir, stdout)
	if err != nil {
		return fmt.Errorf("export: %w", err)
	}
	if st.TornTail {
		fmt.Fprintln(stderr, "auditproxy: export: the event log ends in a partial line (the proxy died while writing it); it was skipped")
	}
	return nil
}
