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
	if st.TornBytes > 0 {
		fmt.Fprintf(stderr, "auditproxy: export: skipped %d bytes at the end of the newest segment that are not a whole record (a proxy died while committing them, or is committing them now)\n", st.TornBytes)
	}
	return nil
}
