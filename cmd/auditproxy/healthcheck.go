package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"
)

// runHealthcheck asks a running sidecar's admin server whether it is ready.
// It exists for container HEALTHCHECKs: the runtime image has no curl.
func runHealthcheck(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("healthcheck", "healthcheck [--admin-listen ADDRESS] [--path /readyz]", stderr)
	admin := fs.String("admin-listen", "127.0.0.1:9090", "the sidecar's admin `address` (serve's --admin-listen; 0.0.0.0 and :port are asked on loopback)")
	path := fs.String("path", "/readyz", "`path` to ask: /readyz (serving, and the upstream answers its /health) or /healthz (the process is up)")
	timeout := fs.Duration("timeout", 3*time.Second, "give up after this `duration`")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	host, port, err := net.SplitHostPort(*admin)
	if err != nil || port == "" {
		return usageError{fmt.Sprintf("healthcheck: --admin-listen %q: want HOST:PORT", *admin)}
	}
	if host == "" || net.ParseIP(host).IsUnspecified() {
		host = "127.0.0.1"
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	url := "http://" + net.JoinHostPort(host, port) + *path
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return usageError{fmt.Sprintf("healthcheck: %v", err)}
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("healthcheck: %w", err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("healthcheck: %s answered %s: %s", url, resp.Status, body)
	}
	fmt.Fprintf(stdout, "%s: %s\n", url, body)
	return nil
}
